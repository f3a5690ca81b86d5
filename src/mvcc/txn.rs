//! Read-write transactions.
//!
//! A transaction reads at its start ts (its snapshot), keeps its writes in a
//! private write set (nothing is visible to anyone else before commit, so
//! nothing ever needs undoing), and commits through the sequencer. Under
//! `Isolation::Serializable` it also records what it read, keys and scanned
//! ranges, and commit refuses it if any of that changed since it began.

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;

use bytes::Bytes;

use super::blob::Blob;
use super::engine::{Inner, check_sizes, check_write};
use super::index::Index;
use super::options::Isolation;
use super::scan::{KeyRange, Scan, as_ref_bounds, is_empty_range, prefix_bounds};
use crate::error::Result;
use crate::sync::Arc;

/// A transaction's writes: key -> new value (`None` deletes), in key order.
/// Each value is built as the blob the index will keep (a tombstone
/// deletes), so that the commit moves it in.
pub(crate) type WriteSet = BTreeMap<Box<[u8]>, Blob>;

type Bounds = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// What a serializable transaction read.
#[derive(Debug, Default)]
pub(crate) struct ReadSet {
    keys: Vec<Box<[u8]>>,
    ranges: Vec<Bounds>,
}

impl ReadSet {
    /// Whether any key read, or any key in a range scanned, has a version
    /// newer than `ts`.
    pub(crate) fn changed_since(&self, index: &Index, ts: u64) -> bool {
        self.keys
            .iter()
            .any(|k| index.latest_ts(k).is_some_and(|t| t > ts))
            || self
                .ranges
                .iter()
                .any(|r| index.changed_in_range(as_ref_bounds(r), ts))
    }
}

/// A read-write transaction (`Engine::begin`). Dropping it rolls it back.
#[derive(Debug)]
pub struct Transaction {
    inner: Arc<Inner>,
    start_ts: u64,
    writes: WriteSet,
    reads: Option<RefCell<ReadSet>>,
    /// Whether this transaction still holds its reader registration.
    registered: bool,
}

impl Transaction {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        let start_ts = inner.readers.register(&inner.visible);
        let reads = (inner.options.isolation == Isolation::Serializable)
            .then(|| RefCell::new(ReadSet::default()));
        Transaction {
            inner,
            start_ts,
            writes: WriteSet::new(),
            reads,
            registered: true,
        }
    }

    /// The ts this transaction reads at.
    pub fn start_ts(&self) -> u64 {
        self.start_ts
    }

    /// The value of `key`: this transaction's own write if it made one, else
    /// the newest version committed at or before its start ts. A copy, as
    /// `Snapshot::get`'s (small values share a chunk: see there).
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>> {
        self.inner.log.check()?;
        let key = key.as_ref();
        check_sizes(key, None)?;
        if let Some(own) = self.writes.get(key) {
            return Ok(own.value().map(super::copy::copy_out));
        }
        if let Some(reads) = &self.reads {
            reads.borrow_mut().keys.push(key.into());
        }
        Ok(self.inner.index.get(key, self.start_ts))
    }

    /// Sets `key` to `value` when the transaction commits.
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> Result<()> {
        self.inner.log.check()?;
        let (key, value) = (key.as_ref(), value.as_ref());
        check_write(key, Some(value))?;
        self.writes.insert(key.into(), Blob::new(key, Some(value)));
        Ok(())
    }

    /// Deletes `key` when the transaction commits.
    pub fn delete(&mut self, key: impl AsRef<[u8]>) -> Result<()> {
        self.inner.log.check()?;
        let key = key.as_ref();
        check_write(key, None)?;
        self.writes.insert(key.into(), Blob::new(key, None));
        Ok(())
    }

    /// The keys in `range` with their values, in key order, at the start ts
    /// with this transaction's own writes laid over.
    pub fn scan(&self, range: impl KeyRange) -> Result<Scan<'_>> {
        self.scan_bounds(range.into_bounds())
    }

    /// The keys that start with `prefix`, as `scan`.
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Result<Scan<'_>> {
        self.scan_bounds(prefix_bounds(prefix.as_ref()))
    }

    fn scan_bounds(&self, bounds: Bounds) -> Result<Scan<'_>> {
        self.inner.log.check()?;
        if is_empty_range(&bounds) {
            // Holds no key: nothing to merge, nothing to validate later
            // (and BTreeMap::range would panic on it).
            return Ok(Scan::new(
                &self.inner.index,
                self.start_ts,
                bounds,
                VecDeque::new(),
            ));
        }
        let overlay: VecDeque<(Bytes, Option<Bytes>)> = self
            .writes
            .range::<[u8], _>(as_ref_bounds(&bounds))
            .map(|(k, b)| {
                let value = b.value().map(Bytes::copy_from_slice);
                (Bytes::copy_from_slice(k), value)
            })
            .collect();
        if let Some(reads) = &self.reads {
            reads.borrow_mut().ranges.push(bounds.clone());
        }
        Ok(Scan::new(&self.inner.index, self.start_ts, bounds, overlay))
    }

    /// Commits: returns the commit ts once the commit is durable (under
    /// `SyncMode::Always`), or `Error::Conflict` if a transaction that
    /// committed after this one began wrote a key this one wrote (or, under
    /// `Serializable`, read). A transaction with no writes commits at its
    /// start ts and writes nothing.
    pub fn commit(mut self) -> Result<u64> {
        let writes = std::mem::take(&mut self.writes);
        let reads = self.reads.take().map(RefCell::into_inner);
        // commit_writes releases the reader registration (as early as it
        // can); Drop must not release it again.
        self.registered = false;
        self.inner
            .commit_writes(self.start_ts, writes, reads.as_ref())
    }

    /// Drops every write; the same as dropping the transaction.
    pub fn rollback(self) {}
}

impl Drop for Transaction {
    fn drop(&mut self) {
        if self.registered {
            self.inner.readers.unregister(self.start_ts);
        }
    }
}
