//! Atomic and durable batches (issue 3, rule 7; ARCHITECTURE.md invariants
//! 3 and 4): one `create_transfers` call is one redo record, so after a
//! crash that tore it at any byte it is applied whole or not at all, and
//! the batches before it are intact. Many threads calling at once under
//! `SyncMode::Always` all succeed, share syncs (group commit), and, since
//! transfers run inside the sequencer, meet no conflicts and no retries,
//! even all on one hot account.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{T0, open_with, transfer};
use mvledger::wal::{FileSystem, MemFs};
use mvledger::{
    Account, AccountFlags, CreateAccountResult as A, CreateTransferResult as R, Ledger,
    LedgerOptions, ManualClock, Options, SyncMode, Transfer, TransferFlags,
};

/// The segment header, then records `u32 len | u32 crc | u8 kind | payload`.
const SEGMENT_HEADER_BYTES: usize = 32;
const FRAME_HEADER_BYTES: usize = 9;

fn open(dir: &Path, sync: SyncMode) -> Ledger {
    open_with(dir, &Arc::new(ManualClock::new(T0)), sync)
}

fn account(id: u128) -> Account {
    common::account(id, AccountFlags::empty())
}

/// The log segments of `dir`, in order.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_str().unwrap();
            name.len() == 24
                && name.ends_with(".wal")
                && name[..20].bytes().all(|b| b.is_ascii_digit())
        })
        .collect();
    out.sort();
    out
}

/// Where each record of a segment starts and ends; the close record a
/// clean close ends the log with (kind 3) is passed over.
fn records(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = SEGMENT_HEADER_BYTES;
    while at + FRAME_HEADER_BYTES <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let end = at + FRAME_HEADER_BYTES + len;
        assert!(end <= bytes.len(), "a record runs past the segment's end");
        if bytes[at + 8] != 3 {
            out.push((at, end));
        }
        at = end;
    }
    assert_eq!(at, bytes.len(), "trailing bytes after the last record");
    out
}

/// An in-memory copy of the ledger files in `from` as a crash would leave
/// them with `segment` cut to `cut` bytes (in memory: a thousand reopens
/// on disk would spend their time in fsync).
fn crash_image(from: &Path, segment: &Path, cut: usize) -> (MemFs, PathBuf) {
    let fs = MemFs::new();
    let root = PathBuf::from("/image");
    fs.create_dir_all(&root).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if !entry.file_type().unwrap().is_file() || entry.file_name() == "LOCK" {
            continue;
        }
        let mut bytes = std::fs::read(entry.path()).unwrap();
        if entry.path() == segment {
            bytes.truncate(cut);
        }
        let mut file = fs.create(&root.join(entry.file_name())).unwrap();
        file.append(&bytes).unwrap();
        file.sync_data().unwrap();
    }
    (fs, root)
}

fn open_image(fs: MemFs, root: &Path) -> Ledger {
    Ledger::open(
        root,
        LedgerOptions {
            engine: Options {
                sync: SyncMode::Never,
                fs: Arc::new(fs),
                ..Default::default()
            },
            clock: Arc::new(ManualClock::new(T0)),
        },
    )
    .unwrap()
}

fn ids(l: &Ledger, ids: &[u128]) -> usize {
    l.lookup_transfers(ids).unwrap().len()
}

