//! `tf-benchconfig`: writes the Knative YAML config of a broker benchmark. See
//! `triggerfish_bench::benchconfig`.
//!
//! ```sh
//! tf-benchconfig --triggers 1000 --subscriber http://127.0.0.1:18090/ \
//!     --listen 127.0.0.1:18080 --admin 127.0.0.1:19090 > bench.yaml
//! ```

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use triggerfish_bench::benchconfig::{BenchConfig, FilterStyle};

/// Writes a Knative config: broker default/default and N triggers, trigger i passing events of
/// type `com.example.bench.t<i>`, all delivering to one subscriber.
#[derive(Debug, Parser)]
#[command(name = "tf-benchconfig", version)]
struct Args {
    /// How many triggers; 0 benchmarks ingress alone (events are taken, matched and dropped).
    #[arg(long, default_value = "1")]
    triggers: u32,
    /// The subscriber URI of every trigger (the load generator's sink).
    #[arg(long)]
    subscriber: String,
    /// How each trigger's filter is written.
    #[arg(long, value_enum, default_value_t = FilterStyle::Attributes)]
    filters: FilterStyle,
    /// The router's HTTP ingress address, written as a `Server` document (`listen.http`).
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// The router's admin address (`listen.admin` of the `Server` document).
    #[arg(long)]
    admin: Option<SocketAddr>,
    /// The broker's `delivery.retry`.
    #[arg(long)]
    retry: Option<u32>,
    /// The broker's `delivery.pipelining`: HTTP/1.1 requests outstanding per connection to the
    /// subscriber.
    #[arg(long)]
    pipelining: Option<u16>,
    /// Each trigger's `spec.batch`, as a YAML flow mapping, e.g. '{maxEvents: 100, linger:
    /// PT0.002S}': batched content mode to the subscriber.
    #[arg(long)]
    batch: Option<String>,
    /// Each trigger's `spec.maxInFlight`: events in flight (with `--batch`, requests in
    /// flight are `ceil(maxInFlight / maxEvents)`). Unset: the router's default, 256, or
    /// with `--batch` eight full batches when that is more.
    #[arg(long)]
    max_in_flight: Option<u32>,
    /// The `Server` document's `store`, as a YAML flow mapping, e.g.
    /// '{kind: jetstream, url: "nats://127.0.0.1:4222"}'. Default: the memory store.
    #[arg(long)]
    store: Option<String>,
    /// The `Server` document's `quic`, as a YAML flow mapping, e.g. '{threads: 1}'.
    #[arg(long)]
    quic: Option<String>,
    /// Write here instead of stdout.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let yaml = BenchConfig {
        triggers: args.triggers,
        subscriber: args.subscriber,
        filters: args.filters,
        http: args.listen,
        admin: args.admin,
        retry: args.retry,
        pipelining: args.pipelining,
        batch: args.batch,
        max_in_flight: args.max_in_flight,
        store: args.store,
        quic: args.quic,
    }
    .to_yaml();
    match args.output {
        Some(path) => {
            std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?
        }
        None => std::io::stdout().lock().write_all(yaml.as_bytes())?,
    }
    Ok(())
}
