"""The scalar math of AdamW and AdamWeightDecay, written once for every torch path.

Each path (for-loop, multi-tensor, torch's fused kernel, the float32 compute of 16-bit parameters) only decides
how the tensors are swept; the numbers it scales them by come from here:

- :func:`bias_corrected_step_size`: Adam's step size ``lr * sqrt(1 - beta2**t) / (1 - beta1**t)``, the two bias
  corrections folded into it. The same expression runs on Python floats (the fused path, from the host mirror of
  the step) and on tensors (the for-loop and multi-tensor paths, from the step tensor: no host synchronisation;
  the for-loop makes it once per step value). The two can differ in the last bit (torch's float64 ``sqrt`` is not
  always ``math.sqrt``'s), so each path keeps to one.
- :func:`adamw_step_size` and :func:`adamw_decay`: AdamW's step size (``lr`` without ``correct_bias``) and the
  factor of its decoupled weight decay, ``lr * weight_decay`` (transformers decays for a positive rate only).
- :func:`adam_weight_decay_factors`: AdamWeightDecay's hyperparameters cast to the parameter dtype first, as
  TensorFlow does, with the step size of the cast values.
- :func:`torch_kernel_scalars`: the ``lr``, ``weight_decay``, ``eps`` (and betas) that make torch's fused AdamW kernel
  compute either update, including the correction for a kernel that rounds its moment weights (CUDA).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import NamedTuple, TypeVar

import torch
from torch import Tensor

from ._path_choice import capturing, compiling
from ._torch_fused_adam import kernel_moment_ratios

__all__ = [
    "AdamWeightDecayFactors",
    "adam_weight_decay_factors",
    "adamw_decay",
    "adamw_step_size",
    "bias_corrected_step_size",
    "once_per_key",
    "reads_host_steps",
    "torch_kernel_scalars",
]

Number = TypeVar("Number", float, Tensor)
Made = TypeVar("Made")


def reads_host_steps(lr: float | Tensor, steps: Sequence[Tensor]) -> bool:
    """Whether a for-loop may key its scalars on the steps' host values (``._step_count``'s mirror): not under
    ``torch.compile`` (a host value would be a constant of the graph), with a tensor ``lr`` (the configuration for
    captured steps, where no host value may be read), nor while the step is captured into a CUDA graph (the
    replays advance the counters without the mirror)."""
    return not isinstance(lr, Tensor) and not compiling() and not capturing(steps)


def once_per_key(make: Callable[[int], Made], keys: list[Hashable] | None, count: int) -> list[Made]:
    """``[make(i) for i in range(count)]``, with ``make`` called once per distinct ``keys[i]`` (a step's host value and
    what else the result depends on) and its result shared by the indices with that key; called for every index
    when ``keys`` is None. The for-loops' scalars are 0-dim tensor results of about ten operations each, the same
    for every parameter at one step: made once, the same bits at a fraction of the cost (10M bfloat16 parameters in
    ~200 tensors, AdamW: about 10 of 45 ms a step)."""
    if keys is None:
        return [make(i) for i in range(count)]
    made: dict[Hashable, Made] = {}
    for i, key in enumerate(keys):
        if key not in made:
            made[key] = make(i)
    return [made[key] for key in keys]


def _sqrt(x: Number) -> Number:
    return x.sqrt() if isinstance(x, Tensor) else math.sqrt(x)  # type: ignore[return-value]


def bias_corrected_step_size(
    lr: float | Tensor, beta1: float | Tensor, beta2: float | Tensor, t: float | Tensor
) -> float | Tensor:
    """``lr * sqrt(1 - beta2**t) / (1 - beta1**t)``: Adam's step size at step ``t`` (1 at the first update).

    Floats give a float; a tensor ``t`` (or tensor betas) gives a tensor of its shape and dtype.
    """
    return lr * _sqrt(1.0 - beta2**t) / (1.0 - beta1**t)  # type: ignore[operator]


def adamw_step_size(
    lr: float | Tensor, beta1: float, beta2: float, t: float | Tensor, correct_bias: bool
) -> float | Tensor:
    """AdamW's step size: bias corrected, or the plain ``lr`` when ``correct_bias`` is off (the BERT optimizer).

    A tensor ``t`` is taken in float64, the precision of transformers' Python-float bias corrections.
    """
    if not correct_bias:
        return lr
    if isinstance(t, Tensor):
        t = t.to(torch.float64)
    return bias_corrected_step_size(lr, beta1, beta2, t)


def adamw_decay(lr: float | Tensor, weight_decay: float) -> float | Tensor | None:
    """The factor AdamW's decoupled weight decay shrinks a parameter by, after the update: ``lr * weight_decay``.

    None when there is none: transformers decays only for ``weight_decay > 0``.
    """
    return lr * weight_decay if weight_decay > 0.0 else None


class AdamWeightDecayFactors(NamedTuple):
    """AdamWeightDecay's per-step numbers as 0-dim tensors in the parameter dtype."""

    lr: Tensor
    step_size: Tensor
    one_minus_beta_1: Tensor
    one_minus_beta_2: Tensor


