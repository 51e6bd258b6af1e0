"""transformers' schedule factories for torch (``get_cosine_schedule_with_warmup``, ...) and :func:`build_schedule`.

No schedule has its own formula code here: each factory checks its arguments against the spec once and wraps the
bound :class:`SpecFactor` in :class:`SpecFactorLR` (a ``LambdaLR``); the metric-driven schedules get their native
class. Every factory docstring is generated from its spec.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import hf_optim_spec
import torch
from hf_optim_spec._schedules import is_schedule_ref
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau

from . import _docs
from ._arguments import check_optimizer
from ._greedy import get_greedy_schedule, greedy_schedule
from ._lr_schedulers import PlateauLR, SpecFactorLR, SpecLR
from ._spec_factor import SpecFactor, validated_factor


def _base_lr(optimizer: Optimizer) -> float | None:
    check_optimizer(optimizer)
    lr = optimizer.defaults.get("lr")
    if isinstance(lr, torch.Tensor):
        return float(lr.item())
    return None if lr is None else float(lr)


def _factor_schedule(spec_id: str, arguments: dict[str, Any]) -> SpecFactorLR:
    """The one builder behind every "factor" factory; ``arguments`` is the factory's ``locals()``."""
    optimizer, last_epoch = arguments.pop("optimizer"), arguments.pop("last_epoch")
    return SpecFactorLR(optimizer, validated_factor(spec_id, arguments, _base_lr(optimizer)), last_epoch=last_epoch)


def build_schedule(spec_id: str, optimizer: Optimizer, params: Mapping[str, Any], last_epoch: int = -1) -> LRScheduler:
    """Any spec schedule from its id and a dict of arguments (torch spelling).

    "factor" schedules give ``LambdaLR``, "lr" schedules :class:`SpecLR`, the stateful ones their native class
    (:class:`PlateauLR`, a ``ReduceLROnPlateau``; :class:`GreedyLR`). Errors are the spec's (also for missing
    arguments: ``Missing required argument `x```).
    """
    check_optimizer(optimizer)
    spec = hf_optim_spec.get(spec_id)
    if spec.kind != "schedule":
        raise ValueError(f"spec {spec_id!r} is a {spec.kind}, not a schedule")
    if spec.stateful:
        return _STATEFUL[spec_id](optimizer, params)
    if spec.output == "lr":
        callables = {
            name: SpecFactor(value["schedule"], value.get("params", {}), value.get("base_lr"))
            if is_schedule_ref(value)
            else value
            for name, value in params.items()
        }
        return SpecLR(optimizer, validated_factor(spec_id, callables), last_epoch=last_epoch)
    return SpecFactorLR(optimizer, validated_factor(spec_id, params, _base_lr(optimizer)), last_epoch=last_epoch)


# --------------------------------------------------------------------------- transformers' factories


def get_constant_schedule(optimizer: Optimizer, last_epoch: int = -1) -> LambdaLR:
    return _factor_schedule("constant", locals())


def get_constant_schedule_with_warmup(optimizer: Optimizer, num_warmup_steps: int, last_epoch: int = -1) -> LambdaLR:
    return _factor_schedule("constant_with_warmup", locals())


def get_linear_schedule_with_warmup(
    optimizer: Optimizer, num_warmup_steps: int, num_training_steps: int, last_epoch: int = -1
) -> LambdaLR:
    return _factor_schedule("linear", locals())


def get_cosine_schedule_with_warmup(
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 0.5,
    last_epoch: int = -1,
    *,
    clamp_progress: bool = False,
) -> LambdaLR:
    return _factor_schedule("cosine", locals())


def get_cosine_with_hard_restarts_schedule_with_warmup(
    optimizer: Optimizer, num_warmup_steps: int, num_training_steps: int, num_cycles: int = 1, last_epoch: int = -1
) -> LambdaLR:
    return _factor_schedule("cosine_with_restarts", locals())


def get_polynomial_decay_schedule_with_warmup(
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    lr_end: float = 1e-7,
    power: float = 1.0,
    last_epoch: int = -1,
) -> LambdaLR:
    return _factor_schedule("polynomial", locals())


def get_inverse_sqrt_schedule(
    optimizer: Optimizer, num_warmup_steps: int, timescale: int | None = None, last_epoch: int = -1
) -> LambdaLR:
    return _factor_schedule("inverse_sqrt", locals())


def get_cosine_with_min_lr_schedule_with_warmup(
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 0.5,
    last_epoch: int = -1,
    min_lr: float | None = None,
    min_lr_rate: float | None = None,
    *,
    clamp_progress: bool = False,
) -> LambdaLR:
    return _factor_schedule("cosine_with_min_lr", locals())


def get_cosine_with_min_lr_schedule_with_warmup_lr_rate(
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 0.5,
    last_epoch: int = -1,
    min_lr: float | None = None,
    min_lr_rate: float | None = None,
    warmup_lr_rate: float | None = None,
    *,
    clamp_progress: bool = False,
) -> LambdaLR:
    return _factor_schedule("cosine_warmup_with_min_lr", locals())


