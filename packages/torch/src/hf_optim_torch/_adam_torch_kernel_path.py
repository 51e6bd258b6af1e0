"""The ``fused`` path of AdamW and AdamWeightDecay: their tensors swept through torch's fused AdamW kernel.

``torch._fused_adamw_`` makes one pass per tensor. It is given an infinite step (no bias correction of its own)
and the scalars of :func:`._adam_scalars.torch_kernel_scalars`, per group of tensors that share a device, a dtype,
a step and a weight decay. The tensors it cannot take are handed back to the caller's other paths.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from ._groups_call import by_part, first_at_least
from ._path_choice import LayoutCache, fused_eligible
from ._torch_fused_adam import saturated_step

__all__ = ["AdamTensors", "kernel_lr", "kernel_parts", "torch_kernel_path"]


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


def kernel_parts(
    tensors: AdamTensors,
    parts: Sequence[int],
    runs: list[bool],
    run: Callable[[AdamTensors, list[int], list[int], list[int] | None], list[int]],
) -> list[int]:
    """``run(tensors, parts, kept, picked)``, the kernel path over the parts ``kept`` (whose tensors are those at
    ``picked`` in ``tensors``; None: all of them), over every part when the kernel can run each (``runs[k]``), else
    over the parts it can run only (a copy of their lists). Returns the indices the kernel left, in order, the other
    parts' included."""
    if all(runs):
        return run(tensors, list(parts), list(range(len(parts))), None)
    everything = list(range(len(tensors.params)))
    kept = [part for part, runs_part in enumerate(runs) if runs_part]
    if not kept:
        return everything
    picked = [i for part, indices in by_part(everything, parts) if runs[part] for i in indices]
    left = run(tensors.pick(picked), [parts[part] for part in kept], kept, picked)
    taken = set(picked).difference(picked[j] for j in left)
    return [i for i in everything if i not in taken]


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


#: (device, step, decayed, part) -> the kernel's numbers for the tensors of that part (param group) with that step and
#: decay: ``lr``, ``weight_decay``, ``eps``, ``beta1``, ``beta2``
KernelScalars = Callable[[torch.device, float, bool, int], dict[str, float]]


def torch_kernel_path(
    tensors: AdamTensors,
    *,
    strict: bool,
    dtypes: tuple[torch.dtype, ...],
    steps: Callable[[list[Tensor]], list[float]],
    decayed: list[bool] | None,
    scalars: KernelScalars,
    maximize: bool,
    parts: Sequence[int] | None = None,
    cache: LayoutCache[KernelBuckets] | None = None,
) -> list[int]:
    """Step the parameters the kernel can take; return the indices of the others, in order.

    ``steps`` reads (and, for AdamW, advances) the step tensors of the parameters the kernel takes and returns the
    step ``t`` of this update for each; ``decayed[i]`` says whether parameter ``i`` is decayed (None: every one is);
    ``parts`` are the lengths of the consecutive parts of the lists that have hyperparameters of their own (the
    param groups of a call; None: one part); ``scalars`` gives the kernel's numbers for a device, step, decay and
    part. Each part's tensors with one step and decay are one kernel call (the usual case: one call per part). With
    ``strict`` (``fused=True``) a parameter the kernel cannot take (see :func:`fused_eligible`) is a RuntimeError.
    ``cache`` keeps that decision while the tensors' layouts stay the same (see :class:`LayoutCache`).
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
    count = len(params)
    ends, end = [], 0  # where each part ends
    for length in parts if parts is not None else [count]:
        end += length
        ends.append(end)
    constant = {"amsgrad": amsgrad, "maximize": maximize}
    for device, indices in buckets:
        whole = len(indices) == count  # every parameter, in order (the usual case: its lists are used as they are)
        values = steps(tensors.state_steps if whole else [tensors.state_steps[i] for i in indices])
        flags = [True] * len(indices) if decayed is None else [decayed[i] for i in indices]
        first = 0  # the positions in ``indices`` of the part's tensors: first to last
        for part, end in enumerate(ends):
            last = end if whole else first_at_least(indices, end, first)
            if first == last:
                continue
            by_step: dict[tuple[float, bool], list[int] | range] = {}
            every = first == 0 and last == len(values)  # (no copies of the lists for a call of one part)
            if (
                len(set(values if every else values[first:last])) == 1
                and len(set(flags if every else flags[first:last])) == 1
            ):
                by_step[values[first], flags[first]] = range(first, last)  # one step and decay: one kernel call
            else:
                for position in range(first, last):
                    by_step.setdefault((values[position], flags[position]), []).append(position)
            for (t, decays), positions in by_step.items():
                lists: list[list[Tensor]] = [params, grads, exp_avgs, exp_avg_sqs] + ([maxes] if amsgrad else [])
                if whole and isinstance(positions, range):
                    if len(positions) != count:
                        lists = [tensors[positions.start : positions.stop] for tensors in lists]
                else:
                    picked = [indices[position] for position in positions]
                    lists = [[tensors[i] for i in picked] for tensors in lists]
                moments = [*lists[:4], lists[4] if amsgrad else []]
                kernel = scalars(device, t, decays, part)
                torch._fused_adamw_(*moments, [saturated_step(device)] * len(positions), **kernel, **constant)
            first = last
    return rest
