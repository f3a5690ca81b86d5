//! One shard of the index: for each first byte of a key (a "part"), a hash
//! map from key to versions for every point operation, and key order kept
//! lazily for scans.
//!
//! Most work is point work (reads by key, installs, GC prunes), and a hash
//! map does it in one or two cache misses where an ordered tree takes one
//! per level. A map per first byte keeps each family of keys together: the
//! ledger's accounts (`a|id`), read and rewritten by every transfer, sit
//! in a map of their own, denser in the cache than one entry per cache
//! line (and per page) among millions of transfers and history entries
//! that are written once and rarely read (5% more transfers/s in
//! `mvledger bench --sync never`, 100,000 accounts, a million transfers).
//!
//! Order is only needed by scans, so it is kept apart and paid for when a
//! scan needs it. A part no scan has covered keeps no order at all (nor a
//! copy of its keys): the first scan that covers it sorts its keys out of
//! its map. From then on, a new key of the part is pushed to its pending
//! list, and a scan first merges the pending keys of the parts it covers
//! into their ordered sets. A workload that never scans a part (the
//! ledger's accounts and transfers) never pays to order it, in time or in
//! memory.
//!
//! Invariants: a part's `order` is `None` (never ordered) or every key of
//! its map is in `order.set` or `order.pending`; a key in `set` or
//! `pending` but not in the map (removed since) is stale and is skipped by
//! scans and dropped at the next merge. `len` is the sum of the maps' sizes.

use std::collections::BTreeSet;
use std::ops::{Bound, RangeInclusive};

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;

use super::key::{Key, hash_of};

/// The keys of one part, in order (see the invariants).
#[derive(Debug, Default)]
struct Order {
    set: BTreeSet<Key>,
    pending: Vec<Key>,
}

/// The keys of one first byte: entries found by the key's `hash_of`,
/// which the caller computes once and passes to every call.
#[derive(Debug)]
struct Part<V> {
    map: HashTable<(Key, V)>,
    order: Option<Order>,
}

/// What a resize needs: the hash of an entry's key.
fn rehash<V>(entry: &(Key, V)) -> u64 {
    hash_of(entry.0.as_bytes())
}

impl<V> Part<V> {
    fn get(&self, hash: u64, key: &Key) -> Option<&(Key, V)> {
        debug_assert_eq!(hash, hash_of(key.as_bytes()), "a hash of another key");
        self.map.find(hash, |(k, _)| k == key)
    }
}

/// A shard: versions by key, and the keys in order.
#[derive(Debug)]
pub(crate) struct Shard<V> {
    parts: Vec<Option<Box<Part<V>>>>,
    len: usize,
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

fn indexes(parts: &RangeInclusive<u8>) -> RangeInclusive<usize> {
    usize::from(*parts.start())..=usize::from(*parts.end())
}

impl<V> Default for Shard<V> {
    fn default() -> Self {
        Shard {
            parts: (0..256).map(|_| None).collect(),
            len: 0,
        }
    }
}

impl<V> Shard<V> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn part(&self, key: &Key) -> Option<&Part<V>> {
        self.parts[part_of(key)].as_deref()
    }

    fn part_mut(&mut self, key: &Key) -> &mut Part<V> {
        self.parts[part_of(key)].get_or_insert_with(|| {
            Box::new(Part {
                map: HashTable::new(),
                order: None,
            })
        })
    }

    /// The value of `key`, whose `hash_of` is `hash`.
    pub(crate) fn get(&self, hash: u64, key: &Key) -> Option<&V> {
        self.part(key)?.get(hash, key).map(|(_, v)| v)
    }

    pub(crate) fn get_mut(&mut self, hash: u64, key: &Key) -> Option<&mut V> {
        debug_assert_eq!(hash, hash_of(key.as_bytes()), "a hash of another key");
        let part = self.parts[part_of(key)].as_deref_mut()?;
        part.map.find_mut(hash, |(k, _)| k == key).map(|(_, v)| v)
    }

