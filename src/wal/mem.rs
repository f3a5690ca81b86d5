//! An in-memory `FileSystem`, for tests and loom models that must not touch
//! the disk.
//!
//! The store is a map from path to file contents plus a set of directories,
//! behind one `std::sync::Mutex`; clones share the store, so a test can drop
//! an engine and reopen another on the same files. A file's contents live
//! in their own `Arc<Mutex<Vec<u8>>>` (its inode): an open handle keeps
//! writing to the file it opened even after a rename or removal of its
//! name, as on a POSIX file system.
//!
//! What it models: names, directories, appends, truncation, atomic rename
//! and exclusive per-path locks (a second `lock` of a held path fails with
//! `io::ErrorKind::WouldBlock` until the first lock is dropped). What it
//! does not model: power loss. Every append is durable at once and
//! `sync_data` / `sync_dir` only check that their target exists; crash
//! tests need a file system that keeps written and synced bytes apart.
//!
//! Loom: it uses std's locks, never loom's, and never holds one across a
//! call that could block or yield (each method takes and releases its locks
//! inside itself), so the models can run the engine on it. The lock order is
//! the store, then a file; a file handle takes only its file's lock.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::fs::{DirLock, FileSystem, WritableFile};

/// A file's contents, shared by its name and its open handles.
type Inode = Arc<Mutex<Vec<u8>>>;

#[derive(Debug, Default)]
struct Store {
    /// Every file by its path.
    files: BTreeMap<PathBuf, Inode>,
    /// Every directory created (with all its ancestors).
    dirs: BTreeSet<PathBuf>,
    /// The paths locked by a live `MemLock`.
    locks: BTreeSet<PathBuf>,
}

impl Store {
    /// Whether `dir` exists: created, or the root or the empty relative
    /// path, which always do.
    fn dir_exists(&self, dir: &Path) -> bool {
        dir.as_os_str().is_empty() || dir.parent().is_none() || self.dirs.contains(dir)
    }

    /// Fails unless the directory that would hold `path` exists and `path`
    /// is not itself a directory.
    fn check_file_path(&self, path: &Path) -> io::Result<()> {
        if self.dirs.contains(path) {
            return Err(error(io::ErrorKind::IsADirectory, "is a directory", path));
        }
        match path.parent() {
            Some(parent) if !self.dir_exists(parent) => {
                Err(error(io::ErrorKind::NotFound, "no such directory", parent))
            }
            Some(_) => Ok(()),
            None => Err(error(io::ErrorKind::InvalidInput, "not a file path", path)),
        }
    }

    fn file(&self, path: &Path) -> io::Result<&Inode> {
        self.files
            .get(path)
            .ok_or_else(|| error(io::ErrorKind::NotFound, "no such file", path))
    }
}

fn error(kind: io::ErrorKind, what: &str, path: &Path) -> io::Error {
    io::Error::new(kind, format!("{what}: {}", path.display()))
}

/// A poisoned lock only means a test panicked elsewhere; every method
/// leaves the store consistent at each step, so its contents still hold.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An in-memory `FileSystem`. Clones share the same files.
#[derive(Debug, Default, Clone)]
pub struct MemFs {
    store: Arc<Mutex<Store>>,
}

