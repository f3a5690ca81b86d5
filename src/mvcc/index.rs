//! The versioned index: every key's versions, newest last, in memory.
//!
//! The keys are spread over `SHARDS` shards by a hash of the key, each
//! behind its own reader-writer lock, so a point read takes one shard's read
//! lock for a moment and no lock is global. A key is hashed once (`hash_of`)
//! for both: the hash picks the shard, and the shard (`shard.rs`) finds the
//! key by the same hash, and keeps key order lazily, for scans. Scans merge the shards
//! in key order (`scan.rs`), copying a bounded chunk per lock hold so that
//! no lock is held across user code and writers are never blocked for long.
//!
//! Lock order: a thread that holds several shard locks at once (a small
//! commit's install, `install_small`, and bulk lookups, `latest_claim`,
//! which the sequencer runs and so does `Engine::warm` for its callers)
//! takes them in shard order; every other holder takes one at a time and
//! waits for no other lock meanwhile. So no cycle of waits can form.
//!
//! Writers are the sequencer (installs, in ts order), recovery, and the
//! garbage collector (prunes). A version at ts T is invisible to readers
//! until the engine's visible ts reaches T; the index itself does not know
//! what is visible, readers pass their ts.
//!
//! Big batches go through the index in bulk, shared between the caller and
//! a helper thread past `PARALLEL_MIN` keys, each taking the next untaken
//! part (`by_parts`). Installs (`install_all`) and prunes are grouped by
//! shard, a part per shard and a write lock hold per `CHUNK` keys: the
//! parts are disjoint, so the two threads never touch the same lock, and
//! the caller publishes nothing until both are done. Lookups
//! (`latest_into`, the ledger's before a batch runs) go in claims of
//! `CLAIM` keys in input order, each claim's shards read-locked at once,
//! and write each answer in place. Within a chunk, the entries (and what
//! an install will prune) are read in passes of independent loads first
//! (`warm`), so that their cache misses overlap.
//! The blobs of small versions pruned at install are kept for new versions
//! of the same length (`take_spare`).
//!
//! A version is a `Blob`: its key, value, ts and the next older version in
//! one allocation, which the index owns alone (readers get copies, or
//! borrow under the read lock). A map entry (`Chain`) is the blob's
//! pointer: see `blob.rs` and `table.rs`.

use std::ops::Bound;

use bytes::Bytes;

use super::blob::Blob;
use super::key::{Key, hash_of};
use super::readers::Horizon;
use super::shard::{Keyed, Shard, parts_of};
use crate::sync::{AtomicBool, AtomicU64, Mutex, Ordering, RwLock};

/// The number of shards: a power of two.
pub(crate) const SHARDS: usize = 64;

/// Commits with at least this many writes are installed grouped by shard.
const GROUP_MIN: usize = 256;
/// Commits with at least this many writes are installed by two threads.
const PARALLEL_MIN: usize = 4096;
/// The longest value whose buffer is kept for reuse, and the most buffers
/// kept (a few MiB at most).
const SPARE_BYTES: usize = 256;
const SPARE_MAX: usize = 1 << 14;
/// `keep_writes` keeps at most `KEPT_VECTORS` emptied vectors of writes,
/// each with room for at most `KEPT_WRITES_MAX` (a batch of 8,190
/// transfers writes about 40,000 keys; a bigger one's vectors go).
const KEPT_VECTORS: usize = 4;
const KEPT_WRITES_MAX: usize = 1 << 17;
/// The most writes installed under one hold of a shard's lock, and the
/// keys of a lookup pass.
const CHUNK: usize = 64;
/// The keys of a claim of `latest_into`: its shards' read locks are taken
/// once for them, about 32 keys a lock, and held for the claim (about
/// 100 us). Both threads take the same shards' read locks, whose lock
/// words then move between the cores: a lock per few keys would cost more
/// than the keys. (Grouping a claim's keys by shard, with a lock held for
/// each group only, ran about 5% slower in criterion's `always_uniform`:
/// medians of six runs alternated with this.)
const CLAIM: usize = 2048;

