//! The `mvledger` command (being written).

fn main() {}