def adam_weight_decay_factors(
    lr: float | Tensor, beta_1: float, beta_2: float, step: Tensor, like: Tensor
) -> AdamWeightDecayFactors:
    """The hyperparameters cast to ``like``'s dtype (TF casts them first) and the step size of the cast values.

    ``step`` holds the optimizer-wide count before this update, which is step ``step + 1``.
    """
    dtype, device = like.dtype, like.device
    # torch.full, not torch.tensor: a fill on the device (the same rounding), where torch.tensor copies from the host,
    # which a CUDA graph cannot capture
    lr_t = (
        lr.to(device=device, dtype=dtype) if isinstance(lr, Tensor) else torch.full((), lr, dtype=dtype, device=device)
    )
    b1 = torch.full((), beta_1, dtype=dtype, device=device)
    b2 = torch.full((), beta_2, dtype=dtype, device=device)
    t = (step + 1).to(dtype)
    step_size = bias_corrected_step_size(lr_t, b1, b2, t)
    return AdamWeightDecayFactors(lr_t, step_size, 1.0 - b1, 1.0 - b2)  # type: ignore[arg-type]


def torch_kernel_scalars(
    device: torch.device,
    *,
    step_size: float,
    decay: float,
    decay_first: bool,
    beta1: float,
    beta2: float,
    eps: float,
    t: float,
) -> dict[str, float]:
    """The numbers torch's fused AdamW kernel takes at step ``t``, given no step count of its own: its ``lr``,
    ``weight_decay``, ``eps``, ``beta1`` and ``beta2`` keyword arguments.

    With an infinite step the kernel computes ``p (1 - lr' wd') - lr' m / (sqrt(v) + eps')``. An update
    ``p - step_size m / (sqrt(v) + eps)`` with the decay ``p (1 - decay)`` before it (``decay_first``, AdamWeightDecay)
    is that with ``lr' = step_size``; with the decay after it (AdamW) the whole update is scaled by ``1 - decay``,
    so ``lr' = step_size (1 - decay)``; either way ``wd' = decay / lr'``. Where the kernel's moments differ from
    transformers' by the ratios of :func:`kernel_moment_ratios` (q, r), the step size is scaled by ``sqrt(r) / q``
    and ``eps`` by ``sqrt(r)``.
    """
    q, r = kernel_moment_ratios(device, beta1, beta2, t)  # (1, 1) on CPU
    kernel_step = step_size * math.sqrt(r) / q
    kernel_lr = kernel_step if decay_first else kernel_step * (1.0 - decay)
    kernel_decay = decay / kernel_lr if decay != 0.0 and kernel_lr != 0.0 else 0.0
    return {"lr": kernel_lr, "weight_decay": kernel_decay, "eps": eps * math.sqrt(r), "beta1": beta1, "beta2": beta2}
