//! Placeholder until the plan layer lands.
fn main() {}
