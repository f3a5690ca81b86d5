//! A reopen rebuilds exactly the state that was acknowledged, and keeps
//! one version per key (issue 2: recovery; ARCHITECTURE.md: the index
//! after recovery holds the newest version of every live key).
//!
//! Recovery installs a ledger batch's writes in bulk, as the live path
//! does, which keeps each replaced version until the key's next write and
//! keeps a tombstone as a version; what is left of both is pruned once the
//! log is read. So the ledger here rewrites accounts across batches of
//! thousands of writes, and makes pending transfers with timeouts whose
//! expiry entries are deleted again by posts, voids and expiries: after a
//! reopen, every key and value must be as before, with no old version and
//! no tombstone left behind.

mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::{NS, SplitMix64, T0, account, open_clocked, post, transfer, void};
use mvledger::{AccountFlags, Ledger, ManualClock, Transfer, TransferFlags};

const ACCOUNTS: u128 = 2_000;
const BATCH: usize = 2_000;

fn everything(l: &Ledger) -> Vec<(Bytes, Bytes)> {
    l.engine().snapshot().scan(..).unwrap().collect()
}

fn batch(rng: &mut SplitMix64, round: u128, pendings: &mut Vec<u128>) -> Vec<Transfer> {
    (0..BATCH as u128)
        .map(|i| {
            let id = 1 + round * 1_000_000 + i;
            let dr = 1 + u128::from(rng.below(ACCOUNTS as u64));
            let cr = 1 + (dr % ACCOUNTS);
            match rng.below(6) {
                0 | 1 => {
                    pendings.push(id);
                    Transfer {
                        flags: TransferFlags::PENDING,
                        timeout: 1 + rng.below(3) as u32,
                        ..transfer(id, dr, cr, 1)
                    }
                }
                2 if !pendings.is_empty() => {
                    let posted = rng.below(2) == 0;
                    let pending_id = rng.pick(pendings);
                    if posted {
                        post(id, pending_id, 0)
                    } else {
                        void(id, pending_id)
                    }
                }
                _ => transfer(id, dr, cr, 1 + u128::from(rng.below(9))),
            }
        })
        .collect()
}

#[test]
fn a_reopened_ledger_holds_the_same_state_with_one_version_per_key() {
    let clock = Arc::new(ManualClock::new(T0));
    let dir = tempfile::tempdir().unwrap();
    let ledger = open_clocked(dir.path(), &clock);
    let accounts: Vec<_> = (1..=ACCOUNTS)
        .map(|id| account(id, AccountFlags::HISTORY))
        .collect();
    ledger.create_accounts(&accounts).unwrap();
    let mut rng = SplitMix64(7);
    let mut pendings = Vec::new();
    for round in 0..4 {
        let transfers = batch(&mut rng, round, &mut pendings);
        ledger.create_transfers(&transfers).unwrap();
        // Let some pending transfers time out before the next batch.
        clock.advance(2 * NS);
    }
    clock.advance(4 * NS);
    for _ in 0..100 {
        ledger.expire_pending().unwrap();
    }
    let before = everything(&ledger);
    // The workload did rewrite keys and delete some.
    let s = ledger.stats();
    assert!(s.versions_reclaimed > 0, "no key was rewritten: {s:?}");
    assert!(
        before.iter().all(|(k, _)| k[0] != b'x'),
        "every expiry entry was deleted by now"
    );
    drop(ledger);

    let ledger = open_clocked(dir.path(), &clock);
    let after = everything(&ledger);
    assert_eq!(after.len(), before.len());
    assert!(after == before, "the state differs after a reopen");
    let s = ledger.stats();
    assert_eq!(s.keys, after.len() as u64, "a key left behind: {s:?}");
    assert_eq!(
        s.versions_alive, s.keys,
        "more than one version a key: {s:?}"
    );
}
