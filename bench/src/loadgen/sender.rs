//! The sending side: `C` keep-alive HTTP/1.1 connections (hyper's client connection, no pool),
//! each with one request in flight, sending the run's events to the target.
//!
//! Two pacing modes:
//! - **open loop** (`--rate N`): a pacing thread releases one permit per request at its due
//!   time ([`Schedule`]); any free connection takes the next permit. Events are stamped with
//!   the *due* time, so when the target stalls, the requests that should have gone out during
//!   the stall carry the wait in their latency (no coordinated omission). The pacer is an OS
//!   thread because tokio's timer has millisecond granularity; a thread sleep is within tens
//!   of microseconds (about 20 with [`tighten_timer_slack`](super::clock::tighten_timer_slack),
//!   75 without, on the development VM). It wakes at most once per `pacer_tick` (200 µs by
//!   default), because each wake-up costs CPU the router under test needs. If the connections cannot keep up, permits accumulate (a counter, not a
//!   queue) and the lag is reported as `send_lag`.
//! - **closed loop** (`--rate max`): each connection sends its next request as soon as the
//!   previous one is answered, until the deadline; events are stamped with the actual send
//!   time. A connection answered 429 or 503 pauses (`pushback_pause`) before its next request.
//!
//! A response is read to the end (bounded) so the connection can be reused. A transport error
//! counts the request's events as failed and the connection is re-established.
//! It does not retry or follow redirects, and speaks TLS only for QUIC.
//!
//! **QUIC** (`--target quic://host:port/{namespace}/{broker}`): the workers send frames on
//! `quic_connections` QUIC connections (one by default; worker `i` uses connection
//! `i mod quic_connections`), each frame its own stream, so `--connections` is the number of
//! frames in flight. A frame carries a batched-mode array whatever `--mode` says (one event per
//! frame in the single-event modes). The ack's status stands for the HTTP status in the
//! figures; events an ack rejects count as rejected.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http::{HeaderValue, Method, Request, Uri};
use http_body_util::Full;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use triggerfish_router::quic::client::{Peer, QuicClient};

use crate::loadgen::body::discard_limited;
use crate::loadgen::clock::{Clock, saturating_nanos};
use crate::loadgen::latency::Latencies;
use crate::loadgen::payload::Encoder;
use crate::loadgen::schedule::{Plan, Schedule};

/// The largest response body read from the target.
const MAX_RESPONSE_BODY: usize = 1 << 20;

/// Where events are sent: an `http://host:port/path` or `quic://host:port/ns/broker` URL.
#[derive(Debug, Clone)]
pub struct Target {
    /// For a `quic://` URL: the broker, `namespace/name`.
    pub quic_target: Option<String>,
    /// `host:port`, to connect to.
    pub authority: String,
    /// The `Host` header.
    host: HeaderValue,
    /// The request target, in origin form.
    path: Uri,
    /// The URL as given.
    pub url: String,
}

/// Why a target URL cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// Not a URL.
    #[error("invalid target URL {url:?}: {reason}")]
    Invalid {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A scheme other than `http` and `quic`.
    #[error("target URL {0:?}: only http:// and quic:// are supported")]
    Scheme(String),
}

