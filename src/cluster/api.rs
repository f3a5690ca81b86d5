//! `Cluster`: K shards, each a `Ledger` in its own directory with its own
//! redo log, a thread per shard reading its channel, and the calls users
//! make.
//!
//! `create_transfers` splits the call by shard (`route.rs`): transfers
//! within one shard go straight to that shard's ledger from the calling
//! thread; transfers between shards are initiated on their coordinator
//! (the debit account's shard) from the calling thread too, and the call
//! then waits until each is final. Every shard's thread handles what
//! arrives as one commit per wake-up, and re-sends its outbox every
//! `resend_interval` (and once at open, which is how a restart resumes
//! every unfinished transfer).
//!
//! Failure paths: an engine error in a shard's thread stops that thread,
//! and every caller waiting then gets `Error::Poisoned` (`failure()` tells
//! what happened); reopen the cluster to recover.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};
use parking_lot::{Condvar, Mutex};

use super::ids::{Placement, ShardId};
use super::message::Envelope;
use super::node::{Effects, Node, Outcome, Sabotage, Started};
use super::route;
use super::state::TransferState;
use super::transport::{ChannelTransport, Inbox, Transport, envelopes};
use crate::error::{Error, Result};
use crate::ledger::{
    Account, AccountFlags, CreateAccountResult, CreateTransferResult, Ledger, LedgerOptions,
    Transfer, TransferFlags,
};

/// The file that records how many shards a cluster directory has.
const SHARDS_FILE: &str = "SHARDS";
/// The most envelopes a shard thread handles in one commit.
const MAX_ENVELOPES: usize = 64;

/// Options for `Cluster::open`.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// How many shards (1 to 256). Fixed when the directory is created.
    pub shards: u32,
    /// Where accounts live.
    pub placement: Placement,
    /// Each shard's ledger options (the engine's `fs` is shared).
    pub ledger: LedgerOptions,
    /// How long an unanswered message waits before it is sent again.
    pub resend_interval: Duration,
    /// A deliberately broken protocol, for the tests that show each check
    /// can fail. Leave it `None`.
    #[doc(hidden)]
    pub sabotage: Option<Sabotage>,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            shards: 4,
            placement: Placement::Hash,
            ledger: LedgerOptions::default(),
            resend_interval: Duration::from_secs(2),
            sabotage: None,
        }
    }
}

/// Results a call decides before routing: (input index, result).
type Decided = Vec<(usize, CreateTransferResult)>;

/// A cross-shard transfer a call waits for: (input index, (coordinator,
/// id), whether it existed before the call).
type Wait = (usize, (ShardId, u128), bool);

/// Callers waiting for cross-shard transfers to become final.
#[derive(Debug, Default)]
struct Waiters {
    /// (coordinator, id) -> (callers waiting, the outcome once known):
    /// ids are unique per coordinator only.
    slots: HashMap<(ShardId, u128), (usize, Option<Outcome>)>,
    /// Why a shard thread stopped, if one did.
    failure: Option<String>,
}

#[derive(Debug)]
struct Shared {
    nodes: Vec<Node>,
    transport: ChannelTransport,
    waiters: Mutex<Waiters>,
    finished: Condvar,
    options: ClusterOptions,
}

impl Shared {
    fn dispatch(&self, from: ShardId, fx: Effects) {
        for (to, env) in envelopes(from, fx.send) {
            self.transport.send(to, env);
        }
        if fx.finished.is_empty() {
            return;
        }
        let mut w = self.waiters.lock();
        for o in fx.finished {
            if let Some(slot) = w.slots.get_mut(&(o.shard, o.id)) {
                slot.1 = Some(o);
            }
        }
        drop(w);
        self.finished.notify_all();
    }

    fn fail(&self, shard: ShardId, e: &Error) {
        self.waiters.lock().failure = Some(format!("shard {shard}: {e}"));
        self.finished.notify_all();
    }
}

