//! Decode errors: which event of a batch, which attribute, and what is wrong with it.

use std::fmt;

/// Why an event, or the body that should hold events, was rejected.
///
/// `index` is the position of the event in a batch (`None` for structured and binary mode, and
/// for errors about the body as a whole). The `Display` form is the text that ingress returns
/// to the producer, e.g. `event 3: attribute "time": not an RFC 3339 timestamp: "yesterday"`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct DecodeError {
    /// Index of the offending event within a batch.
    pub index: Option<usize>,
    /// What is wrong.
    pub kind: DecodeErrorKind,
}

impl DecodeError {
    pub(crate) fn body(kind: DecodeErrorKind) -> Self {
        Self { index: None, kind }
    }

    pub(crate) fn at(index: Option<usize>, kind: DecodeErrorKind) -> Self {
        Self { index, kind }
    }

    /// Whether the error is about size, which HTTP reports as `413` rather than `400`.
    pub fn is_too_large(&self) -> bool {
        matches!(
            self.kind,
            DecodeErrorKind::EventTooLarge { .. } | DecodeErrorKind::TooManyEvents { .. }
        )
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.index {
            Some(i) => write!(f, "event {i}: {}", self.kind),
            None => write!(f, "{}", self.kind),
        }
    }
}

/// The specific rule an event broke. Attribute names are the names as received.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeErrorKind {
    /// The body is not JSON. `offset` is the byte where the parser gave up.
    #[error("body is not valid JSON (at byte {offset}): {reason}")]
    InvalidJson {
        /// Byte offset reported by the parser.
        offset: usize,
        /// The parser's description.
        reason: String,
    },
    /// Structured mode needs one JSON object.
    #[error("a structured-mode event must be a JSON object, found {found}")]
    NotAnObject {
        /// The JSON type that was found instead.
        found: &'static str,
    },
    /// Batched mode needs a JSON array of objects.
    #[error("a batch must be a JSON array of events, found {found}")]
    NotAnArray {
        /// The JSON type that was found instead.
        found: &'static str,
    },
    /// A required attribute is absent (or `null`).
    #[error("missing required attribute \"{0}\"")]
    MissingAttribute(&'static str),
    /// A required attribute is present but empty.
    #[error("attribute \"{0}\" must not be empty")]
    EmptyAttribute(&'static str),
    /// `specversion` is neither `1.0` nor `0.3`.
    #[error("unsupported specversion \"{0}\" (supported: 1.0, 0.3)")]
    UnsupportedSpecVersion(String),
    /// An attribute name outside `[a-z0-9]+`.
    #[error("invalid attribute name \"{0}\": names use only lower-case letters and digits")]
    InvalidAttributeName(String),
    /// The same attribute appears twice.
    #[error("attribute \"{0}\" appears more than once")]
    DuplicateAttribute(String),
    /// The JSON type of an attribute value is not allowed for it.
    #[error("attribute \"{attribute}\": expected {expected}, found {found}")]
    InvalidType {
        /// Attribute name.
        attribute: String,
        /// What the spec allows.
        expected: &'static str,
        /// What was found.
        found: &'static str,
    },
    /// An integer extension outside the 32-bit range the spec allows.
    #[error("attribute \"{0}\": integer outside the 32-bit signed range")]
    IntegerOutOfRange(String),
    /// `time` is not an RFC 3339 timestamp.
    #[error("attribute \"{attribute}\": not an RFC 3339 timestamp: {value:?}")]
    InvalidTimestamp {
        /// Attribute name.
        attribute: String,
        /// The offending value.
        value: String,
    },
    /// `source` is not a URI-reference, or `dataschema` not an absolute URI.
    #[error("attribute \"{attribute}\": not a valid {expected}: {value:?}")]
    InvalidUri {
        /// Attribute name.
        attribute: String,
        /// `URI` or `URI-reference`.
        expected: &'static str,
        /// The offending value.
        value: String,
    },
    /// A string value holds a character the spec forbids (controls, noncharacters).
    #[error("attribute \"{attribute}\": contains the disallowed character U+{codepoint:04X}")]
    DisallowedCharacter {
        /// Attribute name.
        attribute: String,
        /// The character's code point.
        codepoint: u32,
    },
    /// Both `data` and `data_base64` are present.
    #[error("\"data\" and \"data_base64\" are mutually exclusive")]
    DataAndDataBase64,
    /// `data_base64` (or 0.3's base64 `data`) is not valid base64.
    #[error("\"{0}\" is not valid base64")]
    InvalidBase64(&'static str),
    /// A 0.3 `datacontentencoding` other than `base64`.
    #[error("unsupported datacontentencoding {0:?} (only \"base64\" is defined)")]
    UnsupportedContentEncoding(String),
    /// A header value whose quoted-string form is malformed.
    #[error("header \"{header}\": malformed quoted-string")]
    InvalidQuotedString {
        /// Header name.
        header: String,
    },
    /// A `%` not followed by two hex digits.
    #[error("header \"{header}\": malformed percent-encoding")]
    InvalidPercentEncoding {
        /// Header name.
        header: String,
    },
    /// A header value that is not UTF-8 (over HTTP: after percent-decoding, for example an
    /// overlong `%C0%A0`).
    #[error("header \"{header}\": not valid UTF-8")]
    InvalidUtf8 {
        /// Header name.
        header: String,
    },
    /// A binary-mode request with both `Content-Type` and `ce-datacontenttype`.
    #[error("binary mode: \"ce-datacontenttype\" must not be sent; use Content-Type")]
    DataContentTypeHeader,
    /// A binary-mode request without `ce-specversion`: not a CloudEvent at all.
    #[error("not a CloudEvent: no ce-specversion header and no CloudEvents content type")]
    NotACloudEvent,
    /// One event is larger than the configured limit.
    #[error("event is {size} bytes, over the limit of {limit} bytes")]
    EventTooLarge {
        /// Size of the event on the wire.
        size: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A batch holds more events than allowed.
    #[error("batch holds {count} events, over the limit of {limit}")]
    TooManyEvents {
        /// Number of events in the batch.
        count: usize,
        /// The configured limit.
        limit: usize,
    },
    /// A CloudEvents content type whose format the protocol binding does not carry (the
    /// Kafka binding has no batched mode, and only the JSON format is read).
    #[error(
        "content type {0:?} is not a CloudEvents format this binding carries; use application/cloudevents+json or binary mode"
    )]
    UnsupportedFormat(String),
    /// The body is larger than our 32-bit offsets can address (4 GiB).
    #[error("body of {0} bytes is too large to decode")]
    BodyTooLarge(usize),
}
