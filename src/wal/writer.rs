//! The log writer and group commit.
//!
//! Records are appended to an in-memory buffer by the sequencer (one short
//! critical section per commit, in timestamp order). Getting them to disk is
//! leader/follower group commit, as RocksDB's write thread does it: the first
//! committer that finds no flush in progress becomes the leader, takes the
//! whole buffer, writes it with one `write` and syncs it with one
//! `fdatasync`, publishes the durable timestamp and wakes everyone; the
//! committers that arrived meanwhile wait, and the next leader takes all of
//! their records at once. The engine owns no thread for this (under
//! `SyncMode::Interval` one small thread syncs what the commits leave).
//!
//! The leader's steps:
//! 1. take the leadership (`SyncState::leading`), or wait for the leader;
//!    under `Always`, when the last group held several commits, wait (at
//!    most as long as the last sync took) for as many to be buffered
//!    (`Log::gather`);
//! 2. swap the pending buffer out (records up to `last_ts`);
//! 3. rotate to a new segment if the active one is full: sync it, create
//!    the next, write its header, sync the file and the directory (when
//!    the new segment cannot be created, the group goes on in the active
//!    one, up to twice the segment size: `rotate_or_overflow`);
//! 4. write the buffer (under `Always`, a small one over zeros laid ahead
//!    of the log, so that the sync has no file size to write: `ZERO_AHEAD`);
//! 5. `fdatasync` (under `Always`, or when a sync was asked for);
//! 6. publish `durable_ts` (and, under `Always`, the visible timestamp:
//!    see below), give up the leadership and wake the waiters.
//!
//! The sequencer appends a commit's record before it installs the commit
//! (so a big commit's write and sync can run while it installs), so a
//! record may be durable before its versions are in the index. Under
//! `Always` the visible timestamp is therefore the lower of the durable
//! ts and the installed ts (`Log::installed`), published by whichever of
//! the two moves last: both move under the `SyncState` lock, so the later
//! one sees the other's.
//!
//! Any other failure in 3 to 5 poisons the log: the error goes to the leader's
//! caller, `Error::Poisoned` to everyone else, and nothing is ever
//! acknowledged again. A sync that failed is never retried. (A new segment
//! refused for want of space, a handle or permission is not such a failure:
//! its file holds no record, and is removed.) A leader that panics poisons
//! the log too (`LeadGuard`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::SyncMode;
use super::fs::{DirLock, FileSystem, WritableFile};
use super::segment;
use crate::error::{Error, Result};
use crate::sync::{Arc, AtomicBool, AtomicU64, Condvar, Mutex, Ordering};

/// Buffered bytes past which a commit that does not wait for a sync
/// (`Never`, `Interval`) writes the buffer out itself: the bound on the
/// buffer, and the back-pressure on writers that outrun the disk.
pub(crate) const FLUSH_BYTES: usize = 1 << 20;

/// Under `Always`, a small group is written over zeros laid down this far
/// ahead (`WritableFile::zero_to`): its `fdatasync` then has no file size
/// to write. A group of more than a quarter of this is appended as is:
/// its sync is dominated by its data, and zeros would double it. The
/// zeros past the last record are cut when a segment is sealed or the log
/// closed; after a crash, recovery cuts them as a torn tail.
const ZERO_AHEAD: u64 = 1 << 20;

/// The longest a group-commit leader waits for more committers (`gather`).
const MAX_GATHER: Duration = Duration::from_millis(1);
/// The shortest sleep of the `Interval` thread between two looks at the
/// age of the last sync.
#[cfg_attr(loom, allow(dead_code))]
const MIN_TICK: Duration = Duration::from_millis(1);

/// What `Log::sync_if_due` found (and did).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// The last sync is younger than the interval.
    NotYet,
    /// Every record is durable already.
    Nothing,
    /// Another caller is writing or syncing: its sync (if any) stands.
    Busy,
    /// This call synced.
    Synced,
}
/// How many syncs' time a follower yields before it sleeps (`yield_until`):
/// with 16 threads calling with one transfer each, one sync's time gained
/// 4%, three 22%, ten no more.
const YIELD_SYNCS: u32 = 3;

#[derive(Debug, Default)]
struct Pending {
    buf: Vec<u8>,
    spare: Vec<u8>,
    /// The ts of the last record appended.
    last_ts: u64,
    /// While a leader gathers (`Log::gather`): the ts whose append
    /// completes the group it waits for; 0 otherwise.
    gather_until: u64,
}

#[derive(Debug)]
struct SyncState {
    leading: bool,
    /// Every record up to this ts is written to the file.
    written_ts: u64,
    /// Every record up to this ts is synced.
    durable_ts: u64,
    /// Every commit up to this ts is installed in the index (under
    /// `Always`: `Log::installed`).
    installed_ts: u64,
    /// When the last sync began (its leader took the buffer). `Interval`
    /// counts from there, not from its end: a record that came just after
    /// a sync began is then synced by a sync that begins `every` later, or
    /// right after that one ends if it takes longer.
    last_sync: Instant,
}

