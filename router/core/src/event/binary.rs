//! Binary content mode: attributes in `ce-*` headers, data in the body (HTTP binding §3.1).
//!
//! Header values are decoded into one text buffer: first the RFC 7230 quoted-string form is
//! unwrapped (legacy senders), then exactly one round of percent-decoding, then the result must
//! be UTF-8. `Content-Type` becomes `datacontenttype`. The body is kept as it is, shared, and is
//! the event's data.

use bytes::Bytes;
use http::HeaderMap;
use smallvec::SmallVec;

use super::DecodeLimits;
use super::attr::{KnownAttr, SpecVersion, is_valid_attribute_name};
use super::batch::{DataSpan, EventBatch, Ext, ExtValue, Slot, Span};
use super::error::{DecodeError, DecodeErrorKind};
use super::validate::validate_event;

const PREFIX: &str = "ce-";

/// How header values are written on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ValueEncoding {
    /// HTTP: an optional RFC 7230 quoted-string, then percent-encoding (HTTP binding §3.1.3.2).
    Http,
    /// Kafka: the value's UTF-8 bytes as they are (Kafka binding §3.2.3).
    Raw,
}

/// Decodes a binary-mode message from its headers and body.
///
/// A `ce-datacontenttype` header is a sender error when `Content-Type` is also present (the
/// binding says it MUST NOT be sent); alone, it is accepted as the content type.
pub fn decode_binary(
    headers: &HeaderMap,
    body: Bytes,
    limits: &DecodeLimits,
) -> Result<EventBatch, DecodeError> {
    let fields: SmallVec<[(&str, &[u8]); 16]> = headers
        .iter()
        .filter_map(|(name, value)| {
            let attr = name.as_str().strip_prefix(PREFIX)?;
            Some((attr, value.as_bytes()))
        })
        .collect();
    let content_type = headers
        .get(http::header::CONTENT_TYPE)
        .map(|v| v.as_bytes());
    decode_fields(
        &fields,
        content_type,
        body,
        limits,
        ValueEncoding::Http,
        PREFIX,
    )
}

/// Decodes a binary-mode event from its attributes, already stripped of their header prefix
/// (`ce-` or `ce_`), the content type and the data. Header sizes count the prefix, as they
/// did on the wire.
pub(crate) fn decode_fields(
    fields: &[(&str, &[u8])],
    content_type: Option<&[u8]>,
    body: Bytes,
    limits: &DecodeLimits,
    encoding: ValueEncoding,
    prefix: &str,
) -> Result<EventBatch, DecodeError> {
    let err = |kind| DecodeError::body(kind);
    let version = match fields.iter().find(|(name, _)| *name == "specversion") {
        None => return Err(err(DecodeErrorKind::NotACloudEvent)),
        Some((_, v)) => match *v {
            b"1.0" => SpecVersion::V10,
            b"0.3" => SpecVersion::V03,
            other => {
                return Err(err(DecodeErrorKind::UnsupportedSpecVersion(
                    String::from_utf8_lossy(other).into_owned(),
                )));
            }
        },
    };

    let header_bytes: usize = fields
        .iter()
        .map(|(name, value)| prefix.len() + name.len() + value.len())
        .sum();
    let size = header_bytes + body.len();
    if size > limits.max_event_bytes {
        return Err(err(DecodeErrorKind::EventTooLarge {
            size,
            limit: limits.max_event_bytes,
        }));
    }
    if size > u32::MAX as usize {
        return Err(err(DecodeErrorKind::BodyTooLarge(size)));
    }

    let mut text: Vec<u8> = Vec::with_capacity(header_bytes + content_type.map_or(0, <[u8]>::len));
    let mut slot = Slot::new(version, 0);
    let mut exts: Vec<Ext> = Vec::with_capacity(fields.len().saturating_sub(4));
    for &(attr, value) in fields {
        if attr == "specversion" {
            continue;
        }
        if !is_valid_attribute_name(attr.as_bytes()) {
            return Err(err(DecodeErrorKind::InvalidAttributeName(attr.to_owned())));
        }
        let name_span = push(&mut text, attr.as_bytes());
        let decoded = match encoding {
            ValueEncoding::Http => decode_value(&mut text, value),
            ValueEncoding::Raw => raw_value(&mut text, value),
        };
        let value_span = decoded.map_err(|e| {
            let header = format!("{prefix}{attr}");
            err(match e {
                ValueError::QuotedString => DecodeErrorKind::InvalidQuotedString { header },
                ValueError::PercentEncoding => DecodeErrorKind::InvalidPercentEncoding { header },
                ValueError::Utf8 => DecodeErrorKind::InvalidUtf8 { header },
            })
        })?;
        match KnownAttr::from_name_in(attr, version) {
            Some(KnownAttr::DataContentType) if content_type.is_some() => {
                return Err(err(DecodeErrorKind::DataContentTypeHeader));
            }
            Some(k) => {
                if slot.known[k as usize].replace(value_span).is_some() {
                    return Err(err(DecodeErrorKind::DuplicateAttribute(attr.to_owned())));
                }
            }
            None => {
                if exts
                    .iter()
                    .any(|e| text[e.name.range()] == *attr.as_bytes())
                {
                    return Err(err(DecodeErrorKind::DuplicateAttribute(attr.to_owned())));
                }
                exts.push(Ext {
                    name: name_span,
                    value: ExtValue::Str(value_span),
                });
            }
        }
    }
    if let Some(ct) = content_type {
        // Header values are visible ASCII plus obs-text; a content type must be UTF-8 to be an
        // attribute string.
        if std::str::from_utf8(ct).is_err() {
            return Err(err(DecodeErrorKind::InvalidUtf8 {
                header: "content-type".into(),
            }));
        }
        slot.known[KnownAttr::DataContentType as usize] = Some(push(&mut text, ct));
    }
    slot.ext_len = exts.len() as u32;
    slot.wire_size = size as u32;
    if !body.is_empty() {
        slot.data = DataSpan::Binary(Span::new(0, body.len()));
    }
    // Decoding only shrinks values; fill the spare capacity so that freezing the buffer takes
    // it over as it is, without a second allocation.
    text.resize(text.capacity(), 0);
    let text = Bytes::from(text);
    let mut known = [None; KnownAttr::COUNT];
    for (value, span) in known.iter_mut().zip(slot.known.iter()) {
        *value = span.map(|s| super::text::str_at(&text, s));
    }
    validate_event(version, &known).map_err(err)?;
    Ok(EventBatch {
        raw: body,
        text,
        slots: vec![slot],
        exts,
        arrival: None,
    })
}

