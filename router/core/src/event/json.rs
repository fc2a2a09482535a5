//! Structured and batched JSON decoding with simd-json, straight into byte ranges.
//!
//! The body is copied once into a padded scratch buffer, which simd-json parses in place: it
//! validates UTF-8 and JSON, unescapes strings where they stand, and leaves a tape of nodes plus
//! the byte offsets of every structural character. We walk both in step. Attribute strings become
//! ranges into the scratch buffer (the batch's `text`); `data` values become ranges into the
//! untouched body (`raw`), so JSON data is forwarded verbatim. Parser buffers are reused per
//! thread, so steady-state decoding allocates per batch (the scratch copy and two tables), never
//! per event.
//!
//! Mapping (JSON format §2–§4): members named like attributes are attributes; `null` means
//! absent; extension values may be strings, 32-bit integers or booleans; `data` with a JSON (or
//! absent) `datacontenttype` is a JSON value, otherwise a string is text; `data_base64` is
//! base64. Spec version 0.3's `schemaurl` and `datacontentencoding: base64` are understood.

use std::cell::RefCell;

use base64::Engine as _;
use bytes::Bytes;
use simd_json::{Buffers, INPUT_PADDING, Node, StaticNode, Tape, fill_tape_padded};

use super::attr::{KnownAttr, SpecVersion, is_valid_attribute_name};
use super::batch::{DataSpan, EventBatch, Ext, ExtValue, Slot, Span};
use super::error::{DecodeError, DecodeErrorKind};
use super::validate::validate_event;
use super::{DecodeLimits, is_json_media_type};

/// The result of decoding a batch: the valid events, and an error for each invalid one.
#[derive(Debug)]
pub struct BatchDecode {
    /// The events that passed validation, in order.
    pub batch: EventBatch,
    /// One error per rejected event, carrying its index in the received array.
    pub rejected: Vec<DecodeError>,
}

/// Decodes a structured-mode body (`application/cloudevents+json`): exactly one event.
pub fn decode_structured(body: Bytes, limits: &DecodeLimits) -> Result<EventBatch, DecodeError> {
    let decoded = decode(body, limits, Shape::Single)?;
    match decoded.rejected.into_iter().next() {
        Some(err) => Err(err),
        None => Ok(decoded.batch),
    }
}

/// Decodes a batched-mode body (`application/cloudevents-batch+json`).
///
/// Errors about the body as a whole (not JSON, not an array, too many events) fail the call;
/// errors about single events are collected in [`BatchDecode::rejected`], so a caller can
/// choose between all-or-nothing (HTTP ingress) and partial acceptance (QUIC acks).
pub fn decode_batched(body: Bytes, limits: &DecodeLimits) -> Result<BatchDecode, DecodeError> {
    decode(body, limits, Shape::Array)
}

/// Where and why `raw` is not JSON, in words a producer can act on.
///
/// simd-json's errors name its parsing stage (`InternalError at character 0`) and point at a
/// structural character near the fault rather than at it. This runs only for a body already
/// refused, so a second, slower parse by serde_json, which names the fault and its position,
/// costs the hot path nothing. Should serde_json accept what simd-json refused (nesting deeper
/// than simd-json allows, say), simd-json's own words are kept.
#[cold]
fn invalid_json(raw: &[u8], simd: &simd_json::Error) -> DecodeErrorKind {
    // serde_json skips the contents of strings it is told to ignore, UTF-8 included.
    if let Err(e) = std::str::from_utf8(raw) {
        return DecodeErrorKind::InvalidJson {
            offset: e.valid_up_to(),
            reason: "invalid UTF-8".to_owned(),
        };
    }
    match serde_json::from_slice::<serde::de::IgnoredAny>(raw) {
        Err(e) => {
            let full = e.to_string();
            let position = format!(" at line {} column {}", e.line(), e.column());
            DecodeErrorKind::InvalidJson {
                offset: byte_offset(raw, e.line(), e.column()),
                reason: full.strip_suffix(&position).unwrap_or(&full).to_owned(),
            }
        }
        Ok(_) => DecodeErrorKind::InvalidJson {
            offset: simd.index(),
            reason: format!("{:?}", simd.error()),
        },
    }
}

