//! Linked chains (issue 3, rule 4): accounts or transfers flagged `LINKED`
//! succeed or fail together with the next item of the batch. When one item
//! of a chain fails, it gets its own code and every other item of the chain
//! `LinkedEventFailed`, those before it undone; a chain still open at the
//! end of the batch fails with `LinkedEventChainOpen` on its last item.
//! Items outside the chain are unaffected.

mod common;

use std::path::Path;

use common::{account, open, transfer};
use mvledger::{
    Account, AccountFlags, CreateAccountResult as A, CreateTransferResult as R, Ledger, Transfer,
    TransferFlags,
};

fn linked_account(id: u128) -> Account {
    account(id, AccountFlags::LINKED)
}

fn linked(t: Transfer) -> Transfer {
    Transfer {
        flags: t.flags | TransferFlags::LINKED,
        ..t
    }
}

/// Accounts 1 (may not overdraw), 2 and 3 (plain).
fn setup(dir: &Path) -> Ledger {
    let l = open(dir);
    let r = l
        .create_accounts(&[
            account(1, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
            account(2, AccountFlags::empty()),
            account(3, AccountFlags::empty()),
        ])
        .unwrap();
    assert_eq!(r, [A::Ok; 3]);
    l
}

fn state(l: &Ledger) -> Vec<Account> {
    l.snapshot().accounts().unwrap()
}

fn stored(l: &Ledger, ids: &[u128]) -> Vec<u128> {
    l.lookup_transfers(ids)
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect()
}

#[test]
fn a_chain_that_holds_applies_whole_and_later_items_see_earlier_ones() {
    let dir = tempfile::tempdir().unwrap();
    let l = setup(dir.path());
    // 1 may spend only what the chain credited it just before.
    let r = l
        .create_transfers(&[
            linked(transfer(10, 2, 1, 100)),
            linked(transfer(11, 1, 3, 100)),
            transfer(12, 3, 2, 100),
        ])
        .unwrap();
    assert_eq!(r, [R::Ok; 3]);
    assert_eq!(stored(&l, &[10, 11, 12]), [10, 11, 12]);
    let a = l.lookup_accounts(&[1]).unwrap()[0];
    assert_eq!((a.debits_posted, a.credits_posted), (100, 100));
}

#[test]
fn a_failing_item_fails_its_whole_chain_before_and_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let l = setup(dir.path());
    let before = state(&l);
    let r = l
        .create_transfers(&[
            transfer(9, 2, 3, 1), // outside, before
            linked(transfer(10, 2, 1, 100)),
            linked(transfer(11, 1, 3, 60)),
            linked(transfer(12, 1, 3, 60)), // 120 > 100: fails
            linked(transfer(13, 3, 2, 5)),
            transfer(14, 3, 2, 5), // the chain's last item
            transfer(15, 3, 2, 7), // outside, after
        ])
        .unwrap();
    assert_eq!(
        r,
        [
            R::Ok,
            R::LinkedEventFailed,
            R::LinkedEventFailed,
            R::ExceedsCredits,
            R::LinkedEventFailed,
            R::LinkedEventFailed,
            R::Ok
        ]
    );
    assert_eq!(stored(&l, &[9, 10, 11, 12, 13, 14, 15]), [9, 15]);
    // Only 9 and 15 moved money.
    let after = state(&l);
    assert_eq!(after[0], before[0], "the failed chain left a trace on 1");
    let a = l.lookup_accounts(&[2, 3]).unwrap();
    assert_eq!((a[0].debits_posted, a[0].credits_posted), (1, 7));
    assert_eq!((a[1].debits_posted, a[1].credits_posted), (7, 1));
}

#[test]
fn a_failing_first_item_fails_the_rest_of_its_chain() {
    let dir = tempfile::tempdir().unwrap();
    let l = setup(dir.path());
    let before = state(&l);
    let r = l
        .create_transfers(&[
            linked(transfer(10, 2, 99, 1)),
            linked(transfer(11, 2, 3, 1)),
            transfer(12, 2, 3, 1),
        ])
        .unwrap();
    assert_eq!(
        r,
        [
            R::CreditAccountNotFound,
            R::LinkedEventFailed,
            R::LinkedEventFailed
        ]
    );
    assert_eq!(state(&l), before);
    assert!(stored(&l, &[10, 11, 12]).is_empty());
}

