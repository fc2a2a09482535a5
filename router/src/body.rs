//! Reading HTTP bodies with a size limit enforced while reading.
//!
//! Every body the router reads (ingress requests, subscriber replies, webhook payloads) goes
//! through [`read_limited`]: a `Content-Length` over the limit is refused before a byte is
//! read, and a body without one is cut off as soon as it passes the limit. Nothing is ever
//! buffered whole and checked afterwards. A body whose sender goes quiet for
//! [`BODY_IDLE_TIMEOUT`] is given up (HTTP 408), so a client that declares a body and trickles
//! it, or stops, cannot hold a connection and its task for ever.
//!
//! Request bodies also take a share of their listener's byte budget ([`Budget`], [`Held`]) for
//! the bytes that have arrived, never for the length a header declares, so the memory that
//! bodies being read can take, over every connection, is bounded: `limits.maxBufferedBytes`
//! for each HTTP listener that reads bodies (ingress, webhooks, `triggerfish worker`),
//! `quic.maxBufferedBytes` for QUIC. A body that finds no room within [`BUFFER_WAIT`] is
//! refused with 429 ([`BodyError::Busy`]).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use tokio::sync::Semaphore;
use tower_http::timeout::{TimeoutBody, TimeoutError};

/// The longest wait for the next bytes of a body. Between reads, not for the whole body, so a
/// large body over a slow link is not cut off while it is moving (nginx's
/// `client_body_timeout` works the same way).
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is longer than the limit (HTTP 413).
    #[error("body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// No bytes of the body arrived for this long (HTTP 408).
    #[error("the body stalled: no bytes for {0:?}")]
    Stalled(Duration),
    /// The byte budget of bodies being read had no room within [`BUFFER_WAIT`] (HTTP 429,
    /// with `Retry-After`): other requests hold it; try again shortly.
    #[error("ingress buffers are full")]
    Busy,
    /// The connection failed while the body was being read.
    #[error("reading the body failed: {0}")]
    Read(String),
}

impl BodyError {
    /// The HTTP status that answers it: 413, 408, 429, or 400.
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Stalled(_) => StatusCode::REQUEST_TIMEOUT,
            BodyError::Busy => StatusCode::TOO_MANY_REQUESTS,
            BodyError::Read(_) => StatusCode::BAD_REQUEST,
        }
    }
}

/// Reads a whole body, failing as soon as it exceeds `limit` bytes.
pub async fn read_limited<B>(headers: &HeaderMap, body: B, limit: usize) -> Result<Bytes, BodyError>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    read_budgeted(headers, body, limit, None).await
}

/// Reads a whole body as [`read_limited`] does, and takes `held`'s budget for each chunk as it
/// arrives: the memory the body takes is counted from its first byte until `held` is dropped.
async fn read_budgeted<B>(
    headers: &HeaderMap,
    body: B,
    limit: usize,
    held: Option<&mut Held<'_>>,
) -> Result<Bytes, BodyError>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    read_with_idle_timeout(body, limit, BODY_IDLE_TIMEOUT, held).await
}

/// Reads `body` whole, each frame within `idle` of the one before, at most `limit` bytes,
/// taking `held`'s budget for each frame. A body of one frame is kept as it is; the frames of
/// a longer one are copied once, at the end, into a buffer of the exact size (as
/// `http_body_util`'s `Collected` does).
async fn read_with_idle_timeout<B>(
    body: B,
    limit: usize,
    idle: Duration,
    mut held: Option<&mut Held<'_>>,
) -> Result<Bytes, BodyError>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let mut body = std::pin::pin!(Limited::new(TimeoutBody::new(idle, body), limit));
    let mut chunks: Vec<Bytes> = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(BodyError::TooLarge { limit });
            }
            Err(e) if e.is::<TimeoutError>() => return Err(BodyError::Stalled(idle)),
            Err(e) => return Err(BodyError::Read(e.to_string())),
        };
        // Trailers carry nothing an event needs.
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        if let Some(held) = held.as_deref_mut() {
            held.take(data.len()).await.map_err(|_| BodyError::Busy)?;
        }
        chunks.push(data);
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => {
            let mut joined = BytesMut::with_capacity(chunks.iter().map(Bytes::len).sum());
            for c in &chunks {
                joined.extend_from_slice(c);
            }
            joined.freeze()
        }
    })
}

/// How long a body waits for room in its byte budget before it is refused (HTTP 429, or a QUIC
/// ack of 429).
///
/// Long enough to ride out a burst of large bodies being decoded, short enough that bodies
/// holding the budget while they stall (partly sent, then nothing) cannot hold other producers
/// until the idle timeout.
pub const BUFFER_WAIT: Duration = Duration::from_secs(1);

/// Why a budget could not be taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoRoom {
    /// No room came within [`BUFFER_WAIT`].
    Full,
    /// The budget was closed (the server is going away).
    Closed,
}

