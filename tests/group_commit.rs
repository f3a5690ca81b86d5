//! Group commit (ARCHITECTURE.md "Commit protocol", invariant 3; issue 2,
//! behaviour point 2): under `SyncMode::Always`, concurrent committers all
//! succeed, share syncs (`Stats::commits_per_sync` above one: an assertion
//! about sharing, not speed), are all back after reopen, and each of them
//! returns only once a sync has covered its own record.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use mvledger::wal::{DirLock, FileSystem, StdFs, WritableFile};
use mvledger::{Engine, Options};

type State = BTreeMap<Vec<u8>, Vec<u8>>;

/// Per file, how many of its bytes the last successful sync made durable.
type Durable = Arc<Mutex<HashMap<PathBuf, u64>>>;

/// A pass-through file system that remembers what each sync made durable,
/// so that a test can build the directory a power cut would leave.
#[derive(Debug, Clone, Default)]
struct CrashFs {
    durable: Durable,
}

#[derive(Debug)]
struct CrashFile {
    inner: Box<dyn WritableFile>,
    path: PathBuf,
    written: u64,
    durable: Durable,
}

impl WritableFile for CrashFile {
    fn append(&mut self, buf: &[u8]) -> io::Result<()> {
        let result = self.inner.append(buf);
        self.written = match result {
            Ok(()) => self.written + buf.len() as u64,
            // Some of it may have landed: count what the file holds.
            Err(_) => std::fs::metadata(&self.path)?.len(),
        };
        result
    }

    fn sync_data(&mut self) -> io::Result<()> {
        self.inner.sync_data()?;
        let mut durable = self.durable.lock().unwrap();
        durable.insert(self.path.clone(), self.written);
        Ok(())
    }
}

impl CrashFs {
    fn file(&self, inner: Box<dyn WritableFile>, path: &Path, len: u64) -> Box<dyn WritableFile> {
        self.durable.lock().unwrap().insert(path.to_owned(), len);
        Box::new(CrashFile {
            inner,
            path: path.to_owned(),
            written: len,
            durable: Arc::clone(&self.durable),
        })
    }

    /// Copies `from` into `to` as a power cut now would leave it: every
    /// file this file system wrote cut to its durable length.
    fn image(&self, from: &Path, to: &Path) {
        let durable = self.durable.lock().unwrap().clone();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            if !entry.file_type().unwrap().is_file() || entry.file_name() == "LOCK" {
                continue;
            }
            let mut bytes = std::fs::read(entry.path()).unwrap();
            if let Some(&len) = durable.get(&entry.path()) {
                bytes.truncate(len as usize);
            }
            std::fs::write(to.join(entry.file_name()), bytes).unwrap();
        }
    }
}

impl FileSystem for CrashFs {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        StdFs.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        StdFs.list(dir)
    }
    fn create(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let inner = StdFs.create(path)?;
        Ok(self.file(inner, path, 0))
    }
    fn open_append(&self, path: &Path) -> io::Result<Box<dyn WritableFile>> {
        let inner = StdFs.open_append(path)?;
        // What a previous engine left was synced by its close or recovery.
        let len = StdFs.size(path)?;
        Ok(self.file(inner, path, len))
    }
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        StdFs.read(path)
    }
    fn size(&self, path: &Path) -> io::Result<u64> {
        StdFs.size(path)
    }
    fn truncate(&self, path: &Path, len: u64) -> io::Result<()> {
        StdFs.truncate(path, len)?;
        self.durable.lock().unwrap().insert(path.to_owned(), len);
        Ok(())
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        StdFs.rename(from, to)?;
        let mut durable = self.durable.lock().unwrap();
        if let Some(len) = durable.remove(from) {
            durable.insert(to.to_owned(), len);
        }
        Ok(())
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        StdFs.remove(path)?;
        self.durable.lock().unwrap().remove(path);
        Ok(())
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        StdFs.sync_dir(dir)
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn DirLock>> {
        StdFs.lock(path)
    }
}

