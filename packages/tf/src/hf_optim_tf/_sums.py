"""Adafactor's sums (the row and column means of ``g**2 + eps1``, the sums of squares behind the RMS of ``p`` and of
the update), written the way XLA:CPU runs them fast where TensorFlow's XLA compiles the step for a CPU.

XLA fuses an elementwise op into the reduction that reads its result, and XLA:CPU runs the fused loop far slower
than the two apart. There, the row and column means are products with a vector of ones (an ``einsum``, then a
division by the count, as a mean divides its sum), which XLA hands to Eigen's matrix-vector kernels; and each square
whose sum is taken passes an optimization barrier first, so that it is written out once and summed by a plain
reduction (a dot product of the flattened tensor with itself runs slower still). Measured 2026-12-05, 10M parameters
in ~200 variables, 2 threads, ``hf_optim_tf.Adafactor`` under ``jit_compile``: 69.5 ms a step with ``keras.ops``
reductions, 39 ms with barriers alone, 24 to 30 ms as here; the dot product of the flattened tensor for the sums of
squares: 68 ms. A float32 product on a CPU is float32 arithmetic, and a barrier changes no operation; the order of
the additions is Eigen's or XLA's either way, within the spec's float32 tolerance of each other
(``tests/test_keras_integration.py`` compares the step under XLA with the graph path).

Only where TensorFlow's XLA compiles for a CPU (inside ``jit_compile`` on a machine without a GPU). Elsewhere they
are ``keras.ops`` reductions: TensorFlow runs float32 products in TF32 on recent GPUs (and JAX in bfloat16 on TPUs
by default), which would change Adafactor's numerics there; eager ops have nothing to fuse; JAX's XLA runs the fused
reductions as fast as the unfused ones (27.1 against 27.2 ms jitted, with barriers); Keras' torch backend has no
XLA. A TensorFlow whose internal modules moved gets the reductions too.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import keras
from keras import ops

__all__ = ["KERAS_OPS", "mean_over", "root_size", "sum_of_squares"]


def sum_of_squares(x: Any) -> Any:
    """:math:`\\sum x^2` over every element of ``x`` (a scalar of its dtype)."""
    square = ops.square(x)
    barrier = _xla_cpu_barrier()
    return ops.sum(square if barrier is None else barrier(square)[0])


def root_size(x: Any) -> float:
    """The square root of the element count of ``x`` (the divisor of its RMS)."""
    return math.sqrt(math.prod(x.shape))


def mean_over(x: Any, axis: int) -> Any:
    """The mean of ``x`` (rank >= 2) along its last (``axis=-1``) or second-to-last (``axis=-2``) axis."""
    if _xla_cpu_barrier() is None:
        return ops.mean(x, axis=axis)
    count = x.shape[axis]
    ones = ops.ones((count,), dtype=x.dtype)
    total = ops.einsum("...ij,j->...i", x, ones) if axis == -1 else ops.einsum("...ij,i->...j", x, ones)
    return ops.divide(total, ops.cast(count, x.dtype))


class _KerasOps:
    """``keras.ops`` with this module's two sums as two functions more: the ``o`` of Adafactor's formulas in
    ``update_step`` (``hf_optim_tf._formulas.adafactor_direction``)."""

    mean_over = staticmethod(mean_over)
    root_size = staticmethod(root_size)
    sum_of_squares = staticmethod(sum_of_squares)

    def __getattr__(self, name: str) -> Any:
        return getattr(ops, name)


KERAS_OPS = _KerasOps()


def _xla_cpu_barrier() -> Any:
    """TensorFlow's optimization barrier when this runs inside TensorFlow's XLA compilation (``jit_compile``) on a
    machine without a GPU, else None."""
    if keras.backend.backend() != "tensorflow":
        return None
    tools = _tensorflow_tools()
    if tools is None:
        return None
    get_default_graph, in_xla_context, barrier = tools
    if not in_xla_context(get_default_graph()) or _tensorflow_has_gpu():
        return None
    return barrier


@functools.cache
def _tensorflow_tools() -> tuple[Any, Any, Any] | None:
    """TensorFlow's default graph getter, its XLA-context test and its optimization barrier (None without them)."""
    try:
        from tensorflow.compiler.tf2xla.python.xla import optimization_barrier
        from tensorflow.python.framework.ops import get_default_graph
        from tensorflow.python.ops.control_flow_util import GraphOrParentsInXlaContext
    except ImportError:
        return None
    return get_default_graph, GraphOrParentsInXlaContext, optimization_barrier


@functools.cache
def _tensorflow_has_gpu() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_logical_devices("GPU"))
