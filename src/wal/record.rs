//! The redo-log record: its framing and the commit payload.
//!
//! ```text
//! record  = u32 payload_len | u32 crc32(kind | payload) | u8 kind | payload
//! payload = u64 ts | kind-specific bytes      (every kind starts with its ts)
//! close   = u64 last_ts                        (kind 3: the log was closed cleanly)
//! commit  = u64 commit_ts | u32 count | count × write
//! write   = u8 op (1 put, 2 delete) | u32 key_len | key | [u32 value_len | value]
//! ```
//!
//! All integers are little-endian. Every length is checked against the
//! bytes that remain and against a fixed limit before anything is sliced or
//! allocated, so a damaged length field can neither read out of bounds nor
//! make the reader allocate gigabytes.

/// Bytes before the payload: length, checksum, kind.
pub const FRAME_HEADER_BYTES: usize = 9;
/// The largest payload a record may carry.
pub const MAX_PAYLOAD_BYTES: usize = 64 << 20;
/// The largest key.
pub const MAX_KEY_BYTES: usize = 65_535;
/// The largest value.
pub const MAX_VALUE_BYTES: usize = 16 << 20;

/// A committed transaction's writes.
pub const KIND_COMMIT: u8 = 1;
/// A logical record: an opaque payload that the layer above re-executes
/// deterministically on recovery.
pub const KIND_LOGICAL: u8 = 2;

/// A clean close: written (and synced) as an engine closes cleanly, after
/// everything else it wrote. It takes no timestamp of its own: its ts is
/// the log's last record's (the ts before the segment's first when the
/// segment holds none). A crash never leaves one after a record it tore,
/// so a bad record followed by a close record is damage, never a torn
/// tail: one flipped bit in the last commit of a closed log is
/// `Corruption`, not a commit silently cut. Records may follow it (the
/// engine was opened again and wrote on).
pub const KIND_CLOSE: u8 = 3;

const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;

/// Why a frame could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// Fewer bytes remain than the frame needs: a torn tail when at the end.
    Short,
    /// The length field is over `MAX_PAYLOAD_BYTES` or under the ts.
    BadLength,
    /// The checksum does not match.
    BadChecksum,
    /// The kind byte names no known record kind.
    BadKind,
}

impl FrameError {
    /// A short description for error messages.
    pub fn reason(self) -> &'static str {
        match self {
            FrameError::Short => "record extends past the end of the file",
            FrameError::BadLength => "record length out of range",
            FrameError::BadChecksum => "record checksum mismatch",
            FrameError::BadKind => "unknown record kind",
        }
    }
}

/// A decoded frame: its kind, its payload and where the next frame starts.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// The record kind.
    pub kind: u8,
    /// The payload, starting with the record's ts.
    pub payload: &'a [u8],
    /// The offset just past this frame.
    pub end: usize,
}

impl Frame<'_> {
    /// The timestamp every payload starts with.
    pub fn ts(&self) -> u64 {
        read_u64(self.payload, 0).unwrap_or(0)
    }
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

fn read_u64(buf: &[u8], at: usize) -> Option<u64> {
    let bytes = buf.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

fn checksum(kind: u8, payload: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&[kind]);
    hasher.update(payload);
    hasher.finalize()
}

/// Decodes the frame that starts at `offset` in `buf`.
pub fn decode_frame(buf: &[u8], offset: usize) -> Result<Frame<'_>, FrameError> {
    let header = buf
        .get(offset..offset.saturating_add(FRAME_HEADER_BYTES))
        .ok_or(FrameError::Short)?;
    let len = read_u32(header, 0).ok_or(FrameError::Short)? as usize;
    let crc = read_u32(header, 4).ok_or(FrameError::Short)?;
    let kind = header[8];
    if !(8..=MAX_PAYLOAD_BYTES).contains(&len) {
        return Err(FrameError::BadLength);
    }
    let start = offset + FRAME_HEADER_BYTES;
    let payload = buf.get(start..start + len).ok_or(FrameError::Short)?;
    if checksum(kind, payload) != crc {
        return Err(FrameError::BadChecksum);
    }
    if !known_kind(kind) {
        return Err(FrameError::BadKind);
    }
    if kind == KIND_CLOSE && len != 8 {
        // A close record is its ts and nothing else.
        return Err(FrameError::BadLength);
    }
    Ok(Frame {
        kind,
        payload,
        end: start + len,
    })
}

