//! `KafkaSource`'s mapping of Kafka records to CloudEvents, as Knative's KafkaSource does it.
//!
//! - A record that is a CloudEvent by the Kafka protocol binding (binary mode with `ce_`
//!   headers, or structured mode) passes through as that event ([`crate::event::kafka`]).
//! - Any other record becomes an event with (Knative's `InvalidCloudEventInterceptor`):
//!   - `type` `dev.knative.kafka.event`;
//!   - `source` `/apis/v1/namespaces/<namespace>/kafkasources/<name>#<topic>`;
//!   - `subject` `partition:<partition>#<offset>`;
//!   - `id` `partition:<partition>/offset:<offset>`, stable across redeliveries (unique per
//!     source, as CloudEvents requires, since the source names the topic);
//!   - `time` the record's timestamp, when it has one;
//!   - the key, as UTF-8 (lossy, as Knative's default string key type reads it), in the
//!     extensions `key` and `partitionkey`;
//!   - every other header as an extension `kafkaheader<name>`, the name lower-cased with
//!     everything but `a-z0-9` removed (a later header wins over an earlier one of the same
//!     name), its value read as UTF-8 (lossy);
//!   - the `content-type` header as `datacontenttype` (lower-cased);
//!   - the value as `data`, byte for byte.
//! - `ceOverrides` extensions are set on every event, replacing any of the same name.
//! - The W3C `traceparent` and `tracestate` headers that OpenTelemetry's Kafka instrumentation
//!   writes become the distributed-tracing extension of an event that has none
//!   ([`crate::event::trace`]).
//!
//! Where Triggerfish differs from Knative, on purpose: a record that **claims** to be a
//! CloudEvent (a `ce_specversion` header or a CloudEvents content type) but is not a valid one
//! is an [`InvalidRecord`], not silently wrapped; so is a record whose event exceeds the size
//! limit. The router dead-letters or skips such records as the source is configured, and
//! counts and logs each. [`KafkaMapper::dead_letter_event`] is the event sent to the dead-letter sink.
//!
//! What this module does not do: talk to Kafka, or commit offsets (see [`super::offsets`]).

use std::fmt;

use base64::Engine as _;
use bytes::Bytes;

use crate::event::kafka::{KafkaMode, decode_attributes, decode_kafka, kafka_mode};
use crate::event::trace::{TRACEPARENT, TRACESTATE, TraceContext};
use crate::event::{DecodeError, DecodeErrorKind, DecodeLimits, EventBatch};

/// The `type` of records that are not CloudEvents.
pub const KAFKA_EVENT_TYPE: &str = "dev.knative.kafka.event";

/// A consumed record, borrowed from the client.
#[derive(Clone, Copy, Debug)]
pub struct Record<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The timestamp, milliseconds since the Unix epoch, when the record has one.
    pub timestamp_ms: Option<i64>,
    /// The key.
    pub key: Option<&'a [u8]>,
    /// Headers, in order (a header may have no value).
    pub headers: &'a [(&'a str, Option<&'a [u8]>)],
}

/// Why a record cannot become an event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidRecord {
    /// It claims to be a CloudEvent (by its headers) but is not a valid one.
    #[error(
        "{topic}/{partition}@{offset}: the record claims to be a CloudEvent in {mode} mode but is not a valid one: {error}"
    )]
    NotACloudEvent {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
        /// `binary` or `structured` (or `unsupported` for another CloudEvents format).
        mode: &'static str,
        /// What is wrong.
        error: DecodeError,
    },
    /// Its event is larger than `Server.spec.limits.maxEventBytes`.
    #[error(
        "{topic}/{partition}@{offset}: the record's event is too large: {error}; raise Server.spec.limits.maxEventBytes to accept it"
    )]
    TooLarge {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
        /// The size error.
        error: DecodeError,
    },
    /// A plain record whose mapped event is invalid (a header value with a control character,
    /// say).
    #[error("{topic}/{partition}@{offset}: the record cannot be mapped to a CloudEvent: {error}")]
    Unmappable {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// Offset.
        offset: i64,
        /// What is wrong.
        error: DecodeError,
    },
}

