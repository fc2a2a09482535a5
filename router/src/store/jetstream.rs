//! The JetStream store: each broker's events in a NATS JetStream stream, shared by every
//! replica, for at-least-once delivery across crashes.
//!
//! - **Layout.** Broker `ns/name` has stream `TF_<ns>_<name>` on subjects
//!   `tf.<ns>.<name>.<partition>`; an event's partition is its partition key's hash (the
//!   `partitionkey` extension, else `source`) modulo `partitions`. Each message is one event in
//!   structured JSON, with its TTL in the `Tf-Ttl` header and `Nats-Msg-Id` set to a hash of
//!   its `source` and `id`, so a producer retrying after a timeout does not create a duplicate
//!   within JetStream's duplicate window (2 minutes).
//! - **Ingress** publishes every event of a request asynchronously and answers only after
//!   JetStream acknowledged storing all of them; any failure (NATS down, timeout) is a `503`
//!   with `Retry-After`, never a `202`.
//! - **Dispatch.** Every replica pulls from the same durable consumers, so the work spreads:
//!   - `tf-unordered` reads the whole stream for the unordered triggers (up to
//!     `maxAckPending` events in flight across replicas);
//!   - `tf-ordered-<k>`, one per partition, read partition `k` for the ordered triggers with
//!     `max_ack_pending: 1`: JetStream hands out the next event of a partition only after the
//!     previous one was acknowledged, whichever replica held it, so per-key order holds across
//!     replicas and across a replica's death.
//!
//!   An event is acknowledged when every matched trigger's delivery has ended (delivered,
//!   dead-lettered, or dropped and counted). A replica that dies mid-delivery leaves it
//!   unacknowledged; after `ackWait` JetStream gives it to another replica. Delivery is
//!   therefore **at-least-once**: subscribers may see an event twice after a crash.
//!
//! What this module does not do: match or deliver (the shard route and the dispatchers do, as
//! for the memory store).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use triggerfish_core::config::{DeliveryOrder, StoreSpec};
use triggerfish_core::event::{
    DecodeLimits, EncodeOptions, EventRef, decode_structured, encode_structured,
};
use triggerfish_core::index::MatchScratch;

use super::{Ack, BrokerKey, Completion, Envelope, OfferError, TTL_EXTENSION, event_ttl};
use crate::metrics::Metrics;
use crate::shard::Snapshot;

/// The header carrying an event's TTL.
const TTL_HEADER: &str = "Tf-Ttl";

/// Why the store could not start.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The credentials file could not be read.
    #[error("NATS credentials file {path}: {reason}")]
    Credentials {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// The first connection failed.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
}

/// The JetStream store.
pub struct JetStreamStore {
    js: jetstream::Context,
    client: async_nats::Client,
    spec: StoreSpec,
    hasher: ahash::RandomState,
    streams: tokio::sync::Mutex<HashMap<BrokerKey, stream::Stream>>,
}

/// The stream of broker `ns/name`.
pub fn stream_name(broker: &str) -> String {
    let (ns, name) = broker.split_once('/').unwrap_or(("default", broker));
    format!("TF_{}_{}", token(ns), token(name))
}

/// The subject of partition `p` of broker `ns/name`.
pub fn subject(broker: &str, partition: u32) -> String {
    let (ns, name) = broker.split_once('/').unwrap_or(("default", broker));
    format!("tf.{}.{}.{partition}", token(ns), token(name))
}

/// Kubernetes names use lower-case letters, digits, `-` and `.`; `.` separates NATS subject
/// tokens and cannot appear in stream names, and `_` cannot appear in Kubernetes names, so
/// mapping `.` to `_` is safe and reversible.
fn token(s: &str) -> String {
    s.replace('.', "_")
}

impl JetStreamStore {
    /// Connects to NATS. The client reconnects by itself afterwards.
    pub async fn connect(spec: &StoreSpec) -> Result<JetStreamStore, ConnectError> {
        let mut options = async_nats::ConnectOptions::new()
            .name("triggerfish")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            .event_callback(|event| async move {
                tracing::info!(%event, "NATS connection event");
            });
        if let Some(path) = &spec.credentials_file {
            options =
                options
                    .credentials_file(path)
                    .await
                    .map_err(|e| ConnectError::Credentials {
                        path: path.display().to_string(),
                        reason: e.to_string(),
                    })?;
        }
        let client =
            options
                .connect(spec.url.as_str())
                .await
                .map_err(|e| ConnectError::Connect {
                    url: spec.url.clone(),
                    reason: e.to_string(),
                })?;
        let mut js = jetstream::new(client.clone());
        js.set_timeout(spec.publish_timeout.get());
        Ok(JetStreamStore {
            js,
            client,
            spec: spec.clone(),
            hasher: ahash::RandomState::with_seeds(
                0x7472_6967,
                0x6765_7266,
                0x6973_6821,
                0x5348_4152,
            ),
            streams: tokio::sync::Mutex::new(HashMap::new()),
        })
    }

