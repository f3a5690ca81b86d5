//! No read skew (ARCHITECTURE.md invariant 1; issue 2, behaviour 1).
//!
//! A snapshot or transaction sees all of a multi-key commit or none of it,
//! whatever order it reads the keys in and however long it takes: reading
//! one account before a transfer commits and the other after it still gives
//! balances from one moment. Checked with a single deterministic schedule,
//! with a scan that is half consumed when a transfer commits, and with
//! writer threads running transfers (through transactions and through
//! `apply`) while reader threads check, in every snapshot and transaction,
//! that the sum of the balances is constant (by `get` and by `scan`) and
//! that a token moved between keys by delete + put exists exactly once.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use mvledger::{Engine, Error, Options, SyncMode};

const INITIAL: u64 = 1_000;

fn open(dir: &Path, sync: SyncMode) -> Engine {
    Engine::open(
        dir,
        Options {
            sync,
            ..Options::default()
        },
    )
    .expect("open")
}

fn num(v: Option<impl AsRef<[u8]>>) -> u64 {
    let v = v.expect("account exists");
    u64::from_le_bytes(v.as_ref().try_into().expect("8-byte balance"))
}

fn account(i: usize) -> Vec<u8> {
    format!("acct/{i:04}").into_bytes()
}

fn token(i: usize) -> Vec<u8> {
    format!("token/{i:02}").into_bytes()
}

/// Opens an engine with `n` accounts of `INITIAL` each, in one commit.
fn setup(dir: &Path, sync: SyncMode, n: usize) -> Engine {
    let engine = open(dir, sync);
    let mut t = engine.begin();
    for i in 0..n {
        t.put(account(i), INITIAL.to_le_bytes()).expect("put");
    }
    t.put(token(0), b"here").expect("put");
    t.commit().expect("commit");
    engine
}

/// Moves `amount` from account `from` to account `to` in one transaction.
fn transfer(engine: &Engine, from: usize, to: usize, amount: u64) -> mvledger::Result<u64> {
    let mut t = engine.begin();
    let a = num(t.get(account(from))?);
    let b = num(t.get(account(to))?);
    t.put(account(from), (a - amount).to_le_bytes())?;
    t.put(account(to), (b + amount).to_le_bytes())?;
    t.commit()
}

#[test]
fn a_reader_sees_none_of_a_transfer_that_committed_between_its_reads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = setup(dir.path(), SyncMode::Always, 2);
    let txn = engine.begin();
    let snap = engine.snapshot();
    assert_eq!(num(txn.get(account(0)).expect("get")), INITIAL);
    assert_eq!(num(snap.get(account(0)).expect("get")), INITIAL);

    transfer(&engine, 0, 1, 300).expect("transfer");

    // The second read is from the same moment as the first: no skew.
    assert_eq!(num(txn.get(account(1)).expect("get")), INITIAL);
    assert_eq!(num(snap.get(account(1)).expect("get")), INITIAL);
    let by_scan: Vec<u64> = txn
        .scan_prefix(b"acct/")
        .expect("scan")
        .map(|(_, v)| num(Some(v)))
        .collect();
    assert_eq!(by_scan, [INITIAL, INITIAL]);
    let by_scan: Vec<u64> = snap
        .scan(account(0)..=account(1))
        .expect("scan")
        .map(|(_, v)| num(Some(v)))
        .collect();
    assert_eq!(by_scan, [INITIAL, INITIAL]);

    // A reader that begins now sees all of it.
    let later = engine.snapshot();
    assert_eq!(num(later.get(account(0)).expect("get")), INITIAL - 300);
    assert_eq!(num(later.get(account(1)).expect("get")), INITIAL + 300);
}

#[test]
fn a_scan_in_progress_sees_none_of_a_transfer_that_commits_meanwhile() {
    // Enough accounts that every shard is read in more than one chunk.
    const N: usize = 5_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = setup(dir.path(), SyncMode::Never, N);
    let txn = engine.begin();
    let snap = engine.snapshot();
    let mut txn_scan = txn.scan_prefix(b"acct/").expect("scan");
    let mut snap_scan = snap.scan(account(0)..account(N)).expect("scan");
    let mut sums = [0u64; 2];
    let mut seen = [0usize; 2];
    for (i, scan) in [&mut txn_scan, &mut snap_scan].into_iter().enumerate() {
        for (_, v) in scan.by_ref().take(N / 2) {
            sums[i] += num(Some(v));
            seen[i] += 1;
        }
    }
    // Money moves from the unread half to the read half, and back, and a
    // new account appears in the unread half; then the scans go on, and GC
    // runs, which must keep what they read.
    transfer(&engine, N - 1, 0, 700).expect("transfer");
    transfer(&engine, 1, N - 2, 50).expect("transfer");
    let mut t = engine.begin();
    t.put(account(N - 3), 5u64.to_le_bytes()).expect("put");
    t.delete(account(N - 4)).expect("delete");
    t.commit().expect("commit");
    engine.gc();
    for (i, scan) in [txn_scan, snap_scan].into_iter().enumerate() {
        for (_, v) in scan {
            sums[i] += num(Some(v));
            seen[i] += 1;
        }
    }
    assert_eq!(seen, [N, N]);
    assert_eq!(sums, [N as u64 * INITIAL; 2]);
    // A fresh scan sees all three commits.
    let now: u64 = engine
        .snapshot()
        .scan_prefix(b"acct/")
        .expect("scan")
        .map(|(_, v)| num(Some(v)))
        .sum();
    assert_eq!(now, N as u64 * INITIAL - INITIAL - INITIAL + 5);
}

