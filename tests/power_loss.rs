//! Simulated power loss (issue 5, item 1, with the I/O faults of item 2;
//! ARCHITECTURE.md invariants 3, 4 and 6). Random workloads run on
//! `SimFs` (`src/wal/sim.rs`) seen through `FaultyFs`; the power is cut at
//! random points, between operations and inside them (at any file-system
//! call, recovery's own included), single calls fail now and then (open,
//! write, short write, sync, directory sync, rename, read, remove,
//! truncate), and the engine is reopened on what survived (or, after a
//! fault, on the files as left), again and again on the same machine.
//! After every reopen:
//! - every acknowledged commit is there: under `SyncMode::Always` each one
//!   that returned `Ok`; under any mode everything up to the `durable_ts`
//!   the engine reported (after `sync`, a checkpoint or a clean close);
//! - nothing else is, and the state is a prefix of the commit order: it is
//!   exactly the model's state after some prefix of the commits attempted
//!   (the one a cut or a fault interrupted may be there, whole, or not at
//!   all), and the engine's visible timestamp is that prefix's last;
//! - for the ledger, the state is the serial model's (`tests/model`) after
//!   the calls that are there: every account, every transfer ever
//!   submitted, every account's history and balances; every result code
//!   matched the model when the call returned; and the invariants hold
//!   (debits equal credits, posted and pending; balance limits);
//! - only a cut or a fault ever failed a call, with `Io` or `Poisoned`.
//!
//! A crash leaves, at random, nothing that was not synced, or a torn prefix
//! of it (then maybe zeros), and a prefix or any subset of the directory
//! changes that no `sync_dir` covered. Segments are 4 KiB, so the log
//! rotates every few commits; checkpoints, GC, explicit syncs and clean
//! reopens are among the operations. Besides the random workloads: the
//! power cut at every single call of a fixed workload in turn, concurrent
//! committers cut off mid-group, and small tests of each scenario the
//! workloads found.
//!
//! 200 crashes per workload by default (a few seconds); set
//! `MVLEDGER_CRASH_ITERATIONS` for more, and `MVLEDGER_CRASH_SEED` to try
//! other runs (the default seed is fixed, so that a failure repeats). Run
//! with `--nocapture` to see the counts.

mod common;
mod model;

use common::dump;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use model::{Model, check_invariants};
use mvledger::wal::sim::Torn;
use mvledger::wal::{FaultyFs, FileSystem, Op, SimFs};
use mvledger::{
    Account, AccountFilter, AccountFilterFlags, AccountFlags, Clock, Engine, Error, Ledger,
    LedgerOptions, ManualClock, Options, SyncMode, Transfer, TransferFlags,
};

const DIR: &str = "/db";
const SEGMENT_BYTES: u64 = 4096;

