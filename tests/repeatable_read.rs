//! Repeatable reads and read-your-own-writes (issue 2, behaviour 1).
//!
//! Inside a transaction (and a snapshot), reading the same key or scanning
//! the same range twice gives the same answer even when other transactions
//! commit updates, deletes and inserts in between, and even when GC and a
//! checkpoint run meanwhile. A transaction sees its own writes: `get`
//! returns its latest put or delete of a key, and `scan` (and
//! `scan_prefix`) merges its own puts and deletes into the stored keys in
//! key order, honouring the range bounds.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;

use mvledger::{Engine, Error, Isolation, Options, SyncMode, Transaction};

type Rows = Vec<(Vec<u8>, Vec<u8>)>;

fn open(dir: &Path, isolation: Isolation) -> Engine {
    Engine::open(
        dir,
        Options {
            sync: SyncMode::Never,
            isolation,
            ..Options::default()
        },
    )
    .expect("open")
}

fn rows(scan: mvledger::Scan<'_>) -> Rows {
    scan.map(|(k, v)| (k.to_vec(), v.to_vec())).collect()
}

fn row(k: &str, v: &str) -> (Vec<u8>, Vec<u8>) {
    (k.as_bytes().to_vec(), v.as_bytes().to_vec())
}

fn get(t: &Transaction, key: &str) -> Option<String> {
    t.get(key)
        .expect("get")
        .map(|v| String::from_utf8(v.to_vec()).expect("utf8"))
}

fn commit(engine: &Engine, writes: &[(&str, Option<&str>)]) {
    let mut t = engine.begin();
    for (k, v) in writes {
        match v {
            Some(v) => t.put(k, v).expect("put"),
            None => t.delete(k).expect("delete"),
        }
    }
    t.commit().expect("commit");
}

const BOTH: [Isolation; 2] = [Isolation::Snapshot, Isolation::Serializable];

#[test]
fn reading_a_key_twice_gives_the_same_answer_across_other_commits() {
    for isolation in BOTH {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = open(dir.path(), isolation);
        commit(&engine, &[("updated", Some("u0")), ("deleted", Some("d0"))]);
        let t = engine.begin();
        let snap = engine.snapshot();
        let keys = ["updated", "deleted", "inserted"];
        let first: Vec<Option<String>> = keys.iter().map(|k| get(&t, k)).collect();
        assert_eq!(first, [Some("u0".into()), Some("d0".into()), None]);
        let first_snap: Vec<_> = keys.iter().map(|k| snap.get(k).expect("get")).collect();

        commit(&engine, &[("updated", Some("u1"))]);
        commit(&engine, &[("deleted", None), ("inserted", Some("i1"))]);
        commit(&engine, &[("updated", Some("u2")), ("deleted", Some("d2"))]);
        let again: Vec<Option<String>> = keys.iter().map(|k| get(&t, k)).collect();
        assert_eq!(again, first, "{isolation:?}: a reread changed");
        engine.gc();
        engine.checkpoint().expect("checkpoint");
        let third: Vec<Option<String>> = keys.iter().map(|k| get(&t, k)).collect();
        assert_eq!(third, first, "{isolation:?}: a reread changed after GC");
        let again_snap: Vec<_> = keys.iter().map(|k| snap.get(k).expect("get")).collect();
        assert_eq!(again_snap, first_snap, "snapshot reread changed");
        // A clone reads at the same ts, and keeps reading there once the
        // original is gone and GC has run.
        let clone = snap.clone();
        assert_eq!(clone.ts(), snap.ts());
        drop(snap);
        engine.gc();
        let from_clone: Vec<_> = keys.iter().map(|k| clone.get(k).expect("get")).collect();
        assert_eq!(from_clone, first_snap, "a cloned snapshot's reread changed");

        // The transaction still reads at its start, not at the latest state.
        let latest = engine.begin();
        assert_eq!(get(&latest, "updated").as_deref(), Some("u2"));
        assert_eq!(get(&latest, "inserted").as_deref(), Some("i1"));
    }
}

