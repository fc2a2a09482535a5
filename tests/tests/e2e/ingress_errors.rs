//! What ingress refuses, and how: malformed bodies and attributes (400, naming the bad
//! event's index), oversized bodies (413, refused while reading), unsupported formats and
//! compressed bodies (415),
//! unknown brokers (404) and methods other than POST (405; OPTIONS gets the CloudEvents
//! webhook handshake), bodies that stall (408), and
//! clients that connect and say nothing (closed). A refused request enqueues nothing.
#![allow(clippy::unwrap_used)]

use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{Value, json};
use triggerfish_tests::{Config, Event, PATIENCE, Router, Subscriber, Trigger};

const ACCEPTED: &str = "triggerfish_ingress_events_total";

async fn start() -> (Subscriber, Router) {
    start_with("limits: {maxRequestBytes: 64KiB, maxEventBytes: 8KiB, maxBatchEvents: 10}").await
}

/// A router with `server` as its `Server` spec, and one trigger passing everything to a
/// subscriber.
async fn start_with(server: &str) -> (Subscriber, Router) {
    let sub = Subscriber::start().await;
    let config = Config::new()
        .server(server)
        .broker("default", None)
        .trigger(Trigger::new("all", &sub.url("/sink")));
    let router = Router::start(&config.render()).await;
    (sub, router)
}

