//! Fuzz target `record_decoder`: a thin wrapper around `harness::record_decoder` (see
//! `fuzz/harness/mod.rs`), which `tests/fuzz_corpus.rs` also replays.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../harness/mod.rs"]
mod harness;

fuzz_target!(|data: &[u8]| harness::record_decoder(data));
