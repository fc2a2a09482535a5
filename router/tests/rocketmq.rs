#![allow(clippy::unwrap_used)] // Tests fail loudly on unexpected errors.
//! `RocketMQSource` and `RocketMQSink` end to end against real rocketmq-rust servers (name
//! server and broker 1.0.0, see `docs/sources.md`): round trips in both directions, bad
//! messages dead-lettered or skipped, and at-least-once across a crash of `triggerfish serve`.
//!
//! One server pair serves the whole file (it starts in about a second, but the first
//! consumer rebalance and topic routes take a while); each test has its own topics and groups.

#[path = "sources/common.rs"]
#[allow(dead_code)]
mod common;
#[path = "rocketmq/crash.rs"]
mod crash;
#[path = "sources/process.rs"]
mod process;
#[path = "rocketmq/round_trip.rs"]
mod round_trip;
#[path = "rocketmq/server.rs"]
#[allow(dead_code)]
mod server;
