//! OSS event notifications, mapped the way Alibaba Cloud EventBridge maps them.
//!
//! OSS publishes a notification to MNS as `{"events": [record, ...]}` (base64-encoded in the
//! MNS message; decoding it is the caller's job, see [`crate::sources::mns`]). Each record
//! becomes one event:
//!
//! | attribute | value |
//! |---|---|
//! | `type` | `oss:` + `eventName`, e.g. `oss:ObjectCreated:PutObject` |
//! | `source` | `acs.oss` |
//! | `subject` | `acs:oss:<region>:<account>:<bucket>/<key>` |
//! | `time` | `eventTime` |
//! | `id` | `<responseElements.requestId>-<index of the record>` |
//! | `data` | the record, byte for byte |
//!
//! The region is the record's `region` (else the bucket ARN's); the account is the bucket
//! ARN's (`acs:oss:<region>:<account>:<bucket>`), else `oss.bucket.ownerIdentity`, else
//! `userIdentity.principalId`. A record without a request id gets a digest of its bytes instead,
//! so ids stay stable across redeliveries either way.
//!
//! A notification is all or nothing: one bad record (no key, a key with `..`, no event name)
//! rejects the notification, so that its sender retries it rather than losing part of it.
//!
//! [`local_notification`] builds the same records for files of a local directory (the
//! `BucketWatch` source), with region `local`.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::sources::{KeyError, SourceEvent, check_key, digest_id, encode_key, rfc3339};

/// `source` of every OSS event.
pub const SOURCE: &str = "acs.oss";
/// Prefix of every OSS event type.
pub const TYPE_PREFIX: &str = "oss:";
/// The region of [`local_notification`] records.
pub const LOCAL_REGION: &str = "local";

/// Why an OSS notification was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OssError {
    /// The body is not JSON of the shape `{"events": [...]}`.
    #[error("not an OSS notification: {0}")]
    Malformed(String),
    /// `events` is empty.
    #[error("the notification has no events")]
    Empty,
    /// One record is invalid; nothing of the notification is published.
    #[error("events[{index}]: {error}")]
    Record {
        /// The record's index in `events`.
        index: usize,
        /// What is wrong with it.
        error: RecordError,
    },
}

/// What is wrong with one record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The record does not have the OSS record shape.
    #[error("not an OSS event record: {0}")]
    Malformed(String),
    /// `eventName` is empty.
    #[error("eventName is empty")]
    NoEventName,
    /// `oss.bucket.name` is empty.
    #[error("oss.bucket.name is empty")]
    NoBucket,
    /// The object key is missing or unsafe.
    #[error("oss.object.key: {0}")]
    Key(#[from] KeyError),
}

#[derive(Deserialize)]
struct Notification<'a> {
    #[serde(borrow)]
    events: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    #[serde(default)]
    event_name: String,
    #[serde(default)]
    event_time: Option<String>,
    #[serde(default)]
    region: Option<String>,
    oss: Oss,
    #[serde(default)]
    response_elements: Option<ResponseElements>,
    #[serde(default)]
    user_identity: Option<UserIdentity>,
}

