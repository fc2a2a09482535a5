//! `KafkaSource`: consumes Kafka topics as a consumer group and publishes each record as a
//! CloudEvent, committing offsets only once the events are safe (at-least-once).
//!
//! One task per source drives an rdkafka `StreamConsumer`. Each turn it takes the records
//! that are ready (up to [`MAX_BATCH`]), maps them with `triggerfish_core::sources::kafka`,
//! and publishes them to the source's target:
//! - a **Broker**: all of a turn's events into the store at once, each with a completion;
//!   with the memory store the completion finishes when every trigger is done with the event
//!   (delivered or dead-lettered), because the memory store loses what it holds in a crash;
//!   with JetStream it finishes once JetStream has stored the event;
//! - **another sink**: into the source's dispatcher, each completion finishing when the
//!   delivery (with its retries and dead-lettering) has ended.
//!
//! Full queues make the task wait (it stops reading, librdkafka stops fetching once its
//! bounded queue, `queued.max.messages.kbytes`, is full): that is the backpressure.
//!
//! **Offsets.** An [`OffsetTracker`] learns of each record when it is handed on and when its
//! completion finishes; a commit every [`COMMIT_INTERVAL`] sends each partition's position
//! (the lowest unfinished offset). On a revocation (rebalance) the revoked partitions' positions
//! are committed synchronously in the rebalance callback and forgotten, so records still in
//! flight from them can never commit for the partition's next owner; on an assignment
//! tracking starts afresh. At shutdown the task stops reading and keeps committing while
//! deliveries drain, for up to [`DRAIN_WAIT`] or until the router gives up on them (its
//! shutdown grace period is over), then commits once more and leaves its group. A crash at
//! any point loses nothing: what was not committed is read again, by this replica or another
//! (duplicates, never loss).
//!
//! **Bad records** (a record that claims to be a CloudEvent but is not a valid one, or whose
//! event is over `maxEventBytes`) are logged with their topic, partition and offset, counted in
//! `triggerfish_source_requests_total{outcome="invalid_*"|"too_large_*"}`, and either sent to
//! the dead-letter sink (their offset commits once that delivery ended) or skipped.
//!
//! **Lag.** librdkafka's statistics (every `statistics.interval.ms`, 5 s by default) set
//! `triggerfish_source_consumer_lag_records{source, topic, partition}`: the high watermark
//! minus the committed offset.
//!
//! **Partitions added** to a topic are picked up at the next metadata refresh
//! (`topic.metadata.refresh.interval.ms`, 30 s by default here), which rebalances the group.
//!
//! What this module does not do: map records (core), or deliver (the dispatchers).

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::FutureExt as _;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio_util::sync::CancellationToken;
use triggerfish_core::config::{
    CeOverrides, CustomResource, InitialOffset, InvalidRecords, KafkaNetSpec, KafkaSourceSpec,
};
use triggerfish_core::sources::kafka::{KafkaMapper, Record};
use triggerfish_core::sources::offsets::OffsetTracker;

use crate::dispatch::TriggerHandle;
use crate::sources::tracked::{self, TrackedPublisher, one};
use crate::sources::{BuildErrors, Context, Publisher, Secret, SourceMetrics};

/// Records handled per turn, at most.
pub const MAX_BATCH: usize = 512;
/// How often positions are committed.
pub const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// How long a stopping source keeps committing while its events drain.
pub const DRAIN_WAIT: Duration = Duration::from_secs(30);

/// Properties Triggerfish sets itself, which `clientConfig` may not.
const RESERVED: &[&str] = &[
    "bootstrap.servers",
    "metadata.broker.list",
    "group.id",
    "enable.auto.commit",
    "enable.auto.offset.store",
    "auto.offset.reset",
    "enable.partition.eof",
];

/// A librdkafka property value: plain, or a secret whose `Debug` hides it.
#[derive(Clone, PartialEq, Eq)]
pub enum Property {
    /// Shown in logs.
    Plain(String),
    /// Never shown.
    Secret(Secret),
}

/// librdkafka properties of a client, secrets read.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ClientProperties(pub Vec<(String, Property)>);

impl fmt::Debug for ClientProperties {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut map = f.debug_map();
        for (k, v) in &self.0 {
            match v {
                Property::Plain(p) => map.entry(k, p),
                Property::Secret(_) => map.entry(k, &"<redacted>"),
            };
        }
        map.finish()
    }
}

