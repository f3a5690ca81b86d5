//! `Ledger`: the double-entry ledger's public face, over one `Engine`.
//!
//! Writes (`create_accounts`, `create_transfers`, `expire_pending`) each
//! run as one `Engine::apply` call: inside the sequencer, against the latest
//! state, one event after another, logged as one logical record (the batch
//! itself, about 128 bytes an event) and group-committed. Hot accounts thus
//! cause no conflicts and no retries. Reads run at an engine snapshot, so
//! each read call, and every call on one `LedgerSnapshot`, sees whole
//! batches only.

use std::ops::Bound;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use super::clock::{Clock, SystemClock};
use bytes::Bytes;

use super::codec::{
    self, ACCOUNT, EXTRA, OP_CREATE_ACCOUNTS, OP_CREATE_TRANSFERS, OP_EXPIRE, OP_TRANSFERS_EXTRA,
    Rules, SETTLED, Settled, TRANSFER,
};
use super::codes::{CreateAccountResult, CreateTransferResult};
use super::history::{self, History, Item};
use super::machine::{MAX_BATCH_EVENTS, Machine, Shared, first_timestamp};
use super::types::{
    Account, AccountBalance, AccountFilter, AccountFilterFlags, AccountFlags, PendingState,
    Transfer, TransferFlags,
};
use crate::error::{Error, Result};
use crate::{Batch, Engine, Options, Replay, SetAside, Snapshot, Stats};

/// Options for `Ledger::open`.
#[derive(Debug, Clone)]
pub struct LedgerOptions {
    /// The storage core's options (`replay` is set by the ledger).
    pub engine: Options,
    /// Where batch timestamps come from. Default: the system clock.
    pub clock: Arc<dyn Clock>,
}

