//! Balance limits (issue 3, rule 2; ARCHITECTURE.md invariant 6):
//! `DEBITS_MUST_NOT_EXCEED_CREDITS` keeps `debits_pending + debits_posted <=
//! credits_posted`, `CREDITS_MUST_NOT_EXCEED_DEBITS` keeps `credits_pending +
//! credits_posted <= debits_posted`. A transfer that would break one gets
//! `ExceedsCredits` / `ExceedsDebits` and changes nothing; pending amounts
//! count against the limit (pending credits do not count for it); balancing
//! transfers move only what the limit allows.

mod common;

use std::collections::HashMap;

use common::{SplitMix64, account, open, pending, transfer};
use mvledger::{
    Account, AccountFlags, CreateAccountResult, CreateTransferResult, Ledger, Transfer,
    TransferFlags,
};

const DMNEC: AccountFlags = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS;
const CMNED: AccountFlags = AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS;

fn with_flags(t: Transfer, flags: TransferFlags) -> Transfer {
    Transfer { flags, ..t }
}

fn create(l: &Ledger, accounts: &[Account]) {
    let r = l.create_accounts(accounts).unwrap();
    assert!(r.iter().all(|r| *r == CreateAccountResult::Ok), "{r:?}");
}

fn ok(l: &Ledger, t: Transfer) {
    assert_eq!(
        l.create_transfers(&[t]).unwrap(),
        [CreateTransferResult::Ok],
        "{t:?}"
    );
}

/// Submits `t`, expects `code`, and checks that nothing changed: no
/// account and no transfer.
fn refused(l: &Ledger, t: Transfer, code: CreateTransferResult) {
    let before = l.snapshot().accounts().unwrap();
    assert_eq!(l.create_transfers(&[t]).unwrap(), [code], "{t:?}");
    assert_eq!(
        l.snapshot().accounts().unwrap(),
        before,
        "{t:?} changed accounts"
    );
    assert!(
        l.lookup_transfers(&[t.id]).unwrap().is_empty(),
        "{t:?} was stored"
    );
}

fn get(l: &Ledger, id: u128) -> Account {
    l.lookup_accounts(&[id]).unwrap()[0]
}

#[test]
fn debits_must_not_exceed_credits_refuses_with_exceeds_credits() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path());
    create(&l, &[account(1, DMNEC), account(2, AccountFlags::empty())]);
    // No credits yet: not even 1 may be debited.
    refused(
        &l,
        transfer(10, 1, 2, 1),
        CreateTransferResult::ExceedsCredits,
    );
    ok(&l, transfer(11, 2, 1, 100));
    refused(
        &l,
        transfer(12, 1, 2, 101),
        CreateTransferResult::ExceedsCredits,
    );
    // Up to the limit exactly is allowed.
    ok(&l, transfer(13, 1, 2, 60));
    ok(&l, transfer(14, 1, 2, 40));
    refused(
        &l,
        transfer(15, 1, 2, 1),
        CreateTransferResult::ExceedsCredits,
    );
    let a = get(&l, 1);
    assert_eq!((a.debits_posted, a.credits_posted), (100, 100));
    // The unlimited side may go anywhere.
    ok(&l, transfer(16, 2, 1, 1));
    ok(&l, transfer(17, 1, 2, 1));
}

#[test]
fn credits_must_not_exceed_debits_refuses_with_exceeds_debits() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path());
    create(&l, &[account(1, CMNED), account(2, AccountFlags::empty())]);
    refused(
        &l,
        transfer(10, 2, 1, 1),
        CreateTransferResult::ExceedsDebits,
    );
    ok(&l, transfer(11, 1, 2, 100));
    refused(
        &l,
        transfer(12, 2, 1, 101),
        CreateTransferResult::ExceedsDebits,
    );
    ok(&l, transfer(13, 2, 1, 100));
    refused(
        &l,
        transfer(14, 2, 1, 1),
        CreateTransferResult::ExceedsDebits,
    );
    let a = get(&l, 1);
    assert_eq!((a.debits_posted, a.credits_posted), (100, 100));
}

