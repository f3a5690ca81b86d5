//! Two-phase transfers (issue 3, rule 3): a `PENDING` transfer reserves its
//! amount; `POST_PENDING_TRANSFER` (in full, a smaller amount, or amount 0 =
//! in full) or `VOID_PENDING_TRANSFER` settles it exactly once; a pending
//! transfer with a `timeout` expires once the ledger's clock reaches
//! `timestamp + timeout * 1e9` and is then released as if voided, durably;
//! a post or void after that is `PendingTransferExpired`. Closing transfers
//! close their accounts until voided (or expired); a closed account takes
//! no transfers but voids (TigerBeetle's `account.md`, `flags.closed`).

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{NS, T0, account, open_clocked, open_with, pending, post, submit, transfer, void};
use mvledger::{
    AccountFlags, CreateAccountResult, CreateTransferResult as R, Ledger, ManualClock, SyncMode,
    Transfer, TransferFlags,
};

/// Two plain accounts, 1 and 2.
fn setup(dir: &Path, clock: &Arc<ManualClock>) -> Ledger {
    let l = open_clocked(dir, clock);
    let r = l
        .create_accounts(&[
            account(1, AccountFlags::empty()),
            account(2, AccountFlags::empty()),
        ])
        .unwrap();
    assert_eq!(r, [CreateAccountResult::Ok, CreateAccountResult::Ok]);
    l
}

/// (debits_pending, debits_posted) of `dr` and (credits_pending,
/// credits_posted) of `cr`.
fn sides(l: &Ledger, dr: u128, cr: u128) -> [u128; 4] {
    let a = l.lookup_accounts(&[dr, cr]).unwrap();
    [
        a[0].debits_pending,
        a[0].debits_posted,
        a[1].credits_pending,
        a[1].credits_posted,
    ]
}

fn flags_of(l: &Ledger, id: u128) -> AccountFlags {
    l.lookup_accounts(&[id]).unwrap()[0].flags
}

/// The timestamp the ledger gave transfer `id`.
fn ts_of(l: &Ledger, id: u128) -> u64 {
    l.lookup_transfers(&[id]).unwrap()[0].timestamp
}

#[test]
fn pending_reserves_and_a_full_post_moves_it_to_posted() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let l = setup(dir.path(), &clock);
    submit(&l, pending(10, 1, 2, 100), R::Ok);
    assert_eq!(sides(&l, 1, 2), [100, 0, 100, 0]);
    submit(&l, post(11, 10, 100), R::Ok);
    assert_eq!(sides(&l, 1, 2), [0, 100, 0, 100]);
    assert_eq!(l.lookup_transfers(&[11]).unwrap()[0].amount, 100);
}

#[test]
fn a_smaller_post_posts_that_much_and_releases_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let l = setup(dir.path(), &clock);
    submit(&l, pending(10, 1, 2, 100), R::Ok);
    submit(&l, post(11, 10, 30), R::Ok);
    assert_eq!(sides(&l, 1, 2), [0, 30, 0, 30]);
    assert_eq!(l.lookup_transfers(&[11]).unwrap()[0].amount, 30);
    // The rest is gone for good: no second post.
    submit(&l, post(12, 10, 70), R::PendingTransferAlreadyPosted);
    assert_eq!(sides(&l, 1, 2), [0, 30, 0, 30]);
}

#[test]
fn a_post_of_amount_zero_posts_the_full_pending_amount() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let l = setup(dir.path(), &clock);
    submit(&l, pending(10, 1, 2, 100), R::Ok);
    submit(&l, post(11, 10, 0), R::Ok);
    assert_eq!(sides(&l, 1, 2), [0, 100, 0, 100]);
    assert_eq!(l.lookup_transfers(&[11]).unwrap()[0].amount, 100);
}

