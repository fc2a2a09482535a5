//! Kafka → Triggerfish → HTTP subscriber, and Kafka → Triggerfish → `KafkaSink` → Kafka, in
//! process; bad records dead-lettered or skipped.

use std::time::Duration;

use crate::common::{Harness, Sink};
use crate::tansu::{Tansu, consume, produce};

const WAIT: Duration = Duration::from_secs(30);

fn source_yaml(tansu: &Tansu, topic: &str, sink: &str, extra: &str) -> String {
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
apiVersion: sources.knative.dev/v1beta1
kind: KafkaSource
metadata: {{name: orders, namespace: shop}}
spec:
  bootstrapServers: ["{addr}"]
  topics: ["{topic}"]
  consumerGroup: tf-{topic}
  initialOffset: earliest
  clientConfig: {{session.timeout.ms: "6000"}}
  sink: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}}
{extra}
"#,
        addr = tansu.addr,
    )
}

/// Plain records become `dev.knative.kafka.event` events with Knative's attributes, through a
/// Broker and a Trigger to an HTTP subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_reach_an_http_subscriber_as_knative_events() {
    let tansu = Tansu::start().await;
    tansu.create_topic("orders", 2).await;
    let sink = Sink::start().await;
    let yaml = source_yaml(
        &tansu,
        "orders",
        &format!("{{uri: \"{}\"}}", sink.uri()),
        "",
    );
    let h = Harness::start(&yaml).await;
    let producer = tansu.producer();
    let started = chrono::Utc::now();
    for i in 0..6 {
        produce(
            &producer,
            "orders",
            Some(i % 2),
            Some(format!("customer-{i}").as_bytes()),
            &[("content-type", b"application/json"), ("trace", b"t1")],
            format!(r#"{{"n":{i}}}"#).as_bytes(),
        )
        .await;
    }
    let got = sink.wait(6, WAIT).await;
    let mut seen = Vec::new();
    for r in &got {
        assert_eq!(r.attr("type").unwrap(), "dev.knative.kafka.event");
        assert_eq!(
            r.attr("source").unwrap(),
            "/apis/v1/namespaces/shop/kafkasources/orders#orders"
        );
        let subject = r.attr("subject").unwrap();
        let (partition, offset) = subject
            .strip_prefix("partition:")
            .unwrap()
            .split_once('#')
            .unwrap();
        assert_eq!(
            r.attr("id").unwrap(),
            format!("partition:{partition}/offset:{offset}")
        );
        assert_eq!(r.attr("kafkaheadertrace").as_deref(), Some("t1"));
        assert_eq!(r.headers.get("content-type").unwrap(), "application/json");
        let n = r.json()["n"].as_i64().unwrap();
        assert_eq!(r.attr("key").unwrap(), format!("customer-{n}"));
        assert_eq!(r.attr("partitionkey").unwrap(), format!("customer-{n}"));
        assert_eq!(partition, (n % 2).to_string());
        // Through the broker: stamped when the source handed the record to it.
        let arrival = r.arrival();
        assert!(
            started <= arrival && arrival <= chrono::Utc::now(),
            "{arrival}"
        );
        seen.push(n);
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..6).collect::<Vec<_>>());
    h.shutdown().await;
}

