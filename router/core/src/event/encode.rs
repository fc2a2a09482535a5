//! Encoders: binary-mode headers, structured JSON and batched JSON.
//!
//! Encoders write from an [`EventView`]. JSON data is copied verbatim from the received bytes,
//! and so is a whole event received in JSON when no extension changes; a binary-mode body is a
//! shared slice of them. [`EncodeOptions`] lets the broker drop or add
//! extensions on the way out (the TTL is never sent to subscribers; dead letters gain the
//! `knativeerror*` extensions) without building a new event.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use super::arrival::ARRIVAL_EXTENSION;
use super::attr::{AttrValue, KnownAttr, SpecVersion};
use super::batch::{Data, EventView};
use super::{ContentMode, is_json_media_type};

/// Characters percent-encoded in binary-mode header values (HTTP binding §3.1.3.2): space,
/// `"`, `%`, and everything outside U+0021–U+007E (controls here; non-ASCII always).
const HEADER_ENCODE: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

/// Changes applied to an event's extensions while encoding it.
#[derive(Clone, Copy, Debug, Default)]
pub struct EncodeOptions<'a> {
    /// Extensions to leave out.
    pub skip: &'a [&'a str],
    /// Extensions to add, replacing any of the same name.
    pub add: &'a [(&'a str, AttrValue<'a>)],
}

impl<'a> EncodeOptions<'a> {
    fn keeps(&self, name: &str) -> bool {
        !self.skip.contains(&name) && !self.add.iter().any(|(n, _)| *n == name)
    }

    /// The extensions of `view` after the options are applied.
    pub fn extensions<'v>(
        &'v self,
        view: &EventView<'v>,
    ) -> impl Iterator<Item = (&'v str, AttrValue<'v>)> + 'v
    where
        'a: 'v,
    {
        let kept = view.extensions().filter(move |(n, _)| self.keeps(n));
        kept.chain(self.add.iter().copied())
    }
}

/// Encodes one event in binary mode: `ce-*` headers (percent-encoded), `Content-Type` from
/// `datacontenttype`, and the data as the body.
///
/// An event whose `datacontenttype` names a CloudEvents format (`application/cloudevents+json`,
/// say) cannot travel in binary mode: the receiver would take its `Content-Type` for the
/// event's format and read the data as the event (HTTP binding §3). Such an event is encoded
/// in structured mode instead, which carries it whole.
pub fn encode_binary(view: &EventView<'_>, opts: &EncodeOptions<'_>) -> (HeaderMap, Bytes) {
    if !binary_mode_carries(view) {
        let mut headers = HeaderMap::with_capacity(1);
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/cloudevents+json"),
        );
        return (headers, encode_structured(view, opts));
    }
    let mut headers = HeaderMap::with_capacity(8 + view.extensions().len());
    let version = view.spec_version();
    headers.insert(
        HeaderName::from_static("ce-specversion"),
        HeaderValue::from_static(version.as_str()),
    );
    for attr in KnownAttr::ALL {
        if attr == KnownAttr::SpecVersion {
            continue;
        }
        let Some(value) = view.known(attr) else {
            continue;
        };
        if attr == KnownAttr::DataContentType
            && let Ok(v) = HeaderValue::from_str(value)
        {
            headers.insert(http::header::CONTENT_TYPE, v);
            continue;
        }
        headers.insert(known_header(attr, version), header_value(value));
    }
    if view.datacontenttype().is_none() && matches!(view.data(), Data::Json(_)) {
        // Structured data without a content type is JSON (JSON format §3.1.2); say so when it
        // moves to a binding where the type is not implied.
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    for (name, value) in opts.extensions(view) {
        let Ok(header) = HeaderName::from_bytes(format!("ce-{name}").as_bytes()) else {
            continue;
        };
        let v = value.with_canonical_str(header_value);
        headers.insert(header, v);
    }
    let body = match view.data() {
        Data::None => Bytes::new(),
        Data::Base64(_) => Bytes::from(view.data().to_bytes().into_owned()),
        _ => view.data_shared().unwrap_or_default(),
    };
    (headers, body)
}

fn known_header(attr: KnownAttr, version: SpecVersion) -> HeaderName {
    HeaderName::from_static(match attr.name_in(version) {
        "id" => "ce-id",
        "source" => "ce-source",
        "type" => "ce-type",
        "subject" => "ce-subject",
        "time" => "ce-time",
        "datacontenttype" => "ce-datacontenttype",
        "dataschema" => "ce-dataschema",
        "schemaurl" => "ce-schemaurl",
        _ => "ce-specversion",
    })
}

