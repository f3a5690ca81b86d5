//! A failed log write or sync poisons the engine (ARCHITECTURE.md "Commit
//! protocol", invariant 3; issue 2, behaviour point 6): the commit that met
//! the failure gets `Error::Io`, every later call gets `Error::Poisoned`, the
//! engine never retries the write or the sync, and nothing that was not
//! durable is acknowledged. After the poisoned engine is dropped, a reopen
//! recovers a prefix of the commit order holding every acknowledged commit,
//! both from the files as they are and from only the bytes a sync made
//! durable (what a power cut right after the failure would leave: the
//! engine runs on `SimFs`, wrapped in `FaultyFs` for the fault).

mod common;

use common::dump;

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
    fail_and_recover_armed(&[(op, 1)], segment_bytes, warmup, false)
}

/// A log rotation that meets `faults` (what fails, and at which call from
/// the arming), as a full disk's errors (`full`) or a device's.
fn fail_and_recover_with(faults: &[(Op, u64)], full: bool) -> Outcome {
    fail_and_recover_armed(faults, 4096, 0, full)
}

/// `fail_and_recover` with every fault of `faults` armed at once (one
/// per kind of call).
fn fail_and_recover_armed(
    faults: &[(Op, u64)],
    segment_bytes: u64,
    warmup: usize,
    full: bool,
) -> Outcome {
    let op = faults[0].0;
    let sim = machine();
    let faulty = FaultyFs::new(Arc::new(sim.clone()));
    faulty.as_full_disk(full);
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
    // cannot be created (any error from the creation itself: no file
    // handle, no permission, no inode), or the disk is too full for its
    // header or the header's sync, the attempt is removed durably and the
    // group is written to the active segment, past its size: the commits
    // are acknowledged, nothing poisons, and a later group tries the
    // rotation again. (It used to poison.)
    //
    // Under `Never` the log writes its buffer when it passes the
    // segment's size (the log's `flush_bytes`), without a sync: the
    // first open, write, sync and directory sync after the arming are
    // the new segment's.
    for op in [Op::Open, Op::Write, Op::Sync, Op::SyncDir] {
        let sim = machine();
        let faulty = FaultyFs::new(Arc::new(sim.clone()));
        faulty.as_full_disk(op != Op::Open);
        let engine = five_synced_under_never(&faulty);
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
        assert_eq!(engine.stats().rotations_refused, 1, "{op:?}");
        engine.sync().unwrap();
        let image = sim.crash_image();
        // A later group rotates (once the segment grew by an eighth of
        // its size: some four commits here).
        let mut more = 0;
        while segment_names(&sim).len() == 1 {
            assert!(more < 20, "{op:?}: no rotation after");
            commit(&engine, acked + more).unwrap();
            engine.sync().unwrap();
            more += 1;
        }
        assert!(more > 1, "{op:?}: the rotation was retried at once");
        drop(engine);
        for (what, fs, n) in [
            ("power-cut image", image, acked),
            ("directory", sim, acked + more),
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
        faulty.as_full_disk(true);
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
        let mut more = 0;
        while segment_names(&sim).len() == 1 {
            assert!(more < 20, "{op:?}: no rotation after");
            commit(&engine, acked + more).unwrap();
            more += 1;
        }
        drop(engine);
        for (what, fs, n) in [
            ("power-cut image", image, acked),
            ("directory", sim, acked + more),
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
    // reads as a gap after a crash. When it cannot be removed, the log is
    // poisoned. (Under `Always`, a directory sync is only ever the new
    // segment's: the one that fails here, full, leaves the file.)
    let out = fail_and_recover_with(&[(Op::SyncDir, 1), (Op::Remove, 1)], true);
    assert!(out.acked > 5, "rotated after {} commits", out.acked);
    assert_eq!(out.in_image, out.acked);
    assert!(out.in_dir <= out.attempted);

    // Nor when the removal cannot be made durable. Under `Never` the first
    // write after the arming is the new segment's header (see above).
    let sim = machine();
    let faulty = FaultyFs::new(Arc::new(sim.clone()));
    faulty.as_full_disk(true);
    let engine = five_synced_under_never(&faulty);
    faulty.fail_nth(Op::Write, 1);
    faulty.fail_nth(Op::SyncDir, 1);
    let (acked, error) = commit_until_error(&engine, 5, "");
    assert!(matches!(error, Error::Io(_)), "{error:?}");
    assert_eq!(faulty.injected(), 2);
    assert!(engine.poisoned_by().is_some());
    let image = sim.crash_image();
    drop(engine);
    for (what, fs) in [("power-cut image", image), ("directory", sim)] {
        let engine = Engine::open(DIR, options(&fs)).unwrap();
        let n = prefix_len(&dump(&engine), acked + 1);
        assert!(n >= 5, "{what}: the synced commits are gone ({n} back)");
    }
}

#[test]
fn a_device_error_while_starting_a_segment_poisons() {
    // Only a refusal to create the new segment, or a full disk, leaves the
    // group in the active segment. A device error from the new segment's
    // write or syncs poisons the log, as one from any write or sync does:
    // a sync that failed is never retried.
    let out = fail_and_recover_with(&[(Op::SyncDir, 1)], false);
    assert!(out.acked > 5, "rotated after {} commits", out.acked);
    assert_eq!(out.in_image, out.acked);
    for op in [Op::Write, Op::Sync] {
        let sim = machine();
        let faulty = FaultyFs::new(Arc::new(sim.clone()));
        let engine = five_synced_under_never(&faulty);
        faulty.fail_nth(op, 1);
        let (acked, error) = commit_until_error(&engine, 5, &format!("{op:?}"));
        assert!(matches!(error, Error::Io(_)), "{op:?}: {error:?}");
        assert!(engine.poisoned_by().is_some(), "{op:?}");
        assert_eq!(engine.stats().rotations_refused, 0, "{op:?}");
        drop(engine);
        let engine = Engine::open(DIR, options(&sim)).unwrap();
        let n = prefix_len(&dump(&engine), acked + 1);
        assert!(n >= 5, "{op:?}: the synced commits are gone ({n} back)");
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

/// An engine on `faulty` under `SyncMode::Never` with 4 KiB segments,
/// holding commits 0 to 4, synced: the next rotation is a few commits on.
fn five_synced_under_never(faulty: &FaultyFs) -> Engine {
    let engine = Engine::open(
        DIR,
        Options {
            segment_bytes: 4096,
            sync: SyncMode::Never,
            ..options(faulty)
        },
    )
    .unwrap();
    for i in 0..5 {
        commit(&engine, i).unwrap();
    }
    engine.sync().unwrap();
    engine
}

/// Commits `from`, `from + 1`, ... until one fails: how many commits in
/// all were acknowledged, and the error.
fn commit_until_error(engine: &Engine, from: usize, what: &str) -> (usize, Error) {
    let mut acked = from;
    loop {
        assert!(acked < 1000, "{what}: the log never rotated");
        match commit(engine, acked) {
            Ok(_) => acked += 1,
            Err(e) => return (acked, e),
        }
    }
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
        faulty.as_full_disk(true);
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

/// A file whose next `sync_data` panics once `armed` is set.
#[derive(Debug)]
struct PanickingFile {
    inner: Box<dyn mvledger::wal::WritableFile>,
    armed: Arc<std::sync::atomic::AtomicBool>,
}

impl mvledger::wal::WritableFile for PanickingFile {
    fn append(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.inner.append(buf)
    }
    fn sync_data(&mut self) -> std::io::Result<()> {
        if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
            panic!("a file system that panics in sync_data");
        }
        self.inner.sync_data()
    }
    fn zero_to(&mut self, len: u64) -> std::io::Result<bool> {
        self.inner.zero_to(len)
    }
}

/// A `SimFs` whose files panic in their next sync once armed.
#[derive(Debug, Clone)]
struct PanickingFs {
    inner: SimFs,
    armed: Arc<std::sync::atomic::AtomicBool>,
}

impl PanickingFs {
    fn wrap(
        &self,
        file: std::io::Result<Box<dyn mvledger::wal::WritableFile>>,
    ) -> std::io::Result<Box<dyn mvledger::wal::WritableFile>> {
        Ok(Box::new(PanickingFile {
            inner: file?,
            armed: Arc::clone(&self.armed),
        }))
    }
}

impl FileSystem for PanickingFs {
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn mvledger::wal::WritableFile>> {
        self.wrap(self.inner.create(path))
    }
    fn open_append(&self, path: &Path) -> std::io::Result<Box<dyn mvledger::wal::WritableFile>> {
        self.wrap(self.inner.open_append(path))
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.inner.read(path)
    }
    fn size(&self, path: &Path) -> std::io::Result<u64> {
        self.inner.size(path)
    }
    fn truncate(&self, path: &Path, len: u64) -> std::io::Result<()> {
        self.inner.truncate(path, len)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.sync_dir(dir)
    }
    fn lock(&self, path: &Path) -> std::io::Result<Box<dyn mvledger::wal::DirLock>> {
        self.inner.lock(path)
    }
}

/// A group-commit leader that panics (in a file system's sync) poisons
/// the log and hands its leadership back: the next commit fails at once
/// with `Poisoned` instead of waiting for a leader that is gone, and the
/// engine's drop returns, even with a snapshot alive (the drop flushes
/// then). Without the hand-back, both would block forever (tried).
#[test]
fn a_leader_that_panics_poisons_and_nothing_waits_for_it() {
    for sync in [SyncMode::Always, SyncMode::Never] {
        let fs = PanickingFs {
            inner: machine(),
            armed: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        let engine = Engine::open(
            DIR,
            Options {
                sync,
                fs: Arc::new(fs.clone()),
                ..Options::default()
            },
        )
        .expect("open");
        commit(&engine, 0).expect("commit");
        let snap = engine.snapshot();
        fs.armed.store(true, std::sync::atomic::Ordering::SeqCst);
        let led = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            commit(&engine, 1)?;
            engine.sync()
        }));
        assert!(led.is_err(), "{sync:?}: the sync did not panic");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let next = commit(&engine, 2);
            let _ = tx.send(matches!(next, Err(Error::Poisoned)));
            drop(engine);
            let _ = tx.send(true);
        });
        let wait = Duration::from_secs(10);
        assert_eq!(rx.recv_timeout(wait), Ok(true), "{sync:?}: the next commit");
        assert_eq!(rx.recv_timeout(wait), Ok(true), "{sync:?}: the drop");
        drop(snap);
    }
}

/// A `SimFs` that runs out of file handles (EMFILE from every call that
/// opens one) or refuses to create files (EACCES), while told to.
#[derive(Debug, Clone, Default)]
struct Starved {
    inner: SimFs,
    no_handles: Arc<std::sync::atomic::AtomicBool>,
    no_create: Arc<std::sync::atomic::AtomicBool>,
}

impl Starved {
    fn new(inner: SimFs) -> Self {
        Starved {
            inner,
            ..Starved::default()
        }
    }
    fn handle(&self) -> std::io::Result<()> {
        if self.no_handles.load(std::sync::atomic::Ordering::SeqCst) {
            Err(std::io::Error::from_raw_os_error(24))
        } else {
            Ok(())
        }
    }
}

impl FileSystem for Starved {
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        self.handle()?;
        self.inner.list(dir)
    }
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn mvledger::wal::WritableFile>> {
        self.handle()?;
        if self.no_create.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(std::io::Error::from_raw_os_error(13));
        }
        self.inner.create(path)
    }
    fn open_append(&self, path: &Path) -> std::io::Result<Box<dyn mvledger::wal::WritableFile>> {
        self.handle()?;
        self.inner.open_append(path)
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        self.handle()?;
        self.inner.read(path)
    }
    fn size(&self, path: &Path) -> std::io::Result<u64> {
        self.inner.size(path)
    }
    fn truncate(&self, path: &Path, len: u64) -> std::io::Result<()> {
        self.handle()?;
        self.inner.truncate(path, len)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.handle()?;
        self.inner.sync_dir(dir)
    }
    fn lock(&self, path: &Path) -> std::io::Result<Box<dyn mvledger::wal::DirLock>> {
        self.handle()?;
        self.inner.lock(path)
    }
}

