//! Tests across the modules: evaluation semantics end to end, constant folding, implied
//! constraints, and properties over generated expressions and events.

use std::borrow::Cow;
use std::collections::BTreeMap;

use proptest::prelude::*;

use super::compile::Node;
use super::*;
use crate::event::AttrValue;

/// An event as a map; known attributes are set like any other.
#[derive(Clone, Debug, Default)]
struct Event(BTreeMap<String, Attr>);

#[derive(Clone, Debug)]
enum Attr {
    Str(String),
    Int(i32),
    Bool(bool),
}

impl Attributes for Event {
    fn attribute(&self, name: &str) -> Option<AttrValue<'_>> {
        self.0.get(name).map(|v| match v {
            Attr::Str(s) => AttrValue::Str(s),
            Attr::Int(i) => AttrValue::Int(*i),
            Attr::Bool(b) => AttrValue::Bool(*b),
        })
    }
}

impl Event {
    fn with(mut self, name: &str, value: Attr) -> Event {
        self.0.insert(name.to_owned(), value);
        self
    }

    fn str(self, name: &str, value: &str) -> Event {
        self.with(name, Attr::Str(value.to_owned()))
    }
}

/// A valid event with a few extensions.
fn event() -> Event {
    Event::default()
        .str("specversion", "1.0")
        .str("id", "A234-1234-1234")
        .str("source", "/orders/eu/42")
        .str("type", "com.example.order.created")
        .str("subject", "order-42")
        .with("myint", Attr::Int(7))
        .with("mybool", Attr::Bool(true))
        .str("mystr", "  Hello Wörld  ")
        .str("num", "15")
}

fn eval(src: &str) -> Evaluation<'static> {
    let expression = Expression::compile(src).unwrap_or_else(|e| panic!("{src:?}: {e}"));
    expression.evaluate(&event()).into_owned()
}

fn value(src: &str) -> Value<'static> {
    let evaluation = eval(src);
    assert_eq!(evaluation.error, None, "{src:?}");
    evaluation.value
}

/// The value and the kind of the error, which must be present.
fn failure(src: &str) -> (Value<'static>, ErrorKind) {
    let evaluation = eval(src);
    let error = evaluation
        .error
        .unwrap_or_else(|| panic!("{src:?} evaluates without error"));
    (evaluation.value, error.kind())
}

fn s(v: &str) -> Value<'static> {
    Value::Str(Cow::Owned(v.to_owned()))
}

const T: Value<'static> = Value::Bool(true);
const F: Value<'static> = Value::Bool(false);

#[test]
fn attributes_keep_their_types() {
    assert_eq!(value("myint"), Value::Int(7));
    assert_eq!(value("mybool"), T);
    assert_eq!(value("SOURCE"), s("/orders/eu/42"));
    assert_eq!(value("myint + 1"), Value::Int(8));
    assert_eq!(value("num + 1"), Value::Int(16));
    assert_eq!(value("num > myint"), T);
    // `=` casts its left operand to the type of its right one.
    assert_eq!(value("myint = '7'"), T);
    assert_eq!(value("'7' = myint"), T);
    assert_eq!(value("'07' = myint"), T);
    assert_eq!(value("myint = '07'"), F);
    assert_eq!(value("mybool = 'TRUE'"), F);
    assert_eq!(value("'TRUE' = mybool"), T);
    assert_eq!(value("mybool = 1"), T);
}

#[test]
fn strings_borrow_from_the_event() {
    let event = event();
    let expression = Expression::compile("source").expect("compiles");
    let evaluation = expression.evaluate(&event);
    assert!(matches!(evaluation.value, Value::Str(Cow::Borrowed(_))));
    let expression = Expression::compile("SUBSTRING(TRIM(mystr), 7)").expect("compiles");
    assert!(matches!(
        expression.evaluate(&event).value,
        Value::Str(Cow::Borrowed("Wörld"))
    ));
}

