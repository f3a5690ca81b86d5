//! A serial reference model of the ledger (issue 3, "Tests"): what
//! `create_accounts`, `create_transfers`, expiry and the reads must do,
//! written from ARCHITECTURE.md ("Ledger model"), the helpers' brief and
//! TigerBeetle's reference pages, independently of `src/ledger`.
//!
//! Plain `BTreeMap`s, no indexes, no cleverness: each event is checked rule
//! after rule in the documented order (the first broken rule names the
//! result), a linked chain is rolled back by restoring a copy of the state
//! taken at its start, and expiry scans every pending transfer.
//!
//! The choices the documents leave open, and what the model takes:
//! - Amounts: a post with amount 0 or `u128::MAX` means the pending
//!   amount (TigerBeetle's older and newer spelling), a void with 0 (a
//!   void's nonzero amount is its own, as in TigerBeetle); an amount
//!   above the pending one is `ExceedsPendingTransferAmount`, a void's
//!   below it `PendingTransferHasDifferentAmount`. A balancing transfer with
//!   amount 0 means "at most `u128::MAX`"; if balancing leaves nothing to
//!   move it fails with `ExceedsCredits` / `ExceedsDebits` (amounts are
//!   never 0, as in TigerBeetle before 0.16, which still has
//!   `AmountMustNotBeZero`).
//! - Post/void skip the checks of the debit/credit ids, ledger and code
//!   (0 there means "the pending transfer's"), as TigerBeetle's state
//!   machine does; they never check overflows or limits (a post only moves
//!   a reservation), and a void works on closed accounts.
//! - The stored transfer holds what was applied: the balancing amount
//!   actually moved; for a post/void the pending transfer's accounts,
//!   ledger and code, its user data where the request left 0, timeout 0.
//! - An existing id is compared field by field in the documented order
//!   (flags, pending id, timeout, accounts, amount, user data, ledger,
//!   code); 0 fields of a post/void and the balancing maximum compare as
//!   their resolved values.
//! - A pending transfer expires once `now >= timestamp + timeout * 1e9`
//!   (TigerBeetle: "expire exactly at their expiry time"): at the start of
//!   every write call (now = the call's first timestamp) and on
//!   `expire(now)`. Expiry writes no transfer and no history entry; it
//!   releases the reservation and reopens what a closing transfer closed.
//!   A post/void of a transfer already past its expiry (even if not yet
//!   expired by a call) gets `PendingTransferExpired`.
//! - Transient failures (see `is_transient_failure`) spend the id, even in
//!   a linked chain that is rolled back.
//! - A linked event last in the batch is `LinkedEventChainOpen` even if its
//!   chain already failed (TigerBeetle's `execute` does so, although its
//!   docs list `linked_event_failed` first).
//! - History: one entry per successful transfer for each of its two
//!   accounts, at the transfer's timestamp, with the account's balances
//!   after it when the account has `HISTORY`.

#![allow(dead_code)] // each test binary uses its own part of the model

use std::collections::{BTreeMap, BTreeSet};

use mvledger::{
    Account, AccountBalance, AccountFilter, AccountFilterFlags, AccountFlags,
    CreateAccountResult as AR, CreateTransferResult as TR, Transfer, TransferFlags,
};

/// Nanoseconds in a second (timeouts are seconds).
pub const NS_PER_S: u64 = 1_000_000_000;

/// The account flags the documents define; any other bit is reserved.
fn account_flags_known() -> u16 {
    (AccountFlags::LINKED
        | AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS
        | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS
        | AccountFlags::HISTORY
        | AccountFlags::CLOSED)
        .bits()
}

/// The transfer flags the documents define; any other bit is reserved.
fn transfer_flags_known() -> u16 {
    (TransferFlags::LINKED
        | TransferFlags::PENDING
        | TransferFlags::POST_PENDING_TRANSFER
        | TransferFlags::VOID_PENDING_TRANSFER
        | TransferFlags::BALANCING_DEBIT
        | TransferFlags::BALANCING_CREDIT
        | TransferFlags::CLOSING_DEBIT
        | TransferFlags::CLOSING_CREDIT)
        .bits()
}

/// Failures that depend on state that can change later: the id is spent
/// (ARCHITECTURE.md: "an account not found, a limit exceeded, a closed
/// account"; exactly TigerBeetle's list under `id_already_failed`).
pub fn is_transient_failure(r: TR) -> bool {
    matches!(
        r,
        TR::DebitAccountNotFound
            | TR::CreditAccountNotFound
            | TR::PendingTransferNotFound
            | TR::ExceedsCredits
            | TR::ExceedsDebits
            | TR::DebitAccountAlreadyClosed
            | TR::CreditAccountAlreadyClosed
    )
}

