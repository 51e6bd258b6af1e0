"""Restoring optimizer state: every route checks every value before anything is assigned.

Routes: ``load_own_variables`` (what ``.keras`` / ``.weights.h5`` loading calls), ``set_weights`` and
``tf.train.Checkpoint`` (checked through per-variable hooks, committed as a whole). A value that does not fit raises
a ValueError/TypeError naming the state key and the model variable, and every optimizer variable keeps its value.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hf_optim_tf as ht
import keras
import numpy as np
import pytest
import tensorflow as tf
from hf_optim_tf._state_check import StateSlot, checked_value

SHAPES = {"dense/kernel": (3, 5), "dense/bias": (5,), "attention/kernel": (2, 3, 4)}
MAKERS: dict[str, Callable[[], keras.optimizers.Optimizer]] = {
    "adamw": lambda: ht.AdamW(1e-2, weight_decay=0.01),
    "adafactor": lambda: ht.Adafactor(beta_1=0.9, weight_decay=0.01),
    "adam_weight_decay": lambda: ht.AdamWeightDecay(1e-2, weight_decay_rate=0.01, amsgrad=True),
}
ROUTES = ("keras_store", "set_weights", "tf_checkpoint")
KERAS_SAVE_WARNING = "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"


def _variables(dtype: str = "float32") -> list[keras.Variable]:
    rng = np.random.default_rng(0)
    out = []
    for path, shape in SHAPES.items():
        scope, name = path.split("/")
        with keras.name_scope(scope):
            out.append(keras.Variable(rng.standard_normal(shape).astype(np.float32), dtype=dtype, name=name))
    return out


def _grads(step: int, dtype: str = "float32") -> list[Any]:
    rng = np.random.default_rng(10 + step)
    return [tf.constant(rng.standard_normal(s).astype(np.float32), dtype=dtype) for s in SHAPES.values()]


def _trained(name: str, steps: int = 2, dtype: str = "float32") -> tuple[keras.optimizers.Optimizer, list[Any]]:
    variables = _variables(dtype)
    optimizer = MAKERS[name]()
    optimizer.build(variables)
    for step in range(steps):
        optimizer.apply(_grads(step, dtype), variables)
    return optimizer, variables


def _fresh(name: str, dtype: str = "float32") -> tuple[keras.optimizers.Optimizer, list[Any]]:
    return _trained(name, steps=0, dtype=dtype)


def _values(optimizer: keras.optimizers.Optimizer) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in optimizer.variables]


def _assert_values(optimizer: keras.optimizers.Optimizer, expected: list[np.ndarray]) -> None:
    got = _values(optimizer)
    assert len(got) == len(expected)
    for index, (a, b) in enumerate(zip(got, expected)):
        assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes(), f"variable {index} differs"


def _keys(optimizer: keras.optimizers.Optimizer) -> list[str]:
    return [slot.key for slot in optimizer._restore_slots()]


def _write_checkpoint(values: list[Any], path: Path) -> str:
    """A checkpoint with the object graph of an optimizer (``_variables/<i>``) holding ``values``."""
    fake = tf.__internal__.tracking.AutoTrackable()
    fake._variables = [tf.Variable(v) for v in values]
    return tf.train.Checkpoint(optimizer=fake).write(str(path))


def _restore(route: str, optimizer: keras.optimizers.Optimizer, values: list[Any], tmp_path: Path) -> None:
    if route == "keras_store":
        optimizer.load_own_variables({str(i): v for i, v in enumerate(values)})
    elif route == "set_weights":
        optimizer.set_weights(values)
    else:
        path = _write_checkpoint(values, tmp_path / f"ckpt-{len(os.listdir(tmp_path))}")
        tf.train.Checkpoint(optimizer=optimizer).restore(path)


def _index(optimizer: keras.optimizers.Optimizer, key: str, last: bool = True) -> int:
    """The index of the last (or first) optimizer variable holding ``key``."""
    indices = [i for i, k in enumerate(_keys(optimizer)) if k == key]
    return indices[-1] if last else indices[0]


# --------------------------------------------------------------------------- accepted


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("name", MAKERS)
def test_clean_state_restores_exactly(name: str, route: str, tmp_path: Path) -> None:
    source, _ = _trained(name)
    saved = _values(source)
    target, _ = _fresh(name)
    _restore(route, target, saved, tmp_path)
    _assert_values(target, saved)


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("name", MAKERS)
def test_harmless_casts_are_accepted_and_step_identically(name: str, route: str, tmp_path: Path) -> None:
    """float64 floats, int32 and integral float64 counters: accepted, and the next step is bit for bit the same."""
    source, _ = _trained(name)
    saved = _values(source)
    keys = _keys(source)
    cast = [
        v.astype(np.float64) if v.dtype == np.float32 else v.astype(np.int32 if k == "step" else np.float64)
        for v, k in zip(saved, keys)
    ]
    results = []
    for values in (saved, cast):
        target, variables = _fresh(name)
        for variable, value in zip(variables, _trained(name)[1]):
            variable.assign(value)
        _restore(route, target, values, tmp_path)
        target.apply(_grads(5), variables)
        results.append(_values(target) + [np.array(v.numpy()) for v in variables])
    for a, b in zip(*results):
        assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("route", ROUTES)
def test_bfloat16_state_takes_wider_floats(route: str, tmp_path: Path) -> None:
    source, _ = _trained("adamw", dtype="bfloat16")
    saved = _values(source)
    assert any(str(v.dtype) == "bfloat16" for v in saved)
    wider = [v.astype(np.float32) if str(v.dtype) == "bfloat16" else v for v in saved]
    target, _ = _fresh("adamw", dtype="bfloat16")
    _restore(route, target, wider, tmp_path)
    _assert_values(target, saved)


def test_store_saved_before_build_keeps_keras_warning() -> None:
    target, _ = _trained("adamw")
    before = _values(target)
    unbuilt = ht.AdamW(1e-2)
    store = {str(i): np.array(v.numpy()) for i, v in enumerate(unbuilt.variables)}
    assert len(store) == 2
    with pytest.warns(UserWarning, match=r"^Skipping variable loading for optimizer 'AdamW'"):
        target.load_own_variables(store)
    _assert_values(target, before)


def test_unbuilt_optimizer_keeps_keras_behaviour() -> None:
    source, _ = _trained("adamw")
    store = {str(i): v for i, v in enumerate(_values(source))}
    unbuilt = ht.AdamW(1e-2)
    with pytest.warns(UserWarning, match=r"^Skipping variable loading for optimizer 'AdamW'"):
        unbuilt.load_own_variables(store)
    with pytest.raises(
        ValueError, match=r"^You are calling `set_weights\(\)` on an optimizer that has not yet been built"
    ):
        unbuilt.set_weights(list(store.values()))


# --------------------------------------------------------------------------- rejected, nothing changed


def _mutate(kind: str, optimizer: keras.optimizers.Optimizer, values: list[np.ndarray]) -> tuple[list[Any], str]:
    """``values`` with one defect of ``kind``, and a text the error message must contain. Mutations hit the last
    variable of a key, so a route that assigned value by value would already have changed the ones before."""
    out: list[Any] = list(values)
    keys = _keys(optimizer)
    if kind in ("shape_grown", "shape_transposed", "shape_broadcast", "shape_scalar", "dtype_int", "dtype_string"):
        i = [j for j, v in enumerate(values) if v.ndim == 2 and keys[j] not in ("step",)][-1]
        v = values[i]
        out[i] = {
            "shape_grown": np.concatenate([v, v[:1]]),
            "shape_transposed": v.T,
            "shape_broadcast": v[None],
            "shape_scalar": np.array(v.reshape(-1)[0]),
            "dtype_int": v.astype(np.int32),
            "dtype_string": np.full(v.shape, b"1", dtype=object),
        }[kind]
        return out, f"`{keys[i]}`"
    if kind.startswith("counter_"):
        key = "step" if "step" in keys else "iterations"
        i = _index(optimizer, key)
        out[i] = {"counter_nan": np.float64(np.nan), "counter_negative": np.int64(-3), "counter_fraction": 2.5}[kind]
        out[i] = np.asarray(out[i])
        return out, f"`{key}`"
    if kind == "iterations_bool":
        out[0] = np.array(True)
        return out, "`iterations`"
    if kind == "negative_second_moment":
        key = next(k for k in ("exp_avg_sq_col", "max_exp_avg_sq", "exp_avg_sq") if k in keys)
        i = _index(optimizer, key)
        out[i] = values[i].copy()
        out[i].reshape(-1)[-1] = -1e-3
        return out, f"`{key}`"
    if kind == "learning_rate_nan":
        out[1] = np.float32(np.nan)
        return out, "`learning_rate`"
    if kind == "complex_moment":
        i = _index(optimizer, "exp_avg")
        out[i] = values[i].astype(np.complex64)
        return out, "`exp_avg`"
    if kind == "missing_last":
        return out[:-1], "variables"
    if kind == "extra":
        return [*out, np.zeros(3, np.float32)], "variables"
    raise AssertionError(kind)


MUTATIONS = (
    "shape_grown",
    "shape_transposed",
    "shape_broadcast",
    "shape_scalar",
    "dtype_int",
    "dtype_string",
    "complex_moment",
    "counter_nan",
    "counter_negative",
    "counter_fraction",
    "iterations_bool",
    "negative_second_moment",
    "learning_rate_nan",
    "missing_last",
    "extra",
)


@pytest.mark.parametrize("kind", MUTATIONS)
@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize("name", MAKERS)
def test_bad_state_is_rejected_and_changes_nothing(name: str, route: str, kind: str, tmp_path: Path) -> None:
    source, _ = _trained(name)
    target, _ = _fresh(name)
    bad, needle = _mutate(kind, target, _values(source))
    before = _values(target)
    with pytest.raises((ValueError, TypeError)) as caught:
        _restore(route, target, bad, tmp_path)
    assert needle in str(caught.value), str(caught.value)
    _assert_values(target, before)


@pytest.mark.parametrize("route", ROUTES)
def test_message_names_model_variable_and_shapes(route: str, tmp_path: Path) -> None:
    source, _ = _trained("adafactor")
    target, _ = _fresh("adafactor")
    values = _values(source)
    i = _index(target, "exp_avg_sq_row", last=False)  # the row statistic of dense/kernel: shape (3,)
    values[i] = np.ones((3, 1), np.float32)
    with pytest.raises(ValueError) as caught:
        _restore(route, target, values, tmp_path)
    message = str(caught.value)
    for text in ("`exp_avg_sq_row`", "'dense/kernel'", "(3, 5)", "must have shape (3,)", "(3, 1)"):
        assert text in message, message


@pytest.mark.parametrize("route", ROUTES)
@pytest.mark.parametrize(("source_name", "target_name"), [(a, b) for a in MAKERS for b in MAKERS if a != b])
def test_another_optimizers_state_is_rejected(source_name: str, target_name: str, route: str, tmp_path: Path) -> None:
    source, _ = _trained(source_name)
    target, _ = _fresh(target_name)
    before = _values(target)
    with pytest.raises((ValueError, TypeError)):
        if route == "tf_checkpoint":  # the real checkpoint, with the other optimizer's own object graph
            path = tf.train.Checkpoint(optimizer=source).write(str(tmp_path / "other"))
            tf.train.Checkpoint(optimizer=target).restore(path)
        else:
            _restore(route, target, _values(source), tmp_path)
    _assert_values(target, before)


def test_same_count_other_layout_is_rejected(tmp_path: Path) -> None:
    """AdamW and AdamWeightDecay(amsgrad) hold the same number of variables; AdamW's steps are int64 scalars."""
    source, _ = _trained("adamw")
    target, _ = _fresh("adam_weight_decay")
    assert len(source.variables) == len(target.variables)
    before = _values(target)
    for route in ("keras_store", "set_weights"):
        with pytest.raises(ValueError, match=r"^AdamWeightDecay (state|variable) `\w+` .* must have shape "):
            _restore(route, target, _values(source), tmp_path)
        _assert_values(target, before)


