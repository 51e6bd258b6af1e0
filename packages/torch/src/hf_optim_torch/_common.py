"""Helpers shared by the optimizer shells: spec validation, step counters, code-path choice."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import hf_optim_spec
import torch

__all__ = [
    "as_step_tensor",
    "plain_number",
    "spec_validate",
    "use_foreach",
]

#: dtype of the per-parameter ``state["step"]`` counter (torch.optim's convention: exact up to 2**24 steps).
STEP_DTYPE = torch.float32


def plain_number(value: object) -> object:
    """Return a one-element tensor as a Python number (construction-time validation only)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value


def spec_validate(spec_id: str, params: Mapping[str, object]) -> dict[str, Any]:
    """Validate constructor arguments against the spec, spelled as a torch user spells them.

    Tensor hyperparameters (e.g. a tensor ``lr``) are validated through their value; the caller keeps the tensor.
    """
    plain = {name: plain_number(value) for name, value in params.items()}
    return dict(hf_optim_spec.validate(spec_id, plain, framework="torch"))


def as_step_tensor(value: object, like: torch.Tensor) -> torch.Tensor:
    """``state["step"]`` as a tensor on the parameter's device.

    transformers stores the step as a Python int; torch.optim as a CPU tensor. Both load, and the counter is
    moved next to the parameter so that ``step`` never synchronises with the host.
    """
    if isinstance(value, torch.Tensor):
        if value.device != like.device or value.dtype != STEP_DTYPE:
            return value.to(device=like.device, dtype=STEP_DTYPE)
        return value
    return torch.tensor(float(value), dtype=STEP_DTYPE, device=like.device)  # type: ignore[arg-type]


def use_foreach(foreach: bool | None, params: list[torch.Tensor]) -> bool:
    """The multi-tensor path by default on accelerators only.

    On CPU a per-tensor pass stays in cache while each foreach op streams every tensor through memory, so the
    for-loop is the faster default there.
    """
    if foreach is not None:
        return bool(foreach)
    if torch.jit.is_scripting() or not params:
        return False
    return all(p.device.type not in ("cpu", "meta") and type(p) is torch.Tensor for p in params)
