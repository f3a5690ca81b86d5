//! Bad input never corrupts (ARCHITECTURE.md invariant 8, "Redo log";
//! issue 2, behaviour point 3): a damaged record followed by valid ones, a
//! damaged segment header, a foreign file with a segment's name and a
//! missing segment each make `open` fail with `Error::Corruption` naming the
//! file and the offset where the damage starts, and leave the files as they
//! were; `Options { repair: true }` keeps exactly the commits before the
//! damage; unrelated files are ignored; and a flipped bit anywhere in a log
//! gives either exactly a prefix of the commits or `Corruption`, never a
//! panic and never wrong data. A cleanly closed log ends with a close
//! record, so a flipped bit in its last commit is `Corruption` too, never
//! a commit cut as if torn.

mod common;

use common::dump;

use std::collections::BTreeMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use mvledger::{Engine, Error, Options};

type State = BTreeMap<Vec<u8>, Vec<u8>>;
type Writes = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// The segment header: magic, version, reserved, first ts, crc, padding.
const SEGMENT_HEADER_BYTES: u64 = 32;
/// Bytes of the header the checksum covers (magic .. first ts).
const SEGMENT_HEADER_CHECKED_BYTES: u64 = 28;
/// A close record: `u32 len (8) | u32 crc | u8 kind (3) | u64 last ts`.
const CLOSE_RECORD_BYTES: u64 = 17;
const KIND_CLOSE: u8 = 3;

/// The on-disk size of a commit record, from the format:
/// `u32 len | u32 crc | u8 kind | u64 ts | u32 count | writes`, each write
/// `u8 op | u32 key_len | key | [u32 value_len | value]`.
fn commit_record_bytes(writes: &Writes) -> u64 {
    let body: usize = writes
        .iter()
        .map(|(k, v)| 1 + 4 + k.len() + v.as_ref().map_or(0, |v| 4 + v.len()))
        .sum();
    (4 + 4 + 1 + 8 + 4 + body) as u64
}

fn state_after(commits: &[Writes]) -> State {
    let mut state = State::new();
    for writes in commits {
        for (key, value) in writes {
            match value {
                Some(value) => state.insert(key.clone(), value.clone()),
                None => state.remove(key),
            };
        }
    }
    state
}

/// Commit `i` of a test log: a new key, an overwrite of a shared key, and
/// from the third on a delete of an older key; values of `value_bytes`.
fn commit_writes(i: usize, value_bytes: usize) -> Writes {
    let mut writes: Writes = vec![
        (
            format!("key-{i:03}").into_bytes(),
            Some(format!("{i:0value_bytes$}").into_bytes()),
        ),
        (b"shared".to_vec(), Some(format!("after {i}").into_bytes())),
    ];
    if i >= 2 {
        writes.push((format!("key-{:03}", i - 2).into_bytes(), None));
    }
    writes.sort();
    writes
}

/// A closed log and where each of its records lies.
struct Log {
    _dir: tempfile::TempDir,
    /// Segment file names and contents, in order.
    files: Vec<(String, Vec<u8>)>,
    /// Per commit, in commit order: (index into `files`, start, end).
    records: Vec<(usize, u64, u64)>,
    /// Where the close record of the clean close lies in the last file.
    close: (u64, u64),
    commits: Vec<Writes>,
}