#[test]
fn missing_attributes_poison_the_enclosing_operators() {
    assert_eq!(failure("missing"), (F, ErrorKind::MissingAttribute));
    assert_eq!(
        failure("missing + 1"),
        (Value::Int(0), ErrorKind::MissingAttribute)
    );
    assert_eq!(
        failure("missing / 0"),
        (Value::Int(0), ErrorKind::MissingAttribute)
    );
    assert_eq!(failure("NOT missing"), (F, ErrorKind::MissingAttribute));
    // The operand raised the error, so NOT returns its zero value, not `NOT false`.
    assert_eq!(
        failure("NOT (missing = 1)"),
        (F, ErrorKind::MissingAttribute)
    );
    assert_eq!(
        failure("missing NOT LIKE 'x'"),
        (F, ErrorKind::MissingAttribute)
    );
    assert_eq!(
        failure("missing NOT IN (1)"),
        (F, ErrorKind::MissingAttribute)
    );
    assert_eq!(
        failure("UPPER(missing)"),
        (s(""), ErrorKind::MissingAttribute)
    );
    assert_eq!(
        failure("LENGTH(missing)"),
        (Value::Int(0), ErrorKind::MissingAttribute)
    );
    assert_eq!(
        failure("CONCAT('a', missing)"),
        (s(""), ErrorKind::MissingAttribute)
    );
    assert_eq!(
        failure("CONCAT_WS(missing, 'a')"),
        (s(""), ErrorKind::MissingAttribute)
    );
    // Short-circuiting skips the missing attribute altogether.
    assert_eq!(value("TRUE OR missing = 1"), T);
    assert_eq!(value("FALSE AND missing = 1"), F);
    assert_eq!(
        failure("FALSE OR missing = 1"),
        (F, ErrorKind::MissingAttribute)
    );
    // EXISTS never raises.
    assert_eq!(value("EXISTS missing"), F);
    assert_eq!(value("EXISTS myint AND EXISTS subject"), T);
}

#[test]
fn failed_implicit_casts_yield_zero_values_and_the_operator_goes_on() {
    // The TCK's `NOT 10`: Integer → Boolean is refused implicitly, so NOT sees `false`.
    assert_eq!(failure("NOT 10"), (T, ErrorKind::Cast));
    assert_eq!(value("BOOL(10)"), T);
    assert_eq!(failure("'abc' + 1"), (Value::Int(1), ErrorKind::Cast));
    assert_eq!(failure("-'abc'"), (Value::Int(0), ErrorKind::Cast));
    assert_eq!(failure("'abc' = 0"), (T, ErrorKind::Cast));
    assert_eq!(failure("1 = TRUE"), (F, ErrorKind::Cast));
    assert_eq!(failure("'x' AND TRUE"), (F, ErrorKind::Cast));
    assert_eq!(failure("'x' OR TRUE"), (T, ErrorKind::Cast));
    assert_eq!(failure("1 XOR TRUE"), (T, ErrorKind::Cast));
    assert_eq!(failure("LEFT('abc', 'x')"), (s(""), ErrorKind::Cast));
    assert_eq!(failure("ABS('x')"), (Value::Int(0), ErrorKind::Cast));
    // Once a level of a chain has an error, the next level is poisoned.
    assert_eq!(failure("'x' OR TRUE OR TRUE"), (F, ErrorKind::Cast));
    assert_eq!(failure("FALSE XOR 'x' XOR TRUE"), (F, ErrorKind::Cast));
    // The first error is the one reported.
    let evaluation = eval("'a' + 'b'");
    assert_eq!(
        evaluation.error,
        Some(EvalError::Cast {
            from: Type::String,
            to: Type::Integer,
            column: 5
        })
    );
}

#[test]
fn errors_carry_columns() {
    assert_eq!(
        eval("1 + missing").error,
        Some(EvalError::MissingAttribute {
            name: "missing".into(),
            column: 5
        })
    );
    assert_eq!(
        eval("1 + 10 / 0").error,
        Some(EvalError::Math {
            fault: MathFault::DivisionByZero,
            column: 8
        })
    );
    assert_eq!(
        eval("x = x OR SUBSTRING('abc', 5) = ''").error,
        Some(EvalError::MissingAttribute {
            name: "x".into(),
            column: 1
        })
    );
    assert_eq!(
        eval("subject = '' OR SUBSTRING('abc', 5) = ''").error,
        Some(EvalError::Function {
            function: "SUBSTRING",
            fault: FunctionFault::PositionOutOfRange,
            column: 17
        })
    );
    let message = eval("1 + 10 / 0").error.map(|e| e.to_string());
    assert_eq!(message.as_deref(), Some("division by zero (column 8)"));
}

