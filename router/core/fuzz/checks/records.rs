//! What the `kafka_record` and `rocketmq_message` checks share: their text-like input format,
//! and how an event is compared across encodings.
//!
//! ```text
//! WORD WORD ...                              first line: the record's coordinates
//! @DIRECTIVE: ...                            a directive the check knows (the last one wins)
//! name: value                                a header or property (`name` alone: no value)
//!                                            a blank line
//! VALUE                                      the rest is the record value, byte for byte
//! ```

use bytes::Bytes;
use triggerfish_core::event::{
    AttrValue, Data, DecodeLimits, EncodeOptions, EventBatch, EventView, decode_structured,
    encode_structured, is_json_media_type, is_valid_attribute_name,
};

/// One parsed input.
pub struct Input {
    /// The first line's words.
    pub words: Vec<String>,
    /// `(directive, the bytes after its colon)`, in order.
    pub directives: Vec<(&'static str, Vec<u8>)>,
    /// `name: value` lines (value trimmed), or `name` alone.
    pub fields: Vec<(String, Option<Vec<u8>>)>,
    /// What follows the blank line.
    pub value: Bytes,
}

impl Input {
    /// Splits `data`; a line that starts with `@NAME:` for a `NAME` of `directives` is a
    /// directive, any other line a field.
    pub fn parse(data: &[u8], directives: &[&'static str]) -> Input {
        let split = data
            .windows(2)
            .position(|w| w == b"\n\n")
            .unwrap_or(data.len());
        let (head, value) = data.split_at(split);
        let value = Bytes::copy_from_slice(value.get(2..).unwrap_or_default());
        let mut lines = head.split(|&b| b == b'\n');
        let words = String::from_utf8_lossy(lines.next().unwrap_or_default())
            .split_ascii_whitespace()
            .map(str::to_owned)
            .collect();
        let mut input = Input {
            words,
            directives: Vec::new(),
            fields: Vec::new(),
            value,
        };
        'lines: for line in lines {
            for &name in directives {
                if let Some(rest) = line
                    .strip_prefix(b"@")
                    .and_then(|l| l.strip_prefix(name.as_bytes()))
                    .and_then(|l| l.strip_prefix(b":"))
                {
                    input.directives.push((name, rest.to_vec()));
                    continue 'lines;
                }
            }
            match line.iter().position(|&b| b == b':') {
                Some(colon) => input.fields.push((
                    String::from_utf8_lossy(&line[..colon]).into_owned(),
                    Some(line[colon + 1..].trim_ascii().to_vec()),
                )),
                None if !line.is_empty() => {
                    input
                        .fields
                        .push((String::from_utf8_lossy(line).into_owned(), None));
                }
                None => {}
            }
        }
        input
    }

    /// The `i`th word parsed, if it parses.
    pub fn word<T: std::str::FromStr>(&self, i: usize) -> Option<T> {
        self.words.get(i).and_then(|w| w.parse().ok())
    }

    /// `maxEventBytes` from the last `@limit:` (below 64 KiB), else 2048.
    pub fn limits(&self) -> DecodeLimits {
        let max_event_bytes = self
            .directives
            .iter()
            .rev()
            .filter(|(name, _)| *name == "limit")
            .find_map(|(_, n)| {
                std::str::from_utf8(n)
                    .ok()
                    .and_then(|n| n.trim().parse::<usize>().ok())
            })
            .map_or(2048, |n| n % 65_536);
        DecodeLimits {
            max_event_bytes,
            max_batch_events: 1,
        }
    }
}

/// Limits that refuse nothing, for re-encoded events.
pub const UNLIMITED: DecodeLimits = DecodeLimits {
    max_event_bytes: usize::MAX,
    max_batch_events: usize::MAX,
};

/// The one event a mapper accepted: within `limits`, with every `ceOverrides` extension set.
pub fn accepted<'a>(
    batch: &'a EventBatch,
    limits: &DecodeLimits,
    overrides: &[(String, String)],
) -> EventView<'a> {
    assert_eq!(batch.len(), 1, "a record is one event");
    let view = batch.get(0).expect("one event");
    assert!(
        view.wire_size() <= limits.max_event_bytes,
        "an accepted event is within the limit: {} > {}",
        view.wire_size(),
        limits.max_event_bytes
    );
    for (name, value) in overrides {
        assert_eq!(
            view.extension(name),
            Some(AttrValue::Str(value)),
            "ceOverrides win"
        );
    }
    view
}

