//! `kafka-baseline`: the baseline of `bench/kafka.sh`. A plain rdkafka `StreamConsumer` reads a
//! topic and POSTs each record's value to one URL with reqwest, as a team would write it by
//! hand: binary-mode CloudEvents headers (`ce-id` from the partition and offset, as Knative's
//! KafkaSource does), at most `--in-flight` requests at once, a failed request retried until it
//! succeeds, and each record's offset stored once its delivery (and every delivery before it,
//! in read order) has ended; librdkafka commits the stored offsets every
//! `--commit-interval-ms` (at-least-once, as Triggerfish).
//!
//! What it does not do: map headers or keys, filter, dead-letter, or apply backpressure beyond
//! the in-flight bound.

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use futures::StreamExt as _;
use rdkafka::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message as _;

/// Consumes a topic and POSTs each record to an HTTP subscriber.
#[derive(Parser, Debug)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long)]
    brokers: String,
    /// The topic.
    #[arg(long)]
    topic: String,
    /// The consumer group (read from `earliest` when it has no committed offsets).
    #[arg(long)]
    group: String,
    /// The subscriber's URL.
    #[arg(long)]
    target: String,
    /// Requests in flight at once (Triggerfish's `KafkaSource` uses 16 toward a direct sink).
    #[arg(long, default_value = "16")]
    in_flight: usize,
    /// How often librdkafka commits stored offsets (Triggerfish commits every second).
    #[arg(long, default_value = "1000")]
    commit_interval_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("group.id", &args.group)
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("enable.auto.commit", "true")
        .set(
            "auto.commit.interval.ms",
            args.commit_interval_ms.to_string(),
        )
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .create()
        .context("creating the consumer")?;
    consumer
        .subscribe(&[&args.topic])
        .context("subscribing to the topic")?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .context("creating the HTTP client")?;
    let source = format!("/kafka-baseline#{}", args.topic);

    // `buffered` runs up to `in_flight` deliveries at once and yields them in read order, so an
    // offset is stored only when every record before it has been delivered.
    let mut delivered = consumer
        .stream()
        .map(|m| {
            let client = client.clone();
            let source = source.clone();
            let target = args.target.clone();
            async move {
                let m = m.context("reading a record")?.detach();
                let id = format!("partition:{}/offset:{}", m.partition(), m.offset());
                let body = m.payload().map(<[u8]>::to_vec).unwrap_or_default();
                let mut backoff = Duration::from_millis(10);
                loop {
                    let sent = client
                        .post(&target)
                        .header("ce-specversion", "1.0")
                        .header("ce-id", &id)
                        .header("ce-source", &source)
                        .header("ce-type", "dev.knative.kafka.event")
                        .header("content-type", "application/json")
                        .body(body.clone())
                        .send()
                        .await;
                    match sent {
                        Ok(r) if r.status().is_success() => break,
                        _ => {
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(1));
                        }
                    }
                }
                anyhow::Ok(m)
            }
        })
        .buffered(args.in_flight);
    loop {
        tokio::select! {
            next = delivered.next() => {
                let Some(m) = next else { break };
                let m = m?;
                consumer
                    .store_offset(m.topic(), m.partition(), m.offset())
                    .context("storing an offset")?;
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    Ok(())
}
