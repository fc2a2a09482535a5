//! Property tests: our codecs and the official SDK (cloudevents-sdk 0.9) agree.
//!
//! - Any valid event encoded by us in binary, structured or batched mode decodes through the
//!   SDK to the same event.
//! - Any valid event encoded by the SDK in those modes decodes through us to the same event.
//! - Our own encode/decode round trip is lossless in every mode, for any Unicode text.
//!
//! The SDK neither percent-encodes nor percent-decodes binary-mode header values (HTTP binding
//! §3.1.3.2 requires both), so binary-mode cases that cross the SDK use strings for which
//! percent-encoding is the identity. Our percent-encoding is covered with arbitrary Unicode by the
//! us-to-us property and by `http_json_checklist.rs`.
#![allow(clippy::unwrap_used)] // Tests fail loudly on unexpected errors.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use cloudevents::event::{Data as SdkData, ExtensionValue};
use cloudevents::{AttributesReader, Event, EventBuilder, EventBuilderV03, EventBuilderV10};
use http::HeaderMap;
use proptest::prelude::*;
use triggerfish_core::event::sdk::to_sdk;
use triggerfish_core::event::{
    DecodeLimits, EncodeOptions, EventBatch, decode_batched, decode_binary, decode_structured,
    encode_batched, encode_binary, encode_structured,
};

#[derive(Clone, Debug)]
enum ModelData {
    None,
    Json(serde_json::Value),
    Text(String),
    Bytes(Vec<u8>),
}

#[derive(Clone, Debug)]
enum ModelExt {
    Str(String),
    Int(i32),
    Bool(bool),
}

#[derive(Clone, Debug)]
struct Model {
    v03: bool,
    id: String,
    source: String,
    ty: String,
    subject: Option<String>,
    time: Option<DateTime<Utc>>,
    dataschema: Option<String>,
    exts: BTreeMap<String, ModelExt>,
    data: ModelData,
}

/// Strings that survive a header unchanged: visible ASCII without space, `"` and `%`.
const HEADER_SAFE: &str = "[!#$&-~]{1,16}";
/// Any text the spec allows in a String (no controls, no noncharacters).
const ANY_TEXT: &str = "\\PC{1,16}";

