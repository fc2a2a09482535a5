//! Ingress: where producers hand events to the router.
//!
//! - [`http`]: `POST /{namespace}/{broker}` in binary, structured and batched mode.
//! - [`quic`]: publish frames on QUIC streams, answered with acks (`docs/quic-protocol.md`).

pub mod http;
pub mod quic;