/// Ledgers on K shards, with transfers between them by two-phase commit.
/// `Send + Sync`: share it between threads.
#[derive(Debug)]
pub struct Cluster {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Cluster {
    /// Opens (or creates) a cluster in `dir`: shard `i` in `dir/shard-i`.
    /// Every unfinished cross-shard transfer resumes.
    pub fn open(dir: impl AsRef<Path>, options: ClusterOptions) -> Result<Cluster> {
        let dir = dir.as_ref();
        if options.shards == 0 || options.shards > 256 {
            return Err(Error::invalid(format!(
                "a cluster has 1 to 256 shards, not {}",
                options.shards
            )));
        }
        check_layout(dir, options.shards, options.placement)?;
        let mut nodes = Vec::with_capacity(options.shards as usize);
        for i in 0..options.shards {
            let shard_dir: PathBuf = dir.join(format!("shard-{i}"));
            nodes.push(Node::open(
                i,
                &shard_dir,
                options.ledger.clone(),
                options.sabotage,
            )?);
        }
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..options.shards)
            .map(|_| crossbeam_channel::unbounded())
            .unzip();
        let shared = Arc::new(Shared {
            nodes,
            transport: ChannelTransport::new(senders),
            waiters: Mutex::new(Waiters::default()),
            finished: Condvar::new(),
            options,
        });
        let mut cluster = Cluster {
            shared,
            threads: Vec::new(),
        };
        for (i, rx) in receivers.into_iter().enumerate() {
            let shared = Arc::clone(&cluster.shared);
            let thread = std::thread::Builder::new()
                .name(format!("mvledger-shard-{i}"))
                .spawn(move || shard_thread(&shared, i as ShardId, &rx))
                // Dropping `cluster` stops the threads already started.
                .map_err(Error::Io)?;
            cluster.threads.push(thread);
        }
        Ok(cluster)
    }

    /// How many shards.
    pub fn shards(&self) -> u32 {
        self.shared.options.shards
    }

    /// The shard account `id` lives on.
    pub fn shard_of(&self, id: u128) -> ShardId {
        self.shared.options.placement.shard(id, self.shards())
    }

    /// Shard `i`'s ledger, for reads at its own snapshot.
    pub fn shard(&self, i: ShardId) -> Option<&Ledger> {
        self.shared.nodes.get(i as usize).map(|n| &n.ledger)
    }

