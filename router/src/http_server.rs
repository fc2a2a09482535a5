//! The accept loop shared by the HTTP listeners (ingress, admin, webhooks): HTTP/1.1 and h2c
//! through hyper-util (or HTTP/1.1 and h2 over TLS, see [`crate::tls`]), `TCP_NODELAY`, and
//! graceful shutdown that lets in-flight requests finish.
//!
//! TLS handshakes run in the connection's own task, with a timeout, so a slow or silent client
//! never holds up the accept loop. A client must send a request's headers within
//! [`HEADER_READ_TIMEOUT`] (and its body without pausing longer than
//! [`crate::body::BODY_IDLE_TIMEOUT`]), and any connection idle that long, with no byte read
//! and no request being handled, is closed (`until_idle`), so connections that open and say
//! nothing, or trickle, are not held for ever. Each listener holds at most
//! [`ConnectionLimit::max`] connections (`limits.maxConnections`): at the limit it stops
//! accepting until one closes, and new clients wait in the kernel's accept queue, as behind
//! HAProxy's `maxconn` or Go's `netutil.LimitListener`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::metrics::{ListenerLabels, Metrics};
use crate::tls::ReloadingTls;

/// The longest an HTTP/1.1 client may take to send a request's headers (hyper's default once
/// a timer is set), and the longest a connection may sit idle: before its first request, or
/// between requests (as nginx's `keepalive_timeout`; clients' pools reopen it).
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How often, at most, a listener at its connection limit says so in the log.
const LIMIT_WARNING_EVERY: Duration = Duration::from_secs(10);

/// How many connections a listener holds open, and where it reports them.
#[derive(Clone, Debug)]
pub struct ConnectionLimit {
    /// The most connections open at once.
    pub max: usize,
    /// The listener's name in logs and metrics: `ingress`, `admin`, `webhooks` or `worker`.
    pub listener: &'static str,
    /// Open connections (`triggerfish_http_connections`); the listener's series appears
    /// when it starts serving, so a listener never bound reports nothing.
    pub open: Family<ListenerLabels, Gauge>,
    /// Times the listener stopped accepting at `max`
    /// (`triggerfish_http_connection_limit_waits_total`).
    pub waits: Family<ListenerLabels, Counter>,
}

impl ConnectionLimit {
    /// A limit of `max` connections reported under `listener` in the router's `metrics`.
    pub fn new(max: usize, listener: &'static str, metrics: &Metrics) -> ConnectionLimit {
        ConnectionLimit::in_families(
            max,
            listener,
            &metrics.http_connections,
            &metrics.http_connection_limit_waits,
        )
    }

    /// A limit of `max` connections reported under `listener` in the metric families `open`
    /// and `waits` (a process with a registry of its own, as `triggerfish worker`).
    pub fn in_families(
        max: usize,
        listener: &'static str,
        open: &Family<ListenerLabels, Gauge>,
        waits: &Family<ListenerLabels, Counter>,
    ) -> ConnectionLimit {
        ConnectionLimit {
            max,
            listener,
            open: open.clone(),
            waits: waits.clone(),
        }
    }
}

