//! QUIC ingress: publish frames on bidirectional streams (ALPN `triggerfish/1`), answered
//! with ack frames; `docs/quic-protocol.md` is the specification.
//!
//! Tasks: one accept loop per endpoint, one task per connection (accepting streams), one
//! task per stream (reading one frame, answering one ack). What bounds them:
//! - connections: `quic.maxConnections`; more are refused during the handshake;
//! - streams per connection: `quic.maxStreamsPerConnection`, enforced by QUIC itself (the
//!   client cannot open more until one ends);
//! - frame bodies: `limits.maxRequestBytes` each, refused from the header alone; and
//!   `quic.maxBufferedBytes` over all streams, taken by the bytes that have arrived (not by
//!   the size a header declares, which would let a client that declares large frames and
//!   sends nothing hold it). A stream that finds no room stops reading, so its QUIC
//!   flow-control window closes and the sender stalls; after a second without room the frame
//!   is answered 429;
//! - time: `quic.frameTimeout` for a whole frame to arrive, `quic.idleTimeout` per
//!   connection.
//!
//! A frame is decoded by the same batched-mode decoder as HTTP ingress, and published to the
//! same store. Unlike HTTP, acceptance is **per event**: valid events are queued, invalid ones
//! are named in the ack with the HTTP error text. Queues that are full refuse the whole frame
//! (429 in the ack, with a retry-after). A frame the server cannot read resets its stream with
//! a code; the connection and the other streams carry on.
//!
//! Senders are checked by the same [`crate::auth::Gate`] as HTTP ingress, in the same order: a
//! frame's credential (flag `0x01`, the bytes HTTP would carry in `Authorization`) before its
//! body is read (401, or 503 while the keys cannot be fetched), event policies on the decoded
//! events (403: the whole frame is refused, as over HTTP), then the rate limits (429 with a
//! retry-after).
//!
//! What this module does not do: TLS material (see [`crate::quic::tls`]), or anything after
//! the store (shards and delivery are shared with HTTP ingress).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use bytes::{Bytes, BytesMut};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use triggerfish_core::event::decode_batched;
use triggerfish_core::quic::publish::{CREDENTIAL_LEN_BYTES, HEADER_LEN, parse_credential_len};
use triggerfish_core::quic::{
    Ack, ConnectionCode, EventRejection, FrameError, FrameLimits, PublishHeader, StreamCode, Target,
};

use crate::body::{Budget, Held, NoRoom};
use crate::metrics::{IngressLabels, IngressOutcome, Metrics, QuicResetLabels};
use crate::shard::Snapshot;
use crate::store::{OfferError, Store, arrival_now};

/// The most bytes a connection may have in flight to the server, unread, over all its
/// streams (QUIC's connection-level flow control). With `quic.maxConnections`, it bounds what
/// the QUIC stack buffers for clients that send faster than the ingress reads: 1,024
/// connections × 16 MiB at worst. Ample for throughput: a producer with 64 frames of 100
/// events in flight has under 2 MiB outstanding, and 16 MiB covers a 1 Gbit/s path with a
/// 130 ms round trip.
const CONNECTION_WINDOW: u32 = 16 << 20;

/// The retry-after a full or unavailable server asks for, as HTTP ingress's `Retry-After: 1`.
pub const RETRY_AFTER_MS: u32 = 1000;

/// Limits of the QUIC ingress, fixed for the life of the process.
#[derive(Clone, Copy, Debug)]
pub struct QuicLimits {
    /// Most connections at once.
    pub max_connections: usize,
    /// Most concurrent streams per connection.
    pub max_streams_per_connection: u32,
    /// Most bytes of frame bodies being read or decoded, over all streams.
    pub max_buffered_bytes: usize,
    /// Connections idle this long are closed.
    pub idle_timeout: Duration,
    /// A frame must arrive whole within this long.
    pub frame_timeout: Duration,
}

/// Shared state of the QUIC ingress.
pub struct QuicIngress {
    /// The routing snapshot: brokers and the (reloadable) size limits.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Where accepted events go.
    pub store: Store,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Set while shutting down: new frames get 503.
    pub stopping: CancellationToken,
    /// Fixed limits.
    pub limits: QuicLimits,
    buffered: Budget,
    connections: AtomicUsize,
}

