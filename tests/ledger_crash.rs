//! Acknowledged batches survive a process crash, whole (issue 3, "Tests":
//! crash; rule 7; ARCHITECTURE.md invariants 3, 4 and 6).
//!
//! The test runs its own binary again as a child process (the test
//! `crash_child_process`, which does nothing unless
//! `MVLEDGER_CRASH_CHILD_DIR` is set). The child opens the ledger under
//! `SyncMode::Always` and creates batches of transfers (a pending transfer
//! and its post, a linked pair, plain transfers), printing `ACK <batch>`
//! and flushing once each `create_transfers` has returned. The parent kills
//! it with SIGKILL at a random moment (sometimes while it is still opening,
//! that is recovering, the ledger), reopens the ledger and checks that:
//! - every acknowledged batch is there, and the one after it at most;
//! - every batch is all or nothing;
//! - the state is exactly the serial model's (`tests/model`) run over the
//!   batches that are there, at their own timestamps: every account and
//!   every transfer, and so the invariants.
//!
//! The same directory carries over from one crash to the next, so recovery
//! also runs over logs that earlier crashes cut, and (the parent writes a
//! checkpoint after a quarter of its checks) from checkpoints. 20 crashes by default (a
//! few seconds); set `MVLEDGER_CRASH_ITERATIONS` for more and
//! `MVLEDGER_CRASH_SEED` to repeat a run.

mod model;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use model::{Model, check_invariants};
use mvledger::{
    Account, CreateAccountResult, CreateTransferResult, Ledger, LedgerOptions, Options, SyncMode,
    Transfer, TransferFlags,
};

const CHILD_DIR_ENV: &str = "MVLEDGER_CRASH_CHILD_DIR";
const CHILD_FIRST_BATCH_ENV: &str = "MVLEDGER_CRASH_CHILD_FIRST_BATCH";
const ACCOUNTS: u128 = 6;
/// A child stops by itself after this many batches (only if never killed).
const CHILD_BATCHES_MAX: u64 = 100_000;

fn options() -> LedgerOptions {
    LedgerOptions {
        engine: Options {
            sync: SyncMode::Always,
            ..Options::default()
        },
        ..LedgerOptions::default()
    }
}

fn accounts() -> Vec<Account> {
    (1..=ACCOUNTS)
        .map(|id| Account {
            id,
            ledger: 1,
            code: 1,
            ..Default::default()
        })
        .collect()
}

/// Batch `b`: 1 to 7 transfers among accounts without limits, so every one
/// succeeds: the first is pending, the last (if more than one) posts it,
/// the second is linked to the third.
fn batch(b: u64) -> Vec<Transfer> {
    let b128 = u128::from(b);
    let m = 1 + b % 7;
    (0..m)
        .map(|j| {
            let j128 = u128::from(j);
            let debit = 1 + (b128 + j128) % ACCOUNTS;
            let credit = 1 + (debit + j128 % 3) % ACCOUNTS;
            let mut t = Transfer {
                id: b128 * 100 + j128 + 1,
                debit_account_id: debit,
                credit_account_id: credit,
                amount: 1 + (b128 * 7 + j128) % 50,
                user_data_64: b,
                ledger: 1,
                code: 1,
                ..Default::default()
            };
            if j == 0 {
                t.flags = TransferFlags::PENDING;
            } else if j == m - 1 {
                t = Transfer {
                    id: t.id,
                    pending_id: b128 * 100 + 1,
                    flags: TransferFlags::POST_PENDING_TRANSFER,
                    ..Default::default()
                };
            }
            if j == 1 && m > 3 {
                t.flags |= TransferFlags::LINKED;
            }
            t
        })
        .collect()
}

