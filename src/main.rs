//! The `mvledger` command. For now one subcommand, `bench`: a money-transfer
//! workload on the key-value engine, run from several threads, followed by
//! a reopen of the data directory and a check of what it holds.
//!
//! This is the interim main job of issue 2; the ledger and command issues
//! replace the raw key-value transfers with the `Ledger` and add the other
//! commands. Arguments are parsed by hand until then (no dependencies).
//!
//! The workload, per transfer: one transaction reads two distinct random
//! accounts, moves a random amount from one to the other if the balance
//! allows it (a balance never goes below zero), bumps its thread's counter
//! key, and commits; on `Error::Conflict` it starts over (counted). Keys:
//! `acct/<u64 id big-endian>` -> `u64` balance little-endian, and
//! `meta/transfers/<u32 thread big-endian>` -> `u64` little-endian, the
//! number of transfers that thread committed. Each thread writes only its
//! own counter, so the counters add no conflicts, and because the counter
//! is bumped in the transfer's own transaction, their sum after a reopen is
//! exactly the number of transfers committed.
//!
//! Verification after the reopen: the accounts are all there, their sum is
//! `accounts * 1,000`, none is "negative" (a balance above the total could
//! only come from an unsigned wrap-around), and the counters add up to the
//! number of transfers whose commit returned `Ok`.
//!
//! Exit codes: 0 on success, 1 on an engine or disk error or a failed
//! verification, 2 on bad arguments.

#![warn(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mvledger::{Engine, Error, Options, Stats, SyncMode};

const USAGE: &str = "usage: mvledger bench [--accounts N] [--transfers N] [--threads N] \
[--sync always|interval|never] [--dir PATH] [--keep] [--seed N]";

const HELP: &str = "\
mvledger bench: concurrent money transfers on the key-value engine, then a
reopen of the data directory and a check of the balances.

options:
  --accounts N      accounts to create, each with a balance of 1,000 (default 10000, at least 2)
  --transfers N     transfers to run (default 200000)
  --threads N       threads running transfers (default 4, at most 1024)
  --sync MODE       always (durable on commit, group commit), interval (synced every 10 ms),
                    never (synced at the end only) (default always)
  --dir PATH        data directory (new or empty; kept afterwards); default: a new directory
                    under the system temporary directory, removed afterwards
  --keep            keep the temporary data directory
  --seed N          seed of the random transfers (default 42)

exit codes: 0 ok, 1 engine or disk error or failed verification, 2 bad arguments";

/// The balance every account starts with.
const INITIAL_BALANCE: u64 = 1_000;
/// Transfers move 1..=MAX_AMOUNT.
const MAX_AMOUNT: u64 = 250;
/// Accounts created per load transaction.
const LOAD_BATCH: u64 = 50_000;
/// The sync period of `--sync interval`.
const SYNC_INTERVAL: Duration = Duration::from_millis(10);
/// A bound on `--threads`.
const MAX_THREADS: usize = 1024;
/// A transfer that conflicts this many times in a row fails the run (about
/// ten seconds of back-off): with first-committer-wins some transaction
/// always makes progress, so this only trips on a bug.
const MAX_RETRIES: u64 = 10_000;
/// Latencies kept per thread (a uniform reservoir sample beyond that).
const LATENCY_SAMPLE: usize = 1 << 16;
const ACCOUNT_PREFIX: &[u8] = b"acct/";
const COUNTER_PREFIX: &[u8] = b"meta/transfers/";

fn main() -> ExitCode {
    let command = match parse_args(std::env::args_os().skip(1)) {
        Ok(command) => command,
        Err(e) => {
            eprintln!("mvledger: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match command {
        Command::Help => {
            println!("{USAGE}\n\n{HELP}");
            ExitCode::SUCCESS
        }
        Command::Bench(config) => match run_bench(&config) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("mvledger: {e}");
                ExitCode::from(1)
            }
        },
    }
}

// ---------------------------------------------------------------------------
// Arguments

#[derive(Debug)]
enum Command {
    Help,
    Bench(BenchConfig),
}

#[derive(Debug, Clone)]
struct BenchConfig {
    accounts: u64,
    transfers: u64,
    threads: usize,
    sync: SyncMode,
    dir: Option<PathBuf>,
    keep: bool,
    seed: u64,
}

