"""Benchmark peers that time "what transformers does" (NOT transformers code, NOT part of the packages).

The project never imports transformers. Each class below performs, per parameter and in the same order, the torch
operations that ``transformers.AdamW`` (v4.49) and ``transformers.Adafactor`` (v4.57) perform in their ``step``:
the same in-place updates, the same full-size temporaries, a Python int step counter and Python-float
hyperparameter arithmetic (Adafactor's lr also reads the parameter RMS back to the host). Only the operation
sequence matters here, so the code is organised our own way and carries no validation, closures or sparse checks.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch

__all__ = ["TransformersStyleAdafactor", "TransformersStyleAdamW"]

_SIXTEEN_BIT = (torch.float16, torch.bfloat16)


class _PerParameterLoop(torch.optim.Optimizer):
    """An optimizer whose step visits each parameter with a gradient in turn (``_update``), as transformers' do."""

    _DEFAULTS: ClassVar[dict[str, Any]] = {}

    def __init__(self, params: Any, **hyperparameters: Any) -> None:
        super().__init__(params, {**self._DEFAULTS, **hyperparameters})

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, self.state[param], group)

    def _update(self, param: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        raise NotImplementedError


class TransformersStyleAdamW(_PerParameterLoop):
    """The per-parameter loop of transformers' AdamW: eps after the square root, bias correction in the step size."""

    _DEFAULTS: ClassVar[dict[str, Any]] = dict(
        lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, correct_bias=True
    )

    def _update(self, param: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        grad = param.grad
        if not state:  # first visit: an int counter and two zero moments
            state.update(step=0, exp_avg=torch.zeros_like(param), exp_avg_sq=torch.zeros_like(param))
        state["step"] += 1
        t, (b1, b2) = state["step"], group["betas"]
        mean, second = state["exp_avg"], state["exp_avg_sq"]
        mean.mul_(b1).add_(grad, alpha=1.0 - b1)
        second.mul_(b2).addcmul_(grad, grad, value=1.0 - b2)
        denominator = second.sqrt().add_(group["eps"])  # a fresh tensor each step, as upstream
        scale = group["lr"] * math.sqrt(1.0 - b2**t) / (1.0 - b1**t) if group["correct_bias"] else group["lr"]
        param.addcdiv_(mean, denominator, value=-scale)
        if group["weight_decay"] > 0.0:  # decoupled decay, after the Adam move
            param.add_(param, alpha=-group["lr"] * group["weight_decay"])


def _root_mean_square(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.norm(2) / (tensor.numel() ** 0.5)


def _host_lr(group: dict[str, Any], t: int, rms: torch.Tensor) -> Any:
    """The step's lr with Python's ``min``/``max``: comparing against the RMS tensor syncs with the device."""
    base = group["lr"]
    if group["relative_step"]:
        base = min(1e-6 * t if group["warmup_init"] else 1e-2, 1.0 / math.sqrt(t))
    return (max(group["eps"][1], rms) if group["scale_parameter"] else 1.0) * base


def _normalised_update(grad: torch.Tensor, state: dict[str, Any], beta2t: float, eps1: float) -> torch.Tensor:
    """Decay the second-moment statistics with ``beta2t`` and return the gradient divided by their square root."""
    squared = (grad**2) + eps1  # two full-size temporaries, as upstream
    keep, take = beta2t, 1.0 - beta2t
    if "exp_avg_sq" in state:  # vectors: one statistic per element
        full = state["exp_avg_sq"]
        full.mul_(keep).add_(squared, alpha=take)
        return full.rsqrt().mul_(grad)
    rows, cols = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
    rows.mul_(keep).add_(squared.mean(dim=-1), alpha=take)
    cols.mul_(keep).add_(squared.mean(dim=-2), alpha=take)
    row_part = (rows / rows.mean(dim=-1, keepdim=True)).rsqrt_().unsqueeze(-1)
    col_part = cols.unsqueeze(-2).rsqrt()
    return torch.mul(row_part, col_part).mul_(grad)  # the outer product is materialised, as upstream


class TransformersStyleAdafactor(_PerParameterLoop):
    """The per-parameter loop of transformers' Adafactor: factored statistics, a host-side lr, full temporaries."""

    _DEFAULTS: ClassVar[dict[str, Any]] = dict(
        lr=None, eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=-0.8, beta1=None, weight_decay=0.0,
        scale_parameter=True, relative_step=True, warmup_init=False,
    )  # fmt: skip

    @staticmethod
    def _first_state(grad: torch.Tensor, state: dict[str, Any], with_momentum: bool) -> None:
        """Zero statistics (factored over the last two dims for rank >= 2), an int step and a zero RMS."""
        shape = grad.shape
        state.update(step=0, RMS=0)
        if with_momentum:
            state["exp_avg"] = torch.zeros_like(grad)
        if len(shape) < 2:
            state["exp_avg_sq"] = torch.zeros_like(grad)
        else:
            state["exp_avg_sq_row"] = torch.zeros(shape[:-1]).to(grad)
            state["exp_avg_sq_col"] = torch.zeros(shape[:-2] + shape[-1:]).to(grad)

    def _update(self, param: torch.Tensor, state: dict[str, Any], group: dict[str, Any]) -> None:
        grad = param.grad.float() if param.grad.dtype in _SIXTEEN_BIT else param.grad  # type: ignore[union-attr]
        beta1 = group["beta1"]
        if not state:
            self._first_state(grad, state, beta1 is not None)
        work = param.float() if param.dtype in _SIXTEEN_BIT else param  # 16-bit parameters step in float32
        state["step"] += 1
        state["RMS"] = _root_mean_square(work)
        lr = _host_lr(group, state["step"], state["RMS"])
        update = _normalised_update(grad, state, 1.0 - math.pow(state["step"], group["decay_rate"]), group["eps"][0])
        update.div_((_root_mean_square(update) / group["clip_threshold"]).clamp_(min=1.0))
        update.mul_(lr)
        if beta1 is not None:  # momentum over the already lr-scaled update
            state["exp_avg"].mul_(beta1).add_(update, alpha=1 - beta1)
            update = state["exp_avg"]
        if group["weight_decay"] != 0:
            work.add_(work, alpha=-group["weight_decay"] * lr)
        work.add_(-update)
        if param.dtype in _SIXTEEN_BIT:
            param.copy_(work)
