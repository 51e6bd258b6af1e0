"""``AdafactorSchedule``: the proxy scheduler that reports the lr :class:`hf_optim_torch.Adafactor` computes itself."""

from __future__ import annotations

from typing import Any

from torch.optim import Optimizer

from ._arguments import check_optimizer
from ._lr_schedulers import SpecFactorLR

__all__ = ["AdafactorSchedule", "get_adafactor_schedule"]


class AdafactorSchedule(SpecFactorLR):
    """Proxy scheduler for :class:`hf_optim_torch.Adafactor` (transformers' ``AdafactorSchedule``).

    Adafactor computes its own learning rate; this scheduler reports it (for logging, or for a ``Trainer`` that
    needs a scheduler). It returns ``initial_lr`` before the first step and the optimizer's current lr after.
    :meth:`hf_optim_torch.Adafactor.get_lr` reads the same values without a scheduler.

    Args:
        optimizer (`Adafactor`): The optimizer whose learning rate is reported.
        initial_lr (`float`, *optional*, defaults to 0.0): The value reported before the first step.
    """

    def __init__(self, optimizer: Optimizer, initial_lr: float = 0.0) -> None:
        check_optimizer(optimizer)
        for group in optimizer.param_groups:
            group["initial_lr"] = initial_lr
        super().__init__(optimizer, _ConstantFactor(initial_lr))
        for group in optimizer.param_groups:
            del group["initial_lr"]

    def get_lr(self) -> list[Any]:  # type: ignore[override]
        opt = self.optimizer
        lrs = [
            opt._get_lr(group, opt.state[group["params"][0]])  # type: ignore[attr-defined]
            for group in opt.param_groups
            if group["params"][0].grad is not None and "step" in opt.state[group["params"][0]]
        ]
        if len(lrs) == 0:
            lrs = self.base_lrs
        return lrs


class _ConstantFactor:
    """A picklable constant multiplier (plain data in ``__dict__``)."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self, step: int) -> float:
        return self.value


def get_adafactor_schedule(optimizer: Optimizer, initial_lr: float = 0.0) -> AdafactorSchedule:
    """Get a proxy schedule for :class:`hf_optim_torch.Adafactor`.

    Args:
        optimizer (`torch.optim.Optimizer`): The optimizer whose learning rate the schedule drives.
        initial_lr (`float`, *optional*, defaults to 0.0): Initial lr.

    Returns:
        :class:`AdafactorSchedule` proxy schedule object.
    """
    return AdafactorSchedule(optimizer, initial_lr)