/// Why a stream was reset instead of answered.
#[derive(Debug)]
enum StreamFailure {
    /// The frame broke the protocol.
    Frame(FrameError),
    /// The frame did not arrive in time.
    Timeout,
    /// The client reset its side or the connection went away: nobody to answer.
    Gone,
    /// No room in the body budget within [`crate::body::BUFFER_WAIT`]: answered 429, not reset.
    NoRoom,
}

impl StreamFailure {
    fn code(&self) -> Option<StreamCode> {
        match self {
            StreamFailure::Frame(e) => Some(e.code()),
            StreamFailure::Timeout => Some(StreamCode::Timeout),
            StreamFailure::Gone | StreamFailure::NoRoom => None,
        }
    }
}

/// The result of one frame, for the ack and the metrics.
struct Handled {
    ack: Ack,
    broker: Option<String>,
    outcome: IngressOutcome,
    /// Events, by whether they were queued.
    accepted: usize,
    rejected: usize,
}

impl QuicIngress {
    /// The ingress state.
    pub fn new(
        snapshot: Arc<ArcSwap<Snapshot>>,
        store: Store,
        metrics: Arc<Metrics>,
        stopping: CancellationToken,
        limits: QuicLimits,
    ) -> QuicIngress {
        QuicIngress {
            snapshot,
            store,
            metrics,
            stopping,
            buffered: Budget::new(limits.max_buffered_bytes),
            connections: AtomicUsize::new(0),
            limits,
        }
    }

    /// The transport parameters that enforce the limits.
    pub fn transport_config(&self) -> quinn::TransportConfig {
        let mut t = quinn::TransportConfig::default();
        // Quinn's default connection window is unbounded: with every stream at its own window
        // (1.25 MB), a connection of 64 stalled streams could make the server buffer 80 MB.
        t.receive_window(CONNECTION_WINDOW.into());
        t.max_concurrent_bidi_streams(self.limits.max_streams_per_connection.into());
        t.max_concurrent_uni_streams(0u8.into());
        t.max_idle_timeout(quinn::IdleTimeout::try_from(self.limits.idle_timeout).ok());
        // The server sends acks, small whatever the path; what it receives is set by the
        // endpoint (`crate::quic::endpoint`) and chosen by each client.
        crate::quic::tune_for_path(&mut t, false);
        t
    }

    /// Accepts connections until `drained`, then closes the endpoint.
    pub async fn serve(self: Arc<Self>, endpoint: quinn::Endpoint, drained: CancellationToken) {
        let tracker = TaskTracker::new();
        loop {
            let incoming = tokio::select! {
                i = endpoint.accept() => i,
                () = drained.cancelled() => break,
            };
            let Some(incoming) = incoming else { break };
            if self.connections.load(Ordering::Acquire) >= self.limits.max_connections {
                self.metrics.quic_connections_refused.inc();
                tracing::warn!(peer = %incoming.remote_address(), limit = self.limits.max_connections,
                    "QUIC connection refused: too many connections");
                incoming.refuse();
                continue;
            }
            tracker.spawn(Arc::clone(&self).connection(incoming));
        }
        endpoint.close(ConnectionCode::NoError.as_u32().into(), b"shutting down");
        tracker.close();
        let _ = tokio::time::timeout(Duration::from_secs(1), tracker.wait()).await;
        let _ = tokio::time::timeout(Duration::from_secs(1), endpoint.wait_idle()).await;
    }

    async fn connection(self: Arc<Self>, incoming: quinn::Incoming) {
        let peer = incoming.remote_address();
        self.connections.fetch_add(1, Ordering::AcqRel);
        let _open = Open(&self.connections, &self.metrics);
        self.metrics.quic_connections.inc();
        let connection = match incoming.await {
            Ok(c) => c,
            Err(e) => {
                self.metrics.quic_handshake_failures.inc();
                tracing::debug!(%peer, error = %e, "QUIC handshake failed");
                return;
            }
        };
        tracing::debug!(%peer, "QUIC connection open");
        let streams = TaskTracker::new();
        loop {
            match connection.accept_bi().await {
                Ok((send, recv)) => {
                    streams.spawn(Arc::clone(&self).stream(send, recv));
                }
                Err(e) => {
                    tracing::debug!(%peer, reason = %e, "QUIC connection closed");
                    break;
                }
            }
        }
        streams.close();
        streams.wait().await;
    }

