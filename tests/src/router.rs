//! The router under test: `triggerfish serve` as a child process on loopback ports.
//!
//! [`Router::start`] writes the config into a fresh temporary directory (also the process's
//! working directory, so `File` sinks land there), starts
//! `triggerfish serve --config … --http 127.0.0.1:0 --admin 127.0.0.1:0 --quic 127.0.0.1:0`, and
//! waits for its ready line, which names the ports the kernel gave it (ports picked free
//! beforehand could be taken by another test's socket before the router binds them). Standard
//! output and error go to files in that directory: tests read them, and a failing test prints
//! them.
//! Dropping a `Router` sends SIGTERM, then SIGKILL if the process has not exited after
//! [`KILL_AFTER`].

use std::fs;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::binary::triggerfish;
use crate::client::{Client, Response};
use crate::event::Event;
use crate::metrics::Metrics;

/// How long a dropped router gets between SIGTERM and SIGKILL.
pub const KILL_AFTER: Duration = Duration::from_secs(5);

/// How long start-up may take.
const READY_WITHIN: Duration = Duration::from_secs(20);

/// Options of [`Router::start_with`].
#[derive(Clone, Debug)]
pub struct Options {
    /// `--shards` (default 1, so that events are matched in the order they were accepted).
    pub shards: usize,
    /// `RUST_LOG` (default: info, and debug for the router, whose retry decisions the tests
    /// read).
    pub log: String,
    /// Further environment variables of the process.
    pub env: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            shards: 1,
            log: "info,triggerfish_router=debug".to_owned(),
            env: Vec::new(),
        }
    }
}

/// A running `triggerfish serve`.
pub struct Router {
    child: Option<Child>,
    /// The ingress address.
    pub http: SocketAddr,
    /// The admin address.
    pub admin: SocketAddr,
    /// The QUIC ingress address (UDP).
    pub quic: SocketAddr,
    dir: TempDir,
    config: PathBuf,
    options: Options,
    /// A client for ingress and admin requests.
    pub client: Client,
    exit: Option<ExitStatus>,
}

impl Router {
    /// Starts the router on `config` with default [`Options`].
    pub async fn start(config: &str) -> Router {
        Router::start_with(config, Options::default()).await
    }

