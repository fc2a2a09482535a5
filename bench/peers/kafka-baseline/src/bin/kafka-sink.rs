//! `kafka-sink`: the HTTP subscriber of `bench/kafka.sh`. Answers every POST `200` with an
//! empty body and counts it; `GET /stats` returns the count and the arrival times of the
//! first and last request (ns since the sink started), `POST /reset` zeroes them between
//! runs. It does not parse events: each request is one delivery in this benchmark.
//!
//! (tf-loadgen's sink counts only events stamped by tf-loadgen and reports at exit; this
//! benchmark's events come from Kafka records and are counted while the run goes on.)

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use clap::Parser;

/// A counting HTTP sink.
#[derive(Parser, Debug)]
struct Args {
    /// Where to listen.
    #[arg(long)]
    listen: SocketAddr,
}

struct Counts {
    start: Instant,
    requests: AtomicU64,
    first_ns: AtomicU64,
    last_ns: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let counts = Arc::new(Counts {
        start: Instant::now(),
        requests: AtomicU64::new(0),
        first_ns: AtomicU64::new(u64::MAX),
        last_ns: AtomicU64::new(0),
    });
    let app = Router::new()
        .route("/stats", get(stats))
        .route("/reset", post(reset))
        .fallback(receive)
        .with_state(counts);
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .context("binding the sink")?;
    axum::serve(listener, app).await.context("serving")?;
    Ok(())
}

async fn receive(State(c): State<Arc<Counts>>, _body: axum::body::Bytes) -> &'static str {
    let now = u64::try_from(c.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
    c.first_ns.fetch_min(now, Ordering::Relaxed);
    c.last_ns.fetch_max(now, Ordering::Relaxed);
    c.requests.fetch_add(1, Ordering::Relaxed);
    ""
}

async fn stats(State(c): State<Arc<Counts>>) -> String {
    serde_json::json!({
        "requests": c.requests.load(Ordering::Relaxed),
        "first_ns": c.first_ns.load(Ordering::Relaxed),
        "last_ns": c.last_ns.load(Ordering::Relaxed),
    })
    .to_string()
}

async fn reset(State(c): State<Arc<Counts>>) -> &'static str {
    c.requests.store(0, Ordering::Relaxed);
    c.first_ns.store(u64::MAX, Ordering::Relaxed);
    c.last_ns.store(0, Ordering::Relaxed);
    ""
}
