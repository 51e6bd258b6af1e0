"""The float64 meaning of a formula: IEEE arithmetic that never raises, and the evaluator of folded trees."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from ._tree import Binary, Call, Compare, Const, FormulaError, Logical, Name, Node, Scalar, ScheduleCall, Select, Unary

__all__ = ["BINARY_OPERATORS", "COMPARISONS", "FUNCTIONS", "Bound", "evaluate", "number"]


def _div(a: float, b: float) -> float:
    if b == 0.0:
        if a == 0.0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    return a / b


def _mod(a: float, b: float) -> float:
    if b == 0.0 or math.isinf(a):
        return math.nan
    return a % b  # floor modulo, as Python's float % (transformers' hard restarts use it)


def _pow(a: float, b: float) -> float:
    try:
        result = a**b
    except OverflowError:
        return math.inf
    except ZeroDivisionError:
        return math.inf
    if isinstance(result, complex):
        return math.nan
    return float(result)


def _sqrt(x: float) -> float:
    return math.sqrt(x) if x >= 0.0 else math.nan


def _log(x: float) -> float:
    if x > 0.0:
        return math.log(x)
    return -math.inf if x == 0.0 else math.nan


def _exp(x: float) -> float:
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


FUNCTIONS: Mapping[str, tuple[int | None, Callable[..., float]]] = {
    # name: (arity or None for "two or more", float64 implementation)
    "min": (None, lambda *xs: float(min(xs))),
    "max": (None, lambda *xs: float(max(xs))),
    "abs": (1, lambda x: float(abs(x))),
    "floor": (1, lambda x: float(math.floor(x)) if math.isfinite(x) else x),
    "sqrt": (1, _sqrt),
    "cos": (1, lambda x: math.cos(x) if math.isfinite(x) else math.nan),
    "sin": (1, lambda x: math.sin(x) if math.isfinite(x) else math.nan),
    "exp": (1, _exp),
    "log": (1, _log),
}
"""The built-in functions of the language, with their float64 reference implementations."""

BINARY_OPERATORS: Mapping[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": _div,
    "%": _mod,
    "**": _pow,
}
"""The float64 implementation of each arithmetic operator (``x / 0`` and ``0 ** -1`` give inf or nan)."""

COMPARISONS: Mapping[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "is": lambda a, b: a is b,
    "is not": lambda a, b: a is not b,
}
"""The implementation of each comparison operator."""


def number(value: Scalar) -> float:
    """``value`` as a float; strings and None have no arithmetic in the language."""
    if value is None or isinstance(value, str):
        raise FormulaError(f"arithmetic on {value!r} is not defined in the formula language")
    return float(value)


def evaluate(node: Node, step: float | None) -> Any:
    """Evaluate a folded tree at ``step`` (None when the tree does not use it) with float64 semantics."""
    if isinstance(node, Const):
        return node.value
    if isinstance(node, Name):
        if step is None:
            raise FormulaError("`step` is not available in a parameter-only expression")
        return step
    if isinstance(node, Unary):
        value = evaluate(node.operand, step)
        if node.op == "not":
            return not value
        return -number(value) if node.op == "-" else number(value)
    if isinstance(node, Binary):
        return BINARY_OPERATORS[node.op](number(evaluate(node.left, step)), number(evaluate(node.right, step)))
    if isinstance(node, Compare):
        left, right = evaluate(node.left, step), evaluate(node.right, step)
        if node.op not in ("==", "!=", "is", "is not"):
            left, right = number(left), number(right)
        return COMPARISONS[node.op](left, right)
    if isinstance(node, Logical):
        left = evaluate(node.left, step)
        if node.op == "and":
            return evaluate(node.right, step) if left else left
        return left if left else evaluate(node.right, step)
    if isinstance(node, Select):
        return evaluate(node.then if evaluate(node.cond, step) else node.other, step)
    if isinstance(node, Call):
        return FUNCTIONS[node.func][1](*(number(evaluate(arg, step)) for arg in node.args))
    if isinstance(node, ScheduleCall):
        return float(node.schedule(number(evaluate(node.arg, step))))
    raise AssertionError(f"unexpected node {node!r}")  # pragma: no cover


class Bound:
    """A bound schedule: the float64 reference of one parameter set.

    ``bound(step)`` returns the formula's value at ``step`` as a Python float. ``bound.tree`` is
    the folded tree (free name ``step`` only) that ``lower`` hands to a framework.
    """

    __slots__ = ("tree",)

    def __init__(self, tree: Node) -> None:
        self.tree = tree

    def __call__(self, step: float) -> float:
        return float(evaluate(self.tree, float(step)))

    def __repr__(self) -> str:
        return f"Bound({self.tree!r})"
