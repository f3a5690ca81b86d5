//! `Ledger::submit_transfers_with`: a layer's own keys commit in the same
//! redo record as the ledger batch, all or nothing, and come back on
//! reopen (replayed from the record), in a namespace that cannot reach a
//! ledger record.

mod common;

use mvledger::{
    AccountFilter, AccountFilterFlags, CreateTransferResult, Error, Ledger, LedgerOptions,
};

use common::{account, transfer};

fn open(dir: &std::path::Path) -> Ledger {
    Ledger::open(dir, LedgerOptions::default()).unwrap()
}

/// `open`, with accounts 1 and 2 created.
fn open_with_two_accounts(dir: &std::path::Path) -> Ledger {
    let l = open(dir);
    l.create_accounts(&[
        account(1, Default::default()),
        account(2, Default::default()),
    ])
    .unwrap();
    l
}

#[test]
fn extra_writes_commit_with_the_batch_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let l = open_with_two_accounts(dir.path());
        let (reply, seen) = l
            .submit_transfers_with(&[transfer(10, 1, 2, 5)], |results, extra| {
                assert_eq!(results, [CreateTransferResult::Ok]);
                extra.put(b"e-one", b"first")?;
                extra.put(b"e-two", b"second")?;
                extra.delete(b"e-two")?;
                extra.put(b"f", b"other family")?;
                // Reads see this call's own writes.
                Ok((extra.get(b"e-one")?, extra.scan_prefix(b"e", 10)?))
            })
            .unwrap();
        assert_eq!(reply.results, [CreateTransferResult::Ok]);
        assert_eq!(seen.0.as_deref(), Some(&b"first"[..]));
        assert_eq!(seen.1.len(), 1);
        assert_eq!(
            &seen.1[0].0[..],
            b"e-one",
            "keys come back without the namespace"
        );
        // An empty call still commits what `f` writes.
        l.submit_transfers_with(&[], |_, extra| extra.put(b"e-three", b"3"))
            .unwrap();
    }
    let l = open(dir.path());
    let snap = l.snapshot();
    assert_eq!(
        snap.extra_get(b"e-one").unwrap().as_deref(),
        Some(&b"first"[..])
    );
    assert_eq!(snap.extra_get(b"e-two").unwrap(), None);
    let e: Vec<Vec<u8>> = snap
        .extra_scan_prefix(b"e")
        .unwrap()
        .into_iter()
        .map(|(k, _)| k.to_vec())
        .collect();
    assert_eq!(e, vec![b"e-one".to_vec(), b"e-three".to_vec()]);
    assert_eq!(
        snap.extra_scan_prefix(b"").unwrap().len(),
        3,
        "e-one, e-three, f"
    );
    assert_eq!(l.lookup_transfers(&[10]).unwrap().len(), 1);
}

#[test]
fn a_failing_f_writes_nothing_of_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let l = open_with_two_accounts(dir.path());
    let r = l.submit_transfers_with(&[transfer(10, 1, 2, 5)], |_, extra| {
        extra.put(b"k", b"v")?;
        Err::<(), _>(Error::Conflict)
    });
    assert!(matches!(r, Err(Error::Conflict)));
    assert!(l.lookup_transfers(&[10]).unwrap().is_empty());
    assert_eq!(l.lookup_accounts(&[1]).unwrap()[0].debits_posted, 0);
    assert_eq!(l.snapshot().extra_get(b"k").unwrap(), None);
    assert!(history(&l, 1).is_empty());
    // The same transfer goes through afterwards: its id was not spent,
    // and the accounts' histories show it once (the failed call left no
    // entry in the transfer index).
    let rs = l.create_transfers(&[transfer(10, 1, 2, 5)]).unwrap();
    assert_eq!(rs, [CreateTransferResult::Ok]);
    assert_eq!(history(&l, 1), [10]);
    assert_eq!(history(&l, 2), [10]);
}

