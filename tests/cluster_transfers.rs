//! Transfers between shards through the in-process transport: they commit
//! on both shards or abort on both, balance limits hold on each side,
//! duplicates are idempotent, and a reopen finds every final state.

mod common;

use std::sync::Arc;

use common::{account, transfer};

use mvledger::cluster::{Cluster, ClusterOptions, Placement, TransferState, settlement_account};
use mvledger::{
    Account, AccountFlags, CreateAccountResult, CreateTransferResult, Error, Transfer,
    TransferFlags,
};

fn options(shards: u32) -> ClusterOptions {
    ClusterOptions {
        shards,
        placement: Placement::Modulo,
        ..ClusterOptions::default()
    }
}

fn balances(c: &Cluster, id: u128) -> (u128, u128, u128, u128) {
    let a = c.lookup_accounts(&[id]).unwrap()[0];
    (
        a.debits_pending,
        a.debits_posted,
        a.credits_pending,
        a.credits_posted,
    )
}

#[test]
fn a_cross_shard_transfer_moves_money_on_both_shards() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::open(dir.path(), options(4)).unwrap();
    // Modulo placement: 1 on shard 1, 2 on shard 2, 5 on shard 1.
    let rs = c
        .create_accounts(&[
            account(1, AccountFlags::empty()),
            account(2, AccountFlags::empty()),
            account(5, AccountFlags::empty()),
        ])
        .unwrap();
    assert!(rs.iter().all(|r| *r == CreateAccountResult::Ok), "{rs:?}");
    let rs = c
        .create_transfers(&[transfer(100, 1, 2, 30), transfer(101, 1, 5, 4)])
        .unwrap();
    assert_eq!(rs, vec![CreateTransferResult::Ok; 2]);
    assert_eq!(balances(&c, 1), (0, 34, 0, 0));
    assert_eq!(balances(&c, 2), (0, 0, 0, 30));
    assert_eq!(balances(&c, 5), (0, 0, 0, 4));
    assert_eq!(
        c.transfer_state(100).unwrap(),
        Some(TransferState::Committed)
    );
    // The same-shard one has no cross-shard state.
    assert_eq!(c.transfer_state(101).unwrap(), None);
    // Both read back as the user made them (legs stay on their shards).
    let found = c.lookup_transfers(&[100, 101, 999]).unwrap();
    assert_eq!(found.len(), 2);
    let f = found[0];
    assert_eq!(
        (f.id, f.debit_account_id, f.credit_account_id, f.amount),
        (100, 1, 2, 30)
    );
    assert!(f.flags.is_empty() && f.timestamp > 0);
    assert_eq!((found[1].id, found[1].credit_account_id), (101, 5));
    // Settlement accounts net to zero across the shards.
    let s1 = c
        .shard(1)
        .unwrap()
        .lookup_accounts(&[settlement_account(1, 1)])
        .unwrap()[0];
    let s2 = c
        .shard(2)
        .unwrap()
        .lookup_accounts(&[settlement_account(1, 2)])
        .unwrap()[0];
    assert_eq!((s1.credits_posted, s1.debits_posted), (30, 0));
    assert_eq!((s2.credits_posted, s2.debits_posted), (0, 30));
    assert_eq!(c.in_flight(), 0);
}

#[test]
fn a_refused_credit_leg_aborts_both_legs() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::open(dir.path(), options(2)).unwrap();
    // Account 2 (shard 0) may not be credited beyond its debits.
    c.create_accounts(&[
        account(1, AccountFlags::empty()),
        account(2, AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS),
    ])
    .unwrap();
    let rs = c.create_transfers(&[transfer(9, 1, 2, 10)]).unwrap();
    assert_eq!(rs, vec![CreateTransferResult::ExceedsDebits]);
    assert_eq!(c.transfer_state(9).unwrap(), Some(TransferState::Aborted));
    assert!(
        c.lookup_transfers(&[9]).unwrap().is_empty(),
        "aborted: not found"
    );
    assert_eq!(balances(&c, 1), (0, 0, 0, 0), "the debit leg was voided");
    assert_eq!(balances(&c, 2), (0, 0, 0, 0));
    // The same again changes nothing. The refusal depended on balances
    // (it is transient), so, as on one shard, the id is spent.
    let rs = c.create_transfers(&[transfer(9, 1, 2, 10)]).unwrap();
    assert_eq!(rs, vec![CreateTransferResult::IdAlreadyFailed]);
    assert_eq!(balances(&c, 1), (0, 0, 0, 0));
}

