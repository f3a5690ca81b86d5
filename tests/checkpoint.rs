//! Checkpoints (issue 2, behaviour 5; ARCHITECTURE.md "Checkpoints" and
//! invariant 8).
//!
//! Checks that a checkpoint taken while other threads commit holds exactly
//! the state at one ts; that `open` loads the newest checkpoint and replays
//! only the log after it, and that old segments and checkpoints are removed
//! (the two newest checkpoints and the log back to the older one are kept);
//! that a leftover `*.ckpt.tmp` is ignored and removed; that a damaged
//! newest checkpoint is set aside and `open` recovers every acknowledged
//! commit from the older checkpoint plus the log; that a damaged checkpoint
//! nothing can stand in for makes `open` fail with `Error::Corruption`
//! naming it, never lose data silently; and that deletes made before a
//! checkpoint stay deleted after reopen.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Model, XorShift64, assert_same, dump};
use mvledger::{Engine, Error, Options, SyncMode};

/// Small segments, so that a few commits fill several; the default sync
/// mode, so that every acknowledged commit is durable.
fn small_segments() -> Options {
    Options {
        segment_bytes: 4096,
        ..Options::default()
    }
}

fn ckpt_name(ts: u64) -> String {
    format!("{ts:020}.ckpt")
}

/// The timestamps of the files in `dir` whose names end in `suffix` and
/// start with a 20-digit ts, ascending.
fn files_with(dir: &Path, suffix: &str) -> Vec<u64> {
    let mut found: Vec<u64> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter_map(|name| {
            let stem = name.strip_suffix(suffix)?;
            (stem.len() == 20).then(|| stem.parse().ok())?
        })
        .collect();
    found.sort_unstable();
    found
}

fn segments(dir: &Path) -> Vec<u64> {
    files_with(dir, ".wal")
}

fn checkpoints(dir: &Path) -> Vec<u64> {
    files_with(dir, ".ckpt")
}

/// A value of about `len` bytes that names what wrote it.
fn value(tag: &str, len: usize) -> Vec<u8> {
    let mut v = tag.as_bytes().to_vec();
    v.resize(len.max(tag.len()), b'.');
    v
}

/// Commits one transaction of `writes` (`None` deletes) and mirrors it in
/// `model` once it is acknowledged.
fn commit(engine: &Engine, model: &mut Model, writes: &[(Vec<u8>, Option<Vec<u8>>)]) -> u64 {
    let mut txn = engine.begin();
    for (k, v) in writes {
        match v {
            Some(v) => txn.put(k, v).unwrap(),
            None => txn.delete(k).unwrap(),
        }
    }
    let ts = txn.commit().unwrap();
    for (k, v) in writes {
        match v {
            Some(v) => model.insert(k.clone(), v.clone()),
            None => model.remove(k),
        };
    }
    ts
}

/// One round of work: `commits` transactions of four keys each out of
/// `keys`, values of ~300 bytes, about a quarter of the writes deletes.
/// Returns the last commit ts.
fn round(engine: &Engine, model: &mut Model, rng: &mut XorShift64, tag: &str, commits: u32) -> u64 {
    let mut ts = 0;
    for c in 0..commits {
        let writes: Vec<_> = (0..4)
            .map(|w| {
                let k = format!("key{:03}", rng.below(120)).into_bytes();
                let v = (rng.below(4) != 0).then(|| value(&format!("{tag}-{c}-{w}"), 300));
                (k, v)
            })
            .collect();
        ts = commit(engine, model, &writes);
    }
    ts
}

// ---------------------------------------------------------------------------
// Consistency under concurrent commits.

type Acked = Vec<(u64, Vec<(Vec<u8>, Option<Vec<u8>>)>)>;

const ACCOUNTS: u64 = 8;
const START_BALANCE: u64 = 1_000;

fn account(a: u64) -> Vec<u8> {
    format!("acct/{a}").into_bytes()
}

fn balance_sum(state: &Model) -> u64 {
    (0..ACCOUNTS)
        .map(|a| {
            let v = state.get(&account(a)).expect("every account exists");
            u64::from_le_bytes(v.as_slice().try_into().unwrap())
        })
        .sum()
}