/// What became of a pending transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingStatus {
    /// Still reserved.
    Pending,
    /// Posted (in full or in part).
    Posted,
    /// Voided by a void transfer.
    Voided,
    /// Voided by its timeout.
    Expired,
}

/// One transfer in one account's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The transfer's timestamp.
    pub timestamp: u64,
    /// The transfer.
    pub transfer_id: u128,
    /// The account's balances just after it (HISTORY accounts only).
    pub balance: Option<AccountBalance>,
}

/// Everything a linked chain may have to roll back.
#[derive(Debug, Clone, Default)]
struct State {
    accounts: BTreeMap<u128, Account>,
    transfers: BTreeMap<u128, Transfer>,
    /// By the pending transfer's id.
    pending: BTreeMap<u128, PendingStatus>,
    /// By account id, in timestamp order.
    history: BTreeMap<u128, Vec<HistoryEntry>>,
}

/// The serial ledger.
#[derive(Debug, Clone, Default)]
pub struct Model {
    state: State,
    /// Ids spent by transient failures; never rolled back.
    failed: BTreeSet<u128>,
    /// The last timestamp given out (0: none yet).
    last_ts: u64,
}

fn sum_u256(values: impl Iterator<Item = u128>) -> (u128, u128) {
    // (high, low): sums of many u128 amounts near u128::MAX overflow u128.
    let mut high = 0u128;
    let mut low = 0u128;
    for v in values {
        let (l, carry) = low.overflowing_add(v);
        low = l;
        if carry {
            high += 1;
        }
    }
    (high, low)
}

/// The ledger's invariants over a set of accounts (ARCHITECTURE.md,
/// invariant 6): the sums of posted debits and credits are equal, and of
/// pending ones, every balance limit holds, and no account's debits or
/// credits (pending plus posted) overflow.
pub fn check_invariants(accounts: &[Account]) -> Result<(), String> {
    let dpo = sum_u256(accounts.iter().map(|a| a.debits_posted));
    let cpo = sum_u256(accounts.iter().map(|a| a.credits_posted));
    if dpo != cpo {
        return Err(format!("posted debits {dpo:?} != posted credits {cpo:?}"));
    }
    let dp = sum_u256(accounts.iter().map(|a| a.debits_pending));
    let cp = sum_u256(accounts.iter().map(|a| a.credits_pending));
    if dp != cp {
        return Err(format!("pending debits {dp:?} != pending credits {cp:?}"));
    }
    for a in accounts {
        let Some(debits) = a.debits_pending.checked_add(a.debits_posted) else {
            return Err(format!("account {}: debits overflow: {a:?}", a.id));
        };
        let Some(credits) = a.credits_pending.checked_add(a.credits_posted) else {
            return Err(format!("account {}: credits overflow: {a:?}", a.id));
        };
        if a.flags
            .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
            && debits > a.credits_posted
        {
            return Err(format!("account {}: debits exceed credits: {a:?}", a.id));
        }
        if a.flags
            .contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
            && credits > a.debits_posted
        {
            return Err(format!("account {}: credits exceed debits: {a:?}", a.id));
        }
    }
    Ok(())
}

fn balance_of(a: &Account, timestamp: u64) -> AccountBalance {
    AccountBalance {
        debits_pending: a.debits_pending,
        debits_posted: a.debits_posted,
        credits_pending: a.credits_pending,
        credits_posted: a.credits_posted,
        timestamp,
    }
}

/// `x`, or `y` where `x` is 0 (a post/void's fields left 0).
fn or_else<T: PartialEq + Default>(x: T, y: T) -> T {
    if x != T::default() { x } else { y }
}

fn expires_at(p: &Transfer) -> Option<u128> {
    // u128: no overflow to think about.
    (p.timeout > 0).then(|| u128::from(p.timestamp) + u128::from(p.timeout) * u128::from(NS_PER_S))
}

impl Model {
    /// An empty ledger.
    pub fn new() -> Model {
        Model::default()
    }

    /// The last timestamp given out.
    pub fn last_timestamp(&self) -> u64 {
        self.last_ts
    }

