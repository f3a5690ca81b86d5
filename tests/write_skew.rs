//! Write skew and phantoms (ARCHITECTURE.md invariant 2; issue 2,
//! behaviour 1).
//!
//! With `Isolation::Serializable` a transaction's reads are validated at
//! commit: of the classic write-skew pair (each reads both keys, writes
//! one) at most one commits, and a transaction that scanned a range gets
//! `Error::Conflict` if another commits a new key into (or deletes or
//! updates a key of) that range after it began. The same schedules under
//! `Isolation::Snapshot` let both commit: that documents the anomaly that
//! `Serializable` removes (snapshot isolation only stops write-write
//! conflicts). Serializable validation is precise to what was read: commits
//! outside the keys and ranges a transaction read do not make it conflict.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use mvledger::{Engine, Error, Isolation, Options, SyncMode, Transaction};

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

fn on_call(t: &Transaction, doctor: &str) -> bool {
    t.get(doctor).expect("get").as_deref() == Some(&b"on"[..])
}

/// The classic write skew: two doctors on call, each may go off call if
/// the other is still on. Each transaction reads both keys and writes its
/// own. Returns the two commit results and whether anyone is still on call.
fn doctors_schedule(isolation: Isolation) -> (mvledger::Result<u64>, mvledger::Result<u64>, bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), isolation);
    commit(&engine, &[("alice", Some("on")), ("bob", Some("on"))]);
    let mut t1 = engine.begin();
    let mut t2 = engine.begin();
    assert!(on_call(&t1, "alice") && on_call(&t1, "bob"));
    assert!(on_call(&t2, "alice") && on_call(&t2, "bob"));
    t1.put("alice", "off").expect("put");
    t2.put("bob", "off").expect("put");
    let r1 = t1.commit();
    let r2 = t2.commit();
    let snap = engine.snapshot();
    let anyone = ["alice", "bob"]
        .iter()
        .any(|d| snap.get(d).expect("get").as_deref() == Some(&b"on"[..]));
    (r1, r2, anyone)
}

#[test]
fn serializable_lets_at_most_one_of_the_write_skew_pair_commit() {
    let (r1, r2, anyone_on_call) = doctors_schedule(Isolation::Serializable);
    assert!(r1.is_ok(), "the first committer wins: {r1:?}");
    assert!(matches!(r2, Err(Error::Conflict)), "got {r2:?}");
    assert!(anyone_on_call, "write skew: nobody is on call");
}

#[test]
fn snapshot_isolation_lets_both_of_the_write_skew_pair_commit() {
    // The anomaly Serializable removes: write sets are disjoint, so
    // first-committer-wins lets both through and the rule "someone is on
    // call" that each checked is broken.
    let (r1, r2, anyone_on_call) = doctors_schedule(Isolation::Snapshot);
    assert!(r1.is_ok() && r2.is_ok(), "{r1:?} {r2:?}");
    assert!(!anyone_on_call);
}

/// The phantom schedule: each transaction scans the shift range, sees one
/// doctor, and adds another; the rule is "at most two per shift". Returns
/// both commit results and the final number in the range.
fn phantom_schedule(isolation: Isolation) -> (mvledger::Result<u64>, mvledger::Result<u64>, usize) {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), isolation);
    commit(
        &engine,
        &[("shift/alice", Some("on")), ("other", Some("x"))],
    );
    let mut t1 = engine.begin();
    let mut t2 = engine.begin();
    assert_eq!(t1.scan_prefix("shift/").expect("scan").count(), 1);
    assert_eq!(t2.scan("shift/".."shift0").expect("scan").count(), 1);
    t1.put("shift/bob", "on").expect("put");
    t2.put("shift/carol", "on").expect("put");
    let r1 = t1.commit();
    let r2 = t2.commit();
    let n = engine
        .snapshot()
        .scan_prefix("shift/")
        .expect("scan")
        .count();
    (r1, r2, n)
}

#[test]
fn serializable_stops_the_phantom_through_scan() {
    let (r1, r2, n) = phantom_schedule(Isolation::Serializable);
    assert!(r1.is_ok(), "{r1:?}");
    assert!(matches!(r2, Err(Error::Conflict)), "got {r2:?}");
    assert_eq!(n, 2);
}

#[test]
fn snapshot_isolation_lets_the_phantom_through() {
    let (r1, r2, n) = phantom_schedule(Isolation::Snapshot);
    assert!(r1.is_ok() && r2.is_ok(), "{r1:?} {r2:?}");
    assert_eq!(n, 3, "both inserts landed: the rule of two is broken");
}

#[test]
fn a_scanned_range_conflicts_with_any_later_commit_into_it() {
    type Change = &'static [(&'static str, Option<&'static str>)];
    let changes: [(&str, Change); 5] = [
        ("insert", &[("r/2", Some("new"))]),
        ("delete", &[("r/3", None)]),
        ("update", &[("r/1", Some("changed"))]),
        ("insert at the lower bound", &[("r/", Some("edge"))]),
        (
            "insert at the inclusive upper bound",
            &[("r/9", Some("edge"))],
        ),
    ];
    for (name, change) in changes {
        let dir = tempfile::tempdir().expect("tempdir");
        let engine = open(dir.path(), Isolation::Serializable);
        commit(&engine, &[("r/1", Some("a")), ("r/3", Some("b"))]);
        let mut t = engine.begin();
        assert_eq!(t.scan("r/"..="r/9").expect("scan").count(), 2);
        t.put("elsewhere", "x").expect("put");
        commit(&engine, change);
        let result = t.commit();
        assert!(
            matches!(result, Err(Error::Conflict)),
            "{name}: a commit into the scanned range gave {result:?}"
        );
        assert_eq!(
            engine.snapshot().get("elsewhere").expect("get"),
            None,
            "{name}: the conflicting transaction was applied"
        );
    }
}

