//! Events for the checks that evaluate filters: an attribute map (the reference model the
//! invariants are stated against), and the same event decoded from structured JSON (what the
//! router actually evaluates).

use std::collections::BTreeMap;

use bytes::Bytes;
use triggerfish_core::event::{
    AttrValue, Attributes, DecodeLimits, EventBatch, KnownAttr, decode_structured,
};

/// A value an event attribute can take. Known attributes are always strings (as in every
/// decoded event); extensions may be any of the three.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Attr {
    /// A string.
    Str(String),
    /// A 32-bit integer.
    Int(i32),
    /// A Boolean.
    Bool(bool),
}

impl Attr {
    /// The canonical string form (CloudEvents type system).
    pub fn canonical(&self) -> String {
        match self {
            Attr::Str(s) => s.clone(),
            Attr::Int(i) => i.to_string(),
            Attr::Bool(b) => b.to_string(),
        }
    }
}

/// An event as a map from attribute name to value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapEvent(pub BTreeMap<String, Attr>);

impl Attributes for MapEvent {
    fn attribute(&self, name: &str) -> Option<AttrValue<'_>> {
        self.0.get(name).map(|v| match v {
            Attr::Str(s) => AttrValue::Str(s),
            Attr::Int(i) => AttrValue::Int(*i),
            Attr::Bool(b) => AttrValue::Bool(*b),
        })
    }
}

impl MapEvent {
    /// A valid 1.0 event with only the required attributes.
    pub fn minimal() -> MapEvent {
        let mut map = BTreeMap::new();
        for (name, value) in [
            ("specversion", "1.0"),
            ("id", "1"),
            ("source", "/s"),
            ("type", "t"),
        ] {
            map.insert(name.to_owned(), Attr::Str(value.to_owned()));
        }
        MapEvent(map)
    }

    /// Sets attribute `name`. A known attribute gets the value's canonical string, since
    /// decoded events hold them as strings; `specversion` stays `1.0`, and names that are
    /// not attribute names in structured mode (`data`, `data_base64`) are skipped.
    pub fn set(&mut self, name: &str, value: Attr) {
        if name == "specversion" || name == "data" || name == "data_base64" {
            return;
        }
        let value = match KnownAttr::from_name(name) {
            Some(_) => Attr::Str(value.canonical()),
            None => value,
        };
        self.0.insert(name.to_owned(), value);
    }

    /// The event in structured mode, decoded by the router's decoder; `None` when the decoder
    /// rejects it (a `time` that is not a timestamp, an empty `id`, …).
    pub fn decode(&self) -> Option<EventBatch> {
        let object: serde_json::Map<String, serde_json::Value> = self
            .0
            .iter()
            .map(|(k, v)| {
                let v = match v {
                    Attr::Str(s) => serde_json::Value::from(s.as_str()),
                    Attr::Int(i) => serde_json::Value::from(*i),
                    Attr::Bool(b) => serde_json::Value::from(*b),
                };
                (k.clone(), v)
            })
            .collect();
        let body = serde_json::to_vec(&object).ok()?;
        let batch = decode_structured(Bytes::from(body), &DecodeLimits::default()).ok()?;
        (batch.len() == 1).then_some(batch)
    }

    /// This event, less what makes the decoder reject it: the validated optional attributes
    /// are removed, and if that is not enough, the required ones get their minimal values.
    pub fn decodable(&self) -> MapEvent {
        let mut clean = self.clone();
        for name in ["time", "dataschema", "datacontenttype", "subject"] {
            clean.0.remove(name);
        }
        if clean.decode().is_none() {
            clean.0.extend(MapEvent::minimal().0);
        }
        clean
    }
}
