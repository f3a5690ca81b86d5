//! A failed log write or sync poisons the engine (ARCHITECTURE.md "Commit
//! protocol", invariant 3; issue 2, behaviour point 6): the commit that met
//! the failure gets `Error::Io`, every later call gets `Error::Poisoned`, the
//! engine never retries the write or the sync, and nothing that was not
//! durable is acknowledged. After the poisoned engine is dropped, a reopen
//! recovers a prefix of the commit order holding every acknowledged commit,
//! both from the files as they are and from only the bytes a sync made
//! durable (what a power cut right after the failure would leave: the
//! engine runs on `SimFs`, wrapped in `FaultyFs` for the fault).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mvledger::wal::{FaultyFs, FileSystem, Op, SimFs};
use mvledger::{Engine, Error, Options, Snapshot, SyncMode, Transaction};

type State = BTreeMap<Vec<u8>, Vec<u8>>;

const DIR: &str = "/db";

/// A simulated machine with the data directory made durable beforehand
/// (`tests/power_loss.rs` checks a directory the engine creates itself).
fn machine() -> SimFs {
    let sim = SimFs::new(1);
    sim.create_dir_all(Path::new(DIR)).unwrap();
    sim.sync_dir(Path::new("/")).unwrap();
    sim
}

fn options(fs: &(impl FileSystem + Clone)) -> Options {
    Options {
        fs: Arc::new(fs.clone()),
        ..Options::default()
    }
}

