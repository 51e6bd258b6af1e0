"""Where a step's float32 result goes: the variable's dtype, rounded to nearest or (bfloat16) stochastically.

The stochastic bits are ``hf_optim_spec.rounding``'s hash of (seed, variable index, step, element position), so a
run is reproducible, resumes exactly and rounds like the torch port.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
from hf_optim_spec.rounding import MASK32, fmix32, rounding_bits, rounding_key
from keras import ops

from ._variables import variable_path

__all__ = [
    "ROUNDING_DOC",
    "check_stochastic_rounding",
    "parameter_rounding_key",
    "round_stochastic_bfloat16",
    "store_parameter",
]


ROUNDING_DOC = """\
        stochastic_rounding: store bfloat16 variables with stochastic rounding of the float32
            result of the step instead of rounding to nearest (unbiased: updates below half a
            bfloat16 ulp still move the variable on average). The random bits are a hash of
            ``(rounding_seed, variable index, step, element position)``
            (``hf_optim_spec.rounding``), not a framework RNG: a run is reproducible, resumes
            exactly from a checkpoint and rounds like the torch port. State tensors are rounded
            to nearest. float32/float64 variables: no effect. float16 variables: ValueError in
            ``build`` (only bfloat16 is defined). Defaults to False.
        rounding_seed: seed of the stochastic-rounding bits, ``0 <= rounding_seed < 2**32``;
            runs with the same seed round identically. Defaults to 0."""
"""The ``Args:`` text of ``stochastic_rounding`` and ``rounding_seed``, shared by the optimizers' docstrings."""


def check_stochastic_rounding(var_list: Sequence[Any], stochastic_rounding: bool) -> None:
    """Reject float16 variables when stochastic rounding is on (called in ``build``, before any
    state is created or any variable changes).

    Raises:
      ValueError: a float16 variable with ``stochastic_rounding=True``.
    """
    if not stochastic_rounding:
        return
    for index, variable in enumerate(var_list):
        if str(variable.dtype) == "float16":
            raise ValueError(
                "`stochastic_rounding=True` supports bfloat16 parameters; got a float16 parameter "
                f"(index {index}, {variable_path(variable)!r})"
            )


def round_stochastic_bfloat16(x: Any, key: Any) -> Any:
    """Round float32 values ``x`` stochastically to bfloat16 with the bits of rounding ``key``.

    The Keras twin of ``hf_optim_spec.rounding.round_stochastic``: the 16 random bits of each element
    (``rounding_bits(key, position)``, positions are the row-major flat indices) are added to the low
    half of the float32 bit pattern and the low half is dropped, so the result rounds away from zero
    with probability (dropped bits) / 2**16. Integer ops only (no float arithmetic, so flush-to-zero
    cannot touch subnormals); NaN stays NaN (its quiet bit is set), infinities stay infinite.

    Args:
      x: a float32 tensor of static shape.
      key: ``hf_optim_spec.rounding.rounding_key(seed, index, step)``, an int or an int64 tensor (uint32 on JAX).

    Returns:
      A bfloat16 tensor of the shape of ``x``.
    """
    x = ops.cast(x, "float32")
    shape = tuple(x.shape)
    if _uint32_hash():
        positions = ops.reshape(ops.arange(math.prod(shape), dtype="uint32"), shape)
        bits = ops.cast(_rounding_bits_uint32(key, positions), "int32")  # in [0, 65536)
    else:
        positions = ops.reshape(ops.arange(math.prod(shape), dtype="int64"), shape)
        bits = ops.cast(rounding_bits(key, positions), "int32")  # in [0, 65536)
    pattern = _bitcast(x, "int32")
    # Only a positive NaN's pattern can overflow int32 here, and NaN is replaced below.
    high = ops.right_shift(ops.bitwise_and(ops.add(pattern, bits), -65536), 16)
    is_nan = ops.greater(ops.bitwise_and(pattern, 0x7FFFFFFF), 0x7F800000)
    high = ops.where(is_nan, ops.bitwise_or(ops.right_shift(pattern, 16), 0x40), high)
    return _bitcast(ops.cast(high, "int16"), "bfloat16")


