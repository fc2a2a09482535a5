//! The decoded form of a body: buffers plus a table of byte ranges, and views over it.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;

use super::arrival::{ARRIVAL_EXTENSION, ArrivalTime};
use super::attr::{AttrValue, Attributes, KnownAttr, SpecVersion};

/// A byte range into one of a batch's buffers. `u32` offsets keep the per-event table small;
/// decoders refuse bodies over 4 GiB.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Span {
    pub(crate) start: u32,
    pub(crate) len: u32,
}

impl Span {
    pub(crate) fn new(start: usize, len: usize) -> Span {
        // Decoders check the body length against u32::MAX before building spans.
        Span {
            start: start as u32,
            len: len as u32,
        }
    }

    pub(crate) fn range(self) -> std::ops::Range<usize> {
        self.start as usize..(self.start + self.len) as usize
    }
}

/// An extension value as stored in the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ExtValue {
    Str(Span),
    Int(i32),
    Bool(bool),
}

/// One extension attribute: its name and value, both in the text buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ext {
    pub(crate) name: Span,
    pub(crate) value: ExtValue,
}

/// Where an event's data lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum DataSpan {
    /// No data.
    #[default]
    None,
    /// A JSON value, verbatim, in the raw buffer.
    Json(Span),
    /// A JSON string's decoded content, in the text buffer (`data` with a non-JSON type).
    Text(Span),
    /// A base64 string in the text buffer (`data_base64`, or 0.3 `datacontentencoding`).
    Base64(Span),
    /// Opaque bytes in the raw buffer (binary-mode body).
    Binary(Span),
}

/// The per-event table row: fixed slots for the spec's attributes, a range of extensions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) version: SpecVersion,
    pub(crate) known: [Option<Span>; KnownAttr::COUNT],
    pub(crate) ext_start: u32,
    pub(crate) ext_len: u32,
    pub(crate) data: DataSpan,
    /// Size of the event on the wire, for limits and queue accounting.
    pub(crate) wire_size: u32,
    /// The event's own JSON object in the batch's `raw`, when it was read from structured
    /// or batched JSON: encoding it again in structured mode copies these bytes.
    pub(crate) json: Option<Span>,
}

impl Slot {
    pub(crate) fn new(version: SpecVersion, ext_start: usize) -> Slot {
        Slot {
            version,
            known: [None; KnownAttr::COUNT],
            ext_start: ext_start as u32,
            ext_len: 0,
            data: DataSpan::None,
            wire_size: 0,
            json: None,
        }
    }
}

/// Decoded events sharing the buffers they were read from.
///
/// `raw` is the received body (data of JSON events and binary bodies are sliced from it);
/// `text` holds decoded attribute strings (simd-json's in-place unescaped copy of the body, or
/// the percent-decoded `ce-*` header values). Both are reference-counted [`Bytes`], so handing
/// an event to another thread never copies it. `arrival` is the `knativearrivaltime` the batch
/// was stamped with ([`EventBatch::stamp_arrival`]): one value for every event, listed after
/// each event's own extensions.
#[derive(Clone, PartialEq, Eq)]
pub struct EventBatch {
    pub(crate) raw: Bytes,
    pub(crate) text: Bytes,
    pub(crate) slots: Vec<Slot>,
    pub(crate) exts: Vec<Ext>,
    pub(crate) arrival: Option<ArrivalTime>,
}

impl EventBatch {
    /// A batch with no events.
    pub fn empty() -> EventBatch {
        EventBatch {
            raw: Bytes::new(),
            text: Bytes::new(),
            slots: Vec::new(),
            exts: Vec::new(),
            arrival: None,
        }
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether the batch holds no events (`[]` is a valid batch).
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The `i`-th event, if there is one.
    pub fn get(&self, i: usize) -> Option<EventView<'_>> {
        self.slots
            .get(i)
            .map(|slot| EventView { batch: self, slot })
    }

    /// All events in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = EventView<'_>> + Clone + '_ {
        self.slots
            .iter()
            .map(move |slot| EventView { batch: self, slot })
    }

    /// Splits the batch into owned handles that share its buffers (no copies).
    pub fn into_refs(self: Arc<Self>) -> impl ExactSizeIterator<Item = EventRef> {
        let n = self.slots.len();
        (0..n).map(move |i| EventRef {
            batch: Arc::clone(&self),
            index: i as u32,
        })
    }

    /// Bytes held by the batch's buffers, for memory accounting.
    pub fn buffer_bytes(&self) -> usize {
        self.raw.len() + self.text.len()
    }
}