impl Target {
    /// Parses an `http://` URL; the port defaults to 80 and the path to `/`.
    pub fn parse(url: &str) -> Result<Target, TargetError> {
        let invalid = |reason: &str| TargetError::Invalid {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
        let quic = match uri.scheme_str() {
            Some("http") => false,
            Some("quic") => true,
            _ => return Err(TargetError::Scheme(url.to_owned())),
        };
        let auth = uri.authority().ok_or_else(|| invalid("no host"))?;
        let default_port = if quic { 8443 } else { 80 };
        let authority = format!(
            "{}:{}",
            auth.host(),
            auth.port_u16().unwrap_or(default_port)
        );
        let quic_target = quic.then(|| uri.path().trim_start_matches('/').to_owned());
        let host = HeaderValue::from_str(auth.as_str()).map_err(|_| invalid("bad host"))?;
        let path: Uri = uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
        Ok(Target {
            quic_target,
            authority,
            host,
            path,
            url: url.to_owned(),
        })
    }
}

/// How to pace the run.
#[derive(Debug, Clone, Copy)]
pub enum Pace {
    /// Requests due on this schedule (open loop).
    Open(Schedule),
    /// As fast as the target answers (closed loop).
    Max,
}

/// What to send and how.
#[derive(Debug, Clone)]
pub struct SenderConfig {
    /// Where to send.
    pub target: Target,
    /// How to encode events.
    pub encoder: Encoder,
    /// How the run's events are cut into requests.
    pub plan: Plan,
    /// How to pace them.
    pub pace: Pace,
    /// Closed loop: no request starts after this long. Open loop: no request starts after
    /// this long even if the schedule is behind (the rest are reported as unsent).
    pub stop_after: Duration,
    /// Concurrent connections (at least 1); for QUIC, frames in flight.
    pub connections: usize,
    /// QUIC: how many connections carry the frames (at least 1), each from its own endpoint.
    pub quic_connections: usize,
    /// Open loop: the pacing thread wakes at most once per tick and releases every request
    /// due by then. A wake-up costs CPU (tens of µs on a VM), so at high rates a tick trades
    /// send lag (up to one tick) for CPU left to the router under test.
    pub pacer_tick: Duration,
    /// Closed loop: how long a connection pauses after a 429 or 503 answer.
    pub pushback_pause: Duration,
    /// QUIC: which server certificates to trust.
    pub trust: triggerfish_router::quic::tls::Trust,
}

/// What the sender did.
#[derive(Debug, Clone, Default)]
pub struct SenderReport {
    /// HTTP requests sent (answered or not).
    pub requests: u64,
    /// Events in them: accepted + rejected + failed.
    pub sent: u64,
    /// Events in requests answered 2xx.
    pub accepted: u64,
    /// Events in requests answered otherwise (e.g. 429, 503).
    pub rejected: u64,
    /// Events in requests that got no answer (connection refused or reset).
    pub failed: u64,
    /// Events the schedule planned that were never sent (cut off by the deadline or a stop).
    pub unsent: u64,
    /// Responses per status code.
    pub statuses: std::collections::BTreeMap<u16, u64>,
    /// Connections opened.
    pub connects: u64,
    /// Connection attempts that failed.
    pub connect_errors: u64,
    /// Due time → response, per request (open loop), or send → response (closed loop).
    pub ack: Latencies,
    /// Actual send − due time, per request (open loop only).
    pub send_lag: Latencies,
    /// From the start to the last answer.
    pub elapsed: Duration,
    /// The start, in ns on the clock: the due time of the first request.
    pub start_ns: u64,
}

/// Runs the sender to the end of its plan, its deadline, or `stop`.
pub async fn run(config: SenderConfig, clock: Clock, stop: Arc<AtomicBool>) -> SenderReport {
    let quic = match quic_peers(&config).await {
        Ok(q) => q,
        Err(e) => {
            // No connection at all: every planned event is unsent; the error says why.
            #[allow(clippy::print_stderr, reason = "a tool's one-line diagnosis")]
            {
                eprintln!("tf-loadgen: {e}");
            }
            return SenderReport {
                connect_errors: 1,
                unsent: if config.plan.events == u64::MAX {
                    0
                } else {
                    config.plan.events
                },
                ..SenderReport::default()
            };
        }
    };
    let start = Instant::now();
    let shared = Arc::new(Shared {
        quic,
        config,
        clock,
        start,
        start_ns: clock.at(start),
        next: AtomicU64::new(0),
        permits: Semaphore::new(0),
        stop,
        done: AtomicBool::new(false),
    });
    let pacer = match shared.config.pace {
        Pace::Open(schedule) => {
            let shared = Arc::clone(&shared);
            Some(std::thread::spawn(move || pace(&shared, schedule)))
        }
        Pace::Max => None,
    };
    let mut workers = tokio::task::JoinSet::new();
    for i in 0..shared.config.connections.max(1) {
        workers.spawn(worker(Arc::clone(&shared), i));
    }
    let mut report = SenderReport::default();
    while let Some(done) = workers.join_next().await {
        // A worker that panicked lost its figures; the others still count.
        if let Ok(w) = done {
            report.absorb(w);
        }
    }
    for (client, peer) in shared.quic.iter().flat_map(|q| &q.peers) {
        if let Ok(c) = peer.connection().await {
            let (s, udp) = (c.stats().path, c.stats().udp_tx);
            // What the transport did, to tell a slow router from lost datagrams and probe
            // timeouts (the kernel's drops are `RcvbufErrors` in /proc/net/snmp).
            #[allow(clippy::print_stderr, reason = "a diagnostic line of a benchmark tool")]
            {
                eprintln!(
                    "  quic: rtt {:?} (min {:?}), cwnd {} B, mtu {} B, {} datagrams in {} sends, \
                     {} packets sent, {} lost, {} congestion events, MTU probes {} sent {} lost, \
                     {} black holes",
                    s.rtt,
                    s.min_rtt,
                    s.cwnd,
                    s.current_mtu,
                    udp.datagrams,
                    udp.ios,
                    s.sent_packets,
                    s.lost_packets,
                    s.congestion_events,
                    s.sent_plpmtud_probes,
                    s.lost_plpmtud_probes,
                    s.black_holes_detected
                );
            }
        }
        client.close().await;
    }
    if let Some(pacer) = pacer {
        // The pacer ends once it has released every permit or is told the workers are done.
        shared.done.store(true, Ordering::Relaxed);
        let _ = pacer.join();
    }
    report.elapsed = start.elapsed();
    report.start_ns = shared.start_ns;
    if shared.config.plan.events != u64::MAX {
        report.unsent = shared.config.plan.events.saturating_sub(report.sent);
    }
    report
}

/// For a `quic://` target: the connections, each on a client (endpoint) of its own, and the
/// broker.
struct Quic {
    peers: Vec<(Arc<QuicClient>, Peer)>,
    target: String,
}

struct Shared {
    quic: Option<Quic>,
    config: SenderConfig,
    clock: Clock,
    start: Instant,
    start_ns: u64,
    /// The next request number.
    next: AtomicU64,
    /// Open loop: one permit per due request, plus one per connection at the end.
    permits: Semaphore,
    /// Set from outside (a signal): stop sending.
    stop: Arc<AtomicBool>,
    /// Set when every connection has finished: the pacer stops.
    done: AtomicBool,
}

/// The pacing thread: releases permits as requests fall due.
#[allow(clippy::disallowed_methods)] // std::thread::sleep on a dedicated OS thread, not a tokio worker.
fn pace(shared: &Shared, schedule: Schedule) {
    let total = shared.config.plan.requests();
    let mut released = 0_u64;
    while released < total
        && !shared.stop.load(Ordering::Relaxed)
        && !shared.done.load(Ordering::Relaxed)
    {
        let elapsed = shared.start.elapsed();
        if elapsed >= shared.config.stop_after {
            break;
        }
        let due = schedule.due_by(elapsed).min(total);
        if due > released {
            add_permits(&shared.permits, due - released);
            released = due;
        }
        if released < total {
            // The next due request, but no sooner than a tick after this wake-up.
            let next = schedule
                .due(released)
                .max(elapsed + shared.config.pacer_tick);
            std::thread::sleep(
                next.saturating_sub(shared.start.elapsed())
                    .min(Duration::from_millis(50)),
            );
        }
    }
    // Wake every connection so it sees the end.
    add_permits(&shared.permits, shared.config.connections.max(1) as u64);
}

fn add_permits(sem: &Semaphore, n: u64) {
    sem.add_permits(
        usize::try_from(n)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS - sem.available_permits()),
    );
}