impl SyncState {
    /// Makes the caller the leader; a leader that will sync notes when
    /// its sync began (`last_sync`).
    fn take_lead(&mut self, sync: bool) {
        self.leading = true;
        if sync {
            self.last_sync = Instant::now();
        }
    }
}

#[derive(Debug)]
struct Active {
    file: Box<dyn WritableFile>,
    first_ts: u64,
    len: u64,
    /// How long the file is: past `len`, zeros (`ZERO_AHEAD`).
    zeroed: u64,
    unsynced: bool,
    /// The older segments still on disk, ascending: (first ts, bytes).
    sealed: Vec<(u64, u64)>,
    /// After a refused rotation: the length the active segment must reach
    /// before a group tries again (`rotate_locked`); 0 otherwise.
    retry_at: u64,
    /// Whether the log ends with a close record (`record::KIND_CLOSE`) and
    /// nothing was written since: a clean close then writes no other.
    closed: bool,
}

/// Where the log lives and how it syncs.
#[derive(Debug)]
pub(crate) struct LogConfig {
    pub fs: std::sync::Arc<dyn FileSystem>,
    pub dir: PathBuf,
    pub mode: SyncMode,
    pub segment_bytes: u64,
    /// The data directory's lock: the log holds it, and lets it go only
    /// after its last flush, wherever that runs (the interval thread may
    /// hold the log last).
    pub lock: Box<dyn DirLock>,
}

/// The redo log of one engine.
#[derive(Debug)]
pub(crate) struct Log {
    dir: PathBuf,
    fs: std::sync::Arc<dyn FileSystem>,
    mode: SyncMode,
    segment_bytes: u64,
    /// Buffered bytes past which a commit under `Never` or `Interval`
    /// writes the buffer out: `FLUSH_BYTES`, or less with small segments,
    /// so that one write (which lands in one segment) stays within one.
    flush_bytes: usize,
    pending: Mutex<Pending>,
    state: Mutex<SyncState>,
    wake: Condvar,
    /// Wakes a gathering leader (`Log::gather`).
    gathered: Condvar,
    active: Mutex<Active>,
    /// The engine's visible timestamp, published here under `Always`.
    visible: Arc<AtomicU64>,
    poisoned: AtomicBool,
    /// What poisoned the log, first cause only (`poisoned_by`).
    cause: std::sync::OnceLock<String>,
    durable: AtomicU64,
    log_bytes: AtomicU64,
    syncs: AtomicU64,
    /// New segments that could not be created (`rotate_locked`).
    rotations_refused: AtomicU64,
    /// How many commits the last synced group held, and how long its
    /// `fdatasync` took (ns): what `gather` goes by.
    last_group: AtomicU64,
    last_sync_ns: AtomicU64,
    /// The `Interval` sync thread: whether it runs, its stop signal and
    /// its handle (`start_interval_sync`, `stop_interval_sync`).
    interval: std::sync::Arc<IntervalThread>,
    /// Dropped last, after `Drop::drop` flushed.
    _lock: Box<dyn DirLock>,
}

/// Counters for `Stats`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogStats {
    pub log_bytes: u64,
    pub syncs: u64,
    pub segments: u64,
    pub durable_ts: u64,
    pub rotations_refused: u64,
}