/// The `index` fields of an error body's `events`.
fn indices(body: &Value) -> Vec<u64> {
    body["events"]
        .as_array()
        .map(|a| a.iter().map(|e| e["index"].as_u64().unwrap()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_events_are_refused_with_400() {
    let (sub, router) = start().await;
    let url = router.broker_url("default");
    let c = &router.client;

    // Not JSON at all.
    let r = c
        .post(
            &url,
            Some("application/cloudevents+json"),
            Bytes::from_static(b"{\"specversion\": \"1.0\", \"id\": "),
        )
        .await;
    assert_eq!(r.code(), 400, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.json()["error"].as_str().is_some_and(|e| !e.is_empty()));

    // Structured mode, a required attribute missing.
    let mut no_source = Event::new("s-1", "t").json();
    no_source.as_object_mut().unwrap().remove("source");
    let r = c
        .post(
            &url,
            Some("application/cloudevents+json"),
            Bytes::from(no_source.to_string()),
        )
        .await;
    assert_eq!(r.code(), 400, "{}", r.text());
    assert!(
        r.text().contains("source"),
        "names the attribute: {}",
        r.text()
    );

    // Binary mode without ce-id.
    let headers = vec![
        ("ce-specversion".to_owned(), "1.0".to_owned()),
        ("ce-type".to_owned(), "t".to_owned()),
        ("ce-source".to_owned(), "/s".to_owned()),
    ];
    let r = c
        .request(http::Method::POST, &url, &headers, Bytes::new())
        .await;
    assert_eq!(r.code(), 400, "{}", r.text());
    assert!(r.text().contains("id"), "{}", r.text());

    // A batch with bad events at indexes 1 and 3: all or nothing, every bad one named.
    let good = Event::new("b-0", "t").json();
    let mut missing_id = Event::new("b-1", "t").json();
    missing_id.as_object_mut().unwrap().remove("id");
    let bad_version = Event::new("b-3", "t").attr("specversion", "0.1").json();
    let body = json!([good, missing_id, Event::new("b-2", "t").json(), bad_version]);
    let r = c
        .post(
            &url,
            Some("application/cloudevents-batch+json"),
            Bytes::from(body.to_string()),
        )
        .await;
    assert_eq!(r.code(), 400, "{}", r.text());
    let err = r.json();
    assert_eq!(indices(&err), vec![1, 3], "{err}");
    assert!(
        err["events"][0]["error"]
            .as_str()
            .is_some_and(|e| e.contains("id")),
        "{err}"
    );
    assert!(
        err["events"][1]["error"]
            .as_str()
            .is_some_and(|e| e.contains("specversion") || e.contains("0.1")),
        "{err}"
    );

    // A batch that is not an array.
    let r = c
        .post(
            &url,
            Some("application/cloudevents-batch+json"),
            Bytes::from(good.to_string()),
        )
        .await;
    assert_eq!(r.code(), 400, "{}", r.text());

    // More events than maxBatchEvents.
    let many: Vec<Event> = (0..11).map(|i| Event::new(format!("m-{i}"), "t")).collect();
    let r = c.send_batch(&url, &many).await;
    assert!(
        matches!(r.code(), 400 | 413),
        "11 events > maxBatchEvents 10: {} {}",
        r.status,
        r.text()
    );

    let m = router.metrics().await;
    assert_eq!(
        m.count(ACCEPTED, &[("outcome", "accepted")]),
        0,
        "nothing of a refused request is accepted"
    );
    assert_eq!(sub.count(), 0);

    // The broker still works.
    router.publish(&Event::new("ok", "t")).await;
    let got = sub.wait_for(1, PATIENCE).await;
    assert_eq!(got[0].id(), "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_refused_while_reading() {
    let (sub, router) = start().await;
    let url = router.broker_url("default");

    // A Content-Length over maxRequestBytes (64KiB): refused before the body is read. Only the
    // head is sent; the answer must come anyway.
    let mut stream = TcpStream::connect(router.http).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let started = Instant::now();
    stream
        .write_all(
            b"POST /default/default HTTP/1.1\r\nhost: x\r\ncontent-type: application/cloudevents+json\r\ncontent-length: 104857600\r\n\r\n{\"specversion\":",
        )
        .unwrap();
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).unwrap();
    assert_eq!(
        &head,
        b"HTTP/1.1 413",
        "got {:?}",
        String::from_utf8_lossy(&head)
    );
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "refused without waiting for 100 MiB"
    );
    drop(stream);

    // Chunked, no Content-Length: cut off once past the limit, without reading to the end.
    let mut stream = TcpStream::connect(router.http).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(
            b"POST /default/default HTTP/1.1\r\nhost: x\r\ncontent-type: application/cloudevents+json\r\ntransfer-encoding: chunked\r\n\r\n",
        )
        .unwrap();
    let chunk = vec![b' '; 16 * 1024];
    for _ in 0..5 {
        stream
            .write_all(format!("{:x}\r\n", chunk.len()).as_bytes())
            .unwrap();
        stream.write_all(&chunk).unwrap();
        stream.write_all(b"\r\n").unwrap();
    }
    // 80KiB sent, the final chunk never is: the router must answer anyway.
    stream.read_exact(&mut head).unwrap();
    assert_eq!(
        &head,
        b"HTTP/1.1 413",
        "got {:?}",
        String::from_utf8_lossy(&head)
    );
    drop(stream);

    // One event over maxEventBytes (8KiB) in a request under maxRequestBytes: 413 too.
    let big = Event::new("big", "t").data(json!({"pad": "x".repeat(10 * 1024)}));
    let r = router.client.send_structured(&url, &big).await;
    assert_eq!(r.code(), 413, "{}", r.text());

    // Right at a size that fits: accepted.
    let fits = Event::new("fits", "t").data(json!({"pad": "x".repeat(4 * 1024)}));
    let r = router.client.send_structured(&url, &fits).await;
    assert_eq!(r.code(), 202, "{}", r.text());

    let m = router.metrics().await;
    assert_eq!(m.count(ACCEPTED, &[("outcome", "accepted")]), 1);
    assert!(
        m.count(
            "triggerfish_ingress_requests_total",
            &[("outcome", "too_large")]
        ) >= 3
    );
    let got = sub.wait_for(1, PATIENCE).await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id(), "fits");
}

/// Opens a connection, sends `bytes`, and reads until the router closes it: what it answered,
/// and after how long.
fn held_open(router: &Router, bytes: &'static [u8]) -> std::thread::JoinHandle<(String, Duration)> {
    let addr = router.http;
    std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let started = Instant::now();
        stream.write_all(bytes).unwrap();
        let mut answer = Vec::new();
        stream
            .read_to_end(&mut answer)
            .expect("the router closes the connection");
        (
            String::from_utf8_lossy(&answer).into_owned(),
            started.elapsed(),
        )
    })
}