impl ClientProperties {
    /// Sets a plain property, replacing an earlier value.
    pub fn set(&mut self, key: &str, value: impl Into<String>) {
        self.0.retain(|(k, _)| k != key);
        self.0.push((key.to_owned(), Property::Plain(value.into())));
    }

    /// The rdkafka config.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        for (k, v) in &self.0 {
            match v {
                Property::Plain(p) => config.set(k, p),
                Property::Secret(s) => config.set(k, String::from_utf8_lossy(s.expose())),
            };
        }
        config.set_log_level(RDKafkaLogLevel::Warning);
        config
    }

    /// Adds `net` (SASL, TLS), reading secrets; errors go to `check` at `net...`.
    pub(crate) fn add_net(&mut self, net: Option<&KafkaNetSpec>, check: &mut BuildErrors<'_>) {
        let sasl = net
            .and_then(|n| n.sasl.as_ref())
            .filter(|s| s.enable != Some(false));
        let tls = net
            .and_then(|n| n.tls.as_ref())
            .filter(|t| t.enable != Some(false));
        let protocol = match (sasl.is_some(), tls.is_some()) {
            (false, false) => "plaintext",
            (false, true) => "ssl",
            (true, false) => "sasl_plaintext",
            (true, true) => "sasl_ssl",
        };
        self.set("security.protocol", protocol);
        if let Some(sasl) = sasl {
            let mechanism = sasl.mechanism.as_deref().unwrap_or("PLAIN");
            if !matches!(mechanism, "PLAIN" | "SCRAM-SHA-256" | "SCRAM-SHA-512") {
                check.at(
                    "net.sasl.type",
                    format!(
                        "{mechanism:?} is not supported; use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
                    ),
                );
            }
            self.set("sasl.mechanisms", mechanism);
            if let Some(user) = check.secret("net.sasl.user", &sasl.user) {
                self.0
                    .push(("sasl.username".into(), Property::Secret(user)));
            }
            if let Some(password) = check.secret("net.sasl.password", &sasl.password) {
                self.0
                    .push(("sasl.password".into(), Property::Secret(password)));
            }
        }
        if let Some(tls) = tls {
            for (field, property, secret) in [
                ("net.tls.caCert", "ssl.ca.pem", &tls.ca_cert),
                ("net.tls.cert", "ssl.certificate.pem", &tls.cert),
                ("net.tls.key", "ssl.key.pem", &tls.key),
            ] {
                if let Some(secret) = secret
                    && let Some(value) = check.secret(field, secret)
                {
                    self.0.push((property.into(), Property::Secret(value)));
                }
            }
            if tls.cert.is_some() != tls.key.is_some() {
                check.at("net.tls", "set both cert and key, or neither");
            }
        }
    }

    /// Adds `clientConfig`, refusing reserved properties.
    pub(crate) fn add_client_config(
        &mut self,
        extra: &std::collections::BTreeMap<String, String>,
        reserved: &[&str],
        check: &mut BuildErrors<'_>,
    ) {
        for (key, value) in extra {
            if reserved.contains(&key.as_str()) {
                check.at(
                    &format!("clientConfig.{key}"),
                    "Triggerfish sets this property itself; use the spec's own field",
                );
                continue;
            }
            self.set(key, value.clone());
        }
    }

    /// Lets librdkafka check every property, as it would when the client starts.
    pub(crate) fn validate(&self, check: &mut BuildErrors<'_>) {
        if let Err(e) = self.client_config().create_native_config() {
            check.at(
                "clientConfig",
                format!("librdkafka refuses the client's settings: {e}"),
            );
        }
    }
}

/// `KafkaSource`, built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSourceConfig {
    /// Consumer properties.
    pub properties: ClientProperties,
    /// Topics.
    pub topics: Vec<String>,
    /// The record mapping.
    pub mapper: KafkaMapper,
    /// What happens to bad records.
    pub invalid: InvalidRecords,
}

