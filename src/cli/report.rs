//! The bench's figures, added up from the plans and the engine's counters,
//! printed as text (stdout, for a person) or as one JSON object (`--json`,
//! stdout, nothing else printed there).
//!
//! Units: "transfers" in the rates counts every event submitted, so a
//! pending transfer and its post or void are two. Syncs are those of the
//! transfer phase (the final sync before the reopen is not counted); log
//! bytes are measured after that sync, when every record has been written.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use mvledger::{CreateTransferResult, Stats};
use serde_json::{Value, json};

use super::bench::{Created, Run};
use super::datadir::DataDir;
use super::verify::Verification;
use super::workload::{Plan, Settle};
use crate::BenchArgs;

/// Transfers accepted, by kind.
#[derive(Debug, Default)]
struct Accepted {
    single_phase: u64,
    pending: u64,
    posted: u64,
    voided: u64,
}

impl Accepted {
    fn total(&self) -> u64 {
        self.single_phase + self.pending + self.posted + self.voided
    }
}

/// The figures of one run.
pub struct Report {
    /// The account phase, before the transfers.
    created: Created,
    elapsed: Duration,
    calls: u64,
    latency_ns: Latency,
    accepted: Accepted,
    rejected: BTreeMap<CreateTransferResult, u64>,
    /// Posts and voids submitted (accepted or not).
    settles: u64,
    syncs: u64,
    log_bytes: u64,
}

/// Latency per call, in nanoseconds.
struct Latency {
    p50: u64,
    p99: u64,
    p999: u64,
    max: u64,
}

impl Report {
    /// Adds up the results in `plans` and the counters' deltas.
    pub fn new(
        plans: &[Plan],
        created: Created,
        run: Run,
        before: &Stats,
        after_run: &Stats,
        after_sync: &Stats,
    ) -> Report {
        let mut accepted = Accepted::default();
        let mut rejected = BTreeMap::new();
        let mut count = |result: Option<CreateTransferResult>, ok: &mut u64| match result {
            Some(CreateTransferResult::Ok) => *ok += 1,
            Some(code) => *rejected.entry(code).or_insert(0) += 1,
            None => {}
        };
        for plan in plans {
            match plan.settle {
                Settle::None => count(plan.result, &mut accepted.single_phase),
                Settle::Post => {
                    count(plan.result, &mut accepted.pending);
                    count(plan.settle_result, &mut accepted.posted);
                }
                Settle::Void => {
                    count(plan.result, &mut accepted.pending);
                    count(plan.settle_result, &mut accepted.voided);
                }
            }
        }
        let settles = plans.iter().filter(|p| p.settle_result.is_some()).count();
        let sorted = &run.latencies_ns;
        Report {
            created,
            elapsed: run.elapsed,
            calls: sorted.len() as u64,
            latency_ns: Latency {
                p50: percentile(sorted, 0.5),
                p99: percentile(sorted, 0.99),
                p999: percentile(sorted, 0.999),
                max: sorted.last().copied().unwrap_or(0),
            },
            accepted,
            rejected,
            settles: settles as u64,
            syncs: after_run.syncs.saturating_sub(before.syncs),
            log_bytes: after_sync.log_bytes.saturating_sub(before.log_bytes),
        }
    }

    fn rejected_total(&self) -> u64 {
        self.rejected.values().sum()
    }

    /// Every event submitted: accepted or not.
    fn events(&self) -> u64 {
        self.accepted.total() + self.rejected_total()
    }

