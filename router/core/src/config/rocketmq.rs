//! Specs of the RocketMQ kinds: `RocketMQSource` and `RocketMQSink`
//! (`triggerfish.dev/v1alpha1`).
//!
//! Knative has no RocketMQ kinds; these follow the Kafka kinds' shape (`sink`, `delivery`,
//! `ceOverrides`, `invalidRecords`, `contentMode`) with RocketMQ's own terms: a name server,
//! one topic, a tag expression, a consumer group and access keys (RocketMQ's ACL, as the
//! Java client's `AclClientRPCHook` signs requests). Secrets are [`SecretRef`]s.
//!
//! What this module does not do: check fields against each other, read secrets or talk to a
//! name server. The router does that when it builds each source and sink.

use serde::Deserialize;

use crate::config::custom::CeOverrides;
use crate::config::delivery::DeliverySpec;
use crate::config::destination::DestinationSpec;
use crate::config::messaging::{ContentModeSpec, InitialOffset, InvalidRecords};
use crate::config::sources::SecretRef;

/// `spec` of a `RocketMQSource` (`triggerfish.dev/v1alpha1`): consumes one RocketMQ topic as a
/// consumer group (clustering model) and sends each message, as a CloudEvent, to `sink`.
///
/// Messages that are CloudEvents (`CE_*` properties, or `CE_contenttype:
/// application/cloudevents+json`) pass through; others get Alibaba EventBridge's RocketMQ
/// event shape (see `docs/sources.md`). A queue's consumer offset moves past a message only
/// once its event was accepted: at-least-once.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RocketMQSourceSpec {
    /// Name servers, `host:port`, several separated by `;` as RocketMQ writes them.
    pub name_server: String,
    /// The topic.
    pub topic: String,
    /// Which messages, by tag: `*` (the default), a tag, or `TagA || TagB` (see
    /// `sources::rocketmq::TagFilter`).
    #[serde(default)]
    pub tag_expression: Option<String>,
    /// The consumer group. Defaults to `triggerfish-<namespace>-<name>`.
    #[serde(default)]
    pub consumer_group: Option<String>,
    /// Where a group without a stored offset starts: `earliest` or `latest` (the default).
    #[serde(default)]
    pub initial_offset: Option<InitialOffset>,
    /// Where the events go.
    pub sink: DestinationSpec,
    /// Extensions set on every event.
    #[serde(default)]
    pub ce_overrides: Option<CeOverrides>,
    /// Retries and dead-lettering toward the sink.
    #[serde(default)]
    pub delivery: Option<DeliverySpec>,
    /// `ordered`: one event at a time per partition key toward a non-Broker sink.
    /// `unordered` (the default): concurrently.
    #[serde(default)]
    pub ordering: Option<crate::config::DeliveryOrder>,
    /// RocketMQ ACL access key; set it with `secretKey`.
    #[serde(default)]
    pub access_key: Option<SecretRef>,
    /// RocketMQ ACL secret key.
    #[serde(default)]
    pub secret_key: Option<SecretRef>,
    /// The region in the EventBridge `subject` (`acs:mq:<region>:<accountId>:<instanceId>%<topic>`);
    /// empty when unset.
    #[serde(default)]
    pub region: Option<String>,
    /// The account id in the EventBridge `subject`.
    #[serde(default)]
    pub account_id: Option<String>,
    /// The instance id in the EventBridge `subject`.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// What happens to a message that claims to be a CloudEvent but is not a valid one, or
    /// whose event is over `Server.spec.limits.maxEventBytes`. Defaults to `deadLetter` when
    /// `delivery.deadLetterSink` is set, else `skip`. Either way it is logged and counted.
    #[serde(default)]
    pub invalid_records: Option<InvalidRecords>,
}

/// `spec` of a `RocketMQSink` (`triggerfish.dev/v1alpha1`): produces the events it receives as
/// trigger subscriber (`subscriber.ref` with kind `RocketMQSink`) to a RocketMQ topic.
///
/// A delivery succeeds when the broker stored the message (`SEND_OK`). The event's
/// `partitionkey` extension is the message's sharding key and picks its queue, so that one
/// key's events stay in one queue, in order, when the trigger is ordered.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RocketMQSinkSpec {
    /// Name servers, `host:port`, several separated by `;`.
    pub name_server: String,
    /// The topic.
    pub topic: String,
    /// A tag set on every message.
    #[serde(default)]
    pub tag: Option<String>,
    /// The producer group. Defaults to `triggerfish-<namespace>-<name>`.
    #[serde(default)]
    pub producer_group: Option<String>,
    /// `binary` (`CE_*` properties) or `structured` (JSON body), the default.
    #[serde(default)]
    pub content_mode: Option<ContentModeSpec>,
    /// RocketMQ ACL access key; set it with `secretKey`.
    #[serde(default)]
    pub access_key: Option<SecretRef>,
    /// RocketMQ ACL secret key.
    #[serde(default)]
    pub secret_key: Option<SecretRef>,
}
