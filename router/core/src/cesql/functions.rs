//! The built-in functions (spec §3.5) and the casting functions.
//!
//! Function names are resolved to [`Function`] when an expression is compiled; an unknown
//! name or an unsupported number of arguments is a compile error, so evaluation never looks a
//! name up. Positions and lengths count Unicode scalar values (Rust `char`s), not bytes, UTF-16
//! units or grapheme clusters.

use std::borrow::Cow;
use std::ops::Range;

use super::error::{Arity, FunctionFault, MathFault};
use super::value::{Cast, Type, Value, into_str, to_bool, to_int, with_str};

/// A built-in function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum Function {
    Length,
    Concat,
    ConcatWs,
    Lower,
    Upper,
    Trim,
    Left,
    Right,
    Substring,
    Abs,
    Int,
    Bool,
    String,
    IsInt,
    IsBool,
}

impl Function {
    const ALL: [Function; 15] = [
        Function::Length,
        Function::Concat,
        Function::ConcatWs,
        Function::Lower,
        Function::Upper,
        Function::Trim,
        Function::Left,
        Function::Right,
        Function::Substring,
        Function::Abs,
        Function::Int,
        Function::Bool,
        Function::String,
        Function::IsInt,
        Function::IsBool,
    ];

    /// Looks a name up, ignoring ASCII case.
    pub fn from_name(name: &str) -> Option<Function> {
        Self::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
    }

    /// The canonical name.
    pub const fn name(self) -> &'static str {
        match self {
            Function::Length => "LENGTH",
            Function::Concat => "CONCAT",
            Function::ConcatWs => "CONCAT_WS",
            Function::Lower => "LOWER",
            Function::Upper => "UPPER",
            Function::Trim => "TRIM",
            Function::Left => "LEFT",
            Function::Right => "RIGHT",
            Function::Substring => "SUBSTRING",
            Function::Abs => "ABS",
            Function::Int => "INT",
            Function::Bool => "BOOL",
            Function::String => "STRING",
            Function::IsInt => "IS_INT",
            Function::IsBool => "IS_BOOL",
        }
    }

    pub const fn arity(self) -> Arity {
        match self {
            Function::Concat => Arity::AtLeast(0),
            Function::ConcatWs => Arity::AtLeast(1),
            Function::Left | Function::Right => Arity::Exactly(2),
            Function::Substring => Arity::Either(2, 3),
            _ => Arity::Exactly(1),
        }
    }

    /// The type argument `index` is implicitly cast to; `None` for the casting functions, which
    /// take any type.
    pub const fn parameter(self, index: usize) -> Option<Type> {
        match self {
            Function::Int
            | Function::Bool
            | Function::String
            | Function::IsInt
            | Function::IsBool => None,
            Function::Abs => Some(Type::Integer),
            Function::Left | Function::Right | Function::Substring if index > 0 => {
                Some(Type::Integer)
            }
            _ => Some(Type::String),
        }
    }

    pub const fn return_type(self) -> Type {
        match self {
            Function::Length | Function::Abs | Function::Int => Type::Integer,
            Function::Bool | Function::IsInt | Function::IsBool => Type::Boolean,
            _ => Type::String,
        }
    }
}

/// The outcome of a function whose arguments were already cast to its parameter types: the
/// return value, and the fault if the arguments were outside the function's domain.
pub(super) type Outcome<'a> = (Value<'a>, Option<Fault>);

/// What went wrong inside a function.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fault {
    Math(MathFault),
    Function(FunctionFault),
    /// A casting function could not cast its argument.
    Cast {
        from: Type,
        to: Type,
    },
}

