//! Idempotency (issue 3, rule 5; ARCHITECTURE.md invariant 7): an account
//! or transfer id applies at most once. The same id again gives `Exists`
//! when the fields match and otherwise the `ExistsWithDifferent...` code of
//! the first different field, in the documented order; a transfer id that
//! failed for a transient reason (an account or pending transfer not
//! found, a limit exceeded, a closed account) is spent and gives
//! `IdAlreadyFailed`; all of it across a reopen, and never a second posting.

mod common;

use std::path::Path;

use common::{account, open, post, submit, transfer};
use mvledger::{
    Account, AccountFlags, CreateAccountResult as A, CreateTransferResult as R, Ledger, Transfer,
    TransferFlags,
};

/// Accounts 1 and 2 (plain), 3 (may not overdraw), 4 (closed).
fn setup(dir: &Path) -> Ledger {
    let l = open(dir);
    let r = l
        .create_accounts(&[
            account(1, AccountFlags::empty()),
            account(2, AccountFlags::empty()),
            account(3, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
            account(4, AccountFlags::CLOSED),
        ])
        .unwrap();
    assert_eq!(r, [A::Ok; 4]);
    l
}

#[test]
fn a_resubmitted_transfer_is_exists_and_posts_nothing_again() {
    let dir = tempfile::tempdir().unwrap();
    let batch = [
        transfer(10, 1, 2, 5),
        Transfer {
            flags: TransferFlags::PENDING,
            timeout: 100,
            user_data_128: 1,
            user_data_64: 2,
            user_data_32: 3,
            ..transfer(11, 2, 1, 7)
        },
        post(12, 11, 3),
    ];
    let state = {
        let l = setup(dir.path());
        assert_eq!(l.create_transfers(&batch).unwrap(), [R::Ok; 3]);
        let state = l.snapshot().accounts().unwrap();
        for _ in 0..3 {
            assert_eq!(l.create_transfers(&batch).unwrap(), [R::Exists; 3]);
        }
        assert_eq!(l.snapshot().accounts().unwrap(), state, "posted twice");
        // Twice in one batch: once.
        let r = l
            .create_transfers(&[transfer(13, 1, 2, 1), transfer(13, 1, 2, 1)])
            .unwrap();
        assert_eq!(r, [R::Ok, R::Exists]);
        let a = l.lookup_accounts(&[1]).unwrap()[0];
        assert_eq!(a.debits_posted, 5 + 1);
        l.snapshot().accounts().unwrap()
    };
    let l = open(dir.path());
    assert_eq!(l.create_transfers(&batch).unwrap(), [R::Exists; 3]);
    assert_eq!(
        l.create_transfers(&[transfer(13, 1, 2, 1)]).unwrap(),
        [R::Exists]
    );
    assert_eq!(l.snapshot().accounts().unwrap(), state);
}

/// The stored transfer the field checks compare against.
fn base() -> Transfer {
    Transfer {
        flags: TransferFlags::PENDING,
        timeout: 3600,
        user_data_128: 7,
        user_data_64: 8,
        user_data_32: 9,
        ..transfer(100, 1, 2, 10)
    }
}

/// Changes field `i` of a transfer, in ARCHITECTURE.md's order of the
/// `ExistsWithDifferent...` codes; returns that code.
fn change(t: &mut Transfer, i: usize) -> R {
    match i {
        0 => {
            t.flags = TransferFlags::empty();
            R::ExistsWithDifferentFlags
        }
        1 => {
            t.pending_id = 77;
            R::ExistsWithDifferentPendingId
        }
        2 => {
            t.timeout = 60;
            R::ExistsWithDifferentTimeout
        }
        3 => {
            t.debit_account_id = 3;
            R::ExistsWithDifferentDebitAccountId
        }
        4 => {
            t.credit_account_id = 4;
            R::ExistsWithDifferentCreditAccountId
        }
        5 => {
            t.amount = 11;
            R::ExistsWithDifferentAmount
        }
        6 => {
            t.user_data_128 = 70;
            R::ExistsWithDifferentUserData128
        }
        7 => {
            t.user_data_64 = 80;
            R::ExistsWithDifferentUserData64
        }
        8 => {
            t.user_data_32 = 90;
            R::ExistsWithDifferentUserData32
        }
        9 => {
            t.ledger = 2;
            R::ExistsWithDifferentLedger
        }
        10 => {
            t.code = 2;
            R::ExistsWithDifferentCode
        }
        _ => unreachable!(),
    }
}

const TRANSFER_FIELDS: usize = 11;

fn check_transfer_field_order(l: &Ledger) {
    let state = l.snapshot().accounts().unwrap();
    submit(l, base(), R::Exists);
    for i in 0..TRANSFER_FIELDS {
        // Only field i differs.
        let mut t = base();
        let code = change(&mut t, i);
        submit(l, t, code);
        // Field i and every later field differ: field i is named.
        let mut t = base();
        let code = change(&mut t, i);
        for j in i + 1..TRANSFER_FIELDS {
            change(&mut t, j);
        }
        submit(l, t, code);
    }
    assert_eq!(
        l.snapshot().accounts().unwrap(),
        state,
        "a resubmission applied"
    );
    assert_eq!(l.lookup_transfers(&[100]).unwrap()[0].amount, 10);
}

#[test]
fn a_resubmitted_transfer_names_its_first_different_field() {
    let dir = tempfile::tempdir().unwrap();
    {
        let l = setup(dir.path());
        submit(&l, base(), R::Ok);
        check_transfer_field_order(&l);
    }
    let l = open(dir.path());
    check_transfer_field_order(&l);
}

#[test]
fn a_resubmitted_post_compares_the_fields_it_gave() {
    let dir = tempfile::tempdir().unwrap();
    let l = setup(dir.path());
    let p = Transfer {
        flags: TransferFlags::PENDING,
        code: 5,
        ..transfer(10, 1, 2, 10)
    };
    let r = l
        .create_transfers(&[
            p,
            Transfer { id: 11, ..p },
            post(20, 10, 0),
            post(21, 11, 10),
        ])
        .unwrap();
    assert_eq!(r, [R::Ok; 4]);
    let state = l.snapshot().accounts().unwrap();
    // Zero fields stand for the pending transfer's: the same transfer.
    submit(&l, post(20, 10, 0), R::Exists);
    submit(&l, post(20, 10, 10), R::Exists);
    submit(&l, post(21, 11, 0), R::Exists);
    submit(&l, post(21, 11, 10), R::Exists);
    let explicit = Transfer {
        debit_account_id: 1,
        credit_account_id: 2,
        ledger: 1,
        code: 5,
        ..post(20, 10, 10)
    };
    submit(&l, explicit, R::Exists);
    // Fields given and different.
    submit(&l, post(20, 11, 0), R::ExistsWithDifferentPendingId);
    submit(
        &l,
        Transfer {
            debit_account_id: 3,
            ..post(20, 10, 0)
        },
        R::ExistsWithDifferentDebitAccountId,
    );
    submit(
        &l,
        Transfer {
            credit_account_id: 3,
            ..post(20, 10, 0)
        },
        R::ExistsWithDifferentCreditAccountId,
    );
    submit(&l, post(20, 10, 9), R::ExistsWithDifferentAmount);
    submit(
        &l,
        Transfer {
            user_data_64: 1,
            ..post(20, 10, 0)
        },
        R::ExistsWithDifferentUserData64,
    );
    submit(
        &l,
        Transfer {
            ledger: 2,
            ..post(20, 10, 0)
        },
        R::ExistsWithDifferentLedger,
    );
    submit(
        &l,
        Transfer {
            code: 1,
            ..post(20, 10, 0)
        },
        R::ExistsWithDifferentCode,
    );
    assert_eq!(l.snapshot().accounts().unwrap(), state);
}

/// Amount 0 on a post means the full pending amount (our choice, as
/// TigerBeetle's AMOUNT_MAX): resubmitting "post in full" over a partial
/// post is a different request. TigerBeetle's `create_transfers.md`,
/// `exists`: "If the original posted amount was less than the pending
/// amount, then the transfer amount must be equal to the posted amount."
#[test]
fn a_full_post_resubmitted_over_a_partial_post_is_exists_with_different_amount() {
    let dir = tempfile::tempdir().unwrap();
    let l = setup(dir.path());
    let p = Transfer {
        flags: TransferFlags::PENDING,
        ..transfer(10, 1, 2, 10)
    };
    assert_eq!(
        l.create_transfers(&[p, post(20, 10, 4)]).unwrap(),
        [R::Ok; 2]
    );
    submit(&l, post(20, 10, 4), R::Exists);
    submit(&l, post(20, 10, 5), R::ExistsWithDifferentAmount);
    submit(&l, post(20, 10, 10), R::ExistsWithDifferentAmount);
    submit(&l, post(20, 10, 0), R::ExistsWithDifferentAmount);
}

/// A post's user data left 0 is the pending transfer's (our choice, as
/// TigerBeetle's): resubmitting with 0 asks for the pending transfer's
/// value, which differs from the one the post was stored with.
/// TigerBeetle compares `e.user_data_128` with `p.user_data_128` then.
#[test]
fn a_resubmitted_post_with_zero_user_data_means_the_pending_transfers() {
    let dir = tempfile::tempdir().unwrap();
    let l = setup(dir.path());
    let p = Transfer {
        flags: TransferFlags::PENDING,
        user_data_128: 7,
        ..transfer(10, 1, 2, 10)
    };
    let own = Transfer {
        user_data_128: 55,
        ..post(20, 10, 0)
    };
    assert_eq!(l.create_transfers(&[p, own]).unwrap(), [R::Ok; 2]);
    assert_eq!(l.lookup_transfers(&[20]).unwrap()[0].user_data_128, 55);
    submit(&l, own, R::Exists);
    submit(&l, post(20, 10, 0), R::ExistsWithDifferentUserData128);
}

#[test]
fn a_resubmitted_balancing_transfer_exists_while_its_bound_covers_the_amount() {
    let dir = tempfile::tempdir().unwrap();
    let l = setup(dir.path());
    let balancing = |amount| Transfer {
        flags: TransferFlags::BALANCING_DEBIT,
        ..transfer(11, 3, 1, amount)
    };
    let r = l
        .create_transfers(&[transfer(10, 1, 3, 30), balancing(100)])
        .unwrap();
    assert_eq!(r, [R::Ok; 2]);
    assert_eq!(l.lookup_transfers(&[11]).unwrap()[0].amount, 30);
    submit(&l, balancing(100), R::Exists);
    submit(&l, balancing(30), R::Exists);
    submit(&l, balancing(0), R::Exists);
    submit(&l, balancing(29), R::ExistsWithDifferentAmount);
    let a = l.lookup_accounts(&[3]).unwrap()[0];
    assert_eq!(a.debits_posted, 30);
}

fn check_spent(l: &Ledger) {
    // Every failure's cause is gone now, but the ids stay spent.
    let state = l.snapshot().accounts().unwrap();
    submit(l, transfer(20, 3, 1, 50), R::IdAlreadyFailed);
    submit(l, transfer(21, 9, 1, 1), R::IdAlreadyFailed);
    submit(l, transfer(22, 1, 9, 1), R::IdAlreadyFailed);
    submit(l, post(23, 30, 0), R::IdAlreadyFailed);
    submit(l, transfer(24, 4, 1, 1), R::IdAlreadyFailed);
    submit(l, transfer(25, 3, 1, 50), R::IdAlreadyFailed);
    // Whatever the fields now.
    submit(l, transfer(20, 1, 2, 1), R::IdAlreadyFailed);
    assert_eq!(l.snapshot().accounts().unwrap(), state);
    assert!(
        l.lookup_transfers(&[20, 21, 22, 23, 24, 25])
            .unwrap()
            .is_empty()
    );
}

#[test]
fn an_id_that_failed_transiently_is_spent_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let l = setup(dir.path());
        submit(&l, transfer(20, 3, 1, 50), R::ExceedsCredits);
        submit(&l, transfer(21, 9, 1, 1), R::DebitAccountNotFound);
        submit(&l, transfer(22, 1, 9, 1), R::CreditAccountNotFound);
        submit(&l, post(23, 30, 0), R::PendingTransferNotFound);
        submit(&l, transfer(24, 4, 1, 1), R::DebitAccountAlreadyClosed);
        // Inside a chain that is undone, the id is spent all the same
        // (our choice), while the chain's other ids are not.
        let r = l
            .create_transfers(&[
                Transfer {
                    flags: TransferFlags::LINKED,
                    ..transfer(26, 1, 2, 1)
                },
                transfer(25, 3, 1, 50),
            ])
            .unwrap();
        assert_eq!(r, [R::LinkedEventFailed, R::ExceedsCredits]);
        // Remove every cause: fund 3, create 9, create pending 30.
        submit(&l, transfer(28, 1, 3, 1000), R::Ok);
        let r = l
            .create_accounts(&[account(9, AccountFlags::empty())])
            .unwrap();
        assert_eq!(r, [A::Ok]);
        submit(
            &l,
            Transfer {
                flags: TransferFlags::PENDING,
                ..transfer(30, 1, 2, 5)
            },
            R::Ok,
        );
        check_spent(&l);
        submit(&l, transfer(26, 1, 2, 1), R::Ok);
    }
    let l = open(dir.path());
    check_spent(&l);
}