#[test]
fn a_refused_transfer_in_a_batch_changes_nothing_and_the_others_apply() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path());
    create(
        &l,
        &[
            account(1, DMNEC),
            account(2, AccountFlags::empty()),
            account(3, CMNED),
        ],
    );
    let r = l
        .create_transfers(&[
            transfer(10, 2, 1, 50),
            transfer(11, 1, 2, 51),
            transfer(12, 2, 3, 1),
            transfer(13, 1, 2, 50),
        ])
        .unwrap();
    use CreateTransferResult as R;
    assert_eq!(r, [R::Ok, R::ExceedsCredits, R::ExceedsDebits, R::Ok]);
    assert!(l.lookup_transfers(&[11, 12]).unwrap().is_empty());
    let a = l.lookup_accounts(&[1, 2, 3]).unwrap();
    assert_eq!((a[0].debits_posted, a[0].credits_posted), (50, 50));
    assert_eq!((a[1].debits_posted, a[1].credits_posted), (50, 50));
    assert_eq!((a[2].debits_posted, a[2].credits_posted), (0, 0));
}

#[test]
fn pending_debits_count_against_debits_must_not_exceed_credits() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path());
    create(&l, &[account(1, DMNEC), account(2, AccountFlags::empty())]);
    ok(&l, transfer(10, 2, 1, 100));
    ok(&l, pending(11, 1, 2, 60));
    // 60 reserved: 41 posted or pending more breaks the limit.
    refused(
        &l,
        transfer(12, 1, 2, 41),
        CreateTransferResult::ExceedsCredits,
    );
    refused(
        &l,
        pending(13, 1, 2, 41),
        CreateTransferResult::ExceedsCredits,
    );
    ok(&l, pending(14, 1, 2, 40));
    refused(
        &l,
        transfer(15, 1, 2, 1),
        CreateTransferResult::ExceedsCredits,
    );
    // Voiding a reservation frees it.
    ok(
        &l,
        Transfer {
            id: 16,
            pending_id: 11,
            flags: TransferFlags::VOID_PENDING_TRANSFER,
            ..Default::default()
        },
    );
    ok(&l, transfer(17, 1, 2, 60));
    refused(
        &l,
        transfer(18, 1, 2, 1),
        CreateTransferResult::ExceedsCredits,
    );
    let a = get(&l, 1);
    assert_eq!(
        (a.debits_pending, a.debits_posted, a.credits_posted),
        (40, 60, 100)
    );
}

#[test]
fn pending_credits_count_against_credits_must_not_exceed_debits() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path());
    create(&l, &[account(1, CMNED), account(2, AccountFlags::empty())]);
    ok(&l, transfer(10, 1, 2, 100));
    ok(&l, pending(11, 2, 1, 70));
    refused(
        &l,
        transfer(12, 2, 1, 31),
        CreateTransferResult::ExceedsDebits,
    );
    refused(
        &l,
        pending(13, 2, 1, 31),
        CreateTransferResult::ExceedsDebits,
    );
    ok(&l, transfer(14, 2, 1, 30));
    let a = get(&l, 1);
    assert_eq!(
        (a.credits_pending, a.credits_posted, a.debits_posted),
        (70, 30, 100)
    );
}

#[test]
fn pending_credits_are_not_spendable_under_debits_must_not_exceed_credits() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path());
    create(&l, &[account(1, DMNEC), account(2, AccountFlags::empty())]);
    ok(&l, pending(10, 2, 1, 100));
    refused(
        &l,
        transfer(11, 1, 2, 1),
        CreateTransferResult::ExceedsCredits,
    );
    // Once posted, the credit counts.
    ok(
        &l,
        Transfer {
            id: 12,
            pending_id: 10,
            flags: TransferFlags::POST_PENDING_TRANSFER,
            ..Default::default()
        },
    );
    ok(&l, transfer(13, 1, 2, 100));
}

#[test]
fn posting_a_reservation_never_breaks_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path());
    create(&l, &[account(1, DMNEC), account(2, AccountFlags::empty())]);
    ok(&l, transfer(10, 2, 1, 100));
    ok(&l, pending(11, 1, 2, 100));
    ok(
        &l,
        Transfer {
            id: 12,
            pending_id: 11,
            flags: TransferFlags::POST_PENDING_TRANSFER,
            ..Default::default()
        },
    );
    let a = get(&l, 1);
    assert_eq!(
        (a.debits_pending, a.debits_posted, a.credits_posted),
        (0, 100, 100)
    );
    refused(
        &l,
        transfer(13, 1, 2, 1),
        CreateTransferResult::ExceedsCredits,
    );
}

