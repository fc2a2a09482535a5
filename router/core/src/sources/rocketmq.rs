//! `RocketMQSource`'s mapping of RocketMQ messages to CloudEvents.
//!
//! - A message that is a CloudEvent ([`crate::event::rocketmq`]: `CE_*` properties, or
//!   `CE_contenttype: application/cloudevents+json`) passes through as that event.
//! - Any other message gets Alibaba EventBridge's RocketMQ event shape:
//!
//! ```json
//! {
//!   "specversion": "1.0",
//!   "id": "<the message id (UNIQ_KEY), stable across redeliveries>",
//!   "source": "acs:mq",
//!   "type": "mq:Topic:SendMessage",
//!   "subject": "acs:mq:<region>:<accountId>:<instanceId>%<topic>",
//!   "time": "<the message's born time>",
//!   "datacontenttype": "application/json; charset=utf-8",
//!   "data": {
//!     "topic": "<topic>",
//!     "systemProperties": {"KEYS": "...", "TAGS": "...", "UNIQ_KEY": "...", "MIN_OFFSET": "...",
//!       "MAX_OFFSET": "...", "QUEUE_ID": "...", "QUEUE_OFFSET": "...",
//!       "BORN_TIMESTAMP": "...", "STORE_TIMESTAMP": "..."},
//!     "userProperties": {"<name>": "<value>"},
//!     "body": "<the body as UTF-8 text>"
//!   }
//! }
//! ```
//!
//! EventBridge documents `systemProperties` as RocketMQ's system properties of the message;
//! Triggerfish adds `QUEUE_ID`, `QUEUE_OFFSET`, `BORN_TIMESTAMP` and `STORE_TIMESTAMP` (numbers
//! as strings, as RocketMQ keeps properties). EventBridge's `body` is text; a body that is not
//! UTF-8 is carried as `bodyBase64` instead (a Triggerfish addition). `region`, `accountId`
//! and `instanceId` come from the source's spec and are empty when unset. When the message has
//! a sharding key (`__SHARDINGKEY`), it becomes the `partitionkey` extension, so that ordered
//! triggers keep the message order per key (a Triggerfish addition). `ceOverrides` extensions
//! are set on every event.
//!
//! A message that claims to be a CloudEvent but is not a valid one, or whose event exceeds the
//! size limit, is an [`InvalidMessage`], dead-lettered or skipped as the source is configured.

use base64::Engine as _;
use bytes::Bytes;

use crate::event::kafka::decode_attributes;
use crate::event::rocketmq::{RocketMqMode, decode_rocketmq, rocketmq_mode};
use crate::event::{DecodeError, DecodeErrorKind, DecodeLimits, EventBatch};

/// `source` of plain messages.
pub const ROCKETMQ_EVENT_SOURCE: &str = "acs:mq";
/// `type` of plain messages.
pub const ROCKETMQ_EVENT_TYPE: &str = "mq:Topic:SendMessage";
/// `datacontenttype` of plain messages.
pub const ROCKETMQ_CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// RocketMQ's system property names (`MessageConst`), which go to `systemProperties`; others
/// go to `userProperties`. Names starting with `__` or `TIMER_` are system properties too.
const SYSTEM_PROPERTIES: &[&str] = &[
    "KEYS",
    "TAGS",
    "WAIT",
    "DELAY",
    "RETRY_TOPIC",
    "REAL_TOPIC",
    "REAL_QID",
    "TRAN_MSG",
    "PGROUP",
    "MIN_OFFSET",
    "MAX_OFFSET",
    "BUYER_ID",
    "ORIGIN_MESSAGE_ID",
    "TRANSFER_FLAG",
    "CORRECTION_FLAG",
    "MQ2_FLAG",
    "RECONSUME_TIME",
    "MSG_REGION",
    "TRACE_ON",
    "UNIQ_KEY",
    "MAX_RECONSUME_TIMES",
    "CONSUME_START_TIME",
    "TRAN_PREPARED_QUEUE_OFFSET",
    "INSTANCE_ID",
    "CORRELATION_ID",
    "REPLY_TO_CLIENT",
    "TTL",
    "ARRIVE_TIME",
    "PUSH_REPLY_TIME",
    "CLUSTER",
    "MSG_TYPE",
    "POP_CK",
    "POP_CK_OFFSET",
    "1ST_POP_TIME",
    "DUP_INFO",
    "EXTEND_UNIQ_INFO",
    "INNER_MULTI_DISPATCH",
    "INNER_MULTI_QUEUE_OFFSET",
    "INNER_NUM",
    "INNER_BASE",
    "CHECK_IMMUNITY_TIME_IN_SECONDS",
    "TRANSACTION_CHECK_TIMES",
    "SHARDING_KEY",
];

