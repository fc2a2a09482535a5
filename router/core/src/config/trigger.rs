//! `eventing.knative.dev/v1` `Trigger`: which events of a broker go where.

use std::collections::BTreeMap;
use std::num::NonZeroU32;

use serde::Deserialize;

use crate::config::delivery::{Delivery, DeliverySpec};
use crate::config::destination::{Destination, DestinationSpec};
use crate::config::duration::IsoDuration;
use crate::config::meta::{ObjectMeta, ResourceId};
use crate::config::path::FieldPath;

/// The annotation that picks ordered or unordered delivery, as in Knative's Kafka broker.
pub const DELIVERY_ORDER_ANNOTATION: &str = "kafka.eventing.knative.dev/delivery.order";

/// The default of `spec.maxInFlight`.
pub const DEFAULT_MAX_IN_FLIGHT: NonZeroU32 = NonZeroU32::new(256).expect("256 is not zero");

/// Full batches a trigger with `spec.batch` on an HTTP subscriber keeps in flight when its
/// `maxInFlight` is not set (see [`default_max_in_flight`]).
///
/// `maxInFlight` counts events, so 256 would allow only three requests of 100. At 1,000
/// triggers with batches in, three held the router to 369 K events/s with a third of the
/// producer's requests refused (its trigger fell behind), eight gave 484 K, twelve 486 K and
/// sixteen 458 K (bench/README.md, "Batched delivery").
pub const DEFAULT_BATCHES_IN_FLIGHT: u32 = 8;

/// `spec.maxInFlight` when it is not set: [`DEFAULT_MAX_IN_FLIGHT`], or for an HTTP subscriber
/// with `spec.batch` ([`Trigger::http_batch`]), [`DEFAULT_BATCHES_IN_FLIGHT`] full batches'
/// worth of events when that is more.
pub fn default_max_in_flight(http_batch: Option<&crate::config::Batching>) -> NonZeroU32 {
    let batches = http_batch.map_or(0, |b| {
        b.max_events.get().saturating_mul(DEFAULT_BATCHES_IN_FLIGHT)
    });
    DEFAULT_MAX_IN_FLIGHT.max(NonZeroU32::new(batches).unwrap_or(DEFAULT_MAX_IN_FLIGHT))
}

/// `spec` of a `Trigger`.
///
/// Knative's `TriggerSpec`, plus two Triggerfish extensions, `maxInFlight` and `batch`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TriggerSpec {
    /// The broker whose events this trigger receives, by name, in the trigger's namespace.
    /// It must be defined in the same config.
    pub broker: String,
    /// Knative's attribute filter: every listed attribute must equal the given value exactly
    /// (case-sensitive). An empty value means "present and non-empty".
    #[serde(default)]
    pub filter: Option<AttributesFilterSpec>,
    /// Knative's SubscriptionsAPI filters; all of them must match (an implicit `all`).
    /// When `filters` is not empty it replaces `filter`, as in Knative; an empty list passes
    /// every event.
    #[serde(default)]
    pub filters: Vec<FilterSpec>,
    /// Where matching events are delivered.
    pub subscriber: DestinationSpec,
    /// Retries and dead-lettering for this trigger. When set, it replaces the broker's
    /// `delivery` as a whole.
    #[serde(default)]
    pub delivery: Option<DeliverySpec>,
    /// Triggerfish extension: how many events this trigger may have in flight at once, for
    /// unordered delivery. Ordered triggers deliver one event at a time per partition key.
    /// Defaults to 256, or with `batch` on an HTTP subscriber to eight full batches when that
    /// is more (800 for batches of 100).
    #[serde(default)]
    pub max_in_flight: Option<NonZeroU32>,
    /// Triggerfish extension: at most this many deliveries per second to the subscriber,
    /// smoothing bursts toward a fragile one (events wait in the trigger's queue).
    #[serde(default)]
    pub rate_limit: Option<crate::config::RateSpec>,
    /// Triggerfish extension: how events are gathered into batches. `quic://` subscribers
    /// always get frames of events (this sets their size); on an HTTP(S) subscriber it turns on
    /// CloudEvents batched content mode: one `application/cloudevents-batch+json` request
    /// carries the events that are ready at the same time. Retries, dead-lettering and
    /// ordering stay per event. Other destinations reject it.
    ///
    /// ```yaml
    /// batch: {maxEvents: 100, linger: PT0.005S}
    /// ```
    #[serde(default)]
    pub batch: Option<BatchSpec>,
}