#[test]
fn long_flat_expressions_compile_and_evaluate() {
    let src = vec!["type = 'com.example.order.created'"; 20_000].join(" AND ");
    let expression = Expression::compile(&src).expect("compiles");
    assert!(expression.matches(&event()));
    assert_eq!(expression.implied_constraints().len(), 20_000);
    let set: Vec<String> = (0..20_000).map(|i| format!("'{i}'")).collect();
    let expression = Expression::compile(&format!("myint IN ({})", set.join(", ")));
    assert!(expression.expect("compiles").matches(&event()));
    let src = format!("'é' = 'e' OR {}", vec!["x = 1"; 20_000].join(" OR "));
    let error = Expression::compile(&src)
        .expect("compiles")
        .evaluate(&event())
        .error;
    assert_eq!(
        error,
        Some(EvalError::MissingAttribute {
            name: "x".into(),
            column: 14
        })
    );
}

#[test]
fn the_deepest_expressions_fit_in_a_small_stack() {
    let depth = MAX_NESTING - 1;
    let deepest = [
        format!("{}myint{}", "ABS(".repeat(depth), ")".repeat(depth)),
        format!("{}myint{}", "-(".repeat(depth / 2), ")".repeat(depth / 2)),
        format!("{}TRUE", "NOT ".repeat(depth)),
        format!(
            "{}missing{}",
            "(1 + ".repeat(depth / 2),
            ")".repeat(depth / 2)
        ),
        format!("{}1{}", "(".repeat(depth), ")".repeat(depth)),
    ];
    let run = move || {
        for src in &deepest {
            let expression = Expression::compile(src).expect("compiles");
            let _ = expression.evaluate(&event());
            let _ = Expression::compile(&format!("{src} +")).expect_err("fails");
        }
    };
    // Half a tokio worker's stack. Unoptimized builds (the tests') take 8–16 KiB per level.
    std::thread::Builder::new()
        .stack_size(1024 * 1024)
        .spawn(run)
        .expect("spawns")
        .join()
        .expect("no stack overflow");
}

#[test]
fn overflow_saturates_with_a_math_error() {
    assert_eq!(
        failure("2147483647 + 1"),
        (Value::Int(i32::MAX), ErrorKind::Math)
    );
    assert_eq!(
        failure("-2147483648 - 1"),
        (Value::Int(i32::MIN), ErrorKind::Math)
    );
    assert_eq!(
        failure("65536 * 65536"),
        (Value::Int(i32::MAX), ErrorKind::Math)
    );
    assert_eq!(
        failure("-2147483648 / -1"),
        (Value::Int(i32::MAX), ErrorKind::Math)
    );
    assert_eq!(
        failure("--2147483648"),
        (Value::Int(i32::MAX), ErrorKind::Math)
    );
    assert_eq!(
        failure("-INT('-2147483648')"),
        (Value::Int(i32::MAX), ErrorKind::Math)
    );
    assert_eq!(
        failure("ABS(-2147483648)"),
        (Value::Int(i32::MAX), ErrorKind::Math)
    );
    assert_eq!(value("-2147483648 % -1"), Value::Int(0));
    assert_eq!(value("-7 / 2"), Value::Int(-3));
    assert_eq!(value("-7 % 2"), Value::Int(-1));
    // A failed cast comes first.
    assert_eq!(failure("'x' / 0"), (Value::Int(0), ErrorKind::Cast));
}

