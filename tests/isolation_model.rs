//! The isolation rules against a model (issue 2, "property tests that run
//! random interleavings of transactions against a simple model"; invariants
//! 1 and 2 of ARCHITECTURE.md).
//!
//! Random interleavings of several transactions and snapshots (begin, get,
//! put, delete, scan, commit, rollback or drop), mixed with `apply`, GC,
//! checkpoints and reopening the engine, run from one thread on a small key
//! space against a model: a `BTreeMap` of the committed state, a commit
//! sequence number per key (its last write), and per transaction the
//! committed state at its begin plus its own write set, reads and scanned
//! ranges. The model decides every outcome: each read result (own writes
//! first, then the state at begin), each commit or `Error::Conflict`
//! (first committer wins on written keys; under `Serializable` also on keys
//! read and ranges scanned), commit timestamps that only grow, and the
//! final state, before and after reopening the engine.
//!
//! 128 cases by default (about two seconds in a debug build); set
//! `PROPTEST_CASES` to run more. Nine cases in ten run on the in-memory
//! file system (`wal::MemFs`; checkpoints and reopening cost several syncs
//! each on a disk), one in ten on the real one (`wal::StdFs`). Ranges are
//! always well-formed (low <= high): a reversed range is a separate
//! concern, checked in `repeatable_read.rs` and `write_skew.rs`.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mvledger::wal::{FileSystem, MemFs, StdFs};
use mvledger::{Engine, Error, Isolation, Options, Snapshot, SyncMode, Transaction};
use proptest::prelude::*;
use proptest::sample::Index;

/// Keys `k0` .. `k4`; range bounds run over 0 ..= KEYS (`k5` is past all).
const KEYS: u8 = 5;

/// Live transactions and snapshots at most: more would spread the
/// operations too thin for many of them to commit.
const MAX_SESSIONS: usize = 3;

type Key = String;
type Val = String;
type State = BTreeMap<Key, Val>;
type Bounds = (Bound<Key>, Bound<Key>);

fn key(i: u8) -> Key {
    format!("k{i}")
}

fn text(b: impl AsRef<[u8]>) -> String {
    String::from_utf8(b.as_ref().to_vec()).expect("utf8")
}

#[derive(Debug, Clone)]
enum Range {
    Full,
    HalfOpen(u8, u8),
    Closed(u8, u8),
    From(u8),
    To(u8),
    ToInclusive(u8),
    /// Exclusive lower bound, inclusive upper bound.
    OpenClosed(u8, u8),
    Prefix(u8),
}

