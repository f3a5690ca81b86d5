//! Memory per account and per stored transfer of the ledger (issue 3,
//! "Speed and memory": at most 256 bytes each, indexes included).
//!
//! Run: `cargo run --release --example ledger_memory`
//!
//! A counting global allocator (`examples/common/counting_alloc.rs`, shared
//! with `examples/memory.rs`; it wraps `std::alloc::System`) tracks the bytes currently allocated, as requested
//! by the program (the allocator's own rounding and headers are not
//! counted). The example opens a ledger with `SyncMode::Never` in a temp
//! dir and measures the growth of the allocated bytes since just before
//! `Ledger::open`:
//! 1. after creating `ACCOUNTS` = 100,000 accounts (ids 1..=100,000, ledger
//!    1, code 1, no flags) in batches of 8,190, a sync and a full GC:
//!    bytes per account (everything the ledger then holds, over the
//!    accounts: records, index entries, the meta key, the engine's fixed
//!    cost), and the marginal cost: the growth over the second 50,000
//!    accounts, which leaves out what the ledger holds whatever its size
//!    (the log's buffers, about 5 MB after batches of 8,190 accounts);
//! 2. after `TRANSFERS` = 1,000,000 transfers (uniform accounts from a
//!    fixed-seed xorshift stream, as `benches/ledger.rs`; all succeed) in
//!    batches of 8,190, a sync and `engine().gc()`: the growth since step 1
//!    over the transfers is the bytes per stored transfer. It includes the
//!    transfer record and its index entry, the two history entries of the
//!    transfer and whatever the accounts' newer versions still hold after
//!    GC (one version each when no reader is live).
//!
//! 3. after one `get_account_transfers` call: the same growth over the
//!    transfers, now with the ordered copy of the history keys that a
//!    first scan of them makes.
//!
//! Nothing reads at a snapshot meanwhile, so GC can keep one version per
//! key. The engine's stats (keys, versions) are printed with the figures.

#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{Counting, allocated};
use mvledger::{
    Account, CreateAccountResult, CreateTransferResult, Ledger, LedgerOptions, Options, Stats,
    SyncMode, Transfer,
};

#[global_allocator]
static GLOBAL: Counting = Counting;

const ACCOUNTS: u64 = 100_000;
const TRANSFERS: u64 = 1_000_000;
const BATCH: usize = 8_190;
const LEDGER: u32 = 1;
const CODE: u16 = 1;
/// The ceiling for each figure.
const TARGET_BYTES: f64 = 256.0;

/// xorshift64*, as in `benches/ledger.rs`.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn report(what: &str, bytes: isize, count: u64, stats: &Stats) -> f64 {
    let per = bytes as f64 / count as f64;
    let verdict = if per <= TARGET_BYTES {
        "within"
    } else {
        "OVER"
    };
    println!(
        "{what}: {bytes} bytes for {count}: {per:.1} bytes each ({verdict} the target of \
         {TARGET_BYTES}); engine holds {} keys, {} versions",
        stats.keys, stats.versions_alive
    );
    per
}

fn main() -> mvledger::Result<()> {
    let dir = tempfile::tempdir()?;
    let base = allocated();
    let ledger = Ledger::open(
        dir.path(),
        LedgerOptions {
            engine: Options {
                sync: SyncMode::Never,
                ..Options::default()
            },
            ..LedgerOptions::default()
        },
    )?;
    let fixed = allocated() - base;
    println!("an empty ledger: {fixed} bytes (counted in the per-account figure)");

    // In two halves: the second half's growth is what an account costs
    // (the marginal figure), apart from what the ledger holds whatever
    // its size (the log's buffers, sized by the largest batch so far).
    let half = ACCOUNTS / 2;
    let mut at_half = 0;
    for (from, to) in [(1, half), (half + 1, ACCOUNTS)] {
        let ids: Vec<u128> = (u128::from(from)..=u128::from(to)).collect();
        for chunk in ids.chunks(BATCH) {
            let accounts: Vec<Account> = chunk
                .iter()
                .map(|&id| Account {
                    id,
                    ledger: LEDGER,
                    code: CODE,
                    ..Account::default()
                })
                .collect();
            let results = ledger.create_accounts(&accounts)?;
            assert!(results.iter().all(|r| *r == CreateAccountResult::Ok));
        }
        drop(ids);
        ledger.engine().sync()?;
        ledger.engine().gc();
        if to == half {
            at_half = allocated();
        }
    }
    let stats = ledger.stats();
    let after_accounts = allocated();
    report("per account", after_accounts - base, ACCOUNTS, &stats);
    let marginal = report(
        "per account, marginal (the second half's growth)",
        after_accounts - at_half,
        ACCOUNTS - half,
        &stats,
    );
    println!(
        "  so the ledger's fixed cost is about {:.1} MB (total minus {ACCOUNTS} marginal accounts)",
        (after_accounts - base) as f64 / 1e6 - marginal * ACCOUNTS as f64 / 1e6
    );

    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut next_id = 1u128;
    let mut batch = Vec::with_capacity(BATCH);
    let mut created = 0u64;
    while created < TRANSFERS {
        batch.clear();
        let len = (TRANSFERS - created).min(BATCH as u64);
        for _ in 0..len {
            let debit = rng.below(ACCOUNTS);
            let mut credit = rng.below(ACCOUNTS);
            while credit == debit {
                credit = rng.below(ACCOUNTS);
            }
            batch.push(Transfer {
                id: next_id,
                debit_account_id: u128::from(debit + 1),
                credit_account_id: u128::from(credit + 1),
                amount: u128::from(1 + rng.below(1_000)),
                ledger: LEDGER,
                code: CODE,
                ..Transfer::default()
            });
            next_id += 1;
        }
        let results = ledger.create_transfers(&batch)?;
        assert!(results.iter().all(|r| *r == CreateTransferResult::Ok));
        created += len;
    }
    // The batch buffer is the example's, not the ledger's.
    drop(batch);
    ledger.engine().sync()?;
    ledger.engine().gc();
    let stats = ledger.stats();
    report(
        "per stored transfer",
        allocated() - after_accounts,
        TRANSFERS,
        &stats,
    );
    // A scan orders the keys it covers once, keeping a copy of each (see
    // `mvcc/shard.rs`): the first history query copies every history key.
    let found = ledger.get_account_transfers(mvledger::AccountFilter {
        account_id: 1,
        limit: 10,
        flags: mvledger::AccountFilterFlags::DEBITS | mvledger::AccountFilterFlags::CREDITS,
        ..Default::default()
    })?;
    assert_eq!(found.len(), 10);
    report(
        "per stored transfer, after one history query",
        allocated() - after_accounts,
        TRANSFERS,
        &stats,
    );
    report(
        "everything, per account and transfer",
        allocated() - base,
        ACCOUNTS + TRANSFERS,
        &stats,
    );
    Ok(())
}
