//! Content modes end to end: whatever mode an event comes in (binary, structured, batched),
//! subscribers get it in binary mode with the right `ce-*` headers and body, unless the
//! trigger's `delivery.format: json` asks for structured mode.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use serde_json::json;
use triggerfish_tests::event::take_arrival;
use triggerfish_tests::{Config, Event, PATIENCE, Request, Router, Subscriber, Trigger};

fn by_id<'a>(requests: &'a [Arc<Request>], id: &str) -> &'a Request {
    requests
        .iter()
        .find(|r| r.id() == id)
        .unwrap_or_else(|| panic!("no delivery of {id}"))
}

/// Checks a binary-mode delivery of `event`: every attribute as a `ce-*` header (or
/// `content-type`), the data as the body, and nothing the router keeps for itself.
fn assert_binary_delivery(req: &Request, event: &Event) {
    let id = event.id();
    assert_eq!(req.method, http::Method::POST, "{id}");
    assert_eq!(req.path, "/sink", "{id}");
    let content_type = req.header("content-type");
    assert!(
        !content_type.is_some_and(|ct| ct.starts_with("application/cloudevents")),
        "{id}: binary mode expected, got content-type {content_type:?}"
    );
    for (name, value) in event.json().as_object().unwrap() {
        let expected = match value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        match name.as_str() {
            "data" | "data_base64" => {}
            "datacontenttype" => assert_eq!(content_type, Some(expected.as_str()), "{id}"),
            _ => assert_eq!(req.ce(name), Some(expected), "{id}: ce-{name}"),
        }
    }
    assert_eq!(req.body, event.data_body(), "{id}: body");
    assert_eq!(
        req.header("ce-knativebrokerttl"),
        None,
        "{id}: the TTL is never sent to subscribers"
    );
    // Knative's reply contract.
    assert_eq!(req.header("prefer"), Some("reply"), "{id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_content_mode_arrives_in_binary_mode() {
    let sub = Subscriber::start().await;
    let config = Config::new()
        .broker("default", None)
        .trigger(Trigger::new("all", &sub.url("/sink")));
    let router = Router::start(&config.render()).await;
    let url = router.broker_url("default");
    let client = &router.client;

    // Binary in: a JSON body, an extension, a subject that needs percent-encoding, and a TTL
    // the router must consume, not forward.
    let binary = Event::new("bin-1", "com.example.binary")
        .source("/producers/binary")
        .subject("photos/a b é.png")
        .attr("time", "2024-05-01T12:00:00Z")
        .attr("myext", "my value")
        .data(json!({"n": 1, "s": "x"}));
    let (mut headers, body) = binary.binary();
    headers.push(("ce-knativebrokerttl".to_owned(), "200".to_owned()));
    let r = client
        .request(http::Method::POST, &url, &headers, body)
        .await;
    assert_eq!(r.code(), 202, "{}", r.text());

    // Structured in: integer and boolean extensions, JSON data.
    let structured = Event::new("str-1", "com.example.structured")
        .attr("count", 42)
        .attr("flag", true)
        .attr("dataschema", "https://example.com/schema")
        .data(json!([1, 2, 3]));
    let r = client.send_structured(&url, &structured).await;
    assert_eq!(r.code(), 202, "{}", r.text());

    // Structured in, binary data (`data_base64`): the subscriber gets the raw bytes.
    let bytes: Vec<u8> = (0..=255).collect();
    let base64 =
        Event::new("str-b64", "com.example.bytes").data_bytes("application/octet-stream", &bytes);
    let r = client.send_structured(&url, &base64).await;
    assert_eq!(r.code(), 202, "{}", r.text());

    // Batched in: each event of the batch is delivered on its own.
    let batch = [
        Event::new("batch-1", "com.example.batched").data(json!({"i": 1})),
        Event::new("batch-2", "com.example.batched").subject("two"),
        Event::new("batch-3", "com.example.batched")
            .attr("datacontenttype", "text/plain")
            .attr("data", "plain text"),
    ];
    let r = client.send_batch(&url, &batch).await;
    assert_eq!(r.code(), 202, "{}", r.text());

    let requests = sub.wait_for(6, PATIENCE).await;
    assert_eq!(requests.len(), 6, "{:?}", sub.summary());
    for event in [&binary, &structured, &base64]
        .into_iter()
        .chain(batch.iter())
    {
        assert_binary_delivery(by_id(&requests, event.id()), event);
    }
    // Spot checks of the encoding itself.
    let bin = by_id(&requests, "bin-1");
    assert_eq!(
        bin.header("ce-subject"),
        Some("photos/a%20b%20%C3%A9.png"),
        "header values are percent-encoded"
    );
    assert_eq!(bin.header("content-type"), Some("application/json"));
    assert_eq!(bin.json(), json!({"n": 1, "s": "x"}));
    let s = by_id(&requests, "str-1");
    assert_eq!(s.header("ce-count"), Some("42"));
    assert_eq!(s.header("ce-flag"), Some("true"));
    assert_eq!(by_id(&requests, "str-b64").body.as_ref(), bytes.as_slice());
    assert_eq!(
        by_id(&requests, "batch-3").body.as_ref(),
        b"plain text".as_slice()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_format_json_sends_structured_mode() {
    let sub = Subscriber::start().await;
    let config = Config::new()
        .broker("default", None)
        .trigger(Trigger::new("structured", &sub.url("/structured")).delivery("format: json"))
        .trigger(Trigger::new("binary", &sub.url("/binary")).delivery("format: binary"));
    let router = Router::start(&config.render()).await;

    let event = Event::new("fmt-1", "com.example.format")
        .subject("s")
        .attr("count", 7)
        .attr("knativebrokerttl", 100)
        .data(json!({"k": "v"}));
    let r = router
        .client
        .send_structured(&router.broker_url("default"), &event)
        .await;
    assert_eq!(r.code(), 202, "{}", r.text());

    let structured = sub.wait_for_path("/structured", 1, PATIENCE).await;
    let req = &structured[0];
    assert_eq!(
        req.header("content-type"),
        Some("application/cloudevents+json")
    );
    assert_eq!(req.header("ce-id"), None, "no binary-mode headers");
    let mut expected = event.json();
    expected.as_object_mut().unwrap().remove("knativebrokerttl");
    let mut received = req.json();
    take_arrival(&mut received);
    assert_eq!(
        received, expected,
        "the whole event, minus the router's TTL, plus the broker's arrival time"
    );

    let binary = sub.wait_for_path("/binary", 1, PATIENCE).await;
    assert_binary_delivery_at(&binary[0], &event);
}

fn assert_binary_delivery_at(req: &Request, event: &Event) {
    assert_eq!(req.ce("id").as_deref(), Some(event.id()));
    assert_eq!(req.ce("subject").as_deref(), Some("s"));
    assert_eq!(req.ce("count").as_deref(), Some("7"));
    assert_eq!(req.header("ce-knativebrokerttl"), None);
    assert_eq!(req.json(), json!({"k": "v"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_type_details_and_h2c() {
    let sub = Subscriber::start().await;
    let config = Config::new()
        .broker("default", None)
        .trigger(Trigger::new("all", &sub.url("/sink")));
    let router = Router::start(&config.render()).await;
    let url = router.broker_url("default");

    // Media type parameters and case do not change the mode.
    let charset = Event::new("charset", "t").data(json!({"a": 1}));
    let r = router
        .client
        .post(
            &url,
            Some("Application/CloudEvents+JSON; charset=utf-8"),
            charset.structured(),
        )
        .await;
    assert_eq!(r.code(), 202, "{}", r.text());
    let r = router
        .client
        .post(
            &url,
            Some("application/cloudevents-batch+json; charset=utf-8"),
            triggerfish_tests::event::batch(&[Event::new("batch-charset", "t")]),
        )
        .await;
    assert_eq!(r.code(), 202, "{}", r.text());

    // Structured JSON data without a datacontenttype is JSON, and says so in binary mode.
    let mut untyped = Event::new("untyped", "t").json();
    untyped["data"] = json!({"b": 2});
    let r = router
        .client
        .post(
            &url,
            Some("application/cloudevents+json"),
            bytes::Bytes::from(untyped.to_string()),
        )
        .await;
    assert_eq!(r.code(), 202, "{}", r.text());

    // XML data in a JSON event: the subscriber gets the XML itself.
    let xml = Event::new("xml", "t")
        .attr("datacontenttype", "application/xml")
        .attr("data", "<order id=\"1\"/>");
    let r = router.client.send_structured(&url, &xml).await;
    assert_eq!(r.code(), 202, "{}", r.text());

    // HTTP/2 with prior knowledge.
    let h2 = triggerfish_tests::Client::http2();
    let r = h2.send_binary(&url, &Event::new("h2c", "t")).await;
    assert_eq!(r.code(), 202, "{}", r.text());

    // The broker's URL with a trailing slash.
    let r = router
        .client
        .send_binary(&format!("{url}/"), &Event::new("slash", "t"))
        .await;
    assert_eq!(r.code(), 202, "{}", r.text());

    let requests = sub.wait_for(6, PATIENCE).await;
    let charset = by_id(&requests, "charset");
    assert_eq!(charset.header("content-type"), Some("application/json"));
    assert_eq!(charset.json(), json!({"a": 1}));
    by_id(&requests, "batch-charset");
    let untyped = by_id(&requests, "untyped");
    assert_eq!(untyped.header("content-type"), Some("application/json"));
    assert_eq!(untyped.json(), json!({"b": 2}));
    let xml = by_id(&requests, "xml");
    assert_eq!(xml.header("content-type"), Some("application/xml"));
    assert_eq!(xml.body.as_ref(), b"<order id=\"1\"/>".as_slice());
    by_id(&requests, "h2c");
    by_id(&requests, "slash");
}
