//! The built-in display sink: prints each event readably, like Knative's `event_display`.

use std::fmt::Write as _;

use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;
use triggerfish_core::event::{AttrValue, Data, EncodeOptions, EventView, KnownAttr};

use super::Attempt;

/// Prints events to standard output, one block per event, never interleaved.
pub struct DisplaySink {
    out: Mutex<tokio::io::Stdout>,
}

impl DisplaySink {
    /// A sink writing to this process's standard output.
    pub fn new() -> DisplaySink {
        DisplaySink {
            out: Mutex::new(tokio::io::stdout()),
        }
    }

    /// Prints one event.
    pub async fn send(&self, view: &EventView<'_>, opts: &EncodeOptions<'_>) -> Attempt {
        let text = render(view, opts);
        let mut out = self.out.lock().await;
        match out.write_all(text.as_bytes()).await {
            Ok(()) => {
                let _ = out.flush().await;
                Attempt::accepted()
            }
            // Standard output is gone (a closed pipe): nothing a retry fixes soon.
            Err(_) => Attempt::Internal(triggerfish_core::delivery::InternalError::Unavailable),
        }
    }
}

impl Default for DisplaySink {
    fn default() -> Self {
        DisplaySink::new()
    }
}

/// The spec's attributes in the order the Go SDK's `Event.String()` prints them.
const PRINT_ORDER: [KnownAttr; KnownAttr::COUNT] = [
    KnownAttr::SpecVersion,
    KnownAttr::Type,
    KnownAttr::Source,
    KnownAttr::Subject,
    KnownAttr::Id,
    KnownAttr::Time,
    KnownAttr::DataSchema,
    KnownAttr::DataContentType,
];

/// The text printed for one event: what Knative's event_display prints (the Go SDK's
/// `Event.String()`), attributes in its order and extensions by name. Every event here passed
/// ingress's validation, so each is `Validation: valid`.
pub fn render(view: &EventView<'_>, opts: &EncodeOptions<'_>) -> String {
    let mut s = String::with_capacity(256 + view.wire_size());
    s.push_str("☁️  cloudevents.Event\nValidation: valid\nContext Attributes,\n");
    for attr in PRINT_ORDER {
        if let Some(v) = view.known(attr) {
            let _ = writeln!(s, "  {}: {v}", attr.name_in(view.spec_version()));
        }
    }
    let mut exts: Vec<(&str, AttrValue<'_>)> = opts.extensions(view).collect();
    exts.sort_unstable_by_key(|(name, _)| *name);
    if !exts.is_empty() {
        s.push_str("Extensions,\n");
        for (name, value) in exts {
            let _ = writeln!(s, "  {name}: {value}");
        }
    }
    let json_binary = view
        .datacontenttype()
        .is_some_and(triggerfish_core::event::is_json_media_type);
    match view.data() {
        Data::None => {}
        Data::Json(bytes) => pretty_json(&mut s, bytes),
        Data::Binary(bytes) if json_binary => pretty_json(&mut s, bytes),
        Data::Text(t) => {
            let _ = writeln!(s, "Data,\n  {t}");
        }
        data @ (Data::Base64(_) | Data::Binary(_)) => {
            let bytes = data.to_bytes();
            match std::str::from_utf8(&bytes) {
                Ok(t) => {
                    let _ = writeln!(s, "Data,\n  {t}");
                }
                Err(_) => {
                    let _ = writeln!(s, "Data,\n  <{} bytes of binary data>", bytes.len());
                }
            }
        }
    }
    s
}

fn pretty_json(s: &mut String, bytes: &[u8]) {
    s.push_str("Data,\n");
    match serde_json::from_slice::<serde_json::Value>(bytes) {
        Ok(v) => {
            let pretty = serde_json::to_string_pretty(&v).unwrap_or_default();
            for line in pretty.lines() {
                let _ = writeln!(s, "  {line}");
            }
        }
        Err(_) => {
            let _ = writeln!(s, "  {}", String::from_utf8_lossy(bytes));
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use triggerfish_core::event::{ArrivalTime, DecodeLimits, decode_structured};

    use super::*;

    #[test]
    fn renders_like_event_display_with_extensions_by_name() {
        let body = r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","zeta":"z","alpha":7,"data":{"k":1}}"#;
        let mut batch = decode_structured(Bytes::from(body), &DecodeLimits::default()).unwrap();
        batch.stamp_arrival(ArrivalTime::from(std::time::SystemTime::UNIX_EPOCH));
        let text = render(&batch.get(0).unwrap(), &EncodeOptions::default());
        assert_eq!(
            text,
            "☁️  cloudevents.Event\nValidation: valid\nContext Attributes,\n  specversion: 1.0\n  type: t\n  \
             source: /s\n  id: 1\nExtensions,\n  alpha: 7\n  \
             knativearrivaltime: 1970-01-01T00:00:00.000000000Z\n  zeta: z\nData,\n  {\n    \
             \"k\": 1\n  }\n"
        );
    }
}
