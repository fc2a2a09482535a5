//! Event sources: OSS via MNS (queue polling and HTTP push), S3/MinIO notifications, GitHub
//! and container-registry webhooks, and a local directory watched as a bucket.
//!
//! Every source turns what it receives into CloudEvents with the pure mappings of
//! `triggerfish_core::sources`, then publishes them through a [`Publisher`]:
//! - a **Broker** sink: straight into the broker's store, all or nothing, like HTTP ingress
//!   (the broker's triggers then deliver with their own semantics);
//! - **any other sink**: into a dispatcher built from a `TriggerPlan` toward the sink (no
//!   replies), which gives the broker's delivery semantics: the source's `delivery` retries
//!   and dead-letter sink. Its queue takes all of a request's events or none.
//!
//! "Published" means accepted there. Webhooks answer 2xx only once every event of the request
//! is published, and a non-2xx otherwise, so the sender retries; the MNS poller deletes a
//! message only after publishing it. With the memory store, what is published is still lost if
//! the process dies before delivering it (see `docs/ARCHITECTURE.md`).
//!
//! - [`webhook`]: the listener shared by the webhook sources (`Server.spec.listen.webhooks`),
//!   one path per source, and the request checks they share (method, body limit, status).
//! - [`github`], [`s3`], [`registry`]: the webhook handlers.
//! - [`oss`]: `OssSource`: the push handler and the queue poller; [`mns`]: the MNS client.
//! - [`watch`]: the `BucketWatch` directory watcher.
//! - [`kafka`]: `KafkaSource`, a Kafka consumer group. It commits its position only once
//!   events are safe (see
//!   [`crate::store::Store::publish_tracked`]) and sends bad records to a dead-letter
//!   dispatcher when configured.
//! - [`rocketmq`]: `RocketMQSource`, a RocketMQ consumer group (lite pull consumer with manual
//!   commits), with the same at-least-once bookkeeping as the Kafka source.
//!
//! [`SourceSet::apply`] runs on every config load: sources whose resource and secrets are
//! unchanged keep running (their tasks, their dispatcher, GitHub's delivery-id memory); changed
//! ones are restarted, removed ones stopped.
//!
//! What this module does not do: parse payloads or check signatures (core), or deliver (the
//! dispatchers).

pub mod github;
pub mod kafka;
pub mod mns;
pub mod oss;
pub mod registry;
pub mod rocketmq;
pub mod s3;
mod tracked;
pub mod watch;
pub mod webhook;

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio_util::sync::CancellationToken;
use triggerfish_core::config::{
    Config, ConfigError, CustomResource, CustomSpec, DeliveryOrder, Destination, FieldPath,
    InvalidRecords, SecretRef,
};
use triggerfish_core::event::{DecodeLimits, EventRef, decode_batched};
use triggerfish_core::sources::{SourceEvent, encode_batch};

use crate::dispatch::{EnqueueAllError, TriggerHandle};
use crate::ingress::http::IngressLimits;
use crate::plan::TriggerPlan;
use crate::runtime::Dispatchers;
use crate::sinks::http::HttpClient;
use crate::store::{BrokerKey, DEFAULT_TTL, OfferError, Store, arrival_now};

/// A source of the config, built and checked, ready to start.
pub struct EventSourcePlan {
    /// `namespace/<kind>s/name`, e.g. `default/githubsources/build`.
    pub key: Arc<str>,
    /// The resource, to tell whether it changed across a reload.
    pub resource: CustomResource,
    /// What runs.
    pub built: Built,
    /// Where its events go.
    pub target: Target,
    /// Where records that cannot become events go (Kafka sources with
    /// `invalidRecords: deadLetter`): a dispatcher toward the dead-letter sink.
    pub dead_letter: Option<Arc<TriggerPlan>>,
}

/// Where a source's events go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Straight into a broker's store.
    Broker(BrokerKey),
    /// Through a dispatcher toward a sink.
    Dispatcher(Arc<TriggerPlan>),
}

/// The runtime form of each kind, secrets read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Built {
    /// `GitHubSource`.
    GitHub(github::GitHubConfig),
    /// `S3Source`.
    S3(s3::S3Config),
    /// `RegistrySource`.
    Registry(registry::RegistryConfig),
    /// `OssSource` in push mode.
    OssPush(oss::PushConfig),
    /// `OssSource` in queue mode.
    OssQueue(oss::QueueConfig),
    /// `BucketWatch`.
    Watch(watch::WatchConfig),
    /// `KafkaSource`.
    Kafka(Box<kafka::KafkaSourceConfig>),
    /// `RocketMQSource`.
    RocketMq(Box<rocketmq::RocketMqSourceConfig>),
}

impl Built {
    /// The webhook path, for webhook sources.
    fn path(&self) -> Option<&str> {
        match self {
            Built::GitHub(c) => Some(&c.path),
            Built::S3(c) => Some(&c.path),
            Built::Registry(c) => Some(&c.path),
            Built::OssPush(c) => Some(&c.path),
            Built::OssQueue(_) | Built::Watch(_) | Built::Kafka(_) | Built::RocketMq(_) => None,
        }
    }
}

