//! Ctrl-C during `bench`. The first SIGINT sets a flag; the run looks at it
//! between calls (each account batch, each transfer call in every thread,
//! after the reopen) and, once it sees it, stops submitting and fails with
//! `Exit::Interrupted` (exit code 130). Its temporary data directory is
//! then removed as at the end of any run (`DataDir`), and stderr says so;
//! a `--dir` or `--keep` directory is kept.
//!
//! A second Ctrl-C exits at once with 130, leaving the directory behind:
//! the way out when a step that cannot look at the flag takes long (the
//! reopen of a big ledger replays its log).
//!
//! Failure path: if the handler cannot be installed, Ctrl-C keeps its
//! default meaning (the process ends at once) and stderr says so.

use std::sync::atomic::{AtomicBool, Ordering};

use super::bench::Failure;

/// Set by the first Ctrl-C.
static REQUESTED: AtomicBool = AtomicBool::new(false);

/// Installs the handler; call once, before the run makes its directory.
pub fn install() {
    // ctrlc runs this on a thread of its own, not in the signal handler,
    // so it may print and exit.
    let installed = ctrlc::set_handler(|| {
        if REQUESTED.swap(true, Ordering::SeqCst) {
            eprintln!("mvledger: interrupted again: exiting now; the data directory stays");
            std::process::exit(130);
        }
        eprintln!("mvledger: interrupted: stopping (Ctrl-C again to exit at once)");
    });
    if let Err(e) = installed {
        eprintln!("mvledger: warning: Ctrl-C will not clean up: {e}");
    }
}

/// Whether Ctrl-C was pressed.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::Relaxed)
}

/// `Err` once Ctrl-C was pressed: the run stops there.
pub fn check() -> Result<(), Failure> {
    if requested() {
        Err(Failure::interrupted())
    } else {
        Ok(())
    }
}
