//! The running router: turns a [`Plan`] into a routing [`Snapshot`], starts (or keeps) trigger
//! dispatchers, swaps snapshots on reload, and shuts down gracefully.
//!
//! Reload keeps a trigger's dispatcher, queue and in-flight deliveries when its delivery plan
//! (subscriber, delivery spec, ordering, concurrency) is unchanged; a changed filter only
//! changes the index. A removed or changed trigger's old dispatcher drains what it holds and
//! stops when the last snapshot that references it is dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use prometheus_client::metrics::histogram::Histogram;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use triggerfish_core::config::{
    CaCerts, Config, CustomResource, CustomSpec, Destination, ResourceId, ServerSpec,
};
use triggerfish_core::cron::recurring::ScheduleRequest;
use triggerfish_core::event::DecodeLimits;

use crate::auth::outbound::Credential;
use crate::dispatch::{self, QueueLimits, TriggerHandle};
use crate::ingress::http::IngressLimits;
use crate::metrics::{Metrics, TriggerLabels};
use crate::plan::{Plan, TriggerPlan};
use crate::quic::client::{Peer, QuicClient};
use crate::republish::Republisher;
use crate::scheduler::{Scheduler, SchedulerHandle, SchedulerMetrics, TargetFactory};
use crate::shard::{BrokerRoute, Snapshot};
use crate::sinks::Sink;
use crate::sinks::display::DisplaySink;
use crate::sinks::exec::ExecSink;
use crate::sinks::file::FileSink;
use crate::sinks::http::{HttpClient, HttpSink};
use crate::sinks::pipeline::Pipeline;
use crate::sinks::quic::QuicSink;
use crate::store::Store;

/// Settings fixed for the life of the process (a reload cannot change them).
#[derive(Clone, Debug)]
pub struct Settings {
    /// HTTP ingress address.
    pub http: SocketAddr,
    /// Admin address.
    pub admin: SocketAddr,
    /// Number of shards.
    pub shards: usize,
    /// Shard queue limits.
    pub shard_limits: crate::store::memory::ShardLimits,
    /// Trigger queue limits.
    pub trigger_limits: QueueLimits,
    /// How long shutdown waits for queues to drain.
    pub grace: Duration,
    /// The QUIC ingress address, if on.
    pub quic: Option<SocketAddr>,
    /// The QUIC ingress's limits.
    pub quic_limits: crate::ingress::quic::QuicLimits,
    /// Threads of the QUIC ingress's own runtime; `None`: it shares the main one.
    pub quic_threads: Option<usize>,
    /// How QUIC subscribers verify servers.
    pub quic_trust: crate::quic::tls::Trust,
    /// The most connections each HTTP listener holds open (`limits.maxConnections`, else
    /// derived from the open-file limit: see [`crate::open_files`]).
    pub max_connections: usize,
    /// The `Server` document these settings came from, to tell a reload what it cannot change.
    pub server: ServerSpec,
}

impl Settings {
    /// Settings from a `Server` document; `shards` defaults to the number of cores, and
    /// `open_files` (the process's open-file limit, if known) sizes the default connection cap.
    pub fn from_spec(spec: &ServerSpec, open_files: Option<u64>) -> Settings {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Settings {
            http: spec.listen.http,
            admin: spec.listen.admin,
            shards: spec.shards.map_or(cores, |n| n.get()),
            shard_limits: crate::store::memory::ShardLimits {
                events: spec.queues.shard.events.get() as usize,
                bytes: spec.queues.shard.bytes.as_usize(),
            },
            trigger_limits: QueueLimits {
                events: spec.queues.trigger.events.get() as usize,
                bytes: spec.queues.trigger.bytes.as_usize(),
            },
            grace: spec.shutdown_grace_period.get(),
            quic: spec.listen.quic.0,
            quic_limits: crate::ingress::quic::QuicLimits {
                max_connections: spec.quic.max_connections.get() as usize,
                max_streams_per_connection: spec.quic.max_streams_per_connection.get(),
                max_buffered_bytes: spec.quic.max_buffered_bytes.as_usize(),
                idle_timeout: spec.quic.idle_timeout.get(),
                frame_timeout: spec.quic.frame_timeout.get(),
            },
            quic_threads: spec.quic.threads.map(|n| n.get()),
            quic_trust: crate::quic::tls::Trust {
                ca_file: spec.quic.client.ca_file.clone(),
                pinned_sha256: spec.quic.client.pinned_sha256.clone(),
                danger_accept_invalid_certs: spec.quic.client.danger_accept_invalid_certs,
            },
            max_connections: crate::open_files::connection_cap(
                spec.limits.max_connections.map(|n| n.get()),
                open_files,
            ),
            server: spec.clone(),
        }
    }

