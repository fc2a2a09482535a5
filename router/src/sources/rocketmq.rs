//! `RocketMQSource`: consumes a RocketMQ topic as a consumer group and publishes each message
//! as a CloudEvent, moving the group's offsets only once the events are safe (at-least-once).
//!
//! One task per source drives a rocketmq-rust **lite pull consumer** with auto-commit off. The
//! push consumer was not used: it moves a queue's offset as soon as its listener returns, and
//! its listener is synchronous, so "only after acceptance" would mean parking one of its
//! threads per batch until the router is done. The lite pull consumer hands out messages and
//! leaves the offsets to us, like the Kafka source, so this module mirrors
//! [`crate::sources::kafka`]:
//! - each turn it polls the messages that are ready (the client pulls up to 32 per queue at a
//!   time, [`PULL_BATCH`]), maps them with `triggerfish_core::sources::rocketmq` (CloudEvents
//!   pass through; other messages get EventBridge's shape) and publishes them to the source's
//!   target: a **Broker** (all of a turn's events at once, each with a completion) or
//!   **another sink** (the source's dispatcher), exactly as the Kafka source does;
//! - an [`OffsetTracker`] keyed by message queue learns of each message when it is handed on
//!   and when its completion finishes; every [`COMMIT_INTERVAL`] each queue's position (the
//!   lowest unfinished offset) is committed and persisted to the broker;
//! - a rebalance that takes a queue away forgets it in the tracker (the client drops the
//!   queue, so a late commit for it would be ignored anyway); a queue is tracked afresh when its
//!   first message arrives (the client starts pulling a new queue before it tells its
//!   listener, so the listener cannot be what starts tracking). Known gap: a message polled
//!   just before its queue was revoked, and handled just after, is tracked as a new assignment;
//!   if the queue comes back to this consumer later, its position can be committed past
//!   messages not yet handed on. It takes a rebalance away and back, two replicas, and a crash
//!   in between to lose anything; single-replica sources are not affected;
//! - at shutdown the task stops polling and keeps committing while deliveries drain, for up
//!   to [`DRAIN_WAIT`] or until the router gives up on them (its shutdown grace period is
//!   over), then shuts the consumer down.
//!
//! A crash at any point loses nothing: what was not committed is read again (duplicates,
//! never loss). The poll is never cancelled halfway (it runs to its short timeout), because a
//! message the client handed out and we dropped would be skipped until the next restart.
//!
//! Full queues make the task wait before it polls again; the client stops pulling a queue once
//! 1,000 of its messages (or 100 MiB) wait unpolled: that is the backpressure.
//!
//! **Tags**: one tag is filtered by the broker; an expression of several (`a || b`) by the
//! consumer ([`TagFilter`]), which finishes other tags' messages at once and counts them as
//! `outcome="filtered"`.
//!
//! **Lag.** Every [`LAG_INTERVAL`], from a task of its own beside the poll loop, each tracked
//! queue's lag, the broker's max offset minus the queue's position (what is not yet
//! finished), is set in
//! `triggerfish_source_consumer_lag_records{source, topic, partition="<broker>/<queue id>"}`;
//! a revoked queue's series is removed. A queue is known once its first message arrives.
//!
//! **Bad messages** (a message that claims to be a CloudEvent but is not a valid one, or whose
//! event is over `maxEventBytes`) are logged with their topic, queue, offset and message id,
//! counted in `triggerfish_source_requests_total{outcome="invalid_*"|"too_large_*"}`, and
//! either sent to the dead-letter sink (their offset commits once that delivery ended) or
//! skipped.
//!
//! The client owns a tokio runtime of its own ([`client_runtime`]), shared by every
//! RocketMQ source and sink of the process and never dropped.
//!
//! What this module does not do: map messages (core), deliver (the dispatchers), consume
//! several topics per source, or broadcast mode.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rocketmq_client_rust::{
    AclClientRPCHook, ClientError, ClientRuntime, ClientRuntimeConfig, DefaultLitePullConsumer,
    MessageQueueListener, SessionCredentials,
};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_ext::MessageExt;
use rocketmq_model::message::MessageQueue;
use rocketmq_runtime::{RuntimeConfig, RuntimeOwner};
use tokio_util::sync::CancellationToken;
use triggerfish_core::config::{
    CustomResource, InitialOffset, InvalidRecords, RocketMQSourceSpec, SecretRef,
};
use triggerfish_core::sources::offsets::OffsetTracker;
use triggerfish_core::sources::rocketmq::{Message, RocketMqMapper, TagFilter};

