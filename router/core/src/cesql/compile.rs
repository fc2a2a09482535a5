//! The compiler: a syntax tree to the [`Node`] tree the evaluator walks.
//!
//! Compiling resolves function names and checks arities, compiles `LIKE` patterns, gives every
//! node its static type (an attribute's type is only known per event), and folds constants:
//! a node whose operands are all constants is evaluated once, here, and replaced by its value
//! if that evaluation raised no error. An erroring constant such as `5 / 0` is kept, so that
//! every evaluation reports its error as the spec requires.

use std::sync::Arc;

use super::ast::{ArithmeticOp, BinaryOp, Expr, ExprKind, LogicOp, OrderingOp};
use super::error::CompileError;
use super::eval;
use super::functions::Function;
use super::lexer::Columns;
use super::like::LikePattern;
use super::value::{Cast, Type, Value, cast, to_bool};
use crate::event::{AttrValue, Attributes, KnownAttr};

/// A compiled expression node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Node {
    Const(Value<'static>),
    /// An attribute read; its type is the attribute value's.
    Attribute {
        name: Arc<str>,
        column: u32,
    },
    /// `EXISTS name` for an optional attribute (for a required one it is the constant `true`).
    Exists {
        name: Box<str>,
    },
    Not {
        operand: Box<Node>,
        column: u32,
    },
    Negate {
        operand: Box<Node>,
        column: u32,
    },
    Arithmetic {
        op: ArithmeticOp,
        lhs: Box<Node>,
        rhs: Box<Node>,
        column: u32,
    },
    /// `<`, `<=`, `>`, `>=`: Integer × Integer only.
    Ordering {
        op: OrderingOp,
        lhs: Box<Node>,
        rhs: Box<Node>,
        column: u32,
    },
    /// `=`; `!=` and `<>` compile to `Not(Equal)`, which is their definition (spec §3.4.2).
    Equal {
        lhs: Box<Node>,
        rhs: Box<Node>,
        column: u32,
    },
    /// A left-associative chain of one logical operator, two or more operands.
    Logic {
        op: LogicOp,
        operands: Box<[Node]>,
        column: u32,
    },
    /// `LIKE`; `NOT LIKE` compiles to `Not(Like)`.
    Like {
        operand: Box<Node>,
        pattern: LikePattern,
    },
    /// `IN`; `NOT IN` compiles to `Not(In)`.
    In {
        operand: Box<Node>,
        set: Box<[Node]>,
        column: u32,
    },
    Call {
        function: Function,
        args: Box<[Node]>,
        column: u32,
    },
}

impl Node {
    /// The node's static type; `None` for an attribute, whose type depends on the event.
    pub fn static_type(&self) -> Option<Type> {
        match self {
            Node::Const(v) => Some(v.value_type()),
            Node::Attribute { .. } => None,
            Node::Negate { .. } | Node::Arithmetic { .. } => Some(Type::Integer),
            Node::Call { function, .. } => Some(function.return_type()),
            Node::Exists { .. }
            | Node::Not { .. }
            | Node::Ordering { .. }
            | Node::Equal { .. }
            | Node::Logic { .. }
            | Node::Like { .. }
            | Node::In { .. } => Some(Type::Boolean),
        }
    }

    /// The value the node returns when one of its operands raised an error: the zero value of
    /// its type, Boolean when the type is unknown (spec §3.2).
    pub fn zero(&self) -> Value<'static> {
        self.static_type().unwrap_or(Type::Boolean).zero()
    }
}

/// Compiles a syntax tree. `fold` turns constant folding on; it is off only in tests that
/// check folding does not change results.
pub(super) fn compile(expr: Expr, src: &str, fold: bool) -> Result<Node, CompileError> {
    let columns = Columns::new(src);
    Compiler { columns, fold }.node(expr)
}

struct Compiler {
    columns: Columns,
    fold: bool,
}

impl Compiler {
    fn node(&self, expr: Expr) -> Result<Node, CompileError> {
        let column = self.columns.at(expr.at);
        let node = match expr.kind {
            ExprKind::Bool(b) => Node::Const(Value::Bool(b)),
            ExprKind::Int(i) => Node::Const(Value::Int(i)),
            ExprKind::Str(s) => Node::Const(Value::Str(s.into())),
            ExprKind::Attribute(name) => Node::Attribute {
                name: name.into(),
                column,
            },
            ExprKind::Exists(name) => match KnownAttr::from_name(&name) {
                // Spec §3.4.4: EXISTS is always true for a REQUIRED attribute, because the
                // input event is assumed valid.
                Some(known) if known.is_required() => Node::Const(Value::Bool(true)),
                _ => Node::Exists { name: name.into() },
            },
            ExprKind::Not(operand) => Node::Not {
                operand: self.operand(*operand, Type::Boolean)?,
                column,
            },
            ExprKind::Negate(operand) => Node::Negate {
                operand: self.operand(*operand, Type::Integer)?,
                column,
            },
            ExprKind::Binary(op, lhs, rhs) => self.binary(op, *lhs, *rhs, column)?,
            ExprKind::Logic(op, operands) => Node::Logic {
                op,
                operands: operands
                    .into_iter()
                    .map(|e| self.operand(e, Type::Boolean).map(|b| *b))
                    .collect::<Result<_, _>>()?,
                column,
            },
            ExprKind::Like {
                negated,
                operand,
                pattern,
            } => {
                let like = Node::Like {
                    operand: Box::new(self.node(*operand)?),
                    pattern: LikePattern::new(&pattern),
                };
                self.negate_if(negated, like, column)
            }
            ExprKind::In {
                negated,
                operand,
                set,
            } => {
                let is_in = Node::In {
                    operand: Box::new(self.node(*operand)?),
                    set: set
                        .into_iter()
                        .map(|e| self.node(e))
                        .collect::<Result<_, _>>()?,
                    column,
                };
                self.negate_if(negated, is_in, column)
            }
            ExprKind::Call { name, args } => self.call(&name, args, column)?,
        };
        Ok(self.fold(node))
    }

