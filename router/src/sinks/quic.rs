//! QUIC subscribers: `quic://host:port/{namespace}/{broker}`, another Triggerfish's QUIC
//! ingress (router-to-router forwarding, or a remote worker pool).
//!
//! The dispatcher makes one attempt per event, as for every sink. The sink's
//! [`Batcher`] gathers the attempts that are waiting at the same moment into frames, and this
//! module completes each attempt with its own outcome from the ack:
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

use bytes::Bytes;
use http::StatusCode;
use prometheus_client::metrics::histogram::Histogram;
use std::sync::Arc;
use std::time::Duration;
use triggerfish_core::config::QuicDestination;
use triggerfish_core::delivery::{InternalError, TransportError};
use triggerfish_core::event::{EncodeOptions, EventView, encode_structured};
use triggerfish_core::quic::Ack;

use super::batch::{Batcher, MAX_BATCHES_IN_FLIGHT, Pending, complete_all, json_array};
use super::{Attempt, Request, Response};
use crate::auth::outbound::Credential;
use crate::quic::client::Peer;

/// The longest a frame may wait for its ack, so that a server that never answers cannot hold
/// a frame slot for ever (each attempt has its own, usually shorter, timeout as well).
const FRAME_TIMEOUT: Duration = Duration::from_secs(60);

/// One QUIC destination and the batching task in front of it.
#[derive(Clone)]
pub struct QuicSink {
    url: Arc<str>,
    batcher: Batcher,
}

impl QuicSink {
    /// A sink for `dest` over `peer`'s connection; starts its batching task, which ends when
    /// the last clone of the sink is dropped.
    /// Frames carry `credential` (a bearer token) when given.
    /// Each frame's size is observed in `sizes`, when given.
    pub fn new(
        dest: &QuicDestination,
        peer: Arc<Peer>,
        credential: Option<Credential>,
        sizes: Option<Histogram>,
    ) -> QuicSink {
        let frames = Arc::new(Frames {
            peer,
            target: Arc::from(dest.target.as_str()),
            credential,
        });
        let batcher = Batcher::spawn(dest.batch, MAX_BATCHES_IN_FLIGHT, sizes, move |items| {
            let frames = Arc::clone(&frames);
            async move { send_frame(&frames, items).await }
        });
        QuicSink {
            url: Arc::from(dest.url.as_str()),
            batcher,
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
        self.batcher.send(encode_structured(view, opts), req).await
    }
}

/// Where a sink's frames go, and with which credential.
struct Frames {
    peer: Arc<Peer>,
    target: Arc<str>,
    credential: Option<Credential>,
}

/// Sends one frame and completes each attempt from the ack.
async fn send_frame(to: &Frames, items: Vec<Pending>) {
    let (peer, target) = (&to.peer, &*to.target);
    let credential = match to.credential.as_ref().map(Credential::authorization) {
        None => None,
        Some(Ok(value)) => Some(Bytes::copy_from_slice(value.as_bytes())),
        Some(Err(e)) => {
            tracing::error!(peer = %peer.address(), target, error = %e, "no bearer token for the subscriber");
            complete_all(items, Attempt::Internal(InternalError::Unavailable));
            return;
        }
    };
    let n = items.len() as u32;
    let answer = tokio::time::timeout(
        FRAME_TIMEOUT,
        peer.publish(target, credential.as_deref(), json_array(&items), n),
    )
    .await;
    match answer {
        Err(_) => complete_all(items, Attempt::Transport(TransportError::Timeout)),
        Ok(Ok(ack)) => complete(items, &ack),
        Ok(Err(e)) => {
            tracing::debug!(peer = %peer.address(), target, events = n, error = %e, "QUIC frame not acknowledged");
            complete_all(items, Attempt::Transport(e.transport()));
        }
    }
}

/// One attempt per event from a frame's ack.
fn complete(items: Vec<Pending>, ack: &Ack) {
    let status = StatusCode::from_u16(ack.status).unwrap_or(StatusCode::BAD_GATEWAY);
    if ack.status != 202 {
        let retry_after =
            (ack.retry_after_ms > 0).then(|| ack.retry_after_ms.div_ceil(1000).to_string());
        let refused = Attempt::Response(Response {
            status,
            retry_after,
            reply: None,
            body_excerpt: Bytes::copy_from_slice(ack.message.as_bytes()),
        });
        complete_all(items, refused);
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
        let (items, mut rx) = pending(3, &[]);
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
        let (items, mut rx) = pending(3, &[]);
        complete(items, &Ack::accepted(1, vec![]));
        for r in &mut rx {
            assert_eq!(status(r.try_recv().unwrap()).2, "invalid HTTP response");
        }
    }
}
