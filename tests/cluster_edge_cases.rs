//! The edge cases of two-phase commit across shards (issue 6), and of
//! `Ledger::submit_transfers_with` beneath it, that a review found broken:
//! one id on two coordinators, waiters per coordinator, the same checks as
//! on one shard, no account closed under a waiting leg, no message before
//! its commit is durable, extra keys that replay, expiry after a failed
//! call, and a refused call that applies nothing. A `GateFs` stops one
//! shard at an exact step to force each interleaving.

mod common;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use mvledger::cluster::{Cluster, ClusterOptions, Placement, TransferState, settlement_account};
use mvledger::wal::{DirLock, FileSystem, SimFs, StdFs, WritableFile};
use mvledger::{
    Account, AccountFlags, CreateTransferResult, Error, Ledger, LedgerOptions, ManualClock,
    Options, SyncMode, Transfer, TransferFlags,
};

fn options(shards: u32) -> ClusterOptions {
    ClusterOptions {
        shards,
        placement: Placement::Modulo,
        resend_interval: Duration::from_millis(20),
        ..ClusterOptions::default()
    }
}

fn account(id: u128) -> Account {
    common::account(id, AccountFlags::empty())
}

use common::transfer;

/// Per ledger 1, the settlement accounts of all shards: (sum of credits
/// minus debits posted, sum of pending amounts).
fn settlement(c: &Cluster) -> (i128, u128) {
    let (mut net, mut pending) = (0i128, 0u128);
    for s in 0..c.shards() {
        let found = c
            .shard(s)
            .unwrap()
            .lookup_accounts(&[settlement_account(1, s)])
            .unwrap();
        if let Some(a) = found.first() {
            net += a.credits_posted as i128 - a.debits_posted as i128;
            pending += a.debits_pending + a.credits_pending;
        }
    }
    (net, pending)
}

// ---------------------------------------------------------------------------
// A file system that fails every append to the files under one directory
// once a given number of appends there have passed: it stops one shard's
// commits at a chosen step of the protocol while the others go on.

#[derive(Debug, Default)]
struct Gate {
    /// (directory, appends still allowed there).
    armed: Mutex<Option<(PathBuf, u64)>>,
}

impl Gate {
    fn arm(&self, dir: &Path, allowed: u64) {
        *self.armed.lock() = Some((dir.to_path_buf(), allowed));
    }

    fn pass(&self, path: &Path) -> io::Result<()> {
        let mut armed = self.armed.lock();
        match armed.as_mut() {
            Some((dir, left)) if path.starts_with(dir.as_path()) => {
                if *left == 0 {
                    return Err(io::Error::other("gate: appends to this shard fail"));
                }
                *left -= 1;
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[derive(Debug)]
struct GateFs {
    inner: StdFs,
    gate: Arc<Gate>,
}

#[derive(Debug)]
struct GateFile {
    inner: Box<dyn WritableFile>,
    path: PathBuf,
    gate: Arc<Gate>,
}

impl WritableFile for GateFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.gate.pass(&self.path)?;
        self.inner.append(buf)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.inner.sync_data()
    }
}

impl GateFs {
    fn wrap(&self, path: &Path, inner: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        Box::new(GateFile {
            inner,
            path: path.to_path_buf(),
            gate: Arc::clone(&self.gate),
        })
    }
}

impl FileSystem for GateFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        Ok(self.wrap(path, self.inner.create(path)?))
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        Ok(self.wrap(path, self.inner.open_append(path)?))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.inner.read(path)
    }
    fn size(&self, path: &Path) -> io::Result<u64> {
        self.inner.size(path)
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        self.inner.truncate(path, len)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.inner.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        self.inner.lock(path)
    }
}

fn gated_options(shards: u32, gate: &Arc<Gate>) -> ClusterOptions {
    let mut o = options(shards);
    o.ledger.engine.fs = Arc::new(GateFs {
        inner: StdFs,
        gate: Arc::clone(gate),
    });
    o
}

