"""Helpers shared by the optimizer shells: spec validation, step counters, code-path choice."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import hf_optim_spec
import numpy as np
import torch
from torch.utils.weak import WeakIdKeyDictionary

__all__ = [
    "FUSED_DOC",
    "SPARSE_LAYOUTS",
    "advance_steps",
    "as_step_tensor",
    "begin_step",
    "dtype_scalar",
    "fused_eligible",
    "host_steps",
    "plain_number",
    "saturated_step",
    "scratch",
    "spec_validate",
    "use_foreach",
    "use_fused",
]

#: dtype of the per-parameter ``state["step"]`` counter (torch.optim's convention: exact up to 2**24 steps).
STEP_DTYPE = torch.float32

#: gradient layouts the optimizers reject (transformers' "does not support sparse gradients")
SPARSE_LAYOUTS = frozenset({torch.sparse_coo, torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc})


def begin_step(optimizer: torch.optim.Optimizer, closure: Any, sparse_error: str) -> Any:
    """The start of every ``step``: run the closure with gradients enabled, then reject sparse gradients.

    Every gradient of every group is checked before any state or parameter changes, so a rejected step
    changes nothing. Returns the closure's loss (None without a closure).
    """
    loss = None
    if closure is not None:
        with torch.enable_grad():
            loss = closure()
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.grad is not None and p.grad.layout in SPARSE_LAYOUTS:
                raise RuntimeError(sparse_error)
    return loss


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


# --------------------------------------------------------------------------- fused paths

FUSED_DOC = """fused (`bool`, *optional*):
            Keyword-only. Use the fused path (one pass per tensor through torch's fused kernel, or a single in-place
            pass). By default it is used for float32/bfloat16 tensors on CPU and CUDA unless ``foreach`` is given, the
            lr is a tensor or the step is being compiled; float64 and other tensors take the exact for-loop path. The fused
            path reassociates a few products, so it agrees with the float64 reference within the spec float32
            tolerance rather than bit for bit."""

#: step tensor -> (its version counter, its value): a host mirror of ``state["step"]`` so that the fused paths get
#: the step as a Python number without reading device memory. A step changed elsewhere (a loaded checkpoint, an
#: in-place edit) has another version and is read once.
_HOST_STEPS: WeakIdKeyDictionary = WeakIdKeyDictionary()
_SATURATED: dict[torch.device, torch.Tensor] = {}


def _version(step: torch.Tensor) -> int | None:
    try:
        return int(step._version)
    except RuntimeError:  # inference tensors keep no version counter
        return None


def host_steps(steps: list[torch.Tensor]) -> list[float]:
    """The values of the step tensors as Python floats, read from the host mirror where it is current."""
    out = []
    for step in steps:
        version = _version(step)
        cached = _HOST_STEPS.get(step)
        if version is None or cached is None or cached[0] != version:
            cached = (version, float(step))
            if version is not None:
                _HOST_STEPS[step] = cached
        out.append(cached[1])
    return out


def advance_steps(steps: list[torch.Tensor]) -> list[float]:
    """``step += 1`` on every tensor (one foreach op); returns the new values without reading them back."""
    before = host_steps(steps)
    torch._foreach_add_(steps, 1)
    after = []
    for step, value in zip(steps, before):
        new = float(np.float32(value + 1.0))  # the rounding of the float32 counter
        version = _version(step)
        if version is not None:
            _HOST_STEPS[step] = (version, new)
        after.append(new)
    return after


def saturated_step(device: torch.device) -> torch.Tensor:
    """A float32 ``inf`` step for torch's fused Adam kernels: ``1 - beta**inf == 1``, so they skip bias correction."""
    tensor = _SATURATED.get(device)
    if tensor is None:
        tensor = torch.tensor(float("inf"), dtype=torch.float32, device=device)
        _SATURATED[device] = tensor
    return tensor


def _compiling() -> bool:
    is_compiling = getattr(torch.compiler, "is_compiling", None)
    return bool(is_compiling()) if is_compiling is not None else False


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
    return not torch.jit.is_scripting() and not _compiling()


_FUSED_DTYPES = (torch.float32, torch.bfloat16)


def fused_eligible(
    param: torch.Tensor, *tensors: torch.Tensor, dtypes: tuple[torch.dtype, ...] = _FUSED_DTYPES
) -> bool:
    """A plain dense contiguous float32/bfloat16 tensor on CPU or CUDA, with companions of its dtype and layout."""
    if type(param) not in (torch.Tensor, torch.nn.Parameter) or param.device.type not in ("cpu", "cuda"):
        return False
    if param.dtype not in dtypes:
        return False
    return all(
        t.dtype == param.dtype
        and t.device == param.device
        and t.shape == param.shape
        and t.layout == torch.strided
        and t.is_contiguous()
        for t in (param, *tensors)
    )


_SCRATCH = threading.local()
#: the largest buffer kept between steps (float32 elements); bigger requests get a fresh tensor
_SCRATCH_KEEP = 1 << 22


def scratch(numel: int, device: torch.device) -> torch.Tensor:
    """A flat float32 work buffer of at least ``numel`` elements, reused across calls (per thread and device).

    Fresh multi-megabyte tensors cost page faults on every CPU step; a kept buffer does not. Its contents are
    undefined; callers write it before reading it and never keep it.
    """
    if device.type != "cpu":
        return torch.empty(numel, dtype=torch.float32, device=device)
    buffers: dict[torch.device, torch.Tensor] = _SCRATCH.__dict__.setdefault("buffers", {})
    buffer = buffers.get(device)
    if buffer is None or buffer.numel() < numel:
        buffer = torch.empty(numel, dtype=torch.float32, device=device)
        if numel <= _SCRATCH_KEEP:
            buffers[device] = buffer
    return buffer
