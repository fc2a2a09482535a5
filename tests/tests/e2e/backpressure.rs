//! Backpressure: with tiny queues and a stalled subscriber, ingress answers 429 with
//! `Retry-After` instead of queueing without bound, and every event it accepted is delivered
//! once the subscriber recovers.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use triggerfish_tests::quic::QuicClient;
use triggerfish_tests::{Config, Event, PATIENCE, Reply, Router, Subscriber, Trigger, eventually};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queues_answer_429_and_lose_nothing() {
    full_queues(Trigger::new("stalled", "").spec("maxInFlight: 1")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queues_answer_429_and_lose_nothing_ordered() {
    // Ordered: every event has the same partition key, so all wait behind the first.
    full_queues(Trigger::new("stalled", "").ordered()).await;
}

/// Stalls `trigger`'s subscriber, fills the queues until ingress answers 429, then lets the
/// subscriber go and checks that every accepted event is delivered once.
async fn full_queues(trigger: Trigger) {
    let sub = Subscriber::start().await;
    sub.handle(|_| Reply::ok().held());
    let config = Config::new()
        .server("queues:\n  shard: {events: 4, bytes: 1MiB}\n  trigger: {events: 2, bytes: 1MiB}\nlimits: {maxBatchEvents: 4, maxRequestBytes: 1MiB}")
        .broker("default", None)
        .trigger(trigger.subscriber(&format!("uri: {}", sub.url("/s"))));
    let router = Router::start(&config.render()).await;
    let url = router.broker_url("default");

    // Fill up: one delivery in flight, the trigger queue (and perhaps the shard queue). Then
    // 429s: five in a row, since nothing drains any more. (A 429 can come early, when a shard
    // driver has not moved an event on yet; the next request may be accepted.)
    let mut accepted = BTreeSet::new();
    let (mut throttled, mut in_a_row) = (0, 0);
    let mut i = 0;
    while in_a_row < 5 {
        i += 1;
        assert!(
            i < 100,
            "no steady 429 after {i} events ({} accepted): the queues are not bounded",
            accepted.len()
        );
        let event = Event::new(format!("e-{i}"), "t").attr("partitionkey", "one");
        let r = router.client.send_binary(&url, &event).await;
        match r.code() {
            202 => {
                in_a_row = 0;
                accepted.insert(event.id().to_owned());
            }
            429 => {
                throttled += 1;
                in_a_row += 1;
                let retry_after = r.header("retry-after").unwrap_or("");
                assert!(
                    retry_after.parse::<u64>().is_ok_and(|s| s >= 1),
                    "429 with Retry-After in seconds, got {retry_after:?}"
                );
                assert!(r.json()["error"].is_string(), "{}", r.text());
            }
            other => panic!("{}: unexpected {other}: {}", event.id(), r.text()),
        }
        if accepted.len() == 1 && throttled == 0 {
            // Let the first event reach the subscriber, so the stall is where we expect.
            sub.wait_for(1, PATIENCE).await;
        }
    }
    // Bounded: 1 in flight, 2 queued for the trigger (whether in its channel or held by its
    // dispatcher, waiting for a delivery slot or behind their key). Its queue full, the trigger
    // is backlogged and ingress refuses its events; at most the 4 that fit in the shard queue
    // (one of which the shard driver holds while it waits for trigger-queue room) can have been
    // accepted before the refusals began. One more may be between the trigger's channel and
    // its dispatcher.
    assert!(
        (3..=8).contains(&accepted.len()),
        "accepted {} before the first 429",
        accepted.len()
    );
    // A batch that does not fit is refused whole.
    let batch: Vec<Event> = (0..3)
        .map(|j| Event::new(format!("b-{j}"), "t").attr("partitionkey", "one"))
        .collect();
    let r = router.client.send_batch(&url, &batch).await;
    assert_eq!(r.code(), 429, "{}", r.text());

    let m = router.metrics().await;
    let refused = |outcome| {
        m.count(
            "triggerfish_ingress_requests_total",
            &[("outcome", outcome)],
        )
    };
    assert_eq!(refused("throttled") + refused("backlogged"), throttled + 1);
    assert_eq!(sub.count(), 1, "still stalled on the first event");

    // Recovery: every accepted event is delivered exactly once, and nothing else.
    sub.release();
    let got = sub.wait_for(accepted.len(), PATIENCE).await;
    sub.wait_answered(accepted.len(), PATIENCE).await;
    let ids: Vec<String> = got.iter().map(|r| r.id()).collect();
    let unique: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), unique.len(), "duplicates: {ids:?}");
    assert_eq!(unique, accepted);

    // And ingress takes events again.
    let late = Event::new("late", "t");
    eventually("ingress to accept again", PATIENCE, || async {
        let r = router.client.send_binary(&url, &late).await;
        (r.code() == 202).then_some(())
    })
    .await;
    let got = sub.wait_for(accepted.len() + 1, PATIENCE).await;
    assert_eq!(got.last().unwrap().id(), "late");
    assert_eq!(
        router
            .metrics()
            .await
            .count("triggerfish_delivery_dropped_total", &[]),
        0
    );
}

