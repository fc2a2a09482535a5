//! `triggerfish.dev/v1alpha1` `Server`: how the process listens, and its limits.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;

use serde::Deserialize;

use crate::config::duration::IsoDuration;
use crate::config::size::ByteSize;

/// `spec` of the `Server` document. A config holds at most one; without one, every field has
/// its default. Every field may be left out.
///
/// ```yaml
/// apiVersion: triggerfish.dev/v1alpha1
/// kind: Server
/// spec:
///   listen: {http: 0.0.0.0:8080, admin: 127.0.0.1:9090}
///   shards: 4
///   queues:
///     shard: {events: 65536, bytes: 64MiB}
///     trigger: {events: 4096, bytes: 16MiB}
///   limits: {maxRequestBytes: 4MiB, maxEventBytes: 256KiB, maxBatchEvents: 10000}
///   shutdownGracePeriod: PT30S
///   dataDir: /var/lib/triggerfish
/// ```
///
/// New sections (the store, TLS, QUIC, authentication) are added as further fields with
/// defaults, so existing files keep loading.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct ServerSpec {
    /// Listen addresses.
    pub listen: ListenSpec,
    /// How many shards (each with its own queue and matcher) to run. Unset: one per CPU core.
    pub shards: Option<NonZeroUsize>,
    /// Queue limits.
    pub queues: QueuesSpec,
    /// Request and event size limits.
    pub limits: LimitsSpec,
    /// How long a shutdown waits for in-flight deliveries, as an ISO-8601 duration.
    /// Defaults to `PT30S`.
    pub shutdown_grace_period: IsoDuration,
    /// Where Triggerfish keeps files: the `File` sinks named by ref, and the scheduler's
    /// state. Relative paths are relative to the working directory. Defaults to `data`.
    pub data_dir: PathBuf,
    /// Where accepted events wait: in memory (the default) or in NATS JetStream.
    pub store: StoreSpec,
}

impl Default for ServerSpec {
    fn default() -> ServerSpec {
        ServerSpec {
            listen: ListenSpec::default(),
            shards: None,
            queues: QueuesSpec::default(),
            limits: LimitsSpec::default(),
            shutdown_grace_period: IsoDuration::from_secs(30),
            data_dir: PathBuf::from("data"),
            store: StoreSpec::default(),
        }
    }
}

/// `spec.store`: where accepted events wait until they are delivered.
///
/// ```yaml
/// store: {kind: jetstream, url: "nats://nats:4222", streamReplicas: 3, partitions: 16}
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct StoreSpec {
    /// `memory` (default): bounded in-memory queues, lost if the process dies, like Knative's
    /// InMemoryChannel. `jetstream`: a NATS JetStream stream per broker; ingress answers only
    /// after JetStream stored the event, and delivery is at-least-once across crashes.
    pub kind: StoreKind,
    /// NATS server URL(s), comma-separated. Defaults to `nats://127.0.0.1:4222`.
    pub url: String,
    /// Replicas of each stream (1, or 3 on a NATS cluster). Defaults to 1.
    pub stream_replicas: NonZeroUsize,
    /// Partitions per broker stream: ordered triggers keep order per partition key, and
    /// deliver up to this many keys at once across all replicas. Defaults to 16.
    pub partitions: NonZeroU32,
    /// How long JetStream waits for a replica that stopped answering before it gives the
    /// replica's unacknowledged events to another one. A live replica keeps the events it holds
    /// (it tells JetStream it is still working on them every third of this), so this bounds
    /// the pause after a crash, not the length of a delivery or its retries. Defaults to
    /// `PT30S`.
    pub ack_wait: IsoDuration,
    /// Events of a broker's unordered triggers handed out and not yet acknowledged, across
    /// all replicas together: the in-flight window. It bounds how many events a crash can make
    /// JetStream deliver twice, and, with the subscribers' latency, the throughput
    /// (`maxAckPending / latency`). Defaults to 4096.
    pub max_ack_pending: NonZeroU32,
    /// How long streams keep events. Defaults to `P7D`.
    pub max_age: IsoDuration,
    /// How long ingress waits for JetStream to store an event before answering 503.
    /// Defaults to `PT5S`.
    pub publish_timeout: IsoDuration,
    /// A NATS credentials file (`.creds`), if the server requires one.
    pub credentials_file: Option<PathBuf>,
}

impl Default for StoreSpec {
    fn default() -> StoreSpec {
        StoreSpec {
            kind: StoreKind::Memory,
            url: "nats://127.0.0.1:4222".into(),
            stream_replicas: NonZeroUsize::MIN,
            partitions: NonZeroU32::new(16).unwrap_or(NonZeroU32::MIN),
            ack_wait: IsoDuration::from_secs(30),
            max_ack_pending: nonzero(4096),
            max_age: IsoDuration::from_secs(7 * 86_400),
            publish_timeout: IsoDuration::from_secs(5),
            credentials_file: None,
        }
    }
}

/// The kind of store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// In memory.
    #[default]
    Memory,
    /// NATS JetStream.
    Jetstream,
}

