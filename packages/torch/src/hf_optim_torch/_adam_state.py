"""The per-parameter state of AdamW and AdamWeightDecay: its layout, and its creation at the first step."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ._state_check import COUNTER, Slot
from ._step_count import as_step_tensor

__all__ = ["adam_slots", "adam_state"]


def adam_slots(param: Tensor, amsgrad: bool = False) -> dict[str, Slot]:
    """What a stepped parameter holds: ``step``, ``exp_avg``, ``exp_avg_sq`` and, with amsgrad, ``max_exp_avg_sq``."""
    shape = tuple(param.shape)
    slots = {"step": COUNTER, "exp_avg": Slot(shape), "exp_avg_sq": Slot(shape, nonnegative=True)}
    if amsgrad:
        slots["max_exp_avg_sq"] = Slot(shape, nonnegative=True)
    return slots


def adam_state(state: dict[str, Any], param: Tensor, amsgrad: bool = False) -> dict[str, Any]:
    """``state`` (the optimizer's entry for ``param``) with every slot present and the step next to the parameter.

    A new state starts at step 0 with zero moments. A loaded step may be a Python int (transformers checkpoints) or
    a tensor on another device (``torch.load``): it becomes a tensor on the parameter's device.
    """
    if len(state) == 0:
        state["step"] = as_step_tensor(0, param)
        state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    else:
        state["step"] = as_step_tensor(state["step"], param)
    if amsgrad and "max_exp_avg_sq" not in state:
        state["max_exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
    return state