impl Log {
    fn build(commits: Vec<Writes>, segment_bytes: u64) -> Log {
        let dir = tempfile::tempdir().unwrap();
        let options = Options {
            segment_bytes,
            ..Options::default()
        };
        {
            let engine = Engine::open(dir.path(), options).unwrap();
            for writes in &commits {
                let mut txn = engine.begin();
                for (key, value) in writes {
                    match value {
                        Some(value) => txn.put(key, value).unwrap(),
                        None => txn.delete(key).unwrap(),
                    }
                }
                txn.commit().unwrap();
            }
        }
        let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap())
            .filter(|e| e.file_name().to_str().unwrap().ends_with(".wal"))
            .map(|e| {
                let name = e.file_name().into_string().unwrap();
                (name, std::fs::read(e.path()).unwrap())
            })
            .collect();
        files.sort();
        // Lay the records out by the format alone: each segment starts
        // with its header and holds the commits from the ts in its name
        // (ts = commit index + 1) up to the next segment's.
        let firsts: Vec<usize> = files
            .iter()
            .map(|(name, _)| name.trim_end_matches(".wal").parse().unwrap())
            .collect();
        // The last segment ends with the close record of the clean close.
        let mut records = Vec::new();
        let mut close = (0, 0);
        for (f, (name, bytes)) in files.iter().enumerate() {
            let upto = firsts.get(f + 1).copied().unwrap_or(commits.len() + 1);
            let mut at = SEGMENT_HEADER_BYTES;
            for writes in &commits[firsts[f] - 1..upto - 1] {
                let end = at + commit_record_bytes(writes);
                records.push((f, at, end));
                at = end;
            }
            if f + 1 == files.len() {
                assert_eq!(
                    bytes[at as usize + 8],
                    KIND_CLOSE,
                    "{name}: no close record"
                );
                close = (at, at + CLOSE_RECORD_BYTES);
                at += CLOSE_RECORD_BYTES;
            }
            assert_eq!(
                at,
                bytes.len() as u64,
                "{name} is not laid out as the format says"
            );
        }
        assert_eq!(records.len(), commits.len());
        Log {
            _dir: dir,
            files,
            records,
            close,
            commits,
        }
    }

    /// A fresh directory holding this log, `damage` applied to its files.
    fn copy_with(&self, damage: impl FnOnce(&mut Vec<(String, Vec<u8>)>)) -> tempfile::TempDir {
        let mut files = self.files.clone();
        damage(&mut files);
        let dir = tempfile::tempdir().unwrap();
        for (name, bytes) in &files {
            std::fs::write(dir.path().join(name), bytes).unwrap();
        }
        dir
    }

    fn path(&self, dir: &Path, file: usize) -> PathBuf {
        dir.join(&self.files[file].0)
    }
}