/// TigerBeetle since 0.16 spells "the whole pending amount" of a post
/// `AMOUNT_MAX` (`u128::MAX`); 0 keeps its older meaning here (zero-amount
/// transfers are refused), so both post the whole amount, and a post sent
/// again with either is `Exists`. A void's amount is 0 or exactly the
/// pending amount, as in TigerBeetle: `u128::MAX` exceeds it.
#[test]
fn a_post_of_u128_max_settles_the_whole_pending_amount_and_a_void_of_it_exceeds_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let l = setup(dir.path(), &clock);
    submit(&l, pending(10, 1, 2, 100), R::Ok);
    submit(&l, post(11, 10, u128::MAX), R::Ok);
    assert_eq!(sides(&l, 1, 2), [0, 100, 0, 100]);
    assert_eq!(l.lookup_transfers(&[11]).unwrap()[0].amount, 100);
    submit(&l, post(11, 10, u128::MAX), R::Exists);
    submit(&l, post(11, 10, 0), R::Exists);
    submit(&l, post(11, 10, 100), R::Exists);
    submit(&l, post(11, 10, 99), R::ExistsWithDifferentAmount);
    submit(&l, pending(20, 1, 2, 30), R::Ok);
    let void_max = mvledger::Transfer {
        amount: u128::MAX,
        ..void(21, 20)
    };
    submit(&l, void_max, R::ExceedsPendingTransferAmount);
    assert_eq!(sides(&l, 1, 2), [30, 100, 30, 100], "nothing voided");
    submit(&l, void(22, 20), R::Ok);
    assert_eq!(sides(&l, 1, 2), [0, 100, 0, 100], "the void released 30");
    // Above the pending amount but below u128::MAX it still exceeds it.
    submit(&l, pending(30, 1, 2, 5), R::Ok);
    submit(&l, post(31, 30, 6), R::ExceedsPendingTransferAmount);
}

#[test]
fn a_void_releases_the_whole_reservation() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let l = setup(dir.path(), &clock);
    submit(&l, pending(10, 1, 2, 100), R::Ok);
    submit(&l, pending(11, 1, 2, 50), R::Ok);
    // A void names the full amount or 0; a post at most the full amount.
    submit(
        &l,
        Transfer {
            amount: 99,
            ..void(12, 10)
        },
        R::PendingTransferHasDifferentAmount,
    );
    submit(&l, post(13, 10, 101), R::ExceedsPendingTransferAmount);
    assert_eq!(sides(&l, 1, 2), [150, 0, 150, 0]);
    submit(&l, void(14, 10), R::Ok);
    assert_eq!(sides(&l, 1, 2), [50, 0, 50, 0]);
    submit(
        &l,
        Transfer {
            amount: 50,
            ..void(15, 11)
        },
        R::Ok,
    );
    assert_eq!(sides(&l, 1, 2), [0, 0, 0, 0]);
    assert_eq!(l.lookup_transfers(&[14, 15]).unwrap()[0].amount, 100);
}

#[test]
fn a_pending_transfer_settles_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let l = setup(dir.path(), &clock);
    let r = l
        .create_transfers(&[
            pending(10, 1, 2, 10),
            pending(11, 1, 2, 20),
            pending(12, 1, 2, 40),
        ])
        .unwrap();
    assert_eq!(r, [R::Ok; 3]);
    submit(&l, post(20, 10, 0), R::Ok);
    submit(&l, void(21, 11), R::Ok);
    let settled = sides(&l, 1, 2);
    assert_eq!(settled, [40, 10, 40, 10]);
    submit(&l, post(22, 10, 0), R::PendingTransferAlreadyPosted);
    submit(&l, void(23, 10), R::PendingTransferAlreadyPosted);
    submit(&l, post(24, 11, 0), R::PendingTransferAlreadyVoided);
    submit(&l, void(25, 11), R::PendingTransferAlreadyVoided);
    // Twice in one batch: the second is refused.
    let r = l
        .create_transfers(&[post(26, 12, 5), void(27, 12), post(28, 12, 5)])
        .unwrap();
    assert_eq!(
        r,
        [
            R::Ok,
            R::PendingTransferAlreadyPosted,
            R::PendingTransferAlreadyPosted
        ]
    );
    assert_eq!(sides(&l, 1, 2), [0, 15, 0, 15]);
    assert!(
        l.lookup_transfers(&[22, 23, 24, 25, 27, 28])
            .unwrap()
            .is_empty()
    );
}

