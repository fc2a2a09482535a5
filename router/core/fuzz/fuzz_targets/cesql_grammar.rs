//! Fuzz target; the grammar is in `checks/cesql_grammar.rs`, the invariants in
//! `checks/cesql.rs`, both replayed by the regular test suite (`router/core/tests/fuzz_corpus.rs`)
//! over the committed corpus.
#![no_main]

#[path = "../checks/cesql.rs"]
mod cesql;
#[path = "../checks/cesql_grammar.rs"]
mod check;
#[path = "../checks/events.rs"]
mod events;

libfuzzer_sys::fuzz_target!(|data: &[u8]| check::check(data));
