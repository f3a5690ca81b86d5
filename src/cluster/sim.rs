//! The deterministic cluster simulator: one thread, a seeded random number
//! generator, virtual time, a network that loses, duplicates, reorders and
//! delays envelopes, and shards that crash (and lose whatever they had not
//! synced, on the power-loss file system `SimFs`, with each of its ways of
//! tearing unsynced writes by seed) and restart at any step,
//! also in the middle of a commit. A run submits random accounts and
//! transfers (within and between shards, some of them bound to be refused
//! by balance limits or ledgers; under `SyncMode::Always` also pending
//! transfers within a shard, most of them posted or voided later in the
//! run), heals the faults, lets the cluster settle, restarts every shard
//! once more, and checks:
//!
//! - `final-state`: every cross-shard transfer is `Committed` or `Aborted`;
//! - `both-sides`: committed means posted on both shards, aborted means
//!   voided (or never reserved) on both;
//! - `no-pending`: no reservation is left on any account but what the
//!   user's own pending transfers still hold (those acknowledged whose
//!   settlement was not);
//! - `debits-equal-credits`: per ledger, over all shards;
//! - `settlement-nets-zero`: per ledger, the settlement accounts of all
//!   shards net to zero;
//! - `limits`: no account ever broke the limit flags it was created with
//!   (checked during the run too);
//! - `model-balances`: every account's balance is what the acknowledged
//!   transfers (same-shard ones by their results, a pending one once its
//!   post is acknowledged, cross-shard ones by their final state) add up to (under `SyncMode::Always`; a quarter of
//!   the seeds run the shards under `Never`, where a crash may take back
//!   an acknowledged same-shard transfer, and check the rest: what a
//!   shard tells another must survive its crashes in every mode);
//! - `idempotency` (under `Always`): clients also send acknowledged
//!   transfers again; a retry of one acknowledged `Ok` must get `Exists`,
//!   and a retry of a cross-shard one must come back to that transfer
//!   (to wait for its one outcome), not get a code of its own.
//!
//! The same seed replays the same run exactly: `run` returns the first
//! violation with its seed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;

use super::ids::{Placement, ShardId, settle_id, settlement_account};
use super::message::Envelope;
use super::node::{Effects, Node, Sabotage, Started, leg_of};
use super::route;
use super::state::TransferState;
use super::transport::{Transport, envelopes};
use crate::ledger::{
    Account, AccountFlags, CreateTransferResult, LedgerOptions, ManualClock, Transfer,
    TransferFlags,
};
use crate::wal::SimFs;
use crate::wal::sim::Rng;
use crate::wal::sim::Torn;
use crate::{Options, SyncMode};

/// What one simulated run does.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Everything random comes from this.
    pub seed: u64,
    /// Shards (2 to 4 by default).
    pub shards: u32,
    /// User accounts.
    pub accounts: u32,
    /// User transfers.
    pub transfers: u32,
    /// Chance that an envelope is lost, in percent.
    pub loss_pct: u32,
    /// Chance that an envelope is delivered twice, in percent.
    pub duplicate_pct: u32,
    /// Chance per step that a shard crashes, in percent.
    pub crash_pct: u32,
    /// The shards' sync mode: `Always`, or `Never` (then a shard syncs
    /// only before it sends, and `model-balances` is not checked: an
    /// acknowledged same-shard transfer may be lost in a crash).
    pub sync: SyncMode,
    /// A deliberately broken protocol (for the tests that show each check
    /// can fail).
    #[doc(hidden)]
    pub sabotage: Option<Sabotage>,
}

