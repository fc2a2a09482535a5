//! `Retry-After` values (RFC 9110 §10.2.3): delay-seconds or an HTTP-date.

use std::time::{Duration, SystemTime};

/// The delay a `Retry-After` value asks for, measured from `now`. `None` when it is neither
/// form (Knative ignores such values too). A date in the past asks for no delay; a huge number
/// of seconds saturates.
pub(crate) fn parse(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // All digits: only overflow can fail, and a huge delay is capped later anyway.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse("120", now), Some(Duration::from_secs(120)));
        assert_eq!(parse(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(parse(&later, now), Some(Duration::from_secs(90)));
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse(&earlier, now), Some(Duration::ZERO));
        // RFC 850 and asctime dates are HTTP-dates too.
        assert!(parse("Sunday, 06-Nov-94 08:49:37 GMT", now).is_some());
        assert!(parse("Sun Nov  6 08:49:37 1994", now).is_some());
    }

    #[test]
    fn ignores_garbage() {
        let now = SystemTime::UNIX_EPOCH;
        for value in ["", "-5", "1.5", "soon", "12s"] {
            assert_eq!(parse(value, now), None, "{value}");
        }
    }
}