impl Default for LedgerOptions {
    fn default() -> Self {
        LedgerOptions {
            engine: Options::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

/// Re-executes the ledger's logical records on recovery.
#[derive(Debug)]
struct LedgerReplay {
    shared: Arc<Shared>,
}

fn malformed(what: &str) -> Error {
    Error::invalid(format!("malformed ledger record: {what}"))
}

impl Replay for LedgerReplay {
    fn layer(&self) -> &'static str {
        "ledger"
    }

    fn replay(&self, batch: &mut Batch<'_>, body: &[u8]) -> Result<()> {
        let (op, first_ts, events, trailer) =
            codec::decode_body(body).ok_or_else(|| malformed("bad length"))?;
        // As it ran when it was logged.
        let rules = Rules::of_body(body);
        match op {
            OP_CREATE_ACCOUNTS => {
                let accounts: Vec<Account> =
                    events.filter_map(|r| codec::decode_account(&r)).collect();
                run_accounts(batch, first_ts, &accounts, &self.shared, rules)?;
            }
            OP_CREATE_TRANSFERS => {
                let transfers: Vec<Transfer> =
                    events.filter_map(|r| codec::decode_transfer(&r)).collect();
                run_transfers(batch, first_ts, &transfers, &self.shared, rules)?;
            }
            OP_EXPIRE => {
                run_expire(batch, first_ts, &self.shared, rules)?;
            }
            OP_TRANSFERS_EXTRA => {
                let writes = codec::decode_extra(trailer).ok_or_else(|| malformed("bad extra"))?;
                let transfers: Vec<Transfer> =
                    events.filter_map(|r| codec::decode_transfer(&r)).collect();
                run_transfers(batch, first_ts, &transfers, &self.shared, rules)?;
                for (key, value) in writes {
                    match value {
                        Some(v) => batch.put(key, v)?,
                        None => batch.delete(key)?,
                    }
                }
            }
            _ => return Err(malformed("unknown op")),
        }
        Ok(())
    }
}

/// Runs `f`, a batch's work in the sequencer; if it fails, the batch is
/// dropped, and so must be what it did to the expiry hint (raised past
/// transfers that are still pending, they would never expire).
fn restoring_hint<R>(hint: &AtomicU64, f: impl FnOnce() -> Result<R>) -> Result<R> {
    let before = hint.load(std::sync::atomic::Ordering::Acquire);
    let out = f();
    if out.is_err() {
        hint.store(before, std::sync::atomic::Ordering::Release);
    }
    out
}

fn last_of(first_ts: u64, events: usize) -> u64 {
    first_ts + (events.max(1) as u64) - 1
}

/// Creates `accounts` (expiring what is due first); the same code runs live
/// and on replay.
fn execute_accounts(
    batch: &mut Batch<'_>,
    first_ts: u64,
    accounts: &[Account],
    shared: &Shared,
) -> Result<Vec<CreateAccountResult>> {
    run_accounts(batch, first_ts, accounts, shared, Rules::CURRENT)
}

/// `execute_accounts` under the rules of a logged record.
fn run_accounts(
    batch: &mut Batch<'_>,
    first_ts: u64,
    accounts: &[Account],
    shared: &Shared,
    rules: Rules,
) -> Result<Vec<CreateAccountResult>> {
    let mut m = Machine::with_capacity(batch, accounts.len(), shared);
    m.set_rules(rules);
    m.expire(first_ts);
    let results = m.create_accounts(first_ts, accounts);
    m.finish(last_of(first_ts, accounts.len()))?;
    Ok(results)
}

/// The fewest transfers whose state machine gets a helper thread to
/// append what the batch before queued for the transfer index: a thread
/// takes some 60 us to start, the machine about as long for 500 transfers.
const HELPER_MIN: usize = 512;

fn execute_transfers(
    batch: &mut Batch<'_>,
    first_ts: u64,
    transfers: &[Transfer],
    shared: &Shared,
) -> Result<Vec<CreateTransferResult>> {
    run_transfers(batch, first_ts, transfers, shared, Rules::CURRENT)
}

/// `execute_transfers`, under the rules of a logged record (older records
/// replay under the rules they ran under).
fn run_transfers(
    batch: &mut Batch<'_>,
    first_ts: u64,
    transfers: &[Transfer],
    shared: &Shared,
    rules: Rules,
) -> Result<Vec<CreateTransferResult>> {
    let mut m = Machine::with_capacity(batch, transfers.len(), shared);
    m.set_rules(rules);
    m.expire(first_ts);
    m.prefetch(transfers);
    // The state machine runs on this thread alone: a helper appends what
    // the batch before queued for the transfer index meanwhile, until the
    // machine is done (`history.rs`, "Deferred appends").
    let queued = shared.history.get().filter(|h| h.has_queued());
    let results = match queued {
        Some(history) if transfers.len() >= HELPER_MIN && !cfg!(loom) => {
            history.catch_up_beside(|| m.create_transfers(first_ts, transfers))
        }
        _ => m.create_transfers(first_ts, transfers),
    };
    m.finish(last_of(first_ts, transfers.len()))?;
    Ok(results)
}

/// Returns whether more may be due (`Machine::expire`), or `None` when
/// nothing was due: then the batch writes nothing, so that the engine logs
/// and syncs nothing (an idle ledger's `expire_pending` costs no sync).
fn execute_expire(batch: &mut Batch<'_>, now: u64, shared: &Shared) -> Result<Option<bool>> {
    let mut m = Machine::with_capacity(batch, 0, shared);
    let more = m.expire(now);
    if m.expired_nothing() {
        return Ok(None);
    }
    m.finish(now)?;
    Ok(Some(more))
}

/// `execute_expire` under the rules of a logged record.
fn run_expire(batch: &mut Batch<'_>, now: u64, shared: &Shared, rules: Rules) -> Result<bool> {
    let mut m = Machine::with_capacity(batch, 0, shared);
    m.set_rules(rules);
    let more = m.expire(now);
    m.finish(now)?;
    Ok(more)
}

/// What one write call did: where it landed in the commit order, the
/// timestamp of its first event (event `i` has `timestamp + i`), and one
/// result per event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply<R> {
    /// The engine commit ts of the call's record: calls apply in this order.
    pub commit_ts: u64,
    /// The ledger timestamp of the call's first event.
    pub timestamp: u64,
    /// One result per event, in input order.
    pub results: Vec<R>,
}

/// Runs a batch of events of type `E` with results `R`, live or on replay.
type Execute<E, R> = fn(&mut Batch<'_>, u64, &[E], &Shared) -> Result<Vec<R>>;

/// The double-entry ledger. `Send + Sync`: share it between threads.
#[derive(Debug)]
pub struct Ledger {
    engine: Engine,
    clock: Arc<dyn Clock>,
    /// The expiry hint and the state machine's kept caches, shared with
    /// the replay hook (`machine::Shared`).
    shared: Arc<Shared>,
    /// The accounts' transfer index (`history.rs`), also in `shared`.
    history: Arc<History>,
}

fn check_batch(len: usize) -> Result<()> {
    if len > MAX_BATCH_EVENTS {
        return Err(Error::invalid(format!(
            "a batch of {len} events is over the limit of {MAX_BATCH_EVENTS}"
        )));
    }
    Ok(())
}

impl Ledger {
    /// Opens the ledger in `dir` (created if needed), recovering every
    /// acknowledged batch.
    pub fn open(dir: impl AsRef<Path>, options: LedgerOptions) -> Result<Ledger> {
        let mut engine_options = options.engine;
        let shared = Arc::new(Shared::default());
        engine_options.replay = Some(Arc::new(LedgerReplay {
            shared: Arc::clone(&shared),
        }));
        let engine = Engine::open(dir, engine_options)?;
        // The transfer index, from the transfer records (failed ids' one
        // byte records decode to nothing).
        let mut builder = history::Builder::default();
        engine.for_each_latest_in(TRANSFER, |key, value| {
            let Some(id) = codec::parse_id_key(key) else {
                return;
            };
            if let Some(t) = value.and_then(|v| codec::decode_stored_transfer(id, v)) {
                let item = Item::new(t.timestamp, id);
                builder.add(t.debit_account_id, item);
                builder.add(t.credit_account_id, item);
            }
        });
        let history = Arc::new(builder.finish());
        // Nothing has run a live batch yet: this is the first set.
        let _ = shared.history.set(Arc::clone(&history));
        Ok(Ledger {
            engine,
            clock: options.clock,
            shared,
            history,
        })
    }

    /// Creates accounts: one result per account, in input order. The outer
    /// `Result` fails only when the engine does (I/O, poisoned).
    pub fn create_accounts(&self, accounts: &[Account]) -> Result<Vec<CreateAccountResult>> {
        Ok(self.submit_accounts(accounts)?.results)
    }

    /// `create_accounts`, also telling where the call landed.
    pub fn submit_accounts(&self, accounts: &[Account]) -> Result<Reply<CreateAccountResult>> {
        self.submit(
            accounts,
            OP_CREATE_ACCOUNTS,
            codec::encode_account,
            execute_accounts,
        )
    }

    /// Creates transfers: one result per transfer, in input order, each
    /// `Ok` or the first rule it broke. The whole call is one redo record,
    /// durable (under `SyncMode::Always`) when this returns.
    pub fn create_transfers(&self, transfers: &[Transfer]) -> Result<Vec<CreateTransferResult>> {
        Ok(self.submit_transfers(transfers)?.results)
    }

    /// `create_transfers`, also telling where the call landed.
    pub fn submit_transfers(&self, transfers: &[Transfer]) -> Result<Reply<CreateTransferResult>> {
        self.submit(
            transfers,
            OP_CREATE_TRANSFERS,
            codec::encode_transfer,
            execute_transfers,
        )
    }

    /// `submit_transfers`, and in the same commit (the same redo record)
    /// the writes `f` makes to the keys a layer above keeps beside the
    /// ledger (the cluster's transfer records and outbox). `f` runs inside
    /// the sequencer after the transfers, with their results, and reads
    /// and writes the latest state; if it fails, nothing of the call is
    /// written. Recovery applies the recorded writes again after
    /// re-executing the transfers, so `f` itself is not called then. An
    /// empty `transfers` still commits what `f` writes.
    pub fn submit_transfers_with<R>(
        &self,
        transfers: &[Transfer],
        f: impl FnOnce(&[CreateTransferResult], &mut Extra<'_, '_>) -> Result<R>,
    ) -> Result<(Reply<CreateTransferResult>, R)> {
        check_batch(transfers.len())?;
        let now = self.clock.now_ns();
        let (commit_ts, (timestamp, results, r)) = self.engine.apply(|batch| {
            restoring_hint(&self.shared.expiry_hint, || {
                let first_ts = first_timestamp(batch, now, transfers.len())?;
                let mut body = codec::encode_body(
                    OP_TRANSFERS_EXTRA,
                    first_ts,
                    transfers,
                    codec::encode_transfer,
                );
                let results = execute_transfers(batch, first_ts, transfers, &self.shared)?;
                let mut extra = Extra {
                    batch,
                    trailer: body,
                };
                let r = f(&results, &mut extra)?;
                body = extra.trailer;
                batch.log_as(body);
                Ok((first_ts, results, r))
            })
        })?;
        Ok((
            Reply {
                commit_ts,
                timestamp,
                results,
            },
            r,
        ))
    }

    /// Runs one batch of events through the sequencer as one logical record.
    fn submit<E, R>(
        &self,
        events: &[E],
        op: u8,
        encode: fn(&E, &mut [u8; codec::RECORD_BYTES]),
        execute: Execute<E, R>,
    ) -> Result<Reply<R>> {
        check_batch(events.len())?;
        if events.is_empty() {
            return Ok(Reply {
                commit_ts: self.engine.stats().visible_ts,
                timestamp: 0,
                results: Vec::new(),
            });
        }
        let now = self.clock.now_ns();
        // The batch's record is its input, known before it runs: the engine
        // logs it (and under `Always` starts its sync) first.
        let (commit_ts, (timestamp, results)) = self.engine.apply_logged(
            |batch| {
                let first_ts = first_timestamp(batch, now, events.len())?;
                Ok((codec::encode_body(op, first_ts, events, encode), first_ts))
            },
            |batch, first_ts| {
                restoring_hint(&self.shared.expiry_hint, || {
                    let results = execute(batch, first_ts, events, &self.shared)?;
                    Ok((first_ts, results))
                })
            },
        )?;
        Ok(Reply {
            commit_ts,
            timestamp,
            results,
        })
    }

    /// Voids the pending transfers whose timeout has passed by the clock
    /// now, all of them, oldest expiry first (in commits of at most 8,190
    /// each). Every write call does this first too, for up to 8,190 of
    /// them; call it to release reservations when no writes come. With
    /// nothing due it writes nothing (no record, no sync).
    pub fn expire_pending(&self) -> Result<()> {
        let now = self.clock.now_ns();
        loop {
            let (_, more) = self.engine.apply(|batch| {
                let now = first_timestamp(batch, now, 0)?;
                let expired = restoring_hint(&self.shared.expiry_hint, || {
                    execute_expire(batch, now, &self.shared)
                })?;
                let Some(more) = expired else {
                    return Ok(false);
                };
                batch.log_as(codec::encode_body::<Account>(
                    OP_EXPIRE,
                    now,
                    &[],
                    codec::encode_account,
                ));
                Ok(more)
            })?;
            if !more {
                return Ok(());
            }
        }
    }

    /// A consistent view of the whole ledger at one moment.
    pub fn snapshot(&self) -> LedgerSnapshot {
        LedgerSnapshot {
            snap: self.engine.snapshot(),
            history: Arc::clone(&self.history),
        }
    }

    /// The accounts with these ids that exist, in input order. Any number
    /// of ids (no batch limit: a read costs only what it returns).
    pub fn lookup_accounts(&self, ids: &[u128]) -> Result<Vec<Account>> {
        self.snapshot().lookup_accounts(ids)
    }

    /// The transfers with these ids that exist, in input order. Any
    /// number of ids, as `lookup_accounts`.
    pub fn lookup_transfers(&self, ids: &[u128]) -> Result<Vec<Transfer>> {
        self.snapshot().lookup_transfers(ids)
    }

    /// Where the pending transfers with these ids stand
    /// (`LedgerSnapshot::pending_states`).
    pub fn pending_states(&self, ids: &[u128]) -> Result<Vec<Option<PendingState>>> {
        self.snapshot().pending_states(ids)
    }

    /// An account's transfers that match `filter`.
    pub fn get_account_transfers(&self, filter: AccountFilter) -> Result<Vec<Transfer>> {
        self.snapshot().get_account_transfers(filter)
    }

    /// An account's balances after each of its transfers that match
    /// `filter` (only for accounts with `AccountFlags::HISTORY`).
    pub fn get_account_balances(&self, filter: AccountFilter) -> Result<Vec<AccountBalance>> {
        self.snapshot().get_account_balances(filter)
    }

    /// Writes a checkpoint of the storage core.
    pub fn checkpoint(&self) -> Result<()> {
        self.engine.checkpoint()
    }

    /// The storage core's counters.
    pub fn stats(&self) -> Stats {
        self.engine.stats()
    }

    /// The storage core underneath, for what the ledger lets through:
    /// syncs, checkpoints, version GC, counters and read-only snapshots.
    /// No writes: every record of a ledger is the work of its rules, and a
    /// write beside them could break them (move money without a transfer).
    pub fn engine(&self) -> LedgerEngine<'_> {
        LedgerEngine(&self.engine)
    }

    /// The storage core with its writes, which bypass every rule of the
    /// ledger: for tests that damage a ledger on purpose, never for use.
    #[doc(hidden)]
    pub fn engine_unchecked(&self) -> &Engine {
        &self.engine
    }

    /// The storage core, for the layers in this crate.
    pub(crate) fn core(&self) -> &Engine {
        &self.engine
    }
}

/// A ledger's storage core, without its writes (`Ledger::engine`). Each
/// method is `Engine`'s of the same name.
#[derive(Debug, Clone, Copy)]
pub struct LedgerEngine<'a>(&'a Engine);