/// A set of writes to install and log: key and new value (`None` deletes).
/// Installing takes them by move, as the blobs the index keeps (a batch
/// builds its writes as blobs from the start, so they move in whole).
pub(crate) trait Writes {
    fn count(&self) -> usize;
    fn each(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> + Clone;
    /// The writes as the index holds them, moved out, each with its key's
    /// hash (`hash_of`).
    fn into_hashed(self) -> impl Iterator<Item = Hashed>;
    /// `into_hashed`, in two vectors: the bulk, in a vector the index may
    /// keep for a later batch once it is emptied (`keep_writes`), and the
    /// rest. Two, so that neither grows to take the other.
    fn into_hashed_parts(self) -> [Vec<Hashed>; 2]
    where
        Self: Sized,
    {
        [self.into_hashed().collect(), Vec::new()]
    }
}

impl Writes for super::txn::WriteSet {
    fn count(&self) -> usize {
        self.len()
    }
    fn each(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> + Clone {
        self.values().map(|b| (b.key(), b.value()))
    }
    fn into_hashed(self) -> impl Iterator<Item = Hashed> {
        self.into_values().map(|b| (hash_of(b.key()), b))
    }
}

impl Writes for super::batch::BatchWrites {
    fn count(&self) -> usize {
        self.len()
    }
    fn each(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> + Clone {
        self.iter()
    }
    fn into_hashed(self) -> impl Iterator<Item = Hashed> {
        let [once, map] = self.into_hashed_parts();
        once.into_iter().chain(map)
    }
    fn into_hashed_parts(self) -> [Vec<Hashed>; 2] {
        self.into_hashed_parts()
    }
}

/// The cache lines of a blob that a lookup's pass asks for ahead: a ledger
/// account (12 + 17 + about 50 bytes) spans two, and a 100-byte value
/// with a 16-byte key three.
const VALUE_LINES: usize = 3;

/// The fewest writes a `warm` pass is worth: a lone write has no other
/// miss to overlap, and would probe twice.
const WARM_MIN: usize = 4;

/// A write with its key's hash (`hash_of`).
pub(crate) type Hashed = (u64, Blob);

/// Writes to install, which show those still to come.
trait Ahead: Iterator<Item = Hashed> {
    fn ahead(&self) -> &[Hashed];
}

impl Ahead for std::vec::IntoIter<Hashed> {
    fn ahead(&self) -> &[Hashed] {
        self.as_slice()
    }
}

impl<const N: usize> Ahead for std::array::IntoIter<Hashed, N> {
    fn ahead(&self) -> &[Hashed] {
        self.as_slice()
    }
}

/// Reads what installing `writes` will touch: each key's entry, its list
/// of older versions and the oldest one's blob (which the install prunes),
/// in passes of independent loads, so that the processor waits for their
/// cache misses side by side, where the install, which writes as it goes,
/// would wait for each in turn. Each pass only asks for the lines the next
/// one reads (`prefetch`): the entries' buckets (`Shard::prefetch`, which
/// reads nothing, not even the key: the part is in the hash) and the new
/// blobs' first lines (the install compares their keys and sets their ts;
/// a batch built them a while ago), the entries by their hash bits
/// (`Shard::peek`, which does not wait for the key), then the blobs and
/// lists behind them.
fn warm(shard: &Shard<Chain>, writes: &[Hashed]) {
    let writes = &writes[..writes.len().min(CHUNK)];
    for (hash, blob) in writes {
        shard.prefetch(*hash);
        blob.prefetch(1);
    }
    let mut chains: [Option<&Chain>; CHUNK] = [None; CHUNK];
    for (slot, (hash, _)) in chains.iter_mut().zip(writes) {
        *slot = shard.peek(*hash);
        if let Some(chain) = slot {
            chain.prefetch();
        }
    }
    warm_older(&chains[..writes.len().min(CHUNK)]);
}

/// `warm`'s pass after the first: the blob of the next older version of
/// each found chain (the one an install prunes, when it is below the
/// watermark), whose pointer is in the newest blob's first line.
fn warm_older(chains: &[Option<&Chain>]) {
    for chain in chains.iter().flatten() {
        if let Some(older) = chain.older() {
            older.prefetch(SPARE_BYTES / 64);
        }
    }
}

/// The shards `hashes` fall in, in shard order (the module's lock order:
/// a guard is taken for each, in that order), and for every shard its
/// position among them: an item whose hash is `h` is under guard
/// `at[shard_of_hash(h)]`.
fn shards_of(hashes: impl Iterator<Item = u64>) -> (Vec<usize>, [u8; SHARDS]) {
    let mut touched = [false; SHARDS];
    for hash in hashes {
        touched[shard_of_hash(hash)] = true;
    }
    let (mut shards, mut at) = (Vec::with_capacity(SHARDS), [0u8; SHARDS]);
    for (shard, _) in touched.iter().enumerate().filter(|(_, t)| **t) {
        at[shard] = shards.len() as u8;
        shards.push(shard);
    }
    (shards, at)
}

/// `bucket_by` the index's shards (`hash` gives an item's `hash_of`).
fn bucket_by_shard<T>(lists: &mut [Vec<T>], hash: impl Fn(&T) -> u64) -> Vec<Vec<T>> {
    bucket_by(lists, SHARDS, |item| shard_of_hash(hash(item)))
}

/// Counts the items of `lists` by bucket (`bucket` gives an item's, below
/// `n`), then moves each into its bucket in order, each bucket sized
/// exactly, leaving the lists empty (with their room). Separate passes:
/// one loop doing all of it was slower. Also for what the ledger keeps
/// beside the index in shards of its own (`ledger/history.rs`).
pub(crate) fn bucket_by<T>(
    lists: &mut [Vec<T>],
    n: usize,
    bucket: impl Fn(&T) -> usize,
) -> Vec<Vec<T>> {
    let mut counts = vec![0usize; n];
    for item in lists.iter().flatten() {
        counts[bucket(item)] += 1;
    }
    let mut buckets: Vec<Vec<T>> = counts.iter().map(|&n| Vec::with_capacity(n)).collect();
    for item in lists.iter_mut().flat_map(|list| list.drain(..)) {
        buckets[bucket(&item)].push(item);
    }
    buckets
}

/// Runs `run(i, part, out)` for every part (a shard's bucket, or a claim
/// of keys; `total` items in all) and returns all that the runs pushed to
/// `out`, in no particular order: on this thread alone under
/// `PARALLEL_MIN` items, else on this thread and a helper, each taking the
/// next part not yet taken until none is left. Taking parts one at a time
/// lets the faster thread do more: the helper starts about 60 us late and
/// shares its core with the log's sync, and with the shards split in two
/// halves up front this thread waited for it 0.3 to 0.5 ms a batch of
/// 8,190 transfers. Also for the ledger's history (`ledger/history.rs`).
pub(crate) fn by_parts<T: Send, R: Send>(
    parts: Vec<T>,
    total: usize,
    run: impl Fn(usize, T, &mut Vec<R>) + Sync,
) -> Vec<R> {
    if total < PARALLEL_MIN || cfg!(loom) {
        let mut out = Vec::new();
        for (i, part) in parts.into_iter().enumerate() {
            run(i, part, &mut out);
        }
        return out;
    }
    // Local to the two threads, and never under loom (above): std's and
    // parking_lot's types, not the `crate::sync` shim. Each part is taken
    // out of its slot before it runs: no slot's lock is held while `run`
    // takes shard locks.
    let parts: Vec<parking_lot::Mutex<Option<T>>> = parts
        .into_iter()
        .map(|p| parking_lot::Mutex::new(Some(p)))
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || {
        let mut out = Vec::new();
        loop {
            let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let Some(slot) = parts.get(i) else {
                return out;
            };
            let part = slot.lock().take();
            if let Some(part) = part {
                run(i, part, &mut out);
            }
        }
    };
    std::thread::scope(|scope| {
        let helper = scope.spawn(work);
        let mut out = work();
        match helper.join() {
            Ok(mut more) => out.append(&mut more),
            Err(panic) => std::panic::resume_unwind(panic),
        }
        out
    })
}

/// A key's versions: the newest blob, which holds the next older one (and
/// so on, each older one owned by the next newer: `Blob::older`). Most
/// keys (a transfer, a history entry) never get a second version, and a
/// map entry is the blob's pointer (the map keeps 32 bits of the key's
/// hash beside it: `table.rs`).
#[derive(Debug)]
pub(crate) struct Chain {
    newest: Blob,
}

// A map entry: the newest blob's pointer (see `blob.rs` for why its size
// matters), five of them to a map's cache line.
const _: () = assert!(std::mem::size_of::<Option<Chain>>() == 8);

impl Keyed for Chain {
    /// The key; a map compares it once the kept hash bits match, and then
    /// the value usually follows: its lines are asked for at once.
    fn key(&self) -> &[u8] {
        self.newest.prefetch_value();
        self.newest.key()
    }
}

impl Chain {
    /// Asks for the line a lookup of this chain reads next: the newest
    /// blob's first (its ts, key and the pointer to the older version).
    fn prefetch(&self) {
        self.newest.prefetch(1);
    }

    /// A key's first version, installed at its ts.
    fn new(newest: Blob) -> Chain {
        debug_assert!(newest.older().is_none());
        Chain { newest }
    }

    fn older(&self) -> Option<&Blob> {
        self.newest.older()
    }

    /// The versions, newest first.
    fn versions(&self) -> impl Iterator<Item = &Blob> {
        std::iter::successors(Some(&self.newest), |v| v.older())
    }

    /// The newest version with ts at or below `ts`.
    fn at(&self, ts: u64) -> Option<&Blob> {
        self.versions().find(|v| v.ts() <= ts)
    }

