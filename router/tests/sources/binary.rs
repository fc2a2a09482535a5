//! The real `triggerfish serve` binary with webhook and directory sources: the webhook
//! listener is bound at `Server.spec.listen.webhooks`, events reach a file sink through the
//! broker, and SIGTERM stops it cleanly.

use std::process::{Command, Stdio};
use std::time::Duration;

use http::StatusCode;
use triggerfish_core::sources::github::sign;

use crate::common::Client;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Serve(std::process::Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serve_runs_webhook_and_directory_sources() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("secret"), "binary-secret\n").unwrap();
    let (http, admin, webhooks) = (free_port(), free_port(), free_port());
    let config = format!(
        r#"
apiVersion: triggerfish.dev/v1alpha1
kind: Server
spec:
  listen: {{http: "127.0.0.1:{http}", admin: "127.0.0.1:{admin}", webhooks: "127.0.0.1:{webhooks}"}}
  dataDir: {data}
  shutdownGracePeriod: PT2S
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: everything}}
spec:
  broker: default
  subscriber: {{ref: {{apiVersion: triggerfish.dev/v1alpha1, kind: File, name: events}}}}
---
apiVersion: triggerfish.dev/v1alpha1
kind: GitHubSource
metadata: {{name: repo}}
spec:
  secretToken: {{file: {secret}}}
  sink: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}}
---
apiVersion: triggerfish.dev/v1alpha1
kind: BucketWatch
metadata: {{name: media}}
spec:
  directory: {media}
  sink: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}}
"#,
        data = root.join("data").display(),
        secret = root.join("secret").display(),
        media = root.join("media").display(),
    );
    std::fs::write(root.join("config.yaml"), config).unwrap();
    let mut serve = Serve(
        Command::new(env!("CARGO_BIN_EXE_triggerfish"))
            .arg("serve")
            .arg("--config")
            .arg(root.join("config.yaml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let client = Client::new();
    let url = format!("http://127.0.0.1:{webhooks}/default/githubsources/repo");
    let body = br#"{"zen":"Design for failure.","hook_id":1,"repository":{"full_name":"o/r"}}"#;
    let signature = sign(b"binary-secret", body);
    let headers = [
        ("content-type", "application/json"),
        ("x-github-event", "ping"),
        ("x-github-delivery", "ping-1"),
        ("x-hub-signature-256", signature.as_str()),
    ];
    let mut answered = None;
    for _ in 0..100 {
        if let Ok(reply) = client.try_send("POST", &url, &headers, body.to_vec()).await {
            answered = Some(reply);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, text) = answered.expect("the webhook listener answers");
    assert_eq!(status, StatusCode::OK, "{text}");

    let push = br#"{"ref":"refs/heads/main","compare":"https://github.com/o/r/compare/1...2","repository":{"full_name":"o/r"}}"#;
    let (status, _) = client
        .post(
            &url,
            &[
                ("content-type", "application/json"),
                ("x-github-event", "push"),
                ("x-github-delivery", "push-1"),
                ("x-hub-signature-256", &sign(b"binary-secret", push)),
            ],
            push.to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    std::fs::write(root.join("media/clip.mp4"), b"not really a video").unwrap();

    let sink = root.join("data/sinks/default/events.jsonl");
    let mut lines = Vec::new();
    for _ in 0..200 {
        lines = std::fs::read_to_string(&sink)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        if lines.len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let events: Vec<serde_json::Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "dev.knative.source.github.push" && e["id"] == "push-1"),
        "{lines:?}"
    );
    assert!(
        events
            .iter()
            .any(|e| e["type"] == "oss:ObjectCreated:PutObject"
                && e["subject"] == "acs:oss:local:local:media/clip.mp4"),
        "{lines:?}"
    );

    let pid = serve.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let mut exited = false;
    for _ in 0..100 {
        if let Ok(Some(status)) = serve.0.try_wait() {
            assert!(status.success(), "{status}");
            exited = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(exited, "serve did not stop on SIGTERM");
}