impl LedgerEngine<'_> {
    /// A read-only view of the engine's keys at the current visible ts.
    pub fn snapshot(&self) -> Snapshot {
        self.0.snapshot()
    }

    /// Writes everything buffered in the log and syncs it.
    pub fn sync(&self) -> Result<()> {
        self.0.sync()
    }

    /// Writes a checkpoint and removes the log segments it makes needless.
    pub fn checkpoint(&self) -> Result<()> {
        self.0.checkpoint()
    }

    /// Prunes every key now: the full version GC sweep.
    pub fn gc(&self) {
        self.0.gc();
    }

    /// The damaged checkpoints `open` recovered around.
    pub fn set_aside(&self) -> &[SetAside] {
        self.0.set_aside()
    }

    /// What `open` cut off the end of the log.
    pub fn recovery_cuts(&self) -> &[crate::wal::TailCut] {
        self.0.recovery_cuts()
    }

    /// Why the engine is poisoned, or `None` while it is not.
    pub fn poisoned_by(&self) -> Option<String> {
        self.0.poisoned_by()
    }

    /// The engine's counters.
    pub fn stats(&self) -> Stats {
        self.0.stats()
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.0.dir()
    }
}

/// The keys a layer above keeps beside the ledger, inside one
/// `Ledger::submit_transfers_with` call. Keys live in their own namespace
/// (no ledger record can be reached through them), start with a byte
/// below 0x80 and are 1 to 255 bytes long (`InvalidArgument` otherwise);
/// reads see the latest state, this call's own writes included.
pub struct Extra<'a, 'b> {
    batch: &'a mut Batch<'b>,
    /// The call's logical record so far; writes are appended to it.
    trailer: Vec<u8>,
}

