"""16-bit variables: ``fp32_math`` and stochastic rounding (``stochastic_rounding``, ``rounding_seed``).

The stochastic-rounding bits come from ``hf_optim_spec.rounding`` (a counter-based hash), so every
expectation here is derived from that module, from NumPy, or from the same optimizer run on float32
variables; nothing is hand-typed.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from hf_optim_spec.rounding import MASK32, round_stochastic, rounding_bits, rounding_key
from hf_optim_tf import Adafactor, AdamW, AdamWeightDecay
from hf_optim_tf._rounding import round_stochastic_bfloat16
from hf_optim_tf._variables import numpy_value

Maker = Callable[..., keras.optimizers.Optimizer]

# Each optimizer as a bfloat16 user turns stochastic rounding on (AdamW/AdamWeightDecay need fp32_math).
SR_MAKERS: dict[str, Maker] = {
    "adamw": lambda **kw: AdamW(1e-2, weight_decay=0.01, fp32_math=True, **kw),
    "adam_weight_decay": lambda **kw: AdamWeightDecay(
        1e-2, weight_decay_rate=0.01, amsgrad=True, fp32_math=True, exclude_from_weight_decay=["b"], **kw
    ),
    "adafactor": lambda **kw: Adafactor(beta_1=0.9, weight_decay=0.01, **kw),
}
# A learning rate below half a bfloat16 ulp of the variables (which sit near 1.0).
TINY_LR_MAKERS: dict[str, Maker] = {
    "adamw": lambda **kw: AdamW(1e-3, fp32_math=True, **kw),
    "adam_weight_decay": lambda **kw: AdamWeightDecay(1e-3, fp32_math=True, **kw),
    "adafactor": lambda **kw: Adafactor(1e-3, relative_step=False, scale_parameter=False, **kw),
}
SHAPES = {"w": (3, 4), "b": (4,), "k": (2, 3, 2)}


def _variables(dtype: str, seed: int = 0, shapes: dict[str, tuple[int, ...]] = SHAPES) -> list[keras.Variable]:
    rng = np.random.default_rng(seed)
    return [keras.Variable(rng.standard_normal(shape), dtype=dtype, name=name) for name, shape in shapes.items()]


def _grads(steps: int, dtype: str, seed: int = 1, shapes: dict[str, tuple[int, ...]] = SHAPES) -> list[list[Any]]:
    rng = np.random.default_rng(seed)
    return [[tf.constant(rng.standard_normal(s), dtype=dtype) for s in shapes.values()] for _ in range(steps)]


def _as64(value: Any) -> np.ndarray:
    """float64 copy through NumPy (TF's own casts flush bfloat16 subnormals to zero)."""
    return np.asarray(numpy_value(value)).astype(np.float64)


def _stepper(optimizer: keras.optimizers.Optimizer, variables: list[Any], jit: bool) -> Callable[[list[Any]], None]:
    optimizer.build(variables)
    return tf.function(lambda grads: optimizer.apply(grads, variables), jit_compile=jit)


def _run(make: Maker, dtype: str, steps: int, jit: bool = False, **kwargs: Any) -> list[np.ndarray]:
    variables = _variables(dtype)
    step = _stepper(make(**kwargs), variables, jit)
    for grads in _grads(steps, dtype):
        step(grads)
    return [_as64(v) for v in variables]


# --------------------------------------------------------------------------- the store itself


def _hard_float32_values(rng: np.random.Generator) -> np.ndarray:
    bf16_max = float(np.asarray(keras.ops.cast(tf.constant(np.finfo(np.float32).max), "bfloat16"), np.float64))
    tiny = np.finfo(np.float32).tiny
    special = np.array(
        [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, tiny, -tiny, tiny / 3, -tiny / 7, np.finfo(np.float32).max],
        dtype=np.float32,
    )
    near_max = (bf16_max * (1.0 - rng.uniform(0.0, 2.0**-8, 16)) * rng.choice([-1.0, 1.0], 16)).astype(np.float32)
    subnormal = (rng.uniform(-1.0, 1.0, 32) * tiny).astype(np.float32)
    # Random bit patterns cover every exponent (incl. NaN payloads) and both signs.
    patterns = rng.integers(0, 2**32, 256, dtype=np.uint64).astype(np.uint32).view(np.float32)
    normal = rng.standard_normal(153).astype(np.float32)
    return np.concatenate([special, near_max, subnormal, patterns, normal]).reshape(3, 156)


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_stochastic_store_equals_the_numpy_reference_bit_for_bit(jit: bool) -> None:
    rng = np.random.default_rng(11)
    values = _hard_float32_values(rng)
    store = tf.function(round_stochastic_bfloat16, jit_compile=True) if jit else round_stochastic_bfloat16
    for seed, index, step in [(0, 0, 1), (7, 3, 12), (MASK32, 5, 2**31 + 3)]:
        key = rounding_key(seed, index, step)
        bits = rounding_bits(key, np.arange(values.size, dtype=np.int64)).reshape(values.shape)
        with np.errstate(invalid="ignore"):  # signalling NaN patterns among the random bits
            expected = round_stochastic(values, bits)
        got = store(tf.constant(values), tf.constant(key, tf.int64))
        assert got.dtype == tf.bfloat16
        np.testing.assert_array_equal(_as64(got), expected)
        # The signs survive too (assert_array_equal treats 0.0 == -0.0).
        finite = np.isfinite(expected)
        np.testing.assert_array_equal(np.signbit(_as64(got))[finite], np.signbit(expected)[finite])


@pytest.mark.parametrize("jit", [False, True], ids=["eager", "jit"])
def test_rounding_bits_on_tf_int64_tensors_equal_numpy(jit: bool) -> None:
    rng = np.random.default_rng(12)
    seeds = rng.integers(0, 2**32, 8)
    steps = rng.integers(1, 2**40, 8)
    positions = np.arange(1000, dtype=np.int64)

    def tf_bits(seed: Any, step: Any) -> Any:
        return rounding_bits(rounding_key(seed, 3, step), tf.range(1000, dtype=tf.int64))

    compute = tf.function(tf_bits, jit_compile=True) if jit else tf_bits
    for seed, step in zip(seeds, steps):
        expected = rounding_bits(rounding_key(np.int64(seed), 3, np.int64(step)), positions)
        got = compute(tf.constant(seed, tf.int64), tf.constant(step, tf.int64))
        assert got.dtype == tf.int64
        np.testing.assert_array_equal(got.numpy(), expected)
        assert 0 <= int(got.numpy().min()) and int(got.numpy().max()) < 2**16


# --------------------------------------------------------------------------- optimizers


@pytest.mark.parametrize("name", list(SR_MAKERS))
def test_same_seed_rounds_identically_and_another_seed_differently(name: str) -> None:
    first = _run(SR_MAKERS[name], "bfloat16", 5, jit=True, stochastic_rounding=True, rounding_seed=3)
    again = _run(SR_MAKERS[name], "bfloat16", 5, jit=True, stochastic_rounding=True, rounding_seed=3)
    other = _run(SR_MAKERS[name], "bfloat16", 5, jit=True, stochastic_rounding=True, rounding_seed=4)
    nearest = _run(SR_MAKERS[name], "bfloat16", 5, jit=True)
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(first, other))
    assert any(not np.array_equal(a, b) for a, b in zip(first, nearest))


