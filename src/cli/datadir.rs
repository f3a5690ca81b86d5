//! The bench's data directory: the one given with `--dir` (new or empty,
//! always kept; a file or a directory with anything in it is a bad
//! argument, exit code 2), or a new one under the system's temporary directory,
//! removed when the run ends unless `--keep` or a failed verification says
//! to keep it; also when Ctrl-C ends it (`interrupt.rs`).

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::bench::Failure;

/// Whether `path` is a symbolic link whose target does not exist (no
/// directory can be made there: `mkdir` finds the link).
pub fn is_dangling_link(path: &Path) -> bool {
    !path.exists() && path.symlink_metadata().is_ok()
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
            if is_dangling_link(path) {
                return Err(Failure::bad_argument(format!(
                    "--dir {} is a symbolic link to nothing",
                    path.display()
                )));
            }
            match std::fs::read_dir(path) {
                Ok(mut entries) => {
                    if entries.next().is_some() {
                        return Err(Failure::bad_argument(format!(
                            "--dir {} is not empty: bench needs a new or empty directory",
                            path.display()
                        )));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                    return Err(Failure::bad_argument(format!(
                        "--dir {} is not a directory",
                        path.display()
                    )));
                }
                // Permissions, I/O: the disk's answer, not the argument's.
                Err(e) => return Err(Failure::new(format!("--dir {}: {e}", path.display()))),
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
