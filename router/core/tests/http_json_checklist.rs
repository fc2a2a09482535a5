//! One test per rule of `shared/data/cloudevents/http-json-checklist.md` (HTTP protocol binding
//! and JSON event format). Test names follow the checklist's sections.
#![allow(clippy::unwrap_used)] // Tests fail loudly on unexpected errors.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use triggerfish_core::event::{
    AttrValue, ContentMode, Data, DecodeErrorKind, DecodeLimits, EncodeOptions, EventBatch,
    KnownAttr, SpecVersion, decode_batched, decode_binary, decode_structured, encode_batched,
    encode_binary, encode_structured,
};

fn limits() -> DecodeLimits {
    DecodeLimits::default()
}

fn structured(json: &str) -> Result<EventBatch, DecodeErrorKind> {
    decode_structured(Bytes::copy_from_slice(json.as_bytes()), &limits()).map_err(|e| e.kind)
}

fn binary(pairs: &[(&str, &str)], body: &[u8]) -> Result<EventBatch, DecodeErrorKind> {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    decode_binary(&h, Bytes::copy_from_slice(body), &limits()).map_err(|e| e.kind)
}

const MIN: &str = r#""specversion":"1.0","id":"1","source":"/s","type":"t""#;
const MIN_HEADERS: [(&str, &str); 4] = [
    ("ce-specversion", "1.0"),
    ("ce-id", "1"),
    ("ce-source", "/s"),
    ("ce-type", "t"),
];

fn with(extra: &str) -> String {
    format!("{{{MIN}{extra}}}")
}

// ## Mode detection (HTTP §3)

#[test]
fn mode_detection_batch_prefix_first_case_insensitive() {
    assert_eq!(
        ContentMode::detect(Some(b"application/cloudevents-batch+json")),
        ContentMode::Batched
    );
    assert_eq!(
        ContentMode::detect(Some(b"APPLICATION/CLOUDEVENTS-BATCH+JSON")),
        ContentMode::Batched
    );
    assert_eq!(
        ContentMode::detect(Some(b"application/CloudEvents+json; charset=UTF-8")),
        ContentMode::Structured
    );
    assert_eq!(
        ContentMode::detect(Some(b"text/plain")),
        ContentMode::Binary
    );
    assert_eq!(ContentMode::detect(None), ContentMode::Binary);
}

#[test]
fn mode_detection_unknown_structured_format_is_reported() {
    // The binding says a receiver MAY forward an unknown format as binary; the router answers
    // 415 instead, so a producer learns that its format is not understood.
    assert_eq!(
        ContentMode::detect(Some(b"application/cloudevents+avro")),
        ContentMode::UnsupportedFormat
    );
}

