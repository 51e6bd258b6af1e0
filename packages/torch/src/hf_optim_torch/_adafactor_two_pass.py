"""Adafactor's two-pass path (``fused=True``, the default on CPU): each tensor read twice, no per-step temporaries.

CPU tensors (float32 parameters, and 16-bit ones stored to nearest) go to the native C kernel (one call for the
matrices, one for the unfactored tensors, held in :mod:`._adafactor_native_calls` to be joined with other groups'), the other small unfactored tensors to the multi-tensor path together, the
rest through :func:`_two_pass_tensor` in row blocks that stay in cache. Every tensor gets the scalars of its step
(relative step, beta2t, lr, clipping) from :mod:`._adafactor_scalars`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch
from torch import Tensor

from . import _native
from ._adafactor_args import AdafactorOptions, AdafactorTensors
from ._adafactor_loops import multi_tensor_adafactor
from ._adafactor_native_calls import NativeCalls, native_buffers
from ._adafactor_scalars import clip_divisor, second_moment_decay, step_lr, unscaled_lr
from ._groups_call import by_part
from ._low_precision import dtype_scalar, store
from ._native.adafactor_call import NativeLayout, native_dtypes, native_kind, native_layout
from ._path_choice import LayoutCache, fused_eligible
from ._scratch import scratch
from ._step_count import advance_steps, note_advanced

__all__ = ["TWO_PASS_DTYPES", "two_pass_adafactor"]

#: parameter dtypes the two-pass path takes (its arithmetic is float32 for all three)
TWO_PASS_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

#: elements per row block of the fused Adafactor path on CPU (8 MiB of float32: the buffer holding g**2 or the
#: update stays in the last-level cache between the ops that read it; a transformer's weight matrices are one block)
_BLOCK = 1 << 21
#: the dtype of the states of the two-pass path (also of the 16-bit parameters': their arithmetic is float32)
_STATE_DTYPES = (torch.float32,)
#: tensors without factored statistics and at most this many elements (biases, norms) take the multi-tensor path
#: together: for them the per-op cost of a per-tensor path dominates (on CUDA, the launch of each op)
_SMALL = 1 << 15


#: on CUDA, tensors of at least this many elements take the per-tensor sweeps by default (their launches cost
#: less than their data: one 1-D tensor of 1B elements, 17.3 ms a step, against 31.1 ms on the multi-tensor path)
_CUDA_SWEEP = 1 << 26


class _Routes(NamedTuple):
    """Where the tensors of a call go (indices into its lists): the path's, the others, the native kernel's calls,
    the small ones for the multi-tensor path; and the part (param group) of each tensor."""

    rest: list[int]
    small: list[int]
    stepped: list[int]  # the others, in order: through the native kernel or swept here
    native: dict[tuple[int, str], tuple[list[int], NativeLayout]]  # per part and kind: its tensors and their layout
    swept: list[int]
    part_of: list[int]


def _row_blocks(batches: int, n_rows: int, n_cols: int, device: torch.device) -> list[tuple[int, int, int]]:
    """(batch, first row, end row) blocks of about ``_BLOCK`` elements (whole matrices off CPU)."""
    rows = n_rows if device.type != "cpu" else max(1, min(n_rows, _BLOCK // max(n_cols, 1)))
    return [(b, r0, min(r0 + rows, n_rows)) for b in range(batches) for r0 in range(0, n_rows, rows)]


def two_pass_adafactor(
    tensors: AdafactorTensors,
    options: list[AdafactorOptions],
    parts: list[int],
    rounding_keys: list[int | None] | None = None,
    *,
    strict: bool,
    cache: LayoutCache[Any] | None = None,
    calls: NativeCalls | None = None,
) -> list[int]:
    """The two-pass path (see :class:`hf_optim_torch.Adafactor`): two sweeps per tensor, one reused buffer.

    ``tensors`` are those of one or several param groups, the consecutive parts of the lists (of lengths ``parts``),
    each with its ``options`` (equal in whether the lr is a tensor). CPU tensors go to the native kernel (per group,
    one call for the matrices and one for the unfactored tensors; float32, and bfloat16/float16 parameters rounded
    to nearest, whose gradients and states are float32); small unfactored tensors (at most ``_SMALL`` elements) that
    it does not take run together on the multi-tensor path. Runs the parameters it can take and returns the indices
    of the others (an error when ``strict``). ``cache`` keeps that routing while the tensors' layouts stay the same
    (see :class:`._path_choice.LayoutCache`). ``calls`` (an optimizer's, for its whole step) holds the native calls
    for :meth:`NativeCalls.run`, which joins those of groups whose call-wide options agree; without it they are made
    here.
    """
    params, grads, state_steps, rms_values, exp_avgs, row_vars, col_vars, full_vars = tensors
    lib = _native.adafactor_library() if not isinstance(options[0].lr, Tensor) else None
    if torch.compiler.is_compiling():
        lib = None

    def decide() -> _Routes:
        part_of = [part for part, length in enumerate(parts) for _ in range(length)]
        eligible: list[int] = []
        rest: list[int] = []
        for i, param in enumerate(params):
            grad = grads[i]
            states = [t for t in (exp_avgs[i], full_vars[i]) if t is not None]
            ok = (
                fused_eligible(param, dtypes=TWO_PASS_DTYPES)
                and fused_eligible(grad, dtypes=TWO_PASS_DTYPES)
                and (not states or fused_eligible(*states, dtypes=_STATE_DTYPES))
                and param.numel() > 0
                and grad.shape == param.shape
                and grad.device == param.device
                # by default on CPU, and on CUDA for large tensors only: there the per-tensor sweeps are bound by
                # kernel launches (~30 per tensor) unless the tensor is large, and the multi-tensor path is faster
                and (strict or param.is_cpu or param.numel() >= _CUDA_SWEEP)
            )
            (eligible if ok else rest).append(i)
        native: dict[tuple[int, str], list[int]] = {}  # CPU tensors: the C kernel, per part and kind
        if lib is not None:
            dtypes = native_dtypes(lib)
            for i in eligible:
                if rounding_keys is not None and rounding_keys[i] is not None:
                    continue  # stochastic rounding to bfloat16: stored by the torch path (see _low_precision.store)
                kind = native_kind(params[i], grads[i], row_vars[i], col_vars[i], full_vars[i], rms_values[i], dtypes)
                if kind is not None:
                    native.setdefault((part_of[i], kind), []).append(i)
        taken = {i for indices in native.values() for i in indices}
        small = [i for i in eligible if i not in taken and full_vars[i] is not None and params[i].numel() <= _SMALL]
        taken_small = set(small)
        stepped = [i for i in eligible if i not in taken_small]
        calls = {(part, kind): (picked, native_layout(kind, native_buffers(tensors, options[part], kind, picked)))
                 for (part, kind), picked in native.items()}  # fmt: skip
        return _Routes(rest, small, stepped, calls, [i for i in stepped if i not in taken], part_of)

    checked = [params, grads, rms_values, exp_avgs, row_vars, col_vars, full_vars]
    # with keys, a bfloat16 parameter has one every step
    key = (strict, lib is not None, rounding_keys is None, parts[0] if len(parts) == 1 else tuple(parts))
    routes = cache.decide(checked, decide, key=key) if cache is not None else decide()
    rest, small, part_of = routes.rest, routes.small, routes.part_of
    if strict and rest:
        raise RuntimeError(
            "fused=True supports dense contiguous float32/bfloat16/float16 parameters on CPU or CUDA; got "
            f"{sorted({(str(params[i].dtype), params[i].device.type) for i in rest})}"
        )
    for part, indices in by_part(small, parts):
        keys = None if rounding_keys is None else [rounding_keys[i] for i in indices]
        multi_tensor_adafactor(tensors.pick(indices).float32_grads(), options[part], keys)
        note_advanced([state_steps[i] for i in indices])
    if not routes.stepped:
        return rest
    steps = advance_steps([state_steps[i] for i in routes.stepped])
    scalars: dict[tuple[int, float], tuple[float | Tensor, float]] = {}  # a group's steps are usually all equal
    rel_of: dict[int, float | Tensor] = {}
    beta2t_of: dict[int, float] = {}
    for i, t in zip(routes.stepped, steps):
        made = scalars.get((part_of[i], t))
        if made is None:
            o = options[part_of[i]]
            rel = unscaled_lr(o.lr, t, relative_step=o.relative_step, warmup_init=o.warmup_init)
            made = scalars[part_of[i], t] = (rel, second_moment_decay(t, o.decay_rate))
        rel_of[i], beta2t_of[i] = made
    for (part, kind), (picked, layout) in routes.native.items():
        o = options[part]
        buffers = native_buffers(tensors, o, kind, picked)
        if o.maximize:
            buffers[0] = [-g for g in buffers[0]]  # type: ignore[union-attr]
        held = calls if calls is not None and not o.maximize else NativeCalls()
        held.add(lib, kind, buffers, layout, [rel_of[i] for i in picked], [beta2t_of[i] for i in picked], o)
        if held is not calls:  # (a maximizing call's negated gradients are not held)
            held.raise_refused(held.run())
    for i in routes.swept:
        o = options[part_of[i]]
        grad = grads[i].float()  # a no-op for float32; a 16-bit gradient is read here in float32
        _two_pass_tensor(
            params[i],
            -grad if o.maximize else grad,
            rms_values[i],
            exp_avgs[i],
            row_vars[i],
            col_vars[i],
            full_vars[i],
            rel=rel_of[i],
            beta2t=beta2t_of[i],
            options=o,
            rounding_key=None if rounding_keys is None else rounding_keys[i],
        )
    return rest


def _two_pass_tensor(
    param: Tensor,
    grad: Tensor,
    rms: Tensor,
    exp_avg: Tensor | None,
    row: Tensor | None,
    col: Tensor | None,
    full: Tensor | None,
    *,
    rel: float | Tensor,
    beta2t: float,
    options: AdafactorOptions,
    rounding_key: int | None = None,
) -> None:
    """One parameter of the two-pass path, in row blocks that stay in cache (see :class:`hf_optim_torch.Adafactor`).

    Sweep 1 reads ``g`` once: the new row and column statistics (or ``V``) and the squared norm of the update
    before clipping; then ``p`` is read once for its RMS; sweep 2 reads ``g`` and ``p`` again and writes ``p``
    (and ``m``). ``g**2``, and then the factors ``r_i coef / sqrt(C_j)`` of the update, only live block by block in
    one reused buffer. No BLAS call: its float32 products may run in reduced precision (``float32_matmul_precision``).
    """
    eps1, beta1, weight_decay = options.eps[0], options.beta1, options.weight_decay
    unscaled = options.first_moment == "unscaled" and exp_avg is not None
    low_precision = param.dtype != torch.float32
    p32 = param.float() if low_precision else param
    numel = param.numel()
    factored = row is not None and col is not None
    n_rows, n_cols = (grad.shape[-2], grad.shape[-1]) if factored else (1, numel)
    batches = numel // (n_rows * n_cols)
    spans = _row_blocks(batches, n_rows, n_cols, grad.device)
    buffer = scratch(max((r1 - r0) * n_cols for _, r0, r1 in spans), grad.device)
    shape3 = (batches, n_rows, n_cols)
    g3 = grad.view(shape3)
    decay = 1.0 - beta2t

    # sweep 1. Factored: R and C as means of g**2 + eps1, and the squared norm of the update (r_i c_j g_ij) as
    # mean(R) * sum_j (sum_i g_ij**2 / R_i) / C_j, where R_i is final once its row block is summed; so the
    # norm needs no second pass over g
    if factored:
        assert row is not None and col is not None
        row2, col2 = row.view(batches, n_rows), col.view(batches, n_cols)
        sums = g3.new_zeros(2, batches, n_cols) if len(spans) > 1 else None
        for b, r0, r1 in spans:
            sq = torch.mul(g3[b, r0:r1], g3[b, r0:r1], out=buffer[: (r1 - r0) * n_cols].view(r1 - r0, n_cols))
            r = row2[b, r0:r1]
            r.mul_(beta2t).add_(sq.sum(dim=-1), alpha=decay / n_cols).add_(decay * eps1)
            col_sum = sq.sum(dim=-2)
            # elementwise, not torch.mv: a BLAS product may run in bf16/tf32 under float32_matmul_precision
            weighted = sq.div_(r.unsqueeze(-1)).sum(dim=-2)
            if sums is not None:
                sums[0, b].add_(col_sum)
                sums[1, b].add_(weighted)
        if sums is not None:
            col_sum, weighted = sums[0], sums[1]
        col2.mul_(beta2t).add_(col_sum.view_as(col2), alpha=decay / n_rows).add_(decay * eps1)
        row_mean = row2.mean(dim=-1, keepdim=True)
        update_sq = torch.div(row_mean, col2).mul_(weighted.view_as(col2)).sum()
    else:
        assert full is not None
        v3 = full.view(shape3)
        parts = []
        for b, r0, r1 in spans:
            g, v = g3[b, r0:r1], v3[b, r0:r1]
            v.mul_(beta2t).addcmul_(g, g, value=decay).add_(decay * eps1)
            update = torch.rsqrt(v, out=buffer[: (r1 - r0) * n_cols].view(r1 - r0, n_cols)).mul_(g).view(-1)
            parts.append(torch.dot(update, update))
        update_sq = parts[0] if len(parts) == 1 else torch.stack(parts).sum()

    # RMS of p, lr and clipping, as 0-dim tensors (no host synchronisation)
    p_flat = p32.view(-1)
    torch.div(torch.dot(p_flat, p_flat).sqrt_(), math.sqrt(numel), out=rms)
    lr_t = step_lr(rel, rms, eps2=options.eps[1], scale_parameter=options.scale_parameter)
    clip = clip_divisor(update_sq.sqrt_().div_(math.sqrt(numel)), options.clip_threshold)
    # coefficient of the update: 1 / clip, times lr unless the first moment averages the unscaled update
    coef = clip.reciprocal_() if unscaled else torch.div(lr_t, clip)
    if factored:
        col_rsqrt = col2.rsqrt()
        coef = row2.div(row_mean).rsqrt_().mul_(coef).unsqueeze(-1)  # per row: r_i * coef
    lr_tensor = lr_t if isinstance(lr_t, Tensor) else torch.tensor(lr_t, dtype=torch.float32, device=grad.device)
    p3 = p32.view(shape3)
    m3 = exp_avg.view(shape3) if exp_avg is not None else None

    # sweep 2: the update g * (r * coef ⊗ rsqrt(C)) (the outer product written into the buffer, no read of g), or
    # rsqrt(V) * g * coef; first moment, weight decay, parameter
    for b, r0, r1 in spans:
        g, p = g3[b, r0:r1], p3[b, r0:r1]
        buf = buffer[: (r1 - r0) * n_cols].view(r1 - r0, n_cols)
        if factored:
            update, scale = g, torch.mul(coef[b, r0:r1], col_rsqrt[b], out=buf)
        else:  # a tensor of one block keeps its update from sweep 1
            update, scale = (buf if len(spans) == 1 else torch.rsqrt(v3[b, r0:r1], out=buf).mul_(g)), coef
        m = m3[b, r0:r1] if m3 is not None else None
        if m is not None:
            assert beta1 is not None
            m.mul_(beta1).addcmul_(update, scale, value=1.0 - beta1)
        if weight_decay != 0.0:
            p.addcmul_(p, lr_tensor, value=-dtype_scalar(weight_decay, p.dtype))
        if m is None:
            p.addcmul_(update, scale, value=-1.0)
        elif unscaled:
            p.addcmul_(m, lr_tensor, value=-1.0)
        else:
            p.sub_(m)
    if low_precision:
        store(param, p32, rounding_key)
