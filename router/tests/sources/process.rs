//! `triggerfish serve` as a child process, for the crash tests of the Kafka and RocketMQ
//! sources: started with its log in a file, killed with SIGKILL or stopped with SIGTERM, and
//! waits that end a timeout with the tails of those logs.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `triggerfish serve` process, killed on drop.
pub struct Serve(Child);

impl Serve {
    /// Starts `triggerfish serve --config config`, its stderr (`RUST_LOG=info`) into `log`.
    pub fn start(config: &Path, log: &Path) -> Serve {
        let log = std::fs::File::create(log).unwrap();
        Serve(
            Command::new(env!("CARGO_BIN_EXE_triggerfish"))
                .arg("serve")
                .arg("--config")
                .arg(config)
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

    /// SIGTERM, and waits for the exit.
    #[allow(dead_code)] // Used by the Kafka tests only.
    pub fn stop(&mut self) {
        let pid = self.0.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        self.0.wait().unwrap();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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