    /// The fields of the `Server` document in `new` that differ from the one the process
    /// started with and that only a restart applies: listeners, shards, queues, the shutdown
    /// grace period, the data directory, the store, TLS, QUIC, the connection cap and the
    /// ingress's body budget. (The
    /// other limits and `auth` are applied by a reload; a change of `listen.webhooks` is reported by the event sources.)
    pub fn restart_pending(&self, new: &ServerSpec) -> Vec<&'static str> {
        let old = &self.server;
        [
            ("listen.http", old.listen.http != new.listen.http),
            ("listen.admin", old.listen.admin != new.listen.admin),
            ("listen.quic", old.listen.quic != new.listen.quic),
            ("shards", old.shards != new.shards),
            ("queues", old.queues != new.queues),
            (
                "shutdownGracePeriod",
                old.shutdown_grace_period != new.shutdown_grace_period,
            ),
            ("dataDir", old.data_dir != new.data_dir),
            ("store", old.store != new.store),
            ("tls", old.tls != new.tls),
            ("quic", old.quic != new.quic),
            (
                "limits.maxConnections",
                old.limits.max_connections != new.limits.max_connections,
            ),
            (
                "limits.maxBufferedBytes",
                old.limits.max_buffered_bytes != new.limits.max_buffered_bytes,
            ),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
    }
}

/// What `/config` reports.
#[derive(Clone, Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigStatus {
    /// The config file, or `<embedded>`.
    pub file: String,
    /// SHA-256 of the active config text.
    pub version: String,
    /// When it became active, seconds since the Unix epoch.
    pub loaded_at: u64,
    /// Brokers and their trigger counts.
    pub brokers: Vec<BrokerStatus>,
    /// The last rejected reload, if any, since the active config was loaded, while the file
    /// still differs from the active config.
    pub last_rejected: Option<String>,
    /// `Server` fields the active config changes that take effect only at the next restart
    /// (the process runs with the values it started with).
    pub restart_pending: Vec<&'static str>,
}

/// One broker in `/config`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BrokerStatus {
    /// `namespace/name`.
    pub name: String,
    /// Trigger names, in config order.
    pub triggers: Vec<String>,
    /// Triggers the index cannot narrow down.
    pub scanned: usize,
}

/// Values shared by every sink that asks for the same key while one of them is alive, and
/// dropped with the last of them: the map keeps only weak references, so a reload that removes
/// the last destination naming a QUIC server, a file or a `CACerts` bundle closes that
/// connection, ends that writer thread or frees that TLS client, instead of keeping it for the
/// life of the process.
struct Shared<K, V>(parking_lot::Mutex<HashMap<K, Weak<V>>>);

impl<K, V> Default for Shared<K, V> {
    fn default() -> Self {
        Shared(parking_lot::Mutex::new(HashMap::new()))
    }
}

impl<K: Eq + std::hash::Hash, V> Shared<K, V> {
    /// The live value for `key`, or a new one from `make`. Entries whose values are gone are
    /// swept as new ones are made (config loads, not the hot path).
    fn get(&self, key: K, make: impl FnOnce() -> V) -> Arc<V> {
        match self.try_get(key, || Ok::<V, std::convert::Infallible>(make())) {
            Ok(value) => value,
        }
    }

    /// Like [`Shared::get`], for a `make` that can fail; a failure is not remembered.
    fn try_get<E>(&self, key: K, make: impl FnOnce() -> Result<V, E>) -> Result<Arc<V>, E> {
        let mut map = self.0.lock();
        if let Some(live) = map.get(&key).and_then(Weak::upgrade) {
            return Ok(live);
        }
        map.retain(|_, value| value.strong_count() > 0);
        let value = Arc::new(make()?);
        map.insert(key, Arc::downgrade(&value));
        Ok(value)
    }
}

