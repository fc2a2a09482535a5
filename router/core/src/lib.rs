//! The sans-IO core of Triggerfish.
//!
//! Everything here is deterministic and free of I/O: no sockets, no files, no tokio, and no
//! clock. Time enters as a `now` argument. The runtime crate (`triggerfish-router`) drives these
//! pieces from thin async loops; the media workers use the event model directly.
//!
//! - [`event`]: zero-copy CloudEvent views over received bytes, and the HTTP/JSON codecs.
//! - [`cesql`]: the CloudEvents SQL expression language (v1.0.0), compiled once per filter.
//! - [`filter`]: Knative trigger filters (attributes and the SubscriptionsAPI dialects), compiled.
//! - [`index`]: all triggers of a broker compiled into one matcher.
//! - [`policy`]: event policies (who may send what to which brokers).
//! - [`config`]: the resource model (Knative's YAML plus our kinds), parsed and validated.
//! - [`cron`]: cron schedules and next fire times across daylight-saving changes.
//! - [`delivery`]: the delivery policy: which failures are retried, and when the next attempt is.
//! - [`sources`]: event sources' payloads (OSS, S3, GitHub, registries) and the MNS wire format.
//! - [`quic`]: the QUIC wire protocol (`triggerfish/1`): publish and ack frames, error codes.
//!
//! What it does not do: network, disk, threads, timers. Those belong to the router.
#![warn(missing_docs)]

pub mod cesql;
pub mod config;
pub mod cron;
pub mod delivery;
pub mod event;
pub mod filter;
pub mod index;
mod pem;
pub mod policy;
pub mod quic;
pub mod sources;
