//! `mvledger inspect DIR`: what a data directory holds (log segments,
//! checkpoints, the LOCK file) and a full check of it, without opening an
//! engine: the files are read with `std::fs` only, the LOCK is not taken
//! and nothing is written, so it is safe on a directory in use (it then
//! sees some moment of it) and on one that `open` refuses.
//!
//! The check follows the recovery reader (`src/wal/reader.rs`): every
//! segment header, every frame's length and checksum, timestamps
//! consecutive within and across segments (a gap before a segment that the
//! newest valid checkpoint covers is a warning: the log may have been cut
//! there, but no older checkpoint can stand in for the newest), and
//! every checkpoint block and footer (`mvledger::verify_checkpoint`).
//!
//! Findings: a damage (file, offset, reason) fails the check (exit 1); a
//! segment or checkpoint file that cannot be read is one, at offset 0. A
//! bad frame at the very end of the last segment with no valid record after
//! it is a torn tail: a warning, since the next open cuts it off; so are a
//! last segment whose header was never written whole and a leftover
//! `.ckpt.tmp` file, which the next open removes.

use std::path::{Path, PathBuf};

use mvledger::wal::record::{
    KIND_CLOSE, KIND_COMMIT, KIND_LOGICAL, decode_frame, valid_record_after,
};
use mvledger::wal::segment::{HEADER_BYTES, check_header, parse_name, torn_at_creation};
use mvledger::wal::{FileSystem, StdFs};
use mvledger::{Error, verify_checkpoint};
use serde_json::{Value, json};

use super::bench::Failure;
use super::report::count;

/// One log segment as found.
#[derive(Debug, Default)]
struct Segment {
    file: String,
    first_ts: u64,
    size_bytes: u64,
    records: u64,
    first_record_ts: Option<u64>,
    last_record_ts: Option<u64>,
    commit: u64,
    logical: u64,
    /// Close records (`KIND_CLOSE`, one per clean close), not in `records`.
    closes: u64,
    /// Whether the segment's last frame is a close record.
    ends_closed: bool,
    /// Whether damage stopped the walk before the segment's end.
    cut_short: bool,
}

/// One checkpoint as found; `entries` is None when it is damaged.
#[derive(Debug)]
struct Checkpoint {
    file: String,
    ts: u64,
    size_bytes: u64,
    entries: Option<u64>,
}

/// A problem at a place in a file.
#[derive(Debug)]
struct Finding {
    file: PathBuf,
    offset: u64,
    reason: String,
}

impl Finding {
    fn new(file: &Path, offset: usize, reason: impl Into<String>) -> Finding {
        Finding {
            file: file.to_path_buf(),
            offset: offset as u64,
            reason: reason.into(),
        }
    }

    fn json(&self) -> Value {
        json!({ "file": self.file.display().to_string(), "offset": self.offset, "reason": self.reason })
    }
}

/// Everything `inspect` found.
#[derive(Debug, Default)]
struct Inspection {
    segments: Vec<Segment>,
    checkpoints: Vec<Checkpoint>,
    lock_bytes: Option<u64>,
    other_files: Vec<String>,
    damages: Vec<Finding>,
    warnings: Vec<Finding>,
}

/// Runs `inspect`; `Ok(false)` when damage was found (exit code 1). With
/// `as_json`, a directory it cannot inspect still gives one object on
/// stdout (`ok` false, the message in `error`), besides the message on
/// stderr and the exit code.
pub fn run(dir: &Path, as_json: bool) -> Result<bool, Failure> {
    let found = match inspect(dir) {
        Ok(found) => found,
        Err(failure) => {
            if as_json {
                let object = json!({
                    "dir": dir.display().to_string(),
                    "ok": false,
                    "error": failure.message,
                });
                say!("{object}");
            }
            return Err(failure);
        }
    };
    if as_json {
        say!("{}", to_json(dir, &found));
    } else {
        print_text(dir, &found);
    }
    Ok(found.damages.is_empty())
}

fn read_error(path: &Path) -> impl FnOnce(std::io::Error) -> Failure + '_ {
    move |e| Failure::new(format!("cannot read {}: {e}", path.display()))
}

