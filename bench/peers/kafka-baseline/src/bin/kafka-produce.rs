//! `kafka-produce`: creates a topic and fills it with small JSON records, as fast as the
//! broker takes them (batched, lingering, uncompressed), for `bench/kafka.sh`.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer as _, ThreadedProducer};

/// Creates a topic and produces records to it.
#[derive(Parser, Debug)]
struct Args {
    /// Kafka bootstrap servers.
    #[arg(long)]
    brokers: String,
    /// The topic (created with `--partitions` partitions).
    #[arg(long)]
    topic: String,
    /// Partitions.
    #[arg(long, default_value = "4")]
    partitions: i32,
    /// Records to produce.
    #[arg(long, default_value = "200000")]
    count: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .create()
        .context("creating the admin client")?;
    for result in admin
        .create_topics(
            [&NewTopic::new(
                &args.topic,
                args.partitions,
                TopicReplication::Fixed(1),
            )],
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
        )
        .await
        .context("creating the topic")?
    {
        result.map_err(|(topic, e)| anyhow::anyhow!("creating {topic}: {e}"))?;
    }
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", &args.brokers)
        .set("acks", "1")
        .set("compression.type", "none")
        .set("linger.ms", "20")
        .set("batch.num.messages", "10000")
        .set("batch.size", "1000000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .context("creating the producer")?;
    let start = Instant::now();
    for i in 0..args.count {
        let value = format!(
            r#"{{"seq":{i},"order":"o-{}","amount":{}.{:02},"currency":"EUR"}}"#,
            i % 10_007,
            i % 997,
            i % 100
        );
        let mut record = BaseRecord::<(), str>::to(&args.topic).payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((e, r)) => {
                    // The local queue is full: wait for the broker to catch up.
                    if !matches!(
                        e.rdkafka_error_code(),
                        Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                    ) {
                        anyhow::bail!("producing record {i}: {e}");
                    }
                    record = r;
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
    producer
        .flush(Duration::from_secs(120))
        .context("flushing the producer")?;
    let secs = start.elapsed().as_secs_f64();
    eprintln!(
        "produced {} records to {} ({} partitions) in {secs:.2} s ({:.0} records/s)",
        args.count,
        args.topic,
        args.partitions,
        args.count as f64 / secs
    );
    Ok(())
}
