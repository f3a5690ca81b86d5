//! The file-system trait: every byte the engine reads or writes on disk goes
//! through one `FileSystem`, so that tests can put a fault-injecting or
//! power-loss-simulating implementation in its place.
//!
//! The trait is small on purpose: create a directory, list it, create or
//! reopen a file for appending, read a whole file, truncate, rename, remove,
//! sync a directory and take an exclusive lock. `StdFs` maps each call to
//! `std::fs` one to one.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// A file opened for appending. Writes go right after the last byte
/// appended; `sync_data` makes all of them durable (`fdatasync`).
pub trait WritableFile: Send + fmt::Debug {
    /// Appends all of `buf`, or fails.
    fn append(&mut self, buf: &[u8]) -> io::Result<()>;
    /// Makes every byte appended so far durable.
    fn sync_data(&mut self) -> io::Result<()>;
    /// May make the file `len` bytes long, with zeros past the last byte
    /// appended (appends still go right after that byte, over the zeros),
    /// and says whether it did. An append that stays within the file's
    /// length changes no metadata, so its `fdatasync` writes the data
    /// alone: on this machine's disk, 92 us against 130 us for one that
    /// grows the file. The default does nothing. On an error the file
    /// must be as it was (its length too): the log goes on without zeros
    /// ahead when the error says the disk is full (`is_full`).
    fn zero_to(&mut self, len: u64) -> io::Result<bool> {
        let _ = len;
        Ok(false)
    }
    /// May cut the file to `len` bytes (or extend it with zeros) through
    /// this handle, durably (as `set_len` and then `sync_all`), the next
    /// append going right after byte `len`; says whether it did. Through
    /// the open handle the cut needs no new file handle, where
    /// `FileSystem::truncate` opens the file. The default does nothing: the
    /// log then cuts the file by its path and opens it again.
    fn set_len(&mut self, len: u64) -> io::Result<bool> {
        let _ = len;
        Ok(false)
    }
}

/// Whether `e` says the disk (or the user's quota on it, or the size a
/// file may have) is full.
pub(crate) fn is_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::FileTooLarge
    )
}

/// An exclusive lock on a data directory, released when dropped.
pub trait DirLock: Send + Sync + fmt::Debug {}

/// The file-system calls the engine makes.
pub trait FileSystem: Send + Sync + fmt::Debug + 'static {
    /// Creates `dir` and its parents if missing.
    fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// The names of the files directly in `dir`, a link to a file counting
    /// as the file (it is read and written as the file).
    fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// The names of the other entries directly in `dir`, with what each is
    /// ("a directory", "a link to nothing", ...): `open` refuses one under
    /// a segment's or a checkpoint's name rather than pass over it. None by
    /// default (a file system of files only).
    fn non_files(&self, dir: &Path) -> io::Result<Vec<(String, &'static str)>> {
        let _ = dir;
        Ok(Vec::new())
    }
    /// Creates `path` empty (truncating any file there) for appending.
    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>>;
    /// Opens the existing file `path` for appending at its end.
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>>;
    /// Reads the whole of `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// The first `len` bytes of `path` (fewer if it is shorter).
    fn read_prefix(&self, path: &Path, len: usize) -> io::Result<Vec<u8>> {
        let mut bytes = self.read(path)?;
        bytes.truncate(len);
        Ok(bytes)
    }
    /// The size of `path` in bytes.
    fn size(&self, path: &Path) -> io::Result<u64>;
    /// Cuts `path` to `len` bytes and syncs it.
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()>;
    /// Renames `from` to `to`, replacing `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes the file `path`.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries (creations, renames, removals) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on `path` (created if missing); fails with
    /// `WouldBlock` when another holder has it.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>>;
}

/// Fails unless `path` is a file (or a link to one): opening a pipe, say,
/// would wait for a writer that never comes.
fn regular(path: &Path) -> io::Result<()> {
    if std::fs::metadata(path)
        .map_err(at("opening", path))?
        .is_file()
    {
        Ok(())
    } else {
        Err(not_a_file(path))
    }
}

fn not_a_file(path: &Path) -> io::Error {
    io::Error::other(format!(
        "{} is not a file (a directory, a pipe or a device)",
        path.display()
    ))
}

/// The real file system, through `std::fs`. Its errors name the call and
/// the path ("writing /data/00000000000000000001.wal: No space left on
/// device"), with the error's kind kept.
#[derive(Debug, Default, Clone, Copy)]
pub struct StdFs;

