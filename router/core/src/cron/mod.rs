//! Cron schedules and their next fire times, in a time zone, across daylight-saving changes.
//!
//! [`Schedule::parse`] reads what Knative's PingSource accepts (robfig/cron's standard parser):
//! 5-field cron (`minute hour day-of-month month day-of-week`), a 6-field form with seconds
//! first, the `@yearly`-style shortcuts, `@every <duration>` (Go's duration syntax: `30s`,
//! `1h30m`), and a leading `CRON_TZ=<zone>` or `TZ=<zone>` that sets the schedule's time zone
//! ([`Schedule::zone`]). `@reboot` is rejected. Fields take `*` (or `?`, its synonym, as in
//! robfig/cron and Quartz), numbers, ranges (`1-5`), steps (`*/15`, `10-40/10`), lists
//! (`1,15`), and English names for months and days (`JAN`, `MON`); day-of-week 7 is Sunday,
//! as in Vixie cron.
//!
//! `@every` fires at the multiples of its interval since the Unix epoch (whole seconds, at
//! least one), whatever the zone. robfig/cron counts from when the schedule starts instead;
//! counting from a fixed origin makes every replica, and a restarted process, agree on the
//! ticks, so tick ids stay deterministic and `catchUp` knows what was missed.
//!
//! [`Schedule::next_after`] computes the first fire time strictly after an instant, in a
//! `chrono_tz` zone, with Vixie cron's semantics:
//! - **Day-of-month and day-of-week are ORed** when both are restricted (neither starts with
//!   `*`): `0 0 1 * MON` fires on the 1st and on every Monday. When one is `*`, only the other
//!   counts. (croner, under tokio-cron-scheduler, ANDs them by default.)
//! - **Spring forward** (local times that do not exist): a schedule with a fixed hour fires
//!   once, at the first instant after the gap, for all its ticks in the gap (`30 2 * * *` fires
//!   at 03:00 in Berlin on that day); a schedule that runs every hour skips the ticks that do
//!   not exist, since it keeps running on the other side.
//! - **Fall back** (local times that happen twice): a schedule with a fixed hour fires once, at
//!   the first occurrence; a schedule that runs every hour fires in both passes, so its cadence
//!   in real time does not stop for an hour.
//!
//! Time enters as an argument; nothing here reads a clock.
//!
//! What this module does not do: run timers, or remember which ticks fired. The router's
//! scheduler does.

pub mod recurring;

use std::fmt;

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset,
    TimeZone, Timelike, Utc,
};
use chrono_tz::Tz;

/// A parsed cron schedule.
#[derive(Clone, PartialEq, Eq)]
pub struct Schedule {
    seconds: u64,
    minutes: u64,
    hours: u32,
    days_of_month: u32,
    months: u16,
    days_of_week: u8,
    dom_star: bool,
    dow_star: bool,
    zone: Option<Tz>,
    /// `@every`: the interval in seconds; the calendar fields are then unused.
    every: Option<i64>,
    source: String,
}

/// Why a schedule did not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    /// Neither 5 nor 6 fields, nor a known `@` shortcut.
    #[error(
        "a schedule has 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first; found {0}"
    )]
    FieldCount(usize),
    /// `@every` with a duration that does not parse or is under a second.
    #[error("{0:?}: @every takes a duration of at least 1s, such as 30s, 5m or 1h30m: {1}")]
    Every(String, String),
    /// `@reboot` or an unknown shortcut.
    #[error(
        "{0:?} is not supported: use @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly or @every <duration>, or cron fields"
    )]
    Shortcut(String),
    /// The zone of a `CRON_TZ=` or `TZ=` prefix is unknown.
    #[error("{0}")]
    Zone(#[from] ZoneError),
    /// A field that does not parse.
    #[error("{field} field {value:?}: {reason}")]
    Field {
        /// Which field (`minute`, `day-of-week`, …).
        field: &'static str,
        /// What was written.
        value: String,
        /// What is wrong.
        reason: String,
    },
}

/// Why a time zone is not usable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown time zone {0:?}: use an IANA name such as Europe/Berlin or America/New_York")]
pub struct ZoneError(pub String);

