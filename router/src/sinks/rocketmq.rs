//! `RocketMQSink`: produces events to a RocketMQ topic, as a trigger's subscriber.
//!
//! Each event becomes one message in the sink's content mode (`CE_*` user properties, or the
//! JSON event format as the body, with `CE_contenttype: application/cloudevents+json`), tagged
//! with the spec's `tag`. An event with a `partitionkey` extension is sent with that key as
//! its sharding key (`__SHARDINGKEY`) to the queue the key hashes to (Java's `String.hashCode`
//! modulo the number of queues, as `SelectMessageQueueByHash` does), so one key's messages
//! share a queue. Ordered triggers send one event per key at a time and wait for the broker,
//! so a key's messages keep their order in their queue. Events without a key go to any queue.
//!
//! An attempt succeeds when the broker answered `SEND_OK`; a failure becomes an [`Attempt`]
//! the trigger's delivery spec retries or dead-letters:
//! - timeouts: a transport timeout (retried); I/O and unavailable brokers: a connect error
//!   (retried);
//! - a message the client or broker refuses as invalid: 400, or 413 when it is too large (not
//!   retried);
//! - refused credentials or permissions: 403 (not retried);
//! - an unknown topic (no route): 404 (retried, as Knative retries 404);
//! - a stored message whose flush or replication timed out, or anything else: 503 (retried).
//!
//! The error text travels as the response excerpt, so it ends up in `knativeerrordata`.
//!
//! One producer per `RocketMQSink` resource, shared by every trigger using it; it starts on
//! the first event (starting is asynchronous) and is retried on the next event if it fails.
//!
//! What this module does not do: create topics (the broker's `autoCreateTopicEnable`, or an
//! admin, does), transactions, delayed messages or batches.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use rocketmq_client_rust::{ClientError, DefaultMQProducer, SendStatus};
use rocketmq_error::ErrorClass;
use rocketmq_model::common::message::message_builder::MessageBuilder;
use rocketmq_model::message::MessageQueue;
use tokio::sync::OnceCell;
use triggerfish_core::config::{ContentModeSpec, CustomResource, RocketMQSinkSpec};
use triggerfish_core::delivery::TransportError;
use triggerfish_core::event::rocketmq::{
    encode_rocketmq_binary, encode_rocketmq_structured, partition_key,
};
use triggerfish_core::event::{EncodeOptions, EventView};

use super::{Attempt, Response};
use crate::sources::BuildErrors;
use crate::sources::rocketmq::{
    AccessKeys, RocketMqError, check_name_server, check_resource_name, client_runtime,
    default_group,
};

/// `RocketMQSink`, built.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RocketMqSinkConfig {
    /// Name servers, `;`-separated.
    pub name_server: String,
    /// The topic.
    pub topic: String,
    /// The tag of every message.
    pub tag: Option<String>,
    /// The producer group.
    pub producer_group: String,
    /// Binary or structured.
    pub mode: ContentModeSpec,
    /// ACL credentials.
    pub access_keys: Option<AccessKeys>,
}

impl RocketMqSinkConfig {
    /// Builds the sink, reporting problems to `check`.
    pub(crate) fn build(
        spec: &RocketMQSinkSpec,
        resource: &CustomResource,
        check: &mut BuildErrors<'_>,
    ) -> Option<RocketMqSinkConfig> {
        check_name_server(&spec.name_server, check);
        check_resource_name("topic", &spec.topic, check);
        let producer_group = spec
            .producer_group
            .clone()
            .unwrap_or_else(|| default_group(&resource.meta.namespace, &resource.meta.name));
        check_resource_name("producerGroup", &producer_group, check);
        if let Some(tag) = &spec.tag
            && (tag.trim().is_empty() || tag.contains("||") || tag == "*")
        {
            check.at(
                "tag",
                "a tag is one non-empty word; `*` and `||` belong in tag expressions",
            );
        }
        let access_keys =
            AccessKeys::build(spec.access_key.as_ref(), spec.secret_key.as_ref(), check);
        Some(RocketMqSinkConfig {
            name_server: spec.name_server.clone(),
            topic: spec.topic.clone(),
            tag: spec.tag.clone(),
            producer_group,
            mode: spec.content_mode.unwrap_or(ContentModeSpec::Structured),
            access_keys,
        })
    }

    /// Builds the config of `resource` again at run time (`Plan::build` checked it); an error
    /// when it no longer builds (a secret file removed since, say).
    pub fn of(
        resource: &CustomResource,
        spec: &RocketMQSinkSpec,
    ) -> Result<RocketMqSinkConfig, String> {
        crate::sources::build_detached(resource, |check| {
            RocketMqSinkConfig::build(spec, resource, check)
        })
    }
}

/// A running `RocketMQSink`.
pub struct RocketMqSink {
    name: String,
    config: RocketMqSinkConfig,
    producer: OnceCell<DefaultMQProducer>,
}

impl RocketMqSink {
    /// The sink; its producer starts on the first event.
    pub fn new(name: String, config: RocketMqSinkConfig) -> RocketMqSink {
        RocketMqSink {
            name,
            config,
            producer: OnceCell::new(),
        }
    }

    /// `rocketmq:<namespace>/<name>/<topic>`, for logs and `knativeerrordest`.
    pub fn describe(&self) -> String {
        format!("rocketmq:{}/{}", self.name, self.config.topic)
    }

