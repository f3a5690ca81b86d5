//! Timestamps and the reads that follow them (issue 3, rule 8): the ledger
//! gives every account and transfer a unique timestamp, `max(clock, last +
//! 1)` for a call's first event and one more for each next event, so
//! strictly increasing in commit order (across threads, a clock set back
//! and a reopen). History follows it: `get_account_transfers` returns an
//! account's transfers in timestamp order (reversed on request), filtered
//! by timestamp range, side, user data, code and limit;
//! `get_account_balances` gives the balances after each of them for
//! `HISTORY` accounts; a `LedgerSnapshot` reads everything at one ts.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use common::{T0, account, open_clocked, transfer};
use mvledger::{
    Account, AccountBalance, AccountFilter, AccountFilterFlags as FF, AccountFlags,
    CreateAccountResult as A, CreateTransferResult as R, Ledger, ManualClock, Reply, Transfer,
    TransferFlags,
};

/// Checks a reply against what was stored: event `i` has `timestamp + i`,
/// and the ledger stored exactly that on each created item.
fn check_transfer_reply(l: &Ledger, batch: &[Transfer], reply: &Reply<R>) {
    for (i, (t, r)) in batch.iter().zip(&reply.results).enumerate() {
        if *r == R::Ok {
            let stored = l.lookup_transfers(&[t.id]).unwrap()[0];
            assert_eq!(stored.timestamp, reply.timestamp + i as u64, "{t:?}");
        }
    }
}

/// Every timestamp the ledger has given to an account or transfer, by id.
fn all_timestamps(l: &Ledger, transfer_ids: &[u128]) -> Vec<u64> {
    let snap = l.snapshot();
    let mut out: Vec<u64> = snap
        .accounts()
        .unwrap()
        .iter()
        .map(|a| a.timestamp)
        .collect();
    out.extend(
        snap.lookup_transfers(transfer_ids)
            .unwrap()
            .iter()
            .map(|t| t.timestamp),
    );
    out
}

#[test]
fn every_account_and_transfer_gets_a_unique_increasing_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let l = open_clocked(dir.path(), &clock);
    let accounts: Vec<Account> = (1..=5)
        .map(|id| account(id, AccountFlags::empty()))
        .collect();
    let reply = l.submit_accounts(&accounts).unwrap();
    assert_eq!(reply.results, [A::Ok; 5]);
    // The clock is ahead of every timestamp given: the first event gets it.
    assert_eq!(reply.timestamp, T0);
    for (i, a) in l
        .lookup_accounts(&[1, 2, 3, 4, 5])
        .unwrap()
        .iter()
        .enumerate()
    {
        assert_eq!(a.timestamp, T0 + i as u64);
    }
    let mut last = T0 + 4;
    let mut ids = Vec::new();
    for call in 0..20u128 {
        let batch: Vec<Transfer> = (0..5)
            .map(|i| {
                let id = call * 10 + i + 1;
                // Some fail: they spend a timestamp but store none.
                if i == 2 {
                    transfer(id, 1, 1, 1)
                } else {
                    transfer(id, 1 + i % 4, 2 + i % 4, 1)
                }
            })
            .collect();
        let reply = l.submit_transfers(&batch).unwrap();
        assert!(
            reply.timestamp > last,
            "call {call}: ts went back or repeated"
        );
        check_transfer_reply(&l, &batch, &reply);
        last = reply.timestamp + batch.len() as u64 - 1;
        ids.extend(batch.iter().map(|t| t.id));
        if call % 3 == 0 {
            clock.advance(1_000);
        }
    }
    let all = all_timestamps(&l, &ids);
    let unique: HashSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "two items share a timestamp");
    assert_eq!(all.len(), 5 + 20 * 4);
}