def test_set_weights_needs_a_list() -> None:
    target, _ = _fresh("adamw")
    with pytest.raises(TypeError, match=r"^Argument `weights` must be a list of arrays\. Received: weights=3$"):
        target.set_weights(3)


def test_store_keys_must_be_the_indices() -> None:
    source, _ = _trained("adamw")
    target, _ = _fresh("adamw")
    store = {str(i): v for i, v in enumerate(_values(source))}
    store["x"] = store.pop("3")
    before = _values(target)
    with pytest.raises(ValueError, match=r"^AdamW's store must hold the keys '0' to "):
        target.load_own_variables(store)
    _assert_values(target, before)


# --------------------------------------------------------------------------- .keras / .weights.h5


def _compiled(optimizer: keras.optimizers.Optimizer) -> keras.Model:
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, name="dense"), keras.layers.Dense(2, name="head")]
    )
    model.compile(optimizer=optimizer, loss="mse")
    model.fit(np.ones((4, 3)), np.ones((4, 2)), epochs=1, verbose=0)
    return model


@pytest.mark.filterwarnings(KERAS_SAVE_WARNING)
def test_keras_file_round_trip_and_other_optimizer(tmp_path: Path) -> None:
    model = _compiled(ht.Adafactor(beta_1=0.9))
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    _assert_values(loaded.optimizer, _values(model.optimizer))
    model.save_weights(tmp_path / "m.weights.h5")
    other = _compiled(ht.AdamW(1e-3))
    before = _values(other.optimizer)
    with pytest.raises(
        ValueError,
        match=r"(?s)^A total of 1 objects could not be loaded\..*\n\nAdamW holds 14 variables .* Received: 20 values",
    ):
        other.load_weights(tmp_path / "m.weights.h5")
    _assert_values(other.optimizer, before)


