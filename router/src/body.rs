//! Reading HTTP bodies with a size limit enforced while reading.
//!
//! Every body the router reads (ingress requests, subscriber replies, webhook payloads) goes
//! through [`read_limited`]: a `Content-Length` over the limit is refused before a byte is
//! read, and a body without one is cut off as soon as it passes the limit. Nothing is ever
//! buffered whole and checked afterwards.

use bytes::Bytes;
use http::HeaderMap;
use http_body::Body;
use http_body_util::{BodyExt, Limited};

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is longer than the limit (HTTP 413).
    #[error("body exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The connection failed while the body was being read.
    #[error("reading the body failed: {0}")]
    Read(String),
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
    // The one place bodies are collected: behind `Limited`.
    #[allow(clippy::disallowed_methods)]
    let collected = Limited::new(body, limit).collect().await;
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge { limit }),
        Err(e) => Err(BodyError::Read(e.to_string())),
    }
}
