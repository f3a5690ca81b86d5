mod common;

use common::{account, transfer};
use mvledger::*;
use std::sync::Arc;

#[test]
fn smoke() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000_000_000));
    let opts = LedgerOptions {
        clock: clock.clone(),
        ..Default::default()
    };
    {
        let l = Ledger::open(dir.path(), opts.clone()).unwrap();
        let r = l
            .create_accounts(&[
                account(1, AccountFlags::empty()),
                account(
                    2,
                    AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags::HISTORY,
                ),
                account(1, AccountFlags::empty()),
            ])
            .unwrap();
        assert_eq!(
            r,
            vec![
                CreateAccountResult::Ok,
                CreateAccountResult::Ok,
                CreateAccountResult::Exists
            ]
        );
        let r = l
            .create_transfers(&[
                transfer(10, 1, 2, 100),
                transfer(11, 2, 1, 150),
                transfer(12, 2, 1, 100),
                transfer(10, 1, 2, 100),
                transfer(11, 2, 1, 150),
            ])
            .unwrap();
        assert_eq!(
            r,
            vec![
                CreateTransferResult::Ok,
                CreateTransferResult::ExceedsCredits,
                CreateTransferResult::Ok,
                CreateTransferResult::Exists,
                CreateTransferResult::IdAlreadyFailed
            ]
        );
        let mut p = transfer(20, 1, 2, 50);
        p.flags = TransferFlags::PENDING;
        p.timeout = 10;
        let r = l.create_transfers(&[p]).unwrap();
        assert_eq!(r, vec![CreateTransferResult::Ok]);
        let a = l.lookup_accounts(&[1, 2]).unwrap();
        assert_eq!(a[0].debits_pending, 50);
        clock.advance_secs(11);
        l.expire_pending().unwrap();
        let a = l.lookup_accounts(&[1, 2]).unwrap();
        assert_eq!(a[0].debits_pending, 0);
        let post = Transfer {
            id: 21,
            pending_id: 20,
            flags: TransferFlags::POST_PENDING_TRANSFER,
            ..Default::default()
        };
        assert_eq!(
            l.create_transfers(&[post]).unwrap(),
            vec![CreateTransferResult::PendingTransferExpired]
        );
        let h = l
            .get_account_balances(AccountFilter {
                account_id: 2,
                limit: 10,
                flags: AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(h.len(), 3, "{h:?}");
        let mut linked = transfer(30, 1, 2, 5);
        linked.flags = TransferFlags::LINKED;
        let r = l
            .create_transfers(&[linked, transfer(31, 2, 1, 1_000_000)])
            .unwrap();
        assert_eq!(
            r,
            vec![
                CreateTransferResult::LinkedEventFailed,
                CreateTransferResult::ExceedsCredits
            ]
        );
        println!("{:?}", l.stats());
    }
    let l = Ledger::open(dir.path(), opts).unwrap();
    let a = l.lookup_accounts(&[1, 2]).unwrap();
    assert_eq!(a[0].debits_posted, 100);
    assert_eq!(a[0].credits_posted, 100);
    assert_eq!(a[0].debits_pending, 0);
    let r = l
        .create_transfers(&[transfer(10, 1, 2, 100), transfer(11, 2, 1, 1)])
        .unwrap();
    assert_eq!(
        r,
        vec![
            CreateTransferResult::Exists,
            CreateTransferResult::IdAlreadyFailed
        ]
    );
    let t = l
        .get_account_transfers(AccountFilter {
            account_id: 1,
            limit: 10,
            flags: AccountFilterFlags::DEBITS
                | AccountFilterFlags::CREDITS
                | AccountFilterFlags::REVERSED,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(t.iter().map(|t| t.id).collect::<Vec<_>>(), vec![20, 12, 10]);
}
