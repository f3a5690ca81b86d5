//! The fuzz harness (issue 5, item 5): one function per fuzz target, shared
//! by the cargo-fuzz targets in `fuzz/fuzz_targets/` and by the corpus
//! replay in `tests/fuzz_corpus.rs`, so that `cargo test` on stable replays
//! every input the fuzzer kept.
//!
//! Each function takes arbitrary bytes and panics only when a guarantee of
//! the engine breaks, never because the input is bad:
//! - `record_decoder`: the record decoder never panics, and whatever it
//!   accepts re-encodes to the same bytes;
//! - `recovery`: `Engine::open` (or `Ledger::open`) of a directory built
//!   from the bytes returns `Ok` or a typed error, and an engine that opened
//!   can be read, written, and reopened with its new commit;
//! - `kv_ops`: a sequence of KV operations agrees with a `BTreeMap` model
//!   (snapshot reads, first-committer-wins, and under `Serializable`, read
//!   validation) across checkpoints, GC and reopenings;
//! - `ledger`: batches of accounts and transfers agree with the serial
//!   reference model of `tests/model`, result by result, and in the final
//!   accounts and transfers, across checkpoints and reopenings.
//! - `cluster`: the cluster's message and event decoders never panic and
//!   re-encode what they accept; and a simulated cluster whose sizes,
//!   fault rates and seed come from the bytes passes every check of
//!   `mvledger::cluster::sim`.
//!
//! Everything runs on `MemFs` with `SyncMode::Never` (the cluster on its
//! simulator's `SimFs`, `SyncMode::Always` or `Never` by the top bit of the
//! first size byte): no disk.

#![allow(dead_code)] // each fuzz target uses one of the functions

#[path = "../../tests/model/mod.rs"]
mod model;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use mvledger::wal::record::{
    self, FRAME_HEADER_BYTES, KIND_CLOSE, KIND_COMMIT, KIND_LOGICAL, decode_commit, decode_frame,
};
use mvledger::wal::{FileSystem, MemFs, segment};
use mvledger::{
    Account, AccountFlags, Clock, Engine, Error, Isolation, Ledger, LedgerOptions, ManualClock,
    Options, SyncMode, Transfer, TransferFlags,
};

/// The directory every engine of the harness lives in (on `MemFs`).
const DIR: &str = "/db";

/// Reads the fuzz input front to back; past its end every read gives 0.
struct Input<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Input<'a> {
    fn new(data: &'a [u8]) -> Self {
        Input { data, at: 0 }
    }

    fn is_empty(&self) -> bool {
        self.at >= self.data.len()
    }

    fn u8(&mut self) -> u8 {
        let b = self.data.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    /// Up to `len` bytes (fewer at the end of the input).
    fn bytes(&mut self, len: usize) -> &'a [u8] {
        let start = self.at.min(self.data.len());
        let end = start.saturating_add(len).min(self.data.len());
        self.at = start + len.max(end - start);
        &self.data[start..end]
    }
}

fn options(fs: &MemFs) -> Options {
    Options {
        fs: Arc::new(fs.clone()),
        sync: SyncMode::Never,
        ..Options::default()
    }
}

// ----- record decoder ------------------------------------------------------

/// Decodes a frame at every offset of `data`, and `data` itself as a commit
/// payload: nothing panics, and whatever decodes re-encodes to the very
/// same bytes.
pub fn record_decoder(data: &[u8]) {
    check_commit_payload(data);
    for offset in 0..data.len() {
        let Ok(frame) = decode_frame(data, offset) else {
            continue;
        };
        assert!(frame.end <= data.len(), "frame ends past the buffer");
        assert_eq!(
            frame.end,
            offset + FRAME_HEADER_BYTES + frame.payload.len(),
            "frame end"
        );
        assert!(frame.payload.len() >= 8, "payload shorter than its ts");
        let original = &data[offset..frame.end];
        let mut again = Vec::new();
        match frame.kind {
            KIND_COMMIT => {
                let Ok((ts, writes)) = decode_commit(frame.payload) else {
                    continue;
                };
                assert_eq!(ts, frame.ts(), "commit ts");
                record::encode_commit(&mut again, ts, writes.len(), writes.iter().copied());
            }
            KIND_LOGICAL => {
                record::encode_logical(&mut again, frame.ts(), &frame.payload[8..]);
            }
            KIND_CLOSE => record::encode_close(&mut again, frame.ts()),
            kind => panic!("decode_frame accepted unknown kind {kind}"),
        }
        assert_eq!(again, original, "frame at {offset} does not re-encode");
    }
}

