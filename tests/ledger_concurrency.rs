//! Concurrent transfers keep the books balanced in every snapshot, and
//! apply as if one after another in commit order (issue 3, "Tests":
//! concurrency; rules 1, 2, 7 and 8; ARCHITECTURE.md invariant 6).
//!
//! Writer threads submit batches of transfers under `SyncMode::Always`
//! (group-committed) over ten shared accounts, some with balance limits:
//! single-phase, pending with timeouts, posts and voids of each other's
//! pending transfers, linked chains, balancing transfers, retries of each
//! other's ids; one writer moves the manual clock so that pending
//! transfers expire. Meanwhile reader threads take snapshots and check
//! that in every one the posted debits sum to the posted credits, the
//! pending ones likewise, and every balance limit holds.
//!
//! Afterwards the replies, sorted by commit timestamp, are run through the
//! serial model (`tests/model`) with their ledger timestamps: timestamps
//! must increase in commit order, every result code must be the model's,
//! the accounts and every account's transfers (`get_account_transfers`)
//! in every 16th snapshot must be the model's after the batches committed
//! at or before the snapshot's timestamp, and the final state (every
//! account, transfer and account history, before and after reopening)
//! must be the model's.

mod model;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use model::{Model, NS_PER_S, check_invariants};
use mvledger::{
    Account, AccountFilter, AccountFilterFlags, AccountFlags, CreateAccountResult,
    CreateTransferResult, Ledger, LedgerOptions, LedgerSnapshot, ManualClock, Options, Reply,
    SyncMode, Transfer, TransferFlags,
};

const WRITERS: usize = 4;
const BATCHES_PER_WRITER: usize = 75;
const READERS: usize = 2;
const ACCOUNTS: u128 = 10;

/// A small deterministic generator (xorshift64*): no dependency needed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}

/// What every writer has submitted so far: ids to retry, pending transfers
/// to post or void.
#[derive(Default)]
struct Shared {
    submitted: Vec<Transfer>,
}

fn options(clock: &Arc<ManualClock>) -> LedgerOptions {
    LedgerOptions {
        engine: Options {
            sync: SyncMode::Always,
            ..Options::default()
        },
        clock: clock.clone(),
    }
}

/// Accounts 1-3 without limits (they fund the others), 4-7 whose debits
/// must not exceed their credits, 8-10 whose credits must not exceed their
/// debits; the even ones keep history.
fn accounts() -> Vec<Account> {
    (1..=ACCOUNTS)
        .map(|id| {
            let mut flags = match id {
                1..=3 => AccountFlags::empty(),
                4..=7 => AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
                _ => AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
            };
            if id % 2 == 0 {
                flags |= AccountFlags::HISTORY;
            }
            Account {
                id,
                ledger: 1,
                code: 1,
                flags,
                ..Default::default()
            }
        })
        .collect()
}

/// Credits for the accounts with a debit limit, debits for those with a
/// credit limit.
fn funding() -> Vec<Transfer> {
    (4..=ACCOUNTS)
        .map(|id| {
            let (dr, cr) = if id <= 7 { (1, id) } else { (id, 2) };
            Transfer {
                id: 1_000_000 + id,
                debit_account_id: dr,
                credit_account_id: cr,
                amount: 500,
                ledger: 1,
                code: 1,
                ..Default::default()
            }
        })
        .collect()
}

fn random_transfer(rng: &mut Rng, id: u128, shared: &Shared) -> Transfer {
    let dr = 1 + u128::from(rng.below(ACCOUNTS as u64));
    let mut cr = 1 + u128::from(rng.below(ACCOUNTS as u64));
    if cr == dr && !rng.chance(20) {
        cr = dr % ACCOUNTS + 1;
    }
    let mut t = Transfer {
        id,
        debit_account_id: dr,
        credit_account_id: cr,
        amount: 1 + u128::from(rng.below(60)),
        ledger: 1,
        code: 1 + rng.below(2) as u16,
        user_data_64: rng.below(3),
        ..Default::default()
    };
    let pending: Vec<&Transfer> = shared
        .submitted
        .iter()
        .filter(|t| t.flags.contains(TransferFlags::PENDING))
        .collect();
    match rng.below(12) {
        0..=4 => {}
        5..=6 => {
            t.flags |= TransferFlags::PENDING;
            t.timeout = rng.below(3) as u32;
        }
        7..=8 if !pending.is_empty() => {
            let p = pending[rng.below(pending.len() as u64) as usize];
            t.flags = if rng.chance(3) {
                TransferFlags::VOID_PENDING_TRANSFER
            } else {
                TransferFlags::POST_PENDING_TRANSFER
            };
            t.pending_id = p.id;
            t.debit_account_id = 0;
            t.credit_account_id = 0;
            t.amount = if rng.chance(2) { 0 } else { t.amount % 30 };
            t.ledger = 0;
            t.code = 0;
        }
        9 => {
            t.flags |= TransferFlags::BALANCING_DEBIT;
            if rng.chance(2) {
                t.amount = 0;
            }
        }
        10 => {
            t.flags |= TransferFlags::BALANCING_CREDIT;
        }
        _ if !shared.submitted.is_empty() => {
            // Another writer's (or our own) transfer again, as it was.
            t = shared.submitted[rng.below(shared.submitted.len() as u64) as usize];
            t.flags.remove(TransferFlags::LINKED);
        }
        _ => {}
    }
    if rng.chance(6) {
        t.flags |= TransferFlags::LINKED;
    }
    t
}

