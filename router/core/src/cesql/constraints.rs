//! Necessary conditions on context attributes, read off a compiled expression for the trigger
//! index to pre-check cheaply.
//!
//! A constraint is derived only from a top-level `AND` conjunct (after constant folding) of
//! one of these forms, where `attr` is a [`KnownAttr`] and the literal is a String:
//!
//! - `attr = 'literal'` or `'literal' = attr` → [`ConstraintKind::Exact`];
//! - `attr LIKE 'pattern'`: [`ConstraintKind::Exact`] when the pattern has no wildcard, else
//!   [`ConstraintKind::Prefix`] for its literal text before the first wildcard and
//!   [`ConstraintKind::Suffix`] for its literal text after the last one, when non-empty.
//!
//! Each holds whenever the expression matches, because a chain of `AND`s is `true` without
//! error only if every conjunct is (nothing short-circuits on `true`). Known attributes are
//! always Strings, so `=` against a String literal is plain string equality and `LIKE` reads
//! the value unchanged; extensions may be Integers or Booleans (`myint = '05'` holds for
//! `myint = 5`), so they get no constraints. `!=`, `NOT LIKE`, `OR` and `XOR` give none.

use super::ast::LogicOp;
use super::compile::Node;
use super::like::Shape;
use super::value::Value;
use super::{ConstraintKind, ImpliedConstraint};
use crate::event::KnownAttr;

/// The constraints `root` implies, in source order; possibly contradictory (then the
/// expression never matches).
pub(super) fn implied(root: &Node) -> Vec<ImpliedConstraint> {
    let mut conjuncts = Vec::new();
    collect_conjuncts(root, &mut conjuncts);
    let mut out = Vec::new();
    for node in conjuncts {
        match node {
            Node::Equal { lhs, rhs, .. } => {
                let exact = match (&**lhs, &**rhs) {
                    (Node::Attribute { name, .. }, Node::Const(Value::Str(s)))
                    | (Node::Const(Value::Str(s)), Node::Attribute { name, .. }) => {
                        known(name).map(|attr| (attr, s))
                    }
                    _ => None,
                };
                if let Some((attribute, s)) = exact {
                    out.push(ImpliedConstraint {
                        attribute,
                        kind: ConstraintKind::Exact(s.to_string()),
                    });
                }
            }
            Node::Like { operand, pattern } => {
                let Node::Attribute { name, .. } = &**operand else {
                    continue;
                };
                let Some(attribute) = known(name) else {
                    continue;
                };
                let mut push = |kind| out.push(ImpliedConstraint { attribute, kind });
                match pattern.shape() {
                    Shape::Exact(s) => push(ConstraintKind::Exact(s.to_owned())),
                    Shape::Ends { prefix, suffix } => {
                        if let Some(p) = prefix {
                            push(ConstraintKind::Prefix(p.to_owned()));
                        }
                        if let Some(s) = suffix {
                            push(ConstraintKind::Suffix(s.to_owned()));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    out
}

/// The operands of the top-level `AND` chains, nested ones included: `a AND (b AND c)` has
/// the conjuncts `a`, `b`, `c`. Parentheses leave no trace in the compiled tree.
fn collect_conjuncts<'n>(node: &'n Node, out: &mut Vec<&'n Node>) {
    match node {
        Node::Logic {
            op: LogicOp::And,
            operands,
            ..
        } => operands.iter().for_each(|o| collect_conjuncts(o, out)),
        node => out.push(node),
    }
}

fn known(name: &str) -> Option<KnownAttr> {
    KnownAttr::from_name(name)
}
