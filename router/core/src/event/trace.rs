//! W3C Trace Context (`traceparent`, `tracestate`) and the CloudEvents distributed-tracing
//! extension that carries it with an event.
//!
//! Triggerfish records no spans; it propagates the trace context its producers send, so that a
//! subscriber's OpenTelemetry middleware joins the producer's trace:
//! - a request's `traceparent` header (with its `tracestate`) becomes the `traceparent` and
//!   `tracestate` extensions of each event of the request that has no `traceparent` of its own
//!   ([`EventBatch::with_trace_context`]), as Knative's brokers did
//!   (`AddTraceparentAttributeFromContext`). The extension is stored, matched and forwarded like
//!   any other, so the context survives queues, JetStream, replies and routers in between;
//! - each HTTP delivery of an event that has the extension carries it as the `traceparent` and
//!   `tracestate` headers as well as `ce-traceparent` and `ce-tracestate`
//!   ([`TraceContext::of_event`], [`TraceContext::insert_headers`]); a batch of events in one
//!   request carries the headers when every event has the same context
//!   ([`TraceContext::shared`], [`TraceHeaders::shared`]).
//!
//! An event's own extension wins over the request's header: the extension names the trace the
//! event started in (CloudEvents distributed-tracing extension), and a router that records no
//! span of its own has no newer context to put in its place.
//!
//! What this module does not do: create, sample or export spans; read `traceresponse`; or
//! repair a malformed header. A `traceparent` that breaks W3C Trace Context §3.2 is ignored
//! with its `tracestate`, as the recommendation asks of a receiver; a malformed `tracestate`
//! alone is dropped and the `traceparent` kept.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};

use super::DecodeLimits;
use super::batch::{EventBatch, EventView, Ext, ExtValue, Slot, Span};

/// The `traceparent` header and extension.
pub const TRACEPARENT: &str = "traceparent";
/// The `tracestate` header and extension.
pub const TRACESTATE: &str = "tracestate";

/// The most `tracestate` bytes propagated: W3C Trace Context asks to propagate at least 512
/// characters, and allows dropping a longer list.
const MAX_TRACESTATE: usize = 512;

/// A validated trace context: a `traceparent` and, optionally, its `tracestate`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceContext<'a> {
    traceparent: &'a str,
    tracestate: Option<Cow<'a, str>>,
}

impl<'a> TraceContext<'a> {
    /// The context of a request's headers, if it has a valid `traceparent`. Several
    /// `tracestate` fields are joined with commas, as HTTP combines a repeated list header.
    pub fn from_headers(headers: &'a HeaderMap) -> Option<TraceContext<'a>> {
        let parents = headers.get_all(TRACEPARENT);
        // Most requests have none: one lookup.
        parents.iter().next()?;
        TraceContext::from_fields(
            parents.into_iter().map(HeaderValue::as_bytes),
            headers
                .get_all(TRACESTATE)
                .into_iter()
                .map(HeaderValue::as_bytes),
        )
    }

    /// The context of a message's `traceparent` and `tracestate` fields (HTTP headers, Kafka
    /// record headers), each given as every value of the field, in order. More than one
    /// `traceparent` is as invalid as a malformed one; several `tracestate` values are one
    /// comma-separated list.
    pub fn from_fields(
        parents: impl IntoIterator<Item = &'a [u8]>,
        states: impl IntoIterator<Item = &'a [u8]>,
    ) -> Option<TraceContext<'a>> {
        let mut parents = parents.into_iter();
        let traceparent = std::str::from_utf8(parents.next()?).ok()?;
        if parents.next().is_some() || !is_valid_traceparent(traceparent) {
            return None;
        }
        let mut states = states.into_iter().map(std::str::from_utf8);
        let tracestate = match (states.next(), states.next()) {
            (None, _) => None,
            (Some(one), None) => one.ok().map(Cow::Borrowed),
            (Some(first), Some(second)) => [first, second]
                .into_iter()
                .chain(states)
                .collect::<Result<Vec<&str>, _>>()
                .ok()
                .map(|all| Cow::Owned(all.join(","))),
        };
        Some(TraceContext {
            traceparent,
            tracestate: tracestate.filter(|s| is_valid_tracestate(s)),
        })
    }

