//! The log under `SyncMode::Always` writes small groups over zeros laid
//! down ahead of it, so that their `fdatasync` has no file size to write
//! (`wal::writer`, `ZERO_AHEAD`). Whatever the zeros, every acknowledged
//! commit must come back (issue 2: recovery), and only those:
//!
//! - while the engine is open, the active segment ends in zeros;
//! - a clean close cuts them, so the files end at their last record (and
//!   the close record it writes after it);
//! - a crash image (the files copied while the engine runs) reopens with
//!   every acknowledged commit, cuts the zeros, and goes on appending
//!   right after the last record;
//! - segments sealed by rotation end at their last record: zeros at the
//!   end of any segment but the last would be damage.

mod common;

use std::path::Path;

use common::{RefusingFs, segments};
use mvledger::{Engine, Options, SyncMode};

fn options(segment_bytes: u64) -> Options {
    Options {
        sync: SyncMode::Always,
        segment_bytes,
        ..Options::default()
    }
}

/// The files of `from` as they are now: what a crash would leave (the
/// page cache survives a process crash).
fn crash_image(from: &Path) -> tempfile::TempDir {
    let to = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.path().join(path.file_name().unwrap())).unwrap();
    }
    to
}

fn commit(engine: &Engine, i: u32) {
    let mut txn = engine.begin();
    txn.put(format!("key{i:05}"), format!("value {i}")).unwrap();
    txn.commit().unwrap();
}

fn assert_has(engine: &Engine, upto: u32) {
    let snap = engine.snapshot();
    for i in 0..upto {
        assert_eq!(
            snap.get(format!("key{i:05}")).unwrap().as_deref(),
            Some(format!("value {i}").as_bytes()),
            "commit {i} of {upto} lost"
        );
    }
    assert_eq!(snap.scan(..).unwrap().count(), upto as usize, "extra keys");
}

/// Where the frames of a segment end (records, and the close record a
/// clean close adds): walked by their length fields from the 32-byte
/// header, up to the first length of zero (the zeros laid ahead).
fn records_end(bytes: &[u8]) -> usize {
    let mut at = 32;
    while at + 9 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        at += 9 + len;
    }
    at.min(bytes.len())
}

#[test]
fn an_open_log_ends_in_zeros_and_a_clean_close_cuts_them() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options(64 << 20)).unwrap();
    for i in 0..20 {
        commit(&engine, i);
    }
    let active = segments(dir.path()).pop().unwrap();
    let bytes = std::fs::read(&active).unwrap();
    let end = records_end(&bytes);
    assert!(
        bytes.len() > end + 4096,
        "no zeros laid ahead: {} bytes, records end at {end}",
        bytes.len()
    );
    drop(engine);
    // Where the zeros began, the close record: 17 bytes of kind 3.
    let bytes = std::fs::read(&active).unwrap();
    assert_eq!(
        bytes.len(),
        end + 17,
        "a clean close left zeros after the records (or no close record)"
    );
    assert_eq!(
        bytes[end + 8],
        3,
        "the log does not end with a close record"
    );
    let engine = Engine::open(dir.path(), options(64 << 20)).unwrap();
    assert_has(&engine, 20);
}

#[test]
fn a_crash_image_with_zeros_after_the_last_record_recovers_and_appends_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options(64 << 20)).unwrap();
    for i in 0..30 {
        commit(&engine, i);
    }
    let image = crash_image(dir.path());
    drop(engine);
    let active = segments(image.path()).pop().unwrap();
    let bytes = std::fs::read(&active).unwrap();
    assert!(bytes.len() > records_end(&bytes), "the image has no zeros");

    let engine = Engine::open(image.path(), options(64 << 20)).unwrap();
    assert_has(&engine, 30);
    // Going on: new records must follow the old ones, not the zeros, or
    // the next open finds zeros between records (damage).
    for i in 30..40 {
        commit(&engine, i);
    }
    let again = crash_image(image.path());
    drop(engine);
    let engine = Engine::open(again.path(), options(64 << 20)).unwrap();
    assert_has(&engine, 40);
    drop(engine);
    let engine = Engine::open(image.path(), options(64 << 20)).unwrap();
    assert_has(&engine, 40);
}

#[test]
fn segments_sealed_by_rotation_end_at_their_last_record() {
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), options(4096)).unwrap();
    for i in 0..300 {
        commit(&engine, i);
    }
    let image = crash_image(dir.path());
    let all = segments(image.path());
    assert!(all.len() > 3, "no rotation: {} segments", all.len());
    for sealed in &all[..all.len() - 1] {
        let bytes = std::fs::read(sealed).unwrap();
        assert_eq!(
            records_end(&bytes),
            bytes.len(),
            "{} ends in zeros",
            sealed.display()
        );
    }
    let reopened = Engine::open(image.path(), options(4096)).unwrap();
    assert_has(&reopened, 300);
    drop(reopened);
    assert_has(&engine, 300);
}

/// 4 KiB segments on a disk too full for the zeros (`RefusingFs`): each
/// `zero_to` fails, leaving the file as it was, or (`zeros_left`) with the
/// zeros in, as a write that failed partway and could not be undone.
fn full_disk(zeros_left: bool) -> Options {
    Options {
        fs: std::sync::Arc::new(RefusingFs {
            zeros: Some(std::io::ErrorKind::StorageFull),
            zeros_left,
            ..RefusingFs::default()
        }),
        ..options(4096)
    }
}

/// Commits `n` (over several segments) on a new engine in `dir`, which
/// it then closes.
fn commit_across_segments(dir: &Path, options: Options, n: u32) {
    let engine = Engine::open(dir, options).unwrap();
    for i in 0..n {
        commit(&engine, i);
    }
    assert_has(&engine, n);
    assert!(segments(dir).len() > 2, "no rotation");
}

#[test]
fn zeros_a_full_disk_may_have_left_are_cut_when_a_segment_is_sealed() {
    // A zero write that fails partway, on a full disk, may leave zeros the
    // log cannot be sure of. A sealed segment must end at its last record
    // (zeros at the end of any segment but the last are damage): each seal,
    // and the close, cuts them.
    let dir = tempfile::tempdir().unwrap();
    commit_across_segments(dir.path(), full_disk(true), 300);
    for path in segments(dir.path()) {
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(
            records_end(&bytes),
            bytes.len(),
            "{} ends in zeros",
            path.display()
        );
    }
    let engine = Engine::open(dir.path(), full_disk(true)).unwrap();
    assert_has(&engine, 300);
}

#[test]
fn a_disk_too_full_for_the_zeros_still_takes_the_records() {
    // The zeros are an optimisation: a full disk that refuses them (a
    // megabyte) may still have room for a small record, and the commit
    // must not fail, nor poison the engine, for want of them.
    let dir = tempfile::tempdir().unwrap();
    commit_across_segments(dir.path(), full_disk(false), 300);
    let engine = Engine::open(dir.path(), full_disk(false)).unwrap();
    assert_has(&engine, 300);
    assert!(
        engine.recovery_cuts().is_empty(),
        "{:?}",
        engine.recovery_cuts()
    );
}