/// A consumed message, borrowed from the client.
#[derive(Clone, Copy, Debug)]
pub struct Message<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The queue.
    pub queue_id: i32,
    /// The offset in the queue.
    pub queue_offset: i64,
    /// The message id: the producer's `UNIQ_KEY` when present, else the broker's offset id.
    pub msg_id: &'a str,
    /// When the producer created it, milliseconds since the Unix epoch.
    pub born_timestamp_ms: i64,
    /// When the broker stored it.
    pub store_timestamp_ms: i64,
    /// Every property, system and user.
    pub properties: &'a [(&'a str, &'a str)],
}

/// Why a message cannot become an event.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum InvalidMessage {
    /// It claims to be a CloudEvent but is not a valid one.
    #[error(
        "{topic}/{queue_id}@{offset} (message {msg_id}): the message claims to be a CloudEvent but is not a valid one: {error}"
    )]
    NotACloudEvent {
        /// Topic.
        topic: String,
        /// Queue.
        queue_id: i32,
        /// Queue offset.
        offset: i64,
        /// Message id.
        msg_id: String,
        /// What is wrong.
        error: DecodeError,
    },
    /// Its event is larger than `Server.spec.limits.maxEventBytes`, or it cannot be mapped.
    #[error("{topic}/{queue_id}@{offset} (message {msg_id}): {error}{}", if error.is_too_large() { "; raise Server.spec.limits.maxEventBytes to accept it" } else { "" })]
    Unmappable {
        /// Topic.
        topic: String,
        /// Queue.
        queue_id: i32,
        /// Queue offset.
        offset: i64,
        /// Message id.
        msg_id: String,
        /// What is wrong.
        error: DecodeError,
    },
}

impl InvalidMessage {
    /// The `knativeerrorcode` of its dead letter: 413 for size, 400 otherwise.
    pub fn code(&self) -> i32 {
        match self {
            InvalidMessage::NotACloudEvent { error, .. }
            | InvalidMessage::Unmappable { error, .. }
                if error.is_too_large() =>
            {
                413
            }
            _ => 400,
        }
    }

    /// A label for metrics: `too_large` or `invalid`.
    pub fn reason(&self) -> &'static str {
        if self.code() == 413 {
            "too_large"
        } else {
            "invalid"
        }
    }
}

/// Maps the messages of one `RocketMQSource`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RocketMqMapper {
    /// `acs:mq:<region>:<accountId>:<instanceId>%`.
    subject_prefix: String,
    /// `/apis/v1/namespaces/<namespace>/rocketmqsources/<name>`, for dead letters.
    source_key: String,
    overrides: Vec<(String, String)>,
}

impl RocketMqMapper {
    /// The mapper of source `namespace/name`.
    pub fn new(
        namespace: &str,
        name: &str,
        region: &str,
        account_id: &str,
        instance_id: &str,
        overrides: Vec<(String, String)>,
    ) -> RocketMqMapper {
        RocketMqMapper {
            subject_prefix: format!("acs:mq:{region}:{account_id}:{instance_id}%"),
            source_key: format!("/apis/v1/namespaces/{namespace}/rocketmqsources/{name}"),
            overrides,
        }
    }

    /// Maps one message with body `body`.
    pub fn map(
        &self,
        message: &Message<'_>,
        body: Bytes,
        limits: &DecodeLimits,
    ) -> Result<EventBatch, Box<InvalidMessage>> {
        let mode = rocketmq_mode(message.properties);
        if mode == RocketMqMode::NotCloudEvent {
            return self
                .eventbridge(message, &body, &[], limits)
                .map_err(|error| unmappable(message, error));
        }
        let batch = decode_rocketmq(message.properties, body, limits).map_err(|error| {
            if error.is_too_large() {
                unmappable(message, error)
            } else {
                Box::new(InvalidMessage::NotACloudEvent {
                    topic: message.topic.to_owned(),
                    queue_id: message.queue_id,
                    offset: message.queue_offset,
                    msg_id: message.msg_id.to_owned(),
                    error,
                })
            }
        })?;
        super::with_overrides(batch, &self.overrides, limits)
            .map_err(|error| unmappable(message, error))
    }

