//! Result codes of `create_accounts` and `create_transfers`: one per input
//! item, `Ok` or the rule it broke, TigerBeetle's codes in UpperCamelCase
//! (its import-related codes left out). `Display` gives the code in words.

/// The result of creating one account.
///
/// Listed in the order the rules are checked: when an item breaks
/// several, the first one listed is its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum CreateAccountResult {
    /// Ok.
    Ok,
    /// Linked event failed.
    LinkedEventFailed,
    /// Linked event chain open.
    LinkedEventChainOpen,
    /// Timestamp must be zero.
    TimestampMustBeZero,
    /// Reserved field.
    ReservedField,
    /// Reserved flag.
    ReservedFlag,
    /// Id must not be zero.
    IdMustNotBeZero,
    /// Id must not be int max.
    IdMustNotBeIntMax,
    /// Exists with different flags.
    ExistsWithDifferentFlags,
    /// Exists with different user data 128.
    ExistsWithDifferentUserData128,
    /// Exists with different user data 64.
    ExistsWithDifferentUserData64,
    /// Exists with different user data 32.
    ExistsWithDifferentUserData32,
    /// Exists with different ledger.
    ExistsWithDifferentLedger,
    /// Exists with different code.
    ExistsWithDifferentCode,
    /// Exists.
    Exists,
    /// Flags are mutually exclusive.
    FlagsAreMutuallyExclusive,
    /// Debits pending must be zero.
    DebitsPendingMustBeZero,
    /// Debits posted must be zero.
    DebitsPostedMustBeZero,
    /// Credits pending must be zero.
    CreditsPendingMustBeZero,
    /// Credits posted must be zero.
    CreditsPostedMustBeZero,
    /// Ledger must not be zero.
    LedgerMustNotBeZero,
    /// Code must not be zero.
    CodeMustNotBeZero,
}

impl CreateAccountResult {
    /// Every result, in check order.
    pub const ALL: &'static [CreateAccountResult] = &[
        CreateAccountResult::Ok,
        CreateAccountResult::LinkedEventFailed,
        CreateAccountResult::LinkedEventChainOpen,
        CreateAccountResult::TimestampMustBeZero,
        CreateAccountResult::ReservedField,
        CreateAccountResult::ReservedFlag,
        CreateAccountResult::IdMustNotBeZero,
        CreateAccountResult::IdMustNotBeIntMax,
        CreateAccountResult::ExistsWithDifferentFlags,
        CreateAccountResult::ExistsWithDifferentUserData128,
        CreateAccountResult::ExistsWithDifferentUserData64,
        CreateAccountResult::ExistsWithDifferentUserData32,
        CreateAccountResult::ExistsWithDifferentLedger,
        CreateAccountResult::ExistsWithDifferentCode,
        CreateAccountResult::Exists,
        CreateAccountResult::FlagsAreMutuallyExclusive,
        CreateAccountResult::DebitsPendingMustBeZero,
        CreateAccountResult::DebitsPostedMustBeZero,
        CreateAccountResult::CreditsPendingMustBeZero,
        CreateAccountResult::CreditsPostedMustBeZero,
        CreateAccountResult::LedgerMustNotBeZero,
        CreateAccountResult::CodeMustNotBeZero,
    ];

    /// The result's name in snake case, as TigerBeetle spells it.
    pub fn name(self) -> &'static str {
        match self {
            CreateAccountResult::Ok => "ok",
            CreateAccountResult::LinkedEventFailed => "linked_event_failed",
            CreateAccountResult::LinkedEventChainOpen => "linked_event_chain_open",
            CreateAccountResult::TimestampMustBeZero => "timestamp_must_be_zero",
            CreateAccountResult::ReservedField => "reserved_field",
            CreateAccountResult::ReservedFlag => "reserved_flag",
            CreateAccountResult::IdMustNotBeZero => "id_must_not_be_zero",
            CreateAccountResult::IdMustNotBeIntMax => "id_must_not_be_int_max",
            CreateAccountResult::ExistsWithDifferentFlags => "exists_with_different_flags",
            CreateAccountResult::ExistsWithDifferentUserData128 => {
                "exists_with_different_user_data_128"
            }
            CreateAccountResult::ExistsWithDifferentUserData64 => {
                "exists_with_different_user_data_64"
            }
            CreateAccountResult::ExistsWithDifferentUserData32 => {
                "exists_with_different_user_data_32"
            }
            CreateAccountResult::ExistsWithDifferentLedger => "exists_with_different_ledger",
            CreateAccountResult::ExistsWithDifferentCode => "exists_with_different_code",
            CreateAccountResult::Exists => "exists",
            CreateAccountResult::FlagsAreMutuallyExclusive => "flags_are_mutually_exclusive",
            CreateAccountResult::DebitsPendingMustBeZero => "debits_pending_must_be_zero",
            CreateAccountResult::DebitsPostedMustBeZero => "debits_posted_must_be_zero",
            CreateAccountResult::CreditsPendingMustBeZero => "credits_pending_must_be_zero",
            CreateAccountResult::CreditsPostedMustBeZero => "credits_posted_must_be_zero",
            CreateAccountResult::LedgerMustNotBeZero => "ledger_must_not_be_zero",
            CreateAccountResult::CodeMustNotBeZero => "code_must_not_be_zero",
        }
    }

    /// The result for its `u8` code, if it is one.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// The result's `u8` code (its place in check order).
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl std::fmt::Display for CreateAccountResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name().replace('_', " "))
    }
}