    fn len(&self) -> usize {
        self.versions().count()
    }

    /// Makes `version` (installed at its ts) the newest; the previous
    /// newest becomes the next older one.
    fn push(&mut self, version: Blob) {
        debug_assert!(version.older().is_none());
        let old = std::mem::replace(&mut self.newest, version);
        self.newest.set_older(Some(old));
    }

    /// Drops the older versions no reader of `h` can read (hands each to
    /// `gone`, detached from the others): keeps the newest, and each older
    /// one that `h.needs`. Returns how many it dropped.
    fn prune(&mut self, h: &Horizon, mut gone: impl FnMut(Blob)) -> usize {
        let mut dropped = 0;
        let mut newer = self.newest.ts();
        let mut at = &mut self.newest;
        while let Some(mut version) = at.take_older() {
            let ts = version.ts();
            if h.needs(ts, newer) {
                at.set_older(Some(version));
                match at.older_mut() {
                    Some(kept) => at = kept,
                    None => break,
                }
            } else {
                at.set_older(version.take_older());
                gone(version);
                dropped += 1;
            }
            newer = ts;
        }
        dropped
    }

    /// Whether the key is gone for every reader of `h`: its only version
    /// is a tombstone at or below the watermark.
    fn is_dead(&self, h: &Horizon) -> bool {
        self.older().is_none() && self.newest.ts() <= h.watermark() && self.newest.is_tombstone()
    }
}

/// The sharded versioned index.
#[derive(Debug)]
pub(crate) struct Index {
    shards: Box<[RwLock<Shard<Chain>>]>,
    keys: AtomicU64,
    versions: AtomicU64,
    reclaimed: AtomicU64,
    /// Buffers of pruned versions, for `take_spare`; kept only once
    /// someone has asked for them (`spare_wanted`): an engine whose user
    /// never does pays nothing for them.
    spare: Mutex<Vec<Blob>>,
    spare_wanted: AtomicBool,
    /// Emptied vectors of writes, for the next big batch's once-writes
    /// (`take_writes`).
    emptied: Mutex<Vec<Vec<Hashed>>>,
}

/// The shard of `key`: bits 40..46 of its hash. Not the low 32 bits: the
/// shard's maps use those (`shard::table_hash`), the low ones for the
/// bucket and bits 25..32 as the tag they compare before anything else,
/// and a shard whose keys shared some of them would crowd its buckets or
/// compare more keys.
#[cfg(test)]
pub(crate) fn shard_of(key: &[u8]) -> usize {
    shard_of_hash(hash_of(key))
}

/// `shard_of` for a key whose `hash_of` is `hash`.
fn shard_of_hash(hash: u64) -> usize {
    ((hash >> 40) as usize) & (SHARDS - 1)
}

/// Whether the bounds can hold no key: `BTreeSet::range` panics on some
/// such bounds (start after end, or equal and both excluded).
pub(crate) fn bounds_are_empty(bounds: (Bound<&[u8]>, Bound<&[u8]>)) -> bool {
    match bounds {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Excluded(b))
        | (Bound::Excluded(a), Bound::Included(b)) => a >= b,
        _ => false,
    }
}

/// Keeps the blob of a pruned version (detached from any older one) for
/// reuse (`Index::take_spare`) when it is small; drops it otherwise.
/// Nothing else can hold it: readers copy values out.
fn recycle(version: Blob, spare: &mut Vec<Blob>) {
    if version.len() <= SPARE_BYTES && version.reusable_as(version.len()) {
        spare.push(version);
    }
}

/// What pruning one key did.
struct Pruned {
    /// Versions dropped (the key's last one too, when it was removed).
    versions: u64,
    /// The key was removed: its only version was a tombstone below the
    /// watermark.
    dead: bool,
    /// The key still holds versions above the watermark: its newest ts,
    /// to visit it again.
    again: Option<u64>,
}

/// `Index::prune`'s work for one key, under its shard's write lock:
/// keeps the versions a reader of `h` can read (`Chain::prune`), and
/// removes the key if what is left is one tombstone below every reader.
fn prune_locked(shard: &mut Shard<Chain>, hash: u64, key: &[u8], h: &Horizon) -> Pruned {
    let Some(chain) = shard.get_mut(hash, key) else {
        return Pruned {
            versions: 0,
            dead: false,
            again: None,
        };
    };
    let dropped = chain.prune(h, drop) as u64;
    let again = chain.older().is_some().then(|| chain.newest.ts());
    let dead = chain.is_dead(h);
    if dead {
        shard.remove(hash, key);
    }
    Pruned {
        versions: dropped + u64::from(dead),
        dead,
        again,
    }
}

/// `Index::install_all`'s work for one write, under the shard's lock:
/// makes `blob` the newest version of its key, at `ts`, pruning for
/// `h` on the way (and keeping pruned blobs in `spare`, when
/// given). Returns whether the key is new and how many versions were
/// dropped, and pushes the key to `visit` when the collector must visit
/// it.
fn install_locked(
    shard: &mut Shard<Chain>,
    (hash, blob): Hashed,
    ts: u64,
    h: &Horizon,
    visit: &mut Vec<Key>,
    spare: Option<&mut Vec<Blob>>,
) -> (bool, u64) {
    shard.upsert(
        hash,
        (blob, visit, spare),
        |(blob, ..)| blob.key(),
        |(blob, visit, mut spare), chain| {
            debug_assert!(chain.newest.ts() < ts, "install out of ts order");
            let queued = chain.older().is_some();
            let dropped = chain.prune(h, |v| {
                if let Some(spare) = spare.as_deref_mut() {
                    recycle(v, spare);
                }
            }) as u64;
            let mut blob = blob;
            blob.set_ts(ts);
            chain.push(blob);
            if !queued {
                visit.push(Key::new(chain.key()));
            }
            (false, dropped)
        },
        |(blob, visit, _)| {
            if blob.is_tombstone() {
                visit.push(blob.index_key());
            }
            let mut blob = blob;
            blob.set_ts(ts);
            (Chain::new(blob), (true, 0))
        },
    )
}

fn to_key_bound(b: Bound<&[u8]>) -> Bound<Key> {
    match b {
        Bound::Included(k) => Bound::Included(Key::new(k)),
        Bound::Excluded(k) => Bound::Excluded(Key::new(k)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// The bounds as index keys.
pub(crate) fn key_bounds(bounds: (Bound<&[u8]>, Bound<&[u8]>)) -> (Bound<Key>, Bound<Key>) {
    (to_key_bound(bounds.0), to_key_bound(bounds.1))
}

/// What `scan_shard` found in one lock hold.
#[derive(Debug)]
pub(crate) struct Chunk {
    /// The last key examined, to resume after; `None` when the shard's
    /// range is exhausted.
    pub resume_after: Option<Key>,
}

impl Index {
    pub(crate) fn new() -> Self {
        Index {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            keys: AtomicU64::new(0),
            versions: AtomicU64::new(0),
            reclaimed: AtomicU64::new(0),
            spare: Mutex::new(Vec::new()),
            spare_wanted: AtomicBool::new(false),
            emptied: Mutex::new(Vec::new()),
        }
    }

    /// The shard of `key`, and its hash.
    fn locate(&self, key: &[u8]) -> (&RwLock<Shard<Chain>>, u64) {
        let hash = hash_of(key);
        (&self.shards[shard_of_hash(hash)], hash)
    }

    /// The value of `key` at `ts` (`None` when absent or deleted): a copy.
    pub(crate) fn get(&self, key: &[u8], ts: u64) -> Option<Bytes> {
        self.get_with(key, ts, |v| v.map(super::copy::copy_out))
    }

    /// Calls `f` with the value of `key` at `ts` (`None` when absent or
    /// deleted), under the shard's read lock: no copy.
    pub(crate) fn get_with<R>(&self, key: &[u8], ts: u64, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        let (lock, hash) = self.locate(key);
        let shard = lock.read();
        f(shard
            .get(hash, key)
            .and_then(|c| c.at(ts))
            .and_then(Blob::value))
    }

    /// The ts of the newest version of `key`, installed or not yet visible.
    pub(crate) fn latest_ts(&self, key: &[u8]) -> Option<u64> {
        let (lock, hash) = self.locate(key);
        let shard = lock.read();
        shard.get(hash, key).map(|c| c.newest.ts())
    }

    /// Calls `f` with the newest value of `key` (visible or not), under the
    /// shard's read lock: no copy.
    pub(crate) fn latest_with<R>(&self, key: &[u8], f: impl FnOnce(Option<&[u8]>) -> R) -> R {
        let (lock, hash) = self.locate(key);
        let shard = lock.read();
        f(shard.get(hash, key).and_then(|c| c.newest.value()))
    }

    /// Looks up the newest value of each of `keys` (visible or not, as
    /// `latest_with`) and calls `fill(value, &mut dest[i])` for the key
    /// `keys[i]`: each answer lands in the place the caller gave it, with
    /// no list of answers in between (one of a batch's 16,000 account
    /// lookups was 8 MB, allocated and freed per batch). The calls come in
    /// no particular order across claims, maybe from two threads; `fill`
    /// runs under up to `SHARDS` read locks and must not use the index.
    ///
    /// In bulk: a loop of independent lookups lets the processor wait for
    /// several cache misses at once, where lookups spread through other
    /// work wait for each in turn. The keys go in claims of `CLAIM`; a
    /// claim's shards are read-locked at once, in shard order (the module's
    /// lock order), and its keys read in passes of `CHUNK` (`latest_claim`).
    /// Past `PARALLEL_MIN` keys, this thread and a helper each take the
    /// next claim not yet taken (`by_parts`): each claim writes its own
    /// part of `dest`.
    ///
    /// # Panics
    ///
    /// When `dest` and `keys` differ in length.
    pub(crate) fn latest_into<K, D>(
        &self,
        keys: &[K],
        dest: &mut [D],
        fill: impl Fn(Option<&[u8]>, &mut D) + Sync,
    ) where
        K: AsRef<[u8]> + Sync,
        D: Send,
    {
        assert_eq!(keys.len(), dest.len(), "latest_into: a destination per key");
        let claims: Vec<(&[K], &mut [D])> =
            keys.chunks(CLAIM).zip(dest.chunks_mut(CLAIM)).collect();
        by_parts(claims, keys.len(), |_, (keys, dest), _: &mut Vec<()>| {
            self.latest_claim(keys, dest, &fill);
        });
    }

    /// Brings the newest versions of `keys` into the processor's cache, in
    /// passes whose misses overlap (`latest_into` with nothing to fill):
    /// a hint for a caller about to read them one by one.
    pub(crate) fn warm_keys<K: AsRef<[u8]> + Sync>(&self, keys: &[K]) {
        let mut nothing = vec![(); keys.len()];
        self.latest_into(keys, &mut nothing, |_, ()| ());
    }

    /// `latest_into`'s work for one claim: every shard its keys fall in is
    /// read-locked at once, in shard order, then the keys are read in
    /// order, `CHUNK` at a time, each chunk in three passes: every entry's
    /// bucket is asked for (`Shard::prefetch`, which reads nothing); every
    /// entry is found by its hash bits (`Shard::peek`) and its blob's
    /// lines asked for; then each is found for real (from the cache,
    /// mostly) and handed to `fill`.
    fn latest_claim<K: AsRef<[u8]>, D>(
        &self,
        keys: &[K],
        dest: &mut [D],
        fill: &impl Fn(Option<&[u8]>, &mut D),
    ) {
        let hashes: Vec<u64> = keys.iter().map(|k| hash_of(k.as_ref())).collect();
        let (locked, at) = shards_of(hashes.iter().copied());
        let guards: Vec<_> = locked.iter().map(|&s| self.shards[s].read()).collect();
        let shard = |hash: u64| &*guards[at[shard_of_hash(hash)] as usize];
        let chunks = keys.chunks(CHUNK).zip(hashes.chunks(CHUNK));
        for ((keys, hashes), dest) in chunks.zip(dest.chunks_mut(CHUNK)) {
            for &hash in hashes {
                shard(hash).prefetch(hash);
            }
            for &hash in hashes {
                if let Some(chain) = shard(hash).peek(hash) {
                    chain.newest.prefetch(VALUE_LINES);
                }
            }
            for ((key, &hash), dest) in keys.iter().zip(hashes).zip(dest) {
                let key = key.as_ref();
                let value = shard(hash).get(hash, key).and_then(|c| c.newest.value());
                fill(value, dest);
            }
        }
    }

    /// One write through `install_all`: true when the collector must visit
    /// the key. (Tests only: the engine installs whole commits.)
    #[cfg(test)]
    pub(crate) fn install(
        &self,
        key: &[u8],
        ts: u64,
        value: Option<Bytes>,
        watermark: u64,
    ) -> bool {
        let write = super::txn::WriteSet::from([(key.into(), Blob::new(key, value.as_deref()))]);
        !self
            .install_all(write, ts, &Horizon::at(watermark))
            .is_empty()
    }

    /// Installs a commit's writes at `ts`, each a version newer than all
    /// its key has, and returns the keys the collector must visit: those
    /// that now have two versions, and new keys whose only version is a
    /// tombstone (a delete of a key that never existed must not stay in
    /// memory forever).
    ///
    /// `h` is a horizon taken at some time before (`readers::Horizon`):
    /// versions no reader of it can read are dropped here, while the key is at hand,
    /// so a key updated over and over keeps two versions without the
    /// collector visiting it each time. A key with more than one version is
    /// always in the collector's queue, so one that had older versions
    /// before this install is not queued again.
    ///
    /// A big commit's writes are grouped by shard, so that each lock hold
    /// (of at most `CHUNK` writes, to keep readers' waits short) and each
    /// counter update covers many of them, and its shards are shared
    /// between this thread and a helper (`PARALLEL_MIN`, `by_parts`): the
    /// shards are disjoint, and the caller publishes nothing before both
    /// are done. Small commits skip the bucketing, which costs more than it
    /// saves on a few writes (`install_small`), and a single write goes
    /// straight to its shard.
    pub(crate) fn install_all(&self, writes: impl Writes, ts: u64, h: &Horizon) -> Vec<Key> {
        let mut visit = Vec::new();
        let count = writes.count();
        if count == 1 {
            for write in writes.into_hashed() {
                let shard = shard_of_hash(write.0);
                self.install_shard(shard, [write].into_iter(), ts, h, &mut visit);
            }
            return visit;
        }
        if count < GROUP_MIN {
            self.install_small(writes.into_hashed(), ts, h, &mut visit);
            return visit;
        }
        // The hashes come with the writes: a batch takes each as it builds
        // the write, while the key is in the cache (a pass over the blobs
        // here missed the cache on most of them, 20 ns a write).
        let mut parts = writes.into_hashed_parts();
        let buckets = bucket_by_shard(&mut parts, |&(hash, _)| hash);
        let [bulk, _] = parts;
        self.keep_writes(bulk);
        by_parts(buckets, count, |shard, bucket, visit| {
            self.install_shard(shard, bucket.into_iter(), ts, h, visit);
        })
    }

    /// `install_all` for a small commit (fewer than `GROUP_MIN` writes):
    /// every shard it writes is locked at once, in shard order (the lock
    /// order of the module doc: no two threads can wait on each other),
    /// and the entries are read in passes of independent loads
    /// (as `warm`) before the installs. A lock taken and released per
    /// write is a full barrier each time, so each write's cache misses
    /// waited for the last's.
    fn install_small(
        &self,
        writes: impl Iterator<Item = Hashed>,
        ts: u64,
        h: &Horizon,
        visit: &mut Vec<Key>,
    ) {
        let writes: Vec<Hashed> = writes.collect();
        let (locked, at) = shards_of(writes.iter().map(|&(hash, _)| hash));
        let guard = |hash: u64| at[shard_of_hash(hash)] as usize;
        let mut guards: Vec<_> = locked.iter().map(|&s| self.shards[s].write()).collect();
        {
            let chains: Vec<Option<&Chain>> = writes
                .iter()
                .map(|&(hash, _)| guards[guard(hash)].peek(hash))
                .collect();
            for chain in chains.iter().flatten() {
                chain.prefetch();
            }
            warm_older(&chains);
        }
        let recycling = self.spare_wanted.load(Ordering::Relaxed);
        let mut spare = Vec::new();
        let (mut added, mut keys, mut dropped) = (0u64, 0u64, 0u64);
        for write in writes {
            added += 1;
            let (new, gone) = install_locked(
                &mut guards[guard(write.0)],
                write,
                ts,
                h,
                visit,
                recycling.then_some(&mut spare),
            );
            keys += u64::from(new);
            dropped += gone;
        }
        drop(guards);
        self.count_installed(added, keys, dropped);
        self.keep_spare(spare);
    }

    /// Counts what installs did: versions added, keys added, versions
    /// pruned.
    fn count_installed(&self, added: u64, keys: u64, dropped: u64) {
        self.versions.fetch_add(added, Ordering::Relaxed);
        self.keys.fetch_add(keys, Ordering::Relaxed);
        self.reclaim(dropped, 0);
    }

    /// Keeps buffers that installs recycled, up to `SPARE_MAX` in all.
    fn keep_spare(&self, spare: Vec<Blob>) {
        if !spare.is_empty() {
            let mut kept = self.spare.lock();
            let room = SPARE_MAX.saturating_sub(kept.len());
            kept.extend(spare.into_iter().take(room));
        }
    }

    /// `install_all` for writes that all fall in `shard`, `CHUNK` per lock
    /// hold.
    fn install_shard(
        &self,
        shard: usize,
        writes: impl Ahead,
        ts: u64,
        h: &Horizon,
        visit: &mut Vec<Key>,
    ) {
        let lock = &self.shards[shard];
        let recycling = self.spare_wanted.load(Ordering::Relaxed);
        let mut spare = Vec::new();
        let mut drain = writes;
        while !drain.ahead().is_empty() {
            let (mut added, mut keys, mut dropped) = (0u64, 0u64, 0u64);
            let mut shard = lock.write();
            let ahead = drain.ahead();
            if ahead.len() >= WARM_MIN {
                warm(&shard, &ahead[..ahead.len().min(CHUNK)]);
            }
            for write in drain.by_ref().take(CHUNK) {
                added += 1;
                let (new, gone) = install_locked(
                    &mut shard,
                    write,
                    ts,
                    h,
                    visit,
                    recycling.then_some(&mut spare),
                );
                keys += u64::from(new);
                dropped += gone;
            }
            drop(shard);
            self.count_installed(added, keys, dropped);
        }
        self.keep_spare(spare);
    }

    /// Up to `n` blobs of exactly `len` bytes that pruned versions left
    /// (see `recycle`), to build new blobs in without an allocation
    /// (`Blob::reuse`): a rewritten key's new version takes the place of
    /// the one pruned as it is installed, where a fresh allocation and a
    /// free each cost a walk through the allocator's lists.
    pub(crate) fn take_spare(&self, n: usize, len: usize) -> Vec<Blob> {
        self.spare_wanted.store(true, Ordering::Relaxed);
        let mut kept = self.spare.lock();
        let from = kept.len().saturating_sub(n);
        let mut taken = kept.split_off(from);
        drop(kept);
        taken.retain(|b| b.reusable_as(len));
        taken
    }

    /// An empty vector with room for `n` writes, one that an earlier
    /// batch's writes emptied when there is one (`keep_writes`): a batch
    /// of 8,190 transfers builds 2 MB of once-writes, and the memory of a
    /// fresh vector comes from the system page by page, each page a fault.
    pub(crate) fn take_writes(&self, n: usize) -> Vec<Hashed> {
        let mut v = self.emptied.lock().pop().unwrap_or_default();
        v.reserve(n);
        v
    }

    /// Keeps an emptied vector of writes for `take_writes`: a few, of the
    /// sizes big batches use.
    pub(crate) fn keep_writes(&self, v: Vec<Hashed>) {
        debug_assert!(v.is_empty(), "keep_writes of a vector with writes");
        // Checked in release builds too: a kept write would be installed
        // again by the next batch that takes the vector.
        if (GROUP_MIN..=KEPT_WRITES_MAX).contains(&v.capacity()) && v.is_empty() {
            let mut kept = self.emptied.lock();
            if kept.len() < KEPT_VECTORS {
                kept.push(v);
            }
        }
    }

    /// Recovery's install: no reader exists yet, so the new version simply
    /// replaces the key's state (a tombstone removes the key). The version
    /// is a key's only one: it goes without room for an older one
    /// (`Blob::lone`) until the key gets a newer version.
    pub(crate) fn install_replay(&self, key: &[u8], ts: u64, value: Option<&[u8]>) {
        let (lock, hash) = self.locate(key);
        let mut shard = lock.write();
        match value {
            Some(value) => {
                let mut version = Blob::lone(key, Some(value));
                version.set_ts(ts);
                let added = shard.upsert(
                    hash,
                    version,
                    |v| v.key(),
                    |version, chain| {
                        chain.newest = version;
                        false
                    },
                    |version| (Chain::new(version), true),
                );
                if added {
                    self.keys.fetch_add(1, Ordering::Relaxed);
                    self.versions.fetch_add(1, Ordering::Relaxed);
                }
            }
            None => {
                if let Some(chain) = shard.remove(hash, key) {
                    self.keys.fetch_sub(1, Ordering::Relaxed);
                    self.versions
                        .fetch_sub(chain.len() as u64, Ordering::Relaxed);
                }
            }
        }
    }

    /// Prunes `key` for `h`. Returns the ts of its newest version when it
    /// still has more than one (the collector must come back).
    pub(crate) fn prune(&self, key: &Key, h: &Horizon) -> Option<u64> {
        let hash = hash_of(key.as_bytes());
        let mut shard = self.shards[shard_of_hash(hash)].write();
        let pruned = prune_locked(&mut shard, hash, key.as_bytes(), h);
        drop(shard);
        self.reclaim(pruned.versions, u64::from(pruned.dead));
        pruned.again
    }

    /// `prune` for many keys at once (the collector's due keys): past
    /// `GROUP_MIN` of them, grouped by shard, `CHUNK` per lock hold, each
    /// chunk's entries and older versions read in a pass of independent
    /// loads first (as `warm`), and shared with a helper thread past
    /// `PARALLEL_MIN` keys (`by_parts`, as `install_all`). Returns the
    /// keys that still hold versions above `watermark`, with their newest
    /// ts.
    pub(crate) fn prune_all(&self, keys: Vec<Key>, h: &Horizon) -> Vec<(u64, Key)> {
        if keys.len() < GROUP_MIN {
            // A few keys: grouping costs more than it saves.
            return keys
                .into_iter()
                .filter_map(|key| self.prune(&key, h).map(|newest| (newest, key)))
                .collect();
        }
        let total = keys.len();
        let mut hashed: Vec<(Key, u64)> = keys
            .into_iter()
            .map(|k| {
                let hash = hash_of(k.as_bytes());
                (k, hash)
            })
            .collect();
        let buckets = bucket_by_shard(std::slice::from_mut(&mut hashed), |&(_, hash)| hash);
        by_parts(buckets, total, |shard, bucket, again| {
            self.prune_shard(shard, &bucket, h, again);
        })
    }

    /// `prune_all`'s work in one shard.
    fn prune_shard(
        &self,
        shard: usize,
        keys: &[(Key, u64)],
        h: &Horizon,
        again: &mut Vec<(u64, Key)>,
    ) {
        for chunk in keys.chunks(CHUNK) {
            let mut guard = self.shards[shard].write();
            if chunk.len() >= WARM_MIN {
                let mut seen = 0u64;
                let chains: Vec<Option<&Chain>> = chunk
                    .iter()
                    .map(|(key, hash)| guard.get(*hash, key.as_bytes()))
                    .collect();
                for chain in chains.iter().flatten() {
                    seen ^= chain.older().map_or(0, Blob::ts);
                }
                std::hint::black_box(seen);
            }
            let (mut versions, mut dead_keys) = (0u64, 0u64);
            for (key, hash) in chunk {
                let pruned = prune_locked(&mut guard, *hash, key.as_bytes(), h);
                versions += pruned.versions;
                dead_keys += u64::from(pruned.dead);
                if let Some(newest) = pruned.again {
                    again.push((newest, key.clone()));
                }
            }
            drop(guard);
            self.reclaim(versions, dead_keys);
        }
    }

    fn reclaim(&self, versions: u64, keys: u64) {
        if versions > 0 {
            self.versions.fetch_sub(versions, Ordering::Relaxed);
            self.reclaimed.fetch_add(versions, Ordering::Relaxed);
        }
        if keys > 0 {
            self.keys.fetch_sub(keys, Ordering::Relaxed);
        }
    }

    /// Prunes every key for `h`.
    pub(crate) fn sweep(&self, h: &Horizon) {
        for shard in self.shards.iter() {
            let mut shard = shard.write();
            let mut dropped = 0u64;
            let before = shard.len();
            shard.retain(|chain| {
                dropped += chain.prune(h, drop) as u64;
                !chain.is_dead(h)
            });
            let dead = (before - shard.len()) as u64;
            drop(shard);
            self.reclaim(dropped + dead, dead);
        }
    }

    /// Appends to `out` up to `limit` visible `(key, value)` pairs of shard
    /// `shard` at `ts` within the bounds, in key order, examining at most
    /// `4 * limit` keys under one lock hold. Orders the shard's pending keys
    /// in the range first, if it has any.
    pub(crate) fn scan_shard(
        &self,
        shard: usize,
        bounds: (Bound<&[u8]>, Bound<&[u8]>),
        ts: u64,
        limit: usize,
        out: &mut Vec<(Bytes, Bytes)>,
    ) -> Chunk {
        if bounds_are_empty(bounds) {
            return Chunk { resume_after: None };
        }
        let bounds = key_bounds(bounds);
        let parts = parts_of(&bounds);
        let lock = &self.shards[shard];
        let read = lock.read();
        if !read.has_pending(&parts) {
            return scan_locked(&read, &bounds, ts, limit, out);
        }
        drop(read);
        let mut write = lock.write();
        write.merge(&parts);
        scan_locked(&write, &bounds, ts, limit, out)
    }

    /// Whether any key within the bounds has a version newer than `ts`
    /// (Serializable's phantom check).
    pub(crate) fn changed_in_range(&self, bounds: (Bound<&[u8]>, Bound<&[u8]>), ts: u64) -> bool {
        if bounds_are_empty(bounds) {
            return false;
        }
        let bounds = key_bounds(bounds);
        let parts = parts_of(&bounds);
        self.shards.iter().any(|lock| {
            let mut shard = lock.write();
            shard.merge(&parts);
            shard
                .range(&bounds)
                .any(|(_, chain)| chain.newest.ts() > ts)
        })
    }

    /// Calls `f` with each key starting with `first` and its newest value
    /// (`None`: deleted), visible or not, in no order, under each shard's
    /// read lock in turn: a cheap walk (no key order is built) for a
    /// caller that knows nothing is being written, as at open.
    pub(crate) fn for_each_latest_in(&self, first: u8, mut f: impl FnMut(&[u8], Option<&[u8]>)) {
        for lock in &self.shards {
            let shard = lock.read();
            for chain in shard.part_entries(first) {
                f(chain.newest.key(), chain.newest.value());
            }
        }
    }

    /// Calls `f` with every live `(key, value)` at `ts`, shard by shard,
    /// copying at most `chunk` entries per lock hold.
    pub(crate) fn for_each_at(
        &self,
        ts: u64,
        chunk: usize,
        mut f: impl FnMut(&[u8], &[u8]) -> crate::Result<()>,
    ) -> crate::Result<()> {
        let mut buf = Vec::with_capacity(chunk);
        for shard in 0..SHARDS {
            let mut lower: Bound<Key> = Bound::Unbounded;
            loop {
                buf.clear();
                let bounds = (
                    match &lower {
                        Bound::Excluded(k) => Bound::Excluded(k.as_bytes()),
                        _ => Bound::Unbounded,
                    },
                    Bound::Unbounded,
                );
                let found = self.scan_shard(shard, bounds, ts, chunk, &mut buf);
                for (key, value) in &buf {
                    f(key, value)?;
                }
                match found.resume_after {
                    Some(key) => lower = Bound::Excluded(key),
                    None => break,
                }
            }
        }
        Ok(())
    }

    pub(crate) fn keys(&self) -> u64 {
        self.keys.load(Ordering::Relaxed)
    }
    pub(crate) fn versions(&self) -> u64 {
        self.versions.load(Ordering::Relaxed)
    }
    pub(crate) fn reclaimed(&self) -> u64 {
        self.reclaimed.load(Ordering::Relaxed)
    }
}

/// `scan_shard`'s work, on a shard whose range is merged.
fn scan_locked(
    shard: &Shard<Chain>,
    bounds: &(Bound<Key>, Bound<Key>),
    ts: u64,
    limit: usize,
    out: &mut Vec<(Bytes, Bytes)>,
) -> Chunk {
    let mut examined = 0;
    for (key, chain) in shard.range(bounds) {
        if let Some(value) = chain.at(ts).and_then(Blob::value) {
            out.push((
                Bytes::copy_from_slice(key.as_bytes()),
                Bytes::copy_from_slice(value),
            ));
        }
        examined += 1;
        if out.len() >= limit || examined >= 4 * limit {
            return Chunk {
                resume_after: Some(key.clone()),
            };
        }
    }
    Chunk { resume_after: None }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(s: &str) -> Option<Bytes> {
        Some(Bytes::copy_from_slice(s.as_bytes()))
    }

    /// Pruned blobs are kept once someone asks for them, handed out by
    /// exact length, and a reader's value (a copy) is not changed by the
    /// reuse of the blob it was read from.
    #[test]
    fn pruned_small_blobs_are_kept_for_reuse_once_asked_for() {
        // Nobody asked for spare buffers yet: none are kept.
        let index = Index::new();
        index.install(b"q", 1, b("one"), 0);
        index.install(b"q", 2, b("two"), 0);
        index.install(b"q", 3, b("six"), 3);
        assert!(index.spare.lock().is_empty(), "kept buffers nobody wants");

        let len = Blob::size(1, 3);
        let index = Index::new();
        index.take_spare(0, len);
        index.install(b"k", 1, b("one"), 0);
        let held = index.get(b"k", 1);
        index.install(b"k", 2, b("two"), 0);
        index.install(b"k", 3, b("six"), 3);
        // "one" was pruned at 3: its blob is kept, once. A reader's value
        // is its own copy, which reusing the blob leaves alone.
        let spare = index.take_spare(8, len);
        assert_eq!(spare.len(), 1);
        assert_eq!(spare[0].value(), Some(&b"one"[..]));
        let reused = Blob::reuse(spare.into_iter().next(), b"z", Some(b"new"));
        assert_eq!(reused.value(), Some(&b"new"[..]));
        assert_eq!(held, b("one"));
        assert!(index.take_spare(8, len).is_empty());
        index.install(b"k", 4, b("ten"), 4);
        let spare = index.take_spare(8, len);
        assert_eq!(spare.len(), 1);
        assert_eq!(spare[0].value(), Some(&b"two"[..]));
        // Wrong length: not handed out.
        index.install(b"k", 5, b("eleven"), 5);
        assert!(index.take_spare(8, Blob::size(1, 4)).is_empty());
        assert_eq!(index.get(b"k", 5), b("eleven"));
    }

    #[test]
    fn reads_see_the_newest_version_at_or_below_their_ts() {
        let index = Index::new();
        index.install(b"k", 1, b("one"), 0);
        index.install(b"k", 3, b("three"), 0);
        index.install(b"k", 5, None, 0);
        assert_eq!(index.get(b"k", 0), None);
        assert_eq!(index.get(b"k", 1), b("one"));
        assert_eq!(index.get(b"k", 2), b("one"));
        assert_eq!(index.get(b"k", 4), b("three"));
        assert_eq!(index.get(b"k", 5), None);
        assert_eq!(index.latest_ts(b"k"), Some(5));
    }

    #[test]
    fn prune_keeps_the_newest_at_or_below_the_watermark_and_all_above() {
        let index = Index::new();
        for ts in 1..=5 {
            index.install(b"k", ts, b(&ts.to_string()), 0);
        }
        assert_eq!(index.prune(&Key::new(b"k"), &Horizon::at(3)), Some(5));
        assert_eq!(index.versions(), 3);
        assert_eq!(index.get(b"k", 3), b("3"));
        assert_eq!(index.get(b"k", 4), b("4"));
        assert_eq!(index.get(b"k", 2), None, "version 2 is reclaimed");
        assert_eq!(index.prune(&Key::new(b"k"), &Horizon::at(9)), None);
        assert_eq!(index.versions(), 1);
        assert_eq!(index.reclaimed(), 4);
    }

    /// A big commit's once-write vector comes back from the install
    /// emptied, with its room, and the next batch's once-writes take it
    /// (`take_writes`); a vector too small to matter is not kept.
    #[test]
    fn a_big_commits_write_vector_is_kept_for_the_next_batch() {
        let index = Index::new();
        let mut batch = crate::Batch::new(&index);
        let mut once = batch.spares().writes(2 * GROUP_MIN);
        for i in 0..2 * GROUP_MIN {
            once.put_new(format!("once-{i:04}").as_bytes(), b"v")
                .expect("put");
        }
        batch.extend_once(once);
        batch.put(b"map", b"v").expect("put");
        let (writes, _) = batch.into_parts();
        index.install_all(writes, 1, &Horizon::at(0));
        assert_eq!(
            index.keys(),
            2 * GROUP_MIN as u64 + 1,
            "every write installed"
        );
        let kept: Vec<(usize, usize)> = index
            .emptied
            .lock()
            .iter()
            .map(|v| (v.len(), v.capacity()))
            .collect();
        assert!(
            matches!(kept[..], [(0, room)] if room >= 2 * GROUP_MIN),
            "{kept:?}"
        );
        let next = index.take_writes(10);
        assert!(next.is_empty() && next.capacity() >= 2 * GROUP_MIN);
        assert!(index.emptied.lock().is_empty(), "taken");
        index.keep_writes(Vec::with_capacity(GROUP_MIN - 1));
        assert!(index.emptied.lock().is_empty(), "too small to keep");
    }

    /// `latest_into` writes each key's newest value (as `latest_with`) to
    /// the key's own place, for every size of call: none, a few keys, one
    /// claim, several claims on one thread, and past `PARALLEL_MIN` on two;
    /// with keys present, absent, deleted and repeated.
    #[test]
    fn latest_into_answers_each_key_in_its_place() {
        let index = Index::new();
        let key = |i: usize| format!("key-{i:06}").into_bytes();
        for i in 0..3 * CLAIM {
            // A second version for every third key, a tombstone for every
            // fifth, none at all for every seventh.
            if i % 7 == 0 {
                continue;
            }
            index.install(&key(i), 1, b(&format!("{i}@1")), 0);
            if i % 3 == 0 {
                index.install(&key(i), 2, b(&format!("{i}@2")), 0);
            }
            if i % 5 == 0 {
                index.install(&key(i), 3, None, 0);
            }
        }
        for n in [0, 5, GROUP_MIN + 1, CLAIM + 7, PARALLEL_MIN + 1000] {
            // Spread over the keys, in no order; past 3,089 keys some are
            // asked again.
            let keys: Vec<Vec<u8>> = (0..n).map(|i| key((i * 7919) % 3089)).collect();
            // Each place gets its value, "?" before.
            let mut dest: Vec<Option<Vec<u8>>> = vec![Some(b"?".to_vec()); n];
            index.latest_into(&keys, &mut dest, |v, d| *d = v.map(<[u8]>::to_vec));
            for (k, d) in keys.iter().zip(&dest) {
                let want = index.latest_with(k, |v| v.map(<[u8]>::to_vec));
                assert_eq!(d, &want, "n {n}");
            }
            if n > 3089 {
                assert_eq!(keys[0], keys[3089], "a key asked twice");
            }
        }
    }

    /// `prune_all` (grouped by shard, in chunks, on two threads past
    /// `PARALLEL_MIN` keys) leaves the same index and returns the same keys
    /// as `prune` key by key: versions kept, tombstones removed, counters.
    #[test]
    fn prune_all_does_what_prune_does_key_by_key() {
        for n in [GROUP_MIN - 1, 3 * CHUNK * SHARDS, PARALLEL_MIN + 500] {
            let (bulk, single) = (Index::new(), Index::new());
            let key = |i: usize| format!("key-{i:06}").into_bytes();
            for index in [&bulk, &single] {
                for i in 0..n {
                    // Versions at ts 1..=k, the last a tombstone for a
                    // third of the keys.
                    let k = 1 + (i % 3) as u64;
                    for ts in 1..=k {
                        let value = if ts == k && i % 3 == 2 {
                            None
                        } else {
                            b(&format!("{i}@{ts}"))
                        };
                        index.install(&key(i), ts, value, 0);
                    }
                }
            }
            let keys: Vec<Key> = (0..n).map(|i| Key::new(&key(i))).collect();
            let wm = 2;
            let mut again = bulk.prune_all(keys.clone(), &Horizon::at(wm));
            let mut expected: Vec<(u64, Key)> = keys
                .into_iter()
                .filter_map(|k| single.prune(&k, &Horizon::at(wm)).map(|ts| (ts, k)))
                .collect();
            again.sort_by(|a, b| a.1.cmp(&b.1));
            expected.sort_by(|a, b| a.1.cmp(&b.1));
            assert_eq!(again.len(), expected.len());
            assert!(
                again
                    .iter()
                    .zip(&expected)
                    .all(|(a, e)| a.0 == e.0 && a.1 == e.1)
            );
            assert_eq!(bulk.keys(), single.keys());
            assert_eq!(bulk.versions(), single.versions());
            assert_eq!(bulk.reclaimed(), single.reclaimed());
            assert!(bulk.reclaimed() > 0);
            for i in 0..n {
                for ts in 0..=4 {
                    assert_eq!(
                        bulk.get(&key(i), ts),
                        single.get(&key(i), ts),
                        "key {i} at {ts}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_tombstone_below_the_watermark_removes_the_key() {
        let index = Index::new();
        index.install(b"k", 1, b("v"), 0);
        index.install(b"k", 2, None, 0);
        assert_eq!(index.keys(), 1);
        index.sweep(&Horizon::at(1));
        assert_eq!(index.keys(), 1, "a reader at 1 still sees the value");
        index.sweep(&Horizon::at(2));
        assert_eq!(index.keys(), 0);
        assert_eq!(index.versions(), 0);
    }

    #[test]
    fn shards_spread_keys_of_every_common_shape() {
        let shapes: [fn(u64) -> Vec<u8>; 5] = [
            |i| (i as u32).to_be_bytes().to_vec(),
            |i| i.to_be_bytes().to_vec(),
            |i| u128::from(i).to_be_bytes().to_vec(),
            |i| [&b"account:"[..], &i.to_be_bytes()].concat(),
            |i| [&b"a"[..], &u128::from(i).to_be_bytes()].concat(),
        ];
        for shape in shapes {
            let mut seen = [0usize; SHARDS];
            for i in 0..10_000u64 {
                seen[shard_of(&shape(i))] += 1;
            }
            assert!(seen.iter().all(|&n| n > 80), "{:?}: {seen:?}", shape(1));
        }
    }

    #[test]
    fn scans_order_keys_across_parts_and_after_removals() {
        let index = Index::new();
        for i in 0u32..500 {
            let mut k = vec![(i % 3) as u8];
            k.extend_from_slice(&i.to_be_bytes());
            index.install(&k, 1, b("v"), 0);
        }
        let mut out = Vec::new();
        let mut seen = Vec::new();
        for shard in 0..SHARDS {
            out.clear();
            index.scan_shard(
                shard,
                (Bound::Unbounded, Bound::Unbounded),
                1,
                usize::MAX / 8,
                &mut out,
            );
            assert!(
                out.windows(2).all(|w| w[0].0 < w[1].0),
                "shard {shard} out of order"
            );
            seen.extend(out.iter().map(|(k, _)| k.clone()));
        }
        assert_eq!(seen.len(), 500);
        let gone = [0u8, 0, 0, 0, 3];
        index.install(&gone, 2, None, 0);
        index.sweep(&Horizon::at(2));
        let shard = shard_of(&gone);
        out.clear();
        index.scan_shard(
            shard,
            (Bound::Unbounded, Bound::Unbounded),
            2,
            usize::MAX / 8,
            &mut out,
        );
        assert!(out.iter().all(|(k, _)| k[..] != gone[..]));
    }
}
