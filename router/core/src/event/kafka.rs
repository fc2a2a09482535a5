//! The CloudEvents Kafka protocol binding (v1.0): a record's headers and value as an event,
//! and an event as a record.
//!
//! - **Binary mode**: attributes in `ce_<name>` headers whose values are the attributes' UTF-8
//!   strings as they are (no percent-encoding, unlike HTTP), `datacontenttype` in the
//!   `content-type` header, data in the value.
//! - **Structured mode**: `content-type: application/cloudevents+json` and the JSON event
//!   format in the value.
//! - The record key carries the `partitionkey` extension when the event has one (binding
//!   §3.4); the extension also stays in the event.
//!
//! Mode detection follows the binding (§3.2): a `content-type` header that starts with
//! `application/cloudevents` means structured mode; otherwise a `ce_specversion` header means
//! binary mode; otherwise the record is not a CloudEvent ([`KafkaMode::NotCloudEvent`]).
//! The binding defines no batched mode, so `application/cloudevents-batch+json` is an error.
//!
//! What this module does not do: wrap records that are not CloudEvents (that is
//! `KafkaSource`'s mapping, in [`crate::sources::kafka`]), or talk to Kafka.

use bytes::Bytes;

use super::attr::{AttrValue, KnownAttr};
use super::batch::{Data, EventBatch, EventView};
use super::binary::{ValueEncoding, decode_fields};
use super::encode::{EncodeOptions, binary_mode_carries, write_structured};
use super::error::{DecodeError, DecodeErrorKind};
use super::json::decode_structured;
use super::{ContentMode, DecodeLimits};

/// The prefix of attribute headers.
pub const KAFKA_HEADER_PREFIX: &str = "ce_";
/// The content-type header.
pub const KAFKA_CONTENT_TYPE: &str = "content-type";
/// The content type of structured-mode records.
pub const KAFKA_STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";

/// How a record carries its event, by its headers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KafkaMode {
    /// `ce_*` headers.
    Binary,
    /// `content-type: application/cloudevents+json`.
    Structured,
    /// A `content-type` naming a CloudEvents format this binding does not carry
    /// (`application/cloudevents-batch+json`, `application/cloudevents+avro`).
    Unsupported,
    /// No CloudEvents headers: a plain record.
    NotCloudEvent,
}

/// Tells the mode of a record from its headers (name, value). Header names are compared as
/// Kafka compares them, case-sensitively, except `content-type`, which is matched in any case
/// as the Java SDK does.
pub fn kafka_mode(headers: &[(&str, Option<&[u8]>)]) -> KafkaMode {
    let content_type = content_type(headers);
    if let Some(ct) = content_type {
        match ContentMode::detect(Some(ct)) {
            ContentMode::Structured => return KafkaMode::Structured,
            ContentMode::Batched | ContentMode::UnsupportedFormat => {
                return KafkaMode::Unsupported;
            }
            ContentMode::Binary => {}
        }
    }
    if headers.iter().any(|(name, _)| *name == "ce_specversion") {
        KafkaMode::Binary
    } else {
        KafkaMode::NotCloudEvent
    }
}

/// Decodes a record that is a CloudEvent in either mode. A record of another mode is
/// [`DecodeErrorKind::NotACloudEvent`].
pub fn decode_kafka(
    headers: &[(&str, Option<&[u8]>)],
    value: Bytes,
    limits: &DecodeLimits,
) -> Result<EventBatch, DecodeError> {
    match kafka_mode(headers) {
        KafkaMode::Structured => decode_structured(value, limits),
        KafkaMode::Binary => {
            let fields: smallvec::SmallVec<[(&str, &[u8]); 16]> = headers
                .iter()
                .filter_map(|(name, value)| {
                    let attr = name.strip_prefix(KAFKA_HEADER_PREFIX)?;
                    Some((attr, value.unwrap_or_default()))
                })
                .collect();
            decode_fields(
                &fields,
                content_type(headers),
                value,
                limits,
                ValueEncoding::Raw,
                KAFKA_HEADER_PREFIX,
            )
        }
        KafkaMode::Unsupported => Err(DecodeError::body(DecodeErrorKind::UnsupportedFormat(
            String::from_utf8_lossy(content_type(headers).unwrap_or_default()).into_owned(),
        ))),
        KafkaMode::NotCloudEvent => Err(DecodeError::body(DecodeErrorKind::NotACloudEvent)),
    }
}

