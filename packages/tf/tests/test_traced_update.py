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
from hf_optim_tf import _traced_update  # noqa: E402
from hf_optim_tf._traced_update import EAGER_ITERATIONS, MAX_TRACES  # noqa: E402

OPTIMIZERS: dict[str, Callable[[Any], keras.optimizers.Optimizer]] = {
    "AdamW": lambda lr: hf_optim_tf.AdamW(learning_rate=lr, weight_decay=0.01),
    "AdamWeightDecay": lambda lr: hf_optim_tf.AdamWeightDecay(learning_rate=lr, weight_decay_rate=0.01),
    "Adafactor": lambda lr: hf_optim_tf.Adafactor(learning_rate=lr, relative_step=False),
}
SPEC_IDS = {"AdamW": "adamw", "AdamWeightDecay": "adam_weight_decay", "Adafactor": "adafactor"}
SHAPES = [(6, 5), (5,), (3, 4)]


def _train(name: str, steps: int, lr: Any = 1e-2, **kwargs: Any) -> tuple[keras.optimizers.Optimizer, list[np.ndarray]]:
    import tensorflow as tf

    rng = np.random.default_rng(0)
    variables = [keras.Variable(rng.standard_normal(s).astype("float32")) for s in SHAPES]
    optimizer = OPTIMIZERS[name](lr)
    for key, value in kwargs.items():  # Keras' own options (clipping, EMA, accumulation), set before the build
        setattr(optimizer, key, value)
    for _ in range(steps):
        grads = [tf.constant(rng.standard_normal(s).astype("float32")) for s in SHAPES]
        optimizer.apply_gradients(zip(grads, variables))
    return optimizer, [v.numpy() for v in variables]


def _eager_and_traced(name: str, steps: int, **kwargs: Any) -> tuple[Any, list[np.ndarray], list[np.ndarray]]:
    """The optimizer of a traced run, its variables, and those of the same run op by op."""
    import tensorflow as tf

    optimizer, traced = _train(name, steps=steps, **kwargs)
    tf.config.run_functions_eagerly(True)
    try:
        _, eager = _train(name, steps=steps, **kwargs)
    finally:
        tf.config.run_functions_eagerly(False)
    return optimizer, traced, eager


def _ulps(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.max(np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64))))


