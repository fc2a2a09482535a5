//! `triggerfish send`: publishes events over HTTP or QUIC, and says what became of each.
//!
//! Events come from one of three places: flags (`--type`, `--source`, `--data`, `--ext k=v`:
//! one event), a JSON Lines file of structured-mode events (`--file`, `-` for standard input),
//! or a generator (`--count`, with `--rate` and `--batch`). They go to `--to`, an
//! `http(s)://host:port/{namespace}/{broker}` or `quic://host:port/{namespace}/{broker}` URL,
//! in requests (frames) of `--batch` events, with up to `--concurrency` in flight.
//!
//! At the end it prints a summary: events accepted, rejected (invalid, with the server's
//! reasons), throttled (429/503) and not acknowledged (no answer: the server may or may not
//! have queued them), the throughput, and request latency percentiles; `--json` prints the
//! same as one JSON object on standard output. Long runs show a progress bar with the live
//! rate on a terminal. It does not retry: what was not accepted is reported, by event id.
#![allow(
    clippy::print_stderr,
    reason = "the command line reports to its user on stderr"
)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, header};
use http_body_util::Full;
use triggerfish_core::config::DEFAULT_QUIC_PORT;
use triggerfish_core::quic::Target;

use crate::quic::client::{Peer, PublishError, QuicClient};
use crate::quic::tls::Trust;

/// `triggerfish send`'s flags.
#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// Where to publish: http://host:port/{namespace}/{broker} (HTTPS too) or
    /// quic://host:port/{namespace}/{broker} (the port defaults to 8443).
    #[arg(long, default_value = "http://127.0.0.1:8080/default/default")]
    pub to: String,
    /// The event type (one event from flags, or every generated event).
    #[arg(long = "type", value_name = "TYPE")]
    pub ty: Option<String>,
    /// The event source.
    #[arg(long, default_value = "/triggerfish/send")]
    pub source: String,
    /// The event id of a single event (default: a new UUID).
    #[arg(long)]
    pub id: Option<String>,
    /// The event subject.
    #[arg(long)]
    pub subject: Option<String>,
    /// The data: JSON if it parses as JSON, else a string.
    #[arg(long)]
    pub data: Option<String>,
    /// An extension attribute, `name=value`; repeatable.
    #[arg(long = "ext", value_name = "NAME=VALUE")]
    pub ext: Vec<String>,
    /// A JSON Lines file of structured-mode events, one per line; `-` reads standard input.
    /// Blank lines are skipped; a line that is not a JSON object is reported and not sent.
    #[arg(long, conflicts_with_all = ["id", "count"])]
    pub file: Option<PathBuf>,
    /// Generate this many events (type from --type, data from --data or {"seq": N}).
    #[arg(long)]
    pub count: Option<u64>,
    /// Events per second, spread evenly (default: as fast as the server answers).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Events per request (HTTP: a batched-mode body; QUIC: a frame).
    #[arg(long, default_value = "1")]
    pub batch: std::num::NonZeroU32,
    /// Requests in flight at once (HTTP connections, or QUIC streams on one connection).
    #[arg(long, default_value = "8")]
    pub concurrency: std::num::NonZeroUsize,
    /// Per-request timeout, in seconds.
    #[arg(long, default_value = "30")]
    pub timeout: f64,
    /// QUIC: PEM file of CA certificates to trust (a server's development certificate is its
    /// own CA: `{dataDir}/quic/dev-cert.pem`).
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// QUIC: trust the server certificate with this SHA-256 fingerprint (the server logs it).
    #[arg(long = "pin-sha256", value_name = "FINGERPRINT")]
    pub pin_sha256: Vec<String>,
    /// QUIC: accept any server certificate. Anyone on the path can read and change the
    /// events; for experiments only.
    #[arg(long)]
    pub danger_accept_invalid_certs: bool,
    /// A bearer token, for brokers that authenticate senders: sent as `Authorization: Bearer`
    /// over HTTP and as the frame credential over QUIC.
    #[arg(
        long,
        env = "TRIGGERFISH_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    pub token: Option<String>,
    /// A file holding the bearer token (a trailing newline is ignored).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// Print the summary as one JSON object on standard output.
    #[arg(long)]
    pub json: bool,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `triggerfish send`: 0 when every event was accepted, 1 when some were not, 2 for a
