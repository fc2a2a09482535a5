use bytes::Bytes;

use super::*;
use crate::event::{DecodeLimits, EventBatch, decode_structured};

fn event(json: &str) -> EventBatch {
    decode_structured(
        Bytes::copy_from_slice(json.as_bytes()),
        &DecodeLimits::default(),
    )
    .unwrap()
}

fn c(attr: &str, kind: MatchKind, value: &str) -> Constraint {
    Constraint {
        attr: AttrKey::new(attr),
        kind,
        value: value.into(),
    }
}

const E: &str = r#"{"specversion":"1.0","id":"1","source":"/orders/eu","type":"order.created","empty":"","n":42,"flag":false,"time":"2018-04-05T03:56:24Z"}"#;

#[test]
fn constraints_compare_canonical_strings_case_sensitively() {
    let b = event(E);
    let e = b.get(0).unwrap();
    let pass = |kind, attr: &str, v: &str| Filter::Constraints(vec![c(attr, kind, v)]).matches(&e);
    assert!(pass(MatchKind::Exact, "type", "order.created"));
    assert!(!pass(MatchKind::Exact, "type", "Order.Created"));
    assert!(pass(MatchKind::Exact, "n", "42"));
    assert!(pass(MatchKind::Exact, "flag", "false"));
    assert!(pass(MatchKind::Exact, "specversion", "1.0"));
    assert!(pass(MatchKind::Exact, "time", "2018-04-05T03:56:24Z"));
    assert!(pass(MatchKind::Prefix, "source", "/orders"));
    assert!(pass(MatchKind::Suffix, "source", "/eu"));
    assert!(pass(MatchKind::Prefix, "n", "4"));
    assert!(!pass(MatchKind::Exact, "missing", "x"));
    assert!(!pass(MatchKind::Prefix, "missing", "x"));
}

#[test]
fn present_means_present_and_non_empty() {
    let b = event(E);
    let e = b.get(0).unwrap();
    assert!(Filter::Present(vec![AttrKey::new("type"), AttrKey::new("n")]).matches(&e));
    assert!(
        !Filter::Present(vec![AttrKey::new("empty")]).matches(&e),
        "empty extension"
    );
    assert!(
        !Filter::Present(vec![AttrKey::new("dataschema")]).matches(&e),
        "absent attribute"
    );
}

#[test]
fn combinators() {
    let b = event(E);
    let e = b.get(0).unwrap();
    let yes = || Filter::Constraints(vec![c("type", MatchKind::Exact, "order.created")]);
    let no = || Filter::Constraints(vec![c("type", MatchKind::Exact, "x")]);
    assert!(Filter::All(vec![yes(), yes()]).matches(&e));
    assert!(!Filter::All(vec![yes(), no()]).matches(&e));
    assert!(Filter::Any(vec![no(), yes()]).matches(&e));
    assert!(!Filter::Any(vec![no(), no()]).matches(&e));
    assert!(Filter::Not(Box::new(no())).matches(&e));
    assert!(Filter::Everything.matches(&e));
}

#[test]
fn cesql_errors_fail_the_event() {
    let b = event(E);
    let e = b.get(0).unwrap();
    let f = |s: &str| Filter::Cesql(Box::new(Expression::compile(s).unwrap())).matches(&e);
    assert!(f("type = 'order.created' AND n = 42"));
    assert!(!f("missingattr = 'x'"), "a missing attribute is an error");
    assert!(
        !f("NOT (missingattr = 'x')"),
        "an error is never inverted into a pass"
    );
    assert!(!f("n / 0 = 1"));
}

#[test]
fn all_flattens_and_index_alternatives_pick_the_most_selective() {
    let f = Filter::all(vec![
        Filter::Constraints(vec![c("subject", MatchKind::Suffix, ".png")]),
        Filter::Everything,
        Filter::All(vec![Filter::Constraints(vec![c(
            "type",
            MatchKind::Exact,
            "t",
        )])]),
        Filter::Cesql(Box::new(
            Expression::compile("source LIKE '/orders/%' AND n > 1").unwrap(),
        )),
    ]);
    let alts = f.index_alternatives().unwrap();
    assert_eq!(alts, vec![c("type", MatchKind::Exact, "t")]);
    let mut necessary = f.necessary_constraints();
    necessary.sort_by(|a, b| a.attr.cmp(&b.attr));
    assert_eq!(necessary.len(), 3, "{necessary:?}");
    assert!(
        Filter::Not(Box::new(Filter::Everything))
            .index_alternatives()
            .is_none()
    );
    assert_eq!(
        Filter::Any(vec![
            Filter::Constraints(vec![c("type", MatchKind::Exact, "a")]),
            Filter::Constraints(vec![c("type", MatchKind::Prefix, "b")])
        ])
        .index_alternatives()
        .unwrap()
        .len(),
        2
    );
}
