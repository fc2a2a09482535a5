//! Prometheus metrics, named `triggerfish_<subsystem>_<name>_<unit>` (CONVENTIONS §6).
//!
//! Labels have bounded cardinality: broker and trigger names come from the config, outcomes and
//! reasons from fixed enums; never event ids or URLs. Hot paths never look metrics up: brokers
//! and triggers take handles (clones of the same atomics) when they are built.

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Label set naming a broker.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BrokerLabels {
    /// `namespace/name`.
    pub broker: String,
}

/// Label set naming a trigger.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TriggerLabels {
    /// `namespace/name` of the broker.
    pub broker: String,
    /// `namespace/name` of the trigger.
    pub trigger: String,
}

impl TriggerLabels {
    /// The labels of `plan`'s trigger.
    pub fn of(plan: &crate::plan::TriggerPlan) -> TriggerLabels {
        TriggerLabels {
            broker: plan.broker.clone(),
            trigger: plan.key.clone(),
        }
    }
}

/// How an ingress request or event ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum IngressOutcome {
    /// Accepted (202).
    Accepted,
    /// Malformed (400, 405, 415).
    Rejected,
    /// Too large (413).
    TooLarge,
    /// Queues full (429).
    Throttled,
    /// Not accepting (503: shutting down, store unavailable).
    Unavailable,
    /// Unknown broker (404).
    NotFound,
    /// No valid credential (401).
    Unauthorized,
    /// A sender no event policy allows (403).
    Forbidden,
    /// Over a sender's or broker's rate limit (429).
    RateLimited,
    /// An event matches a trigger that is falling behind (429).
    Backlogged,
    /// An `OPTIONS` request: the CloudEvents webhook validation handshake (200), no events.
    Preflight,
}

/// Ingress label set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct IngressLabels {
    /// `namespace/name`, or `unknown` for requests to a broker that does not exist.
    pub broker: String,
    /// The outcome.
    pub outcome: IngressOutcome,
}

/// How a delivery attempt ended.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum AttemptOutcome {
    /// 2xx.
    Success,
    /// Failed, retryable.
    Retryable,
    /// Failed, not retryable.
    Permanent,
}

/// Delivery-attempt label set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    /// `namespace/name` of the trigger.
    pub trigger: String,
    /// The outcome.
    pub outcome: AttemptOutcome,
}

/// Failed-attempt label set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    /// `namespace/name` of the trigger.
    pub trigger: String,
    /// What went wrong ([`triggerfish_core::delivery::Cause::label`]): `http_503`, `timeout`,
    /// `connect`, ...
    pub cause: String,
}

/// Why an accepted event was dropped (delivered nowhere, not even to a dead-letter sink).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum DropReason {
    /// Delivery failed and the trigger has no dead-letter sink.
    NoDeadLetterSink,
    /// Delivery failed and so did the dead-letter sink.
    DeadLetterFailed,
    /// A reply whose `knativebrokerttl` ran out (a reply loop).
    TtlExhausted,
    /// The broker was removed by a reload before the event was matched.
    BrokerRemoved,
    /// The process stopped before the event was delivered.
    Shutdown,
}

/// Drop label set.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    /// `namespace/name` of the broker.
    pub broker: String,
    /// Why.
    pub reason: DropReason,
}

/// A queue whose depth is reported.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabels {
    /// `shard` or `trigger`.
    pub queue: &'static str,
    /// The shard number or the trigger's `namespace/name`.
    pub name: String,
}

/// Why a QUIC stream was reset.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QuicResetLabels {
    /// The stream code, in snake case (`malformed`, `frame_too_large`, ...).
    pub code: &'static str,
}

/// An HTTP listener.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    /// `ingress`, `admin`, `webhooks` (the router) or `worker` (`triggerfish worker`).
    pub listener: &'static str,
}

/// Config reload outcome.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// `applied` or `rejected`.
    pub outcome: &'static str,
}

/// Registers the HTTP listeners' connection metrics in `registry` (the router's, or
/// `triggerfish worker`'s own): open connections, and times a listener stopped accepting at
/// its limit, both by listener.
pub fn register_http_connections(
    registry: &mut Registry,
) -> (
    Family<ListenerLabels, Gauge>,
    Family<ListenerLabels, Counter>,
) {
    let (open, waits) = (Family::default(), Family::default());
    registry.register(
        "http_connections",
        "Open connections, per HTTP listener",
        open.clone(),
    );
    registry.register(
        "http_connection_limit_waits",
        "Times an HTTP listener stopped accepting at limits.maxConnections",
        waits.clone(),
    );
    (open, waits)
}

