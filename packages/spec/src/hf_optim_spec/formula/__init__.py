"""The schedule formula language: parse once, bind parameters, evaluate in float64, lower anywhere.

A schedule's learning-rate factor is written in the spec as a small expression language that looks
like a Python expression but is parsed against a whitelist (``ast`` is used as a tokenizer only;
nothing is ever passed to ``eval`` or ``exec``)::

    values:  progress = (step - num_warmup_steps) / max(1, num_training_steps - num_warmup_steps)
    result:  step / max(1, num_warmup_steps) if step < num_warmup_steps
             else max(0, 0.5 * (1 + cos(pi * num_cycles * 2 * progress)))

Pipeline:

1. :func:`parse` turns one expression into an immutable tree of :class:`Node` objects and rejects
   anything outside the grammar with a :class:`FormulaError` naming the construct and its column.
2. :class:`Program` holds the named intermediate values and the result, and checks that every name
   is a parameter, ``step``, ``base_lr``, ``pi`` or an earlier value.
3. :meth:`Program.bind` substitutes parameter values, inlines the named values and folds every
   sub-expression that does not depend on ``step``. String and ``None`` tests on parameters are
   therefore decided once, here, and never reach a framework or the per-step path.
4. :class:`Bound` is the float64 reference: calling it with a step evaluates the folded tree with
   Python floats (IEEE semantics: ``x / 0`` is ``inf`` or ``nan``, never an exception).
5. :func:`lower` walks the folded tree and asks an ``ops`` object to build each node, so a framework
   turns the same tree into its own arithmetic (for example ``keras.ops``) with no per-schedule code.
"""

from __future__ import annotations

import ast
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = [
    "FUNCTIONS",
    "Binary",
    "Bound",
    "Call",
    "Compare",
    "Const",
    "FormulaError",
    "Logical",
    "LoweringOps",
    "Name",
    "Node",
    "Program",
    "ScheduleCall",
    "Select",
    "Unary",
    "evaluate_constant",
    "lower",
    "parse",
]

Scalar = float | int | bool | str | None


class FormulaError(ValueError):
    """A formula that is outside the language, refers to an unknown name, or cannot be bound."""


# --------------------------------------------------------------------------- tree


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
class Binary:
    """``a op b`` for op in ``+ - * / % **``."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Compare:
    """``a op b`` for op in ``< <= > >= == != is is not``."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Logical:
    """``a and b`` / ``a or b`` (short-circuit, Python truthiness)."""

    op: str
    left: Node
    right: Node


@dataclass(frozen=True)
class Select:
    """The piecewise branch ``then if cond else other``; only the chosen branch is evaluated."""

    cond: Node
    then: Node
    other: Node


@dataclass(frozen=True)
class Call:
    """A call of a built-in function (see :data:`FUNCTIONS`) or of a schedule-typed parameter."""

    func: str
    args: tuple[Node, ...]


@dataclass(frozen=True, eq=False)
class ScheduleCall:
    """After binding: a call of the schedule held by a ``schedule``-typed parameter."""

    schedule: Callable[[Any], Any]
    arg: Node


Node = Const | Name | Unary | Binary | Compare | Logical | Select | Call | ScheduleCall


# --------------------------------------------------------------------------- float64 semantics


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

_BINARY: Mapping[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": _div,
    "%": _mod,
    "**": _pow,
}

_COMPARE: Mapping[str, Callable[[Any, Any], bool]] = {
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "==": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "is": lambda a, b: a is b,
    "is not": lambda a, b: a is not b,
}

RESERVED = frozenset({"step", "base_lr", "pi"})
"""Names every formula may use: the integer step, the optimizer's default lr, and pi."""

# --------------------------------------------------------------------------- parser

_AST_BINARY = {
    ast.Add: "+",
    ast.Sub: "-",
    ast.Mult: "*",
    ast.Div: "/",
    ast.Mod: "%",
    ast.Pow: "**",
}
_AST_COMPARE = {
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Is: "is",
    ast.IsNot: "is not",
}
_AST_DESCRIPTION = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscripts",
    ast.Lambda: "lambdas",
    ast.ListComp: "comprehensions",
    ast.SetComp: "comprehensions",
    ast.DictComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.NamedExpr: "assignment expressions",
    ast.Starred: "starred arguments",
    ast.JoinedStr: "f-strings",
    ast.List: "lists",
    ast.Tuple: "tuples",
    ast.Dict: "dicts",
    ast.Set: "sets",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.FloorDiv: "floor division `//` (use floor(a / b))",
    ast.MatMult: "matrix multiplication `@`",
    ast.BitAnd: "bitwise operators",
    ast.BitOr: "bitwise operators",
    ast.BitXor: "bitwise operators",
    ast.LShift: "bitwise operators",
    ast.RShift: "bitwise operators",
    ast.Invert: "bitwise operators",
    ast.In: "membership tests",
    ast.NotIn: "membership tests",
}


