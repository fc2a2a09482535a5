//! The QUIC transport end to end: QUIC ingress → HTTP subscriber; HTTP ingress → QUIC
//! subscriber → a second `triggerfish serve`; `triggerfish send`; malformed and oversized
//! frames; a wrong ALPN; an untrusted certificate; backpressure; a connection dropped
//! mid-batch. `docs/quic-protocol.md` is the protocol these tests hold the router to.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use triggerfish_core::quic::publish::{PublishHeader, encode_publish};
use triggerfish_core::quic::{ALPN, Ack, StreamCode};
use triggerfish_tests::quic::{Answer, QuicClient};
use triggerfish_tests::{Config, Event, PATIENCE, Reply, Router, Subscriber, Trigger, run_cli};

/// `triggerfish send ARGS --json` from `dir`, off the async workers.
async fn send(dir: &Path, args: Vec<String>) -> (Output, Value) {
    let dir = dir.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        let mut all: Vec<&str> = vec!["send", "--json"];
        all.extend(args.iter().map(String::as_str));
        run_cli(&dir, &all, None)
    })
    .await
    .unwrap();
    let summary = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, summary)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| (*x).to_owned()).collect()
}

/// `triggerfish send` arguments to broker `default/default` of `router` over QUIC, trusting
/// its development certificate, followed by `args`.
fn to_router(router: &Router, args: &[&str]) -> Vec<String> {
    let (url, ca) = (router.quic_url("default"), router.quic_cert());
    let mut all = s(&["--to", &url, "--ca-file", ca.to_str().unwrap()]);
    all.extend(s(args));
    all
}

async fn router_to(sub: &Subscriber, server: &str) -> Router {
    let config = Config::new()
        .server(server)
        .broker("default", None)
        .trigger(Trigger::new("all", &sub.url("/s")));
    Router::start(&config.render()).await
}

/// A router with `forward`, a trigger of broker `default` that delivers to `b` over QUIC,
/// trusting `b`'s development certificate.
fn forwarding_to(b: &Router, forward: Trigger) -> Config {
    Config::new()
        .server(&format!(
            "quic:\n  client: {{caFile: {}}}",
            b.quic_cert().display()
        ))
        .broker("default", None)
        .trigger(forward)
}