    async fn stream(self: Arc<Self>, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
        let started = Instant::now();
        match self.handle(&mut recv).await {
            Ok(handled) => {
                // The client may have gone; nothing to do about it. Bounded in time: a client
                // that never reads its ack must not hold the task.
                let ack = handled.ack.encode();
                match tokio::time::timeout(self.limits.frame_timeout, send.write_all(&ack)).await {
                    Ok(_) => {
                        let _ = send.finish();
                    }
                    Err(_) => {
                        let _ = send.reset(StreamCode::Timeout.as_u32().into());
                    }
                }
                let labels = IngressLabels {
                    broker: handled.broker.unwrap_or_else(|| "unknown".to_owned()),
                    outcome: handled.outcome,
                };
                self.metrics.ingress_requests.get_or_create(&labels).inc();
                if handled.accepted > 0 {
                    self.metrics
                        .ingress_events
                        .get_or_create(&labels)
                        .inc_by(handled.accepted as u64);
                }
                if handled.rejected > 0 {
                    let labels = IngressLabels {
                        outcome: IngressOutcome::Rejected,
                        ..labels
                    };
                    self.metrics
                        .ingress_events
                        .get_or_create(&labels)
                        .inc_by(handled.rejected as u64);
                }
            }
            Err(failure) => {
                if let Some(code) = failure.code() {
                    let wire = code.as_u32().into();
                    let _ = recv.stop(wire);
                    let _ = send.reset(wire);
                    self.metrics
                        .quic_resets
                        .get_or_create(&QuicResetLabels {
                            code: code_label(code),
                        })
                        .inc();
                    tracing::debug!(?failure, "QUIC stream reset");
                }
            }
        }
        self.metrics
            .ingress_duration
            .observe(started.elapsed().as_secs_f64());
    }

