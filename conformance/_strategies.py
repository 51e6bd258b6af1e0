"""Hypothesis strategies generated from spec metadata (parameter declarations and the spec's own cases).

A draw starts from the parameters of one of the spec's cases (so required arguments, nested
schedules and the scale of the numbers are sensible) and redraws each parameter from its
declaration: ``enum`` -> one of the values; ``boolean``; ``integer``/``number`` within
``minimum``/``maximum`` (exclusive bounds excluded), or within a factor of 2 of the case value on a
side the spec leaves open; ``nullable`` -> sometimes None. Whether the combination is valid is
decided by ``hf_optim_spec.validate`` (the constraints), never here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import hf_optim_spec as hs
from hypothesis import strategies as st

OPEN_FACTOR = 2.0
INT_SPAN = 200


def _number_bounds(param: hs.Parameter, current: float) -> tuple[float, float, bool, bool]:
    magnitude = max(abs(current), 1e-3)
    lo, exclude_lo = param.minimum, False
    if lo is None and param.exclusive_minimum is not None:
        lo, exclude_lo = param.exclusive_minimum, True
    hi, exclude_hi = param.maximum, False
    if hi is None and param.exclusive_maximum is not None:
        hi, exclude_hi = param.exclusive_maximum, True
    if lo is None:
        lo = current / OPEN_FACTOR if current > 0 else current - OPEN_FACTOR * magnitude
    if hi is None:
        hi = max(current * OPEN_FACTOR if current > 0 else current + OPEN_FACTOR * magnitude, lo + magnitude)
    return float(lo), float(hi), exclude_lo, exclude_hi


def _number(param: hs.Parameter, current: Any) -> st.SearchStrategy[float]:
    center = float(current) if isinstance(current, (int, float)) and math.isfinite(current) else 1.0
    lo, hi, exclude_lo, exclude_hi = _number_bounds(param, center)
    return st.floats(
        lo,
        hi,
        exclude_min=exclude_lo,
        exclude_max=exclude_hi,
        allow_nan=False,
        allow_infinity=False,
        allow_subnormal=False,
    )


def _integer(param: hs.Parameter, current: Any) -> st.SearchStrategy[int]:
    center = int(current) if isinstance(current, (int, float)) and not isinstance(current, bool) else 0
    lo = (
        param.minimum
        if param.minimum is not None
        else (param.exclusive_minimum + 1 if param.exclusive_minimum is not None else min(0, center * 4))
    )
    hi = (
        param.maximum
        if param.maximum is not None
        else (
            param.exclusive_maximum - 1 if param.exclusive_maximum is not None else max(center * 2, int(lo)) + INT_SPAN
        )
    )
    lo, hi = math.ceil(lo), math.floor(hi)
    return st.integers(lo, max(lo, hi))


def value(param: hs.Parameter, current: Any) -> st.SearchStrategy[Any]:
    """A redraw of one parameter (or its current value)."""
    if hs.is_schedule_ref(current) or (param.type in ("schedule", "string_list", "string") and param.enum is None):
        return st.just(current)
    if param.enum is not None:
        drawn: st.SearchStrategy[Any] = st.sampled_from(param.enum)
    elif param.type == "boolean":
        drawn = st.booleans()
    elif param.type == "integer":
        drawn = _integer(param, current)
    elif param.type == "number":
        drawn = _number(param, current)
    elif param.type == "number_pair":
        pair = current if isinstance(current, (list, tuple)) and len(current) == 2 else (param.default or (1.0, 1.0))
        drawn = st.tuples(_number(param, pair[0]), _number(param, pair[1]))
    else:  # pragma: no cover - the schema has no other types
        drawn = st.just(current)
    if param.nullable:
        drawn = st.none() | drawn
    return st.just(current) | drawn


def _current(spec: hs.Spec, given: Mapping[str, Any], name: str) -> Any:
    if name in given:
        return given[name]
    param = spec.parameters[name]
    return None if param.required else param.default


@st.composite
def arguments(draw: Any, spec_id: str, key: str) -> dict[str, Any]:
    """Canonical-name arguments: a case's ``key`` ("params" or "hyperparams") with redrawn values.

    Strategies take the spec id, not the Spec: Hypothesis reprs its strategies, and a Spec's repr is huge.
    """
    spec = hs.get(spec_id)
    base = draw(st.sampled_from(spec.cases)) if spec.cases else {}
    given = dict(base.get(key, {}))
    out: dict[str, Any] = {}
    for name, param in spec.parameters.items():
        current = _current(spec, given, name)
        if current is None and param.required:
            continue
        picked = draw(value(param, current))
        if name in given or picked != param.default:
            out[name] = picked
    return out


@st.composite
def schedule_inputs(draw: Any, spec_id: str) -> tuple[dict[str, Any], float, list[int]]:
    """(params, base_lr, steps) for a closed-form schedule."""
    spec = hs.get(spec_id)
    params = draw(arguments(spec_id, "params"))
    case_lrs = sorted({float(c.get("base_lr", 1.0)) for c in spec.cases}) or [1.0]
    base_lr = draw(st.sampled_from([*case_lrs, 1.0, 3e-4, 0.05]))
    ints = [abs(int(v)) for v in params.values() if isinstance(v, int) and not isinstance(v, bool)]
    horizon = 2 * max([10, *ints]) + 5
    steps = draw(st.lists(st.integers(0, horizon), min_size=1, max_size=6))
    return params, base_lr, steps


@st.composite
def optimizer_case(draw: Any, spec_id: str) -> dict[str, Any]:
    """A generated optimizer case (shapes, steps, seed, dtype, hyperparams) for the reference to fill."""
    hyperparams = draw(arguments(spec_id, "hyperparams"))
    shape_w = draw(st.lists(st.integers(1, 4), min_size=0, max_size=3))
    shape_b = draw(st.lists(st.integers(1, 5), min_size=1, max_size=1))
    return {
        "description": "hypothesis",
        "hyperparams": hyperparams,
        "dtype": draw(st.sampled_from(["float32", "float64"])),
        "seed": draw(st.integers(0, 2**16)),
        "steps": draw(st.integers(2, 5)),
        "shapes": {"w": shape_w, "b": shape_b},
    }
