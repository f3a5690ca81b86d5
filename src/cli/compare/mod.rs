//! `mvledger bench --engine mvledger,sqlite,redb,fjall` (feature
//! `compare`): the very same workload (`workload.rs`: the same seed, the
//! same accounts, the same transfers in the same batches from the same
//! threads) on mvledger and on three peer engines, then one table with
//! transfers/s and the ratio of each to mvledger.
//!
//! What every peer does per transfer is the least a ledger must do, all in
//! the one transaction of its batch (`--batch` transfers a commit):
//!
//! 1. refuse a transfer whose id is already stored (`exists`);
//! 2. refuse a transfer between an account and itself, or whose debit or
//!    credit account is missing;
//! 3. refuse a debit beyond the balance of an account flagged
//!    `DEBITS_MUST_NOT_EXCEED_CREDITS` (`exceeds_credits`);
//! 4. store the transfer under its id and add its amount to both accounts'
//!    balances.
//!
//! The commit then makes the batch durable as `--sync` says (each peer's
//! file says how). Transfers of a batch are checked in order, each seeing
//! the balances its predecessors left, as in the ledger. What the peers
//! leave out, and mvledger does: two-phase transfers (so a peer needs
//! `--pending 0`, which `BenchArgs::engines` enforces), the other result
//! codes (a duplicate id is `exists`, whatever differs), linked chains,
//! history, and recording a refused transfer's id as spent. So the peers do
//! less work than mvledger, not more.
//!
//! Threads: `--threads` threads submit batches to every engine. SQLite and
//! redb admit one writer at a time, and fjall's transactional keyspace
//! (single-writer mode) too: their batches queue on the engine's writer
//! lock (for SQLite, one connection behind a mutex; see `sqlite.rs`), one
//! commit (and one sync) each. mvledger's batches share syncs (group
//! commit).
//!
//! Checks: after the run and a final sync, each peer's accounts and stored
//! transfers are read back and audited as `verify.rs` audits mvledger's
//! (debits equal credits, no limit broken, every balance what the
//! acknowledged transfers add up to, as many transfers stored as
//! acknowledged). Each engine's final balances are summed up in a digest;
//! with one thread every engine must accept and refuse the same transfers,
//! so the digests must agree. A failed check or disagreeing digests exit 1
//! (data directories kept). Ctrl-C stops the engine running before its
//! next batch and skips the rest (`interrupt.rs`: exit code 130).

mod fjall;
mod ledger;
mod redb;
mod sqlite;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mvledger::{Account, AccountFlags, CreateTransferResult, Transfer};
use serde_json::{Value, json};

use super::bench::{self, Failure};
use super::datadir::DataDir;
use super::interrupt;
use super::report::{self, fmt_ns, group, percentile};
use super::workload::{self, Plan};
use crate::{BenchArgs, EngineName};

/// Accounts per transaction when a peer creates them (as `bench.rs` does
/// for mvledger).
const ACCOUNT_BATCH: usize = 8_190;

/// A peer engine with its setup for the run's `--sync`. `Sync`: the
/// threads share it.
pub trait Peer: Sync {
    /// Its idiomatic best setup for this durability, one line.
    fn setup(&self) -> String;
    /// Creates `accounts` (zero balances) in one transaction.
    fn create_accounts(&self, accounts: &[Account]) -> Result<(), Failure>;
    /// Checks and applies `transfers` in order in one transaction (module
    /// comment, steps 1 to 4), pushing one result each onto `results`,
    /// and commits with the durability of `--sync`.
    fn create_transfers(
        &self,
        transfers: &[Transfer],
        results: &mut Vec<CreateTransferResult>,
    ) -> Result<(), Failure>;
    /// Makes everything durable (the end of a `--sync never` run); not
    /// timed, as mvledger's final sync is not.
    fn sync(&self) -> Result<(), Failure>;
    /// Every account in id order, with its flags and posted balances.
    fn accounts(&self) -> Result<Vec<Account>, Failure>;
    /// How many transfers are stored.
    fn transfers_stored(&self) -> Result<u64, Failure>;
    /// Commits that synced so far (each costs at least one fsync or
    /// fdatasync; the engine may add more of its own), or `None` when the
    /// engine syncs on its own schedule and does not say how often.
    fn syncs(&self) -> Option<u64>;
}

