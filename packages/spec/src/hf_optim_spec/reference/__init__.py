"""float64 NumPy references of the optimizers, the gradient accumulator and the stateful schedules.

Pure functions in the optax shape (``adamw_step(param, grad, state, **hyperparams) -> (param,
state)`` with ``NamedTuple`` states), one module per spec id. They take the raw spec dict (the
parsed JSON) and depend on NumPy only.

``generate_case(spec, case)`` fills a case's generated fields (``params0``, ``grads``,
``expected``; for the accumulator ``grads`` and ``expected``) deterministically from its seed;
``run_case(spec, case)`` replays a case and returns what ``expected`` holds.

The stateful (metric-driven) schedules have pure-Python references, ``plateau`` and ``greedy``;
``run_stateful(spec_id, params, base_lrs, metrics)`` steps either through a metric sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from types import ModuleType
from typing import Any

from . import accumulator, adafactor, adam_weight_decay, adamw, greedy, plateau
from ._case import case_dtype, case_inputs
from ._lowp import round_to

__all__ = [
    "accumulator",
    "adafactor",
    "adam_weight_decay",
    "adamw",
    "case_dtype",
    "case_inputs",
    "generate_case",
    "greedy",
    "module_for",
    "plateau",
    "round_to",
    "run_case",
    "run_stateful",
]

_MODULES: Mapping[str, ModuleType] = {
    "adamw": adamw,
    "adafactor": adafactor,
    "adam_weight_decay": adam_weight_decay,
    "gradient_accumulator": accumulator,
}


def module_for(spec: Mapping[str, Any]) -> ModuleType:
    """The reference module of a spec (by its id)."""
    try:
        return _MODULES[spec["id"]]
    except KeyError:
        raise KeyError(f"no float64 reference for spec {spec.get('id')!r}; known: {sorted(_MODULES)}") from None


def generate_case(spec: Mapping[str, Any], case: Mapping[str, Any], **options: Any) -> dict[str, Any]:
    """``case`` with its generated fields filled from the reference (a new dict; ``case`` is untouched).

    ``options`` go to the module (``resolve_schedule`` for adam_weight_decay cases with a schedule).
    """
    function: Callable[..., dict[str, Any]] = module_for(spec).generate_case
    return function(spec, case, **options)


def run_case(spec: Mapping[str, Any], case: Mapping[str, Any], **options: Any) -> Any:
    """What the case's ``expected`` holds, recomputed: ``{"params": [...], "state": {...}}`` for an
    optimizer, the list of per-op entries for the accumulator."""
    function: Callable[..., Any] = module_for(spec).run_case
    return function(spec, case, **options)


def run_stateful(
    spec_id: str, params: Mapping[str, Any], base_lrs: Sequence[float], metrics: Sequence[float]
) -> list[list[float]]:
    """The lr of every param group after each metric of a stateful schedule: ``[group][metric index]``.

    ``params`` are the validated parameters (defaults filled in), ``base_lrs`` the initial lr of each group.
    ``reduce_lr_on_plateau`` treats the groups independently; ``greedy`` couples them (a reset waits until
    every group sits at its ``min_lr``).
    """
    if spec_id == "reduce_lr_on_plateau":
        return [plateau.run(params, lr, metrics) for lr in base_lrs]
    if spec_id == "greedy":
        return greedy.run(params, base_lrs, metrics)
    raise KeyError(f"no float64 reference for the stateful schedule {spec_id!r}; known: greedy, reduce_lr_on_plateau")
