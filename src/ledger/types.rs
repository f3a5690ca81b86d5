//! The ledger's records and query types, after TigerBeetle's data model:
//! every field, flag and unit as in its `docs/reference/` pages (minus
//! imported events). Amounts are `u128`; timestamps are nanoseconds since
//! the UNIX epoch, assigned by the ledger.

use bitflags::bitflags;

bitflags! {
    /// Flags of an `Account`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct AccountFlags: u16 {
        /// Succeeds or fails together with the next account in the batch.
        const LINKED = 1 << 0;
        /// Refuse a transfer that would make
        /// `debits_pending + debits_posted > credits_posted`.
        const DEBITS_MUST_NOT_EXCEED_CREDITS = 1 << 1;
        /// Refuse a transfer that would make
        /// `credits_pending + credits_posted > debits_posted`.
        const CREDITS_MUST_NOT_EXCEED_DEBITS = 1 << 2;
        /// Keep the balances after every transfer (`get_account_balances`).
        const HISTORY = 1 << 3;
        /// The account takes no new transfers; voiding a pending transfer
        /// still works. Set at creation or by a closing transfer.
        const CLOSED = 1 << 5;
    }
}

bitflags! {
    /// Flags of a `Transfer`.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct TransferFlags: u16 {
        /// Succeeds or fails together with the next transfer in the batch.
        const LINKED = 1 << 0;
        /// Reserves the amount (two-phase): posted or voided later.
        const PENDING = 1 << 1;
        /// Posts the pending transfer `pending_id` (all or part of it).
        const POST_PENDING_TRANSFER = 1 << 2;
        /// Voids the pending transfer `pending_id`.
        const VOID_PENDING_TRANSFER = 1 << 3;
        /// Transfers at most `amount` (0: as much as possible), as much as
        /// the debit account's credits allow.
        const BALANCING_DEBIT = 1 << 4;
        /// Transfers at most `amount` (0: as much as possible), as much as
        /// the credit account's debits allow.
        const BALANCING_CREDIT = 1 << 5;
        /// A pending transfer that closes its debit account (voiding it
        /// reopens the account).
        const CLOSING_DEBIT = 1 << 6;
        /// A pending transfer that closes its credit account.
        const CLOSING_CREDIT = 1 << 7;
    }
}

bitflags! {
    /// Which of an account's transfers a filter selects, and in what order.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
    pub struct AccountFilterFlags: u32 {
        /// Transfers that debit the account.
        const DEBITS = 1 << 0;
        /// Transfers that credit the account.
        const CREDITS = 1 << 1;
        /// Newest first.
        const REVERSED = 1 << 2;
    }
}

/// An account: its balances and what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Account {
    /// Unique, not 0 and not `u128::MAX`.
    pub id: u128,
    /// Amounts reserved by pending transfers that debit this account.
    pub debits_pending: u128,
    /// Posted debits.
    pub debits_posted: u128,
    /// Amounts reserved by pending transfers that credit this account.
    pub credits_pending: u128,
    /// Posted credits.
    pub credits_posted: u128,
    /// Free for the user (an external id, say).
    pub user_data_128: u128,
    /// Free for the user.
    pub user_data_64: u64,
    /// Free for the user.
    pub user_data_32: u32,
    /// Must be zero.
    pub reserved: u32,
    /// Partition of accounts that can transact with each other; not 0.
    pub ledger: u32,
    /// The user's category of the account; not 0.
    pub code: u16,
    /// See `AccountFlags`.
    pub flags: AccountFlags,
    /// Set by the ledger when the account is created (must be 0 on input).
    pub timestamp: u64,
}

