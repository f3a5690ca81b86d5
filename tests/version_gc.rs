//! Safe version GC (ARCHITECTURE.md invariant 5; issue 2, behaviour 4).
//!
//! Checks that the low watermark is the oldest live snapshot or transaction
//! start ts (or the visible ts when there is none); that a long-lived
//! snapshot keeps exactly the versions it can read, through overwrites,
//! deletes and full sweeps; that once it is dropped the versions it held
//! are reclaimed (by `Engine::gc` and by the GC that rides on commits); and
//! that memory stays flat while the same keys are updated a million times
//! with no `gc()` call at all.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use common::{Model, XorShift64, assert_same};
use mvledger::{Engine, Error, Options, Snapshot, SyncMode};

fn never() -> Options {
    Options {
        sync: SyncMode::Never,
        ..Options::default()
    }
}

fn key(i: u32) -> Vec<u8> {
    format!("key{i:04}").into_bytes()
}

fn put(engine: &Engine, k: impl AsRef<[u8]>, v: impl AsRef<[u8]>) -> u64 {
    let mut txn = engine.begin();
    txn.put(k, v).unwrap();
    txn.commit().unwrap()
}

fn delete(engine: &Engine, k: impl AsRef<[u8]>) -> u64 {
    let mut txn = engine.begin();
    txn.delete(k).unwrap();
    txn.commit().unwrap()
}

