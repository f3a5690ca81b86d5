//! One shard of the index: a hash map from key to versions for every point
//! operation, and key order kept lazily for scans.
//!
//! Most work is point work (reads by key, installs, GC prunes), and a hash
//! map does it in one or two cache misses where an ordered tree takes one
//! per level. Order is only needed by scans, so it is kept apart and paid
//! for when a scan needs it: a new key is pushed to the pending list of its
//! part (keys are split into 256 parts by their first byte), and a scan
//! first merges the pending keys of the parts it covers into their ordered
//! sets. A workload that never scans a part (the ledger's accounts and
//! transfers) never pays to order it.
//!
//! Invariants: every key in `map` is in its part's `set` or `pending`; a key
//! in `set` or `pending` but not in `map` (removed since) is stale and is
//! skipped by scans and dropped at the next merge.

use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasherDefault;
use std::ops::{Bound, RangeInclusive};

use super::key::{Key, KeyHasher};

/// The keys of one first byte.
#[derive(Debug, Default)]
struct Part {
    set: BTreeSet<Key>,
    pending: Vec<Key>,
}

/// A shard: versions by key, and the keys in order.
#[derive(Debug)]
pub(crate) struct Shard<V> {
    map: HashMap<Key, V, BuildHasherDefault<KeyHasher>>,
    parts: Vec<Option<Box<Part>>>,
}

/// The parts (first bytes) that keys within `bounds` can start with.
pub(crate) fn parts_of(bounds: &(Bound<Key>, Bound<Key>)) -> RangeInclusive<u8> {
    let first = |b: &Bound<Key>, unbounded: u8| match b {
        Bound::Included(k) | Bound::Excluded(k) => k.as_bytes().first().copied().unwrap_or(0),
        Bound::Unbounded => unbounded,
    };
    first(&bounds.0, 0)..=first(&bounds.1, u8::MAX)
}

fn part_of(key: &Key) -> usize {
    usize::from(key.as_bytes().first().copied().unwrap_or(0))
}

impl<V> Default for Shard<V> {
    fn default() -> Self {
        Shard {
            map: HashMap::default(),
            parts: (0..256).map(|_| None).collect(),
        }
    }
}

impl<V> Shard<V> {
    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn get(&self, key: &Key) -> Option<&V> {
        self.map.get(key)
    }

    pub(crate) fn get_mut(&mut self, key: &Key) -> Option<&mut V> {
        self.map.get_mut(key)
    }

    /// Adds a key that is not in the shard.
    pub(crate) fn insert_new(&mut self, key: Key, value: V) {
        let part = self.parts[part_of(&key)].get_or_insert_with(Box::default);
        part.pending.push(key.clone());
        let before = self.map.insert(key, value);
        debug_assert!(before.is_none(), "insert_new of a present key");
    }

    /// Removes a key (from the order too, unless it is still pending: then
    /// the next merge drops it).
    pub(crate) fn remove(&mut self, key: &Key) -> Option<V> {
        let value = self.map.remove(key)?;
        if let Some(part) = &mut self.parts[part_of(key)] {
            part.set.remove(key);
        }
        Some(value)
    }

    /// Keeps the entries for which `keep` is true.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Key, &mut V) -> bool) {
        let mut gone = Vec::new();
        self.map.retain(|k, v| {
            let kept = keep(k, v);
            if !kept {
                gone.push(k.clone());
            }
            kept
        });
        for key in gone {
            if let Some(part) = &mut self.parts[part_of(&key)] {
                part.set.remove(&key);
            }
        }
    }

    /// Whether a scan of these parts must merge first.
    pub(crate) fn has_pending(&self, parts: &RangeInclusive<u8>) -> bool {
        self.parts[usize::from(*parts.start())..=usize::from(*parts.end())]
            .iter()
            .flatten()
            .any(|p| !p.pending.is_empty())
    }

    /// Puts the pending keys of these parts in order.
    pub(crate) fn merge(&mut self, parts: &RangeInclusive<u8>) {
        let map = &self.map;
        for part in self.parts[usize::from(*parts.start())..=usize::from(*parts.end())]
            .iter_mut()
            .flatten()
        {
            if part.pending.is_empty() {
                continue;
            }
            let mut pending = std::mem::take(&mut part.pending);
            pending.sort_unstable();
            pending.dedup();
            part.set
                .extend(pending.into_iter().filter(|k| map.contains_key(k)));
        }
    }

    /// The entries within `bounds`, in key order. The parts they cover must
    /// have been merged.
    pub(crate) fn range<'a>(
        &'a self,
        bounds: &'a (Bound<Key>, Bound<Key>),
    ) -> impl Iterator<Item = (&'a Key, &'a V)> + 'a {
        let parts = parts_of(bounds);
        debug_assert!(!self.has_pending(&parts), "range over unmerged parts");
        self.parts[usize::from(*parts.start())..=usize::from(*parts.end())]
            .iter()
            .flatten()
            .flat_map(move |part| part.set.range((bounds.0.clone(), bounds.1.clone())))
            .filter_map(|k| self.map.get_key_value(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys<V>(shard: &Shard<V>, lo: &[u8], hi: &[u8]) -> Vec<Vec<u8>> {
        let b = (Bound::Included(Key::new(lo)), Bound::Excluded(Key::new(hi)));
        shard
            .range(&b)
            .map(|(k, _)| k.as_bytes().to_vec())
            .collect()
    }

    #[test]
    fn range_sees_merged_keys_in_order_and_skips_removed_ones() {
        let mut s: Shard<u32> = Shard::default();
        for k in [&b"b2"[..], b"a1", b"b1", b"\x00", b"", b"c"] {
            s.insert_new(Key::new(k), 0);
        }
        let all = (Bound::Unbounded, Bound::Unbounded);
        assert!(s.has_pending(&parts_of(&all)));
        s.merge(&parts_of(&all));
        assert!(!s.has_pending(&parts_of(&all)));
        assert_eq!(
            keys(&s, b"", b"\xff"),
            vec![
                b"".to_vec(),
                b"\x00".to_vec(),
                b"a1".to_vec(),
                b"b1".to_vec(),
                b"b2".to_vec(),
                b"c".to_vec()
            ]
        );
        assert_eq!(keys(&s, b"a", b"b2"), vec![b"a1".to_vec(), b"b1".to_vec()]);
        s.remove(&Key::new(b"b1"));
        s.insert_new(Key::new(b"b0"), 1);
        s.remove(&Key::new(b"b0"));
        s.merge(&parts_of(&all));
        assert_eq!(keys(&s, b"b", b"c"), vec![b"b2".to_vec()]);
        s.retain(|k, _| k.as_bytes() != b"c");
        assert_eq!(keys(&s, b"", b"\xff").len(), 4);
        assert_eq!(s.len(), 4);
    }
}
