//! Reading HTTP bodies with a size limit enforced while reading.
//!
//! Every body the router reads (ingress requests, subscriber replies, webhook payloads) goes
//! through [`read_limited`]: a `Content-Length` over the limit is refused before a byte is
//! read, and a body without one is cut off as soon as it passes the limit. Nothing is ever
//! buffered whole and checked afterwards. A body whose sender goes quiet for
//! [`BODY_IDLE_TIMEOUT`] is given up (HTTP 408), so a client that declares a body and trickles
//! it, or stops, cannot hold a connection and its task for ever.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
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
    /// The connection failed while the body was being read.
    #[error("reading the body failed: {0}")]
    Read(String),
}

impl BodyError {
    /// The HTTP status that answers it: 413, 408, or 400.
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Stalled(_) => StatusCode::REQUEST_TIMEOUT,
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
    let declared = headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge { limit });
    }
    read_with_idle_timeout(body, limit, BODY_IDLE_TIMEOUT).await
}

/// Reads `body` whole, each frame within `idle` of the one before, at most `limit` bytes.
async fn read_with_idle_timeout<B>(
    body: B,
    limit: usize,
    idle: Duration,
) -> Result<Bytes, BodyError>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    // The one place bodies are collected: behind `Limited`.
    #[allow(clippy::disallowed_methods)]
    let collected = Limited::new(TimeoutBody::new(idle, body), limit)
        .collect()
        .await;
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge { limit }),
        Err(e) if e.is::<TimeoutError>() => Err(BodyError::Stalled(idle)),
        Err(e) => Err(BodyError::Read(e.to_string())),
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
        let err = read_with_idle_timeout(stalling(&[b"[{", b"\"a\""]), 1024, idle)
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
        let got = read_with_idle_timeout(body(vec![b"ab", b"", b"cd"]), 10, idle).await;
        assert_eq!(got.unwrap(), Bytes::from_static(b"abcd"));
        let got = read_with_idle_timeout(body(vec![b"abcdef", b"ghijk"]), 10, idle).await;
        assert!(
            matches!(got, Err(BodyError::TooLarge { limit: 10 })),
            "{got:?}"
        );
        let got = read_with_idle_timeout(body(vec![]), 10, idle).await;
        assert!(got.unwrap().is_empty());
    }
}