#[test]
fn a_post_or_void_takes_the_pending_transfers_fields_it_leaves_zero() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let l = setup(dir.path(), &clock);
    let p = Transfer {
        user_data_128: 7,
        user_data_64: 8,
        user_data_32: 9,
        code: 3,
        ..pending(10, 1, 2, 100)
    };
    submit(&l, p, R::Ok);
    submit(&l, pending(11, 1, 2, 100), R::Ok);
    submit(&l, post(20, 10, 0), R::Ok);
    submit(
        &l,
        Transfer {
            user_data_64: 80,
            debit_account_id: 1,
            ledger: 1,
            ..void(21, 11)
        },
        R::Ok,
    );
    let [posted, voided] = l.lookup_transfers(&[20, 21]).unwrap()[..] else {
        panic!("settling transfers missing")
    };
    assert_eq!(
        (
            posted.debit_account_id,
            posted.credit_account_id,
            posted.ledger,
            posted.code
        ),
        (1, 2, 1, 3)
    );
    assert_eq!(
        (
            posted.user_data_128,
            posted.user_data_64,
            posted.user_data_32,
            posted.pending_id
        ),
        (7, 8, 9, 10)
    );
    assert!(posted.timestamp > ts_of(&l, 10));
    assert_eq!(
        (voided.user_data_64, voided.code, voided.amount),
        (80, 1, 100)
    );
}

#[test]
fn a_pending_transfer_expires_exactly_at_timestamp_plus_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let l = setup(dir.path(), &clock);
    submit(
        &l,
        Transfer {
            timeout: 10,
            ..pending(10, 1, 2, 100)
        },
        R::Ok,
    );
    let expires_at = ts_of(&l, 10) + 10 * NS;
    clock.set(expires_at - 1);
    l.expire_pending().unwrap();
    assert_eq!(sides(&l, 1, 2), [100, 0, 100, 0], "expired early");
    clock.set(expires_at);
    l.expire_pending().unwrap();
    assert_eq!(sides(&l, 1, 2), [0, 0, 0, 0], "not released at its expiry");
    submit(&l, post(11, 10, 0), R::PendingTransferExpired);
    submit(&l, void(12, 10), R::PendingTransferExpired);
    assert_eq!(sides(&l, 1, 2), [0, 0, 0, 0]);
    assert!(l.lookup_transfers(&[11, 12]).unwrap().is_empty());
}

#[test]
fn expire_pending_releases_every_transfer_that_is_due_however_many() {
    // A write call expires up to 8,190 due transfers first; an explicit
    // `expire_pending` expires them all. (An outside review found 10 of
    // 8,200 still reserved after it.)
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let l = setup(dir.path(), &clock);
    let ids: Vec<u128> = (0..8_200).map(|i| 10_000 + i).collect();
    let batch: Vec<Transfer> = ids
        .iter()
        .map(|&id| Transfer {
            timeout: 1,
            ..pending(id, 1, 2, 1)
        })
        .collect();
    assert!(
        l.create_transfers(&batch)
            .unwrap()
            .iter()
            .all(|r| *r == R::Ok)
    );
    assert_eq!(sides(&l, 1, 2), [8_200, 0, 8_200, 0]);
    clock.advance_secs(2);
    l.expire_pending().unwrap();
    assert_eq!(
        sides(&l, 1, 2),
        [0, 0, 0, 0],
        "due transfers still reserved"
    );
    let states = l.snapshot().pending_states(&ids).unwrap();
    assert!(
        states
            .iter()
            .all(|s| *s == Some(mvledger::PendingState::Expired)),
        "not every due transfer expired"
    );
}

