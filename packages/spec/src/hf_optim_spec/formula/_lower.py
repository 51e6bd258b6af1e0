"""Lowering: a folded tree handed node by node to a framework's own arithmetic."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ._float64 import number
from ._tree import Binary, Call, Compare, Const, Logical, Name, Node, ScheduleCall, Select, Unary

__all__ = ["LoweringOps", "lower"]


class LoweringOps(Protocol):
    """What a framework implements to turn a folded tree into its own arithmetic."""

    def constant(self, value: float) -> Any: ...
    def step(self) -> Any: ...
    def binary(self, op: str, a: Any, b: Any) -> Any: ...
    def neg(self, a: Any) -> Any: ...
    def compare(self, op: str, a: Any, b: Any) -> Any: ...
    def logical(self, op: str, a: Any, b: Any) -> Any: ...
    def not_(self, a: Any) -> Any: ...
    def select(self, cond: Any, a: Any, b: Any) -> Any: ...
    def call(self, func: str, args: list[Any]) -> Any: ...
    def schedule(self, schedule: Callable[[Any], Any], arg: Any) -> Any: ...


def lower(tree: Node, ops: LoweringOps) -> Any:
    """Build a folded tree with ``ops`` (post-order; each sub-tree is built once per occurrence)."""
    if isinstance(tree, Const):
        if isinstance(tree.value, bool):
            return ops.compare("==", ops.constant(1.0), ops.constant(1.0 if tree.value else 0.0))
        return ops.constant(number(tree.value))
    if isinstance(tree, Name):
        return ops.step()
    if isinstance(tree, Unary):
        operand = lower(tree.operand, ops)
        if tree.op == "not":
            return ops.not_(operand)
        return ops.neg(operand) if tree.op == "-" else operand
    if isinstance(tree, Binary):
        return ops.binary(tree.op, lower(tree.left, ops), lower(tree.right, ops))
    if isinstance(tree, Compare):
        return ops.compare(tree.op, lower(tree.left, ops), lower(tree.right, ops))
    if isinstance(tree, Logical):
        return ops.logical(tree.op, lower(tree.left, ops), lower(tree.right, ops))
    if isinstance(tree, Select):
        return ops.select(lower(tree.cond, ops), lower(tree.then, ops), lower(tree.other, ops))
    if isinstance(tree, Call):
        return ops.call(tree.func, [lower(arg, ops) for arg in tree.args])
    if isinstance(tree, ScheduleCall):
        return ops.schedule(tree.schedule, lower(tree.arg, ops))
    raise AssertionError(f"unexpected node {tree!r}")  # pragma: no cover
