//! The kubewire binary.
fn main() {}