#[test]
fn chains_in_one_batch_are_independent() {
    let dir = tempfile::tempdir().unwrap();
    let l = setup(dir.path());
    let r = l
        .create_transfers(&[
            linked(transfer(10, 2, 3, 1)),
            transfer(11, 1, 3, 1), // fails: chain 10-11 fails
            linked(transfer(12, 2, 3, 2)),
            transfer(13, 3, 2, 3), // chain 12-13 holds
            transfer(14, 2, 2, 1), // alone, fails alone
            transfer(15, 2, 3, 4),
        ])
        .unwrap();
    assert_eq!(
        r,
        [
            R::LinkedEventFailed,
            R::ExceedsCredits,
            R::Ok,
            R::Ok,
            R::AccountsMustBeDifferent,
            R::Ok
        ]
    );
    assert_eq!(stored(&l, &[10, 11, 12, 13, 14, 15]), [12, 13, 15]);
}

#[test]
fn an_open_chain_at_the_end_of_the_batch_fails() {
    let dir = tempfile::tempdir().unwrap();
    let l = setup(dir.path());
    let before = state(&l);
    let r = l
        .create_transfers(&[
            transfer(10, 2, 3, 1),
            linked(transfer(11, 2, 3, 2)),
            linked(transfer(12, 3, 2, 3)),
        ])
        .unwrap();
    assert_eq!(r, [R::Ok, R::LinkedEventFailed, R::LinkedEventChainOpen]);
    assert_eq!(stored(&l, &[10, 11, 12]), [10]);
    let a = l.lookup_accounts(&[2]).unwrap()[0];
    assert_eq!((a.debits_posted, a.credits_posted), (1, 0));
    // A single linked item at the end is an open chain too.
    let r = l
        .create_transfers(&[linked(transfer(13, 2, 3, 1))])
        .unwrap();
    assert_eq!(r, [R::LinkedEventChainOpen]);
    assert!(stored(&l, &[13]).is_empty());
    assert_eq!(state(&l)[0], before[0]);
}

#[test]
fn an_open_chain_that_already_failed_applies_nothing() {
    // Which code the last item gets here differs between TigerBeetle's
    // precedence list (linked_event_failed first) and its state machine
    // (linked_event_chain_open): either is accepted; what matters is that
    // nothing of the chain applies.
    let dir = tempfile::tempdir().unwrap();
    let l = setup(dir.path());
    let before = state(&l);
    let r = l
        .create_transfers(&[
            linked(transfer(10, 2, 3, 1)),
            linked(transfer(11, 1, 3, 1)),
            linked(transfer(12, 3, 2, 1)),
        ])
        .unwrap();
    assert_eq!(r[..2], [R::LinkedEventFailed, R::ExceedsCredits]);
    assert!(
        matches!(r[2], R::LinkedEventFailed | R::LinkedEventChainOpen),
        "{r:?}"
    );
    assert!(stored(&l, &[10, 11, 12]).is_empty());
    assert_eq!(state(&l), before);
}

