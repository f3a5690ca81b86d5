//! Torn tails (ARCHITECTURE.md "Redo log", invariant 3; issue 2, behaviour
//! point 3): a damaged record that is the last thing in the log (cut short,
//! followed by garbage or zeros, or with a broken checksum) was never
//! acknowledged by a crash-free engine, so `open` cuts it off instead of
//! failing; commits then append after the cut, and a further reopen sees
//! them. A segment whose header was never written whole is dropped the
//! same way.

mod common;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use common::{dump, segments};
use mvledger::{Engine, Options};

type State = BTreeMap<Vec<u8>, Vec<u8>>;

const SEGMENT_HEADER_BYTES: u64 = 32;

fn last_segment(dir: &Path) -> PathBuf {
    segments(dir).pop().expect("no segment")
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("key-{i:04}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    format!("value of commit {i}").into_bytes()
}

/// The state after commits `0..n` of `key(i) = value(i)`.
fn expected(n: usize) -> State {
    (0..n).map(|i| (key(i), value(i))).collect()
}

/// A log of `n` single-key commits as a crash right after the last one
/// returned leaves it: written through an engine closed cleanly, then
/// the close record that the clean close ended the log with taken off (a
/// crash writes none). Returns the directory and where the last record
/// starts in the last segment (its end is the file's end).
///
/// The commits before the last were closed cleanly too: their close
/// record stays, between them and the last record (the log goes on after
/// a close record).
fn log_of(n: usize, options: &Options) -> (tempfile::TempDir, u64) {
    let dir = tempfile::tempdir().unwrap();
    let commit = |engine: &Engine, i: usize| {
        let mut txn = engine.begin();
        txn.put(key(i), value(i)).unwrap();
        txn.commit().unwrap();
    };
    // The last record's start is the log's end before it, taken with the
    // engine closed: an open engine may have laid zeros past its records.
    {
        let engine = Engine::open(dir.path(), options.clone()).unwrap();
        for i in 0..n - 1 {
            commit(&engine, i);
        }
    }
    let mut last_start = std::fs::metadata(last_segment(dir.path())).unwrap().len();
    {
        let engine = Engine::open(dir.path(), options.clone()).unwrap();
        commit(&engine, n - 1);
    }
    strip_close_record(&last_segment(dir.path()));
    // A record that rotated into a fresh segment starts after its header.
    let segment = last_segment(dir.path());
    let first_ts: u64 = segment
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    if first_ts == n as u64 {
        last_start = SEGMENT_HEADER_BYTES;
    }
    (dir, last_start)
}

/// A clean close's record: `u32 len (8) | u32 crc | u8 kind (3) | u64 ts`.
const CLOSE_RECORD_BYTES: u64 = 17;

/// Takes the close record off the end of `segment`, as a crash (which
/// writes none) would have left it.
fn strip_close_record(segment: &Path) {
    let bytes = std::fs::read(segment).unwrap();
    let at = bytes.len() - CLOSE_RECORD_BYTES as usize;
    assert_eq!(
        bytes[at + 8],
        3,
        "{} ends in no close record",
        segment.display()
    );
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment)
        .unwrap();
    file.set_len(at as u64).unwrap();
}

/// Opens `dir` (whose log holds commits `0..n`, the last one damaged at the
/// tail), checks that exactly the commits before the damaged one are back
/// and the segment was cut at `cut` (and that `open` reports the cut,
/// unless only zeros went), commits more, and checks that a further
/// reopen sees them and reports no cut.
fn check_cut_and_append(dir: &Path, options: &Options, survivors: usize, cut: u64) {
    let segment = last_segment(dir);
    let size = std::fs::metadata(&segment).unwrap().len();
    let only_zeros = std::fs::read(&segment).unwrap()[cut as usize..]
        .iter()
        .all(|&b| b == 0);
    {
        let engine = Engine::open(dir, options.clone()).unwrap();
        assert_eq!(dump(&engine), expected(survivors), "state after the cut");
        let cuts = engine.recovery_cuts();
        if only_zeros {
            assert!(cuts.is_empty(), "zeros reported as a cut: {cuts:?}");
        } else {
            assert_eq!(cuts.len(), 1, "{cuts:?}");
            assert_eq!(
                (&cuts[0].file, cuts[0].offset, cuts[0].bytes),
                (&segment, cut, size - cut),
                "{cuts:?}"
            );
        }
        assert_eq!(
            std::fs::metadata(&segment).unwrap().len(),
            cut,
            "the torn tail was not cut at the start of the damaged record"
        );
        for i in survivors..survivors + 3 {
            let mut txn = engine.begin();
            txn.put(key(i), value(i)).unwrap();
            txn.commit().unwrap();
        }
        assert_eq!(dump(&engine), expected(survivors + 3));
    }
    for _ in 0..2 {
        let engine = Engine::open(dir, options.clone()).unwrap();
        assert_eq!(
            dump(&engine),
            expected(survivors + 3),
            "commits after the cut are not back after reopen"
        );
        assert_eq!(engine.recovery_cuts(), [], "a cut after a clean close");
    }
}

