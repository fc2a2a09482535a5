//! The scheduler end to end: PingSources firing into real subscribers, delayed events, control
//! events creating and deleting schedules, catch-up after a restart, reloads, and schedules
//! rejected at load time.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use serde_json::json;
use triggerfish_tests::{Config, Event, PATIENCE, Router, Subscriber, Trigger, run_cli};

const SCHEDULER_REF: &str =
    "ref: {apiVersion: triggerfish.dev/v1alpha1, kind: Scheduler, name: default}";
const BROKER_REF: &str =
    "{ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}}";

fn ping(name: &str, schedule: &str, sink: &str, extra: &str) -> String {
    format!(
        "apiVersion: sources.knative.dev/v1\nkind: PingSource\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  schedule: \"{schedule}\"\n  sink: {sink}\n{extra}"
    )
}

fn time_of(req: &triggerfish_tests::Request) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(&req.ce("time").unwrap())
        .unwrap()
        .with_timezone(&Utc)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_source_fires_every_second_with_knatives_attributes() {
    let sub = Subscriber::start().await;
    let extra = "  contentType: application/json\n  data: '{\"message\": \"hello\"}'\n  ceOverrides: {extensions: {team: blue}}\n";
    let config = Config::new().broker("default", None).raw(&ping(
        "heartbeat",
        "* * * * * *",
        &format!("{{uri: \"{}\"}}", sub.url("/ping")),
        extra,
    ));
    let _router = Router::start(&config.render()).await;
    let ticks = sub.wait_for(3, PATIENCE).await;
    let mut ids = HashSet::new();
    for t in &ticks {
        assert_eq!(t.ce("type").as_deref(), Some("dev.knative.sources.ping"));
        assert_eq!(
            t.ce("source").as_deref(),
            Some("/apis/v1/namespaces/default/pingsources/heartbeat")
        );
        assert_eq!(t.ce("team").as_deref(), Some("blue"));
        // Straight to a URI, through no broker: no broker's arrival time.
        assert_eq!(t.ce("knativearrivaltime"), None);
        // A source reads no reply, so it does not ask for one.
        assert_eq!(t.header("prefer"), None);
        assert_eq!(t.header("content-type"), Some("application/json"));
        assert_eq!(t.json(), json!({"message": "hello"}));
        assert!(
            uuid::Uuid::parse_str(&t.id()).is_ok(),
            "id {} is a UUID",
            t.id()
        );
        assert!(ids.insert(t.id()), "ids are fresh");
        let time = time_of(t);
        assert_eq!(
            time.timestamp_subsec_nanos(),
            0,
            "time is the scheduled tick"
        );
        // Delivered within a second of its tick.
        let arrived = DateTime::<Utc>::from(SystemTime::now() - t.at.elapsed());
        let late = (arrived - time).to_std().unwrap_or_default();
        assert!(
            late < Duration::from_millis(900),
            "tick {time} arrived {late:?} late"
        );
    }
    let mut times: Vec<_> = ticks.iter().map(|r| time_of(r)).collect();
    times.sort();
    for w in times.windows(2) {
        assert_eq!(
            (w[1] - w[0]).num_seconds(),
            1,
            "one tick per second: {times:?}"
        );
    }
}

/// A tick sent into a broker enters it when it fires: its `knativearrivaltime` is that moment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ticks_into_a_broker_arrive_when_they_fire() {
    let sub = Subscriber::start().await;
    let config = Config::new()
        .broker("default", None)
        .trigger(Trigger::new("ticks", &sub.url("/ticks")))
        .raw(&ping("into-broker", "* * * * * *", BROKER_REF, ""));
    let _router = Router::start(&config.render()).await;
    for t in sub.wait_for(2, PATIENCE).await.iter() {
        let arrival = DateTime::parse_from_rfc3339(&t.ce("knativearrivaltime").unwrap())
            .unwrap()
            .with_timezone(&Utc);
        let late = (arrival - time_of(t)).to_std();
        assert!(
            late.is_ok_and(|late| late < Duration::from_millis(900)),
            "tick {} arrived at {arrival}",
            time_of(t)
        );
    }
}