/// Builds sinks and starts dispatchers: what triggers, PingSources and run-time schedules
/// share.
pub struct Dispatchers {
    store: Store,
    /// Publishes replies and forwards to a broker ([`crate::republish`]).
    republisher: Republisher,
    metrics: Arc<Metrics>,
    tracker: TaskTracker,
    in_flight: Arc<AtomicUsize>,
    /// Triggers (and other dispatchers) whose queues are backlogged ([`dispatch::Backlog`]).
    backlogged: Arc<AtomicUsize>,
    /// The queues of the dispatchers started, while they run: those a reload replaced too,
    /// which drain what they hold outside the routing snapshot ([`Router::undelivered`]).
    queues: parking_lot::Mutex<Vec<Weak<dispatch::Backlog>>>,
    limits: QueueLimits,
    client: Arc<HttpClient>,
    display: Arc<DisplaySink>,
    /// One writer per file, shared by every destination appending to it.
    files: Shared<PathBuf, FileSink>,
    scheduler: std::sync::OnceLock<SchedulerHandle>,
    #[cfg(feature = "media")]
    media: crate::media::MediaPools,
    quic: Arc<QuicClient>,
    /// One connection per QUIC server, shared by every trigger delivering there (across
    /// reloads too, while a trigger still uses it).
    peers: Shared<(String, u16), Peer>,
    /// One producer per Kafka or RocketMQ sink resource, shared by the triggers using it;
    /// replaced when the resource changes.
    producers: parking_lot::Mutex<HashMap<ResourceId, (CustomResource, Sink)>>,
    /// One HTTP client per distinct `CACerts` bundle, shared by the destinations that name it
    /// (across reloads too, while one of them still does).
    trusting: Shared<CaCerts, HttpClient>,
}

impl Dispatchers {
    /// Starts a dispatcher for `plan` (a trigger's, a schedule's or a source's).
    pub fn start(&self, plan: Arc<TriggerPlan>, reply_limits: DecodeLimits) -> TriggerHandle {
        self.start_after(plan, None, reply_limits)
    }

    /// Starts a dispatcher for `plan`, replacing the dispatcher whose
    /// [`TriggerHandle::drained`] is `after`, if any (see [`dispatch::start`]). Its queue
    /// counts in [`Router::undelivered`] for as long as it runs, after a reload replaced it
    /// too.
    pub fn start_after(
        &self,
        plan: Arc<TriggerPlan>,
        after: Option<CancellationToken>,
        reply_limits: DecodeLimits,
    ) -> TriggerHandle {
        let handle = self.build(plan, after, reply_limits);
        let mut queues = self.queues.lock();
        queues.retain(|q| q.strong_count() > 0);
        queues.push(Arc::downgrade(&handle.backlog));
        handle
    }

    /// Events waiting in the queues of every running dispatcher (not in flight), replaced
    /// ones included.
    fn queued(&self) -> usize {
        let queues = self.queues.lock();
        queues
            .iter()
            .filter_map(Weak::upgrade)
            .map(|q| q.depth())
            .sum()
    }

    fn build(
        &self,
        plan: Arc<TriggerPlan>,
        after: Option<CancellationToken>,
        reply_limits: DecodeLimits,
    ) -> TriggerHandle {
        let label = TriggerLabels::of(&plan);
        // Only subscribers that get batches have the metric (a series per trigger otherwise).
        let batched = plan.http_batch.is_some() || matches!(plan.subscriber, Destination::Quic(_));
        let batch_sizes = batched.then(|| {
            let sizes = self.metrics.delivery_batch_events.get_or_create(&label);
            sizes.clone()
        });
        let sink = self
            .sink(
                &plan.subscriber,
                plan.subscriber_resource.as_ref(),
                plan.credential.as_ref(),
                reply_limits,
                batch_sizes.as_ref(),
            )
            .delivered_by(&label.trigger);
        let sink = match (sink, plan.delivery.as_ref().map(|d| d.pipelining.get())) {
            (Sink::Http(http), Some(depth)) if depth > 1 => {
                Sink::Http(Box::new(pipelined(*http, &plan, usize::from(depth))))
            }
            (sink, _) => sink,
        };
        let sink = match (sink, plan.http_batch, batch_sizes) {
            (Sink::Http(http), Some(batching), Some(batch_sizes)) => {
                let max_in_flight = plan.max_in_flight.get();
                Sink::Http(Box::new(http.with_batching(
                    batching,
                    max_in_flight,
                    reply_limits,
                    batch_sizes,
                )))
            }
            (sink, ..) => sink,
        };
        let dead_letter = plan
            .delivery
            .as_ref()
            .and_then(|d| d.dead_letter_sink.as_ref())
            .map(|d| {
                let resource = plan.dead_letter_resource.as_ref();
                self.sink(d, resource, None, reply_limits, None)
                    .delivered_by(&label.trigger)
            });
        dispatch::start(
            plan,
            after,
            sink,
            dead_letter,
            self.republisher.clone(),
            reply_limits,
            self.limits,
            &self.metrics,
            self.tracker.clone(),
            Arc::clone(&self.in_flight),
            Arc::clone(&self.backlogged),
        )
    }

