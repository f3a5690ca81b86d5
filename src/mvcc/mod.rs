//! The multi-version key-value core: the versioned index, timestamps,
//! transactions, snapshots, version GC and checkpoints, over the redo log
//! of `wal`.
//!
//! Invariants (ARCHITECTURE.md): no dirty reads (a snapshot at S sees
//! exactly the commits at or below S, each whole); no lost updates (first
//! committer wins); durability (under `SyncMode::Always`, `commit` returns
//! only once its record is synced); atomic commit records; safe GC (no
//! version a live reader can read is reclaimed).

mod batch;
mod blob;
pub(crate) mod checkpoint;
mod copy;
mod engine;
mod gc;
mod index;
mod key;
/// A prefetch hint, also for the ledger's transfer index.
pub(crate) use blob::prefetch;
pub(crate) use index::{bucket_by, by_parts};
/// The hasher of the index's maps, also fast for the ledger's `u128` ids.
pub(crate) use key::KeyHasher;
mod options;
mod readers;
mod scan;
mod shard;
mod snapshot;
mod stats;
mod table;
mod txn;

pub use batch::Batch;
pub(crate) use batch::{OnceWrites, Spares};
pub use engine::{Engine, LAYER_KEY, SetAside};
pub use options::Replay;
pub use options::{Isolation, Options};
pub use scan::{KeyRange, Scan};
pub use snapshot::Snapshot;
pub use stats::Stats;
pub use txn::Transaction;
