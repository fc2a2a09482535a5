//! The syntax tree the parser produces and the compiler consumes.
//!
//! It records only what was written: names are not resolved and nothing is type-checked, so
//! that every syntax error is reported before any semantic one (`ABC(` is a parse error, not
//! an unknown function).

/// An expression node and the byte offset of the token that defines it: the operator of an
/// operation, the name of a call or attribute, the first character of a literal.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Expr {
    pub kind: ExprKind,
    pub at: usize,
    /// Levels of nodes from this one down to its deepest leaf, this one included.
    pub height: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum ExprKind {
    Bool(bool),
    Int(i32),
    Str(String),
    /// An attribute, its name lower-cased.
    Attribute(String),
    /// `EXISTS name`, the name lower-cased.
    Exists(String),
    Not(Box<Expr>),
    Negate(Box<Expr>),
    Binary(BinaryOp, Box<Expr>, Box<Expr>),
    /// A left-associative chain of one logical operator: `a AND b AND c` is one node with three
    /// operands. `a AND (b AND c)` is not flattened.
    Logic(LogicOp, Vec<Expr>),
    Like {
        negated: bool,
        operand: Box<Expr>,
        pattern: String,
    },
    In {
        negated: bool,
        operand: Box<Expr>,
        set: Vec<Expr>,
    },
    /// A function call, the name as written.
    Call {
        name: String,
        args: Vec<Expr>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BinaryOp {
    Arithmetic(ArithmeticOp),
    Ordering(OrderingOp),
    Eq,
    /// `!=` and `<>`.
    NotEq,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ArithmeticOp {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
}

/// `<`, `<=`, `>`, `>=`: defined for Integers only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum OrderingOp {
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum LogicOp {
    And,
    Or,
    Xor,
}

impl Expr {
    pub fn leaf(kind: ExprKind, at: usize) -> Expr {
        Expr {
            kind,
            at,
            height: 1,
        }
    }
}

impl ExprKind {
    /// The height of the highest child node; 0 for a leaf.
    pub fn child_height(&self) -> usize {
        let one = |e: &Expr| e.height;
        let many = |es: &[Expr]| es.iter().map(|e| e.height).max().unwrap_or(0);
        match self {
            ExprKind::Bool(_)
            | ExprKind::Int(_)
            | ExprKind::Str(_)
            | ExprKind::Attribute(_)
            | ExprKind::Exists(_) => 0,
            ExprKind::Not(e) | ExprKind::Negate(e) | ExprKind::Like { operand: e, .. } => one(e),
            ExprKind::Binary(_, l, r) => one(l).max(one(r)),
            ExprKind::Logic(_, es) | ExprKind::Call { args: es, .. } => many(es),
            ExprKind::In { operand, set, .. } => one(operand).max(many(set)),
        }
    }
}
