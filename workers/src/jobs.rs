//! From an event to a job, and from a job's end to a reply event.
//!
//! **Requests.** Three kinds of event name an object to process:
//! - an OSS object-created event: type `oss:ObjectCreated:<Op>` (source `acs.oss`), whose
//!   `data` is the OSS notification record (`eventName`, `region`, `oss.bucket.name`,
//!   `oss.object.key`, `size`, `eTag`), or MNS's `{"events": [record]}`; the subject
//!   `acs:oss:<region>:<account>:<bucket>/<key>` is used when the record lacks them;
//! - an S3-style notification: `data` is `{"Records": [{"eventName": "ObjectCreated:...",
//!   "s3": {"bucket": {"name"}, "object": {"key", "size", "eTag"}}}]}`, or one such record
//!   alone (what an `S3Source` publishes, as `com.amazonaws.s3.ObjectCreated:*`), whatever the
//!   event type;
//! - `dev.triggerfish.media.requested`, whose `data` is `{"uri": "..."}`: `s3://bucket/key`,
//!   `oss://bucket/key`, or `file:///path` (local stores only, inside their root).
//!
//! Keys are URL-decoded as each provider encodes them: S3 form-encodes (`+` is a space), OSS
//! and URIs percent-encode. A decoded key that escapes its bucket (absolute, or with a `..`
//! segment) is refused. One event is one job: a notification carrying several records is
//! refused rather than half processed.
//!
//! **Replies.** A job ends in one reply event, built as JSON and decoded with
//! [`triggerfish_core::event::decode_structured`] into an [`EventBatch`] the router can
//! publish: `dev.triggerfish.media.completed` (data: the input, the pipeline's
//! [`Summary`] and the artifacts' URIs) or
//! `dev.triggerfish.media.failed` (data: the input, a [`FailureReason`] code, the limit for
//! `limit_exceeded`, and a message). Both carry the job id in the `mediajobid` extension, the
//! input key as `subject`, and the input's `traceparent`/`tracestate`.
//!
//! What this module does not do: queue jobs or own threads (that is [`crate::pool`]).

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use bytes::Bytes;
use serde::Serialize;
use serde_json::{Value, json};
use triggerfish_core::event::{Data, DecodeLimits, EventBatch, EventView, decode_structured};

use crate::decode::DecodeError;
use crate::limits::{Limit, Stop};
use crate::pipelines::{Pipeline, PipelineError, Summary};
use crate::store::{FetchError, Location, StoreError, check_key};

/// The type of a completed job's reply.
pub const COMPLETED: &str = "dev.triggerfish.media.completed";
/// The type of a failed job's reply.
pub const FAILED: &str = "dev.triggerfish.media.failed";
/// The type of an explicit request (`data: {"uri": "..."}`).
pub const REQUESTED: &str = "dev.triggerfish.media.requested";
/// The extension carrying the job id on replies.
pub const JOB_ID_EXTENSION: &str = "mediajobid";

/// Where a request came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// An OSS notification.
    Oss,
    /// An S3-style notification.
    S3,
    /// A `dev.triggerfish.media.requested` event.
    Uri,
}

/// An object to process, as an event names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// The object.
    pub location: Location,
    /// Its size, when the notification says.
    pub size: Option<u64>,
    /// Its ETag, when the notification says.
    pub etag: Option<String>,
    /// The region, when the notification says.
    pub region: Option<String>,
    /// The kind of event.
    pub origin: Origin,
}

impl Request {
    /// The key (or, for a `file://` request, the path) the reply's `subject` carries.
    pub fn subject(&self) -> String {
        match &self.location {
            Location::Object { key, .. } => key.clone(),
            Location::File(path) => path.display().to_string(),
        }
    }
}

/// Why an event is not a job.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Neither an object-created notification nor a media request.
    #[error(
        "event type {ty:?} is not a media request: expected oss:ObjectCreated:*, an S3 notification or {REQUESTED}"
    )]
    NotMedia {
        /// The event's type.
        ty: String,
    },
    /// An object notification, but not of a creation.
    #[error("{event_name:?} is not an object creation")]
    NotCreated {
        /// The notification's event name.
        event_name: String,
    },
    /// The event's data does not say which object.
    #[error("{0}")]
    Malformed(String),
    /// The key escapes its bucket.
    #[error("object key {key:?} is refused: {why}")]
    UnsafeKey {
        /// The decoded key.
        key: String,
        /// Why.
        why: &'static str,
    },
}

