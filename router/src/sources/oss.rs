//! `OssSource`: OSS event notifications through MNS, by queue polling or HTTP push.
//!
//! **Queue polling** ([`poll`]): one task long-polls the queue with `ReceiveMessage`. For each
//! message it checks `MessageBodyMD5`, base64-decodes the body when configured, maps every
//! record, publishes all of them, and **only then** calls `DeleteMessage`. Anything that stops
//! it before the delete (a crash, a full sink queue, shutdown) leaves the message in the queue,
//! where it becomes visible again after the queue's visibility timeout: at-least-once, and the
//! redelivered events keep their ids (request id and record index). A message that can never
//! be published (not an OSS notification, a record without a key) is logged with its id and
//! deleted, so that it does not come back forever; nothing of it is published. Errors from MNS
//! back off from 1 s to 30 s.
//!
//! **HTTP push** ([`PushHook`]): the endpoint of an MNS topic's HTTP subscription. A request
//! is checked in this order: `Date` within 15 minutes of now (401: stale or replayed);
//! `Content-MD5`, when present, matches the body (400); the signing certificate is the
//! configured one, or the one at the base64 URL of `x-mns-signing-cert-url`, fetched over
//! HTTPS from an allowlisted host and cached (401 for a host not allowed; 503 when it cannot
//! be fetched, so MNS retries); the RSA-SHA1 signature in `Authorization` verifies over the
//! string-to-sign (401); the notification parses and every record maps (400). Then every
//! record is published, or none (202, else 429/503/413, and MNS retries).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use tokio_util::sync::CancellationToken;
use triggerfish_core::config::OssSourceSpec;
use triggerfish_core::sources::mns::{
    self, MAX_CLOCK_SKEW, SigningKey, check_date, decode_message, parse_notification,
    signing_cert_url, string_to_sign,
};
use triggerfish_core::sources::oss::parse_notification as parse_oss;
use triggerfish_core::sources::{SourceEvent, mns::Message};

use crate::body::read_limited;
use crate::sinks::http::HttpClient;
use crate::sources::mns::MnsClient;
use crate::sources::webhook::{Reply, Route, publish};
use crate::sources::{BuildErrors, Built, Context, PublishError, Publisher, Secret};

/// How long the poller waits for room in the sink's queue before it gives up on a message
/// (which then comes back after the queue's visibility timeout).
const POLL_PUBLISH_WAIT: Duration = Duration::from_secs(60);
/// The largest certificate fetched.
const MAX_CERT_BYTES: usize = 64 * 1024;
/// Certificates cached per source.
const MAX_CACHED_CERTS: usize = 16;

/// `OssSource` in queue mode, built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QueueConfig {
    /// The MNS endpoint.
    pub endpoint: String,
    /// The queue.
    pub queue: String,
    /// AccessKey ID.
    pub access_key_id: Secret,
    /// AccessKey secret.
    pub access_key_secret: Secret,
    /// Long-poll wait, 1..=30 s.
    pub wait_seconds: u8,
    /// Whether bodies are base64.
    pub base64: bool,
}

/// `OssSource` in push mode, built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushConfig {
    /// The webhook path.
    pub path: String,
    /// The configured certificate, if any.
    pub certificate: Option<SigningKey>,
    /// Hosts certificates may be fetched from.
    pub certificate_hosts: Vec<String>,
    /// Whether messages are base64.
    pub base64: bool,
}

/// Builds an `OssSource`.
pub(crate) fn build(spec: &OssSourceSpec, check: &mut BuildErrors<'_>) -> Option<Built> {
    match (&spec.queue, &spec.push) {
        (Some(q), None) => {
            if url::Url::parse(&q.endpoint)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .is_none()
            {
                check.at(
                    "queue.endpoint",
                    "expected an http(s) URL such as https://1234.mns.cn-hangzhou.aliyuncs.com",
                );
            }
            if q.queue.is_empty()
                || !q
                    .queue
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            {
                check.at("queue.queue", "a queue name has letters, digits and -");
            }
            let wait_seconds = q.wait_seconds.unwrap_or(30);
            if !(1..=30).contains(&wait_seconds) {
                check.at("queue.waitSeconds", "between 1 and 30");
            }
            let id = check.secret("queue.accessKeyId", &q.access_key_id);
            let secret = check.secret("queue.accessKeySecret", &q.access_key_secret);
            Some(Built::OssQueue(QueueConfig {
                endpoint: q.endpoint.clone(),
                queue: q.queue.clone(),
                access_key_id: id?,
                access_key_secret: secret?,
                wait_seconds,
                base64: q.base64.unwrap_or(true),
            }))
        }
        (None, Some(p)) => {
            let path = check.path(p.path.as_deref(), "osssources");
            let certificate = match &p.certificate {
                Some(file) => match std::fs::read(file) {
                    Ok(pem) => match SigningKey::from_pem(&pem) {
                        Ok(key) => Some(key),
                        Err(e) => {
                            check.at("push.certificate", e.to_string());
                            None
                        }
                    },
                    Err(e) => {
                        check.at(
                            "push.certificate",
                            format!("cannot read {}: {e}", file.display()),
                        );
                        None
                    }
                },
                None => None,
            };
            let certificate_hosts = p
                .certificate_hosts
                .clone()
                .unwrap_or_else(|| vec!["*.aliyuncs.com".to_owned()]);
            Some(Built::OssPush(PushConfig {
                path,
                certificate,
                certificate_hosts,
                base64: p.base64.unwrap_or(true),
            }))
        }
        _ => {
            check.at("", "set exactly one of queue and push");
            None
        }
    }
}

