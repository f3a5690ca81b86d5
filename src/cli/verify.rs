//! The check after the run: reopen the data directory (which replays the
//! log) and audit the ledger at one snapshot against what the run was told.
//!
//! 1. All the accounts are there, with the flags they were created with.
//! 2. Conservation: the sum of `debits_posted` over all accounts equals the
//!    sum of `credits_posted`, and likewise pending.
//! 3. No account breaks its limit flags.
//! 4. Every transfer acknowledged `Ok` (posts and voids included) is found
//!    by `lookup_transfers`, with the same amount, accounts and flags.
//! 5. Each account's four balances equal what the acknowledged transfers
//!    add up to: nothing acknowledged is missing, nothing refused applied.
//!
//! A broken check is a problem in the result (the run then exits 1 and
//! keeps the directory); an engine error is a `Failure`.

use std::time::{Duration, Instant};

use mvledger::{
    Account, AccountFlags, CreateTransferResult, Ledger, LedgerOptions, LedgerSnapshot, Transfer,
};
use serde_json::{Value, json};

use super::bench::{Failure, fail, fail_at};
use super::report::group;
use super::workload::{self, Plan, Settle};
use crate::BenchArgs;

/// Problems listed in full; past that, only counted.
const PROBLEMS_SHOWN: usize = 10;
/// Ids per `lookup_transfers` call.
const LOOKUP_BATCH: usize = 8_190;

/// What the verification found.
pub struct Verification {
    /// Opening the directory again: recovery replays the log.
    reopen: Duration,
    /// The checks, after the reopen.
    audit: Duration,
    accounts: u64,
    transfers_found: u64,
    debits_posted: u128,
    debits_pending: u128,
    problems: Vec<String>,
    problems_total: u64,
}

impl Verification {
    /// Whether every check held.
    pub fn ok(&self) -> bool {
        self.problems_total == 0
    }

    fn problem(&mut self, text: String) {
        self.problems_total += 1;
        if self.problems.len() < PROBLEMS_SHOWN {
            self.problems.push(text);
        }
    }

    /// The problems, one line.
    pub fn summary(&self) -> String {
        let mut text = self.problems.join("; ");
        let hidden = self.problems_total - self.problems.len() as u64;
        if hidden > 0 {
            text.push_str(&format!("; and {hidden} more"));
        }
        text
    }

    /// The result for a person when every check held (a failure is
    /// printed by the caller, as the error).
    pub fn print_text(&self) {
        if !self.ok() {
            return;
        }
        say!(
            "verified after reopen (reopen {:.2} s, audit {:.2} s)",
            self.reopen.as_secs_f64(),
            self.audit.as_secs_f64()
        );
        say!(
            "  accounts                {}, none breaks its limit",
            group(self.accounts)
        );
        say!(
            "  debits = credits        {} posted, {} pending",
            group_u128(self.debits_posted),
            group_u128(self.debits_pending)
        );
        say!(
            "  acknowledged transfers  {} found as sent; every balance is what they add up to",
            group(self.transfers_found)
        );
    }

    /// The result as a JSON object.
    pub fn to_json(&self) -> Value {
        json!({
            "ok": self.ok(),
            "reopen_seconds": self.reopen.as_secs_f64(),
            "audit_seconds": self.audit.as_secs_f64(),
            "accounts": self.accounts,
            "transfers_found": self.transfers_found,
            // As strings: u128 sums may not fit a JSON reader's numbers.
            "debits_posted": self.debits_posted.to_string(),
            "debits_pending": self.debits_pending.to_string(),
            "problems": self.problems,
            "problems_total": self.problems_total,
        })
    }
}

fn group_u128(n: u128) -> String {
    u64::try_from(n).map_or_else(|_| n.to_string(), group)
}

/// Reopens `dir` and runs the checks against `plans`, as acknowledged.
pub fn verify(
    dir: &std::path::Path,
    args: &BenchArgs,
    plans: &[Plan],
) -> Result<Verification, Failure> {
    let started = Instant::now();
    let spinner = super::bench::spinner(args.json, "reopening the data directory");
    let ledger = Ledger::open(dir, LedgerOptions::default()).map_err(fail_at("reopening", dir))?;
    let reopen = started.elapsed();
    spinner.set_message("auditing the ledger");
    super::interrupt::check()?;
    let started = Instant::now();
    let snap = ledger.snapshot();
    let accounts = snap.accounts().map_err(fail("reading the accounts"))?;
    let mut v = Verification {
        reopen,
        audit: Duration::ZERO,
        accounts: accounts.len() as u64,
        transfers_found: 0,
        debits_posted: 0,
        debits_pending: 0,
        problems: Vec::new(),
        problems_total: 0,
    };
    check_accounts(&mut v, args, &accounts);
    check_balances(&mut v, plans, &accounts);
    check_transfers(&mut v, &snap, args.transfers, plans)?;
    v.audit = started.elapsed();
    spinner.finish_and_clear();
    Ok(v)
}