impl std::fmt::Debug for Extra<'_, '_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Extra").finish_non_exhaustive()
    }
}

/// Where extra key `key` is stored: its first byte with the top bit set
/// (the ledger's own keys all start below 0x80), so that each family of
/// extra keys (by first byte) keeps its own key order in the index and a
/// scan of one does not sort the others.
fn extra_key(key: &[u8]) -> Result<Vec<u8>> {
    if key.is_empty() {
        return Err(Error::invalid("an extra key must not be empty"));
    }
    if key.len() > 255 {
        return Err(Error::invalid(format!(
            "an extra key of {} bytes is over 255",
            key.len()
        )));
    }
    let mut k = key.to_vec();
    if let Some(first) = k.first_mut() {
        if *first >= EXTRA {
            return Err(Error::invalid(format!(
                "an extra key must start with a byte below {EXTRA:#x}, not {first:#x}"
            )));
        }
        *first |= EXTRA;
    }
    Ok(k)
}

/// A range of stored keys.
type KeyBounds = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// The stored key range of the extra keys starting with `prefix` (every
/// extra key for an empty prefix).
fn extra_range(prefix: &[u8]) -> Result<KeyBounds> {
    if prefix.is_empty() {
        return Ok((Bound::Included(vec![EXTRA]), Bound::Unbounded));
    }
    let lower = extra_key(prefix)?;
    let upper = prefix_end(&lower);
    Ok((Bound::Included(lower), upper))
}

/// An extra key as the caller named it.
fn extra_name(stored: &Bytes) -> Bytes {
    let mut k = stored.to_vec();
    if let Some(first) = k.first_mut() {
        *first &= !EXTRA;
    }
    Bytes::from(k)
}

impl Extra<'_, '_> {
    /// The newest value of `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        Ok(self.batch.get(extra_key(key)?))
    }

    /// Up to `limit` keys starting with `prefix` (without the namespace
    /// byte) and their newest values, in key order.
    pub fn scan_prefix(&self, prefix: &[u8], limit: usize) -> Result<Vec<(Bytes, Bytes)>> {
        Ok(self
            .batch
            .scan_latest(extra_range(prefix)?, limit)
            .into_iter()
            .map(|(k, v)| (extra_name(&k), v))
            .collect())
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let k = extra_key(key)?;
        self.batch.put(&k, value)?;
        codec::encode_extra(&mut self.trailer, &k, Some(value));
        Ok(())
    }

    /// Deletes `key`.
    pub fn delete(&mut self, key: &[u8]) -> Result<()> {
        let k = extra_key(key)?;
        self.batch.delete(&k)?;
        codec::encode_extra(&mut self.trailer, &k, None);
        Ok(())
    }
}

/// The exclusive upper bound of the keys starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Bound<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Bound::Excluded(end);
        }
    }
    Bound::Unbounded
}

/// A history entry: timestamp, transfer, balances after it (if kept).
type HistoryEntry = (u64, Transfer, Option<[u128; 4]>);
/// A history entry as found: timestamp, transfer id, balances (if kept).
type Found = (u64, u128, Option<[u128; 4]>);
/// The entries a history read copies from the transfer index at a time
/// (`LedgerSnapshot::history`).
const PAGE: usize = 256;

