//! Fuzz target; its invariants are in `checks/rocketmq_message.rs`, which the regular test
//! suite (`router/core/tests/fuzz_corpus.rs`) also replays over the committed corpus.
#![no_main]

#[path = "../checks/rocketmq_message.rs"]
mod check;
#[path = "../checks/records.rs"]
mod records;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