/// A subscriber that stops answering holds up its own trigger and no other: once that
/// trigger's queue is three quarters full, ingress refuses (429, naming the trigger) the
/// events it matches, and the other triggers' events, on the same single shard, keep flowing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_trigger_does_not_hold_up_the_others() {
    let slow = Subscriber::start().await;
    slow.handle(|_| Reply::ok().held());
    let fast = Subscriber::start().await;
    let config = Config::new()
        .server("shards: 1\nqueues:\n  trigger: {events: 8, bytes: 1MiB}")
        .broker("default", None)
        .trigger(
            Trigger::new("slow", &slow.url("/slow"))
                .of_type("slow")
                .spec("maxInFlight: 1"),
        )
        .trigger(Trigger::new("fast", &fast.url("/fast")).of_type("fast"));
    let router = Router::start(&config.render()).await;
    let url = router.broker_url("default");
    let handle = &router;
    let matched = |trigger: &'static str| async move {
        let m = handle.metrics().await;
        m.count("triggerfish_trigger_matches_total", &[("trigger", trigger)])
    };

    // One in flight, then the queue fills; each event is routed before the next is sent, so
    // the refusals begin when 7 of the 8 places are taken.
    let mut accepted = Vec::new();
    let refusal = loop {
        let i = accepted.len();
        assert!(
            i < 20,
            "no 429 after {i} events: the stalled trigger is not refused"
        );
        let event = Event::new(format!("s-{i}"), "slow");
        let r = router.client.send_binary(&url, &event).await;
        match r.code() {
            202 => accepted.push(event.id().to_owned()),
            429 => break r,
            other => panic!("{}: unexpected {other}: {}", event.id(), r.text()),
        }
        eventually("the event to reach its trigger", PATIENCE, || async {
            (matched("default/slow").await == accepted.len() as u64).then_some(())
        })
        .await;
        if i == 0 {
            slow.wait_for(1, PATIENCE).await;
        }
    };
    // 1 in flight and 7 queued; one more if it was decoded before the flag was up (a match
    // is counted just before its event is queued).
    assert!(
        (8..=9).contains(&accepted.len()),
        "1 in flight and 7 queued: {accepted:?}"
    );
    assert_eq!(refusal.header("retry-after"), Some("1"));
    let body = refusal.json();
    assert!(
        body["error"].as_str().unwrap().contains("default/slow"),
        "{body}"
    );
    assert_eq!(body["events"][0]["index"], 0, "{body}");

    // The other trigger's events are taken and delivered while the stall goes on. (Its queue
    // is as small, so on a busy machine it may be backlogged for a moment itself: such an
    // event is sent again, as a producer would after `Retry-After`.)
    let target = url.as_str();
    let accept = |event: Event| async move {
        eventually(
            "the fast trigger's event to be accepted",
            PATIENCE,
            || async {
                let r = handle.client.send_binary(target, &event).await;
                match r.code() {
                    202 => Some(()),
                    429 if r.text().contains("default/fast") => None,
                    other => panic!("{}: unexpected {other}: {}", event.id(), r.text()),
                }
            },
        )
        .await;
    };
    for i in 0..20 {
        accept(Event::new(format!("f-{i}"), "fast")).await;
    }
    fast.wait_for(20, PATIENCE).await;
    // A batch is refused whole when one of its events matches the stalled trigger, and the
    // answer says which.
    let mixed = [Event::new("m-0", "fast"), Event::new("m-1", "slow")];
    let events = eventually(
        "a 429 naming only the slow trigger's event",
        PATIENCE,
        || async {
            let r = handle.client.send_batch(&url, &mixed).await;
            assert_eq!(r.code(), 429, "{}", r.text());
            let events = r.json()["events"].clone();
            (events.as_array().map(Vec::len) == Some(1)).then_some(events)
        },
    )
    .await;
    assert_eq!(events[0]["index"], 1, "{events}");
    // QUIC ingress refuses the same frame the same way, and takes the other trigger's.
    let quic = QuicClient::connect(router.quic, &router.quic_cert()).await;
    let ack = quic.publish("default/default", &mixed).await.ack();
    assert_eq!((ack.status, ack.accepted), (429, 0), "{ack:?}");
    assert!(ack.retry_after_ms >= 1000, "{ack:?}");
    assert!(ack.message.contains("default/slow"), "{ack:?}");
    eventually(
        "QUIC ingress to take the fast trigger's event",
        PATIENCE,
        || async {
            let ack = quic.publish("default/default", &mixed[..1]).await.ack();
            match (ack.status, ack.accepted) {
                (202, 1) => Some(()),
                (429, 0) if ack.message.contains("default/fast") => None,
                _ => panic!("{ack:?}"),
            }
        },
    )
    .await;
    fast.wait_for(21, PATIENCE).await;
    assert_eq!(slow.count(), 1, "still stalled on the first event");
    let m = router.metrics().await;
    assert!(
        m.count(
            "triggerfish_ingress_requests_total",
            &[("outcome", "backlogged")]
        ) >= 3
    );
    assert_eq!(
        m.count(
            "triggerfish_trigger_backlogs_total",
            &[("trigger", "default/slow")]
        ),
        1
    );
    let logs = router.wait_log("trigger is falling behind", PATIENCE).await;
    assert!(logs.contains("default/slow"), "{logs}");

    // Once the subscriber answers again, every accepted event arrives and the trigger takes
    // events again.
    slow.release();
    slow.wait_for(accepted.len(), PATIENCE).await;
    let late = Event::new("late", "slow");
    eventually(
        "ingress to accept the slow trigger's events again",
        PATIENCE,
        || async {
            let r = router.client.send_binary(&url, &late).await;
            (r.code() == 202).then_some(())
        },
    )
    .await;
    let got = slow.wait_for(accepted.len() + 1, PATIENCE).await;
    let ids: BTreeSet<String> = got.iter().map(|r| r.id()).collect();
    assert_eq!(ids.len(), accepted.len() + 1, "each event once");
    assert!(ids.contains("late"));
    assert_eq!(fast.count(), 21);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_too_big_for_any_shard_is_never_throttled() {
    // 429 means "retry later and it will fit". A batch larger than a shard queue can ever
    // hold (all its events share a key, so they share a shard) would get 429 forever: the
    // config must rule it out (queues.shard.events >= limits.maxBatchEvents, and
    // queues.shard.bytes >= limits.maxRequestBytes), so that ingress answers 413 instead.
    let dir = tempfile::tempdir().unwrap();
    let too_small = Config::new()
        .server("queues:\n  shard: {events: 4, bytes: 1MiB}")
        .broker("default", None)
        .render();
    let path = dir.path().join("c.yaml");
    std::fs::write(&path, &too_small).unwrap();
    let out = triggerfish_tests::run_cli(
        dir.path(),
        &["validate", "--config", path.to_str().unwrap()],
        None,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("spec.queues.shard.events") && stderr.contains("maxBatchEvents"),
        "{stderr}"
    );
    assert!(
        stderr.contains("spec.queues.shard.bytes") && stderr.contains("maxRequestBytes"),
        "{stderr}"
    );

    // Consistent limits: the oversized batch gets 413, an idle router takes one that fits.
    let sub = Subscriber::start().await;
    let config = Config::new()
        .server("queues:\n  shard: {events: 4, bytes: 1MiB}\nlimits: {maxBatchEvents: 4, maxRequestBytes: 1MiB}")
        .broker("default", None)
        .trigger(Trigger::new("t", &sub.url("/t")));
    let router = Router::start(&config.render()).await;
    let batch = |n: usize| -> Vec<Event> {
        (0..n)
            .map(|i| Event::new(format!("e-{i}"), "t").attr("partitionkey", "one"))
            .collect()
    };
    let r = router
        .client
        .send_batch(&router.broker_url("default"), &batch(5))
        .await;
    assert_eq!(r.code(), 413, "{}", r.text());
    let r = router
        .client
        .send_batch(&router.broker_url("default"), &batch(4))
        .await;
    assert_eq!(r.code(), 202, "{}", r.text());
    sub.wait_for(4, PATIENCE).await;
}

