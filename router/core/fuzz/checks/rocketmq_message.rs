//! `RocketMQSource`'s message mapping (`RocketMqMapper::map`, `dead_letter_event`), the
//! RocketMQ binding (`rocketmq_mode`, `decode_rocketmq`, `encode_rocketmq_*`,
//! `partition_key`) and `tagExpression` (`TagFilter`): never panics; what it accepts is one
//! event within the size limit that re-encodes (structured, and both RocketMQ modes) to the
//! same event; the mode the properties name decides the outcome (a plain message gets
//! EventBridge's shape with every property, the body and the sharding key; a CloudEvent passes
//! through as `decode_rocketmq` reads it; an unsupported format is refused); a refused
//! message's dead letter, when it maps, carries the error code.
//!
//! The input (see `records.rs`):
//!
//! ```text
//! TOPIC QUEUE_ID OFFSET [BORN_MS [STORE_MS]]   first line; missing numbers are 0
//! @id: MSG_ID                                  the message id (default `m`)
//! @override: NAME=VALUE                        a ceOverrides extension (valid ones only)
//! @limit: N                                    maxEventBytes (default 2048)
//! @tags: EXPRESSION                            a tagExpression, matched against `TAGS`
//! NAME: VALUE                                  a property (`NAME` alone: an empty value)
//!                                              a blank line
//! BODY                                         the rest is the body, byte for byte
//! ```

use base64::Engine as _;
use triggerfish_core::config::CeOverrides;
use triggerfish_core::event::rocketmq::{
    RocketMqMode, decode_rocketmq, encode_rocketmq_binary, encode_rocketmq_structured,
    partition_key, rocketmq_mode,
};
use triggerfish_core::event::{AttrValue, EncodeOptions, EventView};
use triggerfish_core::sources::rocketmq::{
    InvalidMessage, Message, ROCKETMQ_CONTENT_TYPE, ROCKETMQ_EVENT_SOURCE, ROCKETMQ_EVENT_TYPE,
    RocketMqMapper, TagFilter,
};

// `records.rs` is a module of the including crate (the fuzz target, or the replay test).
use crate::records::{
    Input, UNLIMITED, accepted, assert_passes_through, assert_same, assert_structured_round_trip,
    assert_valid_extension_names, dead_letter,
};

/// Runs every invariant on one input.
pub fn check(data: &[u8]) {
    let input = Input::parse(data, &["id", "override", "limit", "tags"]);
    let topic = input.words.first().map_or("t", String::as_str).to_owned();
    let queue_id: i32 = input.word(1).unwrap_or(0);
    let queue_offset: i64 = input.word(2).unwrap_or(0);
    let born_timestamp_ms: i64 = input.word(3).unwrap_or(0);
    let store_timestamp_ms: i64 = input.word(4).unwrap_or(0);
    let mut msg_id = "m".to_owned();
    let mut overrides: Vec<(String, String)> = Vec::new();
    for (directive, rest) in &input.directives {
        let text = String::from_utf8_lossy(rest.trim_ascii()).into_owned();
        match *directive {
            "id" => msg_id = text,
            "override" => {
                let (name, value) = text.split_once('=').unwrap_or((&text, ""));
                // What the config accepts (`CeOverrides::problems`).
                if CeOverrides::extension_problem(name, value).is_none() {
                    overrides.retain(|(n, _)| n != name);
                    overrides.push((name.to_owned(), value.to_owned()));
                }
            }
            "tags" => check_tags(&text, &input),
            _ => {}
        }
    }
    // RocketMQ properties are strings.
    let text: Vec<(String, String)> = input
        .fields
        .iter()
        .map(|(n, v)| {
            let v = v.as_deref().unwrap_or_default();
            (n.clone(), String::from_utf8_lossy(v).into_owned())
        })
        .collect();
    let properties: Vec<(&str, &str)> = text.iter().map(|(n, v)| (&n[..], &v[..])).collect();
    let message = Message {
        topic: &topic,
        queue_id,
        queue_offset,
        msg_id: &msg_id,
        born_timestamp_ms,
        store_timestamp_ms,
        properties: &properties,
    };
    let limits = input.limits();
    let body = input.value.clone();
    let mapper = RocketMqMapper::new("fuzz", "messages", "r", "a", "i", overrides.clone());
    let mode = rocketmq_mode(&properties);

    match mapper.map(&message, body.clone(), &limits) {
        Ok(batch) => {
            let view = accepted(&batch, &limits, &overrides);
            assert_ne!(
                mode,
                RocketMqMode::Unsupported,
                "an unsupported format maps"
            );
            if mode == RocketMqMode::NotCloudEvent {
                check_eventbridge(&view, &message, &body, &overrides);
            } else {
                // A CloudEvent passes through as the binding reads it (plus the overrides).
                let direct = decode_rocketmq(&properties, body, &limits)
                    .expect("the mapper accepted it, so the binding does");
                assert_passes_through(&direct, &view, &overrides);
            }
            check_reencodes(&view);
        }
        Err(error) => {
            let too_large = matches!(
                &*error,
                InvalidMessage::NotACloudEvent { error, .. } | InvalidMessage::Unmappable { error, .. }
                    if error.is_too_large()
            );
            match (&*error, mode) {
                _ if too_large => {}
                // Only EventBridge's mapping, or re-encoding a CloudEvent with overrides, is
                // unmappable for another reason than size.
                (InvalidMessage::Unmappable { .. }, RocketMqMode::NotCloudEvent) => {}
                (InvalidMessage::Unmappable { .. }, _) => {
                    assert!(
                        !overrides.is_empty(),
                        "{mode:?} message refused as {error:?}"
                    )
                }
                (InvalidMessage::NotACloudEvent { .. }, RocketMqMode::NotCloudEvent) => {
                    panic!("a plain message refused as not a CloudEvent: {error}")
                }
                (InvalidMessage::NotACloudEvent { .. }, _) => {}
            }
            assert_eq!(error.code() == 413, too_large);
            assert_eq!(error.reason() == "too_large", too_large);
            let message_text = error.to_string();
            assert!(
                message_text.starts_with(&format!(
                    "{topic}/{queue_id}@{queue_offset} (message {msg_id}): "
                )),
                "{message_text}"
            );
            if let Ok(dead) = mapper.dead_letter_event(&message, &input.value, &error, &limits) {
                check_reencodes(&dead_letter(
                    &dead,
                    &limits,
                    ROCKETMQ_EVENT_TYPE,
                    error.code(),
                ));
            }
        }
    }
}

