//! The `triggerfish` command line: `serve`, `send`, `validate` and `test-filter`.
#![allow(
    clippy::print_stderr,
    reason = "the command line reports errors to its user on stderr"
)]

use std::io::{BufRead, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use triggerfish_core::event::{DecodeLimits, decode_structured};
use triggerfish_core::index::{MatchScratch, TriggerIndex};

use crate::serve::{Overrides, StartError, load_plan};

/// Triggerfish: a fast CloudEvents router that reads Knative's YAML.
#[derive(Debug, Parser)]
#[command(name = "triggerfish", version, propagate_version = true)]
pub struct Cli {
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "TRIGGERFISH_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the data plane: HTTP ingress, shards, delivery, admin. Without --config, runs the
    /// embedded default: broker default/default on 127.0.0.1:8080, admin on 127.0.0.1:9090.
    Serve {
        /// Config file (Knative YAML plus Triggerfish kinds); watched and hot-reloaded.
        #[arg(long, short, env = "TRIGGERFISH_CONFIG")]
        config: Option<PathBuf>,
        /// HTTP ingress address (overrides the Server document).
        #[arg(long, env = "TRIGGERFISH_HTTP")]
        http: Option<SocketAddr>,
        /// Admin address for /healthz, /readyz, /metrics and /config.
        #[arg(long, env = "TRIGGERFISH_ADMIN")]
        admin: Option<SocketAddr>,
        /// Number of shards (default: the number of cores).
        #[arg(long, env = "TRIGGERFISH_SHARDS")]
        shards: Option<usize>,
        /// QUIC ingress UDP address, or `off` (overrides the Server document).
        #[arg(long, env = "TRIGGERFISH_QUIC", value_parser = parse_quic_listen)]
        quic: Option<QuicListenArg>,
    },
    /// Publish events over HTTP or QUIC: one from flags, a JSON Lines file, or generated
    /// load; prints what was accepted, rejected and not acknowledged.
    Send(Box<crate::send::SendArgs>),
    /// Check a config file and exit: 0 when valid, 2 with the errors otherwise.
    Validate {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Try trigger filters offline: for each structured-mode event (one per line), print the
    /// triggers it matches, in config order, as `{"id": ..., "triggers": [...]}`.
    TestFilter {
        /// The config file.
        #[arg(long, short)]
        config: PathBuf,
        /// JSON Lines file of structured-mode events; `-` reads standard input.
        #[arg(long, short)]
        events: PathBuf,
    },
    /// Run the config's media worker pools behind a CloudEvents HTTP endpoint: POST an event
    /// to /{namespace}/{name} (or / with one pool); the answer is the job's reply event.
    #[cfg(feature = "media")]
    Worker {
        /// Config file holding `WorkerPool` documents (and optionally a `Server` document,
        /// whose HTTP address and limits are used).
        #[arg(long, short, env = "TRIGGERFISH_CONFIG")]
        config: PathBuf,
        /// Listen address (overrides the Server document).
        #[arg(long, env = "TRIGGERFISH_HTTP")]
        listen: Option<SocketAddr>,
    },
    /// Media pipelines on local files.
    #[cfg(feature = "media")]
    Media {
        /// What to do.
        #[command(subcommand)]
        command: MediaCommand,
    },
}

/// `triggerfish media` subcommands.
#[cfg(feature = "media")]
#[derive(Debug, Subcommand)]
pub enum MediaCommand {
    /// Run a pipeline on a file with a progress bar; print the summary and where the
    /// artifacts went.
    Run {
        /// `probe`, `audio` or `video`.
        #[arg(long, short, default_value = "video")]
        pipeline: triggerfish_workers::Pipeline,
        /// The media file.
        file: PathBuf,
        /// Directory for the artifacts (default: FILE's name plus `.triggerfish`, here).
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Video: seconds between sampled frames (default 1).
        #[arg(long)]
        interval: Option<f64>,
    },
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve {
            config,
            http,
            admin,
            shards,
            quic,
        } => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(crate::serve::serve(
                config,
                Overrides {
                    http,
                    admin,
                    shards,
                    quic: quic.map(|q| q.0),
                },
            )) {
                Ok(()) => ExitCode::SUCCESS,
                Err(StartError::Config(e)) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
                Err(StartError::Other(e)) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Validate { config } => match load_plan(Some(&config)) {
            Ok(plan) => {
                let triggers: usize = plan.brokers.iter().map(|b| b.triggers.len()).sum();
                println!(
                    "{}: valid ({}, {}, version {})",
                    config.display(),
                    count(plan.brokers.len() as u64, "broker"),
                    count(triggers as u64, "trigger"),
                    plan.config.version()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::TestFilter { config, events } => test_filter(&config, &events),
        #[cfg(feature = "media")]
        Command::Worker { config, listen } => {
            let runtime = match tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: cannot start the async runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(crate::media::worker(config, listen)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        #[cfg(feature = "media")]
        Command::Media {
            command:
                MediaCommand::Run {
                    pipeline,
                    file,
                    out,
                    interval,
                },
        } => crate::media::run_command(pipeline, &file, out, interval),
        Command::Send(args) => crate::send::run(*args),
    }
}

/// `--quic ADDR|off`.
#[derive(Clone, Copy, Debug)]
pub struct QuicListenArg(pub Option<SocketAddr>);

/// `n` and a regular English noun, singular for one: `1 event`, `3 requests`.
pub(crate) fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn parse_quic_listen(s: &str) -> Result<QuicListenArg, String> {
    if s == "off" {
        return Ok(QuicListenArg(None));
    }
    s.parse()
        .map(|a| QuicListenArg(Some(a)))
        .map_err(|_| format!("{s:?} is not a UDP address such as 127.0.0.1:8443, or off"))
}

/// `triggerfish test-filter`: exit 0 when every line decoded, 1 when a line failed, 2 when the
/// config is invalid.
fn test_filter(config: &PathBuf, events: &PathBuf) -> ExitCode {
    let plan = match load_plan(Some(config)) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    // One index over every trigger of every broker, in config order.
    let mut names = Vec::new();
    let mut filters = Vec::new();
    for trigger in plan.config.triggers() {
        match triggerfish_core::filter::Filter::from_trigger(&plan.config, trigger) {
            Ok(f) => filters.push(f),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::from(2);
            }
        }
        names.push(trigger.name().to_owned());
    }
    let index = TriggerIndex::build(filters);
    let input: Box<dyn BufRead> = if events.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        match std::fs::File::open(events) {
            Ok(f) => Box::new(std::io::BufReader::new(f)),
            Err(e) => {
                eprintln!("{}: cannot read: {e}", events.display());
                return ExitCode::FAILURE;
            }
        }
    };
    let limits = DecodeLimits {
        max_event_bytes: usize::MAX,
        ..DecodeLimits::default()
    };
    let mut scratch = MatchScratch::new();
    let mut matched = Vec::new();
    let mut failed = false;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for (n, line) in input.lines().enumerate() {
        let line_no = n + 1;
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                failed = true;
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::json!({"line": line_no, "error": format!("cannot read: {e}")})
                );
                continue;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        match decode_structured(Bytes::from(line), &limits) {
            Ok(batch) => {
                let Some(view) = batch.get(0) else { continue };
                matched.clear();
                index.matches(&view, &mut scratch, &mut matched);
                let triggers: Vec<&str> = matched
                    .iter()
                    .map(|&i| names[i as usize].as_str())
                    .collect();
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::json!({"id": view.id(), "triggers": triggers})
                );
            }
            Err(e) => {
                failed = true;
                let _ = writeln!(
                    out,
                    "{}",
                    serde_json::json!({"line": line_no, "error": e.to_string()})
                );
            }
        }
    }
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
