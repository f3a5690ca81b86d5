//! A power-loss-simulating `FileSystem`, for crash tests: in memory, it
//! keeps what was written apart from what a sync made durable, and a
//! simulated power cut keeps only the durable part.
//!
//! The model, which is all a crash test may rely on:
//! - A file is an inode: the bytes written to it, and `synced`, how many of
//!   them `sync_data` made durable. Writes only append; `truncate` syncs
//!   (as the trait says). So the durable contents of a file are always the
//!   first `synced` bytes of what was written, and then, if the file was
//!   laid out with zeros ahead (`WritableFile::zero_to`) and synced since,
//!   zeros up to that length: appends land over those zeros, and a crash
//!   before their sync leaves zeros where they were not yet durable. Reads
//!   see the written bytes, then the zeros laid ahead.
//! - A directory keeps its entries as they are now (`live`), as they were
//!   at its last `sync_dir` (`durable`), and the changes made since, in
//!   order (`pending`). Creating a file or a subdirectory, renaming and
//!   removing change `live` only: each is lost in a crash unless a later
//!   `sync_dir` of that directory covers it, however the files' own data
//!   were synced. A rename within one directory is one atomic change; one
//!   across directories is a change in each. Directories are never removed
//!   or renamed. A root (`/`, or the empty path that relative paths start
//!   from) always exists.
//! - `crash` cuts the power: this store, every clone sharing it and every
//!   file handle opened on it fail every call from then on, and `crash`
//!   returns a new `SimFs` holding what survived: each directory reachable
//!   through durable entries, as of its last sync, and each file in it cut
//!   to its synced length. `crash_image` builds the same survivor without
//!   cutting the power. `cut_power_after(n)` cuts it at the `n`-th call
//!   from now, of any kind: that call fails too, so a crash can land inside
//!   any operation of the engine (an append that the cut interrupts has
//!   reached the page cache, unsynced).
//! - How much of what was not synced survives is the `Torn` setting:
//!   nothing (the default); or a random prefix of each file's unsynced
//!   bytes and of each directory's pending changes, in order, as a disk
//!   and a journal that write back in order may leave; or a file whose
//!   size reached the disk before all of its data, so that zeros or random
//!   bytes follow the true ones (which end at a sector boundary: a disk
//!   writes whole 512-byte sectors) up to at most the written length; or,
//!   for directories, any subset of their pending changes, whatever their
//!   order, which is all POSIX promises. The choices come from a seeded
//!   generator: the same calls with the same seed give the same survivor.
//!
//! Not modelled: holes (a later unsynced write surviving an earlier one),
//! metadata other than names and lengths, hard links, `.` and `..` in
//! paths. A file's bytes stay in memory while a name or an unsynced
//! directory change refers to it.
//!
//! Clones share the store, so a test can reopen an engine on the same
//! files; a test that wants a fault plan wraps a clone in `FaultyFs`. Locks
//! are per path, as in `MemFs`, and do not survive a crash.
//!
//! Loom: like `MemFs`, it uses std's lock, never loom's, and holds it only
//! inside each method, never across a call that could block or yield.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use super::fs::{DirLock, FileSystem, WritableFile};

/// What a power cut keeps of the bytes and directory changes that no sync
/// covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Torn {
    /// Nothing: every file at its synced length, every directory as of its
    /// last sync.
    #[default]
    Nothing,
    /// A random prefix of each file's unsynced bytes, and of each
    /// directory's unsynced changes (in the order they were made).
    Prefix,
    /// A file's size reached the disk before all of its data: the file
    /// has a random length no longer than what was written, its true bytes
    /// end at a random sector (512-byte) boundary or at that length, and
    /// the rest is zeros. Directories as under `Prefix`.
    Zeros,
    /// As `Zeros`, with random bytes instead of zeros (blocks that held
    /// something else before).
    Garbage,
    /// Files as under `Prefix`; each directory keeps a random subset of
    /// its unsynced changes, whatever their order (all POSIX promises).
    Reordered,
}

/// A disk writes whole sectors: a torn write under `Torn::Zeros` or
/// `Torn::Garbage` keeps true bytes up to a sector boundary.
const SECTOR_BYTES: usize = 512;

type InodeId = u64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Node {
    File(InodeId),
    Dir,
}

/// One atomic change to a directory: each name set to a node, or removed.
type Change = Vec<(OsString, Option<Node>)>;

type Entries = BTreeMap<OsString, Node>;

#[derive(Debug, Default)]
struct Dir {
    live: Entries,
    durable: Entries,
    /// The changes since the last sync, oldest first: `durable` with all of
    /// them applied is `live`.
    pending: Vec<Change>,
}

fn apply(entries: &mut Entries, change: &Change) {
    for (name, node) in change {
        match node {
            Some(node) => entries.insert(name.clone(), *node),
            None => entries.remove(name),
        };
    }
}

impl Dir {
    fn change(&mut self, change: Change) {
        apply(&mut self.live, &change);
        self.pending.push(change);
    }

    fn sync(&mut self) {
        self.durable = self.live.clone();
        self.pending.clear();
    }

    /// The entries after the pending changes that `kept` picks.
    fn after(&self, kept: &[bool]) -> Entries {
        let mut entries = self.durable.clone();
        for (change, _) in self.pending.iter().zip(kept).filter(|(_, k)| **k) {
            apply(&mut entries, change);
        }
        entries
    }
}

#[derive(Debug, Default)]
struct Inode {
    data: Vec<u8>,
    /// `data[..synced]` is durable.
    synced: usize,
    /// The file's length with the zeros laid ahead of `data` (at least
    /// `data.len()`), now and as of the last sync.
    zeros_to: usize,
    synced_zeros_to: usize,
}

