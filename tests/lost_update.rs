//! No lost updates (ARCHITECTURE.md invariant 2; issue 2, behaviour 1).
//!
//! Of two transactions that overlap in time and write the same key, the
//! first to commit wins and the second gets `Error::Conflict`, with nothing
//! of it applied (first committer wins). It does not matter which of them
//! wrote first, whether the writes are puts or deletes, or whether the key
//! existed; the second may retry and then sees the first's write. Under
//! concurrency, counters incremented by many threads with retry on conflict
//! end at exactly the number of increments that committed.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use mvledger::{Engine, Error, Isolation, Options, SyncMode};

fn open(dir: &Path, isolation: Isolation, sync: SyncMode) -> Engine {
    Engine::open(
        dir,
        Options {
            sync,
            isolation,
            ..Options::default()
        },
    )
    .expect("open")
}

fn value(engine: &Engine, key: &[u8]) -> Option<Vec<u8>> {
    engine.snapshot().get(key).expect("get").map(|v| v.to_vec())
}

fn put(engine: &Engine, key: &[u8], value: &[u8]) -> u64 {
    let mut t = engine.begin();
    t.put(key, value).expect("put");
    t.commit().expect("commit")
}

fn assert_conflict(result: mvledger::Result<u64>) {
    match result {
        Err(Error::Conflict) => {}
        other => panic!("expected Error::Conflict, got {other:?}"),
    }
}

const BOTH: [Isolation; 2] = [Isolation::Snapshot, Isolation::Serializable];

#[test]
fn the_second_committer_of_a_key_gets_conflict_and_nothing_of_it_is_applied() {
    for isolation in BOTH {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = open(dir.path(), isolation, SyncMode::Always);
        put(&engine, b"balance", b"100");
        let conflicts_before = engine.stats().conflicts;

        // The read-modify-write of a lost update: both read 100.
        let mut t1 = engine.begin();
        let mut t2 = engine.begin();
        assert_eq!(
            t1.get(b"balance").expect("get").as_deref(),
            Some(&b"100"[..])
        );
        assert_eq!(
            t2.get(b"balance").expect("get").as_deref(),
            Some(&b"100"[..])
        );
        t1.put(b"balance", b"110").expect("put");
        t2.put(b"balance", b"120").expect("put");
        t2.put(b"t2-only", b"x").expect("put");
        t2.delete(b"other").expect("delete");
        let before = engine.stats();
        t1.commit().expect("the first committer wins");
        assert_conflict(t2.commit());

        assert_eq!(value(&engine, b"balance").as_deref(), Some(&b"110"[..]));
        assert_eq!(
            value(&engine, b"t2-only"),
            None,
            "part of the loser was applied"
        );
        let after = engine.stats();
        assert_eq!(after.commits, before.commits + 1);
        assert_eq!(after.conflicts, conflicts_before + 1);
        assert_eq!(after.keys, 1);
        drop(engine);
        // Nor did the loser reach the log.
        let engine = open(dir.path(), isolation, SyncMode::Always);
        assert_eq!(value(&engine, b"balance").as_deref(), Some(&b"110"[..]));
        assert_eq!(engine.snapshot().scan(..).expect("scan").count(), 1);
    }
}

#[test]
fn the_commit_order_decides_not_the_write_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), Isolation::Snapshot, SyncMode::Never);
    let mut early_writer = engine.begin();
    early_writer.put(b"k", b"early").expect("put");
    let mut late_writer = engine.begin();
    late_writer.put(b"k", b"late").expect("put");
    late_writer.commit().expect("first to commit");
    assert_conflict(early_writer.commit());
    assert_eq!(value(&engine, b"k").as_deref(), Some(&b"late"[..]));
}

#[test]
fn every_kind_of_write_to_the_same_key_conflicts() {
    type Write = fn(&mut mvledger::Transaction);
    let put_a: Write = |t| t.put(b"k", b"a").expect("put");
    let put_b: Write = |t| t.put(b"k", b"b").expect("put");
    let del: Write = |t| t.delete(b"k").expect("delete");
    for existed in [false, true] {
        for (name, first, second) in [
            ("put/put", put_a, put_b),
            ("put/delete", put_a, del),
            ("delete/put", del, put_b),
            ("delete/delete", del, del),
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let engine = open(dir.path(), Isolation::Snapshot, SyncMode::Never);
            if existed {
                put(&engine, b"k", b"old");
            }
            let mut t1 = engine.begin();
            let mut t2 = engine.begin();
            first(&mut t1);
            second(&mut t2);
            let expected = {
                let ts = t1.commit().expect("first committer");
                let snap = engine.snapshot();
                assert!(snap.ts() >= ts);
                snap.get(b"k").expect("get").map(|v| v.to_vec())
            };
            let result = t2.commit();
            assert!(
                matches!(result, Err(Error::Conflict)),
                "{name} (key existed: {existed}): second committer got {result:?}"
            );
            assert_eq!(value(&engine, b"k"), expected, "{name}: loser applied");
        }
    }
}

#[test]
fn a_transaction_that_began_after_the_commit_does_not_conflict() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), Isolation::Snapshot, SyncMode::Never);
    put(&engine, b"k", b"1");
    let mut t = engine.begin();
    assert_eq!(t.get(b"k").expect("get").as_deref(), Some(&b"1"[..]));
    t.put(b"k", b"2").expect("put");
    t.commit().expect("no overlap, no conflict");
    assert_eq!(value(&engine, b"k").as_deref(), Some(&b"2"[..]));
}

