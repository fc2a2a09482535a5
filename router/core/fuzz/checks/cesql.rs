//! CESQL parser and evaluator.
//!
//! The input is an expression, optionally followed by a `0xFF` byte (never part of UTF-8
//! text) and bytes that choose attribute values for the test events. Invariants:
//!
//! - compiling never panics; a compile error has a column within the text (1 to length + 1,
//!   in characters) and renders;
//! - a compiled expression evaluates deterministically (twice, and after compiling again);
//! - `matches` is `evaluate(..).is_match()`;
//! - `static_type`, when known, is the type of every value the expression evaluates to, with
//!   or without an error;
//! - implied constraints are sound: when the expression matches, every implied constraint
//!   holds for the event's attribute (which therefore is present);
//! - an evaluation error's column is within the text;
//! - `NOT (x)`, for a Boolean `x` without error, is the negation of `x`; for `x` with an error
//!   it is `false` with an error of the same kind;
//! - the same event seen as a map and as a decoded `EventView` evaluates the same, and a
//!   `TriggerIndex` holding the expression as a filter selects exactly the events it matches.

use triggerfish_core::cesql::{CompileError, Evaluation, Expression, Value};
use triggerfish_core::event::{AttrValue, Attributes};
use triggerfish_core::filter::Filter;
use triggerfish_core::index::{MatchScratch, TriggerIndex};

// `events.rs` is a module of the including crate (the fuzz target, or the replay test), so
// that a crate including two checks holds it once.
use crate::events::{Attr, MapEvent};

/// Events built for each expression (beyond the minimal one).
const EVENTS: usize = 4;
/// Most attribute names and candidate values taken from one expression.
const MAX_NAMES: usize = 16;
const MAX_VALUES: usize = 32;
/// The context attributes every test event may carry (besides those the expression names).
pub const CONTEXT_ATTRIBUTES: [&str; 7] = [
    "id",
    "source",
    "type",
    "subject",
    "time",
    "datacontenttype",
    "dataschema",
];

/// Runs every invariant on one input.
pub fn check(data: &[u8]) {
    let (text, material) = match data.iter().position(|&b| b == 0xFF) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let text = String::from_utf8_lossy(text);
    let chars = text.chars().count();
    let expr = match Expression::compile(&text) {
        Ok(expr) => expr,
        Err(e) => {
            check_compile_error(&e, chars);
            return;
        }
    };
    assert_eq!(expr.source(), text);
    assert_eq!(expr.to_string(), text);
    let _ = format!("{expr:?}");
    let again = Expression::compile(&text).expect("compiles a second time");
    let constraints = expr.implied_constraints();
    assert_eq!(constraints, again.implied_constraints());
    assert_eq!(expr.static_type(), again.static_type());
    let negated = negation(&text);
    let index = TriggerIndex::build([Filter::Cesql(Box::new(expr.clone()))]);
    let mut scratch = MatchScratch::new();

    for event in events(&text, material) {
        let result = expr.evaluate(&event);
        assert_eq!(result, expr.evaluate(&event), "evaluation is deterministic");
        assert_eq!(
            result,
            again.evaluate(&event),
            "compiling again changes nothing"
        );
        assert_eq!(expr.matches(&event), result.is_match());
        if let Some(t) = expr.static_type() {
            assert_eq!(
                result.value.value_type(),
                t,
                "static type {t} for {:?}",
                result
            );
        }
        if let Some(e) = &result.error {
            let column = e.column() as usize;
            assert!(
                (1..=chars + 1).contains(&column),
                "column {column} of {e} outside 1..={}",
                chars + 1
            );
            assert!(!e.to_string().is_empty());
        }
        if result.is_match() {
            for c in &constraints {
                let value = event.attribute(c.attribute.name());
                assert!(
                    matches!(value, Some(AttrValue::Str(s)) if c.holds(s)),
                    "matched but the implied constraint {c:?} fails for {value:?}"
                );
            }
        }
        if let Some(negated) = &negated {
            check_negation(&result, &negated.evaluate(&event));
        }
        if let Some(batch) = event.decode() {
            let view = batch.get(0).expect("one event");
            assert_eq!(
                result,
                expr.evaluate(&view),
                "a map and a view of {event:?} differ"
            );
            let mut out = Vec::new();
            index.matches(&view, &mut scratch, &mut out);
            assert_eq!(
                out == [0],
                result.is_match(),
                "the index disagrees with the filter"
            );
        }
    }
}

fn check_compile_error(e: &CompileError, chars: usize) {
    let column = e.column() as usize;
    assert!(
        (1..=chars + 1).contains(&column),
        "column {column} of {e} outside 1..={}",
        chars + 1
    );
    assert!(!e.to_string().is_empty());
    let _ = e.kind().as_str();
}

