//! What every document has: its kind, and Kubernetes-style metadata.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer};

/// `apiVersion` of Knative Eventing's `Broker` and `Trigger`.
pub const KNATIVE_EVENTING_V1: &str = "eventing.knative.dev/v1";
/// `apiVersion` of Knative's `EventPolicy`.
pub const KNATIVE_EVENTING_V1ALPHA1: &str = "eventing.knative.dev/v1alpha1";
/// `apiVersion` of Knative's `PingSource`.
pub const KNATIVE_SOURCES_V1: &str = "sources.knative.dev/v1";
/// `apiVersion` of Knative's `KafkaSource`.
pub const KNATIVE_SOURCES_V1BETA1: &str = "sources.knative.dev/v1beta1";
/// `apiVersion` of Triggerfish's own kinds.
pub const TRIGGERFISH_V1ALPHA1: &str = "triggerfish.dev/v1alpha1";
/// The namespace of a resource whose `metadata.namespace` is not set, as in Kubernetes.
pub const DEFAULT_NAMESPACE: &str = "default";

/// The kinds of document a config file may hold.
///
/// Adding a kind: add a variant here and to [`Kind::ALL`], give it an `apiVersion`, and
/// parse and validate its document in the loader.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Kind {
    /// `eventing.knative.dev/v1` `Broker`.
    Broker,
    /// `eventing.knative.dev/v1` `Trigger`.
    Trigger,
    /// `triggerfish.dev/v1alpha1` `Server`: listen addresses, limits and the like.
    Server,
    /// `triggerfish.dev/v1alpha1` `Exec`: a sink that runs a program per event.
    Exec,
    /// `sources.knative.dev/v1` `PingSource`: events on a cron schedule.
    PingSource,
    /// `triggerfish.dev/v1alpha1` `Scheduler`: the delayed-event and schedule sink.
    Scheduler,
    /// `eventing.knative.dev/v1alpha1` `EventPolicy`: who may send what to which brokers.
    EventPolicy,
    /// `triggerfish.dev/v1alpha1` `OssSource`: OSS event notifications through MNS.
    OssSource,
    /// `triggerfish.dev/v1alpha1` `S3Source`: S3-style event notifications.
    S3Source,
    /// `triggerfish.dev/v1alpha1` `GitHubSource`: GitHub webhooks.
    GitHubSource,
    /// `triggerfish.dev/v1alpha1` `RegistrySource`: container-registry webhooks.
    RegistrySource,
    /// `triggerfish.dev/v1alpha1` `BucketWatch`: a local directory as a bucket.
    BucketWatch,
    /// `triggerfish.dev/v1alpha1` `WorkerPool`: media pipelines on OS threads.
    WorkerPool,
    /// `sources.knative.dev/v1beta1` `KafkaSource`: Kafka topics as events.
    KafkaSource,
    /// `eventing.knative.dev/v1alpha1` `KafkaSink`: events produced to a Kafka topic.
    KafkaSink,
    /// `triggerfish.dev/v1alpha1` `RocketMQSource`: a RocketMQ topic as events.
    RocketMQSource,
    /// `triggerfish.dev/v1alpha1` `RocketMQSink`: events produced to a RocketMQ topic.
    RocketMQSink,
}

