//! Storage-core benchmarks (issue 2, "Speed and memory").
//!
//! Run: `cargo bench --bench engine` (all, a few minutes on 2 cores), or
//! `cargo bench --bench engine -- <filter>` (e.g. `durable`). Criterion
//! writes every estimate to `target/criterion/<group>/<bench>/new/estimates.json`;
//! the figures to compare are the medians there.
//!
//! Settings shared by every bench (machine-independent, so that two runs on
//! two machines differ only by the machine):
//! - keys are 16 bytes, `b"account:"` then a big-endian u64 index, so that
//!   `key(i)` sorts by `i` and `key(s)..key(s + 100)` holds exactly 100 keys;
//!   values are 100 bytes;
//! - the data set is `KEYS` = 1,000,000 keys, loaded with `SyncMode::Never`
//!   through `Engine::apply` batches of `LOAD_BATCH` keys, in a fixed
//!   pseudo-random order (`load_order`) so the index is shaped as by random
//!   inserts, not by a sorted bulk load;
//! - random keys come from a fixed-seed xorshift generator;
//! - every engine and file lives in a fresh temp dir (`tempfile`), or under
//!   `$MVLEDGER_BENCH_DIR` if set, to measure another file system; the fsync
//!   baseline uses the same dir as the engine it is compared with;
//! - criterion: 10 samples, 1 s warm-up, 3 s measurement unless a group
//!   says otherwise; slow routines use flat sampling.
//!
//! The machine (cores, load average, bench dir) is printed at start, and
//! the commits per sync of each `Always` bench after it; quote them with
//! the figures. The fsync latency of a shared disk drifts: compare the
//! `Always` benches only with the baselines of the same run.

#[path = "common/fsync.rs"]
mod fsync;
use fsync::fsync_baseline;

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use mvledger::{Engine, Options, Stats, SyncMode};
use tempfile::TempDir;

/// Keys in the data set of the read, scan, checkpoint and recovery benches.
const KEYS: u64 = 1_000_000;
/// Keys per `Engine::apply` batch when loading the data set.
const LOAD_BATCH: u64 = 50_000;
/// Value size, in bytes.
const VALUE_BYTES: usize = 100;
/// Keys the single-key commit benches cycle through (per thread).
const COMMIT_KEYS: u64 = 100_000;
/// Committer threads in the group-commit bench.
const THREADS: u64 = 16;
/// Keys in a range scan.
const RANGE_KEYS: u64 = 100;

/// The 16-byte key number `i`.
fn key(i: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(b"account:");
    k[8..].copy_from_slice(&i.to_be_bytes());
    k
}

/// A 100-byte value derived from `i`.
fn value(i: u64) -> [u8; VALUE_BYTES] {
    let mut v = [0u8; VALUE_BYTES];
    for (n, chunk) in v.chunks_mut(8).enumerate() {
        let word = i.wrapping_add(n as u64).to_le_bytes();
        chunk.copy_from_slice(&word[..chunk.len()]);
    }
    v
}

/// The `j`-th key index to load: a bijection on `0..KEYS` (999,983 is a
/// prime, so coprime to 10^6), which scatters consecutive loads over the
/// key space.
fn load_order(j: u64) -> u64 {
    (j * 999_983) % KEYS
}

/// xorshift64*: cheap, fixed seed, good enough to pick keys.
struct Rng(u64);

