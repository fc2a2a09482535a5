//! Fuzz target; its invariants are in `checks/kafka_record.rs`, which the regular test suite
//! (`router/core/tests/fuzz_corpus.rs`) also replays over the committed corpus.
#![no_main]

#[path = "../checks/kafka_record.rs"]
mod check;
#[path = "../checks/records.rs"]
mod records;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
