//! CloudEvents SQL (CESQL) v1.0.0: lexer, parser, compiler and evaluator.
//!
//! [`Expression::compile`] parses an expression once, resolves its function names, compiles its
//! `LIKE` patterns and folds its constants; [`Expression::evaluate`] then runs it against
//! anything that implements [`Attributes`], borrowing strings from the event instead of copying
//! them. Evaluation allocates nothing unless a string function has to build a new string
//! (`tests/cesql_alloc.rs` checks this with a counting allocator).
//!
//! ```
//! use triggerfish_core::cesql::{Expression, Value};
//! use triggerfish_core::event::{AttrValue, Attributes};
//!
//! struct Event;
//! impl Attributes for Event {
//!     fn attribute(&self, name: &str) -> Option<AttrValue<'_>> {
//!         match name {
//!             "type" => Some(AttrValue::Str("com.example.order.created")),
//!             "priority" => Some(AttrValue::Int(7)),
//!             _ => None,
//!         }
//!     }
//! }
//!
//! let filter = Expression::compile("type LIKE 'com.example.%' AND priority > 5")?;
//! assert!(filter.matches(&Event));
//!
//! let lookup = Expression::compile("missing = 'x'")?;
//! let result = lookup.evaluate(&Event);
//! assert_eq!(result.value, Value::Bool(false));
//! assert!(result.error.is_some()); // a MissingAttributeError
//! # Ok::<(), triggerfish_core::cesql::CompileError>(())
//! ```
//!
//! # Errors
//!
//! Compile errors ([`CompileError`]) carry a 1-based column: syntax errors, and calls that
//! cannot be dispatched (an unknown function or an unsupported number of arguments, both the
//! spec's _MissingFunctionError_, reported when the filter is loaded rather than on every
//! event, as spec §3.3 recommends). Evaluation returns a value *and* an optional
//! [`EvalError`] (spec §3.3): `missing = 2` evaluates to `false` with a _MissingAttributeError_.
//! [`Expression::matches`] is the filter predicate of spec §1.2: `true` only for the value
//! `true` without error. The evaluator works in the spec's fail-fast mode (§4.1): once an
//! operand fails, no further operand is evaluated, and every enclosing operator returns its
//! zero value. Only the first error is reported.
//!
//! # What this module does not do
//!
//! It does not read the event's `data` (the spec excludes it), does not support user-defined
//! functions (the spec makes them optional), and does not decide what a non-Boolean filter
//! means: [`Expression::static_type`] lets the config loader reject one.
//!
//! # Where the spec and the TCK are ambiguous, and what this module does
//!
//! - **`AND`, `OR` and `XOR` share one precedence level and associate to the left** (spec
//!   §3.6 lists them together and says operators of equal precedence are evaluated left to
//!   right). So `a OR b AND c` is `(a OR b) AND c`, unlike SQL, where `AND` binds tighter.
//!   The reference ANTLR grammar (used by the Go and Java SDKs, and so by Knative) declares
//!   the same level but `<assoc=right>`, which makes `a AND b OR c` mean `a AND (b OR c)`
//!   there. Chains of a single operator mean the same in all three readings; mixed chains
//!   without parentheses do not, so they are rejected at compile time
//!   ([`CompileError::MixedLogicalOperators`]) rather than read one way silently. A Knative
//!   filter that relied on sdk-go's grouping fails to load with a message saying where to put
//!   the parentheses.
//! - **Prefix `NOT` binds tighter than everything but function calls** (§3.6), so
//!   `NOT a = b` is `(NOT a) = b` and `NOT x LIKE 'a%'` is `(NOT x) LIKE 'a%'`; `x NOT LIKE`
//!   and `x NOT IN` are the way to negate those.
//! - **An implicit Integer-to-Boolean cast is a _CastError_** (the value is `false`), although
//!   §3.7's table lists Integer → Boolean as a supported cast: the TCK expects `NOT 10` to be
//!   `true` with a _CastError_, while `BOOL(10)` is `true` without error. So operators
//!   (`NOT`, `AND`, `OR`, `XOR`, `=` against a Boolean, `IN` with a Boolean on the left)
//!   refuse Integers, and the explicit `BOOL()` and `IS_BOOL()` accept them.
//! - **Errors and values.** A failed implicit cast yields the target type's zero value and
//!   the operator carries on with it (the TCK's `NOT 10` is `true`); an error raised by an
//!   operand makes the operator return its own zero value without evaluating the rest (the
//!   TCK's `true AND (1 != 1 / 0)` is `false`, `NOT missing` is `false`). The first error
//!   raised is the one reported.
//! - **Overflow** is defined only for `ABS` (2147483647 and a _MathError_). `+`, `-`, `*`,
//!   unary `-` and `/` (`-2147483648 / -1`) follow that precedent: the result saturates to the
//!   32-bit range, with a _MathError_. `-2147483648 % -1` is `0`, without error.
//! - **A sign directly before digits belongs to the literal** (§2.2), so `-2147483648` is a
//!   valid literal although `2147483648` is not; a `+` is accepted only there. `4 -1` is a
//!   subtraction.
//! - **String literal escapes**: only `\'` in `'…'` and `\"` in `"…"`; any other backslash
//!   stays in the string with the character after it (as the reference grammar and SDKs do),
//!   so `'a\_b'` reaches `LIKE` as `a\_b`.
//! - **`LIKE` escapes**: `\` escapes only `%` and `_`; before anything else it is a literal
//!   backslash (`'ab\c'` matches `ab\c`, as the TCK requires). `_` matches one Unicode scalar
//!   value.
//! - **Attribute names are case-insensitive** (lower-cased when parsed): the grammar says
//!   `[a-z0-9]+` but the TCK writes `EXISTS SOURCE`. Names may start with a digit (`1abc`), as
//!   CloudEvents allows; names longer than the spec's suggested 20 characters are accepted.
//! - **`IN`** evaluates its set left to right and stops at the first match, like the chain of
//!   `OR`s it abbreviates; an element that fails to cast to the left operand's type raises a
//!   _CastError_ and compares as that type's zero value.
//! - **Function arguments**: LENGTH, LEFT, RIGHT and SUBSTRING count Unicode scalar values.
//!   LOWER and UPPER use Unicode's full case mappings (`'ß'` upper-cases to `SS`). SUBSTRING
//!   with a negative length is an error even when `pos` is 0 (the result is `""` either way).
//! - **Casting functions**: the spec text uses `INT`, `BOOL` and `STRING` without defining them
//!   in §3.5, and the TCK tests them; they follow §3.7's table. `IS_INT(x)` and `IS_BOOL(x)`
//!   (from the reference SDKs) say whether that cast would succeed. There is no `IS_STRING`:
//!   no spec or SDK has one, and every value casts to String.
//! - **`EXISTS`** is `true` for the required attributes (`specversion`, `id`, `source`,
//!   `type`) without asking the event, as §3.4.4 requires of a valid event.
//! - **Nesting** is limited to [`MAX_NESTING`] levels (a _GenericError_ at compile time), so
//!   that compiling and evaluating use bounded stack. Chains of one logical operator
//!   (`a AND b AND …`), `IN` sets and argument lists are flat and do not count against it.

