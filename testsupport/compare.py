"""How the suites compare numbers: within a spec tolerance, in float32 ulps, or bit for bit."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import hf_optim_spec as hs
import numpy as np

__all__ = ["bitwise_differences", "finite_or_equal", "same_bits", "ulp_distance", "within"]


def ulp_distance(a: Any, b: Any) -> np.ndarray:
    """Distance in float32 ulps (0 = bit-identical; NaN vs NaN = 0; NaN vs a number = 2**31)."""
    a32 = np.atleast_1d(np.asarray(a, dtype=np.float32))
    b32 = np.atleast_1d(np.asarray(b, dtype=np.float32))

    def ordered(x: np.ndarray) -> np.ndarray:
        bits = x.view(np.int32).astype(np.int64)
        return np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)

    distance = np.abs(ordered(a32) - ordered(b32))
    nan_a, nan_b = np.isnan(a32), np.isnan(b32)
    distance = np.where(nan_a & nan_b, 0, distance)
    return np.where(nan_a ^ nan_b, 2**31, distance)


def finite_or_equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise: both NaN, or equal infinities (what the tolerance check cannot express)."""
    return (np.isnan(a) & np.isnan(b)) | (np.isinf(a) & (a == b))


def within(actual: Any, expected: Any, tol: hs.Tolerance) -> tuple[np.ndarray, float, float]:
    """(ok mask, max abs error, max rel error) of ``|actual - expected| <= atol + rtol * |expected|``.

    The relative error is taken over the values with ``|expected| > atol`` only (near zero it says nothing).
    """
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        raise AssertionError(f"shape {a.shape} != expected shape {e.shape}")
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        diff = np.abs(a - e)
        ok = (diff <= tol.atol + tol.rtol * np.abs(e)) | finite_or_equal(a, e)
        finite = np.isfinite(diff)
        max_abs = float(np.max(diff[finite], initial=0.0))
        scaled = finite & (np.abs(e) > max(tol.atol, 0.0)) & (np.abs(e) > 0)
        max_rel = float(np.max(diff[scaled] / np.abs(e[scaled]), initial=0.0))
    if not np.all(finite | finite_or_equal(a, e)):
        max_abs = math.inf
    return ok, max_abs, max_rel


def same_bits(a: Sequence[np.ndarray], b: Sequence[np.ndarray]) -> bool:
    """Two lists of arrays are equal bit for bit (dtypes, shapes and NaN payloads included)."""
    return len(a) == len(b) and all(
        x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes() for x, y in zip(a, b)
    )


def bitwise_differences(expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray], where: str) -> list[str]:
    """Bitwise comparison of two snapshots (name -> array); one line per difference."""
    problems = []
    for key in sorted(set(expected) | set(actual)):
        if key not in expected or key not in actual:
            problems.append(f"{where}: {key} only in {'expected' if key in expected else 'restored'} run")
            continue
        a, b = np.asarray(expected[key]), np.asarray(actual[key])
        if not same_bits([a], [b]):
            diff = np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))) if a.shape == b.shape else "shape"
            problems.append(
                f"{where}: {key} differs (max |diff| {diff}; expected {a.ravel()[:4]}, got {b.ravel()[:4]})"
            )
    return problems
