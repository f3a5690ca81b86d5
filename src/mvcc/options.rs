//! Engine options.

use std::sync::Arc;

use super::batch::Batch;
use crate::error::Result;
use crate::wal::{FileSystem, StdFs, SyncMode};

/// Re-executes logical records on recovery: the layer that logs its
/// batches with `Batch::log_as` gives the engine this hook.
///
/// The hook also names its layer, and a directory belongs to one layer
/// or to none: `Engine::open` with a hook stamps a new (empty) directory
/// with the layer's name, and refuses one stamped by another layer or
/// holding keys without a stamp (a plain engine's data, which the layer
/// would misread as its records); without a hook it refuses a stamped
/// directory. Each refusal is `Error::InvalidArgument` and changes
/// nothing.
pub trait Replay: Send + Sync + std::fmt::Debug {
    /// Makes, in `batch`, the writes that the logical record `body` made
    /// when it was committed. `batch.get` sees the state just before it.
    fn replay(&self, batch: &mut Batch<'_>, body: &[u8]) -> Result<()>;

    /// The layer's name, as the stamp holds it and errors show it (the
    /// ledger's is `ledger`). Not empty; the same on every open.
    fn layer(&self) -> &'static str;
}

/// How transactions are isolated from each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Isolation {
    /// Snapshot isolation: reads see the snapshot the transaction began at;
    /// of two overlapping transactions that write the same key, the second
    /// to commit gets `Error::Conflict` (first committer wins).
    #[default]
    Snapshot,
    /// Snapshot isolation plus validation of everything read (keys and
    /// scanned ranges): a transaction whose reads were overwritten by a
    /// commit after it began gets `Error::Conflict`. Removes write skew.
    Serializable,
}

/// Options for `Engine::open`.
#[derive(Debug, Clone)]
pub struct Options {
    /// When the redo log is synced. Default: `SyncMode::Always`.
    pub sync: SyncMode,
    /// Transaction isolation. Default: `Isolation::Snapshot`.
    pub isolation: Isolation,
    /// A log segment is sealed and a new one started when the next write
    /// would take it past this size. One write (the commits of one group,
    /// under `Never` and `Interval` buffered up to at most this size) goes
    /// into one segment, so a segment exceeds the size by at most the
    /// last commit of such a write, or a single larger write. While a new
    /// segment cannot be created (a full disk, a directory without write
    /// permission, no file handle left: `Stats::rotations_refused` counts
    /// them), the commits go on in the active segment, up to twice this
    /// size; a refusal past that poisons the engine. Default: 64 MiB.
    pub segment_bytes: u64,
    /// On `open`, truncate the log at a damaged record (and drop every
    /// segment after it) instead of failing with `Error::Corruption`; a
    /// segment whose header is damaged, or that follows a gap in the log,
    /// is dropped whole with every later one. The commits after the damage
    /// are lost: only for an operator who chose so (`recovery_cuts` lists
    /// what went).
    pub repair: bool,
    /// The file system all I/O goes through. Default: `StdFs`.
    pub fs: Arc<dyn FileSystem>,
    /// Re-executes logical records on recovery (set by the ledger). A log
    /// holding logical records cannot be opened without it.
    pub replay: Option<Arc<dyn Replay>>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sync: SyncMode::Always,
            isolation: Isolation::Snapshot,
            segment_bytes: 64 << 20,
            repair: false,
            fs: Arc::new(StdFs),
            replay: None,
        }
    }
}