/// Reads the request an event carries.
pub fn parse_request(view: &EventView<'_>) -> Result<Request, RequestError> {
    let ty = view.ty();
    if ty.starts_with("oss:") {
        if !ty.starts_with("oss:ObjectCreated:") {
            return Err(RequestError::NotCreated {
                event_name: ty.to_owned(),
            });
        }
        return parse_oss(view);
    }
    if ty == REQUESTED {
        return parse_uri(&data_json(view)?);
    }
    // An S3-style notification, whatever the type it was wrapped in: the whole notification,
    // or one of its records (an `S3Source` publishes each record as an event).
    match data_json(view) {
        Ok(data) if data.get("Records").is_some() => parse_s3(&data),
        Ok(data) if data.get("s3").is_some() => parse_s3_record(&data),
        _ => Err(RequestError::NotMedia { ty: ty.to_owned() }),
    }
}

fn data_json(view: &EventView<'_>) -> Result<Value, RequestError> {
    let bytes = match view.data() {
        Data::None => return Err(RequestError::Malformed("the event has no data".into())),
        data => data.to_bytes(),
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| RequestError::Malformed(format!("the event's data is not JSON: {e}")))
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

fn u64_at(v: &Value, path: &[&str]) -> Option<u64> {
    let v = path.iter().try_fold(v, |v, k| v.get(k))?;
    v.as_u64().or_else(|| v.as_str()?.parse().ok())
}

fn checked(bucket: String, key: String) -> Result<Location, RequestError> {
    if bucket.is_empty() {
        return Err(RequestError::Malformed("the bucket name is empty".into()));
    }
    check_key(&key).map_err(|why| RequestError::UnsafeKey {
        key: key.clone(),
        why,
    })?;
    Ok(Location::Object { bucket, key })
}

/// Percent-decoding (`%2F` → `/`; `+` stays `+`).
fn percent_decoded(raw: &str) -> Result<String, RequestError> {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| RequestError::Malformed(format!("key {raw:?} is not UTF-8 once decoded")))
}

/// Form decoding, as S3 encodes keys in notifications (`+` is a space).
fn form_decoded(raw: &str) -> Result<String, RequestError> {
    percent_decoded(&raw.replace('+', " "))
}

fn parse_oss(view: &EventView<'_>) -> Result<Request, RequestError> {
    let data = data_json(view).unwrap_or(Value::Null);
    // EventBridge delivers the record as data; MNS wraps records in {"events": [...]}.
    let record = match data.get("events").and_then(Value::as_array) {
        Some(events) if events.len() == 1 => &events[0],
        Some(events) => {
            return Err(RequestError::Malformed(format!(
                "the notification carries {} records; one job takes one",
                events.len()
            )));
        }
        None => &data,
    };
    if let Some(name) = str_at(record, &["eventName"])
        && !name.starts_with("ObjectCreated")
    {
        return Err(RequestError::NotCreated {
            event_name: name.to_owned(),
        });
    }
    let from_data = str_at(record, &["oss", "bucket", "name"])
        .zip(str_at(record, &["oss", "object", "key"]))
        .map(|(b, k)| Ok::<_, RequestError>((b.to_owned(), percent_decoded(k)?)));
    let (bucket, key) = match from_data {
        Some(found) => found?,
        // acs:oss:<region>:<account>:<bucket>/<key>
        None => {
            let subject = view.subject().unwrap_or_default();
            let rest = subject
                .strip_prefix("acs:oss:")
                .and_then(|r| r.splitn(3, ':').nth(2))
                .and_then(|r| r.split_once('/'))
                .ok_or_else(|| {
                    RequestError::Malformed(format!(
                        "no oss.bucket.name/oss.object.key in the data, and subject {subject:?} is not acs:oss:<region>:<account>:<bucket>/<key>"
                    ))
                })?;
            (rest.0.to_owned(), percent_decoded(rest.1)?)
        }
    };
    Ok(Request {
        location: checked(bucket, key)?,
        size: u64_at(record, &["oss", "object", "size"]),
        etag: str_at(record, &["oss", "object", "eTag"]).map(str::to_owned),
        region: str_at(record, &["region"]).map(str::to_owned),
        origin: Origin::Oss,
    })
}

fn parse_s3(data: &Value) -> Result<Request, RequestError> {
    let records = data
        .get("Records")
        .and_then(Value::as_array)
        .ok_or_else(|| RequestError::Malformed("Records is not a list".into()))?;
    let [record] = records.as_slice() else {
        return Err(RequestError::Malformed(format!(
            "the notification carries {} records; one job takes one",
            records.len()
        )));
    };
    parse_s3_record(record)
}