/// One writer: transfers between two accounts (the sum stays constant),
/// each with an acknowledgement key of its own and a scratch key that is
/// put and deleted in turn. Returns every acknowledged commit.
fn transfers(engine: &Engine, writer: u64, stop: &AtomicBool) -> Acked {
    let mut rng = XorShift64(writer + 7);
    let mut acked = Acked::new();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let from = rng.below(ACCOUNTS);
        let to = (from + 1 + rng.below(ACCOUNTS - 1)) % ACCOUNTS;
        let mut txn = engine.begin();
        let read = |a| -> u64 {
            let v = txn.get(account(a)).unwrap().unwrap();
            u64::from_le_bytes(v[..].try_into().unwrap())
        };
        let (a, b) = (read(from), read(to));
        let amount = rng.below(50).min(a);
        let scratch = format!("scratch/{writer}/{}", n % 5).into_bytes();
        let writes = vec![
            (account(from), Some((a - amount).to_le_bytes().to_vec())),
            (account(to), Some((b + amount).to_le_bytes().to_vec())),
            (
                format!("ack/{writer}/{n:06}").into_bytes(),
                Some(value(&format!("{writer}-{n}"), 40)),
            ),
            (scratch, n.is_multiple_of(2).then(|| b"s".to_vec())),
        ];
        for (k, v) in &writes {
            match v {
                Some(v) => txn.put(k, v).unwrap(),
                None => txn.delete(k).unwrap(),
            }
        }
        match txn.commit() {
            Ok(ts) => {
                acked.push((ts, writes));
                n += 1;
            }
            Err(Error::Conflict) => {}
            Err(e) => panic!("writer {writer}: {e}"),
        }
    }
    acked
}

