//! Gathering events into batches, for the sinks that send many events at once: QUIC
//! subscribers (a frame per batch) and HTTP subscribers in batched content mode
//! (`spec.batch`, one `application/cloudevents-batch+json` request per batch).
//!
//! [`gather`] is the loop both paths share: it takes what is waiting in a channel, up to
//! `maxEvents`, 1 MiB and `linger`, and hands each batch to a send function, with at most a
//! fixed number of batches in flight. It feeds two callers:
//!
//! - **Unordered triggers** gather their queued jobs directly: a batch is one delivery task,
//!   which encodes the events once and retries, times out and dead-letters them together
//!   (`dispatch::batched`). This is the fast path: no task, timer or channel per event.
//! - **Ordered triggers and dead-letter sinks** make one attempt per event, so that a key's
//!   events never share a batch. A [`Batcher`] gathers the attempts that wait at the same moment
//!   and completes each from its batch's outcome:
//!
//! ```text
//!  delivery tasks ──(event, oneshot)──► gathering task ──batch──► the sink's send function,
//!   (one per event)    bounded channel   up to `maxEvents`,        ≤ 16 batches in flight
//!                                        `linger`, 1 MiB           │  (HTTP: fewer, below)
//!                  ◄──────────── Attempt per event ────────────────┘
//! ```
//!
//! A batch leaves as soon as a slot is free, with whatever has gathered (after `linger`, if
//! set): a lone event is not delayed, and batches grow with the load because events gather
//! while every slot is busy. The fewer the slots, the sooner they grow. A QUIC sink has 16 (a
//! frame is a cheap stream on one connection); an HTTP sink has as many as the trigger's
//! `maxInFlight` fills with full batches (256 / 100: 3), since each is a request and a
//! connection of its own.
//!
//! It does not encode, send or decide outcomes: the sinks do ([`super::quic`],
//! [`super::http`]), and the dispatcher decides retries.

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use triggerfish_core::config::Batching;
use triggerfish_core::delivery::{InternalError, TransportError};
use triggerfish_core::event::join_batched;
use triggerfish_core::event::trace::TraceHeaders;

use super::{Attempt, BatchAttempt, Request};

/// The most batches in flight per sink at once. While all of a sink's are out, attempts wait
/// in the channel and the next batch grows.
pub const MAX_BATCHES_IN_FLIGHT: usize = 16;

/// A batch stops growing at this many body bytes (a Triggerfish server's default
/// `maxRequestBytes` is 4 MiB); an event larger than this still goes, alone.
const MAX_BATCH_BYTES: usize = 1 << 20;

/// One event's attempt, waiting for its batch's outcome.
pub struct Pending {
    /// The event, encoded in structured mode (JSON).
    pub event: Bytes,
    /// The event's remaining `knativebrokerttl`: a batch's reply is the reply of its event
    /// with the lowest.
    pub ttl: u8,
    /// When the attempt gives up (its `timeout`).
    pub deadline: Instant,
    /// The event's trace context, for the W3C headers of an HTTP batch whose events all share
    /// it.
    pub trace: Option<TraceHeaders>,
    /// Whether its sender reads a reply ([`Request::wants_reply`]).
    pub wants_reply: bool,
    /// Where the outcome goes.
    pub done: oneshot::Sender<Attempt>,
}

/// How a sink gathers batches: its `spec.batch`, how many batches it keeps in flight, and
/// where each batch's size is observed (`triggerfish_delivery_batch_events`).
#[derive(Clone)]
pub struct BatchSpec {
    /// Most events and linger.
    pub batching: Batching,
    /// Most batches in flight at once (1 to [`MAX_BATCHES_IN_FLIGHT`]).
    pub in_flight: usize,
    /// Observes each batch's size, when given.
    pub sizes: Option<Histogram>,
}