/// An account as the peers store it: its flags and its two posted
/// balances (pending ones stay 0: no two-phase transfers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Balances {
    /// `AccountFlags` bits.
    pub flags: u16,
    /// Posted debits.
    pub debits_posted: u128,
    /// Posted credits.
    pub credits_posted: u128,
}

impl Balances {
    /// The fixed-width record of the key-value peers: flags (u16) and the
    /// two balances (u128), little-endian.
    pub const BYTES: usize = 34;

    /// Encodes as `BYTES` bytes.
    pub fn encode(&self) -> [u8; Balances::BYTES] {
        let mut out = [0u8; Balances::BYTES];
        out[..2].copy_from_slice(&self.flags.to_le_bytes());
        out[2..18].copy_from_slice(&self.debits_posted.to_le_bytes());
        out[18..].copy_from_slice(&self.credits_posted.to_le_bytes());
        out
    }

    /// Decodes what `encode` made; `None` if the length is wrong.
    pub fn decode(bytes: &[u8]) -> Option<Balances> {
        let flags = bytes.get(..2)?.try_into().ok()?;
        let debits = bytes.get(2..18)?.try_into().ok()?;
        let credits = bytes.get(18..Balances::BYTES)?.try_into().ok()?;
        (bytes.len() == Balances::BYTES).then(|| Balances {
            flags: u16::from_le_bytes(flags),
            debits_posted: u128::from_le_bytes(debits),
            credits_posted: u128::from_le_bytes(credits),
        })
    }

    /// The account `id` with these balances.
    pub fn account(&self, id: u128) -> Account {
        Account {
            id,
            debits_posted: self.debits_posted,
            credits_posted: self.credits_posted,
            flags: AccountFlags::from_bits_retain(self.flags),
            ledger: workload::LEDGER,
            code: workload::CODE,
            ..Account::default()
        }
    }
}

/// Steps 2 and 3 of the module comment, once step 1 found the id new: the
/// result for `transfer` given its two accounts as stored (`None`:
/// missing).
pub fn check(
    transfer: &Transfer,
    debit: Option<&Balances>,
    credit: Option<&Balances>,
) -> CreateTransferResult {
    if transfer.debit_account_id == transfer.credit_account_id {
        return CreateTransferResult::AccountsMustBeDifferent;
    }
    let Some(debit) = debit else {
        return CreateTransferResult::DebitAccountNotFound;
    };
    if credit.is_none() {
        return CreateTransferResult::CreditAccountNotFound;
    }
    let limited = AccountFlags::from_bits_retain(debit.flags)
        .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS);
    let after = debit.debits_posted.checked_add(transfer.amount);
    if limited && after.is_none_or(|after| after > debit.credits_posted) {
        return CreateTransferResult::ExceedsCredits;
    }
    CreateTransferResult::Ok
}

/// Step 4's balances: `debit` and `credit` after `transfer` (accepted by
/// `check`, so the debit cannot overflow past its credits; sums beyond
/// u128 saturate, which 50 million transfers of at most 1,000 never reach).
pub fn apply(transfer: &Transfer, debit: &mut Balances, credit: &mut Balances) {
    debit.debits_posted = debit.debits_posted.saturating_add(transfer.amount);
    credit.credits_posted = credit.credits_posted.saturating_add(transfer.amount);
}

/// An accepted transfer as a peer stores it: stamped, with both accounts'
/// new balances.
pub type Accepted = (Transfer, Balances, Balances);