#[test]
fn reading_an_absent_key_conflicts_with_a_later_insert_of_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), Isolation::Serializable);
    let mut t = engine.begin();
    assert_eq!(t.get("claim/42").expect("get"), None);
    t.put("claims/count", "1").expect("put");
    commit(&engine, &[("claim/42", Some("someone else"))]);
    assert!(matches!(t.commit(), Err(Error::Conflict)));
}

#[test]
fn serializable_does_not_conflict_on_commits_outside_what_was_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), Isolation::Serializable);
    commit(
        &engine,
        &[("r/1", Some("a")), ("s/1", Some("b")), ("k", Some("c"))],
    );
    let mut t = engine.begin();
    assert_eq!(t.scan("r/".."r0").expect("scan").count(), 1);
    assert!(t.get("k").expect("get").is_some());
    t.put("mine", "x").expect("put");
    // Just outside the range's exclusive end, a neighbouring prefix, and an
    // unread key.
    commit(
        &engine,
        &[
            ("r0", Some("out")),
            ("s/2", Some("out")),
            ("j", Some("out")),
        ],
    );
    t.commit()
        .expect("no commit touched the keys or ranges it read");
}

#[test]
fn a_read_only_serializable_transaction_commits_at_its_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), Isolation::Serializable);
    commit(&engine, &[("a", Some("1"))]);
    let t = engine.begin();
    assert!(t.get("a").expect("get").is_some());
    assert_eq!(t.scan(..).expect("scan").count(), 1);
    commit(&engine, &[("a", Some("2"))]);
    let start = t.start_ts();
    // It wrote nothing, so there is nothing to validate: its reads are a
    // consistent snapshot that serializes at its start ts.
    assert_eq!(t.commit().expect("read-only commit"), start);
}

#[test]
fn serializable_commit_after_a_reversed_range_scan_does_not_panic() {
    // A scan of a range that holds no key (start after end) is valid input
    // and yields nothing; validating it at commit must not panic either.
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), Isolation::Serializable);
    commit(&engine, &[("a", Some("1")), ("z", Some("2"))]);
    let mut t = engine.begin();
    assert_eq!(t.scan("z".."a").expect("scan").count(), 0);
    t.put("m", "x").expect("put");
    t.commit().expect("nothing it read changed");
}

/// Threads run the on-call rule on groups of doctors under Serializable:
/// one kind takes a doctor off call if at least two in the group are on,
/// the other puts a random doctor back on. In every snapshot (and at the
/// end) every group has at least one doctor on call.
#[test]
fn concurrent_on_call_rule_holds_under_serializable() {
    const GROUPS: usize = 4;
    const DOCTORS: usize = 3;
    const ROUNDS: u64 = 150;
    let dir = tempfile::tempdir().expect("tempdir");
    let engine = open(dir.path(), Isolation::Serializable);
    let doctor = |g: usize, d: usize| format!("group/{g}/doctor/{d}");
    let mut t = engine.begin();
    for g in 0..GROUPS {
        for d in 0..DOCTORS {
            t.put(doctor(g, d), "on").expect("put");
        }
    }
    t.commit().expect("commit");
    let offs = AtomicU64::new(0);
    let check_snapshot = |engine: &Engine| {
        let snap = engine.snapshot();
        for g in 0..GROUPS {
            let on = snap
                .scan_prefix(format!("group/{g}/"))
                .expect("scan")
                .filter(|(_, v)| &v[..] == b"on")
                .count();
            assert!(on >= 1, "group {g} has nobody on call at ts {}", snap.ts());
        }
    };
    std::thread::scope(|s| {
        for w in 0..3u64 {
            let (engine, offs) = (&engine, &offs);
            s.spawn(move || {
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ (w + 1);
                let mut next = |n: usize| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % n as u64) as usize
                };
                for _ in 0..ROUNDS {
                    let g = next(GROUPS);
                    let d = next(DOCTORS);
                    loop {
                        let mut t = engine.begin();
                        if w == 2 {
                            // Blindly back on call: a write that can only help.
                            t.put(doctor(g, d), "on").expect("put");
                        } else {
                            // Half by get, half by scan.
                            let on = if d.is_multiple_of(2) {
                                (0..DOCTORS)
                                    .filter(|&i| {
                                        t.get(doctor(g, i)).expect("get").as_deref()
                                            == Some(&b"on"[..])
                                    })
                                    .count()
                            } else {
                                t.scan_prefix(format!("group/{g}/"))
                                    .expect("scan")
                                    .filter(|(_, v)| &v[..] == b"on")
                                    .count()
                            };
                            if on < 2 {
                                break;
                            }
                            std::thread::yield_now();
                            t.put(doctor(g, d), "off").expect("put");
                        }
                        match t.commit() {
                            Ok(_) => {
                                if w != 2 {
                                    offs.fetch_add(1, Ordering::Relaxed);
                                }
                                break;
                            }
                            Err(Error::Conflict) => {}
                            Err(e) => panic!("commit: {e}"),
                        }
                    }
                }
            });
        }
        s.spawn(|| {
            for _ in 0..200 {
                check_snapshot(&engine);
                std::thread::yield_now();
            }
        });
    });
    check_snapshot(&engine);
    assert!(offs.load(Ordering::Relaxed) > 0);
}