/// One record of an S3-style notification.
fn parse_s3_record(record: &Value) -> Result<Request, RequestError> {
    let name = str_at(record, &["eventName"]).unwrap_or_default();
    if !name.contains("ObjectCreated") {
        return Err(RequestError::NotCreated {
            event_name: name.to_owned(),
        });
    }
    let bucket = str_at(record, &["s3", "bucket", "name"])
        .ok_or_else(|| RequestError::Malformed("no s3.bucket.name in the record".into()))?;
    let key = str_at(record, &["s3", "object", "key"])
        .ok_or_else(|| RequestError::Malformed("no s3.object.key in the record".into()))?;
    Ok(Request {
        location: checked(bucket.to_owned(), form_decoded(key)?)?,
        size: u64_at(record, &["s3", "object", "size"]),
        etag: str_at(record, &["s3", "object", "eTag"]).map(str::to_owned),
        region: str_at(record, &["awsRegion"]).map(str::to_owned),
        origin: Origin::S3,
    })
}

fn parse_uri(data: &Value) -> Result<Request, RequestError> {
    let raw = str_at(data, &["uri"]).ok_or_else(|| {
        RequestError::Malformed(format!("{REQUESTED} needs data {{\"uri\": \"...\"}}"))
    })?;
    let url =
        url::Url::parse(raw).map_err(|e| RequestError::Malformed(format!("uri {raw:?}: {e}")))?;
    let location = match url.scheme() {
        "s3" | "oss" => {
            let bucket = url.host_str().unwrap_or_default().to_owned();
            let key = percent_decoded(url.path().trim_start_matches('/'))?;
            checked(bucket, key)?
        }
        "file" => {
            let path: PathBuf = url.to_file_path().map_err(|()| {
                RequestError::Malformed(format!("uri {raw:?} is not a local path"))
            })?;
            Location::File(path)
        }
        other => {
            return Err(RequestError::Malformed(format!(
                "uri scheme {other:?} is not supported; use s3://, oss:// or file://"
            )));
        }
    };
    Ok(Request {
        location,
        size: None,
        etag: None,
        region: None,
        origin: Origin::Uri,
    })
}

/// The reason code of a failed job (`data.reason` of `dev.triggerfish.media.failed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// Not a media format FFmpeg reads, or no stream the pipeline needs.
    UnsupportedFormat,
    /// A recognised format whose data is damaged (truncated, no index, undecodable).
    CorruptInput,
    /// Over one of the pool's limits; `data.limit` names it.
    LimitExceeded,
    /// Over `limits.maxWallTime`.
    Timeout,
    /// The object could not be read: missing, refused (another bucket, outside the root), or
    /// the store failed.
    FetchFailed,
    /// The event does not name an object this pool can process (not an object creation, no
    /// key, a key that escapes its bucket).
    InvalidRequest,
    /// Our side failed: a model, writing artifacts, or a bug (a caught panic).
    InternalError,
}

impl FailureReason {
    /// The code.
    pub const fn code(self) -> &'static str {
        match self {
            FailureReason::UnsupportedFormat => "unsupported_format",
            FailureReason::CorruptInput => "corrupt_input",
            FailureReason::LimitExceeded => "limit_exceeded",
            FailureReason::Timeout => "timeout",
            FailureReason::FetchFailed => "fetch_failed",
            FailureReason::InvalidRequest => "invalid_request",
            FailureReason::InternalError => "internal_error",
        }
    }

    /// Every reason, for metrics.
    pub const ALL: [FailureReason; 7] = [
        FailureReason::UnsupportedFormat,
        FailureReason::CorruptInput,
        FailureReason::LimitExceeded,
        FailureReason::Timeout,
        FailureReason::FetchFailed,
        FailureReason::InvalidRequest,
        FailureReason::InternalError,
    ];
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Why a job failed: a reason code, the limit for `limit_exceeded`, and a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct JobError {
    /// The code.
    pub reason: FailureReason,
    /// The limit, for [`FailureReason::LimitExceeded`].
    pub limit: Option<Limit>,
    /// What happened.
    pub message: String,
}

impl JobError {
    /// An error without a limit.
    pub fn new(reason: FailureReason, message: impl Into<String>) -> JobError {
        JobError {
            reason,
            limit: None,
            message: message.into(),
        }
    }

