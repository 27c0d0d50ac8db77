//! kubewire-bench.
fn main() {}