fn inspect(dir: &Path) -> Result<Inspection, Failure> {
    let mut found = Inspection::default();
    let mut segment_firsts = Vec::new();
    let mut checkpoint_tss = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| match e.kind() {
        // DIR names no directory: a bad argument, as in the other commands.
        std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory => {
            Failure::bad_argument(format!("{}: {e}", dir.display()))
        }
        _ => read_error(dir)(e),
    })?;
    for entry in entries {
        let entry = entry.map_err(read_error(dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(first) = parse_name(&name) {
            segment_firsts.push(first);
        } else if let Some(ts) = checkpoint_ts(&name) {
            checkpoint_tss.push(ts);
        } else if name == "LOCK" {
            found.lock_bytes = Some(entry.metadata().map_err(read_error(dir))?.len());
        } else {
            if name.ends_with(".ckpt.tmp") {
                found.warnings.push(Finding::new(
                    &entry.path(),
                    0,
                    "unfinished checkpoint; will be removed on next open",
                ));
            }
            if name.ends_with(".ckpt.damaged") {
                // Damage on disk, though recovery worked around it.
                found.damages.push(Finding::new(
                    &entry.path(),
                    0,
                    "a damaged checkpoint that recovery set aside (the state was \
                     rebuilt from an older checkpoint and the log); look at it, \
                     then remove it",
                ));
            }
            found.other_files.push(name);
        }
    }
    if segment_firsts.is_empty() && checkpoint_tss.is_empty() {
        return Err(Failure::bad_argument(format!(
            "{} is not an mvledger data directory: no log segment or checkpoint in it",
            dir.display()
        )));
    }
    segment_firsts.sort_unstable();
    checkpoint_tss.sort_unstable();
    found.other_files.sort();
    let covered_ts = check_checkpoints(dir, &checkpoint_tss, &mut found);
    check_segments(dir, &segment_firsts, covered_ts, &mut found);
    Ok(found)
}

/// Whether `dir` holds a log segment or a checkpoint: an mvledger data
/// directory (a new one holds its first segment from the start).
pub fn is_data_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries.flatten().any(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            parse_name(&name).is_some() || checkpoint_ts(&name).is_some()
        })
    })
}

/// The ts a checkpoint file name stands for (`<20 digits>.ckpt`).
fn checkpoint_ts(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".ckpt")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Why a file listed a moment before is gone: the engine of a directory
/// in use removes what its newest checkpoint covers.
const REMOVED: &str = "removed while inspecting (a checkpoint of the engine using the \
                       directory let it go)";

/// Whether nothing is at `path` any more (not even a link to nothing).
fn vanished(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}

/// Verifies every checkpoint; returns the ts of the newest valid one (0 if
/// none; `u64::MAX` if one was removed meanwhile), up to which the log may
/// have been cut.
fn check_checkpoints(dir: &Path, tss: &[u64], found: &mut Inspection) -> u64 {
    let mut covered_ts = 0;
    for &ts in tss {
        let file = format!("{ts:020}.ckpt");
        let path = dir.join(&file);
        let size_bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        let entries = match verify_checkpoint(&path) {
            Ok(info) => {
                covered_ts = covered_ts.max(info.ts);
                Some(info.entries)
            }
            Err(_) if vanished(&path) => {
                // A newer checkpoint, listed too late, let it go: it may
                // cover any part of the log.
                found.warnings.push(Finding::new(&path, 0, REMOVED));
                covered_ts = u64::MAX;
                continue;
            }
            Err(Error::Corruption {
                file,
                offset,
                reason,
            }) => {
                found.damages.push(Finding {
                    file,
                    offset,
                    reason,
                });
                None
            }
            Err(e) => {
                found.damages.push(Finding::new(&path, 0, e.to_string()));
                None
            }
        };
        found.checkpoints.push(Checkpoint {
            file,
            ts,
            size_bytes,
            entries,
        });
    }
    covered_ts
}