fn read_wal_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_str().unwrap().ends_with(".wal"))
        .map(|e| {
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// Opens `dir` and expects `Corruption` at `file` and `offset`; checks the
/// failed open left every segment as it was.
fn expect_corruption(dir: &Path, options: Options, file: &Path, offset: u64) {
    let before = read_wal_files(dir);
    match Engine::open(dir, options) {
        Err(Error::Corruption {
            file: got_file,
            offset: got_offset,
            reason,
        }) => {
            assert_eq!(got_file, file, "wrong file named ({reason})");
            assert_eq!(
                got_offset,
                offset,
                "wrong offset in {} ({reason})",
                file.display()
            );
            assert!(!reason.is_empty());
        }
        Err(other) => panic!(
            "expected Corruption at {}:{offset}, got {other:?}",
            file.display()
        ),
        Ok(engine) => panic!(
            "expected Corruption at {}:{offset}, open succeeded with {} keys",
            file.display(),
            dump(&engine).len()
        ),
    }
    assert_eq!(read_wal_files(dir), before, "a failed open changed the log");
}

fn small_log() -> Log {
    Log::build(
        (0..6).map(|i| commit_writes(i, 1 + i * 3)).collect(),
        64 << 20,
    )
}

/// Five segments of a few records each (segment_bytes 4096).
fn segmented_log() -> Log {
    let log = Log::build((0..16).map(|i| commit_writes(i, 900)).collect(), 4096);
    assert!(log.files.len() >= 4, "only {} segments", log.files.len());
    log
}

#[test]
fn a_flipped_bit_followed_by_valid_records_is_corruption_at_that_record() {
    let log = small_log();
    // The last commit too: the close record follows it.
    for damaged in 0..log.records.len() {
        let (file, start, end) = log.records[damaged];
        // The length, the checksum, the kind, the ts, the last payload byte.
        for at in [start, start + 2, start + 5, start + 8, start + 9, end - 1] {
            for bit in [0, 7] {
                let dir = log.copy_with(|files| files[file].1[at as usize] ^= 1 << bit);
                let path = log.path(dir.path(), file);
                expect_corruption(dir.path(), Options::default(), &path, start);
            }
        }
    }
}

#[test]
fn repair_keeps_exactly_the_commits_before_the_damage() {
    let log = small_log();
    for damaged in [0, 2, log.records.len() - 2] {
        let (file, start, _) = log.records[damaged];
        let dir = log.copy_with(|files| files[file].1[start as usize + 12] ^= 0x04);
        let repair = Options {
            repair: true,
            ..Options::default()
        };
        {
            let engine = Engine::open(dir.path(), repair).unwrap();
            assert_eq!(dump(&engine), state_after(&log.commits[..damaged]));
            assert_eq!(engine.snapshot().ts(), damaged as u64);
            let mut txn = engine.begin();
            txn.put(b"after repair", b"yes").unwrap();
            txn.commit().unwrap();
        }
        // The repaired log opens without repair and keeps the new commit.
        let engine = Engine::open(dir.path(), Options::default()).unwrap();
        let mut expected = state_after(&log.commits[..damaged]);
        expected.insert(b"after repair".to_vec(), b"yes".to_vec());
        assert_eq!(dump(&engine), expected);
    }
}

#[test]
fn damage_at_the_end_of_a_sealed_segment_is_corruption_not_a_torn_tail() {
    let log = segmented_log();
    let options = || Options {
        segment_bytes: 4096,
        ..Options::default()
    };
    // The last record of the first segment: valid records follow in the
    // next segment, so this is no torn tail.
    let last_of_first = log.records.iter().rposition(|r| r.0 == 0).unwrap();
    let (file, start, end) = log.records[last_of_first];
    let flipped = log.copy_with(|files| files[file].1[end as usize - 1] ^= 0x01);
    expect_corruption(
        flipped.path(),
        options(),
        &log.path(flipped.path(), file),
        start,
    );
    let cut = log.copy_with(|files| files[file].1.truncate(end as usize - 3));
    expect_corruption(cut.path(), options(), &log.path(cut.path(), file), start);

    // Repair cuts the damaged segment there and drops every later one.
    let engine = Engine::open(
        flipped.path(),
        Options {
            repair: true,
            ..options()
        },
    )
    .unwrap();
    assert_eq!(dump(&engine), state_after(&log.commits[..last_of_first]));
    // `open` says what the repair dropped: the damaged segment's rest,
    // then every later segment whole.
    let cuts = engine.recovery_cuts();
    let later = log.records.iter().map(|r| r.0).max().unwrap();
    assert_eq!(cuts.len(), 1 + later - file, "{cuts:?}");
    assert_eq!(
        (&cuts[0].file, cuts[0].offset),
        (&log.path(flipped.path(), file), start)
    );
    for (k, cut) in cuts[1..].iter().enumerate() {
        assert_eq!(
            (&cut.file, cut.offset),
            (&log.path(flipped.path(), file + 1 + k), 0)
        );
    }
    let mut txn = engine.begin();
    txn.put(b"after repair", b"yes").unwrap();
    txn.commit().unwrap();
    drop(engine);
    let engine = Engine::open(flipped.path(), options()).unwrap();
    assert_eq!(engine.recovery_cuts(), []);
    let mut expected = state_after(&log.commits[..last_of_first]);
    expected.insert(b"after repair".to_vec(), b"yes".to_vec());
    assert_eq!(dump(&engine), expected);
}

#[test]
fn a_damaged_segment_header_is_corruption_naming_the_segment() {
    let options = || Options {
        segment_bytes: 4096,
        ..Options::default()
    };
    let single = small_log();
    let segmented = segmented_log();
    let last = segmented.files.len() - 1;
    for (log, file) in [
        (&single, 0),
        (&segmented, 0),
        (&segmented, 1),
        (&segmented, last),
    ] {
        // Magic, version, reserved, first ts, checksum.
        for at in [0, 7, 8, 12, 16, 23, 24, 27] {
            let dir = log.copy_with(|files| files[file].1[at] ^= 0x20);
            let path = log.path(dir.path(), file);
            expect_corruption(dir.path(), options(), &path, 0);
        }
    }
    // A header naming another first ts than the file name.
    let dir = segmented.copy_with(|files| {
        let (name, bytes) = &mut files[1];
        let first: u64 = name.trim_end_matches(".wal").parse().unwrap();
        let mut header = bytes[..32].to_vec();
        header[16..24].copy_from_slice(&(first + 1).to_le_bytes());
        let crc = crc32(&header[..24]);
        header[24..28].copy_from_slice(&crc.to_le_bytes());
        bytes[..32].copy_from_slice(&header);
    });
    expect_corruption(dir.path(), options(), &segmented.path(dir.path(), 1), 0);
}

/// `repair` also cuts at a damaged segment header and at a gap between
/// segments: the log keeps exactly the commits of the segments before,
/// `recovery_cuts` names every segment it removed, and the repaired log
/// opens without repair and takes new commits.
#[test]
fn repair_cuts_at_a_damaged_header_or_a_gap_and_keeps_what_was_before() {
    let log = segmented_log();
    let last = log.files.len() - 1;
    let options = |repair| Options {
        segment_bytes: 4096,
        repair,
        ..Options::default()
    };
    let damaged = |file: usize| -> Vec<(&str, tempfile::TempDir)> {
        let header = log.copy_with(|files| files[file].1[20] ^= 0x20);
        let gap = log.copy_with(|files| {
            files.remove(file);
        });
        vec![("header", header), ("gap", gap)]
    };
    for file in 1..=last {
        for (what, dir) in damaged(file) {
            if what == "gap" && file == last {
                continue; // the newest segment gone is a shorter log, not a gap
            }
            let kept = log.records.iter().filter(|r| r.0 < file).count();
            let engine = Engine::open(dir.path(), options(true))
                .unwrap_or_else(|e| panic!("{what} at segment {file}: {e}"));
            assert_eq!(
                dump(&engine),
                state_after(&log.commits[..kept]),
                "{what} at segment {file}"
            );
            let removed: Vec<_> = engine.recovery_cuts().iter().map(|c| c.offset).collect();
            let gone = if what == "gap" {
                last - file
            } else {
                last + 1 - file
            };
            assert_eq!(removed, vec![0; gone], "{what} at segment {file}");
            let mut txn = engine.begin();
            txn.put(b"after repair", b"yes").unwrap();
            txn.commit().unwrap();
            drop(engine);
            let engine = Engine::open(dir.path(), options(false)).unwrap();
            assert_eq!(engine.recovery_cuts(), [], "{what} at segment {file}");
            let mut expected = state_after(&log.commits[..kept]);
            expected.insert(b"after repair".to_vec(), b"yes".to_vec());
            assert_eq!(dump(&engine), expected, "{what} at segment {file}");
        }
    }
}

/// CRC-32 (IEEE), bit by bit: enough for one header.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[test]
fn a_foreign_file_with_a_segment_name_is_corruption() {
    let foreign = b"This is someone's shopping list, not an mvledger log: eggs, milk.".to_vec();
    assert!(foreign.len() > SEGMENT_HEADER_BYTES as usize);

    // Alone in the directory.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("00000000000000000001.wal");
    std::fs::write(&path, &foreign).unwrap();
    expect_corruption(dir.path(), Options::default(), &path, 0);

    // After a real log, named as its next segment.
    let log = small_log();
    let next = format!("{:020}.wal", log.commits.len() + 1);
    let dir = log.copy_with(|files| files.push((next.clone(), foreign.clone())));
    expect_corruption(dir.path(), Options::default(), &dir.path().join(&next), 0);

    // In place of a real segment in the middle of a log.
    let log = segmented_log();
    let dir = log.copy_with(|files| files[2].1 = foreign.clone());
    expect_corruption(
        dir.path(),
        Options {
            segment_bytes: 4096,
            ..Options::default()
        },
        &log.path(dir.path(), 2),
        0,
    );
}

#[test]
fn a_foreign_file_named_before_the_first_segment_is_corruption() {
    // Timestamps start at 1, so no segment of this engine is ever named 0:
    // a file by that name is foreign and must not be taken into the log
    // (where a later checkpoint would delete it as a covered segment).
    let foreign = b"This is someone's shopping list, not an mvledger log: eggs, milk.".to_vec();
    let log = small_log();
    let name = format!("{:020}.wal", 0);
    let dir = log.copy_with(|files| files.insert(0, (name.clone(), foreign.clone())));
    expect_corruption(dir.path(), Options::default(), &dir.path().join(&name), 0);
}

#[test]
fn a_missing_segment_is_corruption_naming_the_file_after_the_gap() {
    let log = segmented_log();
    let options = || Options {
        segment_bytes: 4096,
        ..Options::default()
    };
    for missing in 1..log.files.len() - 1 {
        let dir = log.copy_with(|files| {
            files.remove(missing);
        });
        expect_corruption(dir.path(), options(), &log.path(dir.path(), missing + 1), 0);
    }
    // The first segment gone: the log no longer starts at ts 1.
    let dir = log.copy_with(|files| {
        files.remove(0);
    });
    expect_corruption(dir.path(), options(), &log.path(dir.path(), 1), 0);
}

#[test]
fn unrelated_files_in_the_directory_are_ignored() {
    let log = small_log();
    let dir = log.copy_with(|_| {});
    let unrelated: [(&str, &[u8]); 5] = [
        ("notes.txt", b"remember the milk"),
        ("1.wal", b"not twenty digits"),
        ("0000000000000000000x.wal", b"not all digits"),
        (
            "00000000000000000001.wal.bak",
            b"a backup copy, not a segment",
        ),
        ("README", b""),
    ];
    for (name, bytes) in unrelated {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    std::fs::create_dir(dir.path().join("archive")).unwrap();
    {
        let engine = Engine::open(dir.path(), Options::default()).unwrap();
        assert_eq!(dump(&engine), state_after(&log.commits));
        let mut txn = engine.begin();
        txn.put(b"more", b"data").unwrap();
        txn.commit().unwrap();
    }
    let engine = Engine::open(dir.path(), Options::default()).unwrap();
    assert_eq!(
        engine.snapshot().get(b"more").unwrap().as_deref(),
        Some(&b"data"[..])
    );
    for (name, bytes) in unrelated {
        assert_eq!(
            std::fs::read(dir.path().join(name)).unwrap(),
            bytes,
            "{name} changed"
        );
    }
    assert!(dir.path().join("archive").is_dir());
}

/// What opening a log with one bit flipped at `at` in `file` must give.
enum Expected {
    /// `open` succeeds with exactly the first n commits.
    Prefix(usize),
    /// `open` fails with `Corruption` at this offset of the damaged file.
    Corrupt(u64),
    /// Either: the damage is in bytes that carry nothing (header padding).
    PrefixOrCorrupt(usize, u64),
}

fn expected_after_flip(log: &Log, file: usize, at: u64) -> Expected {
    let n = log.commits.len();
    if at < SEGMENT_HEADER_CHECKED_BYTES {
        return Expected::Corrupt(0);
    }
    if at < SEGMENT_HEADER_BYTES {
        return Expected::PrefixOrCorrupt(n, 0);
    }
    if file + 1 == log.files.len() && (log.close.0..log.close.1).contains(&at) {
        // The close record, now the log's last frame: it reads as torn
        // and goes, and no commit with it.
        return Expected::Prefix(n);
    }
    let r = log
        .records
        .iter()
        .position(|&(f, start, end)| f == file && (start..end).contains(&at))
        .unwrap();
    // The last commit too: the close record after it tells damage from a
    // torn tail.
    Expected::Corrupt(log.records[r].1)
}

fn check_flip(log: &Log, options: &Options, file: usize, at: u64, bit: u32) {
    let dir = log.copy_with(|files| files[file].1[at as usize] ^= 1 << bit);
    let path = log.path(dir.path(), file);
    let opened = catch_unwind(AssertUnwindSafe(|| {
        Engine::open(dir.path(), options.clone()).map(|engine| dump(&engine))
    }))
    .unwrap_or_else(|_| {
        panic!(
            "open panicked on bit {bit} of byte {at} of {}",
            path.display()
        )
    });
    let prefix = |n: usize| state_after(&log.commits[..n]);
    let what = format!("bit {bit} of byte {at} in {}", path.display());
    match (expected_after_flip(log, file, at), opened) {
        (Expected::Prefix(n) | Expected::PrefixOrCorrupt(n, _), Ok(state)) => {
            assert!(state == prefix(n), "{what}: wrong data after open");
        }
        (
            Expected::Corrupt(offset) | Expected::PrefixOrCorrupt(_, offset),
            Err(Error::Corruption {
                file: got,
                offset: got_offset,
                ..
            }),
        ) => {
            assert_eq!(got, path, "{what}: wrong file named");
            assert_eq!(got_offset, offset, "{what}: wrong offset");
        }
        (Expected::Prefix(n), Err(e)) => panic!("{what}: expected a prefix of {n}, got {e:?}"),
        (Expected::Corrupt(offset), Ok(state)) => panic!(
            "{what}: expected Corruption at {offset}, open gave {} keys",
            state.len()
        ),
        (_, Err(e)) => panic!("{what}: expected Corruption, got {e:?}"),
    }
}

#[test]
fn flipping_any_bit_of_a_small_log_gives_a_prefix_or_corruption() {
    let log = small_log();
    let len = log.files[0].1.len() as u64;
    assert!(len < 600, "the log is {len} bytes: keep this loop small");
    for at in 0..len {
        for bit in [(at % 8) as u32, 7 - (at % 8) as u32] {
            check_flip(&log, &Options::default(), 0, at, bit);
        }
    }
}

#[test]
fn flipping_bits_across_several_segments_gives_a_prefix_or_corruption() {
    let log = segmented_log();
    let options = Options {
        segment_bytes: 4096,
        ..Options::default()
    };
    for file in 0..log.files.len() {
        // Every header and frame-header byte; a sample of payload bytes.
        let mut positions: Vec<u64> = (0..SEGMENT_HEADER_BYTES).collect();
        for &(f, start, end) in &log.records {
            if f == file {
                positions.extend(start..start + 21);
                positions.extend((start + 21..end).step_by(97));
                positions.push(end - 1);
            }
        }
        if file + 1 == log.files.len() {
            positions.extend(log.close.0..log.close.1);
        }
        for at in positions {
            check_flip(&log, &options, file, at, (at % 8) as u32);
        }
    }
}

/// Commits `writes` in one transaction.
fn commit_all(engine: &Engine, writes: &Writes) {
    let mut txn = engine.begin();
    for (key, value) in writes {
        match value {
            Some(v) => txn.put(key, v).unwrap(),
            None => txn.delete(key).unwrap(),
        }
    }
    txn.commit().unwrap();
}

#[test]
fn a_segment_behind_a_link_is_replayed_and_appended_to_not_skipped() {
    // A link to the segment, the file itself elsewhere: `open` used to
    // list files only, saw no log, and began a new segment through the
    // link, truncating the file it points to.
    let log = small_log();
    let dir = log.copy_with(|_| {});
    let elsewhere = tempfile::tempdir().unwrap();
    let name = &log.files[0].0;
    let target = elsewhere.path().join(name);
    std::fs::rename(dir.path().join(name), &target).unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join(name)).unwrap();
    let before = std::fs::read(&target).unwrap();
    let more: Writes = vec![(b"after the link".to_vec(), Some(b"kept".to_vec()))];
    {
        let engine = Engine::open(dir.path(), Options::default()).unwrap();
        assert_eq!(dump(&engine), state_after(&log.commits));
        commit_all(&engine, &more);
    }
    let after = std::fs::read(&target).unwrap();
    assert!(
        after.len() > before.len() && after.starts_with(&before),
        "the linked segment lost bytes: {} before, {} after",
        before.len(),
        after.len()
    );
    let mut all = log.commits.clone();
    all.push(more);
    let engine = Engine::open(dir.path(), Options::default()).unwrap();
    assert_eq!(dump(&engine), state_after(&all));
}

#[test]
fn a_checkpoint_behind_a_link_is_loaded() {
    // The checkpoint alone holds the commits: the segments it covers are
    // removed after it. A link to it must be read as the file.
    let dir = tempfile::tempdir().unwrap();
    let options = || Options {
        segment_bytes: 4096,
        ..Options::default()
    };
    let commits: Vec<Writes> = (0..16).map(|i| commit_writes(i, 900)).collect();
    {
        let engine = Engine::open(dir.path(), options()).unwrap();
        for writes in &commits {
            commit_all(&engine, writes);
        }
        engine.checkpoint().unwrap();
        engine.checkpoint().unwrap();
    }
    let first_wal = |dir: &Path| read_wal_files(dir).first().map(|(n, _)| n.clone());
    assert_ne!(
        first_wal(dir.path()).as_deref(),
        Some(format!("{:020}.wal", 1).as_str()),
        "the checkpoints removed no segment: the log alone would do"
    );
    let elsewhere = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "ckpt") {
            let target = elsewhere.path().join(path.file_name().unwrap());
            std::fs::rename(&path, &target).unwrap();
            std::os::unix::fs::symlink(&target, &path).unwrap();
        }
    }
    let engine = Engine::open(dir.path(), options()).unwrap();
    assert_eq!(dump(&engine), state_after(&commits));
    assert!(engine.set_aside().is_empty(), "{:?}", engine.set_aside());
}