/// Everything `snap` sees, as a map.
fn contents(snap: &Snapshot) -> Model {
    snap.scan(..)
        .unwrap()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

#[test]
fn watermark_is_the_oldest_live_reader_or_the_visible_ts() {
    let dir = tempfile::tempdir().unwrap();
    // The default sync mode: the visible ts is the durable one.
    let engine = Engine::open(dir.path(), Options::default()).unwrap();
    let s = engine.stats();
    assert_eq!(s.readers, 0);
    assert_eq!(s.watermark, s.visible_ts, "no reader: watermark = visible");

    for i in 0..3 {
        put(&engine, "k", format!("{i}"));
    }
    let s = engine.stats();
    assert_eq!(s.visible_ts, 3);
    assert_eq!(s.watermark, 3);

    let snap1 = engine.snapshot();
    assert_eq!(snap1.ts(), 3);
    put(&engine, "k", "3");
    put(&engine, "k", "4");
    let s = engine.stats();
    assert_eq!(s.visible_ts, 5);
    assert_eq!(s.watermark, 3, "a snapshot holds the watermark at its ts");
    assert_eq!(s.readers, 1);

    let txn = engine.begin();
    assert_eq!(txn.start_ts(), 5);
    put(&engine, "other", "x");
    let snap2 = engine.snapshot();
    assert_eq!(snap2.ts(), 6);
    let s = engine.stats();
    assert_eq!((s.watermark, s.readers), (3, 3));

    // A clone holds the same ts: dropping the original releases nothing.
    let clone = snap1.clone();
    drop(snap1);
    let s = engine.stats();
    assert_eq!((s.watermark, s.readers), (3, 3));
    drop(clone);
    let s = engine.stats();
    assert_eq!(
        (s.watermark, s.readers),
        (5, 2),
        "the oldest live reader is now the transaction at 5"
    );

    // A rolled-back transaction and a read-only commit release their ts.
    let rolled = engine.begin();
    let read_only = engine.begin();
    assert_eq!(engine.stats().readers, 4);
    rolled.rollback();
    assert_eq!(read_only.commit().unwrap(), 6);
    assert_eq!(engine.stats().readers, 2);

    // Committing releases the transaction's ts too.
    let mut txn = txn;
    txn.put("t", "1").unwrap();
    let ts = txn.commit().unwrap();
    assert_eq!(ts, 7);
    let s = engine.stats();
    assert_eq!((s.watermark, s.readers), (6, 1), "snap2 at 6 is the oldest");

    drop(snap2);
    let s = engine.stats();
    assert_eq!(s.readers, 0);
    assert_eq!(s.visible_ts, 7);
    assert_eq!(s.watermark, 7, "no reader left: watermark = visible");
}

#[test]
fn a_long_lived_snapshot_keeps_exactly_what_it_can_read() {
    const KEYS: u32 = 200;
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), never()).unwrap();
    let mut rng = XorShift64(0x9e37_79b9_7f4a_7c15);
    let mut model = Model::new();

    // An early snapshot holds every version written in the first phase.
    let early = engine.snapshot();
    for round in 0..5 {
        for i in 0..KEYS {
            let v = format!("r{round}-{i}").into_bytes();
            put(&engine, key(i), &v);
            model.insert(key(i), v);
        }
    }
    for i in (0..KEYS).filter(|i| i % 7 == 0) {
        delete(&engine, key(i));
        model.remove(&key(i));
    }
    engine.gc();
    // The early snapshot reads nothing (it began before every write), so
    // it keeps nothing: one version a key is left, the newest (a
    // tombstone for the deleted keys, which stay until no reader is
    // below them).
    assert_eq!(
        engine.stats().versions_alive,
        u64::from(KEYS),
        "the early snapshot holds no version it cannot read: {:?}",
        engine.stats()
    );
    assert!(
        contents(&early).is_empty(),
        "the early snapshot saw nothing"
    );

    // The long-lived readers: a snapshot and a read-only transaction.
    let snap = engine.snapshot();
    let txn = engine.begin();
    assert_eq!(txn.start_ts(), snap.ts());
    let at_snap = model.clone();
    drop(early);
    engine.gc();
    let s = engine.stats();
    assert_eq!(s.watermark, snap.ts());
    assert_eq!(
        s.versions_alive,
        at_snap.len() as u64,
        "only what the snapshot reads is left: {s:?}"
    );
    assert_eq!(
        s.keys,
        at_snap.len() as u64,
        "keys deleted below the watermark are gone"
    );

    // Overwrite, delete and recreate keys many times; the snapshot and the
    // transaction keep reading exactly the state at their ts.
    let mut touched_after = std::collections::BTreeSet::new();
    for round in 0..40 {
        for i in 0..KEYS {
            match rng.below(10) {
                0..=5 => {
                    let v = format!("after{round}-{i}").into_bytes();
                    put(&engine, key(i), &v);
                    model.insert(key(i), v);
                }
                6..=8 if model.contains_key(&key(i)) => {
                    delete(&engine, key(i));
                    model.remove(&key(i));
                }
                _ => continue,
            }
            touched_after.insert(key(i));
        }
        // A multi-key commit too.
        let mut t = engine.begin();
        for i in [1, 2, 3] {
            let v = format!("multi{round}").into_bytes();
            t.put(key(i), &v).unwrap();
            model.insert(key(i), v);
        }
        t.commit().unwrap();
        touched_after.extend([key(1), key(2), key(3)]);

        if round % 5 == 4 {
            engine.gc();
            // Exactly what some reader can read is kept: the version the
            // snapshot reads of each key it sees, and the newest of each
            // key written since (a tombstone too), for readers to come.
            // None of the versions written in between.
            let s = engine.stats();
            assert_eq!(
                s.versions_alive,
                (at_snap.len() + touched_after.len()) as u64,
                "round {round}: {s:?}"
            );
            assert_eq!(s.watermark, snap.ts());
        }
        for i in 0..KEYS {
            let got = snap.get(key(i)).unwrap().map(|b| b.to_vec());
            assert_eq!(got.as_ref(), at_snap.get(&key(i)), "round {round} key {i}");
        }
        assert_same(
            &contents(&snap),
            &at_snap,
            &format!("round {round}: snapshot scan"),
        );
        let prefix: Model = snap
            .scan_prefix("key01")
            .unwrap()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect();
        let expected: Model = at_snap
            .iter()
            .filter(|(k, _)| k.starts_with(b"key01"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        assert_same(
            &prefix,
            &expected,
            &format!("round {round}: snapshot prefix scan"),
        );
        for i in (0..KEYS).step_by(13) {
            let got = txn.get(key(i)).unwrap().map(|b| b.to_vec());
            assert_eq!(got.as_ref(), at_snap.get(&key(i)), "txn, round {round}");
        }
        assert_same(
            &contents(&engine.snapshot()),
            &model,
            &format!("round {round}: now"),
        );
    }

    // Once the readers are gone, a sweep leaves one version per live key
    // and forgets the deleted keys.
    let reclaimed_before = engine.stats().versions_reclaimed;
    drop(snap);
    drop(txn);
    engine.gc();
    let s = engine.stats();
    assert_eq!(s.readers, 0);
    assert_eq!(s.watermark, s.visible_ts);
    assert_eq!(s.keys, model.len() as u64, "deleted keys are gone: {s:?}");
    assert_eq!(s.versions_alive, model.len() as u64, "one per key: {s:?}");
    assert!(s.versions_reclaimed > reclaimed_before);
    assert_same(
        &contents(&engine.snapshot()),
        &model,
        "after the final sweep",
    );
}

#[test]
fn commits_alone_reclaim_what_a_dropped_snapshot_held() {
    const KEYS: u32 = 100;
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), never()).unwrap();
    let mut model = Model::new();
    for i in 0..KEYS {
        put(&engine, key(i), "first");
        model.insert(key(i), b"first".to_vec());
    }
    let snap = engine.snapshot();
    for round in 0..20 {
        for i in 0..KEYS {
            if round == 19 && i % 4 == 0 {
                delete(&engine, key(i));
                model.remove(&key(i));
            } else {
                let v = format!("r{round}").into_bytes();
                put(&engine, key(i), &v);
                model.insert(key(i), v);
            }
        }
    }
    // The snapshot keeps what it reads (each key's first version) and the
    // newest stands: about two versions a key, not twenty, with no `gc()`
    // (installs prune for the readers there are; one more may wait for
    // the collector).
    let alive = engine.stats().versions_alive;
    assert!(
        (u64::from(2 * KEYS)..=u64::from(3 * KEYS)).contains(&alive),
        "versions alive under a long-lived snapshot: {alive}"
    );
    assert!(contents(&snap).values().all(|v| v == b"first"));
    drop(snap);

    // No `gc()`: commits to one unrelated key drive the collector.
    for n in 0..200 {
        put(&engine, "hot", format!("{n}"));
    }
    model.insert(b"hot".to_vec(), b"199".to_vec());
    let s = engine.stats();
    assert_eq!(s.keys, model.len() as u64, "deleted keys are gone: {s:?}");
    assert!(
        s.versions_alive <= s.keys + 1,
        "about one version per key once the snapshot is gone: {s:?}"
    );
    assert_same(
        &contents(&engine.snapshot()),
        &model,
        "after commits alone collected",
    );
}

