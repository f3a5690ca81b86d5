//! One shard of a cluster: its `Ledger`, and the two-phase commit handlers
//! that run on it. Transport-free: every call returns what to send, and the
//! driver (`Cluster`'s threads or the simulator) delivers it.
//!
//! A shard keeps, beside its ledger and in the same commits (see
//! `Ledger::submit_transfers_with`):
//! - `e | id | seq`: the events of each cross-shard transfer it coordinates
//!   (it holds the debit account); the state is their fold.
//! - `o | id | to`: its outbox, the message it owes shard `to` about `id`,
//!   re-sent until answered.
//! - `l | id`: its leg as a participant (the credit side): prepared,
//!   refused (with the reason), posted or voided.
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
//! commit: only that thread changes it after initiation. The commit
//! itself re-reads the state at the latest version and fails loudly if it
//! moved.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use parking_lot::Mutex;

use super::ids::{self, ShardId};
use super::message::{Envelope, Message};
use super::state::{Aggregate, Event, TransferState};
use crate::error::{Error, Result};
use crate::ledger::{
    Account, CreateTransferResult, Extra, Ledger, LedgerOptions, LedgerSnapshot, MAX_BATCH_EVENTS,
    Transfer, TransferFlags, transfer_exists,
};

const EVENT: u8 = b'e';
const OUTBOX: u8 = b'o';
const LEG: u8 = b'l';

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
}

/// How a cross-shard transfer ended, for whoever waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
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

/// What `initiate` did with one cross-shard transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Started {
    /// Refused before anything was recorded (the debit leg's rule, or a
    /// duplicate id with different fields).
    Refused(CreateTransferResult),
    /// Recorded; its debit leg is reserved and `Prepare` is on its way.
    InFlight,
    /// The same transfer was initiated before: wait for that one.
    Existing,
}

/// A participant's leg, as `l | id` stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leg {
    Prepared { coordinator: ShardId },
    Refused(CreateTransferResult),
    Settled { coordinator: ShardId, posted: bool },
}

impl Leg {
    fn encode(self) -> Vec<u8> {
        let mut out = Vec::with_capacity(6);
        match self {
            Leg::Prepared { coordinator } => {
                out.push(1);
                out.extend_from_slice(&coordinator.to_le_bytes());
            }
            Leg::Refused(code) => {
                out.push(2);
                out.push(code as u8);
            }
            Leg::Settled {
                coordinator,
                posted,
            } => {
                out.push(if posted { 3 } else { 4 });
                out.extend_from_slice(&coordinator.to_le_bytes());
            }
        }
        out
    }

    fn decode(b: &[u8]) -> Option<Leg> {
        let shard = |r: &[u8]| Some(u32::from_le_bytes(r.try_into().ok()?));
        match b.split_first()? {
            (&1, r) => Some(Leg::Prepared {
                coordinator: shard(r)?,
            }),
            (&2, [code]) => Some(Leg::Refused(
                *CreateTransferResult::ALL.get(usize::from(*code))?,
            )),
            (&k @ (3 | 4), r) => Some(Leg::Settled {
                coordinator: shard(r)?,
                posted: k == 3,
            }),
            _ => None,
        }
    }
}

fn id_key(tag: u8, id: u128) -> [u8; 17] {
    let mut k = [0u8; 17];
    k[0] = tag;
    k[1..].copy_from_slice(&id.to_be_bytes());
    k
}

fn event_key(id: u128, seq: u16) -> [u8; 19] {
    let mut k = [0u8; 19];
    k[..17].copy_from_slice(&id_key(EVENT, id));
    k[17..].copy_from_slice(&seq.to_be_bytes());
    k
}

fn outbox_key(id: u128, to: ShardId) -> [u8; 21] {
    let mut k = [0u8; 21];
    k[..17].copy_from_slice(&id_key(OUTBOX, id));
    k[17..].copy_from_slice(&to.to_be_bytes());
    k
}

/// The pending leg of `u` on `shard`: the debit side reserves from the
/// account into the settlement account, the credit side from the
/// settlement account into the account. No timeout: a leg is only ever
/// settled by the decision.
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
        pending_id: 0,
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
    /// Unfinished transfers this shard coordinates (rebuilt from the
    /// events at open).
    in_flight: Mutex<BTreeMap<u128, TransferState>>,
}