fn known_kind(kind: u8) -> bool {
    matches!(kind, KIND_COMMIT | KIND_LOGICAL | KIND_CLOSE)
}

/// Appends a close record (`KIND_CLOSE`) for a log whose last ts is
/// `last_ts` to `buf`.
pub fn encode_close(buf: &mut Vec<u8>, last_ts: u64) {
    encode_frame(buf, KIND_CLOSE, |b| {
        b.extend_from_slice(&last_ts.to_le_bytes())
    });
}

/// The bytes a close record takes.
pub const CLOSE_FRAME_BYTES: usize = FRAME_HEADER_BYTES + 8;

/// The fewest bytes a frame takes: its header and a ts.
const MIN_FRAME_BYTES: usize = FRAME_HEADER_BYTES + 8;

/// Whether a valid record for a timestamp after `prev_ts` starts anywhere
/// in `bytes` after `from`, where the record after `prev_ts` failed to
/// decode: tells a torn tail (nothing valid follows) from damage in the
/// middle (valid records, or the close record of a clean close, follow).
/// Recovery and `mvledger inspect` both ask it of a segment's last bad
/// record.
///
/// It looks inside the damaged record's own extent too. So a torn last
/// record whose value happens to hold a whole log record (a value made of
/// log bytes) reads as damage in the middle: `open` fails with
/// `Corruption` and `repair` cuts it. The other way, skipping the extent
/// the damaged record's length field claims, would trust that field, which
/// its checksum does not cover: one flipped bit in it could pass every
/// later record over as a torn tail and cut acknowledged commits without a
/// word. Refusing to open is the failure that loses nothing.
///
/// The time it takes is linear in the bytes after `from`. The log's
/// timestamps go up by one a record, so a record `n` bytes past `from`
/// has a ts of at most `prev_ts + 1 + n / MIN_FRAME_BYTES`: an offset
/// whose ts is out of that range is passed over before its checksum is
/// computed (in a run of equal bytes, every offset would otherwise claim a
/// payload of megabytes). Past that, at most `4 * bytes.len()` plus one
/// record's bytes are checksummed in all; a search that would need more
/// (bytes crafted to look like records at many offsets) answers that a
/// valid record may follow, the answer that loses nothing.
pub fn valid_record_after(bytes: &[u8], from: usize, prev_ts: u64) -> bool {
    search_after(bytes, from, prev_ts).0
}

/// `valid_record_after`, and the payload bytes it checksummed.
fn search_after(bytes: &[u8], from: usize, prev_ts: u64) -> (bool, usize) {
    let full = bytes
        .len()
        .saturating_mul(4)
        .saturating_add(MAX_PAYLOAD_BYTES);
    let mut budget = full;
    let mut at = from + 1;
    while at + MIN_FRAME_BYTES <= bytes.len() {
        let kind = bytes[at + 8];
        let ts = read_u64(bytes, at + FRAME_HEADER_BYTES).unwrap_or(0);
        let most = prev_ts
            .saturating_add(1)
            .saturating_add(((at - from) / MIN_FRAME_BYTES) as u64);
        let len = read_u32(bytes, at).unwrap_or(0) as usize;
        let fits =
            (8..=MAX_PAYLOAD_BYTES).contains(&len) && at + FRAME_HEADER_BYTES + len <= bytes.len();
        // A close record after the damage carries the damaged record's
        // ts (or a later one): above `prev_ts` too.
        if known_kind(kind) && ts > prev_ts && ts <= most && fits {
            if len > budget {
                return (true, full - budget);
            }
            budget -= len;
            if decode_frame(bytes, at).is_ok() {
                return (true, full - budget);
            }
        }
        at += 1;
    }
    (false, full - budget)
}