@pytest.fixture(autouse=True)
def _traced_from_the_first_step(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests here trace from the first step (fewer steps to run), but the one about the eager iterations."""
    monkeypatch.setattr(_traced_update, "EAGER_ITERATIONS", 0)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_an_eager_step_is_traced_once_and_equals_the_eager_ops(name: str) -> None:
    optimizer, traced, eager = _eager_and_traced(name, steps=4)
    steps = list(optimizer._traced_updates.values())
    assert len(steps) == 1, "one traced step for the one list of variables"
    assert steps[0].function.experimental_get_tracing_count() == 1, "four steps, one trace"
    assert steps[0].xla == (name != "Adafactor"), (
        "the AdamW family compiles at once, Adafactor from its 500th iteration"
    )
    tol = hs.get(SPEC_IDS[name]).tol("float32")
    for a, b in zip(traced, eager):
        np.testing.assert_allclose(a, b, rtol=tol.rtol, atol=tol.atol)
    # XLA's fusion and TensorFlow's graph rewrites round a few operations differently (measured: 1 ulp after 4 steps)
    assert max(_ulps(a, b) for a, b in zip(traced, eager)) <= 4


@pytest.mark.parametrize(
    "options",
    [
        {"global_clipnorm": 0.5},
        {"clipvalue": 0.1},
        {"use_ema": True, "ema_momentum": 0.5, "ema_overwrite_frequency": 2},
        {"gradient_accumulation_steps": 2},
    ],
    ids=["global_clipnorm", "clipvalue", "ema", "gradient_accumulation"],
)
def test_keras_options_of_the_step_are_traced_with_it(options: dict[str, Any]) -> None:
    """Clipping, EMA and gradient accumulation run inside the traced step, as they do op by op."""
    kwargs = {"steps": 4, "lr": keras.optimizers.schedules.ExponentialDecay(1e-2, 1, 0.5)}
    optimizer, traced, eager = _eager_and_traced("AdamW", **kwargs, **options)
    assert len(optimizer._traced_updates) == 1
    for a, b in zip(traced, eager):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    plain = _train("AdamW", **kwargs)[1]
    assert not all(np.allclose(a, b) for a, b in zip(traced, plain)), "the option changed nothing"


def test_a_learning_rate_of_another_object_is_a_new_trace_and_a_plain_callable_stays_eager() -> None:
    import tensorflow as tf

    def run() -> tuple[keras.optimizers.Optimizer, list[np.ndarray]]:
        optimizer, _ = _train("AdamW", steps=2)
        variables = optimizer._trainable_variables
        optimizer.learning_rate = keras.optimizers.schedules.ExponentialDecay(1e-2, 1, 0.5)  # replaces the Variable
        optimizer.apply_gradients(zip([tf.ones(v.shape) for v in variables], variables))
        return optimizer, [v.numpy() for v in variables]

    optimizer, traced = run()
    assert len(optimizer._traced_updates) == 2, "the schedule is another object: another trace"
    tf.config.run_functions_eagerly(True)
    try:
        _, eager = run()
    finally:
        tf.config.run_functions_eagerly(False)
    assert all(_ulps(a, b) <= 4 for a, b in zip(traced, eager))

    callable_lr = hf_optim_tf.AdamW(learning_rate=lambda: 0.25, weight_decay=0.0)
    variable = keras.Variable(np.ones((2,), "float32"))
    callable_lr.apply_gradients([(tf.constant([1.0, -1.0]), variable)])  # Adam's first step moves by the lr
    assert callable_lr._traced_updates == {}
    np.testing.assert_allclose(variable.numpy(), [0.75, 1.25], rtol=1e-4)  # (eps: 1e-6 relative)


def test_a_function_xla_refuses_runs_as_a_plain_tf_function(monkeypatch) -> None:
    """XLA refusing the step at its first call: the same step as a plain tf.function, once, from then on."""
    import tensorflow as tf
    from hf_optim_tf import _traced_update

    real = _traced_update.TracedStep._trace

    def refusing(self: Any, xla: bool) -> Any:
        if not xla:
            return real(self, xla)
        self.xla = True

        def refuse(grads: Any) -> None:
            raise tf.errors.InvalidArgumentError(None, None, "Detected unsupported operations when trying to compile")

        return refuse

    monkeypatch.setattr(_traced_update.TracedStep, "_trace", refusing)
    optimizer, traced, eager = _eager_and_traced("AdamW", steps=3)
    (step,) = optimizer._traced_updates.values()
    assert not step.xla and step.function.experimental_get_tracing_count() == 1
    assert all(_ulps(a, b) <= 4 for a, b in zip(traced, eager))


def test_a_new_learning_rate_takes_effect_without_a_retrace() -> None:
    optimizer, _ = _train("AdamW", steps=1)
    schedule_optimizer, _ = _train("AdamW", steps=3, lr=keras.optimizers.schedules.ExponentialDecay(1e-2, 1, 0.5))
    for opt in (optimizer, schedule_optimizer):
        (function,) = opt._traced_updates.values()
        assert function.function.experimental_get_tracing_count() == 1
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
    assert next(iter(opt._traced_updates.values())).function.experimental_get_tracing_count() == 1


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


def test_the_first_eager_iterations_run_op_by_op_and_a_resumed_run_takes_the_same_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Op by op while ``iterations`` < EAGER_ITERATIONS, traced from there; a run resumed past that point (a fresh
    optimizer with the restored state) traces at its first call, and ends where the uninterrupted run does, bit
    for bit: both took the op-by-op path at the same iterations."""
    import tensorflow as tf

    monkeypatch.setattr(_traced_update, "EAGER_ITERATIONS", EAGER_ITERATIONS)  # the library's own (imported above)
    steps, resume_at = EAGER_ITERATIONS + 3, EAGER_ITERATIONS + 1
    rng = np.random.default_rng(1)
    grads = [[tf.constant(rng.standard_normal(s).astype("float32")) for s in SHAPES] for _ in range(steps)]
    start = [rng.standard_normal(s).astype("float32") for s in SHAPES]

    def run(first: int, last: int, restored: tuple[list[np.ndarray], list[np.ndarray]] | None = None) -> Any:
        variables = [keras.Variable(v) for v in (start if restored is None else restored[0])]
        optimizer = OPTIMIZERS["AdamW"](1e-2)
        optimizer.build(variables)
        if restored is not None:
            for variable, value in zip(optimizer.variables, restored[1]):
                variable.assign(value)
        traced_at = []
        for t in range(first, last):
            optimizer.apply_gradients(zip(grads[t], variables))
            traced_at += [t] * (len(optimizer._traced_updates) == 1 and not traced_at)
        return optimizer, [v.numpy() for v in variables], traced_at

    _, straight, traced_at = run(0, steps)
    assert traced_at == [EAGER_ITERATIONS], f"first traced step at iteration {traced_at}, not {EAGER_ITERATIONS}"
    head_optimizer, head, _ = run(0, resume_at)
    state = [v.numpy() for v in head_optimizer.variables]
    assert int(state[0]) == resume_at, "the first optimizer variable is Keras' iteration count"
    _, tail, resumed_traced_at = run(resume_at, steps, (head, state))
    assert resumed_traced_at == [resume_at], "a run resumed past the eager iterations traces at its first call"
    for a, b in zip(straight, tail):
        np.testing.assert_array_equal(a, b)


def test_adafactor_is_compiled_from_its_xla_iteration_and_a_resumed_run_takes_the_same_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Adafactor's eager step: a plain tf.function below ``_XLA_FROM_ITERATION``, compiled by XLA from there (one trace
    each), within the spec's tolerance of the op-by-op run; a run resumed past that iteration in a fresh optimizer is
    compiled at its first call and ends where the uninterrupted run does, bit for bit."""
    import tensorflow as tf

    assert hf_optim_tf.Adafactor._XLA_FROM_ITERATION == _traced_update.ADAFACTOR_XLA_ITERATIONS == 500
    xla_from, steps, resume_at = 3, 6, 4
    monkeypatch.setattr(hf_optim_tf.Adafactor, "_XLA_FROM_ITERATION", xla_from)
    rng = np.random.default_rng(2)
    grads = [[tf.constant(rng.standard_normal(s).astype("float32")) for s in SHAPES] for _ in range(steps)]
    start = [rng.standard_normal(s).astype("float32") for s in SHAPES]

    def run(first: int, last: int, restored: tuple[list[np.ndarray], list[np.ndarray]] | None = None) -> Any:
        variables = [keras.Variable(v) for v in (start if restored is None else restored[0])]
        optimizer = OPTIMIZERS["Adafactor"](1e-2)
        optimizer.build(variables)
        if restored is not None:
            for variable, value in zip(optimizer.variables, restored[1]):
                variable.assign(value)
        compiled, traces = [], []
        for t in range(first, last):
            optimizer.apply_gradients(zip(grads[t], variables))
            for step in optimizer._traced_updates.values():  # none when functions run eagerly
                compiled.append(step.xla)
                traces.append(step.function.experimental_get_tracing_count())
        return optimizer, [v.numpy() for v in variables], compiled, traces

    _, straight, compiled, traces = run(0, steps)
    assert compiled == [t >= xla_from for t in range(steps)], compiled
    assert traces == [1] * steps, "one trace as a plain tf.function, one under XLA"
    tf.config.run_functions_eagerly(True)
    try:
        _, eager, _, _ = run(0, steps)
    finally:
        tf.config.run_functions_eagerly(False)
    tol = hs.get("adafactor").tol("float32")
    for a, b in zip(straight, eager):
        np.testing.assert_allclose(a, b, rtol=tol.rtol, atol=tol.atol)
    head_optimizer, head, _, _ = run(0, resume_at)
    _, tail, resumed, _ = run(resume_at, steps, (head, [v.numpy() for v in head_optimizer.variables]))
    assert resumed == [True] * (steps - resume_at), "a run resumed past the XLA iteration is compiled at once"
    for a, b in zip(straight, tail):
        np.testing.assert_array_equal(a, b)


def test_many_optimizers_traced_once_each_raise_no_retracing_warning(caplog: pytest.LogCaptureFixture) -> None:
    """TensorFlow warns of "retracing" when functions made from one code object trace often; one trace per
    optimizer is not that (each step is a partial of its own, which TensorFlow counts apart)."""
    import logging

    with caplog.at_level(logging.WARNING):
        for _ in range(8):
            _train("AdamW", steps=1)
    assert not [r for r in caplog.records if "retracing" in r.getMessage()]


def test_a_direct_call_takes_only_gradients_like_those_it_was_made_for() -> None:
    """A ``DirectCall`` runs what its ``tf.function`` ran, and only for eager tensors of the same dtypes and shapes."""
    import tensorflow as tf

    total = tf.Variable(0.0)

    @tf.function(autograph=False)
    def add(grads: list[Any]) -> None:
        total.assign_add(tf.add_n([tf.reduce_sum(tf.cast(g, tf.float32)) for g in grads]))

    grads = [tf.constant([1.0, 2.0]), tf.constant([[3.0]])]
    add(grads)
    direct = _traced_update.DirectCall.of(add, grads)
    assert direct is not None, "TensorFlow's concrete functions have the call DirectCall relies on"
    assert direct.takes([tf.constant([5.0, 6.0]), tf.constant([[7.0]])])
    assert not direct.takes([tf.constant([5.0, 6.0], tf.float64), tf.constant([[7.0]])]), "another dtype"
    assert not direct.takes([tf.constant([5.0, 6.0, 7.0]), tf.constant([[7.0]])]), "another shape"
    assert not direct.takes([np.array([5.0, 6.0], np.float32), tf.constant([[7.0]])]), "not a tensor"
    assert not direct.takes([tf.constant([5.0, 6.0])]), "fewer gradients"
    direct([tf.constant([5.0, 6.0]), tf.constant([[7.0]])])
    assert float(total.numpy()) == 24.0, "the direct call ran the function on its gradients, with its variable"
    assert add.experimental_get_tracing_count() == 1, "no trace of its own"
    assert _traced_update.DirectCall.of(add, [np.array([1.0], np.float32)]) is None, "made for eager tensors only"


@pytest.mark.parametrize("name", ["AdamW", "Adafactor"])
def test_eager_steps_called_directly_end_bit_for_bit_where_dispatched_ones_do(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past its first traced call, an eager step calls what its ``tf.function`` ran without its dispatch: the same
    variables to the bit as the same run dispatched at every step; gradients of another kind (NumPy arrays) in the
    middle of the run go through the ``tf.function`` (without a trace of their own: their trace type is a tensor's) and
    leave the result as it is."""
    import tensorflow as tf

    monkeypatch.setattr(hf_optim_tf.Adafactor, "_XLA_FROM_ITERATION", 3)  # both modes of Adafactor's step
    calls: list[bool] = []
    real = _traced_update.DirectCall.__call__

    def counted(self: Any, grads: list[Any]) -> None:
        calls.append(True)
        real(self, grads)

    monkeypatch.setattr(_traced_update.DirectCall, "__call__", counted)

    def run(numpy_at: int | None) -> list[np.ndarray]:
        rng = np.random.default_rng(0)
        variables = [keras.Variable(rng.standard_normal(s).astype("float32")) for s in SHAPES]
        optimizer = OPTIMIZERS[name](1e-2)
        for step in range(7):
            values = [rng.standard_normal(s).astype("float32") for s in SHAPES]
            grads = values if step == numpy_at else [tf.constant(v) for v in values]
            optimizer.apply_gradients(zip(grads, variables))
        traced = next(iter(optimizer._traced_updates.values()))
        assert traced.function.experimental_get_tracing_count() == 1, "NumPy gradients have a tensor's trace type"
        return [v.numpy() for v in variables]

    # every step but the first of each function (Adafactor: a plain one, then from iteration 3 under XLA) is direct
    direct = run(None)
    assert len(calls) == (5 if name == "Adafactor" else 6)
    del calls[:]
    with_numpy = run(5)
    assert len(calls) == (4 if name == "Adafactor" else 5), "the NumPy step dispatched, the steps after it direct"
    monkeypatch.setattr(_traced_update.DirectCall, "takes", lambda self, grads: False)
    dispatched = run(None)
    for a, b, c in zip(direct, dispatched, with_numpy):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
