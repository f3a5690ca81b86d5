//! Memory overhead per live key (issue 2, "Speed and memory": under 100
//! bytes per key beyond the key and value bytes).
//!
//! Run: `cargo run --release --example memory`
//!
//! A counting global allocator (`examples/common/counting_alloc.rs`,
//! wrapping `std::alloc::System`) tracks the
//! bytes currently allocated, as requested by the program (the allocator's
//! own rounding and headers are not counted). The example opens an engine
//! with `SyncMode::Never` in a temp dir, loads 1,000,000 keys of 16 bytes
//! with 100-byte values (the benchmark's data set: `Engine::apply` batches
//! of 50,000 keys in a scattered order), syncs, runs a full GC, and prints
//! `(allocated - key bytes - value bytes) / keys`, where "allocated" is the
//! growth since just before `Engine::open`. It then reads every key once at
//! a snapshot and prints the figure again, since reading can change how a
//! stored value is held.

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{Counting, allocated};
use mvledger::{Engine, Options, SyncMode};

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
        // The overhead swings with the hash tables' load, between just
        // after they grow (by half: 57% full) and just before (85% full):
        // show it along the way, not only at the end.
        if j % (KEYS / 8) == 0 && j < KEYS {
            engine.sync()?;
            report("  while loading", base, j);
        }
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