    /// Creates accounts, each on its shard: one result per account, in
    /// input order. A linked chain must lie on one shard.
    pub fn create_accounts(&self, accounts: &[Account]) -> Result<Vec<CreateAccountResult>> {
        let per_shard = route::accounts(accounts, self.shared.options.placement, self.shards())?;
        let mut results = vec![CreateAccountResult::Ok; accounts.len()];
        let outcome = std::thread::scope(|s| {
            let handles: Vec<_> = per_shard
                .iter()
                .enumerate()
                .filter(|(_, items)| !items.is_empty())
                .map(|(i, items)| {
                    s.spawn(move || {
                        let mut batch: Vec<Account> = items.iter().map(|(_, a)| *a).collect();
                        if self.shared.options.sabotage == Some(Sabotage::DropLimitFlags) {
                            for a in &mut batch {
                                a.flags.remove(
                                    AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS
                                        | AccountFlags::CREDITS_MUST_NOT_EXCEED_DEBITS,
                                );
                            }
                        }
                        self.shared.nodes[i].ledger.create_accounts(&batch)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(Err(Error::Poisoned)))
                .collect::<Vec<_>>()
        });
        let mut outcome = outcome.into_iter();
        for items in per_shard.iter().filter(|items| !items.is_empty()) {
            let rs = outcome.next().unwrap_or(Err(Error::Poisoned))?;
            for ((i, _), r) in items.iter().zip(rs) {
                results[*i] = r;
            }
        }
        Ok(results)
    }

    /// Creates transfers: one result per transfer, in input order. A
    /// transfer within one shard is that shard's ledger's result; a
    /// transfer between shards returns once it is final: `Ok` if it
    /// committed, else the reason its leg was refused. Sending the same
    /// cross-shard transfer again returns `Exists` if it committed; if it
    /// aborted, `IdAlreadyFailed` when the refusal depended on state that
    /// may change (`CreateTransferResult::is_transient`, as on one shard),
    /// else the refusal again. The outer `Result` is for engine failures and
    /// for calls the cluster cannot route (`route.rs`).
    ///
    /// Ids are unique per coordinating shard (the debit account's) only:
    /// no index spans the shards, so the same id from debit accounts on two
    /// shards makes two transfers. Give ids unique across the cluster.
    ///
    /// A transfer between shards meets the ledger's rules leg by leg: the
    /// debit shard's first (the transfer's fields and the debit account),
    /// then the credit shard's (the credit account). When it breaks rules
    /// on both sides, its code is the debit side's first broken rule, which
    /// may come later in TigerBeetle's order than the credit side's (an
    /// exceeded debit limit before an unknown credit account, say). A
    /// refusal on the credit side spends the id, as on one ledger when it
    /// depends on state that may change (`IdAlreadyFailed` for any
    /// transfer sent under it again), but also when it does not (the
    /// credit account on another ledger, an overflow): the debit shard's
    /// leg holds the id, and a corrected transfer under it gets
    /// `ExistsWithDifferent*`. A credit id of 0 or `u128::MAX` is refused
    /// on the debit shard, spending nothing.
    ///
    /// The debit leg of a transfer between shards reserves its amount in
    /// its shard's commit, before the credit shard votes: transfers after
    /// it in the call see the reservation, as a pending transfer's. When
    /// the credit shard then refuses it, a later transfer from the same
    /// debit account may have been refused for its limit where one ledger,
    /// refusing the first at once, would have taken it. No limit is ever
    /// broken; send a transfer that depends on an earlier one's refusal in
    /// a later call.
    pub fn create_transfers(&self, transfers: &[Transfer]) -> Result<Vec<CreateTransferResult>> {
        let mut results = vec![CreateTransferResult::Ok; transfers.len()];
        let (pins, decided) = self.find_pending_shards(transfers)?;
        if !decided.is_empty() {
            // Route the rest alone (a decided item is never linked).
            let rest: Vec<usize> = (0..transfers.len())
                .filter(|i| !decided.iter().any(|(d, _)| d == i))
                .collect();
            let batch: Vec<Transfer> = rest.iter().map(|&i| transfers[i]).collect();
            let rest_pins: Vec<Option<ShardId>> = rest
                .iter()
                .map(|&i| pins.get(i).copied().flatten())
                .collect();
            let rest_results = self.create_routed(&batch, &rest_pins)?;
            for (&i, r) in rest.iter().zip(rest_results) {
                results[i] = r;
            }
            for (i, r) in decided {
                results[i] = r;
            }
            return Ok(results);
        }
        self.create_routed(transfers, &pins)
    }

    /// `create_transfers` of transfers the cluster can route, `pins[i]`
    /// (when there) the shard of transfer `i`.
    fn create_routed(
        &self,
        transfers: &[Transfer],
        pins: &[Option<ShardId>],
    ) -> Result<Vec<CreateTransferResult>> {
        let routes = route::transfers_pinned(
            transfers,
            self.shared.options.placement,
            self.shards(),
            pins,
        )?;
        let mut results = vec![CreateTransferResult::Ok; transfers.len()];
        let cross_ids: Vec<(ShardId, u128)> = routes
            .cross
            .iter()
            .enumerate()
            .flat_map(|(shard, part)| part.iter().map(move |(_, t, _)| (shard as ShardId, t.id)))
            .collect();
        self.register(&cross_ids);
        let run = self.run_routes(&routes, &mut results);
        let waited = run.and_then(|waits| self.wait(&waits, &mut results));
        self.unregister(&cross_ids);
        waited?;
        Ok(results)
    }

    /// Where each post or void that names no accounts goes (as on one
    /// ledger, its accounts may be 0: they are its pending transfer's): the
    /// shard whose ledger holds that pending transfer (the lowest, should
    /// several). Returns the shards (`pins[i]`; empty when no transfer
    /// needs one) and the results decided here: `PendingTransferNotFound`
    /// when no shard holds it, `PendingTransferNotPending` when it is a
    /// transfer between shards (whose legs are the cluster's to settle,
    /// and which is never pending). A decided item may not be linked.
    fn find_pending_shards(
        &self,
        transfers: &[Transfer],
    ) -> Result<(Vec<Option<ShardId>>, Decided)> {
        let settles = TransferFlags::POST_PENDING_TRANSFER | TransferFlags::VOID_PENDING_TRANSFER;
        let mut pins = Vec::new();
        let mut decided = Vec::new();
        for (i, t) in transfers.iter().enumerate() {
            let named = t.debit_account_id != 0 && t.credit_account_id != 0;
            if named || !t.flags.intersects(settles) || t.pending_id == 0 {
                continue;
            }
            if super::ids::is_reserved(t.pending_id) {
                continue; // refused whole by the router
            }
            if route::refused_first(t) {
                continue; // refused by a ledger before it looks
            }
            let mut found = None;
            let mut leg = false;
            for node in &self.shared.nodes {
                if let Some(p) = node.ledger.lookup_transfers(&[t.pending_id])?.first() {
                    if super::ids::is_reserved(p.debit_account_id)
                        || super::ids::is_reserved(p.credit_account_id)
                    {
                        leg = true;
                    } else {
                        found = Some(node.shard);
                        break;
                    }
                }
            }
            match found {
                Some(shard) => {
                    if pins.is_empty() {
                        pins = vec![None; transfers.len()];
                    }
                    pins[i] = Some(shard);
                }
                None => {
                    let linked = t.flags.contains(TransferFlags::LINKED)
                        || (i > 0 && transfers[i - 1].flags.contains(TransferFlags::LINKED));
                    if linked {
                        return Err(Error::invalid(format!(
                            "transfer {i} posts or voids pending transfer {:#x}, which no shard \
                             holds as a pending transfer, inside a linked chain: give its \
                             accounts",
                            t.pending_id
                        )));
                    }
                    let why = if leg {
                        CreateTransferResult::PendingTransferNotPending
                    } else {
                        CreateTransferResult::PendingTransferNotFound
                    };
                    decided.push((i, why));
                }
            }
        }
        Ok((pins, decided))
    }

    /// Runs each shard's part from its own thread; returns the cross-shard
    /// transfers to wait for: (input index, coordinator and id, whether it
    /// existed before).
    fn run_routes(
        &self,
        routes: &route::Routes,
        results: &mut [CreateTransferResult],
    ) -> Result<Vec<Wait>> {
        type Part = Result<(Vec<(usize, CreateTransferResult)>, Vec<Wait>)>;
        let shared = &self.shared;
        let run = |node: &Node| -> Part {
            let shard = node.shard as usize;
            let mut done = Vec::new();
            let mut waits = Vec::new();
            if routes.cross[shard].is_empty() {
                // Within the shard alone: the ledger's own call.
                let local = &routes.local[shard];
                let batch: Vec<Transfer> = local.iter().map(|(_, t)| *t).collect();
                let rs = node.create_local(&batch)?;
                done.extend(local.iter().map(|(i, _)| *i).zip(rs));
                return Ok((done, waits));
            }
            let part = routes.part(shard);
            let items: Vec<(Transfer, Option<ShardId>)> =
                part.iter().map(|&(_, t, c)| (t, c)).collect();
            let (started, fx) = node.initiate(&items)?;
            shared.dispatch(node.shard, fx);
            for ((i, t, _), s) in part.iter().zip(started) {
                match s {
                    Started::Done(r) | Started::Refused(r) => done.push((*i, r)),
                    Started::InFlight => waits.push((*i, (node.shard, t.id), false)),
                    Started::Existing => waits.push((*i, (node.shard, t.id), true)),
                }
            }
            Ok((done, waits))
        };
        let busy: Vec<usize> = (0..shared.nodes.len())
            .filter(|&i| !routes.local[i].is_empty() || !routes.cross[i].is_empty())
            .collect();
        let parts: Vec<Part> = if busy.len() <= 1 {
            // One shard's work (the common case for small calls): no
            // thread to start.
            busy.iter().map(|&i| run(&shared.nodes[i])).collect()
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = busy
                    .iter()
                    .map(|&i| {
                        let run = &run;
                        s.spawn(move || run(&shared.nodes[i]))
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap_or(Err(Error::Poisoned)))
                    .collect()
            })
        };
        let mut waits = Vec::new();
        for part in parts {
            let (done, w) = part?;
            for (i, r) in done {
                results[i] = r;
            }
            waits.extend(w);
        }
        // A transfer that existed may be final already: look it up now
        // that its waiter is registered (a later finish will notify).
        for &(_, (shard, id), existed) in &waits {
            let node = &self.shared.nodes[shard as usize];
            if existed
                && let Some(agg) = node.aggregate(&node.ledger.snapshot(), id)?
                && agg.state.is_final()
            {
                let mut w = self.shared.waiters.lock();
                if let Some(slot) = w.slots.get_mut(&(shard, id)) {
                    slot.1 = Some(Outcome {
                        shard,
                        id,
                        committed: agg.state == TransferState::Committed,
                        refusal: agg.refusal,
                    });
                }
            }
        }
        Ok(waits)
    }

    fn register(&self, ids: &[(ShardId, u128)]) {
        let mut w = self.shared.waiters.lock();
        for &id in ids {
            w.slots.entry(id).or_insert((0, None)).0 += 1;
        }
    }

    fn unregister(&self, ids: &[(ShardId, u128)]) {
        let mut w = self.shared.waiters.lock();
        for id in ids {
            if let Some(slot) = w.slots.get_mut(id) {
                slot.0 -= 1;
                if slot.0 == 0 {
                    w.slots.remove(id);
                }
            }
        }
    }

    fn wait(&self, waits: &[Wait], results: &mut [CreateTransferResult]) -> Result<()> {
        let mut w = self.shared.waiters.lock();
        for &(i, key, existed) in waits {
            let outcome = loop {
                if let Some(o) = w.slots.get(&key).and_then(|s| s.1) {
                    break o;
                }
                if w.failure.is_some() {
                    return Err(Error::Poisoned);
                }
                self.shared.finished.wait(&mut w);
            };
            let refusal = outcome
                .refusal
                .unwrap_or(CreateTransferResult::LinkedEventFailed);
            results[i] = match (outcome.committed, existed) {
                (true, false) => CreateTransferResult::Ok,
                (true, true) => CreateTransferResult::Exists,
                (false, false) => refusal,
                // Sent again after it aborted: as on one shard, an id
                // whose transfer failed on state that may change is spent.
                (false, true) if refusal.is_transient() => CreateTransferResult::IdAlreadyFailed,
                (false, true) => refusal,
            };
        }
        Ok(())
    }

    /// The first shard's record of a cross-shard transfer `id` (ids are
    /// unique per coordinator: with one id on several, the lowest shard's).
    fn coordinator_aggregate(&self, id: u128) -> Result<Option<super::state::Aggregate>> {
        for node in &self.shared.nodes {
            if let Some(agg) = node.aggregate(&node.ledger.snapshot(), id)? {
                return Ok(Some(agg));
            }
        }
        Ok(None)
    }

    /// Where cross-shard transfer `id` is (`None`: no shard coordinates a
    /// transfer with that id; same-shard transfers have no state here). If
    /// transfers on several coordinators share the id, the lowest
    /// shard's.
    pub fn transfer_state(&self, id: u128) -> Result<Option<TransferState>> {
        Ok(self.coordinator_aggregate(id)?.map(|a| a.state))
    }

    /// The transfers with these ids as the user created them, in input
    /// order: a cross-shard transfer once it committed (its timestamp the
    /// debit leg's), a same-shard one as its shard stores it. Each shard is
    /// read at its own snapshot; with one id on several shards, the lowest
    /// shard's. The legs themselves are on `shard(i)`.
    pub fn lookup_transfers(&self, ids: &[u128]) -> Result<Vec<Transfer>> {
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            for node in &self.shared.nodes {
                let snap = node.ledger.snapshot();
                if let Some(agg) = node.aggregate(&snap, id)? {
                    if agg.state == TransferState::Committed
                        && let Some(leg) = snap.lookup_transfers(&[id])?.first()
                    {
                        out.push(Transfer {
                            timestamp: leg.timestamp,
                            ..agg.transfer
                        });
                        break;
                    }
                    continue;
                }
                let own = snap.lookup_transfers(&[id])?.into_iter().find(|t| {
                    !super::ids::is_reserved(t.debit_account_id)
                        && !super::ids::is_reserved(t.credit_account_id)
                });
                if let Some(t) = own {
                    out.push(t);
                    break;
                }
            }
        }
        Ok(out)
    }

    /// The accounts with these ids that exist, each read at its own
    /// shard's snapshot, in input order (settlement accounts included).
    pub fn lookup_accounts(&self, ids: &[u128]) -> Result<Vec<Account>> {
        let mut out = Vec::with_capacity(ids.len());
        for &id in ids {
            let on = super::ids::settlement_shard(id).unwrap_or_else(|| self.shard_of(id));
            let Some(shard) = self.shared.nodes.get(on as usize) else {
                continue;
            };
            out.extend(shard.ledger.lookup_accounts(&[id])?);
        }
        Ok(out)
    }

    /// How many cross-shard transfers are not final yet, over all shards.
    pub fn in_flight(&self) -> usize {
        self.shared.nodes.iter().map(Node::in_flight).sum()
    }

    /// Why a shard's thread stopped, if one did.
    pub fn failure(&self) -> Option<String> {
        self.shared.waiters.lock().failure.clone()
    }

    /// Waits up to `timeout` until no cross-shard transfer is in flight;
    /// returns whether that happened.
    pub fn settle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.in_flight() > 0 {
            if Instant::now() >= deadline || self.failure().is_some() {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shared.transport.stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Checks (or, in a new directory, records) the shard count and the
/// placement: accounts live where they were placed, so a cluster reopened
/// with another count or placement would look for them on other shards
/// (and make second copies there). The file is `count\nplacement\n`; a
/// file from before the placement was kept holds the count alone, and
/// gets the placement given now.
fn check_layout(dir: &Path, shards: u32, placement: Placement) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| Error::creating_dir(dir, e))?;
    let path = dir.join(SHARDS_FILE);
    let write = |contents: String| -> Result<()> {
        let tmp = dir.join("SHARDS.tmp");
        std::fs::write(&tmp, contents)?;
        std::fs::File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, &path)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    };
    let layout = format!("{shards}\n{}\n", placement.name());
    match std::fs::read_to_string(&path) {
        Ok(s) => {
            let mut lines = s.lines();
            let n = lines.next().and_then(|l| l.trim().parse::<u32>().ok());
            let kept = lines.next().map(str::trim);
            match (n, kept) {
                (None, _) => Err(Error::corruption(&path, 0, "not a shard count")),
                (Some(n), _) if n != shards => Err(Error::invalid(format!(
                    "{} holds a cluster of {n} shards, not {shards}",
                    dir.display()
                ))),
                (Some(_), None) => write(layout),
                (Some(_), Some(name)) => match Placement::from_name(name) {
                    Some(p) if p == placement => Ok(()),
                    Some(p) => Err(Error::invalid(format!(
                        "{} holds a cluster whose accounts are placed by {}, not {}",
                        dir.display(),
                        p.name(),
                        placement.name()
                    ))),
                    None => Err(Error::corruption(&path, 0, "not a placement")),
                },
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => write(layout),
        Err(e) => Err(Error::Io(e)),
    }
}

/// A shard's thread: handles everything that has arrived as one batch,
/// and re-sends what stayed unanswered over a resend interval.
fn shard_thread(shared: &Shared, shard: ShardId, rx: &Receiver<Inbox>) {
    /// Fails the cluster if the thread unwinds: its callers must not wait
    /// forever for a thread that is gone.
    struct OnPanic<'a>(&'a Shared, ShardId);
    impl Drop for OnPanic<'_> {
        fn drop(&mut self) {
            if std::thread::panicking() {
                self.0.fail(self.1, &Error::Poisoned);
            }
        }
    }
    let _guard = OnPanic(shared, shard);
    let node = &shared.nodes[shard as usize];
    let interval = shared.options.resend_interval;
    // A restart resumes every unfinished transfer: send the outbox now.
    let mut unanswered: HashSet<(ShardId, u128)> = HashSet::new();
    // `resend`: 0 = no, 1 = what was owed a tick ago too, 2 = everything.
    let step = |envs: &[Envelope], resend: u8, unanswered: &mut HashSet<(ShardId, u128)>| {
        let mut fx = if envs.is_empty() {
            Effects::default()
        } else {
            node.handle(envs)?
        };
        if resend > 0 {
            let again = node.resend()?;
            // Only what was already owed a tick ago: fresh messages are
            // still on their way.
            let now: HashSet<(ShardId, u128)> =
                again.send.iter().map(|(to, m)| (*to, m.id())).collect();
            fx.send.extend(
                again
                    .send
                    .into_iter()
                    .filter(|(to, m)| resend == 2 || unanswered.contains(&(*to, m.id()))),
            );
            *unanswered = now;
        }
        shared.dispatch(shard, fx);
        Ok::<(), Error>(())
    };
    if let Err(e) = step(&[], 2, &mut unanswered) {
        shared.fail(shard, &e);
        return;
    }
    let mut next_resend = Instant::now() + interval;
    loop {
        let first = match rx.recv_timeout(next_resend.saturating_duration_since(Instant::now())) {
            Ok(m) => Some(m),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut envs = Vec::new();
        let mut stop = false;
        for m in first.into_iter().chain(rx.try_iter().take(MAX_ENVELOPES)) {
            match m {
                Inbox::Envelope(e) => envs.push(e),
                Inbox::Stop => stop = true,
            }
        }
        if stop {
            return;
        }
        let resend = Instant::now() >= next_resend;
        if resend {
            next_resend = Instant::now() + interval;
        }
        if let Err(e) = step(&envs, u8::from(resend), &mut unanswered) {
            shared.fail(shard, &e);
            return;
        }
    }
}
