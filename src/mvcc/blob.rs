//! `Blob`: one version of a key as the index holds it, the key and the
//! value (or a tombstone) in a single allocation.
//!
//! Layout: `[flags: u8][key length: u16 LE][value length: u32 LE][key]
//! [value]`; bit 0 of `flags` marks a tombstone (no value, a delete). Keys are at most
//! `record::MAX_KEY_BYTES` = 65,535 bytes, so the length fits.
//!
//! Why key and value together: the index's map entry then holds an
//! 8-byte pointer to the blob instead of a 32-byte inline key and a
//! 32-byte `Bytes`, which more than halves the entry (32 bytes with the
//! version's ts, the pointer to older versions and 32 bits of the key's
//! hash), and a point read finds the key it
//! compares and the value it copies in the same cache lines. Hash maps
//! double as they grow, so every byte of the entry counts twice just
//! after a doubling: at 1,000,000 keys of 16 bytes with 100-byte values the
//! overhead per key went from 154 bytes to under 80 (`examples/memory.rs`).
//!
//! The price: a reader gets a copy of the value (`Bytes::copy_from_slice`)
//! instead of a shared reference to it. For the small records this engine
//! is made for, a copy of a line or two that the lookup has just brought
//! into the cache costs less than the shared header a `Bytes` needs (24
//! bytes and one more cache miss per read).

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::ptr::{self, NonNull};

use super::key::Key;

const TOMBSTONE: u8 = 1;
/// `[flags: u8][key length: u16 LE][value length: u32 LE]`.
const HEADER: usize = 7;

/// A key and its value (or a tombstone), in one allocation that the blob
/// owns alone, as a `Box<[u8]>` would; its lengths are in the allocation,
/// so that the pointer is 8 bytes, not a slice's 16.
pub(crate) struct Blob(NonNull<u8>);

// SAFETY: a `Blob` owns its bytes alone (no other pointer to them exists,
// and `Clone` copies them), like a `Box<[u8]>`, and changes them only
// through `&mut self` or by value: sending or sharing it between threads is
// as safe as sending or sharing a `Box<[u8]>`.
unsafe impl Send for Blob {}
// SAFETY: as for `Send`: `&Blob` only reads.
unsafe impl Sync for Blob {}

/// The layout of a blob of `len` bytes. `len` is at most `HEADER` +
/// 65,535 + 16 MiB (the engine checks sizes first), far below
/// `isize::MAX`.
fn layout(len: usize) -> Layout {
    match Layout::from_size_align(len, 1) {
        Ok(layout) => layout,
        Err(_) => unreachable!("a blob of {len} bytes"),
    }
}

impl Blob {
    /// The bytes a blob of this key and value takes.
    pub(crate) fn len_for(key: &[u8], value: Option<&[u8]>) -> usize {
        Blob::size(key.len(), value.map_or(0, <[u8]>::len))
    }

    /// The bytes a blob of a key and a value of these lengths takes.
    pub(crate) fn size(key_len: usize, value_len: usize) -> usize {
        HEADER + key_len + value_len
    }

    /// A blob of `key` and `value` (`None`: a tombstone). The key must be
    /// at most 65,535 bytes and the value at most 4 GiB (the engine checks
    /// sizes before it gets here).
    pub(crate) fn new(key: &[u8], value: Option<&[u8]>) -> Blob {
        Blob::reuse(None, key, value)
    }

