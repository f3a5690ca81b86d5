//! redb as a ledger.
//!
//! Idiomatic best setup for the durability of `--sync`:
//! - Two typed tables: `accounts` u128 -> (flags u16, debits_posted u128,
//!   credits_posted u128), a fixed-width tuple; `transfers` u128 -> bytes,
//!   the ledger's own 128-byte transfer record (`encode_transfer`).
//! - One write transaction per batch; `begin_write` admits one writer at a
//!   time, so concurrent threads queue on redb's own lock.
//! - `--sync always`: `Durability::Immediate`, redb's default one-phase
//!   commit with checksums: one `fsync` per commit (no two-phase commit, no
//!   quick-repair, which would add a second). `--sync never`:
//!   `Durability::None` (committed in memory and the file, synced by the
//!   next Immediate commit; the final untimed sync is an empty Immediate
//!   commit). `--sync interval`: `Durability::None`, except a commit that
//!   comes `SYNC_INTERVAL` or more after the last synced one is
//!   `Immediate`, so a crash loses at most about that much.
//! - redb's default 1 GiB page cache.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use ::redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
    WriteTransaction,
};
use mvledger::ledger::{RECORD_BYTES, encode_transfer};
use mvledger::{Account, CreateTransferResult, Transfer};
use parking_lot::Mutex;

use super::{Balances, Peer, batch_timestamp, peer_fail, settle};
use crate::cli::bench::Failure;
use crate::{SYNC_INTERVAL, SyncFlag};

/// Accounts: id -> (flags, debits_posted, credits_posted).
const ACCOUNTS: TableDefinition<u128, (u16, u128, u128)> = TableDefinition::new("accounts");
/// Transfers: id -> the 128-byte transfer record.
const TRANSFERS: TableDefinition<u128, &[u8]> = TableDefinition::new("transfers");

/// The redb peer.
pub struct Redb {
    db: Database,
    sync: SyncFlag,
    /// When the last Immediate commit was (for `--sync interval`).
    last_sync: Mutex<Instant>,
    syncs: AtomicU64,
}

impl Redb {
    /// Creates the database `ledger.redb` in `dir` (new) and its tables.
    pub fn open(dir: &Path, sync: SyncFlag) -> Result<Redb, Failure> {
        let path = dir.join("ledger.redb");
        let db = Database::create(&path)
            .map_err(peer_fail(format!("redb: creating {}", path.display())))?;
        let txn = db.begin_write().map_err(peer_fail("redb: begin"))?;
        txn.open_table(ACCOUNTS)
            .map_err(peer_fail("redb: creating table accounts"))?;
        txn.open_table(TRANSFERS)
            .map_err(peer_fail("redb: creating table transfers"))?;
        txn.commit().map_err(peer_fail("redb: commit"))?;
        Ok(Redb {
            db,
            sync,
            last_sync: Mutex::new(Instant::now()),
            syncs: AtomicU64::new(0),
        })
    }

    /// A write transaction with the durability of `--sync` (module
    /// comment).
    fn begin(&self) -> Result<WriteTransaction, Failure> {
        let mut txn = self.db.begin_write().map_err(peer_fail("redb: begin"))?;
        // Write transactions are serialized, so the interval clock is read
        // and set by one writer at a time.
        let immediate = match self.sync {
            SyncFlag::Always => true,
            SyncFlag::Never => false,
            SyncFlag::Interval => {
                let mut last = self.last_sync.lock();
                let due = last.elapsed() >= SYNC_INTERVAL;
                if due {
                    *last = Instant::now();
                }
                due
            }
        };
        let durability = if immediate {
            Durability::Immediate
        } else {
            Durability::None
        };
        txn.set_durability(durability)
            .map_err(peer_fail("redb: set_durability"))?;
        if immediate {
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(txn)
    }
}

impl Peer for Redb {
    fn setup(&self) -> String {
        let durability = match self.sync {
            SyncFlag::Always => "Durability::Immediate per commit".to_string(),
            SyncFlag::Interval => format!(
                "Durability::None, Immediate every {} ms",
                SYNC_INTERVAL.as_millis()
            ),
            SyncFlag::Never => "Durability::None".to_string(),
        };
        format!(
            "one write transaction per batch, {durability}; tables accounts u128 -> \
             (u16, u128, u128), transfers u128 -> 128 bytes"
        )
    }