@pytest.mark.parametrize("name", list(SR_MAKERS))
def test_checkpoint_mid_run_then_resume_equals_the_uninterrupted_run(name: str, tmp_path: Path) -> None:
    grads = _grads(8, "bfloat16")
    make = SR_MAKERS[name]

    straight_vars = _variables("bfloat16")
    straight = _stepper(make(stochastic_rounding=True, rounding_seed=9), straight_vars, jit=False)
    for g in grads:
        straight(g)

    first_vars = _variables("bfloat16")
    first_opt = make(stochastic_rounding=True, rounding_seed=9)
    first = _stepper(first_opt, first_vars, jit=False)
    for g in grads[:4]:
        first(g)
    path = tf.train.Checkpoint(optimizer=first_opt, variables=first_vars).write(str(tmp_path / "ckpt"))

    resumed_vars = _variables("bfloat16", seed=5)  # other values: the checkpoint must restore them
    resumed_opt = make(stochastic_rounding=True, rounding_seed=9)
    resumed = _stepper(resumed_opt, resumed_vars, jit=False)
    tf.train.Checkpoint(optimizer=resumed_opt, variables=resumed_vars).read(path).assert_consumed()
    for g in grads[4:]:
        resumed(g)
    for a, b in zip(straight_vars, resumed_vars):
        np.testing.assert_array_equal(_as64(a), _as64(b))
    assert int(resumed_opt.iterations) == len(grads)


