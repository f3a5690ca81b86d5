//! Memory overhead per live key (issue 2, "Speed and memory": under 100
//! bytes per key beyond the key and value bytes).
//!
//! Run: `cargo run --release --example memory`
//!
//! A counting global allocator (wrapping `std::alloc::System`) tracks the
//! bytes currently allocated, as requested by the program (the allocator's
//! own rounding and headers are not counted). The example opens an engine
//! with `SyncMode::Never` in a temp dir, loads 1,000,000 keys of 16 bytes
//! with 100-byte values (the benchmark's data set: `Engine::apply` batches
//! of 50,000 keys in a scattered order), syncs, runs a full GC, and prints
//! `(allocated - key bytes - value bytes) / keys`, where "allocated" is the
//! growth since just before `Engine::open`. It then reads every key once at
//! a snapshot and prints the figure again, since reading can change how a
//! stored value is held.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use mvledger::{Engine, Options, SyncMode};

/// Counts the bytes currently allocated through it.
struct Counting;

static ALLOCATED: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is forwarded unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counter only observes sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            ALLOCATED.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            ALLOCATED.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) };
        ALLOCATED.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            ALLOCATED.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        p
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const KEYS: u64 = 1_000_000;
const KEY_BYTES: u64 = 16;
const VALUE_BYTES: usize = 100;
const LOAD_BATCH: u64 = 50_000;

/// The 16-byte key number `i`, as in `benches/engine.rs`.
fn key(i: u64) -> [u8; KEY_BYTES as usize] {
    let mut k = [0u8; KEY_BYTES as usize];
    k[..8].copy_from_slice(b"account:");
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

fn value(i: u64) -> [u8; VALUE_BYTES] {
    let mut v = [0u8; VALUE_BYTES];
    for (n, chunk) in v.chunks_mut(8).enumerate() {
        let word = i.wrapping_add(n as u64).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
    v
}

/// A bijection on `0..KEYS` that scatters the load over the key space.
fn load_order(j: u64) -> u64 {
    (j * 999_983) % KEYS
}

fn allocated() -> isize {
    ALLOCATED.load(Ordering::Relaxed)
}

fn report(what: &str, base: isize, keys: u64) {
    let live = allocated() - base;
    let payload = (keys * (KEY_BYTES + VALUE_BYTES as u64)) as isize;
    let overhead = (live - payload) as f64 / keys as f64;
    println!(
        "{what}: {live} bytes allocated for {keys} keys ({payload} bytes of keys and values): \
         {overhead:.1} bytes of overhead per key"
    );
}

fn main() -> mvledger::Result<()> {
    let dir = tempfile::tempdir()?;
    let base = allocated();
    let engine = Engine::open(
        dir.path(),
        Options {
            sync: SyncMode::Never,
            ..Options::default()
        },
    )?;
    let mut j = 0;
    while j < KEYS {
        let end = (j + LOAD_BATCH).min(KEYS);
        engine.apply(|batch| {
            for n in j..end {
                let i = load_order(n);
                batch.put(key(i), value(i))?;
            }
            Ok(())
        })?;
        j = end;
    }
    engine.sync()?;
    engine.gc();
    let stats = engine.stats();
    assert_eq!(stats.keys, KEYS, "every key loaded");
    assert_eq!(stats.versions_alive, KEYS, "one version per key");
    report("after load", base, KEYS);

    let snap = engine.snapshot();
    for i in 0..KEYS {
        let found = snap.get(key(i))?;
        assert_eq!(found.as_deref(), Some(&value(i)[..]));
    }
    drop(snap);
    report("after reading every key once", base, KEYS);
    Ok(())
}