/// After a reopen: the cluster finishes every transfer without a shard
/// thread failing, `id` is final, and nothing is left reserved in the
/// settlement accounts, which net to zero.
fn assert_settles_cleanly(c: &Cluster, id: u128) {
    let settled = c.settle(Duration::from_secs(10));
    assert!(
        settled && c.failure().is_none(),
        "the cluster did not settle: failure {:?}, transfer {id} is {:?}",
        c.failure(),
        c.transfer_state(id).unwrap()
    );
    let state = c.transfer_state(id).unwrap().expect("a cross-shard record");
    assert!(state.is_final(), "{state:?}");
    assert_eq!(settlement(c), (0, 0), "settlement accounts (net, pending)");
}

// ---------------------------------------------------------------------------
// 1. A participant's `Prepare` handler is idempotent by transfer id only.

/// Transfer ids are unique per shard, not per cluster: two coordinators
/// can each accept a transfer with the same id. The credit shard then
/// answers the second `Prepare` with the first one's vote (it looks up its
/// leg by id alone and never compares the transfer or the coordinator), so
/// the second transfer commits with no credit leg: the debit is taken, the
/// credit never made, and the settlement accounts no longer net to zero.
#[test]
fn a_transfer_id_reused_by_another_coordinator_never_commits_without_its_credit_leg() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::open(dir.path(), options(3)).unwrap();
    // Modulo placement: 3 on shard 0, 4 on shard 1, 2 on shard 2.
    c.create_accounts(&[account(2), account(3), account(4)])
        .unwrap();
    let first = transfer(100, 3, 2, 10);
    assert_eq!(
        c.create_transfers(&[first]).unwrap(),
        vec![CreateTransferResult::Ok]
    );
    // The same id from another debit account, on another shard.
    let second = transfer(100, 4, 2, 10);
    let r = c.create_transfers(&[second]).unwrap()[0];
    let credited = c.lookup_accounts(&[2]).unwrap()[0].credits_posted;
    let debited = c.lookup_accounts(&[4]).unwrap()[0].debits_posted;
    if r == CreateTransferResult::Ok {
        assert_eq!(
            credited, 20,
            "the second transfer 100 got Ok and debited account 4 by {debited}, but account 2 was credited only once"
        );
    } else {
        assert_eq!(debited, 0, "refused ({r:?}) yet account 4 was debited");
    }
    assert_eq!(settlement(&c), (0, 0), "settlement accounts (net, pending)");
}

/// The waiters in `api.rs` are keyed by transfer id alone. Two transfers
/// of one call that share an id but have different coordinators are both
/// initiated (each shard checks ids only against itself), and both entries
/// then read the one slot: whichever outcome lands there first is
/// reported for both, so one transfer gets the other's result (and the
/// call can return before the other transfer is final).
#[test]
fn two_transfers_sharing_an_id_in_one_call_each_get_their_own_result() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::open(dir.path(), options(4)).unwrap();
    // Modulo: 4 on shard 0, 5 on shard 1, 2 on shard 2, 3 on shard 3;
    // 3 may not be credited beyond its debits.
    let limited = Account {
        flags: AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
        ..account(3)
    };
    c.create_accounts(&[account(2), limited, account(4), account(5)])
        .unwrap();
    let batch = [transfer(100, 4, 2, 10), transfer(100, 5, 3, 10)];
    let rs = c.create_transfers(&batch).unwrap();
    // (The call may return before both are final: see the message.)
    assert!(c.settle(Duration::from_secs(10)), "{:?}", c.failure());
    for (t, r) in batch.iter().zip(&rs) {
        let debited = c.lookup_accounts(&[t.debit_account_id]).unwrap()[0].debits_posted;
        let credited = c.lookup_accounts(&[t.credit_account_id]).unwrap()[0].credits_posted;
        let applied = (debited, credited) == (t.amount, t.amount);
        assert_eq!(
            *r == CreateTransferResult::Ok,
            applied,
            "{t:?} got {r:?} but its accounts moved by (debit {debited}, credit {credited}); all results {rs:?}"
        );
    }
}

// ---------------------------------------------------------------------------
// 2. The legs replace fields that the ledger would have checked.