/// Per-item result codes where the ledger has them, as on one shard:
/// `u128::MAX` as an id or an account, a transfer whose ledger is not its
/// accounts', and a cross-shard id taken by a same-shard transfer. Each
/// fails alone; the valid item beside it commits.
#[test]
fn the_ledgers_own_rules_give_per_item_codes_across_shards() {
    use CreateTransferResult as R;
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::open(dir.path(), options(4)).unwrap();
    // Modulo: 1 and 5 on shard 1, 2 on shard 2, 3 on shard 3.
    let rs = c
        .create_accounts(&[
            account(1, AccountFlags::empty()),
            account(u128::MAX, AccountFlags::empty()),
            account(2, AccountFlags::empty()),
            account(3, AccountFlags::empty()),
            account(5, AccountFlags::empty()),
        ])
        .unwrap();
    assert_eq!(
        rs,
        [
            CreateAccountResult::Ok,
            CreateAccountResult::IdMustNotBeIntMax,
            CreateAccountResult::Ok,
            CreateAccountResult::Ok,
            CreateAccountResult::Ok,
        ]
    );
    let other_ledger = Transfer {
        ledger: 2,
        ..transfer(12, 1, 2, 1)
    };
    let rs = c
        .create_transfers(&[
            transfer(u128::MAX, 1, 2, 1),
            transfer(10, u128::MAX, 2, 1),
            transfer(11, 1, u128::MAX, 1),
            other_ledger,
            transfer(13, 1, 2, 7),
        ])
        .unwrap();
    assert_eq!(
        rs,
        [
            R::IdMustNotBeIntMax,
            R::DebitAccountIdMustNotBeIntMax,
            R::CreditAccountIdMustNotBeIntMax,
            R::TransferMustHaveTheSameLedgerAsAccounts,
            R::Ok,
        ]
    );
    assert_eq!(
        balances(&c, 1),
        (0, 7, 0, 0),
        "only transfer 13 moved money"
    );
    assert_eq!(balances(&c, 2), (0, 0, 0, 7));
    // Id 20 is a same-shard transfer on shard 1; a cross-shard transfer
    // from shard 1 with that id is told how it differs from that one (its
    // credit account), not from the cluster's internal leg.
    assert_eq!(
        c.create_transfers(&[transfer(20, 1, 5, 1)]).unwrap(),
        [R::Ok]
    );
    assert_eq!(
        c.create_transfers(&[transfer(20, 1, 3, 1)]).unwrap(),
        [R::ExistsWithDifferentCreditAccountId]
    );
    assert_eq!(balances(&c, 3), (0, 0, 0, 0));
}

/// What a ledger refuses before it reads anything (a nonzero timestamp,
/// an undefined flag bit) gets that item's code across shards too, even
/// with flags no cross-shard transfer may carry, or as a post that names
/// no accounts: not a refusal of the whole call.
#[test]
fn a_transfer_refused_on_its_first_checks_gets_its_code_across_shards() {
    use CreateTransferResult as R;
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::open(dir.path(), options(4)).unwrap();
    // Modulo: 1 on shard 1, 2 on shard 2.
    c.create_accounts(&[
        account(1, AccountFlags::empty()),
        account(2, AccountFlags::empty()),
    ])
    .unwrap();
    let undefined = TransferFlags::from_bits_retain(1 << 9);
    let with = |id, flags, timestamp| Transfer {
        flags,
        timestamp,
        ..transfer(id, 1, 2, 10)
    };
    let post = Transfer {
        id: 5,
        pending_id: 77,
        flags: TransferFlags::POST_PENDING_TRANSFER,
        timestamp: 1,
        ..Transfer::default()
    };
    let rs = c
        .create_transfers(&[
            with(1, undefined, 0),
            with(2, undefined | TransferFlags::PENDING, 0),
            with(3, TransferFlags::PENDING, 9),
            post,
            with(4, TransferFlags::empty(), 0),
        ])
        .unwrap();
    assert_eq!(
        rs,
        [
            R::ReservedFlag,
            R::ReservedFlag,
            R::TimestampMustBeZero,
            R::TimestampMustBeZero,
            R::Ok
        ]
    );
    assert_eq!(
        balances(&c, 1),
        (0, 10, 0, 0),
        "only transfer 4 moved money"
    );
    // None of them spent its id.
    let rs = c
        .create_transfers(&[with(1, TransferFlags::empty(), 0)])
        .unwrap();
    assert_eq!(rs, [R::Ok]);
}