fn iterations() -> u64 {
    std::env::var("MVLEDGER_CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200)
}

fn seed() -> u64 {
    std::env::var("MVLEDGER_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_cafe)
}

/// splitmix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    /// What the next crash keeps of the unsynced part. `Torn::Garbage`
    /// too: stale bytes where a new segment's header was being written
    /// leave a last segment no longer than a header, which held no record
    /// (the header is synced before any goes in), and `open` removes it.
    fn torn(&mut self) -> Torn {
        match self.below(5) {
            0 => Torn::Nothing,
            1 => Torn::Prefix,
            2 => Torn::Zeros,
            3 => Torn::Garbage,
            _ => Torn::Reordered,
        }
    }
}

/// A simulated machine on which the data directory was made durable
/// beforehand, as an installer (or an earlier run) leaves it; see
/// `a_new_data_directory_survives_a_power_cut` for a directory the engine
/// creates itself.
fn machine(seed: u64) -> SimFs {
    let fs = SimFs::new(seed);
    fs.create_dir_all(Path::new(DIR)).unwrap();
    fs.sync_dir(Path::new("/")).unwrap();
    fs
}

fn engine_options(fs: &(impl FileSystem + Clone), sync: SyncMode) -> Options {
    Options {
        fs: Arc::new(fs.clone()),
        sync,
        segment_bytes: SEGMENT_BYTES,
        ..Options::default()
    }
}

/// Only a power cut (or an injected fault) may fail a call: the error is
/// `Io` (the call that met it, or a later one) or `Poisoned`.
fn assert_power_cut_error(fs: &SimFs, e: &Error, what: &str) {
    assert!(
        fs.is_off() && matches!(e, Error::Io(_) | Error::Poisoned),
        "{what} failed with the power on or with an unexpected error: {e:?}"
    );
}

/// The machine the random workloads run on: a `SimFs` seen through a
/// `FaultyFs`, so that besides the power cuts single calls can fail (issue
/// 5, item 2: the engine must then return an error or poison itself, and
/// acknowledge nothing that is not durable).
struct Machine {
    sim: SimFs,
    faulty: FaultyFs,
    /// Faults injected before the one armed now.
    faults_before: u64,
}

/// The kinds of call a fault is injected into.
const FAULTS: [Op; 9] = [
    Op::Open,
    Op::Write,
    Op::ShortWrite,
    Op::Sync,
    Op::SyncDir,
    Op::Rename,
    Op::Read,
    Op::Remove,
    Op::Truncate,
];

impl Machine {
    fn new(seed: u64) -> Self {
        let sim = machine(seed);
        let faulty = FaultyFs::new(Arc::new(sim.clone()));
        Machine {
            sim,
            faulty,
            faults_before: 0,
        }
    }

    fn options(&self, sync: SyncMode) -> Options {
        engine_options(&self.faulty, sync)
    }

    /// Arms, at random, a power cut within `calls` calls from now, a fault
    /// in one of the next few calls of a random kind, both or neither.
    fn arm(&mut self, rng: &mut Rng, calls: u64) {
        self.faults_before = self.faulty.injected();
        let armed = rng.below(6);
        if armed >= 3 {
            self.sim.cut_power_after(1 + rng.below(calls));
        }
        if armed == 1 || armed == 2 || armed == 5 {
            let op = FAULTS[rng.below(FAULTS.len() as u64) as usize];
            self.faulty.fail_nth(op, 1 + rng.below(4));
        }
    }

    fn disarm(&self) {
        self.sim.disarm();
        self.faulty.clear();
    }

    /// Whether the armed fault was injected.
    fn faulted(&self) -> bool {
        self.faulty.injected() > self.faults_before
    }

    /// Only a power cut or the armed fault may fail a call: the error is
    /// `Io` (the call that met it, or a later one) or `Poisoned`.
    fn assert_failure(&self, e: &Error, what: &str) {
        assert!(
            (self.sim.is_off() || self.faulted()) && matches!(e, Error::Io(_) | Error::Poisoned),
            "{what} failed with neither a power cut nor a fault, or with an unexpected \
             error: {e:?}"
        );
    }

    /// Cuts the power: from now on the engine runs on what survived.
    fn crash(&mut self, rng: &mut Rng) {
        self.sim.set_torn(rng.torn());
        self.sim = self.sim.crash();
        self.faulty = FaultyFs::new(Arc::new(self.sim.clone()));
        self.faults_before = 0;
    }
}

/// Counts of what a workload ran.
#[derive(Debug, Default)]
struct Counts {
    /// Power cuts, each followed by a reopen.
    crashes: u64,
    /// Of those, cuts inside an operation (its call failed).
    inside_operations: u64,
    /// Of those, cuts during a reopen (recovery).
    during_recovery: u64,
    /// Faults injected (a failed or short call, the power on).
    faults: u64,
    /// Reopens on the files a fault left, without a power cut.
    reopens_after_faults: u64,
    /// Commits (or ledger calls) acknowledged.
    acknowledged: u64,
    /// Reopens after a clean close.
    clean_reopens: u64,
}

/// Opens with `open` after a crash or a fault, with a power cut or a fault
/// during recovery now and then (then crashing, or not, and trying again),
/// until it succeeds.
fn reopen<T>(
    machine: &mut Machine,
    rng: &mut Rng,
    counts: &mut Counts,
    what: &str,
    open: impl Fn(&Machine) -> mvledger::Result<T>,
) -> T {
    loop {
        if rng.one_in(3) {
            machine.arm(rng, 40);
        }
        let opened = open(machine);
        let faulted = machine.faulted();
        counts.faults += u64::from(faulted);
        machine.disarm();
        match opened {
            Ok(opened) => return opened,
            Err(e) => {
                machine.assert_failure(&e, what);
                if machine.sim.is_off() {
                    counts.crashes += 1;
                    counts.during_recovery += 1;
                    machine.crash(rng);
                } else {
                    // A failed recovery is recovered from in turn.
                    counts.reopens_after_faults += 1;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Key-value workload.

type State = BTreeMap<Vec<u8>, Vec<u8>>;
type Writes = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// What the engine may hold after a crash: the state after each commit from
/// the last one known durable on.
struct KvModel {
    /// `(ts, state after it)`, ascending by ts; the first is durable.
    states: Vec<(u64, State)>,
}

impl KvModel {
    fn new() -> Self {
        KvModel {
            states: vec![(0, State::new())],
        }
    }

    fn latest(&self) -> &(u64, State) {
        self.states.last().expect("at least the durable state")
    }

    fn after(&self, writes: &Writes) -> (u64, State) {
        let (ts, state) = self.latest();
        let mut state = state.clone();
        for (key, value) in writes {
            match value {
                Some(v) => state.insert(key.clone(), v.clone()),
                None => state.remove(key),
            };
        }
        (ts + 1, state)
    }

    /// A commit returned `ts`.
    fn committed(&mut self, ts: u64, writes: &Writes) {
        let next = self.after(writes);
        assert_eq!(ts, next.0, "commit timestamps are not consecutive");
        self.states.push(next);
    }

    /// A commit failed (a power cut): it may be there after the crash.
    fn interrupted(&mut self, writes: &Writes) {
        let next = self.after(writes);
        self.states.push(next);
    }

    /// The engine says every commit up to `ts` is durable.
    fn durable(&mut self, ts: u64) {
        let at = self.states.iter().position(|s| s.0 == ts);
        let at = at.unwrap_or_else(|| panic!("durable_ts {ts} is no commit made"));
        self.states.drain(..at);
    }

    /// The engine reopened with `state` at visible `ts`: it must be one of
    /// the states allowed, which becomes the durable one.
    fn recovered(&mut self, ts: u64, state: &State, when: &str) {
        let lowest = self.states[0].0;
        let at = self.states.iter().position(|s| s.0 == ts);
        let Some(at) = at else {
            panic!(
                "{when}: recovered to ts {ts}, but only ts {lowest} ..= {} are allowed \
                 (below: acknowledged commits lost; above: commits never made)",
                self.latest().0
            );
        };
        if self.states[at].1 != *state {
            let want = &self.states[at].1;
            let wrong: Vec<_> = want
                .keys()
                .chain(state.keys())
                .filter(|k| want.get(*k) != state.get(*k))
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            panic!("{when}: the state at ts {ts} differs from the commits up to it at {wrong:?}");
        }
        self.states.drain(..at);
        self.states.truncate(1);
    }
}

fn check_recovered(engine: &Engine, model: &mut KvModel, when: &str) {
    let stats = engine.stats();
    model.recovered(stats.visible_ts, &dump(engine), when);
    assert_eq!(
        stats.durable_ts, stats.visible_ts,
        "{when}: reopened with records not durable"
    );
}

/// 1 to 4 writes on 48 keys; values up to 600 bytes, so that the log
/// rotates every few commits; one write in five deletes.
fn random_writes(rng: &mut Rng, ts: u64) -> Writes {
    (0..1 + rng.below(4))
        .map(|_| {
            let key = format!("key-{:02}", rng.below(48)).into_bytes();
            let value = (!rng.one_in(5)).then(|| {
                let mut v = format!("ts {ts} ").into_bytes();
                v.resize(v.len() + rng.below(600) as usize, b'a' + (ts % 26) as u8);
                v
            });
            (key, value)
        })
        .collect()
}

/// One random operation on the engine; an error only from a power cut.
fn kv_step(
    engine: &Engine,
    model: &mut KvModel,
    rng: &mut Rng,
    sync: SyncMode,
    counts: &mut Counts,
) -> mvledger::Result<()> {
    let ts = model.latest().0 + 1;
    match rng.below(100) {
        0..=74 => {
            let writes = random_writes(rng, ts);
            let committed = if rng.one_in(4) {
                engine
                    .apply(|batch| {
                        for (key, value) in &writes {
                            match value {
                                Some(v) => batch.put(key, v)?,
                                None => batch.delete(key)?,
                            }
                        }
                        Ok(())
                    })
                    .map(|(ts, ())| ts)
            } else {
                let mut txn = engine.begin();
                for (key, value) in &writes {
                    match value {
                        Some(v) => txn.put(key, v)?,
                        None => txn.delete(key)?,
                    }
                }
                txn.commit()
            };
            match committed {
                Ok(ts) => {
                    model.committed(ts, &writes);
                    counts.acknowledged += 1;
                    if sync == SyncMode::Always {
                        assert!(
                            engine.stats().durable_ts >= ts,
                            "commit {ts} returned before it was durable"
                        );
                    }
                }
                Err(e) => {
                    model.interrupted(&writes);
                    return Err(e);
                }
            }
        }
        75..=82 => engine.checkpoint()?,
        83..=87 => engine.gc(),
        88..=92 => engine.sync()?,
        _ => {
            let (ts, state) = model.latest();
            assert_eq!(engine.snapshot().ts(), *ts);
            assert_eq!(
                dump(engine),
                *state,
                "the live state differs from the model"
            );
        }
    }
    model.durable(engine.stats().durable_ts);
    Ok(())
}

#[test]
fn acknowledged_commits_survive_random_power_cuts() {
    let seed = seed();
    let mut rng = Rng(seed);
    let mut counts = Counts::default();
    let mut machine = Machine::new(rng.next());
    let mut model = KvModel::new();
    let mut sync = SyncMode::Always;
    let open = |machine: &Machine, sync| Engine::open(DIR, machine.options(sync));
    let mut engine = Some(open(&machine, sync).unwrap());
    for crash in 0..iterations() {
        let when = format!("crash {crash} (MVLEDGER_CRASH_SEED={seed})");
        let steps = rng.below(30);
        // Most often inside one of the steps, else between them.
        machine.arm(&mut rng, 3 * steps + 4);
        for _ in 0..steps {
            let Some(live) = &engine else { break };
            if rng.one_in(40) {
                // A clean close and reopen: nothing may be lost.
                machine.faulty.clear();
                engine = None;
                if machine.sim.is_off() {
                    break;
                }
                model.durable(model.latest().0);
                sync = if rng.one_in(4) {
                    SyncMode::Never
                } else {
                    SyncMode::Always
                };
                match open(&machine, sync) {
                    Ok(reopened) => {
                        check_recovered(&reopened, &mut model, &format!("{when}, clean reopen"));
                        counts.clean_reopens += 1;
                        engine = Some(reopened);
                    }
                    Err(e) => assert_power_cut_error(&machine.sim, &e, "a clean reopen"),
                }
                continue;
            }
            if let Err(e) = kv_step(live, &mut model, &mut rng, sync, &mut counts) {
                machine.assert_failure(&e, "an operation");
                counts.inside_operations += u64::from(machine.sim.is_off());
                break;
            }
        }
        let faulted = machine.faulted();
        counts.faults += u64::from(faulted);
        machine.disarm();
        if faulted && !machine.sim.is_off() && rng.one_in(2) {
            // Reopen on the files as the fault left them: a poisoned engine
            // writes nothing more as it closes.
            drop(engine.take());
            counts.reopens_after_faults += 1;
        } else {
            // The power goes; the engine dies with it (its closing flush
            // fails, as the machine is off).
            machine.crash(&mut rng);
            drop(engine.take());
            counts.crashes += 1;
        }
        let reopened = reopen(&mut machine, &mut rng, &mut counts, &when, |m| {
            open(m, sync)
        });
        check_recovered(&reopened, &mut model, &when);
        engine = Some(reopened);
    }
    println!("key-value workload, MVLEDGER_CRASH_SEED={seed}: {counts:?}");
    assert!(counts.inside_operations > 0 && counts.during_recovery > 0 && counts.faults > 0);
}

/// One commit of the scripted workload: two keys, about 900 bytes, so
/// that the log rotates every few commits.
fn scripted_commit(engine: &Engine, model: &mut KvModel) -> mvledger::Result<()> {
    let ts = model.latest().0 + 1;
    let writes: Writes = vec![
        (
            format!("key-{}", ts % 7).into_bytes(),
            Some(vec![ts as u8; 900]),
        ),
        (b"last".to_vec(), Some(ts.to_string().into_bytes())),
    ];
    let mut txn = engine.begin();
    for (key, value) in &writes {
        txn.put(key, value.as_ref().expect("puts only"))?;
    }
    match txn.commit() {
        Ok(ts) => {
            model.committed(ts, &writes);
            model.durable(ts);
            Ok(())
        }
        Err(e) => {
            model.interrupted(&writes);
            Err(e)
        }
    }
}

/// A fixed workload: commits that rotate the log, three checkpoints (the
/// third removes the first), a clean close and a reopen. Stops at the first
/// error, which only a power cut or a fault may cause.
fn scripted_workload(fs: &(impl FileSystem + Clone), model: &mut KvModel) -> mvledger::Result<()> {
    let open = || Engine::open(DIR, engine_options(fs, SyncMode::Always));
    let engine = open()?;
    for round in 0..3 {
        for _ in 0..[8, 5, 5][round] {
            scripted_commit(&engine, model)?;
        }
        engine.checkpoint()?;
    }
    scripted_commit(&engine, model)?;
    drop(engine);
    let engine = open()?;
    scripted_commit(&engine, model)?;
    scripted_commit(&engine, model)
}

/// The power cut at every single file-system call of `scripted_workload`
/// in turn, under every `Torn` mode with a few seeds each: a crash point
/// the random workloads reach only by chance (a checkpoint's rename not yet
/// durable while the segments it covers are being removed, say) is tried
/// here for sure.
#[test]
fn every_crash_point_of_a_scripted_workload_recovers() {
    let calls = {
        let fs = machine(0);
        let before = fs.calls();
        scripted_workload(&fs, &mut KvModel::new()).unwrap();
        fs.calls() - before
    };
    let mut crashes = 0;
    for at in 1..=calls {
        for torn in [
            Torn::Nothing,
            Torn::Prefix,
            Torn::Zeros,
            Torn::Garbage,
            Torn::Reordered,
        ] {
            let seeds = if torn == Torn::Nothing { 1 } else { 2 };
            for seed in 0..seeds {
                let fs = machine(seed).with_torn(torn);
                let mut model = KvModel::new();
                fs.cut_power_after(at);
                match scripted_workload(&fs, &mut model) {
                    Err(e) => assert_power_cut_error(&fs, &e, "the scripted workload"),
                    // The cut came in the final close (flushing, cutting
                    // the zeros laid ahead), which has no caller to tell.
                    Ok(()) => assert!(fs.is_off(), "the cut at call {at} never came"),
                }
                let fs = fs.crash();
                let when = format!("cut at call {at} of {calls}, {torn:?}, seed {seed}");
                let engine = Engine::open(DIR, engine_options(&fs, SyncMode::Always))
                    .unwrap_or_else(|e| panic!("{when}: reopen failed: {e:?}"));
                check_recovered(&engine, &mut model, &when);
                crashes += 1;
            }
        }
    }
    println!("scripted workload: {calls} crash points, {crashes} crashes");
}

/// A fault at every single call of each kind of `scripted_workload` in
/// turn (issue 5, item 2): the call that meets it fails with `Io` (or a
/// later one with `Poisoned`), and a reopen on the files as left recovers
/// every acknowledged commit and nothing never attempted; commits
/// acknowledged after that reopen then survive a power cut.
#[test]
fn every_fault_point_of_a_scripted_workload_recovers() {
    let counted = FaultyFs::new(Arc::new(machine(0)));
    scripted_workload(&counted, &mut KvModel::new()).unwrap();
    let mut faults = 0;
    for op in FAULTS {
        // A short write is counted with the writes.
        let kind = if op == Op::ShortWrite { Op::Write } else { op };
        for n in 1..=counted.calls(kind) {
            let when = format!("{op:?} fault at call {n} of {}", counted.calls(kind));
            let sim = machine(0);
            let faulty = FaultyFs::new(Arc::new(sim.clone()));
            faulty.fail_nth(op, n);
            let mut model = KvModel::new();
            if let Err(e) = scripted_workload(&faulty, &mut model) {
                assert!(
                    faulty.injected() == 1 && matches!(e, Error::Io(_) | Error::Poisoned),
                    "{when}: the workload failed with {e:?}"
                );
            }
            faults += faulty.injected();
            let engine = Engine::open(DIR, engine_options(&sim, SyncMode::Always))
                .unwrap_or_else(|e| panic!("{when}: the reopen failed: {e:?}"));
            check_recovered(&engine, &mut model, &format!("{when}, files as left"));
            for _ in 0..6 {
                scripted_commit(&engine, &mut model).unwrap();
            }
            let after = sim.crash();
            drop(engine);
            let engine = Engine::open(DIR, engine_options(&after, SyncMode::Always))
                .unwrap_or_else(|e| panic!("{when}, then a power cut: the reopen failed: {e:?}"));
            check_recovered(&engine, &mut model, &format!("{when}, then a power cut"));
        }
    }
    println!("scripted workload: {faults} faults injected");
}

// ---------------------------------------------------------------------------
// Ledger workload.

/// Account ids 1 ..= 9 exist (once created); 10 never does.
const ACCOUNT_IDS: u64 = 10;

fn account(id: u128) -> Account {
    let flags = match id {
        1 => AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
        2 => AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS | AccountFlags::HISTORY,
        3 => AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
        4 => AccountFlags::HISTORY,
        _ => AccountFlags::empty(),
    };
    Account {
        id,
        ledger: if id == 9 { 2 } else { 1 },
        code: 1,
        flags,
        ..Default::default()
    }
}

/// What the ledger may hold after a crash.
struct LedgerRun {
    clock: Arc<ManualClock>,
    /// The state after the last acknowledged call.
    model: Model,
    /// The engine timestamp of that state.
    acked_ts: u64,
    /// The state had the call a power cut interrupted gone through.
    interrupted: Option<Model>,
    /// Every transfer id submitted.
    ids: Vec<u128>,
    /// Ids submitted as pending transfers.
    pendings: Vec<u128>,
    next_id: u128,
    /// Write calls acknowledged.
    acked_calls: u64,
}

impl LedgerRun {
    fn new(clock: Arc<ManualClock>) -> Self {
        LedgerRun {
            clock,
            model: Model::new(),
            acked_ts: 0,
            interrupted: None,
            ids: Vec::new(),
            pendings: Vec::new(),
            next_id: 1,
            acked_calls: 0,
        }
    }

    fn transfer(&mut self, rng: &mut Rng) -> Transfer {
        let id = if rng.one_in(12) && !self.ids.is_empty() {
            self.ids[rng.below(self.ids.len() as u64) as usize]
        } else {
            self.next_id += 1;
            self.next_id
        };
        self.ids.push(id);
        let pending_id = if self.pendings.is_empty() {
            id + 1
        } else {
            self.pendings[rng.below(self.pendings.len() as u64) as usize]
        };
        let mut t = Transfer {
            id,
            debit_account_id: u128::from(1 + rng.below(ACCOUNT_IDS)),
            credit_account_id: u128::from(1 + rng.below(ACCOUNT_IDS)),
            amount: u128::from(1 + rng.below(100)),
            ledger: 1,
            code: 1,
            user_data_64: rng.below(4),
            ..Default::default()
        };
        match rng.below(12) {
            0..=4 => {}
            5..=6 => {
                t.flags = TransferFlags::PENDING;
                t.timeout = rng.below(3) as u32;
                if rng.one_in(8) {
                    t.flags |= TransferFlags::CLOSING_DEBIT;
                }
                self.pendings.push(id);
            }
            7..=9 => {
                let post = rng.below(3) != 0;
                t = Transfer {
                    id,
                    pending_id,
                    amount: if rng.one_in(2) { 0 } else { t.amount / 2 },
                    flags: if post {
                        TransferFlags::POST_PENDING_TRANSFER
                    } else {
                        TransferFlags::VOID_PENDING_TRANSFER
                    },
                    ..Default::default()
                };
            }
            10 => {
                t.flags = TransferFlags::BALANCING_DEBIT;
                t.amount = if rng.one_in(2) { 0 } else { t.amount };
            }
            _ => {
                t.flags = TransferFlags::BALANCING_CREDIT;
                t.amount = if rng.one_in(2) { 0 } else { t.amount };
            }
        }
        if rng.one_in(6) {
            t.flags |= TransferFlags::LINKED;
        }
        t
    }

    /// Runs one write call through the ledger and the model: the results
    /// and timestamps must agree. An error only from a power cut, and then
    /// the model as if it went through is kept as the other possibility.
    fn write<R: PartialEq + std::fmt::Debug>(
        &mut self,
        ledger: &Ledger,
        model_call: impl FnOnce(&mut Model, u64) -> Vec<R>,
        ledger_call: impl FnOnce(&Ledger) -> mvledger::Result<(u64, u64, Vec<R>)>,
    ) -> mvledger::Result<()> {
        let mut after = self.model.clone();
        let first_ts = after.next_timestamp(self.clock.now_ns());
        let want = model_call(&mut after, first_ts);
        match ledger_call(ledger) {
            Ok((commit_ts, timestamp, results)) => {
                assert_eq!(timestamp, first_ts, "ledger timestamp");
                assert_eq!(results, want, "results differ from the model's");
                assert_eq!(commit_ts, self.acked_ts + 1, "one record per call");
                assert!(ledger.stats().durable_ts >= commit_ts);
                self.acked_ts = commit_ts;
                self.model = after;
                self.acked_calls += 1;
                Ok(())
            }
            Err(e) => {
                self.interrupted = Some(after);
                Err(e)
            }
        }
    }

    /// One random operation; an error only from a power cut.
    fn step(&mut self, ledger: &Ledger, rng: &mut Rng) -> mvledger::Result<()> {
        match rng.below(100) {
            0..=5 => {
                let batch: Vec<Account> = (0..1 + rng.below(3))
                    .map(|_| account(u128::from(1 + rng.below(ACCOUNT_IDS - 1))))
                    .collect();
                self.write(
                    ledger,
                    |m, ts| m.create_accounts(ts, &batch),
                    |l| {
                        let r = l.submit_accounts(&batch)?;
                        Ok((r.commit_ts, r.timestamp, r.results))
                    },
                )
            }
            6..=69 => {
                let batch: Vec<Transfer> =
                    (0..1 + rng.below(6)).map(|_| self.transfer(rng)).collect();
                self.write(
                    ledger,
                    |m, ts| m.create_transfers(ts, &batch),
                    |l| {
                        let r = l.submit_transfers(&batch)?;
                        Ok((r.commit_ts, r.timestamp, r.results))
                    },
                )
            }
            70..=74 => {
                // The call reports no timestamp: the model's is taken.
                let now = self.model.next_timestamp(self.clock.now_ns());
                let mut probe = self.model.clone();
                probe.expire(now);
                if probe.last_timestamp() == self.model.last_timestamp() {
                    // Nothing due: no record, nothing changes.
                    let before = ledger.stats().visible_ts;
                    ledger.expire_pending()?;
                    assert_eq!(
                        ledger.stats().visible_ts,
                        before,
                        "nothing due, nothing written"
                    );
                    return Ok(());
                }
                self.write(
                    ledger,
                    |m, ts| {
                        m.expire(ts);
                        Vec::<()>::new()
                    },
                    |l| {
                        l.expire_pending()?;
                        Ok((l.stats().visible_ts, now, Vec::new()))
                    },
                )
            }
            75..=87 => {
                self.clock.advance(rng.below(2_500_000_000));
                Ok(())
            }
            _ => ledger.checkpoint(),
        }
    }

    /// Reopened after a crash: the ledger holds the acknowledged state or
    /// the interrupted call's, whole, and nothing else.
    fn recovered(&mut self, ledger: &Ledger, when: &str) {
        let ts = ledger.stats().visible_ts;
        let interrupted = self.interrupted.take();
        if ts == self.acked_ts + 1
            && let Some(after) = interrupted
        {
            self.model = after;
            self.acked_ts = ts;
        }
        assert_eq!(
            ts, self.acked_ts,
            "{when}: recovered to ts {ts}, acknowledged up to {}",
            self.acked_ts
        );
        self.compare(ledger, when);
    }

    /// The whole ledger against the model.
    fn compare(&self, ledger: &Ledger, when: &str) {
        let snap = ledger.snapshot();
        let accounts = snap.accounts().unwrap();
        assert_eq!(accounts, self.model.accounts(), "{when}: accounts");
        check_invariants(&accounts).unwrap_or_else(|e| panic!("{when}: {e}"));
        assert_eq!(
            snap.lookup_transfers(&self.ids).unwrap(),
            self.model.lookup_transfers(&self.ids),
            "{when}: transfers"
        );
        for id in 1..=u128::from(ACCOUNT_IDS) {
            let filter = AccountFilter {
                account_id: id,
                limit: u32::MAX,
                flags: AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS,
                ..Default::default()
            };
            assert_eq!(
                snap.get_account_transfers(filter).unwrap(),
                self.model.get_account_transfers(filter),
                "{when}: history of account {id}"
            );
            assert_eq!(
                snap.get_account_balances(filter).unwrap(),
                self.model.get_account_balances(filter),
                "{when}: balances of account {id}"
            );
        }
    }
}

#[test]
fn acknowledged_ledger_batches_survive_random_power_cuts() {
    let seed = seed();
    let mut rng = Rng(seed ^ 0x1ed6e7);
    let mut counts = Counts::default();
    let iterations = iterations();
    // A fresh machine every 50 crashes keeps the ledger, and so each
    // check, small.
    let mut crash = 0;
    while crash < iterations {
        let mut machine = Machine::new(rng.next());
        let clock = Arc::new(ManualClock::new(1_700_000_000_000_000_000));
        let options = |m: &Machine| LedgerOptions {
            engine: m.options(SyncMode::Always),
            clock: Arc::clone(&clock) as Arc<dyn Clock>,
        };
        let mut run = LedgerRun::new(Arc::clone(&clock));
        let mut ledger = Some(Ledger::open(DIR, options(&machine)).unwrap());
        // A new directory's first commit is its layer stamp.
        run.acked_ts = ledger.as_ref().unwrap().stats().visible_ts;
        let all: Vec<Account> = (1..u128::from(ACCOUNT_IDS)).map(account).collect();
        run.write(
            ledger.as_ref().unwrap(),
            |m, ts| m.create_accounts(ts, &all),
            |l| {
                let r = l.submit_accounts(&all)?;
                Ok((r.commit_ts, r.timestamp, r.results))
            },
        )
        .unwrap();
        for _ in 0..50.min(iterations - crash) {
            let when = format!("crash {crash} (MVLEDGER_CRASH_SEED={seed})");
            let steps = rng.below(16);
            // Most often inside one of the steps, else between them.
            machine.arm(&mut rng, 3 * steps + 4);
            for _ in 0..steps {
                let Some(live) = &ledger else { break };
                if rng.one_in(40) {
                    machine.faulty.clear();
                    ledger = None;
                    if machine.sim.is_off() {
                        break;
                    }
                    match Ledger::open(DIR, options(&machine)) {
                        Ok(reopened) => {
                            run.compare(&reopened, &format!("{when}, clean reopen"));
                            counts.clean_reopens += 1;
                            ledger = Some(reopened);
                        }
                        Err(e) => assert_power_cut_error(&machine.sim, &e, "a clean reopen"),
                    }
                    continue;
                }
                if let Err(e) = run.step(live, &mut rng) {
                    machine.assert_failure(&e, "a ledger call");
                    counts.inside_operations += u64::from(machine.sim.is_off());
                    break;
                }
            }
            let faulted = machine.faulted();
            counts.faults += u64::from(faulted);
            machine.disarm();
            if faulted && !machine.sim.is_off() && rng.one_in(2) {
                drop(ledger.take());
                counts.reopens_after_faults += 1;
            } else {
                machine.crash(&mut rng);
                drop(ledger.take());
                counts.crashes += 1;
            }
            let reopened = reopen(&mut machine, &mut rng, &mut counts, &when, |m| {
                Ledger::open(DIR, options(m))
            });
            run.recovered(&reopened, &when);
            ledger = Some(reopened);
            crash += 1;
        }
        counts.acknowledged += run.acked_calls;
    }
    println!("ledger workload, MVLEDGER_CRASH_SEED={seed}: {counts:?}");
    assert!(counts.inside_operations > 0 && counts.during_recovery > 0 && counts.faults > 0);
}

// ---------------------------------------------------------------------------
// Concurrent committers.

/// Group commit under power cuts: several threads commit under
/// `SyncMode::Always` until a cut stops them. After the reopen every
/// acknowledged commit is there, its ts at or below the recovered one, and
/// exactly one commit per ts up to it (each commit writes one key of its
/// own): a prefix of the commit order, whichever commits shared a sync.
#[test]
fn concurrent_acknowledged_commits_survive_power_cuts() {
    const THREADS: usize = 4;
    let seed = seed();
    let mut rng = Rng(seed ^ 0xc0c0);
    let mut machine = Machine::new(rng.next());
    let open = |m: &Machine| Engine::open(DIR, m.options(SyncMode::Always));
    let mut engine = open(&machine).unwrap();
    let mut counts = Counts::default();
    let mut base = 0;
    let rounds = (iterations() / 8).max(5);
    for round in 0..rounds {
        let when = format!("round {round} (MVLEDGER_CRASH_SEED={seed})");
        machine.sim.cut_power_after(1 + rng.below(200));
        let acked: Mutex<Vec<(String, u64)>> = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let (engine, acked) = (&engine, &acked);
                s.spawn(move || {
                    for i in 0.. {
                        let key = format!("r{round}-t{t}-{i}");
                        let mut txn = engine.begin();
                        // A poisoned engine refuses the put already.
                        match txn.put(&key, [t as u8; 300]).and_then(|()| txn.commit()) {
                            Ok(ts) => acked.lock().unwrap().push((key, ts)),
                            Err(_) => break,
                        }
                    }
                });
            }
        });
        assert!(
            machine.sim.is_off(),
            "{when}: the commits stopped with the power on"
        );
        machine.crash(&mut rng);
        drop(engine);
        counts.crashes += 1;
        counts.inside_operations += 1;
        engine = reopen(&mut machine, &mut rng, &mut counts, &when, open);
        let ts = engine.stats().visible_ts;
        let state = dump(&engine);
        let acked = acked.into_inner().unwrap();
        counts.acknowledged += acked.len() as u64;
        for (key, commit_ts) in &acked {
            assert!(
                state.contains_key(key.as_bytes()) && *commit_ts <= ts,
                "{when}: acknowledged commit {key} at ts {commit_ts} is lost (recovered to ts {ts})"
            );
        }
        let this_round = format!("r{round}-");
        let present = state
            .keys()
            .filter(|k| k.starts_with(this_round.as_bytes()))
            .count() as u64;
        assert_eq!(
            present,
            ts - base,
            "{when}: {present} commits of this round for ts {base} ..= {ts}"
        );
        base = ts;
        // Keeps the log, and so each recovery, short.
        engine.checkpoint().unwrap();
    }
    println!("concurrent committers, MVLEDGER_CRASH_SEED={seed}: {counts:?}");
}

/// The data directory itself: `Engine::open` creates it when missing, and
/// an acknowledged commit in it must survive a power cut, so the new
/// directory's entry in its parent must be made durable (a `sync_dir` of
/// the parent) before anything in it is acknowledged.
#[test]
fn a_new_data_directory_survives_a_power_cut() {
    let fs = SimFs::new(1);
    let engine = Engine::open(DIR, engine_options(&fs, SyncMode::Always)).unwrap();
    let mut txn = engine.begin();
    txn.put(b"key", b"acknowledged").unwrap();
    let ts = txn.commit().unwrap();
    let after = fs.crash();
    drop(engine);
    let engine = Engine::open(DIR, engine_options(&after, SyncMode::Always)).unwrap();
    assert_eq!(
        engine.snapshot().get(b"key").unwrap().as_deref(),
        Some(&b"acknowledged"[..]),
        "commit {ts} was acknowledged in a directory the engine created, \
         but the directory did not survive the power cut"
    );
}

/// Commits keys `range`, one commit each, with values of `value_bytes`.
fn commit_range(
    engine: &Engine,
    range: std::ops::Range<u32>,
    value_bytes: usize,
) -> mvledger::Result<u64> {
    let mut ts = 0;
    for i in range {
        let mut txn = engine.begin();
        txn.put(format!("key-{i:04}"), vec![b'v'; value_bytes])?;
        ts = txn.commit()?;
    }
    Ok(ts)
}

/// Runs 5 acknowledged commits of about 300 bytes, then one of about
/// `failed_bytes` whose sync fails (its record written, never synced:
/// still in the page cache), then reopens on the files as left, without a
/// power cut. Returns the machine and the reopened engine.
fn reopen_after_failed_sync(failed_bytes: usize) -> (SimFs, Engine) {
    let sim = machine(1);
    let faulty = FaultyFs::new(Arc::new(sim.clone()));
    let engine = Engine::open(DIR, engine_options(&faulty, SyncMode::Always)).unwrap();
    assert_eq!(commit_range(&engine, 0..5, 300).unwrap(), 5);
    faulty.fail_nth(Op::Sync, 1);
    let failed = commit_range(&engine, 5..6, failed_bytes);
    assert!(matches!(failed, Err(Error::Io(_))), "{failed:?}");
    drop(engine);
    let engine = Engine::open(DIR, engine_options(&sim, SyncMode::Always)).unwrap();
    assert_eq!(engine.stats().log_segments, 1);
    (sim, engine)
}

/// After a failed sync the unsynced record is still in the file, and a
/// reopen without a power cut replays it. The reopened engine then shows
/// it and reports it durable, so it must be durable: recovery has to sync
/// what it replays before it trusts it.
#[test]
fn a_reopen_makes_the_log_it_replayed_durable_before_showing_it() {
    let (sim, engine) = reopen_after_failed_sync(300);
    let stats = engine.stats();
    let shown = engine.snapshot().scan(..).unwrap().count();
    assert_eq!(
        (stats.visible_ts, stats.durable_ts, shown),
        (6, 6, 6),
        "the reopen replayed the failed commit's record"
    );
    let after = sim.crash();
    drop(engine);
    let engine = Engine::open(DIR, engine_options(&after, SyncMode::Always)).unwrap();
    assert_eq!(
        engine.stats().visible_ts,
        6,
        "commit 6 was shown and reported durable by the reopened engine, \
         then lost in a power cut"
    );
}

/// The same reopen, the replayed record large enough that the next commit
/// starts a new segment: that commit is acknowledged, and after a power
/// cut the log must open and hold it. (The reopened engine takes the
/// replayed segment for synced, so it does not sync it before it rotates;
/// the cut takes that segment's tail but not the new segment: a gap.)
#[test]
fn a_commit_acknowledged_after_a_reopen_on_unsynced_bytes_survives_a_power_cut() {
    let (sim, engine) = reopen_after_failed_sync(2000);
    let acked = commit_range(&engine, 6..7, 300).unwrap();
    assert_eq!(engine.stats().log_segments, 2, "the log did not rotate");
    let after = sim.crash();
    drop(engine);
    match Engine::open(DIR, engine_options(&after, SyncMode::Always)) {
        Ok(engine) => assert!(
            engine.stats().visible_ts >= acked,
            "acknowledged commit {acked} lost"
        ),
        Err(e) => panic!(
            "commit {acked} was acknowledged, but after a power cut the log \
             does not open: {e:?}"
        ),
    }
}

/// A rotation whose directory sync fails, and whose new segment then
/// cannot be removed (which poisons), leaves that segment with a name
/// that is not durable; a reopen without a power cut finds it and appends
/// to it. A commit acknowledged there must survive a power cut: recovery
/// has to make the directory it found durable, too.
#[test]
fn a_commit_acknowledged_in_a_segment_found_on_reopen_survives_a_power_cut() {
    let sim = machine(1);
    let faulty = FaultyFs::new(Arc::new(sim.clone()));
    let engine = Engine::open(DIR, engine_options(&faulty, SyncMode::Always)).unwrap();
    faulty.fail_nth(Op::SyncDir, 1);
    faulty.fail_nth(Op::Remove, 1);
    let failed = commit_range(&engine, 0..100, 300);
    assert!(matches!(failed, Err(Error::Io(_))), "{failed:?}");
    let attempted = engine.stats().visible_ts + 1;
    drop(engine);
    let engine = Engine::open(DIR, engine_options(&sim, SyncMode::Always)).unwrap();
    assert_eq!(engine.stats().log_segments, 2, "the new segment is there");
    let acked = commit_range(&engine, 100..101, 300).unwrap();
    assert!(acked >= attempted);
    let after = sim.crash();
    drop(engine);
    match Engine::open(DIR, engine_options(&after, SyncMode::Always)) {
        Ok(engine) => assert!(
            engine.stats().visible_ts >= acked,
            "acknowledged commit {acked} lost: recovered to ts {}",
            engine.stats().visible_ts
        ),
        Err(e) => panic!("commit {acked} was acknowledged, but the log does not open: {e:?}"),
    }
}