#[test]
fn a_pipe_under_the_first_segment_name_fails_open_instead_of_hanging_it() {
    // A new engine creates `00000000000000000001.wal`; a pipe there would
    // make that open wait for a reader forever. It is damage, named.
    let dir = tempfile::tempdir().unwrap();
    let pipe = dir.path().join(format!("{:020}.wal", 1));
    let made = std::process::Command::new("mkfifo")
        .arg(&pipe)
        .status()
        .unwrap();
    assert!(made.success(), "mkfifo failed");
    let (tx, rx) = std::sync::mpsc::channel();
    let path = dir.path().to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(Engine::open(&path, Options::default()).map(drop));
    });
    match rx.recv_timeout(std::time::Duration::from_secs(30)) {
        Ok(Err(Error::Corruption { file, .. })) => assert_eq!(file, pipe),
        Ok(Err(e)) => panic!("{e}"),
        Ok(Ok(())) => panic!("opened over a pipe"),
        Err(_) => panic!("open hung on a pipe under a segment name"),
    }
}

#[test]
fn a_directory_or_a_link_to_nothing_under_a_segment_or_checkpoint_name_is_corruption() {
    // A segment linked to a volume that is not mounted at open time: passed
    // over, the commits in it would be missing without a word (and the
    // next segment written through the link).
    let log = small_log();
    let name = log.files[0].0.clone();
    type Make = fn(&Path);
    let make: [(&str, Make); 2] = [
        ("a directory", |path| std::fs::create_dir(path).unwrap()),
        ("a link to nothing", |path| {
            std::os::unix::fs::symlink("/nonexistent/mvledger-volume/file", path).unwrap()
        }),
    ];
    for (what, make) in make {
        let names = [
            (true, name.clone()),
            (false, format!("{:020}.wal", 1_000)),
            (false, format!("{:020}.ckpt", 3)),
        ];
        for (replace, entry) in names {
            let dir = log.copy_with(|_| {});
            let path = dir.path().join(&entry);
            if replace {
                std::fs::remove_file(&path).unwrap();
            }
            make(&path);
            match Engine::open(dir.path(), Options::default()) {
                Err(Error::Corruption { file, offset, .. }) => {
                    assert_eq!((file.as_path(), offset), (path.as_path(), 0), "{what}");
                }
                Err(e) => panic!("{what} as {entry}: {e}"),
                Ok(engine) => panic!(
                    "{what} as {entry} went unseen: opened with {} keys",
                    dump(&engine).len()
                ),
            }
            // Nothing was created through it or beside it.
            assert!(
                !Path::new("/nonexistent/mvledger-volume").exists(),
                "{what}"
            );
            let wal = std::fs::read_dir(dir.path())
                .unwrap()
                .filter(|e| {
                    let name = e.as_ref().unwrap().file_name();
                    name.to_str().unwrap().ends_with(".wal")
                })
                .count();
            let expected = if entry.ends_with(".wal") && !replace {
                2
            } else {
                1
            };
            assert_eq!(wal, expected, "{what} as {entry}");
        }
    }
}

#[test]
fn a_covered_segment_behind_a_link_goes_as_the_link_and_its_file_stays() {
    // README: "removing a covered segment removes the link, not its
    // target" (the file may be on another volume, the user's to manage).
    let log = segmented_log();
    let dir = log.copy_with(|_| {});
    let elsewhere = tempfile::tempdir().unwrap();
    let link = log.path(dir.path(), 0);
    let target = elsewhere.path().join(&log.files[0].0);
    std::fs::rename(&link, &target).unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let options = Options {
        segment_bytes: 4096,
        ..Options::default()
    };
    let engine = Engine::open(dir.path(), options).unwrap();
    engine.checkpoint().unwrap();
    engine.checkpoint().unwrap();
    assert!(
        std::fs::symlink_metadata(&link).is_err(),
        "the covered segment's link is still there"
    );
    assert_eq!(std::fs::read(&target).unwrap(), log.files[0].1);
    assert_eq!(dump(&engine), state_after(&log.commits));
}