    /// `new`, written into `buf` when it is exactly the right length (a
    /// pruned version's allocation, kept for reuse), else into a new one.
    pub(crate) fn reuse(buf: Option<Blob>, key: &[u8], value: Option<&[u8]>) -> Blob {
        let len = Blob::len_for(key, value);
        let (Ok(key_len), Ok(value_len)) = (
            u16::try_from(key.len()),
            u32::try_from(value.map_or(0, <[u8]>::len)),
        ) else {
            unreachable!("a key or value over the engine's limits");
        };
        let blob = match buf {
            Some(blob) if blob.len() == len => blob,
            _ => {
                let layout = layout(len);
                // SAFETY: the layout's size is at least `HEADER`, not zero.
                let at = unsafe { alloc(layout) };
                Blob(NonNull::new(at).unwrap_or_else(|| handle_alloc_error(layout)))
            }
        };
        let flags = if value.is_some() { 0 } else { TOMBSTONE };
        let value = value.unwrap_or_default();
        let at = blob.0.as_ptr();
        // SAFETY: `at` points to `len` bytes that `blob` owns alone (just
        // allocated, or a blob of exactly `len` bytes given by value), and
        // the writes below cover `HEADER + key.len() + value.len()` = `len`
        // bytes from it, each from a source of the length written, which
        // cannot overlap the destination (it is owned by `blob`). Raw
        // writes, not a `&mut [u8]`: fresh memory is uninitialized.
        unsafe {
            at.write(flags);
            ptr::copy_nonoverlapping(key_len.to_le_bytes().as_ptr(), at.add(1), 2);
            ptr::copy_nonoverlapping(value_len.to_le_bytes().as_ptr(), at.add(3), 4);
            ptr::copy_nonoverlapping(key.as_ptr(), at.add(HEADER), key.len());
            ptr::copy_nonoverlapping(value.as_ptr(), at.add(HEADER + key.len()), value.len());
        }
        blob
    }

    fn header(&self) -> [u8; HEADER] {
        let mut header = [0u8; HEADER];
        // SAFETY: every blob starts with `HEADER` initialized bytes.
        unsafe { ptr::copy_nonoverlapping(self.0.as_ptr(), header.as_mut_ptr(), HEADER) };
        header
    }

    fn lengths(&self) -> (usize, usize) {
        let h = self.header();
        let key_len = u16::from_le_bytes([h[1], h[2]]);
        let value_len = u32::from_le_bytes([h[3], h[4], h[5], h[6]]);
        (usize::from(key_len), value_len as usize)
    }

    /// All of the blob's bytes, header included.
    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: the blob owns `len()` initialized bytes at `self.0`
        // (`reuse` wrote them all), alive and unchanged while `self` is
        // borrowed.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr(), self.len()) }
    }

    pub(crate) fn key(&self) -> &[u8] {
        let (key_len, _) = self.lengths();
        &self.bytes()[HEADER..HEADER + key_len]
    }

    /// The value; `None` for a tombstone.
    pub(crate) fn value(&self) -> Option<&[u8]> {
        if self.is_tombstone() {
            return None;
        }
        let (key_len, _) = self.lengths();
        Some(&self.bytes()[HEADER + key_len..])
    }

    pub(crate) fn is_tombstone(&self) -> bool {
        self.header()[0] & TOMBSTONE != 0
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

    /// How many bytes the blob takes.
    pub(crate) fn len(&self) -> usize {
        let (key_len, value_len) = self.lengths();
        Blob::size(key_len, value_len)
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
        // SAFETY: `self.0` was allocated by `reuse` with `layout(len)`,
        // and `len()` reads the same lengths back from the header.
        unsafe { dealloc(self.0.as_ptr(), layout(self.len())) }
    }
}

impl Clone for Blob {
    fn clone(&self) -> Blob {
        Blob::new(self.key(), self.value())
    }
}

impl PartialEq for Blob {
    fn eq(&self, other: &Blob) -> bool {
        self.bytes() == other.bytes()
    }
}

impl Eq for Blob {}

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
        for key in [&b""[..], b"k", b"account:12345678", &long] {
            for value in [None, Some(&b""[..]), Some(b"v"), Some(&[9u8; 300][..])] {
                let blob = Blob::new(key, value);
                assert_eq!(blob.key(), key);
                assert_eq!(blob.value(), value);
                assert_eq!(blob.is_tombstone(), value.is_none());
                assert_eq!(blob.len(), Blob::len_for(key, value));
                assert_eq!(blob.index_key().as_bytes(), key);
            }
        }
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
