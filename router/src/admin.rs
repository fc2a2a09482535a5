//! The admin listener: `/healthz`, `/readyz`, `/metrics` (Prometheus text) and `/config`.
//!
//! It listens on its own address (loopback by default), apart from ingress, so that producers
//! cannot reach it and probes keep answering while ingress is saturated.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use hyper::body::Incoming;

use crate::http_server::response;
use crate::runtime::Router;

/// Handles one admin request.
pub async fn handle(
    router: Arc<Router>,
    req: http::Request<Incoming>,
) -> http::Response<Full<Bytes>> {
    if req.method() != http::Method::GET && req.method() != http::Method::HEAD {
        return response(StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n");
    }
    match req.uri().path() {
        "/healthz" => response(StatusCode::OK, "text/plain", "ok\n"),
        "/readyz" if router.is_ready() => response(StatusCode::OK, "text/plain", "ready\n"),
        "/readyz" if router.stop.is_cancelled() => response(
            StatusCode::SERVICE_UNAVAILABLE,
            "text/plain",
            "shutting down\n",
        ),
        "/readyz" => response(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "starting\n"),
        "/metrics" => response(
            StatusCode::OK,
            "text/plain; version=0.0.4; charset=utf-8",
            router.metrics.render(),
        ),
        "/config" => {
            let status = router.status.load_full();
            response(
                StatusCode::OK,
                "application/json",
                serde_json::to_vec_pretty(&*status).unwrap_or_default(),
            )
        }
        _ => response(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /healthz, /readyz, /metrics or /config\n",
        ),
    }
}
