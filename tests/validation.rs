//! Validation (issue 3, rule 6; ARCHITECTURE.md invariant 8): every rule
//! of `create_accounts` and `create_transfers` has its result code, and an
//! item that breaks one applies nothing (no account, no transfer, no
//! balance changed). An item that breaks several gets the code listed
//! first in ARCHITECTURE.md ("Ledger model", TigerBeetle's order).

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{NS, T0, open_with, pending, transfer, void};
use mvledger::{
    Account, AccountFlags, CreateAccountResult as A, CreateTransferResult as R, Ledger,
    LedgerOptions, ManualClock, Options, SyncMode, Transfer, TransferFlags,
};

const MAX: u128 = u128::MAX;

/// A ledger whose clock stands at `now_ns`.
fn open(dir: &Path, now_ns: u64) -> Ledger {
    open_with(dir, &Arc::new(ManualClock::new(now_ns)), SyncMode::Never)
}

fn account(id: u128) -> Account {
    common::account(id, AccountFlags::empty())
}

fn post(id: u128, pending_id: u128) -> Transfer {
    Transfer {
        id,
        pending_id,
        flags: TransferFlags::POST_PENDING_TRANSFER,
        ..Default::default()
    }
}

/// The ledger every transfer test starts from:
/// - accounts 1, 2 (ledger 1), 3, 4 (ledger 2), 5 (ledger 1, closed),
///   6 (ledger 1, debits must not exceed credits), 7 (ledger 1, credits
///   must not exceed debits), 8 (ledger 1, code 2);
/// - 1000: pending 1 -> 2 of 10, code 1; 1001: posted 1 -> 2 of 5;
///   1002: pending, posted by 1003; 1004: pending, voided by 1005;
///   1006: pending with a 1 s timeout, expired.
struct Fixture {
    _dir: tempfile::TempDir,
    l: Ledger,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let l = Ledger::open(
        dir.path(),
        LedgerOptions {
            engine: Options {
                sync: SyncMode::Never,
                ..Default::default()
            },
            clock: clock.clone(),
        },
    )
    .unwrap();
    let r = l
        .create_accounts(&[
            account(1),
            account(2),
            Account {
                ledger: 2,
                ..account(3)
            },
            Account {
                ledger: 2,
                ..account(4)
            },
            Account {
                flags: AccountFlags::CLOSED,
                ..account(5)
            },
            Account {
                flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
                ..account(6)
            },
            Account {
                flags: AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
                ..account(7)
            },
            Account {
                code: 2,
                ..account(8)
            },
        ])
        .unwrap();
    assert_eq!(r, [A::Ok; 8]);
    let r = l
        .create_transfers(&[
            pending(1000, 1, 2, 10),
            transfer(1001, 1, 2, 5),
            pending(1002, 1, 2, 1),
            post(1003, 1002),
            pending(1004, 1, 2, 1),
            void(1005, 1004),
            Transfer {
                timeout: 1,
                ..pending(1006, 1, 2, 1)
            },
        ])
        .unwrap();
    assert_eq!(r, [R::Ok; 7]);
    clock.advance_secs(2);
    l.expire_pending().unwrap();
    Fixture { _dir: dir, l }
}

/// Submits `t` alone, expects `code`, and checks that nothing was applied.
fn rejected(l: &Ledger, t: Transfer, code: R) {
    let accounts = l.snapshot().accounts().unwrap();
    let existing = l.lookup_transfers(&[t.id]).unwrap();
    assert_eq!(l.create_transfers(&[t]).unwrap(), [code], "{t:?}");
    assert_eq!(
        l.snapshot().accounts().unwrap(),
        accounts,
        "{t:?} ({code:?}) changed balances"
    );
    assert_eq!(
        l.lookup_transfers(&[t.id]).unwrap(),
        existing,
        "{t:?} ({code:?}) was stored"
    );
}

/// Creates `a` alone, expects `code`, and checks that nothing was applied.
fn rejected_account(l: &Ledger, a: Account, code: A) {
    let accounts = l.snapshot().accounts().unwrap();
    assert_eq!(l.create_accounts(&[a]).unwrap(), [code], "{a:?}");
    assert_eq!(
        l.snapshot().accounts().unwrap(),
        accounts,
        "{a:?} ({code:?}) changed the accounts"
    );
}

fn empty_ledger() -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path(), T0);
    (dir, l)
}

