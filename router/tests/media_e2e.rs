//! End to end through the real binary: an OSS-style event posted to `triggerfish serve` goes
//! through a trigger to an in-process worker pool, whose reply goes through a second trigger
//! to a file sink, with the artifacts in the local object store; the same job through
//! `triggerfish worker`, whose HTTP answer is the reply event; and MinIO notifications through
//! an `S3Source` to a pool whose object store is a real S3 server (moto's, on loopback), where
//! boto3 checks the artifacts.
//!
//! Media is generated at test time with `ffmpeg`; the models, moto and boto3 come from the
//! cache that `scripts/dev setup` fills.
#![cfg(feature = "media")]
#![allow(clippy::unwrap_used)] // Tests fail loudly on unexpected errors.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "sources/process.rs"]
mod process;

use process::{Bound, Serve};

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// A process that is killed when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A minimal HTTP/1.1 exchange: (status, body).
fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &str,
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .ok()?;
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        #[allow(clippy::disallowed_methods, reason = "a plain test thread, no runtime")]
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn text_video(path: &Path) {
    let draw = format!(
        "drawtext=fontfile={FONT}:text='HELLO 2026':fontsize=48:fontcolor=black:x=(w-text_w)/2:y=(h-text_h)/2"
    );
    let status = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "color=c=white:s=640x360:r=25:d=2",
            "-vf",
            &draw,
        ])
        .args(["-c:v", "libx264", "-pix_fmt", "yuv420p"])
        .arg(path)
        .status()
        .unwrap();
    assert!(status.success());
}

fn oss_event(key: &str) -> String {
    serde_json::json!({
        "specversion": "1.0",
        "id": format!("oss-{key}"),
        "source": "acs.oss",
        "type": "oss:ObjectCreated:PutObject",
        "subject": format!("acs:oss:cn-hangzhou:1234567890:media/{key}"),
        "datacontenttype": "application/json",
        "data": {
            "eventName": "ObjectCreated:PutObject",
            "region": "cn-hangzhou",
            "oss": {"bucket": {"name": "media"}, "object": {"key": key, "size": 1000, "eTag": "x"}}
        }
    })
    .to_string()
}

struct Setup {
    dir: tempfile::TempDir,
    root: PathBuf,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("buckets");
    std::fs::create_dir_all(root.join("media/uploads")).unwrap();
    text_video(&root.join("media/uploads/hello.mp4"));
    Setup { dir, root }
}

fn pool_yaml(root: &Path) -> String {
    pool_on(&format!("local: {{root: {}}}", root.display()), "{}")
}

/// The worker pool `media` on `object_store` (the YAML of `objectStore`), with `limits`.
fn pool_on(object_store: &str, limits: &str) -> String {
    format!(
        "apiVersion: triggerfish.dev/v1alpha1
kind: WorkerPool
metadata: {{name: media}}
spec:
  pipeline: video
  threads: 1
  queueLimit: 4
  limits: {limits}
  objectStore:
    {object_store}
  outputPrefix: results
"
    )
}

/// Broker `default`, `pool`, a trigger from events whose type starts with `uploads` to the
/// pool, and one from the pool's replies to the file sink `results`.
fn pipeline_yaml(pool: &str, uploads: &str, results: &Path) -> String {
    format!(
        "apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
{pool}---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: uploads}}
spec:
  broker: default
  filters: [{{prefix: {{type: '{uploads}'}}}}]
  subscriber:
    ref: {{apiVersion: triggerfish.dev/v1alpha1, kind: WorkerPool, name: media}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: media-results}}
spec:
  broker: default
  filters: [{{prefix: {{type: dev.triggerfish.media.}}}}]
  subscriber: {{uri: 'file://{}'}}
",
        results.display()
    )
}

/// Runs `triggerfish serve --config config` with `env` until it is ready, its listeners on
/// ports the kernel picks and its log beside `config`.
fn serve(config: &Path, env: &[(&str, &str)]) -> (Serve, Bound) {
    Serve::ready(config, &config.with_extension("log"), &[], env)
}