    /// The HTTP client for destinations with `CACerts` `ca`.
    fn client_trusting(&self, ca: &CaCerts) -> Arc<HttpClient> {
        self.trusting
            .try_get(ca.clone(), || crate::sinks::http::client_trusting(ca))
            .unwrap_or_else(|e| {
                // The config checked the certificates; if rustls still refuses one, the shared
                // client makes the handshake fail, so deliveries are retried and dead-lettered.
                tracing::error!(error = %e, "CACerts not usable; their destinations will fail TLS verification");
                Arc::clone(&self.client)
            })
    }

    /// The sink for `dest`; `credential` is the bearer token HTTP and QUIC requests carry,
    /// and a QUIC sink observes its frames' sizes in `batch_sizes`.
    fn sink(
        &self,
        dest: &Destination,
        resource: Option<&CustomResource>,
        credential: Option<&Credential>,
        reply_limits: DecodeLimits,
        batch_sizes: Option<&Histogram>,
    ) -> Sink {
        match dest {
            Destination::Uri(url, _) | Destination::Service { url, .. } => {
                let client = match dest.ca_certs() {
                    None => Arc::clone(&self.client),
                    Some(ca) => self.client_trusting(ca),
                };
                match HttpSink::new(url, client) {
                    Ok(h) => Sink::Http(Box::new(h.with_credential(credential.cloned()))),
                    // The config validated the URL; an http::Uri it cannot become is a bug, and the
                    // display sink at least shows the events instead of losing them.
                    Err(e) => {
                        tracing::error!(url = %url, error = %e, "subscriber URL not usable by the HTTP client; printing events instead");
                        Sink::Display(Arc::clone(&self.display))
                    }
                }
            }
            Destination::Quic(q) => {
                let peer = self.peers.get((q.host.clone(), q.port), || {
                    Peer::new(Arc::clone(&self.quic), &q.host, q.port)
                });
                Sink::Quic(QuicSink::new(
                    q,
                    peer,
                    credential.cloned(),
                    batch_sizes.cloned(),
                ))
            }
            Destination::Display => Sink::Display(Arc::clone(&self.display)),
            Destination::File { path } => {
                Sink::File(self.files.get(path.clone(), || FileSink::new(path.clone())))
            }
            Destination::Broker { namespace, name } => Sink::Broker {
                key: Arc::from(format!("{namespace}/{name}")),
                publisher: self.republisher.clone(),
                trigger: None,
            },
            Destination::InProcess {
                kind: "Scheduler", ..
            } => match self.scheduler.get() {
                Some(h) => Sink::Scheduler(h.clone()),
                None => Sink::Display(Arc::clone(&self.display)),
            },
            _ => match resource.map(|r| (&r.spec, r)) {
                Some((CustomSpec::KafkaSink(_) | CustomSpec::RocketMQSink(_), r)) => {
                    self.producer(r)
                }
                Some((CustomSpec::Exec(spec), r)) => {
                    let name = format!("{}/{}", r.meta.namespace, r.meta.name);
                    match ExecSink::new(name.clone(), spec, reply_limits) {
                        Ok(sink) => Sink::Exec(Arc::new(sink)),
                        // `Plan::build` checked it; the program may have vanished since.
                        Err(e) => {
                            tracing::error!(exec = %name, error = %e, "Exec sink unusable; printing its events instead");
                            Sink::Display(Arc::clone(&self.display))
                        }
                    }
                }
                #[cfg(feature = "media")]
                Some((CustomSpec::WorkerPool(spec), r)) => {
                    Sink::WorkerPool(Arc::new(self.media.sink(r, spec)))
                }
                // `Plan::build` rejects in-process kinds this build does not have.
                _ => Sink::Display(Arc::clone(&self.display)),
            },
        }
    }
}

