"""float64 reference of transformers' TF ``AdamWeightDecay`` (v4.57 numerics, on Keras 3 semantics).

One step of the optimizer (:func:`apply_step`) does, for the parameters that have a gradient:

1. clip the gradients as Keras 3 does (:func:`clip_gradients`): ``clipnorm`` per tensor, else
   ``global_clipnorm`` over all present gradients, else ``clipvalue`` element-wise;
2. per parameter (:func:`adam_weight_decay_step`), one line per line of the spec formula:
   ``p -= (lr * p) * weight_decay_rate`` first, with the scheduled, NOT bias-corrected ``lr``, and
   only for parameters selected by :func:`do_use_weight_decay`; then legacy Keras Adam:
   ``alpha = lr * sqrt(1 - beta_2**t) / (1 - beta_1**t)``, ``m += (g - m) * (1 - beta_1)``,
   ``v += (g**2 - v) * (1 - beta_2)``, ``vhat = max(vhat, v)`` (amsgrad),
   ``p -= (m * alpha) / (sqrt(v or vhat) + epsilon)`` -- epsilon is not bias-corrected.

``t`` is the optimizer-wide step (Keras ``iterations + 1``): it advances on every call, also for a
parameter whose gradient is missing (that parameter, its moments and its decay are skipped). The
learning rate, a number or a schedule, is read at ``iterations`` (0-based), as Keras does.

Narrow dtypes follow TF/Keras: the variable, its moments and every op live in the variable dtype
and the hyperparameters are cast to it first (so ``beta_2=0.999`` becomes 1.0 in bfloat16 and the
Adam step vanishes, as it does in TF). The reference rounds each op to the case dtype.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from ..rounding import rounding_key
from ._case import case_dtype, case_inputs, fill_case, hyperparams, params_to_json
from ._inputs import Array, to_json
from ._lowp import round_to, store

__all__ = [
    "AdamWeightDecayState",
    "adam_weight_decay_init",
    "adam_weight_decay_step",
    "apply_step",
    "clip_gradients",
    "do_use_weight_decay",
    "generate_case",
    "run",
    "run_case",
]

ScheduleResolver = Callable[[Any], Callable[[int], float]]
"""Turns a schedule-typed hyperparameter value ({"schedule": id, "params": {...}}) into lr(iteration)."""


class AdamWeightDecayState(NamedTuple):
    """Per-parameter state (``step`` is the optimizer-wide count, the same for every parameter)."""

    step: int
    exp_avg: Array
    exp_avg_sq: Array
    max_exp_avg_sq: Array | None


def adam_weight_decay_init(param: Array, *, amsgrad: bool) -> AdamWeightDecayState:
    """The state Keras builds for every variable before the first step."""
    return AdamWeightDecayState(
        step=0,
        exp_avg=np.zeros_like(param),
        exp_avg_sq=np.zeros_like(param),
        max_exp_avg_sq=np.zeros_like(param) if amsgrad else None,
    )


def do_use_weight_decay(
    name: str,
    weight_decay_rate: float,
    include_in_weight_decay: Sequence[str] | None,
    exclude_from_weight_decay: Sequence[str] | None,
) -> bool:
    """transformers' rule: no decay at rate 0; an include match wins; then an exclude match skips."""
    if weight_decay_rate == 0:
        return False
    if include_in_weight_decay:
        for pattern in include_in_weight_decay:
            if re.search(pattern, name) is not None:
                return True
    if exclude_from_weight_decay:
        for pattern in exclude_from_weight_decay:
            if re.search(pattern, name) is not None:
                return False
    return True


def _clip_by_norm(grad: Array, clipnorm: float, q: Callable[[Any], Any]) -> Array:
    l2sum = float(q(np.sum(q(grad * grad))))
    l2norm = float(q(math.sqrt(l2sum))) if l2sum > 0 else l2sum
    result: Array = q(q(grad * q(clipnorm)) / max(l2norm, float(q(clipnorm))))
    return result


def clip_gradients(
    grads: Sequence[Array],
    *,
    clipnorm: float | None,
    clipvalue: float | None,
    global_clipnorm: float | None,
    dtype: str = "float64",
) -> list[Array]:
    """Keras 3 ``_clip_gradients`` of the present gradients (a bound of None or <= 0 is off).

    Every op is rounded to ``dtype``, the gradients' dtype.
    """

    def q(x: Any) -> Any:
        return round_to(x, dtype)

    if clipnorm and clipnorm > 0:
        return [_clip_by_norm(g, clipnorm, q) for g in grads]
    if global_clipnorm and global_clipnorm > 0:
        c = float(q(global_clipnorm))
        use_norm = float(q(math.sqrt(float(q(sum(float(q(np.sum(q(g * g)))) for g in grads))))))
        inverse = float(q(1.0 / use_norm)) if use_norm > 0 else math.inf
        scale = float(q(c * min(inverse, float(q(1.0 / c))))) + (use_norm - use_norm)
        return [q(g * scale) for g in grads]
    if clipvalue and clipvalue > 0:
        v = float(q(clipvalue))
        return [np.clip(g, -v, v) for g in grads]
    return list(grads)


