//! The JetStream store against real `nats-server` processes: several `triggerfish serve`
//! replicas sharing one JetStream (or a three-node NATS cluster), with replicas and servers
//! killed under load.
//!
//! What each test asserts, precisely:
//! - **No loss.** Every event the ingress accepted (202) reaches the subscriber at least once.
//! - **Bounded duplicates.** An event reaches the subscriber more than once only when a replica
//!   died (or was frozen) while it held the event unacknowledged. A replica holds at most
//!   `maxAckPending` events of the unordered consumer and one event per partition of the
//!   ordered consumers, so that bounds the duplicates a crash can cause.
//! - **Per-key order (ordered triggers).** For each partition key, the deliveries the
//!   subscriber sees, in arrival order, go through the key's events in the order they were
//!   accepted; the only exception is an event delivered again right after itself (the dead
//!   replica had delivered it but not acknowledged it). Formally, with `d₁, d₂, …` the
//!   positions (in acceptance order) of the key's deliveries: `d₁ = 0` and each
//!   `dᵢ₊₁ ∈ {dᵢ, dᵢ + 1}`, every position appears, and repeats number at most one per
//!   partition.
//! - **Schedules.** Each tick fires once across replicas: while one leader holds the lease,
//!   ticks arrive once each, one per second; when the leader is killed, no tick fires until
//!   its lease expires (at most `LEASE_TTL` = 10 s after its last renewal) and another replica
//!   takes it (it tries every second), so the gap between the last tick before and the first
//!   after is at most 12 s (10 s + 1 s + the 1 s between ticks), and the ticks after the
//!   handover again arrive once each.
//!
//! The routers use a short `ackWait` here (5 s), so redelivery after a crash takes seconds, not
//! the default 30.
#![allow(clippy::unwrap_used)]
#![allow(clippy::print_stderr, reason = "the tests report their figures")]

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use triggerfish_tests::event::batch;
use triggerfish_tests::{
    Client, Config, Event, Nats, Options, PATIENCE, Reply, Request, Router, Subscriber, Trigger,
    eventually,
};

/// `Server.spec.store` of every test: short waits, so that recovery takes seconds; long
/// enough that a replica starved of CPU on a busy machine (it says it is alive every third of
/// this) does not lose its events to another.
const ACK_WAIT: &str = "PT5S";
/// The unordered in-flight window.
const MAX_ACK_PENDING: usize = 1000;
/// Partitions of the ordered consumers.
const PARTITIONS: usize = 8;
/// The stream of broker `default/default`.
const STREAM: &str = "TF_default_default";

fn store(nats: &Nats, replicas: usize) -> String {
    store_with(nats, replicas, ACK_WAIT)
}

fn store_with(nats: &Nats, replicas: usize, ack_wait: &str) -> String {
    [
        "store:".to_owned(),
        "  kind: jetstream".to_owned(),
        format!("  url: \"{}\"", nats.url()),
        format!("  streamReplicas: {replicas}"),
        format!("  partitions: {PARTITIONS}"),
        format!("  ackWait: {ack_wait}"),
        format!("  maxAckPending: {MAX_ACK_PENDING}"),
        "  publishTimeout: PT2S".to_owned(),
    ]
    .join("\n")
}

fn options() -> Options {
    Options {
        shards: 2,
        log: "info,async_nats=warn".to_owned(),
        ..Options::default()
    }
}

async fn replicas(n: usize, config: &str) -> Vec<Router> {
    let mut routers = Vec::with_capacity(n);
    for _ in 0..n {
        routers.push(Router::start_with(config, options()).await);
    }
    routers
}

/// One replica of broker `default` with trigger `all` delivering to `sub`'s `/all`.
async fn one_replica_to(nats: &Nats, sub: &Subscriber) -> Router {
    let config = Config::new()
        .server(&store(nats, 1))
        .broker("default", None)
        .trigger(Trigger::new("all", &sub.url("/all")))
        .render();
    Router::start_with(&config, options()).await
}

/// `POST` of a batch; the status, or `Err` when no answer came (a dead replica).
async fn post_batch(client: &Client, url: &str, events: &[Event]) -> Result<u16, String> {
    let headers = [(
        "content-type".to_owned(),
        "application/cloudevents-batch+json".to_owned(),
    )];
    let r = client
        .try_request(http::Method::POST, url, &headers, batch(events))
        .await?;
    match r.code() {
        202 => Ok(202),
        503 | 429 => {
            assert!(
                r.header("retry-after").is_some(),
                "{} without Retry-After: {}",
                r.code(),
                r.text()
            );
            Ok(r.code())
        }
        other => panic!("unexpected {other} from {url}: {}", r.text()),
    }
}

