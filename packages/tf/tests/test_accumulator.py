"""GradientAccumulator: transformers' TF tests (ported), replica context, spec cases."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from hf_optim_tf import GradientAccumulator, create_optimizer


def test_sums_counts_and_resets() -> None:
    grads = [[1.0, 2.0], [-2.0, 1.0], [-1.0, 2.0]]
    acc = GradientAccumulator()
    for g in grads:
        acc([tf.constant(g)])
    with pytest.raises(ValueError, match="Expected 1 gradients, but got 2"):
        acc([tf.constant([1.0, 1.0]), tf.constant([2.0, 2.0])])
    assert int(acc.step) == len(grads)
    assert len(acc.gradients) == 1
    np.testing.assert_allclose(acc.gradients[0].numpy(), np.sum(grads, axis=0))
    acc.reset()
    assert int(acc.step) == 0
    np.testing.assert_array_equal(acc.gradients[0].numpy(), np.zeros(2))


def test_gradients_before_first_call_is_an_error() -> None:
    acc = GradientAccumulator()
    with pytest.raises(ValueError, match="called first"):
        _ = acc.gradients
    acc.reset()  # a no-op before the first call
    assert int(acc.step) == 0


def test_none_entries_stay_none_and_dtype_follows_first_call() -> None:
    acc = GradientAccumulator()
    acc([tf.constant([1.0], tf.float64), None])
    acc([tf.constant([0.5], tf.float64), tf.constant([3.0])])
    first, second = acc.gradients
    assert second is None
    assert first.dtype == tf.float64
    assert float(first[0]) == 1.5


def test_inside_tf_function() -> None:
    acc = GradientAccumulator()
    values = np.arange(12, dtype=np.float32).reshape(3, 2, 2)

    @tf.function
    def add(g: tf.Tensor) -> None:
        acc([g])

    for v in values:
        add(tf.constant(v))
    np.testing.assert_array_equal(acc.gradients[0].numpy(), values.sum(axis=0))
    assert int(acc.step) == 3


def test_mirrored_strategy_accumulates_per_replica(two_cpu_strategy: tf.distribute.MirroredStrategy) -> None:
    strategy = two_cpu_strategy
    with strategy.scope():
        acc = GradientAccumulator()
        variable = tf.Variable([4.0, 3.0])
        optimizer, _ = create_optimizer(5e-5, 10, 5)
        placeholder = tf.Variable([0.0, 0.0], trainable=False)

    @tf.function
    def accumulate(g0: list[float], g1: list[float]) -> None:
        with strategy.scope():
            local = strategy.experimental_local_results(placeholder)
            local[0].assign(g0)
            local[1].assign(g1)
            strategy.run(lambda g: acc([g]), args=(placeholder,))

    @tf.function
    def apply() -> None:
        with strategy.scope():
            strategy.run(lambda: optimizer.apply_gradients(list(zip(acc.gradients, [variable]))))

    per_replica = [
        ([1.0, 2.0], [-1.0, 1.0]),
        ([3.0, -1.0], [-1.0, -1.0]),
        ([-2.0, 2.0], [3.0, -2.0]),
    ]
    for g0, g1 in per_replica:
        accumulate(g0, g1)
    assert int(acc.step) == len(per_replica)
    sums = np.sum([[g0, g1] for g0, g1 in per_replica], axis=0)
    locals_ = strategy.experimental_local_results(acc._gradients[0])
    np.testing.assert_allclose(locals_[0].value().numpy(), sums[0])
    np.testing.assert_allclose(locals_[1].value().numpy(), sums[1])
    apply()
    # create_optimizer's warmup gives lr 0 at step 0, so the variable does not move.
    np.testing.assert_array_equal(variable.numpy(), [4.0, 3.0])
    acc.reset()
    assert int(acc.step) == 0
    for local in strategy.experimental_local_results(acc._gradients[0]):
        np.testing.assert_array_equal(local.value().numpy(), [0.0, 0.0])
