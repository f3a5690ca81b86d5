use mvledger::{Engine, Options, SyncMode};

#[test]
fn put_commit_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let e = Engine::open(dir.path(), Options::default()).unwrap();
        for i in 0..100u32 {
            let mut t = e.begin();
            t.put(i.to_be_bytes(), format!("v{i}")).unwrap();
            t.commit().unwrap();
        }
        let mut t = e.begin();
        t.delete(5u32.to_be_bytes()).unwrap();
        t.commit().unwrap();
        let s = e.snapshot();
        assert_eq!(s.scan(..).unwrap().count(), 99);
        e.checkpoint().unwrap();
        let mut t = e.begin();
        t.put(b"after", b"ckpt").unwrap();
        t.commit().unwrap();
        println!("{:?}", e.stats());
    }
    let e = Engine::open(
        dir.path(),
        Options {
            sync: SyncMode::Never,
            ..Options::default()
        },
    )
    .unwrap();
    let s = e.snapshot();
    assert_eq!(s.get(b"after").unwrap().as_deref(), Some(&b"ckpt"[..]));
    assert_eq!(s.get(5u32.to_be_bytes()).unwrap(), None);
    assert_eq!(
        s.get(7u32.to_be_bytes()).unwrap().as_deref(),
        Some(&b"v7"[..])
    );
    assert_eq!(s.scan(..).unwrap().count(), 100);
    println!("{:?}", e.stats());
}

/// `Snapshot::get_with` lends the value `get` would copy: the same answer
/// for a present, a deleted and an absent key, at the snapshot's ts (a
/// later commit is not seen).
#[test]
fn get_with_lends_what_get_returns_at_the_snapshot() {
    let dir = tempfile::tempdir().expect("dir");
    let engine = Engine::open(dir.path(), Options::default()).expect("open");
    let mut txn = engine.begin();
    txn.put(b"kept", b"one").expect("put");
    txn.put(b"gone", b"two").expect("put");
    txn.commit().expect("commit");
    let mut txn = engine.begin();
    txn.delete(b"gone").expect("delete");
    txn.commit().expect("commit");
    let snap = engine.snapshot();
    let mut txn = engine.begin();
    txn.put(b"kept", b"three").expect("put");
    txn.put(b"later", b"four").expect("put");
    txn.commit().expect("commit");
    for key in [&b"kept"[..], b"gone", b"later", b"never"] {
        let lent = snap
            .get_with(key, |v| v.map(<[u8]>::to_vec))
            .expect("get_with");
        let copied = snap.get(key).expect("get").map(|v| v.to_vec());
        assert_eq!(lent, copied, "{key:?}");
    }
    let kept = snap.get_with(b"kept", |v| v.map(<[u8]>::to_vec));
    assert_eq!(kept.expect("get_with"), Some(b"one".to_vec()));
    assert!(!snap.get_with(b"later", |v| v.is_some()).expect("get_with"));
    let now = engine.snapshot();
    let kept = now.get_with(b"kept", |v| v.map(<[u8]>::to_vec));
    assert_eq!(kept.expect("get_with"), Some(b"three".to_vec()));
}
