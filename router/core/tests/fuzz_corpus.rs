//! Replays the fuzz corpora through the checks the fuzz targets run, so that every input a
//! campaign found interesting, and every crash reproducer, stays a regression test.
//!
//! Each target's body is a plain function, `router/core/fuzz/checks/TARGET.rs`'s `check`,
//! included here by path: the library ships no test code, and the fuzz crate (which needs
//! libFuzzer) stays out of the regular build. Inputs are read from the target's directories
//! under `router/core/fuzz/`: `seeds/`, `corpus/` (minimized with `cargo fuzz cmin`) and
//! `regressions/` (crash reproducers). A target without a committed corpus fails, so the
//! replay cannot pass vacuously, and so does a fuzz target that has no replay test here.

use std::fs;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

#[path = "../fuzz/checks/cesql.rs"]
mod cesql;
#[path = "../fuzz/checks/cesql_grammar.rs"]
mod cesql_grammar;
#[path = "../fuzz/checks/config_load.rs"]
mod config_load;
#[path = "../fuzz/checks/decode_batched.rs"]
mod decode_batched;
#[path = "../fuzz/checks/decode_binary.rs"]
mod decode_binary;
#[path = "../fuzz/checks/decode_structured.rs"]
mod decode_structured;
#[path = "../fuzz/checks/events.rs"]
mod events;
#[path = "../fuzz/checks/github_delivery.rs"]
mod github_delivery;
#[path = "../fuzz/checks/kafka_record.rs"]
mod kafka_record;
#[path = "../fuzz/checks/mns_documents.rs"]
mod mns_documents;
#[path = "../fuzz/checks/oss_notification.rs"]
mod oss_notification;
#[path = "../fuzz/checks/quic_frames.rs"]
mod quic_frames;
#[path = "../fuzz/checks/records.rs"]
mod records;
#[path = "../fuzz/checks/registry_webhook.rs"]
mod registry_webhook;
#[path = "../fuzz/checks/rocketmq_message.rs"]
mod rocketmq_message;
#[path = "../fuzz/checks/s3_notification.rs"]
mod s3_notification;

/// A target's check: panics when an invariant fails.
type Check = fn(&[u8]);

/// Every fuzz target and its check.
const TARGETS: &[(&str, Check)] = &[
    ("cesql", cesql::check),
    ("cesql_grammar", cesql_grammar::check),
    ("config_load", config_load::check),
    ("decode_batched", decode_batched::check),
    ("decode_binary", decode_binary::check),
    ("decode_structured", decode_structured::check),
    ("github_delivery", github_delivery::check),
    ("kafka_record", kafka_record::check),
    ("mns_documents", mns_documents::check),
    ("oss_notification", oss_notification::check),
    ("quic_frames", quic_frames::check),
    ("registry_webhook", registry_webhook::check),
    ("rocketmq_message", rocketmq_message::check),
    ("s3_notification", s3_notification::check),
];

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The files of `dir`, sorted; none when it does not exist.
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.is_file())
        .filter(|p| {
            !p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    out.sort();
    out
}

/// Runs `check` on every seed, corpus and regression input of `target`; fails listing every
/// input whose check panicked.
fn replay(target: &str) {
    let check = TARGETS
        .iter()
        .find(|(name, _)| *name == target)
        .map(|&(_, check)| check)
        .expect("a known target");
    let root = fuzz_dir();
    let corpus = files(&root.join("corpus").join(target));
    assert!(
        !corpus.is_empty(),
        "no committed corpus for fuzz target {target} in {}",
        root.join("corpus").display()
    );
    let inputs: Vec<PathBuf> = files(&root.join("seeds").join(target))
        .into_iter()
        .chain(corpus)
        .chain(files(&root.join("regressions").join(target)))
        .collect();
    let mut failed = Vec::new();
    for path in &inputs {
        let data = fs::read(path).expect("readable input");
        if panic::catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(path.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "{target}: {} of {} inputs fail their check:\n{}",
        failed.len(),
        inputs.len(),
        failed.join("\n")
    );
}

#[test]
fn every_fuzz_target_is_replayed() {
    let manifest = fs::read_to_string(fuzz_dir().join("Cargo.toml")).expect("fuzz/Cargo.toml");
    let mut bins: Vec<&str> = manifest
        .split("[[bin]]")
        .skip(1)
        .filter_map(|section| {
            let line = section
                .lines()
                .find(|l| l.trim_start().starts_with("name"))?;
            line.split('"').nth(1)
        })
        .collect();
    bins.sort_unstable();
    let mut replayed: Vec<&str> = TARGETS.iter().map(|(name, _)| *name).collect();
    replayed.sort_unstable();
    assert_eq!(
        bins, replayed,
        "each fuzz target needs a check replayed here"
    );
}

#[test]
fn cesql() {
    replay("cesql");
}

#[test]
fn cesql_grammar() {
    replay("cesql_grammar");
}

/// The grammar target is worth its corpus only if what it writes mostly parses and compiles:
/// a broken generator would leave it checking compile errors alone.
#[test]
fn cesql_grammar_writes_expressions_that_compile() {
    let corpus = files(&fuzz_dir().join("corpus").join("cesql_grammar"));
    let compiled = corpus
        .iter()
        .map(|path| fs::read(path).expect("readable input"))
        .filter(|data| {
            let (text, _) = cesql_grammar::expression_of(data);
            triggerfish_core::cesql::Expression::compile(&text).is_ok()
        })
        .count();
    assert!(
        compiled * 2 >= corpus.len(),
        "only {compiled} of {} grammar-written expressions compile",
        corpus.len()
    );
}

#[test]
fn config_load() {
    replay("config_load");
}

#[test]
fn decode_batched() {
    replay("decode_batched");
}

#[test]
fn decode_binary() {
    replay("decode_binary");
}

#[test]
fn decode_structured() {
    replay("decode_structured");
}

#[test]
fn github_delivery() {
    replay("github_delivery");
}

#[test]
fn kafka_record() {
    replay("kafka_record");
}

#[test]
fn mns_documents() {
    replay("mns_documents");
}

#[test]
fn oss_notification() {
    replay("oss_notification");
}

#[test]
fn quic_frames() {
    replay("quic_frames");
}

#[test]
fn registry_webhook() {
    replay("registry_webhook");
}

#[test]
fn rocketmq_message() {
    replay("rocketmq_message");
}

#[test]
fn s3_notification() {
    replay("s3_notification");
}
