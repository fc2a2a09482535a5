use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::cesql::Expression;
use crate::event::{DecodeLimits, EventBatch, decode_structured};
use crate::filter::AttrKey;

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

fn exact(attr: &str, value: &str) -> Filter {
    Filter::Constraints(vec![c(attr, MatchKind::Exact, value)])
}

fn matches(index: &TriggerIndex, json: &str) -> Vec<TriggerId> {
    let b = event(json);
    let mut out = Vec::new();
    index.matches(&b.get(0).unwrap(), &mut MatchScratch::new(), &mut out);
    out
}

const E: &str = r#"{"specversion":"1.0","id":"1","source":"/orders/eu","type":"order.created","subject":"img/cat.png","n":42,"flag":true}"#;

#[test]
fn exact_prefix_suffix_and_scan() {
    let index = TriggerIndex::build(vec![
        exact("type", "order.created"),
        exact("type", "order.deleted"),
        Filter::Constraints(vec![c("source", MatchKind::Prefix, "/orders")]),
        Filter::Constraints(vec![c("subject", MatchKind::Suffix, ".png")]),
        Filter::Everything,
        Filter::Not(Box::new(exact("type", "order.created"))),
        exact("n", "42"),
        exact("flag", "true"),
        Filter::Present(vec![AttrKey::new("missing")]),
        Filter::Cesql(Box::new(
            Expression::compile("type = 'order.created' AND n > 40").unwrap(),
        )),
    ]);
    assert_eq!(matches(&index, E), vec![0, 2, 3, 4, 6, 7, 9]);
    assert_eq!(
        index.scanned(),
        3,
        "Everything, Not and Present cannot be indexed"
    );
}

#[test]
fn any_of_exacts_registers_every_alternative() {
    let index = TriggerIndex::build(vec![Filter::Any(vec![
        exact("type", "a"),
        exact("type", "order.created"),
    ])]);
    assert_eq!(matches(&index, E), vec![0]);
    assert_eq!(index.scanned(), 0);
}

#[test]
fn conjunction_is_verified_after_the_index_hit() {
    let index = TriggerIndex::build(vec![Filter::Constraints(vec![
        c("type", MatchKind::Exact, "order.created"),
        c("source", MatchKind::Prefix, "/payments"),
    ])]);
    assert!(matches(&index, E).is_empty());
}

#[derive(Clone, Debug)]
enum F {
    C(u8, u8, u8),
    Present(u8),
    All(Vec<F>),
    Any(Vec<F>),
    Not(Box<F>),
    Cesql(u8, u8),
}

const ATTRS: [&str; 4] = ["type", "source", "subject", "ext"];
const VALUES: [&str; 5] = ["a", "ab", "abc", "b", "ba"];

fn to_filter(f: &F) -> Filter {
    match f {
        F::C(a, k, v) => Filter::Constraints(vec![c(
            ATTRS[*a as usize % 4],
            [MatchKind::Exact, MatchKind::Prefix, MatchKind::Suffix][*k as usize % 3],
            VALUES[*v as usize % 5],
        )]),
        F::Present(a) => Filter::Present(vec![AttrKey::new(ATTRS[*a as usize % 4])]),
        F::All(fs) => Filter::all(fs.iter().map(to_filter).collect()),
        F::Any(fs) => Filter::Any(fs.iter().map(to_filter).collect()),
        F::Not(f) => Filter::Not(Box::new(to_filter(f))),
        F::Cesql(a, v) => Filter::Cesql(Box::new(
            Expression::compile(&format!(
                "{} = '{}' AND source LIKE 'a%'",
                ATTRS[*a as usize % 3],
                VALUES[*v as usize % 5]
            ))
            .unwrap(),
        )),
    }
}

fn arb_filter() -> impl Strategy<Value = F> {
    let leaf = prop_oneof![
        (0u8..4, 0u8..3, 0u8..5).prop_map(|(a, k, v)| F::C(a, k, v)),
        (0u8..4).prop_map(F::Present),
        (0u8..3, 0u8..5).prop_map(|(a, v)| F::Cesql(a, v)),
    ];
    leaf.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 1..3).prop_map(F::All),
            prop::collection::vec(inner.clone(), 1..3).prop_map(F::Any),
            inner.prop_map(|f| F::Not(Box::new(f))),
        ]
    })
}

fn arb_event() -> impl Strategy<Value = String> {
    (
        0usize..5,
        0usize..5,
        prop::option::of(0usize..5),
        prop::option::of(0usize..5),
    )
        .prop_map(|(t, s, sub, ext)| {
            let mut json = format!(
                r#"{{"specversion":"1.0","id":"1","type":"{}","source":"{}""#,
                VALUES[t], VALUES[s]
            );
            if let Some(sub) = sub {
                json.push_str(&format!(r#","subject":"{}""#, VALUES[sub]));
            }
            if let Some(e) = ext {
                json.push_str(&format!(r#","ext":"{}""#, VALUES[e]));
            }
            json.push('}');
            json
        })
}

proptest! {
    /// The index returns exactly what evaluating every filter in order returns.
    #[test]
    fn index_agrees_with_a_linear_scan(filters in prop::collection::vec(arb_filter(), 1..24), events in prop::collection::vec(arb_event(), 1..8)) {
        let compiled: Vec<Filter> = filters.iter().map(to_filter).collect();
        let index = TriggerIndex::build(compiled.clone());
        let mut scratch = MatchScratch::new();
        for json in &events {
            let b = event(json);
            let view = b.get(0).unwrap();
            let want: Vec<TriggerId> = compiled.iter().enumerate().filter(|(_, f)| f.matches(&view)).map(|(i, _)| i as TriggerId).collect();
            let mut got = Vec::new();
            index.matches(&view, &mut scratch, &mut got);
            prop_assert_eq!(got, want, "event {}", json);
        }
    }
}
