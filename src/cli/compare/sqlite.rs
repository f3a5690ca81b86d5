//! SQLite (rusqlite, the bundled library) as a ledger.
//!
//! Idiomatic best setup for the durability of `--sync`:
//! - WAL journal mode (appends to the log, readers never block the
//!   writer); `synchronous=FULL` for `--sync always` (the WAL is synced at
//!   every commit), `NORMAL` for `interval` (synced at checkpoints only: a
//!   crash may lose the last commits, with no 10 ms bound), `OFF` for
//!   `never`. A final `wal_checkpoint(FULL)` with `synchronous=FULL` makes
//!   everything durable at the end, untimed.
//! - Rowid tables keyed by `INTEGER PRIMARY KEY` (the fastest SQLite key;
//!   the workload's ids fit in i64, a real u128 id would need a 16-byte
//!   BLOB key in a WITHOUT ROWID table, which is slower); the transfer's
//!   columns the workload fills (its user data, pending id and timeout are
//!   0 here and left out: less to write than mvledger's 128-byte record).
//! - Prepared statements, cached (`prepare_cached`), one `BEGIN IMMEDIATE`
//!   transaction per batch, a 1 GiB page cache (redb's default) so that
//!   reads come from memory.
//! - One connection for every thread, behind a mutex: SQLite admits one
//!   writer at a time anyway, and a connection per thread would make the
//!   others poll the file lock with `busy_timeout` sleeps, which is
//!   slower. The threads submit concurrently; the mutex serializes them.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use mvledger::{Account, CreateTransferResult, Transfer};
use parking_lot::Mutex;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{Balances, Peer, batch_timestamp, peer_fail, settle};
use crate::SyncFlag;
use crate::cli::bench::Failure;

/// The page cache, in KiB (SQLite's negative `cache_size`).
const CACHE_KIB: i64 = 1 << 20;

/// The SQLite peer.
pub struct Sqlite {
    connection: Mutex<Connection>,
    sync: SyncFlag,
    syncs: AtomicU64,
}

impl Sqlite {
    /// Creates the database `ledger.sqlite3` in `dir` (new).
    pub fn open(dir: &Path, sync: SyncFlag) -> Result<Sqlite, Failure> {
        let path = dir.join("ledger.sqlite3");
        let connection = Connection::open(&path)
            .map_err(peer_fail(format!("sqlite: opening {}", path.display())))?;
        let synchronous = match sync {
            SyncFlag::Always => "FULL",
            SyncFlag::Interval => "NORMAL",
            SyncFlag::Never => "OFF",
        };
        connection
            .execute_batch(&format!(
                "PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = {synchronous};
                 PRAGMA cache_size = -{CACHE_KIB};
                 CREATE TABLE accounts (
                     id INTEGER PRIMARY KEY,
                     flags INTEGER NOT NULL,
                     debits_posted INTEGER NOT NULL,
                     credits_posted INTEGER NOT NULL
                 );
                 CREATE TABLE transfers (
                     id INTEGER PRIMARY KEY,
                     debit_account_id INTEGER NOT NULL,
                     credit_account_id INTEGER NOT NULL,
                     amount INTEGER NOT NULL,
                     ledger INTEGER NOT NULL,
                     code INTEGER NOT NULL,
                     flags INTEGER NOT NULL,
                     timestamp INTEGER NOT NULL
                 );"
            ))
            .map_err(peer_fail("sqlite: setting up"))?;
        let mode: String = connection
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .map_err(peer_fail("sqlite: reading journal_mode"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Failure::new(format!(
                "sqlite: journal_mode is {mode}, not WAL"
            )));
        }
        Ok(Sqlite {
            connection: Mutex::new(connection),
            sync,
            syncs: AtomicU64::new(0),
        })
    }
}

/// A u128 as SQLite's i64; the workload's ids and amounts fit.
fn int(x: u128) -> Result<i64, Failure> {
    i64::try_from(x).map_err(|_| Failure::new(format!("sqlite: {x} does not fit in an INTEGER")))
}

/// An i64 read back as u128 (balances are never negative).
fn uint(x: i64) -> Result<u128, Failure> {
    u128::try_from(x).map_err(|_| Failure::new(format!("sqlite: negative balance {x}")))
}

impl Peer for Sqlite {
    fn setup(&self) -> String {
        let synchronous = match self.sync {
            SyncFlag::Always => "FULL",
            SyncFlag::Interval => "NORMAL",
            SyncFlag::Never => "OFF",
        };
        format!(
            "WAL, synchronous={synchronous}, prepared statements, one transaction per batch, \
             one connection behind a mutex"
        )
    }

    fn create_accounts(&self, accounts: &[Account]) -> Result<(), Failure> {
        let mut connection = self.connection.lock();
        let txn = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(peer_fail("sqlite: begin"))?;
        {
            let mut insert = txn
                .prepare_cached(
                    "INSERT INTO accounts (id, flags, debits_posted, credits_posted)
                     VALUES (?1, ?2, 0, 0)",
                )
                .map_err(peer_fail("sqlite: prepare"))?;
            for a in accounts {
                insert
                    .execute(params![int(a.id)?, a.flags.bits()])
                    .map_err(peer_fail(format!("sqlite: inserting account {}", a.id)))?;
            }
        }
        txn.commit().map_err(peer_fail("sqlite: commit"))
    }

