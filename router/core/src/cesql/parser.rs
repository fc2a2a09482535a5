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
use super::ast::{BinaryOp, Expr, ExprKind, LogicOp};
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
            Infix::Binary(BinaryOp::Mul | BinaryOp::Div | BinaryOp::Mod) => MULTIPLICATIVE,
            Infix::Binary(BinaryOp::Add | BinaryOp::Sub) => ADDITIVE,
            Infix::Binary(_) => COMPARISON,
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
            TokenKind::Star => Infix::Binary(BinaryOp::Mul),
            TokenKind::Slash => Infix::Binary(BinaryOp::Div),
            TokenKind::Percent => Infix::Binary(BinaryOp::Mod),
            TokenKind::Plus => Infix::Binary(BinaryOp::Add),
            TokenKind::Minus => Infix::Binary(BinaryOp::Sub),
            TokenKind::Eq => Infix::Binary(BinaryOp::Eq),
            TokenKind::NotEq | TokenKind::LtGt => Infix::Binary(BinaryOp::NotEq),
            TokenKind::Lt => Infix::Binary(BinaryOp::Lt),
            TokenKind::Le => Infix::Binary(BinaryOp::Le),
            TokenKind::Gt => Infix::Binary(BinaryOp::Gt),
            TokenKind::Ge => Infix::Binary(BinaryOp::Ge),
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