    /// The context an event carries in its extensions, if its `traceparent` is valid.
    pub fn of_event(view: &EventView<'a>) -> Option<TraceContext<'a>> {
        let traceparent = view.extension(TRACEPARENT)?.as_str()?;
        if !is_valid_traceparent(traceparent) {
            return None;
        }
        let tracestate = view
            .extension(TRACESTATE)
            .and_then(|v| v.as_str())
            .filter(|s| is_valid_tracestate(s))
            .map(Cow::Borrowed);
        Some(TraceContext {
            traceparent,
            tracestate,
        })
    }

    /// The `traceparent` value.
    pub fn traceparent(&self) -> &str {
        self.traceparent
    }

    /// The `tracestate` value, if any.
    pub fn tracestate(&self) -> Option<&str> {
        self.tracestate.as_deref()
    }

    /// The fields that carry the context on the wire: `traceparent`, then `tracestate` if any.
    pub fn fields(&self) -> impl Iterator<Item = (&'static str, &str)> {
        std::iter::once((TRACEPARENT, self.traceparent))
            .chain(self.tracestate.as_deref().map(|s| (TRACESTATE, s)))
    }

    /// The context that each of `views` carries, when they all carry the same one: a batch of
    /// events sent in one request continues their trace only if they share it.
    pub fn shared(views: impl IntoIterator<Item = EventView<'a>>) -> Option<TraceContext<'a>> {
        let mut views = views.into_iter();
        let context = TraceContext::of_event(&views.next()?)?;
        views
            .all(|v| TraceContext::of_event(&v).as_ref() == Some(&context))
            .then_some(context)
    }

    /// Sets the `traceparent` and `tracestate` headers of an outgoing HTTP request.
    pub fn insert_headers(&self, headers: &mut HeaderMap) {
        self.to_headers().insert_into(headers);
    }

    /// The `traceparent` and `tracestate` header values, owned, for a request built later.
    pub fn to_headers(&self) -> TraceHeaders {
        // Visible ASCII (checked when the context was read), which any header value may hold.
        let value = |s: &str| HeaderValue::from_str(s).ok();
        TraceHeaders {
            traceparent: value(self.traceparent),
            tracestate: self.tracestate.as_deref().and_then(value),
        }
    }
}

/// A trace context as HTTP header values ([`TraceContext::to_headers`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceHeaders {
    traceparent: Option<HeaderValue>,
    tracestate: Option<HeaderValue>,
}

impl TraceHeaders {
    /// Sets the `traceparent` and `tracestate` headers.
    pub fn insert_into(&self, headers: &mut HeaderMap) {
        let fields = [
            (TRACEPARENT, &self.traceparent),
            (TRACESTATE, &self.tracestate),
        ];
        for (name, value) in fields {
            if let Some(v) = value {
                headers.insert(HeaderName::from_static(name), v.clone());
            }
        }
    }

    /// The headers that every one of `contexts` holds, when they are all the same.
    pub fn shared<'h>(
        contexts: impl IntoIterator<Item = Option<&'h TraceHeaders>>,
    ) -> Option<&'h TraceHeaders> {
        let mut contexts = contexts.into_iter();
        let first = contexts.next()??;
        contexts.all(|c| c == Some(first)).then_some(first)
    }
}

