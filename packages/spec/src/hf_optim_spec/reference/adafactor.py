"""float64 reference of transformers' torch ``Adafactor`` (v4.57 numerics, every flag).

One line of :func:`adafactor_step` per line of the spec formula (``spec/optimizers/adafactor.json``),
in transformers' operation order:

* ``RMS`` of the parameter *before* the update; the learning rate is
  ``max(eps[1], RMS) * rel_step`` when ``scale_parameter`` (else ``rel_step``), where ``rel_step`` is
  ``min(1e-6 * step if warmup_init else 1e-2, 1 / sqrt(step))`` when ``relative_step`` (else ``lr``);
* ``beta2t = 1 - step ** decay_rate`` and ``update = grad**2 + eps[0]``;
* tensors of rank >= 2 are factored over their LAST TWO dims: ``row = mean over -1``,
  ``col = mean over -2``, ``update = rsqrt(row / mean(row)) * rsqrt(col) * grad``; smaller tensors
  keep a full ``exp_avg_sq`` and ``update = rsqrt(exp_avg_sq) * grad``;
* ``update /= max(RMS(update) / clip_threshold, 1)``, then ``update *= lr``;
* with ``beta1`` set, ``exp_avg = beta1 * exp_avg + (1 - beta1) * update`` and the parameter moves by
  ``exp_avg``. transformers averages the already lr-scaled update (``first_moment="lr_scaled"``, the
  default); the extension ``first_moment="unscaled"`` averages the clipped update before the lr and
  multiplies the average by the current lr;
* ``p -= weight_decay * lr * p`` (when ``weight_decay != 0``), then ``p -= update``.

transformers computes in float32 for float32, bfloat16 and float16 parameters (a float32 copy of a
low-precision parameter is updated and copied back), and keeps the state in float32. The reference
computes in float64 and rounds every tensor op to that compute dtype (:func:`compute_dtype`, the
identity for float64 parameters); the new parameter is stored in the case dtype after every step.
Where ``max(eps[1], RMS)`` picks the RMS (a float32 tensor in torch), the lr is rounded as well.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from .._registry import get
from ..rounding import rounding_key
from ._case import case_dtype, case_inputs, fill_case, hyperparams, params_to_json
from ._inputs import Array, to_json
from ._lowp import round_to, store

__all__ = [
    "AdafactorState",
    "adafactor_init",
    "adafactor_lr",
    "adafactor_step",
    "generate_case",
    "is_factored",
    "rms",
    "run",
    "run_case",
]

FIRST_MOMENT = ("lr_scaled", "unscaled")


class AdafactorState(NamedTuple):
    """Per-parameter state, named like torch's ``state_dict`` entries (None = not kept)."""

    step: int
    exp_avg: Array | None
    exp_avg_sq_row: Array | None
    exp_avg_sq_col: Array | None
    exp_avg_sq: Array | None
    RMS: float


def is_factored(shape: tuple[int, ...]) -> bool:
    """Rank >= 2 tensors keep factored second moments."""
    return len(shape) >= 2


def rms(x: Array) -> float:
    """Root mean square: ``norm(x) / sqrt(numel)`` as transformers computes it."""
    return float(np.sqrt(np.sum(x * x))) / math.sqrt(x.size)


def adafactor_init(param: Array, *, beta1: float | None) -> AdafactorState:
    """The state before the first step of ``param``."""
    shape = param.shape
    factored = is_factored(shape)
    return AdafactorState(
        step=0,
        exp_avg=np.zeros(shape) if beta1 is not None else None,
        exp_avg_sq_row=np.zeros(shape[:-1]) if factored else None,
        exp_avg_sq_col=np.zeros(shape[:-2] + shape[-1:]) if factored else None,
        exp_avg_sq=None if factored else np.zeros(shape),
        RMS=0.0,
    )


def adafactor_lr(
    step: int,
    param_rms: float,
    *,
    lr: float | None,
    eps: tuple[float, float],
    relative_step: bool,
    warmup_init: bool,
    scale_parameter: bool,
) -> float:
    """The learning rate Adafactor uses at ``step`` (1-based) for a parameter of RMS ``param_rms``.

    Not restated here: the spec's ``adafactor_relative_step`` expression (the same one the torch and Keras tiers
    lower), bound to these flags and evaluated in float64.
    """
    if lr is None and not relative_step:
        raise ValueError("Adafactor needs a manual `lr` when relative_step=False")
    program = get("adafactor_relative_step").program
    assert program is not None
    flags = {"relative_step": relative_step, "warmup_init": warmup_init, "scale_parameter": scale_parameter}
    bound = program.bind({"lr": lr, "eps2": eps[1], "rms": param_rms, **flags})
    return float(bound(step))


def compute_dtype(dtype: str) -> str:
    """Adafactor computes, and keeps its state, in float32 for every parameter dtype but float64."""
    return "float64" if dtype == "float64" else "float32"


