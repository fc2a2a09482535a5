//! The events the load generator sends, encoded for each content mode, and the stamp that lets
//! the sink measure end-to-end latency.
//!
//! Every event is an ~400-byte order event (the shape of [`crate::structured_event`]) with:
//! - `id` = `lg-{run}-{seq}`, where `run` is 8 hex digits picked per process and `seq` numbers
//!   the run's events from 0, so the sink can tell first deliveries from duplicates, and
//!   events of an earlier run that a router delivers late from this run's;
//! - `type` = `com.example.bench.t{seq mod pool}`, so a config with many triggers can spread or
//!   concentrate matches (`--event-type-pool`);
//! - the extension `tfsentns`: the due time of the request, in nanoseconds on the
//!   [`Clock`](super::clock::Clock), as a *string* (CloudEvents integers are 32-bit, too small
//!   for nanoseconds since the epoch).
//!
//! Encoding writes into one buffer per request with `itoa`; the load generator shares the
//! machine with the router under test, so it must stay cheap.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{CONTENT_TYPE, HeaderName};
use http::{HeaderMap, HeaderValue};
use serde::Deserialize;

/// The extension that carries the send stamp.
pub const STAMP_EXTENSION: &str = "tfsentns";
/// The prefix of every event id the load generator sends.
pub const ID_PREFIX: &str = "lg-";
/// The `type` prefix; the pool index follows it.
pub const TYPE_PREFIX: &str = "com.example.bench.t";
/// The `source` of every event.
pub const SOURCE: &str = "/bench/loadgen";

/// The `data` of every event (and the body of a binary-mode event).
const DATA: &str = r#"{"customer":"customer-42","items":[{"sku":"A-1","qty":2,"price":1999},{"sku":"B-7","qty":1,"price":499}],"currency":"EUR","note":"leave at the door"}"#;

/// The media type of a structured event.
pub const STRUCTURED_CONTENT_TYPE: &str = "application/cloudevents+json";
/// The media type of a batch.
pub const BATCH_CONTENT_TYPE: &str = "application/cloudevents-batch+json";

/// How events are put on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// One event per request, attributes in `ce-` headers, the data as the body.
    Binary,
    /// One event per request, as a JSON object (`application/cloudevents+json`).
    Structured,
    /// Several events per request, as a JSON array (`application/cloudevents-batch+json`).
    Batch,
}

/// Encodes requests of the run's events.
#[derive(Debug, Clone)]
pub struct Encoder {
    mode: Mode,
    id_prefix: String,
    types: Vec<String>,
    type_headers: Vec<HeaderValue>,
    data: Bytes,
}

impl Encoder {
    /// An encoder for `mode` whose events' types cycle through `type_pool` values (at least 1)
    /// and whose ids carry `run`.
    pub fn new(mode: Mode, type_pool: u32, run: u32) -> Encoder {
        let types: Vec<String> = (0..type_pool.max(1))
            .map(|i| format!("{TYPE_PREFIX}{i}"))
            .collect();
        let type_headers = types
            .iter()
            .map(|t| HeaderValue::from_str(t).expect("ASCII type names are valid header values"))
            .collect();
        Encoder {
            mode,
            id_prefix: format!("{ID_PREFIX}{run:08x}-"),
            types,
            type_headers,
            data: Bytes::from_static(DATA.as_bytes()),
        }
    }

    /// The headers and body of a request carrying events `first..first + n`, stamped with
    /// `stamp_ns`. In the single-event modes `n` must be 1.
    pub fn encode(&self, first: u64, n: u32, stamp_ns: u64) -> (HeaderMap, Bytes) {
        match self.mode {
            Mode::Binary => self.binary(first, stamp_ns),
            Mode::Structured => {
                let mut buf = BytesMut::with_capacity(512);
                self.structured(&mut buf, first, stamp_ns);
                (content_type(STRUCTURED_CONTENT_TYPE), buf.freeze())
            }
            Mode::Batch => {
                let mut buf = BytesMut::with_capacity(420 * n as usize + 2);
                buf.put_u8(b'[');
                for seq in first..first + u64::from(n) {
                    if seq != first {
                        buf.put_u8(b',');
                    }
                    self.structured(&mut buf, seq, stamp_ns);
                }
                buf.put_u8(b']');
                (content_type(BATCH_CONTENT_TYPE), buf.freeze())
            }
        }
    }

