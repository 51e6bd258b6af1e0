"""transformers' ``SchedulerType`` and ``get_scheduler`` for torch, derived from the spec registry."""

from __future__ import annotations

import enum
from typing import Any

import hf_optim_spec
from hf_optim_spec._schedules import scheduler_arguments, scheduler_type_members
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from ._schedule_factories import build_schedule


class _SchedulerTypeBase(str, enum.Enum):
    @classmethod
    def _missing_(cls, value: object) -> Any:
        raise ValueError(
            f"{value} is not a valid {cls.__name__}, please select one of {list(cls._value2member_map_.keys())}"
        )

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, format_spec: str) -> str:
        return format(str(self.value), format_spec)


SchedulerType = _SchedulerTypeBase(  # type: ignore[call-overload]
    "SchedulerType", scheduler_type_members(), module=__name__, qualname="SchedulerType"
)
SchedulerType.__doc__ = (
    "The scheduler names of transformers' ``SchedulerType``, generated from the spec registry "
    "(every schedule spec whose ``hf_name`` lists ``SchedulerType.<NAME>``); the value is the spec id."
)


def get_scheduler(
    name: str | SchedulerType,  # type: ignore[valid-type]
    optimizer: Optimizer,
    num_warmup_steps: int | None = None,
    num_training_steps: int | None = None,
    scheduler_specific_kwargs: dict[str, Any] | None = None,
) -> LRScheduler:
    """Unified API to get any scheduler from its name (transformers' rules, driven by the spec registry).

    Args:
        name (`str` or `SchedulerType`): The name of the scheduler to use.
        optimizer (`torch.optim.Optimizer`): The optimizer that will be used during training.
        num_warmup_steps (`int`, *optional*): The number of warmup steps to do. Passed to schedules that take it;
            a ValueError names it when the schedule requires it and it is None.
        num_training_steps (`int`, *optional*): The number of training steps to do. Same rule.
        scheduler_specific_kwargs (`dict`, *optional*): Extra arguments of the schedule (e.g. ``num_cycles``).
            Every key is forwarded; an unknown key raises the spec's TypeError (transformers silently drops the
            kwargs of constant, constant_with_warmup and inverse_sqrt).

    Returns:
        The scheduler the schedule's factory builds (``LambdaLR``, ``ReduceLROnPlateau`` or :class:`GreedyLR`).

    Raises:
        ValueError: unknown name, or a required count is None
            ("SchedulerType.COSINE requires `num_training_steps`, please provide that argument.").
        TypeError: an argument the schedule does not take.
    """
    kind = SchedulerType(name)  # type: ignore[operator]
    spec = hf_optim_spec.get(kind.value)
    kwargs = scheduler_arguments(
        spec,
        kind.name,
        num_warmup_steps,
        num_training_steps,
        scheduler_specific_kwargs,
        factory_name=spec.api["torch"],
    )
    last_epoch = -1 if spec.stateful else kwargs.pop("last_epoch", -1)  # a stateful one reports it as unknown
    return build_schedule(spec.id, optimizer, kwargs, last_epoch)