#[test]
fn timestamps_never_go_back_when_the_clock_does_nor_across_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let last;
    {
        let l = open_clocked(dir.path(), &clock);
        let r = l
            .submit_accounts(&[
                account(1, AccountFlags::empty()),
                account(2, AccountFlags::empty()),
            ])
            .unwrap();
        assert_eq!(r.timestamp, T0);
        // Set back by an hour: the next event is the last one plus 1.
        clock.set(T0 - 3_600_000_000_000);
        let r = l.submit_transfers(&[transfer(10, 1, 2, 1)]).unwrap();
        assert_eq!(r.timestamp, T0 + 2);
        // Forward again: the clock's time.
        clock.set(T0 + 1_000_000);
        let r = l.submit_transfers(&[transfer(11, 1, 2, 1)]).unwrap();
        assert_eq!(r.timestamp, T0 + 1_000_000);
        clock.set(0);
        let r = l.submit_transfers(&[transfer(12, 1, 2, 1)]).unwrap();
        assert_eq!(r.timestamp, T0 + 1_000_001);
        last = r.timestamp;
    }
    // Reopened with a clock far behind: still after the last.
    clock.set(5);
    let l = open_clocked(dir.path(), &clock);
    let r = l.submit_transfers(&[transfer(13, 1, 2, 1)]).unwrap();
    assert_eq!(r.timestamp, last + 1);
    let r = l
        .submit_accounts(&[account(3, AccountFlags::empty())])
        .unwrap();
    assert_eq!(r.timestamp, last + 2);
    let ts: Vec<u64> = l
        .lookup_transfers(&[10, 11, 12, 13])
        .unwrap()
        .iter()
        .map(|t| t.timestamp)
        .collect();
    assert!(ts.windows(2).all(|w| w[0] < w[1]), "{ts:?}");
}