impl Node {
    /// Opens shard `shard` in `dir`, rebuilding the state of every transfer
    /// it coordinates from their events.
    pub(crate) fn open(
        shard: ShardId,
        dir: &Path,
        options: LedgerOptions,
        sabotage: Option<Sabotage>,
    ) -> Result<Node> {
        let ledger = Ledger::open(dir, options)?;
        let node = Node {
            shard,
            ledger,
            dir: dir.to_path_buf(),
            sabotage,
            in_flight: Mutex::new(BTreeMap::new()),
        };
        let mut in_flight = BTreeMap::new();
        for (id, agg) in node.aggregates(&node.ledger.snapshot())? {
            if !agg.state.is_final() {
                in_flight.insert(id, agg.state);
            }
        }
        *node.in_flight.lock() = in_flight;
        Ok(node)
    }

    fn damaged(&self, reason: impl std::fmt::Display) -> Error {
        Error::corruption(&self.dir, 0, format!("cluster record: {reason}"))
    }

    /// Every transfer this shard coordinates, folded from its events.
    pub(crate) fn aggregates(&self, snap: &LedgerSnapshot) -> Result<BTreeMap<u128, Aggregate>> {
        let mut events: BTreeMap<u128, Vec<Event>> = BTreeMap::new();
        for (k, v) in snap.extra_scan_prefix(&[EVENT])? {
            let id = k
                .get(1..17)
                .and_then(|b| b.try_into().ok())
                .map(u128::from_be_bytes)
                .ok_or_else(|| self.damaged("bad event key"))?;
            let e = Event::decode(&v).ok_or_else(|| self.damaged("bad event"))?;
            events.entry(id).or_default().push(e);
        }
        events
            .into_iter()
            .map(|(id, evs)| {
                let agg = Aggregate::fold(&evs).map_err(|e| self.damaged(e))?;
                Ok((id, agg))
            })
            .collect()
    }

    /// The state of transfer `id` if this shard coordinates it.
    pub(crate) fn aggregate(&self, snap: &LedgerSnapshot, id: u128) -> Result<Option<Aggregate>> {
        let evs = snap.extra_scan_prefix(&id_key(EVENT, id))?;
        self.fold_raw(evs.iter().map(|(_, v)| v.as_ref()))
    }

    fn aggregate_latest(&self, extra: &Extra<'_, '_>, id: u128) -> Result<Option<Aggregate>> {
        let evs = extra.scan_prefix(&id_key(EVENT, id), usize::from(u16::MAX))?;
        self.fold_raw(evs.iter().map(|(_, v)| v.as_ref()))
    }