fn batch_histogram() -> Histogram {
    // 1 .. 1,024 events.
    Histogram::new(exponential_buckets(1.0, 2.0, 11))
}

fn latency_histogram() -> Histogram {
    // 100 µs .. ~6.5 s.
    Histogram::new(exponential_buckets(0.0001, 2.0, 17))
}

/// Every metric of the process.
pub struct Metrics {
    registry: Registry,
    /// Ingress requests by broker and outcome.
    pub ingress_requests: Family<IngressLabels, Counter>,
    /// Ingress events by broker and outcome.
    pub ingress_events: Family<IngressLabels, Counter>,
    /// Ingress request handling time.
    pub ingress_duration: Histogram,
    /// Events matched, per trigger.
    pub matches: Family<TriggerLabels, Counter>,
    /// Times a trigger's queue became backlogged, so that ingress refused its events.
    pub backlogs: Family<TriggerLabels, Counter>,
    /// Events that matched no trigger, per broker.
    pub unmatched: Family<BrokerLabels, Counter>,
    /// Delivery attempts by trigger and outcome.
    pub attempts: Family<AttemptLabels, Counter>,
    /// Failed delivery attempts, by trigger and cause.
    pub failures: Family<FailureLabels, Counter>,
    /// Retries scheduled, per trigger.
    pub retries: Family<TriggerLabels, Counter>,
    /// Events sent to a dead-letter sink, per trigger.
    pub dead_lettered: Family<TriggerLabels, Counter>,
    /// Events dropped, by broker and reason.
    pub dropped: Family<DropLabels, Counter>,
    /// Replies fed back into the broker, per trigger.
    pub replies: Family<TriggerLabels, Counter>,
    /// Replies the broker refused (its queues, or a matched trigger's, full), per trigger: the
    /// events they answer were dead-lettered or dropped.
    pub replies_refused: Family<TriggerLabels, Counter>,
    /// Events waiting in a queue.
    pub queue_depth: Family<QueueLabels, Gauge>,
    /// Time from acceptance to successful delivery, per trigger.
    pub delivery_latency: Family<TriggerLabels, Histogram>,
    /// Events per batched request or QUIC frame to a trigger's subscriber.
    pub delivery_batch_events: Family<TriggerLabels, Histogram>,
    /// Config reloads by outcome.
    pub reloads: Family<ReloadLabels, Counter>,
    /// Events a durable store handed out again, per broker (JetStream: after a replica died
    /// or lost its connection before acknowledging them).
    pub redelivered: Family<BrokerLabels, Counter>,
    /// Media worker pools (`triggerfish_media_*`).
    #[cfg(feature = "media")]
    pub media: triggerfish_workers::MediaMetrics,
    /// Open QUIC ingress connections (handshakes included).
    pub quic_connections: Gauge,
    /// QUIC connections refused at the connection limit.
    pub quic_connections_refused: Counter,
    /// QUIC handshakes that failed (untrusted peers, no common ALPN, timeouts).
    pub quic_handshake_failures: Counter,
    /// QUIC streams reset instead of answered, by code.
    pub quic_resets: Family<QuicResetLabels, Counter>,
    /// Open connections, per HTTP listener.
    pub http_connections: Family<ListenerLabels, Gauge>,
    /// Times an HTTP listener stopped accepting at `limits.maxConnections`.
    pub http_connection_limit_waits: Family<ListenerLabels, Counter>,
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("triggerfish");
        let ingress_requests = Family::default();
        let ingress_events = Family::default();
        let ingress_duration = latency_histogram();
        let matches = Family::default();
        let backlogs = Family::default();
        let unmatched = Family::default();
        let attempts = Family::default();
        let failures = Family::default();
        let retries = Family::default();
        let dead_lettered = Family::default();
        let dropped = Family::default();
        let replies = Family::default();
        let replies_refused = Family::default();
        let queue_depth = Family::default();
        let delivery_latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        let delivery_batch_events =
            Family::new_with_constructor(batch_histogram as fn() -> Histogram);
        let reloads = Family::default();
        let redelivered = Family::default();
        registry.register(
            "ingress_requests",
            "Ingress HTTP and QUIC requests",
            ingress_requests.clone(),
        );
        registry.register(
            "ingress_events",
            "Events received at ingress",
            ingress_events.clone(),
        );
        registry.register_with_unit(
            "ingress_request_duration",
            "Time to read, decode and enqueue one ingress request",
            prometheus_client::registry::Unit::Seconds,
            ingress_duration.clone(),
        );
        registry.register(
            "trigger_matches",
            "Events matched by a trigger",
            matches.clone(),
        );
        registry.register(
            "trigger_backlogs",
            "Times a trigger's queue became backlogged (three quarters full): ingress refused the events it matched with 429 until the queue was half empty",
            backlogs.clone(),
        );
        registry.register(
            "broker_unmatched",
            "Events that matched no trigger",
            unmatched.clone(),
        );
        registry.register("delivery_attempts", "Delivery attempts", attempts.clone());
        registry.register(
            "delivery_failures",
            "Failed delivery attempts by cause: http_<status>, timeout, connect, reset, tls, protocol, encode, unavailable",
            failures.clone(),
        );
        registry.register(
            "delivery_retries",
            "Retries scheduled after a failed attempt",
            retries.clone(),
        );
        registry.register(
            "delivery_dead_lettered",
            "Events sent to a dead-letter sink",
            dead_lettered.clone(),
        );
        registry.register(
            "delivery_dropped",
            "Accepted events delivered nowhere",
            dropped.clone(),
        );
        registry.register(
            "delivery_replies",
            "Reply events fed back into the broker",
            replies.clone(),
        );
        registry.register(
            "delivery_replies_refused",
            "Replies the broker refused (full queues, such as the replying trigger's own in a reply loop); the events they answer were dead-lettered or dropped",
            replies_refused.clone(),
        );
        registry.register_with_unit(
            "queue_depth",
            "Events waiting in a queue",
            prometheus_client::registry::Unit::Other("events".into()),
            queue_depth.clone(),
        );
        registry.register_with_unit(
            "delivery_latency",
            "Time from acceptance at ingress to a successful delivery",
            prometheus_client::registry::Unit::Seconds,
            delivery_latency.clone(),
        );
        registry.register_with_unit(
            "delivery_batch",
            "Events per batched request (spec.batch) or QUIC frame sent to a trigger's subscriber",
            prometheus_client::registry::Unit::Other("events".into()),
            delivery_batch_events.clone(),
        );
        registry.register("config_reloads", "Config reloads", reloads.clone());
        registry.register(
            "store_redelivered",
            "Events the durable store handed out again (a replica died or lost NATS before acknowledging them)",
            redelivered.clone(),
        );
        #[cfg(feature = "media")]
        let media = {
            let media = triggerfish_workers::MediaMetrics::new();
            media.register(&mut registry);
            media
        };
        let quic_connections = Gauge::default();
        let quic_connections_refused = Counter::default();
        let quic_handshake_failures = Counter::default();
        let quic_resets = Family::default();
        let (http_connections, http_connection_limit_waits) =
            register_http_connections(&mut registry);
        registry.register(
            "quic_connections",
            "Open QUIC ingress connections",
            quic_connections.clone(),
        );
        registry.register(
            "quic_connections_refused",
            "QUIC connections refused at the connection limit",
            quic_connections_refused.clone(),
        );
        registry.register(
            "quic_handshake_failures",
            "QUIC handshakes that failed",
            quic_handshake_failures.clone(),
        );
        registry.register(
            "quic_stream_resets",
            "QUIC streams reset instead of answered, by code",
            quic_resets.clone(),
        );
        Metrics {
            registry,
            ingress_requests,
            ingress_events,
            ingress_duration,
            matches,
            backlogs,
            unmatched,
            attempts,
            failures,
            retries,
            dead_lettered,
            dropped,
            replies,
            replies_refused,
            queue_depth,
            delivery_latency,
            delivery_batch_events,
            reloads,
            redelivered,
            #[cfg(feature = "media")]
            media,
            quic_connections,
            quic_connections_refused,
            quic_handshake_failures,
            quic_resets,
            http_connections,
            http_connection_limit_waits,
        }
    }

    /// The registry, for components that register metrics of their own.
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// Renders every metric in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Label values are the variant names in snake case (`no_dead_letter_sink`), as Prometheus
/// conventions expect.
macro_rules! snake_case_label_value {
    ($($t:ty),*) => {$(
        impl EncodeLabelValue for $t {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
                let name = format!("{self:?}");
                for (i, c) in name.chars().enumerate() {
                    if c.is_ascii_uppercase() {
                        if i > 0 {
                            encoder.write_char('_')?;
                        }
                        encoder.write_char(c.to_ascii_lowercase())?;
                    } else {
                        encoder.write_char(c)?;
                    }
                }
                Ok(())
            }
        }
    )*};
}

snake_case_label_value!(IngressOutcome, AttemptOutcome, DropReason);
