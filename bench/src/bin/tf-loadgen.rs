//! `tf-loadgen`: sends CloudEvents to a broker and receives what it delivers, on its own sink,
//! to measure throughput and end-to-end latency. See `triggerfish_bench::loadgen`.
//!
//! ```sh
//! # 20k binary events/s for 10 s; the broker's trigger must deliver to the printed sink.
//! tf-loadgen --target http://127.0.0.1:8080/default/default --sink 127.0.0.1:18090 \
//!     --mode binary --rate 20000 --duration 10s
//! # As fast as possible, in batches of 100.
//! tf-loadgen --mode batch --batch 100 --rate max --duration 10s --sink 127.0.0.1:18090
//! # QUIC ingress, frames of 100 on one connection with 8 frames in flight.
//! tf-loadgen --target quic://127.0.0.1:8443/default/default --quic-ca-file data/quic/dev-cert.pem \
//!     --mode batch --batch 100 --rate max --duration 10s --sink 127.0.0.1:18090
//! # Only the sink, failing 5% of deliveries and holding 1% for 200 ms, until Ctrl-C.
//! tf-loadgen --sink-only --sink 127.0.0.1:18090 --sink-fail 0.05 --sink-slow 0.01:200ms
//! ```
//!
//! Prints the sink's address on stderr once bound, a summary on stderr at the end, and one
//! JSON line with every figure on stdout.

use std::io::Write;
use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use triggerfish_bench::loadgen::clock::Clock;
use triggerfish_bench::loadgen::payload::{Encoder, Mode};
use triggerfish_bench::loadgen::run::{RunConfig, run};
use triggerfish_bench::loadgen::schedule::{Plan, Schedule};
use triggerfish_bench::loadgen::sender::{Pace, SenderConfig, Target};
use triggerfish_bench::loadgen::sink::SinkConfig;
use triggerfish_bench::loadgen::spec::{Rate, SlowSpec, parse_duration, parse_fraction};

/// Load generator for CloudEvents brokers, with its own sink for end-to-end latency.
#[derive(Debug, Parser)]
#[command(name = "tf-loadgen", version)]
struct Args {
    /// The broker ingress: `http://host:port/{namespace}/{broker}` (plain HTTP), or
    /// `quic://host:port/{namespace}/{broker}` (frames on `--quic-connections` QUIC connections;
    /// `--connections` frames in flight).
    #[arg(long, default_value = "http://127.0.0.1:8080/default/default")]
    target: String,
    /// How events are put on the wire.
    #[arg(long, value_enum, default_value_t = Mode::Binary)]
    mode: Mode,
    /// Events per request in `--mode batch`.
    #[arg(long, default_value = "100")]
    batch: NonZeroU32,
    /// Events per second on an open-loop schedule (latency measured from each request's due
    /// time), or `max`: each connection sends as soon as its previous request is answered.
    #[arg(long, default_value = "max")]
    rate: Rate,
    /// How long to send (e.g. 10s, 500ms). Defaults to 10s unless --count is given.
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// How many events to send (the run also ends at --duration if given).
    #[arg(long)]
    count: Option<u64>,
    /// Concurrent keep-alive connections, each with one request in flight (QUIC: frames in
    /// flight).
    #[arg(long, default_value = "8")]
    connections: NonZeroUsize,
    /// QUIC: how many connections carry the `--connections` frames in flight, each from an
    /// endpoint of its own.
    #[arg(long, default_value = "1")]
    quic_connections: NonZeroUsize,
    /// Where the sink listens; port 0 picks a free port (printed on stderr).
    #[arg(long, default_value = "127.0.0.1:0")]
    sink: SocketAddr,
    /// Run only the sink: print its figures on Ctrl-C, or after --duration if given.
    #[arg(long)]
    sink_only: bool,
    /// Fraction of sink requests answered 503 (0 to 1).
    #[arg(long, value_parser = parse_fraction, default_value = "0")]
    sink_fail: f64,
    /// Fraction of sink requests held before the answer, and for how long: FRACTION:DURATION.
    #[arg(long)]
    sink_slow: Option<SlowSpec>,
    /// After sending, how long to wait for accepted events to reach the sink.
    #[arg(long, value_parser = parse_duration, default_value = "5s")]
    drain: Duration,
    /// Event types are `com.example.bench.t{seq mod N}`; 1 sends only `t0`.
    #[arg(long, default_value = "1")]
    event_type_pool: NonZeroU32,
    /// Open loop: the pacing thread wakes at most once per tick, releasing every request due
    /// by then; requests are late by up to a tick (reported as send lag), but each wake-up
    /// costs CPU that the router under test shares.
    #[arg(long, value_parser = parse_duration, default_value = "200us")]
    pacer_tick: Duration,
    /// With --rate max: how long a connection pauses after a 429 or 503 answer, so that a
    /// router pushing back is not flooded with retries that take its CPU.
    #[arg(long, value_parser = parse_duration, default_value = "1ms")]
    pushback_pause: Duration,
    /// QUIC: a PEM file of CA certificates to trust (a Triggerfish development certificate is
    /// its own CA: `{dataDir}/quic/dev-cert.pem`).
    #[arg(long)]
    quic_ca_file: Option<std::path::PathBuf>,
    /// QUIC: trust the server certificate with this SHA-256 fingerprint.
    #[arg(long)]
    quic_pin_sha256: Vec<String>,
    /// Tokio worker threads (default: one per core).
    #[arg(long)]
    threads: Option<NonZeroUsize>,
}

