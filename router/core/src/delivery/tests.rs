//! Delivery policy tests: classification, Knative's schedules, a fake-clock harness, and
//! properties of the backoff arithmetic.

use std::time::{Duration, SystemTime};

use http::StatusCode;
use proptest::prelude::*;

use super::*;
use crate::config::{DeliverySpec, IsoDuration};

fn spec(yaml: &str) -> DeliverySpec {
    serde_norway::from_str(yaml).unwrap()
}

fn policy(yaml: &str) -> DeliveryPolicy {
    DeliveryPolicy::from_spec(&spec(yaml)).unwrap()
}

fn status(code: u16) -> Outcome<'static> {
    Outcome::status(StatusCode::from_u16(code).unwrap())
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// 2023-11-14T22:13:20Z: the fake clock starts here.
fn t0() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000)
}

/// A fake-clock harness: drives a policy through a sequence of outcomes, one per attempt,
/// advancing the clock by each decided delay, and records when each attempt started.
struct Harness {
    policy: DeliveryPolicy,
    now: SystemTime,
    randoms: Vec<u64>,
}

/// What [`Harness::drive`] saw.
#[derive(Debug, PartialEq)]
struct Schedule {
    /// When each attempt started, relative to the first.
    attempts: Vec<Duration>,
    /// The decision after the last attempt driven.
    last: Decision,
}

impl Harness {
    fn new(policy: DeliveryPolicy) -> Harness {
        Harness {
            policy,
            now: t0(),
            randoms: Vec::new(),
        }
    }

    /// Feeds `outcomes(attempt, now)` until the policy stops retrying or `limit` attempts ran.
    fn drive_with<'a>(
        &mut self,
        limit: usize,
        mut outcomes: impl FnMut(u32, SystemTime) -> Outcome<'a>,
    ) -> Schedule {
        let start = self.now;
        let mut attempts = Vec::new();
        let mut attempt = 1;
        loop {
            attempts.push(self.now.duration_since(start).unwrap());
            let outcome = outcomes(attempt, self.now);
            let random = self.randoms.get(attempts.len() - 1).copied().unwrap_or(0);
            let decision = self
                .policy
                .next_attempt(attempt, &outcome, self.now, random);
            match decision {
                Decision::Retry {
                    after,
                    next_attempt,
                    ..
                } if attempts.len() < limit => {
                    assert_eq!(next_attempt, attempt + 1);
                    self.now += after;
                    attempt = next_attempt;
                }
                last => return Schedule { attempts, last },
            }
        }
    }

    /// Feeds `outcomes` in order; the last one repeats.
    fn drive(&mut self, outcomes: &[Outcome<'static>]) -> Schedule {
        let outcomes = outcomes.to_vec();
        self.drive_with(10_000, |attempt, _| {
            outcomes[(attempt as usize - 1).min(outcomes.len() - 1)]
        })
    }
}

fn at(seconds: &[f64]) -> Vec<Duration> {
    seconds.iter().map(|&s| secs(s)).collect()
}

fn dead_letter(decision: Decision) -> DeadLetter {
    match decision {
        Decision::DeadLetter(dead_letter) => dead_letter,
        other => panic!("expected a dead letter, got {other:?}"),
    }
}

#[test]
fn classifies_like_knative_selective_retry() {
    for code in [200, 201, 202, 204, 299] {
        assert_eq!(classify(&status(code)), Classification::Success, "{code}");
    }
    for (code, retryable) in [
        (100, false),
        (102, false),
        (300, false),
        (301, false),
        (302, false),
        (304, false),
        (400, false),
        (401, false),
        (403, false),
        (404, true),
        (405, false),
        (408, true),
        (409, true),
        (410, false),
        (413, false),
        (422, false),
        (429, true),
        (500, true),
        (501, true),
        (502, true),
        (503, true),
        (504, true),
        (599, true),
        (600, true),
    ] {
        let Classification::Failure(failure) = classify(&status(code)) else {
            panic!("{code} is a failure");
        };
        assert_eq!(failure.retryable, retryable, "{code}");
        assert_eq!(failure.source, ErrorSource::Destination);
        assert_eq!(failure.error_code(), code);
    }
}