/// Sends `events` in batches of `size` from `workers` concurrent producers, round-robin over
/// `targets`; a batch that gets no 202 (no answer, 503, 429) is sent again to the next
/// target, as a producer behind a load balancer would. Returns once every batch was accepted.
async fn produce(targets: Vec<String>, events: Vec<Event>, size: usize, workers: usize) {
    let batches: Arc<Vec<Vec<Event>>> = Arc::new(events.chunks(size).map(<[_]>::to_vec).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let targets = Arc::new(targets);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (batches, next, targets) = (
            Arc::clone(&batches),
            Arc::clone(&next),
            Arc::clone(&targets),
        );
        tasks.push(tokio::spawn(async move {
            let client = Client::new();
            let mut target = w;
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(batch) = batches.get(i) else { return };
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let url = &targets[target % targets.len()];
                    target += 1;
                    if let Ok(202) = post_batch(&client, url, batch).await {
                        break;
                    }
                    assert!(
                        Instant::now() < deadline,
                        "batch {i} not accepted within 60 s"
                    );
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

/// Waits until the broker's consumers have nothing pending or unacknowledged, so that every
/// redelivery has happened.
async fn wait_idle(nats: &Nats, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let state = nats.stream_from_leaders(STREAM).await;
        if state.as_ref().is_some_and(|s| s.idle()) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the consumers are not idle after {timeout:?}: {state:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Deliveries beyond the first of each event.
fn duplicates(sub: &Subscriber) -> usize {
    sub.id_counts().values().map(|&n| n - 1).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_deliver_every_event_when_one_is_killed() {
    const EVENTS: usize = 100_000;
    let nats = Nats::start().await;
    let sub = Subscriber::start_counting().await;
    let config = Config::new()
        .server(&store(&nats, 1))
        .broker("default", None)
        .trigger(Trigger::new("all", &sub.url("/all")).spec("maxInFlight: 512"))
        .render();
    let mut routers = replicas(3, &config).await;
    let targets: Vec<String> = routers.iter().map(|r| r.broker_url("default")).collect();
    let events: Vec<Event> = (0..EVENTS)
        .map(|i| Event::new(format!("e-{i}"), "t"))
        .collect();

    let started = Instant::now();
    let producer = tokio::spawn(produce(targets, events, 500, 4));
    // Mid-stream: a third delivered, the rest still coming in.
    eventually(
        "a third of the events delivered",
        Duration::from_secs(120),
        || async { (sub.distinct_ids() >= EVENTS / 3).then_some(()) },
    )
    .await;
    let victim = routers[1].metrics().await;
    let held = victim.get("triggerfish_trigger_matches_total", &[])
        - victim.get(
            "triggerfish_delivery_attempts_total",
            &[("outcome", "success")],
        );
    routers[1].kill();
    let killed_at = started.elapsed();
    producer.await.unwrap();
    let accepted_in = started.elapsed();
    eventually(
        "every event delivered",
        Duration::from_secs(120),
        || async { (sub.distinct_ids() >= EVENTS).then_some(()) },
    )
    .await;
    wait_idle(&nats, Duration::from_secs(30)).await;
    let delivered_in = started.elapsed();

    let counts = sub.id_counts();
    let missing: Vec<usize> = (0..EVENTS)
        .filter(|i| !counts.contains_key(&format!("e-{i}")))
        .collect();
    assert!(
        missing.is_empty(),
        "never delivered: {} events, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(10)]
    );
    let dups = duplicates(&sub);
    let mut redelivered = 0.0;
    for r in [&routers[0], &routers[2]] {
        redelivered += r
            .metrics()
            .await
            .get("triggerfish_store_redelivered_total", &[]);
    }
    eprintln!(
        "{EVENTS} events, 3 replicas, one killed at {killed_at:.1?} \
         (it held about {held} matched, undelivered events): \
         all accepted in {accepted_in:.1?}, all delivered in {delivered_in:.1?}; \
         {dups} duplicate deliveries, {redelivered} redeliveries seen by the survivors; \
         bound {MAX_ACK_PENDING}"
    );
    // The dead replica held at most maxAckPending events unacknowledged; only those can come
    // twice.
    assert!(
        dups <= MAX_ACK_PENDING,
        "{dups} duplicates, more than the in-flight window of {MAX_ACK_PENDING}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_restart_under_load_answers_503_and_loses_nothing_accepted() {
    let mut nats = Nats::start().await;
    let sub = Subscriber::start_counting().await;
    let router = one_replica_to(&nats, &sub).await;
    let url = router.broker_url("default");

    // One producer, one request at a time: each answer is ordered after the previous one.
    let log: Arc<Mutex<Vec<(Instant, u16)>>> = Arc::default();
    let accepted: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let producer = tokio::spawn({
        let (log, accepted, stop, url) = (
            Arc::clone(&log),
            Arc::clone(&accepted),
            Arc::clone(&stop),
            url.clone(),
        );
        async move {
            let client = Client::new();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                let events: Vec<Event> = (n..n + 100)
                    .map(|i| Event::new(format!("e-{i}"), "t"))
                    .collect();
                n += 100;
                let code = post_batch(&client, &url, &events).await.unwrap_or(0);
                log.lock().push((Instant::now(), code));
                if code == 202 {
                    accepted
                        .lock()
                        .extend(events.iter().map(|e| e.id().to_owned()));
                } else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });

    eventually("load before the restart", PATIENCE, || async {
        (accepted.lock().len() >= 5_000).then_some(())
    })
    .await;
    nats.kill(0);
    let killed = Instant::now();
    // Down: the ingress answers 503 (with Retry-After, checked in post_batch), never 202.
    eventually("503s while NATS is down", PATIENCE, || async {
        let log = log.lock();
        let after: Vec<u16> = log
            .iter()
            .filter(|(t, _)| *t > killed)
            .map(|&(_, c)| c)
            .collect();
        (after.iter().filter(|&&c| c == 503).count() >= 5).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let restarting = Instant::now();
    {
        let log = log.lock();
        let first_503 = log
            .iter()
            .position(|&(t, c)| t > killed && c == 503)
            .unwrap();
        let while_down: Vec<u16> = log[first_503..].iter().map(|&(_, c)| c).collect();
        assert!(
            while_down.iter().all(|&c| c == 503),
            "after the first 503, only 503s until NATS is back: {while_down:?}"
        );
    }
    nats.restart(0).await;
    // Back by itself: accepted again, without touching the router.
    let recovered = eventually(
        "202s after NATS is back",
        Duration::from_secs(30),
        || async {
            log.lock()
                .iter()
                .find(|&&(t, c)| t > restarting && c == 202)
                .map(|&(t, _)| t - restarting)
        },
    )
    .await;
    let before = accepted.lock().len();
    eventually("load after the restart", PATIENCE, || async {
        (accepted.lock().len() >= before + 5_000).then_some(())
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    producer.await.unwrap();

    let accepted = accepted.lock().clone();
    eventually(
        "every accepted event delivered",
        Duration::from_secs(60),
        || async {
            let counts = sub.id_counts();
            accepted
                .iter()
                .all(|id| counts.contains_key(id))
                .then_some(())
        },
    )
    .await;
    let unavailable = log.lock().iter().filter(|&&(_, c)| c == 503).count();
    eprintln!(
        "NATS killed for {:.1?}: {unavailable} requests answered 503; \
         accepting again {recovered:.1?} after its restart; \
         {} events accepted, all delivered ({} duplicates)",
        restarting - killed,
        accepted.len(),
        duplicates(&sub)
    );
}

/// NATS comes back moments after a crash: the pulls the replica had waiting died with the
/// connection, and the replica asks again at once rather than when they would have expired
/// (5 s, plus 5 s of grace): each event sent after the restart, one at a time, arrives
/// promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_nats_restarts_events_arrive_without_waiting_for_the_lost_pulls() {
    const PROMPTLY: Duration = Duration::from_secs(3);
    let mut nats = Nats::start().await;
    let sub = Subscriber::start().await;
    let router = one_replica_to(&nats, &sub).await;
    router.publish(&Event::new("before", "t")).await;
    sub.wait_for_path("/all", 1, PATIENCE).await;
    // Fresh pulls wait on the server now; it dies and comes back well within their expiry.
    tokio::time::sleep(Duration::from_millis(500)).await;
    nats.kill(0);
    nats.restart(0).await;
    eventually("the replica to reconnect", PATIENCE, || async {
        (router.stderr().matches("connected to NATS").count() >= 2).then_some(())
    })
    .await;
    router
        .publish_patiently(&[Event::new("after-0", "t")])
        .await;
    let sent = Instant::now();
    sub.wait_for_path("/all", 2, Duration::from_secs(15)).await;
    let took = sent.elapsed();
    assert!(
        took < PROMPTLY,
        "the first event after the restart took {took:?}"
    );
    for i in 1..5 {
        router.publish(&Event::new(format!("after-{i}"), "t")).await;
        sub.wait_for_path("/all", 2 + i, PROMPTLY).await;
    }
    wait_idle(&nats, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn r3_stream_loses_nothing_when_its_leader_node_dies() {
    const BEFORE: usize = 3_000;
    const AFTER: usize = 3_000;
    let mut nats = Nats::cluster(3).await;
    let sub = Subscriber::start_counting().await;
    // Held: what is stored stays in the stream, unacknowledged or not yet handed out, while
    // the node dies.
    sub.handle(|_| Reply::ok().held());
    let config = Config::new()
        .server(&store(&nats, 3))
        .broker("default", None)
        .trigger(Trigger::new("all", &sub.url("/all")))
        .render();
    let routers = replicas(2, &config).await;
    let targets: Vec<String> = routers.iter().map(|r| r.broker_url("default")).collect();
    let events = |range: std::ops::Range<usize>| -> Vec<Event> {
        range.map(|i| Event::new(format!("e-{i}"), "t")).collect()
    };
    produce(targets.clone(), events(0..BEFORE), 100, 2).await;

    // Kill the node leading the stream: the others elect a new leader, and both hold every
    // message (R3).
    let leader = eventually("the stream's leader", PATIENCE, || async {
        for i in 0..nats.len() {
            if let Some(s) = nats.stream(i, STREAM).await
                && let Some(leader) = s.leader
            {
                return nats.index_of(&leader);
            }
        }
        None
    })
    .await;
    let stored = nats.stream(leader, STREAM).await.unwrap().messages;
    assert_eq!(stored, BEFORE as u64, "every accepted event is stored");
    nats.kill(leader);
    let survivor = (leader + 1) % nats.len();

    let killed = Instant::now();
    sub.release();
    // Producers carry on (503s while the stream elects a leader are retried).
    produce(targets, events(BEFORE..BEFORE + AFTER), 100, 2).await;
    let accepted_in = killed.elapsed();
    eventually("every event delivered", Duration::from_secs(90), || async {
        (sub.distinct_ids() >= BEFORE + AFTER).then_some(())
    })
    .await;
    let delivered_in = killed.elapsed();
    wait_idle(&nats, Duration::from_secs(30)).await;
    let counts = sub.id_counts();
    let missing = (0..BEFORE + AFTER)
        .filter(|i| !counts.contains_key(&format!("e-{i}")))
        .count();
    assert_eq!(missing, 0, "events lost with the node");
    let state = nats.stream(survivor, STREAM).await.unwrap();
    assert_eq!(state.messages, (BEFORE + AFTER) as u64, "stored once each");
    // Acknowledgements sent while the consumer elected its new leader are lost, so the events
    // in flight then come again: at most the in-flight window.
    let dups = duplicates(&sub);
    assert!(
        dups <= MAX_ACK_PENDING,
        "{dups} duplicates, more than the in-flight window of {MAX_ACK_PENDING}"
    );
    eprintln!(
        "R3: node n{leader} (the stream's leader) killed with {BEFORE} events stored and held; \
         {AFTER} more accepted {accepted_in:.1?} after, \
         all {} delivered {delivered_in:.1?} after; {dups} duplicates",
        BEFORE + AFTER,
    );
}

/// The partition key of a delivery.
fn key(req: &Request) -> String {
    req.ce("partitionkey").unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_delivery_keeps_each_keys_order_across_replicas_and_a_crash() {
    const KEYS: usize = 24;
    const PER_KEY: usize = 60;
    let nats = Nats::start().await;
    let sub = Subscriber::start().await;
    // Slow enough that the run lasts a few seconds and the crash lands mid-stream.
    sub.handle(|_| Reply::ok().delay(Duration::from_millis(8)));
    let config = Config::new()
        .server(&store(&nats, 1))
        .broker("default", None)
        .trigger(Trigger::new("ordered", &sub.url("/o")).ordered())
        .render();
    let mut routers = replicas(3, &config).await;

    // One producer, one request at a time, so the acceptance order is the send order; keys
    // interleaved, as producers would send them.
    let mut events = Vec::new();
    for i in 0..PER_KEY {
        for k in 0..KEYS {
            events.push(Event::new(format!("k{k}-{i}"), "t").attr("partitionkey", format!("k{k}")));
        }
    }
    let targets: Vec<String> = routers.iter().map(|r| r.broker_url("default")).collect();
    produce(targets, events, 48, 1).await;

    eventually("a third delivered", Duration::from_secs(60), || async {
        (sub.count() >= KEYS * PER_KEY / 3).then_some(())
    })
    .await;
    routers[0].kill();
    eventually(
        "every event delivered",
        Duration::from_secs(120),
        || async { (sub.distinct_ids() >= KEYS * PER_KEY).then_some(()) },
    )
    .await;
    wait_idle(&nats, Duration::from_secs(30)).await;

    let mut by_key: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for r in sub.requests() {
        let id = r.id();
        let position: usize = id.rsplit('-').next().unwrap().parse().unwrap();
        by_key.entry(key(&r)).or_default().push(position);
    }
    assert_eq!(by_key.len(), KEYS);
    let mut repeats = 0;
    for (k, positions) in &by_key {
        assert_eq!(
            positions[0], 0,
            "key {k} starts with its first event: {positions:?}"
        );
        for w in positions.windows(2) {
            assert!(
                w[1] == w[0] || w[1] == w[0] + 1,
                "key {k}: {} followed {} (each delivery is the next event, \
                 or the same one again after a crash): {positions:?}",
                w[1],
                w[0]
            );
            repeats += usize::from(w[1] == w[0]);
        }
        assert_eq!(
            *positions.last().unwrap(),
            PER_KEY - 1,
            "key {k}: {positions:?}"
        );
    }
    eprintln!(
        "ordered: {KEYS} keys × {PER_KEY} events over 3 replicas, one killed mid-stream: \
         order kept, {repeats} repeats (bound {PARTITIONS})"
    );
    assert!(
        repeats <= PARTITIONS,
        "{repeats} repeats: more than one per partition"
    );
}

/// The tick times (`time`) of the deliveries so far, in arrival order.
fn ticks(sub: &Subscriber) -> Vec<String> {
    sub.requests().iter().filter_map(|r| r.ce("time")).collect()
}

/// Parses an RFC 3339 `time` in UTC with whole seconds (`2026-01-01T00:00:05Z`), as the
/// PingSource writes it, into seconds since the Unix epoch.
fn seconds(time: &str) -> i64 {
    let field = |range: std::ops::Range<usize>| time[range].parse::<i64>().unwrap();
    let (y, m, d) = (field(0..4), field(5..7), field(8..10));
    let (h, min, s) = (field(11..13), field(14..16), field(17..19));
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + h) * 60 + min) * 60 + s
}

/// How late each tick arrived after its scheduled time, in seconds, the largest first.
fn lateness(sub: &Subscriber, clock: (Instant, SystemTime)) -> Vec<f64> {
    let mut late: Vec<f64> = sub
        .requests()
        .iter()
        .filter_map(|r| {
            let time = r.ce("time")?;
            let arrived = clock.1 + r.at.duration_since(clock.0);
            let arrived = arrived.duration_since(UNIX_EPOCH).ok()?.as_secs_f64();
            Some(arrived - seconds(&time) as f64)
        })
        .collect();
    late.sort_by(|a, b| b.total_cmp(a));
    late
}

fn ping_source(schedule: &str, sink: &str) -> String {
    format!(
        "apiVersion: sources.knative.dev/v1
kind: PingSource
metadata:
  name: every-second
  namespace: default
spec:
  schedule: \"{schedule}\"
  data: '{{\"hello\": \"tick\"}}'
  contentType: application/json
  sink:
{}
",
        triggerfish_tests::config::indent(sink, 4)
    )
}

/// Which replica fires ticks now: the one whose tick counter moves.
async fn leader_of(routers: &[Router]) -> usize {
    let mut before = Vec::new();
    for r in routers {
        before.push(
            r.metrics()
                .await
                .get("triggerfish_scheduler_ticks_total", &[]),
        );
    }
    eventually("a replica firing ticks", PATIENCE, || async {
        for (i, r) in routers.iter().enumerate() {
            if r.metrics()
                .await
                .get("triggerfish_scheduler_ticks_total", &[])
                > before[i]
            {
                return Some(i);
            }
        }
        None
    })
    .await
}

/// Asserts that `times` (tick times as delivered) holds each tick once, one per second,
/// except one gap of at most `max_gap` seconds; returns the gap.
fn check_ticks(times: &[String], max_gap: i64) -> i64 {
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in times {
        *counts.entry(t).or_default() += 1;
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "ticks delivered more than once: {twice:?}"
    );
    let mut secs: Vec<i64> = times.iter().map(|t| seconds(t)).collect();
    secs.sort_unstable();
    let gaps: Vec<i64> = secs
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|&g| g > 1)
        .collect();
    assert!(
        gaps.len() <= 1,
        "more than one gap in the ticks: {gaps:?} in {times:?}"
    );
    let gap = gaps.first().copied().unwrap_or(1);
    assert!(
        gap <= max_gap,
        "a gap of {gap} s, more than {max_gap} s: {times:?}"
    );
    gap
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_fires_once_per_tick_across_replicas_and_a_killed_leader() {
    let nats = Nats::start().await;
    let sub = Subscriber::start().await;
    let config = Config::new()
        .server(&store(&nats, 1))
        .broker("default", None)
        .trigger(Trigger::new("ticks", &sub.url("/ticks")))
        .raw(&ping_source(
            "* * * * * *",
            "ref: {apiVersion: eventing.knative.dev/v1, kind: Broker, name: default}",
        ))
        .render();
    let mut routers = replicas(3, &config).await;
    let leader = leader_of(&routers).await;
    sub.wait_for(sub.count() + 4, PATIENCE).await;
    // Between two ticks, so that no tick is being delivered by the leader as it dies (that one
    // could come twice: at-least-once).
    sub.wait_for(sub.count() + 1, PATIENCE).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = ticks(&sub).len();
    routers[leader].kill();
    let killed = Instant::now();

    // Ticks come again once another replica holds the lease; then a few more.
    sub.wait_for(before + 1, Duration::from_secs(30)).await;
    let resumed = killed.elapsed();
    sub.wait_for(before + 5, PATIENCE).await;
    let others: Vec<&Router> = routers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != leader)
        .map(|(_, r)| r)
        .collect();
    let mut firing = 0;
    for r in &others {
        if r.metrics()
            .await
            .get("triggerfish_scheduler_ticks_total", &[])
            > 0.0
        {
            firing += 1;
        }
    }
    assert_eq!(firing, 1, "one new leader fires");

    let times = ticks(&sub);
    // The lease expires ≤ 10 s after the last renewal, a follower takes it within 1 s, and
    // ticks are 1 s apart.
    let gap = check_ticks(&times, 12);
    eprintln!(
        "schedule: leader killed, ticks again after {resumed:.1?}; \
         gap between ticks {gap} s; {} ticks, each once",
        times.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_does_not_fire_stale_ticks_when_it_wakes() {
    let nats = Nats::start().await;
    let sub = Subscriber::start().await;
    // Straight to the subscriber, not through a broker: a tick fired twice shows as two
    // requests, with no store to deduplicate it.
    let config = Config::new()
        .server(&store(&nats, 1))
        .broker("default", None)
        .raw(&ping_source(
            "* * * * * *",
            &format!("uri: {}", sub.url("/ticks")),
        ))
        .render();
    let clock = (Instant::now(), SystemTime::now());
    let routers = replicas(3, &config).await;
    let leader = leader_of(&routers).await;
    sub.wait_for(sub.count() + 3, PATIENCE).await;
    sub.wait_for(sub.count() + 1, PATIENCE).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Frozen for longer than the lease lives: another replica takes over meanwhile.
    routers[leader].pause();
    let n = sub.count();
    sub.wait_for(n + 2, Duration::from_secs(30)).await;
    routers[leader].resume();
    // Awake again: it must see that its lease is gone and fire nothing it missed.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let times = ticks(&sub);
    let distinct: HashSet<&String> = times.iter().collect();
    assert_eq!(distinct.len(), times.len(), "a tick fired twice: {times:?}");
    check_ticks(&times, 12);
    // A tick it missed while frozen, fired when it wakes, would arrive many seconds late.
    let late = lateness(&sub, clock);
    assert!(
        late[0] < 3.0,
        "a tick arrived {:.1} s after its time: fired by a leader whose lease had lapsed",
        late[0]
    );
    eprintln!(
        "frozen leader: {} ticks, each once, at most {:.2} s late",
        times.len(),
        late[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replies_and_dead_letters_go_through_the_stream() {
    let nats = Nats::start().await;
    let sub = Subscriber::start().await;
    let reply = Event::new("reply-1", "com.example.reply");
    sub.handle(move |req| match req.path.as_str() {
        "/first" => Reply::event_binary(&reply),
        "/failing" => Reply::status(500),
        _ => Reply::ok(),
    });
    let dlq = "{apiVersion: eventing.knative.dev/v1, kind: Broker, name: dlq}";
    let config = Config::new()
        .server(&store(&nats, 1))
        .broker("default", None)
        .broker("dlq", None)
        .trigger(Trigger::new("first", &sub.url("/first")).of_type("com.example.request"))
        .trigger(Trigger::new("replies", &sub.url("/replies")).of_type("com.example.reply"))
        .trigger(
            Trigger::new("failing", &sub.url("/failing"))
                .of_type("com.example.doomed")
                .delivery(&format!(
                    "retry: 1\nbackoffDelay: PT0.05S\ndeadLetterSink:\n  ref: {dlq}"
                )),
        )
        .trigger(Trigger::new("dead-letters", &sub.url("/dead")).broker("dlq"))
        .render();
    let routers = replicas(2, &config).await;
    routers[0]
        .publish(&Event::new("req-1", "com.example.request"))
        .await;
    routers[1]
        .publish(&Event::new("doomed-1", "com.example.doomed"))
        .await;
    let replies = sub.wait_for_path("/replies", 1, PATIENCE).await;
    assert_eq!(replies[0].id(), "reply-1");
    let dead = sub.wait_for_path("/dead", 1, PATIENCE).await;
    assert_eq!(dead[0].id(), "doomed-1");
    assert_eq!(dead[0].ce("knativeerrorcode").as_deref(), Some("500"));
    // Each event carries the time its broker took it, stored with it in the stream: both
    // attempts show the one value, and the reply and the dead letter, which entered a broker
    // later, later ones. (The format has a fixed width: text order is time order.)
    let arrival = |req: &Request| req.ce("knativearrivaltime").unwrap();
    let attempts = sub.requests_to("/failing");
    assert_eq!(attempts.len(), 2);
    assert_eq!(arrival(&attempts[0]), arrival(&attempts[1]));
    assert!(arrival(&dead[0]) > arrival(&attempts[0]));
    let request = sub.wait_for_path("/first", 1, PATIENCE).await;
    assert!(arrival(&replies[0]) > arrival(&request[0]));
    // Both went through JetStream: the reply is stored in the broker's stream, the dead letter
    // in the dead-letter broker's.
    let main = nats.stream(0, STREAM).await.unwrap();
    assert_eq!(
        main.messages, 3,
        "request, reply and doomed event are stored"
    );
    let dlq = nats.stream(0, "TF_default_dlq").await.unwrap();
    assert_eq!(dlq.messages, 1, "the dead letter is stored");
    wait_idle(&nats, PATIENCE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_longer_than_ack_wait_stays_with_its_replica() {
    let nats = Nats::start().await;
    let sub = Subscriber::start().await;
    // Two and a half times ackWait: JetStream would hand these events to the other replica
    // mid-delivery if the replica holding them did not say it is still working on them.
    sub.handle(|_| Reply::ok().delay(Duration::from_secs(5)));
    let config = Config::new()
        .server(&store_with(&nats, 1, "PT2S"))
        .broker("default", None)
        .trigger(Trigger::new("slow", &sub.url("/slow")))
        .trigger(Trigger::new("slow-ordered", &sub.url("/slow-ordered")).ordered())
        .render();
    let routers = replicas(2, &config).await;
    let events: Vec<Event> = (0..8)
        .map(|i| {
            let key = format!("k{}", i % 4);
            Event::new(format!("e-{i}"), "t").attr("partitionkey", key)
        })
        .collect();
    let r = routers[0]
        .client
        .send_batch(&routers[0].broker_url("default"), &events)
        .await;
    assert_eq!(r.code(), 202, "{}", r.text());
    sub.wait_for_path("/slow", 8, Duration::from_secs(30)).await;
    // Ordered: the first event of each key, then (5 s later) the second.
    sub.wait_for_path("/slow-ordered", 8, Duration::from_secs(30))
        .await;
    wait_idle(&nats, Duration::from_secs(30)).await;
    for path in ["/slow", "/slow-ordered"] {
        let ids: Vec<String> = sub.requests_to(path).iter().map(|r| r.id()).collect();
        let distinct: HashSet<&String> = ids.iter().collect();
        assert_eq!(distinct.len(), ids.len(), "{path}: twice: {ids:?}");
    }
    for r in &routers {
        let m = r.metrics().await;
        assert_eq!(m.get("triggerfish_store_redelivered_total", &[]), 0.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_stopped_gracefully_leaves_no_duplicates() {
    const EVENTS: usize = 20_000;
    let nats = Nats::start().await;
    let sub = Subscriber::start_counting().await;
    let config = Config::new()
        .server(&store(&nats, 1))
        .broker("default", None)
        .trigger(Trigger::new("all", &sub.url("/all")))
        .render();
    let mut routers = replicas(3, &config).await;
    let targets: Vec<String> = routers.iter().map(|r| r.broker_url("default")).collect();
    let events: Vec<Event> = (0..EVENTS)
        .map(|i| Event::new(format!("e-{i}"), "t"))
        .collect();
    let producer = tokio::spawn(produce(targets, events, 200, 2));
    eventually("a third delivered", Duration::from_secs(60), || async {
        (sub.distinct_ids() >= EVENTS / 3).then_some(())
    })
    .await;
    // A rolling update: SIGTERM, drain, exit.
    routers[1].sigterm();
    let status = routers[1].wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{status}");
    producer.await.unwrap();
    eventually("every event delivered", Duration::from_secs(60), || async {
        (sub.distinct_ids() >= EVENTS).then_some(())
    })
    .await;
    wait_idle(&nats, Duration::from_secs(30)).await;
    // What it delivered it acknowledged before exiting; what it had pulled and not delivered
    // it handed back: nothing comes twice.
    if duplicates(&sub) > 0 {
        // Where a duplicate came from: JetStream handing an event out again (redelivered) or
        // a delivery retried after the subscriber had it (retries).
        let twice: Vec<String> = sub
            .id_counts()
            .into_iter()
            .filter(|(_, n)| *n > 1)
            .map(|(id, n)| format!("{id} ×{n}"))
            .take(20)
            .collect();
        let mut counters = Vec::new();
        for i in [0, 2] {
            let m = routers[i].metrics().await;
            counters.push(format!(
                "replica {i}: redelivered {}, retries {}",
                m.get("triggerfish_store_redelivered_total", &[]),
                m.get("triggerfish_delivery_retries_total", &[]),
            ));
        }
        panic!(
            "{} delivered twice: {twice:?}; {counters:?}; the stopped replica's log:\n{}",
            duplicates(&sub),
            routers[1].stderr()
        );
    }
}

/// While a replica drains after SIGTERM, with a delivery still in flight and its NATS
/// connection open, events published through another replica reach the subscriber at once:
/// none of them is handed to the stopping replica's pulls, where it would wait out ackWait
/// (30 s here) before JetStream gave it to someone else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_published_while_a_replica_drains_go_to_the_others_at_once() {
    const EVENTS: usize = 40;
    let nats = Nats::start().await;
    let sub = Subscriber::start().await;
    sub.handle(|req| {
        if req.id() == "slow" {
            Reply::ok().delay(Duration::from_secs(6))
        } else {
            Reply::ok()
        }
    });
    let config = Config::new()
        .server(&store_with(&nats, 1, "PT30S"))
        .broker("default", None)
        .trigger(Trigger::new("all", &sub.url("/all")))
        .render();
    // The first replica takes the slow event alone, then the second one starts pulling.
    let mut draining = Router::start_with(&config, options()).await;
    draining.publish(&Event::new("slow", "t")).await;
    sub.wait_for_path("/all", 1, PATIENCE).await;
    let other = Router::start_with(&config, options()).await;
    draining.sigterm();
    // Its drain waits for the slow delivery: it is still connected for seconds.
    eventually("the drain to begin", PATIENCE, || async {
        draining.stderr().contains("shutting down").then_some(())
    })
    .await;
    let started = Instant::now();
    for i in 0..EVENTS {
        other.publish(&Event::new(format!("e-{i}"), "t")).await;
    }
    sub.wait_for_path("/all", 1 + EVENTS, Duration::from_secs(5))
        .await;
    let took = started.elapsed();
    assert!(
        draining.try_exit_status().is_none(),
        "the first replica had exited: the test proves nothing"
    );
    assert!(took < Duration::from_secs(5), "{took:?}");
    let status = draining.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_waiting_for_a_full_trigger_queue_stay_with_their_replica() {
    const EVENTS: usize = 24;
    let nats = Nats::start().await;
    let sub = Subscriber::start().await;
    // One delivery at a time, 400 ms each, behind a queue of two: the consumer holds events
    // that wait for room for up to 9 s, more than four times ackWait. JetStream would hand
    // them out again if the replica did not keep them alive while they wait.
    sub.handle(|_| Reply::ok().delay(Duration::from_millis(400)));
    let config = Config::new()
        .server(&store_with(&nats, 1, "PT2S"))
        .server("queues: {trigger: {events: 2, bytes: 1MiB}}")
        .broker("default", None)
        .trigger(Trigger::new("slow", &sub.url("/slow")).spec("maxInFlight: 1"))
        .render();
    let router = Router::start_with(&config, options()).await;
    let events: Vec<Event> = (0..EVENTS)
        .map(|i| Event::new(format!("e-{i}"), "t"))
        .collect();
    router.publish_batches(&events).await;
    sub.wait_for_path("/slow", EVENTS, Duration::from_secs(60))
        .await;
    wait_idle(&nats, Duration::from_secs(30)).await;
    let ids: Vec<String> = sub.requests_to("/slow").iter().map(|r| r.id()).collect();
    let distinct: HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), EVENTS, "{ids:?}");
    assert_eq!(ids.len(), EVENTS, "delivered twice: {ids:?}");
    let m = router.metrics().await;
    assert_eq!(m.get("triggerfish_store_redelivered_total", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arriving_one_at_a_time_are_each_delivered_without_waiting_for_a_pull() {
    // A consumer keeps two pull requests waiting on the server, and JetStream hands the
    // messages to them in turn: an event given to the second must not wait until the first
    // expires (5 s). Each event here is sent only once the one before arrived.
    const EVENTS: usize = 30;
    const PROMPTLY: Duration = Duration::from_secs(4);
    let nats = Nats::start().await;
    let sub = Subscriber::start().await;
    let router = one_replica_to(&nats, &sub).await;
    for i in 0..EVENTS {
        router.publish(&Event::new(format!("e-{i}"), "t")).await;
        sub.wait_for_path("/all", i + 1, PROMPTLY).await;
    }
    wait_idle(&nats, Duration::from_secs(30)).await;
    assert_eq!(sub.requests_to("/all").len(), EVENTS);
}
