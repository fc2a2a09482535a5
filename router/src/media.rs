//! Media worker pools in the router (cargo feature `media`): the in-process `WorkerPool`
//! sink, `triggerfish worker` (a standalone CloudEvents endpoint in front of a config's
//! pools), and `triggerfish media run` (one pipeline on one local file, with a progress bar).
//!
//! A trigger whose subscriber is `ref: {kind: WorkerPool, name: ...}` delivers to the pool
//! in-process: the event is submitted without copying, and the attempt ends when the job
//! does, with the job's reply (`dev.triggerfish.media.completed` or `.failed`) fed back into
//! the trigger's broker like any subscriber's reply. A full queue answers "unavailable",
//! which the trigger's delivery policy retries, so backpressure reaches the broker. The job's
//! own `limits.maxWallTime` bounds the attempt; the trigger's per-attempt `timeout` does not
//! apply to in-process pools (as for `Exec`).
//!
//! Pools are started when a config first references them (loading ONNX Runtime and the
//! models, on a blocking thread) and kept across reloads while their spec is unchanged.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::Full;
use triggerfish_core::config::{Config, CustomResource, CustomSpec, Kind, WorkerPoolSpec};
use triggerfish_core::delivery::InternalError;
use triggerfish_core::event::{
    ContentMode, DecodeLimits, EncodeOptions, EventView, encode_structured,
};
use triggerfish_workers::native::Model;
use triggerfish_workers::{FileRun, MediaMetrics, Pipeline, PoolSettings, WorkerPool, run_file};

use crate::sinks::{Attempt, Response};

/// The pools a router runs, by `namespace/name`.
pub struct MediaPools {
    metrics: MediaMetrics,
    pools: parking_lot::Mutex<HashMap<String, (WorkerPoolSpec, Arc<WorkerPool>)>>,
}

impl MediaPools {
    /// No pools yet; their metrics go to `metrics`.
    pub fn new(metrics: MediaMetrics) -> MediaPools {
        MediaPools {
            metrics,
            pools: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// The sink for `resource`: its running pool, or a new one when the spec is new or
    /// changed. Starting a pool loads models: this blocks (on a blocking thread when called
    /// from a multi-threaded runtime).
    pub fn sink(&self, resource: &CustomResource, spec: &WorkerPoolSpec) -> WorkerPoolSink {
        let name = format!("{}/{}", resource.meta.namespace, resource.meta.name);
        // Held while a pool starts (once per spec change); nothing async waits on it.
        let mut pools = self.pools.lock();
        if let Some((running, pool)) = pools.get(&name)
            && running == spec
        {
            return WorkerPoolSink {
                name,
                pool: Ok(Arc::clone(pool)),
            };
        }
        let start = || WorkerPool::start(&name, spec, &self.metrics);
        let started = match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(start)
            }
            _ => start(),
        };
        let pool = match started {
            Ok(pool) => {
                let pool = Arc::new(pool);
                pools.insert(name.clone(), (spec.clone(), Arc::clone(&pool)));
                Ok(pool)
            }
            Err(e) => {
                tracing::error!(pool = %name, error = %e, "worker pool did not start; its deliveries will be retried");
                Err(e.to_string())
            }
        };
        WorkerPoolSink { name, pool }
    }
}

/// Delivers to a worker pool in-process.
pub struct WorkerPoolSink {
    name: String,
    pool: Result<Arc<WorkerPool>, String>,
}

impl WorkerPoolSink {
    /// `namespace/name` of the pool.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Submits `view` and waits for the job; see the module docs.
    pub async fn send(&self, view: &EventView<'_>) -> Attempt {
        let pool = match &self.pool {
            Ok(pool) => pool,
            Err(e) => {
                tracing::warn!(pool = %self.name, error = %e, id = view.id(), "worker pool unavailable");
                return Attempt::Internal(InternalError::Unavailable);
            }
        };
        let handle = match pool.submit_view(view) {
            Ok(handle) => handle,
            Err(full) => {
                tracing::debug!(pool = %self.name, id = view.id(), error = %full, "worker pool full");
                return Attempt::Internal(InternalError::Unavailable);
            }
        };
        let output = handle.await;
        match output.reply {
            Some(reply) => Attempt::Response(Response {
                status: StatusCode::OK,
                retry_after: None,
                reply: Some(Box::new(Ok(reply))),
                body_excerpt: Bytes::new(),
            }),
            None => Attempt::accepted(),
        }
    }
}

