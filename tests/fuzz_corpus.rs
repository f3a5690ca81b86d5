//! Replays the fuzz corpus (issue 5, item 5): every file under
//! `fuzz/corpus/<target>/` goes through the harness function of that
//! target (`fuzz/harness/mod.rs`, the same code the cargo-fuzz targets
//! run), so `cargo test` on stable re-checks every input the fuzzer found
//! interesting and every crash kept as a regression:
//! - `record_decoder`: decoding never panics and what decodes re-encodes
//!   to the same bytes;
//! - `recovery`: opening a directory made from the bytes gives `Ok` or an
//!   error, and an opened engine scans, commits and reopens with it;
//! - `kv_ops`: KV operations agree with a `BTreeMap` model;
//! - `ledger`: ledger batches agree with the reference model;
//! - `cluster`: cluster messages and events decode safely, and a simulated
//!   cluster made from the bytes passes every check.
//!
//! Each corpus must hold at least one input. The hand-made seeds
//! (`seed-*`) are written by `write_seeds` when `MVLEDGER_WRITE_FUZZ_SEEDS`
//! is set; run it again after a change of an on-disk format.

#[path = "../fuzz/harness/mod.rs"]
mod harness;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use mvledger::wal::record::decode_frame;
use mvledger::wal::{FileSystem, MemFs};
use mvledger::{
    Account, Engine, Ledger, LedgerOptions, ManualClock, Options, SyncMode, Transfer, TransferFlags,
};

fn corpus_dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target)
}