impl Log {
    /// Opens the log for appending after recovery. `segments` are those
    /// recovery left (ascending); `last_ts` is the last ts in the state.
    /// When the log's last record is not `last_ts` (empty log, or a log cut
    /// short before a checkpoint), or recovery did not read the last segment
    /// through (`tail_read`: it was wholly covered by the checkpoint), a new
    /// segment starts at `last_ts + 1`. `closed`: the log ends with a close
    /// record (`reader::Replayed::closed`).
    pub(crate) fn open(
        config: LogConfig,
        mut segments: Vec<(u64, u64)>,
        log_last_ts: u64,
        tail_read: bool,
        closed: bool,
        last_ts: u64,
        visible: Arc<AtomicU64>,
    ) -> Result<Self> {
        let LogConfig {
            fs,
            dir,
            mode,
            segment_bytes,
            lock,
        } = config;
        // What recovery read may sit in the page cache only (a process
        // crash under Never or Interval, or a reopen after a failed sync):
        // make it durable before anything it holds is shown or built on.
        // Sealed segments were synced before the next was created; the
        // last one and the directory's entries may not be.
        fs.sync_dir(&dir)?;
        let reuse_last = tail_read && log_last_ts == last_ts && !segments.is_empty();
        let active = if reuse_last {
            let (first_ts, len) = segments.pop().unwrap_or((last_ts + 1, 0));
            let mut file = fs.open_append(&segment::path(&dir, first_ts))?;
            file.sync_data()?;
            Active {
                file,
                first_ts,
                len,
                zeroed: len,
                unsynced: false,
                sealed: segments,
                retry_at: 0,
                closed,
            }
        } else {
            let file = Self::create_segment(fs.as_ref(), &dir, last_ts + 1)?;
            Active {
                file,
                first_ts: last_ts + 1,
                len: segment::HEADER_BYTES as u64,
                zeroed: segment::HEADER_BYTES as u64,
                unsynced: false,
                sealed: segments,
                retry_at: 0,
                closed: false,
            }
        };
        let log_bytes = active.len + active.sealed.iter().map(|s| s.1).sum::<u64>();
        Ok(Log {
            dir,
            fs,
            mode,
            segment_bytes: segment_bytes.max(segment::HEADER_BYTES as u64 + 1),
            flush_bytes: usize::try_from(segment_bytes)
                .unwrap_or(usize::MAX)
                .saturating_sub(segment::HEADER_BYTES)
                .clamp(1, FLUSH_BYTES),
            pending: Mutex::new(Pending {
                last_ts,
                ..Pending::default()
            }),
            state: Mutex::new(SyncState {
                leading: false,
                written_ts: last_ts,
                durable_ts: last_ts,
                installed_ts: last_ts,
                last_sync: Instant::now(),
            }),
            wake: Condvar::new(),
            gathered: Condvar::new(),
            active: Mutex::new(active),
            visible,
            poisoned: AtomicBool::new(false),
            cause: std::sync::OnceLock::new(),
            durable: AtomicU64::new(last_ts),
            last_group: AtomicU64::new(0),
            last_sync_ns: AtomicU64::new(0),
            log_bytes: AtomicU64::new(log_bytes),
            syncs: AtomicU64::new(0),
            rotations_refused: AtomicU64::new(0),
            interval: std::sync::Arc::default(),
            _lock: lock,
        })
    }

    /// Creates a segment starting at `first_ts`, header written and synced,
    /// directory entry synced.
    fn create_segment(
        fs: &dyn FileSystem,
        dir: &std::path::Path,
        first_ts: u64,
    ) -> Result<Box<dyn WritableFile>> {
        let mut file = fs.create(&segment::path(dir, first_ts))?;
        Self::start_segment(file.as_mut(), fs, dir, first_ts)?;
        Ok(file)
    }

    /// Writes a new segment's header and makes it and its name durable.
    fn start_segment(
        file: &mut dyn WritableFile,
        fs: &dyn FileSystem,
        dir: &std::path::Path,
        first_ts: u64,
    ) -> std::io::Result<()> {
        file.append(&segment::encode_header(first_ts))?;
        file.sync_data()?;
        fs.sync_dir(dir)
    }

    /// What poisoned the log (the first failure's message), if it is.
    pub(crate) fn poisoned_by(&self) -> Option<String> {
        if self.is_poisoned() {
            self.cause.get().cloned()
        } else {
            None
        }
    }

    /// Marks the log poisoned, keeping `cause` if it is the first: the
    /// cause is in place before the mark can be seen (`poisoned_by`).
    fn mark_poisoned(&self, cause: impl std::fmt::Display) {
        let _ = self.cause.set(cause.to_string());
        self.poisoned.store(true, Ordering::Release);
    }

    /// Whether a failed write or sync poisoned the log.
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Poisons the log: every later call fails with `Error::Poisoned`. For
    /// a caller whose record is in the log but whose state change failed
    /// (`Engine`'s `apply_logged`): only a reopen, which replays the log,
    /// can make the two agree again.
    pub(crate) fn poison(&self, cause: impl std::fmt::Display) {
        self.mark_poisoned(cause);
        let _state = self.state.lock();
        self.wake.notify_all();
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.is_poisoned() {
            Err(Error::Poisoned)
        } else {
            Ok(())
        }
    }

    pub(crate) fn stats(&self) -> LogStats {
        let segments = {
            let active = self.active.lock();
            active.sealed.len() as u64 + 1
        };
        LogStats {
            log_bytes: self.log_bytes.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
            segments,
            durable_ts: self.durable.load(Ordering::Acquire),
            rotations_refused: self.rotations_refused.load(Ordering::Relaxed),
        }
    }

    /// Appends the record for `ts`, encoded by `encode` at the end of the
    /// buffer. Called by the sequencer, in ts order. Returns the bytes now
    /// buffered.
    pub(crate) fn append(&self, ts: u64, encode: impl FnOnce(&mut Vec<u8>)) -> usize {
        let mut pending = self.pending.lock();
        debug_assert_eq!(pending.last_ts + 1, ts, "log records out of ts order");
        encode(&mut pending.buf);
        pending.last_ts = ts;
        if pending.gather_until != 0 && ts >= pending.gather_until {
            self.gathered.notify_one();
        }
        pending.buf.len()
    }

