//! Errors: [`CompileError`] when an expression is compiled, [`EvalError`] when it is evaluated,
//! and the [`ErrorKind`] both map to (the error types of spec §3.3).

use std::fmt;
use std::sync::Arc;

use thiserror::Error;

use super::value::Type;

/// The error types of CESQL spec §3.3, as named by the TCK.
///
/// Both [`CompileError::kind`] and [`EvalError::kind`] map to one of these. The set is closed
/// and small, so it also serves as a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// _ParseError_: the expression does not follow the grammar.
    Parse,
    /// _MathError_: division by zero or 32-bit overflow.
    Math,
    /// _CastError_: a value could not be cast to the type an operator or function needs.
    Cast,
    /// _MissingFunctionError_: no function with this name and number of arguments exists.
    MissingFunction,
    /// _FunctionEvaluationError_: a function was called with an argument outside its domain.
    FunctionEvaluation,
    /// _MissingAttributeError_: the event does not have an attribute the expression reads.
    MissingAttribute,
    /// _GenericError_: anything else; here, only an expression nested deeper than the engine
    /// accepts.
    Generic,
}

impl ErrorKind {
    /// The TCK's name for the kind (`parse`, `math`, `cast`, `missingFunction`,
    /// `functionEvaluation`, `missingAttribute`, `generic`).
    pub const fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Parse => "parse",
            ErrorKind::Math => "math",
            ErrorKind::Cast => "cast",
            ErrorKind::MissingFunction => "missingFunction",
            ErrorKind::FunctionEvaluation => "functionEvaluation",
            ErrorKind::MissingAttribute => "missingAttribute",
            ErrorKind::Generic => "generic",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an expression could not be compiled. Every variant carries the 1-based column (counted
/// in characters, a line break counting as one) where the problem starts.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum CompileError {
    /// The parser met a token (or the end of the input) where the grammar allows something
    /// else.
    #[error("unexpected {found} at column {column}, expected {expected}")]
    UnexpectedToken {
        /// What was found, e.g. `token ')'` or `end of input`.
        found: String,
        /// Where it was found.
        column: u32,
        /// What the grammar allows there.
        expected: Expected,
    },
    /// A character that starts no token, e.g. `!` not followed by `=`, or a non-ASCII letter
    /// outside a string literal.
    #[error("invalid character {character:?} at column {column}")]
    InvalidCharacter {
        /// The character.
        character: char,
        /// Where it is.
        column: u32,
    },
    /// A string literal without its closing quote.
    #[error("unterminated string literal starting at column {column}")]
    UnterminatedString {
        /// Where the literal starts (its opening quote).
        column: u32,
    },
    /// An integer literal outside the signed 32-bit range (spec §2.2).
    #[error("integer literal {literal} at column {column} is outside the 32-bit range")]
    IntegerOutOfRange {
        /// The literal as written, sign included.
        literal: String,
        /// Where it starts.
        column: u32,
    },
    /// A word that is neither a keyword nor a valid attribute name (`[a-zA-Z0-9]+`), e.g. one
    /// containing `_` that is not followed by `(`.
    #[error("{name:?} at column {column} is not a valid attribute name (letters and digits only)")]
    InvalidAttributeName {
        /// The word as written.
        name: String,
        /// Where it starts.
        column: u32,
    },
    /// A word followed by `(` that is not a valid function name (`[a-zA-Z][a-zA-Z_]*`).
    #[error("{name:?} at column {column} is not a valid function name")]
    InvalidFunctionName {
        /// The word as written.
        name: String,
        /// Where it starts.
        column: u32,
    },
    /// `AND`, `OR` and `XOR` mixed in one chain without parentheses. The spec gives them one
    /// precedence, evaluated left to right (`a OR b AND c` is `(a OR b) AND c`); SQL binds
    /// `AND` tighter, and sdk-go (Knative's engine) groups to the right. Rather than pick one
    /// reading silently, the filter is rejected until parentheses say which is meant.
    #[error(
        "{second} after {first} at column {column}: AND, OR and XOR share one precedence in CESQL and \
         read left to right, unlike SQL; add parentheses to say which you mean"
    )]
    MixedLogicalOperators {
        /// The operator that started the chain.
        first: &'static str,
        /// The operator that differs from it.
        second: &'static str,
        /// Where the second operator is.
        column: u32,
    },
    /// A call to a function this engine does not have (kind
    /// [`ErrorKind::MissingFunction`]).
    #[error("unknown function {name}() at column {column}")]
    UnknownFunction {
        /// The name as written.
        name: String,
        /// Where the call starts.
        column: u32,
    },
    /// A call to a built-in function with a number of arguments it has no overload for (kind
    /// [`ErrorKind::MissingFunction`], spec §3.5: the invocation "cannot be dispatched").
    #[error(
        "function {function}() takes {expected} argument(s) but {given} were given, at column {column}"
    )]
    WrongArity {
        /// The function's canonical (upper-case) name.
        function: &'static str,
        /// The numbers of arguments it accepts, e.g. `2 or 3`.
        expected: Arity,
        /// The number of arguments in the call.
        given: usize,
        /// Where the call starts.
        column: u32,
    },
    /// The expression nests deeper than [`MAX_NESTING`](super::MAX_NESTING) levels (kind
    /// [`ErrorKind::Generic`]). The limit keeps compiling and evaluating within a small, fixed
    /// amount of stack.
    #[error("expression nests deeper than {limit} levels at column {column}")]
    TooDeep {
        /// The limit.
        limit: usize,
        /// Where the level that crossed it starts.
        column: u32,
    },
}