#[test]
fn in_compares_with_the_left_operands_type() {
    assert_eq!(value("myint IN ('6', '7')"), T);
    assert_eq!(value("'7' IN (myint)"), T);
    assert_eq!(value("'07' IN (myint)"), F);
    assert_eq!(value("source IN (type, '/orders/eu/42')"), T);
    assert_eq!(value("source NOT IN (type, subject)"), T);
    // The first match ends the search, so later elements are not evaluated.
    assert_eq!(value("1 IN (1, missing)"), T);
    assert_eq!(
        failure("1 IN (2, missing)"),
        (F, ErrorKind::MissingAttribute)
    );
    // An element that does not cast compares as the zero value, with a CastError.
    assert_eq!(failure("1 IN ('x', 1)"), (T, ErrorKind::Cast));
    assert_eq!(failure("0 IN ('x')"), (T, ErrorKind::Cast));
    assert_eq!(failure("TRUE IN (1)"), (F, ErrorKind::Cast));
    // NOT IN is NOT (IN): an error inside makes it false.
    assert_eq!(failure("1 NOT IN ('x', 2)"), (F, ErrorKind::Cast));
}

#[test]
fn like_reads_non_strings_as_strings() {
    assert_eq!(value("myint LIKE '7'"), T);
    assert_eq!(value("mybool LIKE 't%e'"), T);
    assert_eq!(value("source LIKE '/orders/%'"), T);
    assert_eq!(value("source NOT LIKE '/orders/%'"), F);
    assert_eq!(value("subject LIKE 'order-__'"), T);
    assert_eq!(value("-12 LIKE '-1_'"), T);
}

#[test]
fn every_function() {
    assert_eq!(value("LENGTH(mystr)"), Value::Int(15));
    assert_eq!(value("LENGTH(myint * 100)"), Value::Int(3));
    assert_eq!(
        value("CONCAT(type, ':', myint, mybool)"),
        s("com.example.order.created:7true")
    );
    assert_eq!(value("CONCAT_WS('/', 'a', myint, 'b')"), s("a/7/b"));
    assert_eq!(value("CONCAT_WS(myint, 'a', 'b')"), s("a7b"));
    assert_eq!(value("LOWER(mystr)"), s("  hello wörld  "));
    assert_eq!(value("UPPER(mystr)"), s("  HELLO WÖRLD  "));
    assert_eq!(value("TRIM(mystr)"), s("Hello Wörld"));
    assert_eq!(value("LEFT(type, 3)"), s("com"));
    assert_eq!(value("RIGHT(type, '7')"), s("created"));
    assert_eq!(value("SUBSTRING(source, 2, 6)"), s("orders"));
    assert_eq!(value("SUBSTRING(source, -2)"), s("42"));
    assert_eq!(value("ABS(-myint)"), Value::Int(7));
    assert_eq!(value("INT(num) + INT(TRUE)"), Value::Int(16));
    assert_eq!(value("BOOL('False')"), F);
    assert_eq!(value("STRING(myint)"), s("7"));
    assert_eq!(value("IS_INT(num) AND NOT IS_INT(type)"), T);
    assert_eq!(
        value("IS_BOOL(mybool) AND IS_BOOL(0) AND NOT IS_BOOL(num)"),
        T
    );
    assert_eq!(
        failure("LEFT(type, -1)"),
        (
            s("com.example.order.created"),
            ErrorKind::FunctionEvaluation
        )
    );
    assert_eq!(
        failure("SUBSTRING(type, 1, -1)"),
        (s(""), ErrorKind::FunctionEvaluation)
    );
    assert_eq!(failure("INT(type)"), (Value::Int(0), ErrorKind::Cast));
}

#[test]
fn compile_errors_for_undispatchable_calls() {
    let err = |src| Expression::compile(src).map(|_| ()).unwrap_err();
    assert_eq!(
        err("FOO(1)"),
        CompileError::UnknownFunction {
            name: "FOO".to_owned(),
            column: 1
        }
    );
    assert_eq!(
        err("x AND foo_bar()").to_string(),
        "unknown function foo_bar() at column 7"
    );
    assert_eq!(err("IS_STRING('a')").kind(), ErrorKind::MissingFunction);
    assert_eq!(
        err("1 + LEFT('abc')"),
        CompileError::WrongArity {
            function: "LEFT",
            expected: Arity::Exactly(2),
            given: 1,
            column: 5
        }
    );
    assert_eq!(
        err("substring('abc', 1, 2, 3)").to_string(),
        "function SUBSTRING() takes 2 or 3 argument(s) but 4 were given, at column 1"
    );
    assert_eq!(err("CONCAT_WS()").kind(), ErrorKind::MissingFunction);
    // Syntax errors anywhere win over semantic ones.
    assert_eq!(err("FOO(1) AND (").kind(), ErrorKind::Parse);
    assert_eq!(err("ABC(").kind(), ErrorKind::Parse);
}