/// Decodes an event from its attributes as (name, UTF-8 value) pairs, its content type and its
/// data: how sources build events from what they consumed, with the same validation as
/// everything else. Sizes count each attribute as a `ce_` header.
pub fn decode_attributes(
    fields: &[(&str, &[u8])],
    content_type: Option<&[u8]>,
    data: Bytes,
    limits: &DecodeLimits,
) -> Result<EventBatch, DecodeError> {
    decode_fields(
        fields,
        content_type,
        data,
        limits,
        ValueEncoding::Raw,
        KAFKA_HEADER_PREFIX,
    )
}

fn content_type<'a>(headers: &[(&str, Option<&'a [u8]>)]) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(KAFKA_CONTENT_TYPE))
        .and_then(|(_, v)| *v)
}

/// A record to produce: key, headers and value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaRecord {
    /// The `partitionkey` extension, if the event has one.
    pub key: Option<String>,
    /// Headers, in order.
    pub headers: Vec<(String, Bytes)>,
    /// The value.
    pub value: Bytes,
}

/// Encodes an event as a binary-mode record.
///
/// An event whose `datacontenttype` names a CloudEvents format cannot travel in binary mode
/// (a consumer would read its `content-type` header as the event's format, §3.2); it is
/// encoded as a structured-mode record instead.
pub fn encode_kafka_binary(view: &EventView<'_>, opts: &EncodeOptions<'_>) -> KafkaRecord {
    if !binary_mode_carries(view) {
        return encode_kafka_structured(view, opts);
    }
    let version = view.spec_version();
    let mut headers = Vec::with_capacity(8 + view.extensions().len());
    headers.push((
        "ce_specversion".to_owned(),
        Bytes::from_static(version.as_str().as_bytes()),
    ));
    let mut content_type = None;
    for attr in KnownAttr::ALL {
        if attr == KnownAttr::SpecVersion {
            continue;
        }
        let Some(value) = view.known(attr) else {
            continue;
        };
        if attr == KnownAttr::DataContentType {
            content_type = Some(value.to_owned());
            continue;
        }
        headers.push((
            format!("{KAFKA_HEADER_PREFIX}{}", attr.name_in(version)),
            Bytes::copy_from_slice(value.as_bytes()),
        ));
    }
    if content_type.is_none() && matches!(view.data(), Data::Json(_)) {
        // Structured data without a content type is JSON (JSON format §3.1.2).
        content_type = Some("application/json".to_owned());
    }
    let mut key = None;
    for (name, value) in opts.extensions(view) {
        let text = value.with_canonical_str(str::to_owned);
        if name == "partitionkey" {
            key = Some(text.clone());
        }
        headers.push((format!("{KAFKA_HEADER_PREFIX}{name}"), Bytes::from(text)));
    }
    if let Some(ct) = content_type {
        headers.push((KAFKA_CONTENT_TYPE.to_owned(), Bytes::from(ct)));
    }
    let value = match view.data() {
        Data::None => Bytes::new(),
        Data::Base64(_) => Bytes::from(view.data().to_bytes().into_owned()),
        _ => view.data_shared().unwrap_or_default(),
    };
    KafkaRecord {
        key,
        headers,
        value,
    }
}

