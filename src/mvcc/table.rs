//! The hash table of a shard's part: entries in cache-line buckets, each
//! holding the entries' 32-bit hashes beside them, so that a lookup reads
//! one line (usually) before the entry's blob.
//!
//! Why not hashbrown's `HashTable`: it keeps its control bytes and its
//! entries in two arrays, so a lookup waits for two cache misses (a control
//! group, then the entry) before it can follow the entry's pointer; over a
//! million keys that second miss was a third of a point read. Here a bucket
//! is one 64-byte line: five 32-bit hashes, an overflow count and five
//! 8-byte entries. The table is also denser: an entry costs 12.8 bytes at
//! full load, against hashbrown's 16 + 1, and the table grows by half
//! (not double) at 85% load, so it stays between 57% and 85% full.
//!
//! Layout and probing, after Folly's F14 tables:
//! - A key's home bucket is its hash scaled to the bucket count
//!   (`(hash * buckets) >> 32`, which needs no power of two).
//! - An entry lives in its home bucket or, when that is full, in the first
//!   bucket after it (wrapping around) with a free slot.
//! - Each bucket counts the entries that passed it while looking for a slot
//!   (`spill`). A lookup goes on to the next bucket only while that count
//!   is not zero, so a miss usually stops at the home bucket.
//! - Removing an entry takes one off the count of every bucket between its
//!   home and where it lives (its hash gives its home).
//! - Growing reinserts each entry by its kept hash: no key is read.
//!
//! Invariants: `len` is the number of occupied slots; for each bucket `b`,
//! `spill[b]` is the number of entries whose home is at or before `b` in
//! probe order and that live after `b` (so a lookup that finds no entry and
//! a zero count can stop); the table is never full (`len < slots`).

use std::mem;

/// Slots per bucket: five 4-byte hashes, the 4-byte count and five 8-byte
/// entries fill a 64-byte line.
const WIDTH: usize = 5;

/// The table grows once an insert would make it fuller than this
/// (as a fraction of its slots: 85%).
const MAX_LOAD_PERCENT: usize = 85;

/// One cache line of the table (for 8-byte entries).
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct Bucket<V> {
    hashes: [u32; WIDTH],
    /// The entries that passed this bucket (see the invariants).
    spill: u32,
    slots: [Option<V>; WIDTH],
}

impl<V> Bucket<V> {
    fn empty() -> Self {
        Bucket {
            hashes: [0; WIDTH],
            spill: 0,
            slots: [const { None }; WIDTH],
        }
    }

    fn free_slot(&self) -> Option<usize> {
        self.slots.iter().position(Option::is_none)
    }
}

/// Entries found by a 32-bit hash that the caller computes once and passes
/// to every call, and an equality test.
#[derive(Debug)]
pub(crate) struct Table<V> {
    buckets: Vec<Bucket<V>>,
    len: usize,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Table {
            buckets: Vec::new(),
            len: 0,
        }
    }
}

/// Where an entry lives: bucket and slot.
#[derive(Debug, Clone, Copy)]
pub(crate) struct At {
    bucket: usize,
    slot: usize,
}

