//! The publish frame: what a client writes on a new bidirectional stream.
//!
//! ```text
//! 0        1        2                 4                                 8
//! +--------+--------+--------+--------+--------+--------+--------+--------+
//! | type   | flags  | target length   | body length                       |
//! | 0x01   | 0x00/1 | u16, big-endian | u32, big-endian                   |
//! +--------+--------+--------+--------+--------+--------+--------+--------+
//! | target: `{namespace}/{broker}`, UTF-8, `target length` bytes          |
//! +-----------------------------------------------------------------------+
//! | only with flag 0x01 (CREDENTIAL): credential length C, u16, then C    |
//! | bytes: what HTTP would carry in `Authorization` (`Bearer <token>`)    |
//! +-----------------------------------------------------------------------+
//! | body: a JSON array of CloudEvents (batched mode), `body length` bytes |
//! +-----------------------------------------------------------------------+
//! then the end of the stream (FIN).
//! ```
//!
//! The header comes first so that a server can refuse an oversized frame ([`FrameError::TooLarge`])
//! and size its buffer exactly before reading a byte of the body.

use super::StreamCode;
use crate::config::{check_name, check_namespace};

/// The frame type of a publish frame.
pub const FRAME_PUBLISH: u8 = 0x01;

/// Length of the fixed header.
pub const HEADER_LEN: usize = 8;

/// The longest target: a 63-byte namespace, `/`, and a 253-byte broker name (Kubernetes'
/// limits for a namespace and an object name).
pub const MAX_TARGET_BYTES: usize = 63 + 1 + 253;

/// Flag: a credential follows the target.
pub const FLAG_CREDENTIAL: u8 = 0x01;

/// The longest credential (what HTTP servers commonly allow for one header line).
pub const MAX_CREDENTIAL_BYTES: usize = 8192;

/// Length of the credential's length field.
pub const CREDENTIAL_LEN_BYTES: usize = 2;

/// Limits a server applies to publish frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameLimits {
    /// The largest body accepted (the server's `limits.maxRequestBytes`, as for HTTP).
    pub max_body_bytes: usize,
}

/// Why a publish frame was refused. Each maps to the [`StreamCode`] the stream is reset with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The first byte is not a frame type a client may send.
    #[error("unknown frame type 0x{0:02x}; a stream must start with a publish frame (0x01)")]
    UnknownType(u8),
    /// Flags this version does not define.
    #[error("unsupported flags 0x{0:02x}; protocol triggerfish/1 defines only 0x01 (credential)")]
    UnsupportedFlags(u8),
    /// The credential is empty or longer than [`MAX_CREDENTIAL_BYTES`].
    #[error("credential length {len} is outside 1..={MAX_CREDENTIAL_BYTES}")]
    CredentialLength {
        /// The declared length.
        len: usize,
    },
    /// The target is empty or longer than [`MAX_TARGET_BYTES`].
    #[error("target length {len} is outside 1..={MAX_TARGET_BYTES}")]
    TargetLength {
        /// The declared length.
        len: usize,
    },
    /// The target is not `{namespace}/{broker}` with valid Kubernetes names.
    #[error("invalid target: {0}")]
    InvalidTarget(&'static str),
    /// The declared body is over the limit.
    #[error("frame body of {size} bytes is over the limit of {limit} bytes")]
    TooLarge {
        /// The declared body length.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The bytes end before the frame does.
    #[error("frame truncated: {got} of {expected} bytes")]
    Truncated {
        /// Bytes the frame needs.
        expected: usize,
        /// Bytes there were.
        got: usize,
    },
    /// Bytes follow the frame.
    #[error("{extra} bytes follow the frame")]
    TrailingData {
        /// How many (at least).
        extra: usize,
    },
}

impl FrameError {
    /// The code the stream is reset with.
    pub fn code(&self) -> StreamCode {
        match self {
            FrameError::UnknownType(_)
            | FrameError::TargetLength { .. }
            | FrameError::InvalidTarget(_)
            | FrameError::CredentialLength { .. } => StreamCode::Malformed,
            FrameError::UnsupportedFlags(_) => StreamCode::UnsupportedFlags,
            FrameError::TooLarge { .. } => StreamCode::FrameTooLarge,
            FrameError::Truncated { .. } => StreamCode::Truncated,
            FrameError::TrailingData { .. } => StreamCode::TrailingData,
        }
    }
}

/// The fixed header of a publish frame, checked against the limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishHeader {
    credential: bool,
    target_len: u16,
    body_len: u32,
}

