"""A value that TensorFlow's XLA computes in a kernel of its own on CPU, not fused into the reductions that read it.

XLA fuses an elementwise op into a reduction of its result, and on CPU the fused loop is far slower than the two
ops apart. :class:`~hf_optim_tf.Adafactor` sums three such values per variable (``g**2 + eps1`` along rows and
columns, ``p**2`` and the update's square for their RMS): under ``jit_compile`` on TensorFlow, 10M parameters in
~200 variables on 2 threads, its step took 65 ms fused and 36 ms with those values kept apart (measured
2026-12-05). An optimization barrier keeps them apart. It runs the same operations in the same precision; the order
in which XLA adds up a sum is its own either way.

Only where TensorFlow's XLA compiles the step for a CPU (inside ``jit_compile`` on a machine without a GPU).
Elsewhere :func:`unfused` returns the value itself: XLA's GPU reductions fuse well (a barrier would only add a write
and a read of the value), eager ops have nothing to fuse, Keras' torch backend has no XLA, and JAX's XLA runs the
fused reductions as fast as the unfused ones (the same step under ``jax.jit`` with barriers: 27.1 against 27.2 ms,
the barriers in its lowered program). A TensorFlow whose internal modules moved gives the value itself too.
"""

from __future__ import annotations

import functools
from typing import Any

import keras

__all__ = ["unfused"]


def unfused(x: Any) -> Any:
    """``x``, computed on its own where TensorFlow's XLA compiles for a CPU (see the module's docstring), else ``x``
    as it is."""
    tools = _tensorflow_tools() if keras.backend.backend() == "tensorflow" else None
    if tools is None:
        return x
    get_default_graph, in_xla_context, barrier = tools
    if not in_xla_context(get_default_graph()) or _tensorflow_has_gpu():
        return x
    return barrier(x)[0]


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
