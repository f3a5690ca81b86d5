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

use super::key::{Key, hash_of};
use super::table::Table;

/// The keys of one part, in order (see the invariants).
#[derive(Debug, Default)]
struct Order {
    set: BTreeSet<Key>,
    pending: Vec<Key>,
}

/// What the shard's maps hold: a value that knows its key.
pub(crate) trait Keyed {
    fn key(&self) -> &[u8];
}

/// The hash the maps use for a key whose `hash_of` is `hash`: its low 32
/// bits, which the map keeps beside each entry (`table.rs`), so that its
/// growth reads no key. The index picks the shard from bits 40..46, which
/// leave the map's bits free to vary.
fn table_hash(hash: u64) -> u32 {
    hash as u32
}

/// The keys of one first byte: entries found by the key's `hash_of`,
/// which the caller computes once and passes to every call.
#[derive(Debug)]
struct Part<V> {
    map: Table<V>,
    order: Option<Order>,
}

/// Whether entry `v` is the key `key` (the map compares it only for
/// entries whose kept hash bits are the key's).
fn is<V: Keyed>(v: &V, key: &[u8]) -> bool {
    v.key() == key
}

impl<V: Keyed> Part<V> {
    fn get(&self, hash: u64, key: &[u8]) -> Option<&V> {
        debug_assert_eq!(hash, hash_of(key), "a hash of another key");
        self.map.find(table_hash(hash), |v| is(v, key))
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

fn part_of(key: &[u8]) -> usize {
    usize::from(key.first().copied().unwrap_or(0))
}

/// `part_of` the key whose `hash_of` is `hash`: its top byte.
fn part_of_hash(hash: u64) -> usize {
    (hash >> 56) as usize
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

impl<V: Keyed> Shard<V> {
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn part(&self, key: &[u8]) -> Option<&Part<V>> {
        self.parts[part_of(key)].as_deref()
    }

    fn part_mut(&mut self, key: &[u8]) -> &mut Part<V> {
        self.parts[part_of(key)].get_or_insert_with(|| {
            Box::new(Part {
                map: Table::default(),
                order: None,
            })
        })
    }

    /// Every entry of the keys starting with `first`, in no order.
    pub(crate) fn part_entries(&self, first: u8) -> impl Iterator<Item = &V> {
        self.parts[usize::from(first)]
            .as_deref()
            .into_iter()
            .flat_map(|part| part.map.iter())
    }

    /// The entry of `key`, whose `hash_of` is `hash`.
    pub(crate) fn get(&self, hash: u64, key: &[u8]) -> Option<&V> {
        self.part(key)?.get(hash, key)
    }

    /// Asks for the line where the entry of the key whose `hash_of` is
    /// `hash` is looked for first, without waiting for it (a hint). Reads
    /// no key: the part is in the hash.
    pub(crate) fn prefetch(&self, hash: u64) {
        if let Some(part) = self.parts[part_of_hash(hash)].as_deref() {
            part.map.prefetch(table_hash(hash));
        }
    }

    /// The entry whose kept hash bits are those of `hash` (a key's
    /// `hash_of`), keys not compared: usually that key's, but maybe
    /// another's. A hint, for passes that only bring entries into the
    /// cache: it waits for the map's bucket, not for the key behind the
    /// entry, and reads no key.
    pub(crate) fn peek(&self, hash: u64) -> Option<&V> {
        let part = self.parts[part_of_hash(hash)].as_deref()?;
        part.map.find(table_hash(hash), |_| true)
    }

    pub(crate) fn get_mut(&mut self, hash: u64, key: &[u8]) -> Option<&mut V> {
        debug_assert_eq!(hash, hash_of(key), "a hash of another key");
        let part = self.parts[part_of(key)].as_deref_mut()?;
        part.map.find_mut(table_hash(hash), |v| is(v, key))
    }

    /// One probe for the key `key_of(&data)` (whose `hash_of` is `hash`):
    /// when present, `present(data, entry)`; when absent, `absent(data)`
    /// gives the entry to add (whose key must be that key) and the answer.
    pub(crate) fn upsert<T, R>(
        &mut self,
        hash: u64,
        data: T,
        key_of: impl Fn(&T) -> &[u8],
        present: impl FnOnce(T, &mut V) -> R,
        absent: impl FnOnce(T) -> (V, R),
    ) -> R {
        let key = key_of(&data);
        debug_assert_eq!(hash, hash_of(key), "a hash of another key");
        let part = self.part_mut(key);
        let pending = part.order.is_some().then(|| Key::new(key));
        let found = part.map.locate(table_hash(hash), |v| is(v, key));
        match found.and_then(|at| part.map.at_mut(at)) {
            Some(entry) => present(data, entry),
            None => {
                let (value, answer) = absent(data);
                debug_assert!(pending.as_ref().is_none_or(|k| k.as_bytes() == value.key()));
                if let (Some(order), Some(key)) = (&mut part.order, pending) {
                    order.pending.push(key);
                }
                part.map.insert_new(table_hash(hash), value);
                self.len += 1;
                answer
            }
        }
    }

    /// Adds an entry whose key is not in the shard (tests build shards
    /// with it; the index goes through `upsert`).
    #[cfg(test)]
    pub(crate) fn insert_new(&mut self, hash: u64, value: V) {
        let key = Key::new(value.key());
        let part = self.part_mut(key.as_bytes());
        debug_assert!(
            part.get(hash, key.as_bytes()).is_none(),
            "insert_new of a present key"
        );
        if let Some(order) = &mut part.order {
            order.pending.push(key);
        }
        part.map.insert_new(table_hash(hash), value);
        self.len += 1;
    }

    /// Removes a key (from the order too, unless it is still pending: then
    /// the next merge drops it).
    pub(crate) fn remove(&mut self, hash: u64, key: &[u8]) -> Option<V> {
        debug_assert_eq!(hash, hash_of(key), "a hash of another key");
        let part = self.parts[part_of(key)].as_deref_mut()?;
        let value = part.map.remove(table_hash(hash), |v| is(v, key))?;
        if let Some(order) = &mut part.order {
            order.set.remove(&Key::new(key));
        }
        self.len -= 1;
        Some(value)
    }

    /// Keeps the entries for which `keep` is true.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&mut V) -> bool) {
        for part in self.parts.iter_mut().flatten() {
            let before = part.map.len();
            match &mut part.order {
                None => part.map.retain(|v| keep(v)),
                Some(order) => part.map.retain(|v| {
                    let kept = keep(v);
                    if !kept {
                        order.set.remove(&Key::new(v.key()));
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
                        set: map.iter().map(|v| Key::new(v.key())).collect(),
                        pending: Vec::new(),
                    });
                }
                Some(order) if !order.pending.is_empty() => {
                    let mut pending = std::mem::take(&mut order.pending);
                    pending.sort_unstable();
                    pending.dedup();
                    order.set.extend(pending.into_iter().filter(|k| {
                        let k = k.as_bytes();
                        let hash = hash_of(k);
                        map.find(table_hash(hash), |v| is(v, k)).is_some()
                    }));
                }
                Some(_) => {}
            }
        }
    }

    /// The entries within `bounds`, in key order, with their keys. The
    /// parts they cover must have been merged.
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
                    .filter_map(move |k| {
                        let v = part.get(hash_of(k.as_bytes()), k.as_bytes())?;
                        Some((k, v))
                    })
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(key: &[u8]) -> u64 {
        hash_of(key)
    }

    /// A test entry: a key and a number.
    #[derive(Debug, PartialEq)]
    struct E(Vec<u8>, u32);

    impl Keyed for E {
        fn key(&self) -> &[u8] {
            &self.0
        }
    }

    fn e(key: &[u8], n: u32) -> E {
        E(key.to_vec(), n)
    }

    fn keys(shard: &Shard<E>, lo: &[u8], hi: &[u8]) -> Vec<Vec<u8>> {
        let b = (Bound::Included(Key::new(lo)), Bound::Excluded(Key::new(hi)));
        shard
            .range(&b)
            .map(|(k, _)| k.as_bytes().to_vec())
            .collect()
    }

    #[test]
    fn a_part_is_ordered_only_once_scanned_and_then_kept_in_order() {
        let mut s: Shard<E> = Shard::default();
        for i in (0..50u8).rev() {
            s.insert_new(h(&[b't', i]), e(&[b't', i], 0));
        }
        // Never scanned: no order, no copy of the keys.
        let part =
            |s: &Shard<E>, b: u8| s.parts[usize::from(b)].as_ref().map(|p| p.order.is_some());
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
        s.insert_new(h(&[b't', 200]), e(&[b't', 200], 0));
        s.remove(h(&[b't', 3]), &[b't', 3]);
        assert!(s.has_pending(&parts_of(&t)));
        s.merge(&parts_of(&t));
        let got = keys(&s, b"t", b"u");
        assert_eq!(got.len(), 50);
        assert_eq!(got.last(), Some(&vec![b't', 200]));
    }

    #[test]
    fn upsert_updates_a_present_key_and_adds_an_absent_one_once() {
        let mut s: Shard<E> = Shard::default();
        let t = (
            Bound::Included(Key::new(b"k")),
            Bound::Excluded(Key::new(b"l")),
        );
        // The part is ordered before the upserts, so that what they add
        // goes to its pending keys.
        s.insert_new(h(b"k"), e(b"k", 0));
        s.merge(&parts_of(&t));
        assert!(!s.has_pending(&parts_of(&t)));
        for round in 0..3u32 {
            for i in 0..100u8 {
                let key = [b'k', i];
                let added = s.upsert(
                    h(&key),
                    (key, round),
                    |(key, _)| &key[..],
                    |(_, round), v| {
                        v.1 += round;
                        false
                    },
                    |(key, round)| (e(&key, round), true),
                );
                assert_eq!(added, round == 0, "key {i} round {round}");
            }
        }
        assert_eq!(s.len(), 101);
        assert_eq!(s.get(h(b"k\x07"), b"k\x07"), Some(&e(b"k\x07", 3)));
        // The keys it added are pending, then in order.
        assert!(s.has_pending(&parts_of(&t)));
        s.merge(&parts_of(&t));
        let got = keys(&s, b"k", b"l");
        assert_eq!(got.len(), 101);
        assert!(got.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn range_sees_merged_keys_in_order_and_skips_removed_ones() {
        let mut s: Shard<E> = Shard::default();
        for k in [&b"b2"[..], b"a1", b"b1", b"\x00", b"", b"c"] {
            s.insert_new(h(k), e(k, 0));
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
        s.remove(h(b"b1"), b"b1");
        s.insert_new(h(b"b0"), e(b"b0", 1));
        s.remove(h(b"b0"), b"b0");
        s.merge(&parts_of(&all));
        assert_eq!(keys(&s, b"b", b"c"), vec![b"b2".to_vec()]);
        s.retain(|v| v.0 != b"c");
        assert_eq!(keys(&s, b"", b"\xff").len(), 4);
        assert_eq!(s.len(), 4);
    }
}