/// Events produced through a `KafkaSink` come back from Kafka in the sink's content mode, keyed
/// by `partitionkey`, and a `KafkaSource` reading them passes them through unchanged.
/// A W3C trace context, as a traced producer sends it.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_sink_produces_both_content_modes() {
    let tansu = Tansu::start().await;
    tansu.create_topic("in", 1).await;
    tansu.create_topic("out-binary", 3).await;
    tansu.create_topic("out-structured", 3).await;
    let yaml = format!(
        r#"{source}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: structured, namespace: shop, annotations: {{kafka.eventing.knative.dev/delivery.order: ordered}}}}
spec:
  broker: default
  subscriber: {{ref: {{apiVersion: eventing.knative.dev/v1alpha1, kind: KafkaSink, name: structured}}}}
---
apiVersion: eventing.knative.dev/v1alpha1
kind: KafkaSink
metadata: {{name: binary, namespace: shop}}
spec:
  topic: out-binary
  bootstrapServers: ["{addr}"]
  contentMode: binary
---
apiVersion: eventing.knative.dev/v1alpha1
kind: KafkaSink
metadata: {{name: structured, namespace: shop}}
spec:
  topic: out-structured
  bootstrapServers: ["{addr}"]
"#,
        source = source_yaml(
            &tansu,
            "in",
            "{ref: {apiVersion: eventing.knative.dev/v1alpha1, kind: KafkaSink, name: binary}}",
            ""
        )
        .replace(
            "metadata: {name: all, namespace: shop}",
            "metadata: {name: all, namespace: shop, annotations: {kafka.eventing.knative.dev/delivery.order: ordered}}"
        ),
        addr = tansu.addr,
    );
    let h = Harness::start(&yaml).await;
    let producer = tansu.producer();
    for (i, key) in ["k1", "k2", "k1", "k3", "k1"].iter().enumerate() {
        let id = format!("e{i}");
        produce(
            &producer,
            "in",
            None,
            None,
            &[
                ("ce_specversion", b"1.0"),
                ("ce_id", id.as_bytes()),
                ("ce_source", b"/orders"),
                ("ce_type", b"order.created"),
                ("ce_partitionkey", key.as_bytes()),
                ("ce_note", b"100% \"raw\""),
                ("content-type", b"application/json"),
                // OpenTelemetry's Kafka instrumentation: carried to both sinks' records.
                ("traceparent", TRACEPARENT.as_bytes()),
            ],
            format!(r#"{{"i":{i}}}"#).as_bytes(),
        )
        .await;
    }

    let binary = consume(&tansu.consumer("out-binary"), 5, WAIT).await;
    let structured = consume(&tansu.consumer("out-structured"), 5, WAIT).await;
    let mut partition_of_k1 = None;
    for r in &binary {
        let key = String::from_utf8(r.key.clone().unwrap()).unwrap();
        assert_eq!(r.header("ce_partitionkey").unwrap(), key);
        assert_eq!(r.header("ce_specversion").as_deref(), Some("1.0"));
        assert_eq!(r.header("ce_type").as_deref(), Some("order.created"));
        assert_eq!(r.header("ce_note").as_deref(), Some("100% \"raw\""));
        assert_eq!(r.header("ce_traceparent").as_deref(), Some(TRACEPARENT));
        assert_eq!(r.header("traceparent").as_deref(), Some(TRACEPARENT));
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/json")
        );
        let id = r.header("ce_id").unwrap();
        assert_eq!(
            String::from_utf8(r.value.clone()).unwrap(),
            format!(r#"{{"i":{}}}"#, &id[1..])
        );
        if key == "k1" {
            assert_eq!(*partition_of_k1.get_or_insert(r.partition), r.partition);
        }
    }
    // One key's records are in one partition, in order (the triggers are ordered).
    let k1: Vec<String> = binary
        .iter()
        .filter(|r| r.key.as_deref() == Some(b"k1"))
        .map(|r| r.header("ce_id").unwrap())
        .collect();
    assert_eq!(k1, ["e0", "e2", "e4"]);
    for r in &structured {
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/cloudevents+json")
        );
        let event: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
        assert_eq!(
            r.key.as_deref(),
            Some(event["partitionkey"].as_str().unwrap().as_bytes())
        );
        assert_eq!(event["type"], "order.created");
        assert_eq!(event["source"], "/orders");
        assert_eq!(event["note"], "100% \"raw\"");
        assert_eq!(event["traceparent"], TRACEPARENT);
        assert_eq!(r.header("traceparent").as_deref(), Some(TRACEPARENT));
        assert_eq!(event["datacontenttype"], "application/json");
        let i: i64 = event["id"].as_str().unwrap()[1..].parse().unwrap();
        assert_eq!(event["data"]["i"], i);
    }
    h.shutdown().await;
}

