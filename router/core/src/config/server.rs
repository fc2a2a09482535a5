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
    /// Where Triggerfish keeps files: the `File` sinks named by ref, and later the local
    /// store. Relative paths are relative to the working directory. Defaults to `data`.
    pub data_dir: PathBuf,
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
        }
    }
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
    /// The webhook sources' endpoints (`GitHubSource`, `S3Source`, `RegistrySource`,
    /// `OssSource` push), each on its own path. Bound only when the config has such a source.
    /// Defaults to `127.0.0.1:8081`.
    pub webhooks: SocketAddr,
}

impl Default for ListenSpec {
    fn default() -> ListenSpec {
        ListenSpec {
            http: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            admin: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9090),
            webhooks: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8081),
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
    /// The most events it holds.
    pub events: NonZeroU32,
    /// The most bytes of events it holds. At least `limits.maxEventBytes`.
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
}
