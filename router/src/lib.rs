//! The Triggerfish runtime: thin async drivers around `triggerfish-core`.
//!
//! Data flows ingress → [`store`] → [`shard`] drivers (match once per event) → per-trigger
//! queues in [`dispatch`] → [`sinks`]. `docs/ARCHITECTURE.md` draws the tasks, queues and
//! where backpressure comes from.
//!
//! - [`cli`]: the `triggerfish` command line; [`serve`]: start-up and shutdown.
//! - [`plan`]: config → validated plan (indexes compiled, destinations checked).
//! - [`runtime`]: the running router, snapshots and reload; [`reload`]: the file watcher.
//! - [`ingress`]: HTTP ingress; [`admin`]: health, readiness, metrics, config.
//! - [`store`]: the seam between ingress and dispatch (memory today).
//! - [`shard`]: shard drivers; [`dispatch`]: delivery semantics; [`sinks`]: destinations.
//! - [`body`]: size-limited body reading; [`http_server`]: the shared accept loop;
//!   [`metrics`]: Prometheus metrics.

pub mod admin;
pub mod body;
pub mod cli;
pub mod dispatch;
pub mod http_server;
pub mod ingress;
#[cfg(feature = "media")]
pub mod media;
pub mod metrics;
pub mod plan;
pub mod reload;
pub mod runtime;
pub mod serve;
pub mod shard;
pub mod sinks;
pub mod store;