/// Schedules as Knative takes them (robfig/cron): `@every`, ticking at multiples of its
/// interval since the epoch, and a `CRON_TZ=` zone with `?` for a day field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knative_schedule_forms_fire() {
    let sub = Subscriber::start().await;
    let sink = format!("{{uri: \"{}\"}}", sub.url("/ping"));
    let config = Config::new()
        .broker("default", None)
        .raw(&ping("every", "@every 2s", &sink, ""))
        .raw(&ping("tokyo", "CRON_TZ=Asia/Tokyo * * * * * ?", &sink, ""));
    let _router = Router::start(&config.render()).await;
    let ticks = sub.wait_for(9, PATIENCE).await;
    let times = |name: &str| {
        let source = format!("/apis/v1/namespaces/default/pingsources/{name}");
        let mut times: Vec<_> = ticks
            .iter()
            .filter(|t| t.ce("source").as_deref() == Some(source.as_str()))
            .map(|t| time_of(t))
            .collect();
        times.sort();
        times
    };
    let every = times("every");
    assert!(every.len() >= 2, "{every:?}");
    for t in &every {
        assert_eq!(t.timestamp() % 2, 0, "on the 2 s grid: {every:?}");
    }
    for w in every.windows(2) {
        assert_eq!((w[1] - w[0]).num_seconds(), 2, "{every:?}");
    }
    let tokyo = times("tokyo");
    assert!(tokyo.len() >= 4, "{tokyo:?}");
    for w in tokyo.windows(2) {
        assert_eq!((w[1] - w[0]).num_seconds(), 1, "{tokyo:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_events_arrive_on_time_without_the_delay_extensions() {
    let sub = Subscriber::start().await;
    let config = Config::new()
        .broker("default", None)
        .trigger(
            Trigger::new("delay", "unused")
                .subscriber(SCHEDULER_REF)
                .filter("filters:\n  - cesql: \"EXISTS deliverafter OR EXISTS deliverat\""),
        )
        .trigger(
            Trigger::new("out", &sub.url("/out"))
                .filter("filters:\n  - cesql: \"type = 'reminder' AND NOT (EXISTS deliverafter OR EXISTS deliverat)\""),
        );
    let router = Router::start(&config.render()).await;
    let sent = Instant::now();
    let sent_at = Utc::now();
    router
        .publish(&Event::new("r-after", "reminder").attr("deliverafter", "PT1.5S"))
        .await;
    let at_from = Instant::now();
    let at = (Utc::now() + chrono::Duration::milliseconds(2500)).to_rfc3339();
    router
        .publish(&Event::new("r-at", "reminder").attr("deliverat", at))
        .await;
    let got = sub.wait_for(2, PATIENCE).await;
    let after = got.iter().find(|r| r.id() == "r-after").unwrap();
    let at = got.iter().find(|r| r.id() == "r-at").unwrap();
    let after_delay = after.at.duration_since(sent);
    let at_delay = at.at.duration_since(at_from);
    // Tolerance: 300 ms after the due time; never early.
    assert!(
        after_delay >= Duration::from_millis(1500) && after_delay < Duration::from_millis(1800),
        "{after_delay:?}"
    );
    assert!(
        at_delay >= Duration::from_millis(2450) && at_delay < Duration::from_millis(2800),
        "{at_delay:?}"
    );
    for r in [after, at] {
        assert!(r.ce("deliverafter").is_none() && r.ce("deliverat").is_none());
        assert!(r.ce("knativebrokerttl").is_none());
    }
    // A delayed event enters the broker again when it is due.
    let arrival = DateTime::parse_from_rfc3339(&after.ce("knativearrivaltime").unwrap()).unwrap();
    assert!(
        arrival >= sent_at + chrono::Duration::milliseconds(1500),
        "sent at {sent_at}, arrived at {arrival}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_events_create_and_delete_schedules() {
    let sub = Subscriber::start().await;
    let config = Config::new()
        .broker("default", None)
        .trigger(
            Trigger::new("control", "unused")
                .subscriber(SCHEDULER_REF)
                .filter("filters:\n  - prefix: {type: dev.triggerfish.schedule.}")
                .delivery(&format!("deadLetterSink: {{uri: \"{}\"}}", sub.url("/dls"))),
        )
        .trigger(Trigger::new("ticks", &sub.url("/ticks")).of_type("report.due"));
    let router = Router::start(&config.render()).await;
    let schedule = json!({
        "name": "reports",
        "schedule": "* * * * * *",
        "timezone": "Europe/Berlin",
        "event": {"type": "report.due", "source": "/reports", "data": {"kind": "hourly"}},
        "sink": {"ref": {"apiVersion": "eventing.knative.dev/v1", "kind": "Broker", "name": "default"}}
    });
    router
        .publish(&Event::new("c-1", "dev.triggerfish.schedule.create").data(schedule.clone()))
        .await;
    let ticks = sub.wait_for_path("/ticks", 2, PATIENCE).await;
    assert_eq!(ticks[0].json(), json!({"kind": "hourly"}));
    assert_eq!(ticks[0].ce("source").as_deref(), Some("/reports"));

    // The same request again is harmless (redelivery); a different one under the name is not.
    router
        .publish(&Event::new("c-2", "dev.triggerfish.schedule.create").data(schedule.clone()))
        .await;
    let mut other = schedule.clone();
    other["schedule"] = json!("0 0 * * *");
    router
        .publish(&Event::new("c-3", "dev.triggerfish.schedule.create").data(other))
        .await;
    let dls = sub.wait_for_path("/dls", 1, PATIENCE).await;
    assert_eq!(dls[0].id(), "c-3");
    assert_eq!(dls[0].ce("knativeerrorcode").as_deref(), Some("400"));
    let reason = dls[0].ce("knativeerrordata").unwrap();
    let reason = String::from_utf8(base64_decode(&reason)).unwrap();
    assert!(reason.contains("already exists"), "{reason}");

    // An invalid schedule is refused, not stored.
    let mut bad = schedule.clone();
    bad["name"] = json!("bad");
    bad["schedule"] = json!("@every 1ms");
    router
        .publish(&Event::new("c-4", "dev.triggerfish.schedule.create").data(bad))
        .await;
    sub.wait_for_path("/dls", 2, PATIENCE).await;

    router
        .publish(
            &Event::new("d-1", "dev.triggerfish.schedule.delete").data(json!({"name": "reports"})),
        )
        .await;
    // After the delete is handled, at most a tick already in flight arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = sub.requests_to("/ticks").len();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let after = sub.requests_to("/ticks").len();
    assert!(
        after <= before + 1,
        "ticks kept coming after the delete: {before} then {after}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catch_up_fires_the_ticks_missed_while_stopped() {
    let sub = Subscriber::start().await;
    let data = tempfile::tempdir().unwrap();
    let server = format!("dataDir: {}", data.path().display());
    let sink = format!("{{uri: \"{}\"}}", sub.url("/ping"));
    let config = Config::new()
        .server(&server)
        .broker("default", None)
        .raw(&ping(
            "catches-up",
            "* * * * * *",
            &sink,
            "  catchUp: {maxAge: PT1H}\n",
        ))
        .raw(&ping(
            "skips",
            "* * * * * *",
            &format!("{{uri: \"{}\"}}", sub.url("/skips")),
            "",
        ));
    let mut first = Router::start(&config.render()).await;
    sub.wait_for_path("/ping", 2, PATIENCE).await;
    first.sigterm();
    first.wait_exit(PATIENCE).await;
    let stopped = Utc::now();
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let _second = Router::start(&config.render()).await;
    let late = triggerfish_tests::eventually("catch-up ticks", PATIENCE, || {
        let late: Vec<_> = sub
            .requests_to("/ping")
            .into_iter()
            .filter(|r| r.ce("scheduledtime").is_some())
            .collect();
        async move { (late.len() >= 2).then_some(late) }
    })
    .await;
    for r in &late {
        let scheduled = r.ce("scheduledtime").unwrap();
        assert_eq!(
            r.ce("time").unwrap(),
            scheduled,
            "time is the scheduled tick"
        );
        let t = DateTime::parse_from_rfc3339(&scheduled)
            .unwrap()
            .with_timezone(&Utc);
        assert!(
            t > stopped - chrono::Duration::seconds(1),
            "only ticks missed while stopped: {t}"
        );
    }
    assert!(
        sub.requests_to("/skips")
            .iter()
            .all(|r| r.ce("scheduledtime").is_none()),
        "without catchUp, missed ticks are skipped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_replaces_changed_schedules_and_keeps_the_others() {
    let sub = Subscriber::start().await;
    let keep = ping(
        "keep",
        "*/2 * * * * *",
        &format!("{{uri: \"{}\"}}", sub.url("/keep")),
        "",
    );
    let change = |s: &str| {
        ping(
            "change",
            s,
            &format!("{{uri: \"{}\"}}", sub.url("/change")),
            "",
        )
    };
    let gone = ping(
        "gone",
        "* * * * * *",
        &format!("{{uri: \"{}\"}}", sub.url("/gone")),
        "",
    );
    let config = |parts: &[&str]| {
        let mut c = Config::new().broker("default", None);
        for p in parts {
            c = c.raw(p);
        }
        c.render()
    };
    let router = Router::start(&config(&[&keep, &change("0 0 1 1 *"), &gone])).await;
    sub.wait_for_path("/gone", 1, PATIENCE).await;
    sub.wait_for_path("/keep", 1, PATIENCE).await;
    router.write_config(&config(&[&keep, &change("* * * * * *")]));
    router.wait_log("config active", PATIENCE).await;
    sub.wait_for_path("/change", 2, PATIENCE).await;
    let gone_after = sub.requests_to("/gone").len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(
        sub.requests_to("/gone").len() <= gone_after + 1,
        "a removed schedule stopped"
    );
    let keep: Vec<_> = sub
        .requests_to("/keep")
        .iter()
        .map(|r| time_of(r))
        .collect();
    for w in keep.windows(2) {
        assert_eq!(
            (w[1] - w[0]).num_seconds(),
            2,
            "an untouched schedule keeps its timing: {keep:?}"
        );
    }
}

#[tokio::test]
async fn bad_schedules_are_rejected_when_the_config_loads() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("@every 100ms", "", "spec.schedule"),
        (
            "CRON_TZ=Asia/Tokyo 0 9 * * *",
            "  timezone: Europe/Berlin\n",
            "spec.timezone",
        ),
        (
            "* * * * *",
            "  timezone: Mars/Olympus_Mons\n",
            "spec.timezone",
        ),
        (
            "* * * * *",
            "  contentType: application/json\n  data: '{not json'\n",
            "spec.data",
        ),
        (
            "* * * * *",
            "  data: x\n  dataBase64: eA==\n",
            "spec.dataBase64",
        ),
        ("61 * * * *", "", "spec.schedule"),
    ];
    for (schedule, extra, field) in cases {
        let config = Config::new()
            .broker("default", None)
            .raw(&ping("p", schedule, BROKER_REF, extra));
        let path = dir.path().join("c.yaml");
        std::fs::write(&path, config.render()).unwrap();
        let out = run_cli(
            dir.path(),
            &["validate", "--config", path.to_str().unwrap()],
            None,
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{schedule} {extra}: {err}");
        assert!(
            err.contains("PingSource \"p\" in namespace \"default\"") && err.contains(field),
            "{err}"
        );
        assert!(err.contains("c.yaml:"), "names the file and line: {err}");
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}
