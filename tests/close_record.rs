//! The close record (`wal::record::KIND_CLOSE`) a clean close ends the
//! log with (ARCHITECTURE.md "Redo log"; issue 5, item 3), checked from
//! outside (these tests came from an outside review of the change):
//!
//! - a power cut at any step of a clean close, under every sync mode and
//!   every way the simulated disk tears a write, loses no acknowledged
//!   commit, and the log reopens, takes commits and reopens again;
//! - a torn record after a close record (a crash after a reopen) is cut;
//! - open and close cycles without writes do not grow the log, and each
//!   cycle with writes adds one close record, carrying the last ts;
//! - a poisoned engine writes no close record, and a failure while the
//!   close record is written loses nothing.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use common::{dump, segments};

use mvledger::wal::record::{KIND_CLOSE, decode_frame};
use mvledger::wal::{FaultyFs, FileSystem, MemFs, Op, SimFs};
use mvledger::{Engine, Options, SyncMode};

type State = BTreeMap<Vec<u8>, Vec<u8>>;
const HDR: usize = 32;

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:04}").into_bytes()
}
fn value(i: usize) -> Vec<u8> {
    format!("value of commit {i}").into_bytes()
}
fn expected(r: std::ops::Range<usize>) -> State {
    r.map(|i| (key(i), value(i))).collect()
}
fn commit(engine: &Engine, i: usize) -> u64 {
    let mut txn = engine.begin();
    txn.put(key(i), value(i)).unwrap();
    txn.commit().unwrap()
}
fn log_bytes(dir: &Path) -> u64 {
    segments(dir)
        .iter()
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}
/// (offset, kind, ts, end) of each frame of a segment's bytes, up to the first bad one.
fn frames(bytes: &[u8]) -> Vec<(usize, u8, u64, usize)> {
    let mut out = Vec::new();
    let mut at = HDR;
    while at < bytes.len() {
        match decode_frame(bytes, at) {
            Ok(f) => {
                out.push((at, f.kind, f.ts(), f.end));
                at = f.end;
            }
            Err(_) => break,
        }
    }
    out
}
fn ends_with_close(bytes: &[u8]) -> bool {
    frames(bytes)
        .last()
        .is_some_and(|f| f.1 == KIND_CLOSE && f.3 == bytes.len())
}

fn sim_opts(fs: &SimFs, sync: SyncMode) -> Options {
    Options {
        fs: Arc::new(fs.clone()),
        sync,
        segment_bytes: 4096,
        ..Options::default()
    }
}

fn crash_during_close(
    sync: SyncMode,
    torn: mvledger::wal::sim::Torn,
    seed: u64,
    reopen_first: bool,
) -> u64 {
    let dir = Path::new("/db");
    let mut steps = 0;
    for n in 1..400u64 {
        let sim = SimFs::new(seed * 1000 + n).with_torn(torn);
        let (acked, written);
        {
            if reopen_first {
                let e = Engine::open(dir, sim_opts(&sim, sync)).unwrap();
                commit(&e, 0);
                commit(&e, 1);
                e.sync().unwrap();
            }
            let e = Engine::open(dir, sim_opts(&sim, sync)).unwrap();
            let base = if reopen_first { 2 } else { 0 };
            for i in base..base + 4 {
                commit(&e, i);
            }
            e.sync().unwrap(); // acknowledged, whatever the mode
            // two more: acknowledged under Always only; the close must sync them
            commit(&e, base + 4);
            commit(&e, base + 5);
            written = base + 6;
            acked = if sync == SyncMode::Always {
                written
            } else {
                base + 4
            };
            sim.cut_power_after(n);
            drop(e);
        }
        let cut = sim.is_off();
        let sim = sim.crash();
        let e = Engine::open(dir, sim_opts(&sim, sync))
            .unwrap_or_else(|err| panic!("{sync:?} {torn:?} n={n}: open failed: {err}"));
        let got = dump(&e);
        let m = got.len();
        assert!(
            m >= acked && m <= written,
            "{sync:?} {torn:?} n={n}: {m} keys, {acked} acknowledged"
        );
        assert_eq!(got, expected(0..m), "{sync:?} {torn:?} n={n}");
        if !cut {
            assert_eq!(
                m, written,
                "{sync:?}: a clean close kept only {m} of {written}"
            );
        }
        drop(e);
        let e = Engine::open(dir, sim_opts(&sim, sync)).unwrap();
        assert_eq!(dump(&e), expected(0..m), "{sync:?} {torn:?} n={n} (2nd)");
        drop(e);
        let e = Engine::open(dir, sim_opts(&sim, sync)).unwrap();
        commit(&e, m);
        drop(e);
        let e = Engine::open(dir, sim_opts(&sim, sync)).unwrap();
        assert_eq!(
            dump(&e),
            expected(0..m + 1),
            "{sync:?} {torn:?} n={n} (3rd)"
        );
        if !cut {
            steps = n;
            break;
        }
    }
    assert!(steps > 0);
    steps
}