/// On one shard a plain transfer with a timeout, or with a pending id, is
/// refused (`TimeoutReservedForPendingTransfer`, `PendingIdMustBeZero`).
/// Between shards `leg_of` overwrites both fields with 0 before the ledger
/// sees them, so the same transfer commits: the result depends on where
/// the accounts happen to live.
#[test]
fn a_cross_shard_transfer_is_validated_like_a_same_shard_one() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::open(dir.path(), options(2)).unwrap();
    // 1 and 3 on shard 1, 2 on shard 0.
    c.create_accounts(&[account(1), account(2), account(3)])
        .unwrap();
    let timed = |id, cr| Transfer {
        timeout: 5,
        ..transfer(id, 1, cr, 1)
    };
    let with_pending_id = |id, cr| Transfer {
        pending_id: 77,
        ..transfer(id, 1, cr, 1)
    };
    let local = c
        .create_transfers(&[timed(10, 3), with_pending_id(11, 3)])
        .unwrap();
    assert_eq!(
        local,
        vec![
            CreateTransferResult::TimeoutReservedForPendingTransfer,
            CreateTransferResult::PendingIdMustBeZero
        ]
    );
    let cross = c
        .create_transfers(&[timed(20, 2), with_pending_id(21, 2)])
        .unwrap();
    assert_eq!(cross, local, "the same transfers between shards");
}

/// A transfer refused for its credit account, then sent again, then sent
/// corrected under the same id gets one ledger's codes: a refusal that
/// depends on no state (a credit id 0 or `u128::MAX`) spends no id; one
/// that depends on state that may change (the account missing, closed,
/// or at its limit) spends it (`IdAlreadyFailed`). The one documented
/// difference: a credit account on another ledger is found out by the
/// credit shard, after the debit shard's leg took the id. Before, every
/// corrected transfer here got `ExistsWithDifferentCreditAccountId` (an
/// outside review's table).
#[test]
fn a_credit_side_refusal_spends_the_id_as_on_one_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let on = |id, ledger, flags| Account {
        ledger,
        ..common::account(id, flags)
    };
    // Modulo 4: 1 on shard 1, 2 and 6 and 10 on shard 2, 3 and 7 on
    // shard 3.
    let accounts = [
        on(1, 1, AccountFlags::empty()),
        on(2, 2, AccountFlags::empty()),
        on(3, 1, AccountFlags::empty()),
        on(6, 1, AccountFlags::CLOSED),
        on(10, 1, AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS),
    ];
    let l = Ledger::open(dir.path().join("l"), LedgerOptions::default()).unwrap();
    assert!(
        l.create_accounts(&accounts)
            .unwrap()
            .iter()
            .all(|r| *r == mvledger::CreateAccountResult::Ok)
    );
    let c = Cluster::open(dir.path().join("c"), options(4)).unwrap();
    assert!(
        c.create_accounts(&accounts)
            .unwrap()
            .iter()
            .all(|r| *r == mvledger::CreateAccountResult::Ok)
    );
    for (k, credit) in [0, u128::MAX, 7, 6, 10, 2].into_iter().enumerate() {
        let id = 100 + k as u128;
        let wrong = transfer(id, 1, credit, 5);
        let fixed = transfer(id, 1, 3, 5);
        let codes =
            |call: &dyn Fn(Transfer) -> CreateTransferResult| [wrong, wrong, fixed].map(call);
        let single = codes(&|t| l.create_transfers(&[t]).unwrap()[0]);
        let cluster = codes(&|t| c.create_transfers(&[t]).unwrap()[0]);
        if credit == 2 {
            assert_eq!(single[..2], cluster[..2], "credit {credit}");
            assert_eq!(
                (single[2], cluster[2]),
                (
                    CreateTransferResult::Ok,
                    CreateTransferResult::ExistsWithDifferentCreditAccountId
                ),
                "credit {credit}: the documented difference"
            );
        } else {
            assert_eq!(single, cluster, "credit {credit}");
        }
    }
    let balance = |id| c.lookup_accounts(&[id]).unwrap()[0];
    assert_eq!(balance(1).debits_posted, 10, "the two corrected transfers");
    assert_eq!(balance(3).credits_posted, 10);
    assert_eq!(settlement(&c), (0, 0));
}

