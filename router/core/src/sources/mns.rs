//! Alibaba Cloud MNS (Message Service, now Simple Message Queue) wire format, sans-IO: what the
//! OSS source needs to poll a queue and to accept pushes from a topic.
//!
//! - **Request signing** (Alibaba's "Sign requests" page): every request carries
//!   `Authorization: MNS <AccessKeyId>:<Signature>`, where the signature is
//!   `base64(HMAC-SHA1(secret, VERB + "\n" + Content-MD5 + "\n" + Content-Type + "\n" + Date +
//!   "\n" + CanonicalizedMNSHeaders + CanonicalizedResource))`. The canonicalized headers are
//!   the `x-mns-*` headers, names in lowercase, sorted, each written `name:value\n`; the
//!   canonicalized resource is the request path with its query string. See [`string_to_sign`].
//! - **Bodies** ("ReceiveMessage", "DeleteMessage", "Error responses"): a received message is
//!   a `<Message>` XML document ([`parse_message`]); errors are `<Error>` documents with a
//!   `Code` ([`parse_error`]).
//! - **Push** ("Verify the signature of a push request to an HTTP endpoint"): MNS signs the
//!   same kind of string-to-sign (with `Content-Type`) with RSA-SHA1; `Authorization` is the
//!   base64 signature, and `x-mns-signing-cert-url` the base64 URL of the X.509 certificate
//!   holding the public key ([`SigningKey`]). The body is a `<Notification>` XML document, a
//!   JSON object, or the bare message, by the subscription's `NotifyContentFormat`
//!   ([`parse_notification`]).
//! - **Time**: a `Date` more than 15 minutes away from now is refused ([`check_date`]), as
//!   MNS itself does, which bounds replays of captured push requests.
//!
//! What it does not do: send requests, fetch certificates, or read the clock; the router does.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use md5::{Digest as _, Md5};
use rsa::pkcs8::DecodePublicKey as _;
use rsa::{Pkcs1v15Sign, RsaPublicKey};
use serde::Deserialize;
use sha1::Sha1;
use x509_cert::der::Encode as _;

/// The API version every request names in `x-mns-version`.
pub const API_VERSION: &str = "2015-06-06";
/// The largest difference between a request's `Date` and now that MNS accepts.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(15 * 60);
/// The XML namespace of MNS documents.
pub const XML_NAMESPACE: &str = "http://mns.aliyuncs.com/doc/v1/";

/// Why an MNS document or header could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MnsError {
    /// The XML is malformed or lacks a required element.
    #[error("malformed MNS XML: {0}")]
    Xml(String),
    /// The JSON notification is malformed.
    #[error("malformed MNS JSON notification: {0}")]
    Json(String),
    /// A message that should be base64 is not.
    #[error("the message is not valid base64")]
    Base64,
    /// `x-mns-signing-cert-url` is not a base64-encoded URL.
    #[error("x-mns-signing-cert-url is not a base64-encoded URL")]
    CertUrl,
}

/// Why a `Date` header was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DateError {
    /// No `Date` (nor `x-mns-date`).
    #[error("the Date header is missing")]
    Missing,
    /// Not an HTTP date (`Thu, 07 Mar 2012 18:49:58 GMT`).
    #[error("the Date header is not an HTTP date")]
    Malformed,
    /// Too far from now, in the past or the future.
    #[error("the Date header is {0:?} away from now; at most 15 minutes are accepted")]
    Skewed(Duration),
}

/// Why a push request's signature was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PushSignatureError {
    /// No `Authorization` header.
    #[error("the Authorization header is missing")]
    Missing,
    /// `Authorization` is not base64.
    #[error("the Authorization header is not base64")]
    Malformed,
    /// The signature does not verify with the signing certificate.
    #[error("the signature does not match the request")]
    Mismatch,
}

/// Why a signing certificate was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    /// Not a PEM X.509 certificate.
    #[error("not a PEM X.509 certificate: {0}")]
    Parse(String),
    /// The certificate's key is not an RSA key.
    #[error("the certificate does not hold an RSA public key: {0}")]
    NotRsa(String),
}