    /// One probe for `key` (whose `hash_of` is `hash`): when present,
    /// `present(key, data, value)`; when absent, `absent(&key, data)`
    /// gives the value to add (and the answer).
    pub(crate) fn upsert<T, R>(
        &mut self,
        hash: u64,
        key: Key,
        data: T,
        present: impl FnOnce(Key, T, &mut V) -> R,
        absent: impl FnOnce(&Key, T) -> (V, R),
    ) -> R {
        debug_assert_eq!(hash, hash_of(key.as_bytes()), "a hash of another key");
        let part = self.part_mut(&key);
        match part.map.entry(hash, |(k, _)| *k == key, rehash) {
            Entry::Occupied(mut slot) => present(key, data, &mut slot.get_mut().1),
            Entry::Vacant(slot) => {
                let (value, answer) = absent(&key, data);
                if let Some(order) = &mut part.order {
                    order.pending.push(key.clone());
                }
                slot.insert((key, value));
                self.len += 1;
                answer
            }
        }
    }

    /// Adds a key that is not in the shard (tests build shards with it;
    /// the index goes through `upsert`).
    #[cfg(test)]
    pub(crate) fn insert_new(&mut self, hash: u64, key: Key, value: V) {
        let part = self.part_mut(&key);
        debug_assert!(
            part.get(hash, &key).is_none(),
            "insert_new of a present key"
        );
        if let Some(order) = &mut part.order {
            order.pending.push(key.clone());
        }
        part.map.insert_unique(hash, (key, value), rehash);
        self.len += 1;
    }

    /// Removes a key (from the order too, unless it is still pending: then
    /// the next merge drops it).
    pub(crate) fn remove(&mut self, hash: u64, key: &Key) -> Option<V> {
        debug_assert_eq!(hash, hash_of(key.as_bytes()), "a hash of another key");
        let part = self.parts[part_of(key)].as_deref_mut()?;
        let Ok(slot) = part.map.find_entry(hash, |(k, _)| k == key) else {
            return None;
        };
        let ((_, value), _) = slot.remove();
        if let Some(order) = &mut part.order {
            order.set.remove(key);
        }
        self.len -= 1;
        Some(value)
    }