#[test]
fn serve_routes_an_oss_event_through_a_worker_pool_and_its_reply_to_a_file() {
    let s = setup();
    let results = s.dir.path().join("results.jsonl");
    let config = s.dir.path().join("config.yaml");
    let yaml = pipeline_yaml(&pool_yaml(&s.root), "oss:ObjectCreated:", &results);
    std::fs::write(&config, yaml).unwrap();
    let (_serve, bound) = serve(&config, &[]);
    let (http_addr, admin) = (bound.http, bound.admin);
    let (status, _) = http(
        http_addr,
        "POST",
        "/default/default",
        "application/cloudevents+json",
        &oss_event("uploads/hello.mp4"),
    )
    .unwrap();
    assert_eq!(status, 202);
    let mut reply = Value::Null;
    wait_until(
        "the reply in the file sink",
        Duration::from_secs(120),
        || {
            let text = std::fs::read_to_string(&results).unwrap_or_default();
            match text.lines().next() {
                Some(line) => {
                    reply = serde_json::from_str(line).unwrap();
                    true
                }
                None => false,
            }
        },
    );
    assert_eq!(reply["type"], "dev.triggerfish.media.completed", "{reply}");
    assert_eq!(reply["subject"], "uploads/hello.mp4");
    assert!(reply["mediajobid"].is_string());
    assert_eq!(
        reply["data"]["summary"]["video"]["text"][0]["text"], "HELLO 2026",
        "{reply}"
    );
    let out = s.root.join("media/results/uploads/hello.mp4");
    for name in ["probe.json", "text.json", "sprite.jpg", "thumbs/0000.jpg"] {
        assert!(out.join(name).is_file(), "{name}");
    }
    let (_, metrics) = http(admin, "GET", "/metrics", "text/plain", "").unwrap();
    assert!(
        metrics.contains("triggerfish_media_jobs_total{pool=\"default/media\",pipeline=\"video\",outcome=\"completed\"} 1"),
        "{metrics}"
    );
}

