//! The `Exec` sink against real programs (`sh` scripts): the event on standard input, its
//! attributes as `CE_*` variables and in templated arguments, a reply on standard output
//! back into the broker; failures, timeouts and malformed replies retried and dead-lettered;
//! output that is no reply ignored, however much of it there is.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use serde_json::{Value, json};
use triggerfish_tests::config::indent;
use triggerfish_tests::{Config, Event, PATIENCE, Router, Subscriber, Trigger, eventually};

/// An `Exec` named `name` running `sh -c script sh ARGS…`, with `OUT` set to `out`.
fn exec(name: &str, script: &str, args: &[&str], out: &Path, extra: &str) -> String {
    let mut command = vec![json!("sh"), json!("-c"), json!(script), json!("sh")];
    command.extend(args.iter().map(|a| json!(a)));
    format!(
        "apiVersion: triggerfish.dev/v1alpha1\nkind: Exec\nmetadata: {{name: {name}}}\nspec:\n  command: {}\n  env: {{OUT: \"{}\"}}\n{}",
        Value::Array(command),
        out.display(),
        indent(extra, 2),
    )
}

/// A trigger for events of type `name` to the `Exec` of that name.
fn to_exec(name: &str, delivery: &str) -> Trigger {
    let trigger = Trigger::new(name, "x").of_type(name).subscriber(&format!(
        "ref: {{apiVersion: triggerfish.dev/v1alpha1, kind: Exec, name: {name}}}"
    ));
    if delivery.is_empty() {
        trigger
    } else {
        trigger.delivery(delivery)
    }
}