use crate::dispatch::TriggerHandle;
use crate::sources::kafka::{ce_overrides, invalid_records};
use crate::sources::tracked::{self, TrackedPublisher, one};
use crate::sources::{BuildErrors, Context, Publisher, Secret};

/// Messages the client pulls from a queue per request.
pub const PULL_BATCH: i32 = 32;
/// Messages handed on per turn, at most.
pub const MAX_BATCH: usize = 512;
/// How long one poll waits for messages.
pub const POLL_TIMEOUT: Duration = Duration::from_millis(200);
/// How often positions are committed.
pub const COMMIT_INTERVAL: Duration = Duration::from_secs(1);
/// How often each queue's lag is measured (one max-offset request per queue); Kafka's
/// statistics interval.
pub const LAG_INTERVAL: Duration = Duration::from_secs(5);
/// How long the max-offset requests of one measurement may take together.
const LAG_QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a stopping source keeps committing while its events drain.
pub const DRAIN_WAIT: Duration = Duration::from_secs(30);

/// Why a RocketMQ client cannot start.
#[derive(Debug, thiserror::Error)]
pub enum RocketMqError {
    /// The client's own runtime could not be built (threads, memory detection).
    #[error(
        "the RocketMQ client runtime cannot start: {0}; check the process's thread and memory limits"
    )]
    Runtime(String),
    /// The client refused its settings or could not start.
    #[error(
        "the RocketMQ {what} cannot start: {source}; check nameServer, the group name and the access keys"
    )]
    Start {
        /// `consumer` or `producer`.
        what: &'static str,
        /// The client's error.
        source: ClientError,
    },
}

/// The tokio runtime and client runtime that every RocketMQ client of this process shares.
/// Built on first use and kept for the life of the process: dropping a runtime from async code
/// panics, and the clients need it until the end.
pub fn client_runtime() -> Result<Arc<ClientRuntime>, RocketMqError> {
    static CLIENT: OnceLock<Result<(RuntimeOwner, Arc<ClientRuntime>), String>> = OnceLock::new();
    let built = CLIENT.get_or_init(|| {
        let config = RuntimeConfig::for_parallelism("rocketmq-client", 2);
        let owner = RuntimeOwner::plan(config)
            .map_err(|e| e.to_string())?
            .build()
            .map_err(|e| e.to_string())?;
        let client = ClientRuntime::try_new(
            owner.root_context().component("client"),
            ClientRuntimeConfig::default(),
            rocketmq_observability::TelemetryHandle::noop(),
        )
        .map_err(|e| e.to_string())?;
        Ok((owner, client))
    });
    match built {
        Ok((_, client)) => Ok(Arc::clone(client)),
        Err(e) => Err(RocketMqError::Runtime(e.clone())),
    }
}

/// RocketMQ ACL credentials, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccessKeys {
    /// The access key.
    pub access_key: Secret,
    /// The secret key.
    pub secret_key: Secret,
}

impl AccessKeys {
    /// Reads `accessKey` and `secretKey`: both or neither.
    pub(crate) fn build(
        access_key: Option<&SecretRef>,
        secret_key: Option<&SecretRef>,
        check: &mut BuildErrors<'_>,
    ) -> Option<AccessKeys> {
        match (access_key, secret_key) {
            (None, None) => None,
            (Some(a), Some(s)) => Some(AccessKeys {
                access_key: check.secret("accessKey", a)?,
                secret_key: check.secret("secretKey", s)?,
            }),
            _ => {
                check.at("accessKey", "set both accessKey and secretKey, or neither");
                None
            }
        }
    }

