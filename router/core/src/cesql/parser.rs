//! The parser: tokens to an [`Expr`] tree, by precedence climbing.
//!
//! Precedence follows spec §3.6, tightest first; operators of equal precedence associate to
//! the left:
//!
//! | Level | Operators                                   |
//! | ----- | ------------------------------------------- |
//! | 7     | prefix `NOT`, prefix `-` (operand: an atom)  |
//! | 6     | `LIKE`, `NOT LIKE`                          |
//! | 5     | `IN`, `NOT IN`                              |
//! | 4     | `*`, `/`, `%`                               |
//! | 3     | `+`, `-`                                    |
//! | 2     | `=`, `!=`, `<>`, `<`, `<=`, `>`, `>=`       |
//! | 1     | `AND`, `OR`, `XOR` (one level, see below)   |
//!
//! Function calls, parenthesised expressions, `EXISTS name`, literals and attributes are atoms.
//! The spec lists EXISTS between LIKE and IN, but its operand is a bare identifier, so it has no
//! operand to bind and its level does not matter.

use super::MAX_NESTING;
use super::ast::{ArithmeticOp, BinaryOp, Expr, ExprKind, LogicOp, OrderingOp};
use super::error::{CompileError, Expected};
use super::lexer::{Keyword, Token, TokenKind, column_at, tokenize};

/// Parses a whole expression.
pub(super) fn parse(src: &str) -> Result<Expr, CompileError> {
    let tokens = tokenize(src)?;
    let mut parser = Parser {
        src,
        tokens,
        pos: 0,
        depth: 0,
    };
    let expr = parser.expression(0)?;
    match parser.peek() {
        TokenKind::Eof => Ok(expr),
        _ => Err(parser.unexpected(Expected::OperatorOrEnd)),
    }
}

const UNARY: u8 = 7;
const LIKE: u8 = 6;
const IN: u8 = 5;
const MULTIPLICATIVE: u8 = 4;
const ADDITIVE: u8 = 3;
const COMPARISON: u8 = 2;
const LOGIC: u8 = 1;

/// An infix operator and what follows it.
#[derive(Clone, Copy)]
enum Infix {
    Binary(BinaryOp),
    Logic(LogicOp),
    /// `LIKE` or `NOT LIKE`, followed by a string literal.
    Like {
        negated: bool,
    },
    /// `IN` or `NOT IN`, followed by a parenthesised set.
    In {
        negated: bool,
    },
}

impl Infix {
    fn precedence(self) -> u8 {
        match self {
            Infix::Like { .. } => LIKE,
            Infix::In { .. } => IN,
            Infix::Binary(BinaryOp::Arithmetic(
                ArithmeticOp::Mul | ArithmeticOp::Div | ArithmeticOp::Mod,
            )) => MULTIPLICATIVE,
            Infix::Binary(BinaryOp::Arithmetic(ArithmeticOp::Add | ArithmeticOp::Sub)) => ADDITIVE,
            Infix::Binary(BinaryOp::Ordering(_) | BinaryOp::Eq | BinaryOp::NotEq) => COMPARISON,
            Infix::Logic(_) => LOGIC,
        }
    }
}

struct Parser<'s> {
    src: &'s str,
    tokens: Vec<Token<'s>>,
    pos: usize,
    /// Current recursion depth of [`Parser::expression`].
    depth: usize,
}