/// The string-to-sign of a request: `method`, the `Content-MD5`, `Content-Type` and `Date`
/// values (empty when absent), every header (only `x-mns-*` ones are used; names in any case)
/// and the resource (path and query, as sent).
pub fn string_to_sign<'a>(
    method: &str,
    content_md5: &str,
    content_type: &str,
    date: &str,
    headers: impl IntoIterator<Item = (&'a str, &'a str)>,
    resource: &str,
) -> String {
    let mut mns: Vec<(String, &str)> = headers
        .into_iter()
        .filter_map(|(name, value)| {
            let lower = name.to_ascii_lowercase();
            lower.starts_with("x-mns-").then_some((lower, value))
        })
        .collect();
    mns.sort();
    let mut out = format!("{method}\n{content_md5}\n{content_type}\n{date}\n");
    for (name, value) in mns {
        out.push_str(&name);
        out.push(':');
        out.push_str(value);
        out.push('\n');
    }
    out.push_str(resource);
    out
}

/// The signature of a string-to-sign: `base64(HMAC-SHA1(secret, string))`.
pub fn sign(secret: &[u8], string_to_sign: &str) -> String {
    match Hmac::<Sha1>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(string_to_sign.as_bytes());
            BASE64.encode(mac.finalize().into_bytes())
        }
        // HMAC takes keys of any length.
        Err(_) => String::new(),
    }
}

/// The `Authorization` value: `MNS <AccessKeyId>:<Signature>`.
pub fn authorization(access_key_id: &str, signature: &str) -> String {
    format!("MNS {access_key_id}:{signature}")
}

/// `Content-MD5` of a body (RFC 1864: the base64 MD5 digest).
pub fn content_md5(body: &[u8]) -> String {
    BASE64.encode(Md5::digest(body))
}

/// `MessageBodyMD5` of a message body: the MD5 digest in uppercase hex.
pub fn body_md5_hex(body: &[u8]) -> String {
    Md5::digest(body)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// Checks a `Date` header against `now`; returns the date.
pub fn check_date(
    value: Option<&str>,
    now: SystemTime,
    max_skew: Duration,
) -> Result<SystemTime, DateError> {
    let value = value.ok_or(DateError::Missing)?;
    let date = httpdate::parse_http_date(value.trim()).map_err(|_| DateError::Malformed)?;
    let skew = match now.duration_since(date) {
        Ok(d) => d,
        Err(e) => e.duration(),
    };
    if skew > max_skew {
        return Err(DateError::Skewed(skew));
    }
    Ok(date)
}

/// A message received from a queue (`<Message>`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Message {
    /// The message id, unique in the queue.
    pub message_id: String,
    /// The handle that deletes this receipt of the message, valid until `NextVisibleTime`.
    pub receipt_handle: String,
    /// The body.
    #[serde(default)]
    pub message_body: String,
    /// The body's MD5, uppercase hex.
    #[serde(default, rename = "MessageBodyMD5")]
    pub message_body_md5: Option<String>,
    /// When it was sent, milliseconds since the epoch.
    #[serde(default)]
    pub enqueue_time: Option<u64>,
    /// When it becomes visible again unless deleted, milliseconds since the epoch.
    #[serde(default)]
    pub next_visible_time: Option<u64>,
    /// When it was first received, milliseconds since the epoch.
    #[serde(default)]
    pub first_dequeue_time: Option<u64>,
    /// How many times it has been received.
    #[serde(default)]
    pub dequeue_count: Option<u32>,
    /// Its priority.
    #[serde(default)]
    pub priority: Option<u32>,
}

impl Message {
    /// Whether `MessageBodyMD5`, when present, matches the body.
    pub fn body_md5_matches(&self) -> bool {
        self.message_body_md5
            .as_deref()
            .is_none_or(|md5| md5.eq_ignore_ascii_case(&body_md5_hex(self.message_body.as_bytes())))
    }
}

/// An error response (`<Error>`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ErrorResponse {
    /// The error code, e.g. `MessageNotExist`, `SignatureDoesNotMatch`.
    pub code: String,
    /// A message.
    #[serde(default)]
    pub message: String,
    /// The request id.
    #[serde(default)]
    pub request_id: Option<String>,
    /// The host.
    #[serde(default)]
    pub host_id: Option<String>,
}

