//! CloudEvents as zero-copy views over the bytes they arrived in.
//!
//! A request body (or a set of `ce-*` headers) is decoded once into an [`EventBatch`]: the
//! received buffer, one decoded text buffer, and a small table of byte ranges per event. An
//! [`EventView`] reads attributes straight out of those buffers; nothing is copied into owned
//! `String`s or hash maps. [`EventRef`] is the owned handle (an `Arc` and an index) that moves
//! one event of a batch between threads without copying it.
//!
//! The codecs follow the CloudEvents HTTP protocol binding and JSON event format (spec versions
//! 1.0 and 0.3): binary mode (`ce-*` headers), structured mode (`application/cloudevents+json`)
//! and batched mode (`application/cloudevents-batch+json`, parsed with simd-json). Decoding
//! validates every rule the spec states as a MUST and reports the event index and attribute of
//! each violation. [`sdk`] converts to and from the official SDK's `cloudevents::Event`, which
//! is the interop type at the edges of the system, never the type the router moves around.
//! [`trace`] carries W3C Trace Context from a request's headers into its events and back out.
//!
//! What this module does not do: choose a content mode from an HTTP request's URL or method,
//! enforce body limits while reading a socket, or talk to the network. Those are the router's.

mod arrival;
mod attr;
mod batch;
mod binary;
mod encode;
mod error;
mod json;
pub mod kafka;
pub mod rocketmq;
pub mod sdk;
mod text;
pub mod trace;
mod validate;

pub use arrival::{ARRIVAL_EXTENSION, ArrivalTime};
pub use attr::{AttrValue, Attributes, KnownAttr, SpecVersion, is_valid_attribute_name};
pub use batch::{Data, EventBatch, EventRef, EventView, Extensions};
pub use binary::decode_binary;
pub use encode::{
    EncodeOptions, encode_batched, encode_binary, encode_structured, join_batched, write_structured,
};
pub use error::{DecodeError, DecodeErrorKind};
pub use json::{BatchDecode, decode_batched, decode_structured};
pub(crate) use validate::check_chars;

/// Limits applied while decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// Largest accepted size of one event on the wire, in bytes: the JSON object in structured
    /// and batched mode, or the `ce-*` headers plus the body in binary mode. The spec requires
    /// intermediaries to forward events up to 64 KiB; the default is 256 KiB.
    pub max_event_bytes: usize,
    /// Largest number of events accepted in one batch.
    pub max_batch_events: usize,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        Self {
            max_event_bytes: 256 * 1024,
            max_batch_events: 10_000,
        }
    }
}

/// The HTTP content mode of a request or response, chosen from its `Content-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContentMode {
    /// Attributes in `ce-*` headers, data in the body.
    Binary,
    /// One JSON-format event in the body (`application/cloudevents+json`).
    Structured,
    /// A JSON array of events in the body (`application/cloudevents-batch+json`).
    Batched,
    /// A structured media type in a format we do not read (for example
    /// `application/cloudevents+avro`).
    UnsupportedFormat,
}

impl ContentMode {
    /// Detects the content mode from a `Content-Type` value (HTTP binding §3).
    ///
    /// The batch prefix is tested first, because it also matches the structured prefix.
    /// Matching is case-insensitive. A missing `Content-Type` means binary mode.
    pub fn detect(content_type: Option<&[u8]>) -> ContentMode {
        let Some(ct) = content_type else {
            return ContentMode::Binary;
        };
        let ct = trim_ascii(ct);
        if starts_with_ignore_case(ct, b"application/cloudevents-batch") {
            return if media_suffix_is_json(ct, b"application/cloudevents-batch".len()) {
                ContentMode::Batched
            } else {
                ContentMode::UnsupportedFormat
            };
        }
        if starts_with_ignore_case(ct, b"application/cloudevents") {
            return if media_suffix_is_json(ct, b"application/cloudevents".len()) {
                ContentMode::Structured
            } else {
                ContentMode::UnsupportedFormat
            };
        }
        ContentMode::Binary
    }
}

/// After the `application/cloudevents[-batch]` prefix, accepts `+json` followed by the end or
/// by parameters.
fn media_suffix_is_json(ct: &[u8], prefix_len: usize) -> bool {
    let rest = &ct[prefix_len..];
    let essence_end = rest.iter().position(|&b| b == b';').unwrap_or(rest.len());
    let suffix = trim_ascii(&rest[..essence_end]);
    suffix.eq_ignore_ascii_case(b"+json")
}

fn starts_with_ignore_case(haystack: &[u8], prefix: &[u8]) -> bool {
    haystack.len() >= prefix.len() && haystack[..prefix.len()].eq_ignore_ascii_case(prefix)
}

fn trim_ascii(b: &[u8]) -> &[u8] {
    b.trim_ascii()
}

/// Whether a media type is JSON: `*/json` or `*/*+json`, parameters ignored (JSON format §3.1).
pub fn is_json_media_type(content_type: &str) -> bool {
    let essence = content_type.split(';').next().unwrap_or("").trim();
    let Some((_, subtype)) = essence.split_once('/') else {
        return false;
    };
    // On bytes: slicing the `str` five bytes from its end panicked when that cut a multibyte
    // character (a `config_load` fuzz finding, reachable from any structured event's
    // `datacontenttype`; see docs/fuzzing.md).
    let subtype = subtype.as_bytes();
    subtype.eq_ignore_ascii_case(b"json")
        || (subtype.len() > 5 && subtype[subtype.len() - 5..].eq_ignore_ascii_case(b"+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_mode_detection() {
        use ContentMode::*;
        assert_eq!(ContentMode::detect(None), Binary);
        assert_eq!(ContentMode::detect(Some(b"application/json")), Binary);
        assert_eq!(
            ContentMode::detect(Some(b"application/cloudevents+json")),
            Structured
        );
        assert_eq!(
            ContentMode::detect(Some(b"Application/CloudEvents+JSON; charset=utf-8")),
            Structured
        );
        assert_eq!(
            ContentMode::detect(Some(b"application/cloudevents-batch+json")),
            Batched
        );
        assert_eq!(
            ContentMode::detect(Some(b"application/cloudevents+avro")),
            UnsupportedFormat
        );
        assert_eq!(
            ContentMode::detect(Some(b"application/cloudevents-batch+avro")),
            UnsupportedFormat
        );
    }

    #[test]
    fn json_media_types() {
        assert!(is_json_media_type("application/json"));
        assert!(is_json_media_type("application/json; charset=utf-8"));
        assert!(is_json_media_type("application/vnd.foo+json"));
        assert!(is_json_media_type("text/json"));
        assert!(!is_json_media_type("text/plain"));
        assert!(!is_json_media_type("application/xml"));
        assert!(!is_json_media_type("json"));
        // A multibyte character across the cut five bytes from the end (a fuzz finding).
        assert!(!is_json_media_type("text/sonbévker"));
        assert!(!is_json_media_type("a/ééé"));
        assert!(is_json_media_type("a/é+json"));
    }
}
