//! ISO-8601 durations, as Knative writes them: `PT0.2S`, `PT10S`, `P1D`, `P2W`.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A duration written in ISO-8601 form: `P[nW][nD][T[nH][nM][nS]]`.
///
/// Every duration in a config file uses this form, Knative's fields (`backoffDelay`,
/// `timeout`, `retryAfterMax`) and ours alike, so there is one syntax to learn.
///
/// - Components come in the order weeks, days, hours, minutes, seconds, each at most once,
///   with `T` before the time components: `P1DT12H`, `PT1M30S`, `PT0.2S`.
/// - The last component may have a fraction, with `.` or `,`: `PT1.5S`, `PT0,5H`. The result
///   is exact to the nanosecond, truncated below that.
/// - A day is 24 hours and a week is 7 days.
/// - Years (`Y`) and months (`M` before `T`) are rejected: their length depends on the
///   calendar. Write days instead (`P30D`).
/// - Negative durations are rejected.
///
/// `Display` writes the canonical form (`PT0S`, `PT1M30S`, `P1DT0.5S`), which parses back to
/// the same value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IsoDuration(Duration);

/// Why a string is not an ISO-8601 duration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// The string is empty.
    #[error("empty duration; write an ISO-8601 duration such as PT0.2S")]
    Empty,
    /// The string does not start with `P`.
    #[error("{0:?} is not an ISO-8601 duration: it must start with \"P\", e.g. PT0.2S or PT30S")]
    MissingP(String),
    /// A leading minus sign.
    #[error("negative durations are not allowed")]
    Negative,
    /// `P` or `PT` with no component after it.
    #[error("{0:?} has no components; write for example PT30S")]
    NoComponents(String),
    /// A year component.
    #[error(
        "years (Y) are not supported because their length varies; write days instead, e.g. P365D"
    )]
    Years,
    /// A month component (an `M` before `T`).
    #[error(
        "months (M before T) are not supported because their length varies; write days instead, e.g. P30D, or PT{0}M for minutes"
    )]
    Months(String),
    /// A designator letter with no number before it.
    #[error("missing number before {0:?}")]
    MissingNumber(char),
    /// A number with no designator after it.
    #[error("number {0:?} has no unit; end it with W, D, H, M or S")]
    MissingDesignator(String),
    /// A character that is not a digit, separator or known designator.
    #[error(
        "unexpected {0:?}; an ISO-8601 duration uses W and D (before T), and H, M and S (after T)"
    )]
    Unexpected(char),
    /// A component out of order or repeated.
    #[error("{0:?} is out of order or repeated; the order is W, D, then T, H, M, S")]
    OutOfOrder(char),
    /// A fraction on a component other than the last.
    #[error("only the last component may have a fraction")]
    FractionNotLast,
    /// More fraction digits than the parser keeps.
    #[error("too many fraction digits (at most 18)")]
    TooManyFractionDigits,
    /// More than `u64::MAX` seconds.
    #[error("duration is too large")]
    Overflow,
}

const NANOS_PER_SEC: u128 = 1_000_000_000;

impl IsoDuration {
    /// Zero.
    pub const ZERO: IsoDuration = IsoDuration(Duration::ZERO);

    /// Wraps a [`Duration`].
    pub const fn new(duration: Duration) -> IsoDuration {
        IsoDuration(duration)
    }

    /// Whole seconds, as a convenience for defaults.
    pub const fn from_secs(secs: u64) -> IsoDuration {
        IsoDuration(Duration::from_secs(secs))
    }

    /// Milliseconds, as a convenience for defaults.
    pub const fn from_millis(millis: u64) -> IsoDuration {
        IsoDuration(Duration::from_millis(millis))
    }

    /// The duration.
    pub const fn get(self) -> Duration {
        self.0
    }

    /// Parses the ISO-8601 form described on [`IsoDuration`].
    pub fn parse(text: &str) -> Result<IsoDuration, DurationError> {
        parse(text).map(IsoDuration)
    }
}

impl From<Duration> for IsoDuration {
    fn from(duration: Duration) -> IsoDuration {
        IsoDuration(duration)
    }
}

impl From<IsoDuration> for Duration {
    fn from(duration: IsoDuration) -> Duration {
        duration.0
    }
}

impl FromStr for IsoDuration {
    type Err = DurationError;

    fn from_str(text: &str) -> Result<IsoDuration, DurationError> {
        IsoDuration::parse(text)
    }
}