/// What an entry of a directory is, when it is not a file: "a directory",
/// "a link to nothing", ...; `Ok(None)` for a file or a link to one (a
/// link to a segment is the segment); `Err` when it cannot be told.
type EntryKind = io::Result<Option<&'static str>>;

/// The entries of `dir`, sorted by name, each with its `EntryKind`. A name
/// that is not UTF-8 is none the engine uses, and is left out.
fn entries(dir: &Path) -> io::Result<Vec<(String, EntryKind)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(at("listing", dir))? {
        let entry = entry.map_err(at("listing", dir))?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let path = entry.path();
        // `metadata` follows a link; it fails on a link to nothing.
        let kind = match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(None),
            Ok(m) if m.is_dir() => Ok(Some("a directory")),
            Ok(_) => Ok(Some("a pipe, a socket or a device")),
            Err(_) if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_symlink()) => {
                Ok(Some("a link to nothing (or one that cannot be followed)"))
            }
            Err(e) => Err(at("reading", &path)(e)),
        };
        found.push((name, kind));
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(found)
}

/// Adds what was done to which path to an error, keeping its kind, and
/// the operating system's error itself as its source (for its
/// `raw_os_error`): `std::error::Error::source` of the returned error.
fn at<'a>(doing: &'a str, path: &'a Path) -> impl FnOnce(io::Error) -> io::Error + 'a {
    move |e| {
        io::Error::new(
            e.kind(),
            AtPath {
                doing: format!("{doing} {}", path.display()),
                error: e,
            },
        )
    }
}

/// An error of `StdFs`: what was done, to which path, and the error met.
#[derive(Debug)]
struct AtPath {
    doing: String,
    error: io::Error,
}

impl std::fmt::Display for AtPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.doing, self.error)
    }
}

impl std::error::Error for AtPath {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// A file of `StdFs`: appends go to `end` (positioned writes, so that a
/// zeroed tail, `zero_to`, can lie past it); `len` is the file's length.
#[derive(Debug)]
struct StdFile {
    file: File,
    path: PathBuf,
    end: u64,
    len: u64,
}

impl StdFile {
    fn new(file: File, path: &Path) -> io::Result<StdFile> {
        let len = file
            .metadata()
            .map_err(at("reading the size of", path))?
            .len();
        Ok(StdFile {
            file,
            path: path.to_path_buf(),
            end: len,
            len,
        })
    }
}

impl WritableFile for StdFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file
            .write_all_at(buf, self.end)
            .map_err(at("writing", &self.path))?;
        self.end += buf.len() as u64;
        self.len = self.len.max(self.end);
        Ok(())
    }

    fn zero_to(&mut self, len: u64) -> io::Result<bool> {
        use std::os::unix::fs::FileExt;
        if len > self.len {
            let zeros = vec![0u8; usize::try_from(len - self.len).unwrap_or(usize::MAX)];
            if let Err(e) = self.file.write_all_at(&zeros, self.len) {
                // Part of the zeros may be in: the file goes back to its
                // length, so that no zeros lie where the log does not
                // know of them (a sealed segment must end at its last
                // record). If that fails too, the file is in doubt.
                let e = at("laying zeros ahead of the log in", &self.path)(e);
                self.file.set_len(self.len).map_err(|undo| {
                    io::Error::new(e.kind(), format!("{e}; and cutting them back: {undo}"))
                })?;
                return Err(e);
            }
            self.len = len;
        }
        Ok(true)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.file.sync_data().map_err(at("syncing", &self.path))
    }

    fn set_len(&mut self, len: u64) -> io::Result<bool> {
        self.file
            .set_len(len)
            .and_then(|()| self.file.sync_all())
            .map_err(at("cutting", &self.path))?;
        self.end = len;
        self.len = len;
        Ok(true)
    }
}