/// A tiny deterministic generator, so the tests need no RNG crate.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// What one reader checks in one view: the sum by `get`, the sum by
/// `scan`, the balances agree between the two, and one token.
fn check_view(
    what: &str,
    ts: u64,
    accounts: usize,
    get: impl Fn(&[u8]) -> Option<Vec<u8>>,
    scan: impl Fn(&[u8]) -> Vec<(Vec<u8>, Vec<u8>)>,
) {
    let by_get: Vec<u64> = (0..accounts).map(|i| num(get(&account(i)))).collect();
    let by_scan: Vec<u64> = scan(b"acct/")
        .into_iter()
        .map(|(_, v)| num(Some(v)))
        .collect();
    let total = accounts as u64 * INITIAL;
    assert_eq!(
        by_get.iter().sum::<u64>(),
        total,
        "{what} at {ts}: sum by get"
    );
    assert_eq!(
        by_scan.iter().sum::<u64>(),
        total,
        "{what} at {ts}: sum by scan"
    );
    assert_eq!(by_get, by_scan, "{what} at {ts}: get and scan disagree");
    let tokens = scan(b"token/");
    assert_eq!(tokens.len(), 1, "{what} at {ts}: tokens {tokens:?}");
    let by_get = (0..TOKEN_SLOTS)
        .filter(|&i| get(&token(i)).is_some())
        .count();
    assert_eq!(by_get, 1, "{what} at {ts}: tokens by get");
}

const TOKEN_SLOTS: usize = 8;

/// Writer threads move money between accounts (transactions with retry on
/// conflict, and `apply`) and move a token between keys; reader threads
/// check every snapshot and transaction they take.
fn check_concurrent_transfers(sync: SyncMode, transfers_per_writer: u64) {
    const ACCOUNTS: usize = 16;
    const TXN_WRITERS: u64 = 2;
    const READERS: u64 = 2;
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = setup(dir.path(), sync, ACCOUNTS);
    let done = AtomicBool::new(false);
    let views = AtomicU64::new(0);
    std::thread::scope(|s| {
        let mut writers = Vec::new();
        for w in 0..TXN_WRITERS {
            let engine = &engine;
            writers.push(s.spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (w + 1));
                let mut committed = 0;
                while committed < transfers_per_writer {
                    let from = rng.below(ACCOUNTS as u64) as usize;
                    let to = (from + 1 + rng.below(ACCOUNTS as u64 - 1) as usize) % ACCOUNTS;
                    let amount = rng.below(INITIAL / 4);
                    let mut t = engine.begin();
                    let a = num(t.get(account(from)).expect("get"));
                    let b = num(t.get(account(to)).expect("get"));
                    let amount = amount.min(a);
                    t.put(account(from), (a - amount).to_le_bytes())
                        .expect("put");
                    std::thread::yield_now();
                    t.put(account(to), (b + amount).to_le_bytes()).expect("put");
                    match t.commit() {
                        Ok(_) => committed += 1,
                        Err(Error::Conflict) => {}
                        Err(e) => panic!("commit: {e}"),
                    }
                }
            }));
        }
        // Transfers through `apply`, and the token moving between slots by
        // a delete and a put in one commit.
        writers.push({
            let engine = &engine;
            s.spawn(move || {
                let mut rng = Rng(0x2545_f491_4f6c_dd1d);
                for _ in 0..transfers_per_writer {
                    let from = rng.below(ACCOUNTS as u64) as usize;
                    let to = (from + 1 + rng.below(ACCOUNTS as u64 - 1) as usize) % ACCOUNTS;
                    engine
                        .apply(|batch| {
                            let a = num(batch.get(account(from)));
                            let b = num(batch.get(account(to)));
                            let amount = (a / 3).min(INITIAL / 4);
                            batch.put(account(from), (a - amount).to_le_bytes())?;
                            batch.put(account(to), (b + amount).to_le_bytes())
                        })
                        .expect("apply");
                    loop {
                        let mut t = engine.begin();
                        let here: Vec<Vec<u8>> = t
                            .scan_prefix(b"token/")
                            .expect("scan")
                            .map(|(k, _)| k.to_vec())
                            .collect();
                        assert_eq!(here.len(), 1, "token count in the mover: {here:?}");
                        let next = token(rng.below(TOKEN_SLOTS as u64) as usize);
                        t.delete(&here[0]).expect("delete");
                        t.put(&next, b"here").expect("put");
                        match t.commit() {
                            Ok(_) => break,
                            Err(Error::Conflict) => {}
                            Err(e) => panic!("commit: {e}"),
                        }
                    }
                }
            })
        });
        let mut readers = Vec::new();
        for r in 0..READERS {
            let (engine, done, views) = (&engine, &done, &views);
            readers.push(s.spawn(move || {
                let mut i = 0u64;
                while !done.load(Ordering::Acquire) || i < 4 {
                    if (i + r).is_multiple_of(2) {
                        let snap = engine.snapshot();
                        check_view(
                            "snapshot",
                            snap.ts(),
                            ACCOUNTS,
                            |k| snap.get(k).expect("get").map(|v| v.to_vec()),
                            |p| {
                                snap.scan_prefix(p)
                                    .expect("scan")
                                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                                    .collect()
                            },
                        );
                    } else {
                        let txn = engine.begin();
                        check_view(
                            "transaction",
                            txn.start_ts(),
                            ACCOUNTS,
                            |k| txn.get(k).expect("get").map(|v| v.to_vec()),
                            |p| {
                                // Half by range, half by prefix.
                                let mut end = p.to_vec();
                                *end.last_mut().expect("prefix") += 1;
                                txn.scan(p.to_vec()..end)
                                    .expect("scan")
                                    .map(|(k, v)| (k.to_vec(), v.to_vec()))
                                    .collect()
                            },
                        );
                    }
                    i += 1;
                    views.fetch_add(1, Ordering::Relaxed);
                }
            }));
        }
        for w in writers {
            w.join().expect("writer");
        }
        done.store(true, Ordering::Release);
        for r in readers {
            r.join().expect("reader");
        }
    });
    assert!(views.load(Ordering::Relaxed) >= 2 * READERS);
    let snap = engine.snapshot();
    check_view(
        "final snapshot",
        snap.ts(),
        ACCOUNTS,
        |k| snap.get(k).expect("get").map(|v| v.to_vec()),
        |p| {
            snap.scan_prefix(p)
                .expect("scan")
                .map(|(k, v)| (k.to_vec(), v.to_vec()))
                .collect()
        },
    );
    // Every transfer and token move committed (1 setup commit before).
    assert_eq!(
        engine.stats().commits,
        1 + (TXN_WRITERS + 2) * transfers_per_writer
    );
}

