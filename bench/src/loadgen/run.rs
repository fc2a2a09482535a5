//! One `tf-loadgen` run: start the sink, send (unless sink-only), wait for in-flight
//! deliveries, stop the sink, and put the figures together.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::loadgen::clock::Clock;
use crate::loadgen::payload::Mode;
use crate::loadgen::report::RunReport;
use crate::loadgen::sender::{self, Pace, SenderConfig, SenderReport};
use crate::loadgen::sink::{Sink, SinkConfig, SinkError, SinkSnapshot};

/// What a run does.
#[derive(Debug, Clone)]
pub struct RunConfig {
    /// The sink.
    pub sink: SinkConfig,
    /// What to send; `None` runs only the sink.
    pub send: Option<SenderConfig>,
    /// After sending: how long to wait for accepted events to arrive at the sink.
    pub drain: Duration,
    /// Sink-only: how long to run (until `stop` when `None`).
    pub sink_only_for: Option<Duration>,
    /// Content mode and batch, for the report of a sink-only run.
    pub mode: Mode,
    /// The rate asked for, for the report (`None` = max).
    pub rate: Option<f64>,
}

/// Runs to the end, or until `stop` is set (then the drain is skipped).
/// `on_listening` is called with the sink's address as soon as it is bound.
pub async fn run(
    config: RunConfig,
    clock: Clock,
    stop: Arc<AtomicBool>,
    on_listening: impl FnOnce(SocketAddr),
) -> Result<RunReport, SinkError> {
    let sink = Sink::start(config.sink.clone(), clock).await?;
    on_listening(sink.local_addr());

    let Some(send) = config.send.clone() else {
        let deadline = config.sink_only_for.map(|d| Instant::now() + d);
        while !stop.load(Ordering::Relaxed) && deadline.is_none_or(|d| Instant::now() < d) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let snapshot = sink.shutdown().await;
        return Ok(report(&config, None, &snapshot, clock));
    };

    let sent = sender::run(send, clock, Arc::clone(&stop)).await;
    let drain_end = Instant::now() + config.drain;
    while !stop.load(Ordering::Relaxed)
        && sink.unique() < sent.accepted
        && Instant::now() < drain_end
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let snapshot = sink.shutdown().await;
    Ok(report(&config, Some(&sent), &snapshot, clock))
}