    /// The timestamp the next write call gets with the clock at `clock_ns`:
    /// `max(clock, last + 1)`.
    pub fn next_timestamp(&self, clock_ns: u64) -> u64 {
        clock_ns.max(self.last_ts + 1)
    }

    // ----- writes -------------------------------------------------------

    /// Creates `accounts`, the first at timestamp `first_ts`, event `i` at
    /// `first_ts + i`, after expiring what is due at `first_ts`.
    pub fn create_accounts(&mut self, first_ts: u64, accounts: &[Account]) -> Vec<AR> {
        if accounts.is_empty() {
            return Vec::new();
        }
        assert!(
            first_ts > self.last_ts,
            "timestamps go backwards: {first_ts} after {}",
            self.last_ts
        );
        self.expire_due(first_ts);
        let n = accounts.len();
        let mut results = vec![AR::Ok; n];
        let mut chain: Option<(usize, State)> = None;
        let mut chain_broken = false;
        for (i, a) in accounts.iter().enumerate() {
            let ts = first_ts + i as u64;
            let linked = a.flags.contains(AccountFlags::LINKED);
            if linked && chain.is_none() {
                chain = Some((i, self.state.clone()));
            }
            let result = if linked && i == n - 1 {
                AR::LinkedEventChainOpen
            } else if chain_broken {
                AR::LinkedEventFailed
            } else if a.timestamp != 0 && a.flags.bits() & (1 << 4) == 0 {
                // Not for TigerBeetle's `imported` flag (bit 4).
                AR::TimestampMustBeZero
            } else {
                self.create_account(ts, a)
            };
            if result != AR::Ok {
                if let Some((start, saved)) = &chain
                    && !chain_broken
                {
                    chain_broken = true;
                    self.state = saved.clone();
                    for r in &mut results[*start..i] {
                        *r = AR::LinkedEventFailed;
                    }
                }
                results[i] = result;
            }
            if chain.is_some() && (!linked || result == AR::LinkedEventChainOpen) {
                chain = None;
                chain_broken = false;
            }
        }
        self.last_ts = first_ts + n as u64 - 1;
        results
    }

    fn create_account(&mut self, ts: u64, a: &Account) -> AR {
        if a.reserved != 0 {
            return AR::ReservedField;
        }
        if a.flags.bits() & !account_flags_known() != 0 {
            return AR::ReservedFlag;
        }
        if a.id == 0 {
            return AR::IdMustNotBeZero;
        }
        if a.id == u128::MAX {
            return AR::IdMustNotBeIntMax;
        }
        if let Some(e) = self.state.accounts.get(&a.id) {
            if a.flags.bits() != e.flags.bits() {
                return AR::ExistsWithDifferentFlags;
            }
            if a.user_data_128 != e.user_data_128 {
                return AR::ExistsWithDifferentUserData128;
            }
            if a.user_data_64 != e.user_data_64 {
                return AR::ExistsWithDifferentUserData64;
            }
            if a.user_data_32 != e.user_data_32 {
                return AR::ExistsWithDifferentUserData32;
            }
            if a.ledger != e.ledger {
                return AR::ExistsWithDifferentLedger;
            }
            if a.code != e.code {
                return AR::ExistsWithDifferentCode;
            }
            return AR::Exists;
        }
        if a.flags
            .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
            && a.flags
                .contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
        {
            return AR::FlagsAreMutuallyExclusive;
        }
        if a.debits_pending != 0 {
            return AR::DebitsPendingMustBeZero;
        }
        if a.debits_posted != 0 {
            return AR::DebitsPostedMustBeZero;
        }
        if a.credits_pending != 0 {
            return AR::CreditsPendingMustBeZero;
        }
        if a.credits_posted != 0 {
            return AR::CreditsPostedMustBeZero;
        }
        if a.ledger == 0 {
            return AR::LedgerMustNotBeZero;
        }
        if a.code == 0 {
            return AR::CodeMustNotBeZero;
        }
        let stored = Account {
            timestamp: ts,
            ..*a
        };
        self.state.accounts.insert(a.id, stored);
        AR::Ok
    }

