"""Adafactor's scalar math, written once for every path: the relative step, beta2t, the lr of a step, clipping.

Each function takes Python floats (the two-pass path, which reads the step from the host mirror), float64 NumPy
arrays (the native kernel's calls: one entry per tensor, the same float64 operations as on floats) or tensors (the
for-loop and multi-tensor paths, which never synchronise with the host) and returns the same kind. A path only decides how it sweeps the tensors; none of them restates these formulas.

The relative step is not written here at all: it is the spec's ``adafactor_relative_step`` expression (its value
``rel_step_sz``), bound once at import for each ``warmup_init`` and lowered to two Python closures, one over
floats (the spec's float64 operators) and one over torch tensors. A call walks no tree and parses nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import hf_optim_spec
import numpy as np
import torch
from hf_optim_spec import formula
from torch import Tensor

from ._low_precision import dtype_scalar

__all__ = ["clip_divisor", "lr_at", "relative_step_size", "second_moment_decay", "step_lr", "unscaled_lr"]

Scalar = Any  # a Python float, a float64 NumPy array or a floating tensor (0-dim, or 1-D: one entry per parameter)


class _Constant:
    """A constant of the lowered expression, kept visible so that ``1.0 * x`` lowers to ``x`` (exact)."""

    __slots__ = ("value",)

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self, step: Scalar) -> float:
        return self.value


def _tensor_min(a: Scalar, b: Scalar) -> Scalar:  # Python's min(a, b): a unless b < a (ties and NaN keep a)
    return torch.where(b < a, b, a)


def _tensor_max(a: Scalar, b: Scalar) -> Scalar:  # Python's max(a, b): a unless b > a
    return torch.where(b > a, b, a)


class _Closures:
    """:class:`hf_optim_spec.formula.LoweringOps` that turn a folded tree into a closure ``step -> value``."""

    def __init__(self, tensors: bool) -> None:
        self.tensors = tensors

    def constant(self, value: float) -> Callable[[Scalar], Scalar]:
        return _Constant(value)

    def step(self) -> Callable[[Scalar], Scalar]:
        return lambda step: step

    def binary(self, op: str, a: Any, b: Any) -> Callable[[Scalar], Scalar]:
        if op == "*" and isinstance(a, _Constant) and a.value == 1.0:
            return b  # type: ignore[no-any-return]
        if self.tensors:
            fn = {"+": torch.add, "-": torch.sub, "*": torch.mul, "/": torch.true_divide, "**": torch.pow}[op]
            if isinstance(a, _Constant):  # a Python number on the left: the tensor's reflected operator
                value = a.value
                name = {"+": "__radd__", "-": "__rsub__", "*": "__rmul__", "/": "__rtruediv__", "**": "__rpow__"}[op]
                reflected = getattr(Tensor, name)
                return lambda step: reflected(b(step), value)
            return lambda step: fn(a(step), b(step))
        float_op = formula.BINARY_OPERATORS[op]
        return lambda step: float_op(a(step), b(step))

    def neg(self, a: Any) -> Callable[[Scalar], Scalar]:
        return lambda step: -a(step)

    def compare(self, op: str, a: Any, b: Any) -> Callable[[Scalar], Scalar]:
        compare = formula.COMPARISONS[op]
        return lambda step: compare(a(step), b(step))

    def logical(self, op: str, a: Any, b: Any) -> Callable[[Scalar], Scalar]:
        if self.tensors:
            fn = torch.logical_and if op == "and" else torch.logical_or
            return lambda step: fn(torch.as_tensor(a(step)), torch.as_tensor(b(step)))
        if op == "and":
            return lambda step: a(step) and b(step)
        return lambda step: a(step) or b(step)

    def not_(self, a: Any) -> Callable[[Scalar], Scalar]:
        if self.tensors:
            return lambda step: torch.logical_not(torch.as_tensor(a(step)))
        return lambda step: not a(step)

    def select(self, cond: Any, a: Any, b: Any) -> Callable[[Scalar], Scalar]:
        if self.tensors:
            return lambda step: torch.where(cond(step), a(step), b(step))
        return lambda step: a(step) if cond(step) else b(step)

    def call(self, func: str, args: list[Any]) -> Callable[[Scalar], Scalar]:
        if self.tensors:
            if func in ("min", "max"):
                pick = _tensor_min if func == "min" else _tensor_max
                first, rest = args[0], args[1:]
                if len(rest) == 1:  # the common two-argument form, without the loop
                    second = rest[0]
                    return lambda step: pick(first(step), second(step))

                def fold(step: Scalar) -> Scalar:
                    value = first(step)
                    for arg in rest:
                        value = pick(value, arg(step))
                    return value

                return fold
            fn = {"abs": torch.abs, "floor": torch.floor, "sqrt": torch.sqrt, "cos": torch.cos}.get(func)
            fn = fn or {"sin": torch.sin, "exp": torch.exp, "log": torch.log}[func]
            (arg,) = args
            return lambda step: fn(arg(step))
        float_fn = formula.FUNCTIONS[func][1]
        return lambda step: float_fn(*(arg(step) for arg in args))

    def schedule(self, schedule: Callable[[Any], Any], arg: Any) -> Callable[[Scalar], Scalar]:
        raise formula.FormulaError("Adafactor's relative step calls no schedule")


def _relative_step(warmup_init: bool, tensors: bool) -> Callable[[Scalar], Scalar]:
    """The spec's relative step ``rel_step_sz`` with ``relative_step=True``, as a closure over floats or tensors."""
    program = hf_optim_spec.get("adafactor_relative_step").program
    assert program is not None
    # with scale_parameter=False the expression's result is 1.0 * rel_step_sz (the 1.0 lowers away)
    bound = program.bind(
        {
            "lr": None,
            "relative_step": True,
            "warmup_init": warmup_init,
            "scale_parameter": False,
            "eps2": 0.0,
            "rms": 0.0,
        }
    )
    return formula.lower(bound.tree, _Closures(tensors))  # type: ignore[no-any-return]