    /// Produces one event and waits for the broker's answer.
    pub async fn send(
        &self,
        view: &EventView<'_>,
        opts: &EncodeOptions<'_>,
        timeout: Duration,
    ) -> Attempt {
        let producer = match self
            .producer
            .get_or_try_init(|| Box::pin(self.start()))
            .await
        {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(sink = %self.name, error = %e, "the RocketMQ producer cannot start");
                return Attempt::Transport(TransportError::Connect);
            }
        };
        let encoded = match self.config.mode {
            ContentModeSpec::Binary => encode_rocketmq_binary(view, opts),
            ContentModeSpec::Structured => encode_rocketmq_structured(view, opts),
        };
        let key = partition_key(view, opts).filter(|k| !k.is_empty());
        let mut builder = MessageBuilder::new()
            .topic(self.config.topic.as_str())
            .body(encoded.body);
        if let Some(tag) = &self.config.tag {
            builder = builder.tags(tag.as_str());
        }
        if let Some(key) = &key {
            builder = builder.sharding_key(key.as_str());
        }
        for (name, value) in encoded.properties {
            builder = match builder.raw_property(name.as_str(), value) {
                Ok(b) => b,
                Err(e) => return refused(StatusCode::BAD_REQUEST, format!("property {name}: {e}")),
            };
        }
        let message = match builder.build() {
            Ok(m) => m,
            Err(e) => return refused(StatusCode::BAD_REQUEST, e.to_string()),
        };
        let millis = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        // The client's send futures are large (16 KiB): boxed, so every delivery task does
        // not carry them.
        let sent = match key {
            Some(key) => {
                let send = Box::pin(producer.send_with_selector_timeout(
                    message,
                    |queues: &[MessageQueue], _: &_, key: &String| {
                        let n = i32::try_from(queues.len()).ok().filter(|n| *n > 0)?;
                        let index = usize::try_from((java_hash(key) % n).abs()).ok()?;
                        queues.get(index).cloned()
                    },
                    key,
                    millis,
                ));
                tokio::time::timeout(timeout, send).await
            }
            None => {
                let send = Box::pin(producer.send_with_timeout(message, millis));
                tokio::time::timeout(timeout, send).await
            }
        };
        match sent {
            Ok(Ok(Some(result))) if result.send_status == SendStatus::SendOk => Attempt::accepted(),
            Ok(Ok(Some(result))) => refused(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the broker stored the message but answered {:?}",
                    result.send_status
                ),
            ),
            Ok(Ok(None)) => refused(
                StatusCode::SERVICE_UNAVAILABLE,
                "the producer returned no send result".to_owned(),
            ),
            Ok(Err(e)) => {
                tracing::debug!(sink = %self.name, error = %e, id = view.id(), "producing failed");
                attempt_for(&e)
            }
            Err(_) => Attempt::Transport(TransportError::Timeout),
        }
    }

    async fn start(&self) -> Result<DefaultMQProducer, RocketMqError> {
        let runtime = client_runtime()?;
        let mut builder = DefaultMQProducer::builder(runtime)
            .producer_group(self.config.producer_group.as_str())
            .name_server_addr(self.config.name_server.as_str())
            // The trigger's delivery spec retries; the client does not on its own.
            .retry_times_when_send_failed(0);
        if let Some(keys) = &self.config.access_keys {
            builder = builder.rpc_hook(keys.hook());
        }
        let mut producer = builder.build();
        producer
            .start()
            .await
            .map_err(|source| RocketMqError::Start {
                what: "producer",
                source,
            })?;
        tracing::info!(sink = %self.name, topic = %self.config.topic, "RocketMQ producer started");
        Ok(producer)
    }
}

/// Java's `String.hashCode`, over UTF-16 code units, so keys pick the queues Java producers'
/// `SelectMessageQueueByHash` picks.
fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

fn refused(status: StatusCode, text: String) -> Attempt {
    Attempt::Response(Response {
        status,
        retry_after: None,
        reply: None,
        body_excerpt: Bytes::from(text),
    })
}

/// The attempt a client error comes to.
fn attempt_for(error: &ClientError) -> Attempt {
    let class = error.descriptor().class();
    let text = error.to_string();
    let status = if class == ErrorClass::TIMEOUT {
        return Attempt::Transport(TransportError::Timeout);
    } else if class == ErrorClass::IO || class == ErrorClass::UNAVAILABLE {
        return Attempt::Transport(TransportError::Connect);
    } else if class == ErrorClass::VALIDATION {
        let lower = text.to_ascii_lowercase();
        if lower.contains("size") || lower.contains("too large") {
            StatusCode::PAYLOAD_TOO_LARGE
        } else {
            StatusCode::BAD_REQUEST
        }
    } else if class == ErrorClass::AUTHENTICATION || class == ErrorClass::AUTHORIZATION {
        StatusCode::FORBIDDEN
    } else if class == ErrorClass::ROUTING {
        StatusCode::NOT_FOUND
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    refused(status, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_hash_as_java_strings_do() {
        // "hello".hashCode() in Java.
        assert_eq!(java_hash("hello"), 99_162_322);
        assert_eq!(java_hash(""), 0);
        // Java's famous collision, and an overflowing key ("polygenelubricants".hashCode()).
        assert_eq!(java_hash("Aa"), 2112);
        assert_eq!(java_hash("BB"), 2112);
        assert_eq!(java_hash("polygenelubricants"), i32::MIN);
    }
}