/// Clients that connect and say nothing, send half a head, stop in the middle of a body, or
/// open an HTTP/2 connection and leave it idle are not held for ever: after 30 s the body is
/// answered 408 and the others are closed. The router serves others meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_stalled_clients_are_closed() {
    let (sub, router) = start().await;
    let silent = held_open(&router, b"");
    let half_head = held_open(&router, b"POST /default/default HTTP/1.1\r\nhost: x\r\n");
    let stalled_body = held_open(
        &router,
        b"POST /default/default HTTP/1.1\r\nhost: x\r\ncontent-type: application/cloudevents-batch+json\r\ncontent-length: 100\r\n\r\n[{",
    );
    // HTTP/2 without TLS: the preface and an empty SETTINGS frame, then nothing.
    let idle_h2c = held_open(
        &router,
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
    );
    let r = router
        .client
        .send_structured(&router.broker_url("default"), &Event::new("meanwhile", "t"))
        .await;
    assert_eq!(r.code(), 202, "{}", r.text());
    sub.wait_for(1, PATIENCE).await;

    let in_time = |what: &str, took: Duration| {
        assert!(
            (Duration::from_secs(29)..Duration::from_secs(50)).contains(&took),
            "{what}: closed after {took:?}, not after 30 s"
        );
    };
    let (answer, took) = tokio::task::spawn_blocking(move || silent.join().unwrap())
        .await
        .unwrap();
    assert_eq!(answer, "", "silent");
    in_time("silent", took);
    let (answer, took) = tokio::task::spawn_blocking(move || half_head.join().unwrap())
        .await
        .unwrap();
    assert_eq!(answer, "", "half a head");
    in_time("half a head", took);
    let (answer, took) = tokio::task::spawn_blocking(move || stalled_body.join().unwrap())
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer.contains("the body stalled: no bytes for 30s"),
        "{answer}"
    );
    in_time("stalled body", took);
    let (answer, took) = tokio::task::spawn_blocking(move || idle_h2c.join().unwrap())
        .await
        .unwrap();
    // The server's SETTINGS (frame type 4), then the close.
    assert!(answer.len() >= 9 && answer.as_bytes()[3] == 4, "{answer:?}");
    in_time("idle h2c", took);
    let m = router.metrics().await;
    assert_eq!(m.count(ACCEPTED, &[("outcome", "accepted")]), 1);
}

