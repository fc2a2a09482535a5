//! The JetStream store: each broker's events in a NATS JetStream stream, shared by every
//! replica, for at-least-once delivery across crashes.
//!
//! - **Layout.** Broker `ns/name` has stream `TF_<ns>_<name>` on subjects
//!   `tf.<ns>.<name>.<partition>`; an event's partition is its partition key's hash (the
//!   `partitionkey` extension, else `source`) modulo `partitions`. Each message is one event in
//!   structured JSON, with its TTL in the `Tf-Ttl` header and `Nats-Msg-Id` set to a hash of
//!   its `source`, `id` and TTL, so a producer retrying after a timeout (or a scheduler tick
//!   fired by two leaders) does not create a duplicate within JetStream's duplicate window
//!   (2 minutes). Both hashes are FNV-1a, fixed forever: replicas of different versions agree
//!   on partitions and message ids during a rolling upgrade.
//! - **Ingress** publishes every event of a request asynchronously and answers only after
//!   JetStream acknowledged storing all of them; any failure (NATS down, timeout) is a `503`
//!   with `Retry-After`, never a `202`. Publishes awaiting their acknowledgement are bounded
//!   per process ([`PUBLISH_WINDOW`] events); a request takes its share of the window whole
//!   before it sends, so requests waiting for room never hold part of it.
//! - **Dispatch.** Every replica pulls from the same durable consumers, so the work spreads:
//!   - `tf-unordered` reads the whole stream for the unordered triggers (up to
//!     `maxAckPending` events in flight across replicas);
//!   - `tf-ordered-<k>`, one per partition, read partition `k` for the ordered triggers with
//!     `max_ack_pending: 1`: JetStream hands out the next event of a partition only after the
//!     previous one was acknowledged, whichever replica held it, so per-key order holds across
//!     replicas and across a replica's death.
//!
//!   A consumer asks for events in pulls of 128, with at most 256 events asked for or taken
//!   and not yet routed, and holds every event from the moment its pull brings it: an event
//!   waiting for room in a full trigger queue is held like one being delivered. Pulls die
//!   with their connection to NATS; when the client connects again, every consumer pulls
//!   again at once.
//!
//!   An event is acknowledged when every matched trigger's delivery has ended (delivered,
//!   dead-lettered, or dropped and counted). While a replica holds an event (waiting to be
//!   routed, queued for a trigger, being delivered, or waiting between retries) it tells
//!   JetStream it is still working on it (`+WPI`) every quarter of `ackWait` once it has held
//!   it for an eighth, so the first word reaches JetStream within three eighths of `ackWait`
//!   of the event's taking, and a long delivery is never handed to a second replica. A
//!   replica that dies leaves its events unacknowledged; `ackWait` after its last word
//!   JetStream gives them to another replica. Delivery is therefore **at-least-once**: after a
//!   crash, subscribers may see again the events the dead replica held, at most
//!   `maxAckPending` events (unordered) plus one per partition (ordered).
//! - **Shutdown.** Consumers stop pulling when the drain starts and hand back (`-NAK`) what
//!   they took but had not routed; [`JetStreamStore::close`] waits for the last
//!   acknowledgements and flushes them to the server.
//!
//! What this module does not do: match or deliver (the shard route and the dispatchers do, as
//! for the memory store).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use async_nats::Subject;
use async_nats::jetstream::context::ContextBuilder;
use async_nats::jetstream::message::Acker;
use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures::{FutureExt as _, StreamExt};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use triggerfish_core::config::{DeliveryOrder, StoreSpec};
use triggerfish_core::event::{
    DecodeLimits, EncodeOptions, EventRef, decode_structured, encode_structured,
};
use triggerfish_core::index::MatchScratch;

use super::{Ack, BrokerKey, Completion, Envelope, OfferError, TTL_EXTENSION, event_ttl};
use crate::metrics::{BrokerLabels, Metrics};
use crate::shard::Snapshot;

/// The header carrying an event's TTL.
const TTL_HEADER: &str = "Tf-Ttl";