/// Appends a raw value to `text`, checking that it is UTF-8.
fn raw_value(text: &mut Vec<u8>, value: &[u8]) -> Result<Span, ValueError> {
    if std::str::from_utf8(value).is_err() {
        return Err(ValueError::Utf8);
    }
    Ok(push(text, value))
}

fn push(text: &mut Vec<u8>, bytes: &[u8]) -> Span {
    let start = text.len();
    text.extend_from_slice(bytes);
    Span::new(start, bytes.len())
}

/// How a header value failed to decode; the caller adds the header name.
enum ValueError {
    QuotedString,
    PercentEncoding,
    Utf8,
}

/// Unwraps a quoted-string, percent-decodes, checks UTF-8; appends the result to `text`.
fn decode_value(text: &mut Vec<u8>, value: &[u8]) -> Result<Span, ValueError> {
    let start = text.len();
    let unquoted;
    let value = if value.first() == Some(&b'"') {
        unquoted = unquote(value).ok_or(ValueError::QuotedString)?;
        &unquoted[..]
    } else {
        value
    };
    let hex = |c: Option<&u8>| c.and_then(|&c| (c as char).to_digit(16));
    let mut i = 0;
    while i < value.len() {
        if value[i] == b'%' {
            let (Some(h), Some(l)) = (hex(value.get(i + 1)), hex(value.get(i + 2))) else {
                text.truncate(start);
                return Err(ValueError::PercentEncoding);
            };
            text.push((h * 16 + l) as u8);
            i += 3;
        } else {
            // Copy the run up to the next '%' in one go.
            let run = memchr::memchr(b'%', &value[i..]).unwrap_or(value.len() - i);
            text.extend_from_slice(&value[i..i + run]);
            i += run;
        }
    }
    if std::str::from_utf8(&text[start..]).is_err() {
        text.truncate(start);
        return Err(ValueError::Utf8);
    }
    Ok(Span::new(start, text.len() - start))
}

