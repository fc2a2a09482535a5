//! `spec.batch` on an HTTP subscriber: CloudEvents batched content mode. Events that are ready
//! together arrive as one `application/cloudevents-batch+json` request, each exactly once and
//! without the broker's ttl extension; a failed batch is retried and dead-lettered per event
//! with the batch's status and body; a batch of replies re-enters the broker; an ordered
//! trigger still delivers one event per key at a time, in order.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};
use triggerfish_tests::{Config, Event, PATIENCE, Reply, Request, Router, Subscriber, Trigger};

const BATCH: &str = "application/cloudevents-batch+json";

/// The events of a batched-mode request.
fn events_of(req: &Request) -> Vec<Value> {
    assert_eq!(req.header("content-type"), Some(BATCH), "{}", req.path);
    match req.json() {
        Value::Array(events) => events,
        other => panic!("not a batch: {other}"),
    }
}

/// Waits until the requests to `path` carry `n` events, and returns the requests.
async fn wait_events(sub: &Subscriber, path: &str, n: usize) -> Vec<std::sync::Arc<Request>> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let requests = sub.requests_to(path);
        let got: usize = requests.iter().map(|r| events_of(r).len()).sum();
        if got >= n || tokio::time::Instant::now() > deadline {
            assert_eq!(got, n, "events delivered to {path}");
            return requests;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn id(event: &Value) -> String {
    event["id"].as_str().unwrap().to_owned()
}

/// Publishes `n` events of type `ty` with ids `{ty}-0`…, each changed by `each`.
async fn publish(router: &Router, ty: &str, n: usize, each: impl Fn(Event) -> Event) {
    let events: Vec<Event> = (0..n)
        .map(|i| each(Event::new(format!("{ty}-{i}"), ty)))
        .collect();
    router.publish_batches(&events).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_delivery_keeps_knative_semantics_per_event() {
    let sub = Subscriber::start().await;
    let dls = Subscriber::start().await;
    sub.handle(|req| match req.path.as_str() {
        "/fail" => Reply::status(500).body("text/plain", "batch refused"),
        "/ask" => {
            let answers: Vec<Value> = events_of(req)
                .iter()
                .map(|e| {
                    json!({"specversion": "1.0", "id": format!("{}-answer", id(e)),
                           "source": "/answers", "type": "answer"})
                })
                .collect();
            Reply::ok().body(BATCH, serde_json::to_vec(&answers).unwrap())
        }
        _ => Reply::ok(),
    });
    let batch = "batch: {maxEvents: 40, linger: PT0.05S}";
    let config = Config::new()
        .broker("default", None)
        .trigger(Trigger::new("t", &sub.url("/t")).of_type("t").spec(batch))
        .trigger(
            Trigger::new("fail", &sub.url("/fail"))
                .of_type("fail")
                .delivery(&format!(
                    "retry: 1\nbackoffDelay: PT0.05S\ndeadLetterSink:\n  uri: {}",
                    dls.url("/dls")
                ))
                .spec(batch),
        )
        .trigger(
            Trigger::new("ask", &sub.url("/ask"))
                .of_type("ask")
                .spec(batch),
        )
        .trigger(Trigger::new("answers", &sub.url("/answers")).of_type("answer"));
    let router = Router::start(&config.render()).await;

    // Every event once, in batches of at most 40, several events per request.
    let n = 300;
    publish(&router, "t", n, |e| e.data(json!({"n": 1}))).await;
    let requests = wait_events(&sub, "/t", n).await;
    let mut counts: HashMap<String, usize> = HashMap::new();
    for r in &requests {
        assert_eq!(r.header("prefer"), Some("reply"));
        let events = events_of(r);
        assert!(events.len() <= 40, "{} events in one request", events.len());
        for e in events {
            assert_eq!(e["data"], json!({"n": 1}));
            assert!(e.get("knativebrokerttl").is_none(), "{e}");
            *counts.entry(id(&e)).or_default() += 1;
        }
    }
    assert_eq!(counts.len(), n);
    assert!(counts.values().all(|c| *c == 1), "each event once");
    assert!(
        requests.len() < n / 2,
        "{} requests for {n} events: not batched",
        requests.len()
    );

    // A refused batch: every event retried, then dead-lettered alone with the batch's answer.
    let failing = 60;
    publish(&router, "fail", failing, |e| e).await;
    let dead = dls.wait_for(failing, PATIENCE).await;
    let data = base64::engine::general_purpose::STANDARD.encode("batch refused");
    let mut dead_ids: Vec<String> = dead.iter().map(|d| d.id()).collect();
    dead_ids.sort();
    dead_ids.dedup();
    assert_eq!(dead_ids.len(), failing, "each event dead-lettered once");
    for d in &dead {
        assert_eq!(d.ce("knativeerrorcode").as_deref(), Some("500"));
        assert_eq!(d.ce("knativeerrordata"), Some(data.clone()));
    }
    let attempts = wait_events(&sub, "/fail", 2 * failing).await;
    assert!(attempts.len() < failing, "the retries were batched too");

    // A batch of replies re-enters the broker: one answer per question.
    let asked = 80;
    publish(&router, "ask", asked, |e| e).await;
    let answers = sub.wait_for_path("/answers", asked, PATIENCE).await;
    let mut answer_ids: Vec<String> = answers.iter().map(|a| a.id()).collect();
    answer_ids.sort();
    answer_ids.dedup();
    assert_eq!(answer_ids.len(), asked);
    assert!(answer_ids.iter().all(|a| a.ends_with("-answer")));

    let m = router.metrics().await;
    let ok = [("trigger", "default/t"), ("outcome", "success")];
    assert_eq!(
        m.count("triggerfish_delivery_attempts_total", &ok),
        n as u64
    );
    assert_eq!(
        m.count(
            "triggerfish_delivery_dead_lettered_total",
            &[("trigger", "default/fail")]
        ),
        failing as u64
    );
    assert_eq!(m.count("triggerfish_delivery_dropped_total", &[]), 0);
    // Batch sizes: one observation per request, summing to the events; none for the trigger
    // that gets one event per request.
    let t = [("trigger", "default/t")];
    let batches = "triggerfish_delivery_batch_events_count";
    assert_eq!(m.count(batches, &t), requests.len() as u64);
    assert_eq!(
        m.count("triggerfish_delivery_batch_events_sum", &t),
        n as u64
    );
    let unbatched = m.samples().into_iter().any(|s| {
        s.name.starts_with("triggerfish_delivery_batch_events")
            && s.labels.iter().any(|(_, v)| v == "default/answers")
    });
    assert!(!unbatched, "{}", m.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ordered_batched_trigger_keeps_each_keys_order() {
    let sub = Subscriber::start().await;
    // Every third request fails once: its events are retried before their keys move on.
    sub.handle(|req| {
        if req.seq % 3 == 1 {
            Reply::status(503)
        } else {
            Reply::ok().delay(Duration::from_millis(5))
        }
    });
    let config = Config::new().broker("default", None).trigger(
        Trigger::new("t", &sub.url("/t"))
            .ordered()
            .delivery("retry: 5\nbackoffDelay: PT0.01S")
            .spec("batch: {maxEvents: 100, linger: PT0.01S}"),
    );
    let router = Router::start(&config.render()).await;
    let (keys, per_key) = (5, 30);
    let events: Vec<Event> = (0..per_key)
        .flat_map(|i| {
            (0..keys).map(move |k| {
                Event::new(format!("k{k}-{i}"), "t").attr("partitionkey", format!("k{k}"))
            })
        })
        .collect();
    router.publish_batches(&events).await;
    let requests = wait_events_ok(&sub, keys * per_key).await;
    // Per key: accepted deliveries in publication order, and never two of a key in one batch.
    let mut next: HashMap<String, usize> = HashMap::new();
    for r in requests {
        let events = events_of(&r);
        let mut seen = std::collections::HashSet::new();
        for e in &events {
            let key = e["partitionkey"].as_str().unwrap().to_owned();
            assert!(seen.insert(key.clone()), "two events of {key} in one batch");
            let expected = next.entry(key.clone()).or_default();
            assert_eq!(id(e), format!("{key}-{expected}"), "order of {key}");
            *expected += 1;
        }
    }
    assert!(next.values().all(|n| *n == per_key), "{next:?}");
}

/// Waits until the answered-with-success requests carry `n` events; returns them in arrival
/// order.
async fn wait_events_ok(sub: &Subscriber, n: usize) -> Vec<std::sync::Arc<Request>> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let ok: Vec<_> = sub
            .requests()
            .into_iter()
            .filter(|r| r.seq % 3 != 1)
            .collect();
        let got: usize = ok.iter().map(|r| events_of(r).len()).sum();
        if got >= n || tokio::time::Instant::now() > deadline {
            assert_eq!(got, n, "events delivered");
            return ok;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_that_times_out_is_retried_without_holding_up_the_others() {
    let sub = Subscriber::start().await;
    // The first batch is answered only after the attempts' timeout; the others at once.
    sub.script([Reply::ok().delay(Duration::from_secs(3))]);
    let config = Config::new().broker("default", None).trigger(
        Trigger::new("t", &sub.url("/t"))
            .delivery("timeout: PT0.5S\nretry: 3\nbackoffDelay: PT0.05S")
            .spec("batch: {maxEvents: 10, linger: PT0.05S}"),
    );
    let router = Router::start(&config.render()).await;
    let n = 40;
    publish(&router, "t", n, |e| e).await;
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let answered = loop {
        let answered: Vec<String> = sub
            .requests()
            .iter()
            .filter(|r| r.seq > 0)
            .flat_map(|r| events_of(r).iter().map(id).collect::<Vec<_>>())
            .collect();
        if answered.len() >= n || tokio::time::Instant::now() > deadline {
            break answered;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let first: Vec<String> = events_of(&sub.requests()[0]).iter().map(id).collect();
    assert!(!first.is_empty());
    let mut unique = answered.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), n, "every event answered: {answered:?}");
    assert_eq!(answered.len(), n, "and once, after the timed-out batch");
    // The timed-out batch's events were retried well before its late answer (3 s).
    let requests = sub.requests();
    let retried = requests
        .iter()
        .find(|r| r.seq > 0 && events_of(r).iter().any(|e| first.contains(&id(e))))
        .unwrap();
    assert!(retried.at.duration_since(requests[0].at) < Duration::from_secs(2));
    let m = router.metrics().await;
    let timeouts = [("trigger", "default/t"), ("outcome", "retryable")];
    assert_eq!(
        m.count("triggerfish_delivery_attempts_total", &timeouts),
        first.len() as u64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_limited_batched_trigger_spends_a_token_per_event() {
    let sub = Subscriber::start().await;
    // Batches of up to 50 events against a burst of 10 and 100 events/s: each batch waits
    // until its tokens have come in, 10 at a time.
    let config = Config::new().broker("default", None).trigger(
        Trigger::new("t", &sub.url("/t"))
            .spec("batch: {maxEvents: 50, linger: PT0.02S}")
            .spec("rateLimit: {eventsPerSecond: 100, burst: 10}"),
    );
    let router = Router::start(&config.render()).await;
    let n = 60;
    let start = std::time::Instant::now();
    publish(&router, "t", n, |e| e).await;
    let requests = wait_events(&sub, "/t", n).await;
    let mut ids: Vec<String> = requests
        .iter()
        .flat_map(|r| events_of(r).iter().map(id).collect::<Vec<_>>())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "each event once");
    // 60 tokens with 10 at hand take (60 - 10) / 100 s at least.
    let last = requests.iter().map(|r| r.at).max().unwrap();
    let took = last.duration_since(start);
    assert!(took >= Duration::from_millis(450), "{took:?}");
}