def _reject(node: ast.AST, text: str, what: str | None = None) -> FormulaError:
    what = what or _AST_DESCRIPTION.get(type(node), type(node).__name__)
    col = getattr(node, "col_offset", None)
    where = f" at column {col + 1}" if col is not None else ""
    return FormulaError(f"Formula uses {what}{where}, which the formula language does not allow: {text!r}")


def parse(text: str) -> Node:
    """Parse one expression of the formula language into a tree.

    Args:
      text: the expression, e.g. ``"step / max(1, num_warmup_steps)"``.

    Returns:
      The root :data:`Node`.

    Raises:
      FormulaError: the text is not valid syntax or uses anything outside the whitelist
        (attribute access, subscripts, lambdas, comprehensions, keyword arguments, calls of
        anything but a bare name, ...). Whether names exist is checked by :class:`Program`.
    """
    if not isinstance(text, str):
        raise TypeError(f"A formula must be a string. Received: {text!r} (of type {type(text).__name__})")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as err:
        raise FormulaError(f"Formula is not valid syntax ({err.msg}): {text!r}") from None
    return _convert(tree.body, text)


def _convert(node: ast.AST, text: str) -> Node:
    if isinstance(node, ast.Constant):
        value = node.value
        if value is None or isinstance(value, (bool, int, float, str)):
            return Const(value)
        raise _reject(node, text, f"a literal of type {type(value).__name__}")
    if isinstance(node, ast.Name):
        return Name(node.id)
    if isinstance(node, ast.UnaryOp):
        ops = {ast.USub: "-", ast.UAdd: "+", ast.Not: "not"}
        if type(node.op) not in ops:
            raise _reject(node.op, text)
        return Unary(ops[type(node.op)], _convert(node.operand, text))
    if isinstance(node, ast.BinOp):
        if type(node.op) not in _AST_BINARY:
            raise _reject(node.op, text)
        return Binary(_AST_BINARY[type(node.op)], _convert(node.left, text), _convert(node.right, text))
    if isinstance(node, ast.BoolOp):
        word = "and" if isinstance(node.op, ast.And) else "or"
        operands = [_convert(v, text) for v in node.values]
        result = operands[0]
        for operand in operands[1:]:
            result = Logical(word, result, operand)
        return result
    if isinstance(node, ast.Compare):
        # A chained comparison a < b < c means (a < b) and (b < c).
        parts: list[Node] = []
        left = _convert(node.left, text)
        for cmpop, comparator in zip(node.ops, node.comparators):
            if type(cmpop) not in _AST_COMPARE:
                raise _reject(cmpop, text)
            right = _convert(comparator, text)
            symbol = _AST_COMPARE[type(cmpop)]
            if symbol in ("is", "is not") and right != Const(None):
                raise _reject(cmpop, text, "`is` with something other than None")
            parts.append(Compare(symbol, left, right))
            left = right
        result = parts[0]
        for part in parts[1:]:
            result = Logical("and", result, part)
        return result
    if isinstance(node, ast.IfExp):
        return Select(_convert(node.test, text), _convert(node.body, text), _convert(node.orelse, text))
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name):
            raise _reject(node.func, text, "a call of something other than a plain name")
        if node.keywords:
            raise _reject(node, text, "keyword arguments")
        return Call(node.func.id, tuple(_convert(arg, text) for arg in node.args))
    raise _reject(node, text)


def _names(node: Node) -> set[str]:
    """Every name a tree refers to (functions included, as ``name()``)."""
    if isinstance(node, Name):
        return {node.id}
    if isinstance(node, Call):
        found = {f"{node.func}()"}
        for arg in node.args:
            found |= _names(arg)
        return found
    found = set()
    for child in _children(node):
        found |= _names(child)
    return found


def _children(node: Node) -> tuple[Node, ...]:
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


