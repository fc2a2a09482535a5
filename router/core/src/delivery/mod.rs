//! The delivery policy: is this outcome worth a retry, and when is the next attempt?
//!
//! [`DeliveryPolicy`] is built from a config [`DeliverySpec`] and cannot be invalid. The
//! dispatcher reports each attempt's [`Outcome`] to [`DeliveryPolicy::next_attempt`] and
//! gets a [`Decision`]: delivered, retry after a delay, or give up and dead-letter. Time
//! enters as arguments (`now` for HTTP-date `Retry-After` values) and so does randomness (for
//! jitter), so schedules are deterministic under test.
//!
//! # Semantics, and how they follow Knative
//!
//! - **Attempts.** An event gets at most `retry + 1` attempts; `retry` defaults to 0. With no
//!   `delivery` on the trigger or its broker, that is one attempt.
//! - **Which delivery.** A trigger's `delivery` replaces its broker's as a whole, as in
//!   Knative; fields are not merged ([`effective`]). A `delivery: {}` with no field set counts
//!   as absent, so it does not switch off the broker's retries.
//! - **What is retried** ([`classify`]): transport errors, 5xx, 404, 408, 409 and 429, as
//!   Knative's `SelectiveRetry`. 1xx, 3xx and other 4xx go to the dead-letter sink at once.
//! - **Backoff.** The delay before retry `n`, counting retries from 1 (the retry after the
//!   first attempt is `n = 1`), is `backoffDelay * n` for `linear` and `backoffDelay * 2^n`
//!   for `exponential` (the default). This is the formula Knative documents for `DeliverySpec`
//!   and that its `RetryConfig.Backoff` computes (`retries.go`), whose unit tests call it with
//!   `n` from 1: exponential with `PT0.5S` waits 1s, 2s, 4s, 8s, 16s. (Knative's channel-based
//!   broker hands that function go-retryablehttp's 0-based loop counter, so there the first
//!   exponential retry waits `backoffDelay` and the first linear retry does not wait at all;
//!   we follow the documented formula, which the Kafka broker also implements.) Without
//!   `backoffDelay` the delay is zero, as in Knative.
//! - **Beyond Knative**, in this order: the delay is capped at `backoffMax`; then with
//!   `jitter: full` a uniformly random delay in `[0, delay]` is drawn from the caller's
//!   `random` input (the default `jitter: none` keeps Knative's exact schedule).
//! - **`Retry-After`** on a 429 or 503, as delay-seconds or an HTTP-date (measured from
//!   `now`), is honoured only when `retryAfterMax` is set, as in Knative today (its
//!   "delivery-retryafter" feature is opt-in through that field): the header's delay, capped
//!   at `retryAfterMax`, replaces the backoff delay when it is longer. `retryAfterMax: PT0S`
//!   turns it off. `backoffMax` does not cap it: the destination asked explicitly.
//! - **Timeout.** `timeout` bounds each attempt; the dispatcher enforces it and reports
//!   [`TransportError::Timeout`].
//! - **Overflow.** All arithmetic saturates; no delay exceeds [`MAX_DELAY`] (one year), and
//!   no input panics.
//!
//! What this module does not do: send anything, sleep, read a clock or a random number
//! generator, or build the `knativeerror*` extensions (it provides the code,
//! [`Failure::error_code`]).

mod backoff;
mod outcome;
mod retry_after;

use std::time::{Duration, SystemTime};

pub use backoff::MAX_DELAY;
pub use outcome::{
    Cause, Classification, ErrorSource, Failure, InternalError, Outcome, TransportError, classify,
};

use crate::config::{BackoffPolicy, DeliverySpec, Jitter};

/// The delivery that applies to a trigger: its own if set, else its broker's. Knative
/// replaces the whole spec; it never merges fields. Generic so it serves both the spec and
/// the validated [`Delivery`](crate::config::Delivery).
pub fn effective<'a, T>(trigger: Option<&'a T>, broker: Option<&'a T>) -> Option<&'a T> {
    trigger.or(broker)
}

/// When to retry a failed delivery and when to give up. Built from a [`DeliverySpec`];
/// always valid.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeliveryPolicy {
    retry: u32,
    backoff_policy: BackoffPolicy,
    backoff_delay: Duration,
    backoff_max: Option<Duration>,
    jitter: Jitter,
    timeout: Option<Duration>,
    retry_after_max: Option<Duration>,
}

/// A delivery spec the policy refuses.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeliveryPolicyError {
    /// `timeout: PT0S` would fail every attempt.
    #[error("must be more than zero: a zero timeout fails every attempt")]
    ZeroTimeout,
    /// `backoffMax: PT0S` would make every retry immediate.
    #[error(
        "must be more than zero: a zero cap makes every retry immediate; leave it out for no cap"
    )]
    ZeroBackoffMax,
}

impl DeliveryPolicyError {
    /// The `DeliverySpec` field the error is about, as written in YAML.
    pub fn field(&self) -> &'static str {
        match self {
            DeliveryPolicyError::ZeroTimeout => "timeout",
            DeliveryPolicyError::ZeroBackoffMax => "backoffMax",
        }
    }
}

/// What to do after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Delivered.
    Succeeded,
    /// Try again after a delay.
    Retry {
        /// How long to wait from now.
        after: Duration,
        /// The number of the next attempt (the first attempt is 1).
        next_attempt: u32,
        /// Why the last attempt failed.
        failure: Failure,
    },
    /// Give up: send the event to the dead-letter sink if there is one, else drop it.
    DeadLetter(DeadLetter),
}

/// Why and after how many attempts an event is given up on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    /// Why the last attempt failed.
    pub failure: Failure,
    /// How many attempts were made.
    pub attempts: u32,
    /// Why there is no further attempt.
    pub reason: GiveUp,
}

