//! Durability and atomic commit records (ARCHITECTURE.md invariants 3 and 4;
//! issue 2, behaviour point 3): after a reopen every acknowledged commit is
//! back and nothing else (no rolled-back, dropped or conflicting write), over
//! many small segments and repeated reopens; a multi-key commit record cut at
//! any byte is replayed whole or not at all; and a directory is open in at
//! most one engine at a time.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::{dump, segments};
use mvledger::{Engine, Error, Options};

/// A clean close's record: `u32 len (8) | u32 crc | u8 kind (3) | u64 ts`.
const CLOSE_RECORD_BYTES: u64 = 17;

type State = BTreeMap<Vec<u8>, Vec<u8>>;
type Writes = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// Every key and value the engine shows at a fresh snapshot.
fn apply_to(state: &mut State, writes: &Writes) {
    for (key, value) in writes {
        match value {
            Some(value) => state.insert(key.clone(), value.clone()),
            None => state.remove(key),
        };
    }
}

fn commit(engine: &Engine, writes: &Writes) -> u64 {
    let mut txn = engine.begin();
    for (key, value) in writes {
        match value {
            Some(value) => txn.put(key, value).unwrap(),
            None => txn.delete(key).unwrap(),
        }
    }
    txn.commit().unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

/// The on-disk size of a commit record of `writes`, from the format:
/// `u32 len | u32 crc | u8 kind | u64 ts | u32 count | writes`, each write
/// `u8 op | u32 key_len | key | [u32 value_len | value]`.
fn commit_record_bytes(writes: &Writes) -> u64 {
    let body: usize = writes
        .iter()
        .map(|(k, v)| 1 + 4 + k.len() + v.as_ref().map_or(0, |v| 4 + v.len()))
        .sum();
    (4 + 4 + 1 + 8 + 4 + body) as u64
}

/// A small deterministic generator, so that a failure replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn small_segments() -> Options {
    Options {
        segment_bytes: 4096,
        ..Options::default()
    }
}

/// A random workload of puts, overwrites and deletes over a few keys, with
/// rolled-back, dropped and conflicting transactions and `apply` batches
/// mixed in. Returns the state the acknowledged commits make and the last
/// commit ts.
fn run_workload(engine: &Engine, rng: &mut Rng, commits: usize, state: &mut State) -> u64 {
    let mut last_ts = 0;
    for i in 0..commits {
        let ops = 1 + rng.below(4);
        let writes: Writes = (0..ops)
            .map(|j| {
                let key = format!("key-{:03}", rng.below(40)).into_bytes();
                let value = (rng.below(4) != 0).then(|| {
                    let pad = "x".repeat(rng.below(120) as usize);
                    format!("commit {i} write {j} {pad}").into_bytes()
                });
                (key, value)
            })
            .collect();
        // Later writes to the same key in one transaction replace earlier.
        let writes: Writes = writes
            .into_iter()
            .collect::<BTreeMap<_, _>>()
            .into_iter()
            .collect();
        let ts = if i % 7 == 3 {
            let (ts, ()) = engine
                .apply(|batch| {
                    for (key, value) in &writes {
                        match value {
                            Some(value) => batch.put(key, value)?,
                            None => batch.delete(key)?,
                        }
                    }
                    Ok(())
                })
                .unwrap();
            ts
        } else {
            commit(engine, &writes)
        };
        assert!(ts > last_ts, "commit ts {ts} not after {last_ts}");
        last_ts = ts;
        apply_to(state, &writes);

        // Writes that must never show up: rolled back, dropped, or refused.
        if i % 5 == 0 {
            let mut txn = engine.begin();
            txn.put(b"rolled-back", format!("{i}")).unwrap();
            txn.delete(b"key-000").unwrap();
            txn.rollback();
        }
        if i % 11 == 0 {
            let mut txn = engine.begin();
            txn.put(b"dropped", format!("{i}")).unwrap();
            drop(txn);
        }
        if i % 13 == 0 {
            let mut first = engine.begin();
            let mut second = engine.begin();
            first.put(b"contended", format!("first {i}")).unwrap();
            second.put(b"contended", format!("second {i}")).unwrap();
            second.put(b"loser-only", format!("{i}")).unwrap();
            last_ts = first.commit().unwrap();
            state.insert(b"contended".to_vec(), format!("first {i}").into_bytes());
            assert!(matches!(second.commit(), Err(Error::Conflict)));
        }
    }
    last_ts
}