/// Parses an IANA time zone name.
pub fn parse_zone(name: &str) -> Result<Tz, ZoneError> {
    name.parse::<Tz>().map_err(|_| ZoneError(name.to_owned()))
}

struct FieldSpec {
    name: &'static str,
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const SECOND: FieldSpec = FieldSpec {
    name: "second",
    min: 0,
    max: 59,
    names: &[],
};
const MINUTE: FieldSpec = FieldSpec {
    name: "minute",
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: FieldSpec = FieldSpec {
    name: "hour",
    min: 0,
    max: 23,
    names: &[],
};
const DOM: FieldSpec = FieldSpec {
    name: "day-of-month",
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: FieldSpec = FieldSpec {
    name: "month",
    min: 1,
    max: 12,
    names: &[
        "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
    ],
};
// Day-of-week allows 7 for Sunday; it is folded onto 0 after parsing.
const DOW: FieldSpec = FieldSpec {
    name: "day-of-week",
    min: 0,
    max: 7,
    names: &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
};

/// Parses one field into a bit set of allowed values.
fn parse_field(spec: &FieldSpec, text: &str) -> Result<u64, CronError> {
    let err = |reason: String| CronError::Field {
        field: spec.name,
        value: text.to_owned(),
        reason,
    };
    let value = |s: &str| -> Result<u32, CronError> {
        if let Ok(n) = s.parse::<u32>() {
            if n < spec.min || n > spec.max {
                return Err(err(format!("{n} is outside {}-{}", spec.min, spec.max)));
            }
            return Ok(n);
        }
        let upper = s.to_ascii_uppercase();
        match spec.names.iter().position(|n| *n == upper) {
            // Month names start at 1, day names at 0.
            Some(i) => Ok(i as u32 + if spec.min == 1 { 1 } else { 0 }),
            None => Err(err(format!("{s:?} is not a number or a name"))),
        }
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        if part.is_empty() {
            return Err(err("empty list element".to_owned()));
        }
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .map_err(|_| err(format!("step {s:?} is not a number")))?;
                if step == 0 {
                    return Err(err("a step of 0 never advances".to_owned()));
                }
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" || range == "?" {
            (spec.min, spec.max)
        } else if let Some((a, b)) = range.split_once('-') {
            let (a, b) = (value(a)?, value(b)?);
            if a > b {
                return Err(err(format!("range {a}-{b} runs backwards")));
            }
            (a, b)
        } else {
            let v = value(range)?;
            // `5/15` means from 5 to the end, every 15, as in Vixie cron.
            if part.contains('/') {
                (v, spec.max)
            } else {
                (v, v)
            }
        };
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok(bits)
}

impl Schedule {
    /// Parses a schedule.
    pub fn parse(text: &str) -> Result<Schedule, CronError> {
        let source = text.trim();
        // robfig/cron's time zone prefix: `CRON_TZ=Europe/Berlin 0 9 * * *`.
        let (zone, trimmed) = match source
            .strip_prefix("CRON_TZ=")
            .or_else(|| source.strip_prefix("TZ="))
        {
            Some(rest) => {
                let (name, rest) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                (Some(parse_zone(name)?), rest.trim_start())
            }
            None => (None, source),
        };
        // `@every` and its duration, not a longer word such as `@everyday`.
        let every = trimmed
            .strip_prefix("@every")
            .filter(|d| d.is_empty() || d.starts_with(char::is_whitespace));
        if let Some(duration) = every {
            let every = go_duration_seconds(duration.trim())
                .map_err(|why| CronError::Every(trimmed.to_owned(), why))?;
            let all = Schedule::parse("* * * * *")?;
            return Ok(Schedule {
                every: Some(every),
                zone,
                source: source.to_owned(),
                ..all
            });
        }
        let expanded = match trimmed.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            s if s.starts_with('@') => return Err(CronError::Shortcut(trimmed.to_owned())),
            _ => trimmed,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        let (sec, rest) = match fields.len() {
            5 => ("0", &fields[..]),
            6 => (fields[0], &fields[1..]),
            n => return Err(CronError::FieldCount(n)),
        };
        let mut dow = parse_field(&DOW, rest[4])?;
        if dow & (1 << 7) != 0 {
            dow = (dow | 1) & !(1 << 7);
        }
        Ok(Schedule {
            seconds: parse_field(&SECOND, sec)?,
            minutes: parse_field(&MINUTE, rest[0])?,
            hours: parse_field(&HOUR, rest[1])? as u32,
            days_of_month: parse_field(&DOM, rest[2])? as u32,
            months: parse_field(&MONTH, rest[3])? as u16,
            days_of_week: dow as u8,
            dom_star: rest[2].starts_with(['*', '?']),
            dow_star: rest[4].starts_with(['*', '?']),
            zone,
            every: None,
            source: source.to_owned(),
        })
    }

    /// The time zone a `CRON_TZ=` or `TZ=` prefix set, if any.
    pub fn zone(&self) -> Option<Tz> {
        self.zone
    }

    /// The schedule as written.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Whether it runs in every hour of the day (then DST gaps are skipped and repeated hours
    /// run twice, see the module docs).
    pub fn every_hour(&self) -> bool {
        self.hours == (1 << 24) - 1
    }

    fn day_matches(&self, date: NaiveDate) -> bool {
        if self.months & (1 << date.month()) == 0 {
            return false;
        }
        let dom = self.days_of_month & (1 << date.day()) != 0;
        let dow = self.days_of_week & (1 << date.weekday().num_days_from_sunday()) != 0;
        match (self.dom_star, self.dow_star) {
            (true, true) => true,
            (true, false) => dow,
            (false, true) => dom,
            (false, false) => dom || dow,
        }
    }

    /// The next matching local wall-clock time at or after `from`, within `limit`.
    fn next_local(&self, from: NaiveDateTime, limit: NaiveDateTime) -> Option<NaiveDateTime> {
        let mut date = from.date();
        let mut start = Some(from.time());
        while date.and_time(NaiveTime::MIN) <= limit {
            if self.day_matches(date) {
                let t0 = start.unwrap_or(NaiveTime::MIN);
                if let Some(t) = self.time_at_or_after(t0) {
                    return Some(date.and_time(t));
                }
            }
            date = date.succ_opt()?;
            start = None;
        }
        None
    }

    /// The first matching time of day at or after `t`.
    fn time_at_or_after(&self, t: NaiveTime) -> Option<NaiveTime> {
        let (h0, m0, s0) = (t.hour(), t.minute(), t.second());
        for h in h0..24 {
            if self.hours & (1 << h) == 0 {
                continue;
            }
            let m_start = if h == h0 { m0 } else { 0 };
            for m in m_start..60 {
                if self.minutes & (1 << m) == 0 {
                    continue;
                }
                let s_start = if h == h0 && m == m0 { s0 } else { 0 };
                let rest = self.seconds >> s_start;
                if rest != 0 {
                    let s = s_start + rest.trailing_zeros();
                    return NaiveTime::from_hms_opt(h, m, s);
                }
            }
        }
        None
    }

    /// The first fire time strictly after `after`, in zone `tz`, or `None` if there is none in
    /// the next eight years (a schedule such as `0 0 30 2 *` never fires).
    pub fn next_after(&self, after: DateTime<Utc>, tz: &Tz) -> Option<DateTime<Utc>> {
        if let Some(every) = self.every {
            let next = (after.timestamp().div_euclid(every) + 1).checked_mul(every)?;
            return DateTime::from_timestamp(next, 0);
        }
        // Local wall-clock time of `after`, and the next second after it.
        let local_after = after.with_timezone(tz).naive_local();
        let mut from = local_after.with_nanosecond(0)? + Duration::seconds(1);
        // A fall-back overlap can put instants of smaller local times later in real time, and
        // the first pass of an overlap comes before `local_after` in wall-clock terms: start up
        // to three hours back when near a transition.
        let near_transition = offset_at(tz, after) != offset_at(tz, after + Duration::hours(3))
            || offset_at(tz, after) != offset_at(tz, after - Duration::hours(3));
        if near_transition {
            from -= Duration::hours(3);
        }
        let limit = local_after + Duration::days(366 * 8);
        let mut best: Option<DateTime<Utc>> = None;
        let mut best_local: Option<NaiveDateTime> = None;
        loop {
            let n = self.next_local(from, limit)?;
            if let Some(bl) = best_local
                && n > bl + Duration::hours(3)
            {
                return best;
            }
            for instant in self.instants(n, tz) {
                if instant > after && best.is_none_or(|b| instant < b) {
                    best = Some(instant);
                    best_local.get_or_insert(n);
                }
            }
            if let Some(b) = best {
                // Far from any transition, wall-clock order is real-time order: done.
                if offset_at(tz, after) == offset_at(tz, b + Duration::hours(3)) && !near_transition
                {
                    return best;
                }
            }
            from = n + Duration::seconds(1);
        }
    }

    /// The real instants at which local time `n` fires (0, 1 or 2 of them).
    fn instants(&self, n: NaiveDateTime, tz: &Tz) -> smallvec::SmallVec<[DateTime<Utc>; 2]> {
        let mut out = smallvec::SmallVec::new();
        match tz.from_local_datetime(&n) {
            LocalResult::Single(t) => out.push(t.with_timezone(&Utc)),
            LocalResult::Ambiguous(first, second) => {
                out.push(first.with_timezone(&Utc));
                if self.every_hour() {
                    out.push(second.with_timezone(&Utc));
                }
            }
            LocalResult::None => {
                if !self.every_hour() {
                    out.push(gap_end(n, tz));
                }
            }
        }
        out
    }
}

/// The UTC offset of `tz` at `t`, in seconds.
fn offset_at(tz: &Tz, t: DateTime<Utc>) -> i32 {
    tz.offset_from_utc_datetime(&t.naive_utc())
        .fix()
        .local_minus_utc()
}

/// The first instant after the daylight-saving gap that swallowed local time `n`.
fn gap_end(n: NaiveDateTime, tz: &Tz) -> DateTime<Utc> {
    let at = |secs: i64| {
        Utc.timestamp_opt(secs, 0)
            .single()
            .unwrap_or(DateTime::<Utc>::MIN_UTC)
    };
    // An instant shortly before the gap, and the offset in force there.
    let probe = match tz.from_local_datetime(&(n - Duration::hours(3))) {
        LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => t.with_timezone(&Utc),
        LocalResult::None => Utc.from_utc_datetime(&n) - Duration::hours(16),
    };
    let before = offset_at(tz, probe);
    // Read with that offset, `n` is an instant past the jump; bisect to the jump, by seconds.
    let (mut lo, mut hi) = (
        probe.timestamp(),
        n.and_utc().timestamp() - i64::from(before),
    );
    if offset_at(tz, at(hi)) == before {
        return at(hi);
    }
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if offset_at(tz, at(mid)) == before {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    at(hi)
}

/// The whole seconds of a Go duration (`time.ParseDuration`: `300ms`, `1.5h`, `2h45m`), at
/// least one. robfig/cron rounds shorter intervals up to a second; here they are refused, as
/// are zero and negative ones, rather than silently changed.
fn go_duration_seconds(text: &str) -> Result<i64, String> {
    const UNITS: [(&str, f64); 8] = [
        ("ns", 1e-9),
        ("us", 1e-6),
        ("µs", 1e-6),
        ("μs", 1e-6),
        ("ms", 1e-3),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
    ];
    if text.is_empty() {
        return Err("no duration".to_owned());
    }
    if text.starts_with('-') {
        return Err("a negative interval never fires".to_owned());
    }
    let mut rest = text.strip_prefix('+').unwrap_or(text);
    let mut total = 0.0f64;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("{rest:?} has no unit (ns, us, ms, s, m, h)"))?;
        let (number, after) = rest.split_at(number_end);
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{number:?} is not a number"))?;
        let unit_end = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let scale = UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, s)| *s)
            .ok_or_else(|| format!("unknown unit {unit:?} (ns, us, ms, s, m, h)"))?;
        total += value * scale;
        rest = next;
    }
    if !(1.0..=1e12).contains(&total) {
        return Err(format!("{text} is not between 1s and 10^12 s"));
    }
    Ok(total.floor() as i64)
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.source)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

#[cfg(test)]
mod tests;
