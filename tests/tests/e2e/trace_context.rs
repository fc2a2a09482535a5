//! W3C trace context end to end: a request's `traceparent` and `tracestate` headers reach the
//! subscriber as headers and as the CloudEvents distributed-tracing extension; an event's own
//! extension wins; a reply continues the trace of the event it answers; a batched delivery
//! carries the context its events share; a malformed header is not propagated; the context
//! survives the JetStream store.
#![allow(clippy::unwrap_used)]

use serde_json::json;
use triggerfish_tests::{
    Config, Event, Nats, PATIENCE, Reply, Request, Router, Subscriber, Trigger,
};

const PRODUCER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const OWN: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_reaches_subscribers_and_replies() {
    let sub = Subscriber::start().await;
    sub.handle(|req| match req.path.as_str() {
        // A reply with no trace context of its own.
        "/orders" => Reply::event_binary(
            &Event::new(format!("{}-done", req.id()), "order.done").data(json!({"ok": true})),
        ),
        _ => Reply::ok(),
    });
    let config = Config::new()
        .broker("default", None)
        .trigger(Trigger::new("orders", &sub.url("/orders")).of_type("order.created"))
        .trigger(Trigger::new("done", &sub.url("/done")).of_type("order.done"))
        .trigger(Trigger::new("other", &sub.url("/other")).of_type("other"));
    let router = Router::start(&config.render()).await;
    let url = router.broker_url("default");
    let client = &router.client;

    // Binary mode, with the producer's context in the W3C headers.
    let (mut headers, body) = Event::new("o-1", "order.created").binary();
    headers.push(("traceparent".into(), PRODUCER.into()));
    headers.push(("tracestate".into(), "congo=t61rcWkgMzE".into()));
    let r = client
        .request(http::Method::POST, &url, &headers, body)
        .await;
    assert_eq!(r.code(), 202, "{}", r.text());

    // A batch under the same header: one event names its own context, one does not.
    let batch = [
        Event::new("b-own", "other").attr("traceparent", OWN),
        Event::new("b-inherits", "other"),
    ];
    let r = client
        .send_batch_with(&url, &batch, &[("traceparent", PRODUCER)])
        .await;
    assert_eq!(r.code(), 202, "{}", r.text());

    // A malformed traceparent (uppercase hex) is not propagated.
    let (mut headers, body) = Event::new("b-malformed", "other").binary();
    headers.push(("traceparent".into(), PRODUCER.to_uppercase()));
    let r = client
        .request(http::Method::POST, &url, &headers, body)
        .await;
    assert_eq!(r.code(), 202, "{}", r.text());

    let order = &sub.wait_for_path("/orders", 1, PATIENCE).await[0];
    assert_eq!(order.header("traceparent"), Some(PRODUCER));
    assert_eq!(order.header("tracestate"), Some("congo=t61rcWkgMzE"));
    assert_eq!(order.ce("traceparent").as_deref(), Some(PRODUCER));
    assert_eq!(order.ce("tracestate").as_deref(), Some("congo=t61rcWkgMzE"));

    // The reply re-entered the broker in the order's trace.
    let done = &sub.wait_for_path("/done", 1, PATIENCE).await[0];
    assert_eq!(done.id(), "o-1-done");
    assert_eq!(done.header("traceparent"), Some(PRODUCER));
    assert_eq!(done.ce("traceparent").as_deref(), Some(PRODUCER));
    assert_eq!(done.header("tracestate"), Some("congo=t61rcWkgMzE"));

    let others = sub.wait_for_path("/other", 3, PATIENCE).await;
    let by_id = |id: &str| others.iter().find(|r| r.id() == id).unwrap();
    let own = by_id("b-own");
    assert_eq!(own.header("traceparent"), Some(OWN));
    assert_eq!(own.ce("traceparent").as_deref(), Some(OWN));
    let inherits = by_id("b-inherits");
    assert_eq!(inherits.header("traceparent"), Some(PRODUCER));
    assert_eq!(inherits.ce("traceparent").as_deref(), Some(PRODUCER));
    // No tracestate came with the batch's traceparent.
    assert_eq!(inherits.header("tracestate"), None);
    let malformed = by_id("b-malformed");
    assert_eq!(malformed.header("traceparent"), None);
    assert_eq!(malformed.ce("traceparent"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_context_survives_the_jetstream_store() {
    let nats = Nats::start().await;
    let sub = Subscriber::start().await;
    let store = format!("store:\n  kind: jetstream\n  url: \"{}\"", nats.url());
    let config = Config::new()
        .server(&store)
        .broker("default", None)
        .trigger(Trigger::new("all", &sub.url("/sink")));
    let router = Router::start(&config.render()).await;

    let (mut headers, body) = Event::new("js-1", "order.created").binary();
    headers.push(("traceparent".into(), PRODUCER.into()));
    headers.push(("tracestate".into(), "congo=t61rcWkgMzE".into()));
    let r = router
        .client
        .request(
            http::Method::POST,
            &router.broker_url("default"),
            &headers,
            body,
        )
        .await;
    assert_eq!(r.code(), 202, "{}", r.text());

    let delivered = &sub.wait_for(1, PATIENCE).await[0];
    assert_eq!(delivered.id(), "js-1");
    assert_eq!(delivered.header("traceparent"), Some(PRODUCER));
    assert_eq!(delivered.header("tracestate"), Some("congo=t61rcWkgMzE"));
    assert_eq!(delivered.ce("traceparent").as_deref(), Some(PRODUCER));
}

/// A batched delivery (`spec.batch`) is one HTTP request for many events: it carries the W3C
/// headers when every event in it has the same trace context, and none when they differ (each
/// event's extension still names its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batched_delivery_carries_the_trace_context_its_events_share() {
    let sub = Subscriber::start().await;
    // A long linger, so that the events of one request share a batch.
    let batch = "batch: {maxEvents: 10, linger: PT0.3S}";
    let config = Config::new()
        .broker("default", None)
        .trigger(
            Trigger::new("unordered", &sub.url("/unordered"))
                .of_type("t")
                .spec(batch),
        )
        .trigger(
            Trigger::new("ordered", &sub.url("/ordered"))
                .of_type("t")
                .ordered()
                .spec(batch),
        );
    let router = Router::start(&config.render()).await;
    let url = router.broker_url("default");
    let send = |events: Vec<Event>| {
        let traced = [
            ("traceparent", PRODUCER),
            ("tracestate", "congo=t61rcWkgMzE"),
        ];
        let (client, url) = (&router.client, &url);
        async move {
            let r = client.send_batch_with(url, &events, &traced).await;
            assert_eq!(r.code(), 202, "{}", r.text());
        }
    };
    // Distinct sources: the ordered trigger's keys, so that its events may share a batch too.
    let events = |prefix: &str| -> Vec<Event> {
        (0..3)
            .map(|i| Event::new(format!("{prefix}-{i}"), "t").source(&format!("/k{i}")))
            .collect()
    };
    // Every event inherits the request's context.
    send(events("same")).await;
    // The ids in a batch, sorted: the ordered trigger's keys join it in any order.
    let ids = |r: &Request| -> Vec<String> {
        let mut ids: Vec<String> = match r.json() {
            serde_json::Value::Array(events) => events
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_owned())
                .collect(),
            other => panic!("not a batch: {other}"),
        };
        ids.sort();
        ids
    };
    for path in ["/unordered", "/ordered"] {
        let requests = sub.wait_for_path(path, 1, PATIENCE).await;
        assert_eq!(ids(&requests[0]), ["same-0", "same-1", "same-2"], "{path}");
        assert_eq!(requests[0].header("traceparent"), Some(PRODUCER), "{path}");
        assert_eq!(
            requests[0].header("tracestate"),
            Some("congo=t61rcWkgMzE"),
            "{path}"
        );
    }
    // One event names its own context: the batch's events do not share one.
    let mut mixed = events("mixed");
    mixed[1] = Event::new("mixed-1", "t")
        .source("/k1")
        .attr("traceparent", OWN);
    send(mixed).await;
    for path in ["/unordered", "/ordered"] {
        let requests = sub.wait_for_path(path, 2, PATIENCE).await;
        assert_eq!(
            ids(&requests[1]),
            ["mixed-0", "mixed-1", "mixed-2"],
            "{path}"
        );
        assert_eq!(requests[1].header("traceparent"), None, "{path}");
        assert_eq!(requests[1].header("tracestate"), None, "{path}");
    }
}
