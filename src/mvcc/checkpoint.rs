//! Checkpoints: every live key at one snapshot ts, in one file.
//!
//! ```text
//! file   = header | block* | footer
//! header = magic "MVLGCKPT" | u32 version | u32 0                         (16 bytes)
//! block  = u32 payload_len | u32 crc32(payload) | payload
//! payload= (u32 key_len | key | u32 value_len | value)*
//! footer = u64 ts | u64 entries | u64 blocks | u32 magic "CKPF" | u32 crc32(previous 28 bytes)
//! ```
//!
//! Written to `<ts>.ckpt.tmp`, synced, renamed to `<ts>.ckpt`, and the
//! directory synced: a checkpoint is on disk whole or not at all. The two
//! newest checkpoints are kept, and the log back to the older of them, so
//! that a damaged newest checkpoint can be replaced by the older one plus
//! the log. `open` loads the newest checkpoint that checks out; when it had
//! to pass over a damaged one, the state must still reach that one's ts, or
//! `open` fails with the damage rather than lose what it held.

use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::engine::Inner;
use super::index::Index;
use crate::error::{Error, Result};
use crate::sync::{AtomicU64, Mutex, Ordering};
use crate::wal::fs::FileSystem;

const MAGIC: [u8; 8] = *b"MVLGCKPT";
const VERSION: u32 = 1;
const HEADER_BYTES: usize = 16;
const FOOTER_MAGIC: u32 = u32::from_le_bytes(*b"CKPF");
const FOOTER_BYTES: usize = 32;
/// A block is written once its payload passes this size.
const BLOCK_BYTES: usize = 64 << 10;
/// The largest block payload a reader accepts: a block holds at most one
/// entry past `BLOCK_BYTES`, and an entry is bounded by the key and value
/// limits.
const MAX_BLOCK_BYTES: usize =
    BLOCK_BYTES + 8 + crate::wal::record::MAX_KEY_BYTES + crate::wal::record::MAX_VALUE_BYTES;
/// The number of checkpoints kept.
const KEEP: usize = 2;

/// The file name of the checkpoint at `ts`.
pub(crate) fn file_name(ts: u64) -> String {
    format!("{ts:020}.ckpt")
}

/// The ts a checkpoint file name stands for, if it is one.
pub(crate) fn parse_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".ckpt")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// Checkpoint bookkeeping of a live engine.
#[derive(Debug)]
pub(crate) struct State {
    lock: Mutex<()>,
    written: AtomicU64,
    newest: AtomicU64,
}

impl State {
    pub(crate) fn new(newest: u64) -> Self {
        State {
            lock: Mutex::new(()),
            written: AtomicU64::new(0),
            newest: AtomicU64::new(newest),
        }
    }
    pub(crate) fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }
    pub(crate) fn newest_ts(&self) -> u64 {
        self.newest.load(Ordering::Relaxed)
    }
}

/// What recovery found among the checkpoints.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The ts of the checkpoint loaded (0: none).
    pub ts: u64,
    /// The first damage found in a newer checkpoint passed over.
    pub damage: Option<Error>,
    /// The highest ts any checkpoint file is named for, damaged or not.
    pub newest_named_ts: u64,
    /// The damaged checkpoints passed over, with what was wrong.
    pub damaged: Vec<(PathBuf, String)>,
}