impl<V> Table<V> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The home bucket of `hash` among `buckets` (not zero).
    fn home(hash: u32, buckets: usize) -> usize {
        ((u64::from(hash) * buckets as u64) >> 32) as usize
    }

    fn next(&self, bucket: usize) -> usize {
        if bucket + 1 == self.buckets.len() {
            0
        } else {
            bucket + 1
        }
    }

    /// Where the entry of `hash` for which `eq` holds lives.
    #[inline]
    pub(crate) fn locate(&self, hash: u32, mut eq: impl FnMut(&V) -> bool) -> Option<At> {
        if self.buckets.is_empty() {
            return None;
        }
        let mut b = Self::home(hash, self.buckets.len());
        // Every bucket at most once: after removals, every count may be
        // nonzero at once.
        for _ in 0..self.buckets.len() {
            let bucket = &self.buckets[b];
            for slot in 0..WIDTH {
                if bucket.hashes[slot] == hash
                    && let Some(v) = &bucket.slots[slot]
                    && eq(v)
                {
                    return Some(At { bucket: b, slot });
                }
            }
            if bucket.spill == 0 {
                return None;
            }
            b = self.next(b);
        }
        None
    }

    /// The entry at `at` (from `locate`, with no change since).
    pub(crate) fn at_mut(&mut self, at: At) -> Option<&mut V> {
        self.buckets[at.bucket].slots[at.slot].as_mut()
    }

    /// Asks for the line of `hash`'s home bucket, where a lookup or an
    /// insert of it starts, without waiting for it (a hint).
    #[inline]
    pub(crate) fn prefetch(&self, hash: u32) {
        if !self.buckets.is_empty() {
            let home = Self::home(hash, self.buckets.len());
            super::blob::prefetch(&raw const self.buckets[home]);
        }
    }

    #[inline]
    pub(crate) fn find(&self, hash: u32, eq: impl FnMut(&V) -> bool) -> Option<&V> {
        let at = self.locate(hash, eq)?;
        self.buckets[at.bucket].slots[at.slot].as_ref()
    }

    pub(crate) fn find_mut(&mut self, hash: u32, eq: impl FnMut(&V) -> bool) -> Option<&mut V> {
        let at = self.locate(hash, eq)?;
        self.buckets[at.bucket].slots[at.slot].as_mut()
    }

    /// Adds an entry whose key is not in the table.
    pub(crate) fn insert_new(&mut self, hash: u32, value: V) {
        let slots = self.buckets.len() * WIDTH;
        if (self.len + 1) * 100 > slots * MAX_LOAD_PERCENT {
            self.grow();
        }
        self.place(hash, value);
        self.len += 1;
    }

    /// Puts an entry in the first free slot from its home on (there is
    /// one: the table is never full), counting the buckets it passes.
    fn place(&mut self, hash: u32, value: V) {
        let mut b = Self::home(hash, self.buckets.len());
        loop {
            let bucket = &mut self.buckets[b];
            if let Some(slot) = bucket.free_slot() {
                bucket.hashes[slot] = hash;
                bucket.slots[slot] = Some(value);
                return;
            }
            bucket.spill += 1;
            b = self.next(b);
        }
    }

    /// Half as many buckets again (at least one more), every entry moved
    /// by its kept hash.
    fn grow(&mut self) {
        let n = self.buckets.len();
        let grown = (n + n / 2).max(n + 1);
        let old = mem::replace(
            &mut self.buckets,
            (0..grown).map(|_| Bucket::empty()).collect(),
        );
        for bucket in old {
            for (hash, slot) in bucket.hashes.into_iter().zip(bucket.slots) {
                if let Some(value) = slot {
                    self.place(hash, value);
                }
            }
        }
    }

    /// Takes the entry out of `at`, and one off the count of each bucket
    /// from its home (by its kept hash) to where it lived.
    fn take(&mut self, at: At) -> Option<V> {
        let hash = self.buckets[at.bucket].hashes[at.slot];
        let value = self.buckets[at.bucket].slots[at.slot].take()?;
        let mut b = Self::home(hash, self.buckets.len());
        while b != at.bucket {
            self.buckets[b].spill -= 1;
            b = self.next(b);
        }
        self.len -= 1;
        Some(value)
    }

    pub(crate) fn remove(&mut self, hash: u32, eq: impl FnMut(&V) -> bool) -> Option<V> {
        let at = self.locate(hash, eq)?;
        self.take(at)
    }

    /// Keeps the entries for which `keep` is true.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&mut V) -> bool) {
        for bucket in 0..self.buckets.len() {
            for slot in 0..WIDTH {
                let drop = match &mut self.buckets[bucket].slots[slot] {
                    Some(v) => !keep(v),
                    None => false,
                };
                if drop {
                    self.take(At { bucket, slot });
                }
            }
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &V> {
        self.buckets.iter().flat_map(|b| b.slots.iter().flatten())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A test entry: a key and a value; its hash is given apart, so that
    /// tests can make many keys share one.
    #[derive(Debug, PartialEq, Clone)]
    struct E(u64, u64);

    fn find(t: &Table<E>, hash: u32, key: u64) -> Option<u64> {
        t.find(hash, |e| e.0 == key).map(|e| e.1)
    }

    /// Checks every invariant of the module comment against a brute-force
    /// count.
    fn check(t: &Table<E>) {
        let n = t.buckets.len();
        let occupied: usize = t
            .buckets
            .iter()
            .map(|b| b.slots.iter().flatten().count())
            .sum();
        assert_eq!(occupied, t.len);
        assert!(n == 0 || t.len < n * WIDTH, "never full");
        let mut spill = vec![0u32; n];
        for (b, bucket) in t.buckets.iter().enumerate() {
            for (slot, v) in bucket.slots.iter().enumerate() {
                if v.is_some() {
                    let mut p = Table::<E>::home(bucket.hashes[slot], n);
                    while p != b {
                        spill[p] += 1;
                        p = (p + 1) % n;
                    }
                }
            }
        }
        let kept: Vec<u32> = t.buckets.iter().map(|b| b.spill).collect();
        assert_eq!(kept, spill);
    }

    #[test]
    fn a_bucket_of_eight_byte_entries_is_one_cache_line() {
        assert_eq!(mem::size_of::<Bucket<Box<u8>>>(), 64);
        assert_eq!(mem::align_of::<Bucket<Box<u8>>>(), 64);
    }

    #[test]
    fn finds_what_was_inserted_and_nothing_else_across_growth() {
        let mut t = Table::default();
        let hash = |k: u64| (k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32;
        for k in 0..10_000u64 {
            t.insert_new(hash(k), E(k, k * 2));
            if k % 997 == 0 {
                check(&t);
            }
        }
        check(&t);
        assert_eq!(t.len(), 10_000);
        for k in 0..10_000u64 {
            assert_eq!(find(&t, hash(k), k), Some(k * 2));
        }
        assert_eq!(find(&t, hash(10_000), 10_000), None);
        // Between 57% and 85% full once grown.
        let load = t.len() as f64 / (t.buckets.len() * WIDTH) as f64;
        assert!((0.56..=0.85).contains(&load), "load {load}");
        let mut seen: Vec<u64> = t.iter().map(|e| e.0).collect();
        seen.sort_unstable();
        assert_eq!(seen, (0..10_000).collect::<Vec<_>>());
    }

    #[test]
    fn keys_of_one_hash_spill_over_wrap_around_and_come_back_on_removal() {
        let mut t = Table::default();
        // All in the last bucket's home, so that they wrap to bucket 0.
        for k in 0..40u64 {
            t.insert_new(u32::MAX, E(k, k));
            check(&t);
        }
        for k in 0..40u64 {
            assert_eq!(find(&t, u32::MAX, k), Some(k));
        }
        // Another hash, whose home is a bucket the spilled keys fill.
        t.insert_new(0, E(1000, 1));
        assert_eq!(find(&t, 0, 1000), Some(1));
        for k in (0..40u64).step_by(3) {
            assert_eq!(t.remove(u32::MAX, |e| e.0 == k), Some(E(k, k)));
            check(&t);
        }
        for k in 0..40u64 {
            let want = (k % 3 != 0).then_some(k);
            assert_eq!(find(&t, u32::MAX, k), want);
        }
        assert_eq!(t.remove(u32::MAX, |e| e.0 == 0), None);
        t.retain(|e| e.0 % 2 == 0);
        check(&t);
        assert_eq!(find(&t, 0, 1000), Some(1));
        assert_eq!(t.len(), t.iter().count());
        assert!(t.iter().all(|e| e.0 % 2 == 0));
    }

    /// Random inserts, removals, updates and retains, with few distinct
    /// hashes (so that spills are common), against a `HashMap`.
    #[test]
    fn random_operations_agree_with_a_hash_map() {
        let mut rng = 0x2545_F491_4F6C_DD1Du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        for hashes in [3u32, 50, u32::MAX] {
            let mut t: Table<E> = Table::default();
            let mut model: HashMap<u64, u64> = HashMap::new();
            let hash = |k: u64| ((k.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as u32) % hashes;
            for step in 0..20_000u64 {
                let k = next() % 600;
                match next() % 5 {
                    0 | 1 => {
                        if let Some(v) = t.find_mut(hash(k), |e| e.0 == k) {
                            v.1 = step;
                        } else {
                            t.insert_new(hash(k), E(k, step));
                        }
                        model.insert(k, step);
                    }
                    2 | 3 => {
                        let got = t.remove(hash(k), |e| e.0 == k).map(|e| e.1);
                        assert_eq!(got, model.remove(&k));
                    }
                    _ if step % 500 == 0 => {
                        let m = next() % 4 + 2;
                        t.retain(|e| e.0 % m != 0);
                        model.retain(|k, _| k % m != 0);
                    }
                    _ => assert_eq!(find(&t, hash(k), k), model.get(&k).copied()),
                }
                if step % 1000 == 0 {
                    check(&t);
                }
            }
            check(&t);
            assert_eq!(t.len(), model.len());
            for (k, v) in &model {
                assert_eq!(find(&t, hash(*k), *k), Some(*v));
            }
        }
    }
}
