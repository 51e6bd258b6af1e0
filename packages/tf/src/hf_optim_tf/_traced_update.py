"""An eager ``apply_gradients`` with the work of the step traced once: TensorFlow's and JAX's.

Keras runs an optimizer step op by op when the caller is eager (a custom loop without ``tf.function``): the learning
rate schedule, gradient clipping, and some 30 small ops per variable in ``update_step``, each dispatched from
Python, about 100x the time the arithmetic needs for 10M parameters in ~200 tensors. ``model.fit`` traces the whole
train step and does not pay this. Here Keras' own ``_backend_apply_gradients`` (the learning rate read or computed
from the schedule at the current iteration, clipping, gradient accumulation, the updates of all variables, EMA)
becomes one ``tf.function`` per list of variables, traced at its first use from iteration ``EAGER_ITERATIONS`` on
and kept (at most ``MAX_TRACES`` lists per optimizer; beyond them the eager path runs). From iteration ``xla_from``
(the optimizer's choice) on, the step is compiled by XLA, which fuses each variable's ops into a few loops. Measured
at 10M parameters in ~200 tensors, two threads: AdamW 54 -> 20 ms a step, Adafactor (its sums as ``_sums`` writes them
for XLA:CPU) 54 -> 33 ms; the first call costs more under XLA than a plain trace does (AdamW 7.5 against 5.8 s,
Adafactor 20.6 against 10.3 s), so XLA pays for itself after about 50 steps for AdamW and 500 for Adafactor. The AdamW
family therefore compiles at its first traced step; Adafactor runs as a plain ``tf.function`` up to iteration
``ADAFACTOR_XLA_ITERATIONS`` and compiled from there: a run that stops before it never pays for XLA, and a longer one
pays for both (one plain trace more than the better choice, about 10 s at 10M) and gains 20 ms a step for as long as
it goes on. Should XLA refuse to compile a step, it runs as a plain ``tf.function`` from then on. Once the function
has run, gradients of the same types, dtypes and shapes call what it ran directly (``DirectCall``), without the ~4 ms
its argument dispatch costs for ~200 tensors.

What runs is the same Keras and ``update_step`` code in the same order; TensorFlow's graph rewrites and XLA's
fusion may round an operation differently from the eager op, as they do under ``model.fit`` and ``jit_compile``,
always within the spec's float32 tolerance (``tests/test_traced_update.py``). The learning rate is read inside the
function (a ``keras.Variable``) or computed there (a ``LearningRateSchedule`` of the iteration variable), so an
assigned learning rate or a schedule never retraces; replacing the optimizer's learning rate by another object
traces again (it is part of the key).

On JAX (``jitted_update``), the update of all variables (``_backend_update_step``: what ``update_step`` does for each
variable) becomes one ``jax.jit`` of a pure function per list of variables, built as Keras' ``stateless_apply`` is:
the values of the variables and of every optimizer variable in, under a ``StatelessScope``, the new values out and
assigned (10M parameters in ~200 tensors, AdamW: 310 -> 33 ms a step; the assignments, ~8 ms of it through
``Variable.assign``, skip its conversion where the value is already the variable's: ``_store``). The
learning rate is computed eagerly, as Keras does, and passed in: a jitted function would read a variable it is not
handed (a stateful schedule's) as a constant. Clipping, gradient accumulation and EMA run eagerly around it. Left
eager there: calls inside a JAX trace or a ``StatelessScope`` (``model.fit``, ``stateless_apply``: already
compiled).

The first ``EAGER_ITERATIONS`` iterations of an optimizer run op by op, on both backends. Tracing (and compiling)
costs as much as 7 to 25 op-by-op steps (measured on 2 cores: AdamW and Adafactor, 5 parameters in 2 variables and
10M in 196), so a short eager loop (a test, a notebook cell, a debugging session) never pays for it, and a long one
pays at most about twice what the better choice would have cost. The choices (op by op, traced, compiled by XLA)
depend on the optimizer's ``iterations`` alone, which a checkpoint restores: a run resumed in a fresh process takes
the same path at every step as the run it continues (its op-by-op, traced and compiled steps may differ in the last
bit, as said above). Once a list of variables has its traced step, its steps stay traced, and once it is compiled,
compiled: the count (40 µs per read on TensorFlow) is read again only while a plain step waits for its XLA
iteration.

Left eager on TensorFlow: calls already inside a ``tf.function`` (``model.fit``, a traced loop), calls under a
``tf.distribute`` strategy (Keras' cross-replica update must stay as it is), a learning rate given as a plain
callable (its value could come from anywhere: traced, it would be frozen), sparse gradients (``tf.IndexedSlices``:
traced, their row count is unknown to the update's shape logic), and everything when
``tf.config.run_functions_eagerly(True)`` is set (then a ``tf.function`` runs eagerly anyway: the way to debug).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import cache, partial
from typing import Any, TypeVar

import keras
import numpy as np

__all__ = [
    "ADAFACTOR_XLA_ITERATIONS",
    "EAGER_ITERATIONS",
    "MAX_TRACES",
    "DirectCall",
    "JittedUpdate",
    "TracedStep",
    "jitted_update",
    "traced_apply",
]

T = TypeVar("T")

#: lists of variables an optimizer keeps a traced step for
MAX_TRACES = 8
#: iterations an optimizer runs op by op before its eager step is traced (see the module docstring)
EAGER_ITERATIONS = 10
#: Adafactor's eager step is compiled by XLA from this iteration on, a plain ``tf.function`` before (module docstring)
ADAFACTOR_XLA_ITERATIONS = 500


def traced_apply(
    cache: dict[tuple[int, ...], TracedStep],
    apply: Callable[[list[Any], list[Any]], None],
    grads: Sequence[Any],
    variables: Sequence[Any],
    *,
    learning_rate: Any,
    iterations: Any,
    xla_from: int,
) -> TracedStep | None:
    """The traced ``apply(grads, variables)`` for these ``variables`` and this ``learning_rate`` object (the
    optimizer's ``_learning_rate``), from ``cache`` or made and kept there, compiled by XLA once ``iterations`` reach
    ``xla_from``; None where the step must run eagerly (see the module docstring), as it does while the optimizer's
    ``iterations`` are below ``EAGER_ITERATIONS``."""
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    if not tf.executing_eagerly() or tf.distribute.has_strategy() or tf.config.functions_run_eagerly():
        return None
    schedule = isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule)
    if not (schedule or isinstance(learning_rate, keras.Variable)):
        return None
    if any(isinstance(grad, tf.IndexedSlices) for grad in grads):  # sparse: a traced one has no static row count
        return None
    key = (id(learning_rate), *map(id, variables))
    return _kept(cache, key, iterations, lambda: TracedStep(apply, variables, learning_rate, iterations, xla_from))


def _kept(cache: dict[tuple[int, ...], T], key: tuple[int, ...], iterations: Any, make: Callable[[], T]) -> T | None:
    """The step ``cache`` keeps under ``key``, or ``make()`` kept there; None (run op by op) while ``iterations`` are
    below ``EAGER_ITERATIONS`` or when ``MAX_TRACES`` steps are kept already."""
    step = cache.get(key)
    if step is None:
        if len(cache) >= MAX_TRACES or int(iterations) < EAGER_ITERATIONS:
            return None
        step = cache[key] = make()
    return step


class TracedStep:
    """One kept step: its ``tf.function``, whether XLA compiles it, the iteration from which it is to (None once it
    does, or once XLA has refused it), the :class:`DirectCall` of its last run, and the objects its cache key names by
    id (held, so that the ids cannot be reused while it lives)."""

    def __init__(
        self,
        apply: Callable[[list[Any], list[Any]], None],
        variables: Sequence[Any],
        learning_rate: Any,
        iterations: Any,
        xla_from: int,
    ) -> None:
        self.held = (list(variables), learning_rate)
        # a partial, not a lambda: TensorFlow counts the traces of every function made from one code object together
        # and warns of "retracing" after five, which one trace per optimizer would otherwise reach
        self.python_function = partial(_apply_to, apply, self.held[0])
        self.iterations, self.xla_from = iterations, xla_from
        self.xla, self.ran, self.function = False, False, None
        self.direct: DirectCall | None = None  # what the function ran last, called without its dispatch

    def _trace(self, xla: bool) -> Any:
        import tensorflow as tf

        self.xla, self.ran, self.direct = xla, False, None
        return tf.function(self.python_function, autograph=False, jit_compile=xla)

    def __call__(self, grads: Sequence[Any]) -> None:
        import tensorflow as tf

        grads = list(grads)
        # the count is read (40 us) only while a plain step waits for its XLA iteration
        if self.xla_from is not None and int(self.iterations) >= self.xla_from:
            self.xla_from = None
            self.function = self._trace(xla=True)
        elif self.function is None:
            self.function = self._trace(xla=False)
        if self.direct is not None and self.direct.takes(grads):
            self.direct(grads)
            return
        # a trace converts Python numbers through NumPy, which warns where a float32 overflows (epsilon=1e308);
        # an eager op makes the same inf without a warning
        with np.errstate(over="ignore"):
            try:
                self.function(grads)
            except (tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
                if self.ran or not self.xla:
                    raise
                # XLA refused the function at its first call (nothing ran): a plain tf.function from now on
                self.function = self._trace(xla=False)
                self.function(grads)
        self.ran = True
        self.direct = DirectCall.of(self.function, grads) or self.direct  # (None for gradients not all tensors)


class DirectCall:
    """The concrete function a ``tf.function`` ran for some gradients, called again with gradients of the same types,
    dtypes and shapes without the ``tf.function``'s dispatch.

    A ``tf.function`` call looks its concrete function up by the trace types of its arguments, which for ~200 tensors
    costs about 4 ms a call in Python (measured: 4.4 ms for 196 tensors of 32 elements, against 0.43 ms for the run
    itself); an eager step of 10M parameters in ~200 tensors took 31.1 -> 27.2 ms (Adafactor, XLA) and 25.0 -> 21.5 ms
    (AdamW) without it. In eager code, and outside a ``tf.distribute`` strategy (where ``traced_apply`` leaves the step
    eager), that lookup depends on nothing but the arguments' types: tensors of the same dtype and shape select the
    same concrete function, which is then called as the ``tf.function`` itself calls it (``_call_flat``: the flat
    tensors, then the function's captured inputs, read at every call; a gradient tape, if any, records it the same
    way), so a direct call runs exactly what the ``tf.function`` would. Gradients of another type, dtype or shape go
    through the ``tf.function`` (and a trace of their own where their trace type differs); where they are tensors,
    their concrete function becomes the one called directly. ``_call_flat`` is TensorFlow's own, not public: where a
    TensorFlow version lacks it, or names its arguments otherwise, every call goes through the ``tf.function``.
    """

    __slots__ = ("concrete", "shapes", "types")

    def __init__(self, concrete: Any, grads: list[Any]) -> None:
        self.concrete = concrete
        self.types = list(map(type, grads))
        self.shapes = [(grad.dtype, grad.shape) for grad in grads]

    @classmethod
    def of(cls, function: Any, grads: list[Any]) -> DirectCall | None:
        """The direct call of what ``function`` ran for ``grads``, or None (gradients other than eager tensors, or a
        TensorFlow without the call this relies on)."""
        import tensorflow as tf

        if not all(isinstance(grad, tf.Tensor) for grad in grads):  # eager tensors (this runs outside any graph)
            return None
        concrete = function.get_concrete_function(grads)
        return cls(concrete, grads) if _calls_flat(type(concrete)) else None

    def takes(self, grads: list[Any]) -> bool:
        """Whether ``grads`` have the types, dtypes and shapes of the gradients this call was made for."""
        return list(map(type, grads)) == self.types and [(g.dtype, g.shape) for g in grads] == self.shapes

    def __call__(self, grads: list[Any]) -> None:
        self.concrete._call_flat(grads, self.concrete.captured_inputs)


@cache
def _calls_flat(concrete_type: type) -> bool:
    """Whether TensorFlow's concrete functions have the ``_call_flat(tensor_inputs, captured_inputs)`` that
    :class:`DirectCall` calls."""
    import inspect

    call = getattr(concrete_type, "_call_flat", None)
    return call is not None and list(inspect.signature(call).parameters) == ["self", "tensor_inputs", "captured_inputs"]


def _apply_to(apply: Callable[[list[Any], list[Any]], None], variables: list[Any], grads: list[Any]) -> None:
    apply(grads, variables)


def jitted_update(
    cache: dict[tuple[int, ...], JittedUpdate],
    update: Callable[[list[Any], list[Any], Any], None],
    grads: Sequence[Any],
    variables: Sequence[Any],
    optimizer_variables: Sequence[Any],
    iterations: Any,
) -> JittedUpdate | None:
    """On JAX, the jitted ``update(grads, variables, learning_rate)`` for these ``variables`` (from ``cache``, or made
    and kept there), which reads and writes them and ``optimizer_variables``; None where it must run eagerly (another
    backend, a JAX trace or a ``StatelessScope``, more lists than kept, ``iterations`` below ``EAGER_ITERATIONS``)."""
    if keras.backend.backend() != "jax":
        return None
    import jax
    from keras.src.backend.common.stateless_scope import in_stateless_scope

    if in_stateless_scope() or any(isinstance(grad, jax.core.Tracer) for grad in grads):
        return None
    return _kept(
        cache, tuple(map(id, variables)), iterations, lambda: JittedUpdate(update, variables, optimizer_variables)
    )


class JittedUpdate:
    """One kept update on JAX: a ``jax.jit`` of the update as a pure function of the values of ``variables`` and
    ``optimizer_variables`` (held: the cache key names the variables by id)."""

    def __init__(
        self, update: Callable[[list[Any], list[Any], Any], None], variables: Sequence[Any], optimizer_variables: Any
    ) -> None:
        import jax

        kept = list(variables)
        self.state = [*kept, *optimizer_variables]  # every variable the update reads or writes

        def pure(values: list[Any], grads: list[Any], learning_rate: Any) -> list[Any]:
            with keras.StatelessScope(state_mapping=list(zip(self.state, values))) as scope:
                update(grads, kept, learning_rate)
            return [scope.get_current_value(v) for v in self.state]

        self.function = jax.jit(pure)

    def __call__(self, grads: Sequence[Any], learning_rate: Any) -> None:
        values = self.function([v.value for v in self.state], list(grads), keras.ops.convert_to_tensor(learning_rate))
        for variable, value in zip(self.state, values):
            _store(variable, value)


def _store(variable: Any, value: Any) -> None:
    """``variable.assign(value)`` for a value the jitted update made for it, without the conversion and checks of
    ``assign`` where the value has the dtype and shape of the variable's current one.

    Keras' ``assign`` converts the value to the variable's declared dtype and checks its shape, about 10 us a variable
    (measured: 787 variables, AdamW's at ~200 parameters, 8.3 ms; 0.39 ms for what follows); then it hands the value
    to the variable's ``_direct_assign`` (the JAX backend's, which also lays it out for a distribution and runs
    Flax NNX's hook). A value of the current value's dtype and shape is what that conversion would give (JAX without
    x64 holds an int64 variable in int32, and so does the jitted value), so it goes to ``_direct_assign`` at once; any
    other value, or a Keras without these private members, takes ``assign``.
    """
    current = getattr(variable, "_value", None)
    direct = getattr(variable, "_direct_assign", None)
    if direct is not None and current is not None and value.dtype == current.dtype and value.shape == current.shape:
        direct(value)
    else:
        variable.assign(value)