/// Walks every segment, in timestamp order. One that cannot be read (a
/// directory or a dangling symlink under a segment's name, a permission)
/// is damage at offset 0, and the walk goes on, as for a checkpoint.
fn check_segments(dir: &Path, firsts: &[u64], covered_ts: u64, found: &mut Inspection) {
    if let Some(&oldest) = firsts.first()
        && oldest > covered_ts.saturating_add(1)
    {
        found.damages.push(Finding::new(
            &dir.join(format!("{oldest:020}.wal")),
            0,
            format!(
                "the log starts at ts {oldest}, but no valid checkpoint holds the state \
                 up to ts {}: a segment or a checkpoint is missing",
                oldest - 1
            ),
        ));
    }
    // The ts of the last record of the segment before, when known.
    let mut prev_ts: Option<u64> = None;
    for (i, &first) in firsts.iter().enumerate() {
        let path = dir.join(format!("{first:020}.wal"));
        let mut segment = Segment {
            file: format!("{first:020}.wal"),
            first_ts: first,
            ..Segment::default()
        };
        let bytes = match StdFs.read(&path) {
            Ok(bytes) => bytes,
            Err(_) if vanished(&path) => {
                found.warnings.push(Finding::new(&path, 0, REMOVED));
                prev_ts = None;
                continue;
            }
            Err(e) => {
                found
                    .damages
                    .push(Finding::new(&path, 0, format!("I/O error: {e}")));
                found.segments.push(segment);
                prev_ts = None;
                continue;
            }
        };
        segment.size_bytes = bytes.len() as u64;
        let is_last = i + 1 == firsts.len();
        if let Err(e) = check_header(&bytes, first) {
            if is_last && torn_at_creation(&bytes) {
                found.warnings.push(Finding::new(
                    &path,
                    0,
                    "segment header never written whole (a crash or a failed write at its creation); \
                     will be removed on next open",
                ));
            } else {
                found.damages.push(Finding::new(&path, 0, e.reason()));
            }
            found.segments.push(segment);
            prev_ts = None;
            continue;
        }
        if let Some(prev) = prev_ts
            && first != prev.saturating_add(1)
        {
            let gap = format!(
                "gap in the log: this segment starts at ts {first}, the one before ended at ts {prev}"
            );
            if first > covered_ts.saturating_add(1) {
                found.damages.push(Finding::new(&path, 0, gap));
            } else {
                // The newest checkpoint covers it (a log cut short after a
                // checkpoint leaves such a gap), but an older checkpoint
                // and the log no longer reach its state: no fallback.
                found.warnings.push(Finding::new(
                    &path,
                    0,
                    format!(
                        "{gap}; the newest checkpoint covers it, but should that checkpoint \
                         be damaged, no older one and the log could stand in for it"
                    ),
                ));
            }
        }
        prev_ts = walk_frames(&path, &bytes, is_last, &mut segment, found);
        found.segments.push(segment);
    }
}

/// Checks every frame of one segment; returns the ts of its last record
/// when the walk reached the end (None when damage stopped it).
fn walk_frames(
    path: &Path,
    bytes: &[u8],
    is_last: bool,
    segment: &mut Segment,
    found: &mut Inspection,
) -> Option<u64> {
    let mut prev = segment.first_ts.saturating_sub(1);
    let mut offset = HEADER_BYTES;
    while offset < bytes.len() {
        match decode_frame(bytes, offset) {
            Ok(frame) if frame.kind == KIND_CLOSE => {
                let ts = frame.ts();
                if ts != prev {
                    found.damages.push(Finding::new(
                        path,
                        offset,
                        format!("close record for ts {ts}, but the log's last ts is {prev}"),
                    ));
                }
                segment.closes += 1;
                segment.ends_closed = true;
                offset = frame.end;
            }
            Ok(frame) => {
                segment.ends_closed = false;
                let ts = frame.ts();
                if ts != prev.saturating_add(1) {
                    found.damages.push(Finding::new(
                        path,
                        offset,
                        format!("record ts {ts} out of sequence after ts {prev}"),
                    ));
                }
                segment.records += 1;
                segment.first_record_ts.get_or_insert(ts);
                segment.last_record_ts = Some(ts);
                match frame.kind {
                    KIND_COMMIT => segment.commit += 1,
                    KIND_LOGICAL => segment.logical += 1,
                    _ => {}
                }
                prev = ts;
                offset = frame.end;
            }
            Err(e) => {
                segment.ends_closed = false;
                let rest = bytes.len() - offset;
                if is_last && bytes[offset..].iter().all(|&b| b == 0) {
                    found.warnings.push(Finding::new(
                        path,
                        offset,
                        format!(
                            "{rest} zero bytes after the last record (laid down ahead of \
                             the log by an engine still open, or one that crashed); \
                             will be cut on next open"
                        ),
                    ));
                    return Some(prev);
                }
                if is_last && !valid_record_after(bytes, offset, prev) {
                    found.warnings.push(Finding::new(
                        path,
                        offset,
                        format!(
                            "torn tail ({rest} bytes: {}); will be cut on next open",
                            e.reason()
                        ),
                    ));
                    return Some(prev);
                }
                found.damages.push(Finding::new(
                    path,
                    offset,
                    format!(
                        "{} (the {rest} bytes from here were not checked)",
                        e.reason()
                    ),
                ));
                segment.cut_short = true;
                return None;
            }
        }
    }
    Some(prev)
}

/// Whether the log (whose last segment is `last`) ends with a close
/// record; `None` when damage stopped the walk short of its end.
fn closed_cleanly(last: &Segment) -> Option<bool> {
    (!last.cut_short).then_some(last.ends_closed)
}

