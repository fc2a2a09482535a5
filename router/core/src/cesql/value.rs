//! CESQL values and types (spec §3.1) and the casts between them (spec §3.7).
//!
//! The casts here are pure: they return the cast value or the source type on failure. The
//! evaluator turns a failure into an [`EvalError::Cast`](super::EvalError::Cast) with the
//! target type's zero value.

use std::borrow::Cow;
use std::fmt;

use crate::event::AttrValue;

/// The primitive types of CESQL (spec §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Type {
    /// `true` or `false`; zero value `false`.
    Boolean,
    /// A signed 32-bit integer; zero value `0`.
    Integer,
    /// A sequence of Unicode characters; zero value `""`. URIs and timestamps are strings.
    String,
}

impl Type {
    /// The type's zero value (spec §3.1), returned alongside an error.
    pub const fn zero(self) -> Value<'static> {
        match self {
            Type::Boolean => Value::Bool(false),
            Type::Integer => Value::Int(0),
            Type::String => Value::Str(Cow::Borrowed("")),
        }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Type::Boolean => "Boolean",
            Type::Integer => "Integer",
            Type::String => "String",
        })
    }
}

/// A CESQL value. Strings borrow from the event or the compiled expression where they can; only
/// functions that build a new string (`CONCAT`, `LOWER` of a string with upper-case letters,
/// `STRING` of an integer, …) own theirs.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Value<'a> {
    /// A Boolean.
    Bool(bool),
    /// An Integer.
    Int(i32),
    /// A String.
    Str(Cow<'a, str>),
}

impl<'a> Value<'a> {
    /// The value's type.
    pub const fn value_type(&self) -> Type {
        match self {
            Value::Bool(_) => Type::Boolean,
            Value::Int(_) => Type::Integer,
            Value::Str(_) => Type::String,
        }
    }

    /// The Boolean, if this is one.
    pub const fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The Integer, if this is one.
    pub const fn as_int(&self) -> Option<i32> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The String, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Detaches the value from the event and expression it borrows from.
    pub fn into_owned(self) -> Value<'static> {
        match self {
            Value::Bool(b) => Value::Bool(b),
            Value::Int(i) => Value::Int(i),
            Value::Str(s) => Value::Str(Cow::Owned(s.into_owned())),
        }
    }

    /// A copy that borrows from `self` instead of owning anything (cheap: no allocation).
    pub(super) fn borrowed(&self) -> Value<'_> {
        match self {
            Value::Bool(b) => Value::Bool(*b),
            Value::Int(i) => Value::Int(*i),
            Value::Str(s) => Value::Str(Cow::Borrowed(s)),
        }
    }
}

impl<'a> From<AttrValue<'a>> for Value<'a> {
    fn from(v: AttrValue<'a>) -> Self {
        match v {
            AttrValue::Str(s) => Value::Str(Cow::Borrowed(s)),
            AttrValue::Int(i) => Value::Int(i),
            AttrValue::Bool(b) => Value::Bool(b),
        }
    }
}

/// Canonical form: strings as they are, Booleans as `true`/`false`, Integers in base 10.
impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Str(s) => f.write_str(s),
        }
    }
}

/// String → Integer (spec §3.7): base 10, optional leading `+` or `-`, nothing else (no
/// whitespace). Boolean → Integer is 1 or 0.
pub(super) fn to_int(v: &Value<'_>) -> Result<i32, Type> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::Bool(b) => Ok(i32::from(*b)),
        // `i32::from_str` accepts exactly the spec's syntax: `[+-]?[0-9]+`, range-checked.
        Value::Str(s) => s.parse().map_err(|_| Type::String),
    }
}

/// Whether an Integer may be cast to a Boolean: explicitly (`BOOL(x)`, `IS_BOOL(x)`), as spec
/// §3.7's table says, or implicitly by an operator, which the TCK forbids (`NOT 10` is a
/// _CastError_; see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cast {
    /// `BOOL(x)`: every cast in the spec's table.
    Explicit,
    /// An operator's operand: Integer → Boolean fails.
    Implicit,
}

/// String → Boolean (spec §3.7): `true`/`false` in any case. Integer → Boolean is `x != 0`, but
/// only for an [`Cast::Explicit`] cast.
pub(super) fn to_bool(v: &Value<'_>, cast: Cast) -> Result<bool, Type> {
    match v {
        Value::Bool(b) => Ok(*b),
        Value::Int(i) => match cast {
            Cast::Explicit => Ok(*i != 0),
            Cast::Implicit => Err(Type::Integer),
        },
        Value::Str(s) => parse_bool(s).ok_or(Type::String),
    }
}