/// At `limits.maxConnections` the ingress stops accepting: a further client waits, unserved,
/// while the admin listener (capped on its own) still answers, and is served as soon as a
/// connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_listener_waits_for_a_free_slot() {
    const OPEN: &str = "triggerfish_http_connections";
    const WAITS: &str = "triggerfish_http_connection_limit_waits_total";
    let (sub, router) = start_with("limits: {maxConnections: 3}").await;
    let ingress = [("listener", "ingress")];
    let mut idle: Vec<TcpStream> = (0..3)
        .map(|_| TcpStream::connect(router.http).unwrap())
        .collect();
    router.wait_metric(OPEN, &ingress, 3.0, PATIENCE).await;

    // The kernel completes the fourth handshake, but the router does not accept it.
    let addr = router.http;
    let event = Event::new("waited", "t").structured();
    let (waiting, answered) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        let head = format!(
            "POST /default/default HTTP/1.1\r\nhost: x\r\ncontent-type: application/cloudevents+json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            event.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&event).unwrap();
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer);
        let _ = waiting.send(String::from_utf8_lossy(&answer).into_owned());
    });
    router.wait_metric(WAITS, &ingress, 1.0, PATIENCE).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(answered.try_recv().is_err(), "served past the limit");
    let m = router.metrics().await;
    assert_eq!(m.count(OPEN, &ingress), 3);
    assert_eq!(m.count(ACCEPTED, &[("outcome", "accepted")]), 0);
    // Each listener reports once it serves; with no webhook source there is no webhook
    // listener, and no series for one.
    assert!(m.text().contains("listener=\"admin\""), "{}", m.text());
    assert!(!m.text().contains("listener=\"webhooks\""), "{}", m.text());

    // One idle client leaves: the waiting one is accepted and served.
    drop(idle.pop());
    let answer = tokio::task::spawn_blocking(move || answered.recv_timeout(PATIENCE))
        .await
        .unwrap()
        .expect("the waiting client is served once a slot frees");
    assert!(answer.starts_with("HTTP/1.1 202"), "{answer}");
    let delivered = sub.wait_for(1, PATIENCE).await;
    assert_eq!(delivered[0].id(), "waited");
    drop(idle);
}

