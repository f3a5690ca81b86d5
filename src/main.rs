//! The `mvledger` command: `bench` (the ledger transfer workload of issue
//! 4 on an embedded data directory, followed by a reopen of that directory
//! and a check of the ledger it holds), `inspect` (what a data directory
//! holds and a full checksum check of it, without opening it) and the
//! account commands `account create`, `transfer`, `lookup` and `history`.
//!
//! Layout: this file holds the arguments (clap) and the exit codes; the
//! work is in `src/cli/`: `workload.rs` (accounts, transfers, the random
//! number generator and the Zipf sampler, all from the seed), `bench.rs`
//! (the run: threads, batches, progress bar), `report.rs` (the figures, as
//! text or JSON), `verify.rs` (the checks after the reopen) and
//! `datadir.rs` (the data directory's life), `interrupt.rs` (Ctrl-C);
//! `inspect.rs` and
//! `account.rs` (the account commands); `compare/` (feature `compare`:
//! `bench --engine` on SQLite, redb and fjall, side by side).
//!
//! Exit codes: 0 on success; 1 on an engine or disk error, a failed
//! verification, damage found by `inspect`, a refused account or transfer
//! or an id not found; 130 when Ctrl-C stopped a `bench`; 2 on bad arguments (clap's own exit code for usage
//! errors), among them a data directory path that names the wrong kind of
//! thing: a file, a directory that is not empty for `bench`, one with no
//! ledger in it for the other commands (`account create` alone starts one
//! in a missing or empty directory). Once a directory is taken as a data
//! directory, whatever goes wrong opening or reading it is 1.

#![warn(clippy::unwrap_used, clippy::expect_used)]

/// `println!` that does not panic when stdout is closed (`mvledger bench |
/// head`): the run goes on, and its exit code still tells how it went.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod cli {
    pub mod account;
    pub mod bench;
    #[cfg(feature = "compare")]
    pub mod compare;
    pub mod datadir;
    pub mod inspect;
    pub mod interrupt;
    pub mod report;
    pub mod verify;
    pub mod workload;
}

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::builder::RangedU64ValueParser;
use clap::{Args, Parser, Subcommand, ValueEnum};
use mvledger::SyncMode;
use mvledger::ledger::MAX_BATCH_EVENTS;

/// An embeddable storage engine for money.
#[derive(Debug, Parser)]
#[command(name = "mvledger", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ledger transfers from several threads, then a reopen of the data
    /// directory and a check that debits equal credits, that every limit
    /// holds and that every acknowledged transfer is there.
    #[command(after_help = "Exit codes: 0 ok; 1 engine or disk error, or a failed \
                            verification (the data directory is then kept); 2 bad arguments, \
                            among them a --dir that is a file or a directory that is not empty; \
                            130 stopped by Ctrl-C (a temporary data directory is removed).")]
    Bench(BenchArgs),
    /// Lists a data directory's log segments, checkpoints and LOCK file,
    /// then checks every record and checkpoint block. Reads the files
    /// directly: takes no lock and changes nothing.
    #[command(
        after_help = "Exit codes: 0 everything checks out (a torn tail at the end of the \
                            log is a warning: the next open cuts it off); 1 damage found (each \
                            printed with its file and byte offset) or the directory unreadable; \
                            2 bad arguments, among them a DIR that is missing, a file, or a \
                            directory with no log segment or checkpoint in it."
    )]
    Inspect(InspectArgs),
    /// Account commands.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Creates one transfer: a plain one, a pending one (--pending), or
    /// the post or void of a pending one (--post/--void).
    #[command(
        after_help = "Exit codes: 0 accepted; 1 refused (the result code is printed in \
                            words) or an engine error; 2 bad arguments, among them a --dir \
                            with no ledger in it."
    )]
    Transfer(cli::account::TransferArgs),
    /// Prints accounts (balances) and transfers by id.
    #[command(
        after_help = "Exit codes: 0 all found; 1 an id not found or an engine error; \
                            2 bad arguments, among them a --dir with no ledger in it."
    )]
    Lookup(cli::account::LookupArgs),
    /// Lists an account's transfers, oldest first, and for accounts with
    /// the history flag its balance after each.
    #[command(
        after_help = "Exit codes: 0 listed; 1 the account not found or an engine error; \
                            2 bad arguments, among them a --dir with no ledger in it."
    )]
    History(cli::account::HistoryArgs),
}

/// `mvledger account ...`.
#[derive(Debug, Subcommand)]
enum AccountCommand {
    /// Creates one account.
    #[command(
        after_help = "Exit codes: 0 created; 1 refused (the result code is printed in \
                            words) or an engine error; 2 bad arguments, among them a --dir \
                            that is a file or holds other files and no ledger."
    )]
    Create(cli::account::CreateAccountArgs),
}