/// Checks 1 to 3.
fn check_accounts(v: &mut Verification, args: &BenchArgs, accounts: &[Account]) {
    if v.accounts != args.accounts {
        v.problem(format!(
            "{} accounts, {} created",
            v.accounts, args.accounts
        ));
    }
    let mut sums = [0u128; 4];
    for (i, a) in accounts.iter().enumerate() {
        if a.id != i as u128 + 1 {
            v.problem(format!("account {} where {} was expected", a.id, i + 1));
        }
        let flags = if workload::is_limited(a.id) {
            AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS
        } else {
            AccountFlags::empty()
        };
        if a.flags != flags {
            v.problem(format!("account {} has flags {:?}", a.id, a.flags));
        }
        if a.debits_exceed_credits(0) || a.credits_exceed_debits(0) {
            v.problem(format!(
                "account {} breaks its limit: {}",
                a.id,
                balances(a)
            ));
        }
        for (sum, x) in sums.iter_mut().zip(four(a)) {
            *sum = sum.saturating_add(x);
        }
    }
    let [
        debits_pending,
        debits_posted,
        credits_pending,
        credits_posted,
    ] = sums;
    if debits_posted != credits_posted {
        v.problem(format!(
            "debits posted {debits_posted} != credits posted {credits_posted}"
        ));
    }
    if debits_pending != credits_pending {
        v.problem(format!(
            "debits pending {debits_pending} != credits pending {credits_pending}"
        ));
    }
    v.debits_posted = debits_posted;
    v.debits_pending = debits_pending;
}

/// An account's balances in the order of `AccountBalance`.
fn four(a: &Account) -> [u128; 4] {
    [
        a.debits_pending,
        a.debits_posted,
        a.credits_pending,
        a.credits_posted,
    ]
}

fn balances(a: &Account) -> String {
    format!(
        "debits {} pending + {} posted, credits {} pending + {} posted",
        a.debits_pending, a.debits_posted, a.credits_pending, a.credits_posted
    )
}

/// Check 5: replays the acknowledged results into expected balances.
fn check_balances(v: &mut Verification, plans: &[Plan], accounts: &[Account]) {
    const DP: usize = 0;
    const DPO: usize = 1;
    const CP: usize = 2;
    const CPO: usize = 3;
    let mut expected = vec![[0u128; 4]; accounts.len()];
    let slot = |id: u128| id.checked_sub(1).and_then(|i| usize::try_from(i).ok());
    for plan in plans {
        if plan.result != Some(CreateTransferResult::Ok) {
            continue;
        }
        let t = &plan.transfer;
        let (Some(dr), Some(cr)) = (slot(t.debit_account_id), slot(t.credit_account_id)) else {
            continue;
        };
        let settled = plan.settle_result == Some(CreateTransferResult::Ok);
        let (dr_field, cr_field) = match (plan.settle, settled) {
            (Settle::None, _) | (Settle::Post, true) => (DPO, CPO),
            (Settle::Void, true) => continue,
            (_, false) => (DP, CP),
        };
        for (index, field) in [(dr, dr_field), (cr, cr_field)] {
            if let Some(x) = expected.get_mut(index).and_then(|e| e.get_mut(field)) {
                *x += t.amount;
            }
        }
    }
    for (a, want) in accounts.iter().zip(&expected) {
        if four(a) != *want {
            v.problem(format!(
                "account {} holds {} but the acknowledged transfers add up to \
                 debits {} pending + {} posted, credits {} pending + {} posted",
                a.id,
                balances(a),
                want[DP],
                want[DPO],
                want[CP],
                want[CPO]
            ));
        }
    }
}

/// Check 4: looks up every acknowledged transfer, a chunk at a time.
fn check_transfers(
    v: &mut Verification,
    snap: &LedgerSnapshot,
    transfers: u64,
    plans: &[Plan],
) -> Result<(), Failure> {
    let ok = Some(CreateTransferResult::Ok);
    let mut chunk: Vec<Transfer> = Vec::with_capacity(LOOKUP_BATCH + 1);
    for plan in plans {
        if plan.result == ok {
            chunk.push(plan.transfer);
            if plan.settle_result == ok {
                chunk.push(plan.settle_transfer(transfers));
            }
        }
        if chunk.len() >= LOOKUP_BATCH {
            check_chunk(v, snap, &chunk)?;
            chunk.clear();
        }
    }
    check_chunk(v, snap, &chunk)
}

