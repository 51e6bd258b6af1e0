"""Eager ``apply_gradients`` on TensorFlow: the update of all variables runs as one traced function, kept."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import hf_optim_spec as hs
import keras
import numpy as np
import pytest

pytestmark = pytest.mark.skipif(
    os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow", reason="the traced update is TensorFlow's only"
)

import hf_optim_tf  # noqa: E402
from hf_optim_tf._traced_update import MAX_TRACES  # noqa: E402

OPTIMIZERS: dict[str, Callable[[Any], keras.optimizers.Optimizer]] = {
    "AdamW": lambda lr: hf_optim_tf.AdamW(learning_rate=lr, weight_decay=0.01),
    "AdamWeightDecay": lambda lr: hf_optim_tf.AdamWeightDecay(learning_rate=lr, weight_decay_rate=0.01),
    "Adafactor": lambda lr: hf_optim_tf.Adafactor(learning_rate=lr, relative_step=False),
}
SPEC_IDS = {"AdamW": "adamw", "AdamWeightDecay": "adam_weight_decay", "Adafactor": "adafactor"}
SHAPES = [(6, 5), (5,), (3, 4)]


def _train(name: str, steps: int, lr: Any = 1e-2) -> tuple[keras.optimizers.Optimizer, list[np.ndarray]]:
    import tensorflow as tf

    rng = np.random.default_rng(0)
    variables = [keras.Variable(rng.standard_normal(s).astype("float32")) for s in SHAPES]
    optimizer = OPTIMIZERS[name](lr)
    for _ in range(steps):
        grads = [tf.constant(rng.standard_normal(s).astype("float32")) for s in SHAPES]
        optimizer.apply_gradients(zip(grads, variables))
    return optimizer, [v.numpy() for v in variables]


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_an_eager_step_is_traced_once_and_equals_the_eager_ops(name: str) -> None:
    import tensorflow as tf

    optimizer, traced = _train(name, steps=4)
    functions = list(optimizer._traced_updates.values())
    assert len(functions) == 1, "one traced update for the one list of variables"
    assert functions[0].experimental_get_tracing_count() == 1, "four steps, one trace"
    tf.config.run_functions_eagerly(True)
    try:
        _, eager = _train(name, steps=4)
    finally:
        tf.config.run_functions_eagerly(False)
    tol = hs.get(SPEC_IDS[name]).tol("float32")
    for a, b in zip(traced, eager):
        np.testing.assert_allclose(a, b, rtol=tol.rtol, atol=tol.atol)
    if name == "AdamW":  # its ops leave TensorFlow's graph rewrites nothing to change: bit for bit
        assert all(np.array_equal(a, b) for a, b in zip(traced, eager))


def test_a_new_learning_rate_takes_effect_without_a_retrace() -> None:
    optimizer, _ = _train("AdamW", steps=1)
    schedule_optimizer, _ = _train("AdamW", steps=3, lr=keras.optimizers.schedules.ExponentialDecay(1e-2, 1, 0.5))
    for opt in (optimizer, schedule_optimizer):
        (function,) = opt._traced_updates.values()
        assert function.experimental_get_tracing_count() == 1
    import tensorflow as tf

    variable = keras.Variable(np.ones((2,), "float32"))
    opt = hf_optim_tf.AdamW(learning_rate=1.0, weight_decay=0.0)
    grad = tf.constant([1.0, -1.0])
    opt.apply_gradients([(grad, variable)])  # Adam's first step moves by lr
    before = variable.numpy()
    opt.learning_rate = 0.25
    opt.apply_gradients([(grad, variable)])
    moved = before - variable.numpy()
    np.testing.assert_allclose(np.abs(moved), 0.25, rtol=1e-3)
    assert next(iter(opt._traced_updates.values())).experimental_get_tracing_count() == 1


def test_more_variable_lists_than_kept_run_eagerly_and_correctly() -> None:
    import tensorflow as tf

    def run() -> tuple[keras.optimizers.Optimizer, list[np.ndarray]]:
        variables = [keras.Variable(np.full((3,), float(i), "float32")) for i in range(MAX_TRACES + 2)]
        optimizer = hf_optim_tf.AdamW(learning_rate=0.5, weight_decay=0.0)
        optimizer.build(variables)
        for variable in variables:  # a list of one variable each: MAX_TRACES + 2 lists
            optimizer.apply_gradients([(tf.ones((3,)), variable)])
        return optimizer, [v.numpy() for v in variables]

    optimizer, traced = run()
    assert len(optimizer._traced_updates) == MAX_TRACES
    tf.config.run_functions_eagerly(True)
    try:
        _, eager = run()
    finally:
        tf.config.run_functions_eagerly(False)
    assert all(np.array_equal(a, b) for a, b in zip(traced, eager))
    assert all(not np.array_equal(v, np.full((3,), float(i))) for i, v in enumerate(traced)), "every list stepped"


def test_a_step_inside_a_tf_function_is_not_traced_again() -> None:
    import tensorflow as tf

    variable = keras.Variable(np.ones((4,), "float32"))
    optimizer = hf_optim_tf.AdamW(learning_rate=0.1)
    optimizer.build([variable])

    @tf.function
    def step() -> None:
        optimizer.apply_gradients([(tf.ones((4,)), variable)])

    step()
    step()
    assert optimizer._traced_updates == {}
    assert float(optimizer.iterations.numpy()) == 2.0