/// Steps 2 to 4 for one transfer whose id is new, the same on every peer:
/// reads both accounts through `read`, checks, and applies; returns the
/// result and, if accepted, what the peer must write (stamped `timestamp`).
pub fn settle(
    transfer: &Transfer,
    timestamp: u64,
    mut read: impl FnMut(u128) -> Result<Option<Balances>, Failure>,
) -> Result<(CreateTransferResult, Option<Accepted>), Failure> {
    let debit = read(transfer.debit_account_id)?;
    let credit = read(transfer.credit_account_id)?;
    let result = check(transfer, debit.as_ref(), credit.as_ref());
    let (CreateTransferResult::Ok, Some(mut debit), Some(mut credit)) = (result, debit, credit)
    else {
        return Ok((result, None));
    };
    apply(transfer, &mut debit, &mut credit);
    let stamped = Transfer {
        timestamp,
        ..*transfer
    };
    Ok((result, Some((stamped, debit, credit))))
}

/// The timestamp a peer stores with the first transfer of a batch (the
/// others get the next nanoseconds): the wall clock, as the ledger's.
pub fn batch_timestamp() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// Wraps any engine's error with what was being done.
pub fn peer_fail<E: std::fmt::Display>(
    context: impl std::fmt::Display,
) -> impl FnOnce(E) -> Failure {
    move |e| Failure::new(format!("{context}: {e}"))
}

/// The syncs of a run: mvledger counts its own; for a peer, the commits
/// that synced (at least one sync each), when it knows.
#[derive(Debug, Clone, Copy)]
enum Syncs {
    Exact(u64),
    AtLeast(u64),
    Unknown,
}

impl Syncs {
    fn text(self) -> String {
        match self {
            Syncs::Exact(n) => group(n),
            Syncs::AtLeast(0) => "0".to_string(),
            Syncs::AtLeast(n) => format!(">= {}", group(n)),
            Syncs::Unknown => "-".to_string(),
        }
    }

    fn json(self) -> Value {
        match self {
            Syncs::Exact(n) => json!({ "count": n, "exact": true }),
            Syncs::AtLeast(n) => json!({ "count": n, "exact": false }),
            Syncs::Unknown => json!({ "count": null, "exact": false }),
        }
    }
}

/// What one engine's run measured and found.
pub struct Outcome {
    engine: EngineName,
    setup: String,
    elapsed: Duration,
    /// Latency of every batch, sorted.
    latencies_ns: Vec<u64>,
    accepted: u64,
    rejected: BTreeMap<CreateTransferResult, u64>,
    syncs: Syncs,
    /// `digest` of the final accounts.
    digest: u64,
    /// Log bytes written per transfer: mvledger's alone (the peers' files
    /// hold more than their logs, so no like figure is measured).
    log_bytes_per_transfer: Option<f64>,
    /// Broken checks after the run (empty: all held).
    problems: Vec<String>,
}

impl Outcome {
    fn events(&self) -> u64 {
        self.accepted + self.rejected.values().sum::<u64>()
    }