#[test]
fn a_truncated_last_record_is_cut_off_and_later_commits_append() {
    let options = Options::default();
    let n = 8;
    let (base, start) = log_of(n, &options);
    let end = std::fs::metadata(last_segment(base.path())).unwrap().len();
    // Inside the frame header, inside the payload, one byte short.
    for cut in [start + 1, start + 4, start + 9, (start + end) / 2, end - 1] {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(base.path(), dir.path());
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(last_segment(dir.path()))
            .unwrap();
        file.set_len(cut).unwrap();
        drop(file);
        check_cut_and_append(dir.path(), &options, n - 1, start);
    }
}

fn append_to_last_segment(dir: &Path, bytes: &[u8]) {
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(last_segment(dir))
        .unwrap();
    file.write_all(bytes).unwrap();
}

#[test]
fn garbage_after_the_last_record_is_cut_off() {
    let options = Options::default();
    let n = 5;
    let (base, _) = log_of(n, &options);
    let end = std::fs::metadata(last_segment(base.path())).unwrap().len();
    let mut x = 0x2545_F491_4F6C_DD1D_u64;
    let garbage: Vec<u8> = (0..300)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    // Also a plausible-looking frame header with a length past the end.
    let mut fake_header = 1000u32.to_le_bytes().to_vec();
    fake_header.extend_from_slice(&[0xAA, 0xBB, 0xCC, 0xDD, 1]);
    for tail in [garbage.clone(), vec![0xFF; 7], fake_header] {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(base.path(), dir.path());
        append_to_last_segment(dir.path(), &tail);
        check_cut_and_append(dir.path(), &options, n, end);
    }
}

#[test]
fn zeros_after_the_last_record_are_cut_off() {
    let options = Options::default();
    let n = 5;
    let (base, _) = log_of(n, &options);
    let end = std::fs::metadata(last_segment(base.path())).unwrap().len();
    // A file system may leave a zero-filled extent after a crash.
    for zeros in [1, 9, 4096] {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(base.path(), dir.path());
        append_to_last_segment(dir.path(), &vec![0; zeros]);
        check_cut_and_append(dir.path(), &options, n, end);
    }
}

#[test]
fn a_last_record_with_a_broken_checksum_is_cut_off() {
    let options = Options::default();
    let n = 6;
    let (base, start) = log_of(n, &options);
    let end = std::fs::metadata(last_segment(base.path())).unwrap().len();
    // The crc field itself, the kind byte, the ts, the last value byte.
    for at in [start + 4, start + 8, start + 9, end - 1] {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(base.path(), dir.path());
        let path = last_segment(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at as usize] ^= 0x10;
        std::fs::write(&path, &bytes).unwrap();
        check_cut_and_append(dir.path(), &options, n - 1, start);
    }
}

#[test]
fn a_torn_record_in_the_last_of_several_segments_is_cut_off() {
    let options = Options {
        segment_bytes: 4096,
        ..Options::default()
    };
    let n = 250;
    let (base, start) = log_of(n, &options);
    assert!(segments(base.path()).len() >= 2, "the log did not rotate");
    let end = std::fs::metadata(last_segment(base.path())).unwrap().len();
    let dir = tempfile::tempdir().unwrap();
    copy_dir(base.path(), dir.path());
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(last_segment(dir.path()))
        .unwrap();
    file.set_len(end - 3).unwrap();
    drop(file);
    check_cut_and_append(dir.path(), &options, n - 1, start);
}

