"""What must hold on every Keras backend (KERAS_BACKEND = tensorflow, jax, torch): no TensorFlow off TensorFlow,
stochastic rounding with the spec's bits, a plateau schedule seen by the compiled train step, .keras resume,
checked restores of the backend's tensors and of values its variables cannot hold.

Runs in the TensorFlow test session and, with ``test_spec_cases.py``, once per other backend (``nox -s
keras_backends``; KERAS_BACKEND is read when Keras is imported, so one process per backend)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hf_optim_tf
import keras
import numpy as np
import pytest
from _tf_helpers import BACKEND
from hf_optim_spec.rounding import round_stochastic, rounding_bits, rounding_key
from hf_optim_tf import AdamW, create_optimizer, get_cosine_schedule_with_warmup, get_scheduler
from hf_optim_tf._rounding import parameter_rounding_key, round_stochastic_bfloat16
from hf_optim_tf._state_check import StateSlot
from hf_optim_tf._variables import numpy_value

X = np.random.default_rng(0).standard_normal((64, 6)).astype("float32")
Y = (X @ np.random.default_rng(1).standard_normal((6, 2))).astype("float32")
# Keras' get_weights and .keras writer call np.array(variable); NumPy 2 warns about the backend's __array__.
KERAS_ARRAY_WARNING = "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"


def _model() -> keras.Model:
    keras.utils.set_random_seed(7)
    inputs = keras.Input((6,))
    x = keras.layers.Dense(16, activation="relu", name="dense")(inputs)
    x = keras.layers.LayerNormalization(name="LayerNorm")(x)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(x))


def _fit(model: keras.Model, epochs: int, **kwargs: object) -> list[float]:
    history = model.fit(X, Y, batch_size=16, epochs=epochs, shuffle=False, verbose=0, **kwargs)
    return [float(v) for v in history.history["loss"]]


def test_no_tensorflow_off_the_tensorflow_backend() -> None:
    assert hf_optim_tf.AdamW is AdamW
    if BACKEND == "tensorflow":
        pytest.skip("the TensorFlow backend imports TensorFlow")
    variable = keras.Variable(np.ones(3, "float32"))
    AdamW(get_scheduler("reduce_lr_on_plateau", 0.1)).apply_gradients([(keras.ops.ones(3), variable)])
    hf_optim_tf.GradientAccumulator()([keras.ops.ones(3)])
    assert "tensorflow" not in sys.modules


@pytest.mark.parametrize(("seed", "index", "step"), [(0, 0, 1), (1234, 3, 77), (2**32 - 1, 2**31 + 5, 2**31 - 1)])
def test_stochastic_rounding_has_the_spec_bits(seed: int, index: int, step: int) -> None:
    rng = np.random.default_rng(seed % 1000)
    x = (rng.standard_normal((5, 7)) * 10.0 ** rng.integers(-40, 38, (5, 7))).astype(np.float32)
    x.flat[:6] = [np.nan, np.inf, -np.inf, -0.0, 1e-40, -3.4e38]
    key = parameter_rounding_key(seed, index, keras.ops.convert_to_tensor(step, "int64"))
    got = keras.ops.convert_to_numpy(
        keras.ops.cast(round_stochastic_bfloat16(keras.ops.convert_to_tensor(x), key), "float32")
    )
    bits = rounding_bits(rounding_key(seed, index, step), np.arange(x.size, dtype=np.int64).reshape(x.shape))
    want = round_stochastic(x, bits).astype(np.float32)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    finite = ~np.isnan(want)
    assert np.array_equal(got[finite].view(np.uint32), want[finite].view(np.uint32))


def test_bfloat16_adamw_with_stochastic_rounding_follows_the_spec_bits() -> None:
    """One step of AdamW(fp32_math, stochastic_rounding) on bfloat16 = the float32 step rounded with the spec bits."""
    start = np.linspace(-2.0, 2.0, 12, dtype=np.float32)
    variable = keras.Variable(start, dtype="bfloat16", name="w")
    exact = keras.Variable(keras.ops.cast(variable, "float32"), name="w32")
    kwargs = {"learning_rate": 1e-3, "weight_decay": 0.01}
    optimizer = AdamW(**kwargs, fp32_math=True, stochastic_rounding=True, rounding_seed=9)
    grad = np.cos(np.arange(12.0)).astype(np.float32)
    optimizer.apply_gradients([(keras.ops.cast(grad, "bfloat16"), variable)])
    AdamW(**kwargs).apply_gradients([(keras.ops.cast(keras.ops.cast(grad, "bfloat16"), "float32"), exact)])
    value = keras.ops.convert_to_numpy(keras.ops.cast(exact, "float32"))
    want = round_stochastic(value, rounding_bits(rounding_key(9, 0, 1), np.arange(12, dtype=np.int64)))
    got = keras.ops.convert_to_numpy(keras.ops.cast(variable, "float32"))
    np.testing.assert_array_equal(got, want.astype(np.float32))
    assert not np.array_equal(
        got, keras.ops.convert_to_numpy(keras.ops.cast(keras.ops.cast(value, "bfloat16"), "float32"))
    )


@pytest.mark.filterwarnings(KERAS_ARRAY_WARNING)
def test_plateau_reductions_reach_the_compiled_train_step() -> None:
    """Keras compiles the train step once (JAX: with the optimizer's variables as its state); a reduction made by
    the callback between epochs must change the step size of the next epoch."""
    schedule = get_scheduler("reduce_lr_on_plateau", 0.1, scheduler_specific_kwargs={"patience": 0, "factor": 0.5})
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(2)])
    model.compile(optimizer=AdamW(schedule, weight_decay=0.0), loss="mse")
    steps: list[float] = []

    class Spy(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: object = None) -> None:
            self.before = model.get_weights()[0].copy()

        def on_epoch_end(self, epoch: int, logs: object = None) -> None:
            steps.append(float(np.max(np.abs(model.get_weights()[0] - self.before))))

    flat = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: logs.__setitem__("flat", 1.0))
    model.fit(X[:16], Y[:16], batch_size=16, epochs=4, verbose=0, callbacks=[Spy(), flat, schedule.callback("flat")])
    assert schedule.lr == 0.1 * 0.5**3
    # one Adam step per epoch moves some weight by about the lr: 0.1, 0.05, 0.025 (the first reduction is at epoch 1)
    np.testing.assert_allclose(steps, [0.1, 0.1, 0.05, 0.025], rtol=0.05)


OPTIMIZERS: dict[str, Callable[[], keras.optimizers.Optimizer]] = {
    "adam_weight_decay_warmup": lambda: create_optimizer(1e-2, 24, 4, weight_decay_rate=0.01)[0],
    "adamw_cosine": lambda: AdamW(get_cosine_schedule_with_warmup(1e-2, 3, 24), weight_decay=0.01),
    "adafactor": lambda: hf_optim_tf.Adafactor(beta_1=0.9, weight_decay=0.001),
}


@pytest.mark.filterwarnings(KERAS_ARRAY_WARNING)
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_keras_file_resume_equals_uninterrupted(name: str, tmp_path: Path) -> None:
    straight = _model()
    straight.compile(optimizer=OPTIMIZERS[name](), loss="mse")
    losses = _fit(straight, 3)
    assert losses[-1] < losses[0]
    first = _model()
    first.compile(optimizer=OPTIMIZERS[name](), loss="mse")
    _fit(first, 2)
    path = tmp_path / f"{name}.keras"
    first.save(path)
    resumed = keras.saving.load_model(path)
    assert int(resumed.optimizer.iterations) == int(first.optimizer.iterations)
    _fit(resumed, 1)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)


def _eager_steps(name: str, steps: int) -> tuple[keras.optimizers.Optimizer, list[np.ndarray]]:
    """``steps`` eager ``apply_gradients`` calls on three variables, a plateau reduction after the second."""
    rng = np.random.default_rng(3)
    variables = [keras.Variable(rng.standard_normal(s).astype("float32")) for s in ((6, 5), (5,), (3, 4))]
    schedule = get_scheduler("reduce_lr_on_plateau", 0.01, scheduler_specific_kwargs={"patience": 0, "factor": 0.5})
    optimizer = {
        "AdamW": lambda: AdamW(schedule, weight_decay=0.01),
        "AdamWeightDecay": lambda: hf_optim_tf.AdamWeightDecay(schedule, weight_decay_rate=0.01),
        "Adafactor": lambda: hf_optim_tf.Adafactor(schedule, relative_step=False, beta_1=0.9),
    }[name]()
    for step in range(steps):
        grads = [keras.ops.convert_to_tensor(rng.standard_normal(v.shape).astype("float32")) for v in variables]
        optimizer.apply_gradients(zip(grads, variables))
        schedule.step(1.0)  # no improvement after the first: the lr halves from the second step on
    return optimizer, [keras.ops.convert_to_numpy(v.value) for v in variables]


@pytest.mark.skipif(BACKEND != "jax", reason="the jitted eager update is JAX's (TensorFlow's: test_traced_update.py)")
@pytest.mark.parametrize("name", ["AdamW", "AdamWeightDecay", "Adafactor"])
def test_an_eager_step_on_jax_is_jitted_once_and_equals_the_op_by_op_update(name: str, monkeypatch) -> None:
    """The update of all variables as one jax.jit (``_traced_update.jitted_update``), the learning rate of a
    stateful schedule passed in at every step: the same values as Keras' op-by-op update, within 4 ulps."""
    from hf_optim_tf import _traced_update

    monkeypatch.setattr(_traced_update, "EAGER_ITERATIONS", 2)  # two steps op by op, then jitted
    optimizer, jitted = _eager_steps(name, 4)
    assert len(optimizer._jitted_updates) == 1
    monkeypatch.setattr(_traced_update, "MAX_TRACES", 0)  # no list kept: Keras' own update, op by op
    plain, eager = _eager_steps(name, 4)
    assert plain._jitted_updates == {}
    for a, b in zip(jitted, eager):
        assert np.max(np.abs(a.view(np.int32).astype(np.int64) - b.view(np.int32).astype(np.int64))) <= 4
    np.testing.assert_allclose(float(optimizer.learning_rate), 0.01 * 0.5**3, rtol=1e-6)  # three reductions seen


@pytest.mark.parametrize("traced", [False, True], ids=["op-by-op", "traced"])
@pytest.mark.parametrize("name", ["AdamW", "AdamWeightDecay", "Adafactor"])
def test_a_gradient_of_another_shape_is_refused_before_any_variable_changes(name: str, traced: bool) -> None:
    """The bad gradient is the second: Keras' own optimizers have updated the first by the time an op meets it."""
    optimizer = {
        "AdamW": lambda: AdamW(1e-2, weight_decay=0.01),
        "AdamWeightDecay": lambda: hf_optim_tf.AdamWeightDecay(1e-2, weight_decay_rate=0.01),
        "Adafactor": lambda: hf_optim_tf.Adafactor(1e-2, relative_step=False, beta_1=0.9),
    }[name]()
    variables = [keras.Variable(np.ones((4, 3), "float32"), name="a"), keras.Variable(np.ones(3, "float32"), name="b")]
    good = [keras.ops.full(v.shape, 0.5) for v in variables]
    optimizer.apply_gradients(zip(good, variables))
    if traced:  # past the op-by-op iterations: the traced (TensorFlow, JAX) or multi-tensor (torch) step
        optimizer.iterations.assign(hf_optim_tf._traced_update.EAGER_ITERATIONS + 1)
        optimizer.apply_gradients(zip(good, variables))
    before = [_numpy(v) for v in [*variables, *optimizer.variables]]
    match = r"Received: a gradient of shape \(5,\) for variable 'b' of shape \(3,\)"
    with pytest.raises(ValueError, match=match):
        optimizer.apply_gradients([(good[0], variables[0]), (keras.ops.ones(5), variables[1])])
    after = [_numpy(v) for v in [*variables, *optimizer.variables]]
    assert all(np.array_equal(x, y) for x, y in zip(before, after)), "a refused step changed a variable or the state"


@pytest.mark.parametrize("shape", [(), (1,), (1, 3)], ids=["scalar", "one", "one-row"])
def test_a_gradient_that_broadcasts_to_its_variable_is_taken_as_keras_takes_it(shape: tuple[int, ...]) -> None:
    variables = [keras.Variable(np.ones((4, 3), "float32"), name="a")]
    ours, theirs = AdamW(1e-2), AdamW(1e-2)
    twins = [keras.Variable(np.ones((4, 3), "float32"), name="a")]
    ours.apply_gradients([(keras.ops.full(shape, 0.5), variables[0])])  # broadcast by the update's ops
    theirs.apply_gradients([(keras.ops.full((4, 3), 0.5), twins[0])])
    np.testing.assert_array_equal(_numpy(variables[0]), _numpy(twins[0]))


def test_a_refused_step_leaves_an_overwrite_with_gradient_variable_alone() -> None:
    """Keras' ``apply`` assigns the gradients of ``overwrite_with_gradient`` variables (float8 scales) before it
    updates the others: the check comes before that."""
    scale = keras.Variable(np.ones(2, "float32"), name="scale")
    scale.overwrite_with_gradient = True
    b = keras.Variable(np.ones(3, "float32"), name="b")
    optimizer = AdamW(1e-2)
    optimizer.apply_gradients([(keras.ops.ones(2), scale), (keras.ops.ones(3), b)])
    with pytest.raises(ValueError, match="for variable 'b' of shape"):
        optimizer.apply_gradients([(keras.ops.full((2,), 7.0), scale), (keras.ops.ones(5), b)])
    np.testing.assert_array_equal(_numpy(scale), np.ones(2, "float32"))


def _numpy(variable: keras.Variable) -> np.ndarray:
    return keras.ops.convert_to_numpy(keras.ops.copy(variable.value))  # (NumPy 2 warns on a tf.Variable itself)


def test_a_jitted_update_stores_a_value_of_the_variables_kind_directly_and_converts_any_other() -> None:
    """``_traced_update._store`` (the JAX update's assignments; it runs on any backend): a value of the variable's dtype
    and shape goes to the variable as it is; another dtype is converted to the variable's, as ``assign`` does; another
    shape is refused by ``assign``, naming both shapes, and the variable keeps its value."""
    from hf_optim_tf._traced_update import _store

    variable = keras.Variable(np.zeros((2, 3), np.float32))
    _store(variable, keras.ops.ones((2, 3), "float32"))
    np.testing.assert_array_equal(_numpy(variable), np.ones((2, 3), np.float32))
    _store(variable, keras.ops.full((2, 3), 1.5, "bfloat16"))
    assert keras.backend.standardize_dtype(variable.value.dtype) == "float32", "converted to the variable's dtype"
    np.testing.assert_array_equal(_numpy(variable), np.full((2, 3), 1.5, np.float32))
    with pytest.raises(ValueError, match=r"variable.shape=\(2, 3\).*value.shape=\S*\(?\[?3, 2"):
        _store(variable, keras.ops.zeros((3, 2), "float32"))
    np.testing.assert_array_equal(_numpy(variable), np.full((2, 3), 1.5, np.float32))
    # which way each value goes (TensorFlow's _direct_assign would cast a value of another dtype, JAX's would not)
    for value, way in [
        (np.ones((2, 3), np.float32), "direct"),
        (np.ones((2, 3), np.float16), "assign"),
        (np.ones((3, 2), np.float32), "assign"),
    ]:
        recorder = _AssignRecorder(np.zeros((2, 3), np.float32))
        _store(recorder, value)
        assert recorder.ways == [way], (value.dtype, value.shape)


class _AssignRecorder:
    """A variable's members that ``_store`` reads, recording which way a value went."""

    def __init__(self, current: np.ndarray) -> None:
        self._value, self.ways = current, []

    def _direct_assign(self, value: object) -> None:
        self.ways.append("direct")

    def assign(self, value: object) -> None:
        self.ways.append("assign")


def _restore(route: str, optimizer: keras.optimizers.Optimizer, values: list[Any]) -> None:
    if route == "keras_store":
        optimizer.load_own_variables({str(i): v for i, v in enumerate(values)})
    else:
        optimizer.set_weights(values)


def _restore_one(route: str, optimizer: keras.optimizers.Optimizer, index: int, value: np.ndarray) -> None:
    """The optimizer's own state with variable ``index`` replaced by ``value``."""
    values = [_numpy(v) for v in optimizer.variables]
    values[index] = value
    _restore(route, optimizer, values)


@pytest.mark.parametrize("route", ["keras_store", "set_weights"])
def test_state_given_as_the_backends_tensors_restores_exactly(route: str) -> None:
    """Another optimizer's state as the backend's tensors (``variable.value``), bfloat16 included, and a trainable
    variable's value as the learning rate (on torch: a tensor that requires grad). Keras takes them, so does the check
    (torch refuses ``.numpy()`` on both)."""
    variable = keras.Variable(np.linspace(-1.0, 1.0, 6, dtype=np.float32), dtype="bfloat16", name="w")
    source = AdamW(1e-2)
    source.apply([keras.ops.ones(6, "bfloat16")], [variable])
    target = AdamW(1e-3)
    target.build([variable])
    values = [v.value for v in source.variables]
    index = next(slot.index for slot in target._restore_slots() if slot.key == "learning_rate")
    values[index] = keras.Variable(0.5, trainable=True).value
    _restore(route, target, values)
    want = [np.asarray(numpy_value(v), np.float32) for v in source.variables]  # exact: bfloat16, small ints
    want[index] = np.float32(0.5)
    for got, expected in zip(target.variables, want):
        np.testing.assert_array_equal(np.asarray(numpy_value(got), np.float32), expected)


@pytest.mark.parametrize("route", ["keras_store", "set_weights"])
@pytest.mark.parametrize("key", ["iterations", "step"])
def test_a_restored_step_count_must_fit_the_integer_the_backend_keeps_it_in(route: str, key: str) -> None:
    """2**31 fits an int64 step count as TensorFlow and torch keep it; JAX without x64 keeps int64 in int32, where it
    would wrap to -2**31: refused there, naming the key, with nothing assigned."""
    variable = keras.Variable(np.ones(3, "float32"), name="w")
    optimizer = AdamW(1e-2)
    optimizer.apply_gradients([(keras.ops.ones(3), variable)])
    index = next(slot.index for slot in optimizer._restore_slots() if slot.key == key)
    before = [_numpy(v) for v in optimizer.variables]
    for value in (np.array(2**31, np.int64), np.array(2.0**31)):
        if before[index].dtype.itemsize < 8:
            with pytest.raises(ValueError, match=rf"`{key}`.*at most 2147483647"):
                _restore_one(route, optimizer, index, value)
            for got, want in zip([_numpy(v) for v in optimizer.variables], before):
                np.testing.assert_array_equal(got, want)
        else:
            _restore_one(route, optimizer, index, value)
            assert int(_numpy(optimizer.variables[index])) == 2**31


@pytest.mark.parametrize("route", ["keras_store", "set_weights"])
def test_a_restored_float64_value_must_fit_the_float_the_backend_keeps_it_in(route: str) -> None:
    """With floatx float64 the learning rate is a float64 variable, which JAX without x64 keeps in float32: 1e300
    would become inf there and is refused; TensorFlow and torch keep it."""
    previous = keras.config.floatx()
    keras.config.set_floatx("float64")
    try:
        variable = keras.Variable(np.ones(3), name="w")
        optimizer = AdamW(1e-2)
        optimizer.build([variable])
    finally:
        keras.config.set_floatx(previous)
    index = next(slot.index for slot in optimizer._restore_slots() if slot.key == "learning_rate")
    before = _numpy(optimizer.variables[index])
    if before.dtype == np.float32:
        with pytest.raises(ValueError, match=r"`learning_rate`.*beyond the range of float32"):
            _restore_one(route, optimizer, index, np.array(1e300))
        np.testing.assert_array_equal(_numpy(optimizer.variables[index]), before)
    else:
        _restore_one(route, optimizer, index, np.array(1e300))
        assert float(_numpy(optimizer.variables[index])) == 1e300


@pytest.mark.parametrize("route", ["keras_store", "set_weights"])
def test_restored_values_are_checked_against_the_dtype_the_backend_stores_them_in(
    route: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What JAX without x64 does (64-bit state kept in 32 bits), simulated on every backend through
    ``StateSlot.stored_dtype``: a step count and a float64 learning rate are checked against the narrower dtype, not
    the declared one, and refused with nothing assigned (the tests above see the real storage, which TensorFlow and
    torch never narrow)."""
    narrowed = {"int64": "int32", "float64": "float32"}
    monkeypatch.setattr(StateSlot, "stored_dtype", property(lambda slot: narrowed.get(slot.dtype, slot.dtype)))
    previous = keras.config.floatx()
    keras.config.set_floatx("float64")
    try:
        variable = keras.Variable(np.ones(3), name="w")
        optimizer = AdamW(1e-2)
        optimizer.apply_gradients([(keras.ops.ones(3, "float64"), variable)])
    finally:
        keras.config.set_floatx(previous)
    slots = {slot.key: slot.index for slot in optimizer._restore_slots()}
    before = [_numpy(v) for v in optimizer.variables]
    refused = [
        ("iterations", np.array(2**31, np.int64), r"`iterations`.*at most 2147483647"),
        ("learning_rate", np.array(1e300), r"`learning_rate`.*beyond the range of float32"),
    ]
    for key, value, message in refused:
        with pytest.raises(ValueError, match=message):
            _restore_one(route, optimizer, slots[key], value)
        for got, want in zip([_numpy(v) for v in optimizer.variables], before):
            np.testing.assert_array_equal(got, want)


def test_a_missing_backend_names_the_extra_to_install() -> None:
    """``import hf_optim_tf`` with KERAS_BACKEND set to a backend that is not installed: an ImportError naming the
    backend package and the extra, not Keras' ModuleNotFoundError from deep inside its import (a fresh process)."""
    import importlib.util
    import os
    import subprocess

    missing = [name for name in ("jax", "torch", "tensorflow") if importlib.util.find_spec(name) is None]
    if not missing:
        pytest.skip("every Keras backend is installed in this environment: none can be missing")
    env = {**os.environ, "KERAS_BACKEND": missing[0]}
    done = subprocess.run(
        [sys.executable, "-c", "import hf_optim_tf"], check=False, env=env, capture_output=True, text=True
    )
    assert done.returncode != 0
    last = done.stderr.strip().splitlines()[-1]
    extra = {"jax": "[jax]", "torch": "[torch]", "tensorflow": "[cpu]"}[missing[0]]
    assert last.startswith(f"ImportError: hf-optim-tf runs on Keras 3, whose backend '{missing[0]}'"), last
    assert f"needs the `{missing[0]}` package" in last and f"hf-optim-tf{extra}" in last, last
