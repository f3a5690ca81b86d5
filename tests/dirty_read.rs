//! No dirty reads (ARCHITECTURE.md invariant 1; issue 2, behaviour 1).
//!
//! Uncommitted writes live only in their transaction's private write set:
//! no other transaction or snapshot ever sees them, and a transaction that
//! is rolled back or dropped leaves nothing behind (no value, no version
//! that could make a later writer conflict, nothing in the log). A snapshot
//! (and a transaction, at its start ts) taken at ts S sees exactly the
//! commits with commit ts <= S: all of each, none of any other. The
//! concurrent tests check that under both the `Always` path (the visible ts
//! is published by the group-commit leader after the sync) and the `Never`
//! path (published by the sequencer).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, Mutex};

use mvledger::{Engine, Error, Isolation, Options, Snapshot, SyncMode, Transaction};

type State = BTreeMap<Vec<u8>, Vec<u8>>;
type Writes = Vec<(Vec<u8>, Option<Vec<u8>>)>;

fn open(dir: &Path, sync: SyncMode) -> Engine {
    Engine::open(
        dir,
        Options {
            sync,
            ..Options::default()
        },
    )
    .expect("open")
}

fn snap_get(s: &Snapshot, key: &[u8]) -> Option<Vec<u8>> {
    s.get(key).expect("get").map(|v| v.to_vec())
}

fn txn_get(t: &Transaction, key: &[u8]) -> Option<Vec<u8>> {
    t.get(key).expect("get").map(|v| v.to_vec())
}

fn snap_all(s: &Snapshot) -> State {
    s.scan(..)
        .expect("scan")
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

fn txn_all(t: &Transaction) -> State {
    t.scan(..)
        .expect("scan")
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

fn commit(engine: &Engine, writes: &[(&[u8], Option<&[u8]>)]) -> u64 {
    let mut t = engine.begin();
    for (k, v) in writes {
        match v {
            Some(v) => t.put(k, v).expect("put"),
            None => t.delete(k).expect("delete"),
        }
    }
    t.commit().expect("commit")
}

/// The state after applying, in ts order, every commit with ts <= `ts`.
fn state_at(history: &[(u64, Writes)], ts: u64) -> State {
    let mut sorted: Vec<&(u64, Writes)> = history.iter().collect();
    sorted.sort_by_key(|(t, _)| *t);
    let mut state = State::new();
    for (_, writes) in sorted.into_iter().take_while(|(t, _)| *t <= ts) {
        for (k, v) in writes {
            match v {
                Some(v) => state.insert(k.clone(), v.clone()),
                None => state.remove(k),
            };
        }
    }
    state
}

#[test]
fn uncommitted_writes_are_invisible_to_other_transactions_and_snapshots() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), SyncMode::Always);
    commit(
        &engine,
        &[
            (b"a", Some(b"a0")),
            (b"b", Some(b"b0")),
            (b"c", Some(b"c0")),
        ],
    );
    let base: State = [
        (b"a".to_vec(), b"a0".to_vec()),
        (b"b".to_vec(), b"b0".to_vec()),
        (b"c".to_vec(), b"c0".to_vec()),
    ]
    .into();

    let other_before = engine.begin();
    let snap_before = engine.snapshot();
    let mut writer = engine.begin();
    writer.put(b"a", b"dirty").expect("put");
    writer.put(b"new", b"dirty").expect("put");
    writer.delete(b"b").expect("delete");
    // The writer sees its own writes ...
    assert_eq!(txn_get(&writer, b"a").as_deref(), Some(&b"dirty"[..]));
    assert_eq!(txn_get(&writer, b"b"), None);
    // ... and nobody else does, whether they began before or after them.
    let other_after = engine.begin();
    let snap_after = engine.snapshot();
    for (name, state) in [
        ("txn before", txn_all(&other_before)),
        ("txn after", txn_all(&other_after)),
        ("snapshot before", snap_all(&snap_before)),
        ("snapshot after", snap_all(&snap_after)),
    ] {
        assert_eq!(state, base, "{name} saw uncommitted writes (scan)");
    }
    for key in [&b"a"[..], b"b", b"c", b"new"] {
        let want = base.get(key).cloned();
        assert_eq!(txn_get(&other_before, key), want);
        assert_eq!(txn_get(&other_after, key), want);
        assert_eq!(snap_get(&snap_before, key), want);
        assert_eq!(snap_get(&snap_after, key), want);
    }
    assert_eq!(snap_after.ts(), snap_before.ts(), "nothing was committed");
    assert_eq!(
        engine.stats().keys,
        3,
        "an uncommitted write reached the index"
    );

    let ts = writer.commit().expect("commit");
    // Readers that began before the commit keep their view ...
    assert_eq!(snap_all(&snap_after), base);
    assert_eq!(txn_all(&other_after), base);
    // ... a new one sees all of it.
    let snap = engine.snapshot();
    assert!(snap.ts() >= ts);
    let after: State = [
        (b"a".to_vec(), b"dirty".to_vec()),
        (b"c".to_vec(), b"c0".to_vec()),
        (b"new".to_vec(), b"dirty".to_vec()),
    ]
    .into();
    assert_eq!(snap_all(&snap), after);
}

