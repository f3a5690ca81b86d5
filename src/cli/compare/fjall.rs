//! fjall as a ledger.
//!
//! Idiomatic best setup for the durability of `--sync`:
//! - Its transactional keyspace (`open_transactional`, the default
//!   single-writer transactions: `write_tx` takes the keyspace's writer
//!   lock, so concurrent threads queue on fjall's own lock), with two
//!   partitions: `accounts` (16-byte big-endian id -> flags and balances,
//!   34 bytes) and `transfers` (id -> the ledger's 128-byte transfer
//!   record). Big-endian keys keep the ids' order, so new transfers append.
//! - One write transaction per batch. `--sync always`: the commit persists
//!   its journal write with `PersistMode::SyncData` (`fdatasync`, as
//!   mvledger syncs its log). `--sync interval`: `PersistMode::Buffer` per
//!   commit and fjall's own background `fsync_ms` every `SYNC_INTERVAL`.
//!   `--sync never`: `Buffer`; the final untimed sync is
//!   `persist(SyncAll)`.
//! - A 1 GiB block cache (as redb's default); default partition options
//!   (bloom filters on: most lookups are of ids that are not there yet).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use ::fjall::{Config, PartitionCreateOptions, PersistMode, TxKeyspace, TxPartitionHandle};
use mvledger::ledger::{RECORD_BYTES, encode_transfer};
use mvledger::{Account, CreateTransferResult, Transfer};

use super::{Balances, Peer, batch_timestamp, peer_fail, settle};
use crate::cli::bench::Failure;
use crate::{SYNC_INTERVAL, SyncFlag};

/// The block cache.
const CACHE_BYTES: u64 = 1 << 30;

/// The fjall peer.
pub struct Fjall {
    keyspace: TxKeyspace,
    accounts: TxPartitionHandle,
    transfers: TxPartitionHandle,
    sync: SyncFlag,
    syncs: AtomicU64,
}

fn key(id: u128) -> [u8; 16] {
    id.to_be_bytes()
}

impl Fjall {
    /// Creates the keyspace in `dir/fjall` (new) and its partitions.
    pub fn open(dir: &Path, sync: SyncFlag) -> Result<Fjall, Failure> {
        let path = dir.join("fjall");
        let fsync_ms = match sync {
            SyncFlag::Interval => Some(u16::try_from(SYNC_INTERVAL.as_millis()).unwrap_or(10)),
            SyncFlag::Always | SyncFlag::Never => None,
        };
        let keyspace = Config::new(&path)
            .cache_size(CACHE_BYTES)
            .fsync_ms(fsync_ms)
            .open_transactional()
            .map_err(peer_fail(format!("fjall: opening {}", path.display())))?;
        let open = |name: &str| {
            keyspace
                .open_partition(name, PartitionCreateOptions::default())
                .map_err(peer_fail(format!("fjall: opening partition {name}")))
        };
        let accounts = open("accounts")?;
        let transfers = open("transfers")?;
        Ok(Fjall {
            keyspace,
            accounts,
            transfers,
            sync,
            syncs: AtomicU64::new(0),
        })
    }

    fn persist_mode(&self) -> PersistMode {
        match self.sync {
            SyncFlag::Always => PersistMode::SyncData,
            SyncFlag::Interval | SyncFlag::Never => PersistMode::Buffer,
        }
    }
}

impl Peer for Fjall {
    fn setup(&self) -> String {
        let persist = match self.sync {
            SyncFlag::Always => "PersistMode::SyncData per commit".to_string(),
            SyncFlag::Interval => format!(
                "PersistMode::Buffer, fsync every {} ms",
                SYNC_INTERVAL.as_millis()
            ),
            SyncFlag::Never => "PersistMode::Buffer".to_string(),
        };
        format!(
            "transactional keyspace, one write transaction per batch, {persist}; \
             partitions accounts, transfers"
        )
    }

    fn create_accounts(&self, accounts: &[Account]) -> Result<(), Failure> {
        let mut txn = self
            .keyspace
            .write_tx()
            .durability(Some(self.persist_mode()));
        for a in accounts {
            let balances = Balances {
                flags: a.flags.bits(),
                ..Balances::default()
            };
            txn.insert(&self.accounts, key(a.id), balances.encode());
        }
        txn.commit().map_err(peer_fail("fjall: commit"))
    }

    fn create_transfers(
        &self,
        transfers: &[Transfer],
        results: &mut Vec<CreateTransferResult>,
    ) -> Result<(), Failure> {
        let timestamp = batch_timestamp();
        let mut txn = self
            .keyspace
            .write_tx()
            .durability(Some(self.persist_mode()));
        let mut record = [0u8; RECORD_BYTES];
        for (i, t) in transfers.iter().enumerate() {
            let found = txn
                .contains_key(&self.transfers, key(t.id))
                .map_err(peer_fail(format!("fjall: looking up transfer {}", t.id)))?;
            if found {
                results.push(CreateTransferResult::Exists);
                continue;
            }
            let read = |id: u128| -> Result<Option<Balances>, Failure> {
                let value = txn
                    .get(&self.accounts, key(id))
                    .map_err(peer_fail(format!("fjall: reading account {id}")))?;
                value
                    .map(|v| {
                        Balances::decode(&v)
                            .ok_or_else(|| Failure::new(format!("fjall: account {id} is damaged")))
                    })
                    .transpose()
            };
            let (result, accepted) = settle(t, timestamp.saturating_add(i as u64), read)?;
            results.push(result);
            let Some((stamped, debit, credit)) = accepted else {
                continue;
            };
            encode_transfer(&stamped, &mut record);
            txn.insert(&self.transfers, key(t.id), record);
            txn.insert(&self.accounts, key(t.debit_account_id), debit.encode());
            txn.insert(&self.accounts, key(t.credit_account_id), credit.encode());
        }
        txn.commit().map_err(peer_fail("fjall: commit"))?;
        if self.sync == SyncFlag::Always {
            self.syncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    fn sync(&self) -> Result<(), Failure> {
        self.keyspace
            .persist(PersistMode::SyncAll)
            .map_err(peer_fail("fjall: persist"))
    }

    fn accounts(&self) -> Result<Vec<Account>, Failure> {
        let txn = self.keyspace.read_tx();
        let mut accounts = Vec::new();
        for entry in txn.iter(&self.accounts) {
            let (k, v) = entry.map_err(peer_fail("fjall: reading accounts"))?;
            let id = <[u8; 16]>::try_from(&*k)
                .map(u128::from_be_bytes)
                .map_err(|_| Failure::new("fjall: an account key is not 16 bytes".into()))?;
            let balances = Balances::decode(&v)
                .ok_or_else(|| Failure::new(format!("fjall: account {id} is damaged")))?;
            accounts.push(balances.account(id));
        }
        Ok(accounts)
    }

    fn transfers_stored(&self) -> Result<u64, Failure> {
        let txn = self.keyspace.read_tx();
        let count = txn
            .len(&self.transfers)
            .map_err(peer_fail("fjall: counting transfers"))?;
        Ok(count as u64)
    }

    /// Counted under `--sync always`; otherwise fjall syncs on its own
    /// (the `fsync_ms` timer, journal rotation, memtable flushes), uncounted.
    fn syncs(&self) -> Option<u64> {
        (self.sync == SyncFlag::Always).then(|| self.syncs.load(Ordering::Relaxed))
    }
}
