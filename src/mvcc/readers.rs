//! The registry of live readers (transactions and snapshots) and the GC low
//! watermark derived from it.
//!
//! Invariant: a reader registered at ts S keeps every version it can read.
//! The watermark is the smallest registered start ts, or the visible ts
//! when there is none; GC keeps, for each key, the newest version at or
//! below the watermark and everything above it. Registration reads the
//! visible ts under the same lock that computes the watermark, so a reader
//! can never register below a watermark that GC already acted on: the
//! watermark never goes backwards.

use std::collections::BTreeMap;

use crate::sync::{AtomicU64, Mutex, Ordering};

#[derive(Debug, Default)]
pub(crate) struct Readers {
    /// start ts -> how many live readers hold it.
    live: Mutex<BTreeMap<u64, u32>>,
}

impl Readers {
    /// Registers a reader at the current visible ts and returns that ts.
    pub(crate) fn register(&self, visible: &AtomicU64) -> u64 {
        let mut live = self.live.lock();
        let ts = visible.load(Ordering::Acquire);
        *live.entry(ts).or_insert(0) += 1;
        ts
    }

    /// Registers one more reader at `ts`, which a live reader already holds.
    pub(crate) fn register_again(&self, ts: u64) {
        let mut live = self.live.lock();
        debug_assert!(live.contains_key(&ts), "register_again without a holder");
        *live.entry(ts).or_insert(0) += 1;
    }

    /// Drops a reader registered at `ts`.
    pub(crate) fn unregister(&self, ts: u64) {
        let mut live = self.live.lock();
        if let Some(count) = live.get_mut(&ts) {
            *count -= 1;
            if *count == 0 {
                live.remove(&ts);
            }
        } else {
            debug_assert!(false, "unregister of a reader that is not registered");
        }
    }

    /// The low watermark: no live reader reads below it.
    pub(crate) fn watermark(&self, visible: &AtomicU64) -> u64 {
        let live = self.live.lock();
        let visible = visible.load(Ordering::Acquire);
        live.keys()
            .next()
            .map_or(visible, |&oldest| oldest.min(visible))
    }

    /// How many readers are live.
    pub(crate) fn count(&self) -> u64 {
        self.live.lock().values().map(|&c| u64::from(c)).sum()
    }
}