    /// Creates `transfers`, the first at timestamp `first_ts`, event `i` at
    /// `first_ts + i`, after expiring what is due at `first_ts`.
    pub fn create_transfers(&mut self, first_ts: u64, transfers: &[Transfer]) -> Vec<TR> {
        if transfers.is_empty() {
            return Vec::new();
        }
        assert!(
            first_ts > self.last_ts,
            "timestamps go backwards: {first_ts} after {}",
            self.last_ts
        );
        self.expire_due(first_ts);
        let n = transfers.len();
        let mut results = vec![TR::Ok; n];
        let mut chain: Option<(usize, State)> = None;
        let mut chain_broken = false;
        for (i, t) in transfers.iter().enumerate() {
            let ts = first_ts + i as u64;
            let linked = t.flags.contains(TransferFlags::LINKED);
            if linked && chain.is_none() {
                chain = Some((i, self.state.clone()));
            }
            let result = if linked && i == n - 1 {
                TR::LinkedEventChainOpen
            } else if chain_broken {
                TR::LinkedEventFailed
            } else if t.timestamp != 0 && t.flags.bits() & (1 << 8) == 0 {
                // Not for TigerBeetle's `imported` flag (bit 8).
                TR::TimestampMustBeZero
            } else {
                self.create_transfer(ts, t)
            };
            if result != TR::Ok {
                if let Some((start, saved)) = &chain
                    && !chain_broken
                {
                    chain_broken = true;
                    self.state = saved.clone();
                    for r in &mut results[*start..i] {
                        *r = TR::LinkedEventFailed;
                    }
                }
                // After the rollback: a spent id stays spent.
                if is_transient_failure(result) {
                    self.failed.insert(t.id);
                }
                results[i] = result;
            }
            if chain.is_some() && (!linked || result == TR::LinkedEventChainOpen) {
                chain = None;
                chain_broken = false;
            }
        }
        self.last_ts = first_ts + n as u64 - 1;
        results
    }