mod ast;
mod compile;
mod constraints;
mod error;
mod eval;
mod functions;
mod lexer;
mod like;
mod parser;
mod value;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

pub use error::{Arity, CompileError, ErrorKind, EvalError, Expected, FunctionFault, MathFault};
pub use value::{Type, Value};

use crate::event::{Attributes, KnownAttr};

/// The deepest nesting of operators, calls and parentheses an expression may have.
pub const MAX_NESTING: usize = 64;

/// A compiled CESQL expression: cheap to clone (shared), `Send + Sync`, and evaluated any
/// number of times without parsing again.
#[derive(Clone)]
pub struct Expression {
    inner: Arc<Compiled>,
}

struct Compiled {
    source: String,
    root: compile::Node,
}

impl Expression {
    /// Parses and compiles `src`.
    ///
    /// # Errors
    ///
    /// A [`CompileError`] naming the column of the first problem: a syntax error, a call of an
    /// unknown function or with an unsupported number of arguments, or nesting beyond
    /// [`MAX_NESTING`].
    pub fn compile(src: &str) -> Result<Expression, CompileError> {
        Self::compile_with(src, true)
    }

    fn compile_with(src: &str, fold: bool) -> Result<Expression, CompileError> {
        let ast = parser::parse(src)?;
        let root = compile::compile(ast, src, fold)?;
        Ok(Expression {
            inner: Arc::new(Compiled {
                source: src.to_owned(),
                root,
            }),
        })
    }

