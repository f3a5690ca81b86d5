//! A fault-injecting file system for tests: it passes every call to an inner
//! `FileSystem` and fails the Nth call of a chosen kind, the way a full disk,
//! a failing controller or a yanked cable would.
//!
//! Faults are armed with `fail_nth(op, n)`: the n-th call of `op` from now
//! (1 = the next one) fails with an I/O error. `Op::ShortWrite` arms the n-th
//! append to write only the first half of its buffer and then fail, which
//! leaves a torn record on disk exactly as a crash in mid-write does.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use super::fs::{DirLock, FileSystem, WritableFile};

/// A kind of file-system call that can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Op {
    /// `create` or `open_append`.
    Open,
    /// `append`: fails without writing anything.
    Write,
    /// `append`: writes the first half of the buffer, then fails.
    ShortWrite,
    /// `sync_data` of a file.
    Sync,
    /// `sync_dir`.
    SyncDir,
    /// `rename`.
    Rename,
    /// `read`.
    Read,
    /// `remove`.
    Remove,
    /// `truncate`.
    Truncate,
}

#[derive(Debug, Default)]
struct Plan {
    /// Calls still to pass before the armed one fails, per kind.
    armed: HashMap<Op, u64>,
    /// Calls seen per kind (a `ShortWrite` counts as a `Write`).
    seen: HashMap<Op, u64>,
    /// Faults injected so far.
    injected: u64,
    /// Injected errors say the disk is full (`FaultyFs::as_full_disk`).
    full: bool,
}

impl Plan {
    /// The error an injected fault of `op` fails with.
    fn error(&self, op: Op) -> io::Error {
        if self.full {
            io::Error::new(
                io::ErrorKind::StorageFull,
                format!("injected fault: {op:?} (disk full)"),
            )
        } else {
            io::Error::other(format!("injected fault: {op:?}"))
        }
    }

    /// Counts a call of `op`: `Err` when it must fail.
    fn check(&mut self, op: Op) -> io::Result<()> {
        if self.hit(op) {
            Err(self.error(op))
        } else {
            Ok(())
        }
    }

    /// Counts a call of `op` and tells whether it must fail.
    fn hit(&mut self, op: Op) -> bool {
        *self.seen.entry(op).or_insert(0) += 1;
        match self.armed.get_mut(&op) {
            Some(left) if *left <= 1 => {
                self.armed.remove(&op);
                self.injected += 1;
                true
            }
            Some(left) => {
                *left -= 1;
                false
            }
            None => false,
        }
    }
}

/// The fault-injecting file system. Clones share one plan.
#[derive(Debug, Clone)]
pub struct FaultyFs {
    inner: Arc<dyn FileSystem>,
    plan: Arc<Mutex<Plan>>,
}

impl FaultyFs {
    /// Wraps `inner`; no fault is armed yet.
    pub fn new(inner: Arc<dyn FileSystem>) -> Self {
        FaultyFs {
            inner,
            plan: Arc::new(Mutex::new(Plan::default())),
        }
    }

    fn plan(&self) -> std::sync::MutexGuard<'_, Plan> {
        self.plan.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Arms the `n`-th call of `op` from now (1 = the next) to fail.
    pub fn fail_nth(&self, op: Op, n: u64) {
        self.plan().armed.insert(op, n.max(1));
    }

    /// Makes the injected faults fail as a full disk does
    /// (`ErrorKind::StorageFull`) or, by default, as a failing device
    /// (`ErrorKind::Other`).
    pub fn as_full_disk(&self, full: bool) {
        self.plan().full = full;
    }

    /// Disarms every fault.
    pub fn clear(&self) {
        self.plan().armed.clear();
    }

    /// How many calls of `op` have been made (appends count as `Write`).
    pub fn calls(&self, op: Op) -> u64 {
        self.plan().seen.get(&op).copied().unwrap_or(0)
    }

    /// How many faults have been injected.
    pub fn injected(&self) -> u64 {
        self.plan().injected
    }

    fn check(&self, op: Op) -> io::Result<()> {
        self.plan().check(op)
    }
}

#[derive(Debug)]
struct FaultyFile {
    inner: Box<dyn WritableFile>,
    plan: Arc<Mutex<Plan>>,
}

impl FaultyFile {
    fn check(&self, op: Op) -> io::Result<()> {
        self.plan
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .check(op)
    }
}

impl WritableFile for FaultyFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let (fail, short) = {
            let mut plan = self.plan.lock().unwrap_or_else(PoisonError::into_inner);
            let fail = plan.hit(Op::Write);
            // A short write is armed separately but counted with writes.
            let short = match plan.armed.get_mut(&Op::ShortWrite) {
                Some(left) if *left <= 1 => {
                    plan.armed.remove(&Op::ShortWrite);
                    plan.injected += 1;
                    true
                }
                Some(left) => {
                    *left -= 1;
                    false
                }
                None => false,
            };
            (
                fail.then(|| plan.error(Op::Write)),
                short.then(|| plan.error(Op::ShortWrite)),
            )
        };
        if let Some(e) = fail {
            return Err(e);
        }
        if let Some(e) = short {
            self.inner.append(&buf[..buf.len() / 2])?;
            return Err(e);
        }
        self.inner.append(buf)
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.check(Op::Sync)?;
        self.inner.sync_data()
    }

    /// Passed through, not counted as a write: the faults a test arms
    /// keep hitting the appends they count.
    fn zero_to(&mut self, len: u64) -> io::Result<bool> {
        self.inner.zero_to(len)
    }

    /// Counted as a `truncate`, as the cut it makes.
    fn set_len(&mut self, len: u64) -> io::Result<bool> {
        self.check(Op::Truncate)?;
        self.inner.set_len(len)
    }
}

impl FileSystem for FaultyFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        self.check(Op::Open)?;
        let inner = self.inner.create(path)?;
        Ok(Box::new(FaultyFile {
            inner,
            plan: Arc::clone(&self.plan),
        }))
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        self.check(Op::Open)?;
        let inner = self.inner.open_append(path)?;
        Ok(Box::new(FaultyFile {
            inner,
            plan: Arc::clone(&self.plan),
        }))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.check(Op::Read)?;
        self.inner.read(path)
    }
    fn read_prefix(&self, path: &Path, len: usize) -> io::Result<Vec<u8>> {
        self.check(Op::Read)?;
        self.inner.read_prefix(path, len)
    }
    fn size(&self, path: &Path) -> io::Result<u64> {
        self.inner.size(path)
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        self.check(Op::Truncate)?;
        self.inner.truncate(path, len)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.check(Op::Rename)?;
        self.inner.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        self.check(Op::Remove)?;
        self.inner.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.check(Op::SyncDir)?;
        self.inner.sync_dir(dir)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        self.inner.lock(path)
    }
}
