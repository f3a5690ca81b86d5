//! The deterministic cluster simulator over many seeds: lost, duplicated,
//! reordered and delayed messages, shards that crash (also in the middle
//! of a commit) on a power-loss file system; then the faults heal and
//! every safety check of `mvledger::cluster::sim` must hold. And each check
//! fails on a deliberately broken protocol, so none of them is vacuous.
//!
//! `MVLEDGER_SIM_SEEDS=N` runs N seeds (default 3,000);
//! `MVLEDGER_SIM_SEED=S` replays seed S alone.

use mvledger::SyncMode;
use mvledger::cluster::Sabotage;
use mvledger::cluster::sim::{SimConfig, SimReport, run};

fn seeds() -> Vec<u64> {
    if let Some(s) = std::env::var("MVLEDGER_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![s];
    }
    let n = std::env::var("MVLEDGER_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3_000u64);
    (0..n).collect()
}

#[test]
fn every_seed_ends_committed_or_aborted_on_both_shards_with_money_conserved() {
    let mut total = SimReport::default();
    for seed in seeds() {
        let r = run(&SimConfig::from_seed(seed)).unwrap_or_else(|e| panic!("{e}"));
        total.committed += r.committed;
        total.aborted += r.aborted;
        total.refused += r.refused;
        total.local += r.local;
        total.two_phase.0 += r.two_phase.0;
        total.two_phase.1 += r.two_phase.1;
        total.two_phase.2 += r.two_phase.2;
        total.crashes += r.crashes;
        total.resubmitted += r.resubmitted;
        total.resubmitted_cross += r.resubmitted_cross;
        total.steps += r.steps;
        total.envelopes.1 += r.envelopes.1;
        total.envelopes.2 += r.envelopes.2;
    }
    eprintln!("{total:?}");
    // The runs exercised what they claim to: both outcomes, crashes and
    // lost and duplicated messages, and two-phase transfers within a shard
    // posted, voided and left reserved (over the default seeds).
    if seeds().len() >= 100 {
        assert!(total.committed > 0 && total.aborted > 0, "{total:?}");
        let (posted, voided, reserved) = total.two_phase;
        assert!(posted > 0 && voided > 0 && reserved > 0, "{total:?}");
        assert!(
            total.resubmitted > total.resubmitted_cross && total.resubmitted_cross > 0,
            "{total:?}"
        );
        assert!(
            total.crashes > 0 && total.envelopes.1 > 0 && total.envelopes.2 > 0,
            "{total:?}"
        );
    }
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [3u64, 77, 901] {
        let a = run(&SimConfig::from_seed(seed));
        let b = run(&SimConfig::from_seed(seed));
        assert_eq!(a, b, "seed {seed}");
    }
}

/// Runs seeds with `sabotage` until one breaks `check`; returns the
/// message (which names every check the seed broke, and the seed).
fn first_failure(sabotage: Sabotage, check: &str, tweak: impl Fn(&mut SimConfig)) -> String {
    for seed in 0..300 {
        let mut c = SimConfig::from_seed(seed);
        c.sabotage = Some(sabotage);
        tweak(&mut c);
        if let Err(e) = run(&c)
            && e.contains(&format!("[{check}]"))
        {
            eprintln!("{sabotage:?}: {e}");
            assert!(
                e.contains(&format!("seed {seed}")),
                "a failure names its seed: {e}"
            );
            return e;
        }
    }
    panic!("{sabotage:?} never broke {check} in 300 seeds");
}

#[test]
fn a_participant_that_drops_its_leg_breaks_both_sides_settlement_and_balances() {
    first_failure(Sabotage::ParticipantDropsLeg, "both-sides", |_| {});
    first_failure(
        Sabotage::ParticipantDropsLeg,
        "settlement-nets-zero",
        |_| {},
    );
    first_failure(Sabotage::ParticipantDropsLeg, "model-balances", |_| {});
}

#[test]
fn messages_kept_outside_the_outbox_leave_transfers_unfinished() {
    first_failure(Sabotage::NoOutbox, "final-state", |c| {
        c.loss_pct = c.loss_pct.max(20)
    });
}

#[test]
fn a_participant_without_idempotency_leaves_a_reservation() {
    first_failure(Sabotage::NoIdempotency, "no-pending", |c| {
        c.duplicate_pct = c.duplicate_pct.max(30);
    });
}

#[test]
fn accounts_created_without_their_limits_break_limits() {
    first_failure(Sabotage::DropLimitFlags, "limits", |_| {});
}

#[test]
fn a_retry_answered_as_new_or_cut_short_breaks_idempotency() {
    // Clients resend acknowledged transfers (under `Always`, the default):
    // a same-shard one must come back `Exists`, a cross-shard one to the
    // transfer its id holds.
    first_failure(Sabotage::ExistsAnsweredOk, "idempotency", |_| {});
    first_failure(Sabotage::RetryAnsweredExists, "idempotency", |_| {});
}

#[test]
fn messages_sent_before_their_commit_is_durable_break_atomicity_under_never() {
    // Under `SyncMode::Never` a shard syncs before it sends: without that,
    // a crash takes back a transfer record, a prepared leg or a decision
    // another shard has already acted on (over 2,000 seeds: 25 break
    // final-state, 10 settlement-nets-zero, 3 both-sides).
    let never = |c: &mut SimConfig| {
        c.sync = SyncMode::Never;
        c.crash_pct = c.crash_pct.max(3);
    };
    first_failure(Sabotage::NoSyncBeforeSend, "final-state", never);
}