/// Checks, without starting anything, that a `WorkerPool` can run here: ONNX Runtime and
/// the models its pipeline needs are where the spec or the environment says. A config that
/// references a pool that cannot start is rejected with the command that fixes it.
pub fn check(spec: &WorkerPoolSpec) -> Result<(), String> {
    let settings = PoolSettings::from_spec(spec);
    let needs = settings.pipeline.needs();
    if needs.vad || needs.ocr {
        settings.locator.ort_library().map_err(|e| e.to_string())?;
    }
    let models = [
        (needs.vad, Model::SileroVad),
        (needs.ocr, Model::OcrDetection),
        (needs.ocr, Model::OcrRecognition),
    ];
    for (needed, model) in models {
        if needed {
            settings.locator.model(model).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

/// `triggerfish media run`: one pipeline on one file, with a progress bar over the media
/// timeline; prints the summary (JSON) and where the artifacts are.
#[allow(
    clippy::print_stderr,
    reason = "the command line reports errors to its user on stderr"
)]
pub fn run_command(
    pipeline: Pipeline,
    file: &Path,
    out: Option<PathBuf>,
    interval: Option<f64>,
) -> ExitCode {
    let out = out.unwrap_or_else(|| {
        let stem = file
            .file_name()
            .map_or_else(|| "media".into(), |n| n.to_string_lossy().into_owned());
        PathBuf::from(format!("{stem}.triggerfish"))
    });
    let mut run = FileRun::new(&out);
    if let Some(seconds) = interval {
        if !(seconds > 0.0 && seconds.is_finite()) {
            eprintln!("error: --interval must be a positive number of seconds");
            return ExitCode::from(2);
        }
        run.options.frame_interval = Duration::from_secs_f64(seconds);
    }
    let bar = indicatif::ProgressBar::new(1000);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg} [{bar:40}] {percent:>3}% of the media timeline, {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    bar.set_message(format!("{pipeline} {}", file.display()));
    let result = run_file(pipeline, file, &run, |fraction| {
        bar.set_position((fraction.clamp(0.0, 1.0) * 1000.0) as u64);
    });
    bar.finish_and_clear();
    match result {
        Ok(summary) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&summary).unwrap_or_default()
            );
            eprintln!(
                "{pipeline}: {:.1} s of media in {:.1} s; {} artifacts in {}",
                summary.media_seconds,
                summary.elapsed_seconds,
                summary.artifacts.len(),
                out.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{pipeline} failed: {} ({})", e.message, e.reason);
            ExitCode::FAILURE
        }
    }
}

/// `triggerfish worker`: runs every `WorkerPool` of `config` behind a CloudEvents HTTP
/// endpoint. `POST /{namespace}/{name}` (or `POST /` when there is one pool) takes an event
/// in binary or structured mode and answers with the job's reply in structured mode (200),
/// 202 without a body for an ignored object, 503 with `Retry-After` when the pool is full.
/// `GET /healthz` answers 200; `GET /metrics` the media metrics.
pub async fn worker(config_path: PathBuf, listen: Option<SocketAddr>) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&config_path)
        .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", config_path.display()))?;
    let config = Config::load(&text, &config_path.display().to_string())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let listen = listen.unwrap_or(config.server().listen.http);
    let limits = config.server().limits;
    let metrics = MediaMetrics::new();
    let mut registry = prometheus_client::registry::Registry::with_prefix("triggerfish");
    metrics.register(&mut registry);
    let connections = worker_connection_limit(
        crate::open_files::connection_cap(
            limits.max_connections.map(|n| n.get()),
            crate::open_files::raise_limit(),
        ),
        &mut registry,
    );
    let mut pools = HashMap::new();
    for resource in config.custom() {
        if let (Kind::WorkerPool, CustomSpec::WorkerPool(spec)) = (resource.id.kind, &resource.spec)
        {
            let name = format!("{}/{}", resource.meta.namespace, resource.meta.name);
            let (n, s, m) = (name.clone(), (**spec).clone(), metrics.clone());
            let pool = tokio::task::spawn_blocking(move || WorkerPool::start(&n, &s, &m)).await??;
            pools.insert(name, Arc::new(pool));
        }
    }
    if pools.is_empty() {
        anyhow::bail!("{}: no WorkerPool in this config", config_path.display());
    }
    let state = Arc::new(WorkerState {
        pools,
        registry,
        max_request_bytes: limits.max_request_bytes.as_usize(),
        bodies: crate::body::Budget::new(limits.max_buffered_bytes.as_usize()),
        decode: DecodeLimits {
            max_event_bytes: limits.max_event_bytes.as_usize(),
            max_batch_events: 1,
        },
    });
    // `Server.spec.tls` applies to the worker's endpoint when it lists the `http` listener.
    let tls = match &config.server().tls {
        Some(spec) if spec.covers(triggerfish_core::config::TlsListener::Http) => Some(Arc::new(
            crate::tls::ReloadingTls::load(spec).map_err(|e| anyhow::anyhow!("spec.tls: {e}"))?,
        )),
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(listen).await?;
    tracing::info!(address = %listener.local_addr()?, pools = state.pools.len(), tls = tls.is_some(), "worker listening");
    let stop = tokio_util::sync::CancellationToken::new();
    if let Some(t) = &tls {
        t.spawn_watch(stop.clone());
    }
    let signal = stop.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        signal.cancel();
    });
    #[cfg(unix)]
    {
        let signal = stop.clone();
        tokio::spawn(async move {
            if let Ok(mut term) =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            {
                term.recv().await;
                signal.cancel();
            }
        });
    }
    let handler = move |req| {
        let state = Arc::clone(&state);
        async move { state.handle(req).await }
    };
    crate::http_server::serve(
        listener,
        tls,
        connections,
        handler,
        stop,
        Duration::from_secs(30),
    )
    .await;
    Ok(())
}