    /// The hook that signs the client's requests.
    pub fn hook(&self) -> Arc<AclClientRPCHook> {
        Arc::new(AclClientRPCHook::new(SessionCredentials::with_keys(
            String::from_utf8_lossy(self.access_key.expose()).into_owned(),
            String::from_utf8_lossy(self.secret_key.expose()).into_owned(),
        )))
    }
}

/// Checks a name-server list: `host:port`, several separated by `;`.
pub(crate) fn check_name_server(name_server: &str, check: &mut BuildErrors<'_>) {
    let bad = name_server.trim().is_empty()
        || name_server.split(';').any(|a| {
            let a = a.trim();
            a.rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
        });
    if bad {
        check.at(
            "nameServer",
            "give host:port, several separated by ;, e.g. 127.0.0.1:9876",
        );
    }
}

/// Checks a topic or group name as RocketMQ does: 1 to 127 characters of `[%|a-zA-Z0-9_-]`.
pub(crate) fn check_resource_name(field: &str, name: &str, check: &mut BuildErrors<'_>) {
    let ok = !name.is_empty()
        && name.len() <= 127
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '%' | '|' | '_' | '-'));
    if !ok {
        check.at(
            field,
            format!("{name:?} is not a RocketMQ name: use 1 to 127 of a-z A-Z 0-9 _ - % |"),
        );
    }
}

