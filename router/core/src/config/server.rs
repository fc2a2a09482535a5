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
///   listen: {http: 0.0.0.0:8080, admin: 127.0.0.1:9090, quic: 0.0.0.0:8443}
///   shards: 4
///   queues:
///     shard: {events: 65536, bytes: 64MiB}
///     trigger: {events: 4096, bytes: 16MiB}
///   limits: {maxRequestBytes: 4MiB, maxEventBytes: 256KiB, maxBatchEvents: 10000,
///            maxConnections: 10000, maxBufferedBytes: 64MiB}
///   shutdownGracePeriod: PT30S
///   dataDir: /var/lib/triggerfish
///   quic:
///     tls: {certFile: /etc/triggerfish/tls.crt, keyFile: /etc/triggerfish/tls.key}
///     maxConnections: 1024
///     maxStreamsPerConnection: 64
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
    /// Sender authentication, the default event policy, rate limits and the router's own
    /// identity toward subscribers.
    pub auth: AuthSpec,
    /// TLS for the HTTP listeners (and the QUIC listener's certificate when `quic.tls` is
    /// unset). Without it, the HTTP listeners speak plain HTTP.
    pub tls: Option<TlsSpec>,
    /// The QUIC ingress's TLS and limits, and how QUIC subscribers trust their peers.
    pub quic: QuicSpec,
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
            auth: AuthSpec::default(),
            tls: None,
            quic: QuicSpec::default(),
        }
    }
}

/// `spec.auth`.
///
/// ```yaml
/// auth:
///   defaultPolicy: allow-same-namespace
///   tokens:
///     - {identity: "system:serviceaccount:shop:checkout", tokenFile: /var/run/secrets/checkout}
///   oidc: {issuer: "https://kubernetes.default.svc", jwksFile: /etc/triggerfish/jwks.json}
///   rateLimits:
///     perSender: {eventsPerSecond: 1000, burst: 2000}
///     perBroker: {eventsPerSecond: 20000, burst: 40000}
///   outbound: {issuer: "https://triggerfish.example", signingKeyFile: /etc/triggerfish/key.pem}
/// ```
///
/// With neither `tokens` nor `oidc`, senders are anonymous and only policies that allow
/// everyone apply. With either, every request must carry a valid `Authorization: Bearer`
/// credential (`401` otherwise); a valid sender that no policy allows gets `403`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct AuthSpec {
    /// What applies to a broker that no `EventPolicy` targets: `allow-all` (the default, for
    /// local use), `allow-same-namespace` (Knative's default: senders whose identity is a
    /// service account of the broker's namespace, `system:serviceaccount:<ns>:<name>`), or
    /// `deny-all`.
    pub default_policy: DefaultPolicy,
    /// Static bearer tokens, each mapped to a sender identity.
    pub tokens: Vec<StaticTokenSpec>,
    /// JWT (OIDC) bearer tokens, verified against a JWKS.
    pub oidc: Option<OidcSpec>,
    /// Token buckets on ingress.
    pub rate_limits: RateLimitsSpec,
    /// The router's own identity toward subscribers whose destination names an `audience`.
    pub outbound: Option<OutboundSpec>,
}

/// What applies to a broker no `EventPolicy` targets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DefaultPolicy {
    /// Everyone may send.
    #[default]
    AllowAll,
    /// Senders of the broker's namespace may send.
    AllowSameNamespace,
    /// Nobody may send.
    DenyAll,
}

/// A secret read from a file or an environment variable (exactly one).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct SecretSource {
    /// A file holding the secret (trailing whitespace is ignored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// An environment variable holding it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<String>,
}

/// One static bearer token.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct StaticTokenSpec {
    /// The sender identity the token stands for, e.g. `system:serviceaccount:shop:checkout`.
    pub identity: String,
    /// A file holding the token.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the token.
    #[serde(default)]
    pub token_env: Option<String>,
}

