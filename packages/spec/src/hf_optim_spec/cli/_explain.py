"""The ``explain`` command: a curve's phases, and warnings for settings that are likely mistakes."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from .._registry import Parameter, Spec
from ._curves import (
    SWEEPABLE,
    WARMUP_PATTERN,
    Curve,
    build_curves,
    curve,
    default_horizon,
    resolved_params,
    sample_steps,
    training_end,
)
from ._errors import CliError
from ._phases import Phase, phases
from ._request import parse_request
from ._values import show_value, string_choices

__all__ = ["Analysis", "analyse", "cmd_explain", "format_analysis"]


FLOOR_PATTERN = re.compile(r"(^|_)(min_lr|lr_end|end_learning_rate|min_lr_rate|min_lr_ratio)($|_)")


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
    params = resolved_params(c)
    horizon = horizon if horizon is not None else default_horizon(c)
    end = training_end(params)
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
    params = resolved_params(c)
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


def cmd_explain(tokens: Sequence[str], out: TextIO) -> None:
    request = parse_request(tokens)
    curves = build_curves(request, lenient=True)
    for index, c in enumerate(curves):
        if index:
            print("\n" + "-" * 72 + "\n", file=out)
        format_analysis(analyse(c, request.steps), out)