/// Appends one frame to `buf`: `fill` writes the payload (starting with its
/// ts) at the end of `buf`; the header is filled in afterwards.
pub fn encode_frame(buf: &mut Vec<u8>, kind: u8, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = buf.len();
    buf.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
    fill(buf);
    let payload_len = buf.len() - start - FRAME_HEADER_BYTES;
    debug_assert!((8..=MAX_PAYLOAD_BYTES).contains(&payload_len));
    let crc = checksum(kind, &buf[start + FRAME_HEADER_BYTES..]);
    buf[start..start + 4].copy_from_slice(&(payload_len as u32).to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    buf[start + 8] = kind;
}

/// The payload bytes a commit of these writes takes, for the size check
/// that must happen before anything is installed.
pub fn commit_payload_bytes<'a>(
    writes: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
) -> usize {
    writes.fold(12, |acc, (key, value)| {
        acc + 5 + key.len() + value.map_or(0, |v| 4 + v.len())
    })
}

/// Appends a commit record of `writes` at `ts`.
pub fn encode_commit<'a>(
    buf: &mut Vec<u8>,
    ts: u64,
    count: usize,
    writes: impl Iterator<Item = (&'a [u8], Option<&'a [u8]>)>,
) {
    encode_frame(buf, KIND_COMMIT, |buf| {
        buf.extend_from_slice(&ts.to_le_bytes());
        buf.extend_from_slice(&(count as u32).to_le_bytes());
        for (key, value) in writes {
            match value {
                Some(value) => {
                    buf.push(OP_PUT);
                    buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
                    buf.extend_from_slice(key);
                    buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
                    buf.extend_from_slice(value);
                }
                None => {
                    buf.push(OP_DELETE);
                    buf.extend_from_slice(&(key.len() as u32).to_le_bytes());
                    buf.extend_from_slice(key);
                }
            }
        }
    });
}

/// Appends a logical record: `ts` and then `body`, opaque to the log.
pub fn encode_logical(buf: &mut Vec<u8>, ts: u64, body: &[u8]) {
    encode_frame(buf, KIND_LOGICAL, |buf| {
        buf.extend_from_slice(&ts.to_le_bytes());
        buf.extend_from_slice(body);
    });
}

/// One write of a decoded commit: a key and its new value (`None` deletes).
pub type Write<'a> = (&'a [u8], Option<&'a [u8]>);

