//! The evaluator: walks a compiled [`Node`] tree over an event.
//!
//! Error semantics (see the module docs of [`super`] for why):
//!
//! - An operator or function whose *operand* raised an error stops, without evaluating its
//!   remaining operands, and returns the zero value of its own type with that error. So the
//!   error travels to the root, and the root returns its type's zero value: the spec's
//!   fail-fast mode (§4.1), which it recommends for filters (§1.2).
//! - An error the operator or function raises *itself* (a failed implicit cast of an operand,
//!   division by zero, `ABS` overflow, a function argument out of range) comes with the value
//!   the spec defines for it; a failed cast yields the target type's zero value and the
//!   operator goes on with it. That value is the result only when the node is the root.
//!
//! Nothing here allocates, except functions that build a new string.

use super::Evaluation;
use super::ast::{ArithmeticOp, LogicOp, OrderingOp};
use super::compile::Node;
use super::error::{EvalError, MathFault};
use super::functions::{self, Fault, Function};
use super::value::{Cast, Type, Value, cast, equal_as_right, to_bool, to_int, with_str};
use crate::event::Attributes;

/// Evaluates `node` with the spec's semantics for it.
pub(super) fn evaluate<'a, A: Attributes + ?Sized>(node: &'a Node, event: &'a A) -> Evaluation<'a> {
    match apply(node, event) {
        Ok(evaluation) => evaluation,
        Err(error) => Evaluation {
            value: node.zero(),
            error: Some(error),
        },
    }
}

/// Evaluates an operand: its value, or the error it raised.
fn operand<'a, A: Attributes + ?Sized>(
    node: &'a Node,
    event: &'a A,
) -> Result<Value<'a>, EvalError> {
    let Evaluation { value, error } = evaluate(node, event);
    match error {
        None => Ok(value),
        Some(error) => Err(error),
    }
}

/// Applies `node` to its operands. `Err` means an operand failed; `Ok` may still carry an
/// error the node raised itself.
fn apply<'a, A: Attributes + ?Sized>(
    node: &'a Node,
    event: &'a A,
) -> Result<Evaluation<'a>, EvalError> {
    Ok(match node {
        Node::Const(v) => ok(v.borrowed()),
        Node::Attribute { name, column } => match event.attribute(name) {
            Some(v) => ok(v.into()),
            None => {
                return Err(EvalError::MissingAttribute {
                    name: name.clone(),
                    column: *column,
                });
            }
        },
        Node::Exists { name } => ok(Value::Bool(event.attribute(name).is_some())),
        Node::Not { operand: x, column } => {
            let (b, error) = boolean(operand(x, event)?, *column);
            Evaluation {
                value: Value::Bool(!b),
                error,
            }
        }
        Node::Negate { operand: x, column } => {
            let (i, error) = integer(operand(x, event)?, *column);
            let (value, fault) = match i.checked_neg() {
                Some(n) => (n, None),
                None => (i32::MAX, Some(MathFault::Overflow)),
            };
            Evaluation {
                value: Value::Int(value),
                error: error.or(math(fault, *column)),
            }
        }
        Node::Arithmetic {
            op,
            lhs,
            rhs,
            column,
        } => {
            let (lhs, rhs) = (operand(lhs, event)?, operand(rhs, event)?);
            let (a, lhs_error) = integer(lhs, *column);
            let (b, rhs_error) = integer(rhs, *column);
            let (value, fault) = arithmetic(*op, a, b);
            Evaluation {
                value: Value::Int(value),
                error: lhs_error.or(rhs_error).or(math(fault, *column)),
            }
        }
        Node::Ordering {
            op,
            lhs,
            rhs,
            column,
        } => {
            let (lhs, rhs) = (operand(lhs, event)?, operand(rhs, event)?);
            let (a, lhs_error) = integer(lhs, *column);
            let (b, rhs_error) = integer(rhs, *column);
            let value = match op {
                OrderingOp::Lt => a < b,
                OrderingOp::Le => a <= b,
                OrderingOp::Gt => a > b,
                OrderingOp::Ge => a >= b,
            };
            Evaluation {
                value: Value::Bool(value),
                error: lhs_error.or(rhs_error),
            }
        }
        Node::Equal { lhs, rhs, column } => {
            let (lhs, rhs) = (operand(lhs, event)?, operand(rhs, event)?);
            let (equal, failed) = equal_as_right(&lhs, &rhs);
            Evaluation {
                value: Value::Bool(equal),
                error: failed.map(|from| EvalError::Cast {
                    from,
                    to: rhs.value_type(),
                    column: *column,
                }),
            }
        }
        Node::Logic {
            op,
            operands,
            column,
        } => logic(*op, operands, *column, event)?,
        Node::Like {
            operand: x,
            pattern,
        } => {
            let text = operand(x, event)?;
            ok(Value::Bool(with_str(&text, |s| pattern.matches(s))))
        }
        Node::In {
            operand: x,
            set,
            column,
        } => {
            // Spec §3.4.5: each element is cast to the type of `x` and compared as by `=`.
            // Elements are evaluated left to right and the first match ends the search, as in
            // the chain of `OR`s that `IN` abbreviates.
            let x = operand(x, event)?;
            let mut error = None;
            for element in set.iter() {
                let element = operand(element, event)?;
                let (equal, failed) = equal_as_right(&element, &x);
                error = error.or(failed.map(|from| EvalError::Cast {
                    from,
                    to: x.value_type(),
                    column: *column,
                }));
                if equal {
                    return Ok(Evaluation {
                        value: Value::Bool(true),
                        error,
                    });
                }
            }
            Evaluation {
                value: Value::Bool(false),
                error,
            }
        }
        Node::Call {
            function,
            args,
            column,
        } => call(*function, args, *column, event)?,
    })
}