    /// Starts the router on `config`, its listeners on ports the kernel picks.
    pub async fn start_with(config: &str, options: Options) -> Router {
        let dir = tempfile::Builder::new()
            .prefix("triggerfish-e2e-")
            .tempdir()
            .expect("creating a temporary directory");
        let config_path = dir.path().join("config.yaml");
        fs::write(&config_path, config).expect("writing the config");
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut child = spawn(dir.path(), &config_path, &options, [any; 3]);
        match wait_ready(&mut child, dir.path()).await {
            Ok([http, admin, quic]) => Router {
                child: Some(child),
                http,
                admin,
                quic,
                dir,
                config: config_path,
                options,
                client: Client::new(),
                exit: None,
            },
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the router did not start: {e}");
            }
        }
    }

    /// The ingress URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.http)
    }

    /// The ingress URL of broker `default/{name}`.
    pub fn broker_url(&self, name: &str) -> String {
        self.url(&format!("/default/{name}"))
    }

    /// The `quic://` URL of broker `default/{name}`.
    pub fn quic_url(&self, name: &str) -> String {
        format!("quic://{}/default/{name}", self.quic)
    }

    /// The QUIC ingress's self-signed development certificate (a client's CA file).
    pub fn quic_cert(&self) -> PathBuf {
        self.dir.path().join("data/quic/dev-cert.pem")
    }

    /// The admin URL of `path`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Publishes `event` in binary mode to broker `default/default`; panics unless it is
    /// accepted (202).
    pub async fn publish(&self, event: &Event) {
        let r = self
            .client
            .send_binary(&self.broker_url("default"), event)
            .await;
        assert_eq!(
            r.code(),
            202,
            "publishing {}: {} {}",
            event.id(),
            r.status,
            r.text()
        );
    }

    /// Publishes `events` to broker `default/default` in batched requests of 50; panics
    /// unless each is accepted (202).
    pub async fn publish_batches(&self, events: &[Event]) {
        for chunk in events.chunks(50) {
            let r = self
                .client
                .send_batch(&self.broker_url("default"), chunk)
                .await;
            assert_eq!(r.code(), 202, "publishing a batch: {}", r.text());
        }
    }

    /// Publishes `events` in one request to broker `default/default`, again while the answer is
    /// 429 or 503 (small, busy queues); panics unless they are accepted within [`PATIENCE`].
    pub async fn publish_patiently(&self, events: &[Event]) {
        let deadline = Instant::now() + crate::PATIENCE;
        loop {
            let r = self
                .client
                .send_batch(&self.broker_url("default"), events)
                .await;
            match r.code() {
                202 => return,
                429 | 503 if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                code => panic!("publishing {} events: {code} {}", events.len(), r.text()),
            }
        }
    }

    /// Scrapes `/metrics`.
    pub async fn metrics(&self) -> Metrics {
        let r = self.client.get(&self.admin_url("/metrics")).await;
        assert_eq!(r.code(), 200, "/metrics: {}", r.text());
        Metrics::new(r.text())
    }

    /// Polls `/metrics` until `name{labels}` reaches `at_least`; panics after `timeout`.
    pub async fn wait_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        at_least: f64,
        timeout: Duration,
    ) -> Metrics {
        let deadline = Instant::now() + timeout;
        loop {
            let m = self.metrics().await;
            if m.get(name, labels) >= at_least {
                return m;
            }
            assert!(
                Instant::now() < deadline,
                "{name}{labels:?} stayed at {} (waited for {at_least} for {timeout:?})",
                m.get(name, labels)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `/config`, as JSON.
    pub async fn config_status(&self) -> Value {
        let r = self.client.get(&self.admin_url("/config")).await;
        assert_eq!(r.code(), 200, "/config: {}", r.text());
        r.json()
    }

    /// `GET /readyz`; `Err` when the admin listener does not answer.
    pub async fn readyz(&self) -> Result<Response, String> {
        self.client
            .try_request(
                http::Method::GET,
                &self.admin_url("/readyz"),
                &[],
                bytes::Bytes::new(),
            )
            .await
    }

    /// The config file the router watches.
    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// The router's working directory (a temporary directory).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The active config's version (`/config`).
    pub async fn config_version(&self) -> String {
        let status = self.config_status().await;
        status["version"]
            .as_str()
            .expect("/config has a version")
            .to_owned()
    }

    /// Polls `/config` until its version differs from `old`; returns the new one.
    pub async fn wait_config_change(&self, old: &str) -> String {
        crate::eventually(
            "the new config to become active",
            crate::PATIENCE,
            || async {
                let v = self.config_version().await;
                (v != old).then_some(v)
            },
        )
        .await
    }

    /// Replaces the config with `text` ([`Router::write_config`]) and waits until it is
    /// active; returns its version.
    pub async fn reload(&self, text: &str) -> String {
        let old = self.config_version().await;
        self.write_config(text);
        self.wait_config_change(&old).await
    }

    /// Replaces the config file atomically (write a sibling, then rename over it), as editors
    /// and Kubernetes do.
    pub fn write_config(&self, text: &str) {
        let tmp = self.dir.path().join(".config.yaml.tmp");
        fs::write(&tmp, text).expect("writing the new config");
        fs::rename(&tmp, &self.config).expect("replacing the config");
    }

    /// Everything the router wrote to standard output so far.
    pub fn stdout(&self) -> String {
        fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }

    /// Everything the router wrote to standard error (its logs) so far.
    pub fn stderr(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    /// Waits until the logs contain `needle`; panics after `timeout`.
    pub async fn wait_log(&self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let logs = self.stderr();
            if logs.contains(needle) {
                return logs;
            }
            assert!(
                Instant::now() < deadline,
                "the logs do not contain {needle:?} after {timeout:?}:\n{logs}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends SIGTERM (graceful shutdown).
    pub fn sigterm(&self) {
        signal(self.pid(), "TERM");
    }

    /// Kills the process with SIGKILL, as a crash would, and waits for it to be gone.
    pub fn kill(&mut self) {
        if self.try_exit_status().is_some() {
            return;
        }
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            self.exit = child.wait().ok();
        }
    }

    /// Kills the process with SIGKILL, as a crash would, and starts it again in the same
    /// directory (its data directory too), on the same config and addresses. The first run's
    /// logs move to `stderr.1.log` and `stdout.1.log`.
    pub async fn crash_and_restart(&mut self) {
        self.kill();
        for log in ["stderr", "stdout"] {
            let (from, to) = (format!("{log}.log"), format!("{log}.1.log"));
            let _ = fs::rename(self.dir.path().join(from), self.dir.path().join(to));
        }
        let addrs = [self.http, self.admin, self.quic];
        let mut child = spawn(self.dir.path(), &self.config, &self.options, addrs);
        match wait_ready(&mut child, self.dir.path()).await {
            Ok(_) => {
                self.child = Some(child);
                self.exit = None;
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("the router did not start again: {e}");
            }
        }
    }

    /// Freezes the process (SIGSTOP), as a long pause would: it holds its connections and
    /// leases but does nothing until [`Router::resume`].
    pub fn pause(&self) {
        signal(self.pid(), "STOP");
    }

    /// Lets a paused process run again (SIGCONT).
    pub fn resume(&self) {
        signal(self.pid(), "CONT");
    }

    /// Waits for the process to exit; panics after `timeout`.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the router did not exit within {timeout:?}:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The exit status if the process has exited, without waiting.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Some(child) = self.child.as_mut()
        {
            self.exit = child.try_wait().ok().flatten();
        }
        self.exit
    }

    /// Prints the router's output, for a failing test.
    #[allow(clippy::print_stderr, reason = "shown by the test harness on failure")]
    pub fn print_logs(&self) {
        eprintln!(
            "---- triggerfish stdout ({}) ----\n{}\n---- triggerfish stderr ----\n{}\n----",
            self.dir.path().display(),
            self.stdout(),
            self.stderr()
        );
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_logs();
        }
        if self.try_exit_status().is_some() {
            return;
        }
        let Some(child) = self.child.as_mut() else {
            return;
        };
        signal(child.id(), "TERM");
        let deadline = Instant::now() + KILL_AFTER;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            // Drop cannot await; the tests run on a multi-threaded runtime, so peers keep
            // answering on the other worker while this one waits.
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Starts `triggerfish serve` in `dir` with its HTTP, admin and QUIC listeners on `addrs`.
fn spawn(dir: &Path, config: &Path, options: &Options, addrs: [SocketAddr; 3]) -> Child {
    let [http, admin, quic] = addrs.map(|a| a.to_string());
    let stdout = fs::File::create(dir.join("stdout.log")).expect("creating stdout.log");
    let stderr = fs::File::create(dir.join("stderr.log")).expect("creating stderr.log");
    Command::new(triggerfish())
        .arg("serve")
        .arg("--config")
        .arg(config)
        .args(["--http", &http, "--admin", &admin, "--quic", &quic])
        .arg("--shards")
        .arg(options.shards.to_string())
        .current_dir(dir)
        .env("RUST_LOG", &options.log)
        .env_remove("TRIGGERFISH_CONFIG")
        .env_remove("TRIGGERFISH_HTTP")
        .env_remove("TRIGGERFISH_ADMIN")
        .env_remove("TRIGGERFISH_SHARDS")
        .env_remove("TRIGGERFISH_QUIC")
        .env_remove("TRIGGERFISH_LOG_FORMAT")
        .envs(options.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .expect("starting triggerfish serve")
}

/// Waits for the router's ready line and returns the HTTP, admin and QUIC addresses it names;
/// `Err` with the router's logs if it exits first or is not ready in time.
async fn wait_ready(child: &mut Child, dir: &Path) -> Result<[SocketAddr; 3], String> {
    let deadline = Instant::now() + READY_WITHIN;
    let logs = || fs::read_to_string(dir.join("stderr.log")).unwrap_or_default();
    loop {
        if let Some(line) = logs().lines().find(|l| l.contains("triggerfish is ready")) {
            let address = |name: &str| {
                line.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| format!("no {name}= address in the ready line: {line}"))
            };
            return Ok([address("http")?, address("admin")?, address("quic")?]);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("exited with {status}:\n{}", logs()));
        }
        if Instant::now() > deadline {
            return Err(format!("not ready within {READY_WITHIN:?}:\n{}", logs()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port that was free a moment ago (for processes that must be told their port, such as
/// `nats-server`); another socket may take it before they bind it.
pub fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral port");
    listener.local_addr().expect("the ephemeral port")
}

/// Sends a signal with `kill(1)` (the workspace forbids `unsafe`, so no `libc::kill`).
fn signal(pid: u32, name: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}
