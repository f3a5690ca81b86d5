//! Double entry (issue 3, rule 1; ARCHITECTURE.md invariant 6): every
//! transfer adds its amount to the debit account's debits and to the credit
//! account's credits, pending or posted; posting moves a reservation from
//! pending to posted on both sides, voiding and expiry take it off both.
//! So the sums of all accounts' debits and credits (posted, and pending)
//! are equal after any sequence of transfers, and in every snapshot taken
//! while other threads create transfers.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{SplitMix64, T0, open_clocked, transfer};
use mvledger::{
    Account, AccountFlags, CreateAccountResult, CreateTransferResult, Ledger, LedgerSnapshot,
    ManualClock, Transfer, TransferFlags,
};

fn account(id: u128, ledger: u32, flags: AccountFlags) -> Account {
    Account {
        id,
        ledger,
        code: 1,
        flags,
        ..Default::default()
    }
}

fn settle(id: u128, pending_id: u128, flags: TransferFlags, amount: u128) -> Transfer {
    Transfer {
        id,
        pending_id,
        flags,
        amount,
        ..Default::default()
    }
}

fn balances(ledger: &Ledger, ids: &[u128]) -> HashMap<u128, [u128; 4]> {
    ledger
        .lookup_accounts(ids)
        .unwrap()
        .into_iter()
        .map(|a| {
            (
                a.id,
                [
                    a.debits_pending,
                    a.debits_posted,
                    a.credits_pending,
                    a.credits_posted,
                ],
            )
        })
        .collect()
}

/// The sums of all accounts' (debits_pending, debits_posted,
/// credits_pending, credits_posted) in one snapshot.
fn sums(snap: &LedgerSnapshot) -> [u128; 4] {
    snap.accounts().unwrap().iter().fold([0; 4], |s, a| {
        [
            s[0] + a.debits_pending,
            s[1] + a.debits_posted,
            s[2] + a.credits_pending,
            s[3] + a.credits_posted,
        ]
    })
}

fn assert_balanced(snap: &LedgerSnapshot) {
    let [dp, dpo, cp, cpo] = sums(snap);
    assert_eq!(
        dpo,
        cpo,
        "posted debits != posted credits at ts {}",
        snap.ts()
    );
    assert_eq!(
        dp,
        cp,
        "pending debits != pending credits at ts {}",
        snap.ts()
    );
}

/// Asserts that only `dr` and `cr` changed between `before` and `after`,
/// and by exactly `delta` = [debits_pending, debits_posted] of `dr` and
/// [credits_pending, credits_posted] of `cr` (signed).
fn assert_moved(
    before: &HashMap<u128, [u128; 4]>,
    after: &HashMap<u128, [u128; 4]>,
    dr: u128,
    cr: u128,
    pending: i128,
    posted: i128,
) {
    for (id, b) in before {
        let a = after[id];
        let expect = if *id == dr {
            [
                b[0].checked_add_signed(pending).unwrap(),
                b[1].checked_add_signed(posted).unwrap(),
                b[2],
                b[3],
            ]
        } else if *id == cr {
            [
                b[0],
                b[1],
                b[2].checked_add_signed(pending).unwrap(),
                b[3].checked_add_signed(posted).unwrap(),
            ]
        } else {
            *b
        };
        assert_eq!(a, expect, "account {id}: before {b:?}");
    }
}

