//! Engine statistics.

/// A point-in-time view of the engine's counters (`Engine::stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Keys in the index (a key whose only version is a tombstone not yet
    /// collected still counts).
    pub keys: u64,
    /// Versions held in memory.
    pub versions_alive: u64,
    /// Versions reclaimed by GC since open.
    pub versions_reclaimed: u64,
    /// The GC low watermark now.
    pub watermark: u64,
    /// Live transactions and snapshots.
    pub readers: u64,
    /// The newest ts a new snapshot sees.
    pub visible_ts: u64,
    /// The newest ts that is durable on disk.
    pub durable_ts: u64,
    /// Bytes in the log segments on disk.
    pub log_bytes: u64,
    /// Log segment files on disk.
    pub log_segments: u64,
    /// `fdatasync` calls on log segments since open.
    pub syncs: u64,
    /// New log segments that could not be created since open (a full
    /// disk, a directory without write permission, no file handle left):
    /// the commits went on in the active segment, past its size.
    pub rotations_refused: u64,
    /// Transactions committed since open (with at least one write).
    pub commits: u64,
    /// Transactions refused with `Error::Conflict` since open.
    pub conflicts: u64,
    /// Checkpoints written since open.
    pub checkpoints: u64,
    /// The ts of the newest checkpoint on disk (0: none).
    pub checkpoint_ts: u64,
}

impl Stats {
    /// Commits per log sync: what group commit achieved.
    pub fn commits_per_sync(&self) -> f64 {
        if self.syncs == 0 {
            0.0
        } else {
            self.commits as f64 / self.syncs as f64
        }
    }
}
