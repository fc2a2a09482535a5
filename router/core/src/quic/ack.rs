//! The ack frame: the server's answer to one publish frame, on the same stream.
//!
//! ```text
//! 0        1        2                 4                                 8
//! +--------+--------+--------+--------+--------+--------+--------+--------+
//! | type   | flags  | status          | accepted events                   |
//! | 0x02   | 0x00   | u16             | u32                               |
//! +--------+--------+--------+--------+--------+--------+--------+--------+
//! | retry after, ms (u32)             | rejected events E (u32)           |
//! +--------+--------+--------+--------+--------+--------+--------+--------+
//! | message length M (u16) | message: UTF-8, M bytes                      |
//! +------------------------+----------------------------------------------+
//! | E times: index (u32) | status (u16) | length L (u16) | error: L bytes |
//! +-----------------------------------------------------------------------+
//! then the end of the stream (FIN). All integers are big-endian.
//! ```
//!
//! `status` uses the HTTP status code the HTTP ingress would answer in the same situation:
//!
//! | status | meaning | accepted | rejected events | retry after |
//! |---|---|---|---|---|
//! | 202 | the body was read; the valid events were queued | how many | the invalid ones, by index | 0 |
//! | 400 | the body is not a JSON array of objects | 0 | none | 0 |
//! | 404 | the target names no broker | 0 | none | 0 |
//! | 413 | more events than the server's batch limit | 0 | none | 0 |
//! | 429 | the queues are full: nothing was queued | 0 | none | > 0 |
//! | 503 | shutting down, or the store is unavailable: nothing was queued | 0 | none | > 0 |
//!
//! Per-event statuses are 400 (invalid event) or 413 (event over the size limit); the error
//! texts are those of HTTP ingress (`attribute "time": not an RFC 3339 timestamp: ...`).

/// The frame type of an ack frame.
pub const FRAME_ACK: u8 = 0x02;

/// Length of the fixed part, up to and including the message length.
pub const FIXED_LEN: usize = 18;

/// The longest message the server sends; longer texts are cut at a character boundary.
pub const MAX_MESSAGE_BYTES: usize = 4096;

/// The longest per-event error text the server sends; longer texts are cut the same way.
pub const MAX_ERROR_BYTES: usize = 1024;

/// Bytes of one rejected-event entry besides its text.
const ENTRY_FIXED: usize = 8;

/// The server's answer to one publish frame.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ack {
    /// What happened to the frame, as an HTTP status code (see the module docs).
    pub status: u16,
    /// Events queued.
    pub accepted: u32,
    /// For 429 and 503: how long to wait before sending again, in milliseconds.
    pub retry_after_ms: u32,
    /// For a frame refused whole: why, in the words of HTTP ingress. Empty otherwise.
    pub message: String,
    /// The events refused, by index in the frame's array, in ascending order.
    pub rejected: Vec<EventRejection>,
}

/// One event of a frame that the server refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRejection {
    /// Its index in the frame's array.
    pub index: u32,
    /// 400 (invalid) or 413 (over the size limit).
    pub status: u16,
    /// Why, as HTTP ingress says it (without the `event N:` prefix).
    pub error: String,
}

/// Why an ack frame could not be read. A client that sees one cannot know what the server
/// did with the frame, and treats its events as not acknowledged.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AckDecodeError {
    /// The bytes end inside the frame.
    #[error("ack truncated: needed {expected} bytes, got {got}")]
    Truncated {
        /// Bytes needed to go on.
        expected: usize,
        /// Bytes there were.
        got: usize,
    },
    /// Not an ack frame.
    #[error("expected an ack frame (0x02), found type 0x{0:02x}")]
    UnknownType(u8),
    /// Flags this version does not define.
    #[error("unsupported ack flags 0x{0:02x}")]
    UnsupportedFlags(u8),
    /// A text that is not UTF-8.
    #[error("ack text is not UTF-8")]
    InvalidUtf8,
    /// Counts that do not fit the frame that was sent.
    #[error(
        "ack does not match the frame: {accepted} accepted and {rejected} rejected of {sent} events"
    )]
    Counts {
        /// Accepted, as the ack says.
        accepted: u32,
        /// Rejected, as the ack says.
        rejected: u32,
        /// Events the client sent.
        sent: u32,
    },
    /// Rejected-event indices out of range or not ascending.
    #[error("ack names event {index}, out of order or out of range for {sent} events")]
    Index {
        /// The index.
        index: u32,
        /// Events the client sent.
        sent: u32,
    },
    /// Bytes follow the frame.
    #[error("{0} bytes follow the ack")]
    TrailingData(usize),
}

