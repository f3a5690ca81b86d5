//! The engine: open and recovery, the commit path (the sequencer), and the
//! calls that act on the whole store.
//!
//! Commit protocol (ARCHITECTURE.md, "Commit protocol"), in `commit_writes`:
//! 1. enter the sequencer (one mutex; the only place timestamps are taken);
//! 2. validate: no version newer than the transaction's start ts on any key
//!    it wrote (or, under `Serializable`, read), else `Error::Conflict`;
//! 3. take `commit_ts = last_ts + 1`;
//! 4. append the redo record to the log buffer (a big commit under
//!    `Always` also starts its write and sync on a helper thread);
//! 5. install the new versions under `commit_ts` (invisible: the visible ts
//!    is below it); leave the sequencer, and tell the log
//!    (`Log::installed`: every commit up to `commit_ts` is installed, since
//!    they install in ts order inside the sequencer);
//! 6. let GC prune a few keys;
//! 7. wait for the group commit to make the record durable. Under
//!    `Always` the visible ts is the lower of the durable and the
//!    installed ts, published by the log when either moves
//!    (`wal::writer`); under `Interval` and `Never` it is published in
//!    step 5.
//!
//! Because installs and appends both follow ts order, "installed" and
//! "durable" each reach the timestamps in order, and the visible ts never
//! passes either: a reader never sees half a commit or a commit that could
//! still be lost.

use std::path::{Path, PathBuf};

use super::batch::{AfterInstall, Batch};
use super::checkpoint;
use super::gc::Collector;
use super::index::{Index, Writes};
use super::options::Options;
use super::readers::{Horizon, Readers};
use super::snapshot::Snapshot;
use super::stats::Stats;
use super::txn::{ReadSet, Transaction, WriteSet};
use crate::error::{Error, Result};
use crate::sync::{Arc, AtomicU64, Mutex, Ordering};
use crate::wal::SyncMode;
use crate::wal::reader;
use crate::wal::record::{self, KIND_COMMIT};
use crate::wal::writer::{Log, LogConfig};

/// The file that locks a data directory against a second open engine.
const LOCK_FILE: &str = "LOCK";
/// Commits with at least this many writes, under `SyncMode::Always`,
/// write and sync their record on a helper thread while they install:
/// installing a ledger batch of 8,190 transfers takes milliseconds, as
/// long as the sync or longer, and one thread spawned per such commit
/// costs tens of microseconds.
const OVERLAP_MIN: usize = 4096;
/// Under `Always`, `apply_logged` syncs a logical record of at least this
/// many bytes on a helper thread while its batch runs (about 500
/// transfers); a smaller one waits for group commit, like any commit.
const EARLY_SYNC_BYTES: usize = 64 << 10;

#[derive(Debug)]
struct Sequencer {
    last_ts: u64,
    /// A reused buffer to encode records in.
    scratch: Vec<u8>,
}

/// What an `Engine` and every transaction and snapshot of it share.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) dir: PathBuf,
    pub(crate) options: Options,
    pub(crate) index: Index,
    seq: Mutex<Sequencer>,
    pub(crate) visible: Arc<AtomicU64>,
    pub(crate) log: Arc<Log>,
    pub(crate) readers: Readers,
    gc: Collector,
    commits: AtomicU64,
    conflicts: AtomicU64,
    pub(crate) checkpoints: checkpoint::State,
    /// The damaged checkpoints `open` recovered around.
    set_aside: Vec<SetAside>,
    /// What `open` cut off the end of the log (`TailCut`).
    cuts: Vec<crate::wal::TailCut>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The last user is gone: stop the interval sync thread first, so
        // that the log closes here (a clean close: synced, lock released)
        // and not on that thread after this returns.
        #[cfg(not(loom))]
        self.log.stop_interval_sync();
    }
}

/// A damaged checkpoint that `Engine::open` found and recovered around:
/// the state was rebuilt from an older checkpoint and the log, which
/// reach everything the damaged one held, and the file was renamed (kept
/// for a look, no longer read). See `Engine::set_aside`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetAside {
    /// Where the damaged file is now (its name plus `.damaged`).
    pub file: PathBuf,
    /// What was wrong with it (the corruption, with its file and offset).
    pub reason: String,
}

/// `e`, when it is a corruption, with what the replay cut before `open`
/// failed (`Engine::recovery_cuts` of an engine that never opened).
fn with_cuts(e: Error, cuts: &[crate::wal::TailCut]) -> Error {
    match e {
        Error::Corruption {
            file,
            offset,
            mut reason,
        } if !cuts.is_empty() => {
            for cut in cuts {
                reason.push_str(&format!("; recovery had cut {cut}"));
            }
            Error::Corruption {
                file,
                offset,
                reason,
            }
        }
        e => e,
    }
}

/// A multi-version key-value engine with redo-log commit. `Send + Sync`:
/// share it between threads by reference or behind an `Arc`.
///
/// Dropping it syncs the log (under every `SyncMode`: what was committed
/// is durable once the drop returns). Its snapshots and transactions keep
/// it open: the directory stays locked, and a transaction can still
/// commit, until the last of them is dropped too; that last drop closes
/// the log (synced, its tail cut) and releases the directory.
#[derive(Debug)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        // The last handle's drop closes the log (`Inner`'s and the log's
        // own `Drop`); one with snapshots or transactions still alive
        // syncs what is committed, as a close would.
        if Arc::strong_count(&self.inner) > 1 && !self.inner.log.is_poisoned() {
            let _ = self.inner.log.flush(true);
        }
    }
}

