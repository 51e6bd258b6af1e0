"""``hf-optim``: list, show, plot and explain the schedules and optimizers of the spec.

Everything is driven by the spec registry: the parameter types of a spec decide how ``--NAME VALUE``
is parsed, the float64 reference evaluates the curves, and the checks of ``explain`` work on the
evaluated curve and on the formula tree, with no code for any particular schedule.

Examples::

    hf-optim list
    hf-optim show cosine
    hf-optim plot cosine --num_warmup_steps 10 --num_training_steps 100 -o cosine.png
    hf-optim plot linear,cosine --num_warmup_steps 10 --num_training_steps 100 -o both.png
    hf-optim plot cosine --num_warmup_steps 10 --num_training_steps 100 --num_cycles 0.5,1 --csv
    hf-optim explain cosine --num_warmup_steps 10 --num_training_steps 100
"""

from __future__ import annotations

import difflib
import itertools
import math
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TextIO

from . import formula as fm
from ._registry import Parameter, Spec, get, registry
from ._schedules import bind, is_schedule_ref

__all__ = ["CliError", "Curve", "Request", "analyse", "curve", "main", "parse_value", "rule_text"]

PROG = "hf-optim"
COMMANDS = ("list", "show", "plot", "explain")
SWEEPABLE = ("integer", "number", "boolean", "string")
# The arguments transformers' get_scheduler takes for every SchedulerType and silently drops for
# the schedules that have no such parameter.
GET_SCHEDULER_ARGS = ("num_warmup_steps", "num_training_steps")
# Parameter roles, recognised by transformers' naming conventions (used by `explain` only).
END_NAMES = ("num_training_steps", "num_train_steps", "total_steps", "decay_steps")
WARMUP_PATTERN = re.compile(r"warmup")
FLOOR_PATTERN = re.compile(r"(^|_)(min_lr|lr_end|end_learning_rate|min_lr_rate|min_lr_ratio)($|_)")
MAX_POINTS = 2001


class CliError(Exception):
    """A user error: printed as ``hf-optim: error: ...`` with exit status 2."""


# --------------------------------------------------------------------------- describing specs


def _number(value: float) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    return repr(value)