impl Ack {
    /// A 202: `accepted` events queued, the others rejected.
    pub fn accepted(accepted: u32, rejected: Vec<EventRejection>) -> Ack {
        Ack {
            status: 202,
            accepted,
            retry_after_ms: 0,
            message: String::new(),
            rejected,
        }
    }

    /// A frame refused whole, with a status and the reason.
    pub fn refused(status: u16, message: impl Into<String>) -> Ack {
        Ack {
            status,
            accepted: 0,
            retry_after_ms: 0,
            message: message.into(),
            rejected: Vec::new(),
        }
    }

    /// A frame refused whole for now: try again after `retry_after_ms` (429 or 503).
    pub fn retry_later(status: u16, message: impl Into<String>, retry_after_ms: u32) -> Ack {
        Ack {
            retry_after_ms,
            ..Ack::refused(status, message)
        }
    }

    /// The most bytes an ack for a frame of `events` events can take: what a client reads
    /// at most.
    pub fn max_len(events: usize) -> usize {
        FIXED_LEN + MAX_MESSAGE_BYTES + events.saturating_mul(ENTRY_FIXED + MAX_ERROR_BYTES)
    }

    /// Encodes the ack, cutting texts over [`MAX_MESSAGE_BYTES`] and [`MAX_ERROR_BYTES`].
    pub fn encode(&self) -> Vec<u8> {
        let message = truncate(&self.message, MAX_MESSAGE_BYTES);
        let mut out = Vec::with_capacity(
            FIXED_LEN + message.len() + self.rejected.len() * (ENTRY_FIXED + 64),
        );
        out.push(FRAME_ACK);
        out.push(0);
        out.extend_from_slice(&self.status.to_be_bytes());
        out.extend_from_slice(&self.accepted.to_be_bytes());
        out.extend_from_slice(&self.retry_after_ms.to_be_bytes());
        let count = u32::try_from(self.rejected.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&count.to_be_bytes());
        // Both limits are below u16::MAX.
        out.extend_from_slice(&(message.len() as u16).to_be_bytes());
        out.extend_from_slice(message.as_bytes());
        for r in self.rejected.iter().take(count as usize) {
            let text = truncate(&r.error, MAX_ERROR_BYTES);
            out.extend_from_slice(&r.index.to_be_bytes());
            out.extend_from_slice(&r.status.to_be_bytes());
            out.extend_from_slice(&(text.len() as u16).to_be_bytes());
            out.extend_from_slice(text.as_bytes());
        }
        out
    }

    /// Decodes the ack of a frame that carried `sent` events, checking that its counts and
    /// indices fit that frame. Never allocates more than the input's length justifies.
    pub fn decode(bytes: &[u8], sent: u32) -> Result<Ack, AckDecodeError> {
        let mut r = Reader { bytes, at: 0 };
        let kind = r.u8()?;
        if kind != FRAME_ACK {
            return Err(AckDecodeError::UnknownType(kind));
        }
        let flags = r.u8()?;
        if flags != 0 {
            return Err(AckDecodeError::UnsupportedFlags(flags));
        }
        let status = r.u16()?;
        let accepted = r.u32()?;
        let retry_after_ms = r.u32()?;
        let count = r.u32()?;
        if u64::from(accepted) + u64::from(count) > u64::from(sent) {
            return Err(AckDecodeError::Counts {
                accepted,
                rejected: count,
                sent,
            });
        }
        let len = usize::from(r.u16()?);
        let message = r.text(len)?.to_owned();
        // Each entry takes at least ENTRY_FIXED bytes: a count the input cannot hold is
        // caught here, before anything is allocated for it.
        let room = bytes.len().saturating_sub(r.at) / ENTRY_FIXED;
        if count as usize > room {
            return Err(AckDecodeError::Truncated {
                expected: r.at + count as usize * ENTRY_FIXED,
                got: bytes.len(),
            });
        }
        let mut rejected = Vec::with_capacity(count as usize);
        let mut next = 0u32;
        for _ in 0..count {
            let index = r.u32()?;
            if index < next || index >= sent {
                return Err(AckDecodeError::Index { index, sent });
            }
            next = index + 1;
            let status = r.u16()?;
            let len = usize::from(r.u16()?);
            let error = r.text(len)?.to_owned();
            rejected.push(EventRejection {
                index,
                status,
                error,
            });
        }
        if r.at != bytes.len() {
            return Err(AckDecodeError::TrailingData(bytes.len() - r.at));
        }
        Ok(Ack {
            status,
            accepted,
            retry_after_ms,
            message,
            rejected,
        })
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], AckDecodeError> {
        let end = self.at.saturating_add(n);
        let Some(slice) = self.bytes.get(self.at..end) else {
            return Err(AckDecodeError::Truncated {
                expected: end,
                got: self.bytes.len(),
            });
        };
        self.at = end;
        Ok(slice)
    }