/// Bodies being read share `limits.maxBufferedBytes`, taken by the bytes that have arrived:
/// while one client holds the budget with a body it does not finish, another's request is
/// answered 429 with `Retry-After` after a second (nothing queued), and once that client goes,
/// requests are accepted again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_body_budget_answers_429_then_recovers() {
    use tokio::io::AsyncWriteExt as _;
    const REQUESTS: &str = "triggerfish_ingress_requests_total";
    let (sub, router) = start_with("limits: {maxRequestBytes: 1MiB, maxBufferedBytes: 1MiB}").await;

    // Declares 1 MiB and sends all but 10 bytes of it, then waits.
    let mut staller = tokio::net::TcpStream::connect(router.http).await.unwrap();
    let declared = 1 << 20;
    let head = format!(
        "POST /default/default HTTP/1.1\r\nhost: x\r\ncontent-type: application/cloudevents-batch+json\r\ncontent-length: {declared}\r\n\r\n"
    );
    staller.write_all(head.as_bytes()).await.unwrap();
    staller.write_all(&vec![b' '; declared - 10]).await.unwrap();

    let url = router.broker_url("default");
    let started = Instant::now();
    let refused = loop {
        let r = router
            .client
            .send_structured(&url, &Event::new("squeezed", "t"))
            .await;
        if r.code() == 429 {
            break r;
        }
        // The staller's bytes may not all be read yet.
        assert_eq!(r.code(), 202, "{}", r.text());
        assert!(started.elapsed() < PATIENCE, "never refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(refused.json()["error"], "ingress buffers are full");
    assert_eq!(refused.header("retry-after"), Some("1"));
    let m = router.metrics().await;
    assert!(m.count(REQUESTS, &[("outcome", "throttled")]) >= 1);
    let accepted_before = m.count(ACCEPTED, &[("outcome", "accepted")]);

    // The staller leaves: its share comes back.
    drop(staller);
    let started = Instant::now();
    loop {
        let r = router
            .client
            .send_structured(&url, &Event::new("after", "t"))
            .await;
        if r.code() == 202 {
            break;
        }
        assert_eq!(r.code(), 429, "{}", r.text());
        assert!(started.elapsed() < PATIENCE, "the budget never came back");
    }
    let delivered = sub.wait_for(accepted_before as usize + 1, PATIENCE).await;
    assert!(delivered.iter().any(|d| d.id() == "after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_format_broker_path_and_method() {
    let (sub, router) = start().await;
    let url = router.broker_url("default");
    let c = &router.client;
    let event = Event::new("e", "t");

    // A CloudEvents format other than JSON.
    for ct in [
        "application/cloudevents+avro",
        "application/cloudevents+protobuf",
        "application/cloudevents-batch+avro",
    ] {
        let r = c.post(&url, Some(ct), event.structured()).await;
        assert_eq!(r.code(), 415, "{ct}: {}", r.text());
        assert!(r.json()["error"].is_string(), "{ct}: {}", r.text());
    }

    // A compressed body: refused before it is read, saying what to send instead.
    let structured = (
        "content-type".to_owned(),
        "application/cloudevents+json".to_owned(),
    );
    for coding in ["gzip", "br"] {
        let headers = [
            structured.clone(),
            ("content-encoding".to_owned(), coding.to_owned()),
        ];
        let r = c
            .request(http::Method::POST, &url, &headers, event.structured())
            .await;
        assert_eq!(r.code(), 415, "{coding}: {}", r.text());
        assert_eq!(r.header("accept-encoding"), Some("identity"));
        assert!(r.text().contains(coding), "{}", r.text());
    }
    let headers = [
        structured,
        ("content-encoding".to_owned(), "identity".to_owned()),
    ];
    let r = c
        .request(http::Method::POST, &url, &headers, event.structured())
        .await;
    assert_eq!(r.code(), 202, "{}", r.text());

    // Unknown broker, and paths that are not /{namespace}/{broker}.
    for path in [
        "/default/nope",
        "/other/default",
        "/default",
        "/default/default/extra",
        "/default/default//",
        "/",
    ] {
        let r = c.send_structured(&router.url(path), &event).await;
        assert_eq!(r.code(), 404, "{path}: {}", r.text());
    }
    let r = c.send_structured(&router.broker_url("nope"), &event).await;
    assert!(r.text().contains("default/nope"), "{}", r.text());

    // Methods other than POST and OPTIONS.
    for method in [http::Method::GET, http::Method::PUT, http::Method::DELETE] {
        let r = c.request(method.clone(), &url, &[], Bytes::new()).await;
        assert_eq!(r.code(), 405, "{method}: {}", r.text());
        assert_eq!(r.header("allow"), Some("POST, OPTIONS"), "{method}");
    }

    // OPTIONS: the CloudEvents webhook validation handshake, as Knative's broker answers it.
    let origin = [(
        "WebHook-Request-Origin".to_owned(),
        "eventemitter.example.com".to_owned(),
    )];
    for (headers, allowed) in [(&origin[..], "eventemitter.example.com"), (&[][..], "*")] {
        let r = c
            .request(http::Method::OPTIONS, &url, headers, Bytes::new())
            .await;
        assert_eq!(r.code(), 200, "{}", r.text());
        assert_eq!(r.header("allow"), Some("POST, OPTIONS"));
        assert_eq!(r.header("webhook-allowed-origin"), Some(allowed));
        assert_eq!(r.header("webhook-allowed-rate"), Some("*"));
        assert!(r.body.is_empty());
    }
    let r = c
        .request(
            http::Method::OPTIONS,
            &router.broker_url("nope"),
            &origin,
            Bytes::new(),
        )
        .await;
    assert_eq!(r.code(), 404, "{}", r.text());

    // An empty batch is fine, and delivers nothing.
    let r = c.send_batch(&url, &[]).await;
    assert_eq!(r.code(), 202, "{}", r.text());

    // Of all of the above, only the body sent with `Content-Encoding: identity` got in.
    let m = router.metrics().await;
    assert_eq!(m.count(ACCEPTED, &[("outcome", "accepted")]), 1);
    assert_eq!(
        m.count(
            "triggerfish_ingress_requests_total",
            &[("broker", "unknown"), ("outcome", "not_found")]
        ),
        8
    );
    assert_eq!(
        m.count(
            "triggerfish_ingress_requests_total",
            &[("broker", "default/default"), ("outcome", "preflight")]
        ),
        2
    );
    sub.wait_for(1, PATIENCE).await;
    assert_eq!(sub.count(), 1);
}