/// A trigger that forwards to another broker meets that broker's backpressure. While the
/// queue of the trigger there is full, a forward waits at most the forwarding trigger's
/// `timeout` (it used to wait for good, in the shard queue, where the shard driver then waited
/// on the full queue), then counts as an attempt answered 429, and the event goes to the
/// dead-letter sink with the broker as `knativeerrordest`. Nothing is lost: every event
/// reaches the stalled subscriber or the dead-letter sink. Forwards are spaced out (20 a
/// second, one at a time): the queue's fullness is checked, not reserved, so forwards that
/// check it before the shard driver has moved the earlier ones in all find room, and wait in
/// the shard instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_into_a_full_trigger_queue_is_refused_and_dead_lettered() {
    let sub = Subscriber::start().await;
    sub.handle(|req| {
        if req.path == "/stalled" {
            Reply::ok().held()
        } else {
            Reply::ok()
        }
    });
    let config = Config::new()
        .server("queues:\n  shard: {events: 64, bytes: 1MiB}\n  trigger: {events: 8, bytes: 1MiB}\nlimits: {maxBatchEvents: 32, maxRequestBytes: 1MiB}")
        .broker("default", None)
        .broker("downstream", None)
        .trigger(
            Trigger::new("forward", "")
                .subscriber("ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: downstream}")
                .delivery(&format!("timeout: PT0.3S\ndeadLetterSink:\n  uri: {}", sub.url("/dls")))
                .spec("maxInFlight: 1\nrateLimit: {eventsPerSecond: 20, burst: 1}"),
        )
        .trigger(
            Trigger::new("stalled", &sub.url("/stalled"))
                .broker("downstream")
                .spec("maxInFlight: 1"),
        );
    let router = Router::start(&config.render()).await;
    let events: Vec<Event> = (0..20).map(|i| Event::new(format!("e-{i}"), "t")).collect();
    router.publish_batches(&events).await;

    let dead = sub.wait_for_path("/dls", 1, PATIENCE).await;
    dead[0].assert_dead_letter(
        "broker:default/downstream",
        "429",
        "match trigger default/stalled, whose queue was still full after",
    );

    sub.release();
    eventually(
        "every event at the subscriber or the dead-letter sink",
        PATIENCE,
        || {
            let ids: BTreeSet<String> = sub
                .requests()
                .iter()
                .filter(|r| r.path == "/stalled" || r.path == "/dls")
                .map(|r| r.id())
                .collect();
            std::future::ready((ids.len() == 20).then_some(()))
        },
    )
    .await;
}

