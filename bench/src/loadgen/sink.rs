//! The load generator's own HTTP sink: it receives what the router under test delivers, and
//! records what arrived and how long after it was sent.
//!
//! It accepts events in binary, structured and batched mode (HTTP/1.1, or HTTP/2 with prior
//! knowledge), answers `200` with an empty body (no reply event), and for each event:
//! - marks its sequence number in a [`SeenSet`]: first delivery or duplicate;
//! - records arrival − `tfsentns` in a latency histogram, arrival being when the body has been
//!   read.
//!
//! It can misbehave on purpose, for soak tests: answer a fraction of requests `503` (those
//! events are not counted as received, since the router is expected to redeliver them) and
//! hold a fraction for a delay before answering. Which requests are picked comes from a
//! deterministic hash of the request counter, so runs are reproducible.
//!
//! It does not check that events are well-formed beyond reading the id and the stamp, and it
//! does not send replies.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::loadgen::body::{discard_limited, read_limited};
use crate::loadgen::clock::Clock;
use crate::loadgen::latency::{Latencies, SharedLatencies, Summary};
use crate::loadgen::payload::{BATCH_CONTENT_TYPE, STRUCTURED_CONTENT_TYPE, Stamp};
use crate::loadgen::seen::{Insert, SeenSet};
use crate::loadgen::spec::SlowSpec;

/// How the sink listens and behaves.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    /// Where to listen; port 0 picks a free one.
    pub addr: SocketAddr,
    /// The fraction of requests answered `503 Service Unavailable`.
    pub fail: f64,
    /// The fraction of requests held before the answer, and for how long.
    pub slow: Option<SlowSpec>,
    /// The largest request body read; larger ones are answered `413`.
    pub max_body: usize,
    /// Sequence numbers tracked for duplicates: `0..seen_capacity`.
    pub seen_capacity: u64,
    /// Count only events of this load-generator run; others are `foreign`. `None`: events of
    /// any run (a sink-only run fed by other processes).
    pub run: Option<u32>,
    /// How long a shutdown waits for open connections to finish their request.
    pub shutdown_grace: Duration,
}

impl SinkConfig {
    /// A well-behaved sink on `addr`.
    pub fn new(addr: SocketAddr) -> SinkConfig {
        SinkConfig {
            addr,
            fail: 0.0,
            slow: None,
            max_body: 16 << 20,
            seen_capacity: 1 << 32,
            run: None,
            shutdown_grace: Duration::from_secs(1),
        }
    }
}

/// Why the sink could not start.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The listen address could not be bound.
    #[error("binding the sink to {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
}