/// A CloudEvent passes through a mapper as its binding reads it (`direct`), plus the
/// overrides.
pub fn assert_passes_through(
    direct: &EventBatch,
    view: &EventView<'_>,
    overrides: &[(String, String)],
) {
    let direct = direct.get(0).expect("one event");
    assert_eq!(
        (direct.id(), direct.source(), direct.ty(), direct.subject()),
        (view.id(), view.source(), view.ty(), view.subject())
    );
    assert_eq!(data_of(&direct), data_of(view));
    if overrides.is_empty() {
        assert_eq!(ext_list(&direct), ext_list(view));
    }
}

/// A refused record's dead letter: one event of type `ty` within `limits`, whose
/// `knativeerrorcode` is `code`.
pub fn dead_letter<'a>(
    batch: &'a EventBatch,
    limits: &DecodeLimits,
    ty: &str,
    code: i32,
) -> EventView<'a> {
    let view = batch.get(0).expect("one event");
    assert_eq!(view.ty(), ty);
    assert!(view.wire_size() <= limits.max_event_bytes);
    let code = code.to_string();
    assert_eq!(
        view.extension("knativeerrorcode"),
        Some(AttrValue::Str(&code))
    );
    view
}

/// Every extension name of a mapped event is one CloudEvents allows.
pub fn assert_valid_extension_names(view: &EventView<'_>) {
    for (name, _) in view.extensions() {
        assert!(
            is_valid_attribute_name(name.as_bytes()),
            "extension {name:?}"
        );
    }
}

/// The event survives a structured re-encode.
pub fn assert_structured_round_trip(view: &EventView<'_>) {
    let structured = decode_structured(
        encode_structured(view, &EncodeOptions::default()),
        &UNLIMITED,
    )
    .expect("our structured encoding decodes");
    assert_same(view, &structured.get(0).expect("one event"), "structured");
}

/// An event's extensions, in order, as strings.
pub fn ext_list(view: &EventView<'_>) -> Vec<(String, String)> {
    view.extensions()
        .map(|(n, v)| (n.to_owned(), v.with_canonical_str(str::to_owned)))
        .collect()
}

/// Panics unless `other` has `view`'s attributes, extensions and data.
pub fn assert_same(view: &EventView<'_>, other: &EventView<'_>, how: &str) {
    assert_eq!(
        (
            view.id(),
            view.source(),
            view.ty(),
            view.subject(),
            view.time()
        ),
        (
            other.id(),
            other.source(),
            other.ty(),
            other.subject(),
            other.time()
        ),
        "{how}"
    );
    assert_eq!(ext_list(view), ext_list(other), "{how}");
    assert_eq!(data_of(view), data_of(other), "{how}");
}

/// An event's data as compared across encodings: its bytes, or, under a JSON content type,
/// its JSON value when the bytes parse (whitespace around a JSON value is not kept when it is
/// embedded in a structured event; JSON without a content type gains one in binary mode).
#[derive(Debug, PartialEq)]
pub enum DataOf {
    Bytes(Vec<u8>),
    Json(serde_json::Value),
}

/// See [`DataOf`].
pub fn data_of(view: &EventView<'_>) -> DataOf {
    let bytes = view.data().to_bytes().into_owned();
    // Structured JSON data without a content type is JSON, and gains `application/json` in
    // binary mode (JSON format §3.1.2).
    let json = view
        .datacontenttype()
        .map_or(matches!(view.data(), Data::Json(_)), is_json_media_type);
    if json && let Ok(value) = serde_json::from_slice(&bytes) {
        return DataOf::Json(value);
    }
    DataOf::Bytes(bytes)
}