def get_wsd_schedule(
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_decay_steps: int,
    num_training_steps: int | None = None,
    num_stable_steps: int | None = None,
    warmup_type: str = "linear",
    decay_type: str = "cosine",
    min_lr_ratio: float = 0,
    num_cycles: float = 0.5,
    last_epoch: int = -1,
) -> LambdaLR:
    return _factor_schedule("warmup_stable_decay", locals())


def _plateau_schedule(optimizer: Optimizer, params: Mapping[str, Any]) -> PlateauLR:
    hf_optim_spec.validate("reduce_lr_on_plateau", params, framework="torch", base_lr=_base_lr(optimizer))
    return PlateauLR(optimizer, **params)


def get_reduce_on_plateau_schedule(optimizer: Optimizer, **kwargs: Any) -> ReduceLROnPlateau:
    return _plateau_schedule(optimizer, kwargs)


_STATEFUL: dict[str, Callable[[Optimizer, Mapping[str, Any]], LRScheduler]] = {
    "reduce_lr_on_plateau": _plateau_schedule,
    "greedy": greedy_schedule,
}
"""The builder of each stateful (metric-driven) schedule spec: it checks the arguments once and builds the native
class."""


def get_adafactor_relative_step_schedule(
    optimizer: Optimizer,
    rms: float,
    lr: float | None = None,
    scale_parameter: bool = True,
    relative_step: bool = True,
    warmup_init: bool = False,
    eps2: float = 1e-3,
    last_epoch: int = -1,
) -> LambdaLR:
    arguments = locals()
    optimizer, last_epoch = arguments.pop("optimizer"), arguments.pop("last_epoch")
    scheduler = build_schedule("adafactor_relative_step", optimizer, arguments, last_epoch)
    assert isinstance(scheduler, LambdaLR)
    return scheduler


_TYPE_NAMES = {
    "integer": "int",
    "number": "float",
    "boolean": "bool",
    "string": "str",
    "number_pair": "tuple[float, float]",
    "number_or_list": "float | list[float]",
    "string_list": "list[str]",
    "schedule": "Callable",
}


def _schedule_doc(spec_id: str, extra_args: str = "") -> str:
    """A factory docstring from its spec: summary, Args (every parameter with its default), Returns."""
    spec = hf_optim_spec.get(spec_id)
    lines = [
        spec.summary,
        "",
        "    Args:",
        "        optimizer ([`~torch.optim.Optimizer`]):",
        "            The optimizer whose learning rate the schedule drives.",
    ]
    for name, param in spec.parameters.items():
        default = "" if param.required else f", *optional*, defaults to `{param.default!r}`"
        kind = "Keyword-only. " if param.extension else ""
        type_name = " | ".join(_TYPE_NAMES.get(t, t) for t in param.type_name.split(" | "))
        lines.append(f"        {name} (`{type_name}`{default}):")
        lines.append(f"            {kind}{param.description}")
    if extra_args:
        lines.append(extra_args)
    if spec.constraints or spec.errors:
        lines += [
            "",
            "    Raises:",
            f"        ValueError, TypeError: the spec's errors for invalid arguments (see the spec ``{spec_id}``).",
        ]
    return "\n".join(lines)


for _func, _id in (
    (get_constant_schedule, "constant"),
    (get_constant_schedule_with_warmup, "constant_with_warmup"),
    (get_linear_schedule_with_warmup, "linear"),
    (get_cosine_schedule_with_warmup, "cosine"),
    (get_cosine_with_hard_restarts_schedule_with_warmup, "cosine_with_restarts"),
    (get_polynomial_decay_schedule_with_warmup, "polynomial"),
    (get_inverse_sqrt_schedule, "inverse_sqrt"),
    (get_cosine_with_min_lr_schedule_with_warmup, "cosine_with_min_lr"),
    (get_cosine_with_min_lr_schedule_with_warmup_lr_rate, "cosine_warmup_with_min_lr"),
    (get_wsd_schedule, "warmup_stable_decay"),
    (get_adafactor_relative_step_schedule, "adafactor_relative_step"),
):
    _func.__doc__ = _schedule_doc(_id, f"        {_docs.LAST_EPOCH}") + f"\n\n    {_docs.SCHEDULE_RETURNS}\n"
get_reduce_on_plateau_schedule.__doc__ = (
    _schedule_doc("reduce_lr_on_plateau")
    + "\n\n    Returns:\n        `torch.optim.lr_scheduler.ReduceLROnPlateau` with the validated arguments.\n"
)
get_greedy_schedule.__doc__ = (
    _schedule_doc("greedy")
    + "\n\n    Returns:\n        :class:`GreedyLR` with the validated arguments; call ``scheduler.step(metric)`` after each"
    " evaluation.\n"
)