/// The flags of `mvledger inspect`.
#[derive(Debug, Clone, Args)]
struct InspectArgs {
    /// The data directory.
    #[arg(value_name = "DIR")]
    dir: PathBuf,
    /// Print the same as one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

/// A bound on `--accounts`: they are all created and audited in memory.
const MAX_ACCOUNTS: u64 = 10_000_000;
/// A bound on `--transfers`: all are generated up front (about 150 bytes
/// each in memory).
const MAX_TRANSFERS: u64 = 50_000_000;
/// A bound on `--threads`.
const MAX_THREADS: u64 = 1024;
/// `--theta` when not given.
const DEFAULT_THETA: f64 = 0.99;
/// A bound on `--theta`: far past the point (about 5) where the hottest
/// two accounts take nearly everything, and a number that prints short.
const MAX_THETA: f64 = 100.0;
/// The sync period of `--sync interval`.
pub const SYNC_INTERVAL: Duration = Duration::from_millis(10);

/// The flags of `mvledger bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Accounts to create (ledger 1, code 1); every 10th may not debit
    /// more than its credits.
    #[arg(long, default_value_t = 100_000,
          value_parser = RangedU64ValueParser::<u64>::new().range(2..=MAX_ACCOUNTS))]
    pub accounts: u64,
    /// Transfers to run (two-phase ones add a post or void each).
    #[arg(long, default_value_t = 1_000_000,
          value_parser = RangedU64ValueParser::<u64>::new().range(0..=MAX_TRANSFERS))]
    pub transfers: u64,
    /// Transfers per `create_transfers` call (1: a call per transfer).
    #[arg(long, default_value_t = 8190,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=MAX_BATCH_EVENTS as u64))]
    pub batch: usize,
    /// Threads submitting batches; each gets an equal share of the
    /// transfers.
    #[arg(long, default_value_t = 1,
          value_parser = RangedU64ValueParser::<usize>::new().range(1..=MAX_THREADS))]
    pub threads: usize,
    /// How the debit and credit accounts are picked.
    #[arg(long, value_enum, default_value_t = Dist::Uniform)]
    pub dist: Dist,
    /// The Zipf skew, with `--dist zipf` only: from 0 (uniform) to 100;
    /// 0.99 (YCSB's, the default) is hot, anything above about 5 puts
    /// nearly all transfers on accounts 1 and 2.
    #[arg(long, value_parser = parse_theta)]
    pub theta: Option<f64>,
    /// When the log is synced.
    #[arg(long, value_enum, default_value_t = SyncFlag::Always)]
    pub sync: SyncFlag,
    /// The share of transfers made pending (two-phase, with a timeout),
    /// each posted or voided in the same thread's next call.
    #[arg(long, default_value_t = 0.0, value_parser = parse_share)]
    pub pending: f64,
    /// Seed of the accounts picked, the amounts and the pending share.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Data directory (new or empty, created with its missing parents;
    /// kept). Default: a new temporary directory, removed afterwards
    /// unless --keep.
    #[arg(long, value_name = "PATH")]
    pub dir: Option<PathBuf>,
    /// Keep the temporary data directory.
    #[arg(long)]
    pub keep: bool,
    /// Print the figures as one JSON object on stdout (no progress bar).
    #[arg(long)]
    pub json: bool,
    /// The engines to run the same workload on, comma-separated, or `all`;
    /// with more than one, a table compares them. Engines other than
    /// mvledger need a build with `--features compare` and `--pending 0`.
    #[arg(long, value_enum, value_delimiter = ',', value_name = "ENGINES")]
    pub engine: Vec<EngineName>,
}

/// `--engine`: the engines a bench runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineName {
    /// mvledger, SQLite, redb and fjall, in that order.
    All,
    /// This crate's ledger (the default).
    Mvledger,
    /// SQLite (rusqlite, bundled): WAL mode, one transaction per batch.
    Sqlite,
    /// redb: one write transaction per batch.
    Redb,
    /// fjall: its transactional keyspace, one write transaction per batch.
    Fjall,
}

impl EngineName {
    /// The name the flag takes.
    pub fn name(self) -> &'static str {
        match self {
            EngineName::All => "all",
            EngineName::Mvledger => "mvledger",
            EngineName::Sqlite => "sqlite",
            EngineName::Redb => "redb",
            EngineName::Fjall => "fjall",
        }
    }
}

impl BenchArgs {
    /// The Zipf skew of the run: `None` unless `--dist zipf`.
    pub fn zipf_theta(&self) -> Option<f64> {
        (self.dist == Dist::Zipf).then(|| self.theta.unwrap_or(DEFAULT_THETA))
    }

    /// `Err` when `--theta` was given without `--dist zipf`: it would be
    /// ignored without a word.
    fn check_theta(&self) -> Result<(), String> {
        match self.theta {
            Some(theta) if self.dist != Dist::Zipf => Err(format!(
                "--theta {theta} needs --dist zipf: with --dist {} it would have no effect",
                self.dist.name()
            )),
            _ => Ok(()),
        }
    }

