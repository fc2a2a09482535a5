//! The admin listener (`/healthz`, `/readyz`, `/metrics`, `/config`) and the logs.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use serde_json::json;
use triggerfish_tests::{Config, Event, PATIENCE, Reply, Router, Subscriber, Trigger};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_metrics_and_config() {
    let sub = Subscriber::start().await;
    sub.handle(|_| Reply::ok());
    let yaml = Config::new()
        .broker("default", None)
        .broker("other", None)
        .trigger(Trigger::new("a", &sub.url("/a")))
        .trigger(
            Trigger::new("b", &sub.url("/b")).filter("filters:\n  - cesql: \"source LIKE '/x%'\""),
        )
        .render();
    let router = Router::start(&yaml).await;
    let c = &router.client;

    let r = c.get(&router.admin_url("/healthz")).await;
    assert_eq!((r.code(), r.text().as_str()), (200, "ok\n"));
    let r = router.readyz().await.unwrap();
    assert_eq!((r.code(), r.text().as_str()), (200, "ready\n"));

    let status = router.config_status().await;
    assert_eq!(
        status["file"].as_str(),
        Some(router.config_path().to_str().unwrap())
    );
    assert_eq!(
        status["version"].as_str().unwrap(),
        triggerfish_core::config::version_of(&yaml)
    );
    assert!(status["loadedAt"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(
        status["brokers"],
        json!([
            {"name": "default/default", "triggers": ["a", "b"], "scanned": 1},
            {"name": "default/other", "triggers": [], "scanned": 0},
        ])
    );
    assert!(status["lastRejected"].is_null());

    router.publish(&Event::new("m-1", "t").source("/x1")).await;
    router.publish(&Event::new("m-2", "t")).await;
    let r = c
        .send_binary(&router.broker_url("other"), &Event::new("m-3", "t"))
        .await;
    assert_eq!(r.code(), 202);
    sub.wait_for(3, PATIENCE).await;
    // m-3 matches nothing in its broker.
    router
        .wait_metric(
            "triggerfish_broker_unmatched_total",
            &[("broker", "default/other")],
            1.0,
            PATIENCE,
        )
        .await;
    let m = router
        .wait_metric(
            "triggerfish_delivery_attempts_total",
            &[("outcome", "success")],
            3.0,
            PATIENCE,
        )
        .await;
    let r = c.get(&router.admin_url("/metrics")).await;
    assert!(
        r.header("content-type")
            .is_some_and(|ct| ct.starts_with("text/plain")),
        "{:?}",
        r.header("content-type")
    );
    let ingress = [("broker", "default/default"), ("outcome", "accepted")];
    assert_eq!(m.count("triggerfish_ingress_requests_total", &ingress), 2);
    assert_eq!(m.count("triggerfish_ingress_events_total", &ingress), 2);
    assert_eq!(
        m.count(
            "triggerfish_trigger_matches_total",
            &[("trigger", "default/a")]
        ),
        2
    );
    assert_eq!(
        m.count(
            "triggerfish_trigger_matches_total",
            &[("trigger", "default/b")]
        ),
        1
    );
    assert_eq!(
        m.count(
            "triggerfish_broker_unmatched_total",
            &[("broker", "default/other")]
        ),
        1
    );
    assert!(
        m.get(
            "triggerfish_delivery_latency_seconds_count",
            &[("trigger", "default/a")]
        ) == 2.0,
        "{}",
        m.text()
    );
    assert!(
        m.text()
            .contains("triggerfish_ingress_request_duration_seconds_bucket")
    );
    // Every metric follows triggerfish_<subsystem>_<name>_<unit>.
    for s in m.samples() {
        assert!(s.name.starts_with("triggerfish_"), "{}", s.name);
    }

    // Only GET and HEAD; unknown paths are 404 with a hint.
    let r = c
        .request(
            http::Method::POST,
            &router.admin_url("/config"),
            &[],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.code(), 405);
    let r = c.get(&router.admin_url("/nope")).await;
    assert_eq!(r.code(), 404);
    assert!(r.text().contains("/metrics"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_plain_text_when_not_a_terminal() {
    let config = Config::new().broker("default", None);
    let router = Router::start(&config.render()).await;
    let logs = router.wait_log("triggerfish is ready", PATIENCE).await;
    assert!(
        !logs.contains('\u{1b}'),
        "no terminal escape codes in a log file: {logs:?}"
    );
    assert!(logs.contains(&format!("http={}", router.http)), "{logs}");
}

/// The `THP_enabled` line of a process's `/proc/PID/status` (Linux 6.x).
fn thp_enabled(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("THP_enabled:"))
        .map(|v| v.trim().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transparent_huge_pages_are_off_unless_asked_for() {
    if thp_enabled(std::process::id()).is_none() {
        // A kernel without the status line; the flag cannot be read from outside.
        return;
    }
    let config = Config::new().broker("default", None).render();
    let router = Router::start(&config).await;
    assert_eq!(thp_enabled(router.pid()).as_deref(), Some("0"));
    let options = triggerfish_tests::Options {
        env: vec![("MIMALLOC_ALLOW_THP".into(), "1".into())],
        ..Default::default()
    };
    let asked = Router::start_with(&config, options).await;
    assert_eq!(thp_enabled(asked.pid()).as_deref(), Some("1"));
}
