//! `KafkaSink`: produces events to a Kafka topic, as a trigger's subscriber.
//!
//! Each event becomes one record in the sink's content mode (`ce_` headers, or the JSON event
//! format as the value), keyed by its `partitionkey` extension so that one key's events land
//! in one partition. An event's W3C trace context also goes in `traceparent` and `tracestate`
//! headers, where OpenTelemetry's Kafka instrumentation looks for it. An attempt succeeds when
//! the broker acknowledged the record (`acks=all`); a failure becomes an [`Attempt`] the
//! trigger's delivery spec retries or dead-letters:
//! - timeouts and broken connections: transport errors (retried);
//! - a record too large for the broker: 413, not retried;
//! - a record the broker calls invalid: 400, not retried;
//! - refused authentication or authorization: 403, not retried;
//! - an unknown topic or partition: 404 (retried, as Knative retries 404);
//! - anything else: 503 (retried).
//!
//! The error text travels as the response excerpt, so it ends up in `knativeerrordata`.
//! Ordered triggers send one event per key at a time and wait for its acknowledgement, so a
//! key's records keep their order in their partition.
//!
//! One producer per `KafkaSink` resource, shared by every trigger using it. When the spec sets
//! `numPartitions`, a missing topic is created before the first record.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use tokio::sync::OnceCell;
use triggerfish_core::config::{ContentModeSpec, CustomResource, KafkaSinkSpec};
use triggerfish_core::delivery::TransportError;
use triggerfish_core::event::kafka::{encode_kafka_binary, encode_kafka_structured};
use triggerfish_core::event::trace::TraceContext;
use triggerfish_core::event::{EncodeOptions, EventView};

use super::{Attempt, Response};
use crate::sources::BuildErrors;
use crate::sources::kafka::ClientProperties;

/// Properties Triggerfish sets itself.
const RESERVED: &[&str] = &["bootstrap.servers", "metadata.broker.list"];

/// `KafkaSink`, built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KafkaSinkConfig {
    /// Producer properties.
    pub properties: ClientProperties,
    /// The topic.
    pub topic: String,
    /// Binary or structured.
    pub mode: ContentModeSpec,
    /// Partitions and replication of the topic, when Triggerfish creates it.
    pub create: Option<(i32, i32)>,
}

impl KafkaSinkConfig {
    /// Builds the sink, reporting problems to `check`.
    pub(crate) fn build(
        spec: &KafkaSinkSpec,
        resource: &CustomResource,
        check: &mut BuildErrors<'_>,
    ) -> Option<KafkaSinkConfig> {
        if spec.bootstrap_servers.is_empty() {
            check.at("bootstrapServers", "list at least one broker, host:port");
        }
        if spec.topic.trim().is_empty() {
            check.at("topic", "name the topic");
        }
        let mut properties = ClientProperties::default();
        properties.set("bootstrap.servers", spec.bootstrap_servers.join(","));
        properties.set(
            "client.id",
            format!(
                "triggerfish-{}-{}",
                resource.meta.namespace, resource.meta.name
            ),
        );
        properties.set("acks", "all");
        properties.set("message.timeout.ms", "30000");
        properties.set("compression.type", "none");
        properties.add_net(spec.net.as_ref(), check);
        properties.add_client_config(&spec.client_config, RESERVED, check);
        properties.validate(check);
        let create = spec.num_partitions.map(|n| {
            (
                i32::try_from(n.get()).unwrap_or(i32::MAX),
                spec.replication_factor.map_or(1, |r| i32::from(r.get())),
            )
        });
        Some(KafkaSinkConfig {
            properties,
            topic: spec.topic.clone(),
            mode: spec.content_mode.unwrap_or(ContentModeSpec::Structured),
            create,
        })
    }

    /// Builds the config of `resource` again at run time (`Plan::build` checked it); an error
    /// when it no longer builds (a secret file removed since, say).
    pub fn of(resource: &CustomResource, spec: &KafkaSinkSpec) -> Result<KafkaSinkConfig, String> {
        crate::sources::build_detached(resource, |check| {
            KafkaSinkConfig::build(spec, resource, check)
        })
    }
}

/// A running `KafkaSink`.
pub struct KafkaSink {
    name: String,
    producer: FutureProducer,
    config: KafkaSinkConfig,
    created: OnceCell<()>,
}

