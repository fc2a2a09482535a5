//! `triggerfish validate` and `triggerfish test-filter`: exit codes, and output a user (or a
//! script) can act on.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Output;

use serde_json::{Value, json};
use tempfile::TempDir;
use triggerfish_tests::run_cli;

fn write(dir: &TempDir, name: &str, text: &str) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `LINE:COLUMN` (1-based) of the first occurrence of `needle` in `text`.
fn position(text: &str, needle: &str) -> String {
    let (i, line) = text
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} is not in the config"));
    format!("{}:{}", i + 1, line.find(needle).unwrap() + 1)
}

fn validate(dir: &TempDir, path: &Path) -> Output {
    run_cli(
        dir.path(),
        &["validate", "--config", path.to_str().unwrap()],
        None,
    )
}

const VALID: &str = "\
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: default
spec:
  delivery: {retry: 2, backoffDelay: PT0.1S}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: orders
spec:
  broker: default
  filters:
    - prefix: {type: order.}
  subscriber:
    uri: http://orders.example.com/
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: everything
spec:
  broker: default
  subscriber:
    ref: {apiVersion: triggerfish.dev/v1alpha1, kind: Display, name: display}
";

#[test]
fn validate_accepts_a_valid_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "ok.yaml", VALID);
    let out = validate(&dir, &path);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let version = triggerfish_core::config::version_of(VALID);
    assert_eq!(
        text(&out.stdout).trim(),
        format!(
            "{}: valid (1 broker, 2 triggers, version {version})",
            path.display()
        )
    );
    assert_eq!(text(&out.stderr), "");

    // The example the README points to is valid.
    let quickstart = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .join("deploy/examples/quickstart.yaml");
    let out = validate(&dir, &quickstart);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn validate_reports_every_load_error_with_file_line_resource_and_field() {
    let config = "\
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: default
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: typo
spec:
  broker: default
  delivery:
    retyr: 3
  subscriber:
    uri: http://example.com/
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: orphan
  namespace: team
spec:
  broker: missing
  subscriber:
    uri: http://example.com/
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: two-dialects
spec:
  broker: default
  filters:
    - exact: {type: a}
      prefix: {type: b}
  subscriber:
    uri: relative/path
";
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "bad.yaml", config);
    let out = validate(&dir, &path);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stdout));
    assert_eq!(text(&out.stdout), "");
    let file = path.display();
    let expected = [
        format!(
            r#"{file}:{}: Trigger "typo" in namespace "default": spec.delivery: unknown field "retyr", did you mean "retry"?"#,
            position(config, "retyr")
        ),
        format!(
            r#"{file}:{}: Trigger "orphan" in namespace "team": spec.broker: broker "missing" is not defined in namespace "team""#,
            position(config, "broker: missing")
        ),
        format!(
            r#"{file}:{}: Trigger "two-dialects" in namespace "default": spec.filters[0]: each filter must use exactly one dialect, found "exact" and "prefix""#,
            position(config, "exact: {type: a}")
        ),
        format!(
            r#"{file}:{}: Trigger "two-dialects" in namespace "default": spec.subscriber.uri: "relative/path" is relative; without a ref, uri must be absolute, e.g. http://host/path"#,
            position(config, "uri: relative/path")
        ),
    ];
    let stderr = text(&out.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines, expected, "\n{stderr}");
}

#[test]
fn validate_reports_build_errors_too() {
    // Errors found after loading: a CESQL expression that does not compile, and a ref to an
    // in-process kind this build lacks.
    let config = "\
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: default
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: bad-sql
spec:
  broker: default
  filters:
    - prefix: {type: a.}
    - cesql: \"type = 'a' AND\"
  subscriber:
    uri: http://example.com/
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: pool
spec:
  broker: default
  subscriber:
    ref: {apiVersion: triggerfish.dev/v1alpha1, kind: WorkerPool, name: thumbnails}
";
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "sql.yaml", config);
    let out = validate(&dir, &path);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    let prefix = format!(
        r#"{}:{}: Trigger "bad-sql" in namespace "default": spec.filters[1].cesql: "#,
        path.display(),
        position(config, "cesql:")
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr}");
    assert!(
        lines[0].starts_with(&prefix),
        "expected {prefix:?}…, got {stderr}"
    );
    assert!(lines[0].contains("column"), "{stderr}");
    assert!(
        lines[1].starts_with(&format!(
            r#"{}:{}: Trigger "pool" in namespace "default": spec.subscriber.ref: there is no WorkerPool default/thumbnails in this config"#,
            path.display(),
            position(config, "ref: {apiVersion: triggerfish.dev/v1alpha1, kind: WorkerPool")
        )),
        "{stderr}"
    );
}