/// Encodes an event as a structured-mode record.
pub fn encode_kafka_structured(view: &EventView<'_>, opts: &EncodeOptions<'_>) -> KafkaRecord {
    let mut out = Vec::with_capacity(view.wire_size() + 64);
    write_structured(view, opts, &mut out);
    let key = opts
        .extensions(view)
        .find(|(name, _)| *name == "partitionkey")
        .map(|(_, v): (&str, AttrValue<'_>)| v.with_canonical_str(str::to_owned));
    KafkaRecord {
        key,
        headers: vec![(
            KAFKA_CONTENT_TYPE.to_owned(),
            Bytes::from_static(KAFKA_STRUCTURED_CONTENT_TYPE.as_bytes()),
        )],
        value: Bytes::from(out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h<'a>(pairs: &'a [(&'a str, &'a str)]) -> Vec<(&'a str, Option<&'a [u8]>)> {
        pairs
            .iter()
            .map(|(k, v)| (*k, Some(v.as_bytes())))
            .collect()
    }

    #[test]
    fn modes() {
        assert_eq!(kafka_mode(&[]), KafkaMode::NotCloudEvent);
        assert_eq!(
            kafka_mode(&h(&[("content-type", "application/json")])),
            KafkaMode::NotCloudEvent
        );
        assert_eq!(
            kafka_mode(&h(&[("ce_specversion", "1.0")])),
            KafkaMode::Binary
        );
        assert_eq!(
            kafka_mode(&h(&[(
                "Content-Type",
                "application/cloudevents+json; charset=utf-8"
            )])),
            KafkaMode::Structured
        );
        assert_eq!(
            kafka_mode(&h(&[(
                "content-type",
                "application/cloudevents-batch+json"
            )])),
            KafkaMode::Unsupported
        );
    }

    #[test]
    fn binary_values_are_raw() {
        let headers = h(&[
            ("ce_specversion", "1.0"),
            ("ce_id", "1"),
            ("ce_source", "/s"),
            ("ce_type", "t"),
            ("ce_note", "100%20 \"quoted\""),
            ("other", "x"),
        ]);
        let b = decode_kafka(&headers, Bytes::new(), &DecodeLimits::default()).unwrap();
        let v = b.get(0).unwrap();
        assert_eq!(
            v.extension("note"),
            Some(AttrValue::Str("100%20 \"quoted\""))
        );
        assert_eq!(v.extensions().len(), 1);
    }

    #[test]
    fn round_trip_both_modes() {
        let body = br#"{"specversion":"1.0","id":"a b","source":"/s","type":"t","partitionkey":"k1","n":"%41","datacontenttype":"application/json","data":{"x":1}}"#;
        let batch = decode_structured(Bytes::from_static(body), &DecodeLimits::default()).unwrap();
        let view = batch.get(0).unwrap();
        let opts = EncodeOptions::default();
        for record in [
            encode_kafka_binary(&view, &opts),
            encode_kafka_structured(&view, &opts),
        ] {
            assert_eq!(record.key.as_deref(), Some("k1"));
            let headers: Vec<(&str, Option<&[u8]>)> = record
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), Some(&v[..])))
                .collect();
            let back =
                decode_kafka(&headers, record.value.clone(), &DecodeLimits::default()).unwrap();
            let b = back.get(0).unwrap();
            assert_eq!(b.id(), "a b");
            assert_eq!(b.extension("n"), Some(AttrValue::Str("%41")));
            assert_eq!(b.extension("partitionkey"), Some(AttrValue::Str("k1")));
            assert_eq!(b.datacontenttype(), Some("application/json"));
            assert_eq!(&*b.data().to_bytes(), br#"{"x":1}"#);
        }
    }

    #[test]
    fn invalid_binary_is_an_error() {
        let headers = h(&[("ce_specversion", "1.0"), ("ce_id", "1")]);
        let e = decode_kafka(&headers, Bytes::new(), &DecodeLimits::default()).unwrap_err();
        assert_eq!(e.kind, DecodeErrorKind::MissingAttribute("source"));
        let headers = vec![
            ("ce_specversion", Some(&b"1.0"[..])),
            ("ce_id", Some(&b"\xff"[..])),
        ];
        let e = decode_kafka(&headers, Bytes::new(), &DecodeLimits::default()).unwrap_err();
        assert!(matches!(e.kind, DecodeErrorKind::InvalidUtf8 { .. }), "{e}");
    }
}
