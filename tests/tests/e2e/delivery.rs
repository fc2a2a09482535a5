//! Knative delivery semantics end to end, observed at real HTTP subscribers: attempts
//! (`retry + 1`), backoff gaps (linear `delay·n`, exponential `delay·2^n`, `n` from 1),
//! `backoffMax`, `Retry-After` up to `retryAfterMax`, per-attempt `timeout`, and
//! dead-lettering with `knativeerrordest`, `knativeerrorcode` and `knativeerrordata`.
//!
//! Gaps are measured between arrivals at the subscriber. A gap can never be shorter than the
//! backoff (the router sleeps it after reading the response), so the lower bound is tight;
//! the upper bound allows for a loaded machine.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use parking_lot::Mutex;
use triggerfish_tests::event::take_arrival;
use triggerfish_tests::{
    Config, Event, PATIENCE, Reply, Request, Router, Subscriber, Trigger, eventually,
};

/// How much later than computed an attempt may arrive.
const SLACK: Duration = Duration::from_millis(150);

/// Failed attempts, by trigger and cause.
const FAILURES: &str = "triggerfish_delivery_failures_total";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The gaps between consecutive requests.
fn gaps(requests: &[Arc<Request>]) -> Vec<Duration> {
    requests.windows(2).map(|w| w[1].at - w[0].at).collect()
}

/// Each gap is at least its expected value (less 1 ms of timer rounding) and at most
/// [`SLACK`] more.
fn assert_gaps(what: &str, requests: &[Arc<Request>], expected: &[Duration]) {
    assert_gaps_early(what, requests, expected, ms(1));
}

/// Like [`assert_gaps`], with a gap allowed to be up to `early` shorter than expected.
///
/// For backoff gaps the lower bound is exact: attempt n arrives before its answer, and the
/// router sleeps after the answer. A timed-out attempt has no answer: its timer starts when
/// the router sends, before the subscriber sees the request, so the gap seen here is shorter
/// than timeout + backoff by however much longer attempt n took to arrive than attempt n+1.
fn assert_gaps_early(
    what: &str,
    requests: &[Arc<Request>],
    expected: &[Duration],
    early: Duration,
) {
    let actual = gaps(requests);
    assert_eq!(
        actual.len(),
        expected.len(),
        "{what}: {} attempts, gaps {actual:?}",
        requests.len()
    );
    for (i, (a, e)) in actual.iter().zip(expected).enumerate() {
        assert!(
            *a + early >= *e && *a <= *e + SLACK,
            "{what}: gap {} (before attempt {}) is {a:?}, expected {e:?} (all gaps: {actual:?}, expected {expected:?})",
            i + 1,
            i + 2
        );
    }
}

/// Waits until `n` events have been given up on without a dead-letter sink (so no attempt
/// is still to come), and returns the metrics.
async fn wait_dropped(router: &Router, n: f64) -> triggerfish_tests::Metrics {
    router
        .wait_metric(
            "triggerfish_delivery_dropped_total",
            &[("reason", "no_dead_letter_sink")],
            n,
            PATIENCE,
        )
        .await
}

