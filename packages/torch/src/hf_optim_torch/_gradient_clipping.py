"""Keras 3 gradient clipping (``clipnorm``, ``global_clipnorm``, ``clipvalue``), as AdamWeightDecay applies it."""

from __future__ import annotations

import torch
from torch import Tensor

from ._low_precision import dtype_scalar

__all__ = ["clip_gradients"]


def clip_gradients(
    grads: list[Tensor],
    *,
    clipnorm: float | None,
    clipvalue: float | None,
    global_clipnorm: float | None,
) -> list[Tensor]:
    """Keras 3 gradient clipping of the present gradients (a bound of None or <= 0 is off); new tensors.

    ``clipnorm`` per tensor: ``g * c / max(norm(g), c)``; else ``global_clipnorm``: every gradient times
    ``c * min(1 / joint_norm, 1 / c)``; else ``clipvalue``: element-wise clamp. No host synchronisation.

    A bound beyond the gradient dtype's range works as the exact formula does: a ``clipnorm`` or
    ``global_clipnorm`` above its largest value leaves every gradient of finite norm as it is (Keras' cast of the
    bound to an infinity would make NaNs), ``1 / global_clipnorm`` above it is capped at it, and ``clipvalue`` is
    rounded to the dtype.
    """
    if clipnorm and clipnorm > 0:
        out = []
        for g in grads:
            if clipnorm > torch.finfo(g.dtype).max:  # every representable norm is below the bound
                out.append(g)
                continue
            l2sum = (g * g).sum()
            l2norm = torch.where(l2sum > 0, l2sum.sqrt(), l2sum)
            out.append((g * clipnorm) / torch.clamp(l2norm, min=clipnorm))
        return out
    if global_clipnorm and global_clipnorm > 0:
        total: Tensor | None = None
        for g in grads:
            partial = (g * g).sum()
            total = partial if total is None else total + partial
        assert total is not None
        use_norm = total.sqrt()
        inverse = torch.where(use_norm > 0, 1.0 / use_norm, torch.full_like(use_norm, float("inf")))
        largest = torch.finfo(use_norm.dtype).max
        if global_clipnorm > largest:  # every representable norm is below the bound: scale 1 (NaN kept)
            scale = (use_norm - use_norm) + 1.0
        else:  # a finite cap: a zero norm (inverse inf) with a bound that rounds to 0 gives 0, not 0 * inf
            cap = min(1.0 / global_clipnorm, largest)
            scale = global_clipnorm * torch.clamp(inverse, max=cap) + (use_norm - use_norm)
        return [g * scale.to(g.dtype) for g in grads]
    if clipvalue and clipvalue > 0:
        return [g.clamp(-bound, bound) for g in grads for bound in (dtype_scalar(clipvalue, g.dtype),)]
    return list(grads)