fn read_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn read_u64(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The checkpoints in `dir`, newest first; removes leftover temp files.
fn list(fs: &dyn FileSystem, dir: &Path) -> Result<Vec<u64>> {
    let mut found = Vec::new();
    for name in fs.list(dir)? {
        if name.ends_with(".ckpt.tmp") {
            fs.remove(&dir.join(&name))?;
        } else if let Some(ts) = parse_name(&name) {
            found.push(ts);
        }
    }
    found.sort_unstable_by(|a, b| b.cmp(a));
    Ok(found)
}

/// Loads the newest checkpoint that checks out into `index`.
pub(crate) fn recover(fs: &dyn FileSystem, dir: &Path, index: &Index) -> Result<Loaded> {
    let found = list(fs, dir)?;
    let mut loaded = Loaded {
        ts: 0,
        damage: None,
        newest_named_ts: found.first().copied().unwrap_or(0),
        damaged: Vec::new(),
    };
    for ts in found {
        let path = dir.join(file_name(ts));
        match load(fs, &path, ts) {
            Ok(entries) => {
                for (key, value) in entries {
                    index.install_replay(&key, ts, Some(&value));
                }
                loaded.ts = ts;
                return Ok(loaded);
            }
            Err(e @ Error::Corruption { .. }) => {
                loaded.damaged.push((path, e.to_string()));
                loaded.damage.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(loaded)
}

/// Reads and checks the whole checkpoint at `path`, named for `ts`.
pub(crate) fn load(fs: &dyn FileSystem, path: &Path, ts: u64) -> Result<Vec<(Box<[u8]>, Bytes)>> {
    let bytes = fs.read(path)?;
    let bad = |offset: usize, reason: &str| Error::corruption(path, offset as u64, reason);
    if bytes.len() < HEADER_BYTES + FOOTER_BYTES {
        return Err(bad(0, "checkpoint shorter than its header and footer"));
    }
    if bytes[0..8] != MAGIC {
        return Err(bad(0, "not an mvledger checkpoint (bad magic)"));
    }
    if read_u32(&bytes, 8) != Some(VERSION) {
        return Err(bad(8, "unsupported checkpoint format version"));
    }
    if read_u32(&bytes, 12) != Some(0) {
        return Err(bad(12, "reserved header bytes not zero"));
    }
    let foot_at = bytes.len() - FOOTER_BYTES;
    let footer = &bytes[foot_at..];
    if read_u32(footer, 24) != Some(FOOTER_MAGIC)
        || read_u32(footer, 28) != Some(crc32fast::hash(&footer[..28]))
    {
        return Err(bad(
            foot_at,
            "checkpoint footer damaged or missing (torn write?)",
        ));
    }
    let (foot_ts, entries, blocks) = (
        read_u64(footer, 0).unwrap_or(0),
        read_u64(footer, 8).unwrap_or(0),
        read_u64(footer, 16).unwrap_or(0),
    );
    if foot_ts != ts {
        return Err(bad(foot_at, "checkpoint footer ts differs from its name"));
    }
    // Each entry takes at least 8 bytes: bound the count before allocating.
    if entries > (foot_at / 8) as u64 {
        return Err(bad(foot_at, "checkpoint entry count larger than the file"));
    }
    let mut out = Vec::with_capacity(entries as usize);
    let mut at = HEADER_BYTES;
    let mut seen_blocks = 0u64;
    while at < foot_at {
        let len = read_u32(&bytes, at).ok_or_else(|| bad(at, "block header truncated"))? as usize;
        let crc = read_u32(&bytes, at + 4).ok_or_else(|| bad(at, "block header truncated"))?;
        if len > MAX_BLOCK_BYTES || at + 8 + len > foot_at {
            return Err(bad(at, "block length out of range"));
        }
        let payload = &bytes[at + 8..at + 8 + len];
        if crc32fast::hash(payload) != crc {
            return Err(bad(at, "block checksum mismatch"));
        }
        decode_block(payload, &mut out).map_err(|reason| bad(at, reason))?;
        seen_blocks += 1;
        at += 8 + len;
    }
    if seen_blocks != blocks || out.len() as u64 != entries {
        return Err(bad(
            foot_at,
            "checkpoint holds other counts than its footer says",
        ));
    }
    Ok(out)
}

fn decode_block(payload: &[u8], out: &mut Vec<(Box<[u8]>, Bytes)>) -> Result<(), &'static str> {
    let mut at = 0;
    while at < payload.len() {
        let key_len = read_u32(payload, at).ok_or("entry truncated")? as usize;
        if key_len > crate::wal::record::MAX_KEY_BYTES {
            return Err("key over the engine's limit");
        }
        let key = payload
            .get(at + 4..at + 4 + key_len)
            .ok_or("key truncated")?;
        at += 4 + key_len;
        let value_len = read_u32(payload, at).ok_or("entry truncated")? as usize;
        if value_len > crate::wal::record::MAX_VALUE_BYTES {
            return Err("value over the engine's limit");
        }
        let value = payload
            .get(at + 4..at + 4 + value_len)
            .ok_or("value truncated")?;
        at += 4 + value_len;
        out.push((key.into(), Bytes::copy_from_slice(value)));
    }
    Ok(())
}

/// Writes a checkpoint of `inner` at its visible ts (`Engine::checkpoint`).
pub(crate) fn write(inner: &Inner) -> Result<()> {
    let _one_at_a_time = inner.checkpoints.lock.lock();
    inner.log.check()?;
    // Registered as a reader, so GC keeps every version the checkpoint reads.
    let ts = inner.readers.register(&inner.visible);
    let result = write_at(inner, ts);
    inner.readers.unregister(ts);
    result
}

fn write_at(inner: &Inner, ts: u64) -> Result<()> {
    if ts == inner.checkpoints.newest_ts() {
        return Ok(());
    }
    let fs = inner.options.fs.as_ref();
    let dir = &inner.dir;
    // Every record up to `ts` goes into sealed segments, so that the log
    // after the checkpoint starts in a segment of its own.
    inner.log.seal()?;
    let tmp = dir.join(format!("{}.tmp", file_name(ts)));
    if let Err(e) = write_file(inner, &tmp, ts) {
        let _ = fs.remove(&tmp);
        return Err(e);
    }
    fs.rename(&tmp, &dir.join(file_name(ts)))?;
    fs.sync_dir(dir)?;
    inner.checkpoints.written.fetch_add(1, Ordering::Relaxed);
    inner.checkpoints.newest.store(ts, Ordering::Relaxed);
    // Keep the newest two, and the log back to the older of them.
    let found = list(fs, dir)?;
    for &old in found.iter().skip(KEEP) {
        fs.remove(&dir.join(file_name(old)))?;
    }
    let keep_from = found.get(KEEP - 1).copied().unwrap_or(ts);
    inner.log.remove_covered(keep_from)?;
    Ok(())
}

fn write_file(inner: &Inner, path: &Path, ts: u64) -> Result<()> {
    let mut file = inner.options.fs.create(path)?;
    let mut header = [0u8; HEADER_BYTES];
    header[0..8].copy_from_slice(&MAGIC);
    header[8..12].copy_from_slice(&VERSION.to_le_bytes());
    file.append(&header)?;
    let (mut entries, mut blocks) = (0u64, 0u64);
    let mut block: Vec<u8> = Vec::with_capacity(BLOCK_BYTES + 1024);
    let mut framed: Vec<u8> = Vec::with_capacity(BLOCK_BYTES + 1024);
    let mut emit = |block: &mut Vec<u8>, file: &mut Box<dyn crate::wal::WritableFile>| {
        framed.clear();
        framed.extend_from_slice(&(block.len() as u32).to_le_bytes());
        framed.extend_from_slice(&crc32fast::hash(block).to_le_bytes());
        framed.extend_from_slice(block);
        block.clear();
        file.append(&framed)
    };
    inner.index.for_each_at(ts, 256, |key, value| {
        block.extend_from_slice(&(key.len() as u32).to_le_bytes());
        block.extend_from_slice(key);
        block.extend_from_slice(&(value.len() as u32).to_le_bytes());
        block.extend_from_slice(value);
        entries += 1;
        if block.len() >= BLOCK_BYTES {
            emit(&mut block, &mut file)?;
            blocks += 1;
        }
        Ok(())
    })?;
    if !block.is_empty() {
        emit(&mut block, &mut file)?;
        blocks += 1;
    }
    let mut footer = [0u8; FOOTER_BYTES];
    footer[0..8].copy_from_slice(&ts.to_le_bytes());
    footer[8..16].copy_from_slice(&entries.to_le_bytes());
    footer[16..24].copy_from_slice(&blocks.to_le_bytes());
    footer[24..28].copy_from_slice(&FOOTER_MAGIC.to_le_bytes());
    let crc = crc32fast::hash(&footer[..28]);
    footer[28..32].copy_from_slice(&crc.to_le_bytes());
    file.append(&footer)?;
    file.sync_data()?;
    Ok(())
}

/// What a checkpoint file holds, as `verify` found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckpointInfo {
    /// The snapshot ts it holds the state at.
    pub ts: u64,
    /// The live keys in it.
    pub entries: u64,
}

/// Reads and checks a whole checkpoint file (header, every block's
/// checksum, footer, counts): `Error::Corruption` names the offset of the
/// first damage. For tools like `mvledger inspect`; `Engine::open` does
/// the same when it loads one.
pub fn verify(path: &Path) -> Result<CheckpointInfo> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::invalid(format!("{} is not a file name", path.display())))?;
    let ts = parse_name(name).ok_or_else(|| {
        Error::invalid(format!(
            "{name} is not named like a checkpoint (<20 digits>.ckpt)"
        ))
    })?;
    let entries = load(&crate::wal::StdFs, path, ts)?.len() as u64;
    Ok(CheckpointInfo { ts, entries })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &[u8], value: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key);
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
        out
    }

    /// A block whose checksum holds but whose entry is longer than the
    /// engine allows is damage, not a key to load (the index keeps keys of
    /// at most 65,535 bytes).
    #[test]
    fn a_block_with_a_key_or_value_over_the_limits_does_not_decode() {
        let mut out = Vec::new();
        assert_eq!(decode_block(&entry(b"k", b"v"), &mut out), Ok(()));
        assert_eq!(out.len(), 1);
        let long_key = vec![1u8; crate::wal::record::MAX_KEY_BYTES + 1];
        assert!(decode_block(&entry(&long_key, b"v"), &mut out).is_err());
        let longest = vec![1u8; crate::wal::record::MAX_KEY_BYTES];
        assert_eq!(decode_block(&entry(&longest, b"v"), &mut out), Ok(()));
        let mut huge_value = entry(b"k", b"");
        let at = huge_value.len() - 4;
        let over = (crate::wal::record::MAX_VALUE_BYTES + 1) as u32;
        huge_value[at..].copy_from_slice(&over.to_le_bytes());
        assert!(decode_block(&huge_value, &mut out).is_err());
    }
}
