"""transformers' schedule factories for Keras (``learning_rate`` where torch takes ``optimizer``), ``SchedulerType``
and ``get_scheduler``.

Each factory only carries transformers' name and signature: the schedule is a :class:`SpecSchedule` of its spec
(or, for the metric-driven ones, :class:`PlateauSchedule` / :class:`GreedySchedule`), which checks the arguments.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Any

import hf_optim_spec as hs
import keras
from hf_optim_spec._schedules import scheduler_arguments, scheduler_type_members

from ._greedy import get_greedy_schedule
from ._plateau import get_reduce_on_plateau_schedule
from ._schedules import SpecSchedule


def _make(spec_id: str, arguments: dict[str, Any]) -> SpecSchedule:
    """The one builder behind every factory; ``arguments`` is the factory's ``locals()``."""
    learning_rate = arguments.pop("learning_rate")
    return SpecSchedule(spec_id, learning_rate, arguments)


def get_constant_schedule(learning_rate: float) -> SpecSchedule:
    """Constant learning rate (transformers ``get_constant_schedule``)."""
    return _make("constant", locals())


def get_constant_schedule_with_warmup(learning_rate: float, num_warmup_steps: int) -> SpecSchedule:
    """Linear warmup from 0, then constant (``get_constant_schedule_with_warmup``)."""
    return _make("constant_with_warmup", locals())


def get_linear_schedule_with_warmup(
    learning_rate: float, num_warmup_steps: int, num_training_steps: int
) -> SpecSchedule:
    """Linear warmup, then linear decay to 0 (``get_linear_schedule_with_warmup``)."""
    return _make("linear", locals())


def get_cosine_schedule_with_warmup(
    learning_rate: float,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 0.5,
    *,
    clamp_progress: bool = False,
) -> SpecSchedule:
    """Linear warmup, then cosine decay (``get_cosine_schedule_with_warmup``).

    ``clamp_progress=True`` (extension) holds the end value past ``num_training_steps`` instead of
    transformers' rebound."""
    return _make("cosine", locals())


def get_cosine_with_hard_restarts_schedule_with_warmup(
    learning_rate: float, num_warmup_steps: int, num_training_steps: int, num_cycles: int = 1
) -> SpecSchedule:
    """Linear warmup, then cosine decay with hard restarts
    (``get_cosine_with_hard_restarts_schedule_with_warmup``)."""
    return _make("cosine_with_restarts", locals())


def get_polynomial_decay_schedule_with_warmup(
    learning_rate: float, num_warmup_steps: int, num_training_steps: int, lr_end: float = 1e-7, power: float = 1.0
) -> SpecSchedule:
    """Linear warmup, then polynomial decay to ``lr_end``
    (``get_polynomial_decay_schedule_with_warmup``)."""
    return _make("polynomial", locals())


def get_inverse_sqrt_schedule(
    learning_rate: float, num_warmup_steps: int, timescale: int | None = None
) -> SpecSchedule:
    """Linear warmup, then inverse square-root decay (``get_inverse_sqrt_schedule``)."""
    return _make("inverse_sqrt", locals())


def get_cosine_with_min_lr_schedule_with_warmup(
    learning_rate: float,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 0.5,
    min_lr: float | None = None,
    min_lr_rate: float | None = None,
    *,
    clamp_progress: bool = False,
) -> SpecSchedule:
    """Linear warmup, then cosine decay to a minimum lr
    (``get_cosine_with_min_lr_schedule_with_warmup``); ``clamp_progress`` is an extension."""
    return _make("cosine_with_min_lr", locals())


def get_cosine_with_min_lr_schedule_with_warmup_lr_rate(
    learning_rate: float,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 0.5,
    min_lr: float | None = None,
    min_lr_rate: float | None = None,
    warmup_lr_rate: float | None = None,
    *,
    clamp_progress: bool = False,
) -> SpecSchedule:
    """Warmup from a start rate, then cosine decay to a minimum lr
    (``get_cosine_with_min_lr_schedule_with_warmup_lr_rate``); ``clamp_progress`` is an extension."""
    return _make("cosine_warmup_with_min_lr", locals())


def get_wsd_schedule(
    learning_rate: float,
    num_warmup_steps: int,
    num_decay_steps: int,
    num_training_steps: int | None = None,
    num_stable_steps: int | None = None,
    warmup_type: str = "linear",
    decay_type: str = "cosine",
    min_lr_ratio: float = 0,
    num_cycles: float = 0.5,
) -> SpecSchedule:
    """Warmup, stable, decay (``get_wsd_schedule``)."""
    return _make("warmup_stable_decay", locals())


# --------------------------------------------------------------------------- SchedulerType, get_scheduler


SchedulerType = enum.Enum("SchedulerType", scheduler_type_members(), type=str, module=__name__)  # type: ignore[misc]
SchedulerType.__doc__ = "transformers' ``SchedulerType``: the names ``get_scheduler`` accepts (the spec ids)."

_FACTORY_FUNCTIONS = (
    get_constant_schedule,
    get_constant_schedule_with_warmup,
    get_linear_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_cosine_with_hard_restarts_schedule_with_warmup,
    get_polynomial_decay_schedule_with_warmup,
    get_inverse_sqrt_schedule,
    get_cosine_with_min_lr_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup_lr_rate,
    get_wsd_schedule,
    get_reduce_on_plateau_schedule,
    get_greedy_schedule,
)
#: the factory of each ``SchedulerType`` member, by spec id (``spec.api["tf"]`` names it)
_FACTORIES: dict[str, Callable[..., Any]] = {
    member.value: {f.__name__: f for f in _FACTORY_FUNCTIONS}[hs.get(member.value).api["tf"]]
    for member in SchedulerType
}


def get_scheduler(
    name: str | SchedulerType,
    learning_rate: float,
    num_warmup_steps: int | None = None,
    num_training_steps: int | None = None,
    scheduler_specific_kwargs: dict[str, Any] | None = None,
) -> keras.optimizers.schedules.LearningRateSchedule:
    """Any schedule by its ``SchedulerType`` name (transformers ``get_scheduler``, Keras flavour).

    Which of ``num_warmup_steps`` / ``num_training_steps`` a schedule takes, and whether it
    requires them, comes from its spec parameters (transformers' own rules, read from the
    spec instead of a string ladder): ``constant`` ignores both, ``reduce_lr_on_plateau`` takes
    only ``scheduler_specific_kwargs``. An explicit step count wins over the same key in
    ``scheduler_specific_kwargs``.

    Raises:
        ValueError: unknown name, or a required step count is missing (transformers' message).
    """
    kind = SchedulerType(name)
    spec = hs.get(kind.value)
    factory = _FACTORIES[kind.value]
    return factory(
        learning_rate,
        **scheduler_arguments(spec, kind.name, num_warmup_steps, num_training_steps, scheduler_specific_kwargs),
    )