fn dump(engine: &Engine) -> State {
    engine
        .snapshot()
        .scan(..)
        .unwrap()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

fn key(thread: usize, i: usize) -> Vec<u8> {
    format!("t{thread:02}-{i:04}").into_bytes()
}

fn value(thread: usize, i: usize) -> Vec<u8> {
    format!("thread {thread} commit {i}").into_bytes()
}

/// Runs `threads` committers of `per_thread` single-key commits each and
/// returns, per thread, the commit timestamps in order; `on_ack` runs right
/// after each commit returns.
fn run_committers(
    engine: &Engine,
    threads: usize,
    per_thread: usize,
    on_ack: &(dyn Fn(u64) + Sync),
) -> Vec<Vec<u64>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                s.spawn(move || {
                    (0..per_thread)
                        .map(|i| {
                            let mut txn = engine.begin();
                            txn.put(key(t, i), value(t, i)).unwrap();
                            let ts = txn
                                .commit()
                                .unwrap_or_else(|e| panic!("thread {t} commit {i}: {e}"));
                            on_ack(ts);
                            ts
                        })
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn all_writes(threads: usize, per_thread: usize) -> State {
    (0..threads)
        .flat_map(|t| (0..per_thread).map(move |i| (key(t, i), value(t, i))))
        .collect()
}

#[test]
fn concurrent_committers_share_syncs_and_every_commit_is_back() {
    const THREADS: usize = 16;
    const PER_THREAD: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    {
        let engine = Engine::open(dir.path(), Options::default()).unwrap();
        let tss = run_committers(&engine, THREADS, PER_THREAD, &|_| {});
        let mut all: Vec<u64> = tss.iter().flatten().copied().collect();
        for (t, own) in tss.iter().enumerate() {
            assert!(
                own.windows(2).all(|w| w[0] < w[1]),
                "thread {t}: ts not increasing"
            );
        }
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), THREADS * PER_THREAD, "two commits shared a ts");

        let stats = engine.stats();
        assert_eq!(stats.commits, (THREADS * PER_THREAD) as u64);
        assert_eq!(stats.durable_ts, *all.last().unwrap());
        assert_eq!(stats.visible_ts, stats.durable_ts);
        assert!(
            stats.commits_per_sync() > 1.0,
            "{} commits took {} syncs: concurrent committers did not share them",
            stats.commits,
            stats.syncs
        );
        assert_eq!(dump(&engine), all_writes(THREADS, PER_THREAD));
    }
    let engine = Engine::open(dir.path(), Options::default()).unwrap();
    assert_eq!(
        dump(&engine),
        all_writes(THREADS, PER_THREAD),
        "commits missing (or extra) after reopen"
    );
}

/// Where each record ends in the log, by ts, read by the format: segments
/// of a 32-byte header and records `u32 len | u32 crc | u8 kind | payload`,
/// the payload starting with its `u64` ts.
fn record_ends(dir: &Path) -> HashMap<u64, (PathBuf, u64)> {
    let mut ends = HashMap::new();
    let mut segments: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    segments.sort();
    for path in segments {
        let bytes = std::fs::read(&path).unwrap();
        let mut at = 32;
        while at + 17 <= bytes.len() {
            let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            let ts = u64::from_le_bytes(bytes[at + 9..at + 17].try_into().unwrap());
            let end = at + 9 + len;
            assert!(
                end <= bytes.len(),
                "a record runs past the end of {}",
                path.display()
            );
            ends.insert(ts, (path.clone(), end as u64));
            at = end;
        }
    }
    ends
}

#[test]
fn every_committer_returns_only_after_a_sync_covered_its_record() {
    const THREADS: usize = 8;
    const PER_THREAD: usize = 60;
    let dir = tempfile::tempdir().unwrap();
    let crash = CrashFs::default();
    // Small segments, so that some groups straddle a rotation.
    let options = Options {
        fs: Arc::new(crash.clone()),
        segment_bytes: 4096,
        ..Options::default()
    };
    let engine = Engine::open(dir.path(), options).unwrap();
    // Right after each commit returns: its ts and what was durable then.
    let acks: Mutex<Vec<(u64, HashMap<PathBuf, u64>)>> = Mutex::new(Vec::new());
    run_committers(&engine, THREADS, PER_THREAD, &|ts| {
        let durable = crash.durable.lock().unwrap().clone();
        acks.lock().unwrap().push((ts, durable));
    });
    assert!(engine.stats().log_segments > 2, "the log did not rotate");
    let image = tempfile::tempdir().unwrap();
    crash.image(dir.path(), image.path());
    drop(engine);

    let ends = record_ends(dir.path());
    let acks = acks.into_inner().unwrap();
    assert_eq!(acks.len(), THREADS * PER_THREAD);
    for (ts, durable) in &acks {
        let (path, end) = &ends[ts];
        let synced = durable.get(path).copied().unwrap_or(0);
        assert!(
            synced >= *end,
            "commit ts {ts} returned when {} was durable to byte {synced}, \
             but its record ends at {end}",
            path.display()
        );
    }
    // A power cut after the last commit returned keeps every commit.
    let engine = Engine::open(image.path(), Options::default()).unwrap();
    assert_eq!(dump(&engine), all_writes(THREADS, PER_THREAD));
}
