//! Ledger benchmarks (issue 3, "Speed and memory").
//!
//! Run: `cargo bench --bench ledger` (all, a few minutes on 2 cores), or
//! `cargo bench --bench ledger -- <filter>` (e.g. `zipf`). Criterion writes
//! every estimate to `target/criterion/<group>/<bench>/new/estimates.json`;
//! the figures to compare are the medians there.
//!
//! Settings shared by every bench (machine-independent, so that two runs on
//! two machines differ only by the machine):
//! - `ACCOUNTS` = 100,000 accounts, ids 1..=100,000, ledger 1, code 1, no
//!   flags (no limits, so every transfer succeeds: the benches measure the
//!   path that applies, and assert that it did), created once per ledger
//!   in batches of 8,190 before anything is timed;
//! - every bench has a ledger of its own (so one bench's stored transfers
//!   do not slow the next), in a fresh temp dir (`tempfile`), or under
//!   `$MVLEDGER_BENCH_DIR` if set, to measure another file system; the
//!   fsync baseline uses the same dir as the ledger it is compared with;
//! - a transfer: unique id (a counter, never reused within a ledger, so
//!   every iteration creates new transfers), debit and credit accounts
//!   drawn from a fixed-seed xorshift stream (uniform, or Zipf with theta
//!   0.99: `Zipf`), never the same account twice, amount 1..=1,000, ledger
//!   1, code 1, no flags; every batch is generated before its sample is
//!   timed, so the timed region holds `create_transfers` calls only;
//! - a batch is `BATCH` = 8,190 transfers (TigerBeetle's batch size), one
//!   client thread, one `create_transfers` call per batch;
//! - criterion: 10 samples, 1 s warm-up, 3 s measurement, flat sampling for
//!   the batch benches (one iteration = one batch).
//!
//! The machine (cores, load average, bench dir) is printed at start; after
//! each write bench: transfers created, log bytes per transfer (the
//! `stats().log_bytes` delta over the transfers, warm-up included), commits
//! per sync, and the keys and versions the engine then holds. Quote them with
//! the figures. The fsync latency of a shared disk drifts: compare the
//! `Always` benches only with the baselines of the same run.

#[path = "common/fsync.rs"]
mod fsync;
use fsync::fsync_baseline;

use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkGroup, Criterion, SamplingMode, Throughput, criterion_group, criterion_main,
    measurement::WallTime,
};
use mvledger::{
    Account, CreateAccountResult, CreateTransferResult, Ledger, LedgerOptions, Options, Stats,
    SyncMode, Transfer,
};
use tempfile::TempDir;

/// Accounts in every bench's ledger.
const ACCOUNTS: u64 = 100_000;
/// Events per `create_accounts` / `create_transfers` / `lookup_accounts`
/// call in the batch benches.
const BATCH: usize = 8_190;
/// Client threads in the single-transfer bench.
const THREADS: u64 = 16;
/// The Zipf exponent of the skewed bench: a few very hot accounts.
const ZIPF_THETA: f64 = 0.99;
/// Batches of lookup ids generated up front and cycled through.
const LOOKUP_BATCHES: usize = 16;
const LEDGER: u32 = 1;
const CODE: u16 = 1;

/// xorshift64*: cheap, fixed seed, good enough to pick accounts.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // Any nonzero state works; mix the seed so nearby seeds diverge.
        Rng((seed ^ 0x9E37_79B9_7F4A_7C15).wrapping_mul(0xBF58_476D_1CE4_E5B9) | 1)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    /// Uniform in [0, 1), from the top 53 bits.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Zipf-distributed ranks in `0..n` (rank 0 the hottest), by the method of
/// Gray et al., "Quickly generating billion-record synthetic databases"
/// (SIGMOD 1994), as YCSB's `ZipfianGenerator`: O(n) set-up, O(1) and
/// deterministic per sample (given the uniform stream).
struct Zipf {
    n: f64,
    theta: f64,
    alpha: f64,
    zetan: f64,
    eta: f64,
}