impl Default for BenchConfig {
    fn default() -> Self {
        BenchConfig {
            accounts: 10_000,
            transfers: 200_000,
            threads: 4,
            sync: SyncMode::Always,
            dir: None,
            keep: false,
            seed: 42,
        }
    }
}

fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let Some(sub) = args.next() else {
        return Err("missing command".into());
    };
    match sub.to_str() {
        Some("bench") => parse_bench(args),
        Some("help" | "-h" | "--help") => Ok(Command::Help),
        _ => Err(format!("unknown command '{}'", sub.to_string_lossy())),
    }
}

fn parse_bench(mut args: impl Iterator<Item = OsString>) -> Result<Command, String> {
    let mut config = BenchConfig::default();
    while let Some(arg) = args.next() {
        let arg = arg
            .into_string()
            .map_err(|a| format!("argument '{}' is not UTF-8", a.to_string_lossy()))?;
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) if flag.starts_with("--") => (flag.to_string(), Some(value)),
            _ => (arg.clone(), None),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(Command::Help);
        }
        if flag == "--keep" {
            if inline.is_some() {
                return Err("--keep takes no value".into());
            }
            config.keep = true;
            continue;
        }
        let mut value = || -> Result<String, String> {
            match inline {
                Some(v) => Ok(v.to_string()),
                None => args
                    .next()
                    .ok_or_else(|| format!("{flag} needs a value"))?
                    .into_string()
                    .map_err(|v| format!("{flag}: '{}' is not UTF-8", v.to_string_lossy())),
            }
        };
        match flag.as_str() {
            "--accounts" => config.accounts = parse_u64(&flag, &value()?)?,
            "--transfers" => config.transfers = parse_u64(&flag, &value()?)?,
            "--seed" => config.seed = parse_u64(&flag, &value()?)?,
            "--threads" => {
                let n = parse_u64(&flag, &value()?)?;
                config.threads = usize::try_from(n).unwrap_or(usize::MAX);
            }
            "--sync" => config.sync = parse_sync(&value()?)?,
            "--dir" => config.dir = Some(PathBuf::from(value()?)),
            _ => return Err(format!("unknown option '{arg}' for bench")),
        }
    }
    check_bench(&config)?;
    Ok(Command::Bench(config))
}

fn parse_u64(flag: &str, text: &str) -> Result<u64, String> {
    let digits: String = text.chars().filter(|&c| c != '_').collect();
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("{flag}: '{text}' is not a whole number"));
    }
    digits
        .parse()
        .map_err(|_| format!("{flag}: '{text}' is too large"))
}

fn parse_sync(text: &str) -> Result<SyncMode, String> {
    match text {
        "always" => Ok(SyncMode::Always),
        "interval" => Ok(SyncMode::Interval(SYNC_INTERVAL)),
        "never" => Ok(SyncMode::Never),
        _ => Err(format!(
            "--sync: '{text}' is not one of always, interval, never"
        )),
    }
}

fn check_bench(config: &BenchConfig) -> Result<(), String> {
    if config.accounts < 2 {
        return Err("--accounts must be at least 2 (a transfer needs two accounts)".into());
    }
    if config.accounts.checked_mul(INITIAL_BALANCE).is_none() {
        return Err("--accounts is too large: the total balance overflows u64".into());
    }
    if config.threads == 0 || config.threads > MAX_THREADS {
        return Err(format!("--threads must be between 1 and {MAX_THREADS}"));
    }
    Ok(())
}

fn sync_name(sync: SyncMode) -> &'static str {
    match sync {
        SyncMode::Always => "always",
        SyncMode::Interval(_) => "interval (10 ms)",
        SyncMode::Never => "never",
    }
}

// ---------------------------------------------------------------------------
// Errors of a run