/// The state after every acknowledged commit with a ts at or below `ts`.
fn state_at(acked: &Acked, ts: u64) -> Model {
    let mut state = Model::new();
    for (_, writes) in acked.iter().take_while(|(t, _)| *t <= ts) {
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
fn a_checkpoint_taken_while_commits_go_on_is_consistent_at_one_ts() {
    consistent_while_commits_go_on(small_segments());
}

/// Under `Never` the visible ts runs ahead of the disk: the checkpoint must
/// still hold exactly its ts, and a clean close keeps every commit.
#[test]
fn a_checkpoint_taken_while_unsynced_commits_go_on_is_consistent_at_one_ts() {
    consistent_while_commits_go_on(Options {
        sync: SyncMode::Never,
        ..small_segments()
    });
}

fn consistent_while_commits_go_on(options: Options) {
    const WRITERS: u64 = 2;
    const CHECKPOINTS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let copies = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options.clone()).unwrap();
    let mut acked = Acked::new();
    let (ts, ()) = engine
        .apply(|batch| {
            for a in 0..ACCOUNTS {
                batch.put(account(a), START_BALANCE.to_le_bytes())?;
            }
            Ok(())
        })
        .unwrap();
    let opening: Vec<_> = (0..ACCOUNTS)
        .map(|a| (account(a), Some(START_BALANCE.to_le_bytes().to_vec())))
        .collect();
    acked.push((ts, opening));

    // Each checkpoint is copied aside alone: opened on its own, it shows
    // exactly what it holds.
    let stop = AtomicBool::new(false);
    let mut taken = Vec::new();
    std::thread::scope(|s| {
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (engine, stop) = (&engine, &stop);
                s.spawn(move || transfers(engine, w, stop))
            })
            .collect();
        let mut result = Ok(());
        while taken.len() < CHECKPOINTS && result.is_ok() {
            // Let the writers commit between checkpoints.
            let before = engine.stats().commits;
            while engine.stats().commits < before + 20 && !writers.iter().any(|h| h.is_finished()) {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            result = engine.checkpoint();
            let ts = engine.stats().checkpoint_ts;
            if result.is_ok() && taken.last() != Some(&ts) {
                let aside = copies.path().join(ts.to_string());
                std::fs::create_dir(&aside).unwrap();
                std::fs::copy(dir.path().join(ckpt_name(ts)), aside.join(ckpt_name(ts))).unwrap();
                taken.push(ts);
            }
        }
        stop.store(true, Ordering::Relaxed);
        for h in writers {
            match h.join() {
                Ok(mine) => acked.extend(mine),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        result.unwrap();
    });
    acked.sort_by_key(|(ts, _)| *ts);
    let last_ts = acked.last().unwrap().0;
    let all: Vec<u64> = acked.iter().map(|(ts, _)| *ts).collect();
    assert_eq!(
        all,
        (1..=last_ts).collect::<Vec<_>>(),
        "every ts acknowledged"
    );
    assert!(
        taken.last().is_some_and(|&t| t < last_ts),
        "commits went on after the checkpoints: {taken:?}, last ts {last_ts}"
    );

    for &ts in &taken {
        let alone = Engine::open(copies.path().join(ts.to_string()), Options::default()).unwrap();
        let got = dump(&alone);
        assert_same(&got, &state_at(&acked, ts), &format!("checkpoint at {ts}"));
        assert_eq!(balance_sum(&got), ACCOUNTS * START_BALANCE);
        let s = alone.stats();
        assert_eq!((s.checkpoint_ts, s.visible_ts), (ts, ts));
    }

    drop(engine);
    let engine = Engine::open(dir.path(), options).unwrap();
    let got = dump(&engine);
    assert_eq!(balance_sum(&got), ACCOUNTS * START_BALANCE);
    assert_same(
        &got,
        &state_at(&acked, last_ts),
        "every acknowledged commit",
    );
    let s = engine.stats();
    assert_eq!(s.visible_ts, last_ts);
    assert_eq!(s.checkpoint_ts, *taken.last().unwrap());
}

// ---------------------------------------------------------------------------
// Recovery from the checkpoint, and removal of what it covers.

#[test]
fn reopen_loads_the_checkpoint_and_old_segments_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    let mut rng = XorShift64(11);
    let engine = Engine::open(dir.path(), small_segments()).unwrap();

    round(&engine, &mut model, &mut rng, "r0", 30);
    let before_a = engine.stats();
    assert!(before_a.log_segments >= 4, "{before_a:?}");
    assert_eq!(segments(dir.path()).len() as u64, before_a.log_segments);
    engine.checkpoint().unwrap();
    let a = engine.stats().checkpoint_ts;
    assert_eq!(a, before_a.visible_ts);
    let after_a = engine.stats();
    assert_eq!(checkpoints(dir.path()), vec![a]);
    assert!(after_a.log_segments < before_a.log_segments, "{after_a:?}");
    assert!(after_a.log_bytes < before_a.log_bytes, "{after_a:?}");
    assert_eq!(segments(dir.path()).len() as u64, after_a.log_segments);

    round(&engine, &mut model, &mut rng, "r1", 30);
    engine.checkpoint().unwrap();
    let b = engine.stats().checkpoint_ts;
    assert_eq!(checkpoints(dir.path()), vec![a, b]);
    // The log back to the older checkpoint stays: it is the fallback.
    let segs = segments(dir.path());
    assert!(segs[0] <= a + 1, "the log reaches back to {a}: {segs:?}");

    round(&engine, &mut model, &mut rng, "r2", 30);
    let before_c = engine.stats();
    engine.checkpoint().unwrap();
    let c = engine.stats().checkpoint_ts;
    let after_c = engine.stats();
    assert_eq!(checkpoints(dir.path()), vec![b, c], "the oldest is removed");
    assert!(after_c.log_segments < before_c.log_segments, "{after_c:?}");
    assert!(after_c.log_bytes < before_c.log_bytes, "{after_c:?}");
    let segs = segments(dir.path());
    assert_eq!(segs.len() as u64, after_c.log_segments);
    assert!(segs[0] <= b + 1, "the log reaches back to {b}: {segs:?}");
    assert!(
        segs.get(1).is_none_or(|&next| next > b + 1),
        "no segment holding only ts <= {b} is left: {segs:?}"
    );

    // Commits after the last checkpoint: replayed from the log.
    let last = round(&engine, &mut model, &mut rng, "r3", 5);
    drop(engine);

    let engine = Engine::open(dir.path(), small_segments()).unwrap();
    assert_same(&dump(&engine), &model, "after reopen");
    let s = engine.stats();
    assert_eq!(s.checkpoint_ts, c);
    assert_eq!(s.visible_ts, last);
    assert_eq!(s.keys, model.len() as u64);
    assert_eq!(s.versions_alive, model.len() as u64, "{s:?}");
    assert_eq!(s.log_segments, segments(dir.path()).len() as u64);
    drop(engine);

    // Only the log after the newest checkpoint is needed: without the
    // segments that hold nothing after it (kept only as the fallback for a
    // damaged checkpoint), the state is the same.
    let segs = segments(dir.path());
    for pair in segs.windows(2) {
        if pair[1] <= c + 1 {
            std::fs::remove_file(dir.path().join(format!("{:020}.wal", pair[0]))).unwrap();
        }
    }
    assert!(segments(dir.path()).len() < segs.len(), "{segs:?}");
    let engine = Engine::open(dir.path(), small_segments()).unwrap();
    assert_same(
        &dump(&engine),
        &model,
        "after reopen without the fallback log",
    );
    assert_eq!(engine.stats().visible_ts, last);
}

#[test]
fn a_leftover_temporary_checkpoint_is_ignored_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    let mut rng = XorShift64(12);
    let engine = Engine::open(dir.path(), small_segments()).unwrap();
    round(&engine, &mut model, &mut rng, "r0", 10);
    engine.checkpoint().unwrap();
    let a = engine.stats().checkpoint_ts;
    let last = round(&engine, &mut model, &mut rng, "r1", 10);
    drop(engine);

    // What a crash in the middle of writing a checkpoint at `last` leaves:
    // a torn copy; and garbage under another ts.
    let real = std::fs::read(dir.path().join(ckpt_name(a))).unwrap();
    let torn = dir.path().join(format!("{last:020}.ckpt.tmp"));
    std::fs::write(&torn, &real[..real.len() / 2]).unwrap();
    let garbage = dir.path().join(format!("{:020}.ckpt.tmp", last + 1000));
    std::fs::write(&garbage, b"not a checkpoint at all").unwrap();

    let engine = Engine::open(dir.path(), small_segments()).unwrap();
    assert_same(&dump(&engine), &model, "after reopen over the temp files");
    let s = engine.stats();
    assert_eq!((s.checkpoint_ts, s.visible_ts), (a, last));
    assert!(!torn.exists(), "the torn temp file is removed");
    assert!(!garbage.exists(), "the garbage temp file is removed");
    assert_eq!(checkpoints(dir.path()), vec![a]);

    // And checkpoints go on as before.
    engine.checkpoint().unwrap();
    assert_eq!(checkpoints(dir.path()), vec![a, last]);
    drop(engine);
    let engine = Engine::open(dir.path(), small_segments()).unwrap();
    assert_same(
        &dump(&engine),
        &model,
        "after a checkpoint and another reopen",
    );
}