/// The key of a directory's layer stamp (`Replay::layer`): reserved, so
/// that no write through `Transaction` or `Batch` can make or change it
/// (`Error::InvalidArgument`); it can be read like any key.
pub const LAYER_KEY: &[u8] = b"\0mvledger layer";

/// `check_sizes` for a write through the public API, which may not touch
/// the layer stamp.
pub(crate) fn check_write(key: &[u8], value: Option<&[u8]>) -> Result<()> {
    check_sizes(key, value)?;
    if key == LAYER_KEY {
        return Err(Error::invalid(format!(
            "key {:?} is reserved: it names the layer a directory belongs to",
            String::from_utf8_lossy(LAYER_KEY)
        )));
    }
    Ok(())
}

pub(crate) fn check_sizes(key: &[u8], value: Option<&[u8]>) -> Result<()> {
    if key.len() > record::MAX_KEY_BYTES {
        return Err(Error::invalid(format!(
            "key of {} bytes is over the limit of {}",
            key.len(),
            record::MAX_KEY_BYTES
        )));
    }
    if let Some(value) = value
        && value.len() > record::MAX_VALUE_BYTES
    {
        return Err(Error::invalid(format!(
            "value of {} bytes is over the limit of {}",
            value.len(),
            record::MAX_VALUE_BYTES
        )));
    }
    Ok(())
}

/// How a commit is logged.
#[derive(Debug, Clone, Copy)]
enum Logged<'a> {
    /// Its writes (a commit record).
    Physical,
    /// An opaque body the `Replay` hook re-executes (a logical record).
    Logical(&'a [u8]),
}

fn check_payload(writes: &impl Writes, logged: Logged<'_>) -> Result<()> {
    match logged {
        Logged::Physical => check_payload_bytes(record::commit_payload_bytes(writes.each())),
        Logged::Logical(body) => check_payload_bytes(8 + body.len()),
    }
}

fn check_payload_bytes(payload: usize) -> Result<()> {
    if payload > record::MAX_PAYLOAD_BYTES {
        return Err(Error::invalid(format!(
            "commit of {payload} bytes is over the limit of {}",
            record::MAX_PAYLOAD_BYTES
        )));
    }
    Ok(())
}

