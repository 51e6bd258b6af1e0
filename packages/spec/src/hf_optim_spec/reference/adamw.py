"""float64 reference of transformers' torch ``AdamW`` (v4.49 numerics, ``correct_bias``).

One line of :func:`adamw_step` per line of the spec formula (``spec/optimizers/adamw.json``), in
transformers' operation order:

* ``exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)``              -> ``m * beta1 + (1 - beta1) * g``
* ``exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)`` -> ``v * beta2 + ((1 - beta2) * g) * g``
* ``denom = exp_avg_sq.sqrt().add_(eps)``                           -> ``sqrt(v) + eps``
* ``step_size = lr * math.sqrt(bc2) / bc1`` (Python floats)         -> ``(lr * sqrt(bc2)) / bc1``
* ``p.addcdiv_(exp_avg, denom, value=-step_size)``                  -> ``p + (-step_size * m) / denom``
* ``p.add_(p, alpha=-lr * weight_decay)`` only when ``weight_decay > 0`` -> ``p + (-lr * wd) * p``

Products are rounded on their own (no fused multiply-add); scalars stay Python floats, as torch
keeps them in its op math. For a parameter stored in a narrower dtype (the case ``dtype``), every
tensor the torch code materialises -- each in-place op on the moments and the parameter, and
``denom`` -- is rounded to that dtype, as torch does for a bfloat16/float16 parameter whose state
is created with ``zeros_like(p)``.

Bit-equality in float64: torch's CPU kernels fuse ``add_(x, alpha=a)`` into an FMA and torch 2.13's
float64 ``sqrt`` on CPU is not correctly rounded (NumPy's is), so a torch port that writes the
products out (``exp_avg.mul_(beta1).add_(grad * (1 - beta1))``) matches this reference except in
the last bit where ``sqrt`` differs; the spec's float64 tolerance (rtol 1e-12) covers that.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from ..rounding import rounding_key
from ._case import case_dtype, case_inputs, fill_case, hyperparams, params_to_json
from ._inputs import Array, to_json
from ._lowp import round_to, store

__all__ = ["AdamWState", "adamw_init", "adamw_step", "generate_case", "run", "run_case"]


class AdamWState(NamedTuple):
    """Per-parameter state, named like torch's ``state_dict`` entries."""

    step: int
    exp_avg: Array
    exp_avg_sq: Array


def adamw_init(param: Array) -> AdamWState:
    """The state before the first step: step 0 and zero moments."""
    return AdamWState(step=0, exp_avg=np.zeros_like(param), exp_avg_sq=np.zeros_like(param))


def adamw_step(
    param: Array,
    grad: Array,
    state: AdamWState,
    *,
    lr: float,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    correct_bias: bool,
    dtype: str = "float64",
    fp32_math: bool = False,
    key: int | None = None,
) -> tuple[Array, AdamWState]:
    """One AdamW step of one parameter that has a gradient; returns the new parameter and state.

    ``dtype`` is the dtype of the parameter and its state: every tensor the torch code
    materialises (each in-place op) is rounded to it with ``q``; for float64 ``q`` is the identity.
    With ``fp32_math`` a 16-bit parameter's step is computed in float32 instead (``q`` rounds to float32)
    and the parameter and moments are rounded to ``dtype`` once at the end, the parameter stochastically
    when a rounding ``key`` is given (:func:`~._lowp.store`).
    """
    compute = "float32" if fp32_math and dtype in ("bfloat16", "float16") else dtype

    def q(x: Array) -> Array:
        return round_to(x, compute)

    step = state.step + 1
    exp_avg = q(q(state.exp_avg * beta1) + (1.0 - beta1) * grad)
    exp_avg_sq = q(q(state.exp_avg_sq * beta2) + (1.0 - beta2) * grad * grad)
    denom = q(q(np.sqrt(exp_avg_sq)) + eps)
    step_size = lr
    if correct_bias:
        step_size = lr * math.sqrt(1.0 - beta2**step) / (1.0 - beta1**step)
    param = q(param + (-step_size * exp_avg) / denom)
    if weight_decay > 0.0:
        param = q(param + (-lr * weight_decay) * param)
    param, exp_avg, exp_avg_sq = store(param, dtype, key), round_to(exp_avg, dtype), round_to(exp_avg_sq, dtype)
    return param, AdamWState(step=step, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq)


def run(
    spec: Mapping[str, Any],
    case: Mapping[str, Any],
    params0: dict[str, Array],
    grads: list[dict[str, Array | None]],
) -> dict[str, Any]:
    """Replay ``grads`` from ``params0``; a missing (None) gradient leaves that parameter and its state alone."""
    hp = hyperparams(spec, case)
    dtype = case_dtype(case)
    beta1, beta2 = hp["betas"]
    params = {name: round_to(value, dtype) for name, value in params0.items()}
    states: dict[str, AdamWState] = {}
    history: list[dict[str, Any]] = []
    index = {name: i for i, name in enumerate(params)}
    for row in grads:
        for name, grad in row.items():
            if grad is None:
                continue
            state = states.get(name) or adamw_init(params[name])
            key = rounding_key(hp["rounding_seed"], index[name], state.step + 1) if hp["stochastic_rounding"] else None
            new_param, new_state = adamw_step(
                params[name],
                grad,
                state,
                lr=float(hp["lr"]),
                beta1=beta1,
                beta2=beta2,
                eps=float(hp["eps"]),
                weight_decay=float(hp["weight_decay"]),
                correct_bias=bool(hp["correct_bias"]),
                dtype=dtype,
                fp32_math=bool(hp["fp32_math"]),
                key=key,
            )
            params[name], states[name] = new_param, new_state
        history.append(params_to_json(params))
    final = {
        name: (
            {
                "step": states[name].step,
                "exp_avg": to_json(states[name].exp_avg),
                "exp_avg_sq": to_json(states[name].exp_avg_sq),
            }
            if name in states
            else {}
        )
        for name in params
    }
    return {"params": history, "state": final}


def run_case(spec: Mapping[str, Any], case: Mapping[str, Any]) -> dict[str, Any]:
    """``{"params": [...], "state": {...}}`` of a case (stored inputs when present, else generated)."""
    params0, grads = case_inputs(case)
    return run(spec, case, params0, grads)


def generate_case(spec: Mapping[str, Any], case: Mapping[str, Any]) -> dict[str, Any]:
    """The case with params0, grads and expected filled in."""
    return fill_case(spec, case, run)
