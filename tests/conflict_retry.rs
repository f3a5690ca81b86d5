//! A transaction refused with `Error::Conflict` can be retried at once and
//! see the winner: under `SyncMode::Always` the winning commit is installed
//! (and so conflicts) before it is durable and visible, and the refusal
//! waits until it is visible. Without that, a retry begun right away reads
//! the old value and loses again, for as long as the winner's sync takes.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use mvledger::wal::{DirLock, FileSystem, StdFs, WritableFile};
use mvledger::{Engine, Error, Options};

/// A real file system whose file syncs take 300 ms while `slow` is set.
#[derive(Debug)]
struct SlowSync {
    slow: Arc<AtomicBool>,
}

#[derive(Debug)]
struct SlowFile {
    inner: Box<dyn WritableFile>,
    slow: Arc<AtomicBool>,
}

impl WritableFile for SlowFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.append(buf)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        if self.slow.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(300));
        }
        self.inner.sync_data()
    }
}

impl FileSystem for SlowSync {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        StdFs.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        StdFs.list(dir)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let inner = StdFs.create(path)?;
        Ok(Box::new(SlowFile {
            inner,
            slow: Arc::clone(&self.slow),
        }))
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let inner = StdFs.open_append(path)?;
        Ok(Box::new(SlowFile {
            inner,
            slow: Arc::clone(&self.slow),
        }))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        StdFs.read(path)
    }
    fn size(&self, path: &Path) -> io::Result<u64> {
        StdFs.size(path)
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        StdFs.truncate(path, len)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdFs.rename(from, to)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        StdFs.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdFs.sync_dir(dir)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        StdFs.lock(path)
    }
}

#[test]
fn a_retry_right_after_a_conflict_sees_the_winner() {
    let dir = tempfile::tempdir().unwrap();
    let slow = Arc::new(AtomicBool::new(false));
    let options = Options {
        fs: Arc::new(SlowSync {
            slow: Arc::clone(&slow),
        }),
        ..Options::default()
    };
    let engine = Arc::new(Engine::open(dir.path(), options).unwrap());
    let mut setup = engine.begin();
    setup.put(b"k", b"old").unwrap();
    setup.commit().unwrap();

    let mut loser = engine.begin();
    slow.store(true, Ordering::SeqCst);
    let commits_before = engine.stats().commits;
    let winner = {
        let engine = Arc::clone(&engine);
        std::thread::spawn(move || {
            let mut t = engine.begin();
            t.put(b"k", b"new").unwrap();
            t.commit().unwrap()
        })
    };
    // Wait until the winner is installed (counted) and waiting on its
    // slow sync: it conflicts with the loser but is not visible yet.
    while engine.stats().commits == commits_before {
        std::thread::yield_now();
    }
    loser.put(b"k", b"loser").unwrap();
    assert!(matches!(loser.commit(), Err(Error::Conflict)));
    // Retry at once: the snapshot must already hold the winner.
    let retry = engine.begin();
    assert_eq!(retry.get(b"k").unwrap().as_deref(), Some(&b"new"[..]));
    drop(retry);
    let winner_ts = winner.join().unwrap();
    assert!(engine.snapshot().ts() >= winner_ts);
}