def adam_weight_decay_step(
    param: Array,
    grad: Array,
    state: AdamWeightDecayState,
    *,
    step: int,
    lr: float,
    beta_1: float,
    beta_2: float,
    epsilon: float,
    amsgrad: bool,
    decay_rate: float,
    dtype: str = "float64",
    fp32_math: bool = False,
    key: int | None = None,
) -> tuple[Array, AdamWeightDecayState]:
    """One step of one parameter at optimizer step ``step`` (1-based); ``decay_rate`` 0 = no decay.

    ``grad`` is the already clipped gradient. ``dtype`` is the variable dtype: as in TF/Keras, the
    hyperparameters are first cast to it and every op result is rounded to it (``q``). With ``fp32_math`` a
    16-bit variable's step runs in float32 instead (hyperparameters cast to float32, ``q`` rounds to float32)
    and the variable and its state are rounded to ``dtype`` once at the end, the variable stochastically when
    a rounding ``key`` is given (:func:`~._lowp.store`).
    """
    compute = "float32" if fp32_math and dtype in ("bfloat16", "float16") else dtype

    def q(x: Any) -> Any:
        return round_to(x, compute)

    lr, beta_1, beta_2, epsilon, decay_rate = (float(q(x)) for x in (lr, beta_1, beta_2, epsilon, decay_rate))
    if decay_rate != 0.0:
        param = q(param - q(q(lr * param) * decay_rate))
    alpha = float(
        q(q(lr * float(q(math.sqrt(float(q(1.0 - float(q(beta_2**step)))))))) / q(1.0 - float(q(beta_1**step))))
    )
    exp_avg = q(state.exp_avg + q(q(grad - state.exp_avg) * float(q(1.0 - beta_1))))
    exp_avg_sq = q(state.exp_avg_sq + q(q(q(grad * grad) - state.exp_avg_sq) * float(q(1.0 - beta_2))))
    max_exp_avg_sq = state.max_exp_avg_sq
    denom_sq = exp_avg_sq
    if amsgrad:
        assert max_exp_avg_sq is not None
        max_exp_avg_sq = np.maximum(max_exp_avg_sq, exp_avg_sq)
        denom_sq = max_exp_avg_sq
    param = store(q(param - q(q(exp_avg * alpha) / q(q(np.sqrt(denom_sq)) + epsilon))), dtype, key)
    exp_avg, exp_avg_sq = round_to(exp_avg, dtype), round_to(exp_avg_sq, dtype)
    if max_exp_avg_sq is not None:
        max_exp_avg_sq = round_to(max_exp_avg_sq, dtype)
    return param, AdamWeightDecayState(step=step, exp_avg=exp_avg, exp_avg_sq=exp_avg_sq, max_exp_avg_sq=max_exp_avg_sq)


def apply_step(
    params: Mapping[str, Array],
    grads: Mapping[str, Array | None],
    states: Mapping[str, AdamWeightDecayState],
    *,
    iteration: int,
    lr: float,
    beta_1: float,
    beta_2: float,
    epsilon: float,
    amsgrad: bool,
    weight_decay_rate: float,
    include_in_weight_decay: Sequence[str] | None = None,
    exclude_from_weight_decay: Sequence[str] | None = None,
    clipnorm: float | None = None,
    clipvalue: float | None = None,
    global_clipnorm: float | None = None,
    dtype: str = "float64",
    fp32_math: bool = False,
    rounding_seed: int | None = None,
) -> tuple[dict[str, Array], dict[str, AdamWeightDecayState]]:
    """One ``apply_gradients`` call at Keras ``iterations == iteration`` with the lr read there.

    ``rounding_seed`` (not None) turns on stochastic rounding of bfloat16 variables, keyed by each variable's
    position in ``params`` and the step.

    Raises:
      ValueError: every gradient is missing (Keras: "No gradients provided for any variable.").
    """
    present = [name for name in params if grads.get(name) is not None]
    if not present:
        raise ValueError("No gradients provided for any variable.")
    clipped = clip_gradients(
        [grads[name] for name in present],  # type: ignore[misc]
        clipnorm=clipnorm,
        clipvalue=clipvalue,
        global_clipnorm=global_clipnorm,
        dtype=dtype,
    )
    step = iteration + 1
    new_params = dict(params)
    new_states = {name: state._replace(step=step) for name, state in states.items()}
    index = {name: i for i, name in enumerate(params)}
    for name, grad in zip(present, clipped):
        key = None if rounding_seed is None else rounding_key(rounding_seed, index[name], step)
        decay = do_use_weight_decay(name, weight_decay_rate, include_in_weight_decay, exclude_from_weight_decay)
        new_params[name], new_states[name] = adam_weight_decay_step(
            params[name],
            grad,
            states[name],
            step=step,
            lr=lr,
            beta_1=beta_1,
            beta_2=beta_2,
            epsilon=epsilon,
            amsgrad=amsgrad,
            decay_rate=weight_decay_rate if decay else 0.0,
            dtype=dtype,
            fp32_math=fp32_math,
            key=key,
        )
    return new_params, new_states