/// What a transaction that ends without committing must leave: nothing.
fn check_leaves_nothing(end: impl FnOnce(Transaction)) {
    let dir = tempfile::tempdir().expect("tempdir");
    let base: State = {
        let engine = open(dir.path(), SyncMode::Always);
        commit(&engine, &[(b"a", Some(b"a0")), (b"b", Some(b"b0"))]);
        let before = engine.stats();

        let mut t = engine.begin();
        t.put(b"a", b"gone").expect("put");
        t.put(b"fresh", b"gone").expect("put");
        t.delete(b"b").expect("delete");
        end(t);

        let base = snap_all(&engine.snapshot());
        assert_eq!(
            base,
            State::from([
                (b"a".to_vec(), b"a0".to_vec()),
                (b"b".to_vec(), b"b0".to_vec()),
            ])
        );
        let after = engine.stats();
        assert_eq!(after.commits, before.commits);
        assert_eq!(after.keys, before.keys);
        assert_eq!(after.versions_alive, before.versions_alive);
        assert_eq!(after.visible_ts, before.visible_ts);
        assert_eq!(after.readers, 0, "the ended transaction is still a reader");

        // It left no version behind that a later writer could conflict with.
        let mut later = engine.begin();
        later.put(b"a", b"a1").expect("put");
        later.put(b"fresh", b"f1").expect("put");
        later.delete(b"b").expect("delete");
        later
            .commit()
            .expect("a write after a rollback must not conflict");
        snap_all(&engine.snapshot())
    };
    // Nor anything in the log.
    let engine = open(dir.path(), SyncMode::Always);
    assert_eq!(snap_all(&engine.snapshot()), base);
    assert_eq!(
        base,
        State::from([
            (b"a".to_vec(), b"a1".to_vec()),
            (b"fresh".to_vec(), b"f1".to_vec()),
        ])
    );
}

#[test]
fn a_rolled_back_transaction_leaves_nothing() {
    check_leaves_nothing(Transaction::rollback);
}

#[test]
fn a_dropped_transaction_leaves_nothing() {
    check_leaves_nothing(drop);
}

#[test]
fn a_transaction_that_lost_a_conflict_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), SyncMode::Always);
    commit(&engine, &[(b"k", Some(b"0"))]);
    let mut loser = engine.begin();
    loser.put(b"k", b"loser").expect("put");
    loser.put(b"side", b"loser").expect("put");
    commit(&engine, &[(b"k", Some(b"winner"))]);
    assert!(matches!(loser.commit(), Err(Error::Conflict)));
    let snap = engine.snapshot();
    assert_eq!(snap_get(&snap, b"k").as_deref(), Some(&b"winner"[..]));
    assert_eq!(snap_get(&snap, b"side"), None);
    assert_eq!(snap.scan(..).expect("scan").count(), 1);
}

/// One commit of the single-threaded history test: a few counters, a
/// per-commit key, and now and then a delete.
fn history_writes(i: u64) -> Writes {
    let mut w: Writes = vec![
        (
            format!("acct/{}", i % 5).into_bytes(),
            Some(format!("v{i}").into_bytes()),
        ),
        (
            format!("acct/{}", (i + 3) % 5).into_bytes(),
            Some(format!("w{i}").into_bytes()),
        ),
        (
            format!("log/{i:03}").into_bytes(),
            Some(i.to_string().into_bytes()),
        ),
    ];
    if i % 4 == 3 {
        w.push((format!("log/{:03}", i - 2).into_bytes(), None));
    }
    if i % 7 == 6 {
        w.push((format!("acct/{}", (i + 1) % 5).into_bytes(), None));
    }
    w
}