    /// The JetStream context, for the scheduler's key-value state.
    pub fn context(&self) -> &jetstream::Context {
        &self.js
    }

    /// Replicas of each stream, for the scheduler's buckets too.
    pub fn replicas(&self) -> usize {
        self.spec.stream_replicas.get()
    }

    /// Whether the client is connected right now.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    /// The broker's stream, created on first use.
    pub async fn stream(&self, broker: &BrokerKey) -> Result<stream::Stream, OfferError> {
        let mut streams = self.streams.lock().await;
        if let Some(s) = streams.get(broker) {
            return Ok(s.clone());
        }
        let config = stream::Config {
            name: stream_name(broker),
            subjects: vec![format!("{}.*", subject(broker, 0).trim_end_matches(".0"))],
            retention: stream::RetentionPolicy::Limits,
            max_age: self.spec.max_age.get(),
            storage: stream::StorageType::File,
            num_replicas: self.spec.stream_replicas.get(),
            duplicate_window: Duration::from_secs(120),
            description: Some(format!("Triggerfish broker {broker}")),
            ..Default::default()
        };
        let s =
            self.js.get_or_create_stream(config).await.map_err(|e| {
                OfferError::Unavailable(format!("JetStream stream for {broker}: {e}"))
            })?;
        streams.insert(Arc::clone(broker), s.clone());
        Ok(s)
    }

    /// Publishes events and waits until JetStream has stored every one.
    pub async fn publish(
        &self,
        broker: &BrokerKey,
        events: &[EventRef],
        ttl: Option<u8>,
    ) -> Result<(), OfferError> {
        if !self.connected() {
            return Err(OfferError::Unavailable("not connected to NATS".into()));
        }
        self.stream(broker).await?;
        let partitions = self.spec.partitions.get();
        let mut acks = Vec::with_capacity(events.len());
        for event in events {
            let view = event.view();
            let partition =
                view.with_partition_key(|k| self.hasher.hash_one(k)) % u64::from(partitions);
            let body = encode_structured(
                &view,
                &EncodeOptions {
                    skip: &[TTL_EXTENSION],
                    add: &[],
                },
            );
            let ttl = ttl.unwrap_or_else(|| event_ttl(event));
            let msg_id = format!(
                "{:016x}",
                self.hasher.hash_one((view.source(), view.id(), ttl))
            );
            let publish = jetstream::message::PublishMessage::build()
                .payload(body)
                .header(TTL_HEADER, ttl.to_string().as_str())
                .message_id(msg_id);
            let ack = self
                .js
                .send_publish(subject(broker, partition as u32), publish)
                .await
                .map_err(|e| OfferError::Unavailable(format!("publishing to JetStream: {e}")))?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(|e| {
                OfferError::Unavailable(format!("JetStream did not confirm storage: {e}"))
            })?;
        }
        Ok(())
    }

