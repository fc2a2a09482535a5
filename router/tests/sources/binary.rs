//! The real `triggerfish serve` binary with webhook and directory sources: the webhook
//! listener is bound at `Server.spec.listen.webhooks`, events reach a file sink through the
//! broker, and SIGTERM stops it cleanly.

use std::time::Duration;

use http::StatusCode;
use triggerfish_core::sources::github::sign;

use crate::common::Client;
use crate::process::Serve;

#[tokio::test]
async fn serve_runs_webhook_and_directory_sources() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::write(root.join("secret"), "binary-secret\n").unwrap();
    let config = format!(
        r#"
apiVersion: triggerfish.dev/v1alpha1
kind: Server
spec:
  listen: {{webhooks: "127.0.0.1:0"}}
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
    let (mut serve, bound) =
        Serve::ready(&root.join("config.yaml"), &root.join("serve.log"), &[], &[]);
    let webhooks = bound
        .webhooks
        .expect("the ready line names the webhook listener");

    let client = Client::new();
    let url = format!("http://{webhooks}/default/githubsources/repo");
    let body = br#"{"zen":"Design for failure.","hook_id":1,"repository":{"full_name":"o/r"}}"#;
    let signature = sign(b"binary-secret", body);
    let headers = [
        ("content-type", "application/json"),
        ("x-github-event", "ping"),
        ("x-github-delivery", "ping-1"),
        ("x-hub-signature-256", signature.as_str()),
    ];
    // Ready means bound: no retries.
    let (status, text) = client.post(&url, &headers, body.to_vec()).await;
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

    let status = serve.stop();
    assert!(status.success(), "{status}");
}
