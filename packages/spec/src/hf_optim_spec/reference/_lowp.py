"""Storage rounding of float64 values to narrower IEEE-style floats, in NumPy only.

The references compute in float64. A framework that keeps a tensor in ``bfloat16``, ``float16`` or
``float32`` stores every new value rounded to that format, so the reference emulates that storage
step by rounding float64 results with :func:`round_to`. The rounding is done directly from float64
(round to nearest, ties to even, gradual underflow, overflow to infinity) and never through
float32 first, which would round twice.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from ..rounding import round_stochastic, rounding_bits

__all__ = ["FORMATS", "FloatFormat", "representable_in", "round_to", "store"]

Array = npt.NDArray[np.float64]


class FloatFormat(NamedTuple):
    """A binary floating-point format: significand bits (with the implicit one) and exponent range."""

    precision: int
    emin: int
    emax: int


FORMATS: dict[str, FloatFormat] = {
    "float32": FloatFormat(precision=24, emin=-126, emax=127),
    "bfloat16": FloatFormat(precision=8, emin=-126, emax=127),
    "float16": FloatFormat(precision=11, emin=-14, emax=15),
}


def round_to(x: npt.ArrayLike, dtype: str) -> Array:
    """Round float64 values to the nearest value of ``dtype`` (ties to even); result in float64.

    ``dtype`` is ``"float64"`` (a copy), ``"float32"``, ``"bfloat16"`` or ``"float16"``. NaN and
    infinities pass through; finite values beyond the largest finite value become infinities.
    """
    values = np.array(x, dtype=np.float64)
    if dtype == "float64":
        return values
    try:
        fmt = FORMATS[dtype]
    except KeyError:
        raise ValueError(f"unknown dtype {dtype!r}; expected float64, float32, bfloat16 or float16") from None
    finite = np.isfinite(values) & (values != 0.0)
    magnitude = np.where(finite, np.abs(values), 1.0)
    # frexp: magnitude = m * 2**e with m in [0.5, 1), so the leading bit has weight 2**(e - 1).
    _, exponent = np.frexp(magnitude)
    leading = exponent.astype(np.int64) - 1
    # Weight of the last significand bit; below the normal range it stays at the subnormal quantum.
    quantum_exp = np.maximum(leading, fmt.emin) - (fmt.precision - 1)
    quantum = np.ldexp(1.0, quantum_exp)
    # Division and multiplication by a power of two are exact; np.rint rounds half to even.
    rounded = np.rint(values / quantum) * quantum
    overflow_at = np.ldexp(1.0, fmt.emax + 1)
    rounded = np.where(np.abs(rounded) >= overflow_at, np.copysign(np.inf, values), rounded)
    result: Array = np.where(finite, rounded, values)
    return result


def representable_in(x: npt.ArrayLike, dtype: str) -> bool:
    """True when every value of ``x`` is exactly a value of ``dtype``."""
    values = np.asarray(x, dtype=np.float64)
    return bool(np.array_equal(round_to(values, dtype), values, equal_nan=True))


def store(x: npt.ArrayLike, dtype: str, key: int | None = None) -> Array:
    """Store values computed in float32 (or wider) in ``dtype``: to nearest, or stochastically when ``key`` is given.

    ``key`` is the :func:`hf_optim_spec.rounding.rounding_key` of the parameter at this step; it only matters for
    ``bfloat16`` (float32/float64 storage keeps the float32 result as is). The element positions are the
    row-major flat indices.

    Raises:
      ValueError: stochastic rounding to ``float16`` (only bfloat16 is defined).
    """
    if key is None or dtype in ("float32", "float64"):
        return round_to(x, dtype)
    if dtype != "bfloat16":
        raise ValueError(f"stochastic rounding supports bfloat16 parameters; got a {dtype} parameter")
    values = round_to(x, "float32")
    bits = rounding_bits(key, np.arange(values.size, dtype=np.int64)).reshape(values.shape)
    return round_stochastic(values, bits)
