//! The accounts' transfer index: for each account, the timestamp and id of
//! every transfer that moved it, in timestamp order, in memory.
//!
//! It is derived from the transfer records, the one place a transfer's
//! accounts and timestamp are kept: `Ledger::open` builds it from them
//! (`Builder`), and each batch adds its new transfers (`add_batch`) once
//! its writes are installed, before any reader can see them
//! (`Batch::after_install`). It is not logged nor checkpointed: it holds
//! nothing the records do not.
//!
//! Why not history records in the key-value core, as before: a batch of
//! 8,190 transfers wrote 16,380 of them, 40% of its keys, each a blob
//! built and installed like an account. `mvledger bench` ran 1.4x-1.6x
//! faster without them (three runs alternated). Here an entry is 24 bytes
//! pushed onto its account's vector.
//!
//! Snapshots: a batch appends its entries before it becomes visible, so
//! a reader at a ledger snapshot finds every entry of the batches it
//! sees, and maybe some of a later batch: those name transfers the
//! snapshot does not find, and the reader skips them
//! (`LedgerSnapshot::history`).
//!
//! Accounts with `AccountFlags::HISTORY` keep their balances after each
//! transfer as records too (`codec::history_key`): those are state, not
//! derived from the transfer alone.
//!
//! Deferred appends: the append of a batch of 8,190 transfers took some
//! 18% of its time in `mvledger bench` (left out, the bench ran 1.06x-
//! 1.42x faster, median 1.22x, four runs alternated), on both cores,
//! while the next batch's state machine runs on one core and leaves the
//! other idle. So a batch of `DEFER_MIN` entries or more only queues them
//! (`add_batch`); the next batch of transfers appends them, shard by
//! shard, on a helper thread beside its state machine until the machine
//! is done (`catch_up_beside`, from `api::run_transfers`); the next
//! batch with entries of its own appends what is left (on two threads)
//! before it queues its own, so the queue holds one batch at most (a
//! call with none, such as `create_accounts`, leaves the queue to the
//! next helper or reader). A reader first appends
//! whatever is queued (`catch_up`), so it finds every entry of the
//! batches it sees, as before: a batch queues its entries before it
//! becomes visible.
//!
//! Concurrency: `add_batch` runs in the sequencer (one batch at a time, in
//! commit order), so the queue is in commit order; appends run one at a
//! time, in queue order (the `turn` lock), so each account's entries stay
//! in timestamp order. Readers take one shard's read lock for the copy of
//! one account's range.

use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use parking_lot::{Mutex, RwLock};

use super::codec;
use crate::mvcc::{KeyHasher, bucket_by, by_parts, prefetch};

/// Shards of the index, each behind its own lock: a power of two.
const SHARDS: usize = 64;
/// Appends of more entries than this are bucketed by shard first, for a
/// lock hold per shard (`append`).
const SORT_MIN: usize = 16;
/// The room of an account's first chunk of entries (192 bytes), and of
/// its biggest: each chunk has twice the room of the one before, up to
/// `CHUNK_MAX` (6 KB).
const FIRST_ROOM: usize = 8;
const CHUNK_MAX: usize = 256;
/// The most entries whose vector `keep_spare` keeps: those of 16,384
/// transfers (the biggest batch that runs in the machine's kept caches).
const KEPT_ENTRIES: usize = 2 * 16_384;
/// A batch of this many entries or more is queued, not appended at once
/// (`add_batch`): the next batch's helper thread costs some 60 us to
/// start, the append of 1,024 entries about as much.
const DEFER_MIN: usize = 1_024;
/// The entries an append warms at a time (`warm`): 16 and 32 took 10-20%
/// less time than none for a batch's append on one thread, 64 less.
const WARM_AHEAD: usize = 16;

/// One entry: a transfer of the account, at `ts`. The id in two words, so
/// that an entry takes 24 bytes, not 32 (a `u128` aligns to 16).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Item {
    ts: u64,
    id: [u64; 2],
}

impl Item {
    pub(crate) fn new(ts: u64, id: u128) -> Item {
        Item {
            ts,
            id: [id as u64, (id >> 64) as u64],
        }
    }

