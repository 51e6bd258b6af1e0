"""torch's fused Adam kernel as AdamW and AdamWeightDecay use it: what it accepts and how it rounds its weights."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ._low_precision import LOW_PRECISION

__all__ = ["fused_problem", "kernel_moment_ratios", "saturated_step"]

_SATURATED: dict[torch.device, torch.Tensor] = {}


def fused_problem(param: torch.Tensor, group: Mapping[str, Any], dtypes: tuple[torch.dtype, ...]) -> str | None:
    """Why the fused AdamW kernel cannot take ``param`` (with its gradient) in ``group``; None when it can.

    A 16-bit parameter of a group with ``fp32_math`` reaches the kernel as a float32 copy.
    """
    lr = group.get("lr")
    if isinstance(lr, torch.Tensor) and (lr.device.type != "cpu" or lr.numel() != 1):
        return "it needs a float lr or a one-element CPU tensor lr"
    grad = param.grad
    dtype = torch.float32 if group.get("fp32_math") and param.dtype in LOW_PRECISION else param.dtype
    if type(param) not in (torch.Tensor, torch.nn.Parameter) or param.device.type not in ("cpu", "cuda"):
        return f"it supports plain CPU/CUDA tensors; got a {type(param).__name__} on {param.device.type}"
    if dtype not in dtypes:
        return f"it supports {', '.join(str(d) for d in dtypes)} tensors; got {param.dtype}"
    if grad is None or grad.dtype != param.dtype or grad.shape != param.shape or grad.device != param.device:
        return "the gradient must match the parameter's dtype, shape and device"
    if any(t.layout != torch.strided or not t.is_contiguous() for t in (param, grad)):
        return "it supports dense contiguous tensors"
    return None


def saturated_step(device: torch.device) -> torch.Tensor:
    """A float32 ``inf`` step for torch's fused Adam kernels: ``1 - beta**inf == 1``, so they skip bias correction."""
    tensor = _SATURATED.get(device)
    if tensor is None:
        tensor = torch.tensor(float("inf"), dtype=torch.float32, device=device)
        _SATURATED[device] = tensor
    return tensor


#: (device, beta1, beta2) -> the weights torch's fused Adam kernel gives a new gradient in m and in v there, each
#: None where it is ``1 - beta`` rounded once (no correction needed)
_KERNEL_WEIGHTS: dict[tuple[torch.device, float, float], tuple[float | None, float | None]] = {}


def _kernel_weights(device: torch.device, beta1: float, beta2: float) -> tuple[float | None, float | None]:
    """``(w1, w2)``: what torch's fused Adam kernel on ``device`` computes for ``1 - beta1`` and ``1 - beta2``.

    Read from the kernel itself, once per device and betas: one call on one element with ``m = v = 0`` and
    ``g = 1`` leaves ``m = w1`` and ``v = w2`` (one device read). The CPU kernel forms ``1 - beta`` in double
    precision (both None); torch's CUDA kernel rounds ``beta`` to float32 first, so that
    ``w2 = 1 - float32(0.999)`` is ``1.3e-5`` below ``0.001``.
    """
    key = (device, beta1, beta2)
    weights = _KERNEL_WEIGHTS.get(key)
    if weights is None:
        probe = [torch.zeros(1, device=device) for _ in range(3)]
        torch._fused_adamw_(
            [probe[0]],
            [torch.ones(1, device=device)],
            [probe[1]],
            [probe[2]],
            [],
            [saturated_step(device)],
            lr=0.0,
            beta1=beta1,
            beta2=beta2,
            weight_decay=0.0,
            eps=1.0,
            amsgrad=False,
            maximize=False,
        )
        measured = ((float(probe[1]), beta1), (float(probe[2]), beta2))
        w1, w2 = (None if w == float(np.float32(1.0 - beta)) else w for w, beta in measured)
        weights = _KERNEL_WEIGHTS[key] = (w1, w2)
    return weights


def _one_minus_power(weight: float, t: float) -> float:
    """``1 - (1 - weight)**t`` without cancellation."""
    return 1.0 if weight >= 1.0 else -math.expm1(t * math.log1p(-weight))


def kernel_moment_ratios(device: torch.device, beta1: float, beta2: float, t: float) -> tuple[float, float]:
    """``(q, r)``: the first and second moments torch's fused Adam kernel holds at step ``t``, over transformers'.

    Where the kernel weighs a new gradient by ``w = 1 - b`` for some ``b`` other than ``beta`` (CUDA: ``b`` is
    float32(``beta``)), its moments are exponential averages in ``b``: ``m_k = (1 - b1**t) / (1 - beta1**t) * m``
    and likewise ``v_k = r v``, up to ``|b - beta| * t`` (1.3e-8 per step for 0.999). A fused step then passes
    ``step_size * sqrt(r) / q`` and ``eps * sqrt(r)``, which gives transformers' update from the kernel's moments.
    ``(1.0, 1.0)`` where the kernel's weights are ``1 - beta`` rounded once (CPU).
    """
    w1, w2 = _kernel_weights(device, beta1, beta2)
    q = 1.0 if w1 is None else _one_minus_power(w1, t) / _one_minus_power(1.0 - beta1, t)
    r = 1.0 if w2 is None else _one_minus_power(w2, t) / _one_minus_power(1.0 - beta2, t)
    return q, r
