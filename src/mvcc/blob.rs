//! `Blob`: one version of a key as the index holds it: the key, the value
//! (or a tombstone), the commit ts and the next older version, in a single
//! allocation.
//!
//! Layout: `[older: pointer][ts: u64][flags: u8][key length: u16 LE][value
//! length: u32 LE][key][value]`, 8-byte aligned; bit 0 of `flags` marks a
//! tombstone (no value, a delete), bit 2 a short header (a key length of
//! one byte and a value length of two: `SHORT`). Keys are at most
//! `record::MAX_KEY_BYTES` = 65,535 bytes, so the length fits. A key's
//! versions are a list, newest first: each blob owns the next older one.
//!
//! The blob's pointer points at the ts, past the `older` slot, and the
//! slot is optional: bit 1 of `flags` says the blob has one. A key written
//! once (a ledger's transfer, a history entry) never has an older version,
//! so its blob (`Blob::lone`) goes without the slot's 8 bytes; should the
//! key get a newer version after all, the newer one holds the older, and
//! only a blob that must hold an older one and has no slot is moved to a
//! blob with a slot (`set_older`).
//!
//! Why: the index's map entry (`index::Chain`) then holds an 8-byte
//! pointer to the newest blob (the map keeps 32 bits of the key's hash
//! beside it: `table.rs`), where it held a 32-byte inline key, a 32-byte
//! `Bytes`, a ts and a pointer to a list of older versions (80 bytes). A
//! map is partly empty, so every byte of the entry counts more than once:
//! at 1,000,000 keys of 16 bytes with 100-byte values the overhead per key
//! went from 154 bytes to 59 (`examples/memory.rs`), and to 45 once the
//! maps became `table.rs`'s. And a
//! point read finds the key it compares, the ts it checks and the value it
//! copies in the same cache lines.
//!
//! The price: a reader gets a copy of the value (`copy.rs`)
//! instead of a shared reference to it (or borrows it under the shard's
//! read lock: `Snapshot::get_with`). For the small records this engine is
//! made for, a copy of a line or two that the lookup has just brought into
//! the cache costs less than the shared header a `Bytes` needs (24 bytes
//! and one more cache miss per read).

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::ptr::{self, NonNull};

use super::key::Key;

const TOMBSTONE: u8 = 1;
/// The blob has the `older` slot, just before its pointer.
const SLOT: u8 = 2;
/// The slot's bytes, before the pointer (when the blob has it).
const SLOT_BYTES: usize = 8;
/// The lengths are short: a byte for the key's, two for the value's.
const SHORT: u8 = 4;
/// From the pointer: `[ts: u64][flags: u8]`, the lengths, then the key and
/// the value. The lengths are `[key: u16 LE][value: u32 LE]` (a long
/// header, 15 bytes), or, when they fit (`SHORT`), `[key: u8][value: u16
/// LE]` (a short header, 12 bytes): most records are small, and 3 bytes
/// less puts a ledger's transfer (74 bytes) in the allocator's 80-byte
/// class instead of its 96-byte one.
const TS: usize = 0;
const FLAGS: usize = 8;
const LENGTHS: usize = FLAGS + 1;
const SHORT_HEADER: usize = 12;
const LONG_HEADER: usize = 15;

/// The header's length for a key and a value of these lengths.
fn header(key_len: usize, value_len: usize) -> usize {
    if key_len <= usize::from(u8::MAX) && value_len <= usize::from(u16::MAX) {
        SHORT_HEADER
    } else {
        LONG_HEADER
    }
}
/// Blobs are allocated 8-byte aligned, for the pointer and the ts.
const ALIGN: usize = 8;
const _: () =
    assert!(SLOT_BYTES.is_multiple_of(ALIGN) && TS.is_multiple_of(ALIGN) && FLAGS == TS + 8);

/// One version of a key: the key and its value (or a tombstone), its commit
/// ts, and the next older version of the key, if any, in one allocation
/// that the blob owns alone, as a `Box<[u8]>` would (the older version
/// too, as a `Box` would). Its lengths are in the allocation, so that the
/// pointer is 8 bytes, not a slice's 16. `repr(transparent)` over a
/// `NonNull`: an `Option<Blob>` is a nullable pointer, which is how the
/// header holds the older version.
#[repr(transparent)]
pub(crate) struct Blob(NonNull<u8>);