impl Zipf {
    fn new(n: u64, theta: f64) -> Self {
        assert!(n >= 2 && theta > 0.0 && theta < 1.0, "Zipf parameters");
        let zeta = |m: u64| (1..=m).map(|i| 1.0 / (i as f64).powf(theta)).sum::<f64>();
        let zetan = zeta(n);
        let zeta2 = zeta(2);
        let eta = (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan);
        Zipf {
            n: n as f64,
            theta,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta,
        }
    }

    /// The probability of rank 0 (the hottest account).
    fn hottest_share(&self) -> f64 {
        1.0 / self.zetan
    }

    fn sample(&self, rng: &mut Rng) -> u64 {
        let u = rng.unit();
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        let rank = (self.n * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        rank.min(self.n as u64 - 1)
    }
}

/// How a transfer's two accounts are drawn.
enum Pick {
    Uniform,
    Zipf(Zipf),
}

/// The account id of rank `rank` in `0..ACCOUNTS`: 99,991 is a prime, so
/// coprime to 100,000, and this is a bijection that scatters the hot ranks
/// of the Zipf draw over the id space (not ids 1, 2, 3, ...).
fn account_id(rank: u64) -> u128 {
    u128::from((rank * 99_991) % ACCOUNTS + 1)
}

/// The fixed-seed stream of transfers of one bench.
struct Workload {
    rng: Rng,
    pick: Pick,
    next_id: u128,
}

impl Workload {
    fn new(pick: Pick, seed: u64, first_id: u128) -> Self {
        Workload {
            rng: Rng::new(seed),
            pick,
            next_id: first_id,
        }
    }

    fn rank(&mut self) -> u64 {
        match &self.pick {
            Pick::Uniform => self.rng.below(ACCOUNTS),
            Pick::Zipf(z) => z.sample(&mut self.rng),
        }
    }

    fn transfer(&mut self) -> Transfer {
        let debit = self.rank();
        let mut credit = self.rank();
        while credit == debit {
            credit = self.rank();
        }
        let id = self.next_id;
        self.next_id += 1;
        Transfer {
            id,
            debit_account_id: account_id(debit),
            credit_account_id: account_id(credit),
            amount: u128::from(1 + self.rng.below(1_000)),
            ledger: LEDGER,
            code: CODE,
            ..Transfer::default()
        }
    }

