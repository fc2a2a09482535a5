//! HTTP and HTTPS subscribers: one POST per event, binary mode by default, over pooled
//! keep-alive connections shared by every trigger, or over pipelined connections of the
//! trigger's own ([`super::pipeline`], `delivery.pipelining`).
//!
//! A trigger's requests carry `Prefer: reply` (Knative's reply contract); a source's and a
//! dead letter's do not, since nothing reads their replies ([`Request::wants_reply`]). A 2xx
//! response other than `202`
//! whose headers or content type say it is a CloudEvent is decoded as a reply (Knative's
//! data-plane contract: a `202` "MUST NOT be processed as reply events"); an error response's
//! first KiB is
//! kept for `knativeerrordata`. A request of one event carries the event's W3C trace context
//! as `traceparent` and `tracestate` headers when it has one ([`TraceContext`]); a batch
//! carries none, since its events' contexts differ.
//!
//! With `spec.batch` (batched content mode, a Triggerfish extension) the events that are ready
//! at the same time go as one `application/cloudevents-batch+json` request ([`super::batch`]):
//! [`HttpSink::send_batch`] for the batches an unordered trigger's dispatcher gathers, and
//! [`HttpSink::send`] for one-event attempts (ordered triggers), which the sink's gathering
//! task batches. The response is every event's: each gets its status, `Retry-After` and error
//! body. A reply to a batch (one event, or a batch of them) re-enters the broker once, with the
//! lowest ttl of the batch's events.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::Either;
use http::{HeaderValue, Method, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus_client::metrics::histogram::Histogram;
use triggerfish_core::config::{Batching, CaCerts, DeliveryFormat};
use triggerfish_core::delivery::TransportError;
use triggerfish_core::event::trace::{TraceContext, TraceHeaders};
use triggerfish_core::event::{
    ContentMode, DecodeLimits, EncodeOptions, EventView, decode_batched, decode_binary,
    decode_structured, encode_binary, encode_structured,
};
use url::Url;

use super::batch::{BatchSpec, Batcher, Pending, complete_all, json_array};
use super::{Attempt, Request, Response};

/// The most bytes of an error response kept for `knativeerrordata`.
pub const ERROR_DATA_LIMIT: usize = 1024;

/// How long an idle pooled connection to a subscriber is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(20);
const _: () =
    assert!(POOL_IDLE_TIMEOUT.as_secs() < crate::http_server::HEADER_READ_TIMEOUT.as_secs());

/// The HTTP client shared by all HTTP sinks.
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Builds the shared client: HTTP/1.1 keep-alive, HTTPS through rustls with the system's
/// trusted roots.
pub fn client() -> Result<HttpClient, std::io::Error> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(Arc::new(rustls::crypto::ring::default_provider()))?
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector());
    Ok(pooled(https))
}

/// A client like [`client`] that also trusts the CA certificates of `ca` (a destination's
/// `CACerts`), with connection pools of its own.
pub fn client_trusting(ca: &CaCerts) -> Result<HttpClient, String> {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls_config(Some(ca))?)
        .https_or_http()
        .enable_http1()
        .wrap_connector(connector());
    Ok(pooled(https))
}