/// The ids of `account`'s transfers, oldest first.
fn history(l: &Ledger, account: u128) -> Vec<u128> {
    let filter = AccountFilter {
        account_id: account,
        limit: 100,
        flags: AccountFilterFlags::DEBITS | AccountFilterFlags::CREDITS,
        ..AccountFilter::default()
    };
    let found = l.get_account_transfers(filter).unwrap();
    found.iter().map(|t| t.id).collect()
}

#[test]
fn extra_keys_are_checked_and_cannot_reach_ledger_records() {
    let dir = tempfile::tempdir().unwrap();
    let l = open(dir.path());
    l.create_accounts(&[account(1, Default::default())])
        .unwrap();
    for bad in [&b""[..], &[0x80, 1][..], &[b'x'; 256][..]] {
        let r = l.submit_transfers_with(&[], |_, extra| extra.put(bad, b"v"));
        assert!(
            matches!(r, Err(Error::InvalidArgument(_))),
            "{bad:?}: {r:?}"
        );
    }
    // An extra key spelled like an account's key is not the account.
    let mut account_key = vec![b'a'];
    account_key.extend_from_slice(&1u128.to_be_bytes());
    l.submit_transfers_with(&[], |_, extra| extra.delete(&account_key))
        .unwrap();
    drop(l);
    let l = open(dir.path());
    assert_eq!(l.lookup_accounts(&[1]).unwrap().len(), 1);
}