impl fmt::Display for IsoDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.0.as_secs();
        let nanos = self.0.subsec_nanos();
        if secs == 0 && nanos == 0 {
            return f.write_str("PT0S");
        }
        let (days, rest) = (secs / 86_400, secs % 86_400);
        let (hours, minutes, seconds) = (rest / 3600, rest % 3600 / 60, rest % 60);
        f.write_str("P")?;
        if days > 0 {
            write!(f, "{days}D")?;
        }
        if hours == 0 && minutes == 0 && seconds == 0 && nanos == 0 {
            return Ok(());
        }
        f.write_str("T")?;
        if hours > 0 {
            write!(f, "{hours}H")?;
        }
        if minutes > 0 {
            write!(f, "{minutes}M")?;
        }
        if seconds > 0 || nanos > 0 {
            write!(f, "{seconds}")?;
            if nanos > 0 {
                let fraction = format!("{nanos:09}");
                write!(f, ".{}", fraction.trim_end_matches('0'))?;
            }
            f.write_str("S")?;
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for IsoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<IsoDuration, D::Error> {
        let text = String::deserialize(deserializer)?;
        IsoDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for IsoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Units in the order they must appear, with their length in seconds. `T` separates the date
/// part (W, D) from the time part (H, M, S).
const UNITS: [(char, bool, u128); 5] = [
    ('W', false, 7 * 86_400),
    ('D', false, 86_400),
    ('H', true, 3_600),
    ('M', true, 60),
    ('S', true, 1),
];

fn parse(text: &str) -> Result<Duration, DurationError> {
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let rest = match text.strip_prefix('P') {
        Some(rest) => rest,
        None if text.starts_with('-') => return Err(DurationError::Negative),
        None => return Err(DurationError::MissingP(text.to_owned())),
    };
    if rest.starts_with('-') {
        return Err(DurationError::Negative);
    }

    let mut total: u128 = 0;
    // Index into UNITS of the next unit allowed.
    let mut next_unit = 0;
    let mut in_time = false;
    let mut components = 0;
    let mut time_components = 0;
    let mut fraction_seen = false;
    let mut chars = rest.char_indices().peekable();

    while let Some(&(start, c)) = chars.peek() {
        if c == 'T' {
            if in_time {
                return Err(DurationError::OutOfOrder('T'));
            }
            in_time = true;
            next_unit = next_unit.max(2);
            chars.next();
            continue;
        }
        if !c.is_ascii_digit() {
            return Err(match c {
                'Y' => DurationError::Years,
                'M' if !in_time => DurationError::Months("n".to_owned()),
                'W' | 'D' | 'H' | 'M' | 'S' => DurationError::MissingNumber(c),
                '.' | ',' => DurationError::MissingNumber(c),
                '-' => DurationError::Negative,
                _ => DurationError::Unexpected(c),
            });
        }
        // A number: digits, then an optional fraction.
        let mut end = start;
        while let Some(&(i, d)) = chars.peek() {
            if d.is_ascii_digit() {
                end = i + 1;
                chars.next();
            } else {
                break;
            }
        }
        let whole_digits = &rest[start..end];
        let mut fraction_digits = "";
        if let Some(&(i, '.' | ',')) = chars.peek() {
            chars.next();
            let frac_start = i + 1;
            let mut frac_end = frac_start;
            while let Some(&(j, d)) = chars.peek() {
                if d.is_ascii_digit() {
                    frac_end = j + 1;
                    chars.next();
                } else {
                    break;
                }
            }
            fraction_digits = &rest[frac_start..frac_end];
            if fraction_digits.is_empty() {
                return Err(DurationError::Unexpected(
                    chars.peek().map_or('.', |&(_, c)| c),
                ));
            }
        }
        let Some((_, designator)) = chars.next() else {
            return Err(DurationError::MissingDesignator(rest[start..].to_owned()));
        };
        let position = match designator {
            'Y' => return Err(DurationError::Years),
            'M' if !in_time => return Err(DurationError::Months(whole_digits.to_owned())),
            _ => UNITS
                .iter()
                .position(|&(unit, time, _)| unit == designator && time == in_time)
                .ok_or(match designator {
                    'W' | 'D' | 'H' | 'S' => DurationError::OutOfOrder(designator),
                    c => DurationError::Unexpected(c),
                })?,
        };
        if position < next_unit {
            return Err(DurationError::OutOfOrder(designator));
        }
        if fraction_seen {
            return Err(DurationError::FractionNotLast);
        }
        next_unit = position + 1;
        components += 1;
        if in_time {
            time_components += 1;
        }

        let unit_nanos = UNITS[position].2 * NANOS_PER_SEC;
        let whole: u128 = whole_digits
            .parse::<u64>()
            .map_err(|_| DurationError::Overflow)?
            .into();
        let mut nanos = whole
            .checked_mul(unit_nanos)
            .ok_or(DurationError::Overflow)?;
        if !fraction_digits.is_empty() {
            fraction_seen = true;
            if fraction_digits.len() > 18 {
                return Err(DurationError::TooManyFractionDigits);
            }
            let numerator: u128 = fraction_digits
                .parse::<u64>()
                .map_err(|_| DurationError::TooManyFractionDigits)?
                .into();
            let denominator = 10u128.pow(saturate_u32(fraction_digits.len()));
            nanos += numerator * unit_nanos / denominator;
        }
        total = total.checked_add(nanos).ok_or(DurationError::Overflow)?;
    }

    if components == 0 || (in_time && time_components == 0) {
        return Err(DurationError::NoComponents(text.to_owned()));
    }
    let secs = u64::try_from(total / NANOS_PER_SEC).map_err(|_| DurationError::Overflow)?;
    // The remainder is below 10^9, so it fits in u32.
    let nanos = u32::try_from(total % NANOS_PER_SEC).map_err(|_| DurationError::Overflow)?;
    Ok(Duration::new(secs, nanos))
}

fn saturate_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn parse_ok(text: &str) -> Duration {
        IsoDuration::parse(text)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .get()
    }

    #[test]
    fn parses_knative_examples() {
        assert_eq!(parse_ok("PT0.2S"), Duration::from_millis(200));
        assert_eq!(parse_ok("PT1S"), Duration::from_secs(1));
        assert_eq!(parse_ok("PT10S"), Duration::from_secs(10));
        assert_eq!(parse_ok("PT2.5S"), Duration::from_millis(2500));
        assert_eq!(parse_ok("PT1M30S"), Duration::from_secs(90));
        assert_eq!(parse_ok("PT1H"), Duration::from_secs(3600));
        assert_eq!(parse_ok("P1D"), Duration::from_secs(86_400));
        assert_eq!(parse_ok("P1DT12H"), Duration::from_secs(86_400 + 43_200));
        assert_eq!(parse_ok("P2W"), Duration::from_secs(14 * 86_400));
        assert_eq!(parse_ok("P1W1D"), Duration::from_secs(8 * 86_400));
        assert_eq!(parse_ok("PT0S"), Duration::ZERO);
        assert_eq!(parse_ok("P0D"), Duration::ZERO);
    }

    #[test]
    fn fractions_are_exact() {
        assert_eq!(parse_ok("PT0,5S"), Duration::from_millis(500));
        assert_eq!(parse_ok("PT0.5H"), Duration::from_secs(1800));
        assert_eq!(parse_ok("PT1.000000001S"), Duration::new(1, 1));
        assert_eq!(parse_ok("PT0.0000000001H"), Duration::from_nanos(360));
        assert_eq!(parse_ok("PT1M0.25S"), Duration::from_millis(60_250));
        assert_eq!(parse_ok("P0.5D"), Duration::from_secs(43_200));
    }

    #[test]
    fn rejects_years_and_months_with_advice() {
        let err = IsoDuration::parse("P1Y").unwrap_err();
        assert_eq!(err, DurationError::Years);
        assert!(err.to_string().contains("P365D"));
        let err = IsoDuration::parse("P2M").unwrap_err();
        assert_eq!(err, DurationError::Months("2".into()));
        assert!(err.to_string().contains("PT2M for minutes"), "{err}");
        assert_eq!(
            IsoDuration::parse("P1Y2M3D").unwrap_err(),
            DurationError::Years
        );
    }

    #[test]
    fn rejects_malformed_text() {
        for (text, expected) in [
            ("", DurationError::Empty),
            ("10s", DurationError::MissingP("10s".into())),
            ("PT", DurationError::NoComponents("PT".into())),
            ("P", DurationError::NoComponents("P".into())),
            ("P1DT", DurationError::NoComponents("P1DT".into())),
            ("-PT1S", DurationError::Negative),
            ("P-1D", DurationError::Negative),
            ("PT1", DurationError::MissingDesignator("1".into())),
            ("PTS", DurationError::MissingNumber('S')),
            ("PT1S1M", DurationError::OutOfOrder('M')),
            ("PT1S2S", DurationError::OutOfOrder('S')),
            ("P1D1W", DurationError::OutOfOrder('W')),
            ("P1H", DurationError::OutOfOrder('H')),
            ("PT1D", DurationError::OutOfOrder('D')),
            ("PTT1S", DurationError::OutOfOrder('T')),
            ("PT1TS", DurationError::Unexpected('T')),
            ("PT1.5M2S", DurationError::FractionNotLast),
            ("PT1X", DurationError::Unexpected('X')),
            ("pt1s", DurationError::MissingP("pt1s".into())),
            ("PT1.S", DurationError::Unexpected('S')),
            ("PT99999999999999999999S", DurationError::Overflow),
            (
                "PT0.1234567890123456789S",
                DurationError::TooManyFractionDigits,
            ),
        ] {
            assert_eq!(IsoDuration::parse(text), Err(expected), "{text}");
        }
    }

    #[test]
    fn rejects_what_does_not_fit_a_duration() {
        assert_eq!(
            IsoDuration::parse("P99999999999999999W"),
            Err(DurationError::Overflow)
        );
        assert_eq!(
            IsoDuration::parse(&format!("PT{}S", u64::MAX))
                .unwrap()
                .get(),
            Duration::from_secs(u64::MAX)
        );
        assert_eq!(
            IsoDuration::parse(&format!("PT{}.5S", u64::MAX))
                .unwrap()
                .get(),
            Duration::new(u64::MAX, 500_000_000)
        );
        assert_eq!(
            IsoDuration::parse(&format!("PT1M{}S", u64::MAX)),
            Err(DurationError::Overflow)
        );
    }

    #[test]
    fn displays_canonical_form() {
        for (duration, text) in [
            (Duration::ZERO, "PT0S"),
            (Duration::from_millis(200), "PT0.2S"),
            (Duration::from_secs(90), "PT1M30S"),
            (Duration::from_secs(3600), "PT1H"),
            (Duration::from_secs(86_400), "P1D"),
            (Duration::new(86_400, 500_000_000), "P1DT0.5S"),
            (Duration::new(3, 1), "PT3.000000001S"),
        ] {
            assert_eq!(IsoDuration::new(duration).to_string(), text);
        }
    }

    proptest! {
        #[test]
        fn display_round_trips(secs in any::<u64>(), nanos in 0u32..1_000_000_000) {
            let duration = IsoDuration::new(Duration::new(secs, nanos));
            prop_assert_eq!(IsoDuration::parse(&duration.to_string()), Ok(duration));
        }

        #[test]
        fn components_add_up(
            weeks in proptest::option::of(0u64..1000),
            days in proptest::option::of(0u64..1000),
            hours in proptest::option::of(0u64..1000),
            minutes in proptest::option::of(0u64..1000),
            seconds in proptest::option::of(0u64..100_000),
            millis in 0u32..1000,
        ) {
            let mut text = String::from("P");
            let mut expected = Duration::ZERO;
            if let Some(w) = weeks { text += &format!("{w}W"); expected += Duration::from_secs(w * 7 * 86_400); }
            if let Some(d) = days { text += &format!("{d}D"); expected += Duration::from_secs(d * 86_400); }
            if hours.is_some() || minutes.is_some() || seconds.is_some() {
                text.push('T');
            }
            if let Some(h) = hours { text += &format!("{h}H"); expected += Duration::from_secs(h * 3600); }
            if let Some(m) = minutes { text += &format!("{m}M"); expected += Duration::from_secs(m * 60); }
            if let Some(s) = seconds {
                text += &format!("{s}.{millis:03}S");
                expected += Duration::from_secs(s) + Duration::from_millis(millis.into());
            }
            if text == "P" {
                prop_assert!(IsoDuration::parse(&text).is_err());
            } else {
                prop_assert_eq!(IsoDuration::parse(&text).map(IsoDuration::get), Ok(expected));
            }
        }

        #[test]
        fn never_panics(text in "\\PC{0,24}") {
            let _ = IsoDuration::parse(&text);
        }

        #[test]
        fn never_panics_on_near_misses(text in "P[0-9WDTHMSY.,-]{0,16}") {
            let _ = IsoDuration::parse(&text);
        }
    }
}
