"""GradientAccumulator: sums gradients over several steps, per replica, without synchronisation.

On the TensorFlow backend the sums are ``tf.Variable`` objects synchronised ON_READ (per replica under
``tf.distribute``); on the other Keras backends they are plain ``keras.Variable`` objects (single device)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import hf_optim_spec as hs
import keras
from keras import ops

__all__ = ["GradientAccumulator"]


def _local_variable(initial_value: Any) -> Any:
    if keras.backend.backend() != "tensorflow":
        return keras.Variable(initial_value, trainable=False, autocast=False)
    import tensorflow as tf

    # ON_READ: assignments stay on the replica that makes them (no all-reduce per step);
    # ONLY_FIRST_REPLICA: reading it in cross-replica context returns the first replica's copy.
    return tf.Variable(
        initial_value,
        trainable=False,
        synchronization=tf.VariableSynchronization.ON_READ,
        aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
    )


def _read(variable: Any) -> Any:
    # tf.Variable.value() reads the current replica's copy; keras.Variable.value is a property.
    value = variable.value
    return value() if callable(value) else value


class GradientAccumulator:
    """Accumulates gradients over several calls (transformers' TF ``GradientAccumulator``).

    Each call adds one list of gradients to running sums and increments ``step``. Under a
    ``tf.distribute`` strategy, call it in replica context: each replica sums its own gradients
    locally, with no communication; read ``gradients`` on the replica, scale them if needed,
    and pass them to ``apply_gradients`` (which performs the all-reduce). ``None`` entries are
    allowed and stay ``None``.

    .. math::

        G_i \\leftarrow G_i + g_i^{(k)}, \\qquad \\text{step} \\leftarrow \\text{step} + 1

    Example:
        >>> acc = GradientAccumulator()
        >>> acc([keras.ops.array([1.0, 2.0])]); acc([keras.ops.array([-2.0, 1.0])])
        >>> acc.gradients[0].numpy().tolist(), int(acc.step)
        ([-1.0, 3.0], 2)

    Raises:
        ValueError: when a call passes a different number of gradients than the first call,
            or when ``gradients`` is read before the first call.
    """

    def __init__(self, **kwargs: Any) -> None:
        # The accumulator takes no arguments; the spec check gives the same error as the torch twin.
        hs.validate("gradient_accumulator", kwargs, framework="tf")
        self._gradients: list[Any] = []
        self._accum_steps: Any = None

    def _step_variable(self) -> Any:
        if self._accum_steps is None:
            self._accum_steps = _local_variable(ops.convert_to_tensor(0, dtype="int64"))
        return self._accum_steps

    @property
    def step(self) -> Any:
        """Number of accumulated steps on the current replica (int64 scalar)."""
        return _read(self._step_variable())

    @property
    def gradients(self) -> list[Any]:
        """The accumulated gradients on the current replica."""
        if not self._gradients:
            raise ValueError("The accumulator should be called first to initialize the gradients")
        return [_read(g) if g is not None else None for g in self._gradients]

    def __call__(self, gradients: Sequence[Any]) -> None:
        """Adds ``gradients`` to the sums on the current replica."""
        gradients = list(gradients)
        if not self._gradients:
            self._step_variable()
            self._gradients.extend(_local_variable(ops.zeros_like(g)) if g is not None else None for g in gradients)
        if len(gradients) != len(self._gradients):
            raise ValueError(f"Expected {len(self._gradients)} gradients, but got {len(gradients)}")
        for accumulated, gradient in zip(self._gradients, gradients, strict=True):
            if accumulated is not None and gradient is not None:
                accumulated.assign_add(ops.cast(gradient, accumulated.dtype))
        self._step_variable().assign_add(1)

    def reset(self) -> None:
        """Sets the sums and ``step`` back to zero on the current replica."""
        if not self._gradients:
            return
        self._step_variable().assign(0)
        for accumulated in self._gradients:
            if accumulated is not None:
                accumulated.assign(ops.zeros(accumulated.shape, accumulated.dtype))
