//! The `triggerfish` binary.

fn main() {}
