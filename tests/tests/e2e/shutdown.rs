//! Graceful shutdown on SIGTERM: `/readyz` fails and new events get 503 with `Retry-After`
//! at once, while everything already accepted is still delivered before the process exits.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use triggerfish_tests::{Config, Event, PATIENCE, Reply, Router, Subscriber, Trigger};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_accepted_events_and_refuses_new_ones() {
    const N: usize = 6;
    let sub = Subscriber::start().await;
    sub.handle(|_| Reply::ok().delay(Duration::from_millis(300)));
    let config = Config::new()
        .server("shutdownGracePeriod: PT20S")
        .broker("default", None)
        // Two at a time: while the first two are in flight, four wait in the queue.
        .trigger(Trigger::new("slow", &sub.url("/slow")).spec("maxInFlight: 2"));
    let mut router = Router::start(&config.render()).await;
    let events: Vec<Event> = (0..N).map(|i| Event::new(format!("e-{i}"), "t")).collect();
    let r = router
        .client
        .send_batch(&router.broker_url("default"), &events)
        .await;
    assert_eq!(r.code(), 202, "{}", r.text());
    sub.wait_for(2, PATIENCE).await;

    router.sigterm();
    router.wait_log("shutting down", PATIENCE).await;

    // Not ready any more, and new events are refused with 503 + Retry-After, not dropped
    // and not left hanging: a load balancer or producer retries them elsewhere or later.
    let ready = router
        .readyz()
        .await
        .expect("the admin listener answers while draining");
    assert_eq!(ready.code(), 503, "{}", ready.text());
    let late = router
        .client
        .try_request(
            http::Method::POST,
            &router.broker_url("default"),
            &Event::new("late", "t").binary().0,
            bytes::Bytes::new(),
        )
        .await;
    match late {
        Ok(r) => {
            assert_eq!(r.code(), 503, "{}", r.text());
            assert!(r.header("retry-after").is_some());
        }
        Err(e) => panic!("a new request during the drain got no answer: {e}"),
    }
    // The same from a new connection.
    let fresh = triggerfish_tests::Client::new()
        .try_request(
            http::Method::POST,
            &router.broker_url("default"),
            &Event::new("late-2", "t").binary().0,
            bytes::Bytes::new(),
        )
        .await;
    match fresh {
        Ok(r) => assert_eq!(r.code(), 503, "{}", r.text()),
        Err(e) => panic!("a new connection during the drain got no answer: {e}"),
    }

    // Everything accepted before the signal is delivered, then the process exits cleanly.
    let status = router.wait_exit(PATIENCE).await;
    assert!(status.success(), "exit status {status}");
    sub.wait_answered(N, Duration::from_secs(1)).await;
    let mut ids: Vec<String> = sub.requests().iter().map(|r| r.id()).collect();
    ids.sort();
    let expected: Vec<String> = (0..N).map(|i| format!("e-{i}")).collect();
    assert_eq!(
        ids, expected,
        "no late event got in, no accepted one was lost"
    );
    let logs = router.stderr();
    assert!(logs.contains("all accepted events were handled"), "{logs}");
    assert!(!logs.contains("are lost"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_made_while_draining_are_delivered() {
    let sub = Subscriber::start().await;
    sub.handle(|req| match req.path.as_str() {
        // Slow, and answers with a reply event for the second trigger.
        "/first" => Reply::event_binary(&Event::new(format!("{}-reply", req.id()), "second"))
            .delay(Duration::from_millis(400)),
        _ => Reply::ok(),
    });
    let config = Config::new()
        .server("shutdownGracePeriod: PT20S")
        .broker("default", None)
        .trigger(Trigger::new("first", &sub.url("/first")).of_type("first"))
        .trigger(Trigger::new("second", &sub.url("/second")).of_type("second"));
    let mut router = Router::start(&config.render()).await;
    router.publish(&Event::new("e-1", "first")).await;
    sub.wait_for(1, PATIENCE).await;

    // The reply comes back after the signal: it was accepted into the broker by the router
    // itself, so the drain must route and deliver it too.
    router.sigterm();
    let status = router.wait_exit(PATIENCE).await;
    assert!(status.success(), "exit status {status}");
    let second = sub.requests_to("/second");
    assert_eq!(
        second.iter().map(|r| r.id()).collect::<Vec<_>>(),
        ["e-1-reply"],
        "the reply was lost in the drain:\n{}",
        router.stderr()
    );
    assert!(!router.stderr().contains("are lost"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_grace_period_cannot_drain_is_reported() {
    let sub = Subscriber::start().await;
    sub.handle(|_| Reply::ok().held());
    let config = Config::new()
        .server("shutdownGracePeriod: PT0.5S")
        .broker("default", None)
        .trigger(Trigger::new("stuck", &sub.url("/stuck")).spec("maxInFlight: 1"));
    let mut router = Router::start(&config.render()).await;
    publish_three_and_hold_one(&router, &sub).await;

    let logs = stop_and_release(&mut router, &sub).await;
    assert!(
        logs.contains("shutdown grace period over") && logs.contains("are lost"),
        "the loss is logged: {logs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_queues_behind_busy_dispatchers() {
    // Events wait in places other than the trigger queues: behind an ordered key's delivery
    // in flight, in an unordered dispatcher waiting for a free slot (maxInFlight: 1), and in
    // a batch being gathered behind the one batch in flight (maxInFlight of one batch). The
    // drain must count them as undelivered until each is delivered.
    const N: usize = 150;
    let sub = Subscriber::start().await;
    sub.handle(|req| match req.path.as_str() {
        "/batched" => Reply::ok().delay(Duration::from_millis(50)),
        _ => Reply::ok(),
    });
    let config = Config::new()
        .server("shutdownGracePeriod: PT20S")
        .broker("default", None)
        .trigger(Trigger::new("ordered", &sub.url("/ordered")).ordered())
        .trigger(Trigger::new("one-slot", &sub.url("/one-slot")).spec("maxInFlight: 1"))
        .trigger(
            Trigger::new("batched", &sub.url("/batched"))
                .spec("batch: {maxEvents: 10, linger: PT0.05S}")
                .spec("maxInFlight: 10"),
        );
    let mut router = Router::start(&config.render()).await;
    let events: Vec<Event> = (0..N)
        .map(|i| Event::new(format!("e-{i}"), "t").attr("partitionkey", "one"))
        .collect();
    let r = router
        .client
        .send_batch(&router.broker_url("default"), &events)
        .await;
    assert_eq!(r.code(), 202, "{}", r.text());
    router.sigterm();
    let status = router.wait_exit(PATIENCE).await;
    assert!(status.success(), "exit status {status}");
    for path in ["/ordered", "/one-slot"] {
        assert_eq!(
            sub.requests_to(path).len(),
            N,
            "{path}: delivered before exit\n{}",
            router.stderr()
        );
    }
    let batches = sub.requests_to("/batched");
    let mut ids: Vec<String> = batches
        .iter()
        .flat_map(|r| match r.json() {
            serde_json::Value::Array(events) => events,
            other => panic!("not a batch: {other}"),
        })
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), N, "/batched: delivered before exit");
    assert!(batches.len() >= N / 10, "in batches of at most 10");
    assert!(
        router.stderr().contains("all accepted events were handled"),
        "{}",
        router.stderr()
    );
}

/// A reload that changes a trigger's delivery starts a new dispatcher; the old one drains
/// what it holds outside the routing snapshot. Shutdown waits for those events too, and
/// reports them when the grace period runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_replaced_dispatcher_holds_is_waited_for_and_reported() {
    let sub = Subscriber::start().await;
    sub.handle(|_| Reply::ok().held());
    let config = |timeout: &str| {
        Config::new()
            .server("shutdownGracePeriod: PT0.5S")
            .broker("default", None)
            .trigger(
                Trigger::new("stuck", &sub.url("/stuck"))
                    .spec("maxInFlight: 1")
                    .delivery(&format!("timeout: {timeout}")),
            )
            .render()
    };
    let mut router = Router::start(&config("PT60S")).await;
    publish_three_and_hold_one(&router, &sub).await;
    // A changed delivery: a new dispatcher, while the old one holds one event in flight and
    // two queued.
    router.reload(&config("PT50S")).await;

    let logs = stop_and_release(&mut router, &sub).await;
    assert!(
        logs.contains("shutdown grace period over")
            && logs.contains("trigger_queues=2 in_flight=1"),
        "the replaced dispatcher's events are counted: {logs}"
    );
}

/// Publishes three events to a trigger whose subscriber holds every request, and waits until
/// the first is held.
async fn publish_three_and_hold_one(router: &Router, sub: &Subscriber) {
    let events: Vec<Event> = (0..3).map(|i| Event::new(format!("e-{i}"), "t")).collect();
    let r = router
        .client
        .send_batch(&router.broker_url("default"), &events)
        .await;
    assert_eq!(r.code(), 202, "{}", r.text());
    sub.wait_for(1, PATIENCE).await;
}

/// Sends SIGTERM, waits for a clean exit, releases the held requests and returns the
/// router's log.
async fn stop_and_release(router: &mut Router, sub: &Subscriber) -> String {
    router.sigterm();
    let status = router.wait_exit(PATIENCE).await;
    sub.release();
    assert!(status.success(), "exit status {status}");
    router.stderr()
}
