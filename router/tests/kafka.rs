#![allow(clippy::unwrap_used)] // Tests fail loudly on unexpected errors.
//! `KafkaSource` and `KafkaSink` end to end against a real Kafka-protocol broker (Tansu, see
//! `docs/sources.md`): round trips, CloudEvents pass-through in both content modes against the
//! conformance vectors, bad records, at-least-once across a crash of `triggerfish serve`, and a
//! consumer group shared by two replicas.

#[path = "sources/common.rs"]
#[allow(dead_code)]
mod common;
#[path = "kafka/conformance.rs"]
mod conformance;
#[path = "kafka/crash.rs"]
mod crash;
#[path = "sources/process.rs"]
mod process;
#[path = "kafka/round_trip.rs"]
mod round_trip;
#[path = "kafka/tansu.rs"]
#[allow(dead_code)]
mod tansu;