    /// The event sent to the dead-letter sink for an invalid message: its EventBridge mapping
    /// (without `body` when that does not fit the limit) with `knativeerrordest` (the source),
    /// `knativeerrorcode` (400 or 413) and `knativeerrordata` (the error, base64-encoded).
    pub fn dead_letter_event(
        &self,
        message: &Message<'_>,
        body: &[u8],
        error: &InvalidMessage,
        limits: &DecodeLimits,
    ) -> Result<EventBatch, DecodeError> {
        let data = base64::engine::general_purpose::STANDARD.encode(error.to_string());
        let code = error.code().to_string();
        let extra: [(&str, &[u8]); 3] = [
            ("knativeerrordest", self.source_key.as_bytes()),
            ("knativeerrorcode", code.as_bytes()),
            ("knativeerrordata", data.as_bytes()),
        ];
        match self.eventbridge(message, body, &extra, limits) {
            Err(e) if e.is_too_large() => self.eventbridge(message, b"", &extra, limits),
            other => other,
        }
    }

    fn eventbridge(
        &self,
        message: &Message<'_>,
        body: &[u8],
        extra: &[(&str, &[u8])],
        limits: &DecodeLimits,
    ) -> Result<EventBatch, DecodeError> {
        let mut system = serde_json::Map::new();
        let mut user = serde_json::Map::new();
        let mut sharding_key = None;
        for (name, value) in message.properties {
            if *name == "__SHARDINGKEY" || *name == "SHARDING_KEY" {
                sharding_key = Some(*value);
            }
            let map = if is_system(name) {
                &mut system
            } else {
                &mut user
            };
            map.insert((*name).to_owned(), serde_json::Value::from(*value));
        }
        for (name, value) in [
            ("QUEUE_ID", message.queue_id.to_string()),
            ("QUEUE_OFFSET", message.queue_offset.to_string()),
            ("BORN_TIMESTAMP", message.born_timestamp_ms.to_string()),
            ("STORE_TIMESTAMP", message.store_timestamp_ms.to_string()),
        ] {
            system.insert(name.to_owned(), serde_json::Value::from(value));
        }
        let mut data = serde_json::Map::new();
        data.insert("topic".into(), message.topic.into());
        data.insert("systemProperties".into(), system.into());
        data.insert("userProperties".into(), user.into());
        match std::str::from_utf8(body) {
            Ok(text) => data.insert("body".into(), text.into()),
            Err(_) => data.insert(
                "bodyBase64".into(),
                base64::engine::general_purpose::STANDARD
                    .encode(body)
                    .into(),
            ),
        };
        let data = serde_json::to_vec(&serde_json::Value::Object(data)).map_err(|e| {
            DecodeError::body(DecodeErrorKind::InvalidJson {
                offset: 0,
                reason: e.to_string(),
            })
        })?;
        let subject = format!("{}{}", self.subject_prefix, message.topic);
        let time =
            chrono::DateTime::<chrono::Utc>::from_timestamp_millis(message.born_timestamp_ms)
                .filter(|_| message.born_timestamp_ms > 0)
                .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string());
        let mut fields: Vec<(&str, &[u8])> = vec![
            ("specversion", b"1.0"),
            ("id", message.msg_id.as_bytes()),
            ("source", ROCKETMQ_EVENT_SOURCE.as_bytes()),
            ("type", ROCKETMQ_EVENT_TYPE.as_bytes()),
            ("subject", subject.as_bytes()),
        ];
        if let Some(time) = &time {
            fields.push(("time", time.as_bytes()));
        }
        let overridden = |name: &str| {
            self.overrides.iter().any(|(n, _)| n == name) || extra.iter().any(|(n, _)| *n == name)
        };
        if let Some(key) = sharding_key.filter(|k| !k.is_empty())
            && !overridden("partitionkey")
        {
            fields.push(("partitionkey", key.as_bytes()));
        }
        for (name, value) in &self.overrides {
            if !extra.iter().any(|(n, _)| n == name) {
                fields.push((name.as_str(), value.as_bytes()));
            }
        }
        fields.extend_from_slice(extra);
        decode_attributes(
            &fields,
            Some(ROCKETMQ_CONTENT_TYPE.as_bytes()),
            Bytes::from(data),
            limits,
        )
    }
}