fn report(
    config: &RunConfig,
    sent: Option<&SenderReport>,
    sink: &SinkSnapshot,
    clock: Clock,
) -> RunReport {
    let empty = SenderReport::default();
    let s = sent.unwrap_or(&empty);
    let send = config.send.as_ref();
    let send_seconds = s.elapsed.as_secs_f64();
    let start_ns = if sent.is_some() {
        s.start_ns
    } else {
        clock.now_ns()
    };
    let deliver_seconds = sink.last_arrival_ns.saturating_sub(start_ns) as f64 / 1e9;
    let per_s = |n: u64, secs: f64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
    RunReport {
        kind: if sent.is_some() { "send" } else { "sink-only" },
        target: send.map(|c| c.target.url.clone()).unwrap_or_default(),
        mode: config.mode,
        batch: send.map_or(1, |c| c.plan.batch),
        connections: send.map_or(0, |c| c.connections),
        rate: config.rate,
        planned: send.map(|c| c.plan.events).filter(|&e| e != u64::MAX),
        requests: s.requests,
        sent: s.sent,
        accepted: s.accepted,
        rejected: s.rejected,
        failed: s.failed,
        unsent: s.unsent,
        statuses: s
            .statuses
            .iter()
            .map(|(code, n)| (code.to_string(), *n))
            .collect(),
        connect_errors: s.connect_errors,
        send_seconds,
        deliver_seconds,
        accepted_per_s: per_s(s.accepted, send_seconds),
        delivered_per_s: if sent.is_some() {
            per_s(sink.unique, deliver_seconds)
        } else {
            0.0
        },
        received: sink.unique,
        duplicates: sink.duplicates,
        lost: s.accepted.saturating_sub(sink.unique),
        unexpected: if sent.is_some() {
            sink.unique.saturating_sub(s.accepted)
        } else {
            0
        },
        foreign: sink.foreign,
        unstamped: sink.unstamped,
        sink_failed: sink.failed_on_purpose,
        sink_slowed: sink.slowed_on_purpose,
        sink_bad_requests: sink.bad_requests,
        e2e: sink.latency_summary(),
        ack: s.ack.summary(),
        send_lag: if matches!(send.map(|c| c.pace), Some(Pace::Open(_))) {
            s.send_lag.summary()
        } else {
            Default::default()
        },
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::payload::Encoder;
    use crate::loadgen::schedule::{Plan, Schedule};
    use crate::loadgen::sender::Target;

    /// The load generator sending straight to its own sink: everything sent arrives once.
    async fn loopback(mode: Mode, batch: u32, events: u64, pace: Pace) -> RunReport {
        loopback_failing(mode, batch, events, pace, 0.0).await
    }

    async fn loopback_failing(
        mode: Mode,
        batch: u32,
        events: u64,
        pace: Pace,
        fail: f64,
    ) -> RunReport {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let mut sink = SinkConfig::new(addr);
        sink.run = Some(7);
        sink.fail = fail;
        let config = RunConfig {
            sink,
            send: Some(SenderConfig {
                target: Target::parse(&format!("http://{addr}/")).unwrap(),
                encoder: Encoder::new(mode, 3, 7),
                plan: Plan { batch, events },
                pace,
                stop_after: Duration::from_secs(20),
                connections: 4,
                quic_connections: 1,
                pacer_tick: Duration::from_micros(200),
                pushback_pause: Duration::from_millis(1),
                trust: Default::default(),
            }),
            drain: Duration::from_secs(5),
            sink_only_for: None,
            mode,
            rate: None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        run(config, Clock::new(), stop, |a| assert_eq!(a, addr))
            .await
            .unwrap()
    }

    fn assert_all_arrived(r: &RunReport, events: u64, requests: u64) {
        assert_eq!(r.planned, Some(events));
        assert_eq!(
            (r.sent, r.accepted, r.received),
            (events, events, events),
            "{r:?}"
        );
        assert_eq!(
            (r.lost, r.duplicates, r.foreign, r.unstamped),
            (0, 0, 0, 0),
            "{r:?}"
        );
        assert_eq!(r.requests, requests);
        assert_eq!(r.statuses.get("200"), Some(&requests));
        assert_eq!(r.e2e.count, events);
        assert!(r.e2e.max_us > 0.0 && r.delivered_per_s > 0.0, "{r:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn open_loop_binary() {
        let pace = Pace::Open(Schedule::new(20_000.0, 1).unwrap());
        let r = loopback(Mode::Binary, 1, 300, pace).await;
        assert_all_arrived(&r, 300, 300);
        assert_eq!(r.send_lag.count, 300);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closed_loop_batches_with_a_short_last_one() {
        let r = loopback(Mode::Batch, 100, 250, Pace::Max).await;
        assert_all_arrived(&r, 250, 3);
        assert_eq!(r.send_lag.count, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn closed_loop_structured() {
        let r = loopback(Mode::Structured, 1, 100, Pace::Max).await;
        assert_all_arrived(&r, 100, 100);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refused_requests_are_rejected_not_lost() {
        let r = loopback_failing(Mode::Binary, 1, 400, Pace::Max, 0.25).await;
        assert_eq!(r.sent, 400);
        assert_eq!(r.accepted + r.rejected, 400);
        assert!((50..150).contains(&r.rejected), "{r:?}");
        assert_eq!(r.statuses.get("503"), Some(&r.rejected));
        assert_eq!(r.sink_failed, r.rejected);
        assert_eq!((r.received, r.lost), (r.accepted, 0), "{r:?}");
    }
}