# --------------------------------------------------------------------------- programs


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
        self.used = frozenset().union(*(_names(tree) for tree in (*self.values.values(), self.result)))
        """Every name the formula refers to; parameters outside it (e.g. lists) are not bound."""

    def _check_names(self, tree: Node, known: set[str], label: str) -> None:
        for name in sorted(_names(tree)):
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
    for child in _children(tree):
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
    rebuilt = _rebuild(node, tuple(_fold(child, env, schedules) for child in _children(node)))
    if all(isinstance(child, Const) for child in _children(rebuilt)):
        return Const(_evaluate(rebuilt, None))
    return rebuilt


def _rebuild(node: Node, children: tuple[Node, ...]) -> Node:
    if isinstance(node, Unary):
        return Unary(node.op, children[0])
    if isinstance(node, Binary):
        return Binary(node.op, children[0], children[1])
    if isinstance(node, Compare):
        return Compare(node.op, children[0], children[1])
    if isinstance(node, Call):
        return Call(node.func, children)
    if isinstance(node, ScheduleCall):
        return ScheduleCall(node.schedule, children[0])
    raise AssertionError(f"unexpected node {node!r}")  # pragma: no cover


def _check_folded(node: Node, where: str) -> None:
    """After folding, only numbers may remain next to ``step``."""
    if isinstance(node, Const) and (node.value is None or isinstance(node.value, str)):
        raise FormulaError(f"{where}: a step-dependent expression uses {node.value!r}; only numbers may depend on step")
    for child in _children(node):
        _check_folded(child, where)


def _number(value: Scalar) -> float:
    if value is None or isinstance(value, str):
        raise FormulaError(f"arithmetic on {value!r} is not defined in the formula language")
    return float(value)


def _evaluate(node: Node, step: float | None) -> Any:
    """Evaluate a folded tree (``step`` may be None when the tree does not use it)."""
    if isinstance(node, Const):
        return node.value
    if isinstance(node, Name):
        if step is None:
            raise FormulaError("`step` is not available in a parameter-only expression")
        return step
    if isinstance(node, Unary):
        value = _evaluate(node.operand, step)
        if node.op == "not":
            return not value
        return -_number(value) if node.op == "-" else _number(value)
    if isinstance(node, Binary):
        return _BINARY[node.op](_number(_evaluate(node.left, step)), _number(_evaluate(node.right, step)))
    if isinstance(node, Compare):
        left, right = _evaluate(node.left, step), _evaluate(node.right, step)
        if node.op not in ("==", "!=", "is", "is not"):
            left, right = _number(left), _number(right)
        return _COMPARE[node.op](left, right)
    if isinstance(node, Logical):
        left = _evaluate(node.left, step)
        if node.op == "and":
            return _evaluate(node.right, step) if left else left
        return left if left else _evaluate(node.right, step)
    if isinstance(node, Select):
        return _evaluate(node.then if _evaluate(node.cond, step) else node.other, step)
    if isinstance(node, Call):
        return FUNCTIONS[node.func][1](*(_number(_evaluate(arg, step)) for arg in node.args))
    if isinstance(node, ScheduleCall):
        return float(node.schedule(_number(_evaluate(node.arg, step))))
    raise AssertionError(f"unexpected node {node!r}")  # pragma: no cover


class Bound:
    """A bound schedule: the float64 reference of one parameter set.

    ``bound(step)`` returns the formula's value at ``step`` as a Python float. ``bound.tree`` is
    the folded tree (free name ``step`` only) that :func:`lower` hands to a framework.
    """

    __slots__ = ("tree",)

    def __init__(self, tree: Node) -> None:
        self.tree = tree

    def __call__(self, step: float) -> float:
        return float(_evaluate(self.tree, float(step)))

    def __repr__(self) -> str:
        return f"Bound({self.tree!r})"


def evaluate_constant(node: Node, env: Mapping[str, Any]) -> Any:
    """Evaluate a parameter-only expression (used by spec constraints) against ``env``."""
    bound_env: dict[str, Node] = {name: Const(_scalar(value, name)) for name, value in env.items()}
    bound_env.setdefault("pi", Const(math.pi))
    for name in _names(node):
        if not name.endswith("()") and name not in bound_env:
            raise FormulaError(f"constraint uses unknown name `{name}`")
    folded = _fold(node, bound_env, {})
    if not isinstance(folded, Const):  # pragma: no cover - only `step` survives folding
        raise FormulaError("constraint depends on `step`")
    return folded.value


# --------------------------------------------------------------------------- lowering


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
        return ops.constant(_number(tree.value))
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