    fn create_transfer(&mut self, ts: u64, t: &Transfer) -> TR {
        let f = t.flags;
        if f.bits() & !transfer_flags_known() != 0 {
            return TR::ReservedFlag;
        }
        if t.id == 0 {
            return TR::IdMustNotBeZero;
        }
        if t.id == u128::MAX {
            return TR::IdMustNotBeIntMax;
        }
        if let Some(e) = self.state.transfers.get(&t.id) {
            return self.transfer_exists(t, e);
        }
        if self.failed.contains(&t.id) {
            return TR::IdAlreadyFailed;
        }
        let post = f.contains(TransferFlags::POST_PENDING_TRANSFER);
        let void = f.contains(TransferFlags::VOID_PENDING_TRANSFER);
        if post || void {
            let excluded = TransferFlags::PENDING
                | TransferFlags::BALANCING_DEBIT
                | TransferFlags::BALANCING_CREDIT
                | TransferFlags::CLOSING_DEBIT
                | TransferFlags::CLOSING_CREDIT;
            if (post && void) || f.intersects(excluded) {
                return TR::FlagsAreMutuallyExclusive;
            }
            return self.post_or_void(ts, t);
        }
        if t.debit_account_id == 0 {
            return TR::DebitAccountIdMustNotBeZero;
        }
        if t.debit_account_id == u128::MAX {
            return TR::DebitAccountIdMustNotBeIntMax;
        }
        if t.credit_account_id == 0 {
            return TR::CreditAccountIdMustNotBeZero;
        }
        if t.credit_account_id == u128::MAX {
            return TR::CreditAccountIdMustNotBeIntMax;
        }
        if t.debit_account_id == t.credit_account_id {
            return TR::AccountsMustBeDifferent;
        }
        if t.pending_id != 0 {
            return TR::PendingIdMustBeZero;
        }
        let pending = f.contains(TransferFlags::PENDING);
        let closing = f.intersects(TransferFlags::CLOSING_DEBIT | TransferFlags::CLOSING_CREDIT);
        if !pending && t.timeout != 0 {
            return TR::TimeoutReservedForPendingTransfer;
        }
        if !pending && closing {
            return TR::ClosingTransferMustBePending;
        }
        let balancing_debit = f.contains(TransferFlags::BALANCING_DEBIT);
        let balancing_credit = f.contains(TransferFlags::BALANCING_CREDIT);
        if !balancing_debit && !balancing_credit && t.amount == 0 {
            return TR::AmountMustNotBeZero;
        }
        if t.ledger == 0 {
            return TR::LedgerMustNotBeZero;
        }
        if t.code == 0 {
            return TR::CodeMustNotBeZero;
        }
        let Some(dr) = self.state.accounts.get(&t.debit_account_id).copied() else {
            return TR::DebitAccountNotFound;
        };
        let Some(cr) = self.state.accounts.get(&t.credit_account_id).copied() else {
            return TR::CreditAccountNotFound;
        };
        if dr.ledger != cr.ledger {
            return TR::AccountsMustHaveTheSameLedger;
        }
        if t.ledger != dr.ledger {
            return TR::TransferMustHaveTheSameLedgerAsAccounts;
        }
        if dr.flags.contains(AccountFlags::CLOSED) {
            return TR::DebitAccountAlreadyClosed;
        }
        if cr.flags.contains(AccountFlags::CLOSED) {
            return TR::CreditAccountAlreadyClosed;
        }
        let mut amount = t.amount;
        if (balancing_debit || balancing_credit) && amount == 0 {
            amount = u128::MAX;
        }
        if balancing_debit {
            let debits = dr.debits_posted + dr.debits_pending;
            amount = amount.min(dr.credits_posted.saturating_sub(debits));
            if amount == 0 {
                return TR::ExceedsCredits;
            }
        }
        if balancing_credit {
            let credits = cr.credits_posted + cr.credits_pending;
            amount = amount.min(cr.debits_posted.saturating_sub(credits));
            if amount == 0 {
                return TR::ExceedsDebits;
            }
        }
        if pending {
            if dr.debits_pending.checked_add(amount).is_none() {
                return TR::OverflowsDebitsPending;
            }
            if cr.credits_pending.checked_add(amount).is_none() {
                return TR::OverflowsCreditsPending;
            }
        }
        if dr.debits_posted.checked_add(amount).is_none() {
            return TR::OverflowsDebitsPosted;
        }
        if cr.credits_posted.checked_add(amount).is_none() {
            return TR::OverflowsCreditsPosted;
        }
        if (dr.debits_pending + dr.debits_posted)
            .checked_add(amount)
            .is_none()
        {
            return TR::OverflowsDebits;
        }
        if (cr.credits_pending + cr.credits_posted)
            .checked_add(amount)
            .is_none()
        {
            return TR::OverflowsCredits;
        }
        // `timestamp + timeout` must stay below 2^63 (TigerBeetle's u63).
        let expiry = u128::from(ts) + u128::from(t.timeout) * u128::from(NS_PER_S);
        if expiry > u128::from(u64::MAX >> 1) {
            return TR::OverflowsTimeout;
        }
        if dr
            .flags
            .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
            && dr.debits_pending + dr.debits_posted + amount > dr.credits_posted
        {
            return TR::ExceedsCredits;
        }
        if cr
            .flags
            .contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
            && cr.credits_pending + cr.credits_posted + amount > cr.debits_posted
        {
            return TR::ExceedsDebits;
        }

        // Every rule holds: apply.
        let stored = Transfer {
            amount,
            timestamp: ts,
            ..*t
        };
        let mut dr = dr;
        let mut cr = cr;
        if pending {
            dr.debits_pending += amount;
            cr.credits_pending += amount;
            self.state.pending.insert(t.id, PendingStatus::Pending);
        } else {
            dr.debits_posted += amount;
            cr.credits_posted += amount;
        }
        if f.contains(TransferFlags::CLOSING_DEBIT) {
            dr.flags.insert(AccountFlags::CLOSED);
        }
        if f.contains(TransferFlags::CLOSING_CREDIT) {
            cr.flags.insert(AccountFlags::CLOSED);
        }
        self.apply(stored, dr, cr);
        TR::Ok
    }