KERAS_SAVE_WARNING = "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"


@pytest.mark.filterwarnings(KERAS_SAVE_WARNING)
def test_keras_file_save_mid_fit_then_resume_equals_the_uninterrupted_fit(tmp_path: Path) -> None:
    x = np.random.default_rng(0).standard_normal((32, 6)).astype("float32")
    y = (x @ np.random.default_rng(1).standard_normal((6, 2))).astype("float32")

    def model() -> keras.Model:
        keras.utils.set_random_seed(7)
        inputs = keras.Input((6,))
        hidden = keras.layers.Dense(8, activation="relu", dtype="bfloat16", name="dense")(inputs)
        outputs = keras.layers.Dense(2, dtype="bfloat16", name="head")(hidden)
        built = keras.Model(inputs, outputs)
        built.compile(
            optimizer=AdamW(1e-3, fp32_math=True, stochastic_rounding=True, rounding_seed=2),
            loss="mse",
            jit_compile=False,
        )
        return built

    def fit(m: keras.Model, epochs: int) -> None:
        m.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0)

    straight = model()
    fit(straight, 4)
    first = model()
    fit(first, 2)
    first.save(tmp_path / "m.keras")
    resumed = keras.saving.load_model(tmp_path / "m.keras")
    assert resumed.optimizer.get_config() == first.optimizer.get_config()
    fit(resumed, 2)
    for a, b in zip(straight.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64))
    assert {str(w.dtype) for w in resumed.trainable_weights} == {"bfloat16"}


@pytest.mark.parametrize("name", list(SR_MAKERS))
def test_float16_variable_with_stochastic_rounding_is_rejected_before_anything_changes(name: str) -> None:
    variables = [*_variables("bfloat16", shapes={"w": (3, 4)}), *_variables("float16", shapes={"h": (4,)})]
    before = [_as64(v) for v in variables]
    optimizer = SR_MAKERS[name](stochastic_rounding=True)
    grads = [keras.ops.ones_like(v) for v in variables]
    with pytest.raises(
        ValueError, match=r"^`stochastic_rounding=True` supports bfloat16 parameters; got a float16 parameter \(index 1"
    ):
        optimizer.apply(grads, variables)
    for value, variable in zip(before, variables):
        np.testing.assert_array_equal(_as64(variable), value)
    assert not optimizer.built and int(optimizer.iterations) == 0
    # Without stochastic rounding float16 variables are fine.
    SR_MAKERS[name]().apply(grads, variables)


@pytest.mark.parametrize("name", list(SR_MAKERS))
def test_stochastic_rounding_leaves_float32_variables_alone(name: str) -> None:
    with_sr = _run(SR_MAKERS[name], "float32", 4, stochastic_rounding=True, rounding_seed=1)
    without = _run(SR_MAKERS[name], "float32", 4)
    for a, b in zip(with_sr, without):
        np.testing.assert_array_equal(a, b)