    fn per_s(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.events() as f64 / secs
        } else {
            0.0
        }
    }

    fn rejected_text(&self) -> String {
        let total: u64 = self.rejected.values().sum();
        if total == 0 {
            return "0".to_string();
        }
        let codes: Vec<String> = self
            .rejected
            .iter()
            .map(|(code, n)| format!("{} {}", code.name(), group(*n)))
            .collect();
        format!("{} ({})", group(total), codes.join(", "))
    }

    fn print_text(&self) {
        let l = &self.latencies_ns;
        say!(
            "  {} in {:.2} s: {}/s; latency per batch p50 {}, p99 {}, p99.9 {}, max {}",
            report::count(self.events(), "transfer"),
            self.elapsed.as_secs_f64(),
            group(self.per_s() as u64),
            fmt_ns(percentile(l, 0.5)),
            fmt_ns(percentile(l, 0.99)),
            fmt_ns(percentile(l, 0.999)),
            fmt_ns(l.last().copied().unwrap_or(0)),
        );
        if let Some(bytes) = self.log_bytes_per_transfer {
            say!("  log bytes per transfer {bytes:.1}");
        }
        say!(
            "  accepted {}, rejected {}; syncs {}",
            group(self.accepted),
            self.rejected_text(),
            self.syncs.text()
        );
        if self.problems.is_empty() {
            say!("  checked: debits = credits, limits hold, balances = acknowledged transfers");
        } else {
            say!("  CHECK FAILED: {}", self.problems.join("; "));
        }
    }

    fn to_json(&self, mvledger_per_s: Option<f64>) -> Value {
        let l = &self.latencies_ns;
        let by_code: serde_json::Map<String, Value> = self
            .rejected
            .iter()
            .map(|(code, n)| (code.name().to_string(), json!(n)))
            .collect();
        json!({
            "engine": self.engine.name(),
            "setup": self.setup,
            "transfers": self.events(),
            "seconds": self.elapsed.as_secs_f64(),
            "transfers_per_s": self.per_s(),
            "ratio_to_mvledger": ratio(self.per_s(), mvledger_per_s),
            "batches": l.len(),
            "latency_per_batch_ns": {
                "p50": percentile(l, 0.5),
                "p99": percentile(l, 0.99),
                "p99_9": percentile(l, 0.999),
                "max": l.last().copied().unwrap_or(0),
            },
            "log_bytes_per_transfer": self.log_bytes_per_transfer,
            "accepted": self.accepted,
            "rejected": { "total": self.rejected.values().sum::<u64>(), "by_code": by_code },
            "syncs": self.syncs.json(),
            "balances_digest": format!("{:016x}", self.digest),
            "checked": self.problems.is_empty(),
            "problems": self.problems,
        })
    }
}

/// `per_s` over mvledger's rate, when mvledger ran.
fn ratio(per_s: f64, mvledger_per_s: Option<f64>) -> Option<f64> {
    mvledger_per_s.filter(|&m| m > 0.0).map(|m| per_s / m)
}

