//! Runs every case of the CESQL v1.0.0 TCK (`shared/data/cloudevents/cesql-tck/*.yaml`) and
//! checks both the result and the error kind of each.
//!
//! The TCK directory is `$TRIGGERFISH_SHARED_DATA/cloudevents/cesql-tck`, or, when the variable
//! is unset, `shared/data/cloudevents/cesql-tck` in the directory that holds the checkout. The
//! test fails if the directory is missing, and checks the number of cases run, so it cannot
//! pass vacuously.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Deserialize;
use serde_norway::Value as Yaml;

use triggerfish_core::cesql::{ErrorKind, Expression, Value};
use triggerfish_core::event::{AttrValue, Attributes};

/// The number of cases in the TCK as vendored; update it together with the files.
const EXPECTED_CASES: usize = 275;

#[derive(Deserialize)]
struct TckFile {
    name: String,
    tests: Vec<TckCase>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TckCase {
    name: String,
    /// Deserialized as the scalar's text, so `TRUE` and `0` stay as written.
    expression: String,
    result: Option<Yaml>,
    error: Option<String>,
    event: Option<serde_norway::Mapping>,
    event_overrides: Option<serde_norway::Mapping>,
}

/// An event as a map from attribute name to value.
#[derive(Debug)]
struct MapEvent(BTreeMap<String, Attr>);

#[derive(Debug)]
enum Attr {
    Str(String),
    Int(i32),
    Bool(bool),
}

impl Attributes for MapEvent {
    fn attribute(&self, name: &str) -> Option<AttrValue<'_>> {
        self.0.get(name).map(|v| match v {
            Attr::Str(s) => AttrValue::Str(s),
            Attr::Int(i) => AttrValue::Int(*i),
            Attr::Bool(b) => AttrValue::Bool(*b),
        })
    }
}

impl MapEvent {
    /// A minimal valid event: the four required attributes.
    fn default_valid() -> MapEvent {
        let mut map = BTreeMap::new();
        for (k, v) in [
            ("specversion", "1.0"),
            ("id", "tck-event-id"),
            ("source", "/tck/source"),
            ("type", "io.cloudevents.tck"),
        ] {
            map.insert(k.to_owned(), Attr::Str(v.to_owned()));
        }
        MapEvent(map)
    }

    fn apply(&mut self, attributes: &serde_norway::Mapping) -> Result<(), String> {
        for (k, v) in attributes {
            let name = k.as_str().ok_or_else(|| format!("attribute name {k:?}"))?;
            let value = match v {
                Yaml::String(s) => Attr::Str(s.clone()),
                Yaml::Bool(b) => Attr::Bool(*b),
                Yaml::Number(n) => Attr::Int(
                    n.as_i64()
                        .and_then(|i| i32::try_from(i).ok())
                        .ok_or_else(|| format!("attribute {name}: {n} is not an Integer"))?,
                ),
                other => return Err(format!("attribute {name}: unsupported value {other:?}")),
            };
            self.0.insert(name.to_owned(), value);
        }
        Ok(())
    }
}

fn tck_dir() -> PathBuf {
    match std::env::var_os("TRIGGERFISH_SHARED_DATA") {
        Some(shared) => PathBuf::from(shared).join("cloudevents/cesql-tck"),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../../../shared/data/cloudevents/cesql-tck"),
    }
}

/// Runs one case; `Err` describes how it failed.
fn run(case: &TckCase) -> Result<(), String> {
    let mut event = MapEvent::default_valid();
    if let Some(full) = &case.event {
        event = MapEvent(BTreeMap::new());
        event.apply(full)?;
    }
    if let Some(overrides) = &case.event_overrides {
        event.apply(overrides)?;
    }

    // A compile error stands for the whole evaluation. Its value is `false`: the spec's
    // result for an undispatchable call (§3.5), and the Boolean zero value it prescribes when
    // no type can be determined (§3.2).
    let (value, kind, description) = match Expression::compile(&case.expression) {
        Ok(expression) => {
            let evaluation = expression.evaluate(&event).into_owned();
            let description = evaluation.error.as_ref().map(ToString::to_string);
            let kind = evaluation.error.as_ref().map(|e| e.kind());
            (evaluation.value, kind, description)
        }
        Err(e) => (Value::Bool(false), Some(e.kind()), Some(e.to_string())),
    };

    let mut problems = Vec::new();
    let expected_kind = case.error.as_deref();
    if expected_kind != kind.map(ErrorKind::as_str) {
        problems.push(format!(
            "error: expected {expected_kind:?}, got {:?} ({})",
            kind.map(ErrorKind::as_str),
            description.as_deref().unwrap_or("no error")
        ));
    }
    if let Some(expected) = &case.result {
        let matches = match (expected, &value) {
            (Yaml::Bool(e), Value::Bool(v)) => e == v,
            (Yaml::Number(e), Value::Int(v)) => e.as_i64() == Some(i64::from(*v)),
            (Yaml::String(e), Value::Str(v)) => e == v,
            _ => false,
        };
        if !matches {
            problems.push(format!("result: expected {expected:?}, got {value:?}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[test]
fn tck() {
    let dir = tck_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("TCK directory {} is not readable: {e}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no TCK files in {}", dir.display());

    let mut cases = 0;
    let mut failures = String::new();
    for path in &files {
        let text = std::fs::read_to_string(path).expect("readable TCK file");
        let file: TckFile =
            serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for case in &file.tests {
            cases += 1;
            if let Err(problem) = run(case) {
                writeln!(
                    failures,
                    "{} / {}: `{}`: {problem}",
                    file.name, case.name, case.expression
                )
                .expect("write to String");
            }
        }
    }
    if !failures.is_empty() {
        panic!("TCK failures:\n{failures}");
    }
    assert_eq!(
        cases,
        EXPECTED_CASES,
        "ran {cases} TCK cases from {} files",
        files.len()
    );
}
