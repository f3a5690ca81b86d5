//! Group commit (ARCHITECTURE.md "Commit protocol", invariant 3; issue 2,
//! behaviour point 2): under `SyncMode::Always`, concurrent committers all
//! succeed, share syncs (`Stats::commits_per_sync` above one: an assertion
//! about sharing, not speed), are all back after reopen, and each of them
//! returns only once a sync has covered its own record.

mod common;

use common::dump;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use mvledger::wal::{FileSystem, SimFs};
use mvledger::{Engine, Options};

type State = BTreeMap<Vec<u8>, Vec<u8>>;

const DIR: &str = "/db";

fn key(thread: usize, i: usize) -> Vec<u8> {
    format!("t{thread:02}-{i:04}").into_bytes()
}

fn value(thread: usize, i: usize) -> Vec<u8> {
    format!("thread {thread} commit {i}").into_bytes()
}

/// Runs `threads` committers of `per_thread` single-key commits each and
/// returns, per thread, the commit timestamps in order; `on_ack` runs right
/// after each commit returns.
fn run_committers(
    engine: &Engine,
    threads: usize,
    per_thread: usize,
    on_ack: &(dyn Fn(u64) + Sync),
) -> Vec<Vec<u64>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (0..per_thread)
                        .map(|i| {
                            let mut txn = engine.begin();
                            txn.put(key(t, i), value(t, i)).unwrap();
                            let ts = txn
                                .commit()
                                .unwrap_or_else(|e| panic!("thread {t} commit {i}: {e}"));
                            on_ack(ts);
                            ts
                        })
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn all_writes(threads: usize, per_thread: usize) -> State {
    (0..threads)
        .flat_map(|t| (0..per_thread).map(move |i| (key(t, i), value(t, i))))
        .collect()
}

#[test]
fn concurrent_committers_share_syncs_and_every_commit_is_back() {
    const THREADS: usize = 16;
    const PER_THREAD: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(dir.path(), Options::default()).unwrap();
        let tss = run_committers(&engine, THREADS, PER_THREAD, &|_| {});
        let mut all: Vec<u64> = tss.iter().flatten().copied().collect();
        for (t, own) in tss.iter().enumerate() {
            assert!(
                own.windows(2).all(|w| w[0] < w[1]),
                "thread {t}: ts not increasing"
            );
        }
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), THREADS * PER_THREAD, "two commits shared a ts");

        let stats = engine.stats();
        assert_eq!(stats.commits, (THREADS * PER_THREAD) as u64);
        assert_eq!(stats.durable_ts, *all.last().unwrap());
        assert_eq!(stats.visible_ts, stats.durable_ts);
        assert!(
            stats.commits_per_sync() > 1.0,
            "{} commits took {} syncs: concurrent committers did not share them",
            stats.commits,
            stats.syncs
        );
        assert_eq!(dump(&engine), all_writes(THREADS, PER_THREAD));
    }
    let engine = Engine::open(dir.path(), Options::default()).unwrap();
    assert_eq!(
        dump(&engine),
        all_writes(THREADS, PER_THREAD),
        "commits missing (or extra) after reopen"
    );
}

/// Where each record ends in the log, by ts, read by the format: segments
/// of a 32-byte header and records `u32 len | u32 crc | u8 kind | payload`,
/// the payload starting with its `u64` ts.
fn record_ends(sim: &SimFs) -> HashMap<u64, (PathBuf, u64)> {
    let mut ends = HashMap::new();
    for path in segments(sim) {
        let bytes = sim.read(&path).unwrap();
        let mut at = 32;
        while at + 17 <= bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let ts = u64::from_le_bytes(bytes[at + 9..at + 17].try_into().unwrap());
            let end = at + 9 + len;
            assert!(
                end <= bytes.len(),
                "a record runs past the end of {}",
                path.display()
            );
            // A clean close's record (kind 3) carries the last ts again.
            if bytes[at + 8] != 3 {
                ends.insert(ts, (path.clone(), end as u64));
            }
            at = end;
        }
    }
    ends
}

