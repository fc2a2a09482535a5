//! The QUIC wire protocol (`triggerfish/1`), as pure functions over bytes.
//!
//! A client opens one bidirectional stream per batch and writes one [`publish`] frame on it:
//! an 8-byte header (frame type, flags, target length, body length), the target
//! `{namespace}/{broker}`, and a body in batched JSON mode
//! (`application/cloudevents-batch+json`), then finishes the stream. The server answers on the
//! same stream with one [`ack`] frame and finishes it. A frame the server cannot read resets
//! the stream with a [`StreamCode`]; the connection and the server carry on.
//! `docs/quic-protocol.md` is the specification; this module is its reference codec.
//!
//! - [`publish`]: the request frame: header parsing with limits checked before a body byte is
//!   read, target validation, and encoding.
//! - [`ack`]: the answer: an HTTP-equivalent status, the number of accepted events, a
//!   retry-after, and per-event errors by index; encoding with bounded texts, and decoding
//!   that never trusts a length it has not checked.
//! - [`StreamCode`] and [`ConnectionCode`]: the application error codes sent in
//!   `RESET_STREAM`, `STOP_SENDING` and `CONNECTION_CLOSE`.
//!
//! What this module does not do: sockets, TLS, timers or flow control (the router's
//! `quic` module drives quinn around it), or decoding the events themselves (that is
//! [`crate::event::decode_batched`], the same decoder as HTTP ingress).

pub mod ack;
pub mod publish;

pub use ack::{Ack, AckDecodeError, EventRejection};
pub use publish::{FrameError, FrameLimits, PublishHeader, Target, decode_publish};

/// The ALPN protocol id of this version of the protocol. The number is the protocol's major
/// version: any change to a frame layout gets a new id (see `docs/quic-protocol.md`).
pub const ALPN: &[u8] = b"triggerfish/1";

/// Every protocol id this build speaks, most preferred first. A server offers them all; a
/// client offers them all and reads frames by the one negotiated.
pub const SUPPORTED_ALPNS: &[&[u8]] = &[ALPN];

/// Application error codes of a stream, sent with `RESET_STREAM` and `STOP_SENDING` when a
/// frame cannot be read. Codes are QUIC variable-length integers on the wire; a receiver
/// treats a code it does not know as [`StreamCode::Malformed`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum StreamCode {
    /// Not an error: the stream is abandoned deliberately (a client that no longer wants the
    /// answer, say).
    NoError = 0x0,
    /// The frame breaks the layout: an unknown frame type, a target that is empty, not
    /// UTF-8 or not `{namespace}/{broker}`.
    Malformed = 0x1,
    /// The frame's declared body length is over the server's frame limit. Nothing of the body
    /// was read.
    FrameTooLarge = 0x2,
    /// The stream ended before the frame was complete.
    Truncated = 0x3,
    /// Bytes followed the frame before the end of the stream.
    TrailingData = 0x4,
    /// The frame did not arrive completely within the server's frame timeout.
    Timeout = 0x5,
    /// Flags this version does not define were set.
    UnsupportedFlags = 0x6,
    /// The server failed on its side; the frame may be sent again.
    Internal = 0x7,
}

impl StreamCode {
    /// The code as sent on the wire.
    pub const fn as_u32(self) -> u32 {
        self as u32
    }

    /// Reads a received code; unknown codes are [`StreamCode::Malformed`].
    pub fn from_wire(code: u64) -> StreamCode {
        match code {
            0x0 => StreamCode::NoError,
            0x1 => StreamCode::Malformed,
            0x2 => StreamCode::FrameTooLarge,
            0x3 => StreamCode::Truncated,
            0x4 => StreamCode::TrailingData,
            0x5 => StreamCode::Timeout,
            0x6 => StreamCode::UnsupportedFlags,
            0x7 => StreamCode::Internal,
            _ => StreamCode::Malformed,
        }
    }

    /// What the code means, for logs and client errors.
    pub fn describe(self) -> &'static str {
        match self {
            StreamCode::NoError => "no error",
            StreamCode::Malformed => "malformed frame",
            StreamCode::FrameTooLarge => "frame over the server's size limit",
            StreamCode::Truncated => "stream ended inside the frame",
            StreamCode::TrailingData => "data after the frame",
            StreamCode::Timeout => "frame not received in time",
            StreamCode::UnsupportedFlags => "unsupported frame flags",
            StreamCode::Internal => "server error",
        }
    }
}

/// Application error codes of a connection, sent with `CONNECTION_CLOSE`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ConnectionCode {
    /// A graceful close: the client is done, or the server is shutting down and has answered
    /// every stream it read.
    NoError = 0x0,
    /// The server holds as many connections as it allows; try later or elsewhere.
    Busy = 0x100,
}

impl ConnectionCode {
    /// The code as sent on the wire.
    pub const fn as_u32(self) -> u32 {
        self as u32
    }
}

