"""An eager ``apply_gradients`` on the TensorFlow backend, with the update of all its variables traced once.

Keras runs an optimizer's ``update_step`` op by op when the caller is eager (a custom loop without
``tf.function``): some 30 small ops per variable, each dispatched from Python, about 100x the time the arithmetic
needs for 10M parameters in ~200 tensors. ``model.fit`` traces the whole train step and does not pay this. Here the
optimizer's own multi-variable update (``_backend_update_step``) becomes one ``tf.function`` per list of variables,
traced at its first use and kept (at most ``MAX_TRACES`` lists per optimizer; beyond them the eager path runs). What
runs is the same ``update_step`` code in the same order; TensorFlow's graph rewrites may round an operation
differently from the eager op (measured: AdamW bit for bit, AdamWeightDecay within 1 ulp, Adafactor within 1.2e-7 of
the largest magnitude), as they do under ``model.fit``, always within the spec's float32 tolerance
(``tests/test_traced_update.py``).

Left eager: other backends (JAX and torch have no stateful equivalent of a ``tf.function`` over Keras variables
that Keras' optimizer supports), calls already inside a ``tf.function`` (``model.fit``, a traced loop), calls under
a ``tf.distribute`` strategy (Keras' cross-replica update must stay as it is), and everything when
``tf.config.run_functions_eagerly(True)`` is set (then a ``tf.function`` runs eagerly anyway: the way to debug).
The learning rate is passed as a tensor argument, so a schedule or an assigned learning rate never retraces. Sparse
gradients (``tf.IndexedSlices``) are left eager too: traced, their row count is unknown to the update's shape logic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import keras
import numpy as np

__all__ = ["MAX_TRACES", "traced_update"]

#: lists of variables an optimizer keeps a traced update for
MAX_TRACES = 8


def traced_update(
    cache: dict[tuple[int, ...], Any],
    update: Callable[[list[Any], list[Any], Any], None],
    grads: Sequence[Any],
    variables: Sequence[Any],
) -> Callable[[list[Any], Any], None] | None:
    """The traced ``update(grads, variables, learning_rate)`` for these ``variables`` (from ``cache``, or made and
    kept there), or None where the update must run eagerly (see the module docstring)."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    if not tf.executing_eagerly() or tf.distribute.has_strategy() or tf.config.functions_run_eagerly():
        return None
    if any(isinstance(grad, tf.IndexedSlices) for grad in grads):  # sparse: a traced one has no static row count
        return None
    key = tuple(map(id, variables))
    function = cache.get(key)
    if function is None:
        if len(cache) >= MAX_TRACES:
            return None
        kept = list(variables)  # held by the function: the ids in the key cannot be reused while it lives

        @tf.function(autograph=False)
        def function(grads: list[Any], learning_rate: Any) -> None:
            update(grads, kept, learning_rate)

        cache[key] = function

    def run(grads: Sequence[Any], learning_rate: Any) -> None:
        # a trace converts Python numbers through NumPy, which warns where a float32 overflows (epsilon=1e308);
        # an eager op makes the same inf without a warning
        with np.errstate(over="ignore"):
            function(list(grads), tf.convert_to_tensor(learning_rate))

    return run
