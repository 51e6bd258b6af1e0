"""The float64 optimizer references against values derived here from the published formulas.

Expected values are never typed in: each test rewrites the update rule in a different (textbook or
closed) form and compares, so a wrong line in a reference makes a test fail.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hf_optim_spec.reference import adafactor, adam_weight_decay, adamw, generate_case, run_case
from hf_optim_spec.reference._inputs import draw, make_inputs
from hf_optim_spec.reference._lowp import round_to

SPEC_DIR = Path(__file__).resolve().parents[3] / "spec"
OPTIMIZER_IDS = ("adamw", "adafactor", "adam_weight_decay")
RTOL = 1e-12


def load(spec_id: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((SPEC_DIR / "optimizers" / f"{spec_id}.json").read_text(encoding="utf-8"))
    return data


def rng_arrays(seed: int, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for shape in shapes]


# --------------------------------------------------------------------------- AdamW

ADAMW_HP: dict[str, Any] = {
    "lr": 0.01,
    "beta1": 0.9,
    "beta2": 0.999,
    "eps": 1e-6,
    "weight_decay": 0.0,
    "correct_bias": True,
}


def test_adamw_first_step_with_eps_0_moves_every_element_by_lr() -> None:
    # m1 = (1-b1) g, v1 = (1-b2) g^2, step size lr sqrt(1-b2)/(1-b1): the update is lr * sign(g).
    param, grad = rng_arrays(0, (3, 4), (3, 4))
    hp: dict[str, Any] = {**ADAMW_HP, "eps": 0.0}
    new, state = adamw.adamw_step(param, grad, adamw.adamw_init(param), **hp)
    np.testing.assert_allclose(new, param - hp["lr"] * np.sign(grad), rtol=RTOL)
    assert state.step == 1


@pytest.mark.parametrize("correct_bias", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adamw_matches_textbook_form_over_several_steps(correct_bias: bool, weight_decay: float) -> None:
    """HF folds the bias correction into the step size, so eps acts as eps / sqrt(1 - beta2^t)."""
    param, *grads = rng_arrays(1, (5,), *[(5,)] * 6)
    hp: dict[str, Any] = {**ADAMW_HP, "correct_bias": correct_bias, "weight_decay": weight_decay}
    lr, b1, b2, eps = hp["lr"], hp["beta1"], hp["beta2"], hp["eps"]
    state = adamw.adamw_init(param)
    p_ref, m, v = param.copy(), np.zeros(5), np.zeros(5)
    p = param
    for t, g in enumerate(grads, start=1):
        p, state = adamw.adamw_step(p, g, state, **hp)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        if correct_bias:
            bc1, bc2 = 1 - b1**t, 1 - b2**t
            p_ref = p_ref - lr * (m / bc1) / (np.sqrt(v / bc2) + eps / math.sqrt(bc2))
        else:
            p_ref = p_ref - lr * m / (np.sqrt(v) + eps)
        p_ref = p_ref * (1 - lr * weight_decay)  # decay after the update, on the updated weights
        np.testing.assert_allclose(p, p_ref, rtol=RTOL)
        np.testing.assert_allclose(state.exp_avg, m, rtol=RTOL)
        np.testing.assert_allclose(state.exp_avg_sq, v, rtol=RTOL)
        assert state.step == t


def test_adamw_decays_after_the_update_not_before() -> None:
    param, grad = rng_arrays(2, (4,), (4,))
    hp: dict[str, Any] = {**ADAMW_HP, "eps": 0.0, "weight_decay": 0.5, "lr": 0.1}
    new, _ = adamw.adamw_step(param, grad, adamw.adamw_init(param), **hp)
    after = (param - hp["lr"] * np.sign(grad)) * (1 - hp["lr"] * hp["weight_decay"])
    before = param * (1 - hp["lr"] * hp["weight_decay"]) - hp["lr"] * np.sign(grad)
    np.testing.assert_allclose(new, after, rtol=RTOL)
    assert not np.allclose(new, before, rtol=1e-6)


def test_adamw_cases_named_for_the_decay_order_can_tell_the_orders_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """A case that says "after the update" fails an implementation that decays first, within its own tolerance.

    Decaying first changes a step by lr * weight_decay * update; with a small lr that stays below the float32
    tolerance and the case would pass either order (found by ``nox -s mutation``).
    """
    spec = load("adamw")
    cases = [case for case in spec["cases"] if "after the update" in case["description"]]
    assert cases, "no AdamW case checks the order of the weight decay"
    step = adamw.adamw_step

    def decay_first(param: np.ndarray, grad: np.ndarray, state: Any, **hp: Any) -> Any:
        lr, weight_decay, dtype = hp["lr"], hp.pop("weight_decay"), hp.get("dtype", "float64")
        if weight_decay > 0.0:
            param = round_to(param + (-lr * weight_decay) * param, dtype)
        return step(param, grad, state, weight_decay=0.0, **hp)

    for case in cases:
        right = run_case(spec, case)
        with monkeypatch.context() as patch:
            patch.setattr(adamw, "adamw_step", decay_first)
            wrong = run_case(spec, case)
        tol = spec["tolerance"][case.get("dtype", "float32")]
        worst = max(
            float(np.max(np.abs(np.subtract(w[name], r[name])) / (tol["atol"] + tol["rtol"] * np.abs(r[name]))))
            for w, r in zip(wrong["params"], right["params"])
            for name in r
        )
        assert worst > 2.0, f"{case['description']!r}: decaying first stays within tolerance ({worst:.2f} of it)"


def test_adamw_ignores_a_negative_weight_decay_like_transformers() -> None:
    param, grad = rng_arrays(3, (4,), (4,))
    plain, _ = adamw.adamw_step(param, grad, adamw.adamw_init(param), **ADAMW_HP)
    negative, _ = adamw.adamw_step(param, grad, adamw.adamw_init(param), **{**ADAMW_HP, "weight_decay": -0.1})
    np.testing.assert_array_equal(plain, negative)


def test_adamw_low_precision_rounds_parameter_and_state() -> None:
    param = round_to(rng_arrays(4, (8,))[0], "bfloat16")
    grad = round_to(rng_arrays(5, (8,))[0], "bfloat16")
    new, state = adamw.adamw_step(param, grad, adamw.adamw_init(param), **ADAMW_HP, dtype="bfloat16")
    for value in (new, state.exp_avg, state.exp_avg_sq):
        np.testing.assert_array_equal(value, round_to(value, "bfloat16"))
    exact, _ = adamw.adamw_step(param, grad, adamw.adamw_init(param), **ADAMW_HP)
    np.testing.assert_allclose(new, exact, rtol=2**-7)


# --------------------------------------------------------------------------- Adafactor

ADAFACTOR_HP: dict[str, Any] = {
    "lr": None,
    "eps": (1e-30, 1e-3),
    "clip_threshold": 1.0,
    "decay_rate": -0.8,
    "beta1": None,
    "weight_decay": 0.0,
    "scale_parameter": True,
    "relative_step": True,
    "warmup_init": False,
}


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2)))


def _adafactor_fixed_lr_step(seed: int, shape: tuple[int, ...], **hp: Any) -> tuple[np.ndarray, np.ndarray, Any]:
    """One step from fresh state with a fixed lr and no parameter scaling: (param, grad, (new param, state))."""
    param, grad = rng_arrays(seed, shape, shape)
    hp = {**ADAFACTOR_HP, "relative_step": False, "scale_parameter": False, **hp}
    return param, grad, adafactor.adafactor_step(param, grad, adafactor.adafactor_init(param, beta1=None), **hp)


def test_adafactor_first_step_unfactored() -> None:
    # beta2_1 = 1 - 1**c = 0, so v1 = g^2 + eps1 and the update is g / sqrt(g^2 + eps1).
    param, grad = rng_arrays(10, (6,), (6,))
    new, state = adafactor.adafactor_step(param, grad, adafactor.adafactor_init(param, beta1=None), **ADAFACTOR_HP)
    lr = max(1e-3, _rms(param)) * min(1e-2, 1.0)
    u = grad / np.sqrt(grad**2 + 1e-30)
    u = u / max(_rms(u) / 1.0, 1.0)
    np.testing.assert_allclose(new, param - lr * u, rtol=RTOL)
    assert state.exp_avg_sq is not None
    np.testing.assert_allclose(state.exp_avg_sq, grad**2 + 1e-30, rtol=RTOL)
    assert state.exp_avg_sq_row is None and state.exp_avg_sq_col is None and state.exp_avg is None
    assert state.RMS == pytest.approx(_rms(param), rel=RTOL)


@pytest.mark.parametrize("shape", [(3, 4), (1, 5), (5, 1), (2, 3, 4), (2, 2, 3, 2)])
def test_adafactor_first_step_factored_matches_outer_product_estimate(shape: tuple[int, ...]) -> None:
    """V ~ outer(R, C) / mean(R) over the last two dims, computed slice by slice here."""
    param, grad, (new, state) = _adafactor_fixed_lr_step(11, shape, lr=0.01, clip_threshold=1e6)
    sq = grad**2 + 1e-30
    flat_sq, flat_g = sq.reshape(-1, *shape[-2:]), grad.reshape(-1, *shape[-2:])
    updates = []
    for s, g in zip(flat_sq, flat_g):
        r, c = s.mean(axis=1), s.mean(axis=0)
        updates.append(g / np.sqrt(np.outer(r, c) / r.mean()))
    expected_update = np.stack(updates).reshape(shape)
    np.testing.assert_allclose(new, param - 0.01 * expected_update, rtol=1e-11)
    assert state.exp_avg_sq_row is not None and state.exp_avg_sq_col is not None
    assert state.exp_avg_sq_row.shape == shape[:-1]
    assert state.exp_avg_sq_col.shape == shape[:-2] + shape[-1:]
    assert state.exp_avg_sq is None


def test_adafactor_clips_the_update_rms() -> None:
    param, _, (new, _) = _adafactor_fixed_lr_step(12, (7,), lr=0.1, clip_threshold=0.25)
    assert _rms((param - new) / 0.1) == pytest.approx(0.25, rel=1e-12)


@pytest.mark.parametrize("warmup_init", [False, True])
@pytest.mark.parametrize("scale_parameter", [False, True])
def test_adafactor_relative_step_learning_rate(warmup_init: bool, scale_parameter: bool) -> None:
    for step in (1, 4, 100, 20000):
        rms = 0.3
        rel = min(1e-6 * step if warmup_init else 1e-2, step**-0.5)
        expected = rel * (max(1e-3, rms) if scale_parameter else 1.0)
        got = adafactor.adafactor_lr(
            step,
            rms,
            lr=None,
            eps=(1e-30, 1e-3),
            relative_step=True,
            warmup_init=warmup_init,
            scale_parameter=scale_parameter,
        )
        assert got == pytest.approx(expected, rel=RTOL)


def test_adafactor_manual_lr_is_floored_by_eps2_when_scaling() -> None:
    got = adafactor.adafactor_lr(
        3, 1e-5, lr=0.5, eps=(1e-30, 1e-2), relative_step=False, warmup_init=False, scale_parameter=True
    )
    assert got == pytest.approx(0.5 * 1e-2, rel=RTOL)


def test_adafactor_decays_before_subtracting_the_update() -> None:
    param, grad, (new, _) = _adafactor_fixed_lr_step(13, (5,), lr=0.1, weight_decay=0.2)
    u = grad / np.sqrt(grad**2 + 1e-30)
    u = u / max(_rms(u), 1.0)
    np.testing.assert_allclose(new, param * (1 - 0.2 * 0.1) - 0.1 * u, rtol=RTOL)


@pytest.mark.parametrize("first_moment", ["lr_scaled", "unscaled"])
def test_adafactor_first_moment_over_two_steps_with_changing_lr(first_moment: str) -> None:
    # decay_rate 0 keeps no second-moment memory (beta2_t = 0), so u_t = g_t / sqrt(g_t^2 + eps1).
    param, g1, g2 = rng_arrays(14, (6,), (6,), (6,))
    b1 = 0.8
    hp: dict[str, Any] = {
        **ADAFACTOR_HP,
        "beta1": b1,
        "decay_rate": 0.0,
        "scale_parameter": False,
        "clip_threshold": 1e6,
    }
    state = adafactor.adafactor_init(param, beta1=b1)
    p1, state = adafactor.adafactor_step(param, g1, state, **hp, first_moment=first_moment)
    p2, state = adafactor.adafactor_step(p1, g2, state, **hp, first_moment=first_moment)
    lr1, lr2 = (min(1e-2, 1 / math.sqrt(t)) for t in (1, 2))  # relative step, no parameter scale
    u1, u2 = (g / np.sqrt(g**2 + 1e-30) for g in (g1, g2))
    if first_moment == "lr_scaled":
        m1 = (1 - b1) * lr1 * u1
        m2 = b1 * m1 + (1 - b1) * lr2 * u2
        step1, step2 = m1, m2
    else:
        m1 = (1 - b1) * u1
        m2 = b1 * m1 + (1 - b1) * u2
        step1, step2 = lr1 * m1, lr2 * m2
    np.testing.assert_allclose(p1, param - step1, rtol=RTOL)
    np.testing.assert_allclose(p2, param - step1 - step2, rtol=RTOL)
    assert state.exp_avg is not None
    np.testing.assert_allclose(state.exp_avg, m2, rtol=RTOL)


def test_adafactor_first_moment_variants_differ_when_lr_changes() -> None:
    spec = load("adafactor")
    base = {"description": "x", "seed": 5, "steps": 6, "shapes": {"w": [3, 4]}, "dtype": "float64"}
    scaled = run_case(spec, {**base, "hyperparams": {"beta1": 0.9, "warmup_init": True}})
    unscaled = run_case(spec, {**base, "hyperparams": {"beta1": 0.9, "warmup_init": True, "first_moment": "unscaled"}})
    assert scaled["params"][0] == unscaled["params"][0]  # identical first step
    assert scaled["params"][-1] != unscaled["params"][-1]


def test_adafactor_low_precision_updates_in_float32_and_stores_the_dtype() -> None:
    param = round_to(rng_arrays(15, (3, 4))[0], "float16")
    grad = round_to(rng_arrays(16, (3, 4))[0], "float16")
    state = adafactor.adafactor_init(param, beta1=0.9)
    hp: dict[str, Any] = {**ADAFACTOR_HP, "beta1": 0.9}
    new, state = adafactor.adafactor_step(param, grad, state, **hp, dtype="float16")
    np.testing.assert_array_equal(new, round_to(new, "float16"))
    assert state.exp_avg is not None and state.exp_avg_sq_row is not None
    np.testing.assert_array_equal(state.exp_avg, round_to(state.exp_avg, "float32"))
    assert not np.array_equal(state.exp_avg, round_to(state.exp_avg, "float16"))


# --------------------------------------------------------------------------- AdamWeightDecay

AWD_HP: dict[str, Any] = {"lr": 0.01, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7, "amsgrad": False}


def test_adam_weight_decay_first_step_decays_with_the_plain_lr_first() -> None:
    param, grad = rng_arrays(20, (3, 4), (3, 4))
    lr, wdr = 0.1, 0.3
    hp: dict[str, Any] = {**AWD_HP, "lr": lr, "epsilon": 0.0}
    state = adam_weight_decay.adam_weight_decay_init(param, amsgrad=False)
    new, state = adam_weight_decay.adam_weight_decay_step(param, grad, state, step=1, decay_rate=wdr, **hp)
    # decay uses lr (not the bias-corrected alpha); the first Adam step with eps 0 is lr * sign(g)
    np.testing.assert_allclose(new, param - lr * param * wdr - lr * np.sign(grad), rtol=RTOL)
    assert state.step == 1


def test_adam_weight_decay_matches_legacy_keras_adam_over_several_steps() -> None:
    param, *grads = rng_arrays(21, (5,), *[(5,)] * 6)
    hp: dict[str, Any] = {**AWD_HP, "epsilon": 1e-3}
    lr, b1, b2, eps = hp["lr"], hp["beta_1"], hp["beta_2"], hp["epsilon"]
    state = adam_weight_decay.adam_weight_decay_init(param, amsgrad=False)
    p, p_ref, m, v = param, param.copy(), np.zeros(5), np.zeros(5)
    for t, g in enumerate(grads, start=1):
        p, state = adam_weight_decay.adam_weight_decay_step(p, g, state, step=t, decay_rate=0.0, **hp)
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g**2
        # epsilon is NOT bias-corrected: lr_t = lr sqrt(1-b2^t)/(1-b1^t), p -= lr_t m / (sqrt(v) + eps)
        p_ref = p_ref - lr * math.sqrt(1 - b2**t) / (1 - b1**t) * m / (np.sqrt(v) + eps)
        np.testing.assert_allclose(p, p_ref, rtol=1e-11)


def test_adam_weight_decay_amsgrad_keeps_the_running_maximum() -> None:
    param = rng_arrays(22, (4,))[0]
    big, small = 10 * np.ones(4), 0.1 * np.ones(4)
    state = adam_weight_decay.adam_weight_decay_init(param, amsgrad=True)
    hp: dict[str, Any] = {**AWD_HP, "amsgrad": True}
    _, state = adam_weight_decay.adam_weight_decay_step(param, big, state, step=1, decay_rate=0.0, **hp)
    _, state = adam_weight_decay.adam_weight_decay_step(param, small, state, step=2, decay_rate=0.0, **hp)
    v1 = (1 - 0.999) * 100.0
    v2 = 0.999 * v1 + (1 - 0.999) * 0.01
    assert state.max_exp_avg_sq is not None
    np.testing.assert_allclose(state.exp_avg_sq, v2, rtol=RTOL)
    np.testing.assert_allclose(state.max_exp_avg_sq, v1, rtol=RTOL)


@pytest.mark.parametrize(
    ("name", "include", "exclude", "decayed"),
    [
        ("dense/kernel", None, None, True),
        ("dense/bias", None, ["LayerNorm", "layer_norm", "bias"], False),
        ("LayerNorm/gamma", ["LayerNorm/gamma"], ["LayerNorm"], True),
        ("LayerNorm/beta", ["LayerNorm/gamma"], ["LayerNorm"], False),
        ("head/kernel", ["^encoder/"], None, True),
        ("encoder/x", [], ["^encoder/"], False),
    ],
)
def test_adam_weight_decay_include_wins_over_exclude(
    name: str, include: list[str] | None, exclude: list[str] | None, decayed: bool
) -> None:
    assert adam_weight_decay.do_use_weight_decay(name, 0.1, include, exclude) is decayed
    assert adam_weight_decay.do_use_weight_decay(name, 0.0, include, exclude) is False


def _norm(x: np.ndarray) -> float:
    return float(np.sqrt(np.sum(x**2)))


def test_adam_weight_decay_clipping_modes() -> None:
    a, b = rng_arrays(23, (3, 4), (4,))
    a, b = 3 * a, 0.01 * b
    by_norm = adam_weight_decay.clip_gradients([a, b], clipnorm=1.0, clipvalue=None, global_clipnorm=None)
    assert _norm(by_norm[0]) == pytest.approx(1.0, rel=RTOL)
    np.testing.assert_allclose(by_norm[1], b, rtol=RTOL)  # already below the norm
    joint = adam_weight_decay.clip_gradients([a, b], clipnorm=None, clipvalue=None, global_clipnorm=1.0)
    assert math.hypot(_norm(joint[0]), _norm(joint[1])) == pytest.approx(1.0, rel=RTOL)
    scale = 1.0 / math.hypot(_norm(a), _norm(b))  # one common scale
    np.testing.assert_allclose(joint[0], a * scale, rtol=RTOL)
    np.testing.assert_allclose(joint[1], b * scale, rtol=RTOL)
    by_value = adam_weight_decay.clip_gradients([a, b], clipnorm=None, clipvalue=0.5, global_clipnorm=None)
    np.testing.assert_array_equal(by_value[0], np.minimum(np.maximum(a, -0.5), 0.5))
    off = adam_weight_decay.clip_gradients([a], clipnorm=0.0, clipvalue=None, global_clipnorm=None)
    np.testing.assert_array_equal(off[0], a)
    zero = adam_weight_decay.clip_gradients([np.zeros(3)], clipnorm=1.0, clipvalue=None, global_clipnorm=None)
    np.testing.assert_array_equal(zero[0], np.zeros(3))


def test_adam_weight_decay_missing_gradient_still_advances_the_global_step() -> None:
    spec = load("adam_weight_decay")
    case = {
        "description": "x",
        "hyperparams": {"epsilon": 0.0, "learning_rate": 0.1},
        "dtype": "float64",
        "seed": 7,
        "steps": 2,
        "shapes": {"a": [3], "b": [3]},
        "missing_grads": {"b": [0]},
    }
    filled = generate_case(spec, case)
    p0, g2 = np.array(filled["params0"]["b"]), np.array(filled["grads"][1]["b"])
    after = filled["expected"]
    np.testing.assert_array_equal(after["params"][0]["b"], p0)
    # first update of b happens at t = 2: lr sqrt(1-b2^2)/(1-b1^2) (1-b1) g / (sqrt(1-b2) |g|)
    t, b1, b2 = 2, 0.9, 0.999
    expected = p0 - 0.1 * math.sqrt(1 - b2**t) / (1 - b1**t) * (1 - b1) * g2 / (math.sqrt(1 - b2) * np.abs(g2))
    np.testing.assert_allclose(after["params"][1]["b"], expected, rtol=RTOL)
    assert after["state"]["b"]["step"] == 2 == after["state"]["a"]["step"]


def test_adam_weight_decay_rejects_a_step_without_any_gradient() -> None:
    spec = load("adam_weight_decay")
    case = {
        "description": "x",
        "hyperparams": {},
        "seed": 1,
        "steps": 2,
        "shapes": {"a": [2]},
        "missing_grads": {"a": [1]},
    }
    with pytest.raises(ValueError, match="No gradients provided for any variable"):
        run_case(spec, case)


def test_adam_weight_decay_uses_the_schedule_at_the_iteration_before_the_step() -> None:
    spec = load("adam_weight_decay")
    case = {
        "description": "x",
        "hyperparams": {"learning_rate": {"schedule": "s", "params": {}}, "weight_decay_rate": 0.5},
        "dtype": "float64",
        "seed": 3,
        "steps": 3,
        "shapes": {"w": [2]},
        "zero_grads": [0, 1, 2],
    }
    seen: list[int] = []

    def resolve(value: Any) -> Any:
        def lr(iteration: int) -> float:
            seen.append(iteration)
            return 0.1 * (iteration + 1)

        return lr

    out = run_case(spec, case, resolve_schedule=resolve)
    p = np.array(generate_case(spec, case, resolve_schedule=resolve)["params0"]["w"])
    for iteration, row in enumerate(out["params"]):
        p = p - 0.1 * (iteration + 1) * p * 0.5  # zero grads: only the decay moves, with lr(iteration)
        np.testing.assert_allclose(row["w"], p, rtol=RTOL)
    assert seen[:3] == [0, 1, 2]
    with pytest.raises(ValueError, match="resolve_schedule"):
        run_case(spec, case)


def test_adam_weight_decay_bfloat16_casts_beta_2_to_one() -> None:
    # bfloat16(0.999) == 1.0, so 1 - beta_2**t == 0 and the Adam step vanishes as in TF.
    param = round_to(rng_arrays(24, (4,))[0], "bfloat16")
    grad = round_to(rng_arrays(25, (4,))[0], "bfloat16")
    state = adam_weight_decay.adam_weight_decay_init(param, amsgrad=False)
    new, _ = adam_weight_decay.adam_weight_decay_step(
        param, grad, state, step=1, decay_rate=0.0, dtype="bfloat16", **AWD_HP
    )
    assert round_to(0.999, "bfloat16") == 1.0
    np.testing.assert_array_equal(new, param)


# --------------------------------------------------------------------------- missing vs zero gradients


@pytest.mark.parametrize("spec_id", ["adamw", "adafactor"])
def test_missing_gradient_skips_the_step_zero_gradient_takes_it(spec_id: str) -> None:
    spec = load(spec_id)
    hp: dict[str, Any] = (
        {"lr": 0.01, "weight_decay": 0.1} if spec_id == "adamw" else {"beta1": 0.9, "weight_decay": 0.1}
    )
    base = {"description": "x", "hyperparams": hp, "dtype": "float64", "seed": 9, "steps": 4, "shapes": {"w": [2, 3]}}
    missing = generate_case(spec, {**base, "missing_grads": {"w": [2]}})
    zero = generate_case(spec, {**base, "zero_grads": [2]})
    m_params = missing["expected"]["params"]
    z_params = zero["expected"]["params"]
    assert m_params[2]["w"] == m_params[1]["w"]  # untouched
    assert z_params[2]["w"] != z_params[1]["w"]  # decay and momentum still act
    assert missing["expected"]["state"]["w"]["step"] == 3
    assert zero["expected"]["state"]["w"]["step"] == 4
    assert missing["grads"][2]["w"] is None
    assert np.count_nonzero(zero["grads"][2]["w"]) == 0
    assert missing["grads"][3] == zero["grads"][3]  # the draws do not shift


# --------------------------------------------------------------------------- spec cases


def _cases() -> list[tuple[str, int]]:
    return [(spec_id, index) for spec_id in OPTIMIZER_IDS for index in range(len(load(spec_id)["cases"]))]


def _shape(value: Any) -> tuple[int, ...]:
    return tuple(np.shape(np.array(value, dtype=float)))


@pytest.mark.parametrize(("spec_id", "index"), _cases())
def test_spec_case_generation_is_deterministic_and_replayable(spec_id: str, index: int) -> None:
    spec = load(spec_id)
    case = spec["cases"][index]
    filled = generate_case(spec, case)
    assert generate_case(spec, case) == filled
    assert "expected" not in case or case["expected"] == filled["expected"]
    assert run_case(spec, filled) == filled["expected"]  # replay from the stored inputs
    steps, shapes = case["steps"], case["shapes"]
    expected = filled["expected"]
    assert len(filled["grads"]) == len(expected["params"]) == steps
    assert steps >= 10
    dtype = case.get("dtype", "float32")
    for snapshot in [filled["params0"], *expected["params"]]:
        assert set(snapshot) == set(shapes)
        for name, value in snapshot.items():
            assert _shape(value) == tuple(shapes[name])
            array = np.array(value, dtype=float)
            assert np.all(np.isfinite(array))
            np.testing.assert_array_equal(array, round_to(array, dtype))
    declared = spec["state"]
    for name, entry in expected["state"].items():
        keys = list(entry)
        assert keys == [key for key in declared if key in entry]
        shape = tuple(shapes[name])
        if not entry:
            continue
        for key in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"):
            if key in entry:
                assert _shape(entry[key]) == shape
        if "exp_avg_sq_row" in entry:
            assert len(shape) >= 2 and "exp_avg_sq" not in entry
            assert _shape(entry["exp_avg_sq_row"]) == shape[:-1]
            assert _shape(entry["exp_avg_sq_col"]) == shape[:-2] + shape[-1:]


def test_spec_case_counts() -> None:
    long_cases = [
        (spec_id, c.get("dtype", "float32"))
        for spec_id in OPTIMIZER_IDS
        for c in load(spec_id)["cases"]
        if c["steps"] >= 200
    ]
    total = sum(len(load(spec_id)["cases"]) for spec_id in OPTIMIZER_IDS)
    assert total >= 100
    assert {"float32", "bfloat16"} <= {dtype for _, dtype in long_cases}


# --------------------------------------------------------------------------- inputs and rounding


def test_inputs_are_deterministic_and_representable() -> None:
    shapes = {"w": [3, 4], "b": [4], "s": []}
    a = make_inputs(shapes, 5, 42)
    b = make_inputs(shapes, 5, 42)
    c = make_inputs(shapes, 5, 43)
    for name in shapes:
        np.testing.assert_array_equal(a[0][name], b[0][name])
        assert not np.array_equal(a[0][name], c[0][name])
    for row in a[1]:
        for value in row.values():
            assert value is not None
            np.testing.assert_array_equal(value, round_to(value, "bfloat16"))
            np.testing.assert_array_equal(value, round_to(value, "float16"))
    assert a[0]["s"].shape == ()


def test_draw_zeroes_values_that_float16_cannot_hold() -> None:
    class Tiny:
        def standard_normal(self, shape: tuple[int, ...]) -> np.ndarray:
            return np.array([1e-7, 0.5, 3e38])

    values = draw(Tiny(), (3,))  # type: ignore[arg-type]
    assert values[0] == 0.0 and values[1] == 0.5 and values[2] == 0.0


def _bf16_from_f32_bits(x: np.ndarray) -> np.ndarray:
    """Independent bfloat16 rounding of float32 values by integer arithmetic on the bits."""
    out = []
    for v in x.astype(np.float32):
        bits = struct.unpack("<I", struct.pack("<f", float(v)))[0]
        bits = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16) << 16
        out.append(struct.unpack("<f", struct.pack("<I", bits & 0xFFFFFFFF))[0])
    return np.array(out, dtype=np.float64)


def test_round_to_bfloat16_matches_bit_rounding_of_float32_values() -> None:
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(2000) * 10.0 ** rng.integers(-30, 30, 2000)).astype(np.float32).astype(np.float64)
    ties = np.array([1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), 2**-130 + 2**-134], dtype=np.float64)
    x = np.concatenate([x, ties])
    np.testing.assert_array_equal(round_to(x, "bfloat16"), _bf16_from_f32_bits(x))


def test_round_to_bfloat16_rounds_float64_once() -> None:
    # Just above a tie: float32 would first round it onto the tie, which then rounds to even (down).
    x = 1 + 2**-8 + 2**-40
    assert round_to(x, "bfloat16") == 1 + 2**-7
    assert _bf16_from_f32_bits(np.array([x]))[0] == 1.0


def test_round_to_overflow_nan_and_zero() -> None:
    big = float(np.ldexp(1.0, 128) * (1 - 2**-9))  # rounds up past the largest finite bfloat16
    assert round_to(big, "bfloat16") == math.inf
    assert round_to(-big, "bfloat16") == -math.inf
    assert round_to(65520.0, "float16") == math.inf
    assert math.isnan(float(round_to(math.nan, "bfloat16")))
    assert math.copysign(1.0, float(round_to(-0.0, "bfloat16"))) == -1.0
    with pytest.raises(ValueError, match="unknown dtype"):
        round_to(1.0, "int8")


@pytest.mark.parametrize(("dtype", "numpy_dtype"), [("float16", np.float16), ("float32", np.float32)])
def test_round_to_matches_numpy_casts(dtype: str, numpy_dtype: type) -> None:
    rng = np.random.default_rng(1)
    x = rng.standard_normal(5000) * 10.0 ** rng.integers(-9, 5, 5000)
    with np.errstate(over="ignore"):
        cast = x.astype(numpy_dtype).astype(np.float64)
    np.testing.assert_array_equal(round_to(x, dtype), cast)
