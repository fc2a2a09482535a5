//! Specs of the Kafka kinds: `KafkaSource` (`sources.knative.dev/v1beta1`) and `KafkaSink`
//! (`eventing.knative.dev/v1alpha1`).
//!
//! The Knative kinds keep Knative's field names and meaning. Where Knative reads a Kubernetes
//! secret (`secretKeyRef`), Triggerfish reads a [`SecretRef`]: an environment variable or a
//! file. Triggerfish additions are marked as such.
//!
//! What this module does not do: check fields against each other, read secrets or talk to a
//! broker. The router does that when it builds each source and sink, and reports through
//! [`crate::config::Config::error_at`].

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::custom::CeOverrides;
use crate::config::delivery::DeliverySpec;
use crate::config::destination::DestinationSpec;
use crate::config::sources::SecretRef;

/// `spec` of a `KafkaSource` (`sources.knative.dev/v1beta1`): consumes Kafka topics as a
/// consumer group and sends each record, as a CloudEvent, to `sink`.
///
/// Records that are CloudEvents (Kafka protocol binding, binary or structured) pass through;
/// others become `dev.knative.kafka.event` events as in Knative (see `docs/sources.md`).
/// Offsets are committed only once the events were accepted: at-least-once.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaSourceSpec {
    /// Brokers to bootstrap from, `host:port`.
    pub bootstrap_servers: Vec<String>,
    /// Topics to consume.
    pub topics: Vec<String>,
    /// The consumer group. Defaults to a name derived from the resource, as Knative does:
    /// `knative-kafka-source-<namespace>-<name>`.
    #[serde(default)]
    pub consumer_group: Option<String>,
    /// Where a group without committed offsets starts: `earliest` or `latest` (the default,
    /// as in Knative).
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
    /// `ordered`: one event at a time per partition key toward a non-Broker sink (Knative's
    /// `ordering`). `unordered` (the default): concurrently.
    #[serde(default)]
    pub ordering: Option<crate::config::DeliveryOrder>,
    /// SASL and TLS, passed through to the Kafka client.
    #[serde(default)]
    pub net: Option<KafkaNetSpec>,
    /// Triggerfish extension: what happens to a record that claims to be a CloudEvent but is
    /// not a valid one, or whose event is over `Server.spec.limits.maxEventBytes`. Defaults to
    /// `deadLetter` when `delivery.deadLetterSink` is set, else `skip`. Either way it is
    /// logged and counted.
    #[serde(default)]
    pub invalid_records: Option<InvalidRecords>,
    /// Triggerfish extension: librdkafka consumer properties, passed through as they are
    /// (`session.timeout.ms: "6000"`). Properties Triggerfish sets itself
    /// (`enable.auto.commit`, `group.id`, ...) are refused.
    #[serde(default)]
    pub client_config: BTreeMap<String, String>,
}

string_enum! {
    /// `initialOffset` of a `KafkaSource`: where a group without committed
    /// offsets starts.
    pub enum InitialOffset {
        /// The oldest record kept.
        Earliest = "earliest",
        /// Only records produced after the group first joined (the default).
        Latest = "latest",
    }
}

string_enum! {
    /// What a source does with records it cannot turn into events.
    pub enum InvalidRecords {
        /// Send a description of the record to `delivery.deadLetterSink` (which must be set).
        DeadLetter = "deadLetter",
        /// Log it, count it, and move on.
        Skip = "skip",
    }
}

/// `net` of a `KafkaSource` or `KafkaSink`: SASL and TLS, as in Knative, with secrets read from
/// the environment or files.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaNetSpec {
    /// SASL authentication.
    #[serde(default)]
    pub sasl: Option<KafkaSaslSpec>,
    /// TLS.
    #[serde(default)]
    pub tls: Option<KafkaTlsSpec>,
}

/// `net.sasl`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaSaslSpec {
    /// Whether SASL is used. Defaults to true when the section is present.
    #[serde(default)]
    pub enable: Option<bool>,
    /// The mechanism: `PLAIN` (the default), `SCRAM-SHA-256` or `SCRAM-SHA-512`.
    #[serde(default, rename = "type")]
    pub mechanism: Option<String>,
    /// The user name.
    pub user: SecretRef,
    /// The password.
    pub password: SecretRef,
}

/// `net.tls`. PEM contents come from files or environment variables.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaTlsSpec {
    /// Whether TLS is used. Defaults to true when the section is present.
    #[serde(default)]
    pub enable: Option<bool>,
    /// CA certificates (PEM) the brokers' certificates must chain to; the system's roots
    /// when unset.
    #[serde(default)]
    pub ca_cert: Option<SecretRef>,
    /// A client certificate (PEM), for mutual TLS.
    #[serde(default)]
    pub cert: Option<SecretRef>,
    /// The client certificate's private key (PEM).
    #[serde(default)]
    pub key: Option<SecretRef>,
}

/// `spec` of a `KafkaSink` (`eventing.knative.dev/v1alpha1`): produces the events it receives
/// as trigger subscriber (`subscriber.ref` with kind `KafkaSink`) to a Kafka topic.
///
/// A delivery succeeds when the broker acknowledged the record (`acks=all`); failures follow
/// the trigger's delivery spec. The record key is the event's `partitionkey` extension, so
/// that events of one key land in one partition, in order.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KafkaSinkSpec {
    /// The topic.
    pub topic: String,
    /// Brokers to bootstrap from.
    pub bootstrap_servers: Vec<String>,
    /// `binary` (`ce_` headers) or `structured` (JSON value), Knative's default.
    #[serde(default)]
    pub content_mode: Option<ContentModeSpec>,
    /// Knative's topic settings, used when the topic is missing: Triggerfish creates it with
    /// this many partitions (and `replicationFactor`) when it builds the sink.
    #[serde(default)]
    pub num_partitions: Option<std::num::NonZeroU32>,
    /// See `numPartitions`.
    #[serde(default)]
    pub replication_factor: Option<std::num::NonZeroU16>,
    /// SASL and TLS, as for `KafkaSource` (Triggerfish's form of Knative's `auth.secret`).
    #[serde(default)]
    pub net: Option<KafkaNetSpec>,
    /// Triggerfish extension: librdkafka producer properties, passed through.
    #[serde(default)]
    pub client_config: BTreeMap<String, String>,
}

string_enum! {
    /// `contentMode` of a sink.
    pub enum ContentModeSpec {
        /// Attributes in headers or properties.
        Binary = "binary",
        /// The JSON event format in the value (the default).
        Structured = "structured",
    }
}
