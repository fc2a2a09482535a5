//! Ingress: where producers hand events to the router.
//!
//! - [`http`]: `POST /{namespace}/{broker}` in binary, structured and batched mode.

pub mod http;