#[test]
fn transfers_due_at_the_same_time_expire_in_the_order_they_were_created() {
    // TigerBeetle's `transfer.md` (timeout): "Pending balances are removed
    // in chronological order by expiry. If multiple transfers expire at
    // the same time, then ordered by the transfer's creation timestamp."
    // Seen where a write call's 8,190 stop between two such transfers: X,
    // created first with a high id, and Y, created a second later with a
    // low id and a timeout a second shorter.
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let l = setup(dir.path(), &clock);
    let timed = |id, timeout| Transfer {
        timeout,
        ..pending(id, 1, 2, 1)
    };
    submit(&l, timed(9_000_000, 2), R::Ok);
    let x = ts_of(&l, 9_000_000);
    clock.set(x + 1_000);
    // 8,189 transfers due before X and Y.
    let fill: Vec<Transfer> = (0..8_189).map(|i| timed(100_000 + i, 1)).collect();
    assert!(
        l.create_transfers(&fill)
            .unwrap()
            .iter()
            .all(|r| *r == R::Ok)
    );
    clock.set(x + NS);
    submit(&l, timed(1, 1), R::Ok);
    assert_eq!(ts_of(&l, 1), x + NS, "Y's expiry is not X's");
    clock.set(x + 2 * NS);
    // A write call expires 8,190: the 8,189, then X.
    let r = l
        .create_accounts(&[account(3, AccountFlags::empty())])
        .unwrap();
    assert_eq!(r, [CreateAccountResult::Ok]);
    assert_eq!(
        l.snapshot().pending_states(&[9_000_000, 1]).unwrap(),
        [
            Some(mvledger::PendingState::Expired),
            Some(mvledger::PendingState::Pending)
        ],
        "the later-created transfer expired first"
    );
}

#[test]
fn any_write_call_expires_what_is_due() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let l = setup(dir.path(), &clock);
    let timed = |id, timeout| Transfer {
        timeout,
        ..pending(id, 1, 2, 10)
    };
    let r = l
        .create_transfers(&[timed(10, 1), timed(11, 2), timed(12, 0)])
        .unwrap();
    assert_eq!(r, [R::Ok; 3]);
    assert_eq!(sides(&l, 1, 2), [30, 0, 30, 0]);
    let ts = ts_of(&l, 10);
    assert_eq!(ts_of(&l, 11), ts + 1);
    clock.set(ts + NS);
    // An unrelated create_accounts expires 10 (and 11 not yet).
    let r = l
        .create_accounts(&[account(3, AccountFlags::empty())])
        .unwrap();
    assert_eq!(r, [CreateAccountResult::Ok]);
    assert_eq!(sides(&l, 1, 2), [20, 0, 20, 0]);
    clock.set(ts + 1 + 2 * NS);
    // An unrelated create_transfers expires 11 (before its own transfers).
    submit(&l, transfer(13, 3, 1, 5), R::Ok);
    assert_eq!(sides(&l, 1, 2), [10, 0, 10, 0]);
    // 12 has no timeout: it never expires.
    clock.advance_secs(1_000_000);
    l.expire_pending().unwrap();
    assert_eq!(sides(&l, 1, 2), [10, 0, 10, 0]);
    submit(&l, post(14, 12, 0), R::Ok);
}

#[test]
fn a_post_whose_own_timestamp_reaches_the_expiry_is_expired() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let l = setup(dir.path(), &clock);
    submit(
        &l,
        Transfer {
            timeout: 1,
            ..pending(10, 1, 2, 100)
        },
        R::Ok,
    );
    let expires_at = ts_of(&l, 10) + NS;
    // The batch starts before the expiry; its fourth event is at it.
    clock.set(expires_at - 3);
    let r = l
        .create_transfers(&[
            transfer(20, 2, 1, 1),
            transfer(21, 2, 1, 1),
            transfer(22, 2, 1, 1),
            post(23, 10, 0),
        ])
        .unwrap();
    assert_eq!(r, [R::Ok, R::Ok, R::Ok, R::PendingTransferExpired]);
    l.expire_pending().unwrap();
    let a = l.lookup_accounts(&[1]).unwrap()[0];
    assert_eq!((a.debits_pending, a.debits_posted), (0, 0));
}