#[test]
fn overlapping_writers_of_different_keys_both_commit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), Isolation::Snapshot, SyncMode::Never);
    put(&engine, b"a", b"0");
    put(&engine, b"b", b"0");
    let mut t1 = engine.begin();
    let mut t2 = engine.begin();
    t1.put(b"a", b"1").expect("put");
    t2.put(b"b", b"2").expect("put");
    t1.commit().expect("commit");
    t2.commit().expect("disjoint write sets do not conflict");
    assert_eq!(value(&engine, b"a").as_deref(), Some(&b"1"[..]));
    assert_eq!(value(&engine, b"b").as_deref(), Some(&b"2"[..]));
}

#[test]
fn a_write_by_apply_makes_an_overlapping_transaction_conflict() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), Isolation::Snapshot, SyncMode::Always);
    put(&engine, b"k", b"1");
    let mut t = engine.begin();
    t.put(b"k", b"from-txn").expect("put");
    engine
        .apply(|batch| batch.put(b"k", b"from-apply"))
        .expect("apply never conflicts");
    assert_conflict(t.commit());
    assert_eq!(value(&engine, b"k").as_deref(), Some(&b"from-apply"[..]));
}

#[test]
fn the_loser_can_retry_and_then_sees_the_winner() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), Isolation::Snapshot, SyncMode::Never);
    put(&engine, b"n", b"0");
    let increment = |t: &mut mvledger::Transaction| {
        let n: u64 = std::str::from_utf8(&t.get(b"n").expect("get").expect("n"))
            .expect("utf8")
            .parse()
            .expect("number");
        t.put(b"n", (n + 1).to_string()).expect("put");
    };
    let mut t1 = engine.begin();
    let mut t2 = engine.begin();
    increment(&mut t1);
    increment(&mut t2);
    t1.commit().expect("commit");
    assert_conflict(t2.commit());
    let mut retry = engine.begin();
    increment(&mut retry);
    retry
        .commit()
        .expect("the retry does not overlap the winner");
    assert_eq!(value(&engine, b"n").as_deref(), Some(&b"2"[..]));
}

fn parse(v: Option<Vec<u8>>) -> u64 {
    v.map_or(0, |v| {
        u64::from_le_bytes(v.as_slice().try_into().expect("8-byte counter"))
    })
}

/// Threads increment shared counters by read-modify-write transactions,
/// retrying on conflict; one thread uses `apply`, which never conflicts.
/// Each counter must end at exactly the number of increments that committed.
fn check_concurrent_counters(isolation: Isolation) {
    const THREADS: usize = 4;
    const COUNTERS: usize = 3;
    const INCREMENTS: usize = 150;
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), isolation, SyncMode::Never);
    let counter = |c: usize| format!("counter/{c}").into_bytes();
    let committed: [AtomicU64; COUNTERS] = Default::default();
    let conflicts = AtomicU64::new(0);
    let before = engine.stats();
    std::thread::scope(|s| {
        for thread in 0..THREADS {
            let (engine, committed, conflicts) = (&engine, &committed, &conflicts);
            s.spawn(move || {
                for i in 0..INCREMENTS {
                    let c = (thread + i) % COUNTERS;
                    let key = counter(c);
                    if thread == 0 && i.is_multiple_of(2) {
                        engine
                            .apply(|batch| {
                                let n = parse(batch.get(&key).map(|v| v.to_vec()));
                                batch.put(&key, (n + 1).to_le_bytes())
                            })
                            .expect("apply");
                        committed[c].fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    loop {
                        let mut t = engine.begin();
                        let n = parse(t.get(&key).expect("get").map(|v| v.to_vec()));
                        // Widen the window between the read and the commit.
                        std::thread::yield_now();
                        t.put(&key, (n + 1).to_le_bytes()).expect("put");
                        match t.commit() {
                            Ok(_) => {
                                committed[c].fetch_add(1, Ordering::Relaxed);
                                break;
                            }
                            Err(Error::Conflict) => {
                                conflicts.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(e) => panic!("commit failed: {e}"),
                        }
                    }
                }
            });
        }
    });
    let total: u64 = committed.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    assert_eq!(total, (THREADS * INCREMENTS) as u64);
    let check = |engine: &Engine| {
        for (c, n) in committed.iter().enumerate() {
            assert_eq!(
                parse(value(engine, &counter(c))),
                n.load(Ordering::Relaxed),
                "counter {c} lost updates ({isolation:?})"
            );
        }
    };
    check(&engine);
    let after = engine.stats();
    assert_eq!(after.commits - before.commits, total);
    assert_eq!(
        after.conflicts - before.conflicts,
        conflicts.load(Ordering::Relaxed)
    );
    drop(engine);
    check(&open(dir.path(), isolation, SyncMode::Never));
}

#[test]
fn concurrent_counters_lose_no_update_under_snapshot_isolation() {
    check_concurrent_counters(Isolation::Snapshot);
}

#[test]
fn concurrent_counters_lose_no_update_under_serializable() {
    check_concurrent_counters(Isolation::Serializable);
}
