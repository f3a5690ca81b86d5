//! Helpers shared by the test crates in `tests/` (each `tests/*.rs` file is
//! its own crate and includes this one with `mod common;`).
//!
//! Only helpers that behave the same in every file that uses them live
//! here: builders for the usual ledger 1 / code 1 account and transfer,
//! opening a `Ledger` on a `ManualClock`, and the two deterministic random
//! generators the tests use. Anything a single file shapes to its own needs
//! stays in that file.

// Each test crate uses a subset of these helpers, and rustc warns about the
// rest as dead code in every crate that does not use them.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use mvledger::wal::{DirLock, FileSystem, StdFs, WritableFile};
use mvledger::{
    Account, AccountFlags, CreateTransferResult, Engine, Ledger, LedgerOptions, ManualClock,
    Options, SyncMode, Transfer, TransferFlags,
};

/// The clock's start in the ledger tests (nanoseconds, late 2023).
pub const T0: u64 = 1_700_000_000_000_000_000;
/// Nanoseconds per second.
pub const NS: u64 = 1_000_000_000;

/// Opens the ledger in `dir` on `clock` with the given sync mode.
pub fn open_with(dir: &Path, clock: &Arc<ManualClock>, sync: SyncMode) -> Ledger {
    Ledger::open(
        dir,
        LedgerOptions {
            engine: Options {
                sync,
                ..Default::default()
            },
            clock: clock.clone(),
        },
    )
    .unwrap()
}

/// Opens the ledger in `dir` on `clock`, which the test moves, without
/// syncs (these tests do not crash the machine).
pub fn open_clocked(dir: &Path, clock: &Arc<ManualClock>) -> Ledger {
    open_with(dir, clock, SyncMode::Never)
}

/// Opens the ledger in `dir` on a fresh clock standing at `T0`, without
/// syncs.
pub fn open(dir: &Path) -> Ledger {
    open_clocked(dir, &Arc::new(ManualClock::new(T0)))
}

/// `open`, with the plain accounts 1 to `n` created.
pub fn open_with_accounts(dir: &Path, n: u128) -> Ledger {
    let l = open(dir);
    let accounts: Vec<Account> = (1..=n)
        .map(|id| account(id, AccountFlags::empty()))
        .collect();
    l.create_accounts(&accounts).expect("accounts");
    l
}

/// An account on ledger 1 with code 1 and `flags`.
pub fn account(id: u128, flags: AccountFlags) -> Account {
    Account {
        id,
        ledger: 1,
        code: 1,
        flags,
        ..Default::default()
    }
}

/// A plain transfer of `amount` from `dr` to `cr` on ledger 1 with code 1.
pub fn transfer(id: u128, dr: u128, cr: u128, amount: u128) -> Transfer {
    Transfer {
        id,
        debit_account_id: dr,
        credit_account_id: cr,
        amount,
        ledger: 1,
        code: 1,
        ..Default::default()
    }
}

/// `transfer`, flagged `PENDING`.
pub fn pending(id: u128, dr: u128, cr: u128, amount: u128) -> Transfer {
    Transfer {
        flags: TransferFlags::PENDING,
        ..transfer(id, dr, cr, amount)
    }
}

/// Posts `amount` of pending transfer `pending_id` (0 = all of it); every
/// other field is left 0, to be taken from the pending transfer.
pub fn post(id: u128, pending_id: u128, amount: u128) -> Transfer {
    Transfer {
        id,
        pending_id,
        amount,
        flags: TransferFlags::POST_PENDING_TRANSFER,
        ..Default::default()
    }
}

/// Voids pending transfer `pending_id`; every other field is left 0.
pub fn void(id: u128, pending_id: u128) -> Transfer {
    Transfer {
        id,
        pending_id,
        flags: TransferFlags::VOID_PENDING_TRANSFER,
        ..Default::default()
    }
}

/// Submits `t` alone and asserts that its result is `expect`.
pub fn submit(l: &Ledger, t: Transfer, expect: CreateTransferResult) {
    assert_eq!(l.create_transfers(&[t]).unwrap(), [expect], "{t:?}");
}

/// A small deterministic generator (splitmix64), so that runs repeat.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    pub fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