/// EventBridge's shape of a plain message.
fn check_eventbridge(
    view: &EventView<'_>,
    message: &Message<'_>,
    body: &[u8],
    overrides: &[(String, String)],
) {
    assert_eq!(view.id(), message.msg_id);
    assert_eq!(view.source(), ROCKETMQ_EVENT_SOURCE);
    assert_eq!(view.ty(), ROCKETMQ_EVENT_TYPE);
    assert_eq!(
        view.subject(),
        Some(format!("acs:mq:r:a:i%{}", message.topic).as_str())
    );
    assert_eq!(view.datacontenttype(), Some(ROCKETMQ_CONTENT_TYPE));
    assert_eq!(
        view.time().is_some(),
        message.born_timestamp_ms > 0
            && chrono::DateTime::<chrono::Utc>::from_timestamp_millis(message.born_timestamp_ms)
                .is_some()
    );
    let data: serde_json::Value =
        serde_json::from_slice(&view.data().to_bytes()).expect("EventBridge data is JSON");
    assert_eq!(data["topic"], message.topic);
    match std::str::from_utf8(body) {
        Ok(text) => assert_eq!(data["body"], text),
        Err(_) => {
            let carried = data["bodyBase64"].as_str().expect("bodyBase64");
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(carried)
                .expect("bodyBase64 is base64");
            assert_eq!(decoded, body);
        }
    }
    // Every property is in one of the two maps, with its last value; the coordinates are
    // system properties.
    for (name, _) in message.properties {
        let last = message
            .properties
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v);
        let system = &data["systemProperties"][name];
        let user = &data["userProperties"][name];
        let derived = [
            "QUEUE_ID",
            "QUEUE_OFFSET",
            "BORN_TIMESTAMP",
            "STORE_TIMESTAMP",
        ];
        if derived.contains(name) {
            // The message's own property of that name is a user property.
            assert_eq!(user.as_str(), last, "property {name:?}");
        } else {
            assert!(system.is_null() != user.is_null(), "property {name:?}");
            assert_eq!(system.as_str().or(user.as_str()), last, "property {name:?}");
        }
    }
    assert_eq!(
        data["systemProperties"]["QUEUE_OFFSET"],
        message.queue_offset.to_string()
    );
    let sharding_key = message
        .properties
        .iter()
        .rev()
        .find(|(n, _)| *n == "__SHARDINGKEY" || *n == "SHARDING_KEY")
        .map(|(_, v)| *v)
        .filter(|k| !k.is_empty());
    let want = overrides
        .iter()
        .find(|(n, _)| n == "partitionkey")
        .map(|(_, v)| v.as_str())
        .or(sharding_key);
    assert_eq!(
        view.extension("partitionkey"),
        want.map(AttrValue::Str),
        "partitionkey"
    );
    assert_valid_extension_names(view);
}

/// The event survives a structured re-encode and a round trip through both RocketMQ modes.
fn check_reencodes(view: &EventView<'_>) {
    let opts = EncodeOptions::default();
    assert_structured_round_trip(view);

    for (encoded, how) in [
        (encode_rocketmq_binary(view, &opts), "binary"),
        (encode_rocketmq_structured(view, &opts), "structured"),
    ] {
        assert!(!encoded.body.is_empty(), "RocketMQ refuses empty bodies");
        let properties: Vec<(&str, &str)> = encoded
            .properties
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        let again = decode_rocketmq(&properties, encoded.body, &UNLIMITED)
            .unwrap_or_else(|e| panic!("our RocketMQ {how} encoding decodes: {e}"));
        assert_same(view, &again.get(0).expect("one event"), how);
    }
    let key = view
        .extension("partitionkey")
        .map(|v| v.with_canonical_str(str::to_owned));
    assert_eq!(
        partition_key(view, &opts),
        key,
        "the key is the partitionkey"
    );
}

/// A `tagExpression` that parses takes a message by its `TAGS` as RocketMQ's `||` syntax says,
/// and reads the same when written back.
fn check_tags(expression: &str, input: &Input) {
    let Some(filter) = TagFilter::parse(expression) else {
        return;
    };
    let tag = input
        .fields
        .iter()
        .rev()
        .find(|(n, _)| n == "TAGS")
        .map(|(_, v)| String::from_utf8_lossy(v.as_deref().unwrap_or_default()).into_owned());
    let named: Vec<&str> = expression
        .split("||")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();
    // `*` takes every message, and only stands alone.
    let every = matches!(expression.trim(), "" | "*");
    assert!(every || !named.contains(&"*"), "{expression:?} parsed");
    let want = every || tag.as_deref().is_some_and(|t| named.contains(&t));
    assert_eq!(
        filter.matches(tag.as_deref()),
        want,
        "{expression:?} on {tag:?}"
    );
    assert_eq!(
        TagFilter::parse(&filter.to_string()),
        Some(filter),
        "{expression:?}"
    );
}