/// The ledger's reads at one engine snapshot: every call sees the same
/// whole batches.
#[derive(Debug, Clone)]
pub struct LedgerSnapshot {
    snap: Snapshot,
    history: Arc<History>,
}

impl LedgerSnapshot {
    /// The engine timestamp of this snapshot.
    pub fn ts(&self) -> u64 {
        self.snap.ts()
    }

    fn account(&self, id: u128) -> Result<Option<Account>> {
        self.snap.get_with(codec::id_key(ACCOUNT, id), |v| {
            v.and_then(|v| codec::decode_stored_account(id, v))
        })
    }

    fn transfer(&self, id: u128) -> Result<Option<Transfer>> {
        self.snap.get_with(codec::id_key(TRANSFER, id), |v| {
            v.and_then(|v| codec::decode_stored_transfer(id, v))
        })
    }

    /// The accounts with these ids that exist, in input order. Any number
    /// of ids (no batch limit: a read costs only what it returns).
    pub fn lookup_accounts(&self, ids: &[u128]) -> Result<Vec<Account>> {
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            if let Some(a) = self.account(id)? {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// The transfers with these ids that exist, in input order. Any
    /// number of ids, as `lookup_accounts`.
    pub fn lookup_transfers(&self, ids: &[u128]) -> Result<Vec<Transfer>> {
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            if let Some(t) = self.transfer(id)? {
                out.push(t);
            }
        }
        Ok(out)
    }

    /// For each id, in input order, where the pending transfer with that
    /// id stands; `None` when no transfer has the id or it is not a
    /// pending one.
    pub fn pending_states(&self, ids: &[u128]) -> Result<Vec<Option<PendingState>>> {
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            let pending = self
                .transfer(id)?
                .is_some_and(|t| t.flags.contains(TransferFlags::PENDING));
            out.push(if pending {
                let settled = self.snap.get_with(codec::id_key(SETTLED, id), |v| {
                    v.and_then(|v| v.first().copied()).map(Settled::from_byte)
                })?;
                Some(match settled {
                    None => PendingState::Pending,
                    Some(Some(Settled::Posted)) => PendingState::Posted,
                    Some(Some(Settled::Voided)) => PendingState::Voided,
                    Some(Some(Settled::Expired)) => PendingState::Expired,
                    Some(None) => {
                        return Err(Error::corruption(
                            self.snap.dir(),
                            0,
                            format!(
                                "pending transfer {id} has a settlement record of no known kind"
                            ),
                        ));
                    }
                })
            } else {
                None
            });
        }
        Ok(out)
    }

    /// Every account, in id order (for audits and the command's checks).
    pub fn accounts(&self) -> Result<Vec<Account>> {
        Ok(self
            .snap
            .scan_prefix([ACCOUNT])?
            .filter_map(|(k, v)| {
                let id = codec::parse_id_key(&k)?;
                codec::decode_stored_account(id, &v)
            })
            .collect())
    }

    /// The value of an extra key (see `Extra`) at this snapshot.
    pub fn extra_get(&self, key: &[u8]) -> Result<Option<Bytes>> {
        self.snap.get(extra_key(key)?)
    }

    /// The extra keys starting with `prefix` (namespace byte removed) and
    /// their values at this snapshot, in key order.
    pub fn extra_scan_prefix(&self, prefix: &[u8]) -> Result<Vec<(Bytes, Bytes)>> {
        Ok(self
            .snap
            .scan(extra_range(prefix)?)?
            .map(|(k, v)| (extra_name(&k), v))
            .collect())
    }

    /// The timestamp range of `filter`, or `None` when it breaks one of
    /// TigerBeetle's constraints (and so matches nothing).
    fn filter_range(filter: &AccountFilter) -> Option<(u64, u64)> {
        let sides = AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS;
        let max = if filter.timestamp_max == 0 {
            u64::MAX
        } else {
            filter.timestamp_max
        };
        let broken = filter.limit == 0
            || !filter.flags.intersects(sides)
            || AccountFilterFlags::from_bits(filter.flags.bits()).is_none()
            || filter.account_id == 0
            || filter.account_id == u128::MAX
            // TigerBeetle's bound for a filter's timestamps: below 2^63.
            || filter.timestamp_min > super::TIMESTAMP_MAX
            || filter.timestamp_max > super::TIMESTAMP_MAX
            || filter.timestamp_min > max;
        (!broken).then_some((filter.timestamp_min, max))
    }

    /// The history records of `filter`'s account in its range (kept for
    /// `HISTORY` accounts, with their balances), by time.
    fn recorded(&self, filter: &AccountFilter, (min, max): (u64, u64)) -> Result<Vec<Found>> {
        // Under both key forms (a ledger written before history keys were
        // spread over families has the old).
        let mut entries = Vec::new();
        for key in [codec::history_key, codec::history_key_old] {
            let lower = key(filter.account_id, min);
            let upper = key(filter.account_id, max);
            entries.extend(self.snap.scan(lower..=upper)?.filter_map(|(k, v)| {
                let ts = codec::parse_history_ts(&k)?;
                let (id, balances) = codec::decode_history(&v)?;
                Some((ts, id, balances))
            }));
        }
        entries.sort_by_key(|&(ts, ..)| ts);
        Ok(entries)
    }