/// Something [`gather`] puts into batches.
pub trait Gathered: Send + 'static {
    /// Its share of the batch's body, in bytes (about: the 1 MiB cap is soft).
    fn bytes(&self) -> usize;
    /// Whether it no longer wants to be sent (its attempt gave up while it waited).
    fn given_up(&self) -> bool {
        false
    }
}

impl Gathered for Pending {
    fn bytes(&self) -> usize {
        self.event.len() + 1
    }

    fn given_up(&self) -> bool {
        self.done.is_closed()
    }
}

/// The gathering task in front of one sink; clones share it. The task ends when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Pending>,
}

impl Batcher {
    /// Starts gathering by `spec`; `send` sends one batch and completes each of its attempts.
    pub fn spawn<F, Fut>(spec: BatchSpec, send: F) -> Batcher
    where
        F: Fn(Vec<Pending>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let max = spec.batching.max_events.get() as usize;
        let (tx, rx) = mpsc::channel(max.saturating_mul(2).max(16));
        // Its batches need no tracking: each attempt waits for its own.
        tokio::spawn(gather(rx, spec, TaskTracker::new(), send));
        Batcher { tx }
    }

    /// Makes one attempt: `event` (structured JSON, with its trace context's headers) joins the
    /// next batch. Gives up with a timeout after `req.timeout`, whatever its batch is doing.
    pub async fn send(&self, event: Bytes, trace: Option<TraceHeaders>, req: &Request) -> Attempt {
        let (done, answer) = oneshot::channel();
        let pending = Pending {
            event,
            ttl: req.ttl,
            deadline: Instant::now() + req.timeout,
            trace,
            wants_reply: req.wants_reply,
            done,
        };
        let attempt = async {
            if self.tx.send(pending).await.is_err() {
                return Attempt::Internal(InternalError::Unavailable);
            }
            answer
                .await
                .unwrap_or(Attempt::Internal(InternalError::Unavailable))
        };
        match tokio::time::timeout(req.timeout, attempt).await {
            Ok(a) => a,
            Err(_) => Attempt::Transport(TransportError::Timeout),
        }
    }
}

/// Takes batches off `rx` until it closes: each holds what is waiting when a slot is free
/// (after `spec.batching.linger`, if set), up to `maxEvents` and 1 MiB, and goes to `send`,
/// whose future runs as a task of `tracker` and holds the slot until it ends.
pub async fn gather<T, F, Fut>(
    mut rx: mpsc::Receiver<T>,
    spec: BatchSpec,
    tracker: TaskTracker,
    send: F,
) where
    T: Gathered,
    F: Fn(Vec<T>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let BatchSpec {
        batching, sizes, ..
    } = spec;
    let max = batching.max_events.get() as usize;
    let slots = Arc::new(Semaphore::new(
        spec.in_flight.clamp(1, MAX_BATCHES_IN_FLIGHT),
    ));
    while let Some(first) = rx.recv().await {
        // While every slot is busy, events keep gathering in the channel.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let mut bytes = first.bytes();
        let mut items = Vec::with_capacity(max.min(rx.len() + 1));
        items.push(first);
        let deadline = Instant::now() + batching.linger;
        while items.len() < max && bytes < MAX_BATCH_BYTES {
            let next = match rx.try_recv() {
                Ok(p) => Some(p),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) if batching.linger.is_zero() => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    tokio::time::timeout_at(deadline, rx.recv())
                        .await
                        .ok()
                        .flatten()
                }
            };
            let Some(p) = next else { break };
            bytes += p.bytes();
            items.push(p);
        }
        // An attempt that gave up (its timeout) while it waited for a slot is retried on its
        // own: sending it too would only duplicate it.
        items.retain(|p| !p.given_up());
        if items.is_empty() {
            continue;
        }
        if let Some(sizes) = &sizes {
            sizes.observe(items.len() as f64);
        }
        let sent = send(items);
        tracker.spawn(async move {
            sent.await;
            drop(slot);
        });
    }
}