/// A small deterministic generator (xorshift64*), so that runs repeat.
pub struct XorShift64(pub u64);

impl XorShift64 {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The expected contents of an engine: key to value.
pub type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Asserts `got == want`, naming the first keys that differ (the maps are
/// too large to print whole).
#[track_caller]
pub fn assert_same(got: &Model, want: &Model, what: &str) {
    if got == want {
        return;
    }
    let show = |v: Option<&Vec<u8>>| v.map(|v| String::from_utf8_lossy(v).into_owned());
    let differ: Vec<String> = got
        .keys()
        .chain(want.keys())
        .filter(|k| got.get(*k) != want.get(*k))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .take(5)
        .map(|k| {
            format!(
                "{}: got {:?}, want {:?}",
                String::from_utf8_lossy(k),
                show(got.get(k)),
                show(want.get(k))
            )
        })
        .collect();
    panic!(
        "{what}: {} keys, want {}; first differences: {differ:#?}",
        got.len(),
        want.len()
    );
}

/// Every live key of `engine` and its value, at a snapshot taken now.
pub fn dump(engine: &Engine) -> Model {
    engine
        .snapshot()
        .scan(..)
        .unwrap()
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect()
}

/// The log segments in `dir`, in name (= timestamp) order.
pub fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "wal"))
        .collect();
    found.sort();
    found
}

/// `StdFs` with some calls failing as a full or read-only disk makes them
/// fail: `zeros`, every `WritableFile::zero_to` (leaving the file as it
/// was, as the trait asks, unless `zeros_left`: then the zeros are written
/// before the error, as a write that failed partway and could not be
/// undone would leave them); `lock`, `FileSystem::lock`.
#[derive(Debug, Clone, Copy, Default)]
pub struct RefusingFs {
    pub zeros: Option<std::io::ErrorKind>,
    pub zeros_left: bool,
    pub lock: Option<std::io::ErrorKind>,
}

#[derive(Debug)]
struct RefusingFile {
    inner: Box<dyn WritableFile>,
    zeros: Option<std::io::ErrorKind>,
    zeros_left: bool,
}

impl WritableFile for RefusingFile {
    fn append(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.inner.append(buf)
    }
    fn sync_data(&mut self) -> std::io::Result<()> {
        self.inner.sync_data()
    }
    fn zero_to(&mut self, len: u64) -> std::io::Result<bool> {
        match self.zeros {
            Some(kind) => {
                if self.zeros_left {
                    self.inner.zero_to(len)?;
                }
                Err(kind.into())
            }
            None => self.inner.zero_to(len),
        }
    }
}

impl RefusingFs {
    fn wrap(&self, inner: Box<dyn WritableFile>) -> Box<dyn WritableFile> {
        Box::new(RefusingFile {
            inner,
            zeros: self.zeros,
            zeros_left: self.zeros_left,
        })
    }
}

impl FileSystem for RefusingFs {
    fn create_dir_all(&self, dir: &Path) -> std::io::Result<()> {
        StdFs.create_dir_all(dir)
    }
    fn list(&self, dir: &Path) -> std::io::Result<Vec<String>> {
        StdFs.list(dir)
    }
    fn create(&self, path: &Path) -> std::io::Result<Box<dyn WritableFile>> {
        Ok(self.wrap(StdFs.create(path)?))
    }
    fn open_append(&self, path: &Path) -> std::io::Result<Box<dyn WritableFile>> {
        Ok(self.wrap(StdFs.open_append(path)?))
    }
    fn read(&self, path: &Path) -> std::io::Result<Vec<u8>> {
        StdFs.read(path)
    }
    fn size(&self, path: &Path) -> std::io::Result<u64> {
        StdFs.size(path)
    }
    fn truncate(&self, path: &Path, len: u64) -> std::io::Result<()> {
        StdFs.truncate(path, len)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        StdFs.rename(from, to)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        StdFs.remove(path)
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        StdFs.sync_dir(dir)
    }
    fn lock(&self, path: &Path) -> std::io::Result<Box<dyn DirLock>> {
        match self.lock {
            Some(kind) => Err(kind.into()),
            None => StdFs.lock(path),
        }
    }
}
