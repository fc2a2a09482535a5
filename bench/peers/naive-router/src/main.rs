//! `naive-router`: the CloudEvents broker a team would write by hand, used as the baseline of
//! Triggerfish's broker benchmarks (see this crate's README).
//!
//! - axum ingress: `POST /{namespace}/{broker}` in binary, structured or batched mode, `202`;
//! - the official SDK (`cloudevents-sdk` 0.9) parses each request into owned
//!   `cloudevents::Event`s;
//! - each event is checked against the broker's triggers one after another ([`filter`]);
//! - each match is delivered on its own tokio task, one event per request in binary mode, with
//!   a shared `reqwest::Client` (keep-alive pool). At most `--max-inflight` deliveries run at
//!   once; beyond that the ingress waits, which pushes back on senders.
//!
//! One attempt per delivery: no retries, no dead-letter sink, replies are ignored.

mod config;
mod delivery;
mod filter;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::routing::post;
use bytes::Bytes;
use clap::Parser;
use cloudevents::Event;
use http::{HeaderMap, StatusCode, header};
use tokio::sync::Semaphore;

use crate::config::{Config, TriggerConfig};

/// A hand-written CloudEvents broker (axum + cloudevents-sdk + reqwest), the baseline of
/// Triggerfish's broker benchmarks.
#[derive(Debug, Parser)]
#[command(name = "naive-router", version)]
struct Args {
    /// The Knative YAML config (Broker and Trigger documents).
    #[arg(long)]
    config: PathBuf,
    /// Listen address; defaults to the config's `Server` `listen.http`, else 127.0.0.1:8080.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Deliveries in flight at most; the ingress waits for a slot beyond that.
    #[arg(long, default_value_t = 1024)]
    max_inflight: usize,
    /// Per-delivery timeout, in seconds.
    #[arg(long, default_value_t = 30)]
    timeout_secs: u64,
}

/// What every request handler shares.
struct Broker {
    /// Triggers per `(namespace, broker)`, in config order.
    triggers: HashMap<(String, String), Vec<TriggerConfig>>,
    client: reqwest::Client,
    inflight: Arc<Semaphore>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let yaml = std::fs::read_to_string(&args.config)
        .with_context(|| format!("reading {}", args.config.display()))?;
    let config =
        Config::parse(&yaml).with_context(|| format!("loading {}", args.config.display()))?;
    let listen = args
        .listen
        .or(config.listen)
        .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));

    let mut triggers: HashMap<(String, String), Vec<TriggerConfig>> = HashMap::new();
    for (namespace, name) in &config.brokers {
        triggers.insert((namespace.clone(), name.clone()), Vec::new());
    }
    for t in &config.triggers {
        if let Some(list) = triggers.get_mut(&(t.namespace.clone(), t.broker.clone())) {
            list.push(t.clone());
        }
    }
    let inflight = Arc::new(Semaphore::new(args.max_inflight.max(1)));
    let broker = Arc::new(Broker {
        triggers,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(args.timeout_secs))
            .build()
            .context("building the HTTP client")?,
        inflight: Arc::clone(&inflight),
    });

    let app = Router::new()
        .route("/{namespace}/{broker}", post(ingest))
        .layer(DefaultBodyLimit::max(4 << 20))
        .with_state(broker);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    tracing::info!(
        addr = %listener.local_addr()?,
        brokers = config.brokers.len(),
        triggers = config.triggers.len(),
        "naive-router listening"
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await?;

    // Let in-flight deliveries finish: every slot free again means none is running.
    let all = u32::try_from(args.max_inflight.max(1)).unwrap_or(u32::MAX);
    let _ = tokio::time::timeout(Duration::from_secs(5), inflight.acquire_many(all)).await;
    Ok(())
}

/// `POST /{namespace}/{broker}`.
async fn ingest(
    State(broker): State<Arc<Broker>>,
    Path(key): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let Some(triggers) = broker.triggers.get(&key) else {
        return StatusCode::NOT_FOUND;
    };
    let events = match parse(&headers, body) {
        Ok(events) => events,
        Err(e) => {
            tracing::debug!(error = %e, "rejected a request");
            return StatusCode::BAD_REQUEST;
        }
    };
    for event in &events {
        for trigger in triggers {
            if !filter::matches(trigger, event) {
                continue;
            }
            let Ok(permit) = Arc::clone(&broker.inflight).acquire_owned().await else {
                return StatusCode::SERVICE_UNAVAILABLE;
            };
            let client = broker.client.clone();
            let uri = trigger.subscriber.clone();
            let event = event.clone();
            tokio::spawn(async move {
                delivery::deliver(&client, &uri, event).await;
                drop(permit);
            });
        }
    }
    StatusCode::ACCEPTED
}

/// Binary and structured mode through the SDK's HTTP binding, batches through serde.
fn parse(headers: &HeaderMap, body: Bytes) -> anyhow::Result<Vec<Event>> {
    let batched = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/cloudevents-batch+json"));
    if batched {
        Ok(serde_json::from_slice(&body)?)
    } else {
        Ok(vec![cloudevents::binding::http::to_event(
            headers,
            body.to_vec(),
        )?])
    }
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