#[test]
fn api() {
    let expression: Expression = "type LIKE 'com.example.%' AND myint > 5"
        .parse()
        .expect("compiles");
    assert_eq!(
        expression.source(),
        "type LIKE 'com.example.%' AND myint > 5"
    );
    assert_eq!(expression.to_string(), expression.source());
    assert!(expression.matches(&event()));
    assert!(!expression.matches(&Event::default()));
    assert_eq!(expression.static_type(), Some(Type::Boolean));
    assert_eq!(
        Expression::compile("myint").map(|e| e.static_type()),
        Ok(None)
    );
    assert_eq!(
        Expression::compile("LENGTH(x)").map(|e| e.static_type()),
        Ok(Some(Type::Integer))
    );
    // Non-Boolean and erroring results never match.
    assert!(
        !Expression::compile("1")
            .expect("compiles")
            .matches(&event())
    );
    assert!(
        !Expression::compile("'true'")
            .expect("compiles")
            .matches(&event())
    );
    assert!(
        !Expression::compile("'x' OR TRUE")
            .expect("compiles")
            .matches(&event())
    );
    fn shareable<T: Send + Sync + Clone + std::fmt::Debug>() {}
    shareable::<Expression>();
    shareable::<CompileError>();
    shareable::<EvalError>();
}

/// The root of a compiled expression.
fn root(src: &str) -> Node {
    Expression::compile(src)
        .expect("compiles")
        .inner
        .root
        .clone()
}

#[test]
fn constants_are_folded_when_they_evaluate_without_error() {
    let constant = |src| Node::Const(value(src));
    assert_eq!(root("CONCAT('a', 'b', 1 + 2)"), Node::Const(s("ab3")));
    assert_eq!(root("4 * (2 + 4) / 2"), constant("12"));
    assert_eq!(root("NOT ('a' LIKE 'a%')"), Node::Const(F));
    assert_eq!(root("1 IN (2, 3, 1)"), Node::Const(T));
    // Required attributes always exist (spec §3.4.4).
    assert_eq!(root("EXISTS id AND EXISTS SOURCE"), Node::Const(T));
    // A constant first operand that short-circuits decides a chain.
    assert_eq!(root("FALSE AND type = 'x' AND myint = 1"), Node::Const(F));
    assert_eq!(root("1 = 1 OR missing"), Node::Const(T));
    // Constants with errors stay, so every evaluation reports the error.
    assert!(matches!(root("5 / 0"), Node::Arithmetic { .. }));
    assert!(matches!(root("NOT 10"), Node::Not { .. }));
    assert_eq!(failure("5 / 0"), (Value::Int(0), ErrorKind::Math));
    // Nothing that reads the event is folded.
    assert!(matches!(root("TRUE AND type = 'x'"), Node::Logic { .. }));
    assert!(matches!(root("EXISTS subject"), Node::Exists { .. }));
    // Constant operands are cast once, when compiling.
    let Node::Ordering { rhs, .. } = root("myint > '5'") else {
        panic!("not an ordering");
    };
    assert_eq!(*rhs, Node::Const(Value::Int(5)));
    let Node::Equal { rhs, .. } = root("myint = '5'") else {
        panic!("not an equality");
    };
    assert_eq!(
        *rhs,
        Node::Const(s("5")),
        "= casts by the right operand's type, kept as is"
    );
}

fn constraints(src: &str) -> Vec<(KnownAttr, ConstraintKind)> {
    Expression::compile(src)
        .expect("compiles")
        .implied_constraints()
        .into_iter()
        .map(|c| (c.attribute, c.kind))
        .collect()
}

