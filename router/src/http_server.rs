//! The accept loop shared by the HTTP listeners (ingress, admin, webhooks): HTTP/1.1 and h2c
//! through hyper-util (or HTTP/1.1 and h2 over TLS, see [`crate::tls`]), `TCP_NODELAY`, and
//! graceful shutdown that lets in-flight requests finish.
//!
//! TLS handshakes run in the connection's own task, with a timeout, so a slow or silent client
//! never holds up the accept loop. A client must send a request's headers within
//! [`HEADER_READ_TIMEOUT`] (and its body without pausing longer than
//! [`crate::body::BODY_IDLE_TIMEOUT`]), and connections idle that long are closed, so
//! connections that open and say nothing, or trickle, are not held for ever.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::tls::ReloadingTls;

/// The longest an HTTP/1.1 client may take to send a request's headers, and the longest a
/// connection may sit idle: a new one before its first request, a kept-alive one between
/// requests (as nginx's `keepalive_timeout`; clients' pools reopen it). hyper's default once a
/// timer is set.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Serves `handler` on `listener` (over TLS when `tls` is given) until `stop` is cancelled,
/// then waits up to `grace` for open requests to finish.
pub async fn serve<H, F>(
    listener: TcpListener,
    tls: Option<Arc<ReloadingTls>>,
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
    loop {
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
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |req| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(handler(req).await) }
        });
        let watcher = graceful.watcher();
        let builder = builder.clone();
        let acceptor = tls.as_ref().map(|t| t.acceptor());
        tokio::spawn(async move {
            let ended = match acceptor {
                None => {
                    // hyper's header timer starts with a request's first byte: a client that
                    // connects and says nothing is closed after the same time.
                    let mut first = [0u8; 1];
                    if tokio::time::timeout(HEADER_READ_TIMEOUT, stream.peek(&mut first))
                        .await
                        .is_err()
                    {
                        tracing::debug!(%peer, "connection closed: no request");
                        return;
                    }
                    let connection = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    watcher.watch(connection).await
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
                    watcher.watch(connection).await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
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