impl PublishHeader {
    /// A header for a target and body of these lengths; fails when either is out of range
    /// (for a client: the body is over 4 GiB − 1, or the target is empty or too long).
    pub fn new(target_len: usize, body_len: usize) -> Result<PublishHeader, FrameError> {
        if target_len == 0 || target_len > MAX_TARGET_BYTES {
            return Err(FrameError::TargetLength { len: target_len });
        }
        let body = u32::try_from(body_len).map_err(|_| FrameError::TooLarge {
            size: body_len,
            limit: u32::MAX as usize,
        })?;
        Ok(PublishHeader {
            credential: false,
            // MAX_TARGET_BYTES < u16::MAX.
            target_len: target_len as u16,
            body_len: body,
        })
    }

    /// Reads and checks a header: the type, the flags, the target length, and the body
    /// length against `limits`.
    pub fn parse(
        bytes: &[u8; HEADER_LEN],
        limits: &FrameLimits,
    ) -> Result<PublishHeader, FrameError> {
        if bytes[0] != FRAME_PUBLISH {
            return Err(FrameError::UnknownType(bytes[0]));
        }
        if bytes[1] & !FLAG_CREDENTIAL != 0 {
            return Err(FrameError::UnsupportedFlags(bytes[1]));
        }
        let target_len = usize::from(u16::from_be_bytes([bytes[2], bytes[3]]));
        if target_len == 0 || target_len > MAX_TARGET_BYTES {
            return Err(FrameError::TargetLength { len: target_len });
        }
        let body_len = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if body_len as usize > limits.max_body_bytes {
            return Err(FrameError::TooLarge {
                size: body_len as usize,
                limit: limits.max_body_bytes,
            });
        }
        Ok(PublishHeader {
            credential: bytes[1] & FLAG_CREDENTIAL != 0,
            target_len: target_len as u16,
            body_len,
        })
    }

    /// The same header, announcing a credential after the target.
    pub fn with_credential(self) -> PublishHeader {
        PublishHeader {
            credential: true,
            ..self
        }
    }

    /// Whether a credential (its length, then its bytes) follows the target.
    pub fn has_credential(self) -> bool {
        self.credential
    }

    /// The header's bytes.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let t = self.target_len.to_be_bytes();
        let b = self.body_len.to_be_bytes();
        let flags = if self.credential { FLAG_CREDENTIAL } else { 0 };
        [FRAME_PUBLISH, flags, t[0], t[1], b[0], b[1], b[2], b[3]]
    }

    /// Length of the target.
    pub fn target_len(self) -> usize {
        usize::from(self.target_len)
    }

    /// Length of the body.
    pub fn body_len(self) -> usize {
        self.body_len as usize
    }

    /// Length of the whole frame with a credential of `credential_len` bytes (0 when the
    /// header announces none).
    pub fn frame_len(self, credential_len: usize) -> usize {
        let credential = if self.credential {
            CREDENTIAL_LEN_BYTES + credential_len
        } else {
            0
        };
        HEADER_LEN + self.target_len() + credential + self.body_len()
    }
}

/// Reads a credential's length field: 1..=[`MAX_CREDENTIAL_BYTES`].
pub fn parse_credential_len(bytes: [u8; CREDENTIAL_LEN_BYTES]) -> Result<usize, FrameError> {
    let len = usize::from(u16::from_be_bytes(bytes));
    if len == 0 || len > MAX_CREDENTIAL_BYTES {
        return Err(FrameError::CredentialLength { len });
    }
    Ok(len)
}

/// A frame's target: `{namespace}/{broker}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target<'a> {
    /// The whole target, `namespace/broker`: the key brokers are looked up by.
    pub key: &'a str,
    /// The namespace.
    pub namespace: &'a str,
    /// The broker's name.
    pub broker: &'a str,
}

impl<'a> Target<'a> {
    /// Reads a target: UTF-8, exactly one `/`, a valid namespace before it and a valid name
    /// after it.
    pub fn parse(bytes: &'a [u8]) -> Result<Target<'a>, FrameError> {
        if bytes.is_empty() || bytes.len() > MAX_TARGET_BYTES {
            return Err(FrameError::TargetLength { len: bytes.len() });
        }
        let key = std::str::from_utf8(bytes).map_err(|_| FrameError::InvalidTarget("not UTF-8"))?;
        let Some((namespace, broker)) = key.split_once('/') else {
            return Err(FrameError::InvalidTarget(
                "expected {namespace}/{broker}, found no '/'",
            ));
        };
        check_namespace(namespace).map_err(|_| {
            FrameError::InvalidTarget("the namespace is not a valid Kubernetes namespace")
        })?;
        check_name(broker)
            .map_err(|_| FrameError::InvalidTarget("the broker is not a valid Kubernetes name"))?;
        Ok(Target {
            key,
            namespace,
            broker,
        })
    }
}

/// A publish frame read whole, borrowing its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Publish<'a> {
    /// The target.
    pub target: Target<'a>,
    /// The credential, as HTTP would carry it in `Authorization`.
    pub credential: Option<&'a [u8]>,
    /// The body: batched-mode JSON, not yet decoded.
    pub body: &'a [u8],
}