#[test]
fn a_segment_whose_header_was_never_written_whole_is_dropped() {
    let options = Options::default();
    let n = 4;
    let (base, _) = log_of(n, &options);
    // A crash while rotating: the next segment exists with nothing, a
    // partial header, zeros where the header should be, or stale bytes (a
    // file whose header write never reached the disk may show whatever
    // the blocks held: the power-loss file system's `Torn::Garbage`).
    let next = base.path().join(format!("{:020}.wal", n + 1));
    let header_start = [b"MVLGWAL\0".as_slice(), &[1, 0]].concat();
    let garbage: Vec<u8> = (0..32u8).map(|i| i.wrapping_mul(151) ^ 0x5A).collect();
    let garbage_short = garbage[..13].to_vec();
    for content in [vec![], header_start, vec![0; 32], garbage, garbage_short] {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(base.path(), dir.path());
        let torn = dir.path().join(next.file_name().unwrap());
        std::fs::write(&torn, &content).unwrap();
        {
            let engine = Engine::open(dir.path(), options.clone()).unwrap();
            assert_eq!(dump(&engine), expected(n));
            // Reported as a cut when it held more than zeros.
            let cuts: Vec<_> = engine
                .recovery_cuts()
                .iter()
                .map(|c| (c.file.clone(), c.offset, c.bytes))
                .collect();
            if content.iter().all(|&b| b == 0) {
                assert_eq!(cuts, []);
            } else {
                assert_eq!(cuts, [(torn.clone(), 0, content.len() as u64)]);
            }
            let mut txn = engine.begin();
            txn.put(key(n), value(n)).unwrap();
            txn.commit().unwrap();
        }
        let engine = Engine::open(dir.path(), options.clone()).unwrap();
        assert_eq!(
            dump(&engine),
            expected(n + 1),
            "after a torn segment header of {} bytes",
            content.len()
        );
    }
}

#[test]
fn a_torn_commit_of_big_equal_values_is_cut_off() {
    // Found by an outside review: a torn commit of three 16 MiB values of
    // 0x01 bytes. Every offset in its torn part reads as the start of a
    // record of 0x01010101 bytes that fits in the file, and the search for
    // a valid record after the damage used to checksum each of them: an
    // open took minutes for a few KiB past the first 16 MiB, hours for
    // tens of MiB (`wal::record::valid_record_after` now passes over
    // offsets whose ts cannot follow, before any checksum).
    let dir = tempfile::tempdir().unwrap();
    let options = Options {
        sync: mvledger::SyncMode::Never,
        ..Options::default()
    };
    let before = {
        let engine = Engine::open(dir.path(), options.clone()).unwrap();
        for i in 0..10 {
            let mut txn = engine.begin();
            txn.put(key(i), value(i)).unwrap();
            txn.commit().unwrap();
        }
        engine.sync().unwrap();
        let before = std::fs::metadata(last_segment(dir.path())).unwrap().len();
        let ones = vec![1u8; 16 << 20];
        let mut txn = engine.begin();
        for k in [b"x1", b"x2", b"x3"] {
            txn.put(k, &ones).unwrap();
        }
        txn.commit().unwrap();
        before
    };
    // The crash kept 20 MiB of the record.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(last_segment(dir.path()))
        .unwrap();
    file.set_len(before + (20 << 20)).unwrap();
    drop(file);
    let engine = Engine::open(dir.path(), options).unwrap();
    assert_eq!(dump(&engine), expected(10));
    assert_eq!(
        std::fs::metadata(last_segment(dir.path())).unwrap().len(),
        before,
        "the torn record was not cut at its start"
    );
}

