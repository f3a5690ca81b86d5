//! The ledger's clock: where batch timestamps (and so pending-transfer
//! expiry) come from. Nanoseconds since the UNIX epoch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of the current time in nanoseconds since the UNIX epoch. The
/// ledger never lets timestamps go backwards, whatever the clock says.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The time now.
    fn now_ns(&self) -> u64;
}

/// The system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ns(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
}

/// A clock that moves only when told to: for tests of timeouts.
#[derive(Debug, Default)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock at `now_ns`.
    pub fn new(now_ns: u64) -> Self {
        ManualClock(AtomicU64::new(now_ns))
    }
    /// Sets the time.
    pub fn set(&self, now_ns: u64) {
        self.0.store(now_ns, Ordering::SeqCst);
    }
    /// Moves the time forward by `ns`.
    pub fn advance(&self, ns: u64) {
        self.0.fetch_add(ns, Ordering::SeqCst);
    }
    /// Moves the time forward by `s` seconds.
    pub fn advance_secs(&self, s: u64) {
        self.advance(s.saturating_mul(1_000_000_000));
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}