#[test]
fn transport_errors_are_retried_and_blamed_on_the_destination() {
    for error in [
        TransportError::Connect,
        TransportError::Timeout,
        TransportError::Reset,
        TransportError::Tls,
        TransportError::Protocol,
    ] {
        let Classification::Failure(failure) = classify(&Outcome::Transport(error)) else {
            panic!()
        };
        assert!(failure.retryable);
        assert_eq!(failure.source, ErrorSource::Destination);
        assert_eq!(failure.error_code(), 500);
    }
}

#[test]
fn internal_errors_are_ours() {
    let Classification::Failure(encode) = classify(&Outcome::Internal(InternalError::Encode))
    else {
        panic!()
    };
    assert_eq!(
        (encode.source, encode.retryable),
        (ErrorSource::Router, false)
    );
    let Classification::Failure(busy) = classify(&Outcome::Internal(InternalError::Unavailable))
    else {
        panic!()
    };
    assert_eq!((busy.source, busy.retryable), (ErrorSource::Router, true));
}

#[test]
fn exponential_backoff_matches_knative_retries_test() {
    // Knative's TestRetryConfigFromDeliverySpec: PT0.5S exponential gives 1s, 2s, 4s, 8s, 16s
    // for retries 1 to 5; PT1.5S gives 3s, 6s, 12s...
    let p = policy("retry: 5\nbackoffPolicy: exponential\nbackoffDelay: PT0.5S");
    let delays: Vec<_> = (1..=5).map(|n| p.backoff(n, 0)).collect();
    assert_eq!(delays, at(&[1.0, 2.0, 4.0, 8.0, 16.0]));
    let p = policy("retry: 5\nbackoffPolicy: exponential\nbackoffDelay: PT1.5S");
    assert_eq!(p.backoff(1, 0), secs(3.0));
    assert_eq!(p.backoff(3, 0), secs(12.0));
}

#[test]
fn linear_backoff_matches_knative_retries_test() {
    let p = policy("retry: 5\nbackoffPolicy: linear\nbackoffDelay: PT2.5S");
    let delays: Vec<_> = (1..=5).map(|n| p.backoff(n, 0)).collect();
    assert_eq!(delays, at(&[2.5, 5.0, 7.5, 10.0, 12.5]));
}

#[test]
fn exponential_is_the_default_policy_and_delay_defaults_to_zero() {
    let p = policy("retry: 3\nbackoffDelay: PT1S");
    assert_eq!(p.backoff_policy(), BackoffPolicy::Exponential);
    assert_eq!(p.backoff(2, 0), secs(4.0));
    let p = policy("retry: 3");
    assert_eq!(p.backoff(3, 0), Duration::ZERO);
}

#[test]
fn schedule_of_an_exponential_policy_until_success() {
    let mut harness = Harness::new(policy("retry: 5\nbackoffDelay: PT0.5S"));
    let schedule = harness.drive(&[status(503), status(503), status(503), status(200)]);
    // Attempt 1 at 0; retries wait 1s, 2s, 4s.
    assert_eq!(schedule.attempts, at(&[0.0, 1.0, 3.0, 7.0]));
    assert_eq!(schedule.last, Decision::Succeeded);
}

#[test]
fn schedule_until_retries_run_out() {
    let mut harness = Harness::new(policy(
        "retry: 3\nbackoffPolicy: linear\nbackoffDelay: PT1S",
    ));
    let schedule = harness.drive(&[status(500)]);
    assert_eq!(schedule.attempts, at(&[0.0, 1.0, 3.0, 6.0]));
    let dead = dead_letter(schedule.last);
    assert_eq!(dead.attempts, 4);
    assert_eq!(dead.reason, GiveUp::Exhausted);
    assert_eq!(dead.error_code(), 500);
}

#[test]
fn no_delivery_means_one_attempt() {
    let mut harness = Harness::new(DeliveryPolicy::default());
    let schedule = harness.drive(&[Outcome::Transport(TransportError::Connect)]);
    assert_eq!(schedule.attempts, at(&[0.0]));
    let dead = dead_letter(schedule.last);
    assert_eq!((dead.attempts, dead.reason), (1, GiveUp::Exhausted));
    assert_eq!(dead.error_code(), 500);
}