impl Dispatchers {
    /// Where a schedule delivering by `plan` can offer its ticks straight into a broker: a
    /// Broker destination on the memory store, without a rate limit (a JetStream publish is
    /// asynchronous, and a rate limit is the dispatcher's to keep).
    fn direct_broker(&self, plan: &TriggerPlan) -> Option<crate::scheduler::Direct> {
        match (&plan.subscriber, &self.store) {
            (Destination::Broker { namespace, name }, Store::Memory(store))
                if plan.rate_limit.is_none() =>
            {
                Some(crate::scheduler::Direct {
                    broker: Arc::from(format!("{namespace}/{name}")),
                    store: Arc::clone(store),
                })
            }
            _ => None,
        }
    }

    /// The producer of a Kafka or RocketMQ sink resource, started once and shared.
    fn producer(&self, resource: &CustomResource) -> Sink {
        // The lock guards the map only; starting a producer does no I/O (clients connect in
        // the background).
        let mut producers = self.producers.lock();
        if let Some((r, sink)) = producers.get(&resource.id)
            && r == resource
        {
            return sink.clone();
        }
        let name = format!("{}/{}", resource.meta.namespace, resource.meta.name);
        let started = match &resource.spec {
            CustomSpec::KafkaSink(spec) => crate::sinks::kafka::KafkaSinkConfig::of(resource, spec)
                .and_then(|c| {
                    crate::sinks::kafka::KafkaSink::new(name.clone(), c).map_err(|e| e.to_string())
                })
                .map(|s| Sink::Kafka(Arc::new(s))),
            CustomSpec::RocketMQSink(spec) => {
                crate::sinks::rocketmq::RocketMqSinkConfig::of(resource, spec).map(|c| {
                    Sink::RocketMq(Arc::new(crate::sinks::rocketmq::RocketMqSink::new(
                        name.clone(),
                        c,
                    )))
                })
            }
            _ => Err("not a producer kind".to_owned()),
        };
        match started {
            Ok(sink) => {
                producers.insert(resource.id.clone(), (resource.clone(), sink.clone()));
                sink
            }
            Err(e) => {
                tracing::error!(sink = %name, error = %e, "the sink cannot start; printing its events instead");
                Sink::Display(Arc::clone(&self.display))
            }
        }
    }
}

/// The router's shared state.
pub struct Router {
    /// The routing snapshot.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Where accepted events wait.
    pub store: Store,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Active config.
    pub status: ArcSwap<ConfigStatus>,
    /// The active config itself, for components that resolve names at run time.
    pub config: Arc<ArcSwap<Option<Config>>>,
    /// Ready once the config is loaded and the listeners are bound.
    pub ready: AtomicBool,
    /// Cancelled when shutdown starts.
    pub stop: CancellationToken,
    /// Delivery tasks and dispatchers.
    pub tracker: TaskTracker,
    /// Fixed settings.
    pub settings: Settings,
    /// Deliveries in flight.
    pub in_flight: Arc<AtomicUsize>,
    /// Sinks and dispatchers.
    pub dispatchers: Arc<Dispatchers>,
    /// The scheduler.
    pub scheduler: SchedulerHandle,
    /// JetStream consumers, when the store is JetStream.
    pub consumers: std::sync::OnceLock<crate::store::jetstream::Consumers>,
    scheduler_task: parking_lot::Mutex<Option<tokio::task::JoinHandle<()>>>,
    sources: parking_lot::Mutex<HashMap<Arc<str>, SourceDispatcher>>,
    gate_state: parking_lot::Mutex<crate::auth::GateState>,
    /// Event sources (webhooks, MNS pollers, watched directories).
    pub event_sources: crate::sources::SourceSet,
}

/// `http` with pipelined connections of its own, `depth` requests deep, for `plan`'s
/// `maxInFlight`; as it was if they cannot be set up (logged).
fn pipelined(http: HttpSink, plan: &TriggerPlan, depth: usize) -> HttpSink {
    let ca = plan.subscriber.ca_certs();
    let max_in_flight = plan.max_in_flight.get() as usize;
    match Pipeline::new(http.url(), depth, max_in_flight, || {
        crate::sinks::http::tls_config(ca)
    }) {
        Ok(pipeline) => http.with_pipeline(Some(Arc::new(pipeline))),
        Err(e) => {
            tracing::error!(trigger = %plan.key, error = %e, "delivery.pipelining not usable; delivering one request at a time per connection");
            http
        }
    }
}

/// The delivery plan of a schedule and the dispatcher running it.
type SourceDispatcher = (Arc<TriggerPlan>, Arc<TriggerHandle>);

