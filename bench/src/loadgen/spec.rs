//! The values a load run is described with, parsed from the command line: durations
//! (`10s`, `200ms`), the rate (`5000` or `max`), fractions and the sink's slow-response spec
//! (`0.01:200ms`).
//!
//! Only parsing lives here; what the values mean at run time is up to the sender and the sink.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A value on the command line that could not be read. The message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// A duration that is not a number followed by `ns`, `us`, `ms`, `s`, `m` or `h`.
    #[error(
        "invalid duration {0:?}: expected a number and a unit (ns, us, ms, s, m, h), e.g. 10s or 200ms"
    )]
    Duration(String),
    /// A rate that is neither `max` nor a positive, finite number of events per second.
    #[error("invalid rate {0:?}: expected `max` or a positive number of events per second")]
    Rate(String),
    /// A fraction outside `0..=1`.
    #[error("invalid fraction {0:?}: expected a number from 0 to 1")]
    Fraction(String),
    /// A slow-response spec that is not `FRACTION:DURATION`.
    #[error("invalid slow-response spec {0:?}: expected FRACTION:DURATION, e.g. 0.01:200ms")]
    Slow(String),
}

/// Parses `10s`, `1.5s`, `200ms`, `500us`, `100ns`, `2m` or `1h`.
pub fn parse_duration(s: &str) -> Result<Duration, SpecError> {
    let err = || SpecError::Duration(s.to_owned());
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(err)?;
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| err())?;
    let seconds_per_unit = match unit.trim() {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => return Err(err()),
    };
    Duration::try_from_secs_f64(value * seconds_per_unit).map_err(|_| err())
}

/// How fast to send.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Rate {
    /// As fast as the target answers: each connection sends its next request as soon as the
    /// previous one is answered (closed loop).
    Max,
    /// A fixed number of events per second, on an open-loop schedule.
    PerSecond(f64),
}

impl FromStr for Rate {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<Rate, SpecError> {
        if s.eq_ignore_ascii_case("max") {
            return Ok(Rate::Max);
        }
        match s.trim().parse::<f64>() {
            Ok(r) if r.is_finite() && r > 0.0 => Ok(Rate::PerSecond(r)),
            _ => Err(SpecError::Rate(s.to_owned())),
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rate::Max => f.write_str("max"),
            Rate::PerSecond(r) => write!(f, "{r}/s"),
        }
    }
}

/// Parses a fraction in `0..=1`.
pub fn parse_fraction(s: &str) -> Result<f64, SpecError> {
    match s.trim().parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(SpecError::Fraction(s.to_owned())),
    }
}

/// A fraction of the sink's requests that are answered only after a delay.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowSpec {
    /// The fraction of requests delayed, in `0..=1`.
    pub fraction: f64,
    /// How long each of them is held before the answer.
    pub delay: Duration,
}

impl FromStr for SlowSpec {
    type Err = SpecError;

    fn from_str(s: &str) -> Result<SlowSpec, SpecError> {
        let (fraction, delay) = s
            .split_once(':')
            .ok_or_else(|| SpecError::Slow(s.to_owned()))?;
        Ok(SlowSpec {
            fraction: parse_fraction(fraction).map_err(|_| SpecError::Slow(s.to_owned()))?,
            delay: parse_duration(delay).map_err(|_| SpecError::Slow(s.to_owned()))?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("500us"), Ok(Duration::from_micros(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        for bad in ["", "10", "s", "10 parsecs", "-1s", "1e3s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rates_and_specs() {
        assert_eq!("max".parse::<Rate>(), Ok(Rate::Max));
        assert_eq!("2500".parse::<Rate>(), Ok(Rate::PerSecond(2500.0)));
        assert!("0".parse::<Rate>().is_err());
        assert!("-5".parse::<Rate>().is_err());
        assert!("inf".parse::<Rate>().is_err());
        assert_eq!(
            "0.01:200ms".parse::<SlowSpec>(),
            Ok(SlowSpec {
                fraction: 0.01,
                delay: Duration::from_millis(200)
            })
        );
        assert!("1.5:1s".parse::<SlowSpec>().is_err());
        assert!("0.1".parse::<SlowSpec>().is_err());
        assert_eq!(parse_fraction("0.05"), Ok(0.05));
        assert!(parse_fraction("2").is_err());
    }
}