#[test]
fn every_transfer_adds_its_amount_to_the_debit_and_the_credit_side() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let l = open_clocked(dir.path(), &clock);
    let ids = [1, 2, 3];
    let r = l
        .create_accounts(&ids.map(|id| account(id, 1, AccountFlags::empty())))
        .unwrap();
    assert!(r.iter().all(|r| *r == CreateAccountResult::Ok), "{r:?}");

    // A posted transfer: posted debits of 1, posted credits of 2.
    let b0 = balances(&l, &ids);
    let r = l.create_transfers(&[transfer(10, 1, 2, 70)]).unwrap();
    assert_eq!(r, [CreateTransferResult::Ok]);
    let b1 = balances(&l, &ids);
    assert_moved(&b0, &b1, 1, 2, 0, 70);

    // A pending transfer: pending debits of 2, pending credits of 3.
    let mut p = transfer(11, 2, 3, 50);
    p.flags = TransferFlags::PENDING;
    assert_eq!(
        l.create_transfers(&[p]).unwrap(),
        [CreateTransferResult::Ok]
    );
    let b2 = balances(&l, &ids);
    assert_moved(&b1, &b2, 2, 3, 50, 0);

    // Posting 20 of it: the whole reservation leaves pending, 20 lands
    // in posted, on both sides.
    let post = settle(12, 11, TransferFlags::POST_PENDING_TRANSFER, 20);
    assert_eq!(
        l.create_transfers(&[post]).unwrap(),
        [CreateTransferResult::Ok]
    );
    let b3 = balances(&l, &ids);
    assert_moved(&b2, &b3, 2, 3, -50, 20);

    // Another pending transfer, then voided: back where it was.
    let mut p = transfer(13, 3, 1, 40);
    p.flags = TransferFlags::PENDING;
    assert_eq!(
        l.create_transfers(&[p]).unwrap(),
        [CreateTransferResult::Ok]
    );
    let b4 = balances(&l, &ids);
    assert_moved(&b3, &b4, 3, 1, 40, 0);
    let void = settle(14, 13, TransferFlags::VOID_PENDING_TRANSFER, 0);
    assert_eq!(
        l.create_transfers(&[void]).unwrap(),
        [CreateTransferResult::Ok]
    );
    let b5 = balances(&l, &ids);
    assert_eq!(b5, b3);

    // A pending transfer that expires: released on both sides.
    let mut p = transfer(15, 1, 3, 30);
    p.flags = TransferFlags::PENDING;
    p.timeout = 5;
    assert_eq!(
        l.create_transfers(&[p]).unwrap(),
        [CreateTransferResult::Ok]
    );
    assert_moved(&b5, &balances(&l, &ids), 1, 3, 30, 0);
    clock.advance_secs(6);
    l.expire_pending().unwrap();
    assert_eq!(balances(&l, &ids), b5);

    // A batch: each transfer's amount on its own two accounts.
    let r = l
        .create_transfers(&[
            transfer(16, 1, 2, 1),
            transfer(17, 2, 3, 10),
            transfer(18, 3, 1, 100),
        ])
        .unwrap();
    assert!(r.iter().all(|r| *r == CreateTransferResult::Ok), "{r:?}");
    let b6 = balances(&l, &ids);
    assert_eq!(
        b6[&1],
        [b5[&1][0], b5[&1][1] + 1, b5[&1][2], b5[&1][3] + 100]
    );
    assert_eq!(
        b6[&2],
        [b5[&2][0], b5[&2][1] + 10, b5[&2][2], b5[&2][3] + 1]
    );
    assert_eq!(
        b6[&3],
        [b5[&3][0], b5[&3][1] + 100, b5[&3][2], b5[&3][3] + 10]
    );
    assert_balanced(&l.snapshot());
}

/// Accounts 1..=10 on ledger 1 (1 and 2 may not overdraw, 3 may not
/// over-credit) and 11 on ledger 2, funded so that the limited accounts can
/// move money.
fn setup(l: &Ledger) -> Vec<u128> {
    let mut accounts: Vec<Account> = (1..=10)
        .map(|id| {
            let flags = match id {
                1 | 2 => AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
                3 => AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
                _ => AccountFlags::empty(),
            };
            account(id, 1, flags)
        })
        .collect();
    accounts.push(account(11, 2, AccountFlags::empty()));
    let r = l.create_accounts(&accounts).unwrap();
    assert!(r.iter().all(|r| *r == CreateAccountResult::Ok), "{r:?}");
    let r = l
        .create_transfers(&[
            transfer(u128::MAX - 1, 10, 1, 10_000),
            transfer(u128::MAX - 2, 10, 2, 10_000),
            transfer(u128::MAX - 3, 3, 10, 10_000),
        ])
        .unwrap();
    assert!(r.iter().all(|r| *r == CreateTransferResult::Ok), "{r:?}");
    (1..=11).collect()
}

