//! S3-style event notifications (`{"Records": [...]}`), as AWS S3 defines them and MinIO's
//! webhook target sends them.
//!
//! Each record becomes one event:
//!
//! | attribute | value |
//! |---|---|
//! | `type` | `com.amazonaws.s3.` + `eventName` without MinIO's `s3:` prefix, e.g. `com.amazonaws.s3.ObjectCreated:Put` |
//! | `source` | `eventSource` (`aws:s3`, `minio:s3`) |
//! | `subject` | the object's ARN: `<bucket ARN>/<key>`, e.g. `arn:aws:s3:::images/cats/1.jpg` |
//! | `time` | `eventTime` |
//! | `id` | `<responseElements.x-amz-request-id>-<index>`, else a digest of the record |
//! | `data` | the record, byte for byte |
//!
//! Keys arrive URL-encoded (`+` for a space); the subject holds the decoded key, which must be
//! safe ([`check_key`]). S3's `s3:TestEvent` (sent when a notification is configured) maps to no
//! event. A notification is all or nothing, like OSS's.

use percent_encoding::percent_decode_str;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::sources::{KeyError, SourceEvent, check_key, digest_id, rfc3339};

/// Prefix of every S3 event type.
pub const TYPE_PREFIX: &str = "com.amazonaws.s3.";

/// Why an S3 notification was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum S3Error {
    /// The body is not JSON of the shape `{"Records": [...]}` (nor a test event).
    #[error("not an S3 notification: {0}")]
    Malformed(String),
    /// One record is invalid; nothing of the notification is published.
    #[error("Records[{index}]: {error}")]
    Record {
        /// The record's index.
        index: usize,
        /// What is wrong with it.
        error: S3RecordError,
    },
}

/// What is wrong with one record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum S3RecordError {
    /// The record does not have the S3 record shape.
    #[error("not an S3 event record: {0}")]
    Malformed(String),
    /// `eventName` is empty.
    #[error("eventName is empty")]
    NoEventName,
    /// `s3.bucket.name` is empty.
    #[error("s3.bucket.name is empty")]
    NoBucket,
    /// The key is not valid URL-encoded UTF-8.
    #[error("s3.object.key is not URL-encoded UTF-8")]
    KeyEncoding,
    /// The object key is missing or unsafe.
    #[error("s3.object.key: {0}")]
    Key(#[from] KeyError),
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Notification<'a> {
    #[serde(borrow, default)]
    records: Option<Vec<&'a RawValue>>,
    #[serde(default)]
    event: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    #[serde(default)]
    event_name: String,
    #[serde(default)]
    event_source: Option<String>,
    #[serde(default)]
    event_time: Option<String>,
    s3: S3,
    #[serde(default)]
    response_elements: Option<ResponseElements>,
}

#[derive(Deserialize)]
struct S3 {
    bucket: Bucket,
    #[serde(default)]
    object: Option<Object>,
}

#[derive(Deserialize)]
struct Bucket {
    #[serde(default)]
    name: String,
    #[serde(default)]
    arn: Option<String>,
}

#[derive(Deserialize)]
struct Object {
    #[serde(default)]
    key: Option<String>,
}

#[derive(Deserialize)]
struct ResponseElements {
    #[serde(rename = "x-amz-request-id", default)]
    request_id: Option<String>,
}

/// Parses a notification and maps each record; all records (none for a test event) or an
/// error.
pub fn parse_notification(body: &[u8]) -> Result<Vec<SourceEvent>, S3Error> {
    let notification: Notification<'_> =
        serde_json::from_slice(body).map_err(|e| S3Error::Malformed(e.to_string()))?;
    let Some(records) = notification.records else {
        return match notification.event.as_deref() {
            Some("s3:TestEvent") => Ok(Vec::new()),
            _ => Err(S3Error::Malformed("no Records".into())),
        };
    };
    records
        .iter()
        .enumerate()
        .map(|(index, raw)| {
            map_record(index, raw).map_err(|error| S3Error::Record { index, error })
        })
        .collect()
}

