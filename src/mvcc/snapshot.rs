//! Read-only snapshots: a consistent view at one ts. A snapshot registers
//! its ts with the reader registry, so GC keeps every version it can read
//! until it is dropped; it takes no other lock than an index shard's read
//! lock for the moment of a lookup.

use bytes::Bytes;

use super::engine::{Inner, check_sizes};
use super::scan::{KeyRange, Scan, prefix_bounds};
use crate::error::Result;
use crate::sync::Arc;

/// A read-only view of the engine at one ts (`Engine::snapshot`).
#[derive(Debug)]
pub struct Snapshot {
    inner: Arc<Inner>,
    ts: u64,
}

impl Snapshot {
    pub(crate) fn new(inner: Arc<Inner>) -> Self {
        let ts = inner.readers.register(&inner.visible);
        Snapshot { inner, ts }
    }

    /// The ts this snapshot reads at: it sees exactly the commits with a
    /// commit ts at or below it.
    pub fn ts(&self) -> u64 {
        self.ts
    }

    /// The engine's data directory (for errors about what it read).
    pub(crate) fn dir(&self) -> &std::path::Path {
        &self.inner.dir
    }

    /// The value of `key` at this snapshot: a copy. A small value (up to
    /// 512 bytes) shares a 4 KiB chunk with the values read just before
    /// and after it on this thread, so a value kept keeps its chunk:
    /// copy values you keep by the thousand for long (`to_vec`), or read
    /// with `get_with` (`mvcc/copy.rs` says why).
    pub fn get(&self, key: impl AsRef<[u8]>) -> Result<Option<Bytes>> {
        self.inner.log.check()?;
        check_sizes(key.as_ref(), None)?;
        Ok(self.inner.index.get(key.as_ref(), self.ts))
    }

    /// Calls `f` with the value of `key` at this snapshot (`None` when
    /// absent or deleted), borrowed from the engine: `get` without the copy
    /// (over 1M keys with 100-byte values, back-to-back reads take about
    /// 180 ns each against `get`'s 280; one read alone takes about 300-340
    /// ns either way: two cache misses). `f` runs
    /// while a lock of the index is held for reading: keep it short, and do
    /// not call the engine from it (a commit waiting for that lock would
    /// wait for `f`, and `f` for the commit).
    pub fn get_with<R>(
        &self,
        key: impl AsRef<[u8]>,
        f: impl FnOnce(Option<&[u8]>) -> R,
    ) -> Result<R> {
        self.inner.log.check()?;
        check_sizes(key.as_ref(), None)?;
        Ok(self.inner.index.get_with(key.as_ref(), self.ts, f))
    }

    /// The keys in `range` with their values, in key order.
    pub fn scan(&self, range: impl KeyRange) -> Result<Scan<'_>> {
        self.inner.log.check()?;
        Ok(Scan::new(
            &self.inner.index,
            self.ts,
            range.into_bounds(),
            Default::default(),
        ))
    }

    /// The keys that start with `prefix`, in key order.
    pub fn scan_prefix(&self, prefix: impl AsRef<[u8]>) -> Result<Scan<'_>> {
        self.inner.log.check()?;
        Ok(Scan::new(
            &self.inner.index,
            self.ts,
            prefix_bounds(prefix.as_ref()),
            Default::default(),
        ))
    }
}

impl Clone for Snapshot {
    fn clone(&self) -> Self {
        self.inner.readers.register_again(self.ts);
        Snapshot {
            inner: Arc::clone(&self.inner),
            ts: self.ts,
        }
    }
}

impl Drop for Snapshot {
    fn drop(&mut self) {
        self.inner.readers.unregister(self.ts);
    }
}
