//! ridectl
fn main() {}