impl EventBatch {
    /// Gives every event without a `traceparent` extension the `traceparent` and `tracestate`
    /// extensions of `context` (an event that has its own keeps it, and its own `tracestate`).
    ///
    /// The context is best effort, never a reason to refuse an event: an event that it would
    /// take over `limits.max_event_bytes` (the limit the batch was decoded under, so that the
    /// next router's ingress takes the event as this one did) goes without it, or without the
    /// `tracestate` if the `traceparent` alone fits.
    ///
    /// The events stay views over the same received bytes: the decoded text buffer is copied
    /// once with the two values appended, and the extension table is rebuilt. A batch in which
    /// every event has its own context is returned as it is.
    pub fn with_trace_context(
        mut self,
        context: &TraceContext<'_>,
        limits: &DecodeLimits,
    ) -> EventBatch {
        let row = |slot: &Slot| slot.ext_start as usize..(slot.ext_start + slot.ext_len) as usize;
        let named = |text: &[u8], exts: &[Ext], name: &str| {
            exts.iter()
                .any(|e| &text[e.name.range()] == name.as_bytes())
        };
        if self
            .slots
            .iter()
            .all(|slot| named(&self.text, &self.exts[row(slot)], TRACEPARENT))
        {
            return self;
        }
        let state = context.tracestate();
        // What each extension adds to the event on the wire: a JSON member `,"name":"value"`
        // (binary mode's `ce-name: value` takes less).
        let member = |name: &str, value: &str| name.len() + value.len() + 6;
        let parent_bytes = member(TRACEPARENT, context.traceparent);
        let state_bytes = state.map_or(0, |s| member(TRACESTATE, s));
        let appended = TRACEPARENT.len()
            + context.traceparent.len()
            + state.map_or(0, |s| TRACESTATE.len() + s.len());
        let mut text = Vec::with_capacity(self.text.len() + appended);
        text.extend_from_slice(&self.text);
        let mut push = |bytes: &[u8]| {
            let start = text.len();
            text.extend_from_slice(bytes);
            Span::new(start, bytes.len())
        };
        let parent = Ext {
            name: push(TRACEPARENT.as_bytes()),
            value: ExtValue::Str(push(context.traceparent.as_bytes())),
        };
        let tracestate = state.map(|s| Ext {
            name: push(TRACESTATE.as_bytes()),
            value: ExtValue::Str(push(s.as_bytes())),
        });
        let mut exts = Vec::with_capacity(self.exts.len() + 2 * self.slots.len());
        for slot in &mut self.slots {
            let own = &self.exts[row(slot)];
            let start = exts.len();
            exts.extend_from_slice(own);
            let room = limits
                .max_event_bytes
                .saturating_sub(slot.wire_size as usize);
            if !named(&self.text, own, TRACEPARENT) && parent_bytes <= room {
                exts.push(parent);
                let mut grown = parent_bytes;
                if let Some(ts) = tracestate
                    && !named(&self.text, own, TRACESTATE)
                    && grown + state_bytes <= room
                {
                    exts.push(ts);
                    grown += state_bytes;
                }
                slot.wire_size = slot.wire_size.saturating_add(grown as u32);
                // Re-encoding can no longer copy the received JSON object verbatim.
                slot.json = None;
            }
            slot.ext_start = start as u32;
            slot.ext_len = (exts.len() - start) as u32;
        }
        self.exts = exts;
        self.text = Bytes::from(text);
        self
    }
}

/// Whether `value` is a `traceparent` as W3C Trace Context §3.2 defines it: version `00` as
/// `00-<32 hex trace-id>-<16 hex parent-id>-<2 hex flags>`, lowercase, with neither id all
/// zeros; a later version (not `ff`) may append `-` and more after those 55 characters.
pub fn is_valid_traceparent(value: &str) -> bool {
    let b = value.as_bytes();
    let hex = |s: &[u8]| s.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
    let zeros = |s: &[u8]| s.iter().all(|&c| c == b'0');
    if b.len() < 55 || !hex(&b[0..2]) || &b[0..2] == b"ff" {
        return false;
    }
    let version_00 = &b[0..2] == b"00";
    if (version_00 && b.len() != 55) || (!version_00 && b.len() > 55 && b[55] != b'-') {
        return false;
    }
    let (trace_id, parent_id, flags) = (&b[3..35], &b[36..52], &b[53..55]);
    b[2] == b'-'
        && b[35] == b'-'
        && b[52] == b'-'
        && hex(trace_id)
        && !zeros(trace_id)
        && hex(parent_id)
        && !zeros(parent_id)
        && hex(flags)
}