/// Reads a whole publish frame (header, target, body, and nothing after). Servers read the
/// header first and the rest as it arrives; this form is for tests, fuzzing and tools.
pub fn decode_publish<'a>(
    frame: &'a [u8],
    limits: &FrameLimits,
) -> Result<Publish<'a>, FrameError> {
    let Some(head) = frame.first_chunk::<HEADER_LEN>() else {
        return Err(FrameError::Truncated {
            expected: HEADER_LEN,
            got: frame.len(),
        });
    };
    let header = PublishHeader::parse(head, limits)?;
    let target_end = HEADER_LEN + header.target_len();
    let mut credential_len = 0;
    if header.has_credential()
        && let Some(len) = frame
            .get(target_end..)
            .and_then(|rest| rest.first_chunk::<CREDENTIAL_LEN_BYTES>())
    {
        credential_len = parse_credential_len(*len)?;
    }
    let expected = header.frame_len(credential_len);
    if frame.len() < expected {
        return Err(FrameError::Truncated {
            expected,
            got: frame.len(),
        });
    }
    if frame.len() > expected {
        return Err(FrameError::TrailingData {
            extra: frame.len() - expected,
        });
    }
    let target = Target::parse(&frame[HEADER_LEN..target_end])?;
    let (credential, body_start) = if header.has_credential() {
        let start = target_end + CREDENTIAL_LEN_BYTES;
        (
            Some(&frame[start..start + credential_len]),
            start + credential_len,
        )
    } else {
        (None, target_end)
    };
    Ok(Publish {
        target,
        credential,
        body: &frame[body_start..],
    })
}

/// The header, target and credential of a publish frame, to be followed by a body of
/// `body_len` bytes. Clients write the body from its own buffer after this, so it is never
/// copied.
pub fn encode_publish_head(
    target: &str,
    credential: Option<&[u8]>,
    body_len: usize,
) -> Result<Vec<u8>, FrameError> {
    Target::parse(target.as_bytes())?;
    let mut header = PublishHeader::new(target.len(), body_len)?;
    let cred_len = credential.map_or(0, <[u8]>::len);
    if credential.is_some() {
        if cred_len == 0 || cred_len > MAX_CREDENTIAL_BYTES {
            return Err(FrameError::CredentialLength { len: cred_len });
        }
        header = header.with_credential();
    }
    let mut out = Vec::with_capacity(HEADER_LEN + target.len() + CREDENTIAL_LEN_BYTES + cred_len);
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(target.as_bytes());
    if let Some(c) = credential {
        // At most MAX_CREDENTIAL_BYTES, checked above.
        out.extend_from_slice(&(c.len() as u16).to_be_bytes());
        out.extend_from_slice(c);
    }
    Ok(out)
}

/// A whole publish frame without a credential.
pub fn encode_publish(target: &str, body: &[u8]) -> Result<Vec<u8>, FrameError> {
    encode_publish_with_credential(target, None, body)
}