type Submitted = (Reply<CreateTransferResult>, Vec<Transfer>);

fn writer(
    ledger: &Ledger,
    clock: &ManualClock,
    shared: &Mutex<Shared>,
    index: usize,
) -> Vec<Submitted> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (index as u64 + 1).wrapping_mul(0x1234_5678_9abc));
    let mut next_id = (index as u128 + 1) << 32;
    let mut out = Vec::new();
    for b in 0..BATCHES_PER_WRITER {
        if index == 0 && b % 10 == 9 {
            clock.advance_secs(1);
        }
        let batch: Vec<Transfer> = {
            let shared = shared.lock().expect("lock");
            let n = 1 + rng.below(16);
            (0..n)
                .map(|_| {
                    next_id += 1;
                    random_transfer(&mut rng, next_id, &shared)
                })
                .collect()
        };
        let reply = ledger.submit_transfers(&batch).expect("submit_transfers");
        assert_eq!(reply.results.len(), batch.len());
        shared
            .lock()
            .expect("lock")
            .submitted
            .extend(batch.iter().copied());
        out.push((reply, batch));
    }
    out
}

/// What a snapshot showed: its timestamp, the accounts, and the ids of
/// each account's transfers (`histories`).
type Seen = (u64, Vec<Account>, Vec<Vec<u128>>);

/// Every account's transfers, oldest first: all of them, both sides.
fn account_filter(id: u128) -> AccountFilter {
    AccountFilter {
        account_id: id,
        limit: u32::MAX,
        flags: AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS,
        ..AccountFilter::default()
    }
}

/// The ids of each account's transfers at `snap`.
fn histories(snap: &LedgerSnapshot) -> Vec<Vec<u128>> {
    (1..=ACCOUNTS)
        .map(|id| {
            let found = snap.get_account_transfers(account_filter(id));
            found.expect("history").iter().map(|t| t.id).collect()
        })
        .collect()
}

/// The model's `histories`.
fn model_histories(model: &Model) -> Vec<Vec<u128>> {
    (1..=ACCOUNTS)
        .map(|id| {
            let found = model.get_account_transfers(account_filter(id));
            found.iter().map(|t| t.id).collect()
        })
        .collect()
}

/// Snapshots until told to stop; checks the invariants in each. Returns
/// how many it checked, and what every 16th snapshot showed for a later
/// comparison with the model.
fn reader(ledger: &Ledger, stop: &AtomicBool) -> (usize, Vec<Seen>) {
    let mut checked = 0;
    let mut kept = Vec::new();
    let mut last_ts = 0;
    loop {
        let done = stop.load(Ordering::SeqCst);
        let snap = ledger.snapshot();
        assert!(snap.ts() >= last_ts, "snapshot timestamps go backwards");
        last_ts = snap.ts();
        let accounts = snap.accounts().expect("accounts");
        if let Err(e) = check_invariants(&accounts) {
            panic!("snapshot at {}: {e}\n{accounts:#?}", snap.ts());
        }
        if checked % 16 == 0 {
            kept.push((snap.ts(), accounts, histories(&snap)));
        }
        checked += 1;
        if done {
            return (checked, kept);
        }
    }
}

