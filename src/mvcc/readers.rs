//! The registry of live readers (transactions and snapshots) and the GC low
//! watermark derived from it.
//!
//! Invariant: a reader registered at ts S keeps every version it can read.
//! The watermark is the smallest registered start ts, or the visible ts
//! when there is none. GC keeps exactly what some reader can read, now or
//! later (`Horizon`): for each key, every version above the visible ts (a
//! reader to come may read it), the newest at or below the visible ts, and
//! for each live reader below it, the newest version at or below its
//! start ts. Nothing else: a long-lived snapshot keeps the versions it
//! reads, not every version written since it began. Registration reads the
//! visible ts under the same lock that takes the horizon, so a reader can
//! never register below a horizon GC already acted on; and a horizon taken
//! earlier is still safe to prune with (it keeps more).

use std::collections::BTreeMap;
use std::sync::Arc;

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

    /// What GC may drop now (see the module comment).
    pub(crate) fn horizon(&self, visible: &AtomicU64) -> Horizon {
        let live = self.live.lock();
        let visible = visible.load(Ordering::Acquire);
        let below: Vec<u64> = live
            .keys()
            .copied()
            .take_while(|&ts| ts < visible)
            .collect();
        Horizon {
            visible,
            live: (!below.is_empty()).then(|| Arc::from(below)),
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

/// The readers GC must serve, as of one moment: the visible ts then (every
/// reader that comes later starts at or above it) and the start ts of the
/// live readers below it. Pruning with it keeps every version some reader
/// can read, now or later, and drops the rest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Horizon {
    visible: u64,
    /// The live readers' start ts below `visible`, ascending, distinct
    /// (`None`: there is none; most of the time).
    live: Option<Arc<[u64]>>,
}

impl Horizon {
    /// No live reader below `ts`, which is the visible ts: the horizon of
    /// recovery, and the old single-watermark rule.
    pub(crate) fn at(ts: u64) -> Horizon {
        Horizon {
            visible: ts,
            live: None,
        }
    }

    /// The low watermark: no reader reads below it.
    pub(crate) fn watermark(&self) -> u64 {
        self.live
            .as_ref()
            .and_then(|live| live.first().copied())
            .map_or(self.visible, |oldest| oldest.min(self.visible))
    }

    /// Whether some reader can read the version at `ts` whose next newer
    /// version (dropped or not) is at `newer`: it is above the visible ts
    /// (a reader to come may read it), or a reader's ts (the visible one,
    /// or a live reader's) lies in `ts..newer`.
    pub(crate) fn needs(&self, ts: u64, newer: u64) -> bool {
        if ts > self.visible || (ts..newer).contains(&self.visible) {
            return true;
        }
        self.live.as_ref().is_some_and(|live| {
            let first_at_or_after = live.partition_point(|&r| r < ts);
            live.get(first_at_or_after).is_some_and(|&r| r < newer)
        })
    }
}

#[cfg(test)]
mod horizon_tests {
    use super::*;

    /// Versions of a key at ts 10, 20, 30 (newest); readers at 15 and 25,
    /// visible 40: each reader needs the version it reads, a reader to
    /// come needs the newest, and nothing else is needed.
    #[test]
    fn a_version_is_needed_exactly_when_a_reader_reads_it() {
        let h = Horizon {
            visible: 40,
            live: Some(Arc::from(vec![15, 25])),
        };
        assert_eq!(h.watermark(), 15);
        assert!(h.needs(10, 20), "the reader at 15 reads ts 10");
        assert!(h.needs(20, 30), "the reader at 25 reads ts 20");
        assert!(h.needs(30, u64::MAX), "readers at 40 and later read ts 30");
        assert!(!h.needs(5, 10), "no reader reads below 10");
        assert!(!h.needs(16, 20), "no reader lies in 16..20");
        assert!(!h.needs(10, 15), "the reader at 15 reads the version at 15");
        // Above the visible ts: not yet visible, a reader to come may read it.
        assert!(h.needs(45, 50));
        // No live reader: the old rule, at the visible ts.
        let h = Horizon::at(40);
        assert_eq!(h.watermark(), 40);
        assert!(h.needs(30, 50) && !h.needs(20, 30) && h.needs(41, 42));
    }
}
