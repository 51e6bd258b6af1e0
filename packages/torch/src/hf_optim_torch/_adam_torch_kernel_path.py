"""The ``fused`` path of AdamW and AdamWeightDecay: their tensors swept through torch's fused AdamW kernel.

``torch._fused_adamw_`` makes one pass per tensor. It is given an infinite step (no bias correction of its own)
and the scalars of :func:`._adam_scalars.torch_kernel_scalars`, per group of tensors that share a device, a dtype,
a step and a weight decay. The tensors it cannot take are handed back to the caller's other paths.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor

from ._path_choice import LayoutCache, fused_eligible
from ._torch_fused_adam import saturated_step

__all__ = ["AdamTensors", "kernel_lr", "torch_kernel_path"]


class AdamTensors(NamedTuple):
    """The aligned tensor lists of one Adam call, one entry per parameter (``max_exp_avg_sqs`` empty without amsgrad)."""

    params: list[Tensor]
    grads: list[Tensor]
    exp_avgs: list[Tensor]
    exp_avg_sqs: list[Tensor]
    max_exp_avg_sqs: list[Tensor]
    state_steps: list[Tensor]

    def pick(self, indices: list[int]) -> AdamTensors:
        """The tensors of the parameters at ``indices``, in that order."""
        return AdamTensors(*([lst[i] for i in indices] if lst else lst for lst in self))


def kernel_lr(lr: float | Tensor, strict: bool) -> float | None:
    """The lr as the Python float the kernel takes; None for a tensor lr it cannot read without a device sync.

    Raises a RuntimeError instead when ``strict`` (``fused=True``).
    """
    if not isinstance(lr, Tensor):
        return lr
    if lr.device.type != "cpu" or lr.numel() != 1:
        if strict:
            raise RuntimeError("fused=True needs a float lr or a one-element CPU tensor lr")
        return None
    return float(lr)


class KernelBuckets(NamedTuple):
    """Which parameters the kernel takes, one list per device and dtype (indices into the call's lists), and which
    it leaves."""

    by_device: list[tuple[torch.device, list[int]]]
    rest: list[int]


#: (device, step, decayed) -> the kernel's (lr, weight_decay, eps)
KernelScalars = Callable[[torch.device, float, bool], tuple[float, float, float]]


def torch_kernel_path(
    tensors: AdamTensors,
    *,
    strict: bool,
    dtypes: tuple[torch.dtype, ...],
    steps: Callable[[list[Tensor]], list[float]],
    decayed: list[bool] | None,
    scalars: KernelScalars,
    beta1: float,
    beta2: float,
    maximize: bool,
    cache: LayoutCache[KernelBuckets] | None = None,
) -> list[int]:
    """Step the parameters the kernel can take; return the indices of the others, in order.

    ``steps`` reads (and, for AdamW, advances) the step tensors of the parameters the kernel takes and returns the
    step ``t`` of this update for each; ``decayed[i]`` says whether parameter ``i`` is decayed (None: every one is);
    ``scalars`` gives the kernel's numbers for a device, step and decay. With ``strict`` (``fused=True``) a parameter
    the kernel cannot take (see :func:`fused_eligible`) is a RuntimeError. ``cache`` keeps that decision while the
    tensors' layouts stay the same (see :class:`LayoutCache`).
    """
    amsgrad = bool(tensors.max_exp_avg_sqs)
    params, grads, exp_avgs, exp_avg_sqs, maxes, _ = tensors
    checked = [params, grads, exp_avgs, exp_avg_sqs] + ([maxes] if amsgrad else [])

    def decide() -> KernelBuckets:
        buckets: dict[tuple[torch.device, torch.dtype], list[int]] = {}
        rest: list[int] = []
        for i, param in enumerate(params):
            if fused_eligible(param, *(tensors[i] for tensors in checked[1:]), dtypes=dtypes):
                buckets.setdefault((param.device, param.dtype), []).append(i)  # one dtype per kernel call
            else:
                rest.append(i)
        return KernelBuckets([(device, indices) for (device, _), indices in buckets.items()], rest)

    buckets, rest = cache.decide(checked, decide) if cache is not None else decide()
    if strict and rest:
        names = "/".join(str(dtype).removeprefix("torch.") for dtype in dtypes)
        got = sorted({(str(tensors.params[i].dtype), tensors.params[i].device.type) for i in rest})
        raise RuntimeError(f"fused=True supports dense contiguous {names} tensors on CPU or CUDA; got {got}")
    constant = {"beta1": beta1, "beta2": beta2, "amsgrad": amsgrad, "maximize": maximize}
    count = len(params)
    for device, indices in buckets:
        whole = len(indices) == count  # every parameter, in order (the usual case: its lists are used as they are)
        values = steps(tensors.state_steps if whole else [tensors.state_steps[i] for i in indices])
        flags = [True] * len(indices) if decayed is None else [decayed[i] for i in indices]
        by_step: dict[tuple[float, bool], list[int]] = {}
        if len(set(values)) == 1 and len(set(flags)) == 1:  # one step and one decay for all: one kernel call
            by_step[values[0], flags[0]] = indices
        else:
            for i, key in zip(indices, zip(values, flags)):
                by_step.setdefault(key, []).append(i)
        for (t, decays), group in by_step.items():
            lr, weight_decay, eps = scalars(device, t, decays)
            picked = [params, grads, exp_avgs, exp_avg_sqs] + ([maxes] if amsgrad else [])
            if len(group) != count:
                picked = [[lst[i] for i in group] for lst in picked]
            lists = [*picked[:4], picked[4] if amsgrad else [], [saturated_step(device)] * len(group)]
            torch._fused_adamw_(*lists, lr=lr, weight_decay=weight_decay, eps=eps, **constant)
    return rest
