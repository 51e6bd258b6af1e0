"""Helpers shared by the hf_optim_tf tests."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import keras
import numpy as np

BACKEND = keras.backend.backend()
# float64 is float64 on TensorFlow and torch; JAX keeps it only with jax_enable_x64 (and warns when it truncates).
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    FLOAT64 = keras.backend.standardize_dtype(keras.ops.convert_to_tensor(0.0, dtype="float64").dtype) == "float64"
# Bit-for-bit float32 learning rates and float64 trajectories within the float64 tolerance: measured on TensorFlow
# only. On Keras' torch backend float64 results are off by up to ~1.2e-7 relative (a Python float made float32 on
# the way: not found yet, issue 15); JAX without x64 has no float64. Elsewhere the float32 tolerances apply.
EXACT = BACKEND == "tensorflow" and FLOAT64


def traced(fn: Any) -> Any:
    """``fn`` traced the way the backend compiles a train step: ``tf.function`` on TensorFlow, eager elsewhere
    (JAX's jit needs stateless functions; Keras' own JAX trainer threads the optimizer state through)."""
    if BACKEND == "tensorflow":
        import tensorflow as tf

        return tf.function(fn)
    return fn


@contextlib.contextmanager
def _keras_setting(get: Callable[[], Any], set_: Callable[[Any], None], value: Any) -> Iterator[None]:
    """Run with a global Keras setting (``keras.config``'s getter and setter) at ``value``, then put it back."""
    previous = get()
    set_(value)
    try:
        yield
    finally:
        set_(previous)


def floatx(dtype: str) -> contextlib.AbstractContextManager[None]:
    """Run with ``keras.config.floatx() == dtype`` (float64 cases need a float64 lr variable)."""
    return _keras_setting(keras.config.floatx, keras.config.set_floatx, dtype)


def dtype_policy(name: str) -> contextlib.AbstractContextManager[None]:
    """Run under a Keras dtype policy (e.g. ``mixed_bfloat16``)."""
    return _keras_setting(keras.config.dtype_policy, keras.config.set_dtype_policy, name)


def ulps32(a: float, b: float) -> int:
    """Distance in float32 units in the last place between two values rounded to float32."""
    ia = int(np.array(a, dtype=np.float32).view(np.int32))
    ib = int(np.array(b, dtype=np.float32).view(np.int32))
    if (ia < 0) != (ib < 0):
        return abs(ia & 0x7FFFFFFF) + abs(ib & 0x7FFFFFFF)
    return abs(ia - ib)


def assert_close(actual: object, expected: object, rtol: float, atol: float, what: str = "") -> None:
    """|actual - expected| <= atol + rtol * |expected| elementwise (NaN equal to NaN)."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    np.testing.assert_allclose(a, e, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)