/// JWT verification.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OidcSpec {
    /// Required `iss`.
    pub issuer: String,
    /// A JWKS file. Re-read on every refresh.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// A JWKS URL, fetched at start and on every refresh (and, at most every 30 s, when a
    /// token names an unknown key).
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// How often keys are refreshed. Defaults to `PT5M`.
    #[serde(default)]
    pub refresh: Option<IsoDuration>,
    /// Clock skew allowed on `exp` and `nbf`. Defaults to `PT60S`.
    #[serde(default)]
    pub leeway: Option<IsoDuration>,
    /// The audience a token for broker `ns/name` must carry; `{namespace}` and `{name}` are
    /// replaced. Defaults to Knative's `eventing.knative.dev/broker/{namespace}/{name}`.
    #[serde(default)]
    pub audience: Option<String>,
}

/// `rateLimits`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct RateLimitsSpec {
    /// A bucket per sender identity (anonymous senders share one).
    pub per_sender: Option<RateSpec>,
    /// A bucket per broker.
    pub per_broker: Option<RateSpec>,
}

/// A token bucket, counted in events.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RateSpec {
    /// Sustained rate.
    pub events_per_second: NonZeroU32,
    /// Bucket size: the largest burst. Defaults to one second's worth.
    #[serde(default)]
    pub burst: Option<NonZeroU32>,
}

/// Tokens the router mints for subscribers.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct OutboundSpec {
    /// `iss` of minted tokens.
    pub issuer: String,
    /// `sub` of minted tokens. Defaults to `system:serviceaccount:triggerfish:router`.
    #[serde(default)]
    pub subject: Option<String>,
    /// A PEM private key (RSA or EC P-256) that signs them (RS256 or ES256).
    pub signing_key_file: PathBuf,
    /// A `kid` to put in the header, matching the key's entry in the JWKS subscribers use.
    #[serde(default)]
    pub key_id: Option<String>,
    /// Lifetime of a minted token. Defaults to `PT10M`; tokens are reused until a minute before
    /// they expire.
    #[serde(default)]
    pub token_ttl: Option<IsoDuration>,
}

/// `spec.tls`: a certificate and key from PEM files, re-read when they change (checked every
/// 5 seconds), and optional client-certificate verification (mTLS).
///
/// ```yaml
/// tls:
///   certFile: /etc/triggerfish/tls.crt
///   keyFile: /etc/triggerfish/tls.key
///   clientCaFile: /etc/triggerfish/clients-ca.crt   # optional: mTLS
///   clientAuth: require                             # or optional
///   listeners: [http, admin, webhooks]              # the default
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsSpec {
    /// The certificate chain, leaf first (PEM).
    pub cert_file: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to. Without it, clients are
    /// not asked for a certificate.
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// With `clientCaFile`: `require` (the default) refuses clients without a valid
    /// certificate; `optional` accepts them without one, but still refuses invalid ones.
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Which HTTP listeners use TLS. Defaults to all of them.
    #[serde(default = "TlsSpec::all_listeners")]
    pub listeners: Vec<TlsListener>,
}

impl TlsSpec {
    fn all_listeners() -> Vec<TlsListener> {
        vec![TlsListener::Http, TlsListener::Admin, TlsListener::Webhooks]
    }

    /// Whether `listener` uses TLS.
    pub fn covers(&self, listener: TlsListener) -> bool {
        self.listeners.contains(&listener)
    }
}

/// Whether client certificates are required.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClientAuth {
    /// Clients must present a certificate that chains to `clientCaFile`.
    #[default]
    Require,
    /// Clients may present one; if they do, it must chain to `clientCaFile`.
    Optional,
}

/// An HTTP listener that TLS can cover.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsListener {
    /// The ingress (`listen.http`).
    Http,
    /// The admin endpoints (`listen.admin`).
    Admin,
    /// The webhook sources' listener (`listen.webhooks`).
    Webhooks,
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
    /// (it tells JetStream it is still working on them every quarter of this), so this bounds
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
    /// The webhook sources' endpoints (`GitHubSource`, `S3Source`, `RegistrySource`,
    /// `OssSource` push), each on its own path. Bound only when the config has such a source.
    /// Defaults to `127.0.0.1:8081`.
    pub webhooks: SocketAddr,
    /// The QUIC ingress (UDP, ALPN `triggerfish/1`, see `docs/quic-protocol.md`): an address,
    /// or `off`. Defaults to `127.0.0.1:8443`.
    pub quic: QuicListen,
}