/// A record that claims to be a CloudEvent but is not one, and a record over
/// `maxEventBytes`, go to the dead-letter sink with the reason; the good records around them
/// are delivered; nothing is dropped silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_are_dead_lettered() {
    let tansu = Tansu::start().await;
    tansu.create_topic("bad", 1).await;
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
        source = source_yaml(
            &tansu,
            "bad",
            &format!("{{uri: \"{}\"}}", sink.uri()),
            &format!(
                "  delivery: {{deadLetterSink: {{uri: \"{}\"}}, retry: 0}}\n  invalidRecords: deadLetter",
                dls.uri()
            ),
        ),
    );
    let h = Harness::start(&yaml).await;
    let producer = tansu.producer();
    produce(&producer, "bad", None, None, &[], b"good-1").await;
    // Binary mode without ce_source.
    produce(
        &producer,
        "bad",
        None,
        Some(b"k"),
        &[
            ("ce_specversion", b"1.0"),
            ("ce_id", b"x"),
            ("ce_type", b"t"),
        ],
        b"missing source",
    )
    .await;
    // Structured mode that is not JSON.
    produce(
        &producer,
        "bad",
        None,
        None,
        &[("content-type", b"application/cloudevents+json")],
        b"{not json",
    )
    .await;
    // Too large.
    produce(&producer, "bad", None, None, &[], &vec![b'x'; 10_000]).await;
    produce(&producer, "bad", None, None, &[], b"good-2").await;

    let good = sink.wait(2, WAIT).await;
    let mut bodies: Vec<&[u8]> = good.iter().map(|r| &r.body[..]).collect();
    bodies.sort_unstable();
    assert_eq!(bodies, [&b"good-1"[..], b"good-2"]);
    // Dead letters by offset: 1 (no source), 2 (not JSON), 3 (too large).
    let mut dead: Vec<(String, String, Vec<u8>)> = dls
        .wait(3, WAIT)
        .await
        .iter()
        .map(|d| {
            let (attr, data) = dead_letter(d);
            assert_eq!(attr("type").unwrap(), "dev.knative.kafka.event");
            assert_eq!(
                attr("knativeerrordest").unwrap(),
                "/apis/v1/namespaces/shop/kafkasources/orders"
            );
            let message = base64_decode(&attr("knativeerrordata").unwrap());
            assert!(message.contains("bad/0@"), "{message}");
            (
                attr("id").unwrap(),
                format!("{} {message}", attr("knativeerrorcode").unwrap()),
                data,
            )
        })
        .collect();
    dead.sort();
    assert_eq!(dead[0].0, "partition:0/offset:1");
    assert!(
        dead[0].1.starts_with("400 ") && dead[0].1.contains("source"),
        "{}",
        dead[0].1
    );
    assert_eq!(dead[0].2, b"missing source");
    assert_eq!(dead[1].0, "partition:0/offset:2");
    assert!(
        dead[1].1.starts_with("400 ") && dead[1].1.contains("structured"),
        "{}",
        dead[1].1
    );
    assert_eq!(dead[2].0, "partition:0/offset:3");
    assert!(dead[2].1.starts_with("413 "), "{}", dead[2].1);
    assert!(dead[2].2.is_empty(), "the oversized value is left out");
    let metrics = h.router.metrics.render();
    assert!(
        metrics.contains(r#"outcome="invalid_dead_lettered"} 2"#)
            && metrics.contains(r#"outcome="too_large_dead_lettered"} 1"#),
        "{metrics}"
    );
    h.shutdown().await;
}

/// With `invalidRecords: skip` bad records are logged and counted, and the stream moves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_are_skipped_and_counted() {
    let tansu = Tansu::start().await;
    tansu.create_topic("skip", 1).await;
    let sink = Sink::start().await;
    let yaml = source_yaml(
        &tansu,
        "skip",
        &format!("{{uri: \"{}\"}}", sink.uri()),
        "  invalidRecords: skip",
    );
    let h = Harness::start(&yaml).await;
    let producer = tansu.producer();
    produce(
        &producer,
        "skip",
        None,
        None,
        &[("ce_specversion", b"0.1")],
        b"bad version",
    )
    .await;
    produce(&producer, "skip", None, None, &[], b"good").await;
    let got = sink.wait(1, WAIT).await;
    assert_eq!(&got[0].body[..], b"good");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.received().len(), 1);
    let metrics = h.router.metrics.render();
    assert!(
        metrics.contains(r#"outcome="invalid_skipped"} 1"#),
        "{metrics}"
    );
    h.shutdown().await;
}

/// Reads an attribute by name.
type AttrReader<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;

/// A dead letter's attributes and data. Binary mode, except for the record whose
/// `content-type` named a CloudEvents format: its dead letter keeps that `datacontenttype`,
/// which binary mode cannot carry, so it arrives in structured mode.
fn dead_letter(d: &crate::common::Received) -> (AttrReader<'_>, Vec<u8>) {
    use base64::Engine as _;
    let structured = d
        .headers
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"application/cloudevents+json"));
    if !structured {
        return (Box::new(|name| d.attr(name)), d.body.to_vec());
    }
    let json = d.json();
    let data = match (json.get("data_base64"), json.get("data")) {
        (Some(b64), _) => base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().unwrap())
            .unwrap(),
        (None, Some(serde_json::Value::String(text))) => text.as_bytes().to_vec(),
        (None, Some(value)) => value.to_string().into_bytes(),
        (None, None) => Vec::new(),
    };
    let attr = move |name: &str| json.get(name).and_then(|v| v.as_str()).map(str::to_owned);
    (Box::new(attr), data)
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
