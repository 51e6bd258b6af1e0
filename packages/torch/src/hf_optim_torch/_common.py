"""Helpers shared by the optimizer shells: spec validation, step counters, code-path choice, 16-bit storage."""

from __future__ import annotations

import functools
import math
import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import hf_optim_spec
import numpy as np
import torch
from hf_optim_spec.rounding import rounding_bits, rounding_key

__all__ = [
    "FUSED_DOC",
    "LOW_PRECISION",
    "SPARSE_LAYOUTS",
    "advance_steps",
    "as_step_tensor",
    "begin_step",
    "count_steps",
    "dtype_scalar",
    "fused_eligible",
    "fused_problem",
    "host_steps",
    "kernel_moment_ratios",
    "note_advanced",
    "plain_number",
    "round_stochastic",
    "rounding_keys",
    "saturated_step",
    "scratch",
    "spec_validate",
    "step_in_float32",
    "store",
    "store_all",
    "use_foreach",
    "use_fused",
]

#: dtype of the per-parameter ``state["step"]`` counter (torch.optim's convention: exact up to 2**24 steps).
STEP_DTYPE = torch.float32

#: gradient layouts the optimizers reject (transformers' "does not support sparse gradients")
SPARSE_LAYOUTS = frozenset({torch.sparse_coo, torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc})


#: the 16-bit floating dtypes: stored in their own dtype, computed in float32 where an optimizer says so
LOW_PRECISION = (torch.bfloat16, torch.float16)


def begin_step(
    optimizer: torch.optim.Optimizer,
    closure: Any,
    sparse_error: str,
    fused_dtypes: tuple[torch.dtype, ...] | None = None,
) -> Any:
    """The start of every ``step``: run the closure with gradients enabled, then reject what cannot be stepped.

    Sparse gradients are rejected (``RuntimeError(sparse_error)``), and so is a float16 parameter with a gradient
    in a group with ``stochastic_rounding`` (``ValueError``: only bfloat16 storage has stochastic rounding), and,
    when ``fused_dtypes`` is given, a parameter of a ``fused=True`` group that the fused kernel cannot take
    (``RuntimeError``, see :func:`fused_problem`). Every parameter of every group is checked before any state or
    parameter changes, so a rejected step changes nothing. Returns the closure's loss (None without a closure).
    """
    loss = None
    if closure is not None:
        with torch.enable_grad():
            loss = closure()
    index = 0
    for group in optimizer.param_groups:
        rounding = group.get("stochastic_rounding", False)
        for p in group["params"]:
            if p.grad is not None:
                if p.grad.layout in SPARSE_LAYOUTS:
                    raise RuntimeError(sparse_error)
                if rounding and p.dtype == torch.float16:
                    raise ValueError(
                        "`stochastic_rounding=True` supports bfloat16 parameters; got a float16 parameter "
                        f"(index {index})"
                    )
                if fused_dtypes is not None and group.get("fused"):
                    problem = fused_problem(p, group, fused_dtypes)
                    if problem is not None:
                        raise RuntimeError(f"fused=True cannot step parameter {index}: {problem}")
            index += 1
    return loss


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


def check_flags(**flags: object) -> None:
    """Reject torch-only flags of the wrong type at construction, in the spec's message format.

    ``maximize`` is a bool; ``foreach`` and ``fused`` are a bool or None. Any other value (``"no"``, ``0``, NaN)
    would otherwise be taken for its truthiness, or fail deep inside a kernel at the first step.
    """
    for name, value in flags.items():
        nullable = name in ("foreach", "fused")
        if isinstance(value, (bool, np.bool_)) or (nullable and value is None):
            continue
        wanted = "a bool or None" if nullable else "a bool"
        raise TypeError(
            f"Argument `{name}` must be {wanted}. Received: {name}={value!r} (of type {type(value).__name__})"
        )