    fn fold_raw<'v>(&self, raw: impl Iterator<Item = &'v [u8]>) -> Result<Option<Aggregate>> {
        let evs = raw
            .map(|v| Event::decode(v).ok_or_else(|| self.damaged("bad event")))
            .collect::<Result<Vec<_>>>()?;
        if evs.is_empty() {
            return Ok(None);
        }
        Aggregate::fold(&evs).map(Some).map_err(|e| self.damaged(e))
    }

    fn leg(&self, snap: &LedgerSnapshot, id: u128) -> Result<Option<Leg>> {
        match snap.extra_get(&id_key(LEG, id))? {
            None => Ok(None),
            Some(v) => Leg::decode(&v)
                .map(Some)
                .ok_or_else(|| self.damaged("bad leg")),
        }
    }

    /// How many transfers this shard coordinates that are not final.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.lock().len()
    }

    /// Creates the settlement accounts of `ledgers` that this shard lacks.
    fn ensure_settlement(&self, ledgers: impl IntoIterator<Item = u32>) -> Result<()> {
        let mut wanted: Vec<u32> = ledgers.into_iter().filter(|&l| l != 0).collect();
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
        Ok(())
    }

    fn append(
        &self,
        extra: &mut Extra<'_, '_>,
        agg: &mut Aggregate,
        id: u128,
        e: Event,
    ) -> Result<()> {
        agg.apply(&e).map_err(|why| self.damaged(why))?;
        extra.put(&event_key(id, agg.events - 1), &e.encode())
    }

    fn owe(
        &self,
        extra: &mut Extra<'_, '_>,
        id: u128,
        to: ShardId,
        m: Option<Message>,
    ) -> Result<()> {
        match m {
            Some(m) if self.sabotage != Some(Sabotage::NoOutbox) => {
                extra.put(&outbox_key(id, to), &m.encode())
            }
            Some(_) => Ok(()),
            None => extra.delete(&outbox_key(id, to)),
        }
    }

    /// Starts cross-shard transfers this shard coordinates: `(transfer,
    /// credit shard)`. One commit reserves every debit leg that its rules
    /// allow, records `TransferInitiated` and `LegPrepared`, and puts
    /// `Prepare` in the outbox; the same `Prepare`s are returned to send.
    pub(crate) fn initiate(
        &self,
        items: &[(Transfer, ShardId)],
    ) -> Result<(Vec<Started>, Effects)> {
        self.ensure_settlement(items.iter().map(|(u, _)| u.ledger))?;
        let legs: Vec<Transfer> = items
            .iter()
            .map(|(u, _)| leg_of(u, self.shard, true))
            .collect();
        let mut effects = Effects::default();
        let (_, started) = self.ledger.submit_transfers_with(&legs, |results, extra| {
            let mut started = Vec::with_capacity(items.len());
            for (&(u, credit_shard), &r) in items.iter().zip(results) {
                started.push(match r {
                    CreateTransferResult::Ok => {
                        let mut agg = Aggregate::fold(&[Event::TransferInitiated {
                            transfer: u,
                            debit_shard: self.shard,
                            credit_shard,
                        }])
                        .map_err(|why| self.damaged(why))?;
                        extra.put(
                            &event_key(u.id, 0),
                            &Event::TransferInitiated {
                                transfer: u,
                                debit_shard: self.shard,
                                credit_shard,
                            }
                            .encode(),
                        )?;
                        self.append(extra, &mut agg, u.id, Event::LegPrepared(self.shard))?;
                        let prepare = Message::Prepare { transfer: u };
                        self.owe(extra, u.id, credit_shard, Some(prepare))?;
                        effects.send.push((credit_shard, prepare));
                        Started::InFlight
                    }
                    r if r.is_transient() || !is_exists(r) => Started::Refused(r),
                    r => match self.aggregate_latest(extra, u.id)? {
                        // The id belongs to a transfer on this shard alone.
                        None => Started::Refused(r),
                        Some(agg) => match transfer_exists(&u, &agg.transfer, None) {
                            CreateTransferResult::Exists => Started::Existing,
                            differs => Started::Refused(differs),
                        },
                    },
                });
            }
            Ok(started)
        })?;
        let mut in_flight = self.in_flight.lock();
        for (s, (u, _)) in started.iter().zip(items) {
            if *s == Started::InFlight {
                in_flight.insert(u.id, TransferState::Preparing);
            }
        }
        Ok((started, effects))
    }

    /// Handles envelopes of messages as one commit (at most; none if
    /// everything in them is a duplicate), returning the replies and the
    /// transfers that became final.
    pub(crate) fn handle(&self, envs: &[Envelope]) -> Result<Effects> {
        let mut seen = HashSet::new();
        let msgs: Vec<(ShardId, Message)> = envs
            .iter()
            .flat_map(|e| e.messages.iter().map(move |m| (e.from, *m)))
            .filter(|(from, m)| seen.insert((*from, m.encode())))
            .collect();
        let mut effects = Effects::default();
        for chunk in msgs.chunks(MAX_BATCH_EVENTS / 2) {
            self.handle_chunk(chunk, &mut effects)?;
        }
        Ok(effects)
    }

    fn handle_chunk(&self, msgs: &[(ShardId, Message)], fx: &mut Effects) -> Result<()> {
        let prepares = msgs.iter().filter_map(|(_, m)| match m {
            Message::Prepare { transfer } => Some(transfer.ledger),
            _ => None,
        });
        self.ensure_settlement(prepares)?;
        let snap = self.ledger.snapshot();
        // Plan: what each message needs from the ledger, decided from the
        // snapshot (only this thread changes these records).
        let mut transfers = Vec::new();
        let mut plan = Vec::with_capacity(msgs.len());
        for &(from, m) in msgs {
            let step = self.plan(&snap, from, m, fx)?;
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
        let mut in_flight = self.in_flight.lock();
        for o in &finished {
            in_flight.remove(&o.id);
        }
        drop(in_flight);
        fx.send.extend(sends);
        fx.finished.extend(finished);
        Ok(())
    }

    /// Decides what message `m` needs, replying at once to duplicates.
    fn plan(
        &self,
        snap: &LedgerSnapshot,
        from: ShardId,
        m: Message,
        fx: &mut Effects,
    ) -> Result<Step> {
        Ok(match m {
            Message::Prepare { transfer } => {
                let leg = if self.sabotage == Some(Sabotage::NoIdempotency) {
                    None
                } else {
                    self.leg(snap, transfer.id)?
                };
                match leg {
                    None => Step::Reserve(leg_of(&transfer, self.shard, false)),
                    Some(Leg::Refused(code)) => {
                        fx.send.push((from, vote(transfer.id, Some(code))));
                        Step::Nothing
                    }
                    Some(Leg::Prepared { .. } | Leg::Settled { .. }) => {
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
            Message::Decision { id, commit } => match self.leg(snap, id)? {
                Some(Leg::Prepared { .. }) => Step::Settle {
                    commit,
                    settle: settle_of(id, commit),
                },
                Some(Leg::Settled { posted, .. }) => {
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
            Message::Done { id, commit } => match self.aggregate(snap, id)? {
                Some(agg) if !agg.settled[1] && agg.prepared[1] => {
                    let expect = if commit {
                        TransferState::Committing
                    } else {
                        TransferState::Aborting
                    };
                    if agg.state != expect {
                        return Err(
                            self.damaged(format!("done({commit}) for {id} in {:?}", agg.state))
                        );
                    }
                    Step::Record { commit }
                }
                _ => Step::Nothing,
            },
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
                let r = result.unwrap_or(CreateTransferResult::Ok);
                if r == CreateTransferResult::Ok {
                    extra.put(
                        &id_key(LEG, id),
                        &Leg::Prepared { coordinator: from }.encode(),
                    )?;
                    let yes = vote(id, None);
                    self.owe(extra, id, from, Some(yes))?;
                    sends.push((from, yes));
                } else {
                    extra.put(&id_key(LEG, id), &Leg::Refused(r).encode())?;
                    sends.push((from, vote(id, Some(r))));
                }
            }
            Step::Decide { commit, .. } => {
                self.expect_settled(result, id)?;
                let Some(mut agg) = self.aggregate_latest(extra, id)? else {
                    return Err(self.damaged(format!("transfer {id} vanished")));
                };
                let credit = agg.credit_shard;
                if commit {
                    self.append(extra, &mut agg, id, Event::LegPrepared(credit))?;
                    self.append(extra, &mut agg, id, Event::CommitDecided)?;
                    self.append(extra, &mut agg, id, Event::LegPosted(me))?;
                    let decision = Message::Decision { id, commit: true };
                    self.owe(extra, id, credit, Some(decision))?;
                    sends.push((credit, decision));
                } else {
                    let code = match m {
                        Message::Vote {
                            refused: Some(code),
                            ..
                        } => code,
                        _ => CreateTransferResult::LinkedEventFailed,
                    };
                    self.append(extra, &mut agg, id, Event::LegRefused(credit, code))?;
                    self.append(extra, &mut agg, id, Event::AbortDecided)?;
                    self.append(extra, &mut agg, id, Event::LegVoided(me))?;
                    self.owe(extra, id, credit, None)?;
                }
                if agg.state.is_final() {
                    finished.push(Outcome {
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
                extra.put(
                    &id_key(LEG, id),
                    &Leg::Settled {
                        coordinator: from,
                        posted: commit,
                    }
                    .encode(),
                )?;
                self.owe(extra, id, from, None)?;
                sends.push((from, Message::Done { id, commit }));
            }
            Step::Record { commit } => {
                let Some(mut agg) = self.aggregate_latest(extra, id)? else {
                    return Err(self.damaged(format!("transfer {id} vanished")));
                };
                let e = if commit {
                    Event::LegPosted(from)
                } else {
                    Event::LegVoided(from)
                };
                self.append(extra, &mut agg, id, e)?;
                self.owe(extra, id, from, None)?;
                finished.push(Outcome {
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

    /// Everything in the outbox, to send again: how a lost message, or one
    /// a crash kept from being sent, gets through.
    pub(crate) fn resend(&self) -> Result<Effects> {
        let snap = self.ledger.snapshot();
        let mut fx = Effects::default();
        let mut dropped = Vec::new();
        for (k, v) in snap.extra_scan_prefix(&[OUTBOX])? {
            let to = k
                .get(17..21)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_be_bytes)
                .ok_or_else(|| self.damaged("bad outbox key"))?;
            let m = Message::decode(&v).ok_or_else(|| self.damaged("bad outbox message"))?;
            if self.sabotage == Some(Sabotage::ParticipantDropsLeg)
                && matches!(m, Message::Vote { refused: None, .. })
            {
                dropped.push((to, m.id()));
                continue;
            }
            fx.send.push((to, m));
        }
        if !dropped.is_empty() {
            // The broken protocol: give up waiting and void the leg.
            let voids: Vec<Transfer> = dropped
                .iter()
                .map(|&(_, id)| settle_of(id, false))
                .collect();
            self.ledger.submit_transfers_with(&voids, |_, extra| {
                for &(to, id) in &dropped {
                    extra.put(
                        &id_key(LEG, id),
                        &Leg::Settled {
                            coordinator: to,
                            posted: false,
                        }
                        .encode(),
                    )?;
                    self.owe(extra, id, to, None)?;
                }
                Ok(())
            })?;
        }
        Ok(fx)
    }

    /// How many messages this shard's outbox holds.
    pub(crate) fn outbox_len(&self) -> Result<usize> {
        Ok(self.ledger.snapshot().extra_scan_prefix(&[OUTBOX])?.len())
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