#[test]
fn concurrent_transfers_keep_every_view_balanced_never() {
    check_concurrent_transfers(SyncMode::Never, 300);
}

#[test]
fn concurrent_transfers_keep_every_view_balanced_always() {
    check_concurrent_transfers(SyncMode::Always, 100);
}

/// A commit of thousands of writes is installed by two threads (the index
/// splits a big commit's shards between the committer and a helper), and
/// must still become visible at once: readers taking snapshots while such
/// commits follow one another see every key at the same generation, by
/// `get` in any order and by `scan`. Commits alternate between `apply`
/// and transactions (two install paths).
#[test]
fn a_commit_installed_by_two_threads_is_seen_whole() {
    const KEYS: usize = 6_000;
    const COMMITS: u64 = 40;
    let key = |i: usize| format!("gen/{i:05}").into_bytes();
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), SyncMode::Never);
    let write = |g: u64| {
        if g.is_multiple_of(2) {
            engine
                .apply(|batch| {
                    for i in 0..KEYS {
                        batch.put(key(i), g.to_le_bytes())?;
                    }
                    Ok(())
                })
                .expect("apply");
        } else {
            let mut t = engine.begin();
            for i in 0..KEYS {
                t.put(key(i), g.to_le_bytes()).expect("put");
            }
            t.commit().expect("commit");
        }
    };
    write(0);
    let done = AtomicBool::new(false);
    let views = AtomicU64::new(0);
    std::thread::scope(|s| {
        for reader in 0..2 {
            let (engine, done, views) = (&engine, &done, &views);
            s.spawn(move || {
                let mut round = 0usize;
                while !done.load(Ordering::Acquire) {
                    round += 1;
                    let snap = engine.snapshot();
                    // A different order of keys each round.
                    let step = [1, 7, 13, 4_999][(round + reader) % 4];
                    let gens: Vec<u64> = (0..KEYS)
                        .map(|i| num(snap.get(key(i * step % KEYS)).expect("get")))
                        .collect();
                    assert!(
                        gens.iter().all(|g| *g == gens[0]),
                        "a snapshot saw generations {:?} at once",
                        gens.iter().collect::<std::collections::BTreeSet<_>>()
                    );
                    let scanned: Vec<u64> = snap
                        .scan_prefix(b"gen/")
                        .expect("scan")
                        .map(|(_, v)| num(Some(v)))
                        .collect();
                    assert_eq!(scanned.len(), KEYS);
                    assert!(
                        scanned.iter().all(|g| *g == gens[0]),
                        "scan saw two generations"
                    );
                    views.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
        for g in 1..=COMMITS {
            write(g);
        }
        done.store(true, Ordering::Release);
    });
    assert!(views.load(Ordering::Relaxed) > 0, "no reader ran");
    let last = engine.snapshot();
    assert_eq!(num(last.get(key(KEYS - 1)).expect("get")), COMMITS);
}