/// The spec says "the lower case representation of the string is exactly `true` or `false`".
/// No non-ASCII character lower-cases to an ASCII letter of those words (the only non-ASCII
/// characters that lower-case to ASCII are U+0130 → `i̇` and U+212A KELVIN SIGN → `k`), so an
/// ASCII case-insensitive comparison is exact and allocation-free.
fn parse_bool(s: &str) -> Option<bool> {
    if s.eq_ignore_ascii_case("true") {
        Some(true)
    } else if s.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// Calls `f` with the value cast to a String (spec §3.7), without allocating.
pub(super) fn with_str<R>(v: &Value<'_>, f: impl FnOnce(&str) -> R) -> R {
    match v {
        Value::Str(s) => f(s),
        Value::Bool(b) => f(bool_str(*b)),
        Value::Int(i) => f(itoa::Buffer::new().format(*i)),
    }
}

/// The value cast to a String (spec §3.7). Allocates only for an Integer.
pub(super) fn into_str(v: Value<'_>) -> Cow<'_, str> {
    match v {
        Value::Str(s) => s,
        Value::Bool(b) => Cow::Borrowed(bool_str(b)),
        Value::Int(i) => Cow::Owned(itoa::Buffer::new().format(i).to_owned()),
    }
}

const fn bool_str(b: bool) -> &'static str {
    if b { "true" } else { "false" }
}

/// The implicit cast of `value` to `target`, or the source type when it fails.
pub(super) fn cast(value: Value<'_>, target: Type, cast: Cast) -> Result<Value<'_>, Type> {
    Ok(match target {
        Type::Boolean => Value::Bool(to_bool(&value, cast)?),
        Type::Integer => Value::Int(to_int(&value)?),
        Type::String => Value::Str(into_str(value)),
    })
}

/// `x = y` where `x` is cast to the type of `y` (spec §3.7, the ambiguous binary operator rule:
/// `=` has exactly one definition per right-hand type). Returns the comparison's result and, if
/// the cast failed, the source type; a failed cast compares as the target's zero value.
/// Allocation-free.
pub(super) fn equal_as_right(x: &Value<'_>, y: &Value<'_>) -> (bool, Option<Type>) {
    match y {
        Value::Str(y) => (with_str(x, |x| x == y), None),
        Value::Int(y) => match to_int(x) {
            Ok(x) => (x == *y, None),
            Err(from) => (*y == 0, Some(from)),
        },
        Value::Bool(y) => match to_bool(x, Cast::Implicit) {
            Ok(x) => (x == *y, None),
            Err(from) => (!*y, Some(from)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value<'_> {
        Value::Str(Cow::Borrowed(v))
    }

    #[test]
    fn string_to_integer() {
        assert_eq!(to_int(&s("42")), Ok(42));
        assert_eq!(to_int(&s("+42")), Ok(42));
        assert_eq!(to_int(&s("-42")), Ok(-42));
        assert_eq!(to_int(&s("007")), Ok(7));
        assert_eq!(to_int(&s("2147483647")), Ok(i32::MAX));
        assert_eq!(to_int(&s("-2147483648")), Ok(i32::MIN));
        for bad in [
            "2147483648",
            "",
            " 1",
            "1 ",
            "1.0",
            "0x10",
            "+",
            "-",
            "--1",
            "abc",
        ] {
            assert_eq!(to_int(&s(bad)), Err(Type::String), "{bad:?}");
        }
    }

    #[test]
    fn boolean_to_integer_and_back() {
        assert_eq!(to_int(&Value::Bool(true)), Ok(1));
        assert_eq!(to_int(&Value::Bool(false)), Ok(0));
        assert_eq!(to_bool(&Value::Int(0), Cast::Explicit), Ok(false));
        assert_eq!(to_bool(&Value::Int(-50), Cast::Explicit), Ok(true));
        assert_eq!(to_bool(&Value::Int(1), Cast::Implicit), Err(Type::Integer));
    }

    #[test]
    fn string_to_boolean() {
        for (text, b) in [
            ("true", true),
            ("TRUE", true),
            ("tRuE", true),
            ("false", false),
        ] {
            assert_eq!(to_bool(&s(text), Cast::Implicit), Ok(b));
        }
        for bad in ["", "t", "yes", "1", " true", "truee", "\u{212A}"] {
            assert_eq!(
                to_bool(&s(bad), Cast::Explicit),
                Err(Type::String),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn to_string() {
        assert_eq!(into_str(Value::Int(-7)), "-7");
        assert_eq!(into_str(Value::Int(i32::MIN)), "-2147483648");
        assert_eq!(into_str(Value::Bool(true)), "true");
        assert!(matches!(
            into_str(Value::Bool(false)),
            Cow::Borrowed("false")
        ));
        assert!(matches!(into_str(s("x")), Cow::Borrowed("x")));
    }

    #[test]
    fn equality_casts_left_to_right_type() {
        assert_eq!(
            equal_as_right(&Value::Bool(true), &s("TRUE")),
            (false, None)
        );
        assert_eq!(equal_as_right(&s("TRUE"), &Value::Bool(true)), (true, None));
        assert_eq!(equal_as_right(&Value::Int(5), &s("5")), (true, None));
        assert_eq!(equal_as_right(&s("05"), &Value::Int(5)), (true, None));
        assert_eq!(
            equal_as_right(&Value::Bool(true), &Value::Int(1)),
            (true, None)
        );
        assert_eq!(
            equal_as_right(&s("abc"), &Value::Int(0)),
            (true, Some(Type::String))
        );
        assert_eq!(
            equal_as_right(&Value::Int(1), &Value::Bool(true)),
            (false, Some(Type::Integer))
        );
    }

    #[test]
    fn zero_values() {
        assert_eq!(Type::Boolean.zero(), Value::Bool(false));
        assert_eq!(Type::Integer.zero(), Value::Int(0));
        assert_eq!(Type::String.zero(), s(""));
    }
}
