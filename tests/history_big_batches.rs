//! The transfer index under big batches. A batch of 512 transfers or
//! more (1,024 entries) only queues its entries; the next batch of
//! transfers appends them on a helper thread beside its state machine
//! until the machine is done, the batch after that appends the rest, and
//! a reader appends whatever is queued before it reads
//! (`ledger/history.rs`, "Deferred appends"). Whatever the interleaving, a
//! reader must find in an account's history exactly the transfers its
//! snapshot sees, in timestamp order.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use mvledger::{AccountFilter, AccountFilterFlags, AccountFlags, Ledger, LedgerSnapshot, Transfer};

use common::{SplitMix64, account, open, open_with_accounts, transfer};

const ACCOUNTS: u128 = 200;

fn filter(account_id: u128) -> AccountFilter {
    AccountFilter {
        account_id,
        limit: 8_190,
        flags: AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS,
        ..AccountFilter::default()
    }
}

/// Checks `account`'s history at `snap` against its balances there (every
/// transfer moves 1): as many entries as transfers, each naming the
/// account, oldest first. Returns the ids.
fn check_at(snap: &LedgerSnapshot, account: u128) -> Vec<u128> {
    let a = snap.lookup_accounts(&[account]).expect("lookup")[0];
    let history = snap
        .get_account_transfers(filter(account))
        .expect("history");
    assert_eq!(
        history.len() as u128,
        a.debits_posted + a.credits_posted,
        "account {account}: history and balances disagree at one snapshot"
    );
    for pair in history.windows(2) {
        assert!(pair[0].timestamp < pair[1].timestamp, "out of order");
    }
    for t in &history {
        assert!(t.debit_account_id == account || t.credit_account_id == account);
    }
    history.iter().map(|t| t.id).collect()
}

/// A batch of `n` transfers of 1 between random distinct accounts, ids
/// from `next_id`; also records each account's ids in `model`.
fn batch(
    rng: &mut SplitMix64,
    n: usize,
    next_id: &mut u128,
    model: &mut HashMap<u128, Vec<u128>>,
) -> Vec<Transfer> {
    (0..n)
        .map(|_| {
            let dr = 1 + u128::from(rng.below(ACCOUNTS as u64));
            let cr = 1 + (dr + u128::from(rng.below(ACCOUNTS as u64 - 1))) % ACCOUNTS;
            *next_id += 1;
            model.entry(dr).or_default().push(*next_id);
            model.entry(cr).or_default().push(*next_id);
            transfer(*next_id, dr, cr, 1)
        })
        .collect()
}

/// Big and small batches (and calls that append nothing) while two
/// readers check random accounts at their snapshots; then every account's
/// history against the model, live and after a reopen. Fails when a
/// reader does not append what is queued, or when a small batch is
/// appended before the queued one (both tried). The readers append most
/// queued batches themselves here; a helper stopped part way is the unit
/// test `a_stopped_helper_leaves_the_rest_first_in_line`'s.
#[test]
fn readers_find_exactly_what_their_snapshot_sees_while_big_batches_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Arc::new(open_with_accounts(dir.path(), ACCOUNTS));
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2u64)
        .map(|r| {
            let (l, done) = (Arc::clone(&l), Arc::clone(&done));
            std::thread::spawn(move || {
                let mut rng = SplitMix64(r + 7);
                let mut reads = 0;
                while !done.load(Ordering::Acquire) || reads == 0 {
                    let snap = l.snapshot();
                    for _ in 0..8 {
                        check_at(&snap, 1 + u128::from(rng.below(ACCOUNTS as u64)));
                        reads += 1;
                    }
                }
                reads
            })
        })
        .collect();
    let mut rng = SplitMix64(42);
    let mut model: HashMap<u128, Vec<u128>> = HashMap::new();
    let mut next_id = 1_000;
    let sizes = [
        8_190, 600, 3, 5_000, 8_190, 1, 700, 2_000, 8_190, 513, 40, 8_190, 4_000, 2,
    ];
    for (i, &n) in sizes.iter().chain(sizes.iter().rev()).enumerate() {
        let b = batch(&mut rng, n, &mut next_id, &mut model);
        let rs = l.create_transfers(&b).expect("transfers");
        assert!(rs.iter().all(|r| *r == mvledger::CreateTransferResult::Ok));
        if i % 5 == 4 {
            // A call of no transfers appends nothing queued.
            let id = 10_000 + i as u128;
            l.create_accounts(&[account(id, AccountFlags::empty())])
                .expect("account");
        }
    }
    done.store(true, Ordering::Release);
    for r in readers {
        assert!(r.join().expect("reader") > 0);
    }
    let check_all = |l: &Ledger| {
        let snap = l.snapshot();
        for account in 1..=ACCOUNTS {
            let want = model.get(&account).cloned().unwrap_or_default();
            assert_eq!(check_at(&snap, account), want, "account {account}");
        }
    };
    check_all(&l);
    drop(Arc::into_inner(l).expect("the readers are done"));
    check_all(&open(dir.path()));
}

/// The deterministic case: a big batch's history is there at once, stays
/// there across calls that append nothing, and a small batch after it
/// comes after it.
#[test]
fn a_big_batch_is_in_the_history_at_once_and_a_small_one_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = open_with_accounts(dir.path(), 3);
    let big: Vec<Transfer> = (0..2_000u128).map(|i| transfer(10 + i, 1, 2, 1)).collect();
    l.create_transfers(&big).expect("transfers");
    let ids = |l: &Ledger, a| -> Vec<u128> {
        let found = l.get_account_transfers(filter(a)).expect("history");
        found.iter().map(|t| t.id).collect()
    };
    let want: Vec<u128> = big.iter().map(|t| t.id).collect();
    assert_eq!(ids(&l, 1), want);
    l.create_accounts(&[account(4, AccountFlags::empty())])
        .expect("account");
    assert_eq!(ids(&l, 2), want);
    let big2: Vec<Transfer> = (0..2_000u128)
        .map(|i| transfer(5_000 + i, 2, 1, 1))
        .collect();
    l.create_transfers(&big2).expect("transfers");
    l.create_transfers(&[transfer(9_000, 1, 3, 1)])
        .expect("transfers");
    let mut want: Vec<u128> = want.into_iter().chain(big2.iter().map(|t| t.id)).collect();
    want.push(9_000);
    assert_eq!(ids(&l, 1), want);
    assert_eq!(ids(&l, 3), [9_000]);
}
