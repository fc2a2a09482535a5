//! The Triggerfish runtime: thin async drivers around `triggerfish-core`.
//!
//! Data flows ingress → [`store`] → [`shard`] drivers (match once per event) → per-trigger
//! queues in [`dispatch`] → [`sinks`]. `docs/ARCHITECTURE.md` draws the tasks, queues and
//! where backpressure comes from.
//!
//! - [`cli`]: the `triggerfish` command line; [`serve`]: start-up and shutdown.
//! - [`plan`]: config → validated plan (indexes compiled, destinations checked).
//! - [`runtime`]: the running router, snapshots and reload; [`reload`]: the file watcher.
//! - [`ingress`]: HTTP and QUIC ingress; [`admin`]: health, readiness, metrics, config.
//! - [`quic`]: TLS and the client side of the QUIC protocol; [`send`]: `triggerfish send`.
//! - [`store`]: the seam between ingress and dispatch (memory today).
//! - [`scheduler`]: PingSources, run-time schedules and delayed events.
//! - [`shard`]: shard drivers; [`dispatch`]: delivery semantics; [`sinks`]: destinations.
//! - [`body`]: size-limited body reading; [`http_server`]: the shared accept loop;
//!   [`metrics`]: Prometheus metrics.

pub mod admin;
pub mod body;
pub mod cli;
pub mod dispatch;
pub mod http_server;
pub mod ingress;
pub mod metrics;
pub mod plan;
pub mod quic;
pub mod reload;
pub mod runtime;
pub mod scheduler;
pub mod send;
pub mod serve;
pub mod shard;
pub mod sinks;
pub mod store;