    /// Notes that every commit up to `ts` is installed (each commit calls
    /// it after its install, once out of the sequencer, so calls may come
    /// out of ts order: the highest counts); under `Always`, publishes the
    /// visible ts as far as the durable ts allows.
    pub(crate) fn installed(&self, ts: u64) {
        if self.mode == SyncMode::Always {
            let mut state = self.state.lock();
            state.installed_ts = state.installed_ts.max(ts);
            let ts = state.installed_ts;
            let visible = ts.min(state.durable_ts);
            self.visible.fetch_max(visible, Ordering::Release);
        }
    }

    /// What a commit at `ts` does after leaving the sequencer, by sync mode:
    /// `Always` waits until `ts` is durable; the others write the buffer out
    /// when it is large. Under `Interval` the sync thread syncs; without
    /// it (it could not start, or under loom) the commit syncs when the
    /// interval has passed. (A commit that synced whenever one was due
    /// waited for a sync at almost every commit on a disk whose sync takes
    /// the interval or longer, once the interval counted from a sync's
    /// start.)
    pub(crate) fn commit_wait(&self, ts: u64, buffered: usize) -> Result<()> {
        match self.mode {
            SyncMode::Always => self.sync_to(ts),
            SyncMode::Interval(every) => {
                if buffered >= self.flush_bytes {
                    self.flush(false)?;
                }
                if self
                    .interval
                    .running
                    .load(std::sync::atomic::Ordering::Acquire)
                {
                    return self.check();
                }
                self.sync_if_due(every).map(drop)
            }
            SyncMode::Never => {
                if buffered >= self.flush_bytes {
                    self.flush(false)?;
                }
                Ok(())
            }
        }
    }

    /// Under `Interval(every)`: syncs what is buffered or written when the
    /// last sync began `every` ago or earlier and a record is not durable
    /// yet, unless another caller is syncing (then that sync is the one).
    /// The interval thread calls it (and a commit, when no thread runs), so
    /// syncs begin at most once per `every`.
    pub(crate) fn sync_if_due(&self, every: Duration) -> Result<Due> {
        let last_ts = self.pending.lock().last_ts;
        let mut state = self.state.lock();
        self.check()?;
        if state.last_sync.elapsed() < every {
            return Ok(Due::NotYet);
        }
        if state.durable_ts >= last_ts {
            return Ok(Due::Nothing);
        }
        if state.leading {
            return Ok(Due::Busy);
        }
        state.take_lead(true);
        drop(state);
        let led = {
            let _lead = LeadGuard(self);
            self.lead(true)
        };
        drop(self.finish_lead(led, true)?);
        Ok(Due::Synced)
    }

    /// Waits until every record up to `ts` is durable, leading a group sync
    /// when no one else is.
    pub(crate) fn sync_to(&self, ts: u64) -> Result<()> {
        let mut state = self.state.lock();
        let mut yielded = false;
        loop {
            self.check()?;
            if state.durable_ts >= ts {
                return Ok(());
            }
            if state.leading {
                if !yielded && !cfg!(loom) && self.mode == SyncMode::Always {
                    // First yield for about a sync's time (`yield_until`),
                    // then sleep on the condvar if it was not enough.
                    yielded = true;
                    drop(state);
                    self.yield_until(ts);
                    state = self.state.lock();
                    continue;
                }
                state = self.wake.wait(state);
                continue;
            }
            state.take_lead(true);
            drop(state);
            let led = {
                let _lead = LeadGuard(self);
                self.gather();
                self.lead(true)
            };
            state = self.finish_lead(led, true)?;
        }
    }

    /// A follower's wait, under `Always`, before it sleeps: it yields the
    /// processor and checks the durable ts, for at most `YIELD_SYNCS`
    /// times as long as the last sync took (its record may be in the next
    /// group, not the one syncing now) and at most `MAX_GATHER`, as
    /// RocksDB's write thread spins, then yields, then blocks. Followers
    /// asleep on the condvar are woken one after another (each takes the
    /// lock in turn and hands it on, a context switch each): a group of 14
    /// came back to commit again only some 100 us after its sync, while
    /// the disk stood idle. Yielding, each sees the durable ts move by
    /// itself.
    fn yield_until(&self, ts: u64) {
        let last = Duration::from_nanos(self.last_sync_ns.load(Ordering::Relaxed));
        let budget = (last * YIELD_SYNCS).min(MAX_GATHER);
        let deadline = Instant::now() + budget;
        while self.durable.load(Ordering::Acquire) < ts
            && !self.is_poisoned()
            && Instant::now() < deadline
        {
            std::thread::yield_now();
        }
    }