#[derive(Debug)]
struct StdLock(#[allow(dead_code, reason = "held for its Drop, which unlocks")] File);

impl DirLock for StdLock {}

impl FileSystem for StdFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir).map_err(at("creating the directory", dir))
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        // Only the files: anything else, even what cannot be told, is left
        // out (`non_files` reports it).
        Ok(entries(dir)?
            .into_iter()
            .filter_map(|(name, kind)| matches!(kind, Ok(None)).then_some(name))
            .collect())
    }

    fn non_files(&self, dir: &Path) -> io::Result<Vec<(String, &'static str)>> {
        let mut found = Vec::new();
        for (name, kind) in entries(dir)? {
            if let Some(what) = kind? {
                found.push((name, what));
            }
        }
        Ok(found)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
            return Err(not_a_file(path));
        }
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(at("creating", path))?;
        Ok(Box::new(StdFile::new(file, path)?))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        regular(path)?;
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(at("opening", path))?;
        Ok(Box::new(StdFile::new(file, path)?))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        regular(path)?;
        let mut buf = Vec::new();
        File::open(path)
            .and_then(|mut file| file.read_to_end(&mut buf))
            .map_err(at("reading", path))?;
        Ok(buf)
    }

    fn read_prefix(&self, path: &Path, len: usize) -> io::Result<Vec<u8>> {
        regular(path)?;
        let mut buf = Vec::with_capacity(len);
        File::open(path)
            .and_then(|file| file.take(len as u64).read_to_end(&mut buf))
            .map_err(at("reading", path))?;
        Ok(buf)
    }

    fn size(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)
            .map_err(at("reading the size of", path))?
            .len())
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        OpenOptions::new()
            .write(true)
            .open(path)
            .and_then(|file| {
                file.set_len(len)?;
                file.sync_all()
            })
            .map_err(at("cutting", path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to).map_err(|error| {
            let doing = format!("renaming {} to {}", from.display(), to.display());
            io::Error::new(error.kind(), AtPath { doing, error })
        })
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path).map_err(at("removing", path))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(at("syncing the directory", dir))
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(at("opening the lock file", path))?;
        // An engine dropped a moment ago may still hold the lock: a process
        // that spawns another shares the lock file's open description with
        // the child from its fork until its exec closes it. So a busy lock
        // is tried again for a short while (about 0.25 s) before the open
        // is refused.
        let mut pause = std::time::Duration::from_millis(1);
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(Box::new(StdLock(file))),
                Err(std::fs::TryLockError::WouldBlock) if pause.as_millis() < 256 => {
                    std::thread::sleep(pause);
                    pause *= 2;
                }
                Err(std::fs::TryLockError::WouldBlock) => {
                    return Err(io::Error::new(
                        io::ErrorKind::WouldBlock,
                        "the directory is locked by another open engine",
                    ));
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(at("locking", path)(e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each `StdFs` error says what was done to which path, and keeps its
    /// kind (the engine decides by kind: a full disk, a held lock, a
    /// read-only file system).
    #[test]
    fn errors_name_the_call_and_the_path_and_keep_their_kind() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir
            .path()
            .join("no such dir")
            .join("00000000000000000001.wal");
        let expect = |what: &str, e: io::Error, kind: io::ErrorKind| {
            assert_eq!(e.kind(), kind, "{what}: {e}");
            let text = e.to_string();
            assert!(
                text.contains(&missing.display().to_string()),
                "{what}: {text}"
            );
            // The operating system's own error is the source, errno and all.
            let os = std::error::Error::source(&e)
                .and_then(|s| s.downcast_ref::<io::Error>())
                .and_then(io::Error::raw_os_error);
            assert_eq!(os, Some(2), "{what}: no ENOENT under {e:?}");
        };
        let fs = StdFs;
        let nf = io::ErrorKind::NotFound;
        expect("create", fs.create(&missing).map(drop).unwrap_err(), nf);
        expect(
            "open_append",
            fs.open_append(&missing).map(drop).unwrap_err(),
            nf,
        );
        expect("read", fs.read(&missing).unwrap_err(), nf);
        expect("read_prefix", fs.read_prefix(&missing, 8).unwrap_err(), nf);
        expect("size", fs.size(&missing).unwrap_err(), nf);
        expect("truncate", fs.truncate(&missing, 0).unwrap_err(), nf);
        expect("remove", fs.remove(&missing).unwrap_err(), nf);
        expect("rename", fs.rename(&missing, dir.path()).unwrap_err(), nf);
        expect("lock", fs.lock(&missing).map(drop).unwrap_err(), nf);
        let missing_dir = missing.parent().unwrap();
        let e = fs.list(missing_dir).unwrap_err();
        assert_eq!(e.kind(), nf);
        assert!(
            e.to_string().contains(&missing_dir.display().to_string()),
            "{e}"
        );
        let e = fs.sync_dir(missing_dir).unwrap_err();
        assert!(
            e.to_string().contains(&missing_dir.display().to_string()),
            "{e}"
        );
    }
}
