//! Ordered scans: a k-way merge of the index shards at one ts, with a
//! transaction's own writes laid over it.
//!
//! Each shard is read in chunks (one short read-lock hold per chunk), so a
//! scan never holds a lock while the caller works and never blocks a writer
//! for long. The scan borrows the snapshot or transaction that registered
//! its ts, so the versions it reads cannot be collected under it.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::ops::{Bound, Range, RangeFrom, RangeFull, RangeInclusive, RangeTo, RangeToInclusive};

use bytes::Bytes;

use super::index::{Index, SHARDS, bounds_are_empty};
use super::key::Key;

/// Entries copied from a shard in its first lock hold; each refill doubles
/// it, up to `MAX_CHUNK`. A short scan over 64 shards reads only a few keys
/// of each; a long one soon reads in large chunks.
const FIRST_CHUNK: usize = 2;
/// The most entries copied from a shard per lock hold.
const MAX_CHUNK: usize = 256;

/// A range of keys to scan: `..`, `a..b`, `a..=b`, `a..`, `..b`, `..=b` or
/// a pair of `Bound`s, over anything that is `AsRef<[u8]>`.
pub trait KeyRange {
    /// The lower and upper bounds, owned.
    fn into_bounds(self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>);
}

fn owned<K: AsRef<[u8]>>(bound: Bound<K>) -> Bound<Vec<u8>> {
    match bound {
        Bound::Included(k) => Bound::Included(k.as_ref().to_vec()),
        Bound::Excluded(k) => Bound::Excluded(k.as_ref().to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl KeyRange for RangeFull {
    fn into_bounds(self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        (Bound::Unbounded, Bound::Unbounded)
    }
}

impl<K: AsRef<[u8]>> KeyRange for Range<K> {
    fn into_bounds(self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        (
            Bound::Included(self.start.as_ref().to_vec()),
            Bound::Excluded(self.end.as_ref().to_vec()),
        )
    }
}

impl<K: AsRef<[u8]>> KeyRange for RangeInclusive<K> {
    fn into_bounds(self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        let (start, end) = self.into_inner();
        (
            Bound::Included(start.as_ref().to_vec()),
            Bound::Included(end.as_ref().to_vec()),
        )
    }
}

impl<K: AsRef<[u8]>> KeyRange for RangeFrom<K> {
    fn into_bounds(self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        (
            Bound::Included(self.start.as_ref().to_vec()),
            Bound::Unbounded,
        )
    }
}

impl<K: AsRef<[u8]>> KeyRange for RangeTo<K> {
    fn into_bounds(self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        (
            Bound::Unbounded,
            Bound::Excluded(self.end.as_ref().to_vec()),
        )
    }
}

impl<K: AsRef<[u8]>> KeyRange for RangeToInclusive<K> {
    fn into_bounds(self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        (
            Bound::Unbounded,
            Bound::Included(self.end.as_ref().to_vec()),
        )
    }
}

impl<K: AsRef<[u8]>> KeyRange for (Bound<K>, Bound<K>) {
    fn into_bounds(self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        (owned(self.0), owned(self.1))
    }
}

/// The bounds of every key that starts with `prefix`.
pub(crate) fn prefix_bounds(prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let lower = Bound::Included(prefix.to_vec());
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return (lower, Bound::Excluded(end));
        }
    }
    (lower, Bound::Unbounded)
}

/// Whether the bounds can hold no key at all (start after end).
pub(crate) fn is_empty_range(bounds: &(Bound<Vec<u8>>, Bound<Vec<u8>>)) -> bool {
    bounds_are_empty(as_ref_bounds(bounds))
}

pub(crate) fn as_ref_bounds(b: &(Bound<Vec<u8>>, Bound<Vec<u8>>)) -> (Bound<&[u8]>, Bound<&[u8]>) {
    (as_ref_bound(&b.0), as_ref_bound(&b.1))
}

fn as_ref_bound(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k),
        Bound::Excluded(k) => Bound::Excluded(k),
        Bound::Unbounded => Bound::Unbounded,
    }
}

#[derive(Debug)]
struct Cursor {
    buf: VecDeque<(Bytes, Bytes)>,
    /// Entries the next refill copies.
    chunk: usize,
    /// Where the next chunk starts; `None` once the shard is exhausted.
    resume: Option<Bound<Key>>,
}

/// An ordered scan at one ts: yields `(key, value)` pairs in key order.
/// Created by `Snapshot::scan` and `Transaction::scan`.
#[derive(Debug)]
pub struct Scan<'a> {
    index: &'a Index,
    ts: u64,
    upper: Bound<Vec<u8>>,
    cursors: Vec<Cursor>,
    heap: BinaryHeap<Reverse<(Bytes, usize)>>,
    started: bool,
    /// A transaction's own writes in the range, in key order.
    overlay: VecDeque<(Bytes, Option<Bytes>)>,
}