fn reserved(name: &str) -> bool {
    matches!(
        name,
        "specversion"
            | "id"
            | "source"
            | "type"
            | "subject"
            | "time"
            | "datacontenttype"
            | "dataschema"
            | "schemaurl"
            | "datacontentencoding"
            | "data"
    )
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i32>().prop_map(serde_json::Value::from),
        "\\PC{0,12}".prop_map(serde_json::Value::from),
        Just(serde_json::Value::Null),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn model(text: &'static str) -> impl Strategy<Value = Model> {
    let ext = prop_oneof![
        text.prop_map(ModelExt::Str),
        any::<i32>().prop_map(ModelExt::Int),
        any::<bool>().prop_map(ModelExt::Bool),
    ];
    let data = prop_oneof![
        Just(ModelData::None),
        json_value().prop_map(ModelData::Json),
        "\\PC{0,40}".prop_map(ModelData::Text),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(ModelData::Bytes),
    ];
    (
        any::<bool>(),
        (text, "(/|https://example\\.com/)[a-z0-9/._~-]{0,16}", text),
        (
            prop::option::of(text),
            prop::option::of(0i64..4_000_000_000),
            prop::option::of("[a-z]{1,8}"),
        ),
        prop::collection::btree_map("[a-z][a-z0-9]{0,8}", ext, 0..4),
        data,
    )
        .prop_map(
            |(v03, (id, source, ty), (subject, time, schema), exts, data)| Model {
                v03,
                id,
                source,
                ty,
                subject,
                time: time.map(|t| Utc.timestamp_opt(t, 0).single().unwrap()),
                dataschema: schema.map(|s| format!("https://example.com/schemas/{s}")),
                exts: exts.into_iter().filter(|(k, _)| !reserved(k)).collect(),
                data,
            },
        )
}

fn sdk_event(m: &Model) -> Event {
    macro_rules! build {
        ($b:expr) => {{
            let mut b = $b
                .id(m.id.clone())
                .source(m.source.clone())
                .ty(m.ty.clone());
            if let Some(s) = &m.subject {
                b = b.subject(s.clone());
            }
            if let Some(t) = m.time {
                b = b.time(t);
            }
            for (k, v) in &m.exts {
                b = match v {
                    ModelExt::Str(s) => b.extension(k, s.clone()),
                    ModelExt::Int(i) => b.extension(k, i64::from(*i)),
                    ModelExt::Bool(x) => b.extension(k, *x),
                };
            }
            b = match &m.data {
                ModelData::None => b,
                ModelData::Json(v) => b.data("application/json", v.clone()),
                ModelData::Text(t) => b.data("text/plain; charset=utf-8", t.clone()),
                ModelData::Bytes(x) => b.data("application/octet-stream", x.clone()),
            };
            if let Some(s) = &m.dataschema {
                b = b.data_with_schema(
                    match &m.data {
                        ModelData::None => "application/json",
                        ModelData::Json(_) => "application/json",
                        ModelData::Text(_) => "text/plain; charset=utf-8",
                        ModelData::Bytes(_) => "application/octet-stream",
                    },
                    url::Url::parse(s).unwrap(),
                    match &m.data {
                        ModelData::None => SdkData::Json(serde_json::Value::Null),
                        ModelData::Json(v) => SdkData::Json(v.clone()),
                        ModelData::Text(t) => SdkData::String(t.clone()),
                        ModelData::Bytes(x) => SdkData::Binary(x.clone()),
                    },
                );
            }
            b.build().unwrap()
        }};
    }
    let mut e = if m.v03 {
        build!(EventBuilderV03::new())
    } else {
        build!(EventBuilderV10::new())
    };
    if let (Some(schema), ModelData::None) = (&m.dataschema, &m.data) {
        // `data_with_schema` always sets data; an event with a schema and no data needs this.
        e.take_data();
        use cloudevents::event::AttributesWriter as _;
        e.set_dataschema(Some(url::Url::parse(schema).unwrap()));
    }
    e
}

#[derive(Debug, PartialEq)]
enum NormData {
    Json(serde_json::Value),
    Bytes(Vec<u8>),
}

#[derive(Debug, PartialEq)]
struct Norm {
    version: String,
    id: String,
    source: String,
    ty: String,
    subject: Option<String>,
    time: Option<DateTime<Utc>>,
    datacontenttype: Option<String>,
    dataschema: Option<String>,
    exts: BTreeMap<String, String>,
    data: Option<NormData>,
}

/// An SDK event in comparable form. `stringly` compares extensions as canonical strings
/// (binary mode carries no types).
fn norm(e: &Event, stringly: bool) -> Norm {
    let ct = e.datacontenttype().map(str::to_owned);
    let json_ct = ct
        .as_deref()
        .is_some_and(|c| c.starts_with("application/json"));
    let data = e.data().map(|d| match d {
        SdkData::Json(v) => NormData::Json(v.clone()),
        SdkData::String(s) => NormData::Bytes(s.clone().into_bytes()),
        SdkData::Binary(b) if json_ct => serde_json::from_slice(b)
            .map(NormData::Json)
            .unwrap_or_else(|_| NormData::Bytes(b.clone())),
        SdkData::Binary(b) => NormData::Bytes(b.clone()),
    });
    let data = match data {
        // A JSON value under a text type is the text the string holds.
        Some(NormData::Json(serde_json::Value::String(s))) if !json_ct => {
            Some(NormData::Bytes(s.into_bytes()))
        }
        // Binary mode cannot tell an empty body from no data.
        Some(NormData::Bytes(b)) if stringly && b.is_empty() => None,
        other => other,
    };
    Norm {
        version: e.specversion().to_string(),
        id: e.id().to_owned(),
        source: e.source().to_string(),
        ty: e.ty().to_owned(),
        subject: e.subject().map(str::to_owned),
        time: e.time().copied(),
        datacontenttype: ct,
        dataschema: e.dataschema().map(|u| u.to_string()),
        exts: e
            .iter_extensions()
            .map(|(k, v)| {
                let v = match (v, stringly) {
                    (ExtensionValue::String(s), _) => s.clone(),
                    (ExtensionValue::Integer(i), true) => i.to_string(),
                    (ExtensionValue::Boolean(b), true) => b.to_string(),
                    (ExtensionValue::Integer(i), false) => format!("int:{i}"),
                    (ExtensionValue::Boolean(b), false) => format!("bool:{b}"),
                };
                (k.to_owned(), v)
            })
            .collect(),
        data,
    }
}

fn limits() -> DecodeLimits {
    DecodeLimits {
        max_event_bytes: 1 << 20,
        ..DecodeLimits::default()
    }
}

/// The model through the SDK's structured JSON, decoded by us.
fn ours(m: &Model) -> EventBatch {
    let json = serde_json::to_vec(&sdk_event(m)).unwrap();
    decode_structured(Bytes::from(json), &limits()).unwrap()
}

fn sdk_from_binary(headers: &HeaderMap, body: &Bytes) -> Event {
    cloudevents::binding::http::to_event(headers, body.to_vec()).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn ours_structured_and_batched_decode_through_the_sdk(m in model(ANY_TEXT)) {
        let want = norm(&sdk_event(&m), false);
        let batch = ours(&m);
        let view = batch.get(0).unwrap();
        prop_assert_eq!(&norm(&to_sdk(&view).unwrap(), false), &want);
        let structured = encode_structured(&view, &EncodeOptions::default());
        let got: Event = serde_json::from_slice(&structured).unwrap();
        prop_assert_eq!(&norm(&got, false), &want);
        let batched = encode_batched([view, view], &EncodeOptions::default());
        let got: Vec<Event> = serde_json::from_slice(&batched).unwrap();
        prop_assert_eq!(got.len(), 2);
        prop_assert_eq!(&norm(&got[1], false), &want);
    }

    #[test]
    fn ours_binary_decodes_through_the_sdk(m in model(HEADER_SAFE)) {
        let want = norm(&sdk_event(&m), true);
        let batch = ours(&m);
        let (headers, body) = encode_binary(&batch.get(0).unwrap(), &EncodeOptions::default());
        prop_assert_eq!(&norm(&sdk_from_binary(&headers, &body), true), &want);
    }

    #[test]
    fn sdk_structured_and_batched_decode_through_us(m in model(ANY_TEXT)) {
        let event = sdk_event(&m);
        let want = norm(&event, false);
        let batch = ours(&m);
        prop_assert_eq!(&norm(&to_sdk(&batch.get(0).unwrap()).unwrap(), false), &want);
        let arr = serde_json::to_vec(&vec![event.clone(), event]).unwrap();
        let decoded = decode_batched(Bytes::from(arr), &limits()).unwrap();
        prop_assert!(decoded.rejected.is_empty());
        prop_assert_eq!(&norm(&to_sdk(&decoded.batch.get(1).unwrap()).unwrap(), false), &want);
    }

    #[test]
    fn sdk_binary_decodes_through_us(m in model(HEADER_SAFE)) {
        let event = sdk_event(&m);
        let want = norm(&event, true);
        let req: http::Request<Option<Vec<u8>>> = http::Request::try_from(event).unwrap();
        let (parts, body) = req.into_parts();
        let batch = decode_binary(&parts.headers, Bytes::from(body.unwrap_or_default()), &limits()).unwrap();
        prop_assert_eq!(&norm(&to_sdk(&batch.get(0).unwrap()).unwrap(), true), &want);
    }

    #[test]
    fn our_own_round_trips_are_lossless(m in model(ANY_TEXT)) {
        let batch = ours(&m);
        let view = batch.get(0).unwrap();
        let want = norm(&to_sdk(&view).unwrap(), true);
        let (headers, body) = encode_binary(&view, &EncodeOptions::default());
        let b = decode_binary(&headers, body, &limits()).unwrap();
        prop_assert_eq!(&norm(&to_sdk(&b.get(0).unwrap()).unwrap(), true), &want);
        let s = decode_structured(encode_structured(&view, &EncodeOptions::default()), &limits()).unwrap();
        prop_assert_eq!(&norm(&to_sdk(&s.get(0).unwrap()).unwrap(), false), &norm(&to_sdk(&view).unwrap(), false));
    }

    #[test]
    fn decoders_never_panic_on_arbitrary_bytes(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let body = Bytes::from(body);
        let _ = decode_structured(body.clone(), &limits());
        let _ = decode_batched(body.clone(), &limits());
        let mut h = HeaderMap::new();
        h.insert("ce-specversion", http::HeaderValue::from_static("1.0"));
        if let Ok(v) = http::HeaderValue::from_bytes(&body) {
            h.insert("ce-id", v.clone());
            h.insert("ce-source", v.clone());
            h.insert("ce-type", v);
        }
        let _ = decode_binary(&h, body, &limits());
    }
}