/// Parses a `ReceiveMessage` response body.
pub fn parse_message(xml: &[u8]) -> Result<Message, MnsError> {
    let text = std::str::from_utf8(xml).map_err(|e| MnsError::Xml(e.to_string()))?;
    let message: Message =
        quick_xml::de::from_str(text).map_err(|e| MnsError::Xml(e.to_string()))?;
    if message.message_id.is_empty() || message.receipt_handle.is_empty() {
        return Err(MnsError::Xml("MessageId or ReceiptHandle is empty".into()));
    }
    Ok(message)
}

/// Parses an error response body.
pub fn parse_error(xml: &[u8]) -> Result<ErrorResponse, MnsError> {
    let text = std::str::from_utf8(xml).map_err(|e| MnsError::Xml(e.to_string()))?;
    quick_xml::de::from_str(text).map_err(|e| MnsError::Xml(e.to_string()))
}

/// A notification pushed to an HTTP endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notification {
    /// The message id, when the format carries it (XML and JSON).
    pub message_id: Option<String>,
    /// The topic, when the format carries it.
    pub topic_name: Option<String>,
    /// The message.
    pub message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct NotificationDoc {
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default)]
    topic_name: Option<String>,
    message: String,
}

/// Parses a push request body in any `NotifyContentFormat`: XML (`<Notification>`), JSON (an
/// object with `Message`), or `SIMPLIFIED` (the body is the message).
pub fn parse_notification(body: &[u8]) -> Result<Notification, MnsError> {
    let text = std::str::from_utf8(body).map_err(|e| MnsError::Xml(e.to_string()))?;
    let trimmed = text.trim_start();
    let doc = if trimmed.starts_with('<') {
        Some(
            quick_xml::de::from_str::<NotificationDoc>(text)
                .map_err(|e| MnsError::Xml(e.to_string()))?,
        )
    } else if trimmed.starts_with('{') {
        // A JSON envelope has `Message` and `TopicOwner`; any other object is a SIMPLIFIED
        // message that happens to be JSON.
        #[derive(Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Probe {
            #[serde(default)]
            topic_owner: Option<serde::de::IgnoredAny>,
        }
        match serde_json::from_str::<Probe>(text) {
            Ok(Probe {
                topic_owner: Some(_),
            }) => Some(
                serde_json::from_str::<NotificationDoc>(text)
                    .map_err(|e| MnsError::Json(e.to_string()))?,
            ),
            _ => None,
        }
    } else {
        None
    };
    Ok(match doc {
        Some(doc) => Notification {
            message_id: doc.message_id,
            topic_name: doc.topic_name,
            message: doc.message,
        },
        None => Notification {
            message_id: None,
            topic_name: None,
            message: text.to_owned(),
        },
    })
}

/// A message's bytes: base64-decoded when `base64` (whitespace ignored), else as is.
pub fn decode_message(message: &str, base64: bool) -> Result<Vec<u8>, MnsError> {
    if !base64 {
        return Ok(message.as_bytes().to_vec());
    }
    let compact: String = message
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    BASE64.decode(compact).map_err(|_| MnsError::Base64)
}

/// The certificate URL of an `x-mns-signing-cert-url` header.
pub fn signing_cert_url(header: &[u8]) -> Result<String, MnsError> {
    let decoded = BASE64
        .decode(header.trim_ascii())
        .map_err(|_| MnsError::CertUrl)?;
    let url = String::from_utf8(decoded).map_err(|_| MnsError::CertUrl)?;
    if url.is_empty() || url.chars().any(char::is_control) {
        return Err(MnsError::CertUrl);
    }
    Ok(url)
}

/// The public key of an MNS signing certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningKey(RsaPublicKey);

impl SigningKey {
    /// Reads the RSA key of a PEM X.509 certificate (the first, if there are several).
    pub fn from_pem(pem: &[u8]) -> Result<SigningKey, CertError> {
        let cert = crate::pem::certificates(pem)
            .next()
            .unwrap_or_else(|| Err("no PEM certificate in it".to_owned()))
            .map_err(CertError::Parse)?;
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .map_err(|e| CertError::Parse(e.to_string()))?;
        RsaPublicKey::from_public_key_der(&spki)
            .map(SigningKey)
            .map_err(|e| CertError::NotRsa(e.to_string()))
    }