/// A running sink. Dropping it without [`Sink::shutdown`] also stops it, in the background.
#[derive(Debug)]
pub struct Sink {
    local_addr: SocketAddr,
    state: Arc<State>,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl Sink {
    /// Binds the listener and starts accepting connections.
    pub async fn start(config: SinkConfig, clock: Clock) -> Result<Sink, SinkError> {
        let listener = TcpListener::bind(config.addr)
            .await
            .map_err(|source| SinkError::Bind {
                addr: config.addr,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| SinkError::Bind {
            addr: config.addr,
            source,
        })?;
        let state = Arc::new(State::new(config, clock));
        let (shutdown, stop) = watch::channel(false);
        let server = tokio::spawn(accept_loop(listener, Arc::clone(&state), stop));
        Ok(Sink {
            local_addr,
            state,
            shutdown,
            server,
        })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Events received for the first time so far.
    pub fn unique(&self) -> u64 {
        self.state.unique.load(Ordering::Relaxed)
    }

    /// The figures so far.
    pub fn snapshot(&self) -> SinkSnapshot {
        self.state.snapshot()
    }

    /// Stops accepting, lets open connections finish the request in hand (up to the grace
    /// period), and returns the final figures.
    pub async fn shutdown(self) -> SinkSnapshot {
        let _ = self.shutdown.send(true);
        let _ = self.server.await;
        self.state.snapshot()
    }
}

/// What the sink has seen.
#[derive(Debug, Clone, Serialize)]
pub struct SinkSnapshot {
    /// HTTP requests received.
    pub requests: u64,
    /// Events in the requests answered 2xx, duplicates included.
    pub events: u64,
    /// Events with a load-generator id received for the first time.
    pub unique: u64,
    /// Events with a load-generator id received again.
    pub duplicates: u64,
    /// Events whose id is not this run's, or beyond the tracked range.
    pub foreign: u64,
    /// Events without a readable `tfsentns` stamp (not in the latency figures).
    pub unstamped: u64,
    /// Requests answered 503 on purpose (`--sink-fail`).
    pub failed_on_purpose: u64,
    /// Requests held on purpose (`--sink-slow`).
    pub slowed_on_purpose: u64,
    /// Requests that could not be read or parsed (answered 400 or 413).
    pub bad_requests: u64,
    /// When the last event arrived, in ns on the clock (0 if none did).
    #[serde(skip)]
    pub last_arrival_ns: u64,
    /// Arrival − send stamp, over every stamped event.
    #[serde(skip)]
    pub latency: Latencies,
}

impl SinkSnapshot {
    /// The end-to-end latency distribution.
    pub fn latency_summary(&self) -> Summary {
        self.latency.summary()
    }
}

/// Shared by every connection.
#[derive(Debug)]
struct State {
    config: SinkConfig,
    clock: Clock,
    requests: AtomicU64,
    events: AtomicU64,
    unique: AtomicU64,
    duplicates: AtomicU64,
    foreign: AtomicU64,
    unstamped: AtomicU64,
    failed_on_purpose: AtomicU64,
    slowed_on_purpose: AtomicU64,
    bad_requests: AtomicU64,
    last_arrival_ns: AtomicU64,
    seen: SeenSet,
    latency: SharedLatencies,
    connections: AtomicU64,
}

impl State {
    fn new(config: SinkConfig, clock: Clock) -> State {
        State {
            seen: SeenSet::new(config.seen_capacity),
            config,
            clock,
            requests: AtomicU64::new(0),
            events: AtomicU64::new(0),
            unique: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            foreign: AtomicU64::new(0),
            unstamped: AtomicU64::new(0),
            failed_on_purpose: AtomicU64::new(0),
            slowed_on_purpose: AtomicU64::new(0),
            bad_requests: AtomicU64::new(0),
            last_arrival_ns: AtomicU64::new(0),
            latency: SharedLatencies::new(16),
            connections: AtomicU64::new(0),
        }
    }

    fn snapshot(&self) -> SinkSnapshot {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SinkSnapshot {
            requests: get(&self.requests),
            events: get(&self.events),
            unique: get(&self.unique),
            duplicates: get(&self.duplicates),
            foreign: get(&self.foreign),
            unstamped: get(&self.unstamped),
            failed_on_purpose: get(&self.failed_on_purpose),
            slowed_on_purpose: get(&self.slowed_on_purpose),
            bad_requests: get(&self.bad_requests),
            last_arrival_ns: get(&self.last_arrival_ns),
            latency: self.latency.merged(),
        }
    }

    /// Counts one delivered event.
    fn record(&self, conn: usize, stamp: Stamp, arrival_ns: u64) {
        self.events.fetch_add(1, Ordering::Relaxed);
        if let (Some(want), Some((run, _))) = (self.config.run, stamp.seq)
            && want != run
        {
            // Delivered late from an earlier run: neither counted nor timed.
            self.foreign.fetch_add(1, Ordering::Relaxed);
            return;
        }
        match stamp.seq.map(|(_, seq)| self.seen.insert(seq)) {
            Some(Insert::New) => self.unique.fetch_add(1, Ordering::Relaxed),
            Some(Insert::Duplicate) => self.duplicates.fetch_add(1, Ordering::Relaxed),
            Some(Insert::OutOfRange) | None => self.foreign.fetch_add(1, Ordering::Relaxed),
        };
        match stamp.sent_ns {
            Some(sent) => self
                .latency
                .record_n(conn, arrival_ns.saturating_sub(sent), 1),
            None => {
                self.unstamped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, mut stop: watch::Receiver<bool>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = state.connections.fetch_add(1, Ordering::Relaxed) as usize;
                    connections.spawn(serve(stream, conn, Arc::clone(&state), stop.clone()));
                }
                // Out of file descriptors and the like: wait a little rather than spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            // Reap finished connections so the set does not grow with churn.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = stop.changed() => break,
        }
    }
    drop(listener);
    let grace = state.config.shutdown_grace;
    let _ = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
}

async fn serve(
    stream: tokio::net::TcpStream,
    conn: usize,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
) {
    let service = service_fn(move |req| {
        let state = Arc::clone(&state);
        async move { Ok::<_, Infallible>(handle(req, conn, &state).await) }
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        _ = stop.changed() => {}
    }
    // Finish the request in hand, then close; the accept loop bounds how long this may take.
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

async fn handle(req: Request<Incoming>, conn: usize, state: &State) -> Response<Empty<Bytes>> {
    let n = state.requests.fetch_add(1, Ordering::Relaxed);
    let (parts, body) = req.into_parts();
    let cfg = &state.config;

    if cfg.fail > 0.0 && unit(n, 0x5eed_fa11) < cfg.fail {
        state.failed_on_purpose.fetch_add(1, Ordering::Relaxed);
        let _ = discard_limited(body, cfg.max_body).await;
        return status(StatusCode::SERVICE_UNAVAILABLE);
    }

    let media = parts
        .headers
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let structured = media.as_deref() == Some(STRUCTURED_CONTENT_TYPE);
    let batch = media.as_deref() == Some(BATCH_CONTENT_TYPE);
    let body = if structured || batch {
        read_limited(body, cfg.max_body).await.map(Some)
    } else {
        discard_limited(body, cfg.max_body).await.map(|_| None)
    };
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            state.bad_requests.fetch_add(1, Ordering::Relaxed);
            return status(match e {
                crate::loadgen::body::BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
                crate::loadgen::body::BodyError::Read(_) => StatusCode::BAD_REQUEST,
            });
        }
    };
    let arrival = state.clock.now_ns();

    match body {
        None => state.record(conn, Stamp::from_headers(&parts.headers), arrival),
        Some(body) if structured => match Stamp::from_structured(&body) {
            Some(stamp) => state.record(conn, stamp, arrival),
            None => {
                state.bad_requests.fetch_add(1, Ordering::Relaxed);
                return status(StatusCode::BAD_REQUEST);
            }
        },
        Some(body) => match Stamp::from_batch(&body) {
            Some(stamps) => {
                for stamp in stamps {
                    state.record(conn, stamp, arrival);
                }
            }
            None => {
                state.bad_requests.fetch_add(1, Ordering::Relaxed);
                return status(StatusCode::BAD_REQUEST);
            }
        },
    }
    state.last_arrival_ns.fetch_max(arrival, Ordering::Relaxed);

    if let Some(slow) = cfg.slow
        && slow.fraction > 0.0
        && unit(n, 0x5105_0515) < slow.fraction
    {
        state.slowed_on_purpose.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(slow.delay).await;
    }
    status(StatusCode::OK)
}

fn status(code: StatusCode) -> Response<Empty<Bytes>> {
    let mut r = Response::new(Empty::new());
    *r.status_mut() = code;
    r
}

/// A deterministic pseudo-random number in `[0, 1)` for request `n` (splitmix64).
fn unit(n: u64, salt: u64) -> f64 {
    let mut z = n.wrapping_add(salt).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1_u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_is_uniform_enough() {
        let n = 100_000;
        let hits = (0..n).filter(|&i| unit(i, 1) < 0.05).count();
        assert!((4_500..5_500).contains(&hits), "{hits}");
        assert!((0..n).all(|i| (0.0..1.0).contains(&unit(i, 7))));
    }
}