/// The events of `items` as a JSON array: the body of a batched-mode request or QUIC frame.
pub fn json_array(items: &[Pending]) -> Bytes {
    join_batched(items.iter().map(|p| &p.event[..]))
}

/// Completes every attempt of a batch with the batch's one outcome. A reply in it goes to
/// the event with the lowest ttl, so that a reply loop runs out as soon as its shortest-lived
/// event would; a reply that did not decode goes to every event, since it fails each one's
/// attempt (where replies count).
pub fn complete_all(items: Vec<Pending>, attempt: Attempt) {
    let (attempt, mut reply) = attempt.take_reply();
    let invalid = reply.as_deref().and_then(|r| r.as_ref().err()).cloned();
    let replier = reply
        .as_ref()
        .and_then(|_| items.iter().enumerate().min_by_key(|(_, p)| p.ttl))
        .map(|(i, _)| i);
    for (i, p) in items.into_iter().enumerate() {
        let mut each = attempt.duplicate();
        if let Attempt::Response(r) = &mut each {
            if Some(i) == replier {
                r.reply = reply.take();
            } else if let Some(why) = &invalid {
                r.reply = Some(Box::new(Err(why.clone())));
            }
        }
        let _ = p.done.send(each);
    }
}

/// Completes every attempt of a batch from the batch's outcome, in order.
pub fn complete(items: Vec<Pending>, attempt: BatchAttempt) {
    match attempt {
        BatchAttempt::All(a) => complete_all(items, a),
        BatchAttempt::Each(each) => {
            for (p, a) in items.into_iter().zip(each) {
                let _ = p.done.send(a);
            }
        }
    }
}