    fn limit(limit: Limit, message: impl Into<String>) -> JobError {
        JobError {
            reason: FailureReason::LimitExceeded,
            limit: Some(limit),
            message: message.into(),
        }
    }

    fn stopped(stop: Stop) -> JobError {
        match stop {
            Stop::Deadline => JobError::new(
                FailureReason::Timeout,
                "the job ran past limits.maxWallTime",
            ),
            Stop::Cancelled => {
                JobError::new(FailureReason::InternalError, "the worker pool shut down")
            }
        }
    }
}

impl From<RequestError> for JobError {
    fn from(e: RequestError) -> Self {
        JobError::new(FailureReason::InvalidRequest, e.to_string())
    }
}

impl From<FetchError> for JobError {
    fn from(e: FetchError) -> Self {
        match e {
            FetchError::TooLarge { .. } => JobError::limit(Limit::MaxInputBytes, e.to_string()),
            FetchError::Stopped(stop) => JobError::stopped(stop),
            e => JobError::new(FailureReason::FetchFailed, e.to_string()),
        }
    }
}

impl From<StoreError> for JobError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Stopped(stop) => JobError::stopped(stop),
            e => JobError::new(FailureReason::InternalError, e.to_string()),
        }
    }
}

impl From<PipelineError> for JobError {
    fn from(e: PipelineError) -> Self {
        match e {
            PipelineError::Decode(DecodeError::Unsupported(m)) => {
                JobError::new(FailureReason::UnsupportedFormat, m)
            }
            PipelineError::Decode(DecodeError::Corrupt(m)) => {
                JobError::new(FailureReason::CorruptInput, m)
            }
            PipelineError::Decode(DecodeError::Limit { limit, detail }) => {
                JobError::limit(limit, detail)
            }
            PipelineError::Decode(DecodeError::Stopped(stop)) => JobError::stopped(stop),
            PipelineError::Decode(e @ DecodeError::Io { .. }) => {
                JobError::new(FailureReason::FetchFailed, e.to_string())
            }
            e => JobError::new(FailureReason::InternalError, e.to_string()),
        }
    }
}

/// What a reply says about the event that asked for the job.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InputEvent {
    /// `id`.
    pub id: String,
    /// `source`.
    pub source: String,
    /// `type`.
    pub ty: String,
    /// `subject`.
    pub subject: Option<String>,
    /// The `traceparent` extension, carried to the reply.
    pub traceparent: Option<String>,
    /// The `tracestate` extension, carried to the reply.
    pub tracestate: Option<String>,
}

impl InputEvent {
    /// Copies what a reply needs out of `view`.
    pub fn from_view(view: &EventView<'_>) -> InputEvent {
        let ext = |name: &str| {
            view.extension(name)
                .map(|v| v.with_canonical_str(str::to_owned))
        };
        InputEvent {
            id: view.id().to_owned(),
            source: view.source().to_owned(),
            ty: view.ty().to_owned(),
            subject: view.subject().map(str::to_owned),
            traceparent: ext("traceparent"),
            tracestate: ext("tracestate"),
        }
    }
}

/// Everything a reply is built from.
#[derive(Clone, Debug)]
pub struct Job {
    /// The job id (`mediajobid`), a UUIDv7.
    pub id: String,
    /// The pool's `source` for replies: `/triggerfish/workerpools/<namespace>/<name>`.
    pub source: String,
    /// The pipeline.
    pub pipeline: Pipeline,
    /// The input event.
    pub input: InputEvent,
    /// The request, when the event held one.
    pub request: Option<Request>,
}

impl Job {
    /// A new job id.
    pub fn new_id() -> String {
        uuid::Uuid::now_v7().to_string()
    }

    fn input_json(&self, uri: Option<String>) -> Value {
        let mut input = json!({
            "event": {"id": self.input.id, "source": self.input.source, "type": self.input.ty},
        });
        if let Some(request) = &self.request {
            match &request.location {
                Location::Object { bucket, key } => {
                    input["bucket"] = json!(bucket);
                    input["key"] = json!(key);
                }
                Location::File(path) => input["path"] = json!(path.display().to_string()),
            }
            input["origin"] = json!(request.origin);
            if let Some(size) = request.size {
                input["size"] = json!(size);
            }
            if let Some(etag) = &request.etag {
                input["etag"] = json!(etag);
            }
            if let Some(region) = &request.region {
                input["region"] = json!(region);
            }
        }
        if let Some(uri) = uri {
            input["uri"] = json!(uri);
        }
        input
    }

