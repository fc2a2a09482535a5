use chrono::{DateTime, Duration, TimeZone, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;

use super::*;

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The fire times after `start`, in local time of `tz`, formatted with their offset.
fn fires(expr: &str, zone: &str, start: &str, n: usize) -> Vec<String> {
    let s = Schedule::parse(expr).unwrap();
    let tz: Tz = zone.parse().unwrap();
    let mut t = utc(start);
    let mut out = Vec::new();
    for _ in 0..n {
        t = s.next_after(t, &tz).unwrap();
        out.push(t.with_timezone(&tz).to_rfc3339());
    }
    out
}

#[test]
fn knative_accepts_these_and_so_do_we() {
    // `?` is `*` (robfig/cron, Quartz): in a day field it leaves the other to decide.
    let start = "2026-03-04T10:00:00Z"; // a Wednesday
    assert_eq!(
        fires("0 15 * * ?", "UTC", start, 3),
        fires("0 15 * * *", "UTC", start, 3)
    );
    assert_eq!(
        fires("0 0 12 ? * MON-FRI", "UTC", start, 5),
        fires("0 0 12 * * MON-FRI", "UTC", start, 5)
    );
    // A zone prefix.
    for expr in ["CRON_TZ=Asia/Tokyo 0 9 * * *", "TZ=Asia/Tokyo 0 9 * * *"] {
        let s = Schedule::parse(expr).unwrap();
        assert_eq!(s.zone(), Some(Tz::Asia__Tokyo), "{expr}");
        assert_eq!(s.source(), expr);
        assert_eq!(
            s.next_after(utc("2026-01-01T00:30:00Z"), &Tz::Asia__Tokyo),
            Some(utc("2026-01-02T00:00:00Z"))
        );
    }
    assert_eq!(Schedule::parse("0 9 * * *").unwrap().zone(), None);
    assert!(matches!(
        Schedule::parse("CRON_TZ=Nowhere/Land 0 9 * * *"),
        Err(CronError::Zone(_))
    ));
    assert_eq!(
        Schedule::parse("CRON_TZ=UTC"),
        Err(CronError::FieldCount(0))
    );
    // `@every`: multiples of the interval since the Unix epoch, whatever the zone.
    for (expr, seconds) in [
        ("@every 10s", 10),
        ("@every 1h30m", 5400),
        ("@every 1.5m", 90),
        ("@every 2h45m30s", 9930),
        ("@every 1500ms", 1),
        ("CRON_TZ=Asia/Tokyo @every 1m", 60),
    ] {
        let s = Schedule::parse(expr).unwrap();
        for zone in [Tz::UTC, Tz::Asia__Tokyo, Tz::America__St_Johns] {
            let mut t = utc("2026-03-08T06:29:59.500Z");
            for _ in 0..4 {
                let next = s.next_after(t, &zone).unwrap();
                assert!(next > t, "{expr}");
                assert!(
                    next - t <= Duration::seconds(seconds),
                    "{expr}: {t} → {next}"
                );
                assert_eq!(next.timestamp() % seconds, 0, "{expr}");
                t = next;
            }
        }
    }
    for bad in [
        "@every",
        "@every 500ms",
        "@every 0s",
        "@every -5m",
        "@every 5",
        "@every 5 m",
        "@every 5d",
        "@every m",
    ] {
        assert!(
            matches!(Schedule::parse(bad), Err(CronError::Every(..))),
            "{bad}: {:?}",
            Schedule::parse(bad)
        );
    }
    for shortcut in ["@reboot", "@everyday", "@every5m"] {
        assert!(
            matches!(Schedule::parse(shortcut), Err(CronError::Shortcut(_))),
            "{shortcut}"
        );
    }
}

#[test]
fn parses_fields_names_steps_and_shortcuts() {
    assert!(Schedule::parse("*/5 * * * *").is_ok());
    assert!(Schedule::parse("0 30 9 * * MON-FRI").is_ok());
    assert!(Schedule::parse("0 0 1 JAN,jul *").is_ok());
    assert!(Schedule::parse("5/15 * * * *").is_ok());
    for s in [
        "@yearly",
        "@annually",
        "@monthly",
        "@weekly",
        "@daily",
        "@midnight",
        "@hourly",
        "@HOURLY",
    ] {
        assert!(Schedule::parse(s).is_ok(), "{s}");
    }
    assert_eq!(
        Schedule::parse("@reboot"),
        Err(CronError::Shortcut("@reboot".into()))
    );
    for shortcut in ["@reboot", "@everyday", "@every5m"] {
        assert!(
            matches!(Schedule::parse(shortcut), Err(CronError::Shortcut(_))),
            "{shortcut}"
        );
    }
    assert_eq!(Schedule::parse("* * * *"), Err(CronError::FieldCount(4)));
    assert!(matches!(
        Schedule::parse("60 * * * *"),
        Err(CronError::Field {
            field: "minute",
            ..
        })
    ));
    assert!(matches!(
        Schedule::parse("* 24 * * *"),
        Err(CronError::Field { field: "hour", .. })
    ));
    assert!(matches!(
        Schedule::parse("* * 0 * *"),
        Err(CronError::Field {
            field: "day-of-month",
            ..
        })
    ));
    assert!(matches!(
        Schedule::parse("* * * 13 *"),
        Err(CronError::Field { field: "month", .. })
    ));
    assert!(matches!(
        Schedule::parse("* * * * 8"),
        Err(CronError::Field {
            field: "day-of-week",
            ..
        })
    ));
    assert!(matches!(
        Schedule::parse("*/0 * * * *"),
        Err(CronError::Field { .. })
    ));
    assert!(matches!(
        Schedule::parse("5-1 * * * *"),
        Err(CronError::Field { .. })
    ));
    assert!(matches!(
        Schedule::parse("* * * * FOO"),
        Err(CronError::Field { .. })
    ));
    assert!(matches!(
        Schedule::parse("0 0 L * *"),
        Err(CronError::Field { .. })
    ));
    assert!(parse_zone("Europe/Berlin").is_ok());
    assert!(parse_zone("Mars/Olympus").is_err());
}

#[test]
fn five_fields_fire_on_minutes_six_on_seconds() {
    assert_eq!(
        fires("*/15 * * * *", "UTC", "2026-01-01T00:07:30Z", 2),
        ["2026-01-01T00:15:00+00:00", "2026-01-01T00:30:00+00:00"]
    );
    assert_eq!(
        fires("*/20 * * * * *", "UTC", "2026-01-01T00:00:00Z", 3),
        [
            "2026-01-01T00:00:20+00:00",
            "2026-01-01T00:00:40+00:00",
            "2026-01-01T00:01:00+00:00"
        ]
    );
    // Strictly after: an instant on a tick yields the next one.
    assert_eq!(
        fires("0 * * * *", "UTC", "2026-01-01T05:00:00Z", 1),
        ["2026-01-01T06:00:00+00:00"]
    );
}

#[test]
fn day_of_month_and_day_of_week_are_ored_when_both_restricted() {
    // 2026-03-01 is a Sunday. `0 0 13 * FRI`: the 13th, and every Friday.
    assert_eq!(
        fires("0 0 13 * FRI", "UTC", "2026-03-01T00:00:00Z", 4),
        [
            "2026-03-06T00:00:00+00:00",
            "2026-03-13T00:00:00+00:00",
            "2026-03-20T00:00:00+00:00",
            "2026-03-27T00:00:00+00:00"
        ]
    );
    // With day-of-week `*`, only day-of-month counts; and the reverse.
    assert_eq!(
        fires("0 0 13 * *", "UTC", "2026-03-01T00:00:00Z", 1),
        ["2026-03-13T00:00:00+00:00"]
    );
    assert_eq!(
        fires("0 0 * * FRI", "UTC", "2026-03-07T00:00:00Z", 1),
        ["2026-03-13T00:00:00+00:00"]
    );
    // Sunday as 0 and as 7.
    assert_eq!(
        fires("0 12 * * 7", "UTC", "2026-03-01T13:00:00Z", 1),
        fires("0 12 * * 0", "UTC", "2026-03-01T13:00:00Z", 1)
    );
}

#[test]
fn berlin_spring_forward() {
    // 2026-03-29: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
    assert_eq!(
        fires("30 2 * * *", "Europe/Berlin", "2026-03-27T12:00:00Z", 3),
        [
            "2026-03-28T02:30:00+01:00",
            "2026-03-29T03:00:00+02:00",
            "2026-03-30T02:30:00+02:00"
        ],
        "a fixed-hour tick inside the gap fires once, when the gap ends"
    );
    assert_eq!(
        fires("*/30 2-3 * * *", "Europe/Berlin", "2026-03-29T00:45:00Z", 3),
        [
            "2026-03-29T03:00:00+02:00",
            "2026-03-29T03:30:00+02:00",
            "2026-03-30T02:00:00+02:00"
        ],
        "02:00 and 02:30 both fall in the gap: one firing at 03:00, which is also a tick"
    );
    assert_eq!(
        fires("0 * * * *", "Europe/Berlin", "2026-03-29T00:30:00Z", 2),
        ["2026-03-29T03:00:00+02:00", "2026-03-29T04:00:00+02:00"],
        "an hourly schedule skips the hour that does not exist"
    );
    // A daily 09:00 keeps 09:00 local across the change: 8 UTC before, 7 UTC after.
    let s = Schedule::parse("0 9 * * *").unwrap();
    let tz: Tz = "Europe/Berlin".parse().unwrap();
    assert_eq!(
        s.next_after(utc("2026-03-28T12:00:00Z"), &tz),
        Some(utc("2026-03-29T07:00:00Z"))
    );
    assert_eq!(
        s.next_after(utc("2026-03-27T12:00:00Z"), &tz),
        Some(utc("2026-03-28T08:00:00Z"))
    );
}

#[test]
fn berlin_fall_back() {
    // 2026-10-25: 03:00 CEST falls back to 02:00 CET (01:00 UTC); 02:xx happens twice.
    assert_eq!(
        fires("30 2 * * *", "Europe/Berlin", "2026-10-24T12:00:00Z", 3),
        [
            "2026-10-25T02:30:00+02:00",
            "2026-10-26T02:30:00+01:00",
            "2026-10-27T02:30:00+01:00"
        ],
        "a fixed-hour tick in the repeated hour fires once, at its first occurrence"
    );
    assert_eq!(
        fires("30 * * * *", "Europe/Berlin", "2026-10-24T23:00:00Z", 4),
        [
            "2026-10-25T01:30:00+02:00",
            "2026-10-25T02:30:00+02:00",
            "2026-10-25T02:30:00+01:00",
            "2026-10-25T03:30:00+01:00"
        ],
        "an hourly schedule fires in both passes of the repeated hour"
    );
}

#[test]
fn new_york_spring_forward_and_fall_back() {
    // 2026-03-08: 02:00 EST jumps to 03:00 EDT (07:00 UTC).
    assert_eq!(
        fires("15 2 * * *", "America/New_York", "2026-03-07T12:00:00Z", 2),
        ["2026-03-08T03:00:00-04:00", "2026-03-09T02:15:00-04:00"]
    );
    assert_eq!(
        fires(
            "*/20 * * * *",
            "America/New_York",
            "2026-03-08T06:30:00Z",
            4
        ),
        [
            "2026-03-08T01:40:00-05:00",
            "2026-03-08T03:00:00-04:00",
            "2026-03-08T03:20:00-04:00",
            "2026-03-08T03:40:00-04:00"
        ]
    );
    // 2026-11-01: 02:00 EDT falls back to 01:00 EST (06:00 UTC).
    assert_eq!(
        fires("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2),
        ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"]
    );
    assert_eq!(
        fires(
            "0,30 * * * *",
            "America/New_York",
            "2026-11-01T04:45:00Z",
            5
        ),
        [
            "2026-11-01T01:00:00-04:00",
            "2026-11-01T01:30:00-04:00",
            "2026-11-01T01:00:00-05:00",
            "2026-11-01T01:30:00-05:00",
            "2026-11-01T02:00:00-05:00"
        ]
    );
}

#[test]
fn impossible_dates_never_fire_and_leap_days_do() {
    let tz: Tz = "UTC".parse().unwrap();
    assert_eq!(
        Schedule::parse("0 0 30 2 *")
            .unwrap()
            .next_after(utc("2026-01-01T00:00:00Z"), &tz),
        None
    );
    assert_eq!(
        fires("0 0 29 2 *", "UTC", "2026-01-01T00:00:00Z", 1),
        ["2028-02-29T00:00:00+00:00"]
    );
}

/// Brute force over every second of a window: what Vixie semantics say should fire.
fn brute_force(
    s: &Schedule,
    tz: &Tz,
    after: DateTime<Utc>,
    window: Duration,
) -> Option<DateTime<Utc>> {
    let matches = |n: NaiveDateTime| s.next_local(n, n) == Some(n);
    // Every schedule here has whole minutes; start at the first whole minute after `after`.
    let secs = after.timestamp() + 1;
    let mut t = Utc
        .timestamp_opt(secs + (60 - secs.rem_euclid(60)) % 60, 0)
        .unwrap();
    let end = after + window;
    while t <= end {
        let local = t.with_timezone(tz).naive_local();
        if matches(local) {
            match tz.from_local_datetime(&local) {
                LocalResult::Ambiguous(first, _)
                    if !s.every_hour() && first.with_timezone(&Utc) != t => {}
                _ => return Some(t),
            }
        }
        // A fixed-hour tick in a gap: fires when the gap ends, i.e. at an instant where the
        // offset just changed and a matching local time was skipped.
        if !s.every_hour() && offset_at(tz, t) != offset_at(tz, t - Duration::seconds(60)) {
            let before = (t - Duration::seconds(60)).with_timezone(tz).naive_local();
            let mut n = before + Duration::seconds(60);
            while n < local {
                if matches(n) {
                    return Some(t);
                }
                n += Duration::seconds(60);
            }
        }
        t += Duration::seconds(60);
    }
    None
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Near DST transitions in four zones, `next_after` agrees with a minute-by-minute walk
    /// through real time.
    #[test]
    fn agrees_with_brute_force_near_transitions(
        zone in prop::sample::select(vec!["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC"]),
        minute in prop::sample::select(vec!["*", "0", "*/15", "30", "0,45", "10-20/5"]),
        hour in prop::sample::select(vec!["*", "1", "2", "1-3", "*/2", "0,2"]),
        transition in prop::sample::select(vec!["2026-03-08T07:00:00Z", "2026-03-29T01:00:00Z", "2026-10-25T01:00:00Z", "2026-11-01T06:00:00Z", "2026-04-04T15:00:00Z", "2026-10-03T15:30:00Z"]),
        offset_minutes in -300i64..300,
    ) {
        let s = Schedule::parse(&format!("{minute} {hour} * * *")).unwrap();
        let tz: Tz = zone.parse().unwrap();
        let after = utc(transition) + Duration::minutes(offset_minutes);
        let want = brute_force(&s, &tz, after, Duration::hours(30));
        let got = s.next_after(after, &tz);
        prop_assert_eq!(got, want, "schedule {} in {} after {}", s, zone, after);
    }
}
