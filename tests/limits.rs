//! The README's "Limits": each is refused with `Error::InvalidArgument`,
//! and the call writes nothing (no log byte, no version), while the limit
//! itself is accepted.

use std::time::Duration;

use mvledger::cluster::{Cluster, ClusterOptions};
use mvledger::{Engine, Error, Ledger, LedgerOptions, Options, SyncMode, Transfer};

/// A transaction's writes: key, value.
type Writes = Vec<(Vec<u8>, Vec<u8>)>;

fn invalid<T: std::fmt::Debug>(what: &str, result: mvledger::Result<T>) {
    match result {
        Err(Error::InvalidArgument(_)) => {}
        other => panic!("{what}: expected InvalidArgument, got {other:?}"),
    }
}

/// Commits `writes` in one transaction; the error of `put` or `commit`.
fn commit(engine: &Engine, writes: &Writes) -> mvledger::Result<u64> {
    let mut txn = engine.begin();
    for (key, value) in writes {
        txn.put(key, value)?;
    }
    txn.commit()
}

#[test]
fn keys_values_and_commits_over_their_limits_are_refused_and_write_nothing() {
    const MIB: usize = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(dir.path(), Options::default()).unwrap();
    let refused: [(&str, Writes); 3] = [
        (
            "a key of 65,536 bytes",
            vec![(vec![1; 65_536], b"v".to_vec())],
        ),
        (
            "a value of 16 MiB + 1",
            vec![(b"k".to_vec(), vec![2; 16 * MIB + 1])],
        ),
        (
            "a commit over 64 MiB",
            (0u8..4).map(|i| (vec![i], vec![3; 16 * MIB])).collect(),
        ),
    ];
    for (what, writes) in refused {
        let before = engine.stats().log_bytes;
        invalid(what, commit(&engine, &writes));
        assert_eq!(engine.stats().log_bytes, before, "{what}: log bytes");
        assert_eq!(engine.snapshot().scan(..).unwrap().count(), 0, "{what}");
    }
    // The limits themselves pass.
    commit(&engine, &vec![(vec![1; 65_535], vec![2; 16 * MIB])]).unwrap();
    // A read of a key over the limit is refused too, not answered "absent".
    let over = vec![1; 65_536];
    let txn = engine.begin();
    invalid("a transaction's get of 65,536 bytes", txn.get(&over));
    let snap = engine.snapshot();
    invalid("a snapshot's get of 65,536 bytes", snap.get(&over));
    invalid(
        "get_with of 65,536 bytes",
        snap.get_with(&over, |v| v.is_some()),
    );
    assert!(snap.get(&over[..65_535]).unwrap().is_some());
}

/// A file where the directory should be, or on its path, is a bad
/// argument, for the engine, a ledger and a cluster alike; the file stays.
#[test]
fn a_file_in_place_of_the_directory_is_a_bad_argument() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"mine").unwrap();
    for dir in [file.clone(), file.join("below")] {
        let what = dir.display().to_string();
        match Engine::open(&dir, Options::default()) {
            Err(Error::InvalidArgument(why)) => assert!(why.contains("not a directory"), "{why}"),
            other => panic!("{what}: expected InvalidArgument, got {other:?}"),
        }
        invalid(&what, Ledger::open(&dir, LedgerOptions::default()));
    }
    invalid(
        "a cluster over a file",
        Cluster::open(&file, ClusterOptions::default()),
    );
    assert_eq!(std::fs::read(&file).unwrap(), b"mine");
}

#[test]
fn options_outside_their_limits_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let options = |segment_bytes, sync| Options {
        segment_bytes,
        sync,
        ..Options::default()
    };
    invalid(
        "segment_bytes 4,095",
        Engine::open(dir.path(), options(4095, SyncMode::Always)),
    );
    invalid(
        "Interval(0)",
        Engine::open(
            dir.path(),
            options(4096, SyncMode::Interval(Duration::ZERO)),
        ),
    );
    drop(Engine::open(dir.path(), options(4096, SyncMode::Always)).unwrap());
    for shards in [0, 257] {
        let cluster_dir = tempfile::tempdir().unwrap();
        let options = ClusterOptions {
            shards,
            ..ClusterOptions::default()
        };
        invalid(
            &format!("{shards} shards"),
            Cluster::open(cluster_dir.path(), options),
        );
    }
}

#[test]
fn a_call_of_more_than_65536_events_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path(), LedgerOptions::default()).unwrap();
    let before = ledger.stats().log_bytes;
    let transfers = vec![Transfer::default(); mvledger::ledger::MAX_BATCH_EVENTS + 1];
    invalid("65,537 transfers", ledger.create_transfers(&transfers));
    assert_eq!(ledger.stats().log_bytes, before);
    // 65,536 is a call (every one refused by the rules, but logged).
    let results = ledger
        .create_transfers(&transfers[1..])
        .expect("65,536 events");
    assert_eq!(results.len(), mvledger::ledger::MAX_BATCH_EVENTS);
}
