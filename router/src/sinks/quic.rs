//! QUIC subscribers: `quic://host:port/{namespace}/{broker}`, another Triggerfish's QUIC
//! ingress (router-to-router forwarding, or a remote worker pool).
//!
//! A frame is a batch ([`super::batch`]): an unordered trigger's dispatcher gathers its
//! queued events into frames itself ([`QuicSink::send_batch`]); one-event attempts (ordered
//! triggers, dead letters) go through the sink's [`Batcher`], which gathers the attempts that
//! wait at the same moment. Either way each event gets its own outcome from the ack:
//!
//! ```text
//!  dispatcher ──batch of jobs──────────────────────► frame ──► stream on the shared
//!   (unordered)                                                 connection to the peer
//!  delivery tasks ──(event, oneshot)──► batcher task ─┘              │
//!   (one per event)                     ≤ 16 frames in flight        ▼
//!                  ◄──────────── outcome per event ──────────── ack: per-index outcome
//! ```
//!
//! - An accepted event's attempt is a 202; an event the ack names is a 400 or 413 with the
//!   server's error text as `knativeerrordata` (not retried: the event is invalid there).
//! - A frame refused whole gives every event of it the frame's status: 429 or 503 with the
//!   ack's retry-after (retried, honouring `retryAfterMax` as for HTTP), 404 (retried, as
//!   Knative retries 404), 400 or 413.
//! - No ack (connection lost, stream reset, timeout) is a transport error for each event of
//!   the frame: retried. The server may have queued them, so a retry may duplicate them:
//!   delivery is at least once, as over HTTP.
//!
//! Ordering is unchanged: an ordered trigger has one event in flight per partition key, so
//! events of one key never share a frame or overtake each other. Replies do not exist on
//! this transport (an ack carries no events).

use bytes::Bytes;
use http::StatusCode;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::Arc;
use std::time::Duration;
use triggerfish_core::config::QuicDestination;
use triggerfish_core::delivery::{InternalError, TransportError};
use triggerfish_core::event::{EncodeOptions, EventView, encode_structured};
use triggerfish_core::quic::Ack;

use super::batch::{BatchSpec, Batcher, MAX_BATCHES_IN_FLIGHT, complete, json_array};
use super::{Attempt, BatchAttempt, Request, Response};
use crate::auth::outbound::Credential;
use crate::quic::client::Peer;

/// The longest a frame may wait for its ack, so that a server that never answers cannot hold
/// a frame slot for ever (each attempt has its own, usually shorter, timeout as well).
const FRAME_TIMEOUT: Duration = Duration::from_secs(60);

/// One QUIC destination.
#[derive(Clone)]
pub struct QuicSink {
    url: Arc<str>,
    frames: Arc<Frames>,
    spec: BatchSpec,
    /// The gathering task of one-event attempts, started by the first.
    batcher: Arc<std::sync::OnceLock<Batcher>>,
}

impl QuicSink {
    /// A sink for `dest` over `peer`'s connection. Frames carry `credential` (a bearer token)
    /// when given; each frame's size is observed in `sizes`, when given.
    pub fn new(
        dest: &QuicDestination,
        peer: Arc<Peer>,
        credential: Option<Credential>,
        sizes: Option<Histogram>,
    ) -> QuicSink {
        QuicSink {
            url: Arc::from(dest.url.as_str()),
            frames: Arc::new(Frames {
                peer,
                target: Arc::from(dest.target.as_str()),
                credential,
            }),
            spec: BatchSpec {
                batching: dest.batch,
                in_flight: MAX_BATCHES_IN_FLIGHT,
                sizes,
            },
            batcher: Arc::default(),
        }
    }

    /// The destination URI.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// How the sink gathers frames.
    pub fn batches(&self) -> &BatchSpec {
        &self.spec
    }

    /// Makes one attempt: the event joins the next frame of the sink's gathering task, which
    /// the first call starts and which ends when the last clone of the sink is dropped.
    pub async fn send(
        &self,
        view: &EventView<'_>,
        opts: &EncodeOptions<'_>,
        req: &Request,
    ) -> Attempt {
        let batcher = self.batcher.get_or_init(|| {
            let frames = Arc::clone(&self.frames);
            Batcher::spawn(self.spec.clone(), move |items| {
                let frames = Arc::clone(&frames);
                async move {
                    let body = json_array(&items);
                    let attempt = frames.send(body, items.len(), FRAME_TIMEOUT).await;
                    complete(items, attempt);
                }
            })
        });
        // Frames carry no headers: the events' own extensions carry their trace context.
        batcher.send(encode_structured(view, opts), None, req).await
    }

    /// Makes one attempt at a frame: `body` is a JSON array of `events` structured events.
    pub async fn send_batch(&self, body: Bytes, events: usize, req: &Request) -> BatchAttempt {
        let timeout = req.timeout.min(FRAME_TIMEOUT);
        self.frames.send(body, events, timeout).await
    }
}