fn ts_range(segment: &Segment) -> String {
    match (segment.first_record_ts, segment.last_record_ts) {
        (Some(a), Some(b)) => format!("{a}..={b}"),
        _ => "-".into(),
    }
}

fn print_text(dir: &Path, found: &Inspection) {
    say!("data directory {}", dir.display());
    say!("log segments: {}", found.segments.len());
    if !found.segments.is_empty() {
        say!(
            "  {:<26} {:>12} {:>12} {:>9} {:>25} {:>9} {:>9}",
            "file",
            "first ts",
            "bytes",
            "records",
            "record ts",
            "commit",
            "logical"
        );
    }
    for s in &found.segments {
        say!(
            "  {:<26} {:>12} {:>12} {:>9} {:>25} {:>9} {:>9}",
            s.file,
            s.first_ts,
            s.size_bytes,
            s.records,
            ts_range(s),
            s.commit,
            s.logical
        );
    }
    if let Some(last) = found.segments.last() {
        say!(
            "closed cleanly: {}",
            match closed_cleanly(last) {
                Some(true) => "yes (the log ends with a close record: any bad record is damage)",
                Some(false) => "no (open now, or it crashed: a bad last record may be a tear)",
                None => "not known (damage stopped the check before the log's end)",
            }
        );
    }
    say!("checkpoints: {}", found.checkpoints.len());
    for c in &found.checkpoints {
        let entries = c.entries.map_or("damaged".to_string(), |n| n.to_string());
        say!(
            "  {:<26} ts {:>12}  bytes {:>12}  entries {entries}",
            c.file,
            c.ts,
            c.size_bytes
        );
    }
    match found.lock_bytes {
        Some(n) => say!("LOCK: present ({n} bytes; not taken by inspect)"),
        None => say!("LOCK: absent"),
    }
    if !found.other_files.is_empty() {
        say!("other files: {}", found.other_files.join(", "));
    }
    say!("check:");
    for w in &found.warnings {
        say!(
            "  warning: {} at offset {}: {}",
            w.file.display(),
            w.offset,
            w.reason
        );
    }
    for d in &found.damages {
        say!(
            "  DAMAGE: {} at offset {}: {}",
            d.file.display(),
            d.offset,
            d.reason
        );
    }
    let records: u64 = found.segments.iter().map(|s| s.records).sum();
    if found.damages.is_empty() {
        say!(
            "  ok: {} ({}) and {} check out",
            count(found.segments.len() as u64, "segment"),
            count(records, "record"),
            count(found.checkpoints.len() as u64, "checkpoint")
        );
    } else {
        say!(
            "  failed: {}",
            count(found.damages.len() as u64, "damaged place")
        );
    }
}

