//! One shard of a cluster: its `Ledger`, and the two-phase commit handlers
//! that run on it. Transport-free: every call returns what to send, and the
//! driver (`Cluster`'s threads or the simulator) delivers it.
//!
//! A shard keeps, beside its ledger and in the same commits (see
//! `Ledger::submit_transfers_with`), one record per transfer:
//! - `e | id`, as the coordinator of a cross-shard transfer (it holds the
//!   debit account): the transfer's events, whose fold is its state, and
//!   its outbox: the message it owes the other shard, if any.
//! - `l | coordinator | id`, as the participant (it holds the credit
//!   account): its leg (prepared, refused with the reason, posted or
//!   voided) and its outbox: the vote it owes while in doubt. Keyed by the
//!   coordinator too, since ids are unique per coordinator only.
//!
//! Each handler reads such a record, appends to it and writes it back
//! whole: the state change and the message it causes are one write of one
//! commit. In memory, a shard knows which records owe a message (rebuilt
//! from the records at open): that is what `resend` sends again.
//!
//! Invariants: a state change and the messages it causes commit together;
//! a leg that voted yes is posted or voided only on the coordinator's
//! decision; every handler is idempotent by transfer id (a duplicate
//! changes nothing and gets the same answer); the debit leg is reserved
//! before `Prepare` is sent, the credit leg before it votes yes, and a
//! decision is logged before it is sent.
//!
//! Concurrency: `initiate` may run from many threads; `handle` and
//! `resend` from one thread per shard at a time (the driver's), which is
//! what lets them read a transfer's state from a snapshot before the
//! commit: only that thread changes it after initiation. A coordinator's
//! step re-reads the record at the latest version inside the commit, and
//! its fold refuses an illegal step; a participant's step writes its leg
//! record whole.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use parking_lot::Mutex;

use super::ids::{self, ShardId};
use super::message::{Envelope, Message};
use super::state::{Aggregate, Event, TransferState};
use crate::SyncMode;
use crate::error::{Error, Result};
use crate::ledger::{
    Account, CreateTransferResult, Extra, Ledger, LedgerOptions, LedgerSnapshot, MAX_BATCH_EVENTS,
    Transfer, TransferFlags, transfer_exists,
};

const COORDINATOR: u8 = b'e';
const PARTICIPANT: u8 = b'l';

/// A deliberately broken protocol, to show that each of the simulator's
/// checks can fail. Never set it outside such a test.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sabotage {
    /// A participant that has waited for a decision gives up and voids its
    /// prepared leg on its own (then acknowledges whatever comes).
    ParticipantDropsLeg,
    /// Messages are sent but not kept in the outbox, so a lost one is
    /// never sent again.
    NoOutbox,
    /// A participant does not look up its leg before preparing: a
    /// duplicate `Prepare` runs the leg again.
    NoIdempotency,
    /// The cluster creates accounts without their limit flags.
    DropLimitFlags,
    /// Under `SyncMode::Never` or `Interval`, a shard sends messages
    /// without first syncing the commit that owes them.
    NoSyncBeforeSend,
    /// A transfer within one shard sent again is answered `Ok` where its
    /// ledger said `Exists` (a client that counts a retry as a new success).
    ExistsAnsweredOk,
    /// A cross-shard transfer sent again is answered `Exists` at once,
    /// instead of with the outcome of the transfer its id holds.
    RetryAnsweredExists,
}

/// How a cross-shard transfer ended, for whoever waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The coordinator: ids are unique per coordinator.
    pub(crate) shard: ShardId,
    pub(crate) id: u128,
    pub(crate) committed: bool,
    pub(crate) refusal: Option<CreateTransferResult>,
}

/// What a handler asks the driver to do.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// Messages to send: (to, message).
    pub(crate) send: Vec<(ShardId, Message)>,
    /// Transfers this shard coordinates that became final.
    pub(crate) finished: Vec<Outcome>,
}

/// What `initiate` did with one item of a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Started {
    /// A transfer within the shard: its result.
    Done(CreateTransferResult),
    /// Refused before anything was recorded (the debit leg's rule, or a
    /// duplicate id with different fields).
    Refused(CreateTransferResult),
    /// Recorded; its debit leg is reserved and `Prepare` is on its way.
    InFlight,
    /// The same transfer was initiated before: wait for that one.
    Existing,
}

/// A participant's leg.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leg {
    Prepared,
    Refused(CreateTransferResult),
    Settled { posted: bool },
}

const LEG_PREPARED: u8 = 1;
const LEG_REFUSED: u8 = 2;
const LEG_POSTED: u8 = 3;
const LEG_VOIDED: u8 = 4;

/// A message owed to a shard: `u32 to | u16 len | message`.
type Owed = Option<(ShardId, Message)>;

fn encode_owed(out: &mut Vec<u8>, owed: Owed) {
    match owed {
        None => out.push(0),
        Some((to, m)) => {
            out.push(1);
            out.extend_from_slice(&to.to_le_bytes());
            let b = m.encode();
            out.extend_from_slice(&(b.len() as u16).to_le_bytes());
            out.extend_from_slice(&b);
        }
    }
}

