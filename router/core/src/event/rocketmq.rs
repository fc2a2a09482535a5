//! CloudEvents in RocketMQ messages, as the CloudEvents Java SDK's RocketMQ binding writes
//! them.
//!
//! - **Binary mode**: attributes in user properties `CE_<name>` (extensions too, with the same
//!   prefix), `datacontenttype` in `CE_contenttype`, data in the body. RocketMQ refuses empty
//!   bodies, so an event without data has the one-byte body `\0`, as the Java SDK writes it;
//!   reading, a binary-mode body of exactly `\0` is no data.
//! - **Structured mode**: `CE_contenttype: application/cloudevents+json` and the JSON event
//!   format in the body.
//!
//! Mode detection: a `CE_contenttype` that starts with `application/cloudevents` means
//! structured mode; otherwise a `CE_specversion` property means binary mode; otherwise the
//! message is not a CloudEvent.
//!
//! What this module does not do: map messages that are not CloudEvents (that is
//! `RocketMQSource`'s EventBridge mapping, in [`crate::sources::rocketmq`]).

use bytes::Bytes;

use super::attr::{AttrValue, KnownAttr};
use super::batch::{Data, EventBatch, EventView};
use super::binary::{ValueEncoding, decode_fields};
use super::encode::{EncodeOptions, binary_mode_carries, write_structured};
use super::error::{DecodeError, DecodeErrorKind};
use super::json::decode_structured;
use super::{ContentMode, DecodeLimits};

/// The prefix of attribute properties.
pub const ROCKETMQ_PROPERTY_PREFIX: &str = "CE_";
/// The content-type property.
pub const ROCKETMQ_CONTENT_TYPE: &str = "CE_contenttype";
/// The body of an event without data.
pub const ROCKETMQ_EMPTY_BODY: &[u8] = b"\0";

/// How a message carries its event, by its properties.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RocketMqMode {
    /// `CE_*` properties.
    Binary,
    /// `CE_contenttype: application/cloudevents+json`.
    Structured,
    /// A CloudEvents content type of a format that is not read here.
    Unsupported,
    /// Not a CloudEvent.
    NotCloudEvent,
}

/// Tells the mode of a message from its user properties.
pub fn rocketmq_mode(properties: &[(&str, &str)]) -> RocketMqMode {
    if let Some(ct) = property(properties, ROCKETMQ_CONTENT_TYPE) {
        match ContentMode::detect(Some(ct.as_bytes())) {
            ContentMode::Structured => return RocketMqMode::Structured,
            ContentMode::Batched | ContentMode::UnsupportedFormat => {
                return RocketMqMode::Unsupported;
            }
            ContentMode::Binary => {}
        }
    }
    if property(properties, "CE_specversion").is_some() {
        RocketMqMode::Binary
    } else {
        RocketMqMode::NotCloudEvent
    }
}

/// Decodes a message that is a CloudEvent in either mode.
pub fn decode_rocketmq(
    properties: &[(&str, &str)],
    body: Bytes,
    limits: &DecodeLimits,
) -> Result<EventBatch, DecodeError> {
    match rocketmq_mode(properties) {
        RocketMqMode::Structured => decode_structured(body, limits),
        RocketMqMode::Binary => {
            let fields: smallvec::SmallVec<[(&str, &[u8]); 16]> = properties
                .iter()
                .filter(|(name, _)| *name != ROCKETMQ_CONTENT_TYPE)
                .filter_map(|(name, value)| {
                    let attr = name.strip_prefix(ROCKETMQ_PROPERTY_PREFIX)?;
                    Some((attr, value.as_bytes()))
                })
                .collect();
            let body = if &body[..] == ROCKETMQ_EMPTY_BODY {
                Bytes::new()
            } else {
                body
            };
            decode_fields(
                &fields,
                property(properties, ROCKETMQ_CONTENT_TYPE).map(str::as_bytes),
                body,
                limits,
                ValueEncoding::Raw,
                ROCKETMQ_PROPERTY_PREFIX,
            )
        }
        RocketMqMode::Unsupported => Err(DecodeError::body(DecodeErrorKind::UnsupportedFormat(
            property(properties, ROCKETMQ_CONTENT_TYPE)
                .unwrap_or_default()
                .to_owned(),
        ))),
        RocketMqMode::NotCloudEvent => Err(DecodeError::body(DecodeErrorKind::NotACloudEvent)),
    }
}

fn property<'a>(properties: &[(&str, &'a str)], name: &str) -> Option<&'a str> {
    properties.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// A message to produce: user properties and body. The topic, tag and sharding key are the
/// sink's business.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RocketMqMessage {
    /// User properties.
    pub properties: Vec<(String, String)>,
    /// The body, never empty.
    pub body: Bytes,
}

