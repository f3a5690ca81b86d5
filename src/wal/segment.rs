//! Segment files: their names and their header.
//!
//! A segment is named by the first timestamp it may hold, zero-padded so
//! that names sort in timestamp order: `00000000000000000001.wal`. It starts
//! with a 32-byte header:
//!
//! ```text
//! magic "MVLGWAL\0" | u32 version | u32 reserved (0) | u64 first_ts | u32 crc32(previous 24 bytes) | u32 0
//! ```
//!
//! then holds records back to back. Records in a segment have consecutive
//! timestamps starting at `first_ts`, and each segment starts where the one
//! before it ended, so a missing segment shows as a gap.

use std::path::{Path, PathBuf};

/// The segment file magic.
pub const MAGIC: [u8; 8] = *b"MVLGWAL\0";
/// The format version this engine writes and reads.
pub const VERSION: u32 = 1;
/// The header size.
pub const HEADER_BYTES: usize = 32;
/// The file name extension of a segment.
pub const EXTENSION: &str = "wal";

/// The file name of the segment whose first timestamp is `first_ts`.
pub fn file_name(first_ts: u64) -> String {
    format!("{first_ts:020}.{EXTENSION}")
}

/// The path of the segment whose first timestamp is `first_ts` in `dir`.
pub fn path(dir: &Path, first_ts: u64) -> PathBuf {
    dir.join(file_name(first_ts))
}

/// The first timestamp a segment file name stands for, if it is one.
pub fn parse_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".wal")?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// The header of a segment starting at `first_ts`.
pub fn encode_header(first_ts: u64) -> [u8; HEADER_BYTES] {
    let mut h = [0u8; HEADER_BYTES];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&first_ts.to_le_bytes());
    let crc = crc32fast::hash(&h[0..24]);
    h[24..28].copy_from_slice(&crc.to_le_bytes());
    h
}

/// What is wrong with a header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// The file is shorter than a header.
    Short,
    /// The file does not start with the segment magic: not a segment.
    Foreign,
    /// A segment of a format version this engine does not read.
    Version(u32),
    /// The header checksum fails.
    Checksum,
    /// The first timestamp in the header is not the one in the name.
    Mismatch(u64),
}

impl HeaderError {
    /// A description for error messages.
    pub fn reason(self) -> String {
        match self {
            HeaderError::Short => "segment shorter than its header".into(),
            HeaderError::Foreign => "not an mvledger log segment (bad magic)".into(),
            HeaderError::Version(v) => format!("unsupported segment format version {v}"),
            HeaderError::Checksum => {
                "segment header checksum mismatch or reserved bytes not zero".into()
            }
            HeaderError::Mismatch(ts) => {
                format!("segment header says first ts {ts}, unlike its name")
            }
        }
    }
}

/// Whether the last segment, whose header does not check, is one a crash
/// left at its creation: no longer than a header. A new segment's header
/// is synced before any record goes in, so such a file holds no record,
/// let alone an acknowledged one, whatever a power cut left in it (zeros,
/// part of the header, stale bytes of a write that never reached the
/// disk): recovery removes it. A longer file with a bad header is damage.
pub fn torn_at_creation(bytes: &[u8]) -> bool {
    bytes.len() <= HEADER_BYTES
}

/// Checks the header of a segment named for `first_ts`.
pub fn check_header(bytes: &[u8], first_ts: u64) -> Result<(), HeaderError> {
    let h = bytes.get(..HEADER_BYTES).ok_or(HeaderError::Short)?;
    if h[0..8] != MAGIC {
        return Err(HeaderError::Foreign);
    }
    if h[12..16] != [0; 4] || h[28..32] != [0; 4] {
        return Err(HeaderError::Checksum);
    }
    let crc = u32::from_le_bytes([h[24], h[25], h[26], h[27]]);
    if crc32fast::hash(&h[0..24]) != crc {
        return Err(HeaderError::Checksum);
    }
    let version = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
    if version != VERSION {
        return Err(HeaderError::Version(version));
    }
    let mut ts = [0u8; 8];
    ts.copy_from_slice(&h[16..24]);
    let ts = u64::from_le_bytes(ts);
    if ts != first_ts {
        return Err(HeaderError::Mismatch(ts));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_sort() {
        assert_eq!(parse_name(&file_name(1)), Some(1));
        assert_eq!(parse_name(&file_name(u64::MAX)), Some(u64::MAX));
        assert!(file_name(9) < file_name(10));
        assert_eq!(parse_name("1.wal"), None);
        assert_eq!(parse_name("0000000000000000000x.wal"), None);
        assert_eq!(parse_name("00000000000000000001.ckpt"), None);
    }

    #[test]
    fn header_round_trips_and_each_damage_is_named() {
        let h = encode_header(77);
        assert_eq!(check_header(&h, 77), Ok(()));
        assert_eq!(check_header(&h[..31], 77), Err(HeaderError::Short));
        assert_eq!(check_header(&h, 78), Err(HeaderError::Mismatch(77)));
        let mut bad = h;
        bad[0] = b'X';
        assert_eq!(check_header(&bad, 77), Err(HeaderError::Foreign));
        let mut bad = h;
        bad[17] ^= 1;
        assert_eq!(check_header(&bad, 77), Err(HeaderError::Checksum));
    }
}
