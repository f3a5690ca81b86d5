//! `IdSlab`: a batch's cache of records by id, for the state machine.
//!
//! The records sit in one vector, in the order they were added, and a hash
//! table of their positions (4 bytes a slot) finds them by id. Against a
//! hash map holding the records themselves (an account is 160 bytes with
//! its id) the table is small enough to stay in the processor's cache, an
//! insert writes the record once at the end of the vector instead of into
//! a random slot of a big table, and a walk over every record (the writes
//! at the end of a batch) reads the vector in order.
//!
//! Invariants: `index` holds exactly the positions `0..items.len()`, each
//! under the hash of its item's id; no two items have the same id.

use std::hash::Hasher;

use hashbrown::HashTable;

use crate::mvcc::KeyHasher;

/// Records of type `T` by `u128` id, in insertion order.
#[derive(Debug)]
pub(crate) struct IdSlab<T> {
    items: Vec<Entry<T>>,
    index: HashTable<u32>,
}

/// A record and its id, which only the slab may change (the index holds
/// the record's position under the id's hash).
#[derive(Debug)]
pub(crate) struct Entry<T> {
    id: u128,
    pub(crate) value: T,
}

impl<T> Entry<T> {
    pub(crate) fn id(&self) -> u128 {
        self.id
    }
}

fn hash(id: u128) -> u64 {
    let mut h = KeyHasher::default();
    h.write(&id.to_le_bytes());
    h.finish()
}

impl<T> Default for IdSlab<T> {
    fn default() -> Self {
        IdSlab::with_capacity(0)
    }
}

impl<T> IdSlab<T> {
    pub(crate) fn with_capacity(n: usize) -> Self {
        IdSlab {
            items: Vec::with_capacity(n),
            index: HashTable::with_capacity(n),
        }
    }

    pub(crate) fn reserve(&mut self, n: usize) {
        self.items.reserve(n);
        let items = &self.items;
        self.index.reserve(n, |&at| hash(items[at as usize].id));
    }

    /// Removes every record, keeping the room.
    pub(crate) fn clear(&mut self) {
        self.items.clear();
        self.index.clear();
    }

    /// The position of `id`'s record.
    pub(crate) fn position(&self, id: u128) -> Option<usize> {
        let items = &self.items;
        self.index
            .find(hash(id), |&at| items[at as usize].id == id)
            .map(|&at| at as usize)
    }

    pub(crate) fn get(&self, id: u128) -> Option<&T> {
        self.position(id).map(|at| &self.items[at].value)
    }

    pub(crate) fn contains(&self, id: u128) -> bool {
        self.position(id).is_some()
    }

    /// The record at `at` (a position `position` or `push_new` gave).
    pub(crate) fn at_mut(&mut self, at: usize) -> &mut T {
        &mut self.items[at].value
    }

    /// Adds the record of an id known to be absent (the caller looked);
    /// returns its position, which it keeps.
    pub(crate) fn push_new(&mut self, id: u128, value: T) -> usize {
        debug_assert!(!self.contains(id), "push_new of a present id");
        let at = self.items.len();
        let Ok(position) = u32::try_from(at) else {
            // A batch holds at most `MAX_BATCH_EVENTS` events, a few
            // records each: far below 2^32.
            panic!("an IdSlab of 2^32 records");
        };
        self.items.push(Entry { id, value });
        let items = &self.items;
        self.index
            .insert_unique(hash(id), position, |&p| hash(items[p as usize].id));
        at
    }

    /// Adds `value` under `id` unless `id` is present: one probe where
    /// `contains` and `push_new` take two. Returns the new position, or
    /// `None` (and drops `value`) when `id` was there.
    pub(crate) fn push_absent(&mut self, id: u128, value: T) -> Option<usize> {
        let at = self.items.len();
        let Ok(position) = u32::try_from(at) else {
            panic!("an IdSlab of 2^32 records");
        };
        let items = &self.items;
        match self.index.entry(
            hash(id),
            |&p| items[p as usize].id == id,
            |&p| hash(items[p as usize].id),
        ) {
            hashbrown::hash_table::Entry::Occupied(_) => None,
            hashbrown::hash_table::Entry::Vacant(slot) => {
                slot.insert(position);
                self.items.push(Entry { id, value });
                Some(at)
            }
        }
    }