/// Whether `value` can be propagated as a `tracestate`: at most [`MAX_TRACESTATE`] bytes of
/// visible ASCII and spaces, with at most 32 list members (W3C Trace Context §3.3).
fn is_valid_tracestate(value: &str) -> bool {
    value.len() <= MAX_TRACESTATE
        && value.bytes().all(|c| (0x20..0x7f).contains(&c))
        && value.split(',').filter(|m| !m.trim().is_empty()).count() <= 32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::AttrValue;
    use crate::event::{
        DecodeLimits, decode_batched, decode_binary, encode_binary, encode_structured,
    };

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        h
    }

    #[test]
    fn traceparent_follows_w3c_trace_context() {
        assert!(is_valid_traceparent(PARENT));
        assert!(is_valid_traceparent(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
        ));
        // A later version may append fields after a dash.
        assert!(is_valid_traceparent(
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next"
        ));
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            // Uppercase hex.
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            // All-zero ids.
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            // Version ff is forbidden; version 00 has exactly four fields.
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
            // Wrong separators, non-hex.
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert!(!is_valid_traceparent(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_request_context_is_read_from_its_headers() {
        let h = headers(&[(TRACEPARENT, PARENT), (TRACESTATE, "congo=t61rcWkgMzE")]);
        let ctx = TraceContext::from_headers(&h).unwrap();
        assert_eq!(ctx.traceparent(), PARENT);
        assert_eq!(ctx.tracestate(), Some("congo=t61rcWkgMzE"));

        // Repeated tracestate fields are one list.
        let h = headers(&[
            (TRACEPARENT, PARENT),
            (TRACESTATE, "a=1"),
            (TRACESTATE, "b=2"),
        ]);
        let ctx = TraceContext::from_headers(&h).unwrap();
        assert_eq!(ctx.tracestate(), Some("a=1,b=2"));

        // An invalid traceparent takes its tracestate with it; an invalid tracestate goes
        // alone.
        let h = headers(&[(TRACEPARENT, "00-bad"), (TRACESTATE, "a=1")]);
        assert_eq!(TraceContext::from_headers(&h), None);
        let h = headers(&[(TRACEPARENT, PARENT), (TRACEPARENT, PARENT)]);
        assert_eq!(TraceContext::from_headers(&h), None);
        let long = format!("a={}", "x".repeat(MAX_TRACESTATE));
        let h = headers(&[(TRACEPARENT, PARENT), (TRACESTATE, &long)]);
        assert_eq!(TraceContext::from_headers(&h).unwrap().tracestate(), None);
        assert_eq!(TraceContext::from_headers(&HeaderMap::new()), None);
    }

    /// A batch sent in one request continues its events' trace only when they share it,
    /// `tracestate` included.
    #[test]
    fn a_context_is_shared_only_when_every_event_has_the_same() {
        let body = br#"[
            {"specversion":"1.0","id":"a","source":"/s","type":"t","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","tracestate":"s=1"},
            {"specversion":"1.0","id":"b","source":"/s","type":"t","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01","tracestate":"s=1"},
            {"specversion":"1.0","id":"c","source":"/s","type":"t","traceparent":"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
            {"specversion":"1.0","id":"d","source":"/s","type":"t"}
        ]"#;
        let batch = decode_batched(Bytes::from_static(body), &DecodeLimits::default())
            .unwrap()
            .batch;
        let views = |range: std::ops::Range<usize>| range.map(|i| batch.get(i).unwrap());
        let shared = TraceContext::shared(views(0..2)).unwrap();
        assert_eq!(
            (shared.traceparent(), shared.tracestate()),
            (PARENT, Some("s=1"))
        );
        assert_eq!(
            TraceContext::shared(views(1..3)),
            None,
            "tracestates differ"
        );
        assert_eq!(TraceContext::shared(views(2..4)), None, "one has none");
        assert_eq!(TraceContext::shared(views(3..4)), None);
        assert_eq!(TraceContext::shared(views(0..0)), None);

        let headers =
            |i: usize| TraceContext::of_event(&batch.get(i).unwrap()).map(|c| c.to_headers());
        let (a, b, c) = (headers(0), headers(1), headers(2));
        let one = TraceHeaders::shared([a.as_ref(), b.as_ref()]).unwrap();
        let mut h = HeaderMap::new();
        one.insert_into(&mut h);
        assert_eq!(
            (
                h[TRACEPARENT].to_str().unwrap(),
                h[TRACESTATE].to_str().unwrap()
            ),
            (PARENT, "s=1")
        );
        assert_eq!(TraceHeaders::shared([a.as_ref(), c.as_ref()]), None);
        assert_eq!(TraceHeaders::shared([a.as_ref(), None]), None);
        assert_eq!(TraceHeaders::shared([]), None);
    }

    #[test]
    fn events_without_a_context_take_the_requests() {
        let body = br#"[
            {"specversion":"1.0","id":"a","source":"/s","type":"t","data":{"n":1}},
            {"specversion":"1.0","id":"b","source":"/s","type":"t","traceparent":"00-11111111111111111111111111111111-2222222222222222-01","tracestate":"own=1"},
            {"specversion":"1.0","id":"c","source":"/s","type":"t","traceparent":"00-11111111111111111111111111111111-2222222222222222-00"}
        ]"#;
        let batch = decode_batched(Bytes::from_static(body), &DecodeLimits::default())
            .unwrap()
            .batch;
        let sizes: Vec<usize> = batch.iter().map(|e| e.wire_size()).collect();
        let h = headers(&[(TRACEPARENT, PARENT), (TRACESTATE, "req=1")]);
        let ctx = TraceContext::from_headers(&h).unwrap();
        let batch = batch.with_trace_context(&ctx, &DecodeLimits::default());

        let a = batch.get(0).unwrap();
        assert_eq!(a.extension(TRACEPARENT), Some(AttrValue::Str(PARENT)));
        assert_eq!(a.extension(TRACESTATE), Some(AttrValue::Str("req=1")));
        assert_eq!(
            a.wire_size(),
            sizes[0] + r#","traceparent":"","tracestate":"req=1""#.len() + PARENT.len()
        );
        // Encoded again, not copied from the received object, which lacks the extension.
        let json: serde_json::Value =
            serde_json::from_slice(&encode_structured(&a, &Default::default())).unwrap();
        assert_eq!(json["traceparent"], PARENT);
        assert_eq!(json["data"], serde_json::json!({"n": 1}));

        // An event's own context wins, tracestate included, and one without a tracestate gets
        // none from the request (it belongs to the request's traceparent).
        let b = batch.get(1).unwrap();
        let own = "00-11111111111111111111111111111111-2222222222222222-01";
        assert_eq!(b.extension(TRACEPARENT), Some(AttrValue::Str(own)));
        assert_eq!(b.extension(TRACESTATE), Some(AttrValue::Str("own=1")));
        assert_eq!(b.wire_size(), sizes[1]);
        let c = batch.get(2).unwrap();
        assert_eq!(c.extension(TRACESTATE), None);
        assert_eq!(c.extensions().len(), 1);
    }

    #[test]
    fn a_binary_event_carries_the_context_to_its_delivery() {
        let h = headers(&[
            ("ce-specversion", "1.0"),
            ("ce-id", "1"),
            ("ce-source", "/s"),
            ("ce-type", "t"),
            ("content-type", "text/plain"),
            (TRACEPARENT, PARENT),
        ]);
        let batch = decode_binary(&h, Bytes::from_static(b"hi"), &DecodeLimits::default()).unwrap();
        // Decoding alone leaves the transport header out of the event.
        assert_eq!(batch.get(0).unwrap().extension(TRACEPARENT), None);
        let batch = batch.with_trace_context(
            &TraceContext::from_headers(&h).unwrap(),
            &DecodeLimits::default(),
        );
        let view = batch.get(0).unwrap();

        let (mut out, body) = encode_binary(&view, &Default::default());
        TraceContext::of_event(&view)
            .unwrap()
            .insert_headers(&mut out);
        assert_eq!(out["ce-traceparent"], PARENT);
        assert_eq!(out[TRACEPARENT], PARENT);
        assert!(out.get(TRACESTATE).is_none());
        assert_eq!(&body[..], b"hi");
    }

    #[test]
    fn a_batch_whose_events_all_have_a_context_is_left_as_it_is() {
        let body = br#"[{"specversion":"1.0","id":"a","source":"/s","type":"t","traceparent":"00-11111111111111111111111111111111-2222222222222222-01"}]"#;
        let batch = decode_batched(Bytes::from_static(body), &DecodeLimits::default())
            .unwrap()
            .batch;
        let before = batch.clone();
        let h = headers(&[(TRACEPARENT, PARENT)]);
        let after = batch.with_trace_context(
            &TraceContext::from_headers(&h).unwrap(),
            &DecodeLimits::default(),
        );
        assert_eq!(after, before);
        assert!(after.get(0).unwrap().received_json().is_some());
    }

    #[test]
    fn the_context_never_takes_an_event_over_the_event_size_limit() {
        let body = br#"[
            {"specversion":"1.0","id":"a","source":"/s","type":"t"},
            {"specversion":"1.0","id":"b","source":"/s","type":"t","data":"0123456789"}
        ]"#;
        let small = |limits: &DecodeLimits| {
            decode_batched(Bytes::from_static(body), limits)
                .unwrap()
                .batch
        };
        let sizes: Vec<usize> = small(&DecodeLimits::default())
            .iter()
            .map(|e| e.wire_size())
            .collect();
        let parent_bytes = r#","traceparent":"""#.len() + PARENT.len();
        let h = headers(&[(TRACEPARENT, PARENT), (TRACESTATE, "req=1")]);
        let ctx = TraceContext::from_headers(&h).unwrap();
        // Room for the traceparent of the first event, not for its tracestate; none for the
        // second's traceparent.
        let limits = DecodeLimits {
            max_event_bytes: sizes[0] + parent_bytes + 1,
            ..DecodeLimits::default()
        };
        assert!(sizes[1] + parent_bytes > limits.max_event_bytes);
        let batch = small(&limits).with_trace_context(&ctx, &limits);

        let a = batch.get(0).unwrap();
        assert_eq!(a.extension(TRACEPARENT), Some(AttrValue::Str(PARENT)));
        assert_eq!(a.extension(TRACESTATE), None);
        assert_eq!(a.wire_size(), sizes[0] + parent_bytes);
        let b = batch.get(1).unwrap();
        assert_eq!(b.extensions().len(), 0);
        assert_eq!(b.wire_size(), sizes[1]);
        assert!(b.received_json().is_some());
    }

    #[test]
    fn an_event_with_a_malformed_extension_has_no_context_to_deliver() {
        let body =
            br#"{"specversion":"1.0","id":"a","source":"/s","type":"t","traceparent":"not one"}"#;
        let batch =
            crate::event::decode_structured(Bytes::from_static(body), &DecodeLimits::default())
                .unwrap();
        assert_eq!(TraceContext::of_event(&batch.get(0).unwrap()), None);
    }
}
