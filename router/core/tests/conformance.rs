//! Every CloudEvents conformance vector under `shared/data/cloudevents/conformance/` decodes to
//! the expected attributes and data: the YAML event files (sent in the mode they name, or in
//! both modes when they name none) and the HTTP protocol binding feature file (raw requests).
#![allow(clippy::unwrap_used)] // Tests fail loudly on unexpected errors.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde::Deserialize;
use triggerfish_core::event::{
    AttrValue, ContentMode, Data, DecodeLimits, EventBatch, KnownAttr, decode_batched,
    decode_binary, decode_structured, is_json_media_type,
};

const ENCODE: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Vector {
    #[serde(default)]
    mode: Option<String>,
    context_attributes: BTreeMap<String, serde_norway::Value>,
    #[serde(default)]
    transport_extensions: BTreeMap<String, String>,
    #[serde(default)]
    data: Option<String>,
}

struct Expected {
    attributes: BTreeMap<String, String>,
    extensions: BTreeMap<String, String>,
    datacontenttype: Option<String>,
    data: Option<String>,
}

fn scalar(v: &serde_norway::Value) -> String {
    match v {
        serde_norway::Value::String(s) => s.clone(),
        serde_norway::Value::Number(n) if n.is_f64() => format!("{:.1}", n.as_f64().unwrap()),
        serde_norway::Value::Number(n) => n.to_string(),
        serde_norway::Value::Bool(b) => b.to_string(),
        other => panic!("unexpected attribute value {other:?}"),
    }
}

fn expected(v: &Vector) -> Expected {
    let mut attributes = BTreeMap::new();
    let mut extensions = BTreeMap::new();
    for (k, val) in &v.context_attributes {
        if k == "Extensions" {
            let serde_norway::Value::Mapping(m) = val else {
                panic!("Extensions must be a map")
            };
            for (ek, ev) in m {
                extensions.insert(scalar(ek), scalar(ev));
            }
        } else {
            attributes.insert(k.clone(), scalar(val));
        }
    }
    let datacontenttype = attributes.get("datacontenttype").cloned();
    Expected {
        attributes,
        extensions,
        datacontenttype,
        data: v.data.clone(),
    }
}

fn binary_request(e: &Expected, transport: &BTreeMap<String, String>) -> (HeaderMap, Bytes) {
    let mut h = HeaderMap::new();
    for (k, v) in e.attributes.iter().chain(e.extensions.iter()) {
        if k == "datacontenttype" {
            h.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_str(v).unwrap(),
            );
            continue;
        }
        let name = HeaderName::from_bytes(format!("ce-{k}").as_bytes()).unwrap();
        let value: String = utf8_percent_encode(v, ENCODE).to_string();
        h.insert(name, HeaderValue::from_str(&value).unwrap());
    }
    for (k, v) in transport {
        h.insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    (h, Bytes::from(e.data.clone().unwrap_or_default()))
}

fn structured_body(e: &Expected) -> Bytes {
    let mut obj = serde_json::Map::new();
    for (k, v) in e.attributes.iter().chain(e.extensions.iter()) {
        obj.insert(k.clone(), serde_json::Value::String(v.clone()));
    }
    if let Some(data) = &e.data {
        let json = e.datacontenttype.as_deref().is_none_or(is_json_media_type);
        let value = if json {
            serde_json::from_str(data).expect("JSON data in a JSON vector")
        } else {
            serde_json::Value::String(data.clone())
        };
        obj.insert("data".into(), value);
    }
    Bytes::from(serde_json::to_vec(&obj).unwrap())
}