fn dump(engine: &Engine) -> State {
    engine
        .snapshot()
        .scan(..)
        .unwrap()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

/// Commit `i` writes its own key and overwrites a shared one, so that the
/// states after each prefix of the commits all differ.
fn writes(i: usize) -> [(Vec<u8>, Vec<u8>); 2] {
    [
        (
            format!("key-{i:04}").into_bytes(),
            format!("value {i} {}", "v".repeat(150)).into_bytes(),
        ),
        (b"last".to_vec(), format!("{i}").into_bytes()),
    ]
}

fn state_after(n: usize) -> State {
    (0..n).flat_map(writes).collect()
}

/// The n for which `state` is the state after commits `0..n`.
fn prefix_len(state: &State, attempted: usize) -> usize {
    (0..=attempted)
        .find(|&n| *state == state_after(n))
        .unwrap_or_else(|| panic!("the recovered state is no prefix of the commits"))
}

fn commit(engine: &Engine, i: usize) -> mvledger::Result<u64> {
    let mut txn = engine.begin();
    for (key, value) in writes(i) {
        txn.put(key, value)?;
    }
    txn.commit()
}

fn expect_poisoned<T>(what: &str, result: mvledger::Result<T>) {
    match result {
        Err(Error::Poisoned) => {}
        Err(e) => panic!("{what}: expected Poisoned, got {e:?}"),
        Ok(_) => panic!("{what}: expected Poisoned, got Ok"),
    }
}

/// Every call on a poisoned engine refuses with `Poisoned`.
fn assert_poisoned(engine: &Engine, pending: Transaction, old: &Snapshot) {
    expect_poisoned("commit of a transaction begun before", pending.commit());
    let mut txn = engine.begin();
    expect_poisoned("get", txn.get(b"key-0000"));
    expect_poisoned("put", txn.put(b"new", b"value"));
    expect_poisoned("delete", txn.delete(b"key-0000"));
    expect_poisoned("scan", txn.scan(..).map(Iterator::count));
    expect_poisoned("scan_prefix", txn.scan_prefix(b"key").map(Iterator::count));
    expect_poisoned("commit", txn.commit());
    let snap = engine.snapshot();
    expect_poisoned("snapshot get", snap.get(b"key-0000"));
    expect_poisoned("snapshot scan", snap.scan(..).map(Iterator::count));
    expect_poisoned(
        "snapshot scan_prefix",
        snap.scan_prefix(b"k").map(Iterator::count),
    );
    expect_poisoned("older snapshot get", old.get(b"key-0000"));
    expect_poisoned("older snapshot scan", old.scan(..).map(Iterator::count));
    expect_poisoned(
        "apply",
        engine.apply(|batch| {
            batch.put(b"new", b"value")?;
            Ok(())
        }),
    );
    expect_poisoned(
        "read-only apply",
        engine.apply(|batch| Ok(batch.get(b"last"))),
    );
    expect_poisoned("checkpoint", engine.checkpoint());
    expect_poisoned("sync", engine.sync());
}

/// The length of the last log segment, as the files are now, without the
/// zeros the log lays ahead of its records (`WritableFile::zero_to`; the
/// records here never end in a zero byte).
fn last_segment_len(sim: &SimFs) -> u64 {
    let mut found: Vec<PathBuf> = sim
        .list(Path::new(DIR))
        .unwrap()
        .into_iter()
        .filter(|name| name.ends_with(".wal"))
        .map(|name| Path::new(DIR).join(name))
        .collect();
    found.sort();
    let bytes = sim.read(&found.pop().unwrap()).unwrap();
    bytes
        .iter()
        .rposition(|&b| b != 0)
        .map_or(0, |at| at as u64 + 1)
}

fn calls(fs: &FaultyFs) -> [u64; 3] {
    [fs.calls(Op::Sync), fs.calls(Op::Write), fs.calls(Op::Open)]
}

/// What one failure run found.
struct Outcome {
    /// Commits acknowledged before the failure.
    acked: usize,
    /// Commits attempted, the failed one included.
    attempted: usize,
    /// Commits in the power-cut image, reopened.
    in_image: usize,
    /// Commits in the directory as the poisoned engine left it, reopened.
    in_dir: usize,
    /// The last segment's length before the failed commit, after it, and
    /// after the reopen.
    segment_lens: [u64; 3],
}

/// Commits until `op`, armed after `warmup` commits, fails one; checks the
/// failure, the poisoning and that nothing is retried; then recovers both
/// the power-cut image and the directory as left, and checks that the
/// reopened log takes new commits.
fn fail_and_recover(op: Op, segment_bytes: u64, warmup: usize) -> Outcome {
    fail_and_recover_armed(&[(op, 1)], segment_bytes, warmup)
}

/// A log rotation whose new segment is refused, and then whose clean-up
/// fails too (`faults`: what fails, and at which call from the arming).
fn fail_and_recover_with(faults: &[(Op, u64)]) -> Outcome {
    fail_and_recover_armed(faults, 4096, 0)
}

/// `fail_and_recover` with every fault of `faults` armed at once (one
/// per kind of call).
fn fail_and_recover_armed(faults: &[(Op, u64)], segment_bytes: u64, warmup: usize) -> Outcome {
    let op = faults[0].0;
    let sim = machine();
    let faulty = FaultyFs::new(Arc::new(sim.clone()));
    let engine = Engine::open(
        DIR,
        Options {
            segment_bytes,
            ..options(&faulty)
        },
    )
    .unwrap();
    for i in 0..warmup {
        commit(&engine, i).unwrap();
    }
    let old_snapshot = engine.snapshot();
    let mut pending = engine.begin();
    pending.put(b"pending", b"never").unwrap();

    for &(op, n) in faults {
        faulty.fail_nth(op, n);
    }
    let mut acked = warmup;
    let (error, len_before) = loop {
        assert!(acked < warmup + 1000, "{op:?} was never called");
        let len = last_segment_len(&sim);
        match commit(&engine, acked) {
            Ok(_) => acked += 1,
            Err(e) => break (e, len),
        }
    };
    assert!(
        matches!(error, Error::Io(_)),
        "the commit that met the failed {op:?} got {error:?}, not Io"
    );
    assert_eq!(faulty.injected(), faults.len() as u64);
    let len_failed = last_segment_len(&sim);
    let calls_at_failure = calls(&faulty);

    assert_poisoned(&engine, pending, &old_snapshot);
    drop(old_snapshot);
    assert_eq!(
        calls(&faulty),
        calls_at_failure,
        "a poisoned engine went on writing, syncing or opening files"
    );
    let image = sim.crash_image();
    drop(engine);
    assert_eq!(
        calls(&faulty),
        calls_at_failure,
        "dropping a poisoned engine wrote or synced (a retry)"
    );

    let attempted = acked + 1;
    let in_image = {
        let engine = Engine::open(DIR, options(&image)).unwrap();
        prefix_len(&dump(&engine), attempted)
    };
    let (in_dir, len_reopened) = {
        let engine = Engine::open(DIR, options(&sim)).unwrap();
        let n = prefix_len(&dump(&engine), attempted);
        let len = last_segment_len(&sim);
        // The recovered log takes new commits, and a further reopen sees
        // them.
        for i in n..n + 3 {
            commit(&engine, i).unwrap();
        }
        (n, len)
    };
    let engine = Engine::open(DIR, options(&sim)).unwrap();
    assert_eq!(dump(&engine), state_after(in_dir + 3));
    assert_eq!(engine.snapshot().get(b"pending").unwrap(), None);

    for (what, n) in [("power-cut image", in_image), ("directory as left", in_dir)] {
        assert!(
            n >= acked,
            "{op:?}: the {what} lost acknowledged commits: {n} of {acked} back"
        );
    }
    Outcome {
        acked,
        attempted,
        in_image,
        in_dir,
        segment_lens: [len_before, len_failed, len_reopened],
    }
}

#[test]
fn a_failed_sync_poisons_and_loses_no_acknowledged_commit() {
    let out = fail_and_recover(Op::Sync, 64 << 20, 5);
    assert_eq!(out.acked, 5);
    // The failed commit's record was written but never synced: a power cut
    // takes it; without one it may still be in the file (either is fine).
    assert_eq!(
        out.in_image, out.acked,
        "an unsynced commit survived the cut"
    );
    assert!(out.in_dir <= out.attempted);
}

#[test]
fn a_failed_write_poisons_and_loses_no_acknowledged_commit() {
    let out = fail_and_recover(Op::Write, 64 << 20, 5);
    assert_eq!(out.acked, 5);
    assert_eq!(out.in_image, out.acked);
    assert_eq!(
        out.in_dir, out.acked,
        "a commit whose write failed came back"
    );
    let [before, failed, reopened] = out.segment_lens;
    assert_eq!(failed, before, "a failed write left bytes");
    assert_eq!(reopened, before);
}

#[test]
fn a_short_write_poisons_and_its_torn_tail_is_cut_on_reopen() {
    let out = fail_and_recover(Op::ShortWrite, 64 << 20, 5);
    assert_eq!(out.acked, 5);
    let [before, failed, reopened] = out.segment_lens;
    assert!(failed > before, "the short write left no torn tail to test");
    assert_eq!(out.in_image, out.acked);
    assert_eq!(out.in_dir, out.acked, "half a record was replayed");
    assert_eq!(
        reopened, before,
        "the torn tail was not cut at the record start"
    );
}

#[test]
fn a_segment_that_cannot_be_created_during_rotation_leaves_the_group_in_the_active_one() {
    // The log rotates when its segment is full. When the next segment
    // cannot be created (a full disk, no file handle left), or its name
    // may not be durable (the directory sync failed), the attempt is
    // removed durably and the group is written to the active segment,
    // past its size: the commits are acknowledged, nothing poisons, and
    // the next group tries the rotation again. (It used to poison.)
    //
    // Under `Never` the log writes its buffer when it passes the
    // segment's size (the log's `flush_bytes`), without a sync: the
    // first open, write, sync and directory sync after the arming are
    // the new segment's.
    for op in [Op::Open, Op::Write, Op::Sync, Op::SyncDir] {
        let sim = machine();
        let faulty = FaultyFs::new(Arc::new(sim.clone()));
        let engine = Engine::open(
            DIR,
            Options {
                segment_bytes: 4096,
                sync: SyncMode::Never,
                ..options(&faulty)
            },
        )
        .unwrap();
        for i in 0..5 {
            commit(&engine, i).unwrap();
        }
        engine.sync().unwrap();
        let before = segment_names(&sim);
        assert_eq!(before.len(), 1, "{op:?}: the log rotated too soon");
        faulty.fail_nth(op, 1);
        let mut acked = 5;
        while faulty.injected() == 0 {
            assert!(acked < 1000, "{op:?}: the log never rotated");
            commit(&engine, acked)
                .unwrap_or_else(|e| panic!("{op:?}: a refused rotation failed a commit: {e}"));
            acked += 1;
        }
        assert_eq!(segment_names(&sim), before, "{op:?}: a segment was left");
        assert_eq!(engine.poisoned_by(), None, "{op:?}");
        assert!(
            last_segment_len(&sim) > 4096,
            "{op:?}: the group is not in the active segment"
        );
        engine.sync().unwrap();
        let image = sim.crash_image();
        // The next group rotates.
        commit(&engine, acked).unwrap();
        engine.sync().unwrap();
        assert_eq!(segment_names(&sim).len(), 2, "{op:?}: no rotation after");
        drop(engine);
        for (what, fs, n) in [
            ("power-cut image", image, acked),
            ("directory", sim, acked + 1),
        ] {
            let engine = Engine::open(DIR, options(&fs)).unwrap();
            assert_eq!(dump(&engine), state_after(n), "{op:?}: {what}");
        }
    }
}

#[test]
fn a_commit_whose_rotation_is_refused_is_acknowledged_under_always() {
    // The same under the default mode, where each commit writes and syncs
    // its own group (no file is opened between commits but to rotate).
    for op in [Op::Open, Op::SyncDir] {
        let sim = machine();
        let faulty = FaultyFs::new(Arc::new(sim.clone()));
        let engine = Engine::open(
            DIR,
            Options {
                segment_bytes: 4096,
                ..options(&faulty)
            },
        )
        .unwrap();
        faulty.fail_nth(op, 1);
        let mut acked = 0;
        while faulty.injected() == 0 {
            assert!(acked < 1000, "{op:?}: the log never rotated");
            commit(&engine, acked).unwrap();
            acked += 1;
        }
        assert_eq!(segment_names(&sim).len(), 1, "{op:?}: a segment was left");
        let image = sim.crash_image();
        commit(&engine, acked).unwrap();
        assert_eq!(segment_names(&sim).len(), 2, "{op:?}: no rotation after");
        drop(engine);
        for (what, fs, n) in [
            ("power-cut image", image, acked),
            ("directory", sim, acked + 1),
        ] {
            let engine = Engine::open(DIR, options(&fs)).unwrap();
            assert_eq!(dump(&engine), state_after(n), "{op:?}: {what}");
        }
    }
}

#[test]
fn a_refused_rotation_that_cannot_be_cleared_up_poisons() {
    // What the attempt left must go before the group is written to the
    // active segment: a segment named after records that are elsewhere
    // reads as a gap after a crash. When it cannot be removed, or the
    // removal cannot be made durable, the log is poisoned.
    for undo in [Op::Remove, Op::SyncDir] {
        let out = fail_and_recover_with(&[(Op::Open, 1), (undo, 1)]);
        assert!(
            out.acked > 5,
            "{undo:?}: rotated after {} commits",
            out.acked
        );
        assert_eq!(out.in_image, out.acked, "{undo:?}");
        assert!(out.in_dir <= out.attempted, "{undo:?}");
    }
}

#[test]
fn a_failed_explicit_sync_poisons() {
    let sim = machine();
    let faulty = FaultyFs::new(Arc::new(sim.clone()));
    let engine = Engine::open(
        DIR,
        Options {
            sync: SyncMode::Never,
            ..options(&faulty)
        },
    )
    .unwrap();
    for i in 0..10 {
        commit(&engine, i).unwrap();
    }
    let old_snapshot = engine.snapshot();
    let mut pending = engine.begin();
    pending.put(b"pending", b"never").unwrap();
    faulty.fail_nth(Op::Sync, 1);
    assert!(matches!(engine.sync(), Err(Error::Io(_))));
    let syncs = faulty.calls(Op::Sync);
    assert_poisoned(&engine, pending, &old_snapshot);
    drop(old_snapshot);
    drop(engine);
    assert_eq!(faulty.calls(Op::Sync), syncs, "the failed sync was retried");
    // The records were written before the sync failed; without a power
    // cut they are all still there.
    let engine = Engine::open(DIR, options(&sim)).unwrap();
    assert_eq!(dump(&engine), state_after(10));
}

#[test]
fn a_failed_group_sync_acknowledges_no_committer_of_the_group() {
    const THREADS: usize = 6;
    let sim = machine();
    let faulty = FaultyFs::new(Arc::new(sim.clone()));
    let engine = Engine::open(DIR, options(&faulty)).unwrap();
    let key = |t: usize, i: usize| format!("t{t}-{i:04}").into_bytes();
    faulty.fail_nth(Op::Sync, 25);
    // Per thread: commits acknowledged, and the errors seen.
    let results: Vec<(usize, Vec<Error>)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|t| {
                let engine = &engine;
                s.spawn(move || {
                    let mut acked = 0;
                    let mut errors = Vec::new();
                    for i in 0..1000 {
                        let mut txn = engine.begin();
                        let put = txn.put(key(t, i), b"v");
                        match put.and_then(|()| txn.commit()) {
                            Ok(_) => {
                                assert!(errors.is_empty(), "a commit succeeded after an error");
                                acked += 1;
                            }
                            Err(e) => {
                                errors.push(e);
                                if errors.len() == 2 {
                                    break;
                                }
                            }
                        }
                    }
                    (acked, errors)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut io_errors = 0;
    for (t, (_, errors)) in results.iter().enumerate() {
        assert_eq!(errors.len(), 2, "thread {t} never saw the failure");
        for (j, e) in errors.iter().enumerate() {
            match e {
                Error::Io(_) => io_errors += 1,
                Error::Poisoned => {}
                other => panic!("thread {t}: unexpected {other:?}"),
            }
            assert!(
                j == 0 || matches!(e, Error::Poisoned),
                "thread {t}: {e:?} after the first error"
            );
        }
    }
    assert_eq!(
        io_errors, 1,
        "the failed sync's error went to exactly its leader"
    );

    let image = sim.crash_image();
    drop(engine);
    for (what, fs) in [("power-cut image", &image), ("directory as left", &sim)] {
        let engine = Engine::open(DIR, options(fs)).unwrap();
        let state = dump(&engine);
        for (t, &(acked, _)) in results.iter().enumerate() {
            // Every acknowledged commit is back, and each thread's commits
            // form a prefix of its sequence (at most the failed one more).
            for i in 0..acked {
                assert!(
                    state.contains_key(&key(t, i)),
                    "{what}: thread {t} lost commit {i}"
                );
            }
            let back = (0..)
                .take_while(|&i| state.contains_key(&key(t, i)))
                .count();
            assert!(
                back <= acked + 1,
                "{what}: thread {t} has {back} commits, acked {acked}"
            );
            let stray = state
                .keys()
                .filter(|k| k.starts_with(format!("t{t}-").as_bytes()))
                .count();
            assert_eq!(stray, back, "{what}: thread {t}'s commits are not a prefix");
        }
    }
}

/// A big commit under `Always` writes and syncs its record on a helper
/// thread while it installs (the engine's `OVERLAP_MIN`, 4,096 writes).
/// A failed sync there is still the commit's own error: `Io`, not
/// `Poisoned`; nothing of the commit becomes visible, and it is gone after
/// a power cut while the commits acknowledged before it are all there.
#[test]
fn a_failed_sync_beside_a_big_commits_install_is_the_commits_error() {
    const WRITES: usize = 5_000;
    let sim = machine();
    let faulty = FaultyFs::new(Arc::new(sim.clone()));
    let engine = Engine::open(DIR, options(&faulty)).unwrap();
    for i in 0..3 {
        commit(&engine, i).unwrap();
    }
    let before = dump(&engine);
    faulty.fail_nth(Op::Sync, 1);
    let mut txn = engine.begin();
    for i in 0..WRITES {
        txn.put(format!("big-{i:05}"), b"x").unwrap();
    }
    match txn.commit() {
        Err(Error::Io(_)) => {}
        other => panic!("the big commit whose sync failed got {other:?}, not Io"),
    }
    assert_eq!(faulty.injected(), 1);
    // Poisoned: no call reads, so the visible state is checked through the
    // power-cut image and a reopen instead.
    expect_poisoned("get after the failure", engine.snapshot().get(b"big-00000"));
    let image = sim.crash_image();
    drop(engine);
    let reopened = Engine::open(DIR, options(&image)).unwrap();
    assert_eq!(
        dump(&reopened),
        before,
        "the power-cut image is not the acknowledged state"
    );
}

/// The log segments in `sim`'s data directory.
fn segment_names(sim: &SimFs) -> Vec<String> {
    let mut names: Vec<String> = sim
        .list(Path::new(DIR))
        .unwrap()
        .into_iter()
        .filter(|name| name.ends_with(".wal"))
        .collect();
    names.sort();
    names
}

#[test]
fn a_checkpoint_that_cannot_start_its_segment_fails_alone_and_leaves_no_segment() {
    // A checkpoint first seals the log and starts a new segment. On a full
    // disk that creation fails: only the checkpoint fails, since every
    // record is synced in the active segment, which goes on; what the
    // attempt left (a header written, not synced) is removed durably. It
    // used to poison the engine.
    for op in [Op::Open, Op::Write, Op::Sync] {
        let sim = machine();
        let faulty = FaultyFs::new(Arc::new(sim.clone()));
        let engine = Engine::open(DIR, options(&faulty)).unwrap();
        for i in 0..5 {
            commit(&engine, i).unwrap();
        }
        let before = segment_names(&sim);
        faulty.fail_nth(op, 1);
        match engine.checkpoint() {
            Err(Error::Io(_)) => {}
            other => panic!("{op:?}: the checkpoint gave {other:?}, not Io"),
        }
        assert_eq!(faulty.injected(), 1, "{op:?}");
        assert_eq!(segment_names(&sim), before, "{op:?}: a segment was left");
        for i in 5..10 {
            commit(&engine, i).unwrap();
        }
        let image = sim.crash_image();
        engine.checkpoint().unwrap();
        drop(engine);
        for (what, fs) in [("power-cut image", image), ("directory", sim)] {
            let engine = Engine::open(DIR, options(&fs)).unwrap();
            assert_eq!(dump(&engine), state_after(10), "{op:?}: {what}");
        }
    }
}

#[test]
fn a_poisoned_engine_says_what_poisoned_it_also_under_interval() {
    // Under `Interval` the sync that fails is the sync thread's: no caller
    // gets its error, every later call gets `Poisoned` alone.
    // `poisoned_by` still tells what happened.
    for sync in [
        SyncMode::Always,
        SyncMode::Interval(Duration::from_millis(2)),
    ] {
        let sim = machine();
        let faulty = FaultyFs::new(Arc::new(sim.clone()));
        let engine = Engine::open(
            DIR,
            Options {
                sync,
                ..options(&faulty)
            },
        )
        .unwrap();
        commit(&engine, 0).unwrap();
        assert_eq!(engine.poisoned_by(), None, "{sync:?}");
        faulty.fail_nth(Op::Sync, 1);
        let started = std::time::Instant::now();
        let mut i = 1;
        loop {
            match commit(&engine, i) {
                Ok(_) => i += 1,
                Err(Error::Poisoned | Error::Io(_)) => break,
                Err(e) => panic!("{sync:?}: {e}"),
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{sync:?}: never failed"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        let cause = engine.poisoned_by().expect("a cause");
        assert!(cause.contains("injected fault: Sync"), "{sync:?}: {cause}");
    }
}
