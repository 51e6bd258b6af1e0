"""Curves: a request's parameter sets bound to the float64 reference, and the steps to show them at."""

from __future__ import annotations

import difflib
import itertools
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .._registry import Spec
from .._schedules import bind, is_schedule_ref
from .._validation import validate
from ._errors import PROG, CliError, find_spec
from ._request import Group, Request
from ._values import parse_value, show_value, unknown_parameter

__all__ = [
    "MAX_POINTS",
    "SWEEPABLE",
    "WARMUP_PATTERN",
    "Curve",
    "build_curves",
    "curve",
    "default_horizon",
    "resolved_params",
    "sample_steps",
    "training_end",
]


SWEEPABLE = ("integer", "number", "boolean", "string")


# The arguments transformers' get_scheduler takes for every SchedulerType and silently drops for
# the schedules that have no such parameter.
GET_SCHEDULER_ARGS = ("num_warmup_steps", "num_training_steps")


# Parameter roles, recognised by transformers' naming conventions (used by `explain` only).
END_NAMES = ("num_training_steps", "num_train_steps", "total_steps", "decay_steps")


WARMUP_PATTERN = re.compile(r"warmup")


MAX_POINTS = 2001


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
            raise CliError(unknown_parameter(spec, name))
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
            from .._vectors import schedule_case_expected

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
            spec = find_spec(spec_id)
            sets, names, notes = _expand(group, spec, lenient=lenient)
            for params in sets:
                given = tuple(
                    dict.fromkeys([*(spec.variants[group.variant]["params"] if group.variant else {}), *names])
                )
                result = curve(spec, params, base_lr=request.base_lr, metrics=group.metrics, given=given)
                result.warnings.extend(notes)
                curves.append(result)
    return curves


def training_end(params: Mapping[str, Any]) -> tuple[str, int] | None:
    for name in END_NAMES:
        value = params.get(name)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return name, int(value)
    return None


def resolved_params(c: Curve) -> dict[str, Any]:
    """Every parameter of the curve with defaults filled in (schedule references kept as given)."""

    refs = {k: v for k, v in c.params.items() if is_schedule_ref(v)}
    concrete = {k: (bind(v["schedule"], v.get("params", {})) if k in refs else v) for k, v in c.params.items()}
    resolved = validate(c.spec, concrete, base_lr=c.bound_lr)
    resolved.update(refs)
    return {name: resolved[name] for name in c.spec.parameters}


def default_horizon(c: Curve) -> int:
    """The last step to show: 1.25 x the training length when the schedule has one."""
    if c.metrics is not None:
        return len(c.metrics) - 1
    params = resolved_params(c)
    end = training_end(params)
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