// SAFETY: a `Blob` owns its bytes and its older versions alone (no other
// pointer to them exists), like a `Box<[u8]>`, and changes them only
// through `&mut self` or by value: sending or sharing it between threads is
// as safe as sending or sharing a `Box<[u8]>`.
unsafe impl Send for Blob {}
// SAFETY: as for `Send`: `&Blob` only reads.
unsafe impl Sync for Blob {}

/// The layout of a blob of `len` bytes. `len` is at most `SLOT_BYTES` +
/// `LONG_HEADER` + 65,535 + 16 MiB (the engine checks sizes first), far below
/// `isize::MAX`.
fn layout(len: usize) -> Layout {
    match Layout::from_size_align(len, ALIGN) {
        Ok(layout) => layout,
        Err(_) => unreachable!("a blob of {len} bytes"),
    }
}

impl Blob {
    /// The bytes a blob of this key and value takes.
    pub(crate) fn len_for(key: &[u8], value: Option<&[u8]>) -> usize {
        Blob::size(key.len(), value.map_or(0, <[u8]>::len))
    }

    /// The bytes a blob of a key and a value of these lengths takes (with
    /// the slot for an older version: `new`'s blobs).
    pub(crate) fn size(key_len: usize, value_len: usize) -> usize {
        SLOT_BYTES + header(key_len, value_len) + key_len + value_len
    }

    /// A blob of `key` and `value` (`None`: a tombstone), at ts 0 and with
    /// no older version. The key must be at most 65,535 bytes and the value
    /// at most 4 GiB (the engine checks sizes before it gets here).
    pub(crate) fn new(key: &[u8], value: Option<&[u8]>) -> Blob {
        Blob::reuse(None, key, value)
    }

    /// `new` without the slot for an older version (8 bytes less), for a
    /// key that has no older version and will most likely never get one
    /// (see the module comment).
    pub(crate) fn lone(key: &[u8], value: Option<&[u8]>) -> Blob {
        let value_len = value.map_or(0, <[u8]>::len);
        let blob = Blob::alloc(false, header(key.len(), value_len) + key.len() + value_len);
        blob.write(key, value, 0)
    }

    /// `new`, written into `buf` when it is exactly the right length (a
    /// pruned version's allocation, kept for reuse), else into a new one.
    pub(crate) fn reuse(buf: Option<Blob>, key: &[u8], value: Option<&[u8]>) -> Blob {
        let len = Blob::len_for(key, value);
        let blob = match buf {
            Some(mut blob) if blob.reusable_as(len) => {
                drop(blob.take_older());
                blob
            }
            _ => Blob::alloc(true, len - SLOT_BYTES),
        };
        blob.write(key, value, SLOT)
    }

    /// Whether `reuse` can write a blob of `len` bytes (`Blob::size`) into
    /// this one: it has the slot and exactly that length.
    pub(crate) fn reusable_as(&self, len: usize) -> bool {
        self.has_slot() && self.len() == len
    }

    /// A new allocation for a blob of `body` bytes from its pointer on,
    /// with the slot before it (then holding "no older version") or not.
    /// Only `write` may read it next: the rest is uninitialized.
    fn alloc(slot: bool, body: usize) -> Blob {
        let before = if slot { SLOT_BYTES } else { 0 };
        let layout = layout(before + body);
        // SAFETY: the layout's size is at least `SHORT_HEADER`, not zero.
        let base = unsafe { alloc(layout) };
        let base = NonNull::new(base).unwrap_or_else(|| handle_alloc_error(layout));
        if slot {
            // SAFETY: `base` is a fresh allocation of at least `SLOT_BYTES`
            // bytes, aligned for a pointer: the slot becomes "no older
            // version" before a `Blob` owns it (its `Drop` reads it).
            unsafe { base.as_ptr().cast::<Option<Blob>>().write(None) };
        }
        // SAFETY: `before` is within the allocation (`body` >= `SHORT_HEADER`
        // follows it), so the pointer stays in it and is not null.
        Blob(unsafe { base.add(before) })
    }