    /// Step 1 and a half, under `Always`: when the last group held more
    /// than one commit, more committers are likely on their way (those the
    /// last sync just released, back with their next commit). The leader
    /// waits, asleep, until the group is as big as the last one (the
    /// append that makes it so wakes it) or for at most as long as the
    /// last sync took. Without this the committers split into two groups
    /// that take turns, each syncing half of them: 16 threads committing
    /// one transfer at a time got 8 commits per sync, and 14 with it. A
    /// lone committer never waits: its last group held one commit. (The
    /// loom models check the protocol, not timing: no gathering there.)
    fn gather(&self) {
        let want = self.last_group.load(Ordering::Relaxed);
        if cfg!(loom) || self.mode != SyncMode::Always || want < 2 {
            return;
        }
        let budget =
            Duration::from_nanos(self.last_sync_ns.load(Ordering::Relaxed)).min(MAX_GATHER);
        let deadline = Instant::now() + budget;
        let until = self.durable.load(Ordering::Acquire) + want;
        let mut pending = self.pending.lock();
        pending.gather_until = until;
        while pending.last_ts < until {
            if self.gathered.wait_until(&mut pending, deadline) {
                break;
            }
        }
        pending.gather_until = 0;
    }

    /// Writes out (and with `sync`, syncs) everything buffered so far.
    /// Returns the ts it covers.
    pub(crate) fn flush(&self, sync: bool) -> Result<u64> {
        let mut state = self.state.lock();
        loop {
            self.check()?;
            if !state.leading {
                break;
            }
            state = self.wake.wait(state);
        }
        state.take_lead(sync);
        drop(state);
        let led = {
            let _lead = LeadGuard(self);
            self.lead(sync)
        };
        let state = self.finish_lead(led, sync)?;
        Ok(if sync {
            state.durable_ts
        } else {
            state.written_ts
        })
    }

