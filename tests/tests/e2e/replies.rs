//! Replies: a 2xx response carrying a CloudEvent re-enters the broker, where other triggers
//! can match it; `knativebrokerttl` counts the hops, is never sent to a subscriber, and stops
//! reply loops.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::json;
use triggerfish_tests::{Config, Event, PATIENCE, Reply, Router, Subscriber, Trigger};

const TTL_EXHAUSTED: &[(&str, &str)] = &[("reason", "ttl_exhausted")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_reenters_the_broker_and_reaches_another_trigger() {
    let sub = Subscriber::start().await;
    sub.handle(|req| match req.path.as_str() {
        // Binary-mode reply.
        "/orders" => Reply::event_binary(
            &Event::new(format!("{}-processed", req.id()), "order.processed")
                .source("/processor")
                .attr("orderid", req.id())
                .data(json!({"ok": true})),
        ),
        // Structured-mode reply, which carries a TTL of its own that must not count.
        "/payments" => Reply::event_structured(
            &Event::new(format!("{}-settled", req.id()), "payment.settled")
                .attr("knativebrokerttl", 255)
                .data(json!({"settled": 1})),
        ),
        // Not a CloudEvent: a plain 200 with a body is no reply.
        "/audit" => Reply::ok().body("application/json", r#"{"logged": true}"#),
        // A 202 is never a reply, even with an event in it (Knative's data-plane contract),
        // nor a failure with a malformed one.
        "/accepted" => match req.id().as_str() {
            "acc-1" => {
                Reply::event_binary(&Event::new("acc-1-reply", "order.processed")).with_status(202)
            }
            _ => Reply::ok()
                .header("ce-specversion", "1.0")
                .body("application/json", "{}")
                .with_status(202),
        },
        _ => Reply::ok(),
    });
    let config = Config::new()
        .broker("default", None)
        .trigger(
            Trigger::new("orders", &sub.url("/orders"))
                .of_type("order.created"),
        )
        .trigger(
            Trigger::new("payments", &sub.url("/payments"))
                .of_type("payment.made"),
        )
        .trigger(
            Trigger::new("audit", &sub.url("/audit"))
                .of_type("audit"),
        )
        .trigger(
            Trigger::new("accepted", &sub.url("/accepted"))
                .of_type("accepted"),
        )
        .trigger(
            Trigger::new("processed", &sub.url("/processed"))
                .filter("filters:\n  - any:\n      - exact: {type: order.processed}\n      - exact: {type: payment.settled}"),
        );
    let router = Router::start(&config.render()).await;
    router.publish(&Event::new("o-1", "order.created")).await;
    router.publish(&Event::new("p-1", "payment.made")).await;
    router.publish(&Event::new("a-1", "audit")).await;
    router.publish(&Event::new("acc-1", "accepted")).await;
    router.publish(&Event::new("acc-2", "accepted")).await;

    let processed = sub.wait_for_path("/processed", 2, PATIENCE).await;
    let reply = processed
        .iter()
        .find(|r| r.id() == "o-1-processed")
        .unwrap();
    assert_eq!(reply.ce("type").as_deref(), Some("order.processed"));
    assert_eq!(reply.ce("source").as_deref(), Some("/processor"));
    assert_eq!(reply.ce("orderid").as_deref(), Some("o-1"));
    assert_eq!(reply.json(), json!({"ok": true}));
    let settled = processed.iter().find(|r| r.id() == "p-1-settled").unwrap();
    assert_eq!(settled.ce("type").as_deref(), Some("payment.settled"));
    assert_eq!(settled.json(), json!({"settled": 1}));

    // A reply is counted once it is queued, which races with its delivery: wait for both.
    for trigger in ["default/orders", "default/payments"] {
        router
            .wait_metric(
                "triggerfish_delivery_replies_total",
                &[("trigger", trigger)],
                1.0,
                PATIENCE,
            )
            .await;
    }
    router
        .wait_metric(
            "triggerfish_delivery_attempts_total",
            &[("trigger", "default/accepted"), ("outcome", "success")],
            2.0,
            PATIENCE,
        )
        .await;
    let m = router
        .wait_metric(
            "triggerfish_delivery_attempts_total",
            &[("trigger", "default/audit"), ("outcome", "success")],
            1.0,
            PATIENCE,
        )
        .await;
    assert_eq!(
        m.count(
            "triggerfish_delivery_replies_total",
            &[("trigger", "default/accepted")]
        ),
        0,
        "a 202 is no reply"
    );
    assert_eq!(m.count("triggerfish_delivery_failures_total", &[]), 0);
    assert_eq!(
        m.count(
            "triggerfish_delivery_replies_total",
            &[("trigger", "default/orders")]
        ),
        1
    );
    assert_eq!(
        m.count(
            "triggerfish_delivery_replies_total",
            &[("trigger", "default/payments")]
        ),
        1
    );
    assert_eq!(
        m.count(
            "triggerfish_delivery_replies_total",
            &[("trigger", "default/audit")]
        ),
        0,
        "a non-CloudEvent body is not a reply"
    );
    for r in sub.requests() {
        assert_eq!(
            r.header("ce-knativebrokerttl"),
            None,
            "{} {}: the TTL is never sent to subscribers",
            r.path,
            r.id()
        );
    }
    assert_eq!(sub.count(), 7, "{:?}", sub.summary());
    assert!(processed.iter().all(|r| r.id() != "acc-1-reply"));
}

/// A subscriber that answers every `loop` event with another `loop` event.
fn looping(sub: &Subscriber) -> Arc<AtomicUsize> {
    let n = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&n);
    sub.handle(move |_| {
        let i = counter.fetch_add(1, Ordering::SeqCst);
        Reply::event_binary(&Event::new(format!("loop-{}", i + 1), "loop"))
    });
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_loop_stops_when_the_ttl_is_used_up() {
    let sub = Subscriber::start().await;
    looping(&sub);
    let config = Config::new()
        .broker("default", None)
        .trigger(Trigger::new("loop", &sub.url("/loop")));
    let router = Router::start(&config.render()).await;
    router.publish(&Event::new("loop-0", "loop")).await;

    // knativebrokerttl starts at 255: the event and 254 replies are delivered, and the 255th
    // reply is dropped.
    router
        .wait_metric(
            "triggerfish_delivery_dropped_total",
            TTL_EXHAUSTED,
            1.0,
            PATIENCE,
        )
        .await;
    // Each reply is counted once queued, which races with its delivery.
    let m = router
        .wait_metric(
            "triggerfish_delivery_replies_total",
            &[("trigger", "default/loop")],
            254.0,
            PATIENCE,
        )
        .await;
    assert_eq!(
        m.count("triggerfish_delivery_dropped_total", TTL_EXHAUSTED),
        1
    );
    assert_eq!(sub.count(), 255, "deliveries before the loop stopped");
    assert_eq!(
        m.count(
            "triggerfish_delivery_replies_total",
            &[("trigger", "default/loop")]
        ),
        254
    );
    let ids: Vec<String> = sub.requests().iter().map(|r| r.id()).collect();
    let expected: Vec<String> = (0..255).map(|i| format!("loop-{i}")).collect();
    assert_eq!(ids, expected, "one hop after the other");
    assert!(
        sub.requests()
            .iter()
            .all(|r| r.header("ce-knativebrokerttl").is_none())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_ttl_is_honoured() {
    let sub = Subscriber::start().await;
    looping(&sub);
    let config = Config::new()
        .broker("default", None)
        .trigger(Trigger::new("loop", &sub.url("/loop")));
    let router = Router::start(&config.render()).await;
    // An event that already made 252 hops elsewhere has 3 left: three deliveries.
    router
        .publish(&Event::new("loop-0", "loop").attr("knativebrokerttl", 3))
        .await;
    router
        .wait_metric(
            "triggerfish_delivery_dropped_total",
            TTL_EXHAUSTED,
            1.0,
            PATIENCE,
        )
        .await;
    let ids: Vec<String> = sub.requests().iter().map(|r| r.id()).collect();
    assert_eq!(ids, ["loop-0", "loop-1", "loop-2"]);
    assert!(
        sub.requests()
            .iter()
            .all(|r| r.header("ce-knativebrokerttl").is_none())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batched_reply_reenters_as_separate_events() {
    let sub = Subscriber::start().await;
    sub.handle(|req| match req.path.as_str() {
        "/split" => Reply::ok().body(
            "application/cloudevents-batch+json",
            triggerfish_tests::event::batch(&[
                Event::new("part-1", "part"),
                Event::new("part-2", "part"),
                Event::new("part-3", "part"),
            ]),
        ),
        _ => Reply::ok(),
    });
    let config = Config::new()
        .broker("default", None)
        .trigger(Trigger::new("split", &sub.url("/split")).of_type("whole"))
        .trigger(Trigger::new("parts", &sub.url("/parts")).of_type("part"));
    let router = Router::start(&config.render()).await;
    router.publish(&Event::new("whole-1", "whole")).await;
    let parts = sub.wait_for_path("/parts", 3, PATIENCE).await;
    let mut ids: Vec<String> = parts.iter().map(|r| r.id()).collect();
    ids.sort();
    assert_eq!(ids, ["part-1", "part-2", "part-3"]);
    router
        .wait_metric(
            "triggerfish_delivery_replies_total",
            &[("trigger", "default/split")],
            3.0,
            PATIENCE,
        )
        .await;
}

/// Queues small enough that a reply loop fills them in a few hops.
const SMALL_QUEUES: &str = "shards: 1\nqueues: {shard: {events: 20, bytes: 1MiB}, trigger: {events: 50, bytes: 1MiB}}\nlimits: {maxBatchEvents: 10, maxRequestBytes: 64KiB, maxEventBytes: 16KiB}";

/// Broker `default` with [`SMALL_QUEUES`] and a dead-letter sink at `sub`'s `/dls`, and for
/// each `(type, spec)` a trigger of that name taking that event type to `sub`'s `/{type}`,
/// with the extra `spec` fields if any.
fn small_broker(sub: &Subscriber, triggers: &[(&str, Option<&str>)]) -> Config {
    let dls = format!("deadLetterSink:\n  uri: {}", sub.url("/dls"));
    let mut config = Config::new()
        .server(SMALL_QUEUES)
        .broker("default", Some(&dls));
    for &(kind, spec) in triggers {
        let mut trigger = Trigger::new(kind, &sub.url(&format!("/{kind}"))).of_type(kind);
        if let Some(spec) = spec {
            trigger = trigger.spec(spec);
        }
        config = config.trigger(trigger);
    }
    config
}

/// A subscriber that answers every `fan` event with two more: a reply loop that grows. The
/// trigger's queue fills, its shard driver waits for room in it, and the replies wait for
/// room in the shard, which only that driver makes. Replies that match their own backlogged
/// trigger are refused at once instead, and the events they answer go to the dead-letter
/// sink with the broker as `knativeerrordest`; the broker's other triggers keep receiving
/// events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_growing_reply_loop_is_dead_lettered_and_stalls_no_other_trigger() {
    let sub = Subscriber::start().await;
    sub.handle(|req| match req.path.as_str() {
        "/fan" => Reply::ok().body(
            "application/cloudevents-batch+json",
            triggerfish_tests::event::batch(&[
                Event::new(format!("{}.a", req.id()), "fan"),
                Event::new(format!("{}.b", req.id()), "fan"),
            ]),
        ),
        _ => Reply::ok(),
    });
    let config = small_broker(&sub, &[("fan", Some("maxInFlight: 4")), ("other", None)]);
    let router = Router::start(&config.render()).await;
    router.publish(&Event::new("fan", "fan")).await;
    router
        .wait_metric(
            "triggerfish_delivery_dead_lettered_total",
            &[("trigger", "default/fan")],
            1.0,
            PATIENCE,
        )
        .await;

    for i in 0..50 {
        router
            .publish_patiently(&[Event::new(format!("other-{i}"), "other")])
            .await;
    }
    let others = sub.wait_for_path("/other", 50, PATIENCE).await;
    assert_eq!(others.len(), 50);

    let dead = sub.wait_for_path("/dls", 1, PATIENCE).await;
    assert_eq!(dead[0].ce("type").as_deref(), Some("fan"));
    dead[0].assert_dead_letter(
        "broker:default/default",
        "429",
        "match trigger default/fan, which published them and whose queue is full",
    );
    let m = router.metrics().await;
    assert!(
        m.get(
            "triggerfish_delivery_replies_refused_total",
            &[("trigger", "default/fan")]
        ) >= 1.0
    );
    assert_eq!(
        m.get(
            "triggerfish_delivery_replies_refused_total",
            &[("trigger", "default/other")]
        ),
        0.0
    );
}

/// Two triggers whose subscribers answer each other's events (`ping` with a `pong`, `pong`
/// with a `ping`) keep their events moving with both queues near full, until the TTL ends
/// each chain. Nothing is refused: replies wait only for full queues, and with room in both
/// neither trigger waits on the other (waiting while the other was merely backlogged, until
/// half empty, deadlocked the two).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_triggers_replying_to_each_other_keep_flowing_under_load() {
    let sub = Subscriber::start().await;
    sub.handle(|req| {
        let answer = if req.ce("type").as_deref() == Some("ping") {
            "pong"
        } else {
            "ping"
        };
        Reply::event_binary(&Event::new(format!("{}.{answer}", req.id()), answer))
    });
    let in_flight = Some("maxInFlight: 8");
    let config = small_broker(&sub, &[("ping", in_flight), ("pong", in_flight)]);
    let router = Router::start(&config.render()).await;
    // 120 chains of 20 deliveries each: the producer's TTL of 20 ends each one.
    let events: Vec<Event> = (0..120)
        .map(|i| Event::new(format!("c{i}"), "ping").attr("knativebrokerttl", 20))
        .collect();
    for chunk in events.chunks(10) {
        router.publish_patiently(chunk).await;
    }
    let m = router
        .wait_metric(
            "triggerfish_delivery_dropped_total",
            TTL_EXHAUSTED,
            120.0,
            PATIENCE,
        )
        .await;
    for trigger in ["default/ping", "default/pong"] {
        let labels = [("trigger", trigger)];
        assert_eq!(
            m.get("triggerfish_delivery_replies_refused_total", &labels),
            0.0
        );
        assert_eq!(
            m.get("triggerfish_delivery_dead_lettered_total", &labels),
            0.0
        );
    }
    assert_eq!(sub.count(), 120 * 20, "{:?}", sub.summary());
}

/// A 2xx response that says it is a CloudEvent (a `ce-specversion` header, or a CloudEvents
/// content type) and is not one fails the attempt as Knative's broker fails it: 502, retried
/// like any 5xx, then dead-lettered with the reason as `knativeerrordata`. None of it enters
/// the broker, not even the valid first event of a batched reply. (A plain body that claims
/// nothing is no reply: the first test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_reply_fails_the_delivery_and_is_dead_lettered() {
    let sub = Subscriber::start().await;
    let valid = Event::new("r-1", "reply");
    let reply_batch = format!(
        "[{},{{\"id\":\"r-2\"}}]",
        String::from_utf8_lossy(&valid.structured())
    );
    sub.handle(move |req| match req.path.as_str() {
        "/binary" => Reply::ok()
            .header("ce-specversion", "1.0")
            .body("application/json", "{}"),
        "/structured" => {
            Reply::ok().body("application/cloudevents+json", r#"{"specversion":"1.0"}"#)
        }
        "/batched" | "/batch-trigger" => {
            Reply::ok().body("application/cloudevents-batch+json", reply_batch.clone())
        }
        _ => Reply::ok(),
    });
    let delivery = format!(
        "retry: 1\nbackoffDelay: PT0.01S\ndeadLetterSink:\n  uri: {}",
        sub.url("/dls")
    );
    let mut config = Config::new()
        .broker("default", None)
        .trigger(Trigger::new("replies", &sub.url("/replies")).of_type("reply"));
    for name in ["binary", "structured", "batched", "batch-trigger"] {
        let mut trigger = Trigger::new(name, &sub.url(&format!("/{name}")))
            .of_type(name)
            .delivery(&delivery);
        if name == "batch-trigger" {
            trigger = trigger.spec("batch: {maxEvents: 10}");
        }
        config = config.trigger(trigger);
    }
    let router = Router::start(&config.render()).await;
    for name in ["binary", "structured", "batched", "batch-trigger"] {
        router.publish(&Event::new(format!("{name}-1"), name)).await;
    }
    let dead = sub.wait_for_path("/dls", 4, PATIENCE).await;
    for name in ["binary", "structured", "batched", "batch-trigger"] {
        let path = format!("/{name}");
        let letter = dead
            .iter()
            .find(|r| r.ce("type").as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no dead letter for {name}"));
        assert_eq!(letter.id(), format!("{name}-1"));
        letter.assert_dead_letter(&sub.url(&path), "502", "invalid reply");
        assert_eq!(sub.requests_to(&path).len(), 2, "{name}: retry: 1");
        let trigger = format!("default/{name}");
        let m = router.metrics().await;
        let label = [("trigger", trigger.as_str()), ("outcome", "retryable")];
        assert_eq!(m.count("triggerfish_delivery_attempts_total", &label), 2);
        let label = [("trigger", trigger.as_str()), ("cause", "http_502")];
        assert_eq!(m.count("triggerfish_delivery_failures_total", &label), 2);
        let label = [("trigger", trigger.as_str())];
        assert_eq!(m.count("triggerfish_delivery_replies_total", &label), 0);
    }
    assert!(
        sub.requests_to("/replies").is_empty(),
        "{:?}",
        sub.summary()
    );
}