    /// Writes the header (ts 0, the flags given plus the tombstone bit),
    /// the key and the value into a blob whose length, from `alloc` or an
    /// old blob of this length and kind, fits them exactly.
    fn write(self, key: &[u8], value: Option<&[u8]>, slot: u8) -> Blob {
        let (Ok(key_len), Ok(value_len)) = (
            u16::try_from(key.len()),
            u32::try_from(value.map_or(0, <[u8]>::len)),
        ) else {
            unreachable!("a key or value over the engine's limits");
        };
        let mut flags = slot | if value.is_some() { 0 } else { TOMBSTONE };
        let value = value.unwrap_or_default();
        let header = header(key.len(), value.len());
        let mut lengths = [0u8; LONG_HEADER - LENGTHS];
        if header == SHORT_HEADER {
            flags |= SHORT;
            lengths[0] = key_len as u8;
            lengths[1..3].copy_from_slice(&(value_len as u16).to_le_bytes());
        } else {
            lengths[..2].copy_from_slice(&key_len.to_le_bytes());
            lengths[2..6].copy_from_slice(&value_len.to_le_bytes());
        }
        let at = self.0.as_ptr();
        // SAFETY: `at` points to `header + key.len() + value.len()` bytes
        // that `self` owns alone (just allocated, or a blob of exactly this
        // length given by value), and the writes below cover them, each
        // from a source of the length written, which cannot overlap the
        // destination (it is owned by `self`); the ts is at an 8-byte
        // aligned offset. Raw writes, not a `&mut [u8]`: fresh memory is
        // uninitialized. The slot, before `at`, is left as it is.
        unsafe {
            at.add(TS).cast::<u64>().write(0);
            at.add(FLAGS).write(flags);
            ptr::copy_nonoverlapping(lengths.as_ptr(), at.add(LENGTHS), header - LENGTHS);
            ptr::copy_nonoverlapping(key.as_ptr(), at.add(header), key.len());
            ptr::copy_nonoverlapping(value.as_ptr(), at.add(header + key.len()), value.len());
        }
        self
    }

    fn flags(&self) -> u8 {
        // SAFETY: every blob starts with at least `SHORT_HEADER`
        // initialized bytes.
        unsafe { self.0.as_ptr().add(FLAGS).read() }
    }

    fn has_slot(&self) -> bool {
        self.flags() & SLOT != 0
    }

    /// The header's length, the key's and the value's.
    fn lengths(&self) -> (usize, usize, usize) {
        let short = self.flags() & SHORT != 0;
        let header = if short { SHORT_HEADER } else { LONG_HEADER };
        let mut h = [0u8; LONG_HEADER - LENGTHS];
        // SAFETY: the blob starts with its header, `header` initialized
        // bytes (`write`), short or long as its flag says.
        unsafe {
            ptr::copy_nonoverlapping(
                self.0.as_ptr().add(LENGTHS),
                h.as_mut_ptr(),
                header - LENGTHS,
            );
        };
        if short {
            let value_len = u16::from_le_bytes([h[1], h[2]]);
            (header, usize::from(h[0]), usize::from(value_len))
        } else {
            let key_len = u16::from_le_bytes([h[0], h[1]]);
            let value_len = u32::from_le_bytes([h[2], h[3], h[4], h[5]]);
            (header, usize::from(key_len), value_len as usize)
        }
    }

    /// The commit ts of this version (0 until the index installs it).
    pub(crate) fn ts(&self) -> u64 {
        // SAFETY: the ts is initialized (`reuse`), at an aligned offset.
        unsafe { self.0.as_ptr().add(TS).cast::<u64>().read() }
    }

    pub(crate) fn set_ts(&mut self, ts: u64) {
        // SAFETY: as `ts`; `&mut self` owns the bytes alone.
        unsafe { self.0.as_ptr().add(TS).cast::<u64>().write(ts) }
    }