#[test]
fn non_retryable_failures_go_to_the_dead_letter_sink_at_once() {
    let mut harness = Harness::new(policy("retry: 10\nbackoffDelay: PT1S"));
    let schedule = harness.drive(&[status(503), status(400)]);
    assert_eq!(schedule.attempts, at(&[0.0, 2.0]));
    let dead = dead_letter(schedule.last);
    assert_eq!((dead.attempts, dead.reason), (2, GiveUp::NotRetryable));
    assert_eq!(dead.error_code(), 400);
    assert_eq!(dead.failure.cause, Cause::Status(StatusCode::BAD_REQUEST));
}

#[test]
fn backoff_max_caps_the_delay() {
    let mut harness = Harness::new(policy("retry: 6\nbackoffDelay: PT1S\nbackoffMax: PT5S"));
    let schedule = harness.drive(&[status(502)]);
    // Waits 2, 4, then 5 (8, 16 and 32 capped).
    assert_eq!(
        schedule.attempts,
        at(&[0.0, 2.0, 6.0, 11.0, 16.0, 21.0, 26.0])
    );
}

#[test]
fn full_jitter_draws_from_the_callers_random_input() {
    let p = policy("retry: 3\nbackoffDelay: PT1S\njitter: full");
    assert_eq!(p.backoff(1, 0), Duration::ZERO);
    assert_eq!(p.backoff(1, u64::MAX), secs(2.0));
    let half = p.backoff(1, u64::MAX / 2);
    assert!(half >= secs(0.999) && half <= secs(1.0), "{half:?}");

    let mut harness = Harness::new(p);
    harness.randoms = vec![u64::MAX, u64::MAX / 4, 0];
    let schedule = harness.drive(&[status(500)]);
    assert_eq!(schedule.attempts.len(), 4);
    assert_eq!(schedule.attempts[1], secs(2.0));
    let second_wait = schedule.attempts[2] - schedule.attempts[1];
    assert!(
        second_wait >= secs(0.999) && second_wait <= secs(1.0),
        "{second_wait:?}"
    );
    assert_eq!(schedule.attempts[3], schedule.attempts[2]);
}

#[test]
fn retry_after_is_ignored_unless_retry_after_max_is_set() {
    let p = policy("retry: 1\nbackoffDelay: PT1S");
    let outcome = Outcome::Response {
        status: StatusCode::TOO_MANY_REQUESTS,
        retry_after: Some("60"),
    };
    let Decision::Retry { after, .. } = p.next_attempt(1, &outcome, t0(), 0) else {
        panic!()
    };
    assert_eq!(after, secs(2.0));
}

#[test]
fn retry_after_is_honoured_up_to_retry_after_max() {
    let p = policy("retry: 5\nbackoffDelay: PT1S\nretryAfterMax: PT30S");
    let decide = |code: u16, header: Option<&str>, attempt: u32| {
        let outcome = Outcome::Response {
            status: StatusCode::from_u16(code).unwrap(),
            retry_after: header,
        };
        match p.next_attempt(attempt, &outcome, t0(), 0) {
            Decision::Retry { after, .. } => after,
            other => panic!("{other:?}"),
        }
    };
    // Longer than the backoff: honoured.
    assert_eq!(decide(429, Some("10"), 1), secs(10.0));
    // Capped at retryAfterMax.
    assert_eq!(decide(503, Some("120"), 1), secs(30.0));
    // Shorter than the backoff: the backoff wins.
    assert_eq!(decide(429, Some("1"), 3), secs(8.0));
    // HTTP-dates are measured from `now`.
    let in_20s = httpdate::fmt_http_date(t0() + secs(20.0));
    assert_eq!(decide(503, Some(&in_20s), 1), secs(20.0));
    let past = httpdate::fmt_http_date(t0() - secs(20.0));
    assert_eq!(decide(503, Some(&past), 1), secs(2.0));
    // Invalid values and other statuses are ignored.
    assert_eq!(decide(429, Some("soon"), 1), secs(2.0));
    assert_eq!(decide(500, Some("10"), 1), secs(2.0));
    assert_eq!(decide(429, None, 1), secs(2.0));
}

