//! The ledger's state machine: executes one batch of accounts or transfers,
//! one event after another, against the latest state, inside the engine's
//! sequencer (`Engine::apply`), and again identically when recovery replays
//! the batch's logical record. It must therefore be deterministic in (state,
//! body): the body carries the batch's first timestamp, event `i` gets
//! `first + i`, and nothing else from outside is read.
//!
//! Each event is checked against every rule before it changes anything, so
//! a single event applies whole or not at all. A linked chain may apply some
//! events and then fail: every change made since the chain began is undone
//! from the undo log, so the chain applies whole or not at all too. At the
//! end, the batch's changes become writes of the batch (one record, one
//! commit ts).
//!
//! Invariants after every event: for every account,
//! `debits_pending + debits_posted` and `credits_pending + credits_posted`
//! fit in a u128 and respect the account's limit flags; every transfer
//! added the same amount to a debit side and to a credit side.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::{Arc, OnceLock};

use super::codec::{
    self, ACCOUNT, EXPIRY, META_MAX_ID, META_TS, Rules, SETTLED, Settled, TRANSFER,
};
use super::codes::{CreateAccountResult as AR, CreateTransferResult as TR};
use super::history::{History, Item};
use super::slab::{Entry, IdSlab};
use super::types::{Account, AccountFlags, Transfer, TransferFlags};
use crate::Batch;
use crate::error::{Error, Result};
use crate::mvcc::{KeyHasher, OnceWrites, Spares};

/// A map by id: ids are not chosen by an attacker of this process's
/// hash seed, and SipHash costs more than the rest of a lookup.
type IdMap<V> = HashMap<u128, V, BuildHasherDefault<KeyHasher>>;

/// The most events one call may carry.
pub const MAX_BATCH_EVENTS: usize = 1 << 16;
/// The most pending transfers one batch expires; the rest wait for the
/// next batch (a post or void of them is refused as expired meanwhile).
const MAX_EXPIRIES_PER_BATCH: usize = 8190;
const NS_PER_S: u64 = 1_000_000_000;
/// TigerBeetle's `imported` flag bits, which mvledger does not support
/// (`ReservedFlag`).
const ACCOUNT_IMPORTED: u16 = 1 << 4;
const TRANSFER_IMPORTED: u16 = 1 << 8;
/// Batches smaller than this look their state up event by event (after
/// one pass that brings it into the cache, `Batch::warm_many`): bulk
/// lookups pay for themselves only over many keys.
const PREFETCH_MIN: usize = 64;

/// Batches writing at least this many records (accounts, transfers,
/// history entries) build them on two threads (`Machine::finish`): a
/// thread's start costs about 100 us here, a record 50 to 100 ns.
const PARALLEL_RECORDS: usize = 4096;

/// Accounts encoded at a time when a batch writes them (`put_accounts`).
const ACCOUNT_CHUNK: usize = 256;
/// How many writes ahead `put_accounts` asks for a spare buffer's lines.
const SPARE_AHEAD: usize = 8;

/// One change, remembered so that a failed linked chain can be undone.
#[derive(Debug)]
enum Undo {
    /// The account's cached state before the change (`None`: it did not
    /// exist), by its position in `Machine::accounts`.
    Account(usize, Option<Account>),
    Transfer(u128),
    Settled(u128),
    History,
    ExpiryAdded,
    ExpiryRemoved,
}

/// A history entry to write: the account's entry for a transfer, with the
/// account's balances after it when the account has `HISTORY` (an index
/// into `Machine::balances`).
#[derive(Debug, Clone, Copy)]
struct HistoryEntry {
    account: u128,
    transfer_id: u128,
    ts: u64,
    balances: Option<usize>,
}

/// An account as the batch sees it (`account: None`: known not to
/// exist), and whether the batch changed it.
#[derive(Debug, Clone, Copy)]
struct Cached {
    account: Option<Account>,
    dirty: bool,
}

/// What a transfer id holds.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Transfer(Transfer),
    Failed,
    Empty,
}

/// The batch's view of the ledger and its pending changes.
pub(crate) struct Machine<'b, 'i> {
    batch: &'b mut Batch<'i>,
    /// Accounts read or changed in this batch.
    accounts: IdSlab<Cached>,
    /// The transfers this batch created, in event order.
    transfers: IdSlab<Transfer>,
    settled: IdMap<Settled>,
    /// The history entries to write, in event order.
    history: Vec<HistoryEntry>,
    /// The balances of the history entries of accounts with `HISTORY`.
    balances: Vec<Account>,
    /// (expires_at, timestamp, id) of each pending transfer's expiry.
    expiry_added: Vec<(u64, u64, u128)>,
    /// The same of each expiry key to delete, its timestamp `None` for a
    /// key of the form written before session 16
    /// (`codec::legacy_expiry_key`).
    expiry_removed: Vec<(u64, Option<u64>, u128)>,
    failed: IdMap<TR>,
    /// What transfer ids held when the batch began, for the ids `prefetch`
    /// looked up.
    stored: IdSlab<Slot>,
    /// The highest transfer id stored when the batch began (`None`: not
    /// known, in a ledger written before it was kept). An id above it
    /// holds nothing, without a lookup: ids that grow (as TigerBeetle
    /// advises, for time-ordered ids) skip a cache miss each.
    max_stored: Option<u128>,
    /// The rules the batch runs under (`set_rules`; older ones on replay
    /// of older records only).
    rules: Rules,
    undo: Vec<Undo>,
    /// `prefetch`'s lists of keys and ids, kept with the caches above.
    keys: Vec<[u8; 17]>,
    named: Vec<u128>,
    /// The expiry hint, and where the caches go back to (`finish`).
    shared: &'b Shared,
    /// Whether the caches are the kept ones (`Scratch`), to give back.
    kept: bool,
}

/// What a ledger's batches share, live and on replay (one batch at a time:
/// they run in the sequencer).
#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// A lower bound of every pending transfer's expiry time (see
    /// `Machine::expire`).
    pub(crate) expiry_hint: AtomicU64,
    /// The machine's caches between batches, emptied (`Scratch`).
    scratch: parking_lot::Mutex<Scratch>,
    /// The accounts' transfer index, once `Ledger::open` has built it:
    /// live batches append to it, replayed ones (before it exists) not.
    pub(crate) history: OnceLock<Arc<History>>,
}

/// The room of a machine's caches, kept from one batch to the next. A
/// batch of 8,190 transfers fills about 8 MB of them; allocated and freed
/// per batch, that memory went back to the system and came again page by
/// page, each page a fault (called from a program's main thread, glibc's
/// heap gave back its top at every free: 15% of a batch's time).
#[derive(Debug, Default)]
struct Scratch {
    accounts: IdSlab<Cached>,
    transfers: IdSlab<Transfer>,
    history: Vec<HistoryEntry>,
    stored: IdSlab<Slot>,
    keys: Vec<[u8; 17]>,
    named: Vec<u128>,
}

