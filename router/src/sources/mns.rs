//! A minimal MNS queue client: `ReceiveMessage` (long polling) and `DeleteMessage`, signed as
//! Alibaba's "Sign requests" page specifies (string-to-sign and HMAC-SHA1 in
//! `triggerfish_core::sources::mns`).
//!
//! Every request carries `Date`, `x-mns-version: 2015-06-06`, `Content-Type` and
//! `Authorization: MNS <AccessKeyId>:<Signature>`; none has a body, so none has `Content-MD5`.
//! Responses are read with a size limit. The AccessKey secret is only ever passed to the HMAC.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use http_body_util::Full;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use triggerfish_core::sources::mns::{
    API_VERSION, Message, authorization, parse_error, parse_message, sign, string_to_sign,
};

use crate::body::read_limited;
use crate::sinks::http::HttpClient;
use crate::sources::Secret;

/// The largest response read: a message is at most 64 KiB, base64 makes it 88.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// The content type requests declare, as the official SDKs do.
const CONTENT_TYPE: &str = "text/xml;charset=utf-8";
/// Characters escaped in a receipt handle in the query string (RFC 3986 unreserved are kept).
const QUERY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// Why an MNS request failed.
#[derive(Debug, thiserror::Error)]
pub enum MnsClientError {
    /// The request could not be built (a bad endpoint).
    #[error("invalid MNS request: {0}")]
    Request(String),
    /// No response (connection, timeout).
    #[error("MNS unreachable: {0}")]
    Transport(String),
    /// MNS answered with an error.
    #[error("MNS answered {status} {code}: {message}")]
    Service {
        /// HTTP status.
        status: StatusCode,
        /// MNS error code (`SignatureDoesNotMatch`, `QueueNotExist`, ...).
        code: String,
        /// MNS's message.
        message: String,
    },
    /// MNS answered something we cannot read.
    #[error("unexpected MNS response: {0}")]
    Protocol(String),
}

/// A client for one queue.
#[derive(Clone)]
pub struct MnsClient {
    endpoint: String,
    queue: String,
    access_key_id: Secret,
    access_key_secret: Secret,
    http: HttpClient,
}

impl MnsClient {
    /// A client for `queue` at `endpoint` (`https://{account}.mns.{region}.aliyuncs.com`).
    pub fn new(
        endpoint: &str,
        queue: &str,
        access_key_id: Secret,
        access_key_secret: Secret,
        http: HttpClient,
    ) -> MnsClient {
        MnsClient {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            queue: queue.to_owned(),
            access_key_id,
            access_key_secret,
            http,
        }
    }

    /// `ReceiveMessage`, waiting up to `wait_seconds` for a message; `None` when none came
    /// (`MessageNotExist`).
    pub async fn receive(&self, wait_seconds: u8) -> Result<Option<Message>, MnsClientError> {
        let resource = format!("/queues/{}/messages?waitseconds={wait_seconds}", self.queue);
        let timeout = Duration::from_secs(u64::from(wait_seconds) + 15);
        let (status, body) = self.send(Method::GET, &resource, timeout).await?;
        if status == StatusCode::OK {
            return parse_message(&body)
                .map(Some)
                .map_err(|e| MnsClientError::Protocol(e.to_string()));
        }
        match service_error(status, &body) {
            MnsClientError::Service { code, .. } if code == "MessageNotExist" => Ok(None),
            e => Err(e),
        }
    }

    /// `DeleteMessage` of one receipt.
    pub async fn delete(&self, receipt_handle: &str) -> Result<(), MnsClientError> {
        let resource = format!(
            "/queues/{}/messages?ReceiptHandle={}",
            self.queue,
            utf8_percent_encode(receipt_handle, QUERY)
        );
        let (status, body) = self
            .send(Method::DELETE, &resource, Duration::from_secs(15))
            .await?;
        if status.is_success() {
            Ok(())
        } else {
            Err(service_error(status, &body))
        }
    }

    async fn send(
        &self,
        method: Method,
        resource: &str,
        timeout: Duration,
    ) -> Result<(StatusCode, Bytes), MnsClientError> {
        let date = httpdate::fmt_http_date(SystemTime::now());
        let to_sign = string_to_sign(
            method.as_str(),
            "",
            CONTENT_TYPE,
            &date,
            [("x-mns-version", API_VERSION)],
            resource,
        );
        let id = String::from_utf8_lossy(self.access_key_id.expose());
        let signature = sign(self.access_key_secret.expose(), &to_sign);
        let uri = format!("{}{resource}", self.endpoint);
        let request = http::Request::builder()
            .method(method)
            .uri(&uri)
            .header(http::header::DATE, &date)
            .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
            .header("x-mns-version", API_VERSION)
            .header(
                http::header::AUTHORIZATION,
                HeaderValue::from_str(&authorization(&id, &signature))
                    .map_err(|e| MnsClientError::Request(e.to_string()))?,
            )
            .body(Full::new(Bytes::new()))
            .map_err(|e| MnsClientError::Request(e.to_string()))?;
        let response = tokio::time::timeout(timeout, self.http.request(request))
            .await
            .map_err(|_| MnsClientError::Transport(format!("no answer within {timeout:?}")))?
            .map_err(|e| MnsClientError::Transport(e.to_string()))?;
        let (parts, body) = response.into_parts();
        let body = read_limited(&parts.headers, body, MAX_RESPONSE_BYTES)
            .await
            .map_err(|e| MnsClientError::Transport(e.to_string()))?;
        Ok((parts.status, body))
    }
}

fn service_error(status: StatusCode, body: &[u8]) -> MnsClientError {
    match parse_error(body) {
        Ok(e) => MnsClientError::Service {
            status,
            code: e.code,
            message: e.message,
        },
        Err(_) => MnsClientError::Protocol(format!(
            "status {status} with a body that is not an MNS error"
        )),
    }
}