fn map_record(index: usize, raw: &RawValue) -> Result<SourceEvent, S3RecordError> {
    let record: Record =
        serde_json::from_str(raw.get()).map_err(|e| S3RecordError::Malformed(e.to_string()))?;
    let name = record
        .event_name
        .strip_prefix("s3:")
        .unwrap_or(&record.event_name);
    if name.is_empty() {
        return Err(S3RecordError::NoEventName);
    }
    let bucket = &record.s3.bucket;
    if bucket.name.is_empty() {
        return Err(S3RecordError::NoBucket);
    }
    let encoded = record
        .s3
        .object
        .as_ref()
        .and_then(|o| o.key.as_deref())
        .unwrap_or("");
    let spaced = encoded.replace('+', " ");
    let key = percent_decode_str(&spaced)
        .decode_utf8()
        .map_err(|_| S3RecordError::KeyEncoding)?;
    check_key(&key)?;
    let arn = match bucket.arn.as_deref().filter(|a| !a.is_empty()) {
        Some(arn) => arn.to_owned(),
        None => format!("arn:aws:s3:::{}", bucket.name),
    };
    let request_id = record
        .response_elements
        .as_ref()
        .and_then(|r| r.request_id.as_deref())
        .filter(|r| !r.is_empty());
    let id = match request_id {
        Some(request) => format!("{request}-{index}"),
        None => format!("{}-{index}", digest_id(&[raw.get().as_bytes()])),
    };
    let source = record
        .event_source
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "aws:s3".to_owned());
    Ok(SourceEvent {
        id,
        source,
        ty: format!("{TYPE_PREFIX}{name}"),
        subject: Some(format!("{arn}/{key}")),
        time: rfc3339(record.event_time.as_deref()),
        extensions: Vec::new(),
        data: raw.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A MinIO webhook notification (MinIO's documentation, "Bucket Notifications").
    const MINIO: &str = r#"{"EventName":"s3:ObjectCreated:Put","Key":"images/cats/tabby%2B1.jpg","Records":[{"eventVersion":"2.0","eventSource":"minio:s3","awsRegion":"","eventTime":"2023-05-04T10:12:33.527Z","eventName":"s3:ObjectCreated:Put","userIdentity":{"principalId":"minioadmin"},"requestParameters":{"principalId":"minioadmin","region":"","sourceIPAddress":"127.0.0.1"},"responseElements":{"content-length":"0","x-amz-id-2":"dd9025bab4ad464b049177c95eb6ebf374d3b3fd1af9251148b658df7ac2e3e8","x-amz-request-id":"175C2D4A38A2F5A3","x-minio-deployment-id":"f2c6e4a3-0ad4-4f5d-9b0c-2c3d8e1f0a11","x-minio-origin-endpoint":"http://127.0.0.1:9000"},"s3":{"s3SchemaVersion":"1.0","configurationId":"Config","bucket":{"name":"images","ownerIdentity":{"principalId":"minioadmin"},"arn":"arn:aws:s3:::images"},"object":{"key":"cats/tabby+%2B1.jpg","size":48213,"eTag":"5d41402abc4b2a76b9719d911017c592","contentType":"image/jpeg","userMetadata":{"content-type":"image/jpeg"},"sequencer":"175C2D4A38C0D9C1"}},"source":{"host":"127.0.0.1","port":"","userAgent":"MinIO (linux; amd64) minio-go/v7.0.50"}}]}"#;

    #[test]
    fn maps_minio_records() {
        let events = parse_notification(MINIO.as_bytes()).unwrap();
        let e = &events[0];
        assert_eq!(e.ty, "com.amazonaws.s3.ObjectCreated:Put");
        assert_eq!(e.source, "minio:s3");
        assert_eq!(
            e.subject.as_deref(),
            Some("arn:aws:s3:::images/cats/tabby +1.jpg")
        );
        assert_eq!(e.id, "175C2D4A38A2F5A3-0");
        assert_eq!(e.time.as_deref(), Some("2023-05-04T10:12:33.527Z"));
    }

    #[test]
    fn test_events_map_to_nothing_and_bad_records_to_errors() {
        let test = r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2014-10-13T15:57:02.089Z","Bucket":"images","RequestId":"5582815E1AEA5ADF","HostId":"8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE"}"#;
        assert_eq!(parse_notification(test.as_bytes()), Ok(Vec::new()));
        assert!(matches!(
            parse_notification(b"{}"),
            Err(S3Error::Malformed(_))
        ));
        let climbing = MINIO.replace("cats/tabby+%2B1.jpg", "..%2F..%2Fetc%2Fpasswd");
        assert!(matches!(
            parse_notification(climbing.as_bytes()),
            Err(S3Error::Record {
                index: 0,
                error: S3RecordError::Key(KeyError::DotDot(_))
            })
        ));
        let keyless = MINIO.replace(r#""key":"cats/tabby+%2B1.jpg","#, "");
        assert!(matches!(
            parse_notification(keyless.as_bytes()),
            Err(S3Error::Record {
                index: 0,
                error: S3RecordError::Key(KeyError::Missing)
            })
        ));
        let bad_utf8 = MINIO.replace("cats/tabby+%2B1.jpg", "%FF");
        assert!(matches!(
            parse_notification(bad_utf8.as_bytes()),
            Err(S3Error::Record {
                index: 0,
                error: S3RecordError::KeyEncoding
            })
        ));
    }
}