/// The child: creates batches from `MVLEDGER_CRASH_CHILD_FIRST_BATCH` on
/// until it is killed. Does nothing in a normal test run.
#[test]
fn crash_child_process() {
    let Ok(dir) = std::env::var(CHILD_DIR_ENV) else {
        return;
    };
    let first: u64 = std::env::var(CHILD_FIRST_BATCH_ENV)
        .expect("first batch")
        .parse()
        .expect("a number");
    let ledger = Ledger::open(&dir, options()).expect("child: open");
    for r in ledger
        .create_accounts(&accounts())
        .expect("child: accounts")
    {
        assert!(matches!(
            r,
            CreateAccountResult::Ok | CreateAccountResult::Exists
        ));
    }
    let mut out = std::io::stdout().lock();
    // On a line of its own: the test harness has printed the test's name.
    writeln!(out, "\nREADY").expect("stdout");
    out.flush().expect("stdout");
    for b in first..first + CHILD_BATCHES_MAX {
        let results = ledger.create_transfers(&batch(b)).expect("child: create");
        assert!(
            results.iter().all(|r| *r == CreateTransferResult::Ok),
            "child: batch {b}: {results:?}"
        );
        writeln!(out, "ACK {b}").expect("stdout");
        out.flush().expect("stdout");
    }
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

/// Takes one line of the child's: records an `ACK`; tells whether it is
/// `READY`.
fn take(line: String, acked: &mut Vec<u64>) -> bool {
    if let Some(b) = line.strip_prefix("ACK ") {
        acked.push(b.parse().expect("batch number"));
    }
    line == "READY"
}

/// One child, killed at a random moment: the batches it acknowledged.
fn run_child(dir: &Path, first: u64, rng: &mut Rng) -> Vec<u64> {
    let exe = std::env::current_exe().expect("current_exe");
    let mut child = Command::new(exe)
        .args([
            "crash_child_process",
            "--exact",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_DIR_ENV, dir)
        .env(CHILD_FIRST_BATCH_ENV, first.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the child");
    let stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let (lines_tx, lines_rx) = mpsc::channel::<String>();
    let reader = thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let stderr_reader = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });

    let mut acked = Vec::new();
    if rng.below(5) == 0 {
        // While it opens (recovers) the ledger, or just after.
        thread::sleep(Duration::from_micros(rng.below(15_000)));
    } else {
        // After it has acknowledged a few batches, and a little more.
        let wait_for = rng.below(6) as usize;
        let mut ready = false;
        while !ready || acked.len() < wait_for {
            match lines_rx.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => ready |= take(line, &mut acked),
                Err(e) => panic!("the child stopped talking ({e}): {:?}", child.try_wait()),
            }
        }
        thread::sleep(Duration::from_micros(rng.below(10_000)));
    }
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    reader.join().expect("stdout reader");
    let stderr = stderr_reader.join().expect("stderr reader");
    assert_eq!(
        status.signal(),
        Some(9),
        "the child ended by itself: {status:?}\n{stderr}"
    );
    // Lines still in the pipe were printed before the kill: acknowledged.
    for line in lines_rx.try_iter() {
        take(line, &mut acked);
    }
    for pair in acked.windows(2) {
        assert_eq!(pair[0] + 1, pair[1], "acknowledgements out of order");
    }
    acked
}

/// Reopens the ledger and checks it against every acknowledgement so far
/// and against `model`, which holds batches `0..present` and takes the
/// batches found past them. Returns how many batches are present now (all
/// of them from 0 up to some point).
fn check_after_crash(
    dir: &Path,
    acked: &[u64],
    batches_tried: u64,
    model: &mut Model,
    present: u64,
    checkpoint: bool,
) -> u64 {
    let ledger = Ledger::open(dir, options()).expect("reopen after the crash");
    let snap = ledger.snapshot();
    let accounts = snap.accounts().expect("accounts");
    check_invariants(&accounts).expect("invariants after the crash");
    if model.accounts().is_empty()
        && let Some(first) = accounts.first()
    {
        assert_eq!(
            model.create_accounts(first.timestamp, &self::accounts()),
            vec![CreateAccountResult::Ok; ACCOUNTS as usize]
        );
    }
    let mut now_present = present;
    for b in present..batches_tried {
        let want = batch(b);
        let ids: Vec<u128> = want.iter().map(|t| t.id).collect();
        let found = snap.lookup_transfers(&ids).expect("lookup");
        assert!(
            found.is_empty() || found.len() == want.len(),
            "batch {b} is there in part: {} of {} transfers",
            found.len(),
            want.len()
        );
        if found.is_empty() {
            assert!(
                !acked.contains(&b),
                "acknowledged batch {b} is lost (acknowledged: {acked:?})"
            );
            // Nothing after a missing batch: the log is a prefix.
            for later in b + 1..batches_tried {
                let ids: Vec<u128> = batch(later).iter().map(|t| t.id).collect();
                assert!(
                    snap.lookup_transfers(&ids).expect("lookup").is_empty(),
                    "batch {later} is there but batch {b} is not"
                );
            }
            break;
        }
        let results = model.create_transfers(found[0].timestamp, &want);
        assert_eq!(results, vec![CreateTransferResult::Ok; want.len()]);
        now_present = b + 1;
    }
    assert_eq!(accounts, model.accounts(), "accounts after the crash");
    let ids: Vec<u128> = model.transfers().iter().map(|t| t.id).collect();
    assert_eq!(
        snap.lookup_transfers(&ids).expect("lookup"),
        model.transfers(),
        "transfers after the crash"
    );
    if checkpoint {
        // The next child recovers from this checkpoint and the log after it.
        ledger.checkpoint().expect("checkpoint");
    }
    now_present
}

#[test]
fn acknowledged_batches_survive_sigkill_whole() {
    let iterations: u64 = std::env::var("MVLEDGER_CRASH_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let seed: u64 = std::env::var("MVLEDGER_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    println!("MVLEDGER_CRASH_SEED={seed}");
    let mut rng = Rng(seed | 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let mut model = Model::new();
    let mut next = 0;
    let mut acked_total = 0;
    for _ in 0..iterations {
        let acked = run_child(dir.path(), next, &mut rng);
        if let Some(first) = acked.first() {
            assert_eq!(*first, next, "the child started elsewhere");
        }
        acked_total += acked.len();
        // The child works on one batch at a time: at most one past the
        // acknowledged ones can have landed.
        let tried = next + acked.len() as u64 + 1;
        next = check_after_crash(
            dir.path(),
            &acked,
            tried,
            &mut model,
            next,
            rng.below(4) == 0,
        );
        assert!(
            next >= tried - 1,
            "acknowledged batches are missing: {next} present, {} acknowledged",
            tried - 1
        );
    }
    println!("{iterations} crashes, {acked_total} batches acknowledged, {next} present");
}