/// `NOT (text)`, compiled; `None` only when wrapping crosses the nesting limit.
fn negation(text: &str) -> Option<Expression> {
    match Expression::compile(&format!("NOT ({text})")) {
        Ok(e) => Some(e),
        Err(CompileError::TooDeep { .. }) => None,
        Err(e) => panic!("{text:?} compiles but NOT ({text}) does not: {e}"),
    }
}

fn check_negation(inner: &Evaluation<'_>, negated: &Evaluation<'_>) {
    match (&inner.value, &inner.error) {
        (_, Some(e)) => {
            assert_eq!(negated.value, Value::Bool(false), "NOT of a failed operand");
            assert_eq!(negated.error.as_ref().map(|n| n.kind()), Some(e.kind()));
        }
        (Value::Bool(b), None) => {
            assert_eq!(negated.value, Value::Bool(!b));
            assert!(negated.error.is_none(), "{:?}", negated.error);
        }
        _ => {}
    }
}

/// The test events: the minimal valid event, and events whose attributes (those the
/// expression names, and the context attributes) take values from the expression's literals,
/// chosen by the bytes after the expression (or a fixed pattern when there are none).
fn events(text: &str, material: &[u8]) -> Vec<MapEvent> {
    let (mut names, values) = scan(text);
    for known in CONTEXT_ATTRIBUTES {
        if names.len() < MAX_NAMES + CONTEXT_ATTRIBUTES.len() && !names.iter().any(|n| n == known) {
            names.push(known.to_owned());
        }
    }
    let mut out = vec![MapEvent::minimal()];
    let choices = values.len() + 1;
    for k in 0..EVENTS {
        let mut event = MapEvent::minimal();
        for (i, name) in names.iter().enumerate() {
            let selector = match material {
                [] => k * 7 + i * (k + 1),
                m => m[(k * names.len() + i) % m.len()] as usize,
            };
            match values.get(selector % choices) {
                Some(v) => event.set(name, v.clone()),
                // One choice in `choices` leaves the attribute out (required ones keep their
                // minimal value).
                None => {
                    if !matches!(name.as_str(), "id" | "source" | "type") {
                        event.0.remove(name);
                    }
                }
            }
        }
        // Most values make poor timestamps or URIs, and the decoder rejects those events; a
        // variant it accepts still compares the map with the view.
        if event.decode().is_none() {
            out.push(event.decodable());
        }
        out.push(event);
    }
    out
}

/// The attribute names (lower-cased words) and candidate values (string literals, LIKE
/// patterns with their wildcards filled in, integers, Booleans) of an expression.
fn scan(text: &str) -> (Vec<String>, Vec<Attr>) {
    let mut names: Vec<String> = Vec::new();
    let mut values = vec![
        Attr::Bool(true),
        Attr::Bool(false),
        Attr::Str(String::new()),
        Attr::Int(0),
    ];
    let push = |values: &mut Vec<Attr>, v: Attr| {
        if values.len() < MAX_VALUES && !values.contains(&v) {
            values.push(v);
        }
    };
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' || c == '"' {
            let mut literal = String::new();
            i += 1;
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' && chars.get(i + 1) == Some(&c) {
                    i += 1;
                }
                literal.push(chars[i]);
                i += 1;
            }
            i += 1;
            let filled = fill_wildcards(&literal, "");
            let widened = fill_wildcards(&literal, "zz");
            push(&mut values, Attr::Str(literal));
            push(&mut values, Attr::Str(filled));
            push(&mut values, Attr::Str(widened));
        } else if c.is_ascii_digit()
            || (c == '-' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            i += 1;
            while i < chars.len() && chars[i].is_ascii_alphanumeric() {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if let Ok(n) = word.parse::<i32>() {
                push(&mut values, Attr::Int(n));
                push(&mut values, Attr::Str(n.to_string()));
            } else if word.chars().all(|c| c.is_ascii_alphanumeric()) && names.len() < MAX_NAMES {
                names.push(word.to_ascii_lowercase());
            }
        } else if c.is_ascii_alphabetic() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if word.chars().all(|c| c.is_ascii_alphanumeric()) {
                let name = word.to_ascii_lowercase();
                if names.len() < MAX_NAMES && !names.contains(&name) {
                    names.push(name);
                }
                push(&mut values, Attr::Str(word));
            }
        } else {
            i += 1;
        }
    }
    (names, values)
}

/// A string `LIKE pattern` matches: `%` replaced by `fill`, `_` by `x`, escapes resolved.
fn fill_wildcards(pattern: &str, fill: &str) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if matches!(chars.peek(), Some('%' | '_')) => out.extend(chars.next()),
            '%' => out.push_str(fill),
            '_' => out.push('x'),
            c => out.push(c),
        }
    }
    out
}