def learning_rate_fn(value: Any, resolve_schedule: ScheduleResolver | None = None) -> Callable[[int], float]:
    """lr(iteration) for a number, a callable, or a schedule-typed spec value (needs ``resolve_schedule``)."""
    if callable(value):
        return value  # type: ignore[no-any-return]
    if isinstance(value, Mapping):
        if resolve_schedule is None:
            raise ValueError("this case uses a learning-rate schedule; pass resolve_schedule to evaluate it")
        return resolve_schedule(value)
    constant = float(value)
    return lambda iteration: constant


def run(
    spec: Mapping[str, Any],
    case: Mapping[str, Any],
    params0: dict[str, Array],
    grads: list[dict[str, Array | None]],
    *,
    resolve_schedule: ScheduleResolver | None = None,
) -> dict[str, Any]:
    """Replay ``grads`` from ``params0`` (one ``apply_gradients`` call per row)."""
    hp = hyperparams(spec, case)
    dtype = case_dtype(case)
    lr_at = learning_rate_fn(hp["learning_rate"], resolve_schedule)
    amsgrad = bool(hp["amsgrad"])
    params = {name: round_to(value, dtype) for name, value in params0.items()}
    states = {name: adam_weight_decay_init(value, amsgrad=amsgrad) for name, value in params.items()}
    history: list[dict[str, Any]] = []
    for iteration, row in enumerate(grads):
        new_params, new_states = apply_step(
            params,
            row,
            states,
            iteration=iteration,
            lr=float(lr_at(iteration)),
            beta_1=float(hp["beta_1"]),
            beta_2=float(hp["beta_2"]),
            epsilon=float(hp["epsilon"]),
            amsgrad=amsgrad,
            weight_decay_rate=float(hp["weight_decay_rate"]),
            include_in_weight_decay=hp["include_in_weight_decay"],
            exclude_from_weight_decay=hp["exclude_from_weight_decay"],
            clipnorm=hp["clipnorm"],
            clipvalue=hp["clipvalue"],
            global_clipnorm=hp["global_clipnorm"],
            dtype=dtype,
            fp32_math=bool(hp["fp32_math"]),
            rounding_seed=int(hp["rounding_seed"]) if hp["stochastic_rounding"] else None,
        )
        params, states = new_params, new_states
        history.append(params_to_json(params))
    final: dict[str, Any] = {}
    for name, state in states.items():
        entry: dict[str, Any] = {
            "step": state.step,
            "exp_avg": to_json(state.exp_avg),
            "exp_avg_sq": to_json(state.exp_avg_sq),
        }
        if state.max_exp_avg_sq is not None:
            entry["max_exp_avg_sq"] = to_json(state.max_exp_avg_sq)
        final[name] = entry
    return {"params": history, "state": final}


def run_case(
    spec: Mapping[str, Any], case: Mapping[str, Any], *, resolve_schedule: ScheduleResolver | None = None
) -> dict[str, Any]:
    """``{"params": [...], "state": {...}}`` of a case (stored inputs when present, else generated)."""
    params0, grads = case_inputs(case)
    return run(spec, case, params0, grads, resolve_schedule=resolve_schedule)


def generate_case(
    spec: Mapping[str, Any], case: Mapping[str, Any], *, resolve_schedule: ScheduleResolver | None = None
) -> dict[str, Any]:
    """The case with params0, grads and expected filled in."""
    return fill_case(spec, case, lambda s, c, p, g: run(s, c, p, g, resolve_schedule=resolve_schedule))