/// Why a run failed: printed as one line, exit code 1.
#[derive(Debug)]
struct Failure(String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn fail(context: impl fmt::Display) -> impl FnOnce(Error) -> Failure {
    move |e| Failure(format!("{context}: {e}"))
}

// ---------------------------------------------------------------------------
// The data directory

/// The bench's data directory; a temporary one is removed on drop unless
/// kept.
struct DataDir {
    path: PathBuf,
    remove: bool,
}

impl DataDir {
    fn new(config: &BenchConfig) -> Result<DataDir, Failure> {
        if let Some(path) = &config.dir {
            match std::fs::read_dir(path) {
                Ok(mut entries) => {
                    if entries.next().is_some() {
                        return Err(Failure(format!(
                            "--dir {} is not empty: bench needs a new or empty directory",
                            path.display()
                        )));
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Failure(format!("--dir {}: {e}", path.display()))),
            }
            return Ok(DataDir {
                path: path.clone(),
                remove: false,
            });
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!("mvledger-bench-{}-{nanos:09}", std::process::id());
        let path = std::env::temp_dir().join(name);
        std::fs::create_dir(&path)
            .map_err(|e| Failure(format!("creating {}: {e}", path.display())))?;
        Ok(DataDir {
            path,
            remove: !config.keep,
        })
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        if self.remove {
            if let Err(e) = std::fs::remove_dir_all(&self.path) {
                eprintln!("mvledger: removing {}: {e}", self.path.display());
            }
        } else if self.path.exists() {
            eprintln!("data directory kept: {}", self.path.display());
        }
    }
}

// ---------------------------------------------------------------------------
// The run

fn run_bench(config: &BenchConfig) -> Result<(), Failure> {
    let mut dir = DataDir::new(config)?;
    println!(
        "mvledger bench: {} accounts, {} transfers, {} thread{}, sync {}, seed {}",
        group(config.accounts),
        group(config.transfers),
        config.threads,
        if config.threads == 1 { "" } else { "s" },
        sync_name(config.sync),
        config.seed
    );
    println!("data directory: {}", dir.path.display());
    let options = Options {
        sync: config.sync,
        ..Options::default()
    };
    let engine = Engine::open(&dir.path, options)
        .map_err(fail(format!("opening {}", dir.path.display())))?;
    load_accounts(&engine, config.accounts)?;
    let before = engine.stats();
    let outcome = run_transfers(&engine, config)?;
    // Make everything durable under every sync mode, and see the error if
    // that fails (a drop would swallow it).
    engine.sync().map_err(fail("syncing the log"))?;
    let after = engine.stats();
    drop(engine);
    print_results(&outcome, &before, &after);
    if let Err(e) = verify(&dir.path, config, &outcome) {
        // Keep the evidence.
        dir.remove = false;
        return Err(e);
    }
    Ok(())
}

fn account_key(id: u64) -> [u8; 13] {
    let mut key = [0u8; 13];
    key[..5].copy_from_slice(ACCOUNT_PREFIX);
    key[5..].copy_from_slice(&id.to_be_bytes());
    key
}

fn counter_key(thread: usize) -> Vec<u8> {
    let mut key = COUNTER_PREFIX.to_vec();
    // `thread` < MAX_THREADS, so it fits.
    key.extend_from_slice(&u32::try_from(thread).unwrap_or(u32::MAX).to_be_bytes());
    key
}

/// Decodes a `u64` little-endian value; `what` names it in the error.
fn decode_u64(value: &[u8], what: &dyn fmt::Display) -> Result<u64, Failure> {
    let bytes: [u8; 8] = value.try_into().map_err(|_| {
        Failure(format!(
            "{what} holds {} bytes, not an 8-byte integer",
            value.len()
        ))
    })?;
    Ok(u64::from_le_bytes(bytes))
}

fn load_accounts(engine: &Engine, accounts: u64) -> Result<(), Failure> {
    let started = Instant::now();
    let balance = INITIAL_BALANCE.to_le_bytes();
    let mut first = 0u64;
    let mut txns = 0u64;
    while first < accounts {
        let end = first.saturating_add(LOAD_BATCH).min(accounts);
        let mut txn = engine.begin();
        for id in first..end {
            txn.put(account_key(id), balance)
                .map_err(fail("loading accounts"))?;
        }
        txn.commit().map_err(fail("committing the accounts"))?;
        txns += 1;
        first = end;
    }
    println!(
        "loaded {} accounts in {txns} transaction{}, {:.2} s",
        group(accounts),
        if txns == 1 { "" } else { "s" },
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// What the transfer threads did, added up.
#[derive(Debug, Default)]
struct Outcome {
    /// Transfers whose commit returned Ok (money moved).
    committed: u64,
    /// Transfers refused for an insufficient balance (nothing written).
    refused: u64,
    /// Commits retried after `Error::Conflict`.
    retries: u64,
    /// Sampled latencies per transfer, retries included.
    latencies_ns: Vec<u64>,
    latency_max_ns: u64,
    elapsed: Duration,
}

struct Shared<'a> {
    engine: &'a Engine,
    config: &'a BenchConfig,
    /// Transfers claimed by a thread.
    claimed: AtomicU64,
    /// Transfers finished (committed or refused).
    finished: AtomicU64,
    /// Set when a thread fails: the others stop.
    stop: AtomicBool,
}

fn run_transfers(engine: &Engine, config: &BenchConfig) -> Result<Outcome, Failure> {
    let shared = Shared {
        engine,
        config,
        claimed: AtomicU64::new(0),
        finished: AtomicU64::new(0),
        stop: AtomicBool::new(false),
    };
    let started = Instant::now();
    let reports: Vec<Result<ThreadReport, Failure>> = std::thread::scope(|scope| {
        let (done_tx, done_rx) = mpsc::channel::<()>();
        let shared = &shared;
        let progress = scope.spawn(move || show_progress(shared, &done_rx));
        let workers: Vec<_> = (0..config.threads)
            .map(|thread| scope.spawn(move || transfer_thread(shared, thread)))
            .collect();
        let reports = workers
            .into_iter()
            .map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err(Failure("a transfer thread panicked".into())))
            })
            .collect();
        drop(done_tx);
        let _ = progress.join();
        reports
    });
    let mut outcome = Outcome {
        elapsed: started.elapsed(),
        ..Outcome::default()
    };
    for report in reports {
        let report = report?;
        outcome.committed += report.committed;
        outcome.refused += report.refused;
        outcome.retries += report.retries;
        outcome.latency_max_ns = outcome.latency_max_ns.max(report.latency_max_ns);
        outcome.latencies_ns.extend(report.sample);
    }
    outcome.latencies_ns.sort_unstable();
    Ok(outcome)
}

/// One line on stderr about every second until `done` disconnects.
fn show_progress(shared: &Shared<'_>, done: &mpsc::Receiver<()>) {
    let total = shared.config.transfers;
    let mut last = (Instant::now(), 0u64);
    while let Err(mpsc::RecvTimeoutError::Timeout) = done.recv_timeout(Duration::from_secs(1)) {
        let now = Instant::now();
        let finished = shared.finished.load(Ordering::Relaxed);
        let rate = (finished - last.1) as f64 / now.duration_since(last.0).as_secs_f64();
        let percent = if total == 0 {
            100.0
        } else {
            finished as f64 * 100.0 / total as f64
        };
        eprintln!(
            "  {} / {} transfers ({percent:.0}%), {}/s",
            group(finished),
            group(total),
            group(rate as u64)
        );
        last = (now, finished);
    }
}

#[derive(Debug, Default)]
struct ThreadReport {
    committed: u64,
    refused: u64,
    retries: u64,
    sample: Vec<u64>,
    latency_max_ns: u64,
}

enum Transfer {
    Committed,
    Refused,
}

fn transfer_thread(shared: &Shared<'_>, thread: usize) -> Result<ThreadReport, Failure> {
    let config = shared.config;
    let thread_u64 = u64::try_from(thread).unwrap_or(u64::MAX);
    let mut rng = SplitMix64(config.seed ^ thread_u64.wrapping_mul(0xA076_1D64_78BD_642F));
    let counter = counter_key(thread);
    let mut report = ThreadReport::default();
    let mut sampled = 0u64;
    while !shared.stop.load(Ordering::Relaxed)
        && shared.claimed.fetch_add(1, Ordering::Relaxed) < config.transfers
    {
        let from = rng.below(config.accounts);
        // A second account, never the first.
        let to = (from + 1 + rng.below(config.accounts - 1)) % config.accounts;
        let amount = 1 + rng.below(MAX_AMOUNT);
        let started = Instant::now();
        let mut conflicts = 0u64;
        let result = loop {
            match transfer(shared.engine, from, to, amount, &counter) {
                Err(Error::Conflict) if conflicts < MAX_RETRIES => {
                    conflicts += 1;
                    back_off(conflicts);
                }
                other => break other,
            }
        };
        let latency_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        report.retries += conflicts;
        match result {
            Ok(Transfer::Committed) => report.committed += 1,
            Ok(Transfer::Refused) => report.refused += 1,
            Err(e) => {
                shared.stop.store(true, Ordering::Relaxed);
                return Err(Failure(format!(
                    "transfer {from} -> {to} of {amount} (after {conflicts} retries): {e}"
                )));
            }
        }
        report.latency_max_ns = report.latency_max_ns.max(latency_ns);
        reservoir_add(&mut report.sample, &mut sampled, latency_ns, &mut rng);
        shared.finished.fetch_add(1, Ordering::Relaxed);
    }
    Ok(report)
}

/// Waits before retry number `retry` (1-based). The commit that won is
/// usually still waiting for its sync, and until it is visible a new
/// transaction reads below it and conflicts again; retrying at once would
/// only spin. So: yield twice, then sleep 20 us, doubling up to 1 ms.
fn back_off(retry: u64) {
    if retry <= 2 {
        std::thread::yield_now();
    } else {
        let shift = (retry - 3).min(6);
        let wait = Duration::from_micros(20 << shift).min(Duration::from_millis(1));
        std::thread::sleep(wait);
    }
}

/// One transfer, one transaction: read both balances, move `amount` if
/// `from` holds it, bump this thread's counter, commit.
fn transfer(
    engine: &Engine,
    from: u64,
    to: u64,
    amount: u64,
    counter: &[u8],
) -> Result<Transfer, Error> {
    let mut txn = engine.begin();
    let (from_key, to_key) = (account_key(from), account_key(to));
    let from_balance = read_u64(txn.get(from_key)?.as_deref(), "account")?;
    let to_balance = read_u64(txn.get(to_key)?.as_deref(), "account")?;
    let Some(from_left) = from_balance.checked_sub(amount) else {
        txn.rollback();
        return Ok(Transfer::Refused);
    };
    let to_new = to_balance
        .checked_add(amount)
        .ok_or_else(|| Error::InvalidArgument(format!("account {to} would overflow")))?;
    let count = match txn.get(counter)? {
        None => 0,
        Some(value) => read_u64(Some(&value), "counter")?,
    };
    txn.put(from_key, from_left.to_le_bytes())?;
    txn.put(to_key, to_new.to_le_bytes())?;
    let count = count
        .checked_add(1)
        .ok_or_else(|| Error::InvalidArgument("transfer counter overflows".into()))?;
    txn.put(counter, count.to_le_bytes())?;
    txn.commit()?;
    Ok(Transfer::Committed)
}

/// A present 8-byte little-endian value, or an error that names `what`.
fn read_u64(value: Option<&[u8]>, what: &str) -> Result<u64, Error> {
    let value = value.ok_or_else(|| Error::InvalidArgument(format!("{what} key missing")))?;
    let bytes: [u8; 8] = value
        .try_into()
        .map_err(|_| Error::InvalidArgument(format!("{what} value of {} bytes", value.len())))?;
    Ok(u64::from_le_bytes(bytes))
}

/// Keeps a uniform sample of at most `LATENCY_SAMPLE` values (algorithm R).
fn reservoir_add(sample: &mut Vec<u64>, seen: &mut u64, value: u64, rng: &mut SplitMix64) {
    *seen += 1;
    if sample.len() < LATENCY_SAMPLE {
        sample.push(value);
        return;
    }
    let slot = rng.below(*seen);
    if let Some(kept) = usize::try_from(slot).ok().and_then(|i| sample.get_mut(i)) {
        *kept = value;
    }
}

/// splitmix64: small, fast, and good enough to pick accounts.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0), by multiply-shift.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

// ---------------------------------------------------------------------------
// Report and verification

fn print_results(outcome: &Outcome, before: &Stats, after: &Stats) {
    let done = outcome.committed + outcome.refused;
    let secs = outcome.elapsed.as_secs_f64();
    let rate = if secs > 0.0 { done as f64 / secs } else { 0.0 };
    let syncs = after.syncs.saturating_sub(before.syncs);
    let commits = after.commits.saturating_sub(before.commits);
    let conflicts = after.conflicts.saturating_sub(before.conflicts);
    let log_bytes = after.log_bytes.saturating_sub(before.log_bytes);
    println!("results ({} transfers in {secs:.2} s)", group(done));
    println!("  transfers/s         {}", group(rate as u64));
    println!("  committed           {}", group(outcome.committed));
    println!(
        "  refused             {} (insufficient balance)",
        group(outcome.refused)
    );
    println!(
        "  conflicts           {} retries (engine counted {})",
        group(outcome.retries),
        group(conflicts)
    );
    for (name, q) in [("p50", 0.5), ("p99", 0.99), ("p99.9", 0.999)] {
        println!(
            "  latency {name:<11} {}",
            fmt_ns(percentile(&outcome.latencies_ns, q))
        );
    }
    println!("  latency max         {}", fmt_ns(outcome.latency_max_ns));
    println!("  syncs               {}", group(syncs));
    if syncs > 0 {
        println!("  commits per sync    {:.2}", commits as f64 / syncs as f64);
    } else {
        println!("  commits per sync    - (no sync)");
    }
    if outcome.committed > 0 {
        println!(
            "  log bytes/transfer  {:.1}",
            log_bytes as f64 / outcome.committed as f64
        );
    }
}

/// The value at quantile `q` of sorted `values` (0 when empty).
fn percentile(values: &[u64], q: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    let rank = (q * values.len() as f64).ceil() as usize;
    let index = rank.clamp(1, values.len()) - 1;
    values.get(index).copied().unwrap_or(0)
}

fn fmt_ns(ns: u64) -> String {
    match ns {
        0..=9_999 => format!("{ns} ns"),
        10_000..=999_999 => format!("{:.1} us", ns as f64 / 1e3),
        _ => format!("{:.2} ms", ns as f64 / 1e6),
    }
}

/// `1234567` -> `1,234,567`.
fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Reopens the data directory and checks the accounts and the counters.
fn verify(path: &std::path::Path, config: &BenchConfig, outcome: &Outcome) -> Result<(), Failure> {
    let started = Instant::now();
    let engine = Engine::open(path, Options::default())
        .map_err(fail(format!("reopening {}", path.display())))?;
    let snap = engine.snapshot();
    let expected_total = u128::from(config.accounts) * u128::from(INITIAL_BALANCE);
    let mut accounts = 0u64;
    let mut total = 0u128;
    let mut negative = 0u64;
    for (key, value) in snap
        .scan_prefix(ACCOUNT_PREFIX)
        .map_err(fail("scanning accounts"))?
    {
        let balance = decode_u64(&value, &format_args!("account key {key:?}"))?;
        // Money is conserved, so no balance can exceed the total; one that
        // does is a wrapped-around negative balance.
        if u128::from(balance) > expected_total {
            negative += 1;
        }
        accounts += 1;
        total += u128::from(balance);
    }
    let mut counted = 0u64;
    for (key, value) in snap
        .scan_prefix(COUNTER_PREFIX)
        .map_err(fail("scanning counters"))?
    {
        counted += decode_u64(&value, &format_args!("counter key {key:?}"))?;
    }
    let mut problems = Vec::new();
    if accounts != config.accounts {
        problems.push(format!("{accounts} accounts, expected {}", config.accounts));
    }
    if total != expected_total {
        problems.push(format!(
            "balances sum to {total}, expected {expected_total}"
        ));
    }
    if negative > 0 {
        problems.push(format!("{negative} negative balances"));
    }
    if counted != outcome.committed {
        problems.push(format!(
            "{counted} transfers committed on disk, {} acknowledged",
            outcome.committed
        ));
    }
    if !problems.is_empty() {
        return Err(Failure(format!(
            "verification FAILED after reopen: {}",
            problems.join("; ")
        )));
    }
    println!(
        "verified after reopen ({:.2} s): {} accounts, balances sum to {} = {} x {}, none negative, {} transfers on disk = {} acknowledged",
        started.elapsed().as_secs_f64(),
        group(accounts),
        group(config.accounts * INITIAL_BALANCE),
        group(config.accounts),
        group(INITIAL_BALANCE),
        group(counted),
        group(outcome.committed)
    );
    Ok(())
}