impl Rng {
    fn new() -> Self {
        Rng(0x9E37_79B9_7F4A_7C15)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn temp_dir() -> TempDir {
    match std::env::var_os("MVLEDGER_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base).expect("temp dir in $MVLEDGER_BENCH_DIR"),
        None => tempfile::tempdir().expect("temp dir"),
    }
}

fn open(dir: &Path, sync: SyncMode) -> Engine {
    let options = Options {
        sync,
        ..Options::default()
    };
    Engine::open(dir, options).expect("open engine")
}

/// Loads the `KEYS`-key data set into `engine` in `LOAD_BATCH`-key batches.
fn load(engine: &Engine) {
    let mut j = 0;
    while j < KEYS {
        let end = (j + LOAD_BATCH).min(KEYS);
        engine
            .apply(|batch| {
                for n in j..end {
                    let i = load_order(n);
                    batch.put(key(i), value(i))?;
                }
                Ok(())
            })
            .expect("load batch");
        j = end;
    }
}

/// One transaction writing one key.
fn commit_one(engine: &Engine, i: u64) {
    let mut txn = engine.begin();
    txn.put(key(i), value(i)).expect("put");
    txn.commit().expect("single-key commit");
}

/// The data set of the read, scan and checkpoint benches, loaded once (and
/// only if a bench that needs it runs).
struct Loaded {
    engine: Engine,
    _dir: TempDir,
}

fn loaded() -> Loaded {
    let dir = temp_dir();
    let engine = open(dir.path(), SyncMode::Never);
    let start = Instant::now();
    load(&engine);
    engine.sync().expect("sync after load");
    assert_eq!(engine.stats().keys, KEYS);
    eprintln!("loaded {KEYS} keys in {:?}", start.elapsed());
    Loaded { engine, _dir: dir }
}

fn print_machine() {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let dir = std::env::var("MVLEDGER_BENCH_DIR")
        .unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    eprintln!(
        "machine: {cores} cores, load average {}, bench dir {dir}",
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
}

/// Point reads, 100-key range scans, full scans and checkpoints over the
/// 1,000,000-key data set.
fn reads_scans_checkpoint(c: &mut Criterion) {
    print_machine();
    let data = std::cell::OnceCell::new();

    // Point read at one snapshot, reused: a uniformly random key of the
    // 1,000,000 per read; one read per iteration (time = ns per read).
    let mut group = c.benchmark_group("read");
    group.throughput(Throughput::Elements(1));
    group.bench_function("point_read_1m_keys", |b| {
        let data: &Loaded = data.get_or_init(loaded);
        let snap = data.engine.snapshot();
        let mut rng = Rng::new();
        b.iter(|| {
            let i = rng.below(KEYS);
            snap.get(key(i)).expect("get")
        });
    });
    // The same read, the value borrowed (`Snapshot::get_with`) instead of
    // copied out: the time of the lookup alone.
    group.bench_function("point_read_borrowed_1m_keys", |b| {
        let data: &Loaded = data.get_or_init(loaded);
        let snap = data.engine.snapshot();
        let mut rng = Rng::new();
        b.iter(|| {
            let i = rng.below(KEYS);
            snap.get_with(key(i), |v| v.map(<[u8]>::len)).expect("get")
        });
    });
    // The borrowed read again, each key chosen after the previous read's
    // value arrived (a bit of it goes into the next key): reads cannot
    // overlap, so this is the latency of one read, where the loops above
    // let the processor start the next read before this one's cache
    // misses are served (`get` less so: its allocation fills the
    // processor's window).
    group.bench_function("point_read_borrowed_dependent_1m_keys", |b| {
        let data: &Loaded = data.get_or_init(loaded);
        let snap = data.engine.snapshot();
        let mut rng = Rng::new();
        let mut last = 0u64;
        b.iter(|| {
            let i = rng.below(KEYS) ^ (last & 1);
            last = snap
                .get_with(key(i), |v| v.map_or(0, |v| u64::from(v[0])))
                .expect("get");
            last
        });
    });
    group.finish();

    let mut group = c.benchmark_group("scan");
    // A range `key(s)..key(s + 100)` from a random `s`: 100 keys returned,
    // at one snapshot, reused (elements = keys returned).
    group.throughput(Throughput::Elements(RANGE_KEYS));
    group.bench_function("range_100_of_1m_keys", |b| {
        let data: &Loaded = data.get_or_init(loaded);
        let snap = data.engine.snapshot();
        let mut rng = Rng::new();
        b.iter(|| {
            let s = rng.below(KEYS - RANGE_KEYS);
            let scan = snap.scan(key(s)..key(s + RANGE_KEYS)).expect("scan");
            let n = scan.count();
            debug_assert_eq!(n as u64, RANGE_KEYS);
            n
        });
    });
    // Every key, in order, at one snapshot, reused (elements = keys).
    group.throughput(Throughput::Elements(KEYS));
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("full_1m_keys", |b| {
        let data: &Loaded = data.get_or_init(loaded);
        let snap = data.engine.snapshot();
        b.iter(|| {
            let n = snap.scan(..).expect("scan").count();
            assert_eq!(n as u64, KEYS);
            n
        });
    });
    group.finish();

    // `Engine::checkpoint` of the 1,000,000 keys (file written and synced,
    // old segments removed). Before each timed checkpoint, one untimed
    // single-key commit moves the visible ts, since a checkpoint at an
    // unchanged ts does nothing. Elements = keys written.
    let mut group = c.benchmark_group("checkpoint");
    group.throughput(Throughput::Elements(KEYS));
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(10));
    // The first checkpoint also syncs the log the load left unsynced: it
    // is taken once, untimed.
    let first = std::cell::OnceCell::new();
    let mut n = 1;
    group.bench_function("1m_keys", |b| {
        let data: &Loaded = data.get_or_init(loaded);
        let engine = &data.engine;
        first.get_or_init(|| {
            commit_one(engine, 0);
            engine.checkpoint().expect("checkpoint");
        });
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                commit_one(engine, n % KEYS);
                n += 1;
                let start = Instant::now();
                engine.checkpoint().expect("checkpoint");
                total += start.elapsed();
            }
            total
        });
    });
    group.finish();
}