impl KafkaSourceConfig {
    /// Builds the source, reporting problems to `check`.
    pub(crate) fn build(
        spec: &KafkaSourceSpec,
        resource: &CustomResource,
        check: &mut BuildErrors<'_>,
    ) -> Option<KafkaSourceConfig> {
        let (ns, name) = (&resource.meta.namespace, &resource.meta.name);
        if spec.bootstrap_servers.is_empty()
            || spec.bootstrap_servers.iter().any(|s| s.trim().is_empty())
        {
            check.at("bootstrapServers", "list at least one broker, host:port");
        }
        if spec.topics.is_empty() || spec.topics.iter().any(|t| t.trim().is_empty()) {
            check.at("topics", "list at least one topic");
        }
        let invalid = invalid_records(spec.invalid_records, resource, check);
        let mut properties = ClientProperties::default();
        properties.set("bootstrap.servers", spec.bootstrap_servers.join(","));
        properties.set(
            "group.id",
            spec.consumer_group
                .clone()
                .unwrap_or_else(|| format!("knative-kafka-source-{ns}-{name}")),
        );
        properties.set("client.id", format!("triggerfish-{ns}-{name}"));
        properties.set("enable.auto.commit", "false");
        properties.set("enable.auto.offset.store", "false");
        properties.set("enable.partition.eof", "false");
        properties.set(
            "auto.offset.reset",
            match spec.initial_offset.unwrap_or(InitialOffset::Latest) {
                InitialOffset::Earliest => "earliest",
                InitialOffset::Latest => "latest",
            },
        );
        properties.set("statistics.interval.ms", "5000");
        properties.set("topic.metadata.refresh.interval.ms", "30000");
        properties.set("queued.max.messages.kbytes", "16384");
        properties.add_net(spec.net.as_ref(), check);
        properties.add_client_config(&spec.client_config, RESERVED, check);
        properties.validate(check);
        let overrides = ce_overrides(spec.ce_overrides.as_ref(), check);
        Some(KafkaSourceConfig {
            properties,
            topics: spec.topics.clone(),
            mapper: KafkaMapper::new(ns, name, overrides),
            invalid,
        })
    }
}

/// Checks `ceOverrides` and returns its extensions as `(name, value)` pairs, in name order.
pub(crate) fn ce_overrides(
    spec: Option<&CeOverrides>,
    check: &mut BuildErrors<'_>,
) -> Vec<(String, String)> {
    let Some(spec) = spec else { return Vec::new() };
    for (extension, problem) in spec.problems() {
        check.at(&format!("ceOverrides.extensions.{extension}"), problem);
    }
    spec.extensions
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Resolves `invalidRecords`: dead-lettering needs a dead-letter sink.
pub(crate) fn invalid_records(
    spec: Option<InvalidRecords>,
    resource: &CustomResource,
    check: &mut BuildErrors<'_>,
) -> InvalidRecords {
    let has_dls = resource
        .delivery
        .as_ref()
        .is_some_and(|d| d.dead_letter_sink.is_some());
    match spec {
        Some(InvalidRecords::DeadLetter) if !has_dls => {
            check.at(
                "invalidRecords",
                "deadLetter needs delivery.deadLetterSink; set one, or use skip",
            );
            InvalidRecords::Skip
        }
        Some(action) => action,
        None if has_dls => InvalidRecords::DeadLetter,
        None => InvalidRecords::Skip,
    }
}

/// A topic and partition.
type Tp = (Arc<str>, i32);

/// The tracker shared by the consumer task and the rebalance callbacks. The lock is held only
/// for map updates, never across I/O or `.await`.
type Tracker = tracked::Tracker<Tp>;

/// The consumer's context: rebalances, statistics, logs.
struct SourceContext {
    key: Arc<str>,
    tracker: Tracker,
    metrics: SourceMetrics,
}

impl ClientContext for SourceContext {
    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition < 0 {
                    continue;
                }
                let assigned = self
                    .tracker
                    .lock()
                    .is_assigned(&(Arc::from(topic.as_str()), *partition));
                if assigned && p.consumer_lag >= 0 {
                    self.metrics
                        .set_lag(&self.key, topic, *partition, p.consumer_lag);
                }
            }
        }
    }

    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(source = %self.key, facility = fac, "{log_message}");
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(source = %self.key, facility = fac, "{log_message}");
            }
            _ => tracing::debug!(source = %self.key, facility = fac, "{log_message}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(source = %self.key, error = %error, reason, "Kafka client error");
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(list) = rebalance else {
            return;
        };
        let mut commit = TopicPartitionList::new();
        {
            let mut tracker = self.tracker.lock();
            for element in list.elements() {
                let tp: Tp = (Arc::from(element.topic()), element.partition());
                if let Some(position) = tracker.revoke(&tp) {
                    let _ = commit.add_partition_offset(
                        element.topic(),
                        element.partition(),
                        Offset::Offset(position),
                    );
                }
                self.metrics
                    .remove_lag(&self.key, element.topic(), element.partition());
            }
        }
        tracing::info!(source = %self.key, partitions = %describe(list), "partitions revoked");
        if commit.count() > 0 {
            // The callback runs inside the consumer's poll; a synchronous commit here is the
            // one moment the source blocks its worker, and rebalances are rare.
            let result = consumer.commit(&commit, CommitMode::Sync);
            self.metrics.record_commit(&self.key, result.is_ok());
            if let Err(e) = result {
                tracing::warn!(source = %self.key, error = %e, "committing revoked partitions failed; their next owner reads some records again");
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(list) => {
                let mut tracker = self.tracker.lock();
                for element in list.elements() {
                    tracker.assign((Arc::from(element.topic()), element.partition()));
                }
                drop(tracker);
                tracing::info!(source = %self.key, partitions = %describe(list), "partitions assigned");
            }
            Rebalance::Revoke(_) => {}
            Rebalance::Error(e) => {
                tracing::warn!(source = %self.key, error = %e, "rebalance failed");
            }
        }
    }
}