/// The byte offset of serde_json's 1-based `line` and byte `column` (0 for column 0, which
/// serde_json reports at the start of a line).
fn byte_offset(raw: &[u8], line: usize, column: usize) -> usize {
    let line_start = if line <= 1 {
        0
    } else {
        raw.iter()
            .enumerate()
            .filter(|&(_, &b)| b == b'\n')
            .nth(line - 2)
            .map_or(raw.len(), |(i, _)| i + 1)
    };
    (line_start + column.saturating_sub(1)).min(raw.len())
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    Single,
    Array,
}

/// Parser state reused by every decode on a thread. The tape is kept between calls with its
/// lifetime erased (`Tape::reset`), so its allocation is reused too.
struct Scratch {
    buffers: Buffers,
    tape: Option<Tape<'static>>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> =
        RefCell::new(Scratch { buffers: Buffers::new(64 * 1024), tape: None });
}

fn decode(raw: Bytes, limits: &DecodeLimits, shape: Shape) -> Result<BatchDecode, DecodeError> {
    if raw.len() > u32::MAX as usize - INPUT_PADDING {
        return Err(DecodeError::body(DecodeErrorKind::BodyTooLarge(raw.len())));
    }
    if shape == Shape::Single && raw.len() > limits.max_event_bytes {
        return Err(DecodeError::body(DecodeErrorKind::EventTooLarge {
            size: raw.len(),
            limit: limits.max_event_bytes,
        }));
    }
    let len = raw.len();
    let mut scratch = Vec::with_capacity(len + INPUT_PADDING);
    scratch.extend_from_slice(&raw);
    scratch.resize(len + INPUT_PADDING, 0);

    let result = SCRATCH.with(|cell| {
        // A decoder never re-enters itself, so the borrow cannot fail; if it somehow did,
        // fresh buffers keep us correct at the cost of an allocation.
        let mut fresh;
        let mut guard = cell.try_borrow_mut();
        let state: &mut Scratch = match guard {
            Ok(ref mut s) => s,
            Err(_) => {
                fresh = Scratch {
                    buffers: Buffers::new(len),
                    tape: None,
                };
                &mut fresh
            }
        };
        let mut tape = state.tape.take().unwrap_or_else(Tape::null).reset();
        let base = scratch.as_ptr() as usize;
        let parsed = fill_tape_padded(&mut scratch, len, &mut state.buffers, &mut tape);
        let out = match parsed {
            Err(e) => Err(DecodeError::body(invalid_json(&raw, &e))),
            Ok(()) => {
                let walker = Walker {
                    raw: &raw,
                    base,
                    nodes: &tape.0,
                    ni: 0,
                    structurals: state.buffers.structural_indexes(),
                    si: 0,
                };
                walk(walker, limits, shape)
            }
        };
        state.tape = Some(tape.reset());
        out
    });
    let (tables, rejected) = result?;
    // The padding stays in the buffer: freezing a Vec whose length is its capacity is free,
    // while truncating first would reallocate.
    let text = Bytes::from(scratch);
    let batch = EventBatch {
        raw,
        text,
        slots: tables.slots,
        exts: tables.exts,
        arrival: None,
    };
    Ok(BatchDecode { batch, rejected })
}

struct Tables {
    slots: Vec<Slot>,
    exts: Vec<Ext>,
}

/// One token of the document: a structural character, with its tape node when it starts a value.
#[derive(Clone, Copy)]
struct Token<'t> {
    pos: usize,
    byte: u8,
    node: Option<&'t Node<'t>>,
}

/// Walks simd-json's structural indexes and tape in step. The document is already validated, so
/// the walker can trust the grammar.
struct Walker<'r, 't> {
    raw: &'r [u8],
    base: usize,
    nodes: &'t [Node<'t>],
    ni: usize,
    structurals: &'t [u32],
    si: usize,
}