    pub(crate) fn ts(&self) -> u64 {
        self.ts
    }

    pub(crate) fn id(&self) -> u128 {
        u128::from(self.id[0]) | (u128::from(self.id[1]) << 64)
    }
}

/// One account's entries, oldest first, in chunks: the full ones, then the
/// one being filled. A full chunk is never moved nor copied: a vector that
/// doubled in place copied every entry again at each growth, under the
/// shard's write lock (for a hot account, megabytes at once), and took
/// 1.1x-1.4x as long over a day's appends (a program appending 240
/// batches of 16,380 entries over 100,000 accounts on one thread, seven
/// runs of each alternated; in one pair the chunks took 7% longer).
#[derive(Debug, Default)]
struct Entries {
    full: Vec<Box<[Item]>>,
    open: Vec<Item>,
}

impl Entries {
    fn push(&mut self, item: Item) {
        if self.open.len() == self.open.capacity() {
            let room = (2 * self.open.capacity()).clamp(FIRST_ROOM, CHUNK_MAX);
            let full = std::mem::replace(&mut self.open, Vec::with_capacity(room));
            if !full.is_empty() {
                // Full: no reallocation.
                self.full.push(full.into_boxed_slice());
            }
        }
        self.open.push(item);
    }

    fn chunks(&self) -> impl DoubleEndedIterator<Item = &[Item]> {
        self.full.iter().map(|c| &c[..]).chain([&self.open[..]])
    }

    /// Up to `n` entries with a timestamp in `min..=max`: the oldest,
    /// oldest first, or (`reversed`) the newest, newest first.
    fn page(&self, min: u64, max: u64, reversed: bool, n: usize) -> Vec<Item> {
        if !reversed {
            let mut out = self.range(min, max, n);
            out.truncate(n);
            return out;
        }
        let mut out = Vec::new();
        for chunk in self.chunks().rev() {
            if chunk.first().is_some_and(|i| i.ts > max) {
                continue;
            }
            let from = chunk.partition_point(|i| i.ts < min);
            let to = chunk.partition_point(|i| i.ts <= max);
            out.extend(chunk[from..to.max(from)].iter().rev().take(n - out.len()));
            if from > 0 || out.len() == n {
                break;
            }
        }
        out
    }

    /// The entries with a timestamp in `min..=max`, oldest first: all of
    /// them, or at least `n` when there are that many.
    fn range(&self, min: u64, max: u64, n: usize) -> Vec<Item> {
        // The first full chunk that may hold one: the one whose last entry
        // is at or after `min` (full chunks are never empty).
        let first = self.full.partition_point(|c| c[c.len() - 1].ts < min);
        let mut out = Vec::new();
        for chunk in self.chunks().skip(first) {
            let from = chunk.partition_point(|i| i.ts < min);
            let to = chunk.partition_point(|i| i.ts <= max);
            out.extend_from_slice(&chunk[from..to.max(from)]);
            if to < chunk.len() || out.len() >= n {
                break;
            }
        }
        out
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.chunks().map(<[Item]>::len).sum()
    }
}

type Map = HashMap<u128, Entries, BuildHasherDefault<KeyHasher>>;

fn shard_of(account: u128) -> usize {
    usize::from(codec::account_family(account))
}

/// `entries` by shard, in order within each (the index's `bucket_by`),
/// leaving `entries` empty with its room.
fn by_shard(entries: &mut Vec<(u128, Item)>) -> Vec<Vec<(u128, Item)>> {
    bucket_by(std::slice::from_mut(entries), SHARDS, |(account, _)| {
        shard_of(*account)
    })
}

/// Reads the map entries of `round`'s accounts and asks for the line each
/// push will write (the end of the account's open chunk), in a pass of
/// independent loads: the processor waits for their cache misses side by
/// side, where the pushes, each of which writes before the next begins,
/// wait for them in turn (the index's installs do the same: `warm`).
fn warm(map: &Map, round: &[(u128, Item)]) {
    for (account, _) in round {
        if let Some(entries) = map.get(account) {
            let open = &entries.open;
            prefetch(open.as_ptr().wrapping_add(open.len()));
        }
    }
}