/// The lines of `OUT/name`, as a script appended them.
fn lines(out: &Path, name: &str) -> Vec<String> {
    std::fs::read_to_string(out.join(name))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_gets_the_event_and_its_reply_reenters_the_broker() {
    let out = tempfile::tempdir().unwrap();
    let sub = Subscriber::start().await;
    // Keeps its input, its arguments and a variable, then replies on standard output.
    let script = r#"cat > "$OUT/event.json"
printf '%s\n' "$#" "$1" "$CE_TYPE" "$CE_ORDERID" > "$OUT/args"
printf '{"specversion":"1.0","id":"%s-done","source":"/exec","type":"built","orderid":"%s"}' "$CE_ID" "$CE_ORDERID""#;
    let config = Config::new()
        .broker("default", None)
        .raw(&exec("build", script, &["{{subject}}"], out.path(), ""))
        .trigger(to_exec("build", ""))
        .trigger(Trigger::new("done", &sub.url("/done")).of_type("built"));
    let router = Router::start(&config.render()).await;
    // A subject a shell would split and run: one argument, verbatim.
    let subject = r#"a b; touch "$OUT/pwned" $(id)"#;
    let event = Event::new("b-1", "build")
        .subject(subject)
        .attr("orderid", "o-7")
        .data(json!({"n": 1}));
    router.publish(&event).await;

    let done = sub.wait_for_path("/done", 1, PATIENCE).await;
    assert_eq!(done[0].id(), "b-1-done");
    assert_eq!(done[0].ce("orderid").as_deref(), Some("o-7"));
    assert!(
        done[0].ce("knativearrivaltime").is_some(),
        "a reply enters the broker"
    );
    assert_eq!(
        lines(out.path(), "args"),
        ["1", subject, "build", "o-7"],
        "one argument, the subject verbatim; the attributes as CE_ variables"
    );
    let input: Value =
        serde_json::from_slice(&std::fs::read(out.path().join("event.json")).unwrap()).unwrap();
    assert_eq!(input["id"], "b-1");
    assert_eq!(input["subject"], subject);
    assert_eq!(input["data"], json!({"n": 1}));
    assert!(input.get("knativebrokerttl").is_none());
    assert!(!out.path().join("pwned").exists());
    let m = router.metrics().await;
    assert_eq!(
        m.count(
            "triggerfish_delivery_replies_total",
            &[("trigger", "default/build")]
        ),
        1
    );
}

/// A program that exits non-zero, one that runs past its timeout and one whose output claims
/// to be a reply and is not a valid one: each attempt fails, is retried, and the event is
/// dead-lettered with what went wrong. The failing program writes far more to standard error
/// than is kept: it is not cut off, and the dead letter carries the end of what it wrote.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_runs_are_retried_then_dead_lettered_with_the_reason() {
    let out = tempfile::tempdir().unwrap();
    let sub = Subscriber::start().await;
    let count = r#"echo run >> "$OUT/$CE_TYPE";"#;
    let fails = format!(
        r#"{count} head -c 200000 /dev/zero | tr '\0' x >&2; echo >&2; echo "disk full: the real reason" >&2; exit 3"#
    );
    let slow = format!("{count} exec sleep 30");
    let invalid = format!(r#"{count} echo '{{"specversion":"1.0","id":"x"}}'"#);
    let delivery = format!(
        "retry: 1\nbackoffDelay: PT0.01S\ndeadLetterSink:\n  uri: {}",
        sub.url("/dls")
    );
    let config = Config::new()
        .broker("default", None)
        .raw(&exec("fails", &fails, &[], out.path(), ""))
        .raw(&exec("slow", &slow, &[], out.path(), "timeout: PT0.3S"))
        .raw(&exec("invalid", &invalid, &[], out.path(), ""))
        .trigger(to_exec("fails", &delivery))
        .trigger(to_exec("slow", &delivery))
        .trigger(to_exec("invalid", &delivery));
    let router = Router::start(&config.render()).await;
    for name in ["fails", "slow", "invalid"] {
        router.publish(&Event::new(format!("{name}-1"), name)).await;
    }
    let dead = sub.wait_for_path("/dls", 3, PATIENCE).await;
    let letter = |name: &str| {
        dead.iter()
            .find(|r| r.ce("type").as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no dead letter for {name}"))
    };
    letter("fails").assert_dead_letter("exec:default/fails", "500", "disk full: the real reason");
    let (_, _, data) = letter("fails").error_extensions();
    assert!(
        data.unwrap().len() <= 1024,
        "the last KiB of standard error"
    );
    letter("slow").assert_dead_letter("exec:default/slow", "500", "");
    letter("invalid").assert_dead_letter(
        "exec:default/invalid",
        "502",
        "invalid reply: missing required attribute",
    );
    for name in ["fails", "slow", "invalid"] {
        assert_eq!(lines(out.path(), name).len(), 2, "{name}: retry: 1");
    }
}

/// Output that does not claim to be a reply is none, and the run succeeds: a log far longer
/// than a reply may be (the program is never cut off mid-write), and a JSON document of the
/// program's own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_that_is_no_reply_is_ignored_however_long() {
    let out = tempfile::tempdir().unwrap();
    let sub = Subscriber::start().await;
    let log = r#"head -c 3000000 /dev/zero | tr '\0' '.'; echo; echo run >> "$OUT/log""#;
    let document = r#"echo '{"build": "ok", "artifacts": 3}'; echo run >> "$OUT/document""#;
    let delivery = format!(
        "retry: 2\nbackoffDelay: PT0.01S\ndeadLetterSink:\n  uri: {}",
        sub.url("/dls")
    );
    let config = Config::new()
        .broker("default", None)
        .raw(&exec("log", log, &[], out.path(), ""))
        .raw(&exec("document", document, &[], out.path(), ""))
        .trigger(to_exec("log", &delivery))
        .trigger(to_exec("document", &delivery));
    let router = Router::start(&config.render()).await;
    for name in ["log", "document"] {
        router.publish(&Event::new(format!("{name}-1"), name)).await;
    }
    for name in ["log", "document"] {
        let trigger = format!("default/{name}");
        let m = router
            .wait_metric(
                "triggerfish_delivery_attempts_total",
                &[("trigger", &trigger), ("outcome", "success")],
                1.0,
                PATIENCE,
            )
            .await;
        let label = [("trigger", trigger.as_str()), ("outcome", "retryable")];
        assert_eq!(m.count("triggerfish_delivery_attempts_total", &label), 0);
        let label = [("trigger", trigger.as_str())];
        assert_eq!(m.count("triggerfish_delivery_replies_total", &label), 0);
        eventually("the script's last line", PATIENCE, || async {
            (lines(out.path(), name).len() == 1).then_some(())
        })
        .await;
    }
    assert!(sub.requests().is_empty(), "{:?}", sub.summary());
}