/// FNV-1a (64 bits) over every account's id and four balances, in id
/// order, little-endian: equal balances give equal digests, and unequal
/// ones differ but for a 2^-64 chance.
pub fn digest(accounts: &[Account]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for a in accounts {
        let fields = [
            a.id,
            a.debits_pending,
            a.debits_posted,
            a.credits_pending,
            a.credits_posted,
        ];
        for byte in fields.iter().flat_map(|f| f.to_le_bytes()) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash
}

/// Runs `engines` one after the other on the workload of `args`, each in
/// its own subdirectory of the data directory, and prints them side by
/// side.
pub fn run(args: &BenchArgs, engines: &[EngineName]) -> Result<(), Failure> {
    let mut dir = DataDir::new(args.dir.as_deref(), args.keep)?;
    if !args.json {
        report::print_header(args, dir.path());
        let names: Vec<&str> = engines.iter().map(|e| e.name()).collect();
        say!("engines: {}", names.join(", "));
    }
    let mut outcomes = Vec::with_capacity(engines.len());
    for &engine in engines {
        interrupt::check()?;
        let path = dir.path().join(engine.name());
        std::fs::create_dir_all(&path)
            .map_err(|e| Failure::new(format!("creating {}: {e}", path.display())))?;
        if !args.json {
            say!("{}:", engine.name());
        }
        let outcome = run_one(args, engine, &path)?;
        if !args.json {
            outcome.print_text();
        }
        outcomes.push(outcome);
    }
    let agree = outcomes.windows(2).all(|w| w[0].digest == w[1].digest);
    // With one thread every engine sees the batches in the same order, so
    // it must accept and refuse the same transfers.
    let must_agree = args.threads == 1;
    let checked = outcomes.iter().all(|o| o.problems.is_empty());
    let ok = checked && (agree || !must_agree);
    if !ok {
        dir.keep();
    }
    if args.json {
        print_json(args, &dir, &outcomes, agree, ok);
    } else {
        print_table(&outcomes, agree, must_agree);
    }
    if ok {
        Ok(())
    } else if !checked {
        Err(Failure::new("a check after the run FAILED (see above)".into()).after_json(args.json))
    } else {
        Err(
            Failure::new("the engines' final balances DIFFER on a single-threaded run".into())
                .after_json(args.json),
        )
    }
}

/// One engine's run in `path`.
fn run_one(args: &BenchArgs, engine: EngineName, path: &Path) -> Result<Outcome, Failure> {
    let peer: Box<dyn Peer> = match engine {
        EngineName::Mvledger | EngineName::All => return ledger::run(args, path),
        EngineName::Sqlite => Box::new(self::sqlite::Sqlite::open(path, args.sync)?),
        EngineName::Redb => Box::new(self::redb::Redb::open(path, args.sync)?),
        EngineName::Fjall => Box::new(self::fjall::Fjall::open(path, args.sync)?),
    };
    run_peer(args, engine, peer.as_ref())
}

/// Creates the accounts, runs the transfers, syncs, reads back, audits.
fn run_peer(args: &BenchArgs, engine: EngineName, peer: &dyn Peer) -> Result<Outcome, Failure> {
    let started = Instant::now();
    let accounts = workload::accounts(args.accounts);
    for chunk in accounts.chunks(ACCOUNT_BATCH) {
        interrupt::check()?;
        peer.create_accounts(chunk)?;
    }
    if !args.json {
        say!(
            "  setup: {}\n  created {} accounts in {:.2} s",
            peer.setup(),
            group(args.accounts),
            started.elapsed().as_secs_f64()
        );
    }
    let mut plans = workload::plans(args);
    let syncs_before = peer.syncs();
    let (elapsed, latencies_ns) = run_transfers(peer, args, &mut plans)?;
    interrupt::check()?;
    let syncs = match (syncs_before, peer.syncs()) {
        (Some(before), Some(after)) => Syncs::AtLeast(after.saturating_sub(before)),
        _ => Syncs::Unknown,
    };
    peer.sync()?;
    let stored = peer.accounts()?;
    let transfers_stored = peer.transfers_stored()?;
    let (accepted, rejected) = tally(&plans);
    let mut problems = audit(args, &plans, &stored);
    if transfers_stored != accepted {
        problems.push(format!(
            "{transfers_stored} transfers stored, {accepted} acknowledged"
        ));
    }
    Ok(Outcome {
        engine,
        setup: peer.setup(),
        elapsed,
        latencies_ns,
        accepted,
        rejected,
        syncs,
        digest: digest(&stored),
        log_bytes_per_transfer: None,
        problems,
    })
}

/// The transfers from `--threads` threads, each taking an equal share of
/// the plans in batches of `--batch`, as `bench.rs` splits them for
/// mvledger. Returns the time from the first batch to the last reply and
/// every batch's latency, sorted.
fn run_transfers(
    peer: &dyn Peer,
    args: &BenchArgs,
    plans: &mut [Plan],
) -> Result<(Duration, Vec<u64>), Failure> {
    let progress = bench::progress_bar(args.json, plans.len() as u64, "transfers");
    let stop = AtomicBool::new(false);
    let share = plans.len().div_ceil(args.threads).max(1);
    let started = Instant::now();
    let replies: Vec<Result<Vec<u64>, Failure>> = std::thread::scope(|scope| {
        let threads: Vec<_> = plans
            .chunks_mut(share)
            .map(|part| {
                let (progress, stop) = (&progress, &stop);
                scope.spawn(move || {
                    let reply = submit(peer, part, args.batch, progress);
                    if reply.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    reply
                })
            })
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
    progress.finish_and_clear();
    let mut latencies_ns = Vec::new();
    for reply in replies {
        latencies_ns.extend(reply?);
    }
    latencies_ns.sort_unstable();
    Ok((elapsed, latencies_ns))
}

/// One thread: its plans in batches; records every result in them.
fn submit(
    peer: &dyn Peer,
    plans: &mut [Plan],
    batch: usize,
    progress: &indicatif::ProgressBar,
) -> Result<Vec<u64>, Failure> {
    let mut transfers = Vec::with_capacity(batch);
    let mut results = Vec::with_capacity(batch);
    let mut latencies_ns = Vec::with_capacity(plans.len() / batch + 1);
    for chunk in plans.chunks_mut(batch) {
        if interrupt::requested() {
            break;
        }
        transfers.clear();
        transfers.extend(chunk.iter().map(|p| p.transfer));
        results.clear();
        let started = Instant::now();
        peer.create_transfers(&transfers, &mut results)
            .map_err(|e| {
                Failure::new(format!(
                    "a batch of {} (first id {}): {e}",
                    transfers.len(),
                    transfers.first().map_or(0, |t| t.id)
                ))
            })?;
        latencies_ns.push(u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX));
        if results.len() != chunk.len() {
            return Err(Failure::new(format!(
                "{} results for {} transfers",
                results.len(),
                chunk.len()
            )));
        }
        for (plan, &result) in chunk.iter_mut().zip(&results) {
            plan.result = Some(result);
        }
        progress.inc(chunk.len() as u64);
    }
    Ok(latencies_ns)
}

/// Accepted transfers and rejected ones by code (single-phase plans only:
/// posts and voids are counted by mvledger's own runner).
fn tally(plans: &[Plan]) -> (u64, BTreeMap<CreateTransferResult, u64>) {
    let mut accepted = 0;
    let mut rejected = BTreeMap::new();
    for result in plans.iter().filter_map(|p| p.result) {
        if result == CreateTransferResult::Ok {
            accepted += 1;
        } else {
            *rejected.entry(result).or_insert(0) += 1;
        }
    }
    (accepted, rejected)
}

/// A peer's accounts after the run against the plans as acknowledged: all
/// there, debits equal credits, no limit broken, every balance what the
/// accepted transfers add up to.
fn audit(args: &BenchArgs, plans: &[Plan], accounts: &[Account]) -> Vec<String> {
    let mut problems = Vec::new();
    if accounts.len() as u64 != args.accounts {
        problems.push(format!(
            "{} accounts, {} created",
            accounts.len(),
            args.accounts
        ));
        return problems;
    }
    // (debits, credits) by account index, from the acknowledged transfers.
    let mut expected = vec![(0u128, 0u128); accounts.len()];
    for plan in plans {
        if plan.result != Some(CreateTransferResult::Ok) {
            continue;
        }
        let t = &plan.transfer;
        let index = |id: u128| usize::try_from(id - 1).ok().filter(|&i| i < expected.len());
        match (index(t.debit_account_id), index(t.credit_account_id)) {
            (Some(d), Some(c)) => {
                expected[d].0 += t.amount;
                expected[c].1 += t.amount;
            }
            _ => problems.push(format!(
                "transfer {} acknowledged between unknown accounts",
                t.id
            )),
        }
    }
    let (mut debits, mut credits) = (0u128, 0u128);
    for (i, (a, want)) in accounts.iter().zip(&expected).enumerate() {
        debits += a.debits_posted;
        credits += a.credits_posted;
        if a.id != i as u128 + 1 {
            problems.push(format!("account {} where {} was expected", a.id, i + 1));
        }
        let limited = workload::is_limited(a.id);
        if a.flags
            .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
            != limited
        {
            problems.push(format!("account {} has flags {:?}", a.id, a.flags));
        }
        if limited && a.debits_posted > a.credits_posted {
            problems.push(format!(
                "account {} breaks its limit: debits {} > credits {}",
                a.id, a.debits_posted, a.credits_posted
            ));
        }
        if (a.debits_posted, a.credits_posted) != *want {
            problems.push(format!(
                "account {}: debits {}, credits {}; the acknowledged transfers add up to {}, {}",
                a.id, a.debits_posted, a.credits_posted, want.0, want.1
            ));
        }
    }
    if debits != credits {
        problems.push(format!(
            "debits posted {debits} != credits posted {credits}"
        ));
    }
    problems.truncate(10);
    problems
}

/// The comparison table, and whether the balances agree.
fn print_table(outcomes: &[Outcome], agree: bool, must_agree: bool) {
    let mvledger_per_s = mvledger_rate(outcomes);
    say!("");
    say!(
        "{:<9} {:>13} {:>18} {:>12}  {}",
        "engine",
        "transfers/s",
        "ratio to mvledger",
        "syncs",
        "balances digest"
    );
    for o in outcomes {
        let ratio = ratio(o.per_s(), mvledger_per_s).map_or("-".to_string(), |r| format!("{r:.3}"));
        say!(
            "{:<9} {:>13} {:>18} {:>12}  {:016x}",
            o.engine.name(),
            group(o.per_s() as u64),
            ratio,
            o.syncs.text(),
            o.digest
        );
    }
    let best_peer = outcomes
        .iter()
        .filter(|o| o.engine != EngineName::Mvledger)
        .max_by(|a, b| a.per_s().total_cmp(&b.per_s()));
    if let (Some(m), Some(best)) = (mvledger_per_s, best_peer)
        && best.per_s() > 0.0
    {
        say!(
            "mvledger / best peer ({}): {:.2}x",
            best.engine.name(),
            m / best.per_s()
        );
    }
    if outcomes.len() > 1 {
        if agree {
            say!("final balances: the same on every engine");
        } else if must_agree {
            say!("final balances: DIFFER between engines");
        } else {
            say!(
                "final balances differ: with several threads the engines see the batches \
                 in different orders, so they may accept different transfers"
            );
        }
    }
}

fn mvledger_rate(outcomes: &[Outcome]) -> Option<f64> {
    outcomes
        .iter()
        .find(|o| o.engine == EngineName::Mvledger)
        .map(Outcome::per_s)
}

/// The run as one JSON object on stdout.
fn print_json(args: &BenchArgs, dir: &DataDir, outcomes: &[Outcome], agree: bool, ok: bool) {
    let mvledger_per_s = mvledger_rate(outcomes);
    let engines: Vec<Value> = outcomes.iter().map(|o| o.to_json(mvledger_per_s)).collect();
    let dir_path: PathBuf = dir.path().to_path_buf();
    let object = json!({
        "config": {
            "accounts": args.accounts,
            "transfers": args.transfers,
            "batch": args.batch,
            "threads": args.threads,
            "dist": args.dist.name(),
            "theta": args.zipf_theta(),
            "sync": args.sync.name(),
            "pending": args.pending,
            "seed": args.seed,
            "dir": dir_path.display().to_string(),
            "dir_kept": dir.kept(),
        },
        "ok": ok,
        "engines": engines,
        "balances_agree": agree,
    });
    say!("{object}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transfer(amount: u128) -> Transfer {
        Transfer {
            id: 1,
            debit_account_id: 1,
            credit_account_id: 2,
            amount,
            ..Transfer::default()
        }
    }

    #[test]
    fn a_limited_debit_beyond_its_credits_is_refused_and_an_exact_one_accepted() {
        let limited = Balances {
            flags: AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS.bits(),
            debits_posted: 5,
            credits_posted: 10,
        };
        let free = Balances::default();
        assert_eq!(
            check(&transfer(6), Some(&limited), Some(&free)),
            CreateTransferResult::ExceedsCredits
        );
        assert_eq!(
            check(&transfer(5), Some(&limited), Some(&free)),
            CreateTransferResult::Ok
        );
        assert_eq!(
            check(&transfer(u128::MAX), Some(&limited), Some(&free)),
            CreateTransferResult::ExceedsCredits
        );
        assert_eq!(
            check(&transfer(1000), Some(&free), Some(&limited)),
            CreateTransferResult::Ok
        );
        let to_itself = Transfer {
            credit_account_id: 1,
            ..transfer(1)
        };
        assert_eq!(
            check(&to_itself, Some(&free), Some(&free)),
            CreateTransferResult::AccountsMustBeDifferent
        );
        assert_eq!(
            check(&transfer(1), None, Some(&free)),
            CreateTransferResult::DebitAccountNotFound
        );
        assert_eq!(
            check(&transfer(1), Some(&free), None),
            CreateTransferResult::CreditAccountNotFound
        );
    }

    /// The plans of a small workload answered by an in-memory peer made of
    /// `check` and `apply`, and the accounts it ends with.
    fn model_run() -> (BenchArgs, Vec<Plan>, Vec<Account>) {
        use clap::Parser;
        let argv = [
            "mvledger",
            "bench",
            "--accounts",
            "20",
            "--transfers",
            "600",
        ];
        let args = match crate::Cli::try_parse_from(argv).expect("flags").command {
            crate::Command::Bench(args) => args,
            other => panic!("not bench: {other:?}"),
        };
        let mut balances: Vec<Balances> = workload::accounts(args.accounts)
            .iter()
            .map(|a| Balances {
                flags: a.flags.bits(),
                ..Balances::default()
            })
            .collect();
        let mut plans = workload::plans(&args);
        for plan in &mut plans {
            let t = plan.transfer;
            let (d, c) = (
                t.debit_account_id as usize - 1,
                t.credit_account_id as usize - 1,
            );
            let result = check(&t, Some(&balances[d]), Some(&balances[c]));
            if result == CreateTransferResult::Ok {
                let (mut debit, mut credit) = (balances[d], balances[c]);
                apply(&t, &mut debit, &mut credit);
                (balances[d], balances[c]) = (debit, credit);
            }
            plan.result = Some(result);
        }
        let accounts = balances
            .iter()
            .zip(1..)
            .map(|(b, id)| b.account(id))
            .collect();
        (args, plans, accounts)
    }

    #[test]
    fn the_audit_passes_an_honest_peer_and_catches_a_wrong_acknowledgement() {
        let (args, mut plans, accounts) = model_run();
        assert_eq!(audit(&args, &plans, &accounts), Vec::<String>::new());
        let refused = |p: &Plan| p.result == Some(CreateTransferResult::ExceedsCredits);
        assert!(
            plans.iter().any(refused),
            "the workload refuses some debits"
        );

        // Refused, yet acknowledged as accepted.
        let i = plans.iter().position(refused).expect("a refusal");
        plans[i].result = Some(CreateTransferResult::Ok);
        let problems = audit(&args, &plans, &accounts);
        assert!(
            problems
                .iter()
                .any(|p| p.contains("acknowledged transfers add up to")),
            "{problems:?}"
        );
        plans[i].result = Some(CreateTransferResult::ExceedsCredits);

        // Accepted, yet acknowledged as refused.
        let i = plans
            .iter()
            .position(|p| p.result == Some(CreateTransferResult::Ok))
            .expect("an acceptance");
        plans[i].result = Some(CreateTransferResult::Exists);
        assert!(!audit(&args, &plans, &accounts).is_empty());
        plans[i].result = Some(CreateTransferResult::Ok);

        // A limit broken and debits unequal to credits in the store.
        let mut broken = accounts.clone();
        let limited = broken
            .iter()
            .position(|a| workload::is_limited(a.id))
            .expect("a limited account");
        broken[limited].debits_posted = broken[limited].credits_posted + 1;
        let problems = audit(&args, &plans, &broken);
        assert!(
            problems.iter().any(|p| p.contains("breaks its limit")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("!= credits posted")),
            "{problems:?}"
        );
    }

    #[test]
    fn balances_round_trip_and_a_wrong_length_is_refused() {
        let b = Balances {
            flags: 2,
            debits_posted: u128::MAX - 3,
            credits_posted: 77,
        };
        assert_eq!(Balances::decode(&b.encode()), Some(b));
        assert_eq!(Balances::decode(&b.encode()[..33]), None);
        assert_eq!(Balances::decode(&[0u8; 35]), None);
    }

    #[test]
    fn the_digest_sees_every_balance() {
        let a = Balances::default().account(1);
        let mut b = a;
        b.credits_pending = 1;
        assert_ne!(digest(&[a]), digest(&[b]));
        assert_ne!(digest(&[a, b]), digest(&[b, a]));
        assert_eq!(digest(&[a, b]), digest(&[a, b]));
    }
}
