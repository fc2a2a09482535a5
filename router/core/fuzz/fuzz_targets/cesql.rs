//! Fuzz target; its invariants are in `checks/cesql.rs`, which the regular test suite
//! (`router/core/tests/fuzz_corpus.rs`) also replays over the committed corpus.
#![no_main]

#[path = "../checks/cesql.rs"]
mod check;
#[path = "../checks/events.rs"]
mod events;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