/// Maps a message body (base64-decoded when configured) to events.
fn events_of(message: &str, base64: bool) -> Result<Vec<SourceEvent>, String> {
    let bytes = decode_message(message, base64).map_err(|e| e.to_string())?;
    parse_oss(&bytes).map_err(|e| e.to_string())
}

/// The queue poller. Runs until `stop` is cancelled.
pub async fn poll(
    key: Arc<str>,
    config: QueueConfig,
    publisher: Arc<Publisher>,
    context: Context,
    stop: CancellationToken,
) {
    let client = MnsClient::new(
        &config.endpoint,
        &config.queue,
        config.access_key_id.clone(),
        config.access_key_secret.clone(),
        context.client.clone(),
    );
    let mut backoff = Duration::from_secs(1);
    tracing::info!(source = %key, queue = %config.queue, "polling the MNS queue");
    loop {
        let received = tokio::select! {
            r = client.receive(config.wait_seconds) => r,
            () = stop.cancelled() => return,
        };
        let message = match received {
            Ok(Some(m)) => m,
            Ok(None) => {
                backoff = Duration::from_secs(1);
                continue;
            }
            Err(e) => {
                tracing::warn!(source = %key, error = %e, retry_in = ?backoff, "ReceiveMessage failed");
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = stop.cancelled() => return,
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        backoff = Duration::from_secs(1);
        let delete = tokio::select! {
            d = handle_message(&key, &config, &publisher, &context, &message) => d,
            () = stop.cancelled() => return,
        };
        let outcome = match delete {
            Handled::Published(_) => "published",
            Handled::Invalid => "invalid",
            Handled::Failed => "failed",
        };
        let published = match delete {
            Handled::Published(n) => n,
            _ => 0,
        };
        context.metrics.record(&key, outcome, published);
        let delete = !matches!(delete, Handled::Failed);
        if delete && let Err(e) = client.delete(&message.receipt_handle).await {
            // The message comes back after its visibility timeout and is published again,
            // with the same event ids.
            tracing::warn!(source = %key, message_id = %message.message_id, error = %e,
                    "DeleteMessage failed; the message will be redelivered");
        }
    }
}

/// What became of a message: published or invalid ones are deleted, failed ones left for
/// redelivery.
enum Handled {
    /// Every event published.
    Published(usize),
    /// It can never be published.
    Invalid,
    /// It could not be published now.
    Failed,
}

/// Publishes one message's events.
async fn handle_message(
    key: &str,
    config: &QueueConfig,
    publisher: &Publisher,
    context: &Context,
    message: &Message,
) -> Handled {
    if !message.body_md5_matches() {
        tracing::warn!(source = %key, message_id = %message.message_id,
            "MessageBodyMD5 does not match the body; leaving the message for redelivery");
        return Handled::Failed;
    }
    let events = match events_of(&message.message_body, config.base64) {
        Ok(events) => events,
        Err(e) => {
            tracing::error!(source = %key, message_id = %message.message_id, error = %e,
                "the message is not a valid OSS notification; deleting it, nothing was published");
            return Handled::Invalid;
        }
    };
    match publisher
        .publish(&events, context.limits, POLL_PUBLISH_WAIT)
        .await
    {
        Ok(n) => {
            tracing::debug!(source = %key, message_id = %message.message_id, events = n, "message published");
            Handled::Published(n)
        }
        Err(e @ (PublishError::Invalid(_) | PublishError::TooLarge(_))) => {
            tracing::error!(source = %key, message_id = %message.message_id, error = %e,
                "the message's events can never be published; deleting it");
            Handled::Invalid
        }
        Err(e) => {
            tracing::warn!(source = %key, message_id = %message.message_id, error = %e,
                "publishing failed; leaving the message for redelivery");
            Handled::Failed
        }
    }
}

/// The push endpoint's handler, with its certificate cache.
pub struct PushHook {
    config: PushConfig,
    client: HttpClient,
    certs: parking_lot::Mutex<HashMap<String, Arc<SigningKey>>>,
}

impl PushHook {
    /// A handler with an empty cache.
    pub fn new(config: PushConfig, client: HttpClient) -> PushHook {
        PushHook {
            config,
            client,
            certs: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// Handles one push request.
    pub async fn handle(&self, route: &Route, parts: &http::request::Parts, body: &[u8]) -> Reply {
        let headers = &parts.headers;
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let date = header("x-mns-date").or(header("date"));
        if let Err(e) = check_date(date, SystemTime::now(), MAX_CLOCK_SKEW) {
            return Reply::refuse(StatusCode::UNAUTHORIZED, e.to_string());
        }
        let content_md5 = header("content-md5").unwrap_or("");
        if !content_md5.is_empty() && !md5_matches(content_md5, body) {
            return Reply::refuse(
                StatusCode::BAD_REQUEST,
                "Content-MD5 does not match the body",
            );
        }
        let key = match self.signing_key(headers).await {
            Ok(k) => k,
            Err(reply) => return reply,
        };
        let resource = parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path(), |p| p.as_str());
        let all = headers
            .iter()
            .filter_map(|(n, v)| Some((n.as_str(), v.to_str().ok()?)));
        let to_sign = string_to_sign(
            parts.method.as_str(),
            content_md5,
            header("content-type").unwrap_or(""),
            date.unwrap_or(""),
            all,
            resource,
        );
        let authorization = headers
            .get(http::header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        if let Err(e) = key.verify(&to_sign, authorization) {
            return Reply::refuse(StatusCode::UNAUTHORIZED, e.to_string());
        }
        let notification = match parse_notification(body) {
            Ok(n) => n,
            Err(e) => return Reply::refuse(StatusCode::BAD_REQUEST, e.to_string()),
        };
        match events_of(&notification.message, self.config.base64) {
            Ok(events) => publish(route, &events).await,
            Err(e) => Reply::refuse(StatusCode::BAD_REQUEST, e),
        }
    }

    /// The configured certificate, or the request's, fetched once from an allowed host.
    async fn signing_key(&self, headers: &http::HeaderMap) -> Result<Arc<SigningKey>, Reply> {
        if let Some(key) = &self.config.certificate {
            return Ok(Arc::new(key.clone()));
        }
        let unauthorized = |m: String| Reply::refuse(StatusCode::UNAUTHORIZED, m);
        let header = headers
            .get("x-mns-signing-cert-url")
            .ok_or_else(|| unauthorized("x-mns-signing-cert-url is missing".into()))?;
        let url = signing_cert_url(header.as_bytes()).map_err(|e| unauthorized(e.to_string()))?;
        if let Some(key) = self.certs.lock().get(&url) {
            return Ok(Arc::clone(key));
        }
        let parsed = url::Url::parse(&url)
            .map_err(|_| unauthorized(format!("the signing certificate URL {url:?} is invalid")))?;
        if !self.host_allowed(&parsed) {
            return Err(unauthorized(format!(
                "the signing certificate host of {url:?} is not allowed (certificateHosts, https only)"
            )));
        }
        let key = self.fetch(&url).await.map_err(|e| {
            Reply::refuse(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot fetch the signing certificate: {e}"),
            )
        })?;
        let key = Arc::new(key);
        let mut certs = self.certs.lock();
        if certs.len() >= MAX_CACHED_CERTS {
            certs.clear();
        }
        certs.insert(url, Arc::clone(&key));
        Ok(key)
    }

    fn host_allowed(&self, url: &url::Url) -> bool {
        let loopback = match url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            _ => false,
        };
        let scheme_ok = url.scheme() == "https" || (url.scheme() == "http" && loopback);
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        scheme_ok
            && self.config.certificate_hosts.iter().any(|pattern| {
                let pattern = pattern.to_ascii_lowercase();
                match pattern.strip_prefix("*.") {
                    Some(suffix) => host
                        .strip_suffix(suffix)
                        .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.')),
                    None => host == pattern,
                }
            })
    }

    async fn fetch(&self, url: &str) -> Result<SigningKey, String> {
        let request = http::Request::get(url)
            .body(Full::new(Bytes::new()))
            .map_err(|e| e.to_string())?;
        let response = tokio::time::timeout(Duration::from_secs(5), self.client.request(request))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        if parts.status != StatusCode::OK {
            return Err(format!("status {}", parts.status));
        }
        let pem = read_limited(&parts.headers, body, MAX_CERT_BYTES)
            .await
            .map_err(|e| e.to_string())?;
        SigningKey::from_pem(&pem).map_err(|e| e.to_string())
    }
}

/// Whether `Content-MD5` matches: RFC 1864 (base64 of the digest), or base64 of the hex digest
/// as Alibaba's SDKs write it.
fn md5_matches(header: &str, body: &[u8]) -> bool {
    let header = header.trim();
    if header == mns::content_md5(body) {
        return true;
    }
    let hex = mns::body_md5_hex(body);
    let engine = base64::engine::general_purpose::STANDARD;
    header == engine.encode(&hex) || header == engine.encode(hex.to_ascii_lowercase())
}
