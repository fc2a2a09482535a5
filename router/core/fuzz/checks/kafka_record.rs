//! `KafkaSource`'s record mapping (`KafkaMapper::map`, `decode_kafka`, `kafka_mode`): never
//! panics; what it accepts is one event within the size limit that re-encodes (structured, and
//! both Kafka modes) to the same event; the mode the headers name decides the outcome (a plain
//! record gets Knative's attributes, a CloudEvent passes through as `decode_kafka` reads it, an
//! unsupported format is refused); a refused record's dead letter, when it maps, carries the
//! error code.
//!
//! The input is text-like, so seeds are easy to write:
//!
//! ```text
//! TOPIC PARTITION OFFSET [TIMESTAMP_MS]      first line; missing numbers are 0 / no time
//! @key: BYTES                                the record key (the last one wins)
//! @override: NAME=VALUE                      a ceOverrides extension (valid names only)
//! @limit: N                                  maxEventBytes (default 2048)
//! name: value                                a header (`name` alone: a header without value)
//!                                            a blank line
//! VALUE                                      the rest is the record value, byte for byte
//! ```

use triggerfish_core::event::kafka::{
    KafkaMode, decode_kafka, encode_kafka_binary, encode_kafka_structured, kafka_mode,
};
use triggerfish_core::event::{EncodeOptions, EventView, KnownAttr, is_valid_attribute_name};
use triggerfish_core::sources::kafka::{InvalidRecord, KAFKA_EVENT_TYPE, KafkaMapper, Record};

// `records.rs` is a module of the including crate (the fuzz target, or the replay test).
use crate::records::{
    Input, UNLIMITED, accepted, assert_passes_through, assert_same, assert_structured_round_trip,
    assert_valid_extension_names, dead_letter,
};

/// Runs every invariant on one input.
pub fn check(data: &[u8]) {
    let input = Input::parse(data, &["key", "override", "limit"]);
    let topic = input.words.first().map_or("t", String::as_str).to_owned();
    let partition: i32 = input.word(1).unwrap_or(0);
    let offset: i64 = input.word(2).unwrap_or(0);
    let timestamp_ms: Option<i64> = input.word(3);
    let value = input.value.clone();

    let mut key: Option<Vec<u8>> = None;
    let mut overrides: Vec<(String, String)> = Vec::new();
    for (directive, rest) in &input.directives {
        match *directive {
            "key" => key = Some(rest.trim_ascii_start().to_vec()),
            "override" => {
                let o = String::from_utf8_lossy(rest.trim_ascii());
                let (name, value) = o.split_once('=').unwrap_or((&o, ""));
                // ceOverrides name extensions: lower-case alphanumeric names that are not
                // context attributes or `data` (as `PingSource` checks them).
                if is_valid_attribute_name(name.as_bytes())
                    && KnownAttr::from_name(name).is_none()
                    && name != "data"
                {
                    overrides.retain(|(n, _)| n != name);
                    overrides.push((name.to_owned(), value.to_owned()));
                }
            }
            _ => {}
        }
    }
    let header_text = &input.fields;
    let headers: Vec<(&str, Option<&[u8]>)> = header_text
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_deref()))
        .collect();
    let record = Record {
        topic: &topic,
        partition,
        offset,
        timestamp_ms,
        key: key.as_deref(),
        headers: &headers,
    };
    let limits = input.limits();
    let mapper = KafkaMapper::new("fuzz", "records", overrides.clone());
    let mode = kafka_mode(&headers);

    match mapper.map(&record, value.clone(), &limits) {
        Ok(batch) => {
            let view = accepted(&batch, &limits, &overrides);
            assert_ne!(mode, KafkaMode::Unsupported, "an unsupported format maps");
            if mode == KafkaMode::NotCloudEvent {
                check_plain(&view, &record);
            } else {
                // A CloudEvent passes through as the binding reads it (plus the overrides).
                let direct = decode_kafka(&headers, value, &limits)
                    .expect("the mapper accepted it, so the binding does");
                assert_passes_through(&direct, &view, &overrides);
            }
            check_reencodes(&view);
        }
        Err(error) => {
            match (&*error, mode) {
                (InvalidRecord::TooLarge { .. }, _) => assert_eq!(error.code(), 413),
                (InvalidRecord::Unmappable { .. }, KafkaMode::NotCloudEvent) => {}
                (InvalidRecord::NotACloudEvent { mode: m, .. }, KafkaMode::Binary) => {
                    assert_eq!(*m, "binary")
                }
                (InvalidRecord::NotACloudEvent { mode: m, .. }, KafkaMode::Structured) => {
                    // Overrides re-encode the event; that step reports "binary".
                    assert!(*m == "structured" || !overrides.is_empty(), "{error}")
                }
                (InvalidRecord::NotACloudEvent { mode: m, .. }, KafkaMode::Unsupported) => {
                    assert_eq!(*m, "unsupported")
                }
                (e, mode) => panic!("{mode:?} record refused as {e:?}"),
            }
            assert_eq!(error.reason() == "too_large", error.code() == 413);
            let message = error.to_string();
            assert!(message.starts_with(&format!("{topic}/{partition}@{offset}: ")));
            if let Ok(dead) = mapper.dead_letter_event(&record, value, &error, &limits) {
                check_reencodes(&dead_letter(&dead, &limits, KAFKA_EVENT_TYPE, error.code()));
            }
        }
    }
}