#: (warmup_init, on tensors) -> the relative step of a step count
_RELATIVE_STEP = {(w, t): _relative_step(w, t) for w in (False, True) for t in (False, True)}


def relative_step_size(step: Scalar, *, warmup_init: bool) -> Scalar:
    """``min(1e-6 t if warmup_init else 1e-2, 1/sqrt(t))`` at step ``t`` (a float, or a tensor: then in float64)."""
    if isinstance(step, Tensor):
        return _RELATIVE_STEP[warmup_init, True](step.to(torch.float64))
    return _RELATIVE_STEP[warmup_init, False](step)


def unscaled_lr(lr: float | Tensor | None, step: Scalar, *, relative_step: bool, warmup_init: bool) -> Scalar:
    """``rho_t``: the relative step at ``step`` with ``relative_step``, else the manual ``lr``."""
    rel = relative_step_size(step, warmup_init=warmup_init) if relative_step else lr
    if rel is None:
        raise ValueError("Adafactor with relative_step=False needs a manual `lr`")
    return rel


def step_lr(rel: Scalar, rms: Scalar, *, eps2: float, scale_parameter: bool) -> Scalar:
    """``alpha_t``, the lr of the step: ``max(eps2, RMS) * rho_t`` with ``scale_parameter``, else ``rho_t``.

    On tensors the result has the RMS's dtype and ``eps2 * rho_t`` is formed before that rounding (as the float64
    reference); Python's ``max`` tie and NaN rules are kept (``eps2`` unless ``RMS > eps2``).
    """
    if not scale_parameter:
        return rel
    if isinstance(rms, Tensor):
        if isinstance(rel, Tensor):
            return torch.where(rms > eps2, rms * rel.to(rms.dtype), (eps2 * rel).to(rms.dtype))
        return torch.where(rms > eps2, rms * rel, dtype_scalar(eps2 * rel, rms.dtype))
    if isinstance(rms, np.ndarray):
        return np.where(rms > eps2, rms * rel, eps2 * rel)
    return rms * rel if rms > eps2 else eps2 * rel


def second_moment_decay(step: Scalar, decay_rate: float) -> Scalar:
    """``beta2t = 1 - t**decay_rate`` (a float, or for a tensor step a float64 tensor)."""
    if isinstance(step, Tensor):
        return 1.0 - torch.pow(step.to(torch.float64), decay_rate)
    return 1.0 - math.pow(step, decay_rate)


def clip_divisor(update_rms: Any, clip_threshold: float) -> Any:
    """``max(RMS(U) / d, 1)``, what the update is divided by: on a float or a NumPy array, a tensor (in place) or a
    list of tensors (NaN stays NaN)."""
    if isinstance(update_rms, (list, tuple)):  # the per-tensor RMS of a multi-tensor step
        torch._foreach_div_(update_rms, clip_threshold)
        torch._foreach_clamp_min_(update_rms, 1.0)
        return update_rms
    if isinstance(update_rms, Tensor):
        return update_rms.div_(clip_threshold).clamp_(min=1.0)
    return np.maximum(update_rms / clip_threshold, 1.0)  # a NumPy array (the native calls) or a float


def lr_at(
    lr: float | Tensor | None,
    step: Scalar,
    rms: Scalar,
    *,
    eps2: float,
    relative_step: bool,
    warmup_init: bool,
    scale_parameter: bool,
) -> Scalar:
    """The lr of a step from the step count and the parameter RMS (transformers' ``Adafactor._get_lr``)."""
    rel = unscaled_lr(lr, step, relative_step=relative_step, warmup_init=warmup_init)
    return step_lr(rel, rms, eps2=eps2, scale_parameter=scale_parameter)