/// The documented difference of a call with a cross-shard transfer that
/// its credit shard refuses: its debit leg's reservation (made before the
/// vote) is seen by the transfers after it on its shard, so a later one
/// beyond the debit limit is refused, where one ledger would take it; no
/// limit breaks, and once the call returns the reservation is released
/// and a new transfer goes through.
#[test]
fn a_refused_cross_shard_transfer_holds_its_amount_until_the_call_is_decided() {
    let dir = tempfile::tempdir().unwrap();
    // Modulo 4: 1 and 5 on shard 1, 2 and 6 on shard 2.
    let limited = common::account(2, AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS);
    let accounts = [account(1), limited, account(5), account(6)];
    let c = Cluster::open(dir.path(), options(4)).unwrap();
    assert!(
        c.create_accounts(&accounts)
            .unwrap()
            .iter()
            .all(|r| *r == mvledger::CreateAccountResult::Ok)
    );
    // 30 credits on account 2.
    assert_eq!(
        c.create_transfers(&[transfer(10, 6, 2, 30)]).unwrap(),
        [CreateTransferResult::Ok]
    );
    // 2 -> 9 (9 unknown, on shard 1: a cross-shard transfer its credit
    // shard refuses), then 2 -> 6 for the same 30, same shard.
    let results = c
        .create_transfers(&[transfer(11, 2, 9, 30), transfer(12, 2, 6, 30)])
        .unwrap();
    assert_eq!(
        results,
        [
            CreateTransferResult::CreditAccountNotFound,
            CreateTransferResult::ExceedsCredits
        ],
        "the second sees the first's reservation (one ledger: [CreditAccountNotFound, Ok])"
    );
    let a2 = c.lookup_accounts(&[2]).unwrap()[0];
    assert_eq!((a2.debits_pending, a2.debits_posted), (0, 0), "released");
    assert_eq!(
        c.create_transfers(&[transfer(13, 2, 6, 30)]).unwrap(),
        [CreateTransferResult::Ok],
        "in a later call it goes through"
    );
    let a2 = c.lookup_accounts(&[2]).unwrap()[0];
    assert_eq!((a2.debits_posted, a2.credits_posted), (30, 30));
    assert_eq!(settlement(&c), (0, 0));
}

// ---------------------------------------------------------------------------
// 3. A leg that voted yes must be postable when the decision comes.

/// The credit leg is prepared and has voted yes; before the decision
/// reaches its shard, the user tries to close the credit account (a
/// same-shard closing transfer, which the cluster used to accept). The ledger refuses to
/// post anything to a closed account, so the commit decision cannot be
/// applied: `expect_settled` calls the shard damaged and its thread stops,
/// on every restart, while the debit leg is already posted on the other
/// shard. (The gate makes the interleaving deterministic: it stops the
/// coordinator's commit of the decision, so the decision arrives only after
/// the reopen.)
#[test]
fn closing_the_credit_account_while_its_leg_is_in_doubt_does_not_wedge_the_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let id = 500;
    {
        let c = Cluster::open(dir.path(), gated_options(2, &gate)).unwrap();
        // 2 on shard 0 (debit, coordinator); 1 and 3 on shard 1.
        c.create_accounts(&[account(1), account(2), account(3)])
            .unwrap();
        // Warm up: both settlement accounts exist afterwards.
        assert_eq!(
            c.create_transfers(&[transfer(400, 2, 1, 1)]).unwrap(),
            vec![CreateTransferResult::Ok]
        );
        // Shard 0 may commit the initiation, not the decision.
        gate.arm(&dir.path().join("shard-0"), 1);
        let r = c.create_transfers(&[transfer(id, 2, 1, 10)]);
        assert!(matches!(r, Err(Error::Poisoned)), "{r:?}");
        let on_b = c.shard(1).unwrap().lookup_accounts(&[1]).unwrap()[0];
        assert_eq!(on_b.credits_pending, 10, "the credit leg is prepared");
        // Shard 1 is healthy: the user closes account 1 there.
        let closing = Transfer {
            flags: TransferFlags::PENDING | TransferFlags::CLOSING_CREDIT,
            ..transfer(501, 3, 1, 1)
        };
        // The fix: a cluster refuses closing transfers (a leg waiting for
        // its decision must stay postable), and changes nothing.
        let r = c.create_transfers(&[closing]);
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    }
    let c = Cluster::open(dir.path(), options(2)).unwrap();
    assert_settles_cleanly(&c, id);
}