/// A rejected account leaves its id free (when it is a valid id).
fn rejected_then_free(a: Account, code: A) {
    let (_dir, l) = empty_ledger();
    rejected_account(&l, a, code);
    assert_eq!(l.create_accounts(&[account(a.id)]).unwrap(), [A::Ok]);
}

// ---- create_accounts ----

#[test]
fn account_timestamp_must_be_zero() {
    rejected_then_free(
        Account {
            timestamp: 1,
            ..account(10)
        },
        A::TimestampMustBeZero,
    );
}

#[test]
fn account_reserved_field() {
    rejected_then_free(
        Account {
            reserved: 1,
            ..account(10)
        },
        A::ReservedField,
    );
}

#[test]
fn account_reserved_flag() {
    for bit in [4, 6, 15] {
        rejected_then_free(
            Account {
                flags: AccountFlags::from_bits_retain(1 << bit),
                ..account(10)
            },
            A::ReservedFlag,
        );
    }
}

/// TigerBeetle's `imported` accounts carry their timestamp: the timestamp
/// rule is not for them, and mvledger refuses the flag (no imports).
#[test]
fn an_imported_account_with_its_timestamp_is_refused_for_the_flag() {
    rejected_then_free(
        Account {
            flags: AccountFlags::from_bits_retain(1 << 4),
            timestamp: 1_000,
            ..account(10)
        },
        A::ReservedFlag,
    );
    // Another unknown bit leaves the timestamp rule first.
    rejected_then_free(
        Account {
            flags: AccountFlags::from_bits_retain(1 << 6),
            timestamp: 1_000,
            ..account(10)
        },
        A::TimestampMustBeZero,
    );
}

#[test]
fn account_id_must_not_be_zero() {
    let (_dir, l) = empty_ledger();
    rejected_account(&l, account(0), A::IdMustNotBeZero);
}

#[test]
fn account_id_must_not_be_int_max() {
    let (_dir, l) = empty_ledger();
    rejected_account(&l, account(MAX), A::IdMustNotBeIntMax);
}

#[test]
fn account_flags_are_mutually_exclusive() {
    rejected_then_free(
        Account {
            flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS
                | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
            ..account(10)
        },
        A::FlagsAreMutuallyExclusive,
    );
}

#[test]
fn account_debits_pending_must_be_zero() {
    rejected_then_free(
        Account {
            debits_pending: 1,
            ..account(10)
        },
        A::DebitsPendingMustBeZero,
    );
}

#[test]
fn account_debits_posted_must_be_zero() {
    rejected_then_free(
        Account {
            debits_posted: 1,
            ..account(10)
        },
        A::DebitsPostedMustBeZero,
    );
}

#[test]
fn account_credits_pending_must_be_zero() {
    rejected_then_free(
        Account {
            credits_pending: 1,
            ..account(10)
        },
        A::CreditsPendingMustBeZero,
    );
}

#[test]
fn account_credits_posted_must_be_zero() {
    rejected_then_free(
        Account {
            credits_posted: 1,
            ..account(10)
        },
        A::CreditsPostedMustBeZero,
    );
}

#[test]
fn account_ledger_must_not_be_zero() {
    rejected_then_free(
        Account {
            ledger: 0,
            ..account(10)
        },
        A::LedgerMustNotBeZero,
    );
}

#[test]
fn account_code_must_not_be_zero() {
    rejected_then_free(
        Account {
            code: 0,
            ..account(10)
        },
        A::CodeMustNotBeZero,
    );
}

#[test]
fn when_an_account_breaks_two_rules_the_first_listed_wins() {
    let (_dir, l) = empty_ledger();
    assert_eq!(l.create_accounts(&[account(1)]).unwrap(), [A::Ok]);
    let cases = [
        (
            Account {
                timestamp: 1,
                reserved: 1,
                ..account(10)
            },
            A::TimestampMustBeZero,
        ),
        (
            Account {
                reserved: 1,
                flags: AccountFlags::from_bits_retain(1 << 4),
                ..account(10)
            },
            A::ReservedField,
        ),
        (
            Account {
                flags: AccountFlags::from_bits_retain(1 << 15),
                ..account(0)
            },
            A::ReservedFlag,
        ),
        (
            Account {
                ledger: 0,
                ..account(0)
            },
            A::IdMustNotBeZero,
        ),
        // An existing id: the comparison comes before the field rules.
        (
            Account {
                ledger: 0,
                code: 0,
                ..account(1)
            },
            A::ExistsWithDifferentLedger,
        ),
        (
            Account {
                debits_posted: 1,
                ..account(1)
            },
            A::Exists,
        ),
        (
            Account {
                flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS
                    | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
                debits_pending: 1,
                ..account(10)
            },
            A::FlagsAreMutuallyExclusive,
        ),
        (
            Account {
                credits_posted: 1,
                ledger: 0,
                ..account(10)
            },
            A::CreditsPostedMustBeZero,
        ),
        (
            Account {
                ledger: 0,
                code: 0,
                ..account(10)
            },
            A::LedgerMustNotBeZero,
        ),
    ];
    for (a, code) in cases {
        rejected_account(&l, a, code);
    }
}

