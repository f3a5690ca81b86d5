//! The `mvledger` command, run as a person would run it: each test starts
//! the built binary and checks its exit code and what it prints.
//!
//! - `bench` on a small workload exits 0 and prints its rate; `--json`
//!   parses; bad arguments exit 2 naming the argument; Ctrl-C stops it,
//!   removes its temporary directory and exits 130.
//! - The account commands round-trip through a data directory: a refused
//!   transfer prints its result code in words and exits 1; pending
//!   transfers are posted and voided; an unknown id is "not found", exit 1.
//! - `inspect` passes a healthy directory (even one held open), fails a
//!   damaged one naming the file and byte offset, and passes a torn tail
//!   with a warning.
//! - A `--dir` (or `inspect DIR`) naming a file, a directory of other
//!   files or nothing at all is a bad argument (exit 2) in every command.

#![cfg(feature = "cli")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use mvledger::{Account, Ledger, LedgerOptions, Transfer};

fn mvledger(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mvledger"))
        .args(args)
        .output()
        .expect("run mvledger")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
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
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

#[test]
fn bench_small_workload_succeeds_and_prints_its_rate() {
    let out = expect(0, &["bench", "--transfers", "2000", "--accounts", "100"]);
    assert!(out.contains("transfers/s"), "{out}");
    assert!(out.contains("verified after reopen"), "{out}");
}

#[test]
fn bench_json_is_one_object_with_the_figures() {
    let out = expect(
        0,
        &[
            "bench",
            "--transfers",
            "2000",
            "--accounts",
            "100",
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("bench --json parses");
    assert_eq!(v["transfers"], 2000);
    assert!(v["transfers_per_s"].as_f64().expect("a rate") > 0.0);
    assert!(v["latency_per_call_ns"]["p99"].is_u64());
    assert_eq!(v["verification"]["ok"], true);
    assert_eq!(v["ok"], true, "{v}");
    // The account phase, as the text's "created 100 accounts in 1 call".
    assert_eq!(v["accounts_created"]["accounts"], 100, "{v}");
    assert_eq!(v["accounts_created"]["calls"], 1, "{v}");
    assert!(v["accounts_created"]["seconds"].as_f64().expect("seconds") >= 0.0);
}

/// A run that cannot go on still prints one object with `--json`: `ok`
/// false and the message (which also goes to stderr), so that a script
/// reading stdout sees why.
#[test]
fn bench_json_of_a_failed_run_is_still_one_object() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("a file");
    std::fs::write(&file, "not a directory").expect("write");
    let out = mvledger(&[
        "bench",
        "--transfers",
        "100",
        "--json",
        "--dir",
        file.to_str().expect("utf-8"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let v: serde_json::Value =
        serde_json::from_str(stdout(&out).trim()).expect("one JSON object on stdout");
    assert_eq!(v["ok"], false, "{v}");
    let error = v["error"].as_str().expect("a message");
    assert!(error.contains("a file"), "{error}");
    assert!(stderr(&out).contains(error), "{}", stderr(&out));
}

/// README: the temporary data directory is "removed afterwards unless
/// `--keep`"; Ctrl-C in the middle of the transfers must not leave it
/// behind either. The run stops, removes it, says so, and exits 130.
#[test]
fn ctrl_c_during_bench_removes_the_temporary_directory_and_exits_130() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    use std::time::{Duration, Instant};

    let tmp = tempfile::tempdir().expect("tempdir");
    // One synced call per transfer: many seconds of work, little memory.
    let mut child = Command::new(env!("CARGO_BIN_EXE_mvledger"))
        .args([
            "bench",
            "--accounts",
            "1000",
            "--transfers",
            "1000000",
            "--batch",
            "1",
        ])
        .env("TMPDIR", tmp.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start mvledger bench");
    let stdout = child.stdout.take().expect("stdout");
    let mut lines = BufReader::new(stdout).lines();
    let mut printed = String::new();
    // The transfer phase starts right after this line.
    while !printed.contains("created 1,000 accounts") {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("bench ended early:\n{printed}"))
            .expect("read stdout");
        printed.push_str(&line);
        printed.push('\n');
    }
    let made: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("read TMPDIR")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(made.len(), 1, "one data directory in TMPDIR: {made:?}");
    std::thread::sleep(Duration::from_millis(300));
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success());

    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("bench still running 60 s after Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("read stderr");
    for line in lines {
        printed.push_str(&line.expect("read stdout"));
    }
    assert_eq!(
        status.code(),
        Some(130),
        "stdout:\n{printed}\nstderr:\n{err}"
    );
    assert!(
        !printed.contains("verified"),
        "it stopped early:\n{printed}"
    );
    assert!(err.contains("interrupted"), "{err}");
    assert!(
        err.contains(&format!("data directory removed: {}", made[0].display())),
        "{err}"
    );
    assert!(!made[0].exists(), "{} left behind", made[0].display());
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .expect("read TMPDIR")
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn bad_arguments_exit_2_naming_the_argument() {
    let out = mvledger(&["bench", "--accounts", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--accounts"), "{}", stderr(&out));

    let out = mvledger(&["bench", "--sync", "sometimes"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--sync"), "{}", stderr(&out));

    let out = mvledger(&[
        "transfer", "--dir", "x", "--id", "1", "--post", "2", "--void", "3",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--void"), "{}", stderr(&out));

    let out = mvledger(&["account", "create", "--dir", "x", "--id", "ten"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--id"), "{}", stderr(&out));

    let out = mvledger(&["lookup", "--dir", "x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--account"), "{}", stderr(&out));
}

/// A count of one reads "1 call", not "1 calls", in every command; and
/// every command's --help ends with its exit codes.
#[test]
fn counts_of_one_read_in_the_singular_and_every_help_says_its_exit_codes() {
    let out = expect(0, &["bench", "--accounts", "2", "--transfers", "1"]);
    assert!(out.contains(", 1 transfer (0% pending)"), "{out}");
    assert!(out.contains("1 thread,"), "{out}");
    assert!(out.contains("created 2 accounts in 1 call,"), "{out}");
    assert!(out.contains("ran 1 transfer in"), "{out}");
    assert!(out.contains(" s, 1 call\n"), "{out}");

    let tmp = tempfile::tempdir().expect("tempdir");
    ledger_with_records(tmp.path(), 1, false);
    let out = inspect(0, tmp.path());
    assert!(
        out.contains("ok: 1 segment (3 records) and 0 checkpoints check out"),
        "{out}"
    );
    let segment = &files_with(tmp.path(), "wal")[0];
    let mut bytes = std::fs::read(segment).expect("read");
    bytes[32 + 9 + 20] ^= 0x40;
    std::fs::write(segment, &bytes).expect("write");
    let out = inspect(1, tmp.path());
    assert!(out.contains("failed: 1 damaged place\n"), "{out}");

    let d = tmp.path().join("books");
    let d = d.to_str().expect("utf-8");
    two_accounts(d);
    transfer(0, d, "10", "1", "2", "100");
    let out = expect(0, &["history", "--dir", d, "--account", "2"]);
    assert!(out.contains("\n1 transfer:\n"), "{out}");

    for command in [
        &["bench"][..],
        &["inspect"],
        &["account", "create"],
        &["transfer"],
        &["lookup"],
        &["history"],
    ] {
        let out = expect(0, &[command, &["--help"]].concat());
        assert!(out.contains("Exit codes: 0 "), "{command:?}: {out}");
    }
}

/// `--theta` is the skew of `--dist zipf`; given without it, it would be
/// ignored without a word, so it is refused; and it has an upper bound
/// (1e308 used to run and print a 309-digit banner).
#[test]
fn theta_needs_dist_zipf_and_stays_in_range() {
    let out = mvledger(&["bench", "--theta", "0.5", "--transfers", "10"]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("--theta 0.5 needs --dist zipf"), "{err}");
    // Under --json, one JSON object says so too.
    let out = mvledger(&["bench", "--theta", "0.5", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    let v: serde_json::Value =
        serde_json::from_str(stdout(&out).trim()).expect("bench --json error parses");
    assert_eq!(v["ok"], false);
    let error = v["error"].as_str().expect("error");
    assert!(error.contains("--theta 0.5 needs --dist zipf"), "{error}");

    for theta in ["1e308", "100.5", "-1", "NaN", "inf"] {
        let out = mvledger(&["bench", "--dist", "zipf", &format!("--theta={theta}")]);
        assert_eq!(out.status.code(), Some(2), "{theta}");
        assert!(
            stderr(&out).contains("--theta"),
            "{theta}: {}",
            stderr(&out)
        );
    }

    let out = expect(
        0,
        &[
            "bench",
            "--dist",
            "zipf",
            "--theta",
            "100",
            "--accounts",
            "10",
            "--transfers",
            "100",
        ],
    );
    assert!(out.contains("zipf (theta 100)"), "{out}");
    let out = expect(
        0,
        &[
            "bench",
            "--dist",
            "zipf",
            "--accounts",
            "10",
            "--transfers",
            "100",
            "--json",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("bench --json parses");
    assert_eq!(v["config"]["theta"], 0.99);
}

/// Creates the bank's account 1 (no limit) and a customer's account 2
/// (debits must not exceed credits, with history) in `dir`.
fn two_accounts(dir: &str) {
    let out = expect(
        0,
        &[
            "account", "create", "--dir", dir, "--id", "1", "--ledger", "7", "--code", "1",
        ],
    );
    assert!(out.contains("account 1 created"), "{out}");
    let out = expect(
        0,
        &[
            "account",
            "create",
            "--dir",
            dir,
            "--id",
            "2",
            "--ledger",
            "7",
            "--code",
            "1",
            "--flags",
            "debits-must-not-exceed-credits,history",
        ],
    );
    assert!(out.contains("debits-must-not-exceed-credits"), "{out}");
}

fn transfer(code: i32, dir: &str, id: &str, from: &str, to: &str, amount: &str) -> String {
    let args = [
        "transfer", "--dir", dir, "--id", id, "--from", from, "--to", to, "--amount", amount,
        "--ledger", "7", "--code", "1",
    ];
    expect(code, &args)
}

fn data_dir(tmp: &tempfile::TempDir) -> String {
    tmp.path().join("data").to_str().expect("utf-8").to_string()
}

#[test]
fn accounts_transfers_lookup_and_history_round_trip() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = &data_dir(&tmp);
    two_accounts(dir);

    let out = transfer(0, dir, "10", "1", "2", "100");
    assert!(out.contains("transfer 10 accepted"), "{out}");
    let out = transfer(1, dir, "11", "2", "1", "500");
    assert!(
        out.contains("transfer 11 refused: exceeds credits"),
        "{out}"
    );
    let out = expect(
        1,
        &[
            "account", "create", "--dir", dir, "--id", "1", "--ledger", "7", "--code", "1",
        ],
    );
    assert!(out.contains("account 1 refused: exists"), "{out}");
    transfer(0, dir, "12", "2", "1", "40");

    let out = expect(
        0,
        &["lookup", "--dir", dir, "--account", "2", "--transfer", "12"],
    );
    assert!(out.contains("posted           40"), "{out}");
    assert!(out.contains("posted          100"), "{out}");
    assert!(out.contains("balance  60"), "{out}");
    assert!(out.contains("transfer 12  amount 40  from 2 to 1"), "{out}");

    let out = expect(
        1,
        &["lookup", "--dir", dir, "--account", "1", "--account", "99"],
    );
    assert!(out.contains("balance  -60"), "{out}");
    assert!(out.contains("account 99 not found"), "{out}");
    let out = expect(1, &["lookup", "--dir", dir, "--transfer", "11"]);
    assert!(out.contains("transfer 11 not found"), "{out}");

    let out = expect(0, &["history", "--dir", dir, "--account", "2"]);
    assert!(out.contains("2 transfers:"), "{out}");
    let first = out.find("transfer 10").expect("transfer 10 listed");
    let second = out.find("transfer 12").expect("transfer 12 listed");
    assert!(first < second, "oldest first:\n{out}");
    assert!(out.contains("net 100") && out.contains("net 60"), "{out}");
    let out = expect(
        0,
        &[
            "history",
            "--dir",
            dir,
            "--account",
            "2",
            "--reverse",
            "--limit",
            "1",
        ],
    );
    assert!(
        out.contains("the last 1 transfer, newest first (more with --limit N):")
            && out.contains("transfer 12"),
        "{out}"
    );
    assert!(!out.contains("transfer 10"), "{out}");
    // Cut at the limit, the heading must not read like the total; at
    // exactly the limit, nothing is cut.
    let out = expect(
        0,
        &["history", "--dir", dir, "--account", "2", "--limit", "1"],
    );
    assert!(
        out.contains("the first 1 transfer, oldest first (more with --limit N):")
            && out.contains("transfer 10")
            && !out.contains("transfer 12"),
        "{out}"
    );
    let out = expect(
        0,
        &["history", "--dir", dir, "--account", "2", "--limit", "2"],
    );
    assert!(out.contains("\n2 transfers:\n"), "{out}");
    assert!(!out.contains("more with"), "{out}");
    let out = expect(1, &["history", "--dir", dir, "--account", "3"]);
    assert!(out.contains("account 3 not found"), "{out}");
}

/// `lookup` and `history` give times as UTC dates, to the nanosecond,
/// beside the ledger's timestamp: the one `date -u` gives for it.
#[test]
fn times_read_as_utc_dates_beside_the_timestamp() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = &data_dir(&tmp);
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_nanos() as u64
    };
    let before = now();
    two_accounts(dir);
    transfer(0, dir, "10", "1", "2", "100");
    let after = now();
    let out = expect(
        0,
        &["lookup", "--dir", dir, "--account", "1", "--transfer", "10"],
    );
    // `created  2026-12-01 02:41:24.425656391 UTC (ts 1796092884425656391)`
    // and `at <date> (ts N)` for the transfer.
    let mut dates = Vec::new();
    for line in out.lines() {
        let Some((left, ts)) = line.trim_end_matches(')').split_once("(ts ") else {
            continue;
        };
        let ts: u64 = ts.split(')').next().unwrap().parse().expect("a ts");
        assert!((before..=after).contains(&ts), "{ts} not in the run: {out}");
        let date = left
            .trim()
            .trim_start_matches("created")
            .trim_start_matches("at")
            .trim();
        let secs = (ts / 1_000_000_000).to_string();
        let expected = std::process::Command::new("date")
            .args(["-u", "-d", &format!("@{secs}"), "+%F %T"])
            .output()
            .expect("date");
        let expected = String::from_utf8_lossy(&expected.stdout).trim().to_string();
        assert_eq!(
            date,
            format!("{expected}.{:09} UTC", ts % 1_000_000_000),
            "{out}"
        );
        dates.push(date.to_string());
    }
    assert_eq!(dates.len(), 2, "an account's and a transfer's time: {out}");
    let out = expect(0, &["history", "--dir", dir, "--account", "1"]);
    assert!(
        out.contains(&format!("  {}  transfer 10", dates[1])),
        "the transfer's date heads its line: {out}"
    );
}

#[test]
fn pending_transfers_are_posted_and_voided() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = &data_dir(&tmp);
    two_accounts(dir);
    transfer(0, dir, "10", "1", "2", "100");
    let pending = |id| {
        let args = [
            "transfer",
            "--dir",
            dir,
            "--id",
            id,
            "--from",
            "2",
            "--to",
            "1",
            "--amount",
            "30",
            "--ledger",
            "7",
            "--code",
            "1",
            "--pending",
            "--timeout",
            "3600",
        ];
        expect(0, &args)
    };
    let out = pending("20");
    assert!(
        out.contains("[pending]") && out.contains("timeout 3600 s  still reserved"),
        "{out}"
    );
    pending("21");
    let out = expect(0, &["lookup", "--dir", dir, "--account", "2"]);
    assert!(
        out.contains("pending           60  posted            0"),
        "{out}"
    );

    let out = expect(0, &["transfer", "--dir", dir, "--id", "22", "--post", "20"]);
    assert!(out.contains("transfer 22  amount 30  from 2 to 1"), "{out}");
    let out = expect(0, &["transfer", "--dir", dir, "--id", "23", "--void", "21"]);
    assert!(out.contains("void-pending-transfer"), "{out}");
    let out = expect(1, &["transfer", "--dir", dir, "--id", "24", "--post", "21"]);
    assert!(
        out.contains("transfer 24 refused: pending transfer already voided"),
        "{out}"
    );

    let out = expect(0, &["lookup", "--dir", dir, "--account", "2"]);
    assert!(
        out.contains("pending            0  posted           30"),
        "{out}"
    );
    assert!(out.contains("balance  70"), "{out}");
    // Where each pending transfer stands; nothing for a plain one.
    let out = expect(
        0,
        &[
            "lookup",
            "--dir",
            dir,
            "--transfer",
            "20",
            "--transfer",
            "21",
            "--transfer",
            "22",
        ],
    );
    assert!(out.contains("timeout 3600 s  since posted"), "{out}");
    assert!(out.contains("timeout 3600 s  since voided"), "{out}");
    assert!(!out.contains("still reserved"), "{out}");
}

/// A pending transfer past its timeout is shown expired by `lookup`, its
/// reservation released, before any other write comes (the commands
/// release what is due when they open the ledger).
#[test]
fn lookup_shows_a_pending_transfer_past_its_timeout_as_expired() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = &data_dir(&tmp);
    two_accounts(dir);
    let args = [
        "transfer",
        "--dir",
        dir,
        "--id",
        "30",
        "--from",
        "1",
        "--to",
        "2",
        "--amount",
        "50",
        "--ledger",
        "7",
        "--code",
        "1",
        "--pending",
        "--timeout",
        "1",
    ];
    let out = expect(0, &args);
    assert!(out.contains("still reserved"), "{out}");
    std::thread::sleep(std::time::Duration::from_millis(1_200));
    let out = expect(
        0,
        &["lookup", "--dir", dir, "--transfer", "30", "--account", "1"],
    );
    assert!(out.contains("since expired"), "{out}");
    assert!(!out.contains("still reserved"), "{out}");
    assert!(
        out.contains("pending            0  posted            0"),
        "{out}"
    );
    let out = expect(1, &["transfer", "--dir", dir, "--id", "31", "--post", "30"]);
    assert!(out.contains("pending transfer expired"), "{out}");
}

/// A `--dir` that is there but cannot be read is the disk's answer (exit
/// 1), not a missing directory; one under a file is a bad argument.
#[test]
fn an_unusable_dir_is_told_apart_from_a_missing_one() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").expect("write");
    let under = file.join("sub");
    let under = under.to_str().expect("utf-8");
    for args in [
        &["lookup", "--dir", under, "--account", "1"][..],
        &[
            "account", "create", "--dir", under, "--id", "1", "--ledger", "1", "--code", "1",
        ],
    ] {
        let out = mvledger(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("is not a directory"),
            "{}",
            stderr(&out)
        );
    }
    // A symbolic link to nothing: a bad argument that says so.
    let link = tmp.path().join("link");
    std::os::unix::fs::symlink(tmp.path().join("nowhere"), &link).expect("symlink");
    let link = link.to_str().expect("utf-8");
    for args in [
        &[
            "account", "create", "--dir", link, "--id", "1", "--ledger", "1", "--code", "1",
        ][..],
        &[
            "bench",
            "--dir",
            link,
            "--accounts",
            "10",
            "--transfers",
            "10",
        ],
    ] {
        let out = mvledger(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("symbolic link to nothing"),
            "{}",
            stderr(&out)
        );
    }
    assert!(!tmp.path().join("nowhere").exists(), "nothing made");
}

/// A ledger in `dir` with two accounts, 1 and 2, and `transfers`
/// transfers from 1 to 2 (ids 1, 2, ...; transfer `id` moves
/// `amount(id)`), with a checkpoint after each transfer `id` for which
/// `checkpoint(id)` holds. Closed when it returns.
fn ledger_with_transfers(
    dir: &Path,
    transfers: u128,
    amount: impl Fn(u128) -> u128,
    checkpoint: impl Fn(u128) -> bool,
) {
    let ledger = Ledger::open(dir, LedgerOptions::default()).expect("open");
    let account = |id| Account {
        id,
        ledger: 1,
        code: 1,
        ..Account::default()
    };
    ledger
        .create_accounts(&[account(1), account(2)])
        .expect("accounts");
    for id in 1..=transfers {
        let t = Transfer {
            id,
            debit_account_id: 1,
            credit_account_id: 2,
            amount: amount(id),
            ledger: 1,
            code: 1,
            ..Transfer::default()
        };
        ledger.create_transfers(&[t]).expect("transfer");
        if checkpoint(id) {
            ledger.checkpoint().expect("checkpoint");
        }
    }
}

/// `ledger_with_transfers` with transfer `id` moving `id`, and a
/// checkpoint after the first transfer when asked.
fn ledger_with_records(dir: &Path, transfers: u128, checkpoint: bool) {
    ledger_with_transfers(dir, transfers, |id| id, |id| checkpoint && id == 1);
}

fn files_with(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    found.sort();
    found
}

fn inspect(code: i32, dir: &Path) -> String {
    expect(code, &["inspect", dir.to_str().expect("utf-8")])
}

/// `inspect` on a directory whose engine commits and checkpoints all the
/// while: a segment or checkpoint listed, then removed by a checkpoint
/// before it is read, is a warning, not damage (it was, in about 1 run in
/// 40 of this loop).
#[test]
fn inspect_of_a_directory_being_checkpointed_finds_no_damage() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let tmp = tempfile::tempdir().expect("tempdir");
    let options = mvledger::Options {
        segment_bytes: 4096,
        ..mvledger::Options::default()
    };
    let engine = mvledger::Engine::open(tmp.path(), options).expect("open");
    let stop = AtomicBool::new(false);
    std::thread::scope(|scope| {
        scope.spawn(|| {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..20 {
                    let mut txn = engine.begin();
                    txn.put(format!("key {}", i % 500), [7u8; 200])
                        .expect("put");
                    txn.commit().expect("commit");
                    i += 1;
                }
                engine.checkpoint().expect("checkpoint");
            }
        });
        let started = std::time::Instant::now();
        let mut runs = 0;
        while runs < 200 && started.elapsed() < std::time::Duration::from_secs(8) {
            let out = mvledger(&["inspect", tmp.path().to_str().expect("utf-8")]);
            runs += 1;
            if out.status.code() != Some(0) {
                stop.store(true, Ordering::Relaxed);
                panic!("run {runs}: {}{}", stdout(&out), stderr(&out));
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
}

#[test]
fn inspect_lists_a_healthy_directory_even_while_it_is_open() {
    let tmp = tempfile::tempdir().expect("tempdir");
    ledger_with_records(tmp.path(), 5, true);
    let held = Ledger::open(tmp.path(), LedgerOptions::default()).expect("reopen");

    let out = inspect(0, tmp.path());
    // The layer stamp (ts 1), the accounts (ts 2): the checkpoint after the
    // first transfer (ts 3) started a new segment at ts 4 and let the one
    // before go.
    let segments = files_with(tmp.path(), "wal");
    assert_eq!(segments.len(), 1);
    assert!(out.contains("log segments: 1"), "{out}");
    assert!(out.contains("00000000000000000004.wal"), "{out}");
    assert!(out.contains("checkpoints: 1"), "{out}");
    assert!(out.contains("00000000000000000003.ckpt"), "{out}");
    assert!(out.contains("LOCK: present"), "{out}");
    assert!(out.contains("ok:"), "{out}");

    let out = expect(
        0,
        &["inspect", "--json", tmp.path().to_str().expect("utf-8")],
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).expect("inspect --json parses");
    assert_eq!(v["ok"], true);
    // The layer stamp (a commit record), two accounts in one call and
    // five transfers: six logical records, the last four of them after
    // the checkpoint.
    let segment = &v["segments"][0];
    assert_eq!(segment["first_ts"], 4);
    assert_eq!(segment["records"], 4);
    assert_eq!(segment["logical_records"], 4);
    assert_eq!(segment["commit_records"], 0);
    assert_eq!(segment["first_record_ts"], 4);
    assert_eq!(segment["last_record_ts"], 7);
    assert_eq!(v["checkpoints"][0]["ts"], 3);
    assert!(v["checkpoints"][0]["entries"].as_u64().expect("entries") > 0);
    assert_eq!(v["lock"]["present"], true);
    assert_eq!(v["damages"].as_array().map(Vec::len), Some(0));
    drop(held);
}

#[test]
fn inspect_fails_on_a_flipped_byte_naming_file_and_offset() {
    let tmp = tempfile::tempdir().expect("tempdir");
    ledger_with_records(tmp.path(), 5, false);
    let segment = &files_with(tmp.path(), "wal")[0];
    let mut bytes = std::fs::read(segment).expect("read");
    // The first record starts right after the 32-byte header; its payload
    // starts 9 bytes later. Later records stay valid.
    bytes[32 + 9 + 20] ^= 0x40;
    std::fs::write(segment, &bytes).expect("write");

    let out = inspect(1, tmp.path());
    assert!(out.contains("DAMAGE"), "{out}");
    assert!(
        out.contains(&format!("{} at offset 32:", segment.display())),
        "{out}"
    );
    assert!(out.contains("checksum"), "{out}");
}

#[test]
fn inspect_fails_on_a_truncated_checkpoint() {
    let tmp = tempfile::tempdir().expect("tempdir");
    ledger_with_records(tmp.path(), 3, true);
    let checkpoint = &files_with(tmp.path(), "ckpt")[0];
    let len = std::fs::metadata(checkpoint).expect("stat").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(checkpoint)
        .expect("open");
    file.set_len(len - 10).expect("truncate");

    let out = inspect(1, tmp.path());
    assert!(out.contains("DAMAGE"), "{out}");
    assert!(
        out.contains(&format!("{} at offset", checkpoint.display())),
        "{out}"
    );
}

#[test]
fn inspect_passes_a_torn_tail_with_a_warning() {
    let tmp = tempfile::tempdir().expect("tempdir");
    ledger_with_records(tmp.path(), 3, false);
    let segment = &files_with(tmp.path(), "wal")[0];
    let len = std::fs::metadata(segment).expect("stat").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(segment)
        .expect("open");
    // The close record (17 bytes) and 5 bytes of the last record: what a
    // crash in the middle of that record's write leaves (no close record).
    file.set_len(len - 22).expect("truncate");

    let out = inspect(0, tmp.path());
    assert!(out.contains("warning"), "{out}");
    assert!(out.contains("torn tail"), "{out}");
    assert!(out.contains("will be cut on next open"), "{out}");
    assert!(out.contains("closed cleanly: no"), "{out}");
    assert!(!out.contains("DAMAGE"), "{out}");
    // Nothing was cut by inspect.
    assert_eq!(std::fs::metadata(segment).expect("stat").len(), len - 22);
}

/// A clean close ends the log with a close record, so a flipped bit in the
/// last transfer record of a closed ledger is damage, with its file and
/// offset, not a torn tail that the next open would cut in silence.
#[test]
fn inspect_finds_a_flipped_bit_in_the_last_record_of_a_closed_log() {
    let tmp = tempfile::tempdir().expect("tempdir");
    ledger_with_records(tmp.path(), 3, false);
    let dir = tmp.path().to_str().expect("utf-8");
    let intact = expect(0, &["inspect", "--json", dir]);
    let v: serde_json::Value = serde_json::from_str(intact.trim()).expect("json");
    assert_eq!(v["closed_cleanly"], true, "{intact}");
    // One close record per clean close that wrote something; the last
    // one ends the only segment.
    let closes = v["segments"][0]["close_records"]
        .as_u64()
        .expect("close_records");
    assert!(closes >= 1, "{intact}");
    assert!(inspect(0, tmp.path()).contains("closed cleanly: yes"));

    let segment = &files_with(tmp.path(), "wal")[0];
    let mut bytes = std::fs::read(segment).expect("read");
    // 17 bytes of close record, then the last record's last byte.
    let at = bytes.len() - 18;
    bytes[at] ^= 0x01;
    std::fs::write(segment, &bytes).expect("write");
    let out = inspect(1, tmp.path());
    assert!(out.contains("DAMAGE"), "{out}");
    assert!(out.contains("checksum"), "{out}");
    assert!(!out.contains("torn"), "{out}");
    assert!(out.contains("closed cleanly: not known"), "{out}");
}

/// A directory or a dangling symlink under a segment's name is damage at
/// offset 0, reported beside everything else, as a checkpoint's is; it
/// used to abort the whole inspection with nothing listed.
#[test]
fn inspect_reports_an_unreadable_segment_as_damage_and_lists_the_rest() {
    let tmp = tempfile::tempdir().expect("tempdir");
    ledger_with_records(tmp.path(), 3, false);
    let as_dir = tmp.path().join("00000000000000000300.wal");
    std::fs::create_dir(&as_dir).expect("mkdir");
    let dangling = tmp.path().join("00000000000000000400.wal");
    std::os::unix::fs::symlink(tmp.path().join("gone"), &dangling).expect("symlink");

    let out = inspect(1, tmp.path());
    assert!(out.contains("log segments: 3"), "{out}");
    assert!(out.contains("00000000000000000001.wal"), "{out}");
    for path in [&as_dir, &dangling] {
        assert!(
            out.contains(&format!(
                "DAMAGE: {} at offset 0: I/O error",
                path.display()
            )),
            "{out}"
        );
    }
    assert!(out.contains("failed: 2 damaged places"), "{out}");
}

/// A named pipe under a segment's name is damage too; reading it would
/// wait for a writer that never comes, and `inspect` used to hang there.
#[test]
fn inspect_reports_a_pipe_under_a_segment_name_without_waiting_on_it() {
    let tmp = tempfile::tempdir().expect("tempdir");
    ledger_with_records(tmp.path(), 3, false);
    let pipe = tmp.path().join("00000000000000000300.wal");
    let made = Command::new("mkfifo").arg(&pipe).status().expect("mkfifo");
    assert!(made.success(), "mkfifo failed");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mvledger"))
        .args(["inspect", tmp.path().to_str().expect("utf-8")])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("run mvledger");
    let started = std::time::Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if started.elapsed() > std::time::Duration::from_secs(30) {
            child.kill().expect("kill");
            panic!("inspect hung on a pipe under a segment name");
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("DAMAGE: {} at offset 0", pipe.display())),
        "{text}"
    );
}

/// `inspect --json` prints one object even when it cannot inspect the
/// directory at all: `ok` false and the message, which also goes to
/// stderr.
#[test]
fn inspect_json_of_a_directory_it_cannot_inspect_is_still_one_object() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).expect("mkdir");
    std::fs::write(other.join("notes.txt"), "hi").expect("write");
    let missing = tmp.path().join("missing");
    for dir in [&empty, &other, &missing] {
        let d = dir.to_str().expect("utf-8");
        let out = mvledger(&["inspect", "--json", d]);
        assert_eq!(out.status.code(), Some(2), "{d}");
        let v: serde_json::Value = serde_json::from_str(stdout(&out).trim())
            .unwrap_or_else(|e| panic!("{d}: {e}: {:?}", stdout(&out)));
        assert_eq!(v["ok"], false, "{v}");
        assert_eq!(v["dir"], d, "{v}");
        let error = v["error"].as_str().expect("an error message");
        assert!(error.contains(d), "{error}");
        assert!(stderr(&out).contains(error), "{}", stderr(&out));
    }
}

#[test]
fn inspect_of_a_missing_directory_is_a_bad_argument() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let out = mvledger(&["inspect", tmp.path().join("nope").to_str().expect("utf-8")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("nope"), "{}", stderr(&out));
}

/// A damaged newest checkpoint: `open` (here under `lookup`) recovers
/// around it from the older one and the log, and says so on stderr;
/// `inspect` reports the damage before and the set-aside file after
/// (exit 1 both times: damage on disk is worth a look).
#[test]
fn a_damaged_checkpoint_is_reported_by_open_and_by_inspect() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    // Two checkpoints (after transfers 1 and 2), then a third transfer.
    ledger_with_transfers(dir, 3, |_| 10, |id| id < 3);
    let checkpoints = files_with(dir, "ckpt");
    assert_eq!(checkpoints.len(), 2, "{checkpoints:?}");
    let newest = checkpoints.last().expect("newest");
    let mut bytes = std::fs::read(newest).expect("read");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(newest, bytes).expect("write");
    inspect(1, dir);

    let d = dir.to_str().expect("utf-8");
    let out = mvledger(&["lookup", "--dir", d, "--account", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: recovery set aside a damaged checkpoint"),
        "{}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("30"),
        "all three transfers: {}",
        stdout(&out)
    );
    let out = inspect(1, dir);
    assert!(out.contains(".ckpt.damaged"), "{out}");
}

/// Bytes after the last record of a cleanly closed log (here: garbage
/// appended to the last segment): `open` (under `lookup`) cuts them, as
/// recovery must to append again, and says so on stderr with the file and
/// offset; a second `lookup` has nothing to say.
#[test]
fn a_cut_torn_tail_is_reported_by_the_command_that_opened_the_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path();
    ledger_with_transfers(dir, 3, |_| 10, |_| false);
    let segments = files_with(dir, "wal");
    let last = segments.last().expect("a segment");
    let end = std::fs::metadata(last).expect("metadata").len();
    let mut bytes = std::fs::read(last).expect("read");
    bytes.extend_from_slice(&[0x5A; 40]);
    std::fs::write(last, bytes).expect("write");

    let d = dir.to_str().expect("utf-8");
    let out = mvledger(&["lookup", "--dir", d, "--account", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let warning = format!(
        "warning: recovery cut 40 bytes off {} at offset {end}",
        last.display()
    );
    assert!(stderr(&out).contains(&warning), "{}", stderr(&out));
    let out = mvledger(&["lookup", "--dir", d, "--account", "2"]);
    assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
}

/// Commands never turn a directory of other files into a data directory,
/// and say what is wrong with a path that is not a directory or holds no
/// log; such a path is a bad argument (exit 2, as the README says), in
/// every command.
#[test]
fn other_directories_and_files_are_refused_as_bad_arguments_and_left_alone() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let other = tmp.path().join("other");
    std::fs::create_dir(&other).expect("mkdir");
    std::fs::write(other.join("notes.txt"), "hi").expect("write");
    let o = other.to_str().expect("utf-8");
    for args in [
        vec!["lookup", "--dir", o, "--account", "1"],
        vec!["history", "--dir", o, "--account", "1"],
        vec![
            "account", "create", "--dir", o, "--id", "1", "--ledger", "1", "--code", "1",
        ],
    ] {
        let out = mvledger(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&out).contains("not an mvledger data directory"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    let out = mvledger(&["inspect", o]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("not an mvledger data directory"),
        "{}",
        stderr(&out)
    );
    let left: Vec<_> = std::fs::read_dir(&other)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, ["notes.txt"], "nothing was written there");

    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").expect("write");
    let f = file.to_str().expect("utf-8");
    for args in [
        vec![
            "account", "create", "--dir", f, "--id", "1", "--ledger", "1", "--code", "1",
        ],
        vec!["bench", "--dir", f, "--accounts", "10", "--transfers", "10"],
    ] {
        let out = mvledger(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            stderr(&out).contains("is not a directory"),
            "{args:?}: {}",
            stderr(&out)
        );
    }
    assert_eq!(std::fs::read(&file).expect("read"), b"x");
    // Below a file, the directory cannot be made: a bad argument, as for
    // bench, which names the path once.
    let below = file.join("ledger");
    let b = below.to_str().expect("utf-8");
    let out = mvledger(&[
        "account", "create", "--dir", b, "--id", "1", "--ledger", "1", "--code", "1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(stderr(&out).matches(b).count(), 1, "{}", stderr(&out));

    // bench wants a new or empty directory, not one of other files.
    let out = mvledger(&["bench", "--dir", o, "--accounts", "10", "--transfers", "10"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));

    // The commands that need a ledger refuse a directory with none.
    let missing = tmp.path().join("missing");
    let m = missing.to_str().expect("utf-8");
    let out = mvledger(&["lookup", "--dir", m, "--account", "1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("create an account first"),
        "{}",
        stderr(&out)
    );
    assert!(!missing.exists());
}

/// A segment missing between the two kept checkpoints: the newest covers
/// the gap, so the directory opens, but the older one can no longer stand
/// in for it. `inspect` warns (exit 0), naming the gap; a gap after the
/// newest checkpoint stays damage (exit 1).
#[test]
fn inspect_warns_of_a_gap_only_the_newest_checkpoint_covers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let options = || mvledger::Options {
        segment_bytes: 4096,
        ..mvledger::Options::default()
    };
    {
        let engine = mvledger::Engine::open(tmp.path(), options()).expect("open");
        for i in 0..240 {
            let mut t = engine.begin();
            t.put(format!("k{i:05}"), format!("value-{i}-").repeat(3))
                .expect("put");
            t.commit().expect("commit");
            if i == 80 || i == 160 {
                engine.checkpoint().expect("checkpoint");
            }
        }
    }
    let first_ts = |p: &PathBuf| -> u64 {
        let name = p.file_stem().and_then(|s| s.to_str()).expect("name");
        name.parse().expect("a ts")
    };
    let segments = files_with(tmp.path(), "wal");
    let newest = files_with(tmp.path(), "ckpt").iter().map(first_ts).max();
    let newest = newest.expect("a checkpoint");
    // A segment that starts after the older checkpoint and whose successor
    // starts within what the newest covers.
    let i = (1..segments.len() - 1)
        .find(|&i| first_ts(&segments[i + 1]) <= newest + 1)
        .expect("a segment between the checkpoints");
    std::fs::remove_file(&segments[i]).expect("remove");
    let out = inspect(0, tmp.path());
    assert!(out.contains("gap in the log"), "{out}");
    assert!(out.contains("no older one"), "{out}");
    assert!(mvledger::Engine::open(tmp.path(), options()).is_ok());

    // The last segment's predecessor gone: a gap the checkpoint does not
    // cover is damage.
    let segments = files_with(tmp.path(), "wal");
    std::fs::remove_file(&segments[segments.len() - 2]).expect("remove");
    let out = inspect(1, tmp.path());
    assert!(out.contains("gap in the log"), "{out}");
}