impl Kind {
    /// Every kind, in the order error messages list them.
    pub const ALL: &'static [Kind] = &[
        Kind::Broker,
        Kind::Trigger,
        Kind::Server,
        Kind::Exec,
        Kind::PingSource,
        Kind::Scheduler,
        Kind::EventPolicy,
        Kind::OssSource,
        Kind::S3Source,
        Kind::GitHubSource,
        Kind::RegistrySource,
        Kind::BucketWatch,
        Kind::WorkerPool,
        Kind::KafkaSource,
        Kind::KafkaSink,
        Kind::RocketMQSource,
        Kind::RocketMQSink,
    ];

    /// The `kind` field's value.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Broker => "Broker",
            Kind::Trigger => "Trigger",
            Kind::Server => "Server",
            Kind::Exec => "Exec",
            Kind::PingSource => "PingSource",
            Kind::Scheduler => "Scheduler",
            Kind::EventPolicy => "EventPolicy",
            Kind::OssSource => "OssSource",
            Kind::S3Source => "S3Source",
            Kind::GitHubSource => "GitHubSource",
            Kind::RegistrySource => "RegistrySource",
            Kind::BucketWatch => "BucketWatch",
            Kind::WorkerPool => "WorkerPool",
            Kind::KafkaSource => "KafkaSource",
            Kind::KafkaSink => "KafkaSink",
            Kind::RocketMQSource => "RocketMQSource",
            Kind::RocketMQSink => "RocketMQSink",
        }
    }

    /// The `apiVersion` this kind is read with.
    pub const fn api_version(self) -> &'static str {
        match self {
            Kind::Broker | Kind::Trigger => KNATIVE_EVENTING_V1,
            Kind::Server
            | Kind::Exec
            | Kind::Scheduler
            | Kind::OssSource
            | Kind::S3Source
            | Kind::GitHubSource
            | Kind::RegistrySource
            | Kind::BucketWatch
            | Kind::WorkerPool
            | Kind::RocketMQSource
            | Kind::RocketMQSink => TRIGGERFISH_V1ALPHA1,
            Kind::PingSource => KNATIVE_SOURCES_V1,
            Kind::KafkaSource => KNATIVE_SOURCES_V1BETA1,
            Kind::EventPolicy | Kind::KafkaSink => KNATIVE_EVENTING_V1ALPHA1,
        }
    }

    /// Whether resources of this kind live in a namespace. A `Server` does not.
    pub const fn is_namespaced(self) -> bool {
        !matches!(self, Kind::Server)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Names one resource: kind, namespace (for namespaced kinds) and name. Two documents with the
/// same id are an error.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ResourceId {
    /// The kind.
    pub kind: Kind,
    /// The namespace, `None` for kinds that have none.
    pub namespace: Option<String>,
    /// `metadata.name`.
    pub name: String,
}

impl ResourceId {
    /// The id of a namespaced resource.
    pub fn namespaced(kind: Kind, namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ResourceId {
            kind,
            namespace: Some(namespace.into()),
            name: name.into(),
        }
    }
}

impl fmt::Display for ResourceId {
    /// `Trigger "resize" in namespace "media"`, or `Server "default"`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}", self.kind, self.name)?;
        if let Some(namespace) = &self.namespace {
            write!(f, " in namespace {namespace:?}")?;
        }
        Ok(())
    }
}

/// Kubernetes object metadata (`metadata:`).
///
/// Triggerfish reads `name`, `namespace`, `labels` and `annotations`. The fields that
/// `kubectl get -o yaml` adds (`uid`, `resourceVersion`, `generation`, `creationTimestamp`,
/// `managedFields`, `ownerReferences`, `finalizers`, `generateName`, `selfLink`,
/// `deletionTimestamp`, `deletionGracePeriodSeconds`) are accepted and ignored, so a resource
/// exported from a cluster loads as it is. Any other field is an error, which catches typos
/// such as `namepace`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ObjectMeta {
    /// The resource's name: a DNS-1123 subdomain (lowercase letters, digits, `-` and `.`,
    /// starting and ending with a letter or digit, at most 253 characters).
    pub name: String,
    /// The namespace: a DNS-1123 label (lowercase letters, digits and `-`, at most 63
    /// characters). Defaults to `default`. Ignored for kinds that have no namespace.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Labels. Not interpreted.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations. A few are interpreted, such as
    /// `kafka.eventing.knative.dev/delivery.order` on a `Trigger`.
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    uid: Ignored,
    #[serde(default)]
    resource_version: Ignored,
    #[serde(default)]
    generation: Ignored,
    #[serde(default)]
    creation_timestamp: Ignored,
    #[serde(default)]
    managed_fields: Ignored,
    #[serde(default)]
    owner_references: Ignored,
    #[serde(default)]
    finalizers: Ignored,
    #[serde(default)]
    generate_name: Ignored,
    #[serde(default)]
    self_link: Ignored,
    #[serde(default)]
    deletion_timestamp: Ignored,
    #[serde(default)]
    deletion_grace_period_seconds: Ignored,
}