/// Issue 2: 1,000 keys updated 1,000,000 times leave at most a few versions
/// per key alive. GC must ride on commits: this test never calls `gc()`.
#[test]
fn memory_stays_flat_under_a_million_updates_of_a_thousand_keys() {
    const KEYS: u64 = 1_000;
    const UPDATES: u64 = 1_000_000;
    const MAX_VERSIONS: u64 = 3 * KEYS;
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), never()).unwrap();
    let mut rng = XorShift64(0x2545_f491_4f6c_dd1d);
    let mut last = vec![u64::MAX; KEYS as usize];
    let mut peak = 0;
    for n in 0..UPDATES {
        // Every key once first, then random keys.
        let k = if n < KEYS { n } else { rng.below(KEYS) };
        let mut txn = engine.begin();
        txn.put(k.to_be_bytes(), n.to_le_bytes()).unwrap();
        txn.commit().unwrap();
        last[k as usize] = n;
        if n % 1_000 == 999 {
            let s = engine.stats();
            peak = peak.max(s.versions_alive);
            assert!(
                s.versions_alive <= MAX_VERSIONS,
                "after {} updates: {s:?}",
                n + 1
            );
        }
    }
    let s = engine.stats();
    assert_eq!(s.commits, UPDATES);
    assert_eq!(s.keys, KEYS);
    assert!(s.versions_alive <= MAX_VERSIONS, "at the end: {s:?}");
    assert!(
        s.versions_reclaimed >= UPDATES - MAX_VERSIONS,
        "versions were reclaimed, not just not counted: {s:?}"
    );
    assert_eq!(s.versions_alive + s.versions_reclaimed, UPDATES);
    let snap = engine.snapshot();
    for (k, &n) in last.iter().enumerate() {
        let got = snap.get((k as u64).to_be_bytes()).unwrap();
        assert_eq!(got.as_deref(), Some(&n.to_le_bytes()[..]), "key {k}");
    }
    eprintln!("peak versions_alive {peak} for {KEYS} keys");
}