impl CompileError {
    /// The spec's error type for this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            CompileError::UnknownFunction { .. } | CompileError::WrongArity { .. } => {
                ErrorKind::MissingFunction
            }
            CompileError::TooDeep { .. } => ErrorKind::Generic,
            _ => ErrorKind::Parse,
        }
    }

    /// The 1-based column where the problem starts.
    pub fn column(&self) -> u32 {
        match self {
            CompileError::UnexpectedToken { column, .. }
            | CompileError::InvalidCharacter { column, .. }
            | CompileError::UnterminatedString { column }
            | CompileError::IntegerOutOfRange { column, .. }
            | CompileError::InvalidAttributeName { column, .. }
            | CompileError::InvalidFunctionName { column, .. }
            | CompileError::UnknownFunction { column, .. }
            | CompileError::WrongArity { column, .. }
            | CompileError::TooDeep { column, .. }
            | CompileError::MixedLogicalOperators { column, .. } => *column,
        }
    }
}

/// What the parser expected where it reported [`CompileError::UnexpectedToken`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// Any expression: a literal, an attribute, a function call, `(`, `NOT`, `-` or `EXISTS`.
    Expression,
    /// A binary operator, `LIKE`, `IN`, or the end of the expression.
    OperatorOrEnd,
    /// `)` closing a parenthesised expression.
    ClosingParen,
    /// `,` or `)` in an argument list or an `IN` set.
    CommaOrClosingParen,
    /// `(` opening the set of an `IN`.
    SetStart,
    /// `LIKE` or `IN` after an infix `NOT`.
    LikeOrIn,
    /// A string literal: the pattern of `LIKE` must be one, without casting (spec §3.4.3).
    LikePattern,
    /// An attribute name after `EXISTS`.
    AttributeName,
    /// An integer literal after a leading `+` (spec §2.2: `+` is only a literal's sign).
    IntegerAfterPlus,
}

impl fmt::Display for Expected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Expected::Expression => "an expression",
            Expected::OperatorOrEnd => "an operator or the end of the expression",
            Expected::ClosingParen => "')'",
            Expected::CommaOrClosingParen => "',' or ')'",
            Expected::SetStart => "'(' starting the set of IN",
            Expected::LikeOrIn => "LIKE or IN after NOT",
            Expected::LikePattern => "a string literal as the LIKE pattern",
            Expected::AttributeName => "an attribute name after EXISTS",
            Expected::IntegerAfterPlus => "an integer literal after '+'",
        })
    }
}