/// Decodes an owed message at the front of `b`; returns it and the rest.
fn decode_owed(b: &[u8]) -> Option<(Owed, &[u8])> {
    match b.split_first()? {
        (&0, rest) => Some((None, rest)),
        (&1, rest) => {
            let to = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?);
            let len = usize::from(u16::from_le_bytes(rest.get(4..6)?.try_into().ok()?));
            let m = Message::decode(rest.get(6..6 + len)?)?;
            Some((Some((to, m)), &rest[6 + len..]))
        }
        _ => None,
    }
}

/// A coordinator's record of one transfer: `owed | (u16 len | event)*`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CoordinatorRecord {
    owed: Owed,
    events: Vec<Event>,
}

impl CoordinatorRecord {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + 16 * self.events.len());
        encode_owed(&mut out, self.owed);
        for e in &self.events {
            let b = e.encode();
            out.extend_from_slice(&(b.len() as u16).to_le_bytes());
            out.extend_from_slice(&b);
        }
        out
    }

    fn decode(b: &[u8]) -> Option<CoordinatorRecord> {
        let (owed, mut rest) = decode_owed(b)?;
        let mut events = Vec::new();
        while !rest.is_empty() {
            let len = usize::from(u16::from_le_bytes(rest.get(..2)?.try_into().ok()?));
            events.push(Event::decode(rest.get(2..2 + len)?)?);
            rest = &rest[2 + len..];
        }
        Some(CoordinatorRecord { owed, events })
    }
}

/// A participant's record of its leg: `u8 leg | u32 coordinator | u8
/// reason | owed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LegRecord {
    leg: Leg,
    coordinator: ShardId,
    owed: Owed,
}

impl LegRecord {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 20);
        let (kind, reason) = match self.leg {
            Leg::Prepared => (LEG_PREPARED, 0),
            Leg::Refused(code) => (LEG_REFUSED, code as u8),
            Leg::Settled { posted: true } => (LEG_POSTED, 0),
            Leg::Settled { posted: false } => (LEG_VOIDED, 0),
        };
        out.push(kind);
        out.extend_from_slice(&self.coordinator.to_le_bytes());
        out.push(reason);
        encode_owed(&mut out, self.owed);
        out
    }

    fn decode(b: &[u8]) -> Option<LegRecord> {
        let kind = *b.first()?;
        let coordinator = u32::from_le_bytes(b.get(1..5)?.try_into().ok()?);
        let reason = *b.get(5)?;
        let leg = match kind {
            LEG_PREPARED => Leg::Prepared,
            LEG_REFUSED => Leg::Refused(*CreateTransferResult::ALL.get(usize::from(reason))?),
            LEG_POSTED => Leg::Settled { posted: true },
            LEG_VOIDED => Leg::Settled { posted: false },
            _ => return None,
        };
        let (owed, rest) = decode_owed(&b[6..])?;
        rest.is_empty().then_some(LegRecord {
            leg,
            coordinator,
            owed,
        })
    }
}

fn id_key(tag: u8, id: u128) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = tag;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

/// A coordinator's or a participant's record key, without an allocation.
struct RecordKey {
    bytes: [u8; 21],
    len: usize,
}

impl RecordKey {
    fn coordinator(id: u128) -> RecordKey {
        let mut bytes = [0u8; 21];
        bytes[..17].copy_from_slice(&id_key(COORDINATOR, id));
        RecordKey { bytes, len: 17 }
    }

    fn leg(coordinator: ShardId, id: u128) -> RecordKey {
        RecordKey {
            bytes: leg_key(coordinator, id),
            len: 21,
        }
    }
}

