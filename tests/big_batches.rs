//! A big batch means exactly what its transfers mean one call at a time
//! (issue 3; ARCHITECTURE.md: a batch runs "one transfer after another").
//!
//! A batch of 64 or more transfers looks its accounts and ids up in bulk
//! before it runs (`Machine::prefetch`; on two threads past 4,096 keys),
//! and a commit of 4,096 writes or more is installed by two threads. A call
//! of one transfer does neither. So the same transfers go to two ledgers on
//! clocks that stand still (so that both give the same timestamps): in one
//! call of 8,190 on the first, one call each on the second. Their results,
//! accounts and stored transfers must be identical, and stay so after a
//! reopen (which replays the big batch). The transfers reuse ids within the
//! batch (some the same, some with a field changed), post and void pending
//! transfers made earlier in the same batch, run into balance limits and
//! name unknown accounts: every answer that depends on what the batch did
//! before.

mod common;

use std::sync::Arc;

use common::{SplitMix64, T0, account, open_clocked, post, transfer, void};
use mvledger::{
    AccountFilter, AccountFilterFlags, AccountFlags, CreateAccountResult, CreateTransferResult,
    Ledger, ManualClock, Transfer, TransferFlags,
};

const ACCOUNTS: u128 = 10_000;
const BATCH: usize = 8_190;

fn setup(l: &Ledger) {
    let accounts: Vec<_> = (1..=ACCOUNTS)
        .map(|id| {
            let flags = match id % 10 {
                0 => AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
                1 => AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
                2 => AccountFlags::HISTORY,
                _ => AccountFlags::empty(),
            };
            account(id, flags)
        })
        .collect();
    for chunk in accounts.chunks(BATCH) {
        let r = l.create_accounts(chunk).unwrap();
        assert!(r.iter().all(|r| *r == CreateAccountResult::Ok));
    }
}

/// `BATCH` transfers over the accounts (and a few unknown ones): plain,
/// pending, posts and voids of pending ones made before them, and reused
/// ids, as they were or with the amount changed.
fn transfers(seed: u64) -> Vec<Transfer> {
    let mut rng = SplitMix64(seed);
    let mut out: Vec<Transfer> = Vec::with_capacity(BATCH);
    let mut pendings: Vec<u128> = Vec::new();
    for i in 0..BATCH {
        let id = 1_000_000 + i as u128;
        let dr = 1 + u128::from(rng.below(ACCOUNTS as u64 + 20));
        let cr = 1 + u128::from(rng.below(ACCOUNTS as u64 + 20));
        let amount = u128::from(1 + rng.below(500));
        let t = match rng.below(20) {
            0..=9 => transfer(id, dr, cr, amount),
            10..=12 => {
                pendings.push(id);
                Transfer {
                    flags: TransferFlags::PENDING,
                    ..transfer(id, dr, cr, amount)
                }
            }
            13 | 14 if !pendings.is_empty() => {
                let posted = rng.below(2) == 0;
                let pending_id = rng.pick(&pendings);
                if posted {
                    post(id, pending_id, 0)
                } else {
                    void(id, pending_id)
                }
            }
            15 | 16 if !out.is_empty() => rng.pick(&out),
            17 if !out.is_empty() => {
                let mut t = rng.pick(&out);
                t.amount += 1;
                t
            }
            _ => transfer(id, dr, cr, amount),
        };
        out.push(t);
    }
    out
}

#[test]
fn a_batch_of_8190_gives_what_its_transfers_give_one_call_at_a_time() {
    let clock = Arc::new(ManualClock::new(T0));
    let (bulk_dir, single_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let bulk = open_clocked(bulk_dir.path(), &clock);
    let single = open_clocked(single_dir.path(), &clock);
    setup(&bulk);
    setup(&single);
    for seed in [1, 2] {
        let batch = transfers(seed);
        let got = bulk.create_transfers(&batch).unwrap();
        let want: Vec<CreateTransferResult> = batch
            .iter()
            .map(|t| single.create_transfers(std::slice::from_ref(t)).unwrap()[0])
            .collect();
        assert_eq!(got.len(), want.len());
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(g, w, "transfer {i} ({:?})", batch[i]);
        }
        // The mix did come up: successes, in-batch reuse, limits, unknowns.
        for code in [
            CreateTransferResult::Ok,
            CreateTransferResult::Exists,
            CreateTransferResult::ExceedsCredits,
            CreateTransferResult::DebitAccountNotFound,
            CreateTransferResult::PendingTransferAlreadyPosted,
        ] {
            assert!(got.contains(&code), "no {code:?} in the batch");
        }
        assert_same(&bulk, &single, &batch);
    }
    drop(bulk);
    let bulk = open_clocked(bulk_dir.path(), &clock);
    assert_same(&bulk, &single, &transfers(1));
    assert_same(&bulk, &single, &transfers(2));
}

fn assert_same(a: &Ledger, b: &Ledger, batch: &[Transfer]) {
    let ids: Vec<u128> = (1..=ACCOUNTS).collect();
    assert_eq!(
        a.lookup_accounts(&ids).unwrap(),
        b.lookup_accounts(&ids).unwrap()
    );
    let ids: Vec<u128> = batch.iter().map(|t| t.id).collect();
    assert_eq!(
        a.lookup_transfers(&ids).unwrap(),
        b.lookup_transfers(&ids).unwrap()
    );
    // The history entries (and the balances of `HISTORY` accounts), which
    // a big batch builds on a helper thread.
    let mut entries = 0;
    for account_id in (1..=ACCOUNTS).step_by(7) {
        let filter = AccountFilter {
            account_id,
            limit: u32::MAX,
            flags: AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS,
            ..AccountFilter::default()
        };
        let transfers = a.get_account_transfers(filter).unwrap();
        assert_eq!(transfers, b.get_account_transfers(filter).unwrap());
        entries += transfers.len();
        assert_eq!(
            a.get_account_balances(filter).unwrap(),
            b.get_account_balances(filter).unwrap()
        );
    }
    assert!(entries > 0, "the batch wrote history entries");
}