#[test]
fn worker_answers_with_the_reply_event() {
    let s = setup();
    let config = s.dir.path().join("worker.yaml");
    let server = "apiVersion: triggerfish.dev/v1alpha1
kind: Server
spec:
  limits: {maxRequestBytes: 64KiB, maxEventBytes: 64KiB, maxBufferedBytes: 64KiB}
---
";
    std::fs::write(&config, format!("{server}{}", pool_yaml(&s.root))).unwrap();
    let log = s.dir.path().join("worker.log");
    let mut worker = Running(
        Command::new(env!("CARGO_BIN_EXE_triggerfish"))
            .arg("worker")
            .arg("--config")
            .arg(&config)
            .args(["--listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let line = process::wait_for_line(&mut worker.0, &log, "worker listening");
    let addr = process::field(&line, "address").expect("the worker logs its address");
    let (status, body) = http(
        addr,
        "POST",
        "/default/media",
        "application/cloudevents+json",
        &oss_event("uploads/hello.mp4"),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["type"], "dev.triggerfish.media.completed", "{reply}");
    assert_eq!(
        reply["data"]["summary"]["video"]["text"][0]["text"],
        "HELLO 2026"
    );
    assert!(
        s.root
            .join("media/results/uploads/hello.mp4/sprite.jpg")
            .is_file()
    );

    // With one pool, `/` reaches it too; a missing object is a failed job, not an HTTP error.
    let (status, body) = http(
        addr,
        "POST",
        "/",
        "application/cloudevents+json",
        &oss_event("uploads/nope.mp4"),
    )
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["type"], "dev.triggerfish.media.failed");
    assert_eq!(reply["data"]["reason"], "fetch_failed");
    let (status, _) = http(
        addr,
        "POST",
        "/default/other",
        "application/cloudevents+json",
        &oss_event("x.mp4"),
    )
    .unwrap();
    assert_eq!(status, 404);

    // Bodies being read share `limits.maxBufferedBytes`: while a client holds all of it (a
    // body declared and almost all sent, then silence), requests get 429, and once it leaves
    // they are served again.
    let mut staller = TcpStream::connect(addr).unwrap();
    let declared = 64 * 1024;
    let head = format!(
        "POST /default/media HTTP/1.1\r\nhost: x\r\ncontent-type: application/cloudevents+json\r\ncontent-length: {declared}\r\n\r\n"
    );
    staller.write_all(head.as_bytes()).unwrap();
    staller.write_all(&vec![b' '; declared - 10]).unwrap();
    let missing = oss_event("uploads/missing.mp4");
    let post = || {
        http(
            addr,
            "POST",
            "/default/media",
            "application/cloudevents+json",
            &missing,
        )
        .unwrap()
    };
    let mut refused = None;
    wait_until("a 429", Duration::from_secs(10), || {
        let (status, body) = post();
        // The staller's bytes may not all be read yet: then this one was served.
        assert!(status == 200 || status == 429, "{status} {body}");
        refused = (status == 429).then_some(body);
        refused.is_some()
    });
    assert!(
        refused.is_some_and(|b| b.contains("ingress buffers are full")),
        "no 429 body"
    );
    drop(staller);
    wait_until(
        "a 200 after the staller left",
        Duration::from_secs(10),
        || {
            let (status, body) = post();
            assert!(status == 200 || status == 429, "{status} {body}");
            status == 200
        },
    );
}

/// moto's S3 server (`moto_server`, from the `s3` venv that `scripts/dev setup` installs) on a
/// free loopback port, and boto3 (`tests/s3/client.py`) to check it independently of the
/// `object_store` crate the router uses.
struct S3 {
    endpoint: String,
    python: PathBuf,
    _server: Running,
}

/// Credentials moto accepts (it does not check signatures); the router reads them from these
/// variables, named in its config, and boto3 from the standard ones.
const S3_KEY_ID: &str = "triggerfish-test";
const S3_SECRET: &str = "triggerfish-test-secret";

impl S3 {
    fn start() -> S3 {
        let venv = triggerfish_workers::native::Locator::from_env(None, None)
            .cache_dir()
            .expect("no cache directory to find the s3 venv in")
            .join("venv/s3");
        let python = venv.join("bin/python");
        assert!(
            python.is_file(),
            "{} is missing: run `scripts/dev setup`",
            python.display()
        );
        // moto_server needs its port named; one taken meanwhile makes it exit: try another.
        let (addr, server) = (0..3)
            .find_map(|_| {
                let addr = free_port();
                let mut server = Running(
                    Command::new(venv.join("bin/moto_server"))
                        .args(["-H", "127.0.0.1", "-p", &addr.port().to_string()])
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .unwrap(),
                );
                let mut up = false;
                wait_until("moto_server", Duration::from_secs(60), || {
                    up = http(addr, "GET", "/moto-api/", "text/plain", "")
                        .is_some_and(|(s, _)| s == 200);
                    up || server.0.try_wait().unwrap().is_some()
                });
                up.then_some((addr, server))
            })
            .expect("moto_server did not start on any of 3 ports");
        S3 {
            endpoint: format!("http://{addr}"),
            python,
            _server: server,
        }
    }

    /// Runs `client.py` with `args`; its standard output.
    fn client(&self, args: &[&str]) -> Vec<u8> {
        let out = Command::new(&self.python)
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/s3/client.py"))
            .arg(&self.endpoint)
            .args(args)
            .env("AWS_ACCESS_KEY_ID", S3_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", S3_SECRET)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "client.py {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }
}

/// `key` form-encoded, as MinIO (Go's `url.QueryEscape`) writes keys in notifications.
fn form_encoded(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            b' ' => "+".to_owned(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

/// A MinIO notification of `key` created in bucket `media`, as MinIO's webhook target posts it.
fn minio_notification(key: &str, size: u64) -> String {
    let encoded = form_encoded(key);
    serde_json::json!({
        "EventName": "s3:ObjectCreated:Put",
        "Key": format!("media/{encoded}"),
        "Records": [{
            "eventVersion": "2.0",
            "eventSource": "minio:s3",
            "awsRegion": "",
            "eventTime": "2026-11-30T07:00:00.000Z",
            "eventName": "s3:ObjectCreated:Put",
            "userIdentity": {"principalId": "minioadmin"},
            "responseElements": {"x-amz-request-id": format!("req-{encoded}")},
            "s3": {
                "s3SchemaVersion": "1.0",
                "configurationId": "Config",
                "bucket": {"name": "media", "arn": "arn:aws:s3:::media"},
                "object": {"key": encoded, "size": size, "eTag": "e", "contentType": "video/mp4"}
            }
        }]
    })
    .to_string()
}

/// The video's key: a space, `#`, `%` and `~`, which URIs and `object_store` paths encode.
const VIDEO: &str = "uploads/talk one #1 100%~.mp4";

#[test]
fn serve_runs_s3_notifications_through_a_pool_on_an_s3_store() {
    let s3 = S3::start();
    let dir = tempfile::tempdir().unwrap();
    let video = dir.path().join("hello.mp4");
    text_video(&video);
    let broken = dir.path().join("broken.mp4");
    std::fs::write(&broken, b"not a video at all, just bytes".repeat(2000)).unwrap();
    let big = dir.path().join("big.mp4");
    std::fs::write(&big, vec![0u8; 3 << 20]).unwrap();
    s3.client(&["mb", "media"]);
    for (key, file) in [
        (VIDEO, &video),
        ("uploads/broken.mp4", &broken),
        ("uploads/big.mp4", &big),
    ] {
        s3.client(&["put", "media", key, file.to_str().unwrap()]);
    }

    let results = dir.path().join("results.jsonl");
    let config = dir.path().join("config.yaml");
    let store = format!(
        "s3:
      bucket: media
      endpoint: '{}'
      allowHttp: true
      credentials: {{accessKeyIdEnv: TEST_S3_KEY_ID, secretAccessKeyEnv: TEST_S3_SECRET}}",
        s3.endpoint
    );
    let pool = pool_on(&store, "{maxInputBytes: 2MiB}");
    let yaml = format!(
        "apiVersion: triggerfish.dev/v1alpha1
kind: Server
spec:
  listen: {{webhooks: '127.0.0.1:0'}}
---
apiVersion: triggerfish.dev/v1alpha1
kind: S3Source
metadata: {{name: uploads}}
spec:
  sink: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}}
---
{}",
        pipeline_yaml(&pool, "com.amazonaws.s3.ObjectCreated:", &results)
    );
    std::fs::write(&config, yaml).unwrap();
    let env = [("TEST_S3_KEY_ID", S3_KEY_ID), ("TEST_S3_SECRET", S3_SECRET)];
    let (_serve, bound) = serve(&config, &env);
    let webhooks = bound
        .webhooks
        .expect("the ready line names the webhook listener");
    let keys = [
        VIDEO,
        "uploads/missing.mp4",
        "uploads/broken.mp4",
        "uploads/big.mp4",
    ];
    for key in keys {
        let (status, body) = http(
            webhooks,
            "POST",
            "/default/s3sources/uploads",
            "application/json",
            &minio_notification(key, 1000),
        )
        .unwrap();
        assert_eq!(status, 202, "{key}: {body}");
    }

    let mut replies = Vec::new();
    wait_until(
        "four replies in the file sink",
        Duration::from_secs(180),
        || {
            let text = std::fs::read_to_string(&results).unwrap_or_default();
            replies = text
                .lines()
                .map(|l| serde_json::from_str::<Value>(l).unwrap())
                .collect();
            replies.len() == keys.len()
        },
    );
    let reply = |key: &str| {
        replies
            .iter()
            .find(|r| r["subject"] == key)
            .unwrap_or_else(|| panic!("no reply for {key}: {replies:?}"))
    };

    // The video: fetched from S3, processed, and its artifacts written back to S3.
    let done = reply(VIDEO);
    assert_eq!(done["type"], "dev.triggerfish.media.completed", "{done}");
    assert_eq!(
        done["data"]["summary"]["video"]["text"][0]["text"], "HELLO 2026",
        "{done}"
    );
    let listed = String::from_utf8(s3.client(&["ls", "media", "results/"])).unwrap();
    for name in ["probe.json", "text.json", "sprite.jpg", "thumbs/0000.jpg"] {
        let key = format!("results/{VIDEO}/{name}");
        assert!(listed.lines().any(|l| l == key), "{key} in {listed}");
    }
    let probe = format!("results/{VIDEO}/probe.json");
    let probe: Value = serde_json::from_slice(&s3.client(&["get", "media", &probe])).unwrap();
    assert!(probe.is_object(), "{probe}");
    let sprite = format!("results/{VIDEO}/sprite.jpg");
    let sprite = s3.client(&["get", "media", &sprite]);
    assert_eq!(&sprite[..3], &[0xFF, 0xD8, 0xFF], "a JPEG");
    // Artifact URIs percent-encode the key.
    assert_eq!(
        done["data"]["artifacts"]["sprite.jpg"],
        "s3://media/results/uploads/talk%20one%20%231%20100%25~.mp4/sprite.jpg",
        "{done}"
    );

    // What could not be processed ends in a failed reply that says why, and writes nothing.
    let failed = |key: &str, reason: &str| {
        let r = reply(key);
        assert_eq!(r["type"], "dev.triggerfish.media.failed", "{r}");
        assert_eq!(r["data"]["reason"], reason, "{r}");
        r.clone()
    };
    failed("uploads/missing.mp4", "fetch_failed");
    let big = failed("uploads/big.mp4", "limit_exceeded");
    assert_eq!(big["data"]["limit"], "maxInputBytes", "{big}");
    let broken = failed("uploads/broken.mp4", "unsupported_format");
    assert!(broken["data"]["message"].is_string(), "{broken}");
    for key in ["missing.mp4", "big.mp4", "broken.mp4"] {
        assert!(!listed.contains(&format!("uploads/{key}/")), "{listed}");
    }
}