fn exact(s: &str) -> ConstraintKind {
    ConstraintKind::Exact(s.to_owned())
}

fn prefix(s: &str) -> ConstraintKind {
    ConstraintKind::Prefix(s.to_owned())
}

fn suffix(s: &str) -> ConstraintKind {
    ConstraintKind::Suffix(s.to_owned())
}

#[test]
fn implied_constraints_from_top_level_conjuncts() {
    use KnownAttr::{Source, Subject, Type};
    assert_eq!(constraints("type = 'a'"), vec![(Type, exact("a"))]);
    assert_eq!(constraints("'a' = TYPE"), vec![(Type, exact("a"))]);
    assert_eq!(
        constraints(
            "type = 'com.example' AND source LIKE '/orders/%' AND myint > 5 AND EXISTS subject"
        ),
        vec![(Type, exact("com.example")), (Source, prefix("/orders/"))]
    );
    assert_eq!(
        constraints("type LIKE '%.error'"),
        vec![(Type, suffix(".error"))]
    );
    assert_eq!(
        constraints("type LIKE 'a%b%c'"),
        vec![(Type, prefix("a")), (Type, suffix("c"))]
    );
    assert_eq!(
        constraints(r"type LIKE 'a\%b%'"),
        vec![(Type, prefix("a%b"))]
    );
    assert_eq!(
        constraints("type LIKE 'exact'"),
        vec![(Type, exact("exact"))]
    );
    assert_eq!(
        constraints("subject LIKE 'a_c'"),
        vec![(Subject, prefix("a")), (Subject, suffix("c"))]
    );
    // Nested parentheses and nested AND chains.
    assert_eq!(
        constraints("((type = 'a') AND (source = 'b' AND (subject LIKE 'c%')))"),
        vec![
            (Type, exact("a")),
            (Source, exact("b")),
            (Subject, prefix("c"))
        ]
    );
    // Contradictory constraints are all reported: the expression never matches.
    assert_eq!(
        constraints("type = 'a' AND type = 'b'"),
        vec![(Type, exact("a")), (Type, exact("b"))]
    );
    // Folded literals count.
    assert_eq!(
        constraints("type = CONCAT('a', 'b')"),
        vec![(Type, exact("ab"))]
    );
}

#[test]
fn no_constraints_unless_certain() {
    for src in [
        "type = 'a' OR source = 'b'",
        "(type = 'a' AND source = 'b') OR subject = 'c'",
        "NOT (type = 'a')",
        "NOT type = 'a'",
        "type != 'a'",
        "type <> 'a'",
        "type NOT LIKE 'a%'",
        "type = 'a' XOR source = 'b'",
        "(type = 'a') = TRUE",
        // Extensions may be Integers or Booleans, whose casts differ from string equality.
        "myext = 'a'",
        "myext LIKE 'a%'",
        // Non-string literals cast the attribute: `id = 5` holds for id "05".
        "id = 5",
        "id = TRUE",
        // Not a bare attribute.
        "LOWER(type) = 'a'",
        "type = subject",
        "type LIKE '%'",
        "type LIKE '_%_'",
        "type IN ('a')",
        // `dataschema` is the 1.0 name; 0.3's `schemaurl` is just an extension here.
        "schemaurl = 'x'",
    ] {
        assert_eq!(constraints(src), vec![], "{src}");
    }
    assert_eq!(
        constraints("dataschema = 'x'"),
        vec![(KnownAttr::DataSchema, exact("x"))]
    );
}

#[test]
fn constraint_checks() {
    let c = |kind| ImpliedConstraint {
        attribute: KnownAttr::Type,
        kind,
    };
    assert!(c(exact("a")).holds("a"));
    assert!(!c(exact("a")).holds("ab"));
    assert!(c(prefix("a")).holds("ab"));
    assert!(!c(prefix("a")).holds("ba"));
    assert!(c(suffix("a")).holds("ba"));
    assert!(!c(suffix("a")).holds("ab"));
}

// Properties over generated expressions and events.

