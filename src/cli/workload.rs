//! The bench's workload, all of it drawn up front from the seed: the
//! accounts, and one `Plan` per transfer (the transfer, and for a pending
//! one whether it is later posted or voided). The same seed and flags give
//! the same transfers whatever the thread count; which of them are accepted
//! can still depend on the order in which the threads' calls land.
//!
//! Ids: accounts `1..=accounts`; transfers `1..=transfers`; the post or
//! void of pending transfer `i` is `transfers + i`, so no two events share
//! an id.

use mvledger::{Account, AccountFlags, CreateTransferResult, Transfer, TransferFlags};

use crate::BenchArgs;

/// The ledger and code of every account and transfer.
pub const LEDGER: u32 = 1;
/// See `LEDGER`.
pub const CODE: u16 = 1;
/// Every `LIMITED_EVERY`-th account has `DEBITS_MUST_NOT_EXCEED_CREDITS`.
/// They start at zero, so a debit beyond what they received is refused
/// with `ExceedsCredits`.
pub const LIMITED_EVERY: u128 = 10;
/// Transfers move `1..=MAX_AMOUNT`.
pub const MAX_AMOUNT: u64 = 1_000;
/// The timeout of pending transfers, in seconds: long enough that none
/// expires during a run, so that their post or void is accepted.
pub const PENDING_TIMEOUT_S: u32 = 3_600;

/// What happens to a pending transfer in its thread's next call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Not a pending transfer.
    None,
    /// Posted in full.
    Post,
    /// Voided.
    Void,
}

/// One planned transfer and, once submitted, what the ledger answered.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The transfer (pending if `settle` is not `Settle::None`).
    pub transfer: Transfer,
    /// What follows a pending transfer.
    pub settle: Settle,
    /// The result of `transfer`, once acknowledged.
    pub result: Option<CreateTransferResult>,
    /// The result of the post or void, once acknowledged (only submitted
    /// when the pending transfer was accepted).
    pub settle_result: Option<CreateTransferResult>,
}

impl Plan {
    /// The post or void of this pending transfer. It repeats the pending
    /// transfer's accounts and amount (rather than leaving them 0 to be
    /// inherited), so that the verification can compare them as stored.
    pub fn settle_transfer(&self, transfers: u64) -> Transfer {
        let flags = match self.settle {
            Settle::Void => TransferFlags::VOID_PENDING_TRANSFER,
            Settle::Post | Settle::None => TransferFlags::POST_PENDING_TRANSFER,
        };
        let pending = &self.transfer;
        Transfer {
            id: settle_id(pending.id, transfers),
            pending_id: pending.id,
            flags,
            timeout: 0,
            ..*pending
        }
    }
}

/// The id of the post or void of pending transfer `pending_id`.
pub fn settle_id(pending_id: u128, transfers: u64) -> u128 {
    pending_id + u128::from(transfers)
}

/// Whether account `id` has `DEBITS_MUST_NOT_EXCEED_CREDITS`.
pub fn is_limited(id: u128) -> bool {
    id.is_multiple_of(LIMITED_EVERY)
}

/// The accounts `1..=count`.
pub fn accounts(count: u64) -> Vec<Account> {
    (1..=u128::from(count))
        .map(|id| Account {
            id,
            ledger: LEDGER,
            code: CODE,
            flags: if is_limited(id) {
                AccountFlags::DEBITS_MUST_NOT_EXCEED_CREDITS
            } else {
                AccountFlags::empty()
            },
            ..Account::default()
        })
        .collect()
}

/// The transfers of a run, from `args.seed`.
pub fn plans(args: &BenchArgs) -> Vec<Plan> {
    let mut rng = SplitMix64(args.seed);
    let zipf = args
        .zipf_theta()
        .map(|theta| Zipf::new(args.accounts, theta));
    let pick = |rng: &mut SplitMix64| match &zipf {
        Some(zipf) => zipf.sample(rng),
        None => rng.below(args.accounts),
    };
    (1..=u128::from(args.transfers))
        .map(|id| {
            let debit = pick(&mut rng);
            let mut credit = pick(&mut rng);
            if credit == debit {
                // Any other account; `accounts` >= 2.
                credit = (debit + 1 + rng.below(args.accounts - 1)) % args.accounts;
            }
            let amount = 1 + rng.below(MAX_AMOUNT);
            let settle = if args.pending > 0.0 && rng.unit() < args.pending {
                if rng.next() & 1 == 0 {
                    Settle::Post
                } else {
                    Settle::Void
                }
            } else {
                Settle::None
            };
            let pending = settle != Settle::None;
            let transfer = Transfer {
                id,
                debit_account_id: u128::from(debit) + 1,
                credit_account_id: u128::from(credit) + 1,
                amount: u128::from(amount),
                ledger: LEDGER,
                code: CODE,
                flags: if pending {
                    TransferFlags::PENDING
                } else {
                    TransferFlags::empty()
                },
                timeout: if pending { PENDING_TIMEOUT_S } else { 0 },
                ..Transfer::default()
            };
            Plan {
                transfer,
                settle,
                result: None,
                settle_result: None,
            }
        })
        .collect()
}

