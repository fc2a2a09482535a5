//! CloudEvents as the tests write them: a structured-mode JSON object that can also be sent in
//! binary mode.

use base64::Engine as _;
use bytes::Bytes;
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};
use serde_json::{Map, Value, json};

/// Characters percent-encoded in binary-mode header values (HTTP binding §3.1.3.2).
const HEADER_ENCODE: &AsciiSet = &CONTROLS.add(b' ').add(b'"').add(b'%');

/// A CloudEvent under construction.
#[derive(Clone, Debug)]
pub struct Event {
    attrs: Map<String, Value>,
}

impl Event {
    /// An event with `id` and `type`, source `/e2e`, spec version 1.0, no data.
    pub fn new(id: impl Into<String>, ty: impl Into<String>) -> Event {
        let mut attrs = Map::new();
        attrs.insert("specversion".into(), json!("1.0"));
        attrs.insert("id".into(), Value::String(id.into()));
        attrs.insert("source".into(), json!("/e2e"));
        attrs.insert("type".into(), Value::String(ty.into()));
        Event { attrs }
    }

    /// Sets any attribute (context attribute or extension) to a JSON value: a string, an
    /// integer or a boolean.
    pub fn attr(mut self, name: &str, value: impl Into<Value>) -> Event {
        self.attrs.insert(name.to_owned(), value.into());
        self
    }

    /// Sets `source`.
    pub fn source(self, source: &str) -> Event {
        self.attr("source", source)
    }

    /// Sets `subject`.
    pub fn subject(self, subject: &str) -> Event {
        self.attr("subject", subject)
    }

    /// Sets JSON `data` (and `datacontenttype: application/json`).
    pub fn data(self, data: Value) -> Event {
        self.attr("datacontenttype", "application/json")
            .attr("data", data)
    }

    /// Sets binary data (`data_base64`) with its content type.
    pub fn data_bytes(self, content_type: &str, data: &[u8]) -> Event {
        let encoded = base64::engine::general_purpose::STANDARD.encode(data);
        self.attr("datacontenttype", content_type)
            .attr("data_base64", encoded)
    }

    /// The event's id.
    pub fn id(&self) -> &str {
        self.attrs.get("id").and_then(Value::as_str).unwrap_or("")
    }

    /// The attribute `name`, as JSON.
    pub fn get(&self, name: &str) -> Option<&Value> {
        self.attrs.get(name)
    }

    /// The structured-mode JSON object.
    pub fn json(&self) -> Value {
        Value::Object(self.attrs.clone())
    }

    /// The structured-mode body.
    pub fn structured(&self) -> Bytes {
        Bytes::from(self.json().to_string())
    }

    /// The body a binary-mode delivery of this event carries: the data's bytes.
    pub fn data_body(&self) -> Bytes {
        if let Some(data) = self.attrs.get("data") {
            return match data {
                Value::String(s)
                    if !self
                        .attrs
                        .get("datacontenttype")
                        .and_then(Value::as_str)
                        .is_some_and(|ct| ct.contains("json")) =>
                {
                    Bytes::from(s.clone())
                }
                other => Bytes::from(other.to_string()),
            };
        }
        if let Some(Value::String(b64)) = self.attrs.get("data_base64") {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .expect("data_base64 is valid base64");
            return Bytes::from(bytes);
        }
        Bytes::new()
    }

    /// Binary-mode headers (`ce-*`, percent-encoded, and `content-type` from
    /// `datacontenttype`) and body.
    pub fn binary(&self) -> (Vec<(String, String)>, Bytes) {
        let mut headers = Vec::new();
        for (name, value) in &self.attrs {
            if matches!(name.as_str(), "data" | "data_base64") {
                continue;
            }
            let text = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if name == "datacontenttype" {
                headers.push(("content-type".to_owned(), text));
            } else {
                let encoded = utf8_percent_encode(&text, HEADER_ENCODE).to_string();
                headers.push((format!("ce-{name}"), encoded));
            }
        }
        (headers, self.data_body())
    }
}

/// A batched-mode body (`application/cloudevents-batch+json`).
pub fn batch(events: &[Event]) -> Bytes {
    Bytes::from(Value::Array(events.iter().map(Event::json).collect()).to_string())
}

/// Takes the `knativearrivaltime` the broker stamped on a delivered structured event out of
/// it, so that the rest compares with what was sent; panics when it is missing or not a
/// string.
pub fn take_arrival(delivered: &mut Value) -> String {
    match delivered
        .as_object_mut()
        .and_then(|o| o.remove("knativearrivaltime"))
    {
        Some(Value::String(at)) => at,
        other => panic!("no knativearrivaltime string in the delivery ({other:?}): {delivered}"),
    }
}