    /// A batched-mode body of events `first..first + n` whatever the mode: what a QUIC frame
    /// carries (QUIC has only batched frames; a single event is an array of one).
    pub fn encode_array(&self, first: u64, n: u32, stamp_ns: u64) -> Bytes {
        let mut buf = BytesMut::with_capacity(420 * n as usize + 2);
        buf.put_u8(b'[');
        for seq in first..first + u64::from(n) {
            if seq != first {
                buf.put_u8(b',');
            }
            self.structured(&mut buf, seq, stamp_ns);
        }
        buf.put_u8(b']');
        buf.freeze()
    }

    fn type_index(&self, seq: u64) -> usize {
        (seq % self.types.len() as u64) as usize
    }

    fn binary(&self, seq: u64, stamp_ns: u64) -> (HeaderMap, Bytes) {
        let mut ints = itoa::Buffer::new();
        let mut h = HeaderMap::with_capacity(12);
        h.insert(
            HeaderName::from_static("ce-specversion"),
            HeaderValue::from_static("1.0"),
        );
        let id = format!("{}{}", self.id_prefix, ints.format(seq));
        h.insert(HeaderName::from_static("ce-id"), header_value(&id));
        h.insert(
            HeaderName::from_static("ce-source"),
            HeaderValue::from_static(SOURCE),
        );
        h.insert(
            HeaderName::from_static("ce-type"),
            self.type_headers[self.type_index(seq)].clone(),
        );
        let subject = format!("order-{}", ints.format(seq));
        h.insert(
            HeaderName::from_static("ce-subject"),
            header_value(&subject),
        );
        h.insert(
            HeaderName::from_static("ce-partitionkey"),
            header_value(&format!("customer-{}", seq % 97)),
        );
        h.insert(
            HeaderName::from_static("ce-tfsentns"),
            header_value(ints.format(stamp_ns)),
        );
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        (h, self.data.clone())
    }

