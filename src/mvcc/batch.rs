//! `Batch`: the writes of an `Engine::apply` call, computed inside the
//! sequencer against the latest installed state, and the same type handed to
//! the `Replay` hook when recovery re-executes a logical record.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::ops::{Bound, RangeBounds};

use bytes::Bytes;

use super::blob::Blob;
use super::engine::{LAYER_KEY, check_sizes, check_write};
use super::index::{Hashed, Index};
use super::key::{Key, KeyHasher, hash_of};
use super::scan::{Scan, as_ref_bounds};
use crate::error::Result;

/// A batch's writes that may be read back or rewritten: key -> the new
/// version as the index will hold it (a tombstone deletes).
type WriteMap = HashMap<Key, Blob, BuildHasherDefault<KeyHasher>>;

/// The writes of a batch: the map, and the bulk list of keys written once
/// and never read back (`OnceWrites`), which skips the map's probing
/// for the bulk of a ledger batch. No key is in both. Each write is built
/// as the index's blob from the start, so that the install moves it in,
/// and a once-write's key is hashed as it is written, while it is in the
/// processor's cache.
#[derive(Debug, Default)]
pub(crate) struct BatchWrites {
    map: WriteMap,
    once: OnceWrites,
}

/// Writes of keys a batch writes only this once and never reads back
/// (`get` does not see them): the ledger's records at the end of a batch.
/// Cheaper than `Batch::put`: no map. Each comes with its key's hash. They
/// are built apart from the batch, on any thread, and added whole
/// (`Batch::extend_once`): the ledger builds a big batch's records in two
/// parts at once.
#[derive(Debug, Default)]
pub(crate) struct OnceWrites(Vec<Hashed>);

impl OnceWrites {
    /// Sets `key` to `value`, built in `spare` when it is the right size
    /// (`Spares::take`).
    pub(crate) fn put_once(
        &mut self,
        key: &[u8],
        value: &[u8],
        spare: Option<Spare>,
    ) -> Result<()> {
        check_sizes(key, Some(value))?;
        let blob = Blob::reuse(spare.map(|s| s.0), key, Some(value));
        self.0.push((hash_of(key), blob));
        Ok(())
    }

    /// `put_once` for a key that has no version yet and most likely never
    /// gets another (a ledger's transfer, a history entry): its version
    /// goes without room for an older one (`Blob::lone`, 8 bytes less).
    /// Still correct if the key exists: the install then moves the new
    /// version to a blob with that room.
    pub(crate) fn put_new(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        check_sizes(key, Some(value))?;
        self.0.push((hash_of(key), Blob::lone(key, Some(value))));
        Ok(())
    }
}

impl BatchWrites {
    pub(crate) fn len(&self) -> usize {
        self.map.len() + self.once.0.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty() && self.once.0.is_empty()
    }

    /// Every write (key, value or `None` for a delete), in no particular
    /// order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> + Clone {
        self.map
            .values()
            .chain(self.once.0.iter().map(|(_, b)| b))
            .map(|b| (b.key(), b.value()))
    }

    /// Every write with its key's hash, moved out, in no particular order:
    /// the once-writes in their own vector (which the index keeps for a
    /// later batch), the map's in another.
    pub(crate) fn into_hashed_parts(self) -> [Vec<Hashed>; 2] {
        let map = self.map.into_values().map(|b| (hash_of(b.key()), b));
        [self.once.0, map.collect()]
    }
}

/// A buffer left by a pruned version, to build a write in without an
/// allocation (`Spares::take`, `OnceWrites::put_once`).
#[derive(Debug)]
pub(crate) struct Spare(Blob);

impl Spare {
    /// Asks for the lines a write built in this buffer will write, without
    /// waiting for them: a spare buffer is usually cold.
    pub(crate) fn prefetch(&self) {
        self.0.prefetch_for_reuse();
    }
}

/// The index's spare buffers, for the threads building a batch's
/// once-writes (`Batch::spares`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Spares<'a>(&'a Index);