/// `decode_commit` on raw bytes: if it accepts them, they are exactly the
/// payload `encode_commit` writes for the decoded writes.
fn check_commit_payload(payload: &[u8]) {
    let Ok((ts, writes)) = decode_commit(payload) else {
        return;
    };
    assert_eq!(
        record::commit_payload_bytes(writes.iter().copied()),
        payload.len(),
        "commit_payload_bytes"
    );
    let mut again = Vec::new();
    record::encode_commit(&mut again, ts, writes.len(), writes.iter().copied());
    assert_eq!(&again[FRAME_HEADER_BYTES..], payload, "commit re-encoding");
}

// ----- recovery --------------------------------------------------------------

/// What the first byte of a `recovery` input selects.
pub const RECOVERY_REPAIR: u8 = 1;
pub const RECOVERY_LEDGER: u8 = 2;

/// File kinds in a `recovery` input.
pub const FILE_SEGMENT_RAW: u8 = 0;
pub const FILE_SEGMENT_HEADER: u8 = 1;
pub const FILE_SEGMENT_FRAMED: u8 = 2;
pub const FILE_CHECKPOINT_RAW: u8 = 3;
pub const FILE_CHECKPOINT_FRAMED: u8 = 4;
pub const FILE_KINDS: u8 = 5;