/// The log segments in `DIR`, in order.
fn segments(sim: &SimFs) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = sim
        .list(Path::new(DIR))
        .unwrap()
        .into_iter()
        .filter(|name| name.ends_with(".wal"))
        .map(|name| Path::new(DIR).join(name))
        .collect();
    found.sort();
    found
}

#[test]
fn every_committer_returns_only_after_a_sync_covered_its_record() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 60;
    // A simulated machine (`SimFs`: written and synced bytes kept apart),
    // the data directory made durable beforehand (`tests/power_loss.rs`
    // checks a directory the engine creates itself).
    let sim = SimFs::new(1);
    sim.create_dir_all(Path::new(DIR)).unwrap();
    sim.sync_dir(Path::new("/")).unwrap();
    // Small segments, so that some groups straddle a rotation.
    let options = |sim: &SimFs| Options {
        fs: Arc::new(sim.clone()),
        segment_bytes: 4096,
        ..Options::default()
    };
    let engine = Engine::open(DIR, options(&sim)).unwrap();
    // Right after each commit returns: its ts and what was durable then.
    let acks: Mutex<Vec<(u64, HashMap<PathBuf, u64>)>> = Mutex::new(Vec::new());
    run_committers(&engine, THREADS, PER_THREAD, &|ts| {
        let durable = segments(&sim)
            .into_iter()
            .filter_map(|path| Some((path.clone(), sim.synced_len(&path)?)))
            .collect();
        acks.lock().unwrap().push((ts, durable));
    });
    assert!(engine.stats().log_segments > 2, "the log did not rotate");
    let image = sim.crash_image();
    drop(engine);

    let ends = record_ends(&sim);
    let acks = acks.into_inner().unwrap();
    assert_eq!(acks.len(), THREADS * PER_THREAD);
    for (ts, durable) in &acks {
        let (path, end) = &ends[ts];
        let synced = durable.get(path).copied().unwrap_or(0);
        assert!(
            synced >= *end,
            "commit ts {ts} returned when {} was durable to byte {synced}, \
             but its record ends at {end}",
            path.display()
        );
    }
    // A power cut after the last commit returned keeps every commit.
    let engine = Engine::open(DIR, options(&image)).unwrap();
    assert_eq!(dump(&engine), all_writes(THREADS, PER_THREAD));
}

/// A big commit under `Always` (at least the engine's `OVERLAP_MIN`, 4,096
/// writes) writes and syncs its record on a helper thread while it
/// installs. When it returns, it is durable and wholly visible, and it
/// took one sync, not two.
#[test]
fn a_big_commit_syncs_once_beside_its_install_and_returns_durable_and_visible() {
    const WRITES: usize = 6_000;
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), Options::default()).unwrap();
    let mut txn = engine.begin();
    txn.put(b"small", b"1").unwrap();
    txn.commit().unwrap();
    let syncs = engine.stats().syncs;
    let mut txn = engine.begin();
    for i in 0..WRITES {
        txn.put(format!("big-{i:05}"), format!("{i}")).unwrap();
    }
    let ts = txn.commit().unwrap();
    let stats = engine.stats();
    assert_eq!(
        stats.syncs,
        syncs + 1,
        "the big commit took more than one sync"
    );
    assert!(
        stats.durable_ts >= ts,
        "returned at {ts}, durable {}",
        stats.durable_ts
    );
    assert!(
        stats.visible_ts >= ts,
        "returned at {ts}, visible {}",
        stats.visible_ts
    );
    let snap = engine.snapshot();
    assert_eq!(snap.scan_prefix(b"big-").unwrap().count(), WRITES);
    drop(snap);
    drop(engine);
    let engine = Engine::open(dir.path(), Options::default()).unwrap();
    assert_eq!(
        engine.snapshot().scan_prefix(b"big-").unwrap().count(),
        WRITES
    );
}