/// A chain `o1 op o2 op … op on`, with exactly the results of the left-nested binary
/// operations `((o1 op o2) op …) op on`, including which errors poison which level.
fn logic<'a, A: Attributes + ?Sized>(
    op: LogicOp,
    operands: &'a [Node],
    column: u32,
    event: &'a A,
) -> Result<Evaluation<'a>, EvalError> {
    let Some((first, rest)) = operands.split_first() else {
        return Ok(ok(Value::Bool(false)));
    };
    let (mut acc, mut error) = boolean(operand(first, event)?, column);
    for (level, node) in rest.iter().enumerate() {
        // From the second operator on, the left operand is the chain so far; an error it
        // raised is an operand error for this level.
        if level > 0
            && let Some(error) = error
        {
            return Err(error);
        }
        // Short-circuit (spec §3.4.2): the right operand is not evaluated.
        match (op, acc) {
            (LogicOp::And, false) | (LogicOp::Or, true) => {
                return Ok(Evaluation {
                    value: Value::Bool(acc),
                    error,
                });
            }
            _ => {}
        }
        let (b, rhs_error) = boolean(operand(node, event)?, column);
        acc = match op {
            // The left operand was true (AND) or false (OR), so the result is the right one.
            LogicOp::And | LogicOp::Or => b,
            LogicOp::Xor => acc ^ b,
        };
        error = error.or(rhs_error);
    }
    Ok(Evaluation {
        value: Value::Bool(acc),
        error,
    })
}

fn call<'a, A: Attributes + ?Sized>(
    function: Function,
    args: &'a [Node],
    column: u32,
    event: &'a A,
) -> Result<Evaluation<'a>, EvalError> {
    let operands = |args: &'a [Node]| args.iter().map(move |a| operand(a, event));
    match function {
        Function::Concat => {
            let s = functions::concat(None, operands(args))?;
            return Ok(ok(Value::Str(s)));
        }
        Function::ConcatWs => {
            let Some((delimiter, parts)) = args.split_first() else {
                return Ok(ok(function.return_type().zero()));
            };
            let delimiter = operand(delimiter, event)?;
            let s = with_str(&delimiter, |d| functions::concat(Some(d), operands(parts)))?;
            return Ok(ok(Value::Str(s)));
        }
        _ => {}
    }
    // Fixed arity, at most three arguments (checked when compiling).
    let mut values = [Value::Bool(false), Value::Bool(false), Value::Bool(false)];
    let count = args.len().min(values.len());
    let mut error = None;
    for (index, (arg, slot)) in args.iter().zip(values.iter_mut()).enumerate() {
        let value = operand(arg, event)?;
        *slot = match function.parameter(index) {
            // Functions read String parameters through `with_str`/`into_str`, which cast
            // lazily: no string is built for, say, `LENGTH(myint)`.
            None | Some(Type::String) => value,
            Some(target) => match cast(value, target, Cast::Implicit) {
                Ok(value) => value,
                Err(from) => {
                    error = error.or(Some(EvalError::Cast {
                        from,
                        to: target,
                        column,
                    }));
                    target.zero()
                }
            },
        };
    }
    let (value, fault) = functions::apply(function, &mut values[..count]);
    let fault = fault.map(|fault| match fault {
        Fault::Math(fault) => EvalError::Math { fault, column },
        Fault::Function(fault) => EvalError::Function {
            function: function.name(),
            fault,
            column,
        },
        Fault::Cast { from, to } => EvalError::Cast { from, to, column },
    });
    Ok(Evaluation {
        value,
        error: error.or(fault),
    })
}

