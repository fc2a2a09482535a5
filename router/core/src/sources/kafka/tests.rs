use super::*;
use crate::event::{AttrValue, Data, EventView};

fn record<'a>(headers: &'a [(&'a str, Option<&'a [u8]>)]) -> Record<'a> {
    Record {
        topic: "orders",
        partition: 3,
        offset: 42,
        timestamp_ms: Some(1_522_900_584_000),
        key: Some(b"customer-7"),
        headers,
    }
}

fn mapper() -> KafkaMapper {
    KafkaMapper::new("shop", "orders", vec![])
}

#[test]
fn plain_records_map_as_knative_does() {
    let headers = [
        ("Content-Type", Some(&b"Application/JSON"[..])),
        ("X-Trace_ID", Some(&b"abc"[..])),
        ("x-trace-id", Some(&b"def"[..])),
        ("empty", None),
    ];
    let b = mapper()
        .map(
            &record(&headers),
            Bytes::from_static(br#"{"n":1}"#),
            &DecodeLimits::default(),
        )
        .unwrap();
    let v = b.get(0).unwrap();
    assert_eq!(v.id(), "partition:3/offset:42");
    assert_eq!(v.ty(), "dev.knative.kafka.event");
    assert_eq!(
        v.source(),
        "/apis/v1/namespaces/shop/kafkasources/orders#orders"
    );
    assert_eq!(v.subject(), Some("partition:3#42"));
    assert_eq!(v.time(), Some("2018-04-05T03:56:24.000Z"));
    assert_eq!(v.datacontenttype(), Some("application/json"));
    assert_eq!(v.extension("key"), Some(AttrValue::Str("customer-7")));
    assert_eq!(
        v.extension("partitionkey"),
        Some(AttrValue::Str("customer-7"))
    );
    assert_eq!(
        v.extension("kafkaheaderxtraceid"),
        Some(AttrValue::Str("def")),
        "the later header wins"
    );
    assert_eq!(v.extension("kafkaheaderempty"), Some(AttrValue::Str("")));
    assert_eq!(v.data(), Data::Binary(br#"{"n":1}"#));
}

#[test]
fn cloudevents_pass_through_with_overrides() {
    let headers = [
        ("ce_specversion", Some(&b"1.0"[..])),
        ("ce_id", Some(&b"e-1"[..])),
        ("ce_source", Some(&b"/app"[..])),
        ("ce_type", Some(&b"com.example.t"[..])),
        ("content-type", Some(&b"text/plain"[..])),
    ];
    let m = KafkaMapper::new("shop", "orders", vec![("team".into(), "blue".into())]);
    let b = m
        .map(
            &record(&headers),
            Bytes::from_static(b"hello"),
            &DecodeLimits::default(),
        )
        .unwrap();
    let v = b.get(0).unwrap();
    assert_eq!(v.id(), "e-1");
    assert_eq!(v.ty(), "com.example.t");
    assert_eq!(v.extension("team"), Some(AttrValue::Str("blue")));
    assert_eq!(v.extension("key"), None, "a CloudEvent is passed as it is");
    assert_eq!(&*v.data().to_bytes(), b"hello");
}

#[test]
fn claimed_cloudevents_that_are_invalid_are_errors() {
    let headers = [
        ("ce_specversion", Some(&b"1.0"[..])),
        ("ce_id", Some(&b"e-1"[..])),
    ];
    let e = mapper()
        .map(&record(&headers), Bytes::new(), &DecodeLimits::default())
        .unwrap_err();
    assert_eq!(e.code(), 400);
    assert_eq!(
        e.to_string(),
        "orders/3@42: the record claims to be a CloudEvent in binary mode but is not a valid one: missing required attribute \"source\""
    );
    let headers = [("content-type", Some(&b"application/cloudevents+json"[..]))];
    let e = mapper()
        .map(
            &record(&headers),
            Bytes::from_static(b"{not json"),
            &DecodeLimits::default(),
        )
        .unwrap_err();
    assert!(
        matches!(
            &*e,
            InvalidRecord::NotACloudEvent {
                mode: "structured",
                ..
            }
        ),
        "{e}"
    );
    let dl = mapper()
        .dead_letter_event(
            &record(&headers),
            Bytes::from_static(b"{not json"),
            &e,
            &DecodeLimits::default(),
        )
        .unwrap();
    let v = dl.get(0).unwrap();
    assert_eq!(v.ty(), "dev.knative.kafka.event");
    assert_eq!(v.extension("knativeerrorcode"), Some(AttrValue::Str("400")));
    let Some(AttrValue::Str(data)) = v.extension("knativeerrordata") else {
        panic!("no knativeerrordata")
    };
    let text = base64::engine::general_purpose::STANDARD
        .decode(data)
        .unwrap();
    assert!(String::from_utf8(text).unwrap().contains("not valid JSON"),);
    assert_eq!(&*v.data().to_bytes(), b"{not json");
}

/// The dead letter of a record that claimed a CloudEvents format keeps that content type as
/// its `datacontenttype`; a binary-mode Kafka sink then writes it as a structured record, which
/// reads back as the dead letter (found by the `kafka_record` fuzz target,
/// `fuzz/regressions/kafka_record/dead-letter-cloudevents-content-type.txt`: before, the
/// binary record's `content-type` header made consumers read the value as the event).
#[test]
fn dead_letters_of_cloudevents_content_types_survive_a_binary_sink() {
    use crate::event::EncodeOptions;
    use crate::event::kafka::{KafkaMode, decode_kafka, encode_kafka_binary, kafka_mode};
    for ct in [
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
    ] {
        let headers = [("content-type", Some(ct.as_bytes()))];
        let value = Bytes::from_static(b"{not json");
        let limits = DecodeLimits::default();
        let e = mapper()
            .map(&record(&headers), value.clone(), &limits)
            .unwrap_err();
        let dl = mapper()
            .dead_letter_event(&record(&headers), value, &e, &limits)
            .unwrap();
        let v = dl.get(0).unwrap();
        let out = encode_kafka_binary(&v, &EncodeOptions::default());
        let out_headers: Vec<(&str, Option<&[u8]>)> = out
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), Some(&v[..])))
            .collect();
        assert_eq!(kafka_mode(&out_headers), KafkaMode::Structured, "{ct}");
        let back = decode_kafka(&out_headers, out.value, &limits).unwrap();
        let b = back.get(0).unwrap();
        assert_eq!(b.id(), "partition:3/offset:42");
        assert_eq!(b.datacontenttype(), Some(ct));
        assert_eq!(&*b.data().to_bytes(), b"{not json");
        assert_eq!(b.extension("knativeerrorcode"), Some(AttrValue::Str("400")));
    }
}