#[test]
fn a_post_before_the_timeout_settles_it_and_nothing_expires_later() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let l = setup(dir.path(), &clock);
    let r = l
        .create_transfers(&[
            Transfer {
                timeout: 5,
                ..pending(10, 1, 2, 100)
            },
            Transfer {
                timeout: 5,
                ..pending(11, 1, 2, 1000)
            },
            pending(12, 1, 2, 7),
        ])
        .unwrap();
    assert_eq!(r, [R::Ok; 3]);
    clock.advance_secs(4);
    let r = l
        .create_transfers(&[post(20, 10, 60), void(21, 11)])
        .unwrap();
    assert_eq!(r, [R::Ok, R::Ok]);
    assert_eq!(sides(&l, 1, 2), [7, 60, 7, 60]);
    // Past the timeouts: the settled transfers must not be released again
    // (that would take 12's reservation).
    clock.advance_secs(10);
    l.expire_pending().unwrap();
    assert_eq!(sides(&l, 1, 2), [7, 60, 7, 60]);
    submit(&l, post(22, 10, 0), R::PendingTransferAlreadyPosted);
    submit(&l, post(23, 11, 0), R::PendingTransferAlreadyVoided);
}

/// Copies the ledger's files as a crash now would leave them (the ledger
/// is still open: nothing is flushed on close).
fn crash_image(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() && entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[test]
fn expiry_is_durable_and_survives_a_crash_and_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let l = open_with(dir.path(), &clock, SyncMode::Always);
    let r = l
        .create_accounts(&[
            account(1, AccountFlags::empty()),
            account(2, AccountFlags::empty()),
        ])
        .unwrap();
    assert_eq!(r, [CreateAccountResult::Ok; 2]);
    let r = l
        .create_transfers(&[
            Transfer {
                timeout: 3,
                ..pending(10, 1, 2, 100)
            },
            Transfer {
                timeout: 30,
                ..pending(11, 1, 2, 20)
            },
        ])
        .unwrap();
    assert_eq!(r, [R::Ok; 2]);
    clock.set(ts_of(&l, 10) + 3 * NS);
    l.expire_pending().unwrap();
    assert_eq!(sides(&l, 1, 2), [20, 0, 20, 0]);

    // A crash right after expire_pending returned: the expiry is on disk.
    let image = tempfile::tempdir().unwrap();
    crash_image(dir.path(), image.path());
    {
        let c = open_clocked(image.path(), &clock);
        assert_eq!(sides(&c, 1, 2), [20, 0, 20, 0], "expiry lost in a crash");
        submit(&c, post(20, 10, 0), R::PendingTransferExpired);
    }

    // A clean reopen.
    drop(l);
    let l = open_clocked(dir.path(), &clock);
    assert_eq!(sides(&l, 1, 2), [20, 0, 20, 0], "expiry lost on reopen");
    submit(&l, post(21, 10, 0), R::PendingTransferExpired);
    // The other timeout, recovered from the log, still fires.
    clock.advance_secs(30);
    l.expire_pending().unwrap();
    assert_eq!(sides(&l, 1, 2), [0, 0, 0, 0]);
    drop(l);
    let l = open_clocked(dir.path(), &clock);
    assert_eq!(sides(&l, 1, 2), [0, 0, 0, 0]);
    submit(&l, void(22, 11), R::PendingTransferExpired);
}

#[test]
fn a_closing_debit_closes_the_account_and_a_void_reopens_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let l = setup(dir.path(), &clock);
    submit(&l, transfer(9, 2, 1, 50), R::Ok);
    submit(
        &l,
        Transfer {
            flags: TransferFlags::PENDING | TransferFlags::CLOSING_DEBIT,
            ..transfer(10, 1, 2, 50)
        },
        R::Ok,
    );
    assert!(flags_of(&l, 1).contains(AccountFlags::CLOSED));
    assert!(!flags_of(&l, 2).contains(AccountFlags::CLOSED));
    let before = sides(&l, 1, 2);
    // Closed on both sides: as debit and as credit account.
    submit(&l, transfer(11, 1, 2, 1), R::DebitAccountAlreadyClosed);
    submit(&l, transfer(12, 2, 1, 1), R::CreditAccountAlreadyClosed);
    submit(&l, pending(13, 2, 1, 1), R::CreditAccountAlreadyClosed);
    assert_eq!(sides(&l, 1, 2), before);
    submit(&l, void(14, 10), R::Ok);
    assert!(!flags_of(&l, 1).contains(AccountFlags::CLOSED));
    submit(&l, transfer(15, 1, 2, 1), R::Ok);
    // Reopened durably.
    drop(l);
    let l = open_clocked(dir.path(), &clock);
    assert!(!flags_of(&l, 1).contains(AccountFlags::CLOSED));
}