/// TLS settings trusting the system's roots and, if given, the CA certificates of `ca`.
pub fn tls_config(ca: Option<&CaCerts>) -> Result<rustls::ClientConfig, String> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
    for cert in CertificateDer::pem_slice_iter(ca.map_or("", |ca| ca.pem()).as_bytes()) {
        let cert = cert.map_err(|e| format!("CACerts: {e}"))?;
        roots.add(cert).map_err(|e| format!("CACerts: {e}"))?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

fn connector() -> HttpConnector {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    http
}

fn pooled(https: hyper_rustls::HttpsConnector<HttpConnector>) -> HttpClient {
    Client::builder(TokioExecutor::new())
        // Under the 30 s after which our own listeners close an idle connection
        // (`http_server::HEADER_READ_TIMEOUT`), so a pooled connection to another Triggerfish
        // is dropped here first and never reused just as the peer closes it.
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .pool_max_idle_per_host(256)
        .build(https)
}

/// One HTTP destination.
#[derive(Clone)]
pub struct HttpSink {
    url: Arc<Url>,
    uri: http::Uri,
    client: Arc<HttpClient>,
    credential: Option<crate::auth::outbound::Credential>,
    /// Pipelined connections of this sink's own (`delivery.pipelining`), instead of `client`.
    pipeline: Option<Arc<super::pipeline::Pipeline>>,
    /// Batched content mode (`spec.batch`).
    batched: Option<Arc<Batched>>,
}

/// An HTTP sink's batched content mode.
struct Batched {
    spec: BatchSpec,
    reply_limits: DecodeLimits,
    /// The gathering task of one-event attempts, started by the first.
    batcher: std::sync::OnceLock<Batcher>,
}

impl HttpSink {
    /// A sink posting to `url` through `client`.
    pub fn new(url: &Url, client: Arc<HttpClient>) -> Result<HttpSink, http::uri::InvalidUri> {
        Ok(HttpSink {
            url: Arc::new(url.clone()),
            uri: url.as_str().parse()?,
            client,
            credential: None,
            pipeline: None,
            batched: None,
        })
    }

    /// Requests go through `pipeline` instead of the shared client.
    pub fn with_pipeline(mut self, pipeline: Option<Arc<super::pipeline::Pipeline>>) -> HttpSink {
        self.pipeline = pipeline;
        self
    }

    /// Requests carry `Authorization: Bearer` with this credential.
    pub fn with_credential(
        mut self,
        credential: Option<crate::auth::outbound::Credential>,
    ) -> HttpSink {
        self.credential = credential;
        self
    }

    /// The destination URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// Batched content mode (`spec.batch`): events go in `application/cloudevents-batch+json`
    /// requests. `max_in_flight` is the trigger's: as many requests go out at once as it fills
    /// with full batches, 16 at most. `reply_limits` bound a batch's reply; each batch's size
    /// is observed in `sizes`.
    pub fn with_batching(
        mut self,
        batching: Batching,
        max_in_flight: u32,
        reply_limits: DecodeLimits,
        sizes: Histogram,
    ) -> HttpSink {
        let requests = max_in_flight.div_ceil(batching.max_events.get()) as usize;
        self.batched = Some(Arc::new(Batched {
            spec: BatchSpec {
                batching,
                in_flight: requests,
                sizes: Some(sizes),
            },
            reply_limits,
            batcher: std::sync::OnceLock::new(),
        }));
        self
    }

    /// How the sink gathers batches, in batched content mode.
    pub fn batches(&self) -> Option<&BatchSpec> {
        self.batched.as_ref().map(|b| &b.spec)
    }

    /// The gathering task of one-event attempts in batched content mode; the first call starts
    /// it, and it ends when the last clone of the sink is dropped.
    fn batcher<'a>(&self, batched: &'a Batched) -> &'a Batcher {
        batched.batcher.get_or_init(|| {
            let unbatched = Arc::new(HttpSink {
                batched: None,
                ..self.clone()
            });
            let limits = batched.reply_limits;
            Batcher::spawn(batched.spec.clone(), move |items| {
                let sink = Arc::clone(&unbatched);
                async move { sink.send_pending(items, &limits).await }
            })
        })
    }

    /// Makes one attempt.
    ///
    /// Not an `async fn`: the returned future is the request's own (or a boxed batched
    /// attempt), with no frame around it, so every delivery task stays small
    /// (`dispatch::tests::a_delivery_task_stays_small`).
    pub fn send<'a>(
        &'a self,
        view: &EventView<'_>,
        opts: &EncodeOptions<'_>,
        req: &'a Request,
    ) -> impl Future<Output = Attempt> + 'a {
        if let Some(batched) = &self.batched {
            let event = encode_structured(view, opts);
            let trace = TraceContext::of_event(view).map(|c| c.to_headers());
            return Either::Left(Box::pin(self.batcher(batched).send(event, trace, req)));
        }
        let (mut headers, body) = match req.format {
            DeliveryFormat::Json => {
                let mut h = http::HeaderMap::new();
                h.insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/cloudevents+json"),
                );
                (h, encode_structured(view, opts))
            }
            _ => encode_binary(view, opts),
        };
        if let Some(context) = TraceContext::of_event(view) {
            context.insert_headers(&mut headers);
        }
        Either::Right(self.post(
            headers,
            body,
            req.timeout,
            &req.reply_limits,
            req.wants_reply,
        ))
    }

    /// Makes one attempt at a batch: POSTs `body`, a JSON array of structured events, in
    /// batched content mode, with the W3C headers of `trace`, the context its events share.
    pub fn send_batch<'a>(
        &'a self,
        body: Bytes,
        trace: Option<&TraceHeaders>,
        req: &'a Request,
    ) -> impl Future<Output = Attempt> + 'a {
        self.post(
            batch_headers(trace),
            body,
            req.timeout,
            &req.reply_limits,
            req.wants_reply,
        )
    }

    /// Sends the one-event attempts of `items` as one batch and completes each with the
    /// response.
    async fn send_pending(&self, items: Vec<Pending>, reply_limits: &DecodeLimits) {
        // The latest deadline: an attempt past its own has already given up (a timeout).
        let deadline = items.iter().map(|p| p.deadline).max();
        let timeout = deadline.map_or(Duration::ZERO, |d| {
            d.saturating_duration_since(tokio::time::Instant::now())
        });
        let trace = TraceHeaders::shared(items.iter().map(|p| p.trace.as_ref()));
        let wants_reply = items.iter().any(|p| p.wants_reply);
        let attempt = self
            .post(
                batch_headers(trace),
                json_array(&items),
                timeout,
                reply_limits,
                wants_reply,
            )
            .await;
        complete_all(items, attempt);
    }

    /// POSTs `body` with `headers` (and `Prefer: reply` if a reply is wanted, and the
    /// credential) and reads the response, within `timeout`.
    async fn post(
        &self,
        mut headers: http::HeaderMap,
        body: Bytes,
        timeout: Duration,
        reply_limits: &DecodeLimits,
        wants_reply: bool,
    ) -> Attempt {
        if wants_reply {
            headers.insert("prefer", HeaderValue::from_static("reply"));
        }
        if let Some(credential) = &self.credential {
            match credential.authorization() {
                Ok(value) => {
                    headers.insert(header::AUTHORIZATION, value);
                }
                Err(e) => {
                    tracing::error!(destination = %self.url, error = %e, "no bearer token for the subscriber");
                    return Attempt::Internal(
                        triggerfish_core::delivery::InternalError::Unavailable,
                    );
                }
            }
        }
        let attempt = match &self.pipeline {
            // Boxed, so that every delivery task (pipelined or not) stays the size of the
            // pooled client's attempt (`dispatch::tests::a_delivery_task_stays_small`).
            Some(pipeline) => {
                let request = super::pipeline::encode_request(&self.url, &headers, &body);
                let pipelined = Box::pin(self.pipelined(pipeline, request, reply_limits));
                tokio::time::timeout(timeout, pipelined).await
            }
            None => {
                let mut request = http::Request::new(Full::new(body));
                *request.method_mut() = Method::POST;
                *request.uri_mut() = self.uri.clone();
                *request.headers_mut() = headers;
                tokio::time::timeout(timeout, self.exchange(request, reply_limits)).await
            }
        };
        attempt.unwrap_or(Attempt::Transport(TransportError::Timeout))
    }

    /// One attempt over the sink's pipelined connections: `request` is the whole request.
    async fn pipelined(
        &self,
        pipeline: &super::pipeline::Pipeline,
        request: Bytes,
        limits: &DecodeLimits,
    ) -> Attempt {
        let r = match pipeline.send(request, Keep::most(limits)).await {
            Ok(r) => r,
            Err(e) => return Attempt::Transport(e),
        };
        let keep = Keep::of(r.status, &r.headers, limits);
        let body = match (&keep, r.truncated) {
            (Keep::Reply { limit, .. }, true) => {
                Err(crate::body::BodyError::TooLarge { limit: *limit }.to_string())
            }
            _ => Ok(r.body),
        };
        keep.attempt(r.status, &r.headers, body, limits)
    }

    /// One attempt through the shared pooled client.
    async fn exchange(
        &self,
        request: http::Request<Full<Bytes>>,
        limits: &DecodeLimits,
    ) -> Attempt {
        let response = match self.client.request(request).await {
            Ok(r) => r,
            Err(e) => return Attempt::Transport(transport_error(&e)),
        };
        let (parts, body) = response.into_parts();
        let keep = Keep::of(parts.status, &parts.headers, limits);
        let body = match &keep {
            Keep::Nothing => {
                // Drain the body so the connection goes back to the pool.
                if let Err(e) =
                    crate::body::read_limited(&parts.headers, body, limits.max_event_bytes).await
                {
                    tracing::debug!(error = %e, "could not drain a subscriber response");
                }
                Ok(Bytes::new())
            }
            Keep::Reply { limit, .. } => crate::body::read_limited(&parts.headers, body, *limit)
                .await
                .map_err(|e| e.to_string()),
            Keep::Excerpt => Ok(excerpt(body, ERROR_DATA_LIMIT).await),
        };
        keep.attempt(parts.status, &parts.headers, body, limits)
    }
}

