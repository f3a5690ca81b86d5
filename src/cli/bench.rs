//! `mvledger bench`: creates the accounts, runs the planned transfers from
//! `--threads` threads, each submitting its share in calls of at most
//! `--batch` transfers through `Ledger::create_transfers` and timing every
//! call, then syncs, reports, drops the ledger, reopens the directory and
//! verifies it (`verify.rs`).
//!
//! A thread's call holds first the posts and voids of the pending
//! transfers that its previous call got accepted, then as many new
//! transfers as fit. Each thread writes the results into its own slice of
//! the plans, which the report and the verification read afterwards.
//!
//! Failure paths: an engine error in any thread stops the others and the
//! run ends with exit code 1; nothing is retried. Ctrl-C stops every
//! thread before its next call and ends the run with exit code 130
//! (`interrupt.rs`), removing a temporary data directory.

use std::fmt;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressFinish, ProgressState, ProgressStyle};
use mvledger::{
    CreateAccountResult, CreateTransferResult, Error, Ledger, LedgerOptions, Options, Transfer,
};

use super::datadir::DataDir;
use super::interrupt;
use super::report::{self, Report};
use super::verify;
use super::workload::{self, Plan, Settle};
use crate::BenchArgs;

/// Accounts per `create_accounts` call.
const ACCOUNT_BATCH: usize = 8_190;

/// Why a command failed: printed as one line on stderr; `exit` says the
/// exit code.
#[derive(Debug)]
pub struct Failure {
    /// What went wrong, for a person.
    pub message: String,
    /// The exit code it gives.
    pub exit: Exit,
    /// Whether the command already printed its `--json` object, which
    /// says what failed: then nothing more goes to stdout.
    pub json_printed: bool,
}

/// The exit code of a `Failure`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 1: an engine or disk error, or a failed check.
    Failed,
    /// 2: a bad argument, as clap's own usage errors; here a path that
    /// names the wrong kind of thing (a file, a directory that is not
    /// empty or holds no ledger), refused before anything is opened.
    BadArgument,
    /// 130: stopped by Ctrl-C (128 + SIGINT, as a shell reports it).
    Interrupted,
}

impl Exit {
    /// The process exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Failed => 1,
            Exit::BadArgument => 2,
            Exit::Interrupted => 130,
        }
    }
}

impl Failure {
    /// An engine or disk error, or a failed check: exit code 1.
    pub fn new(message: String) -> Failure {
        Failure {
            message,
            exit: Exit::Failed,
            json_printed: false,
        }
    }

    /// A bad argument: exit code 2.
    pub fn bad_argument(message: String) -> Failure {
        Failure {
            message,
            exit: Exit::BadArgument,
            json_printed: false,
        }
    }

    /// Stopped by Ctrl-C (`interrupt.rs`): exit code 130.
    pub fn interrupted() -> Failure {
        Failure {
            message: "interrupted by Ctrl-C; the run stopped".into(),
            exit: Exit::Interrupted,
            json_printed: false,
        }
    }

