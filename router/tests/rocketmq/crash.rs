//! The real `triggerfish serve` binary with a `RocketMQSource`: at-least-once across a crash
//! (SIGKILL after messages were consumed but before the subscriber accepted them).

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use crate::common::Sink;
use crate::process::{Serve, wait_for};
use crate::server::{RocketMq, produce, servers};

/// A config with its own data directory (`Serve::ready` puts the listeners on ports the OS picks,
/// so no test races another for a "free" port): a RocketMQSource into a Broker, a Trigger to `sink`.
fn write_config(dir: &Path, mq: &RocketMq, topic: &str, sink: &str) -> std::path::PathBuf {
    let data = dir.join("data");
    let config = format!(
        r#"
apiVersion: triggerfish.dev/v1alpha1
kind: Server
spec:
  dataDir: {data}
  shutdownGracePeriod: PT5S
---
apiVersion: eventing.knative.dev/v1
kind: Broker
metadata: {{name: default}}
---
apiVersion: eventing.knative.dev/v1
kind: Trigger
metadata: {{name: all}}
spec:
  broker: default
  subscriber: {{uri: "{sink}"}}
  delivery: {{retry: 1000, backoffPolicy: linear, backoffDelay: PT0.2S}}
---
apiVersion: triggerfish.dev/v1alpha1
kind: RocketMQSource
metadata: {{name: orders}}
spec:
  nameServer: "{ns}"
  topic: {topic}
  consumerGroup: crash-test
  initialOffset: earliest
  sink: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}}
"#,
        data = data.display(),
        ns = mq.name_server,
    );
    let path = dir.join("crash.yaml");
    std::fs::write(&path, config).unwrap();
    path
}

fn bodies(sink: &Sink) -> BTreeSet<String> {
    sink.received()
        .iter()
        .map(|r| r.json()["body"].as_str().unwrap().to_owned())
        .collect()
}

/// Messages consumed but not accepted by the subscriber when `triggerfish serve` is killed
/// are read again after a restart: every message arrives, none is lost, and what was accepted
/// before the crash is not read again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_when_serve_is_killed() {
    const N: usize = 40;
    let mq = servers().await;
    let topic = "crash";
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start().await;
    let config = write_config(dir.path(), mq, topic, &sink.uri());
    let producer = mq.producer().await;
    // The first half is accepted, so offsets are committed for it.
    for i in 0..N / 2 {
        produce(&producer, topic, None, &[], format!("r{i}").as_bytes()).await;
    }
    let log1 = dir.path().join("serve-1.log");
    let mut serve = Serve::ready(&config, &log1, &[], &[]).0;
    wait_for("the first half", Duration::from_secs(90), &[&log1], || {
        bodies(&sink).len() >= N / 2
    })
    .await;
    // Commits run every second; let the first half's commit happen.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The second half is consumed, but the subscriber fails every attempt.
    sink.answer(503);
    let before = sink.attempts();
    for i in N / 2..N {
        produce(&producer, topic, None, &[], format!("r{i}").as_bytes()).await;
    }
    wait_for(
        "the second half to be attempted",
        Duration::from_secs(60),
        &[&log1],
        || sink.attempts() >= before + N / 2,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    serve.crash();
    let first_run = bodies(&sink);
    assert_eq!(first_run.len(), N / 2, "only the first half was accepted");

    sink.answer(202);
    let log2 = dir.path().join("serve-2.log");
    let _serve = Serve::ready(&config, &log2, &[], &[]).0;
    wait_for(
        "every message after the restart",
        Duration::from_secs(90),
        &[&log1, &log2],
        || bodies(&sink).len() >= N,
    )
    .await;
    let expected: BTreeSet<String> = (0..N).map(|i| format!("r{i}")).collect();
    assert_eq!(bodies(&sink), expected);
    // Messages accepted before the crash were committed and are not read again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let received = sink.received().len();
    assert!(
        received < N + N / 2,
        "{received} deliveries: the committed first half was read again"
    );
}