#[test]
fn retry_after_max_of_zero_turns_retry_after_off() {
    let p = policy("retry: 1\nbackoffDelay: PT1S\nretryAfterMax: PT0S");
    let outcome = Outcome::Response {
        status: StatusCode::SERVICE_UNAVAILABLE,
        retry_after: Some("60"),
    };
    let Decision::Retry { after, .. } = p.next_attempt(1, &outcome, t0(), 0) else {
        panic!()
    };
    assert_eq!(after, secs(2.0));
}

#[test]
fn retry_after_drives_the_fake_clock() {
    let mut harness = Harness::new(policy(
        "retry: 3\nbackoffDelay: PT0.1S\nretryAfterMax: PT1M",
    ));
    let schedule = harness.drive_with(100, |attempt, now| {
        if attempt < 3 {
            // A date header, 15 seconds from the fake clock's now.
            let date: &'static str =
                Box::leak(httpdate::fmt_http_date(now + secs(15.0)).into_boxed_str());
            Outcome::Response {
                status: StatusCode::SERVICE_UNAVAILABLE,
                retry_after: Some(date),
            }
        } else {
            status(202)
        }
    });
    assert_eq!(schedule.attempts, at(&[0.0, 15.0, 30.0]));
    assert_eq!(schedule.last, Decision::Succeeded);
}

#[test]
fn trigger_delivery_replaces_the_brokers_as_a_whole() {
    let broker = spec("retry: 5\nbackoffDelay: PT1S\ntimeout: PT10S");
    let trigger = spec("retry: 2");
    let p = DeliveryPolicy::resolve(Some(&trigger), Some(&broker)).unwrap();
    assert_eq!(p.retry(), 2);
    // Not merged: the broker's delay and timeout do not carry over.
    assert_eq!(p.backoff_delay(), Duration::ZERO);
    assert_eq!(p.timeout(), None);
    let p = DeliveryPolicy::resolve(None, Some(&broker)).unwrap();
    assert_eq!((p.retry(), p.timeout()), (5, Some(secs(10.0))));
    assert_eq!(
        DeliveryPolicy::resolve(None, None).unwrap(),
        DeliveryPolicy::default()
    );
    assert_eq!(effective(None, Some(&1)), Some(&1));
    assert_eq!(effective(Some(&2), Some(&1)), Some(&2));
}

#[test]
fn rejects_zero_timeout_and_zero_cap() {
    assert_eq!(
        DeliveryPolicy::from_spec(&spec("timeout: PT0S")),
        Err(DeliveryPolicyError::ZeroTimeout)
    );
    assert_eq!(DeliveryPolicyError::ZeroTimeout.field(), "timeout");
    assert_eq!(
        DeliveryPolicy::from_spec(&spec("backoffMax: PT0S")),
        Err(DeliveryPolicyError::ZeroBackoffMax)
    );
}

#[test]
fn extreme_inputs_saturate() {
    let p = DeliveryPolicy::from_spec(&DeliverySpec {
        retry: Some(u32::MAX),
        backoff_delay: Some(IsoDuration::new(Duration::MAX)),
        ..DeliverySpec::default()
    })
    .unwrap();
    assert_eq!(p.max_attempts(), u32::MAX);
    assert_eq!(p.backoff(u32::MAX, 0), MAX_DELAY);
    let Decision::Retry {
        after,
        next_attempt,
        ..
    } = p.next_attempt(u32::MAX - 1, &status(500), t0(), 0)
    else {
        panic!()
    };
    assert_eq!((after, next_attempt), (MAX_DELAY, u32::MAX));
    let dead = dead_letter(p.next_attempt(u32::MAX, &status(500), t0(), 0));
    assert_eq!(dead.reason, GiveUp::Exhausted);
    // Attempt 0 counts as the first attempt.
    let p = policy("retry: 1\nbackoffDelay: PT1S");
    assert!(matches!(
        p.next_attempt(0, &status(500), t0(), 0),
        Decision::Retry {
            next_attempt: 2,
            ..
        }
    ));
}