#[test]
fn a_closing_credit_closes_the_account_and_its_expiry_reopens_it() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let l = setup(dir.path(), &clock);
    submit(
        &l,
        Transfer {
            flags: TransferFlags::PENDING | TransferFlags::CLOSING_CREDIT,
            timeout: 2,
            ..transfer(10, 1, 2, 5)
        },
        R::Ok,
    );
    assert!(flags_of(&l, 2).contains(AccountFlags::CLOSED));
    assert!(!flags_of(&l, 1).contains(AccountFlags::CLOSED));
    submit(&l, transfer(11, 1, 2, 1), R::CreditAccountAlreadyClosed);
    drop(l);
    let l = open_clocked(dir.path(), &clock);
    assert!(
        flags_of(&l, 2).contains(AccountFlags::CLOSED),
        "closed lost on reopen"
    );
    clock.set(ts_of(&l, 10) + 2 * NS);
    l.expire_pending().unwrap();
    assert!(!flags_of(&l, 2).contains(AccountFlags::CLOSED));
    assert_eq!(sides(&l, 1, 2), [0, 0, 0, 0]);
    submit(&l, transfer(12, 1, 2, 1), R::Ok);
    drop(l);
    let l = open_clocked(dir.path(), &clock);
    assert!(!flags_of(&l, 2).contains(AccountFlags::CLOSED));
}

#[test]
fn a_closed_account_refuses_transfers_but_takes_voids() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let l = setup(dir.path(), &clock);
    let r = l
        .create_accounts(&[account(3, AccountFlags::CLOSED)])
        .unwrap();
    assert_eq!(r, [CreateAccountResult::Ok]);
    submit(&l, transfer(10, 3, 1, 1), R::DebitAccountAlreadyClosed);
    submit(&l, transfer(11, 1, 3, 1), R::CreditAccountAlreadyClosed);

    // Reservations made before account 1 closes: a void still works, a
    // post does not (it would move money in a closed account).
    let r = l
        .create_transfers(&[pending(20, 1, 2, 10), pending(21, 2, 1, 10)])
        .unwrap();
    assert_eq!(r, [R::Ok; 2]);
    submit(
        &l,
        Transfer {
            flags: TransferFlags::PENDING | TransferFlags::CLOSING_DEBIT,
            ..transfer(22, 1, 2, 1)
        },
        R::Ok,
    );
    submit(&l, post(23, 20, 0), R::DebitAccountAlreadyClosed);
    submit(&l, post(24, 21, 0), R::CreditAccountAlreadyClosed);
    submit(&l, void(25, 20), R::Ok);
    submit(&l, void(26, 21), R::Ok);
    assert_eq!(sides(&l, 1, 2), [1, 0, 1, 0]);
    // A second closing transfer on a closed account is refused too.
    submit(
        &l,
        Transfer {
            flags: TransferFlags::PENDING | TransferFlags::CLOSING_DEBIT,
            ..transfer(27, 1, 2, 1)
        },
        R::DebitAccountAlreadyClosed,
    );
}

/// TigerBeetle's `account.md`, `flags.closed`: a closed account "will
/// reject further transfers, except for voiding two-phase transfers that
/// are still pending", and a closing transfer is undone only by voiding
/// it. Posting the closing transfer itself moves money in the closed
/// account: refused (TigerBeetle's state machine returns
/// `debit_account_already_closed` here).
#[test]
fn posting_a_closing_transfer_is_refused_because_its_account_is_closed() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let l = setup(dir.path(), &clock);
    let r = l
        .create_accounts(&[
            account(3, AccountFlags::empty()),
            account(4, AccountFlags::empty()),
        ])
        .unwrap();
    assert_eq!(r, [CreateAccountResult::Ok; 2]);
    let r = l
        .create_transfers(&[
            Transfer {
                flags: TransferFlags::PENDING | TransferFlags::CLOSING_DEBIT,
                ..transfer(10, 1, 2, 5)
            },
            Transfer {
                flags: TransferFlags::PENDING | TransferFlags::CLOSING_CREDIT,
                ..transfer(11, 3, 4, 5)
            },
        ])
        .unwrap();
    assert_eq!(r, [R::Ok; 2]);
    submit(&l, post(12, 10, 0), R::DebitAccountAlreadyClosed);
    submit(&l, post(13, 11, 0), R::CreditAccountAlreadyClosed);
    assert_eq!(sides(&l, 1, 2), [5, 0, 5, 0]);
    assert_eq!(sides(&l, 3, 4), [5, 0, 5, 0]);
}

