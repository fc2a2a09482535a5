//! Fuzz target; its invariants are in `checks/github_delivery.rs`, which the regular test suite
//! (`router/core/tests/fuzz_corpus.rs`) also replays over the committed corpus.
#![no_main]

#[path = "../checks/github_delivery.rs"]
mod check;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
