//! `knativearrivaltime`: the broker stamps every event it accepts with the moment it did,
//! replacing any value the producer sent, as Knative's broker ingress does. Subscribers see it
//! in every content mode, and filters can match it; a reply is stamped again when it re-enters
//! the broker.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;
use triggerfish_tests::event::take_arrival;
use triggerfish_tests::{Config, Event, PATIENCE, Reply, Request, Router, Subscriber, Trigger};

/// The delivery of the event `id` among `requests`.
fn delivery<'a>(requests: &'a [Arc<Request>], id: &str) -> &'a Request {
    requests
        .iter()
        .find(|r| r.id() == id)
        .unwrap_or_else(|| panic!("no delivery of {id}"))
}

/// Reads an arrival time and checks that it lies in `[after, before]`.
fn arrival(text: &str, after: DateTime<Utc>, before: DateTime<Utc>) -> DateTime<Utc> {
    // RFC 3339 in UTC with all nine digits of the fraction.
    assert_eq!(text.len(), 30, "{text}");
    assert!(text.ends_with('Z'), "{text}");
    let at = DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .with_timezone(&Utc);
    assert!(
        after <= at && at <= before,
        "{text} is not within {after} ..= {before}"
    );
    at
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_accepted_event_carries_the_time_the_broker_took_it() {
    let sub = Subscriber::start().await;
    sub.handle(|req| match req.path.as_str() {
        "/binary" if req.ce("type").as_deref() == Some("order.created") => Reply::event_binary(
            &Event::new(format!("{}-done", req.id()), "order.done")
                // The subscriber's own value, which the broker replaces.
                .attr("knativearrivaltime", "2001-01-01T00:00:00Z"),
        ),
        _ => Reply::ok(),
    });
    let config = Config::new()
        .broker("default", None)
        .trigger(Trigger::new("binary", &sub.url("/binary")))
        .trigger(Trigger::new("structured", &sub.url("/structured")).delivery("format: json"))
        // Filters see the stamp too, as in Knative, where the broker's ingress sets it first.
        .trigger(Trigger::new("stamped", &sub.url("/stamped")).filter(
            "filters:\n  - cesql: \"EXISTS knativearrivaltime AND knativearrivaltime != '2001-01-01T00:00:00Z'\"",
        ));
    let router = Router::start(&config.render()).await;
    let url = router.broker_url("default");
    let client = &router.client;

    let before = Utc::now();
    // Binary in, carrying a value of its own from an earlier broker.
    let (mut headers, body) = Event::new("bin", "t").data(json!({"n": 1})).binary();
    headers.push((
        "ce-knativearrivaltime".to_owned(),
        "2001-01-01T00:00:00Z".to_owned(),
    ));
    let r = client
        .request(http::Method::POST, &url, &headers, body)
        .await;
    assert_eq!(r.code(), 202, "{}", r.text());
    // Structured in: copied verbatim to the structured subscriber, with the stamp added.
    let structured = Event::new("str", "t").attr("count", 3).data(json!([1, 2]));
    let r = client.send_structured(&url, &structured).await;
    assert_eq!(r.code(), 202, "{}", r.text());
    // Batched in: one request, one stamp for all its events.
    let batch = [Event::new("b-1", "t"), Event::new("b-2", "t")];
    let r = client.send_batch(&url, &batch).await;
    assert_eq!(r.code(), 202, "{}", r.text());
    // And one whose reply re-enters the broker.
    let r = client
        .send_structured(&url, &Event::new("o-1", "order.created"))
        .await;
    assert_eq!(r.code(), 202, "{}", r.text());

    // Five events and a reply, to each trigger.
    let binary = sub.wait_for_path("/binary", 6, PATIENCE).await;
    let json = sub.wait_for_path("/structured", 6, PATIENCE).await;
    sub.wait_for_path("/stamped", 6, PATIENCE).await;
    let after = Utc::now();
    for id in ["bin", "str", "b-1", "b-2", "o-1", "o-1-done"] {
        let header = delivery(&binary, id).ce("knativearrivaltime").unwrap();
        let member = delivery(&json, id).json()["knativearrivaltime"].clone();
        assert_eq!(
            member.as_str(),
            Some(header.as_str()),
            "{id}: both triggers see the one stamp"
        );
        arrival(&header, before, after);
    }
    let stamp = |id: &str| delivery(&binary, id).ce("knativearrivaltime").unwrap();
    assert_eq!(stamp("b-1"), stamp("b-2"), "one request, one arrival");
    assert!(
        stamp("o-1-done") >= stamp("o-1"),
        "the reply arrived after the event it answers"
    );

    // Apart from the stamp, the structured delivery is the event as it was sent.
    let mut received = delivery(&json, "str").json();
    take_arrival(&mut received);
    assert_eq!(received, structured.json());
}