fn header_value(value: &str) -> HeaderValue {
    let encoded: std::borrow::Cow<'_, str> = utf8_percent_encode(value, HEADER_ENCODE).into();
    // After percent-encoding, only visible ASCII remains, which is always a valid header value.
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Encodes one event as a structured-mode JSON object.
pub fn encode_structured(view: &EventView<'_>, opts: &EncodeOptions<'_>) -> Bytes {
    let mut out = Vec::with_capacity(view.wire_size() + 64);
    write_structured(view, opts, &mut out);
    Bytes::from(out)
}

/// Encodes events as a batched-mode JSON array.
pub fn encode_batched<'a>(
    views: impl IntoIterator<Item = EventView<'a>> + Clone,
    opts: &EncodeOptions<'_>,
) -> Bytes {
    // About the final size, so that the buffer is not copied as it grows.
    let size: usize = views.clone().into_iter().map(|v| v.wire_size() + 16).sum();
    let mut out = Vec::with_capacity(size + 2);
    out.push(b'[');
    for (i, view) in views.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_structured(&view, opts, &mut out);
    }
    out.push(b']');
    Bytes::from(out)
}

/// Joins events already encoded in structured mode (JSON objects) into a batched-mode JSON
/// array.
pub fn join_batched<'a>(events: impl IntoIterator<Item = &'a [u8]> + Clone) -> Bytes {
    let size = events
        .clone()
        .into_iter()
        .map(|e| e.len() + 1)
        .sum::<usize>()
        + 2;
    let mut out = Vec::with_capacity(size);
    out.push(b'[');
    for (i, event) in events.into_iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(event);
    }
    out.push(b']');
    Bytes::from(out)
}

/// Appends the structured JSON form of `view` to `out`.
///
/// An event that was received in structured or batched JSON, when `opts` changes none of its
/// extensions, is copied as it was received (its bytes decode to this event); any other is
/// written member by member:
///
/// Data mapping (JSON format §3.1.1): JSON data is written verbatim as `data`; text as a JSON
/// string; base64 data as `data_base64` (0.3: `datacontentencoding: base64`). A binary-mode body
/// becomes `data` when its content type is JSON and it parses as JSON, a string when it is text
/// in UTF-8, and `data_base64` otherwise.
pub fn write_structured(view: &EventView<'_>, opts: &EncodeOptions<'_>, out: &mut Vec<u8>) {
    // An event received as JSON, with no extension to add or leave out, goes as it came: its
    // bytes are already valid JSON that decodes to this event. Its `knativearrivaltime`, which
    // those bytes do not hold, goes in front of their members (a valid event has at least
    // `specversion`, so a comma follows).
    if let Some(json) = view.received_json()
        && opts.add.is_empty()
        && !opts.skip.iter().any(|name| view.extension(name).is_some())
    {
        match (view.stamped_arrival(), json.split_first()) {
            (None, _) => {
                out.extend_from_slice(json);
                return;
            }
            (Some(at), Some((b'{', members))) => {
                out.reserve(json.len() + ARRIVAL_EXTENSION.len() + 36);
                out.extend_from_slice(b"{\"");
                out.extend_from_slice(ARRIVAL_EXTENSION.as_bytes());
                out.extend_from_slice(b"\":\"");
                out.extend_from_slice(at.as_str().as_bytes());
                out.extend_from_slice(b"\",");
                out.extend_from_slice(members);
                return;
            }
            // Not an object's bytes (decoders record only objects): member by member.
            (Some(_), _) => {}
        }
    }
    let version = view.spec_version();
    out.extend_from_slice(b"{\"specversion\":\"");
    out.extend_from_slice(version.as_str().as_bytes());
    out.push(b'"');
    for attr in KnownAttr::ALL {
        if attr == KnownAttr::SpecVersion {
            continue;
        }
        if let Some(value) = view.known(attr) {
            member(out, attr.name_in(version));
            json_string(out, value);
        }
    }
    for (name, value) in opts.extensions(view) {
        member(out, name);
        match value {
            AttrValue::Str(s) => json_string(out, s),
            AttrValue::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes()),
            AttrValue::Bool(b) => out.extend_from_slice(if b { b"true" } else { b"false" }),
        }
    }
    let base64_member = |out: &mut Vec<u8>, b64: &str| match version {
        SpecVersion::V10 => {
            member(out, "data_base64");
            json_string(out, b64);
        }
        SpecVersion::V03 => {
            member(out, "datacontentencoding");
            json_string(out, "base64");
            member(out, "data");
            json_string(out, b64);
        }
    };
    match view.data() {
        Data::None => {}
        Data::Json(bytes) => {
            member(out, "data");
            out.extend_from_slice(bytes);
        }
        Data::Text(s) => {
            member(out, "data");
            json_string(out, s);
        }
        Data::Base64(s) => base64_member(out, s),
        Data::Binary(bytes) => {
            let ct = view.datacontenttype();
            if ct.is_some_and(is_json_media_type) && is_json(bytes) {
                member(out, "data");
                out.extend_from_slice(bytes);
            } else if let (Some(ct), Ok(text)) = (ct, std::str::from_utf8(bytes)) {
                // Not for a JSON type whose bytes are not JSON: `data` would then hold a JSON
                // string, which a receiver reads as the data `"..."`, quotes and escapes
                // included. Base64 keeps the bytes.
                if is_text_media_type(ct) && !is_json_media_type(ct) {
                    member(out, "data");
                    json_string(out, text);
                } else {
                    base64_member(out, &base64_encode(bytes));
                }
            } else {
                base64_member(out, &base64_encode(bytes));
            }
        }
    }
    out.push(b'}');
}

