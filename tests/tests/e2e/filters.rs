//! Every filter dialect end to end through `triggerfish serve`, and the filter fixtures in
//! `tests/fixtures/filters/` through `triggerfish test-filter`.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_json::Value;
use triggerfish_tests::{Config, Event, PATIENCE, Router, Subscriber, Trigger, run_cli};

/// `(trigger, filter YAML)`: one trigger per dialect, each with a matching and a
/// non-matching event below.
const TRIGGERS: &[(&str, &str)] = &[
    (
        "attributes",
        "filter:\n  attributes:\n    type: com.example.order.created\n    source: /shop",
    ),
    // "" means present and non-empty.
    (
        "attributes-any",
        "filter:\n  attributes:\n    subject: \"\"",
    ),
    (
        "attributes-any-ext",
        "filter:\n  attributes:\n    label: \"\"",
    ),
    (
        "exact",
        "filters:\n  - exact: {type: com.example.order.created}",
    ),
    ("exact-int", "filters:\n  - exact: {priority: \"5\"}"),
    ("prefix", "filters:\n  - prefix: {type: com.example.order.}"),
    ("suffix", "filters:\n  - suffix: {subject: .png}"),
    (
        "all",
        "filters:\n  - all:\n      - exact: {source: /shop}\n      - prefix: {subject: img/}",
    ),
    (
        "any",
        "filters:\n  - any:\n      - exact: {type: com.example.refund}\n      - suffix: {source: /legacy}",
    ),
    (
        "not",
        "filters:\n  - not: {prefix: {type: com.example.order.}}",
    ),
    (
        "cesql",
        "filters:\n  - cesql: \"type = 'com.example.order.created' AND INT(amount) >= 1000\"",
    ),
    // Several filters are an implicit all, and filters replaces filter.attributes.
    (
        "implicit-all",
        "filter:\n  attributes:\n    type: never.matches\nfilters:\n  - prefix: {type: com.example.}\n  - exact: {region: eu}",
    ),
    ("barrier", "filter:\n  attributes:\n    type: barrier"),
];