// ---- create_transfers ----

#[test]
fn transfer_timestamp_must_be_zero() {
    let f = fixture();
    rejected(
        &f.l,
        Transfer {
            timestamp: 1,
            ..transfer(10, 1, 2, 1)
        },
        R::TimestampMustBeZero,
    );
}

#[test]
fn transfer_reserved_flag() {
    let f = fixture();
    for bit in [8, 15] {
        rejected(
            &f.l,
            Transfer {
                flags: TransferFlags::from_bits_retain(1 << bit),
                ..transfer(10, 1, 2, 1)
            },
            R::ReservedFlag,
        );
    }
}

#[test]
fn an_imported_transfer_with_its_timestamp_is_refused_for_the_flag() {
    let f = fixture();
    rejected(
        &f.l,
        Transfer {
            flags: TransferFlags::from_bits_retain(1 << 8),
            timestamp: 1_000,
            ..transfer(10, 1, 2, 1)
        },
        R::ReservedFlag,
    );
    rejected(
        &f.l,
        Transfer {
            flags: TransferFlags::from_bits_retain(1 << 9),
            timestamp: 1_000,
            ..transfer(10, 1, 2, 1)
        },
        R::TimestampMustBeZero,
    );
}

#[test]
fn transfer_id_must_not_be_zero() {
    let f = fixture();
    rejected(&f.l, transfer(0, 1, 2, 1), R::IdMustNotBeZero);
}

#[test]
fn transfer_id_must_not_be_int_max() {
    let f = fixture();
    rejected(&f.l, transfer(MAX, 1, 2, 1), R::IdMustNotBeIntMax);
}

#[test]
fn transfer_flags_are_mutually_exclusive() {
    let f = fixture();
    use TransferFlags as F;
    let exclusive = [
        F::PENDING | F::POST_PENDING_TRANSFER,
        F::PENDING | F::VOID_PENDING_TRANSFER,
        F::POST_PENDING_TRANSFER | F::VOID_PENDING_TRANSFER,
        F::POST_PENDING_TRANSFER | F::BALANCING_DEBIT,
        F::POST_PENDING_TRANSFER | F::BALANCING_CREDIT,
        F::VOID_PENDING_TRANSFER | F::BALANCING_DEBIT,
        F::VOID_PENDING_TRANSFER | F::BALANCING_CREDIT,
        F::POST_PENDING_TRANSFER | F::CLOSING_DEBIT,
        F::POST_PENDING_TRANSFER | F::CLOSING_CREDIT,
        F::VOID_PENDING_TRANSFER | F::CLOSING_DEBIT,
        F::VOID_PENDING_TRANSFER | F::CLOSING_CREDIT,
    ];
    for flags in exclusive {
        let t = Transfer {
            flags,
            pending_id: 1000,
            ..transfer(10, 1, 2, 1)
        };
        rejected(&f.l, t, R::FlagsAreMutuallyExclusive);
    }
    // The compatible ones are accepted.
    let compatible = [
        F::PENDING | F::BALANCING_DEBIT | F::BALANCING_CREDIT,
        F::PENDING | F::CLOSING_DEBIT | F::CLOSING_CREDIT,
    ];
    for (i, flags) in compatible.into_iter().enumerate() {
        let r = f.l.create_accounts(&[account(20 + i as u128)]).unwrap();
        assert_eq!(r, [A::Ok]);
        let t = Transfer {
            flags,
            ..transfer(11 + i as u128, 20 + i as u128, 1, 0)
        };
        // The balancing one moves what 2 and 1 allow (6); the closing one
        // closes the fresh account 21 and 1.
        let t = if flags.contains(F::CLOSING_DEBIT) {
            Transfer { amount: 1, ..t }
        } else {
            Transfer {
                debit_account_id: 2,
                credit_account_id: 1,
                ..t
            }
        };
        let r = f.l.create_transfers(&[t]).unwrap();
        assert_eq!(r, [R::Ok], "{flags:?}");
    }
}