    /// Evaluates the expression against `event`: its value, and the first error raised, if
    /// any (spec §3.3). Strings in the value borrow from the event or the expression.
    pub fn evaluate<'a, A: Attributes + ?Sized>(&'a self, event: &'a A) -> Evaluation<'a> {
        eval::evaluate(&self.inner.root, event)
    }

    /// Whether `event` passes the expression as a filter (spec §1.2): the value is `true` and
    /// no error was raised.
    pub fn matches<A: Attributes + ?Sized>(&self, event: &A) -> bool {
        self.evaluate(event).is_match()
    }

    /// Conditions on context attributes that hold whenever [`Expression::matches`] is true, for
    /// a cheap pre-check; see [`ImpliedConstraint`]. Empty when none can be derived, which is
    /// always safe.
    pub fn implied_constraints(&self) -> Vec<ImpliedConstraint> {
        constraints::implied(&self.inner.root)
    }

    /// The type of every value the expression evaluates to, or `None` when it is a bare
    /// attribute, whose type depends on the event. A filter should be [`Type::Boolean`].
    pub fn static_type(&self) -> Option<Type> {
        self.inner.root.static_type()
    }

    /// The source text the expression was compiled from.
    pub fn source(&self) -> &str {
        &self.inner.source
    }
}

impl fmt::Debug for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expression")
            .field("source", &self.inner.source)
            .field("root", &self.inner.root)
            .finish()
    }
}

/// Displays the source text.
impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.inner.source)
    }
}

impl FromStr for Expression {
    type Err = CompileError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Expression::compile(s)
    }
}

/// The result of evaluating an expression: a value, always, and the first error raised, if
/// any. On error the value is the one the spec defines (usually the zero value of the
/// expression's type: `false`, `0` or `""`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evaluation<'a> {
    /// The expression's value.
    pub value: Value<'a>,
    /// The first error raised while evaluating.
    pub error: Option<EvalError>,
}

impl Evaluation<'_> {
    /// Whether this is a filter match: `true` without error (spec §1.2).
    pub fn is_match(&self) -> bool {
        self.error.is_none() && self.value == Value::Bool(true)
    }

    /// Detaches the result from the event and expression it borrows from.
    pub fn into_owned(self) -> Evaluation<'static> {
        Evaluation {
            value: self.value.into_owned(),
            error: self.error,
        }
    }
}

/// A condition on a context attribute that holds whenever an expression matches, derived from
/// a top-level `AND` conjunct such as `type = 'a'` or `source LIKE '/orders/%'`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ImpliedConstraint {
    /// The attribute, always a String-typed context attribute.
    pub attribute: KnownAttr,
    /// What its value must look like.
    pub kind: ConstraintKind,
}

impl ImpliedConstraint {
    /// Whether `value`, the attribute's value, satisfies the constraint. An event without the
    /// attribute satisfies none.
    pub fn holds(&self, value: &str) -> bool {
        match &self.kind {
            ConstraintKind::Exact(s) => value == s,
            ConstraintKind::Prefix(s) => value.starts_with(s.as_str()),
            ConstraintKind::Suffix(s) => value.ends_with(s.as_str()),
        }
    }
}

/// What an [`ImpliedConstraint`] requires of the attribute's value.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ConstraintKind {
    /// The value equals this string.
    Exact(String),
    /// The value starts with this non-empty string.
    Prefix(String),
    /// The value ends with this non-empty string.
    Suffix(String),
}

#[cfg(test)]
mod tests;
