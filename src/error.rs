//! The one error type of the engine.
//!
//! Every failure the library can meet is a variant here: a rejected
//! transaction (`Conflict`), damage found on disk (`Corruption`, naming the
//! file and the byte offset), an operating-system failure (`Io`), an engine
//! that lost a sync and must be reopened (`Poisoned`), and a call the engine
//! refuses (`InvalidArgument`). None of them is ever a panic.

use std::fmt;
use std::path::PathBuf;

/// What went wrong. Marked `#[non_exhaustive]`: later layers add variants.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// Another transaction committed a write to a key this transaction wrote
    /// (or, under `Isolation::Serializable`, read) after this one began.
    /// Nothing was applied; the transaction may be retried from the start.
    Conflict,
    /// A file is damaged: a checksum, a length, a header or a sequence does
    /// not check out. Nothing damaged is ever used.
    Corruption {
        /// The damaged file.
        file: PathBuf,
        /// The byte offset in it where the damage starts.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
    /// An operating-system call failed.
    Io(std::io::Error),
    /// A write or sync of the redo log failed earlier. The engine no longer
    /// knows what is durable, so it refuses every call; reopen it to recover
    /// from the log. A commit that got this error (or `Io`) instead of its
    /// timestamp was not acknowledged, and its outcome is unknown: after the
    /// reopen it is either wholly there (its record reached the disk before
    /// the failure) or wholly absent, never in part, and the commits after
    /// it in the log are there only with it.
    Poisoned,
    /// The call is not valid: a key or value too large, a bad option, a
    /// directory that is already open, and the like.
    InvalidArgument(String),
}

/// The result type of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn corruption(
        file: impl Into<PathBuf>,
        offset: u64,
        reason: impl Into<String>,
    ) -> Self {
        Error::Corruption {
            file: file.into(),
            offset,
            reason: reason.into(),
        }
    }

    pub(crate) fn invalid(reason: impl Into<String>) -> Self {
        Error::InvalidArgument(reason.into())
    }

    /// The error of creating the data directory `dir`: a file in its place
    /// or on its path is a bad argument, not an I/O failure.
    pub(crate) fn creating_dir(dir: &std::path::Path, e: std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::AlreadyExists | std::io::ErrorKind::NotADirectory => {
                Error::invalid(format!(
                    "{} is not a directory (a file is in its place or on its path)",
                    dir.display()
                ))
            }
            _ => Error::Io(e),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Conflict => write!(f, "write conflict: another transaction committed first"),
            Error::Corruption {
                file,
                offset,
                reason,
            } => write!(
                f,
                "corruption in {} at offset {offset}: {reason}",
                file.display()
            ),
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Poisoned => write!(
                f,
                "engine poisoned by an earlier failed log write or sync; reopen it"
            ),
            Error::InvalidArgument(reason) => write!(f, "invalid argument: {reason}"),
        }
    }
}

/// No variant has a source: the display of `Io` already holds the I/O
/// error's whole message (what was done, to which path, and the
/// operating system's error), and a reporter that prints the chain would
/// print it again. Match `Error::Io(e)` for the error itself: `e.kind()`,
/// and `e.source()` for the operating system's error (errno and all) of
/// a file-system call.
impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(e)
    }
}

#[cfg(test)]
mod tests {
    use super::Error;
    use crate::wal::{FileSystem, StdFs};

    /// An I/O error of a file-system call says what was done, to which
    /// path, and the operating system's error, once, whether it is
    /// printed alone or with its chain of sources; the operating system's
    /// error stays reachable, errno and all.
    #[test]
    fn an_io_error_prints_its_cause_once_and_keeps_the_errno() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("missing");
        let err = Error::from(StdFs.read(&missing).expect_err("read"));
        let chain: Vec<String> =
            std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
                .map(ToString::to_string)
                .collect();
        let all = chain.join(": ");
        let os = std::io::Error::from_raw_os_error(2).to_string();
        assert_eq!(all.matches(&os).count(), 1, "{all}");
        assert!(all.contains(&missing.display().to_string()), "{all}");
        let Error::Io(io) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        let errno = std::error::Error::source(io)
            .and_then(|s| s.downcast_ref::<std::io::Error>())
            .and_then(std::io::Error::raw_os_error);
        assert_eq!(errno, Some(2));
    }
}