fn main() -> anyhow::Result<()> {
    // Before any thread starts, so that the pacing thread inherits it.
    triggerfish_bench::loadgen::clock::tighten_timer_slack();
    let args = Args::parse();
    let mut rt = tokio::runtime::Builder::new_multi_thread();
    rt.enable_all();
    if let Some(n) = args.threads {
        rt.worker_threads(n.get());
    }
    let rt = rt.build().context("starting the tokio runtime")?;
    let report = rt.block_on(async_main(args))?;
    let mut err = std::io::stderr().lock();
    report.write_human(&mut err)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", report.to_json())?;
    Ok(())
}

async fn async_main(args: Args) -> anyhow::Result<triggerfish_bench::loadgen::report::RunReport> {
    let clock = Clock::new();
    let run_id = (clock.now_ns() as u32) ^ std::process::id().rotate_left(16);
    let config = run_config(&args, run_id)?;

    let stop = Arc::new(AtomicBool::new(false));
    tokio::spawn(stop_on_signal(Arc::clone(&stop)));

    run(config, clock, stop, |addr| {
        let _ = writeln!(
            std::io::stderr(),
            "tf-loadgen: sink listening on http://{addr}/"
        );
    })
    .await
    .context("starting the sink")
}

fn run_config(args: &Args, run_id: u32) -> anyhow::Result<RunConfig> {
    let batch = match args.mode {
        Mode::Batch => args.batch.get(),
        Mode::Binary | Mode::Structured => 1,
    };
    let mut sink = SinkConfig::new(args.sink);
    sink.fail = args.sink_fail;
    sink.slow = args.sink_slow;
    let rate = match args.rate {
        Rate::Max => None,
        Rate::PerSecond(r) => Some(r),
    };
    if args.sink_only {
        return Ok(RunConfig {
            sink,
            send: None,
            drain: Duration::ZERO,
            sink_only_for: args.duration,
            mode: args.mode,
            rate,
        });
    }
    sink.run = Some(run_id);

    let duration = match (args.duration, args.count) {
        (None, None) => Some(Duration::from_secs(10)),
        (d, _) => d,
    };
    let (pace, plan, stop_after) = match args.rate {
        Rate::Max => (
            Pace::Max,
            Plan {
                batch,
                events: args.count.unwrap_or(u64::MAX),
            },
            duration.unwrap_or(Duration::MAX),
        ),
        Rate::PerSecond(r) => {
            let schedule = Schedule::new(r, batch).context("--rate")?;
            let by_duration =
                duration.map(|d| schedule.requests_in(d).saturating_mul(u64::from(batch)));
            let events = match (args.count, by_duration) {
                (Some(c), Some(d)) => c.min(d),
                (Some(c), None) => c,
                (None, Some(d)) => d,
                (None, None) => u64::MAX,
            };
            let plan = Plan { batch, events };
            // A schedule that falls behind may run over by as long as the drain, no longer.
            let span = schedule.due(plan.requests());
            (Pace::Open(schedule), plan, span.saturating_add(args.drain))
        }
    };
    let target = Target::parse(&args.target)?;
    Ok(RunConfig {
        sink,
        send: Some(SenderConfig {
            target,
            encoder: Encoder::new(args.mode, args.event_type_pool.get(), run_id),
            plan,
            pace,
            stop_after,
            connections: args.connections.get(),
            quic_connections: args.quic_connections.get(),
            pacer_tick: args.pacer_tick,
            pushback_pause: args.pushback_pause,
            trust: triggerfish_router::quic::tls::Trust {
                ca_file: args.quic_ca_file.clone(),
                pinned_sha256: args.quic_pin_sha256.clone(),
                danger_accept_invalid_certs: false,
            },
        }),
        drain: args.drain,
        sink_only_for: None,
        mode: args.mode,
        rate,
    })
}

/// Sets `stop` on Ctrl-C or SIGTERM: sending stops, the drain is skipped, figures are printed.
async fn stop_on_signal(stop: Arc<AtomicBool>) {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    stop.store(true, Ordering::Relaxed);
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    stop.store(true, Ordering::Relaxed);
}