/// Encodes an event in binary mode, or in structured mode when binary mode cannot carry it:
/// its `datacontenttype` would read as a CloudEvents format, or its data is the one byte
/// `\0` that binary mode reads as no data.
pub fn encode_rocketmq_binary(view: &EventView<'_>, opts: &EncodeOptions<'_>) -> RocketMqMessage {
    if !binary_mode_carries(view) {
        return encode_rocketmq_structured(view, opts);
    }
    // Data is decoded (base64) once, here.
    let body = match view.data() {
        Data::None => Bytes::from_static(ROCKETMQ_EMPTY_BODY),
        Data::Base64(_) => Bytes::from(view.data().to_bytes().into_owned()),
        _ => view
            .data_shared()
            .filter(|b| !b.is_empty())
            .unwrap_or(Bytes::from_static(ROCKETMQ_EMPTY_BODY)),
    };
    if body == ROCKETMQ_EMPTY_BODY && !view.data().is_none() {
        return encode_rocketmq_structured(view, opts);
    }
    let version = view.spec_version();
    let mut properties = Vec::with_capacity(8 + view.extensions().len());
    properties.push((
        format!("{ROCKETMQ_PROPERTY_PREFIX}specversion"),
        version.as_str().to_owned(),
    ));
    for attr in KnownAttr::ALL {
        if attr == KnownAttr::SpecVersion {
            continue;
        }
        let Some(value) = view.known(attr) else {
            continue;
        };
        let name = if attr == KnownAttr::DataContentType {
            ROCKETMQ_CONTENT_TYPE.to_owned()
        } else {
            format!("{ROCKETMQ_PROPERTY_PREFIX}{}", attr.name_in(version))
        };
        properties.push((name, value.to_owned()));
    }
    if view.datacontenttype().is_none() && matches!(view.data(), Data::Json(_)) {
        properties.push((
            ROCKETMQ_CONTENT_TYPE.to_owned(),
            "application/json".to_owned(),
        ));
    }
    for (name, value) in opts.extensions(view) {
        properties.push((
            format!("{ROCKETMQ_PROPERTY_PREFIX}{name}"),
            value.with_canonical_str(str::to_owned),
        ));
    }
    RocketMqMessage { properties, body }
}

/// Encodes an event in structured mode.
pub fn encode_rocketmq_structured(
    view: &EventView<'_>,
    opts: &EncodeOptions<'_>,
) -> RocketMqMessage {
    let mut out = Vec::with_capacity(view.wire_size() + 64);
    write_structured(view, opts, &mut out);
    RocketMqMessage {
        properties: vec![(
            ROCKETMQ_CONTENT_TYPE.to_owned(),
            "application/cloudevents+json".to_owned(),
        )],
        body: Bytes::from(out),
    }
}

/// The event's partition key, as its producers should shard by: the `partitionkey`
/// extension (after `opts`), if any.
pub fn partition_key(view: &EventView<'_>, opts: &EncodeOptions<'_>) -> Option<String> {
    opts.extensions(view)
        .find(|(name, _)| *name == "partitionkey")
        .map(|(_, v): (&str, AttrValue<'_>)| v.with_canonical_str(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_both_modes() {
        let body = br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","partitionkey":"k","datacontenttype":"text/plain","data":"hi %41"}"#;
        let batch = decode_structured(Bytes::from_static(body), &DecodeLimits::default()).unwrap();
        let view = batch.get(0).unwrap();
        let opts = EncodeOptions::default();
        assert_eq!(partition_key(&view, &opts).as_deref(), Some("k"));
        for message in [
            encode_rocketmq_binary(&view, &opts),
            encode_rocketmq_structured(&view, &opts),
        ] {
            let props: Vec<(&str, &str)> = message
                .properties
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let back =
                decode_rocketmq(&props, message.body.clone(), &DecodeLimits::default()).unwrap();
            let b = back.get(0).unwrap();
            assert_eq!(b.extension("partitionkey"), Some(AttrValue::Str("k")));
            assert_eq!(b.datacontenttype(), Some("text/plain"));
            assert_eq!(&*b.data().to_bytes(), b"hi %41");
        }
    }

    #[test]
    fn empty_data_is_one_nul_byte() {
        let body = br#"{"specversion":"1.0","id":"1","source":"/s","type":"t"}"#;
        let batch = decode_structured(Bytes::from_static(body), &DecodeLimits::default()).unwrap();
        let m = encode_rocketmq_binary(&batch.get(0).unwrap(), &EncodeOptions::default());
        assert_eq!(&m.body[..], b"\0");
        let props: Vec<(&str, &str)> = m
            .properties
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let back = decode_rocketmq(&props, m.body, &DecodeLimits::default()).unwrap();
        assert!(back.get(0).unwrap().data().is_none());
        assert_eq!(rocketmq_mode(&[("KEYS", "a")]), RocketMqMode::NotCloudEvent);
    }

    /// Found by the `rocketmq_message` fuzz target's seeds: binary mode read a CloudEvents
    /// `datacontenttype` as structured mode (and the data as the event), and data of one NUL
    /// byte as no data. Such events go out in structured mode.
    #[test]
    fn binary_mode_falls_back_to_structured_for_what_it_cannot_carry() {
        for body in [
            &br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"application/cloudevents+json","data":{"specversion":"1.0"}}"#[..],
            br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"application/cloudevents-batch+json","data":[]}"#,
            br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","data_base64":"AA=="}"#,
        ] {
            let batch =
                decode_structured(Bytes::copy_from_slice(body), &DecodeLimits::default()).unwrap();
            let view = batch.get(0).unwrap();
            let m = encode_rocketmq_binary(&view, &EncodeOptions::default());
            let props: Vec<(&str, &str)> = m
                .properties
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            assert_eq!(rocketmq_mode(&props), RocketMqMode::Structured);
            let back = decode_rocketmq(&props, m.body, &DecodeLimits::default()).unwrap();
            let back = back.get(0).unwrap();
            assert_eq!(back.id(), "1");
            assert_eq!(back.datacontenttype(), view.datacontenttype());
            assert_eq!(back.data().to_bytes(), view.data().to_bytes());
        }
    }
}