#[test]
fn debit_account_id_must_not_be_zero() {
    let f = fixture();
    rejected(&f.l, transfer(10, 0, 2, 1), R::DebitAccountIdMustNotBeZero);
}

#[test]
fn debit_account_id_must_not_be_int_max() {
    let f = fixture();
    rejected(
        &f.l,
        transfer(10, MAX, 2, 1),
        R::DebitAccountIdMustNotBeIntMax,
    );
}

#[test]
fn credit_account_id_must_not_be_zero() {
    let f = fixture();
    rejected(&f.l, transfer(10, 1, 0, 1), R::CreditAccountIdMustNotBeZero);
}

#[test]
fn credit_account_id_must_not_be_int_max() {
    let f = fixture();
    rejected(
        &f.l,
        transfer(10, 1, MAX, 1),
        R::CreditAccountIdMustNotBeIntMax,
    );
}

#[test]
fn accounts_must_be_different() {
    let f = fixture();
    rejected(&f.l, transfer(10, 1, 1, 1), R::AccountsMustBeDifferent);
    rejected(&f.l, pending(10, 2, 2, 1), R::AccountsMustBeDifferent);
}

#[test]
fn pending_id_must_be_zero() {
    let f = fixture();
    for t in [transfer(10, 1, 2, 1), pending(10, 1, 2, 1)] {
        rejected(
            &f.l,
            Transfer {
                pending_id: 1000,
                ..t
            },
            R::PendingIdMustBeZero,
        );
    }
}

#[test]
fn pending_id_must_not_be_zero() {
    let f = fixture();
    rejected(&f.l, post(10, 0), R::PendingIdMustNotBeZero);
    rejected(&f.l, void(10, 0), R::PendingIdMustNotBeZero);
}

#[test]
fn pending_id_must_not_be_int_max() {
    let f = fixture();
    rejected(&f.l, post(10, MAX), R::PendingIdMustNotBeIntMax);
    rejected(&f.l, void(10, MAX), R::PendingIdMustNotBeIntMax);
}

#[test]
fn pending_id_must_be_different() {
    let f = fixture();
    rejected(&f.l, post(10, 10), R::PendingIdMustBeDifferent);
    rejected(&f.l, void(10, 10), R::PendingIdMustBeDifferent);
}

#[test]
fn timeout_reserved_for_pending_transfer() {
    let f = fixture();
    let with_timeout = |t: Transfer| Transfer { timeout: 1, ..t };
    rejected(
        &f.l,
        with_timeout(transfer(10, 1, 2, 1)),
        R::TimeoutReservedForPendingTransfer,
    );
    rejected(
        &f.l,
        with_timeout(post(10, 1000)),
        R::TimeoutReservedForPendingTransfer,
    );
    rejected(
        &f.l,
        with_timeout(void(10, 1000)),
        R::TimeoutReservedForPendingTransfer,
    );
}

#[test]
fn closing_transfer_must_be_pending() {
    let f = fixture();
    for flags in [TransferFlags::CLOSING_DEBIT, TransferFlags::CLOSING_CREDIT] {
        rejected(
            &f.l,
            Transfer {
                flags,
                ..transfer(10, 1, 2, 1)
            },
            R::ClosingTransferMustBePending,
        );
    }
}

#[test]
fn amount_must_not_be_zero() {
    let f = fixture();
    rejected(&f.l, transfer(10, 1, 2, 0), R::AmountMustNotBeZero);
    rejected(&f.l, pending(10, 1, 2, 0), R::AmountMustNotBeZero);
}

#[test]
fn transfer_ledger_must_not_be_zero() {
    let f = fixture();
    rejected(
        &f.l,
        Transfer {
            ledger: 0,
            ..transfer(10, 1, 2, 1)
        },
        R::LedgerMustNotBeZero,
    );
}

#[test]
fn transfer_code_must_not_be_zero() {
    let f = fixture();
    rejected(
        &f.l,
        Transfer {
            code: 0,
            ..transfer(10, 1, 2, 1)
        },
        R::CodeMustNotBeZero,
    );
}

