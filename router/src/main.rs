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
    no_transparent_huge_pages();
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

/// Turns transparent huge pages off for this process (and the commands the `exec` sink starts),
/// unless `MIMALLOC_ALLOW_THP=1` asks for them.
///
/// mimalloc asks the kernel for huge pages on all its memory (`madvise(MADV_HUGEPAGE)`), so the
/// first touch of any 4 KiB in a 2 MiB range faults in, and zeroes, the whole 2 MiB; under
/// Linux's default `defrag=madvise` the fault may also compact memory first, synchronously.
/// Measured on this project's 2-core VM (`bench/README.md`, "Transparent huge pages"): with
/// them, a router at 300,000 events/s of batched ingress peaked at 91–184 MiB instead of
/// 57–76 MiB, and stalled for 18–255 ms in every short run, which set every tail figure. This
/// is what mimalloc itself does with `MIMALLOC_ALLOW_THP=0` (a `prctl`), done here so that
/// nobody has to know to set it.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none_or(|v| v != "1") {
        // Fails only on kernels before 3.15, which then keep their default.
        let _ = nix::sys::prctl::set_thp_disable(true);
    }
}
