//! Real `nats-server` processes with JetStream, for the cluster tests.
//!
//! [`Nats::start`] runs one server, [`Nats::cluster`] three (or more) joined by routes, each
//! on loopback ports picked at runtime, with its JetStream store in a temporary directory that
//! outlives restarts of the process. Servers can be stopped gracefully ([`Nats::stop`]),
//! killed ([`Nats::kill`], SIGKILL) and started again on the same ports and store
//! ([`Nats::restart`]). Each server's output goes to a file that a failing test prints.
//! Dropping a [`Nats`] kills whatever still runs.
//!
//! Readiness is the server's own `/healthz` on its monitoring port, which in a cluster answers
//! 200 only once JetStream has a meta leader.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::client::Client;
use crate::router::free_port;

/// How long a server may take to report healthy (a cluster elects its meta leader first).
const HEALTHY_WITHIN: Duration = Duration::from_secs(30);

/// The `nats-server` binary: `$NATS_SERVER`, else `nats-server` on the `PATH` (`scripts/dev`
/// installs Debian's).
pub fn binary() -> PathBuf {
    std::env::var_os("NATS_SERVER").map_or_else(|| PathBuf::from("nats-server"), PathBuf::from)
}

/// One server of a [`Nats`] deployment.
struct Server {
    name: String,
    client: SocketAddr,
    monitor: SocketAddr,
    /// The cluster (route) listener, in a cluster.
    cluster: Option<SocketAddr>,
    store: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// One `nats-server`, or a cluster of them.
pub struct Nats {
    servers: Vec<Server>,
    routes: Vec<SocketAddr>,
    dir: TempDir,
    client: Client,
}

impl Nats {
    /// Starts one server with JetStream and waits until it is healthy.
    pub async fn start() -> Nats {
        Nats::start_n(1).await
    }

    /// Starts a cluster of `n` servers with JetStream and waits until every one is healthy
    /// (a JetStream meta leader is elected).
    pub async fn cluster(n: usize) -> Nats {
        assert!(n >= 2, "a cluster has at least two servers");
        Nats::start_n(n).await
    }

    async fn start_n(n: usize) -> Nats {
        let mut last_error = String::new();
        // A port picked free may be taken before the server binds it: start again on others.
        for _ in 0..3 {
            let dir = tempfile::Builder::new()
                .prefix("triggerfish-nats-")
                .tempdir()
                .expect("creating a temporary directory");
            let clustered = n > 1;
            let servers: Vec<Server> = (0..n)
                .map(|i| Server {
                    name: format!("n{i}"),
                    client: free_port(),
                    monitor: free_port(),
                    cluster: clustered.then(free_port),
                    store: dir.path().join(format!("n{i}")),
                    log: dir.path().join(format!("n{i}.log")),
                    child: None,
                })
                .collect();
            let routes = servers.iter().filter_map(|s| s.cluster).collect();
            let mut nats = Nats {
                servers,
                routes,
                dir,
                client: Client::new(),
            };
            for i in 0..n {
                nats.spawn(i);
            }
            match nats.wait_all_healthy().await {
                Ok(()) => return nats,
                Err(e) => last_error = e,
            }
        }
        panic!("nats-server did not start after 3 tries: {last_error}");
    }

    /// The client URLs of every server, comma-separated, as `Server.spec.store.url` takes them.
    pub fn url(&self) -> String {
        self.servers
            .iter()
            .map(|s| format!("nats://{}", s.client))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client URL of server `i`.
    pub fn server_url(&self, i: usize) -> String {
        format!("nats://{}", self.servers[i].client)
    }

    /// The monitoring URL of `path` on server `i` (`/jsz`, `/healthz`, ...).
    pub fn monitor_url(&self, i: usize, path: &str) -> String {
        format!("http://{}{path}", self.servers[i].monitor)
    }

    /// How many servers there are.
    pub fn len(&self) -> usize {
        self.servers.len()
    }

    /// Whether there are none (never: a deployment has at least one server).
    pub fn is_empty(&self) -> bool {
        self.servers.is_empty()
    }

    /// Kills server `i` with SIGKILL, as a crash would, and waits for it to be gone.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.servers[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops server `i` with SIGTERM (graceful) and waits up to 10 s, then kills it.
    pub fn stop(&mut self, i: usize) {
        let Some(mut child) = self.servers[i].child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            // Called from async tests between awaits; a short blocking wait is harmless.
            #[allow(clippy::disallowed_methods)]
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Starts server `i` again on its ports and store, and waits until it is healthy.
    pub async fn restart(&mut self, i: usize) {
        assert!(
            self.servers[i].child.is_none(),
            "server {i} is still running"
        );
        self.spawn(i);
        if let Err(e) = self.wait_healthy(i).await {
            panic!("nats-server {i} did not come back: {e}");
        }
    }

    /// Waits until server `i` reports healthy.
    pub async fn wait_healthy(&mut self, i: usize) -> Result<(), String> {
        let deadline = Instant::now() + HEALTHY_WITHIN;
        let url = self.monitor_url(i, "/healthz");
        loop {
            let server = &mut self.servers[i];
            if let Some(child) = server.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                server.child = None;
                return Err(format!(
                    "{} exited with {status}:\n{}",
                    server.name,
                    read(&server.log)
                ));
            }
            if let Ok(r) = self
                .client
                .try_request(http::Method::GET, &url, &[], bytes::Bytes::new())
                .await
                && r.code() == 200
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} not healthy within {HEALTHY_WITHIN:?}:\n{}",
                    self.servers[i].name,
                    read(&self.servers[i].log)
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_all_healthy(&mut self) -> Result<(), String> {
        for i in 0..self.servers.len() {
            if let Err(e) = self.wait_healthy(i).await {
                for j in 0..self.servers.len() {
                    self.kill(j);
                }
                return Err(e);
            }
        }
        Ok(())
    }

    fn spawn(&mut self, i: usize) {
        let routes = self
            .routes
            .iter()
            .map(|r| format!("nats://{r}"))
            .collect::<Vec<_>>()
            .join(",");
        let server = &mut self.servers[i];
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&server.log)
            .expect("opening the nats-server log");
        let mut cmd = Command::new(binary());
        cmd.args(["-js", "-a", "127.0.0.1"])
            .arg("-p")
            .arg(server.client.port().to_string())
            .arg("-m")
            .arg(server.monitor.port().to_string())
            .arg("-sd")
            .arg(&server.store)
            .arg("-n")
            .arg(&server.name);
        if let Some(cluster) = server.cluster {
            cmd.args(["--cluster_name", "tf-e2e"])
                .arg("--cluster")
                .arg(format!("nats://{cluster}"))
                .arg("--routes")
                .arg(&routes);
        }
        let child = cmd
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary().display()));
        server.child = Some(child);
    }

