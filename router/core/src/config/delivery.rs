//! `delivery:` on a Broker or Trigger: Knative's `DeliverySpec`, plus a few fields of ours.

use serde::Deserialize;

use crate::config::destination::{Destination, DestinationSpec};
use crate::config::duration::IsoDuration;
use crate::delivery::DeliveryPolicy;

/// How failed deliveries are retried, and where events go when retries run out.
///
/// Knative's `DeliverySpec` (`eventing.knative.dev/v1`), field for field, with Triggerfish
/// extensions: `backoffMax`, `jitter`, `retryAfterMax`, `format` and `pipelining`. A Trigger's `delivery` replaces its
/// Broker's as a whole, as in Knative; fields are not merged. A `delivery` with no field set
/// counts as absent. With no `delivery` anywhere, each event gets one attempt and no
/// dead-letter sink.
///
/// The retry schedule is computed by [`crate::delivery::DeliveryPolicy`]; its docs give the
/// exact formulas.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct DeliverySpec {
    /// Where an event goes when it cannot be delivered: every attempt failed, or one failed
    /// in a way a retry cannot fix (a 400, say). It is sent with the `knativeerrordest`,
    /// `knativeerrorcode` and `knativeerrordata` extensions. Without one, such events are
    /// dropped and counted.
    pub dead_letter_sink: Option<DestinationSpec>,
    /// How many times a failed attempt is retried: an event gets at most `retry + 1`
    /// attempts. Defaults to 0.
    pub retry: Option<u32>,
    /// `linear` or `exponential` (the default): how the delay grows from one retry to the
    /// next.
    pub backoff_policy: Option<BackoffPolicy>,
    /// The base delay between retries, as an ISO-8601 duration (`PT0.2S`). Defaults to zero,
    /// as in Knative: retries follow each other at once. Set it.
    pub backoff_delay: Option<IsoDuration>,
    /// Triggerfish extension: the longest delay between two retries, however many retries
    /// came before. Unset: no cap beyond an absolute ceiling of one year.
    pub backoff_max: Option<IsoDuration>,
    /// Triggerfish extension: `none` (the default, Knative's exact schedule) or `full`,
    /// which waits a uniformly random time between zero and the computed delay, so that many
    /// events failing together do not retry together.
    pub jitter: Option<Jitter>,
    /// How long one attempt may take, as an ISO-8601 duration. It must be more than zero.
    /// Unset: attempts are bounded only by the router's own limits.
    pub timeout: Option<IsoDuration>,
    /// The longest `Retry-After` honoured on a 429 or 503 response, as an ISO-8601 duration.
    /// Unset (Knative's default) means `Retry-After` is ignored; `PT0S` also ignores it.
    pub retry_after_max: Option<IsoDuration>,
    /// How events are sent to HTTP destinations: `binary` (the default; attributes in `ce-*`
    /// headers) or `json` (structured mode, one JSON event per request).
    pub format: Option<DeliveryFormat>,
    /// Triggerfish extension: HTTP/1.1 pipelining to HTTP subscribers. Up to this many
    /// requests (1 to [`MAX_PIPELINING`]) are written on one connection before their responses
    /// come back, in order. Unset: one request at a time per connection, as Knative sends
    /// them. Only for subscribers known to answer pipelined requests in order (any HTTP/1.1
    /// server must); other destinations ignore it.
    pub pipelining: Option<u16>,
}

/// The most requests `pipelining` may keep outstanding on one connection.
pub const MAX_PIPELINING: u16 = 1024;

impl DeliverySpec {
    /// Whether any field is set. A trigger's `delivery: {}` sets nothing, and is treated as
    /// absent: the broker's delivery applies.
    pub fn is_set(&self) -> bool {
        *self != DeliverySpec::default()
    }
}

string_enum! {
    /// `backoffPolicy`.
    pub enum BackoffPolicy {
        /// The n-th retry waits `backoffDelay * n`.
        Linear = "linear",
        /// The n-th retry waits `backoffDelay * 2^n`.
        Exponential = "exponential",
    }
}

