//! Fuzz target `cluster`: a thin wrapper around `harness::cluster` (see
//! `fuzz/harness/mod.rs`), which `tests/fuzz_corpus.rs` also replays.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness/mod.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::cluster(data));