impl fmt::Debug for EventBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// An owned handle to one event of a shared [`EventBatch`]: cheap to clone and to send.
#[derive(Clone, PartialEq, Eq)]
pub struct EventRef {
    pub(super) batch: Arc<EventBatch>,
    index: u32,
}

impl EventRef {
    /// Wraps event `index` of `batch`. Returns `None` when out of range.
    pub fn new(batch: Arc<EventBatch>, index: usize) -> Option<EventRef> {
        (index < batch.len()).then(|| EventRef {
            batch,
            index: index as u32,
        })
    }

    /// Borrows the event.
    #[inline]
    pub fn view(&self) -> EventView<'_> {
        EventView {
            batch: &self.batch,
            slot: &self.batch.slots[self.index as usize],
        }
    }

    /// The batch this event belongs to.
    pub fn batch(&self) -> &Arc<EventBatch> {
        &self.batch
    }

    /// Index within the batch.
    pub fn index(&self) -> usize {
        self.index as usize
    }
}

impl fmt::Debug for EventRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.view().fmt(f)
    }
}

/// A borrowed, zero-copy view of one event. Attribute values point into the batch's buffers.
#[derive(Clone, Copy)]
pub struct EventView<'a> {
    batch: &'a EventBatch,
    slot: &'a Slot,
}

/// An event's data, borrowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Data<'a> {
    /// The event has no data.
    None,
    /// A JSON value, as the bytes that encode it.
    Json(&'a [u8]),
    /// Text carried as a JSON string in structured mode (non-JSON `datacontenttype`).
    Text(&'a str),
    /// Base64 text (`data_base64`), not yet decoded.
    Base64(&'a str),
    /// Opaque bytes (a binary-mode body).
    Binary(&'a [u8]),
}

impl<'a> Data<'a> {
    /// The data as bytes: what a binary-mode body carries. Only base64 data is decoded into a
    /// new buffer; invalid base64 cannot occur because decoders validate it.
    pub fn to_bytes(&self) -> Cow<'a, [u8]> {
        match *self {
            Data::None => Cow::Borrowed(&[]),
            Data::Json(b) | Data::Binary(b) => Cow::Borrowed(b),
            Data::Text(s) => Cow::Borrowed(s.as_bytes()),
            Data::Base64(s) => Cow::Owned(
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .unwrap_or_default(),
            ),
        }
    }

    /// Whether there is no data.
    pub fn is_none(&self) -> bool {
        matches!(self, Data::None)
    }
}

impl<'a> EventView<'a> {
    /// The spec version the event was received in.
    pub fn spec_version(&self) -> SpecVersion {
        self.slot.version
    }

    /// `id` (required, non-empty after decoding).
    #[inline]
    pub fn id(&self) -> &'a str {
        self.known(KnownAttr::Id).unwrap_or_default()
    }

    /// `source` (required).
    #[inline]
    pub fn source(&self) -> &'a str {
        self.known(KnownAttr::Source).unwrap_or_default()
    }

    /// `type` (required).
    #[inline]
    pub fn ty(&self) -> &'a str {
        self.known(KnownAttr::Type).unwrap_or_default()
    }

    /// `subject`.
    #[inline]
    pub fn subject(&self) -> Option<&'a str> {
        self.known(KnownAttr::Subject)
    }

    /// `time`, as received (validated RFC 3339).
    #[inline]
    pub fn time(&self) -> Option<&'a str> {
        self.known(KnownAttr::Time)
    }

    /// `datacontenttype` (from `Content-Type` in binary mode).
    #[inline]
    pub fn datacontenttype(&self) -> Option<&'a str> {
        self.known(KnownAttr::DataContentType)
    }

    /// `dataschema` (`schemaurl` in 0.3).
    #[inline]
    pub fn dataschema(&self) -> Option<&'a str> {
        self.known(KnownAttr::DataSchema)
    }

    /// A spec-defined attribute's value.
    #[inline]
    pub fn known(&self, attr: KnownAttr) -> Option<&'a str> {
        if attr == KnownAttr::SpecVersion {
            return Some(self.slot.version.as_str());
        }
        self.slot.known[attr as usize].map(|s| self.text_str(s))
    }

    /// An extension's value, by name.
    #[inline]
    pub fn extension(&self, name: &str) -> Option<AttrValue<'a>> {
        self.extensions().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    /// All extensions, in the order they were received, then `knativearrivaltime` when the
    /// batch was stamped.
    pub fn extensions(&self) -> Extensions<'a> {
        let start = self.slot.ext_start as usize;
        let end = start + self.slot.ext_len as usize;
        Extensions {
            batch: self.batch,
            exts: self.batch.exts[start..end].iter(),
            arrival: self.batch.arrival.as_ref(),
        }
    }

    /// The event's data.
    pub fn data(&self) -> Data<'a> {
        match self.slot.data {
            DataSpan::None => Data::None,
            DataSpan::Json(s) => Data::Json(&self.batch.raw[s.range()]),
            DataSpan::Binary(s) => Data::Binary(&self.batch.raw[s.range()]),
            DataSpan::Text(s) => Data::Text(self.text_str(s)),
            DataSpan::Base64(s) => Data::Base64(self.text_str(s)),
        }
    }

    /// The data as a shared `Bytes` slice when it is stored verbatim (JSON, binary), without
    /// copying.
    pub fn data_shared(&self) -> Option<Bytes> {
        match self.slot.data {
            DataSpan::Json(s) | DataSpan::Binary(s) => Some(self.batch.raw.slice(s.range())),
            DataSpan::Text(s) => Some(self.batch.text.slice(s.range())),
            DataSpan::None | DataSpan::Base64(_) => None,
        }
    }

    /// The partition key used for sharding and ordered delivery: the `partitionkey` extension
    /// (canonical string form), else `source`.
    pub fn with_partition_key<R>(&self, f: impl FnOnce(&str) -> R) -> R {
        match self.extension("partitionkey") {
            Some(v) => v.with_canonical_str(f),
            None => f(self.source()),
        }
    }

    /// Size of the event on the wire, in bytes.
    pub fn wire_size(&self) -> usize {
        self.slot.wire_size as usize
    }

    /// The `knativearrivaltime` the batch was stamped with, which the event's JSON object as
    /// received ([`EventView::received_json`]) does not hold.
    pub(crate) fn stamped_arrival(&self) -> Option<&'a ArrivalTime> {
        self.batch.arrival.as_ref()
    }

    /// The event's JSON object as it was received, when it came in structured or batched
    /// JSON.
    pub(crate) fn received_json(&self) -> Option<&'a [u8]> {
        let span = self.slot.json?;
        self.batch
            .raw
            .get(span.start as usize..(span.start + span.len) as usize)
    }

    #[inline]
    fn text_str(&self, span: Span) -> &'a str {
        super::text::str_at(&self.batch.text, span)
    }
}