impl Router {
    /// Creates the router and starts its scheduler. Nothing is routed until [`Router::apply`].
    pub async fn new(
        settings: Settings,
        store: Store,
        mut metrics: Metrics,
        data_dir: PathBuf,
    ) -> anyhow::Result<Router> {
        let client = crate::sinks::http::client()
            .map_err(|e| anyhow::anyhow!("loading the system's trusted TLS roots: {e}"))?;
        if settings.quic_trust.danger_accept_invalid_certs {
            tracing::warn!(
                "quic.client.dangerAcceptInvalidCerts is set: QUIC subscribers accept any server certificate; anyone on the path can read and change their events"
            );
        }
        let quic =
            Arc::new(QuicClient::new(&settings.quic_trust).map_err(|e| {
                anyhow::anyhow!("setting up the QUIC client (spec.quic.client): {e}")
            })?);
        let scheduler_metrics = SchedulerMetrics::register(metrics.registry_mut());
        let source_metrics = crate::sources::SourceMetrics::register(metrics.registry_mut());
        let metrics = Arc::new(metrics);
        let empty = Snapshot {
            brokers: HashMap::new(),
            limits: IngressLimits {
                max_request_bytes: 0,
                decode: DecodeLimits::default(),
            },
            gate: Arc::new(crate::auth::Gate::open()),
        };
        let in_flight = Arc::new(AtomicUsize::new(0));
        let tracker = TaskTracker::new();
        let stop = CancellationToken::new();
        let event_sources = crate::sources::SourceSet::new(
            store.clone(),
            client.clone(),
            source_metrics,
            stop.clone(),
            settings.server.limits.max_buffered_bytes.as_usize(),
        );
        let snapshot = Arc::new(ArcSwap::from_pointee(empty));
        let dispatchers = Arc::new(Dispatchers {
            store: store.clone(),
            republisher: Republisher::new(Arc::clone(&snapshot), store.clone()),
            metrics: Arc::clone(&metrics),
            tracker: tracker.clone(),
            in_flight: Arc::clone(&in_flight),
            backlogged: Arc::new(AtomicUsize::new(0)),
            queues: parking_lot::Mutex::new(Vec::new()),
            limits: settings.trigger_limits,
            client: Arc::new(client),
            display: Arc::new(DisplaySink::new()),
            files: Shared::default(),
            scheduler: std::sync::OnceLock::new(),
            #[cfg(feature = "media")]
            media: crate::media::MediaPools::new(metrics.media.clone()),
            quic,
            peers: Shared::default(),
            producers: parking_lot::Mutex::new(HashMap::new()),
            trusting: Shared::default(),
        });
        let config: Arc<ArcSwap<Option<Config>>> = Arc::new(ArcSwap::from_pointee(None));
        let factory = schedule_factory(Arc::clone(&dispatchers), Arc::clone(&config));
        let state = match &store {
            Store::JetStream(js) => crate::scheduler::StateConfig::JetStream {
                context: Box::new(js.context().clone()),
                replicas: js.replicas(),
            },
            Store::Memory(_) => crate::scheduler::StateConfig::Dir(data_dir),
        };
        let (scheduler, scheduler_task) = Scheduler::start(
            store.clone(),
            scheduler_metrics,
            state,
            factory,
            stop.clone(),
        )
        .await?;
        let _ = dispatchers.scheduler.set(scheduler.clone());
        Ok(Router {
            snapshot,
            store,
            metrics,
            status: ArcSwap::from_pointee(ConfigStatus {
                file: String::new(),
                version: String::new(),
                loaded_at: 0,
                brokers: Vec::new(),
                last_rejected: None,
                restart_pending: Vec::new(),
            }),
            config,
            ready: AtomicBool::new(false),
            stop,
            tracker,
            settings,
            in_flight,
            dispatchers,
            scheduler,
            consumers: std::sync::OnceLock::new(),
            scheduler_task: parking_lot::Mutex::new(Some(scheduler_task)),
            sources: parking_lot::Mutex::new(HashMap::new()),
            gate_state: parking_lot::Mutex::new(crate::auth::GateState::default()),
            event_sources,
        })
    }

