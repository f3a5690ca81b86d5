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

use std::collections::{BTreeSet, HashMap};
use std::hash::BuildHasherDefault;
use std::ops::{Bound, RangeInclusive};

use super::key::{Key, KeyHasher};

/// The keys of one part, in order (see the invariants).
#[derive(Debug, Default)]
struct Order {
    set: BTreeSet<Key>,
    pending: Vec<Key>,
}

/// The keys of one first byte.
#[derive(Debug)]
struct Part<V> {
    map: HashMap<Key, V, BuildHasherDefault<KeyHasher>>,
    order: Option<Order>,
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

    pub(crate) fn get(&self, key: &Key) -> Option<&V> {
        self.part(key)?.map.get(key)
    }

    pub(crate) fn get_mut(&mut self, key: &Key) -> Option<&mut V> {
        self.parts[part_of(key)].as_deref_mut()?.map.get_mut(key)
    }

    /// Adds a key that is not in the shard.
    pub(crate) fn insert_new(&mut self, key: Key, value: V) {
        let part = self.parts[part_of(&key)].get_or_insert_with(|| {
            Box::new(Part {
                map: HashMap::default(),
                order: None,
            })
        });
        if let Some(order) = &mut part.order {
            order.pending.push(key.clone());
        }
        let before = part.map.insert(key, value);
        debug_assert!(before.is_none(), "insert_new of a present key");
        self.len += 1;
    }

    /// Removes a key (from the order too, unless it is still pending: then
    /// the next merge drops it).
    pub(crate) fn remove(&mut self, key: &Key) -> Option<V> {
        let part = self.parts[part_of(key)].as_deref_mut()?;
        let value = part.map.remove(key)?;
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
                None => part.map.retain(|k, v| keep(k, v)),
                Some(order) => part.map.retain(|k, v| {
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
                        set: map.keys().cloned().collect(),
                        pending: Vec::new(),
                    });
                }
                Some(order) if !order.pending.is_empty() => {
                    let mut pending = std::mem::take(&mut order.pending);
                    pending.sort_unstable();
                    pending.dedup();
                    order
                        .set
                        .extend(pending.into_iter().filter(|k| map.contains_key(k)));
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
                    .filter_map(move |k| part.map.get_key_value(k))
            })
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
    fn a_part_is_ordered_only_once_scanned_and_then_kept_in_order() {
        let mut s: Shard<u32> = Shard::default();
        for i in (0..50u8).rev() {
            s.insert_new(Key::new(&[b't', i]), 0);
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
        s.insert_new(Key::new(&[b't', 200]), 0);
        s.remove(&Key::new(&[b't', 3]));
        assert!(s.has_pending(&parts_of(&t)));
        s.merge(&parts_of(&t));
        let got = keys(&s, b"t", b"u");
        assert_eq!(got.len(), 50);
        assert_eq!(got.last(), Some(&vec![b't', 200]));
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