#[test]
fn every_acknowledged_commit_is_back_after_reopen_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut state = State::new();
    let last_ts = {
        let engine = Engine::open(dir.path(), small_segments()).unwrap();
        let last_ts = run_workload(&engine, &mut rng, 150, &mut state);
        assert_eq!(dump(&engine), state, "live state differs from the model");
        let segments = engine.stats().log_segments;
        assert!(segments > 3, "workload spans only {segments} segments");
        last_ts
    };
    assert!(segments(dir.path()).len() > 3);

    // Reopen twice in a row without writing: the same state both times.
    for round in 0..2 {
        let engine = Engine::open(dir.path(), small_segments()).unwrap();
        assert_eq!(dump(&engine), state, "state after reopen {round}");
        assert_eq!(engine.snapshot().ts(), last_ts, "ts after reopen {round}");
        assert_eq!(engine.snapshot().get(b"rolled-back").unwrap(), None);
        assert_eq!(engine.snapshot().get(b"dropped").unwrap(), None);
        assert_eq!(engine.snapshot().get(b"loser-only").unwrap(), None);
    }

    // Commit more after recovery: timestamps go on after the recovered
    // ones, and the next reopen sees old and new.
    let last_ts = {
        let engine = Engine::open(dir.path(), small_segments()).unwrap();
        let more = run_workload(&engine, &mut rng, 60, &mut state);
        assert!(more > last_ts, "ts {more} reused after recovery");
        more
    };
    for round in 0..2 {
        let engine = Engine::open(dir.path(), small_segments()).unwrap();
        assert_eq!(dump(&engine), state, "state after second reopen {round}");
        assert_eq!(engine.snapshot().ts(), last_ts);
    }
}

#[test]
fn deletes_and_overwrites_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(dir.path(), Options::default()).unwrap();
        let w =
            |k: &str, v: Option<&str>| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec()));
        commit(
            &engine,
            &vec![w("a", Some("1")), w("b", Some("1")), w("c", Some("1"))],
        );
        commit(&engine, &vec![w("a", Some("2")), w("b", None)]);
        commit(&engine, &vec![w("c", None), w("d", Some("1"))]);
        commit(&engine, &vec![w("b", Some("3")), w("d", None)]);
        commit(&engine, &vec![w("a", Some("4"))]);
    }
    let engine = Engine::open(dir.path(), Options::default()).unwrap();
    let expected: State = [
        (b"a".to_vec(), b"4".to_vec()),
        (b"b".to_vec(), b"3".to_vec()),
    ]
    .into_iter()
    .collect();
    assert_eq!(dump(&engine), expected);
    assert_eq!(engine.snapshot().get(b"c").unwrap(), None);
    assert_eq!(engine.snapshot().get(b"d").unwrap(), None);
}

#[test]
fn a_commit_record_cut_at_any_byte_is_replayed_whole_or_not_at_all() {
    let base = tempfile::tempdir().unwrap();
    let w = |k: &str, v: Option<&str>| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec()));
    let earlier: Vec<Writes> = vec![
        vec![
            w("alice", Some("100")),
            w("bob", Some("50")),
            w("carol", Some("7")),
        ],
        vec![w("alice", Some("90")), w("dave", Some("1"))],
        vec![w("carol", None), w("erin", Some("3"))],
    ];
    // The last commit moves money and touches old and new keys at once:
    // overwrites, a delete, and new keys.
    let last: Writes = vec![
        w("alice", Some("40")),
        w("bob", Some("100")),
        w("dave", None),
        w("frank", Some("0")),
        w("grace", Some("a longer value to span more bytes")),
    ];
    let mut before = State::new();
    for writes in &earlier {
        apply_to(&mut before, writes);
    }
    let mut after = before.clone();
    apply_to(&mut after, &last);

    // Where the last record lies: the segment's length before and after
    // it, each taken with the engine closed (an open engine may have laid
    // zeros past its last record; a clean close cuts them).
    let (record_start, record_end) = {
        let engine = Engine::open(base.path(), Options::default()).unwrap();
        for writes in &earlier {
            commit(&engine, writes);
        }
        drop(engine);
        let segment = segments(base.path()).pop().unwrap();
        let start = std::fs::metadata(&segment).unwrap().len();
        let engine = Engine::open(base.path(), Options::default()).unwrap();
        commit(&engine, &last);
        drop(engine);
        assert_eq!(
            segments(base.path()).pop().unwrap(),
            segment,
            "the reopened engine did not go on in the same segment"
        );
        // Each clean close ended the log with a close record: the first
        // stays between the earlier records and the last one (the log goes
        // on after it), the second follows the last record.
        let end = std::fs::metadata(&segment).unwrap().len() - CLOSE_RECORD_BYTES;
        (start, end)
    };
    assert_eq!(
        record_end - record_start,
        commit_record_bytes(&last),
        "the last record does not have the size the format gives"
    );
    let segment_name = segments(base.path()).pop().unwrap();
    let segment_name = segment_name.file_name().unwrap();

    for cut in record_start..=record_end {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(base.path(), dir.path());
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(dir.path().join(segment_name))
            .unwrap();
        file.set_len(cut).unwrap();
        drop(file);
        let engine = Engine::open(dir.path(), Options::default())
            .unwrap_or_else(|e| panic!("open after a cut at {cut} failed: {e}"));
        let got = dump(&engine);
        if cut == record_end {
            assert_eq!(got, after, "the whole record is there, but not its writes");
        } else {
            assert_eq!(
                got, before,
                "log cut at byte {cut} of the record at {record_start}..{record_end}: \
                 part of it was applied, or an earlier commit was lost"
            );
        }
    }
}