/// Two triggers that both forward `loop` events into their own broker: each forward yields two,
/// so their queues fill. A forward that the full queue of its own trigger would take is refused
/// at once (only that trigger's deliveries make room there) instead of waiting out the
/// trigger's `timeout`, and is dead-lettered; other events keep flowing meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forward_loop_into_its_own_broker_is_refused_at_once() {
    let sub = Subscriber::start().await;
    let forward = |name: &str| {
        Trigger::new(name, "")
            .subscriber("ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}")
            .of_type("loop")
            // Patience a refusal that waited would show: far longer than the test's deadline.
            .delivery(&format!(
                "timeout: PT60S\ndeadLetterSink:\n  uri: {}",
                sub.url("/dls")
            ))
            .spec("maxInFlight: 2")
    };
    let config = Config::new()
        .server("queues:\n  shard: {events: 64, bytes: 1MiB}\n  trigger: {events: 8, bytes: 1MiB}\nlimits: {maxBatchEvents: 32, maxRequestBytes: 1MiB}")
        .broker("default", None)
        .trigger(forward("fwd-a"))
        .trigger(forward("fwd-b"))
        .trigger(
            Trigger::new("other", &sub.url("/other"))
                .of_type("other"),
        );
    let router = Router::start(&config.render()).await;
    let started = std::time::Instant::now();
    router.publish(&Event::new("seed", "loop")).await;

    let dead = sub.wait_for_path("/dls", 1, PATIENCE).await;
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "refused before the 60 s timeout ran out: {:?}",
        started.elapsed()
    );
    dead[0].assert_dead_letter(
        "broker:default/default",
        "429",
        "which published them and whose queue is full",
    );

    // The loop keeps the shard queue busy, so ingress may answer 429 at times.
    for i in 0..20 {
        let event = Event::new(format!("o-{i}"), "other");
        router.publish_patiently(&[event]).await;
    }
    sub.wait_for_path("/other", 20, PATIENCE).await;
}