impl Engine {
    /// Opens the engine in `dir`, creating the directory if needed, or
    /// recovering from what is in it: the newest valid checkpoint, then the
    /// log after it. Fails with `Error::Corruption` (file and offset) when
    /// the files are damaged beyond a torn tail, and with
    /// `Error::InvalidArgument` when another engine has the directory open.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Engine> {
        let dir = dir.as_ref().to_path_buf();
        if let SyncMode::Interval(every) = options.sync
            && every.is_zero()
        {
            return Err(Error::invalid(
                "SyncMode::Interval needs a non-zero interval",
            ));
        }
        if options.segment_bytes < 4096 {
            return Err(Error::invalid("segment_bytes must be at least 4096"));
        }
        let fs = std::sync::Arc::clone(&options.fs);
        fs.create_dir_all(&dir)
            .map_err(|e| Error::creating_dir(&dir, e))?;
        // The directory's own entry must be durable too, or a power cut can
        // take the whole directory. Higher ancestors (which this call may
        // also have created) are synced best-effort: one we may not read
        // must not stop an open.
        for (depth, parent) in dir.ancestors().skip(1).enumerate() {
            let parent = if parent.as_os_str().is_empty() {
                Path::new(".")
            } else {
                parent
            };
            match fs.sync_dir(parent) {
                Err(e) if depth == 0 => return Err(Error::Io(e)),
                _ => {}
            }
            if parent == Path::new(".") {
                break;
            }
        }
        let lock = fs.lock(&dir.join(LOCK_FILE)).map_err(|e| {
            if e.kind() == std::io::ErrorKind::WouldBlock {
                Error::invalid(format!(
                    "{} is already open (its LOCK is held by this or another process); \
                     close it there first (an engine closes once it and every snapshot \
                     and transaction taken from it are dropped)",
                    dir.display()
                ))
            } else if e.kind() == std::io::ErrorKind::ReadOnlyFilesystem {
                Error::invalid(format!(
                    "{} is on a read-only file system, and an open engine writes to its \
                     directory (its LOCK, then its log); `mvledger inspect` reads a data \
                     directory without opening it",
                    dir.display()
                ))
            } else {
                Error::Io(e)
            }
        })?;
        // A segment or checkpoint name on something that is not a file (a
        // link to a volume that is not mounted, say) is damage: passed
        // over, its commits would be missing without a word.
        for (name, what) in fs.non_files(&dir)? {
            if crate::wal::segment::parse_name(&name).is_some()
                || checkpoint::parse_name(&name).is_some()
            {
                return Err(Error::corruption(
                    dir.join(&name),
                    0,
                    format!(
                        "{what} under a log segment's or checkpoint's name, where a file belongs"
                    ),
                ));
            }
        }
        let index = Index::new();
        let loaded = checkpoint::recover(fs.as_ref(), &dir, &index)?;
        let mut visit = Vec::new();
        // A logical record with no hook to replay it: the directory is a
        // layer's (a ledger's), opened as a bare engine. Not damage.
        let mut foreign = false;
        let replayed =
            reader::replay(
                fs.as_ref(),
                &dir,
                loaded.ts,
                options.repair,
                |frame| match frame.kind {
                    KIND_COMMIT => {
                        let (ts, writes) = record::decode_commit(frame.payload)?;
                        // Write by write, each replacing the key's state: a
                        // record (checksum intact) may name a key twice,
                        // which `install_all` would take as two versions
                        // at one ts.
                        for (key, value) in writes {
                            index.install_replay(key, ts, value);
                        }
                        Ok(())
                    }
                    _ => {
                        let Some(replay) = &options.replay else {
                            foreign = true;
                            return Err("a logical record, but no Replay hook was given".into());
                        };
                        let ts = frame.ts();
                        let mut batch = Batch::new(&index);
                        replay
                            .replay(&mut batch, &frame.payload[8..])
                            .map_err(|e| format!("replaying a logical record failed: {e}"))?;
                        let (writes, _) = batch.into_parts();
                        // In bulk, as live (a ledger batch is thousands of
                        // writes). An install keeps the version it replaces
                        // until the next one; those with an older version,
                        // and new tombstones, are pruned once all is read.
                        visit.extend(index.install_all(writes, ts, &Horizon::at(ts)));
                        Ok(())
                    }
                },
            );
        if foreign {
            return Err(Error::invalid(format!(
                "{} holds logical records, which a layer above the engine wrote \
                 (a ledger's log): open it with `Ledger::open` (or `Cluster::open`), \
                 or with the `Options::replay` that replays them",
                dir.display()
            )));
        }
        let mut set_aside = Vec::new();
        let mut replayed = match (replayed, loaded.damage) {
            (Ok(r), None) => r,
            // The log cannot reach back to the fallback: the damaged
            // checkpoint is the cause worth reporting.
            (Err(_), Some(damage)) => return Err(damage),
            (Err(e), None) => return Err(e),
            (Ok(r), Some(damage)) => {
                if r.last_ts.max(loaded.ts) < loaded.newest_named_ts {
                    // The fallback does not reach what the damaged
                    // checkpoint held: fail rather than lose it. What the
                    // replay cut is gone by now: say so here, since no
                    // engine will list it.
                    return Err(with_cuts(damage, &r.cut));
                }
                // Recovered around it: set the damaged files aside (kept
                // for inspection) so that they count no more.
                for (path, reason) in &loaded.damaged {
                    let mut aside = path.clone().into_os_string();
                    aside.push(".damaged");
                    fs.rename(path, std::path::Path::new(&aside))?;
                    set_aside.push(SetAside {
                        file: PathBuf::from(aside),
                        reason: reason.clone(),
                    });
                }
                fs.sync_dir(&dir)?;
                r
            }
        };
        let last_ts = replayed.last_ts.max(loaded.ts);
        let cuts = std::mem::take(&mut replayed.cut);
        index.prune_all(visit, &Horizon::at(last_ts));
        if last_ts >= u64::MAX / 2 {
            // Only a forged file gets here: checksums passed, yet no engine
            // could have taken this many timestamps.
            return Err(Error::invalid(format!(
                "recovered ts {last_ts} leaves no room for new timestamps"
            )));
        }
        let visible = Arc::new(AtomicU64::new(last_ts));
        let config = LogConfig {
            fs: std::sync::Arc::clone(&fs),
            dir: dir.clone(),
            mode: options.sync,
            segment_bytes: options.segment_bytes,
            lock,
        };
        let log = Log::open(
            config,
            replayed.segments,
            replayed.last_ts,
            replayed.tail_read,
            replayed.closed,
            last_ts,
            Arc::clone(&visible),
        )?;
        let log = Arc::new(log);
        #[cfg(not(loom))]
        log.start_interval_sync();
        let inner = Inner {
            dir,
            options,
            index,
            seq: Mutex::new(Sequencer {
                last_ts,
                scratch: Vec::new(),
            }),
            visible,
            log,
            readers: Readers::default(),
            gc: Collector::default(),
            commits: AtomicU64::new(0),
            conflicts: AtomicU64::new(0),
            checkpoints: checkpoint::State::new(loaded.ts),
            set_aside,
            cuts,
        };
        let engine = Engine {
            inner: Arc::new(inner),
        };
        engine.check_layer()?;
        Ok(engine)
    }

    /// Checks the directory's layer stamp against `Options::replay` (see
    /// `Replay`), and stamps an empty directory opened with a hook.
    fn check_layer(&self) -> Result<()> {
        let snap = self.snapshot();
        let stamp = snap.get(LAYER_KEY)?;
        let layer = self.inner.options.replay.as_ref().map(|r| r.layer());
        let dir = self.inner.dir.display();
        match (layer, stamp) {
            (None, None) => Ok(()),
            (None, Some(stamp)) => Err(Error::invalid(format!(
                "{dir} belongs to a {}: open it with that layer's `open` (a ledger's \
                 with `Ledger::open`, a cluster shard's with `Cluster::open`), or with \
                 the `Options::replay` of that layer",
                String::from_utf8_lossy(&stamp)
            ))),
            (Some(layer), Some(stamp)) if stamp.as_ref() == layer.as_bytes() => Ok(()),
            (Some(layer), Some(stamp)) => Err(Error::invalid(format!(
                "{dir} belongs to a {}, not a {layer}",
                String::from_utf8_lossy(&stamp)
            ))),
            (Some(layer), None) => {
                if snap.scan(..)?.next().is_some() {
                    return Err(Error::invalid(format!(
                        "{dir} holds keys that no {layer} wrote (a key-value engine's \
                         data?): open it with `Engine::open` without `Options::replay`"
                    )));
                }
                drop(snap);
                self.inner
                    .apply(|batch| batch.put_stamp(layer.as_bytes()))?;
                Ok(())
            }
        }
    }

    /// Begins a read-write transaction at the current visible ts.
    pub fn begin(&self) -> Transaction {
        Transaction::new(Arc::clone(&self.inner))
    }

    /// A read-only view at the current visible ts. It never blocks writers
    /// and writers never block it.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::new(Arc::clone(&self.inner))
    }

    /// Runs `f` inside the sequencer against the latest installed state and
    /// commits the writes it makes as one record at one ts, group-committed
    /// like any transaction. It never conflicts: nothing can change under
    /// `f`. `f` must be short and must not block. If `f` returns an error,
    /// nothing is written. Returns the commit ts and `f`'s result.
    ///
    /// When `f` calls `Batch::log_as`, the record holds that body instead of
    /// the writes, and recovery hands the body to `Options::replay`, which
    /// must make the same writes from the same state. Without
    /// `Options::replay`, such a batch is refused with
    /// `Error::InvalidArgument` and writes nothing.
    pub fn apply<R>(&self, f: impl FnOnce(&mut Batch<'_>) -> Result<R>) -> Result<(u64, R)> {
        self.inner.apply(f)
    }

    /// `apply` for a batch whose logical record is known before it runs:
    /// `prepare` reads what it needs of the latest state and returns the
    /// record's body (what `Options::replay` gets on recovery) and what `f`
    /// needs; the record is appended before `f` runs, and under
    /// `SyncMode::Always` a big one (`EARLY_SYNC_BYTES`) is written and
    /// synced on a helper thread while `f` runs and its writes install, so
    /// that its sync costs no time of its own unless it takes longer than
    /// the batch. `f` must make the writes the replay hook would make from
    /// the body (`Batch::log_as` is ignored here).
    ///
    /// If `f` fails, its record is already in the log but its writes are
    /// not in the state: the engine is poisoned (every later call returns
    /// `Error::Poisoned`), and a reopen replays the record. Use it where
    /// `f` cannot fail but for a bug.
    pub(crate) fn apply_logged<P, R>(
        &self,
        prepare: impl FnOnce(&Batch<'_>) -> Result<(Vec<u8>, P)>,
        f: impl FnOnce(&mut Batch<'_>, P) -> Result<R>,
    ) -> Result<(u64, R)> {
        self.inner.apply_logged(prepare, f)
    }

    /// Brings the newest versions of `keys` into the processor's cache, in
    /// passes whose cache misses overlap (a hint for a caller about to
    /// read them one by one; it changes nothing and returns nothing).
    pub(crate) fn warm<K: AsRef<[u8]> + Sync>(&self, keys: &[K]) {
        self.inner.index.warm_keys(keys);
    }

    /// Calls `f` with each key starting with `first` and its newest value
    /// (`None`: deleted), in no order (`Index::for_each_latest_in`).
    pub(crate) fn for_each_latest_in(&self, first: u8, f: impl FnMut(&[u8], Option<&[u8]>)) {
        self.inner.index.for_each_latest_in(first, f);
    }

    /// Writes everything buffered in the log and syncs it.
    pub fn sync(&self) -> Result<()> {
        self.inner.log.check()?;
        self.inner.log.flush(true).map(|_| ())
    }

    /// Writes a checkpoint: every live key at one snapshot ts, to a new
    /// file, atomically; then removes the log segments that neither it nor
    /// the previous checkpoint needs. Commits go on meanwhile.
    pub fn checkpoint(&self) -> Result<()> {
        checkpoint::write(&self.inner)
    }

    /// Prunes every key now: the full GC sweep.
    pub fn gc(&self) {
        let h = self.inner.horizon();
        self.inner.index.sweep(&h);
        self.inner.gc.note(h);
    }

    /// The damaged checkpoints this engine's `open` recovered around (set
    /// aside as `*.ckpt.damaged`); empty when it found none. Recovery does
    /// not fail over them when an older checkpoint and the log reach what
    /// they held, but damage on disk is worth a look: this is how `open`
    /// reports it.
    pub fn set_aside(&self) -> &[SetAside] {
        &self.inner.set_aside
    }

    /// What this engine's `open` cut off the end of the log, or removed,
    /// other than zeros: a torn tail (a record a crash interrupted, never
    /// acknowledged under `SyncMode::Always`), a segment torn at its
    /// creation, or what an explicit repair dropped. Empty after a clean
    /// close. Recovery does this on its own, as it must to append again;
    /// this is how `open` says that it did.
    pub fn recovery_cuts(&self) -> &[crate::wal::TailCut] {
        &self.inner.cuts
    }

    /// Why the engine is poisoned: the first failure's message (a failed
    /// write or sync, with its file), or `None` while it is not. Calls on
    /// a poisoned engine return `Error::Poisoned` alone; this says what
    /// happened, also when the failure met no caller (the sync thread of
    /// `SyncMode::Interval`).
    pub fn poisoned_by(&self) -> Option<String> {
        self.inner.log.poisoned_by()
    }

    /// The engine's counters.
    pub fn stats(&self) -> Stats {
        self.inner.stats()
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }
}

/// Poisons the log if dropped while its thread unwinds. `append_record`
/// gives one with every record it appends, held until the record is
/// published: a panic in between (in a batch's code, or in a helper thread
/// the commit waits for) leaves the log with a record the state may not
/// hold, and the sequencer not past its ts, so no commit may follow it. A
/// reopen replays the log.
struct PoisonOnPanic<'a>(&'a Log);

impl Drop for PoisonOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0
                .poison("a panic while a logged commit was being applied");
        }
    }
}