/// `spec.listen.quic`: a UDP address, or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuicListen(pub Option<SocketAddr>);

impl Default for QuicListen {
    fn default() -> QuicListen {
        QuicListen(Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8443)))
    }
}

impl<'de> Deserialize<'de> for QuicListen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<QuicListen, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = QuicListen;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a UDP address such as 0.0.0.0:8443, or off")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<QuicListen, E> {
                if v == "off" {
                    return Ok(QuicListen(None));
                }
                v.parse().map(|a| QuicListen(Some(a))).map_err(|_| {
                    E::custom(format!(
                        "{v:?} is not a UDP address such as 0.0.0.0:8443, or off"
                    ))
                })
            }
            // YAML 1.1 readers turn a bare `off` into false.
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<QuicListen, E> {
                if v {
                    Err(E::custom(
                        "true is not a UDP address; write an address, or off",
                    ))
                } else {
                    Ok(QuicListen(None))
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// `spec.quic`: TLS and limits of the QUIC ingress, and the trust of QUIC subscribers.
///
/// ```yaml
/// quic:
///   tls: {certFile: tls.crt, keyFile: tls.key}
///   maxConnections: 1024
///   maxStreamsPerConnection: 64
///   maxBufferedBytes: 64MiB
///   idleTimeout: PT30S
///   frameTimeout: PT10S
///   threads: 1
///   client: {caFile: peers-ca.pem, pinnedSha256: ["AB:CD:..."]}
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct QuicSpec {
    /// The server's certificate. Without one, `spec.tls`'s certificate and key are used (read
    /// at start); without either, a self-signed development certificate is generated into
    /// `{dataDir}/quic/` on first start and reused after; its SHA-256 fingerprint is logged at
    /// every start, for clients to pin.
    pub tls: Option<TlsFiles>,
    /// The most client connections at once; more are refused. Defaults to 1024.
    pub max_connections: NonZeroU32,
    /// The most streams (batches in flight) a client may open at once on one connection;
    /// QUIC's stream limit makes the client wait for more. Defaults to 64.
    pub max_streams_per_connection: NonZeroU32,
    /// The most bytes of frame bodies being read or decoded, over all connections, counted as
    /// they arrive. A stream whose next bytes do not fit waits without reading, so QUIC flow
    /// control holds its sender; after a second without room its frame is answered 429. At
    /// least `limits.maxRequestBytes`. Defaults to 64MiB.
    pub max_buffered_bytes: ByteSize,
    /// A connection with no traffic for this long is closed. Defaults to `PT30S`.
    pub idle_timeout: IsoDuration,
    /// How long a stream may take to deliver its whole frame once opened (slow senders are
    /// reset with `TIMEOUT`). Defaults to `PT10S`.
    pub frame_timeout: IsoDuration,
    /// Gives the QUIC ingress a runtime of its own with this many threads: the endpoint (every
    /// packet of every connection), the connections and their streams then run apart from
    /// matching and delivery, and every frame's events cross from those threads to the shard
    /// workers. On 2 cores it made little difference either way (`bench/README.md`); on a
    /// machine whose workers are saturated by deliveries it keeps acks from waiting behind
    /// them. One connection is served by one thread at a time. Unset: QUIC shares the main
    /// runtime's workers.
    pub threads: Option<NonZeroUsize>,
    /// How QUIC subscribers (`quic://` destinations) verify the servers they deliver to.
    pub client: QuicClientSpec,
}

impl Default for QuicSpec {
    fn default() -> QuicSpec {
        QuicSpec {
            tls: None,
            max_connections: nonzero(1024),
            max_streams_per_connection: nonzero(64),
            max_buffered_bytes: ByteSize::mib(64),
            idle_timeout: IsoDuration::from_secs(30),
            frame_timeout: IsoDuration::from_secs(10),
            threads: None,
            client: QuicClientSpec::default(),
        }
    }
}

/// A certificate chain and its private key, as PEM files.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TlsFiles {
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// `spec.quic.client`: how QUIC subscribers verify servers. The system's trusted roots are
/// always trusted; these add to them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "camelCase")]
pub struct QuicClientSpec {
    /// PEM file of further CA certificates to trust.
    pub ca_file: Option<PathBuf>,
    /// SHA-256 fingerprints of server certificates trusted as they are (for self-signed
    /// development certificates): 64 hex digits, colons allowed.
    pub pinned_sha256: Vec<String>,
    /// Accept any server certificate. Only for experiments: anyone on the path can read and
    /// change the events. Logged as a warning at every start.
    pub danger_accept_invalid_certs: bool,
}

impl Default for ListenSpec {
    fn default() -> ListenSpec {
        ListenSpec {
            http: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8080),
            admin: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9090),
            webhooks: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 8081),
            quic: QuicListen::default(),
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
    /// The most connections each HTTP listener (ingress, admin, webhooks) holds open. At the
    /// limit a listener stops accepting until one closes; new clients wait in the kernel's
    /// accept queue. Unset: 10000, or a quarter of the process's open-file limit if that is
    /// lower, so that a flood of connections leaves file descriptors for deliveries and files.
    /// Only a restart changes it.
    pub max_connections: Option<NonZeroU32>,
    /// The most bytes of request bodies each HTTP listener that reads them (ingress, webhooks,
    /// `triggerfish worker`) holds while reading them, over all its connections: a body takes
    /// its share as its bytes arrive, until its events are queued or refused (webhooks: until
    /// the source has published them). A request that finds no room within a second is answered 429 with
    /// `Retry-After`. At least `maxRequestBytes`. Defaults to 64MiB (as `quic.maxBufferedBytes`).
    /// Only a restart changes it.
    pub max_buffered_bytes: ByteSize,
}

impl Default for LimitsSpec {
    fn default() -> LimitsSpec {
        LimitsSpec {
            max_request_bytes: ByteSize::mib(4),
            max_event_bytes: ByteSize::kib(256),
            max_batch_events: nonzero(10_000),
            max_connections: None,
            max_buffered_bytes: ByteSize::mib(64),
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
        assert_eq!(
            spec.listen.quic.0.map(|a| a.to_string()).as_deref(),
            Some("127.0.0.1:8443")
        );
        assert_eq!(spec.quic.max_streams_per_connection.get(), 64);
        assert_eq!(spec.limits.max_connections, None);
        let spec: ServerSpec = serde_norway::from_str("limits: {maxConnections: 64}").unwrap();
        assert_eq!(spec.limits.max_connections, NonZeroU32::new(64));
        let err = serde_norway::from_str::<ServerSpec>("limits: {maxConnections: 0}").unwrap_err();
        assert!(err.to_string().contains("nonzero"), "{err}");
    }

    #[test]
    fn quic_listen_is_an_address_or_off() {
        let spec: ServerSpec = serde_norway::from_str("listen: {quic: off}").unwrap();
        assert_eq!(spec.listen.quic, QuicListen(None));
        let spec: ServerSpec = serde_norway::from_str("listen: {quic: \"off\"}").unwrap();
        assert_eq!(spec.listen.quic, QuicListen(None));
        let spec: ServerSpec = serde_norway::from_str("listen: {quic: \"[::]:443\"}").unwrap();
        assert_eq!(spec.listen.quic.0.unwrap().to_string(), "[::]:443");
        let err = serde_norway::from_str::<ServerSpec>("listen: {quic: somewhere}").unwrap_err();
        assert!(err.to_string().contains("not a UDP address"), "{err}");
        let spec: ServerSpec = serde_norway::from_str(
            "quic: {tls: {certFile: c.pem, keyFile: k.pem}, maxStreamsPerConnection: 8, threads: 3, client: {pinnedSha256: [ab]}}",
        )
        .unwrap();
        assert_eq!(spec.quic.tls.unwrap().cert_file, PathBuf::from("c.pem"));
        assert_eq!(spec.quic.max_streams_per_connection.get(), 8);
        assert_eq!(spec.quic.threads, NonZeroUsize::new(3));
        assert_eq!(spec.quic.client.pinned_sha256, ["ab"]);
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