impl<'t> Walker<'_, 't> {
    fn next(&mut self) -> Option<Token<'t>> {
        let pos = *self.structurals.get(self.si)? as usize;
        self.si += 1;
        let byte = *self.raw.get(pos)?;
        let node = match byte {
            b':' | b',' | b'}' | b']' => None,
            _ => {
                let n = self.nodes.get(self.ni);
                self.ni += 1;
                n
            }
        };
        Some(Token { pos, byte, node })
    }

    fn peek_pos(&self) -> usize {
        self.structurals
            .get(self.si)
            .map_or(self.raw.len(), |&p| p as usize)
    }

    /// Skips the rest of a container whose opening token was just read; returns the position
    /// just past its closing bracket.
    fn skip_container(&mut self) -> usize {
        let mut depth = 1usize;
        while let Some(tok) = self.next() {
            match tok.byte {
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    depth -= 1;
                    if depth == 0 {
                        return tok.pos + 1;
                    }
                }
                _ => {}
            }
        }
        self.raw.len()
    }

    /// The extent of the value whose first token was just read.
    fn value_end(&mut self, tok: Token<'t>) -> usize {
        match tok.byte {
            b'{' | b'[' => self.skip_container(),
            _ => {
                let end = self.peek_pos();
                let mut e = end;
                while e > tok.pos && self.raw[e - 1].is_ascii_whitespace() {
                    e -= 1;
                }
                e
            }
        }
    }

    fn span_of(&self, s: &str) -> Span {
        Span::new(s.as_ptr() as usize - self.base, s.len())
    }
}