/// The mirror case on the coordinator: its debit leg is reserved and
/// `Prepare` is on its way when the user closes the debit account. The yes
/// vote then makes the coordinator post its debit leg, which the ledger
/// refuses (`DebitAccountAlreadyClosed`): the coordinator's thread stops,
/// on every restart, and the credit leg stays in doubt forever. (The gate
/// stops the credit shard's first commit, so the vote comes only after the
/// reopen.)
#[test]
fn closing_the_debit_account_while_its_leg_is_preparing_does_not_wedge_the_transfer() {
    let dir = tempfile::tempdir().unwrap();
    let gate = Arc::new(Gate::default());
    let id = 600;
    {
        let c = Cluster::open(dir.path(), gated_options(2, &gate)).unwrap();
        // 2 and 4 on shard 0 (debit, coordinator); 1 on shard 1.
        c.create_accounts(&[account(1), account(2), account(4)])
            .unwrap();
        assert_eq!(
            c.create_transfers(&[transfer(400, 2, 1, 1)]).unwrap(),
            vec![CreateTransferResult::Ok]
        );
        // Shard 1 commits nothing more: the credit leg is not prepared.
        gate.arm(&dir.path().join("shard-1"), 0);
        let r = c.create_transfers(&[transfer(id, 2, 1, 10)]);
        assert!(matches!(r, Err(Error::Poisoned)), "{r:?}");
        assert_eq!(
            c.transfer_state(id).unwrap(),
            Some(TransferState::Preparing)
        );
        let closing = Transfer {
            flags: TransferFlags::PENDING | TransferFlags::CLOSING_DEBIT,
            ..transfer(601, 2, 4, 1)
        };
        // The fix: a cluster refuses closing transfers (a leg waiting for
        // its decision must stay postable), and changes nothing.
        let r = c.create_transfers(&[closing]);
        assert!(matches!(r, Err(Error::InvalidArgument(_))), "{r:?}");
    }
    let c = Cluster::open(dir.path(), options(2)).unwrap();
    assert_settles_cleanly(&c, id);
}

// ---------------------------------------------------------------------------
// 4. The outbox sends before the commit is durable under lazy sync modes.

/// `ClusterOptions` accepts any `SyncMode`, but the protocol sends a
/// message as soon as the commit that owes it returns; under `Interval` (or
/// `Never`) that commit may not be durable yet. Here the credit shard syncs
/// (its interval came) and the coordinator does not before the power goes:
/// the credit is kept, the debit and the whole transfer record are gone,
/// and money was created. Either the cluster refuses a sync mode it cannot
/// be atomic under, or it stays atomic across the power loss.
#[test]
fn a_power_loss_under_interval_sync_keeps_cross_shard_transfers_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let fs = SimFs::new(7);
    let with_fs = |fs: &SimFs| {
        let mut o = options(2);
        o.ledger.engine = Options {
            sync: SyncMode::Interval(Duration::from_secs(3600)),
            fs: Arc::new(fs.clone()),
            ..Options::default()
        };
        o
    };
    let c = match Cluster::open(dir.path(), with_fs(&fs)) {
        Err(Error::InvalidArgument(_)) => return, // refused: fine
        other => other.unwrap(),
    };
    c.create_accounts(&[account(1), account(2)]).unwrap();
    for s in 0..2 {
        c.shard(s).unwrap().engine().sync().unwrap();
    }
    assert_eq!(
        c.create_transfers(&[transfer(9, 2, 1, 10)]).unwrap(),
        vec![CreateTransferResult::Ok]
    );
    // Shard 1 (credit) reaches its sync interval; shard 0 does not.
    c.shard(1).unwrap().engine().sync().unwrap();
    let survivor = fs.crash();
    drop(c);
    let c = Cluster::open(dir.path(), with_fs(&survivor)).unwrap();
    c.settle(Duration::from_secs(5));
    let debit = c.lookup_accounts(&[2]).unwrap()[0];
    let credit = c.lookup_accounts(&[1]).unwrap()[0];
    assert_eq!(
        debit.debits_posted,
        credit.credits_posted,
        "after the power loss: debit {debit:?}, credit {credit:?}, transfer {:?}",
        c.transfer_state(9).unwrap()
    );
    assert_eq!(settlement(&c), (0, 0), "settlement accounts (net, pending)");
}

