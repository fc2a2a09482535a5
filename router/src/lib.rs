//! The Triggerfish runtime: thin async drivers around `triggerfish-core`.
//!
//! Data flows ingress → [`store`] → [`shard`] drivers (match once per event) → per-trigger
//! queues in [`dispatch`] → [`sinks`]. `docs/ARCHITECTURE.md` draws the tasks, queues and
//! where backpressure comes from.
//!
//! - [`cli`]: the `triggerfish` command line; [`serve`]: start-up and shutdown.
//! - [`plan`]: config → validated plan (indexes compiled, destinations checked).
//! - [`runtime`]: the running router, snapshots and reload; [`reload`]: the file watcher.
//! - [`auth`]: sender authentication, event policies, rate limits, outbound tokens.
//! - [`ingress`]: HTTP and QUIC ingress; [`admin`]: health, readiness, metrics, config.
//! - [`quic`]: TLS and the client side of the QUIC protocol; [`send`]: `triggerfish send`.
//! - [`store`]: the seam between ingress and dispatch (memory, or NATS JetStream).
//! - [`scheduler`]: PingSources, run-time schedules and delayed events.
//! - [`sources`]: event sources (OSS via MNS, S3, GitHub, registries, a watched directory).
//! - [`shard`]: shard drivers; [`dispatch`]: delivery semantics; [`sinks`]: destinations.
//! - [`republish`]: replies and forwards to a broker, published with a bounded wait for room.
//! - [`tls`]: TLS for the HTTP listeners, reloaded when the files change.
//! - [`body`]: size-limited body reading; [`http_server`]: the shared accept loop;
//!   [`metrics`]: Prometheus metrics; [`open_files`]: the open-file limit and connection caps.

// rocketmq-client-rust's futures nest deeply enough that proving them `Send` needs more
// than the default recursion limit (its own crate sets 256).
#![recursion_limit = "512"]

pub mod admin;
pub mod auth;
pub mod body;
pub mod cli;
pub mod dispatch;
pub mod http_server;
pub mod ingress;
#[cfg(feature = "media")]
pub mod media;
pub mod metrics;
pub mod open_files;
pub mod plan;
pub mod quic;
pub mod reload;
pub mod republish;
pub mod runtime;
pub mod scheduler;
pub mod send;
pub mod serve;
pub mod shard;
pub mod sinks;
pub mod sources;
pub mod store;
pub mod tls;