def show_value(value: Any) -> str:
    """A parameter value the way a user types it on the command line."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return _number(value)
    if isinstance(value, (list, tuple)):
        return ",".join(show_value(v) for v in value)
    if isinstance(value, Mapping) and "schedule" in value:
        inner = ",".join(f"{k}={show_value(v)}" for k, v in value.get("params", {}).items())
        return f"{value['schedule']}:{inner}" if inner else str(value["schedule"])
    return str(value)


def default_text(param: Parameter) -> str:
    """``required`` or the default as typed on the command line."""
    return "required" if param.required else show_value(param.default)


def rule_text(param: Parameter) -> str:
    """The value rules of one parameter, e.g. ``>= 0``, ``> 0, <= 1`` or ``one of 'a', 'b'``."""
    rules = []
    for bound, symbol in (
        (param.minimum, ">="),
        (param.exclusive_minimum, ">"),
        (param.maximum, "<="),
        (param.exclusive_maximum, "<"),
    ):
        if bound is not None:
            rules.append(f"{symbol} {_number(bound)}")
    if param.enum is not None:
        rules.append("one of " + ", ".join(repr(v) for v in param.enum))
    if param.nullable:
        rules.append("or none")
    return ", ".join(rules)


def spelling_text(param: Parameter) -> str:
    """``torch: x, tf: y`` where a framework spells the parameter differently, else ''."""
    parts = []
    for framework, alias in param.framework_names.items():
        shown = "/".join(alias) if isinstance(alias, tuple) else alias
        parts.append(f"{framework}: {shown}")
    return ", ".join(parts)


def _spec(spec_id: str) -> Spec:
    try:
        return get(spec_id)
    except KeyError as err:
        raise CliError(str(err.args[0])) from None


def cmd_list(out: TextIO) -> None:
    """Every spec, grouped by kind, with its transformers name and summary."""
    specs = list(registry().values())
    for kind in ("schedule", "optimizer", "accumulator"):
        group = [s for s in specs if s.kind == kind]
        if not group:
            continue
        print(f"{kind}s:", file=out)
        width = max(len(s.id) for s in group)
        for spec in group:
            print(f"  {spec.id:<{width}}  {spec.display_name}", file=out)
            if spec.summary:
                print(f"  {'':<{width}}  {spec.summary}", file=out)
        print(file=out)
    print(f"`{PROG} show ID` for details, `{PROG} plot ID --PARAM VALUE ...` for a curve.", file=out)


def cmd_show(spec: Spec, out: TextIO) -> None:
    """Everything the spec says about one id, as text."""
    print(f"{spec.id}  ({spec.kind})", file=out)
    if spec.summary:
        print(f"  {spec.summary}", file=out)
    print(file=out)
    if spec.hf_name:
        print(f"transformers: {', '.join(spec.hf_name)}", file=out)
    source = spec.raw.get("hf_source")
    if source:
        print(f"source:       {source}", file=out)
    for framework, package in (("torch", "hf_optim_torch"), ("tf", "hf_optim_tf")):
        if framework in spec.api:
            print(f"{framework + ':':<13} {package}.{spec.api[framework]}", file=out)
    if spec.output:
        meaning = "a factor of the optimizer's lr (LambdaLR)" if spec.output == "factor" else "the learning rate itself"
        print(f"output:       {meaning}", file=out)
    if spec.stateful:
        print("stateful:     yes (driven by a metric, no closed form)", file=out)
    if spec.state:
        print(f"state:        {', '.join(spec.state)}", file=out)
    if spec.formula:
        print(f"\nformula (LaTeX):\n  {spec.formula}", file=out)
    expression = spec.raw.get("expression")
    if expression:
        print("\nexpression (machine-readable, evaluated by the reference and lowered by both frameworks):", file=out)
        for name, text in expression.get("values", {}).items():
            print(f"  {name} = {text}", file=out)
        print(f"  result = {expression['result']}", file=out)
    print("\nparameters:", file=out)
    if not spec.parameters:
        print("  (none)", file=out)
    for param in spec.parameters.values():
        notes = [param.type_name, f"default {default_text(param)}"]
        if rule_text(param):
            notes.append(rule_text(param))
        if param.type == "string" and param.enum is None and string_choices(spec, param.name):
            notes.append("one of " + ", ".join(repr(v) for v in string_choices(spec, param.name)))
        if spelling_text(param):
            notes.append(spelling_text(param))
        if param.extension:
            notes.append("extension (not in transformers)")
        if not param.hf_enforced:
            notes.append("rule not enforced by transformers")
        print(f"  --{param.name}  [{'; '.join(notes)}]", file=out)
        if param.description:
            print(f"      {param.description}", file=out)
    if spec.constraints:
        print("\nconstraints (rejected when true):", file=out)
        for constraint in spec.constraints:
            flag = "" if constraint.hf_enforced else "  [not enforced by transformers]"
            print(f"  {constraint.when_text}  -> {constraint.error}: {constraint.message}{flag}", file=out)
    if spec.variants:
        print("\nvariants:", file=out)
        for name, variant in spec.variants.items():
            flags = " ".join(f"--{k} {show_value(v)}" for k, v in variant["params"].items())
            print(f"  {name}: {flags}  (or --variant {name})", file=out)
            print(f"      {variant['description']}", file=out)
    if spec.references:
        print("\nreferences:", file=out)
        for ref in spec.references:
            print(f"  - {ref['title']}: {ref['url']}", file=out)
    print(f"\n{len(spec.cases)} vector case(s), {len(spec.errors)} error case(s) in {spec.path.name}", file=out)


# --------------------------------------------------------------------------- argument parsing


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
_NONE = ("none", "null")


def parse_value(param: Parameter, text: str, *, label: str | None = None) -> Any:
    """Turn command-line text into a value of ``param``'s spec type.

    Raises:
      CliError: the text is not a value of that type.
    """
    label = label or f"--{param.name}"
    lowered = text.strip().lower()
    if lowered in _NONE and param.nullable:
        return None
    kind = param.type

    def bad(expected: str) -> CliError:
        return CliError(f"argument {label}: expected {expected}, got {text!r}")

    if kind == "integer":
        try:
            number = float(text)
        except ValueError:
            raise bad("an integer") from None
        if not number.is_integer():
            raise bad("an integer")
        return int(number)
    if kind == "number":
        try:
            return float(text)
        except ValueError:
            raise bad("a number") from None
    if kind == "boolean":
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise bad("true or false")
    if kind == "string":
        return text
    if kind == "number_pair":
        parts = [p for p in re.split(r"[,\s]+", text.strip("()[] ")) if p]
        try:
            pair = tuple(float(p) for p in parts)
        except ValueError:
            raise bad("two numbers like 0.9,0.999") from None
        if len(pair) != 2:
            raise bad("two numbers like 0.9,0.999")
        return pair
    if kind == "number_or_list":  # one number, or one per param group: 0.001 or 0.001,0.0001
        parts = [p for p in re.split(r"[,\s]+", text.strip("()[] ")) if p]
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            raise bad("a number or numbers like 0.001,0.0001") from None
        if not numbers:
            raise bad("a number or numbers like 0.001,0.0001")
        return numbers[0] if len(numbers) == 1 and "," not in text else numbers
    if kind == "string_list":
        return [p.strip() for p in text.split(",") if p.strip()]
    if kind == "schedule":
        return _parse_schedule_ref(text, label)
    raise bad(f"a value of type {kind}")  # pragma: no cover - the schema allows no other type


def _parse_schedule_ref(text: str, label: str) -> dict[str, Any]:
    """``ID`` or ``ID:name=value,name=value`` -> a spec schedule reference."""
    spec_id, _, rest = text.partition(":")
    spec = _spec(spec_id.strip())
    if spec.kind != "schedule":
        raise CliError(f"argument {label}: {spec.id!r} is a {spec.kind}, not a schedule")
    params: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        name, sep, value = item.partition("=")
        if not sep:
            raise CliError(f"argument {label}: expected ID:name=value,...; got {text!r}")
        param = _param(spec, name.strip())
        params[param.name] = parse_value(param, value, label=f"{label} {spec.id}:{param.name}")
    return {"schedule": spec.id, "params": params}


def _param(spec: Spec, name: str) -> Parameter:
    canonical = name.replace("-", "_")
    if canonical in spec.parameters:
        return spec.parameters[canonical]
    raise CliError(_unknown_parameter(spec, name))


def _unknown_parameter(spec: Spec, name: str) -> str:
    valid = list(spec.parameters)
    close = difflib.get_close_matches(name.replace("-", "_"), valid, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join('--' + c for c in close)}?" if close else ""
    shown = ", ".join("--" + v for v in valid) if valid else "(it takes none)"
    return f"unknown parameter --{name} for {spec.id} ({spec.display_name}).{hint} Valid parameters: {shown}"


@dataclass
class Group:
    """One or more ids given together, followed by their parameters (text, not yet typed)."""

    ids: list[str]
    texts: dict[str, str] = field(default_factory=dict)
    variant: str | None = None
    metrics: list[float] | None = None


@dataclass
class Request:
    """A parsed ``plot``/``explain`` command line."""

    groups: list[Group]
    steps: int | None = None
    base_lr: float | None = None
    output: str | None = None
    csv: str | None = None
    title: str = ""
    log: bool = False


def _take(tokens: list[str], index: int, option: str, inline: str | None) -> tuple[str, int]:
    if inline is not None:
        return inline, index + 1
    if index + 1 >= len(tokens):
        raise CliError(f"argument {option}: expected a value")
    return tokens[index + 1], index + 2


def parse_request(tokens: Sequence[str]) -> Request:
    """Parse ``ID[,ID...] [--PARAM VALUE ...] [ID ...] [--steps N] [--base-lr X] [-o PNG] [--csv[=PATH]]``."""
    tokens = list(tokens)
    request = Request(groups=[])
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if not token.startswith("-") or _is_number(token):
            ids = [t for t in token.split(",") if t]
            if not ids:
                raise CliError(f"expected a schedule id, got {token!r}")
            request.groups.append(Group(ids))
            index += 1
            continue
        option, sep, inline_value = token.partition("=")
        inline = inline_value if sep else None
        if option == "--csv":
            request.csv = inline if inline is not None else "-"
            index += 1
        elif option == "--log":
            request.log = True
            index += 1
        elif option in ("-o", "--output"):
            request.output, index = _take(tokens, index, option, inline)
        elif option == "--steps":
            value, index = _take(tokens, index, option, inline)
            try:
                request.steps = int(value)
            except ValueError:
                raise CliError(f"argument --steps: expected an integer, got {value!r}") from None
            if request.steps < 1:
                raise CliError(f"argument --steps: must be >= 1, got {request.steps}")
        elif option in ("--base-lr", "--base_lr"):
            value, index = _take(tokens, index, option, inline)
            try:
                request.base_lr = float(value)
            except ValueError:
                raise CliError(f"argument --base-lr: expected a number, got {value!r}") from None
        elif option == "--title":
            request.title, index = _take(tokens, index, option, inline)
        elif option in ("--variant", "--metrics") or option.startswith("--"):
            if not request.groups:
                raise CliError(f"{option} must follow a schedule id (e.g. {PROG} plot cosine {option} ...)")
            value, index = _take(tokens, index, option, inline)
            group = request.groups[-1]
            if option == "--variant":
                group.variant = value
            elif option == "--metrics":
                try:
                    group.metrics = [float(v) for v in value.split(",") if v.strip()]
                except ValueError:
                    raise CliError(f"argument --metrics: expected numbers like 1,0.9,0.9, got {value!r}") from None
            else:
                name = option[2:].replace("-", "_")
                if name in group.texts:
                    raise CliError(f"argument {option} given twice for {','.join(group.ids)}")
                group.texts[name] = value
        else:
            raise CliError(f"unknown option {token!r}")
    if not request.groups:
        raise CliError("expected at least one schedule id; `hf-optim list` shows them")
    return request


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- curves


@dataclass
class Curve:
    """One evaluated parameter set of one schedule."""

    spec: Spec
    params: dict[str, Any]
    """The parameters the user gave (typed), variant presets included."""
    given: tuple[str, ...]
    """Names of the parameters typed on the command line (the label shows them)."""
    base_lr: float | None
    """--base-lr as given (None: factor schedules are shown as factors, bound with base_lr 1)."""
    evaluate: Callable[[float], float] | None
    """The float64 reference of a closed-form schedule (None for a stateful one)."""
    fixed: list[float] | None = None
    """A stateful schedule's lr after each metric."""
    metrics: list[float] | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def bound_lr(self) -> float:
        return 1.0 if self.base_lr is None else float(self.base_lr)

    @property
    def scale(self) -> float:
        """Multiplier of the shown values: --base-lr for factor schedules when given, else 1."""
        return self.bound_lr if (self.spec.output == "factor" and self.base_lr is not None) else 1.0

    def label(self, varying: Sequence[str] | None = None) -> str:
        names = [n for n in self.given if varying is None or n in varying]
        shown = ", ".join(f"{n}={show_value(self.params[n])}" for n in names)
        return f"{self.spec.id} ({shown})" if shown else self.spec.id

    def values(self, steps: Sequence[int]) -> list[float]:
        if self.fixed is not None:
            return list(self.fixed)
        assert self.evaluate is not None
        scale = self.scale
        return [scale * self.evaluate(step) for step in steps]