impl SimConfig {
    /// A run whose sizes and fault rates are drawn from `seed`.
    pub fn from_seed(seed: u64) -> SimConfig {
        let mut rng = Rng(seed ^ 0x5EED);
        SimConfig {
            seed,
            shards: 2 + rng.below(3) as u32,
            accounts: 4 + rng.below(9) as u32,
            transfers: 5 + rng.below(30) as u32,
            loss_pct: rng.below(30) as u32,
            duplicate_pct: rng.below(20) as u32,
            crash_pct: rng.below(6) as u32,
            sync: if rng.below(4) == 0 {
                SyncMode::Never
            } else {
                SyncMode::Always
            },
            sabotage: None,
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimReport {
    /// Steps of the faulty phase and of the healing.
    pub steps: u64,
    /// Cross-shard transfers that committed.
    pub committed: u64,
    /// Cross-shard transfers that aborted.
    pub aborted: u64,
    /// Transfers refused before anything was recorded, or within a shard.
    pub refused: u64,
    /// Same-shard transfers applied.
    pub local: u64,
    /// Pending transfers (within a shard) applied: posted, voided, and
    /// still reserved at the end.
    pub two_phase: (u64, u64, u64),
    /// Acknowledged transfers sent again (`Sim::resubmit_acknowledged`),
    /// and of those, cross-shard ones in their coordinator's hands.
    pub resubmitted: u64,
    /// See `resubmitted`.
    pub resubmitted_cross: u64,
    /// Shard crashes.
    pub crashes: u64,
    /// Envelopes sent, lost, duplicated.
    pub envelopes: (u64, u64, u64),
}

/// The simulated network: envelopes wait in one queue with a delivery
/// time; delivery picks among the due ones at random (reordering).
#[derive(Debug)]
struct Net {
    state: Mutex<NetState>,
}

#[derive(Debug)]
struct NetState {
    rng: Rng,
    now_us: u64,
    queue: Vec<(u64, ShardId, Envelope)>,
    loss_pct: u32,
    duplicate_pct: u32,
    sent: u64,
    lost: u64,
    duplicated: u64,
}

impl Transport for Net {
    fn send(&self, to: ShardId, envelope: Envelope) {
        let mut s = self.state.lock();
        s.sent += 1;
        let (loss, dup) = (s.loss_pct, s.duplicate_pct);
        if s.rng.pct(loss) {
            s.lost += 1;
            return;
        }
        let copies = if s.rng.pct(dup) { 2 } else { 1 };
        s.duplicated += copies - 1;
        for _ in 0..copies {
            let at = s.now_us + 1 + s.rng.below(2_000);
            s.queue.push((at, to, envelope.clone()));
        }
    }
}

/// A simulated shard: its file system survives its crashes.
struct SimShard {
    fs: SimFs,
    node: Option<Node>,
    /// When a crashed shard comes back (virtual µs).
    restart_at_us: u64,
}

/// Where a user transfer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    /// Not yet acknowledged: submitted again until it is.
    Unacked,
    /// A same-shard transfer or a refused cross-shard one: its result.
    Done(CreateTransferResult),
    /// A cross-shard transfer in the hands of its coordinator.
    Cross,
}

struct Sim {
    config: SimConfig,
    rng: Rng,
    net: Arc<Net>,
    shards: Vec<SimShard>,
    clock: Arc<ManualClock>,
    accounts: Vec<Account>,
    transfers: Vec<Transfer>,
    status: Vec<Status>,
    /// Transfers acknowledged `Ok` and sent again since.
    resent_ok: BTreeSet<usize>,
    /// Cross-shard transfers in their coordinator's hands, sent again.
    resent_cross: BTreeSet<usize>,
    report: SimReport,
}

const PLACEMENT: Placement = Placement::Hash;

impl Sim {
    fn fail(&self, check: &str, what: impl std::fmt::Display) -> String {
        format!(
            "cluster simulation seed {} broke [{check}]: {what} (replay: MVLEDGER_SIM_SEED={} cargo test --test cluster_sim)",
            self.config.seed, self.config.seed
        )
    }

    fn now_us(&self) -> u64 {
        self.net.state.lock().now_us
    }

    fn open_node(&mut self, i: usize) -> Result<(), String> {
        let options = LedgerOptions {
            engine: Options {
                sync: self.config.sync,
                fs: Arc::new(self.shards[i].fs.clone()),
                segment_bytes: 64 * 1024,
                ..Options::default()
            },
            clock: Arc::clone(&self.clock) as _,
        };
        let dir = PathBuf::from(format!("/sim/shard-{i}"));
        let node = Node::open(i as ShardId, &dir, options, self.config.sabotage)
            .map_err(|e| self.fail("recovery", format!("shard {i} failed to open: {e}")))?;
        self.shards[i].node = Some(node);
        Ok(())
    }

    /// Crashes shard `i`: what it had not synced is gone.
    fn crash(&mut self, i: usize, down_us: u64) {
        let s = &mut self.shards[i];
        s.node = None;
        s.fs = s.fs.crash();
        s.restart_at_us = self.net.state.lock().now_us + down_us;
        self.report.crashes += 1;
    }

    /// Handles an engine error from shard `i`: a power cut is a crash;
    /// anything else is a bug.
    fn on_error(&mut self, i: usize, e: crate::Error) -> Result<(), String> {
        if self.shards[i].fs.is_off() {
            self.crash(i, 0);
            Ok(())
        } else {
            Err(self.fail("shard-error", format!("shard {i}: {e}")))
        }
    }

    fn dispatch(&self, from: usize, fx: Effects) {
        for (to, env) in envelopes(from as ShardId, fx.send) {
            self.net.send(to, env);
        }
    }

    fn create_accounts(&mut self) -> Result<(), String> {
        let per_shard = route::accounts(&self.accounts, PLACEMENT, self.config.shards)
            .map_err(|e| self.fail("setup", e))?;
        for (i, items) in per_shard.iter().enumerate() {
            let mut batch: Vec<Account> = items.iter().map(|(_, a)| *a).collect();
            if self.config.sabotage == Some(Sabotage::DropLimitFlags) {
                for a in &mut batch {
                    a.flags = AccountFlags::empty();
                }
            }
            let node = self.shards[i].node.as_ref().ok_or("shard down at setup")?;
            node.ledger
                .create_accounts(&batch)
                .map_err(|e| self.fail("setup", e))?;
            // The setup is durable whatever the sync mode.
            node.ledger
                .engine()
                .sync()
                .map_err(|e| self.fail("setup", e))?;
        }
        Ok(())
    }

    /// Submits the transfers `idx` (not yet acknowledged) to their shards.
    fn submit(&mut self, idx: &[usize]) -> Result<(), String> {
        let batch: Vec<Transfer> = idx.iter().map(|&i| self.transfers[i]).collect();
        let routes = route::transfers(&batch, PLACEMENT, self.config.shards)
            .map_err(|e| self.fail("routing", e))?;
        for shard in 0..self.shards.len() {
            let (local, cross) = (&routes.local[shard], &routes.cross[shard]);
            if local.is_empty() && cross.is_empty() {
                continue;
            }
            let Some(node) = self.shards[shard].node.as_ref() else {
                continue;
            };
            // As `Cluster::run_routes` does: the ledger's own call when
            // the shard's part stays within it, else one `initiate`.
            if cross.is_empty() {
                let part: Vec<Transfer> = local.iter().map(|(_, t)| *t).collect();
                match node.create_local(&part) {
                    Ok(rs) => {
                        for ((k, _), r) in local.iter().zip(rs) {
                            self.status[idx[*k]] = Status::Done(r);
                        }
                    }
                    Err(e) => self.on_error(shard, e)?,
                }
                continue;
            }
            let part = routes.part(shard);
            let items: Vec<(Transfer, Option<ShardId>)> =
                part.iter().map(|&(_, t, c)| (t, c)).collect();
            match node.initiate(&items) {
                Ok((started, fx)) => {
                    self.dispatch(shard, fx);
                    for ((k, _, _), s) in part.iter().zip(started) {
                        self.status[idx[*k]] = match s {
                            Started::Done(r) | Started::Refused(r) => Status::Done(r),
                            Started::InFlight | Started::Existing => Status::Cross,
                        };
                    }
                }
                Err(e) => self.on_error(shard, e)?,
            }
        }
        Ok(())
    }

    /// Delivers a due envelope (a random one when `pick_random`, which
    /// reorders), together with up to three more due for the same shard,
    /// as the shard threads handle what has queued up in one commit.
    fn deliver(&mut self, pick_random: bool) -> Result<bool, String> {
        let (to, envs) = {
            let mut s = self.net.state.lock();
            let now = s.now_us;
            let due: Vec<usize> = (0..s.queue.len())
                .filter(|&k| s.queue[k].0 <= now)
                .collect();
            if due.is_empty() {
                return Ok(false);
            }
            let first = if pick_random {
                due[s.rng.below(due.len() as u64) as usize]
            } else {
                due[0]
            };
            let to = s.queue[first].1;
            let more = if pick_random {
                s.rng.below(4) as usize
            } else {
                0
            };
            let mut picked: Vec<usize> = std::iter::once(first)
                .chain(
                    due.iter()
                        .copied()
                        .filter(|&k| k != first && s.queue[k].1 == to)
                        .take(more),
                )
                .collect();
            let envs: Vec<Envelope> = picked.iter().map(|&k| s.queue[k].2.clone()).collect();
            picked.sort_unstable();
            for k in picked.into_iter().rev() {
                s.queue.remove(k);
            }
            (to, envs)
        };
        let i = to as usize;
        let Some(node) = self.shards.get(i).and_then(|s| s.node.as_ref()) else {
            return Ok(true); // a down shard loses what arrives
        };
        match node.handle(&envs) {
            Ok(fx) => self.dispatch(i, fx),
            Err(e) => self.on_error(i, e)?,
        }
        Ok(true)
    }

    fn resend(&mut self, i: usize) -> Result<(), String> {
        let Some(node) = self.shards[i].node.as_ref() else {
            return Ok(());
        };
        match node.resend() {
            Ok(fx) => self.dispatch(i, fx),
            Err(e) => self.on_error(i, e)?,
        }
        Ok(())
    }

    fn restart_due(&mut self) -> Result<(), String> {
        let now = self.now_us();
        for i in 0..self.shards.len() {
            if self.shards[i].node.is_none() && self.shards[i].restart_at_us <= now {
                self.open_node(i)?;
            }
        }
        Ok(())
    }

    fn advance(&mut self, us: u64) {
        let mut s = self.net.state.lock();
        s.now_us += us;
        self.clock.set(1_000_000_000 + s.now_us * 1_000);
    }

    /// The faulty phase: random steps until every transfer was submitted
    /// and acknowledged at least once, or the step budget runs out.
    fn chaos(&mut self) -> Result<(), String> {
        let mut next = 0usize;
        for step in 0..4_000u64 {
            self.report.steps += 1;
            let dt = 1 + self.rng.below(500);
            self.advance(dt);
            self.restart_due()?;
            let roll = self.rng.below(100);
            if roll < 25 && next < self.transfers.len() {
                let n = 1 + self.rng.below(4) as usize;
                let idx: Vec<usize> = (next..(next + n).min(self.transfers.len())).collect();
                next += idx.len();
                self.submit(&idx)?;
            } else if roll < 28 {
                // Retry what a crash left unacknowledged.
                let unacked: Vec<usize> = (0..next)
                    .filter(|&k| self.status[k] == Status::Unacked)
                    .take(4)
                    .collect();
                if !unacked.is_empty() {
                    self.submit(&unacked)?;
                }
            } else if roll < 30 {
                self.resubmit_acknowledged()?;
            } else if roll < 75 {
                self.deliver(true)?;
            } else if roll < 85 {
                let i = self.rng.below(self.shards.len() as u64) as usize;
                self.resend(i)?;
            } else if self.rng.pct(self.config.crash_pct * 10) {
                let i = self.rng.below(self.shards.len() as u64) as usize;
                if self.shards[i].node.is_some() {
                    if self.rng.pct(50) {
                        let down = self.rng.below(20_000);
                        self.crash(i, down);
                    } else {
                        // Mid-operation: the power goes within a few calls.
                        let n = 1 + self.rng.below(12);
                        self.shards[i].fs.cut_power_after(n);
                    }
                }
            }
            if step % 32 == 0 {
                self.check_limits()?;
            }
            if next == self.transfers.len()
                && self.status.iter().all(|s| *s != Status::Unacked)
                && self.rng.pct(5)
            {
                break;
            }
        }
        // Submit whatever the budget left unsubmitted; healing retries.
        Ok(())
    }

    /// Sends again up to three transfers that were applied and
    /// acknowledged, as a client does whose acknowledgement was lost (under
    /// `Always` only: under `Never` a crash may take an acknowledged
    /// transfer back). Each is unacknowledged again until the retry is
    /// answered, and `verify` requires that answer to be `Exists` for a
    /// transfer first acknowledged `Ok`, and for a cross-shard one that it
    /// comes back to that transfer (`idempotency`).
    fn resubmit_acknowledged(&mut self) -> Result<(), String> {
        if self.config.sync != SyncMode::Always {
            return Ok(());
        }
        let acked: Vec<usize> = (0..self.transfers.len())
            .filter(|&k| {
                matches!(
                    self.status[k],
                    Status::Done(CreateTransferResult::Ok) | Status::Cross
                )
            })
            .collect();
        if acked.is_empty() {
            return Ok(());
        }
        let mut picked: Vec<usize> = (0..3)
            .map(|_| acked[self.rng.below(acked.len() as u64) as usize])
            .collect();
        picked.sort_unstable();
        picked.dedup();
        for &k in &picked {
            match self.status[k] {
                Status::Done(_) => self.resent_ok.insert(k),
                _ => {
                    self.report.resubmitted_cross += 1;
                    self.resent_cross.insert(k)
                }
            };
            self.status[k] = Status::Unacked;
        }
        self.report.resubmitted += picked.len() as u64;
        self.submit(&picked)
    }

    /// Heals every fault and lets the cluster finish its work; returns
    /// whether it did.
    fn heal(&mut self) -> Result<bool, String> {
        {
            let mut s = self.net.state.lock();
            s.loss_pct = 0;
            s.duplicate_pct = 0;
        }
        for i in 0..self.shards.len() {
            self.shards[i].fs.disarm();
            if self.shards[i].fs.is_off() {
                self.crash(i, 0);
            }
            self.shards[i].restart_at_us = 0;
        }
        self.restart_due()?;
        for _round in 0..50 {
            self.report.steps += 1;
            self.advance(10_000);
            let unacked: Vec<usize> = (0..self.transfers.len())
                .filter(|&k| self.status[k] == Status::Unacked)
                .collect();
            if !unacked.is_empty() {
                self.submit(&unacked)?;
            }
            for i in 0..self.shards.len() {
                self.resend(i)?;
            }
            while self.deliver(false)? {}
            if self.settled()? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn nodes(&self) -> impl Iterator<Item = (usize, &Node)> {
        self.shards
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.node.as_ref().map(|n| (i, n)))
    }

    fn settled(&self) -> Result<bool, String> {
        // Every shard up (heal restarted them), nothing owed, nothing on
        // the way.
        if self.status.contains(&Status::Unacked) || !self.net.state.lock().queue.is_empty() {
            return Ok(false);
        }
        Ok(self.nodes().all(|(_, n)| n.owing() == 0))
    }

    /// Every account of every shard, with its shard.
    fn all_accounts(&self) -> Result<Vec<(usize, Account)>, String> {
        let mut out = Vec::new();
        for (i, n) in self.nodes() {
            let accounts = n
                .ledger
                .snapshot()
                .accounts()
                .map_err(|e| self.fail("read", e))?;
            out.extend(accounts.into_iter().map(|a| (i, a)));
        }
        Ok(out)
    }

    fn check_limits(&self) -> Result<(), String> {
        let wanted: BTreeMap<u128, AccountFlags> =
            self.accounts.iter().map(|a| (a.id, a.flags)).collect();
        for (i, a) in self.all_accounts()? {
            let Some(flags) = wanted.get(&a.id) else {
                continue;
            };
            let debits = a.debits_pending + a.debits_posted;
            let credits = a.credits_pending + a.credits_posted;
            if (flags.contains(AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS)
                && debits > a.credits_posted)
                || (flags.contains(AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS)
                    && credits > a.debits_posted)
            {
                return Err(self.fail("limits", format!("account {} on shard {i}: {a:?}", a.id)));
            }
        }
        Ok(())
    }

    /// Restarts every shard from what it synced, then runs every check;
    /// `Err` lists every check that failed, with its first example.
    fn verify(&mut self, settled: bool) -> Result<(), String> {
        let mut broken: BTreeMap<&'static str, String> = BTreeMap::new();
        if !settled {
            broken.insert(
                "final-state",
                "the cluster did not settle after the faults healed".into(),
            );
        }
        for i in 0..self.shards.len() {
            self.crash(i, 0);
            self.report.crashes -= 1;
        }
        self.restart_due()?;
        if let Err(e) = self.check_limits() {
            broken.insert("limits", e);
        }
        let accounts = self.all_accounts()?;
        // final-state and both-sides, and what each transfer applied.
        let mut net: BTreeMap<u128, i128> = BTreeMap::new();
        let mut applied_at: Vec<bool> = Vec::with_capacity(self.transfers.len());
        for k in 0..self.transfers.len() {
            let t = self.transfers[k];
            let applied = match self.status[k] {
                Status::Unacked => {
                    broken
                        .entry("final-state")
                        .or_insert(format!("transfer {} never acknowledged", t.id));
                    false
                }
                Status::Done(r) => {
                    let ok = matches!(r, CreateTransferResult::Ok | CreateTransferResult::Exists);
                    if ok {
                        self.report.local += 1;
                    } else {
                        self.report.refused += 1;
                    }
                    ok
                }
                Status::Cross => match self.check_cross(&t)? {
                    Ok(committed) => committed,
                    Err((check, what)) => {
                        broken.entry(check).or_insert(what);
                        false
                    }
                },
            };
            if self.resent_ok.contains(&k)
                && self.status[k] != Status::Done(CreateTransferResult::Exists)
            {
                broken.entry("idempotency").or_insert(format!(
                    "transfer {} was acknowledged Ok, and sent again it got {:?}, not Exists",
                    t.id, self.status[k]
                ));
            }
            if self.resent_cross.contains(&k) && self.status[k] != Status::Cross {
                broken.entry("idempotency").or_insert(format!(
                    "cross-shard transfer {} was in its coordinator's hands, and sent again \
                     it got {:?}",
                    t.id, self.status[k]
                ));
            }
            applied_at.push(applied);
            if applied && t.flags.is_empty() {
                *net.entry(t.debit_account_id).or_default() -= t.amount as i128;
                *net.entry(t.credit_account_id).or_default() += t.amount as i128;
            }
        }
        // Two-phase transfers: a pending one applied reserves its amount
        // until a settlement of it is applied; a post moves it.
        // A pending transfer's id is fresh (no other pending transfer has
        // it), and its settlements name its accounts, so a settlement
        // applied settled it, on its shard.
        let mut reserved: BTreeMap<u128, (u128, u128)> = BTreeMap::new();
        let pending_at = |id: u128| {
            (0..self.transfers.len()).find(|&k| {
                self.transfers[k].id == id && self.transfers[k].flags == TransferFlags::PENDING
            })
        };
        for (j, s) in self.transfers.iter().enumerate() {
            // A settlement applied of a pending transfer that was not.
            if s.pending_id != 0
                && applied_at[j]
                && !pending_at(s.pending_id).is_some_and(|k| applied_at[k])
            {
                broken.entry("model-balances").or_insert(format!(
                    "transfer {} settled pending transfer {}, which was never applied",
                    s.id, s.pending_id
                ));
            }
        }
        for (k, t) in self.transfers.iter().enumerate() {
            if t.flags != TransferFlags::PENDING || !applied_at[k] {
                continue;
            }
            let settled = self
                .transfers
                .iter()
                .enumerate()
                .find(|&(j, s)| s.pending_id == t.id && applied_at[j]);
            match settled {
                None => {
                    self.report.two_phase.2 += 1;
                    reserved.entry(t.debit_account_id).or_default().0 += t.amount;
                    reserved.entry(t.credit_account_id).or_default().1 += t.amount;
                }
                Some((_, s)) if s.flags.contains(TransferFlags::POST_PENDING_TRANSFER) => {
                    self.report.two_phase.0 += 1;
                    *net.entry(t.debit_account_id).or_default() -= t.amount as i128;
                    *net.entry(t.credit_account_id).or_default() += t.amount as i128;
                }
                Some(_) => self.report.two_phase.1 += 1,
            }
        }
        for (check, what) in check_accounts(&accounts, &reserved) {
            broken.entry(check).or_insert(what);
        }
        // Under `Never` an acknowledged same-shard transfer may be lost in
        // a crash: the balances need not match what was acknowledged.
        let model = self.config.sync == SyncMode::Always;
        for (_, a) in accounts.iter().filter(|_| model) {
            if crate::cluster::is_reserved(a.id) {
                continue;
            }
            let balance = a.credits_posted as i128 - a.debits_posted as i128;
            let expected = net.get(&a.id).copied().unwrap_or(0);
            if balance != expected {
                broken.entry("model-balances").or_insert(format!(
                    "account {}: balance {balance}, acknowledged transfers make {expected}",
                    a.id
                ));
            }
        }
        if broken.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = broken.iter().map(|(c, w)| format!("[{c}] {w}")).collect();
        Err(self.fail(
            &broken.keys().copied().collect::<Vec<_>>().join(", "),
            list.join("; "),
        ))
    }

    /// Checks a cross-shard transfer on both shards: `Ok(committed)`, or
    /// the check it breaks.
    #[allow(clippy::type_complexity)]
    fn check_cross(
        &mut self,
        t: &Transfer,
    ) -> Result<Result<bool, (&'static str, String)>, String> {
        let n = self.config.shards;
        let (a, b) = (
            PLACEMENT.shard(t.debit_account_id, n) as usize,
            PLACEMENT.shard(t.credit_account_id, n) as usize,
        );
        let node_a = self.shards[a].node.as_ref().ok_or("shard down")?;
        let node_b = self.shards[b].node.as_ref().ok_or("shard down")?;
        let Some(agg) = node_a
            .aggregate(&node_a.ledger.snapshot(), t.id)
            .map_err(|e| self.fail("read", e))?
        else {
            let what = format!("transfer {} has no record on shard {a}", t.id);
            return Ok(Err(("final-state", what)));
        };
        if !agg.state.is_final() {
            let what = format!("transfer {} is {:?}", t.id, agg.state);
            return Ok(Err(("final-state", what)));
        }
        if agg.transfer != *t {
            let what = format!("transfer {} has the record of {:?}", t.id, agg.transfer);
            return Ok(Err(("final-state", what)));
        }
        let find = |node: &Node, id: u128| -> Result<Option<Transfer>, String> {
            Ok(node
                .ledger
                .lookup_transfers(&[id])
                .map_err(|e| self.fail("read", e))?
                .first()
                .copied())
        };
        let committed = agg.state == TransferState::Committed;
        let mut sides = Vec::with_capacity(2);
        for (shard, node, debit_side) in [(a, node_a, true), (b, node_b, false)] {
            // This transfer's leg, not another coordinator's with its id.
            let mine = leg_of(t, shard as ShardId, debit_side);
            let leg = find(node, t.id)?.is_some_and(|l| {
                (l.debit_account_id, l.credit_account_id, l.amount)
                    == (mine.debit_account_id, mine.credit_account_id, mine.amount)
            });
            sides.push((
                shard,
                leg,
                leg && find(node, settle_id(t.id, true))?.is_some(),
                leg && find(node, settle_id(t.id, false))?.is_some(),
            ));
        }
        for (shard, leg, posted, voided) in sides {
            let ok = if committed {
                leg && posted && !voided
            } else {
                !posted && (voided || !leg)
            };
            if !ok {
                let what = format!(
                    "transfer {} is {:?} but on shard {shard} its leg is (reserved {leg}, posted {posted}, voided {voided})",
                    t.id, agg.state
                );
                return Ok(Err(("both-sides", what)));
            }
        }
        if committed {
            self.report.committed += 1;
        } else {
            self.report.aborted += 1;
        }
        Ok(Ok(committed))
    }
}

/// The account-level checks over every shard's accounts (shard, account):
/// `no-pending` (no reservation but what the user's own pending transfers
/// still hold: `reserved`, (debits, credits) pending by account),
/// `debits-equal-credits` and `settlement-nets-zero`; each broken check
/// once, with its first example.
pub fn check_accounts(
    accounts: &[(usize, Account)],
    reserved: &BTreeMap<u128, (u128, u128)>,
) -> Vec<(&'static str, String)> {
    let mut broken: BTreeMap<&'static str, String> = BTreeMap::new();
    let mut per_ledger: BTreeMap<u32, (u128, u128, i128)> = BTreeMap::new();
    for (i, a) in accounts {
        let expected = reserved.get(&a.id).copied().unwrap_or((0, 0));
        if (a.debits_pending, a.credits_pending) != expected {
            broken.entry("no-pending").or_insert(format!(
                "shard {i}: {a:?}, where the user's pending transfers hold {expected:?}"
            ));
        }
        let e = per_ledger.entry(a.ledger).or_default();
        e.0 += a.debits_posted;
        e.1 += a.credits_posted;
        if a.id == settlement_account(a.ledger, *i as ShardId) {
            e.2 += a.credits_posted as i128 - a.debits_posted as i128;
        }
    }
    for (ledger, (dr, cr, settlement)) in per_ledger {
        if dr != cr {
            broken
                .entry("debits-equal-credits")
                .or_insert(format!("ledger {ledger}: {dr} != {cr}"));
        }
        if settlement != 0 {
            broken
                .entry("settlement-nets-zero")
                .or_insert(format!("ledger {ledger}: {settlement}"));
        }
    }
    broken.into_iter().collect()
}

/// A post (in full: amount 0) or a void of pending transfer `p`, naming
/// its accounts (so that it routes to `p`'s shard), under id `id`.
fn settle_of(p: &Transfer, id: u128, post: bool) -> Transfer {
    Transfer {
        id,
        debit_account_id: p.debit_account_id,
        credit_account_id: p.credit_account_id,
        pending_id: p.id,
        amount: 0,
        ledger: p.ledger,
        code: 1,
        flags: if post {
            TransferFlags::POST_PENDING_TRANSFER
        } else {
            TransferFlags::VOID_PENDING_TRANSFER
        },
        ..Transfer::default()
    }
}

/// Runs one simulated cluster; `Err` is the first violation, naming the
/// check and the seed.
pub fn run(config: &SimConfig) -> Result<SimReport, String> {
    let mut rng = Rng(config.seed);
    let shards = config.shards.clamp(1, 16);
    let net = Arc::new(Net {
        state: Mutex::new(NetState {
            rng: Rng(config.seed.rotate_left(17) ^ 0xA5A5),
            now_us: 0,
            queue: Vec::new(),
            loss_pct: config.loss_pct,
            duplicate_pct: config.duplicate_pct,
            sent: 0,
            lost: 0,
            duplicated: 0,
        }),
    });
    let accounts: Vec<Account> = (1..=u128::from(config.accounts.max(2)))
        .map(|id| {
            let flags = match rng.below(10) {
                0..=3 => AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS,
                4..=5 => AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
                _ => AccountFlags::empty(),
            };
            Account {
                id,
                ledger: 1 + (rng.below(10) == 0) as u32,
                code: 1,
                flags,
                ..Account::default()
            }
        })
        .collect();
    let mut transfers: Vec<Transfer> = Vec::with_capacity(config.transfers as usize);
    // Two-phase transfers within a shard, under `Always` only (under
    // `Never` a crash may take back an acknowledged one, and what stays
    // reserved could not be checked): pending ones not settled yet.
    let two_phase = config.sync == SyncMode::Always;
    let mut open: Vec<Transfer> = Vec::new();
    for k in 0..config.transfers {
        if two_phase && !open.is_empty() && rng.below(5) == 0 {
            let p = open.swap_remove(rng.below(open.len() as u64) as usize);
            transfers.push(settle_of(&p, 1000 + u128::from(k), rng.below(2) == 0));
            continue;
        }
        let dr = accounts[rng.below(accounts.len() as u64) as usize];
        let mut cr = accounts[rng.below(accounts.len() as u64) as usize];
        if cr.id == dr.id {
            cr = accounts[(cr.id as usize) % accounts.len()];
        }
        let same_shard = PLACEMENT.shard(dr.id, shards) == PLACEMENT.shard(cr.id, shards);
        if two_phase && same_shard && rng.below(4) == 0 {
            // A fresh id, so no other pending transfer has it (a later
            // plain transfer may reuse it: its settlements still name
            // this one's accounts, so they reach this one).
            let p = Transfer {
                id: 1000 + u128::from(k),
                debit_account_id: dr.id,
                credit_account_id: cr.id,
                amount: 1 + u128::from(rng.below(100)),
                ledger: dr.ledger,
                code: 1,
                flags: TransferFlags::PENDING,
                ..Transfer::default()
            };
            open.push(p);
            transfers.push(p);
            continue;
        }
        // One in ten reuses an earlier id with other fields: refused on
        // the same coordinator, a transfer of its own on another (ids are
        // unique per coordinator), refused by a credit shard that holds
        // the other's leg.
        let id = if k > 0 && rng.below(10) == 0 {
            transfers[rng.below(u64::from(k)) as usize].id
        } else {
            1000 + u128::from(k)
        };
        let amount = 101 + u128::from(rng.below(100)) * 2 + u128::from(k % 2);
        transfers.push(Transfer {
            id,
            debit_account_id: dr.id,
            credit_account_id: cr.id,
            // Distinct per reuse: 1..=100 for new ids, above for reuses.
            amount: if id == 1000 + u128::from(k) {
                1 + u128::from(rng.below(100))
            } else {
                amount + u128::from(k) * 1000
            },
            ledger: dr.ledger,
            code: 1,
            ..Transfer::default()
        });
    }
    // Most of the rest are settled too (a few stay reserved).
    for p in open {
        if rng.below(4) != 0 {
            let id = 1000 + transfers.len() as u128 + u128::from(config.transfers);
            transfers.push(settle_of(&p, id, rng.below(2) == 0));
        }
    }
    let mut sim = Sim {
        config: SimConfig {
            shards,
            ..config.clone()
        },
        rng,
        net,
        shards: (0..shards)
            .map(|i| SimShard {
                // What a crash keeps of the unsynced part varies by seed.
                fs: SimFs::new(config.seed ^ u64::from(i)).with_torn(
                    [
                        Torn::Nothing,
                        Torn::Prefix,
                        Torn::Zeros,
                        Torn::Garbage,
                        Torn::Reordered,
                    ][(config.seed % 5) as usize],
                ),
                node: None,
                restart_at_us: 0,
            })
            .collect(),
        clock: Arc::new(ManualClock::new(1_000_000_000)),
        status: vec![Status::Unacked; transfers.len()],
        resent_ok: BTreeSet::new(),
        resent_cross: BTreeSet::new(),
        accounts,
        transfers,
        report: SimReport::default(),
    };
    for i in 0..shards as usize {
        sim.open_node(i)?;
    }
    sim.create_accounts()?;
    sim.chaos()?;
    let settled = sim.heal()?;
    sim.verify(settled)?;
    let s = sim.net.state.lock();
    sim.report.envelopes = (s.sent, s.lost, s.duplicated);
    drop(s);
    Ok(sim.report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acct(id: u128, ledger: u32, dr: u128, cr: u128) -> Account {
        Account {
            id,
            ledger,
            code: 1,
            debits_posted: dr,
            credits_posted: cr,
            ..Account::default()
        }
    }

    #[test]
    fn account_checks_pass_on_a_balanced_cluster_and_name_each_break() {
        let s0 = settlement_account(1, 0);
        let s1 = settlement_account(1, 1);
        // 5 moved from account 1 (shard 0) to account 2 (shard 1).
        let good = vec![
            (0, acct(1, 1, 5, 0)),
            (0, acct(s0, 1, 0, 5)),
            (1, acct(s1, 1, 5, 0)),
            (1, acct(2, 1, 0, 5)),
        ];
        let none = BTreeMap::new();
        assert!(check_accounts(&good, &none).is_empty());
        let names = |accts: &[(usize, Account)]| -> Vec<&'static str> {
            check_accounts(accts, &none)
                .into_iter()
                .map(|(c, _)| c)
                .collect()
        };
        // A credit leg that vanished: the settlement accounts do not net
        // to zero (each shard is still double-entry by itself).
        let lost_leg = vec![
            good[0],
            good[1],
            (1, acct(s1, 1, 0, 0)),
            (1, acct(2, 1, 0, 0)),
        ];
        assert_eq!(names(&lost_leg), vec!["settlement-nets-zero"]);
        // Money created out of nothing on one shard.
        let forged = vec![good[0], good[1], good[2], (1, acct(2, 1, 0, 6))];
        assert_eq!(names(&forged), vec!["debits-equal-credits"]);
        // A reservation left behind.
        let mut held = good.clone();
        held[3].1.credits_pending = 1;
        held[2].1.debits_pending = 1;
        assert_eq!(names(&held), vec!["no-pending"]);
    }
}
