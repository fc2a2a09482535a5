//! QUIC subscribers: `quic://host:port/{namespace}/{broker}`, another Triggerfish's QUIC
//! ingress (router-to-router forwarding, or a remote worker pool).
//!
//! The dispatcher makes one attempt per event, as for every sink. This sink gathers the
//! attempts that are waiting at the same moment into frames, and completes each attempt with
//! its own outcome from the ack:
//!
//! ```text
//!  delivery tasks ──(event, oneshot)──► batcher task ──frame──► stream on the shared
//!   (one per event,   bounded channel    per sink: up to        connection to the peer
//!    retries and                         `batch.maxEvents`,           │
//!    dead letters                        `batch.linger`, and          ▼
//!    as usual)        ◄──── Attempt ──── ≤ 16 frames in flight    ack: per-index outcome
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

use bytes::{BufMut as _, Bytes, BytesMut};
use http::StatusCode;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, oneshot};
use triggerfish_core::config::{Batching, QuicDestination};
use triggerfish_core::delivery::{InternalError, TransportError};
use triggerfish_core::event::{EncodeOptions, EventView, encode_structured};
use triggerfish_core::quic::Ack;

use super::{Attempt, Request, Response};
use crate::auth::outbound::Credential;
use crate::quic::client::Peer;

/// Frames in flight per sink at once.
const MAX_FRAMES_IN_FLIGHT: usize = 16;

/// The longest a frame may wait for its ack, so that a server that never answers cannot hold
/// a frame slot for ever (each attempt has its own, usually shorter, timeout as well).
const FRAME_TIMEOUT: Duration = Duration::from_secs(60);

/// A frame stops growing at this many body bytes (a server's default `maxRequestBytes` is
/// 4 MiB); an event larger than this still goes, alone.
const MAX_FRAME_BYTES: usize = 1 << 20;

/// One QUIC destination and the batching task in front of it.
#[derive(Clone)]
pub struct QuicSink {
    url: Arc<str>,
    tx: mpsc::Sender<Pending>,
}

struct Pending {
    /// The event, encoded for the frame (structured JSON).
    event: Bytes,
    done: oneshot::Sender<Attempt>,
}

impl QuicSink {
    /// A sink for `dest` over `peer`'s connection; starts its batching task, which ends when
    /// the last clone of the sink is dropped.
    /// Frames carry `credential` (a bearer token) when given.
    pub fn new(
        dest: &QuicDestination,
        peer: Arc<Peer>,
        credential: Option<Credential>,
    ) -> QuicSink {
        let max = dest.batch.max_events.get() as usize;
        let (tx, rx) = mpsc::channel(max.saturating_mul(2).max(16));
        let frames = Frames {
            peer,
            target: Arc::from(dest.target.as_str()),
            credential: credential.map(Arc::new),
        };
        tokio::spawn(batch(rx, frames, dest.batch));
        QuicSink {
            url: Arc::from(dest.url.as_str()),
            tx,
        }
    }

