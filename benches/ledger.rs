//! Ledger benchmarks (being written).

fn main() {}
