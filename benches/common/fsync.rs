//! The disk's own sync rate, the baseline every durable benchmark is
//! compared with in the same run (shared by benches/engine.rs and
//! benches/ledger.rs through `#[path]`).

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

/// Appends 100 bytes to `path` and `fdatasync`s it, once per iteration.
pub fn fsync_baseline(b: &mut criterion::Bencher<'_>, path: &Path) {
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open baseline file");
    let record = [0x5au8; 100];
    b.iter(|| {
        file.write_all(&record).expect("write");
        file.sync_data().expect("fdatasync");
    });
}
