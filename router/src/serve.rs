//! `triggerfish serve`: start-up and graceful shutdown.
//!
//! Start-up: load and build the config (or the embedded default), create the store and the
//! shard drivers, bind the ingress and admin listeners, then report ready. Shutdown on SIGTERM
//! or SIGINT: stop accepting (new requests get 503, `/readyz` fails), drain the queues until the
//! grace period ends, and log (and count) whatever could not be delivered.
//!
//! Shutdown has two stages. `Router::stop` starts the drain: ingress answers 503 with
//! `Retry-After`, `/readyz` fails, reloads stop. The ingress listener stays open through the
//! drain, so a producer or load balancer gets that 503 rather than a refused connection, and
//! the shard drivers keep running, because replies and forwards to other brokers re-enter the
//! shard queues until the last delivery ends. Only when the drain is over (or the grace period
//! is) does `drained` close the listener and stop the drivers.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::net::TcpListener;
use triggerfish_core::config::Config;

use crate::ingress::http::Ingress;
use crate::ingress::quic::QuicIngress;
use crate::metrics::{DropLabels, DropReason, Metrics};
use crate::plan::Plan;
use crate::runtime::{Router, Settings};
use crate::store::Store;
use crate::store::jetstream::{Consumers, JetStreamStore, Routing};
use crate::store::memory::MemoryStore;
use triggerfish_core::config::{StoreKind, TlsListener};

/// Command-line overrides of the `Server` document.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// HTTP ingress address.
    pub http: Option<SocketAddr>,
    /// Admin address.
    pub admin: Option<SocketAddr>,
    /// Number of shards.
    pub shards: Option<usize>,
    /// QUIC ingress address; `Some(None)` turns it off.
    pub quic: Option<Option<SocketAddr>>,
}

/// Why `serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The config file did not load or build.
    #[error("{0}")]
    Config(String),
    /// Anything else (a port in use, say).
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// Loads and builds the config at `path`, or the embedded default.
pub fn load_plan(path: Option<&PathBuf>) -> Result<Plan, StartError> {
    let config = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .map_err(|e| StartError::Config(format!("{}: cannot read: {e}", p.display())))?;
            Config::load(&text, &p.display().to_string())
                .map_err(|e| StartError::Config(e.to_string()))?
        }
        None => Config::embedded_default(),
    };
    Plan::build(config).map_err(|e| StartError::Config(e.to_string()))
}

