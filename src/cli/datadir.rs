//! The bench's data directory: the one given with `--dir` (new or empty,
//! always kept; a file or a directory with anything in it is a bad
//! argument, exit code 2), or a new one under the system's temporary directory,
//! removed when the run ends unless `--keep` or a failed verification says
//! to keep it; also when Ctrl-C ends it (`interrupt.rs`).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::bench::Failure;

/// Whether a data directory path (named `shown` in messages) holds
/// anything: `Ok(false)` when it is missing or empty. A file, a path under
/// a file or a symbolic link to nothing is a bad argument (exit 2; no
/// directory can be made there); a directory that cannot be read is the
/// disk's answer (exit 1).
pub fn holds_entries(path: &Path, shown: &str) -> Result<bool, Failure> {
    if !path.exists() && path.symlink_metadata().is_ok() {
        return Err(Failure::bad_argument(format!(
            "{shown} is a symbolic link to nothing"
        )));
    }
    match std::fs::read_dir(path) {
        Ok(mut entries) => Ok(entries.next().is_some()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            Err(Failure::bad_argument(format!("{shown} is not a directory")))
        }
        Err(e) => Err(Failure::new(format!("cannot read {shown}: {e}"))),
    }
}

/// A data directory; a temporary one is removed on drop unless kept.
pub struct DataDir {
    path: PathBuf,
    remove: bool,
}

impl DataDir {
    /// `dir` if given (it must be new or empty), else a new temporary one.
    pub fn new(dir: Option<&Path>, keep: bool) -> Result<DataDir, Failure> {
        if let Some(path) = dir {
            let shown = format!("--dir {}", path.display());
            if holds_entries(path, &shown)? {
                return Err(Failure::bad_argument(format!(
                    "{shown} is not empty: bench needs a new or empty directory"
                )));
            }
            return Ok(DataDir {
                path: path.to_path_buf(),
                remove: false,
            });
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("mvledger-bench-{}-{nanos:09}", std::process::id());
        let path = std::env::temp_dir().join(name);
        // `create_dir`, not `create_dir_all`: fails rather than share a
        // directory that somebody else made.
        std::fs::create_dir(&path)
            .map_err(|e| Failure::new(format!("creating {}: {e}", path.display())))?;
        Ok(DataDir {
            path,
            remove: !keep,
        })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the directory outlives the run.
    pub fn kept(&self) -> bool {
        !self.remove
    }

    /// Keeps the directory after all (evidence of a failed check).
    pub fn keep(&mut self) {
        self.remove = false;
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if self.remove {
            match std::fs::remove_dir_all(&self.path) {
                Err(e) => eprintln!("mvledger: removing {}: {e}", self.path.display()),
                // A run cut short says where its data went; a finished one
                // printed the directory in its header and needs no more.
                Ok(()) if super::interrupt::requested() => {
                    eprintln!("data directory removed: {}", self.path.display());
                }
                Ok(()) => {}
            }
        } else if self.path.exists() {
            eprintln!("data directory kept: {}", self.path.display());
        }
    }
}