EMULATED: dict[str, Maker] = {
    "adamw": lambda **kw: AdamW(1e-2, weight_decay=0.05, **kw),
    "adam_weight_decay": lambda **kw: AdamWeightDecay(
        1e-2, weight_decay_rate=0.05, amsgrad=True, exclude_from_weight_decay=["b"], **kw
    ),
}


def _bf16(value: Any) -> Any:
    return keras.ops.cast(keras.ops.cast(value, "bfloat16"), "float32")


@pytest.mark.parametrize("jit", [False, True], ids=["graph", "jit"])
@pytest.mark.parametrize("stochastic", [False, True], ids=["nearest", "stochastic"])
@pytest.mark.parametrize("name", list(EMULATED))
def test_fp32_math_equals_a_float32_step_rounded_once_per_step(name: str, stochastic: bool, jit: bool) -> None:
    """bfloat16 + fp32_math == a float32 variable (and state) stepped, then rounded to bfloat16 once:
    the parameter to nearest or with ``round_stochastic``, the moments to nearest."""
    seed = 21
    steps = 6
    lowp_vars = _variables("bfloat16")
    lowp_opt = EMULATED[name](fp32_math=True, stochastic_rounding=stochastic, rounding_seed=seed)
    lowp = _stepper(lowp_opt, lowp_vars, jit)
    wide_vars = [keras.Variable(keras.ops.cast(v, "float32"), name=v.name) for v in lowp_vars]
    wide_opt = EMULATED[name]()
    wide = _stepper(wide_opt, wide_vars, jit)
    moments = [v for v in wide_opt.variables if v.dtype == "float32" and "exp_avg" in v.name]
    assert len(moments) == len(wide_vars) * (3 if name == "adam_weight_decay" else 2)
    for t, grads in enumerate(_grads(steps, "bfloat16"), start=1):
        lowp(grads)
        wide([keras.ops.cast(g, "float32") for g in grads])
        for index, variable in enumerate(wide_vars):
            if stochastic:
                x = np.asarray(variable.numpy(), np.float32)
                bits = rounding_bits(rounding_key(seed, index, t), np.arange(x.size, dtype=np.int64))
                variable.assign(round_stochastic(x, bits.reshape(x.shape)).astype(np.float32))
            else:
                variable.assign(_bf16(variable))
        for moment in moments:
            moment.assign(_bf16(moment))
        for a, b in zip(lowp_vars, wide_vars):
            np.testing.assert_array_equal(_as64(a), _as64(b), err_msg=f"step {t} {a.name}")
        for a, b in zip(lowp_vars, wide_vars):
            ours, emulated = lowp_opt.variable_state(a), wide_opt.variable_state(b)
            for key, value in emulated.items():
                np.testing.assert_array_equal(
                    np.asarray(ours[key], np.float64), np.asarray(value, np.float64), err_msg=f"{t} {a.name} {key}"
                )
    if not stochastic:  # fp32_math changes the numbers: it is not the default's per-op rounding
        default = _run(EMULATED[name], "bfloat16", steps, jit=jit)
        assert any(not np.array_equal(_as64(a), b) for a, b in zip(lowp_vars, default))