/// The default group of `namespace/name`: `triggerfish-<namespace>-<name>`, with characters
/// RocketMQ refuses in names (Kubernetes names may hold dots) replaced by `_`.
pub(crate) fn default_group(namespace: &str, name: &str) -> String {
    format!("triggerfish-{namespace}-{name}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// `RocketMQSource`, built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RocketMqSourceConfig {
    /// Name servers, `;`-separated.
    pub name_server: String,
    /// The topic.
    pub topic: String,
    /// The tag expression.
    pub tags: TagFilter,
    /// The consumer group.
    pub consumer_group: String,
    /// Where a group without a stored offset starts.
    pub initial_offset: InitialOffset,
    /// ACL credentials.
    pub access_keys: Option<AccessKeys>,
    /// The message mapping.
    pub mapper: RocketMqMapper,
    /// What happens to bad messages.
    pub invalid: InvalidRecords,
}

impl RocketMqSourceConfig {
    /// Builds the source, reporting problems to `check`.
    pub(crate) fn build(
        spec: &RocketMQSourceSpec,
        resource: &CustomResource,
        check: &mut BuildErrors<'_>,
    ) -> Option<RocketMqSourceConfig> {
        let (ns, name) = (&resource.meta.namespace, &resource.meta.name);
        check_name_server(&spec.name_server, check);
        check_resource_name("topic", &spec.topic, check);
        let consumer_group = spec
            .consumer_group
            .clone()
            .unwrap_or_else(|| default_group(ns, name));
        check_resource_name("consumerGroup", &consumer_group, check);
        let expression = spec.tag_expression.as_deref().unwrap_or("*");
        let tags = TagFilter::parse(expression).unwrap_or_else(|| {
            check.at(
                "tagExpression",
                format!("{expression:?} is not a tag expression: write `*` (every tag, on its own), a tag, or `TagA || TagB`"),
            );
            TagFilter::All
        });
        let invalid = invalid_records(spec.invalid_records, resource, check);
        let access_keys =
            AccessKeys::build(spec.access_key.as_ref(), spec.secret_key.as_ref(), check);
        let overrides = ce_overrides(spec.ce_overrides.as_ref(), check);
        let mapper = RocketMqMapper::new(
            ns,
            name,
            spec.region.as_deref().unwrap_or_default(),
            spec.account_id.as_deref().unwrap_or_default(),
            spec.instance_id.as_deref().unwrap_or_default(),
            overrides,
        );
        Some(RocketMqSourceConfig {
            name_server: spec.name_server.clone(),
            topic: spec.topic.clone(),
            tags,
            consumer_group,
            initial_offset: spec.initial_offset.unwrap_or(InitialOffset::Latest),
            access_keys,
            mapper,
            invalid,
        })
    }
}

/// The tracker shared by the consumer task and the rebalance listener. The lock is held only
/// for map updates, never across I/O or `.await`.
type Tracker = tracked::Tracker<MessageQueue>;

/// Forgets queues a rebalance took away.
struct Rebalance {
    key: Arc<str>,
    tracker: Tracker,
    metrics: crate::sources::SourceMetrics,
}

impl MessageQueueListener for Rebalance {
    fn message_queue_changed(
        &self,
        topic: &str,
        all: &HashSet<MessageQueue>,
        assigned: &HashSet<MessageQueue>,
    ) {
        let mut tracker = self.tracker.lock();
        // The tracker knows the queues whose messages arrived; every queue of the topic that is
        // not assigned any more is forgotten.
        for mq in all.iter().filter(|mq| !assigned.contains(*mq)) {
            if tracker.is_assigned(mq) {
                tracker.revoke(mq);
                self.metrics.remove_lag(&self.key, topic, queue_label(mq));
                tracing::info!(source = %self.key, topic, broker = %mq.broker_name(), queue = mq.queue_id(), "queue revoked");
            }
        }
    }
}

/// A queue's `partition` label: `<broker>/<queue id>`.
fn queue_label(mq: &MessageQueue) -> String {
    format!("{}/{}", mq.broker_name(), mq.queue_id())
}

/// Starts the consumer task. The consumer itself starts in the task, retrying every few
/// seconds while the name server cannot be reached; errors here are the client's refusal of
/// its settings.
pub fn spawn(
    key: Arc<str>,
    config: RocketMqSourceConfig,
    publisher: Arc<Publisher>,
    dead_letter: Option<Arc<TriggerHandle>>,
    context: Context,
    stop: CancellationToken,
    tasks: &tokio_util::task::TaskTracker,
) -> Result<(), RocketMqError> {
    let runtime = client_runtime()?;
    let mut builder = DefaultLitePullConsumer::builder(runtime)
        .name_server_addr(config.name_server.clone())
        .consumer_group(config.consumer_group.clone())
        .instance_name(format!("triggerfish-{}", std::process::id()))
        .consume_from_where(match config.initial_offset {
            InitialOffset::Earliest => ConsumeFromWhere::ConsumeFromFirstOffset,
            InitialOffset::Latest => ConsumeFromWhere::ConsumeFromLastOffset,
        })
        .auto_commit(false)
        .pull_batch_size(PULL_BATCH)
        .poll_timeout_millis(POLL_TIMEOUT.as_millis() as u64);
    if let Some(keys) = &config.access_keys {
        builder = builder.rpc_hook(keys.hook());
    }
    let consumer = builder.build().map_err(|source| RocketMqError::Start {
        what: "consumer",
        source,
    })?;
    let tracker: Tracker = Arc::new(parking_lot::Mutex::new(OffsetTracker::new()));
    tasks.spawn(async move {
        let task = Task {
            key: Arc::clone(&key),
            config,
            consumer: Arc::new(consumer),
            out: TrackedPublisher {
                key,
                publisher,
                dead_letter,
                tracker,
                metrics: context.metrics.clone(),
            },
            context,
        };
        task.run(stop).await;
    });
    Ok(())
}

/// What one consumer task holds.
struct Task {
    key: Arc<str>,
    config: RocketMqSourceConfig,
    consumer: Arc<DefaultLitePullConsumer>,
    /// Where its events go; its tracker is this task's.
    out: TrackedPublisher<MessageQueue>,
    context: Context,
}

/// Measures a source's lag every [`LAG_INTERVAL`] until the source stops.
struct Lag {
    key: Arc<str>,
    consumer: Arc<DefaultLitePullConsumer>,
    tracker: Tracker,
    metrics: crate::sources::SourceMetrics,
}

impl Lag {
    async fn run(self, stop: CancellationToken) {
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(LAG_INTERVAL) => {}
            }
            self.report().await;
        }
    }

    /// Sets each tracked queue's lag: the broker's max offset minus the queue's position. A
    /// queue whose broker does not answer in time keeps its last figure.
    async fn report(&self) {
        let positions = self.tracker.lock().positions();
        let queries = positions.iter().map(|(mq, position)| async move {
            (mq, *position, self.consumer.max_offset(mq).await)
        });
        let Ok(answers) =
            tokio::time::timeout(LAG_QUERY_TIMEOUT, futures::future::join_all(queries)).await
        else {
            tracing::debug!(source = %self.key, "no max offsets in time; lag not updated");
            return;
        };
        for (mq, position, max) in answers {
            match max {
                Ok(max) => self.metrics.set_lag(
                    &self.key,
                    mq.topic(),
                    queue_label(mq),
                    (max - position).max(0),
                ),
                Err(e) => {
                    tracing::debug!(source = %self.key, queue = %queue_label(mq), error = %e, "no max offset; lag not updated");
                }
            }
        }
    }
}

