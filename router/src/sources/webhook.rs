//! The listener shared by webhook sources (`Server.spec.listen.webhooks`), and what every
//! webhook request goes through before its source's handler sees it.
//!
//! Routing is by exact path, from a table swapped atomically on reload ([`ArcSwap`]), so a
//! reload never drops the listener or a request. Every request is checked here for:
//! - a known path (404) and the `POST` method (405);
//! - its body size, while reading ([`Budget::read`]; 413), with the config's
//!   `Server.spec.limits.maxRequestBytes`;
//! - the listener's byte budget for bodies being read, `limits.maxBufferedBytes` (429 with
//!   `Retry-After` when it has had no room for a second), held until the handler is done;
//! - shutdown (503 with `Retry-After`).
//!
//! Then the source's handler checks authentication and the payload and publishes. Statuses:
//! 202 when every event is published (`{"accepted": N}`), 200 for requests that publish nothing
//! by design (a `ping`, a registry pull, a replayed GitHub delivery), 400 for malformed or
//! unsupported payloads, 401 for bad or missing signatures and tokens, 413 for oversized ones,
//! 415 for wrong content types, 429 or 503 with `Retry-After` when nothing could be published
//! for now. Each refusal is logged with the source and the reason, never with a secret.
//!
//! What it does not do: TLS (put a proxy in front), or authentication itself (the handlers).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio_util::sync::CancellationToken;
use triggerfish_core::event::DecodeLimits;
use triggerfish_core::sources::SourceEvent;

use crate::body::Budget;
use crate::http_server::{ConnectionLimit, response};
use crate::sources::{PublishError, Publisher, WEBHOOK_PUBLISH_WAIT, github, oss, registry, s3};

/// One webhook source: its handler and where it publishes.
pub struct Route {
    /// The source's key, for logs.
    pub key: Arc<str>,
    /// The kind-specific handler.
    pub handler: Handler,
    /// Where its events go.
    pub publisher: Arc<Publisher>,
    /// Event limits.
    pub limits: DecodeLimits,
    /// Metrics.
    pub metrics: crate::sources::SourceMetrics,
}

/// The handler of each webhook kind.
pub enum Handler {
    /// `GitHubSource`.
    GitHub(github::GitHubHook),
    /// `S3Source`.
    S3(s3::S3Config),
    /// `RegistrySource`.
    Registry(registry::RegistryConfig),
    /// `OssSource` in push mode.
    OssPush(Box<oss::PushHook>),
}

/// What a handler answers.
#[derive(Debug)]
pub struct Reply {
    /// The status.
    pub status: StatusCode,
    /// A message for the body (`{"error": ...}` or `{"message": ...}`) and the log.
    pub message: String,
    /// Events published.
    pub events: usize,
}

impl Reply {
    /// Every event published.
    pub fn accepted(events: usize) -> Reply {
        Reply {
            status: StatusCode::ACCEPTED,
            message: String::new(),
            events,
        }
    }

    /// A request that publishes nothing, on purpose.
    pub fn ok(message: impl Into<String>) -> Reply {
        Reply {
            status: StatusCode::OK,
            message: message.into(),
            events: 0,
        }
    }

    /// A refusal.
    pub fn refuse(status: StatusCode, message: impl Into<String>) -> Reply {
        Reply {
            status,
            message: message.into(),
            events: 0,
        }
    }
}