/// A secret's bytes. Its `Debug` output hides them, so it can sit in logged structs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Arc<[u8]>);

impl Secret {
    /// The bytes.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Reads `secret`: an environment variable, or a file without its trailing newline.
    pub fn read(secret: &SecretRef) -> Result<Secret, String> {
        let bytes = match (&secret.env, &secret.file) {
            (Some(name), None) => std::env::var_os(name)
                .ok_or_else(|| format!("environment variable {name} is not set"))?
                .into_encoded_bytes(),
            (None, Some(path)) => {
                let mut bytes = std::fs::read(path)
                    .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                if bytes.ends_with(b"\n") {
                    bytes.pop();
                    if bytes.ends_with(b"\r") {
                        bytes.pop();
                    }
                }
                bytes
            }
            _ => return Err("set exactly one of env and file".into()),
        };
        if bytes.is_empty() {
            return Err("the secret is empty".into());
        }
        Ok(Secret(bytes.into()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Builds a component of `resource` outside a config load (a sink the runtime starts): its
/// errors are joined into one message.
pub(crate) fn build_detached<T>(
    resource: &CustomResource,
    build: impl FnOnce(&mut BuildErrors<'_>) -> Option<T>,
) -> Result<T, String> {
    let config = Config::embedded_default();
    let mut errors = Vec::new();
    let mut check = BuildErrors {
        config: &config,
        resource,
        errors: &mut errors,
        failed: false,
    };
    let built = build(&mut check);
    let failed = check.failed;
    match built {
        Some(b) if !failed => Ok(b),
        _ => Err(errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")),
    }
}

/// Errors found while building sources, located in the config.
pub(crate) struct BuildErrors<'a> {
    config: &'a Config,
    resource: &'a CustomResource,
    errors: &'a mut Vec<ConfigError>,
    failed: bool,
}

impl<'a> BuildErrors<'a> {
    /// A collector of errors about `resource` of `config`.
    pub(crate) fn new(
        config: &'a Config,
        resource: &'a CustomResource,
        errors: &'a mut Vec<ConfigError>,
    ) -> BuildErrors<'a> {
        BuildErrors {
            config,
            resource,
            errors,
            failed: false,
        }
    }

    /// Whether an error was recorded.
    pub(crate) fn failed(&self) -> bool {
        self.failed
    }

    /// Records an error about `path` (below `spec`).
    pub(crate) fn at(&mut self, path: &str, message: impl Into<String>) {
        let mut field = FieldPath::root().key("spec");
        for part in path.split('.').filter(|p| !p.is_empty()) {
            field = field.key(part);
        }
        self.errors.push(
            self.config
                .error_at(&self.resource.id, field, message.into()),
        );
        self.failed = true;
    }

    /// Reads a secret, recording an error at `path` when it cannot be read.
    pub(crate) fn secret(&mut self, path: &str, secret: &SecretRef) -> Option<Secret> {
        match Secret::read(secret) {
            Ok(s) => Some(s),
            Err(e) => {
                self.at(path, e);
                None
            }
        }
    }

    /// Checks a webhook path, or makes the default one.
    pub(crate) fn path(&mut self, path: Option<&str>, plural: &str) -> String {
        match path {
            Some(p) if p.starts_with('/') && !p.contains(['?', '#']) && !p.contains(' ') => {
                p.to_owned()
            }
            Some(_) => {
                self.at(
                    "path",
                    "a path starts with / and has no query, fragment or spaces",
                );
                String::new()
            }
            None => format!(
                "/{}/{plural}/{}",
                self.resource.meta.namespace, self.resource.meta.name
            ),
        }
    }
}

/// Builds the sources of `config`, adding errors (unreadable secrets, bad fields, two sources
/// on one path) to `errors`. Called by [`crate::plan::Plan::build`].
pub fn plan(config: &Config, errors: &mut Vec<ConfigError>) -> Vec<EventSourcePlan> {
    let mut plans: Vec<EventSourcePlan> = Vec::new();
    let mut paths: BTreeMap<String, Arc<str>> = BTreeMap::new();
    for resource in config.custom() {
        let (plural, built) = {
            let mut check = BuildErrors {
                config,
                resource,
                errors: &mut *errors,
                failed: false,
            };
            let (plural, built) = match &resource.spec {
                CustomSpec::GitHubSource(spec) => (
                    "githubsources",
                    github::GitHubConfig::build(spec, &mut check).map(Built::GitHub),
                ),
                CustomSpec::S3Source(spec) => (
                    "s3sources",
                    s3::S3Config::build(spec, &mut check).map(Built::S3),
                ),
                CustomSpec::RegistrySource(spec) => (
                    "registrysources",
                    registry::RegistryConfig::build(spec, &mut check).map(Built::Registry),
                ),
                CustomSpec::OssSource(spec) => ("osssources", oss::build(spec, &mut check)),
                CustomSpec::BucketWatch(spec) => (
                    "bucketwatches",
                    watch::WatchConfig::build(spec, &resource.meta.name, &mut check)
                        .map(Built::Watch),
                ),
                CustomSpec::KafkaSource(spec) => (
                    "kafkasources",
                    kafka::KafkaSourceConfig::build(spec, resource, &mut check)
                        .map(|c| Built::Kafka(Box::new(c))),
                ),
                CustomSpec::RocketMQSource(spec) => (
                    "rocketmqsources",
                    rocketmq::RocketMqSourceConfig::build(spec, resource, &mut check)
                        .map(|c| Built::RocketMq(Box::new(c))),
                ),
                _ => continue,
            };
            (plural, built.filter(|_| !check.failed))
        };
        let (ns, name) = (&resource.meta.namespace, &resource.meta.name);
        let key: Arc<str> = Arc::from(format!("{ns}/{plural}/{name}"));
        let Some(built) = built else { continue };
        // The loader resolved the sink of every source kind; it is only missing when the
        // resource failed to load, which `Config` never holds.
        let Some(sink) = resource.sink.clone() else {
            continue;
        };
        if let Some(path) = built.path() {
            if let Some(other) = paths.get(path) {
                let mut check = BuildErrors {
                    config,
                    resource,
                    errors: &mut *errors,
                    failed: false,
                };
                let field = match built {
                    Built::OssPush(_) => "push.path",
                    _ => "path",
                };
                check.at(field, format!("{path} is already the path of {other}"));
                continue;
            }
            paths.insert(path.to_owned(), Arc::clone(&key));
        }
        let target = match &sink {
            Destination::Broker { namespace, name } => {
                Target::Broker(Arc::from(format!("{namespace}/{name}")))
            }
            _ => {
                let spec = FieldPath::root().key("spec");
                let sink_resource = crate::plan::check_destination(
                    config,
                    &resource.id,
                    &sink,
                    spec.key("sink"),
                    errors,
                );
                let dead_letter_resource = resource
                    .delivery
                    .as_ref()
                    .and_then(|d| d.dead_letter_sink.as_ref())
                    .and_then(|dls| {
                        crate::plan::check_destination(
                            config,
                            &resource.id,
                            dls,
                            spec.key("delivery").key("deadLetterSink"),
                            errors,
                        )
                    });
                Target::Dispatcher(Arc::new(TriggerPlan {
                    key: key.to_string(),
                    name: name.clone(),
                    broker: format!("{ns}/-"),
                    subscriber: sink,
                    subscriber_resource: sink_resource,
                    dead_letter_resource,
                    delivery: resource.delivery.clone(),
                    order: ordering(resource),
                    max_in_flight: SOURCE_MAX_IN_FLIGHT,
                    replies: false,
                    credential: None,
                    rate_limit: None,
                    http_batch: None,
                }))
            }
        };
        let dead_letter = match &built {
            Built::Kafka(c) if c.invalid == InvalidRecords::DeadLetter => {
                dead_letter_plan(config, resource, &key, errors)
            }
            Built::RocketMq(c) if c.invalid == InvalidRecords::DeadLetter => {
                dead_letter_plan(config, resource, &key, errors)
            }
            _ => None,
        };
        plans.push(EventSourcePlan {
            key,
            resource: resource.clone(),
            built,
            target,
            dead_letter,
        });
    }
    plans
}

/// The delivery order toward a non-Broker sink: Kafka's or RocketMQ's `ordering`, else
/// unordered.
fn ordering(resource: &CustomResource) -> DeliveryOrder {
    match &resource.spec {
        CustomSpec::KafkaSource(s) => s.ordering.unwrap_or_default(),
        CustomSpec::RocketMQSource(s) => s.ordering.unwrap_or_default(),
        _ => DeliveryOrder::Unordered,
    }
}

/// The delivery of bad records' descriptions to a source's dead-letter sink: the source's
/// retries, and nowhere further to go.
fn dead_letter_plan(
    config: &Config,
    resource: &CustomResource,
    key: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<Arc<TriggerPlan>> {
    let delivery = resource.delivery.as_ref()?;
    let dls = delivery.dead_letter_sink.clone()?;
    let path = FieldPath::root()
        .key("spec")
        .key("delivery")
        .key("deadLetterSink");
    let dls_resource = crate::plan::check_destination(config, &resource.id, &dls, path, errors);
    let mut retries = delivery.clone();
    retries.dead_letter_sink = None;
    Some(Arc::new(TriggerPlan {
        key: format!("{key}/invalid-records"),
        name: resource.meta.name.clone(),
        broker: format!("{}/-", resource.meta.namespace),
        subscriber: dls,
        subscriber_resource: dls_resource,
        dead_letter_resource: None,
        delivery: Some(retries),
        order: DeliveryOrder::Unordered,
        max_in_flight: SOURCE_MAX_IN_FLIGHT,
        replies: false,
        credential: None,
        rate_limit: None,
        http_batch: None,
    }))
}

/// Deliveries in flight at once from one source to its sink (when the sink is not a Broker).
pub const SOURCE_MAX_IN_FLIGHT: NonZeroU32 = match NonZeroU32::new(16) {
    Some(n) => n,
    None => NonZeroU32::MIN,
};

/// Where a running source publishes.
pub enum Publisher {
    /// A broker of this process.
    Broker {
        /// The broker.
        key: BrokerKey,
        /// The store.
        store: Store,
    },
    /// A dispatcher toward the sink.
    Dispatcher(Arc<TriggerHandle>),
}

/// Why events were not published. Nothing of the batch was.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The queues stayed full for the whole wait (HTTP 429 / 503 with `Retry-After`).
    #[error("queues are full")]
    Full,
    /// The router is stopping (HTTP 503).
    #[error("the router is stopping")]
    Closed,
    /// The store cannot take events for the whole wait: JetStream is unreachable (HTTP 503
    /// with `Retry-After`).
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// An event, or the batch, exceeds the limits (HTTP 413).
    #[error("{0}")]
    TooLarge(String),
    /// A mapped event is not a valid CloudEvent (HTTP 400).
    #[error("{0}")]
    Invalid(String),
}

impl Publisher {
    /// Publishes every event or none, waiting up to `wait` for room. Returns how many were
    /// published.
    pub async fn publish(
        &self,
        events: &[SourceEvent],
        limits: DecodeLimits,
        wait: Duration,
    ) -> Result<usize, PublishError> {
        if events.is_empty() {
            return Ok(0);
        }
        let decoded = decode_batched(encode_batch(events), &limits).map_err(|e| {
            if e.is_too_large() {
                PublishError::TooLarge(e.to_string())
            } else {
                PublishError::Invalid(e.to_string())
            }
        })?;
        if let Some(first) = decoded.rejected.first() {
            let message = format!(
                "event {} ({}): {}",
                first.index.unwrap_or(0),
                events[first.index.unwrap_or(0).min(events.len() - 1)].id,
                first.kind
            );
            return Err(if first.is_too_large() {
                PublishError::TooLarge(message)
            } else {
                PublishError::Invalid(message)
            });
        }
        let mut batch = decoded.batch;
        if let Publisher::Broker { .. } = self {
            batch.stamp_arrival(arrival_now());
        }
        let batch = Arc::new(batch);
        let n = batch.len();
        let deadline = Instant::now() + wait;
        match self {
            Publisher::Broker { key, store } => {
                let mut pause = Duration::from_millis(2);
                loop {
                    // The memory store answers at once; JetStream once it stored every event,
                    // or failed to within its publishTimeout (NATS unreachable).
                    match store.publish(key, Arc::clone(&batch), None).await {
                        Ok(()) => return Ok(n),
                        Err(OfferError::Full | OfferError::Unavailable(_))
                            if Instant::now() + pause < deadline =>
                        {
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_millis(200));
                        }
                        Err(OfferError::Full) => return Err(PublishError::Full),
                        Err(OfferError::Unavailable(e)) => {
                            return Err(PublishError::Unavailable(e));
                        }
                    }
                }
            }
            Publisher::Dispatcher(handle) => {
                let refs: Vec<EventRef> = batch.into_refs().collect();
                match tokio::time::timeout(
                    wait,
                    handle.enqueue_all(refs, DEFAULT_TTL, Instant::now()),
                )
                .await
                {
                    Ok(Ok(())) => Ok(n),
                    Ok(Err(EnqueueAllError::Closed)) => Err(PublishError::Closed),
                    Ok(Err(EnqueueAllError::TooLarge)) => Err(PublishError::TooLarge(
                        "the events exceed the sink's delivery queue".into(),
                    )),
                    Err(_) => Err(PublishError::Full),
                }
            }
        }
    }
}

/// Source metrics:
/// - `triggerfish_source_requests_total{source, outcome}`: webhook requests by status code;
///   MNS messages and watched files by `published`, `invalid` or `failed`; Kafka records and
///   RocketMQ messages that could not become events by `invalid_dead_lettered`,
///   `invalid_skipped`, `too_large_dead_lettered` or `too_large_skipped`; RocketMQ messages
///   whose tag the source's `tagExpression` leaves out by `filtered`;
/// - `triggerfish_source_events_total{source}`: events published;
/// - `triggerfish_source_consumer_lag_records{source, topic, partition}`: Kafka records and
///   RocketMQ messages not yet consumed and finished, per partition (Kafka) or queue
///   (RocketMQ, `partition` is `<broker>/<queue id>`);
/// - `triggerfish_source_commits_total{source, outcome}`: offset commits, `ok` or `failed`.
///
/// `source` is the source's key from the config and `partition` a partition of its topics,
/// so the cardinality is bounded.
#[derive(Clone, Default)]
pub struct SourceMetrics {
    requests: Family<SourceOutcomeLabels, Counter>,
    events: Family<SourceLabels, Counter>,
    lag: Family<PartitionLabels, prometheus_client::metrics::gauge::Gauge>,
    commits: Family<SourceOutcomeLabels, Counter>,
}

/// Label set naming a partition of a source.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PartitionLabels {
    /// `namespace/<kind>s/name`.
    pub source: String,
    /// The topic.
    pub topic: String,
    /// The partition or queue id.
    pub partition: String,
}

/// Label set naming a source.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    /// `namespace/<kind>s/name`.
    pub source: String,
}

/// Label set of a source's request outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceOutcomeLabels {
    /// `namespace/<kind>s/name`.
    pub source: String,
    /// An HTTP status code, or `published`, `invalid`, `failed`.
    pub outcome: String,
}