/// A process out of file handles gets its commits acknowledged: the
/// rotation it cannot make needs none to give up (the cut of the zeros
/// ahead goes through the open segment, and nothing was created to
/// remove). Before, the clean-up's directory sync and the reopen each
/// needed a handle, and the log poisoned (an outside review's test).
#[test]
fn a_rotation_refused_for_lack_of_file_handles_does_not_poison() {
    for sync in [SyncMode::Never, SyncMode::Always] {
        let sim = machine();
        let fs = Starved::new(sim.clone());
        let engine = Engine::open(
            DIR,
            Options {
                sync,
                segment_bytes: 4096,
                fs: Arc::new(fs.clone()),
                ..Options::default()
            },
        )
        .unwrap();
        for i in 0..5 {
            commit(&engine, i).unwrap();
        }
        engine.sync().unwrap();
        fs.no_handles
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for i in 5..25 {
            if let Err(e) = commit(&engine, i) {
                panic!("{sync:?}: commit {i} failed: {e}");
            }
        }
        engine.sync().unwrap();
        assert_eq!(engine.poisoned_by(), None, "{sync:?}");
        assert!(
            engine.stats().rotations_refused > 0,
            "{sync:?}: no rotation"
        );
        let image = sim.crash_image();
        drop(engine);
        let engine = Engine::open(DIR, options(&image)).unwrap();
        assert_eq!(dump(&engine), state_after(25), "{sync:?}");
    }
}

