//! The QUIC ingress against a client that shares no code with it: `tests/interop/quic_client.py`,
//! `docs/quic-protocol.md` implemented on aioquic (a Python QUIC and TLS 1.3 stack), installed
//! by `scripts/dev setup` into `$TRIGGERFISH_CACHE/venv/quic-interop`.
//!
//! The client sends valid frames, every malformed frame the protocol document lists, 300
//! streams of random bytes at once, and connections that send garbage and vanish, while
//! `triggerfish send` publishes steady load on a connection of its own. The router must answer
//! each frame as the document says, deliver every event it acked and nothing else, and lose
//! none of the load.
#![allow(clippy::unwrap_used)]

use std::process::Output;

use serde_json::Value;
use triggerfish_tests::{Config, PATIENCE, Router, Subscriber, Trigger, run_cli, venv_python};

/// Runs the independent client against `router`, with `flood` seconds of garbage connections.
async fn interop_client(router: &Router, flood: &str) -> Output {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/quic_client.py");
    let mut command = tokio::process::Command::new(venv_python("quic-interop"));
    command
        .arg(script)
        .args(["--addr", &router.quic.to_string()])
        .arg("--ca")
        .arg(router.quic_cert())
        .args(["--flood", flood]);
    command.output().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_independent_client_gets_the_documented_answers_under_load() {
    let sub = Subscriber::start().await;
    let config = Config::new()
        .broker("default", None)
        .trigger(Trigger::new("all", &sub.url("/s")));
    let router = Router::start(&config.render()).await;
    router.wait_log("QUIC ingress listening", PATIENCE).await;

    // Steady load from our own client, alongside: 20,000 events in frames of 100 over ~5 s.
    let (url, ca) = (router.quic_url("default"), router.quic_cert());
    let dir = router.dir().to_owned();
    let load = tokio::task::spawn_blocking(move || {
        let ca = ca.to_str().unwrap().to_owned();
        let args = [
            "send",
            "--json",
            "--to",
            &url,
            "--ca-file",
            &ca,
            "--count",
            "20000",
            "--batch",
            "100",
            "--rate",
            "4000",
            "--type",
            "com.example.load",
        ];
        run_cli(&dir, &args, None)
    });
    let interop = interop_client(&router, "3").await;
    let load = load.await.unwrap();

    let report = String::from_utf8_lossy(&interop.stderr);
    assert!(
        interop.status.success(),
        "the interop client failed:\n{report}"
    );
    let summary: Value = serde_json::from_slice(&interop.stdout)
        .unwrap_or_else(|e| panic!("interop summary: {e}\n{report}"));
    assert_eq!(summary["failed"], Value::Array(vec![]), "{report}");
    assert!(summary["checks"].as_u64().unwrap() >= 20, "{summary}");
    assert!(
        summary["flood_connections"].as_u64().unwrap() > 0,
        "{summary}"
    );
    let interop_accepted = summary["accepted"].as_u64().unwrap();
    // 10 + 2 + 10 + 1,000 + 10 + 10 valid events in the frames it expects to be accepted.
    assert_eq!(interop_accepted, 1042, "{summary}");

    let sent: Value = serde_json::from_slice(&load.stdout).unwrap_or(Value::Null);
    assert!(
        load.status.success(),
        "send: {}",
        String::from_utf8_lossy(&load.stderr)
    );
    assert_eq!(sent["accepted"], 20_000, "{sent}");

    // Everything acked is delivered, and nothing else was queued.
    let total = 20_000 + interop_accepted as usize;
    sub.wait_for(total, PATIENCE * 3).await;
    let metrics = router.metrics().await;
    let accepted = metrics.get(
        "triggerfish_ingress_events_total",
        &[("broker", "default/default"), ("outcome", "accepted")],
    );
    assert_eq!(accepted, total as f64);
    for code in [
        "malformed",
        "frame_too_large",
        "truncated",
        "trailing_data",
        "unsupported_flags",
    ] {
        let resets = metrics.get("triggerfish_quic_stream_resets_total", &[("code", code)]);
        assert!(resets > 0.0, "no {code} resets counted");
    }
    assert_eq!(sub.count(), total, "deliveries beyond the acked events");
    assert_eq!(router.readyz().await.map(|r| r.code()).ok(), Some(200));
    assert!(!router.stderr().contains("panicked"), "{}", router.stderr());
}
