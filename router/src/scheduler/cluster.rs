//! The scheduler's state in a cluster: JetStream key-value buckets shared by every replica.
//!
//! - Bucket `TF_SCHEDULER` holds the shared state: `s.<namespace>.<name>` a run-time schedule,
//!   `p.<id>` a delayed event, `l.<hash>` the last tick of a `catchUp` schedule. Every replica
//!   writes the requests it receives there and mirrors the bucket through a watch, so every
//!   replica knows every schedule and delayed event.
//! - Bucket `TF_SCHEDULER_LEASE` holds one key, `leader`, with a 10-second age limit
//!   ([`LEASE_TTL`]). The replica that holds it fires ticks and due events; it renews the key
//!   every 3 seconds with compare-and-set on its revision. The others try to `create` it twice a
//!   second. When the leader dies, the key expires at most `LEASE_TTL` after its last renewal
//!   and another replica takes over within half a second: ticks due in between (at most
//!   `LEASE_TTL` + 0.5 s of them) are not fired, unless the schedule has `catchUp`.
//! - A leader fires only while its lease is certainly alive: until `LEASE_TTL` − 1 s after it
//!   sent its last successful renewal, by its own monotonic clock. A leader that was paused
//!   (a stopped process, a long GC-like stall of the host) therefore stops firing on its own
//!   when it wakes, before it even learns that another replica took over.
//!
//! Exactly once: a tick's event id is derived from the schedule and the tick time, and a delayed
//! event keeps its own id, and the JetStream store deduplicates publishes by id. So a tick or a
//! delayed event fired twice around a change of leader reaches a broker once.

use std::time::Duration;

use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use futures::StreamExt;
use tokio_util::sync::CancellationToken;

/// The state bucket.
const STATE_BUCKET: &str = "TF_SCHEDULER";
/// The lease bucket.
const LEASE_BUCKET: &str = "TF_SCHEDULER_LEASE";
/// How long start-up keeps trying to create a bucket.
const BUCKET_WITHIN: Duration = Duration::from_secs(30);
/// How long a lease lives without renewal.
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often the leader renews.
const LEASE_PERIOD: Duration = Duration::from_secs(3);
/// How often followers try to take over.
const FOLLOW_PERIOD: Duration = Duration::from_millis(500);
/// How long before the lease could expire on the server the leader stops firing.
const LEASE_MARGIN: Duration = Duration::from_secs(1);

/// Whether this replica may fire ticks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lease {
    /// One process, no lease: always.
    Always,
    /// Until this instant (the lease's certain lifetime).
    Until(std::time::Instant),
    /// Another replica leads, or nobody does yet.
    None,
}

impl Lease {
    /// Whether the lease is held at `now`.
    pub fn held(&self, now: std::time::Instant) -> bool {
        match self {
            Lease::Always => true,
            Lease::Until(end) => now < *end,
            Lease::None => false,
        }
    }
}

/// A change seen in the state bucket.
pub enum Change {
    /// A key was written.
    Put(String, Bytes),
    /// A key was deleted.
    Delete(String),
}