/// A batch of 1 to 12 random transfers of every kind, some invalid, some
/// linked; ids from `next_id`. Remembers the pending ones it makes.
fn random_batch(
    rng: &mut SplitMix64,
    next_id: &mut u128,
    pendings: &mut Vec<u128>,
    accounts: &[u128],
) -> Vec<Transfer> {
    let n = 1 + rng.below(12);
    (0..n)
        .map(|_| {
            *next_id += 1;
            let id = *next_id;
            let dr = rng.pick(accounts);
            let cr = rng.pick(accounts);
            let amount = u128::from(1 + rng.below(1000));
            let mut t = match rng.below(10) {
                0..=3 => transfer(id, dr, cr, amount),
                4 | 5 => {
                    let mut t = transfer(id, dr, cr, amount);
                    t.flags = TransferFlags::PENDING;
                    if rng.below(3) == 0 {
                        t.timeout = 1 + rng.below(5) as u32;
                    }
                    pendings.push(id);
                    t
                }
                6 if !pendings.is_empty() => {
                    let amount = if rng.below(2) == 0 { 0 } else { amount };
                    let pending = rng.pick(pendings);
                    settle(id, pending, TransferFlags::POST_PENDING_TRANSFER, amount)
                }
                7 if !pendings.is_empty() => {
                    let pending = rng.pick(pendings);
                    settle(id, pending, TransferFlags::VOID_PENDING_TRANSFER, 0)
                }
                8 => {
                    let mut t = transfer(id, dr, cr, rng.pick(&[0, amount]));
                    t.flags = rng.pick(&[
                        TransferFlags::BALANCING_DEBIT,
                        TransferFlags::BALANCING_CREDIT,
                        TransferFlags::BALANCING_DEBIT | TransferFlags::PENDING,
                    ]);
                    t
                }
                _ => transfer(id, dr, rng.pick(&[cr, 999]), amount),
            };
            if rng.below(6) == 0 {
                t.flags |= TransferFlags::LINKED;
            }
            t
        })
        .collect()
}

/// The balances that the transfers `ok` (each one that returned `Ok`)
/// must have produced, derived from the stored transfers alone: each adds
/// its amount to its two accounts, pending or posted; a post or void takes
/// its pending transfer's amount off pending on both sides; a pending
/// transfer with a timeout that was neither posted nor voided has expired
/// (the caller made sure the clock passed every timeout).
fn derived_balances(l: &Ledger, ok: &[u128]) -> HashMap<u128, [i128; 4]> {
    let stored = l.lookup_transfers(ok).unwrap();
    assert_eq!(
        stored.len(),
        ok.len(),
        "a transfer that returned Ok is missing"
    );
    let by_id: HashMap<u128, Transfer> = stored.iter().map(|t| (t.id, *t)).collect();
    let mut out: HashMap<u128, [i128; 4]> = HashMap::new();
    let mut add = |t: &Transfer, pending: i128, posted: i128| {
        let dr = out.entry(t.debit_account_id).or_default();
        dr[0] += pending;
        dr[1] += posted;
        let cr = out.entry(t.credit_account_id).or_default();
        cr[2] += pending;
        cr[3] += posted;
    };
    let mut settled = HashSet::new();
    for t in &stored {
        let amount = i128::try_from(t.amount).unwrap();
        let settles = TransferFlags::POST_PENDING_TRANSFER | TransferFlags::VOID_PENDING_TRANSFER;
        if t.flags.intersects(settles) {
            let p = by_id[&t.pending_id];
            assert!(settled.insert(p.id), "pending {} settled twice", p.id);
            assert_eq!(
                (t.debit_account_id, t.credit_account_id),
                (p.debit_account_id, p.credit_account_id)
            );
            let reserved = i128::try_from(p.amount).unwrap();
            let posted = if t.flags.contains(TransferFlags::POST_PENDING_TRANSFER) {
                amount
            } else {
                0
            };
            add(t, -reserved, posted);
        } else if t.flags.contains(TransferFlags::PENDING) {
            add(t, amount, 0);
        } else {
            add(t, 0, amount);
        }
    }
    for t in &stored {
        if t.flags.contains(TransferFlags::PENDING) && t.timeout > 0 && !settled.contains(&t.id) {
            add(t, -i128::try_from(t.amount).unwrap(), 0);
        }
    }
    out
}

