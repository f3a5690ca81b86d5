//! The recovery reader: reads the segments in order, checks every frame,
//! hands the records after a starting timestamp to the caller, and decides
//! what a bad frame means.
//!
//! - A bad frame at the very end of the last segment, with no valid record
//!   after it, is a torn tail: the record was never acknowledged, so it is
//!   cut off (the file is truncated there). A clean close ends the log with
//!   a close record (`record::KIND_CLOSE`), so in a log closed cleanly no
//!   record is the last and any bad one is damage.
//! - A bad frame anywhere else, a segment header that does not check out, a
//!   timestamp out of sequence, or a gap between segments is corruption:
//!   `Error::Corruption` names the file and offset, unless the caller asked
//!   for repair, which truncates the log there and removes what follows.

use std::path::{Path, PathBuf};

use super::fs::FileSystem;
use super::record::{self, Frame};
use super::segment;
use crate::error::{Error, Result};

/// What the log holds after recovery.
#[derive(Debug)]
pub(crate) struct Replayed {
    /// The timestamp of the last valid record in the log (the starting ts
    /// when the log is empty). May be below the starting ts when the log was
    /// cut short after a checkpoint; the writer then starts a new segment.
    pub last_ts: u64,
    /// The segments left, ascending: (first ts, size in bytes). The last is
    /// the one to append to.
    pub segments: Vec<(u64, u64)>,
    /// Whether the last of `segments` was read through by this replay
    /// (every record checked). Only such a segment may be appended to: a
    /// segment wholly covered by the checkpoint was not read, and may hold
    /// damage that new records must never follow.
    pub tail_read: bool,
    /// Whether the log ends with a close record (`record::KIND_CLOSE`):
    /// the last segment read through, its last frame a clean close.
    pub closed: bool,
    /// What recovery cut off or removed that held more than zeros (a torn
    /// tail, a segment torn at its creation, what a repair dropped): never
    /// an acknowledged commit but under `repair` (see `TailCut`).
    pub cut: Vec<TailCut>,
}

/// Bytes that recovery cut off the end of the log (or removed with their
/// segment), other than the zeros a log keeps ahead of its last record:
/// what a crash left of a record it interrupted, which was never
/// acknowledged under `SyncMode::Always`, or, after `repair`, what the
/// repair dropped. A data directory that was closed cleanly and not
/// touched since never has any: `Engine::recovery_cuts` reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailCut {
    /// The segment file.
    pub file: PathBuf,
    /// Where the cut began (0: the file was removed).
    pub offset: u64,
    /// How many bytes went.
    pub bytes: u64,
    /// Why.
    pub reason: String,
}

impl std::fmt::Display for TailCut {
    /// `N bytes off FILE at offset O: REASON`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} bytes off {} at offset {}: {}",
            self.bytes,
            self.file.display(),
            self.offset,
            self.reason
        )
    }
}

/// A `TailCut` of `bytes[offset..]` in `path`, unless they are all zeros.
fn cut_of(path: &Path, bytes: &[u8], offset: usize, reason: String) -> Option<TailCut> {
    let gone = bytes.get(offset..).unwrap_or(&[]);
    gone.iter().any(|&b| b != 0).then(|| TailCut {
        file: path.to_path_buf(),
        offset: offset as u64,
        bytes: gone.len() as u64,
        reason,
    })
}

