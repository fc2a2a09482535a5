//! Event sources' payloads, sans-IO: what OSS, S3/MinIO, GitHub and container registries send,
//! parsed, checked and mapped to CloudEvents; and the MNS wire format (request signing, XML
//! bodies, push-notification signatures).
//!
//! Each parser takes bytes (and, where time matters, a `now` argument) and returns
//! [`SourceEvent`]s or a typed error saying what is wrong with the input. Nothing here reads a
//! socket, a file, an environment variable or the clock; the router's `sources` module drives
//! these functions from its HTTP handlers, its MNS poller and its directory watcher, and turns
//! the events into an [`EventBatch`](crate::event::EventBatch) with [`encode_batch`] and
//! [`decode_batched`](crate::event::decode_batched), so that every source event passes the same
//! validation as an event published over HTTP.
//!
//! - [`oss`]: OSS event notifications (`{"events": [...]}`), EventBridge's event shape; also the
//!   OSS-shaped records of a local directory (`BucketWatch`).
//! - [`s3`]: S3-style notifications (`{"Records": [...]}`), as MinIO sends them.
//! - [`github`]: GitHub webhooks: `X-Hub-Signature-256`, Knative eventing-github's mapping.
//! - [`registry`]: Docker Distribution notification envelopes and Alibaba Container Registry
//!   webhooks.
//! - [`mns`]: Alibaba MNS: request signatures, `ReceiveMessage` and error XML, HTTP-endpoint
//!   push notifications and their RSA-SHA1 signatures, `Date` skew.
//! - [`kafka`]: Kafka records as CloudEvents, as Knative's KafkaSource maps them.
//! - [`rocketmq`]: RocketMQ messages as CloudEvents, in EventBridge's event shape.
//! - [`offsets`]: which consumed offsets may be committed (at-least-once bookkeeping).
//! - [`check_key`]: object keys that are safe to hand to a worker (no `..`, no absolute
//!   paths); [`encode_key`]: keys percent-encoded as OSS encodes them.
//!
//! The mappings are documented, with example payloads, in `docs/sources.md`.

pub mod github;
pub mod kafka;
mod key;
pub mod mns;
pub mod offsets;
pub mod oss;
pub mod registry;
pub mod rocketmq;
pub mod s3;

use bytes::Bytes;
use serde_json::value::RawValue;

pub use key::{KeyError, MAX_KEY_BYTES, check_key, encode_key};

use crate::event::{
    AttrValue, DecodeError, DecodeLimits, EncodeOptions, EventBatch, decode_structured,
    encode_structured,
};

/// Sets a source's `ceOverrides` (`(name, value)` pairs) as extensions of the first event of
/// `batch`, a CloudEvent the source received: it is encoded again with them and decoded under
/// `limits`, so only sources configured with overrides pay for the copy.
pub(crate) fn with_overrides(
    batch: EventBatch,
    overrides: &[(String, String)],
    limits: &DecodeLimits,
) -> Result<EventBatch, DecodeError> {
    if overrides.is_empty() {
        return Ok(batch);
    }
    let Some(view) = batch.get(0) else {
        return Ok(batch);
    };
    let add: Vec<(&str, AttrValue<'_>)> = overrides
        .iter()
        .map(|(k, v)| (k.as_str(), AttrValue::Str(v)))
        .collect();
    let body = encode_structured(
        &view,
        &EncodeOptions {
            skip: &[],
            add: &add,
        },
    );
    decode_structured(body, limits)
}

/// One event a source produces, before it is encoded. `data` is JSON
/// (`datacontenttype: application/json`).
#[derive(Clone, Debug)]
pub struct SourceEvent {
    /// `id`: stable for the same input, so a redelivered notification has the same id.
    pub id: String,
    /// `source`.
    pub source: String,
    /// `type`.
    pub ty: String,
    /// `subject`.
    pub subject: Option<String>,
    /// `time`, RFC 3339. Only set when the input's time is valid RFC 3339.
    pub time: Option<String>,
    /// Extensions (lowercase alphanumeric names), as strings.
    pub extensions: Vec<(&'static str, String)>,
    /// `data`: JSON text.
    pub data: Box<RawValue>,
}

impl PartialEq for SourceEvent {
    fn eq(&self, other: &SourceEvent) -> bool {
        (
            &self.id,
            &self.source,
            &self.ty,
            &self.subject,
            &self.time,
            &self.extensions,
        ) == (
            &other.id,
            &other.source,
            &other.ty,
            &other.subject,
            &other.time,
            &other.extensions,
        ) && self.data.get() == other.data.get()
    }
}

impl Eq for SourceEvent {}

impl SourceEvent {
    /// Writes the event in the structured JSON format.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        fn field(out: &mut Vec<u8>, name: &str, value: &str) {
            out.push(b'"');
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b"\":");
            // Serializing a &str cannot fail.
            let _ = serde_json::to_writer(&mut *out, value);
            out.push(b',');
        }
        out.extend_from_slice(b"{\"specversion\":\"1.0\",");
        field(out, "id", &self.id);
        field(out, "source", &self.source);
        field(out, "type", &self.ty);
        if let Some(subject) = &self.subject {
            field(out, "subject", subject);
        }
        if let Some(time) = &self.time {
            field(out, "time", time);
        }
        for (name, value) in &self.extensions {
            field(out, name, value);
        }
        field(out, "datacontenttype", "application/json");
        out.extend_from_slice(b"\"data\":");
        out.extend_from_slice(self.data.get().as_bytes());
        out.push(b'}');
    }
}