#[test]
fn calls_from_several_threads_get_timestamps_in_commit_order() {
    const THREADS: u128 = 4;
    const CALLS: u128 = 40;
    let dir = tempfile::tempdir().unwrap();
    // A clock that stands still: every call's timestamps come from the last
    // ones given, under the sequencer.
    let clock = Arc::new(ManualClock::new(T0));
    let l = open_clocked(dir.path(), &clock);
    let r = l
        .create_accounts(&[
            account(1, AccountFlags::empty()),
            account(2, AccountFlags::empty()),
        ])
        .unwrap();
    assert_eq!(r, [A::Ok; 2]);
    let mut replies: Vec<(u64, u64, usize)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let l = &l;
                s.spawn(move || {
                    (0..CALLS)
                        .map(|c| {
                            let n = 1 + (c % 4);
                            let batch: Vec<Transfer> = (0..n)
                                .map(|i| transfer((t << 64) | (c << 8) | (i + 1), 1, 2, 1))
                                .collect();
                            let reply = l.submit_transfers(&batch).unwrap();
                            assert!(reply.results.iter().all(|r| *r == R::Ok));
                            check_transfer_reply(l, &batch, &reply);
                            (reply.commit_ts, reply.timestamp, batch.len())
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    replies.sort_unstable();
    for w in replies.windows(2) {
        let (c0, ts0, n0) = w[0];
        let (c1, ts1, _) = w[1];
        assert!(c0 < c1, "two calls share commit ts {c0}");
        assert!(
            ts1 > ts0 + n0 as u64 - 1,
            "commit order {c0} < {c1} but timestamps {ts0}+{n0} then {ts1}"
        );
    }
}

/// Account 1 and 2 (`HISTORY`), 3 (plain); a history of transfers of
/// account 1 with various codes and user data, one call each. Returns the
/// ids of 1's transfers in creation order.
fn history_setup(l: &Ledger) -> Vec<u128> {
    let r = l
        .create_accounts(&[
            account(1, AccountFlags::HISTORY),
            account(2, AccountFlags::HISTORY),
            account(3, AccountFlags::empty()),
        ])
        .unwrap();
    assert_eq!(r, [A::Ok; 3]);
    let transfers = [
        Transfer {
            code: 2,
            ..transfer(10, 1, 2, 10)
        },
        Transfer {
            user_data_128: 5,
            ..transfer(11, 2, 1, 3)
        },
        Transfer {
            user_data_64: 6,
            code: 2,
            ..transfer(12, 3, 1, 4)
        },
        Transfer {
            flags: TransferFlags::PENDING,
            user_data_32: 7,
            ..transfer(13, 1, 3, 20)
        },
        transfer(14, 2, 3, 100), // not 1's
        Transfer {
            id: 15,
            pending_id: 13,
            amount: 8,
            flags: TransferFlags::POST_PENDING_TRANSFER,
            ..Default::default()
        },
        transfer(16, 1, 1, 1), // fails: no history
        Transfer {
            user_data_128: 5,
            ..transfer(17, 1, 2, 1)
        },
    ];
    for t in transfers {
        let r = l.create_transfers(&[t]).unwrap();
        let expect = if t.id == 16 {
            R::AccountsMustBeDifferent
        } else {
            R::Ok
        };
        assert_eq!(r, [expect]);
    }
    vec![10, 11, 12, 13, 15, 17]
}

fn filter(account_id: u128, flags: FF) -> AccountFilter {
    AccountFilter {
        account_id,
        limit: 100,
        flags,
        ..Default::default()
    }
}

fn transfer_ids(l: &Ledger, f: AccountFilter) -> Vec<u128> {
    l.get_account_transfers(f)
        .unwrap()
        .iter()
        .map(|t| t.id)
        .collect()
}

#[test]
fn account_transfers_come_in_timestamp_order_and_filtered() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let l = open_clocked(dir.path(), &clock);
    let ids = history_setup(&l);
    let both = FF::DEBITS | FF::CREDITS;
    let got = l.get_account_transfers(filter(1, both)).unwrap();
    assert_eq!(got.iter().map(|t| t.id).collect::<Vec<_>>(), ids);
    assert!(got.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
    assert_eq!(
        got,
        l.lookup_transfers(&ids).unwrap(),
        "not the stored transfers"
    );
    let mut reversed = ids.clone();
    reversed.reverse();
    assert_eq!(transfer_ids(&l, filter(1, both | FF::REVERSED)), reversed);
    // Sides.
    assert_eq!(transfer_ids(&l, filter(1, FF::DEBITS)), [10, 13, 15, 17]);
    assert_eq!(transfer_ids(&l, filter(1, FF::CREDITS)), [11, 12]);
    assert_eq!(
        transfer_ids(&l, filter(1, FF::CREDITS | FF::REVERSED)),
        [12, 11]
    );
    assert!(transfer_ids(&l, filter(1, FF::REVERSED)).is_empty());
    // Timestamp bounds, inclusive.
    let ts: BTreeMap<u128, u64> = got.iter().map(|t| (t.id, t.timestamp)).collect();
    let range = |min, max| AccountFilter {
        timestamp_min: min,
        timestamp_max: max,
        ..filter(1, both)
    };
    assert_eq!(transfer_ids(&l, range(ts[&11], ts[&13])), [11, 12, 13]);
    assert_eq!(transfer_ids(&l, range(ts[&11] + 1, ts[&13] - 1)), [12]);
    assert_eq!(transfer_ids(&l, range(ts[&15], 0)), [15, 17]);
    assert_eq!(transfer_ids(&l, range(0, ts[&11])), [10, 11]);
    assert!(transfer_ids(&l, range(ts[&13], ts[&11])).is_empty());
    // Fields.
    let with = |f: AccountFilter| transfer_ids(&l, f);
    let base = filter(1, both);
    assert_eq!(with(AccountFilter { code: 2, ..base }), [10, 12]);
    assert_eq!(
        with(AccountFilter {
            user_data_128: 5,
            ..base
        }),
        [11, 17]
    );
    assert_eq!(
        with(AccountFilter {
            user_data_64: 6,
            ..base
        }),
        [12]
    );
    // A post takes the pending transfer's user data.
    assert_eq!(
        with(AccountFilter {
            user_data_32: 7,
            ..base
        }),
        [13, 15]
    );
    // Limit: the first ones in the order asked.
    assert_eq!(with(AccountFilter { limit: 2, ..base }), [10, 11]);
    assert_eq!(
        with(AccountFilter {
            limit: 2,
            flags: both | FF::REVERSED,
            ..base
        }),
        [17, 15]
    );
    assert_eq!(
        with(AccountFilter {
            limit: 1,
            code: 2,
            flags: both | FF::REVERSED,
            ..base
        }),
        [12]
    );
    assert!(with(AccountFilter { limit: 0, ..base }).is_empty());
    // TigerBeetle's other constraints: a filter that breaks one gets
    // nothing (not everything).
    assert!(
        with(AccountFilter {
            timestamp_max: u64::MAX,
            ..base
        })
        .is_empty()
    );
    assert!(
        with(AccountFilter {
            timestamp_min: u64::MAX,
            ..base
        })
        .is_empty()
    );
    // Timestamps must be below 2^63; just below is a bound like any other.
    assert!(
        with(AccountFilter {
            timestamp_max: 1 << 63,
            ..base
        })
        .is_empty()
    );
    assert_eq!(
        with(AccountFilter {
            timestamp_max: (1 << 63) - 1,
            ..base
        }),
        with(base)
    );
    assert!(!with(base).is_empty());
    assert!(
        with(AccountFilter {
            flags: both | FF::from_bits_retain(1 << 5),
            ..base
        })
        .is_empty()
    );
    assert!(
        with(AccountFilter {
            account_id: u128::MAX,
            ..base
        })
        .is_empty()
    );
    // Other accounts.
    assert_eq!(transfer_ids(&l, filter(3, both)), [12, 13, 14, 15]);
    assert!(transfer_ids(&l, filter(99, both)).is_empty());
}

fn balances_after(l: &Ledger, id: u128) -> AccountBalance {
    let a = l.lookup_accounts(&[id]).unwrap()[0];
    AccountBalance {
        debits_pending: a.debits_pending,
        debits_posted: a.debits_posted,
        credits_pending: a.credits_pending,
        credits_posted: a.credits_posted,
        timestamp: 0,
    }
}

#[test]
fn account_balances_follow_each_transfer_of_history_accounts_only() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let l = open_clocked(dir.path(), &clock);
    let r = l
        .create_accounts(&[
            account(1, AccountFlags::HISTORY),
            account(2, AccountFlags::empty()),
        ])
        .unwrap();
    assert_eq!(r, [A::Ok; 2]);
    let steps = [
        transfer(10, 1, 2, 10),
        transfer(11, 2, 1, 3),
        Transfer {
            flags: TransferFlags::PENDING,
            timeout: 5,
            ..transfer(12, 1, 2, 20)
        },
        Transfer {
            flags: TransferFlags::PENDING,
            ..transfer(13, 2, 1, 7)
        },
        Transfer {
            id: 14,
            pending_id: 13,
            flags: TransferFlags::VOID_PENDING_TRANSFER,
            ..Default::default()
        },
        transfer(15, 1, 2, 1),
    ];
    let mut expected = Vec::new();
    for t in steps {
        let reply = l.submit_transfers(&[t]).unwrap();
        assert_eq!(reply.results, [R::Ok]);
        expected.push(AccountBalance {
            timestamp: reply.timestamp,
            ..balances_after(&l, 1)
        });
    }
    let both = FF::DEBITS | FF::CREDITS;
    assert_eq!(l.get_account_balances(filter(1, both)).unwrap(), expected);
    let mut reversed = expected.clone();
    reversed.reverse();
    assert_eq!(
        l.get_account_balances(filter(1, both | FF::REVERSED))
            .unwrap(),
        reversed
    );
    // The same selection as get_account_transfers, and the same timestamps.
    let debits = l.get_account_balances(filter(1, FF::DEBITS)).unwrap();
    let debit_transfers = l.get_account_transfers(filter(1, FF::DEBITS)).unwrap();
    assert_eq!(
        debits.iter().map(|b| b.timestamp).collect::<Vec<_>>(),
        debit_transfers
            .iter()
            .map(|t| t.timestamp)
            .collect::<Vec<_>>()
    );
    assert_eq!(debits.len(), 3);
    let limited = l
        .get_account_balances(AccountFilter {
            limit: 2,
            timestamp_min: expected[1].timestamp,
            ..filter(1, both)
        })
        .unwrap();
    assert_eq!(limited, expected[1..3]);
    // No history kept for account 2, nor for unknown accounts.
    assert!(l.get_account_balances(filter(2, both)).unwrap().is_empty());
    assert!(l.get_account_balances(filter(99, both)).unwrap().is_empty());
    // An expiry changes balances, not the history (TigerBeetle's
    // get_account_balances page).
    clock.advance_secs(3_600);
    l.expire_pending().unwrap();
    assert_eq!(balances_after(&l, 1).debits_pending, 0);
    assert_eq!(l.get_account_balances(filter(1, both)).unwrap(), expected);
    // And all of it after a reopen.
    drop(l);
    let l = open_clocked(dir.path(), &clock);
    assert_eq!(l.get_account_balances(filter(1, both)).unwrap(), expected);
}

#[test]
fn a_snapshot_reads_everything_at_one_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(T0));
    let l = open_clocked(dir.path(), &clock);
    history_setup(&l);
    let both = FF::DEBITS | FF::CREDITS;
    let snap = l.snapshot();
    let accounts = snap.accounts().unwrap();
    let history = snap.get_account_transfers(filter(1, both)).unwrap();
    let balances = snap.get_account_balances(filter(1, both)).unwrap();
    let reply = l
        .submit_transfers(&[transfer(20, 1, 2, 5), transfer(21, 2, 1, 6)])
        .unwrap();
    assert_eq!(reply.results, [R::Ok; 2]);
    let r = l
        .create_accounts(&[account(4, AccountFlags::empty())])
        .unwrap();
    assert_eq!(r, [A::Ok]);
    assert!(snap.ts() < reply.commit_ts);
    // The old snapshot sees none of the later batches, in every read.
    assert_eq!(snap.accounts().unwrap(), accounts);
    assert_eq!(snap.lookup_accounts(&[1, 2, 4]).unwrap(), accounts[..2]);
    assert!(snap.lookup_transfers(&[20, 21]).unwrap().is_empty());
    assert_eq!(
        snap.get_account_transfers(filter(1, both)).unwrap(),
        history
    );
    assert_eq!(
        snap.get_account_balances(filter(1, both)).unwrap(),
        balances
    );
    // A new one sees all of them.
    let now = l.snapshot();
    assert!(now.ts() >= reply.commit_ts);
    assert_eq!(now.lookup_transfers(&[20, 21]).unwrap().len(), 2);
    assert_eq!(now.lookup_accounts(&[4]).unwrap().len(), 1);
    let ids = transfer_ids(&l, filter(1, both));
    assert_eq!(ids[ids.len() - 2..], [20, 21]);
    assert_eq!(
        now.get_account_balances(filter(1, both)).unwrap().len(),
        balances.len() + 2
    );
    let a = now.lookup_accounts(&[1]).unwrap()[0];
    assert_eq!(a.debits_posted, accounts[0].debits_posted + 5);
    assert_eq!(a.credits_posted, accounts[0].credits_posted + 6);
}

/// A clock at the end of time: timestamps stay at or below
/// `TIMESTAMP_MAX` (2^63 - 1, as TigerBeetle's); a batch that would pass
/// it is an `InvalidArgument` error with nothing written, never a wrapped
/// timestamp or a panic, and the ledger goes on once the clock is sane.
#[test]
fn a_clock_past_the_last_timestamp_is_an_error_and_writes_nothing() {
    use mvledger::{Error, TIMESTAMP_MAX};
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(TIMESTAMP_MAX - 1));
    let l = open_clocked(dir.path(), &clock);
    // Two events fit exactly: TIMESTAMP_MAX - 1 and TIMESTAMP_MAX.
    let two: Vec<Account> = (1..=2)
        .map(|id| account(id, AccountFlags::empty()))
        .collect();
    let reply = l.submit_accounts(&two).unwrap();
    assert_eq!(reply.results, [A::Ok, A::Ok]);
    assert_eq!(reply.timestamp, TIMESTAMP_MAX - 1);
    let stored = l.lookup_accounts(&[1, 2]).unwrap();
    assert_eq!(
        stored.iter().map(|a| a.timestamp).collect::<Vec<_>>(),
        [TIMESTAMP_MAX - 1, TIMESTAMP_MAX]
    );
    // Nothing is left: the next call fails whole, whatever the clock says.
    for now in [TIMESTAMP_MAX, u64::MAX, T0] {
        clock.set(now);
        let r = l.create_accounts(&[account(3, AccountFlags::empty())]);
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
        let r = l.create_transfers(&[transfer(9, 1, 2, 1)]);
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    }
    assert!(l.lookup_accounts(&[3]).unwrap().is_empty());
    assert!(l.lookup_transfers(&[9]).unwrap().is_empty());

    // A fresh ledger whose clock reads u64::MAX: an error, not a panic.
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(u64::MAX));
    let l = open_clocked(dir.path(), &clock);
    let r = l.create_accounts(&two);
    assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    assert!(l.lookup_accounts(&[1, 2]).unwrap().is_empty());
    clock.set(T0);
    assert_eq!(l.create_accounts(&two).unwrap(), [A::Ok, A::Ok]);
}