#[test]
fn debit_account_not_found() {
    let f = fixture();
    rejected(&f.l, transfer(10, 99, 2, 1), R::DebitAccountNotFound);
}

#[test]
fn credit_account_not_found() {
    let f = fixture();
    rejected(&f.l, transfer(10, 1, 99, 1), R::CreditAccountNotFound);
}

#[test]
fn accounts_must_have_the_same_ledger() {
    let f = fixture();
    rejected(
        &f.l,
        transfer(10, 1, 3, 1),
        R::AccountsMustHaveTheSameLedger,
    );
}

#[test]
fn transfer_must_have_the_same_ledger_as_accounts() {
    let f = fixture();
    rejected(
        &f.l,
        transfer(10, 3, 4, 1),
        R::TransferMustHaveTheSameLedgerAsAccounts,
    );
}

#[test]
fn pending_transfer_not_found() {
    let f = fixture();
    rejected(&f.l, post(10, 999), R::PendingTransferNotFound);
    rejected(&f.l, void(11, 999), R::PendingTransferNotFound);
}

#[test]
fn pending_transfer_not_pending() {
    let f = fixture();
    rejected(&f.l, post(10, 1001), R::PendingTransferNotPending);
    rejected(&f.l, void(10, 1003), R::PendingTransferNotPending);
}

#[test]
fn pending_transfer_has_different_debit_account_id() {
    let f = fixture();
    rejected(
        &f.l,
        Transfer {
            debit_account_id: 2,
            ..post(10, 1000)
        },
        R::PendingTransferHasDifferentDebitAccountId,
    );
}

#[test]
fn pending_transfer_has_different_credit_account_id() {
    let f = fixture();
    rejected(
        &f.l,
        Transfer {
            credit_account_id: 1,
            ..void(10, 1000)
        },
        R::PendingTransferHasDifferentCreditAccountId,
    );
}

#[test]
fn pending_transfer_has_different_ledger() {
    let f = fixture();
    rejected(
        &f.l,
        Transfer {
            ledger: 2,
            ..post(10, 1000)
        },
        R::PendingTransferHasDifferentLedger,
    );
}

#[test]
fn pending_transfer_has_different_code() {
    let f = fixture();
    rejected(
        &f.l,
        Transfer {
            code: 2,
            ..post(10, 1000)
        },
        R::PendingTransferHasDifferentCode,
    );
}

#[test]
fn exceeds_pending_transfer_amount() {
    let f = fixture();
    for t in [post(10, 1000), void(10, 1000)] {
        rejected(
            &f.l,
            Transfer { amount: 11, ..t },
            R::ExceedsPendingTransferAmount,
        );
    }
}

#[test]
fn pending_transfer_has_different_amount() {
    let f = fixture();
    rejected(
        &f.l,
        Transfer {
            amount: 9,
            ..void(10, 1000)
        },
        R::PendingTransferHasDifferentAmount,
    );
}

#[test]
fn pending_transfer_already_posted() {
    let f = fixture();
    rejected(&f.l, post(10, 1002), R::PendingTransferAlreadyPosted);
    rejected(&f.l, void(10, 1002), R::PendingTransferAlreadyPosted);
}

#[test]
fn pending_transfer_already_voided() {
    let f = fixture();
    rejected(&f.l, post(10, 1004), R::PendingTransferAlreadyVoided);
    rejected(&f.l, void(10, 1004), R::PendingTransferAlreadyVoided);
}

#[test]
fn pending_transfer_expired() {
    let f = fixture();
    rejected(&f.l, post(10, 1006), R::PendingTransferExpired);
    rejected(&f.l, void(10, 1006), R::PendingTransferExpired);
}

#[test]
fn debit_account_already_closed() {
    let f = fixture();
    rejected(&f.l, transfer(10, 5, 2, 1), R::DebitAccountAlreadyClosed);
}

#[test]
fn credit_account_already_closed() {
    let f = fixture();
    rejected(&f.l, pending(10, 1, 5, 1), R::CreditAccountAlreadyClosed);
}

/// A fresh ledger with accounts 1 to 6 on ledger 1 and `setup` applied.
fn huge(setup: &[Transfer]) -> (tempfile::TempDir, Ledger) {
    let (dir, l) = empty_ledger();
    let r = l
        .create_accounts(&(1..=6).map(account).collect::<Vec<_>>())
        .unwrap();
    assert_eq!(r, [A::Ok; 6]);
    let r = l.create_transfers(setup).unwrap();
    assert!(r.iter().all(|r| *r == R::Ok), "{r:?}");
    (dir, l)
}