#[test]
fn oversized_records_are_errors_and_dead_letter_without_data() {
    let limits = DecodeLimits {
        max_event_bytes: 1024,
        ..DecodeLimits::default()
    };
    let value = Bytes::from(vec![b'x'; 4096]);
    let e = mapper()
        .map(&record(&[]), value.clone(), &limits)
        .unwrap_err();
    assert_eq!(e.code(), 413);
    assert_eq!(e.reason(), "too_large");
    assert!(e.to_string().contains("maxEventBytes"), "{e}");
    let dl = mapper()
        .dead_letter_event(&record(&[]), value, &e, &limits)
        .unwrap();
    assert!(dl.get(0).unwrap().data().is_none());
}

/// Every Kafka vector of the CloudEvents conformance suite (`kafka-protocol-binding.feature`)
/// passes through with its attributes and data.
#[test]
fn conformance_vectors() {
    // The vectors as the feature file states them; the end-to-end test reads the file itself.
    let binary_headers = [
        ("ce_specversion", Some(&b"1.0"[..])),
        ("ce_id", Some(&b"1234-1234-1234"[..])),
        ("ce_type", Some(&b"com.example.someevent"[..])),
        ("ce_source", Some(&b"/mycontext/subcontext"[..])),
        ("ce_time", Some(&b"2018-04-05T03:56:24Z"[..])),
        ("content-type", Some(&b"application/json"[..])),
    ];
    let payload = br#"{"message": "Hello World!"}"#;
    let b = mapper()
        .map(
            &record(&binary_headers),
            Bytes::from_static(payload),
            &DecodeLimits::default(),
        )
        .unwrap();
    let v = b.get(0).unwrap();
    assert_eq!(v.id(), "1234-1234-1234");
    assert_eq!(v.time(), Some("2018-04-05T03:56:24Z"));
    assert_eq!(v.datacontenttype(), Some("application/json"));
    assert_eq!(&*v.data().to_bytes(), payload);
}

#[test]
fn a_records_trace_context_headers_reach_its_event() {
    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    const OWN: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let limits = DecodeLimits::default();
    let trace = |v: &EventView<'_>| {
        (
            v.extension("traceparent")
                .and_then(|a| a.as_str().map(str::to_owned)),
            v.extension("tracestate")
                .and_then(|a| a.as_str().map(str::to_owned)),
        )
    };

    // A plain record: the event takes the headers' context.
    let headers = [
        ("traceparent", Some(PARENT.as_bytes())),
        ("tracestate", Some(&b"congo=t61rcWkgMzE"[..])),
    ];
    let b = mapper()
        .map(&record(&headers), Bytes::from_static(b"x"), &limits)
        .unwrap();
    assert_eq!(
        trace(&b.get(0).unwrap()),
        (Some(PARENT.into()), Some("congo=t61rcWkgMzE".into()))
    );

    // A binary-mode CloudEvent with its own context keeps it; header names are exact, as
    // Kafka's are.
    let binary = |trace_headers: &[(&'static str, Option<&'static [u8]>)]| {
        let mut headers = vec![
            ("ce_specversion", Some(&b"1.0"[..])),
            ("ce_id", Some(&b"1"[..])),
            ("ce_source", Some(&b"/s"[..])),
            ("ce_type", Some(&b"t"[..])),
        ];
        headers.extend_from_slice(trace_headers);
        let batch = mapper()
            .map(&record(&headers), Bytes::new(), &limits)
            .unwrap();
        trace(&batch.get(0).unwrap())
    };
    assert_eq!(
        binary(&[
            ("ce_traceparent", Some(OWN.as_bytes())),
            ("traceparent", Some(PARENT.as_bytes())),
        ]),
        (Some(OWN.into()), None)
    );
    assert_eq!(
        binary(&[("TraceParent", Some(PARENT.as_bytes()))]),
        (None, None)
    );
}