/// Attempts waiting in a test: `n` of them with ttls `ttls[i]` (255 past the end).
#[cfg(test)]
pub fn pending(n: usize, ttls: &[u8]) -> (Vec<Pending>, Vec<oneshot::Receiver<Attempt>>) {
    (0..n)
        .map(|i| {
            let (done, rx) = oneshot::channel();
            let p = Pending {
                event: Bytes::from(format!("{{\"n\":{i}}}")),
                ttl: ttls.get(i).copied().unwrap_or(255),
                deadline: Instant::now(),
                trace: None,
                wants_reply: true,
                done,
            };
            (p, rx)
        })
        .unzip()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::Response;
    use http::StatusCode;
    use triggerfish_core::event::{DecodeLimits, decode_structured};

    #[test]
    fn the_body_is_a_json_array_of_the_events() {
        let (items, _rx) = pending(3, &[]);
        assert_eq!(&json_array(&items)[..], br#"[{"n":0},{"n":1},{"n":2}]"#);
        assert_eq!(&json_array(&items[..1])[..], br#"[{"n":0}]"#);
    }

    #[test]
    fn every_attempt_gets_a_reply_that_did_not_decode() {
        let (items, mut rx) = pending(3, &[9, 4, 7]);
        let reply = Err("missing required attribute \"id\"".to_owned());
        complete_all(
            items,
            Attempt::Response(Response {
                status: StatusCode::OK,
                retry_after: None,
                reply: Some(Box::new(reply)),
                body_excerpt: Bytes::new(),
            }),
        );
        for (i, r) in rx.iter_mut().enumerate() {
            let Ok(Attempt::Response(r)) = r.try_recv() else {
                panic!("{i}: not a response")
            };
            assert!(matches!(r.reply.as_deref(), Some(Err(_))), "{i}");
        }
    }

    #[test]
    fn every_attempt_gets_the_outcome_and_the_lowest_ttl_gets_the_reply() {
        let (items, mut rx) = pending(3, &[9, 4, 7]);
        let reply = decode_structured(
            Bytes::from_static(br#"{"specversion":"1.0","id":"r","source":"s","type":"t"}"#),
            &DecodeLimits::default(),
        )
        .map_err(|e| e.to_string());
        complete_all(
            items,
            Attempt::Response(Response {
                status: StatusCode::OK,
                retry_after: Some("3".into()),
                reply: Some(Box::new(reply)),
                body_excerpt: Bytes::from_static(b"x"),
            }),
        );
        let got: Vec<_> = rx.iter_mut().map(|r| r.try_recv().unwrap()).collect();
        for (i, a) in got.iter().enumerate() {
            let Attempt::Response(r) = a else {
                panic!("{i}: not a response")
            };
            assert_eq!(r.status, StatusCode::OK);
            assert_eq!(r.retry_after.as_deref(), Some("3"));
            assert_eq!(&r.body_excerpt[..], b"x");
            assert_eq!(r.reply.is_some(), i == 1, "{i}");
        }
    }

    #[tokio::test]
    async fn batches_grow_while_every_slot_is_busy() {
        // Each batch goes to the test, and holds its slot until the test lets it go.
        type Sent = (Vec<Pending>, oneshot::Sender<()>);
        let (sent_tx, mut sent) = mpsc::unbounded_channel::<Sent>();
        let sizes = Histogram::new([1.0, 4.0]);
        let spec = BatchSpec {
            batching: Batching::default(),
            in_flight: 1,
            sizes: Some(sizes.clone()),
        };
        let batcher = Batcher::spawn(spec, move |items| {
            let (release, released) = oneshot::channel();
            let _ = sent_tx.send((items, release));
            async move {
                let _ = released.await;
            }
        });
        let request = |timeout| Request {
            format: triggerfish_core::config::DeliveryFormat::Json,
            timeout,
            reply_limits: triggerfish_core::event::DecodeLimits::default(),
            ttl: 255,
            wants_reply: true,
            broker: Arc::from("default/default"),
        };
        let req = Arc::new(request(std::time::Duration::from_secs(10)));
        let attempt = |n: u8| {
            let (batcher, req) = (batcher.clone(), Arc::clone(&req));
            tokio::spawn(async move { batcher.send(Bytes::from(vec![b'0' + n]), None, &req).await })
        };
        let first = attempt(0);
        let (batch, release) = sent.recv().await.unwrap();
        assert_eq!(batch.len(), 1, "a lone event leaves at once");
        // One attempt gives up while it waits: it is not sent (its retry would duplicate it).
        let hasty = {
            let batcher = batcher.clone();
            let req = request(std::time::Duration::from_millis(10));
            tokio::spawn(async move { batcher.send(Bytes::from_static(b"9"), None, &req).await })
        };
        let rest: Vec<_> = (1..5).map(attempt).collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(matches!(
            hasty.await.unwrap(),
            Attempt::Transport(TransportError::Timeout)
        ));
        assert!(sent.try_recv().is_err(), "the only slot is busy");
        complete_all(batch, Attempt::accepted());
        let _ = release.send(());
        assert!(matches!(first.await.unwrap(), Attempt::Response(_)));
        let (batch, _release) = sent.recv().await.unwrap();
        assert_eq!(
            String::from_utf8_lossy(&json_array(&batch)),
            "[1,2,3,4]",
            "the next batch grew, without the attempt that gave up"
        );
        complete_all(batch, Attempt::accepted());
        for r in rest {
            assert!(matches!(r.await.unwrap(), Attempt::Response(_)));
        }
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("batch", "", sizes);
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        assert!(text.contains("batch_sum 5.0"), "{text}");
        assert!(text.contains("batch_count 2"), "{text}");
    }

    #[test]
    fn a_transport_error_fails_every_attempt() {
        let (items, mut rx) = pending(2, &[]);
        complete_all(items, Attempt::Transport(TransportError::Reset));
        for r in &mut rx {
            assert!(matches!(
                r.try_recv().unwrap(),
                Attempt::Transport(TransportError::Reset)
            ));
        }
    }
}