/// Events published and not yet acknowledged by JetStream, per process. Enough to keep the
/// server busy (a request of 100 events, from 160 producers at once); small enough that a
/// stalled server costs little memory.
pub const PUBLISH_WINDOW: usize = 16_384;

/// The most events a consumer has taken and not yet routed, plus those it asked for and has
/// not yet received: half of it in each of two pull requests.
const PULL_BUDGET: u32 = 256;

/// How long JetStream keeps a pull request open when it has fewer events than asked for. A
/// pull lost with a connection is noticed this much (plus five seconds) later.
const PULL_EXPIRES: Duration = Duration::from_secs(5);

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
    /// The URL is not a list of NATS server addresses.
    #[error("cannot connect to NATS at {url}: {reason}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// No server of the list answered in time.
    #[error("cannot reach NATS at {url} (tried for {waited:?}); is the server up and reachable?")]
    Unreachable {
        /// The URL.
        url: String,
        /// How long the start waited.
        waited: Duration,
    },
}

/// How long start-up waits for a first connection to NATS.
const CONNECT_WITHIN: Duration = Duration::from_secs(30);

/// The JetStream store.
pub struct JetStreamStore {
    js: jetstream::Context,
    client: async_nats::Client,
    spec: StoreSpec,
    /// Brokers whose stream is known to exist, with their partitions' subjects.
    streams: parking_lot::RwLock<HashMap<BrokerKey, Arc<BrokerStream>>>,
    /// Held while a stream is looked up or created, so that it happens once.
    creating: tokio::sync::Mutex<()>,
    /// Places in the publish window ([`PUBLISH_WINDOW`]).
    window: Arc<Semaphore>,
    /// The consumers' acknowledgement tasks, waited for by [`JetStreamStore::close`].
    ackers: TaskTracker,
    /// Counts the client's connections: a change tells the consumers that their pulls died
    /// with the last connection.
    connections: Arc<watch::Sender<u64>>,
}

/// A broker's stream and the subject of each of its partitions.
struct BrokerStream {
    stream: stream::Stream,
    subjects: Vec<Subject>,
}

/// The stream of broker `ns/name`.
pub fn stream_name(broker: &str) -> String {
    let (ns, name) = broker.split_once('/').unwrap_or(("default", broker));
    format!("TF_{}_{}", token(ns), token(name))
}

/// The subject of partition `p` of broker `ns/name`.
pub fn subject(broker: &str, partition: u32) -> String {
    format!("{}.{partition}", subject_prefix(broker))
}

fn subject_prefix(broker: &str) -> String {
    let (ns, name) = broker.split_once('/').unwrap_or(("default", broker));
    format!("tf.{}.{}", token(ns), token(name))
}

/// Kubernetes names use lower-case letters, digits, `-` and `.`; `.` separates NATS subject
/// tokens and cannot appear in stream names, and `_` cannot appear in Kubernetes names, so
/// mapping `.` to `_` is safe and reversible.
fn token(s: &str) -> String {
    s.replace('.', "_")
}

/// The partition of a partition key: FNV-1a (64 bits) modulo `partitions`.
pub fn partition_of(key: &str, partitions: u32) -> u32 {
    (fnv1a_64(key.as_bytes()) % u64::from(partitions.max(1))) as u32
}

/// `Nats-Msg-Id` of an event: FNV-1a (128 bits) of its source, id and TTL, in hex. The TTL is
/// part of it so that an event re-published on purpose (a delayed event, one hop further) is
/// not taken for a duplicate of itself.
pub fn message_id(source: &str, id: &str, ttl: u8) -> String {
    let mut h = Fnv128::new();
    h.write(source.as_bytes());
    h.write(&[0]);
    h.write(id.as_bytes());
    h.write(&[0, ttl]);
    format!("{:032x}", h.0)
}

fn fnv1a_64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

struct Fnv128(u128);

impl Fnv128 {
    fn new() -> Fnv128 {
        Fnv128(0x6c62_272e_07bb_0142_62b8_2175_6295_c58d)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u128::from(b);
            self.0 = self
                .0
                .wrapping_mul(0x0000_0000_0100_0000_0000_0000_0000_013b);
        }
    }
}

