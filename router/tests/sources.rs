#![allow(clippy::unwrap_used)] // Tests fail loudly on unexpected errors.
//! Event sources end to end, in process: a real `Router` with its sources, real HTTP on
//! loopback, a fake MNS server, real inotify, and (for the registry) the real Distribution
//! registry and skopeo.

#[path = "sources/binary.rs"]
mod binary;
#[path = "sources/common.rs"]
mod common;
#[path = "sources/examples.rs"]
mod examples;
#[path = "sources/fake_mns.rs"]
mod fake_mns;
#[path = "sources/github.rs"]
mod github;
#[path = "sources/oss.rs"]
mod oss;
#[path = "sources/process.rs"]
mod process;
#[path = "sources/registry.rs"]
mod registry;
#[path = "sources/s3.rs"]
mod s3;
#[path = "sources/watch.rs"]
mod watch;