    /// Reads one frame and queues its events. Size and time limits apply as the bytes
    /// arrive; the body is read only once it fits in the buffer budget.
    async fn handle(&self, recv: &mut quinn::RecvStream) -> Result<Handled, StreamFailure> {
        use IngressOutcome::*;
        let snapshot = self.snapshot.load_full();
        let limits = snapshot.limits;
        let frame_limits = FrameLimits {
            max_body_bytes: limits.max_request_bytes,
        };
        let deadline = tokio::time::Instant::now() + self.limits.frame_timeout;

        let mut head = [0u8; HEADER_LEN];
        within(deadline, read_exact(recv, &mut head)).await??;
        let header = PublishHeader::parse(&head, &frame_limits).map_err(StreamFailure::Frame)?;
        let mut target = vec![0u8; header.target_len()];
        within(deadline, read_exact(recv, &mut target)).await??;
        let target = Target::parse(&target).map_err(StreamFailure::Frame)?;
        let credential = if header.has_credential() {
            let mut len = [0u8; CREDENTIAL_LEN_BYTES];
            within(deadline, read_exact(recv, &mut len)).await??;
            let len = parse_credential_len(len).map_err(StreamFailure::Frame)?;
            let mut credential = vec![0u8; len];
            within(deadline, read_exact(recv, &mut credential)).await??;
            Some(credential)
        } else {
            None
        };

        let refuse = |ack: Ack, broker: Option<String>, outcome| Handled {
            ack,
            broker,
            outcome,
            accepted: 0,
            rejected: 0,
        };
        let Some((broker, route)) = snapshot
            .brokers
            .get_key_value(target.key)
            .map(|(k, r)| (Arc::clone(k), Arc::clone(r)))
        else {
            // Answered without reading the body; the client sees STOP_SENDING, then the ack.
            let _ = recv.stop(StreamCode::NoError.as_u32().into());
            let ack = Ack::refused(404, format!("unknown broker {}", target.key));
            return Ok(refuse(ack, None, NotFound));
        };
        let label = Some(broker.to_string());
        if self.stopping.is_cancelled() {
            let _ = recv.stop(StreamCode::NoError.as_u32().into());
            let ack = Ack::retry_later(503, "shutting down", RETRY_AFTER_MS);
            return Ok(refuse(ack, label, Unavailable));
        }
        // Who is sending, before a byte of the body is read (or buffered).
        let gate = Arc::clone(&snapshot.gate);
        drop(snapshot);
        let identity = match gate.authenticate(&broker, credential.as_deref()).await {
            Ok(identity) => identity,
            Err(e) => {
                let _ = recv.stop(StreamCode::NoError.as_u32().into());
                let (ack, outcome) = match e {
                    crate::auth::Unauthenticated::KeysUnavailable => (
                        Ack::retry_later(503, e.to_string(), RETRY_AFTER_MS),
                        Unavailable,
                    ),
                    _ => (Ack::refused(401, e.to_string()), Unauthorized),
                };
                return Ok(refuse(ack, label, outcome));
            }
        };

        // Bounded memory: the body takes budget for the bytes that have arrived, chunk by
        // chunk, never for the size the header declares, so a stream that declares 4 MiB and
        // sends nothing holds nothing. A stream that finds no room stops reading, which closes
        // its QUIC flow-control window; if room does not come within BUFFER_WAIT it is
        // answered 429 rather than left waiting for the frame deadline.
        let deadline = tokio::time::Instant::now() + self.limits.frame_timeout;
        let mut held = self.buffered.hold(self.limits.max_buffered_bytes);
        let body = match within(deadline, read_body(recv, header.body_len(), &mut held)).await? {
            Ok(body) => body,
            Err(StreamFailure::NoRoom) => {
                let _ = recv.stop(StreamCode::NoError.as_u32().into());
                let ack = Ack::retry_later(429, "ingress buffers are full", RETRY_AFTER_MS);
                return Ok(refuse(ack, label, Throttled));
            }
            Err(e) => return Err(e),
        };
        within(deadline, expect_end(recv)).await??;

        let decoded = match decode_batched(body, &limits.decode) {
            Ok(d) => d,
            Err(e) => {
                let (status, outcome) = if e.is_too_large() {
                    (413, TooLarge)
                } else {
                    (400, Rejected)
                };
                return Ok(refuse(Ack::refused(status, e.to_string()), label, outcome));
            }
        };
        let rejected: Vec<EventRejection> = decoded
            .rejected
            .iter()
            .map(|e| EventRejection {
                index: e.index.unwrap_or(0) as u32,
                status: if e.is_too_large() { 413 } else { 400 },
                error: e.kind.to_string(),
            })
            .collect();
        let n = decoded.batch.len();
        let denied = gate.authorize(&broker, &identity, &decoded.batch);
        if !denied.is_empty() {
            tracing::debug!(broker = %broker, sender = %identity, events = denied.len(), "events refused by event policy");
            let message = format!(
                "forbidden: {} of {n} events are not allowed by any EventPolicy; nothing was queued",
                denied.len()
            );
            return Ok(refuse(Ack::refused(403, message), label, Forbidden));
        }
        // Before the backlog check, which matches the events as the shards will.
        let mut batch = decoded.batch;
        batch.stamp_arrival(arrival_now());
        let backlogged = route.backlogged(&batch);
        if !backlogged.is_empty() {
            let message = crate::shard::Backlogged::summary(&backlogged, n);
            return Ok(refuse(
                Ack::retry_later(429, message, RETRY_AFTER_MS),
                label,
                Backlogged,
            ));
        }
        drop(route);
        if n > 0
            && let Err(e) = gate.admit(&broker, &identity, n)
        {
            let retry_ms =
                u32::try_from(e.retry_after_secs().saturating_mul(1000)).unwrap_or(u32::MAX);
            return Ok(refuse(
                Ack::retry_later(429, e.to_string(), retry_ms),
                label,
                RateLimited,
            ));
        }
        let outcome = if n == 0 {
            Ok(())
        } else {
            self.store.publish(&broker, Arc::new(batch), None).await
        };
        drop(held);
        Ok(match outcome {
            Ok(()) => Handled {
                accepted: n,
                rejected: rejected.len(),
                ack: Ack::accepted(n as u32, rejected),
                broker: label,
                outcome: if n == 0 && !decoded.rejected.is_empty() {
                    Rejected
                } else {
                    Accepted
                },
            },
            Err(OfferError::Full) => refuse(
                Ack::retry_later(429, "queues are full", RETRY_AFTER_MS),
                label,
                Throttled,
            ),
            Err(OfferError::Unavailable(e)) => {
                refuse(Ack::retry_later(503, e, RETRY_AFTER_MS), label, Unavailable)
            }
        })
    }
}