#[test]
fn overflows_debits_pending() {
    let (_dir, l) = huge(&[pending(100, 1, 2, MAX)]);
    rejected(&l, pending(10, 1, 3, 1), R::OverflowsDebitsPending);
}

#[test]
fn overflows_credits_pending() {
    let (_dir, l) = huge(&[pending(100, 1, 2, MAX)]);
    rejected(&l, pending(10, 3, 2, 1), R::OverflowsCreditsPending);
}

#[test]
fn overflows_debits_posted() {
    let (_dir, l) = huge(&[transfer(100, 1, 2, MAX)]);
    rejected(&l, transfer(10, 1, 3, 1), R::OverflowsDebitsPosted);
    // A pending transfer is checked against posted too: it may be posted.
    rejected(&l, pending(11, 1, 3, 1), R::OverflowsDebitsPosted);
}

#[test]
fn overflows_credits_posted() {
    let (_dir, l) = huge(&[transfer(100, 1, 2, MAX)]);
    rejected(&l, transfer(10, 3, 2, 1), R::OverflowsCreditsPosted);
    rejected(&l, pending(11, 3, 2, 1), R::OverflowsCreditsPosted);
}

#[test]
fn overflows_debits() {
    let half = MAX / 2 + 1;
    let (_dir, l) = huge(&[pending(100, 1, 2, half)]);
    rejected(&l, transfer(10, 1, 3, half), R::OverflowsDebits);
}

#[test]
fn overflows_credits() {
    let half = MAX / 2 + 1;
    let (_dir, l) = huge(&[pending(100, 1, 2, half)]);
    rejected(&l, transfer(10, 3, 2, half), R::OverflowsCredits);
}

/// TigerBeetle's `create_transfers.md`, `overflows_timeout`:
/// "`transfer.timestamp + (transfer.timeout * 1_000_000_000)` would exceed
/// `2^63`" (its state machine checks the sum as a `u63`).
#[test]
fn overflows_timeout_past_2_pow_63() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path(), (1 << 63) - 10 * NS);
    assert_eq!(
        l.create_accounts(&[account(1), account(2)]).unwrap(),
        [A::Ok; 2]
    );
    rejected(
        &l,
        Transfer {
            timeout: 11,
            ..pending(10, 1, 2, 1)
        },
        R::OverflowsTimeout,
    );
}

#[test]
fn exceeds_credits() {
    let f = fixture();
    rejected(&f.l, transfer(10, 6, 1, 1), R::ExceedsCredits);
    rejected(&f.l, pending(11, 6, 1, 1), R::ExceedsCredits);
}

#[test]
fn exceeds_debits() {
    let f = fixture();
    rejected(&f.l, transfer(10, 1, 7, 1), R::ExceedsDebits);
    rejected(&f.l, pending(11, 1, 7, 1), R::ExceedsDebits);
}