// ---------------------------------------------------------------------------
// Damaged checkpoints.

fn flip_middle_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

fn truncate_to_half(path: &Path) {
    let len = std::fs::metadata(path).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_len(len / 2).unwrap();
}

fn damaged_name(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".damaged");
    PathBuf::from(name)
}

/// Two checkpoints, commits around both (deletes too), then `damage` on
/// the newest: `open` must come back with every acknowledged commit.
fn newest_damaged_falls_back(damage: fn(&Path)) {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    let mut rng = XorShift64(13);
    let engine = Engine::open(dir.path(), small_segments()).unwrap();
    round(&engine, &mut model, &mut rng, "r0", 40);
    engine.checkpoint().unwrap();
    let a = engine.stats().checkpoint_ts;
    round(&engine, &mut model, &mut rng, "r1", 20);
    engine.checkpoint().unwrap();
    let b = engine.stats().checkpoint_ts;
    let last = round(&engine, &mut model, &mut rng, "r2", 10);
    drop(engine);
    assert!(a < b && b < last);
    assert_eq!(checkpoints(dir.path()), vec![a, b]);

    let newest = dir.path().join(ckpt_name(b));
    let damaged_bytes = {
        damage(&newest);
        std::fs::read(&newest).unwrap()
    };

    let engine = Engine::open(dir.path(), small_segments()).unwrap();
    assert_same(&dump(&engine), &model, "every acknowledged commit, exactly");
    let s = engine.stats();
    assert_eq!(s.visible_ts, last);
    assert_eq!(s.checkpoint_ts, a, "the older checkpoint was loaded");
    assert_eq!(s.keys, model.len() as u64);
    assert!(!newest.exists(), "the damaged checkpoint no longer counts");
    let aside = damaged_name(&newest);
    assert_eq!(
        std::fs::read(&aside).unwrap(),
        damaged_bytes,
        "the damaged checkpoint is set aside as it was"
    );
    assert_eq!(checkpoints(dir.path()), vec![a]);
    // And `open` reports it: the file as it is now, and what was wrong.
    let reported = engine.set_aside();
    assert_eq!(reported.len(), 1, "{reported:?}");
    assert_eq!(reported[0].file, aside);
    assert!(
        reported[0].reason.contains(&ckpt_name(b)),
        "the reason names the damaged file: {}",
        reported[0].reason
    );

    // The engine goes on: more commits, a new checkpoint, another reopen.
    let last = round(&engine, &mut model, &mut rng, "r3", 5);
    engine.checkpoint().unwrap();
    assert_eq!(checkpoints(dir.path()), vec![a, last]);
    drop(engine);
    let engine = Engine::open(dir.path(), small_segments()).unwrap();
    assert_same(
        &dump(&engine),
        &model,
        "after the fallback, a checkpoint and a reopen",
    );
    assert_eq!(engine.stats().checkpoint_ts, last);
    assert!(aside.exists(), "kept for inspection");
    assert!(
        engine.set_aside().is_empty(),
        "a later open found nothing new to set aside"
    );
}

