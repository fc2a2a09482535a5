//! `RegistrySource`: Distribution and ACR payloads, and the real Distribution registry
//! (Debian's `docker-registry`) notifying a push made with `skopeo`.

use std::process::{Command, Stdio};
use std::time::Duration;

use http::StatusCode;
use sha2::{Digest, Sha256};

use crate::common::{Client, Harness, Sink};

const TOKEN: &str = "registry-hook-token";

async fn start(sink: &Sink) -> Harness {
    let yaml = format!(
        r#"
apiVersion: triggerfish.dev/v1alpha1
kind: Server
spec:
  listen: {{webhooks: "127.0.0.1:0"}}
---
apiVersion: triggerfish.dev/v1alpha1
kind: RegistrySource
metadata: {{name: images}}
spec:
  token: {{file: "{{dir}}/token"}}
  sink: {{uri: "{}"}}
"#,
        sink.uri()
    );
    Harness::start_with(&yaml, &[("token", TOKEN.as_bytes())]).await
}

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/registry/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

const DISTRIBUTION: &str = "application/vnd.docker.distribution.events.v1+json";
const BEARER: &str = "Bearer registry-hook-token";

#[tokio::test]
async fn distribution_and_acr_payloads_map_to_image_pushed() {
    let sink = Sink::start().await;
    let h = start(&sink).await;
    let url = h.url("/default/registrysources/images");
    let client = Client::new();
    let (status, body) = client
        .post(
            &url,
            &[("content-type", DISTRIBUTION), ("authorization", BEARER)],
            fixture("distribution"),
        )
        .await;
    // Three events: a manifest push, a layer push and a pull; only the first is an image.
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::ACCEPTED, "{\"accepted\":1}")
    );
    let (status, _) = client
        .post(
            &url,
            &[
                ("content-type", "application/json"),
                ("authorization", BEARER),
            ],
            fixture("acr"),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let got = sink.wait(2, Duration::from_secs(10)).await;
    for r in &got {
        assert_eq!(
            r.attr("type").as_deref(),
            Some("dev.triggerfish.registry.image.pushed")
        );
        assert_eq!(r.attr("subject").as_deref(), Some("latest"));
    }
    let distribution = got
        .iter()
        .find(|r| r.attr("id").as_deref() == Some("asdf-asdf-asdf-asdf-0"))
        .unwrap();
    assert_eq!(
        distribution.attr("source").as_deref(),
        Some("docker://registrycluster.local/library/test")
    );
    assert_eq!(
        distribution.json()["digest"],
        "sha256:fea8895f450959fa676bcc1df0611ea93823a735a01205fd8622846041d0c7cf"
    );
    let acr = got.iter().find(|r| r.json()["format"] == "acr").unwrap();
    assert_eq!(
        acr.attr("source").as_deref(),
        Some("docker://registry.cn-hangzhou.aliyuncs.com/namespace/repoTest")
    );
    assert_eq!(acr.json()["repository"], "namespace/repoTest");
    assert_eq!(acr.json()["tag"], "latest");
}