#[test]
fn a_second_open_of_an_open_directory_fails_and_the_first_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let first = Engine::open(dir.path(), Options::default()).unwrap();
    let mut txn = first.begin();
    txn.put(b"one", b"1").unwrap();
    txn.commit().unwrap();
    let log_before: Vec<Vec<u8>> = segments(dir.path())
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();

    match Engine::open(dir.path(), Options::default()) {
        Err(Error::InvalidArgument(_)) => {}
        other => panic!("second open: expected InvalidArgument, got {other:?}"),
    }
    // Not even a repair may touch the files of an open engine.
    let repair = Options {
        repair: true,
        ..Options::default()
    };
    match Engine::open(dir.path(), repair) {
        Err(Error::InvalidArgument(_)) => {}
        other => panic!("second open with repair: expected InvalidArgument, got {other:?}"),
    }
    let log_after: Vec<Vec<u8>> = segments(dir.path())
        .iter()
        .map(|p| std::fs::read(p).unwrap())
        .collect();
    assert_eq!(log_before, log_after, "a refused open changed the log");

    let mut txn = first.begin();
    assert_eq!(txn.get(b"one").unwrap().as_deref(), Some(&b"1"[..]));
    txn.put(b"two", b"2").unwrap();
    txn.commit().unwrap();
    assert_eq!(
        first.snapshot().get(b"two").unwrap().as_deref(),
        Some(&b"2"[..])
    );
    first.sync().unwrap();
    drop(first);

    let again = Engine::open(dir.path(), Options::default()).unwrap();
    assert_eq!(
        again.snapshot().get(b"one").unwrap().as_deref(),
        Some(&b"1"[..])
    );
    assert_eq!(
        again.snapshot().get(b"two").unwrap().as_deref(),
        Some(&b"2"[..])
    );
}

/// An open that finds the directory locked tries again for a moment
/// before it refuses: an engine dropped just before may still hold the
/// lock (a process that spawns another shares the lock file with the
/// child until its exec). Here the first engine is dropped while the
/// second open waits: the second open succeeds and sees the first's data.
#[test]
fn an_open_waits_a_moment_for_a_lock_being_released() {
    let dir = tempfile::tempdir().unwrap();
    let first = Engine::open(dir.path(), Options::default()).unwrap();
    let mut txn = first.begin();
    txn.put(b"one", b"1").unwrap();
    txn.commit().unwrap();
    let path = dir.path().to_path_buf();
    let (started, ready) = std::sync::mpsc::channel();
    let second = std::thread::spawn(move || {
        started.send(()).unwrap();
        Engine::open(&path, Options::default())
    });
    ready.recv().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    drop(first);
    let second = second
        .join()
        .unwrap()
        .expect("the open waited for the lock");
    let value = second.snapshot().get(b"one").unwrap();
    assert_eq!(value.as_deref(), Some(&b"1"[..]));
}

/// `segment_bytes` bounds a segment in every sync mode: under `Never` and
/// `Interval` the buffer is written out before it outgrows a segment, so a
/// segment ends past the size by at most one commit's record (with 4 KiB
/// segments they were 1 MiB, the buffer's size, before). Everything comes
/// back on reopen.
#[test]
fn segments_stay_near_their_size_in_every_sync_mode() {
    use mvledger::SyncMode;
    use std::time::Duration;
    const RECORD_MAX: u64 = 200;
    for sync in [
        SyncMode::Always,
        SyncMode::Never,
        SyncMode::Interval(Duration::from_secs(3600)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            sync,
            ..small_segments()
        };
        let mut state = State::new();
        {
            let engine = Engine::open(dir.path(), options.clone()).unwrap();
            for i in 0..3_000u32 {
                let mut t = engine.begin();
                let key = format!("key-{:04}", i % 500).into_bytes();
                let value = vec![i as u8; 40];
                t.put(&key, &value).unwrap();
                t.commit().unwrap();
                state.insert(key, value);
            }
        }
        let found = segments(dir.path());
        assert!(found.len() > 10, "{sync:?}: {} segments", found.len());
        for path in &found {
            let len = std::fs::metadata(path).unwrap().len();
            assert!(
                len <= 4096 + RECORD_MAX,
                "{sync:?}: {} is {len} bytes",
                path.display()
            );
        }
        let engine = Engine::open(dir.path(), options).unwrap();
        assert_eq!(dump(&engine), state, "{sync:?}");
    }
}

/// A data directory on a read-only file system: `open` needs to write (its
/// LOCK first), and says so, pointing to `mvledger inspect`, instead of a
/// bare "Read-only file system".
#[test]
fn an_open_on_a_read_only_file_system_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        fs: std::sync::Arc::new(common::RefusingFs {
            lock: Some(std::io::ErrorKind::ReadOnlyFilesystem),
            ..common::RefusingFs::default()
        }),
        ..Options::default()
    };
    match Engine::open(dir.path(), options) {
        Err(Error::InvalidArgument(why)) => {
            assert!(
                why.contains("read-only file system") && why.contains("mvledger inspect"),
                "{why}"
            );
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}