    fn envelope(&self, ty: &str, data: Value) -> Value {
        let mut event = json!({
            "specversion": "1.0",
            "id": uuid::Uuid::now_v7().to_string(),
            "source": self.source,
            "type": ty,
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            "datacontenttype": "application/json",
            JOB_ID_EXTENSION: self.id,
            "data": data,
        });
        let subject = match &self.request {
            Some(r) => Some(r.subject()),
            None => self.input.subject.clone(),
        };
        if let Some(subject) = subject.filter(|s| !s.is_empty()) {
            event["subject"] = json!(subject);
        }
        if let Some(tp) = &self.input.traceparent {
            event["traceparent"] = json!(tp);
        }
        if let Some(ts) = &self.input.tracestate {
            event["tracestate"] = json!(ts);
        }
        event
    }

    /// The `dev.triggerfish.media.completed` reply. `input_uri` is the input's URI in the
    /// store.
    pub fn completed(&self, summary: &Summary, input_uri: Option<String>) -> EventBatch {
        let mut summary_json = serde_json::to_value(summary).unwrap_or(Value::Null);
        // Thumbnails are listed by count and pattern, not one by one: a long video has
        // thousands, and the event must stay small.
        let artifacts = artifact_index(&summary.artifacts);
        if let Some(map) = summary_json.as_object_mut() {
            map.remove("artifacts");
        }
        let mut data = json!({
            "input": self.input_json(input_uri),
            "pipeline": self.pipeline.name(),
            "summary": summary_json,
            "artifacts": artifacts,
        });
        if serde_json::to_vec(&data).map_or(0, |v| v.len()) > MAX_DATA_BYTES {
            // Keep the event under the broker's size limit: drop the lists (the artifacts
            // have them all).
            if let Some(s) = data["summary"].as_object_mut() {
                if let Some(v) = s.get_mut("video").and_then(Value::as_object_mut) {
                    v.insert("text".into(), json!([]));
                    v.remove("sprite");
                }
                if let Some(v) = s.get_mut("speech").and_then(Value::as_object_mut) {
                    v.insert("segments".into(), json!([]));
                }
                s.insert("truncated".into(), json!(true));
            }
        }
        self.build(COMPLETED, data)
    }

    /// The `dev.triggerfish.media.failed` reply.
    pub fn failed(&self, error: &JobError, input_uri: Option<String>) -> EventBatch {
        let mut data = json!({
            "input": self.input_json(input_uri),
            "pipeline": self.pipeline.name(),
            "reason": error.reason,
            "message": truncate(&error.message, 4096),
        });
        if let Some(limit) = error.limit {
            data["limit"] = json!(limit);
        }
        self.build(FAILED, data)
    }

    fn build(&self, ty: &str, data: Value) -> EventBatch {
        let event = self.envelope(ty, data);
        let bytes = serde_json::to_vec(&event).unwrap_or_default();
        match decode_structured(Bytes::from(bytes), &DecodeLimits::default()) {
            Ok(batch) => batch,
            Err(e) => {
                // Our own JSON must decode; if it does not (an input field broke a rule),
                // reply with the bare minimum rather than nothing.
                tracing::error!(error = %e, job = %self.id, "reply event did not decode");
                let minimal = json!({
                    "specversion": "1.0",
                    "id": uuid::Uuid::now_v7().to_string(),
                    "source": self.source,
                    "type": FAILED,
                    JOB_ID_EXTENSION: self.id,
                    "datacontenttype": "application/json",
                    "data": {"reason": FailureReason::InternalError, "message": format!("the reply event did not decode: {e}")},
                });
                let bytes = serde_json::to_vec(&minimal).unwrap_or_default();
                decode_structured(Bytes::from(bytes), &DecodeLimits::default())
                    .unwrap_or_else(|_| unreachable_batch())
            }
        }
    }
}

/// Largest `data` of a completed event before its lists are dropped.
const MAX_DATA_BYTES: usize = 128 * 1024;

/// An event that always decodes: fixed ASCII, no input in it.
fn unreachable_batch() -> EventBatch {
    const FIXED: &str = r#"{"specversion":"1.0","id":"triggerfish-media-internal","source":"/triggerfish/workerpools","type":"dev.triggerfish.media.failed","data":{"reason":"internal_error"}}"#;
    // Decoding a constant, valid event; an error here would be a bug in the decoder.
    match decode_structured(
        Bytes::from_static(FIXED.as_bytes()),
        &DecodeLimits::default(),
    ) {
        Ok(batch) => batch,
        Err(e) => panic!("the fixed fallback event must decode: {e}"),
    }
}

fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Artifacts for the reply: every file but the thumbnails by name, the thumbnails by count,
/// first and last URI (their names are `thumbs/0000.jpg`, `thumbs/0001.jpg`, …).
fn artifact_index(all: &BTreeMap<String, String>) -> Value {
    let mut files = serde_json::Map::new();
    let thumbs: Vec<&String> = all
        .iter()
        .filter(|(name, _)| name.starts_with("thumbs/"))
        .map(|(_, uri)| uri)
        .collect();
    for (name, uri) in all.iter().filter(|(name, _)| !name.starts_with("thumbs/")) {
        files.insert(name.clone(), json!(uri));
    }
    if let (Some(first), Some(last)) = (thumbs.first(), thumbs.last()) {
        files.insert(
            "thumbs".into(),
            json!({"count": thumbs.len(), "first": first, "last": last}),
        );
    }
    Value::Object(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view_of(json: &str) -> EventBatch {
        decode_structured(Bytes::from(json.to_owned()), &DecodeLimits::default()).unwrap()
    }

    fn parse(json: &str) -> Result<Request, RequestError> {
        let batch = view_of(json);
        parse_request(&batch.get(0).unwrap())
    }

    fn object(bucket: &str, key: &str) -> Location {
        Location::Object {
            bucket: bucket.into(),
            key: key.into(),
        }
    }

    #[test]
    fn oss_events_name_the_object() {
        let r = parse(
            r#"{"specversion":"1.0","id":"1","source":"acs.oss","type":"oss:ObjectCreated:PutObject",
            "subject":"acs:oss:cn-hangzhou:123:media/in/a%20b.mp4",
            "data":{"eventName":"ObjectCreated:PutObject","region":"cn-hangzhou",
              "oss":{"bucket":{"name":"media"},"object":{"key":"in/a%20b+c.mp4","size":1234,"eTag":"abc"}}}}"#,
        )
        .unwrap();
        assert_eq!(r.location, object("media", "in/a b+c.mp4"));
        assert_eq!(
            (r.size, r.etag.as_deref(), r.region.as_deref()),
            (Some(1234), Some("abc"), Some("cn-hangzhou"))
        );
        assert_eq!(r.origin, Origin::Oss);
        // Without a record, the subject names it.
        let r = parse(
            r#"{"specversion":"1.0","id":"1","source":"acs.oss","type":"oss:ObjectCreated:PostObject",
            "subject":"acs:oss:cn-hangzhou:123:media/in/x%2By.mp4","data":{}}"#,
        )
        .unwrap();
        assert_eq!(r.location, object("media", "in/x+y.mp4"));
        // MNS's wrapper.
        let r = parse(
            r#"{"specversion":"1.0","id":"1","source":"acs.oss","type":"oss:ObjectCreated:PutObject",
            "data":{"events":[{"eventName":"ObjectCreated:PutObject","oss":{"bucket":{"name":"b"},"object":{"key":"k.wav"}}}]}}"#,
        )
        .unwrap();
        assert_eq!(r.location, object("b", "k.wav"));
    }

    #[test]
    fn s3_keys_are_form_decoded() {
        let r = parse(
            r#"{"specversion":"1.0","id":"1","source":"s3","type":"com.amazonaws.s3.notification",
            "data":{"Records":[{"eventName":"ObjectCreated:Put","awsRegion":"us-east-1",
              "s3":{"bucket":{"name":"b"},"object":{"key":"my+video%2B1.mp4","size":"99","eTag":"e"}}}]}}"#,
        )
        .unwrap();
        assert_eq!(r.location, object("b", "my video+1.mp4"));
        assert_eq!(r.size, Some(99));
        assert_eq!(r.origin, Origin::S3);
    }

    /// The batch a source publishes for `events`, as the router decodes it.
    fn published(events: &[triggerfish_core::sources::SourceEvent]) -> EventBatch {
        let body = triggerfish_core::sources::encode_batch(events);
        let decoded =
            triggerfish_core::event::decode_batched(body, &DecodeLimits::default()).unwrap();
        assert!(decoded.rejected.is_empty(), "{:?}", decoded.rejected);
        decoded.batch
    }

    #[test]
    fn bucket_watch_events_are_requests() {
        use triggerfish_core::sources::oss::{LocalObject, local_notification, parse_notification};
        // A file name that looks percent-encoded, with a space, a plus and a non-ASCII letter.
        let name = "talks/a%41 b+é.mp4";
        let body = local_notification(&[LocalObject {
            bucket: "media",
            key: name,
            size: 42,
            etag: "2a-17",
            event_time: "2026-11-30T07:00:00Z",
            account: "local",
        }]);
        let batch = published(&parse_notification(&body).unwrap());
        let r = parse_request(&batch.get(0).unwrap()).unwrap();
        assert_eq!(r.location, object("media", name));
        assert_eq!(r.origin, Origin::Oss);
    }

    #[test]
    fn s3_source_events_are_requests() {
        // What an `S3Source` publishes for a MinIO notification: one event per record, the
        // record as its data.
        let notification = r#"{"EventName":"s3:ObjectCreated:Put","Key":"media/in/a+b%2B1.mp4","Records":[{"eventVersion":"2.0","eventSource":"minio:s3","awsRegion":"","eventTime":"2026-11-30T07:00:00.000Z","eventName":"s3:ObjectCreated:Put","responseElements":{"x-amz-request-id":"17CB5E2D1E3C7A9F"},"s3":{"s3SchemaVersion":"1.0","bucket":{"name":"media","arn":"arn:aws:s3:::media"},"object":{"key":"in/a+b%2B1.mp4","size":2048,"eTag":"e1"}}},{"eventVersion":"2.0","eventSource":"minio:s3","eventName":"s3:ObjectRemoved:Delete","s3":{"bucket":{"name":"media"},"object":{"key":"in/old.mp4"}}}]}"#;
        let batch = published(
            &triggerfish_core::sources::s3::parse_notification(notification.as_bytes()).unwrap(),
        );
        let created = parse_request(&batch.get(0).unwrap()).unwrap();
        assert_eq!(created.location, object("media", "in/a b+1.mp4"));
        assert_eq!(
            (created.size, created.etag.as_deref()),
            (Some(2048), Some("e1"))
        );
        assert_eq!(created.origin, Origin::S3);
        let removed = parse_request(&batch.get(1).unwrap()).unwrap_err();
        assert!(
            matches!(removed, RequestError::NotCreated { ref event_name } if event_name == "s3:ObjectRemoved:Delete"),
            "{removed:?}"
        );
    }

    #[test]
    fn artifact_uris_read_back_as_requests() {
        use std::sync::Arc;
        use std::sync::atomic::AtomicBool;
        use std::time::Duration;

        use triggerfish_core::config::{LocalStoreSpec, ObjectStoreSpec, S3StoreSpec};

        use crate::limits::Deadline;
        use crate::store::Store;

        let requested = |uri: &str| {
            let event = json!({"specversion": "1.0", "id": "1", "source": "/t", "type": REQUESTED,
                "data": {"uri": uri}});
            parse(&event.to_string()).unwrap().location
        };
        let key = "out/a b%41+é.mp4/probe.json";
        // A local store: the URI is an absolute file:// URI of the written file.
        let dir = tempfile::tempdir().unwrap();
        let local = Store::new(&ObjectStoreSpec::Local(LocalStoreSpec {
            root: dir.path().to_path_buf(),
        }))
        .unwrap();
        let deadline = Deadline::after(Duration::from_secs(10), Arc::new(AtomicBool::new(false)));
        let uri = local
            .put("b", key, "application/json", b"{}".to_vec(), &deadline)
            .unwrap();
        assert!(uri.starts_with("file:///"), "{uri}");
        let location = requested(&uri);
        assert_eq!(location, Location::File(dir.path().join("b").join(key)));
        assert_eq!(
            local.resolve(&location).unwrap(),
            ("b".to_owned(), key.to_owned())
        );
        // An S3 store: s3://bucket/key, the key percent-encoded.
        let s3 = Store::new(&ObjectStoreSpec::S3(S3StoreSpec::default())).unwrap();
        let uri = s3.uri("media", key);
        assert_eq!(uri, "s3://media/out/a%20b%2541%2B%C3%A9.mp4/probe.json");
        assert_eq!(requested(&uri), object("media", key));
    }

    #[test]
    fn uri_requests() {
        let r = parse(
            r#"{"specversion":"1.0","id":"1","source":"/cli","type":"dev.triggerfish.media.requested","data":{"uri":"s3://b/dir/a%20b.mp4"}}"#,
        )
        .unwrap();
        assert_eq!(r.location, object("b", "dir/a b.mp4"));
        let r = parse(
            r#"{"specversion":"1.0","id":"1","source":"/cli","type":"dev.triggerfish.media.requested","data":{"uri":"file:///srv/b/x.mp4"}}"#,
        )
        .unwrap();
        assert_eq!(r.location, Location::File("/srv/b/x.mp4".into()));
    }

    #[test]
    fn bad_requests_are_refused_with_the_reason() {
        let cases = [
            (
                r#"{"specversion":"1.0","id":"1","source":"acs.oss","type":"oss:ObjectRemoved:DeleteObject","data":{}}"#,
                "not an object creation",
            ),
            (
                r#"{"specversion":"1.0","id":"1","source":"x","type":"com.example.other","data":{"a":1}}"#,
                "not a media request",
            ),
            (
                r#"{"specversion":"1.0","id":"1","source":"x","type":"dev.triggerfish.media.requested","data":{"uri":"http://x/y"}}"#,
                "not supported",
            ),
            (
                r#"{"specversion":"1.0","id":"1","source":"x","type":"dev.triggerfish.media.requested","data":{"uri":"s3://b/..%2Fetc%2Fpasswd"}}"#,
                "refused",
            ),
            (
                r#"{"specversion":"1.0","id":"1","source":"acs.oss","type":"oss:ObjectCreated:PutObject","data":{"oss":{"bucket":{"name":"b"},"object":{"key":"%2Fetc%2Fpasswd"}}}}"#,
                "absolute",
            ),
            (
                r#"{"specversion":"1.0","id":"1","source":"s3","type":"t","data":{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"a/../../x"}}}]}}"#,
                "'..'",
            ),
            (
                r#"{"specversion":"1.0","id":"1","source":"s3","type":"t","data":{"Records":[]}}"#,
                "0 records",
            ),
        ];
        for (event, expected) in cases {
            let err = parse(event).unwrap_err().to_string();
            assert!(err.contains(expected), "{event}: {err}");
            assert_eq!(
                JobError::from(parse(event).unwrap_err()).reason,
                FailureReason::InvalidRequest
            );
        }
    }

    fn job(request: Option<Request>) -> Job {
        Job {
            id: "job-1".into(),
            source: "/triggerfish/workerpools/default/media".into(),
            pipeline: Pipeline::Video,
            input: InputEvent {
                id: "in-1".into(),
                source: "acs.oss".into(),
                ty: "oss:ObjectCreated:PutObject".into(),
                subject: None,
                traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
                tracestate: None,
            },
            request,
        }
    }

    #[test]
    fn failed_replies_carry_the_reason_and_the_limit() {
        let request = Request {
            location: object("b", "in/x.mp4"),
            size: None,
            etag: None,
            region: None,
            origin: Origin::Oss,
        };
        let err = JobError::limit(Limit::MaxPixels, "100000x100000");
        let batch = job(Some(request)).failed(&err, Some("s3://b/in/x.mp4".into()));
        let v = batch.get(0).unwrap();
        assert_eq!(v.ty(), FAILED);
        assert_eq!(v.subject(), Some("in/x.mp4"));
        assert_eq!(
            v.extension(JOB_ID_EXTENSION).unwrap().as_str(),
            Some("job-1")
        );
        assert!(v.extension("traceparent").is_some());
        let data: Value = serde_json::from_slice(&v.data().to_bytes()).unwrap();
        assert_eq!(data["reason"], "limit_exceeded");
        assert_eq!(data["limit"], "maxPixels");
        assert_eq!(data["input"]["key"], "in/x.mp4");
        assert_eq!(data["input"]["uri"], "s3://b/in/x.mp4");
        // A request that did not parse still gets a reply.
        let batch = job(None).failed(&JobError::new(FailureReason::InvalidRequest, "x"), None);
        assert_eq!(batch.get(0).unwrap().ty(), FAILED);
    }

    #[test]
    fn artifact_index_lists_thumbnails_by_count() {
        let mut all = BTreeMap::new();
        all.insert("probe.json".to_owned(), "s3://b/p".to_owned());
        for i in 0..3 {
            all.insert(format!("thumbs/{i:04}.jpg"), format!("s3://b/t{i}"));
        }
        let v = artifact_index(&all);
        assert_eq!(v["probe.json"], "s3://b/p");
        assert_eq!(v["thumbs"]["count"], 3);
        assert_eq!(v["thumbs"]["last"], "s3://b/t2");
    }
}