    fn binary(
        &self,
        op: BinaryOp,
        lhs: Expr,
        rhs: Expr,
        column: u32,
    ) -> Result<Node, CompileError> {
        Ok(match op {
            BinaryOp::Arithmetic(op) => Node::Arithmetic {
                op,
                lhs: self.operand(lhs, Type::Integer)?,
                rhs: self.operand(rhs, Type::Integer)?,
                column,
            },
            BinaryOp::Ordering(op) => Node::Ordering {
                op,
                lhs: self.operand(lhs, Type::Integer)?,
                rhs: self.operand(rhs, Type::Integer)?,
                column,
            },
            BinaryOp::Eq | BinaryOp::NotEq => {
                let equal = Node::Equal {
                    lhs: Box::new(self.node(lhs)?),
                    rhs: Box::new(self.node(rhs)?),
                    column,
                };
                self.negate_if(op == BinaryOp::NotEq, equal, column)
            }
        })
    }

    fn call(&self, name: &str, args: Vec<Expr>, column: u32) -> Result<Node, CompileError> {
        let function = Function::from_name(name).ok_or_else(|| CompileError::UnknownFunction {
            name: name.to_owned(),
            column,
        })?;
        if !function.arity().accepts(args.len()) {
            return Err(CompileError::WrongArity {
                function: function.name(),
                expected: function.arity(),
                given: args.len(),
                column,
            });
        }
        let args = args
            .into_iter()
            .enumerate()
            .map(|(i, arg)| match function.parameter(i) {
                Some(target) => self.operand(arg, target).map(|b| *b),
                None => self.node(arg),
            })
            .collect::<Result<_, _>>()?;
        Ok(Node::Call {
            function,
            args,
            column,
        })
    }

    /// Compiles an operand that the operator implicitly casts to `target`. A constant operand
    /// is cast here, once, if that cast succeeds (a failing one is left for evaluation to
    /// report).
    fn operand(&self, expr: Expr, target: Type) -> Result<Box<Node>, CompileError> {
        let node = self.node(expr)?;
        Ok(Box::new(match node {
            Node::Const(v) if self.fold => match cast(v.clone(), target, Cast::Implicit) {
                Ok(cast) => Node::Const(cast.into_owned()),
                Err(_) => Node::Const(v),
            },
            node => node,
        }))
    }

    fn negate_if(&self, negate: bool, node: Node, column: u32) -> Node {
        if negate {
            self.fold(Node::Not {
                operand: Box::new(node),
                column,
            })
        } else {
            node
        }
    }

    /// Replaces `node` by its value if it is constant and evaluates without error.
    fn fold(&self, node: Node) -> Node {
        if !self.fold || !is_constant(&node) {
            return node;
        }
        let evaluation = eval::evaluate(&node, &NoAttributes);
        match evaluation.error {
            None => Node::Const(evaluation.value.into_owned()),
            Some(_) => node,
        }
    }
}

/// Whether `node` evaluates to the same value for every event: all its operands are constants,
/// or it is an `AND`/`OR` chain that a constant first operand short-circuits.
fn is_constant(node: &Node) -> bool {
    let constant = |n: &Node| matches!(n, Node::Const(_));
    match node {
        Node::Const(_) | Node::Attribute { .. } | Node::Exists { .. } => false,
        Node::Not { operand, .. } | Node::Negate { operand, .. } | Node::Like { operand, .. } => {
            constant(operand)
        }
        Node::Arithmetic { lhs, rhs, .. }
        | Node::Ordering { lhs, rhs, .. }
        | Node::Equal { lhs, rhs, .. } => constant(lhs) && constant(rhs),
        Node::Logic { op, operands, .. } => {
            let short_circuits = match (op, operands.first()) {
                (LogicOp::And, Some(Node::Const(v))) => to_bool(v, Cast::Implicit) == Ok(false),
                (LogicOp::Or, Some(Node::Const(v))) => to_bool(v, Cast::Implicit) == Ok(true),
                _ => false,
            };
            short_circuits || operands.iter().all(constant)
        }
        Node::In { operand, set, .. } => constant(operand) && set.iter().all(constant),
        Node::Call { args, .. } => args.iter().all(constant),
    }
}

/// An event without attributes, for evaluating constant nodes.
struct NoAttributes;

impl Attributes for NoAttributes {
    fn attribute(&self, _name: &str) -> Option<AttrValue<'_>> {
        None
    }
}
