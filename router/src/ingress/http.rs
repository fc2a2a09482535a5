//! HTTP ingress: `POST /{namespace}/{broker}` (one trailing slash allowed), the URL shape of
//! Knative's multi-tenant broker.
//!
//! Accepts binary, structured and batched CloudEvents. Answers:
//! - `202` when every event was accepted (queued);
//! - `400` with a JSON body naming each bad event's index and problem (a batch is all or
//!   nothing, so a producer can fix and resend it);
//! - `200` to `OPTIONS`, the CloudEvents webhook validation handshake (abuse protection,
//!   "HTTP 1.1 Web Hooks for Event Delivery" §4), as Knative's broker ingress answers it:
//!   `Allow: POST, OPTIONS`, the request's `WebHook-Request-Origin` echoed as
//!   `WebHook-Allowed-Origin`, and `WebHook-Allowed-Rate: *`. Asynchronous handshakes
//!   (`WebHook-Request-Callback`) are not made: the synchronous answer is the agreement;
//! - `404` for an unknown broker or path; `405` (with `Allow`) for other methods than POST
//!   and OPTIONS;
//! - `401` with `WWW-Authenticate` when authentication is configured and the request has no
//!   valid bearer token (checked before the body is read); `403` when no event policy allows
//!   the sender to send one of the events (the whole batch is refused);
//! - `413` when the body or one event is over its limit (the body limit is enforced while
//!   reading);
//! - `415` for a CloudEvents format other than JSON, and for a compressed body
//!   (`Content-Encoding` other than `identity`, with `Accept-Encoding: identity`);
//! - `429` with `Retry-After` when the queues are full or the sender or broker is over its
//!   rate limit; `503` with `Retry-After` while shutting
//!   down or when the store is unavailable.
//!
//! Error bodies are `{"error": "...", "events": [{"index": N, "error": "..."}]}`.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use serde::Serialize;
use triggerfish_core::event::trace::TraceContext;
use triggerfish_core::event::{
    ContentMode, DecodeError, DecodeLimits, EventBatch, decode_batched, decode_binary,
    decode_structured,
};

use arc_swap::ArcSwap;

use crate::body::{BodyError, Budget};
use crate::http_server::{empty, response};
use crate::metrics::{IngressLabels, IngressOutcome, Metrics};
use crate::shard::{Backlogged, Snapshot};
use crate::store::{OfferError, Store, arrival_now};

/// Limits applied by ingress; reloadable.
#[derive(Clone, Copy, Debug)]
pub struct IngressLimits {
    /// Largest request body.
    pub max_request_bytes: usize,
    /// Event size and batch limits.
    pub decode: DecodeLimits,
}

/// Shared state of the HTTP ingress.
pub struct Ingress {
    /// The routing snapshot: which brokers exist, and the limits.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Where accepted events go.
    pub store: Store,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Set while shutting down: new requests get 503.
    pub stopping: tokio_util::sync::CancellationToken,
    /// The bytes of request bodies being read, over every connection
    /// (`limits.maxBufferedBytes`).
    buffered: Budget,
}