/// `pending_states` says where each pending transfer stands: still
/// reserved, posted (in full or in part), voided or expired; `None` for a
/// transfer that is not pending and for an unknown id; the same after a
/// reopen, and a snapshot keeps what it saw.
#[test]
fn pending_states_tell_reserved_posted_voided_and_expired_apart() {
    use mvledger::PendingState as S;
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let l = setup(dir.path(), &clock);
    let timed = Transfer {
        timeout: 10,
        ..pending(13, 1, 2, 4)
    };
    let rs = l
        .create_transfers(&[
            pending(10, 1, 2, 1),
            pending(11, 1, 2, 2),
            pending(12, 1, 2, 3),
            timed,
            transfer(14, 1, 2, 5),
        ])
        .unwrap();
    assert_eq!(rs, [R::Ok; 5]);
    let before = l.snapshot();
    let rs = l
        .create_transfers(&[post(20, 10, 0), void(21, 11)])
        .unwrap();
    assert_eq!(rs, [R::Ok; 2]);
    clock.set(ts_of(&l, 13) + 10 * NS);
    l.expire_pending().unwrap();
    let ids = [10, 11, 12, 13, 14, 20, 99];
    let now = [
        Some(S::Posted),
        Some(S::Voided),
        Some(S::Pending),
        Some(S::Expired),
        None,
        None,
        None,
    ];
    assert_eq!(l.pending_states(&ids).unwrap(), now);
    assert_eq!(
        before.pending_states(&ids[..4]).unwrap(),
        [Some(S::Pending); 4],
        "a snapshot from before the settlements"
    );
    drop(before);
    drop(l);
    let l = open_clocked(dir.path(), &clock);
    assert_eq!(l.pending_states(&ids).unwrap(), now, "after a reopen");
}

/// `expire_pending` with nothing due commits, logs and syncs nothing (an
/// idle ledger that calls it on a timer keeps its log as it is); once the
/// timeout passes, it voids what is due, durably.
#[test]
fn expire_pending_with_nothing_due_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let l = open_with(dir.path(), &clock, SyncMode::Always);
    l.create_accounts(&[
        account(1, AccountFlags::empty()),
        account(2, AccountFlags::empty()),
    ])
    .unwrap();
    let timed = Transfer {
        timeout: 10,
        ..pending(10, 1, 2, 100)
    };
    submit(&l, timed, R::Ok);
    let before = l.stats();
    for _ in 0..3 {
        clock.advance_secs(1);
        l.expire_pending().unwrap();
    }
    let idle = l.stats();
    assert_eq!(
        (idle.commits, idle.log_bytes, idle.syncs),
        (before.commits, before.log_bytes, before.syncs),
        "nothing was due: nothing is written"
    );
    assert_eq!(sides(&l, 1, 2), [100, 0, 100, 0]);
    clock.advance_secs(10);
    l.expire_pending().unwrap();
    assert_eq!(sides(&l, 1, 2), [0, 0, 0, 0], "due: voided");
    assert_eq!(l.stats().commits, before.commits + 1);
    drop(l);
    let l = open_with(dir.path(), &clock, SyncMode::Always);
    assert_eq!(sides(&l, 1, 2), [0, 0, 0, 0], "the expiry is durable");
    let reopened = l.stats();
    l.expire_pending().unwrap();
    assert_eq!(l.stats().log_bytes, reopened.log_bytes);
}
