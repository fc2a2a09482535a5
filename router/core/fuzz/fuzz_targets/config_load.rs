//! Fuzz target; its invariants are in `checks/config_load.rs`, which the regular test suite
//! (`router/core/tests/fuzz_corpus.rs`) also replays over the committed corpus.
#![no_main]

#[path = "../checks/config_load.rs"]
mod check;
#[path = "../checks/events.rs"]
mod events;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