fn is_system(name: &str) -> bool {
    SYSTEM_PROPERTIES.contains(&name) || name.starts_with("__") || name.starts_with("TIMER_")
}

fn unmappable(message: &Message<'_>, error: DecodeError) -> Box<InvalidMessage> {
    Box::new(InvalidMessage::Unmappable {
        topic: message.topic.to_owned(),
        queue_id: message.queue_id,
        offset: message.queue_offset,
        msg_id: message.msg_id.to_owned(),
        error,
    })
}

/// A `tagExpression`: which messages a source takes, by their tag (the `TAGS` property).
///
/// RocketMQ's syntax: `*` (or nothing) takes every message; `TagA || TagB` takes messages with
/// one of those tags, as Apache RocketMQ's `FilterAPI` parses it (split on `||`, each part
/// trimmed, empty parts ignored). A message without a tag matches only `*`.
///
/// The broker filters by the expression it is given ([`TagFilter::broker_expression`]); the
/// consumer checks each message again ([`TagFilter::matches`]), as RocketMQ's own clients do,
/// because the broker compares tag hash codes. An expression of several tags is sent to the
/// broker as `*` and filtered by the consumer alone: rocketmq-rust 1.0.0's broker delivers
/// nothing for `TagA || TagB`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagFilter {
    /// `*`: every message.
    All,
    /// Messages with one of these tags, sorted.
    Tags(Vec<String>),
}

impl TagFilter {
    /// Parses an expression. `None` when it names no tag but is not `*` either (only `||`
    /// and blanks), or when `*` stands in a list: RocketMQ would take it as a tag named `*`,
    /// which is never what `TagA || *` means.
    pub fn parse(expression: &str) -> Option<TagFilter> {
        let expression = expression.trim();
        if expression.is_empty() || expression == "*" {
            return Some(TagFilter::All);
        }
        let mut tags: Vec<String> = expression
            .split("||")
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        tags.sort_unstable();
        tags.dedup();
        (!tags.is_empty() && !tags.iter().any(|t| t == "*")).then_some(TagFilter::Tags(tags))
    }

    /// The expression the broker is asked to filter by.
    pub fn broker_expression(&self) -> &str {
        match self {
            TagFilter::Tags(tags) if tags.len() == 1 => &tags[0],
            _ => "*",
        }
    }

    /// Whether a message with `tag` is taken.
    pub fn matches(&self, tag: Option<&str>) -> bool {
        match (self, tag) {
            (TagFilter::All, _) => true,
            (TagFilter::Tags(tags), Some(tag)) => {
                tags.binary_search_by(|t| t.as_str().cmp(tag)).is_ok()
            }
            (TagFilter::Tags(_), None) => false,
        }
    }
}

