//! The accounts' transfer index: for each account, the timestamp and id of
//! every transfer that moved it, in timestamp order, in memory.
//!
//! It is derived from the transfer records, the one place a transfer's
//! accounts and timestamp are kept: `Ledger::open` builds it from them
//! (`Builder`), and each batch appends its new transfers (`append`) once
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
//! Concurrency: `append` runs in the sequencer (one batch at a time);
//! readers take one shard's read lock for the copy of one account's range.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;

use parking_lot::{Mutex, RwLock};

use super::codec;
use crate::mvcc::{KeyHasher, bucket_by, by_parts};

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
/// The most entries whose vector `append_and_keep` keeps: those of 16,384
/// transfers (the biggest batch that runs in the machine's kept caches).
const KEPT_ENTRIES: usize = 2 * 16_384;

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

/// Appends `item` to `account`'s entries in `map`.
fn push(map: &mut Map, account: u128, item: Item) {
    map.entry(account).or_default().push(item);
}

/// The index (see the module's doc).
#[derive(Debug)]
pub(crate) struct History {
    shards: Box<[RwLock<Map>]>,
    /// The vector of a batch's entries, emptied, for the next batch
    /// (`take_spare`): a batch of 8,190 transfers fills 650 KB of it.
    spare: Mutex<Vec<(u128, Item)>>,
}

impl Default for History {
    fn default() -> Self {
        History {
            shards: (0..SHARDS).map(|_| RwLock::new(Map::default())).collect(),
            spare: Mutex::new(Vec::new()),
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
    pub(crate) fn append(&self, entries: &mut Vec<(u128, Item)>) {
        if entries.len() <= SORT_MIN {
            // A call of a few transfers: a lock hold per entry costs less
            // than bucketing them by shard.
            for (account, item) in entries.drain(..) {
                push(&mut self.shards[shard_of(account)].write(), account, item);
            }
            return;
        }
        let total = entries.len();
        let buckets = bucket_by(std::slice::from_mut(entries), SHARDS, |(account, _)| {
            shard_of(*account)
        });
        by_parts(buckets, total, |shard, bucket, _: &mut Vec<()>| {
            if bucket.is_empty() {
                return;
            }
            let mut map = self.shards[shard].write();
            for (account, item) in bucket {
                push(&mut map, account, item);
            }
        });
    }

    /// An empty vector for a batch's entries, with the room an earlier
    /// batch left in it (`append_and_keep`).
    pub(crate) fn take_spare(&self) -> Vec<(u128, Item)> {
        std::mem::take(&mut *self.spare.lock())
    }

    /// `append`, then keeps the emptied vector for the next batch (one
    /// with room for `KEPT_ENTRIES` at most).
    pub(crate) fn append_and_keep(&self, mut entries: Vec<(u128, Item)>) {
        self.append(&mut entries);
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
}