    /// The entries of `filter` (from the transfer index, or with
    /// `balances` from the history records) that pass it, in the order
    /// asked: (timestamp, transfer, balances if asked and stored).
    fn history(&self, filter: &AccountFilter, balances: bool) -> Result<Vec<HistoryEntry>> {
        let Some((min, max)) = Self::filter_range(filter) else {
            return Ok(Vec::new());
        };
        let reversed = filter.flags.contains(AccountFilterFlags::REVERSED);
        let mut out = Vec::new();
        if balances {
            let mut entries = self.recorded(filter, (min, max))?;
            if reversed {
                entries.reverse();
            }
            self.keep_matching(filter, entries, &mut out)?;
            return Ok(out);
        }
        // From the transfer index, a page at a time in the order asked,
        // until `limit` match: a small limit reads a few entries of an
        // account of millions. An account has one entry per timestamp (a
        // transfer's two accounts differ), so the next page starts past
        // the last one read.
        let (mut lo, mut hi) = (min, max);
        loop {
            let page = self.history.page(filter.account_id, lo, hi, reversed, PAGE);
            let (full, last) = (page.len() == PAGE, page.last().map(Item::ts));
            let entries = page.iter().map(|item| (item.ts(), item.id(), None));
            self.keep_matching(filter, entries, &mut out)?;
            let next = match last {
                Some(ts) if full && out.len() < filter.limit as usize => {
                    if reversed {
                        ts.checked_sub(1).map(|ts| (lo, ts))
                    } else {
                        ts.checked_add(1).map(|ts| (ts, hi))
                    }
                }
                _ => None,
            };
            match next {
                Some((l, h)) if l <= h => (lo, hi) = (l, h),
                _ => return Ok(out),
            }
        }
    }

    /// Appends to `out` the transfers of `entries` (in the order asked)
    /// that pass `filter`, until it holds `limit`. An entry whose
    /// transfer this snapshot does not find is skipped: the transfer
    /// index may hold entries of a batch after this snapshot (appended
    /// before it became visible).
    fn keep_matching(
        &self,
        filter: &AccountFilter,
        entries: impl IntoIterator<Item = Found>,
        out: &mut Vec<HistoryEntry>,
    ) -> Result<()> {
        for (ts, id, balances) in entries {
            if out.len() >= filter.limit as usize {
                break;
            }
            let Some(t) = self.transfer(id)? else {
                continue;
            };
            let side_ok = (filter.flags.contains(AccountFilterFlags::DEBITS)
                && t.debit_account_id == filter.account_id)
                || (filter.flags.contains(AccountFilterFlags::CREDITS)
                    && t.credit_account_id == filter.account_id);
            let fields_ok = (filter.user_data_128 == 0 || t.user_data_128 == filter.user_data_128)
                && (filter.user_data_64 == 0 || t.user_data_64 == filter.user_data_64)
                && (filter.user_data_32 == 0 || t.user_data_32 == filter.user_data_32)
                && (filter.code == 0 || t.code == filter.code);
            if side_ok && fields_ok {
                out.push((ts, t, balances));
            }
        }
        Ok(())
    }

    /// An account's transfers that match `filter`: by timestamp range,
    /// debits and/or credits, user data and code, at most `limit`, oldest
    /// first or (with `REVERSED`) newest first. An invalid filter (no side,
    /// limit 0, min after max, a reserved account id) matches nothing.
    pub fn get_account_transfers(&self, filter: AccountFilter) -> Result<Vec<Transfer>> {
        Ok(self
            .history(&filter, false)?
            .into_iter()
            .map(|(_, t, _)| t)
            .collect())
    }