/// The result of creating one transfer.
///
/// Listed in the order the rules are checked: when an item breaks
/// several, the first one listed is its result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum CreateTransferResult {
    /// Ok.
    Ok,
    /// Linked event failed.
    LinkedEventFailed,
    /// Linked event chain open.
    LinkedEventChainOpen,
    /// Timestamp must be zero.
    TimestampMustBeZero,
    /// Reserved flag.
    ReservedFlag,
    /// Id must not be zero.
    IdMustNotBeZero,
    /// Id must not be int max.
    IdMustNotBeIntMax,
    /// Exists with different flags.
    ExistsWithDifferentFlags,
    /// Exists with different pending id.
    ExistsWithDifferentPendingId,
    /// Exists with different timeout.
    ExistsWithDifferentTimeout,
    /// Exists with different debit account id.
    ExistsWithDifferentDebitAccountId,
    /// Exists with different credit account id.
    ExistsWithDifferentCreditAccountId,
    /// Exists with different amount.
    ExistsWithDifferentAmount,
    /// Exists with different user data 128.
    ExistsWithDifferentUserData128,
    /// Exists with different user data 64.
    ExistsWithDifferentUserData64,
    /// Exists with different user data 32.
    ExistsWithDifferentUserData32,
    /// Exists with different ledger.
    ExistsWithDifferentLedger,
    /// Exists with different code.
    ExistsWithDifferentCode,
    /// Exists.
    Exists,
    /// Id already failed.
    IdAlreadyFailed,
    /// Flags are mutually exclusive.
    FlagsAreMutuallyExclusive,
    /// Debit account id must not be zero.
    DebitAccountIdMustNotBeZero,
    /// Debit account id must not be int max.
    DebitAccountIdMustNotBeIntMax,
    /// Credit account id must not be zero.
    CreditAccountIdMustNotBeZero,
    /// Credit account id must not be int max.
    CreditAccountIdMustNotBeIntMax,
    /// Accounts must be different.
    AccountsMustBeDifferent,
    /// Pending id must be zero.
    PendingIdMustBeZero,
    /// Pending id must not be zero.
    PendingIdMustNotBeZero,
    /// Pending id must not be int max.
    PendingIdMustNotBeIntMax,
    /// Pending id must be different.
    PendingIdMustBeDifferent,
    /// Timeout reserved for pending transfer.
    TimeoutReservedForPendingTransfer,
    /// Closing transfer must be pending.
    ClosingTransferMustBePending,
    /// Amount must not be zero.
    AmountMustNotBeZero,
    /// Ledger must not be zero.
    LedgerMustNotBeZero,
    /// Code must not be zero.
    CodeMustNotBeZero,
    /// Debit account not found.
    DebitAccountNotFound,
    /// Credit account not found.
    CreditAccountNotFound,
    /// Accounts must have the same ledger.
    AccountsMustHaveTheSameLedger,
    /// Transfer must have the same ledger as accounts.
    TransferMustHaveTheSameLedgerAsAccounts,
    /// Pending transfer not found.
    PendingTransferNotFound,
    /// Pending transfer not pending.
    PendingTransferNotPending,
    /// Pending transfer has different debit account id.
    PendingTransferHasDifferentDebitAccountId,
    /// Pending transfer has different credit account id.
    PendingTransferHasDifferentCreditAccountId,
    /// Pending transfer has different ledger.
    PendingTransferHasDifferentLedger,
    /// Pending transfer has different code.
    PendingTransferHasDifferentCode,
    /// Exceeds pending transfer amount.
    ExceedsPendingTransferAmount,
    /// Pending transfer has different amount.
    PendingTransferHasDifferentAmount,
    /// Pending transfer already posted.
    PendingTransferAlreadyPosted,
    /// Pending transfer already voided.
    PendingTransferAlreadyVoided,
    /// Pending transfer expired.
    PendingTransferExpired,
    /// Debit account already closed.
    DebitAccountAlreadyClosed,
    /// Credit account already closed.
    CreditAccountAlreadyClosed,
    /// Overflows debits pending.
    OverflowsDebitsPending,
    /// Overflows credits pending.
    OverflowsCreditsPending,
    /// Overflows debits posted.
    OverflowsDebitsPosted,
    /// Overflows credits posted.
    OverflowsCreditsPosted,
    /// Overflows debits.
    OverflowsDebits,
    /// Overflows credits.
    OverflowsCredits,
    /// Overflows timeout: `timestamp + timeout * 1e9` would not be a
    /// timestamp (at least 2^63 ns, as TigerBeetle's u63 sum).
    OverflowsTimeout,
    /// Exceeds credits.
    ExceedsCredits,
    /// Exceeds debits.
    ExceedsDebits,
}

