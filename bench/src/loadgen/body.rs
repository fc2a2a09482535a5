//! Reading an HTTP body with a size limit, frame by frame. (`BodyExt::collect` is banned in
//! this workspace because it has no limit.)

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use hyper::body::Body;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body is longer than the limit.
    #[error("body larger than {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The connection failed while the body was being read.
    #[error("reading the body: {0}")]
    Read(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Reads the whole body, failing once it passes `limit` bytes. A body of one frame is
/// returned without a copy.
pub async fn read_limited<B>(body: B, limit: usize) -> Result<Bytes, BodyError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut body = std::pin::pin!(body);
    let mut first: Option<Bytes> = None;
    let mut rest = BytesMut::new();
    let mut len = 0_usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|e| BodyError::Read(e.into()))?.into_data() else {
            continue; // trailers
        };
        len += data.len();
        if len > limit {
            return Err(BodyError::TooLarge { limit });
        }
        match &first {
            None if rest.is_empty() => first = Some(data),
            _ => {
                if let Some(f) = first.take() {
                    rest.extend_from_slice(&f);
                }
                rest.extend_from_slice(&data);
            }
        }
    }
    Ok(first.unwrap_or_else(|| rest.freeze()))
}

/// Reads and discards the body, failing once it passes `limit` bytes; returns its length.
pub async fn discard_limited<B>(body: B, limit: usize) -> Result<usize, BodyError>
where
    B: Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut body = std::pin::pin!(body);
    let mut len = 0_usize;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(|e| BodyError::Read(e.into()))?.into_data() {
            len += data.len();
            if len > limit {
                return Err(BodyError::TooLarge { limit });
            }
        }
    }
    Ok(len)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::{Full, StreamBody};
    use hyper::body::Frame;

    use super::*;

    fn frames(parts: &[&'static str]) -> impl Body<Data = Bytes, Error = Infallible> {
        let frames: Vec<Result<Frame<Bytes>, Infallible>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(futures::stream::iter(frames))
    }

    #[tokio::test]
    async fn reads_whole_bodies_up_to_the_limit() {
        let one = read_limited(Full::new(Bytes::from_static(b"hello")), 5)
            .await
            .unwrap();
        assert_eq!(one, "hello");
        let many = read_limited(frames(&["he", "ll", "o"]), 5).await.unwrap();
        assert_eq!(many, "hello");
        assert!(matches!(
            read_limited(frames(&["he", "llo!"]), 5).await,
            Err(BodyError::TooLarge { limit: 5 })
        ));
        assert_eq!(discard_limited(frames(&["a", "bc"]), 3).await.unwrap(), 3);
        assert!(discard_limited(frames(&["a", "bcd"]), 3).await.is_err());
        assert_eq!(read_limited(frames(&[]), 0).await.unwrap(), "");
    }
}