    /// An account's balances after each of its transfers that match
    /// `filter`; empty unless the account has `AccountFlags::HISTORY`.
    pub fn get_account_balances(&self, filter: AccountFilter) -> Result<Vec<AccountBalance>> {
        let Some(account) = self.account(filter.account_id)? else {
            return Ok(Vec::new());
        };
        if !account.flags.contains(AccountFlags::HISTORY) {
            return Ok(Vec::new());
        }
        Ok(self
            .history(&filter, true)?
            .into_iter()
            .filter_map(|(ts, _, balances)| {
                let [dp, dpo, cp, cpo] = balances?;
                Some(AccountBalance {
                    debits_pending: dp,
                    debits_posted: dpo,
                    credits_pending: cp,
                    credits_posted: cpo,
                    timestamp: ts,
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SyncMode;
    use crate::ledger::TransferFlags;

    fn open(dir: &Path) -> Ledger {
        let options = LedgerOptions {
            engine: Options {
                sync: SyncMode::Never,
                ..Options::default()
            },
            ..LedgerOptions::default()
        };
        Ledger::open(dir, options).expect("open")
    }

    /// History records written before history keys were spread over
    /// families (first byte `h`) are still found, in time order with the
    /// new ones, live and after a reopen: the balances of a `HISTORY`
    /// account (its transfers come from the transfer index either way).
    #[test]
    fn history_reads_entries_under_the_old_key_form_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        let account = |id, flags| Account {
            id,
            ledger: 1,
            code: 1,
            flags,
            ..Account::default()
        };
        let transfer = |id, amount| Transfer {
            id,
            debit_account_id: 1,
            credit_account_id: 2,
            amount,
            ledger: 1,
            code: 1,
            ..Transfer::default()
        };
        let filter = |flags| AccountFilter {
            account_id: 1,
            limit: 10,
            flags: AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS | flags,
            ..AccountFilter::default()
        };
        let debits = |l: &Ledger, flags| -> Vec<u128> {
            let found = l.get_account_balances(filter(flags)).expect("balances");
            found.iter().map(|b| b.debits_posted).collect()
        };
        let ids = |l: &Ledger| -> Vec<u128> {
            let found = l.get_account_transfers(filter(AccountFilterFlags::empty()));
            found.expect("transfers").iter().map(|t| t.id).collect()
        };
        {
            let l = open(dir.path());
            let accounts = [
                account(1, AccountFlags::HISTORY),
                account(2, AccountFlags::empty()),
            ];
            l.create_accounts(&accounts).expect("accounts");
            for id in 10..13 {
                l.create_transfers(&[transfer(id, id - 9)])
                    .expect("transfers");
            }
            // Move transfer 11's record of account 1 to the old key form.
            let ts = l.lookup_transfers(&[11]).expect("lookup")[0].timestamp;
            let new = codec::history_key(1, ts);
            let value = l.engine().snapshot().get(new).expect("get").expect("entry");
            let mut tx = l.core().begin();
            tx.delete(new).expect("delete");
            tx.put(codec::history_key_old(1, ts), &value).expect("put");
            tx.commit().expect("commit");
            assert_eq!(debits(&l, AccountFilterFlags::empty()), [1, 3, 6]);
            assert_eq!(debits(&l, AccountFilterFlags::REVERSED), [6, 3, 1]);
            assert_eq!(ids(&l), [10, 11, 12]);
        }
        let l = open(dir.path());
        assert_eq!(debits(&l, AccountFilterFlags::empty()), [1, 3, 6]);
        assert_eq!(ids(&l), [10, 11, 12]);
    }

    /// A record logged before `codec::RULES_2` replays under the rule it
    /// ran under: there a void of `u128::MAX` voided the whole pending
    /// amount (now `ExceedsPendingTransferAmount`). Without the rule bit,
    /// the reopened ledger would hold the reservation again and lose the
    /// void (tried).
    #[test]
    fn a_record_logged_under_the_old_void_rule_replays_under_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let account = |id| Account {
            id,
            ledger: 1,
            code: 1,
            ..Account::default()
        };
        let pending = Transfer {
            id: 10,
            debit_account_id: 1,
            credit_account_id: 2,
            amount: 30,
            ledger: 1,
            code: 1,
            flags: TransferFlags::PENDING,
            ..Transfer::default()
        };
        let void_max = Transfer {
            id: 11,
            pending_id: 10,
            amount: u128::MAX,
            flags: TransferFlags::VOID_PENDING_TRANSFER,
            ..Transfer::default()
        };
        let reserved = |l: &Ledger| l.lookup_accounts(&[1]).expect("lookup")[0].debits_pending;
        {
            let l = open(dir.path());
            l.create_accounts(&[account(1), account(2)])
                .expect("accounts");
            l.create_transfers(&[pending]).expect("pending");
            // As a build before the rule bit logged and ran it.
            let now = l.clock.now_ns();
            let (_, results) = l
                .engine
                .apply_logged(
                    |batch| {
                        let first_ts = first_timestamp(batch, now, 1)?;
                        let mut body = codec::encode_body(
                            OP_CREATE_TRANSFERS,
                            first_ts,
                            &[void_max],
                            codec::encode_transfer,
                        );
                        body[0] &= !codec::RULES_2;
                        Ok((body, first_ts))
                    },
                    |batch, first_ts| {
                        let rules = Rules {
                            void_max_whole: true,
                            ..Rules::CURRENT
                        };
                        run_transfers(batch, first_ts, &[void_max], &l.shared, rules)
                    },
                )
                .expect("old void");
            assert_eq!(results, [CreateTransferResult::Ok]);
            assert_eq!(reserved(&l), 0);
        }
        let l = open(dir.path());
        assert_eq!(reserved(&l), 0, "the old void replays as it ran");
        let stored = l.lookup_transfers(&[11]).expect("lookup");
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].amount, 30);
        // Today's rule, live, refuses the same void.
        l.create_transfers(&[Transfer {
            id: 13,
            amount: 5,
            ..pending
        }])
        .expect("pending");
        let again = Transfer {
            id: 14,
            pending_id: 13,
            ..void_max
        };
        assert_eq!(
            l.create_transfers(&[again]).expect("void"),
            [CreateTransferResult::ExceedsPendingTransferAmount]
        );
    }

    const NS: u64 = 1_000_000_000;
    const T0: u64 = 1_700_000_000 * NS;

    fn open_at(dir: &Path, clock: &Arc<crate::ledger::ManualClock>) -> Ledger {
        let options = LedgerOptions {
            engine: Options {
                sync: SyncMode::Never,
                ..Options::default()
            },
            clock: Arc::clone(clock) as Arc<dyn Clock>,
        };
        Ledger::open(dir, options).expect("open")
    }

    fn account(id: u128, flags: crate::ledger::AccountFlags) -> Account {
        Account {
            id,
            ledger: 1,
            code: 1,
            flags,
            ..Account::default()
        }
    }

    fn pending(id: u128, debit: u128, credit: u128, timeout: u32) -> Transfer {
        Transfer {
            id,
            debit_account_id: debit,
            credit_account_id: credit,
            amount: 1,
            ledger: 1,
            code: 1,
            timeout,
            flags: TransferFlags::PENDING,
            ..Transfer::default()
        }
    }

    fn expiry_keys(l: &Ledger) -> usize {
        let snap = l.engine().snapshot();
        snap.scan_prefix([codec::EXPIRY]).expect("scan").count()
    }

    /// Expiry keys of the form written before session 16 (25 bytes, no
    /// timestamp), as a checkpoint of that time holds them, still expire;
    /// 8,191 of them (more than one batch voids) hold back neither each
    /// other nor the transfers made since; a post of one of them leaves its
    /// key to be cleared when it comes due. Without the old form parsed,
    /// none of them would expire, and neither would the new one (tried).
    #[test]
    fn expiry_keys_of_the_old_form_from_a_checkpoint_expire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(crate::ledger::ManualClock::new(T0));
        let none = crate::ledger::AccountFlags::empty();
        let old: Vec<u128> = (0..8_191).map(|i| 10_000 + i).collect();
        {
            let l = open_at(dir.path(), &clock);
            l.create_accounts(&[account(1, none), account(2, none)])
                .expect("accounts");
            for ids in old.chunks(8_000) {
                let batch: Vec<Transfer> = ids.iter().map(|&id| pending(id, 1, 2, 1)).collect();
                assert!(
                    l.create_transfers(&batch)
                        .expect("pending")
                        .iter()
                        .all(|r| *r == CreateTransferResult::Ok)
                );
            }
            // Rewrite their keys in the old form, then checkpoint them.
            let mut tx = l.core().begin();
            for p in l.lookup_transfers(&old).expect("lookup") {
                let at = p.timestamp + NS;
                tx.delete(codec::expiry_key(at, p.timestamp, p.id))
                    .expect("delete");
                tx.put(codec::legacy_expiry_key(at, p.id), []).expect("put");
            }
            tx.commit().expect("commit");
            // One posted before its expiry: its old key stays behind.
            let post = Transfer {
                id: 50_000,
                pending_id: old[0],
                amount: u128::MAX,
                flags: TransferFlags::POST_PENDING_TRANSFER,
                ..Transfer::default()
            };
            assert_eq!(
                l.create_transfers(&[post]).expect("post"),
                [CreateTransferResult::Ok]
            );
            l.engine().checkpoint().expect("checkpoint");
            assert_eq!(expiry_keys(&l), old.len());
        }
        clock.advance_secs(10);
        let l = open_at(dir.path(), &clock);
        let new = pending(99_999, 1, 2, 1);
        assert_eq!(
            l.create_transfers(&[new]).expect("new"),
            [CreateTransferResult::Ok]
        );
        clock.advance_secs(5);
        l.expire_pending().expect("expire");
        let states = l.pending_states(&old).expect("states");
        assert_eq!(states[0], Some(PendingState::Posted));
        let expired = states
            .iter()
            .filter(|s| **s == Some(PendingState::Expired))
            .count();
        assert_eq!(expired, old.len() - 1);
        assert_eq!(
            l.pending_states(&[99_999]).expect("state"),
            [Some(PendingState::Expired)]
        );
        let a = l.lookup_accounts(&[1]).expect("lookup")[0];
        assert_eq!((a.debits_pending, a.debits_posted), (0, 1));
        assert_eq!(expiry_keys(&l), 0, "every key, of either form, is gone");
    }

    /// A record logged before `codec::RULES_3` replays in the tie order it
    /// ran in: there pending transfers that expire at the same time were
    /// released by id. 8,191 expire at once here, in 4,095 pairs of equal
    /// expiry; the cut at 8,190 falls inside the last pair, and only the
    /// release of B's pending transfer (the lower id, the later one made)
    /// lets B pay. Replayed in today's order, the acknowledged payment
    /// would be refused and gone after the reopen (tried).
    #[test]
    fn a_record_logged_under_the_old_expiry_order_replays_in_it() {
        use crate::ledger::AccountFlags;
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = Arc::new(crate::ledger::ManualClock::new(T0));
        let plain = |id, debit, credit, amount| Transfer {
            id,
            debit_account_id: debit,
            credit_account_id: credit,
            amount,
            ledger: 1,
            code: 1,
            ..Transfer::default()
        };
        let ok = |r: Vec<CreateTransferResult>| r.iter().all(|r| *r == CreateTransferResult::Ok);
        let pay = plain(9_000_000, 2, 3, 4_095);
        let setup = |l: &Ledger| {
            let none = AccountFlags::empty();
            let limited = AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS;
            l.create_accounts(&[
                account(1, none),
                account(2, limited),
                account(3, none),
                account(4, none),
            ])
            .expect("accounts");
            assert!(ok(l
                .create_transfers(&[plain(1, 4, 2, 4_095)])
                .expect("fund")));
            // A's at t, then B's a second later with half the timeout:
            // A's i-th and B's i-th expire at once.
            let a: Vec<Transfer> = (0..4_096)
                .map(|i| pending(2_000_000 + i, 1, 3, 2))
                .collect();
            assert!(ok(l.create_transfers(&a).expect("a")));
            let t = l.lookup_transfers(&[a[0].id]).expect("lookup")[0].timestamp;
            clock.set(t + NS);
            let mut b = vec![plain(2, 4, 3, 1)];
            b.extend((1..4_096).map(|i| pending(1_000 + i, 2, 3, 1)));
            assert!(ok(l.create_transfers(&b).expect("b")));
            clock.advance_secs(100);
        };
        {
            let l = open_at(dir.path(), &clock);
            setup(&l);
            // As a build before the rule bit logged and ran it.
            let now = l.clock.now_ns();
            let (_, results) = l
                .engine
                .apply_logged(
                    |batch| {
                        let first_ts = first_timestamp(batch, now, 1)?;
                        let mut body = codec::encode_body(
                            OP_CREATE_TRANSFERS,
                            first_ts,
                            &[pay],
                            codec::encode_transfer,
                        );
                        body[0] &= !codec::RULES_3;
                        Ok((body, first_ts))
                    },
                    |batch, first_ts| {
                        let rules = Rules {
                            expiry_by_id: true,
                            ..Rules::CURRENT
                        };
                        run_transfers(batch, first_ts, &[pay], &l.shared, rules)
                    },
                )
                .expect("old payment");
            assert_eq!(results, [CreateTransferResult::Ok]);
        }
        let l = open_at(dir.path(), &clock);
        assert_eq!(l.lookup_transfers(&[pay.id]).expect("lookup").len(), 1);
        let b = l.lookup_accounts(&[2]).expect("lookup")[0];
        assert_eq!((b.debits_posted, b.debits_pending), (4_095, 0));
        // Today's order, live, releases A's of the last pair instead.
        let today = tempfile::tempdir().expect("tempdir");
        clock.set(T0);
        let l = open_at(today.path(), &clock);
        setup(&l);
        assert_eq!(
            l.create_transfers(&[pay]).expect("pay"),
            [CreateTransferResult::ExceedsCredits]
        );
    }
}
