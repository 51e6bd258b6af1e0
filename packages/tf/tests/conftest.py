"""Test setup: two logical CPU devices (for MirroredStrategy) before TensorFlow initialises."""

from __future__ import annotations

import inspect
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from collections.abc import Iterator
from typing import Any

import pytest

if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
    import tensorflow as tf

    try:
        tf.config.set_logical_device_configuration(
            tf.config.list_physical_devices("CPU")[0],
            [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
        )
    except RuntimeError:  # the runtime was initialised by an earlier import; the strategy tests skip
        pass

import keras

# (an older Keras without the argument gets the plain call)
_KEEP_MEMORY = (
    {"free_memory": False} if "free_memory" in inspect.signature(keras.backend.clear_session).parameters else {}
)


@pytest.fixture(autouse=True)
def _fresh_keras_state() -> Iterator[None]:
    keras.utils.set_random_seed(0)
    yield
    # Keras' default also runs a full gc.collect(), which costs 0.4 to 1 s with TensorFlow loaded: 407 of the 690
    # core-seconds of this suite (2026-12-07). Python's own collector still frees cycles as it goes.
    keras.backend.clear_session(**_KEEP_MEMORY)


@pytest.fixture(scope="session")
def two_cpu_strategy() -> Any:
    """One MirroredStrategy over the two logical CPUs for the whole session (several strategies
    in one process collide in their collective-op keys)."""
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("two logical CPU devices are not configured (TF was initialised before conftest)")
    return tf.distribute.MirroredStrategy(devices=[d.name for d in devices[:2]])