/// The config check promises that a request of `maxRequestBytes` fits an idle shard queue of
/// that many bytes. What ingress adds to each event (`knativearrivaltime`, the request's trace
/// context) must not break that promise: a traced batch of many small events, filling the
/// request, is accepted, not refused with a 429 that no retry could get past.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_of_the_largest_size_fits_a_shard_queue_of_that_size() {
    const LIMIT: usize = 64 * 1024;
    let sub = Subscriber::start_counting().await;
    let config = Config::new()
        .server(
            "queues:\n  shard: {events: 4096, bytes: 64KiB}\n  trigger: {events: 4096, bytes: 64KiB}\n\
             limits: {maxRequestBytes: 64KiB, maxEventBytes: 16KiB, maxBatchEvents: 4096}",
        )
        .broker("default", None)
        .trigger(Trigger::new("t", &sub.url("/t")));
    let router = Router::start(&config.render()).await;
    // One partition key, so one shard; as many events as the request holds.
    let mut events: Vec<Event> = Vec::new();
    loop {
        let next = Event::new(format!("e-{}", events.len()), "t").attr("partitionkey", "one");
        events.push(next);
        if triggerfish_tests::event::batch(&events).len() > LIMIT {
            events.pop();
            break;
        }
    }
    let size = triggerfish_tests::event::batch(&events).len();
    assert!(size > LIMIT - 200, "{size}");
    // Traced, too: the request's context becomes each event's extension.
    let traced = [(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )];
    let r = router
        .client
        .send_batch_with(&router.broker_url("default"), &events, &traced)
        .await;
    assert_eq!(
        r.code(),
        202,
        "{} events, {size} bytes: {}",
        events.len(),
        r.text()
    );
    eventually("every event delivered", PATIENCE, || async {
        (sub.count() == events.len()).then_some(())
    })
    .await;
}
