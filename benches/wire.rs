//! Placeholder until the wire layer lands.
fn main() {}
