//! RocketMQ → Triggerfish → HTTP subscriber, and RocketMQ → Triggerfish → `RocketMQSink` →
//! RocketMQ, in process; bad messages dead-lettered or skipped.

use std::collections::HashMap;
use std::time::Duration;

use crate::common::{Harness, Sink};
use crate::server::{RocketMq, produce, produce_in_order, servers};

const WAIT: Duration = Duration::from_secs(60);

/// [`source_yaml`] with the trigger delivering to `sink`.
fn to_sink(mq: &RocketMq, topic: &str, sink: &Sink, extra: &str) -> String {
    source_yaml(mq, topic, &format!("{{uri: \"{}\"}}", sink.uri()), extra)
}

fn source_yaml(mq: &RocketMq, topic: &str, sink: &str, extra: &str) -> String {
    format!(
        r#"
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default, namespace: shop}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: all, namespace: shop}}
spec:
  broker: default
  subscriber: {sink}
---
apiVersion: triggerfish.dev/v1alpha1
kind: RocketMQSource
metadata: {{name: orders, namespace: shop}}
spec:
  nameServer: "{ns}"
  topic: {topic}
  consumerGroup: tf-{topic}
  initialOffset: earliest
  sink: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}}
{extra}
"#,
        ns = mq.name_server,
    )
}

/// Plain messages get Alibaba EventBridge's RocketMQ event shape, CloudEvents in binary mode
/// pass through, and the tag expression keeps other tags out; through a Broker and a Trigger
/// to an HTTP subscriber. (A single tag, which the broker filters; several are the next
/// test's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_reach_an_http_subscriber_in_eventbridge_shape() {
    let mq = servers().await;
    let topic = "rt-plain";
    let started = chrono::Utc::now();
    let producer = mq.producer().await;
    for i in 0..4 {
        let tag = if i % 2 == 0 { "created" } else { "paid" };
        produce(
            &producer,
            topic,
            Some(tag),
            &[("region", "eu"), ("KEYS", &format!("order-{i}"))],
            format!(r#"{{"n":{i}}}"#).as_bytes(),
        )
        .await;
    }
    produce(&producer, topic, Some("ignored"), &[], b"filtered out").await;
    produce(
        &producer,
        topic,
        Some("created"),
        &[
            ("CE_specversion", "1.0"),
            ("CE_id", "ce-1"),
            ("CE_source", "/orders"),
            ("CE_type", "order.created"),
            ("CE_contenttype", "text/plain"),
            ("CE_note", "100% \"raw\""),
        ],
        b"as it is",
    )
    .await;
    let sink = Sink::start().await;
    let yaml = to_sink(
        mq,
        topic,
        &sink,
        "  tagExpression: \"created\"\n  region: cn-test\n  accountId: \"123\"\n  instanceId: inst",
    );
    let h = Harness::start(&yaml).await;
    let got = sink.wait(3, WAIT).await;
    let mut seen = Vec::new();
    for r in &got {
        // Through the broker: stamped when the source handed the message to it.
        let arrival = r.arrival();
        assert!(
            started <= arrival && arrival <= chrono::Utc::now(),
            "{arrival}"
        );
        if attr(r, "type").as_deref() == Some("order.created") {
            assert_eq!(attr(r, "id").as_deref(), Some("ce-1"));
            assert_eq!(attr(r, "source").as_deref(), Some("/orders"));
            assert_eq!(attr(r, "note").as_deref(), Some("100% \"raw\""));
            assert_eq!(r.headers.get("content-type").unwrap(), "text/plain");
            assert_eq!(&r.body[..], b"as it is");
            continue;
        }
        assert_eq!(attr(r, "type").unwrap(), "mq:Topic:SendMessage");
        assert_eq!(attr(r, "source").unwrap(), "acs:mq");
        assert_eq!(
            attr(r, "subject").unwrap(),
            format!("acs:mq:cn-test:123:inst%{topic}")
        );
        assert!(attr(r, "time").is_some());
        assert_eq!(
            r.headers.get("content-type").unwrap(),
            "application/json; charset=utf-8"
        );
        let data = r.json();
        assert_eq!(data["topic"], topic);
        let system = &data["systemProperties"];
        assert_eq!(attr(r, "id").unwrap(), system["UNIQ_KEY"].as_str().unwrap());
        assert!(
            system["QUEUE_OFFSET"]
                .as_str()
                .unwrap()
                .parse::<i64>()
                .is_ok()
        );
        assert_eq!(data["userProperties"]["region"], "eu");
        let body: serde_json::Value = serde_json::from_str(data["body"].as_str().unwrap()).unwrap();
        let n = body["n"].as_i64().unwrap();
        assert_eq!(system["KEYS"], format!("order-{n}"));
        assert_eq!(system["TAGS"], "created");
        seen.push(n);
    }
    seen.sort_unstable();
    assert_eq!(seen, [0, 2]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        sink.received().len(),
        3,
        "the `paid` and `ignored` tags were filtered out"
    );
    h.shutdown().await;
}