# --------------------------------------------------------------------------- tf.train.Checkpoint specifics


def test_deferred_checkpoint_restore_is_checked_at_build(tmp_path: Path) -> None:
    source, _ = _trained("adamw")
    saved = _values(source)
    path = tf.train.Checkpoint(optimizer=source).write(str(tmp_path / "good"))
    lazy = ht.AdamW(1e-2, weight_decay=0.01)
    tf.train.Checkpoint(optimizer=lazy).restore(path)
    assert int(lazy.iterations.numpy()) == 2  # restored at once, as Keras/TF do
    lazy.build(_variables())
    _assert_values(lazy, saved)

    bad = list(saved)
    bad[-1] = np.asarray(-1, np.int64)  # the last step counter
    path = _write_checkpoint(bad, tmp_path / "bad")
    lazy = ht.AdamW(1e-2, weight_decay=0.01)
    tf.train.Checkpoint(optimizer=lazy).restore(path)
    assert int(lazy.iterations.numpy()) == 2
    variables = _variables()
    with pytest.raises(ValueError, match=r"^AdamW state `step` of variable 'attention/kernel'"):
        lazy.apply(_grads(0), variables)  # builds, and so checks, before any update
    fresh, _ = _fresh("adamw")
    _assert_values(lazy, _values(fresh))  # iterations put back, the state as built