/// Waits until `a`'s trigger `forward` has had `n` successful attempts: acks read from B.
async fn wait_forwarded(a: &Router, n: f64) {
    a.wait_metric(
        "triggerfish_delivery_attempts_total",
        &[("trigger", "default/forward"), ("outcome", "success")],
        n,
        PATIENCE,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_ingress_delivers_to_an_http_subscriber() {
    let sub = Subscriber::start().await;
    let router = router_to(&sub, "").await;
    let logs = router.wait_log("QUIC ingress listening", PATIENCE).await;
    assert!(logs.contains("fingerprint=sha256:"), "{logs}");

    // One event from flags.
    let (out, summary) = send(
        router.dir(),
        to_router(
            &router,
            &[
                "--type",
                "com.example.one",
                "--id",
                "one",
                "--data",
                "{\"n\": 1}",
                "--ext",
                "tenant=acme",
            ],
        ),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        (summary["sent"].as_u64(), summary["accepted"].as_u64()),
        (Some(1), Some(1)),
        "{summary}"
    );
    let got = sub.wait_for(1, PATIENCE).await;
    assert_eq!(got[0].ce("id").as_deref(), Some("one"));
    assert_eq!(got[0].ce("type").as_deref(), Some("com.example.one"));
    assert_eq!(got[0].ce("tenant").as_deref(), Some("acme"));
    assert_eq!(got[0].json(), json!({"n": 1}));
    // QUIC ingress stamps the broker's arrival time, as HTTP ingress does.
    assert!(got[0].ce("knativearrivaltime").is_some());

    // Generated load in frames of 100, the last one short.
    let (out, summary) = send(
        router.dir(),
        to_router(
            &router,
            &["--count", "250", "--batch", "100", "--type", "t"],
        ),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(summary["requests"], 3, "{summary}");
    assert_eq!(summary["accepted"], 250, "{summary}");
    assert!(
        summary["latency_us"]["p99"].as_u64().unwrap() > 0,
        "{summary}"
    );
    sub.wait_for(251, PATIENCE).await;
    let metrics = router.metrics().await;
    assert_eq!(
        metrics.get(
            "triggerfish_ingress_events_total",
            &[("broker", "default/default"), ("outcome", "accepted")]
        ),
        251.0
    );

    // A JSON Lines file, with one invalid event and one line that is not JSON: QUIC accepts
    // the others and names the event; the line is reported and never sent (in a batch it
    // would have made the whole frame invalid).
    let file = router.dir().join("events.jsonl");
    std::fs::write(
        &file,
        "{\"specversion\":\"1.0\",\"id\":\"f1\",\"source\":\"/s\",\"type\":\"t\"}\n\
         {\"specversion\":\"1.0\",\"id\":\"f2\",\"source\":\"/s\"}\n\
         not json\n\
         {\"specversion\":\"1.0\",\"id\":\"f3\",\"source\":\"/s\",\"type\":\"t\"}\n",
    )
    .unwrap();
    let (out, summary) = send(
        router.dir(),
        to_router(
            &router,
            &["--file", file.to_str().unwrap(), "--batch", "10"],
        ),
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        (
            summary["sent"].as_u64(),
            summary["accepted"].as_u64(),
            summary["rejected"].as_u64(),
            summary["malformed"].as_u64()
        ),
        (Some(3), Some(2), Some(1), Some(1)),
        "{summary}"
    );
    assert_eq!(summary["not_accepted_ids"], json!(["f2"]));
    let errors: Vec<&str> = summary["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap())
        .collect();
    assert!(
        errors.contains(&"line 2 (f2): 400 missing required attribute \"type\""),
        "{summary}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("line 3: not sent: not JSON (")),
        "{summary}"
    );
    sub.wait_for(253, PATIENCE).await;

    // The same file over HTTP: a batch is taken whole, so the invalid event refuses the
    // batch, and the report says which event is invalid and why the others were refused.
    let (out, summary) = send(
        router.dir(),
        s(&[
            "--to",
            &router.broker_url("default"),
            "--file",
            file.to_str().unwrap(),
            "--batch",
            "10",
        ]),
    )
    .await;
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        (summary["accepted"].as_u64(), summary["rejected"].as_u64()),
        (Some(0), Some(3)),
        "{summary}"
    );
    let errors = summary["errors"].to_string();
    assert!(
        errors.contains("line 2 (f2): 400 missing required attribute \\\"type\\\""),
        "{errors}"
    );
    assert!(
        errors.contains(
            "line 1 (f1): 400 not accepted: other events of its batch are invalid, and HTTP takes a batch whole"
        ),
        "{errors}"
    );
}

/// `quic.threads`: the endpoint, connections and streams on a runtime of their own. Frames are
/// acked and delivered as on the shared runtime, and SIGTERM still shuts down cleanly (that
/// runtime is shut down without blocking the main one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quic_ingress_on_its_own_threads_delivers_and_shuts_down() {
    let sub = Subscriber::start().await;
    let mut router = router_to(&sub, "quic: {threads: 2}").await;
    router.wait_log("QUIC ingress listening", PATIENCE).await;
    let (out, summary) = send(
        router.dir(),
        to_router(
            &router,
            &["--count", "500", "--batch", "100", "--type", "t"],
        ),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(summary["accepted"], 500, "{summary}");
    let got = sub.wait_for(500, PATIENCE).await;
    assert_eq!(got.len(), 500);
    let threads = std::fs::read_dir(format!("/proc/{}/task", router.pid()))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .filter(|name| name.trim() == "tf-quic")
        .count();
    assert_eq!(threads, 2, "threads named tf-quic");
    router.sigterm();
    let status = router.wait_exit(PATIENCE).await;
    assert!(status.success(), "{status:?}\n{}", router.stderr());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_carry_the_http_error_texts_per_event() {
    let sub = Subscriber::start().await;
    let router = router_to(&sub, "limits: {maxEventBytes: 1KiB, maxBatchEvents: 5}").await;
    let client = QuicClient::connect(router.quic, &router.quic_cert()).await;
    let events = vec![
        Event::new("ok-1", "t"),
        Event::new("", "t"),
        Event::new("big", "t").data(json!("x".repeat(2000))),
        Event::new("ok-2", "t"),
    ];
    let ack = client.publish("default/default", &events).await.ack();
    assert_eq!((ack.status, ack.accepted), (202, 2), "{ack:?}");
    let rejected: Vec<(u32, u16)> = ack.rejected.iter().map(|r| (r.index, r.status)).collect();
    assert_eq!(rejected, [(1, 400), (2, 413)]);
    // The same texts as HTTP ingress gives for the same events.
    let http = router
        .client
        .send_batch(&router.broker_url("default"), &events)
        .await;
    assert_eq!(http.code(), 413, "{}", http.text());
    let http_errors: Vec<String> = http.json()["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["error"].as_str().unwrap().to_owned())
        .collect();
    let quic_errors: Vec<String> = ack.rejected.iter().map(|r| r.error.clone()).collect();
    assert_eq!(quic_errors, http_errors);
    let ids: BTreeSet<String> = sub
        .wait_for(2, PATIENCE)
        .await
        .iter()
        .map(|r| r.id())
        .collect();
    assert_eq!(ids, BTreeSet::from(["ok-1".to_owned(), "ok-2".to_owned()]));

    // Whole-frame refusals, with HTTP's texts and statuses.
    let ack = client
        .publish_body(
            "default/default",
            &Bytes::from_static(b"{\"not\": \"an array\"}"),
            1,
        )
        .await
        .ack();
    assert_eq!(ack.status, 400);
    assert_eq!(
        ack.message,
        "a batch must be a JSON array of events, found an object"
    );
    let six: Vec<Event> = (0..6).map(|i| Event::new(format!("s{i}"), "t")).collect();
    let ack = client.publish("default/default", &six).await.ack();
    assert_eq!(
        (ack.status, ack.message.as_str()),
        (413, "batch holds 6 events, over the limit of 5")
    );
    let ack = client.publish("default/nope", &events[..1]).await.ack();
    assert_eq!(
        (ack.status, ack.message.as_str()),
        (404, "unknown broker default/nope")
    );
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_reset_the_stream_not_the_connection() {
    let sub = Subscriber::start().await;
    let router = router_to(
        &sub,
        "limits: {maxRequestBytes: 64KiB, maxEventBytes: 64KiB}",
    )
    .await;
    let client = QuicClient::connect(router.quic, &router.quic_cert()).await;
    let good = encode_publish("default/default", b"[]").unwrap();
    let cases: Vec<(&str, Vec<u8>, bool, StreamCode)> = vec![
        (
            "unknown frame type",
            [&[9u8][..], &good[1..]].concat(),
            true,
            StreamCode::Malformed,
        ),
        (
            "nonzero flags",
            [&[1u8, 4][..], &good[2..]].concat(),
            true,
            StreamCode::UnsupportedFlags,
        ),
        (
            "FIN inside the header",
            good[..5].to_vec(),
            true,
            StreamCode::Truncated,
        ),
        (
            "FIN inside the body",
            encode_publish("default/default", b"[{}]").unwrap()[..20].to_vec(),
            true,
            StreamCode::Truncated,
        ),
        (
            "bytes after the frame",
            [good.as_slice(), b"[]"].concat(),
            true,
            StreamCode::TrailingData,
        ),
        (
            "target without a slash",
            encode_publish_raw(b"default", b"[]"),
            true,
            StreamCode::Malformed,
        ),
        (
            "target not UTF-8",
            encode_publish_raw(b"def\xffault/x", b"[]"),
            true,
            StreamCode::Malformed,
        ),
        (
            "empty target",
            vec![1, 0, 0, 0, 0, 0, 0, 0],
            true,
            StreamCode::Malformed,
        ),
        // Refused from the header alone: no body was sent, and the stream is still open.
        (
            "body over maxRequestBytes",
            PublishHeader::new(15, 1 << 20).unwrap().to_bytes().to_vec(),
            false,
            StreamCode::FrameTooLarge,
        ),
    ];
    for (what, bytes, finish, code) in cases {
        match client.exchange(&bytes, finish, 1).await {
            Answer::Reset(c) => assert_eq!(c, u64::from(code.as_u32()), "{what}"),
            other => panic!("{what}: expected a reset with {code:?}, got {other:?}"),
        }
    }
    // The connection still works, and so does the server.
    let ack = client
        .publish("default/default", &[Event::new("after", "t")])
        .await
        .ack();
    assert_eq!((ack.status, ack.accepted), (202, 1));
    sub.wait_for(1, PATIENCE).await;
    let metrics = router.metrics().await;
    assert_eq!(
        metrics.get(
            "triggerfish_quic_stream_resets_total",
            &[("code", "malformed")]
        ),
        4.0
    );
    assert_eq!(
        metrics.get(
            "triggerfish_quic_stream_resets_total",
            &[("code", "truncated")]
        ),
        2.0
    );
    assert_eq!(
        metrics.get(
            "triggerfish_quic_stream_resets_total",
            &[("code", "frame_too_large")]
        ),
        1.0
    );
    client.close().await;
    assert_eq!(router.readyz().await.unwrap().code(), 200);
}

fn encode_publish_raw(target: &[u8], body: &[u8]) -> Vec<u8> {
    let head = PublishHeader::new(target.len(), body.len())
        .unwrap()
        .to_bytes();
    [&head[..], target, body].concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_alpn_or_an_untrusted_certificate_fails_the_handshake() {
    let sub = Subscriber::start().await;
    let router = router_to(&sub, "").await;
    let ca = router.quic_cert();

    let err = QuicClient::connect_with(router.quic, &ca, b"h3")
        .await
        .err()
        .unwrap();
    assert!(
        err.contains("no_application_protocol") || err.contains("120"),
        "{err}"
    );

    // Not trusted: a clear error, no events sent.
    let url = router.quic_url("default");
    let (out, _) = send(router.dir(), s(&["--to", &url, "--type", "t"])).await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("TLS handshake") && err.contains("UnknownIssuer"),
        "{err}"
    );

    // Pinned by the fingerprint the server logged.
    let logs = router.stderr();
    let pin = logs
        .split("fingerprint=sha256:")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_owned();
    let (out, summary) = send(
        router.dir(),
        s(&["--to", &url, "--type", "t", "--pin-sha256", &pin]),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(summary["accepted"], 1);
    // A wrong pin is not trusted.
    let wrong = pin.replace(&pin[..2], if &pin[..2] == "00" { "11" } else { "00" });
    let (out, _) = send(
        router.dir(),
        s(&["--to", &url, "--type", "t", "--pin-sha256", &wrong]),
    )
    .await;
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    // Skipping verification must be asked for by name, and is announced.
    let (out, summary) = send(
        router.dir(),
        s(&["--to", &url, "--type", "t", "--danger-accept-invalid-certs"]),
    )
    .await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("warning: --danger-accept-invalid-certs"));
    assert_eq!(summary["accepted"], 1);
    sub.wait_for(2, PATIENCE).await;
    assert!(
        router
            .metrics()
            .await
            .get("triggerfish_quic_handshake_failures_total", &[])
            >= 2.0
    );
    // A trusted client is unaffected by the failures.
    let client = QuicClient::connect(router.quic, &ca).await;
    assert_eq!(
        client
            .publish("default/default", &[Event::new("x", "t")])
            .await
            .ack()
            .status,
        202
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queues_answer_429_with_a_retry_after() {
    let sub = Subscriber::start().await;
    sub.handle(|_| Reply::ok().held());
    let config = Config::new()
        .server("queues:\n  shard: {events: 4, bytes: 1MiB}\n  trigger: {events: 2, bytes: 1MiB}\nlimits: {maxBatchEvents: 4, maxRequestBytes: 1MiB}")
        .broker("default", None)
        .trigger(Trigger::new("stalled", &sub.url("/s")).spec("maxInFlight: 1"));
    let router = Router::start(&config.render()).await;
    let client = QuicClient::connect(router.quic, &router.quic_cert()).await;
    let (mut accepted, mut in_a_row) = (BTreeSet::new(), 0);
    for i in 0..100 {
        if in_a_row == 5 {
            break;
        }
        let event = Event::new(format!("e-{i}"), "t").attr("partitionkey", "one");
        let ack = client
            .publish("default/default", std::slice::from_ref(&event))
            .await
            .ack();
        match ack.status {
            202 => {
                in_a_row = 0;
                accepted.insert(event.id().to_owned());
                if accepted.len() == 1 {
                    sub.wait_for(1, PATIENCE).await;
                }
            }
            429 => {
                in_a_row += 1;
                assert_eq!((ack.accepted, ack.retry_after_ms), (0, 1000), "{ack:?}");
                // The trigger's queue three quarters full: refused as backlogged (naming
                // it); full, with the shard queue behind it: "queues are full".
                assert!(
                    ack.message == "queues are full"
                        || ack.message.contains("falling behind (default/stalled)"),
                    "{ack:?}"
                );
            }
            other => panic!("unexpected {other}: {ack:?}"),
        }
    }
    assert_eq!(in_a_row, 5, "no steady 429: the queues are not bounded");
    assert!(
        (3..=8).contains(&accepted.len()),
        "accepted {}",
        accepted.len()
    );
    // Once the subscriber recovers, every accepted event arrives, once.
    sub.handle(|_| Reply::ok());
    sub.release();
    let got = sub.wait_for(accepted.len(), PATIENCE).await;
    let ids: BTreeSet<String> = got.iter().map(|r| r.id()).collect();
    assert_eq!(ids, accepted);
}

/// Opens a stream of `client` and sends the first `sent` bytes of a frame whose body is `len`
/// bytes, without FIN: a frame that stalls. The stream stays open while the result lives.
async fn stall(client: &QuicClient, len: usize, sent: usize) -> quinn::SendStream {
    let frame = encode_publish("default/default", &vec![b' '; len]).unwrap();
    let (mut send, _recv) = client.connection.open_bi().await.unwrap();
    send.write_all(&frame[..sent]).await.unwrap();
    send
}

/// Publishes one event per frame until an ack passes `done`, at most for [`PATIENCE`]; returns
/// that ack and how many events were accepted before it.
async fn publish_until(client: &QuicClient, done: impl Fn(&Ack) -> bool) -> (Ack, usize) {
    let deadline = Instant::now() + PATIENCE;
    let mut accepted = 0;
    for i in 0.. {
        let event = Event::new(format!("until-{i}"), "t");
        let ack = client.publish("default/default", &[event]).await.ack();
        if done(&ack) {
            return (ack, accepted);
        }
        accepted += ack.accepted as usize;
        assert!(Instant::now() < deadline, "last ack: {ack:?}");
    }
    unreachable!()
}

/// A router whose QUIC body budget is 1 MiB (frames may take 30 s), and two connections to it:
/// an attacker's and a producer's.
async fn budget_of_1mib() -> (Subscriber, Router, QuicClient, QuicClient) {
    let sub = Subscriber::start().await;
    let router = router_to(
        &sub,
        "limits: {maxRequestBytes: 1MiB}\nquic: {maxBufferedBytes: 1MiB, frameTimeout: PT30S}",
    )
    .await;
    let attacker = QuicClient::connect(router.quic, &router.quic_cert()).await;
    let producer = QuicClient::connect(router.quic, &router.quic_cert()).await;
    (sub, router, attacker, producer)
}

/// A client that declares large bodies and sends nothing holds none of the body budget: other
/// frames are answered at once, not after the stalled ones time out (`frameTimeout`, here 30 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_that_declare_a_body_and_stall_hold_no_buffer() {
    let (sub, _router, attacker, producer) = budget_of_1mib().await;
    let mut stalled = Vec::new();
    for _ in 0..20 {
        // The header, the target and a byte of a 1 MiB body.
        stalled.push(stall(&attacker, 1 << 20, 24).await);
    }
    let ack = tokio::time::timeout(
        PATIENCE / 2,
        producer.publish("default/default", &[Event::new("through", "t")]),
    )
    .await
    .expect("a frame waited behind stalled ones")
    .ack();
    assert_eq!((ack.status, ack.accepted), (202, 1), "{ack:?}");
    sub.wait_for(1, PATIENCE).await;
    drop(stalled);
}

/// Bytes that have arrived do hold the budget: with it full, a frame waits a second for room,
/// then is answered 429 with a retry-after (nothing queued); once the stalled frame goes, the
/// budget is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_body_budget_answers_429_then_recovers() {
    let (sub, _router, attacker, producer) = budget_of_1mib().await;
    // All but the last 10 bytes of a 1 MiB body (after 23 bytes of header and target): the
    // budget has 10 bytes left, less than any frame's body.
    let mut stalled = stall(&attacker, 1 << 20, 23 + (1 << 20) - 10).await;
    let (ack, before) = publish_until(&producer, |ack| ack.status == 429).await;
    assert_eq!(
        (ack.accepted, ack.retry_after_ms, ack.message.as_str()),
        (0, 1000, "ingress buffers are full"),
        "{ack:?}"
    );
    let _ = stalled.reset(0u8.into());
    let (ack, _) = publish_until(&producer, |ack| ack.status == 202).await;
    assert_eq!(ack.accepted, 1, "{ack:?}");
    // Accepted: those before the budget filled, and the last one.
    sub.wait_for(before + 1, PATIENCE).await;
    assert_eq!(
        sub.count(),
        before + 1,
        "an event answered 429 was delivered"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_mid_batch_loses_only_what_was_not_acked() {
    let sub = Subscriber::start().await;
    let router = router_to(&sub, "").await;
    let client = QuicClient::connect(router.quic, &router.quic_cert()).await;
    let mut acked = BTreeSet::new();
    for f in 0..3 {
        let events: Vec<Event> = (0..10)
            .map(|i| Event::new(format!("f{f}-{i}"), "t"))
            .collect();
        let ack = client.publish("default/default", &events).await.ack();
        assert_eq!((ack.status, ack.accepted), (202, 10));
        acked.extend(events.iter().map(|e| e.id().to_owned()));
    }
    // The fourth frame: half of its body, then the connection goes away.
    let events: Vec<Event> = (0..10)
        .map(|i| Event::new(format!("lost-{i}"), "t"))
        .collect();
    let frame =
        encode_publish("default/default", &triggerfish_tests::event::batch(&events)).unwrap();
    let half = frame[..frame.len() / 2].to_vec();
    let pending = {
        let connection = client.connection.clone();
        tokio::spawn(async move {
            let (mut send, mut recv) = connection.open_bi().await.unwrap();
            send.write_all(&half).await.unwrap();
            recv.read_to_end(1 << 16).await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    client.abort();
    // The client is told: no ack for that frame.
    let result = pending.await.unwrap();
    assert!(result.is_err(), "{result:?}");
    // Everything acked is delivered; nothing of the unacked frame is.
    let got = sub.wait_for(30, PATIENCE).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ids: BTreeSet<String> = sub.requests().iter().map(|r| r.id()).collect();
    assert_eq!(ids, acked, "{} requests", got.len());
    // The server carries on.
    let again = QuicClient::connect(router.quic, &router.quic_cert()).await;
    assert_eq!(
        again
            .publish("default/default", &[Event::new("next", "t")])
            .await
            .ack()
            .status,
        202
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_connection_is_reported_by_send() {
    // `triggerfish send` at a server that stops mid-run: acked events are counted accepted,
    // the rest not acknowledged, and the two add up to what was sent.
    let sub = Subscriber::start().await;
    let mut router = router_to(&sub, "shutdownGracePeriod: PT0S").await;
    let ca = router.quic_cert();
    let url = router.quic_url("default");
    let dir = router.dir().to_owned();
    let run = tokio::task::spawn_blocking(move || {
        run_cli(
            &dir,
            &[
                "send",
                "--json",
                "--to",
                &url,
                "--ca-file",
                ca.to_str().unwrap(),
                "--count",
                "20000",
                "--batch",
                "10",
                "--rate",
                "4000",
                "--timeout",
                "2",
            ],
            None,
        )
    });
    sub.wait_for(200, PATIENCE).await;
    router.sigterm();
    router.wait_exit(PATIENCE).await;
    let out = run.await.unwrap();
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = |k: &str| summary[k].as_u64().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(
        n("sent"),
        n("accepted") + n("rejected") + n("throttled") + n("unacknowledged"),
        "{summary}"
    );
    assert!(n("accepted") >= 200 && n("accepted") < 20_000, "{summary}");
    assert!(n("throttled") + n("unacknowledged") > 0, "{summary}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_ingress_forwards_to_a_second_router_over_quic() {
    // B: receives over QUIC, delivers over HTTP. Its events may be at most 1 KiB.
    let sub = Subscriber::start().await;
    let b = router_to(&sub, "limits: {maxEventBytes: 1KiB}").await;
    // A: HTTP ingress, a trigger forwarding to B over QUIC, dead letters to an HTTP sink.
    let dls = Subscriber::start().await;
    let config = forwarding_to(
        &b,
        Trigger::new("forward", &b.quic_url("default"))
            .spec("batch: {maxEvents: 20, linger: PT0.01S}")
            .delivery(&format!(
                "retry: 2\nbackoffDelay: PT0.01S\ntimeout: PT1S\ndeadLetterSink:\n  uri: {}",
                dls.url("/dead")
            )),
    );
    let a = Router::start(&config.render()).await;
    let events: Vec<Event> = (0..50)
        .map(|i| Event::new(format!("fw-{i}"), "t").attr("seq", i))
        .collect();
    let r = a.client.send_batch(&a.broker_url("default"), &events).await;
    assert_eq!(r.code(), 202, "{}", r.text());
    let got = sub.wait_for(50, PATIENCE).await;
    let ids: BTreeSet<String> = got.iter().map(|r| r.id()).collect();
    assert_eq!(ids.len(), 50);
    // Batched: fewer frames than events reached B.
    let metrics = b.metrics().await;
    let frames = metrics.get(
        "triggerfish_ingress_requests_total",
        &[("broker", "default/default"), ("outcome", "accepted")],
    );
    assert!(frames < 50.0, "{frames} frames for 50 events");
    // Every event's attempt completed from the acks (B may deliver before A reads its ack).
    wait_forwarded(&a, 50.0).await;

    // An event B refuses (over its 1 KiB limit) is not retried: A dead-letters it with B's
    // status and reason, and its neighbours in the frame are delivered.
    let big = Event::new("big", "t").data(json!("x".repeat(2000)));
    let small = Event::new("small", "t");
    let r = a
        .client
        .send_batch(&a.broker_url("default"), &[big, small])
        .await;
    assert_eq!(r.code(), 202);
    sub.wait_for(51, PATIENCE).await;
    let dead = dls.wait_for(1, PATIENCE).await;
    assert_eq!(dead[0].id(), "big");
    assert_eq!(dead[0].ce("knativeerrorcode").as_deref(), Some("413"));
    assert_eq!(
        dead[0].ce("knativeerrordest").as_deref(),
        Some(b.quic_url("default").as_str())
    );
    assert_eq!(
        a.metrics().await.get(
            "triggerfish_delivery_retries_total",
            &[("trigger", "default/forward")]
        ),
        0.0
    );

    // B down: A retries (transport errors), then dead-letters.
    drop(b);
    let r = a
        .client
        .send_binary(&a.broker_url("default"), &Event::new("while-down", "t"))
        .await;
    assert_eq!(r.code(), 202);
    let dead = dls.wait_for(2, PATIENCE).await;
    assert_eq!(dead[1].id(), "while-down");
    assert_eq!(dead[1].ce("knativeerrorcode").as_deref(), Some("500"));
}

/// A second router that crashes and restarts on the same address with the same certificate
/// answers the packets of the connection the first one had with a stateless reset its client
/// recognises (the reset key derives from the certificate's key), so the forwarding router
/// reconnects at once rather than waiting for its attempt or idle timeout to run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_peer_resets_the_old_connection_at_once() {
    let sub = Subscriber::start().await;
    let mut b = router_to(&sub, "").await;
    let config = forwarding_to(
        &b,
        Trigger::new("forward", &b.quic_url("default"))
            // Far beyond the test's patience: only a reset ends the stale attempt in time.
            .delivery("retry: 5\nbackoffDelay: PT0.05S\ntimeout: PT60S"),
    );
    let a = Router::start(&config.render()).await;
    a.publish(&Event::new("before", "t")).await;
    sub.wait_for(1, PATIENCE).await;
    // B delivers before it acks: crashed between the two, it would get "before" again.
    wait_forwarded(&a, 1.0).await;

    b.crash_and_restart().await;
    let restarted = Instant::now();
    a.publish(&Event::new("after", "t")).await;
    let got = sub.wait_for(2, PATIENCE).await;
    assert_eq!(got[1].id(), "after");
    // The reset ends either the attempt itself or, when a keep-alive or a retransmission
    // reached the restarted router first, the idle pooled connection before the attempt.
    let logs = a.stderr();
    assert!(
        logs.contains("error=connection lost before the ack: reset by peer")
            || logs.contains("QUIC connection was closed; opening a new one peer=127.0.0.1:")
                && logs.contains("reason=reset by peer"),
        "the forwarding router says the old connection was reset:\n{logs}"
    );
    println!("delivered {:?} after the restart", restarted.elapsed());
}

/// A peer that stops answering altogether (its host died; here it is frozen, so that nothing,
/// not even a stateless reset, comes back) fails the frames in flight once the connection has
/// heard nothing for the client's idle timeout (10 s), well before the attempt's own 60 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_stops_answering_fails_the_frame_at_the_idle_timeout() {
    let sub = Subscriber::start().await;
    let b = router_to(&sub, "").await;
    let config = forwarding_to(
        &b,
        Trigger::new("forward", &b.quic_url("default")).delivery(&format!(
            "retry: 0\ntimeout: PT60S\ndeadLetterSink:\n  uri: {}",
            sub.url("/dead")
        )),
    );
    let a = Router::start(&config.render()).await;
    a.publish(&Event::new("before", "t")).await;
    // B delivers before it acks: frozen between the two, it would leave "before" unacked.
    wait_forwarded(&a, 1.0).await;
    b.pause();
    let paused = Instant::now();
    a.publish(&Event::new("after", "t")).await;
    // The server's idle timeout (30 s) would be the other bound: 20 s tells them apart.
    let dead = sub.wait_for_path("/dead", 1, Duration::from_secs(20)).await;
    b.resume();
    assert_eq!(dead[0].id(), "after");
    let waited = paused.elapsed();
    assert!(waited >= Duration::from_secs(9), "failed after {waited:?}");
    println!("dead-lettered {waited:?} after the peer froze");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_name_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::new()
        .server("listen: {quic: nowhere}")
        .broker("default", None)
        .trigger(Trigger::new("a", "http://127.0.0.1:1/").spec("batch: {maxEvents: 10}"))
        .trigger(Trigger::new("b", "quic://127.0.0.1:1/default").spec(""));
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, config.render()).unwrap();
    let out = run_cli(
        dir.path(),
        &["validate", "--config", path.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("not a UDP address"), "{err}");

    let display = "ref: {apiVersion: triggerfish.dev/v1alpha1, kind: Display, name: display}";
    let config = Config::new()
        .broker("default", None)
        .trigger(
            Trigger::new("a", "")
                .subscriber(display)
                .spec("batch: {maxEvents: 10}"),
        )
        .trigger(Trigger::new("b", "quic://127.0.0.1:1/default"))
        .trigger(Trigger::new("c", "quic://127.0.0.1:1/default/x").spec("batch: {linger: PT5S}"));
    std::fs::write(&path, config.render()).unwrap();
    let out = run_cli(
        dir.path(),
        &["validate", "--config", path.to_str().unwrap()],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("spec.batch: batch applies only to quic:// and HTTP(S) subscribers"),
        "{err}"
    );
    assert!(
        err.contains("write quic://host:port/namespace/broker"),
        "{err}"
    );
    assert!(err.contains("spec.batch.linger"), "{err}");
    let _ = ALPN;
}

/// The QUIC ingress's certificate files (`quic.tls`), replaced on disk, are picked up without
/// a restart: new connections get the new certificate. A broken pair is refused, and the last
/// good certificate stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quic_certificate_is_reloaded_from_disk() {
    use sha2::{Digest as _, Sha256};
    use triggerfish_core::quic::format_fingerprint;
    use triggerfish_tests::tls::Ca;

    let pin = |der: &[u8]| format_fingerprint(&Sha256::digest(der).into());
    let sub = Subscriber::start().await;
    let ca = Ca::new("test CA");
    let (first, second) = (ca.server(), ca.server());
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, &first.cert_pem).unwrap();
    std::fs::write(&key, &first.key_pem).unwrap();
    let router = router_to(
        &sub,
        &format!(
            "quic: {{tls: {{certFile: {}, keyFile: {}}}}}",
            cert.display(),
            key.display()
        ),
    )
    .await;
    let url = router.quic_url("default");
    let send_pinned = |der: &[u8]| {
        let args = s(&["--to", &url, "--type", "t", "--pin-sha256", &pin(der)]);
        send(router.dir(), args)
    };
    let (out, summary) = send_pinned(&first.der).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(summary["accepted"], 1);

    // Rotate, as cert-manager does: new files moved into place.
    std::fs::write(dir.path().join("tls.key.new"), &second.key_pem).unwrap();
    std::fs::write(dir.path().join("tls.crt.new"), &second.cert_pem).unwrap();
    std::fs::rename(dir.path().join("tls.key.new"), &key).unwrap();
    std::fs::rename(dir.path().join("tls.crt.new"), &cert).unwrap();
    let logs = router.wait_log("QUIC certificate reloaded", PATIENCE).await;
    assert!(
        logs.contains(&format!("fingerprint=sha256:{}", pin(&second.der))),
        "{logs}"
    );
    let (out, summary) = send_pinned(&second.der).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(summary["accepted"], 1);
    let (out, _) = send_pinned(&first.der).await;
    assert_eq!(
        out.status.code(),
        Some(2),
        "the old certificate is no longer served"
    );

    // A broken pair (the new certificate with the old key) is refused; the last good one stays.
    std::fs::write(&key, &first.key_pem).unwrap();
    router
        .wait_log("QUIC TLS files changed but do not load", PATIENCE)
        .await;
    let (out, summary) = send_pinned(&second.der).await;
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(summary["accepted"], 1);
    sub.wait_for(3, PATIENCE).await;
}