fn to_json(dir: &Path, found: &Inspection) -> Value {
    let segments: Vec<Value> = found
        .segments
        .iter()
        .map(|s| {
            json!({
                "file": s.file,
                "first_ts": s.first_ts,
                "size_bytes": s.size_bytes,
                "records": s.records,
                "first_record_ts": s.first_record_ts,
                "last_record_ts": s.last_record_ts,
                "commit_records": s.commit,
                "logical_records": s.logical,
                "close_records": s.closes,
            })
        })
        .collect();
    let checkpoints: Vec<Value> = found
        .checkpoints
        .iter()
        .map(|c| json!({ "file": c.file, "ts": c.ts, "size_bytes": c.size_bytes, "entries": c.entries }))
        .collect();
    json!({
        "dir": dir.display().to_string(),
        "ok": found.damages.is_empty(),
        "segments": segments,
        "closed_cleanly": found.segments.last().and_then(closed_cleanly),
        "checkpoints": checkpoints,
        "lock": { "present": found.lock_bytes.is_some(), "size_bytes": found.lock_bytes },
        "other_files": found.other_files,
        "warnings": found.warnings.iter().map(Finding::json).collect::<Vec<_>>(),
        "damages": found.damages.iter().map(Finding::json).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use mvledger::wal::record::{FRAME_HEADER_BYTES, encode_logical};
    use mvledger::wal::segment::encode_header;

    use super::*;

    /// Writes a segment named for `first` holding logical records `tss`.
    fn segment(dir: &Path, first: u64, tss: &[u64]) {
        let mut bytes = encode_header(first).to_vec();
        for &ts in tss {
            encode_logical(&mut bytes, ts, b"body");
        }
        std::fs::write(dir.join(format!("{first:020}.wal")), bytes).expect("write");
    }

    #[test]
    fn consecutive_segments_check_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        segment(dir.path(), 1, &[1, 2]);
        segment(dir.path(), 3, &[3]);
        let found = inspect(dir.path()).expect("inspect");
        assert!(found.damages.is_empty(), "{:?}", found.damages);
        assert_eq!(found.segments.len(), 2);
        assert_eq!(found.segments[1].last_record_ts, Some(3));
    }

    #[test]
    fn a_gap_between_segments_is_damage() {
        let dir = tempfile::tempdir().expect("tempdir");
        segment(dir.path(), 1, &[1, 2]);
        segment(dir.path(), 5, &[5]);
        let found = inspect(dir.path()).expect("inspect");
        assert_eq!(found.damages.len(), 1, "{:?}", found.damages);
        assert!(found.damages[0].reason.contains("gap"));
        assert!(found.damages[0].file.ends_with("00000000000000000005.wal"));
    }

    #[test]
    fn a_record_out_of_sequence_is_damage_at_its_offset() {
        let dir = tempfile::tempdir().expect("tempdir");
        segment(dir.path(), 1, &[1, 3]);
        let found = inspect(dir.path()).expect("inspect");
        assert_eq!(found.damages.len(), 1, "{:?}", found.damages);
        let first_record_bytes = FRAME_HEADER_BYTES + 8 + 4;
        assert_eq!(
            found.damages[0].offset,
            (HEADER_BYTES + first_record_bytes) as u64
        );
    }

    #[test]
    fn a_log_starting_after_ts_1_needs_a_checkpoint() {
        let dir = tempfile::tempdir().expect("tempdir");
        segment(dir.path(), 4, &[4]);
        let found = inspect(dir.path()).expect("inspect");
        assert_eq!(found.damages.len(), 1, "{:?}", found.damages);
        assert!(found.damages[0].reason.contains("missing"));
    }

    #[test]
    fn a_damaged_segment_before_the_last_is_never_a_torn_tail() {
        let dir = tempfile::tempdir().expect("tempdir");
        segment(dir.path(), 1, &[1, 2]);
        segment(dir.path(), 3, &[3]);
        let path = dir.path().join(format!("{:020}.wal", 1));
        let bytes = std::fs::read(&path).expect("read");
        std::fs::write(&path, &bytes[..bytes.len() - 3]).expect("write");
        let found = inspect(dir.path()).expect("inspect");
        assert_eq!(found.damages.len(), 1, "{:?}", found.damages);
        assert!(found.warnings.is_empty());
    }

    #[test]
    fn a_directory_named_like_a_segment_is_damage_and_the_rest_is_still_checked() {
        let dir = tempfile::tempdir().expect("tempdir");
        segment(dir.path(), 1, &[1, 2]);
        std::fs::create_dir(dir.path().join(format!("{:020}.wal", 3))).expect("mkdir");
        let found = inspect(dir.path()).expect("inspect");
        assert_eq!(found.segments.len(), 2);
        assert_eq!(found.segments[0].records, 2);
        assert_eq!(found.damages.len(), 1, "{:?}", found.damages);
        assert_eq!(found.damages[0].offset, 0);
        assert!(found.damages[0].file.ends_with("00000000000000000003.wal"));
        assert!(found.damages[0].reason.starts_with("I/O error"));
    }

    /// README: zeros after the last record of the last segment (what an
    /// engine under `SyncMode::Always` leaves while open, or after a
    /// crash) are a warning, not damage; anywhere else they are damage.
    #[test]
    fn zeros_after_the_last_record_are_a_warning_only_in_the_last_segment() {
        let dir = tempfile::tempdir().expect("tempdir");
        segment(dir.path(), 1, &[1, 2]);
        let path = dir.path().join(format!("{:020}.wal", 1));
        let mut bytes = std::fs::read(&path).expect("read");
        let end = bytes.len();
        bytes.resize(end + 4096, 0);
        std::fs::write(&path, &bytes).expect("write");
        let found = inspect(dir.path()).expect("inspect");
        assert!(found.damages.is_empty(), "{:?}", found.damages);
        assert_eq!(found.warnings.len(), 1, "{:?}", found.warnings);
        assert_eq!(found.warnings[0].offset, end as u64);
        assert!(found.warnings[0].reason.contains("4096 zero bytes"));
        assert_eq!(found.segments[0].last_record_ts, Some(2));

        segment(dir.path(), 3, &[3]);
        let found = inspect(dir.path()).expect("inspect");
        assert_eq!(found.damages.len(), 1, "{:?}", found.damages);
        assert!(found.warnings.is_empty(), "{:?}", found.warnings);
    }
}
