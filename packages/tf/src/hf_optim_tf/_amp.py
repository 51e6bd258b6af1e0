"""Mixed precision helper: apply gradients through a LossScaleOptimizer and say whether the step was applied."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import keras
from keras import ops

__all__ = ["apply_scaled_gradients"]


def apply_scaled_gradients(optimizer: keras.optimizers.Optimizer, grads_and_vars: Iterable[tuple[Any, Any]]) -> Any:
    """``optimizer.apply_gradients(grads_and_vars)``; returns a scalar bool tensor: True if the step was applied.

    With ``keras.optimizers.LossScaleOptimizer`` (float16 training) a step whose scaled gradients hold inf/NaN is
    skipped: the inner optimizer is not called, so its ``iterations`` does not advance, and neither does a
    schedule driven by it (every ``learning_rate`` schedule of this package is evaluated at the inner
    ``iterations``) nor the per-variable ``step`` state of :class:`AdamW` / :class:`Adafactor`. What Keras does
    not gate is host-side bookkeeping: the returned flag is for that (e.g. only call
    ``PlateauSchedule.step(metric)``, count applied steps or log the lr when it is True). Works eagerly and
    inside ``tf.function``; for an optimizer without loss scaling it is always True.

    Args:
        optimizer: a Keras optimizer, usually ``keras.optimizers.LossScaleOptimizer(inner)``.
        grads_and_vars: pairs of (gradient of the *scaled* loss, variable), as for ``apply_gradients``.

    Returns:
        A scalar boolean tensor.

    Example:
        >>> opt = keras.optimizers.LossScaleOptimizer(AdamW(learning_rate=schedule))
        >>> with tf.GradientTape() as tape:
        ...     loss = opt.scale_loss(compute_loss())
        >>> grads = tape.gradient(loss, model.trainable_variables)
        >>> applied = apply_scaled_gradients(opt, zip(grads, model.trainable_variables))
    """
    before = ops.convert_to_tensor(optimizer.iterations)
    before = ops.add(before, ops.zeros_like(before))  # a value, not a live read of the variable
    optimizer.apply_gradients(grads_and_vars)
    return ops.greater(ops.convert_to_tensor(optimizer.iterations), before)