    /// The slot for the older version, just before the pointer: `None` or
    /// a blob this one owns. Only for a blob that has it (`has_slot`).
    fn older_slot(&self) -> *mut Option<Blob> {
        debug_assert!(self.has_slot());
        // Aligned for a pointer (the allocation's start).
        self.0
            .as_ptr()
            .wrapping_sub(SLOT_BYTES)
            .cast::<Option<Blob>>()
    }

    /// The next older version of the key.
    pub(crate) fn older(&self) -> Option<&Blob> {
        if !self.has_slot() {
            return None;
        }
        // SAFETY: a blob with the slot flag has the slot, which always
        // holds a valid `Option<Blob>` (null or an owned blob: `alloc`
        // writes `None`, `set_older` and `take_older` keep it so), which
        // lives as long as `self` and changes only through `&mut self`.
        unsafe { (*self.older_slot()).as_ref() }
    }

    pub(crate) fn older_mut(&mut self) -> Option<&mut Blob> {
        if !self.has_slot() {
            return None;
        }
        // SAFETY: as `older`; `&mut self` makes the borrow unique.
        unsafe { (*self.older_slot()).as_mut() }
    }

    /// Detaches the older versions (the next one, which owns the rest).
    pub(crate) fn take_older(&mut self) -> Option<Blob> {
        if !self.has_slot() {
            return None;
        }
        // SAFETY: as `older_mut`; the slot is left `None`, so the blob
        // taken has one owner.
        unsafe { self.older_slot().replace(None) }
    }

    /// Makes `older` the next older version (dropping any it had). A blob
    /// without the slot moves to a new allocation with one first.
    pub(crate) fn set_older(&mut self, older: Option<Blob>) {
        if !self.has_slot() {
            if older.is_none() {
                return;
            }
            self.add_slot();
        }
        // SAFETY: as `older_mut`; the old content is returned and dropped,
        // the new one is moved in.
        drop(unsafe { self.older_slot().replace(older) });
    }

    /// Moves a blob without the slot into a new allocation with one (which
    /// holds "no older version").
    fn add_slot(&mut self) {
        let body = self.bytes();
        let moved = Blob::alloc(true, body.len());
        // SAFETY: `moved` owns `body.len()` bytes from its pointer, and
        // `body` is another allocation's; after the copy, the flags byte
        // (within the copied header) gets the slot bit.
        unsafe {
            ptr::copy_nonoverlapping(body.as_ptr(), moved.0.as_ptr(), body.len());
            let flags = moved.0.as_ptr().add(FLAGS);
            flags.write(flags.read() | SLOT);
        }
        // The old blob has no older version to drop with it.
        drop(std::mem::replace(self, moved));
    }

    /// Walks from this version to older ones and returns the first for
    /// which `stop` is true (`None` when none is).
    #[cfg(test)]
    pub(crate) fn find_mut(&mut self, mut stop: impl FnMut(&Blob) -> bool) -> Option<&mut Blob> {
        let mut cur = self;
        loop {
            if stop(cur) {
                return Some(cur);
            }
            cur = cur.older_mut()?;
        }
    }

    /// The blob's bytes from its pointer on: the header (but the slot),
    /// the key and the value.
    fn bytes(&self) -> &[u8] {
        let (header, key_len, value_len) = self.lengths();
        // SAFETY: the blob owns `header + key_len + value_len` initialized
        // bytes at `self.0` (`write` wrote them all), alive and unchanged
        // while `self` is borrowed.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr(), header + key_len + value_len) }
    }

    pub(crate) fn key(&self) -> &[u8] {
        let (header, key_len, _) = self.lengths();
        &self.bytes()[header..header + key_len]
    }

    /// The value; `None` for a tombstone.
    pub(crate) fn value(&self) -> Option<&[u8]> {
        if self.is_tombstone() {
            return None;
        }
        let (header, key_len, _) = self.lengths();
        Some(&self.bytes()[header + key_len..])
    }

    pub(crate) fn is_tombstone(&self) -> bool {
        self.flags() & TOMBSTONE != 0
    }

    /// Asks the processor to load the blob's second and third cache
    /// lines (where a value past the first 57 bytes lies) while the caller
    /// reads the first (the header and the key it compares), so that a
    /// copy of the value that follows waits for no further miss.
    #[inline]
    pub(crate) fn prefetch_value(&self) {
        let at = self.0.as_ptr().cast_const();
        prefetch(at.wrapping_add(64));
        prefetch(at.wrapping_add(128));
    }