#[test]
fn a_newest_checkpoint_with_a_flipped_byte_falls_back_to_the_older_plus_the_log() {
    newest_damaged_falls_back(flip_middle_byte);
}

#[test]
fn a_truncated_newest_checkpoint_falls_back_to_the_older_plus_the_log() {
    newest_damaged_falls_back(truncate_to_half);
}

/// One checkpoint (the log before it removed), maybe commits after it, then
/// `damage` on it: nothing can reproduce what it held, so `open` must fail
/// with `Error::Corruption` naming it, and keep failing.
fn only_checkpoint_damaged_fails(damage: fn(&Path), commits_after: u32) {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    let mut rng = XorShift64(14);
    let engine = Engine::open(dir.path(), small_segments()).unwrap();
    round(&engine, &mut model, &mut rng, "r0", 40);
    engine.checkpoint().unwrap();
    let a = engine.stats().checkpoint_ts;
    if commits_after > 0 {
        round(&engine, &mut model, &mut rng, "r1", commits_after);
    }
    drop(engine);
    let segs = segments(dir.path());
    assert!(
        segs[0] > 1,
        "the log before the checkpoint is gone: {segs:?}"
    );

    let ckpt = dir.path().join(ckpt_name(a));
    damage(&ckpt);
    let damaged_bytes = std::fs::read(&ckpt).unwrap();
    for attempt in 0..2 {
        match Engine::open(dir.path(), small_segments()) {
            Err(Error::Corruption { file, .. }) => {
                assert_eq!(
                    file.file_name(),
                    ckpt.file_name(),
                    "attempt {attempt}: the error names the checkpoint"
                );
            }
            Err(e) => panic!("attempt {attempt}: expected Corruption, got {e}"),
            Ok(engine) => panic!(
                "attempt {attempt}: open succeeded and would lose the checkpoint's state: \
                 {} keys instead of {}",
                engine.stats().keys,
                model.len()
            ),
        }
        assert_eq!(
            std::fs::read(&ckpt).unwrap(),
            damaged_bytes,
            "the checkpoint is left in place for the operator"
        );
    }
}