/// The worker endpoint's connection cap, reported in the worker's own registry under the
/// router's metric names.
fn worker_connection_limit(
    max: usize,
    registry: &mut prometheus_client::registry::Registry,
) -> crate::http_server::ConnectionLimit {
    let (open, waits) = crate::metrics::register_http_connections(registry);
    crate::http_server::ConnectionLimit::in_families(max, "worker", &open, &waits)
}

/// `response` with `Retry-After: 1`.
fn retry_later(mut r: http::Response<Full<Bytes>>) -> http::Response<Full<Bytes>> {
    r.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    r
}

struct WorkerState {
    pools: HashMap<String, Arc<WorkerPool>>,
    registry: prometheus_client::registry::Registry,
    max_request_bytes: usize,
    /// The bytes of request bodies being read (`limits.maxBufferedBytes`), held until the
    /// event is in its pool's queue or refused.
    bodies: crate::body::Budget,
    decode: DecodeLimits,
}

impl WorkerState {
    async fn handle(
        &self,
        req: http::Request<hyper::body::Incoming>,
    ) -> http::Response<Full<Bytes>> {
        use crate::http_server::{empty, response};
        let path = req.uri().path().trim_matches('/').to_owned();
        match (req.method(), path.as_str()) {
            (&http::Method::GET, "healthz") => {
                return response(StatusCode::OK, "text/plain", "ok\n");
            }
            (&http::Method::GET, "metrics") => {
                let mut text = String::new();
                if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
                    return empty(StatusCode::INTERNAL_SERVER_ERROR);
                }
                return response(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    text,
                );
            }
            (&http::Method::POST, _) => {}
            _ => return empty(StatusCode::METHOD_NOT_ALLOWED),
        }
        let pool = match (path.as_str(), self.pools.len()) {
            ("", 1) => self.pools.values().next(),
            (p, _) => self.pools.get(p),
        };
        let Some(pool) = pool.cloned() else {
            return response(
                StatusCode::NOT_FOUND,
                "text/plain",
                format!("no worker pool {path:?}\n"),
            );
        };
        let (parts, body) = req.into_parts();
        let (held, read) = self
            .bodies
            .read(&parts.headers, body, self.max_request_bytes)
            .await;
        let body = match read {
            Ok(b) => b,
            Err(e @ crate::body::BodyError::TooLarge { .. }) => return empty(e.status()),
            Err(e @ crate::body::BodyError::Busy) => {
                return retry_later(response(e.status(), "text/plain", format!("{e}\n")));
            }
            Err(e) => return response(e.status(), "text/plain", format!("{e}\n")),
        };
        let mode = ContentMode::detect(
            parts
                .headers
                .get(http::header::CONTENT_TYPE)
                .map(http::HeaderValue::as_bytes),
        );
        if mode == ContentMode::Batched {
            return response(
                StatusCode::BAD_REQUEST,
                "text/plain",
                "one event per request\n",
            );
        }
        let batch = match crate::ingress::http::decode(mode, &parts.headers, body, &self.decode) {
            Ok(batch) if batch.len() == 1 => batch,
            Ok(_) => {
                return response(
                    StatusCode::BAD_REQUEST,
                    "text/plain",
                    "one event per request\n",
                );
            }
            Err(errors) => {
                let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
                let status = if mode == ContentMode::UnsupportedFormat {
                    StatusCode::UNSUPPORTED_MEDIA_TYPE
                } else {
                    StatusCode::BAD_REQUEST
                };
                return response(status, "text/plain", format!("{}\n", text.join("\n")));
            }
        };
        let Some(view) = batch.get(0) else {
            return empty(StatusCode::BAD_REQUEST);
        };
        let handle = match pool.submit_view(&view) {
            Ok(h) => h,
            Err(full) => {
                return retry_later(response(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("{full}\n"),
                ));
            }
        };
        // The job owns a copy of its event now, and the pool's queue bounds it.
        drop(batch);
        drop(held);
        match handle.await.into_reply() {
            Some(reply) => match reply.get(0) {
                Some(event) => response(
                    StatusCode::OK,
                    "application/cloudevents+json",
                    encode_structured(&event, &EncodeOptions::default()),
                ),
                None => empty(StatusCode::ACCEPTED),
            },
            None => empty(StatusCode::ACCEPTED),
        }
    }
}
