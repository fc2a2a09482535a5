//! `eventing.knative.dev/v1` `Broker`: a named event bus that triggers subscribe to.

use serde::Deserialize;
use serde::de::IgnoredAny;

use crate::config::delivery::{Delivery, DeliverySpec};
use crate::config::meta::{ObjectMeta, ResourceId};

/// `spec` of a `Broker`. The whole `spec` may be left out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BrokerSpec {
    /// Knative's reference to the broker class's configuration (a ConfigMap, or a
    /// KafkaChannel template). Accepted so that Knative YAML loads unchanged, and ignored:
    /// Triggerfish's brokers are configured by the `Server` document.
    #[serde(default)]
    pub config: Option<IgnoredConfig>,
    /// The default retries and dead-letter sink for this broker's triggers. A trigger's own
    /// `delivery` replaces it as a whole.
    #[serde(default)]
    pub delivery: Option<DeliverySpec>,
}

/// A field that is read and dropped (`spec.config` of a `Broker`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IgnoredConfig;

impl<'de> Deserialize<'de> for IgnoredConfig {
    fn deserialize<D: serde::Deserializer<'de>>(
        deserializer: D,
    ) -> Result<IgnoredConfig, D::Error> {
        IgnoredAny::deserialize(deserializer).map(|_| IgnoredConfig)
    }
}

/// A validated `Broker`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Broker {
    /// Kind, namespace and name.
    pub id: ResourceId,
    /// `metadata`.
    pub meta: ObjectMeta,
    /// The default `delivery` of its triggers.
    pub delivery: Option<Delivery>,
    /// The document it came from, from 0: the YAML documents in file order, empty ones left
    /// out, and each item of a `List` counting as one.
    pub document: usize,
}

impl Broker {
    /// The broker's namespace.
    pub fn namespace(&self) -> &str {
        &self.meta.namespace
    }

    /// The broker's name.
    pub fn name(&self) -> &str {
        &self.meta.name
    }
}