impl<'s> Parser<'s> {
    /// Parses an expression whose infix operators all bind at least as tightly as `min`.
    fn expression(&mut self, min: u8) -> Result<Expr, CompileError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(self.too_deep(self.token().start));
        }
        let result = self.expression_inner(min);
        self.depth -= 1;
        result
    }

    fn expression_inner(&mut self, min: u8) -> Result<Expr, CompileError> {
        let mut lhs = self.prefix()?;
        // The first logical operator of this chain; a different one later is ambiguous.
        let mut chain: Option<LogicOp> = None;
        loop {
            let at = self.token().start;
            let Some((infix, width)) = self.infix()? else {
                break;
            };
            let precedence = infix.precedence();
            if precedence < min {
                break;
            }
            self.pos += width;
            lhs = match infix {
                Infix::Binary(op) => {
                    let rhs = self.expression(precedence + 1)?;
                    self.node(ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)), at)?
                }
                Infix::Logic(op) => {
                    match chain {
                        Some(first) if first != op => {
                            return Err(CompileError::MixedLogicalOperators {
                                first: logic_name(first),
                                second: logic_name(op),
                                column: column_at(self.src, at),
                            });
                        }
                        _ => chain = Some(op),
                    }
                    let rhs = self.expression(precedence + 1)?;
                    self.logic(op, lhs, rhs, at)?
                }
                Infix::Like { negated } => {
                    let pattern = match self.peek() {
                        TokenKind::String(s) => s.clone(),
                        _ => return Err(self.unexpected(Expected::LikePattern)),
                    };
                    self.pos += 1;
                    let operand = Box::new(lhs);
                    self.node(
                        ExprKind::Like {
                            negated,
                            operand,
                            pattern,
                        },
                        at,
                    )?
                }
                Infix::In { negated } => {
                    if self.peek() != &TokenKind::LParen {
                        return Err(self.unexpected(Expected::SetStart));
                    }
                    self.pos += 1;
                    let set = self.list()?;
                    if set.is_empty() {
                        // The grammar has no empty set: `(` must be followed by an expression.
                        self.pos -= 1;
                        return Err(self.unexpected(Expected::Expression));
                    }
                    let operand = Box::new(lhs);
                    self.node(
                        ExprKind::In {
                            negated,
                            operand,
                            set,
                        },
                        at,
                    )?
                }
            };
        }
        Ok(lhs)
    }

    /// The infix operator at the current token, if there is one, and how many tokens it spans.
    fn infix(&self) -> Result<Option<(Infix, usize)>, CompileError> {
        let op = match self.peek() {
            TokenKind::Star => Infix::Binary(BinaryOp::Arithmetic(ArithmeticOp::Mul)),
            TokenKind::Slash => Infix::Binary(BinaryOp::Arithmetic(ArithmeticOp::Div)),
            TokenKind::Percent => Infix::Binary(BinaryOp::Arithmetic(ArithmeticOp::Mod)),
            TokenKind::Plus => Infix::Binary(BinaryOp::Arithmetic(ArithmeticOp::Add)),
            TokenKind::Minus => Infix::Binary(BinaryOp::Arithmetic(ArithmeticOp::Sub)),
            TokenKind::Eq => Infix::Binary(BinaryOp::Eq),
            TokenKind::NotEq | TokenKind::LtGt => Infix::Binary(BinaryOp::NotEq),
            TokenKind::Lt => Infix::Binary(BinaryOp::Ordering(OrderingOp::Lt)),
            TokenKind::Le => Infix::Binary(BinaryOp::Ordering(OrderingOp::Le)),
            TokenKind::Gt => Infix::Binary(BinaryOp::Ordering(OrderingOp::Gt)),
            TokenKind::Ge => Infix::Binary(BinaryOp::Ordering(OrderingOp::Ge)),
            TokenKind::Keyword(Keyword::And) => Infix::Logic(LogicOp::And),
            TokenKind::Keyword(Keyword::Or) => Infix::Logic(LogicOp::Or),
            TokenKind::Keyword(Keyword::Xor) => Infix::Logic(LogicOp::Xor),
            TokenKind::Keyword(Keyword::Like) => Infix::Like { negated: false },
            TokenKind::Keyword(Keyword::In) => Infix::In { negated: false },
            TokenKind::Keyword(Keyword::Not) => {
                return match self.tokens.get(self.pos + 1).map(|t| &t.kind) {
                    Some(TokenKind::Keyword(Keyword::Like)) => {
                        Ok(Some((Infix::Like { negated: true }, 2)))
                    }
                    Some(TokenKind::Keyword(Keyword::In)) => {
                        Ok(Some((Infix::In { negated: true }, 2)))
                    }
                    _ => Err(self.unexpected_at(self.pos + 1, Expected::LikeOrIn)),
                };
            }
            _ => return Ok(None),
        };
        Ok(Some((op, 1)))
    }

    /// Parses an atom or a prefix operation.
    fn prefix(&mut self) -> Result<Expr, CompileError> {
        let token = self.token().clone();
        let at = token.start;
        self.pos += 1;
        match token.kind {
            TokenKind::Integer(digits) => self.integer(digits, false, at),
            TokenKind::String(s) => Ok(Expr::leaf(ExprKind::Str(s), at)),
            TokenKind::Keyword(Keyword::True) => Ok(Expr::leaf(ExprKind::Bool(true), at)),
            TokenKind::Keyword(Keyword::False) => Ok(Expr::leaf(ExprKind::Bool(false), at)),
            TokenKind::Minus | TokenKind::Plus => {
                let negative = token.kind == TokenKind::Minus;
                // A sign directly before digits is part of the literal (spec §2.2), which is
                // how `-2147483648` can be written although `2147483648` is out of range.
                if let TokenKind::Integer(digits) = *self.peek() {
                    self.pos += 1;
                    return self.integer(digits, negative, at);
                }
                if !negative {
                    return Err(self.unexpected(Expected::IntegerAfterPlus));
                }
                let operand = self.expression(UNARY)?;
                self.node(ExprKind::Negate(Box::new(operand)), at)
            }
            TokenKind::Keyword(Keyword::Not) => {
                let operand = self.expression(UNARY)?;
                self.node(ExprKind::Not(Box::new(operand)), at)
            }
            TokenKind::Keyword(Keyword::Exists) => {
                let name = match *self.peek() {
                    TokenKind::Word(word) => word,
                    _ => return Err(self.unexpected(Expected::AttributeName)),
                };
                let name_at = self.token().start;
                self.pos += 1;
                let name = self.attribute_name(name, name_at)?;
                Ok(Expr::leaf(ExprKind::Exists(name), at))
            }
            TokenKind::LParen => {
                let inner = self.expression(0)?;
                if self.peek() != &TokenKind::RParen {
                    return Err(self.unexpected(Expected::ClosingParen));
                }
                self.pos += 1;
                Ok(inner)
            }
            TokenKind::Word(word) if self.peek() == &TokenKind::LParen => {
                if !is_function_name(word) {
                    return Err(CompileError::InvalidFunctionName {
                        name: word.to_owned(),
                        column: column_at(self.src, at),
                    });
                }
                self.pos += 1;
                let args = self.list()?;
                let name = word.to_owned();
                self.node(ExprKind::Call { name, args }, at)
            }
            TokenKind::Word(word) => {
                let name = self.attribute_name(word, at)?;
                Ok(Expr::leaf(ExprKind::Attribute(name), at))
            }
            _ => {
                self.pos -= 1;
                Err(self.unexpected(Expected::Expression))
            }
        }
    }

    /// Parses `expr, expr, … )` after an opening parenthesis; the list may be empty.
    fn list(&mut self) -> Result<Vec<Expr>, CompileError> {
        let mut items = Vec::new();
        if self.peek() == &TokenKind::RParen {
            self.pos += 1;
            return Ok(items);
        }
        loop {
            items.push(self.expression(0)?);
            match self.peek() {
                TokenKind::Comma => self.pos += 1,
                TokenKind::RParen => {
                    self.pos += 1;
                    return Ok(items);
                }
                _ => return Err(self.unexpected(Expected::CommaOrClosingParen)),
            }
        }
    }

    fn integer(&self, digits: &str, negative: bool, at: usize) -> Result<Expr, CompileError> {
        let magnitude: Option<i64> = digits.parse().ok();
        let value = magnitude
            .map(|m| if negative { -m } else { m })
            .and_then(|v| i32::try_from(v).ok());
        match value {
            Some(v) => Ok(Expr::leaf(ExprKind::Int(v), at)),
            None => Err(CompileError::IntegerOutOfRange {
                literal: format!("{}{digits}", if negative { "-" } else { "" }),
                column: column_at(self.src, at),
            }),
        }
    }

    /// Validates an attribute name and lower-cases it.
    ///
    /// The spec's grammar allows `[a-z0-9]+`, but the TCK addresses `source` as `SOURCE`, and
    /// the reference grammar accepts `[a-zA-Z0-9]+`: names are case-insensitive, like
    /// keywords, and CloudEvents attribute names are always lower case.
    fn attribute_name(&self, word: &str, at: usize) -> Result<String, CompileError> {
        if word.bytes().all(|b| b.is_ascii_alphanumeric()) {
            Ok(word.to_ascii_lowercase())
        } else {
            Err(CompileError::InvalidAttributeName {
                name: word.to_owned(),
                column: column_at(self.src, at),
            })
        }
    }

    /// Joins `lhs op rhs`, extending `lhs` when it is already a chain of `op`: the result is
    /// the same as nesting to the left, and the tree stays flat however long the chain is.
    fn logic(&self, op: LogicOp, lhs: Expr, rhs: Expr, at: usize) -> Result<Expr, CompileError> {
        match lhs {
            Expr {
                kind: ExprKind::Logic(lhs_op, mut operands),
                at: lhs_at,
                height,
            } if lhs_op == op => {
                let height = height.max(1 + rhs.height);
                operands.push(rhs);
                self.check_height(height, lhs_at)?;
                Ok(Expr {
                    kind: ExprKind::Logic(op, operands),
                    at: lhs_at,
                    height,
                })
            }
            lhs => self.node(ExprKind::Logic(op, vec![lhs, rhs]), at),
        }
    }

    /// Builds an inner node, enforcing the nesting limit.
    fn node(&self, kind: ExprKind, at: usize) -> Result<Expr, CompileError> {
        let height = 1 + kind.child_height();
        self.check_height(height, at)?;
        Ok(Expr { kind, at, height })
    }

    fn check_height(&self, height: usize, at: usize) -> Result<(), CompileError> {
        if height > MAX_NESTING {
            Err(self.too_deep(at))
        } else {
            Ok(())
        }
    }

    fn too_deep(&self, at: usize) -> CompileError {
        CompileError::TooDeep {
            limit: MAX_NESTING,
            column: column_at(self.src, at),
        }
    }

    fn token(&self) -> &Token<'s> {
        // The token list always ends with `Eof`, and the parser never moves past it.
        &self.tokens[self.pos.min(self.tokens.len() - 1)]
    }

    fn peek(&self) -> &TokenKind<'s> {
        &self.token().kind
    }

    fn unexpected(&self, expected: Expected) -> CompileError {
        self.unexpected_at(self.pos, expected)
    }

    fn unexpected_at(&self, pos: usize, expected: Expected) -> CompileError {
        let token = &self.tokens[pos.min(self.tokens.len() - 1)];
        let text = &self.src[token.start..token.end];
        let found = match token.kind {
            TokenKind::Eof => "end of input".to_owned(),
            TokenKind::String(_) => format!("string literal {}", excerpt(text)),
            _ => format!("token '{}'", excerpt(text)),
        };
        CompileError::UnexpectedToken {
            found,
            column: column_at(self.src, token.start),
            expected,
        }
    }
}