/// The events of a batch that runs in the kept caches: a bigger one (up
/// to `MAX_BATCH_EVENTS`) gets caches of its own, so that what is kept
/// stays at the size of the usual batch; so does a small one (under
/// `PREFETCH_MIN`), whose few allocations cost less than emptying the
/// kept ones (hashbrown's `clear` writes every control byte).
const SCRATCH_EVENTS: std::ops::RangeInclusive<usize> = PREFETCH_MIN..=16_384;

/// The highest timestamp the ledger gives out: 2^63 - 1, as in
/// TigerBeetle (whose timestamps keep the top bit clear).
pub const TIMESTAMP_MAX: u64 = (1 << 63) - 1;

/// The timestamp the first of a batch's `events` gets, given the clock:
/// never at or before the last one given out. A clock so far ahead that
/// the batch's timestamps would pass `TIMESTAMP_MAX` is an error, and
/// nothing of the batch is written.
pub(crate) fn first_timestamp(batch: &Batch<'_>, now_ns: u64, events: usize) -> Result<u64> {
    let first = now_ns.max(last_timestamp(batch).saturating_add(1));
    match first.checked_add(events.max(1) as u64 - 1) {
        Some(last) if last <= TIMESTAMP_MAX => Ok(first),
        _ => Err(Error::invalid(format!(
            "the clock reads {now_ns} ns: a batch of {events} would get timestamps past \
             2^63 - 1 (the last given out is {})",
            last_timestamp(batch)
        ))),
    }
}

/// The most frequent of `lens` and how often it comes (`None` for none).
fn most_common(lens: impl Iterator<Item = usize>) -> Option<(usize, usize)> {
    let mut counts = [0usize; codec::STORED_MAX + 1];
    for len in lens {
        counts[len.min(codec::STORED_MAX)] += 1;
    }
    let (len, &count) = counts.iter().enumerate().max_by_key(|&(_, &c)| c)?;
    (count > 0).then_some((len, count))
}

/// The highest transfer id stored (see `Machine::max_stored`): kept in
/// every batch's meta writes; none yet (and no timestamp given out) in a
/// new ledger; unknown when a ledger written before it was kept has
/// given out timestamps.
fn max_stored_id(batch: &Batch<'_>) -> Option<u128> {
    // (Borrowed, not copied: these run on every call.)
    let kept = batch.get_with(META_MAX_ID, |v| {
        v.map(|v| v.try_into().ok().map(u128::from_le_bytes))
    });
    match kept {
        Some(max) => max,
        None => batch.get_with(META_TS, |v| v.is_none()).then_some(0),
    }
}

/// The last timestamp the ledger gave out.
pub(crate) fn last_timestamp(batch: &Batch<'_>) -> u64 {
    batch
        .get_with(META_TS, |v| {
            v.and_then(|v| v.try_into().ok().map(u64::from_le_bytes))
        })
        .unwrap_or(0)
}

/// What transfer id `id` holds, from its stored value.
/// Anything under the id that is not a transfer (a failed id's one-byte
/// result code) spends the id.
fn stored_slot(id: u128, value: Option<&[u8]>) -> Slot {
    match value {
        Some(v) => codec::decode_stored_transfer(id, v).map_or(Slot::Failed, Slot::Transfer),
        None => Slot::Empty,
    }
}

impl<'b, 'i> Machine<'b, 'i> {
    /// A machine for about `events` events: its caches sized up front, in
    /// the room kept from earlier batches (`Scratch`) when there is some.
    /// Runs the batch under `rules`: those of the logged record it
    /// replays (`Rules::CURRENT` unless told).
    pub(crate) fn set_rules(&mut self, rules: Rules) {
        self.rules = rules;
    }

    pub(crate) fn with_capacity(
        batch: &'b mut Batch<'i>,
        events: usize,
        shared: &'b Shared,
    ) -> Self {
        let max_stored = max_stored_id(batch);
        let kept = SCRATCH_EVENTS.contains(&events);
        let mut room = if kept {
            std::mem::take(&mut *shared.scratch.lock())
        } else {
            Scratch::default()
        };
        room.accounts.reserve(events * 2);
        room.transfers.reserve(events);
        room.history.reserve(events * 2);
        Machine {
            batch,
            accounts: room.accounts,
            transfers: room.transfers,
            settled: IdMap::default(),
            history: room.history,
            balances: Vec::new(),
            expiry_added: Vec::new(),
            expiry_removed: Vec::new(),
            failed: IdMap::default(),
            stored: room.stored,
            max_stored,
            rules: Rules::CURRENT,
            // A transfer's changes (its transfer, two accounts, two
            // history entries): the log is cut back after each chain.
            undo: Vec::with_capacity(8),
            keys: room.keys,
            named: room.named,
            shared,
            kept,
        }
    }

    // ---- reads ----

    fn account(&mut self, id: u128) -> Option<Account> {
        self.account_slot(id).1
    }

    /// The account's position in the cache (looked up and cached if it
    /// is not there yet), and the account.
    fn account_slot(&mut self, id: u128) -> (usize, Option<Account>) {
        if let Some(at) = self.accounts.position(id) {
            return (at, self.accounts.at_mut(at).account);
        }
        let found = self.batch.get_with(codec::id_key(ACCOUNT, id), |v| {
            v.and_then(|v| codec::decode_stored_account(id, v))
        });
        let cached = Cached {
            account: found,
            dirty: false,
        };
        (self.accounts.push_new(id, cached), found)
    }

    fn transfer(&self, id: u128) -> Option<Transfer> {
        match self.transfer_slot(id) {
            Slot::Transfer(t) => Some(t),
            Slot::Failed | Slot::Empty => None,
        }
    }

    fn settled_state(&self, pending_id: u128) -> Option<Settled> {
        if let Some(s) = self.settled.get(&pending_id) {
            return Some(*s);
        }
        self.batch
            .get(codec::id_key(SETTLED, pending_id))
            .and_then(|v| v.first().copied().and_then(Settled::from_byte))
    }

    /// What is stored under a transfer id: the transfer, the mark of a
    /// transient failure (one byte: its code), or nothing. One lookup
    /// answers both "exists" and "already failed".
    fn transfer_slot(&self, id: u128) -> Slot {
        if let Some(t) = self.transfers.get(id) {
            return Slot::Transfer(*t);
        }
        if self.failed.contains_key(&id) {
            return Slot::Failed;
        }
        if let Some(slot) = self.stored.get(id) {
            return *slot;
        }
        if self.above_stored(id) {
            return Slot::Empty;
        }
        self.batch
            .get_with(codec::id_key(TRANSFER, id), |v| stored_slot(id, v))
    }

