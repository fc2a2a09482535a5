//! Knative's `knativearrivaltime`: when a broker accepted an event.
//!
//! Knative's broker ingress sets this extension on every event it accepts, replacing any value
//! the event carried, and subscribers see it beside the producer's attributes. An
//! [`ArrivalTime`] is the timestamp formatted once (RFC 3339, UTC, nanoseconds), and
//! [`EventBatch::stamp_arrival`] gives it to every event of a batch without copying the batch:
//! the batch holds the one value, its views list it as an extension, and the encoders write it
//! like any other.
//!
//! What this module does not do: read the clock. The router stamps a batch where it enters a
//! broker (see `triggerfish::store`).

use std::sync::Arc;
use std::time::SystemTime;

use chrono::{DateTime, Datelike, Timelike, Utc};

use super::batch::{EventBatch, EventRef, Ext, Span};

/// The extension's name.
pub const ARRIVAL_EXTENSION: &str = "knativearrivaltime";

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ`.
const LEN: usize = 30;

/// A point in time formatted as Knative formats `knativearrivaltime`: RFC 3339 in UTC with
/// nanoseconds, as in `2026-12-02T06:19:35.123456789Z` (Go's `RFC3339Nano` leaves trailing
/// zeros of the fraction out; this keeps all nine digits, which RFC 3339 allows).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ArrivalTime {
    text: [u8; LEN],
}

impl ArrivalTime {
    /// The time as `knativearrivaltime` text.
    #[inline]
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written (see `From<DateTime<Utc>>`).
        std::str::from_utf8(&self.text).unwrap_or_default()
    }
}

impl From<DateTime<Utc>> for ArrivalTime {
    fn from(t: DateTime<Utc>) -> ArrivalTime {
        let mut text = *b"0000-00-00T00:00:00.000000000Z";
        // Years past 9999 do not fit RFC 3339; clamping keeps the text well-formed.
        let year = t.year().clamp(0, 9999) as u32;
        let mut put = |at: usize, width: usize, mut n: u32| {
            for i in (at..at + width).rev() {
                text[i] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, t.month());
        put(8, 2, t.day());
        put(11, 2, t.hour());
        put(14, 2, t.minute());
        // A leap second is nanoseconds past 1e9: written as second 60, as RFC 3339 allows.
        let (second, nanos) = match t.nanosecond() {
            n if n >= 1_000_000_000 => (60, n - 1_000_000_000),
            n => (t.second(), n),
        };
        put(17, 2, second);
        put(20, 9, nanos);
        ArrivalTime { text }
    }
}

impl From<SystemTime> for ArrivalTime {
    fn from(t: SystemTime) -> ArrivalTime {
        ArrivalTime::from(DateTime::<Utc>::from(t))
    }
}

impl std::fmt::Debug for ArrivalTime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl EventBatch {
    /// Sets every event's `knativearrivaltime` to `at`, replacing any value an event carried,
    /// as Knative's broker ingress does.
    ///
    /// The batch keeps one copy of the value; nothing else is copied. An event that carried
    /// its own `knativearrivaltime` loses it from the extension table, and is no longer copied
    /// verbatim from its received JSON when encoded in structured mode (that JSON holds the old
    /// value); every other event still is, with the stamp written in front of its members.
    ///
    /// Each event's [`wire_size`](super::EventView::wire_size) stays its size as received: the
    /// queues' byte budgets count that, and the stamp adds no bytes per event to what they
    /// hold. (Counting 56 more bytes per event would let a request of `maxRequestBytes` outgrow
    /// a shard queue of the same size, which the config check promises it fits.) Encoded,
    /// an event is 56 bytes larger in JSON.
    pub fn stamp_arrival(&mut self, at: ArrivalTime) {
        self.arrival = Some(at);
        let named =
            |text: &[u8], ext: &Ext| &text[ext.name.range()] == ARRIVAL_EXTENSION.as_bytes();
        if !self.exts.iter().any(|e| named(&self.text, e)) {
            return;
        }
        let mut exts = Vec::with_capacity(self.exts.len());
        for slot in &mut self.slots {
            let start = exts.len();
            let own = Span {
                start: slot.ext_start,
                len: slot.ext_len,
            };
            exts.extend(
                self.exts[own.range()]
                    .iter()
                    .filter(|e| !named(&self.text, e))
                    .copied(),
            );
            if exts.len() - start < own.len as usize {
                // The received JSON holds the value the stamp replaces.
                slot.json = None;
            }
            slot.ext_start = start as u32;
            slot.ext_len = (exts.len() - start) as u32;
        }
        self.exts = exts;
    }

    /// The arrival time given by [`EventBatch::stamp_arrival`], if any.
    pub fn arrival(&self) -> Option<&ArrivalTime> {
        self.arrival.as_ref()
    }
}

impl EventRef {
    /// This event alone, stamped with `at` as [`EventBatch::stamp_arrival`] does, for an event
    /// already shared (a trigger forwarding it to another broker). The new one-event batch
    /// shares the buffers of this one's: only the event's row of the table is copied.
    pub fn stamped(&self, at: ArrivalTime) -> EventRef {
        let batch = self.batch();
        let mut slot = batch.slots[self.index()].clone();
        let own = Span {
            start: slot.ext_start,
            len: slot.ext_len,
        };
        slot.ext_start = 0;
        let mut one = EventBatch {
            raw: batch.raw.clone(),
            text: batch.text.clone(),
            slots: vec![slot],
            exts: batch.exts[own.range()].to_vec(),
            arrival: batch.arrival,
        };
        one.stamp_arrival(at);
        EventRef::new(Arc::new(one), 0).unwrap_or_else(|| unreachable!("a batch of one event"))
    }

    /// This event stamped with `at`: in place, allocating nothing, when nothing else shares
    /// its batch (a source's freshly mapped record); else as [`EventRef::stamped`] does.
    pub fn into_stamped(mut self, at: ArrivalTime) -> EventRef {
        match Arc::get_mut(&mut self.batch) {
            Some(batch) => {
                batch.stamp_arrival(at);
                self
            }
            None => self.stamped(at),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use chrono::TimeZone;

    use super::*;
    use crate::event::{
        AttrValue, DecodeLimits, EncodeOptions, decode_batched, decode_binary, decode_structured,
        encode_binary, encode_structured,
    };

    fn at() -> ArrivalTime {
        let t = Utc.with_ymd_and_hms(2026, 12, 2, 6, 9, 5).unwrap()
            + chrono::Duration::nanoseconds(7_000_120);
        ArrivalTime::from(t)
    }

    #[test]
    fn formats_rfc3339_utc_with_nine_digits() {
        assert_eq!(at().as_str(), "2026-12-02T06:09:05.007000120Z");
        let epoch = ArrivalTime::from(SystemTime::UNIX_EPOCH);
        assert_eq!(epoch.as_str(), "1970-01-01T00:00:00.000000000Z");
        // What the `time` attribute's validation accepts, so that the value round-trips.
        assert!(DateTime::parse_from_rfc3339(at().as_str()).is_ok());
    }

    #[test]
    fn every_event_of_a_batch_gets_the_stamp_and_a_received_value_is_replaced() {
        let body = r#"[{"specversion":"1.0","id":"a","source":"/s","type":"t","x":"1"},
            {"specversion":"1.0","id":"b","source":"/s","type":"t","knativearrivaltime":"2001-01-01T00:00:00Z","y":2},
            {"specversion":"1.0","id":"c","source":"/s","type":"t"}]"#;
        let mut batch = decode_batched(Bytes::from(body), &DecodeLimits::default())
            .unwrap()
            .batch;
        let sizes: Vec<usize> = batch.iter().map(|v| v.wire_size()).collect();
        batch.stamp_arrival(at());
        for (view, size) in batch.iter().zip(sizes) {
            let stamp = AttrValue::Str("2026-12-02T06:09:05.007000120Z");
            assert_eq!(view.extension(ARRIVAL_EXTENSION), Some(stamp));
            let names: Vec<&str> = view.extensions().map(|(n, _)| n).collect();
            assert_eq!(
                names.iter().filter(|n| **n == ARRIVAL_EXTENSION).count(),
                1,
                "{names:?}"
            );
            assert_eq!(view.extensions().len(), names.len());
            assert_eq!(view.wire_size(), size, "the size as received");
        }
        let b = batch.get(1).unwrap();
        assert_eq!(b.extension("y"), Some(AttrValue::Int(2)));
        assert!(b.received_json().is_none());
        assert!(batch.get(0).unwrap().received_json().is_some());
    }

    /// Structured mode writes the stamp in front of the received members; the result decodes
    /// to the same event, stamp included.
    #[test]
    fn structured_encoding_injects_the_stamp_into_the_received_json() {
        let limits = DecodeLimits::default();
        let body = r#"{ "specversion" : "1.0", "id": "a", "source": "/s", "type": "t", "data": {"k": [1]} }"#;
        let mut batch = decode_structured(Bytes::from(body), &limits).unwrap();
        batch.stamp_arrival(at());
        let view = batch.get(0).unwrap();
        let out = encode_structured(&view, &EncodeOptions::default());
        let text = std::str::from_utf8(&out).unwrap();
        assert!(
            text.starts_with(r#"{"knativearrivaltime":"2026-12-02T06:09:05.007000120Z","#),
            "{text}"
        );
        assert!(text.ends_with(r#""data": {"k": [1]} }"#), "{text}");
        let again = decode_structured(out, &limits).unwrap();
        assert_eq!(format!("{:?}", again.get(0).unwrap()), format!("{view:?}"));
        // Leaving the stamp out, or adding extensions, writes member by member.
        let skip = EncodeOptions {
            skip: &[ARRIVAL_EXTENSION],
            add: &[],
        };
        let out = encode_structured(&view, &skip);
        assert!(
            !std::str::from_utf8(&out)
                .unwrap()
                .contains(ARRIVAL_EXTENSION)
        );
    }

    #[test]
    fn a_shared_event_is_stamped_alone_without_copying_its_buffers() {
        let body = r#"[{"specversion":"1.0","id":"a","source":"/s","type":"t","x":"1"},
            {"specversion":"1.0","id":"b","source":"/s","type":"t","knativearrivaltime":"2001-01-01T00:00:00Z","y":2}]"#;
        let batch = decode_batched(Bytes::from(body), &DecodeLimits::default())
            .unwrap()
            .batch;
        let refs: Vec<EventRef> = Arc::new(batch).into_refs().collect();
        let b = refs[1].stamped(at());
        assert_eq!(b.batch().len(), 1);
        assert_eq!(b.batch().raw.as_ptr(), refs[1].batch().raw.as_ptr());
        let view = b.view();
        assert_eq!(view.id(), "b");
        assert_eq!(view.extension("y"), Some(AttrValue::Int(2)));
        assert_eq!(
            view.extension(ARRIVAL_EXTENSION),
            Some(AttrValue::Str(at().as_str()))
        );
        assert_eq!(view.extensions().len(), 2);
        // The original is unchanged.
        assert_eq!(
            refs[1].view().extension(ARRIVAL_EXTENSION),
            Some(AttrValue::Str("2001-01-01T00:00:00Z"))
        );
        assert_eq!(view.wire_size(), refs[1].view().wire_size());
    }

    #[test]
    fn an_event_alone_in_its_batch_is_stamped_in_place() {
        let body = r#"{"specversion":"1.0","id":"a","source":"/s","type":"t","knativearrivaltime":"2001-01-01T00:00:00Z"}"#;
        let batch = decode_structured(Bytes::from(body), &DecodeLimits::default()).unwrap();
        let event = EventRef::new(Arc::new(batch), 0).unwrap();
        let before = Arc::as_ptr(event.batch());
        let stamped = event.into_stamped(at());
        assert_eq!(Arc::as_ptr(stamped.batch()), before, "the same batch");
        let when = at();
        let stamp = AttrValue::Str(when.as_str());
        assert_eq!(stamped.view().extension(ARRIVAL_EXTENSION), Some(stamp));
        assert_eq!(stamped.view().extensions().len(), 1);
        // Shared: a batch of its own, the other holder's unchanged.
        let other = stamped.clone();
        let again = stamped.into_stamped(ArrivalTime::from(SystemTime::UNIX_EPOCH));
        assert_ne!(Arc::as_ptr(again.batch()), Arc::as_ptr(other.batch()));
        assert_eq!(other.view().extension(ARRIVAL_EXTENSION), Some(stamp));
        assert_eq!(
            again.view().extension(ARRIVAL_EXTENSION),
            Some(AttrValue::Str("1970-01-01T00:00:00.000000000Z"))
        );
    }

    #[test]
    fn binary_mode_carries_the_stamp_as_a_header() {
        let limits = DecodeLimits::default();
        // An event received in binary mode with a value of its own: its headers are those of
        // the same event encoded from structured mode.
        let structured = r#"{"specversion":"1.0","id":"1","source":"/s","type":"t","knativearrivaltime":"2001-01-01T00:00:00Z","datacontenttype":"text/plain","data":"hi"}"#;
        let received = decode_structured(Bytes::from(structured), &limits).unwrap();
        let (headers, body) = encode_binary(&received.get(0).unwrap(), &EncodeOptions::default());
        let mut batch = decode_binary(&headers, body, &limits).unwrap();
        batch.stamp_arrival(at());
        let (out, body) = encode_binary(&batch.get(0).unwrap(), &EncodeOptions::default());
        assert_eq!(
            out["ce-knativearrivaltime"],
            "2026-12-02T06:09:05.007000120Z"
        );
        assert_eq!(out.get_all("ce-knativearrivaltime").iter().count(), 1);
        assert_eq!(body, "hi");
    }
}