impl DeadLetter {
    /// The value for the `knativeerrorcode` extension: see [`Failure::error_code`].
    pub fn error_code(&self) -> u16 {
        self.failure.error_code()
    }
}

/// Why a failed event gets no further attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GiveUp {
    /// The failure is not one a retry can fix.
    NotRetryable,
    /// All `retry + 1` attempts were used.
    Exhausted,
}

impl DeliveryPolicy {
    /// Builds the policy of a delivery spec.
    pub fn from_spec(spec: &DeliverySpec) -> Result<DeliveryPolicy, DeliveryPolicyError> {
        let timeout = spec.timeout.map(|t| t.get());
        if timeout == Some(Duration::ZERO) {
            return Err(DeliveryPolicyError::ZeroTimeout);
        }
        let backoff_max = spec.backoff_max.map(|t| t.get());
        if backoff_max == Some(Duration::ZERO) {
            return Err(DeliveryPolicyError::ZeroBackoffMax);
        }
        Ok(DeliveryPolicy {
            retry: spec.retry.unwrap_or(0),
            backoff_policy: spec.backoff_policy.unwrap_or_default(),
            backoff_delay: spec.backoff_delay.map(|d| d.get()).unwrap_or_default(),
            backoff_max,
            jitter: spec.jitter.unwrap_or_default(),
            timeout,
            retry_after_max: spec.retry_after_max.map(|d| d.get()),
        })
    }

    /// The policy for a trigger with delivery spec `trigger` on a broker with `broker`:
    /// see [`effective`]. A trigger spec with no field set counts as absent. Neither gives one
    /// attempt and no retries.
    pub fn resolve(
        trigger: Option<&DeliverySpec>,
        broker: Option<&DeliverySpec>,
    ) -> Result<DeliveryPolicy, DeliveryPolicyError> {
        let trigger = trigger.filter(|spec| spec.is_set());
        effective(trigger, broker).map_or_else(|| Ok(DeliveryPolicy::default()), Self::from_spec)
    }

    /// How many times a failed attempt is retried.
    pub fn retry(&self) -> u32 {
        self.retry
    }

    /// The most attempts an event gets: `retry + 1` (saturating at `u32::MAX`).
    pub fn max_attempts(&self) -> u32 {
        self.retry.saturating_add(1)
    }

    /// `linear` or `exponential`.
    pub fn backoff_policy(&self) -> BackoffPolicy {
        self.backoff_policy
    }

    /// The base delay (zero when not set).
    pub fn backoff_delay(&self) -> Duration {
        self.backoff_delay
    }

    /// The cap on backoff delays, if any.
    pub fn backoff_max(&self) -> Option<Duration> {
        self.backoff_max
    }

    /// The jitter mode.
    pub fn jitter(&self) -> Jitter {
        self.jitter
    }

    /// The per-attempt timeout, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    /// The longest `Retry-After` honoured; `None` means `Retry-After` is ignored.
    pub fn retry_after_max(&self) -> Option<Duration> {
        self.retry_after_max
    }

    /// Classifies an outcome; see [`classify`]. The same for every policy today.
    pub fn classify(&self, outcome: &Outcome<'_>) -> Classification {
        classify(outcome)
    }

    /// The delay before retry `n` (from 1; 0 counts as 1), without `Retry-After`: Knative's
    /// formula, capped at `backoffMax`, then jittered with `random` if `jitter: full`.
    pub fn backoff(&self, n: u32, random: u64) -> Duration {
        let delay = backoff::knative_delay(self.backoff_policy, self.backoff_delay, n.max(1));
        let delay = match self.backoff_max {
            Some(max) => delay.min(max),
            None => delay,
        };
        match self.jitter {
            Jitter::None => delay,
            Jitter::Full => backoff::full_jitter(delay, random),
        }
    }

    /// Decides what follows attempt number `attempt` (from 1; 0 counts as 1), which ended
    /// with `outcome`, at time `now`. `random` is a uniformly distributed value that picks
    /// the jitter; it is ignored without jitter.
    pub fn next_attempt(
        &self,
        attempt: u32,
        outcome: &Outcome<'_>,
        now: SystemTime,
        random: u64,
    ) -> Decision {
        let attempt = attempt.max(1);
        let failure = match classify(outcome) {
            Classification::Success => return Decision::Succeeded,
            Classification::Failure(failure) => failure,
        };
        let give_up = |reason| {
            Decision::DeadLetter(DeadLetter {
                failure,
                attempts: attempt,
                reason,
            })
        };
        if !failure.retryable {
            return give_up(GiveUp::NotRetryable);
        }
        if attempt >= self.max_attempts() {
            return give_up(GiveUp::Exhausted);
        }
        // The retry that follows attempt n is retry n.
        let mut after = self.backoff(attempt, random);
        if let Some(requested) = self.retry_after(outcome, now) {
            after = after.max(requested);
        }
        Decision::Retry {
            after: after.min(MAX_DELAY),
            next_attempt: attempt + 1,
            failure,
        }
    }

    /// The delay a 429 or 503 asks for, capped at `retryAfterMax`; `None` when not honoured.
    fn retry_after(&self, outcome: &Outcome<'_>, now: SystemTime) -> Option<Duration> {
        let max = self.retry_after_max?;
        let Outcome::Response {
            status,
            retry_after: Some(value),
        } = *outcome
        else {
            return None;
        };
        if !matches!(status.as_u16(), 429 | 503) {
            return None;
        }
        Some(retry_after::parse(value, now)?.min(max))
    }
}

#[cfg(test)]
mod tests;