    fn post_or_void(&mut self, ts: u64, t: &Transfer) -> TR {
        let void = t.flags.contains(TransferFlags::VOID_PENDING_TRANSFER);
        if t.pending_id == 0 {
            return TR::PendingIdMustNotBeZero;
        }
        if t.pending_id == u128::MAX {
            return TR::PendingIdMustNotBeIntMax;
        }
        if t.pending_id == t.id {
            return TR::PendingIdMustBeDifferent;
        }
        if t.timeout != 0 {
            return TR::TimeoutReservedForPendingTransfer;
        }
        let Some(p) = self.state.transfers.get(&t.pending_id).copied() else {
            return TR::PendingTransferNotFound;
        };
        if !p.flags.contains(TransferFlags::PENDING) {
            return TR::PendingTransferNotPending;
        }
        if t.debit_account_id != 0 && t.debit_account_id != p.debit_account_id {
            return TR::PendingTransferHasDifferentDebitAccountId;
        }
        if t.credit_account_id != 0 && t.credit_account_id != p.credit_account_id {
            return TR::PendingTransferHasDifferentCreditAccountId;
        }
        if t.ledger != 0 && t.ledger != p.ledger {
            return TR::PendingTransferHasDifferentLedger;
        }
        if t.code != 0 && t.code != p.code {
            return TR::PendingTransferHasDifferentCode;
        }
        let amount = if t.amount == 0 || (!void && t.amount == u128::MAX) {
            p.amount
        } else {
            t.amount
        };
        if amount > p.amount {
            return TR::ExceedsPendingTransferAmount;
        }
        if void && amount < p.amount {
            return TR::PendingTransferHasDifferentAmount;
        }
        match self.state.pending[&p.id] {
            PendingStatus::Pending => {}
            PendingStatus::Posted => return TR::PendingTransferAlreadyPosted,
            PendingStatus::Voided => return TR::PendingTransferAlreadyVoided,
            PendingStatus::Expired => return TR::PendingTransferExpired,
        }
        if let Some(at) = expires_at(&p)
            && at <= u128::from(ts)
        {
            return TR::PendingTransferExpired;
        }
        let mut dr = self.state.accounts[&p.debit_account_id];
        let mut cr = self.state.accounts[&p.credit_account_id];
        if !void && dr.flags.contains(AccountFlags::CLOSED) {
            return TR::DebitAccountAlreadyClosed;
        }
        if !void && cr.flags.contains(AccountFlags::CLOSED) {
            return TR::CreditAccountAlreadyClosed;
        }

        // Every rule holds: apply.
        let stored = Transfer {
            id: t.id,
            debit_account_id: p.debit_account_id,
            credit_account_id: p.credit_account_id,
            amount,
            pending_id: p.id,
            user_data_128: or_else(t.user_data_128, p.user_data_128),
            user_data_64: or_else(t.user_data_64, p.user_data_64),
            user_data_32: or_else(t.user_data_32, p.user_data_32),
            timeout: 0,
            ledger: p.ledger,
            code: p.code,
            flags: t.flags,
            timestamp: ts,
        };
        dr.debits_pending -= p.amount;
        cr.credits_pending -= p.amount;
        if void {
            if p.flags.contains(TransferFlags::CLOSING_DEBIT) {
                dr.flags.remove(AccountFlags::CLOSED);
            }
            if p.flags.contains(TransferFlags::CLOSING_CREDIT) {
                cr.flags.remove(AccountFlags::CLOSED);
            }
            self.state.pending.insert(p.id, PendingStatus::Voided);
        } else {
            dr.debits_posted += amount;
            cr.credits_posted += amount;
            self.state.pending.insert(p.id, PendingStatus::Posted);
        }
        self.apply(stored, dr, cr);
        TR::Ok
    }

    /// Records a successful transfer with its accounts' new versions.
    fn apply(&mut self, stored: Transfer, dr: Account, cr: Account) {
        assert_eq!(dr.id, stored.debit_account_id);
        assert_eq!(cr.id, stored.credit_account_id);
        for a in [dr, cr] {
            let entry = HistoryEntry {
                timestamp: stored.timestamp,
                transfer_id: stored.id,
                balance: a
                    .flags
                    .contains(AccountFlags::HISTORY)
                    .then(|| balance_of(&a, stored.timestamp)),
            };
            self.state.history.entry(a.id).or_default().push(entry);
            self.state.accounts.insert(a.id, a);
        }
        self.state.transfers.insert(stored.id, stored);
    }