/// The headers of a batched-mode request (`post` adds the rest): the W3C trace context's when
/// every event of the batch has the same one.
fn batch_headers(trace: Option<&TraceHeaders>) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/cloudevents-batch+json"),
    );
    if let Some(trace) = trace {
        trace.insert_into(&mut headers);
    }
    headers
}

/// What of a response's body an attempt needs.
enum Keep {
    /// A 2xx response that is not an event: nothing (the body is drained).
    Nothing,
    /// A 2xx response that is a CloudEvent: the reply, up to `limit` bytes.
    Reply {
        /// How the reply is encoded.
        mode: ContentMode,
        /// The most bytes a reply may have.
        limit: usize,
    },
    /// An error response: its first [`ERROR_DATA_LIMIT`] bytes, for `knativeerrordata`.
    Excerpt,
}

impl Keep {
    /// What to keep of a response with `status` and `headers`. A `202` is never a reply,
    /// whatever its body: Knative's data-plane contract says so.
    fn of(status: http::StatusCode, headers: &http::HeaderMap, limits: &DecodeLimits) -> Keep {
        if !status.is_success() {
            return Keep::Excerpt;
        }
        if status == http::StatusCode::ACCEPTED {
            return Keep::Nothing;
        }
        let mode =
            ContentMode::detect(headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes));
        if headers.contains_key("ce-specversion") || !matches!(mode, ContentMode::Binary) {
            Keep::Reply {
                mode,
                limit: Keep::reply_limit(limits),
            }
        } else {
            Keep::Nothing
        }
    }

    /// The most a reply may take: a batch of up to 16 events of the largest size.
    fn reply_limit(limits: &DecodeLimits) -> usize {
        limits
            .max_event_bytes
            .saturating_mul(limits.max_batch_events.min(16))
    }

    /// The most body bytes any response may need kept, before its status is known.
    fn most(limits: &DecodeLimits) -> usize {
        Keep::reply_limit(limits).max(ERROR_DATA_LIMIT)
    }

    /// The attempt a response with `status`, `headers` and `body` (as kept) comes to.
    fn attempt(
        self,
        status: http::StatusCode,
        headers: &http::HeaderMap,
        body: Result<Bytes, String>,
        limits: &DecodeLimits,
    ) -> Attempt {
        let retry_after = headers
            .get(header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let (reply, body_excerpt) = match self {
            Keep::Nothing => (None, Bytes::new()),
            Keep::Excerpt => {
                let mut excerpt = body.unwrap_or_default();
                excerpt.truncate(ERROR_DATA_LIMIT);
                (None, excerpt)
            }
            Keep::Reply { mode, .. } => {
                let reply = match body {
                    Err(e) => Some(Box::new(Err(format!("reading the reply: {e}")))),
                    Ok(bytes)
                        if bytes.is_empty()
                            && mode == ContentMode::Binary
                            && !headers.contains_key("ce-id") =>
                    {
                        None
                    }
                    Ok(bytes) => Some(Box::new(decode_reply(mode, headers, bytes, limits))),
                };
                (reply, Bytes::new())
            }
        };
        Attempt::Response(Response {
            status,
            retry_after,
            reply,
            body_excerpt,
        })
    }
}