    /// Step 6: publishes what the leader did, hands the leadership back and
    /// wakes the waiters; poisons the log if it failed.
    fn finish_lead(
        &self,
        led: Result<u64>,
        synced: bool,
    ) -> Result<crate::sync::MutexGuard<'_, SyncState>> {
        let mut state = self.state.lock();
        state.leading = false;
        match led {
            Ok(upto) => {
                debug_assert!(upto >= state.written_ts, "written ts went backwards");
                state.written_ts = upto;
                if synced {
                    debug_assert!(upto >= state.durable_ts, "durable ts went backwards");
                    state.durable_ts = upto;
                    self.durable.store(upto, Ordering::Release);
                    if self.mode == SyncMode::Always {
                        let visible = upto.min(state.installed_ts);
                        self.visible.fetch_max(visible, Ordering::Release);
                    }
                }
                self.wake.notify_all();
                Ok(state)
            }
            Err(e) => {
                self.mark_poisoned(&e);
                self.wake.notify_all();
                Err(e)
            }
        }
    }

    /// Steps 2 to 5, run by the leader alone. Returns the last ts written.
    fn lead(&self, sync: bool) -> Result<u64> {
        let (mut buf, last_ts) = {
            let mut pending = self.pending.lock();
            let spare = std::mem::take(&mut pending.spare);
            (std::mem::replace(&mut pending.buf, spare), pending.last_ts)
        };
        let mut active = self.active.lock();
        if !buf.is_empty() {
            let first_in_buf = first_ts_of(&buf);
            let full = active.len + buf.len() as u64 > self.segment_bytes;
            if full && holds_records(&active, first_in_buf) {
                self.rotate_or_overflow(&mut active, first_in_buf, buf.len() as u64)?;
            }
            let end = active.len + buf.len() as u64;
            // No zeros ahead past the segment's size (a segment that could
            // not rotate): they would be laid just where the group goes.
            if self.mode == SyncMode::Always
                && buf.len() as u64 <= ZERO_AHEAD / 4
                && end > active.zeroed
                && end < self.segment_bytes
            {
                let upto = (end + ZERO_AHEAD).min(self.segment_bytes.max(end));
                match active.file.zero_to(upto) {
                    Ok(true) => active.zeroed = upto,
                    Ok(false) => {}
                    // A disk too full for the zeros may still take the
                    // record: it is appended as any other. Some zeros may
                    // be in, as far as `upto`: the next seal or close cuts
                    // them. (They are tried again once the log passes
                    // `upto`.)
                    Err(e) if super::fs::is_full(&e) => active.zeroed = upto,
                    Err(e) => return Err(e.into()),
                }
            }
            active.closed = false;
            active.file.append(&buf)?;
            active.zeroed = active.zeroed.max(end);
            active.len += buf.len() as u64;
            active.unsynced = true;
            self.log_bytes
                .fetch_add(buf.len() as u64, Ordering::Relaxed);
        }
        if sync && active.unsynced {
            let began = Instant::now();
            active.file.sync_data()?;
            let took = u64::try_from(began.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.last_sync_ns.store(took, Ordering::Relaxed);
            let group = last_ts.saturating_sub(self.durable.load(Ordering::Relaxed));
            self.last_group.store(group, Ordering::Relaxed);
            active.unsynced = false;
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
        drop(active);
        buf.clear();
        if buf.capacity() <= 4 * FLUSH_BYTES {
            self.pending.lock().spare = buf;
        }
        Ok(last_ts)
    }

    /// Step 3: the active segment is full, and the group at `first_ts`
    /// goes to a new one (`rotate_locked`). When the new segment cannot be
    /// created, the group goes on in the active one, past its size, and
    /// the rotation is tried again once the segment has grown past the
    /// group (`group` bytes) by another eighth of `segment_bytes` (each try
    /// seals the segment: a sync more). Past twice `segment_bytes`, a
    /// refusal poisons the log: recovery reads a segment whole, so it may
    /// not grow without bound.
    fn rotate_or_overflow(&self, active: &mut Active, first_ts: u64, group: u64) -> Result<()> {
        let overgrown = active.len > self.segment_bytes.saturating_mul(2);
        if active.len < active.retry_at && !overgrown {
            return Ok(());
        }
        let Some(refused) = self.rotate_locked(active, first_ts)? else {
            return Ok(());
        };
        self.rotations_refused.fetch_add(1, Ordering::Relaxed);
        if overgrown {
            let kind = match &refused {
                Error::Io(e) => e.kind(),
                _ => std::io::ErrorKind::Other,
            };
            return Err(Error::Io(std::io::Error::new(
                kind,
                format!(
                    "the active log segment is past twice its size ({} bytes) and no new \
                     segment can be created: {refused}",
                    active.len
                ),
            )));
        }
        active.retry_at = active.len + group + (self.segment_bytes / 8).max(1);
        Ok(())
    }

    /// Seals the active segment (synced first, so that no later segment can
    /// be durable while an earlier one is not) and starts one at `first_ts`.
    ///
    /// A new segment that cannot be created (no file handle left, a
    /// directory without write permission, no inode or no space left)
    /// fails the rotation, not the log: what the attempt left is removed,
    /// durably (`undo_create`), and the active segment goes on, all its
    /// records synced. That error is returned as `Ok(Some(_))`. A failure
    /// to seal or to clear up, or an error other than a full disk from the
    /// new segment's write or syncs (a device error), is an `Err`, which
    /// poisons: a failed sync is never retried.
    fn rotate_locked(&self, active: &mut Active, first_ts: u64) -> Result<Option<Error>> {
        // A segment with no record is never sealed: the new segment would
        // take its own name, its creation would empty the active file, and
        // the undo or a checkpoint's removal of sealed segments would
        // delete it (the callers check `holds_records` first).
        debug_assert!(
            holds_records(active, first_ts),
            "rotation of an empty segment"
        );
        if !holds_records(active, first_ts) {
            return Ok(None);
        }
        self.seal_active(active)?;
        let path = segment::path(&self.dir, first_ts);
        let refused = match self.fs.create(&path) {
            Err(e) => e,
            Ok(mut file) => {
                match Self::start_segment(file.as_mut(), self.fs.as_ref(), &self.dir, first_ts) {
                    Ok(()) => {
                        self.switch_to(active, first_ts, file);
                        return Ok(None);
                    }
                    // A disk too full for the header, or (with delayed
                    // allocation) for its sync.
                    Err(e) if super::fs::is_full(&e) => e,
                    Err(e) => {
                        // The log poisons; the file goes if it can.
                        let _ = self.undo_create(first_ts);
                        return Err(e.into());
                    }
                }
            }
        };
        self.undo_create(first_ts)?;
        Ok(Some(refused.into()))
    }

    /// Makes the active segment ready to be sealed: synced, and ending at
    /// its last record.
    fn seal_active(&self, active: &mut Active) -> Result<()> {
        if active.unsynced {
            active.file.sync_data()?;
            active.unsynced = false;
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
        // A sealed segment ends at its last record: recovery takes zeros
        // at the end of any segment but the last for damage.
        self.cut_zeros(active)
    }

    /// Seals the active segment (`seal_active` done) and makes `file`, a
    /// new segment at `first_ts`, the active one.
    fn switch_to(&self, active: &mut Active, first_ts: u64, file: Box<dyn WritableFile>) {
        let old = std::mem::replace(&mut active.file, file);
        drop(old);
        active.sealed.push((active.first_ts, active.len));
        active.first_ts = first_ts;
        active.len = segment::HEADER_BYTES as u64;
        active.zeroed = active.len;
        active.retry_at = 0;
        active.closed = false;
        self.log_bytes
            .fetch_add(segment::HEADER_BYTES as u64, Ordering::Relaxed);
    }

    /// Cuts the active segment's zeros past its last record, durably
    /// (before a later segment may exist): through the open file, which
    /// needs no new file handle, or else by its path, and then the file is
    /// opened again (the open one's idea of its length is stale).
    fn cut_zeros(&self, active: &mut Active) -> Result<()> {
        if active.zeroed > active.len {
            if !active.file.set_len(active.len)? {
                let path = segment::path(&self.dir, active.first_ts);
                self.fs.truncate(&path, active.len)?;
                active.file = self.fs.open_append(&path)?;
            }
            active.zeroed = active.len;
        }
        Ok(())
    }

    /// Syncs everything buffered and starts a new segment, so that the
    /// records up to the returned ts are all in sealed segments. Used by
    /// checkpoints.
    pub(crate) fn seal(&self) -> Result<u64> {
        let mut state = self.state.lock();
        loop {
            self.check()?;
            if !state.leading {
                break;
            }
            state = self.wake.wait(state);
        }
        state.take_lead(true);
        drop(state);
        // A new segment that cannot be created (a full disk, say) fails
        // the seal, not the log (`rotate_locked`).
        let mut refused = None;
        let led = {
            let _lead = LeadGuard(self);
            self.lead(true).and_then(|upto| {
                let mut active = self.active.lock();
                if holds_records(&active, upto + 1) {
                    refused = self.rotate_locked(&mut active, upto + 1)?;
                }
                Ok(upto)
            })
        };
        let state = self.finish_lead(led, true)?;
        match refused {
            Some(e) => {
                self.rotations_refused.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
            None => Ok(state.durable_ts),
        }
    }

    /// Removes what a failed `create_segment` at `first_ts` may have left,
    /// durably: an empty or half-written segment named after records that
    /// go on in the active one would read as a gap after a crash.
    /// When the creation failed before there was a file, nothing is to be
    /// made durable (and no file handle is needed: there may be none).
    fn undo_create(&self, first_ts: u64) -> Result<()> {
        match self.fs.remove(&segment::path(&self.dir, first_ts)) {
            Ok(()) => self.fs.sync_dir(&self.dir)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e.into()),
        }
        Ok(())
    }

    /// Removes the sealed segments that hold only records at or before
    /// `ts` (a segment is covered when the next one starts at or before
    /// `ts + 1`). Returns how many it removed.
    pub(crate) fn remove_covered(&self, ts: u64) -> Result<usize> {
        let mut active = self.active.lock();
        let mut removed = 0;
        while let Some(&(first, bytes)) = active.sealed.first() {
            let next_first = active.sealed.get(1).map_or(active.first_ts, |s| s.0);
            if next_first > ts + 1 {
                break;
            }
            self.fs.remove(&segment::path(&self.dir, first))?;
            active.sealed.remove(0);
            self.log_bytes.fetch_sub(bytes, Ordering::Relaxed);
            removed += 1;
        }
        if removed > 0 {
            self.fs.sync_dir(&self.dir)?;
        }
        Ok(removed)
    }

    /// Under `SyncMode::Interval`, a thread that syncs what the commits
    /// leave behind at least once per interval. It holds only a weak
    /// reference and ends once the log is dropped.
    #[cfg(not(loom))]
    pub(crate) fn start_interval_sync(self: &Arc<Self>) {
        let SyncMode::Interval(every) = self.mode else {
            return;
        };
        let weak = Arc::downgrade(self);
        let control = std::sync::Arc::clone(&self.interval);
        let spawned = std::thread::Builder::new()
            .name("mvledger-sync".into())
            .spawn(move || {
                // A panic here (in a file system's sync, say) must not
                // leave the log looking healthy, with nobody syncing it.
                let _guard = PoisonIfPanics(weak.clone());
                // What the last look found decides the next sleep (the
                // log is not held meanwhile).
                let mut found = Due::NotYet;
                loop {
                    let wait = match found {
                        // Until the last sync is `every` old.
                        Due::NotYet | Due::Synced => {
                            let Some(log) = weak.upgrade() else { return };
                            let since = log.state.lock().last_sync.elapsed();
                            every.saturating_sub(since)
                        }
                        // Idle: a commit that comes meanwhile waits at
                        // most an interval for the next look.
                        Due::Nothing => every,
                        // Another caller writes: look again soon.
                        Due::Busy => MIN_TICK,
                    };
                    if control.sleep(wait.max(MIN_TICK)) {
                        return;
                    }
                    let Some(log) = weak.upgrade() else { return };
                    match log.sync_if_due(every) {
                        Ok(due) => found = due,
                        Err(_) => return,
                    }
                }
            });
        // Without the thread, commits still sync when they find the
        // interval passed; only an idle tail waits for the next commit.
        if let Ok(handle) = spawned {
            *self.interval.handle.lock() = Some(handle);
            self.interval
                .running
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }

    /// Stops the sync thread and waits for it, so that the caller's
    /// reference is the last one: the log's final flush and the release of
    /// its lock then run in the caller (the engine's drop), not later on
    /// the thread, should it be in the middle of a sync.
    #[cfg(not(loom))]
    pub(crate) fn stop_interval_sync(&self) {
        *self.interval.stop.lock() = true;
        self.interval.wake.notify_all();
        let handle = self.interval.handle.lock().take();
        if let Some(handle) = handle {
            // Its panic, if any, poisoned the log (`PoisonIfPanics`).
            let _ = handle.join();
        }
    }

    /// Marks the log failed after a panic in its sync thread, and hands
    /// back the leadership it may have held, waking whoever waits on it:
    /// what a failed lead does (`finish_lead`).
    #[cfg(not(loom))]
    fn poison_after_panic(&self) {
        let _ = self.cause.set("the log's sync thread panicked".to_string());
        drop(self.finish_lead(Err(Error::Poisoned), false));
    }
}

/// The interval sync thread: whether it runs (then it alone syncs, and a
/// commit never waits for a sync), its stop signal (with what wakes its
/// sleep at once) and its handle.
#[derive(Debug, Default)]
#[cfg_attr(loom, allow(dead_code))]
struct IntervalThread {
    running: std::sync::atomic::AtomicBool,
    stop: parking_lot::Mutex<bool>,
    wake: parking_lot::Condvar,
    handle: parking_lot::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl IntervalThread {
    /// Sleeps `wait`, or less if told to stop; true when told to stop.
    #[cfg(not(loom))]
    fn sleep(&self, wait: Duration) -> bool {
        let mut stop = self.stop.lock();
        if !*stop {
            self.wake.wait_for(&mut stop, wait);
        }
        *stop
    }
}

/// Poisons the log when the sync thread unwinds (`Log::poison_after_panic`).
#[cfg(not(loom))]
struct PoisonIfPanics(std::sync::Weak<Log>);

#[cfg(not(loom))]
impl Drop for PoisonIfPanics {
    fn drop(&mut self) {
        if std::thread::panicking()
            && let Some(log) = self.0.upgrade()
        {
            log.poison_after_panic();
        }
    }
}

/// Poisons the log and hands the leadership back, waking whoever waits on
/// it, when the group-commit leader unwinds (a file system that panics in
/// a sync, say): else every later commit, and the flush of the engine's
/// drop, would wait forever for a leader that is gone.
struct LeadGuard<'a>(&'a Log);

impl Drop for LeadGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self
                .0
                .cause
                .set("a group-commit leader panicked".to_string());
            drop(self.0.finish_lead(Err(Error::Poisoned), false));
        }
    }
}