    /// Makes `plan` the active config: builds its snapshot, reusing the dispatchers of
    /// unchanged triggers and schedules, and swaps it in atomically.
    pub fn apply(&self, plan: Plan) {
        let previous = self.snapshot.load_full();
        let mut reusable: HashMap<&str, &Arc<TriggerHandle>> = HashMap::new();
        for broker in previous.brokers.values() {
            for t in &broker.triggers {
                reusable.insert(t.plan.key.as_str(), t);
            }
        }
        let spec = plan.config.server();
        let limits = IngressLimits {
            max_request_bytes: spec.limits.max_request_bytes.as_usize(),
            decode: DecodeLimits {
                max_event_bytes: spec.limits.max_event_bytes.as_usize(),
                max_batch_events: spec.limits.max_batch_events.get() as usize,
            },
        };
        let mut brokers = HashMap::new();
        let mut status = Vec::new();
        let (mut started, mut kept) = (0usize, 0usize);
        for broker in plan.brokers {
            let mut handles = Vec::with_capacity(broker.triggers.len());
            for t in &broker.triggers {
                match reusable.get(t.key.as_str()) {
                    Some(h) if h.plan == *t => {
                        handles.push(Arc::clone(h));
                        kept += 1;
                    }
                    previous => {
                        // An ordered trigger's new dispatcher waits for the old one.
                        let after = previous
                            .filter(|_| t.order == triggerfish_core::config::DeliveryOrder::Ordered)
                            .map(|h| h.drained.clone());
                        handles.push(Arc::new(self.dispatchers.start_after(
                            Arc::clone(t),
                            after,
                            limits.decode,
                        )));
                        started += 1;
                    }
                }
            }
            status.push(BrokerStatus {
                name: broker.key.to_string(),
                triggers: broker.triggers.iter().map(|t| t.name.clone()).collect(),
                scanned: broker.index.scanned(),
            });
            let route = BrokerRoute::new(
                Arc::clone(&broker.key),
                broker.index,
                handles,
                // JetStream keeps backlogs in the stream, and takes every event it can store.
                matches!(self.dispatchers.store, Store::Memory(_))
                    .then(|| Arc::clone(&self.dispatchers.backlogged)),
                &self.metrics,
            );
            brokers.insert(broker.key, Arc::new(route));
        }
        let consumed: Vec<(crate::store::BrokerKey, bool)> = brokers
            .iter()
            .map(|(k, b): (&crate::store::BrokerKey, &Arc<BrokerRoute>)| {
                (
                    Arc::clone(k),
                    b.triggers
                        .iter()
                        .any(|t| t.plan.order == triggerfish_core::config::DeliveryOrder::Ordered),
                )
            })
            .collect();
        let gate = crate::auth::Gate::build(
            plan.auth,
            &mut self.gate_state.lock(),
            &self.dispatchers.client,
        );
        self.snapshot.store(Arc::new(Snapshot {
            brokers,
            limits,
            gate: Arc::new(gate),
        }));
        if let Some(consumers) = self.consumers.get() {
            consumers.sync(&consumed);
        }

        // Schedules: keep the dispatcher of a schedule whose delivery is unchanged.
        let mut sources = self.sources.lock();
        let mut next = HashMap::new();
        let mut set = Vec::with_capacity(plan.sources.len());
        for source in plan.sources {
            let target = match sources.get(&source.key) {
                Some((p, h)) if **p == *source.delivery => Arc::clone(h),
                _ => Arc::new(
                    self.dispatchers
                        .start(Arc::clone(&source.delivery), limits.decode),
                ),
            };
            next.insert(
                Arc::clone(&source.key),
                (Arc::clone(&source.delivery), Arc::clone(&target)),
            );
            set.push(crate::scheduler::Source {
                key: source.key,
                recurring: source.recurring,
                direct: self.dispatchers.direct_broker(&source.delivery),
                target,
            });
        }
        *sources = next;
        drop(sources);
        self.scheduler.limits.store(Arc::new(plan.scheduler));
        self.scheduler.apply(set);
        self.event_sources.apply(
            plan.event_sources,
            &self.dispatchers,
            limits,
            spec.listen.webhooks,
        );

        let loaded_at = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let restart_pending = self.settings.restart_pending(spec);
        if !restart_pending.is_empty() {
            tracing::warn!(fields = %restart_pending.join(", "),
                "config reload: these Server fields changed and take effect only at the next restart; the process keeps the values it started with");
        }
        self.status.store(Arc::new(ConfigStatus {
            file: plan.config.file_name().to_owned(),
            version: plan.config.version().to_owned(),
            loaded_at,
            brokers: status,
            last_rejected: None,
            restart_pending,
        }));
        tracing::info!(version = %plan.config.version(), file = %plan.config.file_name(), triggers_started = started,
            triggers_kept = kept, "config active");
        self.config.store(Arc::new(Some(plan.config)));
    }

