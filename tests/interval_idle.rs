//! Under `SyncMode::Interval(d)` an idle log wakes its sync thread about
//! once per `d`, not every millisecond (a test binary of its own: it
//! counts the wake-ups of every thread named `mvledger-sync` in the
//! process, so no other engine may run beside it).

use std::time::Duration;

use mvledger::{Engine, Options, SyncMode};

/// The voluntary context switches of the threads named `mvledger-sync`
/// (Linux `/proc`; 0 where it is missing).
fn sync_thread_wakeups() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    let mut total = 0;
    for task in tasks.flatten() {
        let task = task.path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.trim() != "mvledger-sync" {
            continue;
        }
        let status = std::fs::read_to_string(task.join("status")).unwrap_or_default();
        for line in status.lines() {
            if let Some(n) = line.strip_prefix("voluntary_ctxt_switches:") {
                total += n.trim().parse::<u64>().unwrap_or(0);
            }
        }
    }
    total
}

/// An idle log under `Interval(d)` wakes its thread about once per `d`,
/// not every millisecond: with nothing to sync, the last sync's age says
/// nothing about when to look again. (A review found 912 wake-ups a
/// second at a 200 ms interval.)
#[test]
fn an_idle_log_under_interval_does_not_wake_its_thread_every_millisecond() {
    let every = Duration::from_millis(200);
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::open(
        dir.path(),
        Options {
            sync: SyncMode::Interval(every),
            ..Options::default()
        },
    )
    .unwrap();
    let mut txn = engine.begin();
    txn.put(b"k", b"v").unwrap();
    txn.commit().unwrap();
    // The commit's sync comes within one interval; then the log is idle.
    std::thread::sleep(every * 2);
    let before = sync_thread_wakeups();
    let window = Duration::from_secs(1);
    std::thread::sleep(window);
    let woke = sync_thread_wakeups().saturating_sub(before);
    let most = (window.as_millis() / every.as_millis()) as u64 * 3 + 3;
    assert!(
        woke <= most,
        "the idle interval thread woke {woke} times in {window:?} under Interval({every:?})"
    );
    assert!(
        engine.stats().durable_ts >= 1,
        "the commit was never synced"
    );
}