impl Spares<'_> {
    /// Up to `n` spare buffers for writes of a `key_len`-byte key and a
    /// `value_len`-byte value (`Index::take_spare`), to pass to
    /// `OnceWrites::put_once`: a write built in one costs no allocation.
    pub(crate) fn take(self, n: usize, key_len: usize, value_len: usize) -> Vec<Spare> {
        let len = Blob::size(key_len, value_len);
        self.0.take_spare(n, len).into_iter().map(Spare).collect()
    }

    /// Empty once-writes with room for `n` writes, in a vector an earlier
    /// batch emptied when there is one (`Index::take_writes`).
    pub(crate) fn writes(self, n: usize) -> OnceWrites {
        OnceWrites(self.0.take_writes(n))
    }
}

/// Work to run once a batch's writes are installed, before they become
/// visible (`Batch::after_install`).
pub(crate) type AfterInstall = Box<dyn FnOnce() + Send>;

/// A batch of writes computed inside the sequencer (`Engine::apply`), or by
/// the `Replay` hook during recovery.
pub struct Batch<'a> {
    index: &'a Index,
    writes: BatchWrites,
    body: Option<Vec<u8>>,
    after: Option<AfterInstall>,
}

impl std::fmt::Debug for Batch<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("writes", &self.writes)
            .field("body", &self.body.as_ref().map(Vec::len))
            .field("after_install", &self.after.is_some())
            .finish_non_exhaustive()
    }
}

impl<'a> Batch<'a> {
    pub(crate) fn new(index: &'a Index) -> Self {
        Batch {
            index,
            writes: BatchWrites::default(),
            body: None,
            after: None,
        }
    }

    /// Has the engine run `f` once this batch's writes are installed,
    /// inside the sequencer, before any reader can see them; never if the
    /// batch fails, nor during recovery (whose replayed batches drop it).
    /// For what a layer above keeps beside the index, in step with it
    /// (the ledger's history). A second call replaces the first.
    pub(crate) fn after_install(&mut self, f: AfterInstall) {
        self.after = Some(f);
    }

    /// The work `after_install` set, taken out.
    pub(crate) fn take_after_install(&mut self) -> Option<AfterInstall> {
        self.after.take()
    }

    pub(crate) fn into_parts(self) -> (BatchWrites, Option<Vec<u8>>) {
        debug_assert!(
            self.writes
                .once
                .0
                .iter()
                .all(|(_, b)| !self.writes.map.contains_key(&b.index_key())),
            "a key of a once-write was written again"
        );
        (self.writes, self.body)
    }

    /// The newest value of `key`: this batch's own write, else the latest
    /// installed version (committed, possibly not yet durable). A copy.
    pub fn get(&self, key: impl AsRef<[u8]>) -> Option<Bytes> {
        self.get_with(key, |v| v.map(Bytes::copy_from_slice))
    }

    /// Calls `f` with the newest value of `key` (as `get`), without
    /// copying it.
    pub fn get_with<R>(&self, key: impl AsRef<[u8]>, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        let key = key.as_ref();
        match self.writes.map.get(&Key::new(key)) {
            Some(own) => f(own.value()),
            None => self.index.latest_with(key, f),
        }
    }

    /// Calls `fill(value, &mut dest[i])` with the newest value of each key
    /// `keys[i]` (as `get_with`): many lookups at once, faster than one by
    /// one (`Index::latest_into`, whose terms `fill` follows).
    ///
    /// # Panics
    ///
    /// When `dest` and `keys` differ in length.
    pub(crate) fn get_into<K, D>(
        &self,
        keys: &[K],
        dest: &mut [D],
        fill: impl Fn(Option<&[u8]>, &mut D) + Sync,
    ) where
        K: AsRef<[u8]> + Sync,
        D: Send,
    {
        if self.writes.map.is_empty() {
            return self.index.latest_into(keys, dest, fill);
        }
        assert_eq!(keys.len(), dest.len(), "get_into: a destination per key");
        for (key, dest) in keys.iter().zip(dest) {
            self.get_with(key, |value| fill(value, dest));
        }
    }

