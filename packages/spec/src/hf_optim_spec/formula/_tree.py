"""The formula tree: immutable node types and the generic ways to walk them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Binary",
    "Call",
    "Compare",
    "Const",
    "FormulaError",
    "Logical",
    "Name",
    "Node",
    "ScheduleCall",
    "Select",
    "Unary",
    "children",
    "names",
    "rebuild",
    "walk",
]

Scalar = float | int | bool | str | None


class FormulaError(ValueError):
    """A formula that is outside the language, refers to an unknown name, or cannot be bound."""


@dataclass(frozen=True)
class Const:
    """A literal, or a sub-expression folded at bind time."""

    value: Scalar


@dataclass(frozen=True)
class Name:
    """A reference to ``step``, ``base_lr``, ``pi``, a parameter or a named value."""

    id: str


@dataclass(frozen=True)
class Unary:
    """``-x``, ``+x`` or ``not x``."""

    op: str
    operand: Node


@dataclass(frozen=True)
class _Operation:
    """A node with an operator symbol and two operands (the shape of Binary, Compare and Logical)."""

    op: str
    left: Node
    right: Node


class Binary(_Operation):
    """``a op b`` for op in ``+ - * / % **``."""


class Compare(_Operation):
    """``a op b`` for op in ``< <= > >= == != is is not``."""


class Logical(_Operation):
    """``a and b`` / ``a or b`` (short-circuit, Python truthiness)."""


@dataclass(frozen=True)
class Select:
    """The piecewise branch ``then if cond else other``; only the chosen branch is evaluated."""

    cond: Node
    then: Node
    other: Node


@dataclass(frozen=True)
class Call:
    """A call of a built-in function (see ``FUNCTIONS``) or of a schedule-typed parameter."""

    func: str
    args: tuple[Node, ...]


@dataclass(frozen=True, eq=False)
class ScheduleCall:
    """After binding: a call of the schedule held by a ``schedule``-typed parameter."""

    schedule: Callable[[Any], Any]
    arg: Node


Node = Const | Name | Unary | Binary | Compare | Logical | Select | Call | ScheduleCall


def children(node: Node) -> tuple[Node, ...]:
    """The direct sub-trees of ``node`` in evaluation order (a bound schedule's own tree is not one)."""
    if isinstance(node, Unary):
        return (node.operand,)
    if isinstance(node, (Binary, Compare, Logical)):
        return (node.left, node.right)
    if isinstance(node, Select):
        return (node.cond, node.then, node.other)
    if isinstance(node, Call):
        return node.args
    if isinstance(node, ScheduleCall):
        return (node.arg,)
    return ()


def walk(node: Node) -> Iterator[Node]:
    """``node`` and every node below it, pre-order."""
    yield node
    for child in children(node):
        yield from walk(child)


def names(node: Node) -> set[str]:
    """Every name a tree refers to (functions included, as ``name()``)."""
    found: set[str] = set()
    for item in walk(node):
        if isinstance(item, Name):
            found.add(item.id)
        elif isinstance(item, Call):
            found.add(f"{item.func}()")
    return found


def rebuild(node: Node, new_children: tuple[Node, ...]) -> Node:
    """A copy of an inner node with other children (in the order of :func:`children`)."""
    if isinstance(node, Unary):
        return Unary(node.op, new_children[0])
    if isinstance(node, (Binary, Compare)):
        return type(node)(node.op, new_children[0], new_children[1])
    if isinstance(node, Call):
        return Call(node.func, new_children)
    if isinstance(node, ScheduleCall):
        return ScheduleCall(node.schedule, new_children[0])
    raise AssertionError(f"unexpected node {node!r}")  # pragma: no cover