def _example(spec: Spec) -> str:
    for case in spec.cases:
        params = case.get("params", {})
        if params and all(not isinstance(v, Mapping) for v in params.values()):
            flags = " ".join(f"--{k} {show_value(v)}" for k, v in params.items())
            return f" Example: {PROG} plot {spec.id} {flags}"
    return ""


def _bind_error(spec: Spec, err: Exception) -> CliError:
    message = str(err.args[0]) if err.args else str(err)
    if "Missing required argument" in message:
        message += _example(spec)
    return CliError(f"{spec.id}: {message}")


def _expand(group: Group, spec: Spec, *, lenient: bool) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Typed parameter sets of one id (cartesian product of comma-separated sweeps)."""
    notes: list[str] = []
    base: dict[str, Any] = {}
    if group.variant is not None:
        if group.variant not in spec.variants:
            close = difflib.get_close_matches(group.variant, list(spec.variants), n=3)
            known = ", ".join(spec.variants) or "(none)"
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise CliError(f"unknown variant {group.variant!r} for {spec.id}.{hint} Variants: {known}")
        base.update(spec.variants[group.variant]["params"])
    choices: dict[str, list[Any]] = {}
    for name, text in group.texts.items():
        if name not in spec.parameters:
            if lenient and name in GET_SCHEDULER_ARGS and _in_get_scheduler(spec):
                notes.append(
                    f"`{name}` is not a parameter of {spec.display_name}: transformers' get_scheduler("
                    f"{spec.id!r}, ...) accepts it and silently ignores it; it changes nothing here"
                )
                continue
            raise CliError(_unknown_parameter(spec, name))
        param = spec.parameters[name]
        parts = text.split(",") if param.type in SWEEPABLE and "," in text else [text]
        choices[name] = [parse_value(param, part) for part in parts]
    names = list(choices)
    sets = []
    for combo in itertools.product(*(choices[n] for n in names)):
        params = dict(base)
        params.update(zip(names, combo))
        sets.append(params)
    return sets, names, notes


def _in_get_scheduler(spec: Spec) -> bool:
    return any(name.startswith("SchedulerType.") for name in spec.hf_name)


def curve(
    spec: Spec,
    params: Mapping[str, Any],
    *,
    base_lr: float | None = None,
    metrics: Sequence[float] | None = None,
    given: Sequence[str] = (),
) -> Curve:
    """Bind ``params`` (validated against the spec) into an evaluable curve.

    Raises:
      CliError: the id is not a schedule, or the parameters are invalid (the spec's message).
    """
    if spec.kind != "schedule":
        raise CliError(
            f"{spec.id} is an {spec.kind}, not a schedule: only schedules have a curve (try `{PROG} show {spec.id}`)"
        )
    result = Curve(spec, dict(params), tuple(given), base_lr, None)
    try:
        if spec.stateful:
            from ._validation import validate
            from ._vectors import schedule_case_expected

            validate(spec, params, base_lr=result.bound_lr)
            result.metrics = [1.0] * 40 if metrics is None else list(metrics)
            case = {"params": dict(params), "base_lr": result.bound_lr, "metrics": result.metrics}
            result.fixed = schedule_case_expected(spec.id, case)
        else:
            result.evaluate = bind(spec, params, base_lr=result.bound_lr)
    except (TypeError, ValueError) as err:
        raise _bind_error(spec, err) from None
    return result


def build_curves(request: Request, *, lenient: bool = False) -> list[Curve]:
    """Every (id, parameter set) of a request, bound and validated."""
    curves: list[Curve] = []
    for group in request.groups:
        for spec_id in group.ids:
            spec = _spec(spec_id)
            sets, names, notes = _expand(group, spec, lenient=lenient)
            for params in sets:
                given = tuple(
                    dict.fromkeys([*(spec.variants[group.variant]["params"] if group.variant else {}), *names])
                )
                result = curve(spec, params, base_lr=request.base_lr, metrics=group.metrics, given=given)
                result.warnings.extend(notes)
                curves.append(result)
    return curves


def _end(params: Mapping[str, Any]) -> tuple[str, int] | None:
    for name in END_NAMES:
        value = params.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return name, int(value)
    return None


def _resolved(c: Curve) -> dict[str, Any]:
    """Every parameter of the curve with defaults filled in (schedule references kept as given)."""
    from ._validation import validate

    refs = {k: v for k, v in c.params.items() if is_schedule_ref(v)}
    concrete = {k: (bind(v["schedule"], v.get("params", {})) if k in refs else v) for k, v in c.params.items()}
    resolved = validate(c.spec, concrete, base_lr=c.bound_lr)
    resolved.update(refs)
    return {name: resolved[name] for name in c.spec.parameters}


def default_horizon(c: Curve) -> int:
    """The last step to show: 1.25 x the training length when the schedule has one."""
    if c.metrics is not None:
        return len(c.metrics) - 1
    params = _resolved(c)
    end = _end(params)
    if end is not None and end[1] > 0:
        warmups = [v for n, v in params.items() if WARMUP_PATTERN.search(n) and isinstance(v, int)]
        return max(10, math.ceil(max([end[1], *warmups]) * 1.25))
    ints = [v for v in params.values() if isinstance(v, int) and not isinstance(v, bool) and v > 0]
    return max(100, 10 * max(ints)) if ints else 100


def sample_steps(horizon: int, max_points: int = MAX_POINTS) -> list[int]:
    """0..horizon, every step when that is at most ``max_points`` steps, else an even integer grid."""
    if horizon + 1 <= max_points:
        return list(range(horizon + 1))
    return sorted({round(i * horizon / (max_points - 1)) for i in range(max_points)})


# --------------------------------------------------------------------------- analysis (explain)


def _trace(node: fm.Node, step: float, out: list[tuple[Any, ...]]) -> None:
    """Record the branches a step takes through a folded tree (selects and min/max winners)."""
    if isinstance(node, fm.Select):
        taken = bool(fm._evaluate(node.cond, step))
        out.append(("select", id(node), taken))
        _trace(node.cond, step, out)
        _trace(node.then if taken else node.other, step, out)
        return
    if isinstance(node, fm.Call) and node.func in ("min", "max"):
        values = [fm._evaluate(arg, step) for arg in node.args]
        best = min(values) if node.func == "min" else max(values)
        winners = [i for i, v in enumerate(values) if v == best or (math.isnan(v) and math.isnan(best))]
        # on a tie prefer a step-dependent argument, so a curve that touches its clamp is one phase
        varying = [i for i in winners if not isinstance(node.args[i], fm.Const)]
        out.append((node.func, id(node), (varying or winners)[0]))
    if isinstance(node, fm.ScheduleCall) and isinstance(node.schedule, fm.Bound):
        inner = fm._evaluate(node.arg, step)
        out.append(("schedule", id(node)))
        _trace(node.schedule.tree, float(inner), out)
    for child in fm._children(node):
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
    selects = {id(n): n for n in _walk(c.evaluate.tree) if isinstance(n, fm.Select)}
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
        texts.insert(0, f"{_number(low[0])} {left} step {high[1]} {_number(high[0])}")
    elif low is not None:
        texts.insert(0, f"step {low[1]} {_number(low[0])}")
    elif high is not None:
        texts.insert(0, f"step {high[1]} {_number(high[0])}")
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


def _walk(node: fm.Node) -> Iterator[fm.Node]:
    yield node
    for child in fm._children(node):
        yield from _walk(child)
    if isinstance(node, fm.ScheduleCall) and isinstance(node.schedule, fm.Bound):
        yield from _walk(node.schedule.tree)


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
    elif isinstance(node, fm.Binary):
        own = _PRECEDENCE[node.op]
        text = f"{to_text(node.left, own)} {node.op} {to_text(node.right, own + 1)}"
    elif isinstance(node, fm.Compare):
        own = 4
        text = f"{to_text(node.left, 5)} {node.op} {to_text(node.right, 5)}"
    elif isinstance(node, fm.Logical):
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


def _trend(values: Sequence[float]) -> str:
    finite = [v for v in values if math.isfinite(v)]
    if len(finite) < 2:
        return "point" if len(values) == 1 else "non-finite"
    diffs = [b - a for a, b in itertools.pairwise(finite)]
    tol = 1e-12 * max(1.0, *(abs(v) for v in finite))
    up = any(d > tol for d in diffs)
    down = any(d < -tol for d in diffs)
    if not up and not down:
        return "constant"
    if up and not down:
        return "rises"
    if down and not up:
        return "falls"
    low = min(range(len(finite)), key=finite.__getitem__)
    high = max(range(len(finite)), key=finite.__getitem__)
    if all(d <= tol for d in diffs[:low]) and all(d >= -tol for d in diffs[low:]):
        return "falls, then rises"
    if all(d >= -tol for d in diffs[:high]) and all(d <= tol for d in diffs[high:]):
        return "rises, then falls"
    return "goes up and down"


def _g(value: float) -> str:
    return f"{value:.4g}"


@dataclass
class Analysis:
    """What ``explain`` prints for one curve."""

    curve: Curve
    horizon: int
    phases: list[Phase]
    values: dict[int, float]
    warnings: list[str]
    notes: list[str]


def analyse(c: Curve, horizon: int | None = None) -> Analysis:
    """Phase boundaries and warnings for suspicious settings of one curve."""
    params = _resolved(c)
    horizon = horizon if horizon is not None else default_horizon(c)
    end = _end(params)
    if end is not None and c.metrics is None:
        horizon = max(horizon, math.ceil(end[1] * 1.25), end[1] + 2)
    steps = sample_steps(horizon)
    if c.metrics is not None:
        values = dict(zip(range(len(c.metrics)), c.values([])))
        horizon = len(c.metrics) - 1
        found = []
        start = 0
        keys = sorted(values)
        for a, b in itertools.pairwise(keys):
            if values[a] != values[b]:
                found.append(Phase(start, a, []))
                start = b
        found.append(Phase(start, horizon, []))
    else:
        extra = set()
        if end is not None:
            extra |= {max(0, end[1] - 1), end[1], end[1] + 1}
        found = phases(c, horizon)
        extra |= {p.start for p in found} | {p.end for p in found}
        all_steps = sorted(set(steps) | {s for s in extra if 0 <= s <= horizon})
        values = dict(zip(all_steps, c.values(all_steps)))
    warnings = list(c.warnings)
    notes: list[str] = []
    warnings += _check_values(values)
    if c.metrics is None:
        warnings += _check_warmup(params, end)
        warnings += _check_rebound(c, values, end)
        warnings += _check_floor(c, params, values, end)
        warnings += _check_ignored(c, horizon)
        first = values.get(0)
        if first == 0.0:
            notes.append("step 0 runs with a learning rate of 0 (the warmup starts at 0, as in transformers)")
    return Analysis(c, horizon, found, values, warnings, notes)


def _check_values(values: Mapping[int, float]) -> list[str]:
    bad = [s for s, v in values.items() if not math.isfinite(v)]
    negative = [s for s, v in values.items() if v < 0]
    out = []
    if bad:
        out.append(f"the value is not finite at {len(bad)} step(s), first at step {bad[0]} ({values[bad[0]]})")
    if negative:
        out.append(
            f"the value is negative at {len(negative)} step(s), first at step {negative[0]} ({_g(values[negative[0]])})"
        )
    return out


def _check_warmup(params: Mapping[str, Any], end: tuple[str, int] | None) -> list[str]:
    if end is None:
        return []
    out = []
    for name, value in params.items():
        if WARMUP_PATTERN.search(name) and isinstance(value, int) and not isinstance(value, bool) and value >= end[1]:
            out.append(
                f"{name}={value} >= {end[0]}={end[1]}: the warmup does not finish before the end of training, "
                "so the schedule never decays within the run"
            )
    return out


def _check_rebound(c: Curve, values: Mapping[int, float], end: tuple[str, int] | None) -> list[str]:
    if end is None:
        return []
    at_end = values.get(end[1])
    before = values.get(end[1] - 1)
    after = {s: v for s, v in values.items() if s > end[1] and math.isfinite(v)}
    if at_end is None or not after or not math.isfinite(at_end):
        return []
    if before is not None and before < at_end:
        return []  # still rising at the end (e.g. a warmup longer than training): not a rebound
    top_step = max(after, key=after.__getitem__)
    top = after[top_step]
    if top <= at_end + 1e-9 * max(1.0, abs(at_end)):
        return []
    fix = ""
    for name, variant in c.spec.variants.items():
        flags = " ".join(f"--{k} {show_value(v)}" for k, v in variant["params"].items())
        fix += f" The `{name}` variant ({flags}) avoids it: {variant['description']}"
    return [
        f"the curve rises again after {end[0]}={end[1]}: {_g(at_end)} at step {end[1]}, {_g(top)} at step {top_step}. "
        f"A run longer than {end[0]} (or resumed past it) trains with a rebounding learning rate.{fix}"
    ]


def _check_floor(
    c: Curve, params: Mapping[str, Any], values: Mapping[int, float], end: tuple[str, int] | None
) -> list[str]:
    floors = {n: v for n, v in params.items() if FLOOR_PATTERN.search(n) and v is not None}
    if not floors:
        return []
    last = end[1] if end is not None else max(values)
    window = {s: v for s, v in values.items() if s <= last and math.isfinite(v)}
    if not window:
        return []
    peak_step = max(window, key=window.__getitem__)
    peak = window[peak_step]
    after = [v for s, v in window.items() if s >= peak_step]
    if min(after) < peak - 1e-12 * max(1.0, abs(peak)):
        return []
    shown = ", ".join(f"{n}={show_value(v)}" for n, v in floors.items())
    return [
        f"the minimum is not below the peak ({shown}): the curve peaks at {_g(peak)} (step {peak_step}) and never "
        f"decays below it up to step {last}"
    ]


def string_choices(spec: Spec, name: str) -> list[str]:
    """The string literals the formula or the constraints compare parameter ``name`` with."""
    trees: list[fm.Node] = [c.when for c in spec.constraints]
    if spec.program is not None:
        trees += [*spec.program.values.values(), spec.program.result]
    found: list[str] = []
    for tree in trees:
        for node in _walk(tree):
            if isinstance(node, fm.Compare) and node.op in ("==", "!="):
                for a, b in ((node.left, node.right), (node.right, node.left)):
                    if (
                        a == fm.Name(name)
                        and isinstance(b, fm.Const)
                        and isinstance(b.value, str)
                        and b.value not in found
                    ):
                        found.append(b.value)
    return found


def _perturbations(spec: Spec, param: Parameter, value: Any) -> list[Any]:
    kind = param.type
    if value is None:
        if kind == "integer":
            return [1, 10]
        if kind == "number":
            return [0.1, 0.5]
        return []
    candidates: list[Any]
    if kind == "boolean":
        candidates = [not value]
    elif param.enum is not None or kind == "string":
        candidates = [v for v in (param.enum or string_choices(spec, param.name)) if v != value]
    elif kind == "integer":
        candidates = [value + 1, value + 7, value - 1, value * 2]
    elif kind == "number":
        candidates = [value * 1.37 + 0.013, value * 0.5, value + 1.0, value - 0.25]
    else:
        candidates = []
    if param.nullable:
        candidates.append(None)
    return candidates


def _check_ignored(c: Curve, horizon: int) -> list[str]:
    """A parameter the user gave whose value changes nothing (within 0..horizon) is reported."""
    steps = sample_steps(horizon, 501)
    reference = c.values(steps)
    out = []
    for name in c.given:
        param = c.spec.parameters.get(name)
        if param is None or param.type not in SWEEPABLE:
            continue
        tried = 0
        same = True
        for candidate in _perturbations(c.spec, param, c.params[name]):
            try:
                other = curve(c.spec, {**c.params, name: candidate}, base_lr=c.base_lr, metrics=c.metrics)
            except CliError:
                continue
            tried += 1
            other_values = other.values(steps)
            if any(not _same(a, b) for a, b in zip(reference, other_values)):
                same = False
                break
        if tried and same:
            out.append(
                f"--{name} {show_value(c.params[name])} is ignored with these settings: other values give the same "
                f"curve over steps 0..{horizon}"
            )
    return out


def _same(a: float, b: float) -> bool:
    """Equal up to float64 rounding (1e-12 relative)."""
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or abs(a - b) <= 1e-12 * max(abs(a), abs(b))


def format_analysis(a: Analysis, out: TextIO) -> None:
    c = a.curve
    spec = c.spec
    params = _resolved(c)
    shown = ", ".join(f"{k}={show_value(v)}" for k, v in params.items())
    print(f"{spec.id}  ({spec.display_name})", file=out)
    print(f"  parameters: {shown or '(none)'}", file=out)
    unit = "learning rate" if (spec.output == "lr" or c.scale != 1.0) else "factor of the optimizer lr"
    axis = "metric #" if c.metrics is not None else "steps"
    print(f"  values: {unit}; {axis} 0..{a.horizon}", file=out)
    print("\nphases:", file=out)
    keys = sorted(a.values)
    for phase in a.phases:
        inside = [a.values[s] for s in keys if phase.start <= s <= phase.end]
        first, last = a.values.get(phase.start), a.values.get(phase.end)
        span = f"{phase.start}" if phase.start == phase.end else f"{phase.start}-{phase.end}"
        trend = _trend(inside)
        if trend == "constant" or first is None or last is None:
            shape = f"{trend} {_g(first) if first is not None else ''}".rstrip()
        else:
            shape = f"{trend} {_g(first)} -> {_g(last)}"
            if trend in ("falls, then rises", "goes up and down", "rises, then falls"):
                in_phase = [s for s in keys if phase.start <= s <= phase.end]
                low = min(in_phase, key=a.values.__getitem__)
                high = max(in_phase, key=a.values.__getitem__)
                shape += f" (min {_g(a.values[low])} at step {low}, max {_g(a.values[high])} at step {high})"
        when = f"   when {' and '.join(phase.conditions)}" if phase.conditions else ""
        print(f"  {axis} {span:<12} {shape}{when}", file=out)
    if a.notes:
        print("\nnotes:", file=out)
        for note in a.notes:
            print(f"  - {note}", file=out)
    print("\nwarnings:" if a.warnings else "\nwarnings: none", file=out)
    for warning in a.warnings:
        print(f"  ! {warning}", file=out)


# --------------------------------------------------------------------------- plot


def _varying(curves: Sequence[Curve]) -> list[str]:
    """Parameters whose value differs between the curves (the legend shows these)."""
    names: list[str] = []
    for c in curves:
        for name in c.given:
            values = {show_value(o.params.get(name, "<unset>")) for o in curves}
            if len(values) > 1 and name not in names:
                names.append(name)
    return names


def _common(curves: Sequence[Curve]) -> str:
    """Parameters every curve was given with the same value (the title shows these)."""
    varying = _varying(curves)
    shared = [n for n in curves[0].given if n not in varying and all(n in c.given for c in curves)]
    return ", ".join(f"{n}={show_value(curves[0].params[n])}" for n in shared)


def plot_data(curves: Sequence[Curve], steps_option: int | None) -> tuple[list[int], list[tuple[str, list[float]]]]:
    horizon = steps_option if steps_option is not None else max(default_horizon(c) for c in curves)
    steps = sample_steps(horizon)
    varying = _varying(curves)
    columns = []
    for c in curves:
        values = c.values(steps)
        label = c.label(varying)
        columns.append((label, values))
    if any(c.metrics is not None for c in curves):
        length = max(len(v) for _, v in columns)
        steps = list(range(length))
    return steps, columns


def y_label(curves: Sequence[Curve]) -> str:
    if all(c.spec.output == "factor" and c.scale == 1.0 for c in curves):
        return "lr factor (x optimizer lr)"
    return "learning rate"


def write_csv(steps: Sequence[int], columns: Sequence[tuple[str, Sequence[float]]], out: TextIO) -> None:
    header = ["step", *(label for label, _ in columns)]
    print(",".join(_csv_cell(h) for h in header), file=out)
    for index, step in enumerate(steps):
        cells = [str(step)] + [repr(float(col[index])) if index < len(col) else "" for _, col in columns]
        print(",".join(cells), file=out)


def _csv_cell(text: str) -> str:
    return f'"{text}"' if ("," in text or '"' in text) else text


def cmd_plot(tokens: Sequence[str], out: TextIO) -> None:
    request = parse_request(tokens)
    curves = build_curves(request)
    steps, columns = plot_data(curves, request.steps)
    if request.csv is not None:
        if request.csv == "-":
            write_csv(steps, columns, out)
        else:
            with open(request.csv, "w", encoding="utf-8") as handle:
                write_csv(steps, columns, handle)
            print(f"wrote {request.csv}", file=sys.stderr)
    if request.output is None:
        if request.csv is None:
            raise CliError("give -o FILE.png for the figure, or --csv for the numbers")
        return
    from ._plot import Panel, PlotUnavailable, Series, render

    vlines: list[tuple[float, str]] = []
    if len(curves) == 1:
        for phase in analyse(curves[0], steps[-1]).phases[1:]:
            if phase.start <= steps[-1]:
                vlines.append((phase.start, f"step {phase.start}"))
    ids = list(dict.fromkeys(c.spec.id for c in curves))
    title = request.title or (curves[0].spec.display_name if len(ids) == 1 else ", ".join(ids))
    common = _common(curves)
    if common and not request.title:
        title += f"\n{common}"
    panel = Panel(
        [Series(label, steps[: len(values)], values) for label, values in columns],
        xlabel="metric #" if any(c.metrics is not None for c in curves) else "step",
        ylabel=y_label(curves),
        log_y=request.log,
        vlines=tuple(vlines),
    )
    try:
        render([panel], request.output, title=title)
    except PlotUnavailable as err:
        raise CliError(str(err)) from None
    print(f"wrote {request.output}", file=sys.stderr)


def cmd_explain(tokens: Sequence[str], out: TextIO) -> None:
    request = parse_request(tokens)
    curves = build_curves(request, lenient=True)
    for index, c in enumerate(curves):
        if index:
            print("\n" + "-" * 72 + "\n", file=out)
        format_analysis(analyse(c, request.steps), out)


# --------------------------------------------------------------------------- main

USAGE = f"""usage: {PROG} COMMAND ...

commands:
  list                                  every schedule and optimizer with a one-line summary
  show ID                               parameters, defaults, formula, references, variants
  plot ID[,ID...] [--PARAM VALUE ...] [ID ...] [--steps N] [--base-lr X] [-o FILE.png] [--csv[=FILE]]
                                        curves on one figure; VALUE may be a comma list (a sweep)
  explain ID [--PARAM VALUE ...] [--steps N] [--base-lr X]
                                        phase boundaries and warnings for suspicious settings

plot/explain options:
  --PARAM VALUE     a parameter of the id before it (`{PROG} show ID` lists them); none = null
  --variant NAME    a named variant of the id before it (a preset of parameters)
  --metrics a,b,..  the metric sequence for a stateful schedule (reduce-on-plateau, greedy)
  --steps N         show steps 0..N (default: 1.25 x the training length)
  --base-lr X       the optimizer lr: plot lr = X * factor instead of the factor
  -o FILE.png       write the figure (needs matplotlib: pip install 'hf-optim-spec[plot]')
  --csv[=FILE]      write the numbers as CSV (stdout without FILE)
  --title TEXT, --log (log y axis)
"""


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 user error)."""
    out = out or sys.stdout
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, file=out, end="")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    try:
        if command not in COMMANDS:
            close = difflib.get_close_matches(command, COMMANDS, n=1)
            hint = f" Did you mean: {close[0]}?" if close else ""
            raise CliError(f"unknown command {command!r}.{hint} Commands: {', '.join(COMMANDS)}")
        if any(a in ("-h", "--help") for a in rest):
            print(USAGE, file=out, end="")
            return 0
        if command == "list":
            if rest:
                raise CliError(f"list takes no arguments, got {' '.join(rest)!r}")
            cmd_list(out)
        elif command == "show":
            if len(rest) != 1:
                raise CliError("show takes exactly one id, e.g. `hf-optim show cosine`")
            cmd_show(_spec(rest[0]), out)
        elif command == "plot":
            cmd_plot(rest, out)
        else:
            cmd_explain(rest, out)
    except CliError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # pragma: no cover - e.g. `hf-optim plot ... --csv | head`
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