/// Encodes one file of a `recovery` input (for seeds and tests):
/// `kind | u16 name ts | u16 len | body`.
pub fn recovery_file(out: &mut Vec<u8>, kind: u8, name_ts: u16, body: &[u8]) {
    let len = u16::try_from(body.len()).expect("recovery file body over 64 KiB");
    out.push(kind);
    out.extend_from_slice(&name_ts.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(body);
}

/// The flags byte of a `recovery` input: open with repair, or as a ledger.
pub fn recovery_flags(repair: bool, ledger: bool) -> u8 {
    (if repair { RECOVERY_REPAIR } else { 0 }) | (if ledger { RECOVERY_LEDGER } else { 0 })
}

/// Builds a database directory from `data` and opens it:
///
/// ```text
/// data = flags | file*
/// file = kind | u16 name_ts | u16 len | body
/// ```
///
/// `kind` (mod 5): a segment `<name_ts>.wal` holding `body` as it is, or
/// after a valid header, or after a valid header with `body` read as
/// `(u8 kind | u16 len | payload)*` and framed with valid checksums (so the
/// fuzzer gets past the checksums to the payload decoding and replay); a
/// checkpoint `<name_ts>.ckpt` holding `body` as it is, or with a valid
/// header, `body` read as `(u16 len | payload)*` blocks with valid
/// checksums, and a valid footer (entry count from the input).
///
/// `Engine::open` (`Ledger::open` with flag 2; repair with flag 1) must
/// return `Ok` or an error, never panic; an engine that opened must scan,
/// commit, and show that commit after a reopen.
pub fn recovery(data: &[u8]) {
    let mut input = Input::new(data);
    let flags = input.u8();
    let fs = MemFs::new();
    let dir = Path::new(DIR);
    fs.create_dir_all(dir).expect("mkdir");
    let mut files = 0;
    while !input.is_empty() && files < 8 {
        files += 1;
        let kind = input.u8() % FILE_KINDS;
        let name_ts = u64::from(input.u16());
        let len = usize::from(input.u16());
        let body = input.bytes(len);
        let (name, contents) = match kind {
            FILE_SEGMENT_RAW => (segment::file_name(name_ts), body.to_vec()),
            FILE_SEGMENT_HEADER => {
                let mut c = segment::encode_header(name_ts).to_vec();
                c.extend_from_slice(body);
                (segment::file_name(name_ts), c)
            }
            FILE_SEGMENT_FRAMED => {
                let mut c = segment::encode_header(name_ts).to_vec();
                let mut records = Input::new(body);
                while !records.is_empty() {
                    let kind = match records.u8() % 3 {
                        0 => KIND_COMMIT,
                        1 => KIND_LOGICAL,
                        _ => KIND_CLOSE,
                    };
                    let len = usize::from(records.u16());
                    let payload = records.bytes(len);
                    record::encode_frame(&mut c, kind, |buf| {
                        buf.extend_from_slice(payload);
                        // decode_frame needs at least the ts.
                        buf.resize(buf.len().max(buf.len() - payload.len() + 8), 0);
                    });
                }
                (segment::file_name(name_ts), c)
            }
            FILE_CHECKPOINT_RAW => (format!("{name_ts:020}.ckpt"), body.to_vec()),
            _ => (
                format!("{name_ts:020}.ckpt"),
                framed_checkpoint(name_ts, body),
            ),
        };
        let path = dir.join(name);
        let mut file = fs.create(&path).expect("create");
        file.append(&contents).expect("append");
    }
    let repair = flags & RECOVERY_REPAIR != 0;
    let opts = || Options {
        repair,
        ..options(&fs)
    };
    if flags & RECOVERY_LEDGER != 0 {
        let ledger_options = || LedgerOptions {
            engine: opts(),
            clock: Arc::new(ManualClock::new(1)),
        };
        let Ok(ledger) = Ledger::open(dir, ledger_options()) else {
            return;
        };
        let accounts = ledger.snapshot().accounts().expect("accounts after open");
        drop(ledger);
        let again = Ledger::open(dir, ledger_options()).expect("reopen of an opened ledger");
        let accounts_again = again.snapshot().accounts().expect("accounts after reopen");
        assert_eq!(accounts, accounts_again, "accounts changed across a reopen");
        return;
    }
    let Ok(engine) = Engine::open(dir, opts()) else {
        return;
    };
    let before: Vec<(Vec<u8>, Vec<u8>)> = engine
        .snapshot()
        .scan(..)
        .expect("scan after open")
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    let mut txn = engine.begin();
    txn.put(b"fuzz-recovery-key", b"value").expect("put");
    let ts = txn.commit().expect("commit after recovery");
    drop(engine);
    let engine = Engine::open(dir, opts()).expect("reopen of an opened engine");
    let snap = engine.snapshot();
    assert!(snap.ts() >= ts, "reopened engine lost a commit");
    let mut after: Vec<(Vec<u8>, Vec<u8>)> = snap
        .scan(..)
        .expect("scan after reopen")
        .map(|(k, v)| (k.to_vec(), v.to_vec()))
        .collect();
    let mut expected = before;
    expected.retain(|(k, _)| k != b"fuzz-recovery-key");
    expected.push((b"fuzz-recovery-key".to_vec(), b"value".to_vec()));
    expected.sort();
    after.sort();
    assert_eq!(after, expected, "state after commit and reopen");
}

/// A checkpoint file with a valid header, `body` cut into blocks with valid
/// checksums, and a valid footer.
fn framed_checkpoint(ts: u64, body: &[u8]) -> Vec<u8> {
    let mut input = Input::new(body);
    let entries = u64::from(input.u8());
    let mut c = b"MVLGCKPT".to_vec();
    c.extend_from_slice(&1u32.to_le_bytes());
    c.extend_from_slice(&0u32.to_le_bytes());
    let mut blocks = 0u64;
    while !input.is_empty() {
        let len = usize::from(input.u16());
        let payload = input.bytes(len);
        c.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        c.extend_from_slice(&crc32(payload).to_le_bytes());
        c.extend_from_slice(payload);
        blocks += 1;
    }
    let mut footer = Vec::with_capacity(32);
    footer.extend_from_slice(&ts.to_le_bytes());
    footer.extend_from_slice(&entries.to_le_bytes());
    footer.extend_from_slice(&blocks.to_le_bytes());
    footer.extend_from_slice(b"CKPF");
    let crc = crc32(&footer);
    footer.extend_from_slice(&crc.to_le_bytes());
    c.extend_from_slice(&footer);
    c
}

/// CRC-32 (IEEE), bitwise: the harness does not depend on crc32fast.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

// ----- KV operations -----------------------------------------------------------

const KV_KEYS: u8 = 6;
const KV_SLOTS: usize = 3;

/// A committed state: every live key and its value.
type State = BTreeMap<Vec<u8>, Vec<u8>>;

/// The model: every committed state by its commit ts, and for each key
/// the ts of its last write.
struct KvModel {
    /// (commit ts, state after it), ascending; starts with (0, empty).
    history: Vec<(u64, State)>,
    last_write: BTreeMap<Vec<u8>, u64>,
    /// `Isolation::Serializable`: reads are validated at commit too.
    serializable: bool,
}

impl KvModel {
    /// The committed state a reader at `ts` sees.
    fn at(&self, ts: u64) -> &State {
        let i = self.history.partition_point(|(t, _)| *t <= ts);
        &self.history[i.saturating_sub(1)].1
    }

    fn latest(&self) -> &State {
        &self.history[self.history.len() - 1].1
    }

    fn latest_ts(&self) -> u64 {
        self.history[self.history.len() - 1].0
    }
}

struct ModelTxn {
    txn: mvledger::Transaction,
    writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// Keys read from the snapshot (not from own writes), and whether the
    /// whole key space was scanned: what `Serializable` validates.
    reads: std::collections::BTreeSet<Vec<u8>>,
    scanned: bool,
}

impl ModelTxn {
    /// What this transaction should see: its snapshot plus its own writes.
    fn view(&self, model: &KvModel) -> State {
        let mut view = model.at(self.txn.start_ts()).clone();
        for (k, v) in &self.writes {
            match v {
                Some(v) => view.insert(k.clone(), v.clone()),
                None => view.remove(k),
            };
        }
        view
    }
}

fn kv_key(b: u8) -> Vec<u8> {
    format!("k{}", b % KV_KEYS).into_bytes()
}

fn scan_all<K: AsRef<[u8]>, V: AsRef<[u8]>>(
    it: impl Iterator<Item = (K, V)>,
) -> BTreeMap<Vec<u8>, Vec<u8>> {
    it.map(|(k, v)| (k.as_ref().to_vec(), v.as_ref().to_vec()))
        .collect()
}

/// Runs the bytes as KV operations on an engine and on `KvModel`:
///
/// ```text
/// op (mod 12): 0 begin slot | 1 get slot key | 2 put slot key vlen value
///   | 3 delete slot key | 4 commit slot | 5 rollback slot | 6 snapshot
///   get key | 7 scan slot | 8 checkpoint | 9 reopen | 10 gc
///   | 11 snapshot (kept) then later compared
/// ```
///
/// Three transaction slots, six keys, values of 0 to 3 bytes: enough for
/// conflicts, tombstones and versions to pile up.
pub fn kv_ops(data: &[u8]) {
    let fs = MemFs::new();
    // The first byte's top bit picks the isolation level (the byte is
    // still read as the first operation).
    let serializable = data.first().is_some_and(|b| b & 0x80 != 0);
    let kv_options = |fs: &MemFs| Options {
        isolation: if serializable {
            Isolation::Serializable
        } else {
            Isolation::Snapshot
        },
        ..options(fs)
    };
    let mut engine = Some(Engine::open(DIR, kv_options(&fs)).expect("open"));
    let mut model = KvModel {
        history: vec![(0, BTreeMap::new())],
        last_write: BTreeMap::new(),
        serializable,
    };
    let mut slots: Vec<Option<ModelTxn>> = (0..KV_SLOTS).map(|_| None).collect();
    let mut snaps: Vec<mvledger::Snapshot> = Vec::new();
    let mut input = Input::new(data);
    let mut steps = 0;
    while !input.is_empty() && steps < 400 {
        steps += 1;
        let op = input.u8() % 12;
        let slot = usize::from(input.u8()) % KV_SLOTS;
        let eng = engine.as_ref().expect("open engine");
        match op {
            0 => {
                let txn = eng.begin();
                assert!(
                    txn.start_ts() >= model.latest_ts(),
                    "a new transaction does not see the last commit"
                );
                slots[slot] = Some(ModelTxn {
                    txn,
                    writes: BTreeMap::new(),
                    reads: std::collections::BTreeSet::new(),
                    scanned: false,
                });
            }
            1 => {
                let key = kv_key(input.u8());
                if let Some(t) = &mut slots[slot] {
                    let got = t.txn.get(&key).expect("get").map(|v| v.to_vec());
                    assert_eq!(got, t.view(&model).get(&key).cloned(), "get {key:?}");
                    if !t.writes.contains_key(&key) {
                        t.reads.insert(key);
                    }
                }
            }
            2 => {
                let key = kv_key(input.u8());
                let len = usize::from(input.u8() % 4);
                let value = input.bytes(len).to_vec();
                if let Some(t) = &mut slots[slot] {
                    t.txn.put(&key, &value).expect("put");
                    t.writes.insert(key, Some(value));
                }
            }
            3 => {
                let key = kv_key(input.u8());
                if let Some(t) = &mut slots[slot] {
                    t.txn.delete(&key).expect("delete");
                    t.writes.insert(key, None);
                }
            }
            4 => {
                if let Some(t) = slots[slot].take() {
                    commit(&mut model, t);
                }
            }
            5 => {
                if let Some(t) = slots[slot].take() {
                    t.txn.rollback();
                }
            }
            6 => {
                let key = kv_key(input.u8());
                let snap = eng.snapshot();
                let got = snap.get(&key).expect("snapshot get").map(|v| v.to_vec());
                assert_eq!(got, model.at(snap.ts()).get(&key).cloned(), "snapshot get");
            }
            7 => {
                if let Some(t) = &mut slots[slot] {
                    let got = scan_all(t.txn.scan(..).expect("scan"));
                    assert_eq!(got, t.view(&model), "transaction scan");
                    t.scanned = true;
                }
            }
            8 => eng.checkpoint().expect("checkpoint"),
            9 => {
                for t in slots.iter_mut() {
                    *t = None;
                }
                snaps.clear();
                drop(engine.take());
                let eng = Engine::open(DIR, kv_options(&fs)).expect("reopen");
                let got = scan_all(eng.snapshot().scan(..).expect("scan"));
                assert_eq!(&got, model.latest(), "state after reopen");
                engine = Some(eng);
            }
            10 => eng.gc(),
            _ => {
                if snaps.len() >= 2 {
                    let old = snaps.remove(0);
                    let got = scan_all(old.scan(..).expect("scan"));
                    assert_eq!(&got, model.at(old.ts()), "old snapshot scan");
                }
                snaps.push(eng.snapshot());
            }
        }
    }
    for t in slots.into_iter().flatten() {
        commit(&mut model, t);
    }
    for snap in &snaps {
        let got = scan_all(snap.scan(..).expect("scan"));
        assert_eq!(&got, model.at(snap.ts()), "snapshot scan at the end");
    }
    let eng = engine.expect("open engine");
    let got = scan_all(eng.snapshot().scan(..).expect("scan"));
    assert_eq!(&got, model.latest(), "final state");
}

/// Commits `t` on the engine and in the model: a transaction with no
/// writes commits at its start ts; one that wrote a key written by a
/// commit after its start fails with `Conflict` (first committer wins).
fn commit(model: &mut KvModel, t: ModelTxn) {
    let start = t.txn.start_ts();
    let changed = |k: &Vec<u8>| model.last_write.get(k).is_some_and(|&ts| ts > start);
    // First committer wins on writes; `Serializable` also refuses a commit
    // whose reads (keys, or the whole space when it scanned) changed.
    let conflict = t.writes.keys().any(changed)
        || (model.serializable
            && (t.reads.iter().any(changed)
                || (t.scanned && model.last_write.values().any(|&ts| ts > start))));
    let result = t.txn.commit();
    if t.writes.is_empty() {
        assert_eq!(
            result.expect("read-only commit"),
            start,
            "read-only commit ts"
        );
        return;
    }
    if conflict {
        assert!(
            matches!(result, Err(Error::Conflict)),
            "expected a conflict, got {result:?}"
        );
        return;
    }
    let ts = result.expect("commit without conflict");
    assert!(ts > model.latest_ts(), "commit ts {ts} not increasing");
    let mut state = model.latest().clone();
    for (k, v) in t.writes {
        model.last_write.insert(k.clone(), ts);
        match v {
            Some(v) => state.insert(k, v),
            None => state.remove(&k),
        };
    }
    model.history.push((ts, state));
}

// ----- ledger ------------------------------------------------------------------

/// Account ids 1 ..= LEDGER_ACCOUNTS are the usual ones; a few more are
/// never created.
const LEDGER_ACCOUNTS: u8 = 6;
/// Transfer ids come from 1 ..= LEDGER_TRANSFER_IDS (plus 0 and max).
const LEDGER_TRANSFER_IDS: u8 = 24;
const LEDGER_START_NS: u64 = 1_000_000_000;

fn ledger_options(fs: &MemFs, clock: &Arc<ManualClock>) -> LedgerOptions {
    LedgerOptions {
        engine: options(fs),
        clock: clock.clone(),
    }
}

fn account_id(b: u8) -> u128 {
    match b % 16 {
        0 => 0,
        15 => u128::MAX,
        n => u128::from(n % (LEDGER_ACCOUNTS + 3)) + 1,
    }
}

fn transfer_id(b: u8) -> u128 {
    match b {
        0 => 0,
        255 => u128::MAX,
        n => u128::from(n % LEDGER_TRANSFER_IDS) + 1,
    }
}

fn amount(input: &mut Input<'_>) -> u128 {
    let b = input.u8();
    match b % 8 {
        0 => 0,
        1 => u128::MAX - u128::from(input.u8()),
        2 => u128::MAX / 2 + 1,
        _ => u128::from(b / 8) + 1,
    }
}

fn account(input: &mut Input<'_>) -> Account {
    let id = account_id(input.u8());
    let flags = input.u8();
    let extra = input.u8();
    // The defined bits: 0 to 3 and 5 (CLOSED).
    let mut bits = u16::from(flags & 0x2f);
    if extra & 0x80 != 0 {
        // A reserved bit: 4 (TigerBeetle's `imported`) or one above CLOSED.
        bits |= 1 << [4, 6, 7, 8, 9, 11, 13, 15][usize::from(extra & 0x7)];
    }
    let mut a = Account {
        id,
        ledger: if extra & 0x08 != 0 { 2 } else { 1 },
        code: if extra & 0x10 != 0 { 0 } else { 1 },
        flags: AccountFlags::from_bits_retain(bits),
        user_data_128: u128::from(extra & 0x20 != 0),
        ..Default::default()
    };
    if extra & 0x40 != 0 {
        match flags >> 5 {
            0 => a.reserved = 1,
            1 => a.debits_posted = 5,
            2 => a.credits_pending = 5,
            3 => a.timestamp = 1,
            _ => a.user_data_64 = 2,
        }
    }
    a
}

fn transfer(input: &mut Input<'_>) -> Transfer {
    let id = transfer_id(input.u8());
    let accounts = input.u8();
    let mut flags = u16::from(input.u8());
    let extra = input.u8();
    if extra & 0x80 != 0 {
        flags |= u16::from(input.u8()) << 8;
    }
    let pending_id = if extra & 0x01 != 0 {
        transfer_id(input.u8())
    } else {
        0
    };
    let mut t = Transfer {
        id,
        debit_account_id: account_id(accounts & 0x0f),
        credit_account_id: account_id(accounts >> 4),
        amount: amount(input),
        pending_id,
        timeout: if extra & 0x02 != 0 {
            u32::from(input.u8() % 4)
        } else {
            0
        },
        ledger: if extra & 0x04 != 0 { 2 } else { 1 },
        code: if extra & 0x08 != 0 { 0 } else { 1 },
        flags: TransferFlags::from_bits_retain(flags),
        user_data_32: u32::from(extra & 0x10 != 0),
        ..Default::default()
    };
    if extra & 0x60 == 0x60 {
        t.timestamp = 7;
    } else if extra & 0x40 != 0 && t.flags.bits() & 0x0c != 0 {
        // A post/void leaving accounts, ledger and code to the pending one.
        t.debit_account_id = 0;
        t.credit_account_id = 0;
        t.ledger = 0;
        t.code = 0;
    }
    t
}

/// Runs the bytes as ledger calls on a `Ledger` and on `tests/model`:
///
/// ```text
/// op (mod 8): 0, 1 accounts batch | 2, 3, 4 transfers batch (1 to 6,
///   or 64 to 104 when the size byte is 250 or more)
///   | 5 advance the clock | 6 expire_pending | 7 checkpoint or reopen
/// ```
///
/// Every call's timestamp and results must match the model's, and so must
/// the accounts after every call; at the end (and after each reopen) every
/// account and every transfer id.
pub fn ledger(data: &[u8]) {
    let fs = MemFs::new();
    let clock = Arc::new(ManualClock::new(LEDGER_START_NS));
    let mut ledger = Some(Ledger::open(DIR, ledger_options(&fs, &clock)).expect("open"));
    let mut model = model::Model::new();
    let mut input = Input::new(data);
    let mut steps = 0;
    while !input.is_empty() && steps < 64 {
        steps += 1;
        let op = input.u8() % 8;
        let l = ledger.as_ref().expect("open ledger");
        match op {
            0 | 1 => {
                let n = usize::from(input.u8() % 6) + 1;
                let batch: Vec<Account> = (0..n).map(|_| account(&mut input)).collect();
                let expect_ts = model.next_timestamp(clock.now_ns());
                let reply = l.submit_accounts(&batch).expect("submit_accounts");
                assert_eq!(reply.timestamp, expect_ts, "create_accounts timestamp");
                let want = model.create_accounts(reply.timestamp, &batch);
                assert_eq!(
                    reply.results, want,
                    "create_accounts results (ledger left, model right) for {batch:#?}"
                );
            }
            2..=4 => {
                // Now and then a batch of 64 or more: the ledger looks such
                // a batch's accounts and ids up in bulk before it runs it.
                let b = input.u8();
                let n = if b >= 250 {
                    64 + usize::from(b - 250) * 8
                } else {
                    usize::from(b % 6) + 1
                };
                let batch: Vec<Transfer> = (0..n).map(|_| transfer(&mut input)).collect();
                let expect_ts = model.next_timestamp(clock.now_ns());
                let before = model.accounts();
                let reply = l.submit_transfers(&batch).expect("submit_transfers");
                assert_eq!(reply.timestamp, expect_ts, "create_transfers timestamp");
                let want = model.create_transfers(reply.timestamp, &batch);
                assert_eq!(
                    reply.results, want,
                    "create_transfers results (ledger left, model right) for {batch:#?}\n\
                     with accounts before {before:#?}"
                );
            }
            5 => {
                let b = input.u8();
                let ns = match b % 4 {
                    0 => 1,
                    1 => u64::from(b) * 1_000_000,
                    2 => model::NS_PER_S,
                    _ => u64::from(b / 4 + 1) * model::NS_PER_S,
                };
                clock.advance(ns);
            }
            6 => {
                let now = model.next_timestamp(clock.now_ns());
                l.expire_pending().expect("expire_pending");
                model.expire(now);
            }
            _ => {
                if input.u8() & 1 == 0 {
                    l.checkpoint().expect("checkpoint");
                } else {
                    drop(ledger.take());
                    let l = Ledger::open(DIR, ledger_options(&fs, &clock)).expect("reopen");
                    compare_ledger(&l, &model, "after reopen");
                    ledger = Some(l);
                }
            }
        }
        let l = ledger.as_ref().expect("open ledger");
        let accounts = l.snapshot().accounts().expect("accounts");
        if let Err(e) = model::check_invariants(&accounts) {
            panic!("ledger invariant broken after op {op}: {e}");
        }
        if let Err(e) = model.check() {
            panic!("model invariant broken after op {op}: {e}");
        }
        assert_eq!(
            accounts,
            model.accounts(),
            "accounts after op {op} (ledger left, model right)"
        );
    }
    let l = ledger.expect("open ledger");
    compare_ledger(&l, &model, "at the end");
}

/// Every account and every transfer id the input can name.
fn compare_ledger(l: &Ledger, model: &model::Model, when: &str) {
    let snap = l.snapshot();
    assert_eq!(
        snap.accounts().expect("accounts"),
        model.accounts(),
        "{when}: accounts"
    );
    let account_ids: Vec<u128> = (0..=u8::MAX).map(account_id).collect();
    assert_eq!(
        l.lookup_accounts(&account_ids).expect("lookup_accounts"),
        model.lookup_accounts(&account_ids),
        "{when}: lookup_accounts"
    );
    let transfer_ids: Vec<u128> = (0..=u8::MAX).map(transfer_id).collect();
    assert_eq!(
        snap.lookup_transfers(&transfer_ids)
            .expect("lookup_transfers"),
        model.lookup_transfers(&transfer_ids),
        "{when}: lookup_transfers (ledger left, model right)"
    );
}

/// Fuzz target `cluster`: the first byte picks the decoders (odd) or a
/// simulated run (even).
pub fn cluster(data: &[u8]) {
    use mvledger::cluster::sim::{SimConfig, run};
    use mvledger::cluster::{Event, Message};
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 1 {
        if let Some(m) = Message::decode(rest) {
            assert_eq!(m.encode(), rest, "a message re-encodes to its bytes");
        }
        if let Some(e) = Event::decode(rest) {
            assert_eq!(e.encode(), rest, "an event re-encodes to its bytes");
        }
        return;
    }
    let byte = |i: usize| u32::from(rest.get(i).copied().unwrap_or(0));
    let mut seed = [0u8; 8];
    for (i, b) in rest.iter().skip(6).take(8).enumerate() {
        seed[i] = *b;
    }
    let config = SimConfig {
        seed: u64::from_le_bytes(seed),
        shards: 2 + byte(0) % 3,
        accounts: 2 + byte(1) % 12,
        transfers: 1 + byte(2) % 40,
        loss_pct: byte(3) % 50,
        duplicate_pct: byte(4) % 50,
        crash_pct: byte(5) % 10,
        sync: if byte(0) & 0x80 != 0 {
            SyncMode::Never
        } else {
            SyncMode::Always
        },
        sabotage: None,
    };
    if let Err(e) = run(&config) {
        panic!("{config:?}: {e}");
    }
}