impl Inner {
    pub(crate) fn watermark(&self) -> u64 {
        self.readers.watermark(&self.visible)
    }

    /// What GC may drop now (`readers::Horizon`).
    pub(crate) fn horizon(&self) -> Horizon {
        self.readers.horizon(&self.visible)
    }

    fn stats(&self) -> Stats {
        let log = self.log.stats();
        Stats {
            keys: self.index.keys(),
            versions_alive: self.index.versions(),
            versions_reclaimed: self.index.reclaimed(),
            watermark: self.watermark(),
            readers: self.readers.count(),
            visible_ts: self.visible.load(Ordering::Acquire),
            durable_ts: log.durable_ts,
            log_bytes: log.log_bytes,
            log_segments: log.segments,
            syncs: log.syncs,
            rotations_refused: log.rotations_refused,
            commits: self.commits.load(Ordering::Relaxed),
            conflicts: self.conflicts.load(Ordering::Relaxed),
            checkpoints: self.checkpoints.written(),
            checkpoint_ts: self.checkpoints.newest_ts(),
        }
    }

    /// Refuses a transaction that lost to commits up to `winners`. Under
    /// `SyncMode::Always` the winners may be installed but not yet visible;
    /// the refusal waits until they are, so that a retry that begins right
    /// away reads them instead of losing to them again and again.
    fn conflict(&self, winners: u64) -> Error {
        self.conflicts.fetch_add(1, Ordering::Relaxed);
        if self.options.sync == SyncMode::Always
            && let Err(e) = self.log.sync_to(winners)
        {
            return e;
        }
        Error::Conflict
    }