/// One message's event, ready to publish.
type Ready = tracked::Ready<MessageQueue>;

impl Task {
    async fn run(self, stop: CancellationToken) {
        if !self.start(&stop).await {
            return;
        }
        tracing::info!(source = %self.key, topic = %self.config.topic, group = %self.config.consumer_group, "RocketMQ consumer started");
        // Off the poll path: a slow broker delays the lag figures, never the messages.
        tokio::spawn(
            Lag {
                key: Arc::clone(&self.key),
                consumer: Arc::clone(&self.consumer),
                tracker: Arc::clone(&self.out.tracker),
                metrics: self.context.metrics.clone(),
            }
            .run(stop.clone()),
        );
        let mut last_commit = Instant::now();
        while !stop.is_cancelled() {
            if last_commit.elapsed() >= COMMIT_INTERVAL {
                self.commit().await;
                last_commit = Instant::now();
            }
            // Not raced against `stop`: a poll cut short could lose the messages it took.
            let polled = Instant::now();
            let messages = self
                .consumer
                .poll_with_timeout_zero_copy(POLL_TIMEOUT.as_millis() as u64)
                .await;
            if messages.is_empty() {
                // A consumer that is not running answers at once; do not spin on it.
                if polled.elapsed() < POLL_TIMEOUT / 4 {
                    tokio::time::sleep(POLL_TIMEOUT).await;
                }
                continue;
            }
            let mut events = Vec::new();
            let mut dead = Vec::new();
            for m in &messages {
                self.take(m, &mut events, &mut dead);
            }
            let ok =
                self.out.publish(events, &stop).await && self.out.dead_letter(dead, &stop).await;
            if !ok {
                break;
            }
        }
        self.drain().await;
    }

    /// Subscribes and starts the consumer, retrying while it fails. False when stopped first.
    async fn start(&self, stop: &CancellationToken) -> bool {
        let listener = Rebalance {
            key: Arc::clone(&self.key),
            tracker: Arc::clone(&self.out.tracker),
            metrics: self.context.metrics.clone(),
        };
        let subscribed = self
            .consumer
            .subscribe_with_listener(
                &self.config.topic,
                self.config.tags.broker_expression(),
                listener,
            )
            .await;
        if let Err(e) = subscribed {
            tracing::error!(source = %self.key, error = %e, "the RocketMQ subscription is refused; check topic and tagExpression; the source is not running");
            return false;
        }
        let mut pause = Duration::from_secs(1);
        loop {
            match self.consumer.start().await {
                Ok(()) => return true,
                Err(e) => {
                    let e = RocketMqError::Start {
                        what: "consumer",
                        source: e,
                    };
                    tracing::warn!(source = %self.key, error = %e, retry_in = ?pause, "retrying");
                }
            }
            tokio::select! {
                () = stop.cancelled() => return false,
                () = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(30));
        }
    }