fn any_policy_spec() -> impl Strategy<Value = DeliverySpec> {
    (
        0u32..64,
        prop_oneof![
            Just(BackoffPolicy::Linear),
            Just(BackoffPolicy::Exponential)
        ],
        any::<u64>(),
        0u32..1_000_000_000,
        proptest::option::of(1u64..10_000_000),
        prop_oneof![Just(Jitter::None), Just(Jitter::Full)],
        proptest::option::of(0u64..100_000),
    )
        .prop_map(
            |(retry, policy, delay_secs, delay_nanos, max_ms, jitter, retry_after_max)| {
                DeliverySpec {
                    retry: Some(retry),
                    backoff_policy: Some(policy),
                    backoff_delay: Some(IsoDuration::new(Duration::new(
                        delay_secs >> (delay_secs % 64),
                        delay_nanos,
                    ))),
                    backoff_max: max_ms.map(IsoDuration::from_millis),
                    jitter: Some(jitter),
                    retry_after_max: retry_after_max.map(IsoDuration::from_secs),
                    ..DeliverySpec::default()
                }
            },
        )
}

fn any_outcome() -> impl Strategy<Value = (u16, Option<String>, u8)> {
    (
        100u16..1000,
        proptest::option::of("[0-9]{0,25}|\\PC{0,30}"),
        0u8..4,
    )
}

proptest! {
    #[test]
    fn backoff_without_jitter_never_decreases(
        mut spec in any_policy_spec(),
        n in 1u32..200,
    ) {
        spec.jitter = Some(Jitter::None);
        let p = DeliveryPolicy::from_spec(&spec).unwrap();
        prop_assert!(p.backoff(n, 0) <= p.backoff(n + 1, 0));
    }

    #[test]
    fn backoff_never_exceeds_backoff_max(spec in any_policy_spec(), n in any::<u32>(), random in any::<u64>()) {
        let p = DeliveryPolicy::from_spec(&spec).unwrap();
        let delay = p.backoff(n, random);
        prop_assert!(delay <= MAX_DELAY);
        if let Some(max) = p.backoff_max() {
            prop_assert!(delay <= max);
        }
    }

    #[test]
    fn jitter_stays_within_the_delay(mut spec in any_policy_spec(), n in any::<u32>(), random in any::<u64>()) {
        spec.jitter = Some(Jitter::None);
        let plain = DeliveryPolicy::from_spec(&spec).unwrap().backoff(n, random);
        spec.jitter = Some(Jitter::Full);
        let jittered = DeliveryPolicy::from_spec(&spec).unwrap().backoff(n, random);
        prop_assert!(jittered <= plain);
    }

    #[test]
    fn attempts_never_exceed_retry_plus_one(spec in any_policy_spec(), randoms in proptest::collection::vec(any::<u64>(), 0..8)) {
        let retry = spec.retry.unwrap_or(0);
        let mut harness = Harness::new(DeliveryPolicy::from_spec(&spec).unwrap());
        harness.randoms = randoms;
        let schedule = harness.drive(&[Outcome::Transport(TransportError::Reset)]);
        prop_assert_eq!(schedule.attempts.len(), retry as usize + 1);
        let dead = dead_letter(schedule.last);
        prop_assert_eq!(dead.attempts, retry + 1);
        prop_assert_eq!(dead.reason, GiveUp::Exhausted);
        // The clock only moves forward.
        prop_assert!(schedule.attempts.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn never_panics(
        spec in any_policy_spec(),
        attempt in any::<u32>(),
        (code, header, kind) in any_outcome(),
        now_secs in any::<u64>(),
        random in any::<u64>(),
    ) {
        let p = DeliveryPolicy::from_spec(&spec).unwrap();
        let now = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(now_secs >> 20)).unwrap_or(SystemTime::UNIX_EPOCH);
        let outcome = match kind {
            0 | 1 => Outcome::Response { status: StatusCode::from_u16(code).unwrap(), retry_after: header.as_deref() },
            2 => Outcome::Transport(TransportError::Timeout),
            _ => Outcome::Internal(InternalError::Unavailable),
        };
        match p.next_attempt(attempt, &outcome, now, random) {
            Decision::Retry { after, next_attempt, .. } => {
                prop_assert!(after <= MAX_DELAY);
                prop_assert!(next_attempt <= p.max_attempts());
                prop_assert_eq!(next_attempt, attempt.max(1) + 1);
            }
            Decision::DeadLetter(dead) => prop_assert!(dead.attempts >= 1),
            Decision::Succeeded => prop_assert!((200..300).contains(&code)),
        }
    }
}