async fn worker(shared: Arc<Shared>, index: usize) -> SenderReport {
    let cfg = &shared.config;
    let mut r = SenderReport::default();
    let mut conn: Option<Connection> = None;
    loop {
        if let Pace::Open(_) = cfg.pace {
            match shared.permits.acquire().await {
                Ok(p) => p.forget(),
                Err(_) => break,
            }
        }
        if shared.stop.load(Ordering::Relaxed) || shared.start.elapsed() >= cfg.stop_after {
            break;
        }
        let k = shared.next.fetch_add(1, Ordering::Relaxed);
        let Some((first, n)) = cfg.plan.request(k) else {
            break;
        };
        let n64 = u64::from(n);

        let now = Instant::now();
        let (due_ns, due) = match cfg.pace {
            Pace::Open(schedule) => {
                let due = shared.start + schedule.due(k);
                r.send_lag
                    .record(saturating_nanos(now.saturating_duration_since(due)));
                (shared.start_ns + saturating_nanos(schedule.due(k)), due)
            }
            Pace::Max => (shared.clock.at(now), now),
        };
        r.requests += 1;
        r.sent += n64;
        if let Some(Quic { peers, target }) = &shared.quic {
            let (_, peer) = &peers[index % peers.len()];
            let body = cfg.encoder.encode_array(first, n, due_ns);
            match peer.publish(target, None, body, n).await {
                Ok(ack) => {
                    r.ack.record(saturating_nanos(due.elapsed()));
                    *r.statuses.entry(ack.status).or_default() += 1;
                    let accepted = u64::from(ack.accepted).min(n64);
                    r.accepted += accepted;
                    r.rejected += n64 - accepted;
                    if matches!(cfg.pace, Pace::Max) && matches!(ack.status, 429 | 503) {
                        tokio::time::sleep(cfg.pushback_pause).await;
                    }
                }
                Err(_) => r.failed += n64,
            }
            continue;
        }
        if conn.as_ref().is_none_or(|c| !c.is_usable()) {
            conn = connect(&cfg.target, &mut r).await;
        }
        let Some(c) = conn.as_mut() else {
            r.failed += n64;
            continue;
        };
        let (headers, body) = cfg.encoder.encode(first, n, due_ns);
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = Method::POST;
        *req.uri_mut() = cfg.target.path.clone();
        *req.headers_mut() = headers;
        req.headers_mut().insert(HOST, cfg.target.host.clone());
        match c.send(req).await {
            Ok(code) => {
                r.ack.record(saturating_nanos(due.elapsed()));
                *r.statuses.entry(code).or_default() += 1;
                if (200..300).contains(&code) {
                    r.accepted += n64;
                } else {
                    r.rejected += n64;
                    if matches!(cfg.pace, Pace::Max) && (code == 429 || code == 503) {
                        // Pushed back: pause this connection rather than answer a full queue
                        // with a storm of requests that takes CPU from the router.
                        tokio::time::sleep(cfg.pushback_pause).await;
                    }
                }
            }
            Err(()) => {
                r.failed += n64;
                conn = None;
            }
        }
    }
    if let Some(c) = conn {
        c.close().await;
    }
    r
}

