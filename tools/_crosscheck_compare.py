"""Comparing what transformers computed with a case's expected values, under the spec tolerance of a dtype."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import hf_optim_spec as hs
import numpy as np
from hf_optim_spec.reference._lowp import round_to

__all__ = ["Comparison", "compare_schedule", "compare_structured"]


@dataclass
class Comparison:
    ok: bool = True
    max_abs: float = 0.0
    max_rel: float = 0.0
    exact: bool = True
    first_failure: str = ""

    def fail(self, message: str) -> None:
        if self.ok:
            self.first_failure = message
        self.ok = False


def _fmt(x: float) -> str:
    return repr(float(x))


def _compare_leaf(label: str, expected: Any, actual: Any, *, tol: hs.Tolerance, dtype: str, result: Comparison) -> None:
    if expected is None or actual is None:
        if expected is not actual:
            result.fail(f"{label}: transformers {actual!r}, expected {expected!r}")
        return
    exp = np.asarray(expected, dtype=np.float64)
    act = np.asarray(actual, dtype=np.float64)
    if exp.shape != act.shape:
        result.fail(f"{label}: transformers shape {act.shape}, expected shape {exp.shape}")
        return
    if not (np.array_equal(act, exp, equal_nan=True) or np.array_equal(act, round_to(exp, dtype), equal_nan=True)):
        result.exact = False
    diff = np.abs(act - exp)
    both_nan = np.isnan(act) & np.isnan(exp)
    diff = np.where(both_nan, 0.0, diff)
    if diff.size:
        result.max_abs = max(result.max_abs, float(np.nanmax(np.where(np.isnan(diff), np.inf, diff))))
        nonzero = exp != 0
        if nonzero.any():
            rel = diff[nonzero] / np.abs(exp[nonzero])
            result.max_rel = max(result.max_rel, float(np.max(np.where(np.isnan(rel), np.inf, rel))))
    bad = ~(diff <= tol.allowed(exp))
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        position = f"{label}[{', '.join(map(str, where))}]" if exp.ndim else label
        result.fail(
            f"{position}: transformers {_fmt(act[where])}, expected {_fmt(exp[where])} "
            f"(|diff| {float(diff[where]):.3g} > atol {tol.atol:g} + rtol {tol.rtol:g} * |expected|)"
        )


def _numeric(value: Any) -> bool:
    """A number or a rectangular nested list of numbers (one array leaf)."""
    if isinstance(value, bool) or value is None or isinstance(value, str | Mapping):
        return False
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return array.dtype == np.float64


def _walk(label: str, expected: Any, actual: Any, *, tol: hs.Tolerance, dtype: str, result: Comparison) -> None:
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping) or set(expected) != set(actual):
            got = sorted(actual) if isinstance(actual, Mapping) else type(actual).__name__
            result.fail(f"{label}: transformers has keys {got}, expected keys {sorted(expected)}")
            return
        for key in expected:
            _walk(
                f"{label}.{key}" if label else str(key), expected[key], actual[key], tol=tol, dtype=dtype, result=result
            )
    elif expected is None or isinstance(expected, str | bool):
        if actual != expected or type(actual) is not type(expected):
            result.fail(f"{label}: transformers {actual!r}, expected {expected!r}")
    elif _numeric(expected):
        _compare_leaf(label, expected, actual, tol=tol, dtype=dtype, result=result)
    else:  # a list of structures (steps, ops) or of arrays of different shapes / None (accumulator slots)
        if not isinstance(actual, Sequence) or len(expected) != len(actual):
            got = len(actual) if isinstance(actual, Sequence) else type(actual).__name__
            result.fail(f"{label}: transformers has {got} entries, expected {len(expected)}")
            return
        for i, (exp, act) in enumerate(zip(expected, actual)):
            _walk(f"{label}[{i}]", exp, act, tol=tol, dtype=dtype, result=result)


def compare_schedule(
    positions: Sequence[str], expected: Sequence[float], actual: Sequence[float], tol: hs.Tolerance, dtype: str
) -> Comparison:
    """Element-wise comparison of a schedule case, labelled by step (or metric index)."""
    result = Comparison()
    if len(expected) != len(actual):
        result.fail(f"transformers gave {len(actual)} values, expected {len(expected)}")
        return result
    for label, exp, act in zip(positions, expected, actual):
        _compare_leaf(label, exp, act, tol=tol, dtype=dtype, result=result)
    return result


def compare_structured(expected: Any, actual: Any, tol: hs.Tolerance, dtype: str) -> Comparison:
    """Leaf by leaf: optimizers' ``params[k]`` (after step k, 0-based) and ``state``; accumulators' ``[op]``."""
    result = Comparison()
    _walk("", expected, actual, tol=tol, dtype=dtype, result=result)
    return result
