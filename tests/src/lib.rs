//! Harness for the end-to-end tests: the real `triggerfish` binary against real peers on
//! loopback.
//!
//! - [`binary`]: finds the binary under test (`$TRIGGERFISH_BIN`, else builds it next to the
//!   test executable).
//! - [`router`]: runs `triggerfish serve` on free ports in a temporary directory, waits for
//!   `/readyz`, captures its output, signals it and stops it on drop.
//! - [`subscriber`]: a hyper HTTP subscriber that records every request and answers as
//!   scripted (statuses, `Retry-After`, delays, held answers, reply events).
//! - [`client`]: sends events (binary, structured, batched) and admin requests.
//! - [`nats`]: real `nats-server` processes with JetStream (one, or a cluster), which tests
//!   stop, kill and restart.
//! - [`quic`]: a raw QUIC client, frames as bytes, for the protocol tests.
//! - [`event`]: CloudEvents as tests write them; [`config`]: Knative YAML builders;
//!   [`metrics`]: reads Prometheus text; [`tls`]: a throwaway PKI and an HTTPS client.
//!
//! Everything listens on `127.0.0.1` on ports picked at runtime and lives in temporary
//! directories, so tests run in parallel. Waits poll with deadlines; nothing sleeps a fixed
//! time to let something happen.
//!
//! The tests themselves are in `tests/`, one target per area; `tests/fixtures/filters/` holds
//! filter cases run through `triggerfish test-filter`.
#![allow(
    clippy::unwrap_used,
    reason = "a test harness: a failed unwrap is a failed test"
)]

pub mod binary;
pub mod client;
pub mod config;
pub mod event;
pub mod metrics;
pub mod nats;
pub mod quic;
pub mod router;
pub mod subscriber;
pub mod tls;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use client::{Client, Response};
pub use config::{Config, Trigger};
pub use event::Event;
pub use metrics::Metrics;
pub use nats::Nats;
pub use router::{Options, Router};
pub use subscriber::{Reply, Request, Subscriber};

/// A generous bound for things that normally take milliseconds, so that a loaded machine
/// does not fail a test; passing tests never wait this long.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The Python of a virtual environment that `scripts/dev setup` installed into
/// `$TRIGGERFISH_CACHE/venv/{name}` (default cache `~/.cache/triggerfish`); panics, saying how
/// to install it, when it is missing.
pub fn venv_python(name: &str) -> PathBuf {
    let cache = std::env::var_os("TRIGGERFISH_CACHE")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("XDG_CACHE_HOME").map(|c| PathBuf::from(c).join("triggerfish"))
        })
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/triggerfish")))
        .expect("no TRIGGERFISH_CACHE, XDG_CACHE_HOME or HOME to find the cache in");
    let python = cache.join("venv").join(name).join("bin/python");
    assert!(
        python.is_file(),
        "{} is missing: run `scripts/dev setup`",
        python.display()
    );
    python
}

/// Polls `check` every 10 ms until it returns `Some`; panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs `triggerfish ARGS` to completion in `dir`, with `stdin` as standard input.
pub fn run_cli(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    use std::io::Write as _;
    let mut child = Command::new(binary::triggerfish())
        .args(args)
        .current_dir(dir)
        .env_remove("TRIGGERFISH_CONFIG")
        .env("RUST_LOG", "warn")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting triggerfish");
    // Written from a thread, so a large input cannot fill the pipe while the child waits for
    // us to read its output. A child that exits without reading (an invalid config) closes the
    // pipe: that is not an error here.
    let writer = match (stdin, child.stdin.take()) {
        (Some(input), Some(mut pipe)) => {
            let input = input.to_vec();
            Some(std::thread::spawn(move || {
                let _ = pipe.write_all(&input);
            }))
        }
        _ => None,
    };
    let output = child.wait_with_output().expect("waiting for triggerfish");
    if let Some(w) = writer {
        let _ = w.join();
    }
    output
}