fn check_snapshots_see_exactly_their_commits(sync: SyncMode) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), sync);
    let mut history: Vec<(u64, Writes)> = Vec::new();
    let mut snaps: Vec<Snapshot> = vec![engine.snapshot()];
    let mut txns: Vec<Transaction> = vec![engine.begin()];
    for i in 0..40u64 {
        let writes = history_writes(i);
        // Half the commits go through transactions, half through `apply`.
        let ts = if i.is_multiple_of(2) {
            let mut t = engine.begin();
            for (k, v) in &writes {
                match v {
                    Some(v) => t.put(k, v).expect("put"),
                    None => t.delete(k).expect("delete"),
                }
            }
            // An open transaction with other writes must not leak either.
            let mut dirty = engine.begin();
            dirty.put(b"acct/0", b"dirty").expect("put");
            let ts = t.commit().expect("commit");
            snaps.push(engine.snapshot());
            drop(dirty);
            ts
        } else {
            let (ts, ()) = engine
                .apply(|batch| {
                    for (k, v) in &writes {
                        match v {
                            Some(v) => batch.put(k, v)?,
                            None => batch.delete(k)?,
                        }
                    }
                    Ok(())
                })
                .expect("apply");
            snaps.push(engine.snapshot());
            ts
        };
        if let Some((prev, _)) = history.last() {
            assert!(ts > *prev, "commit ts went backwards: {prev} then {ts}");
        }
        history.push((ts, writes));
        txns.push(engine.begin());
        if i % 10 == 9 {
            // GC must keep what these readers see.
            engine.gc();
        }
    }
    let universe: Vec<Vec<u8>> = history
        .iter()
        .flat_map(|(_, w)| w.iter().map(|(k, _)| k.clone()))
        .collect();
    // Snapshot j was taken right after commit j - 1 returned, before commit j.
    for (j, snap) in snaps.iter().enumerate() {
        if j > 0 {
            assert!(
                snap.ts() >= history[j - 1].0,
                "snapshot misses a returned commit"
            );
        }
        if let Some((next, _)) = history.get(j) {
            assert!(snap.ts() < *next, "snapshot ts past a later commit");
        }
        let want = state_at(&history, snap.ts());
        assert_eq!(snap_all(snap), want, "snapshot {j} at ts {}", snap.ts());
        for key in &universe {
            assert_eq!(snap_get(snap, key), want.get(key).cloned(), "snapshot {j}");
        }
    }
    for (j, txn) in txns.iter().enumerate() {
        let want = state_at(&history, txn.start_ts());
        assert_eq!(
            txn_all(txn),
            want,
            "transaction {j} at ts {}",
            txn.start_ts()
        );
        for key in &universe {
            assert_eq!(txn_get(txn, key), want.get(key).cloned(), "transaction {j}");
        }
    }
}

#[test]
fn a_snapshot_sees_exactly_the_commits_at_or_below_its_ts_always() {
    check_snapshots_see_exactly_their_commits(SyncMode::Always);
}

#[test]
fn a_snapshot_sees_exactly_the_commits_at_or_below_its_ts_never() {
    check_snapshots_see_exactly_their_commits(SyncMode::Never);
}