/// The events, and the triggers each must reach (the barrier aside).
fn cases() -> Vec<(Event, &'static [&'static str])> {
    let e = |id: &str, ty: &str| Event::new(id, ty);
    vec![
        (
            e("order-shop", "com.example.order.created")
                .source("/shop")
                .attr("amount", 1500)
                .attr("region", "eu"),
            &["attributes", "exact", "prefix", "cesql", "implicit-all"],
        ),
        (
            // Another source: attributes needs both; a small amount fails the CESQL.
            e("order-web", "com.example.order.created")
                .source("/web")
                .attr("amount", 10),
            &["exact", "prefix"],
        ),
        (
            // amount as a string converts with INT().
            e("order-str", "com.example.order.created")
                .source("/web")
                .attr("amount", "2000")
                .attr("region", "us"),
            &["exact", "prefix", "cesql"],
        ),
        (
            // No amount at all: INT(amount) is an error, and an error never matches.
            e("order-no-amount", "com.example.order.created").source("/web"),
            &["exact", "prefix"],
        ),
        (
            e("image", "com.example.image")
                .source("/shop")
                .subject("img/cat.png")
                .attr("label", "cats"),
            &[
                "attributes-any",
                "attributes-any-ext",
                "suffix",
                "all",
                "not",
            ],
        ),
        (
            // An empty value is not "present and non-empty".
            e("image-empty-label", "com.example.image")
                .source("/legacy")
                .attr("label", ""),
            &["any", "not"],
        ),
        (
            // Case matters for suffix.
            e("image-upper", "com.example.image")
                .source("/shop")
                .subject("img/CAT.PNG"),
            &["attributes-any", "all", "not"],
        ),
        (
            e("refund", "com.example.refund").attr("priority", 5),
            &["exact-int", "any", "not"],
        ),
        (
            e("refund-str", "com.example.refund").attr("priority", "5"),
            &["exact-int", "any", "not"],
        ),
        (e("nothing", "org.other").attr("priority", 6), &["not"]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dialect_end_to_end() {
    let sub = Subscriber::start().await;
    let mut config = Config::new().broker("default", None);
    for (name, filter) in TRIGGERS {
        config = config.trigger(Trigger::new(name, &sub.url(&format!("/{name}"))).filter(filter));
    }
    // One shard: events are matched in the order they were accepted, so once the barrier
    // (sent last) is delivered, every event before it has been matched.
    let router = Router::start(&config.render()).await;
    let cases = cases();
    let mut expected: BTreeMap<&str, BTreeSet<String>> = TRIGGERS
        .iter()
        .map(|(n, _)| (*n, BTreeSet::new()))
        .collect();
    for (i, (event, triggers)) in cases.iter().enumerate() {
        // Alternate content modes; matching must not depend on them.
        let r = if i % 2 == 0 {
            router
                .client
                .send_binary(&router.broker_url("default"), event)
                .await
        } else {
            router
                .client
                .send_structured(&router.broker_url("default"), event)
                .await
        };
        assert_eq!(r.code(), 202, "{}: {}", event.id(), r.text());
        for t in *triggers {
            expected.get_mut(t).unwrap().insert(event.id().to_owned());
        }
    }
    router.publish(&Event::new("barrier", "barrier")).await;
    expected
        .get_mut("barrier")
        .unwrap()
        .insert("barrier".into());
    // `not` passes the barrier too.
    expected.get_mut("not").unwrap().insert("barrier".into());

    sub.wait_for_path("/barrier", 1, PATIENCE).await;
    let m = router.metrics().await;
    let mut failures = Vec::new();
    for (trigger, ids) in &expected {
        let matched = m.count(
            "triggerfish_trigger_matches_total",
            &[("trigger", &format!("default/{trigger}"))],
        );
        if matched != ids.len() as u64 {
            failures.push(format!(
                "{trigger}: matched {matched} events, expected {ids:?}"
            ));
            continue;
        }
        let got: BTreeSet<String> = sub
            .wait_for_path(&format!("/{trigger}"), ids.len(), PATIENCE)
            .await
            .iter()
            .map(|r| r.id())
            .collect();
        if &got != ids {
            failures.push(format!("{trigger}: got {got:?}, expected {ids:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(
        m.count("triggerfish_broker_unmatched_total", &[]),
        0,
        "every event matched `not` at least"
    );
}

// ---------------------------------------------------------------------------------------------
// Fixtures: tests/fixtures/filters/*.yaml, run through `triggerfish test-filter`.
//
// A fixture is a YAML mapping:
//
// - `source` (optional): where the cases come from.
// - `config`: a whole config file; or `triggers`: a list of `{name, filter | filters}`,
//   rendered as triggers of broker `default/default` in that order.
// - `events`: a list of cases, each either `{event: {...}, triggers: [names]}` (the triggers
//   the structured-mode event must match, in config order) or `{line: "raw text", error:
//   "substring"}` (a line test-filter must report as `{"line": N, "error": ...}`).
// - `rejected` (optional): a list of `{name, filter | filters, error}`; each trigger alone
//   must make the config invalid (exit 2) with `error` in the message.
// ---------------------------------------------------------------------------------------------

const BROKER: &str =
    "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata:\n  name: default\n";

/// A trigger of `default/default` from a fixture mapping (`name` plus spec fields).
fn render_trigger(spec: &Value) -> String {
    let mut spec = spec.as_object().unwrap().clone();
    let name = spec.remove("name").unwrap();
    spec.remove("error");
    spec.insert("broker".into(), "default".into());
    spec.insert("subscriber".into(), serde_json::json!({"uri": "display:"}));
    let doc = serde_json::json!({
        "apiVersion": "eventing.knative.dev/v1",
        "kind": "Trigger",
        "metadata": {"name": name},
        "spec": spec,
    });
    serde_norway::to_string(&doc).unwrap()
}

fn fixture_config(fixture: &Value) -> String {
    if let Some(config) = fixture["config"].as_str() {
        return config.to_owned();
    }
    let triggers = fixture["triggers"]
        .as_array()
        .expect("a fixture has `config` or `triggers`");
    let mut out = BROKER.to_owned();
    for t in triggers {
        out.push_str("---\n");
        out.push_str(&render_trigger(t));
    }
    out
}

/// Runs one fixture; returns its failures.
fn run_fixture(path: &Path, dir: &Path) -> Vec<String> {
    let name = path.file_name().unwrap().to_string_lossy().into_owned();
    let text = std::fs::read_to_string(path).unwrap();
    let fixture: Value = serde_norway::from_str(&text)
        .unwrap_or_else(|e| panic!("{name}: not a valid fixture: {e}"));
    let mut failures = Vec::new();

    let config_path = dir.join(format!("{name}.config.yaml"));
    std::fs::write(&config_path, fixture_config(&fixture)).unwrap();
    let cases = fixture["events"].as_array().cloned().unwrap_or_default();
    let mut lines = Vec::new();
    for case in &cases {
        match (&case["event"], &case["line"]) {
            (Value::Object(_), _) => lines.push(case["event"].to_string()),
            (_, Value::String(raw)) => lines.push(raw.clone()),
            _ => panic!("{name}: a case has `event` or `line`: {case}"),
        }
    }
    let events_path = dir.join(format!("{name}.events.jsonl"));
    std::fs::write(&events_path, lines.join("\n") + "\n").unwrap();
    let out = run_cli(
        dir,
        &[
            "test-filter",
            "--config",
            config_path.to_str().unwrap(),
            "--events",
            events_path.to_str().unwrap(),
        ],
        None,
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let results: Vec<Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
        .collect();
    if results.len() != cases.len() {
        failures.push(format!(
            "{name}: {} cases but {} output lines (exit {:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
            cases.len(),
            results.len(),
            out.status.code()
        ));
        return failures;
    }
    let mut any_error = false;
    for (i, (case, result)) in cases.iter().zip(&results).enumerate() {
        let line = i + 1;
        if let Some(want) = case["triggers"].as_array() {
            let want_id = &case["event"]["id"];
            if result["id"] != *want_id || result["triggers"] != Value::Array(want.clone()) {
                failures.push(format!(
                    "{name} line {line}: event {want_id}: expected triggers {}, got {result}",
                    Value::Array(want.clone())
                ));
            }
        } else {
            any_error = true;
            let want = case["error"].as_str().unwrap_or("");
            let ok = result["line"] == serde_json::json!(line)
                && result["error"].as_str().is_some_and(|e| e.contains(want));
            if !ok {
                failures.push(format!(
                    "{name} line {line}: expected {{\"line\": {line}, \"error\": \"…{want}…\"}}, got {result}"
                ));
            }
        }
    }
    let want_code = if any_error { 1 } else { 0 };
    if out.status.code() != Some(want_code) {
        failures.push(format!(
            "{name}: exit {:?}, expected {want_code}; stderr: {stderr}",
            out.status.code()
        ));
    }

    for (i, rejected) in fixture["rejected"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let want = rejected["error"]
            .as_str()
            .expect("a rejected case has `error`");
        let config = format!("{BROKER}---\n{}", render_trigger(rejected));
        let config_path = dir.join(format!("{name}.rejected-{i}.yaml"));
        std::fs::write(&config_path, config).unwrap();
        let out = run_cli(
            dir,
            &[
                "test-filter",
                "--config",
                config_path.to_str().unwrap(),
                "--events",
                "-",
            ],
            Some(b""),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() != Some(2) || !stderr.contains(want) {
            failures.push(format!(
                "{name}: rejected[{i}] ({}): expected exit 2 and an error containing {want:?}, got exit {:?}: {stderr}",
                rejected["name"],
                out.status.code()
            ));
        }
    }
    failures
}

#[test]
fn filter_fixtures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/filters");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    paths.sort();
    assert!(paths.len() >= 8, "fixtures missing from {}", dir.display());
    let work = tempfile::tempdir().unwrap();
    let failures: Vec<String> = paths
        .iter()
        .flat_map(|p| run_fixture(p, work.path()))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