fn ok(value: Value<'_>) -> Evaluation<'_> {
    Evaluation { value, error: None }
}

/// The implicit cast of an operand to Boolean.
fn boolean(value: Value<'_>, column: u32) -> (bool, Option<EvalError>) {
    match to_bool(&value, Cast::Implicit) {
        Ok(b) => (b, None),
        Err(from) => (
            false,
            Some(EvalError::Cast {
                from,
                to: Type::Boolean,
                column,
            }),
        ),
    }
}

/// The implicit cast of an operand to Integer.
fn integer(value: Value<'_>, column: u32) -> (i32, Option<EvalError>) {
    match to_int(&value) {
        Ok(i) => (i, None),
        Err(from) => (
            0,
            Some(EvalError::Cast {
                from,
                to: Type::Integer,
                column,
            }),
        ),
    }
}

fn math(fault: Option<MathFault>, column: u32) -> Option<EvalError> {
    fault.map(|fault| EvalError::Math { fault, column })
}

/// Integer arithmetic. Division truncates toward zero and the remainder takes the sign of the
/// dividend (spec §3.4.2). The spec defines overflow only for `ABS`; every overflow here does
/// as `ABS` does: the result saturates to the 32-bit range, with a _MathError_.
fn arithmetic(op: ArithmeticOp, a: i32, b: i32) -> (i32, Option<MathFault>) {
    let checked = match op {
        ArithmeticOp::Add => a.checked_add(b).ok_or(a.saturating_add(b)),
        ArithmeticOp::Sub => a.checked_sub(b).ok_or(a.saturating_sub(b)),
        ArithmeticOp::Mul => a.checked_mul(b).ok_or(a.saturating_mul(b)),
        ArithmeticOp::Div | ArithmeticOp::Mod if b == 0 => {
            return (0, Some(MathFault::DivisionByZero));
        }
        // Only i32::MIN / -1 overflows; its exact result is 2^31.
        ArithmeticOp::Div => a.checked_div(b).ok_or(i32::MAX),
        // i32::MIN % -1 is 0 exactly; only the machine instruction overflows.
        ArithmeticOp::Mod => Ok(a.wrapping_rem(b)),
    };
    match checked {
        Ok(v) => (v, None),
        Err(saturated) => (saturated, Some(MathFault::Overflow)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_rules() {
        use ArithmeticOp::*;
        assert_eq!(arithmetic(Div, 5, 3), (1, None));
        assert_eq!(arithmetic(Div, -5, 3), (-1, None));
        assert_eq!(arithmetic(Mod, 5, 2), (1, None));
        assert_eq!(arithmetic(Mod, -5, 3), (-2, None));
        assert_eq!(arithmetic(Mod, 5, -3), (2, None));
        assert_eq!(arithmetic(Div, 5, 0), (0, Some(MathFault::DivisionByZero)));
        assert_eq!(arithmetic(Mod, 5, 0), (0, Some(MathFault::DivisionByZero)));
        assert_eq!(arithmetic(Mod, i32::MIN, -1), (0, None));
        let overflow = Some(MathFault::Overflow);
        assert_eq!(arithmetic(Div, i32::MIN, -1), (i32::MAX, overflow));
        assert_eq!(arithmetic(Add, i32::MAX, 1), (i32::MAX, overflow));
        assert_eq!(arithmetic(Sub, i32::MIN, 1), (i32::MIN, overflow));
        assert_eq!(arithmetic(Mul, i32::MIN, 2), (i32::MIN, overflow));
        assert_eq!(arithmetic(Mul, i32::MIN, -1), (i32::MAX, overflow));
        assert_eq!(arithmetic(Add, i32::MAX, i32::MIN), (-1, None));
    }
}
