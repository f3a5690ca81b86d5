//! An in-memory file system (being written).

/// An in-memory `FileSystem` (being written).
#[derive(Debug, Default)]
pub struct MemFs;
