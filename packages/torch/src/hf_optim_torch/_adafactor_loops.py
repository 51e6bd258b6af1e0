"""Adafactor's for-loop and multi-tensor (foreach) paths: every product rounded on its own, in reference order.

These are the paths for float64 parameters, for a tensor ``lr`` and for compiled steps, and the multi-tensor path
also takes the small unfactored tensors of the two-pass path. The scalar math comes from
:mod:`._adafactor_scalars`; here only the tensors are swept.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._adafactor_args import AdafactorOptions, AdafactorTensors
from ._adafactor_scalars import clip_divisor, lr_at, second_moment_decay
from ._low_precision import LOW_PRECISION, store, store_all

__all__ = ["loop_adafactor", "multi_tensor_adafactor"]


def _rms(tensor: Tensor) -> Tensor:
    return torch.linalg.vector_norm(tensor) / (tensor.numel() ** 0.5)


def _factored_update(row: Tensor, col: Tensor, sq_update: Tensor, grad: Tensor, beta2t: Tensor) -> Tensor:
    """Update the factored statistics in place and return rsqrt(row/mean(row)) x rsqrt(col) * grad."""
    row.mul_(beta2t).add_(sq_update.mean(dim=-1).mul_(1.0 - beta2t))
    col.mul_(beta2t).add_(sq_update.mean(dim=-2).mul_(1.0 - beta2t))
    r_factor = (row / row.mean(dim=-1, keepdim=True)).rsqrt_().unsqueeze(-1)
    c_factor = col.unsqueeze(-2).rsqrt()
    return torch.mul(r_factor, c_factor).mul_(grad)


def loop_adafactor(
    tensors: AdafactorTensors, options: AdafactorOptions, rounding_keys: list[int | None] | None = None
) -> None:
    """The for-loop path: one parameter after the other, each op on one tensor."""
    params, grads, state_steps, rms_values, exp_avgs, row_vars, col_vars, full_vars = tensors
    eps, clip_threshold, beta1, weight_decay = options.eps, options.clip_threshold, options.beta1, options.weight_decay
    for i, param in enumerate(params):
        grad = -grads[i] if options.maximize else grads[i]
        step_t = state_steps[i]
        low_precision = param.dtype in LOW_PRECISION
        p32 = param.float() if low_precision else param
        step_t.add_(1)
        rms_values[i].copy_(_rms(p32))
        lr_t = lr_at(options.lr, step_t, rms_values[i], **options.lr_kwargs())
        beta2t = second_moment_decay(step_t, options.decay_rate)
        sq_update = (grad * grad).add_(eps[0])
        row, col, full = row_vars[i], col_vars[i], full_vars[i]
        if row is not None and col is not None:
            update = _factored_update(row, col, sq_update, grad, beta2t)
        else:
            assert full is not None
            full.mul_(beta2t).add_(sq_update.mul_(1.0 - beta2t))
            update = full.rsqrt().mul_(grad)
        update.div_(clip_divisor(_rms(update), clip_threshold))
        exp_avg = exp_avgs[i]
        if exp_avg is not None and options.first_moment == "unscaled":
            exp_avg.mul_(beta1).add_(update.mul_(1.0 - beta1))
            update = exp_avg * lr_t
        else:
            update.mul_(lr_t)
            if exp_avg is not None:
                exp_avg.mul_(beta1).add_(update * (1.0 - beta1))
                update = exp_avg
        if weight_decay != 0.0:
            p32.add_(p32 * (-weight_decay * lr_t))
        p32.sub_(update)
        if low_precision:
            store(param, p32, None if rounding_keys is None else rounding_keys[i])


def multi_tensor_adafactor(
    tensors: AdafactorTensors, options: AdafactorOptions, rounding_keys: list[int | None] | None = None
) -> None:
    """The multi-tensor path: the parameters of one device and dtype together, through ``torch._foreach_*`` ops."""
    params, grads, state_steps, rms_values, exp_avgs, row_vars, col_vars, full_vars = tensors
    eps, clip_threshold, beta1, weight_decay = options.eps, options.clip_threshold, options.beta1, options.weight_decay
    by_device_and_dtype: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, g in enumerate(grads):
        by_device_and_dtype.setdefault((g.device, g.dtype), []).append(i)
    for indices in by_device_and_dtype.values():
        d_params = [params[i] for i in indices]
        d_grads = [grads[i] for i in indices]
        if options.maximize:
            d_grads = torch._foreach_neg(d_grads)
        d_steps = [state_steps[i] for i in indices]
        d_rms = [rms_values[i] for i in indices]
        low = [p.dtype in LOW_PRECISION for p in d_params]
        p32s = [p.float() if is_low else p for p, is_low in zip(d_params, low)]
        sqrt_numels = [p.numel() ** 0.5 for p in p32s]

        torch._foreach_add_(d_steps, 1)
        torch._foreach_copy_(d_rms, torch._foreach_div(torch._foreach_norm(p32s), sqrt_numels))
        steps = torch.stack(d_steps)
        lr_all = lr_at(options.lr, steps, torch.stack(d_rms), **options.lr_kwargs())
        lrs: list[Tensor] | float | Tensor | None = (
            list(lr_all.unbind(0)) if isinstance(lr_all, Tensor) and lr_all.dim() == 1 else lr_all
        )
        beta2ts = list(second_moment_decay(steps, options.decay_rate).unbind(0))

        sq_updates = torch._foreach_mul(d_grads, d_grads)
        torch._foreach_add_(sq_updates, eps[0])
        updates: list[Tensor] = [sq_updates[k] for k in range(len(indices))]
        full_k = [k for k, i in enumerate(indices) if full_vars[i] is not None]
        for k, i in enumerate(indices):
            row, col = row_vars[i], col_vars[i]
            if row is not None and col is not None:
                updates[k] = _factored_update(row, col, sq_updates[k], d_grads[k], beta2ts[k])
        if full_k:
            fulls = [full_vars[indices[k]] for k in full_k]
            torch._foreach_mul_(fulls, [beta2ts[k] for k in full_k])  # type: ignore[arg-type]
            scaled = [sq_updates[k] for k in full_k]
            torch._foreach_mul_(scaled, [1.0 - beta2ts[k] for k in full_k])
            torch._foreach_add_(fulls, scaled)  # type: ignore[arg-type]
            rsq = torch._foreach_rsqrt(fulls)  # type: ignore[arg-type]
            torch._foreach_mul_(rsq, [d_grads[k] for k in full_k])
            for k, value in zip(full_k, rsq):
                updates[k] = value

        clip = clip_divisor(torch._foreach_div(torch._foreach_norm(updates), sqrt_numels), clip_threshold)
        torch._foreach_div_(updates, clip)

        d_exp_avgs = [exp_avgs[i] for i in indices]
        if beta1 is not None and options.first_moment == "unscaled":
            torch._foreach_mul_(d_exp_avgs, beta1)  # type: ignore[arg-type]
            torch._foreach_mul_(updates, 1.0 - beta1)
            torch._foreach_add_(d_exp_avgs, updates)  # type: ignore[arg-type]
            updates = torch._foreach_mul(d_exp_avgs, lrs)  # type: ignore[arg-type]
        else:
            torch._foreach_mul_(updates, lrs)  # type: ignore[arg-type]
            if beta1 is not None:
                torch._foreach_mul_(d_exp_avgs, beta1)  # type: ignore[arg-type]
                torch._foreach_add_(d_exp_avgs, torch._foreach_mul(updates, 1.0 - beta1))  # type: ignore[arg-type]
                updates = d_exp_avgs  # type: ignore[assignment]
        if weight_decay != 0.0:
            coefs = [-weight_decay * lr_k for lr_k in lrs] if isinstance(lrs, list) else -weight_decay * lrs  # type: ignore[operator]
            torch._foreach_add_(p32s, torch._foreach_mul(p32s, coefs))
        torch._foreach_sub_(p32s, updates)
        low_k = [k for k, is_low in enumerate(low) if is_low]
        if low_k:
            keys = None if rounding_keys is None else [rounding_keys[indices[k]] for k in low_k]
            store_all([d_params[k] for k in low_k], [p32s[k] for k in low_k], keys)