fn check(batch: &EventBatch, e: &Expected, mode: &str, what: &str) {
    assert_eq!(batch.len(), 1, "{what} ({mode})");
    let view = batch.get(0).unwrap();
    for (k, v) in &e.attributes {
        let known =
            KnownAttr::from_name(k).unwrap_or_else(|| panic!("{what}: unknown attribute {k}"));
        assert_eq!(
            view.known(known),
            Some(v.as_str()),
            "{what} ({mode}): attribute {k}"
        );
    }
    for (k, v) in &e.extensions {
        assert_eq!(
            view.extension(k),
            Some(AttrValue::Str(v)),
            "{what} ({mode}): extension {k}"
        );
    }
    assert_eq!(
        view.extensions().len(),
        e.extensions.len(),
        "{what} ({mode}): extension count"
    );
    match (&e.data, view.data()) {
        (None, Data::None) => {}
        (Some(want), Data::Binary(got)) => {
            assert_eq!(got, want.as_bytes(), "{what} ({mode}): data")
        }
        (Some(want), Data::Text(got)) => assert_eq!(got, want, "{what} ({mode}): data"),
        (Some(want), Data::Json(got)) => {
            let got: serde_json::Value = serde_json::from_slice(got).unwrap();
            let want: serde_json::Value = serde_json::from_str(want).unwrap();
            assert_eq!(got, want, "{what} ({mode}): data");
        }
        (want, got) => panic!("{what} ({mode}): data {got:?}, want {want:?}"),
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

#[test]
fn yaml_vectors_decode_in_their_modes() {
    let dir = common::shared_data().join("cloudevents/conformance/yaml");
    let mut files = Vec::new();
    yaml_files(&dir, &mut files);
    files.sort();
    let limits = DecodeLimits::default();
    let mut checked = 0;
    for file in &files {
        let src = std::fs::read_to_string(file).unwrap();
        for (i, doc) in serde_norway::Deserializer::from_str(&src).enumerate() {
            let v = Vector::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let e = expected(&v);
            let what = format!("{} #{i}", file.file_name().unwrap().to_string_lossy());
            let modes: &[&str] = match v.mode.as_deref() {
                Some("binary") => &["binary"],
                Some("structured") => &["structured"],
                _ => &["binary", "structured"],
            };
            for &mode in modes {
                let batch = if mode == "binary" {
                    let (h, body) = binary_request(&e, &v.transport_extensions);
                    assert_eq!(
                        ContentMode::detect(h.get("content-type").map(|v| v.as_bytes())),
                        ContentMode::Binary
                    );
                    decode_binary(&h, body, &limits)
                } else {
                    decode_structured(structured_body(&e), &limits)
                };
                let batch = batch.unwrap_or_else(|err| panic!("{what} ({mode}): {err}"));
                check(&batch, &e, mode, &what);
                checked += 1;
            }
            // Every vector also travels inside a batch.
            let body = structured_body(&e);
            let mut arr = b"[".to_vec();
            arr.extend_from_slice(&body);
            arr.extend_from_slice(b",");
            arr.extend_from_slice(&body);
            arr.extend_from_slice(b"]");
            let decoded = decode_batched(Bytes::from(arr), &limits).unwrap();
            assert!(
                decoded.rejected.is_empty(),
                "{what}: {:?}",
                decoded.rejected
            );
            assert_eq!(decoded.batch.len(), 2);
        }
    }
    // 15 events; those without a mode run in both.
    assert!(checked >= 15, "only {checked} vector decodes ran");
}

/// Parses the raw HTTP requests of `http-protocol-binding.feature` and checks the attribute
/// tables and data it states.
#[test]
fn http_feature_scenarios() {
    let path = common::shared_data()
        .join("cloudevents/conformance/features/http-protocol-binding.feature");
    let text = std::fs::read_to_string(path).unwrap();
    let mut ran = 0;
    for scenario in text.split("Scenario Outline:").skip(1) {
        let blocks: Vec<&str> = scenario.split("\"\"\"").collect();
        let request = blocks[1];
        let data_json = blocks[3];
        let attrs_table = blocks[2];
        let examples = scenario.split("Examples:").nth(1).unwrap();
        let content_types: Vec<&str> = examples
            .lines()
            .filter_map(|l| l.trim().strip_prefix('|').and_then(|l| l.strip_suffix('|')))
            .map(str::trim)
            .skip(1)
            .collect();
        for ct in content_types {
            let request = request.replace("<contentType>", ct);
            let mut lines = request.lines().map(str::trim).skip_while(|l| l.is_empty());
            let _request_line = lines.next().unwrap();
            let mut headers = HeaderMap::new();
            for line in lines.by_ref() {
                if line.is_empty() {
                    break;
                }
                let (k, v) = line.split_once(':').unwrap();
                headers.insert(
                    HeaderName::from_bytes(k.trim().to_ascii_lowercase().as_bytes()).unwrap(),
                    HeaderValue::from_str(v.trim()).unwrap(),
                );
            }
            let body: String = lines.collect::<Vec<_>>().join("\n");
            let limits = DecodeLimits::default();
            let ct_header = headers.get("content-type").map(|v| v.as_bytes().to_vec());
            let batch = match ContentMode::detect(ct_header.as_deref()) {
                ContentMode::Binary => decode_binary(&headers, Bytes::from(body), &limits),
                ContentMode::Structured => decode_structured(Bytes::from(body), &limits),
                other => panic!("unexpected mode {other:?}"),
            }
            .unwrap();
            let view = batch.get(0).unwrap();
            for row in attrs_table
                .lines()
                .filter_map(|l| l.trim().strip_prefix('|'))
            {
                let cells: Vec<&str> = row.split('|').map(str::trim).collect();
                if cells[0] == "key" || cells.len() < 2 {
                    continue;
                }
                let value = cells[1].replace("<contentType>", ct);
                let known = KnownAttr::from_name(cells[0]).unwrap();
                assert_eq!(
                    view.known(known),
                    Some(value.as_str()),
                    "{ct}: {}",
                    cells[0]
                );
            }
            let want: serde_json::Value = serde_json::from_str(data_json.trim()).unwrap();
            let got: serde_json::Value = serde_json::from_slice(&view.data().to_bytes()).unwrap();
            assert_eq!(got, want, "{ct}: data");
            ran += 1;
        }
    }
    assert_eq!(ran, 4, "the feature file has 2 outlines x 2 content types");
}