#[test]
fn when_a_transfer_breaks_two_rules_the_first_listed_wins() {
    let f = fixture();
    let l = &f.l;
    // Spend id 50 (a transient failure) for the IdAlreadyFailed pair.
    rejected(l, transfer(50, 6, 1, 1), R::ExceedsCredits);
    use TransferFlags as F;
    let cases = [
        (
            Transfer {
                timestamp: 1,
                flags: F::from_bits_retain(1 << 15),
                ..transfer(10, 1, 2, 1)
            },
            R::TimestampMustBeZero,
        ),
        (
            Transfer {
                flags: F::from_bits_retain(1 << 15),
                ..transfer(0, 1, 2, 1)
            },
            R::ReservedFlag,
        ),
        (transfer(0, 1, 1, 0), R::IdMustNotBeZero),
        // An existing id: compared before any field rule.
        (
            Transfer {
                flags: F::PENDING | F::POST_PENDING_TRANSFER,
                ..transfer(1001, 1, 1, 0)
            },
            R::ExistsWithDifferentFlags,
        ),
        (
            Transfer {
                flags: F::PENDING | F::POST_PENDING_TRANSFER,
                ..transfer(50, 6, 1, 1)
            },
            R::IdAlreadyFailed,
        ),
        (
            Transfer {
                flags: F::POST_PENDING_TRANSFER | F::VOID_PENDING_TRANSFER,
                ..transfer(10, 0, 0, 1)
            },
            R::FlagsAreMutuallyExclusive,
        ),
        (transfer(10, 0, 0, 1), R::DebitAccountIdMustNotBeZero),
        (transfer(10, MAX, 0, 1), R::DebitAccountIdMustNotBeIntMax),
        (transfer(10, 1, 0, 0), R::CreditAccountIdMustNotBeZero),
        (transfer(10, 1, 1, 0), R::AccountsMustBeDifferent),
        (
            Transfer {
                pending_id: 1000,
                timeout: 1,
                ..transfer(10, 1, 2, 1)
            },
            R::PendingIdMustBeZero,
        ),
        (
            Transfer {
                timeout: 1,
                flags: F::CLOSING_DEBIT,
                ..transfer(10, 1, 2, 1)
            },
            R::TimeoutReservedForPendingTransfer,
        ),
        (
            Transfer {
                flags: F::CLOSING_CREDIT,
                ..transfer(10, 1, 2, 0)
            },
            R::ClosingTransferMustBePending,
        ),
        (
            Transfer {
                ledger: 0,
                ..transfer(10, 1, 2, 0)
            },
            R::AmountMustNotBeZero,
        ),
        (
            Transfer {
                ledger: 0,
                code: 0,
                ..transfer(10, 1, 2, 1)
            },
            R::LedgerMustNotBeZero,
        ),
        (
            Transfer {
                code: 0,
                ..transfer(10, 99, 2, 1)
            },
            R::CodeMustNotBeZero,
        ),
        (transfer(10, 98, 99, 1), R::DebitAccountNotFound),
        (
            Transfer {
                ledger: 7,
                ..transfer(10, 1, 3, 1)
            },
            R::AccountsMustHaveTheSameLedger,
        ),
        (transfer(10, 5, 5, 1), R::AccountsMustBeDifferent),
        // 6 may not overdraw, and 5 is closed.
        (transfer(10, 6, 5, 1), R::CreditAccountAlreadyClosed),
        // Post/void: pending_id rules, then the pending transfer's fields.
        (
            Transfer {
                timeout: 1,
                ..post(10, 10)
            },
            R::PendingIdMustBeDifferent,
        ),
        (
            Transfer {
                debit_account_id: 2,
                code: 2,
                ..post(10, 1000)
            },
            R::PendingTransferHasDifferentDebitAccountId,
        ),
        (
            Transfer {
                code: 2,
                amount: 11,
                ..post(10, 1000)
            },
            R::PendingTransferHasDifferentCode,
        ),
        (
            Transfer {
                code: 2,
                ..post(10, 1002)
            },
            R::PendingTransferHasDifferentCode,
        ),
        (
            Transfer {
                amount: 11,
                ..void(10, 1000)
            },
            R::ExceedsPendingTransferAmount,
        ),
        (
            Transfer {
                amount: 2,
                ..post(10, 1004)
            },
            R::ExceedsPendingTransferAmount,
        ),
    ];
    for (i, (mut t, code)) in cases.into_iter().enumerate() {
        // A fresh id each (a transient failure would spend a shared one).
        if t.id == 10 {
            let id = 200 + i as u128;
            if t.pending_id == 10 {
                t.pending_id = id;
            }
            t.id = id;
        }
        rejected(l, t, code);
    }
}

#[test]
fn overflow_comes_before_the_limits() {
    let (_dir, l) = huge(&[]);
    let r = l
        .create_accounts(&[Account {
            flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            ..account(7)
        }])
        .unwrap();
    assert_eq!(r, [A::Ok]);
    let r = l.create_transfers(&[transfer(100, 7, 1, MAX)]).unwrap();
    assert_eq!(r, [R::ExceedsCredits]);
    let r = l.create_transfers(&[transfer(101, 1, 7, MAX)]).unwrap();
    assert_eq!(r, [R::Ok]);
    // 7 has MAX credits: debiting MAX is within the limit; one more
    // would overflow the posted credits of 7 first.
    rejected(&l, transfer(102, 2, 7, 1), R::OverflowsCreditsPosted);
    let r = l.create_transfers(&[pending(103, 7, 2, MAX)]).unwrap();
    assert_eq!(r, [R::Ok]);
    rejected(&l, transfer(104, 7, 3, 1), R::OverflowsDebits);
}