def check_optimizer(optimizer: object) -> None:
    """A schedule factory's ``optimizer`` must be a ``torch.optim.Optimizer`` (TypeError otherwise)."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            "Argument `optimizer` must be a torch.optim.Optimizer. "
            f"Received: optimizer={optimizer!r} (of type {type(optimizer).__name__})"
        )


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
    return all(p.device.type not in ("cpu", "meta") and type(p) in _PLAIN for p in params)


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
class _StepMirror:
    """A map from a step tensor (by identity, held weakly) to ``(version, value)``.

    What ``torch.utils.weak.WeakIdKeyDictionary`` does, at a third of its cost per lookup (one dict lookup and one
    weakref call; the weakref is made once per tensor), which matters on the fused paths: two lookups per
    parameter per step. An entry goes when its tensor does.
    """

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref[torch.Tensor], tuple[int | None, float]]] = {}

    def _forget(self, key: int, ref: weakref.ref[torch.Tensor]) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry[0] is ref:
            del self._entries[key]

    def get(self, step: torch.Tensor) -> tuple[int | None, float] | None:
        entry = self._entries.get(id(step))
        return entry[1] if entry is not None and entry[0]() is step else None

    def __setitem__(self, step: torch.Tensor, cached: tuple[int | None, float]) -> None:
        key = id(step)
        entry = self._entries.get(key)
        if entry is not None and entry[0]() is step:
            ref = entry[0]
        else:
            ref = weakref.ref(step, functools.partial(self._forget, key))
        self._entries[key] = (ref, cached)

    def __delitem__(self, step: torch.Tensor) -> None:
        if self.get(step) is None:
            raise KeyError(step)
        del self._entries[id(step)]

    def __len__(self) -> int:
        return len(self._entries)


_HOST_STEPS = _StepMirror()
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


def _plus_one(value: float) -> float:
    return float(np.float32(value + 1.0))  # the rounding of the float32 counter


def advance_steps(steps: list[torch.Tensor]) -> list[float]:
    """``step += 1`` on every tensor (one foreach op); returns the new values without reading them back."""
    before = host_steps(steps)
    torch._foreach_add_(steps, 1)
    after = []
    plus_one: dict[float, float] = {}  # the steps of one call are usually all equal: round each value once
    for step, value in zip(steps, before):
        new = plus_one.get(value)
        if new is None:
            # the rounding of the float32 counter (inline: compiled steps trace it)
            new = plus_one[value] = float(np.float32(value + 1.0))
        version = _version(step)
        if version is not None:
            _HOST_STEPS[step] = (version, new)
        after.append(new)
    return after


def count_steps(steps: list[torch.Tensor]) -> None:
    """``step += 1`` on every tensor (one foreach op), the host mirror kept current outside ``torch.compile``.

    Inside a compiled step the mirror is left alone (dynamo does not trace weak references): it goes stale, and the
    next eager step reads each counter once.
    """
    if _compiling():
        torch._foreach_add_(steps, 1)
    else:
        advance_steps(steps)


def note_advanced(steps: list[torch.Tensor]) -> None:
    """Record in the host mirror that a code path did ``step += 1`` (one in-place op) on every tensor.

    A tensor whose mirror is already current (the path used :func:`advance_steps`) is left alone; one that
    changed by more than one in-place op loses its mirror and is read once at its next use.
    """
    if _compiling():
        return
    for step in steps:
        version = _version(step)
        cached = _HOST_STEPS.get(step)
        if version is None or cached is None or cached[0] == version:
            continue
        if cached[0] is not None and version == cached[0] + 1:
            _HOST_STEPS[step] = (version, _plus_one(cached[1]))
        else:
            del _HOST_STEPS[step]


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


_PLAIN = (torch.Tensor, torch.nn.Parameter)
_STRIDED = torch.strided
_FUSED_DEVICES = ("cpu", "cuda")


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


# --------------------------------------------------------------------------- 16-bit storage


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
        keys[k] = rounding_key(int(seed), int(indices[k]), int(_plus_one(value)))
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