#[test]
fn an_id_that_failed_validation_is_not_spent() {
    let dir = tempfile::tempdir().unwrap();
    let l = setup(dir.path());
    submit(&l, transfer(20, 1, 1, 5), R::AccountsMustBeDifferent);
    submit(
        &l,
        Transfer {
            ledger: 0,
            ..transfer(21, 1, 2, 5)
        },
        R::LedgerMustNotBeZero,
    );
    submit(&l, transfer(22, 1, 2, 0), R::AmountMustNotBeZero);
    submit(
        &l,
        Transfer {
            timeout: 1,
            ..transfer(23, 1, 2, 5)
        },
        R::TimeoutReservedForPendingTransfer,
    );
    let r = l
        .create_transfers(&[
            transfer(20, 1, 2, 5),
            transfer(21, 1, 2, 5),
            transfer(22, 1, 2, 5),
            transfer(23, 1, 2, 5),
        ])
        .unwrap();
    assert_eq!(r, [R::Ok; 4]);
    assert_eq!(l.lookup_accounts(&[1]).unwrap()[0].debits_posted, 20);
}

/// TigerBeetle's `CreateTransferResult.transient()` and its
/// `id_already_failed` page list the transient codes: not found, exceeds,
/// already closed. The overflows are not among them (nor in
/// ARCHITECTURE.md's "an account not found, a limit exceeded, a closed
/// account"), so an overflow does not spend the id: once the pending
/// amount that made it overflow is voided, the same transfer succeeds.
#[test]
fn an_overflow_does_not_spend_the_id() {
    let dir = tempfile::tempdir().unwrap();
    let l = setup(dir.path());
    let big = Transfer {
        flags: TransferFlags::PENDING,
        ..transfer(10, 1, 2, u128::MAX)
    };
    submit(&l, big, R::Ok);
    let t = Transfer {
        flags: TransferFlags::PENDING,
        ..transfer(11, 1, 2, 1)
    };
    submit(&l, t, R::OverflowsDebitsPending);
    submit(
        &l,
        Transfer {
            id: 12,
            pending_id: 10,
            flags: TransferFlags::VOID_PENDING_TRANSFER,
            ..Default::default()
        },
        R::Ok,
    );
    submit(&l, t, R::Ok);
}

