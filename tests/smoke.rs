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