/// Knative's attributes of a plain record.
fn check_plain(view: &EventView<'_>, record: &Record<'_>) {
    assert_eq!(view.ty(), KAFKA_EVENT_TYPE);
    assert_eq!(
        view.id(),
        format!("partition:{}/offset:{}", record.partition, record.offset)
    );
    assert_eq!(
        view.source(),
        format!(
            "/apis/v1/namespaces/fuzz/kafkasources/records#{}",
            record.topic
        )
    );
    assert_eq!(
        view.subject(),
        Some(format!("partition:{}#{}", record.partition, record.offset).as_str())
    );
    assert_eq!(
        view.time().is_some(),
        record.timestamp_ms.is_some_and(|ms| {
            chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms).is_some()
        })
    );
    assert_valid_extension_names(view);
}

/// The event survives a structured re-encode and a round trip through both Kafka modes.
fn check_reencodes(view: &EventView<'_>) {
    let opts = EncodeOptions::default();
    let same = |other: &EventView<'_>, how: &str| assert_same(view, other, how);
    assert_structured_round_trip(view);

    for (record, want) in [
        (encode_kafka_binary(view, &opts), KafkaMode::Binary),
        (encode_kafka_structured(view, &opts), KafkaMode::Structured),
    ] {
        let headers: Vec<(&str, Option<&[u8]>)> = record
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), Some(&v[..])))
            .collect();
        // Binary mode cannot carry a CloudEvents `datacontenttype`; it falls back to
        // structured.
        let want = if want == KafkaMode::Binary && is_cloudevents_format(view) {
            KafkaMode::Structured
        } else {
            want
        };
        assert_eq!(kafka_mode(&headers), want);
        let again =
            decode_kafka(&headers, record.value, &UNLIMITED).expect("our Kafka encoding decodes");
        same(&again.get(0).expect("one event"), &format!("{want:?}"));
        let key = view
            .extension("partitionkey")
            .map(|v| v.with_canonical_str(str::to_owned));
        assert_eq!(record.key, key, "the key is the partitionkey");
    }
}

/// Whether the event's `datacontenttype` names a CloudEvents format.
fn is_cloudevents_format(view: &EventView<'_>) -> bool {
    view.datacontenttype().is_some_and(|ct| {
        ct.trim_ascii()
            .to_ascii_lowercase()
            .starts_with("application/cloudevents")
    })
}