/// `spec.listen`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ListenSpec {
    /// The HTTP ingress (`POST /{namespace}/{broker}`). Defaults to `127.0.0.1:8080`.
    pub http: SocketAddr,
    /// The admin endpoints (`/healthz`, `/readyz`, `/metrics`, `/config`). Defaults to
    /// `127.0.0.1:9090`.
    pub admin: SocketAddr,
}

impl Default for ListenSpec {
    fn default() -> ListenSpec {
        ListenSpec {
            http: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            admin: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9090),
        }
    }
}

/// `spec.queues`: every queue is bounded in events and in bytes. A full queue pushes back on
/// its producer (ingress answers 429 with `Retry-After`); nothing is dropped silently.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueuesSpec {
    /// The queue in front of each shard. Defaults to 65536 events and 64MiB.
    pub shard: QueueLimits,
    /// The delivery queue of each trigger. Defaults to 4096 events and 16MiB.
    pub trigger: QueueLimits,
}

impl Default for QueuesSpec {
    fn default() -> QueuesSpec {
        QueuesSpec {
            shard: QueueLimits {
                events: nonzero(65_536),
                bytes: ByteSize::mib(64),
            },
            trigger: QueueLimits {
                events: nonzero(4096),
                bytes: ByteSize::mib(16),
            },
        }
    }
}

/// The limits of one queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueLimits {
    /// The most events it holds. For the shard queue, at least `limits.maxBatchEvents`: a
    /// batch is queued whole, and its events that share a partition key share a shard.
    pub events: NonZeroU32,
    /// The most bytes of events it holds. At least `limits.maxEventBytes`, and for the shard
    /// queue at least `limits.maxRequestBytes`, for the same reason.
    pub bytes: ByteSize,
}

/// `spec.limits`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct LimitsSpec {
    /// The largest request body accepted by the ingress (413 above it). Defaults to 4MiB.
    pub max_request_bytes: ByteSize,
    /// The largest event accepted, on the wire. The CloudEvents spec asks intermediaries to
    /// forward events up to 64KiB. Defaults to 256KiB.
    pub max_event_bytes: ByteSize,
    /// The most events in one batched request. Defaults to 10000.
    pub max_batch_events: NonZeroU32,
}

impl Default for LimitsSpec {
    fn default() -> LimitsSpec {
        LimitsSpec {
            max_request_bytes: ByteSize::mib(4),
            max_event_bytes: ByteSize::kib(256),
            max_batch_events: nonzero(10_000),
        }
    }
}

const fn nonzero(n: u32) -> NonZeroU32 {
    match NonZeroU32::new(n) {
        Some(n) => n,
        None => NonZeroU32::MIN,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_has_a_default() {
        let spec: ServerSpec = serde_norway::from_str("{}").unwrap();
        assert_eq!(spec, ServerSpec::default());
        assert_eq!(spec.listen.http.to_string(), "127.0.0.1:8080");
        assert_eq!(spec.listen.admin.to_string(), "127.0.0.1:9090");
        assert_eq!(spec.limits.max_event_bytes, ByteSize::kib(256));
        assert_eq!(spec.shards, None);
    }

    #[test]
    fn reads_typed_values() {
        let spec: ServerSpec = serde_norway::from_str(
            "listen: {http: \"[::]:80\"}\nshards: 2\nqueues: {trigger: {events: 10, bytes: 1MiB}}\nlimits: {maxEventBytes: 1024}\nshutdownGracePeriod: PT5S\ndataDir: /tmp/tf\n",
        )
        .unwrap();
        assert_eq!(spec.listen.http.to_string(), "[::]:80");
        assert_eq!(spec.listen.admin, ListenSpec::default().admin);
        assert_eq!(spec.shards, NonZeroUsize::new(2));
        assert_eq!(spec.queues.trigger.bytes, ByteSize::mib(1));
        assert_eq!(spec.queues.shard, QueuesSpec::default().shard);
        assert_eq!(spec.limits.max_event_bytes, ByteSize::b(1024));
        assert_eq!(spec.shutdown_grace_period, IsoDuration::from_secs(5));
        assert_eq!(spec.data_dir, PathBuf::from("/tmp/tf"));
    }

    #[test]
    fn reads_the_store() {
        let spec: ServerSpec = serde_norway::from_str(
            "store: {kind: jetstream, url: \"nats://a:4222,nats://b:4222\", streamReplicas: 3, maxAckPending: 100, ackWait: PT5S}\n",
        )
        .unwrap();
        assert_eq!(spec.store.kind, StoreKind::Jetstream);
        assert_eq!(spec.store.url, "nats://a:4222,nats://b:4222");
        assert_eq!(spec.store.stream_replicas.get(), 3);
        assert_eq!(spec.store.max_ack_pending.get(), 100);
        assert_eq!(spec.store.ack_wait, IsoDuration::from_secs(5));
        assert_eq!(spec.store.partitions, StoreSpec::default().partitions);
        assert_eq!(ServerSpec::default().store.kind, StoreKind::Memory);
    }
}