/// Opens a key-value bucket, creating its backing stream first when needed.
///
/// The stream is created by hand, with the fields every JetStream server since 2.9 knows:
/// `create_key_value` of async-nats 0.51 sends settings that a 2.9 server (Debian 12's) answers
/// in a form the client cannot parse.
async fn bucket(
    js: &jetstream::Context,
    name: &str,
    replicas: usize,
    max_age: Option<Duration>,
) -> Result<kv::Store, ClusterError> {
    let config = stream::Config {
        name: format!("KV_{name}"),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        max_age: max_age.unwrap_or_default(),
        num_replicas: replicas,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    // A NATS cluster that has just formed may not know all its peers yet ("no suitable peers
    // for placement") and a restarting one may time out: try for a while before giving up.
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(200);
    loop {
        match js.get_or_create_stream(config.clone()).await {
            Ok(_) => break,
            Err(e) if started.elapsed() < BUCKET_WITHIN => {
                tracing::warn!(bucket = name, error = %e, retry_in = ?pause, "cannot create the scheduler bucket yet; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(ClusterError(format!("bucket {name}: {e}"))),
        }
    }
    js.get_key_value(name)
        .await
        .map_err(|e| ClusterError(format!("bucket {name}: {e}")))
}

/// The buckets.
#[derive(Clone)]
pub struct ClusterState {
    state: kv::Store,
    lease: kv::Store,
    id: String,
}

/// Why the buckets are unusable.
#[derive(Debug, thiserror::Error)]
#[error("scheduler state in JetStream: {0}")]
pub struct ClusterError(String);

impl ClusterState {
    /// Opens (or creates) the buckets, replicated like the streams.
    pub async fn open(
        js: &jetstream::Context,
        replicas: usize,
    ) -> Result<ClusterState, ClusterError> {
        let state = bucket(js, STATE_BUCKET, replicas, None).await?;
        let lease = bucket(js, LEASE_BUCKET, replicas, Some(LEASE_TTL)).await?;
        let id = format!(
            "{}-{}-{:08x}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "triggerfish".into()),
            std::process::id(),
            fastrand::u32(..)
        );
        Ok(ClusterState { state, lease, id })
    }

    /// This replica's lease id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Creates `key` unless it exists; returns the existing value when it does.
    pub async fn create(&self, key: &str, value: Bytes) -> Result<Option<Bytes>, String> {
        match self.state.create(key, value).await {
            Ok(_) => Ok(None),
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                self.state.get(key).await.map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// Writes `key`.
    pub async fn put(&self, key: &str, value: Bytes) -> Result<(), String> {
        self.state
            .put(key, value)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Deletes `key`.
    pub async fn delete(&self, key: &str) -> Result<(), String> {
        self.state.delete(key).await.map_err(|e| e.to_string())
    }

    /// Streams every current value, then every change, until `stop`.
    pub async fn watch(&self, changes: tokio::sync::mpsc::Sender<Change>, stop: CancellationToken) {
        let mut pause = Duration::from_millis(200);
        while !stop.is_cancelled() {
            let mut watch = match self.state.watch_with_history(">").await {
                Ok(w) => w,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot watch the scheduler state; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            loop {
                let entry = tokio::select! {
                    e = watch.next() => e,
                    () = stop.cancelled() => return,
                };
                let change = match entry {
                    Some(Ok(entry)) => match entry.operation {
                        kv::Operation::Put => Change::Put(entry.key, entry.value),
                        kv::Operation::Delete | kv::Operation::Purge => Change::Delete(entry.key),
                    },
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "scheduler state watch failed; watching again");
                        break;
                    }
                    None => break,
                };
                if changes.send(change).await.is_err() {
                    return;
                }
            }
        }
    }

    /// Keeps trying to be the leader, and keeps the lease while it is: `leader` says until
    /// when this replica holds it.
    pub async fn lead(&self, leader: tokio::sync::watch::Sender<Lease>, stop: CancellationToken) {
        let mut revision: Option<u64> = None;
        loop {
            let value = Bytes::from(self.id.clone());
            // The server counts the lease's age from when it stores the write, which is after
            // this instant: a lifetime counted from here is on the safe side.
            let attempt = std::time::Instant::now();
            revision = match revision {
                Some(r) => match self.lease.update("leader", value, r).await {
                    Ok(r) => Some(r),
                    // A timeout may hide a write that went through: look before giving up.
                    Err(e) => match self.still_ours().await {
                        Some(r) => Some(r),
                        None => {
                            tracing::warn!(error = %e, "scheduler lease lost");
                            None
                        }
                    },
                },
                None => match self.lease.create("leader", value).await {
                    Ok(r) => {
                        tracing::info!(id = %self.id, "this replica now leads the scheduler");
                        Some(r)
                    }
                    // Ours already, from a renewal whose answer was lost.
                    Err(_) => self.still_ours().await,
                },
            };
            leader.send_replace(match revision {
                Some(_) => Lease::Until(attempt + LEASE_TTL - LEASE_MARGIN),
                None => Lease::None,
            });
            let period = if revision.is_some() {
                LEASE_PERIOD
            } else {
                FOLLOW_PERIOD
            };
            tokio::select! {
                () = tokio::time::sleep(period) => {}
                () = stop.cancelled() => {
                    if revision.is_some() {
                        leader.send_replace(Lease::None);
                        // Hand over at once rather than after the lease expires.
                        let _ = self.lease.delete("leader").await;
                    }
                    return;
                }
            }
        }
    }

    /// The lease's revision, if the lease exists and names this replica.
    async fn still_ours(&self) -> Option<u64> {
        match self.lease.entry("leader").await {
            Ok(Some(entry))
                if entry.operation == kv::Operation::Put && entry.value == self.id.as_bytes() =>
            {
                Some(entry.revision)
            }
            _ => None,
        }
    }
}