    /// Records a rejected reload for `/config`.
    pub fn reject(&self, message: String) {
        let mut status = (**self.status.load()).clone();
        status.last_rejected = Some(message);
        self.status.store(Arc::new(status));
    }

    /// Forgets a rejected reload: the config file holds the active config again.
    pub fn clear_rejected(&self) {
        let current = self.status.load();
        if current.last_rejected.is_none() {
            return;
        }
        let mut status = (**current).clone();
        status.last_rejected = None;
        self.status.store(Arc::new(status));
        tracing::info!(version = %current.version, "the config file holds the active config again");
    }

    /// Events not yet delivered: queued in shards or triggers (those a reload replaced
    /// included, while they drain), or in flight.
    pub fn undelivered(&self) -> Undelivered {
        Undelivered {
            shards: self.store.queued(),
            triggers: self.dispatchers.queued(),
            in_flight: self.in_flight.load(Ordering::Acquire),
        }
    }

    /// Waits for the scheduler to save its state after [`Router::stop`] was cancelled.
    pub async fn scheduler_stopped(&self) {
        let task = self.scheduler_task.lock().take();
        if let Some(task) = task {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
        }
    }

    /// Whether the router is ready for traffic.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire) && !self.stop.is_cancelled()
    }
}

/// How the scheduler builds the target of a run-time schedule: resolve its sink against the
/// active config, in the requesting trigger's namespace, and start a dispatcher for it.
fn schedule_factory(
    dispatchers: Arc<Dispatchers>,
    config: Arc<ArcSwap<Option<Config>>>,
) -> TargetFactory {
    Arc::new(move |namespace: &str, request: &ScheduleRequest| {
        let recurring = request.recurring()?;
        let guard = config.load();
        let Some(config) = guard.as_ref() else {
            return Err("no config is active".into());
        };
        let sink = config.resolve_destination(namespace, &request.sink)?;
        if let Destination::InProcess { kind, .. } = &sink {
            return Err(format!(
                "a run-time schedule cannot send to {kind}; use a uri, a Service or a Broker"
            ));
        }
        let reply_limits = DecodeLimits {
            max_event_bytes: config.server().limits.max_event_bytes.as_usize(),
            max_batch_events: config.server().limits.max_batch_events.get() as usize,
        };
        let plan = Arc::new(TriggerPlan {
            key: format!("{namespace}/schedules/{}", request.name),
            name: request.name.clone(),
            broker: format!("{namespace}/-"),
            subscriber: sink,
            subscriber_resource: None,
            dead_letter_resource: None,
            delivery: None,
            order: triggerfish_core::config::DeliveryOrder::Unordered,
            max_in_flight: std::num::NonZeroU32::MIN,
            replies: false,
            credential: None,
            rate_limit: None,
            http_batch: None,
        });
        let direct = dispatchers.direct_broker(&plan);
        Ok((
            recurring,
            Arc::new(dispatchers.start(plan, reply_limits)),
            direct,
        ))
    })
}

/// Events the router holds that have not reached a destination yet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Undelivered {
    /// In shard queues.
    pub shards: usize,
    /// Matched, and waiting for their delivery to start: in a trigger queue, or taken off it
    /// by the trigger's dispatcher (waiting for a delivery slot, or behind their partition
    /// key). Schedules' and sources' dispatcher queues count here too.
    pub triggers: usize,
    /// Being delivered (including waits between retries).
    pub in_flight: usize,
}

impl Undelivered {
    /// The total.
    pub fn total(&self) -> usize {
        self.shards + self.triggers + self.in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_values_live_as_long_as_their_users() {
        let shared: Shared<&str, String> = Shared::default();
        let a = shared.get("peer", || "first".to_owned());
        let again = shared.get("peer", || "second".to_owned());
        assert!(Arc::ptr_eq(&a, &again), "a live value is shared");
        let other = shared.get("other", || "other".to_owned());
        drop((a, again, other));
        // Every user is gone: the next one gets a new value, and the dead entries are swept.
        let b = shared.get("peer", || "second".to_owned());
        assert_eq!(*b, "second");
        assert_eq!(shared.0.lock().len(), 1, "the entry of `other` was swept");
        // A failure to make a value is returned and not remembered.
        assert_eq!(
            shared.try_get("ca", || Err("bad bundle")),
            Err("bad bundle")
        );
        let c = shared.try_get("ca", || Ok::<_, &str>("good".to_owned()));
        assert_eq!(c.as_deref().map(String::as_str), Ok("good"));
    }
}
