//! Transfers between shards: `cargo run --release --example cluster`.
//!
//! Opens a cluster of 4 shards in a temporary directory, creates accounts
//! (placed on shards by their id), moves money within and between shards,
//! and shows where each transfer ended and the settlement accounts that
//! carry the money between shards.

use mvledger::cluster::{Cluster, ClusterOptions, Placement, settlement_account};
use mvledger::{Account, AccountFlags, Transfer};

fn main() -> mvledger::Result<()> {
    let dir = tempfile::tempdir()?;
    let options = ClusterOptions {
        shards: 4,
        placement: Placement::Modulo, // account id mod 4 is its shard
        ..ClusterOptions::default()
    };
    let cluster = Cluster::open(dir.path(), options)?;
    let account = |id, flags| Account {
        id,
        ledger: 1,
        code: 1,
        flags,
        ..Account::default()
    };
    cluster.create_accounts(&[
        account(1, AccountFlags::empty()),                        // shard 1
        account(2, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS), // shard 2
        account(5, AccountFlags::empty()),                        // shard 1
    ])?;
    let transfer = |id, debit_account_id, credit_account_id, amount| Transfer {
        id,
        debit_account_id,
        credit_account_id,
        amount,
        ledger: 1,
        code: 1,
        ..Transfer::default()
    };
    let transfers = [
        transfer(100, 1, 2, 70), // between shards 1 and 2
        transfer(101, 1, 5, 10), // within shard 1
        transfer(102, 2, 5, 90), // refused on shard 2: 2 holds only 70
    ];
    let results = cluster.create_transfers(&transfers)?; // returns once each is final
    for (t, r) in transfers.iter().zip(&results) {
        let state = cluster.transfer_state(t.id)?;
        println!("transfer {}: {r:?}, cross-shard state {state:?}", t.id);
    }
    for a in cluster.lookup_accounts(&[1, 2, 5])? {
        println!(
            "account {} on shard {}: debits {} credits {}",
            a.id,
            cluster.shard_of(a.id),
            a.debits_posted,
            a.credits_posted
        );
    }
    for shard in 0..cluster.shards() {
        let id = settlement_account(1, shard);
        if let Some(ledger) = cluster.shard(shard) {
            for s in ledger.lookup_accounts(&[id])? {
                println!(
                    "settlement account of ledger 1 on shard {shard}: debits {} credits {}",
                    s.debits_posted, s.credits_posted
                );
            }
        }
    }
    Ok(())
}
