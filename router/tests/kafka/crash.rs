//! The real `triggerfish serve` binary with a `KafkaSource`: at-least-once across a crash
//! (SIGKILL after records were consumed but before the subscriber accepted them) and across a
//! shutdown whose grace period ends first, and a consumer group shared by two replicas that
//! rebalance as one stops.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use rdkafka::producer::FutureProducer;

use crate::common::Sink;
use crate::process::{Serve, log_tail, wait_for};
use crate::tansu::{Tansu, produce};

/// A config with its own data directory (`Serve::ready` puts the listeners on ports the OS picks,
/// so no test races another for a "free" port): a KafkaSource into a Broker, a Trigger to `sink`,
/// and a shutdown grace period of 5 s.
fn write_config(
    dir: &Path,
    name: &str,
    tansu: &Tansu,
    topic: &str,
    sink: &str,
) -> std::path::PathBuf {
    write_config_with_grace(dir, name, tansu, topic, sink, "PT5S")
}

/// [`write_config`] with the shutdown grace period `grace`.
fn write_config_with_grace(
    dir: &Path,
    name: &str,
    tansu: &Tansu,
    topic: &str,
    sink: &str,
    grace: &str,
) -> std::path::PathBuf {
    let data = dir.join(format!("{name}-data"));
    let config = format!(
        r#"
apiVersion: triggerfish.dev/v1alpha1
kind: Server
spec:
  dataDir: {data}
  shutdownGracePeriod: {grace}
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
apiVersion: sources.knative.dev/v1beta1
kind: KafkaSource
metadata: {{name: orders}}
spec:
  bootstrapServers: ["{addr}"]
  topics: ["{topic}"]
  consumerGroup: crash-test
  initialOffset: earliest
  clientConfig: {{session.timeout.ms: "6000", heartbeat.interval.ms: "500"}}
  sink: {{ref: {{apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}}}
"#,
        data = data.display(),
        addr = tansu.addr,
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, config).unwrap();
    path
}

/// Produces a record `r{i}` for each `i` of `range` to `topic`, record `i` into partition
/// `i mod partitions`.
async fn produce_numbered(
    producer: &FutureProducer,
    topic: &str,
    range: std::ops::Range<usize>,
    partitions: usize,
) {
    for i in range {
        let partition = i32::try_from(i % partitions).unwrap();
        produce(
            producer,
            topic,
            Some(partition),
            None,
            &[],
            format!("r{i}").as_bytes(),
        )
        .await;
    }
}

/// Lets `sink` accept, starts serve again on `config` (logging to the second of `logs`), and
/// waits until `sink` has `n` distinct events.
async fn restart_and_receive(config: &Path, sink: &Sink, logs: [&Path; 2], n: usize) -> Serve {
    sink.answer(202);
    let serve = Serve::ready(config, logs[1], &[], &[]).0;
    wait_for(
        "every record after the restart",
        Duration::from_secs(60),
        &logs,
        || ids(sink).len() >= n,
    )
    .await;
    serve
}

fn ids(sink: &Sink) -> BTreeSet<String> {
    sink.received()
        .iter()
        .map(|r| r.attr("id").unwrap())
        .collect()
}

/// Records consumed but not accepted by the subscriber when `triggerfish serve` is killed
/// are read again after a restart: every record arrives, none is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_when_serve_is_killed() {
    const N: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let tansu = Tansu::start().await;
    tansu.create_topic("crash", 2).await;
    let sink = Sink::start().await;
    let config = write_config(dir.path(), "crash", &tansu, "crash", &sink.uri());
    let producer = tansu.producer();
    // The first half is accepted, so offsets are committed for it.
    produce_numbered(&producer, "crash", 0..N / 2, 2).await;
    let (log_1, log_2) = (
        dir.path().join("serve-1.log"),
        dir.path().join("serve-2.log"),
    );
    let mut serve = Serve::ready(&config, &log_1, &[], &[]).0;
    wait_for("the first half", Duration::from_secs(60), &[&log_1], || {
        ids(&sink).len() >= N / 2
    })
    .await;
    // Commits run every second; let the first half's commit happen.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The second half is consumed, but the subscriber fails every attempt.
    sink.answer(503);
    let before = sink.attempts();
    produce_numbered(&producer, "crash", N / 2..N, 2).await;
    wait_for(
        "the second half to be attempted",
        Duration::from_secs(60),
        &[&log_1],
        || sink.attempts() >= before + N / 2,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    serve.crash();
    let first_run = ids(&sink);
    assert_eq!(first_run.len(), N / 2, "only the first half was accepted");

    let _serve = restart_and_receive(&config, &sink, [&log_1, &log_2], N).await;
    let bodies: BTreeSet<String> = sink
        .received()
        .iter()
        .map(|r| String::from_utf8(r.body.to_vec()).unwrap())
        .collect();
    let expected: BTreeSet<String> = (0..N).map(|i| format!("r{i}")).collect();
    assert_eq!(bodies, expected);
    // Records accepted before the crash were committed and are not read again.
    let received = sink.received().len();
    assert!(
        received < N + N / 2,
        "{received} deliveries: the committed first half was read again"
    );
}

/// SIGTERM while every record is still being retried, with a grace period shorter than the
/// retries: the router does not report the records as lost (their offsets are not committed),
/// the consumer commits and leaves its group before the process exits, and a restart
/// delivers every record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_left_at_the_grace_deadline_are_read_again_not_lost() {
    const N: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let tansu = Tansu::start().await;
    tansu.create_topic("grace", 1).await;
    let sink = Sink::start().await;
    sink.answer(503);
    let config = write_config_with_grace(dir.path(), "grace", &tansu, "grace", &sink.uri(), "PT1S");
    let producer = tansu.producer();
    produce_numbered(&producer, "grace", 0..N, 1).await;
    let (log_1, log_2) = (
        dir.path().join("serve-1.log"),
        dir.path().join("serve-2.log"),
    );
    let mut serve = Serve::ready(&config, &log_1, &[], &[]).0;
    wait_for(
        "every record to be attempted",
        Duration::from_secs(60),
        &[&log_1],
        || sink.attempts() >= N,
    )
    .await;
    assert!(serve.stop().success(), "serve did not stop cleanly");
    let log = std::fs::read_to_string(&log_1).unwrap();
    assert!(
        !log.contains("are lost"),
        "Kafka records are read again, not lost:\n{log}"
    );
    assert!(
        log.contains(&format!("read_again={N}")),
        "the shutdown report should count {N} records read again:\n{log}"
    );
    // Before the process exited, not after its drain wait of 30 s.
    assert!(
        log.contains("Kafka consumer stopped") && log.contains(&format!("unfinished={N}")),
        "the consumer should commit and leave its group at the grace deadline:\n{log}"
    );
    let _serve = restart_and_receive(&config, &sink, [&log_1, &log_2], N).await;
}

