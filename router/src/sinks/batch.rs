//! Gathering one-event attempts into batches, for the sinks that send many events at once: QUIC
//! subscribers (a frame per batch) and HTTP subscribers in batched content mode
//! (`spec.batch`, one `application/cloudevents-batch+json` request per batch).
//!
//! The dispatcher still makes one attempt per event, so retries, timeouts, dead letters and
//! ordering stay per event. A [`Batcher`] takes the attempts that wait at the same moment,
//! hands each batch to its sink's send function, and that function completes every attempt:
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
//! [`super::http`]).

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::time::Instant;
use triggerfish_core::config::Batching;
use triggerfish_core::delivery::{InternalError, TransportError};
use triggerfish_core::event::join_batched;

use super::{Attempt, Request};

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
    /// Where the outcome goes.
    pub done: oneshot::Sender<Attempt>,
}

/// The gathering task in front of one sink; clones share it. The task ends when the last
/// clone is dropped.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Pending>,
}

impl Batcher {
    /// Starts gathering by `batching`, with at most `in_flight` batches out at once (1 to
    /// [`MAX_BATCHES_IN_FLIGHT`]); `send` sends one batch and completes each of its attempts.
    /// Each batch's size is observed in `sizes`, when given.
    pub fn spawn<F, Fut>(
        batching: Batching,
        in_flight: usize,
        sizes: Option<Histogram>,
        send: F,
    ) -> Batcher
    where
        F: Fn(Vec<Pending>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let max = batching.max_events.get() as usize;
        let (tx, rx) = mpsc::channel(max.saturating_mul(2).max(16));
        let in_flight = in_flight.clamp(1, MAX_BATCHES_IN_FLIGHT);
        tokio::spawn(gather(rx, batching, in_flight, sizes, send));
        Batcher { tx }
    }

    /// Makes one attempt: `event` (structured JSON) joins the next batch. Gives up with a
    /// timeout after `req.timeout`, whatever its batch is doing.
    pub async fn send(&self, event: Bytes, req: &Request) -> Attempt {
        let (done, answer) = oneshot::channel();
        let pending = Pending {
            event,
            ttl: req.ttl,
            deadline: Instant::now() + req.timeout,
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

/// The gathering task.
async fn gather<F, Fut>(
    mut rx: mpsc::Receiver<Pending>,
    batching: Batching,
    in_flight: usize,
    sizes: Option<Histogram>,
    send: F,
) where
    F: Fn(Vec<Pending>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let max = batching.max_events.get() as usize;
    let slots = Arc::new(Semaphore::new(in_flight));
    while let Some(first) = rx.recv().await {
        // While every slot is busy, events keep gathering in the channel.
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        let mut bytes = first.event.len();
        let mut items = vec![first];
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
            bytes += p.event.len() + 1;
            items.push(p);
        }
        // An attempt that gave up (its timeout) while it waited for a slot is retried on its
        // own: sending it too would only duplicate it.
        items.retain(|p| !p.done.is_closed());
        if items.is_empty() {
            continue;
        }
        if let Some(sizes) = &sizes {
            sizes.observe(items.len() as f64);
        }
        let sent = send(items);
        tokio::spawn(async move {
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
/// event would.
pub fn complete_all(items: Vec<Pending>, attempt: Attempt) {
    let (attempt, mut reply) = attempt.take_reply();
    let replier = reply
        .as_ref()
        .and_then(|_| items.iter().enumerate().min_by_key(|(_, p)| p.ttl))
        .map(|(i, _)| i);
    for (i, p) in items.into_iter().enumerate() {
        let mut each = attempt.duplicate();
        if Some(i) == replier
            && let Attempt::Response(r) = &mut each
        {
            r.reply = reply.take();
        }
        let _ = p.done.send(each);
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
                reply: Some(reply),
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
        let batcher = Batcher::spawn(Batching::default(), 1, Some(sizes.clone()), move |items| {
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
            broker: Arc::from("default/default"),
        };
        let req = Arc::new(request(std::time::Duration::from_secs(10)));
        let attempt = |n: u8| {
            let (batcher, req) = (batcher.clone(), Arc::clone(&req));
            tokio::spawn(async move { batcher.send(Bytes::from(vec![b'0' + n]), &req).await })
        };
        let first = attempt(0);
        let (batch, release) = sent.recv().await.unwrap();
        assert_eq!(batch.len(), 1, "a lone event leaves at once");
        // One attempt gives up while it waits: it is not sent (its retry would duplicate it).
        let hasty = {
            let batcher = batcher.clone();
            let req = request(std::time::Duration::from_millis(10));
            tokio::spawn(async move { batcher.send(Bytes::from_static(b"9"), &req).await })
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