/// Writers commit multi-key transactions while readers take snapshots and
/// begin transactions, and a third kind of thread keeps writing "dirty"
/// values that it never commits. After the run, every view a reader
/// recorded must equal the prefix of the commit history up to its ts.
fn check_concurrent_views(sync: SyncMode, commits_per_writer: u64) {
    const WRITERS: u64 = 2;
    const READERS: usize = 2;
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), sync);
    let history: Mutex<Vec<(u64, Writes)>> = Mutex::new(Vec::new());
    let done = AtomicBool::new(false);
    // Everyone starts together, so that the views interleave with commits.
    let start = Barrier::new(WRITERS as usize + READERS + 1);
    let views: Vec<Vec<(u64, State)>> = std::thread::scope(|s| {
        let mut writers = Vec::new();
        for w in 0..WRITERS {
            let (engine, history, start) = (&engine, &history, &start);
            writers.push(s.spawn(move || {
                start.wait();
                for n in 0..commits_per_writer {
                    let value = format!("w{w}n{n}").into_bytes();
                    let mut writes: Writes = ["a", "b", "c"]
                        .iter()
                        .map(|k| (format!("{w}/{k}").into_bytes(), Some(value.clone())))
                        .collect();
                    // The key of the previous commit goes, a new one comes.
                    writes.push((format!("{w}/n{n}").into_bytes(), Some(value.clone())));
                    if n > 0 {
                        writes.push((format!("{w}/n{}", n - 1).into_bytes(), None));
                    }
                    let mut t = engine.begin();
                    for (k, v) in &writes {
                        match v {
                            Some(v) => t.put(k, v).expect("put"),
                            None => t.delete(k).expect("delete"),
                        }
                    }
                    let ts = t.commit().expect("writers own disjoint keys");
                    history.lock().expect("history").push((ts, writes));
                    // Let the readers look between commits.
                    std::thread::yield_now();
                }
            }));
        }
        let dirty = {
            let (engine, done, start) = (&engine, &done, &start);
            s.spawn(move || {
                start.wait();
                let mut n = 0u64;
                while !done.load(Ordering::Relaxed) {
                    let mut t = engine.begin();
                    for w in 0..WRITERS {
                        t.put(format!("{w}/a"), b"dirty").expect("put");
                        t.delete(format!("{w}/b")).expect("delete");
                        t.put(format!("{w}/z"), b"dirty").expect("put");
                    }
                    if n.is_multiple_of(2) {
                        t.rollback();
                    } else {
                        drop(t);
                    }
                    n += 1;
                    std::thread::yield_now();
                }
            })
        };
        let mut readers = Vec::new();
        for r in 0..READERS {
            let (engine, done, start) = (&engine, &done, &start);
            readers.push(s.spawn(move || {
                start.wait();
                let mut kept: Vec<(u64, State)> = Vec::new();
                let mut i = 0usize;
                loop {
                    // Read `done` first: one more view after the writers end.
                    let last = done.load(Ordering::Acquire);
                    let (ts, view) = if (i + r).is_multiple_of(2) {
                        let snap = engine.snapshot();
                        (snap.ts(), snap_all(&snap))
                    } else {
                        let t = engine.begin();
                        (t.start_ts(), txn_all(&t))
                    };
                    assert!(
                        view.values().all(|v| v != b"dirty"),
                        "a view at ts {ts} saw an uncommitted write: {view:?}"
                    );
                    // Views at one ts must agree; keep one per ts for the
                    // check against the history.
                    match kept.last() {
                        Some((prev_ts, prev)) if *prev_ts == ts => {
                            assert_eq!(*prev, view, "two views at ts {ts} differ");
                        }
                        Some((prev_ts, _)) if *prev_ts > ts => {
                            panic!("a later view has an older ts: {prev_ts} then {ts}");
                        }
                        _ => kept.push((ts, view)),
                    }
                    i += 1;
                    if last {
                        return kept;
                    }
                }
            }));
        }
        for w in writers {
            w.join().expect("writer");
        }
        done.store(true, Ordering::Release);
        dirty.join().expect("dirty writer");
        readers
            .into_iter()
            .map(|r| r.join().expect("reader"))
            .collect()
    });
    let history = history.into_inner().expect("history");
    assert_eq!(history.len() as u64, WRITERS * commits_per_writer);
    let final_ts = history.iter().map(|(ts, _)| *ts).max().expect("commits");
    let mut checked = 0;
    for (ts, view) in views.iter().flatten() {
        assert!(*ts <= final_ts);
        assert_eq!(
            *view,
            state_at(&history, *ts),
            "a view at ts {ts} is not a commit prefix"
        );
        checked += 1;
    }
    // The last view of each reader was taken after every commit returned.
    for reader in &views {
        let (ts, _) = reader.last().expect("views");
        assert_eq!(
            *ts, final_ts,
            "a view taken after the last commit misses it"
        );
    }
    assert!(checked >= READERS);
    assert_eq!(snap_all(&engine.snapshot()), state_at(&history, final_ts));
}

#[test]
fn concurrent_views_are_whole_commit_prefixes_always() {
    check_concurrent_views(SyncMode::Always, 150);
}

#[test]
fn concurrent_views_are_whole_commit_prefixes_never() {
    check_concurrent_views(SyncMode::Never, 400);
}

#[test]
fn serializable_transactions_do_not_see_uncommitted_writes_either() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = Engine::open(
        dir.path(),
        Options {
            isolation: Isolation::Serializable,
            ..Options::default()
        },
    )
    .expect("open");
    commit(&engine, &[(b"k", Some(b"v0"))]);
    let mut writer = engine.begin();
    writer.put(b"k", b"dirty").expect("put");
    writer.put(b"k2", b"dirty").expect("put");
    let reader = engine.begin();
    assert_eq!(txn_get(&reader, b"k").as_deref(), Some(&b"v0"[..]));
    assert_eq!(txn_get(&reader, b"k2"), None);
    assert_eq!(txn_all(&reader).len(), 1);
    drop(writer);
    // Nothing changed under the reader: it commits (read-only, at its start).
    let start = reader.start_ts();
    assert_eq!(reader.commit().expect("read-only commit"), start);
}