#[test]
fn a_refused_debit_leg_records_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::open(dir.path(), options(2)).unwrap();
    c.create_accounts(&[
        account(1, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS),
        account(2, AccountFlags::empty()),
    ])
    .unwrap();
    let rs = c.create_transfers(&[transfer(9, 1, 2, 10)]).unwrap();
    assert_eq!(rs, vec![CreateTransferResult::ExceedsCredits]);
    assert_eq!(c.transfer_state(9).unwrap(), None);
    // Unknown accounts are refused by the shard that should hold them.
    // (The debit leg's rules run first, on its own shard: a transfer from
    // 1 to an unknown account would get ExceedsCredits.)
    let rs = c
        .create_transfers(&[transfer(10, 3, 2, 1), transfer(11, 2, 5, 1)])
        .unwrap();
    assert_eq!(
        rs,
        vec![
            CreateTransferResult::DebitAccountNotFound,
            CreateTransferResult::CreditAccountNotFound
        ]
    );
}

#[test]
fn duplicates_are_idempotent_and_different_fields_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::open(dir.path(), options(2)).unwrap();
    c.create_accounts(&[
        account(1, AccountFlags::empty()),
        account(2, AccountFlags::empty()),
    ])
    .unwrap();
    let t = transfer(50, 1, 2, 5);
    assert_eq!(
        c.create_transfers(&[t]).unwrap(),
        vec![CreateTransferResult::Ok]
    );
    assert_eq!(
        c.create_transfers(&[t]).unwrap(),
        vec![CreateTransferResult::Exists]
    );
    let more = Transfer { amount: 6, ..t };
    assert_eq!(
        c.create_transfers(&[more]).unwrap(),
        vec![CreateTransferResult::ExistsWithDifferentAmount]
    );
    let elsewhere = Transfer {
        credit_account_id: 4,
        ..t
    };
    assert_eq!(
        c.create_transfers(&[elsewhere]).unwrap(),
        vec![CreateTransferResult::ExistsWithDifferentCreditAccountId]
    );
    assert_eq!(balances(&c, 2), (0, 0, 0, 5));
}

/// One ledger runs a call in input order: of two transfers with one id,
/// the first takes it, and the second's code names how it differs from
/// the first. The cluster's shard runs its part of a call (transfers
/// within it and the cross-shard ones it coordinates) as one commit in
/// input order, and a transfer within the shard whose id a cross-shard
/// transfer took is compared with that transfer, not with its debit leg.
#[test]
fn a_shard_runs_its_part_of_a_call_in_input_order_whatever_the_kind() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::open(dir.path(), options(4)).unwrap();
    // Modulo: 1 and 5 on shard 1, 2 on shard 2; 9 (shard 1) may not
    // debit more than its credits.
    let limited = account(9, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS);
    c.create_accounts(&[
        account(1, AccountFlags::empty()),
        account(2, AccountFlags::empty()),
        account(5, AccountFlags::empty()),
        limited,
    ])
    .unwrap();
    let differs = CreateTransferResult::ExistsWithDifferentCreditAccountId;
    let ok = CreateTransferResult::Ok;
    // Across shards first, then within one, and the other way round.
    let rs = c
        .create_transfers(&[transfer(10, 1, 2, 5), transfer(10, 1, 5, 5)])
        .unwrap();
    assert_eq!(rs, vec![ok, differs]);
    let rs = c
        .create_transfers(&[transfer(11, 1, 5, 5), transfer(11, 1, 2, 5)])
        .unwrap();
    assert_eq!(rs, vec![ok, differs]);
    // In a later call: compared with the cross-shard transfer itself.
    let rs = c.create_transfers(&[transfer(10, 1, 5, 5)]).unwrap();
    assert_eq!(rs, vec![differs]);
    let rs = c.create_transfers(&[transfer(10, 1, 2, 5)]).unwrap();
    assert_eq!(rs, vec![CreateTransferResult::Exists]);
    // Balance limits in input order: 9 has 10 to spend; the cross-shard
    // transfer comes first and takes 8 of it.
    c.create_transfers(&[transfer(20, 5, 9, 10)]).unwrap();
    let rs = c
        .create_transfers(&[transfer(21, 9, 2, 8), transfer(22, 9, 1, 8)])
        .unwrap();
    assert_eq!(rs, vec![ok, CreateTransferResult::ExceedsCredits]);
    assert_eq!(balances(&c, 9), (0, 8, 0, 10));
    assert_eq!(balances(&c, 2), (0, 0, 0, 5 + 8));
    assert_eq!(balances(&c, 1), (0, 10, 0, 0));
    assert_eq!(balances(&c, 5), (0, 10, 0, 5));
}