/// GC that rides on commits from several threads, and full sweeps run at the
/// same time, never take a version from under a live snapshot.
#[test]
fn concurrent_gc_never_breaks_a_live_snapshot() {
    const PAIRS_PER_WRITER: u64 = 50;
    const WRITERS: u64 = 2;
    const COMMITS: u64 = 20_000;
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), never()).unwrap();
    let pair = |w: u64, p: u64| {
        (
            format!("a/{w}/{p:03}").into_bytes(),
            format!("b/{w}/{p:03}").into_bytes(),
        )
    };
    let done = AtomicBool::new(false);
    let checks = AtomicU64::new(0);
    std::thread::scope(|s| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let engine = &engine;
                s.spawn(move || {
                    let mut rng = XorShift64(w + 1);
                    for n in 0..COMMITS {
                        // Each commit writes both keys of a pair: every
                        // snapshot must see them equal.
                        let p = rng.below(PAIRS_PER_WRITER);
                        let (a, b) = pair(w, p);
                        let mut txn = engine.begin();
                        txn.put(&a, n.to_le_bytes()).unwrap();
                        txn.put(&b, n.to_le_bytes()).unwrap();
                        // Writers own disjoint keys: no conflicts.
                        txn.commit().unwrap();
                    }
                })
            })
            .collect();
        let (engine, done, checks) = (&engine, &done, &checks);
        s.spawn(move || {
            // At least one check, however fast the writers are.
            loop {
                let stop = done.load(Ordering::Relaxed);
                let snap = engine.snapshot();
                let first = contents(&snap);
                // Writers and the collector go on while the snapshot lives.
                std::thread::yield_now();
                engine.gc();
                let again = contents(&snap);
                assert_same(&first, &again, "a snapshot's reads changed under GC");
                for w in 0..WRITERS {
                    for p in 0..PAIRS_PER_WRITER {
                        let (a, b) = pair(w, p);
                        assert_eq!(first.get(&a), first.get(&b), "torn pair {w}/{p}");
                    }
                }
                checks.fetch_add(1, Ordering::Relaxed);
                if stop {
                    break;
                }
            }
        });
        let joined: Vec<_> = writers.into_iter().map(|h| h.join()).collect();
        done.store(true, Ordering::Relaxed);
        for result in joined {
            if let Err(panic) = result {
                std::panic::resume_unwind(panic);
            }
        }
    });
    assert!(checks.load(Ordering::Relaxed) > 0);
    engine.gc();
    let s = engine.stats();
    assert_eq!(s.keys, 2 * WRITERS * PAIRS_PER_WRITER);
    assert_eq!(s.versions_alive, s.keys, "{s:?}");
}

#[test]
fn a_conflict_does_not_leak_its_reader() {
    // A transaction refused with Conflict is dropped like any other: it
    // must not hold the watermark back forever.
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), never()).unwrap();
    put(&engine, "k", "0");
    let mut loser = engine.begin();
    put(&engine, "k", "1");
    loser.put("k", "2").unwrap();
    assert!(matches!(loser.commit(), Err(Error::Conflict)));
    let s = engine.stats();
    assert_eq!(s.readers, 0);
    assert_eq!(s.watermark, s.visible_ts);
    engine.gc();
    assert_eq!(engine.stats().versions_alive, 1);
}

#[test]
fn deleting_absent_keys_leaves_no_tombstones_behind() {
    // A delete of a key that does not exist installs a tombstone (other
    // transactions must still conflict with it). Once the watermark passes
    // it, no reader can tell it from no key at all: commits must collect it
    // like any other dead version, or a workload that deletes ids it may
    // never have written grows without bound.
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), never()).unwrap();
    for i in 0..1_000u32 {
        delete(&engine, format!("absent{i:05}"));
    }
    // More commits, so that the collector has had every chance.
    for n in 0..1_000u32 {
        put(&engine, "hot", n.to_le_bytes());
    }
    let s = engine.stats();
    assert_eq!(s.readers, 0);
    assert!(
        s.keys <= 10 && s.versions_alive <= 10,
        "tombstones of absent keys are still held without gc(): {s:?}"
    );
}

/// Several snapshots at different points of a key's history: GC keeps the
/// version each of them reads and the newest, and nothing between, with
/// `gc()` and with commits alone; each snapshot keeps reading its value;
/// dropping the middle one frees only its version.
#[test]
fn snapshots_at_several_points_keep_one_version_each() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), never()).unwrap();
    let mut snaps = Vec::new();
    for n in 0..300u32 {
        put(&engine, "k", format!("v{n}"));
        if n % 100 == 50 {
            snaps.push((engine.snapshot(), format!("v{n}")));
        }
    }
    // Three snapshots (at v50, v150, v250) and the newest (v299): installs
    // alone pruned the rest as they went, at most a version behind.
    let alive = engine.stats().versions_alive;
    assert!((4..=5).contains(&alive), "commits alone: {alive}");
    engine.gc();
    assert_eq!(engine.stats().versions_alive, 4);
    for (snap, v) in &snaps {
        assert_eq!(snap.get("k").unwrap().as_deref(), Some(v.as_bytes()));
    }
    assert_eq!(
        engine.snapshot().get("k").unwrap().as_deref(),
        Some(&b"v299"[..])
    );
    let (middle, _) = snaps.remove(1);
    drop(middle);
    engine.gc();
    assert_eq!(engine.stats().versions_alive, 3);
    for (snap, v) in &snaps {
        assert_eq!(snap.get("k").unwrap().as_deref(), Some(v.as_bytes()));
    }
    snaps.clear();
    engine.gc();
    assert_eq!(engine.stats().versions_alive, 1);
}