/// Two replicas in one consumer group share a topic's partitions; when one stops, the other
/// takes its partitions over and every record is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_and_rebalance_a_group() {
    const N: usize = 40;
    let dir = tempfile::tempdir().unwrap();
    let tansu = Tansu::start().await;
    tansu.create_topic("shared", 4).await;
    let (sink_a, sink_b) = (Sink::start().await, Sink::start().await);
    let config_a = write_config(dir.path(), "a", &tansu, "shared", &sink_a.uri());
    let config_b = write_config(dir.path(), "b", &tansu, "shared", &sink_b.uri());
    let mut a = Serve::ready(&config_a, &dir.path().join("a.log"), &[], &[]).0;
    let _b = Serve::ready(&config_b, &dir.path().join("b.log"), &[], &[]).0;
    let producer = tansu.producer();
    // Keep producing until both replicas have received records: both are in the group.
    let mut i = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while sink_a.received().is_empty() || sink_b.received().is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "both replicas should get partitions: a {} b {}\n--- a.log\n{}\n--- b.log\n{}",
            sink_a.received().len(),
            sink_b.received().len(),
            log_tail(&dir.path().join("a.log")),
            log_tail(&dir.path().join("b.log")),
        );
        produce(
            &producer,
            "shared",
            Some(i % 4),
            None,
            &[],
            format!("r{i}").as_bytes(),
        )
        .await;
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let first = i;
    // Replica a leaves the group cleanly; b takes over all four partitions.
    assert!(a.stop().success(), "replica a did not stop cleanly");
    for j in 0..N as i32 {
        produce(
            &producer,
            "shared",
            Some(j % 4),
            None,
            &[],
            format!("r{}", first + j).as_bytes(),
        )
        .await;
    }
    let total = (first + N as i32) as usize;
    wait_for(
        "every record, across both replicas",
        Duration::from_secs(60),
        &[&dir.path().join("a.log"), &dir.path().join("b.log")],
        || {
            let mut all: BTreeSet<String> = BTreeSet::new();
            for s in [&sink_a, &sink_b] {
                all.extend(
                    s.received()
                        .iter()
                        .map(|r| String::from_utf8(r.body.to_vec()).unwrap()),
                );
            }
            all.len() >= total
        },
    )
    .await;
    let after: BTreeSet<String> = sink_b
        .received()
        .iter()
        .map(|r| String::from_utf8(r.body.to_vec()).unwrap())
        .collect();
    for j in 0..N as i32 {
        assert!(
            after.contains(&format!("r{}", first + j)),
            "r{} went to b",
            first + j
        );
    }
}
