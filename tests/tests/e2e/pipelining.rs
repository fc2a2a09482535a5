//! `delivery.pipelining`: HTTP/1.1 pipelined delivery keeps Knative's semantics at the
//! subscriber. Every event arrives once, error responses dead-letter with their status and
//! body, replies re-enter the broker, and an attempt that times out is retried without holding
//! up the events pipelined behind it.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use base64::Engine as _;
use serde_json::json;
use triggerfish_tests::{Config, Event, PATIENCE, Reply, Router, Subscriber, Trigger};

/// Publishes `n` events of type `t` with ids `e-0`… in batches of 50.
async fn publish(router: &Router, n: usize) {
    let events: Vec<Event> = (0..n).map(|i| Event::new(format!("e-{i}"), "t")).collect();
    router.publish_batches(&events).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_delivery_keeps_statuses_bodies_and_replies_apart() {
    let sub = Subscriber::start().await;
    let dls = Subscriber::start().await;
    sub.handle(|req| {
        let id = req.id();
        match req.path.as_str() {
            "/replies" => Reply::ok(),
            _ if id.ends_with('7') => Reply::status(500).body("text/plain", format!("no {id}")),
            _ if id.ends_with('3') => Reply::event_binary(
                &Event::new(format!("{id}-reply"), "reply").data(json!({"of": id})),
            ),
            // A body that is no event, which must not be taken for the next response.
            _ => Reply::ok().body("application/json", format!(r#"{{"ok":"{id}"}}"#)),
        }
    });
    let config = Config::new()
        .broker("default", None)
        .trigger(
            Trigger::new("t", &sub.url("/t"))
                .of_type("t")
                .delivery(&format!(
                    "pipelining: 8\ndeadLetterSink:\n  uri: {}",
                    dls.url("/dls")
                ))
                .spec("maxInFlight: 32"),
        )
        .trigger(Trigger::new("replies", &sub.url("/replies")).of_type("reply"));
    let router = Router::start(&config.render()).await;
    let n = 400;
    publish(&router, n).await;

    let dead = dls.wait_for(n / 10, PATIENCE).await;
    let replies = sub.wait_for_path("/replies", n / 10, PATIENCE).await;
    let delivered = sub.wait_for_path("/t", n, PATIENCE).await;
    let counts = sub.id_counts();
    for i in 0..n {
        assert_eq!(counts.get(&format!("e-{i}")), Some(&1), "e-{i} once");
    }
    assert_eq!(delivered.len(), n);
    for d in &dead {
        let id = d.id();
        assert!(id.ends_with('7'), "only the 500s are dead letters: {id}");
        assert_eq!(d.ce("knativeerrorcode").as_deref(), Some("500"));
        let data = base64::engine::general_purpose::STANDARD.encode(format!("no {id}"));
        assert_eq!(
            d.ce("knativeerrordata"),
            Some(data),
            "{id}'s own error body"
        );
    }
    for r in &replies {
        let of = r.json()["of"].as_str().unwrap().to_owned();
        assert_eq!(
            r.id(),
            format!("{of}-reply"),
            "each reply is its own event's"
        );
        assert!(of.ends_with('3'));
    }
    let success = [("trigger", "default/t"), ("outcome", "success")];
    let m = router
        .wait_metric(
            "triggerfish_delivery_attempts_total",
            &success,
            360.0,
            PATIENCE,
        )
        .await;
    assert_eq!(
        m.count("triggerfish_delivery_attempts_total", &success),
        360
    );
    assert_eq!(m.count("triggerfish_delivery_dropped_total", &[]), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_attempt_is_retried_and_does_not_hold_up_the_others() {
    let sub = Subscriber::start().await;
    // The first request is answered only after the attempt's timeout; its retry at once.
    sub.script([Reply::ok().delay(Duration::from_secs(3))]);
    let config = Config::new().broker("default", None).trigger(
        Trigger::new("t", &sub.url("/t"))
            .delivery("pipelining: 16\ntimeout: PT0.5S\nretry: 3\nbackoffDelay: PT0.05S")
            .spec("maxInFlight: 16"),
    );
    let router = Router::start(&config.render()).await;
    let n = 100;
    publish(&router, n).await;

    let m = router
        .wait_metric(
            "triggerfish_delivery_attempts_total",
            &[("trigger", "default/t"), ("outcome", "success")],
            n as f64,
            PATIENCE,
        )
        .await;
    let counts = sub.id_counts();
    assert_eq!(counts.len(), n, "every event reached the subscriber");
    assert_eq!(m.count("triggerfish_delivery_dropped_total", &[]), 0);
    assert!(
        m.count(
            "triggerfish_delivery_retries_total",
            &[("trigger", "default/t")]
        ) >= 1,
        "the held attempt timed out and was retried"
    );
    let first = &sub.requests()[0];
    let retried = sub
        .requests()
        .into_iter()
        .filter(|r| r.id() == first.id())
        .count();
    assert!(
        retried >= 2,
        "{} was sent again after its timeout",
        first.id()
    );
    // The events behind the held one did not wait for its 3 s answer.
    let last = sub.requests().iter().map(|r| r.at).max().unwrap();
    assert!(
        last.duration_since(first.at) < Duration::from_millis(2500),
        "all {n} events arrived within {:?} of the held one",
        last.duration_since(first.at)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_subscriber_dead_letters_with_pipelining() {
    let dls = Subscriber::start().await;
    let closed = triggerfish_tests::router::free_port();
    let config = Config::new().broker("default", None).trigger(
        Trigger::new("t", &format!("http://{closed}/gone")).delivery(&format!(
            "pipelining: 4\nretry: 1\nbackoffDelay: PT0.01S\ndeadLetterSink:\n  uri: {}",
            dls.url("/dls")
        )),
    );
    let router = Router::start(&config.render()).await;
    publish(&router, 10).await;
    let dead = dls.wait_for(10, PATIENCE).await;
    assert!(
        dead.iter()
            .all(|d| d.ce("knativeerrordest") == Some(format!("http://{closed}/gone")))
    );
    // Counted once the dead letter's delivery ends, which races with its arrival.
    router
        .wait_metric(
            "triggerfish_delivery_dead_lettered_total",
            &[("trigger", "default/t")],
            10.0,
            PATIENCE,
        )
        .await;
}

/// Pipelined HTTPS: the subscriber's certificate is checked against the destination's
/// `CACerts` (and the system's roots), as on the pooled client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_subscribers_are_verified_with_pipelining() {
    let ca = triggerfish_tests::tls::Ca::new("pipelined-subscriber-ca");
    let sub = Subscriber::start_tls(&ca.server()).await;
    let dls = Subscriber::start().await;
    let trusted = Trigger::new("trusted", &sub.url("/trusted"))
        .of_type("t")
        .subscriber(&format!(
            "uri: {}\nCACerts: {}",
            sub.url("/trusted"),
            serde_json::to_string(&ca.pem()).unwrap()
        ))
        .delivery("pipelining: 8");
    let untrusted = Trigger::new("untrusted", &sub.url("/untrusted"))
        .of_type("u")
        .delivery(&format!(
            "pipelining: 8\nretry: 1\nbackoffDelay: PT0.01S\ndeadLetterSink:\n  uri: {}",
            dls.url("/dls")
        ));
    let config = Config::new()
        .broker("default", None)
        .trigger(trusted)
        .trigger(untrusted);
    let router = Router::start(&config.render()).await;
    publish(&router, 50).await;
    router.publish(&Event::new("u-1", "u")).await;

    let delivered = sub.wait_for_path("/trusted", 50, PATIENCE).await;
    assert_eq!(delivered.len(), 50);
    let dead = dls.wait_for(1, PATIENCE).await;
    assert_eq!(dead[0].id(), "u-1");
    assert_eq!(
        dead[0].ce("knativeerrordest").as_deref(),
        Some(sub.url("/untrusted").as_str())
    );
    assert!(
        sub.requests_to("/untrusted").is_empty(),
        "no request without a verified handshake"
    );
}
