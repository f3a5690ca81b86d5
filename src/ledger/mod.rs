//! The double-entry ledger on the storage core: accounts, atomic
//! multi-account transfers, two-phase transfers, balance limits, idempotent
//! ids, history, after TigerBeetle's model.
//!
//! Every account and transfer is a record of the key-value core (layout in
//! `codec.rs`), so snapshots, the redo log, recovery, checkpoints and GC
//! cover the ledger with no second mechanism. The one thing kept beside
//! the core is derived from those records: the index of each account's
//! transfers (`history.rs`), built at open and appended by each batch
//! before it becomes visible. A batch is logged as itself (a logical
//! record) and re-executed on recovery by the same deterministic state
//! machine (`machine.rs`) that ran it live.
//!
//! Invariants: in every snapshot, the sum of all accounts' posted debits
//! equals the sum of posted credits, and likewise pending; every account's
//! limit flags hold; an id applies at most once.

mod api;
mod clock;
mod codec;
mod codes;
mod history;
mod machine;
mod slab;
mod types;

pub use api::{Extra, Ledger, LedgerEngine, LedgerOptions, LedgerSnapshot, Reply};
pub use clock::{Clock, ManualClock, SystemClock};
pub use codec::{RECORD_BYTES, decode_account, decode_transfer, encode_account, encode_transfer};
pub(crate) use codec::{put_compact_transfer, take_compact_transfer};
pub use codes::{CreateAccountResult, CreateTransferResult};
pub(crate) use machine::transfer_exists;
pub use machine::{MAX_BATCH_EVENTS, TIMESTAMP_MAX};
pub use types::{
    Account, AccountBalance, AccountFilter, AccountFilterFlags, AccountFlags, PendingState,
    Transfer, TransferFlags,
};