// ---------------------------------------------------------------------------
// 5. `Ledger::submit_transfers_with` and its `Extra` writes.

fn ledger_options(clock: &Arc<ManualClock>) -> LedgerOptions {
    LedgerOptions {
        engine: Options::default(),
        clock: Arc::clone(clock) as _,
    }
}

/// `Extra::put` takes an empty key: `extra_key` only moves a first byte
/// into the namespace, and an empty key has none, so it is written live
/// (outside the namespace) while `decode_extra` refuses an empty key on
/// replay: the ledger cannot be opened again.
#[test]
fn an_extra_write_the_ledger_accepts_is_replayed_on_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    {
        let l = Ledger::open(dir.path(), ledger_options(&clock)).unwrap();
        let r = l.submit_transfers_with(&[], |_, extra| extra.put(b"", b"v"));
        if r.is_err() {
            return; // refused up front: fine
        }
    }
    let l = Ledger::open(dir.path(), ledger_options(&clock))
        .unwrap_or_else(|e| panic!("a ledger whose write was acknowledged fails to reopen: {e}"));
    assert_eq!(
        l.snapshot().extra_get(b"").unwrap().as_deref(),
        Some(&b"v"[..])
    );
}

/// `submit_transfers_with` promises that nothing of a call whose `f`
/// fails is written. The batch is dropped, but the in-memory expiry hint
/// is not: the call's expiry pass moved it past the pending transfers it
/// found due (and then dropped), so they no longer expire until a restart.
#[test]
fn a_failed_submit_transfers_with_leaves_due_expiries_to_expire() {
    let dir = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::new(1_000_000_000));
    let l = Ledger::open(dir.path(), ledger_options(&clock)).unwrap();
    l.create_accounts(&[account(1), account(2)]).unwrap();
    let pending = Transfer {
        flags: TransferFlags::PENDING,
        timeout: 1,
        ..transfer(10, 1, 2, 5)
    };
    assert_eq!(
        l.create_transfers(&[pending]).unwrap(),
        vec![CreateTransferResult::Ok]
    );
    clock.advance_secs(2);
    let r = l.submit_transfers_with(&[], |_, _| -> mvledger::Result<()> {
        Err(Error::InvalidArgument("the layer above gives up".into()))
    });
    assert!(r.is_err());
    assert_eq!(
        l.lookup_accounts(&[1]).unwrap()[0].debits_pending,
        5,
        "nothing of the failed call was written"
    );
    l.expire_pending().unwrap();
    assert_eq!(
        l.lookup_accounts(&[1]).unwrap()[0].debits_pending,
        0,
        "the pending transfer is past its timeout: expire_pending voids it"
    );
}

// ---------------------------------------------------------------------------
// 6. A call the cluster refuses must apply nothing.

/// `route.rs` promises that what the cluster cannot do is refused "before
/// anything is written", but the batch limit is only checked by each
/// shard's ledger, after the call was split: a call whose part for one
/// shard is over `MAX_BATCH_EVENTS` fails with `InvalidArgument` while the
/// other shards' parts are committed.
#[test]
fn a_call_refused_as_too_large_applies_nothing_on_any_shard() {
    let dir = tempfile::tempdir().unwrap();
    let c = Cluster::open(dir.path(), options(2)).unwrap();
    // 1 and 3 on shard 1; 2 and 4 on shard 0.
    c.create_accounts(&[account(1), account(2), account(3), account(4)])
        .unwrap();
    let mut batch = vec![transfer(1, 3, 1, 1)];
    batch.extend(
        (0..=mvledger::ledger::MAX_BATCH_EVENTS as u128).map(|k| transfer(10 + k, 2, 4, 1)),
    );
    match c.create_transfers(&batch) {
        Err(e) => {
            let a = c.lookup_accounts(&[1]).unwrap()[0];
            assert_eq!(
                a.credits_posted, 0,
                "the call failed ({e}) yet its transfer on shard 1 was applied"
            );
        }
        // Split into ledger-sized batches instead: one result each.
        Ok(rs) => assert_eq!(rs.len(), batch.len()),
    }
}
