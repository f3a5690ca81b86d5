//! Transfers between shards: K shards, each a `Ledger` with its own data
//! directory and redo log, and two-phase commit between them over a
//! message transport.
//!
//! A transfer whose accounts live on two shards is a transaction aggregate
//! kept by its coordinator, the debit account's shard (as CockroachDB keeps
//! a transaction record beside its first key): no extra process must stay
//! up for transfers to finish. Its events (`state.rs`) are logged in the
//! same commits as the ledger changes they describe, beside the ledger
//! (`Ledger::submit_transfers_with`), and its state is their fold.
//!
//! The protocol (`node.rs`), for transfer `t` of `amount` from account `D`
//! on shard A to account `C` on shard B, in ledger `L`:
//! 1. A, one commit: the debit leg, a pending transfer `t` from `D` to A's
//!    settlement account of `L` (`D`'s limits apply here), events
//!    `TransferInitiated, LegPrepared(A)`, and `Prepare` in the outbox.
//! 2. B, one commit: the credit leg, a pending transfer `t` from B's
//!    settlement account to `C` (`C`'s limits apply), the leg's record and
//!    a yes `Vote` in the outbox; or, if refused, the refusal's record and
//!    a no `Vote` as a reply.
//! 3. A, one commit: on yes, `LegPrepared(B), CommitDecided`, the post of
//!    the debit leg, `LegPosted(A)`, `Decision(commit)` in the outbox; on
//!    no, `LegRefused(B), AbortDecided`, the void of the debit leg,
//!    `LegVoided(A)`: aborted.
//! 4. B, one commit: the post of the credit leg, its record, the vote out
//!    of the outbox; `Done` as a reply.
//! 5. A, one commit: `LegPosted(B)`: committed.
//!
//! Money: a committed transfer moves `amount` from `D` to A's settlement
//! account and from B's settlement account to `C`; per ledger, the
//! settlement accounts of all shards net to zero once every transfer is
//! final. Nothing is ever created or lost: each shard's ledger is
//! double-entry by itself. (A settlement account's posted amounts only
//! grow: once they near `u128::MAX`, the legs that would overflow them are
//! refused with their `Overflows*` code.)
//!
//! Transports (`transport.rs`): in-process channels with a thread per shard
//! (`Cluster`), and a deterministic simulator (`sim.rs`) that loses,
//! duplicates, reorders and delays messages and crashes shards on a
//! power-loss file system.
//!
//! What a cluster refuses (`route.rs`): cross-shard transfers with flags,
//! linked chains across shards, closing transfers, reserved ids. Under
//! `SyncMode::Interval` or `Never` a shard syncs its log before anything
//! leaves it, so no other shard learns of a state a crash could take back;
//! under `Always` every commit is durable already.

mod api;
mod ids;
mod message;
mod node;
mod route;
pub mod sim;
mod state;
mod transport;

pub use api::{Cluster, ClusterOptions};
pub use ids::{Placement, ShardId, is_reserved, settle_id, settlement_account, settlement_shard};
pub use message::{Envelope, Message};
#[doc(hidden)]
pub use node::Sabotage;
pub use state::{Aggregate, Event, TransferState};
pub use transport::{ChannelTransport, Transport};