/// Runs the data plane until a termination signal.
pub async fn serve(config_path: Option<PathBuf>, overrides: Overrides) -> Result<(), StartError> {
    let plan = load_plan(config_path.as_ref())?;
    let open_files = crate::open_files::raise_limit();
    let mut settings = Settings::from_spec(plan.config.server(), open_files);
    settings.http = overrides.http.unwrap_or(settings.http);
    settings.admin = overrides.admin.unwrap_or(settings.admin);
    settings.shards = overrides.shards.unwrap_or(settings.shards).max(1);
    settings.quic = overrides.quic.unwrap_or(settings.quic);

    let spec = plan.config.server().clone();
    let (store, memory) = match spec.store.kind {
        StoreKind::Memory => {
            let memory = Arc::new(MemoryStore::new(settings.shards, settings.shard_limits));
            (Store::Memory(Arc::clone(&memory)), Some(memory))
        }
        StoreKind::Jetstream => {
            let js = JetStreamStore::connect(&spec.store)
                .await
                .map_err(|e| StartError::Other(e.into()))?;
            tracing::info!(url = %spec.store.url, replicas = spec.store.stream_replicas, "using the JetStream store");
            (Store::JetStream(Arc::new(js)), None)
        }
    };
    let router = Arc::new(
        Router::new(
            settings.clone(),
            store.clone(),
            Metrics::new(),
            spec.data_dir.clone(),
        )
        .await?,
    );
    let metrics = Arc::clone(&router.metrics);
    if let Store::JetStream(js) = &store {
        let routing = Routing {
            snapshot: Arc::clone(&router.snapshot),
            metrics: Arc::clone(&metrics),
        };
        let _ = router
            .consumers
            .set(Consumers::new(Arc::clone(js), routing, router.stop.clone()));
    }
    let tls = plan.tls.clone();
    let tls_spec = spec.tls.clone();
    let tls_for = |listener: TlsListener| {
        tls.as_ref()
            .filter(|_| tls_spec.as_ref().is_some_and(|s| s.covers(listener)))
            .map(Arc::clone)
    };
    if let Some(t) = &tls {
        t.spawn_watch(router.stop.clone());
        tracing::info!(sha256 = %t.fingerprint(), "TLS enabled");
    }
    router
        .event_sources
        .set_webhook_tls(tls_for(TlsListener::Webhooks));
    let connections = |listener| {
        crate::http_server::ConnectionLimit::new(settings.max_connections, listener, &metrics)
    };
    router
        .event_sources
        .set_webhook_connection_limit(connections("webhooks"));
    router.apply(plan);

    // Cancelled when the drain is over; see the module docs.
    let drained = tokio_util::sync::CancellationToken::new();
    let mut drivers = Vec::new();
    for queue in memory.iter().flat_map(|m| m.shards()) {
        drivers.push(tokio::spawn(crate::shard::run(
            Arc::clone(queue),
            Arc::clone(&router.snapshot),
            Arc::clone(&metrics),
            drained.clone(),
        )));
    }

    let ingress_listener = bind(settings.http, "HTTP ingress").await?;
    let admin_listener = bind(settings.admin, "admin").await?;
    // Bound addresses, for the ready line: with port 0 (tests, several routers on one host)
    // it is the only place that names the ports.
    let http_bound = ingress_listener.local_addr().unwrap_or(settings.http);
    let admin_bound = admin_listener.local_addr().unwrap_or(settings.admin);
    let mut quic_bound = None;
    let quic_task = match settings.quic {
        Some(addr) => {
            let quic = Arc::new(QuicIngress::new(
                Arc::clone(&router.snapshot),
                store.clone(),
                Arc::clone(&metrics),
                router.stop.clone(),
                settings.quic_limits,
            ));
            match settings.quic_threads {
                None => {
                    let endpoint = bind_quic(addr, &spec, &quic, &router.stop)?;
                    quic_bound = Some(endpoint.local_addr().unwrap_or(addr));
                    Some((None, tokio::spawn(quic.serve(endpoint, drained.clone()))))
                }
                Some(threads) => {
                    let (runtime, endpoint) =
                        quic_runtime(threads, addr, &spec, &quic, &router.stop)?;
                    quic_bound = Some(endpoint.local_addr().unwrap_or(addr));
                    let task = runtime.spawn(quic.serve(endpoint, drained.clone()));
                    Some((Some(runtime), task))
                }
            }
        }
        None => None,
    };
    let ingress = Arc::new(Ingress::new(
        Arc::clone(&router.snapshot),
        store.clone(),
        Arc::clone(&metrics),
        router.stop.clone(),
        spec.limits.max_buffered_bytes.as_usize(),
    ));
    let ingress_task = tokio::spawn(crate::http_server::serve(
        ingress_listener,
        tls_for(TlsListener::Http),
        connections("ingress"),
        move |req| Arc::clone(&ingress).handle(req),
        drained.clone(),
        Duration::from_secs(5),
    ));
    let admin_stop = tokio_util::sync::CancellationToken::new();
    let admin_router = Arc::clone(&router);
    let admin_task = tokio::spawn(crate::http_server::serve(
        admin_listener,
        tls_for(TlsListener::Admin),
        connections("admin"),
        move |req| crate::admin::handle(Arc::clone(&admin_router), req),
        admin_stop.clone(),
        Duration::from_secs(1),
    ));
    if let Some(path) = &config_path {
        crate::reload::spawn(Arc::clone(&router), path.clone())
            .context("watching the config file")?;
    }
    spawn_gauges(Arc::clone(&router));
    router
        .ready
        .store(true, std::sync::atomic::Ordering::Release);
    let show = |addr: Option<SocketAddr>| addr.map_or_else(|| "off".to_owned(), |a| a.to_string());
    let open_file_limit = open_files.map_or_else(|| "unknown".to_owned(), |n| n.to_string());
    tracing::info!(http = %http_bound, quic = %show(quic_bound), admin = %admin_bound,
        webhooks = %show(router.event_sources.webhook_addr()), shards = settings.shards,
        max_connections = settings.max_connections, open_file_limit = %open_file_limit, "triggerfish is ready");

    wait_for_signal().await;
    let started = Instant::now();
    tracing::info!(grace = ?settings.grace, "shutting down: no longer accepting events, draining queues");
    router.stop.cancel();
    while router.undelivered().total() > 0 && started.elapsed() < settings.grace {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let left = router.undelivered();
    if left.total() > 0 {
        // Stopping consumers commit what is finished and leave their groups now, not after
        // their own drain wait.
        router.event_sources.gave_up();
        if matches!(store, Store::Memory(_)) {
            // Records of Kafka and RocketMQ sources are not committed until delivered: they
            // are read again, not lost.
            let read_again = crate::store::awaited_shares().min(left.total());
            let lost = left.total() - read_again;
            if lost > 0 {
                metrics
                    .dropped
                    .get_or_create(&DropLabels {
                        broker: "*".to_owned(),
                        reason: DropReason::Shutdown,
                    })
                    .inc_by(lost as u64);
                tracing::error!(
                    lost,
                    shard_queues = left.shards,
                    trigger_queues = left.triggers,
                    in_flight = left.in_flight,
                    read_again,
                    "shutdown grace period over: these events were accepted but not delivered, and are lost (memory store)"
                );
            }
            if read_again > 0 {
                tracing::warn!(
                    read_again,
                    "shutdown grace period over: these events of Kafka or RocketMQ sources were not delivered; their offsets are not committed, so they are read again at the next start"
                );
            }
        } else {
            tracing::warn!(
                trigger_queues = left.triggers,
                in_flight = left.in_flight,
                "shutdown grace period over: these events were not delivered here; JetStream redelivers them to another replica"
            );
        }
    } else {
        tracing::info!(took = ?started.elapsed(), "all accepted events were handled");
    }
    // Kafka consumers commit what was delivered before they leave their groups.
    router.event_sources.stopped(Duration::from_secs(10)).await;
    drained.cancel();
    let _ = ingress_task.await;
    if let Some((runtime, task)) = quic_task {
        let _ = task.await;
        if let Some(runtime) = runtime {
            runtime.shutdown_background();
        }
    }
    // Idle drivers return at once; one still waiting for room in a trigger queue after the
    // grace period holds events already reported as lost above.
    for d in drivers {
        d.abort();
    }
    router.scheduler_stopped().await;
    if let Store::JetStream(js) = &store {
        // The last deliveries' acknowledgements, so that JetStream does not redeliver them.
        js.close(Duration::from_secs(5)).await;
    }
    admin_stop.cancel();
    let _ = admin_task.await;
    Ok(())
}

/// Loads (or generates) the certificate, logs its fingerprint, and binds the QUIC endpoint.
fn bind_quic(
    addr: SocketAddr,
    spec: &triggerfish_core::config::ServerSpec,
    quic: &QuicIngress,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<quinn::Endpoint, StartError> {
    use crate::quic::tls;
    // `quic.tls`, else the HTTP listeners' `tls` certificate, else the development one.
    let files = spec.quic.tls.clone().or_else(|| {
        spec.tls
            .as_ref()
            .map(|t| triggerfish_core::config::TlsFiles {
                cert_file: t.cert_file.clone(),
                key_file: t.key_file.clone(),
            })
    });
    // Taken before loading, so that a change while loading is seen by the watch.
    let seen = files
        .as_ref()
        .and_then(|f| crate::tls::digest_files([&f.cert_file, &f.key_file]).ok());
    let identity = tls::server_identity(files.as_ref(), &spec.data_dir, addr)
        .map_err(|e| StartError::Other(anyhow::anyhow!("QUIC ingress TLS: {e}")))?;
    let cert = identity.cert_path.display().to_string();
    let fingerprint = format!("sha256:{}", identity.fingerprint);
    if identity.development {
        tracing::info!(cert = %cert, fingerprint = %fingerprint, generated = identity.generated,
            "QUIC ingress uses a self-signed development certificate; clients trust it with --ca-file {cert} or by pinning its fingerprint");
    } else {
        tracing::info!(cert = %cert, fingerprint = %fingerprint, "QUIC ingress certificate");
    }
    let secret = tls::endpoint_secret(&identity.key);
    let mut config = tls::server_config(identity)
        .map_err(|e| StartError::Other(anyhow::anyhow!("QUIC ingress TLS: {e}")))?;
    let transport = Arc::new(quic.transport_config());
    config.transport_config(Arc::clone(&transport));
    let server = crate::quic::Server { config, secret };
    let endpoint = crate::quic::endpoint(addr, Some(server))
        .with_context(|| format!("binding the QUIC ingress listener to {addr} (UDP)"))
        .map_err(StartError::Other)?;
    if let Some(files) = files {
        tls::spawn_cert_watch(endpoint.clone(), files, seen, transport, stop.clone());
    }
    let bound = endpoint.local_addr().unwrap_or(addr);
    tracing::info!(addr = %bound, alpn = "triggerfish/1", "QUIC ingress listening");
    Ok(endpoint)
}

/// `quic.threads`: a runtime of the QUIC ingress's own, and its endpoint bound on it. The
/// endpoint driver, which every packet of every connection goes through, the connections and
/// their streams then run there, so that packets and acks do not queue behind deliveries.
/// (Handing only the streams to the main workers cost batched QUIC a fifth of its throughput:
/// cross-thread wake-ups between a stream and its connection's driver.)
fn quic_runtime(
    threads: usize,
    addr: SocketAddr,
    spec: &triggerfish_core::config::ServerSpec,
    quic: &QuicIngress,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<(tokio::runtime::Runtime, quinn::Endpoint), StartError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("tf-quic")
        .enable_all()
        .build()
        .context("starting the QUIC ingress threads")
        .map_err(StartError::Other)?;
    let bound = {
        let _entered = runtime.enter();
        bind_quic(addr, spec, quic, stop)
    };
    match bound {
        Ok(endpoint) => Ok((runtime, endpoint)),
        Err(e) => {
            // Dropping a runtime here would block the caller's worker.
            runtime.shutdown_background();
            Err(e)
        }
    }
}

async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the {what} listener to {addr}"))
        .map_err(StartError::Other)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Publishes queue depths once a second, so the hot path never touches gauges.
fn spawn_gauges(router: Arc<Router>) {
    use crate::metrics::QueueLabels;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = router.stop.cancelled() => return,
            }
            for (i, depth) in router.store.shard_depths().into_iter().enumerate() {
                let labels = QueueLabels {
                    queue: "shard",
                    name: i.to_string(),
                };
                router
                    .metrics
                    .queue_depth
                    .get_or_create(&labels)
                    .set(depth as i64);
            }
            let snapshot = router.snapshot.load();
            for broker in snapshot.brokers.values() {
                for t in &broker.triggers {
                    let labels = QueueLabels {
                        queue: "trigger",
                        name: t.plan.key.clone(),
                    };
                    router
                        .metrics
                        .queue_depth
                        .get_or_create(&labels)
                        .set(t.depth() as i64);
                }
            }
        }
    });
}