/// `created||paid` takes messages of either tag and no others (not untagged ones, nor `Paid`):
/// the broker is asked for `*` and the consumer filters, counting what it skips.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_expression_of_several_tags_is_filtered_by_the_consumer() {
    let mq = servers().await;
    let topic = "rt-tags";
    let producer = mq.producer().await;
    let tags = [
        Some("created"),
        Some("paid"),
        Some("ignored"),
        None,
        Some("Paid"),
        Some("paid"),
    ];
    for (i, tag) in tags.into_iter().enumerate() {
        produce(
            &producer,
            topic,
            tag,
            &[],
            format!(r#"{{"n":{i}}}"#).as_bytes(),
        )
        .await;
    }
    let sink = Sink::start().await;
    let yaml = to_sink(mq, topic, &sink, "  tagExpression: \"created||paid\"");
    let h = Harness::start(&yaml).await;
    sink.wait(3, WAIT).await;
    // Time for anything wrongly let through to arrive too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = sink.received();
    let mut seen: Vec<(i64, String)> = got
        .iter()
        .map(|r| {
            let data = r.json();
            let body: serde_json::Value =
                serde_json::from_str(data["body"].as_str().unwrap()).unwrap();
            let tag = data["systemProperties"]["TAGS"]
                .as_str()
                .unwrap()
                .to_owned();
            (body["n"].as_i64().unwrap(), tag)
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(
        seen,
        [
            (0, "created".to_owned()),
            (1, "paid".to_owned()),
            (5, "paid".to_owned())
        ]
    );
    let metrics = h.router.metrics.render();
    assert!(
        metrics.contains(
            "triggerfish_source_requests_total{source=\"shop/rocketmqsources/orders\",outcome=\"filtered\"} 3"
        ),
        "{metrics}"
    );
    h.shutdown().await;
}

/// The lag gauge counts each queue's messages not yet finished: all of them while the
/// subscriber refuses (the trigger retries), none once it accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_lag_counts_unfinished_messages_per_queue() {
    const N: usize = 8;
    let mq = servers().await;
    let topic = "rt-lag";
    let producer = mq.producer().await;
    for i in 0..N {
        produce(&producer, topic, None, &[], format!("{i}").as_bytes()).await;
    }
    let sink = Sink::start().await;
    sink.answer(503);
    let yaml = to_sink(mq, topic, &sink, "").replace(
        "  broker: default\n  subscriber:",
        "  broker: default\n  delivery: {retry: 1000, backoffPolicy: linear, backoffDelay: PT0.1S}\n  subscriber:",
    );
    let h = Harness::start(&yaml).await;
    let lag = || {
        let text = h.router.metrics.render();
        let series = format!(
            "triggerfish_source_consumer_lag_records{{source=\"shop/rocketmqsources/orders\",topic=\"{topic}\","
        );
        let values: Vec<i64> = text
            .lines()
            .filter(|l| l.starts_with(&series))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        (values.len(), values.iter().sum::<i64>())
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while lag().1 != N as i64 {
        assert!(tokio::time::Instant::now() < deadline, "lag {:?}", lag());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(sink.received().is_empty());
    let (queues, _) = lag();
    assert!(queues >= 1, "one series per queue read");

    sink.answer(202);
    sink.wait(N, WAIT).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while lag().1 != 0 {
        assert!(tokio::time::Instant::now() < deadline, "lag {:?}", lag());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(lag().0, queues, "the same queues, now at 0");
    h.shutdown().await;
}

/// Events produced through a `RocketMQSink` come back from RocketMQ in the sink's content
/// mode, with `partitionkey` as the sharding key, one key's messages in one queue and in
/// order (the triggers are ordered).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rocketmq_sink_produces_both_content_modes_in_key_order() {
    let mq = servers().await;
    let producer = mq.producer().await;
    let keys = ["k1", "k2", "k1", "k3", "k1", "k2"];
    for (i, key) in keys.iter().enumerate() {
        let id = format!("e{i}");
        // One queue, so the source reads them in order.
        produce_in_order(
            &producer,
            "rt-in",
            &[
                ("CE_specversion", "1.0"),
                ("CE_id", &id),
                ("CE_source", "/orders"),
                ("CE_type", "order.created"),
                ("CE_partitionkey", key),
                ("CE_note", "100% \"raw\""),
                ("CE_contenttype", "application/json"),
            ],
            format!(r#"{{"i":{i}}}"#).as_bytes(),
        )
        .await;
    }
    // The output topics exist before the readers subscribe (a consumer of a topic without a
    // route waits for the next route refresh, 30 s): one warm-up message each.
    for topic in ["rt-out-binary", "rt-out-structured"] {
        produce(&producer, topic, Some("warmup"), &[], b"warm-up").await;
    }
    let ordered = "annotations: {kafka.eventing.knative.dev/delivery.order: ordered}";
    let yaml = format!(
        r#"{source}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: structured, namespace: shop, {ordered}}}
spec:
  broker: default
  subscriber: {{ref: {{apiVersion: triggerfish.dev/v1alpha1, kind: RocketMQSink, name: structured}}}}
---
apiVersion: triggerfish.dev/v1alpha1
kind: RocketMQSink
metadata: {{name: binary, namespace: shop}}
spec:
  nameServer: "{ns}"
  topic: rt-out-binary
  tag: tf
  contentMode: binary
---
apiVersion: triggerfish.dev/v1alpha1
kind: RocketMQSink
metadata: {{name: structured, namespace: shop}}
spec:
  nameServer: "{ns}"
  topic: rt-out-structured
"#,
        source = source_yaml(
            mq,
            "rt-in",
            "{ref: {apiVersion: triggerfish.dev/v1alpha1, kind: RocketMQSink, name: binary}}",
            ""
        )
        .replace(
            "metadata: {name: all, namespace: shop}",
            &format!("metadata: {{name: all, namespace: shop, {ordered}}}")
        ),
        ns = mq.name_server,
    );
    let h = Harness::start(&yaml).await;
    let events = |messages: Vec<crate::server::Msg>| -> Vec<crate::server::Msg> {
        messages
            .into_iter()
            .filter(|m| m.tag.as_deref() != Some("warmup"))
            .collect()
    };
    let binary = events(mq.consumer("rt-out-binary").await.read(7, WAIT).await);
    let structured = events(mq.consumer("rt-out-structured").await.read(7, WAIT).await);
    assert_eq!((binary.len(), structured.len()), (6, 6));

    let mut queue_of: HashMap<String, i32> = HashMap::new();
    for m in &binary {
        let key = m.sharding_key.clone().unwrap();
        assert_eq!(m.properties["CE_partitionkey"], key);
        assert_eq!(m.properties["CE_specversion"], "1.0");
        assert_eq!(m.properties["CE_type"], "order.created");
        assert_eq!(m.properties["CE_note"], "100% \"raw\"");
        assert_eq!(m.properties["CE_contenttype"], "application/json");
        assert_eq!(m.tag.as_deref(), Some("tf"));
        let id = &m.properties["CE_id"];
        assert_eq!(
            String::from_utf8(m.body.clone()).unwrap(),
            format!(r#"{{"i":{}}}"#, &id[1..])
        );
        assert_eq!(*queue_of.entry(key).or_insert(m.queue_id), m.queue_id);
    }
    // One key's messages are in one queue, in order.
    let mut k1: Vec<(i64, String)> = binary
        .iter()
        .filter(|m| m.sharding_key.as_deref() == Some("k1"))
        .map(|m| (m.queue_offset, m.properties["CE_id"].clone()))
        .collect();
    k1.sort();
    let k1: Vec<&str> = k1.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(k1, ["e0", "e2", "e4"]);

    let mut queue_of: HashMap<String, i32> = HashMap::new();
    let mut by_key: HashMap<String, Vec<(i64, String)>> = HashMap::new();
    for m in &structured {
        assert_eq!(
            m.properties["CE_contenttype"],
            "application/cloudevents+json"
        );
        assert!(m.tag.is_none());
        let event: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
        let key = event["partitionkey"].as_str().unwrap().to_owned();
        assert_eq!(m.sharding_key.as_deref(), Some(key.as_str()));
        assert_eq!(event["type"], "order.created");
        assert_eq!(event["source"], "/orders");
        assert_eq!(event["note"], "100% \"raw\"");
        assert_eq!(event["datacontenttype"], "application/json");
        let id = event["id"].as_str().unwrap().to_owned();
        let i: i64 = id[1..].parse().unwrap();
        assert_eq!(event["data"]["i"], i);
        assert_eq!(
            *queue_of.entry(key.clone()).or_insert(m.queue_id),
            m.queue_id
        );
        by_key.entry(key).or_default().push((m.queue_offset, id));
    }
    for (key, expected) in [
        ("k1", &["e0", "e2", "e4"][..]),
        ("k2", &["e1", "e5"][..]),
        ("k3", &["e3"][..]),
    ] {
        let mut got = by_key.remove(key).unwrap();
        got.sort();
        let got: Vec<&str> = got.iter().map(|(_, id)| id.as_str()).collect();
        assert_eq!(got, expected, "key {key}");
    }
    h.shutdown().await;
}

/// A message that claims to be a CloudEvent but is not one, and a message over
/// `maxEventBytes`, go to the dead-letter sink with the reason; the good messages around them
/// are delivered; nothing is dropped silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_are_dead_lettered() {
    let mq = servers().await;
    let topic = "rt-bad";
    let producer = mq.producer().await;
    produce(&producer, topic, None, &[], b"good-1").await;
    // Binary mode without CE_source.
    produce(
        &producer,
        topic,
        None,
        &[("CE_specversion", "1.0"), ("CE_id", "x"), ("CE_type", "t")],
        b"missing source",
    )
    .await;
    // Structured mode that is not JSON.
    produce(
        &producer,
        topic,
        None,
        &[("CE_contenttype", "application/cloudevents+json")],
        b"{not json",
    )
    .await;
    // Too large.
    produce(&producer, topic, None, &[], &vec![b'x'; 10_000]).await;
    produce(&producer, topic, None, &[], b"good-2").await;

    let sink = Sink::start().await;
    let dls = Sink::start().await;
    let yaml = format!(
        r#"
apiVersion: triggerfish.dev/v1alpha1
kind: Server
spec:
  limits: {{maxEventBytes: 4096}}
---
{source}"#,
        source = to_sink(
            mq,
            topic,
            &sink,
            &format!(
                "  delivery: {{deadLetterSink: {{uri: \"{}\"}}, retry: 0}}\n  invalidRecords: deadLetter",
                dls.uri()
            ),
        ),
    );
    let h = Harness::start(&yaml).await;
    let good = sink.wait(2, WAIT).await;
    let mut bodies: Vec<String> = good
        .iter()
        .map(|r| r.json()["body"].as_str().unwrap().to_owned())
        .collect();
    bodies.sort_unstable();
    assert_eq!(bodies, ["good-1", "good-2"]);
    let mut dead: Vec<(String, String)> = dls
        .wait(3, WAIT)
        .await
        .iter()
        .map(|d| {
            assert_eq!(d.attr("type").unwrap(), "mq:Topic:SendMessage");
            assert_eq!(
                d.attr("knativeerrordest").unwrap(),
                "/apis/v1/namespaces/shop/rocketmqsources/orders"
            );
            let message = base64_decode(&d.attr("knativeerrordata").unwrap());
            assert!(message.contains(&format!("{topic}/")), "{message}");
            let data = d.json();
            let body = data["body"].as_str().unwrap_or_default().to_owned();
            (
                format!("{} {message}", d.attr("knativeerrorcode").unwrap()),
                body,
            )
        })
        .collect();
    dead.sort();
    // Sorted by code, then message: the two 400s, then the 413.
    let (missing, not_json): (Vec<_>, Vec<_>) = dead[..2]
        .iter()
        .partition(|(_, body)| body == "missing source");
    assert_eq!(missing.len(), 1, "{dead:#?}");
    assert!(
        missing[0].0.starts_with("400 ") && missing[0].0.contains("source"),
        "{}",
        missing[0].0
    );
    assert_eq!(not_json.len(), 1, "{dead:#?}");
    assert!(
        not_json[0].0.starts_with("400 ") && not_json[0].0.contains("not valid JSON"),
        "{}",
        not_json[0].0
    );
    assert_eq!(not_json[0].1, "{not json");
    assert!(dead[2].0.starts_with("413 "), "{}", dead[2].0);
    assert!(dead[2].1.is_empty(), "the oversized body is left out");
    let metrics = h.router.metrics.render();
    assert!(
        metrics.contains(r#"outcome="invalid_dead_lettered"} 2"#)
            && metrics.contains(r#"outcome="too_large_dead_lettered"} 1"#),
        "{metrics}"
    );
    h.shutdown().await;
}

/// With `invalidRecords: skip` bad messages are logged and counted, and the stream moves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_are_skipped_and_counted() {
    let mq = servers().await;
    let topic = "rt-skip";
    let producer = mq.producer().await;
    produce(
        &producer,
        topic,
        None,
        &[("CE_specversion", "0.1")],
        b"bad version",
    )
    .await;
    produce(&producer, topic, None, &[], b"good").await;
    let sink = Sink::start().await;
    let yaml = to_sink(mq, topic, &sink, "  invalidRecords: skip");
    let h = Harness::start(&yaml).await;
    let got = sink.wait(1, WAIT).await;
    assert_eq!(got[0].json()["body"], "good");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(sink.received().len(), 1);
    let metrics = h.router.metrics.render();
    assert!(
        metrics.contains(r#"outcome="invalid_skipped"} 1"#),
        "{metrics}"
    );
    h.shutdown().await;
}

fn base64_decode(text: &str) -> String {
    use base64::Engine as _;
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .unwrap(),
    )
    .unwrap()
}

/// An attribute as sent, percent-decoded (the HTTP binding percent-encodes `ce-` header values).
fn attr(r: &crate::common::Received, name: &str) -> Option<String> {
    r.attr(name).map(|v| {
        percent_encoding::percent_decode_str(&v)
            .decode_utf8()
            .unwrap()
            .into_owned()
    })
}