fn describe(list: &TopicPartitionList) -> String {
    list.elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Starts the consumer task. Errors are the client's refusal to start.
pub fn spawn(
    key: Arc<str>,
    config: KafkaSourceConfig,
    publisher: Arc<Publisher>,
    dead_letter: Option<Arc<TriggerHandle>>,
    context: Context,
    stop: CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) -> Result<(), KafkaError> {
    let tracker: Tracker = Arc::new(parking_lot::Mutex::new(OffsetTracker::new()));
    let consumer: StreamConsumer<SourceContext> = config
        .properties
        .client_config()
        .create_with_context(SourceContext {
            key: Arc::clone(&key),
            tracker: Arc::clone(&tracker),
            metrics: context.metrics.clone(),
        })?;
    let topics: Vec<&str> = config.topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topics)?;
    let consumer = Arc::new(consumer);
    tasks.spawn(async move {
        let task = Task {
            key: Arc::clone(&key),
            config,
            consumer,
            out: TrackedPublisher {
                key,
                publisher,
                dead_letter,
                tracker,
                metrics: context.metrics.clone(),
            },
            context,
            topics: HashMap::new(),
        };
        task.run(stop).await;
    });
    Ok(())
}

/// What one consumer task holds.
struct Task {
    key: Arc<str>,
    config: KafkaSourceConfig,
    consumer: Arc<StreamConsumer<SourceContext>>,
    /// Where its events go; its tracker is this task's.
    out: TrackedPublisher<Tp>,
    context: Context,
    /// Interned topic names.
    topics: HashMap<String, Arc<str>>,
}

/// One record's event, ready to publish.
type Ready = tracked::Ready<Tp>;