/// Appends `item` to `account`'s entries in `map`.
fn push(map: &mut Map, account: u128, item: Item) {
    map.entry(account).or_default().push(item);
}

/// A queued batch's entries: as the batch gave them, or by shard once a
/// helper began on them, from shard `next` on (`append_queued`).
#[derive(Debug)]
enum Queued {
    Entries(Vec<(u128, Item)>),
    Buckets {
        buckets: Vec<Vec<(u128, Item)>>,
        next: usize,
    },
}

/// The index (see the module's doc).
#[derive(Debug)]
pub(crate) struct History {
    shards: Box<[RwLock<Map>]>,
    /// The vector of a batch's entries, emptied, for the next batch
    /// (`take_spare`): a batch of 8,190 transfers fills 650 KB of it.
    spare: Mutex<Vec<(u128, Item)>>,
    /// Batches' entries not appended yet, in commit order (`add_batch`).
    queued: Mutex<VecDeque<Queued>>,
    /// How many batches are queued or being appended: a reader that finds
    /// none need not wait for its turn (`catch_up`).
    unapplied: AtomicUsize,
    /// Held while appending: one append at a time, in commit order.
    turn: Mutex<()>,
}

impl Default for History {
    fn default() -> Self {
        History {
            shards: (0..SHARDS).map(|_| RwLock::new(Map::default())).collect(),
            spare: Mutex::new(Vec::new()),
            queued: Mutex::new(VecDeque::new()),
            unapplied: AtomicUsize::new(0),
            turn: Mutex::new(()),
        }
    }
}

/// Builds a `History` from entries in any order, as `Ledger::open` walks
/// the transfer records: entry by entry, with no list of them all (a
/// ledger of millions of transfers would hold it twice over).
#[derive(Debug)]
pub(crate) struct Builder {
    found: Vec<HashMap<u128, Vec<Item>, BuildHasherDefault<KeyHasher>>>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            found: (0..SHARDS).map(|_| HashMap::default()).collect(),
        }
    }
}

impl Builder {
    pub(crate) fn add(&mut self, account: u128, item: Item) {
        self.found[shard_of(account)]
            .entry(account)
            .or_default()
            .push(item);
    }

    /// The index: each account's entries sorted, as its one open chunk
    /// (its room left for appends; once full, a chunk of `CHUNK_MAX`
    /// follows).
    pub(crate) fn finish(self) -> History {
        let history = History::default();
        for (lock, found) in history.shards.iter().zip(self.found) {
            let mut map = lock.write();
            map.reserve(found.len());
            for (account, mut open) in found {
                open.sort_unstable_by_key(|i| (i.ts, i.id));
                map.insert(
                    account,
                    Entries {
                        full: Vec::new(),
                        open,
                    },
                );
            }
        }
        history
    }
}

impl History {
    /// Appends `entries` (account, entry), each after every entry its
    /// account has: a batch's, in event order, so in timestamp order.
    /// Leaves `entries` empty, with its room. One lock hold per shard
    /// that `entries` touch, on two threads for a big batch (the index's
    /// `bucket_by` and `by_parts`).
    #[cfg(test)]
    pub(crate) fn append(&self, entries: &mut Vec<(u128, Item)>) {
        self.append_on(entries);
    }

    /// `append` (the small batches of `add_batch` go through it).
    fn append_on(&self, entries: &mut Vec<(u128, Item)>) {
        if entries.len() <= SORT_MIN {
            // A call of a few transfers: a lock hold per entry costs less
            // than bucketing them by shard.
            for (account, item) in entries.drain(..) {
                push(&mut self.shards[shard_of(account)].write(), account, item);
            }
            return;
        }
        self.append_buckets(by_shard(entries), 0);
    }