    /// The result for a transfer whose id exists as `e`.
    fn transfer_exists(&self, t: &Transfer, e: &Transfer) -> TR {
        if t.flags.bits() != e.flags.bits() {
            return TR::ExistsWithDifferentFlags;
        }
        if t.pending_id != e.pending_id {
            return TR::ExistsWithDifferentPendingId;
        }
        if t.timeout != e.timeout {
            return TR::ExistsWithDifferentTimeout;
        }
        let post_or_void = t.flags.intersects(
            TransferFlags::POST_PENDING_TRANSFER | TransferFlags::VOID_PENDING_TRANSFER,
        );
        if post_or_void {
            // The fields left 0 resolve to the pending transfer's.
            let p = self.state.transfers[&e.pending_id];
            if t.debit_account_id != 0 && t.debit_account_id != e.debit_account_id {
                return TR::ExistsWithDifferentDebitAccountId;
            }
            if t.credit_account_id != 0 && t.credit_account_id != e.credit_account_id {
                return TR::ExistsWithDifferentCreditAccountId;
            }
            let void = t.flags.contains(TransferFlags::VOID_PENDING_TRANSFER);
            let amount = if t.amount == 0 || (!void && t.amount == u128::MAX) {
                p.amount
            } else {
                t.amount
            };
            if amount != e.amount {
                return TR::ExistsWithDifferentAmount;
            }
            if or_else(t.user_data_128, p.user_data_128) != e.user_data_128 {
                return TR::ExistsWithDifferentUserData128;
            }
            if or_else(t.user_data_64, p.user_data_64) != e.user_data_64 {
                return TR::ExistsWithDifferentUserData64;
            }
            if or_else(t.user_data_32, p.user_data_32) != e.user_data_32 {
                return TR::ExistsWithDifferentUserData32;
            }
            if t.ledger != 0 && t.ledger != e.ledger {
                return TR::ExistsWithDifferentLedger;
            }
            if t.code != 0 && t.code != e.code {
                return TR::ExistsWithDifferentCode;
            }
            return TR::Exists;
        }
        if t.debit_account_id != e.debit_account_id {
            return TR::ExistsWithDifferentDebitAccountId;
        }
        if t.credit_account_id != e.credit_account_id {
            return TR::ExistsWithDifferentCreditAccountId;
        }
        let balancing = t
            .flags
            .intersects(TransferFlags::BALANCING_DEBIT | TransferFlags::BALANCING_CREDIT);
        if balancing {
            // The request's amount is a maximum (0: none); the stored one is
            // what was moved.
            let max = if t.amount == 0 { u128::MAX } else { t.amount };
            if max < e.amount {
                return TR::ExistsWithDifferentAmount;
            }
        } else if t.amount != e.amount {
            return TR::ExistsWithDifferentAmount;
        }
        if t.user_data_128 != e.user_data_128 {
            return TR::ExistsWithDifferentUserData128;
        }
        if t.user_data_64 != e.user_data_64 {
            return TR::ExistsWithDifferentUserData64;
        }
        if t.user_data_32 != e.user_data_32 {
            return TR::ExistsWithDifferentUserData32;
        }
        if t.ledger != e.ledger {
            return TR::ExistsWithDifferentLedger;
        }
        if t.code != e.code {
            return TR::ExistsWithDifferentCode;
        }
        TR::Exists
    }

    /// `Ledger::expire_pending` at timestamp `now` (the call's timestamp).
    pub fn expire(&mut self, now: u64) {
        assert!(
            now > self.last_ts,
            "timestamps go backwards: {now} after {}",
            self.last_ts
        );
        // With nothing due, `expire_pending` writes nothing and gives out
        // no timestamp.
        if self.expire_due(now) > 0 {
            self.last_ts = now;
        }
    }

    /// Voids every pending transfer whose expiry is at or before `now`;
    /// returns how many.
    fn expire_due(&mut self, now: u64) -> usize {
        let due: Vec<u128> = self
            .state
            .pending
            .iter()
            .filter(|&(_, s)| *s == PendingStatus::Pending)
            .map(|(id, _)| *id)
            .filter(|id| {
                expires_at(&self.state.transfers[id]).is_some_and(|at| at <= u128::from(now))
            })
            .collect();
        let count = due.len();
        for id in due {
            let p = self.state.transfers[&id];
            let mut dr = self.state.accounts[&p.debit_account_id];
            let mut cr = self.state.accounts[&p.credit_account_id];
            dr.debits_pending -= p.amount;
            cr.credits_pending -= p.amount;
            if p.flags.contains(TransferFlags::CLOSING_DEBIT) {
                dr.flags.remove(AccountFlags::CLOSED);
            }
            if p.flags.contains(TransferFlags::CLOSING_CREDIT) {
                cr.flags.remove(AccountFlags::CLOSED);
            }
            self.state.accounts.insert(dr.id, dr);
            self.state.accounts.insert(cr.id, cr);
            self.state.pending.insert(id, PendingStatus::Expired);
        }
        count
    }

    // ----- reads ----------------------------------------------------------

    /// Every account, in id order.
    pub fn accounts(&self) -> Vec<Account> {
        self.state.accounts.values().copied().collect()
    }

    /// Every transfer, in id order.
    pub fn transfers(&self) -> Vec<Transfer> {
        self.state.transfers.values().copied().collect()
    }

    /// The ids spent by transient failures.
    pub fn failed_ids(&self) -> Vec<u128> {
        self.failed.iter().copied().collect()
    }

    /// What became of pending transfer `id` (None: not a pending transfer).
    pub fn pending_status(&self, id: u128) -> Option<PendingStatus> {
        self.state.pending.get(&id).copied()
    }