/// Encodes events as a JSON array (the batched format), for
/// [`decode_batched`](crate::event::decode_batched).
pub fn encode_batch(events: &[SourceEvent]) -> Bytes {
    let mut out = Vec::with_capacity(events.iter().map(|e| e.data.get().len() + 256).sum());
    out.push(b'[');
    for (i, event) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        event.write_json(&mut out);
    }
    out.push(b']');
    Bytes::from(out)
}

/// Whether an `Authorization` header carries `Bearer <token>`. The comparison is of SHA-256
/// digests, in constant time, so it leaks neither the token's bytes nor its length.
pub fn bearer_matches(header: Option<&[u8]>, token: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    use subtle::ConstantTimeEq as _;
    let Some(presented) = header.and_then(|h| h.strip_prefix(b"Bearer ")) else {
        return false;
    };
    let (a, b) = (
        Sha256::digest(presented.trim_ascii()),
        Sha256::digest(token),
    );
    bool::from(a.ct_eq(&b))
}

/// `time` if it is RFC 3339, as CloudEvents requires; else `None`.
pub(crate) fn rfc3339(time: Option<&str>) -> Option<String> {
    let time = time?;
    chrono::DateTime::parse_from_rfc3339(time)
        .ok()
        .map(|_| time.to_owned())
}

/// A JSON value as raw text.
pub(crate) fn raw(json: String) -> Box<RawValue> {
    // `json` always comes from serde_json's own output or a parsed RawValue.
    RawValue::from_string(json).unwrap_or_else(|_| null())
}

/// JSON `null`.
pub(crate) fn null() -> Box<RawValue> {
    serde_json::value::to_raw_value(&()).unwrap_or_default()
}

/// A stable id from the bytes of an input, for inputs that carry none: 32 hex digits of
/// their SHA-256.
pub(crate) fn digest_id(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    let mut id = String::with_capacity(32);
    for byte in &digest[..16] {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{DecodeLimits, decode_batched};

    #[test]
    fn encoded_events_decode() {
        let event = SourceEvent {
            id: "a-0".into(),
            source: "acs.oss".into(),
            ty: "oss:ObjectCreated:PutObject".into(),
            subject: Some("acs:oss:cn-hangzhou:1:b/k \"q\"".into()),
            time: rfc3339(Some("2016-07-01T11:17:30.000Z")),
            extensions: vec![("bucket", "b".into())],
            data: raw(r#"{"k": [1, 2.50]}"#.into()),
        };
        let body = encode_batch(&[event.clone(), event]);
        let decoded = decode_batched(body, &DecodeLimits::default()).unwrap();
        assert!(decoded.rejected.is_empty());
        let view = decoded.batch.get(1).unwrap();
        assert_eq!(view.subject(), Some("acs:oss:cn-hangzhou:1:b/k \"q\""));
        assert_eq!(view.time(), Some("2016-07-01T11:17:30.000Z"));
        assert_eq!(&*view.data().to_bytes(), br#"{"k": [1, 2.50]}"#);
    }

    #[test]
    fn bearer_tokens_are_compared() {
        assert!(bearer_matches(Some(b"Bearer s3cret"), b"s3cret"));
        assert!(!bearer_matches(Some(b"Bearer s3cre"), b"s3cret"));
        assert!(!bearer_matches(Some(b"Basic s3cret"), b"s3cret"));
        assert!(!bearer_matches(None, b"s3cret"));
    }

    #[test]
    fn invalid_times_are_left_out() {
        assert_eq!(rfc3339(Some("2016-11-29 12:25:46")), None);
        assert_eq!(rfc3339(None), None);
    }
}