/// While new segments cannot be created, the active one grows to twice
/// its size and no further: then the commit that would take it past gets
/// the error and the log poisons (recovery reads a segment whole). The
/// tries between are spaced (an eighth of the size apart), not one per
/// commit. Nothing acknowledged is lost, and once files can be created
/// again a reopen goes on.
#[test]
fn a_segment_grows_to_twice_its_size_at_most_while_rotation_is_refused() {
    const SEGMENT: u64 = 4096;
    let sim = machine();
    let fs = Starved::new(sim.clone());
    let engine = Engine::open(
        DIR,
        Options {
            segment_bytes: SEGMENT,
            fs: Arc::new(fs.clone()),
            ..Options::default()
        },
    )
    .unwrap();
    fs.no_create
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let mut acked = 0;
    let error = loop {
        assert!(acked < 2_000, "the segment grew without bound");
        match commit(&engine, acked) {
            Ok(_) => acked += 1,
            Err(e) => break e,
        }
    };
    let Error::Io(e) = &error else {
        panic!("{error:?}")
    };
    assert_eq!(e.raw_os_error(), None);
    assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied, "{e}");
    assert!(e.to_string().contains("twice its size"), "{e}");
    assert!(engine.poisoned_by().is_some());
    let refused = engine.stats().rotations_refused;
    // (8 KiB - 4 KiB) / 512 B tries, and the last one.
    assert!((2..=10).contains(&refused), "{refused} tries");
    assert_eq!(segment_names(&sim).len(), 1);
    let len = last_segment_len(&sim);
    assert!(
        len > 2 * SEGMENT && len <= 2 * SEGMENT + 512,
        "the segment is {len} bytes"
    );
    drop(engine);
    fs.no_create
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let engine = Engine::open(
        DIR,
        Options {
            segment_bytes: SEGMENT,
            ..options(&fs)
        },
    )
    .unwrap();
    assert_eq!(dump(&engine), state_after(acked));
    commit(&engine, acked).unwrap();
    assert_eq!(segment_names(&sim).len(), 2, "no rotation after the reopen");
}