    /// The engines of `--engine`, `all` spelled out, each once, in the
    /// order given; mvledger alone when the flag is absent. `Err` says why
    /// the flags cannot run: a peer engine in a build without the
    /// `compare` feature, or a peer with `--pending` above 0 (the peers do
    /// single-phase transfers only).
    pub fn engines(&self) -> Result<Vec<EngineName>, String> {
        let mut engines = Vec::new();
        for &engine in &self.engine {
            let expanded: &[EngineName] = match engine {
                EngineName::All => &[
                    EngineName::Mvledger,
                    EngineName::Sqlite,
                    EngineName::Redb,
                    EngineName::Fjall,
                ],
                one => &[one],
            };
            for &e in expanded {
                if !engines.contains(&e) {
                    engines.push(e);
                }
            }
        }
        if engines.is_empty() {
            engines.push(EngineName::Mvledger);
        }
        // A peer as the user named it (`all`, say).
        let peer = self.engine.iter().find(|&&e| e != EngineName::Mvledger);
        if let Some(peer) = peer {
            if !cfg!(feature = "compare") {
                return Err(format!(
                    "--engine {}: this mvledger was built without the `compare` feature; \
                     build it with `cargo build --release --features compare` \
                     (or run `cargo run --release --features compare -- bench --engine ...`)",
                    peer.name()
                ));
            }
            if self.pending > 0.0 {
                return Err(format!(
                    "--engine {} needs --pending 0: the peer engines run single-phase \
                     transfers only (two-phase transfers are mvledger's alone)",
                    peer.name()
                ));
            }
        }
        Ok(engines)
    }
}

/// How transfers pick their accounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dist {
    /// Every account equally likely.
    Uniform,
    /// A few hot accounts (the lowest ids), skew `--theta`.
    Zipf,
}

/// `--sync`, as the flag spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SyncFlag {
    /// Durable when a call returns (concurrent calls share a sync).
    Always,
    /// Synced every 10 ms: a crash may lose the last 10 ms.
    Interval,
    /// Synced at the end only.
    Never,
}

impl SyncFlag {
    /// The engine's sync mode.
    pub fn mode(self) -> SyncMode {
        match self {
            SyncFlag::Always => SyncMode::Always,
            SyncFlag::Interval => SyncMode::Interval(SYNC_INTERVAL),
            SyncFlag::Never => SyncMode::Never,
        }
    }

    /// The name the flag takes.
    pub fn name(self) -> &'static str {
        match self {
            SyncFlag::Always => "always",
            SyncFlag::Interval => "interval",
            SyncFlag::Never => "never",
        }
    }
}

impl Dist {
    /// The name the flag takes.
    pub fn name(self) -> &'static str {
        match self {
            Dist::Uniform => "uniform",
            Dist::Zipf => "zipf",
        }
    }
}

fn parse_f64(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .map_err(|_| format!("'{text}' is not a number"))
}

/// A Zipf skew: from 0 (uniform) to `MAX_THETA`.
fn parse_theta(text: &str) -> Result<f64, String> {
    let theta = parse_f64(text)?;
    if (0.0..=MAX_THETA).contains(&theta) {
        Ok(theta)
    } else {
        Err(format!("{text} is not a skew from 0 to {MAX_THETA}"))
    }
}

/// A share from 0 to 1.
fn parse_share(text: &str) -> Result<f64, String> {
    let share = parse_f64(text)?;
    if (0.0..=1.0).contains(&share) {
        Ok(share)
    } else {
        Err(format!("{share} is not a share between 0 and 1"))
    }
}

/// `mvledger bench`: mvledger alone, or (feature `compare`) the engines of
/// `--engine` side by side. Flags that cannot run exit with code 2, as
/// clap's own usage errors do.
fn bench(args: &BenchArgs) -> Result<(), cli::bench::Failure> {
    // A bad argument (exit 2), in JSON too under `--json` (`main`).
    let engines = args
        .check_theta()
        .and_then(|()| args.engines())
        .map_err(cli::bench::Failure::bad_argument)?;
    // Before the data directory exists: Ctrl-C then stops the run and
    // removes a temporary one.
    cli::interrupt::install();
    #[cfg(feature = "compare")]
    if engines != [EngineName::Mvledger] {
        return cli::compare::run(args, &engines);
    }
    // Without `compare`, `engines()` lets only mvledger through.
    debug_assert_eq!(engines, [EngineName::Mvledger]);
    cli::bench::run(args)
}

fn main() -> ExitCode {
    // Bad arguments: clap prints the message and exits with code 2.
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Bench(args) => bench(&args).map(|()| true).inspect_err(|failure| {
            // `--json` prints one object, also when the run fails (the
            // message goes to stderr too).
            if args.json && !failure.json_printed {
                println!(
                    "{}",
                    serde_json::json!({ "ok": false, "error": failure.message })
                );
            }
        }),
        Command::Inspect(args) => cli::inspect::run(&args.dir, args.json),
        Command::Account(AccountCommand::Create(args)) => cli::account::create_account(&args),
        Command::Transfer(args) => cli::account::transfer(&args),
        Command::Lookup(args) => cli::account::lookup(&args),
        Command::History(args) => cli::account::history(&args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("mvledger: {e}");
            ExitCode::from(e.exit.code())
        }
    }
}
