"""Shared support of the metric-stepped schedule tests (GreedySchedule, PlateauSchedule)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf


def optimizer_run(
    schedule: Any,
    metric_at: Callable[[int], float],
    start: int,
    stop: int,
    *,
    restore: str | None = None,
    save: str | None = None,
) -> list[float]:
    """AdamW on ``schedule`` for steps ``start..stop-1``, the schedule stepped with ``metric_at(t)`` after each
    optimizer step; the optimizer's lr after every step, then the sum of the final weights.

    ``restore``/``save``: a ``tf.train.Checkpoint`` of the weights and the optimizer to read first / write last.
    """
    from hf_optim_tf import AdamW

    variable = keras.Variable(np.linspace(-1.0, 1.0, 4, dtype="float32"))
    optimizer = AdamW(schedule, weight_decay=0.01)
    optimizer.build([variable])
    if restore is not None:
        tf.train.Checkpoint(variable=variable, optimizer=optimizer).read(restore).assert_consumed()
    out = []
    for t in range(start, stop):
        optimizer.apply_gradients([(tf.constant(np.cos(np.arange(4.0) + t), tf.float32), variable)])
        schedule.step(metric_at(t))
        out.append(float(optimizer.learning_rate))
    if save is not None:
        tf.train.Checkpoint(variable=variable, optimizer=optimizer).write(save)
    return [*out, float(variable.numpy().sum())]


def assert_bad_state_rejected(schedule: Any, change: dict[str, Any], error: type[Exception], match: str) -> None:
    """``schedule``'s config with ``change`` merged into its saved state must fail ``from_config`` with ``error``."""
    config = schedule.get_config()
    config["state"] = {**config["state"], **change}
    with pytest.raises(error, match=match):
        type(schedule).from_config(config)