impl CreateTransferResult {
    /// Every result, in check order.
    pub const ALL: &'static [CreateTransferResult] = &[
        CreateTransferResult::Ok,
        CreateTransferResult::LinkedEventFailed,
        CreateTransferResult::LinkedEventChainOpen,
        CreateTransferResult::TimestampMustBeZero,
        CreateTransferResult::ReservedFlag,
        CreateTransferResult::IdMustNotBeZero,
        CreateTransferResult::IdMustNotBeIntMax,
        CreateTransferResult::ExistsWithDifferentFlags,
        CreateTransferResult::ExistsWithDifferentPendingId,
        CreateTransferResult::ExistsWithDifferentTimeout,
        CreateTransferResult::ExistsWithDifferentDebitAccountId,
        CreateTransferResult::ExistsWithDifferentCreditAccountId,
        CreateTransferResult::ExistsWithDifferentAmount,
        CreateTransferResult::ExistsWithDifferentUserData128,
        CreateTransferResult::ExistsWithDifferentUserData64,
        CreateTransferResult::ExistsWithDifferentUserData32,
        CreateTransferResult::ExistsWithDifferentLedger,
        CreateTransferResult::ExistsWithDifferentCode,
        CreateTransferResult::Exists,
        CreateTransferResult::IdAlreadyFailed,
        CreateTransferResult::FlagsAreMutuallyExclusive,
        CreateTransferResult::DebitAccountIdMustNotBeZero,
        CreateTransferResult::DebitAccountIdMustNotBeIntMax,
        CreateTransferResult::CreditAccountIdMustNotBeZero,
        CreateTransferResult::CreditAccountIdMustNotBeIntMax,
        CreateTransferResult::AccountsMustBeDifferent,
        CreateTransferResult::PendingIdMustBeZero,
        CreateTransferResult::PendingIdMustNotBeZero,
        CreateTransferResult::PendingIdMustNotBeIntMax,
        CreateTransferResult::PendingIdMustBeDifferent,
        CreateTransferResult::TimeoutReservedForPendingTransfer,
        CreateTransferResult::ClosingTransferMustBePending,
        CreateTransferResult::AmountMustNotBeZero,
        CreateTransferResult::LedgerMustNotBeZero,
        CreateTransferResult::CodeMustNotBeZero,
        CreateTransferResult::DebitAccountNotFound,
        CreateTransferResult::CreditAccountNotFound,
        CreateTransferResult::AccountsMustHaveTheSameLedger,
        CreateTransferResult::TransferMustHaveTheSameLedgerAsAccounts,
        CreateTransferResult::PendingTransferNotFound,
        CreateTransferResult::PendingTransferNotPending,
        CreateTransferResult::PendingTransferHasDifferentDebitAccountId,
        CreateTransferResult::PendingTransferHasDifferentCreditAccountId,
        CreateTransferResult::PendingTransferHasDifferentLedger,
        CreateTransferResult::PendingTransferHasDifferentCode,
        CreateTransferResult::ExceedsPendingTransferAmount,
        CreateTransferResult::PendingTransferHasDifferentAmount,
        CreateTransferResult::PendingTransferAlreadyPosted,
        CreateTransferResult::PendingTransferAlreadyVoided,
        CreateTransferResult::PendingTransferExpired,
        CreateTransferResult::DebitAccountAlreadyClosed,
        CreateTransferResult::CreditAccountAlreadyClosed,
        CreateTransferResult::OverflowsDebitsPending,
        CreateTransferResult::OverflowsCreditsPending,
        CreateTransferResult::OverflowsDebitsPosted,
        CreateTransferResult::OverflowsCreditsPosted,
        CreateTransferResult::OverflowsDebits,
        CreateTransferResult::OverflowsCredits,
        CreateTransferResult::OverflowsTimeout,
        CreateTransferResult::ExceedsCredits,
        CreateTransferResult::ExceedsDebits,
    ];

    /// The result's name in snake case, as TigerBeetle spells it.
    pub fn name(self) -> &'static str {
        match self {
            CreateTransferResult::Ok => "ok",
            CreateTransferResult::LinkedEventFailed => "linked_event_failed",
            CreateTransferResult::LinkedEventChainOpen => "linked_event_chain_open",
            CreateTransferResult::TimestampMustBeZero => "timestamp_must_be_zero",
            CreateTransferResult::ReservedFlag => "reserved_flag",
            CreateTransferResult::IdMustNotBeZero => "id_must_not_be_zero",
            CreateTransferResult::IdMustNotBeIntMax => "id_must_not_be_int_max",
            CreateTransferResult::ExistsWithDifferentFlags => "exists_with_different_flags",
            CreateTransferResult::ExistsWithDifferentPendingId => {
                "exists_with_different_pending_id"
            }
            CreateTransferResult::ExistsWithDifferentTimeout => "exists_with_different_timeout",
            CreateTransferResult::ExistsWithDifferentDebitAccountId => {
                "exists_with_different_debit_account_id"
            }
            CreateTransferResult::ExistsWithDifferentCreditAccountId => {
                "exists_with_different_credit_account_id"
            }
            CreateTransferResult::ExistsWithDifferentAmount => "exists_with_different_amount",
            CreateTransferResult::ExistsWithDifferentUserData128 => {
                "exists_with_different_user_data_128"
            }
            CreateTransferResult::ExistsWithDifferentUserData64 => {
                "exists_with_different_user_data_64"
            }
            CreateTransferResult::ExistsWithDifferentUserData32 => {
                "exists_with_different_user_data_32"
            }
            CreateTransferResult::ExistsWithDifferentLedger => "exists_with_different_ledger",
            CreateTransferResult::ExistsWithDifferentCode => "exists_with_different_code",
            CreateTransferResult::Exists => "exists",
            CreateTransferResult::IdAlreadyFailed => "id_already_failed",
            CreateTransferResult::FlagsAreMutuallyExclusive => "flags_are_mutually_exclusive",
            CreateTransferResult::DebitAccountIdMustNotBeZero => {
                "debit_account_id_must_not_be_zero"
            }
            CreateTransferResult::DebitAccountIdMustNotBeIntMax => {
                "debit_account_id_must_not_be_int_max"
            }
            CreateTransferResult::CreditAccountIdMustNotBeZero => {
                "credit_account_id_must_not_be_zero"
            }
            CreateTransferResult::CreditAccountIdMustNotBeIntMax => {
                "credit_account_id_must_not_be_int_max"
            }
            CreateTransferResult::AccountsMustBeDifferent => "accounts_must_be_different",
            CreateTransferResult::PendingIdMustBeZero => "pending_id_must_be_zero",
            CreateTransferResult::PendingIdMustNotBeZero => "pending_id_must_not_be_zero",
            CreateTransferResult::PendingIdMustNotBeIntMax => "pending_id_must_not_be_int_max",
            CreateTransferResult::PendingIdMustBeDifferent => "pending_id_must_be_different",
            CreateTransferResult::TimeoutReservedForPendingTransfer => {
                "timeout_reserved_for_pending_transfer"
            }
            CreateTransferResult::ClosingTransferMustBePending => {
                "closing_transfer_must_be_pending"
            }
            CreateTransferResult::AmountMustNotBeZero => "amount_must_not_be_zero",
            CreateTransferResult::LedgerMustNotBeZero => "ledger_must_not_be_zero",
            CreateTransferResult::CodeMustNotBeZero => "code_must_not_be_zero",
            CreateTransferResult::DebitAccountNotFound => "debit_account_not_found",
            CreateTransferResult::CreditAccountNotFound => "credit_account_not_found",
            CreateTransferResult::AccountsMustHaveTheSameLedger => {
                "accounts_must_have_the_same_ledger"
            }
            CreateTransferResult::TransferMustHaveTheSameLedgerAsAccounts => {
                "transfer_must_have_the_same_ledger_as_accounts"
            }
            CreateTransferResult::PendingTransferNotFound => "pending_transfer_not_found",
            CreateTransferResult::PendingTransferNotPending => "pending_transfer_not_pending",
            CreateTransferResult::PendingTransferHasDifferentDebitAccountId => {
                "pending_transfer_has_different_debit_account_id"
            }
            CreateTransferResult::PendingTransferHasDifferentCreditAccountId => {
                "pending_transfer_has_different_credit_account_id"
            }
            CreateTransferResult::PendingTransferHasDifferentLedger => {
                "pending_transfer_has_different_ledger"
            }
            CreateTransferResult::PendingTransferHasDifferentCode => {
                "pending_transfer_has_different_code"
            }
            CreateTransferResult::ExceedsPendingTransferAmount => "exceeds_pending_transfer_amount",
            CreateTransferResult::PendingTransferHasDifferentAmount => {
                "pending_transfer_has_different_amount"
            }
            CreateTransferResult::PendingTransferAlreadyPosted => "pending_transfer_already_posted",
            CreateTransferResult::PendingTransferAlreadyVoided => "pending_transfer_already_voided",
            CreateTransferResult::PendingTransferExpired => "pending_transfer_expired",
            CreateTransferResult::DebitAccountAlreadyClosed => "debit_account_already_closed",
            CreateTransferResult::CreditAccountAlreadyClosed => "credit_account_already_closed",
            CreateTransferResult::OverflowsDebitsPending => "overflows_debits_pending",
            CreateTransferResult::OverflowsCreditsPending => "overflows_credits_pending",
            CreateTransferResult::OverflowsDebitsPosted => "overflows_debits_posted",
            CreateTransferResult::OverflowsCreditsPosted => "overflows_credits_posted",
            CreateTransferResult::OverflowsDebits => "overflows_debits",
            CreateTransferResult::OverflowsCredits => "overflows_credits",
            CreateTransferResult::OverflowsTimeout => "overflows_timeout",
            CreateTransferResult::ExceedsCredits => "exceeds_credits",
            CreateTransferResult::ExceedsDebits => "exceeds_debits",
        }
    }

    /// The result for its `u8` code, if it is one.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.get(usize::from(code)).copied()
    }

    /// The result's `u8` code (its place in check order).
    pub fn code(self) -> u8 {
        self as u8
    }
}

