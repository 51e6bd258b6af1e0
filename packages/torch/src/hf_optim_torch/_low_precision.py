"""16-bit parameters: float32 arithmetic, storage to nearest or with stochastic rounding, and safe scalars."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from hf_optim_spec.rounding import rounding_bits, rounding_key

from ._step_count import host_steps, plus_one

__all__ = [
    "LOW_PRECISION",
    "dtype_scalar",
    "round_stochastic",
    "rounding_keys",
    "step_in_float32",
    "store",
    "store_all",
]

#: the 16-bit floating dtypes: stored in their own dtype, computed in float32 where an optimizer says so
LOW_PRECISION = (torch.bfloat16, torch.float16)


def dtype_scalar(value: float, dtype: torch.dtype) -> float:
    """A Python scalar that torch accepts with tensors of ``dtype``: ``value`` rounded to ``dtype`` if it overflows it.

    Some ops (``torch.where``, ``clamp``, the ``value=`` of ``addcmul_``) refuse a Python scalar beyond the
    tensor dtype's largest finite value ("value cannot be converted to type float without overflow"), while a
    hyperparameter may be any float64 the spec accepts. Such a value becomes what the conversion to ``dtype``
    makes of it (an infinity, or the largest finite value for one within rounding); others are returned as is.
    """
    if not abs(value) > torch.finfo(dtype).max:  # in range, or NaN
        return value
    return float(torch.tensor(value, dtype=torch.float64).to(dtype))


def round_stochastic(x: torch.Tensor, key: int) -> torch.Tensor:
    """Float32 values stochastically rounded to bfloat16 values (returned as float32, same shape).

    The torch form of :func:`hf_optim_spec.rounding.round_stochastic`: the 16 random bits of every element (at
    its row-major position, :func:`hf_optim_spec.rounding.rounding_bits` of ``key``) are added below the
    bfloat16 significand of the float32 bit pattern, which is then truncated; NaN stays NaN. The result is
    exactly representable in bfloat16.
    """
    if x.dtype != torch.float32:
        raise TypeError(f"round_stochastic expects float32 values; got {x.dtype}")
    flat = x.reshape(-1)
    positions = torch.arange(flat.numel(), dtype=torch.int64, device=flat.device)
    bits = rounding_bits(key, positions).to(torch.int32)
    # int32 arithmetic wraps like the reference's uint32; only NaN bit patterns can carry past the sign bit
    rounded = flat.view(torch.int32).add(bits).bitwise_and_(-65536).view(torch.float32)
    return torch.where(torch.isnan(flat), flat, rounded).view(x.shape)


def store(dst: torch.Tensor, src: torch.Tensor, key: int | None) -> None:
    """``dst.copy_(src)``: to nearest, or stochastically with ``key`` when ``dst`` is bfloat16 (``src`` float32)."""
    if key is not None and dst.dtype == torch.bfloat16:
        src = round_stochastic(src, key)
    dst.copy_(src)


def store_all(dsts: list[torch.Tensor], srcs: list[torch.Tensor], keys: Sequence[int | None] | None) -> None:
    """:func:`store` for lists: one foreach copy for the ones rounded to nearest, ``keys[k]`` for the others."""
    if keys is None or all(key is None for key in keys):
        torch._foreach_copy_(dsts, srcs)
        return
    nearest = [k for k, key in enumerate(keys) if key is None]
    if nearest:
        torch._foreach_copy_([dsts[k] for k in nearest], [srcs[k] for k in nearest])
    for dst, src, key in zip(dsts, srcs, keys):
        if key is not None:
            store(dst, src, key)


def rounding_keys(
    seed: int, params: Sequence[torch.Tensor], indices: Sequence[int], steps: Sequence[torch.Tensor]
) -> list[int | None]:
    """The stochastic-rounding key of every bfloat16 parameter for the coming update, None for the others.

    ``indices`` are the parameters' positions among all parameters of the optimizer; ``steps`` their step
    tensors before the update, which uses ``step + 1`` (read from the host mirror: no device synchronisation).
    """
    keys: list[int | None] = [None] * len(params)
    wanted = [k for k, p in enumerate(params) if p.dtype == torch.bfloat16]
    for k, value in zip(wanted, host_steps([steps[k] for k in wanted])):
        keys[k] = rounding_key(int(seed), int(indices[k]), int(plus_one(value)))
    return keys


def step_in_float32(
    fn: Callable[..., None],
    params: list[torch.Tensor],
    grads: list[torch.Tensor],
    states: Sequence[list[torch.Tensor]],
    rest: Sequence[Any],
    keys: Sequence[int | None] | None,
    **kwargs: Any,
) -> None:
    """``fn(params, grads, *states, *rest, **kwargs)`` with every 16-bit parameter stepped as a float32 one.

    The 16-bit parameters, their gradients and their ``states`` (lists aligned with ``params``, or empty) are
    upcast to float32 copies, ``fn`` (a functional optimizer) updates the copies exactly as it updates float32
    parameters, and the results are stored back once: the parameter with :func:`store` (stochastically where
    ``keys[i]`` is set), the state to nearest. ``rest`` (step counters, flags) is passed as is; other
    parameters are passed as they are.
    """
    low = [i for i, p in enumerate(params) if p.dtype in LOW_PRECISION]
    if not low:
        fn(params, grads, *states, *rest, **kwargs)
        return

    def upcast(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        out = list(tensors)
        for i in low:
            out[i] = tensors[i].float()
        return out

    params32 = upcast(params)
    states32 = [upcast(state) if state else state for state in states]
    fn(params32, upcast(grads), *states32, *rest, **kwargs)
    store_all([params[i] for i in low], [params32[i] for i in low], None if keys is None else [keys[i] for i in low])
    for state, state32 in zip(states, states32):
        if state:
            torch._foreach_copy_([state[i] for i in low], [state32[i] for i in low])