/// Where a sink's frames go, and with which credential.
struct Frames {
    peer: Arc<Peer>,
    target: Arc<str>,
    credential: Option<Credential>,
}

impl Frames {
    /// Sends one frame of `events` events and waits up to `timeout` for its ack.
    async fn send(&self, body: Bytes, events: usize, timeout: Duration) -> BatchAttempt {
        let (peer, target) = (&self.peer, &*self.target);
        let credential = match self.credential.as_ref().map(Credential::authorization) {
            None => None,
            Some(Ok(value)) => Some(Bytes::copy_from_slice(value.as_bytes())),
            Some(Err(e)) => {
                tracing::error!(peer = %peer.address(), target, error = %e, "no bearer token for the subscriber");
                return BatchAttempt::All(Attempt::Internal(InternalError::Unavailable));
            }
        };
        let n = events as u32;
        let answer = tokio::time::timeout(
            timeout,
            peer.publish(target, credential.as_deref(), body, n),
        )
        .await;
        match answer {
            Err(_) => BatchAttempt::All(Attempt::Transport(TransportError::Timeout)),
            Ok(Ok(ack)) => outcomes(&ack, events),
            Ok(Err(e)) => {
                tracing::debug!(peer = %peer.address(), target, events = n, error = %e, "QUIC frame not acknowledged");
                BatchAttempt::All(Attempt::Transport(e.transport()))
            }
        }
    }
}

/// Each event's outcome from its frame's ack (`events` events).
fn outcomes(ack: &Ack, events: usize) -> BatchAttempt {
    let status = StatusCode::from_u16(ack.status).unwrap_or(StatusCode::BAD_GATEWAY);
    if ack.status != 202 {
        let retry_after =
            (ack.retry_after_ms > 0).then(|| ack.retry_after_ms.div_ceil(1000).to_string());
        return BatchAttempt::All(Attempt::Response(Response {
            status,
            retry_after,
            reply: None,
            body_excerpt: Bytes::copy_from_slice(ack.message.as_bytes()),
        }));
    }
    if ack.rejected.is_empty() && ack.accepted as usize == events {
        return BatchAttempt::All(Attempt::accepted());
    }
    // The decoder checked that accepted + rejected ≤ events; anything unaccounted for is a
    // protocol error, never a success.
    let consistent = ack.accepted as usize + ack.rejected.len() == events;
    let mut rejected = ack.rejected.iter().peekable();
    let each = (0..events)
        .map(|i| {
            if let Some(r) = rejected.next_if(|r| r.index as usize == i) {
                Attempt::Response(Response {
                    status: StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST),
                    retry_after: None,
                    reply: None,
                    body_excerpt: Bytes::copy_from_slice(r.error.as_bytes()),
                })
            } else if consistent {
                Attempt::accepted()
            } else {
                Attempt::Transport(TransportError::Protocol)
            }
        })
        .collect();
    BatchAttempt::Each(each)
}

#[cfg(test)]
mod tests {
    use triggerfish_core::quic::EventRejection;

    use super::*;
    use crate::sinks::batch::pending;

    fn status(a: Attempt) -> (u16, Option<String>, String) {
        match a {
            Attempt::Response(r) => (
                r.status.as_u16(),
                r.retry_after,
                String::from_utf8_lossy(&r.body_excerpt).into_owned(),
            ),
            Attempt::Transport(t) => (0, None, t.to_string()),
            _ => (1, None, String::new()),
        }
    }

    #[test]
    fn each_event_gets_its_own_outcome_from_the_ack() {
        let (items, mut rx) = pending(4, &[]);
        let ack = Ack::accepted(
            2,
            vec![
                EventRejection {
                    index: 1,
                    status: 400,
                    error: "missing required attribute \"id\"".into(),
                },
                EventRejection {
                    index: 3,
                    status: 413,
                    error: "too big".into(),
                },
            ],
        );
        complete(items, outcomes(&ack, 4));
        let got: Vec<_> = rx
            .iter_mut()
            .map(|r| status(r.try_recv().unwrap()))
            .collect();
        assert_eq!(got[0].0, 202);
        assert_eq!(
            got[1],
            (400, None, "missing required attribute \"id\"".into())
        );
        assert_eq!(got[2].0, 202);
        assert_eq!(got[3], (413, None, "too big".into()));
    }

    #[test]
    fn a_frame_refused_whole_refuses_every_event_with_its_retry_after() {
        let (items, mut rx) = pending(3, &[]);
        complete(
            items,
            outcomes(&Ack::retry_later(429, "queues are full", 1500), 3),
        );
        for r in &mut rx {
            assert_eq!(
                status(r.try_recv().unwrap()),
                (429, Some("2".into()), "queues are full".into())
            );
        }
    }

    #[test]
    fn an_ack_that_does_not_add_up_is_never_a_success() {
        let (items, mut rx) = pending(3, &[]);
        complete(items, outcomes(&Ack::accepted(1, vec![]), 3));
        for r in &mut rx {
            assert_eq!(status(r.try_recv().unwrap()).2, "invalid HTTP response");
        }
    }
}