impl std::fmt::Display for TagFilter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TagFilter::All => f.write_str("*"),
            TagFilter::Tags(tags) => f.write_str(&tags.join(" || ")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{AttrValue, Data};

    #[test]
    fn tag_expressions_parse_as_rocketmq_parses_them() {
        assert_eq!(TagFilter::parse("*"), Some(TagFilter::All));
        assert_eq!(TagFilter::parse("  "), Some(TagFilter::All));
        let one = TagFilter::parse(" created ").unwrap();
        assert_eq!(one.broker_expression(), "created");
        assert!(one.matches(Some("created")));
        assert!(!one.matches(Some("paid")));
        assert!(!one.matches(None));

        let two = TagFilter::parse("paid||created ||  || paid").unwrap();
        assert_eq!(two, TagFilter::Tags(vec!["created".into(), "paid".into()]));
        assert_eq!(two.to_string(), "created || paid");
        // Several tags: the broker sends everything and the consumer filters.
        assert_eq!(two.broker_expression(), "*");
        assert!(two.matches(Some("created")) && two.matches(Some("paid")));
        assert!(!two.matches(Some("Paid")), "tags are case-sensitive");
        assert!(!two.matches(Some("created || paid")));
        assert!(!two.matches(None));
        assert!(TagFilter::All.matches(None));

        assert_eq!(TagFilter::parse("||"), None);
        assert_eq!(TagFilter::parse(" || || "), None);
        // Found by the `rocketmq_message` fuzz target: `*` in a list read as a tag named `*`.
        assert_eq!(TagFilter::parse("|| *"), None);
        assert_eq!(TagFilter::parse("created || *"), None);
    }

    fn message<'a>(properties: &'a [(&'a str, &'a str)]) -> Message<'a> {
        Message {
            topic: "orders",
            queue_id: 2,
            queue_offset: 41,
            msg_id: "AC14C305069E1B28CDFA3181CDA20000",
            born_timestamp_ms: 1_617_861_680_766,
            store_timestamp_ms: 1_617_861_680_770,
            properties,
        }
    }

    fn mapper() -> RocketMqMapper {
        RocketMqMapper::new(
            "default",
            "orders",
            "cn-hangzhou",
            "1234",
            "MQ_INST_1",
            vec![],
        )
    }

    #[test]
    fn plain_messages_get_eventbridges_shape() {
        let props = [
            ("TAGS", "created"),
            ("KEYS", "order-1"),
            ("UNIQ_KEY", "AC14C305069E1B28CDFA3181CDA20000"),
            ("__SHARDINGKEY", "customer-9"),
            ("region", "eu"),
        ];
        let b = mapper()
            .map(
                &message(&props),
                Bytes::from_static(b"TEST"),
                &DecodeLimits::default(),
            )
            .unwrap();
        let v = b.get(0).unwrap();
        assert_eq!(v.id(), "AC14C305069E1B28CDFA3181CDA20000");
        assert_eq!(v.source(), "acs:mq");
        assert_eq!(v.ty(), "mq:Topic:SendMessage");
        assert_eq!(
            v.subject(),
            Some("acs:mq:cn-hangzhou:1234:MQ_INST_1%orders")
        );
        assert_eq!(v.time(), Some("2021-04-08T06:01:20.766Z"));
        assert_eq!(v.datacontenttype(), Some("application/json; charset=utf-8"));
        assert_eq!(
            v.extension("partitionkey"),
            Some(AttrValue::Str("customer-9"))
        );
        let Data::Binary(data) = v.data() else {
            panic!("{:?}", v.data())
        };
        let data: serde_json::Value = serde_json::from_slice(data).unwrap();
        assert_eq!(data["topic"], "orders");
        assert_eq!(data["body"], "TEST");
        assert_eq!(data["systemProperties"]["TAGS"], "created");
        assert_eq!(data["systemProperties"]["QUEUE_OFFSET"], "41");
        assert_eq!(data["userProperties"]["region"], "eu");
        assert!(data["userProperties"].get("TAGS").is_none());
    }

    #[test]
    fn binary_bodies_and_invalid_cloudevents() {
        let b = mapper()
            .map(
                &message(&[]),
                Bytes::from_static(b"\xff\x00"),
                &DecodeLimits::default(),
            )
            .unwrap();
        let v = b.get(0).unwrap();
        let data: serde_json::Value = serde_json::from_slice(&v.data().to_bytes()).unwrap();
        assert_eq!(data["bodyBase64"], "/wA=");
        let props = [("CE_specversion", "1.0"), ("CE_id", "1")];
        let e = mapper()
            .map(
                &message(&props),
                Bytes::from_static(b"x"),
                &DecodeLimits::default(),
            )
            .unwrap_err();
        assert_eq!(e.code(), 400);
        assert!(
            e.to_string()
                .contains("missing required attribute \"source\""),
            "{e}"
        );
        let dl = mapper()
            .dead_letter_event(&message(&props), b"x", &e, &DecodeLimits::default())
            .unwrap();
        assert_eq!(
            dl.get(0).unwrap().extension("knativeerrorcode"),
            Some(AttrValue::Str("400"))
        );
    }
}