impl InvalidRecord {
    /// The `knativeerrorcode` of its dead letter: 413 for size, 400 otherwise.
    pub fn code(&self) -> i32 {
        match self {
            InvalidRecord::TooLarge { .. } => 413,
            _ => 400,
        }
    }

    /// A label for metrics: `too_large` or `invalid`.
    pub fn reason(&self) -> &'static str {
        match self {
            InvalidRecord::TooLarge { .. } => "too_large",
            _ => "invalid",
        }
    }
}

/// Maps the records of one `KafkaSource`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaMapper {
    /// `/apis/v1/namespaces/<namespace>/kafkasources/<name>`.
    source_base: String,
    /// `ceOverrides` extensions.
    overrides: Vec<(String, String)>,
}

impl KafkaMapper {
    /// The mapper of source `namespace/name` with `ceOverrides` extensions.
    pub fn new(namespace: &str, name: &str, overrides: Vec<(String, String)>) -> KafkaMapper {
        KafkaMapper {
            source_base: format!("/apis/v1/namespaces/{namespace}/kafkasources/{name}"),
            overrides,
        }
    }

    /// Maps one record whose value is `value` (empty for a null value). A record produced
    /// under OpenTelemetry carries the producer's trace context in `traceparent` and
    /// `tracestate` headers: an event without a `traceparent` extension takes it
    /// ([`TraceContext`]).
    pub fn map(
        &self,
        record: &Record<'_>,
        value: Bytes,
        limits: &DecodeLimits,
    ) -> Result<EventBatch, Box<InvalidRecord>> {
        let batch = self.map_record(record, value, limits)?;
        let field = |name: &'static str| {
            record
                .headers
                .iter()
                .filter(move |(n, _)| *n == name)
                .map(|(_, v)| v.unwrap_or_default())
        };
        Ok(
            match TraceContext::from_fields(field(TRACEPARENT), field(TRACESTATE)) {
                Some(context) => batch.with_trace_context(&context, limits),
                None => batch,
            },
        )
    }

    fn map_record(
        &self,
        record: &Record<'_>,
        value: Bytes,
        limits: &DecodeLimits,
    ) -> Result<EventBatch, Box<InvalidRecord>> {
        let mode = kafka_mode(record.headers);
        let result = match mode {
            KafkaMode::NotCloudEvent => self
                .plain(record, value, &[], limits)
                .map_err(|error| classify(record, None, error))?,
            _ => decode_kafka(record.headers, value, limits).map_err(|error| {
                let mode = match mode {
                    KafkaMode::Binary => "binary",
                    KafkaMode::Structured => "structured",
                    _ => "unsupported",
                };
                classify(record, Some(mode), error)
            })?,
        };
        if mode == KafkaMode::NotCloudEvent {
            // The plain mapping set the overrides already.
            return Ok(result);
        }
        super::with_overrides(result, &self.overrides, limits)
            .map_err(|error| classify(record, Some("binary"), error))
    }

    /// The event sent to the dead-letter sink for an invalid record: the plain mapping of the
    /// record (with its value as data when it fits the limit, else without data) and the
    /// extensions `knativeerrordest` (the source), `knativeerrorcode` (400 or 413) and
    /// `knativeerrordata` (the error message, base64-encoded, as Knative encodes response
    /// bodies).
    pub fn dead_letter_event(
        &self,
        record: &Record<'_>,
        value: Bytes,
        error: &InvalidRecord,
        limits: &DecodeLimits,
    ) -> Result<EventBatch, DecodeError> {
        let message = base64::engine::general_purpose::STANDARD.encode(error.to_string());
        let code = error.code().to_string();
        let extra: [(&str, &[u8]); 3] = [
            ("knativeerrordest", self.source_base.as_bytes()),
            ("knativeerrorcode", code.as_bytes()),
            ("knativeerrordata", message.as_bytes()),
        ];
        // The record's CloudEvents headers are left out: they are what is wrong.
        let headers: Vec<(&str, Option<&[u8]>)> = record
            .headers
            .iter()
            .filter(|(name, _)| !name.starts_with("ce_"))
            .copied()
            .collect();
        let plain = Record {
            headers: &headers,
            ..*record
        };
        let with_data = self.plain(&plain, value, &extra, limits);
        match with_data {
            Err(e) if e.is_too_large() => self.plain(&plain, Bytes::new(), &extra, limits),
            other => other,
        }
    }

    /// Knative's mapping of a record that is not a CloudEvent, with `extra` extensions.
    fn plain(
        &self,
        record: &Record<'_>,
        value: Bytes,
        extra: &[(&str, &[u8])],
        limits: &DecodeLimits,
    ) -> Result<EventBatch, DecodeError> {
        let id = format!("partition:{}/offset:{}", record.partition, record.offset);
        let source = format!("{}#{}", self.source_base, record.topic);
        let subject = format!("partition:{}#{}", record.partition, record.offset);
        let time = record.timestamp_ms.and_then(format_millis);
        let key = record.key.map(String::from_utf8_lossy);
        let mut content_type = None;
        // Header extensions: sanitized names, later headers replacing earlier ones.
        let mut header_exts: Vec<(String, String)> = Vec::new();
        for (name, value) in record.headers {
            let value = String::from_utf8_lossy(value.unwrap_or_default());
            if name.eq_ignore_ascii_case("content-type") {
                content_type = Some(value.to_lowercase());
                continue;
            }
            let ext = format!("kafkaheader{}", sanitize(name));
            header_exts.retain(|(n, _)| *n != ext);
            header_exts.push((ext, value.into_owned()));
        }
        let mut fields: Vec<(&str, &[u8])> = Vec::with_capacity(8 + header_exts.len());
        fields.push(("specversion", b"1.0"));
        fields.push(("id", id.as_bytes()));
        fields.push(("source", source.as_bytes()));
        fields.push(("type", KAFKA_EVENT_TYPE.as_bytes()));
        fields.push(("subject", subject.as_bytes()));
        if let Some(time) = &time {
            fields.push(("time", time.as_bytes()));
        }
        let overridden = |name: &str| {
            self.overrides.iter().any(|(n, _)| n == name) || extra.iter().any(|(n, _)| *n == name)
        };
        if let Some(key) = &key {
            for name in ["key", "partitionkey"] {
                if !overridden(name) {
                    fields.push((name, key.as_bytes()));
                }
            }
        }
        for (name, value) in &header_exts {
            if !overridden(name) {
                fields.push((name.as_str(), value.as_bytes()));
            }
        }
        for (name, value) in &self.overrides {
            if !extra.iter().any(|(n, _)| n == name) {
                fields.push((name.as_str(), value.as_bytes()));
            }
        }
        fields.extend_from_slice(extra);
        decode_attributes(
            &fields,
            content_type.as_deref().map(str::as_bytes),
            value,
            limits,
        )
    }
}