/// How long one corpus input may take (debug build, shared machine; the
/// slowest takes well under a second): past it, the replay reports a hang.
const INPUT_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs every input of `target`'s corpus through `run`; a panic names the
/// file, and so does an input still running after `INPUT_TIMEOUT` (a hang:
/// the replay fails instead of waiting forever).
fn replay(target: &str, run: fn(&[u8])) {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("dir entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{}: empty corpus", dir.display());
    let mut failed = Vec::new();
    for file in files {
        let data = std::fs::read(&file).expect("read corpus file");
        let (done, finished) = mpsc::channel();
        let worker = std::thread::spawn(move || {
            let ok = std::panic::catch_unwind(|| run(&data)).is_ok();
            let _ = done.send(ok);
        });
        match finished.recv_timeout(INPUT_TIMEOUT) {
            Ok(true) => {
                let _ = worker.join();
            }
            Ok(false) | Err(RecvTimeoutError::Disconnected) => {
                eprintln!("corpus input that failed: {}", file.display());
                failed.push(file);
            }
            Err(RecvTimeoutError::Timeout) => {
                // The worker is left running; the test fails now.
                panic!(
                    "{target}: corpus input {} still running after {INPUT_TIMEOUT:?}: a hang",
                    file.display()
                );
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: inputs that failed: {failed:#?}"
    );
}

#[test]
fn record_decoder_corpus() {
    replay("record_decoder", harness::record_decoder);
}

#[test]
fn recovery_corpus() {
    replay("recovery", harness::recovery);
}

#[test]
fn kv_ops_corpus() {
    replay("kv_ops", harness::kv_ops);
}

#[test]
fn ledger_corpus() {
    replay("ledger", harness::ledger);
}

#[test]
fn cluster_corpus() {
    replay("cluster", harness::cluster);
}

// ----- regressions found by the fuzzer ----------------------------------------

/// Found by the `recovery` target (`fuzz/corpus/recovery/
/// regression-append-to-covered-segment`): two checkpoints, the log
/// segment between them (covered by the newer checkpoint, kept for the
/// older one) with a damaged record, and the next segment, empty (its
/// creation torn by a crash). `open` removes the empty segment, never
/// reads the covered one, and appends the next commit to it; the commit is
/// acknowledged, and the next `open`, which must now read that segment from
/// its start, fails on the damage. An `open` that succeeds must leave a log
/// whose new commits survive a reopen.
#[test]
fn commit_after_torn_segment_past_checkpoint_survives_reopen() {
    let fs = MemFs::new();
    let dir = PathBuf::from("/db");
    let options = || Options {
        fs: Arc::new(fs.clone()),
        sync: SyncMode::Never,
        ..Options::default()
    };
    let engine = Engine::open(&dir, options()).expect("open");
    for i in 0..6u8 {
        let mut txn = engine.begin();
        txn.put([b'a' + i], [i]).expect("put");
        txn.commit().expect("commit");
        if i % 3 == 2 {
            engine.checkpoint().expect("checkpoint");
        }
    }
    drop(engine);
    let mut segments: Vec<String> = fs
        .list(&dir)
        .expect("list")
        .into_iter()
        .filter(|n| n.ends_with(".wal"))
        .collect();
    segments.sort();
    assert_eq!(segments.len(), 2, "{segments:?}");
    // Damage the second record of the covered segment ...
    let covered = dir.join(&segments[0]);
    let mut bytes = fs.read(&covered).expect("read segment");
    let first = decode_frame(&bytes, 32).expect("record").end;
    let second = decode_frame(&bytes, first).expect("record").end;
    bytes[second - 1] ^= 0xff;
    fs.truncate(&covered, 0).expect("truncate");
    fs.open_append(&covered)
        .expect("open segment")
        .append(&bytes)
        .expect("rewrite segment");
    // ... and tear the creation of the newest one: nothing written.
    fs.truncate(&dir.join(&segments[1]), 0)
        .expect("truncate newest segment");

    let Ok(engine) = Engine::open(&dir, options()) else {
        return; // refusing the damaged log at once is fine
    };
    let mut txn = engine.begin();
    txn.put("new", "value").expect("put");
    let ts = txn.commit().expect("commit");
    drop(engine);
    let engine = Engine::open(&dir, options()).expect("reopen after an acknowledged commit");
    let snap = engine.snapshot();
    assert!(snap.ts() >= ts);
    assert_eq!(
        snap.get("new").expect("get").as_deref(),
        Some(&b"value"[..])
    );
}

// ----- seeds -----------------------------------------------------------------

fn mem_options(fs: &MemFs) -> Options {
    Options {
        fs: Arc::new(fs.clone()),
        sync: SyncMode::Never,
        segment_bytes: 4096,
        ..Options::default()
    }
}

/// The files of `dir` on `fs` (segments and checkpoints), as `recovery`
/// input files, in name order.
fn recovery_files(fs: &MemFs, dir: &Path, out: &mut Vec<u8>) {
    let mut names = fs.list(dir).expect("list");
    names.sort();
    for name in names {
        let (kind, stem) = if let Some(stem) = name.strip_suffix(".wal") {
            (harness::FILE_SEGMENT_RAW, stem)
        } else if let Some(stem) = name.strip_suffix(".ckpt") {
            (harness::FILE_CHECKPOINT_RAW, stem)
        } else {
            continue;
        };
        let ts: u16 = stem.parse().expect("small ts");
        let body = fs.read(&dir.join(&name)).expect("read");
        harness::recovery_file(out, kind, ts, &body);
    }
}

/// An engine's directory after commits, a checkpoint and more commits.
fn engine_dir() -> (MemFs, PathBuf) {
    let fs = MemFs::new();
    let dir = PathBuf::from("/seed");
    let engine = Engine::open(&dir, mem_options(&fs)).expect("open");
    for i in 0..12u8 {
        let mut txn = engine.begin();
        txn.put([b'a' + i % 5], [i; 3]).expect("put");
        if i % 3 == 0 {
            txn.delete([b'a' + (i + 2) % 5]).expect("delete");
        }
        txn.commit().expect("commit");
        if i == 6 {
            engine.checkpoint().expect("checkpoint");
        }
    }
    drop(engine);
    (fs, dir)
}

/// A ledger's directory after accounts, transfers and a checkpoint.
fn ledger_dir() -> (MemFs, PathBuf) {
    let fs = MemFs::new();
    let dir = PathBuf::from("/seed-ledger");
    let ledger = Ledger::open(
        &dir,
        LedgerOptions {
            engine: mem_options(&fs),
            clock: Arc::new(ManualClock::new(1)),
        },
    )
    .expect("open");
    let accounts: Vec<Account> = (1..=3)
        .map(|id| Account {
            id,
            ledger: 1,
            code: 1,
            ..Default::default()
        })
        .collect();
    ledger.create_accounts(&accounts).expect("accounts");
    let transfer = |id, flags, pending_id| Transfer {
        id,
        debit_account_id: 1,
        credit_account_id: 2,
        amount: 10,
        pending_id,
        ledger: 1,
        code: 1,
        flags,
        ..Default::default()
    };
    ledger
        .create_transfers(&[transfer(1, TransferFlags::empty(), 0)])
        .expect("transfers");
    ledger.checkpoint().expect("checkpoint");
    ledger
        .create_transfers(&[
            transfer(2, TransferFlags::PENDING, 0),
            transfer(3, TransferFlags::POST_PENDING_TRANSFER, 2),
        ])
        .expect("transfers");
    drop(ledger);
    (fs, dir)
}

/// The oldest log segment in `dir`.
fn first_segment(fs: &MemFs, dir: &Path) -> Vec<u8> {
    let mut names = fs.list(dir).expect("list");
    names.sort();
    let name = names
        .iter()
        .find(|n| n.ends_with(".wal"))
        .expect("a segment");
    fs.read(&dir.join(name)).expect("read segment")
}

fn write_seed(target: &str, name: &str, data: &[u8]) {
    let path = corpus_dir(target).join(format!("seed-{name}"));
    std::fs::write(&path, data).expect("write seed");
}

/// Writes the hand-made seeds when `MVLEDGER_WRITE_FUZZ_SEEDS` is set (and
/// checks that they run); otherwise does nothing.
#[test]
fn write_seeds() {
    if std::env::var_os("MVLEDGER_WRITE_FUZZ_SEEDS").is_none() {
        return;
    }
    // record_decoder: real segments (commit and logical records).
    let (fs, dir) = engine_dir();
    let segment = first_segment(&fs, &dir);
    write_seed("record_decoder", "segment", &segment);
    write_seed("record_decoder", "commit-payload", &segment[32 + 9..]);
    let (lfs, ldir) = ledger_dir();
    let lsegment = first_segment(&lfs, &ldir);
    write_seed("record_decoder", "ledger-segment", &lsegment);

    // recovery: the engine's and the ledger's directories, whole and
    // without their checkpoints, and framed files.
    let mut whole = vec![harness::recovery_flags(false, false)];
    recovery_files(&fs, &dir, &mut whole);
    write_seed("recovery", "engine", &whole);
    whole[0] = harness::recovery_flags(true, false);
    write_seed("recovery", "engine-repair", &whole);
    let mut ledger = vec![harness::recovery_flags(false, true)];
    recovery_files(&lfs, &ldir, &mut ledger);
    write_seed("recovery", "ledger", &ledger);
    let mut framed = vec![0];
    let mut records = Vec::new();
    for (ts, key) in [(1u64, b"x"), (2, b"y")] {
        let mut payload = ts.to_le_bytes().to_vec();
        payload.extend_from_slice(&1u32.to_le_bytes());
        payload.push(1);
        payload.extend_from_slice(&1u32.to_le_bytes());
        payload.extend_from_slice(key);
        payload.extend_from_slice(&2u32.to_le_bytes());
        payload.extend_from_slice(b"vv");
        records.push(0);
        records.extend_from_slice(&(payload.len() as u16).to_le_bytes());
        records.extend_from_slice(&payload);
    }
    harness::recovery_file(&mut framed, harness::FILE_SEGMENT_FRAMED, 1, &records);
    let mut block = Vec::new();
    block.extend_from_slice(&1u32.to_le_bytes());
    block.push(b'k');
    block.extend_from_slice(&1u32.to_le_bytes());
    block.push(b'v');
    let mut ckpt = vec![1u8];
    ckpt.extend_from_slice(&(block.len() as u16).to_le_bytes());
    ckpt.extend_from_slice(&block);
    harness::recovery_file(&mut framed, harness::FILE_CHECKPOINT_FRAMED, 0, &ckpt);
    write_seed("recovery", "framed", &framed);

    // kv_ops: op slot args... (see harness::kv_ops).
    write_seed(
        "kv_ops",
        "conflict",
        &[
            0, 0, 0, 1, 2, 0, 1, 2, b'a', b'b', 2, 1, 1, 1, b'c', 4, 1, 4, 0, 7, 0, 6, 0, 1,
        ],
    );
    write_seed(
        "kv_ops",
        "checkpoint-reopen",
        &[
            0, 0, 2, 0, 2, 1, b'z', 3, 0, 3, 2, 0, 4, 3, 0, 11, 0, 0, 1, 3, 1, 2, 4, 1, 8, 0, 0, 2,
            2, 0, 3, 0, 4, 0, 10, 0, 11, 0, 9, 0, 6, 0, 2, 7, 0,
        ],
    );
    write_seed(
        "kv_ops",
        "snapshots",
        &[
            11, 0, 0, 0, 2, 0, 1, 0, b'q', 4, 0, 11, 0, 0, 1, 3, 1, 1, 4, 1, 11, 0, 11, 0, 10, 0,
            7, 0, 5, 0,
        ],
    );

    // ledger: accounts, transfers (plain, pending, post, void), expiry.
    let acct = |id: u8, flags: u8| [id, flags, 0];
    let mut l = vec![0, 3];
    l.extend(acct(1, 0));
    l.extend(acct(2, 0x02)); // DEBITS_MUST_NOT_EXCEED_CREDITS
    l.extend(acct(3, 0x08)); // HISTORY
    l.extend(acct(4, 0));
    // transfers: id, accounts (credit << 4 | debit), flags, extra, [pending], [timeout], amount
    l.extend([2, 2, 1, 0x31, 0x00, 0x00, 3 * 8]); // 2 transfers: a plain one ...
    l.extend([2, 0x41, 0x02, 0x03, 0x00, 3, 5 * 8]); // ... and a pending one, timeout 3 s
    l.extend([3, 1, 3, 0x31, 0x04, 0x01, 2, 0]); // post of transfer 2
    l.extend([4, 0, 4, 0x21, 0x02, 0x02, 1, 8]); // pending with timeout 1 s
    l.extend([5, 3]); // advance 4 s
    l.extend([6]); // expire
    l.extend([7, 1, 7, 0]); // reopen, checkpoint
    l.extend([2, 1, 5, 0x12, 0x01, 0x00, 0]); // balancing debit
    write_seed("ledger", "two-phase", &l);
    write_seed("ledger", "empty", &[]);

    for (target, run) in [
        ("record_decoder", harness::record_decoder as fn(&[u8])),
        ("recovery", harness::recovery),
        ("kv_ops", harness::kv_ops),
        ("ledger", harness::ledger),
    ] {
        replay(target, run);
    }
}
