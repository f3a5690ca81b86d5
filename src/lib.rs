//! mvledger: an embeddable storage engine for money.
//!
//! The core is a multi-version key-value store with snapshot reads and
//! redo-log commit ([`Engine`]): transactions read at a snapshot and commit
//! through one short sequencer, a redo record per commit, synced by
//! leader/follower group commit; recovery replays the log after the newest
//! checkpoint; old versions are collected once no reader can see them.
//!
//! ```
//! use mvledger::{Engine, Options};
//!
//! # fn main() -> mvledger::Result<()> {
//! let dir = tempfile::tempdir()?;
//! let engine = Engine::open(dir.path(), Options::default())?;
//! let mut txn = engine.begin();
//! txn.put(b"alice", b"100")?;
//! txn.put(b"bob", b"0")?;
//! let ts = txn.commit()?; // durable when it returns
//!
//! let snap = engine.snapshot();
//! assert!(snap.ts() >= ts);
//! assert_eq!(snap.get(b"alice")?.as_deref(), Some(&b"100"[..]));
//! # Ok(())
//! # }
//! ```
//!
//! Layers, each a folder: [`wal`] (log framing, segments, group commit,
//! recovery reader, the file-system trait) and `mvcc` (index, transactions,
//! snapshots, GC, checkpoints). The README states the guarantees and the
//! limits; the invariants and the commit protocol are the project's design
//! notes (`ARCHITECTURE.md`, beside the repository, not in it).

#![deny(missing_docs)]
#![warn(clippy::unwrap_used, clippy::expect_used)]

pub mod cluster;
mod error;
pub mod ledger;
mod mvcc;
mod sync;
pub mod wal;

pub use error::{Error, Result};
pub use ledger::{
    Account, AccountBalance, AccountFilter, AccountFilterFlags, AccountFlags, Clock,
    CreateAccountResult, CreateTransferResult, Ledger, LedgerOptions, LedgerSnapshot, ManualClock,
    PendingState, Reply, SystemClock, TIMESTAMP_MAX, Transfer, TransferFlags,
};
pub use mvcc::checkpoint::{CheckpointInfo, verify as verify_checkpoint};
pub use mvcc::{
    Batch, Engine, Isolation, KeyRange, LAYER_KEY, Options, Replay, Scan, SetAside, Snapshot,
    Stats, Transaction,
};
pub use wal::SyncMode;
