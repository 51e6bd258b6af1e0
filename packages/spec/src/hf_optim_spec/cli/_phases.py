"""Phases of a closed-form curve: where the branch a step takes through the folded formula changes."""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .. import formula as fm
from ._curves import Curve, sample_steps
from ._values import format_number, show_value

__all__ = ["Phase", "phases", "to_text"]


def _trace(node: fm.Node, step: float, out: list[tuple[Any, ...]]) -> None:
    """Record the branches a step takes through a folded tree (selects and min/max winners)."""
    if isinstance(node, fm.Select):
        taken = bool(fm.evaluate(node.cond, step))
        out.append(("select", id(node), taken))
        _trace(node.cond, step, out)
        _trace(node.then if taken else node.other, step, out)
        return
    if isinstance(node, fm.Call) and node.func in ("min", "max"):
        values = [fm.evaluate(arg, step) for arg in node.args]
        best = min(values) if node.func == "min" else max(values)
        winners = [i for i, v in enumerate(values) if v == best or (math.isnan(v) and math.isnan(best))]
        # on a tie prefer a step-dependent argument, so a curve that touches its clamp is one phase
        varying = [i for i in winners if not isinstance(node.args[i], fm.Const)]
        out.append((node.func, id(node), (varying or winners)[0]))
    if isinstance(node, fm.ScheduleCall) and isinstance(node.schedule, fm.Bound):
        inner = fm.evaluate(node.arg, step)
        out.append(("schedule", id(node)))
        _trace(node.schedule.tree, float(inner), out)
    for child in fm.children(node):
        if not isinstance(node, fm.Select):
            _trace(child, step, out)


def _signature(c: Curve, step: int) -> tuple[Any, ...]:
    if not isinstance(c.evaluate, fm.Bound):
        return ()  # pragma: no cover - only closed forms are split into phases
    out: list[tuple[Any, ...]] = []
    _trace(c.evaluate.tree, float(step), out)
    return tuple(out)


@dataclass
class Phase:
    """A run of steps that take the same branches through the formula."""

    start: int
    end: int
    conditions: list[str]


def phases(c: Curve, horizon: int) -> list[Phase]:
    """Split 0..horizon where the branch taken through the formula changes (exact step, by bisection)."""
    steps = sample_steps(horizon)
    signatures = [_signature(c, s) for s in steps]
    starts = [0]
    for (a, sig_a), (b, sig_b) in zip(zip(steps, signatures), zip(steps[1:], signatures[1:])):
        if sig_a == sig_b:
            continue
        low, high = a, b  # signature(low) == sig_a, signature(high) != sig_a
        while high - low > 1:
            mid = (low + high) // 2
            if _signature(c, mid) == sig_a:
                low = mid
            else:
                high = mid
        starts.append(high)
    bounds = [*starts, horizon + 1]
    return [Phase(start, stop - 1, _conditions(c, _signature(c, start))) for start, stop in itertools.pairwise(bounds)]


def _conditions(c: Curve, signature: tuple[Any, ...]) -> list[str]:
    """The branch conditions of one phase; comparisons of ``step`` with numbers merge into a range."""
    if not isinstance(c.evaluate, fm.Bound):
        return []  # pragma: no cover - only closed forms are split into phases
    selects = {id(n): n for n in _walk_into_schedules(c.evaluate.tree) if isinstance(n, fm.Select)}
    low: tuple[float, str] | None = None
    high: tuple[float, str] | None = None
    texts: list[str] = []
    for entry in signature:
        if entry[0] != "select" or entry[1] not in selects:
            continue
        cond = selects[entry[1]].cond
        cond = cond if entry[2] else _negate(cond)
        bound = _step_bound(cond)
        if bound is None:
            text = to_text(cond)
            if text not in texts:
                texts.append(text)
            continue
        op, value = bound
        if op in (">", ">="):
            if low is None or value > low[0] or (value == low[0] and op == ">"):
                low = (value, op)
        elif high is None or value < high[0] or (value == high[0] and op == "<"):
            high = (value, op)
    if low is not None and high is not None:
        left = "<" if low[1] == ">" else "<="
        texts.insert(0, f"{format_number(low[0])} {left} step {high[1]} {format_number(high[0])}")
    elif low is not None:
        texts.insert(0, f"step {low[1]} {format_number(low[0])}")
    elif high is not None:
        texts.insert(0, f"step {high[1]} {format_number(high[0])}")
    return texts


_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<="}


def _step_bound(node: fm.Node) -> tuple[str, float] | None:
    """``step OP number`` (either side) as (OP, number) with step on the left, else None."""
    if not isinstance(node, fm.Compare) or node.op not in _FLIPPED:
        return None
    if isinstance(node.left, fm.Name) and isinstance(node.right, fm.Const) and isinstance(node.right.value, float):
        return node.op, node.right.value
    if isinstance(node.right, fm.Name) and isinstance(node.left, fm.Const) and isinstance(node.left.value, float):
        return _FLIPPED[node.op], node.left.value
    return None


def _walk_into_schedules(node: fm.Node) -> Iterator[fm.Node]:
    """Every node of a folded tree, the trees of the bound schedules it calls included."""
    yield node
    for child in fm.children(node):
        yield from _walk_into_schedules(child)
    if isinstance(node, fm.ScheduleCall) and isinstance(node.schedule, fm.Bound):
        yield from _walk_into_schedules(node.schedule.tree)


_NEGATED = {"<": ">=", "<=": ">", ">": "<=", ">=": "<", "==": "!=", "!=": "=="}


def _negate(node: fm.Node) -> fm.Node:
    if isinstance(node, fm.Compare) and node.op in _NEGATED:
        return fm.Compare(_NEGATED[node.op], node.left, node.right)
    return fm.Unary("not", node)


_PRECEDENCE = {"or": 1, "and": 2, "not": 3, "cmp": 4, "+": 5, "-": 5, "*": 6, "/": 6, "%": 6, "neg": 7, "**": 8}


def to_text(node: fm.Node, parent: int = 0) -> str:
    """A folded tree as a short expression (numbers with 6 significant digits)."""
    if isinstance(node, fm.Const):
        value = node.value
        return show_value(value) if not isinstance(value, float) else f"{value:.6g}"
    if isinstance(node, fm.Name):
        return node.id
    if isinstance(node, fm.Unary):
        if node.op == "not":
            text, own = f"not {to_text(node.operand, 3)}", 3
        else:
            text, own = f"{node.op}{to_text(node.operand, 7)}", 7
    elif isinstance(node, fm.Compare):
        own = 4
        text = f"{to_text(node.left, 5)} {node.op} {to_text(node.right, 5)}"
    elif isinstance(node, (fm.Binary, fm.Logical)):
        own = _PRECEDENCE[node.op]
        text = f"{to_text(node.left, own)} {node.op} {to_text(node.right, own + 1)}"
    elif isinstance(node, fm.Select):
        own = 0
        text = f"{to_text(node.then, 1)} if {to_text(node.cond, 1)} else {to_text(node.other, 0)}"
    elif isinstance(node, fm.Call):
        return f"{node.func}({', '.join(to_text(a) for a in node.args)})"
    elif isinstance(node, fm.ScheduleCall):
        return f"schedule({to_text(node.arg)})"
    else:  # pragma: no cover
        return repr(node)
    return f"({text})" if own < parent else text