const KNOWN: [&str; 5] = ["type", "source", "subject", "id", "time"];
const EXTENSIONS: [&str; 4] = ["myint", "mybool", "mystr", "missing"];

/// Short strings over a small alphabet, so that comparisons and patterns often match.
fn text() -> impl Strategy<Value = String> {
    "[ab1%_\\\\.]{0,4}"
}

fn literal() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![0, 1, -1, 2, 7, i32::MAX, i32::MIN]).prop_map(|i| i.to_string()),
        any::<i32>().prop_map(|i| i.to_string()),
        prop::sample::select(vec!["TRUE", "false"]).prop_map(String::from),
        text().prop_map(|s| format!("'{}'", s.replace('\'', ""))),
        "[ab1]{0,3}".prop_map(|s| format!("\"{s}\"")),
    ]
}

fn leaf() -> impl Strategy<Value = String> {
    let attributes: Vec<&str> = KNOWN.iter().chain(&EXTENSIONS).copied().collect();
    prop_oneof![
        3 => literal(),
        3 => prop::sample::select(attributes.clone()).prop_map(String::from),
        1 => prop::sample::select(attributes).prop_map(|a| format!("EXISTS {a}")),
    ]
}

fn expression() -> impl Strategy<Value = String> {
    let functions = vec![
        "LENGTH",
        "CONCAT",
        "CONCAT_WS",
        "LOWER",
        "UPPER",
        "TRIM",
        "LEFT",
        "RIGHT",
        "SUBSTRING",
        "ABS",
        "INT",
        "BOOL",
        "STRING",
        "IS_INT",
        "IS_BOOL",
    ];
    let operators = vec![
        "AND", "OR", "XOR", "=", "!=", "<>", "<", "<=", ">", ">=", "+", "-", "*", "/", "%",
    ];
    leaf().prop_recursive(4, 24, 4, move |inner| {
        prop_oneof![
            (
                inner.clone(),
                prop::sample::select(operators.clone()),
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("{a} {op} {b}")),
            (
                inner.clone(),
                prop::sample::select(operators.clone()),
                inner.clone()
            )
                .prop_map(|(a, op, b)| format!("({a}) {op} ({b})")),
            inner.clone().prop_map(|a| format!("NOT {a}")),
            inner.clone().prop_map(|a| format!("-{a}")),
            (inner.clone(), any::<bool>(), text()).prop_map(|(a, not, p)| {
                let not = if not { "NOT " } else { "" };
                format!("{a} {not}LIKE '{p}'")
            }),
            (
                inner.clone(),
                any::<bool>(),
                prop::collection::vec(inner.clone(), 1..4)
            )
                .prop_map(|(a, not, set)| {
                    let not = if not { "NOT " } else { "" };
                    format!("{a} {not}IN ({})", set.join(", "))
                }),
            (
                prop::sample::select(functions.clone()),
                prop::collection::vec(inner, 0..4)
            )
                .prop_map(|(f, args)| format!("{f}({})", args.join(", "))),
        ]
    })
}

/// Logical combinations of constraint-shaped terms and arbitrary expressions, to exercise
/// `implied_constraints`.
fn combination() -> impl Strategy<Value = String> {
    let attribute = || prop::sample::select(KNOWN.to_vec());
    let term = prop_oneof![
        3 => (attribute(), "[ab]{0,2}").prop_map(|(a, t)| format!("{a} = '{t}'")),
        3 => (attribute(), "[ab]{0,2}").prop_map(|(a, t)| format!("'{t}' = {a}")),
        3 => (attribute(), "[ab%_]{0,3}").prop_map(|(a, p)| format!("{a} LIKE '{p}'")),
        1 => expression(),
    ];
    term.prop_recursive(3, 8, 3, |inner| {
        prop_oneof![
            3 => prop::collection::vec(inner.clone(), 2..4).prop_map(|terms| {
                let terms: Vec<_> = terms.iter().map(|t| format!("({t})")).collect();
                terms.join(" AND ")
            }),
            1 => (inner.clone(), prop::sample::select(vec!["OR", "XOR", "AND"]), inner.clone())
                .prop_map(|(a, op, b)| format!("({a}) {op} ({b})")),
            1 => inner.prop_map(|a| format!("NOT ({a})")),
        ]
    })
}

