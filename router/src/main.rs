//! The `triggerfish` binary: parses the command line and hands over to [`triggerfish_router::cli`].

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::Parser as _;
use triggerfish_router::cli::{Cli, LogFormat};

/// mimalloc rather than glibc's malloc: a router allocates buffers on one thread and frees them
/// on another all the time (ingress, delivery tasks, the file sink's writer), and glibc's arena
/// locks and consolidation showed up among the hottest symbols in profiles.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // The NATS client reports every failed reconnection attempt at info; the store logs
        // what matters about the connection itself.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn"));
    // Colour only for a person at a terminal: escape codes in a log file, `kubectl logs` or a
    // log shipper are noise that breaks searching.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    triggerfish_router::cli::run(cli)
}