impl SourceMetrics {
    /// Creates and registers them.
    pub fn register(registry: &mut prometheus_client::registry::Registry) -> SourceMetrics {
        let m = SourceMetrics::default();
        registry.register(
            "source_requests",
            "Webhook requests, MNS messages and watched files handled by sources, by outcome",
            m.requests.clone(),
        );
        registry.register(
            "source_events",
            "Events published by sources",
            m.events.clone(),
        );
        registry.register(
            "source_consumer_lag_records",
            "Records of a Kafka partition not yet consumed and committed",
            m.lag.clone(),
        );
        registry.register(
            "source_commits",
            "Offset commits of Kafka sources, by outcome",
            m.commits.clone(),
        );
        m
    }

    /// Sets the lag of a partition (Kafka's number, or RocketMQ's `broker/queue`).
    pub fn set_lag(&self, source: &str, topic: &str, partition: impl fmt::Display, lag: i64) {
        self.lag
            .get_or_create(&PartitionLabels {
                source: source.to_owned(),
                topic: topic.to_owned(),
                partition: partition.to_string(),
            })
            .set(lag);
    }

    /// Forgets the lag of a partition that is not this consumer's any more.
    pub fn remove_lag(&self, source: &str, topic: &str, partition: impl fmt::Display) {
        self.lag.remove(&PartitionLabels {
            source: source.to_owned(),
            topic: topic.to_owned(),
            partition: partition.to_string(),
        });
    }