#[tokio::test]
async fn bad_registry_requests_publish_nothing() {
    let sink = Sink::start().await;
    let h = start(&sink).await;
    let url = h.url("/default/registrysources/images");
    let client = Client::new();
    assert_eq!(
        client
            .post(
                &url,
                &[("content-type", DISTRIBUTION)],
                fixture("distribution")
            )
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        client
            .post(
                &url,
                &[("content-type", "text/plain"), ("authorization", BEARER)],
                fixture("acr")
            )
            .await
            .0,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    let acr = fixture("acr");
    assert_eq!(
        client
            .post(
                &url,
                &[
                    ("content-type", "application/json"),
                    ("authorization", BEARER)
                ],
                acr[..40].to_owned()
            )
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        client
            .post(
                &url,
                &[
                    ("content-type", "application/json"),
                    ("authorization", BEARER)
                ],
                "{\"hello\": 1}"
            )
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(sink.received().is_empty());
}

/// Writes `bytes` as a blob of an OCI layout; returns its digest.
fn blob(layout: &std::path::Path, bytes: &[u8]) -> String {
    let hex = format!("{:x}", Sha256::digest(bytes));
    std::fs::write(layout.join("blobs/sha256").join(&hex), bytes).unwrap();
    format!("sha256:{hex}")
}

fn require(tool: &str) {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        found,
        "{tool} is missing: `scripts/dev setup` installs it (apt: docker-registry, skopeo)"
    );
}

/// Kills the registry when the test ends, however it ends.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_real_registry_notifies_a_skopeo_push() {
    require("docker-registry");
    require("skopeo");
    let sink = Sink::start().await;
    let h = start(&sink).await;
    let work = tempfile::tempdir().unwrap();

    // The registry, notifying our webhook with the bearer token.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = format!(
        r#"version: 0.1
log: {{level: error}}
storage:
  filesystem: {{rootdirectory: {root}}}
http:
  addr: 127.0.0.1:{port}
notifications:
  endpoints:
    - name: triggerfish
      url: {url}
      headers:
        Authorization: [{BEARER}]
      timeout: 2s
      threshold: 5
      backoff: 500ms
"#,
        root = work.path().join("storage").display(),
        url = h.url("/default/registrysources/images"),
    );
    std::fs::write(work.path().join("registry.yml"), config).unwrap();
    let _registry = Child(
        Command::new("docker-registry")
            .arg("serve")
            .arg(work.path().join("registry.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let client = Client::new();
    let v2 = format!("http://127.0.0.1:{port}/v2/");
    let mut up = false;
    for _ in 0..100 {
        if tokio::time::timeout(Duration::from_secs(1), async {
            let c = triggerfish_router::sinks::http::client().unwrap();
            let req = http::Request::get(&v2)
                .body(http_body_util::Full::new(bytes::Bytes::new()))
                .unwrap();
            c.request(req)
                .await
                .map(|r| r.status() == StatusCode::OK)
                .unwrap_or(false)
        })
        .await
        .unwrap_or(false)
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up, "the registry did not start");
    drop(client);

    // A tiny OCI image, made here: one layer holding one file.
    let layout = work.path().join("layout");
    std::fs::create_dir_all(layout.join("blobs/sha256")).unwrap();
    std::fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    let files = work.path().join("files");
    std::fs::create_dir_all(&files).unwrap();
    std::fs::write(files.join("release.txt"), "v1\n").unwrap();
    let tar = work.path().join("layer.tar");
    let status = Command::new("tar")
        .args(["--mtime=2024-01-01", "--owner=0", "--group=0", "-cf"])
        .arg(&tar)
        .arg("-C")
        .arg(&files)
        .arg("release.txt")
        .status()
        .unwrap();
    assert!(status.success());
    let layer = std::fs::read(&tar).unwrap();
    let layer_digest = blob(&layout, &layer);
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{}},"rootfs":{{"type":"layers","diff_ids":["{layer_digest}"]}}}}"#
    );
    let config_digest = blob(&layout, config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{config_digest}","size":{}}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"{layer_digest}","size":{}}}]}}"#,
        config.len(),
        layer.len()
    );
    let manifest_digest = blob(&layout, manifest.as_bytes());
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{manifest_digest}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"v1"}}}}]}}"#,
        manifest.len()
    );
    std::fs::write(layout.join("index.json"), index).unwrap();

    // Push it.
    let output = Command::new("skopeo")
        .args([
            "--insecure-policy",
            "copy",
            "--dest-tls-verify=false",
            "--preserve-digests",
        ])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://127.0.0.1:{port}/demo/app:v1"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "skopeo failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let got = sink.wait(1, Duration::from_secs(30)).await;
    let event = &got[0];
    assert_eq!(
        event.attr("type").as_deref(),
        Some("dev.triggerfish.registry.image.pushed")
    );
    assert_eq!(event.attr("subject").as_deref(), Some("v1"));
    assert_eq!(
        event.attr("source").as_deref(),
        Some(format!("docker://127.0.0.1:{port}/demo/app").as_str())
    );
    let data = event.json();
    assert_eq!(data["repository"], "demo/app");
    assert_eq!(data["tag"], "v1");
    assert_eq!(data["digest"], manifest_digest.as_str());
    assert_eq!(
        data["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    // Layer and config pushes are not images: exactly one event.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(sink.received().len(), 1, "{:#?}", sink.received());
}