/// Decodes a commit payload into its ts and writes. The error is a reason
/// for a `Corruption`; a payload that passed its checksum but fails here was
/// written by something other than this engine.
pub fn decode_commit(payload: &[u8]) -> Result<(u64, Vec<Write<'_>>), &'static str> {
    let ts = read_u64(payload, 0).ok_or("commit payload too short")?;
    let count = read_u32(payload, 8).ok_or("commit payload too short")? as usize;
    // Each write takes at least 5 bytes: bound the count before allocating.
    if count > payload.len() / 5 {
        return Err("commit write count larger than the payload");
    }
    let mut writes = Vec::with_capacity(count);
    let mut at = 12;
    for _ in 0..count {
        let op = *payload.get(at).ok_or("commit write truncated")?;
        let key_len = read_u32(payload, at + 1).ok_or("commit write truncated")? as usize;
        if key_len > MAX_KEY_BYTES {
            return Err("commit key too long");
        }
        at += 5;
        let key = payload
            .get(at..at + key_len)
            .ok_or("commit key truncated")?;
        at += key_len;
        let value = match op {
            OP_PUT => {
                let len = read_u32(payload, at).ok_or("commit value truncated")? as usize;
                if len > MAX_VALUE_BYTES {
                    return Err("commit value too long");
                }
                at += 4;
                let value = payload.get(at..at + len).ok_or("commit value truncated")?;
                at += len;
                Some(value)
            }
            OP_DELETE => None,
            _ => return Err("unknown commit write op"),
        };
        writes.push((key, value));
    }
    if at != payload.len() {
        return Err("trailing bytes after commit writes");
    }
    Ok((ts, writes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A segment's bytes: `n` commits at ts 1..=n, then `tail`. Returns
    /// them and where the tail starts.
    fn log_then(n: u64, tail: &[u8]) -> (Vec<u8>, usize) {
        let mut buf = Vec::new();
        for ts in 1..=n {
            let value = [7u8; 100];
            encode_commit(
                &mut buf,
                ts,
                1,
                [(&b"key"[..], Some(&value[..]))].into_iter(),
            );
        }
        let at = buf.len();
        buf.extend_from_slice(tail);
        (buf, at)
    }

    /// What the search costs must stay linear in the bytes it looks at,
    /// whatever they hold: it runs at every open of a log whose last
    /// record is torn (issue 5: never a hang).
    #[test]
    fn the_search_after_a_torn_record_checksums_a_bounded_number_of_bytes() {
        // A big commit of equal bytes, torn: every offset in it claims a
        // commit of 0x01010101 bytes that fits in the file.
        let mut torn = Vec::new();
        let ones = vec![1u8; 3 << 20];
        encode_commit(&mut torn, 11, 1, [(&b"x"[..], Some(&ones[..]))].into_iter());
        torn.extend(std::iter::repeat_n(1u8, 0x0101_0101 + 20_000));
        let (bytes, at) = log_then(10, &torn);
        let (found, checked) = search_after(&bytes, at, 10);
        assert!(!found, "a torn tail read as damage in the middle");
        assert_eq!(
            checked, 0,
            "checksummed offsets whose ts cannot follow ts 10"
        );

        // Bytes made to pass that test at every 17th offset, each
        // claiming 16 MiB: the search gives up (and says a valid record
        // may follow) once it has checksummed a few times the file.
        let mut crafted = Vec::new();
        let mut i = 0u64;
        while crafted.len() < 40 << 20 {
            let mut frame = [0u8; MIN_FRAME_BYTES];
            frame[..4].copy_from_slice(&(16u32 << 20).to_le_bytes());
            frame[8] = KIND_COMMIT;
            frame[9..].copy_from_slice(&(11 + i).to_le_bytes());
            crafted.extend_from_slice(&frame);
            i += 1;
        }
        let (bytes, at) = log_then(10, &crafted);
        let (found, checked) = search_after(&bytes, at, 10);
        assert!(found);
        assert!(
            checked <= 4 * bytes.len() + MAX_PAYLOAD_BYTES,
            "checksummed {checked} bytes of a {} byte file",
            bytes.len()
        );
    }

    #[test]
    fn the_search_after_a_damaged_record_finds_the_records_that_follow() {
        // Records 11 and 12 whole, record 11's checksum broken: 12 follows.
        let mut later = Vec::new();
        for ts in 11..=12 {
            encode_commit(
                &mut later,
                ts,
                1,
                [(&b"k"[..], Some(&b"v"[..]))].into_iter(),
            );
        }
        later[5] ^= 1;
        let (bytes, at) = log_then(10, &later);
        assert!(valid_record_after(&bytes, at, 10));
        // Without record 12, nothing valid follows: a torn tail.
        let (bytes, at) = log_then(10, &later[..later.len() / 2]);
        assert!(!valid_record_after(&bytes, at, 10));
    }

    fn sample() -> Vec<u8> {
        let mut buf = Vec::new();
        let writes: Vec<(&[u8], Option<&[u8]>)> =
            vec![(b"alpha", Some(b"one")), (b"beta", None), (b"", Some(b""))];
        encode_commit(&mut buf, 42, writes.len(), writes.iter().copied());
        buf
    }

    #[test]
    fn commit_round_trips() {
        let buf = sample();
        let frame = decode_frame(&buf, 0).expect("frame");
        assert_eq!(frame.kind, KIND_COMMIT);
        assert_eq!(frame.end, buf.len());
        assert_eq!(frame.ts(), 42);
        let (ts, writes) = decode_commit(frame.payload).expect("commit");
        assert_eq!(ts, 42);
        assert_eq!(
            writes,
            vec![
                (&b"alpha"[..], Some(&b"one"[..])),
                (&b"beta"[..], None),
                (&b""[..], Some(&b""[..]))
            ]
        );
        let size = commit_payload_bytes(writes.iter().copied());
        assert_eq!(size, frame.payload.len());
    }

    #[test]
    fn logical_round_trips() {
        let mut buf = Vec::new();
        encode_logical(&mut buf, 7, b"batch");
        let frame = decode_frame(&buf, 0).expect("frame");
        assert_eq!(frame.kind, KIND_LOGICAL);
        assert_eq!(frame.ts(), 7);
        assert_eq!(&frame.payload[8..], b"batch");
    }

    #[test]
    fn every_truncation_is_short() {
        let buf = sample();
        for cut in 0..buf.len() {
            assert_eq!(
                decode_frame(&buf[..cut], 0).map(|f| f.end),
                Err(FrameError::Short),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let buf = sample();
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut bad = buf.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    decode_frame(&bad, 0).is_err(),
                    "flip {byte}:{bit} undetected"
                );
            }
        }
    }

    #[test]
    fn huge_length_is_rejected_before_allocating() {
        let mut buf = sample();
        buf[0..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            decode_frame(&buf, 0).map(|f| f.end),
            Err(FrameError::BadLength)
        );
    }

    #[test]
    fn unknown_kind_is_rejected() {
        let mut buf = Vec::new();
        encode_frame(&mut buf, 99, |b| b.extend_from_slice(&1u64.to_le_bytes()));
        assert_eq!(
            decode_frame(&buf, 0).map(|f| f.end),
            Err(FrameError::BadKind)
        );
    }

    #[test]
    fn a_close_record_round_trips_and_holds_its_ts_alone() {
        let mut buf = Vec::new();
        encode_close(&mut buf, 42);
        assert_eq!(buf.len(), CLOSE_FRAME_BYTES);
        let frame = decode_frame(&buf, 0).unwrap();
        assert_eq!(
            (frame.kind, frame.ts(), frame.end),
            (KIND_CLOSE, 42, buf.len())
        );
        let mut longer = Vec::new();
        encode_frame(&mut longer, KIND_CLOSE, |b| b.extend_from_slice(&[7; 9]));
        assert_eq!(
            decode_frame(&longer, 0).map(|f| f.end),
            Err(FrameError::BadLength)
        );
    }

    #[test]
    fn malformed_commit_payloads_are_errors() {
        assert!(decode_commit(&[0; 4]).is_err());
        let mut p = 1u64.to_le_bytes().to_vec();
        p.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_commit(&p).is_err(), "count beyond payload");
        let mut p = 1u64.to_le_bytes().to_vec();
        p.extend_from_slice(&1u32.to_le_bytes());
        p.push(OP_PUT);
        p.extend_from_slice(&100u32.to_le_bytes());
        assert!(decode_commit(&p).is_err(), "key beyond payload");
        let mut p = 1u64.to_le_bytes().to_vec();
        p.extend_from_slice(&1u32.to_le_bytes());
        p.push(9);
        p.extend_from_slice(&0u32.to_le_bytes());
        assert!(decode_commit(&p).is_err(), "bad op");
        let mut p = 1u64.to_le_bytes().to_vec();
        p.extend_from_slice(&0u32.to_le_bytes());
        p.push(0);
        assert!(decode_commit(&p).is_err(), "trailing bytes");
    }
}