    /// Appends `buckets` (those of shards `first..`, in order), on two
    /// threads for many entries (the index's `by_parts`).
    fn append_buckets(&self, buckets: Vec<Vec<(u128, Item)>>, first: usize) {
        let total = buckets.iter().map(Vec::len).sum();
        by_parts(buckets, total, |i, bucket, _: &mut Vec<()>| {
            self.append_bucket(first + i, bucket);
        });
    }

    /// A batch's entries, from the sequencer, before the batch becomes
    /// visible. First appends what is still queued (on two threads): the
    /// queue never holds more than one batch. Then queues the entries when
    /// there are `DEFER_MIN` or more (the next batch of transfers appends
    /// what it can beside its state machine, `catch_up_beside`; a reader
    /// all of them, `catch_up`), else appends them now.
    pub(crate) fn add_batch(&self, mut entries: Vec<(u128, Item)>) {
        let _turn = self.turn.lock();
        self.append_queued(None);
        if entries.len() >= DEFER_MIN {
            self.unapplied.fetch_add(1, Ordering::Release);
            self.queued.lock().push_back(Queued::Entries(entries));
            return;
        }
        self.append_on(&mut entries);
        self.keep_spare(entries);
    }

    /// Whether a batch waits in the queue (or is being appended).
    pub(crate) fn has_queued(&self) -> bool {
        self.unapplied.load(Ordering::Acquire) > 0
    }

    /// Appends what is queued, or waits until the thread appending it is
    /// done: then the index holds the entries of every batch that queued
    /// them before this call.
    pub(crate) fn catch_up(&self) {
        if self.has_queued() {
            let _turn = self.turn.lock();
            self.append_queued(None);
        }
    }