/// Turns a decode error into the record's error.
fn classify(
    record: &Record<'_>,
    mode: Option<&'static str>,
    error: DecodeError,
) -> Box<InvalidRecord> {
    let (topic, partition, offset) = (record.topic.to_owned(), record.partition, record.offset);
    if error.is_too_large() || matches!(error.kind, DecodeErrorKind::BodyTooLarge(_)) {
        return Box::new(InvalidRecord::TooLarge {
            topic,
            partition,
            offset,
            error,
        });
    }
    Box::new(match mode {
        Some(mode) => InvalidRecord::NotACloudEvent {
            topic,
            partition,
            offset,
            mode,
            error,
        },
        None => InvalidRecord::Unmappable {
            topic,
            partition,
            offset,
            error,
        },
    })
}

/// A header name as an extension-name suffix: lower case, `a-z0-9` only.
fn sanitize(name: &str) -> String {
    name.chars()
        .flat_map(char::to_lowercase)
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .collect()
}

/// Milliseconds since the epoch as RFC 3339 in UTC, with milliseconds.
fn format_millis(ms: i64) -> Option<String> {
    let time = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(ms)?;
    Some(time.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
}

impl fmt::Display for Record<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.topic, self.partition, self.offset)
    }
}

#[cfg(test)]
mod tests;