def test_deferred_restore_with_extra_state_is_rejected(tmp_path: Path) -> None:
    source, _ = _trained("adafactor")
    path = tf.train.Checkpoint(optimizer=source).write(str(tmp_path / "ada"))
    lazy = ht.AdamW(1e-2)
    tf.train.Checkpoint(optimizer=lazy).restore(path)
    with pytest.raises((ValueError, TypeError)):
        lazy.build(_variables())
    assert int(lazy.iterations.numpy()) == 0


@pytest.mark.parametrize("name", MAKERS)
def test_a_checkpoint_restore_describes_the_optimizer_once_whatever_its_size(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every value a ``tf.train.Checkpoint`` restore assigns is checked against the same description of the
    optimizer, made when the first value arrives: once per value made a restore quadratic in the number of
    variables (24.9 s for AdamW over 400 model variables, against 2.2 s)."""
    source, _ = _trained(name)
    saved = _values(source)
    path = tf.train.Checkpoint(optimizer=source).write(str(tmp_path / "c"))
    target, _ = _fresh(name)
    calls = []
    describe = type(target)._restore_slots
    monkeypatch.setattr(type(target), "_restore_slots", lambda self: calls.append(1) or describe(self))
    tf.train.Checkpoint(optimizer=target).restore(path)
    assert len(calls) == 1, f"{len(calls)} descriptions of {len(target.variables)} variables in one restore"
    _assert_values(target, saved)


def test_checkpoint_written_by_the_hooked_variables_is_plain(tmp_path: Path) -> None:
    """The hooks change nothing that is saved: plain TF variables restore the same values and dtypes from it."""
    source, _ = _trained("adamw")
    path = tf.train.Checkpoint(optimizer=source).write(str(tmp_path / "c"))
    plain = tf.__internal__.tracking.AutoTrackable()
    plain._variables = [tf.Variable(tf.zeros(v.shape, v.value.dtype)) for v in source.variables]
    tf.train.Checkpoint(optimizer=plain).restore(path)
    for mine, theirs in zip(source.variables, plain._variables):
        assert theirs.dtype == mine.value.dtype
        np.testing.assert_array_equal(theirs.numpy(), mine.numpy())


def test_checkpoint_of_model_and_optimizer_restores_both(tmp_path: Path) -> None:
    model = _compiled(ht.AdamWeightDecay(1e-3))
    path = tf.train.Checkpoint(model=model, optimizer=model.optimizer).write(str(tmp_path / "c"))
    again = _compiled(ht.AdamWeightDecay(1e-3))
    again.fit(np.zeros((4, 3)), np.zeros((4, 2)), epochs=1, verbose=0)
    tf.train.Checkpoint(model=again, optimizer=again.optimizer).restore(path)
    _assert_values(again.optimizer, _values(model.optimizer))
    for a, b in zip(again.weights, model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_mirrored_optimizer_restores_checked(two_cpu_strategy: tf.distribute.Strategy, tmp_path: Path) -> None:
    """MirroredStrategy: values are checked and committed to every replica; a float64 state is read as saved."""

    def built() -> tuple[keras.optimizers.Optimizer, Any]:
        with two_cpu_strategy.scope():
            variable = keras.Variable(np.ones((3, 4), np.float32), name="w")
            optimizer = ht.AdamW(1e-2)
            optimizer.build([variable])
        return optimizer, variable

    source, variable = built()
    step = tf.function(lambda: two_cpu_strategy.run(lambda: source.apply([tf.ones((3, 4))], [variable])))
    step()
    step()
    saved = _values(source)
    plain = tf.__internal__.tracking.AutoTrackable()
    plain._variables = [tf.Variable(tf.zeros(v.shape, v.value.dtype)) for v in source.variables]
    tf.train.Checkpoint(optimizer=plain).restore(tf.train.Checkpoint(optimizer=source).write(str(tmp_path / "c")))
    for mine, theirs in zip(saved, plain._variables):
        np.testing.assert_array_equal(theirs.numpy(), mine)

    target, _ = built()
    wider = [v.astype(np.float64) if v.dtype == np.float32 else v for v in saved]
    tf.train.Checkpoint(optimizer=target).restore(_write_checkpoint(wider, tmp_path / "f64"))
    _assert_values(target, saved)
    for variable in target.variables[2:]:
        replicas = [np.array(r.numpy()) for r in variable.value.values]
        assert len(replicas) == 2 and all(r.tobytes() == replicas[0].tobytes() for r in replicas)

    bad = list(saved)
    bad[3] = -np.abs(bad[3]) - 1.0  # exp_avg_sq; the step counter after it is restored later
    with pytest.raises(ValueError, match=r"^AdamW state `exp_avg_sq` of variable 'w'"):
        tf.train.Checkpoint(optimizer=target).restore(_write_checkpoint(bad, tmp_path / "bad"))
    _assert_values(target, saved)


# --------------------------------------------------------------------------- the rules themselves


def _slot(key: str, dtype: str = "float32", shape: tuple[int, ...] = (2,)) -> StateSlot:
    return StateSlot(0, keras.Variable(np.zeros(shape), dtype=dtype), key, "w", shape)


@pytest.mark.parametrize(
    ("key", "dtype", "value", "error"),
    [
        (
            "exp_avg_sq",
            "float32",
            np.array([1e300, 1.0]),
            r"^Opt state `exp_avg_sq` .* holds finite values beyond the range",
        ),
        ("exp_avg_sq", "float32", np.array([-np.inf, 1.0]), r"^Opt state `exp_avg_sq` .* must not be negative"),
        ("step", "int64", np.array(2.0**63), r"^Opt state `step` .* must be a non-negative integer"),
        ("step", "int32", np.array(2**31, np.int64), r"^Opt state `step` .* must be a non-negative integer"),
        ("step", "int64", np.array(np.uint64(2**64 - 1)), r"^Opt state `step` .* must be a non-negative integer"),
        ("exp_avg", "float32", [[1.0], [2.0, 3.0]], r"^Opt state `exp_avg` .* must be an array"),
    ],
)
def test_rules(key: str, dtype: str, value: Any, error: str) -> None:
    shape = () if key == "step" else (2,)
    with pytest.raises((ValueError, TypeError), match=error):
        checked_value(_slot(key, dtype, shape), value, "v", "Opt")


def test_nan_second_moments_pass() -> None:
    """A NaN gradient leaves NaN in the second moment: a restored NaN is the same state."""
    out = checked_value(_slot("exp_avg_sq"), np.array([np.nan, 1.0]), "v", "Opt")
    assert np.isnan(out[0]) and out.dtype == np.float32


def test_hooks_leave_warnings_alone() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _trained("adamw")