impl Ingress {
    /// Ingress over `snapshot` into `store`, holding at most `max_buffered_bytes` of bodies
    /// being read.
    pub fn new(
        snapshot: Arc<ArcSwap<Snapshot>>,
        store: Store,
        metrics: Arc<Metrics>,
        stopping: tokio_util::sync::CancellationToken,
        max_buffered_bytes: usize,
    ) -> Ingress {
        Ingress {
            snapshot,
            store,
            metrics,
            stopping,
            buffered: Budget::new(max_buffered_bytes),
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    events: Vec<EventError>,
}

#[derive(Serialize)]
struct EventError {
    index: usize,
    error: String,
}

/// The methods a broker's URL takes.
const ALLOWED_METHODS: HeaderValue = HeaderValue::from_static("POST, OPTIONS");

/// The answer to the CloudEvents webhook validation request (`OPTIONS`): delivery from the
/// requesting origin (or any, when it names none) is agreed to, at any rate. The rate a
/// broker really takes is set by its rate limits and queues, which answer 429 beyond it.
fn preflight(headers: &http::HeaderMap) -> http::Response<Full<Bytes>> {
    let mut r = empty(StatusCode::OK);
    let origin = headers
        .get("webhook-request-origin")
        .filter(|o| !o.is_empty())
        .cloned()
        .unwrap_or(HeaderValue::from_static("*"));
    let h = r.headers_mut();
    h.insert(header::ALLOW, ALLOWED_METHODS);
    h.insert("webhook-allowed-origin", origin);
    h.insert("webhook-allowed-rate", HeaderValue::from_static("*"));
    r
}

fn error(status: StatusCode, message: &str, events: &[DecodeError]) -> http::Response<Full<Bytes>> {
    let events = events.iter().map(|e| EventError {
        index: e.index.unwrap_or(0),
        error: e.kind.to_string(),
    });
    error_per_event(status, message, events.collect())
}

/// An error body with an entry per event: `{"error": …, "events": [{"index", "error"}]}`.
fn error_per_event(
    status: StatusCode,
    message: &str,
    events: Vec<EventError>,
) -> http::Response<Full<Bytes>> {
    let body = ErrorBody {
        error: message,
        events,
    };
    let json = serde_json::to_vec(&body).unwrap_or_default();
    response(status, "application/json", json)
}

fn forbidden(denied: &[usize]) -> http::Response<Full<Bytes>> {
    let events = denied.iter().map(|&index| EventError {
        index,
        error: "not allowed by any EventPolicy".into(),
    });
    error_per_event(StatusCode::FORBIDDEN, "forbidden", events.collect())
}

fn retry_later(status: StatusCode, message: &str) -> http::Response<Full<Bytes>> {
    in_a_second(error(status, message, &[]))
}

/// Adds `Retry-After: 1`.
fn in_a_second(mut r: http::Response<Full<Bytes>>) -> http::Response<Full<Bytes>> {
    r.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    r
}

/// 429 for a request with events that backlogged triggers match, naming each event.
fn refuse_backlogged(backlogged: &[Backlogged<'_>], n: usize) -> http::Response<Full<Bytes>> {
    let events = backlogged.iter().map(|b| EventError {
        index: b.index,
        error: b.to_string(),
    });
    let message = Backlogged::summary(backlogged, n);
    in_a_second(error_per_event(
        StatusCode::TOO_MANY_REQUESTS,
        &message,
        events.collect(),
    ))
}

impl Ingress {
    /// Handles one request.
    pub async fn handle(
        self: Arc<Self>,
        req: http::Request<Incoming>,
    ) -> http::Response<Full<Bytes>> {
        let started = Instant::now();
        let (resp, broker, outcome, events) = self.handle_inner(req).await;
        let labels = IngressLabels {
            broker: broker.unwrap_or_else(|| "unknown".to_owned()),
            outcome,
        };
        self.metrics.ingress_requests.get_or_create(&labels).inc();
        if events > 0 {
            self.metrics
                .ingress_events
                .get_or_create(&labels)
                .inc_by(events as u64);
        }
        self.metrics
            .ingress_duration
            .observe(started.elapsed().as_secs_f64());
        resp
    }

    async fn handle_inner(
        &self,
        req: http::Request<Incoming>,
    ) -> (
        http::Response<Full<Bytes>>,
        Option<String>,
        IngressOutcome,
        usize,
    ) {
        use IngressOutcome::*;
        // One trailing slash is forgiven: producers often add one to a broker's URL.
        let path = req.uri().path().trim_start_matches('/');
        let mut segments = path.strip_suffix('/').unwrap_or(path).split('/');
        let (Some(ns), Some(name), None) = (segments.next(), segments.next(), segments.next())
        else {
            return (
                error(
                    StatusCode::NOT_FOUND,
                    "not found: POST events to /{namespace}/{broker}",
                    &[],
                ),
                None,
                NotFound,
                0,
            );
        };
        let key = format!("{ns}/{name}");
        let snapshot = self.snapshot.load();
        let limits = snapshot.limits;
        let Some((broker, route)) = snapshot
            .brokers
            .get_key_value(key.as_str())
            .map(|(k, r)| (Arc::clone(k), Arc::clone(r)))
        else {
            let msg = format!("unknown broker {key}");
            return (error(StatusCode::NOT_FOUND, &msg, &[]), None, NotFound, 0);
        };
        let label = Some(key);
        if req.method() == Method::OPTIONS {
            return (preflight(req.headers()), label, Preflight, 0);
        }
        if req.method() != Method::POST {
            let mut r = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "only POST (and OPTIONS) is allowed",
                &[],
            );
            r.headers_mut().insert(header::ALLOW, ALLOWED_METHODS);
            return (r, label, Rejected, 0);
        }
        if self.stopping.is_cancelled() {
            return (
                retry_later(StatusCode::SERVICE_UNAVAILABLE, "shutting down"),
                label,
                Unavailable,
                0,
            );
        }
        let gate = Arc::clone(&snapshot.gate);
        drop(snapshot);
        let identity = match gate
            .authenticate(
                &broker,
                req.headers()
                    .get(header::AUTHORIZATION)
                    .map(HeaderValue::as_bytes),
            )
            .await
        {
            Ok(identity) => identity,
            Err(crate::auth::Unauthenticated::KeysUnavailable) => {
                return (
                    retry_later(StatusCode::SERVICE_UNAVAILABLE, "keys_unavailable"),
                    label,
                    Unavailable,
                    0,
                );
            }
            Err(e) => {
                let mut r = error(StatusCode::UNAUTHORIZED, &e.to_string(), &[]);
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(e.challenge()),
                );
                return (r, label, Unauthorized, 0);
            }
        };
        let mode = ContentMode::detect(
            req.headers()
                .get(header::CONTENT_TYPE)
                .map(HeaderValue::as_bytes),
        );
        if let Some(coding) = req
            .headers()
            .get(header::CONTENT_ENCODING)
            .filter(|c| !c.as_bytes().eq_ignore_ascii_case(b"identity"))
        {
            let msg = format!(
                "unsupported Content-Encoding {}: send the body uncompressed",
                String::from_utf8_lossy(coding.as_bytes())
            );
            let mut r = error(StatusCode::UNSUPPORTED_MEDIA_TYPE, &msg, &[]);
            r.headers_mut().insert(
                header::ACCEPT_ENCODING,
                HeaderValue::from_static("identity"),
            );
            return (r, label, Rejected, 0);
        }
        if mode == ContentMode::UnsupportedFormat {
            let msg = "unsupported CloudEvents format: use application/cloudevents+json, application/cloudevents-batch+json or binary mode";
            return (
                error(StatusCode::UNSUPPORTED_MEDIA_TYPE, msg, &[]),
                label,
                Rejected,
                0,
            );
        }
        let (parts, body) = req.into_parts();
        // Held until the events are queued (the shard queues' byte budgets take over) or
        // refused.
        let (_held, read) = self
            .buffered
            .read(&parts.headers, body, limits.max_request_bytes)
            .await;
        let bytes = match read {
            Ok(b) => b,
            Err(e) => {
                let (status, message) = (e.status(), e.to_string());
                let (response, outcome) = match e {
                    BodyError::Busy => (retry_later(status, &message), Throttled),
                    BodyError::TooLarge { .. } => (error(status, &message, &[]), TooLarge),
                    BodyError::Stalled(_) | BodyError::Read(_) => {
                        (error(status, &message, &[]), Rejected)
                    }
                };
                return (response, label, outcome, 0);
            }
        };
        let mut batch = match decode(mode, &parts.headers, bytes, &limits.decode) {
            Ok(b) => b,
            Err(errors) => {
                let too_large = errors.iter().any(DecodeError::is_too_large);
                let status = if too_large {
                    StatusCode::PAYLOAD_TOO_LARGE
                } else {
                    StatusCode::BAD_REQUEST
                };
                let summary = match errors.len() {
                    1 => errors[0].to_string(),
                    n => format!("{n} events are invalid; nothing was accepted"),
                };
                let per_event: Vec<DecodeError> =
                    errors.into_iter().filter(|e| e.index.is_some()).collect();
                return (
                    error(status, &summary, &per_event),
                    label,
                    if too_large { TooLarge } else { Rejected },
                    0,
                );
            }
        };
        let n = batch.len();
        if n == 0 {
            return (empty(StatusCode::ACCEPTED), label, Accepted, 0);
        }
        let denied = gate.authorize(&broker, &identity, &batch);
        if !denied.is_empty() {
            tracing::debug!(broker = %broker, sender = %identity, events = denied.len(), "events refused by event policy");
            return (forbidden(&denied), label, Forbidden, 0);
        }
        // Before the backlog check, which matches the events as the shards will.
        batch.stamp_arrival(arrival_now());
        let backlogged = route.backlogged(&batch);
        if !backlogged.is_empty() {
            return (refuse_backlogged(&backlogged, n), label, Backlogged, n);
        }
        drop(route);
        if let Err(e) = gate.admit(&broker, &identity, n) {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, &e.to_string(), &[]);
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(e.retry_after_secs()));
            return (r, label, RateLimited, n);
        }
        match self.store.publish(&broker, Arc::new(batch), None).await {
            Ok(()) => (empty(StatusCode::ACCEPTED), label, Accepted, n),
            Err(OfferError::Full) => (
                retry_later(StatusCode::TOO_MANY_REQUESTS, "queues are full"),
                label,
                Throttled,
                n,
            ),
            Err(OfferError::Unavailable(e)) => (
                retry_later(StatusCode::SERVICE_UNAVAILABLE, &e),
                label,
                Unavailable,
                n,
            ),
        }
    }
}

/// Decodes a request body in its content mode. All errors are returned, so a producer can fix
/// every bad event of a batch at once. Events without a `traceparent` extension take the
/// request's W3C trace context, if it has one ([`TraceContext`]).
pub fn decode(
    mode: ContentMode,
    headers: &http::HeaderMap,
    body: Bytes,
    limits: &DecodeLimits,
) -> Result<EventBatch, Vec<DecodeError>> {
    let batch = match mode {
        ContentMode::Binary => decode_binary(headers, body, limits).map_err(|e| vec![e])?,
        ContentMode::Structured => decode_structured(body, limits).map_err(|e| vec![e])?,
        ContentMode::Batched => {
            let d = decode_batched(body, limits).map_err(|e| vec![e])?;
            if !d.rejected.is_empty() {
                return Err(d.rejected);
            }
            d.batch
        }
        ContentMode::UnsupportedFormat => return Err(vec![]),
    };
    Ok(match TraceContext::from_headers(headers) {
        Some(context) => batch.with_trace_context(&context, limits),
        None => batch,
    })
}