    fn per_s(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.events() as f64 / secs
        } else {
            0.0
        }
    }

    fn per_sync(&self) -> Option<f64> {
        (self.syncs > 0).then(|| self.events() as f64 / self.syncs as f64)
    }

    fn log_bytes_per_transfer(&self) -> Option<f64> {
        let events = self.events();
        (events > 0).then(|| self.log_bytes as f64 / events as f64)
    }

    /// The figures for a person.
    pub fn print_text(&self) {
        let a = &self.accepted;
        let of_which = if self.settles > 0 {
            format!(" (with {} posts and voids)", group(self.settles))
        } else {
            String::new()
        };
        say!(
            "ran {}{of_which} in {:.2} s, {}",
            count(self.events(), "transfer"),
            self.elapsed.as_secs_f64(),
            count(self.calls, "call")
        );
        say!("  transfers/s             {}", group(self.per_s() as u64));
        let l = &self.latency_ns;
        say!(
            "  latency per call        p50 {}, p99 {}, p99.9 {}, max {}",
            fmt_ns(l.p50),
            fmt_ns(l.p99),
            fmt_ns(l.p999),
            fmt_ns(l.max)
        );
        say!(
            "  accepted                {} ({} single-phase, {} pending, {} posted, {} voided)",
            group(a.total()),
            group(a.single_phase),
            group(a.pending),
            group(a.posted),
            group(a.voided)
        );
        say!("  rejected                {}", group(self.rejected_total()));
        for (code, n) in &self.rejected {
            say!("    {:<21} {}", code.to_string(), group(*n));
        }
        say!("  syncs                   {}", group(self.syncs));
        match self.per_sync() {
            Some(per_sync) => say!("  transfers per sync      {per_sync:.1}"),
            None => say!("  transfers per sync      - (no sync during the run)"),
        }
        if let Some(bytes) = self.log_bytes_per_transfer() {
            say!("  log bytes per transfer  {bytes:.1}");
        }
    }

    /// The figures and the verification as one JSON object on stdout.
    pub fn print_json(&self, args: &BenchArgs, dir: &DataDir, verification: &Verification) {
        let a = &self.accepted;
        let l = &self.latency_ns;
        let by_code: serde_json::Map<String, Value> = self
            .rejected
            .iter()
            .map(|(code, n)| (code.name().to_string(), json!(n)))
            .collect();
        let object = json!({
            "ok": verification.ok(),
            "config": {
                "accounts": args.accounts,
                "transfers": args.transfers,
                "batch": args.batch,
                "threads": args.threads,
                "dist": args.dist.name(),
                "theta": args.zipf_theta(),
                "sync": args.sync.name(),
                "pending": args.pending,
                "seed": args.seed,
                "dir": dir.path().display().to_string(),
                "dir_kept": dir.kept(),
            },
            "accounts_created": {
                "accounts": self.created.accounts,
                "calls": self.created.calls,
                "seconds": self.created.elapsed.as_secs_f64(),
            },
            "transfers": self.events(),
            "posts_and_voids": self.settles,
            "seconds": self.elapsed.as_secs_f64(),
            "transfers_per_s": self.per_s(),
            "calls": self.calls,
            "latency_per_call_ns": { "p50": l.p50, "p99": l.p99, "p99_9": l.p999, "max": l.max },
            "accepted": {
                "total": a.total(),
                "single_phase": a.single_phase,
                "pending": a.pending,
                "posted": a.posted,
                "voided": a.voided,
            },
            "rejected": { "total": self.rejected_total(), "by_code": by_code },
            "syncs": self.syncs,
            "transfers_per_sync": self.per_sync(),
            "log_bytes": self.log_bytes,
            "log_bytes_per_transfer": self.log_bytes_per_transfer(),
            "verification": verification.to_json(),
        });
        say!("{object}");
    }
}

/// The run's settings, one line, and where the data lives.
pub fn print_header(args: &BenchArgs, dir: &Path) {
    let dist = match args.zipf_theta() {
        None => args.dist.name().to_string(),
        Some(theta) => format!("zipf (theta {theta})"),
    };
    // Rounded so that 0.3 reads 30, not 30.000000000000004.
    let pending_percent = (args.pending * 100_000.0).round() / 1000.0;
    say!(
        "mvledger bench: {}, {} ({pending_percent}% pending), batch {}, {}, {dist}, sync {}, seed {}",
        count(args.accounts, "account"),
        count(args.transfers, "transfer"),
        group(args.batch as u64),
        count(args.threads as u64, "thread"),
        args.sync.name(),
        args.seed
    );
    say!("data directory: {}", dir.display());
}

