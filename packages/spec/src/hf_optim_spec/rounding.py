"""Stochastic rounding of float32 values to bfloat16, defined once for every tier.

Stochastic rounding stores a float32 value ``x`` as one of the two bfloat16 values that bracket it, the
one farther away with probability proportional to how close ``x`` is to it, so that the stored value
equals ``x`` in expectation. Updates smaller than half a bfloat16 ulp then still move a parameter on
average instead of being rounded away every step.

The random bits are not drawn from a framework's generator: they are a counter-based hash of
``(rounding_seed, parameter index, step, element position)``. The same inputs give the same bits in
NumPy, torch and Keras, so a stochastically rounded run is reproducible, resumes exactly from a
checkpoint (the step is already part of the optimizer state) and is identical across frameworks.

* :func:`rounding_key` mixes ``(seed, index, step)`` into one 32-bit key;
* :func:`rounding_bits` hashes ``key`` with each element position into 16 random bits;
* :func:`round_stochastic` (NumPy) adds those bits below the bfloat16 significand of the float32 bit
  pattern and truncates: it rounds away from zero exactly when the discarded 16 bits plus the random
  16 bits carry, i.e. with probability (discarded bits) / 2**16.

:func:`fmix32`, :func:`rounding_key` and :func:`rounding_bits` use only ``^ & * + //`` on non-negative
integers below 2**48, so they run unchanged on Python ints, NumPy int64 arrays, torch int64 tensors and
TensorFlow int64 tensors (which have no shift operators), without overflow on any backend.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["MASK32", "fmix32", "round_stochastic", "rounding_bits", "rounding_key"]

MASK32 = 0xFFFFFFFF
_C1 = 0x85EBCA6B  # MurmurHash3's 32-bit finalizer constants
_C2 = 0xC2B2AE35


def _mul32(h: Any, c: int) -> Any:
    """``h * c mod 2**32`` for ``0 <= h < 2**32``: split ``c`` in 16-bit halves so no product reaches 2**49."""
    high = (h * (c // 65536)) & 0xFFFF
    return (high * 65536 + h * (c & 0xFFFF)) & MASK32


def fmix32(h: Any) -> Any:
    """MurmurHash3's finalizer: a bijection of 32-bit integers in which every input bit flips about half the output bits.

    ``h``: a Python int or an integer array / tensor (NumPy, torch, ``keras.ops``) holding values below 2**32.
    """
    h = h ^ (h // 65536)
    h = _mul32(h, _C1)
    h = h ^ (h // 8192)
    h = _mul32(h, _C2)
    return h ^ (h // 65536)


def rounding_key(seed: Any, index: Any, step: Any) -> Any:
    """The 32-bit key of one parameter's rounding at one step.

    Args:
      seed: the optimizer's ``rounding_seed`` (0 <= seed < 2**32).
      index: the parameter's position among all parameters of the optimizer (torch: over its param groups in
        order; Keras: its index in the built variable list).
      step: the step count the update uses (1 at the first update), an int or an integer tensor.
    """
    return fmix32(fmix32(fmix32(seed & MASK32) ^ (index & MASK32)) ^ (step & MASK32))


def rounding_bits(key: Any, positions: Any) -> Any:
    """16 random bits (0 <= bits < 2**16) per element position (a flat row-major index, as an int64 array)."""
    return fmix32((positions & MASK32) ^ key) // 65536


def round_stochastic(x: npt.ArrayLike, bits: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The reference: float32 values ``x`` stochastically rounded to bfloat16 with ``bits``; result in float64.

    ``x`` must hold float32 values (it is converted to float32 exactly); NaN stays NaN and infinities stay
    infinite; a value within one bfloat16 ulp of the largest finite bfloat16 may round up to infinity, with the
    probability stochastic rounding gives it.
    """
    values = np.asarray(x, dtype=np.float64)
    as32 = values.astype(np.float32)
    if not np.array_equal(as32.astype(np.float64), values, equal_nan=True):
        raise ValueError("round_stochastic expects float32 values; round them to float32 first")
    noise = np.asarray(bits, dtype=np.uint32)
    if noise.size and int(noise.max()) >= 1 << 16:
        raise ValueError(f"rounding bits must be below 2**16; got {int(noise.max())}")
    pattern = as32.view(np.uint32)
    rounded = ((pattern + noise) & np.uint32(0xFFFF0000)).view(np.float32)
    result: npt.NDArray[np.float64] = np.where(np.isnan(values), values, rounded.astype(np.float64))
    return result