impl Range {
    /// The bounds the model filters by. Pairs are ordered low to high:
    /// reversed ranges are a separate concern (see repeatable_read.rs).
    fn bounds(&self) -> Bounds {
        use Bound::{Excluded, Included, Unbounded};
        let lo_hi = |a: u8, b: u8| (key(a.min(b)), key(a.max(b)));
        match *self {
            Range::Full => (Unbounded, Unbounded),
            Range::HalfOpen(a, b) => {
                let (lo, hi) = lo_hi(a, b);
                (Included(lo), Excluded(hi))
            }
            Range::Closed(a, b) => {
                let (lo, hi) = lo_hi(a, b);
                (Included(lo), Included(hi))
            }
            Range::From(a) => (Included(key(a)), Unbounded),
            Range::To(b) => (Unbounded, Excluded(key(b))),
            Range::ToInclusive(b) => (Unbounded, Included(key(b))),
            Range::OpenClosed(a, b) => {
                let (lo, hi) = lo_hi(a, b);
                if lo == hi {
                    // (x, x] is empty; keep it well-formed as [x, x).
                    (Included(lo), Excluded(hi))
                } else {
                    (Excluded(lo), Included(hi))
                }
            }
            // Every key `k{i}` is a single digit, so the prefix `k{i}`
            // holds exactly that key.
            Range::Prefix(i) => (
                Included(key(i)),
                Excluded(format!("k{}", char::from(b'0' + i + 1))),
            ),
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Begin,
    Snapshot,
    Get(Index, u8),
    Put(Index, u8),
    Delete(Index, u8),
    Scan(Index, Range),
    Commit(Index),
    Rollback(Index),
    Drop(Index),
    /// `engine.apply`: reads the key at the latest state, writes it (or
    /// deletes it when the flag is set).
    Apply(u8, bool),
    Gc,
    Checkpoint,
    Reopen,
}

fn range_strategy() -> impl Strategy<Value = Range> {
    let b = 0..=KEYS;
    prop_oneof![
        Just(Range::Full),
        (b.clone(), b.clone()).prop_map(|(x, y)| Range::HalfOpen(x, y)),
        (b.clone(), b.clone()).prop_map(|(x, y)| Range::Closed(x, y)),
        b.clone().prop_map(Range::From),
        b.clone().prop_map(Range::To),
        b.clone().prop_map(Range::ToInclusive),
        (b.clone(), b).prop_map(|(x, y)| Range::OpenClosed(x, y)),
        (0..KEYS).prop_map(Range::Prefix),
    ]
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let k = 0..KEYS;
    prop_oneof![
        6 => Just(Op::Begin),
        1 => Just(Op::Snapshot),
        5 => (any::<Index>(), k.clone()).prop_map(|(s, k)| Op::Get(s, k)),
        10 => (any::<Index>(), k.clone()).prop_map(|(s, k)| Op::Put(s, k)),
        3 => (any::<Index>(), k.clone()).prop_map(|(s, k)| Op::Delete(s, k)),
        4 => (any::<Index>(), range_strategy()).prop_map(|(s, r)| Op::Scan(s, r)),
        4 => any::<Index>().prop_map(Op::Commit),
        1 => any::<Index>().prop_map(Op::Rollback),
        1 => any::<Index>().prop_map(Op::Drop),
        2 => (k, any::<bool>()).prop_map(|(k, d)| Op::Apply(k, d)),
        1 => Just(Op::Gc),
        1 => Just(Op::Checkpoint),
        1 => Just(Op::Reopen),
    ]
}

/// The model's view of one live transaction or snapshot.
#[derive(Debug)]
struct ModelSession {
    /// The commit sequence number it began after.
    start_seq: u64,
    /// The committed state when it began.
    state: State,
    /// Its writes (`None` deletes); empty for a snapshot.
    writes: BTreeMap<Key, Option<Val>>,
    /// Keys it read from the store (not from its own writes).
    reads: Vec<Key>,
    /// Ranges it scanned.
    ranges: Vec<Bounds>,
}

impl ModelSession {
    fn get(&self, k: &str) -> Option<Val> {
        match self.writes.get(k) {
            Some(own) => own.clone(),
            None => self.state.get(k).cloned(),
        }
    }

    fn scan(&self, bounds: &Bounds) -> Vec<(Key, Val)> {
        let mut view = self.state.clone();
        for (k, v) in &self.writes {
            match v {
                Some(v) => view.insert(k.clone(), v.clone()),
                None => view.remove(k),
            };
        }
        view.range::<Key, _>((bounds.0.as_ref(), bounds.1.as_ref()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

enum Live {
    Txn(Transaction),
    Snap(Snapshot),
}

struct Harness {
    dir: PathBuf,
    fs: Arc<dyn FileSystem>,
    isolation: Isolation,
    engine: Option<Engine>,
    sessions: Vec<(Live, ModelSession)>,
    /// The committed state.
    committed: State,
    /// Key -> the commit sequence number of its last write.
    last_write: BTreeMap<Key, u64>,
    /// Write commits so far (the model's clock).
    seq: u64,
    /// The engine ts of the last write commit.
    last_ts: u64,
    /// Conflicts since the engine was last opened.
    conflicts: u64,
    /// A counter that makes every written value unique.
    next_value: u64,
}

impl Harness {
    fn new(dir: &Path, fs: Arc<dyn FileSystem>, isolation: Isolation) -> Self {
        let mut h = Harness {
            dir: dir.to_path_buf(),
            fs,
            isolation,
            engine: None,
            sessions: Vec::new(),
            committed: State::new(),
            last_write: BTreeMap::new(),
            seq: 0,
            last_ts: 0,
            conflicts: 0,
            next_value: 0,
        };
        h.open();
        h
    }

    fn open(&mut self) {
        let options = Options {
            sync: SyncMode::Never,
            isolation: self.isolation,
            segment_bytes: 4096,
            fs: Arc::clone(&self.fs),
            ..Options::default()
        };
        self.engine = Some(Engine::open(&self.dir, options).expect("open"));
        self.conflicts = 0;
    }

    fn engine(&self) -> &Engine {
        self.engine.as_ref().expect("engine is open")
    }

    fn value(&mut self) -> Val {
        self.next_value += 1;
        format!("v{}", self.next_value)
    }

    fn model_session(&self) -> ModelSession {
        ModelSession {
            start_seq: self.seq,
            state: self.committed.clone(),
            writes: BTreeMap::new(),
            reads: Vec::new(),
            ranges: Vec::new(),
        }
    }

    /// Records a write commit at engine ts `ts` in the model.
    fn committed_at(&mut self, ts: u64, writes: &BTreeMap<Key, Option<Val>>) {
        assert!(
            ts > self.last_ts,
            "commit ts {ts} not after {}",
            self.last_ts
        );
        self.last_ts = ts;
        self.seq += 1;
        for (k, v) in writes {
            match v {
                Some(v) => self.committed.insert(k.clone(), v.clone()),
                None => self.committed.remove(k),
            };
            self.last_write.insert(k.clone(), self.seq);
        }
    }

    /// Whether the model says this commit must conflict.
    fn must_conflict(&self, m: &ModelSession) -> bool {
        let changed = |k: &Key| self.last_write.get(k).is_some_and(|&s| s > m.start_seq);
        if m.writes.keys().any(changed) {
            return true;
        }
        self.isolation == Isolation::Serializable
            && (m.reads.iter().any(changed)
                || m.ranges.iter().any(|r| {
                    self.last_write
                        .range::<Key, _>((r.0.as_ref(), r.1.as_ref()))
                        .any(|(_, &s)| s > m.start_seq)
                }))
    }

    /// The session an operation acts on; `None` when there is none.
    fn pick(&self, s: &Index) -> Option<usize> {
        (!self.sessions.is_empty()).then(|| s.index(self.sessions.len()))
    }

    /// The session a read or write acts on, beginning a transaction when
    /// there is none (so that few operations are wasted).
    fn pick_or_begin(&mut self, s: &Index) -> usize {
        if self.sessions.is_empty() {
            self.run(&Op::Begin);
        }
        s.index(self.sessions.len())
    }

    fn run(&mut self, op: &Op) {
        match op {
            Op::Begin | Op::Snapshot if self.sessions.len() >= MAX_SESSIONS => {}
            Op::Begin => {
                let t = self.engine().begin();
                assert!(t.start_ts() >= self.last_ts, "begin misses a commit");
                let m = self.model_session();
                self.sessions.push((Live::Txn(t), m));
            }
            Op::Snapshot => {
                let s = self.engine().snapshot();
                assert!(s.ts() >= self.last_ts, "snapshot misses a commit");
                let m = self.model_session();
                self.sessions.push((Live::Snap(s), m));
            }
            Op::Get(s, k) => {
                let i = self.pick_or_begin(s);
                let k = key(*k);
                let (live, m) = &mut self.sessions[i];
                let got = match live {
                    Live::Txn(t) => t.get(&k),
                    Live::Snap(s) => s.get(&k),
                }
                .expect("get")
                .map(text);
                assert_eq!(got, m.get(&k), "get {k}");
                if !m.writes.contains_key(&k) {
                    m.reads.push(k);
                }
            }
            Op::Put(s, k) | Op::Delete(s, k) => {
                let i = self.pick_or_begin(s);
                let v = matches!(op, Op::Put(..)).then(|| self.value());
                let k = key(*k);
                let (live, m) = &mut self.sessions[i];
                let Live::Txn(t) = live else { return };
                match &v {
                    Some(v) => t.put(&k, v).expect("put"),
                    None => t.delete(&k).expect("delete"),
                }
                m.writes.insert(k, v);
            }
            Op::Scan(s, range) => {
                let i = self.pick_or_begin(s);
                let (live, m) = &mut self.sessions[i];
                let bounds = range.bounds();
                let scan = match (live, range) {
                    (Live::Txn(t), Range::Prefix(p)) => t.scan_prefix(key(*p)),
                    (Live::Snap(s), Range::Prefix(p)) => s.scan_prefix(key(*p)),
                    (Live::Txn(t), _) => t.scan(bounds.clone()),
                    (Live::Snap(s), _) => s.scan(bounds.clone()),
                }
                .expect("scan");
                let got: Vec<(Key, Val)> = scan.map(|(k, v)| (text(k), text(v))).collect();
                assert_eq!(got, m.scan(&bounds), "scan {range:?}");
                m.ranges.push(bounds);
            }
            Op::Commit(s) => {
                let Some(i) = self.pick(s) else { return };
                let (live, m) = self.sessions.remove(i);
                let Live::Txn(t) = live else { return };
                let start = t.start_ts();
                let conflict = self.must_conflict(&m);
                match t.commit() {
                    Ok(ts) if m.writes.is_empty() => {
                        assert_eq!(ts, start, "a read-only commit returns its start ts");
                    }
                    Ok(ts) => {
                        assert!(!conflict, "committed, but the model says Conflict: {m:?}");
                        assert!(ts > start);
                        self.committed_at(ts, &m.writes);
                    }
                    Err(Error::Conflict) => {
                        assert!(conflict, "Conflict, but the model says commit: {m:?}");
                        assert!(!m.writes.is_empty(), "a read-only commit conflicted");
                        self.conflicts += 1;
                    }
                    Err(e) => panic!("commit failed: {e}"),
                }
            }
            Op::Rollback(s) | Op::Drop(s) => {
                let Some(i) = self.pick(s) else { return };
                let (live, _) = self.sessions.remove(i);
                match (live, op) {
                    (Live::Txn(t), Op::Rollback(_)) => t.rollback(),
                    (live, _) => drop(live),
                }
            }
            Op::Apply(k, delete) => {
                let k = key(*k);
                let v = (!delete).then(|| self.value());
                let latest = self.committed.get(&k).cloned();
                let (ts, seen) = self
                    .engine()
                    .apply(|batch| {
                        let seen = batch.get(&k).map(text);
                        match &v {
                            Some(v) => batch.put(&k, v)?,
                            None => batch.delete(&k)?,
                        }
                        Ok(seen)
                    })
                    .expect("apply never conflicts");
                assert_eq!(seen, latest, "apply reads the latest state");
                self.committed_at(ts, &BTreeMap::from([(k, v)]));
            }
            Op::Gc => self.engine().gc(),
            Op::Checkpoint => self.engine().checkpoint().expect("checkpoint"),
            Op::Reopen => self.reopen(),
        }
    }

    /// Ends every session (they are rolled back) and reopens the engine.
    fn reopen(&mut self) {
        self.sessions.clear();
        self.check_state();
        assert_eq!(self.engine().stats().conflicts, self.conflicts);
        self.engine = None;
        self.open();
        self.check_state();
    }

    /// The engine's latest state equals the model's committed state.
    fn check_state(&self) {
        let snap = self.engine().snapshot();
        assert!(snap.ts() >= self.last_ts);
        let got: State = snap
            .scan(..)
            .expect("scan")
            .map(|(k, v)| (text(k), text(v)))
            .collect();
        assert_eq!(got, self.committed, "state differs from the model");
        for i in 0..KEYS {
            let k = key(i);
            let got = snap.get(&k).expect("get").map(text);
            assert_eq!(got, self.committed.get(&k).cloned());
        }
    }
}

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(128);
    ProptestConfig {
        cases,
        // Failing cases are printed (shrunk); no regression file is written
        // into the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn random_interleavings_match_the_model(
        serializable in any::<bool>(),
        on_disk in prop::bool::weighted(0.1),
        ops in prop::collection::vec(op_strategy(), 1..160),
    ) {
        let isolation = if serializable { Isolation::Serializable } else { Isolation::Snapshot };
        // Mostly the in-memory file system (checkpoints and reopening cost
        // syncs on a disk); one case in ten on the real one.
        let dir = tempfile::tempdir().expect("tempdir");
        let fs: Arc<dyn FileSystem> = if on_disk { Arc::new(StdFs) } else { Arc::new(MemFs::new()) };
        let mut h = Harness::new(dir.path(), fs, isolation);
        for op in &ops {
            h.run(op);
        }
        // The end: every session ends uncommitted, the state is the model's,
        // and so it is after reopening.
        h.reopen();
    }
}
