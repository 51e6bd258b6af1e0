"""Native Keras optimizers against float64 NumPy derivations written here, plus Keras behaviour."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable

import keras
import numpy as np
import pytest
from _tf_helpers import floatx
from hf_optim_tf import Adafactor, AdamW, AdamWeightDecay

RNG_SEED = 1234


def _problem(shapes: dict[str, tuple[int, ...]], steps: int, seed: int = RNG_SEED):
    rng = np.random.default_rng(seed)
    params = {k: rng.standard_normal(s) for k, s in shapes.items()}
    grads = [{k: rng.standard_normal(s) for k, s in shapes.items()} for _ in range(steps)]
    return params, grads


def _run_keras(optimizer, params, grads, dtype="float64", missing=None):
    """Apply ``grads`` (list of dicts) one step at a time; returns the trajectory as dicts."""
    variables = {k: keras.Variable(v.astype(dtype), name=k) for k, v in params.items()}
    history = []
    for index, row in enumerate(grads):
        names = [k for k in row if index not in (missing or {}).get(k, ())]
        optimizer.apply([row[k].astype(dtype) for k in names], [variables[k] for k in names])
        history.append({k: variables[k].numpy().astype(np.float64) for k in variables})
    return history, variables


# --------------------------------------------------------------------------- derivations (float64)


def _adamw_numpy(params, grads, lr, b1, b2, eps, wd, correct_bias, missing=None):
    p = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v2 = {k: np.zeros_like(v) for k, v in params.items()}
    t = dict.fromkeys(params, 0)
    out = []
    for index, row in enumerate(grads):
        for k, g in row.items():
            if index in (missing or {}).get(k, ()):
                continue
            t[k] += 1
            m[k] = b1 * m[k] + (1 - b1) * g
            v2[k] = b2 * v2[k] + (1 - b2) * g * g
            alpha = lr * math.sqrt(1 - b2 ** t[k]) / (1 - b1 ** t[k]) if correct_bias else lr
            p[k] = p[k] - alpha * m[k] / (np.sqrt(v2[k]) + eps)
            if wd > 0:
                p[k] = p[k] - lr * wd * p[k]
        out.append({k: x.copy() for k, x in p.items()})
    return out


def _adam_weight_decay_numpy(params, grads, lr, b1, b2, eps, wd, decayed, amsgrad):
    p = {k: v.copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in params.items()}
    v2 = {k: np.zeros_like(v) for k, v in params.items()}
    vmax = {k: np.zeros_like(v) for k, v in params.items()}
    out = []
    for t, row in enumerate(grads, start=1):
        lr_t = lr(t - 1) if callable(lr) else lr
        for k, g in row.items():
            if decayed[k]:
                p[k] = p[k] - lr_t * wd * p[k]
            m[k] = b1 * m[k] + (1 - b1) * g
            v2[k] = b2 * v2[k] + (1 - b2) * g * g
            vmax[k] = np.maximum(vmax[k], v2[k])
            denom = np.sqrt(vmax[k] if amsgrad else v2[k]) + eps
            p[k] = p[k] - lr_t * math.sqrt(1 - b2**t) / (1 - b1**t) * m[k] / denom
        out.append({k: x.copy() for k, x in p.items()})
    return out


def _adafactor_numpy(params, grads, *, lr, eps, clip, decay_rate, beta1, wd, scale, relative, warmup_init):
    def rms(x):
        return np.sqrt(np.mean(x * x))

    p = {k: v.copy() for k, v in params.items()}
    state: dict[str, dict] = {k: {} for k in params}
    out = []
    for t, row in enumerate(grads, start=1):
        for k, g in row.items():
            s = state[k]
            factored = g.ndim >= 2
            if relative:
                rho = min(1e-6 * t if warmup_init else 1e-2, 1 / math.sqrt(t))
            else:
                rho = lr
            alpha = max(eps[1], rms(p[k])) * rho if scale else rho
            beta2t = 1 - t**decay_rate
            u = g * g + eps[0]
            if factored:
                s["r"] = beta2t * s.get("r", 0.0) + (1 - beta2t) * u.mean(axis=-1)
                s["c"] = beta2t * s.get("c", 0.0) + (1 - beta2t) * u.mean(axis=-2)
                v_hat = (s["r"] / s["r"].mean(axis=-1, keepdims=True))[..., :, None] * s["c"][..., None, :]
            else:
                s["v"] = beta2t * s.get("v", 0.0) + (1 - beta2t) * u
                v_hat = s["v"]
            update = g / np.sqrt(v_hat)
            update = update / max(1.0, rms(update) / clip) * alpha
            if beta1 is not None:
                s["m"] = beta1 * s.get("m", 0.0) + (1 - beta1) * update
                update = s["m"]
            if wd != 0:
                p[k] = p[k] - wd * alpha * p[k]
            p[k] = p[k] - update
        out.append({k: x.copy() for k, x in p.items()})
    return out


def _assert_trajectory(got, want, rtol):
    assert len(got) == len(want)
    for step, (g, w) in enumerate(zip(got, want)):
        for k in w:
            np.testing.assert_allclose(g[k], w[k], rtol=rtol, atol=rtol, err_msg=f"step {step}, {k}")


SHAPES = {"w": (3, 4), "b": (4,)}


# --------------------------------------------------------------------------- AdamW


@pytest.mark.parametrize("correct_bias", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adamw_matches_float64_derivation(correct_bias: bool, weight_decay: float) -> None:
    params, grads = _problem(SHAPES, 12)
    with floatx("float64"):
        opt = AdamW(
            learning_rate=0.01,
            beta_1=0.8,
            beta_2=0.95,
            epsilon=1e-6,
            weight_decay=weight_decay,
            correct_bias=correct_bias,
        )
        got, _ = _run_keras(opt, params, grads)
    want = _adamw_numpy(params, grads, 0.01, 0.8, 0.95, 1e-6, weight_decay, correct_bias)
    _assert_trajectory(got, want, 1e-12)


def test_adamw_missing_gradients_do_not_advance_that_variables_step() -> None:
    params, grads = _problem(SHAPES, 8)
    missing = {"b": (1, 2, 5)}
    with floatx("float64"):
        opt = AdamW(learning_rate=0.05, weight_decay=0.01)
        got, variables = _run_keras(opt, params, grads, missing=missing)
        steps = {k: int(opt.variable_state(v)["step"]) for k, v in variables.items()}
    want = _adamw_numpy(params, grads, 0.05, 0.9, 0.999, 1e-6, 0.01, True, missing=missing)
    _assert_trajectory(got, want, 1e-12)
    assert steps == {"w": 8, "b": 5}


def test_adamw_float32_tracks_the_derivation() -> None:
    params, grads = _problem(SHAPES, 10)
    opt = AdamW(learning_rate=0.01, weight_decay=0.05)
    got, _ = _run_keras(opt, params, grads, dtype="float32")
    want = _adamw_numpy(
        {k: v.astype(np.float32).astype(np.float64) for k, v in params.items()},
        [{k: g.astype(np.float32).astype(np.float64) for k, g in r.items()} for r in grads],
        np.float64(np.float32(0.01)),
        0.9,
        0.999,
        1e-6,
        0.05,
        True,
    )
    _assert_trajectory(got, want, 2e-6)


# --------------------------------------------------------------------------- AdamWeightDecay


@pytest.mark.parametrize("amsgrad", [False, True])
def test_adam_weight_decay_matches_float64_derivation(amsgrad: bool) -> None:
    params, grads = _problem({"dense/kernel": (3, 4), "dense/bias": (4,), "LayerNorm/gamma": (4,)}, 10)
    schedule = keras.optimizers.schedules.PolynomialDecay(0.02, 10, 0.001)
    with floatx("float64"):
        opt = AdamWeightDecay(
            learning_rate=schedule,
            beta_1=0.85,
            beta_2=0.99,
            epsilon=1e-7,
            amsgrad=amsgrad,
            weight_decay_rate=0.1,
            exclude_from_weight_decay=["LayerNorm", "bias"],
        )
        variables = {}
        history = []
        for row in grads:
            for k in row:
                if k not in variables:
                    layer, leaf = k.split("/")
                    with keras.name_scope(layer):
                        variables[k] = keras.Variable(params[k], name=leaf)
            opt.apply([row[k] for k in variables], list(variables.values()))
            history.append({k: v.numpy() for k, v in variables.items()})
    decayed = {k: not ("LayerNorm" in k or "bias" in k) for k in params}
    want = _adam_weight_decay_numpy(
        params, grads, lambda t: float(schedule(t)), 0.85, 0.99, 1e-7, 0.1, decayed, amsgrad
    )
    _assert_trajectory(history, want, 1e-7)  # the Keras PolynomialDecay itself runs in float32


def test_adam_weight_decay_with_zero_rate_equals_keras_adam() -> None:
    params, grads = _problem(SHAPES, 15)
    ours, _ = _run_keras(AdamWeightDecay(1e-2, epsilon=1e-8), params, grads, dtype="float32")
    keras_adam, _ = _run_keras(keras.optimizers.Adam(1e-2, epsilon=1e-8), params, grads, dtype="float32")
    _assert_trajectory(ours, keras_adam, 1e-6)


def _layer_norm_model() -> keras.Model:
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, name="dense")(inputs)
    x = keras.layers.LayerNormalization(name="LayerNorm")(x)
    x = keras.layers.Dense(2, name="head")(x)
    return keras.Model(inputs, x)


def test_decay_patterns_match_the_variable_path_include_first() -> None:
    model = _layer_norm_model()
    opt = AdamWeightDecay(
        weight_decay_rate=0.01,
        exclude_from_weight_decay=["LayerNorm", "layer_norm", "bias"],
        include_in_weight_decay=["head/bias"],
    )
    opt.build(model.trainable_variables)
    flags = {v.path: opt._decay_flags[opt._get_variable_index(v)] for v in model.trainable_variables}
    assert flags == {
        "dense/kernel": True,
        "dense/bias": False,
        "LayerNorm/gamma": False,
        "LayerNorm/beta": False,
        "head/kernel": True,
        "head/bias": True,
    }
    zero = AdamWeightDecay(weight_decay_rate=0.0, include_in_weight_decay=["dense"])
    zero.build(model.trainable_variables)
    assert not any(zero._decay_flags)


@pytest.mark.parametrize(
    ("clip", "transform"),
    [
        ({"clipnorm": 0.5}, lambda gs: [g * min(1.0, 0.5 / np.linalg.norm(g)) for g in gs]),
        ({"clipvalue": 0.3}, lambda gs: [np.clip(g, -0.3, 0.3) for g in gs]),
        (
            {"global_clipnorm": 0.7},
            lambda gs: [g * min(1.0, 0.7 / math.sqrt(sum(float(np.sum(x * x)) for x in gs))) for g in gs],
        ),
    ],
    ids=["clipnorm", "clipvalue", "global_clipnorm"],
)
def test_gradient_clipping_goes_through_keras(clip: dict, transform: Callable) -> None:
    params, grads = _problem(SHAPES, 5)
    with floatx("float64"):
        got, _ = _run_keras(AdamWeightDecay(0.01, weight_decay_rate=0.02, **clip), params, grads)
        clipped = [dict(zip(row, transform(list(row.values())))) for row in grads]
        want, _ = _run_keras(AdamWeightDecay(0.01, weight_decay_rate=0.02), params, clipped)
    _assert_trajectory(got, want, 1e-12)
    assert not np.allclose(
        got[-1]["w"], _run_keras(AdamWeightDecay(0.01, weight_decay_rate=0.02), params, grads)[0][-1]["w"]
    )


def test_legacy_lr_maps_and_decay_is_rejected() -> None:
    with pytest.warns(
        DeprecationWarning, match=r"^AdamWeightDecay: the `lr` argument is deprecated; use `learning_rate`\.$"
    ):
        opt = AdamWeightDecay(lr=0.05)
    assert float(opt.learning_rate) == pytest.approx(0.05)
    with pytest.raises(
        ValueError, match=r"^AdamWeightDecay: pass the learning rate once, as `learning_rate`\. Received: lr=0\.05 and"
    ):
        AdamWeightDecay(learning_rate=0.1, lr=0.05)
    with pytest.raises(
        ValueError, match=r"^AdamWeightDecay: the legacy `decay` argument is not supported .*InverseTimeDecay"
    ):
        AdamWeightDecay(decay=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AdamWeightDecay(decay=0.0)
    with pytest.raises(
        TypeError, match=r"^Unknown argument `weight_decay` for AdamWeightDecay\. Did you mean: weight_decay_rate"
    ):
        AdamWeightDecay(weight_decay=0.1)


# --------------------------------------------------------------------------- Adafactor

ADAFACTOR_VARIANTS = {
    "relative_step_scaled": dict(learning_rate=None),
    "warmup_init_beta1_wd": dict(learning_rate=None, warmup_init=True, beta_1=0.9, weight_decay=0.01),
    "external_lr_unscaled": dict(learning_rate=0.01, relative_step=False, scale_parameter=False, clip_threshold=0.5),
    "external_lr_scaled_beta1": dict(learning_rate=0.05, relative_step=False, beta_1=0.5, decay_rate=-0.5),
}


@pytest.mark.parametrize("variant", list(ADAFACTOR_VARIANTS))
def test_adafactor_matches_float64_derivation(variant: str) -> None:
    kw = ADAFACTOR_VARIANTS[variant]
    params, grads = _problem({"t3": (2, 3, 4), "w": (3, 5), "b": (5,), "s": ()}, 10)
    with floatx("float64"):
        got, _ = _run_keras(Adafactor(**kw), params, grads)
    want = _adafactor_numpy(
        params,
        grads,
        lr=kw.get("learning_rate"),
        eps=(1e-30, 1e-3),
        clip=kw.get("clip_threshold", 1.0),
        decay_rate=kw.get("decay_rate", -0.8),
        beta1=kw.get("beta_1"),
        wd=kw.get("weight_decay", 0.0),
        scale=kw.get("scale_parameter", True),
        relative=kw.get("relative_step", True),
        warmup_init=kw.get("warmup_init", False),
    )
    _assert_trajectory(got, want, 1e-11)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_adafactor_16bit_variables_use_float32_math_and_state(dtype: str) -> None:
    params, grads = _problem({"w": (4, 6), "b": (6,)}, 6)
    rounded = {k: keras.ops.cast(keras.ops.cast(v, dtype), "float64").numpy() for k, v in params.items()}
    opt = Adafactor(beta_1=0.9)
    got, variables = _run_keras(opt, rounded, grads, dtype=dtype)
    assert all(v.dtype == dtype for v in variables.values())
    assert {str(s.dtype) for s in opt.variables if "_exp_avg" in s.path} == {"float32"}
    want32, _ = _run_keras(Adafactor(beta_1=0.9), rounded, grads, dtype="float32")
    # one bfloat16/float16 rounding per step of the stored parameter
    tol = {"bfloat16": 2**-7, "float16": 2**-10}[dtype] * 6
    for k in rounded:
        np.testing.assert_allclose(got[-1][k], want32[-1][k], rtol=tol, atol=tol)


# --------------------------------------------------------------------------- config round trips


@pytest.mark.parametrize(
    "make",
    [
        lambda: AdamWeightDecay(
            0.003,
            beta_1=0.8,
            amsgrad=True,
            weight_decay_rate=0.1,
            include_in_weight_decay=["kernel"],
            exclude_from_weight_decay=["bias"],
            clipnorm=1.0,
        ),
        lambda: AdamW(
            learning_rate=keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5),
            weight_decay=0.2,
            correct_bias=False,
            global_clipnorm=2.0,
        ),
        lambda: Adafactor(beta_1=0.9, warmup_init=True, weight_decay=0.1, first_moment="unscaled"),
        lambda: Adafactor(learning_rate=0.01, relative_step=False, epsilon_1=1e-20, epsilon_2=1e-2),
    ],
    ids=["adam_weight_decay", "adamw", "adafactor_relative", "adafactor_external"],
)
def test_config_round_trip(make: Callable[[], keras.optimizers.Optimizer]) -> None:
    opt = make()
    config = opt.get_config()
    again = type(opt).from_config(copy.deepcopy(config))
    assert again.get_config() == config
    revived = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(revived) is type(opt)
    assert revived.get_config() == config
    if isinstance(opt, AdamWeightDecay):
        assert config["include_in_weight_decay"] == ["kernel"]
        assert config["exclude_from_weight_decay"] == ["bias"]