/// The numbers of arguments a built-in function accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arity {
    /// Exactly this many.
    Exactly(usize),
    /// Either of two counts (`SUBSTRING` takes 2 or 3).
    Either(usize, usize),
    /// This many or more (the variadic `CONCAT` and `CONCAT_WS`).
    AtLeast(usize),
}

impl Arity {
    /// Whether a call with `n` arguments dispatches.
    pub const fn accepts(self, n: usize) -> bool {
        match self {
            Arity::Exactly(k) => n == k,
            Arity::Either(a, b) => n == a || n == b,
            Arity::AtLeast(k) => n >= k,
        }
    }
}

impl fmt::Display for Arity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arity::Exactly(k) => write!(f, "{k}"),
            Arity::Either(a, b) => write!(f, "{a} or {b}"),
            Arity::AtLeast(k) => write!(f, "at least {k}"),
        }
    }
}

/// An error raised while evaluating an expression against an event. It never allocates: the
/// attribute name is shared with the compiled expression.
///
/// Every variant carries the 1-based column of the operator, function or attribute that raised
/// it.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum EvalError {
    /// The expression read an attribute the event does not have (spec §3.2).
    #[error("the event has no attribute {name:?} (column {column})")]
    MissingAttribute {
        /// The attribute's name.
        name: Arc<str>,
        /// Where the expression reads it.
        column: u32,
    },
    /// A value could not be cast to the type an operator or function needs (spec §3.7), e.g.
    /// `'abc'` to Integer. An implicit Integer-to-Boolean cast is always this error; see the
    /// module docs.
    #[error("cannot cast {from} to {to} (column {column})")]
    Cast {
        /// The value's type.
        from: Type,
        /// The type it was cast to.
        to: Type,
        /// The operator or function that needed the cast.
        column: u32,
    },
    /// An arithmetic operator or `ABS` failed.
    #[error("{fault} (column {column})")]
    Math {
        /// What went wrong.
        fault: MathFault,
        /// The operator or function.
        column: u32,
    },
    /// A built-in function got an argument outside its domain (spec §3.5).
    #[error("{function}(): {fault} (column {column})")]
    Function {
        /// The function's canonical (upper-case) name.
        function: &'static str,
        /// What went wrong.
        fault: FunctionFault,
        /// Where the call starts.
        column: u32,
    },
}

impl EvalError {
    /// The spec's error type for this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            EvalError::MissingAttribute { .. } => ErrorKind::MissingAttribute,
            EvalError::Cast { .. } => ErrorKind::Cast,
            EvalError::Math { .. } => ErrorKind::Math,
            EvalError::Function { .. } => ErrorKind::FunctionEvaluation,
        }
    }

    /// The 1-based column of the operator, function or attribute that raised the error.
    pub fn column(&self) -> u32 {
        match self {
            EvalError::MissingAttribute { column, .. }
            | EvalError::Cast { column, .. }
            | EvalError::Math { column, .. }
            | EvalError::Function { column, .. } => *column,
        }
    }
}

/// Why an arithmetic operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MathFault {
    /// `/` or `%` with a zero divisor; the result is 0.
    DivisionByZero,
    /// The exact result is outside the 32-bit range; the result is saturated to it.
    Overflow,
}

impl fmt::Display for MathFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MathFault::DivisionByZero => "division by zero",
            MathFault::Overflow => "integer overflow",
        })
    }
}

/// Why a built-in function rejected its arguments.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FunctionFault {
    /// `LEFT` or `RIGHT` with a negative character count; the result is the input string.
    NegativeCount,
    /// `SUBSTRING` with `pos > LENGTH(x)` or `pos < -LENGTH(x)`; the result is `""`.
    PositionOutOfRange,
    /// `SUBSTRING` with a negative length; the result is `""`.
    NegativeLength,
}

impl fmt::Display for FunctionFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FunctionFault::NegativeCount => "the character count is negative",
            FunctionFault::PositionOutOfRange => "the position is outside the string",
            FunctionFault::NegativeLength => "the length is negative",
        })
    }
}
