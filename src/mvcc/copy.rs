//! Copies of values handed out by reads (`Snapshot::get`,
//! `Transaction::get`), packed into shared chunks.
//!
//! A read copies its value out of the index (the index's blobs are freed
//! by GC, so a reader cannot hold on to them). A copy in an allocation of
//! its own costs a `malloc` and, when dropped, a `free`: some 180
//! instructions, which is enough to stop the processor from starting the
//! next read while this one waits for memory (a read alone takes about
//! 180 ns, a read plus any allocation about 330 ns: see `benches/engine.rs`,
//! "read"). So small values are copied into a 4 KiB chunk per thread
//! instead, each copy a `Bytes` that shares the chunk (a reference count),
//! and a new chunk is taken when one is full: one allocation per chunk,
//! not per read.
//!
//! The price: a value kept pins its chunk, at most `CHUNK_BYTES` for one
//! value of at most `PACKED_MAX` bytes. Copy a value (`Bytes::to_vec`,
//! `Bytes::copy_from_slice`) to keep many of them for long, or read with
//! `get_with`, which copies nothing.

use std::cell::RefCell;

use bytes::{Bytes, BytesMut};

/// The chunk size.
pub(crate) const CHUNK_BYTES: usize = 4096;
/// Values longer than this get an allocation of their own.
pub(crate) const PACKED_MAX: usize = 512;

thread_local! {
    static CHUNK: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// A copy of `value`.
pub(crate) fn copy_out(value: &[u8]) -> Bytes {
    if value.len() > PACKED_MAX {
        return Bytes::copy_from_slice(value);
    }
    CHUNK.with(|chunk| {
        let mut chunk = chunk.borrow_mut();
        if chunk.capacity() < value.len() {
            *chunk = BytesMut::with_capacity(CHUNK_BYTES);
        }
        chunk.extend_from_slice(value);
        chunk.split().freeze()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Copies are exact and independent: many small ones across chunk
    /// boundaries, kept and dropped in any order, and large ones.
    #[test]
    fn copies_are_exact_across_chunks() {
        let mut kept = Vec::new();
        for i in 0..5_000usize {
            let value: Vec<u8> = (0..(i % 700)).map(|j| (i ^ j) as u8).collect();
            let copy = copy_out(&value);
            assert_eq!(&copy[..], &value[..]);
            if i % 3 == 0 {
                kept.push((copy, value));
            }
        }
        for (copy, value) in &kept {
            assert_eq!(&copy[..], &value[..]);
        }
        kept.retain(|(c, _)| c.len() % 2 == 0);
        for (copy, value) in &kept {
            assert_eq!(&copy[..], &value[..]);
        }
        assert!(copy_out(&[]).is_empty());
    }
}
