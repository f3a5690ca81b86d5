//! The version collector.
//!
//! A commit that gives a key its second version, or creates a key with a
//! tombstone, queues that key with the ts of its newest version. After leaving the sequencer, each commit prunes
//! a bounded number of queued keys whose ts the low watermark has passed
//! (more work than it queued, so the queue drains), so GC rides on commits
//! and memory stays flat under endless updates of the same keys. A key
//! still holding versions above the watermark is queued again with its
//! newest ts. `Engine::gc` sweeps every key at once.
//!
//! Safety (invariant 5): pruning keeps every version some reader can read,
//! now or later (`readers::Horizon`), and a horizon taken earlier keeps
//! more, never less. Keys are visited once the watermark (the horizon's
//! oldest reader) passes their newest version; installs prune for the
//! horizon they are given, so a long-lived snapshot keeps only what it
//! reads even while the collector waits for it.

use std::collections::VecDeque;

use super::index::Index;
use super::key::Key;
use super::readers::Horizon;
use crate::sync::{AtomicU64, Mutex, Ordering};

/// Keys pruned per commit at the least.
const MIN_BUDGET: usize = 16;
/// A queued key waits until the watermark is this many commits past its
/// newest version: a hot key is usually updated again before then, and its
/// installs prune it meanwhile, so it is visited once per many updates.
const LAG: u64 = 64;

#[derive(Debug, Default)]
pub(crate) struct Collector {
    /// (newest ts when queued, key), in ts order (keys queued again by the
    /// collector may land behind newer ones: that only delays them).
    queue: Mutex<VecDeque<(u64, Key)>>,
    /// Held by the one committer collecting.
    collecting: Mutex<()>,
    /// A watermark computed earlier: a safe lower bound, since the
    /// watermark never goes backwards.
    cached_watermark: AtomicU64,
    /// A horizon taken earlier, for pruning at install (safe: it keeps
    /// more than a newer one would).
    cached_horizon: Mutex<Horizon>,
}

impl Collector {
    /// Queues `keys`, whose newest versions are at `ts` (one commit's).
    /// Called in the sequencer, so the queue stays in ts order.
    pub(crate) fn enqueue_all(&self, ts: u64, keys: Vec<Key>) {
        if keys.is_empty() {
            return;
        }
        self.queue
            .lock()
            .extend(keys.into_iter().map(|key| (ts, key)));
    }

    /// Prunes up to `max(work, MIN_BUDGET)` queued keys whose ts the
    /// watermark passed. `watermark` computes the current watermark; it is
    /// called only when the cached one does not reach the queue's head.
    pub(crate) fn step(&self, index: &Index, work: usize, horizon: impl FnOnce() -> Horizon) {
        // One collector at a time; another committer collecting is enough.
        let Some(_collecting) = self.collecting.try_lock() else {
            return;
        };
        let head_ts = match self.queue.lock().front() {
            Some(&(ts, _)) => ts,
            None => return,
        };
        let mut wm = self.cached_watermark.load(Ordering::Relaxed);
        let mut h = None;
        if head_ts.saturating_add(LAG) > wm {
            let now = horizon();
            wm = now.watermark();
            self.note(now.clone());
            h = Some(now);
        }
        let h = h.unwrap_or_else(|| self.horizon_hint());
        let due_until = wm.saturating_sub(LAG);
        // Take the due keys out and prune them with the queue unlocked: the
        // sequencer enqueues under this lock and must never wait for GC.
        let budget = work.saturating_mul(2).max(MIN_BUDGET);
        let mut due = Vec::new();
        {
            let mut queue = self.queue.lock();
            while due.len() < budget && queue.front().is_some_and(|&(ts, _)| ts <= due_until) {
                if let Some((_, key)) = queue.pop_front() {
                    due.push(key);
                }
            }
        }
        let again = index.prune_all(due, &h);
        if !again.is_empty() {
            self.queue.lock().extend(again);
        }
    }

    /// A horizon taken earlier, for pruning at install.
    pub(crate) fn horizon_hint(&self) -> Horizon {
        self.cached_horizon.lock().clone()
    }

    /// Remembers a horizon just taken (by a step or a full sweep).
    pub(crate) fn note(&self, h: Horizon) {
        self.cached_watermark
            .fetch_max(h.watermark(), Ordering::Relaxed);
        *self.cached_horizon.lock() = h;
    }
}