#[test]
fn what_the_cluster_cannot_route_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::open(dir.path(), options(2)).unwrap();
    c.create_accounts(&[
        account(1, AccountFlags::empty()),
        account(2, AccountFlags::empty()),
    ])
    .unwrap();
    let pending = Transfer {
        flags: TransferFlags::PENDING,
        ..transfer(1, 1, 2, 1)
    };
    let reserved = transfer(0xFF << 120, 1, 2, 1);
    for bad in [pending, reserved] {
        match c.create_transfers(&[transfer(2, 1, 2, 1), bad]) {
            Err(Error::InvalidArgument(_)) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(
        balances(&c, 1),
        (0, 0, 0, 0),
        "nothing of a refused call applies"
    );
    assert!(matches!(
        c.create_accounts(&[account(0xFF << 120, AccountFlags::empty())]),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn a_reopen_keeps_every_final_state_and_the_shard_count() {
    let dir = tempfile::tempdir().unwrap();
    {
        let c = Cluster::open(dir.path(), options(3)).unwrap();
        c.create_accounts(&[
            account(1, AccountFlags::empty()),
            account(2, AccountFlags::empty()),
        ])
        .unwrap();
        c.create_transfers(&[transfer(7, 1, 2, 3)]).unwrap();
    }
    let c = Cluster::open(dir.path(), options(3)).unwrap();
    assert_eq!(c.transfer_state(7).unwrap(), Some(TransferState::Committed));
    assert_eq!(balances(&c, 2), (0, 0, 0, 3));
    drop(c);
    assert!(matches!(
        Cluster::open(dir.path(), options(4)),
        Err(Error::InvalidArgument(_))
    ));
    // Another placement would look for every account on another shard
    // (and make second copies there): refused too.
    let hashed = ClusterOptions {
        placement: Placement::Hash,
        ..options(3)
    };
    match Cluster::open(dir.path(), hashed) {
        Err(Error::InvalidArgument(why)) => assert!(why.contains("placed by modulo"), "{why}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    let c = Cluster::open(dir.path(), options(3)).unwrap();
    assert_eq!(balances(&c, 2), (0, 0, 0, 3));
    drop(c);
    // A directory from before the placement was recorded (the count
    // alone) takes the placement it is opened with, and keeps it.
    std::fs::write(dir.path().join("SHARDS"), "3\n").unwrap();
    let c = Cluster::open(dir.path(), options(3)).unwrap();
    drop(c);
    let layout = std::fs::read_to_string(dir.path().join("SHARDS")).unwrap();
    assert_eq!(layout, "3\nmodulo\n");
}

#[test]
fn concurrent_cross_shard_transfers_conserve_money() {
    let dir = tempfile::tempdir().unwrap();
    let c = Arc::new(Cluster::open(dir.path(), options(4)).unwrap());
    let accounts: Vec<Account> = (1..=16)
        .map(|id| account(id, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS))
        .chain([account(100, AccountFlags::empty())])
        .collect();
    c.create_accounts(&accounts).unwrap();
    // Fund every limited account from 100 (shard 0).
    let funding: Vec<Transfer> = (1..=16)
        .map(|id| transfer(1000 + id, 100, id, 50))
        .collect();
    assert!(
        c.create_transfers(&funding)
            .unwrap()
            .iter()
            .all(|r| *r == CreateTransferResult::Ok)
    );
    let threads: Vec<_> = (0..4u128)
        .map(|th| {
            let c = Arc::clone(&c);
            std::thread::spawn(move || {
                let mut ok = Vec::new();
                for round in 0..20u128 {
                    let batch: Vec<Transfer> = (0..8u128)
                        .map(|k| {
                            let id = 10_000 + th * 1000 + round * 10 + k;
                            let dr = 1 + (th * 7 + round * 3 + k) % 16;
                            let cr = 1 + (th * 5 + round + k * 3 + 1) % 16;
                            let cr = if cr == dr { 1 + cr % 16 } else { cr };
                            transfer(id, dr, cr, 1 + (round + k) % 9)
                        })
                        .collect();
                    let rs = c.create_transfers(&batch).unwrap();
                    for (t, r) in batch.iter().zip(rs) {
                        assert!(
                            matches!(
                                r,
                                CreateTransferResult::Ok | CreateTransferResult::ExceedsCredits
                            ),
                            "{r:?}"
                        );
                        // Final when the call returns, and as it says: a
                        // cross-shard transfer that got Ok committed; one
                        // refused by its debit leg's limit left no record.
                        let cross =
                            c.shard_of(t.debit_account_id) != c.shard_of(t.credit_account_id);
                        let expected = (cross && r == CreateTransferResult::Ok)
                            .then_some(TransferState::Committed);
                        assert_eq!(c.transfer_state(t.id).unwrap(), expected, "{}", t.id);
                        if r == CreateTransferResult::Ok {
                            ok.push(*t);
                        }
                    }
                }
                ok
            })
        })
        .collect();
    let mut net = std::collections::HashMap::<u128, i128>::new();
    for t in threads {
        for tr in t.join().unwrap() {
            *net.entry(tr.debit_account_id).or_default() -= tr.amount as i128;
            *net.entry(tr.credit_account_id).or_default() += tr.amount as i128;
        }
    }
    assert_eq!(c.in_flight(), 0);
    for id in 1..=16u128 {
        let a = c.lookup_accounts(&[id]).unwrap()[0];
        assert_eq!(a.debits_pending + a.credits_pending, 0);
        assert!(a.debits_posted <= a.credits_posted, "limit broken on {id}");
        let balance = a.credits_posted as i128 - a.debits_posted as i128;
        assert_eq!(
            balance,
            50 + net.get(&id).copied().unwrap_or(0),
            "account {id}"
        );
    }
    // Per shard, debits equal credits.
    for s in 0..4 {
        let accounts = c.shard(s).unwrap().snapshot().accounts().unwrap();
        let dr: u128 = accounts.iter().map(|a| a.debits_posted).sum();
        let cr: u128 = accounts.iter().map(|a| a.credits_posted).sum();
        assert_eq!(dr, cr, "shard {s}");
    }
    let mut settlement = 0i128;
    for s in 0..4 {
        let a = c
            .shard(s)
            .unwrap()
            .lookup_accounts(&[settlement_account(1, s)])
            .unwrap();
        if let Some(a) = a.first() {
            assert_eq!(a.debits_pending + a.credits_pending, 0);
            settlement += a.credits_posted as i128 - a.debits_posted as i128;
        }
    }
    assert_eq!(settlement, 0, "settlement accounts net to zero");
}

/// As on one ledger, a post or void may leave its accounts 0 (they are
/// its pending transfer's): the cluster finds the shard that holds the
/// pending transfer. A transfer between shards is never pending (its
/// legs are the cluster's to settle): posting it is refused item by item,
/// and so is a pending id no shard holds.
#[test]
fn a_post_or_void_without_accounts_finds_its_pending_transfer() {
    use CreateTransferResult as R;
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::open(dir.path(), options(4)).unwrap();
    // Modulo: 1 and 5 on shard 1, 2 on shard 2.
    c.create_accounts(&[
        account(1, AccountFlags::empty()),
        account(2, AccountFlags::empty()),
        account(5, AccountFlags::empty()),
    ])
    .unwrap();
    let pending = |id, amount| Transfer {
        flags: TransferFlags::PENDING,
        ..transfer(id, 1, 5, amount)
    };
    let settle = |id, pending_id, flags| Transfer {
        id,
        pending_id,
        flags,
        ..Transfer::default()
    };
    let rs = c
        .create_transfers(&[pending(10, 7), pending(11, 3), transfer(12, 1, 2, 4)])
        .unwrap();
    assert_eq!(rs, [R::Ok; 3]);
    assert_eq!(balances(&c, 5), (0, 0, 10, 0));
    let rs = c
        .create_transfers(&[
            settle(20, 10, TransferFlags::POST_PENDING_TRANSFER),
            settle(21, 11, TransferFlags::VOID_PENDING_TRANSFER),
            settle(22, 12, TransferFlags::POST_PENDING_TRANSFER),
            settle(23, 99, TransferFlags::VOID_PENDING_TRANSFER),
        ])
        .unwrap();
    assert_eq!(
        rs,
        [
            R::Ok,
            R::Ok,
            R::PendingTransferNotPending,
            R::PendingTransferNotFound
        ]
    );
    assert_eq!(balances(&c, 5), (0, 0, 0, 7), "10 posted, 11 voided");
    assert_eq!(
        balances(&c, 1),
        (0, 11, 0, 0),
        "7 posted plus 4 across shards"
    );
    assert_eq!(
        balances(&c, 2),
        (0, 0, 0, 4),
        "the cross-shard transfer is untouched"
    );
    assert_eq!(
        c.transfer_state(12).unwrap(),
        Some(TransferState::Committed)
    );
    // The post is stored with the pending transfer's accounts; sent again
    // with zeros it exists.
    let stored = c.shard(1).unwrap().lookup_transfers(&[20]).unwrap()[0];
    assert_eq!((stored.debit_account_id, stored.credit_account_id), (1, 5));
    let rs = c
        .create_transfers(&[settle(20, 10, TransferFlags::POST_PENDING_TRANSFER)])
        .unwrap();
    assert_eq!(rs, [R::Exists]);
    // One the cluster cannot find, inside a linked chain: refused whole.
    let linked = Transfer {
        flags: TransferFlags::VOID_PENDING_TRANSFER | TransferFlags::LINKED,
        ..settle(30, 98, TransferFlags::empty())
    };
    assert!(matches!(
        c.create_transfers(&[linked, transfer(31, 1, 5, 1)]),
        Err(Error::InvalidArgument(_))
    ));
}

/// The README's limits of the cluster, as they stand:
/// - the settlement accounts' posted amounts only grow, so once a
///   settlement account has carried `u128::MAX`, a cross-shard transfer
///   through it is refused with an `Overflows*` code (on one ledger the
///   same two transfers both commit), and nothing moves;
/// - a post or void that names no accounts is looked up before the rest
///   of its call runs: it does not find a pending transfer the same call
///   creates (`PendingTransferNotFound`), and that refusal spends no id,
///   so sent again it finds the pending transfer and posts it.
#[test]
fn the_documented_limits_of_settlement_totals_and_posts_naming_no_accounts() {
    use CreateTransferResult as R;
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::open(dir.path(), options(4)).unwrap();
    // Modulo: 1 and 5 on shard 1, 2 and 6 on shard 2.
    c.create_accounts(&[
        account(1, AccountFlags::empty()),
        account(2, AccountFlags::empty()),
        account(5, AccountFlags::empty()),
        account(6, AccountFlags::empty()),
    ])
    .unwrap();
    assert_eq!(
        c.create_transfers(&[transfer(10, 1, 2, u128::MAX)])
            .unwrap(),
        [R::Ok]
    );
    let rs = c.create_transfers(&[transfer(11, 5, 6, 1)]).unwrap();
    let overflows = [
        R::OverflowsDebitsPending,
        R::OverflowsCreditsPending,
        R::OverflowsDebitsPosted,
        R::OverflowsCreditsPosted,
        R::OverflowsDebits,
        R::OverflowsCredits,
    ];
    assert!(overflows.contains(&rs[0]), "{rs:?}");
    assert_eq!(balances(&c, 5), (0, 0, 0, 0));
    assert_eq!(balances(&c, 6), (0, 0, 0, 0));

    let pending = Transfer {
        flags: TransferFlags::PENDING,
        ..transfer(40, 5, 1, 3)
    };
    let post = Transfer {
        id: 41,
        pending_id: 40,
        flags: TransferFlags::POST_PENDING_TRANSFER,
        ..Transfer::default()
    };
    let rs = c.create_transfers(&[pending, post]).unwrap();
    assert_eq!(rs, [R::Ok, R::PendingTransferNotFound]);
    assert_eq!(c.create_transfers(&[post]).unwrap(), [R::Ok]);
    assert_eq!(balances(&c, 5), (0, 3, 0, 0));
}