fn assert_matches_derived(l: &Ledger, ok: &[u128], accounts: &[u128]) {
    let derived = derived_balances(l, ok);
    for a in l.lookup_accounts(accounts).unwrap() {
        let d = derived.get(&a.id).copied().unwrap_or_default();
        let got = [
            a.debits_pending,
            a.debits_posted,
            a.credits_pending,
            a.credits_posted,
        ]
        .map(|x| i128::try_from(x).unwrap());
        assert_eq!(
            got, d,
            "account {}: balances differ from its transfers",
            a.id
        );
    }
}

fn ok_ids(batch: &[Transfer], results: &[CreateTransferResult]) -> Vec<u128> {
    assert_eq!(batch.len(), results.len());
    batch
        .iter()
        .zip(results)
        .filter(|(_, r)| **r == CreateTransferResult::Ok)
        .map(|(t, _)| t.id)
        .collect()
}

#[test]
fn sums_balance_and_match_the_transfers_after_many_random_batches() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let l = open_clocked(dir.path(), &clock);
    let accounts = setup(&l);
    let mut ok: Vec<u128> = vec![u128::MAX - 1, u128::MAX - 2, u128::MAX - 3];
    let mut rng = SplitMix64(7);
    let mut next_id = 0;
    let mut pendings = Vec::new();
    let mut kinds = HashSet::new();
    for _ in 0..300 {
        let batch = random_batch(&mut rng, &mut next_id, &mut pendings, &accounts);
        let results = l.create_transfers(&batch).unwrap();
        kinds.extend(results.iter().copied());
        ok.extend(ok_ids(&batch, &results));
        assert_balanced(&l.snapshot());
        clock.advance(rng.below(2_000_000_000));
    }
    // The workload must have exercised what it claims to.
    for code in [
        CreateTransferResult::Ok,
        CreateTransferResult::LinkedEventFailed,
        CreateTransferResult::ExceedsCredits,
        CreateTransferResult::PendingTransferAlreadyPosted,
        CreateTransferResult::PendingTransferExpired,
        CreateTransferResult::CreditAccountNotFound,
    ] {
        assert!(kinds.contains(&code), "no {code:?} in {kinds:?}");
    }
    clock.advance_secs(60);
    l.expire_pending().unwrap();
    assert_balanced(&l.snapshot());
    assert_matches_derived(&l, &ok, &accounts);

    // And the same after a reopen (the log replayed).
    drop(l);
    let l = open_clocked(dir.path(), &clock);
    assert_balanced(&l.snapshot());
    assert_matches_derived(&l, &ok, &accounts);
}

#[test]
fn sums_balance_in_every_snapshot_while_threads_create_transfers() {
    const WRITERS: u64 = 3;
    const BATCHES: usize = 150;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let l = open_clocked(dir.path(), &clock);
    let accounts = setup(&l);
    let done = AtomicBool::new(false);
    let (ok, snapshots) = std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut seen = HashSet::new();
            let mut count = 0u64;
            loop {
                let finished = done.load(Ordering::SeqCst);
                let snap = l.snapshot();
                assert_balanced(&snap);
                seen.insert(snap.ts());
                count += 1;
                if finished {
                    break;
                }
            }
            (count, seen.len())
        });
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (l, accounts, clock) = (&l, &accounts, &clock);
                s.spawn(move || {
                    let mut rng = SplitMix64(100 + w);
                    let mut next_id = u128::from(w + 1) << 64;
                    let mut pendings = Vec::new();
                    let mut ok = Vec::new();
                    for _ in 0..BATCHES {
                        let batch = random_batch(&mut rng, &mut next_id, &mut pendings, accounts);
                        let results = l.create_transfers(&batch).unwrap();
                        ok.extend(ok_ids(&batch, &results));
                        clock.advance(rng.below(300_000_000));
                    }
                    ok
                })
            })
            .collect();
        let mut ok: Vec<u128> = vec![u128::MAX - 1, u128::MAX - 2, u128::MAX - 3];
        for w in writers {
            ok.extend(w.join().unwrap());
        }
        done.store(true, Ordering::SeqCst);
        (ok, reader.join().unwrap())
    });
    let (count, distinct) = snapshots;
    assert!(
        distinct > 1,
        "the reader saw {distinct} distinct states in {count} snapshots"
    );
    clock.advance_secs(60);
    l.expire_pending().unwrap();
    assert_balanced(&l.snapshot());
    assert_matches_derived(&l, &ok, &accounts);
}
