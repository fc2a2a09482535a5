//! `triggerfish serve` as a child process, for the tests that run the real binary: started with
//! its log in a file, killed with SIGKILL or stopped with SIGTERM, and waits that end a timeout
//! with the tails of those logs.
//!
//! Listeners configured at port 0 get their ports from the kernel; [`Serve::ready`] reads the
//! bound addresses back from serve's ready line. (Picking a free port first and handing it over
//! races with every other socket the tests open meanwhile.)

// Several test binaries include this file, and each uses part of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A `triggerfish serve` process, killed on drop.
pub struct Serve(Child);

impl Serve {
    /// Starts `triggerfish serve --config config ARGS` with its listeners at port 0
    /// and the variables `env`, and blocks the calling thread until it is ready; its stderr
    /// (`RUST_LOG=info`) goes into `log`.
    pub fn ready(config: &Path, log: &Path, args: &[&str], env: &[(&str, &str)]) -> (Serve, Bound) {
        let mut all = vec![
            "--http",
            "127.0.0.1:0",
            "--admin",
            "127.0.0.1:0",
            "--quic",
            "127.0.0.1:0",
        ];
        all.extend_from_slice(args);
        let mut serve = Serve::spawn(config, log, &all, env);
        let line = wait_for_line(&mut serve.0, log, "triggerfish is ready");
        let address = |name| field(&line, name).unwrap_or_else(|| panic!("no {name}= in {line}"));
        let bound = Bound {
            http: address("http"),
            admin: address("admin"),
            quic: field(&line, "quic"),
            webhooks: field(&line, "webhooks"),
        };
        (serve, bound)
    }

    fn spawn(config: &Path, log: &Path, args: &[&str], env: &[(&str, &str)]) -> Serve {
        let log = std::fs::File::create(log).unwrap();
        Serve(
            Command::new(env!("CARGO_BIN_EXE_triggerfish"))
                .arg("serve")
                .arg("--config")
                .arg(config)
                .args(args)
                .envs(env.iter().copied())
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap(),
        )
    }

    /// SIGKILL: no drain, no final commit.
    pub fn crash(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }

    /// SIGTERM, and its exit status; fails if serve is still running after 30 s.
    pub fn stop(&mut self) -> ExitStatus {
        let pid = self.0.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.0.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "serve did not stop on SIGTERM in 30 s"
            );
            pause();
        }
    }
}

/// A short wait on a thread that has nothing else to do meanwhile.
fn pause() {
    #[allow(
        clippy::disallowed_methods,
        reason = "a wait before or after any task runs"
    )]
    std::thread::sleep(Duration::from_millis(50));
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The addresses a ready `triggerfish serve` listens on.
pub struct Bound {
    /// The HTTP ingress.
    pub http: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// The QUIC ingress (UDP).
    pub quic: Option<SocketAddr>,
    /// The webhook listener, when a webhook source bound it.
    pub webhooks: Option<SocketAddr>,
}

/// Blocks until a line of `log` contains `needle`, and returns that line; fails with the log's
/// tail if `child` exits first or 60 s pass.
pub fn wait_for_line(child: &mut Child, log: &Path, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains(needle)) {
            return line.to_owned();
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!(
                "exited ({status}) before logging {needle:?}:\n{}",
                log_tail(log)
            );
        }
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in 60 s:\n{}",
            log_tail(log)
        );
        pause();
    }
}

/// The address in the `name=` field of a log line.
pub fn field(line: &str, name: &str) -> Option<SocketAddr> {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
}

/// The last lines of a log, for failure messages.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// Polls `done` until it holds; on a timeout, fails with the tails of the `logs` of the
/// `triggerfish serve` processes involved.
pub async fn wait_for(
    what: &str,
    timeout: Duration,
    logs: &[&Path],
    mut done: impl FnMut() -> bool,
) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done() {
        if tokio::time::Instant::now() >= deadline {
            let tails: Vec<String> = logs
                .iter()
                .map(|log| format!("--- {}\n{}", log.display(), log_tail(log)))
                .collect();
            panic!("timed out waiting for {what}\n{}", tails.join("\n"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