impl<'a> Scan<'a> {
    pub(crate) fn new(
        index: &'a Index,
        ts: u64,
        bounds: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        overlay: VecDeque<(Bytes, Option<Bytes>)>,
    ) -> Self {
        let empty = is_empty_range(&bounds);
        let (lower, upper) = bounds;
        let lower: Bound<Key> = match lower {
            Bound::Included(k) => Bound::Included(Key::new(&k)),
            Bound::Excluded(k) => Bound::Excluded(Key::new(&k)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let cursors = (0..SHARDS)
            .map(|_| Cursor {
                buf: VecDeque::new(),
                chunk: FIRST_CHUNK,
                resume: (!empty).then(|| lower.clone()),
            })
            .collect();
        Scan {
            index,
            ts,
            upper,
            cursors,
            heap: BinaryHeap::with_capacity(SHARDS),
            started: false,
            overlay: if empty { VecDeque::new() } else { overlay },
        }
    }

    /// Refills shard `s` until it has an entry or is exhausted, and puts its
    /// head key on the heap.
    fn refill(&mut self, s: usize) {
        let cursor = &mut self.cursors[s];
        let mut out = Vec::with_capacity(cursor.chunk);
        while cursor.buf.is_empty() {
            let Some(resume) = cursor.resume.take() else {
                return;
            };
            let lower = match &resume {
                Bound::Included(k) => Bound::Included(k.as_bytes()),
                Bound::Excluded(k) => Bound::Excluded(k.as_bytes()),
                Bound::Unbounded => Bound::Unbounded,
            };
            out.clear();
            let chunk = self.index.scan_shard(
                s,
                (lower, as_ref_bound(&self.upper)),
                self.ts,
                cursor.chunk,
                &mut out,
            );
            cursor.chunk = (cursor.chunk * 2).min(MAX_CHUNK);
            cursor.resume = chunk.resume_after.map(Bound::Excluded);
            cursor.buf.extend(out.drain(..));
        }
        if let Some((key, _)) = cursor.buf.front() {
            self.heap.push(Reverse((key.clone(), s)));
        }
    }

    fn next_base(&mut self) -> Option<(Bytes, Bytes)> {
        if !self.started {
            self.started = true;
            for s in 0..SHARDS {
                self.refill(s);
            }
        }
        let Reverse((_, s)) = self.heap.pop()?;
        let item = self.cursors[s].buf.pop_front();
        self.refill(s);
        item
    }

    fn peek_base(&mut self) -> Option<&Bytes> {
        if !self.started {
            self.started = true;
            for s in 0..SHARDS {
                self.refill(s);
            }
        }
        self.heap.peek().map(|Reverse((k, _))| k)
    }
}

impl Iterator for Scan<'_> {
    type Item = (Bytes, Bytes);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let base = self.peek_base().cloned();
            let own = self.overlay.front().map(|(k, _)| k.clone());
            let take_overlay = match (own, base) {
                (None, None) => return None,
                (None, Some(_)) => false,
                (Some(_), None) => true,
                (Some(own), Some(base)) => {
                    if own == base {
                        // The transaction's own write shadows the stored one.
                        self.next_base();
                    }
                    own <= base
                }
            };
            if !take_overlay {
                return self.next_base();
            }
            if let Some((key, Some(value))) = self.overlay.pop_front() {
                return Some((key, value));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_bounds_cover_exactly_the_prefix() {
        assert_eq!(
            prefix_bounds(b"ab"),
            (
                Bound::Included(b"ab".to_vec()),
                Bound::Excluded(b"ac".to_vec())
            )
        );
        assert_eq!(
            prefix_bounds(&[1, 0xff]),
            (Bound::Included(vec![1, 0xff]), Bound::Excluded(vec![2]))
        );
        assert_eq!(
            prefix_bounds(&[0xff]),
            (Bound::Included(vec![0xff]), Bound::Unbounded)
        );
    }

    #[test]
    fn scan_merges_shards_in_order_and_respects_ts() {
        let index = Index::new();
        for i in 0u32..1000 {
            index.install(&i.to_be_bytes(), 1, Some(Bytes::from(vec![1])), 0);
        }
        index.install(&5u32.to_be_bytes(), 2, None, 0);
        let all: Vec<_> = Scan::new(&index, 2, (..).into_bounds(), VecDeque::new()).collect();
        assert_eq!(all.len(), 999);
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
        let at1 = Scan::new(&index, 1, (..).into_bounds(), VecDeque::new()).count();
        assert_eq!(at1, 1000);
        let lo = 10u32.to_be_bytes();
        let hi = 20u32.to_be_bytes();
        let some: Vec<_> = Scan::new(&index, 2, (lo..hi).into_bounds(), VecDeque::new()).collect();
        assert_eq!(some.len(), 10);
        let none = Scan::new(&index, 2, (hi..lo).into_bounds(), VecDeque::new()).count();
        assert_eq!(none, 0);
    }
}