fn member(out: &mut Vec<u8>, name: &str) {
    out.push(b',');
    json_string(out, name);
    out.push(b':');
}

fn json_string(out: &mut Vec<u8>, s: &str) {
    // Most attribute values need no escaping: copied as they are.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
        return;
    }
    // Writing to a Vec cannot fail, and a &str always serializes.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Whether `bytes` are JSON that our own decoder reads, so that a structured event they are
/// copied into decodes again. Two `kafka_record` fuzz findings: `serde_json` (used here before)
/// does not check the UTF-8 of strings it skips, and it reads integers beyond 64 bits, which
/// the decoder's parser (simd-json) refuses, as RFC 8259 §9 allows; either way the structured
/// event did not decode. Such data goes out as `data_base64` instead.
fn is_json(bytes: &[u8]) -> bool {
    let mut copy = bytes.to_vec();
    simd_json::to_tape(&mut copy).is_ok()
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Text media types whose bodies can travel as a JSON string: `text/*`, XML, or any type with a
/// `charset` parameter.
fn is_text_media_type(ct: &str) -> bool {
    let lower = ct.to_ascii_lowercase();
    let essence = lower.split(';').next().unwrap_or("").trim();
    essence.starts_with("text/")
        || essence.ends_with("/xml")
        || essence.ends_with("+xml")
        || lower.contains("charset=")
}

/// Whether binary mode can carry `view`: not when its `datacontenttype` would read as a
/// CloudEvents format (the HTTP and Kafka bindings detect the mode from the content type).
pub(crate) fn binary_mode_carries(view: &EventView<'_>) -> bool {
    ContentMode::detect(view.datacontenttype().map(str::as_bytes)) == ContentMode::Binary
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{DecodeLimits, decode_binary, decode_structured};

    /// An event whose `datacontenttype` is a CloudEvents format goes out in structured mode,
    /// so that the receiver reads the event and not its data (found by the `kafka_record`
    /// fuzz target: before, the receiver read the data as the event, or refused it).
    #[test]
    fn binary_mode_falls_back_to_structured_for_cloudevents_content_types() {
        let limits = DecodeLimits::default();
        for ct in [
            "application/cloudevents+json",
            "application/cloudevents-batch+json",
            "Application/CloudEvents+avro",
        ] {
            let body = format!(
                r#"{{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"{ct}","data_base64":"e25vdCBqc29u"}}"#
            );
            let batch = decode_structured(Bytes::from(body), &limits).unwrap();
            let view = batch.get(0).unwrap();
            let (headers, body) = encode_binary(&view, &EncodeOptions::default());
            assert_eq!(headers["content-type"], "application/cloudevents+json");
            assert!(headers.get("ce-id").is_none());
            assert!(decode_binary(&headers, body.clone(), &limits).is_err());
            let again = decode_structured(body, &limits).unwrap();
            let view2 = again.get(0).unwrap();
            assert_eq!(view2.id(), "1");
            assert_eq!(view2.datacontenttype(), Some(ct));
            assert_eq!(&*view2.data().to_bytes(), b"{not json");
        }
    }

    /// Written member by member (an extension is left out), attribute values are copied as
    /// they are unless they need escaping; either way they decode back to themselves.
    #[test]
    fn attribute_strings_are_escaped_only_when_they_must_be() {
        let limits = DecodeLimits::default();
        let body = r#"[{"specversion":"1.0","id":"plain","source":"/s","type":"t","subject":"caf\u00e9 \"quoted\" back\\slash","xname":"émoji 🐟","drop":1},{"specversion":"1.0","id":"2","source":"/s","type":"t","drop":1}]"#;
        let batch = crate::event::decode_batched(Bytes::from(body), &limits)
            .unwrap()
            .batch;
        let opts = EncodeOptions {
            skip: &["drop"],
            add: &[],
        };
        let json = encode_batched(batch.iter(), &opts);
        let text = std::str::from_utf8(&json).unwrap();
        assert!(text.contains(r#""id":"plain""#), "{text}");
        assert!(
            text.contains(r#""subject":"café \"quoted\" back\\slash""#),
            "{text}"
        );
        assert!(text.contains(r#""xname":"émoji 🐟""#), "{text}");
        assert!(!text.contains("drop"), "{text}");
        let again = crate::event::decode_batched(json, &limits).unwrap().batch;
        assert_eq!(again.len(), 2);
        let (a, b) = (batch.get(0).unwrap(), again.get(0).unwrap());
        assert_eq!(a.subject(), Some("café \"quoted\" back\\slash"));
        assert_eq!(a.subject(), b.subject());
        assert!(matches!(
            b.extension("xname"),
            Some(AttrValue::Str("émoji 🐟"))
        ));
        assert_eq!(again.get(1).unwrap().id(), "2");
    }

    /// An event received as JSON goes out as it came, unless an extension is added or left
    /// out; then it is written member by member, and both decode to the same event.
    #[test]
    fn an_event_received_as_json_is_copied_unless_its_extensions_change() {
        let limits = DecodeLimits::default();
        let body = r#"[ {"specversion": "1.0", "id": "a", "source": "/s", "type": "t", "subject": null, "n": 7, "data": {"x": [1, 2]}} , {"specversion":"1.0","id":"b","source":"/s","type":"t","knativebrokerttl":5} ]"#;
        let batch = crate::event::decode_batched(Bytes::from(body), &limits)
            .unwrap()
            .batch;
        let (a, b) = (batch.get(0).unwrap(), batch.get(1).unwrap());
        let a_received = r#"{"specversion": "1.0", "id": "a", "source": "/s", "type": "t", "subject": null, "n": 7, "data": {"x": [1, 2]}}"#;
        assert_eq!(
            &encode_structured(&a, &EncodeOptions::default())[..],
            a_received.as_bytes()
        );
        // Leaving out an extension the event does not have changes nothing.
        let skip_ttl = EncodeOptions {
            skip: &["knativebrokerttl"],
            add: &[],
        };
        assert_eq!(&encode_structured(&a, &skip_ttl)[..], a_received.as_bytes());
        // One it has: written anew, without it.
        let b_out = encode_structured(&b, &skip_ttl);
        assert_eq!(
            &b_out[..],
            br#"{"specversion":"1.0","id":"b","source":"/s","type":"t"}"#
        );
        // Adding one: written anew, with it.
        let add = [("knativeerrorcode", AttrValue::Int(500))];
        let dead = EncodeOptions {
            skip: &[],
            add: &add,
        };
        let a_dead = encode_structured(&a, &dead);
        let again = decode_structured(a_dead, &limits).unwrap();
        let view = again.get(0).unwrap();
        assert!(matches!(view.extension("n"), Some(AttrValue::Int(7))));
        assert!(matches!(
            view.extension("knativeerrorcode"),
            Some(AttrValue::Int(500))
        ));
        assert_eq!(view.subject(), None);
        // A binary-mode event has no JSON of its own: written member by member.
        let headers = binary_headers("application/json");
        let binary = decode_binary(&headers, Bytes::from_static(b"{\"k\": 1}"), &limits).unwrap();
        assert_eq!(
            &encode_structured(&binary.get(0).unwrap(), &EncodeOptions::default())[..],
            br#"{"specversion":"1.0","id":"1","source":"/s","type":"t","datacontenttype":"application/json","data":{"k": 1}}"#
        );
    }

    /// Binary-mode headers of event `1` from `/s` of type `t`, with this content type.
    fn binary_headers(content_type: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("ce-specversion", HeaderValue::from_static("1.0"));
        headers.insert("ce-id", HeaderValue::from_static("1"));
        headers.insert("ce-source", HeaderValue::from_static("/s"));
        headers.insert("ce-type", HeaderValue::from_static("t"));
        headers.insert("content-type", HeaderValue::from_str(content_type).unwrap());
        headers
    }

    /// Binary data that is not JSON under a JSON content type with a charset (which makes
    /// the type "text") survives a structured re-encode byte for byte (found by the
    /// `kafka_record` fuzz target, through the dead letter of a structured record that is not
    /// JSON; the same happens to an HTTP binary-mode event delivered in structured mode).
    #[test]
    fn non_json_data_under_a_json_type_with_a_charset_keeps_its_bytes() {
        let limits = DecodeLimits::default();
        for ct in [
            "application/json; charset=utf-8",
            "application/cloudevents+json; charset=utf-8",
            "text/json",
        ] {
            let headers = binary_headers(ct);
            let body = Bytes::from_static(b"{not json \" \x1d");
            let batch = decode_binary(&headers, body.clone(), &limits).unwrap();
            let view = batch.get(0).unwrap();
            let json = encode_structured(&view, &EncodeOptions::default());
            let again = decode_structured(json, &limits).unwrap();
            assert_eq!(again.get(0).unwrap().data().to_bytes(), &body[..], "{ct}");
        }
        // Text types and JSON that is JSON stay readable.
        let headers = binary_headers("text/plain; charset=utf-8");
        let batch = decode_binary(&headers, Bytes::from_static(b"hi"), &limits).unwrap();
        let json = encode_structured(&batch.get(0).unwrap(), &EncodeOptions::default());
        assert!(
            std::str::from_utf8(&json)
                .unwrap()
                .contains(r#""data":"hi""#)
        );
    }

    /// Binary data that is JSON but for invalid UTF-8 inside a string goes out as base64, and
    /// the structured event decodes (found by the `kafka_record` fuzz target, through the dead
    /// letter of a structured record with such a byte; the same happened to an HTTP binary-mode
    /// `application/json` event delivered in structured mode: the subscriber got invalid JSON).
    #[test]
    fn json_data_with_invalid_utf8_goes_out_as_base64() {
        let limits = DecodeLimits::default();
        let headers = binary_headers("application/json");
        let body = Bytes::from_static(b"{\"a\":\"\xff\x9a\"}");
        let batch = decode_binary(&headers, body.clone(), &limits).unwrap();
        let json = encode_structured(&batch.get(0).unwrap(), &EncodeOptions::default());
        assert!(std::str::from_utf8(&json).is_ok());
        let again = decode_structured(json, &limits).unwrap();
        assert_eq!(again.get(0).unwrap().data().to_bytes(), &body[..]);
    }

    /// JSON data with an integer beyond 64 bits, which `serde_json` reads and the decoder does
    /// not, goes out as base64 (a `kafka_record` fuzz finding).
    #[test]
    fn json_data_with_a_huge_integer_goes_out_as_base64() {
        let limits = DecodeLimits::default();
        let headers = binary_headers("application/json");
        let body = Bytes::from_static(b"{\"n\": 77777777777777777777777}");
        let batch = decode_binary(&headers, body.clone(), &limits).unwrap();
        let json = encode_structured(&batch.get(0).unwrap(), &EncodeOptions::default());
        let again = decode_structured(json, &limits).unwrap();
        assert_eq!(again.get(0).unwrap().data().to_bytes(), &body[..]);
        // JSON the decoder reads stays inline.
        let body = Bytes::from_static(b"{\"n\": [1, 2.5, \"x\"]}");
        let batch = decode_binary(&headers, body, &limits).unwrap();
        let json = encode_structured(&batch.get(0).unwrap(), &EncodeOptions::default());
        assert!(
            std::str::from_utf8(&json)
                .unwrap()
                .contains(r#""data":{"n": [1, 2.5, "x"]}"#)
        );
    }
}