    /// Keeps the entries for which `keep` is true.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&Key, &mut V) -> bool) {
        for part in self.parts.iter_mut().flatten() {
            let before = part.map.len();
            match &mut part.order {
                None => part.map.retain(|(k, v)| keep(k, v)),
                Some(order) => part.map.retain(|(k, v)| {
                    let kept = keep(k, v);
                    if !kept {
                        order.set.remove(k);
                    }
                    kept
                }),
            }
            self.len -= before - part.map.len();
        }
    }

    /// Whether a scan of these parts must merge first (a part never
    /// ordered, or one with pending keys).
    pub(crate) fn has_pending(&self, parts: &RangeInclusive<u8>) -> bool {
        self.parts[indexes(parts)]
            .iter()
            .flatten()
            .any(|p| p.order.as_ref().is_none_or(|o| !o.pending.is_empty()))
    }

    /// Puts the keys of these parts in order: sorts the keys of a part
    /// never ordered out of its map, and merges the pending keys of the
    /// others.
    pub(crate) fn merge(&mut self, parts: &RangeInclusive<u8>) {
        for part in self.parts[indexes(parts)].iter_mut().flatten() {
            let Part { map, order } = &mut **part;
            match order {
                None => {
                    *order = Some(Order {
                        set: map.iter().map(|(k, _)| k.clone()).collect(),
                        pending: Vec::new(),
                    });
                }
                Some(order) if !order.pending.is_empty() => {
                    let mut pending = std::mem::take(&mut order.pending);
                    pending.sort_unstable();
                    pending.dedup();
                    order.set.extend(
                        pending
                            .into_iter()
                            .filter(|k| map.find(hash_of(k.as_bytes()), |(m, _)| m == k).is_some()),
                    );
                }
                Some(_) => {}
            }
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
        self.parts[indexes(&parts)]
            .iter()
            .flatten()
            .flat_map(move |part| {
                let set = part.order.as_ref().map(|o| &o.set).into_iter();
                set.flat_map(move |set| set.range((bounds.0.clone(), bounds.1.clone())))
                    .filter_map(move |k| part.get(hash_of(k.as_bytes()), k))
                    .map(|(k, v)| (k, v))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(key: &[u8]) -> u64 {
        hash_of(key)
    }

    fn keys<V>(shard: &Shard<V>, lo: &[u8], hi: &[u8]) -> Vec<Vec<u8>> {
        let b = (Bound::Included(Key::new(lo)), Bound::Excluded(Key::new(hi)));
        shard
            .range(&b)
            .map(|(k, _)| k.as_bytes().to_vec())
            .collect()
    }

    #[test]
    fn a_part_is_ordered_only_once_scanned_and_then_kept_in_order() {
        let mut s: Shard<u32> = Shard::default();
        for i in (0..50u8).rev() {
            s.insert_new(h(&[b't', i]), Key::new(&[b't', i]), 0);
        }
        // Never scanned: no order, no copy of the keys.
        let part =
            |s: &Shard<u32>, b: u8| s.parts[usize::from(b)].as_ref().map(|p| p.order.is_some());
        assert_eq!(part(&s, b't'), Some(false));
        let t = (
            Bound::Included(Key::new(b"t")),
            Bound::Excluded(Key::new(b"u")),
        );
        assert!(s.has_pending(&parts_of(&t)));
        s.merge(&parts_of(&t));
        assert!(!s.has_pending(&parts_of(&t)));
        let got = keys(&s, b"t", b"u");
        assert_eq!(got.len(), 50);
        assert!(got.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(part(&s, b't'), Some(true));
        // A part with no keys has no map either.
        assert_eq!(part(&s, b'a'), None);
        // Once ordered, new keys are pending until the next merge.
        s.insert_new(h(&[b't', 200]), Key::new(&[b't', 200]), 0);
        s.remove(h(&[b't', 3]), &Key::new(&[b't', 3]));
        assert!(s.has_pending(&parts_of(&t)));
        s.merge(&parts_of(&t));
        let got = keys(&s, b"t", b"u");
        assert_eq!(got.len(), 50);
        assert_eq!(got.last(), Some(&vec![b't', 200]));
    }

    #[test]
    fn upsert_updates_a_present_key_and_adds_an_absent_one_once() {
        let mut s: Shard<u32> = Shard::default();
        let t = (
            Bound::Included(Key::new(b"k")),
            Bound::Excluded(Key::new(b"l")),
        );
        // The part is ordered before the upserts, so that what they add
        // goes to its pending keys.
        s.insert_new(h(b"k"), Key::new(b"k"), 0);
        s.merge(&parts_of(&t));
        assert!(!s.has_pending(&parts_of(&t)));
        for round in 0..3u32 {
            for i in 0..100u8 {
                let key = [b'k', i];
                let added = s.upsert(
                    h(&key),
                    Key::new(&key),
                    round,
                    |_, round, v| {
                        *v += round;
                        false
                    },
                    |_, round| (round, true),
                );
                assert_eq!(added, round == 0, "key {i} round {round}");
            }
        }
        assert_eq!(s.len(), 101);
        assert_eq!(s.get(h(b"k\x07"), &Key::new(b"k\x07")), Some(&3));
        // The keys it added are pending, then in order.
        assert!(s.has_pending(&parts_of(&t)));
        s.merge(&parts_of(&t));
        let got = keys(&s, b"k", b"l");
        assert_eq!(got.len(), 101);
        assert!(got.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn range_sees_merged_keys_in_order_and_skips_removed_ones() {
        let mut s: Shard<u32> = Shard::default();
        for k in [&b"b2"[..], b"a1", b"b1", b"\x00", b"", b"c"] {
            s.insert_new(h(k), Key::new(k), 0);
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
        s.remove(h(b"b1"), &Key::new(b"b1"));
        s.insert_new(h(b"b0"), Key::new(b"b0"), 1);
        s.remove(h(b"b0"), &Key::new(b"b0"));
        s.merge(&parts_of(&all));
        assert_eq!(keys(&s, b"b", b"c"), vec![b"b2".to_vec()]);
        s.retain(|k, _| k.as_bytes() != b"c");
        assert_eq!(keys(&s, b"", b"\xff").len(), 4);
        assert_eq!(s.len(), 4);
    }
}