    /// The destination URI.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Makes one attempt: the event joins the next frame.
    pub async fn send(
        &self,
        view: &EventView<'_>,
        opts: &EncodeOptions<'_>,
        req: &Request,
    ) -> Attempt {
        let (done, answer) = oneshot::channel();
        let pending = Pending {
            event: encode_structured(view, opts),
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

/// Where a sink's frames go, and with which credential.
#[derive(Clone)]
struct Frames {
    peer: Arc<Peer>,
    target: Arc<str>,
    credential: Option<Arc<Credential>>,
}

/// The batching task: gathers waiting attempts into frames.
async fn batch(mut rx: mpsc::Receiver<Pending>, frames_to: Frames, batching: Batching) {
    let max = batching.max_events.get() as usize;
    let frames = Arc::new(Semaphore::new(MAX_FRAMES_IN_FLIGHT));
    while let Some(first) = rx.recv().await {
        // While every frame slot is busy, events keep gathering in the channel.
        let Ok(slot) = Arc::clone(&frames).acquire_owned().await else {
            break;
        };
        let mut bytes = first.event.len();
        let mut items = vec![first];
        let deadline = tokio::time::Instant::now() + batching.linger;
        while items.len() < max && bytes < MAX_FRAME_BYTES {
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
        let to = frames_to.clone();
        tokio::spawn(async move {
            send_frame(&to, items).await;
            drop(slot);
        });
    }
}

/// Sends one frame and completes each attempt from the ack.
async fn send_frame(to: &Frames, items: Vec<Pending>) {
    let (peer, target) = (&to.peer, &*to.target);
    let credential = match to.credential.as_deref().map(Credential::authorization) {
        None => None,
        Some(Ok(value)) => Some(Bytes::copy_from_slice(value.as_bytes())),
        Some(Err(e)) => {
            tracing::error!(peer = %peer.address(), target, error = %e, "no bearer token for the subscriber");
            for p in items {
                let _ = p.done.send(Attempt::Internal(InternalError::Unavailable));
            }
            return;
        }
    };
    let size = items.iter().map(|p| p.event.len() + 1).sum::<usize>() + 2;
    let mut body = BytesMut::with_capacity(size);
    body.put_u8(b'[');
    for (i, p) in items.iter().enumerate() {
        if i > 0 {
            body.put_u8(b',');
        }
        body.put_slice(&p.event);
    }
    body.put_u8(b']');
    let n = items.len() as u32;
    let answer = tokio::time::timeout(
        FRAME_TIMEOUT,
        peer.publish(target, credential.as_deref(), body.freeze(), n),
    )
    .await;
    match answer {
        Err(_) => {
            for p in items {
                let _ = p.done.send(Attempt::Transport(TransportError::Timeout));
            }
        }
        Ok(Ok(ack)) => complete(items, &ack),
        Ok(Err(e)) => {
            tracing::debug!(peer = %peer.address(), target, events = n, error = %e, "QUIC frame not acknowledged");
            let t = e.transport();
            for p in items {
                let _ = p.done.send(Attempt::Transport(t));
            }
        }
    }
}

/// One attempt per event from a frame's ack.
fn complete(items: Vec<Pending>, ack: &Ack) {
    let status = StatusCode::from_u16(ack.status).unwrap_or(StatusCode::BAD_GATEWAY);
    if ack.status != 202 {
        let retry_after =
            (ack.retry_after_ms > 0).then(|| ack.retry_after_ms.div_ceil(1000).to_string());
        for p in items {
            let _ = p.done.send(Attempt::Response(Response {
                status,
                retry_after: retry_after.clone(),
                reply: None,
                body_excerpt: Bytes::copy_from_slice(ack.message.as_bytes()),
            }));
        }
        return;
    }
    // The decoder checked that accepted + rejected ≤ events; anything unaccounted for is a
    // protocol error, never a success.
    let consistent = ack.accepted as usize + ack.rejected.len() == items.len();
    let mut rejected = ack.rejected.iter().peekable();
    for (i, p) in items.into_iter().enumerate() {
        let attempt = if let Some(r) = rejected.next_if(|r| r.index as usize == i) {
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
        };
        let _ = p.done.send(attempt);
    }
}

#[cfg(test)]
mod tests {
    use triggerfish_core::quic::EventRejection;

    use super::*;

    fn pending(n: usize) -> (Vec<Pending>, Vec<oneshot::Receiver<Attempt>>) {
        (0..n)
            .map(|_| {
                let (done, rx) = oneshot::channel();
                (
                    Pending {
                        event: Bytes::new(),
                        done,
                    },
                    rx,
                )
            })
            .unzip()
    }

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
        let (items, mut rx) = pending(4);
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
        complete(items, &ack);
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
        let (items, mut rx) = pending(3);
        complete(items, &Ack::retry_later(429, "queues are full", 1500));
        for r in &mut rx {
            assert_eq!(
                status(r.try_recv().unwrap()),
                (429, Some("2".into()), "queues are full".into())
            );
        }
    }

    #[test]
    fn an_ack_that_does_not_add_up_is_never_a_success() {
        let (items, mut rx) = pending(3);
        complete(items, &Ack::accepted(1, vec![]));
        for r in &mut rx {
            assert_eq!(status(r.try_recv().unwrap()).2, "invalid HTTP response");
        }
    }
}