/// Lists the segments in `dir`, ascending by first timestamp.
pub(crate) fn list_segments(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<u64>> {
    let mut firsts: Vec<u64> = fs
        .list(dir)?
        .iter()
        .filter_map(|name| segment::parse_name(name))
        .collect();
    firsts.sort_unstable();
    Ok(firsts)
}

/// Replays the log in `dir`: every valid record with a timestamp after
/// `after_ts` goes to `apply`, in order. `apply` returns a reason when a
/// record that passed its checksum cannot be used; that is corruption too.
pub(crate) fn replay(
    fs: &dyn FileSystem,
    dir: &Path,
    after_ts: u64,
    repair: bool,
    mut apply: impl FnMut(&Frame<'_>) -> std::result::Result<(), String>,
) -> Result<Replayed> {
    let firsts = list_segments(fs, dir)?;
    let mut replayed = Replayed {
        last_ts: after_ts,
        segments: Vec::with_capacity(firsts.len()),
        tail_read: false,
        closed: false,
        cut: Vec::new(),
    };
    let Some(&oldest) = firsts.first() else {
        return Ok(replayed);
    };
    // Start at the last segment that begins at or before the first ts needed.
    let needed = after_ts.saturating_add(1);
    let Some(start) = firsts.iter().rposition(|&first| first <= needed) else {
        return Err(Error::corruption(
            segment::path(dir, oldest),
            0,
            format!(
                "the log starts at ts {oldest}, so the state up to ts {} must come \
                 from a checkpoint, but {}: a segment or a checkpoint is missing",
                oldest.saturating_sub(1),
                if after_ts == 0 {
                    "no valid checkpoint is left".to_string()
                } else {
                    format!("the newest valid checkpoint reaches only ts {after_ts}")
                }
            ),
        ));
    };
    if oldest == 0 {
        return Err(Error::corruption(
            segment::path(dir, 0),
            0,
            "a segment named for ts 0, which no engine writes",
        ));
    }
    // Segments wholly covered by the checkpoint are not replayed, but they
    // must still be ours: a foreign file never joins the log (and is never
    // removed as if it were a covered segment).
    for &first in &firsts[..start] {
        let path = segment::path(dir, first);
        let header = fs.read_prefix(&path, segment::HEADER_BYTES)?;
        segment::check_header(&header, first)
            .map_err(|e| Error::corruption(&path, 0, e.reason()))?;
        replayed.segments.push((first, fs.size(&path)?));
        replayed.tail_read = false;
    }
    let mut prev_ts = firsts[start] - 1;
    for (i, &first) in firsts.iter().enumerate().skip(start) {
        let path = segment::path(dir, first);
        let is_last = i + 1 == firsts.len();
        let bytes = fs.read(&path)?;
        // Where this segment's damage starts (0: the whole segment goes),
        // and why; `None` while it checks out.
        let mut damage = None;
        if let Err(e) = segment::check_header(&bytes, first) {
            if is_last && segment::torn_at_creation(&bytes) {
                // Created but its header never made durable: it held
                // nothing (see `torn_at_creation`).
                let why = format!("removed a segment torn at its creation ({})", e.reason());
                replayed.cut.extend(cut_of(&path, &bytes, 0, why));
                fs.remove(&path)?;
                fs.sync_dir(dir)?;
                break;
            }
            damage = Some((0, e.reason().to_string(), false));
        } else if Some(first) != prev_ts.checked_add(1) {
            let why = format!(
                "gap in the log: this segment starts at ts {first}, the one before ended at \
                 ts {prev_ts}"
            );
            damage = Some((0, why, false));
        }
        let mut offset = segment::HEADER_BYTES;
        // Whether the last frame read was a close record.
        let mut closed = false;
        while damage.is_none() && offset < bytes.len() {
            match record::decode_frame(&bytes, offset) {
                Ok(frame) if frame.kind == record::KIND_CLOSE => {
                    let ts = frame.ts();
                    if ts != prev_ts {
                        let why =
                            format!("close record for ts {ts}, but the log's last ts is {prev_ts}");
                        damage = Some((offset, why, false));
                        break;
                    }
                    closed = true;
                    offset = frame.end;
                }
                Ok(frame) => {
                    closed = false;
                    let ts = frame.ts();
                    if Some(ts) != prev_ts.checked_add(1) {
                        let why = format!("record ts {ts} out of sequence after ts {prev_ts}");
                        damage = Some((offset, why, false));
                        break;
                    }
                    if ts > after_ts {
                        apply(&frame)
                            .map_err(|reason| Error::corruption(&path, offset as u64, reason))?;
                    }
                    prev_ts = ts;
                    offset = frame.end;
                }
                Err(e) => {
                    let torn = is_last && !record::valid_record_after(&bytes, offset, prev_ts);
                    damage = Some((offset, e.reason().to_string(), torn));
                }
            }
        }
        let Some((offset, reason, torn)) = damage else {
            replayed.segments.push((first, bytes.len() as u64));
            replayed.tail_read = true;
            replayed.closed = closed;
            continue;
        };
        if !torn && !repair {
            return Err(Error::corruption(path, offset as u64, reason));
        }
        let why = if torn {
            format!("cut a torn tail ({reason})")
        } else {
            format!("repair cut damage and what followed ({reason})")
        };
        if offset == 0 {
            // Nothing of the segment can be trusted: it goes whole.
            replayed.cut.push(TailCut {
                file: path.clone(),
                offset: 0,
                bytes: bytes.len() as u64,
                reason: why,
            });
            fs.remove(&path)?;
        } else {
            replayed.cut.extend(cut_of(&path, &bytes, offset, why));
            fs.truncate(&path, offset as u64)?;
            replayed.segments.push((first, offset as u64));
            replayed.tail_read = true;
            // What was cut may have followed a close record, which is
            // again the log's last frame.
            replayed.closed = closed;
        }
        // Under repair, whatever followed the damage goes too.
        for &later in &firsts[i + 1..] {
            let later = segment::path(dir, later);
            replayed.cut.push(TailCut {
                bytes: fs.size(&later)?,
                file: later.clone(),
                offset: 0,
                reason: "repair removed a segment after the damage".to_string(),
            });
            fs.remove(&later)?;
        }
        fs.sync_dir(dir)?;
        break;
    }
    replayed.last_ts = prev_ts;
    Ok(replayed)
}
