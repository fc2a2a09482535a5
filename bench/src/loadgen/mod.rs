//! `tf-loadgen`: a CloudEvents load generator with its own sink, for measuring a broker end to
//! end (sender → router under test → sink, all on one machine).
//!
//! - [`sender`]: keep-alive HTTP/1.1 connections sending binary, structured or batched events,
//!   open loop at a fixed rate ([`schedule`]) or closed loop as fast as possible;
//! - [`sink`]: the HTTP server the router delivers to; it counts first deliveries and
//!   duplicates ([`seen`]) and records end-to-end latency from the stamp every event carries
//!   ([`payload`], [`clock`]) into HdrHistograms ([`latency`]);
//! - [`run`]: one run from start to report; [`report`]: the JSON line and the human summary.
//!
//! No framework: hyper's client and server connections directly, so what is measured is the
//! router, not a client library's pool. It does not speak TLS, retry, or check what the router
//! delivers beyond ids and stamps.

pub mod body;
pub mod clock;
pub mod latency;
pub mod payload;
pub mod report;
pub mod run;
pub mod schedule;
pub mod seen;
pub mod sender;
pub mod sink;
pub mod spec;