/// Serves `handler` on `listener` (over TLS when `tls` is given), holding at most
/// `limit.max` connections, until `stop` is cancelled, then waits up to `grace` for open
/// requests to finish.
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<Arc<ReloadingTls>>,
    limit: ConnectionLimit,
    handler: H,
    stop: CancellationToken,
    grace: Duration,
) where
    H: Fn(http::Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = http::Response<Full<Bytes>>> + Send + 'static,
{
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let slots = Arc::new(Semaphore::new(limit.max));
    let labels = ListenerLabels {
        listener: limit.listener,
    };
    let (connections, waits) = (
        limit.open.get_or_create(&labels).clone(),
        limit.waits.get_or_create(&labels).clone(),
    );
    let mut warned: Option<std::time::Instant> = None;
    loop {
        let slot = match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                waits.inc();
                if warned.is_none_or(|at| at.elapsed() >= LIMIT_WARNING_EVERY) {
                    tracing::warn!(
                        listener = limit.listener,
                        max_connections = limit.max,
                        "connection limit reached: not accepting until a connection closes (limits.maxConnections)"
                    );
                    warned = Some(std::time::Instant::now());
                }
                tokio::select! {
                    slot = Arc::clone(&slots).acquire_owned() => match slot {
                        Ok(slot) => slot,
                        Err(_) => break, // never closed
                    },
                    () = stop.cancelled() => break,
                }
            }
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = stop.cancelled() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors, say: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let open = Open::new(slot, &connections);
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::new());
        let stream = Watched {
            inner: stream,
            activity: Arc::clone(&activity),
        };
        let handler = handler.clone();
        let in_service = Arc::clone(&activity);
        let service = service_fn(move |req| {
            let handler = handler.clone();
            let handling = Handling::start(Arc::clone(&in_service));
            async move {
                let response = handler(req).await;
                drop(handling);
                Ok::<_, Infallible>(response)
            }
        });
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let acceptor = tls.as_ref().map(|t| t.acceptor());
        tokio::spawn(async move {
            let _open = open;
            let ended = match acceptor {
                None => {
                    let connection = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    until_idle(watcher.watch(connection), &activity).await
                }
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(
                        crate::tls::HANDSHAKE_TIMEOUT,
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let connection = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    until_idle(watcher.watch(connection), &activity).await
                }
            };
            match ended {
                Some(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "connection ended with an error")
                }
                Some(Ok(())) => {}
                None => tracing::debug!(%peer, "idle connection closed"),
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("open connections did not finish within the grace period");
    }
}

/// Runs `connection` until it ends, or until it has been idle for [`HEADER_READ_TIMEOUT`]: no
/// bytes read and no request being handled. An idle connection is dropped, which closes its
/// socket. This covers what hyper's header timer does not: a connection that never sends a
/// byte (plain, or after its TLS handshake) and an idle HTTP/2 connection. Wakes once per
/// idle period, not per request.
async fn until_idle<F: Future>(connection: F, activity: &Activity) -> Option<F::Output> {
    let mut connection = std::pin::pin!(connection);
    loop {
        let deadline = if activity.handling() {
            tokio::time::Instant::now() + HEADER_READ_TIMEOUT
        } else {
            activity.last_active() + HEADER_READ_TIMEOUT
        };
        tokio::select! {
            ended = &mut connection => return Some(ended),
            () = tokio::time::sleep_until(deadline) => {
                if !activity.handling() && activity.last_active().elapsed() >= HEADER_READ_TIMEOUT {
                    return None;
                }
            }
        }
    }
}

/// An accepted connection: holds its slot under the listener's limit and counts in the
/// `open` gauge until dropped.
struct Open {
    _slot: OwnedSemaphorePermit,
    gauge: Gauge,
}

impl Open {
    fn new(slot: OwnedSemaphorePermit, gauge: &Gauge) -> Open {
        gauge.inc();
        Open {
            _slot: slot,
            gauge: gauge.clone(),
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// A connection's activity, for [`until_idle`]: when bytes last arrived or a request last
/// ended, and how many requests are being handled.
struct Activity {
    born: std::time::Instant,
    /// Milliseconds after `born`.
    last_active_ms: AtomicU64,
    handling: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            born: std::time::Instant::now(),
            last_active_ms: AtomicU64::new(0),
            handling: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_active_ms.store(ms, Ordering::Relaxed);
    }

    fn last_active(&self) -> tokio::time::Instant {
        let ms = self.last_active_ms.load(Ordering::Relaxed);
        tokio::time::Instant::from_std(self.born + Duration::from_millis(ms))
    }

    fn handling(&self) -> bool {
        self.handling.load(Ordering::Relaxed) > 0
    }
}

/// A request being handled; its end counts as activity.
struct Handling(Arc<Activity>);

impl Handling {
    fn start(activity: Arc<Activity>) -> Handling {
        activity.handling.fetch_add(1, Ordering::Relaxed);
        Handling(activity)
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.touch();
        self.0.handling.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that records in its [`Activity`] when bytes arrive.
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A response with a body and content type.
pub fn response(
    status: http::StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> http::Response<Full<Bytes>> {
    let mut r = http::Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}

/// An empty response.
pub fn empty(status: http::StatusCode) -> http::Response<Full<Bytes>> {
    let mut r = http::Response::new(Full::new(Bytes::new()));
    *r.status_mut() = status;
    r
}