impl Attributes for EventView<'_> {
    #[inline]
    fn attribute(&self, name: &str) -> Option<AttrValue<'_>> {
        match KnownAttr::from_name(name) {
            Some(k) => self.known(k).map(AttrValue::Str),
            None => self.extension(name),
        }
    }
}

impl Attributes for EventRef {
    fn attribute(&self, name: &str) -> Option<AttrValue<'_>> {
        let view = self.view();
        match KnownAttr::from_name(name) {
            Some(k) => view.known(k).map(AttrValue::Str),
            None => view.extension(name),
        }
    }
}

impl fmt::Debug for EventView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("Event");
        for k in KnownAttr::ALL {
            if let Some(v) = self.known(k) {
                s.field(k.name(), &v);
            }
        }
        for (name, value) in self.extensions() {
            s.field(name, &value);
        }
        match self.data() {
            Data::None => {}
            Data::Json(b) => {
                s.field("data", &String::from_utf8_lossy(b));
            }
            Data::Text(t) => {
                s.field("data", &t);
            }
            Data::Base64(t) => {
                s.field("data_base64", &t);
            }
            Data::Binary(b) => {
                s.field("data", &format_args!("<{} bytes>", b.len()));
            }
        }
        s.finish()
    }
}

/// Iterator over an event's extensions as `(name, value)`.
#[derive(Clone)]
pub struct Extensions<'a> {
    batch: &'a EventBatch,
    exts: std::slice::Iter<'a, Ext>,
    /// The batch's stamp, listed last.
    arrival: Option<&'a ArrivalTime>,
}

impl<'a> Iterator for Extensions<'a> {
    type Item = (&'a str, AttrValue<'a>);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        let Some(ext) = self.exts.next() else {
            let at = self.arrival.take()?;
            return Some((ARRIVAL_EXTENSION, AttrValue::Str(at.as_str())));
        };
        let text = &self.batch.text;
        let name = super::text::str_at(text, ext.name);
        let value = match ext.value {
            ExtValue::Str(s) => AttrValue::Str(super::text::str_at(text, s)),
            ExtValue::Int(i) => AttrValue::Int(i),
            ExtValue::Bool(b) => AttrValue::Bool(b),
        };
        Some((name, value))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.exts.len() + usize::from(self.arrival.is_some());
        (n, Some(n))
    }
}

impl ExactSizeIterator for Extensions<'_> {}