/// Two checkpoints, the newer one damaged, and the log's last record
/// (the newer checkpoint's own ts) torn: the replay from the older one
/// cuts that record, then cannot reach what the damaged checkpoint held,
/// so `open` fails. No engine opens to list the cut
/// (`Engine::recovery_cuts`), so the corruption error says what was cut;
/// the next attempt has nothing left to cut, and still fails.
/// A closed engine of small segments with two checkpoints, after 30
/// random commits each (from `seed`), and `after` more commits; returns
/// the newer checkpoint's ts.
fn with_two_checkpoints(dir: &Path, seed: u64, after: u32) -> u64 {
    let mut model = Model::new();
    let mut rng = XorShift64(seed);
    let engine = Engine::open(dir, small_segments()).unwrap();
    round(&engine, &mut model, &mut rng, "r0", 30);
    engine.checkpoint().unwrap();
    round(&engine, &mut model, &mut rng, "r1", 30);
    engine.checkpoint().unwrap();
    let newer = engine.stats().checkpoint_ts;
    if after > 0 {
        round(&engine, &mut model, &mut rng, "r2", after);
    }
    newer
}

#[test]
fn a_failed_open_says_what_its_replay_cut() {
    let dir = tempfile::tempdir().unwrap();
    let b = with_two_checkpoints(dir.path(), 16, 0);
    flip_middle_byte(&dir.path().join(ckpt_name(b)));
    // The newest segment holding a commit (one after it holds at most the
    // checkpoint's marker: removed, which the replay does not see as a
    // cut), its last record torn.
    let path = |first: u64| dir.path().join(format!("{first:020}.wal"));
    let mut segs = segments(dir.path());
    while std::fs::metadata(path(*segs.last().unwrap()))
        .unwrap()
        .len()
        < 400
    {
        std::fs::remove_file(path(segs.pop().unwrap())).unwrap();
    }
    let last = path(*segs.last().unwrap());
    let len = std::fs::metadata(&last).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&last).unwrap();
    file.set_len(len - 3).unwrap();
    drop(file);
    let reason = |attempt| match Engine::open(dir.path(), small_segments()) {
        Err(Error::Corruption { reason, .. }) => reason,
        Err(e) => panic!("attempt {attempt}: expected Corruption, got {e}"),
        Ok(_) => panic!("attempt {attempt}: open succeeded"),
    };
    let first = reason(0);
    assert!(
        first.contains("recovery had cut") && first.contains(".wal"),
        "{first}"
    );
    let second = reason(1);
    assert!(!second.contains("recovery had cut"), "{second}");
}

#[test]
fn a_damaged_only_checkpoint_fails_open_with_corruption() {
    only_checkpoint_damaged_fails(flip_middle_byte, 5);
}

#[test]
fn a_truncated_only_checkpoint_fails_open_with_corruption() {
    only_checkpoint_damaged_fails(truncate_to_half, 5);
}

#[test]
fn a_damaged_only_checkpoint_with_no_log_after_it_fails_open_with_corruption() {
    only_checkpoint_damaged_fails(flip_middle_byte, 0);
}

#[test]
fn two_damaged_checkpoints_fail_open_with_corruption() {
    let dir = tempfile::tempdir().unwrap();
    with_two_checkpoints(dir.path(), 15, 5);
    let both = checkpoints(dir.path());
    assert_eq!(both.len(), 2);
    for &ts in &both {
        flip_middle_byte(&dir.path().join(ckpt_name(ts)));
    }
    match Engine::open(dir.path(), small_segments()) {
        Err(Error::Corruption { file, .. }) => {
            let named = file.file_name().unwrap().to_str().unwrap().to_string();
            assert!(
                both.iter().any(|&ts| ckpt_name(ts) == named),
                "names a checkpoint: {named}"
            );
        }
        Err(e) => panic!("expected Corruption, got {e}"),
        Ok(_) => panic!("open succeeded over two damaged checkpoints"),
    }
    assert_eq!(
        checkpoints(dir.path()),
        both,
        "nothing set aside or removed"
    );
}

// ---------------------------------------------------------------------------
// Deletes.