    /// This failure, after a `--json` object that reports it (when `json`).
    pub fn after_json(self, json: bool) -> Failure {
        Failure {
            json_printed: json,
            ..self
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Wraps an engine error with what was being done.
pub fn fail(context: impl fmt::Display) -> impl FnOnce(Error) -> Failure {
    move |e| Failure::new(format!("{context}: {e}"))
}

/// `fail` for `doing` something to `path`, which is named once: an I/O
/// error of the engine names its file already.
pub fn fail_at<'a>(
    doing: &'a str,
    path: &'a std::path::Path,
) -> impl FnOnce(Error) -> Failure + 'a {
    move |e| {
        let text = e.to_string();
        let shown = path.display().to_string();
        if names_path(&text, &shown) {
            Failure::new(format!("{doing}: {text}"))
        } else {
            Failure::new(format!("{doing} {shown}: {text}"))
        }
    }
}

/// Whether `text` names the path `shown` (or a file under it): as a
/// whole word, not a part of one (`.` or `a` is in most messages), and
/// followed by what follows a path in a message (`/`, `:`, the end).
fn names_path(text: &str, shown: &str) -> bool {
    !shown.is_empty()
        && text.match_indices(shown).any(|(at, _)| {
            let before = text[..at].chars().next_back();
            let after = text[at + shown.len()..].chars().next();
            matches!(before, None | Some(' ' | '`' | '\'' | '"' | '('))
                && matches!(after, None | Some('/' | ':' | '`' | '\'' | '"' | ')' | ','))
        })
}

/// What the transfer phase measured.
pub struct Run {
    /// From the first call to the last reply.
    pub elapsed: Duration,
    /// The latency of every `create_transfers` call, sorted.
    pub latencies_ns: Vec<u64>,
}

/// Runs the bench; `Err` is an engine error or a failed verification.
pub fn run(args: &BenchArgs) -> Result<(), Failure> {
    let mut dir = DataDir::new(args.dir.as_deref(), args.keep)?;
    if !args.json {
        report::print_header(args, dir.path());
    }
    let options = LedgerOptions {
        engine: Options {
            sync: args.sync.mode(),
            ..Options::default()
        },
        ..LedgerOptions::default()
    };
    let ledger = Ledger::open(dir.path(), options).map_err(fail_at("opening", dir.path()))?;
    // A poisoned engine answers every call with `Poisoned` alone: the
    // failure says what poisoned it.
    let why = |failure: Failure| match ledger.engine().poisoned_by() {
        Some(cause) if !failure.message.contains(&cause) => Failure {
            message: format!("{}; the engine was poisoned by: {cause}", failure.message),
            ..failure
        },
        _ => failure,
    };
    let phases = || {
        let created = create_accounts(&ledger, args)?;
        if !args.json {
            created.print_text();
        }
        // Accounts on disk under every sync mode, so that the transfer
        // phase's log bytes and syncs count only its own.
        ledger.engine().sync().map_err(fail("syncing the log"))?;
        let mut plans = workload::plans(args);
        let before = ledger.stats();
        let run = run_transfers(&ledger, args, &mut plans)?;
        interrupt::check()?;
        let after_run = ledger.stats();
        // Everything durable under every sync mode before the reopen; and
        // see the error if that fails (a drop would swallow it).
        ledger.engine().sync().map_err(fail("syncing the log"))?;
        Ok((created, plans, before, run, after_run, ledger.stats()))
    };
    let (created, plans, before, run, after_run, after_sync) = phases().map_err(why)?;
    drop(ledger);
    let report = Report::new(&plans, created, run, &before, &after_run, &after_sync);
    if !args.json {
        report.print_text();
    }
    let verification = verify::verify(dir.path(), args, &plans)?;
    if !verification.ok() {
        dir.keep();
    }
    if args.json {
        report.print_json(args, &dir, &verification);
    } else {
        verification.print_text();
    }
    if verification.ok() {
        Ok(())
    } else {
        Err(Failure::new(format!(
            "verification FAILED after reopen: {}",
            verification.summary()
        ))
        .after_json(args.json))
    }
}

/// What the account phase did.
#[derive(Debug, Clone, Copy)]
pub struct Created {
    /// Accounts created.
    pub accounts: u64,
    /// `create_accounts` calls.
    pub calls: u64,
    /// From the first call to the last reply.
    pub elapsed: Duration,
}

impl Created {
    /// One line for a person.
    pub fn print_text(&self) {
        say!(
            "created {} in {}, {:.2} s",
            report::count(self.accounts, "account"),
            report::count(self.calls, "call"),
            self.elapsed.as_secs_f64()
        );
    }
}

/// Creates the accounts, `ACCOUNT_BATCH` a call; any refusal is an error.
pub fn create_accounts(ledger: &Ledger, args: &BenchArgs) -> Result<Created, Failure> {
    let started = Instant::now();
    let accounts = workload::accounts(args.accounts);
    let progress = progress_bar(args.json, accounts.len() as u64, "accounts");
    let mut calls = 0u64;
    for chunk in accounts.chunks(ACCOUNT_BATCH) {
        interrupt::check()?;
        let results = ledger
            .create_accounts(chunk)
            .map_err(fail("creating accounts"))?;
        calls += 1;
        progress.inc(chunk.len() as u64);
        // The directory was empty, so anything but Ok is a bug.
        let refused = chunk
            .iter()
            .zip(&results)
            .find(|(_, r)| **r != CreateAccountResult::Ok);
        if let Some((account, result)) = refused {
            return Err(Failure::new(format!(
                "creating account {}: {result}",
                account.id
            )));
        }
    }
    progress.finish_and_clear();
    Ok(Created {
        accounts: accounts.len() as u64,
        calls,
        elapsed: started.elapsed(),
    })
}

/// What every transfer thread shares.
struct Shared<'a> {
    ledger: &'a Ledger,
    batch: usize,
    transfers: u64,
    progress: ProgressBar,
    /// Set when a thread fails: the others stop. (Ctrl-C stops them
    /// all through `interrupt::requested`.)
    stop: AtomicBool,
}

/// Runs the plans from `--threads` threads and records every result in
/// them.
pub fn run_transfers(
    ledger: &Ledger,
    args: &BenchArgs,
    plans: &mut [Plan],
) -> Result<Run, Failure> {
    let settles = plans.iter().filter(|p| p.settle != Settle::None).count();
    let shared = Shared {
        ledger,
        batch: args.batch,
        transfers: args.transfers,
        progress: progress_bar(args.json, (plans.len() + settles) as u64, "transfers"),
        stop: AtomicBool::new(false),
    };
    let share = plans.len().div_ceil(args.threads).max(1);
    let started = Instant::now();
    let replies: Vec<Result<Vec<u64>, Failure>> = std::thread::scope(|scope| {
        let shared = &shared;
        let threads: Vec<_> = plans
            .chunks_mut(share)
            .map(|part| scope.spawn(move || submit(shared, part)))
            .collect();
        threads
            .into_iter()
            .map(|t| {
                t.join()
                    .unwrap_or_else(|_| Err(Failure::new("a transfer thread panicked".into())))
            })
            .collect()
    });
    let elapsed = started.elapsed();
    shared.progress.finish_and_clear();
    let mut latencies_ns = Vec::new();
    for reply in replies {
        latencies_ns.extend(reply?);
    }
    latencies_ns.sort_unstable();
    Ok(Run {
        elapsed,
        latencies_ns,
    })
}