/// Publishes a request's events and says how to answer.
pub async fn publish(route: &Route, events: &[SourceEvent]) -> Reply {
    match route
        .publisher
        .publish(events, route.limits, WEBHOOK_PUBLISH_WAIT)
        .await
    {
        Ok(n) => Reply::accepted(n),
        Err(e @ PublishError::Full) => Reply::refuse(StatusCode::TOO_MANY_REQUESTS, e.to_string()),
        Err(e @ (PublishError::Closed | PublishError::Unavailable(_))) => {
            Reply::refuse(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
        }
        Err(e @ PublishError::TooLarge(_)) => {
            Reply::refuse(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
        }
        Err(e @ PublishError::Invalid(_)) => Reply::refuse(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

/// Whether a request's media type (parameters ignored) is one of `accepted`.
pub fn content_type_is(headers: &http::HeaderMap, accepted: &[&str]) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    accepted.iter().any(|a| essence.eq_ignore_ascii_case(a))
}

struct Table {
    routes: HashMap<String, Arc<Route>>,
    max_request_bytes: usize,
}

/// The webhook listener: bound on first use, routes swapped on reload.
pub struct Listener {
    table: Arc<ArcSwap<Table>>,
    bound: parking_lot::Mutex<Option<SocketAddr>>,
    tls: parking_lot::Mutex<Option<Arc<crate::tls::ReloadingTls>>>,
    connections: parking_lot::Mutex<ConnectionLimit>,
    bodies: Arc<Budget>,
    stop: CancellationToken,
}

impl Listener {
    /// A listener, not bound yet, whose request bodies share a budget of `max_buffered_bytes`
    /// while they are read and handled (`limits.maxBufferedBytes`, fixed until a restart).
    pub fn new(stop: CancellationToken, max_buffered_bytes: usize) -> Listener {
        Listener {
            table: Arc::new(ArcSwap::from_pointee(Table {
                routes: HashMap::new(),
                max_request_bytes: 0,
            })),
            bound: parking_lot::Mutex::new(None),
            tls: parking_lot::Mutex::new(None),
            connections: parking_lot::Mutex::new(ConnectionLimit {
                max: crate::open_files::DEFAULT_MAX_CONNECTIONS,
                listener: "webhooks",
                open: Default::default(),
                waits: Default::default(),
            }),
            bodies: Arc::new(Budget::new(max_buffered_bytes)),
            stop,
        }
    }

    /// The connection cap, reported in the router's metrics; set before the first config is
    /// applied.
    pub fn set_connection_limit(&self, limit: ConnectionLimit) {
        *self.connections.lock() = limit;
    }

    /// Serves over TLS once bound (`Server.spec.tls` covering `webhooks`); set before the
    /// first config is applied.
    pub fn set_tls(&self, tls: Option<Arc<crate::tls::ReloadingTls>>) {
        *self.tls.lock() = tls;
    }

    /// The bound address.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        *self.bound.lock()
    }

    /// Replaces the routes.
    pub fn set_routes(&self, routes: HashMap<String, Arc<Route>>, max_request_bytes: usize) {
        self.table.store(Arc::new(Table {
            routes,
            max_request_bytes,
        }));
    }

    /// Binds `addr` and starts serving, unless already bound (a different `addr` then needs a
    /// restart, and says so). Must run inside the tokio runtime.
    pub fn ensure_bound(&self, addr: SocketAddr) {
        // Held only while binding, which does not block.
        let mut bound = self.bound.lock();
        if let Some(current) = *bound {
            // Port 0 (tests) asked for any port; the one bound satisfies it.
            let same = current == addr || (addr.port() == 0 && addr.ip() == current.ip());
            if !same {
                tracing::warn!(listening = %current, configured = %addr, "the webhook address changed; restart triggerfish to move the listener");
            }
            return;
        }
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std);
        let listener = match listener {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(address = %addr, error = %e, "cannot bind the webhook listener; webhook sources receive nothing");
                return;
            }
        };
        let local = listener.local_addr().unwrap_or(addr);
        tracing::info!(address = %local, "webhook listener listening");
        *bound = Some(local);
        let table = Arc::clone(&self.table);
        let stop = self.stop.clone();
        let bodies = Arc::clone(&self.bodies);
        tokio::spawn(crate::http_server::serve(
            listener,
            self.tls.lock().clone(),
            self.connections.lock().clone(),
            move |req| handle(Arc::clone(&table), Arc::clone(&bodies), stop.clone(), req),
            self.stop.clone(),
            Duration::from_secs(5),
        ));
        tracing::info!(address = %local, "webhook listener bound");
    }
}

async fn handle(
    table: Arc<ArcSwap<Table>>,
    bodies: Arc<Budget>,
    stop: CancellationToken,
    req: http::Request<Incoming>,
) -> http::Response<Full<Bytes>> {
    let table = table.load_full();
    let path = req.uri().path().to_owned();
    let Some(route) = table.routes.get(&path).cloned() else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no webhook source at {path}"),
        );
    };
    let reply = if req.method() != Method::POST {
        Reply::refuse(StatusCode::METHOD_NOT_ALLOWED, "only POST is allowed")
    } else if stop.is_cancelled() {
        Reply::refuse(StatusCode::SERVICE_UNAVAILABLE, "shutting down")
    } else {
        let (parts, body) = req.into_parts();
        // Held until the handler is done with the body.
        let (_held, read) = bodies
            .read(&parts.headers, body, table.max_request_bytes)
            .await;
        match read {
            Ok(body) => dispatch(&route, &parts, body).await,
            Err(e) => Reply::refuse(e.status(), e.to_string()),
        }
    };
    route
        .metrics
        .record(&route.key, reply.status.as_str(), reply.events);
    if reply.status.is_success() {
        tracing::debug!(source = %route.key, status = reply.status.as_u16(), events = reply.events, "webhook request handled");
    } else {
        tracing::warn!(source = %route.key, status = reply.status.as_u16(), reason = %reply.message, "webhook request refused");
    }
    let mut r = match reply.status {
        StatusCode::ACCEPTED => response(
            reply.status,
            "application/json",
            format!("{{\"accepted\":{}}}", reply.events),
        ),
        s if s.is_success() => {
            let body = serde_json::json!({ "message": reply.message });
            response(s, "application/json", body.to_string())
        }
        s => error(s, &reply.message),
    };
    if matches!(
        reply.status,
        StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
    ) {
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if reply.status == StatusCode::METHOD_NOT_ALLOWED {
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
    }
    r
}

async fn dispatch(route: &Route, parts: &http::request::Parts, body: Bytes) -> Reply {
    match &route.handler {
        Handler::GitHub(hook) => hook.handle(route, parts, &body).await,
        Handler::S3(config) => s3::handle(config, route, parts, &body).await,
        Handler::Registry(config) => registry::handle(config, route, parts, &body).await,
        Handler::OssPush(hook) => hook.handle(route, parts, &body).await,
    }
}

fn error(status: StatusCode, message: &str) -> http::Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": message });
    response(status, "application/json", body.to_string())
}