    /// Verifies the base64 RSA-SHA1 signature in `authorization` over `string_to_sign`.
    pub fn verify(
        &self,
        string_to_sign: &str,
        authorization: Option<&[u8]>,
    ) -> Result<(), PushSignatureError> {
        let header = authorization.ok_or(PushSignatureError::Missing)?;
        let signature = BASE64
            .decode(header.trim_ascii())
            .map_err(|_| PushSignatureError::Malformed)?;
        let hashed = Sha1::digest(string_to_sign.as_bytes());
        self.0
            .verify(Pkcs1v15Sign::new::<Sha1>(), &hashed, &signature)
            .map_err(|_| PushSignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_to_sign_canonicalizes_mns_headers() {
        let s = string_to_sign(
            "GET",
            "",
            "text/xml;charset=utf-8",
            "Thu, 07 Mar 2012 18:49:58 GMT",
            [
                ("X-MNS-Version", "2015-06-06"),
                ("host", "1.mns.cn-hangzhou.aliyuncs.com"),
                ("x-mns-date", "x"),
            ],
            "/queues/q/messages?waitseconds=10",
        );
        assert_eq!(
            s,
            "GET\n\ntext/xml;charset=utf-8\nThu, 07 Mar 2012 18:49:58 GMT\nx-mns-date:x\nx-mns-version:2015-06-06\n/queues/q/messages?waitseconds=10"
        );
        // HMAC-SHA1 known answer (RFC 2202 test case 2).
        assert_eq!(
            sign(b"Jefe", "what do ya want for nothing?"),
            BASE64.encode([
                0xef, 0xfc, 0xdf, 0x6a, 0xe5, 0xeb, 0x2f, 0xa2, 0xd2, 0x74, 0x16, 0xd5, 0xf1, 0x84,
                0xdf, 0x9c, 0x25, 0x9a, 0x7c, 0x79
            ])
        );
        assert_eq!(authorization("id", "sig"), "MNS id:sig");
        assert_eq!(content_md5(b""), "1B2M2Y8AsgTpgAmY7PhCfg==");
        assert_eq!(body_md5_hex(b""), "D41D8CD98F00B204E9800998ECF8427E");
    }

    #[test]
    fn dates_are_checked_for_skew() {
        // 7 March 2012 was a Wednesday (Alibaba's example says Thursday, which HTTP date
        // parsers refuse).
        let now = httpdate::parse_http_date("Wed, 07 Mar 2012 18:49:58 GMT").unwrap();
        let ok = check_date(Some("Wed, 07 Mar 2012 18:40:00 GMT"), now, MAX_CLOCK_SKEW);
        assert!(ok.is_ok());
        assert_eq!(
            check_date(Some("Wed, 07 Mar 2012 19:05:00 GMT"), now, MAX_CLOCK_SKEW),
            Err(DateError::Skewed(Duration::from_secs(902)))
        );
        assert_eq!(
            check_date(None, now, MAX_CLOCK_SKEW),
            Err(DateError::Missing)
        );
        assert_eq!(
            check_date(Some("yesterday"), now, MAX_CLOCK_SKEW),
            Err(DateError::Malformed)
        );
    }

    #[test]
    fn parses_receive_message_and_error_bodies() {
        // The response example of the ReceiveMessage page.
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<Message xmlns="http://mns.aliyuncs.com/doc/v1/">
  <MessageId>5F290C926D472878-2-14D9529A8FA-200000001</MessageId>
  <ReceiptHandle>1-ODU4OTkzNDU5My0xNDMyNzI3ODI3LTItOA==</ReceiptHandle>
  <MessageBodyMD5>C5DD56A39F5F7BB8B3337C6D11B6D8C7</MessageBodyMD5>
  <MessageBody>This is a test message</MessageBody>
  <EnqueueTime>1250700979248</EnqueueTime>
  <NextVisibleTime>1250700799348</NextVisibleTime>
  <FirstDequeueTime>1250700779318</FirstDequeueTime>
  <DequeueCount>1</DequeueCount>
  <Priority>8</Priority>
</Message>"#;
        let m = parse_message(xml).unwrap();
        assert_eq!(m.receipt_handle, "1-ODU4OTkzNDU5My0xNDMyNzI3ODI3LTItOA==");
        assert_eq!(m.message_body, "This is a test message");
        assert_eq!(m.dequeue_count, Some(1));
        // The documentation's MD5 is made up; a real one matches.
        assert!(!m.body_md5_matches());
        let real = Message {
            message_body_md5: Some(body_md5_hex(b"This is a test message")),
            ..m
        };
        assert!(real.body_md5_matches());
        let escaped = br#"<Message><MessageId>1</MessageId><ReceiptHandle>h</ReceiptHandle><MessageBody>a &lt;b&gt; &amp; c</MessageBody></Message>"#;
        assert_eq!(parse_message(escaped).unwrap().message_body, "a <b> & c");
        assert!(parse_message(b"<Message><MessageId>1</MessageId>").is_err());

        let error = br#"<?xml version="1.0" encoding="UTF-8"?>
<Error xmlns="http://mns.aliyuncs.com/doc/v1/">
  <Code>MessageNotExist</Code>
  <Message>Message not exist.</Message>
  <RequestId>5DE1F5C2F9E3A47C6E000001</RequestId>
  <HostId>http://1.mns.cn-hangzhou.aliyuncs.com</HostId>
</Error>"#;
        assert_eq!(parse_error(error).unwrap().code, "MessageNotExist");
    }

    #[test]
    fn parses_notifications_in_every_format() {
        let xml = br#"<?xml version="1.0" encoding="utf-8"?>
<Notification xmlns="http://mns.aliyuncs.com/doc/v1/">
  <TopicOwner>1692545896541241</TopicOwner>
  <TopicName>MyTopic</TopicName>
  <Subscriber>1692545896541241</Subscriber>
  <SubscriptionName>bing-test3</SubscriptionName>
  <MessageId>C39FB8C345BBFBA8-1-1687F6FAADD-200000015</MessageId>
  <MessageMD5>CAA1E9F5E9F854ACD8297B100BF8CCF9</MessageMD5>
  <Message>eyJldmVudHMiOiBbXX0=</Message>
  <PublishTime>1548748299565</PublishTime>
</Notification>"#;
        let n = parse_notification(xml).unwrap();
        assert_eq!(n.topic_name.as_deref(), Some("MyTopic"));
        assert_eq!(
            decode_message(&n.message, true).unwrap(),
            b"{\"events\": []}"
        );
        let json = br#"{"TopicOwner":"1692545896541241","Message":"hello","Subscriber":"1","PublishTime":1548748299565,"SubscriptionName":"s","MessageMD5":"x","TopicName":"MyTopic","MessageId":"C39FB8C345BBFBA8-1-1687F6FAADD-200000015"}"#;
        assert_eq!(parse_notification(json).unwrap().message, "hello");
        let simplified = br#"{"events": []}"#;
        assert_eq!(
            parse_notification(simplified).unwrap().message,
            "{\"events\": []}"
        );
        assert!(parse_notification(b"<Notification>").is_err());
        assert_eq!(decode_message("***", true), Err(MnsError::Base64));
        assert_eq!(
            signing_cert_url(BASE64.encode("https://x.aliyuncs.com/c.pem").as_bytes()).unwrap(),
            "https://x.aliyuncs.com/c.pem"
        );
        assert_eq!(signing_cert_url(b"%%"), Err(MnsError::CertUrl));
    }

    #[test]
    fn signing_keys_come_from_whole_certificates_only() {
        let fixture = |name: &str| {
            std::fs::read(format!(
                "{}/../tests/fixtures/mns/{name}",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap()
        };
        assert!(SigningKey::from_pem(&fixture("signing-cert.pem")).is_ok());
        // A certificate cut short inside a DER length (x509-cert's PEM reader never returned),
        // a key instead of a certificate, nothing at all.
        for bad in [
            b"-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".to_vec(),
            fixture("signing-key.pem"),
            Vec::new(),
        ] {
            assert!(
                matches!(SigningKey::from_pem(&bad), Err(CertError::Parse(_))),
                "{}",
                String::from_utf8_lossy(&bad)
            );
        }
    }
}
