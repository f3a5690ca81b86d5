//! The account commands, for a person at a shell: `account create`,
//! `transfer`, `lookup` and `history`. Each opens the ledger in `--dir`
//! (taking its LOCK, so not while another process has it open), does one
//! call and prints the outcome in words.
//!
//! Failure paths: a refused account or transfer prints its result code in
//! words ("transfer 7 refused: exceeds credits") and an unknown id in
//! `lookup` or `history` prints "not found"; both give exit code 1, as do
//! engine and disk errors, and a data directory that `open` refuses (held
//! by another process, damaged). A `--dir` that cannot be a data directory
//! (a file, a directory of other files, or for all but `account create`
//! none at all) is a bad argument, exit code 2, refused before any open.
//! Ids and amounts are u128 in decimal.

use std::path::{Path, PathBuf};

use clap::{ArgGroup, Args, ValueEnum};
use mvledger::{
    Account, AccountFilter, AccountFilterFlags, AccountFlags, CreateAccountResult,
    CreateTransferResult, Ledger, LedgerOptions, PendingState, Transfer, TransferFlags,
};

use super::bench::{Failure, fail, fail_at};
use super::report::{count, utc};

/// The flags of `mvledger account create`.
#[derive(Debug, Clone, Args)]
pub struct CreateAccountArgs {
    /// Data directory (created if missing, with its missing parents).
    #[arg(long, value_name = "PATH")]
    pub dir: PathBuf,
    /// The account's id (not 0).
    #[arg(long)]
    pub id: u128,
    /// The ledger it belongs to (not 0); transfers stay within one.
    #[arg(long)]
    pub ledger: u32,
    /// A code for the kind of account (not 0).
    #[arg(long)]
    pub code: u16,
    /// Account flags, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',')]
    pub flags: Vec<AccountFlag>,
    /// Free data for the application.
    #[arg(long, default_value_t = 0)]
    pub user_data_128: u128,
    /// Free data for the application.
    #[arg(long, default_value_t = 0)]
    pub user_data_64: u64,
    /// Free data for the application.
    #[arg(long, default_value_t = 0)]
    pub user_data_32: u32,
}

/// An account flag, as `--flags` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AccountFlag {
    /// Its debits may not exceed its credits (a customer's account).
    DebitsMustNotExceedCredits,
    /// Its credits may not exceed its debits.
    CreditsMustNotExceedDebits,
    /// Keep its balance after every transfer (for `history`).
    History,
    /// Closed: refuses transfers.
    Closed,
}

impl AccountFlag {
    fn bits(self) -> AccountFlags {
        match self {
            AccountFlag::DebitsMustNotExceedCredits => AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
            AccountFlag::CreditsMustNotExceedDebits => AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
            AccountFlag::History => AccountFlags::HISTORY,
            AccountFlag::Closed => AccountFlags::CLOSED,
        }
    }
}

/// The flags of `mvledger transfer`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("phase").args(["pending", "post", "void"])))]
pub struct TransferArgs {
    /// Data directory (must exist).
    #[arg(long, value_name = "PATH")]
    pub dir: PathBuf,
    /// The transfer's id (not 0).
    #[arg(long)]
    pub id: u128,
    /// The account debited (with --post/--void: 0 or the pending one's).
    #[arg(long, value_name = "ACCOUNT", required_unless_present_any = ["post", "void"])]
    pub from: Option<u128>,
    /// The account credited (with --post/--void: 0 or the pending one's).
    #[arg(long, value_name = "ACCOUNT", required_unless_present_any = ["post", "void"])]
    pub to: Option<u128>,
    /// The amount (with --post/--void, 0 means the full pending amount).
    #[arg(long, required_unless_present_any = ["post", "void"])]
    pub amount: Option<u128>,
    /// The ledger (with --post/--void: 0 means the pending one's).
    #[arg(long, required_unless_present_any = ["post", "void"])]
    pub ledger: Option<u32>,
    /// The code (with --post/--void: 0 means the pending one's).
    #[arg(long, required_unless_present_any = ["post", "void"])]
    pub code: Option<u16>,
    /// Reserve the amount (two-phase), to be posted or voided later.
    #[arg(long)]
    pub pending: bool,
    /// With --pending: seconds after which the reservation expires (0: never).
    #[arg(
        long,
        value_name = "SECONDS",
        requires = "pending",
        default_value_t = 0
    )]
    pub timeout: u32,
    /// Post (complete) the pending transfer with this id.
    #[arg(long, value_name = "PENDING_ID")]
    pub post: Option<u128>,
    /// Void (cancel) the pending transfer with this id.
    #[arg(long, value_name = "PENDING_ID")]
    pub void: Option<u128>,
    /// Free data for the application.
    #[arg(long, default_value_t = 0)]
    pub user_data_128: u128,
}