#[test]
fn deletes_before_a_checkpoint_stay_deleted_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::new();
    let engine = Engine::open(dir.path(), small_segments()).unwrap();
    let k = |i: u32| format!("k{i:03}").into_bytes();
    for chunk in 0..10 {
        let writes: Vec<_> = (chunk * 10..chunk * 10 + 10)
            .map(|i| (k(i), Some(value(&format!("v{i}"), 100))))
            .collect();
        commit(&engine, &mut model, &writes);
    }
    // A snapshot from before the deletes keeps the deleted versions (and
    // the tombstones) in memory while the checkpoint is written.
    let before = engine.snapshot();
    for i in (0..100).filter(|i| i % 2 == 0) {
        commit(&engine, &mut model, &[(k(i), None)]);
    }
    // Deleted and put again before the checkpoint: present.
    commit(&engine, &mut model, &[(k(10), None)]);
    commit(&engine, &mut model, &[(k(10), Some(b"back".to_vec()))]);
    engine.checkpoint().unwrap();
    assert_eq!(before.scan(..).unwrap().count(), 100);
    drop(before);
    let segs = segments(dir.path());
    assert!(segs[0] > 1, "the log with the deletes is gone: {segs:?}");
    drop(engine);

    let engine = Engine::open(dir.path(), small_segments()).unwrap();
    assert_same(&dump(&engine), &model, "after reopen");
    assert_eq!(engine.stats().keys, 51);
    for i in (0..100).filter(|i| i % 2 == 0 && *i != 10) {
        assert_eq!(engine.snapshot().get(k(i)).unwrap(), None, "key {i}");
    }
    // Deletes after the checkpoint (replayed from the log), then a second
    // checkpoint and reopen: still deleted.
    for i in (1..100).step_by(4) {
        commit(&engine, &mut model, &[(k(i), None)]);
    }
    drop(engine);
    let engine = Engine::open(dir.path(), small_segments()).unwrap();
    assert_same(
        &dump(&engine),
        &model,
        "after deletes replayed from the log",
    );
    engine.checkpoint().unwrap();
    drop(engine);
    let engine = Engine::open(dir.path(), small_segments()).unwrap();
    assert_same(
        &dump(&engine),
        &model,
        "after a second checkpoint and reopen",
    );
    assert_eq!(engine.stats().keys, model.len() as u64);
}

/// `verify_checkpoint` (for tools) checks a whole checkpoint file and names
/// the offset of damage, as `open` does.
#[test]
fn verify_checkpoint_reports_contents_and_damage() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), Options::default()).unwrap();
    for i in 0u32..50 {
        let mut t = engine.begin();
        t.put(i.to_be_bytes(), b"value").unwrap();
        t.commit().unwrap();
    }
    engine.checkpoint().unwrap();
    drop(engine);
    let path = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "ckpt"))
        .unwrap();
    let info = mvledger::verify_checkpoint(&path).unwrap();
    assert_eq!(info.entries, 50);
    assert_eq!(info.ts, 50);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[40] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();
    match mvledger::verify_checkpoint(&path) {
        Err(mvledger::Error::Corruption { file, offset, .. }) => {
            assert_eq!(file, path);
            assert!(offset < bytes.len() as u64);
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    assert!(matches!(
        mvledger::verify_checkpoint(&dir.path().join("notes.txt")),
        Err(mvledger::Error::InvalidArgument(_))
    ));
}

/// The header's reserved word is checked like the rest of the file: a
/// flipped bit there is damage at offset 12 (as a segment header's is).
#[test]
fn a_flipped_bit_in_a_checkpoint_headers_reserved_word_is_damage() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(dir.path(), Options::default()).unwrap();
        let mut txn = engine.begin();
        txn.put(b"k", b"v").unwrap();
        txn.commit().unwrap();
        engine.checkpoint().unwrap();
    }
    let ckpt = dir.path().join(ckpt_name(checkpoints(dir.path())[0]));
    assert!(mvledger::verify_checkpoint(&ckpt).is_ok());
    let good = std::fs::read(&ckpt).unwrap();
    for at in 12..16 {
        let mut bytes = good.clone();
        bytes[at] ^= 0x10;
        std::fs::write(&ckpt, &bytes).unwrap();
        match mvledger::verify_checkpoint(&ckpt) {
            Err(Error::Corruption { offset, .. }) => assert_eq!(offset, 12, "byte {at}"),
            other => panic!("byte {at}: expected Corruption, got {other:?}"),
        }
    }
}