impl std::fmt::Display for CreateTransferResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name().replace('_', " "))
    }
}

impl CreateTransferResult {
    /// Whether the failure depends on state that may change (an account not
    /// found yet, a balance too low, a closed account): such an id is spent,
    /// so that a retry cannot land late (`IdAlreadyFailed`).
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            CreateTransferResult::DebitAccountNotFound
                | CreateTransferResult::CreditAccountNotFound
                | CreateTransferResult::PendingTransferNotFound
                | CreateTransferResult::ExceedsCredits
                | CreateTransferResult::ExceedsDebits
                | CreateTransferResult::DebitAccountAlreadyClosed
                | CreateTransferResult::CreditAccountAlreadyClosed
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_in_check_order() {
        for (i, r) in CreateTransferResult::ALL.iter().enumerate() {
            assert_eq!(r.code() as usize, i);
            assert_eq!(CreateTransferResult::from_code(r.code()), Some(*r));
        }
        for (i, r) in CreateAccountResult::ALL.iter().enumerate() {
            assert_eq!(r.code() as usize, i);
            assert_eq!(CreateAccountResult::from_code(r.code()), Some(*r));
        }
        assert_eq!(
            CreateTransferResult::ExceedsCredits.name(),
            "exceeds_credits"
        );
        assert_eq!(
            CreateTransferResult::ExceedsCredits.to_string(),
            "exceeds credits"
        );
        assert_eq!(
            CreateAccountResult::ExistsWithDifferentUserData128.name(),
            "exists_with_different_user_data_128"
        );
    }
}