/// The flags of `mvledger lookup`.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("ids").args(["account", "transfer"]).required(true).multiple(true)))]
pub struct LookupArgs {
    /// Data directory (must exist).
    #[arg(long, value_name = "PATH")]
    pub dir: PathBuf,
    /// An account id (repeatable).
    #[arg(long, value_name = "ID")]
    pub account: Vec<u128>,
    /// A transfer id (repeatable).
    #[arg(long, value_name = "ID")]
    pub transfer: Vec<u128>,
}

/// The flags of `mvledger history`.
#[derive(Debug, Clone, Args)]
pub struct HistoryArgs {
    /// Data directory (must exist).
    #[arg(long, value_name = "PATH")]
    pub dir: PathBuf,
    /// The account whose transfers to list.
    #[arg(long, value_name = "ID")]
    pub account: u128,
    /// At most this many transfers; when there are more, the heading says
    /// so.
    #[arg(long, default_value_t = 100,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub limit: u32,
    /// Newest first.
    #[arg(long)]
    pub reverse: bool,
}

/// Opens the ledger in `dir`. Only `account create` (`must_exist` false)
/// makes a new one, in a missing or empty directory; no command turns a
/// directory of other files into a data directory.
fn open(dir: &Path, must_exist: bool) -> Result<Ledger, Failure> {
    let shown = dir.display();
    if !super::inspect::is_data_dir(dir) {
        if super::datadir::holds_entries(dir, &shown.to_string())? {
            return Err(Failure::bad_argument(format!(
                "{shown} is not an mvledger data directory (it holds other files and no log)"
            )));
        }
        if must_exist {
            return Err(Failure::bad_argument(format!(
                "no data directory at {shown} (create an account first)"
            )));
        }
    }
    let ledger = Ledger::open(dir, LedgerOptions::default()).map_err(fail_at("opening", dir))?;
    for cut in ledger.engine().recovery_cuts() {
        eprintln!(
            "warning: recovery cut {cut} (what a crash leaves of a record it interrupted, \
             never acknowledged under sync always; after a clean close, damage)"
        );
    }
    for aside in ledger.engine().set_aside() {
        eprintln!(
            "warning: recovery set aside a damaged checkpoint, {} ({}); the state was \
             rebuilt from an older checkpoint and the log",
            aside.file.display(),
            aside.reason
        );
    }
    // Pending transfers past their timeout are released first (a write
    // does so anyway): `lookup` and `history` then show them expired, not
    // still reserved. With nothing due, this writes nothing.
    ledger
        .expire_pending()
        .map_err(fail_at("releasing the expired pending transfers in", dir))?;
    Ok(ledger)
}

/// `account create`; `Ok(false)` when the account was refused.
pub fn create_account(args: &CreateAccountArgs) -> Result<bool, Failure> {
    let ledger = open(&args.dir, false)?;
    let flags = args
        .flags
        .iter()
        .fold(AccountFlags::empty(), |all, f| all | f.bits());
    let account = Account {
        id: args.id,
        ledger: args.ledger,
        code: args.code,
        flags,
        user_data_128: args.user_data_128,
        user_data_64: args.user_data_64,
        user_data_32: args.user_data_32,
        ..Account::default()
    };
    let results = ledger
        .create_accounts(&[account])
        .map_err(fail("create account"))?;
    match results.first() {
        Some(CreateAccountResult::Ok) => {
            say!("account {} created", args.id);
            for found in ledger.lookup_accounts(&[args.id]).map_err(fail("lookup"))? {
                print_account(&found);
            }
            Ok(true)
        }
        Some(code) => {
            say!("account {} refused: {code}", args.id);
            Ok(false)
        }
        None => Err(Failure::new("create account: no result".into())),
    }
}