    /// Counts a commit.
    pub fn record_commit(&self, source: &str, ok: bool) {
        self.commits
            .get_or_create(&SourceOutcomeLabels {
                source: source.to_owned(),
                outcome: if ok { "ok" } else { "failed" }.to_owned(),
            })
            .inc();
    }

    /// Counts `n` records or messages of `source` with one outcome, each one event.
    pub fn record_many(&self, source: &str, outcome: &str, n: usize) {
        if n == 0 {
            return;
        }
        self.requests
            .get_or_create(&SourceOutcomeLabels {
                source: source.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc_by(n as u64);
        self.events
            .get_or_create(&SourceLabels {
                source: source.to_owned(),
            })
            .inc_by(n as u64);
    }

    /// Counts one request, message or file of `source`, and the events it published.
    pub fn record(&self, source: &str, outcome: &str, events: usize) {
        self.requests
            .get_or_create(&SourceOutcomeLabels {
                source: source.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        if events > 0 {
            self.events
                .get_or_create(&SourceLabels {
                    source: source.to_owned(),
                })
                .inc_by(events as u64);
        }
    }
}

/// What a running source needs from the router.
#[derive(Clone)]
pub struct Context {
    /// Decoding limits of the active config.
    pub limits: DecodeLimits,
    /// The largest request body a webhook reads.
    pub max_request_bytes: usize,
    /// The HTTP client (MNS, certificates).
    pub client: HttpClient,
    /// Metrics.
    pub metrics: SourceMetrics,
    /// Cancelled when the stopping router gives up on the deliveries left (its shutdown grace
    /// period is over): a stopping consumer then commits what is finished and leaves its group
    /// at once, instead of waiting for the rest. When every delivery ended, it stays as it is
    /// and the consumers' drain ends by itself.
    pub gave_up: CancellationToken,
}

/// A running source.
struct Running {
    resource: CustomResource,
    built: Built,
    target: Target,
    /// Keeps the dispatcher alive as long as the source runs.
    _publisher: Arc<Publisher>,
    dead_letter: Option<Arc<TriggerPlan>>,
    stop: CancellationToken,
    route: Option<Arc<webhook::Route>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The running sources, and the webhook listener once one is needed.
pub struct SourceSet {
    running: parking_lot::Mutex<HashMap<Arc<str>, Running>>,
    webhooks: webhook::Listener,
    store: Store,
    client: HttpClient,
    metrics: SourceMetrics,
    stop: CancellationToken,
    /// Consumer tasks (Kafka, RocketMQ), which commit their position when they stop.
    tasks: tokio_util::task::TaskTracker,
    /// See [`Context::gave_up`].
    gave_up: CancellationToken,
}

impl SourceSet {
    /// An empty set. Sources stop when `stop` is cancelled; the webhook listener's bodies share
    /// a budget of `webhook_buffered_bytes` (`limits.maxBufferedBytes`).
    pub fn new(
        store: Store,
        client: HttpClient,
        metrics: SourceMetrics,
        stop: CancellationToken,
        webhook_buffered_bytes: usize,
    ) -> SourceSet {
        SourceSet {
            running: parking_lot::Mutex::new(HashMap::new()),
            webhooks: webhook::Listener::new(stop.clone(), webhook_buffered_bytes),
            store,
            client,
            metrics,
            stop,
            tasks: tokio_util::task::TaskTracker::new(),
            gave_up: CancellationToken::new(),
        }
    }

    /// Tells stopping consumers that the router no longer waits for deliveries: each
    /// commits what is finished and leaves its group (see [`SourceSet::stopped`]).
    pub fn gave_up(&self) {
        self.gave_up.cancel();
    }

    /// Waits, up to `timeout`, for the consumer tasks to commit and stop after the router's
    /// stop token was cancelled.
    pub async fn stopped(&self, timeout: Duration) {
        self.tasks.close();
        let _ = tokio::time::timeout(timeout, self.tasks.wait()).await;
    }

    /// TLS for the webhook listener; see [`webhook::Listener::set_tls`].
    pub fn set_webhook_tls(&self, tls: Option<Arc<crate::tls::ReloadingTls>>) {
        self.webhooks.set_tls(tls);
    }

    /// The webhook listener's connection cap; see [`webhook::Listener::set_connection_limit`].
    pub fn set_webhook_connection_limit(&self, limit: crate::http_server::ConnectionLimit) {
        self.webhooks.set_connection_limit(limit);
    }

    /// The webhook listener's address, once it is bound.
    pub fn webhook_addr(&self) -> Option<SocketAddr> {
        self.webhooks.local_addr()
    }

    /// Makes `plans` the running sources: keeps unchanged ones, starts new and changed ones,
    /// stops removed ones. The webhook listener is bound at `webhooks` the first time a
    /// webhook source appears; a later change of that address needs a restart.
    pub fn apply(
        &self,
        plans: Vec<EventSourcePlan>,
        dispatchers: &Dispatchers,
        limits: IngressLimits,
        webhooks: SocketAddr,
    ) {
        let context = Context {
            limits: limits.decode,
            max_request_bytes: limits.max_request_bytes,
            client: self.client.clone(),
            metrics: self.metrics.clone(),
            gave_up: self.gave_up.clone(),
        };
        // The lock only guards this map against concurrent reloads; nothing waits under it.
        let mut running = self.running.lock();
        let mut next: HashMap<Arc<str>, Running> = HashMap::new();
        let mut routes: HashMap<String, Arc<webhook::Route>> = HashMap::new();
        let (mut kept, mut started) = (0usize, 0usize);
        for plan in plans {
            let key = Arc::clone(&plan.key);
            let unchanged = running.get(&plan.key).is_some_and(|r| {
                r.resource == plan.resource
                    && r.built == plan.built
                    && r.target == plan.target
                    && r.dead_letter == plan.dead_letter
            });
            let entry = if unchanged {
                kept += 1;
                running.remove(&plan.key)
            } else {
                started += 1;
                self.start(Arc::clone(&key), plan, dispatchers, &context)
            };
            let Some(entry) = entry else { continue };
            if let (Some(route), Some(path)) = (&entry.route, entry.built.path()) {
                routes.insert(path.to_owned(), Arc::clone(route));
            }
            next.insert(key, entry);
        }
        let stopped = running.len();
        // Dropping what is left cancels its tasks.
        *running = next;
        drop(running);
        if !routes.is_empty() {
            self.webhooks.ensure_bound(webhooks);
        }
        self.webhooks.set_routes(routes, context.max_request_bytes);
        if kept + started + stopped > 0 {
            tracing::info!(started, kept, stopped, "event sources applied");
        }
    }

    fn start(
        &self,
        key: Arc<str>,
        plan: EventSourcePlan,
        dispatchers: &Dispatchers,
        context: &Context,
    ) -> Option<Running> {
        let publisher = Arc::new(match &plan.target {
            Target::Broker(broker) => Publisher::Broker {
                key: Arc::clone(broker),
                store: self.store.clone(),
            },
            Target::Dispatcher(delivery) => Publisher::Dispatcher(Arc::new(
                dispatchers.start(Arc::clone(delivery), context.limits),
            )),
        });
        let stop = self.stop.child_token();
        let dead_letter = plan
            .dead_letter
            .as_ref()
            .map(|p| Arc::new(dispatchers.start(Arc::clone(p), context.limits)));
        let route = match &plan.built {
            Built::GitHub(c) => Some(webhook::Handler::GitHub(github::GitHubHook::new(c.clone()))),
            Built::S3(c) => Some(webhook::Handler::S3(c.clone())),
            Built::Registry(c) => Some(webhook::Handler::Registry(c.clone())),
            Built::OssPush(c) => Some(webhook::Handler::OssPush(Box::new(oss::PushHook::new(
                c.clone(),
                context.client.clone(),
            )))),
            Built::OssQueue(c) => {
                tokio::spawn(oss::poll(
                    Arc::clone(&key),
                    c.clone(),
                    Arc::clone(&publisher),
                    context.clone(),
                    stop.clone(),
                ));
                None
            }
            Built::Kafka(c) => {
                if let Err(e) = kafka::spawn(
                    Arc::clone(&key),
                    (**c).clone(),
                    Arc::clone(&publisher),
                    dead_letter,
                    context.clone(),
                    stop.clone(),
                    &self.tasks,
                ) {
                    tracing::error!(source = %key, error = %e, "the Kafka consumer cannot start; the source is not running");
                    return None;
                }
                None
            }
            Built::RocketMq(c) => {
                if let Err(e) = rocketmq::spawn(
                    Arc::clone(&key),
                    (**c).clone(),
                    Arc::clone(&publisher),
                    dead_letter,
                    context.clone(),
                    stop.clone(),
                    &self.tasks,
                ) {
                    tracing::error!(source = %key, error = %e, "the RocketMQ consumer cannot start; the source is not running");
                    return None;
                }
                None
            }
            Built::Watch(c) => {
                if let Err(e) = watch::spawn(
                    Arc::clone(&key),
                    c.clone(),
                    Arc::clone(&publisher),
                    context.clone(),
                    stop.clone(),
                ) {
                    tracing::error!(source = %key, error = %e, "the directory cannot be watched; the source is not running");
                    return None;
                }
                None
            }
        }
        .map(|handler| {
            Arc::new(webhook::Route {
                key: Arc::clone(&key),
                handler,
                publisher: Arc::clone(&publisher),
                limits: context.limits,
                metrics: context.metrics.clone(),
            })
        });
        tracing::info!(source = %key, path = plan.built.path().unwrap_or(""), "event source started");
        Some(Running {
            resource: plan.resource,
            built: plan.built,
            target: plan.target,
            _publisher: publisher,
            dead_letter: plan.dead_letter,
            stop,
            route,
        })
    }
}

/// How long a webhook request waits for room in full queues before it is answered 429.
pub const WEBHOOK_PUBLISH_WAIT: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use triggerfish_core::config::Config;

    use crate::plan::Plan;

    fn errors(yaml: &str) -> String {
        let config = Config::load(yaml, "c.yaml").unwrap();
        match Plan::build(config) {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        }
    }

    const BROKER: &str =
        "apiVersion: eventing.knative.dev/v1\nkind: Broker\nmetadata: {name: default}\n---\n";

    #[test]
    fn config_errors_name_the_resource_and_field() {
        let missing = errors(&format!(
            "{BROKER}apiVersion: triggerfish.dev/v1alpha1\nkind: GitHubSource\nmetadata: {{name: gh}}\nspec:\n  secretToken: {{env: TRIGGERFISH_TEST_SURELY_UNSET}}\n  eventTypes: [Push]\n  sink: {{uri: \"display:\"}}\n"
        ));
        assert!(
            missing.contains("GitHubSource \"gh\" in namespace \"default\": spec.secretToken: environment variable TRIGGERFISH_TEST_SURELY_UNSET is not set"),
            "{missing}"
        );
        assert!(
            missing.contains("spec.eventTypes.0: \"Push\" is not a GitHub event name"),
            "{missing}"
        );

        let both = errors(&format!(
            "{BROKER}apiVersion: triggerfish.dev/v1alpha1\nkind: OssSource\nmetadata: {{name: o}}\nspec:\n  sink: {{uri: \"display:\"}}\n"
        ));
        assert!(
            both.contains("spec: set exactly one of queue and push"),
            "{both}"
        );

        let same_path = errors(&format!(
            "{BROKER}apiVersion: triggerfish.dev/v1alpha1\nkind: S3Source\nmetadata: {{name: a}}\nspec:\n  path: /hook\n  sink: {{uri: \"display:\"}}\n---\napiVersion: triggerfish.dev/v1alpha1\nkind: RegistrySource\nmetadata: {{name: b}}\nspec:\n  path: /hook\n  sink: {{uri: \"display:\"}}\n"
        ));
        assert!(same_path.contains("RegistrySource \"b\" in namespace \"default\": spec.path: /hook is already the path of default/s3sources/a"), "{same_path}");

        let secret_both = errors(&format!(
            "{BROKER}apiVersion: triggerfish.dev/v1alpha1\nkind: S3Source\nmetadata: {{name: a}}\nspec:\n  token: {{env: X, file: /y}}\n  path: hook\n  sink: {{uri: \"display:\"}}\n"
        ));
        assert!(
            secret_both.contains("spec.token: set exactly one of env and file"),
            "{secret_both}"
        );
        assert!(
            secret_both.contains("spec.path: a path starts with /"),
            "{secret_both}"
        );

        assert_eq!(
            errors(&format!(
                "{BROKER}apiVersion: triggerfish.dev/v1alpha1\nkind: BucketWatch\nmetadata: {{name: m}}\nspec:\n  directory: /tmp/m\n  sink: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}}\n"
            )),
            ""
        );
    }

    #[test]
    fn kafka_config_errors_name_the_field() {
        let kafka = |extra: &str| {
            errors(&format!(
                "{BROKER}apiVersion: sources.knative.dev/v1beta1\nkind: KafkaSource\nmetadata: {{name: k}}\nspec:\n  bootstrapServers: [\"127.0.0.1:9\"]\n  topics: [t]\n  sink: {{uri: \"display:\"}}\n{extra}"
            ))
        };
        assert_eq!(kafka(""), "");
        let reserved = kafka("  clientConfig: {group.id: other, enable.auto.commit: \"true\"}\n");
        assert!(
            reserved.contains("KafkaSource \"k\" in namespace \"default\": spec.clientConfig.group.id: Triggerfish sets this property itself"),
            "{reserved}"
        );
        assert!(
            reserved.contains("spec.clientConfig.enable.auto.commit"),
            "{reserved}"
        );
        let unknown = kafka("  clientConfig: {no.such.property: x}\n");
        assert!(
            unknown.contains("spec.clientConfig: librdkafka refuses the client's settings"),
            "{unknown}"
        );
        let overrides = kafka("  ceOverrides: {extensions: {Bad-Name: x, id: y, fine: ok}}\n");
        assert!(
            overrides.contains(
                "spec.ceOverrides.extensions.Bad-Name: \"Bad-Name\" is not a valid extension name"
            ),
            "{overrides}"
        );
        assert!(
            overrides.contains("spec.ceOverrides.extensions.id:"),
            "{overrides}"
        );
        assert!(!overrides.contains("fine"), "{overrides}");
        let dead = kafka("  invalidRecords: deadLetter\n");
        assert!(
            dead.contains("spec.invalidRecords: deadLetter needs delivery.deadLetterSink"),
            "{dead}"
        );
        let sasl = kafka(
            "  net: {sasl: {type: GSSAPI, user: {env: TRIGGERFISH_TEST_SURELY_UNSET}, password: {file: /nonexistent/p}}}\n",
        );
        assert!(
            sasl.contains("spec.net.sasl.type: \"GSSAPI\" is not supported"),
            "{sasl}"
        );
        assert!(
            sasl.contains(
                "spec.net.sasl.user: environment variable TRIGGERFISH_TEST_SURELY_UNSET is not set"
            ),
            "{sasl}"
        );
        let empty = errors(&format!(
            "{BROKER}apiVersion: sources.knative.dev/v1beta1\nkind: KafkaSource\nmetadata: {{name: k}}\nspec:\n  bootstrapServers: []\n  topics: []\n  sink: {{uri: \"display:\"}}\n"
        ));
        assert!(
            empty.contains("spec.bootstrapServers: list at least one broker"),
            "{empty}"
        );
        assert!(
            empty.contains("spec.topics: list at least one topic"),
            "{empty}"
        );

        let sink = errors(&format!(
            "{BROKER}apiVersion: eventing.knative.dev/v1\nkind: Trigger\nmetadata: {{name: t}}\nspec:\n  broker: default\n  subscriber: {{ref: {{apiVersion: eventing.knative.dev/v1alpha1, kind: KafkaSink, name: out}}}}\n---\napiVersion: eventing.knative.dev/v1alpha1\nkind: KafkaSink\nmetadata: {{name: out}}\nspec:\n  topic: \"\"\n  bootstrapServers: [\"127.0.0.1:9\"]\n"
        ));
        assert!(
            sink.contains("KafkaSink \"out\" in namespace \"default\": spec.topic: name the topic"),
            "{sink}"
        );
    }

    #[test]
    fn rocketmq_tag_expressions_are_checked() {
        let rocketmq = |tags: &str| {
            errors(&format!(
                "{BROKER}apiVersion: triggerfish.dev/v1alpha1\nkind: RocketMQSource\nmetadata: {{name: r}}\nspec:\n  nameServer: \"127.0.0.1:9876\"\n  topic: t\n  tagExpression: \"{tags}\"\n  sink: {{uri: \"display:\"}}\n"
            ))
        };
        for fine in ["*", "", "created", "created || paid", "a||b||c"] {
            assert_eq!(rocketmq(fine), "", "{fine:?}");
        }
        for bad in [" || ", "created || *"] {
            let refused = rocketmq(bad);
            assert!(
                refused.contains(&format!("RocketMQSource \"r\" in namespace \"default\": spec.tagExpression: {bad:?} is not a tag expression")),
                "{refused}"
            );
        }
    }
}