    /// Maps one message into `events`, or `dead` for bad messages to dead-letter.
    fn take(&self, m: &MessageExt, events: &mut Vec<Ready>, dead: &mut Vec<Ready>) {
        let mq = MessageQueue::from_parts(m.topic().clone(), m.broker_name(), m.queue_id());
        let ticket = {
            let mut tracker = self.out.tracker.lock();
            if !tracker.is_assigned(&mq) {
                tracker.assign(mq.clone());
            }
            tracker.begin(mq, m.queue_offset())
        };
        let Some(ticket) = ticket else {
            // Just assigned above, so `begin` cannot refuse it.
            return;
        };
        let properties: Vec<(&str, &str)> = m
            .properties()
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let tag = properties
            .iter()
            .find(|(k, _)| *k == "TAGS")
            .map(|(_, v)| *v);
        if !self.config.tags.matches(tag) {
            // Another tag (an expression of several tags is filtered here, not by the broker):
            // finished at once, so that its offset commits.
            self.out.tracker.lock().finish(&ticket);
            self.context.metrics.record_many(&self.key, "filtered", 1);
            return;
        }
        let msg_id = properties
            .iter()
            .find(|(k, _)| *k == "UNIQ_KEY")
            .map_or(m.msg_id().as_str(), |(_, v)| v);
        let message = Message {
            topic: m.topic().as_str(),
            queue_id: m.queue_id(),
            queue_offset: m.queue_offset(),
            msg_id,
            born_timestamp_ms: m.born_timestamp(),
            store_timestamp_ms: m.store_timestamp(),
            properties: &properties,
        };
        let body = m.body().unwrap_or_default();
        let limits = self.context.limits;
        match self.config.mapper.map(&message, body.clone(), &limits) {
            Ok(batch) => events.push(Ready {
                ticket,
                event: one(batch),
            }),
            Err(invalid) => self.out.refuse(
                ticket,
                &*invalid,
                self.config.invalid,
                "message",
                || {
                    self.config
                        .mapper
                        .dead_letter_event(&message, &body, &invalid, &limits)
                },
                dead,
            ),
        }
    }

    /// Commits (and persists to the broker) every queue's position that moved.
    async fn commit(&self) {
        let positions = self.out.tracker.lock().committable();
        if positions.is_empty() {
            return;
        }
        let described = positions
            .iter()
            .map(|(mq, p)| format!("{}/{}@{p}", mq.broker_name(), mq.queue_id()))
            .collect::<Vec<_>>()
            .join(",");
        self.consumer
            .commit_with_map(positions.into_iter().collect(), true)
            .await;
        // The client logs a failed commit itself and returns nothing; a failed commit only
        // means more is read again after a restart.
        self.context.metrics.record_commit(&self.key, true);
        tracing::trace!(source = %self.key, offsets = %described, "offsets committed");
    }

    /// Stops reading; commits while the events handed on drain, then shuts the consumer down.
    async fn drain(self) {
        let started = Instant::now();
        loop {
            self.commit().await;
            if self.out.tracker.lock().unfinished() == 0
                || started.elapsed() > DRAIN_WAIT
                || self.context.gave_up.is_cancelled()
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left = self.out.tracker.lock().unfinished();
        self.consumer.shutdown().await;
        tracing::info!(source = %self.key, unfinished = left, "RocketMQ consumer stopped; unfinished messages are read again next time");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_groups_are_rocketmq_names() {
        assert_eq!(
            default_group("media", "orders.v2"),
            "triggerfish-media-orders_v2"
        );
    }
}