impl Default for BackoffPolicy {
    /// Exponential, as in Knative.
    fn default() -> BackoffPolicy {
        BackoffPolicy::Exponential
    }
}

string_enum! {
    /// `jitter` (a Triggerfish extension).
    pub enum Jitter {
        /// The computed delay exactly.
        None = "none",
        /// A uniformly random delay between zero and the computed delay ("full jitter").
        Full = "full",
    }
}

impl Default for Jitter {
    /// No jitter, so schedules match Knative's.
    fn default() -> Jitter {
        Jitter::None
    }
}

string_enum! {
    /// `format`: the HTTP content mode of deliveries.
    pub enum DeliveryFormat {
        /// Binary mode: attributes in `ce-*` headers, data as the body.
        Binary = "binary",
        /// Structured mode: the whole event as `application/cloudevents+json`.
        Json = "json",
    }
}

impl Default for DeliveryFormat {
    /// Binary mode.
    fn default() -> DeliveryFormat {
        DeliveryFormat::Binary
    }
}

/// A validated `delivery:`: the retry policy, the resolved dead-letter sink and the format.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Delivery {
    /// When to retry and when to give up.
    pub policy: DeliveryPolicy,
    /// Where events go when they cannot be delivered.
    pub dead_letter_sink: Option<Destination>,
    /// The HTTP content mode.
    pub format: DeliveryFormat,
    /// Requests outstanding per connection to an HTTP subscriber (`pipelining`); 1 when
    /// unset.
    pub pipelining: std::num::NonZeroU16,
}

impl Default for Delivery {
    /// One attempt, no dead-letter sink, binary mode, no pipelining.
    fn default() -> Delivery {
        Delivery::new(DeliveryPolicy::default(), None, DeliveryFormat::default())
    }
}

impl Delivery {
    /// A delivery with the given parts.
    pub fn new(
        policy: DeliveryPolicy,
        dead_letter_sink: Option<Destination>,
        format: DeliveryFormat,
    ) -> Delivery {
        Delivery {
            policy,
            dead_letter_sink,
            format,
            pipelining: std::num::NonZeroU16::MIN,
        }
    }

    /// The same delivery with HTTP/1.1 pipelining `depth` deep.
    pub fn with_pipelining(mut self, depth: std::num::NonZeroU16) -> Delivery {
        self.pipelining = depth;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_knative_delivery_specs() {
        let spec: DeliverySpec = serde_norway::from_str(
            "deadLetterSink: {uri: http://dls/}\nretry: 5\nbackoffPolicy: linear\nbackoffDelay: PT0.2S\ntimeout: PT10S\nretryAfterMax: PT1M\nformat: json\n",
        )
        .unwrap();
        assert_eq!(spec.retry, Some(5));
        assert_eq!(spec.backoff_policy, Some(BackoffPolicy::Linear));
        assert_eq!(spec.backoff_delay, Some(IsoDuration::from_millis(200)));
        assert_eq!(spec.timeout, Some(IsoDuration::from_secs(10)));
        assert_eq!(spec.retry_after_max, Some(IsoDuration::from_secs(60)));
        assert_eq!(spec.format, Some(DeliveryFormat::Json));
        assert_eq!(
            spec.dead_letter_sink,
            Some(DestinationSpec::uri("http://dls/"))
        );
    }

    #[test]
    fn enums_read_their_yaml_spelling() {
        assert_eq!(
            BackoffPolicy::from_name("exponential"),
            Some(BackoffPolicy::Exponential)
        );
        assert_eq!(BackoffPolicy::Linear.to_string(), "linear");
        assert_eq!(Jitter::NAMES, ["none", "full"]);
        let err = serde_norway::from_str::<BackoffPolicy>("Linear").unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown variant `Linear`, expected `linear` or `exponential`"
        );
    }
}
