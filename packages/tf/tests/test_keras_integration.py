"""Keras behaviour: fit, .keras save/load/resume, XLA, mixed precision, MirroredStrategy, helpers."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path

import hf_optim_spec as hs
import hf_optim_tf
import keras
import numpy as np
import pytest
import tensorflow as tf
from _metric_schedules import optimizer_run
from _tf_helpers import dtype_policy
from hf_optim_tf import (
    Adafactor,
    AdamW,
    AdamWeightDecay,
    PlateauSchedule,
    PolynomialDecay,
    SchedulerType,
    WarmUp,
    create_optimizer,
    get_cosine_schedule_with_warmup,
    get_scheduler,
)

X = np.random.default_rng(0).standard_normal((64, 6)).astype("float32")
Y = (X @ np.random.default_rng(1).standard_normal((6, 2))).astype("float32")


def _model(dtype: str | None = None) -> keras.Model:
    keras.utils.set_random_seed(7)
    inputs = keras.Input((6,))
    x = keras.layers.Dense(16, activation="relu", name="dense", dtype=dtype)(inputs)
    x = keras.layers.LayerNormalization(name="LayerNorm", dtype=dtype)(x)
    outputs = keras.layers.Dense(2, name="head", dtype=dtype)(x)
    return keras.Model(inputs, outputs)


def _fit(model: keras.Model, epochs: int, **kwargs: object) -> list[float]:
    history = model.fit(X, Y, batch_size=16, epochs=epochs, shuffle=False, verbose=0, **kwargs)
    return [float(v) for v in history.history["loss"]]


OPTIMIZERS: dict[str, Callable[[], keras.optimizers.Optimizer]] = {
    "adam_weight_decay_warmup": lambda: create_optimizer(1e-2, 24, 4, weight_decay_rate=0.01)[0],
    "adamw_cosine": lambda: AdamW(get_cosine_schedule_with_warmup(1e-2, 3, 24), weight_decay=0.01),
    "adafactor": lambda: Adafactor(beta_1=0.9, weight_decay=0.001),
}


# Keras' .keras writer calls np.array(variable); NumPy 2 warns about TF's __array__ (not ours).
KERAS_SAVE_WARNING = "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"


@pytest.mark.filterwarnings(KERAS_SAVE_WARNING)
@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_fit_then_save_load_resume_equals_uninterrupted(name: str, tmp_path: Path) -> None:
    straight = _model()
    straight.compile(optimizer=OPTIMIZERS[name](), loss="mse", jit_compile=False)
    losses = _fit(straight, 4)
    assert losses[-1] < losses[0]

    first = _model()
    first.compile(optimizer=OPTIMIZERS[name](), loss="mse", jit_compile=False)
    _fit(first, 2)
    path = tmp_path / f"{name}.keras"
    first.save(path)
    resumed = keras.saving.load_model(path)  # no custom_objects: everything is registered
    assert type(resumed.optimizer) is type(first.optimizer)
    assert int(resumed.optimizer.iterations) == int(first.optimizer.iterations)
    _fit(resumed, 2)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_xla_matches_the_graph_path() -> None:
    results = {}
    for jit in (False, True):
        model = _model()
        model.compile(optimizer=OPTIMIZERS["adamw_cosine"](), loss="mse", jit_compile=jit)
        _fit(model, 2)
        results[jit] = model.get_weights()
    tol = hs.get("adamw").tol("float32")
    for a, b in zip(results[False], results[True]):
        np.testing.assert_allclose(a, b, rtol=tol.rtol, atol=tol.atol)


def test_xla_adafactor_and_adam_weight_decay_in_one_tf_function() -> None:
    """One jit-compiled step function driving two optimizers (a single XLA compile)."""
    shapes = {"w": (5, 3), "b": (3,), "k": (2, 5, 3)}
    rng = np.random.default_rng(3)
    init = {k: rng.standard_normal(s).astype("float32") for k, s in shapes.items()}
    grads = [[rng.standard_normal(s).astype("float32") for s in shapes.values()] for _ in range(4)]

    def run(jit: bool) -> list[np.ndarray]:
        va = [keras.Variable(v, name=k) for k, v in init.items()]
        vb = [keras.Variable(v, name=k) for k, v in init.items()]
        opt_a = Adafactor(beta_1=0.9)
        opt_b = AdamWeightDecay(WarmUp(0.01, PolynomialDecay(0.01, 10), 2), weight_decay_rate=0.1, amsgrad=True)
        opt_a.build(va)
        opt_b.build(vb)

        @tf.function(jit_compile=jit)
        def step(*g: tf.Tensor) -> None:
            opt_a.apply(list(g), va)
            opt_b.apply(list(g), vb)

        for g in grads:
            step(*g)
        return [v.numpy() for v in va + vb]

    tols = [hs.get(spec_id).tol("float32") for spec_id in ("adafactor", "adam_weight_decay") for _ in shapes]
    for a, b, tol in zip(run(False), run(True), tols, strict=True):
        np.testing.assert_allclose(a, b, rtol=tol.rtol, atol=tol.atol)


def test_adafactor_under_xla_on_cpu_takes_its_sums_as_xla_cpu_runs_them_fast() -> None:
    """Under jit_compile on a CPU, the row and column means of each factored variable are products with a vector of
    ones (two dots each) and the squares of p and of the update pass an optimization barrier before their sums (two per
    variable; ``hf_optim_tf/_sums.py``); a graph without XLA has neither. That the values are those of the graph path:
    test_xla_adafactor_and_adam_weight_decay_in_one_tf_function."""
    if tf.config.list_logical_devices("GPU"):
        pytest.skip("these sums are for XLA on CPU only; on a GPU they stay reductions")
    shapes = [(4, 3), (3,), (2, 4, 3)]  # a matrix, a vector (unfactored), a stack of matrices (factored per matrix)
    variables = [keras.Variable(np.ones(s, "float32")) for s in shapes]
    grads = [tf.fill(s, 0.5) for s in shapes]
    optimizer = Adafactor()
    optimizer.build(variables)

    def step(*g: tf.Tensor) -> None:
        optimizer.apply(list(g), variables)

    hlo = tf.function(step, jit_compile=True).experimental_get_compiler_ir(*grads)(stage="hlo")
    assert hlo.count("opt-barrier(") == 2 * len(shapes)
    assert hlo.count(" dot(") == 2 * sum(len(s) >= 2 for s in shapes)
    graph = tf.function(step).get_concrete_function(*grads).graph
    assert not {op.type for op in graph.get_operations()} & {"XlaOptimizationBarrier", "Einsum", "BatchMatMulV2"}


def test_mixed_bfloat16_policy_trains() -> None:
    with dtype_policy("mixed_bfloat16"):
        model = _model()
        model.compile(optimizer=AdamWeightDecay(1e-2, weight_decay_rate=0.01), loss="mse", jit_compile=False)
        losses = _fit(model, 3)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert {str(w.dtype) for w in model.trainable_weights} == {"float32"}


def test_bfloat16_variables_with_adafactor_train() -> None:
    model = _model(dtype="bfloat16")
    model.compile(optimizer=Adafactor(), loss="mse", jit_compile=False)
    losses = _fit(model, 3)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert {str(w.dtype) for w in model.trainable_weights} == {"bfloat16"}


@pytest.mark.parametrize(
    "make",
    [lambda: AdamW(1e-2), lambda: AdamWeightDecay(1e-2, weight_decay_rate=0.01)],
    ids=["adamw", "adam_weight_decay"],
)
def test_float16_with_loss_scale_optimizer(make: Callable[[], keras.optimizers.Optimizer]) -> None:
    with dtype_policy("mixed_float16"):
        model = _model()
        inner = make()
        optimizer = keras.optimizers.LossScaleOptimizer(inner)
        model.compile(optimizer=optimizer, loss="mse", jit_compile=False)
        losses = _fit(model, 3)
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert int(inner.iterations) > 0


def test_mirrored_strategy_fit_equals_single_device(two_cpu_strategy: tf.distribute.MirroredStrategy) -> None:
    single = _model()
    single.compile(optimizer=create_optimizer(1e-2, 16, 2, weight_decay_rate=0.01)[0], loss="mse", jit_compile=False)
    _fit(single, 2)
    with two_cpu_strategy.scope():
        mirrored = _model()
        mirrored.compile(
            optimizer=create_optimizer(1e-2, 16, 2, weight_decay_rate=0.01)[0], loss="mse", jit_compile=False
        )
    _fit(mirrored, 2)
    for a, b in zip(single.get_weights(), mirrored.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- schedules & helpers


def test_warmup_config_round_trip_serializes_the_wrapped_schedule() -> None:
    schedule = WarmUp(0.1, PolynomialDecay(0.1, 20, 0.01, power=2.0), 5, power=0.5, name="w")
    config = schedule.get_config()
    assert isinstance(config["decay_schedule_fn"], dict)
    again = WarmUp.from_config(copy.deepcopy(config))
    steps = [0, 3, 5, 9, 30]
    assert [float(again(s)) for s in steps] == [float(schedule(s)) for s in steps]
    revived = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    assert isinstance(revived, WarmUp)
    assert [float(revived(s)) for s in steps] == [float(schedule(s)) for s in steps]


def test_polynomial_decay_is_keras_polynomial_decay() -> None:
    ours = PolynomialDecay(0.1, 7, 0.001, power=1.5, cycle=True)
    theirs = keras.optimizers.schedules.PolynomialDecay(0.1, 7, 0.001, power=1.5, cycle=True)
    assert isinstance(ours, keras.optimizers.schedules.PolynomialDecay)
    assert ours.get_config() == theirs.get_config()
    for step in [0, 1, 6, 7, 8, 20]:
        np.testing.assert_allclose(float(ours(step)), float(theirs(step)), rtol=2e-6)


@pytest.mark.parametrize("name", [0.0, 1, b"w", ["w"]])
def test_schedule_name_must_be_a_string_or_none(name: object) -> None:
    # The expected message is the spec's own uniform error for `name` (both specs type it as a string).
    warmup_args = {"initial_learning_rate": 0.1, "decay_schedule_fn": abs, "warmup_steps": 3}
    with pytest.raises(TypeError) as spec_error:
        hs.validate("warmup", {**warmup_args, "name": name}, framework="tf")
    with pytest.raises(TypeError, match=re.escape(str(spec_error.value))):
        WarmUp(0.1, PolynomialDecay(0.1, 10), 3, name=name)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=re.escape(str(spec_error.value))):
        PolynomialDecay(0.1, 10, name=name)  # type: ignore[arg-type]
    assert WarmUp(0.1, abs, 3, name=None).name is None
    assert PolynomialDecay(0.1, 10, name="p").name == "p"


def test_polynomial_decay_name_none_follows_the_spec() -> None:
    if hs.get("polynomial_decay").parameters["name"].nullable:
        assert PolynomialDecay(0.1, 10, name=None).get_config()["name"] is None
        return
    args = {"initial_learning_rate": 0.1, "decay_steps": 10, "name": None}
    with pytest.raises(TypeError) as spec_error:
        hs.validate("polynomial_decay", args, framework="tf")
    with pytest.raises(TypeError, match=re.escape(str(spec_error.value))):
        PolynomialDecay(0.1, 10, name=None)  # type: ignore[arg-type]


def test_create_optimizer_follows_transformers() -> None:
    optimizer, schedule = create_optimizer(3e-5, 100, 10, weight_decay_rate=0.01)
    assert isinstance(optimizer, AdamWeightDecay) and isinstance(schedule, WarmUp)
    assert optimizer.exclude_from_weight_decay == ["LayerNorm", "layer_norm", "bias"]
    assert optimizer.epsilon == 1e-8
    _, no_warmup = create_optimizer(3e-5, 100, 0, min_lr_ratio=0.1)
    assert type(no_warmup) is PolynomialDecay
    assert no_warmup.end_learning_rate == pytest.approx(3e-6)
    clipped, _ = create_optimizer(3e-5, 100, 10, adam_clipnorm=1.0)
    assert clipped.clipnorm == 1.0 and clipped.weight_decay_rate == 0.0


def test_get_scheduler_covers_every_scheduler_type() -> None:
    specific = {
        SchedulerType("cosine_with_min_lr"): {"min_lr_rate": 0.1},
        SchedulerType("cosine_warmup_with_min_lr"): {"min_lr_rate": 0.1},
        SchedulerType("warmup_stable_decay"): {"num_decay_steps": 3},
    }
    for kind in SchedulerType:
        schedule = get_scheduler(
            kind, 0.1, num_warmup_steps=2, num_training_steps=10, scheduler_specific_kwargs=specific.get(kind)
        )
        assert isinstance(schedule, keras.optimizers.schedules.LearningRateSchedule)
        api = getattr(hf_optim_tf, hs.get(kind.value).api["tf"])
        del api
    with pytest.raises(ValueError, match="requires `num_warmup_steps`"):
        get_scheduler("linear", 0.1, num_training_steps=10)
    with pytest.raises(ValueError, match="requires `num_training_steps`"):
        get_scheduler("cosine", 0.1, num_warmup_steps=2)
    with pytest.raises(ValueError):
        get_scheduler("no_such_schedule", 0.1)
    assert float(get_scheduler("constant", 0.1, num_warmup_steps=None)(5)) == pytest.approx(0.1)


@pytest.mark.filterwarnings(KERAS_SAVE_WARNING)
def test_plateau_schedule_drives_fit_through_its_callback(tmp_path: Path) -> None:
    schedule = get_scheduler("reduce_lr_on_plateau", 0.05, scheduler_specific_kwargs={"patience": 0, "factor": 0.5})
    assert isinstance(schedule, PlateauSchedule)
    model = _model()
    model.compile(optimizer=AdamW(schedule), loss="mse", jit_compile=False)
    # a constant monitored metric never improves after the first epoch: lr halves every epoch
    metric_callback = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: logs.__setitem__("flat", 1.0))
    _fit(model, 3, callbacks=[metric_callback, schedule.callback("flat")])
    assert schedule.lr == pytest.approx(0.05 * 0.5**2)
    assert float(model.optimizer.learning_rate) == pytest.approx(schedule.lr)
    path = tmp_path / "plateau.keras"
    model.save(path)
    revived = keras.saving.load_model(path)
    assert revived.optimizer._learning_rate.get_config()["state"] == schedule.get_config()["state"]


def _plateau_run(
    start: int, stop: int, *, restore: str | None = None, save: str | None = None
) -> tuple[list[float], PlateauSchedule]:
    """AdamW on a plateau schedule; the metric improves for 3 steps, then stays flat (reductions follow).

    Returns the lr after every step, then the sum of the final weights."""
    schedule = get_scheduler(
        "reduce_lr_on_plateau", 0.1, scheduler_specific_kwargs={"patience": 1, "factor": 0.5, "cooldown": 1}
    )
    return optimizer_run(schedule, lambda t: 1.0 / (1 + min(t, 3)), start, stop, restore=restore, save=save), schedule


def test_plateau_state_is_saved_by_a_tf_checkpoint_of_the_optimizer(tmp_path: Path) -> None:
    full, whole = _plateau_run(0, 12)
    path = str(tmp_path / "ckpt")
    first, interrupted = _plateau_run(0, 6, save=path)
    assert interrupted.num_bad_epochs > 0 or interrupted.cooldown_counter > 0  # mid-plateau: state matters
    rest, resumed = _plateau_run(6, 12, restore=path)
    assert first[:-1] + rest == full  # lr after every step and the final weights, bit for bit
    assert resumed.get_config()["state"] == whole.get_config()["state"]
    assert len(set(full[:-1])) > 2  # the schedule did reduce, more than once


def test_plateau_schedule_alone_is_a_checkpoint_dependency(tmp_path: Path) -> None:
    schedule = get_scheduler("reduce_lr_on_plateau", 0.1, scheduler_specific_kwargs={"patience": 0, "mode": "max"})
    for metric in [1.0, 2.0, 2.0, 1.5]:
        schedule.step(metric)
    path = tf.train.Checkpoint(schedule=schedule).write(str(tmp_path / "s"))
    fresh = get_scheduler("reduce_lr_on_plateau", 0.1, scheduler_specific_kwargs={"patience": 0, "mode": "max"})
    assert fresh.get_config()["state"] != schedule.get_config()["state"]
    tf.train.Checkpoint(schedule=fresh).read(path).assert_consumed()
    assert fresh.get_config()["state"] == schedule.get_config()["state"]
    assert [v.dtype for v in fresh.variables] == ["float64", "float64", "int64", "int64"]
    assert float(fresh(0)) == float(np.float32(fresh.lr))


def test_schedule_inside_jit_compiled_function() -> None:
    schedule = get_scheduler(
        "warmup_stable_decay",
        0.1,
        num_warmup_steps=3,
        num_training_steps=12,
        scheduler_specific_kwargs={"num_decay_steps": 4, "decay_type": "1-sqrt"},
    )
    compiled = tf.function(schedule.__call__, jit_compile=True)
    steps = np.arange(0, 14)
    np.testing.assert_array_equal(
        [float(compiled(tf.constant(s, tf.int64))) for s in steps], [float(schedule(int(s))) for s in steps]
    )