#[test]
fn scanning_a_range_twice_gives_the_same_answer_across_other_commits() {
    for isolation in BOTH {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = open(dir.path(), isolation);
        commit(
            &engine,
            &[
                ("r/1", Some("a")),
                ("r/3", Some("b")),
                ("r/5", Some("c")),
                ("s/1", Some("outside")),
            ],
        );
        let t = engine.begin();
        let snap = engine.snapshot();
        let first = rows(t.scan("r/".."r/~").expect("scan"));
        let first_prefix = rows(t.scan_prefix("r/").expect("scan"));
        let first_snap = rows(snap.scan("r/".."r/~").expect("scan"));
        assert_eq!(first, [row("r/1", "a"), row("r/3", "b"), row("r/5", "c")]);
        assert_eq!(first_prefix, first);
        assert_eq!(first_snap, first);

        // A phantom inserted in the range, one deleted, one updated, and
        // keys at the edges.
        commit(&engine, &[("r/2", Some("phantom")), ("r/3", None)]);
        commit(&engine, &[("r/5", Some("c2")), ("r/", Some("edge"))]);
        commit(
            &engine,
            &[("r/0", Some("x")), ("r/1", None), ("r/9", Some("y"))],
        );
        assert_eq!(
            rows(t.scan("r/".."r/~").expect("scan")),
            first,
            "{isolation:?}"
        );
        assert_eq!(rows(t.scan_prefix("r/").expect("scan")), first);
        assert_eq!(rows(snap.scan("r/".."r/~").expect("scan")), first);
        engine.gc();
        assert_eq!(rows(t.scan("r/".."r/~").expect("scan")), first, "after GC");
        assert_eq!(
            rows(snap.scan_prefix("r/").expect("scan")),
            first,
            "after GC"
        );

        let latest = engine.snapshot();
        assert_eq!(
            rows(latest.scan_prefix("r/").expect("scan")),
            [
                row("r/", "edge"),
                row("r/0", "x"),
                row("r/2", "phantom"),
                row("r/5", "c2"),
                row("r/9", "y"),
            ]
        );
    }
}

#[test]
fn get_reads_the_transactions_own_latest_write() {
    for isolation in BOTH {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = open(dir.path(), isolation);
        commit(&engine, &[("k", Some("stored")), ("gone", Some("stored"))]);
        let mut t = engine.begin();
        assert_eq!(get(&t, "k").as_deref(), Some("stored"));
        t.put("k", "mine").expect("put");
        assert_eq!(get(&t, "k").as_deref(), Some("mine"));
        t.put("k", "mine again").expect("put");
        assert_eq!(get(&t, "k").as_deref(), Some("mine again"));
        t.delete("gone").expect("delete");
        assert_eq!(get(&t, "gone"), None);
        t.put("gone", "back").expect("put");
        assert_eq!(get(&t, "gone").as_deref(), Some("back"));
        t.put("new", "1").expect("put");
        t.delete("new").expect("delete");
        assert_eq!(get(&t, "new"), None);
        // Another transaction's commit does not hide the own writes.
        commit(&engine, &[("k", Some("theirs")), ("other", Some("theirs"))]);
        assert_eq!(get(&t, "k").as_deref(), Some("mine again"));
        assert_eq!(get(&t, "other"), None);
        drop(t);
        let t = engine.begin();
        assert_eq!(get(&t, "k").as_deref(), Some("theirs"));
        assert_eq!(get(&t, "gone").as_deref(), Some("stored"));
    }
}

/// The scan a transaction should return: `stored` with `own` laid over,
/// restricted to `bounds`.
fn expected_scan(
    stored: &[(&str, &str)],
    own: &[(&str, Option<&str>)],
    bounds: (Bound<&str>, Bound<&str>),
) -> Rows {
    let mut state: BTreeMap<&str, &str> = stored.iter().copied().collect();
    for (k, v) in own {
        match v {
            Some(v) => state.insert(k, v),
            None => state.remove(k),
        };
    }
    state
        .range::<&str, _>(bounds)
        .map(|(k, v)| row(k, v))
        .collect()
}