/// A clean close ends the log with a close record, which a crash never
/// writes. So one flipped bit in the last record is damage in a log closed
/// cleanly (`Corruption` at that record, which `repair` cuts and reports)
/// and a torn tail in a crash image (cut, never acknowledged): before the
/// close record both read as a torn tail, and a cleanly closed log lost
/// its last commit without an error.
#[test]
fn a_flipped_bit_in_the_last_record_is_damage_after_a_clean_close_and_torn_after_a_crash() {
    let options = Options::default();
    let n = 6;
    let (crashed, start) = log_of(n, &options);
    let crashed_len = std::fs::metadata(last_segment(crashed.path()))
        .unwrap()
        .len();
    // The crash image opened and closed again: now it ends with a close
    // record, and a further open and close adds no second one.
    let closed = tempfile::tempdir().unwrap();
    copy_dir(crashed.path(), closed.path());
    for _ in 0..2 {
        let engine = Engine::open(closed.path(), options.clone()).unwrap();
        assert_eq!(dump(&engine), expected(n));
        drop(engine);
        assert_eq!(
            std::fs::metadata(last_segment(closed.path()))
                .unwrap()
                .len(),
            crashed_len + CLOSE_RECORD_BYTES
        );
    }
    let flip = |dir: &Path| {
        let path = last_segment(dir);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[start as usize + 9] ^= 0x02; // the record's ts
        std::fs::write(&path, &bytes).unwrap();
        path
    };

    let torn = tempfile::tempdir().unwrap();
    copy_dir(crashed.path(), torn.path());
    flip(torn.path());
    check_cut_and_append(torn.path(), &options, n - 1, start);

    let damaged = tempfile::tempdir().unwrap();
    copy_dir(closed.path(), damaged.path());
    let path = flip(damaged.path());
    match Engine::open(damaged.path(), options.clone()) {
        Err(mvledger::Error::Corruption { file, offset, .. }) => {
            assert_eq!((file, offset), (path.clone(), start));
        }
        Err(e) => panic!("expected Corruption, got {e}"),
        Ok(engine) => panic!(
            "a damaged last record of a closed log opened with {} keys",
            dump(&engine).len()
        ),
    }
    let repair = Options {
        repair: true,
        ..options.clone()
    };
    let engine = Engine::open(damaged.path(), repair).unwrap();
    assert_eq!(dump(&engine), expected(n - 1));
    let cuts = engine.recovery_cuts();
    assert_eq!(cuts.len(), 1, "{cuts:?}");
    assert_eq!((&cuts[0].file, cuts[0].offset), (&path, start));
}

/// A close record must carry the log's last ts: one that names another is
/// damage, not a clean close.
#[test]
fn a_close_record_naming_another_ts_is_corruption() {
    let options = Options::default();
    let n = 4;
    let (crashed, _) = log_of(n, &options);
    drop(Engine::open(crashed.path(), options.clone()).unwrap());
    let path = last_segment(crashed.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() - CLOSE_RECORD_BYTES as usize;
    for ts in [n as u64 - 1, n as u64 + 1] {
        let mut close = Vec::new();
        mvledger::wal::record::encode_close(&mut close, ts);
        bytes.truncate(at);
        bytes.extend_from_slice(&close);
        std::fs::write(&path, &bytes).unwrap();
        match Engine::open(crashed.path(), options.clone()) {
            Err(mvledger::Error::Corruption { file, offset, .. }) => {
                assert_eq!((file, offset), (path.clone(), at as u64), "ts {ts}");
            }
            Err(e) => panic!("ts {ts}: expected Corruption, got {e}"),
            Ok(_) => panic!("ts {ts}: a close record for ts {ts} after ts {n} opened"),
        }
    }
}

/// A torn tail cut after a close record leaves that close record the
/// log's last frame again: the next clean close adds no second one (found
/// by an outside review: it did, 17 bytes each time).
#[test]
fn a_torn_tail_cut_after_a_close_record_leaves_one_close_record() {
    let options = Options::default();
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(dir.path(), options.clone()).unwrap();
        let mut txn = engine.begin();
        txn.put(key(0), value(0)).unwrap();
        txn.commit().unwrap();
    }
    let closed = std::fs::metadata(last_segment(dir.path())).unwrap().len();
    append_to_last_segment(dir.path(), &[0xAB; 40]);
    {
        let engine = Engine::open(dir.path(), options.clone()).unwrap();
        assert_eq!(dump(&engine), expected(1));
        assert_eq!(engine.recovery_cuts().len(), 1);
    }
    assert_eq!(
        std::fs::metadata(last_segment(dir.path())).unwrap().len(),
        closed,
        "the close wrote a second close record after the first"
    );
}