impl Inode {
    /// The file as a read sees it: the written bytes, then the zeros laid
    /// ahead.
    fn contents(&self) -> Vec<u8> {
        let mut all = self.data.clone();
        all.resize(self.zeros_to.max(self.data.len()), 0);
        all
    }

    /// Like `set_len` and then `sync_all`: cuts the file to `len` bytes
    /// or extends it with zeros, durably.
    fn cut_durably(&mut self, len: usize) {
        self.data = self.contents();
        self.data.resize(len, 0);
        self.synced = len;
        self.zeros_to = len;
        self.synced_zeros_to = len;
    }
}

/// splitmix64: small, seedable, good enough to pick crash leftovers (and
/// the cluster simulator's every choice).
#[derive(Debug, Clone)]
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..=n`.
    fn upto(&mut self, n: usize) -> usize {
        (self.next() % (n as u64 + 1)) as usize
    }

    /// Uniform in `0..n` (0 for `n` = 0).
    pub(crate) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// True with `p` percent chance.
    pub(crate) fn pct(&mut self, p: u32) -> bool {
        self.below(100) < u64::from(p)
    }
}

#[derive(Debug)]
struct Store {
    /// Every directory that exists now (and each root once used).
    dirs: BTreeMap<PathBuf, Dir>,
    inodes: BTreeMap<InodeId, Inode>,
    next_inode: InodeId,
    locks: BTreeSet<PathBuf>,
    rng: Rng,
    torn: Torn,
    /// Calls made so far, of every kind.
    calls: u64,
    /// The call at which the power goes.
    cut_at: Option<u64>,
    off: bool,
}

fn error(kind: io::ErrorKind, what: &str, path: &Path) -> io::Error {
    io::Error::new(kind, format!("{what}: {}", path.display()))
}

fn power_off() -> io::Error {
    io::Error::other("simulated power cut: the machine is off")
}

fn is_root(path: &Path) -> bool {
    path.parent().is_none()
}

/// A file path's directory and name.
fn split(path: &Path) -> io::Result<(&Path, &OsStr)> {
    match (path.parent(), path.file_name()) {
        (Some(parent), Some(name)) => Ok((parent, name)),
        _ => Err(error(io::ErrorKind::InvalidInput, "not a file path", path)),
    }
}

/// A poisoned lock only means a test panicked elsewhere; every method
/// leaves the store consistent at each step.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Store {
    fn new(seed: u64, torn: Torn) -> Self {
        Store {
            dirs: BTreeMap::new(),
            inodes: BTreeMap::new(),
            next_inode: 1,
            locks: BTreeSet::new(),
            rng: Rng(seed),
            torn,
            calls: 0,
            cut_at: None,
            off: false,
        }
    }

    /// Counts a call; fails it if the power is off, or goes off now.
    fn enter(&mut self) -> io::Result<()> {
        if self.off {
            return Err(power_off());
        }
        self.calls += 1;
        if self.cut_at == Some(self.calls) {
            self.cut_at = None;
            self.off = true;
            return Err(power_off());
        }
        Ok(())
    }

    /// Whether the next call is the one the power goes at.
    fn cut_is_next(&self) -> bool {
        !self.off && self.cut_at == Some(self.calls + 1)
    }

    fn dir_exists(&self, dir: &Path) -> bool {
        is_root(dir) || self.dirs.contains_key(dir)
    }

    fn dir(&self, dir: &Path) -> Option<&Dir> {
        self.dirs.get(dir)
    }

    fn dir_mut(&mut self, dir: &Path) -> io::Result<&mut Dir> {
        if is_root(dir) {
            return Ok(self.dirs.entry(dir.to_path_buf()).or_default());
        }
        self.dirs
            .get_mut(dir)
            .ok_or_else(|| error(io::ErrorKind::NotFound, "no such directory", dir))
    }

    fn lookup(&self, path: &Path) -> Option<Node> {
        let (parent, name) = split(path).ok()?;
        self.dir(parent)?.live.get(name).copied()
    }

    fn file(&self, path: &Path) -> io::Result<InodeId> {
        match self.lookup(path) {
            Some(Node::File(id)) => Ok(id),
            Some(Node::Dir) => Err(error(io::ErrorKind::IsADirectory, "is a directory", path)),
            None => Err(error(io::ErrorKind::NotFound, "no such file", path)),
        }
    }

    fn inode_mut(&mut self, path: &Path) -> io::Result<&mut Inode> {
        let id = self.file(path)?;
        Ok(self.inodes.entry(id).or_default())
    }

    /// Checks that `path` can name a file: its directory exists and it is
    /// not a directory itself.
    fn check_file_path<'p>(&self, path: &'p Path) -> io::Result<(&'p Path, &'p OsStr)> {
        let (parent, name) = split(path)?;
        if !self.dir_exists(parent) {
            return Err(error(io::ErrorKind::NotFound, "no such directory", parent));
        }
        if self.lookup(path) == Some(Node::Dir) {
            return Err(error(io::ErrorKind::IsADirectory, "is a directory", path));
        }
        Ok((parent, name))
    }

    /// Links a new empty file at `path`, replacing any file there.
    fn create_file(&mut self, path: &Path) -> io::Result<InodeId> {
        let (parent, name) = self.check_file_path(path)?;
        let replaces = self.lookup(path).is_some();
        let id = self.next_inode;
        self.next_inode += 1;
        self.inodes.insert(id, Inode::default());
        self.dir_mut(parent)?
            .change(vec![(name.to_owned(), Some(Node::File(id)))]);
        if replaces {
            self.forget_unreferenced();
        }
        Ok(id)
    }

    /// Drops the bytes of every file that no entry, durable entry or
    /// pending change names: no crash can bring those back (open handles
    /// may still write to them, to no effect, as to an unlinked file).
    fn forget_unreferenced(&mut self) {
        let mut named = BTreeSet::new();
        for dir in self.dirs.values() {
            let changed = dir.pending.iter().flatten().filter_map(|(_, n)| *n);
            for node in dir
                .live
                .values()
                .chain(dir.durable.values())
                .copied()
                .chain(changed)
            {
                if let Node::File(id) = node {
                    named.insert(id);
                }
            }
        }
        self.inodes.retain(|id, _| named.contains(id));
    }

    /// What survives of inode `id` in a crash.
    fn survivor_inode(&mut self, id: InodeId) -> Inode {
        let Store {
            inodes, rng, torn, ..
        } = self;
        let Some(inode) = inodes.get(&id) else {
            return Inode::default();
        };
        let synced = inode.synced.min(inode.data.len());
        let unsynced = &inode.data[synced..];
        let mut data = inode.data[..synced].to_vec();
        match torn {
            Torn::Nothing => {}
            Torn::Prefix | Torn::Reordered => {
                let keep = rng.upto(unsynced.len());
                data.extend_from_slice(&unsynced[..keep]);
            }
            Torn::Zeros | Torn::Garbage => {
                let len = rng.upto(unsynced.len());
                // The true bytes end where the synced ones did, at a
                // sector boundary, or at `len`.
                let first_boundary = (synced / SECTOR_BYTES + 1) * SECTOR_BYTES;
                let boundaries =
                    (synced + len + SECTOR_BYTES).saturating_sub(first_boundary) / SECTOR_BYTES;
                let keep = match rng.upto(boundaries + 1) {
                    0 => 0,
                    i if i <= boundaries => first_boundary + (i - 1) * SECTOR_BYTES - synced,
                    _ => len,
                };
                data.extend_from_slice(&unsynced[..keep]);
                for _ in keep..len {
                    let byte = match torn {
                        Torn::Garbage => rng.next() as u8,
                        _ => 0,
                    };
                    data.push(byte);
                }
            }
        }
        // Zeros laid ahead and synced are on the disk: they show where
        // unsynced appends over them did not survive.
        if inode.synced_zeros_to > data.len() {
            data.resize(inode.synced_zeros_to, 0);
        }
        Inode {
            synced: data.len(),
            zeros_to: data.len(),
            synced_zeros_to: data.len(),
            data,
        }
    }

    /// The store a crash now would leave, every bit of it durable.
    fn survivor(&mut self) -> Store {
        let mut out = Store::new(self.rng.next(), self.torn);
        let mut copied: BTreeMap<InodeId, InodeId> = BTreeMap::new();
        // Ordered by components, so a directory comes before its children.
        let paths: Vec<PathBuf> = self.dirs.keys().cloned().collect();
        for path in paths {
            let reachable = is_root(&path) || out.lookup(&path) == Some(Node::Dir);
            if !reachable {
                continue;
            }
            let pending = self.dirs.get(&path).map_or(0, |d| d.pending.len());
            let kept: Vec<bool> = match self.torn {
                Torn::Nothing => vec![false; pending],
                Torn::Reordered => (0..pending).map(|_| self.rng.upto(1) == 1).collect(),
                _ => {
                    let n = self.rng.upto(pending);
                    (0..pending).map(|i| i < n).collect()
                }
            };
            let mut entries = self
                .dirs
                .get(&path)
                .map(|d| d.after(&kept))
                .unwrap_or_default();
            for node in entries.values_mut() {
                if let Node::File(id) = node {
                    *id = match copied.get(id) {
                        Some(&new) => new,
                        None => {
                            let inode = self.survivor_inode(*id);
                            let new = out.next_inode;
                            out.next_inode += 1;
                            out.inodes.insert(new, inode);
                            copied.insert(*id, new);
                            new
                        }
                    };
                }
            }
            out.dirs.insert(
                path,
                Dir {
                    live: entries.clone(),
                    durable: entries,
                    pending: Vec::new(),
                },
            );
        }
        out
    }
}

/// The power-loss-simulating file system. Clones share the same files.
#[derive(Debug, Clone)]
pub struct SimFs {
    store: Arc<Mutex<Store>>,
}

impl Default for SimFs {
    fn default() -> Self {
        Self::new(0)
    }
}

impl SimFs {
    /// An empty file system whose crash choices come from `seed`; a crash
    /// keeps nothing unsynced (`Torn::Nothing`).
    pub fn new(seed: u64) -> Self {
        Self::from_store(Store::new(seed, Torn::Nothing))
    }

    fn from_store(store: Store) -> Self {
        SimFs {
            store: Arc::new(Mutex::new(store)),
        }
    }

    /// This file system with `torn` deciding what a crash keeps of the
    /// unsynced part (and the file systems its crashes leave too).
    pub fn with_torn(self, torn: Torn) -> Self {
        self.set_torn(torn);
        self
    }

    /// Sets what a crash keeps of the unsynced part.
    pub fn set_torn(&self, torn: Torn) {
        self.store().torn = torn;
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// Cuts the power at the `n`-th call from now (1 = the next), of any
    /// kind: that call and every later one fail.
    pub fn cut_power_after(&self, n: u64) {
        let mut store = self.store();
        store.cut_at = Some(store.calls + n.max(1));
    }

    /// Disarms a cut armed by `cut_power_after` that has not come yet.
    pub fn disarm(&self) {
        self.store().cut_at = None;
    }

    /// Whether the power is off (after `crash` or an armed cut).
    pub fn is_off(&self) -> bool {
        self.store().off
    }

    /// How many calls (of every kind, file handles' included) were made.
    pub fn calls(&self) -> u64 {
        self.store().calls
    }

    /// Cuts the power (if still on) and returns what survived, as a new
    /// file system with the power on. This one, its clones and its open
    /// files fail every call from now on.
    pub fn crash(&self) -> SimFs {
        let mut store = self.store();
        store.off = true;
        store.cut_at = None;
        Self::from_store(store.survivor())
    }

    /// What a crash now would leave, as a new file system; this one runs
    /// on undisturbed.
    pub fn crash_image(&self) -> SimFs {
        Self::from_store(self.store().survivor())
    }

    /// How many bytes of the file now at `path` are durable (`None`: no
    /// file there).
    pub fn synced_len(&self, path: &Path) -> Option<u64> {
        let store = self.store();
        let Ok(id) = store.file(path) else {
            return None;
        };
        Some(store.inodes.get(&id).map_or(0, |i| i.synced as u64))
    }
}

/// An open file: appends go to the end of the inode it opened.
#[derive(Debug)]
struct SimFile {
    store: Arc<Mutex<Store>>,
    inode: InodeId,
}

impl WritableFile for SimFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let mut store = lock(&self.store);
        // A cut during the write: the bytes reached the page cache only.
        let interrupted = store.cut_is_next();
        let entered = store.enter();
        if (entered.is_ok() || interrupted)
            && let Some(inode) = store.inodes.get_mut(&self.inode)
        {
            inode.data.extend_from_slice(buf);
            inode.zeros_to = inode.zeros_to.max(inode.data.len());
        }
        entered
    }

    fn zero_to(&mut self, len: u64) -> io::Result<bool> {
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
        let mut store = lock(&self.store);
        store.enter()?;
        if let Some(inode) = store.inodes.get_mut(&self.inode) {
            inode.zeros_to = inode.zeros_to.max(len);
        }
        Ok(true)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        let mut store = lock(&self.store);
        store.enter()?;
        if let Some(inode) = store.inodes.get_mut(&self.inode) {
            inode.synced = inode.data.len();
            inode.synced_zeros_to = inode.zeros_to;
        }
        Ok(())
    }

    /// As `SimFs::truncate` does by the path.
    fn set_len(&mut self, len: u64) -> io::Result<bool> {
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
        let mut store = lock(&self.store);
        store.enter()?;
        if let Some(inode) = store.inodes.get_mut(&self.inode) {
            inode.cut_durably(len);
        }
        Ok(true)
    }
}

/// A held lock on a path; dropping it releases the path.
#[derive(Debug)]
struct SimLock {
    store: Arc<Mutex<Store>>,
    path: PathBuf,
}

impl DirLock for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let released = lock(&self.store).locks.remove(&self.path);
        debug_assert!(released, "a SimLock's path was not locked");
    }
}

impl FileSystem for SimFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        let mut store = self.store();
        store.enter()?;
        let missing: Vec<PathBuf> = dir
            .ancestors()
            .take_while(|d| !store.dir_exists(d))
            .map(Path::to_path_buf)
            .collect();
        if let Some(file) = missing.iter().find(|d| store.lookup(d).is_some()) {
            return Err(error(io::ErrorKind::NotADirectory, "is a file", file));
        }
        // Outermost first: each one's parent exists when it is linked.
        for path in missing.iter().rev() {
            let (parent, name) = split(path)?;
            store
                .dir_mut(parent)?
                .change(vec![(name.to_owned(), Some(Node::Dir))]);
            store.dirs.insert(path.clone(), Dir::default());
        }
        Ok(())
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        let mut store = self.store();
        store.enter()?;
        if !store.dir_exists(dir) {
            return Err(error(io::ErrorKind::NotFound, "no such directory", dir));
        }
        let Some(entries) = store.dir(dir) else {
            return Ok(Vec::new());
        };
        // Names sort as `BTreeMap` keys: the list comes sorted.
        Ok(entries
            .live
            .iter()
            .filter(|(_, node)| matches!(node, Node::File(_)))
            .filter_map(|(name, _)| name.to_str().map(str::to_owned))
            .collect())
    }

    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let mut store = self.store();
        store.enter()?;
        let inode = store.create_file(path)?;
        Ok(Box::new(SimFile {
            store: Arc::clone(&self.store),
            inode,
        }))
    }

    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let mut store = self.store();
        store.enter()?;
        let inode = store.file(path)?;
        Ok(Box::new(SimFile {
            store: Arc::clone(&self.store),
            inode,
        }))
    }

    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let mut store = self.store();
        store.enter()?;
        Ok(store.inode_mut(path)?.contents())
    }

    fn read_prefix(&self, path: &Path, len: usize) -> io::Result<Vec<u8>> {
        let mut store = self.store();
        store.enter()?;
        let inode = store.inode_mut(path)?;
        let mut data = inode.data[..len.min(inode.data.len())].to_vec();
        data.resize(len.min(inode.zeros_to.max(inode.data.len())), 0);
        Ok(data)
    }

    fn size(&self, path: &Path) -> io::Result<u64> {
        let mut store = self.store();
        store.enter()?;
        let inode = store.inode_mut(path)?;
        Ok(inode.zeros_to.max(inode.data.len()) as u64)
    }

    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        let len = usize::try_from(len)
            .map_err(|_| error(io::ErrorKind::InvalidInput, "length too large", path))?;
        let mut store = self.store();
        store.enter()?;
        store.inode_mut(path)?.cut_durably(len);
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut store = self.store();
        store.enter()?;
        let id = store.file(from)?;
        let (to_dir, to_name) = store.check_file_path(to)?;
        let (from_dir, from_name) = split(from)?;
        if from == to {
            return Ok(());
        }
        let link = (to_name.to_owned(), Some(Node::File(id)));
        let unlink = (from_name.to_owned(), None);
        if from_dir == to_dir {
            store.dir_mut(to_dir)?.change(vec![link, unlink]);
        } else {
            store.dir_mut(to_dir)?.change(vec![link]);
            store.dir_mut(from_dir)?.change(vec![unlink]);
        }
        store.forget_unreferenced();
        Ok(())
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut store = self.store();
        store.enter()?;
        store.file(path)?;
        let (dir, name) = split(path)?;
        store.dir_mut(dir)?.change(vec![(name.to_owned(), None)]);
        store.forget_unreferenced();
        Ok(())
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        let mut store = self.store();
        store.enter()?;
        store.dir_mut(dir)?.sync();
        store.forget_unreferenced();
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        let mut store = self.store();
        store.enter()?;
        if store.file(path).is_err() {
            store.create_file(path)?;
        }
        if !store.locks.insert(path.to_path_buf()) {
            return Err(error(
                io::ErrorKind::WouldBlock,
                "locked by another holder",
                path,
            ));
        }
        Ok(Box::new(SimLock {
            store: Arc::clone(&self.store),
            path: path.to_path_buf(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::{FaultyFs, Op};

    const DIR: &str = "/data/db";

    /// A file system with `DIR` created and durable.
    fn fs_with_dir(seed: u64) -> SimFs {
        let fs = SimFs::new(seed);
        fs.create_dir_all(Path::new(DIR)).unwrap();
        fs.sync_dir(Path::new("/")).unwrap();
        fs.sync_dir(Path::new("/data")).unwrap();
        fs
    }

    fn path(name: &str) -> PathBuf {
        Path::new(DIR).join(name)
    }

    /// Creates `name` holding `bytes`, synced, its entry synced.
    fn durable_file(fs: &SimFs, name: &str, bytes: &[u8]) {
        let mut file = fs.create(&path(name)).unwrap();
        file.append(bytes).unwrap();
        file.sync_data().unwrap();
        fs.sync_dir(Path::new(DIR)).unwrap();
    }

    fn names(fs: &SimFs) -> Vec<String> {
        fs.list(Path::new(DIR)).unwrap()
    }

    fn not_found<T: std::fmt::Debug>(r: io::Result<T>) {
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn a_crash_keeps_exactly_the_synced_bytes() {
        let fs = fs_with_dir(1);
        let mut file = fs.create(&path("a")).unwrap();
        fs.sync_dir(Path::new(DIR)).unwrap();
        file.append(b"hello ").unwrap();
        file.sync_data().unwrap();
        file.append(b"world").unwrap();
        assert_eq!(fs.read(&path("a")).unwrap(), b"hello world");
        assert_eq!(fs.synced_len(&path("a")), Some(6));
        let after = fs.crash();
        assert_eq!(after.read(&path("a")).unwrap(), b"hello ");
        assert_eq!(after.synced_len(&path("a")), Some(6));
        // Nothing new was synced: a second crash keeps the same.
        assert_eq!(after.crash().read(&path("a")).unwrap(), b"hello ");
    }

    /// Zeros laid ahead (`zero_to`) read as part of the file; appends land
    /// over them; a crash keeps the synced bytes, then zeros up to the
    /// length the last sync covered, where unsynced appends were; and
    /// `truncate` cuts them.
    #[test]
    fn zeros_laid_ahead_show_where_unsynced_appends_were() {
        let fs = fs_with_dir(1);
        let mut file = fs.create(&path("a")).unwrap();
        fs.sync_dir(Path::new(DIR)).unwrap();
        file.append(b"head").unwrap();
        assert!(file.zero_to(10).unwrap());
        assert_eq!(fs.read(&path("a")).unwrap(), b"head\0\0\0\0\0\0");
        assert_eq!(fs.size(&path("a")).unwrap(), 10);
        file.sync_data().unwrap();
        file.append(b"tail").unwrap();
        assert_eq!(fs.read(&path("a")).unwrap(), b"headtail\0\0");
        assert_eq!(fs.read_prefix(&path("a"), 6).unwrap(), b"headta");
        // The zeros were synced, "tail" was not.
        let after = fs.crash_image();
        assert_eq!(after.read(&path("a")).unwrap(), b"head\0\0\0\0\0\0");
        file.sync_data().unwrap();
        assert_eq!(fs.crash_image().read(&path("a")).unwrap(), b"headtail\0\0");
        // Zeros laid but never synced are not on the disk.
        assert!(file.zero_to(16).unwrap());
        assert_eq!(fs.size(&path("a")).unwrap(), 16);
        assert_eq!(fs.crash_image().size(&path("a")).unwrap(), 10);
        fs.truncate(&path("a"), 8).unwrap();
        assert_eq!(fs.read(&path("a")).unwrap(), b"headtail");
        assert_eq!(fs.crash().read(&path("a")).unwrap(), b"headtail");
    }

    #[test]
    fn a_file_whose_creation_was_not_synced_is_lost_with_its_data() {
        let fs = fs_with_dir(1);
        durable_file(&fs, "old", b"kept");
        let mut file = fs.create(&path("new")).unwrap();
        file.append(b"synced data").unwrap();
        file.sync_data().unwrap();
        let after = fs.crash_image();
        assert_eq!(names(&after), ["old"]);
        assert_eq!(after.read(&path("old")).unwrap(), b"kept");
        // Once the directory is synced, the file is there.
        fs.sync_dir(Path::new(DIR)).unwrap();
        let after = fs.crash_image();
        assert_eq!(names(&after), ["new", "old"]);
        assert_eq!(after.read(&path("new")).unwrap(), b"synced data");
    }

    #[test]
    fn an_unsynced_rename_is_undone_and_a_synced_one_kept() {
        let fs = fs_with_dir(1);
        durable_file(&fs, "tmp", b"new");
        durable_file(&fs, "final", b"old");
        fs.rename(&path("tmp"), &path("final")).unwrap();
        assert_eq!(names(&fs), ["final"]);
        assert_eq!(fs.read(&path("final")).unwrap(), b"new");
        let after = fs.crash_image();
        assert_eq!(names(&after), ["final", "tmp"]);
        assert_eq!(after.read(&path("final")).unwrap(), b"old");
        assert_eq!(after.read(&path("tmp")).unwrap(), b"new");
        fs.sync_dir(Path::new(DIR)).unwrap();
        let after = fs.crash();
        assert_eq!(names(&after), ["final"]);
        assert_eq!(after.read(&path("final")).unwrap(), b"new");
    }

    #[test]
    fn an_unsynced_removal_comes_back_with_its_durable_bytes() {
        let fs = fs_with_dir(1);
        durable_file(&fs, "a", b"durable");
        let mut file = fs.open_append(&path("a")).unwrap();
        file.append(b" and not").unwrap();
        fs.remove(&path("a")).unwrap();
        assert!(names(&fs).is_empty());
        not_found(fs.read(&path("a")));
        // Writing to the removed file still works, to no named file.
        file.append(b"!").unwrap();
        file.sync_data().unwrap();
        let after = fs.crash_image();
        assert_eq!(after.read(&path("a")).unwrap(), b"durable and not!");
        fs.sync_dir(Path::new(DIR)).unwrap();
        assert!(names(&fs.crash()).is_empty());
    }

    #[test]
    fn truncate_is_durable_at_once() {
        let fs = fs_with_dir(1);
        durable_file(&fs, "a", b"abcdef");
        fs.truncate(&path("a"), 2).unwrap();
        assert_eq!(fs.crash_image().read(&path("a")).unwrap(), b"ab");
        fs.truncate(&path("a"), 4).unwrap();
        assert_eq!(fs.crash().read(&path("a")).unwrap(), b"ab\0\0");
    }

    #[test]
    fn a_new_directory_needs_a_sync_of_its_parent() {
        let fs = SimFs::new(1);
        fs.create_dir_all(Path::new("/a/b")).unwrap();
        let mut file = fs.create(Path::new("/a/b/f")).unwrap();
        file.append(b"x").unwrap();
        file.sync_data().unwrap();
        fs.sync_dir(Path::new("/a/b")).unwrap();
        fs.sync_dir(Path::new("/a")).unwrap();
        // "/" was never synced: "a" and all below it are gone.
        let after = fs.crash_image();
        not_found(after.list(Path::new("/a")));
        not_found(after.read(Path::new("/a/b/f")));
        after.create_dir_all(Path::new("/a/b")).unwrap();
        assert!(after.list(Path::new("/a/b")).unwrap().is_empty());
        fs.sync_dir(Path::new("/")).unwrap();
        let after = fs.crash_image();
        assert_eq!(after.read(Path::new("/a/b/f")).unwrap(), b"x");
        // Relative paths have their root too.
        fs.create_dir_all(Path::new("rel/dir")).unwrap();
        fs.sync_dir(Path::new("")).unwrap();
        fs.sync_dir(Path::new("rel")).unwrap();
        fs.create(Path::new("rel/dir/f")).unwrap();
        fs.sync_dir(Path::new("rel/dir")).unwrap();
        assert_eq!(fs.crash().list(Path::new("rel/dir")).unwrap(), ["f"]);
    }

    #[test]
    fn after_a_crash_the_old_machine_and_its_files_are_dead() {
        let fs = fs_with_dir(1);
        let clone = fs.clone();
        let mut file = fs.create(&path("a")).unwrap();
        fs.sync_dir(Path::new(DIR)).unwrap();
        let lock = fs.lock(&path("LOCK")).unwrap();
        let after = fs.crash();
        assert!(fs.is_off() && clone.is_off() && !after.is_off());
        assert!(file.append(b"late").is_err());
        assert!(file.sync_data().is_err());
        assert!(clone.list(Path::new(DIR)).is_err());
        assert!(clone.create(&path("b")).is_err());
        assert!(clone.sync_dir(Path::new(DIR)).is_err());
        drop(lock);
        // The survivor is a machine of its own: no lock held, no link back.
        let relock = after.lock(&path("LOCK")).unwrap();
        after.create(&path("c")).unwrap();
        assert_eq!(names(&after), ["LOCK", "a", "c"]);
        drop(relock);
    }

    #[test]
    fn an_armed_cut_fails_that_call_and_every_later_one() {
        let fs = fs_with_dir(1);
        let mut file = fs.create(&path("a")).unwrap();
        fs.sync_dir(Path::new(DIR)).unwrap();
        file.append(b"one").unwrap();
        file.sync_data().unwrap();
        let calls = fs.calls();
        fs.cut_power_after(2);
        file.append(b"two").unwrap();
        assert!(
            file.sync_data().is_err(),
            "the second call finds the power off"
        );
        assert!(fs.is_off());
        assert!(fs.read(&path("a")).is_err());
        assert!(file.append(b"three").is_err());
        assert_eq!(fs.calls(), calls + 2, "calls after the cut are not counted");
        assert_eq!(fs.crash().read(&path("a")).unwrap(), b"one");
        let fs = fs_with_dir(1);
        fs.cut_power_after(1);
        fs.disarm();
        fs.create(&path("b")).unwrap();
        assert!(!fs.is_off());
    }

    #[test]
    fn an_append_the_cut_interrupts_is_unsynced_and_may_survive_torn() {
        let mut seen = BTreeSet::new();
        for seed in 0..64 {
            let fs = fs_with_dir(seed).with_torn(Torn::Prefix);
            durable_file(&fs, "a", b"synced|");
            let mut file = fs.open_append(&path("a")).unwrap();
            fs.cut_power_after(1);
            assert!(file.append(b"interrupted").is_err());
            let bytes = fs.crash().read(&path("a")).unwrap();
            let full = b"synced|interrupted";
            assert!(full.starts_with(&bytes) && bytes.len() >= 7, "{bytes:?}");
            seen.insert(bytes.len());
        }
        assert!(seen.len() > 5, "the torn prefix hardly varies: {seen:?}");
        assert!(seen.contains(&7) && seen.contains(&18));
    }

    #[test]
    fn torn_modes_keep_the_synced_bytes_and_only_what_was_written() {
        for torn in [Torn::Prefix, Torn::Zeros, Torn::Garbage] {
            let mut longer = 0;
            for seed in 0..64 {
                let fs = fs_with_dir(seed).with_torn(torn);
                durable_file(&fs, "a", b"synced");
                let mut file = fs.open_append(&path("a")).unwrap();
                file.append(b"-written-but-not-synced").unwrap();
                let written = fs.read(&path("a")).unwrap();
                let image = fs.crash_image();
                let bytes = image.read(&path("a")).unwrap();
                assert!(bytes.starts_with(b"synced") && bytes.len() <= written.len());
                let kept = bytes
                    .iter()
                    .zip(&written)
                    .take_while(|(a, b)| a == b)
                    .count();
                match torn {
                    Torn::Prefix => assert_eq!(kept, bytes.len(), "{torn:?}: not a prefix"),
                    Torn::Zeros => {
                        assert!(bytes[kept..].iter().all(|&b| b == 0), "{torn:?}: {bytes:?}")
                    }
                    _ => {}
                }
                longer += usize::from(bytes.len() > 6);
                // The same seed and calls give the same survivor.
                let again = fs_with_dir(seed).with_torn(torn);
                durable_file(&again, "a", b"synced");
                let mut file = again.open_append(&path("a")).unwrap();
                file.append(b"-written-but-not-synced").unwrap();
                assert_eq!(again.crash().read(&path("a")).unwrap(), bytes);
                // What survived is durable now, and the mode carries over.
                assert_eq!(image.synced_len(&path("a")), Some(bytes.len() as u64));
                assert_eq!(image.crash().read(&path("a")).unwrap(), bytes);
            }
            assert!(longer > 10, "{torn:?} never kept unsynced bytes");
        }
    }

    #[test]
    fn torn_directories_keep_a_prefix_of_their_changes_in_order() {
        let mut seen = BTreeSet::new();
        for seed in 0..64 {
            let fs = fs_with_dir(seed).with_torn(Torn::Prefix);
            // Changes, in order: create a, create b, rename a -> c, remove b.
            fs.create(&path("a")).unwrap();
            fs.create(&path("b")).unwrap();
            fs.rename(&path("a"), &path("c")).unwrap();
            fs.remove(&path("b")).unwrap();
            let after = names(&fs.crash());
            let prefixes: [&[&str]; 5] = [&[], &["a"], &["a", "b"], &["b", "c"], &["c"]];
            assert!(
                prefixes.contains(&&after.iter().map(String::as_str).collect::<Vec<_>>()[..]),
                "{after:?}"
            );
            seen.insert(after);
        }
        assert_eq!(seen.len(), 5, "not every prefix came up: {seen:?}");
    }

    #[test]
    fn reordered_directories_keep_any_subset_of_their_changes() {
        let mut seen = BTreeSet::new();
        for seed in 0..128 {
            let fs = fs_with_dir(seed).with_torn(Torn::Reordered);
            durable_file(&fs, "old", b"");
            fs.create(&path("a")).unwrap();
            fs.rename(&path("a"), &path("b")).unwrap();
            fs.remove(&path("old")).unwrap();
            seen.insert(names(&fs.crash()));
        }
        // Each of the three changes, kept or not: "a" without the rename,
        // the rename without the creation (of nothing: no "b"), the
        // removal alone.
        let want: BTreeSet<Vec<String>> = [
            &["old"][..],
            &["a", "old"],
            &["b", "old"],
            &[],
            &["a"],
            &["b"],
        ]
        .iter()
        .map(|names| names.iter().map(|n| n.to_string()).collect())
        .collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn zeros_follow_true_bytes_that_end_at_a_sector_boundary() {
        let written: Vec<u8> = (0..3000u32).map(|i| 1 + (i % 250) as u8).collect();
        let mut ends = BTreeSet::new();
        for seed in 0..256 {
            let fs = fs_with_dir(seed).with_torn(Torn::Zeros);
            durable_file(&fs, "a", &written[..700]);
            fs.open_append(&path("a"))
                .unwrap()
                .append(&written[700..])
                .unwrap();
            let bytes = fs.crash().read(&path("a")).unwrap();
            let end = bytes
                .iter()
                .zip(&written)
                .take_while(|(a, b)| a == b)
                .count();
            assert!(end >= 700 && bytes.len() <= written.len());
            assert!(bytes[end..].iter().all(|&b| b == 0));
            assert!(
                end == 700 || end % SECTOR_BYTES == 0 || end == bytes.len(),
                "true bytes end at {end} of {}",
                bytes.len()
            );
            ends.insert(end);
        }
        assert!(ends.contains(&700) && ends.contains(&1024) && ends.len() > 5);
    }

    #[test]
    fn composed_with_faulty_fs_a_short_write_leaves_half_unsynced() {
        let sim = fs_with_dir(1);
        let faulty = FaultyFs::new(Arc::new(sim.clone()));
        let mut file = faulty.create(&path("a")).unwrap();
        faulty.sync_dir(Path::new(DIR)).unwrap();
        file.append(b"0123").unwrap();
        file.sync_data().unwrap();
        faulty.fail_nth(Op::ShortWrite, 1);
        assert!(file.append(b"abcdefgh").is_err());
        assert_eq!(sim.read(&path("a")).unwrap(), b"0123abcd");
        assert_eq!(sim.crash_image().read(&path("a")).unwrap(), b"0123");
        faulty.fail_nth(Op::SyncDir, 1);
        faulty.create(&path("b")).unwrap();
        assert!(faulty.sync_dir(Path::new(DIR)).is_err());
        assert_eq!(
            names(&sim.crash()),
            ["a"],
            "a failed sync_dir made b durable"
        );
    }

    #[test]
    fn names_files_and_directories_behave_as_on_a_posix_file_system() {
        let fs = fs_with_dir(1);
        let missing = path("missing");
        not_found(fs.open_append(&missing).map(drop));
        not_found(fs.read(&missing));
        not_found(fs.read_prefix(&missing, 1));
        not_found(fs.size(&missing));
        not_found(fs.truncate(&missing, 0));
        not_found(fs.remove(&missing));
        not_found(fs.rename(&missing, &path("b")));
        not_found(fs.list(&missing));
        not_found(fs.sync_dir(&missing));
        not_found(fs.create(&missing.join("a")).map(drop));
        not_found(fs.lock(&missing.join("LOCK")).map(drop));
        for name in ["c", "a", "b"] {
            durable_file(&fs, name, name.as_bytes());
        }
        fs.create_dir_all(&path("sub")).unwrap();
        fs.create(&path("sub").join("inner")).unwrap();
        assert_eq!(names(&fs), ["a", "b", "c"], "sorted, files only");
        assert_eq!(fs.list(&path("sub")).unwrap(), ["inner"]);
        let e = fs.create(&path("sub")).map(drop).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::IsADirectory);
        let e = fs.create_dir_all(&path("a").join("x")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotADirectory);
        // create truncates (a new, empty file under the name).
        fs.create(&path("a")).unwrap().append(b"new").unwrap();
        assert_eq!(fs.read(&path("a")).unwrap(), b"new");
        assert_eq!(fs.read_prefix(&path("b"), 0).unwrap(), b"");
        assert_eq!(fs.size(&path("c")).unwrap(), 1);
        fs.rename(&path("a"), &path("a")).unwrap();
        assert_eq!(fs.read(&path("a")).unwrap(), b"new");
        // Locks: exclusive, shared by clones, released on drop.
        let held = fs.lock(&path("LOCK")).unwrap();
        let e = fs.clone().lock(&path("LOCK")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        drop(held);
        drop(fs.lock(&path("LOCK")).unwrap());
    }

    #[test]
    fn removed_files_are_forgotten_once_no_crash_can_bring_them_back() {
        let fs = fs_with_dir(1);
        let inodes = || fs.store().inodes.len();
        durable_file(&fs, "a", &[7; 1000]);
        fs.remove(&path("a")).unwrap();
        assert_eq!(inodes(), 1, "the durable entry still names a");
        fs.sync_dir(Path::new(DIR)).unwrap();
        assert_eq!(inodes(), 0);
        fs.create(&path("b")).unwrap();
        fs.remove(&path("b")).unwrap();
        assert_eq!(inodes(), 1, "a pending change still names b");
        fs.sync_dir(Path::new(DIR)).unwrap();
        assert_eq!(inodes(), 0);
        durable_file(&fs, "c", b"old");
        fs.create(&path("c")).unwrap();
        fs.rename(&path("c"), &path("d")).unwrap();
        assert_eq!(inodes(), 2, "the old c is durable, the new one pending");
        fs.sync_dir(Path::new(DIR)).unwrap();
        assert_eq!(inodes(), 1);
        assert_eq!(names(&fs.crash()), ["d"]);
    }

    // Under loom the engine's locks work only inside a loom model.
    #[cfg(not(loom))]
    #[test]
    fn an_engine_keeps_every_acknowledged_commit_through_crashes() {
        use crate::{Engine, Options};
        let options = |fs: &SimFs| Options {
            fs: Arc::new(fs.clone()),
            segment_bytes: 4096,
            ..Options::default()
        };
        let mut fs = SimFs::new(7).with_torn(Torn::Prefix);
        fs.create_dir_all(Path::new("/db")).unwrap();
        fs.sync_dir(Path::new("/")).unwrap();
        let mut acked = 0u32;
        for round in 0..5u32 {
            let engine = Engine::open("/db", options(&fs)).unwrap();
            assert_eq!(engine.snapshot().scan(..).unwrap().count(), acked as usize);
            for _ in 0..40 {
                let mut txn = engine.begin();
                txn.put(acked.to_be_bytes(), [round as u8; 100]).unwrap();
                txn.commit().unwrap();
                acked += 1;
            }
            if round == 2 {
                engine.checkpoint().unwrap();
            }
            assert!(engine.stats().log_segments > 1 || round == 2);
            // The engine is dropped after the cut: its closing flush fails.
            fs = fs.crash();
            drop(engine);
        }
    }
}
