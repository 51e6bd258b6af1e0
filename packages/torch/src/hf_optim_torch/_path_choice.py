"""Which code path a step takes: the for-loop, the multi-tensor (foreach) path, or an optimizer's ``fused`` path.

What ``fused=True`` runs is each optimizer's own: torch's fused Adam kernel for AdamW and AdamWeightDecay, the
two-pass path (and on CPU the native C kernel) for Adafactor.
"""

from __future__ import annotations

import torch

__all__ = ["compiling", "fused_eligible", "use_foreach", "use_fused"]

_PLAIN = (torch.Tensor, torch.nn.Parameter)
_STRIDED = torch.strided
_FUSED_DEVICES = ("cpu", "cuda")


def compiling() -> bool:
    """Whether the code runs under ``torch.compile`` (dynamo tracing)."""
    is_compiling = getattr(torch.compiler, "is_compiling", None)
    return bool(is_compiling()) if is_compiling is not None else False


def use_foreach(foreach: bool | None, params: list[torch.Tensor]) -> bool:
    """The multi-tensor path by default on accelerators only.

    On CPU a per-tensor pass stays in cache while each foreach op streams every tensor through memory, so the
    for-loop is the faster default there.
    """
    if foreach is not None:
        return bool(foreach)
    if torch.jit.is_scripting() or not params:
        return False
    return all(p.device.type not in ("cpu", "meta") and type(p) in _PLAIN for p in params)


def use_fused(fused: bool | None, foreach: bool | None, lr: object = None) -> bool:
    """Whether to try the fused path: asked for, or by default when no ``foreach`` choice was made.

    Not by default under ``torch.compile`` (the fused paths take per-step Python numbers, which a compiled graph
    would specialise on) nor with a tensor ``lr`` (the configuration meant for compiled steps: eager and compiled
    steps then run the same path).
    """
    if fused:
        if foreach:
            raise ValueError("`foreach` and `fused` cannot both be True.")
        return True
    if fused is not None or foreach is not None or isinstance(lr, torch.Tensor):
        return False
    return not torch.jit.is_scripting() and not compiling()


def fused_eligible(param: torch.Tensor, *tensors: torch.Tensor, dtypes: tuple[torch.dtype, ...]) -> bool:
    """A plain dense contiguous tensor of one of ``dtypes`` on CPU or CUDA, with companions of its dtype and layout."""
    if type(param) not in _PLAIN or param.dtype not in dtypes or param.layout is not _STRIDED:
        return False
    device, dtype, shape = param.device, param.dtype, param.shape
    if device.type not in _FUSED_DEVICES or not param.is_contiguous():
        return False
    for t in tensors:  # a loop, not all(<generator>): this runs for every parameter at every step
        if t.dtype is not dtype or t.layout is not _STRIDED or t.shape != shape or t.device != device:
            return False
        if not t.is_contiguous():
            return False
    return True