impl ObjectMeta {
    /// Metadata with a name and namespace, and nothing else.
    pub fn new(name: impl Into<String>, namespace: impl Into<String>) -> ObjectMeta {
        ObjectMeta {
            name: name.into(),
            namespace: namespace.into(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            uid: Ignored,
            resource_version: Ignored,
            generation: Ignored,
            creation_timestamp: Ignored,
            managed_fields: Ignored,
            owner_references: Ignored,
            finalizers: Ignored,
            generate_name: Ignored,
            self_link: Ignored,
            deletion_timestamp: Ignored,
            deletion_grace_period_seconds: Ignored,
        }
    }
}

fn default_namespace() -> String {
    DEFAULT_NAMESPACE.to_owned()
}

/// A field that is accepted in any form and dropped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Ignored;

impl<'de> Deserialize<'de> for Ignored {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Ignored, D::Error> {
        serde::de::IgnoredAny::deserialize(deserializer).map(|_| Ignored)
    }
}

/// Checks a resource name: a DNS-1123 subdomain, as Kubernetes requires.
pub(crate) fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it must not be empty");
    }
    if name.len() > 253 {
        return Err("it must be at most 253 characters");
    }
    for label in name.split('.') {
        check_label_chars(label)?;
    }
    Ok(())
}

/// Checks a namespace: a DNS-1123 label, as Kubernetes requires.
pub(crate) fn check_namespace(namespace: &str) -> Result<(), &'static str> {
    if namespace.is_empty() {
        return Err("it must not be empty");
    }
    if namespace.len() > 63 {
        return Err("it must be at most 63 characters");
    }
    if namespace.contains('.') {
        return Err("it must not contain '.'");
    }
    check_label_chars(namespace)
}

fn check_label_chars(label: &str) -> Result<(), &'static str> {
    let bytes = label.as_bytes();
    let (Some(first), Some(last)) = (bytes.first(), bytes.last()) else {
        return Err("it must not have empty parts between dots");
    };
    if !bytes
        .iter()
        .all(|&b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    {
        return Err("it may contain only lowercase letters, digits, '-' and '.'");
    }
    if !first.is_ascii_alphanumeric() || !last.is_ascii_alphanumeric() {
        return Err("it must start and end with a lowercase letter or digit");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ids_display_like_error_messages() {
        let id = ResourceId::namespaced(Kind::Trigger, "media", "resize");
        assert_eq!(id.to_string(), r#"Trigger "resize" in namespace "media""#);
        let id = ResourceId {
            kind: Kind::Server,
            namespace: None,
            name: "default".into(),
        };
        assert_eq!(id.to_string(), r#"Server "default""#);
    }

    #[test]
    fn names_follow_dns_1123() {
        for ok in ["default", "a", "my-broker", "a.b-c.d", "0abc"] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in ["", "My", "-a", "a-", "a..b", "a_b", ".a", &"a".repeat(254)] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
        assert_eq!(check_namespace("media"), Ok(()));
        for bad in ["a.b", "", "A", &"a".repeat(64)] {
            assert!(check_namespace(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn metadata_accepts_kubectl_fields() {
        let meta: ObjectMeta = serde_norway::from_str(
            "name: x\nuid: 1234\nresourceVersion: \"7\"\ngeneration: 2\nmanagedFields: [{a: 1}]\n",
        )
        .unwrap();
        assert_eq!(meta, ObjectMeta::new("x", "default"));
        assert!(serde_norway::from_str::<ObjectMeta>("name: x\nnamepace: y\n").is_err());
    }
}