/// Counts an open connection until dropped.
struct Open<'a>(&'a AtomicUsize, &'a Metrics);

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
        self.1.quic_connections.dec();
    }
}

async fn within<T>(
    deadline: tokio::time::Instant,
    f: impl Future<Output = T>,
) -> Result<T, StreamFailure> {
    tokio::time::timeout_at(deadline, f)
        .await
        .map_err(|_| StreamFailure::Timeout)
}

async fn read_exact(recv: &mut quinn::RecvStream, buf: &mut [u8]) -> Result<(), StreamFailure> {
    let expected = buf.len();
    recv.read_exact(buf).await.map_err(|e| match e {
        quinn::ReadExactError::FinishedEarly(got) => {
            StreamFailure::Frame(FrameError::Truncated { expected, got })
        }
        quinn::ReadExactError::ReadError(_) => StreamFailure::Gone,
    })
}

/// The most a body buffer is given before its bytes arrive.
const BODY_CAPACITY: usize = 64 * 1024;

/// Reads exactly `len` bytes into one buffer, taking budget for each chunk as it arrives (the
/// read after it waits until the budget has room). A body that arrives in one chunk is kept as
/// it is (no copy); otherwise chunks are copied into one buffer, of the exact size for bodies
/// up to [`BODY_CAPACITY`], and growing as bytes arrive beyond that, so that a header cannot
/// make the server allocate what the client never sends.
async fn read_body(
    recv: &mut quinn::RecvStream,
    len: usize,
    held: &mut Held<'_>,
) -> Result<Bytes, StreamFailure> {
    let truncated = |got| StreamFailure::Frame(FrameError::Truncated { expected: len, got });
    if len == 0 {
        return Ok(Bytes::new());
    }
    let mut buf: Option<BytesMut> = None;
    let mut got = 0usize;
    while got < len {
        let chunk = recv
            .read_chunk(len - got, true)
            .await
            .map_err(|_| StreamFailure::Gone)?
            .ok_or_else(|| truncated(got))?;
        held.take(chunk.bytes.len()).await.map_err(|e| match e {
            NoRoom::Full => StreamFailure::NoRoom,
            NoRoom::Closed => StreamFailure::Gone,
        })?;
        if got == 0 && chunk.bytes.len() == len {
            return Ok(chunk.bytes);
        }
        got += chunk.bytes.len();
        buf.get_or_insert_with(|| BytesMut::with_capacity(len.min(BODY_CAPACITY)))
            .extend_from_slice(&chunk.bytes);
    }
    Ok(buf.map(BytesMut::freeze).unwrap_or_default())
}

/// Waits for the end of the stream; a byte before it is trailing data.
async fn expect_end(recv: &mut quinn::RecvStream) -> Result<(), StreamFailure> {
    match recv.read_chunk(1, true).await {
        Ok(None) => Ok(()),
        Ok(Some(c)) => Err(StreamFailure::Frame(FrameError::TrailingData {
            extra: c.bytes.len(),
        })),
        Err(_) => Err(StreamFailure::Gone),
    }
}

fn code_label(code: StreamCode) -> &'static str {
    match code {
        StreamCode::NoError => "no_error",
        StreamCode::Malformed => "malformed",
        StreamCode::FrameTooLarge => "frame_too_large",
        StreamCode::Truncated => "truncated",
        StreamCode::TrailingData => "trailing_data",
        StreamCode::Timeout => "timeout",
        StreamCode::UnsupportedFlags => "unsupported_flags",
        StreamCode::Internal => "internal",
    }
}