/// Reads a SHA-256 certificate fingerprint: 64 hex digits, optionally separated by colons
/// and prefixed with `sha256:`, in either case (`openssl x509 -fingerprint -sha256` prints
/// one).
pub fn parse_fingerprint(text: &str) -> Result<[u8; 32], &'static str> {
    let text = text.trim();
    let text = text
        .strip_prefix("sha256:")
        .or_else(|| text.strip_prefix("SHA256:"))
        .unwrap_or(text);
    let mut out = [0u8; 32];
    let mut n = 0usize;
    let mut high: Option<u8> = None;
    for c in text.bytes() {
        if c == b':' {
            if high.is_some() {
                return Err("a colon splits a byte");
            }
            continue;
        }
        let v = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            b'A'..=b'F' => c - b'A' + 10,
            _ => return Err("expected hex digits"),
        };
        match high.take() {
            None => high = Some(v),
            Some(h) => {
                if n == 32 {
                    return Err("more than 32 bytes");
                }
                out[n] = (h << 4) | v;
                n += 1;
            }
        }
    }
    if n != 32 || high.is_some() {
        return Err("expected 32 bytes (64 hex digits)");
    }
    Ok(out)
}

/// Formats a fingerprint as `AB:CD:...`, the form `openssl` prints and
/// [`parse_fingerprint`] reads.
pub fn format_fingerprint(digest: &[u8; 32]) -> String {
    let mut out = String::with_capacity(95);
    for (i, b) in digest.iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
        out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_codes_round_trip_and_unknown_codes_are_malformed() {
        for code in [
            StreamCode::NoError,
            StreamCode::Malformed,
            StreamCode::FrameTooLarge,
            StreamCode::Truncated,
            StreamCode::TrailingData,
            StreamCode::Timeout,
            StreamCode::UnsupportedFlags,
            StreamCode::Internal,
        ] {
            assert_eq!(StreamCode::from_wire(u64::from(code.as_u32())), code);
            assert!(!code.describe().is_empty());
        }
        assert_eq!(StreamCode::from_wire(0x99), StreamCode::Malformed);
        assert_eq!(StreamCode::from_wire(u64::MAX), StreamCode::Malformed);
    }

    #[test]
    fn fingerprints() {
        let digest: [u8; 32] = std::array::from_fn(|i| (i * 7) as u8);
        let text = format_fingerprint(&digest);
        assert_eq!(&text[..8], "00:07:0E");
        assert_eq!(parse_fingerprint(&text), Ok(digest));
        assert_eq!(
            parse_fingerprint(&format!("sha256:{}", text.replace(':', "").to_lowercase())),
            Ok(digest)
        );
        assert!(parse_fingerprint("ab").is_err());
        assert!(parse_fingerprint(&format!("{text}:00")).is_err());
        assert!(parse_fingerprint(&text.replace('0', "g")).is_err());
        assert!(parse_fingerprint("0:0").is_err());
    }

    #[test]
    fn alpn_names_the_major_version() {
        assert_eq!(ALPN, b"triggerfish/1");
        assert_eq!(SUPPORTED_ALPNS[0], ALPN);
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        fn rejection() -> impl Strategy<Value = (u16, String)> {
            (prop_oneof![Just(400u16), Just(413u16)], ".{0,40}")
        }

        proptest! {
            #[test]
            fn acks_round_trip(
                status in any::<u16>(),
                accepted in 0u32..50,
                retry in any::<u32>(),
                message in ".{0,80}",
                picks in proptest::collection::btree_map(0u32..50, rejection(), 0..10),
            ) {
                let rejected: Vec<EventRejection> = picks
                    .into_iter()
                    .map(|(index, (status, error))| EventRejection { index, status, error })
                    .collect();
                let ack = Ack { status, accepted, retry_after_ms: retry, message, rejected };
                let sent = 100;
                prop_assert_eq!(Ack::decode(&ack.encode(), sent).unwrap(), ack);
            }

            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..64), sent in any::<u32>()) {
                let _ = Ack::decode(&bytes, sent);
                let limits = FrameLimits { max_body_bytes: 32 };
                if let Ok(p) = decode_publish(&bytes, &limits) {
                    let again = publish::encode_publish_with_credential(p.target.key, p.credential, p.body).unwrap();
                    prop_assert_eq!(again, bytes);
                }
            }

            #[test]
            fn publish_round_trips(ns in "[a-z][a-z0-9-]{0,20}", name in "[a-z][a-z0-9.-]{0,30}", body in proptest::collection::vec(any::<u8>(), 0..100)) {
                let target = format!("{ns}/{name}");
                // Names ending in '-' or '.' are not valid Kubernetes names; both sides agree.
                match publish::encode_publish(&target, &body) {
                    Ok(frame) => {
                        let p = decode_publish(&frame, &FrameLimits { max_body_bytes: 100 }).unwrap();
                        prop_assert_eq!(p.target.key, target.as_str());
                        prop_assert_eq!(p.body, body.as_slice());
                    }
                    Err(e) => prop_assert!(Target::parse(target.as_bytes()).is_err(), "{}", e),
                }
            }
        }
    }
}