/// The stored account the field checks compare against.
fn base_account() -> Account {
    Account {
        user_data_128: 7,
        user_data_64: 8,
        user_data_32: 9,
        ..account(
            100,
            AccountFlags::HISTORY | AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
        )
    }
}

/// Changes field `i` of an account, in ARCHITECTURE.md's order of the
/// `ExistsWithDifferent...` codes; returns that code.
fn change_account(a: &mut Account, i: usize) -> A {
    match i {
        0 => {
            a.flags = AccountFlags::HISTORY;
            A::ExistsWithDifferentFlags
        }
        1 => {
            a.user_data_128 = 70;
            A::ExistsWithDifferentUserData128
        }
        2 => {
            a.user_data_64 = 80;
            A::ExistsWithDifferentUserData64
        }
        3 => {
            a.user_data_32 = 90;
            A::ExistsWithDifferentUserData32
        }
        4 => {
            a.ledger = 2;
            A::ExistsWithDifferentLedger
        }
        5 => {
            a.code = 2;
            A::ExistsWithDifferentCode
        }
        _ => unreachable!(),
    }
}

const ACCOUNT_FIELDS: usize = 6;

fn check_account_field_order(l: &Ledger) {
    let state = l.snapshot().accounts().unwrap();
    assert_eq!(l.create_accounts(&[base_account()]).unwrap(), [A::Exists]);
    for i in 0..ACCOUNT_FIELDS {
        let mut a = base_account();
        let code = change_account(&mut a, i);
        assert_eq!(l.create_accounts(&[a]).unwrap(), [code], "{a:?}");
        let mut a = base_account();
        let code = change_account(&mut a, i);
        for j in i + 1..ACCOUNT_FIELDS {
            change_account(&mut a, j);
        }
        assert_eq!(l.create_accounts(&[a]).unwrap(), [code], "{a:?}");
    }
    // Nothing was created or reset: the balances stay.
    assert_eq!(l.snapshot().accounts().unwrap(), state);
}