#[test]
fn a_crash_at_every_step_of_a_clean_close_loses_nothing() {
    use mvledger::wal::sim::Torn;
    for sync in [
        SyncMode::Always,
        SyncMode::Never,
        SyncMode::Interval(std::time::Duration::from_millis(5)),
    ] {
        for torn in [
            Torn::Nothing,
            Torn::Prefix,
            Torn::Zeros,
            Torn::Garbage,
            Torn::Reordered,
        ] {
            for seed in 0..4 {
                for reopen_first in [false, true] {
                    let steps = crash_during_close(sync, torn, seed, reopen_first);
                    if seed == 0 && torn == Torn::Nothing {
                        eprintln!(
                            "{sync:?} reopen_first={reopen_first}: a clean close takes {steps} calls"
                        );
                    }
                }
            }
        }
    }
}

/// Writes after a reopen of a closed log, unsynced, then a crash that
/// tears them: the torn record follows a close record.
#[test]
fn a_torn_record_after_a_close_record_is_cut() {
    use mvledger::wal::sim::Torn;
    let dir = Path::new("/db");
    for torn in [Torn::Prefix, Torn::Zeros, Torn::Garbage] {
        for seed in 0..200u64 {
            let sim = SimFs::new(seed).with_torn(torn);
            {
                let e = Engine::open(dir, sim_opts(&sim, SyncMode::Always)).unwrap();
                for i in 0..3 {
                    commit(&e, i);
                }
            }
            let e = Engine::open(dir, sim_opts(&sim, SyncMode::Never)).unwrap();
            for i in 3..6 {
                commit(&e, i);
            }
            let sim2 = sim.crash();
            drop(e);
            let e = Engine::open(dir, sim_opts(&sim2, SyncMode::Always))
                .unwrap_or_else(|err| panic!("{torn:?} seed {seed}: {err}"));
            let got = dump(&e);
            let n = got.len();
            assert!(n >= 3, "{torn:?} seed {seed}: lost acknowledged commits");
            assert_eq!(got, expected(0..n), "{torn:?} seed {seed}: not a prefix");
        }
    }
}

#[test]
fn cycles_without_writes_do_not_grow_and_with_writes_add_one_close_each() {
    for sync in [
        SyncMode::Always,
        SyncMode::Never,
        SyncMode::Interval(std::time::Duration::from_millis(2)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let opts = Options {
            sync,
            ..Options::default()
        };
        drop(Engine::open(dir.path(), opts.clone()).unwrap());
        let size0 = log_bytes(dir.path());
        assert_eq!(size0, (HDR + 17) as u64, "{sync:?}");
        for _ in 0..5 {
            let e = Engine::open(dir.path(), opts.clone()).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(5));
            e.sync().unwrap();
            drop(e);
            assert_eq!(
                log_bytes(dir.path()),
                size0,
                "{sync:?}: idle cycle grew the log"
            );
        }
        for c in 0..5 {
            let e = Engine::open(dir.path(), opts.clone()).unwrap();
            commit(&e, c);
            drop(e);
        }
        let seg = segments(dir.path());
        assert_eq!(seg.len(), 1);
        let bytes = std::fs::read(&seg[0]).unwrap();
        let fr = frames(&bytes);
        assert_eq!(
            fr.last().unwrap().3,
            bytes.len(),
            "{sync:?}: frames do not reach the end"
        );
        let closes = fr.iter().filter(|f| f.1 == KIND_CLOSE).count();
        assert_eq!(closes, 6, "{sync:?}: {fr:?}");
        // each close carries the previous record's ts
        let mut last = 0;
        for f in &fr {
            if f.1 == KIND_CLOSE {
                assert_eq!(f.2, last);
            } else {
                last = f.2;
            }
        }
        let e = Engine::open(dir.path(), opts.clone()).unwrap();
        assert_eq!(dump(&e), expected(0..5));
        // idle cycles after writes do not grow it either
        drop(e);
        let sz = log_bytes(dir.path());
        for _ in 0..3 {
            drop(Engine::open(dir.path(), opts.clone()).unwrap());
        }
        assert_eq!(log_bytes(dir.path()), sz);
        // a checkpoint then idle cycles
        let e = Engine::open(dir.path(), opts.clone()).unwrap();
        e.checkpoint().unwrap();
        drop(e);
        let sz = log_bytes(dir.path());
        for _ in 0..3 {
            let e = Engine::open(dir.path(), opts.clone()).unwrap();
            e.checkpoint().unwrap();
            drop(e);
        }
        assert_eq!(
            log_bytes(dir.path()),
            sz,
            "{sync:?}: checkpointed idle cycles grew the log"
        );
        let e = Engine::open(dir.path(), opts.clone()).unwrap();
        assert_eq!(dump(&e), expected(0..5));
    }
}