#[test]
fn scan_merges_own_puts_and_deletes_in_key_order() {
    let stored = [("a", "1"), ("c", "3"), ("e", "5"), ("g", "7"), ("i", "9")];
    // New keys before, between and after the stored ones; an overwrite; a
    // delete of a stored key and of an absent one; a delete then re-put; a
    // put then delete of a new key.
    let own: [(&str, Option<&str>); 10] = [
        ("0", Some("first")),
        ("b", Some("between")),
        ("c", Some("overwritten")),
        ("e", None),
        ("f", None),
        ("g", None),
        ("g", Some("back")),
        ("h", Some("new")),
        ("h", None),
        ("z", Some("last")),
    ];
    for isolation in BOTH {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = open(dir.path(), isolation);
        let stored_writes: Vec<(&str, Option<&str>)> =
            stored.iter().map(|(k, v)| (*k, Some(*v))).collect();
        commit(&engine, &stored_writes);
        let mut t = engine.begin();
        for (k, v) in own {
            match v {
                Some(v) => t.put(k, v).expect("put"),
                None => t.delete(k).expect("delete"),
            }
        }
        // Others commit meanwhile: the scan shows the start state plus own.
        commit(
            &engine,
            &[("d", Some("theirs")), ("a", None), ("i", Some("theirs"))],
        );

        use Bound::{Excluded, Included, Unbounded};
        let cases: [(Bound<&str>, Bound<&str>); 8] = [
            (Unbounded, Unbounded),
            (Included("b"), Excluded("g")),
            (Included("b"), Included("g")),
            (Excluded("b"), Excluded("h")),
            (Excluded("c"), Unbounded),
            (Unbounded, Excluded("c")),
            (Unbounded, Included("c")),
            (Included("x"), Unbounded),
        ];
        for bounds in cases {
            let want = expected_scan(&stored, &own, bounds);
            let got = rows(t.scan(bounds).expect("scan"));
            assert_eq!(got, want, "{isolation:?} scan {bounds:?}");
            assert!(got.windows(2).all(|w| w[0].0 < w[1].0), "not in key order");
        }
        assert_eq!(
            rows(t.scan(..).expect("scan")),
            [
                row("0", "first"),
                row("a", "1"),
                row("b", "between"),
                row("c", "overwritten"),
                row("g", "back"),
                row("i", "9"),
                row("z", "last"),
            ]
        );
        assert_eq!(
            rows(t.scan("b".."g").expect("scan")),
            expected_scan(&stored, &own, (Included("b"), Excluded("g")))
        );
        assert_eq!(
            rows(t.scan("b"..="g").expect("scan")),
            expected_scan(&stored, &own, (Included("b"), Included("g")))
        );
        assert_eq!(
            rows(t.scan("c"..).expect("scan")),
            expected_scan(&stored, &own, (Included("c"), Unbounded))
        );
        assert_eq!(
            rows(t.scan(..="c").expect("scan")),
            expected_scan(&stored, &own, (Unbounded, Included("c")))
        );
        assert!(rows(t.scan("b".."b").expect("scan")).is_empty());
        assert_eq!(
            rows(t.scan("b"..="b").expect("scan")),
            [row("b", "between")]
        );
        // scan_prefix merges too.
        t.put("g/1", "child").expect("put");
        assert_eq!(
            rows(t.scan_prefix("g").expect("scan")),
            [row("g", "back"), row("g/1", "child")]
        );
        // The others wrote none of its keys, but keys it scanned.
        match (isolation, t.commit()) {
            (Isolation::Snapshot, Ok(_)) | (Isolation::Serializable, Err(Error::Conflict)) => {}
            (_, other) => panic!("{isolation:?}: commit gave {other:?}"),
        }
    }
}

#[test]
fn scan_with_own_writes_across_many_keys_stays_in_key_order() {
    // Enough stored keys that every index shard is read in several chunks,
    // with own writes interleaved everywhere.
    const N: u32 = 3_000;
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), Isolation::Snapshot);
    let mut model: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut t = engine.begin();
    for i in (0..N).step_by(2) {
        let k = format!("k{i:05}").into_bytes();
        t.put(&k, b"stored").expect("put");
        model.insert(k, b"stored".to_vec());
    }
    t.commit().expect("commit");
    let mut t = engine.begin();
    for i in 0..N {
        let k = format!("k{i:05}").into_bytes();
        match i % 7 {
            0 | 3 => {
                t.put(&k, b"own").expect("put");
                model.insert(k, b"own".to_vec());
            }
            5 => {
                t.delete(&k).expect("delete");
                model.remove(&k);
            }
            _ => {}
        }
    }
    let want: Rows = model.into_iter().collect();
    let first = rows(t.scan(..).expect("scan"));
    assert_eq!(first.len(), want.len());
    assert!(first == want, "merged scan differs from the model");
    commit(&engine, &[("k00001", Some("theirs")), ("k00002", None)]);
    assert!(
        rows(t.scan(..).expect("scan")) == want,
        "second scan differs"
    );
}

#[test]
fn an_empty_or_reversed_range_yields_nothing_even_with_own_writes() {
    // A range that holds no key is valid input: like a snapshot's scan, a
    // transaction's scan of it yields nothing, with or without own writes
    // (it must not panic: "nothing in the library panics on bad input").
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), Isolation::Snapshot);
    commit(&engine, &[("b", Some("1")), ("g", Some("2"))]);
    let snap = engine.snapshot();
    assert!(rows(snap.scan("g".."b").expect("scan")).is_empty());
    let mut t = engine.begin();
    assert!(rows(t.scan("g".."b").expect("scan")).is_empty());
    t.put("c", "own").expect("put");
    assert!(rows(t.scan("g".."b").expect("scan")).is_empty());
    assert!(rows(t.scan("g"..="b").expect("scan")).is_empty());
    let both_excluded = (Bound::Excluded("c"), Bound::Excluded("c"));
    assert!(rows(t.scan(both_excluded).expect("scan")).is_empty());
}
