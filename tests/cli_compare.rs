//! `mvledger bench --engine`: the same workload on mvledger and its peers
//! (SQLite, redb, fjall), run as a person would run it.
//!
//! With the `compare` feature (`cargo test --features compare --test
//! cli_compare`):
//! - every peer finishes a small workload, passes its audit after the run,
//!   and, on one thread, accepts and refuses exactly the transfers mvledger
//!   does: the digests of the final balances agree, under each `--sync`;
//! - several threads per engine: every engine still passes its audit;
//! - the text output is one table with the rate and the ratio to mvledger;
//! - `--dir` keeps a subdirectory per engine;
//! - a bad engine name, or a peer with `--pending` above 0, exits 2 with a
//!   message naming the problem.
//!
//! Without it (plain `cargo test`): `--engine sqlite` exits 2 and says to
//! build with the feature; `--engine mvledger` runs the plain bench.

#![cfg(feature = "cli")]

use std::process::{Command, Output};

fn mvledger(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mvledger"))
        .args(args)
        .output()
        .expect("run mvledger")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs `args` and checks the exit code; returns stdout.
fn expect(code: i32, args: &[&str]) -> String {
    let out = mvledger(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "mvledger {args:?}\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        stderr(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[cfg(not(feature = "compare"))]
#[test]
fn a_peer_engine_in_a_build_without_compare_exits_2_naming_the_feature() {
    let out = mvledger(&["bench", "--engine", "sqlite", "--transfers", "10"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("--engine sqlite"), "{err}");
    assert!(err.contains("--features compare"), "{err}");
    // mvledger alone is the plain bench, feature or not.
    let out = expect(
        0,
        &[
            "bench",
            "--engine",
            "mvledger",
            "--accounts",
            "20",
            "--transfers",
            "200",
        ],
    );
    assert!(out.contains("verified after reopen"), "{out}");
}

#[cfg(feature = "compare")]
mod compare {
    use serde_json::Value;

    use super::*;

    /// `bench --json` with `flags`: the parsed object.
    fn bench_json(code: i32, flags: &[&str]) -> Value {
        let args = [&["bench", "--json"][..], flags].concat();
        let out = expect(code, &args);
        serde_json::from_str(out.trim()).expect("bench --json parses")
    }

    fn engines(v: &Value) -> &Vec<Value> {
        v["engines"].as_array().expect("an engines array")
    }

    /// Every engine of `v` passed its audit; on one thread, all answered
    /// alike: the same accepted, the same refusals by code, the same final
    /// balances.
    fn assert_all_agree(v: &Value, names: &[&str]) {
        let engines = engines(v);
        let got: Vec<&str> = engines
            .iter()
            .map(|e| e["engine"].as_str().expect("a name"))
            .collect();
        assert_eq!(got, names);
        let first = &engines[0];
        assert!(
            first["rejected"]["by_code"]["exceeds_credits"]
                .as_u64()
                .expect("some refusals")
                > 0,
            "the workload must refuse some debits for the comparison to mean anything: {first}"
        );
        for e in engines {
            assert_eq!(e["checked"], true, "{e}");
            assert_eq!(e["accepted"], first["accepted"], "{e}");
            assert_eq!(e["rejected"], first["rejected"], "{e}");
            assert_eq!(e["balances_digest"], first["balances_digest"], "{e}");
            assert!(e["transfers_per_s"].as_f64().expect("a rate") > 0.0);
        }
        assert_eq!(v["balances_agree"], true);
        assert_eq!(v["ok"], true, "{v}");
    }

    #[test]
    fn every_peer_accepts_and_refuses_what_mvledger_does_with_sync_always() {
        let v = bench_json(
            0,
            &[
                "--engine",
                "all",
                "--accounts",
                "200",
                "--transfers",
                "5000",
                "--batch",
                "64",
                "--sync",
                "always",
            ],
        );
        assert_all_agree(&v, &["mvledger", "sqlite", "redb", "fjall"]);
        let engines = engines(&v);
        assert_eq!(engines[0]["ratio_to_mvledger"], 1.0);
        assert_eq!(engines[0]["syncs"]["exact"], true);
        // The figures of the plain bench: the tail at p99.9 for all, and
        // mvledger's log bytes per transfer (the peers have no like one).
        for e in engines {
            let l = &e["latency_per_batch_ns"];
            let (p99, p99_9, max) = (&l["p99"], &l["p99_9"], &l["max"]);
            let p99_9 = p99_9.as_u64().unwrap_or_else(|| panic!("p99_9: {e}"));
            assert!(
                p99.as_u64() <= Some(p99_9) && Some(p99_9) <= max.as_u64(),
                "{e}"
            );
        }
        assert!(
            engines[0]["log_bytes_per_transfer"]
                .as_f64()
                .expect("mvledger's log bytes")
                > 0.0
        );
        for peer in &engines[1..] {
            assert!(peer["log_bytes_per_transfer"].is_null(), "{peer}");
        }
        for peer in &engines[1..] {
            assert!(peer["ratio_to_mvledger"].as_f64().expect("a ratio") > 0.0);
            // One synced commit per batch: 5000 / 64 batches.
            assert_eq!(peer["syncs"]["count"], 79, "{peer}");
            assert_eq!(peer["syncs"]["exact"], false);
        }
    }

    #[test]
    fn peers_agree_with_mvledger_under_sync_never_and_interval_and_batch_1() {
        for sync in ["never", "interval"] {
            let v = bench_json(
                0,
                &[
                    "--engine",
                    "sqlite,redb,fjall,mvledger",
                    "--accounts",
                    "50",
                    "--transfers",
                    "1500",
                    "--batch",
                    "1",
                    "--dist",
                    "zipf",
                    "--sync",
                    sync,
                ],
            );
            assert_all_agree(&v, &["sqlite", "redb", "fjall", "mvledger"]);
            for e in engines(&v) {
                assert_eq!(e["batches"], 1500, "{e}");
            }
        }
    }

    #[test]
    fn several_threads_per_engine_still_pass_every_audit() {
        let v = bench_json(
            0,
            &[
                "--engine",
                "all",
                "--accounts",
                "100",
                "--transfers",
                "4000",
                "--batch",
                "16",
                "--threads",
                "4",
                "--sync",
                "never",
            ],
        );
        for e in engines(&v) {
            assert_eq!(e["checked"], true, "{e}");
            assert_eq!(e["transfers"], 4000, "{e}");
        }
    }

    #[test]
    fn the_text_output_is_one_table_with_rates_and_ratios() {
        let out = expect(
            0,
            &[
                "bench",
                "--engine",
                "mvledger,sqlite",
                "--accounts",
                "100",
                "--transfers",
                "1000",
                "--batch",
                "100",
            ],
        );
        assert!(out.contains("ratio to mvledger"), "{out}");
        assert!(out.contains(", p99.9 "), "{out}");
        assert!(out.contains("log bytes per transfer"), "{out}");
        // A table row: the engine's name first, a 16-digit hex digest last.
        let row = |name: &str| {
            out.lines()
                .find(|l| {
                    let last = l.split_whitespace().last().unwrap_or("");
                    l.split_whitespace().next() == Some(name)
                        && last.len() == 16
                        && last.chars().all(|c| c.is_ascii_hexdigit())
                })
                .unwrap_or_else(|| panic!("no row for {name}:\n{out}"))
                .to_string()
        };
        // engine, transfers/s, ratio, syncs, digest.
        let ratio = |name: &str| -> f64 {
            let row = row(name);
            let cells: Vec<&str> = row.split_whitespace().collect();
            cells[2]
                .parse()
                .unwrap_or_else(|_| panic!("no ratio in {row}"))
        };
        assert_eq!(ratio("mvledger"), 1.0, "{out}");
        assert!(ratio("sqlite") > 0.0, "{out}");
        assert!(
            out.contains("final balances: the same on every engine"),
            "{out}"
        );
        assert!(out.contains("WAL, synchronous=FULL"), "{out}");
    }

    #[test]
    fn a_single_peer_runs_alone_without_a_ratio() {
        let v = bench_json(
            0,
            &[
                "--engine",
                "redb",
                "--accounts",
                "50",
                "--transfers",
                "500",
                "--batch",
                "50",
            ],
        );
        let engines = engines(&v);
        assert_eq!(engines.len(), 1);
        assert_eq!(engines[0]["engine"], "redb");
        assert_eq!(engines[0]["checked"], true);
        assert!(engines[0]["ratio_to_mvledger"].is_null());
    }

    #[test]
    fn a_given_dir_keeps_a_subdirectory_per_engine() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("run");
        let dir_text = dir.to_str().expect("utf-8");
        let args = [
            "--engine",
            "mvledger,fjall,sqlite",
            "--accounts",
            "20",
            "--transfers",
            "100",
            "--dir",
            dir_text,
        ];
        bench_json(0, &args);
        assert!(dir.join("mvledger").join("LOCK").exists());
        assert!(dir.join("fjall").join("fjall").is_dir());
        assert!(dir.join("sqlite").join("ledger.sqlite3").is_file());
        // Not empty any more: a second run there is refused.
        let out = mvledger(&[&["bench"][..], &args].concat());
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
    }

    #[test]
    fn a_bad_engine_name_exits_2_listing_the_engines() {
        let out = mvledger(&["bench", "--engine", "sqlite,oracle"]);
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        assert!(err.contains("oracle"), "{err}");
        assert!(err.contains("--engine"), "{err}");
        for name in ["mvledger", "sqlite", "redb", "fjall", "all"] {
            assert!(err.contains(name), "{name} not listed: {err}");
        }
    }

    #[test]
    fn a_peer_with_pending_transfers_exits_2_asking_for_pending_0() {
        let out = mvledger(&["bench", "--engine", "all", "--pending", "0.1"]);
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        assert!(err.contains("--pending 0"), "{err}");
        assert!(err.contains("--engine all"), "named as given: {err}");
        // mvledger alone still takes two-phase transfers.
        let v = bench_json(
            0,
            &[
                "--engine",
                "mvledger",
                "--accounts",
                "20",
                "--transfers",
                "200",
                "--pending",
                "0.5",
            ],
        );
        assert!(v["posts_and_voids"].as_u64().expect("a count") > 0);
    }
}