fn decode_reply(
    mode: ContentMode,
    headers: &http::HeaderMap,
    body: Bytes,
    limits: &DecodeLimits,
) -> Result<triggerfish_core::event::EventBatch, String> {
    match mode {
        ContentMode::Structured => decode_structured(body, limits).map_err(|e| e.to_string()),
        ContentMode::Batched => {
            let d = decode_batched(body, limits).map_err(|e| e.to_string())?;
            match d.rejected.first() {
                Some(e) => Err(e.to_string()),
                None => Ok(d.batch),
            }
        }
        ContentMode::UnsupportedFormat => Err("unsupported CloudEvents format".to_owned()),
        ContentMode::Binary => decode_binary(headers, body, limits).map_err(|e| e.to_string()),
    }
}

/// Reads at most `limit` bytes of a body and drops the rest.
async fn excerpt(mut body: hyper::body::Incoming, limit: usize) -> Bytes {
    let mut out = BytesMut::new();
    while out.len() < limit {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    let take = data.len().min(limit - out.len());
                    out.extend_from_slice(&data[..take]);
                }
            }
            _ => break,
        }
    }
    out.freeze()
}

fn transport_error(e: &hyper_util::client::legacy::Error) -> TransportError {
    if e.is_connect() {
        // A TLS failure surfaces as a connect error whose chain mentions rustls.
        let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
        while let Some(s) = source {
            if s.downcast_ref::<rustls::Error>().is_some() {
                return TransportError::Tls;
            }
            source = s.source();
        }
        return TransportError::Connect;
    }
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(s) = source {
        if let Some(h) = s.downcast_ref::<hyper::Error>()
            && (h.is_parse() || h.is_parse_status())
        {
            return TransportError::Protocol;
        }
        source = s.source();
    }
    TransportError::Reset
}