impl MemFs {
    /// An empty file system.
    pub fn new() -> Self {
        Self::default()
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// The inode at `path`, taken out of the store so that the store's
    /// lock is released before the file's is taken.
    fn inode(&self, path: &Path) -> io::Result<Inode> {
        self.store().file(path).map(Arc::clone)
    }
}

/// An open file: appends go to the end of the inode it opened.
#[derive(Debug)]
struct MemFile(Inode);

impl WritableFile for MemFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        lock(&self.0).extend_from_slice(buf);
        Ok(())
    }

    fn sync_data(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A held lock on a path; dropping it releases the path.
#[derive(Debug)]
struct MemLock {
    store: Arc<Mutex<Store>>,
    path: PathBuf,
}

impl DirLock for MemLock {}

impl Drop for MemLock {
    fn drop(&mut self) {
        let released = lock(&self.store).locks.remove(&self.path);
        debug_assert!(released, "a MemLock's path was not locked");
    }
}

impl FileSystem for MemFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut store = self.store();
        let missing: Vec<&Path> = dir
            .ancestors()
            .take_while(|d| !store.dir_exists(d))
            .collect();
        if let Some(file) = missing.iter().find(|d| store.files.contains_key(**d)) {
            return Err(error(io::ErrorKind::NotADirectory, "is a file", file));
        }
        store
            .dirs
            .extend(missing.into_iter().map(Path::to_path_buf));
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let store = self.store();
        if !store.dir_exists(dir) {
            return Err(error(io::ErrorKind::NotFound, "no such directory", dir));
        }
        // `files` is ordered by path, and the paths directly in `dir` are
        // compared by their one last component, so the names come sorted.
        let names = store
            .files
            .keys()
            .filter(|path| path.parent() == Some(dir))
            .filter_map(|path| path.file_name()?.to_str().map(str::to_owned))
            .collect();
        Ok(names)
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let mut store = self.store();
        store.check_file_path(path)?;
        let inode = Inode::default();
        store.files.insert(path.to_path_buf(), Arc::clone(&inode));
        Ok(Box::new(MemFile(inode)))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        Ok(Box::new(MemFile(self.inode(path)?)))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let inode = self.inode(path)?;
        let bytes = lock(&inode).clone();
        Ok(bytes)
    }

    fn size(&self, path: &Path) -> io::Result<u64> {
        let inode = self.inode(path)?;
        let len = lock(&inode).len();
        Ok(len as u64)
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let len = usize::try_from(len)
            .map_err(|_| error(io::ErrorKind::InvalidInput, "length too large", path))?;
        let inode = self.inode(path)?;
        // Like `set_len`: cuts, or extends with zeros.
        lock(&inode).resize(len, 0);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut store = self.store();
        store.file(from)?;
        store.check_file_path(to)?;
        if let Some(inode) = store.files.remove(from) {
            store.files.insert(to.to_path_buf(), inode);
        }
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut store = self.store();
        store.file(path)?;
        store.files.remove(path);
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        if self.store().dir_exists(dir) {
            Ok(())
        } else {
            Err(error(io::ErrorKind::NotFound, "no such directory", dir))
        }
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        let mut store = self.store();
        if !store.files.contains_key(path) {
            store.check_file_path(path)?;
            store.files.insert(path.to_path_buf(), Inode::default());
        }
        if !store.locks.insert(path.to_path_buf()) {
            return Err(error(
                io::ErrorKind::WouldBlock,
                "locked by another holder",
                path,
            ));
        }
        Ok(Box::new(MemLock {
            store: Arc::clone(&self.store),
            path: path.to_path_buf(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fs_with_dir() -> (MemFs, PathBuf) {
        let fs = MemFs::new();
        let dir = PathBuf::from("/data/db");
        fs.create_dir_all(&dir).unwrap();
        (fs, dir)
    }

    fn write(fs: &MemFs, path: &Path, bytes: &[u8]) {
        let mut file = fs.create(path).unwrap();
        file.append(bytes).unwrap();
        file.sync_data().unwrap();
    }

    #[test]
    fn appends_are_read_back_in_order() {
        let (fs, dir) = fs_with_dir();
        let path = dir.join("a");
        let mut file = fs.create(&path).unwrap();
        file.append(b"hello ").unwrap();
        file.append(b"world").unwrap();
        assert_eq!(fs.read(&path).unwrap(), b"hello world");
        assert_eq!(fs.size(&path).unwrap(), 11);
    }

    #[test]
    fn create_truncates_and_open_append_appends_at_the_end() {
        let (fs, dir) = fs_with_dir();
        let path = dir.join("a");
        write(&fs, &path, b"old contents");
        write(&fs, &path, b"new");
        assert_eq!(fs.read(&path).unwrap(), b"new");
        fs.open_append(&path).unwrap().append(b"er").unwrap();
        assert_eq!(fs.read(&path).unwrap(), b"newer");
    }

    #[test]
    fn missing_files_and_directories_are_not_found() {
        let (fs, dir) = fs_with_dir();
        let missing = dir.join("missing");
        let not_found = |r: io::Error| assert_eq!(r.kind(), io::ErrorKind::NotFound);
        not_found(fs.open_append(&missing).unwrap_err());
        not_found(fs.read(&missing).unwrap_err());
        not_found(fs.size(&missing).unwrap_err());
        not_found(fs.truncate(&missing, 0).unwrap_err());
        not_found(fs.remove(&missing).unwrap_err());
        not_found(fs.rename(&missing, &dir.join("b")).unwrap_err());
        not_found(fs.list(&missing).unwrap_err());
        not_found(fs.sync_dir(&missing).unwrap_err());
        // A file cannot be created in a directory that does not exist.
        not_found(fs.create(&missing.join("a")).map(drop).unwrap_err());
        not_found(fs.lock(&missing.join("LOCK")).map(drop).unwrap_err());
        assert!(fs.list(&dir).unwrap().is_empty());
    }

    #[test]
    fn create_dir_all_makes_every_ancestor_and_refuses_a_file_in_the_way() {
        let fs = MemFs::new();
        fs.create_dir_all(Path::new("/a/b/c")).unwrap();
        fs.create_dir_all(Path::new("/a/b/c")).unwrap();
        for dir in ["/", "/a", "/a/b", "/a/b/c"] {
            fs.sync_dir(Path::new(dir)).unwrap();
        }
        write(&fs, Path::new("/a/f"), b"x");
        let e = fs.create_dir_all(Path::new("/a/f/g")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotADirectory);
        let e = fs.create(Path::new("/a/b")).map(drop).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::IsADirectory);
        // Relative paths work too.
        fs.create_dir_all(Path::new("rel/dir")).unwrap();
        write(&fs, Path::new("rel/dir/f"), b"y");
        assert_eq!(fs.list(Path::new("rel/dir")).unwrap(), ["f"]);
    }

    #[test]
    fn list_names_only_the_files_directly_in_the_directory_sorted() {
        let (fs, dir) = fs_with_dir();
        fs.create_dir_all(&dir.join("sub")).unwrap();
        for name in ["c", "a", "b"] {
            write(&fs, &dir.join(name), b"");
        }
        write(&fs, &dir.join("sub").join("inner"), b"");
        write(&fs, Path::new("/data/outer"), b"");
        assert_eq!(fs.list(&dir).unwrap(), ["a", "b", "c"]);
        assert_eq!(fs.list(&dir.join("sub")).unwrap(), ["inner"]);
    }

    #[test]
    fn truncate_cuts_or_extends_with_zeros() {
        let (fs, dir) = fs_with_dir();
        let path = dir.join("a");
        write(&fs, &path, b"abcdef");
        fs.truncate(&path, 2).unwrap();
        assert_eq!(fs.read(&path).unwrap(), b"ab");
        fs.truncate(&path, 4).unwrap();
        assert_eq!(fs.read(&path).unwrap(), b"ab\0\0");
    }

    #[test]
    fn rename_replaces_the_target_and_removes_the_source() {
        let (fs, dir) = fs_with_dir();
        let (from, to) = (dir.join("tmp"), dir.join("final"));
        write(&fs, &from, b"new");
        write(&fs, &to, b"old");
        fs.rename(&from, &to).unwrap();
        assert_eq!(fs.read(&to).unwrap(), b"new");
        assert_eq!(fs.list(&dir).unwrap(), ["final"]);
        let e = fs.rename(&to, &dir.join("nodir").join("x")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert_eq!(
            fs.read(&to).unwrap(),
            b"new",
            "a failed rename keeps the file"
        );
        fs.rename(&to, &to).unwrap();
        assert_eq!(fs.read(&to).unwrap(), b"new");
    }

    #[test]
    fn remove_drops_the_name() {
        let (fs, dir) = fs_with_dir();
        let path = dir.join("a");
        write(&fs, &path, b"x");
        fs.remove(&path).unwrap();
        assert!(fs.list(&dir).unwrap().is_empty());
        assert_eq!(fs.read(&path).unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn an_open_handle_follows_its_file_not_its_name() {
        let (fs, dir) = fs_with_dir();
        let (a, b) = (dir.join("a"), dir.join("b"));
        let mut file = fs.create(&a).unwrap();
        file.append(b"1").unwrap();
        fs.rename(&a, &b).unwrap();
        file.append(b"2").unwrap();
        assert_eq!(fs.read(&b).unwrap(), b"12");
        // A new file under the old name is a different file.
        write(&fs, &a, b"other");
        file.append(b"3").unwrap();
        assert_eq!(fs.read(&a).unwrap(), b"other");
        assert_eq!(fs.read(&b).unwrap(), b"123");
        // Writing to a removed file succeeds and changes no named file.
        fs.remove(&b).unwrap();
        file.append(b"4").unwrap();
        assert_eq!(fs.list(&dir).unwrap(), ["a"]);
    }

    #[test]
    fn a_lock_is_exclusive_until_dropped() {
        let (fs, dir) = fs_with_dir();
        let path = dir.join("LOCK");
        let held = fs.lock(&path).unwrap();
        assert_eq!(fs.list(&dir).unwrap(), ["LOCK"], "lock creates its file");
        let e = fs.lock(&path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        let e = fs.clone().lock(&path).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock, "clones share locks");
        let other = fs.lock(&dir.join("OTHER")).unwrap();
        drop(held);
        let again = fs.lock(&path).unwrap();
        drop((again, other));
    }

    #[test]
    fn clones_share_the_files_and_new_ones_do_not() {
        let (fs, dir) = fs_with_dir();
        let clone = fs.clone();
        write(&clone, &dir.join("a"), b"shared");
        assert_eq!(fs.read(&dir.join("a")).unwrap(), b"shared");
        let fresh = MemFs::new();
        assert_eq!(
            fresh.read(&dir.join("a")).unwrap_err().kind(),
            io::ErrorKind::NotFound
        );
    }

    // Under loom the engine's locks work only inside a loom model.
    #[cfg(not(loom))]
    #[test]
    fn an_engine_reopens_on_a_clone_and_is_locked_while_open() {
        use crate::{Engine, Error, Options};
        let fs = MemFs::new();
        let options = || Options {
            fs: Arc::new(fs.clone()),
            segment_bytes: 4096,
            ..Options::default()
        };
        let engine = Engine::open("/db", options()).unwrap();
        for i in 0..100u32 {
            let mut txn = engine.begin();
            txn.put(i.to_be_bytes(), [7u8; 64]).unwrap();
            txn.commit().unwrap();
        }
        assert!(engine.stats().log_segments > 1, "the log rotated");
        assert!(matches!(
            Engine::open("/db", options()),
            Err(Error::InvalidArgument(_))
        ));
        engine.checkpoint().unwrap();
        let mut txn = engine.begin();
        txn.put(b"after", b"checkpoint").unwrap();
        let last_ts = txn.commit().unwrap();
        drop(engine);

        let engine = Engine::open("/db", options()).unwrap();
        let snap = engine.snapshot();
        assert_eq!(snap.ts(), last_ts);
        assert_eq!(snap.scan(..).unwrap().count(), 101);
        assert_eq!(
            snap.get(b"after").unwrap().as_deref(),
            Some(&b"checkpoint"[..])
        );
        assert_eq!(
            snap.get(5u32.to_be_bytes()).unwrap().as_deref(),
            Some(&[7u8; 64][..])
        );
    }
}