impl KafkaSink {
    /// Starts the producer.
    pub fn new(name: String, config: KafkaSinkConfig) -> Result<KafkaSink, KafkaError> {
        let producer: FutureProducer = config.properties.client_config().create()?;
        Ok(KafkaSink {
            name,
            producer,
            config,
            created: OnceCell::new(),
        })
    }

    /// `kafka:<namespace>/<name>/<topic>`, for logs and `knativeerrordest`.
    pub fn describe(&self) -> String {
        format!("kafka:{}/{}", self.name, self.config.topic)
    }

    /// Produces one event and waits for the broker's acknowledgement.
    pub async fn send(
        &self,
        view: &EventView<'_>,
        opts: &EncodeOptions<'_>,
        timeout: Duration,
    ) -> Attempt {
        if let Some((partitions, replication)) = self.config.create {
            self.created
                .get_or_init(|| self.create_topic(partitions, replication))
                .await;
        }
        let mut record = match self.config.mode {
            ContentModeSpec::Binary => encode_kafka_binary(view, opts),
            ContentModeSpec::Structured => encode_kafka_structured(view, opts),
        };
        if let Some(context) = TraceContext::of_event(view) {
            record.headers.extend(
                context.fields().map(|(name, value)| {
                    (name.to_owned(), Bytes::copy_from_slice(value.as_bytes()))
                }),
            );
        }
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in &record.headers {
            headers = headers.insert(Header {
                key,
                value: Some(&value[..]),
            });
        }
        let mut out = FutureRecord::to(&self.config.topic)
            .payload(&record.value[..])
            .headers(headers);
        if let Some(key) = &record.key {
            out = out.key(key.as_bytes());
        }
        let sent = tokio::time::timeout(timeout, self.producer.send(out, timeout)).await;
        match sent {
            Ok(Ok(_)) => Attempt::accepted(),
            Ok(Err((e, _))) => {
                tracing::debug!(sink = %self.name, error = %e, id = view.id(), "producing failed");
                attempt_for(&e)
            }
            Err(_) => Attempt::Transport(TransportError::Timeout),
        }
    }

    async fn create_topic(&self, partitions: i32, replication: i32) {
        let admin: Result<AdminClient<DefaultClientContext>, _> =
            self.config.properties.client_config().create();
        let admin = match admin {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(sink = %self.name, error = %e, "cannot create an admin client to create the topic");
                return;
            }
        };
        let topic = NewTopic::new(
            &self.config.topic,
            partitions,
            TopicReplication::Fixed(replication),
        );
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        match admin.create_topics([&topic], &options).await {
            Ok(results) => {
                for result in results {
                    match result {
                        Ok(topic) => {
                            tracing::info!(sink = %self.name, topic, partitions, "topic created")
                        }
                        Err((topic, RDKafkaErrorCode::TopicAlreadyExists)) => {
                            tracing::debug!(sink = %self.name, topic, "topic exists");
                        }
                        Err((topic, code)) => {
                            tracing::warn!(sink = %self.name, topic, error = %code, "creating the topic failed");
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(sink = %self.name, error = %e, "creating the topic failed"),
        }
    }
}

/// The attempt a producer error comes to.
fn attempt_for(error: &KafkaError) -> Attempt {
    use RDKafkaErrorCode as C;
    let status = match error.rdkafka_error_code() {
        Some(C::MessageTimedOut | C::RequestTimedOut | C::OperationTimedOut) => {
            return Attempt::Transport(TransportError::Timeout);
        }
        Some(C::BrokerTransportFailure | C::AllBrokersDown | C::NetworkException) => {
            return Attempt::Transport(TransportError::Connect);
        }
        Some(C::MessageSizeTooLarge | C::InvalidMessageSize | C::MessageBatchTooLarge) => {
            StatusCode::PAYLOAD_TOO_LARGE
        }
        Some(C::InvalidMessage | C::InvalidRecord | C::InvalidArgument) => StatusCode::BAD_REQUEST,
        Some(
            C::TopicAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::SaslAuthenticationFailed
            | C::Authentication,
        ) => StatusCode::FORBIDDEN,
        Some(C::UnknownTopicOrPartition | C::UnknownTopic | C::UnknownPartition) => {
            StatusCode::NOT_FOUND
        }
        _ => StatusCode::SERVICE_UNAVAILABLE,
    };
    Attempt::Response(Response {
        status,
        retry_after: None,
        reply: None,
        body_excerpt: Bytes::from(error.to_string()),
    })
}