#[test]
fn balancing_debit_moves_only_what_the_debit_account_allows() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path());
    create(&l, &[account(1, DMNEC), account(2, AccountFlags::empty())]);
    ok(&l, transfer(10, 2, 1, 100));
    ok(&l, transfer(11, 1, 2, 30));
    ok(&l, pending(12, 1, 2, 20));
    // 50 left: asking for less moves what was asked.
    ok(
        &l,
        with_flags(transfer(13, 1, 2, 5), TransferFlags::BALANCING_DEBIT),
    );
    // Asking for more moves what is left (45), recorded as the amount.
    ok(
        &l,
        with_flags(transfer(14, 1, 2, 1000), TransferFlags::BALANCING_DEBIT),
    );
    let t = l.lookup_transfers(&[13, 14]).unwrap();
    assert_eq!((t[0].amount, t[1].amount), (5, 45));
    let a = get(&l, 1);
    assert_eq!(
        (a.debits_pending, a.debits_posted, a.credits_posted),
        (20, 80, 100)
    );
    // Nothing left: refused, as ExceedsCredits.
    refused(
        &l,
        with_flags(transfer(15, 1, 2, 1), TransferFlags::BALANCING_DEBIT),
        CreateTransferResult::ExceedsCredits,
    );
    // Amount 0 means as much as possible.
    ok(&l, transfer(16, 2, 1, 7));
    ok(
        &l,
        with_flags(transfer(17, 1, 2, 0), TransferFlags::BALANCING_DEBIT),
    );
    assert_eq!(l.lookup_transfers(&[17]).unwrap()[0].amount, 7);
    let a = get(&l, 1);
    assert_eq!(a.debits_pending + a.debits_posted, a.credits_posted);
}

#[test]
fn balancing_credit_moves_only_what_the_credit_account_allows() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path());
    create(&l, &[account(1, CMNED), account(2, AccountFlags::empty())]);
    ok(&l, transfer(10, 1, 2, 100));
    ok(&l, pending(11, 2, 1, 60));
    ok(
        &l,
        with_flags(transfer(12, 2, 1, 0), TransferFlags::BALANCING_CREDIT),
    );
    assert_eq!(l.lookup_transfers(&[12]).unwrap()[0].amount, 40);
    let a = get(&l, 1);
    assert_eq!(
        (a.credits_pending, a.credits_posted, a.debits_posted),
        (60, 40, 100)
    );
    refused(
        &l,
        with_flags(transfer(13, 2, 1, 10), TransferFlags::BALANCING_CREDIT),
        CreateTransferResult::ExceedsDebits,
    );
}

#[test]
fn balancing_pending_transfer_reserves_only_what_the_limit_allows() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path());
    create(&l, &[account(1, DMNEC), account(2, AccountFlags::empty())]);
    ok(&l, transfer(10, 2, 1, 100));
    ok(
        &l,
        with_flags(
            transfer(11, 1, 2, 500),
            TransferFlags::PENDING | TransferFlags::BALANCING_DEBIT,
        ),
    );
    assert_eq!(l.lookup_transfers(&[11]).unwrap()[0].amount, 100);
    let a = get(&l, 1);
    assert_eq!((a.debits_pending, a.debits_posted), (100, 0));
    refused(
        &l,
        transfer(12, 1, 2, 1),
        CreateTransferResult::ExceedsCredits,
    );
}