/// splitmix64: small, fast, and good enough to pick accounts.
pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// The next 64 random bits.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0), by multiply-shift.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `[0, 1)` with 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A Zipf sampler over `0..n`: index `i` is drawn with probability
/// proportional to `1 / (i + 1)^theta`, so index 0 is the hottest. Exact,
/// by inverting the cumulative distribution: O(n) set-up and memory (8
/// bytes an account), a binary search per draw. (The O(1) approximation of
/// Gray et al. that YCSB uses is exact only for the two hottest items.)
pub struct Zipf {
    /// `cumulative[i]`: the weights of items `0..=i`, summed.
    cumulative: Vec<f64>,
}

impl Zipf {
    /// The sampler for `n` >= 1 items.
    pub fn new(n: u64, theta: f64) -> Zipf {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|i| {
                total += (i as f64).powf(-theta);
                total
            })
            .collect();
        Zipf { cumulative }
    }

    /// One index in `0..n`.
    pub fn sample(&self, rng: &mut SplitMix64) -> u64 {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let target = rng.unit() * total;
        let index = self.cumulative.partition_point(|&c| c <= target);
        // `target` < `total`, so `index` < n; `min` guards rounding.
        index.min(self.cumulative.len().saturating_sub(1)) as u64
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::{Cli, Command};

    fn args(flags: &[&str]) -> BenchArgs {
        let argv = ["mvledger", "bench"].iter().chain(flags);
        match Cli::try_parse_from(argv).expect("valid flags").command {
            Command::Bench(args) => args,
            other => panic!("not bench: {other:?}"),
        }
    }

    #[test]
    fn plans_follow_the_seed_and_never_share_an_id() {
        let flags = [
            "--accounts",
            "30",
            "--transfers",
            "5000",
            "--pending",
            "0.5",
        ];
        let a = plans(&args(&flags));
        let b = plans(&args(&flags));
        let transfers = |p: &[Plan]| p.iter().map(|p| (p.transfer, p.settle)).collect::<Vec<_>>();
        assert_eq!(transfers(&a), transfers(&b));
        let other = plans(&args(&[&flags[..], &["--seed", "7"]].concat()));
        assert_ne!(transfers(&a), transfers(&other));

        let mut ids = std::collections::HashSet::new();
        for (i, p) in a.iter().enumerate() {
            let t = &p.transfer;
            assert_eq!(t.id, i as u128 + 1);
            assert!(ids.insert(t.id));
            assert!((1..=30).contains(&t.debit_account_id));
            assert!((1..=30).contains(&t.credit_account_id));
            assert_ne!(t.debit_account_id, t.credit_account_id);
            assert!((1..=u128::from(MAX_AMOUNT)).contains(&t.amount));
            assert_eq!(
                t.flags.contains(TransferFlags::PENDING),
                p.settle != Settle::None
            );
            if p.settle != Settle::None {
                assert!(ids.insert(p.settle_transfer(5000).id));
            }
        }
        let pending = a.iter().filter(|p| p.settle != Settle::None).count();
        assert!((2000..3000).contains(&pending), "{pending} pending of 5000");
    }

    #[test]
    fn zipf_stays_in_range_and_follows_its_law() {
        let (n, draws) = (1000u64, 200_000u32);
        let mut rng = SplitMix64(1);
        for theta in [0.0, 0.99, 1.5] {
            let zipf = Zipf::new(n, theta);
            let mut counts = vec![0u32; n as usize];
            for _ in 0..draws {
                let i = zipf.sample(&mut rng);
                assert!(i < n);
                counts[i as usize] += 1;
            }
            // P(i) = (i + 1)^-theta / zeta_n. Within 10% for the single
            // items drawn often enough to tell, and for the tail 100..n.
            let weight = |i: usize| ((i + 1) as f64).powf(-theta);
            let zeta_n: f64 = (0..n as usize).map(weight).sum();
            let expect = |range: std::ops::Range<usize>| {
                f64::from(draws) * range.map(weight).sum::<f64>() / zeta_n
            };
            let got = |range: std::ops::Range<usize>| f64::from(counts[range].iter().sum::<u32>());
            for range in [0..1, 1..2, 2..3, 9..10, 100..n as usize] {
                let (e, g) = (expect(range.clone()), got(range.clone()));
                if e >= 2000.0 {
                    assert!(
                        (g - e).abs() < 0.1 * e,
                        "theta {theta}, {range:?}: {g} vs {e}"
                    );
                }
            }
        }
        // Two items: every draw is one of them.
        let two = Zipf::new(2, 0.99);
        assert!((0..1000).all(|_| two.sample(&mut rng) < 2));
    }
}