/// Applies a fixed-arity function. `args` holds as many values as the function's arity allows,
/// already cast to [`Function::parameter`] types; the variadic `CONCAT` and `CONCAT_WS` are
/// evaluated by the caller with [`concat()`].
pub(super) fn apply<'a>(function: Function, args: &mut [Value<'a>]) -> Outcome<'a> {
    let int = |v: &Value<'_>| v.as_int().unwrap_or(0);
    match (function, args) {
        (Function::Length, [x]) => {
            let n = with_str(x, |s| s.chars().count());
            (Value::Int(i32::try_from(n).unwrap_or(i32::MAX)), None)
        }
        (Function::Lower, [x]) => (Value::Str(lower(take_str(x))), None),
        (Function::Upper, [x]) => (Value::Str(upper(take_str(x))), None),
        (Function::Trim, [x]) => {
            let s = take_str(x);
            let start = s.len() - s.trim_start().len();
            let end = s.trim_end().len().max(start);
            (Value::Str(slice(s, start..end)), None)
        }
        (Function::Left, [x, n]) => {
            let (s, n) = (take_str(x), int(n));
            match usize::try_from(n) {
                Ok(n) => {
                    let end = byte_offset(&s, n);
                    (Value::Str(slice(s, 0..end)), None)
                }
                Err(_) => (
                    Value::Str(s),
                    Some(Fault::Function(FunctionFault::NegativeCount)),
                ),
            }
        }
        (Function::Right, [x, n]) => {
            let (s, n) = (take_str(x), int(n));
            match usize::try_from(n) {
                Ok(n) => {
                    let start = byte_offset_from_end(&s, n);
                    let len = s.len();
                    (Value::Str(slice(s, start..len)), None)
                }
                Err(_) => (
                    Value::Str(s),
                    Some(Fault::Function(FunctionFault::NegativeCount)),
                ),
            }
        }
        (Function::Substring, [x, pos]) => substring(take_str(x), int(pos), None),
        (Function::Substring, [x, pos, len]) => substring(take_str(x), int(pos), Some(int(len))),
        (Function::Abs, [x]) => match int(x).checked_abs() {
            Some(a) => (Value::Int(a), None),
            // Spec §3.5.2: ABS(-2147483648) is 2147483647 and a MathError.
            None => (Value::Int(i32::MAX), Some(Fault::Math(MathFault::Overflow))),
        },
        (Function::Int, [x]) => match to_int(x) {
            Ok(i) => (Value::Int(i), None),
            Err(from) => cast_fault(from, Type::Integer),
        },
        (Function::Bool, [x]) => match to_bool(x, Cast::Explicit) {
            Ok(b) => (Value::Bool(b), None),
            Err(from) => cast_fault(from, Type::Boolean),
        },
        (Function::String, [x]) => (Value::Str(take_str(x)), None),
        (Function::IsInt, [x]) => (Value::Bool(to_int(x).is_ok()), None),
        (Function::IsBool, [x]) => (Value::Bool(to_bool(x, Cast::Explicit).is_ok()), None),
        // Arity is checked at compile time; this arm is unreachable for compiled expressions.
        (f, _) => (f.return_type().zero(), None),
    }
}

fn cast_fault<'a>(from: Type, to: Type) -> Outcome<'a> {
    (to.zero(), Some(Fault::Cast { from, to }))
}

/// `CONCAT(x1, …)` and, with a delimiter, `CONCAT_WS(delimiter, x1, …)`, over arguments the
/// caller produces one by one (so they need not be collected first). Borrows when there is at
/// most one part; allocates otherwise.
pub(super) fn concat<'a, E>(
    delimiter: Option<&str>,
    mut parts: impl Iterator<Item = Result<Value<'a>, E>>,
) -> Result<Cow<'a, str>, E> {
    let Some(first) = parts.next() else {
        return Ok(Cow::Borrowed(""));
    };
    let first = into_str(first?);
    let Some(second) = parts.next() else {
        return Ok(first);
    };
    let mut out = first.into_owned();
    for part in std::iter::once(second).chain(parts) {
        if let Some(d) = delimiter {
            out.push_str(d);
        }
        with_str(&part?, |s| out.push_str(s));
    }
    Ok(Cow::Owned(out))
}

/// `SUBSTRING(x, pos)` and `SUBSTRING(x, pos, len)` (spec §3.5.1).
fn substring(s: Cow<'_, str>, pos: i32, len: Option<i32>) -> Outcome<'_> {
    let empty = || Value::Str(Cow::Borrowed(""));
    // A negative length is an error whatever the position (the spec lists both conditions
    // without an order; the result is "" either way).
    let len = match len.map(usize::try_from) {
        Some(Err(_)) => {
            return (
                empty(),
                Some(Fault::Function(FunctionFault::NegativeLength)),
            );
        }
        Some(Ok(len)) => Some(len),
        None => None,
    };
    if pos == 0 {
        return (empty(), None);
    }
    let chars = s.chars().count();
    let magnitude = usize::try_from(pos.unsigned_abs()).unwrap_or(usize::MAX);
    if magnitude > chars {
        return (
            empty(),
            Some(Fault::Function(FunctionFault::PositionOutOfRange)),
        );
    }
    // Index of the first character, 0-based: `pos` counts from 1 at the start, or from -1 at
    // the end.
    let first = if pos > 0 {
        magnitude - 1
    } else {
        chars - magnitude
    };
    let start = byte_offset(&s, first);
    let end = match len {
        Some(len) => start + byte_offset(&s[start..], len),
        None => s.len(),
    };
    (Value::Str(slice(s, start..end)), None)
}

/// Takes the argument out of `v`, cast to a String: the evaluator casts String parameters
/// lazily, here, so that functions such as `LENGTH` need not build a string.
fn take_str<'a>(v: &mut Value<'a>) -> Cow<'a, str> {
    match std::mem::replace(v, Value::Bool(false)) {
        Value::Str(s) => s,
        other => into_str(other),
    }
}

