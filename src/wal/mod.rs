//! The redo log: record framing, segment files, group commit and the
//! recovery reader. Used by `mvcc` only; its file-system trait and the
//! fault-injecting file system are public so that tests can put them under
//! an engine.
//!
//! Invariants:
//! - records carry consecutive timestamps, in commit order, across segments;
//! - a record is acknowledged (under `SyncMode::Always`) only after the
//!   `fdatasync` that covers it returned, and a new segment's directory
//!   entry is synced before anything in it is acknowledged;
//! - a failed write or sync of a record poisons the log: nothing after it
//!   is acknowledged, and the engine must be reopened (a new segment that
//!   cannot be created for want of space, a file handle or permission holds
//!   no record: it is removed, and the records go on in the active segment,
//!   up to twice the segment size);
//! - only a clean close writes a close record (`record::KIND_CLOSE`), last,
//!   once everything before it is synced: recovery takes a bad record
//!   followed by one for damage, never for a torn tail.

pub mod fault;
pub mod fs;
pub mod mem;
pub(crate) mod reader;
pub mod record;
pub mod segment;
pub mod sim;
pub(crate) mod writer;

use std::time::Duration;

pub use fault::{FaultyFs, Op};
pub use fs::{DirLock, FileSystem, StdFs, WritableFile};
pub use mem::MemFs;
pub use reader::TailCut;
pub use sim::SimFs;

/// When the log is synced to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// `commit` returns only after its record is synced (`fdatasync`).
    /// Concurrent commits share syncs (group commit).
    #[default]
    Always,
    /// `commit` returns once its record is buffered: a thread of the
    /// engine's syncs. Syncs begin at most once per interval, counted from
    /// the start of the last one, and a commit's record is in the first
    /// sync that begins after it: one that begins at most this long after
    /// it, or (within a millisecond) as the sync running then ends, should
    /// that take longer. So a commit is durable at most
    /// about an interval plus a sync's time after it returns (up to two
    /// syncs' time on a disk slower than the interval). A crash may lose
    /// the commits of that window, never part of one, and never an older
    /// one.
    Interval(Duration),
    /// The log is written but never synced by a commit (tests, bulk loads).
    /// A crash may lose any suffix of the commits since the last
    /// `Engine::sync`, checkpoint or clean close.
    Never,
}
