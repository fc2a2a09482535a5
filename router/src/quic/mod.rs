//! The QUIC transport's shared pieces: TLS ([`tls`]) and the client ([`client`]).
//!
//! The protocol itself (frames, acks, error codes) is sans-IO, in
//! `triggerfish_core::quic`; the server is [`crate::ingress::quic`]; the batching subscriber
//! is [`crate::sinks::quic`]; `triggerfish send --quic` is [`crate::send`].

pub mod client;
pub mod tls;
