//! The RocketMQ servers of the tests: rocketmq-rust 1.0.0's name server and broker (installed
//! by `scripts/dev setup`), started once per test process on free loopback ports with
//! temporary storage, and clients to produce and consume with.
//!
//! Each server runs under a small shell watchdog that stops it, and removes the storage, when
//! the test process exits: the pair is shared by every test of the file (each test uses its
//! own topics and groups), so nothing drops it.

use std::collections::HashMap;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rocketmq_client_rust::{DefaultLitePullConsumer, DefaultMQProducer, SendStatus};
use rocketmq_model::common::consumer::consume_from_where::ConsumeFromWhere;
use rocketmq_model::common::message::message_builder::MessageBuilder;
use rocketmq_model::message::MessageQueue;
use triggerfish_router::sources::rocketmq::client_runtime;

/// The version `scripts/dev setup` installs.
pub const VERSION: &str = "1.0.0";

/// A running name server and broker.
pub struct RocketMq {
    /// `127.0.0.1:<port>` of the name server.
    pub name_server: String,
    /// The directory holding storage and logs.
    pub dir: PathBuf,
    _children: Vec<Child>,
}

/// Where `scripts/dev setup` puts the servers.
fn binary(name: &str) -> PathBuf {
    let cache = std::env::var_os("TRIGGERFISH_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/triggerfish")))
        .unwrap_or_default();
    let cached = cache.join(format!("rocketmq/{VERSION}/bin/{name}"));
    if cached.exists() {
        return cached;
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.exists())
    });
    on_path.unwrap_or_else(|| {
        panic!(
            "{name} is missing: `scripts/dev setup` installs it into {}",
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

fn is_free(port: u16) -> bool {
    std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A broker port `p` with `p - 2` (its fast listener) free too.
fn broker_port() -> u16 {
    loop {
        let p = free_port();
        if p > 1026 && is_free(p - 2) {
            return p;
        }
    }
}

/// Runs `program args` under a watchdog that kills it when this process exits, then removes
/// `cleanup` (when given).
fn watched(
    program: &Path,
    args: &[&str],
    envs: &[(&str, &Path)],
    log: &Path,
    cleanup: Option<&Path>,
) -> Child {
    let script = r#"
"$@" &
child=$!
while kill -0 "$WATCH" 2>/dev/null && kill -0 "$child" 2>/dev/null; do sleep 0.5; done
kill -9 "$child" 2>/dev/null
wait "$child" 2>/dev/null
if [ -n "$CLEANUP" ]; then rm -rf "$CLEANUP"; fi
"#;
    let log = std::fs::File::create(log).unwrap();
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg(script)
        .arg("watchdog")
        .arg(program)
        .args(args)
        .env("WATCH", std::process::id().to_string())
        .env("CLEANUP", cleanup.map(Path::as_os_str).unwrap_or_default())
        .env("ROCKETMQ_SECURITY_PROFILE", "development-insecure-loopback")
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    for (k, v) in envs {
        command.env(k, v);
    }
    command.spawn().unwrap()
}

async fn wait_listening(addr: &str, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start listening on {addr}:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The servers of this test process, started on first use.
pub async fn servers() -> &'static RocketMq {
    static SERVERS: OnceLock<RocketMq> = OnceLock::new();
    static STARTING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    let _guard = STARTING.lock().await;
    if let Some(s) = SERVERS.get() {
        return s;
    }
    let started = RocketMq::start().await;
    SERVERS.get_or_init(|| started)
}

impl RocketMq {
    async fn start() -> RocketMq {
        // Kept: the watchdog removes it when the test process exits. In /dev/shm when there is
        // one: the broker refuses writes (and so refuses to start) on a disk more than 90 %
        // full, which build machines often are.
        let shm = Path::new("/dev/shm");
        let mut builder = tempfile::Builder::new();
        builder.prefix("triggerfish-rocketmq-");
        let dir = if shm.is_dir() {
            builder.tempdir_in(shm)
        } else {
            builder.tempdir()
        }
        .unwrap()
        .keep();
        let ns_port = free_port();
        let name_server = format!("127.0.0.1:{ns_port}");
        let home = dir.join("home");
        std::fs::create_dir_all(&home).unwrap();
        let ns_log = dir.join("namesrv.log");
        let port = ns_port.to_string();
        let kv = home.join("kvConfig.json");
        let namesrv = watched(
            &binary("rocketmq-namesrv-rust"),
            &[
                "--listenPort",
                &port,
                "--bindAddress",
                "127.0.0.1",
                "--rocketmqHome",
                home.to_str().unwrap(),
                "--kvConfigPath",
                kv.to_str().unwrap(),
            ],
            &[("ROCKETMQ_HOME", &home)],
            &ns_log,
            None,
        );
        wait_listening(&name_server, "the name server", &ns_log).await;

        let listen = broker_port();
        let ha = loop {
            let p = free_port();
            if p != listen && p != listen - 2 {
                break p;
            }
        };
        let toml = format!(
            r#"[broker]
listenPort = {listen}
brokerIp1 = "127.0.0.1"
storePathRootDir = "{root}/broker"
namesrvAddr = "{name_server}"

[broker.brokerServerConfig]
bindAddress = "127.0.0.1"

[broker.brokerIdentity]
brokerName = "broker-a"
brokerClusterName = "DefaultCluster"
brokerId = 0

[store]
haListenAddress = "127.0.0.1"
haListenPort = {ha}
storePathRootDir = "{root}/store"
mappedFileSizeCommitLog = 67108864
mappedFileSizeConsumeQueue = 600000
maxHashSlotNum = 50000
maxIndexNum = 200000
"#,
            root = dir.display(),
        );
        let config = dir.join("broker.toml");
        std::fs::write(&config, toml).unwrap();
        let broker_log = dir.join("broker.log");
        let broker = watched(
            &binary("rocketmq-broker-rust"),
            &["-c", config.to_str().unwrap(), "-n", &name_server],
            &[("ROCKETMQ_HOME", &home)],
            &broker_log,
            Some(&dir),
        );
        wait_listening(&format!("127.0.0.1:{listen}"), "the broker", &broker_log).await;
        let servers = RocketMq {
            name_server,
            dir,
            _children: vec![namesrv, broker],
        };
        // Ready once the broker registered with the name server: a send to a new topic
        // (created automatically) succeeds.
        let producer = servers.producer().await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let message = MessageBuilder::new()
                .topic("triggerfish-ready")
                .body(&b"ready"[..])
                .build()
                .unwrap();
            match Box::pin(producer.send_with_timeout(message, 3000)).await {
                Ok(Some(r)) if r.send_status == SendStatus::SendOk => break,
                other => {
                    assert!(
                        Instant::now() < deadline,
                        "the broker did not become ready: {other:?}\n{}",
                        std::fs::read_to_string(&broker_log).unwrap_or_default()
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        servers
    }

    /// The broker's log, for failure messages.
    pub fn broker_log(&self) -> String {
        let text = std::fs::read_to_string(self.dir.join("broker.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// A started producer.
    pub async fn producer(&self) -> DefaultMQProducer {
        let mut producer = DefaultMQProducer::builder(client_runtime().unwrap())
            .producer_group(format!("test-producer-{}", free_port()))
            .name_server_addr(self.name_server.as_str())
            .build();
        producer.start().await.unwrap();
        producer
    }

    /// A started consumer of `topic` from its first message, in a group of its own, with
    /// automatic commits.
    pub async fn consumer(&self, topic: &str) -> Reader {
        let consumer = DefaultLitePullConsumer::builder(client_runtime().unwrap())
            .name_server_addr(self.name_server.as_str())
            .consumer_group(format!("test-reader-{}", free_port()))
            .consume_from_where(ConsumeFromWhere::ConsumeFromFirstOffset)
            .pull_batch_size(32)
            .build()
            .unwrap();
        consumer.subscribe(topic).await.unwrap();
        consumer.start().await.unwrap();
        Reader(Arc::new(consumer))
    }
}

/// A message as the tests produce and read them.
#[derive(Clone, Debug, Default)]
pub struct Msg {
    pub tag: Option<String>,
    pub keys: Option<String>,
    pub sharding_key: Option<String>,
    pub properties: HashMap<String, String>,
    pub body: Vec<u8>,
    pub queue_id: i32,
    pub queue_offset: i64,
}

/// Produces one message and waits for `SEND_OK`. `properties` are user properties, and `KEYS`.
pub async fn produce(
    producer: &DefaultMQProducer,
    topic: &str,
    tag: Option<&str>,
    properties: &[(&str, &str)],
    body: &[u8],
) {
    let message = message(topic, tag, properties, body);
    // The client's send future is large; boxed.
    let result = Box::pin(producer.send_with_timeout(message, 10_000))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(result.send_status, SendStatus::SendOk);
}

/// Like [`produce`], into the topic's queue 0, so that messages keep their order.
pub async fn produce_in_order(
    producer: &DefaultMQProducer,
    topic: &str,
    properties: &[(&str, &str)],
    body: &[u8],
) {
    let message = message(topic, None, properties, body);
    let result = Box::pin(producer.send_with_selector_timeout(
        message,
        |queues: &[MessageQueue], _: &_, _: &()| queues.iter().find(|q| q.queue_id() == 0).cloned(),
        (),
        10_000,
    ))
    .await
    .unwrap()
    .unwrap();
    assert_eq!(result.send_status, SendStatus::SendOk);
}

fn message(
    topic: &str,
    tag: Option<&str>,
    properties: &[(&str, &str)],
    body: &[u8],
) -> rocketmq_model::common::message::message_single::Message {
    let mut builder = MessageBuilder::new().topic(topic).body(body.to_vec());
    if let Some(tag) = tag {
        builder = builder.tags(tag);
    }
    for (k, v) in properties {
        builder = match *k {
            "KEYS" => builder.key(*v),
            _ => builder.raw_property(*k, *v).unwrap(),
        };
    }
    builder.build().unwrap()
}

/// A consumer of the tests.
pub struct Reader(Arc<DefaultLitePullConsumer>);

impl Reader {
    /// Reads `n` messages, or panics after `timeout`.
    pub async fn read(&self, n: usize, timeout: Duration) -> Vec<Msg> {
        let mut out = Vec::new();
        let deadline = Instant::now() + timeout;
        while out.len() < n {
            assert!(
                Instant::now() < deadline,
                "expected {n} messages, got {}: {out:#?}",
                out.len()
            );
            for m in self.0.poll_with_timeout_zero_copy(200).await {
                let properties: HashMap<String, String> = m
                    .properties()
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                out.push(Msg {
                    tag: properties.get("TAGS").cloned(),
                    keys: properties.get("KEYS").cloned(),
                    sharding_key: properties.get("__SHARDINGKEY").cloned(),
                    body: m.body().map(|b| b.to_vec()).unwrap_or_default(),
                    queue_id: m.queue_id(),
                    queue_offset: m.queue_offset(),
                    properties,
                });
            }
        }
        out
    }
}