/// A ledger's directory opened as a bare engine: its log holds records
/// only the ledger can replay. That is a clear `InvalidArgument` (the
/// wrong call), not `Corruption` (nothing is damaged), and it changes
/// nothing: the ledger opens afterwards with everything in it, even when
/// the engine was asked to repair.
#[test]
fn a_ledger_directory_opened_as_an_engine_is_the_wrong_call_not_damage() {
    use mvledger::{Engine, Options};
    let dir = tempfile::tempdir().unwrap();
    {
        let l = open_with_two_accounts(dir.path());
        assert_eq!(
            l.create_transfers(&[transfer(10, 1, 2, 5)]).unwrap(),
            [CreateTransferResult::Ok]
        );
    }
    for repair in [false, true] {
        let options = Options {
            repair,
            ..Options::default()
        };
        match Engine::open(dir.path(), options) {
            Err(Error::InvalidArgument(why)) => {
                assert!(why.contains("Ledger::open"), "{why}");
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }
    let l = open(dir.path());
    assert_eq!(l.lookup_transfers(&[10]).unwrap().len(), 1);
    assert_eq!(l.lookup_accounts(&[2]).unwrap()[0].credits_posted, 5);
}

/// The other way round: a plain engine's keys are no ledger's records
/// (one shaped like an account key would show as an account with money
/// no transfer moved). `Ledger::open` refuses the directory and leaves it
/// as it was; so does `Cluster::open` for a shard's.
#[test]
fn an_engine_directory_opened_as_a_ledger_is_refused_and_left_alone() {
    use mvledger::ledger::{RECORD_BYTES, encode_account};
    use mvledger::{Engine, Options};
    let dir = tempfile::tempdir().unwrap();
    let mut forged = [0u8; RECORD_BYTES];
    encode_account(
        &mvledger::Account {
            credits_posted: 1_000_000,
            ..account(7, Default::default())
        },
        &mut forged,
    );
    let mut key = vec![b'a'];
    key.extend_from_slice(&7u128.to_be_bytes());
    let keys = |dir: &std::path::Path| -> Vec<_> {
        let e = Engine::open(dir, Options::default()).unwrap();
        let snap = e.snapshot();
        snap.scan(..).unwrap().collect()
    };
    {
        let e = Engine::open(dir.path(), Options::default()).unwrap();
        let mut t = e.begin();
        t.put(&key, forged).unwrap();
        t.put(b"user", b"data").unwrap();
        t.commit().unwrap();
    }
    let before = keys(dir.path());
    for _ in 0..2 {
        match Ledger::open(dir.path(), LedgerOptions::default()) {
            Err(Error::InvalidArgument(why)) => {
                assert!(why.contains("no ledger wrote"), "{why}");
                assert!(why.contains("Engine::open"), "{why}");
            }
            other => panic!("expected InvalidArgument, got {other:?}"),
        }
    }
    assert_eq!(
        keys(dir.path()),
        before,
        "the refused open changed the keys"
    );

    // An empty engine directory is a new ledger's, and from then on the
    // ledger's alone.
    let empty = tempfile::tempdir().unwrap();
    drop(Engine::open(empty.path(), Options::default()).unwrap());
    drop(open_with_two_accounts(empty.path()));
    assert!(matches!(
        Engine::open(empty.path(), Options::default()),
        Err(Error::InvalidArgument(_))
    ));
}

/// `Engine::open` refuses a ledger directory also once checkpoints have
/// taken every logical record out of its log (the stamp says whose it
/// is, where the records no longer can).
#[test]
fn a_checkpointed_ledger_directory_opened_as_an_engine_is_refused() {
    use mvledger::{Engine, Options};
    let dir = tempfile::tempdir().unwrap();
    {
        let l = open_with_two_accounts(dir.path());
        l.create_transfers(&[transfer(10, 1, 2, 5)]).unwrap();
        l.checkpoint().unwrap();
        l.checkpoint().unwrap();
    }
    match Engine::open(dir.path(), Options::default()) {
        Err(Error::InvalidArgument(why)) => assert!(why.contains("belongs to a ledger"), "{why}"),
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
    assert_eq!(open(dir.path()).lookup_transfers(&[10]).unwrap().len(), 1);
}

/// A directory stamped by one layer is refused by another, and the stamp
/// key cannot be written through the public API of a plain engine.
#[test]
fn a_directory_belongs_to_one_layer_and_its_stamp_is_reserved() {
    use mvledger::{Batch, Engine, LAYER_KEY, Options, Replay};
    #[derive(Debug)]
    struct Other;
    impl Replay for Other {
        fn replay(&self, _: &mut Batch<'_>, _: &[u8]) -> mvledger::Result<()> {
            Ok(())
        }
        fn layer(&self) -> &'static str {
            "other layer"
        }
    }
    let dir = tempfile::tempdir().unwrap();
    drop(open_with_two_accounts(dir.path()));
    let other = Options {
        replay: Some(std::sync::Arc::new(Other)),
        ..Options::default()
    };
    match Engine::open(dir.path(), other) {
        Err(Error::InvalidArgument(why)) => {
            assert!(
                why.contains("belongs to a ledger, not a other layer"),
                "{why}"
            );
        }
        other => panic!("expected InvalidArgument, got {other:?}"),
    }

    let plain = tempfile::tempdir().unwrap();
    let e = Engine::open(plain.path(), Options::default()).unwrap();
    let mut t = e.begin();
    assert!(matches!(
        t.put(LAYER_KEY, b"ledger"),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        t.delete(LAYER_KEY),
        Err(Error::InvalidArgument(_))
    ));
    t.commit().unwrap();
    let applied = e.apply(|b| b.put(LAYER_KEY, b"ledger"));
    assert!(matches!(applied, Err(Error::InvalidArgument(_))));
    assert_eq!(e.snapshot().get(LAYER_KEY).unwrap(), None);
    drop(e);
    assert!(Ledger::open(plain.path(), LedgerOptions::default()).is_ok());
}

/// `Ledger::engine` reads and maintains the storage core, but has no
/// writes: a ledger's records change by its rules alone.
#[test]
fn the_ledgers_engine_handle_reads_and_maintains() {
    let dir = tempfile::tempdir().unwrap();
    let l = open_with_two_accounts(dir.path());
    l.create_transfers(&[transfer(10, 1, 2, 5)]).unwrap();
    let e = l.engine();
    e.sync().unwrap();
    e.checkpoint().unwrap();
    e.gc();
    assert!(e.stats().keys > 0);
    assert!(e.snapshot().scan(..).unwrap().count() > 0);
    assert!(e.poisoned_by().is_none());
    assert_eq!(e.dir(), dir.path());
}