/// A transfer of `amount` from the debit account to the credit account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Transfer {
    /// Unique, not 0 and not `u128::MAX`.
    pub id: u128,
    /// The account debited (0 on a post/void: the pending transfer's).
    pub debit_account_id: u128,
    /// The account credited (0 on a post/void: the pending transfer's).
    pub credit_account_id: u128,
    /// How much; not 0 except on balancing and post/void transfers. On a
    /// post, 0 or `u128::MAX` means the pending transfer's whole amount; on
    /// a void, 0 does, and any other amount must be exactly the pending
    /// transfer's; on a balancing transfer, 0 or `u128::MAX` means as much
    /// as the balance allows.
    pub amount: u128,
    /// The pending transfer a post or void settles.
    pub pending_id: u128,
    /// Free for the user.
    pub user_data_128: u128,
    /// Free for the user.
    pub user_data_64: u64,
    /// Free for the user.
    pub user_data_32: u32,
    /// Seconds until a pending transfer expires (0: never).
    pub timeout: u32,
    /// Must equal both accounts' ledger.
    pub ledger: u32,
    /// The user's category of the transfer; not 0.
    pub code: u16,
    /// See `TransferFlags`.
    pub flags: TransferFlags,
    /// Set by the ledger when the transfer is created (must be 0 on input).
    pub timestamp: u64,
}

/// Which transfers of an account a history query returns. As in
/// TigerBeetle, a filter that breaks a constraint gets an empty result: an
/// account id of 0 or `u128::MAX`, a `limit` of 0, neither `DEBITS` nor
/// `CREDITS`, a flag bit `AccountFilterFlags` does not name, a timestamp
/// bound of 2^63 or more, or `timestamp_min` above `timestamp_max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AccountFilter {
    /// The account.
    pub account_id: u128,
    /// Only transfers with this `user_data_128` (0: any).
    pub user_data_128: u128,
    /// Only transfers with this `user_data_64` (0: any).
    pub user_data_64: u64,
    /// Only transfers with this `user_data_32` (0: any).
    pub user_data_32: u32,
    /// Only transfers with this `code` (0: any).
    pub code: u16,
    /// Only transfers at or after this timestamp (0: no bound; below
    /// 2^63).
    pub timestamp_min: u64,
    /// Only transfers at or before this timestamp (0: no bound; below
    /// 2^63).
    pub timestamp_max: u64,
    /// At most this many results (0 gives none; any value up to
    /// `u32::MAX`, unlike TigerBeetle's 8,189 a request: memory is the bound).
    pub limit: u32,
    /// Debits and/or credits, and the order.
    pub flags: AccountFilterFlags,
}

/// An account's balances just after one of its transfers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AccountBalance {
    /// `debits_pending` after the transfer.
    pub debits_pending: u128,
    /// `debits_posted` after the transfer.
    pub debits_posted: u128,
    /// `credits_pending` after the transfer.
    pub credits_pending: u128,
    /// `credits_posted` after the transfer.
    pub credits_posted: u128,
    /// The transfer's timestamp.
    pub timestamp: u64,
}

impl Account {
    /// Whether a debit of `amount` more would break
    /// `DEBITS_MUST_NOT_EXCEED_CREDITS`.
    pub fn debits_exceed_credits(&self, amount: u128) -> bool {
        self.flags
            .contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
            && self
                .debits_pending
                .saturating_add(self.debits_posted)
                .saturating_add(amount)
                > self.credits_posted
    }

    /// Whether a credit of `amount` more would break
    /// `CREDITS_MUST_NOT_EXCEED_DEBITS`.
    pub fn credits_exceed_debits(&self, amount: u128) -> bool {
        self.flags
            .contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
            && self
                .credits_pending
                .saturating_add(self.credits_posted)
                .saturating_add(amount)
                > self.debits_posted
    }

    /// The balances of the account now.
    pub fn balance(&self, timestamp: u64) -> AccountBalance {
        AccountBalance {
            debits_pending: self.debits_pending,
            debits_posted: self.debits_posted,
            credits_pending: self.credits_pending,
            credits_posted: self.credits_posted,
            timestamp,
        }
    }
}

/// Where a pending transfer stands (`LedgerSnapshot::pending_states`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PendingState {
    /// Its amount is still reserved. (Past its timeout, it stays so until
    /// the ledger expires it: at the next write call, which expires up to
    /// 8,190 due transfers first, oldest expiry first, or at
    /// `Ledger::expire_pending`, which expires all that are due. Posting or
    /// voiding it is refused meanwhile: `PendingTransferExpired`.)
    Pending,
    /// A post settled it (the whole amount or a part).
    Posted,
    /// A void released it.
    Voided,
    /// Its timeout passed and the ledger released it.
    Expired,
}