    /// Whether no transfer was stored under `id` when the batch began, by
    /// `max_stored` alone.
    fn above_stored(&self, id: u128) -> bool {
        self.max_stored.is_some_and(|max| id > max)
    }

    /// Looks up, in bulk, what the events will read from the state the
    /// batch began with: what the transfers' ids and pending ids hold, and
    /// the accounts the transfers and their pending transfers name
    /// (`Batch::get_into`: faster than the same lookups one event at a
    /// time). It only fills the caches the reads consult first, and only
    /// for ids the batch has not changed: the events see exactly what they
    /// would see without it. A small batch only brings those records into
    /// the processor's cache (`Batch::warm_many`).
    pub(crate) fn prefetch(&mut self, transfers: &[Transfer]) {
        if transfers.len() < PREFETCH_MIN {
            let keys: Vec<[u8; 17]> = transfers
                .iter()
                .flat_map(|t| {
                    [
                        codec::id_key(ACCOUNT, t.debit_account_id),
                        codec::id_key(ACCOUNT, t.credit_account_id),
                        codec::id_key(TRANSFER, t.id),
                    ]
                })
                .collect();
            self.batch.warm_many(&keys);
            return;
        }
        // Each id not cached yet and not above every stored id gets a
        // placeholder, in order of first appearance (the slab dedups), then
        // its found state, in place (an id above every stored id holds
        // nothing: `transfer_slot` knows without an entry). Transfer ids
        // first: a post or void reads the accounts of its pending transfer.
        let mut keys = std::mem::take(&mut self.keys);
        keys.clear();
        keys.reserve(transfers.len() * 2);
        let first = self.stored.len();
        self.stored.reserve(transfers.len() * 2);
        for id in transfers.iter().flat_map(|t| [t.id, t.pending_id]) {
            let cached = id == 0 || self.transfers.contains(id) || self.failed.contains_key(&id);
            if cached || self.above_stored(id) {
                continue;
            }
            if self.stored.push_absent(id, Slot::Empty).is_some() {
                keys.push(codec::id_key(TRANSFER, id));
            }
        }
        self.batch
            .get_into(&keys, self.stored.tail_mut(first), |v, entry| {
                entry.value = stored_slot(entry.id(), v);
            });
        let pending_accounts = |t: &Transfer| match self.stored.get(t.pending_id) {
            Some(Slot::Transfer(p)) if t.pending_id != 0 => {
                [p.debit_account_id, p.credit_account_id]
            }
            _ => [0, 0],
        };
        // Sized up front: a filtered iterator would grow the vector by
        // doubling, copying it each time.
        let mut named = std::mem::take(&mut self.named);
        named.clear();
        named.reserve(transfers.len() * 4);
        named.extend(
            transfers
                .iter()
                .flat_map(|t| {
                    let [pd, pc] = pending_accounts(t);
                    [t.debit_account_id, t.credit_account_id, pd, pc]
                })
                .filter(|&id| id != 0),
        );
        let first = self.accounts.len();
        keys.clear();
        self.accounts.reserve(named.len());
        let unknown = Cached {
            account: None,
            dirty: false,
        };
        for &id in &named {
            if self.accounts.push_absent(id, unknown).is_some() {
                keys.push(codec::id_key(ACCOUNT, id));
            }
        }
        self.batch
            .get_into(&keys, self.accounts.tail_mut(first), |v, entry| {
                entry.value.account = v.and_then(|v| codec::decode_stored_account(entry.id(), v));
            });
        self.keys = keys;
        self.named = named;
    }

    // ---- changes (each remembered in the undo log) ----

    fn set_account(&mut self, a: Account) {
        let (at, _) = self.account_slot(a.id);
        self.set_account_at(at, a);
    }

    /// `set_account` for the account at position `at` of the cache.
    fn set_account_at(&mut self, at: usize, a: Account) {
        let cached = self.accounts.at_mut(at);
        debug_assert_eq!(cached.account.map_or(a.id, |c| c.id), a.id);
        let before = cached.account.replace(a);
        cached.dirty = true;
        self.undo.push(Undo::Account(at, before));
    }

    /// Adds a transfer whose id holds nothing yet (`transfer_slot` said
    /// `Empty`).
    fn add_transfer(&mut self, t: Transfer) {
        self.transfers.push_new(t.id, t);
        self.undo.push(Undo::Transfer(t.id));
    }

    fn settle(&mut self, pending_id: u128, how: Settled) {
        self.settled.insert(pending_id, how);
        self.undo.push(Undo::Settled(pending_id));
    }

    fn record_history(&mut self, account: &Account, ts: u64, transfer_id: u128) {
        let balances = account.flags.contains(AccountFlags::HISTORY).then(|| {
            self.balances.push(*account);
            self.balances.len() - 1
        });
        self.history.push(HistoryEntry {
            account: account.id,
            transfer_id,
            ts,
            balances,
        });
        self.undo.push(Undo::History);
    }

    fn add_expiry(&mut self, at: u64, ts: u64, id: u128) {
        self.shared
            .expiry_hint
            .fetch_min(at, AtomicOrdering::AcqRel);
        self.expiry_added.push((at, ts, id));
        self.undo.push(Undo::ExpiryAdded);
    }

    fn remove_expiry(&mut self, at: u64, ts: Option<u64>, id: u128) {
        self.expiry_removed.push((at, ts, id));
        self.undo.push(Undo::ExpiryRemoved);
    }

    /// Undoes every change back to `mark` (a failed linked chain).
    fn rollback(&mut self, mark: usize) {
        while self.undo.len() > mark {
            let Some(undo) = self.undo.pop() else { break };
            match undo {
                Undo::Account(at, before) => {
                    // It stays dirty: written back unchanged at worst.
                    self.accounts.at_mut(at).account = before;
                }
                Undo::Transfer(id) => {
                    let popped = self.transfers.pop(id);
                    debug_assert!(popped.is_some(), "undo of a transfer not added last");
                }
                Undo::Settled(id) => {
                    self.settled.remove(&id);
                }
                Undo::History => {
                    if let Some(entry) = self.history.pop()
                        && entry.balances.is_some()
                    {
                        self.balances.pop();
                    }
                }
                Undo::ExpiryAdded => {
                    self.expiry_added.pop();
                }
                Undo::ExpiryRemoved => {
                    self.expiry_removed.pop();
                }
            }
        }
    }