#[test]
fn mode_detection_both_modes_supported_for_the_same_event() {
    let s = structured(&with(r#","data":{"a":1}"#)).unwrap();
    let b = binary(
        &[
            MIN_HEADERS[0],
            MIN_HEADERS[1],
            MIN_HEADERS[2],
            MIN_HEADERS[3],
            ("content-type", "application/json"),
        ],
        br#"{"a":1}"#,
    )
    .unwrap();
    let (s, b) = (s.get(0).unwrap(), b.get(0).unwrap());
    assert_eq!((s.id(), s.source(), s.ty()), (b.id(), b.source(), b.ty()));
    assert_eq!(s.data().to_bytes(), b.data().to_bytes());
}

// ## Binary mode (HTTP §3.1)

#[test]
fn binary_content_type_is_datacontenttype_and_back() {
    let b = binary(
        &[
            MIN_HEADERS[0],
            MIN_HEADERS[1],
            MIN_HEADERS[2],
            MIN_HEADERS[3],
            ("content-type", "text/plain; charset=utf-8"),
        ],
        b"hi",
    )
    .unwrap();
    let v = b.get(0).unwrap();
    assert_eq!(v.datacontenttype(), Some("text/plain; charset=utf-8"));
    let (headers, _) = encode_binary(&v, &EncodeOptions::default());
    assert_eq!(
        headers.get("content-type").unwrap(),
        "text/plain; charset=utf-8"
    );
    assert!(
        headers.get("ce-datacontenttype").is_none(),
        "MUST NOT send ce-datacontenttype"
    );
}

#[test]
fn binary_no_datacontenttype_means_no_content_type_header() {
    let v = structured(&with(r#","data_base64":"AAE=""#)).unwrap();
    let (headers, body) = encode_binary(&v.get(0).unwrap(), &EncodeOptions::default());
    assert!(headers.get("content-type").is_none());
    assert_eq!(&body[..], &[0u8, 1]);
}

#[test]
fn binary_datacontenttype_header_conflict_is_rejected() {
    let e = binary(
        &[
            MIN_HEADERS[0],
            MIN_HEADERS[1],
            MIN_HEADERS[2],
            MIN_HEADERS[3],
            ("content-type", "a/b"),
            ("ce-datacontenttype", "c/d"),
        ],
        b"",
    )
    .unwrap_err();
    assert_eq!(e, DecodeErrorKind::DataContentTypeHeader);
}

#[test]
fn binary_body_is_data_as_is() {
    let body = [0u8, 159, 146, 150, b'{'];
    let b = binary(
        &[
            MIN_HEADERS[0],
            MIN_HEADERS[1],
            MIN_HEADERS[2],
            MIN_HEADERS[3],
            ("content-type", "application/octet-stream"),
        ],
        &body,
    )
    .unwrap();
    let v = b.get(0).unwrap();
    assert_eq!(v.data(), Data::Binary(&body));
    let (_, out) = encode_binary(&v, &EncodeOptions::default());
    assert_eq!(&out[..], &body);
}

#[test]
fn binary_every_attribute_is_a_ce_header_names_case_insensitive() {
    let b = binary(
        &[
            ("CE-SpecVersion", "1.0"),
            ("Ce-Id", "1"),
            ("CE-SOURCE", "/s"),
            ("ce-type", "t"),
            ("Ce-Myext", "v"),
        ],
        b"",
    )
    .unwrap();
    let v = b.get(0).unwrap();
    assert_eq!(v.extension("myext"), Some(AttrValue::Str("v")));
    let (headers, _) = encode_binary(&v, &EncodeOptions::default());
    for name in [
        "ce-specversion",
        "ce-id",
        "ce-source",
        "ce-type",
        "ce-myext",
    ] {
        assert!(headers.contains_key(name), "{name}");
    }
}

#[test]
fn binary_header_values_are_canonical_strings() {
    let v = structured(&with(r#","flag":true,"count":-7"#)).unwrap();
    let (headers, _) = encode_binary(&v.get(0).unwrap(), &EncodeOptions::default());
    assert_eq!(headers.get("ce-flag").unwrap(), "true");
    assert_eq!(headers.get("ce-count").unwrap(), "-7");
}

#[test]
fn binary_encode_percent_encodes_exactly_the_required_characters() {
    let v = structured(&with(
        r#","x":"Euro € 😀","y":"a\"b%c~'()!*","z":"tab\there""#,
    ))
    .unwrap();
    let (h, _) = encode_binary(&v.get(0).unwrap(), &EncodeOptions::default());
    assert_eq!(h.get("ce-x").unwrap(), "Euro%20%E2%82%AC%20%F0%9F%98%80");
    assert_eq!(
        h.get("ce-y").unwrap(),
        "a%22b%25c~'()!*",
        "only space, quote, percent and non-printables"
    );
    assert_eq!(
        h.get("ce-z").unwrap(),
        "tab%09here",
        "controls are encoded, upper-case hex"
    );
}

#[test]
fn binary_decode_quoted_string_then_one_round_of_percent_decoding() {
    let b = binary(
        &[
            MIN_HEADERS[0],
            MIN_HEADERS[1],
            MIN_HEADERS[2],
            MIN_HEADERS[3],
            ("ce-a", "\"a\\\"b%20\""),
            ("ce-b", "%2541"),
            ("ce-c", "%e2%82%ac"),
            ("ce-d", "%61"),
        ],
        b"",
    )
    .unwrap();
    let v = b.get(0).unwrap();
    assert_eq!(v.extension("a"), Some(AttrValue::Str("a\"b ")));
    assert_eq!(
        v.extension("b"),
        Some(AttrValue::Str("%41")),
        "exactly one round"
    );
    assert_eq!(
        v.extension("c"),
        Some(AttrValue::Str("€")),
        "lower-case hex accepted"
    );
    assert_eq!(
        v.extension("d"),
        Some(AttrValue::Str("a")),
        "unnecessary encoding accepted"
    );
}

#[test]
fn binary_decode_rejects_invalid_utf8_such_as_overlong() {
    let e = binary(
        &[
            MIN_HEADERS[0],
            MIN_HEADERS[1],
            MIN_HEADERS[2],
            MIN_HEADERS[3],
            ("ce-a", "%C0%A0"),
        ],
        b"",
    )
    .unwrap_err();
    assert_eq!(
        e,
        DecodeErrorKind::InvalidUtf8 {
            header: "ce-a".into()
        }
    );
}

// ## Structured mode (HTTP §3.2, JSON §3)

#[test]
fn structured_content_type_with_parameters() {
    assert_eq!(
        ContentMode::detect(Some(b"application/cloudevents+json; charset=UTF-8")),
        ContentMode::Structured
    );
    let v = structured(&with("")).unwrap();
    let body = encode_structured(&v.get(0).unwrap(), &EncodeOptions::default());
    assert!(body.starts_with(b"{\"specversion\":\"1.0\""));
}

#[test]
fn structured_attributes_come_from_the_body() {
    // The structured decoder never looks at ce-* headers: the body is the event.
    let v = structured(&with(r#","subject":"from-body""#)).unwrap();
    assert_eq!(v.get(0).unwrap().subject(), Some("from-body"));
}

#[test]
fn structured_null_is_absent() {
    let v = structured(&with(
        r#","subject":null,"time":null,"ext":null,"data":null"#,
    ))
    .unwrap();
    let v = v.get(0).unwrap();
    assert_eq!(v.subject(), None);
    assert_eq!(v.time(), None);
    assert_eq!(v.extension("ext"), None);
    // Unlike attributes, `data: null` is an explicit null payload (JSON §3.1.1).
    assert_eq!(v.data(), Data::Json(b"null"));
    let v = structured(&with(r#","data_base64":null"#)).unwrap();
    assert_eq!(v.get(0).unwrap().data(), Data::None);
}

#[test]
fn structured_extension_types() {
    let v = structured(&with(
        r#","b":false,"i":2147483647,"n":-2147483648,"s":"x""#,
    ))
    .unwrap();
    let v = v.get(0).unwrap();
    assert_eq!(v.extension("b"), Some(AttrValue::Bool(false)));
    assert_eq!(v.extension("i"), Some(AttrValue::Int(i32::MAX)));
    assert_eq!(v.extension("n"), Some(AttrValue::Int(i32::MIN)));
    assert_eq!(v.extension("s"), Some(AttrValue::Str("x")));
    assert!(matches!(
        structured(&with(r#","f":1.5"#)),
        Err(DecodeErrorKind::InvalidType { .. })
    ));
    assert!(matches!(
        structured(&with(r#","o":{"a":1}"#)),
        Err(DecodeErrorKind::InvalidType { .. })
    ));
    assert!(matches!(
        structured(&with(r#","a":[1]"#)),
        Err(DecodeErrorKind::InvalidType { .. })
    ));
    assert!(matches!(
        structured(r#"{"specversion":"1.0","id":1,"source":"/s","type":"t"}"#),
        Err(DecodeErrorKind::InvalidType { .. })
    ));
}

#[test]
fn structured_data_serialising() {
    // Binary data -> data_base64, datacontenttype kept when given.
    let b = binary(
        &[
            MIN_HEADERS[0],
            MIN_HEADERS[1],
            MIN_HEADERS[2],
            MIN_HEADERS[3],
            ("content-type", "application/octet-stream"),
        ],
        &[0xff, 0x00],
    )
    .unwrap();
    let out = encode_structured(&b.get(0).unwrap(), &EncodeOptions::default());
    let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(json["data_base64"], "/wA=");
    assert_eq!(json["datacontenttype"], "application/octet-stream");
    assert!(json.get("data").is_none());
    // JSON content type -> the JSON value itself, not a string holding JSON.
    let b = binary(
        &[
            MIN_HEADERS[0],
            MIN_HEADERS[1],
            MIN_HEADERS[2],
            MIN_HEADERS[3],
            ("content-type", "application/vnd.x+json"),
        ],
        br#"{"k":[1,2]}"#,
    )
    .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&encode_structured(
        &b.get(0).unwrap(),
        &EncodeOptions::default(),
    ))
    .unwrap();
    assert_eq!(json["data"], serde_json::json!({"k":[1,2]}));
    // Otherwise -> a string.
    let b = binary(
        &[
            MIN_HEADERS[0],
            MIN_HEADERS[1],
            MIN_HEADERS[2],
            MIN_HEADERS[3],
            ("content-type", "text/plain"),
        ],
        b"plain \"text\"",
    )
    .unwrap();
    let json: serde_json::Value = serde_json::from_slice(&encode_structured(
        &b.get(0).unwrap(),
        &EncodeOptions::default(),
    ))
    .unwrap();
    assert_eq!(json["data"], "plain \"text\"");
}

#[test]
fn structured_data_parsing() {
    // data_base64 decodes to bytes; with no datacontenttype it is not assumed to be JSON.
    let v = structured(&with(r#","data_base64":"eyJhIjoxfQ==""#)).unwrap();
    assert_eq!(v.get(0).unwrap().data().to_bytes().as_ref(), br#"{"a":1}"#);
    assert!(matches!(v.get(0).unwrap().data(), Data::Base64(_)));
    // A JSON string under a JSON type stays a string (never re-parsed).
    let v = structured(&with(
        r#","datacontenttype":"application/json","data":"{\"a\":1}""#,
    ))
    .unwrap();
    assert_eq!(v.get(0).unwrap().data(), Data::Json(br#""{\"a\":1}""#));
    // A non-JSON type with a string: the string's content.
    let v = structured(&with(
        r#","datacontenttype":"text/plain","data":"line\nbreak""#,
    ))
    .unwrap();
    assert_eq!(v.get(0).unwrap().data(), Data::Text("line\nbreak"));
    // A non-JSON type with a non-string: accepted as a JSON value (the spec says MAY reject).
    let v = structured(&with(r#","datacontenttype":"text/plain","data":[1]"#)).unwrap();
    assert_eq!(v.get(0).unwrap().data(), Data::Json(b"[1]"));
    // No datacontenttype: JSON, and application/json is stated when re-encoding to binary.
    let v = structured(&with(r#","data":{"x":"}]"}"#)).unwrap();
    let v = v.get(0).unwrap();
    assert_eq!(v.data(), Data::Json(br#"{"x":"}]"}"#));
    let (h, body) = encode_binary(&v, &EncodeOptions::default());
    assert_eq!(h.get("content-type").unwrap(), "application/json");
    assert_eq!(&body[..], br#"{"x":"}]"}"#);
}

#[test]
fn structured_data_and_data_base64_are_exclusive() {
    assert_eq!(
        structured(&with(r#","data":1,"data_base64":"AA==""#)).unwrap_err(),
        DecodeErrorKind::DataAndDataBase64
    );
    assert_eq!(
        structured(&with(r#","data_base64":"not base64!""#)).unwrap_err(),
        DecodeErrorKind::InvalidBase64("data_base64")
    );
}

// ## Batched mode (HTTP §3.3, JSON §4)

#[test]
fn batched_array_of_events_and_empty_array() {
    let body = format!("[{},{}]", with(r#","n":1"#), with(r#","n":2"#));
    let d = decode_batched(Bytes::from(body), &limits()).unwrap();
    assert!(d.rejected.is_empty());
    assert_eq!(d.batch.len(), 2);
    assert_eq!(
        d.batch.get(1).unwrap().extension("n"),
        Some(AttrValue::Int(2))
    );
    let d = decode_batched(Bytes::from_static(b"[]"), &limits()).unwrap();
    assert!(d.batch.is_empty() && d.rejected.is_empty());
    let back = encode_batched(d.batch.iter(), &EncodeOptions::default());
    assert_eq!(&back[..], b"[]");
}

#[test]
fn batched_mixed_specversions_are_accepted() {
    // v1.0.2 required one specversion per batch; 1.0.3 drops the sentence. We follow 1.0.3.
    let body = format!(
        r#"[{},{{"specversion":"0.3","id":"2","source":"/s","type":"t"}}]"#,
        with("")
    );
    let d = decode_batched(Bytes::from(body), &limits()).unwrap();
    assert_eq!(d.batch.get(1).unwrap().spec_version(), SpecVersion::V03);
}

#[test]
fn batched_errors_name_the_event_index() {
    let body = format!(
        r#"[{},{{"specversion":"1.0","id":"","source":"/s","type":"t"}},7,{}]"#,
        with(""),
        with("")
    );
    let d = decode_batched(Bytes::from(body), &limits()).unwrap();
    assert_eq!(d.batch.len(), 2);
    let msgs: Vec<String> = d.rejected.iter().map(ToString::to_string).collect();
    assert_eq!(
        msgs,
        [
            "event 1: attribute \"id\" must not be empty",
            "event 2: a structured-mode event must be a JSON object, found a number"
        ]
    );
    let e = decode_batched(Bytes::from_static(b"{}"), &limits()).unwrap_err();
    assert!(matches!(e.kind, DecodeErrorKind::NotAnArray { .. }));
}

// ## Attribute names and values (CORE)

#[test]
fn names_are_lowercase_alphanumeric_and_unique() {
    assert!(matches!(
        structured(&with(r#","Bad":"x""#)),
        Err(DecodeErrorKind::InvalidAttributeName(_))
    ));
    assert!(matches!(
        structured(&with(r#","a-b":"x""#)),
        Err(DecodeErrorKind::InvalidAttributeName(_))
    ));
    assert!(matches!(
        structured(&with(r#","":"x""#)),
        Err(DecodeErrorKind::InvalidAttributeName(_))
    ));
    assert!(
        structured(&with(r#","1abc":"x""#)).is_ok(),
        "digits first is only a SHOULD NOT"
    );
    assert_eq!(
        structured(&with(r#","id":"2""#)).unwrap_err(),
        DecodeErrorKind::DuplicateAttribute("id".into())
    );
    assert_eq!(
        structured(&with(r#","x":"1","x":"2""#)).unwrap_err(),
        DecodeErrorKind::DuplicateAttribute("x".into())
    );
}

#[test]
fn string_values_reject_controls_in_context_attributes() {
    assert_eq!(
        structured(&with(r#","subject":"a\u0007b""#)).unwrap_err(),
        DecodeErrorKind::DisallowedCharacter {
            attribute: "subject".into(),
            codepoint: 7
        }
    );
    assert!(matches!(
        structured(r#"{"specversion":"1.0","id":"1\u0085","source":"/s","type":"t"}"#),
        Err(DecodeErrorKind::DisallowedCharacter { .. })
    ));
    assert!(matches!(
        structured(r#"{"specversion":"1.0","id":"1","source":"/s","type":"\uFFFE"}"#),
        Err(DecodeErrorKind::DisallowedCharacter { .. })
    ));
}

#[test]
fn integer_range_is_32_bit() {
    assert_eq!(
        structured(&with(r#","big":2147483648"#)).unwrap_err(),
        DecodeErrorKind::IntegerOutOfRange("big".into())
    );
    assert_eq!(
        structured(&with(r#","small":-2147483649"#)).unwrap_err(),
        DecodeErrorKind::IntegerOutOfRange("small".into())
    );
}

#[test]
fn events_of_64_kib_are_accepted_and_the_limit_is_enforced() {
    let data = "x".repeat(64 * 1024);
    let ok = with(&format!(
        r#","datacontenttype":"text/plain","data":"{data}""#
    ));
    assert!(structured(&ok).is_ok());
    let small = DecodeLimits {
        max_event_bytes: 64 * 1024,
        ..DecodeLimits::default()
    };
    let e = decode_structured(Bytes::from(ok.clone()), &small).unwrap_err();
    assert!(e.is_too_large());
    let batch = format!("[{ok},{}]", with(""));
    let d = decode_batched(Bytes::from(batch), &small).unwrap();
    assert_eq!(d.batch.len(), 1);
    assert!(d.rejected[0].is_too_large() && d.rejected[0].index == Some(0));
}

// ## Required attributes and typed attributes (CORE "Context Attributes")

#[test]
fn required_attributes_and_types() {
    assert_eq!(
        structured(r#"{"id":"1","source":"/s","type":"t"}"#).unwrap_err(),
        DecodeErrorKind::MissingAttribute("specversion")
    );
    assert_eq!(
        structured(r#"{"specversion":"1.0","source":"/s","type":"t"}"#).unwrap_err(),
        DecodeErrorKind::MissingAttribute("id")
    );
    assert_eq!(
        structured(r#"{"specversion":"1.0","id":"1","source":"","type":"t"}"#).unwrap_err(),
        DecodeErrorKind::EmptyAttribute("source")
    );
    assert!(matches!(
        structured(r#"{"specversion":"2.0","id":"1","source":"/s","type":"t"}"#),
        Err(DecodeErrorKind::UnsupportedSpecVersion(_))
    ));
    assert!(matches!(
        structured(&with(r#","time":"2018-04-05 03:56""#)),
        Err(DecodeErrorKind::InvalidTimestamp { .. })
    ));
    assert!(matches!(
        structured(r#"{"specversion":"1.0","id":"1","source":"not a uri","type":"t"}"#),
        Err(DecodeErrorKind::InvalidUri { .. })
    ));
    assert!(matches!(
        structured(&with(r#","dataschema":"/relative""#)),
        Err(DecodeErrorKind::InvalidUri { .. })
    ));
    assert!(
        structured(&with(
            r#","dataschema":"https://example.com/s.json","time":"2018-04-05T03:56:24.5+02:00""#
        ))
        .is_ok()
    );
}

#[test]
fn spec_version_03_names() {
    let v = structured(r#"{"specversion":"0.3","id":"1","source":"/s","type":"t","schemaurl":"/rel","datacontentencoding":"base64","data":"aGk="}"#).unwrap();
    let v = v.get(0).unwrap();
    assert_eq!(v.known(KnownAttr::DataSchema), Some("/rel"));
    assert_eq!(v.data().to_bytes().as_ref(), b"hi");
    let out: serde_json::Value =
        serde_json::from_slice(&encode_structured(&v, &EncodeOptions::default())).unwrap();
    assert_eq!(out["schemaurl"], "/rel");
    assert_eq!(out["datacontentencoding"], "base64");
    let (h, _) = encode_binary(&v, &EncodeOptions::default());
    assert_eq!(h.get("ce-schemaurl").unwrap(), "/rel");
}

#[test]
fn malformed_json_is_an_error_not_a_panic() {
    for bad in [
        "",
        "{",
        "[",
        "{\"a\":}",
        "nul",
        "[{]",
        "\u{0}",
        "{\"specversion\":\"1.0\"",
        "\"str\"",
    ] {
        let _ = decode_structured(Bytes::copy_from_slice(bad.as_bytes()), &limits());
        let _ = decode_batched(Bytes::copy_from_slice(bad.as_bytes()), &limits());
    }
    assert!(matches!(
        structured("{"),
        Err(DecodeErrorKind::InvalidJson { .. })
    ));
    assert!(matches!(
        structured("[]"),
        Err(DecodeErrorKind::NotAnObject { .. })
    ));
}

#[test]
fn encode_options_drop_and_add_extensions() {
    let v = structured(&with(r#","knativebrokerttl":255,"keep":"k""#)).unwrap();
    let opts = EncodeOptions {
        skip: &["knativebrokerttl"],
        add: &[("knativeerrorcode", AttrValue::Int(500))],
    };
    let (h, _) = encode_binary(&v.get(0).unwrap(), &opts);
    assert!(h.get("ce-knativebrokerttl").is_none());
    assert_eq!(h.get("ce-keep").unwrap(), "k");
    assert_eq!(h.get("ce-knativeerrorcode").unwrap(), "500");
    let json: serde_json::Value =
        serde_json::from_slice(&encode_structured(&v.get(0).unwrap(), &opts)).unwrap();
    assert!(json.get("knativebrokerttl").is_none());
    assert_eq!(json["knativeerrorcode"], 500);
}