#[test]
fn a_batch_torn_at_any_byte_is_applied_whole_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    let earlier: Vec<u128> = (1..=10).collect();
    let last: Vec<u128> = (100..108).collect();
    let last_batch: Vec<Transfer> = vec![
        transfer(100, 1, 2, 5),
        transfer(101, 2, 3, 7),
        Transfer {
            flags: TransferFlags::PENDING,
            ..transfer(102, 3, 4, 11)
        },
        Transfer {
            id: 103,
            pending_id: 102,
            amount: 4,
            flags: TransferFlags::POST_PENDING_TRANSFER,
            ..Default::default()
        },
        Transfer {
            id: 104,
            pending_id: 6,
            flags: TransferFlags::VOID_PENDING_TRANSFER,
            ..Default::default()
        },
        transfer(105, 4, 1, 13),
        transfer(106, 1, 3, 17),
        transfer(107, 3, 2, 19),
    ];
    let (before_last, after_last) = {
        let l = open(dir.path(), SyncMode::Never);
        let r = l.create_accounts(&[account(1), account(2), account(3), account(4)]);
        assert_eq!(r.unwrap(), [A::Ok; 4]);
        let first: Vec<Transfer> = (1..=5).map(|id| transfer(id, 1, 2, id * 10)).collect();
        assert_eq!(l.create_transfers(&first).unwrap(), [R::Ok; 5]);
        let second: Vec<Transfer> = (6..=10)
            .map(|id| Transfer {
                flags: TransferFlags::PENDING,
                ..transfer(id, 2, 3, id)
            })
            .collect();
        assert_eq!(l.create_transfers(&second).unwrap(), [R::Ok; 5]);
        let before = l.snapshot().accounts().unwrap();
        assert_eq!(l.create_transfers(&last_batch).unwrap(), [R::Ok; 8]);
        (before, l.snapshot().accounts().unwrap())
    };
    assert_ne!(before_last, after_last);

    let segment = segments(dir.path()).pop().expect("no log segment");
    let bytes = std::fs::read(&segment).unwrap();
    let &(start, end) = records(&bytes).last().unwrap();
    // Each transfer of the batch takes at least a mask and three words in
    // the log (its id, pending id or accounts, and flags).
    assert!(
        end - start > last_batch.len() * 26,
        "the last record is not the last batch ({} bytes)",
        end - start
    );
    for cut in start..=end {
        let (fs, root) = crash_image(dir.path(), &segment, cut);
        let l = open_image(fs, &root);
        assert_eq!(
            ids(&l, &earlier),
            earlier.len(),
            "cut at {cut}: earlier batch lost"
        );
        let found = ids(&l, &last);
        let accounts = l.snapshot().accounts().unwrap();
        if cut == end {
            assert_eq!(found, last.len(), "the whole record was there");
            assert_eq!(accounts, after_last);
        } else {
            assert_eq!(found, 0, "cut at {cut}: {found} of a torn batch applied");
            assert_eq!(
                accounts, before_last,
                "cut at {cut}: torn batch left a trace"
            );
        }
        if cut == start + 1 || cut + 1 == end {
            // The ledger goes on from there: the batch applies again.
            assert_eq!(l.create_transfers(&last_batch).unwrap(), [R::Ok; 8]);
            assert_eq!(l.snapshot().accounts().unwrap(), after_last);
        }
    }
}

#[test]
fn one_call_is_one_commit() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path(), SyncMode::Always);
    assert_eq!(
        l.create_accounts(&[account(1), account(2)]).unwrap(),
        [A::Ok; 2]
    );
    let commits = l.stats().commits;
    let batch: Vec<Transfer> = (1..=50).map(|id| transfer(id, 1, 2, 1)).collect();
    let reply = l.submit_transfers(&batch).unwrap();
    assert_eq!(reply.results, [R::Ok; 50]);
    let stats = l.stats();
    assert_eq!(stats.commits, commits + 1);
    assert_eq!(stats.visible_ts, reply.commit_ts);
    assert!(
        stats.durable_ts >= reply.commit_ts,
        "returned before durable"
    );
}

#[test]
fn concurrent_calls_on_a_hot_account_are_group_committed_without_conflicts() {
    const THREADS: u128 = 8;
    const CALLS: u128 = 25;
    let dir = tempfile::tempdir().unwrap();
    let expected = {
        let l = open(dir.path(), SyncMode::Always);
        let accounts: Vec<Account> = (1..=THREADS + 1).map(account).collect();
        let r = l.create_accounts(&accounts).unwrap();
        assert!(r.iter().all(|r| *r == A::Ok));
        let before = l.stats();
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let l = &l;
                s.spawn(move || {
                    let own = t + 2;
                    for c in 0..CALLS {
                        let id = (t << 32) | (c << 8);
                        // Every transfer touches hot account 1.
                        let batch = [
                            transfer(id + 1, 1, own, 3),
                            transfer(id + 2, own, 1, 2),
                            transfer(id + 3, 1, own, 1),
                        ];
                        let n = 1 + (c % 3) as usize;
                        let r = l.create_transfers(&batch[..n]).unwrap();
                        assert!(r.iter().all(|r| *r == R::Ok), "{r:?}");
                    }
                });
            }
        });
        let stats = l.stats();
        assert_eq!(
            stats.conflicts, before.conflicts,
            "conflicts on a hot account"
        );
        assert_eq!(stats.conflicts, 0);
        assert_eq!(
            stats.commits - before.commits,
            (THREADS * CALLS) as u64,
            "one commit per call, none retried"
        );
        assert!(
            stats.commits_per_sync() > 1.0,
            "{} commits took {} syncs: no group commit",
            stats.commits,
            stats.syncs
        );
        // Calls c % 3 == 0, 1, 2 carry 1, 2, 3 transfers.
        let per_thread_debits: u128 = (0..CALLS).map(|c| [3, 3, 4][(c % 3) as usize]).sum();
        let per_thread_credits: u128 = (0..CALLS).map(|c| [0, 2, 2][(c % 3) as usize]).sum();
        let hot = l.lookup_accounts(&[1]).unwrap()[0];
        assert_eq!(hot.debits_posted, THREADS * per_thread_debits);
        assert_eq!(hot.credits_posted, THREADS * per_thread_credits);
        l.snapshot().accounts().unwrap()
    };
    let l = open(dir.path(), SyncMode::Always);
    assert_eq!(l.snapshot().accounts().unwrap(), expected);
}