/// RFC 7230 §3.2.6: `DQUOTE *( qdtext / quoted-pair ) DQUOTE`.
fn unquote(value: &[u8]) -> Option<Vec<u8>> {
    if value.len() < 2 || value.last() != Some(&b'"') {
        return None;
    }
    let inner = &value[1..value.len() - 1];
    let mut out = Vec::with_capacity(inner.len());
    let mut escaped = false;
    for &b in inner {
        if escaped {
            out.push(b);
            escaped = false;
        } else if b == b'\\' {
            escaped = true;
        } else if b == b'"' {
            return None;
        } else {
            out.push(b);
        }
    }
    (!escaped).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AttrValue, Data};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn base() -> Vec<(&'static str, &'static str)> {
        vec![
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-source", "/s"),
            ("ce-type", "t"),
        ]
    }

    #[test]
    fn percent_and_quoted_string_decoding() {
        let mut h = base();
        h.push(("ce-a", "Euro%20%E2%82%AC%20%F0%9F%98%80"));
        h.push(("ce-b", "\"quoted \\\"x\\\" %41\""));
        h.push(("ce-c", "lower%c3%a9"));
        h.push(("ce-d", "unneeded%41"));
        let b = decode_binary(&headers(&h), Bytes::new(), &DecodeLimits::default()).unwrap();
        let e = b.get(0).unwrap();
        assert_eq!(e.extension("a"), Some(AttrValue::Str("Euro € 😀")));
        assert_eq!(e.extension("b"), Some(AttrValue::Str("quoted \"x\" A")));
        assert_eq!(e.extension("c"), Some(AttrValue::Str("loweré")));
        assert_eq!(e.extension("d"), Some(AttrValue::Str("unneededA")));
        assert_eq!(e.data(), Data::None);
    }

    #[test]
    fn rejects_bad_headers() {
        type Check = fn(&DecodeErrorKind) -> bool;
        let cases: &[(&str, &str, Check)] = &[
            ("ce-a", "%C0%A0", |k| {
                matches!(k, DecodeErrorKind::InvalidUtf8 { .. })
            }),
            ("ce-a", "%zz", |k| {
                matches!(k, DecodeErrorKind::InvalidPercentEncoding { .. })
            }),
            ("ce-a", "%4", |k| {
                matches!(k, DecodeErrorKind::InvalidPercentEncoding { .. })
            }),
            ("ce-a", "\"open", |k| {
                matches!(k, DecodeErrorKind::InvalidQuotedString { .. })
            }),
            ("ce-subject", "%01", |k| {
                matches!(k, DecodeErrorKind::DisallowedCharacter { .. })
            }),
            ("ce-a_b", "x", |k| {
                matches!(k, DecodeErrorKind::InvalidAttributeName(_))
            }),
            ("ce-time", "noon", |k| {
                matches!(k, DecodeErrorKind::InvalidTimestamp { .. })
            }),
            ("ce-id", "2", |k| {
                matches!(k, DecodeErrorKind::DuplicateAttribute(_))
            }),
        ];
        for (name, value, check) in cases {
            let mut h = base();
            h.push((name, value));
            let e =
                decode_binary(&headers(&h), Bytes::new(), &DecodeLimits::default()).unwrap_err();
            assert!(check(&e.kind), "{name}: {value}: {e}");
        }
    }

    #[test]
    fn content_type_and_body() {
        let mut h = base();
        h.push(("content-type", "application/json"));
        let b = decode_binary(
            &headers(&h),
            Bytes::from_static(b"{\"a\":1}"),
            &DecodeLimits::default(),
        )
        .unwrap();
        let e = b.get(0).unwrap();
        assert_eq!(e.datacontenttype(), Some("application/json"));
        assert_eq!(e.data(), Data::Binary(b"{\"a\":1}"));
        h.push(("ce-datacontenttype", "text/plain"));
        let err = decode_binary(&headers(&h), Bytes::new(), &DecodeLimits::default()).unwrap_err();
        assert_eq!(err.kind, DecodeErrorKind::DataContentTypeHeader);
    }

    #[test]
    fn missing_and_unsupported() {
        let h = headers(&[("ce-id", "1")]);
        assert_eq!(
            decode_binary(&h, Bytes::new(), &DecodeLimits::default())
                .unwrap_err()
                .kind,
            DecodeErrorKind::NotACloudEvent
        );
        let h = headers(&[("ce-specversion", "2.0")]);
        assert!(matches!(
            decode_binary(&h, Bytes::new(), &DecodeLimits::default())
                .unwrap_err()
                .kind,
            DecodeErrorKind::UnsupportedSpecVersion(_)
        ));
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-source", "/s"),
        ]);
        assert_eq!(
            decode_binary(&h, Bytes::new(), &DecodeLimits::default())
                .unwrap_err()
                .kind,
            DecodeErrorKind::MissingAttribute("type")
        );
    }

    #[test]
    fn size_limit_counts_headers_and_body() {
        let limits = DecodeLimits {
            max_event_bytes: 100,
            ..DecodeLimits::default()
        };
        let e =
            decode_binary(&headers(&base()), Bytes::from(vec![b'x'; 100]), &limits).unwrap_err();
        assert!(e.is_too_large());
    }
}