    /// Commits `writes` for a transaction that began at `start_ts`: the
    /// commit protocol of the module comment. Returns the commit ts.
    ///
    /// The transaction's reader registration at `start_ts` is dropped as
    /// soon as it leaves the sequencer: it reads nothing more, and GC, which
    /// rides on this very commit, must not be held back by it.
    pub(crate) fn commit_writes(
        &self,
        start_ts: u64,
        writes: WriteSet,
        reads: Option<&ReadSet>,
    ) -> Result<u64> {
        let release = || self.readers.unregister(start_ts);
        if let Err(e) = self.log.check() {
            release();
            return Err(e);
        }
        if writes.is_empty() {
            release();
            return Ok(start_ts);
        }
        if let Err(e) = check_payload(&writes, Logged::Physical) {
            release();
            return Err(e);
        }
        // 1. Enter the sequencer.
        let mut seq = self.seq.lock();
        // 2. Validate: first committer wins.
        let lost = writes
            .keys()
            .any(|key| self.index.latest_ts(key).is_some_and(|ts| ts > start_ts))
            || reads.is_some_and(|reads| reads.changed_since(&self.index, start_ts));
        if lost {
            let winners = seq.last_ts;
            drop(seq);
            release();
            return Err(self.conflict(winners));
        }
        // 3. Take the commit ts; 4. append the redo record; 5. install.
        let count = writes.len();
        let (ts, buffered, synced) = self.install_and_log(&mut seq, writes, Logged::Physical, None);
        drop(seq);
        release();
        // 6. GC rides on the commit; 7. wait per sync mode.
        self.after_commit(ts, count, buffered, synced)
    }

    /// Steps 3 to 5, inside the sequencer, running `after` once the writes
    /// are installed (`Batch::after_install`). Returns the commit ts, the
    /// bytes now buffered in the log, and the outcome of the sync run
    /// beside the install (a big commit under `Always`).
    fn install_and_log(
        &self,
        seq: &mut Sequencer,
        writes: impl Writes,
        logged: Logged<'_>,
        after: Option<AfterInstall>,
    ) -> (u64, usize, Option<Result<()>>) {
        let ts = seq.last_ts + 1;
        // The record is encoded and appended before the install, which
        // moves the values. A group leader may then sync it before it is
        // installed: the visible ts waits for both (`Log::installed`).
        let (buffered, _unwinding) = self.append_record(seq, ts, |record| match logged {
            Logged::Physical => record::encode_commit(record, ts, writes.count(), writes.each()),
            Logged::Logical(body) => record::encode_logical(record, ts, body),
        });
        // A big commit: the disk writes and syncs the record while the
        // index installs it, what the caller will wait for anyway.
        let (visit, synced) = self.beside_sync(writes.count() >= OVERLAP_MIN, || {
            self.install(writes, ts, after)
        });
        self.publish(seq, ts, visit);
        (ts, buffered, synced)
    }