/// `transfer`; `Ok(false)` when the transfer was refused.
pub fn transfer(args: &TransferArgs) -> Result<bool, Failure> {
    let ledger = open(&args.dir, true)?;
    let (flags, pending_id) = match (args.pending, args.post, args.void) {
        (_, Some(id), _) => (TransferFlags::POST_PENDING_TRANSFER, id),
        (_, _, Some(id)) => (TransferFlags::VOID_PENDING_TRANSFER, id),
        (true, _, _) => (TransferFlags::PENDING, 0),
        _ => (TransferFlags::empty(), 0),
    };
    let transfer = Transfer {
        id: args.id,
        debit_account_id: args.from.unwrap_or(0),
        credit_account_id: args.to.unwrap_or(0),
        amount: args.amount.unwrap_or(0),
        pending_id,
        user_data_128: args.user_data_128,
        timeout: args.timeout,
        ledger: args.ledger.unwrap_or(0),
        code: args.code.unwrap_or(0),
        flags,
        ..Transfer::default()
    };
    let results = ledger
        .create_transfers(&[transfer])
        .map_err(fail("transfer"))?;
    match results.first() {
        Some(CreateTransferResult::Ok) => {
            say!("transfer {} accepted", args.id);
            let snapshot = ledger.snapshot();
            let states = snapshot
                .pending_states(&[args.id])
                .map_err(fail("lookup"))?;
            for found in snapshot
                .lookup_transfers(&[args.id])
                .map_err(fail("lookup"))?
            {
                print_transfer(&found, states.first().copied().flatten());
            }
            Ok(true)
        }
        Some(code) => {
            say!("transfer {} refused: {code}", args.id);
            Ok(false)
        }
        None => Err(Failure::new("transfer: no result".into())),
    }
}

/// `lookup`; `Ok(false)` when an id was not found.
pub fn lookup(args: &LookupArgs) -> Result<bool, Failure> {
    let ledger = open(&args.dir, true)?;
    let snapshot = ledger.snapshot();
    let mut all_found = true;
    let accounts = snapshot
        .lookup_accounts(&args.account)
        .map_err(fail("lookup accounts"))?;
    for id in &args.account {
        match accounts.iter().find(|a| a.id == *id) {
            Some(account) => print_account(account),
            None => {
                say!("account {id} not found");
                all_found = false;
            }
        }
    }
    let transfers = snapshot
        .lookup_transfers(&args.transfer)
        .map_err(fail("lookup transfers"))?;
    let states = snapshot
        .pending_states(&args.transfer)
        .map_err(fail("lookup transfers"))?;
    for (id, state) in args.transfer.iter().zip(states) {
        match transfers.iter().find(|t| t.id == *id) {
            Some(transfer) => print_transfer(transfer, state),
            None => {
                say!("transfer {id} not found");
                all_found = false;
            }
        }
    }
    Ok(all_found)
}