    /// Runs one dispatch consumer of `broker` until `stop`: the unordered one
    /// (`partition: None`), or the ordered one of a partition. Reconnects with backoff.
    pub async fn consume(
        self: Arc<Self>,
        broker: BrokerKey,
        partition: Option<u32>,
        routing: Routing,
        stop: CancellationToken,
    ) {
        let mut pause = Duration::from_millis(200);
        while !stop.is_cancelled() {
            match self.consume_once(&broker, partition, &routing, &stop).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(broker = %broker, error = %e, retry_in = ?pause, "JetStream consumer failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = stop.cancelled() => return,
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn consume_once(
        &self,
        broker: &BrokerKey,
        partition: Option<u32>,
        routing: &Routing,
        stop: &CancellationToken,
    ) -> Result<(), String> {
        let stream = self.stream(broker).await.map_err(|e| e.to_string())?;
        let (name, filter, max_ack_pending, order) = match partition {
            Some(p) => (
                format!("tf-ordered-{p}"),
                subject(broker, p),
                1,
                DeliveryOrder::Ordered,
            ),
            None => (
                "tf-unordered".to_owned(),
                String::new(),
                4096,
                DeliveryOrder::Unordered,
            ),
        };
        let config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: filter,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.spec.ack_wait.get(),
            max_ack_pending,
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        };
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(&name, config)
            .await
            .map_err(|e| format!("consumer {name}: {e}"))?;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(if max_ack_pending == 1 { 1 } else { 256 })
            .heartbeat(Duration::from_secs(5))
            .messages()
            .await
            .map_err(|e| format!("consumer {name}: {e}"))?;
        let limits = DecodeLimits {
            max_event_bytes: usize::MAX,
            ..DecodeLimits::default()
        };
        let mut scratch = MatchScratch::new();
        let mut matched = Vec::new();
        loop {
            let next = tokio::select! {
                next = messages.next() => next,
                () = stop.cancelled() => return Ok(()),
            };
            let message = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => return Err(format!("consumer {name}: {e}")),
                None => return Err(format!("consumer {name}: stream ended")),
            };
            let (message, acker) = message.split();
            let ttl = message
                .headers
                .as_ref()
                .and_then(|h| h.get(TTL_HEADER))
                .and_then(|v| v.as_str().parse::<u8>().ok())
                .unwrap_or(super::DEFAULT_TTL);
            let batch = match decode_structured(message.payload, &limits) {
                Ok(b) => b,
                Err(e) => {
                    // A message no replica can read would be redelivered forever: terminate it.
                    tracing::error!(broker = %broker, error = %e, "undecodable JetStream message terminated");
                    let _ = acker.ack_with(AckKind::Term).await;
                    continue;
                }
            };
            let Some(event) = EventRef::new(Arc::new(batch), 0) else {
                continue;
            };
            let envelope = Envelope {
                event,
                broker: Arc::clone(broker),
                ttl,
                accepted_at: Instant::now(),
                completion: Completion::new(Box::new(JsAck(Arc::new(acker)))),
            };
            let snapshot = routing.snapshot.load_full();
            crate::shard::route_some(
                envelope,
                &snapshot,
                &routing.metrics,
                &mut scratch,
                &mut matched,
                Some(order),
            )
            .await;
        }
    }
}

/// What consumers route with.
#[derive(Clone)]
pub struct Routing {
    /// The routing snapshot.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// The consumers running in this replica, kept in step with the config's brokers.
pub struct Consumers {
    store: Arc<JetStreamStore>,
    routing: Routing,
    stop: CancellationToken,
    running: parking_lot::Mutex<HashMap<(BrokerKey, Option<u32>), CancellationToken>>,
}

impl Consumers {
    /// No consumers yet; `stop` ends them all.
    pub fn new(store: Arc<JetStreamStore>, routing: Routing, stop: CancellationToken) -> Consumers {
        Consumers {
            store,
            routing,
            stop,
            running: parking_lot::Mutex::new(HashMap::new()),
        }
    }

    /// Runs the unordered consumer of every broker, and the partition consumers of brokers
    /// with ordered triggers; stops the others.
    pub fn sync(&self, brokers: &[(BrokerKey, bool)]) {
        let mut wanted = Vec::new();
        for (broker, ordered) in brokers {
            wanted.push((Arc::clone(broker), None));
            if *ordered {
                wanted.extend(
                    (0..self.store.spec.partitions.get()).map(|p| (Arc::clone(broker), Some(p))),
                );
            }
        }
        let mut running = self.running.lock();
        running.retain(|key, token| {
            let keep = wanted.contains(key);
            if !keep {
                token.cancel();
            }
            keep
        });
        for key in wanted {
            if running.contains_key(&key) {
                continue;
            }
            let token = self.stop.child_token();
            tokio::spawn(Arc::clone(&self.store).consume(
                Arc::clone(&key.0),
                key.1,
                self.routing.clone(),
                token.clone(),
            ));
            running.insert(key, token);
        }
    }
}

/// Acknowledges a JetStream message when its completion finishes.
struct JsAck(Arc<async_nats::jetstream::message::Acker>);

impl Ack for JsAck {
    fn ack(&self) {
        let acker = Arc::clone(&self.0);
        tokio::spawn(async move {
            if let Err(e) = acker.ack().await {
                tracing::warn!(error = %e, "JetStream ack failed; the event will be redelivered");
            }
        });
    }

    fn nak(&self) {
        let acker = Arc::clone(&self.0);
        tokio::spawn(async move {
            let _ = acker.ack_with(AckKind::Nak(None)).await;
        });
    }
}
