"""Programs: a spec's named values and result, checked against its parameters, bound and folded."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from ._float64 import FUNCTIONS, Bound, evaluate
from ._parse import parse
from ._tree import (
    Call,
    Const,
    FormulaError,
    Logical,
    Name,
    Node,
    Scalar,
    ScheduleCall,
    Select,
    children,
    names,
    rebuild,
)

__all__ = ["RESERVED", "Program", "evaluate_constant"]

RESERVED = frozenset({"step", "base_lr", "pi"})
"""Names every formula may use: the integer step, the optimizer's default lr, and pi."""


class Program:
    """A schedule formula: ordered named values and a result, checked against its parameters.

    Args:
      values: ``{name: expression}`` in order; each may use the names before it.
      result: the expression whose value is the schedule's output.
      parameters: ``{name: type}`` of the spec's parameters (type ``"schedule"`` makes the parameter
        callable inside the formula).
      where: a label used in error messages (the spec id).

    Raises:
      FormulaError: an expression does not parse, uses an unknown name or function, calls a
        function with the wrong number of arguments, or a value shadows another name.
    """

    def __init__(
        self,
        values: Mapping[str, str],
        result: str,
        parameters: Mapping[str, str],
        *,
        where: str = "formula",
    ) -> None:
        self.where = where
        self.parameters = dict(parameters)
        self.schedule_parameters = frozenset(n for n, t in parameters.items() if t == "schedule")
        known = set(RESERVED) | (set(parameters) - self.schedule_parameters)
        self.values: dict[str, Node] = {}
        for name, text in values.items():
            if name in known or name in self.schedule_parameters:
                raise FormulaError(f"{where}: value `{name}` shadows a parameter or built-in name")
            tree = parse(text)
            self._check_names(tree, known, f"value `{name}`")
            self.values[name] = tree
            known.add(name)
        self.result = parse(result)
        self._check_names(self.result, known, "result")
        self.used = frozenset().union(*(names(tree) for tree in (*self.values.values(), self.result)))
        """Every name the formula refers to; parameters outside it (e.g. lists) are not bound."""

    def _check_names(self, tree: Node, known: set[str], label: str) -> None:
        for name in sorted(names(tree)):
            if name.endswith("()"):
                func = name[:-2]
                if func not in FUNCTIONS and func not in self.schedule_parameters:
                    raise FormulaError(
                        f"{self.where}: {label} calls unknown function `{func}`; "
                        f"allowed: {', '.join(sorted(FUNCTIONS))} and schedule parameters"
                    )
            elif name not in known:
                raise FormulaError(
                    f"{self.where}: {label} uses unknown name `{name}`; known: {', '.join(sorted(known))}"
                )
        _check_arity(tree, self.schedule_parameters, self.where)

    def bind(self, params: Mapping[str, Any], base_lr: float = 1.0) -> Bound:
        """Substitute parameter values and fold everything that does not depend on ``step``.

        Args:
          params: a value for every parameter (as returned by ``hf_optim_spec.validate``); values
            of ``schedule`` parameters are callables of one step argument.
          base_lr: the optimizer's default learning rate (``base_lr`` in the formula).

        Returns:
          A :class:`Bound` schedule whose tree depends on ``step`` only.
        """
        env: dict[str, Node] = {"pi": Const(math.pi), "base_lr": Const(_scalar(base_lr, "base_lr"))}
        schedules: dict[str, Callable[[Any], Any]] = {}
        for name, kind in self.parameters.items():
            if name not in self.used and f"{name}()" not in self.used:
                continue
            if name not in params:
                raise FormulaError(f"{self.where}: no value bound for parameter `{name}`")
            if kind == "schedule":
                if not callable(params[name]):
                    raise FormulaError(f"{self.where}: parameter `{name}` must be a schedule (a callable)")
                schedules[name] = params[name]
            else:
                env[name] = Const(_scalar(params[name], name))
        for name, tree in self.values.items():
            env[name] = _fold(tree, env, schedules)
        folded = _fold(self.result, env, schedules)
        _check_folded(folded, self.where)
        return Bound(folded)


def _scalar(value: Any, name: str) -> Scalar:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (list, tuple)):
        raise FormulaError(f"parameter `{name}` is a sequence and cannot be used in a formula")
    return float(value)


def _check_arity(tree: Node, schedule_parameters: frozenset[str], where: str) -> None:
    if isinstance(tree, Call):
        if tree.func in schedule_parameters:
            arity: int | None = 1
        else:
            arity = FUNCTIONS[tree.func][0]
        count = len(tree.args)
        if (arity is None and count < 2) or (arity is not None and count != arity):
            wanted = "at least 2" if arity is None else str(arity)
            raise FormulaError(f"{where}: `{tree.func}` takes {wanted} argument(s), got {count}")
    for child in children(tree):
        _check_arity(child, schedule_parameters, where)


def _fold(node: Node, env: Mapping[str, Node], schedules: Mapping[str, Callable[[Any], Any]]) -> Node:
    """Inline names and evaluate every step-independent sub-tree (lazily for branches)."""
    if isinstance(node, Const):
        return node
    if isinstance(node, Name):
        return Name("step") if node.id == "step" else env[node.id]
    if isinstance(node, Select):
        cond = _fold(node.cond, env, schedules)
        if isinstance(cond, Const):
            return _fold(node.then if cond.value else node.other, env, schedules)
        return Select(cond, _fold(node.then, env, schedules), _fold(node.other, env, schedules))
    if isinstance(node, Logical):
        left = _fold(node.left, env, schedules)
        if isinstance(left, Const):
            decided = (not left.value) if node.op == "and" else bool(left.value)
            return left if decided else _fold(node.right, env, schedules)
        return Logical(node.op, left, _fold(node.right, env, schedules))
    if isinstance(node, Call) and node.func in schedules:
        return ScheduleCall(schedules[node.func], _fold(node.args[0], env, schedules))
    rebuilt = rebuild(node, tuple(_fold(child, env, schedules) for child in children(node)))
    if all(isinstance(child, Const) for child in children(rebuilt)):
        return Const(evaluate(rebuilt, None))
    return rebuilt


def _check_folded(node: Node, where: str) -> None:
    """After folding, only numbers may remain next to ``step``."""
    if isinstance(node, Const) and (node.value is None or isinstance(node.value, str)):
        raise FormulaError(f"{where}: a step-dependent expression uses {node.value!r}; only numbers may depend on step")
    for child in children(node):
        _check_folded(child, where)


def evaluate_constant(node: Node, env: Mapping[str, Any]) -> Any:
    """Evaluate a parameter-only expression (used by spec constraints) against ``env``."""
    bound_env: dict[str, Node] = {name: Const(_scalar(value, name)) for name, value in env.items()}
    bound_env.setdefault("pi", Const(math.pi))
    for name in names(node):
        if not name.endswith("()") and name not in bound_env:
            raise FormulaError(f"constraint uses unknown name `{name}`")
    folded = _fold(node, bound_env, {})
    if not isinstance(folded, Const):  # pragma: no cover - only `step` survives folding
        raise FormulaError("constraint depends on `step`")
    return folded.value
