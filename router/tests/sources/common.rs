//! The in-process harness: a real `Router` with its shard drivers and event sources, an HTTP
//! sink that records what it receives, and a client for webhook requests. Everything listens
//! on loopback ports picked at run time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::Full;
use tokio_util::sync::CancellationToken;
use triggerfish_core::config::Config;
use triggerfish_router::body::read_limited;
use triggerfish_router::http_server::{ConnectionLimit, empty, serve};
use triggerfish_router::metrics::Metrics;
use triggerfish_router::plan::Plan;
use triggerfish_router::runtime::{Router, Settings};
use triggerfish_router::sinks::http::{HttpClient, client};
use triggerfish_router::store::Store;
use triggerfish_router::store::memory::MemoryStore;

/// A router running one config.
pub struct Harness {
    pub router: Arc<Router>,
    pub dir: tempfile::TempDir,
}

impl Harness {
    /// Loads `yaml` (with `{dir}` replaced by a fresh temporary directory) and starts it.
    pub async fn start(yaml: &str) -> Harness {
        Harness::start_with(yaml, &[]).await
    }

    /// Like [`Harness::start`], with `files` (name, content) written into `{dir}` first.
    pub async fn start_with(yaml: &str, files: &[(&str, &[u8])]) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        for (name, content) in files {
            std::fs::write(dir.path().join(name), content).unwrap();
        }
        let yaml = yaml.replace("{dir}", dir.path().to_str().unwrap());
        let config = Config::load(&yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
        let plan = Plan::build(config).unwrap_or_else(|e| panic!("{e}"));
        let settings = Settings::from_spec(plan.config.server(), None);
        let memory = Arc::new(MemoryStore::new(2, settings.shard_limits));
        let router = Arc::new(
            Router::new(
                settings,
                Store::Memory(Arc::clone(&memory)),
                Metrics::new(),
                dir.path().join("data"),
            )
            .await
            .unwrap(),
        );
        router.apply(plan);
        for queue in memory.shards() {
            tokio::spawn(triggerfish_router::shard::run(
                Arc::clone(queue),
                Arc::clone(&router.snapshot),
                Arc::clone(&router.metrics),
                router.stop.clone(),
            ));
        }
        Harness { router, dir }
    }

    /// Applies a new config to the running router.
    pub fn reload(&self, yaml: &str) {
        let yaml = yaml.replace("{dir}", self.dir.path().to_str().unwrap());
        let config = Config::load(&yaml, "test.yaml").unwrap_or_else(|e| panic!("{e}"));
        self.router
            .apply(Plan::build(config).unwrap_or_else(|e| panic!("{e}")));
    }

    /// Stops the router and waits (up to 10 s) for its Kafka consumers to commit and leave
    /// their groups, so that they do not outlive the broker the test started.
    #[allow(dead_code)] // Used by the Kafka tests, which share this harness.
    pub async fn shutdown(self) {
        self.router.stop.cancel();
        self.router
            .event_sources
            .stopped(Duration::from_secs(10))
            .await;
    }

    /// `http://<webhook address><path>`.
    pub fn url(&self, path: &str) -> String {
        let addr = self
            .router
            .event_sources
            .webhook_addr()
            .expect("webhook listener bound");
        format!("http://{addr}{path}")
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.router.stop.cancel();
    }
}

/// One request the sink received.
#[derive(Clone, Debug)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Received {
    /// A binary-mode attribute (`ce-<name>`).
    pub fn attr(&self, name: &str) -> Option<String> {
        self.headers
            .get(format!("ce-{name}"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// The `knativearrivaltime` a broker stamped: RFC 3339 in UTC, with nine digits of
    /// fraction. Panics when it is missing or malformed.
    pub fn arrival(&self) -> chrono::DateTime<chrono::Utc> {
        let text = self
            .attr("knativearrivaltime")
            .expect("no knativearrivaltime");
        assert!(
            text.len() == 30 && text.ends_with('Z'),
            "knativearrivaltime {text}"
        );
        chrono::DateTime::parse_from_rfc3339(&text)
            .unwrap_or_else(|e| panic!("knativearrivaltime {text}: {e}"))
            .to_utc()
    }
}

/// An HTTP sink on loopback that records requests and answers `status`.
pub struct Sink {
    pub addr: SocketAddr,
    received: Arc<parking_lot::Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
    #[allow(dead_code)] // Read by the Kafka tests, which share this harness.
    attempts: Arc<AtomicUsize>,
    stop: CancellationToken,
}

impl Sink {
    pub async fn start() -> Sink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let received = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let status = Arc::new(AtomicU16::new(202));
        let attempts = Arc::new(AtomicUsize::new(0));
        let stop = CancellationToken::new();
        let (r, s, a) = (
            Arc::clone(&received),
            Arc::clone(&status),
            Arc::clone(&attempts),
        );
        tokio::spawn(serve(
            listener,
            None,
            ConnectionLimit::new(64, "ingress", &Metrics::new()),
            move |req: http::Request<hyper::body::Incoming>| {
                let (r, s) = (Arc::clone(&r), Arc::clone(&s));
                a.fetch_add(1, Ordering::SeqCst);
                async move {
                    let (parts, body) = req.into_parts();
                    let body = read_limited(&parts.headers, body, 1 << 20)
                        .await
                        .unwrap_or_default();
                    let status = StatusCode::from_u16(s.load(Ordering::SeqCst)).unwrap();
                    if status.is_success() {
                        r.lock().push(Received {
                            headers: parts.headers,
                            body,
                        });
                    }
                    empty(status)
                }
            },
            stop.clone(),
            Duration::from_millis(100),
        ));
        Sink {
            addr,
            received,
            status,
            attempts,
            stop,
        }
    }

    pub fn uri(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// Makes the sink answer `status` from now on (non-2xx requests are not recorded).
    pub fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    /// Waits until at least `n` events arrived, or panics after `timeout`.
    pub async fn wait(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let got = self.received.lock().clone();
            if got.len() >= n {
                return got;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("expected {n} events, got {}: {got:#?}", got.len());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Requests received so far, whatever they were answered.
    #[allow(dead_code)] // Used by the Kafka tests, which share this harness.
    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }

    /// What arrived so far.
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().clone()
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A webhook client.
pub struct Client(HttpClient);

impl Client {
    pub fn new() -> Client {
        Client(client().unwrap())
    }

    /// Sends a request; returns the status and the body as text.
    pub async fn send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> (StatusCode, String) {
        self.try_send(method, url, headers, body).await.unwrap()
    }

    /// Like [`Client::send`], with connection errors returned.
    pub async fn try_send(
        &self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Result<(StatusCode, String), String> {
        let mut builder = http::Request::builder().method(method).uri(url);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        let response = self
            .0
            .request(builder.body(Full::new(body.into())).unwrap())
            .await
            .map_err(|e| e.to_string())?;
        let (parts, body) = response.into_parts();
        let body = read_limited(&parts.headers, body, 1 << 20)
            .await
            .map_err(|e| e.to_string())?;
        Ok((parts.status, String::from_utf8_lossy(&body).into_owned()))
    }

    pub async fn post(
        &self,
        url: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> (StatusCode, String) {
        self.send("POST", url, headers, body).await
    }
}