    /// The index of the server named `name` (`n0`, `n1`, ...).
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.servers.iter().position(|s| s.name == name)
    }

    /// Whether server `i` is running (not killed or stopped).
    pub fn is_running(&self, i: usize) -> bool {
        self.servers[i].child.is_some()
    }

    /// A JetStream stream as server `i` reports it (`/jsz`); `None` when the server does not
    /// answer or does not hold the stream.
    pub async fn stream(&self, i: usize, name: &str) -> Option<StreamState> {
        let url = self.monitor_url(i, "/jsz?streams=true&consumers=true");
        let r = self
            .client
            .try_request(http::Method::GET, &url, &[], bytes::Bytes::new())
            .await
            .ok()?;
        let jsz = r.json();
        let stream = jsz["account_details"]
            .as_array()?
            .iter()
            .flat_map(|a| a["stream_detail"].as_array().into_iter().flatten())
            .find(|s| s["name"] == name)?;
        let count = |v: &Value| v.as_u64().unwrap_or(0);
        Some(StreamState {
            messages: count(&stream["state"]["messages"]),
            leader: stream["cluster"]["leader"].as_str().map(str::to_owned),
            consumers: stream["consumer_detail"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| ConsumerState {
                    name: c["name"].as_str().unwrap_or_default().to_owned(),
                    leader: c["cluster"]["leader"].as_str().map(str::to_owned),
                    ack_pending: count(&c["num_ack_pending"]),
                    pending: count(&c["num_pending"]),
                    redelivered: count(&c["num_redelivered"]),
                })
                .collect(),
        })
    }

    /// `stream` with each consumer as its leader reports it (in a cluster, the other servers'
    /// figures may lag); `None` when no running server answers for it.
    pub async fn stream_from_leaders(&self, name: &str) -> Option<StreamState> {
        let mut views = Vec::new();
        for i in (0..self.servers.len()).filter(|&i| self.is_running(i)) {
            if let Some(s) = self.stream(i, name).await {
                views.push((self.servers[i].name.clone(), s));
            }
        }
        let (_, first) = views.first()?;
        let mut state = first.clone();
        for c in &mut state.consumers {
            if let Some(leader) = &c.leader
                && let Some((_, view)) = views.iter().find(|(n, _)| n == leader)
                && let Some(lead) = view.consumer(&c.name)
            {
                *c = lead.clone();
            }
        }
        Some(state)
    }

    /// Every server's output, for a failing test.
    pub fn logs(&self) -> String {
        self.servers
            .iter()
            .map(|s| format!("---- nats-server {} ----\n{}", s.name, read(&s.log)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        if std::thread::panicking() {
            #[allow(clippy::print_stderr, reason = "shown by the test harness on failure")]
            {
                eprintln!("{}", self.logs());
            }
        }
        for i in 0..self.servers.len() {
            self.kill(i);
        }
    }
}

/// A stream's state, from `/jsz`.
#[derive(Clone, Debug)]
pub struct StreamState {
    /// Messages stored.
    pub messages: u64,
    /// The server leading it, by name (in a cluster).
    pub leader: Option<String>,
    /// Its consumers.
    pub consumers: Vec<ConsumerState>,
}

impl StreamState {
    /// The consumer named `name`.
    pub fn consumer(&self, name: &str) -> Option<&ConsumerState> {
        self.consumers.iter().find(|c| c.name == name)
    }

    /// Whether every consumer has handed out and seen acknowledged everything stored.
    pub fn idle(&self) -> bool {
        self.consumers
            .iter()
            .all(|c| c.ack_pending == 0 && c.pending == 0)
    }
}

/// A consumer's state, from `/jsz`.
#[derive(Clone, Debug)]
pub struct ConsumerState {
    /// Its name.
    pub name: String,
    /// The server leading it, by name (in a cluster; the others' figures may lag).
    pub leader: Option<String>,
    /// Messages handed out and not acknowledged yet.
    pub ack_pending: u64,
    /// Messages not handed out yet.
    pub pending: u64,
    /// Messages handed out more than once (a replica died holding them, or an ack wait
    /// passed).
    pub redelivered: u64,
}

fn read(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    // The tail is what explains a failure; a server log can be long.
    let start = text.len().saturating_sub(20_000);
    let start = (start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    text[start..].to_owned()
}