fn json_type(tok: &Token<'_>) -> &'static str {
    match tok.node {
        Some(Node::Object { .. }) => "an object",
        Some(Node::Array { .. }) => "an array",
        Some(Node::String(_)) => "a string",
        Some(Node::Static(StaticNode::Bool(_))) => "a boolean",
        Some(Node::Static(StaticNode::Null)) => "null",
        Some(Node::Static(StaticNode::F64(_))) => "a fractional number",
        Some(Node::Static(_)) => "a number",
        None => "nothing",
    }
}

fn walk(
    mut w: Walker<'_, '_>,
    limits: &DecodeLimits,
    shape: Shape,
) -> Result<(Tables, Vec<DecodeError>), DecodeError> {
    let Some(first) = w.next() else {
        return Err(DecodeError::body(DecodeErrorKind::NotAnObject {
            found: "nothing",
        }));
    };
    let mut tables = Tables {
        slots: Vec::new(),
        exts: Vec::new(),
    };
    let mut rejected = Vec::new();
    match shape {
        Shape::Single => {
            if first.byte != b'{' {
                return Err(DecodeError::body(DecodeErrorKind::NotAnObject {
                    found: json_type(&first),
                }));
            }
            tables.slots.reserve_exact(1);
            tables.exts.reserve(8);
            if let Err(kind) = read_event(&mut w, first, &mut tables, limits) {
                rejected.push(DecodeError::body(kind));
            }
        }
        Shape::Array => {
            let Some(Node::Array { len, .. }) = first.node else {
                return Err(DecodeError::body(DecodeErrorKind::NotAnArray {
                    found: json_type(&first),
                }));
            };
            if *len > limits.max_batch_events {
                return Err(DecodeError::body(DecodeErrorKind::TooManyEvents {
                    count: *len,
                    limit: limits.max_batch_events,
                }));
            }
            tables.slots.reserve_exact(*len);
            // Room for four extensions per event; more only grows the table amortized.
            tables.exts.reserve(*len * 4);
            let mut index = 0usize;
            while let Some(tok) = w.next() {
                match tok.byte {
                    b',' => continue,
                    b']' => break,
                    b'{' => {
                        let ext_mark = tables.exts.len();
                        match read_event(&mut w, tok, &mut tables, limits) {
                            Ok(()) => {}
                            Err(kind) => {
                                tables.exts.truncate(ext_mark);
                                rejected.push(DecodeError::at(Some(index), kind));
                            }
                        }
                    }
                    _ => {
                        w.value_end(tok);
                        rejected.push(DecodeError::at(
                            Some(index),
                            DecodeErrorKind::NotAnObject {
                                found: json_type(&tok),
                            },
                        ));
                    }
                }
                index += 1;
            }
        }
    }
    Ok((tables, rejected))
}

/// What a member of an event object is, once the spec version is known.
enum Member {
    Known(KnownAttr),
    ContentEncoding,
    Extension,
}

/// Reads one event object whose `{` was just consumed. The walker always ends up just past the
/// object, even on error, so the next event of a batch can be read.
fn read_event<'t>(
    w: &mut Walker<'_, 't>,
    open: Token<'t>,
    t: &mut Tables,
    limits: &DecodeLimits,
) -> Result<(), DecodeErrorKind> {
    // First pass over the members: find the object's end, `specversion` (which decides how
    // 0.3 names read, and may come last) and `data`; keep the rest for the second pass.
    let mut first_error: Option<DecodeErrorKind> = None;
    let mut version: Option<SpecVersion> = None;
    let mut data: Option<(Token<'t>, usize)> = None;
    let mut data_base64: Option<Token<'t>> = None;
    let mut members: smallvec::SmallVec<[(&'t str, Token<'t>); 16]> = smallvec::SmallVec::new();
    let mut end = w.raw.len();
    while let Some(tok) = w.next() {
        match tok.byte {
            b',' => continue,
            b'}' => {
                end = tok.pos + 1;
                break;
            }
            _ => {}
        }
        let Some(Node::String(key)) = tok.node else {
            break;
        };
        let _colon = w.next();
        let Some(value) = w.next() else { break };
        let value_end = w.value_end(value);
        let duplicate = match *key {
            "specversion" => match value.node {
                Some(Node::String(v)) => match SpecVersion::parse(v) {
                    Some(sv) => version.replace(sv).is_some(),
                    None => {
                        first_error.get_or_insert(DecodeErrorKind::UnsupportedSpecVersion(
                            (*v).to_owned(),
                        ));
                        false
                    }
                },
                _ => {
                    first_error.get_or_insert(invalid_type("specversion", "a string", &value));
                    false
                }
            },
            "data" => data.replace((value, value_end)).is_some(),
            "data_base64" => data_base64.replace(value).is_some(),
            _ => {
                let dup = members.iter().any(|(k, _)| k == key);
                members.push((key, value));
                dup
            }
        };
        if duplicate {
            first_error.get_or_insert(DecodeErrorKind::DuplicateAttribute((*key).to_owned()));
        }
    }
    let size = end.saturating_sub(open.pos);
    if size > limits.max_event_bytes {
        return Err(DecodeErrorKind::EventTooLarge {
            size,
            limit: limits.max_event_bytes,
        });
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let version = version.ok_or(DecodeErrorKind::MissingAttribute("specversion"))?;

    // Second pass: attributes and extensions.
    let mut slot = Slot::new(version, t.exts.len());
    slot.wire_size = size as u32;
    slot.json = Some(Span::new(open.pos, size));
    let mut known: [Option<&str>; KnownAttr::COUNT] = [None; KnownAttr::COUNT];
    let mut base64_encoded = false;
    for (key, value) in members {
        if matches!(value.node, Some(Node::Static(StaticNode::Null))) {
            continue;
        }
        let member = match key {
            "datacontentencoding" if version == SpecVersion::V03 => Member::ContentEncoding,
            _ => KnownAttr::from_name_in(key, version).map_or(Member::Extension, Member::Known),
        };
        match member {
            Member::ContentEncoding => {
                let Some(Node::String(enc)) = value.node else {
                    return Err(invalid_type(key, "a string", &value));
                };
                if !enc.eq_ignore_ascii_case("base64") {
                    return Err(DecodeErrorKind::UnsupportedContentEncoding(
                        (*enc).to_owned(),
                    ));
                }
                base64_encoded = true;
            }
            Member::Known(k) => {
                let Some(Node::String(s)) = value.node else {
                    return Err(invalid_type(key, "a string", &value));
                };
                known[k as usize] = Some(s);
                slot.known[k as usize] = Some(w.span_of(s));
            }
            Member::Extension => {
                if !is_valid_attribute_name(key.as_bytes()) {
                    return Err(DecodeErrorKind::InvalidAttributeName(key.to_owned()));
                }
                let out_of_range = || DecodeErrorKind::IntegerOutOfRange(key.to_owned());
                let ext = match value.node {
                    Some(Node::String(s)) => ExtValue::Str(w.span_of(s)),
                    Some(Node::Static(StaticNode::Bool(b))) => ExtValue::Bool(*b),
                    Some(Node::Static(StaticNode::I64(i))) => {
                        ExtValue::Int(i32::try_from(*i).map_err(|_| out_of_range())?)
                    }
                    Some(Node::Static(StaticNode::U64(u))) => {
                        ExtValue::Int(i32::try_from(*u).map_err(|_| out_of_range())?)
                    }
                    _ => {
                        return Err(invalid_type(
                            key,
                            "a string, an integer or a boolean",
                            &value,
                        ));
                    }
                };
                // The key is a `&str` into the text buffer too.
                t.exts.push(Ext {
                    name: w.span_of(key),
                    value: ext,
                });
            }
        }
    }
    slot.ext_len = (t.exts.len() - slot.ext_start as usize) as u32;

    validate_event(version, &known)?;

    // Data (JSON format §3.1.2).
    // `data: null` is an explicit null payload (JSON format §3.1.1); `data_base64: null` is unset.
    let data_base64 =
        data_base64.filter(|tok| !matches!(tok.node, Some(Node::Static(StaticNode::Null))));
    let json_data = known[KnownAttr::DataContentType as usize].is_none_or(is_json_media_type);
    slot.data = match (data, data_base64) {
        (Some(_), Some(_)) => return Err(DecodeErrorKind::DataAndDataBase64),
        (None, Some(tok)) => {
            let Some(Node::String(s)) = tok.node else {
                return Err(invalid_type("data_base64", "a string", &tok));
            };
            check_base64(s, "data_base64")?;
            DataSpan::Base64(w.span_of(s))
        }
        (Some((tok, _)), None) if base64_encoded => {
            let Some(Node::String(s)) = tok.node else {
                return Err(invalid_type("data", "a base64 string", &tok));
            };
            check_base64(s, "data")?;
            DataSpan::Base64(w.span_of(s))
        }
        (
            Some((
                Token {
                    node: Some(Node::String(s)),
                    ..
                },
                _,
            )),
            None,
        ) if !json_data => DataSpan::Text(w.span_of(s)),
        (Some((tok, value_end)), None) => DataSpan::Json(Span::new(tok.pos, value_end - tok.pos)),
        (None, None) => DataSpan::None,
    };
    t.slots.push(slot);
    Ok(())
}

fn invalid_type(attribute: &str, expected: &'static str, found: &Token<'_>) -> DecodeErrorKind {
    DecodeErrorKind::InvalidType {
        attribute: attribute.to_owned(),
        expected,
        found: json_type(found),
    }
}

fn check_base64(s: &str, member: &'static str) -> Result<(), DecodeErrorKind> {
    // Validation without allocating: decode in fixed-size chunks into a stack buffer.
    let engine = &base64::engine::general_purpose::STANDARD;
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return Err(DecodeErrorKind::InvalidBase64(member));
    }
    let mut out = [0u8; 768];
    for chunk in bytes.chunks(1024) {
        engine
            .decode_slice(chunk, &mut out)
            .map_err(|_| DecodeErrorKind::InvalidBase64(member))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(body: &[u8]) -> String {
        let err = decode_batched(Bytes::copy_from_slice(body), &DecodeLimits::default())
            .expect_err("invalid JSON");
        err.to_string()
    }

    #[test]
    fn invalid_json_says_what_and_where() {
        let cases: [(&[u8], &str); 8] = [
            (b"hello", "(at byte 0): expected value"),
            (b"[1,", "(at byte 2): EOF while parsing a value"),
            (br#"["\x"]"#, "(at byte 3): invalid escape"),
            (b"[] x", "(at byte 3): trailing characters"),
            (br#"[{"a":}]"#, "(at byte 6): expected value"),
            (b"", "(at byte 0): EOF while parsing a value"),
            (b"[\n  {\"a\" 1}]", "(at byte 9): expected `:`"),
            (b"[\"\xff\"]", "(at byte 2): invalid UTF-8"),
        ];
        for (body, want) in cases {
            let got = error(body);
            assert!(
                got.contains(want),
                "{:?}: got {got:?}, want {want:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
