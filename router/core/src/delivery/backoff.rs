//! Backoff arithmetic: the delay before the n-th retry, saturating, never panicking.

use std::time::Duration;

use crate::config::BackoffPolicy;

/// The longest delay this module ever returns: one year. Saturated arithmetic lands here
/// instead of on `Duration::MAX`, so a caller can add any delay to a clock without overflow.
pub const MAX_DELAY: Duration = Duration::from_secs(365 * 24 * 3600);

/// Knative's delay before retry `n` (from 1): `delay * n` for linear, `delay * 2^n` for
/// exponential; saturating at [`MAX_DELAY`].
pub(crate) fn knative_delay(policy: BackoffPolicy, delay: Duration, n: u32) -> Duration {
    let delay = delay.as_nanos();
    let nanos = match policy {
        BackoffPolicy::Linear => delay.saturating_mul(u128::from(n)),
        BackoffPolicy::Exponential => match 1u128.checked_shl(n) {
            Some(factor) => delay.saturating_mul(factor),
            None if delay == 0 => 0,
            None => u128::MAX,
        },
    };
    clamp(nanos)
}

/// A uniformly distributed delay in `[0, delay]`, picked by `random`: 0 gives zero and
/// `u64::MAX` gives `delay`.
pub(crate) fn full_jitter(delay: Duration, random: u64) -> Duration {
    // delay is at most MAX_DELAY (< 2^55 ns), so the product fits in u128.
    let nanos = delay.as_nanos().min(MAX_DELAY.as_nanos());
    clamp(nanos * u128::from(random) / u128::from(u64::MAX))
}

/// Nanoseconds to a duration, capped at [`MAX_DELAY`].
pub(crate) fn clamp(nanos: u128) -> Duration {
    let nanos = nanos.min(MAX_DELAY.as_nanos());
    // At most MAX_DELAY's nanoseconds, which fit in u64.
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}