/// `spec.batch` of a trigger with a `quic://` or HTTP(S) subscriber.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct BatchSpec {
    /// The most events in one frame or request, up to [`MAX_BATCH_EVENTS`]. Defaults to 100.
    #[serde(default)]
    pub max_events: Option<NonZeroU32>,
    /// How long the first event of a batch waits for more before the batch is sent, as an
    /// ISO-8601 duration of at most `PT1S`. Defaults to `PT0S`: a batch leaves at once with
    /// whatever gathered while the previous batches were in flight, so batches grow with the
    /// load and a lone event is not delayed.
    #[serde(default)]
    pub linger: Option<IsoDuration>,
}

/// The largest `spec.batch.maxEvents`: a server's default `limits.maxBatchEvents`.
pub const MAX_BATCH_EVENTS: u32 = 10_000;

/// The longest `spec.batch.linger`.
pub const MAX_LINGER: std::time::Duration = std::time::Duration::from_secs(1);

/// `spec.filter`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttributesFilterSpec {
    /// Attribute name to exact value. Names match `^[a-z][a-z0-9]*$`.
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// One element of `spec.filters` (Knative's `SubscriptionsAPIFilter`).
///
/// Each element uses exactly one dialect. Knative enforces that only for non-empty dialects
/// and lets an element with none set match everything; Triggerfish rejects both, along with
/// empty values in `exact`, `prefix` and `suffix`, which Knative lets match every event.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterSpec {
    /// `{attribute: value}`: the attribute equals the value. Exactly one attribute.
    pub exact: Option<BTreeMap<String, String>>,
    /// `{attribute: value}`: the attribute starts with the value. Exactly one attribute.
    pub prefix: Option<BTreeMap<String, String>>,
    /// `{attribute: value}`: the attribute ends with the value. Exactly one attribute.
    pub suffix: Option<BTreeMap<String, String>>,
    /// Every nested filter matches.
    pub all: Option<Vec<FilterSpec>>,
    /// At least one nested filter matches.
    pub any: Option<Vec<FilterSpec>>,
    /// The nested filter does not match.
    pub not: Option<Box<FilterSpec>>,
    /// A CloudEvents SQL (CESQL v1) expression that evaluates to true.
    pub cesql: Option<String>,
}

string_enum! {
    /// The value of the `kafka.eventing.knative.dev/delivery.order` annotation.
    pub enum DeliveryOrder {
        /// One event at a time per partition key (the `partitionkey` extension, else
        /// `source`), in the order received.
        Ordered = "ordered",
        /// Events are delivered concurrently, up to `maxInFlight`.
        Unordered = "unordered",
    }
}

impl Default for DeliveryOrder {
    /// Unordered, as in Knative.
    fn default() -> DeliveryOrder {
        DeliveryOrder::Unordered
    }
}