    /// Asks for the lines that `reuse` writes into this blob, from its
    /// slot on: three lines cover a blob of up to 128 bytes wherever it
    /// starts in its line.
    #[inline]
    pub(crate) fn prefetch_for_reuse(&self) {
        let at = self.0.as_ptr().cast_const().wrapping_sub(SLOT_BYTES);
        for line in 0..3 {
            prefetch(at.wrapping_add(64 * line));
        }
    }

    /// Asks the processor to load the blob's first `lines` cache lines
    /// (from its start), without waiting for them.
    #[inline]
    pub(crate) fn prefetch(&self, lines: usize) {
        let at = self.0.as_ptr().cast_const();
        for line in 0..lines {
            prefetch(at.wrapping_add(64 * line));
        }
    }

    /// The key as the index's scans and queues hold it.
    pub(crate) fn index_key(&self) -> Key {
        Key::new(self.key())
    }

    /// How many bytes the blob takes (its allocation's size).
    pub(crate) fn len(&self) -> usize {
        let (header, key_len, value_len) = self.lengths();
        let slot = if self.has_slot() { SLOT_BYTES } else { 0 };
        slot + header + key_len + value_len
    }
}

/// Asks the processor to load the cache line of `at` without waiting for
/// it: a hint, which reads nothing and cannot fault, whatever `at` is.
#[inline]
pub(crate) fn prefetch<T>(at: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: SSE, which `_mm_prefetch` needs, is part of every x86_64
        // processor; a prefetch dereferences nothing and cannot fault, even
        // for an address outside any allocation.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast::<i8>()) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}

impl Drop for Blob {
    fn drop(&mut self) {
        // The older versions one by one, not by recursion: a key updated
        // many times while a snapshot held its versions has a long chain.
        let mut older = self.take_older();
        while let Some(mut version) = older {
            older = version.take_older();
        }
        let before = if self.has_slot() { SLOT_BYTES } else { 0 };
        // SAFETY: the allocation starts `before` bytes ahead of `self.0`
        // (`alloc`: the slot's bytes, when the flag says the blob has
        // them) and was made with `layout(len)`; `len()` reads the same
        // lengths and flag back from the header.
        unsafe { dealloc(self.0.as_ptr().sub(before), layout(self.len())) }
    }
}

impl std::fmt::Debug for Blob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Blob")
            .field("key", &self.key())
            .field("value", &self.value())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blob_gives_back_its_key_and_value_or_tombstone() {
        let long = vec![7u8; usize::from(u16::MAX)];
        // Lengths on both sides of the short header's limits.
        let (k255, k256) = (vec![1u8; 255], vec![2u8; 256]);
        let (v65535, v65536) = (vec![3u8; 65_535], vec![4u8; 65_536]);
        for key in [&b""[..], b"k", b"account:12345678", &k255, &k256, &long] {
            for value in [
                None,
                Some(&b""[..]),
                Some(b"v"),
                Some(&[9u8; 300][..]),
                Some(&v65535),
                Some(&v65536),
            ] {
                let short = key.len() <= 255 && value.is_none_or(|v| v.len() <= 65_535);
                let header = if short { 12 } else { 15 };
                let body = header + key.len() + value.map_or(0, <[u8]>::len);
                for (blob, len) in [
                    (Blob::new(key, value), 8 + body),
                    (Blob::lone(key, value), body),
                ] {
                    assert_eq!(blob.key(), key);
                    assert_eq!(blob.value(), value);
                    assert_eq!(blob.is_tombstone(), value.is_none());
                    assert_eq!(blob.len(), len);
                    assert_eq!(blob.index_key().as_bytes(), key);
                }
                assert_eq!(Blob::len_for(key, value), 8 + body);
            }
        }
    }

    #[test]
    fn a_lone_blob_is_eight_bytes_smaller_until_it_must_hold_an_older_version() {
        for value in [None, Some(&b""[..]), Some(b"v"), Some(&[9u8; 300][..])] {
            let mut lone = Blob::lone(b"key", value);
            assert_eq!((lone.key(), lone.value()), (&b"key"[..], value));
            assert_eq!(lone.is_tombstone(), value.is_none());
            assert_eq!(lone.len() + 8, Blob::len_for(b"key", value));
            assert!(lone.older().is_none() && lone.take_older().is_none());
            assert!(!lone.reusable_as(Blob::len_for(b"key", value)));
            assert!(!lone.reusable_as(lone.len()));
            lone.set_ts(7);
            lone.set_older(None);
            assert_eq!(lone.len() + 8, Blob::len_for(b"key", value), "no move");
            // Given an older version, it moves to a blob with the slot,
            // with its ts, key and value.
            let mut older = Blob::lone(b"key", Some(b"old"));
            older.set_ts(3);
            lone.set_older(Some(older));
            assert_eq!(lone.len(), Blob::len_for(b"key", value));
            assert_eq!(
                (lone.ts(), lone.key(), lone.value()),
                (7, &b"key"[..], value)
            );
            assert_eq!(lone.is_tombstone(), value.is_none());
            assert!(lone.reusable_as(lone.len()));
            let older = lone.take_older().expect("the older version");
            assert_eq!((older.ts(), older.value()), (3, Some(&b"old"[..])));
            // A lone blob given to `reuse` is not written into.
            let fresh = Blob::reuse(Some(older), b"key", Some(b"new"));
            assert_eq!((fresh.ts(), fresh.value()), (0, Some(&b"new"[..])));
            assert!(fresh.reusable_as(fresh.len()));
        }
    }

    /// A chain of versions, newest first: each owns the next older one.
    fn chain(n: u64) -> Blob {
        let mut newest = Blob::new(b"k", Some(b"0"));
        for ts in 1..=n {
            let mut next = Blob::new(b"k", Some(ts.to_string().as_bytes()));
            next.set_ts(ts);
            next.set_older(Some(newest));
            newest = next;
        }
        newest
    }

    #[test]
    fn a_blob_keeps_its_ts_and_owns_its_older_versions() {
        let mut newest = chain(3);
        let seen: Vec<u64> = std::iter::successors(Some(&newest), |v| v.older())
            .map(Blob::ts)
            .collect();
        assert_eq!(seen, [3, 2, 1, 0]);
        let found = newest
            .find_mut(|v| v.ts() <= 1)
            .map(|v| v.value().map(<[u8]>::to_vec));
        assert_eq!(found, Some(Some(b"1".to_vec())));
        assert!(newest.find_mut(|v| v.ts() > 7).is_none());
        // Cut below ts 2: the detached part keeps its own chain.
        let two = newest.find_mut(|v| v.ts() == 2).expect("ts 2");
        let rest = two.take_older().expect("ts 1");
        assert_eq!((rest.ts(), rest.older().map(Blob::ts)), (1, Some(0)));
        assert!(newest.older().and_then(Blob::older).is_none());
        // A reused blob starts with no older version and ts 0.
        let reused = Blob::reuse(Some(rest), b"k", Some(b"9"));
        assert_eq!((reused.ts(), reused.older().is_none()), (0, true));
    }

    /// Dropping a long chain goes version by version (no recursion to
    /// overflow the stack).
    #[test]
    fn a_long_chain_drops_without_recursion() {
        drop(chain(1_000_000));
    }

    #[test]
    fn reuse_writes_into_a_buffer_of_the_right_length_only() {
        let old = Blob::new(b"key-1", Some(b"old value"));
        let at = old.bytes().as_ptr();
        let new = Blob::reuse(Some(old), b"key-2", Some(b"new value"));
        assert_eq!(new.bytes().as_ptr(), at, "the buffer was reused");
        assert_eq!(
            (new.key(), new.value()),
            (&b"key-2"[..], Some(&b"new value"[..]))
        );
        let other = Blob::reuse(Some(new), b"key-3", Some(b"longer value"));
        assert_eq!(other.value(), Some(&b"longer value"[..]));
        let gone = Blob::reuse(Some(other), b"key-3", None);
        assert!(gone.is_tombstone());
    }
}