    /// Step 5: installs `writes` at `ts`, then runs `after` (a batch's
    /// `Batch::after_install`), before anything is published. Returns the
    /// keys the collector must visit.
    fn install(
        &self,
        writes: impl Writes,
        ts: u64,
        after: Option<AfterInstall>,
    ) -> Vec<super::key::Key> {
        let horizon = self.gc.horizon_hint();
        let visit = self.index.install_all(writes, ts, &horizon);
        if let Some(after) = after {
            after();
        }
        visit
    }

    /// Runs `work`; under `Always`, when `big`, with the log written and
    /// synced on a helper thread meanwhile. Returns `work`'s result and
    /// the sync's outcome, if it ran (its error is the commit's).
    fn beside_sync<T>(&self, big: bool, work: impl FnOnce() -> T) -> (T, Option<Result<()>>) {
        if self.options.sync != SyncMode::Always || !big || cfg!(loom) {
            return (work(), None);
        }
        std::thread::scope(|scope| {
            let syncing = scope.spawn(|| self.log.flush(true).map(|_| ()));
            let out = work();
            let synced = syncing
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            (out, Some(synced))
        })
    }

    /// The end of step 5, inside the sequencer: queues the keys the
    /// collector must visit, moves the sequencer past `ts`, and (when
    /// nothing waits for the disk) makes `ts` visible.
    fn publish(&self, seq: &mut Sequencer, ts: u64, visit: Vec<super::key::Key>) {
        self.gc.enqueue_all(ts, visit);
        seq.last_ts = ts;
        if self.options.sync != SyncMode::Always {
            // Nothing waits for the disk: visible once installed.
            self.visible.store(ts, Ordering::Release);
        }
    }

    /// Step 4: encodes the record for `ts` (in the sequencer's scratch
    /// buffer) and appends it to the log. Returns the bytes now buffered,
    /// and a guard to hold until the record is published (`PoisonOnPanic`).
    fn append_record(
        &self,
        seq: &mut Sequencer,
        ts: u64,
        encode: impl FnOnce(&mut Vec<u8>),
    ) -> (usize, PoisonOnPanic<'_>) {
        let mut record = std::mem::take(&mut seq.scratch);
        record.clear();
        encode(&mut record);
        let buffered = self.log.append(ts, |buf| buf.extend_from_slice(&record));
        if record.capacity() <= 1 << 20 {
            seq.scratch = record;
        }
        (buffered, PoisonOnPanic(&self.log))
    }

    /// Steps 5 (its end), 6 and 7, out of the sequencer. `synced`: the
    /// outcome of the sync a big commit ran beside its install, if it did
    /// (its error, if any, is the commit's).
    fn after_commit(
        &self,
        ts: u64,
        writes: usize,
        buffered: usize,
        synced: Option<Result<()>>,
    ) -> Result<u64> {
        // Out of the sequencer: it takes the log's lock, which waiting
        // committers hold now and then.
        self.log.installed(ts);
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.gc.step(&self.index, writes, || self.horizon());
        synced.transpose()?;
        self.log.commit_wait(ts, buffered)?;
        Ok(ts)
    }