/// A validated `Trigger`.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Trigger {
    /// Kind, namespace and name.
    pub id: ResourceId,
    /// `metadata`.
    pub meta: ObjectMeta,
    /// The broker's name, in the trigger's namespace. It exists in the config.
    pub broker: String,
    /// `spec.filter.attributes`; empty when not set.
    pub attributes: BTreeMap<String, String>,
    /// `spec.filters`, all of which must match.
    pub filters: Vec<Filter>,
    /// Where matching events go.
    pub subscriber: Destination,
    /// For an HTTP(S) subscriber with `spec.batch`: deliveries in batched content mode, this
    /// many events at most per request. (A `quic://` subscriber's batching is part of its
    /// [`Destination::Quic`].)
    pub http_batch: Option<crate::config::Batching>,
    /// The trigger's own `delivery`, if set. [`Config::delivery_for`] applies the broker's
    /// when it is not.
    ///
    /// [`Config::delivery_for`]: crate::config::Config::delivery_for
    pub delivery: Option<Delivery>,
    /// Ordered or unordered delivery.
    pub delivery_order: DeliveryOrder,
    /// The most events in flight at once, for unordered delivery.
    pub max_in_flight: NonZeroU32,
    /// Deliveries per second, if limited.
    pub rate_limit: Option<crate::config::RateSpec>,
    /// `spec.subscriber.audience`: mint a token for this audience.
    pub subscriber_audience: Option<String>,
    /// `spec.subscriber.token`: a static token for the subscriber.
    pub subscriber_token: Option<crate::config::SecretSource>,
    /// The document it came from, from 0: the YAML documents in file order, empty ones left
    /// out, and each item of a `List` counting as one.
    pub document: usize,
}

impl Trigger {
    /// The trigger's namespace.
    pub fn namespace(&self) -> &str {
        &self.meta.namespace
    }

    /// The trigger's name.
    pub fn name(&self) -> &str {
        &self.meta.name
    }
}

/// A validated element of `spec.filters`, and where it is in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Filter {
    /// What it tests.
    pub expr: FilterExpr,
    /// Its field path, such as `spec.filters[2]` or `spec.filters[0].all[1]`. A CESQL
    /// expression sits at `path.key("cesql")`; give that to
    /// [`Config::error_at`](crate::config::Config::error_at) to report a compile error.
    pub path: FieldPath,
}

/// One SubscriptionsAPI dialect with its operands.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FilterExpr {
    /// The attribute equals the value.
    Exact {
        /// The attribute name.
        attribute: String,
        /// The value, never empty.
        value: String,
    },
    /// The attribute starts with the value.
    Prefix {
        /// The attribute name.
        attribute: String,
        /// The prefix, never empty.
        value: String,
    },
    /// The attribute ends with the value.
    Suffix {
        /// The attribute name.
        attribute: String,
        /// The suffix, never empty.
        value: String,
    },
    /// Every filter matches (never empty).
    All(Vec<Filter>),
    /// At least one filter matches (never empty).
    Any(Vec<Filter>),
    /// The filter does not match.
    Not(Box<Filter>),
    /// A CESQL expression, as written (never empty). It is compiled by the `cesql` module.
    Cesql(String),
}

/// Whether `name` is a valid attribute name for filters: `^[a-z][a-z0-9]*$` (Knative's rule).
pub fn is_valid_filter_attribute(name: &str) -> bool {
    let mut bytes = name.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attribute_names_follow_knative() {
        for ok in ["type", "source", "myext1", "a"] {
            assert!(is_valid_filter_attribute(ok), "{ok}");
        }
        for bad in ["", "Type", "1a", "my-ext", "my_ext", "é"] {
            assert!(!is_valid_filter_attribute(bad), "{bad}");
        }
    }

    #[test]
    fn reads_a_knative_trigger_spec() {
        let spec: TriggerSpec = serde_norway::from_str(
            "broker: default\nfilter:\n  attributes: {type: a}\nfilters:\n  - any:\n      - prefix: {type: b}\n      - not: {cesql: \"x = 1\"}\nsubscriber: {uri: http://s/}\nmaxInFlight: 8\n",
        )
        .unwrap();
        assert_eq!(spec.broker, "default");
        assert_eq!(spec.filter.unwrap().attributes["type"], "a");
        assert_eq!(spec.filters[0].any.as_ref().unwrap().len(), 2);
        assert_eq!(spec.max_in_flight, NonZeroU32::new(8));
    }
}