/// The value at quantile `q` of sorted `values` (0 when empty).
pub fn percentile(values: &[u64], q: f64) -> u64 {
    if values.is_empty() {
        return 0;
    }
    let rank = (q * values.len() as f64).ceil() as usize;
    let index = rank.clamp(1, values.len()) - 1;
    values.get(index).copied().unwrap_or(0)
}

/// A duration for a person: ns, us or ms.
pub fn fmt_ns(ns: u64) -> String {
    match ns {
        0..=9_999 => format!("{ns} ns"),
        10_000..=999_999 => format!("{:.1} us", ns as f64 / 1e3),
        _ => format!("{:.2} ms", ns as f64 / 1e6),
    }
}

/// `n` grouped and `noun`, plural unless `n` is 1: `count(1, "call")` is
/// "1 call", `count(8190, "call")` "8,190 calls".
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{} {noun}s", group(n))
    }
}

/// `1234567` -> `1,234,567`.
pub fn group(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A ledger timestamp (nanoseconds since the Unix epoch, from the ledger's
/// clock) as a UTC date and time to the nanosecond, for a person:
/// `2026-12-01 02:41:24.425656391 UTC`. Days become a civil date through
/// 400-year eras of 146,097 days, years that start on March 1 (so the
/// leap day ends a year), and 153-day groups of five months.
pub fn utc(ts: u64) -> String {
    const NS_PER_DAY: u64 = 86_400 * 1_000_000_000;
    let (days, in_day) = (ts / NS_PER_DAY, ts % NS_PER_DAY);
    // Days since 0000-03-01; a u64 of nanoseconds stays below year 2555.
    let z = days + 719_468;
    let (era, day_of_era) = (z / 146_097, z % 146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    let secs = in_day / 1_000_000_000;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}.{:09} UTC",
        secs / 3_600,
        secs / 60 % 60,
        secs % 60,
        in_day % 1_000_000_000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_read_as_utc_dates() {
        // Checked against `date -u -d @SECONDS`.
        assert_eq!(utc(0), "1970-01-01 00:00:00.000000000 UTC");
        assert_eq!(
            utc(951_782_400_000_000_000),
            "2000-02-29 00:00:00.000000000 UTC"
        );
        assert_eq!(
            utc(4_107_542_400_000_000_000),
            "2100-03-01 00:00:00.000000000 UTC"
        );
        assert_eq!(
            utc(1_796_092_884_425_656_391),
            "2026-12-01 02:41:24.425656391 UTC"
        );
        assert_eq!(utc(u64::MAX), "2554-07-21 23:34:33.709551615 UTC");
        // The last nanosecond of a year, and the first of the next.
        assert_eq!(
            utc(946_684_800_000_000_000 - 1),
            "1999-12-31 23:59:59.999999999 UTC"
        );
        assert_eq!(
            utc(946_684_800_000_000_000),
            "2000-01-01 00:00:00.000000000 UTC"
        );
    }

    #[test]
    fn percentiles_and_numbers_read_right() {
        let values: Vec<u64> = (1..=1000).collect();
        assert_eq!(percentile(&values, 0.5), 500);
        assert_eq!(percentile(&values, 0.99), 990);
        assert_eq!(percentile(&values, 0.999), 999);
        assert_eq!(percentile(&[], 0.5), 0);
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(group(999), "999");
        assert_eq!(fmt_ns(1_500_000), "1.50 ms");
        assert_eq!(count(1, "call"), "1 call");
        assert_eq!(count(0, "call"), "0 calls");
        assert_eq!(count(8_190, "damaged place"), "8,190 damaged places");
    }
}