/// `history`; `Ok(false)` when the account does not exist.
pub fn history(args: &HistoryArgs) -> Result<bool, Failure> {
    let ledger = open(&args.dir, true)?;
    let snapshot = ledger.snapshot();
    let Some(account) = snapshot
        .lookup_accounts(&[args.account])
        .map_err(fail("lookup account"))?
        .into_iter()
        .next()
    else {
        say!("account {} not found", args.account);
        return Ok(false);
    };
    let mut flags = AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS;
    if args.reverse {
        flags |= AccountFilterFlags::REVERSED;
    }
    // One more than asked for, to tell "all of them" from "cut at the
    // limit" (at u32::MAX, the most a filter takes, it cannot tell).
    let filter = AccountFilter {
        account_id: args.account,
        limit: args.limit.saturating_add(1),
        flags,
        ..AccountFilter::default()
    };
    let mut transfers = snapshot
        .get_account_transfers(filter)
        .map_err(fail("history"))?;
    let balances = snapshot
        .get_account_balances(filter)
        .map_err(fail("history"))?;
    let more = transfers.len() > args.limit as usize;
    transfers.truncate(args.limit as usize);
    print_account(&account);
    let listed = count(transfers.len() as u64, "transfer");
    match (more, args.reverse) {
        (false, _) => say!("{listed}:"),
        (true, false) => say!("the first {listed}, oldest first (more with --limit N):"),
        (true, true) => say!("the last {listed}, newest first (more with --limit N):"),
    }
    for t in &transfers {
        let (side, other) = if t.debit_account_id == account.id {
            ("debit ", t.credit_account_id)
        } else {
            ("credit", t.debit_account_id)
        };
        say!(
            "  {}  transfer {}  {side} {}  {} {other}{}",
            utc(t.timestamp),
            t.id,
            t.amount,
            if side == "debit " { "to" } else { "from" },
            flag_suffix(&flag_names(t.flags.iter_names()))
        );
        if let Some(b) = balances.iter().find(|b| b.timestamp == t.timestamp) {
            say!(
                "      then debits {}/{}  credits {}/{} (pending/posted)  net {}",
                b.debits_pending,
                b.debits_posted,
                b.credits_pending,
                b.credits_posted,
                net(b.credits_posted, b.debits_posted)
            );
        }
    }
    if !account.flags.contains(AccountFlags::HISTORY) {
        say!("(no balances: the account does not have the history flag)");
    }
    Ok(true)
}

/// Credits minus debits, with its sign.
fn net(credits: u128, debits: u128) -> String {
    if credits >= debits {
        format!("{}", credits - debits)
    } else {
        format!("-{}", debits - credits)
    }
}

fn flag_names<'a>(names: impl Iterator<Item = (&'a str, impl Sized)>) -> Vec<String> {
    names
        .map(|(name, _)| name.to_ascii_lowercase().replace('_', "-"))
        .collect()
}

fn flag_suffix(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!("  [{}]", names.join(", "))
    }
}

fn print_account(a: &Account) {
    say!(
        "account {}  ledger {}  code {}{}",
        a.id,
        a.ledger,
        a.code,
        flag_suffix(&flag_names(a.flags.iter_names()))
    );
    say!(
        "  debits   pending {:>12}  posted {:>12}",
        a.debits_pending,
        a.debits_posted
    );
    say!(
        "  credits  pending {:>12}  posted {:>12}",
        a.credits_pending,
        a.credits_posted
    );
    say!(
        "  balance  {} (credits - debits, posted)",
        net(a.credits_posted, a.debits_posted)
    );
    say!("  created  {} (ts {})", utc(a.timestamp), a.timestamp);
    if a.user_data_128 != 0 || a.user_data_64 != 0 || a.user_data_32 != 0 {
        say!(
            "  user data {} / {} / {}",
            a.user_data_128,
            a.user_data_64,
            a.user_data_32
        );
    }
}

/// A transfer; `state`: where it stands, when it is a pending one.
fn print_transfer(t: &Transfer, state: Option<PendingState>) {
    say!(
        "transfer {}  amount {}  from {} to {}  ledger {}  code {}{}",
        t.id,
        t.amount,
        t.debit_account_id,
        t.credit_account_id,
        t.ledger,
        t.code,
        flag_suffix(&flag_names(t.flags.iter_names()))
    );
    let mut extra = format!("  at {} (ts {})", utc(t.timestamp), t.timestamp);
    if t.pending_id != 0 {
        extra.push_str(&format!("  pending id {}", t.pending_id));
    }
    if t.timeout != 0 {
        extra.push_str(&format!("  timeout {} s", t.timeout));
    }
    if let Some(state) = state {
        extra.push_str(match state {
            PendingState::Pending => "  still reserved",
            PendingState::Posted => "  since posted",
            PendingState::Voided => "  since voided",
            PendingState::Expired => "  since expired",
            _ => "  in a state this command does not know",
        });
    }
    if t.user_data_128 != 0 {
        extra.push_str(&format!("  user data {}", t.user_data_128));
    }
    say!("{extra}");
}
