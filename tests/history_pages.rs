//! `get_account_transfers` on an account of many transfers: the ledger
//! reads its transfer index a page at a time (256 entries) until the
//! limit is met, oldest or newest first. Every combination of side, code,
//! limit, timestamp bounds and direction here must give exactly what a
//! plain filter over the account's transfers gives, across page
//! boundaries, live and after a reopen.

mod common;

use mvledger::{AccountFilter, AccountFilterFlags, AccountFlags, Ledger, Transfer};

use common::{account, open, open_with_accounts, transfer};

/// Account 1's transfers: 1,100 of them, debits and credits with
/// accounts 2 and 3, codes 1 to 3; and 300 between 2 and 3 mixed in.
fn fill(l: &Ledger) -> Vec<Transfer> {
    let accounts: Vec<_> = (1..=3)
        .map(|id| account(id, AccountFlags::empty()))
        .collect();
    l.create_accounts(&accounts).expect("accounts");
    let mut batch = Vec::new();
    for i in 0..1_400u128 {
        let id = 100 + i;
        let mut t = match i % 14 {
            0..=2 => transfer(id, 2, 3, 1),
            k if k % 2 == 0 => transfer(id, 1, 2 + i % 2, 1),
            _ => transfer(id, 2 + i % 2, 1, 1),
        };
        t.code = 1 + (i % 3) as u16;
        batch.push(t);
        if batch.len() == 97 {
            l.create_transfers(&batch).expect("transfers");
            batch.clear();
        }
    }
    l.create_transfers(&batch).expect("transfers");
    let ids: Vec<u128> = (100..1_500).collect();
    l.lookup_transfers(&ids).expect("lookup")
}

/// What `filter` must return, from all the transfers.
fn expected(all: &[Transfer], f: &AccountFilter) -> Vec<u128> {
    let max = if f.timestamp_max == 0 {
        u64::MAX
    } else {
        f.timestamp_max
    };
    let mut out: Vec<&Transfer> = all
        .iter()
        .filter(|t| {
            (f.flags.contains(AccountFilterFlags::DEBITS) && t.debit_account_id == f.account_id)
                || (f.flags.contains(AccountFilterFlags::CREDITS)
                    && t.credit_account_id == f.account_id)
        })
        .filter(|t| f.code == 0 || t.code == f.code)
        .filter(|t| (f.timestamp_min..=max).contains(&t.timestamp))
        .collect();
    out.sort_by_key(|t| t.timestamp);
    if f.flags.contains(AccountFilterFlags::REVERSED) {
        out.reverse();
    }
    out.iter().take(f.limit as usize).map(|t| t.id).collect()
}

fn check(l: &Ledger, all: &[Transfer]) {
    let mut by_time: Vec<u64> = all.iter().map(|t| t.timestamp).collect();
    by_time.sort_unstable();
    let bounds = [
        (0, 0),
        (by_time[300], 0),
        (0, by_time[900]),
        (by_time[257], by_time[1_200]),
        (by_time[700] + 1, by_time[700] - 1),
    ];
    let sides = [
        AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS,
        AccountFilterFlags::DEBITS,
        AccountFilterFlags::CREDITS,
    ];
    let mut checked = 0;
    for side in sides {
        for reversed in [false, true] {
            for code in [0, 2] {
                for limit in [1, 255, 256, 257, 400, 8_190] {
                    for &(min, max) in &bounds {
                        let mut flags = side;
                        if reversed {
                            flags |= AccountFilterFlags::REVERSED;
                        }
                        let f = AccountFilter {
                            account_id: 1,
                            timestamp_min: min,
                            timestamp_max: max,
                            limit,
                            flags,
                            code,
                            ..AccountFilter::default()
                        };
                        let got: Vec<u128> = l
                            .get_account_transfers(f)
                            .expect("history")
                            .iter()
                            .map(|t| t.id)
                            .collect();
                        assert_eq!(got, expected(all, &f), "{f:?}");
                        checked += usize::from(!got.is_empty());
                    }
                }
            }
        }
    }
    assert!(checked > 250, "only {checked} queries found anything");
}

#[test]
fn pages_of_a_long_history_give_what_a_filter_gives() {
    let dir = tempfile::tempdir().expect("tempdir");
    let all = {
        let l = open(dir.path());
        let all = fill(&l);
        check(&l, &all);
        all
    };
    let l = open(dir.path());
    check(&l, &all);
}

/// A snapshot's history stays what it was when taken, though the index
/// beside the core gets later batches' entries at once: their transfers
/// are not found at that snapshot, and are skipped (the README's promise).
#[test]
fn a_snapshot_does_not_see_the_history_of_later_batches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = open_with_accounts(dir.path(), 3);
    l.create_transfers(&[transfer(10, 1, 2, 1)])
        .expect("transfers");
    let before = l.snapshot();
    let big: Vec<Transfer> = (0..5_000u128)
        .map(|i| transfer(11 + i, 1 + i % 2, 3, 1))
        .collect();
    l.create_transfers(&big).expect("transfers");
    let filter = |account_id, flags| AccountFilter {
        account_id,
        limit: 8_190,
        flags: AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS | flags,
        ..AccountFilter::default()
    };
    let ids = |snap: &mvledger::LedgerSnapshot, account, flags| -> Vec<u128> {
        let found = snap.get_account_transfers(filter(account, flags));
        found.expect("history").iter().map(|t| t.id).collect()
    };
    for flags in [AccountFilterFlags::empty(), AccountFilterFlags::REVERSED] {
        assert_eq!(ids(&before, 1, flags), [10]);
        assert_eq!(ids(&before, 2, flags), [10]);
        assert!(ids(&before, 3, flags).is_empty());
    }
    let now = l.snapshot();
    assert_eq!(ids(&now, 1, AccountFilterFlags::empty()).len(), 2_501);
    assert_eq!(ids(&now, 3, AccountFilterFlags::REVERSED)[0], 5_010);
}