/// The ts of the first record in a non-empty buffer of whole frames.
/// Whether the active segment holds a record, when the next record's ts
/// is `next_ts`: only then may it be sealed and a segment start at
/// `next_ts`. Its length does not tell: a segment with no record may hold
/// a close record (`record::KIND_CLOSE`) after its header, and a new
/// segment at `next_ts` would then take its own name.
fn holds_records(active: &Active, next_ts: u64) -> bool {
    next_ts > active.first_ts
}

fn first_ts_of(buf: &[u8]) -> u64 {
    let at = super::record::FRAME_HEADER_BYTES;
    buf.get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

impl Log {
    /// Ends the log with a close record, synced (`record::KIND_CLOSE`),
    /// unless it ends with one already. Run by a clean close alone, once
    /// everything is durable and the zeros ahead are cut: a crash never
    /// leaves a close record, so it tells recovery that no record before
    /// it was torn. Should the write fail, the log is as a crash left it:
    /// its last record may read as torn, which loses nothing acknowledged.
    fn write_close(&self, active: &mut Active) -> Result<()> {
        if active.closed {
            return Ok(());
        }
        let last_ts = self.pending.lock().last_ts;
        let mut buf = Vec::with_capacity(super::record::CLOSE_FRAME_BYTES);
        super::record::encode_close(&mut buf, last_ts);
        active.file.append(&buf)?;
        active.len += buf.len() as u64;
        active.zeroed = active.zeroed.max(active.len);
        active.file.sync_data()?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.log_bytes
            .fetch_add(buf.len() as u64, Ordering::Relaxed);
        active.closed = true;
        Ok(())
    }
}

impl Drop for Log {
    fn drop(&mut self) {
        // A clean close makes everything durable, whatever the sync mode,
        // leaves no zeros after the last record, and ends the log with a
        // close record.
        if !self.is_poisoned() && self.flush(true).is_ok() {
            let mut active = self.active.lock();
            if self.cut_zeros(&mut active).is_ok() {
                let _ = self.write_close(&mut active);
            }
        }
    }
}