def _bitcast(x: Any, dtype: str) -> Any:
    """``x``'s bits reinterpreted as ``dtype`` of the same width (``keras.ops.view`` where Keras has it)."""
    view = getattr(ops, "view", None)
    if view is not None:
        return view(x, dtype)
    backend = keras.backend.backend()  # pragma: no cover - Keras before ops.view
    if backend == "tensorflow":  # pragma: no cover
        import tensorflow as tf

        return tf.bitcast(x, getattr(tf, dtype))
    if backend == "jax":  # pragma: no cover
        import jax

        return jax.lax.bitcast_convert_type(x, dtype)
    if backend == "torch":  # pragma: no cover
        import torch

        return x.view(getattr(torch, dtype))
    raise NotImplementedError(  # pragma: no cover
        f"stochastic rounding needs a bitcast; Keras {keras.__version__} has no `keras.ops.view` and the "
        f"{backend!r} backend is not one of tensorflow, jax, torch. Upgrade Keras."
    )


def _uint32_hash() -> bool:
    """Whether the rounding hash runs in uint32 (wrapping multiply) instead of int64: on JAX, whose int64 is
    int32 unless ``jax_enable_x64`` is set (the int64 route would overflow). Both give the same bits."""
    return keras.backend.backend() == "jax"


def _fmix32_uint32(h: Any) -> Any:
    """``hf_optim_spec.rounding.fmix32`` on a uint32 tensor: shifts and the wrapping uint32 multiply."""
    c1 = ops.convert_to_tensor(0x85EBCA6B, dtype="uint32")
    c2 = ops.convert_to_tensor(0xC2B2AE35, dtype="uint32")
    h = ops.bitwise_xor(h, ops.right_shift(h, 16))
    h = ops.multiply(h, c1)
    h = ops.bitwise_xor(h, ops.right_shift(h, 13))
    h = ops.multiply(h, c2)
    return ops.bitwise_xor(h, ops.right_shift(h, 16))


def _rounding_key_uint32(seed: int, index: int, step: Any) -> Any:
    """``hf_optim_spec.rounding.rounding_key`` as a uint32 tensor (the ``(seed, index)`` part in Python ints)."""
    partial = fmix32(fmix32(seed & MASK32) ^ (index & MASK32))
    step32 = ops.cast(step, "uint32")  # steps are below 2**31; the key takes step mod 2**32 anyway
    return _fmix32_uint32(ops.bitwise_xor(ops.convert_to_tensor(partial, dtype="uint32"), step32))


def _rounding_bits_uint32(key: Any, positions: Any) -> Any:
    """``hf_optim_spec.rounding.rounding_bits`` for a uint32 key and uint32 positions."""
    if isinstance(key, int):
        key = ops.convert_to_tensor(key & MASK32, dtype="uint32")
    return ops.right_shift(_fmix32_uint32(ops.bitwise_xor(positions, ops.cast(key, "uint32"))), 16)


def store_parameter(value: Any, dtype: str, stochastic_key: Any = None) -> Any:
    """The new value of a variable of ``dtype`` from its float32 (or wider) result: rounded to nearest,
    or stochastically (:func:`round_stochastic_bfloat16`) when ``dtype`` is bfloat16 and a key is given."""
    if stochastic_key is not None and dtype == "bfloat16":
        return round_stochastic_bfloat16(value, stochastic_key)
    return ops.cast(value, dtype)


def parameter_rounding_key(seed: int, index: int, step: Any) -> Any:
    """``hf_optim_spec.rounding.rounding_key`` for the variable at ``index`` at ``step`` (an int64 tensor; a
    uint32 tensor on JAX, see :func:`_uint32_hash`)."""
    if _uint32_hash():
        return _rounding_key_uint32(seed, index, step)
    return rounding_key(seed, index, ops.cast(step, "int64"))