#[test]
fn balancing_limits_by_balance_even_without_a_limit_flag() {
    // TigerBeetle's balancing_debit: at most so that debits <= credits
    // posted, whatever the account's flags.
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path());
    create(
        &l,
        &[
            account(1, AccountFlags::empty()),
            account(2, AccountFlags::empty()),
        ],
    );
    ok(&l, transfer(10, 2, 1, 30));
    ok(
        &l,
        with_flags(transfer(11, 1, 2, 100), TransferFlags::BALANCING_DEBIT),
    );
    assert_eq!(l.lookup_transfers(&[11]).unwrap()[0].amount, 30);
    // Account 2 now has 30 debits and 30 credits: balancing credit to it
    // has nothing to move.
    refused(
        &l,
        with_flags(transfer(12, 1, 2, 100), TransferFlags::BALANCING_CREDIT),
        CreateTransferResult::ExceedsDebits,
    );
    // Both flags: the smaller of the two allowances.
    create(&l, &[account(3, AccountFlags::empty())]);
    ok(&l, transfer(13, 2, 3, 10)); // 2 may take 10 more credits
    ok(&l, transfer(14, 3, 1, 25)); // 1 may give 25 more debits
    ok(
        &l,
        with_flags(
            transfer(15, 1, 2, 0),
            TransferFlags::BALANCING_DEBIT | TransferFlags::BALANCING_CREDIT,
        ),
    );
    assert_eq!(l.lookup_transfers(&[15]).unwrap()[0].amount, 10);
}

fn limits_hold(a: &Account) -> bool {
    (!a.flags.contains(DMNEC) || a.debits_pending + a.debits_posted <= a.credits_posted)
        && (!a.flags.contains(CMNED) || a.credits_pending + a.credits_posted <= a.debits_posted)
}

#[test]
fn limits_hold_after_every_batch_of_random_transfers() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path());
    let flags = [DMNEC, CMNED, AccountFlags::empty()];
    let accounts: Vec<Account> = (1..=9)
        .map(|id| account(id, flags[id as usize % 3]))
        .collect();
    create(&l, &accounts);
    let mut rng = SplitMix64(3);
    let mut pendings: Vec<u128> = Vec::new();
    let mut refusals: HashMap<CreateTransferResult, usize> = HashMap::new();
    let mut id = 0u128;
    for _ in 0..200 {
        let batch: Vec<Transfer> = (0..1 + rng.below(8))
            .map(|_| {
                id += 1;
                let dr = 1 + u128::from(rng.below(9));
                let cr = 1 + u128::from(rng.below(9));
                let amount = u128::from(1 + rng.below(500));
                match rng.below(8) {
                    0 | 1 => {
                        pendings.push(id);
                        pending(id, dr, cr, amount)
                    }
                    2 if !pendings.is_empty() => Transfer {
                        id,
                        pending_id: pendings[rng.below(pendings.len() as u64) as usize],
                        flags: if rng.below(2) == 0 {
                            TransferFlags::POST_PENDING_TRANSFER
                        } else {
                            TransferFlags::VOID_PENDING_TRANSFER
                        },
                        ..Default::default()
                    },
                    3 => with_flags(
                        transfer(id, dr, cr, amount),
                        TransferFlags::BALANCING_DEBIT | TransferFlags::BALANCING_CREDIT,
                    ),
                    _ => transfer(id, dr, cr, amount),
                }
            })
            .collect();
        let before: HashMap<u128, Account> = l
            .snapshot()
            .accounts()
            .unwrap()
            .into_iter()
            .map(|a| (a.id, a))
            .collect();
        let results = l.create_transfers(&batch).unwrap();
        for a in l.snapshot().accounts().unwrap() {
            assert!(limits_hold(&a), "limit broken: {a:?}");
        }
        // A refused transfer left no trace; each refusal is one of the two.
        for (t, r) in batch.iter().zip(&results) {
            if matches!(
                r,
                CreateTransferResult::ExceedsCredits | CreateTransferResult::ExceedsDebits
            ) {
                *refusals.entry(*r).or_default() += 1;
                assert!(l.lookup_transfers(&[t.id]).unwrap().is_empty());
            }
        }
        // Only accounts touched by an Ok transfer changed.
        let touched: Vec<u128> = batch
            .iter()
            .zip(&results)
            .filter(|(_, r)| **r == CreateTransferResult::Ok)
            .flat_map(|(t, _)| {
                let stored = l.lookup_transfers(&[t.id]).unwrap()[0];
                [stored.debit_account_id, stored.credit_account_id]
            })
            .collect();
        for a in l.snapshot().accounts().unwrap() {
            if !touched.contains(&a.id) {
                assert_eq!(a, before[&a.id], "untouched account changed");
            }
        }
    }
    assert!(
        refusals.len() == 2,
        "the workload must hit both limits: {refusals:?}"
    );
}