#[test]
fn a_resubmitted_account_is_exists_or_names_its_first_different_field() {
    let dir = tempfile::tempdir().unwrap();
    {
        let l = setup(dir.path());
        let r = l
            .create_accounts(&[base_account(), base_account()])
            .unwrap();
        assert_eq!(r, [A::Ok, A::Exists]);
        submit(&l, transfer(10, 1, 100, 5), R::Ok);
        check_account_field_order(&l);
        assert_eq!(l.lookup_accounts(&[100]).unwrap()[0].credits_posted, 5);
    }
    let l = open(dir.path());
    check_account_field_order(&l);
    assert_eq!(l.lookup_accounts(&[100]).unwrap()[0].credits_posted, 5);
}

/// The ledger skips the lookup of a transfer id above every stored one
/// (it keeps the highest stored id). Never at the cost of a duplicate: ids
/// that failed count, in small batches (one lookup per id) and big ones
/// (bulk lookups), across a reopen, a checkpoint, and in a ledger that
/// lost the kept id (as one written before it was kept), which looks
/// every id up.
#[test]
fn ids_above_every_stored_one_are_new_and_every_other_id_is_looked_up() {
    let dir = tempfile::tempdir().unwrap();
    // 100 transfers (a bulk batch) with ids 1000..1100, the last one
    // failing (account 3 may not overdraw): its id 1099 is spent.
    let big = |base: u128| -> Vec<Transfer> {
        let mut batch: Vec<Transfer> = (0..99).map(|i| transfer(base + i, 1, 2, 1)).collect();
        batch.push(transfer(base + 99, 3, 1, 1_000_000));
        batch
    };
    let check = |l: &Ledger, round: &str| {
        // Small batches: the highest id failed, the others exist.
        submit(l, transfer(1099, 3, 1, 1_000_000), R::IdAlreadyFailed);
        submit(l, transfer(1098, 1, 2, 1), R::Exists);
        submit(l, transfer(1000, 1, 2, 1), R::Exists);
        // A bulk batch of the same: nothing new.
        let again = l.create_transfers(&big(1000)).unwrap();
        assert_eq!(again[..99], [R::Exists; 99], "{round}");
        assert_eq!(again[99], R::IdAlreadyFailed, "{round}");
        assert_eq!(l.lookup_transfers(&[1099]).unwrap(), [], "{round}");
    };
    let posted = |l: &Ledger| l.lookup_accounts(&[1]).unwrap()[0].debits_posted;
    {
        let l = setup(dir.path());
        let r = l.create_transfers(&big(1000)).unwrap();
        assert_eq!(r[..99], [R::Ok; 99]);
        assert_eq!(r[99], R::ExceedsCredits);
        check(&l, "live");
        // A new id below the highest is looked up and found new.
        submit(&l, transfer(500, 1, 2, 1), R::Ok);
        submit(&l, transfer(500, 1, 2, 1), R::Exists);
        assert_eq!(posted(&l), 100);
    }
    {
        let l = open(dir.path());
        check(&l, "reopened");
        assert_eq!(posted(&l), 100);
        l.engine().checkpoint().unwrap();
    }
    {
        let l = open(dir.path());
        check(&l, "from a checkpoint");
        // Lose the kept id: every id is looked up again.
        let mut tx = l.engine_unchecked().begin();
        tx.delete(b"mid").unwrap();
        tx.commit().unwrap();
    }
    let l = open(dir.path());
    check(&l, "without the kept id");
    let r = l.create_transfers(&big(2000)).unwrap();
    assert_eq!(r[..99], [R::Ok; 99]);
    check(&l, "without the kept id, after a batch");
    let again = l.create_transfers(&big(2000)).unwrap();
    assert_eq!(again[..99], [R::Exists; 99]);
    assert_eq!(again[99], R::IdAlreadyFailed);
    assert_eq!(posted(&l), 199);
}