/// A progress bar on stderr with the live rate, or a hidden one when the
/// output is JSON or stderr is no terminal.
pub fn progress_bar(json: bool, events: u64, what: &str) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    // Cleared when dropped, also by an early return on an error.
    let bar = ProgressBar::new(events).with_finish(ProgressFinish::AndClear);
    let template = format!(
        "{{elapsed_precise}} [{{wide_bar}}] {{human_pos}}/{{human_len}} {what}, {{rate}}/s, eta {{eta}}"
    );
    // The template is a constant; should it not parse, the default style
    // still shows the progress.
    if let Ok(style) = ProgressStyle::with_template(&template) {
        // indicatif's own `{per_sec}` shows four decimals.
        let rate = |state: &ProgressState, w: &mut dyn fmt::Write| {
            let _ = w.write_str(&report::group(state.per_sec() as u64));
        };
        bar.set_style(style.with_key("rate", rate).progress_chars("=> "));
    }
    bar
}

/// A spinner on stderr with `message`, ticking on its own, for a phase
/// with no count to show (a hidden one when the output is JSON or stderr
/// is no terminal).
pub fn spinner(json: bool, message: &'static str) -> ProgressBar {
    if json || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let spinner = ProgressBar::new_spinner()
        .with_message(message)
        .with_finish(ProgressFinish::AndClear);
    spinner.enable_steady_tick(std::time::Duration::from_millis(100));
    spinner
}

/// Where an event of a call came from.
#[derive(Clone, Copy)]
enum Slot {
    Transfer(usize),
    Settle(usize),
}

/// One thread: submits `plans` in calls of at most `batch` events, records
/// every result in the plans, and returns the latency of each call.
fn submit(shared: &Shared<'_>, plans: &mut [Plan]) -> Result<Vec<u64>, Failure> {
    let batch = shared.batch;
    let mut events: Vec<Transfer> = Vec::with_capacity(batch);
    let mut slots: Vec<Slot> = Vec::with_capacity(batch);
    // Pending transfers accepted by the previous call: at most `batch`.
    let mut to_settle: Vec<usize> = Vec::new();
    let mut next = 0;
    let mut latencies_ns = Vec::with_capacity(plans.len() / batch + 1);
    while (next < plans.len() || !to_settle.is_empty())
        && !shared.stop.load(Ordering::Relaxed)
        && !interrupt::requested()
    {
        events.clear();
        slots.clear();
        for i in to_settle.drain(..) {
            events.push(plans[i].settle_transfer(shared.transfers));
            slots.push(Slot::Settle(i));
        }
        while events.len() < batch && next < plans.len() {
            events.push(plans[next].transfer);
            slots.push(Slot::Transfer(next));
            next += 1;
        }
        let started = Instant::now();
        let results = shared.ledger.create_transfers(&events).map_err(|e| {
            shared.stop.store(true, Ordering::Relaxed);
            Failure::new(format!(
                "create_transfers of {} transfers (first id {}): {e}",
                events.len(),
                events.first().map_or(0, |t| t.id)
            ))
        })?;
        latencies_ns.push(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
        if results.len() != events.len() {
            shared.stop.store(true, Ordering::Relaxed);
            return Err(Failure::new(format!(
                "create_transfers answered {} results for {} transfers",
                results.len(),
                events.len()
            )));
        }
        for (&slot, &result) in slots.iter().zip(&results) {
            match slot {
                Slot::Transfer(i) => {
                    let plan = &mut plans[i];
                    plan.result = Some(result);
                    if plan.settle != Settle::None {
                        if result == CreateTransferResult::Ok {
                            to_settle.push(i);
                        } else {
                            // Its post or void will not be sent.
                            shared.progress.dec_length(1);
                        }
                    }
                }
                Slot::Settle(i) => plans[i].settle_result = Some(result),
            }
        }
        shared.progress.inc(events.len() as u64);
    }
    Ok(latencies_ns)
}

#[cfg(test)]
mod tests {
    use super::names_path;

    #[test]
    fn a_path_is_named_only_as_a_whole_word() {
        assert!(names_path("opening ./LOCK: no such file", "."));
        assert!(names_path("opening /tmp/d/LOCK: denied", "/tmp/d"));
        assert!(names_path("corruption in a/0001.wal at offset 3", "a"));
        assert!(names_path("cutting /tmp/d", "/tmp/d"));
        // `.` and `a` are in most messages, not as the path.
        assert!(!names_path("invalid argument: a value too large.", "."));
        assert!(!names_path("invalid argument: a value too large", "a"));
        assert!(!names_path("opening /tmp/db2/LOCK", "/tmp/db"));
        assert!(!names_path("anything", ""));
    }
}