impl JetStreamStore {
    /// Connects to NATS. The client reconnects by itself afterwards.
    pub async fn connect(spec: &StoreSpec) -> Result<JetStreamStore, ConnectError> {
        let connections = Arc::new(watch::Sender::new(0u64));
        let counter = Arc::clone(&connections);
        let mut options = async_nats::ConnectOptions::new()
            .name("triggerfish")
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(5))
            // Linear up to a second (the client's default grows to several seconds): a NATS
            // server back from a restart takes traffic again within a second.
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((attempts as u64 * 100).min(1000))
            })
            .event_callback(move |event| {
                let counter = Arc::clone(&counter);
                async move {
                    match event {
                        async_nats::Event::Connected => {
                            tracing::info!("connected to NATS");
                            counter.send_modify(|n| *n += 1);
                        }
                        async_nats::Event::Disconnected => {
                            tracing::warn!("disconnected from NATS; reconnecting")
                        }
                        // Repeated on every failed reconnection attempt: details for debugging.
                        other => tracing::debug!(event = %other, "NATS connection event"),
                    }
                }
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
        // `url` may list several servers of a cluster, comma-separated; the client picks one
        // and fails over to the others.
        let servers: Vec<&str> = spec
            .url
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        let client = options
            .connect(servers)
            .await
            .map_err(|e| ConnectError::Connect {
                url: spec.url.clone(),
                reason: e.to_string(),
            })?;
        // Started before NATS (a Kubernetes rollout), the process waits a while; the client
        // keeps trying in the background meanwhile.
        let started = Instant::now();
        let mut warned = false;
        while client.connection_state() != async_nats::connection::State::Connected {
            if started.elapsed() >= CONNECT_WITHIN {
                return Err(ConnectError::Unreachable {
                    url: spec.url.clone(),
                    waited: CONNECT_WITHIN,
                });
            }
            if !warned && started.elapsed() >= Duration::from_secs(1) {
                tracing::warn!(url = %spec.url, "waiting for NATS");
                warned = true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // The store bounds publishes itself (`window`), taking a request's places whole. The
        // client's own bound must never make a publish wait: a request waiting there would
        // hold the acks it has not awaited yet, and requests could wait on each other forever.
        let js = ContextBuilder::new()
            .timeout(spec.publish_timeout.get())
            .max_ack_inflight(PUBLISH_WINDOW * 4)
            .backpressure_on_inflight(false)
            .build(client.clone());
        Ok(JetStreamStore {
            js,
            client,
            spec: spec.clone(),
            streams: parking_lot::RwLock::new(HashMap::new()),
            creating: tokio::sync::Mutex::new(()),
            window: Arc::new(Semaphore::new(PUBLISH_WINDOW)),
            ackers: TaskTracker::new(),
            connections,
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
    async fn stream(&self, broker: &BrokerKey) -> Result<Arc<BrokerStream>, OfferError> {
        if let Some(s) = self.streams.read().get(broker) {
            return Ok(Arc::clone(s));
        }
        let _creating = self.creating.lock().await;
        if let Some(s) = self.streams.read().get(broker) {
            return Ok(Arc::clone(s));
        }
        let prefix = subject_prefix(broker);
        let config = stream::Config {
            name: stream_name(broker),
            subjects: vec![format!("{prefix}.*")],
            retention: stream::RetentionPolicy::Limits,
            max_age: self.spec.max_age.get(),
            storage: stream::StorageType::File,
            num_replicas: self.spec.stream_replicas.get(),
            duplicate_window: Duration::from_secs(120),
            description: Some(format!("Triggerfish broker {broker}")),
            ..Default::default()
        };
        let stream =
            self.js.get_or_create_stream(config).await.map_err(|e| {
                OfferError::Unavailable(format!("JetStream stream for {broker}: {e}"))
            })?;
        let subjects = (0..self.spec.partitions.get())
            .map(|p| Subject::from(format!("{prefix}.{p}")))
            .collect();
        let s = Arc::new(BrokerStream { stream, subjects });
        self.streams
            .write()
            .insert(Arc::clone(broker), Arc::clone(&s));
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
        let stream = self.stream(broker).await?;
        for chunk in events.chunks(PUBLISH_WINDOW) {
            // All the chunk's places at once, before sending anything: see the module docs.
            let _places = Arc::clone(&self.window)
                .acquire_many_owned(chunk.len() as u32)
                .await
                .map_err(|_| OfferError::Unavailable("the store is closed".into()))?;
            self.publish_chunk(&stream, chunk, ttl).await?;
        }
        Ok(())
    }

    async fn publish_chunk(
        &self,
        stream: &BrokerStream,
        events: &[EventRef],
        ttl: Option<u8>,
    ) -> Result<(), OfferError> {
        let partitions = self.spec.partitions.get();
        let mut acks = Vec::with_capacity(events.len());
        for event in events {
            let view = event.view();
            let partition = view.with_partition_key(|k| partition_of(k, partitions));
            let body = encode_structured(
                &view,
                &EncodeOptions {
                    skip: &[TTL_EXTENSION],
                    add: &[],
                },
            );
            let ttl = ttl.unwrap_or_else(|| event_ttl(event));
            let publish = jetstream::message::PublishMessage::build()
                .payload(body)
                .header(TTL_HEADER, ttl.to_string().as_str())
                .message_id(message_id(view.source(), view.id(), ttl));
            let subject = stream.subjects[partition as usize].clone();
            let ack =
                self.js.send_publish(subject, publish).await.map_err(|e| {
                    OfferError::Unavailable(format!("publishing to JetStream: {e}"))
                })?;
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
        // Outlives the connection attempts: events held from an earlier one are acknowledged
        // (or kept alive) through it until their deliveries end.
        let holding = Holding::start(&self.ackers, self.spec.ack_wait.get() / 4);
        let mut pause = Duration::from_millis(200);
        while !stop.is_cancelled() {
            match self
                .consume_once(&broker, partition, &routing, &holding, &stop)
                .await
            {
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
        holding: &Holding,
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
                self.spec.max_ack_pending.get(),
                DeliveryOrder::Unordered,
            ),
        };
        let config = consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: filter,
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: self.spec.ack_wait.get(),
            max_ack_pending: i64::from(max_ack_pending),
            deliver_policy: consumer::DeliverPolicy::All,
            ..Default::default()
        };
        // Creating an existing durable consumer updates it, so a changed ackWait or
        // maxAckPending applies at the next start.
        let consumer: consumer::PullConsumer = stream
            .stream
            .create_consumer(config)
            .await
            .map_err(|e| format!("consumer {name}: {e}"))?;
        let mut puller = Puller::new(consumer, name, max_ack_pending.min(PULL_BUDGET) as usize);
        let mut taker = Taker {
            broker,
            holding,
            limits: DecodeLimits {
                max_event_bytes: usize::MAX,
                ..DecodeLimits::default()
            },
            redelivered: routing
                .metrics
                .redelivered
                .get_or_create(&BrokerLabels {
                    broker: broker.to_string(),
                })
                .clone(),
            waiting: VecDeque::new(),
        };
        let mut scratch = MatchScratch::new();
        let mut matched = Vec::new();
        // A new connection: the server forgot the pulls waiting on the last one.
        let mut connections = self.connections.subscribe();
        loop {
            if stop.is_cancelled() {
                // Taken but not routed: hand them back, so that another replica may have them
                // now rather than after ackWait (a dropped completion says `-NAK`).
                taker.waiting.clear();
                puller.hand_back().await;
                return Ok(());
            }
            puller.refill(taker.waiting.len()).await?;
            let Some(envelope) = taker.waiting.pop_front() else {
                tokio::select! {
                    next = puller.next() => taker.take(next, &puller.name).await?,
                    Ok(()) = connections.changed() => puller.forget(),
                    () = stop.cancelled() => {}
                }
                continue;
            };
            // Routing waits while a matched trigger's queue is full; the events that arrive
            // meanwhile are taken (and kept alive) as they come, and no new pull goes out
            // while they fill the budget.
            let snapshot = routing.snapshot.load_full();
            let route = crate::shard::route_some(
                envelope,
                &snapshot,
                &routing.metrics,
                &mut scratch,
                &mut matched,
                Some(order),
            );
            tokio::pin!(route);
            // A failure stops the taking, not the routing: an event half routed would be
            // delivered to some triggers and handed back for all.
            let mut failed = None;
            loop {
                let taking = failed.is_none() && !stop.is_cancelled();
                tokio::select! {
                    biased;
                    () = &mut route => break,
                    next = puller.next(), if taking => {
                        let taken = match taker.take(next, &puller.name).await {
                            Ok(()) => puller.refill(taker.waiting.len()).await,
                            Err(e) => Err(e),
                        };
                        failed = taken.err();
                    }
                    Ok(()) = connections.changed(), if taking => {
                        puller.forget();
                        failed = puller.refill(taker.waiting.len()).await.err();
                    }
                    // Wakes the loop so that it stops taking.
                    () = stop.cancelled(), if taking => {}
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
        }
    }

    /// Waits (up to `timeout`) until every event this replica held is acknowledged or handed
    /// back, then flushes those words to the server. Call it after the consumers stopped and
    /// the deliveries ended, before the process exits.
    pub async fn close(&self, timeout: Duration) {
        self.ackers.close();
        if tokio::time::timeout(timeout, self.ackers.wait())
            .await
            .is_err()
        {
            tracing::warn!("events still held at exit; JetStream redelivers them after ackWait");
        }
        if let Err(e) = tokio::time::timeout(timeout, self.client.flush()).await {
            tracing::warn!(error = %e, "could not flush the last acknowledgements to NATS");
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

/// A consumer's pull requests. The events taken and not yet routed plus those asked for and
/// not yet received never exceed `budget`; a pull asks for half of it, so that while one pull
/// is being routed the next is already on its way. Every event a pull brings is taken (and
/// kept alive) as it arrives, so none waits unheld in a buffer while routing waits for room in
/// a trigger queue; what is not asked for stays in JetStream, free for other replicas.
struct Puller {
    consumer: consumer::PullConsumer,
    name: String,
    /// The most events taken and waiting plus asked for.
    budget: usize,
    /// The pulls in flight, each with the events it may still bring.
    pulls: VecDeque<(consumer::pull::Batch, usize)>,
}

impl Puller {
    fn new(consumer: consumer::PullConsumer, name: String, budget: usize) -> Puller {
        Puller {
            consumer,
            name,
            budget: budget.max(1),
            pulls: VecDeque::with_capacity(2),
        }
    }

    /// Events a pull asks for.
    fn batch(&self) -> usize {
        (self.budget / 2).max(1)
    }

    /// Sends pull requests while `waiting` (events taken, not yet routed) and what the pulls in
    /// flight may still bring leave room in the budget for another.
    async fn refill(&mut self, waiting: usize) -> Result<(), String> {
        let batch = self.batch();
        loop {
            let expected: usize = self.pulls.iter().map(|(_, n)| n).sum();
            if waiting + expected + batch > self.budget {
                return Ok(());
            }
            let pull = self
                .consumer
                .batch()
                .max_messages(batch)
                .expires(PULL_EXPIRES)
                .messages()
                .await
                .map_err(|e| format!("consumer {}: pull: {e}", self.name))?;
            self.pulls.push_back((pull, batch));
        }
    }

    /// The next message of any pull in flight, or `None` when one of them is done (full or
    /// expired). Never ready while no pull is in flight. Cancel-safe.
    async fn next(&mut self) -> Option<Result<jetstream::Message, async_nats::Error>> {
        // JetStream hands a consumer's messages to its waiting pulls in turn, so each of them
        // may have some.
        let (i, next) = std::future::poll_fn(|cx| {
            for (i, (pull, _)) in self.pulls.iter_mut().enumerate() {
                if let std::task::Poll::Ready(next) = pull.poll_next_unpin(cx) {
                    return std::task::Poll::Ready((i, next));
                }
            }
            std::task::Poll::Pending
        })
        .await;
        match &next {
            Some(Ok(_)) => {
                if let Some((_, expected)) = self.pulls.get_mut(i) {
                    *expected = expected.saturating_sub(1);
                }
            }
            Some(Err(_)) => {}
            None => {
                self.pulls.remove(i);
            }
        }
        next
    }

    /// Drops the pulls in flight, which died with a connection to NATS: the server no longer
    /// knows them, and waiting for them to expire would leave the consumer idle for up to
    /// [`PULL_EXPIRES`] and its grace. The next refill asks again. A message of theirs still
    /// on its way is not taken, and JetStream hands it out again after `ackWait`.
    fn forget(&mut self) {
        if !self.pulls.is_empty() {
            tracing::debug!(consumer = %self.name, pulls = self.pulls.len(), "reconnected to NATS: pulling again");
            self.pulls.clear();
        }
    }

    /// Hands back (`-NAK`) what the pulls in flight brought and was not taken, and drops them.
    async fn hand_back(&mut self) {
        for (mut pull, _) in self.pulls.drain(..) {
            while let Some(Some(Ok(m))) = pull.next().now_or_never() {
                let _ = m.ack_with(AckKind::Nak(None)).await;
            }
        }
    }
}

/// Turns a consumer's messages into envelopes waiting to be routed, held from the moment they
/// arrive.
struct Taker<'a> {
    broker: &'a BrokerKey,
    holding: &'a Holding,
    limits: DecodeLimits,
    redelivered: Counter,
    /// Taken, held, not yet routed; within the puller's budget.
    waiting: VecDeque<Envelope>,
}

impl Taker<'_> {
    /// Takes what [`Puller::next`] gave: holds a message and queues its event; terminates a
    /// message no replica can read. `consumer` names the consumer in errors.
    async fn take(
        &mut self,
        next: Option<Result<jetstream::Message, async_nats::Error>>,
        consumer: &str,
    ) -> Result<(), String> {
        let message = match next {
            // The pull is done; the next one goes out when the waiting events allow.
            None => return Ok(()),
            Some(Err(e)) => return Err(format!("consumer {consumer}: {e}")),
            Some(Ok(m)) => m,
        };
        if message.info().is_ok_and(|i| i.delivered > 1) {
            self.redelivered.inc();
        }
        let (message, acker) = message.split();
        let ttl = message
            .headers
            .as_ref()
            .and_then(|h| h.get(TTL_HEADER))
            .and_then(|v| v.as_str().parse::<u8>().ok())
            .unwrap_or(super::DEFAULT_TTL);
        let batch = match decode_structured(message.payload, &self.limits) {
            Ok(b) => b,
            Err(e) => {
                // A message no replica can read would be redelivered forever: terminate it.
                tracing::error!(broker = %self.broker, error = %e, "undecodable JetStream message terminated");
                let _ = acker.ack_with(AckKind::Term).await;
                return Ok(());
            }
        };
        let Some(event) = EventRef::new(Arc::new(batch), 0) else {
            let _ = acker.ack().await;
            return Ok(());
        };
        self.waiting.push_back(Envelope {
            event,
            broker: Arc::clone(self.broker),
            ttl,
            accepted_at: Instant::now(),
            completion: Completion::new(Box::new(self.holding.hold(acker))),
        });
        Ok(())
    }
}

/// The events one consumer of this replica holds (taken, not yet acknowledged), and the task
/// that acknowledges them and keeps them alive.
///
/// One task per consumer rather than one per event: a delivery's end costs a map removal and
/// a channel send, and keeping thousands of events alive costs one timer.
struct Holding {
    held: Arc<parking_lot::Mutex<HashMap<u64, HeldEvent>>>,
    next: AtomicU64,
    verdicts: mpsc::UnboundedSender<(Arc<Acker>, AckKind)>,
}

struct HeldEvent {
    acker: Arc<Acker>,
    since: Instant,
}

impl Holding {
    /// Starts the acknowledging task; it ends once the `Holding` and every event it handed
    /// out are gone.
    fn start(tracker: &TaskTracker, keep_alive: Duration) -> Holding {
        let held: Arc<parking_lot::Mutex<HashMap<u64, HeldEvent>>> = Arc::default();
        let (verdicts, rx) = mpsc::unbounded_channel();
        tracker.spawn(acknowledge(rx, Arc::clone(&held), keep_alive));
        Holding {
            held,
            next: AtomicU64::new(0),
            verdicts,
        }
    }

    /// Holds one event until its completion says how it ended.
    fn hold(&self, acker: Acker) -> JsAck {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let acker = Arc::new(acker);
        self.held.lock().insert(
            id,
            HeldEvent {
                acker: Arc::clone(&acker),
                since: Instant::now(),
            },
        );
        JsAck {
            id,
            held: Arc::clone(&self.held),
            verdicts: self.verdicts.clone(),
        }
    }
}

/// Sends the verdicts (`+ACK`, `-NAK`) in order as they come, and every `keep_alive` a
/// `+WPI` for each event held longer than half of that: an event taken just after a tick gets
/// its first word within one and a half ticks, leaving JetStream's `ackWait` (four ticks) a
/// margin of two and a half for a late tick or a busy machine.
async fn acknowledge(
    mut verdicts: mpsc::UnboundedReceiver<(Arc<Acker>, AckKind)>,
    held: Arc<parking_lot::Mutex<HashMap<u64, HeldEvent>>>,
    keep_alive: Duration,
) {
    let keep_alive = keep_alive.max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(keep_alive);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut batch = Vec::with_capacity(256);
    loop {
        tokio::select! {
            n = verdicts.recv_many(&mut batch, 256) => {
                if n == 0 {
                    return;
                }
                for (acker, kind) in batch.drain(..) {
                    if let Err(e) = acker.ack_with(kind).await {
                        tracing::warn!(error = %e, "JetStream acknowledgement failed; the event will be redelivered");
                    }
                }
            }
            _ = tick.tick() => {
                let now = Instant::now();
                let due: Vec<Arc<Acker>> = held
                    .lock()
                    .values()
                    .filter(|h| now.duration_since(h.since) >= keep_alive / 2)
                    .map(|h| Arc::clone(&h.acker))
                    .collect();
                for acker in due {
                    let _ = acker.ack_with(AckKind::Progress).await;
                }
            }
        }
    }
}

/// Acknowledges a JetStream message when its completion finishes.
struct JsAck {
    id: u64,
    held: Arc<parking_lot::Mutex<HashMap<u64, HeldEvent>>>,
    verdicts: mpsc::UnboundedSender<(Arc<Acker>, AckKind)>,
}

impl JsAck {
    fn end(&self, kind: AckKind) {
        let Some(held) = self.held.lock().remove(&self.id) else {
            return;
        };
        // The task ends only once every sender is gone, and this one is alive.
        let _ = self.verdicts.send((held.acker, kind));
    }
}

impl Ack for JsAck {
    fn ack(&self) {
        self.end(AckKind::Ack);
    }

    fn nak(&self) {
        self.end(AckKind::Nak(None));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_subjects() {
        assert_eq!(stream_name("default/my.broker"), "TF_default_my_broker");
        assert_eq!(subject("media/uploads", 7), "tf.media.uploads.7");
    }

    #[test]
    fn hashes_are_fixed_forever() {
        // Replicas of different versions must agree: these values may never change.
        assert_eq!(fnv1a_64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a_64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(partition_of("order-42", 16), partition_of("order-42", 16));
        assert_eq!(
            message_id("/shop", "order-1", 255),
            message_id("/shop", "order-1", 255)
        );
        assert_ne!(
            message_id("/shop", "order-1", 255),
            message_id("/shop", "order-1", 254)
        );
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(message_id("ab", "c", 1), message_id("a", "bc", 1));
        assert_eq!(message_id("", "", 0).len(), 32);
    }

    #[test]
    fn partitions_spread_keys() {
        let mut counts = [0u32; 16];
        for i in 0..16_000 {
            counts[partition_of(&format!("key-{i}"), 16) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 700 && c < 1300), "{counts:?}");
    }
}