    /// Turns the batch's changes into writes, and moves the last timestamp.
    pub(crate) fn finish(self, last_ts: u64) -> Result<()> {
        let Machine {
            batch,
            mut accounts,
            mut transfers,
            settled,
            mut history,
            balances,
            expiry_added,
            expiry_removed,
            failed,
            mut stored,
            max_stored,
            mut keys,
            mut named,
            shared,
            kept,
            ..
        } = self;
        // Every transfer id written below counts, failed ones too.
        let max_stored = max_stored.map(|max| {
            let written = transfers.iter().map(|(id, _)| id);
            written.chain(failed.keys().copied()).fold(max, u128::max)
        });
        // The transfer index takes every entry once the batch is
        // installed; only the balances of `HISTORY` accounts are records.
        if let Some(index) = shared.history.get().filter(|_| !history.is_empty()) {
            let mut entries = index.take_spare();
            entries.extend(
                history
                    .iter()
                    .map(|h| (h.account, Item::new(h.ts, h.transfer_id))),
            );
            let index = Arc::clone(index);
            batch.after_install(Box::new(move || index.add_batch(entries)));
        }
        let with_balances: Vec<HistoryEntry> = history
            .iter()
            .filter(|h| h.balances.is_some())
            .copied()
            .collect();
        // Each record below is written once and never read back
        // (`OnceWrites`). A big batch builds them on two threads (`Part`):
        // this one takes a first part of the accounts, transfers and
        // history records, in that order, and a helper the rest. The
        // helper's vector has room for this thread's part, which is then
        // appended to it without growing it.
        let all = Part {
            accounts: accounts.as_slice(),
            transfers: transfers.as_slice(),
            history: &with_balances,
        };
        let spares = batch.spares();
        let build = |part: Part<'_>, room: usize| {
            let mut out = spares.writes(room);
            put_accounts(&mut out, spares, part.accounts)?;
            put_records(&mut out, part.transfers, part.history, &balances)?;
            Ok::<_, Error>(out)
        };
        if all.len() >= PARALLEL_RECORDS && !cfg!(loom) {
            let (mine, theirs) = all.split();
            let (mine, theirs) = std::thread::scope(|scope| {
                let helper = scope.spawn(|| build(theirs, all.len()));
                let mine = build(mine, mine.len());
                let theirs = helper
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                (mine, theirs)
            });
            // Both parts or neither. The helper's first: the batch takes
            // its vector whole.
            let (theirs, mine) = (theirs?, mine?);
            batch.extend_once(theirs);
            batch.extend_once(mine);
        } else {
            batch.extend_once(build(all, all.len())?);
        }
        // The kept caches go back, emptied, for the next batch.
        if kept {
            accounts.clear();
            transfers.clear();
            history.clear();
            stored.clear();
            keys.clear();
            named.clear();
            *shared.scratch.lock() = Scratch {
                accounts,
                transfers,
                history,
                stored,
                keys,
                named,
            };
        }
        for (id, how) in settled {
            batch.put(codec::id_key(SETTLED, id), [how as u8])?;
        }
        for (at, ts, id) in expiry_added {
            batch.put(codec::expiry_key(at, ts, id), [])?;
        }
        for (at, ts, id) in expiry_removed {
            match ts {
                Some(ts) => batch.delete(codec::expiry_key(at, ts, id))?,
                None => batch.delete(codec::legacy_expiry_key(at, id))?,
            }
        }
        for (id, code) in failed {
            batch.put(codec::id_key(TRANSFER, id), [code.code()])?;
        }
        if let Some(max) = max_stored {
            batch.put(META_MAX_ID, max.to_le_bytes())?;
        }
        batch.put(META_TS, last_ts.to_le_bytes())?;
        Ok(())
    }

    // ---- linked chains ----

    /// Runs `events` in order with linked-chain semantics: `apply(i)` checks
    /// and applies event `i`; `linked(i)` tells whether it is linked to the
    /// next. Returns one result per event.
    fn run_chains<R: Copy + PartialEq>(
        &mut self,
        n: usize,
        ok: R,
        linked_failed: R,
        chain_open: R,
        linked: impl Fn(usize) -> bool,
        mut apply: impl FnMut(&mut Self, usize) -> R,
    ) -> Vec<R> {
        let mut results = vec![ok; n];
        let mut i = 0;
        while i < n {
            let mark = self.undo.len();
            let mut broken = false;
            let mut end = i;
            for (j, result) in results.iter_mut().enumerate().skip(i) {
                end = j;
                if linked(j) && j + 1 == n {
                    // An open chain names itself on its last item, failed
                    // before or not (TigerBeetle's state machine does so).
                    *result = chain_open;
                    broken = true;
                } else if broken {
                    *result = linked_failed;
                } else {
                    let r = apply(self, j);
                    if r != ok {
                        *result = r;
                        broken = true;
                    }
                }
                if !linked(j) {
                    break;
                }
            }
            if !broken {
                // The chain stands: nothing will undo its changes. (Keeps
                // the undo log as short as a chain, in the cache.)
                self.undo.truncate(mark);
            } else {
                self.rollback(mark);
                for r in &mut results[i..=end] {
                    if *r == ok {
                        *r = linked_failed;
                    }
                }
            }
            i = end + 1;
        }
        results
    }

    // ---- accounts ----

    /// Creates `accounts`, the first at timestamp `first_ts`.
    pub(crate) fn create_accounts(&mut self, first_ts: u64, accounts: &[Account]) -> Vec<AR> {
        self.run_chains(
            accounts.len(),
            AR::Ok,
            AR::LinkedEventFailed,
            AR::LinkedEventChainOpen,
            |i| accounts[i].flags.contains(AccountFlags::LINKED),
            |m, i| m.create_account(first_ts + i as u64, &accounts[i]),
        )
    }

    fn create_account(&mut self, ts: u64, a: &Account) -> AR {
        // As in TigerBeetle, the timestamp rule is not for an imported
        // account: that flag bit is refused below (`ReservedFlag`).
        if a.timestamp != 0 && a.flags.bits() & ACCOUNT_IMPORTED == 0 {
            return AR::TimestampMustBeZero;
        }
        if a.reserved != 0 {
            return AR::ReservedField;
        }
        if AccountFlags::from_bits(a.flags.bits()).is_none() {
            return AR::ReservedFlag;
        }
        if a.id == 0 {
            return AR::IdMustNotBeZero;
        }
        if a.id == u128::MAX {
            return AR::IdMustNotBeIntMax;
        }
        if let Some(e) = self.account(a.id) {
            return account_exists(a, &e);
        }
        if a.flags.contains(
            AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS
                | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
        ) {
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
        self.set_account(Account {
            timestamp: ts,
            ..*a
        });
        AR::Ok
    }

    // ---- expiry ----

    /// Voids the pending transfers whose timeout passed at `now`, at most
    /// `MAX_EXPIRIES_PER_BATCH` of them, oldest expiry first (and of those
    /// expiring at once, the first created first; by id under the rules of
    /// records logged before `codec::RULES_3`).
    ///
    /// `hint` is a lower bound of every expiry time in the ledger, kept in
    /// memory (not state: it only saves scans that would find nothing, so
    /// replay stays deterministic). A call before the hint returns at once;
    /// a call that scans moves the hint to the earliest expiry left. The
    /// hint is only raised here, inside the sequencer, and lowered by every
    /// new expiry.
    /// Returns whether more may be due (it voided as many as it may).
    pub(crate) fn expire(&mut self, now: u64) -> bool {
        if now < self.shared.expiry_hint.load(AtomicOrdering::Acquire) {
            return false;
        }
        let (mut due, more, next) = self.due_expiries(now);
        self.shared
            .expiry_hint
            .store(if more { now } else { next }, AtomicOrdering::Release);
        // Keys of both forms sort by expiry time first, so `due` holds
        // every key due before the last one's time and all of those due at
        // it: the tie at the cut, which the rules order.
        if self.rules.expiry_by_id {
            due.sort_by_key(|&(at, _, id, _)| (at, id));
        } else {
            for d in &mut due {
                if d.1.is_none() {
                    d.3 = self.transfer(d.2).map_or(0, |p| p.timestamp);
                }
            }
            due.sort_by_key(|&(at, _, id, ts)| (at, ts, id));
        }
        due.truncate(MAX_EXPIRIES_PER_BATCH);
        for (at, key_ts, id, _) in due {
            let Some(p) = self.transfer(id) else { continue };
            if self.settled_state(id).is_none() {
                self.release_pending(&p, false);
                self.settle(id, Settled::Expired);
            }
            self.remove_expiry(at, key_ts, id);
        }
        more
    }

    /// Whether `expire` found nothing due (it removes every due key it
    /// handles, and changes nothing else without one).
    pub(crate) fn expired_nothing(&self) -> bool {
        self.expiry_removed.is_empty()
    }

    /// The expiry keys due at `now` as (expires_at, timestamp in the key,
    /// id, timestamp): the first `MAX_EXPIRIES_PER_BATCH` in key order and
    /// the rest of those due at the same time as the last of them; whether
    /// more are due than may be voided; the first expiry time after `now`
    /// (`u64::MAX`: none).
    #[allow(clippy::type_complexity)]
    fn due_expiries(&self, now: u64) -> (Vec<(u64, Option<u64>, u128, u64)>, bool, u64) {
        let upper = Bound::Excluded(vec![EXPIRY + 1]);
        let mut lower = Bound::Included(vec![EXPIRY]);
        let mut due: Vec<(u64, Option<u64>, u128, u64)> = Vec::new();
        loop {
            let found = self
                .batch
                .scan_latest((lower, upper.clone()), MAX_EXPIRIES_PER_BATCH + 1);
            let full = found.len() > MAX_EXPIRIES_PER_BATCH;
            let Some(last) = found.last().map(|(k, _)| k.to_vec()) else {
                break;
            };
            for (k, _) in found {
                let Some((at, ts, id)) = codec::parse_expiry_key(&k) else {
                    continue;
                };
                if at > now {
                    let more = due.len() > MAX_EXPIRIES_PER_BATCH;
                    return (due, more, at);
                }
                if due.len() >= MAX_EXPIRIES_PER_BATCH && at > due[MAX_EXPIRIES_PER_BATCH - 1].0 {
                    return (due, true, now);
                }
                due.push((at, ts, id, ts.unwrap_or(0)));
            }
            if !full {
                break;
            }
            lower = Bound::Excluded(last);
        }
        let more = due.len() > MAX_EXPIRIES_PER_BATCH;
        (due, more, u64::MAX)
    }

    /// Takes a pending transfer's reservation off both accounts and, unless
    /// it was posted, reopens the accounts it closed.
    fn release_pending(&mut self, p: &Transfer, posted: bool) {
        for (id, debit) in [(p.debit_account_id, true), (p.credit_account_id, false)] {
            let Some(mut a) = self.account(id) else {
                continue;
            };
            if debit {
                a.debits_pending = a.debits_pending.saturating_sub(p.amount);
                if !posted && p.flags.contains(TransferFlags::CLOSING_DEBIT) {
                    a.flags.remove(AccountFlags::CLOSED);
                }
            } else {
                a.credits_pending = a.credits_pending.saturating_sub(p.amount);
                if !posted && p.flags.contains(TransferFlags::CLOSING_CREDIT) {
                    a.flags.remove(AccountFlags::CLOSED);
                }
            }
            self.set_account(a);
        }
    }

    // ---- transfers ----

    /// Creates `transfers`, the first at timestamp `first_ts`.
    pub(crate) fn create_transfers(&mut self, first_ts: u64, transfers: &[Transfer]) -> Vec<TR> {
        self.run_chains(
            transfers.len(),
            TR::Ok,
            TR::LinkedEventFailed,
            TR::LinkedEventChainOpen,
            |i| transfers[i].flags.contains(TransferFlags::LINKED),
            |m, i| {
                let t = &transfers[i];
                let r = m.create_transfer(first_ts + i as u64, t);
                if r.is_transient() {
                    // The id is spent, even if its chain is undone.
                    m.failed.insert(t.id, r);
                }
                r
            },
        )
    }

    fn create_transfer(&mut self, ts: u64, t: &Transfer) -> TR {
        // Not for an imported transfer, whose flag bit is refused below.
        if t.timestamp != 0 && t.flags.bits() & TRANSFER_IMPORTED == 0 {
            return TR::TimestampMustBeZero;
        }
        if TransferFlags::from_bits(t.flags.bits()).is_none() {
            return TR::ReservedFlag;
        }
        if t.id == 0 {
            return TR::IdMustNotBeZero;
        }
        if t.id == u128::MAX {
            return TR::IdMustNotBeIntMax;
        }
        match self.transfer_slot(t.id) {
            Slot::Transfer(e) => {
                let settles =
                    TransferFlags::POST_PENDING_TRANSFER | TransferFlags::VOID_PENDING_TRANSFER;
                let pending = if t.flags.intersects(settles) {
                    self.transfer(e.pending_id)
                } else {
                    None
                };
                return transfer_exists(t, &e, pending.as_ref());
            }
            Slot::Failed => return TR::IdAlreadyFailed,
            Slot::Empty => {}
        }
        if flags_exclusive(t.flags) {
            return TR::FlagsAreMutuallyExclusive;
        }
        let settles = TransferFlags::POST_PENDING_TRANSFER | TransferFlags::VOID_PENDING_TRANSFER;
        if t.flags.intersects(settles) {
            return self.post_or_void(ts, t);
        }
        match check_transfer_fields(t) {
            TR::Ok => {}
            r => return r,
        }
        let (dr_at, Some(mut dr)) = self.account_slot(t.debit_account_id) else {
            return TR::DebitAccountNotFound;
        };
        let (cr_at, Some(mut cr)) = self.account_slot(t.credit_account_id) else {
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
        let amount = match balancing_amount(t, &dr, &cr) {
            Ok(amount) => amount,
            Err(r) => return r,
        };
        let pending = t.flags.contains(TransferFlags::PENDING);
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
        if dr
            .debits_pending
            .checked_add(dr.debits_posted)
            .and_then(|d| d.checked_add(amount))
            .is_none()
        {
            return TR::OverflowsDebits;
        }
        if cr
            .credits_pending
            .checked_add(cr.credits_posted)
            .and_then(|c| c.checked_add(amount))
            .is_none()
        {
            return TR::OverflowsCredits;
        }
        let expires_at = if pending && t.timeout > 0 {
            // Timestamps stay below 2^63, as TigerBeetle's.
            match u64::from(t.timeout)
                .checked_mul(NS_PER_S)
                .and_then(|ns| ts.checked_add(ns))
            {
                Some(at) if at < 1 << 63 => Some(at),
                _ => return TR::OverflowsTimeout,
            }
        } else {
            None
        };
        if dr.debits_exceed_credits(amount) {
            return TR::ExceedsCredits;
        }
        if cr.credits_exceed_debits(amount) {
            return TR::ExceedsDebits;
        }
        // Every rule holds: apply.
        if pending {
            dr.debits_pending += amount;
            cr.credits_pending += amount;
            if t.flags.contains(TransferFlags::CLOSING_DEBIT) {
                dr.flags.insert(AccountFlags::CLOSED);
            }
            if t.flags.contains(TransferFlags::CLOSING_CREDIT) {
                cr.flags.insert(AccountFlags::CLOSED);
            }
        } else {
            dr.debits_posted += amount;
            cr.credits_posted += amount;
        }
        debug_assert!(!dr.debits_exceed_credits(0), "debit limit broken");
        debug_assert!(!cr.credits_exceed_debits(0), "credit limit broken");
        self.set_account_at(dr_at, dr);
        self.set_account_at(cr_at, cr);
        self.add_transfer(Transfer {
            amount,
            timestamp: ts,
            ..*t
        });
        self.record_history(&dr, ts, t.id);
        self.record_history(&cr, ts, t.id);
        if let Some(at) = expires_at {
            self.add_expiry(at, ts, t.id);
        }
        TR::Ok
    }

    fn post_or_void(&mut self, ts: u64, t: &Transfer) -> TR {
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
        let Some(p) = self.transfer(t.pending_id) else {
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
        let post = t.flags.contains(TransferFlags::POST_PENDING_TRANSFER);
        let amount = settled_amount(t.amount, p.amount, post || self.rules.void_max_whole);
        if amount > p.amount {
            return TR::ExceedsPendingTransferAmount;
        }
        if !post && amount != p.amount {
            return TR::PendingTransferHasDifferentAmount;
        }
        match self.settled_state(p.id) {
            Some(Settled::Posted) => return TR::PendingTransferAlreadyPosted,
            Some(Settled::Voided) => return TR::PendingTransferAlreadyVoided,
            Some(Settled::Expired) => return TR::PendingTransferExpired,
            None => {}
        }
        let expires_at = (p.timeout > 0).then(|| {
            p.timestamp
                .saturating_add(u64::from(p.timeout).saturating_mul(NS_PER_S))
        });
        if expires_at.is_some_and(|at| at <= ts) {
            return TR::PendingTransferExpired;
        }
        let Some(dr) = self.account(p.debit_account_id) else {
            return TR::DebitAccountNotFound;
        };
        let Some(cr) = self.account(p.credit_account_id) else {
            return TR::CreditAccountNotFound;
        };
        // A closed account takes no posting, even of the transfer that
        // closed it; only voids (which may reopen it).
        if post {
            if dr.flags.contains(AccountFlags::CLOSED) {
                return TR::DebitAccountAlreadyClosed;
            }
            if cr.flags.contains(AccountFlags::CLOSED) {
                return TR::CreditAccountAlreadyClosed;
            }
        }
        // Every rule holds: settle it.
        self.release_pending(&p, post);
        let (mut dr, mut cr) = match (self.account(dr.id), self.account(cr.id)) {
            (Some(dr), Some(cr)) => (dr, cr),
            _ => return TR::DebitAccountNotFound,
        };
        if post {
            // Posting moves at most what was reserved: no overflow, and no
            // limit can break (the reservation already counted).
            dr.debits_posted = dr.debits_posted.saturating_add(amount);
            cr.credits_posted = cr.credits_posted.saturating_add(amount);
            self.set_account(dr);
            self.set_account(cr);
        }
        self.settle(
            p.id,
            if post {
                Settled::Posted
            } else {
                Settled::Voided
            },
        );
        if let Some(at) = expires_at {
            self.remove_expiry(at, Some(p.timestamp), p.id);
        }
        let stored = Transfer {
            amount,
            pending_id: p.id,
            timeout: 0,
            timestamp: ts,
            ..resolve_settlement(t, &p, self.rules.void_max_whole)
        };
        self.add_transfer(stored);
        self.record_history(&dr, ts, t.id);
        self.record_history(&cr, ts, t.id);
        TR::Ok
    }
}

fn account_exists(a: &Account, e: &Account) -> AR {
    // Raw flags, as TigerBeetle compares them: an account closed since by
    // a closing transfer differs from its creation request.
    if a.flags != e.flags {
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
    AR::Exists
}

/// Compares a resubmitted transfer with the stored one. A post or void
/// is first resolved as `post_or_void` would resolve it (`pending` is the
/// transfer it settles): a zero field takes the pending transfer's value,
/// and amount 0 means the full pending amount.
pub(crate) fn transfer_exists(t: &Transfer, e: &Transfer, pending: Option<&Transfer>) -> TR {
    if t.flags != e.flags {
        return TR::ExistsWithDifferentFlags;
    }
    if t.pending_id != e.pending_id {
        return TR::ExistsWithDifferentPendingId;
    }
    if t.timeout != e.timeout {
        return TR::ExistsWithDifferentTimeout;
    }
    let asked = match pending {
        Some(p) => resolve_settlement(t, p, false),
        None => *t,
    };
    if asked.debit_account_id != e.debit_account_id {
        return TR::ExistsWithDifferentDebitAccountId;
    }
    if asked.credit_account_id != e.credit_account_id {
        return TR::ExistsWithDifferentCreditAccountId;
    }
    let balancing = t
        .flags
        .intersects(TransferFlags::BALANCING_DEBIT | TransferFlags::BALANCING_CREDIT);
    let amount_differs = if balancing {
        // The stored amount is what the balance allowed, at most the asked.
        asked.amount != 0 && e.amount > asked.amount
    } else {
        asked.amount != e.amount
    };
    if amount_differs {
        return TR::ExistsWithDifferentAmount;
    }
    if asked.user_data_128 != e.user_data_128 {
        return TR::ExistsWithDifferentUserData128;
    }
    if asked.user_data_64 != e.user_data_64 {
        return TR::ExistsWithDifferentUserData64;
    }
    if asked.user_data_32 != e.user_data_32 {
        return TR::ExistsWithDifferentUserData32;
    }
    if asked.ledger != e.ledger {
        return TR::ExistsWithDifferentLedger;
    }
    if asked.code != e.code {
        return TR::ExistsWithDifferentCode;
    }
    TR::Exists
}

/// The amount a post or void of `asked` settles of a pending `pending`:
/// the whole of it for 0 (TigerBeetle before 0.16), and for `u128::MAX`
/// when `max_is_whole`: on a post (`AMOUNT_MAX`, TigerBeetle since 0.16,
/// where a zero-amount transfer is allowed; here it is not, so 0 keeps its
/// older meaning and both work), and on a void replayed from a record
/// logged before `codec::RULES_2`. Else a void's nonzero amount is its own,
/// as in TigerBeetle: above the pending amount it exceeds it, below it
/// differs.
fn settled_amount(asked: u128, pending: u128, max_is_whole: bool) -> u128 {
    if asked == 0 || (max_is_whole && asked == u128::MAX) {
        pending
    } else {
        asked
    }
}

/// A post or void `t` of pending transfer `p` as it is stored: zero fields
/// inherited from `p`, the amount as `settled_amount` resolves it (with
/// `void_max_whole`, a void's `u128::MAX` as a post's).
fn resolve_settlement(t: &Transfer, p: &Transfer, void_max_whole: bool) -> Transfer {
    let or = |own: u128, inherited: u128| if own == 0 { inherited } else { own };
    let post = t.flags.contains(TransferFlags::POST_PENDING_TRANSFER);
    Transfer {
        debit_account_id: or(t.debit_account_id, p.debit_account_id),
        credit_account_id: or(t.credit_account_id, p.credit_account_id),
        amount: settled_amount(t.amount, p.amount, post || void_max_whole),
        user_data_128: or(t.user_data_128, p.user_data_128),
        user_data_64: if t.user_data_64 == 0 {
            p.user_data_64
        } else {
            t.user_data_64
        },
        user_data_32: if t.user_data_32 == 0 {
            p.user_data_32
        } else {
            t.user_data_32
        },
        ledger: if t.ledger == 0 { p.ledger } else { t.ledger },
        code: if t.code == 0 { p.code } else { t.code },
        ..*t
    }
}

fn flags_exclusive(f: TransferFlags) -> bool {
    let post = f.contains(TransferFlags::POST_PENDING_TRANSFER);
    let void = f.contains(TransferFlags::VOID_PENDING_TRANSFER);
    let pending = f.contains(TransferFlags::PENDING);
    let balancing = f.intersects(TransferFlags::BALANCING_DEBIT | TransferFlags::BALANCING_CREDIT);
    let closing = f.intersects(TransferFlags::CLOSING_DEBIT | TransferFlags::CLOSING_CREDIT);
    (pending && (post || void)) || (post && void) || ((post || void) && (balancing || closing))
}

/// The field rules of a new (not post/void) transfer, in check order.
fn check_transfer_fields(t: &Transfer) -> TR {
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
    if !t.flags.contains(TransferFlags::PENDING) {
        if t.timeout != 0 {
            return TR::TimeoutReservedForPendingTransfer;
        }
        if t.flags
            .intersects(TransferFlags::CLOSING_DEBIT | TransferFlags::CLOSING_CREDIT)
        {
            return TR::ClosingTransferMustBePending;
        }
    }
    let balancing = t
        .flags
        .intersects(TransferFlags::BALANCING_DEBIT | TransferFlags::BALANCING_CREDIT);
    if t.amount == 0 && !balancing {
        return TR::AmountMustNotBeZero;
    }
    if t.ledger == 0 {
        return TR::LedgerMustNotBeZero;
    }
    if t.code == 0 {
        return TR::CodeMustNotBeZero;
    }
    TR::Ok
}

/// The amount a transfer moves: its own, or for a balancing transfer, as
/// much of it (0: unbounded) as the accounts' balances allow.
fn balancing_amount(t: &Transfer, dr: &Account, cr: &Account) -> Result<u128, TR> {
    let mut amount = t.amount;
    let balancing = t
        .flags
        .intersects(TransferFlags::BALANCING_DEBIT | TransferFlags::BALANCING_CREDIT);
    if balancing && amount == 0 {
        amount = u128::MAX;
    }
    if t.flags.contains(TransferFlags::BALANCING_DEBIT) {
        let used = dr.debits_pending.saturating_add(dr.debits_posted);
        amount = amount.min(dr.credits_posted.saturating_sub(used));
        if amount == 0 {
            return Err(TR::ExceedsCredits);
        }
    }
    if t.flags.contains(TransferFlags::BALANCING_CREDIT) {
        let used = cr.credits_pending.saturating_add(cr.credits_posted);
        amount = amount.min(cr.debits_posted.saturating_sub(used));
        if amount == 0 {
            return Err(TR::ExceedsDebits);
        }
    }
    Ok(amount)
}

/// Builds the accounts of `from` that a batch changed (`Machine::finish`).
/// Account values are rewritten all the time: each is built in the buffer
/// of a version the index pruned, when there is one of its length (the
/// length most of them share: an account's compact value changes length
/// only when a balance starts or stops being zero or crosses 2^64).
///
/// In chunks of `ACCOUNT_CHUNK`: a chunk's values are encoded into a
/// buffer that stays in the cache (all of a batch's at once took 2 MB,
/// written and read back from memory), and each spare buffer's lines are
/// asked for `SPARE_AHEAD` writes before the write into it.
fn put_accounts(out: &mut OnceWrites, spares: Spares<'_>, from: &[Entry<Cached>]) -> Result<()> {
    let mut dirty = from
        .iter()
        .filter_map(|e| e.value.dirty.then_some((e.id(), e.value.account.as_ref()?)))
        .peekable();
    let mut encoded: Vec<(u128, [u8; codec::STORED_MAX], usize)> =
        Vec::with_capacity(ACCOUNT_CHUNK.min(from.len()));
    while dirty.peek().is_some() {
        encoded.extend(dirty.by_ref().take(ACCOUNT_CHUNK).map(|(id, a)| {
            let mut value = [0u8; codec::STORED_MAX];
            let len = codec::encode_stored_account(a, &mut value);
            (id, value, len)
        }));
        let Some((len, count)) = most_common(encoded.iter().map(|&(_, _, len)| len)) else {
            break;
        };
        let mut spare = spares.take(count, 17, len);
        for (id, value, n) in encoded.drain(..) {
            if let Some(ahead) = spare.len().checked_sub(SPARE_AHEAD) {
                spare[ahead].prefetch();
            }
            let buffer = if n == len { spare.pop() } else { None };
            out.put_once(&codec::id_key(ACCOUNT, id), &value[..n], buffer)?;
        }
    }
    Ok(())
}

/// Builds a batch's new records (`Machine::finish`): its transfers and
/// the history entries of `HISTORY` accounts (with their balances), new
/// keys never rewritten, whose versions need no room for an older one
/// (`OnceWrites::put_new`).
fn put_records(
    out: &mut OnceWrites,
    transfers: &[Entry<Transfer>],
    history: &[HistoryEntry],
    balances: &[Account],
) -> Result<()> {
    let mut stored = [0u8; codec::STORED_MAX];
    for t in transfers {
        let len = codec::encode_stored_transfer(&t.value, &mut stored);
        out.put_new(&codec::id_key(TRANSFER, t.id()), &stored[..len])?;
    }
    let mut entry = Vec::new();
    for h in history {
        entry.clear();
        let balances = h.balances.and_then(|i| balances.get(i));
        codec::encode_history_into(&mut entry, h.transfer_id, balances);
        out.put_new(&codec::history_key(h.account, h.ts), &entry)?;
    }
    Ok(())
}

/// The records a batch writes at its end, or a part of them
/// (`Machine::finish`): the accounts it looked up (it writes the changed
/// ones), its transfers and its history entries.
#[derive(Debug, Clone, Copy)]
struct Part<'a> {
    accounts: &'a [Entry<Cached>],
    transfers: &'a [Entry<Transfer>],
    history: &'a [HistoryEntry],
}

/// What building a record costs, in the units of `Part::split`: an
/// account (built in a spare buffer, usually cold) about 75 ns, a new
/// transfer or history entry about 60 (measured on the helper thread).
const ACCOUNT_COST: usize = 5;
const RECORD_COST: usize = 4;

impl<'a> Part<'a> {
    fn len(&self) -> usize {
        self.accounts.len() + self.transfers.len() + self.history.len()
    }

    /// Two parts of about equal cost: the first takes the accounts, then
    /// the transfers, then the history entries, until it has half the
    /// cost; the second the rest. (Split by the accounts alone, with all
    /// the new records on the helper, the helper ended 0.6 ms after this
    /// thread in a batch of 8,190 transfers.)
    fn split(&self) -> (Part<'a>, Part<'a>) {
        let records = self.transfers.len() + self.history.len();
        let mut budget = (ACCOUNT_COST * self.accounts.len() + RECORD_COST * records) / 2;
        let mut take = |n: usize, cost: usize| {
            let k = n.min(budget / cost);
            budget -= k * cost;
            k
        };
        let a = take(self.accounts.len(), ACCOUNT_COST);
        let t = take(self.transfers.len(), RECORD_COST);
        let h = take(self.history.len(), RECORD_COST);
        let (accounts, rest_accounts) = self.accounts.split_at(a);
        let (transfers, rest_transfers) = self.transfers.split_at(t);
        let (history, rest_history) = self.history.split_at(h);
        (
            Part {
                accounts,
                transfers,
                history,
            },
            Part {
                accounts: rest_accounts,
                transfers: rest_transfers,
                history: rest_history,
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A batch of the usual size runs in the kept caches and gives them
    /// back emptied, with their room; a batch too big or too small for
    /// them runs in caches of its own and leaves the kept ones as they
    /// were.
    #[test]
    fn the_kept_caches_come_back_emptied_and_keep_their_size() {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = crate::Engine::open(dir.path(), crate::Options::default()).expect("open");
        let shared = Shared::default();
        let next_id = std::cell::Cell::new(1u128);
        let run = |events: usize| {
            let first_id = next_id.replace(next_id.get() + events as u128);
            let accounts: Vec<Account> = (first_id..first_id + events as u128)
                .map(|id| Account {
                    id,
                    ledger: 1,
                    code: 1,
                    ..Account::default()
                })
                .collect();
            engine
                .apply(|batch| {
                    let first = first_timestamp(batch, 1, events)?;
                    let mut m = Machine::with_capacity(batch, events, &shared);
                    let results = m.create_accounts(first, &accounts);
                    assert!(results.iter().all(|r| *r == AR::Ok));
                    m.finish(first + events as u64)
                })
                .expect("apply");
        };
        let kept = || {
            let k = shared.scratch.lock();
            let lens = [
                k.accounts.len(),
                k.transfers.len(),
                k.history.len(),
                k.stored.len(),
                k.keys.len(),
                k.named.len(),
            ];
            (lens, k.accounts.capacity(), k.history.capacity())
        };
        run(1_000);
        let (lens, accounts, history) = kept();
        assert_eq!(lens, [0; 6], "the kept caches come back emptied");
        assert!(accounts >= 2_000 && history >= 2_000, "with their room");
        run(20_000);
        assert_eq!(
            kept(),
            (lens, accounts, history),
            "a big batch keeps its own"
        );
        run(3);
        assert_eq!(
            kept(),
            (lens, accounts, history),
            "a small batch keeps its own"
        );
    }

    /// `Part::split` gives two parts that are, together, the whole, each
    /// record once and in order (the first part a prefix of each list),
    /// of about equal cost.
    #[test]
    fn a_split_covers_every_record_once_in_two_parts_of_equal_cost() {
        let cached = Cached {
            account: None,
            dirty: true,
        };
        let entry = |i: u64| HistoryEntry {
            account: u128::from(i),
            transfer_id: u128::from(i),
            ts: i,
            balances: None,
        };
        for (a, t, h) in [
            (0, 0, 0),
            (14_600, 8_190, 16_380),
            (500, 8_190, 16_380),
            (9_000, 0, 0),
            (1, 1, 1),
        ] {
            let mut accounts = IdSlab::with_capacity(a);
            for i in 0..a {
                accounts.push_new(i as u128, cached);
            }
            let mut transfers = IdSlab::with_capacity(t);
            for i in 0..t {
                transfers.push_new(i as u128, Transfer::default());
            }
            let (accounts, transfers) = (accounts.as_slice(), transfers.as_slice());
            let history: Vec<HistoryEntry> = (0..h).map(entry).collect();
            let all = Part {
                accounts,
                transfers,
                history: &history,
            };
            let (first, second) = all.split();
            assert_eq!(first.accounts.len() + second.accounts.len(), accounts.len());
            assert_eq!(
                first.transfers.len() + second.transfers.len(),
                transfers.len()
            );
            assert_eq!(first.history.len() + second.history.len(), history.len());
            assert!(std::ptr::eq(first.accounts.as_ptr(), accounts.as_ptr()));
            assert_eq!(
                second.history.first().map(|e| e.ts),
                history.get(first.history.len()).map(|e| e.ts)
            );
            let cost = |p: &Part<'_>| {
                ACCOUNT_COST * p.accounts.len()
                    + RECORD_COST * (p.transfers.len() + p.history.len())
            };
            let total = cost(&all);
            assert!(
                cost(&first).abs_diff(total / 2) <= ACCOUNT_COST,
                "{a} {t} {h}: {} of {total}",
                cost(&first)
            );
        }
    }
}
