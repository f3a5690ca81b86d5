//! Cross-shard against same-shard transfers (issue 6, "Speed"), in one run.
//!
//! Run: `cargo bench --bench cluster` (about a minute on 2 cores). Prints
//! transfers/s for each phase and their ratio; the target is a cross-shard
//! rate of at least a quarter of the same-shard rate.
//!
//! Settings: a `Cluster` of 4 shards with the in-process transport,
//! `SyncMode::Always`, `Placement::Modulo` (account id mod 4 is its shard),
//! 40,000 accounts (10,000 per shard, no limits) created before anything is
//! timed; `MVLEDGER_CLUSTER_CLIENTS` client threads (default 8), client `c`
//! on shard `s = c mod 4`, sending batches of 8,190 transfers
//! (TigerBeetle's batch size), `MVLEDGER_CLUSTER_BATCHES` batches each
//! (default 4; `MVLEDGER_CLUSTER_ONLY=cross` runs the cross-shard phase
//! alone, for profiles). Same-shard phase: thread `s` moves money between accounts
//! of shard `s`. Cross-shard phase: from accounts of shard `s` to accounts
//! of shard `s + 1 mod 4`, so every shard coordinates one stream and
//! takes part in another. Every transfer must succeed (asserted); the
//! phases run one after the other on the same cluster, so a difference in
//! disk speed over the run shows in both. Quote the ratio, not the rates.

use std::sync::Arc;
use std::time::Instant;

use mvledger::cluster::{Cluster, ClusterOptions, Placement};
use mvledger::{Account, CreateTransferResult, LedgerOptions, Options, SyncMode, Transfer};

const SHARDS: u32 = 4;
const PER_SHARD: u128 = 10_000;
const BATCH: usize = 8_190;

fn main() {
    let batches: usize = std::env::var("MVLEDGER_CLUSTER_BATCHES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    // `cargo bench` passes `--bench`; a filter that excludes us ends here.
    if std::env::args()
        .skip(1)
        .any(|a| !a.starts_with('-') && !"cluster".contains(&a))
    {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let options = ClusterOptions {
        shards: SHARDS,
        placement: Placement::Modulo,
        ledger: LedgerOptions {
            engine: Options {
                sync: SyncMode::Always,
                ..Options::default()
            },
            ..LedgerOptions::default()
        },
        ..ClusterOptions::default()
    };
    let cluster = Arc::new(Cluster::open(dir.path(), options).expect("open"));
    let accounts: Vec<Account> = (1..=PER_SHARD * u128::from(SHARDS))
        .map(|id| Account {
            id,
            ledger: 1,
            code: 1,
            ..Account::default()
        })
        .collect();
    for chunk in accounts.chunks(BATCH) {
        let rs = cluster.create_accounts(chunk).expect("accounts");
        assert!(rs.iter().all(|r| *r == mvledger::CreateAccountResult::Ok));
    }
    println!(
        "cluster bench: {SHARDS} shards, SyncMode::Always, {} client threads x {batches} batches of {BATCH}, dir {}",
        clients(),
        dir.path().display()
    );
    if std::env::var("MVLEDGER_CLUSTER_ONLY").is_ok_and(|v| v == "cross") {
        // For profiles of the cross-shard path alone.
        let cross = phase(&cluster, batches, 1, 2_000_000_000);
        println!("cross-shard: {cross:>10.0} transfers/s");
        return;
    }
    let same = phase(&cluster, batches, 0, 1_000_000_000);
    let cross = phase(&cluster, batches, 1, 2_000_000_000);
    println!("same-shard:  {same:>10.0} transfers/s");
    println!("cross-shard: {cross:>10.0} transfers/s");
    println!("ratio cross/same: {:.3} (target >= 0.25)", cross / same);
}

/// Client threads: `MVLEDGER_CLUSTER_CLIENTS`, default 8 (two per shard,
/// so that a shard has work while a client waits for its reply).
fn clients() -> u32 {
    std::env::var("MVLEDGER_CLUSTER_CLIENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8)
}

/// Runs one phase: credit accounts on shard `s + offset`; returns
/// transfers/s, and prints the log bytes and syncs per transfer over all
/// shards.
fn phase(cluster: &Arc<Cluster>, batches: usize, offset: u32, first_id: u128) -> f64 {
    let totals = || {
        (0..SHARDS)
            .filter_map(|s| cluster.shard(s))
            .map(|l| l.stats())
            .fold((0u64, 0u64), |(b, y), st| (b + st.log_bytes, y + st.syncs))
    };
    let before = totals();
    let start = Instant::now();
    let threads: Vec<_> = (0..clients())
        .map(|client| {
            let s = client % SHARDS;
            let cluster = Arc::clone(cluster);
            std::thread::spawn(move || {
                let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ u64::from(client + 1);
                let mut pick = |shard: u32| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    u128::from(x) % PER_SHARD * u128::from(SHARDS) + u128::from(shard) + {
                        // ids start at 1: shard 0's accounts are 4, 8, ...
                        if shard == 0 { u128::from(SHARDS) } else { 0 }
                    }
                };
                let credit_shard = (s + offset) % SHARDS;
                let mut sent = 0usize;
                for b in 0..batches {
                    let batch: Vec<Transfer> = (0..BATCH)
                        .map(|k| {
                            let id = first_id
                                + u128::from(client) * 100_000_000
                                + (b * BATCH + k) as u128;
                            let dr = pick(s);
                            let mut cr = pick(credit_shard);
                            if cr == dr {
                                cr = pick(credit_shard);
                            }
                            Transfer {
                                id,
                                debit_account_id: dr,
                                credit_account_id: cr,
                                amount: 1,
                                ledger: 1,
                                code: 1,
                                ..Transfer::default()
                            }
                        })
                        .filter(|t| t.debit_account_id != t.credit_account_id)
                        .collect();
                    sent += batch.len();
                    let rs = cluster.create_transfers(&batch).expect("transfers");
                    assert!(
                        rs.iter().all(|r| *r == CreateTransferResult::Ok),
                        "{:?}",
                        rs.iter().find(|r| **r != CreateTransferResult::Ok)
                    );
                }
                sent
            })
        })
        .collect();
    let transfers: usize = threads
        .into_iter()
        .map(|t| t.join().expect("client thread"))
        .sum();
    let rate = transfers as f64 / start.elapsed().as_secs_f64();
    let after = totals();
    let n = transfers.max(1) as f64;
    println!(
        "  {}: {:.0} log bytes and {:.4} syncs per transfer (all shards)",
        if offset == 0 {
            "same-shard"
        } else {
            "cross-shard"
        },
        (after.0 - before.0) as f64 / n,
        (after.1 - before.1) as f64 / n
    );
    rate
}
