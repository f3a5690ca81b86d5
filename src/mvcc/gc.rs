//! The version collector.
//!
//! A commit that gives a key its second version queues that key with the
//! ts of its newest version. After leaving the sequencer, each commit prunes
//! a bounded number of queued keys whose ts the low watermark has passed
//! (more work than it queued, so the queue drains), so GC rides on commits
//! and memory stays flat under endless updates of the same keys. A key
//! still holding versions above the watermark is queued again with its
//! newest ts. `Engine::gc` sweeps every key at once.
//!
//! Safety (invariant 5): pruning keeps every version above the watermark
//! and the newest one at or below it, and the watermark never passes a live
//! reader's ts (`readers.rs`).

use std::collections::VecDeque;

use super::index::Index;
use crate::sync::{AtomicU64, Mutex, Ordering};

/// Keys pruned per commit at the least.
const MIN_BUDGET: usize = 16;

#[derive(Debug, Default)]
pub(crate) struct Collector {
    /// (newest ts when queued, key), in ts order.
    queue: Mutex<VecDeque<(u64, Box<[u8]>)>>,
    /// A watermark computed earlier: a safe lower bound, since the
    /// watermark never goes backwards.
    cached_watermark: AtomicU64,
}

impl Collector {
    /// Queues `key`, whose newest version is at `ts`. Called in the
    /// sequencer, so the queue stays in ts order.
    pub(crate) fn enqueue(&self, ts: u64, key: &[u8]) {
        self.queue.lock().push_back((ts, key.into()));
    }

    /// Prunes up to `max(work, MIN_BUDGET)` queued keys whose ts the
    /// watermark passed. `watermark` computes the current watermark; it is
    /// called only when the cached one does not reach the queue's head.
    pub(crate) fn step(&self, index: &Index, work: usize, watermark: impl FnOnce() -> u64) {
        // Another committer collecting is enough: never wait for GC.
        let Some(mut queue) = self.queue.try_lock() else {
            return;
        };
        let Some(&(head_ts, _)) = queue.front() else {
            return;
        };
        let mut wm = self.cached_watermark.load(Ordering::Relaxed);
        if head_ts > wm {
            wm = watermark();
            self.cached_watermark.fetch_max(wm, Ordering::Relaxed);
        }
        let budget = work.saturating_mul(2).max(MIN_BUDGET);
        for _ in 0..budget {
            match queue.front() {
                Some(&(ts, _)) if ts <= wm => {}
                _ => break,
            }
            let Some((_, key)) = queue.pop_front() else {
                break;
            };
            if let Some(newest) = index.prune(&key, wm) {
                queue.push_back((newest, key));
            }
        }
    }

    /// Remembers a watermark computed by a full sweep.
    pub(crate) fn note_watermark(&self, wm: u64) {
        self.cached_watermark.fetch_max(wm, Ordering::Relaxed);
    }
}
