//! Delivery order: `kafka.eventing.knative.dev/delivery.order: ordered` delivers one event at
//! a time per partition key (`partitionkey`, else `source`), in arrival order, retries
//! included; `unordered` (the default) delivers concurrently.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use triggerfish_tests::{
    Config, Event, Options, PATIENCE, Reply, Request, Router, Subscriber, Trigger,
};

/// The partition key of a delivery, as the test set it.
fn key(req: &Request) -> String {
    req.ce("partitionkey")
        .or_else(|| req.ce("source"))
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_delivery_keeps_each_keys_order_through_retries() {
    const KEYS: usize = 4;
    const PER_KEY: usize = 8;
    let sub = Subscriber::start().await;
    // The first attempt of every third event of a key fails (503, or 500 for some), so it is
    // retried while later events of its key wait; every answer takes a few ms, so an overlap
    // would show.
    let failed_once: Arc<Mutex<HashSet<String>>> = Arc::default();
    let failed = Arc::clone(&failed_once);
    sub.handle(move |req| {
        let id = req.id();
        let seq: usize = id.rsplit('-').next().unwrap().parse().unwrap();
        if seq.is_multiple_of(3) && failed.lock().insert(id) {
            Reply::status(if seq.is_multiple_of(2) { 503 } else { 500 })
                .delay(Duration::from_millis(2))
        } else {
            Reply::ok().delay(Duration::from_millis(3))
        }
    });
    let config = Config::new().broker("default", None).trigger(
        Trigger::new("ordered", &sub.url("/ordered"))
            .ordered()
            .delivery("retry: 3\nbackoffPolicy: linear\nbackoffDelay: PT0.02S"),
    );
    // Two shards: keys spread over both, and each key's events still stay in order.
    let router = Router::start_with(
        &config.render(),
        Options {
            shards: 2,
            ..Options::default()
        },
    )
    .await;

    // Interleave the keys, as producers would; k3 is keyed by source (no partitionkey).
    let mut events = Vec::new();
    for i in 0..PER_KEY {
        for k in 0..KEYS {
            let e = Event::new(format!("k{k}-{i}"), "t");
            let e = if k == 3 {
                e.source("k3")
            } else {
                e.attr("partitionkey", format!("k{k}"))
            };
            events.push(e);
        }
    }
    // Send in batches of 4 and singly, so both paths are covered.
    for chunk in events.chunks(4).take(PER_KEY / 2) {
        let r = router
            .client
            .send_batch(&router.broker_url("default"), chunk)
            .await;
        assert_eq!(r.code(), 202, "{}", r.text());
    }
    for e in events.iter().skip(KEYS * PER_KEY / 2) {
        router.publish(e).await;
    }

    let retries = (0..PER_KEY).filter(|i| i.is_multiple_of(3)).count() * KEYS;
    let requests = sub.wait_for(KEYS * PER_KEY + retries, PATIENCE).await;
    sub.wait_answered(requests.len(), PATIENCE).await;

    let mut by_key: BTreeMap<String, Vec<Arc<Request>>> = BTreeMap::new();
    for r in &requests {
        by_key.entry(key(r)).or_default().push(Arc::clone(r));
    }
    assert_eq!(by_key.len(), KEYS, "{:?}", by_key.keys());
    for (k, reqs) in &by_key {
        // Arrival order is the send order, each failed attempt followed by its retry.
        let ids: Vec<String> = reqs.iter().map(|r| r.id()).collect();
        let mut expected = Vec::new();
        for i in 0..PER_KEY {
            let id = format!("{k}-{i}");
            if i.is_multiple_of(3) {
                expected.push(id.clone());
            }
            expected.push(id);
        }
        assert_eq!(ids, expected, "key {k}");
        // One at a time: each request of a key arrives after the previous one was answered.
        for w in reqs.windows(2) {
            let answered = w[0].answered().unwrap();
            assert!(
                w[1].at >= answered,
                "key {k}: {} arrived before {} was answered",
                w[1].id(),
                w[0].id()
            );
        }
    }
    // Keys are independent: some requests of different keys overlapped.
    assert!(
        sub.max_concurrent() > 1,
        "different keys are delivered in parallel"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unordered_delivers_concurrently_and_ordered_does_not() {
    const N: usize = 6;
    let unordered = Subscriber::start().await;
    unordered.handle(|_| Reply::ok().delay(Duration::from_millis(500)));
    let ordered = Subscriber::start().await;
    ordered.handle(|_| Reply::ok().delay(Duration::from_millis(30)));
    let config = Config::new()
        .broker("default", None)
        .trigger(Trigger::new("unordered", &unordered.url("/u")))
        .trigger(Trigger::new("ordered", &ordered.url("/o")).ordered());
    let router = Router::start(&config.render()).await;
    // One key for all: ordered must serialise them, unordered need not.
    let events: Vec<Event> = (0..N)
        .map(|i| Event::new(format!("e-{i}"), "t").attr("partitionkey", "one"))
        .collect();
    let r = router
        .client
        .send_batch(&router.broker_url("default"), &events)
        .await;
    assert_eq!(r.code(), 202, "{}", r.text());

    let u = unordered.wait_for(N, PATIENCE).await;
    // All six arrived while the first was still being answered (500 ms).
    let spread = u.last().unwrap().at - u[0].at;
    assert!(
        spread < Duration::from_millis(450),
        "unordered deliveries should start together, spread {spread:?}"
    );
    unordered.wait_answered(N, PATIENCE).await;
    assert_eq!(unordered.max_concurrent(), N);

    ordered.wait_for(N, PATIENCE).await;
    ordered.wait_answered(N, PATIENCE).await;
    assert_eq!(ordered.max_concurrent(), 1);
    let ids: Vec<String> = ordered.requests().iter().map(|r| r.id()).collect();
    let expected: Vec<String> = (0..N).map(|i| format!("e-{i}")).collect();
    assert_eq!(ids, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_in_flight_bounds_unordered_concurrency() {
    let sub = Subscriber::start().await;
    sub.handle(|_| Reply::ok().delay(Duration::from_millis(50)));
    let config = Config::new()
        .broker("default", None)
        .trigger(Trigger::new("limited", &sub.url("/l")).spec("maxInFlight: 2"));
    let router = Router::start(&config.render()).await;
    let events: Vec<Event> = (0..8).map(|i| Event::new(format!("e-{i}"), "t")).collect();
    let r = router
        .client
        .send_batch(&router.broker_url("default"), &events)
        .await;
    assert_eq!(r.code(), 202, "{}", r.text());
    sub.wait_for(8, PATIENCE).await;
    sub.wait_answered(8, PATIENCE).await;
    assert_eq!(sub.max_concurrent(), 2);
}

/// A reload that changes an ordered trigger's delivery starts a new dispatcher for it while the
/// old one still holds events. The new one delivers nothing before the old one has delivered
/// (or dead-lettered) all of them, so each key's order holds across the reload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_delivery_keeps_each_keys_order_across_a_reload() {
    const PER_RELOAD: usize = 10;
    let sub = Subscriber::start().await;
    // Every event's first attempt fails: the old dispatcher's events are retried one after
    // another, 0.2 s apart, while the new dispatcher's arrive.
    let failed_once: Arc<Mutex<HashSet<String>>> = Arc::default();
    let failed = Arc::clone(&failed_once);
    sub.handle(move |req| {
        if failed.lock().insert(req.id()) {
            Reply::status(503)
        } else {
            Reply::ok()
        }
    });
    let config = |retry: u32| {
        Config::new()
            .broker("default", None)
            .trigger(
                Trigger::new("ordered", &sub.url("/ordered"))
                    .ordered()
                    .delivery(&format!(
                        "retry: {retry}\nbackoffPolicy: linear\nbackoffDelay: PT0.2S"
                    )),
            )
            .render()
    };
    let router = Router::start(&config(5)).await;
    let event = |i: usize| Event::new(format!("e-{i}"), "t").attr("partitionkey", "k");
    for i in 0..PER_RELOAD {
        router.publish(&event(i)).await;
    }
    // A changed retry count: a new dispatcher for the trigger.
    router.reload(&config(6)).await;
    for i in PER_RELOAD..2 * PER_RELOAD {
        router.publish(&event(i)).await;
    }

    let requests = sub.wait_for(4 * PER_RELOAD, PATIENCE).await;
    let ids: Vec<String> = requests.iter().map(|r| r.id()).collect();
    let expected: Vec<String> = (0..2 * PER_RELOAD)
        .flat_map(|i| [format!("e-{i}"), format!("e-{i}")])
        .collect();
    assert_eq!(ids, expected, "each event's attempts, in publishing order");
}