    /// The accounts with these ids that exist, in input order.
    pub fn lookup_accounts(&self, ids: &[u128]) -> Vec<Account> {
        ids.iter()
            .filter_map(|id| self.state.accounts.get(id).copied())
            .collect()
    }

    /// The transfers with these ids that exist, in input order.
    pub fn lookup_transfers(&self, ids: &[u128]) -> Vec<Transfer> {
        ids.iter()
            .filter_map(|id| self.state.transfers.get(id).copied())
            .collect()
    }

    /// The history entries `filter` selects, in the order asked.
    fn history(&self, filter: &AccountFilter) -> Vec<HistoryEntry> {
        let max = if filter.timestamp_max == 0 {
            u64::MAX
        } else {
            filter.timestamp_max
        };
        let sides = AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS;
        if filter.limit == 0
            || !filter.flags.intersects(sides)
            || filter.account_id == 0
            || filter.account_id == u128::MAX
            || filter.timestamp_min > max
        {
            return Vec::new();
        }
        let Some(entries) = self.state.history.get(&filter.account_id) else {
            return Vec::new();
        };
        let mut selected: Vec<HistoryEntry> = entries
            .iter()
            .filter(|h| filter.timestamp_min <= h.timestamp && h.timestamp <= max)
            .filter(|h| {
                let t = &self.state.transfers[&h.transfer_id];
                let side = (filter.flags.contains(AccountFilterFlags::DEBITS)
                    && t.debit_account_id == filter.account_id)
                    || (filter.flags.contains(AccountFilterFlags::CREDITS)
                        && t.credit_account_id == filter.account_id);
                let fields = (filter.user_data_128 == 0 || t.user_data_128 == filter.user_data_128)
                    && (filter.user_data_64 == 0 || t.user_data_64 == filter.user_data_64)
                    && (filter.user_data_32 == 0 || t.user_data_32 == filter.user_data_32)
                    && (filter.code == 0 || t.code == filter.code);
                side && fields
            })
            .copied()
            .collect();
        if filter.flags.contains(AccountFilterFlags::REVERSED) {
            selected.reverse();
        }
        selected.truncate(filter.limit as usize);
        selected
    }

    /// `get_account_transfers`.
    pub fn get_account_transfers(&self, filter: AccountFilter) -> Vec<Transfer> {
        self.history(&filter)
            .iter()
            .map(|h| self.state.transfers[&h.transfer_id])
            .collect()
    }

    /// `get_account_balances`: empty unless the account has HISTORY.
    pub fn get_account_balances(&self, filter: AccountFilter) -> Vec<AccountBalance> {
        let history = self
            .state
            .accounts
            .get(&filter.account_id)
            .is_some_and(|a| a.flags.contains(AccountFlags::HISTORY));
        if !history {
            return Vec::new();
        }
        self.history(&filter)
            .iter()
            .map(|h| h.balance.expect("HISTORY accounts keep every balance"))
            .collect()
    }

    // ----- self-checks ----------------------------------------------------

    /// The model's own invariants: those of `check_invariants`, plus every
    /// account's pending amounts equal the sums of its pending transfers
    /// that are still pending, and its posted amounts the sums of its
    /// posted transfers.
    pub fn check(&self) -> Result<(), String> {
        check_invariants(&self.accounts())?;
        let mut expect: BTreeMap<u128, [u128; 4]> = BTreeMap::new();
        for t in self.state.transfers.values() {
            let f = t.flags;
            let (slot_dr, slot_cr) = if f.contains(TransferFlags::PENDING) {
                if self.state.pending[&t.id] != PendingStatus::Pending {
                    continue;
                }
                (0, 2)
            } else if f.contains(TransferFlags::VOID_PENDING_TRANSFER) {
                continue;
            } else {
                (1, 3)
            };
            expect.entry(t.debit_account_id).or_default()[slot_dr] += t.amount;
            expect.entry(t.credit_account_id).or_default()[slot_cr] += t.amount;
        }
        for a in self.state.accounts.values() {
            let e = expect.get(&a.id).copied().unwrap_or_default();
            let got = [
                a.debits_pending,
                a.debits_posted,
                a.credits_pending,
                a.credits_posted,
            ];
            if e != got {
                return Err(format!(
                    "model account {}: balances {got:?}, transfers say {e:?}",
                    a.id
                ));
            }
        }
        Ok(())
    }
}