    /// Removes the record added last, if its id is `id` (undoing the
    /// latest `push_new`).
    pub(crate) fn pop(&mut self, id: u128) -> Option<T> {
        let last = self.items.len().checked_sub(1)?;
        if self.items[last].id != id {
            return None;
        }
        let Ok(slot) = self.index.find_entry(hash(id), |&at| at as usize == last) else {
            unreachable!("an item missing from the index");
        };
        slot.remove();
        self.items.pop().map(|e| e.value)
    }

    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    /// The records it has room for.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.items.capacity()
    }

    /// Every record with its id, in insertion order, as a slice.
    pub(crate) fn as_slice(&self) -> &[Entry<T>] {
        &self.items
    }

    /// The records from position `first` on, to change in place (their
    /// ids stay as they are).
    pub(crate) fn tail_mut(&mut self, first: usize) -> &mut [Entry<T>] {
        &mut self.items[first..]
    }

    /// Every record with its id, in insertion order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u128, &T)> {
        self.items.iter().map(|e| (e.id, &e.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u128, u32),
        InsertIfAbsent(u128, u32),
        PopLast,
        /// Adds 1 to every value from this position on (`tail_mut`).
        BumpFrom(usize),
        Clear,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            // Few distinct ids, so that inserts often replace.
            (0u128..40, any::<u32>()).prop_map(|(id, v)| Op::Insert(id << 64 | id, v)),
            (0u128..40, any::<u32>()).prop_map(|(id, v)| Op::InsertIfAbsent(id << 64 | id, v)),
            Just(Op::PopLast),
            (0usize..50).prop_map(Op::BumpFrom),
            // Rarely: a clear empties everything the ops built up.
            (0u8..20).prop_map(|n| if n == 0 { Op::Clear } else { Op::PopLast }),
        ]
    }

    proptest! {
        /// The slab answers as a map from id to value, keeps each id at the
        /// position it was first added at, and lists the ids in that order.
        #[test]
        fn behaves_as_an_ordered_map(ops in proptest::collection::vec(op(), 0..300)) {
            let mut slab = IdSlab::<u32>::with_capacity(4);
            let mut model: HashMap<u128, u32> = HashMap::new();
            let mut order: Vec<u128> = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(id, v) => {
                        // Set in place when present, else added at the end.
                        let at = match slab.position(id) {
                            Some(at) => {
                                *slab.at_mut(at) = v;
                                at
                            }
                            None => {
                                order.push(id);
                                slab.push_new(id, v)
                            }
                        };
                        model.insert(id, v);
                        prop_assert_eq!(Some(at), order.iter().position(|&x| x == id));
                    }
                    Op::InsertIfAbsent(id, v) => {
                        // Added at the end when absent; a present one keeps
                        // its value.
                        let added = slab.push_absent(id, v);
                        if let std::collections::hash_map::Entry::Vacant(slot) = model.entry(id) {
                            prop_assert_eq!(added, Some(order.len()));
                            order.push(id);
                            slot.insert(v);
                        } else {
                            prop_assert_eq!(added, None);
                        }
                    }
                    Op::PopLast => {
                        let Some(&last) = order.last() else {
                            prop_assert_eq!(slab.pop(7), None);
                            continue;
                        };
                        // Only the last id pops.
                        if order.len() > 1 {
                            prop_assert_eq!(slab.pop(order[0]), None);
                        }
                        prop_assert_eq!(slab.pop(last), model.remove(&last));
                        order.pop();
                    }
                    Op::BumpFrom(first) => {
                        let first = first.min(order.len());
                        for e in slab.tail_mut(first) {
                            e.value = e.value.wrapping_add(1);
                        }
                        for id in &order[first..] {
                            let v = model.get_mut(id).unwrap();
                            *v = v.wrapping_add(1);
                        }
                    }
                    Op::Clear => {
                        slab.clear();
                        model.clear();
                        order.clear();
                    }
                }
                prop_assert_eq!(slab.len(), order.len());
                for (id, v) in &model {
                    prop_assert_eq!(slab.get(*id), Some(v));
                }
                prop_assert!(!slab.contains(u128::MAX));
                let listed: Vec<u128> = slab.iter().map(|(id, _)| id).collect();
                prop_assert_eq!(&listed, &order);
            }
        }
    }
}