fn check_chunk(
    v: &mut Verification,
    snap: &LedgerSnapshot,
    sent: &[Transfer],
) -> Result<(), Failure> {
    let ids: Vec<u128> = sent.iter().map(|t| t.id).collect();
    let found = snap
        .lookup_transfers(&ids)
        .map_err(fail("looking up transfers"))?;
    // `found` holds the ones that exist, in input order.
    let mut found = found.iter().peekable();
    for sent in sent {
        let Some(stored) = found.next_if(|t| t.id == sent.id) else {
            v.problem(format!("acknowledged transfer {} not found", sent.id));
            continue;
        };
        v.transfers_found += 1;
        let same = (
            stored.debit_account_id,
            stored.credit_account_id,
            stored.amount,
        ) == (sent.debit_account_id, sent.credit_account_id, sent.amount)
            && stored.flags == sent.flags
            && stored.pending_id == sent.pending_id;
        if !same {
            v.problem(format!(
                "transfer {} stored as {} -> {} of {} (flags {:?}), sent as {} -> {} of {} (flags {:?})",
                sent.id,
                stored.debit_account_id,
                stored.credit_account_id,
                stored.amount,
                stored.flags,
                sent.debit_account_id,
                sent.credit_account_id,
                sent.amount,
                sent.flags
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use mvledger::{Options, SyncMode};

    use super::*;
    use crate::cli::bench;
    use crate::{Cli, Command};

    fn args(flags: &[&str]) -> BenchArgs {
        let argv = ["mvledger", "bench", "--json"].iter().chain(flags);
        match Cli::try_parse_from(argv).expect("valid flags").command {
            Command::Bench(args) => args,
            other => panic!("not bench: {other:?}"),
        }
    }

    /// Runs the workload of `flags` in a new directory (sync never: the
    /// checks do not depend on it) and returns the directory and the plans.
    fn run(flags: &[&str]) -> (BenchArgs, tempfile::TempDir, Vec<Plan>) {
        let args = args(flags);
        let dir = tempfile::tempdir().expect("tempdir");
        let options = LedgerOptions {
            engine: Options {
                sync: SyncMode::Never,
                ..Options::default()
            },
            ..LedgerOptions::default()
        };
        let ledger = Ledger::open(dir.path(), options).expect("open");
        bench::create_accounts(&ledger, &args).expect("accounts");
        let mut plans = workload::plans(&args);
        bench::run_transfers(&ledger, &args, &mut plans).expect("transfers");
        ledger.engine().sync().expect("sync");
        drop(ledger);
        (args, dir, plans)
    }

    const SMALL: [&str; 10] = [
        "--accounts",
        "50",
        "--transfers",
        "2000",
        "--batch",
        "7",
        "--threads",
        "3",
        "--pending",
        "0.3",
    ];

    fn first(plans: &[Plan], want: Option<CreateTransferResult>, settle: Settle) -> usize {
        plans
            .iter()
            .position(|p| p.result == want && p.settle == settle)
            .expect("such a plan")
    }

    #[test]
    fn an_honest_run_verifies_with_every_kind_of_result() {
        let (args, dir, plans) = run(&SMALL);
        let ok = Some(CreateTransferResult::Ok);
        assert!(plans.iter().all(|p| p.result.is_some()));
        // Every kind happened: refusals, posts and voids accepted.
        first(
            &plans,
            Some(CreateTransferResult::ExceedsCredits),
            Settle::None,
        );
        assert!(
            plans
                .iter()
                .any(|p| p.settle == Settle::Post && p.settle_result == ok)
        );
        assert!(
            plans
                .iter()
                .any(|p| p.settle == Settle::Void && p.settle_result == ok)
        );
        let v = verify(dir.path(), &args, &plans).expect("verify");
        assert!(v.ok(), "{}", v.summary());
        assert_eq!(v.accounts, 50);
        assert!(v.transfers_found > 1000);
    }

    #[test]
    fn a_refused_transfer_claimed_accepted_fails_verification() {
        let (args, dir, mut plans) = run(&SMALL);
        let i = first(
            &plans,
            Some(CreateTransferResult::ExceedsCredits),
            Settle::None,
        );
        plans[i].result = Some(CreateTransferResult::Ok);
        let v = verify(dir.path(), &args, &plans).expect("verify");
        assert!(!v.ok());
        let id = plans[i].transfer.id;
        assert!(v.summary().contains(&format!("transfer {id} not found")));
        assert!(v.summary().contains("acknowledged transfers add up to"));
    }

    #[test]
    fn an_accepted_transfer_left_out_fails_verification() {
        let (args, dir, mut plans) = run(&SMALL);
        let ok = Some(CreateTransferResult::Ok);
        let i = first(&plans, ok, Settle::Void);
        // As if the void had never been acknowledged: the pending amount
        // would still be reserved.
        plans[i].settle_result = None;
        let v = verify(dir.path(), &args, &plans).expect("verify");
        assert!(!v.ok());
        assert!(v.summary().contains("acknowledged transfers add up to"));
    }

    #[test]
    fn a_different_amount_fails_verification() {
        let (args, dir, mut plans) = run(&SMALL);
        let i = first(&plans, Some(CreateTransferResult::Ok), Settle::None);
        plans[i].transfer.amount += 1;
        let v = verify(dir.path(), &args, &plans).expect("verify");
        assert!(!v.ok());
        let id = plans[i].transfer.id;
        assert!(v.summary().contains(&format!("transfer {id} stored as")));
    }
}