fn mem_last_segment(fs: &MemFs, dir: &Path) -> Vec<u8> {
    let mut names: Vec<String> = fs
        .list(dir)
        .unwrap()
        .into_iter()
        .filter(|n| n.ends_with(".wal"))
        .collect();
    names.sort();
    fs.read(&dir.join(names.last().unwrap())).unwrap()
}

#[test]
fn a_poisoned_engine_writes_no_close_record() {
    let dir = Path::new("/db");
    for (op, what) in [
        (Op::Sync, "sync"),
        (Op::Write, "write"),
        (Op::ShortWrite, "short write"),
    ] {
        let mem = MemFs::new();
        let fs = Arc::new(FaultyFs::new(Arc::new(mem.clone())));
        let opts = Options {
            fs: fs.clone(),
            ..Options::default()
        };
        {
            let e = Engine::open(dir, opts.clone()).unwrap();
            commit(&e, 0);
            commit(&e, 1);
            fs.fail_nth(op, 1);
            let mut t = e.begin();
            t.put(key(2), value(2)).unwrap();
            assert!(t.commit().is_err(), "{what}");
            assert!(e.poisoned_by().is_some(), "{what}");
            fs.clear();
        }
        let bytes = mem_last_segment(&mem, dir);
        assert!(
            !ends_with_close(&bytes),
            "{what}: a poisoned engine wrote a close record"
        );
        assert!(
            !frames(&bytes).iter().any(|f| f.1 == KIND_CLOSE),
            "{what}: close record in a poisoned log"
        );
        let e = Engine::open(
            dir,
            Options {
                fs: Arc::new(mem.clone()),
                ..Options::default()
            },
        )
        .unwrap();
        let got = dump(&e);
        assert!(
            got == expected(0..2) || got == expected(0..3),
            "{what}: {}",
            got.len()
        );
    }
}

#[test]
fn a_failure_while_writing_the_close_record_loses_nothing() {
    let dir = Path::new("/db");
    for (op, what) in [
        (Op::Write, "write"),
        (Op::ShortWrite, "short"),
        (Op::Sync, "sync"),
        (Op::Truncate, "truncate"),
    ] {
        for mode in [SyncMode::Always, SyncMode::Never] {
            let mem = MemFs::new();
            let fs = Arc::new(FaultyFs::new(Arc::new(mem.clone())));
            let opts = Options {
                fs: fs.clone(),
                sync: mode,
                ..Options::default()
            };
            {
                let e = Engine::open(dir, opts.clone()).unwrap();
                for i in 0..4 {
                    commit(&e, i);
                }
                e.sync().unwrap();
                fs.fail_nth(op, 1);
            }
            fs.clear();
            let e = Engine::open(
                dir,
                Options {
                    fs: Arc::new(mem.clone()),
                    ..Options::default()
                },
            )
            .unwrap_or_else(|err| panic!("{what} {mode:?}: {err}"));
            assert_eq!(dump(&e), expected(0..4), "{what} {mode:?}");
            drop(e);
            assert!(
                ends_with_close(&mem_last_segment(&mem, dir)),
                "{what} {mode:?}"
            );
        }
    }
}