/// The byte budget shared by the bodies one listener is reading: `limits.maxBufferedBytes` for
/// each HTTP listener, `quic.maxBufferedBytes` for the QUIC ingress. Sized at start; only a
/// restart resizes it.
pub struct Budget {
    bytes: Semaphore,
    size: usize,
}

impl Budget {
    /// A budget of `size` bytes (at most [`Semaphore::MAX_PERMITS`]).
    pub fn new(size: usize) -> Budget {
        let size = size.min(Semaphore::MAX_PERMITS);
        Budget {
            bytes: Semaphore::new(size),
            size,
        }
    }

    /// Nothing held yet, for a body of at most `limit` bytes (a reload can raise
    /// `maxRequestBytes` above the budget, which then caps what one body takes).
    pub fn hold(&self, limit: usize) -> Held<'_> {
        Held::new(&self.bytes, limit.min(self.size))
    }

    /// Reads a whole body as [`read_limited`] does, taking this budget for each chunk as it
    /// arrives. Returns the share with the body: keep it while the body's bytes are held.
    pub async fn read<B>(
        &self,
        headers: &HeaderMap,
        body: B,
        limit: usize,
    ) -> (Held<'_>, Result<Bytes, BodyError>)
    where
        B: Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let mut held = self.hold(limit);
        let read = read_budgeted(headers, body, limit, Some(&mut held)).await;
        (held, read)
    }
}

/// One body's share of a byte budget (a semaphore of one permit per byte), taken as its bytes
/// arrive and given back on drop.
pub struct Held<'a> {
    budget: &'a Semaphore,
    held: usize,
    /// The most one body takes: the whole budget (a body larger than that cannot be
    /// configured, as the budget must be at least `maxRequestBytes`).
    cap: usize,
}

impl<'a> Held<'a> {
    /// Nothing held yet of `budget`, of which one body takes at most `cap` bytes.
    fn new(budget: &'a Semaphore, cap: usize) -> Held<'a> {
        Held {
            budget,
            held: 0,
            cap,
        }
    }

    /// Takes `n` more bytes of budget, waiting at most [`BUFFER_WAIT`] for them.
    pub async fn take(&mut self, n: usize) -> Result<(), NoRoom> {
        let n = n.min(self.cap - self.held);
        if n == 0 {
            return Ok(());
        }
        let wanted = u32::try_from(n).unwrap_or(u32::MAX);
        // The common case, room at once, without arming a timer.
        let permit = match self.budget.try_acquire_many(wanted) {
            Ok(permit) => permit,
            Err(tokio::sync::TryAcquireError::Closed) => return Err(NoRoom::Closed),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                match tokio::time::timeout(BUFFER_WAIT, self.budget.acquire_many(wanted)).await {
                    Ok(Ok(permit)) => permit,
                    Ok(Err(_closed)) => return Err(NoRoom::Closed),
                    Err(_elapsed) => return Err(NoRoom::Full),
                }
            }
        };
        permit.forget();
        self.held += wanted as usize;
        Ok(())
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.budget.add_permits(self.held);
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use futures::StreamExt as _;
    use http_body::Frame;
    use http_body_util::StreamBody;

    use super::*;

    /// A body of `chunks`, then silence for ever.
    fn stalling(chunks: &[&'static [u8]]) -> impl Body<Data = Bytes, Error = Infallible> {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = chunks
            .iter()
            .map(|c| Ok(Frame::data(Bytes::from_static(c))))
            .collect();
        StreamBody::new(futures::stream::iter(frames).chain(futures::stream::pending()))
    }

    #[tokio::test]
    async fn a_body_that_goes_quiet_is_given_up_with_408() {
        let idle = Duration::from_millis(50);
        let err = read_with_idle_timeout(stalling(&[b"[{", b"\"a\""]), 1024, idle, None)
            .await
            .unwrap_err();
        assert!(matches!(err, BodyError::Stalled(d) if d == idle), "{err:?}");
        assert_eq!(err.status(), StatusCode::REQUEST_TIMEOUT);
    }

    #[tokio::test]
    async fn chunks_are_joined_and_the_limit_holds() {
        let body = |chunks: Vec<&'static [u8]>| {
            let frames: Vec<Result<Frame<Bytes>, Infallible>> = chunks
                .into_iter()
                .map(|c| Ok(Frame::data(Bytes::from_static(c))))
                .collect();
            StreamBody::new(futures::stream::iter(frames))
        };
        let idle = Duration::from_secs(5);
        let got = read_with_idle_timeout(body(vec![b"ab", b"", b"cd"]), 10, idle, None).await;
        assert_eq!(got.unwrap(), Bytes::from_static(b"abcd"));
        let got = read_with_idle_timeout(body(vec![b"abcdef", b"ghijk"]), 10, idle, None).await;
        assert!(
            matches!(got, Err(BodyError::TooLarge { limit: 10 })),
            "{got:?}"
        );
        let got = read_with_idle_timeout(body(vec![]), 10, idle, None).await;
        assert!(got.unwrap().is_empty());
    }
}