/// usage error.
pub fn run(args: SendArgs) -> ExitCode {
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
    match runtime.block_on(send(args)) {
        Ok((summary, json)) => {
            if json {
                println!("{}", summary.to_json());
            }
            summary.print();
            if summary.all_accepted() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Where events go.
enum Transport {
    Http {
        client: Box<crate::sinks::http::HttpClient>,
        uri: http::Uri,
    },
    Quic {
        client: Arc<QuicClient>,
        peer: Peer,
        target: String,
    },
}

/// What one request came to.
enum Outcome {
    /// Every event was accepted, or some were rejected by index.
    Answered {
        accepted: u64,
        rejected: Vec<(usize, String)>,
    },
    /// The request was refused whole. `invalid`: the events that made an HTTP batch
    /// invalid, by index, when the answer names them (the others were refused with them).
    Refused {
        status: u16,
        message: String,
        throttled: bool,
        invalid: Vec<(usize, String)>,
    },
    /// No answer. `maybe`: the server may have queued the events. `fatal`: no connection
    /// can be made, so the run stops.
    Failed {
        error: String,
        maybe: bool,
        fatal: bool,
    },
}

async fn send(args: SendArgs) -> anyhow::Result<(Summary, bool)> {
    let authorization = authorization(&args)?;
    let transport = transport(&args).await?;
    let source = Source::new(&args)?;
    let total = source.total();
    let batch = args.batch.get() as usize;
    let bar = progress(total, args.quiet);
    let shared = Arc::new(Shared {
        source: parking_lot::Mutex::new(source),
        summary: parking_lot::Mutex::new(Summary::default()),
        transport,
        authorization,
        batch,
        rate: args.rate.filter(|r| r.is_finite() && *r > 0.0),
        started: Instant::now(),
        sent: AtomicU64::new(0),
        timeout: Duration::try_from_secs_f64(args.timeout).unwrap_or(Duration::from_secs(30)),
        bar,
        stopped: std::sync::atomic::AtomicBool::new(false),
    });
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency.get() {
        workers.spawn(worker(Arc::clone(&shared)));
    }
    while workers.join_next().await.is_some() {}
    shared.bar.finish_and_clear();
    if let Transport::Quic { client, .. } = &shared.transport {
        client.close().await;
    }
    let mut summary = std::mem::take(&mut *shared.summary.lock());
    summary.seconds = shared.started.elapsed().as_secs_f64();
    if let Some(total) = total {
        summary.unsent = total.saturating_sub(summary.sent);
    }
    summary.to = args.to.clone();
    Ok((summary, args.json))
}

struct Shared {
    source: parking_lot::Mutex<Source>,
    summary: parking_lot::Mutex<Summary>,
    transport: Transport,
    /// `Bearer <token>`, when a token was given.
    authorization: Option<HeaderValue>,
    batch: usize,
    rate: Option<f64>,
    started: Instant,
    sent: AtomicU64,
    timeout: Duration,
    bar: indicatif::ProgressBar,
    /// Set when the server cannot be reached any more: the run stops.
    stopped: std::sync::atomic::AtomicBool,
}

async fn worker(shared: Arc<Shared>) {
    loop {
        if shared.stopped.load(Ordering::Relaxed) {
            return;
        }
        let mut malformed = Vec::new();
        let next = shared
            .source
            .lock()
            .next_batch(shared.batch, &mut malformed);
        if !malformed.is_empty() {
            shared.summary.lock().malformed(malformed);
        }
        let Some(events) = next else {
            return;
        };
        let n = events.len() as u64;
        let first = shared.sent.fetch_add(n, Ordering::Relaxed);
        if let Some(rate) = shared.rate {
            let due = shared.started + Duration::from_secs_f64(first as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let started = Instant::now();
        let outcome = match tokio::time::timeout(
            shared.timeout,
            request(&shared.transport, shared.authorization.as_ref(), &events),
        )
        .await
        {
            Ok(o) => o,
            Err(_) => Outcome::Failed {
                error: "timed out".into(),
                maybe: true,
                fatal: false,
            },
        };
        if let Outcome::Failed { fatal: true, .. } = &outcome {
            shared.stopped.store(true, Ordering::Relaxed);
        }
        let micros = started.elapsed().as_micros() as u64;
        shared.summary.lock().record(&events, outcome, micros);
        shared.bar.inc(n);
    }
}

/// `e` and its causes, `: `-separated: hyper's client error alone says only "client error
/// (Connect)", its causes say "Connection refused (os error 111)".
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some layers repeat their cause's text in their own.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

async fn request(
    transport: &Transport,
    authorization: Option<&HeaderValue>,
    events: &[Event],
) -> Outcome {
    let body = body(events);
    match transport {
        Transport::Quic { peer, target, .. } => {
            let credential = authorization.map(HeaderValue::as_bytes);
            match peer
                .publish(target, credential, body, events.len() as u32)
                .await
            {
                Ok(ack) if ack.status == 202 => Outcome::Answered {
                    accepted: u64::from(ack.accepted),
                    rejected: ack
                        .rejected
                        .into_iter()
                        .map(|r| (r.index as usize, format!("{} {}", r.status, r.error)))
                        .collect(),
                },
                Ok(ack) => Outcome::Refused {
                    invalid: Vec::new(),
                    status: ack.status,
                    throttled: matches!(ack.status, 429 | 503),
                    message: if ack.retry_after_ms > 0 {
                        format!("{} (retry after {} ms)", ack.message, ack.retry_after_ms)
                    } else {
                        ack.message
                    },
                },
                Err(e) => Outcome::Failed {
                    maybe: e.may_have_published(),
                    fatal: matches!(e, PublishError::Connect { .. } | PublishError::Tls { .. }),
                    error: e.to_string(),
                },
            }
        }
        Transport::Http { client, uri } => {
            let ct = if events.len() == 1 {
                "application/cloudevents+json"
            } else {
                "application/cloudevents-batch+json"
            };
            let body = if events.len() == 1 {
                events[0].json.clone()
            } else {
                body
            };
            let mut req = http::Request::new(Full::new(body));
            *req.method_mut() = Method::POST;
            *req.uri_mut() = uri.clone();
            req.headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            if let Some(value) = authorization {
                req.headers_mut()
                    .insert(header::AUTHORIZATION, value.clone());
            }
            let response = match client.request(req).await {
                Ok(r) => r,
                Err(e) => {
                    return Outcome::Failed {
                        maybe: !e.is_connect(),
                        fatal: e.is_connect(),
                        error: with_causes(&e),
                    };
                }
            };
            let status = response.status().as_u16();
            let retry = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = match crate::body::read_limited(
                &http::HeaderMap::new(),
                response.into_body(),
                1 << 20,
            )
            .await
            {
                Ok(b) => b,
                Err(e) => {
                    return Outcome::Failed {
                        maybe: true,
                        fatal: false,
                        error: e.to_string(),
                    };
                }
            };
            if (200..300).contains(&status) {
                return Outcome::Answered {
                    accepted: events.len() as u64,
                    rejected: Vec::new(),
                };
            }
            let text = String::from_utf8_lossy(&body).into_owned();
            let message = match retry {
                Some(r) => format!("{text} (retry after {r} s)"),
                None => text,
            };
            Outcome::Refused {
                status,
                throttled: matches!(status, 429 | 503),
                invalid: invalid_events(&body),
                message,
            }
        }
    }
}

/// The events a 400 answer to a batch names: `{"events": [{"index", "error"}]}`.
fn invalid_events(body: &[u8]) -> Vec<(usize, String)> {
    #[derive(serde::Deserialize)]
    struct Answer {
        events: Vec<Invalid>,
    }
    #[derive(serde::Deserialize)]
    struct Invalid {
        index: usize,
        error: String,
    }
    serde_json::from_slice::<Answer>(body).map_or_else(
        |_| Vec::new(),
        |a| a.events.into_iter().map(|e| (e.index, e.error)).collect(),
    )
}

fn body(events: &[Event]) -> Bytes {
    triggerfish_core::event::join_batched(events.iter().map(|e| &e.json[..]))
}

/// `Bearer <token>` from `--token`, `TRIGGERFISH_TOKEN` or `--token-file`; marked sensitive.
fn authorization(args: &SendArgs) -> anyhow::Result<Option<HeaderValue>> {
    let token = match (&args.token, &args.token_file) {
        (Some(t), _) => t.trim().to_owned(),
        (None, Some(path)) => crate::auth::read_secret(Some(path), None)
            .map_err(|e| anyhow::anyhow!("--token-file: {e}"))?
            .expose()
            .trim()
            .to_owned(),
        (None, None) => return Ok(None),
    };
    if token.is_empty() {
        anyhow::bail!("the token is empty");
    }
    let mut value = HeaderValue::try_from(format!("Bearer {token}"))
        .map_err(|_| anyhow::anyhow!("the token holds characters a header cannot carry"))?;
    value.set_sensitive(true);
    Ok(Some(value))
}

async fn transport(args: &SendArgs) -> anyhow::Result<Transport> {
    let url = url::Url::parse(&args.to).map_err(|e| anyhow::anyhow!("--to {:?}: {e}", args.to))?;
    match url.scheme() {
        "http" | "https" => Ok(Transport::Http {
            client: Box::new(crate::sinks::http::client()?),
            uri: args.to.parse()?,
        }),
        "quic" => {
            let host = url
                .host_str()
                .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_owned())
                .ok_or_else(|| anyhow::anyhow!("--to {:?}: no host", args.to))?;
            let target = url.path().trim_start_matches('/').to_owned();
            Target::parse(target.as_bytes())
                .map_err(|e| anyhow::anyhow!("--to {:?}: {e}", args.to))?;
            if args.danger_accept_invalid_certs {
                eprintln!(
                    "warning: --danger-accept-invalid-certs: the server's certificate is not checked; anyone on the path can read and change these events"
                );
            }
            let trust = Trust {
                ca_file: args.ca_file.clone(),
                pinned_sha256: args.pin_sha256.clone(),
                danger_accept_invalid_certs: args.danger_accept_invalid_certs,
            };
            let client = Arc::new(QuicClient::new(&trust)?);
            let peer = Peer::new(
                Arc::clone(&client),
                &host,
                url.port().unwrap_or(DEFAULT_QUIC_PORT),
            );
            // Connect first, so a TLS or address problem is one clear error, not one per frame.
            peer.connection()
                .await
                .map_err(|e: PublishError| anyhow::anyhow!("{e}"))?;
            Ok(Transport::Quic {
                client,
                peer,
                target,
            })
        }
        other => anyhow::bail!(
            "--to {:?}: scheme {other:?}; use http, https or quic",
            args.to
        ),
    }
}

fn progress(total: Option<u64>, quiet: bool) -> indicatif::ProgressBar {
    // Hidden when standard error is not a terminal, and for short runs.
    if quiet || total.is_some_and(|t| t < 1000) {
        return indicatif::ProgressBar::hidden();
    }
    let bar = match total {
        Some(t) => indicatif::ProgressBar::new(t),
        None => indicatif::ProgressBar::no_length(),
    };
    let style = indicatif::ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} events, {per_sec} ({eta} left)",
    );
    if let Ok(style) = style {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// One event to send: its id, how the report names it, and its structured JSON.
struct Event {
    /// The event's id, for `not_accepted_ids` (`line N` for a file's line without one).
    id: String,
    /// How error lines name it: the id, or a file's line number and the id.
    label: String,
    json: Bytes,
}

/// Where events come from.
enum Source {
    One(Option<Event>),
    Lines {
        reader: Box<dyn std::io::BufRead + Send>,
        line: u64,
    },
    Generated {
        template: serde_json::Map<String, serde_json::Value>,
        data: Option<serde_json::Value>,
        next: u64,
        count: u64,
        run: String,
    },
}

impl Source {
    fn new(args: &SendArgs) -> anyhow::Result<Source> {
        if let Some(path) = &args.file {
            let reader: Box<dyn std::io::BufRead + Send> = if path.as_os_str() == "-" {
                Box::new(std::io::BufReader::new(std::io::stdin()))
            } else {
                let f = std::fs::File::open(path)
                    .map_err(|e| anyhow::anyhow!("{}: cannot read: {e}", path.display()))?;
                Box::new(std::io::BufReader::new(f))
            };
            return Ok(Source::Lines { reader, line: 0 });
        }
        let mut template = serde_json::Map::new();
        template.insert("specversion".into(), "1.0".into());
        template.insert("source".into(), args.source.clone().into());
        template.insert(
            "type".into(),
            args.ty
                .clone()
                .unwrap_or_else(|| "dev.triggerfish.send".to_owned())
                .into(),
        );
        if let Some(s) = &args.subject {
            template.insert("subject".into(), s.clone().into());
        }
        for ext in &args.ext {
            let (k, v) = ext
                .split_once('=')
                .ok_or_else(|| anyhow::anyhow!("--ext {ext:?}: expected NAME=VALUE"))?;
            template.insert(k.to_owned(), v.to_owned().into());
        }
        let data = args.data.as_ref().map(|d| {
            serde_json::from_str::<serde_json::Value>(d).unwrap_or_else(|_| d.clone().into())
        });
        if let Some(count) = args.count {
            return Ok(Source::Generated {
                template,
                data,
                next: 0,
                count,
                run: uuid::Uuid::new_v4().simple().to_string()[..8].to_owned(),
            });
        }
        if args.ty.is_none() {
            anyhow::bail!(
                "say what to send: --type (one event), --file (JSON Lines) or --count (generated load)"
            );
        }
        let id = args
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        Ok(Source::One(Some(event(&template, &id, data.as_ref()))))
    }

    fn total(&self) -> Option<u64> {
        match self {
            Source::One(_) => Some(1),
            Source::Lines { .. } => None,
            Source::Generated { count, .. } => Some(*count),
        }
    }

    /// Up to `n` events. A file's lines that are not JSON objects are not sent: each is
    /// described in `malformed`.
    fn next_batch(&mut self, n: usize, malformed: &mut Vec<String>) -> Option<Vec<Event>> {
        let mut out = Vec::with_capacity(n);
        match self {
            Source::One(e) => out.extend(e.take()),
            Source::Lines { reader, line } => {
                let mut text = String::new();
                while out.len() < n {
                    text.clear();
                    match reader.read_line(&mut text) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                    *line += 1;
                    let t = text.trim();
                    if t.is_empty() {
                        continue;
                    }
                    // A line that is not a JSON object would make a batch's whole body
                    // invalid: it is reported here, and the others are sent.
                    let value = match serde_json::from_str::<serde_json::Value>(t) {
                        Ok(v @ serde_json::Value::Object(_)) => v,
                        Ok(_) => {
                            malformed.push(format!("line {line}: not sent: not a JSON object"));
                            continue;
                        }
                        Err(e) => {
                            malformed.push(format!("line {line}: not sent: not JSON ({e})"));
                            continue;
                        }
                    };
                    let id = value
                        .get("id")
                        .and_then(|i| i.as_str())
                        .filter(|i| !i.is_empty());
                    let label = match id {
                        Some(id) => format!("line {line} ({id})"),
                        None => format!("line {line}"),
                    };
                    out.push(Event {
                        id: id.map_or_else(|| format!("line {line}"), str::to_owned),
                        label,
                        json: Bytes::copy_from_slice(t.as_bytes()),
                    });
                }
            }
            Source::Generated {
                template,
                data,
                next,
                count,
                run,
            } => {
                while out.len() < n && *next < *count {
                    let id = format!("send-{run}-{next}");
                    let d = data
                        .clone()
                        .unwrap_or_else(|| serde_json::json!({ "seq": *next }));
                    out.push(event(template, &id, Some(&d)));
                    *next += 1;
                }
            }
        }
        (!out.is_empty()).then_some(out)
    }
}

fn event(
    template: &serde_json::Map<String, serde_json::Value>,
    id: &str,
    data: Option<&serde_json::Value>,
) -> Event {
    let mut e = template.clone();
    e.insert("id".into(), id.into());
    if let Some(d) = data {
        if !d.is_string() {
            e.insert("datacontenttype".into(), "application/json".into());
        }
        e.insert("data".into(), d.clone());
    }
    let json = serde_json::to_vec(&e).unwrap_or_default();
    Event {
        id: id.to_owned(),
        label: id.to_owned(),
        json: Bytes::from(json),
    }
}

/// What a `send` run came to.
#[derive(Debug, Default, serde::Serialize)]
pub struct Summary {
    /// The destination.
    pub to: String,
    /// Requests (frames) sent.
    pub requests: u64,
    /// Events sent.
    pub sent: u64,
    /// Events the server queued.
    pub accepted: u64,
    /// Events the server refused as invalid or too large.
    pub rejected: u64,
    /// Events refused for now (429/503): full queues or shutting down.
    pub throttled: u64,
    /// Events without an answer: the server may or may not have queued them.
    pub unacknowledged: u64,
    /// Events never sent: the run stopped because the server could not be reached.
    pub unsent: u64,
    /// Lines of a `--file` that are not JSON objects: reported in `errors`, never sent.
    pub malformed: u64,
    /// Ids of events not accepted (rejected, throttled or unacknowledged), up to 1000.
    pub not_accepted_ids: Vec<String>,
    /// Reasons, up to 20: `<id>: reason`, or `line <n> (<id>): reason` for a file's events,
    /// and the malformed lines.
    pub errors: Vec<String>,
    /// Seconds from the first request to the last answer.
    pub seconds: f64,
    /// Request latency, µs.
    pub latency_us: Percentiles,
    #[serde(skip)]
    histogram: Option<hdrhistogram::Histogram<u64>>,
}

/// Request latency percentiles, µs.
#[derive(Debug, Default, serde::Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Slowest.
    pub max: u64,
}

impl Summary {
    fn record(&mut self, events: &[Event], outcome: Outcome, micros: u64) {
        self.requests += 1;
        self.sent += events.len() as u64;
        if self.histogram.is_none() {
            // Auto-resizing, 3 significant figures: cannot fail.
            self.histogram = hdrhistogram::Histogram::new(3).ok();
        }
        if let Some(h) = self.histogram.as_mut() {
            let _ = h.record(micros.max(1));
        }
        match outcome {
            Outcome::Answered { accepted, rejected } => {
                self.accepted += accepted;
                self.rejected += rejected.len() as u64;
                for (i, why) in rejected {
                    match events.get(i) {
                        Some(e) => self.note(e, &why),
                        None => self.error(format!("event {i} of a request: {why}")),
                    }
                }
            }
            Outcome::Refused {
                status,
                message,
                throttled,
                invalid,
            } => {
                if throttled {
                    self.throttled += events.len() as u64;
                } else {
                    self.rejected += events.len() as u64;
                }
                for (i, e) in events.iter().enumerate() {
                    let why = match invalid.iter().find(|(at, _)| *at == i) {
                        Some((_, error)) => format!("{status} {error}"),
                        None if !invalid.is_empty() => format!(
                            "{status} not accepted: other events of its batch are invalid, and HTTP takes a batch whole"
                        ),
                        None => format!("{status} {message}"),
                    };
                    self.note(e, &why);
                }
            }
            Outcome::Failed { error, maybe, .. } => {
                self.unacknowledged += events.len() as u64;
                let note = if maybe {
                    format!("not acknowledged ({error}); the server may have queued it")
                } else {
                    // Counted as not acknowledged, with the reason it certainly was not queued.
                    format!("not acknowledged: never reached the server ({error})")
                };
                for e in events {
                    self.note(e, &note);
                }
            }
        }
    }

    fn note(&mut self, event: &Event, why: &str) {
        if self.not_accepted_ids.len() < 1000 {
            self.not_accepted_ids.push(event.id.clone());
        }
        self.error(format!("{}: {why}", event.label));
    }

    fn malformed(&mut self, lines: Vec<String>) {
        self.malformed += lines.len() as u64;
        for line in lines {
            self.error(line);
        }
    }

    fn error(&mut self, text: String) {
        if self.errors.len() < 20 {
            self.errors.push(text);
        }
    }

    fn all_accepted(&self) -> bool {
        self.accepted == self.sent && self.unsent == 0 && self.malformed == 0
    }

    fn to_json(&self) -> String {
        let mut copy = serde_json::to_value(self).unwrap_or_default();
        if let (Some(h), Some(obj)) = (&self.histogram, copy.as_object_mut()) {
            obj.insert(
                "latency_us".into(),
                serde_json::json!({
                    "p50": h.value_at_quantile(0.5),
                    "p90": h.value_at_quantile(0.9),
                    "p99": h.value_at_quantile(0.99),
                    "max": h.max(),
                }),
            );
        }
        copy.to_string()
    }

    fn print(&self) {
        let rate = if self.seconds > 0.0 {
            self.accepted as f64 / self.seconds
        } else {
            0.0
        };
        eprintln!(
            "sent {} in {} to {} in {:.2} s: accepted {}, rejected {}, throttled {}, not acknowledged {}, not sent {} ({rate:.0} accepted/s)",
            crate::cli::count(self.sent, "event"),
            crate::cli::count(self.requests, "request"),
            self.to,
            self.seconds,
            self.accepted,
            self.rejected,
            self.throttled,
            self.unacknowledged,
            self.unsent
        );
        match self.malformed {
            0 => {}
            1 => eprintln!("1 line of the file was not sent: not a JSON object"),
            n => eprintln!("{n} lines of the file were not sent: not JSON objects"),
        }
        if let Some(h) = &self.histogram {
            eprintln!(
                "request latency: p50 {} µs, p90 {} µs, p99 {} µs, max {} µs",
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.9),
                h.value_at_quantile(0.99),
                h.max()
            );
        }
        for e in &self.errors {
            eprintln!("  {e}");
        }
        let more =
            (self.sent - self.accepted + self.malformed).saturating_sub(self.errors.len() as u64);
        if more > 0 {
            eprintln!("  ... and {more} more not accepted (--json lists up to 1000 ids)");
        }
    }
}