fn arbitrary_event() -> impl Strategy<Value = Event> {
    let known = prop::collection::vec(prop::option::weighted(0.9, "[ab]{0,2}"), KNOWN.len());
    let extension = prop_oneof![
        text().prop_map(Attr::Str),
        prop::sample::select(vec![0, 1, -1, 7, i32::MAX, i32::MIN]).prop_map(Attr::Int),
        any::<i32>().prop_map(Attr::Int),
        any::<bool>().prop_map(Attr::Bool),
    ];
    let extensions = prop::collection::vec(prop::option::of(extension), EXTENSIONS.len() - 1);
    (known, extensions).prop_map(|(known, extensions)| {
        let mut event = Event::default();
        for (name, value) in KNOWN.iter().zip(known) {
            if let Some(v) = value {
                event = event.str(name, &v);
            }
        }
        // `missing` is never set.
        for (name, value) in EXTENSIONS.iter().zip(extensions) {
            if let Some(v) = value {
                event = event.with(name, v);
            }
        }
        event
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn compiling_arbitrary_text_never_panics(src in "\\PC{0,64}") {
        let _ = Expression::compile(&src);
    }

    #[test]
    fn compiling_token_soup_never_panics(
        tokens in prop::collection::vec(prop::sample::select(vec![
            "(", ")", ",", "-", "+", "*", "/", "%", "=", "!=", "<>", "<", "<=", ">", ">=", "AND",
            "OR", "XOR", "NOT", "LIKE", "IN", "EXISTS", "TRUE", "'a%'", "\"b\"", "'", "1",
            "2147483648", "x", "type", "LEFT", "CONCAT", "FOO", "my_x", "é",
        ]), 0..24)
    ) {
        let src = tokens.join(" ");
        if let Err(e) = Expression::compile(&src) {
            let column = usize::try_from(e.column()).unwrap_or(usize::MAX);
            prop_assert!(column >= 1 && column <= src.chars().count() + 1, "{e}");
        }
    }

    #[test]
    fn evaluation_never_panics_and_folding_changes_nothing(
        src in expression(),
        event in arbitrary_event(),
    ) {
        let Ok(folded) = Expression::compile(&src) else { return Ok(()) };
        let unfolded = Expression::compile_with(&src, false).expect("compiles without folding");
        let result = folded.evaluate(&event);
        prop_assert_eq!(&result, &unfolded.evaluate(&event), "{}", src);
        prop_assert_eq!(folded.matches(&event), result.is_match());
        if let Some(t) = folded.static_type() {
            prop_assert_eq!(result.value.value_type(), t, "{}", src);
        }
    }

}

proptest! {
    // Only some generated combinations match their event: run more cases.
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn implied_constraints_hold_whenever_the_expression_matches(
        src in combination(),
        event in arbitrary_event(),
    ) {
        let Ok(expression) = Expression::compile(&src) else { return Ok(()) };
        if expression.matches(&event) {
            for constraint in expression.implied_constraints() {
                let value = event.attribute(constraint.attribute.name());
                prop_assert!(
                    matches!(value, Some(AttrValue::Str(v)) if constraint.holds(v)),
                    "{src}: {constraint:?} does not hold for {value:?}"
                );
            }
        }
    }
}

#[test]
fn mixed_logical_operators_need_parentheses() {
    let err = Expression::compile("type = 'a' OR type = 'b' AND source = 'c'").unwrap_err();
    assert_eq!(err.column(), 26);
    assert!(
        err.to_string().contains("AND after OR at column 26"),
        "{err}"
    );
    assert_eq!(err.kind(), ErrorKind::Parse);
    for ok in [
        "type = 'a' OR (type = 'b' AND source = 'c')",
        "(a OR b) AND c",
        "a AND b AND c",
        "a XOR b XOR c",
        "NOT (a OR b) AND c",
    ] {
        assert!(Expression::compile(ok).is_ok(), "{ok}");
    }
    assert!(Expression::compile("a AND b XOR c").is_err());
}
