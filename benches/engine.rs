//! Storage-core benchmarks (being written).

fn main() {}