/// Puts `key{i}` for each `i` in `range`, one commit each, mirrored in
/// `model`.
fn put_each(engine: &Engine, model: &mut Model, range: std::ops::Range<u32>) {
    for i in range {
        let key = format!("key{i}").into_bytes();
        commit(engine, model, &[(key, Some(value("v", 8)))]);
    }
}

/// Found by an outside review of the close record: a checkpoint that
/// failed after its seal left a segment with no record, which a clean
/// close then ended with a close record (header and close record, 49
/// bytes). After a reopen, the next checkpoint took that segment for one
/// holding records: it "rotated" it to a segment of its own name (emptying
/// it) and then removed it as covered, so every commit acknowledged after
/// went to a file no longer in the directory, and was lost at the next
/// open. A segment is sealed only when it holds a record.
#[test]
fn a_checkpoint_over_a_segment_holding_only_a_close_record_keeps_later_commits() {
    use mvledger::wal::{FaultyFs, Op, StdFs};
    let dir = tempfile::tempdir().unwrap();
    let fs = std::sync::Arc::new(FaultyFs::new(std::sync::Arc::new(StdFs)));
    let options = Options {
        fs: fs.clone(),
        ..Options::default()
    };
    let mut model = Model::new();
    {
        let engine = Engine::open(dir.path(), options.clone()).unwrap();
        put_each(&engine, &mut model, 0..5);
        fs.fail_nth(Op::Rename, 1);
        assert!(
            engine.checkpoint().is_err(),
            "the checkpoint's rename failed"
        );
        fs.clear();
    }
    assert_eq!(
        segments(dir.path()).last(),
        Some(&6),
        "the seal made no segment at ts 6"
    );
    {
        let engine = Engine::open(dir.path(), options.clone()).unwrap();
        engine.checkpoint().unwrap();
        assert!(
            segments(dir.path()).contains(&6),
            "the active segment was removed"
        );
        put_each(&engine, &mut model, 5..8);
        engine.checkpoint().unwrap();
        put_each(&engine, &mut model, 8..10);
    }
    let engine = Engine::open(dir.path(), Options::default()).unwrap();
    assert_same(&dump(&engine), &model, "after the reopen");
}

/// The same through power cuts alone: the power goes at each step of a
/// checkpoint; the directory is recovered and closed cleanly, reopened, a
/// checkpoint taken and more commits made. Every acknowledged commit is
/// back after a crash then, and after a clean close.
#[test]
fn a_power_cut_in_a_checkpoint_then_a_close_and_a_checkpoint_lose_nothing() {
    use mvledger::wal::SimFs;
    let dir = Path::new("/db");
    let options = |fs: &SimFs| Options {
        fs: std::sync::Arc::new(fs.clone()),
        ..Options::default()
    };
    let mut cut_in_checkpoint = 0;
    for n in 1..60u64 {
        let sim = SimFs::new(n);
        let mut model = Model::new();
        {
            let engine = Engine::open(dir, options(&sim)).unwrap();
            put_each(&engine, &mut model, 0..5);
            sim.cut_power_after(n);
            let _ = engine.checkpoint();
            if !sim.is_off() {
                continue;
            }
        }
        cut_in_checkpoint += 1;
        let sim = sim.crash();
        drop(Engine::open(dir, options(&sim)).unwrap());
        let engine = Engine::open(dir, options(&sim)).unwrap();
        engine.checkpoint().unwrap();
        put_each(&engine, &mut model, 5..8);
        let image = sim.crash_image();
        drop(engine);
        for (what, fs) in [("a crash", image), ("a clean close", sim)] {
            let engine = Engine::open(dir, options(&fs)).unwrap();
            let got = dump(&engine);
            assert!(
                got == model,
                "power cut after call {n}, then {what}: {} of {} keys",
                got.len(),
                model.len()
            );
        }
    }
    assert!(
        cut_in_checkpoint > 5,
        "only {cut_in_checkpoint} cuts fell in the checkpoint"
    );
}