/// `[A-Za-z][A-Za-z_]*` (spec §2.4 `function-identifier`).
fn is_function_name(word: &str) -> bool {
    let mut bytes = word.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphabetic() || b == b'_')
}

/// At most 40 characters of `text`, for error messages.
fn excerpt(text: &str) -> String {
    const MAX: usize = 40;
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

fn logic_name(op: LogicOp) -> &'static str {
    match op {
        LogicOp::And => "AND",
        LogicOp::Or => "OR",
        LogicOp::Xor => "XOR",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tree as an S-expression, for compact assertions.
    fn sexp(e: &Expr) -> String {
        let list = |es: &[Expr]| es.iter().map(sexp).collect::<Vec<_>>().join(" ");
        match &e.kind {
            ExprKind::Bool(b) => b.to_string(),
            ExprKind::Int(i) => i.to_string(),
            ExprKind::Str(s) => format!("{s:?}"),
            ExprKind::Attribute(a) => a.clone(),
            ExprKind::Exists(a) => format!("(exists {a})"),
            ExprKind::Not(x) => format!("(not {})", sexp(x)),
            ExprKind::Negate(x) => format!("(neg {})", sexp(x)),
            ExprKind::Binary(op, l, r) => {
                let op = match op {
                    BinaryOp::Arithmetic(ArithmeticOp::Add) => "+",
                    BinaryOp::Arithmetic(ArithmeticOp::Sub) => "-",
                    BinaryOp::Arithmetic(ArithmeticOp::Mul) => "*",
                    BinaryOp::Arithmetic(ArithmeticOp::Div) => "/",
                    BinaryOp::Arithmetic(ArithmeticOp::Mod) => "%",
                    BinaryOp::Ordering(OrderingOp::Lt) => "<",
                    BinaryOp::Ordering(OrderingOp::Le) => "<=",
                    BinaryOp::Ordering(OrderingOp::Gt) => ">",
                    BinaryOp::Ordering(OrderingOp::Ge) => ">=",
                    BinaryOp::Eq => "=",
                    BinaryOp::NotEq => "!=",
                };
                format!("({op} {} {})", sexp(l), sexp(r))
            }
            ExprKind::Logic(op, es) => format!("({op:?} {})", list(es)).to_lowercase(),
            ExprKind::Like {
                negated,
                operand,
                pattern,
            } => {
                let not = if *negated { "not-" } else { "" };
                format!("({not}like {} {pattern:?})", sexp(operand))
            }
            ExprKind::In {
                negated,
                operand,
                set,
            } => {
                let not = if *negated { "not-" } else { "" };
                format!("({not}in {} [{}])", sexp(operand), list(set))
            }
            ExprKind::Call { name, args } if args.is_empty() => format!("({name})"),
            ExprKind::Call { name, args } => format!("({name} {})", list(args)),
        }
    }

    fn p(src: &str) -> String {
        match parse(src) {
            Ok(e) => sexp(&e),
            Err(e) => panic!("{src:?} does not parse: {e}"),
        }
    }

    fn err(src: &str) -> String {
        match parse(src) {
            Ok(e) => panic!("{src:?} parses as {}", sexp(&e)),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn arithmetic_precedence_and_associativity() {
        assert_eq!(p("4 * 2 + 4 / 2"), "(+ (* 4 2) (/ 4 2))");
        assert_eq!(p("4 * (2 + 4) / 2"), "(/ (* 4 (+ 2 4)) 2)");
        assert_eq!(p("1 - 2 - 3"), "(- (- 1 2) 3)");
        assert_eq!(p("8 / 4 % 3 * 2"), "(* (% (/ 8 4) 3) 2)");
        assert_eq!(p("1 + 2 * 3 = 7"), "(= (+ 1 (* 2 3)) 7)");
        assert_eq!(p("a < b = c <> d"), "(!= (= (< a b) c) d)");
        assert_eq!(p("a >= b != c <= d > e"), "(> (<= (!= (>= a b) c) d) e)");
    }

    #[test]
    fn logical_operators_share_one_level_left_to_right() {
        assert_eq!(p("a AND b AND c"), "(and a b c)");
        assert_eq!(p("(a OR b) AND c"), "(and (or a b) c)");
        assert_eq!(p("a XOR b XOR c"), "(xor a b c)");
        // Mixed chains are rejected (see `CompileError::MixedLogicalOperators`).
        assert!(parse("a OR b AND c").is_err());
        assert!(parse("a XOR b OR c XOR d").is_err());
        assert_eq!(p("(a AND b) AND c"), "(and a b c)");
        assert_eq!(p("a AND (b AND c)"), "(and a (and b c))");
        assert_eq!(p("a = 1 AND b = 2"), "(and (= a 1) (= b 2))");
    }

    #[test]
    fn unary_operators_bind_tightest() {
        assert_eq!(p("NOT a = b"), "(= (not a) b)");
        assert_eq!(p("NOT x LIKE 'a%'"), r#"(like (not x) "a%")"#);
        assert_eq!(p("NOT (x LIKE 'a%')"), r#"(not (like x "a%"))"#);
        assert_eq!(p("NOT EXISTS time"), "(not (exists time))");
        assert_eq!(p("NOT NOT a"), "(not (not a))");
        assert_eq!(p("-a * b"), "(* (neg a) b)");
        assert_eq!(p("-ABS(a)"), "(neg (ABS a))");
        assert_eq!(p("- (1 + 2)"), "(neg (+ 1 2))");
        assert_eq!(p("-'10'"), r#"(neg "10")"#);
        assert_eq!(p("NOT -a"), "(not (neg a))");
    }

    #[test]
    fn like_and_in_bind_tighter_than_binary_operators() {
        assert_eq!(p("a + b LIKE 'x'"), r#"(+ a (like b "x"))"#);
        assert_eq!(p("1 + 2 IN (3)"), "(+ 1 (in 2 [3]))");
        assert_eq!(p("x LIKE 'a' IN (TRUE)"), r#"(in (like x "a") [true])"#);
        assert_eq!(
            p("x NOT LIKE 'a' AND y NOT IN (1, 2)"),
            r#"(and (not-like x "a") (not-in y [1 2]))"#
        );
        assert_eq!(p("x IN (1 + 2, f(y), (z))"), "(in x [(+ 1 2) (f y) z])");
        assert_eq!(p("EXISTS a AND b"), "(and (exists a) b)");
    }

    #[test]
    fn integer_literals_and_signs() {
        assert_eq!(p("-2147483648"), "-2147483648");
        assert_eq!(p("2147483647"), "2147483647");
        assert_eq!(p("ABS(-2147483648)"), "(ABS -2147483648)");
        assert_eq!(p("--10"), "(neg -10)");
        assert_eq!(p("- 5"), "-5");
        assert_eq!(p("+5"), "5");
        assert_eq!(p("4 -1"), "(- 4 1)");
        assert_eq!(p("4 - -1"), "(- 4 -1)");
        assert_eq!(p("4 + +1"), "(+ 4 1)");
        assert_eq!(p("007"), "7");
        assert_eq!(
            err("2147483648"),
            "integer literal 2147483648 at column 1 is outside the 32-bit range"
        );
        assert_eq!(
            err("1 + -2147483649"),
            "integer literal -2147483649 at column 5 is outside the 32-bit range"
        );
        assert_eq!(
            err("99999999999999999999999"),
            "integer literal 99999999999999999999999 at column 1 is outside the 32-bit range"
        );
        assert_eq!(
            err("+x"),
            "unexpected token 'x' at column 2, expected an integer literal after '+'"
        );
    }

    #[test]
    fn atoms() {
        assert_eq!(p("TRUE"), "true");
        assert_eq!(p("fAlSe"), "false");
        assert_eq!(p(r#""a'b""#), r#""a'b""#);
        assert_eq!(p("MyExt"), "myext");
        assert_eq!(p("1abc"), "1abc");
        assert_eq!(p("EXISTS SOURCE"), "(exists source)");
        assert_eq!(p("concat_ws(',', a)"), r#"(concat_ws "," a)"#);
        assert_eq!(p("CONCAT()"), "(CONCAT)");
        assert_eq!(p("LENGTH ('x')"), r#"(LENGTH "x")"#);
        assert_eq!(p(" \t\r\n1\n"), "1");
        assert_eq!(p("((((x))))"), "x");
    }

    #[test]
    fn errors_name_the_column_and_what_was_expected() {
        assert_eq!(
            err("type = 'a' OR )"),
            "unexpected token ')' at column 15, expected an expression"
        );
        assert_eq!(
            err("ABC("),
            "unexpected end of input at column 5, expected an expression"
        );
        assert_eq!(
            err("(1 + 2))"),
            "unexpected token ')' at column 8, expected an operator or the end of the expression"
        );
        assert_eq!(
            err("(1 + 2"),
            "unexpected end of input at column 7, expected ')'"
        );
        assert_eq!(
            err("1 2"),
            "unexpected token '2' at column 3, expected an operator or the end of the expression"
        );
        assert_eq!(
            err("x LIKE 123"),
            "unexpected token '123' at column 8, expected a string literal as the LIKE pattern"
        );
        assert_eq!(
            err("x LIKE y"),
            "unexpected token 'y' at column 8, expected a string literal as the LIKE pattern"
        );
        assert_eq!(
            err("x IN ()"),
            "unexpected token ')' at column 7, expected an expression"
        );
        assert_eq!(
            err("x IN 1"),
            "unexpected token '1' at column 6, expected '(' starting the set of IN"
        );
        assert_eq!(
            err("x IN (1 2)"),
            "unexpected token '2' at column 9, expected ',' or ')'"
        );
        assert_eq!(
            err("x NOT 1"),
            "unexpected token '1' at column 7, expected LIKE or IN after NOT"
        );
        assert_eq!(
            err("EXISTS 'a'"),
            "unexpected string literal 'a' at column 8, expected an attribute name after EXISTS"
        );
        assert_eq!(
            err("EXISTS AND"),
            "unexpected token 'AND' at column 8, expected an attribute name after EXISTS"
        );
        assert_eq!(
            err("f(a,)"),
            "unexpected token ')' at column 5, expected an expression"
        );
        assert_eq!(
            err(""),
            "unexpected end of input at column 1, expected an expression"
        );
        assert_eq!(
            err("my_ext = 1"),
            r#""my_ext" at column 1 is not a valid attribute name (letters and digits only)"#
        );
        assert_eq!(
            err("EXISTS my_ext"),
            r#""my_ext" at column 8 is not a valid attribute name (letters and digits only)"#
        );
        assert_eq!(
            err("1 + 1abc(2)"),
            r#""1abc" at column 5 is not a valid function name"#
        );
        assert_eq!(
            err("_f(2)"),
            r#""_f" at column 1 is not a valid function name"#
        );
        // Columns count characters, not bytes.
        assert_eq!(
            err("'héé' = )"),
            "unexpected token ')' at column 9, expected an expression"
        );
        let long = format!("x = {}", "'".to_owned() + &"a".repeat(60) + "' 1");
        assert!(err(&long).starts_with(&format!("unexpected token '1' at column {}", long.len())));
        let long = format!("x {}", "'".to_owned() + &"a".repeat(60) + "'");
        assert_eq!(
            err(&long),
            format!(
                "unexpected string literal '{}… at column 3, expected an operator or the end of the expression",
                "a".repeat(39)
            )
        );
    }

    #[test]
    fn errors_have_kinds() {
        use super::super::ErrorKind;
        assert_eq!(
            parse("(").map(|_| ()).map_err(|e| e.kind()),
            Err(ErrorKind::Parse)
        );
        let deep = format!(
            "{}1{}",
            "(".repeat(MAX_NESTING + 1),
            ")".repeat(MAX_NESTING + 1)
        );
        assert_eq!(
            parse(&deep).map(|_| ()).map_err(|e| e.kind()),
            Err(ErrorKind::Generic)
        );
    }

    #[test]
    fn nesting_is_limited() {
        let parens = |n| format!("{}1{}", "(".repeat(n), ")".repeat(n));
        assert!(parse(&parens(MAX_NESTING - 1)).is_ok());
        assert!(matches!(
            parse(&parens(MAX_NESTING + 1)),
            Err(CompileError::TooDeep { .. })
        ));
        let negations = |n| format!("{}x", "-".repeat(n));
        assert!(parse(&negations(MAX_NESTING - 1)).is_ok());
        assert!(matches!(
            parse(&negations(MAX_NESTING + 1)),
            Err(CompileError::TooDeep { .. })
        ));
        let sums = |n| vec!["1"; n].join(" + ");
        assert!(parse(&sums(MAX_NESTING - 1)).is_ok());
        assert!(matches!(
            parse(&sums(MAX_NESTING + 2)),
            Err(CompileError::TooDeep { .. })
        ));
        // Chains of one logical operator, sets and argument lists are flat.
        let conjunction = vec!["a = 1"; 10_000].join(" AND ");
        assert_eq!(parse(&conjunction).map(|e| e.height), Ok(3));
        let set = format!("x IN ({})", vec!["1"; 10_000].join(", "));
        assert_eq!(parse(&set).map(|e| e.height), Ok(2));
        // A pathological input fails fast instead of overflowing the stack.
        assert!(parse(&"(".repeat(1_000_000)).is_err());
        assert!(parse(&"NOT ".repeat(1_000_000)).is_err());
    }
}
