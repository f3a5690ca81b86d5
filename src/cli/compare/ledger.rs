//! mvledger's entry in the comparison: the bench's own run (`bench.rs`:
//! `Ledger::create_transfers` per batch, group commit, the log synced with
//! `fdatasync` as `--sync` says), then its reopen and verification
//! (`verify.rs`), and the digest of its final balances.
//!
//! Setup for `--sync always`: a call returns once its redo record is
//! durable; concurrent calls share one `fdatasync` (group commit).

use std::path::Path;

use mvledger::{Ledger, LedgerOptions, Options};

use super::{Outcome, Syncs, digest, tally};
use crate::BenchArgs;
use crate::EngineName;
use crate::cli::bench::{self, Failure, fail, fail_at};
use crate::cli::report::group;
use crate::cli::{verify, workload};

/// Runs the workload on mvledger in `dir`.
pub fn run(args: &BenchArgs, dir: &Path) -> Result<Outcome, Failure> {
    let options = LedgerOptions {
        engine: Options {
            sync: args.sync.mode(),
            ..Options::default()
        },
        ..LedgerOptions::default()
    };
    let setup = format!(
        "Ledger::create_transfers per batch; redo log, group commit, sync {}",
        args.sync.name()
    );
    if !args.json {
        say!("  setup: {setup}");
    }
    let ledger = Ledger::open(dir, options).map_err(fail_at("opening", dir))?;
    let created = bench::create_accounts(&ledger, args)?;
    if !args.json {
        say!(
            "  created {} accounts in {:.2} s",
            group(created.accounts),
            created.elapsed.as_secs_f64()
        );
    }
    ledger.engine().sync().map_err(fail("syncing the log"))?;
    let mut plans = workload::plans(args);
    let before = ledger.stats();
    let run = bench::run_transfers(&ledger, args, &mut plans)?;
    crate::cli::interrupt::check()?;
    let after = ledger.stats();
    ledger.engine().sync().map_err(fail("syncing the log"))?;
    // Log bytes after the sync, when every record is written, as the
    // plain bench counts them (`report.rs`).
    let log_bytes = ledger.stats().log_bytes.saturating_sub(before.log_bytes);
    let accounts = ledger
        .snapshot()
        .accounts()
        .map_err(fail("reading the accounts"))?;
    drop(ledger);
    let verification = verify::verify(dir, args, &plans)?;
    let (accepted, rejected) = tally(&plans);
    let events = accepted + rejected.values().sum::<u64>();
    let problems = if verification.ok() {
        Vec::new()
    } else {
        vec![format!(
            "verification after reopen: {}",
            verification.summary()
        )]
    };
    Ok(Outcome {
        engine: EngineName::Mvledger,
        setup,
        elapsed: run.elapsed,
        latencies_ns: run.latencies_ns,
        accepted,
        rejected,
        syncs: Syncs::Exact(after.syncs.saturating_sub(before.syncs)),
        digest: digest(&accounts),
        log_bytes_per_transfer: (events > 0).then(|| log_bytes as f64 / events as f64),
        problems,
    })
}