    fn create_transfers(
        &self,
        transfers: &[Transfer],
        results: &mut Vec<CreateTransferResult>,
    ) -> Result<(), Failure> {
        let timestamp = batch_timestamp();
        let mut connection = self.connection.lock();
        let txn = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(peer_fail("sqlite: begin"))?;
        {
            let prepare = |sql| {
                txn.prepare_cached(sql)
                    .map_err(peer_fail("sqlite: prepare"))
            };
            let mut exists = prepare("SELECT 1 FROM transfers WHERE id = ?1")?;
            let mut account =
                prepare("SELECT flags, debits_posted, credits_posted FROM accounts WHERE id = ?1")?;
            let mut insert = prepare(
                "INSERT INTO transfers (id, debit_account_id, credit_account_id, amount,
                     ledger, code, flags, timestamp)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            let mut update = prepare(
                "UPDATE accounts SET debits_posted = ?2, credits_posted = ?3 WHERE id = ?1",
            )?;
            let mut read = |id: u128| -> Result<Option<Balances>, Failure> {
                let row = account
                    .query_row([int(id)?], |row| {
                        Ok((
                            row.get::<_, u16>(0)?,
                            row.get::<_, i64>(1)?,
                            row.get::<_, i64>(2)?,
                        ))
                    })
                    .optional()
                    .map_err(peer_fail(format!("sqlite: reading account {id}")))?;
                row.map(|(flags, debits, credits)| {
                    Ok(Balances {
                        flags,
                        debits_posted: uint(debits)?,
                        credits_posted: uint(credits)?,
                    })
                })
                .transpose()
            };
            for (i, t) in transfers.iter().enumerate() {
                let id = int(t.id)?;
                let found = exists
                    .exists([id])
                    .map_err(peer_fail(format!("sqlite: looking up transfer {}", t.id)))?;
                if found {
                    results.push(CreateTransferResult::Exists);
                    continue;
                }
                let stamp = u64::try_from(u128::from(timestamp) + i as u128).unwrap_or(u64::MAX);
                let (result, accepted) = settle(t, stamp, &mut read)?;
                results.push(result);
                let Some((stamped, debit, credit)) = accepted else {
                    continue;
                };
                insert
                    .execute(params![
                        id,
                        int(t.debit_account_id)?,
                        int(t.credit_account_id)?,
                        int(t.amount)?,
                        t.ledger,
                        t.code,
                        t.flags.bits(),
                        int(u128::from(stamped.timestamp))?,
                    ])
                    .map_err(peer_fail(format!("sqlite: inserting transfer {}", t.id)))?;
                for (account_id, b) in [(t.debit_account_id, debit), (t.credit_account_id, credit)]
                {
                    update
                        .execute(params![
                            int(account_id)?,
                            int(b.debits_posted)?,
                            int(b.credits_posted)?
                        ])
                        .map_err(peer_fail(format!("sqlite: updating account {account_id}")))?;
                }
            }
        }
        txn.commit().map_err(peer_fail("sqlite: commit"))?;
        if self.sync == SyncFlag::Always {
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), Failure> {
        let connection = self.connection.lock();
        connection
            .execute_batch("PRAGMA synchronous = FULL; PRAGMA wal_checkpoint(FULL);")
            .map_err(peer_fail("sqlite: final checkpoint"))
    }

    fn accounts(&self) -> Result<Vec<Account>, Failure> {
        let connection = self.connection.lock();
        let mut select = connection
            .prepare("SELECT id, flags, debits_posted, credits_posted FROM accounts ORDER BY id")
            .map_err(peer_fail("sqlite: prepare"))?;
        let rows = select
            .query_map([], |row| {
                Ok((
                    row.get::<_, i64>(0)?,
                    row.get::<_, u16>(1)?,
                    row.get::<_, i64>(2)?,
                    row.get::<_, i64>(3)?,
                ))
            })
            .map_err(peer_fail("sqlite: reading accounts"))?;
        let mut accounts = Vec::new();
        for row in rows {
            let (id, flags, debits, credits) =
                row.map_err(peer_fail("sqlite: reading accounts"))?;
            let balances = Balances {
                flags,
                debits_posted: uint(debits)?,
                credits_posted: uint(credits)?,
            };
            accounts.push(balances.account(uint(id)?));
        }
        Ok(accounts)
    }

    fn transfers_stored(&self) -> Result<u64, Failure> {
        let connection = self.connection.lock();
        let count: i64 = connection
            .query_row("SELECT count(*) FROM transfers", [], |row| row.get(0))
            .map_err(peer_fail("sqlite: counting transfers"))?;
        u64::try_from(count).map_err(|_| Failure::new(format!("sqlite: count {count}")))
    }

    /// Counted under `synchronous=FULL` (a WAL sync per commit) and OFF
    /// (none); NORMAL syncs at checkpoints, uncounted.
    fn syncs(&self) -> Option<u64> {
        (self.sync != SyncFlag::Interval).then(|| self.syncs.load(Ordering::Relaxed))
    }
}