    fn apply_logged<P, R>(
        &self,
        prepare: impl FnOnce(&Batch<'_>) -> Result<(Vec<u8>, P)>,
        f: impl FnOnce(&mut Batch<'_>, P) -> Result<R>,
    ) -> Result<(u64, R)> {
        self.log.check()?;
        let mut seq = self.seq.lock();
        let mut batch = Batch::new(&self.index);
        let (body, p) = prepare(&batch)?;
        check_payload_bytes(8 + body.len())?;
        // 3. Take the commit ts; 4. append the redo record, before the
        // batch runs (and start its sync, for a big one).
        let ts = seq.last_ts + 1;
        let (buffered, _unwinding) = self.append_record(&mut seq, ts, |record| {
            record::encode_logical(record, ts, &body);
        });
        let (ran, synced) = self.beside_sync(body.len() >= EARLY_SYNC_BYTES, || {
            f(&mut batch, p).map(|out| {
                // 5. Install.
                let after = batch.take_after_install();
                let (writes, _) = batch.into_parts();
                let count = writes.count();
                (out, count, self.install(writes, ts, after))
            })
        });
        let (out, count, visit) = match ran {
            Ok(done) => done,
            Err(e) => {
                // The log holds a record the state does not.
                seq.last_ts = ts;
                self.log.poison(format!(
                    "a logged commit failed to apply ({e}): the log holds a record the \
                     state does not"
                ));
                return Err(e);
            }
        };
        self.publish(&mut seq, ts, visit);
        drop(seq);
        self.after_commit(ts, count, buffered, synced)?;
        Ok((ts, out))
    }

    fn apply<R>(&self, f: impl FnOnce(&mut Batch<'_>) -> Result<R>) -> Result<(u64, R)> {
        self.log.check()?;
        let mut seq = self.seq.lock();
        let mut batch = Batch::new(&self.index);
        let out = f(&mut batch)?;
        let after = batch.take_after_install();
        let (writes, body) = batch.into_parts();
        if writes.is_empty() {
            // Nothing to write, but `f` may have read commits that are not
            // durable yet: its answer stands only once they are.
            let last = seq.last_ts;
            drop(seq);
            if self.options.sync == SyncMode::Always {
                self.log.sync_to(last)?;
            }
            return Ok((last, out));
        }
        let logged = match &body {
            // A logical record that no hook could replay would leave a
            // log this engine's options cannot reopen.
            Some(_) if self.options.replay.is_none() => {
                return Err(Error::invalid(
                    "`Batch::log_as` needs `Options::replay`: without it the \
                     record could not be replayed on recovery",
                ));
            }
            Some(body) => Logged::Logical(body),
            None => Logged::Physical,
        };
        check_payload(&writes, logged)?;
        let count = writes.len();
        let (ts, buffered, synced) = self.install_and_log(&mut seq, writes, logged, after);
        drop(seq);
        self.after_commit(ts, count, buffered, synced)?;
        Ok((ts, out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::options::Replay;

    /// Replays a body `key=value` as that one write.
    #[derive(Debug)]
    struct PutBody;

    impl Replay for PutBody {
        fn layer(&self) -> &'static str {
            "put-body test layer"
        }

        fn replay(&self, batch: &mut Batch<'_>, body: &[u8]) -> Result<()> {
            let at = body
                .iter()
                .position(|&b| b == b'=')
                .ok_or(Error::invalid("body"))?;
            batch.put(&body[..at], &body[at + 1..])
        }
    }

    fn open(dir: &Path, sync: SyncMode) -> Engine {
        let options = Options {
            sync,
            replay: Some(Arc::new(PutBody)),
            ..Options::default()
        };
        Engine::open(dir, options).expect("open")
    }

    /// `apply_logged` with a body of `len` bytes for `key`, whose batch
    /// makes the write the body says, or fails when told to.
    fn put(engine: &Engine, key: &[u8], len: usize, fail: bool) -> Result<u64> {
        let mut body = key.to_vec();
        body.push(b'=');
        body.resize(key.len() + 1 + len, b'v');
        let value = body[key.len() + 1..].to_vec();
        engine
            .apply_logged(
                |_| Ok((body.clone(), value)),
                |batch, value| {
                    if fail {
                        return Err(Error::invalid("the batch fails"));
                    }
                    batch.put(key, &value)
                },
            )
            .map(|(ts, ())| ts)
    }

    /// `Batch::log_as` on an engine without `Options::replay` is refused
    /// and writes nothing: the record could not be replayed, and the
    /// directory would not reopen under the same options. (An outside
    /// review found it acknowledged.) With the hook, the same call commits
    /// and a reopen replays it.
    #[test]
    fn log_as_without_a_replay_hook_is_refused_and_writes_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let engine = Engine::open(dir.path(), Options::default()).expect("open");
        let refused = engine.apply(|batch| {
            batch.put(b"k", b"v")?;
            batch.log_as(b"k=v".to_vec());
            Ok(())
        });
        match refused {
            Err(Error::InvalidArgument(why)) => assert!(why.contains("Options::replay"), "{why}"),
            other => panic!("log_as without a hook gave {other:?}"),
        }
        assert_eq!(engine.snapshot().get(b"k").expect("get"), None);
        drop(engine);
        let engine = Engine::open(dir.path(), Options::default()).expect("reopen");
        assert_eq!(engine.snapshot().get(b"k").expect("get"), None);
        drop(engine);
        let engine = open(dir.path(), SyncMode::Always);
        engine
            .apply(|batch| {
                batch.put(b"k", b"v")?;
                batch.log_as(b"k=v".to_vec());
                Ok(())
            })
            .expect("with the hook");
        drop(engine);
        let engine = open(dir.path(), SyncMode::Always);
        assert_eq!(
            engine.snapshot().get(b"k").expect("get").as_deref(),
            Some(&b"v"[..])
        );
    }

    /// `Batch::after_install` runs once the writes are installed and
    /// before they are visible, through `apply` and `apply_logged` alike;
    /// never for a batch that fails. Each run records what a snapshot
    /// taken then shows of the batch's key, and that snapshot's ts.
    #[test]
    fn after_install_runs_between_install_and_visibility_and_only_on_success() {
        type Seen = Arc<std::sync::Mutex<Vec<(Option<bytes::Bytes>, u64)>>>;
        let dir = tempfile::tempdir().expect("dir");
        let engine = Arc::new(open(dir.path(), SyncMode::Never));
        let seen: Seen = Arc::default();
        // A hook that records what a snapshot shows of `key` and the
        // visible ts, from inside the commit.
        let hook = |key: &'static [u8]| -> AfterInstall {
            let (engine, seen) = (Arc::clone(&engine), Arc::clone(&seen));
            Box::new(move || {
                let snap = engine.snapshot();
                let value = snap.get(key).expect("get");
                seen.lock().expect("seen").push((value, snap.ts()));
            })
        };
        let (ts, ()) = engine
            .apply(|batch| {
                batch.put(b"a", b"1")?;
                batch.after_install(hook(b"a"));
                Ok(())
            })
            .expect("apply");
        assert_eq!(seen.lock().expect("seen").as_slice(), [(None, ts - 1)]);
        assert_eq!(
            engine.snapshot().get(b"a").expect("get").as_deref(),
            Some(&b"1"[..])
        );
        let (ts, ()) = engine
            .apply_logged(
                |_| Ok((b"b=2".to_vec(), ())),
                |batch, ()| {
                    batch.put(b"b", b"2")?;
                    batch.after_install(hook(b"b"));
                    Ok(())
                },
            )
            .expect("apply_logged");
        assert_eq!(seen.lock().expect("seen")[1], (None, ts - 1));
        assert_eq!(
            engine.snapshot().get(b"b").expect("get").as_deref(),
            Some(&b"2"[..])
        );
        // A batch that fails after setting its hook: never run.
        let failed = engine.apply(|batch| {
            batch.put(b"c", b"3")?;
            batch.after_install(hook(b"c"));
            Err::<(), _>(Error::invalid("the batch fails"))
        });
        assert!(failed.is_err());
        assert_eq!(seen.lock().expect("seen").len(), 2);
    }

    #[test]
    fn apply_logged_commits_its_writes_and_logs_its_body_for_replay() {
        for sync in [SyncMode::Always, SyncMode::Never] {
            let dir = tempfile::tempdir().expect("dir");
            let engine = open(dir.path(), sync);
            // A small body (group commit) and one past EARLY_SYNC_BYTES
            // (synced beside the batch).
            let small = put(&engine, b"small", 10, false).expect("small");
            let big = put(&engine, b"big", EARLY_SYNC_BYTES, false).expect("big");
            assert!(big > small);
            let snap = engine.snapshot();
            assert_eq!(snap.ts(), big, "visible once it returns");
            assert_eq!(
                snap.get(b"big").expect("get").map(|v| v.len()),
                Some(EARLY_SYNC_BYTES)
            );
            if sync == SyncMode::Always {
                assert!(engine.stats().log_bytes > EARLY_SYNC_BYTES as u64);
            }
            drop(snap);
            drop(engine);
            let engine = open(dir.path(), sync);
            let snap = engine.snapshot();
            assert_eq!(snap.get(b"small").expect("get").map(|v| v.len()), Some(10));
            assert_eq!(
                snap.get(b"big").expect("get").map(|v| v.len()),
                Some(EARLY_SYNC_BYTES)
            );
        }
    }

    #[test]
    fn apply_logged_whose_batch_fails_poisons_and_a_reopen_replays_its_record() {
        let dir = tempfile::tempdir().expect("dir");
        let engine = open(dir.path(), SyncMode::Always);
        put(&engine, b"before", 4, false).expect("before");
        let failed = put(&engine, b"failed", EARLY_SYNC_BYTES, true);
        assert!(
            matches!(failed, Err(Error::InvalidArgument(_))),
            "{failed:?}"
        );
        assert!(matches!(
            engine.snapshot().get(b"before"),
            Err(Error::Poisoned)
        ));
        poisoned_then_replayed(engine, dir.path(), b"failed");
    }

    /// After a batch failed with its record in the log: the engine takes
    /// no commit ("after"), and the reopened one holds the commit before
    /// ("before") and the failed batch's record (`failed`, whose value's
    /// length it returns), replayed whole.
    fn poisoned_then_replayed(engine: Engine, dir: &Path, failed: &[u8]) -> Option<usize> {
        assert!(matches!(
            put(&engine, b"after", 4, false),
            Err(Error::Poisoned)
        ));
        drop(engine);
        let engine = open(dir, SyncMode::Always);
        let snap = engine.snapshot();
        assert!(snap.get(b"before").expect("get").is_some());
        assert!(snap.get(b"after").expect("get").is_none());
        let value = snap.get(failed).expect("get").map(|v| v.len());
        assert!(value.is_some(), "the failed batch's record is replayed");
        value
    }

    /// A batch that panics after its record is in the log (a bug in the
    /// caller's code, or a helper thread that could not start) poisons
    /// the engine as a failed one does: the sequencer never moved past
    /// the record's ts, so a commit after it would reuse that ts.
    #[test]
    fn apply_logged_whose_batch_panics_poisons() {
        let dir = tempfile::tempdir().expect("dir");
        let engine = open(dir.path(), SyncMode::Always);
        put(&engine, b"before", 4, false).expect("before");
        // A big body: written and synced beside the batch, so the reopen
        // finds it (a small one may stay in the poisoned log's buffer).
        let mut body = b"panicked=".to_vec();
        body.resize(body.len() + EARLY_SYNC_BYTES, b'v');
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            engine.apply_logged(
                |_| Ok((body.clone(), ())),
                |_, ()| -> Result<()> { panic!("the batch's code panics") },
            )
        }));
        assert!(panicked.is_err());
        assert_eq!(
            poisoned_then_replayed(engine, dir.path(), b"panicked"),
            Some(EARLY_SYNC_BYTES)
        );
    }
}