@pytest.mark.parametrize("name", list(TINY_LR_MAKERS))
def test_tiny_updates_stagnate_with_nearest_and_move_with_stochastic_rounding(name: str) -> None:
    shapes = {"w": (16, 16)}
    steps = 100
    make = TINY_LR_MAKERS[name]
    grads = [keras.ops.ones(shapes["w"], "bfloat16")]

    def run(dtype: str, **kwargs: Any) -> tuple[np.ndarray, np.ndarray]:
        variables = [keras.Variable(np.linspace(0.9, 1.0, 256).reshape(shapes["w"]), dtype=dtype, name="w")]
        start = _as64(variables[0])
        step = _stepper(make(**kwargs), variables, jit=False)
        for _ in range(steps):
            step([keras.ops.cast(g, dtype) for g in grads])
        return start, _as64(variables[0])

    start32, end32 = run("float32")
    drift32 = float(np.mean(end32 - start32))
    start, nearest = run("bfloat16")
    _, stochastic = run("bfloat16", stochastic_rounding=True, rounding_seed=1)
    # Every float32 step is below half a bfloat16 ulp of the start values (the ulp below them) ...
    below = (start * (1.0 - 2.0**-10)).astype(np.float32)
    ulp = np.spacing(below).astype(np.float64) * 2.0**16  # bfloat16 keeps 16 fewer significand bits
    assert np.all(np.abs(end32 - start32) / steps < ulp / 2)
    # ... so round-to-nearest never moves the variable, while stochastic rounding tracks float32 on average.
    np.testing.assert_array_equal(nearest, start)
    assert abs(drift32) > 10 * float(np.max(ulp))
    assert abs(float(np.mean(stochastic - start)) - drift32) < 0.1 * abs(drift32)


@pytest.mark.parametrize("name", list(SR_MAKERS))
def test_config_round_trip_keeps_the_rounding_arguments(name: str) -> None:
    optimizer = SR_MAKERS[name](stochastic_rounding=True, rounding_seed=2**32 - 1)
    config = optimizer.get_config()
    assert config["stochastic_rounding"] is True and config["rounding_seed"] == 2**32 - 1
    if name != "adafactor":
        assert config["fp32_math"] is True
    again = type(optimizer).from_config(copy.deepcopy(config))
    assert again.get_config() == config
    revived = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(revived) is type(optimizer) and revived.get_config() == config
    defaults = SR_MAKERS[name]().get_config()
    assert defaults["stochastic_rounding"] is False and defaults["rounding_seed"] == 0


@pytest.mark.parametrize("name", ["adamw", "adam_weight_decay"])
def test_stochastic_rounding_needs_fp32_math(name: str) -> None:
    cls = {"adamw": AdamW, "adam_weight_decay": AdamWeightDecay}[name]
    with pytest.raises(
        ValueError,
        match=r"^`stochastic_rounding=True` rounds the float32 result of a step; it needs `fp32_math=True`\.$",
    ):
        cls(stochastic_rounding=True)
    with pytest.raises(
        ValueError, match=r"^Argument `rounding_seed` must be <= 4294967295\. Received: rounding_seed=4294967296$"
    ):
        cls(fp32_math=True, stochastic_rounding=True, rounding_seed=2**32)


@pytest.mark.parametrize("name", list(SR_MAKERS))
def test_mirrored_strategy_rounds_like_a_single_device(
    name: str, two_cpu_strategy: tf.distribute.MirroredStrategy
) -> None:
    grads = _grads(4, "bfloat16")
    single = _run(SR_MAKERS[name], "bfloat16", 4, stochastic_rounding=True, rounding_seed=6)
    with two_cpu_strategy.scope():
        variables = _variables("bfloat16")
        optimizer = SR_MAKERS[name](stochastic_rounding=True, rounding_seed=6)
        optimizer.build(variables)

    @tf.function
    def step(halves: list[Any]) -> None:
        two_cpu_strategy.run(lambda gs: optimizer.apply(gs, variables), args=(halves,))

    for g in grads:
        # Keras sums the replicas' gradients: two exact halves add up to the single-device gradient.
        halves = [keras.ops.multiply(x, keras.ops.cast(0.5, "bfloat16")) for x in g]
        step(two_cpu_strategy.experimental_distribute_values_from_function(lambda _ctx, h=halves: h))
    for variable, expected in zip(variables, single):
        copies = [_as64(v) for v in variable.value.values]
        assert len(copies) == 2
        for copy_ in copies:
            np.testing.assert_array_equal(copy_, expected)
