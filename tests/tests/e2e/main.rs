//! The end-to-end tests, one module per area, in one test binary: `cargo test -p
//! triggerfish-tests --test e2e` runs them all, `... --test e2e delivery::` one area.
//!
//! One binary rather than one per area: each binary instantiated and linked the same tokio,
//! hyper, quinn and rustls code again. In a clean build on 2 cores the 21 binaries took 386 s
//! of compile time (about 19 s apiece); this one takes 73 s (45 s of wall time).

mod admin;
mod arrival;
mod auth;
mod backpressure;
mod batching;
mod cli;
mod cluster;
mod content_modes;
mod delivery;
mod deploy;
mod exec;
mod filters;
mod ingress_errors;
mod ordering;
mod pipelining;
mod quic;
mod quic_interop;
mod reload;
mod replies;
mod scheduler;
mod shutdown;
mod sinks;
mod tls;
mod trace_context;