#[test]
fn concurrent_transfers_balance_in_every_snapshot_and_match_the_model_in_commit_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(1_000_000 * NS_PER_S));
    let ledger = Ledger::open(dir.path(), options(&clock)).expect("open");

    let mut model = Model::new();
    let accounts = accounts();
    let reply = ledger.submit_accounts(&accounts).expect("accounts");
    assert_eq!(reply.results, vec![CreateAccountResult::Ok; accounts.len()]);
    assert_eq!(
        model.create_accounts(reply.timestamp, &accounts),
        reply.results
    );
    let funding = funding();
    let funded = ledger.submit_transfers(&funding).expect("funding");
    assert_eq!(
        funded.results,
        vec![CreateTransferResult::Ok; funding.len()]
    );

    let shared = Mutex::new(Shared::default());
    let stop = AtomicBool::new(false);
    let snapshots = AtomicUsize::new(0);
    let mut submitted: Vec<Submitted> = vec![(funded, funding)];
    let mut seen: Vec<Seen> = Vec::new();
    thread::scope(|s| {
        let readers: Vec<_> = (0..READERS)
            .map(|_| s.spawn(|| reader(&ledger, &stop)))
            .collect();
        let writers: Vec<_> = (0..WRITERS)
            .map(|i| {
                let (ledger, clock, shared) = (&ledger, &clock, &shared);
                s.spawn(move || writer(ledger, clock, shared, i))
            })
            .collect();
        for w in writers {
            submitted.extend(w.join().expect("writer"));
        }
        stop.store(true, Ordering::SeqCst);
        for r in readers {
            let (checked, kept) = r.join().expect("reader");
            snapshots.fetch_add(checked, Ordering::SeqCst);
            seen.extend(kept);
        }
    });
    assert!(snapshots.load(Ordering::SeqCst) >= READERS);
    seen.sort_by_key(|(ts, ..)| *ts);

    // The batches in commit order, through the model.
    submitted.sort_by_key(|(reply, _)| reply.commit_ts);
    let mut ok = 0;
    for pair in submitted.windows(2) {
        assert!(
            pair[0].0.commit_ts < pair[1].0.commit_ts,
            "two batches share a commit ts"
        );
        assert!(
            pair[0].0.timestamp + pair[0].1.len() as u64 <= pair[1].0.timestamp,
            "ledger timestamps do not increase in commit order"
        );
    }
    // A snapshot at ts S shows exactly the batches committed at or before
    // S: the model's accounts after them.
    let mut seen = seen.into_iter().peekable();
    let mut compared = 0;
    for (reply, batch) in &submitted {
        while let Some((ts, accounts, histories)) = seen.next_if(|(ts, ..)| *ts < reply.commit_ts) {
            assert_eq!(
                accounts,
                model.accounts(),
                "the snapshot at {ts} is not the state after the batches before it"
            );
            assert_eq!(
                histories,
                model_histories(&model),
                "the histories at {ts} are not those after the batches before it"
            );
            compared += 1;
        }
        let want = model.create_transfers(reply.timestamp, batch);
        assert_eq!(
            reply.results, want,
            "batch at commit ts {} (ledger left, model right): {batch:#?}",
            reply.commit_ts
        );
        ok += want
            .iter()
            .filter(|r| **r == CreateTransferResult::Ok)
            .count();
        model.check().expect("model invariants");
    }
    for (ts, accounts, histories) in seen {
        assert_eq!(accounts, model.accounts(), "the snapshot at {ts}");
        assert_eq!(histories, model_histories(&model), "the histories at {ts}");
        compared += 1;
    }
    // The mix was rich enough to mean something.
    assert!(ok > 200, "only {ok} transfers succeeded");

    let ids: Vec<u128> = submitted
        .iter()
        .flat_map(|(_, batch)| batch.iter().map(|t| t.id))
        .collect();
    let check_state = |ledger: &Ledger, when: &str| {
        let snap = ledger.snapshot();
        let accounts = snap.accounts().expect("accounts");
        check_invariants(&accounts).expect("invariants");
        assert_eq!(accounts, model.accounts(), "{when}: accounts");
        assert_eq!(
            snap.lookup_transfers(&ids).expect("lookup_transfers"),
            model.lookup_transfers(&ids),
            "{when}: transfers"
        );
        assert_eq!(
            histories(&snap),
            model_histories(&model),
            "{when}: histories"
        );
    };
    check_state(&ledger, "after the threads");
    let stats = ledger.stats();
    println!(
        "{} batches, {ok} transfers ok, {} snapshots checked ({compared} against the model), \
         {} commits in {} syncs",
        submitted.len(),
        snapshots.load(Ordering::SeqCst),
        stats.commits,
        stats.syncs
    );
    drop(ledger);
    let ledger = Ledger::open(dir.path(), options(&clock)).expect("reopen");
    check_state(&ledger, "after reopening");
}