    /// Runs `work` on this thread while a helper thread appends what is
    /// queued, shard by shard, until `work` is done (`catch_up_until`).
    pub(crate) fn catch_up_beside<R>(&self, work: impl FnOnce() -> R) -> R {
        let stop = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let helper = scope.spawn(|| self.catch_up_until(|| stop.load(Ordering::Relaxed)));
            let out = work();
            stop.store(true, Ordering::Relaxed);
            if let Err(panic) = helper.join() {
                std::panic::resume_unwind(panic);
            }
            out
        })
    }

    /// `catch_up` on this thread alone, shard by shard, until `stop()`
    /// (asked before each shard): what is left stays queued, first in line.
    fn catch_up_until(&self, stop: impl Fn() -> bool) {
        if self.has_queued() {
            let _turn = self.turn.lock();
            self.append_queued(Some(&stop));
        }
    }

    /// Appends the queued batches in order, all of them on two threads, or
    /// (with `stop`) on this thread until `stop()`. The caller holds
    /// `turn`.
    fn append_queued(&self, stop: Option<&dyn Fn() -> bool>) {
        loop {
            if stop.is_some_and(|stop| stop()) {
                return;
            }
            let Some(front) = self.queued.lock().pop_front() else {
                return;
            };
            let (mut buckets, next) = match front {
                Queued::Entries(mut entries) => {
                    let buckets = by_shard(&mut entries);
                    self.keep_spare(entries);
                    (buckets, 0)
                }
                Queued::Buckets { buckets, next } => (buckets, next),
            };
            match stop {
                None => self.append_buckets(buckets.split_off(next), next),
                Some(stop) => {
                    for shard in next..SHARDS {
                        if stop() {
                            let rest = Queued::Buckets {
                                buckets,
                                next: shard,
                            };
                            self.queued.lock().push_front(rest);
                            return;
                        }
                        self.append_bucket(shard, std::mem::take(&mut buckets[shard]));
                    }
                }
            }
            // After the entries are in: a reader that then finds no batch
            // unapplied finds them (`Acquire` in `has_queued`).
            self.unapplied.fetch_sub(1, Ordering::Release);
        }
    }

    /// Appends one shard's entries, in order, `WARM_AHEAD` at a time,
    /// each round after a `warm` pass over it.
    fn append_bucket(&self, shard: usize, bucket: Vec<(u128, Item)>) {
        if bucket.is_empty() {
            return;
        }
        let mut map = self.shards[shard].write();
        for round in bucket.chunks(WARM_AHEAD) {
            warm(&map, round);
            for &(account, item) in round {
                push(&mut map, account, item);
            }
        }
    }

    /// An empty vector for a batch's entries, with the room an earlier
    /// batch left in it (`keep_spare`).
    pub(crate) fn take_spare(&self) -> Vec<(u128, Item)> {
        std::mem::take(&mut *self.spare.lock())
    }

    /// Keeps a batch's emptied vector for the next batch (one with room
    /// for `KEPT_ENTRIES` at most).
    fn keep_spare(&self, entries: Vec<(u128, Item)>) {
        debug_assert!(entries.is_empty());
        if entries.capacity() <= KEPT_ENTRIES {
            *self.spare.lock() = entries;
        }
    }

    /// `account`'s entries with a timestamp in `min..=max`, oldest first.
    #[cfg(test)]
    pub(crate) fn range(&self, account: u128, min: u64, max: u64) -> Vec<Item> {
        self.page(account, min, max, false, usize::MAX)
    }

    /// Up to `n` of `account`'s entries with a timestamp in `min..=max`:
    /// the oldest, oldest first, or (`reversed`) the newest, newest first.
    pub(crate) fn page(
        &self,
        account: u128,
        min: u64,
        max: u64,
        reversed: bool,
        n: usize,
    ) -> Vec<Item> {
        self.catch_up();
        let map = self.shards[shard_of(account)].read();
        map.get(&account)
            .map_or_else(Vec::new, |entries| entries.page(min, max, reversed, n))
    }

    /// How many entries the index holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.read().values().map(Entries::len).sum::<usize>())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(items: &[Item]) -> Vec<u128> {
        items.iter().map(Item::id).collect()
    }

    #[test]
    fn an_item_keeps_its_timestamp_and_its_whole_id() {
        for id in [
            0,
            1,
            u128::from(u64::MAX),
            u128::from(u64::MAX) + 1,
            u128::MAX,
        ] {
            let item = Item::new(7, id);
            assert_eq!((item.ts(), item.id()), (7, id));
        }
        assert_eq!(std::mem::size_of::<Item>(), 24);
    }

    #[test]
    fn appended_entries_come_back_by_account_in_order_within_the_range() {
        let h = History::default();
        // Accounts over every shard, some with many entries.
        let accounts: Vec<u128> = (1..=300).map(|a| a * 0x1_0000_0001).collect();
        let mut ts = 0;
        let mut model: HashMap<u128, Vec<Item>> = HashMap::new();
        for batch in 0..5 {
            let mut entries = Vec::new();
            for (k, &a) in accounts.iter().enumerate() {
                if (k + batch) % 3 == 0 {
                    continue;
                }
                ts += 1;
                let item = Item::new(ts, u128::from(ts) << 64 | 5);
                entries.push((a, item));
                model.entry(a).or_default().push(item);
            }
            h.append(&mut entries);
        }
        assert_eq!(h.len(), model.values().map(Vec::len).sum::<usize>());
        for (a, items) in &model {
            assert_eq!(&h.range(*a, 0, u64::MAX), items, "account {a}");
            let (lo, hi) = (items[1].ts, items[items.len() - 2].ts);
            assert_eq!(
                h.range(*a, lo, hi),
                items[1..items.len() - 1],
                "account {a}"
            );
            assert!(h.range(*a, hi + 1, lo.max(hi + 1) - 1).is_empty());
        }
        assert!(h.range(12_345, 0, u64::MAX).is_empty());
    }

    /// Every range of an account whose entries span many chunks, before
    /// and after a build from records (which leaves one big chunk, then appends
    /// start new ones), is the entries a plain filter keeps; and a page
    /// of it, either way, their first or last ones.
    #[test]
    fn ranges_across_chunk_boundaries_are_what_a_filter_keeps() {
        let appended = History::default();
        // Timestamps 2, 4, ...: a bound can fall on an entry or between.
        let all: Vec<Item> = (1..=700u64)
            .map(|n| Item::new(2 * n, u128::from(n)))
            .collect();
        for item in &all[..500] {
            appended.append(&mut vec![(9, *item)]);
        }
        let mut builder = Builder::default();
        for item in all[..500].iter().rev() {
            builder.add(9, *item);
        }
        let rebuilt = builder.finish();
        for item in &all[500..] {
            appended.append(&mut vec![(9, *item)]);
            rebuilt.append(&mut vec![(9, *item)]);
        }
        let bounds = [
            0, 1, 2, 3, 15, 16, 17, 47, 48, 49, 500, 999, 1000, 1001, 1400, 1401, 1402, 5000,
        ];
        for &min in &bounds {
            for &max in &bounds {
                let want: Vec<Item> = all
                    .iter()
                    .filter(|i| (min..=max).contains(&i.ts()))
                    .copied()
                    .collect();
                assert_eq!(appended.range(9, min, max), want, "appended {min}..={max}");
                assert_eq!(rebuilt.range(9, min, max), want, "rebuilt {min}..={max}");
                let newest: Vec<Item> = want.iter().rev().copied().collect();
                for n in [1, 7, 8, 9, 100, 256, 1000] {
                    for h in [&appended, &rebuilt] {
                        let first = &want[..n.min(want.len())];
                        assert_eq!(
                            h.page(9, min, max, false, n),
                            first,
                            "{min}..={max} first {n}"
                        );
                        let last = &newest[..n.min(want.len())];
                        assert_eq!(h.page(9, min, max, true, n), last, "{min}..={max} last {n}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_build_from_entries_in_any_order_sorts_each_account() {
        let appended = History::default();
        let mut entries = Vec::new();
        for ts in 1..=1_000u64 {
            let account = u128::from(ts % 17);
            entries.push((account, Item::new(ts, u128::from(ts) * 3)));
        }
        appended.append(&mut entries.clone());
        entries.reverse();
        entries.swap(3, 500);
        let mut builder = Builder::default();
        for (account, item) in entries {
            builder.add(account, item);
        }
        let rebuilt = builder.finish();
        for account in 0..17 {
            let got = rebuilt.range(account, 0, u64::MAX);
            assert_eq!(got, appended.range(account, 0, u64::MAX));
            assert_eq!(ids(&got).len(), got.len());
            assert!(got.windows(2).all(|w| w[0].ts < w[1].ts));
        }
    }

    /// A helper stopped after any number of shards (none, some, all)
    /// leaves the rest first in line; the next batch appends it before it
    /// queues its own, and a small batch after that comes last. Every
    /// account then has each of its entries once, in timestamp order.
    /// Fails when a stopped helper loses or repeats a shard, or when a
    /// small batch goes before the queued one.
    #[test]
    fn a_stopped_helper_leaves_the_rest_first_in_line() {
        let accounts = 300u128;
        let batch = |first_ts: u64, n: u64| -> Vec<(u128, Item)> {
            (first_ts..first_ts + n)
                .map(|ts| (u128::from(ts * 7) % accounts, Item::new(ts, u128::from(ts))))
                .collect()
        };
        for stop_after in [0, 1, 2, 17, SHARDS - 1, SHARDS, SHARDS + 5] {
            let history = History::default();
            let (a, b, c) = (batch(1, 3_000), batch(3_001, 2_000), batch(5_001, 5));
            let mut want: Vec<Vec<Item>> = vec![Vec::new(); accounts as usize];
            for (account, item) in a.iter().chain(&b).chain(&c) {
                want[*account as usize].push(*item);
            }
            history.add_batch(a);
            assert!(history.has_queued(), "a big batch is queued");
            let asked = std::cell::Cell::new(0);
            history.catch_up_until(|| {
                asked.set(asked.get() + 1);
                asked.get() > stop_after
            });
            // What the helper left, then `b` queued; `c` goes after `b`.
            history.add_batch(b);
            history.add_batch(c);
            assert!(!history.has_queued());
            assert_eq!(history.len(), 5_005, "stopped after {stop_after}");
            for account in 0..accounts {
                let got = history.range(account, 0, u64::MAX);
                assert_eq!(got, want[account as usize], "stopped after {stop_after}");
            }
        }
    }
}