#[test]
fn a_failed_chain_undoes_reservations_settlements_and_closings() {
    let dir = tempfile::tempdir().unwrap();
    let l = setup(dir.path());
    let r = l
        .create_transfers(&[Transfer {
            flags: TransferFlags::PENDING,
            ..transfer(5, 2, 3, 50)
        }])
        .unwrap();
    assert_eq!(r, [R::Ok]);
    let before = state(&l);
    let r = l
        .create_transfers(&[
            linked(Transfer {
                flags: TransferFlags::PENDING,
                ..transfer(10, 3, 2, 20)
            }),
            linked(Transfer {
                id: 11,
                pending_id: 10,
                flags: TransferFlags::POST_PENDING_TRANSFER,
                ..Default::default()
            }),
            linked(Transfer {
                id: 12,
                pending_id: 5,
                flags: TransferFlags::VOID_PENDING_TRANSFER,
                ..Default::default()
            }),
            linked(Transfer {
                flags: TransferFlags::PENDING | TransferFlags::CLOSING_DEBIT,
                ..transfer(13, 2, 3, 1)
            }),
            transfer(14, 2, 2, 1), // fails
        ])
        .unwrap();
    assert_eq!(
        r,
        [
            R::LinkedEventFailed,
            R::LinkedEventFailed,
            R::LinkedEventFailed,
            R::LinkedEventFailed,
            R::AccountsMustBeDifferent
        ]
    );
    assert_eq!(state(&l), before, "the failed chain left a trace");
    assert!(
        !l.lookup_accounts(&[2]).unwrap()[0]
            .flags
            .contains(AccountFlags::CLOSED)
    );
    // Pending 5 is still pending: it can be posted once, now.
    let r = l
        .create_transfers(&[Transfer {
            id: 20,
            pending_id: 5,
            flags: TransferFlags::POST_PENDING_TRANSFER,
            ..Default::default()
        }])
        .unwrap();
    assert_eq!(r, [R::Ok]);
    // The undone items' ids were not spent: they can be created now.
    let r = l
        .create_transfers(&[
            Transfer {
                flags: TransferFlags::PENDING,
                ..transfer(10, 3, 2, 20)
            },
            Transfer {
                id: 11,
                pending_id: 10,
                flags: TransferFlags::POST_PENDING_TRANSFER,
                ..Default::default()
            },
        ])
        .unwrap();
    assert_eq!(r, [R::Ok, R::Ok]);
}

#[test]
fn a_failed_chain_stays_undone_after_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let before;
    {
        let l = setup(dir.path());
        before = state(&l);
        let r = l
            .create_transfers(&[
                transfer(9, 3, 2, 4),
                linked(transfer(10, 2, 1, 100)),
                transfer(11, 1, 3, 101),
            ])
            .unwrap();
        assert_eq!(r, [R::Ok, R::LinkedEventFailed, R::ExceedsCredits]);
    }
    let l = open(dir.path());
    assert_eq!(stored(&l, &[9, 10, 11]), [9]);
    let after = state(&l);
    assert_eq!(after[0], before[0]);
    assert_eq!(after[1].credits_posted, 4);
}

#[test]
fn account_chains_succeed_or_fail_together() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path());
    let r = l
        .create_accounts(&[
            linked_account(1),
            linked_account(2),
            account(3, AccountFlags::empty()),
        ])
        .unwrap();
    assert_eq!(r, [A::Ok; 3]);
    let r = l
        .create_accounts(&[
            account(9, AccountFlags::empty()), // outside, before
            linked_account(10),
            linked_account(11),
            Account {
                ledger: 0,
                ..linked_account(12)
            },
            linked_account(13),
            account(14, AccountFlags::empty()),
            account(15, AccountFlags::empty()), // outside, after
        ])
        .unwrap();
    assert_eq!(
        r,
        [
            A::Ok,
            A::LinkedEventFailed,
            A::LinkedEventFailed,
            A::LedgerMustNotBeZero,
            A::LinkedEventFailed,
            A::LinkedEventFailed,
            A::Ok
        ]
    );
    let ids: Vec<u128> = l
        .lookup_accounts(&[9, 10, 11, 12, 13, 14, 15])
        .unwrap()
        .iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(ids, [9, 15]);
    // The undone ids are free: the chain, fixed, is created whole.
    let r = l
        .create_accounts(&[
            linked_account(10),
            linked_account(11),
            linked_account(12),
            linked_account(13),
            account(14, AccountFlags::empty()),
        ])
        .unwrap();
    assert_eq!(r, [A::Ok; 5]);
}

#[test]
fn an_open_account_chain_at_the_end_of_the_batch_fails() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path());
    let r = l
        .create_accounts(&[
            account(1, AccountFlags::empty()),
            linked_account(2),
            linked_account(3),
        ])
        .unwrap();
    assert_eq!(r, [A::Ok, A::LinkedEventFailed, A::LinkedEventChainOpen]);
    let ids: Vec<u128> = l
        .lookup_accounts(&[1, 2, 3])
        .unwrap()
        .iter()
        .map(|a| a.id)
        .collect();
    assert_eq!(ids, [1]);
}