def adafactor_step(
    param: Array,
    grad: Array,
    state: AdafactorState,
    *,
    lr: float | None,
    eps: tuple[float, float],
    clip_threshold: float,
    decay_rate: float,
    beta1: float | None,
    weight_decay: float,
    scale_parameter: bool,
    relative_step: bool,
    warmup_init: bool,
    first_moment: str = "lr_scaled",
    dtype: str = "float64",
    key: int | None = None,
) -> tuple[Array, AdafactorState]:
    """One Adafactor step of one parameter that has a gradient; returns the new parameter and state.

    ``dtype`` is the parameter dtype. Every tensor op is rounded with ``q`` to the compute dtype
    (:func:`compute_dtype`); the new parameter is stored back in ``dtype``, stochastically when a rounding
    ``key`` is given (:func:`~._lowp.store`).
    """
    if first_moment not in FIRST_MOMENT:
        raise ValueError(f"first_moment must be one of {FIRST_MOMENT}, got {first_moment!r}")

    def q(x: Any) -> Any:
        return round_to(x, compute_dtype(dtype))

    step = state.step + 1
    param_rms = float(q(rms(param)))
    lr_t = adafactor_lr(
        step,
        param_rms,
        lr=lr,
        eps=eps,
        relative_step=relative_step,
        warmup_init=warmup_init,
        scale_parameter=scale_parameter,
    )
    if scale_parameter and param_rms > eps[1]:
        lr_t = float(q(lr_t))  # max(eps[1], RMS) picked the RMS tensor, so lr is a tensor too
    beta2t = 1.0 - math.pow(step, decay_rate)
    update = q(q(grad * grad) + eps[0])
    row = col = full = None
    if is_factored(param.shape):
        assert state.exp_avg_sq_row is not None and state.exp_avg_sq_col is not None
        row = q(q(state.exp_avg_sq_row * beta2t) + (1.0 - beta2t) * q(update.mean(axis=-1)))
        col = q(q(state.exp_avg_sq_col * beta2t) + (1.0 - beta2t) * q(update.mean(axis=-2)))
        r_factor = q(1.0 / np.sqrt(q(row / q(row.mean(axis=-1, keepdims=True)))))[..., np.newaxis]
        c_factor = q(1.0 / np.sqrt(col))[..., np.newaxis, :]
        update = q(q(r_factor * c_factor) * grad)
    else:
        assert state.exp_avg_sq is not None
        full = q(q(state.exp_avg_sq * beta2t) + (1.0 - beta2t) * update)
        update = q(q(1.0 / np.sqrt(full)) * grad)
    update = q(update / max(float(q(q(rms(update)) / clip_threshold)), 1.0))
    exp_avg = state.exp_avg
    if beta1 is not None and first_moment == "unscaled":
        assert exp_avg is not None
        exp_avg = q(q(exp_avg * beta1) + (1.0 - beta1) * update)
        update = q(exp_avg * lr_t)
    else:
        update = q(update * lr_t)
        if beta1 is not None:
            assert exp_avg is not None
            exp_avg = q(q(exp_avg * beta1) + (1.0 - beta1) * update)
            update = exp_avg
    if weight_decay != 0.0:
        param = q(param + (-weight_decay * lr_t) * param)
    param = store(q(param - update), dtype, key)
    return param, AdafactorState(
        step=step, exp_avg=exp_avg, exp_avg_sq_row=row, exp_avg_sq_col=col, exp_avg_sq=full, RMS=param_rms
    )


def state_to_json(state: AdafactorState) -> dict[str, Any]:
    """The state entries that exist, in torch's order."""
    out: dict[str, Any] = {"step": state.step}
    for key in ("exp_avg", "exp_avg_sq_row", "exp_avg_sq_col", "exp_avg_sq"):
        value = getattr(state, key)
        if value is not None:
            out[key] = to_json(value)
    out["RMS"] = state.RMS
    return out


def run(
    spec: Mapping[str, Any],
    case: Mapping[str, Any],
    params0: dict[str, Array],
    grads: list[dict[str, Array | None]],
) -> dict[str, Any]:
    """Replay ``grads`` from ``params0``; a missing (None) gradient leaves that parameter and its state alone."""
    hp = hyperparams(spec, case)
    dtype = case_dtype(case)
    if hp["lr"] is None and not hp["relative_step"]:
        raise ValueError("Adafactor with relative_step=False needs a manual `lr`")
    beta1 = None if hp["beta1"] is None else float(hp["beta1"])
    options: dict[str, Any] = {
        "lr": None if hp["lr"] is None else float(hp["lr"]),
        "eps": hp["eps"],
        "clip_threshold": float(hp["clip_threshold"]),
        "decay_rate": float(hp["decay_rate"]),
        "beta1": beta1,
        "weight_decay": float(hp["weight_decay"]),
        "scale_parameter": bool(hp["scale_parameter"]),
        "relative_step": bool(hp["relative_step"]),
        "warmup_init": bool(hp["warmup_init"]),
        "first_moment": str(hp.get("first_moment", "lr_scaled")),
    }
    params = {name: round_to(value, dtype) for name, value in params0.items()}
    states: dict[str, AdafactorState] = {}
    history: list[dict[str, Any]] = []
    index = {name: i for i, name in enumerate(params)}
    for row in grads:
        for name, grad in row.items():
            if grad is None:
                continue
            state = states.get(name) or adafactor_init(params[name], beta1=beta1)
            key = rounding_key(hp["rounding_seed"], index[name], state.step + 1) if hp["stochastic_rounding"] else None
            params[name], states[name] = adafactor_step(params[name], grad, state, **options, dtype=dtype, key=key)
        history.append(params_to_json(params))
    final = {name: state_to_json(states[name]) if name in states else {} for name in params}
    return {"params": history, "state": final}


def run_case(spec: Mapping[str, Any], case: Mapping[str, Any]) -> dict[str, Any]:
    """``{"params": [...], "state": {...}}`` of a case (stored inputs when present, else generated)."""
    params0, grads = case_inputs(case)
    return run(spec, case, params0, grads)


def generate_case(spec: Mapping[str, Any], case: Mapping[str, Any]) -> dict[str, Any]:
    """The case with params0, grads and expected filled in."""
    return fill_case(spec, case, run)
