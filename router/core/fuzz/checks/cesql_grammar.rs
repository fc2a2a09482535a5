//! CESQL expressions written from a grammar, then every invariant of the `cesql` target.
//!
//! The raw-byte `cesql` target spends most of its inputs in the lexer and the parser: a
//! mutation of a valid expression rarely stays valid. Here the input's bytes choose an
//! expression from CESQL's grammar (through `arbitrary`'s `Unstructured`): literals at the
//! edges of their types, attributes the test events carry, every operator, `LIKE` patterns with
//! wildcards and escapes, `IN` sets, and calls of every built-in function with right and wrong
//! argument counts, nested up to [`MAX_DEPTH`] levels, parenthesised or left to precedence.
//! The text, a `0xFF` byte and the input's remaining bytes (which choose the events' attribute
//! values) then go to `checks/cesql.rs`'s `check`, so the invariants are that target's: the
//! evaluator, the type checker, the implied constraints and the trigger index get the inputs
//! that parse. Most generated texts compile; those that do not (an unknown function, a wrong
//! argument count, a type error the compiler sees) check the compile errors.

use arbitrary::Unstructured;

/// Levels of operators above the leaves.
const MAX_DEPTH: usize = 6;
/// Most operands of one `AND`/`OR`/`XOR` chain, items of one `IN` set, arguments of one call.
const MAX_WIDTH: usize = 4;

/// Attributes besides the context ones the `cesql` check gives its events.
const EXTENSIONS: &[&str] = &["specversion", "amount", "region", "flag", "Missing"];
/// The built-in functions, and one that does not exist.
const FUNCTIONS: &[&str] = &[
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
    "abs",
    "IS_STRING",
];
const INTEGERS: &[&str] = &[
    "0",
    "1",
    "2",
    "3",
    "10",
    "255",
    "1000",
    "2147483647",
    "2147483648",
    "-2147483648",
    "-1",
    "007",
];
/// Pieces of string literals: wildcards, escapes, case, white space, digits, Booleans, non-ASCII.
const PIECES: &[&str] = &[
    "a",
    "B",
    "ab",
    "%",
    "_",
    "\\%",
    "\\_",
    "\\\\",
    " ",
    "\t",
    "1",
    "-7",
    "42",
    "true",
    "FALSE",
    "ß",
    "é",
    "😀",
    "com.example",
    "/",
    ".",
];
const ARITHMETIC: &[&str] = &["+", "-", "*", "/", "%"];
const COMPARISON: &[&str] = &["<", "<=", ">", ">=", "=", "!=", "<>"];
const LOGIC: &[&str] = &["AND", "OR", "XOR", "and"];

/// Runs the `cesql` target's invariants on the expression `data` chooses.
pub fn check(data: &[u8]) {
    let (text, material) = expression_of(data);
    let mut input = text.into_bytes();
    input.push(0xFF);
    input.extend_from_slice(material);
    crate::cesql::check(&input);
}

/// The expression `data` chooses, and the bytes it left (which choose the events).
pub fn expression_of(data: &[u8]) -> (String, &[u8]) {
    let mut u = Unstructured::new(data);
    let mut text = String::new();
    expression(&mut u, MAX_DEPTH, &mut text);
    (text, u.take_rest())
}

/// A number in `0..n` (0 once the bytes run out, so every expression ends in leaves).
fn pick(u: &mut Unstructured<'_>, n: usize) -> usize {
    u.choose_index(n).unwrap_or(0)
}

fn one<'a>(u: &mut Unstructured<'_>, items: &[&'a str]) -> &'a str {
    items[pick(u, items.len())]
}

fn expression(u: &mut Unstructured<'_>, depth: usize, out: &mut String) {
    // Leaves get more weight as the depth runs out, and all of it at depth 0.
    let kind = if depth == 0 { 0 } else { pick(u, 10) };
    match kind {
        0..=2 => leaf(u, out),
        3 => {
            out.push_str(one(u, &["NOT ", "-", "not "]));
            operand(u, depth - 1, out);
        }
        4 => binary(u, depth, ARITHMETIC, out),
        5 => binary(u, depth, COMPARISON, out),
        6 => {
            let op = one(u, LOGIC);
            let n = 2 + pick(u, MAX_WIDTH - 1);
            for i in 0..n {
                if i > 0 {
                    out.push(' ');
                    out.push_str(op);
                    out.push(' ');
                }
                operand(u, depth - 1, out);
            }
        }
        7 => {
            operand(u, depth - 1, out);
            out.push_str(one(u, &[" LIKE ", " NOT LIKE ", " like "]));
            string(u, out);
        }
        8 => {
            operand(u, depth - 1, out);
            out.push_str(one(u, &[" IN (", " NOT IN (", " in ("]));
            for i in 0..1 + pick(u, MAX_WIDTH) {
                if i > 0 {
                    out.push_str(", ");
                }
                expression(u, depth - 1, out);
            }
            out.push(')');
        }
        _ => {
            out.push_str(one(u, FUNCTIONS));
            out.push('(');
            for i in 0..pick(u, MAX_WIDTH + 1) {
                if i > 0 {
                    out.push_str(", ");
                }
                expression(u, depth - 1, out);
            }
            out.push(')');
        }
    }
}

/// Two operands and one of `operators` between them.
fn binary(u: &mut Unstructured<'_>, depth: usize, operators: &[&str], out: &mut String) {
    let op = one(u, operators);
    operand(u, depth - 1, out);
    out.push(' ');
    out.push_str(op);
    out.push(' ');
    operand(u, depth - 1, out);
}

/// An operand of an operator: in parentheses, or left to the precedence rules.
fn operand(u: &mut Unstructured<'_>, depth: usize, out: &mut String) {
    if u.ratio(2u8, 3u8).unwrap_or(false) {
        out.push('(');
        expression(u, depth, out);
        out.push(')');
    } else {
        expression(u, depth, out);
    }
}

fn leaf(u: &mut Unstructured<'_>, out: &mut String) {
    match pick(u, 6) {
        0 => attribute(u, out),
        1 => {
            out.push_str("EXISTS ");
            attribute(u, out);
        }
        2 => out.push_str(one(u, INTEGERS)),
        3 => out.push_str(one(u, &["TRUE", "FALSE", "true"])),
        4 => out.push_str(&u.arbitrary::<i32>().unwrap_or(0).to_string()),
        _ => string(u, out),
    }
}

fn attribute(u: &mut Unstructured<'_>, out: &mut String) {
    let context = &crate::cesql::CONTEXT_ATTRIBUTES;
    match pick(u, context.len() + EXTENSIONS.len()) {
        i if i < context.len() => out.push_str(context[i]),
        i => out.push_str(EXTENSIONS[i - context.len()]),
    }
}

/// A string literal in either quote, with its quote escaped where a piece holds it.
fn string(u: &mut Unstructured<'_>, out: &mut String) {
    let quote = if u.arbitrary::<bool>().unwrap_or(false) {
        '\''
    } else {
        '"'
    };
    out.push(quote);
    for _ in 0..pick(u, 5) {
        match pick(u, 8) {
            0 => {
                out.push('\\');
                out.push(quote);
            }
            _ => out.push_str(one(u, PIECES)),
        }
    }
    out.push(quote);
}