/// A whole publish frame, with a credential when given.
pub fn encode_publish_with_credential(
    target: &str,
    credential: Option<&[u8]>,
    body: &[u8],
) -> Result<Vec<u8>, FrameError> {
    let mut out = encode_publish_head(target, credential, body.len())?;
    out.extend_from_slice(body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: FrameLimits = FrameLimits {
        max_body_bytes: 1024,
    };

    #[test]
    fn round_trip() {
        let frame = encode_publish("default/orders", b"[]").unwrap();
        assert_eq!(&frame[..8], &[1, 0, 0, 14, 0, 0, 0, 2]);
        let p = decode_publish(&frame, &LIMITS).unwrap();
        assert_eq!(p.target.key, "default/orders");
        assert_eq!((p.target.namespace, p.target.broker), ("default", "orders"));
        assert_eq!(p.body, b"[]");
    }

    #[test]
    fn the_header_alone_refuses_an_oversized_body() {
        let head = encode_publish_head("a/b", None, 1025).unwrap();
        let header: &[u8; 8] = head.first_chunk().unwrap();
        let err = PublishHeader::parse(header, &LIMITS).unwrap_err();
        assert_eq!(
            err,
            FrameError::TooLarge {
                size: 1025,
                limit: 1024
            }
        );
        assert_eq!(err.code(), StreamCode::FrameTooLarge);
        let ok = PublishHeader::parse(
            encode_publish_head("a/b", None, 1024)
                .unwrap()
                .first_chunk()
                .unwrap(),
            &LIMITS,
        )
        .unwrap();
        assert_eq!(
            (ok.target_len(), ok.body_len(), ok.frame_len(0)),
            (3, 1024, 1035)
        );
    }

    #[test]
    fn malformed_frames_say_why_and_which_code() {
        let good = encode_publish("ns/b", b"[]").unwrap();
        let cases: Vec<(Vec<u8>, FrameError, StreamCode)> = vec![
            (
                good[..5].to_vec(),
                FrameError::Truncated {
                    expected: 8,
                    got: 5,
                },
                StreamCode::Truncated,
            ),
            (
                good[..good.len() - 1].to_vec(),
                FrameError::Truncated {
                    expected: 14,
                    got: 13,
                },
                StreamCode::Truncated,
            ),
            (
                [good.as_slice(), b" "].concat(),
                FrameError::TrailingData { extra: 1 },
                StreamCode::TrailingData,
            ),
            (
                [&[2u8][..], &good[1..]].concat(),
                FrameError::UnknownType(2),
                StreamCode::Malformed,
            ),
            (
                [&[1u8, 0x80][..], &good[2..]].concat(),
                FrameError::UnsupportedFlags(0x80),
                StreamCode::UnsupportedFlags,
            ),
            (
                vec![1, 0, 0, 0, 0, 0, 0, 0],
                FrameError::TargetLength { len: 0 },
                StreamCode::Malformed,
            ),
            (
                vec![1, 0, 0xff, 0xff, 0, 0, 0, 0],
                FrameError::TargetLength { len: 65535 },
                StreamCode::Malformed,
            ),
        ];
        for (frame, err, code) in cases {
            let got = decode_publish(&frame, &LIMITS).unwrap_err();
            assert_eq!(got, err, "{frame:?}");
            assert_eq!(got.code(), code);
        }
    }

    #[test]
    fn targets_are_namespace_slash_broker() {
        for bad in [
            &b"default"[..],
            b"/b",
            b"ns/",
            b"ns/b/c",
            b"NS/b",
            b"ns/B",
            b"n\xffs/b",
            b"ns/b c",
        ] {
            let head = PublishHeader::new(bad.len(), 0).unwrap().to_bytes();
            let frame = [&head[..], bad].concat();
            let err = decode_publish(&frame, &LIMITS).unwrap_err();
            assert!(
                matches!(err, FrameError::InvalidTarget(_)),
                "{bad:?}: {err}"
            );
            assert_eq!(err.code(), StreamCode::Malformed);
        }
        assert!(encode_publish("no-slash", b"[]").is_err());
        let long = format!("{}/{}", "n".repeat(63), "b".repeat(253));
        assert_eq!(long.len(), MAX_TARGET_BYTES);
        assert!(encode_publish(&long, b"[]").is_ok());
    }

    #[test]
    fn a_credential_rides_between_target_and_body() {
        let frame = encode_publish_with_credential("ns/b", Some(b"Bearer abc"), b"[]").unwrap();
        assert_eq!(&frame[..8], &[1, FLAG_CREDENTIAL, 0, 4, 0, 0, 0, 2]);
        assert_eq!(&frame[12..14], &[0, 10]);
        let p = decode_publish(&frame, &LIMITS).unwrap();
        assert_eq!(p.credential, Some(&b"Bearer abc"[..]));
        assert_eq!((p.target.key, p.body), ("ns/b", &b"[]"[..]));
        let header = PublishHeader::parse(frame.first_chunk().unwrap(), &LIMITS).unwrap();
        assert!(header.has_credential());
        assert_eq!(header.frame_len(10), frame.len());
        // Without the flag there is no credential.
        let plain = encode_publish("ns/b", b"[]").unwrap();
        assert_eq!(decode_publish(&plain, &LIMITS).unwrap().credential, None);
    }

    #[test]
    fn credential_lengths_are_checked() {
        let frame = encode_publish_with_credential("ns/b", Some(b"x"), b"[]").unwrap();
        // Length 0, and one over the limit.
        for len in [0u16, MAX_CREDENTIAL_BYTES as u16 + 1] {
            let mut bad = frame.clone();
            bad[12..14].copy_from_slice(&len.to_be_bytes());
            let err = decode_publish(&bad, &LIMITS).unwrap_err();
            assert_eq!(
                err,
                FrameError::CredentialLength {
                    len: usize::from(len)
                }
            );
            assert_eq!(err.code(), StreamCode::Malformed);
        }
        // The flag, then the frame ends inside the length field.
        let err = decode_publish(&frame[..13], &LIMITS).unwrap_err();
        assert!(matches!(err, FrameError::Truncated { .. }), "{err}");
        assert!(encode_publish_with_credential("ns/b", Some(b""), b"[]").is_err());
        let long = vec![b'a'; MAX_CREDENTIAL_BYTES + 1];
        assert!(encode_publish_with_credential("ns/b", Some(&long), b"[]").is_err());
        let max = vec![b'a'; MAX_CREDENTIAL_BYTES];
        assert!(encode_publish_with_credential("ns/b", Some(&max), b"[]").is_ok());
    }
}