impl AsRef<[u8]> for RecordKey {
    fn as_ref(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

fn key_id(k: &[u8]) -> Option<u128> {
    Some(u128::from_be_bytes(k.get(1..17)?.try_into().ok()?))
}

/// A participant's key: `l | coordinator | id`. Ids are unique per
/// coordinator only, so two coordinators' transfers with one id are two
/// legs here (and the ledger refuses the second: its id is taken).
fn leg_key(coordinator: ShardId, id: u128) -> [u8; 21] {
    let mut k = [0u8; 21];
    k[0] = PARTICIPANT;
    k[1..5].copy_from_slice(&coordinator.to_be_bytes());
    k[5..].copy_from_slice(&id.to_be_bytes());
    k
}

fn leg_key_parts(k: &[u8]) -> Option<(ShardId, u128)> {
    let coordinator = u32::from_be_bytes(k.get(1..5)?.try_into().ok()?);
    let id = u128::from_be_bytes(k.get(5..21)?.try_into().ok()?);
    Some((coordinator, id))
}

/// The pending leg of `u` on `shard`: the debit side reserves from the
/// account into the settlement account, the credit side from the
/// settlement account into the account. No timeout: a leg is only ever
/// settled by the decision (`initiate` refuses a transfer with one). The
/// debit leg keeps the user's `pending_id`, so that the ledger refuses a
/// nonzero one as it would on one shard.
pub(crate) fn leg_of(u: &Transfer, shard: ShardId, debit_side: bool) -> Transfer {
    let settlement = ids::settlement_account(u.ledger, shard);
    let (debit_account_id, credit_account_id) = if debit_side {
        (u.debit_account_id, settlement)
    } else {
        (settlement, u.credit_account_id)
    };
    Transfer {
        debit_account_id,
        credit_account_id,
        pending_id: if debit_side { u.pending_id } else { 0 },
        timeout: 0,
        flags: TransferFlags::PENDING,
        ..*u
    }
}

/// The post (`commit`) or void of leg `id`: every other field inherits.
fn settle_of(id: u128, commit: bool) -> Transfer {
    Transfer {
        id: ids::settle_id(id, commit),
        pending_id: id,
        flags: if commit {
            TransferFlags::POST_PENDING_TRANSFER
        } else {
            TransferFlags::VOID_PENDING_TRANSFER
        },
        ..Transfer::default()
    }
}

/// One shard.
#[derive(Debug)]
pub(crate) struct Node {
    pub(crate) shard: ShardId,
    pub(crate) ledger: Ledger,
    dir: PathBuf,
    sabotage: Option<Sabotage>,
    /// What owes a message (rebuilt from the records at open).
    owing: Mutex<Owing>,
    /// Ledgers whose settlement account exists here.
    settlement: Mutex<BTreeSet<u32>>,
    /// The ledger does not sync each commit (`SyncMode::Interval` or
    /// `Never`): sync before anything leaves, so that no other shard ever
    /// learns of a state a crash here could take back.
    sync_before_send: bool,
}

/// The records that owe a message.
#[derive(Debug, Default)]
struct Owing {
    /// Transfers this shard coordinates that are not final.
    coordinating: BTreeSet<u128>,
    /// Legs prepared here whose decision has not come.
    in_doubt: BTreeSet<(ShardId, u128)>,
}

impl Node {
    /// Opens shard `shard` in `dir`, rebuilding the state of every transfer
    /// it coordinates from its events, and what it owes.
    pub(crate) fn open(
        shard: ShardId,
        dir: &Path,
        options: LedgerOptions,
        sabotage: Option<Sabotage>,
    ) -> Result<Node> {
        let sync_before_send =
            options.engine.sync != SyncMode::Always && sabotage != Some(Sabotage::NoSyncBeforeSend);
        let ledger = Ledger::open(dir, options)?;
        let node = Node {
            shard,
            ledger,
            dir: dir.to_path_buf(),
            sabotage,
            owing: Mutex::new(Owing::default()),
            settlement: Mutex::new(BTreeSet::new()),
            sync_before_send,
        };
        let snap = node.ledger.snapshot();
        let mut owing = Owing::default();
        for (id, agg) in node.aggregates(&snap)? {
            if !agg.state.is_final() {
                owing.coordinating.insert(id);
            }
        }
        for (k, v) in snap.extra_scan_prefix(&[PARTICIPANT])? {
            let key = leg_key_parts(&k).ok_or_else(|| node.damaged("bad leg key"))?;
            let rec = LegRecord::decode(&v).ok_or_else(|| node.damaged("bad leg"))?;
            if rec.leg == Leg::Prepared {
                owing.in_doubt.insert(key);
            }
        }
        *node.owing.lock() = owing;
        Ok(node)
    }

    fn damaged(&self, reason: impl std::fmt::Display) -> Error {
        Error::corruption(&self.dir, 0, format!("cluster record: {reason}"))
    }

    fn decode_coordinator(&self, v: Option<Bytes>) -> Result<Option<CoordinatorRecord>> {
        v.map(|v| CoordinatorRecord::decode(&v).ok_or_else(|| self.damaged("bad transfer record")))
            .transpose()
    }

    fn decode_leg(&self, v: Option<Bytes>) -> Result<Option<LegRecord>> {
        v.map(|v| LegRecord::decode(&v).ok_or_else(|| self.damaged("bad leg record")))
            .transpose()
    }

    fn fold(&self, rec: &CoordinatorRecord) -> Result<Aggregate> {
        Aggregate::fold(&rec.events).map_err(|e| self.damaged(e))
    }

    /// Every transfer this shard coordinates, folded from its events.
    pub(crate) fn aggregates(&self, snap: &LedgerSnapshot) -> Result<BTreeMap<u128, Aggregate>> {
        let mut out = BTreeMap::new();
        for (k, v) in snap.extra_scan_prefix(&[COORDINATOR])? {
            let id = key_id(&k).ok_or_else(|| self.damaged("bad transfer key"))?;
            if let Some(rec) = self.decode_coordinator(Some(v))? {
                out.insert(id, self.fold(&rec)?);
            }
        }
        Ok(out)
    }

    /// The state of transfer `id` if this shard coordinates it.
    pub(crate) fn aggregate(&self, snap: &LedgerSnapshot, id: u128) -> Result<Option<Aggregate>> {
        self.fold_stored(snap.extra_get(&id_key(COORDINATOR, id))?)
    }

    /// The fold of a stored coordinator record, if there is one.
    fn fold_stored(&self, v: Option<Bytes>) -> Result<Option<Aggregate>> {
        self.decode_coordinator(v)?
            .map(|rec| self.fold(&rec))
            .transpose()
    }

    /// The state of transfer `id` at the latest version inside a commit,
    /// if this shard coordinates it (`aggregate`, for a snapshot).
    fn aggregate_latest(&self, extra: &Extra<'_, '_>, id: u128) -> Result<Option<Aggregate>> {
        self.fold_stored(extra.get(&id_key(COORDINATOR, id))?)
    }

    fn coordinator_latest(&self, extra: &Extra<'_, '_>, id: u128) -> Result<CoordinatorRecord> {
        self.decode_coordinator(extra.get(&id_key(COORDINATOR, id))?)?
            .ok_or_else(|| self.damaged(format!("transfer {id} has no record")))
    }

    fn leg(
        &self,
        snap: &LedgerSnapshot,
        coordinator: ShardId,
        id: u128,
    ) -> Result<Option<LegRecord>> {
        self.decode_leg(snap.extra_get(&leg_key(coordinator, id))?)
    }

    /// How many transfers this shard coordinates that are not final.
    pub(crate) fn in_flight(&self) -> usize {
        self.owing.lock().coordinating.len()
    }

    /// How many records owe a message (coordinated transfers not final,
    /// legs in doubt).
    pub(crate) fn owing(&self) -> usize {
        let o = self.owing.lock();
        o.coordinating.len() + o.in_doubt.len()
    }

    /// Creates the settlement accounts of `ledgers` that this shard lacks.
    fn ensure_settlement(&self, ledgers: impl IntoIterator<Item = u32>) -> Result<()> {
        let mut wanted: Vec<u32> = {
            let known = self.settlement.lock();
            ledgers
                .into_iter()
                .filter(|l| *l != 0 && !known.contains(l))
                .collect()
        };
        if wanted.is_empty() {
            return Ok(());
        }
        wanted.sort_unstable();
        wanted.dedup();
        let ids: Vec<u128> = wanted
            .iter()
            .map(|&l| ids::settlement_account(l, self.shard))
            .collect();
        let found = self.ledger.lookup_accounts(&ids)?;
        let missing: Vec<Account> = wanted
            .iter()
            .zip(&ids)
            .filter(|(_, id)| !found.iter().any(|a| a.id == **id))
            .map(|(&ledger, &id)| Account {
                id,
                ledger,
                code: u16::MAX,
                ..Account::default()
            })
            .collect();
        if !missing.is_empty() {
            self.ledger.create_accounts(&missing)?;
        }
        self.settlement.lock().extend(wanted);
        Ok(())
    }

    /// The outbox as the (possibly broken) protocol keeps it.
    fn keep(&self, owed: Owed) -> Owed {
        if self.sabotage == Some(Sabotage::NoOutbox) {
            None
        } else {
            owed
        }
    }

    /// Appends `events` to transfer `id`'s record `rec` (whose events fold
    /// to `agg`), sets what it owes, and writes it back; returns the new
    /// state.
    fn advance(
        &self,
        extra: &mut Extra<'_, '_>,
        (mut rec, mut agg): (CoordinatorRecord, Aggregate),
        id: u128,
        events: &[Event],
        owed: Owed,
    ) -> Result<Aggregate> {
        for e in events {
            agg.apply(e).map_err(|why| self.damaged(why))?;
        }
        rec.events.extend_from_slice(events);
        rec.owed = self.keep(owed);
        extra.put(&id_key(COORDINATOR, id), &rec.encode())?;
        Ok(agg)
    }

    fn put_leg(&self, extra: &mut Extra<'_, '_>, id: u128, mut rec: LegRecord) -> Result<()> {
        rec.owed = self.keep(rec.owed);
        extra.put(&leg_key(rec.coordinator, id), &rec.encode())
    }

    /// Runs a call's part on this shard, in input order, in one commit:
    /// transfers within the shard (`(transfer, None)`) as they are, and
    /// cross-shard transfers it coordinates (`(transfer, Some(credit
    /// shard))`): each debit leg its rules allow is reserved and recorded
    /// (`TransferInitiated`, `LegPrepared`) with `Prepare` owed to the
    /// credit shard; the same `Prepare`s are returned to send. One commit
    /// in input order, as one ledger runs a call: of two items with the
    /// same id, the first takes it, whichever kind each is.
    pub(crate) fn initiate(
        &self,
        items: &[(Transfer, Option<ShardId>)],
    ) -> Result<(Vec<Started>, Effects)> {
        // A plain transfer may not carry a timeout; its legs cannot either
        // (one that expired on its own would break the protocol).
        let mut started =
            vec![
                Started::Refused(CreateTransferResult::TimeoutReservedForPendingTransfer);
                items.len()
            ];
        let run: Vec<usize> = (0..items.len())
            .filter(|&i| items[i].1.is_none() || items[i].0.timeout == 0)
            .collect();
        if run.is_empty() {
            return Ok((started, Effects::default()));
        }
        self.ensure_settlement(
            run.iter()
                .filter(|&&i| items[i].1.is_some())
                .map(|&i| items[i].0.ledger),
        )?;
        let batch: Vec<Transfer> = run
            .iter()
            .map(|&i| match items[i] {
                (u, None) => u,
                (u, Some(_)) => leg_of(&u, self.shard, true),
            })
            .collect();
        let mut effects = Effects::default();
        // Cross-shard items whose id is taken by a transfer on this shard
        // alone (by position in `run`): compared with it after the commit.
        let mut taken = Vec::new();
        let (_, outcome) = self
            .ledger
            .submit_transfers_with(&batch, |results, extra| {
                let mut started = Vec::with_capacity(run.len());
                for (k, (&i, &r)) in run.iter().zip(results).enumerate() {
                    let (u, credit_shard) = items[i];
                    let Some(credit_shard) = credit_shard else {
                        started.push(Started::Done(self.local_result(extra, &u, r)?));
                        continue;
                    };
                    started.push(match r {
                        CreateTransferResult::Ok => {
                            let first = Event::TransferInitiated {
                                transfer: u,
                                debit_shard: self.shard,
                                credit_shard,
                            };
                            let rec = CoordinatorRecord {
                                owed: None,
                                events: vec![first],
                            };
                            let prepare = Message::Prepare { transfer: u };
                            let events = [Event::LegPrepared(self.shard)];
                            let agg = self.fold(&rec)?;
                            let owed = Some((credit_shard, prepare));
                            self.advance(extra, (rec, agg), u.id, &events, owed)?;
                            effects.send.push((credit_shard, prepare));
                            Started::InFlight
                        }
                        // The debit leg's credit account is the settlement
                        // account of the transfer's ledger: a debit account
                        // on another ledger is the transfer's mismatch.
                        CreateTransferResult::AccountsMustHaveTheSameLedger => Started::Refused(
                            CreateTransferResult::TransferMustHaveTheSameLedgerAsAccounts,
                        ),
                        r if r.is_transient() || !is_exists(r) => Started::Refused(r),
                        r => match self.aggregate_latest(extra, u.id)? {
                            // The id belongs to a transfer on this shard alone.
                            None => {
                                taken.push(k);
                                Started::Refused(r)
                            }
                            Some(agg) => match transfer_exists(&u, &agg.transfer, None) {
                                CreateTransferResult::Exists
                                    if self.sabotage == Some(Sabotage::RetryAnsweredExists) =>
                                {
                                    Started::Refused(CreateTransferResult::Exists)
                                }
                                CreateTransferResult::Exists => Started::Existing,
                                // As on one ledger, an id whose transfer
                                // failed on state that may change is spent,
                                // whatever comes under it again.
                                _ if agg.state != TransferState::Committed
                                    && agg.refusal.is_some_and(|r| r.is_transient()) =>
                                {
                                    Started::Refused(CreateTransferResult::IdAlreadyFailed)
                                }
                                differs => Started::Refused(differs),
                            },
                        },
                    });
                }
                Ok(started)
            })?;
        // `r` compared the debit leg with that transfer; the user's
        // transfer is what the code must describe.
        let mut outcome = outcome;
        if !taken.is_empty() {
            let ids: Vec<u128> = taken.iter().map(|&k| items[run[k]].0.id).collect();
            let stored = self.ledger.lookup_transfers(&ids)?;
            for &k in &taken {
                let u = &items[run[k]].0;
                if let Some(e) = stored.iter().find(|e| e.id == u.id) {
                    outcome[k] = Started::Refused(transfer_exists(u, e, None));
                }
            }
        }
        let mut owing = self.owing.lock();
        for (s, &i) in outcome.into_iter().zip(&run) {
            if s == Started::InFlight {
                owing.coordinating.insert(items[i].0.id);
            }
            started[i] = s;
        }
        drop(owing);
        self.durable_before_send(&effects)?;
        Ok((started, effects))
    }

    /// Transfers within this shard, through its ledger's own call (the
    /// fast path, when the call has no cross-shard transfer for this
    /// shard to coordinate), with `local_result`'s codes.
    pub(crate) fn create_local(&self, transfers: &[Transfer]) -> Result<Vec<CreateTransferResult>> {
        let mut results = self.ledger.create_transfers(transfers)?;
        for r in &mut results {
            *r = self.exists_answered(*r);
        }
        if results.iter().any(|&r| is_exists(r)) {
            // A record, once written, keeps its transfer: a snapshot
            // after the call reads the one `r` compared.
            let snap = self.ledger.snapshot();
            for (u, r) in transfers.iter().zip(&mut results) {
                if is_exists(*r)
                    && let Some(agg) = self.aggregate(&snap, u.id)?
                {
                    *r = transfer_exists(u, &agg.transfer, None);
                }
            }
        }
        Ok(results)
    }

    /// The result of transfer `u` within this shard, whose ledger gave
    /// `r`: when its id is a cross-shard transfer's that this shard
    /// coordinates, `r` compared it with that transfer's debit leg, and
    /// the code must describe the difference from the transfer itself.
    fn local_result(
        &self,
        extra: &Extra<'_, '_>,
        u: &Transfer,
        r: CreateTransferResult,
    ) -> Result<CreateTransferResult> {
        let r = self.exists_answered(r);
        if !is_exists(r) {
            return Ok(r);
        }
        Ok(match self.aggregate_latest(extra, u.id)? {
            Some(agg) => transfer_exists(u, &agg.transfer, None),
            None => r,
        })
    }

    /// `r`, the ledger's answer to a transfer within this shard, as the
    /// shard gives it: itself, but `Ok` for `Exists` under
    /// `Sabotage::ExistsAnsweredOk`.
    fn exists_answered(&self, r: CreateTransferResult) -> CreateTransferResult {
        match r {
            CreateTransferResult::Exists if self.sabotage == Some(Sabotage::ExistsAnsweredOk) => {
                CreateTransferResult::Ok
            }
            r => r,
        }
    }

    /// Handles envelopes of messages as one commit (at most; none if
    /// everything in them is a duplicate), returning the replies and the
    /// transfers that became final.
    pub(crate) fn handle(&self, envs: &[Envelope]) -> Result<Effects> {
        // Duplicates within the envelopes: one of each (sender, kind, id,
        // content) is enough; a `Prepare` is known by its id.
        let mut seen = HashSet::new();
        let msgs: Vec<(ShardId, Message)> = envs
            .iter()
            .flat_map(|e| e.messages.iter().map(move |m| (e.from, *m)))
            .filter(|(from, m)| seen.insert((*from, dedup_key(m))))
            .collect();
        let mut effects = Effects::default();
        for chunk in msgs.chunks(MAX_BATCH_EVENTS / 2) {
            self.handle_chunk(chunk, &mut effects)?;
        }
        self.durable_before_send(&effects)?;
        Ok(effects)
    }

    /// Under a sync mode that does not sync each commit, syncs the log
    /// before `fx` leaves: what is sent (or reported final) is durable.
    fn durable_before_send(&self, fx: &Effects) -> Result<()> {
        if self.sync_before_send && !(fx.send.is_empty() && fx.finished.is_empty()) {
            self.ledger.engine().sync()?;
        }
        Ok(())
    }

    fn handle_chunk(&self, msgs: &[(ShardId, Message)], fx: &mut Effects) -> Result<()> {
        let prepares = msgs.iter().filter_map(|(_, m)| match m {
            Message::Prepare { transfer } => Some(transfer.ledger),
            _ => None,
        });
        self.ensure_settlement(prepares)?;
        // The records the plan and the commit read, message by message:
        // brought into the cache first, in one pass whose misses overlap.
        let records: Vec<RecordKey> = msgs
            .iter()
            .map(|&(from, m)| match m {
                Message::Prepare { transfer } => RecordKey::leg(from, transfer.id),
                Message::Decision { id, .. } => RecordKey::leg(from, id),
                Message::Vote { id, .. } | Message::Done { id, .. } => RecordKey::coordinator(id),
            })
            .collect();
        self.ledger.core().warm(&records);
        let snap = self.ledger.snapshot();
        // Plan: what each message needs from the ledger, decided from the
        // snapshot (only this thread changes these records).
        // Which `Done`s are about a transfer this shard still coordinates
        // (not final): the others are duplicates, or about no transfer of
        // ours, and need nothing (no commit, no sync). Known without
        // reading their records.
        let unfinished: HashSet<u128> = {
            let owing = self.owing.lock();
            msgs.iter()
                .filter_map(|(_, m)| match m {
                    Message::Done { id, .. } if owing.coordinating.contains(id) => Some(*id),
                    _ => None,
                })
                .collect()
        };
        let mut transfers = Vec::new();
        let mut plan = Vec::with_capacity(msgs.len());
        for &(from, m) in msgs {
            let step = self.plan(&snap, from, m, fx, &unfinished)?;
            if let Some(t) = step.transfer() {
                transfers.push(t);
            }
            plan.push((from, m, step));
        }
        if plan.iter().all(|(_, _, s)| matches!(s, Step::Nothing)) {
            return Ok(());
        }
        let (_, (sends, finished)) =
            self.ledger
                .submit_transfers_with(&transfers, |results, extra| {
                    let mut results = results.iter().copied();
                    let mut out = (Vec::new(), Vec::new());
                    for &(from, m, step) in &plan {
                        let r = if step.transfer().is_some() {
                            results.next()
                        } else {
                            None
                        };
                        self.commit_step(extra, from, m, step, r, &mut out)?;
                    }
                    Ok(out)
                })?;
        let mut owing = self.owing.lock();
        for &(from, m, step) in &plan {
            if let Step::Settle { .. } = step {
                owing.in_doubt.remove(&(from, m.id()));
            }
        }
        // The legs this commit prepared: each sent a yes vote.
        for &(to, s) in &sends {
            if let Message::Vote { id, refused: None } = s {
                owing.in_doubt.insert((to, id));
            }
        }
        for o in &finished {
            owing.coordinating.remove(&o.id);
        }
        drop(owing);
        fx.send.extend(sends);
        fx.finished.extend(finished);
        Ok(())
    }

    /// Decides what message `m` needs, replying at once to duplicates
    /// (`unfinished`: the transfers of this chunk's `Done`s that this
    /// shard still coordinates).
    fn plan(
        &self,
        snap: &LedgerSnapshot,
        from: ShardId,
        m: Message,
        fx: &mut Effects,
        unfinished: &HashSet<u128>,
    ) -> Result<Step> {
        Ok(match m {
            Message::Prepare { transfer } => {
                let leg = if self.sabotage == Some(Sabotage::NoIdempotency) {
                    None
                } else {
                    self.leg(snap, from, transfer.id)?.map(|r| r.leg)
                };
                match leg {
                    None => Step::Reserve(leg_of(&transfer, self.shard, false)),
                    Some(Leg::Refused(code)) => {
                        fx.send.push((from, vote(transfer.id, Some(code))));
                        Step::Nothing
                    }
                    Some(Leg::Prepared | Leg::Settled { .. }) => {
                        fx.send.push((from, vote(transfer.id, None)));
                        Step::Nothing
                    }
                }
            }
            Message::Vote { id, refused } => {
                let Some(agg) = self.aggregate(snap, id)? else {
                    return Err(
                        self.damaged(format!("a vote from {from} on unknown transfer {id}"))
                    );
                };
                match agg.state {
                    TransferState::Preparing => Step::Decide {
                        commit: refused.is_none(),
                        settle: settle_of(id, refused.is_none()),
                    },
                    // Decided before: the participant is still in doubt.
                    TransferState::Committing | TransferState::Committed => {
                        fx.send.push((from, Message::Decision { id, commit: true }));
                        Step::Nothing
                    }
                    TransferState::Aborting | TransferState::Aborted => {
                        if agg.prepared[1] {
                            fx.send
                                .push((from, Message::Decision { id, commit: false }));
                        }
                        Step::Nothing
                    }
                    TransferState::Initiated | TransferState::Prepared => {
                        return Err(self.damaged(format!("vote on {id} in state {:?}", agg.state)));
                    }
                }
            }
            Message::Decision { id, commit } => match self.leg(snap, from, id)?.map(|r| r.leg) {
                Some(Leg::Prepared) => Step::Settle {
                    commit,
                    settle: settle_of(id, commit),
                },
                Some(Leg::Settled { posted }) => {
                    // (The broken protocol acknowledges whatever comes.)
                    let done = if self.sabotage == Some(Sabotage::ParticipantDropsLeg) {
                        commit
                    } else {
                        posted
                    };
                    fx.send.push((from, Message::Done { id, commit: done }));
                    Step::Nothing
                }
                // Nothing was reserved here, so there is nothing to void.
                Some(Leg::Refused(_)) | None if !commit => {
                    fx.send.push((from, Message::Done { id, commit }));
                    Step::Nothing
                }
                other => {
                    return Err(self.damaged(format!(
                        "a commit decision for {id} on a leg that is {other:?}"
                    )));
                }
            },
            // Checked against the record inside the commit, which reads it
            // anyway (`commit_step`); a transfer that is final here, or no
            // transfer of ours, needs nothing.
            Message::Done { id, commit } if unfinished.contains(&id) => Step::Record { commit },
            Message::Done { .. } => Step::Nothing,
        })
    }

    /// Makes the durable part of `step` inside the commit.
    fn commit_step(
        &self,
        extra: &mut Extra<'_, '_>,
        from: ShardId,
        m: Message,
        step: Step,
        result: Option<CreateTransferResult>,
        (sends, finished): &mut (Vec<(ShardId, Message)>, Vec<Outcome>),
    ) -> Result<()> {
        let id = m.id();
        let me = self.shard;
        match step {
            Step::Nothing => {}
            Step::Reserve(_) => {
                let r = match result.unwrap_or(CreateTransferResult::Ok) {
                    // The id is another coordinator's transfer's here, and
                    // its debit account is on that other shard.
                    CreateTransferResult::Exists => {
                        CreateTransferResult::ExistsWithDifferentDebitAccountId
                    }
                    r => r,
                };
                let (leg, reply) = if r == CreateTransferResult::Ok {
                    (Leg::Prepared, vote(id, None))
                } else {
                    (Leg::Refused(r), vote(id, Some(r)))
                };
                // A yes vote is owed until the decision comes; a refusal
                // is only a reply (the coordinator asks again if it is
                // lost).
                let owed = (leg == Leg::Prepared).then_some((from, reply));
                let rec = LegRecord {
                    leg,
                    coordinator: from,
                    owed,
                };
                self.put_leg(extra, id, rec)?;
                sends.push((from, reply));
            }
            Step::Decide { commit, .. } => {
                self.expect_settled(result, id)?;
                let rec = self.coordinator_latest(extra, id)?;
                let folded = self.fold(&rec)?;
                let credit = folded.credit_shard;
                let agg = if commit {
                    let events = [
                        Event::LegPrepared(credit),
                        Event::CommitDecided,
                        Event::LegPosted(me),
                    ];
                    let decision = Message::Decision { id, commit: true };
                    sends.push((credit, decision));
                    self.advance(extra, (rec, folded), id, &events, Some((credit, decision)))?
                } else {
                    let code = match m {
                        Message::Vote {
                            refused: Some(code),
                            ..
                        } => code,
                        _ => CreateTransferResult::LinkedEventFailed,
                    };
                    let events = [
                        Event::LegRefused(credit, code),
                        Event::AbortDecided,
                        Event::LegVoided(me),
                    ];
                    self.advance(extra, (rec, folded), id, &events, None)?
                };
                if agg.state.is_final() {
                    finished.push(Outcome {
                        shard: me,
                        id,
                        committed: agg.state == TransferState::Committed,
                        refusal: agg.refusal,
                    });
                }
            }
            Step::Settle { commit, .. } => {
                if self.sabotage != Some(Sabotage::ParticipantDropsLeg) {
                    self.expect_settled(result, id)?;
                }
                let rec = LegRecord {
                    leg: Leg::Settled { posted: commit },
                    coordinator: from,
                    owed: None,
                };
                self.put_leg(extra, id, rec)?;
                sends.push((from, Message::Done { id, commit }));
            }
            Step::Record { commit } => {
                let Some(rec) = self.decode_coordinator(extra.get(&id_key(COORDINATOR, id))?)?
                else {
                    return Ok(()); // not a transfer of this shard's
                };
                let agg = self.fold(&rec)?;
                if agg.settled[1] || !agg.prepared[1] {
                    // A duplicate, or a transfer whose credit leg never
                    // held a reservation: nothing to record.
                    return Ok(());
                }
                let expect = if commit {
                    TransferState::Committing
                } else {
                    TransferState::Aborting
                };
                if agg.state != expect {
                    return Err(self.damaged(format!("done({commit}) for {id} in {:?}", agg.state)));
                }
                let e = if commit {
                    Event::LegPosted(from)
                } else {
                    Event::LegVoided(from)
                };
                let agg = self.advance(extra, (rec, agg), id, &[e], None)?;
                finished.push(Outcome {
                    shard: me,
                    id,
                    committed: commit,
                    refusal: agg.refusal,
                });
            }
        }
        Ok(())
    }

    fn expect_settled(&self, r: Option<CreateTransferResult>, id: u128) -> Result<()> {
        match r {
            // Exists: settled by an earlier delivery whose record we read.
            Some(CreateTransferResult::Ok | CreateTransferResult::Exists) => Ok(()),
            other => Err(self.damaged(format!("settling leg {id} gave {other:?}"))),
        }
    }

    /// Everything the records owe, to send again: how a lost message, or
    /// one a crash kept from being sent, gets through.
    pub(crate) fn resend(&self) -> Result<Effects> {
        let (coordinating, in_doubt): (Vec<u128>, Vec<(ShardId, u128)>) = {
            let o = self.owing.lock();
            (
                o.coordinating.iter().copied().collect(),
                o.in_doubt.iter().copied().collect(),
            )
        };
        let snap = self.ledger.snapshot();
        let mut fx = Effects::default();
        for id in coordinating {
            let rec = self.decode_coordinator(snap.extra_get(&id_key(COORDINATOR, id))?)?;
            if let Some(owed) = rec.and_then(|r| r.owed) {
                fx.send.push(owed);
            }
        }
        let mut dropped = Vec::new();
        for (coordinator, id) in in_doubt {
            let Some(rec) = self.leg(&snap, coordinator, id)? else {
                continue;
            };
            if self.sabotage == Some(Sabotage::ParticipantDropsLeg) && rec.leg == Leg::Prepared {
                dropped.push((rec.coordinator, id));
                continue;
            }
            if let Some(owed) = rec.owed {
                fx.send.push(owed);
            }
        }
        if !dropped.is_empty() {
            // The broken protocol: give up waiting and void the leg.
            let voids: Vec<Transfer> = dropped
                .iter()
                .map(|&(_, id)| settle_of(id, false))
                .collect();
            self.ledger.submit_transfers_with(&voids, |_, extra| {
                for &(coordinator, id) in &dropped {
                    let rec = LegRecord {
                        leg: Leg::Settled { posted: false },
                        coordinator,
                        owed: None,
                    };
                    self.put_leg(extra, id, rec)?;
                }
                Ok(())
            })?;
            let mut owing = self.owing.lock();
            for key in dropped {
                owing.in_doubt.remove(&key);
            }
        }
        self.durable_before_send(&fx)?;
        Ok(fx)
    }
}

/// What tells two messages about one transfer apart: (kind, id, detail).
fn dedup_key(m: &Message) -> (u8, u128, u8) {
    match *m {
        Message::Prepare { transfer } => (0, transfer.id, 0),
        Message::Vote { id, refused } => (1, id, refused.map_or(0xFF, |r| r as u8)),
        Message::Decision { id, commit } => (2, id, u8::from(commit)),
        Message::Done { id, commit } => (3, id, u8::from(commit)),
    }
}

fn vote(id: u128, refused: Option<CreateTransferResult>) -> Message {
    Message::Vote { id, refused }
}

fn is_exists(r: CreateTransferResult) -> bool {
    use CreateTransferResult as R;
    matches!(
        r,
        R::Exists
            | R::ExistsWithDifferentFlags
            | R::ExistsWithDifferentPendingId
            | R::ExistsWithDifferentTimeout
            | R::ExistsWithDifferentDebitAccountId
            | R::ExistsWithDifferentCreditAccountId
            | R::ExistsWithDifferentAmount
            | R::ExistsWithDifferentUserData128
            | R::ExistsWithDifferentUserData64
            | R::ExistsWithDifferentUserData32
            | R::ExistsWithDifferentLedger
            | R::ExistsWithDifferentCode
    )
}

/// What one message needs.
#[derive(Debug, Clone, Copy)]
enum Step {
    /// A duplicate, answered already.
    Nothing,
    /// Participant: reserve the credit leg, then vote.
    Reserve(Transfer),
    /// Coordinator: the vote decides; settle the debit leg.
    Decide { commit: bool, settle: Transfer },
    /// Participant: apply the decision to the credit leg.
    Settle { commit: bool, settle: Transfer },
    /// Coordinator: the participant applied the decision.
    Record { commit: bool },
}

impl Step {
    fn transfer(&self) -> Option<Transfer> {
        match *self {
            Step::Reserve(t) | Step::Decide { settle: t, .. } | Step::Settle { settle: t, .. } => {
                Some(t)
            }
            Step::Nothing | Step::Record { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Options;

    /// A `Done` about no transfer this shard still coordinates (a
    /// duplicate after the transfer became final, or an unknown id) needs
    /// no commit: nothing is logged nor synced for it. Fails when such a
    /// `Done` plans a step (tried: one commit and one sync per call).
    #[test]
    fn a_done_about_no_unfinished_transfer_commits_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = LedgerOptions {
            engine: Options {
                sync: SyncMode::Always,
                ..Options::default()
            },
            ..LedgerOptions::default()
        };
        let node = Node::open(0, dir.path(), options, None).expect("open");
        let before = node.ledger.stats();
        for commit in [true, false, true] {
            let env = Envelope {
                from: 1,
                messages: vec![Message::Done { id: 42, commit }],
            };
            let fx = node.handle(&[env]).expect("handle");
            assert!(fx.send.is_empty() && fx.finished.is_empty());
        }
        let after = node.ledger.stats();
        assert_eq!(
            (after.commits, after.syncs, after.log_bytes),
            (before.commits, before.syncs, before.log_bytes)
        );
    }
}