/// Single-key commits under each sync mode, and the disk's fsync rate.
fn commits(c: &mut Criterion) {
    // `SyncMode::Never`, 1 thread, a fresh engine: transaction `begin`,
    // one `put` (16-byte key, 100-byte value), `commit`; the keys cycle
    // through 100,000, so after the first 100,000 commits every commit
    // updates a key (and GC prunes behind it). Elements = commits.
    let mut group = c.benchmark_group("commit");
    group.throughput(Throughput::Elements(1));
    let never = std::cell::OnceCell::new();
    let mut n = 0u64;
    group.bench_function("never_1_thread", |b| {
        let (_dir, engine): &(TempDir, Engine) = never.get_or_init(|| {
            let dir = temp_dir();
            let engine = open(dir.path(), SyncMode::Never);
            (dir, engine)
        });
        b.iter(|| {
            commit_one(engine, n % COMMIT_KEYS);
            n += 1;
        });
    });
    group.finish();

    // `SyncMode::Always` (durable on return): 1 committer, and 16 committer
    // threads (each does N single-key commits on keys of its own, so no
    // conflicts, and waits for each), against the fsync rate of a plain
    // file in the same dir (append 100 bytes + `sync_data` per iteration),
    // measured before and again after the engine (a shared disk's fsync
    // latency drifts; two baselines far apart say the ratio is noise).
    // The engine's group commit should beat the fsync rate by about the
    // number of committers sharing a sync. Elements = commits (or fsyncs).
    let dir = temp_dir();
    let engine = open(&dir.path().join("engine"), SyncMode::Always);
    let baseline = dir.path().join("fsync-baseline");
    let mut group = c.benchmark_group("durable");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(1));
    group.bench_function("fsync_baseline_100_bytes", |b| fsync_baseline(b, &baseline));
    let before = engine.stats();
    let mut n = 0u64;
    group.bench_function("always_1_thread", |b| {
        b.iter(|| {
            commit_one(&engine, n % COMMIT_KEYS);
            n += 1;
        });
    });
    let before = print_commits_per_sync("always_1_thread", &engine, before);
    group.throughput(Throughput::Elements(THREADS));
    group.bench_function("always_16_threads", |b| {
        b.iter_custom(|iters| {
            let start = Instant::now();
            std::thread::scope(|s| {
                for t in 0..THREADS {
                    let engine = &engine;
                    s.spawn(move || {
                        // Thread t writes keys [t + 1, t + 2) * COMMIT_KEYS.
                        let first = (t + 1) * COMMIT_KEYS;
                        for n in 0..iters {
                            commit_one(engine, first + n % COMMIT_KEYS);
                        }
                    });
                }
            });
            start.elapsed()
        });
    });
    print_commits_per_sync("always_16_threads", &engine, before);
    group.throughput(Throughput::Elements(1));
    group.bench_function("fsync_baseline_100_bytes_after", |b| {
        fsync_baseline(b, &baseline)
    });
    group.finish();
}

/// Prints the commits and syncs of `engine` since `before` (checks that
/// group commit is what makes the difference), and returns the stats now.
fn print_commits_per_sync(what: &str, engine: &Engine, before: Stats) -> Stats {
    let now = engine.stats();
    let (commits, syncs) = (now.commits - before.commits, now.syncs - before.syncs);
    if commits == 0 {
        return now; // filtered out
    }
    eprintln!(
        "{what}: {commits} commits, {syncs} syncs, {:.2} commits per sync",
        commits as f64 / syncs.max(1) as f64
    );
    now
}

/// `Engine::open` of a log of 1,000,000 single-key commits.
fn recovery(c: &mut Criterion) {
    // The log: 1,000,000 transactions of one put each (distinct keys of the
    // data set, in `load_order`), committed with `SyncMode::Never`, the
    // engine then closed cleanly; no checkpoint, default 64 MiB segments.
    // Timed: `Engine::open` (read, check and replay every record, rebuild
    // the index); the close after it is not timed. Elements = records.
    let mut group = c.benchmark_group("recovery");
    group.throughput(Throughput::Elements(KEYS));
    group.sampling_mode(SamplingMode::Flat);
    group.measurement_time(Duration::from_secs(10));
    let log = std::cell::OnceCell::new();
    group.bench_function("open_1m_commit_log", |b| {
        let dir: &TempDir = log.get_or_init(|| {
            let dir = temp_dir();
            let engine = open(dir.path(), SyncMode::Never);
            let start = Instant::now();
            for j in 0..KEYS {
                commit_one(&engine, load_order(j));
            }
            let stats = engine.stats();
            eprintln!(
                "built a log of {} commits ({} bytes, {} segments) in {:?}",
                stats.commits,
                stats.log_bytes,
                stats.log_segments,
                start.elapsed()
            );
            dir
        });
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let engine = open(dir.path(), SyncMode::Never);
                total += start.elapsed();
                assert_eq!(engine.stats().keys, KEYS);
                drop(black_box(engine));
            }
            total
        });
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = reads_scans_checkpoint, commits, recovery
}
criterion_main!(benches);