#[derive(Deserialize)]
struct Oss {
    bucket: Bucket,
    #[serde(default)]
    object: Option<Object>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Bucket {
    #[serde(default)]
    name: String,
    #[serde(default)]
    arn: Option<String>,
    #[serde(default)]
    owner_identity: Option<String>,
}

#[derive(Deserialize)]
struct Object {
    #[serde(default)]
    key: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ResponseElements {
    #[serde(default)]
    request_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserIdentity {
    #[serde(default)]
    principal_id: Option<String>,
}

/// Parses a notification and maps each record; all records or an error.
pub fn parse_notification(body: &[u8]) -> Result<Vec<SourceEvent>, OssError> {
    let notification: Notification<'_> =
        serde_json::from_slice(body).map_err(|e| OssError::Malformed(e.to_string()))?;
    if notification.events.is_empty() {
        return Err(OssError::Empty);
    }
    notification
        .events
        .iter()
        .enumerate()
        .map(|(index, raw)| {
            map_record(index, raw).map_err(|error| OssError::Record { index, error })
        })
        .collect()
}

/// Maps one record, the `index`th of its notification.
pub fn map_record(index: usize, raw: &RawValue) -> Result<SourceEvent, RecordError> {
    let record: Record =
        serde_json::from_str(raw.get()).map_err(|e| RecordError::Malformed(e.to_string()))?;
    if record.event_name.is_empty() {
        return Err(RecordError::NoEventName);
    }
    let bucket = &record.oss.bucket;
    if bucket.name.is_empty() {
        return Err(RecordError::NoBucket);
    }
    let key = record
        .oss
        .object
        .as_ref()
        .and_then(|o| o.key.as_deref())
        .unwrap_or("");
    check_key(key)?;
    // acs:oss:<region>:<account>:<bucket>
    let mut arn = bucket.arn.as_deref().unwrap_or("").splitn(5, ':').skip(2);
    let (arn_region, arn_account) = (arn.next(), arn.next());
    let region = record
        .region
        .as_deref()
        .filter(|r| !r.is_empty())
        .or(arn_region)
        .unwrap_or("");
    let account = arn_account
        .filter(|a| !a.is_empty())
        .or(bucket.owner_identity.as_deref())
        .or(record
            .user_identity
            .as_ref()
            .and_then(|u| u.principal_id.as_deref()))
        .unwrap_or("");
    let request_id = record
        .response_elements
        .as_ref()
        .and_then(|r| r.request_id.as_deref())
        .filter(|r| !r.is_empty());
    let id = match request_id {
        Some(request) => format!("{request}-{index}"),
        None => format!("{}-{index}", digest_id(&[raw.get().as_bytes()])),
    };
    Ok(SourceEvent {
        id,
        source: SOURCE.to_owned(),
        ty: format!("{TYPE_PREFIX}{}", record.event_name),
        subject: Some(format!("acs:oss:{region}:{account}:{}/{key}", bucket.name)),
        time: rfc3339(record.event_time.as_deref()),
        extensions: Vec::new(),
        data: raw.to_owned(),
    })
}

/// A file of a local directory, as [`local_notification`] describes it.
#[derive(Clone, Debug)]
pub struct LocalObject<'a> {
    /// The bucket (the directory's name in events).
    pub bucket: &'a str,
    /// The path relative to the directory, with `/` separators.
    pub key: &'a str,
    /// Size in bytes.
    pub size: u64,
    /// A version tag: identical for identical content and metadata (the watcher uses size and
    /// modification time).
    pub etag: &'a str,
    /// When the file was written, RFC 3339.
    pub event_time: &'a str,
    /// The account in the subject and ARN.
    pub account: &'a str,
}

/// An OSS notification (`{"events": [...]}`) with one `ObjectCreated:PutObject` record per
/// object, in region [`LOCAL_REGION`]. Keys are percent-encoded as OSS encodes them, so that
/// a consumer decodes a file named `a%41 b.mp4` back to that name. Its request id is derived
/// from the objects, so the same file version always maps to the same event id.
pub fn local_notification(objects: &[LocalObject<'_>]) -> Vec<u8> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct OutRecord<'a> {
        event_name: &'static str,
        event_source: &'static str,
        event_time: &'a str,
        event_version: &'static str,
        oss: OutOss<'a>,
        region: &'static str,
        request_parameters: OutRequestParameters,
        response_elements: OutResponseElements,
        user_identity: OutUserIdentity<'a>,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct OutOss<'a> {
        bucket: OutBucket<'a>,
        object: OutObject<'a>,
        oss_schema_version: &'static str,
        rule_id: &'static str,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct OutBucket<'a> {
        arn: String,
        name: &'a str,
        owner_identity: &'a str,
        virtual_bucket: &'static str,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct OutObject<'a> {
        delta_size: u64,
        e_tag: &'a str,
        key: String,
        size: u64,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct OutRequestParameters {
        #[serde(rename = "sourceIPAddress")]
        source_ip_address: &'static str,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct OutResponseElements {
        request_id: String,
    }
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct OutUserIdentity<'a> {
        principal_id: &'a str,
    }
    #[derive(Serialize)]
    struct Out<'a> {
        events: Vec<OutRecord<'a>>,
    }
    let events = objects
        .iter()
        .map(|o| OutRecord {
            event_name: "ObjectCreated:PutObject",
            event_source: "acs:oss",
            event_time: o.event_time,
            event_version: "1.0",
            oss: OutOss {
                bucket: OutBucket {
                    arn: format!("acs:oss:{LOCAL_REGION}:{}:{}", o.account, o.bucket),
                    name: o.bucket,
                    owner_identity: o.account,
                    virtual_bucket: "",
                },
                object: OutObject {
                    delta_size: o.size,
                    e_tag: o.etag,
                    key: encode_key(o.key).to_string(),
                    size: o.size,
                },
                oss_schema_version: "1.0",
                rule_id: "bucketwatch",
            },
            region: LOCAL_REGION,
            request_parameters: OutRequestParameters {
                source_ip_address: "127.0.0.1",
            },
            response_elements: OutResponseElements {
                request_id: digest_id(&[o.bucket.as_bytes(), o.key.as_bytes(), o.etag.as_bytes()]),
            },
            user_identity: OutUserIdentity {
                principal_id: o.account,
            },
        })
        .collect();
    // Serializing these plain structs cannot fail.
    serde_json::to_vec(&Out { events }).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of Alibaba Cloud's "OSS event notification message format" page (two
    /// records, the second a copy).
    pub(crate) const EXAMPLE: &str = r#"{"events": [{
        "eventName": "ObjectCreated:PutObject",
        "eventSource": "acs:oss",
        "eventTime": "2016-07-01T11:17:30.000Z",
        "eventVersion": "1.0",
        "oss": {
            "bucket": {
                "arn": "acs:oss:cn-shenzhen:1148930107246818:event-notification-test",
                "name": "event-notification-test",
                "ownerIdentity": "1148930107246818",
                "virtualBucket": ""},
            "object": {
                "deltaSize": 122539,
                "eTag": "688A7BF4F233DC9C88A80BF985AB7329",
                "key": "test.jpg",
                "size": 122539},
            "ossSchemaVersion": "1.0",
            "ruleId": "9adac8e253828f4f7c0466d941fa3db81161****"},
        "region": "cn-shenzhen",
        "requestParameters": {"sourceIPAddress": "140.205.***.***"},
        "responseElements": {"requestId": "5775D18A4C3BB62F7B0A12BD"},
        "userIdentity": {"principalId": "1148930107246818"}
    }, {
        "eventName": "ObjectCreated:CopyObject",
        "eventTime": "2016-07-01T11:17:31.000Z",
        "oss": {"bucket": {"name": "event-notification-test", "ownerIdentity": "1148930107246818"},
                "object": {"key": "dir/copy of test.jpg", "size": 122539}},
        "region": "cn-shenzhen",
        "responseElements": {"requestId": "5775D18A4C3BB62F7B0A12BD"}
    }]}"#;

    #[test]
    fn maps_records_like_eventbridge() {
        let events = parse_notification(EXAMPLE.as_bytes()).unwrap();
        assert_eq!(events.len(), 2);
        let e = &events[0];
        assert_eq!(e.ty, "oss:ObjectCreated:PutObject");
        assert_eq!(e.source, "acs.oss");
        assert_eq!(
            e.subject.as_deref(),
            Some("acs:oss:cn-shenzhen:1148930107246818:event-notification-test/test.jpg")
        );
        assert_eq!(e.time.as_deref(), Some("2016-07-01T11:17:30.000Z"));
        assert_eq!(e.id, "5775D18A4C3BB62F7B0A12BD-0");
        assert!(e.data.get().contains("\"ruleId\""));
        let e = &events[1];
        assert_eq!(e.id, "5775D18A4C3BB62F7B0A12BD-1");
        assert_eq!(
            e.subject.as_deref(),
            Some(
                "acs:oss:cn-shenzhen:1148930107246818:event-notification-test/dir/copy of test.jpg"
            )
        );
    }

    #[test]
    fn one_bad_record_rejects_the_notification() {
        let no_key = r#"{"events": [{"eventName": "ObjectCreated:PutObject", "oss": {"bucket": {"name": "b"}, "object": {"size": 1}}}]}"#;
        assert_eq!(
            parse_notification(no_key.as_bytes()),
            Err(OssError::Record {
                index: 0,
                error: RecordError::Key(KeyError::Missing)
            })
        );
        let climbing = EXAMPLE.replace("dir/copy of test.jpg", "../../etc/passwd");
        assert!(matches!(
            parse_notification(climbing.as_bytes()),
            Err(OssError::Record {
                index: 1,
                error: RecordError::Key(KeyError::DotDot(_))
            })
        ));
        assert!(matches!(
            parse_notification(&EXAMPLE.as_bytes()[..200]),
            Err(OssError::Malformed(_))
        ));
        assert_eq!(
            parse_notification(b"{\"events\": []}"),
            Err(OssError::Empty)
        );
        assert!(matches!(
            parse_notification(b"{\"events\": [1]}"),
            Err(OssError::Record {
                index: 0,
                error: RecordError::Malformed(_)
            })
        ));
    }

    #[test]
    fn ids_without_request_id_are_stable_digests() {
        let body = r#"{"events": [{"eventName": "ObjectRemoved:DeleteObject", "oss": {"bucket": {"name": "b"}, "object": {"key": "k"}}}]}"#;
        let a = parse_notification(body.as_bytes()).unwrap();
        let b = parse_notification(body.as_bytes()).unwrap();
        assert_eq!(a[0].id, b[0].id);
        assert!(a[0].id.ends_with("-0"));
        assert_eq!(a[0].subject.as_deref(), Some("acs:oss:::b/k"));
    }

    #[test]
    fn local_notifications_map_like_oss_ones() {
        let body = local_notification(&[LocalObject {
            bucket: "media",
            key: "talks/intro.mp4",
            size: 42,
            etag: "2a-17",
            event_time: "2024-05-01T10:00:00Z",
            account: "local",
        }]);
        let events = parse_notification(&body).unwrap();
        assert_eq!(events[0].ty, "oss:ObjectCreated:PutObject");
        assert_eq!(
            events[0].subject.as_deref(),
            Some("acs:oss:local:local:media/talks/intro.mp4")
        );
        let again = parse_notification(&body).unwrap();
        assert_eq!(events[0].id, again[0].id);
        // Keys are percent-encoded, as OSS sends them.
        let body = local_notification(&[LocalObject {
            bucket: "media",
            key: "talks/a%41 b+é.mp4",
            size: 42,
            etag: "2a-17",
            event_time: "2024-05-01T10:00:00Z",
            account: "local",
        }]);
        let events = parse_notification(&body).unwrap();
        let record: serde_json::Value = serde_json::from_str(events[0].data.get()).unwrap();
        assert_eq!(
            record["oss"]["object"]["key"],
            "talks/a%2541%20b%2B%C3%A9.mp4"
        );
    }
}