    fn create_accounts(&self, accounts: &[Account]) -> Result<(), Failure> {
        let txn = self.begin()?;
        {
            let mut table = txn
                .open_table(ACCOUNTS)
                .map_err(peer_fail("redb: opening accounts"))?;
            for a in accounts {
                table
                    .insert(a.id, (a.flags.bits(), 0u128, 0u128))
                    .map_err(peer_fail(format!("redb: inserting account {}", a.id)))?;
            }
        }
        txn.commit().map_err(peer_fail("redb: commit"))
    }

    fn create_transfers(
        &self,
        transfers: &[Transfer],
        results: &mut Vec<CreateTransferResult>,
    ) -> Result<(), Failure> {
        let timestamp = batch_timestamp();
        let txn = self.begin()?;
        {
            let mut accounts = txn
                .open_table(ACCOUNTS)
                .map_err(peer_fail("redb: opening accounts"))?;
            let mut stored = txn
                .open_table(TRANSFERS)
                .map_err(peer_fail("redb: opening transfers"))?;
            let mut record = [0u8; RECORD_BYTES];
            for (i, t) in transfers.iter().enumerate() {
                let found = stored
                    .get(t.id)
                    .map_err(peer_fail(format!("redb: looking up transfer {}", t.id)))?
                    .is_some();
                if found {
                    results.push(CreateTransferResult::Exists);
                    continue;
                }
                let read = |id: u128| -> Result<Option<Balances>, Failure> {
                    let guard = accounts
                        .get(id)
                        .map_err(peer_fail(format!("redb: reading account {id}")))?;
                    Ok(guard.map(|g| {
                        let (flags, debits_posted, credits_posted) = g.value();
                        Balances {
                            flags,
                            debits_posted,
                            credits_posted,
                        }
                    }))
                };
                let (result, accepted) = settle(t, timestamp.saturating_add(i as u64), read)?;
                results.push(result);
                let Some((stamped, debit, credit)) = accepted else {
                    continue;
                };
                encode_transfer(&stamped, &mut record);
                stored
                    .insert(t.id, &record[..])
                    .map_err(peer_fail(format!("redb: inserting transfer {}", t.id)))?;
                for (id, b) in [(t.debit_account_id, debit), (t.credit_account_id, credit)] {
                    accounts
                        .insert(id, (b.flags, b.debits_posted, b.credits_posted))
                        .map_err(peer_fail(format!("redb: updating account {id}")))?;
                }
            }
        }
        txn.commit().map_err(peer_fail("redb: commit"))
    }

    fn sync(&self) -> Result<(), Failure> {
        let mut txn = self.db.begin_write().map_err(peer_fail("redb: begin"))?;
        txn.set_durability(Durability::Immediate)
            .map_err(peer_fail("redb: set_durability"))?;
        txn.commit().map_err(peer_fail("redb: final commit"))
    }

    fn accounts(&self) -> Result<Vec<Account>, Failure> {
        let txn = self
            .db
            .begin_read()
            .map_err(peer_fail("redb: begin_read"))?;
        let table = txn
            .open_table(ACCOUNTS)
            .map_err(peer_fail("redb: opening accounts"))?;
        let mut accounts = Vec::new();
        for entry in table.iter().map_err(peer_fail("redb: reading accounts"))? {
            let (id, value) = entry.map_err(peer_fail("redb: reading accounts"))?;
            let (flags, debits_posted, credits_posted) = value.value();
            let balances = Balances {
                flags,
                debits_posted,
                credits_posted,
            };
            accounts.push(balances.account(id.value()));
        }
        Ok(accounts)
    }

    fn transfers_stored(&self) -> Result<u64, Failure> {
        let txn = self
            .db
            .begin_read()
            .map_err(peer_fail("redb: begin_read"))?;
        let table = txn
            .open_table(TRANSFERS)
            .map_err(peer_fail("redb: opening transfers"))?;
        table.len().map_err(peer_fail("redb: counting transfers"))
    }

    fn syncs(&self) -> Option<u64> {
        Some(self.syncs.load(Ordering::Relaxed))
    }
}