/// A `CACerts` whose base64 stops inside a DER length: the loader spun forever on it (x509-cert's
/// PEM reader), so `validate` never returned and `serve` never started or reloaded.
#[test]
fn validate_refuses_truncated_ca_certs_at_once() {
    let config = "\
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {name: default}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {name: tls}
spec:
  broker: default
  subscriber:
    uri: https://example.com/hook
    CACerts: |
      -----BEGIN CERTIFICATE-----
      MIIB
      -----END CERTIFICATE-----
";
    let dir = tempfile::tempdir().unwrap();
    let path = write(&dir, "ca.yaml", config);
    let (tx, rx) = std::sync::mpsc::channel();
    let (dir_path, config_path) = (dir.path().to_owned(), path.clone());
    std::thread::spawn(move || {
        let out = run_cli(
            &dir_path,
            &["validate", "--config", config_path.to_str().unwrap()],
            None,
        );
        let _ = tx.send(out);
    });
    let out = rx
        .recv_timeout(std::time::Duration::from_secs(60))
        .expect("validate did not return within 60 s");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            r#"{}:{}: Trigger "tls" in namespace "default": spec.subscriber.CACerts: CACerts must hold PEM CA certificates: certificate 1: "#,
            path.display(),
            position(config, "CACerts:")
        )),
        "{stderr}"
    );
}

#[test]
fn validate_unreadable_and_unparsable_files() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let out = validate(&dir, &missing);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).starts_with(&format!("{}: cannot read", missing.display())),
        "{}",
        text(&out.stderr)
    );

    let path = write(&dir, "syntax.yaml", "apiVersion: v1\nkind: [\n");
    let out = validate(&dir, &path);
    assert_eq!(out.status.code(), Some(2));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!("{}:", path.display())) && stderr.contains("invalid YAML"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------------------------------------

const FILTERS: &str = "\
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata:
  name: default
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: orders
spec:
  broker: default
  filters:
    - prefix: {type: order.}
  subscriber: {uri: \"display:\"}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: big-orders
spec:
  broker: default
  filters:
    - cesql: \"type = 'order.created' AND INT(amount) >= 1000\"
  subscriber: {uri: \"display:\"}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata:
  name: all
spec:
  broker: default
  subscriber: {uri: \"display:\"}
";

fn test_filter(dir: &TempDir, config: &Path, events: &str, stdin: Option<&[u8]>) -> Output {
    run_cli(
        dir.path(),
        &[
            "test-filter",
            "--config",
            config.to_str().unwrap(),
            "--events",
            events,
        ],
        stdin,
    )
}

fn json_lines(out: &Output) -> Vec<Value> {
    text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

#[test]
fn test_filter_prints_one_json_line_per_event() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(&dir, "filters.yaml", FILTERS);
    let events = [
        json!({"specversion": "1.0", "id": "1", "source": "/s", "type": "order.created", "amount": 5000}),
        json!({"specversion": "1.0", "id": "2", "source": "/s", "type": "order.created", "amount": 5}),
        json!({"specversion": "1.0", "id": "3", "source": "/s", "type": "user.created"}),
    ];
    let body = format!("{}\n\n{}\n   \n{}\n", events[0], events[1], events[2]);
    let path = write(&dir, "events.jsonl", &body);
    let out = test_filter(&dir, &config, path.to_str().unwrap(), None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        json_lines(&out),
        vec![
            json!({"id": "1", "triggers": ["orders", "big-orders", "all"]}),
            json!({"id": "2", "triggers": ["orders", "all"]}),
            json!({"id": "3", "triggers": ["all"]}),
        ],
        "blank lines are skipped; triggers in config order"
    );

    // `-` reads standard input.
    let out = test_filter(&dir, &config, "-", Some(body.as_bytes()));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(json_lines(&out).len(), 3);
}

#[test]
fn test_filter_reports_bad_lines_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(&dir, "filters.yaml", FILTERS);
    let body = "\
{\"specversion\": \"1.0\", \"id\": \"1\", \"source\": \"/s\", \"type\": \"order.x\"}
{\"specversion\": \"1.0\", \"id\":
{\"specversion\": \"1.0\", \"source\": \"/s\", \"type\": \"t\"}

{\"specversion\": \"1.0\", \"id\": \"5\", \"source\": \"/s\", \"type\": \"t\"}
";
    let out = test_filter(&dir, &config, "-", Some(body.as_bytes()));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0], json!({"id": "1", "triggers": ["orders", "all"]}));
    assert_eq!(lines[1]["line"], json!(2));
    assert!(
        lines[1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("JSON")),
        "{}",
        lines[1]
    );
    assert_eq!(lines[2]["line"], json!(3), "line numbers count every line");
    assert!(
        lines[2]["error"]
            .as_str()
            .is_some_and(|e| e.contains("missing required attribute \"id\"")),
        "{}",
        lines[2]
    );
    assert_eq!(lines[3], json!({"id": "5", "triggers": ["all"]}));
}

#[test]
fn test_filter_exit_codes_for_bad_inputs() {
    let dir = tempfile::tempdir().unwrap();
    // An invalid config: exit 2, the error on stderr, nothing on stdout.
    let bad = FILTERS.replace("INT(amount) >= 1000", "INT(amount) >=");
    let config = write(&dir, "bad.yaml", &bad);
    let out = test_filter(&dir, &config, "-", Some(b"{}\n"));
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stdout), "");
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:", config.display()))
            && stderr
                .contains("Trigger \"big-orders\" in namespace \"default\": spec.filters[0].cesql"),
        "{stderr}"
    );

    // An events file that cannot be read: exit 1.
    let config = write(&dir, "filters.yaml", FILTERS);
    let out = test_filter(&dir, &config, "/nonexistent/events.jsonl", None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot read"),
        "{}",
        text(&out.stderr)
    );

    // No events at all: nothing to say, and success.
    let out = test_filter(&dir, &config, "-", Some(b""));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(text(&out.stdout), "");
}
