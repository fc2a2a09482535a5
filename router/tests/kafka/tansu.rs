//! The Kafka-protocol broker of the tests: Tansu 0.6.0 (installed by `scripts/dev setup`),
//! started on a free loopback port with temporary storage, and rdkafka clients to produce,
//! consume and create topics with.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// A running Tansu broker, stopped on drop.
pub struct Tansu {
    child: Child,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    _dir: tempfile::TempDir,
}

/// Where `scripts/dev setup` puts Tansu, or `tansu` on the `PATH`.
fn tansu_binary() -> PathBuf {
    let cache = std::env::var_os("TRIGGERFISH_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/triggerfish")))
        .unwrap_or_default();
    let cached = cache.join("kafka/0.6.0/tansu");
    if cached.exists() {
        return cached;
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("tansu"))
            .find(|p| p.exists())
    });
    on_path.unwrap_or_else(|| {
        panic!(
            "Tansu is missing: `scripts/dev setup` installs it into {}",
            cached.display()
        )
    })
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Tansu {
    /// Starts a broker with memory storage in a fresh directory and waits until it listens.
    /// The port is picked free and then handed to Tansu, so another process can take it in
    /// between: a Tansu that exits instead of listening is started again on another port.
    pub async fn start() -> Tansu {
        let mut failures = Vec::new();
        for _ in 0..3 {
            match Tansu::try_start().await {
                Ok(tansu) => return tansu,
                Err(e) => failures.push(e),
            }
        }
        panic!(
            "Tansu exited three times before listening:\n{}",
            failures.join("\n")
        );
    }

    async fn try_start() -> Result<Tansu, String> {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::File::create(dir.path().join("tansu.log")).unwrap();
        let mut child = Command::new(tansu_binary())
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
                "--storage-engine",
                "memory://tansu/",
            ])
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "Tansu did not start listening");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Listening, and by this Tansu: a connection to a port someone else took is no proof,
        // and a Tansu that lost the port exits at once.
        tokio::time::sleep(Duration::from_millis(200)).await;
        if child.try_wait().unwrap().is_some() {
            let log = std::fs::read_to_string(dir.path().join("tansu.log")).unwrap_or_default();
            return Err(format!("port {port}:\n{log}"));
        }
        Ok(Tansu {
            child,
            addr,
            _dir: dir,
        })
    }

    /// Creates `topic` with `partitions` partitions.
    pub async fn create_topic(&self, topic: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .create()
            .unwrap();
        let results = admin
            .create_topics(
                [&NewTopic::new(
                    topic,
                    partitions,
                    TopicReplication::Fixed(1),
                )],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .unwrap();
        for r in results {
            r.unwrap();
        }
    }

    /// A producer that waits for every acknowledgement.
    pub fn producer(&self) -> FutureProducer {
        ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .set("acks", "all")
            .set("compression.type", "none")
            .create()
            .unwrap()
    }

    /// A consumer of `topic` from the earliest offset, in a group of its own.
    pub fn consumer(&self, topic: &str) -> StreamConsumer {
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", &self.addr)
            .set("group.id", format!("test-reader-{}", free_port()))
            .set("auto.offset.reset", "earliest")
            .set("session.timeout.ms", "6000")
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        consumer.subscribe(&[topic]).unwrap();
        consumer
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A record as the tests produce and read them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rec {
    pub key: Option<Vec<u8>>,
    pub headers: Vec<(String, Vec<u8>)>,
    pub value: Vec<u8>,
    pub partition: i32,
}

impl Rec {
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }
}

/// Produces one record and waits for its acknowledgement.
pub async fn produce(
    producer: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    key: Option<&[u8]>,
    headers: &[(&str, &[u8])],
    value: &[u8],
) {
    let mut h = OwnedHeaders::new();
    for (k, v) in headers {
        h = h.insert(Header {
            key: k,
            value: Some(*v),
        });
    }
    let mut record = FutureRecord::to(topic).payload(value).headers(h);
    if let Some(key) = key {
        record = record.key(key);
    }
    if let Some(p) = partition {
        record = record.partition(p);
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

/// Reads `n` records, or panics after `timeout`.
pub async fn consume(consumer: &StreamConsumer, n: usize, timeout: Duration) -> Vec<Rec> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + timeout;
    while out.len() < n {
        let m = tokio::time::timeout_at(deadline, consumer.recv())
            .await
            .unwrap_or_else(|_| panic!("expected {n} records, got {}: {out:#?}", out.len()))
            .unwrap();
        out.push(Rec {
            key: m.key().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                        .collect()
                })
                .unwrap_or_default(),
            value: m.payload().unwrap_or_default().to_vec(),
            partition: m.partition(),
        });
    }
    out
}