    fn batch(&mut self, len: usize) -> Vec<Transfer> {
        (0..len).map(|_| self.transfer()).collect()
    }
}

fn temp_dir() -> TempDir {
    match std::env::var_os("MVLEDGER_BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base).expect("temp dir in $MVLEDGER_BENCH_DIR"),
        None => tempfile::tempdir().expect("temp dir"),
    }
}

/// Opens a ledger in `dir` and creates the `ACCOUNTS` accounts.
fn ledger_with_accounts(dir: &Path, sync: SyncMode) -> Ledger {
    let options = LedgerOptions {
        engine: Options {
            sync,
            ..Options::default()
        },
        ..LedgerOptions::default()
    };
    let ledger = Ledger::open(dir, options).expect("open ledger");
    let ids: Vec<u128> = (1..=u128::from(ACCOUNTS)).collect();
    for chunk in ids.chunks(BATCH) {
        let accounts: Vec<Account> = chunk
            .iter()
            .map(|&id| Account {
                id,
                ledger: LEDGER,
                code: CODE,
                ..Account::default()
            })
            .collect();
        let results = ledger.create_accounts(&accounts).expect("create accounts");
        assert!(
            results.iter().all(|r| *r == CreateAccountResult::Ok),
            "every account created"
        );
    }
    ledger
}

fn assert_all_ok(results: &[CreateTransferResult]) {
    if let Some((i, r)) = results
        .iter()
        .enumerate()
        .find(|(_, r)| **r != CreateTransferResult::Ok)
    {
        panic!("transfer {i} of a batch failed: {r:?}");
    }
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

/// Prints what `transfers` transfers cost in log bytes and syncs since
/// `before`, and what the engine holds now.
fn print_write_stats(what: &str, ledger: &Ledger, before: &Stats, transfers: u64) {
    if transfers == 0 {
        return; // filtered out
    }
    let now = ledger.stats();
    let log_bytes = now.log_bytes - before.log_bytes;
    let (commits, syncs) = (now.commits - before.commits, now.syncs - before.syncs);
    let per_sync = if syncs == 0 {
        "no syncs".to_string()
    } else {
        format!("{:.2} commits per sync", commits as f64 / syncs as f64)
    };
    eprintln!(
        "{what}: {transfers} transfers in {commits} commits, {log_bytes} log bytes \
         ({:.1} per transfer), {syncs} syncs ({per_sync}); engine now holds {} keys, \
         {} versions",
        log_bytes as f64 / transfers as f64,
        now.keys,
        now.versions_alive,
    );
}

/// One batch bench: a fresh ledger at `sync`, then one iteration = one
/// `create_transfers` call of `BATCH` transfers drawn by `pick`.
fn batch_bench(
    group: &mut BenchmarkGroup<'_, WallTime>,
    name: &str,
    sync: SyncMode,
    pick: impl FnOnce() -> Pick,
) {
    // Set up only if the bench runs (criterion filters inside
    // `bench_function`).
    let mut state: Option<(TempDir, Ledger, Workload, Stats)> = None;
    let mut pick = Some(pick);
    let mut transfers = 0u64;
    group.bench_function(name, |b| {
        let (_dir, ledger, work, _before) = state.get_or_insert_with(|| {
            let dir = temp_dir();
            let ledger = ledger_with_accounts(dir.path(), sync);
            let pick = pick.take().expect("set up once")();
            if let Pick::Zipf(z) = &pick {
                eprintln!(
                    "{name}: Zipf theta {}, the hottest account is {:.1}% of draws",
                    z.theta,
                    100.0 * z.hottest_share()
                );
            }
            let before = ledger.stats();
            (dir, ledger, Workload::new(pick, 1, 1), before)
        });
        b.iter_custom(|iters| {
            let batches: Vec<Vec<Transfer>> = (0..iters).map(|_| work.batch(BATCH)).collect();
            let mut results = Vec::with_capacity(batches.len());
            let start = Instant::now();
            for batch in &batches {
                results.push(ledger.create_transfers(batch).expect("create transfers"));
            }
            let elapsed = start.elapsed();
            results.iter().for_each(|r| assert_all_ok(r));
            transfers += iters * BATCH as u64;
            elapsed
        });
    });
    if let Some((dir, ledger, _, before)) = state {
        print_write_stats(name, &ledger, &before, transfers);
        // The ledger and its files go before the next bench sets up.
        drop(ledger);
        drop(dir);
    }
}

/// Benches (1) to (3): batches of 8,190 transfers, one client thread.
fn batches(c: &mut Criterion) {
    print_machine();
    let mut group = c.benchmark_group("ledger_create_transfers");
    group.sampling_mode(SamplingMode::Flat);
    group.throughput(Throughput::Elements(BATCH as u64));
    // (1) Durable on return, accounts drawn uniformly.
    batch_bench(
        &mut group,
        "always_uniform_batch_8190",
        SyncMode::Always,
        || Pick::Uniform,
    );
    // (2) Durable, Zipf theta 0.99 (target: at least 80% of (1)).
    batch_bench(
        &mut group,
        "always_zipf_batch_8190",
        SyncMode::Always,
        || Pick::Zipf(Zipf::new(ACCOUNTS, ZIPF_THETA)),
    );
    // (3) No sync: the CPU-only rate, for the ratio to (1).
    batch_bench(
        &mut group,
        "never_uniform_batch_8190",
        SyncMode::Never,
        || Pick::Uniform,
    );
    group.finish();
}

/// Bench (4): single-transfer `create_transfers` calls from 16 threads,
/// durable on return, against the disk's fsync rate before and after.
fn single_transfers(c: &mut Criterion) {
    // Each of the 16 threads makes `iters` calls of one transfer each and
    // waits for each (uniform accounts; ids from one shared counter of
    // blocks, so unique across threads and iterations). Group commit should
    // beat the fsync rate by about the number of callers sharing a sync
    // (target: 8x). The baseline: append 100 bytes to a plain file in the
    // same dir and `fdatasync`, per iteration. Elements = transfers (or
    // fsyncs).
    let mut group = c.benchmark_group("ledger_durable");
    group.sampling_mode(SamplingMode::Flat);
    let dir = temp_dir();
    let baseline = dir.path().join("fsync-baseline");
    let mut ledger: Option<(Ledger, Stats)> = None;
    let next_id = AtomicU64::new(1);
    let mut transfers = 0u64;
    group.throughput(Throughput::Elements(1));
    group.bench_function("fsync_baseline_100_bytes", |b| fsync_baseline(b, &baseline));
    group.throughput(Throughput::Elements(THREADS));
    group.bench_function("always_16_threads_single_transfer", |b| {
        let (ledger, _) = ledger.get_or_insert_with(|| {
            let ledger = ledger_with_accounts(&dir.path().join("ledger"), SyncMode::Always);
            let before = ledger.stats();
            (ledger, before)
        });
        b.iter_custom(|iters| {
            let base = next_id.fetch_add(iters * THREADS, Ordering::Relaxed);
            let start = Instant::now();
            std::thread::scope(|s| {
                for t in 0..THREADS {
                    let ledger = &*ledger;
                    s.spawn(move || {
                        let first = base + t * iters;
                        let mut work = Workload::new(Pick::Uniform, first, u128::from(first));
                        for _ in 0..iters {
                            let transfer = work.transfer();
                            let results = ledger
                                .create_transfers(&[transfer])
                                .expect("create transfer");
                            assert_all_ok(&results);
                        }
                    });
                }
            });
            transfers += iters * THREADS;
            start.elapsed()
        });
    });
    if let Some((ledger, before)) = &ledger {
        print_write_stats(
            "always_16_threads_single_transfer",
            ledger,
            before,
            transfers,
        );
    }
    group.throughput(Throughput::Elements(1));
    group.bench_function("fsync_baseline_100_bytes_after", |b| {
        fsync_baseline(b, &baseline)
    });
    group.finish();
}

/// Bench (5): `lookup_accounts` of 8,190 random ids (uniform over the
/// 100,000, all found) at one `LedgerSnapshot`, reused; one thread. The
/// ledger holds the accounts only (`SyncMode::Never`, one version each).
/// `LOOKUP_BATCHES` batches of ids are generated up front and cycled.
/// Elements = accounts looked up.
fn lookups(c: &mut Criterion) {
    let mut group = c.benchmark_group("ledger_lookup_accounts");
    group.throughput(Throughput::Elements(BATCH as u64));
    let mut state: Option<(TempDir, Ledger)> = None;
    group.bench_function("snapshot_batch_8190_of_100k", |b| {
        let (_, ledger) = state.get_or_insert_with(|| {
            let dir = temp_dir();
            let ledger = ledger_with_accounts(dir.path(), SyncMode::Never);
            (dir, ledger)
        });
        let mut rng = Rng::new(5);
        let id_batches: Vec<Vec<u128>> = (0..LOOKUP_BATCHES)
            .map(|_| {
                (0..BATCH)
                    .map(|_| account_id(rng.below(ACCOUNTS)))
                    .collect()
            })
            .collect();
        let snap = ledger.snapshot();
        let mut n = 0;
        b.iter(|| {
            let ids = &id_batches[n % LOOKUP_BATCHES];
            n += 1;
            let found = snap.lookup_accounts(ids).expect("lookup");
            debug_assert_eq!(found.len(), BATCH);
            black_box(found)
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
    targets = batches, single_transfers, lookups
}
criterion_main!(benches);