    /// Brings the newest versions of `keys` into the processor's cache, in
    /// one pass whose cache misses overlap, for lookups one by one that
    /// follow (`Index::warm_keys`). Changes nothing.
    pub(crate) fn warm_many<K: AsRef<[u8]> + Sync>(&self, keys: &[K]) {
        self.index.warm_keys(keys);
    }

    /// Where once-writes built for this batch take spare buffers from: a
    /// handle for any thread building them (`OnceWrites`).
    pub(crate) fn spares(&self) -> Spares<'a> {
        Spares(self.index)
    }

    /// Sets `key` to `value` in this batch (a copy of both).
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        let (key, value) = (key.as_ref(), value.as_ref());
        check_write(key, Some(value))?;
        self.put_checked(key, value);
        Ok(())
    }

    /// Sets the directory's layer stamp (`Engine::open`'s, alone).
    pub(crate) fn put_stamp(&mut self, layer: &[u8]) -> Result<()> {
        check_sizes(LAYER_KEY, Some(layer))?;
        self.put_checked(LAYER_KEY, layer);
        Ok(())
    }

    /// `put` of a key and value already checked.
    fn put_checked(&mut self, key: &[u8], value: &[u8]) {
        self.writes
            .map
            .insert(Key::new(key), Blob::new(key, Some(value)));
    }

    /// Sets `key` to `value`. The value is copied, as `put` does (the
    /// index keeps key and value in one allocation).
    pub fn put_bytes(&mut self, key: impl AsRef<[u8]>, value: Bytes) -> Result<()> {
        self.put(key, value)
    }

    /// Adds once-writes (`OnceWrites`). None of their keys may be written
    /// by this batch otherwise (checked, in debug builds, when the batch is
    /// taken apart).
    pub(crate) fn extend_once(&mut self, writes: OnceWrites) {
        let once = &mut self.writes.once.0;
        let mut emptied = writes.0;
        if once.is_empty() && once.capacity() <= emptied.capacity() {
            std::mem::swap(once, &mut emptied);
        } else {
            once.append(&mut emptied);
        }
        self.index.keep_writes(emptied);
    }

    /// Deletes `key` in this batch.
    pub fn delete(&mut self, key: impl AsRef<[u8]>) -> Result<()> {
        let key = key.as_ref();
        check_write(key, None)?;
        self.writes.map.insert(Key::new(key), Blob::new(key, None));
        Ok(())
    }

    /// Makes room for `additional` more writes (`put`, `delete`).
    pub fn reserve(&mut self, additional: usize) {
        self.writes.map.reserve(additional);
    }

    /// How many keys this batch writes.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// Whether this batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    /// Up to `limit` keys in `bounds` with their newest values (visible or
    /// not yet), this batch's own writes laid over, in key order.
    pub fn scan_latest(
        &self,
        bounds: (Bound<Vec<u8>>, Bound<Vec<u8>>),
        limit: usize,
    ) -> Vec<(Bytes, Bytes)> {
        let mut own: Vec<(Bytes, Option<Bytes>)> = self
            .writes
            .map
            .iter()
            .filter(|(k, _)| RangeBounds::<[u8]>::contains(&as_ref_bounds(&bounds), k.as_bytes()))
            .map(|(k, b)| {
                let value = b.value().map(Bytes::copy_from_slice);
                (Bytes::copy_from_slice(k.as_bytes()), value)
            })
            .collect();
        own.sort_by(|a, b| a.0.cmp(&b.0));
        Scan::new(self.index, u64::MAX, bounds, own.into())
            .take(limit)
            .collect()
    }

    /// Logs this batch as `body` (a logical record) instead of its writes.
    /// On recovery, `Options::replay` gets `body` and must make exactly the
    /// same writes from the same state: the caller's logic must be
    /// deterministic in (state, body). Ignored during replay. An engine
    /// opened without `Options::replay` refuses the batch at `apply`.
    pub fn log_as(&mut self, body: Vec<u8>) {
        self.body = Some(body);
    }
}