impl Task {
    async fn run(mut self, stop: CancellationToken) {
        tracing::info!(source = %self.key, topics = ?self.config.topics, "Kafka consumer started");
        // The consumer outlives each turn's borrowed messages, which `take` reads while it
        // updates the task.
        let consumer = Arc::clone(&self.consumer);
        let mut commit_tick = tokio::time::interval(COMMIT_INTERVAL);
        commit_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                () = stop.cancelled() => break,
                _ = commit_tick.tick() => {
                    self.commit(CommitMode::Async);
                    continue;
                }
                m = consumer.recv() => m,
            };
            let mut events = Vec::new();
            let mut dead = Vec::new();
            let mut next = Some(first);
            while let Some(message) = next {
                match message {
                    Ok(m) => self.take(&m, &mut events, &mut dead),
                    Err(e) => {
                        tracing::warn!(source = %self.key, error = %e, "consuming failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        break;
                    }
                }
                if events.len() + dead.len() >= MAX_BATCH {
                    break;
                }
                next = consumer.recv().now_or_never();
            }
            let ok =
                self.out.publish(events, &stop).await && self.out.dead_letter(dead, &stop).await;
            if !ok {
                break;
            }
        }
        // Only `drain` may drop the last handle: closing the consumer blocks.
        drop(consumer);
        self.drain().await;
    }

    /// Maps one message into `events`, or `dead` for bad records to dead-letter.
    fn take(
        &mut self,
        m: &rdkafka::message::BorrowedMessage<'_>,
        events: &mut Vec<Ready>,
        dead: &mut Vec<Ready>,
    ) {
        let topic = match self.topics.get(m.topic()) {
            Some(t) => Arc::clone(t),
            None => {
                let t: Arc<str> = Arc::from(m.topic());
                self.topics.insert(m.topic().to_owned(), Arc::clone(&t));
                t
            }
        };
        let Some(ticket) = self
            .out
            .tracker
            .lock()
            .begin((topic, m.partition()), m.offset())
        else {
            tracing::debug!(source = %self.key, topic = m.topic(), partition = m.partition(), offset = m.offset(),
                "record of a revoked partition; its new owner handles it");
            return;
        };
        let headers: Vec<(&str, Option<&[u8]>)> = m
            .headers()
            .map(|h| h.iter().map(|h| (h.key, h.value)).collect())
            .unwrap_or_default();
        let record = Record {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp_ms: m.timestamp().to_millis(),
            key: m.key(),
            headers: &headers,
        };
        let value = Bytes::copy_from_slice(m.payload().unwrap_or_default());
        let limits = self.context.limits;
        match self.config.mapper.map(&record, value.clone(), &limits) {
            Ok(batch) => events.push(Ready {
                ticket,
                event: one(batch),
            }),
            Err(invalid) => self.out.refuse(
                ticket,
                &*invalid,
                self.config.invalid,
                "record",
                || {
                    self.config
                        .mapper
                        .dead_letter_event(&record, value, &invalid, &limits)
                },
                dead,
            ),
        }
    }

    /// Commits every partition's position that moved.
    fn commit(&self, mode: CommitMode) {
        let positions = self.out.tracker.lock().committable();
        if positions.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for ((topic, partition), position) in positions {
            let _ = list.add_partition_offset(&topic, partition, Offset::Offset(position));
        }
        let result = self.consumer.commit(&list, mode);
        self.context
            .metrics
            .record_commit(&self.key, result.is_ok());
        match result {
            Ok(()) => {
                tracing::trace!(source = %self.key, offsets = %describe_offsets(&list), "offsets committed")
            }
            Err(e) => {
                tracing::warn!(source = %self.key, error = %e, "committing offsets failed; the next commit carries them")
            }
        }
    }

    /// Stops reading; commits while the events handed on drain, then leaves the group.
    async fn drain(self) {
        let started = Instant::now();
        loop {
            self.commit(CommitMode::Async);
            if self.out.tracker.lock().unfinished() == 0
                || started.elapsed() > DRAIN_WAIT
                || self.context.gave_up.is_cancelled()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = self.out.tracker.lock().unfinished();
        let key = Arc::clone(&self.key);
        let consumer = self.consumer;
        let tracker = self.out.tracker;
        // A synchronous final commit, and closing the consumer (which leaves the group), both
        // wait for the broker: off the runtime's workers.
        let _ = tokio::task::spawn_blocking(move || {
            let positions = tracker.lock().committable();
            if !positions.is_empty() {
                let mut list = TopicPartitionList::new();
                for ((topic, partition), position) in positions {
                    let _ = list.add_partition_offset(&topic, partition, Offset::Offset(position));
                }
                if let Err(e) = consumer.commit(&list, CommitMode::Sync) {
                    tracing::warn!(source = %key, error = %e, "the final commit failed; some records are read again");
                }
            }
            drop(consumer);
        })
        .await;
        tracing::info!(source = %self.key, unfinished = left, "Kafka consumer stopped; unfinished records are read again next time");
    }
}

fn describe_offsets(list: &TopicPartitionList) -> String {
    list.elements()
        .iter()
        .map(|e| format!("{}/{}@{:?}", e.topic(), e.partition(), e.offset()))
        .collect::<Vec<_>>()
        .join(",")
}