/// Byte offset of character `n` of `s`, or `s.len()` if it has no more than `n` characters.
fn byte_offset(s: &str, n: usize) -> usize {
    s.char_indices().nth(n).map_or(s.len(), |(i, _)| i)
}

/// Byte offset where the last `n` characters of `s` start, or 0 if it has no more than `n`.
fn byte_offset_from_end(s: &str, n: usize) -> usize {
    if n == 0 {
        return s.len();
    }
    s.char_indices().rev().nth(n - 1).map_or(0, |(i, _)| i)
}

/// `s[range]`, borrowing when `s` does and reusing the buffer when it owns one.
fn slice(s: Cow<'_, str>, range: Range<usize>) -> Cow<'_, str> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(&b[range]),
        Cow::Owned(mut o) => {
            o.truncate(range.end);
            o.replace_range(..range.start, "");
            Cow::Owned(o)
        }
    }
}

/// Unicode lower case (`str::to_lowercase`), borrowing when nothing changes.
fn lower(s: Cow<'_, str>) -> Cow<'_, str> {
    // Only a character whose own mapping is not itself can change under `to_lowercase`; the
    // context-dependent final sigma applies to `Σ`, whose mapping already differs.
    if s.chars().all(|c| single(c.to_lowercase()) == Some(c)) {
        s
    } else {
        Cow::Owned(s.to_lowercase())
    }
}

/// Unicode upper case (`str::to_uppercase`), borrowing when nothing changes.
fn upper(s: Cow<'_, str>) -> Cow<'_, str> {
    if s.chars().all(|c| single(c.to_uppercase()) == Some(c)) {
        s
    } else {
        Cow::Owned(s.to_uppercase())
    }
}

fn single(mut chars: impl Iterator<Item = char>) -> Option<char> {
    let c = chars.next()?;
    chars.next().is_none().then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Value<'_> {
        Value::Str(Cow::Borrowed(v))
    }

    fn call(f: Function, args: &[Value<'static>]) -> Outcome<'static> {
        let mut args = args.to_vec();
        apply(f, &mut args)
    }

    fn ok(v: Value<'static>) -> Outcome<'static> {
        (v, None)
    }

    const FE_COUNT: Option<Fault> = Some(Fault::Function(FunctionFault::NegativeCount));
    const FE_POS: Option<Fault> = Some(Fault::Function(FunctionFault::PositionOutOfRange));
    const FE_LEN: Option<Fault> = Some(Fault::Function(FunctionFault::NegativeLength));

    #[test]
    fn names_resolve_case_insensitively() {
        for f in Function::ALL {
            assert_eq!(Function::from_name(f.name()), Some(f));
            assert_eq!(Function::from_name(&f.name().to_lowercase()), Some(f));
        }
        assert_eq!(Function::from_name("concat_Ws"), Some(Function::ConcatWs));
        assert_eq!(Function::from_name("ABC"), None);
        assert_eq!(Function::from_name("IS_STRING"), None);
    }

    #[test]
    fn arities() {
        assert!(Function::Concat.arity().accepts(0));
        assert!(!Function::ConcatWs.arity().accepts(0));
        assert!(Function::ConcatWs.arity().accepts(1));
        assert!(Function::Substring.arity().accepts(2));
        assert!(Function::Substring.arity().accepts(3));
        assert!(!Function::Substring.arity().accepts(4));
        assert!(!Function::Left.arity().accepts(1));
    }

    #[test]
    fn length_counts_characters() {
        assert_eq!(call(Function::Length, &[s("abc")]), ok(Value::Int(3)));
        assert_eq!(call(Function::Length, &[s("")]), ok(Value::Int(0)));
        assert_eq!(call(Function::Length, &[s("héllo")]), ok(Value::Int(5)));
        assert_eq!(call(Function::Length, &[s("😀")]), ok(Value::Int(1)));
    }

    #[test]
    fn case_mapping() {
        assert_eq!(call(Function::Lower, &[s("AbC")]), ok(s("abc")));
        assert_eq!(call(Function::Upper, &[s("AbC")]), ok(s("ABC")));
        assert_eq!(call(Function::Lower, &[s("ÀÉ")]), ok(s("àé")));
        assert_eq!(call(Function::Upper, &[s("straße")]), ok(s("STRASSE")));
        assert_eq!(call(Function::Lower, &[s("ΟΔΟΣ")]), ok(s("οδος")));
        // ǅ (title case) is neither upper nor lower case but changes under both.
        assert_eq!(call(Function::Lower, &[s("ǅ")]), ok(s("ǆ")));
        assert_eq!(call(Function::Upper, &[s("ǅ")]), ok(s("Ǆ")));
        // Unchanged strings are borrowed.
        let (v, _) = call(Function::Lower, &[s("abc-1")]);
        assert!(matches!(v, Value::Str(Cow::Borrowed("abc-1"))));
    }

    #[test]
    fn trim_removes_unicode_whitespace_only() {
        assert_eq!(call(Function::Trim, &[s("   a b c   ")]), ok(s("a b c")));
        assert_eq!(
            call(Function::Trim, &[s("\u{3000}\t x \n\u{85}")]),
            ok(s("x"))
        );
        assert_eq!(call(Function::Trim, &[s("\u{1} x")]), ok(s("\u{1} x")));
        assert_eq!(call(Function::Trim, &[s("   ")]), ok(s("")));
    }

    #[test]
    fn left_and_right() {
        assert_eq!(
            call(Function::Left, &[s("abc"), Value::Int(2)]),
            ok(s("ab"))
        );
        assert_eq!(
            call(Function::Left, &[s("abc"), Value::Int(10)]),
            ok(s("abc"))
        );
        assert_eq!(call(Function::Left, &[s(""), Value::Int(0)]), ok(s("")));
        assert_eq!(
            call(Function::Left, &[s("héllo"), Value::Int(2)]),
            ok(s("hé"))
        );
        assert_eq!(
            call(Function::Left, &[s("abc"), Value::Int(-2)]),
            (s("abc"), FE_COUNT)
        );
        assert_eq!(
            call(Function::Right, &[s("abc"), Value::Int(2)]),
            ok(s("bc"))
        );
        assert_eq!(call(Function::Right, &[s("abc"), Value::Int(0)]), ok(s("")));
        assert_eq!(
            call(Function::Right, &[s("abc"), Value::Int(10)]),
            ok(s("abc"))
        );
        assert_eq!(
            call(Function::Right, &[s("héllo"), Value::Int(4)]),
            ok(s("éllo"))
        );
        assert_eq!(
            call(Function::Right, &[s("abc"), Value::Int(i32::MIN)]),
            (s("abc"), FE_COUNT)
        );
    }

    #[test]
    fn substring() {
        let sub2 = |x: &'static str, p| call(Function::Substring, &[s(x), Value::Int(p)]);
        let sub3 = |x: &'static str, p, l| {
            call(Function::Substring, &[s(x), Value::Int(p), Value::Int(l)])
        };
        assert_eq!(sub2("abcdef", 1), ok(s("abcdef")));
        assert_eq!(sub2("abcdef", 2), ok(s("bcdef")));
        assert_eq!(sub2("abcdef", 6), ok(s("f")));
        assert_eq!(sub2("abcdef", 7), (s(""), FE_POS));
        assert_eq!(sub2("Sakila", -3), ok(s("ila")));
        assert_eq!(sub2("Sakila", -6), ok(s("Sakila")));
        assert_eq!(sub2("Sakila", -7), (s(""), FE_POS));
        assert_eq!(sub2("abc", 0), ok(s("")));
        assert_eq!(sub2("", 0), ok(s("")));
        assert_eq!(sub2("", 1), (s(""), FE_POS));
        assert_eq!(sub2("abc", i32::MIN), (s(""), FE_POS));
        assert_eq!(sub2("héllo", 2), ok(s("éllo")));
        assert_eq!(sub3("abcdef", 2, 4), ok(s("bcde")));
        assert_eq!(sub3("abcdef", 1, 6), ok(s("abcdef")));
        assert_eq!(sub3("abcdef", 4, 100), ok(s("def")));
        assert_eq!(sub3("abcdef", 4, i32::MAX), ok(s("def")));
        assert_eq!(sub3("Sakila", -5, 3), ok(s("aki")));
        assert_eq!(sub3("abcdef", 2, 0), ok(s("")));
        assert_eq!(sub3("Quadratically", 0, 1), ok(s("")));
        assert_eq!(sub3("abcdef", 10, 10), (s(""), FE_POS));
        assert_eq!(sub3("abcdef", 2, -1), (s(""), FE_LEN));
        assert_eq!(sub3("abcdef", 0, -1), (s(""), FE_LEN));
    }

    #[test]
    fn abs() {
        assert_eq!(call(Function::Abs, &[Value::Int(-10)]), ok(Value::Int(10)));
        assert_eq!(call(Function::Abs, &[Value::Int(0)]), ok(Value::Int(0)));
        assert_eq!(
            call(Function::Abs, &[Value::Int(i32::MIN)]),
            (Value::Int(i32::MAX), Some(Fault::Math(MathFault::Overflow)))
        );
    }

    #[test]
    fn casting_functions() {
        let cast = |from, to| Some(Fault::Cast { from, to });
        assert_eq!(call(Function::Int, &[s("-1")]), ok(Value::Int(-1)));
        assert_eq!(call(Function::Int, &[Value::Bool(true)]), ok(Value::Int(1)));
        assert_eq!(
            call(Function::Int, &[s("ABC")]),
            (Value::Int(0), cast(Type::String, Type::Integer))
        );
        assert_eq!(
            call(Function::Bool, &[Value::Int(-50)]),
            ok(Value::Bool(true))
        );
        assert_eq!(call(Function::Bool, &[s("FALSE")]), ok(Value::Bool(false)));
        assert_eq!(
            call(Function::Bool, &[s("ABC")]),
            (Value::Bool(false), cast(Type::String, Type::Boolean))
        );
        assert_eq!(call(Function::String, &[Value::Int(-1)]), ok(s("-1")));
        assert_eq!(
            call(Function::String, &[Value::Bool(false)]),
            ok(s("false"))
        );
        assert_eq!(call(Function::IsInt, &[s("+12")]), ok(Value::Bool(true)));
        assert_eq!(call(Function::IsInt, &[s("1.5")]), ok(Value::Bool(false)));
        assert_eq!(
            call(Function::IsInt, &[Value::Bool(true)]),
            ok(Value::Bool(true))
        );
        assert_eq!(call(Function::IsBool, &[s("tRUE")]), ok(Value::Bool(true)));
        assert_eq!(call(Function::IsBool, &[s("yes")]), ok(Value::Bool(false)));
        assert_eq!(
            call(Function::IsBool, &[Value::Int(3)]),
            ok(Value::Bool(true))
        );
    }

    #[test]
    fn concatenation() {
        let parts = |vs: Vec<Value<'static>>| vs.into_iter().map(Ok::<_, ()>);
        assert_eq!(concat(None, parts(vec![])), Ok(Cow::Borrowed("")));
        assert_eq!(concat(None, parts(vec![s("a")])), Ok(Cow::Borrowed("a")));
        assert_eq!(
            concat(None, parts(vec![s("a"), Value::Int(1), Value::Bool(true)])),
            Ok(Cow::Owned("a1true".to_owned()))
        );
        assert_eq!(
            concat(Some(", "), parts(vec![s("a"), s("b"), s("c")])),
            Ok(Cow::Owned("a, b, c".to_owned()))
        );
        assert_eq!(
            concat(Some(","), parts(vec![s("a")])),
            Ok(Cow::Borrowed("a"))
        );
        // The first error stops the concatenation.
        let failing = vec![Ok(s("a")), Err(7), Ok(s("b"))].into_iter();
        assert_eq!(concat(None, failing), Err(7));
    }

    #[test]
    fn owned_slices_reuse_their_buffer() {
        let owned = Cow::Owned("  héllo  ".to_owned());
        assert_eq!(slice(owned, 2..8), "héllo");
        assert_eq!(byte_offset_from_end("héllo", 4), 1);
        assert_eq!(byte_offset_from_end("héllo", 9), 0);
    }
}