    fn structured(&self, buf: &mut BytesMut, seq: u64, stamp_ns: u64) {
        let mut ints = itoa::Buffer::new();
        let seq_text = ints.format(seq);
        buf.put_slice(br#"{"specversion":"1.0","id":""#);
        buf.put_slice(self.id_prefix.as_bytes());
        buf.put_slice(seq_text.as_bytes());
        buf.put_slice(br#"","source":""#);
        buf.put_slice(SOURCE.as_bytes());
        buf.put_slice(br#"","type":""#);
        buf.put_slice(self.types[self.type_index(seq)].as_bytes());
        buf.put_slice(br#"","subject":"order-"#);
        buf.put_slice(seq_text.as_bytes());
        buf.put_slice(br#"","datacontenttype":"application/json","partitionkey":"customer-"#);
        buf.put_slice(ints.format(seq % 97).as_bytes());
        buf.put_slice(br#"","tfsentns":""#);
        buf.put_slice(ints.format(stamp_ns).as_bytes());
        buf.put_slice(br#"","data":"#);
        buf.put_slice(&self.data);
        buf.put_u8(b'}');
    }
}

fn content_type(value: &'static str) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(1);
    h.insert(CONTENT_TYPE, HeaderValue::from_static(value));
    h
}

fn header_value(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).expect("ASCII digits and names are valid header values")
}

/// What the sink reads from a delivered event: its load-generator run and sequence number and
/// its send stamp, when present.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Stamp {
    /// The run and sequence number, when the id is one of ours (`lg-{run}-{seq}`).
    pub seq: Option<(u32, u64)>,
    /// The `tfsentns` stamp, when present and a number.
    pub sent_ns: Option<u64>,
}

impl Stamp {
    /// Reads a binary-mode event's stamp from its headers.
    pub fn from_headers(h: &HeaderMap) -> Stamp {
        let text = |name: &str| h.get(name).and_then(|v| v.to_str().ok());
        Stamp {
            seq: text("ce-id").and_then(parse_id),
            sent_ns: text("ce-tfsentns").and_then(|v| v.trim().parse().ok()),
        }
    }

    /// Reads one structured event's stamp. `None` when the body is not JSON of an event's shape.
    pub fn from_structured(body: &[u8]) -> Option<Stamp> {
        serde_json::from_slice::<WireStamp<'_>>(body)
            .ok()
            .map(WireStamp::stamp)
    }

    /// Reads the stamps of a batch, in order. `None` when the body is not a JSON array of
    /// objects.
    pub fn from_batch(body: &[u8]) -> Option<Vec<Stamp>> {
        serde_json::from_slice::<Vec<WireStamp<'_>>>(body)
            .ok()
            .map(|v| v.into_iter().map(WireStamp::stamp).collect())
    }
}

/// Parses `lg-{run}-{seq}`.
pub fn parse_id(id: &str) -> Option<(u32, u64)> {
    let (run, seq) = id.strip_prefix(ID_PREFIX)?.split_once('-')?;
    Some((u32::from_str_radix(run, 16).ok()?, seq.parse().ok()?))
}

/// The two members of a structured event the sink reads; serde skips the others.
#[derive(Deserialize)]
struct WireStamp<'a> {
    #[serde(borrow, default)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    tfsentns: Option<StampValue<'a>>,
}

/// `tfsentns` as we send it (a string), or as a router might re-encode it (a number).
#[derive(Deserialize)]
#[serde(untagged)]
enum StampValue<'a> {
    Number(u64),
    Text(#[serde(borrow)] std::borrow::Cow<'a, str>),
}

impl WireStamp<'_> {
    fn stamp(self) -> Stamp {
        Stamp {
            seq: self.id.as_deref().and_then(parse_id),
            sent_ns: match self.tfsentns {
                Some(StampValue::Number(n)) => Some(n),
                Some(StampValue::Text(t)) => t.trim().parse().ok(),
                None => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structured_and_batch_round_trip_through_the_sink_reader() {
        let e = Encoder::new(Mode::Structured, 3, 0xabc);
        let (h, body) = e.encode(7, 1, 123_456_789);
        assert_eq!(h[CONTENT_TYPE], STRUCTURED_CONTENT_TYPE);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["type"], "com.example.bench.t1");
        assert_eq!(v["data"]["currency"], "EUR");
        assert_eq!(v["id"], "lg-00000abc-7");
        assert_eq!(
            Stamp::from_structured(&body),
            Some(Stamp {
                seq: Some((0xabc, 7)),
                sent_ns: Some(123_456_789)
            })
        );

        let b = Encoder::new(Mode::Batch, 1, 1);
        let (h, body) = b.encode(100, 5, 42);
        assert_eq!(h[CONTENT_TYPE], BATCH_CONTENT_TYPE);
        let stamps = Stamp::from_batch(&body).unwrap();
        let seqs: Vec<_> = stamps.iter().map(|s| s.seq.unwrap().1).collect();
        assert_eq!(seqs, [100, 101, 102, 103, 104]);
        assert!(stamps.iter().all(|s| s.sent_ns == Some(42)));
    }

    #[test]
    fn events_are_valid_for_the_sdk() {
        use cloudevents::AttributesReader;
        let e = Encoder::new(Mode::Structured, 1, 0);
        let (_, body) = e.encode(1, 1, 9);
        let event: cloudevents::Event = serde_json::from_slice(&body).unwrap();
        assert_eq!(event.id(), "lg-00000000-1");
        let (h, body) = Encoder::new(Mode::Binary, 1, 0).encode(2, 1, 9);
        let event = cloudevents::binding::http::to_event(&h, body.to_vec()).unwrap();
        assert_eq!(event.id(), "lg-00000000-2");
        assert_eq!(
            event.extension(STAMP_EXTENSION).map(ToString::to_string),
            Some("9".to_owned())
        );
    }

    #[test]
    fn binary_headers_carry_the_stamp() {
        let (h, _) = Encoder::new(Mode::Binary, 1, u32::MAX).encode(11, 1, 77);
        assert_eq!(
            Stamp::from_headers(&h),
            Stamp {
                seq: Some((u32::MAX, 11)),
                sent_ns: Some(77)
            }
        );
        assert_eq!(parse_id("evt-1"), None);
        assert_eq!(parse_id("lg-1"), None);
        assert_eq!(
            Stamp::from_structured(br#"{"id":"lg-1-3","tfsentns":5}"#),
            Some(Stamp {
                seq: Some((1, 3)),
                sent_ns: Some(5)
            })
        );
        assert_eq!(Stamp::from_structured(b"42"), None);
        assert_eq!(Stamp::from_batch(b"{}"), None);
    }
}