    fn u8(&mut self) -> Result<u8, AckDecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, AckDecodeError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, AckDecodeError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn text(&mut self, n: usize) -> Result<&'a str, AckDecodeError> {
        std::str::from_utf8(self.take(n)?).map_err(|_| AckDecodeError::InvalidUtf8)
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejection(index: u32, error: &str) -> EventRejection {
        EventRejection {
            index,
            status: 400,
            error: error.to_owned(),
        }
    }

    #[test]
    fn round_trip() {
        let acks = [
            Ack::accepted(
                3,
                vec![
                    rejection(1, "missing required attribute \"id\""),
                    rejection(4, "é"),
                ],
            ),
            Ack::accepted(0, vec![]),
            Ack::refused(404, "unknown broker default/nope"),
            Ack::retry_later(429, "queues are full", 1000),
        ];
        for ack in acks {
            let bytes = ack.encode();
            assert!(bytes.len() <= Ack::max_len(5));
            assert_eq!(Ack::decode(&bytes, 5).unwrap(), ack);
        }
    }

    #[test]
    fn layout() {
        let bytes = Ack::retry_later(429, "full", 1000).encode();
        assert_eq!(
            bytes,
            [
                2, 0, 1, 173, 0, 0, 0, 0, 0, 0, 3, 232, 0, 0, 0, 0, 0, 4, b'f', b'u', b'l', b'l'
            ]
        );
    }

    #[test]
    fn long_texts_are_cut_at_a_character_boundary() {
        let ack = Ack::accepted(0, vec![rejection(0, &"é".repeat(1000))]);
        let decoded = Ack::decode(&ack.encode(), 1).unwrap();
        assert_eq!(decoded.rejected[0].error.len(), 1024);
        let ack = Ack::refused(400, "x".repeat(10_000));
        assert_eq!(Ack::decode(&ack.encode(), 0).unwrap().message.len(), 4096);
    }

    #[test]
    fn counts_and_indices_must_fit_the_frame() {
        let two = Ack::accepted(1, vec![rejection(1, "bad")]).encode();
        assert!(Ack::decode(&two, 2).is_ok());
        assert_eq!(
            Ack::decode(&two, 1).unwrap_err(),
            AckDecodeError::Counts {
                accepted: 1,
                rejected: 1,
                sent: 1
            }
        );
        let out_of_order = Ack::accepted(0, vec![rejection(1, "a"), rejection(0, "b")]).encode();
        assert_eq!(
            Ack::decode(&out_of_order, 2).unwrap_err(),
            AckDecodeError::Index { index: 0, sent: 2 }
        );
        let out_of_range = Ack::accepted(0, vec![rejection(7, "a")]).encode();
        assert_eq!(
            Ack::decode(&out_of_range, 3).unwrap_err(),
            AckDecodeError::Index { index: 7, sent: 3 }
        );
    }

    #[test]
    fn hostile_bytes_are_errors() {
        let good = Ack::accepted(1, vec![rejection(1, "bad")]).encode();
        for n in 0..good.len() {
            assert!(
                matches!(
                    Ack::decode(&good[..n], 2),
                    Err(AckDecodeError::Truncated { .. })
                ),
                "{n}"
            );
        }
        assert_eq!(
            Ack::decode(&[good.as_slice(), b"x"].concat(), 2),
            Err(AckDecodeError::TrailingData(1))
        );
        // A huge count with no room for it allocates nothing.
        let mut huge = Ack::accepted(0, vec![]).encode();
        huge[12..16].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(
            Ack::decode(&huge, u32::MAX),
            Err(AckDecodeError::Truncated { .. })
        ));
        let mut bad_utf8 = Ack::refused(400, "ab").encode();
        bad_utf8[18] = 0xff;
        assert_eq!(Ack::decode(&bad_utf8, 0), Err(AckDecodeError::InvalidUtf8));
        assert_eq!(Ack::decode(&[1], 0), Err(AckDecodeError::UnknownType(1)));
        assert_eq!(
            Ack::decode(&[2, 1], 0),
            Err(AckDecodeError::UnsupportedFlags(1))
        );
    }
}