impl SenderReport {
    fn absorb(&mut self, w: SenderReport) {
        self.requests += w.requests;
        self.sent += w.sent;
        self.accepted += w.accepted;
        self.rejected += w.rejected;
        self.failed += w.failed;
        self.connects += w.connects;
        self.connect_errors += w.connect_errors;
        for (code, n) in w.statuses {
            *self.statuses.entry(code).or_default() += n;
        }
        self.ack.merge(&w.ack);
        self.send_lag.merge(&w.send_lag);
    }
}

/// For a `quic://` target: `config.quic_connections` clients trusting `config.trust`, each
/// connected once up front.
async fn quic_peers(config: &SenderConfig) -> Result<Option<Quic>, String> {
    let Some(target) = &config.target.quic_target else {
        return Ok(None);
    };
    let (host, port) = config
        .target
        .authority
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
        .ok_or_else(|| format!("bad QUIC address {:?}", config.target.authority))?;
    let mut peers = Vec::new();
    for _ in 0..config.quic_connections.max(1) {
        let client = Arc::new(QuicClient::new(&config.trust).map_err(|e| e.to_string())?);
        let peer = Peer::new(Arc::clone(&client), host, port);
        peer.connection().await.map_err(|e| e.to_string())?;
        peers.push((client, peer));
    }
    Ok(Some(Quic {
        peers,
        target: target.clone(),
    }))
}

/// One keep-alive client connection and the task that drives it.
struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    driver: tokio::task::JoinHandle<()>,
}

impl Connection {
    fn is_usable(&self) -> bool {
        !self.sender.is_closed()
    }

    /// Sends one request and reads the response to the end; returns its status code.
    async fn send(&mut self, req: Request<Full<Bytes>>) -> Result<u16, ()> {
        self.sender.ready().await.map_err(drop)?;
        let resp = self.sender.send_request(req).await.map_err(drop)?;
        let code = resp.status().as_u16();
        discard_limited(resp.into_body(), MAX_RESPONSE_BODY)
            .await
            .map_err(drop)?;
        Ok(code)
    }

    async fn close(self) {
        drop(self.sender);
        let _ = self.driver.await;
    }
}

/// Opens a connection; on failure counts it and waits a little, so that a target that is
/// down is not hammered by a reconnect loop.
async fn connect(target: &Target, r: &mut SenderReport) -> Option<Connection> {
    let attempt = async {
        let stream = TcpStream::connect(&target.authority).await.ok()?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.ok()?;
        let driver = tokio::spawn(async move {
            let _ = conn.await;
        });
        Some(Connection { sender, driver })
    };
    match attempt.await {
        Some(c) => {
            r.connects += 1;
            Some(c)
        }
        None => {
            r.connect_errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = Target::parse("http://127.0.0.1:8080/default/default").unwrap();
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(t.host, "127.0.0.1:8080");
        assert_eq!(t.path, "/default/default");
        let t = Target::parse("http://localhost").unwrap();
        assert_eq!(t.authority, "localhost:80");
        assert_eq!(t.path, "/");
        assert_eq!(
            Target::parse("https://x/").unwrap_err(),
            TargetError::Scheme("https://x/".into())
        );
        assert!(Target::parse("not a url").is_err());
    }
}