/// One always-failing trigger with `delivery`; returns the attempts it got for one event.
async fn attempts_with(delivery: &str) -> (Vec<Arc<Request>>, Router) {
    let sub = Subscriber::start().await;
    sub.handle(|_| Reply::status(503));
    let config = Config::new()
        .broker("default", None)
        .trigger(Trigger::new("t", &sub.url("/t")).delivery(delivery));
    let router = Router::start(&config.render()).await;
    router.publish(&Event::new("e-1", "t")).await;
    wait_dropped(&router, 1.0).await;
    (sub.requests(), router)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn linear_backoff_waits_delay_times_n() {
    // 200 ms apart, so that n from 0 (0, 200, 400) or n + 1 (400, 600, 800) would show.
    let (attempts, router) =
        attempts_with("retry: 3\nbackoffPolicy: linear\nbackoffDelay: PT0.2S").await;
    assert_eq!(attempts.len(), 4, "retry: 3 gives 4 attempts");
    assert!(attempts.iter().all(|r| r.id() == "e-1"));
    assert_gaps("linear PT0.2S", &attempts, &[ms(200), ms(400), ms(600)]);
    let m = router.metrics().await;
    let labels = [("trigger", "default/t")];
    assert_eq!(m.count("triggerfish_delivery_retries_total", &labels), 3);
    assert_eq!(
        m.count(
            "triggerfish_delivery_attempts_total",
            &[("trigger", "default/t"), ("outcome", "retryable")]
        ),
        4
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exponential_backoff_waits_delay_times_two_to_the_n() {
    let (attempts, _router) =
        attempts_with("retry: 3\nbackoffPolicy: exponential\nbackoffDelay: PT0.05S").await;
    assert_eq!(attempts.len(), 4);
    assert_gaps(
        "exponential PT0.05S",
        &attempts,
        &[ms(100), ms(200), ms(400)],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_max_caps_every_delay() {
    // Uncapped: 80, 160, 320, 640 ms.
    let (attempts, _router) = attempts_with(
        "retry: 4\nbackoffPolicy: exponential\nbackoffDelay: PT0.04S\nbackoffMax: PT0.12S",
    )
    .await;
    assert_eq!(attempts.len(), 5);
    assert_gaps(
        "exponential PT0.04S capped at PT0.12S",
        &attempts,
        &[ms(80), ms(120), ms(120), ms(120)],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_retry_means_one_attempt() {
    let (attempts, _router) = attempts_with("backoffDelay: PT0.01S").await;
    assert_eq!(attempts.len(), 1, "retry defaults to 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_that_succeeds_ends_the_delivery() {
    let sub = Subscriber::start().await;
    sub.script([Reply::status(503), Reply::status(500), Reply::ok()]);
    let dls = Subscriber::start().await;
    let config =
        Config::new()
            .broker("default", None)
            .trigger(Trigger::new("t", &sub.url("/t")).delivery(&format!(
                "retry: 5\nbackoffDelay: PT0.01S\ndeadLetterSink:\n  uri: {}",
                dls.url("/dls")
            )));
    let router = Router::start(&config.render()).await;
    router.publish(&Event::new("e-1", "t")).await;
    let m = router
        .wait_metric(
            "triggerfish_delivery_attempts_total",
            &[("outcome", "success")],
            1.0,
            PATIENCE,
        )
        .await;
    assert_eq!(sub.count(), 3, "{:?}", sub.summary());
    assert_eq!(
        m.count(
            "triggerfish_delivery_attempts_total",
            &[("outcome", "retryable")]
        ),
        2
    );
    // Each failure by its cause.
    for cause in ["http_503", "http_500"] {
        let label = [("trigger", "default/t"), ("cause", cause)];
        assert_eq!(m.count(FAILURES, &label), 1, "{cause}");
    }
    assert_eq!(m.count(FAILURES, &[]), 2);
    assert_eq!(m.count("triggerfish_delivery_dead_lettered_total", &[]), 0);
    assert_eq!(dls.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_up_to_retry_after_max() {
    let sub = Subscriber::start().await;
    // Per path: the first request fails as configured, the next succeeds.
    let seen: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let first = |req: &Request| -> Reply {
        match req.path.as_str() {
            "/honoured" | "/ignored" => Reply::status(503).retry_after("1"),
            "/capped" => Reply::status(429).retry_after("1"),
            "/not-on-500" => Reply::status(500).retry_after("1"),
            "/backoff-longer" => Reply::status(503).retry_after("0"),
            "/date" => Reply::status(503).retry_after(&httpdate::fmt_http_date(
                std::time::SystemTime::now() + Duration::from_secs(2),
            )),
            other => panic!("unexpected path {other}"),
        }
    };
    let counts = Arc::clone(&seen);
    sub.handle(move |req| {
        let mut counts = counts.lock();
        let n = counts.entry(req.path.clone()).or_default();
        *n += 1;
        if *n == 1 { first(req) } else { Reply::ok() }
    });
    let trigger = |name: &str, delivery: &str| {
        Trigger::new(name, &sub.url(&format!("/{name}")))
            .of_type(name)
            .delivery(delivery)
    };
    let config = Config::new()
        .broker("default", None)
        // Backoff 20 ms; the subscriber asks for 1 s and may ask for up to 5 s.
        .trigger(trigger(
            "honoured",
            "retry: 1\nbackoffDelay: PT0.01S\nretryAfterMax: PT5S",
        ))
        // It asks for 1 s, we allow 0.3 s.
        .trigger(trigger(
            "capped",
            "retry: 1\nbackoffDelay: PT0.01S\nretryAfterMax: PT0.3S",
        ))
        // Without retryAfterMax, Retry-After is ignored (Knative's default).
        .trigger(trigger("ignored", "retry: 1\nbackoffDelay: PT0.01S"))
        // Only 429 and 503 carry a Retry-After that counts.
        .trigger(trigger(
            "not-on-500",
            "retry: 1\nbackoffDelay: PT0.01S\nretryAfterMax: PT5S",
        ))
        // A backoff longer than the Retry-After wins.
        .trigger(trigger(
            "backoff-longer",
            "retry: 1\nbackoffPolicy: linear\nbackoffDelay: PT0.4S\nretryAfterMax: PT5S",
        ))
        // An HTTP-date two seconds ahead, with one-second resolution: 1 to 2 s.
        .trigger(trigger(
            "date",
            "retry: 1\nbackoffDelay: PT0.01S\nretryAfterMax: PT5S",
        ));
    let router = Router::start(&config.render()).await;
    for name in [
        "honoured",
        "capped",
        "ignored",
        "not-on-500",
        "backoff-longer",
        "date",
    ] {
        router.publish(&Event::new(format!("{name}-1"), name)).await;
    }
    let expected = [
        ("/honoured", ms(1000)),
        ("/capped", ms(300)),
        ("/ignored", ms(20)),
        ("/not-on-500", ms(20)),
        ("/backoff-longer", ms(400)),
    ];
    for (path, gap) in expected {
        let attempts = sub.wait_for_path(path, 2, PATIENCE).await;
        assert_gaps(path, &attempts, &[gap]);
    }
    let date = sub.wait_for_path("/date", 2, PATIENCE).await;
    let gap = date[1].at - date[0].at;
    assert!(
        gap >= ms(900) && gap <= ms(2000) + SLACK,
        "/date: gap {gap:?}, expected 1 to 2 s"
    );
    assert_eq!(sub.count(), 12, "{:?}", sub.summary());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_bounds_each_attempt() {
    let sub = Subscriber::start().await;
    let dls = Subscriber::start().await;
    let seen: Arc<Mutex<usize>> = Arc::default();
    let counter = Arc::clone(&seen);
    sub.handle(move |req| match req.path.as_str() {
        // Too slow once, then quick.
        "/slow-once" => {
            let mut n = counter.lock();
            *n += 1;
            if *n == 1 {
                Reply::ok().delay(Duration::from_secs(3))
            } else {
                Reply::ok()
            }
        }
        // Always too slow.
        _ => Reply::ok().delay(Duration::from_secs(3)),
    });
    let delivery = format!(
        "retry: 1\nbackoffDelay: PT0.01S\ntimeout: PT0.2S\ndeadLetterSink:\n  uri: {}",
        dls.url("/dls")
    );
    let config = Config::new()
        .broker("default", None)
        .trigger(
            Trigger::new("slow-once", &sub.url("/slow-once"))
                .of_type("once")
                .delivery(&delivery),
        )
        .trigger(
            Trigger::new("slow-always", &sub.url("/slow-always"))
                .of_type("always")
                .delivery(&delivery),
        );
    let router = Router::start(&config.render()).await;
    router.publish(&Event::new("once-1", "once")).await;
    router.publish(&Event::new("always-1", "always")).await;

    // The first attempt times out after 0.2 s, the retry follows 20 ms later.
    let attempts = sub.wait_for_path("/slow-once", 2, PATIENCE).await;
    assert_gaps_early("/slow-once", &attempts, &[ms(220)], ms(25));
    let m = router
        .wait_metric(
            "triggerfish_delivery_attempts_total",
            &[("trigger", "default/slow-once"), ("outcome", "success")],
            1.0,
            PATIENCE,
        )
        .await;
    assert_eq!(
        m.count(
            "triggerfish_delivery_attempts_total",
            &[("trigger", "default/slow-once"), ("outcome", "retryable")]
        ),
        1,
        "the timed-out attempt counts as a retryable failure"
    );
    let label = [("trigger", "default/slow-once"), ("cause", "timeout")];
    assert_eq!(m.count(FAILURES, &label), 1);
    router.wait_log("Transport(Timeout)", PATIENCE).await;

    // Both attempts time out: dead-lettered as a 500 with no response data.
    let dead = dls.wait_for(1, PATIENCE).await;
    let attempts = sub.requests_to("/slow-always");
    assert_eq!(attempts.len(), 2);
    assert_gaps_early("/slow-always", &attempts, &[ms(220)], ms(25));
    assert_eq!(dead[0].id(), "always-1");
    assert_eq!(dead[0].ce("knativeerrorcode").as_deref(), Some("500"));
    assert_eq!(
        dead[0].ce("knativeerrordest"),
        Some(sub.url("/slow-always"))
    );
    assert_eq!(dead[0].header("ce-knativeerrordata"), None);
    // (Less the arrival latency of the last attempt, as in assert_gaps_early.)
    assert!(
        dead[0].at + ms(25) >= attempts[1].at + ms(200),
        "dead-lettered only after the last attempt timed out"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letter_after_the_last_attempt() {
    let sub = Subscriber::start().await;
    let dls = Subscriber::start().await;
    // An error body longer than the 1 KiB knativeerrordata keeps.
    let error_body: Vec<u8> = (0..2000u32).map(|i| (i % 251) as u8).collect();
    let body = bytes::Bytes::from(error_body.clone());
    sub.handle(move |_| Reply::status(500).body("application/octet-stream", body.clone()));
    let config = Config::new().broker("default", None).trigger(
        Trigger::new("t", &sub.url("/fail")).delivery(&format!(
            "retry: 2\nbackoffDelay: PT0.01S\ndeadLetterSink:\n  uri: {}",
            dls.url("/dls")
        )),
    );
    let router = Router::start(&config.render()).await;
    let event = Event::new("dl-1", "com.example.dead")
        .source("/orders")
        .subject("42")
        .attr("myext", "kept")
        .data(serde_json::json!({"order": 42}));
    router.publish(&event).await;

    let dead = dls.wait_for(1, PATIENCE).await;
    let attempts = sub.requests();
    assert_eq!(attempts.len(), 3, "retry: 2 gives 3 attempts, then the DLS");
    assert!(dead[0].at >= attempts[2].at, "after the last attempt");
    let d = &dead[0];
    assert_eq!(d.path, "/dls");
    assert_eq!(d.ce("id").as_deref(), Some("dl-1"));
    assert_eq!(d.ce("type").as_deref(), Some("com.example.dead"));
    assert_eq!(d.ce("source").as_deref(), Some("/orders"));
    assert_eq!(d.ce("subject").as_deref(), Some("42"));
    assert_eq!(d.ce("myext").as_deref(), Some("kept"));
    assert_eq!(d.json(), serde_json::json!({"order": 42}));
    assert_eq!(d.ce("knativeerrordest"), Some(sub.url("/fail")));
    assert_eq!(d.ce("knativeerrorcode").as_deref(), Some("500"));
    let expected_data = base64::engine::general_purpose::STANDARD.encode(&error_body[..1024]);
    assert_eq!(
        d.ce("knativeerrordata"),
        Some(expected_data),
        "base64 of the first KiB of the error body"
    );
    assert_eq!(d.header("ce-knativebrokerttl"), None);
    // Knative's data plane: `Prefer: reply` only where a reply is read.
    assert_eq!(attempts[0].header("prefer"), Some("reply"));
    assert_eq!(
        d.header("prefer"),
        None,
        "a dead letter's reply is not read"
    );

    let m = router
        .wait_metric(
            "triggerfish_delivery_dead_lettered_total",
            &[("trigger", "default/t")],
            1.0,
            PATIENCE,
        )
        .await;
    assert_eq!(m.count("triggerfish_delivery_dropped_total", &[]), 0);
    assert_eq!(dls.count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trigger_delivery_replaces_the_brokers_as_a_whole() {
    let sub = Subscriber::start().await;
    sub.handle(|_| Reply::status(503));
    let dls = Subscriber::start().await;
    let broker_delivery = format!(
        "retry: 3\nbackoffDelay: PT0.01S\ndeadLetterSink:\n  uri: {}",
        dls.url("/broker-dls")
    );
    let config = Config::new()
        .broker("default", Some(&broker_delivery))
        // No delivery: the broker's (4 attempts, the broker's DLS).
        .trigger(Trigger::new("inherits", &sub.url("/inherits")))
        // `delivery: {}` sets nothing and counts as absent.
        .trigger(Trigger::new("empty", &sub.url("/empty")).delivery("{}"))
        // Its own delivery, with its own DLS.
        .trigger(Trigger::new("own", &sub.url("/own")).delivery(&format!(
            "retry: 1\nbackoffDelay: PT0.01S\ndeadLetterSink:\n  uri: {}",
            dls.url("/trigger-dls")
        )))
        // Its own delivery without a DLS: the broker's DLS does not apply either.
        .trigger(
            Trigger::new("no-dls", &sub.url("/no-dls")).delivery("retry: 1\nbackoffDelay: PT0.01S"),
        );
    let router = Router::start(&config.render()).await;
    router.publish(&Event::new("e-1", "t")).await;

    let dead = dls.wait_for(3, PATIENCE).await;
    wait_dropped(&router, 1.0).await;
    let dest_of = |path: &str| -> Vec<String> {
        dead.iter()
            .filter(|r| r.path == path)
            .map(|r| r.ce("knativeerrordest").unwrap_or_default())
            .collect()
    };
    let mut broker_dls = dest_of("/broker-dls");
    broker_dls.sort();
    assert_eq!(broker_dls, vec![sub.url("/empty"), sub.url("/inherits")]);
    assert_eq!(dest_of("/trigger-dls"), vec![sub.url("/own")]);
    for (path, attempts) in [("/inherits", 4), ("/empty", 4), ("/own", 2), ("/no-dls", 2)] {
        assert_eq!(
            sub.requests_to(path).len(),
            attempts,
            "{path}: {:?}",
            sub.summary()
        );
    }
    let m = router.metrics().await;
    assert_eq!(
        m.count(
            "triggerfish_delivery_dropped_total",
            &[("reason", "no_dead_letter_sink")]
        ),
        1
    );
    assert_eq!(dls.count(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_retryable_statuses_go_to_the_dls_after_one_attempt() {
    let sub = Subscriber::start().await;
    sub.handle(|req| match req.path.as_str() {
        "/400" => Reply::status(400).body("text/plain", "bad request: no order id"),
        "/422" => Reply::status(422),
        // Knative retries 404 (a subscriber starting up) and 409.
        "/404" => Reply::status(404),
        _ => Reply::status(409),
    });
    let dls = Subscriber::start().await;
    let delivery = format!(
        "retry: 2\nbackoffDelay: PT0.01S\ndeadLetterSink:\n  uri: {}",
        dls.url("/dls")
    );
    let mut config = Config::new().broker("default", Some(&delivery));
    for status in ["400", "422", "404", "409"] {
        config = config.trigger(Trigger::new(
            &format!("s{status}"),
            &sub.url(&format!("/{status}")),
        ));
    }
    let router = Router::start(&config.render()).await;
    router.publish(&Event::new("e-1", "t")).await;

    let dead = dls.wait_for(4, PATIENCE).await;
    let code_for = |path: &str| -> (String, Option<String>) {
        let d = dead
            .iter()
            .find(|r| r.ce("knativeerrordest") == Some(sub.url(path)))
            .unwrap_or_else(|| panic!("no dead letter from {path}"));
        (
            d.ce("knativeerrorcode").unwrap_or_default(),
            d.ce("knativeerrordata"),
        )
    };
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    assert_eq!(
        code_for("/400"),
        ("400".to_owned(), Some(b64("bad request: no order id")))
    );
    assert_eq!(code_for("/422"), ("422".to_owned(), None));
    assert_eq!(code_for("/404").0, "404");
    assert_eq!(code_for("/409").0, "409");
    for (path, attempts) in [("/400", 1), ("/422", 1), ("/404", 3), ("/409", 3)] {
        assert_eq!(sub.requests_to(path).len(), attempts, "{path}");
    }
    let m = router.metrics().await;
    assert_eq!(
        m.count(
            "triggerfish_delivery_attempts_total",
            &[("outcome", "permanent")]
        ),
        2
    );
    // Each delivery has ended (its dead letter arrived), so these counts are final.
    eventually("the dead letters to be counted", PATIENCE, || async {
        let m = router.metrics().await;
        (m.count("triggerfish_delivery_dead_lettered_total", &[]) == 4).then_some(())
    })
    .await;
    assert_eq!(sub.count(), 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_jitter_stays_within_the_schedule() {
    // Without jitter: 40, 80, then 100 ms (capped) four times, 520 ms in all.
    let (attempts, _router) = attempts_with(
        "retry: 6\nbackoffPolicy: exponential\nbackoffDelay: PT0.02S\nbackoffMax: PT0.1S\njitter: full",
    )
    .await;
    assert_eq!(attempts.len(), 7);
    let bounds = [ms(40), ms(80), ms(100), ms(100), ms(100), ms(100)];
    let actual = gaps(&attempts);
    for (gap, bound) in actual.iter().zip(bounds) {
        assert!(*gap <= bound + SLACK, "gaps {actual:?} exceed {bounds:?}");
    }
    // Uniform in [0, delay]: a total near the maximum would take six draws all near theirs.
    let total: Duration = actual.iter().sum();
    assert!(total < ms(520) * 9 / 10, "gaps {actual:?} look unjittered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transport_errors_and_redirects() {
    let sub = Subscriber::start().await;
    let aborted: Arc<Mutex<usize>> = Arc::default();
    let count = Arc::clone(&aborted);
    sub.handle(move |req| match req.path.as_str() {
        // The connection closes without an answer once, then all is well.
        "/abort-once" => {
            let mut n = count.lock();
            *n += 1;
            if *n == 1 { Reply::abort() } else { Reply::ok() }
        }
        "/abort" => Reply::abort(),
        // Redirects are not followed, and not retried.
        _ => Reply::status(302).header("location", "/elsewhere"),
    });
    let dls = Subscriber::start().await;
    // Nothing listens on this port.
    let closed = format!("http://{}/closed", triggerfish_tests::router::free_port());
    let delivery = format!(
        "retry: 2\nbackoffDelay: PT0.01S\ndeadLetterSink:\n  uri: {}",
        dls.url("/dls")
    );
    let config = Config::new()
        .broker("default", Some(&delivery))
        .trigger(Trigger::new("abort-once", &sub.url("/abort-once")))
        .trigger(Trigger::new("abort", &sub.url("/abort")))
        .trigger(Trigger::new("redirect", &sub.url("/redirect")))
        .trigger(Trigger::new("closed", &closed));
    let router = Router::start(&config.render()).await;
    router.publish(&Event::new("e-1", "t")).await;

    let dead = dls.wait_for(3, PATIENCE).await;
    let by_dest = |dest: &str| {
        dead.iter()
            .find(|r| r.ce("knativeerrordest").as_deref() == Some(dest))
            .unwrap_or_else(|| panic!("no dead letter from {dest}: {:?}", dls.summary()))
    };
    for dest in [sub.url("/abort"), closed.clone()] {
        let d = by_dest(&dest);
        assert_eq!(d.ce("knativeerrorcode").as_deref(), Some("500"), "{dest}");
        assert_eq!(d.header("ce-knativeerrordata"), None, "{dest}");
    }
    assert_eq!(
        by_dest(&sub.url("/redirect"))
            .ce("knativeerrorcode")
            .as_deref(),
        Some("302")
    );
    assert_eq!(
        sub.requests_to("/abort").len(),
        3,
        "transport errors are retried"
    );
    assert_eq!(sub.requests_to("/redirect").len(), 1);
    let once = sub.wait_for_path("/abort-once", 2, PATIENCE).await;
    assert_eq!(once.len(), 2);
    let m = router
        .wait_metric(
            "triggerfish_delivery_attempts_total",
            &[("trigger", "default/abort-once"), ("outcome", "success")],
            1.0,
            PATIENCE,
        )
        .await;
    assert_eq!(dls.count(), 3);
    // Each failed attempt by its cause.
    for (trigger, cause, n) in [
        ("abort-once", "reset", 1),
        ("abort", "reset", 3),
        ("redirect", "http_302", 1),
        ("closed", "connect", 3),
    ] {
        let trigger = format!("default/{trigger}");
        let label = [("trigger", trigger.as_str()), ("cause", cause)];
        assert_eq!(m.count(FAILURES, &label), n, "{trigger}: {}", m.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_in_structured_mode() {
    let sub = Subscriber::start().await;
    sub.handle(|_| Reply::status(503).body("text/plain", "busy"));
    let dls = Subscriber::start().await;
    let config = Config::new().broker("default", None).trigger(
        Trigger::new("t", &sub.url("/fail")).delivery(&format!(
            "format: json\ndeadLetterSink:\n  uri: {}",
            dls.url("/dls")
        )),
    );
    let router = Router::start(&config.render()).await;
    let event = Event::new("s-1", "t")
        .attr("knativebrokerttl", 42)
        .data(serde_json::json!({"x": 1}));
    router.publish(&event).await;
    let dead = dls.wait_for(1, PATIENCE).await;
    assert_eq!(
        sub.requests()[0].header("content-type"),
        Some("application/cloudevents+json")
    );
    let d = &dead[0];
    assert_eq!(
        d.header("content-type"),
        Some("application/cloudevents+json")
    );
    let mut expected = event.json();
    let fields = expected.as_object_mut().unwrap();
    fields.remove("knativebrokerttl");
    fields.insert("knativeerrordest".into(), sub.url("/fail").into());
    // An integer, as Knative sets it.
    fields.insert("knativeerrorcode".into(), 503.into());
    fields.insert(
        "knativeerrordata".into(),
        base64::engine::general_purpose::STANDARD
            .encode("busy")
            .into(),
    );
    let mut received = d.json();
    take_arrival(&mut received);
    assert_eq!(received, expected);
}
