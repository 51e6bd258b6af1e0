"""AdamW with transformers' numerics (spec id ``adamw``)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.optim import Optimizer

from . import _docs
from ._arguments import check_flags, spec_validate
from ._begin_step import begin_step
from ._docs import FUSED_DOC
from ._low_precision import rounding_keys, step_in_float32
from ._path_choice import fused_eligible, use_foreach, use_fused
from ._step_count import advance_steps, as_step_tensor, note_advanced
from ._torch_fused_adam import kernel_moment_ratios, saturated_step
from ._state_check import COUNTER, CheckedOptimizer, Slot

__all__ = ["AdamW", "adamw"]

_SPEC_ID = "adamw"
_HYPERPARAMS = (
    "lr",
    "betas",
    "eps",
    "weight_decay",
    "correct_bias",
    "fp32_math",
    "stochastic_rounding",
    "rounding_seed",
)


class AdamW(CheckedOptimizer, Optimizer):
    _SPEC_ID = _SPEC_ID
    _GROUP_KEYS: ClassVar[Mapping[str, str]] = {key: key for key in _HYPERPARAMS}
    _LEGACY_DEFAULTS: ClassVar[Mapping[str, Any]] = {
        "correct_bias": True,
        "maximize": False,
        "foreach": None,
        "fused": None,
        "fp32_math": False,
        "stochastic_rounding": False,
        "rounding_seed": 0,
    }

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        correct_bias: bool = True,
        no_deprecation_warning: bool = False,
        *,
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        fp32_math: bool = False,
        stochastic_rounding: bool = False,
        rounding_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        hp = spec_validate(
            _SPEC_ID,
            {
                **kwargs,
                "lr": lr,
                "betas": betas,
                "eps": eps,
                "weight_decay": weight_decay,
                "correct_bias": correct_bias,
                "no_deprecation_warning": no_deprecation_warning,
                "fp32_math": fp32_math,
                "stochastic_rounding": stochastic_rounding,
                "rounding_seed": rounding_seed,
            },
        )
        defaults: dict[str, Any] = {
            "lr": lr if isinstance(lr, Tensor) else hp["lr"],
            "betas": tuple(hp["betas"]),
            "eps": hp["eps"],
            "weight_decay": hp["weight_decay"],
            "correct_bias": hp["correct_bias"],
            "maximize": maximize,
            "foreach": foreach,
            "fused": fused,
            "fp32_math": hp["fp32_math"],
            "stochastic_rounding": hp["stochastic_rounding"],
            "rounding_seed": hp["rounding_seed"],
        }
        check_flags(maximize=maximize, foreach=foreach, fused=fused)
        use_fused(fused, foreach)  # rejects foreach=True with fused=True
        super().__init__(params, defaults)

    def _state_layout(self, param: Tensor, group: Mapping[str, Any]) -> dict[str, Slot]:
        shape = tuple(param.shape)
        return {"step": COUNTER, "exp_avg": Slot(shape), "exp_avg_sq": Slot(shape, nonnegative=True)}

    def _init_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        exp_avgs: list[Tensor],
        exp_avg_sqs: list[Tensor],
        state_steps: list[Tensor],
    ) -> None:
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if len(state) == 0:
                state["step"] = as_step_tensor(0, p)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            else:
                # transformers checkpoints hold an int step; torch.load may leave it on another device.
                state["step"] = as_step_tensor(state["step"], p)
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            state_steps.append(state["step"])

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform a single optimization step.

        Args:
            closure (`Callable`, *optional*): A closure that reevaluates the model and returns the loss.
        """
        loss = begin_step(
            self,
            closure,
            "Adam does not support sparse gradients, please consider SparseAdam instead",
            fused_dtypes=(torch.float32, torch.bfloat16),
        )
        offset = 0  # position of the group's first parameter among all parameters (stochastic rounding keys)
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            exp_avgs: list[Tensor] = []
            exp_avg_sqs: list[Tensor] = []
            state_steps: list[Tensor] = []
            self._init_group(group, params, grads, exp_avgs, exp_avg_sqs, state_steps)
            first, offset = offset, offset + len(group["params"])
            if not params:
                continue
            beta1, beta2 = group["betas"]
            hyper: dict[str, Any] = {
                "foreach": group["foreach"],
                "fused": group["fused"],
                "lr": group["lr"],
                "beta1": beta1,
                "beta2": beta2,
                "eps": group["eps"],
                "weight_decay": group["weight_decay"],
                "correct_bias": group["correct_bias"],
                "maximize": group["maximize"],
            }
            if not group["fp32_math"]:
                adamw(params, grads, exp_avgs, exp_avg_sqs, state_steps, **hyper)
                continue
            keys = None
            if group["stochastic_rounding"]:
                indices = [first + j for j, p in enumerate(group["params"]) if p.grad is not None]
                keys = rounding_keys(group["rounding_seed"], params, indices, state_steps)
            step_in_float32(adamw, params, grads, [exp_avgs, exp_avg_sqs], [state_steps], keys, **hyper)
            if keys is not None:
                note_advanced([s for s, key in zip(state_steps, keys) if key is not None])
        return loss


AdamW.__doc__ = rf"""Adam with decoupled weight decay, with the numerics of ``transformers.AdamW`` (v4.49).

    Drop-in for the (removed) transformers optimizer: same signature, defaults, state names (``step``,
    ``exp_avg``, ``exp_avg_sq``) and update order. It differs from ``torch.optim.AdamW``: epsilon is added to
    :math:`\sqrt{{v_t}}` *before* the bias correction, which is folded into the step size, and the weight decay is
    applied *after* the Adam update, with the group's ``lr``.

    .. math::
        \begin{{aligned}}
            &g_t \leftarrow \nabla_\theta f_t(\theta_{{t-1}}) \quad (-\nabla \text{{ if maximize}}) \\
            &m_t \leftarrow \beta_1 m_{{t-1}} + (1-\beta_1) g_t \\
            &v_t \leftarrow \beta_2 v_{{t-1}} + ((1-\beta_2) g_t) g_t \\
            &\alpha_t \leftarrow \gamma \sqrt{{1-\beta_2^t}} / (1-\beta_1^t)
                \quad (\alpha_t = \gamma \text{{ if not correct\_bias}}) \\
            &\theta_t \leftarrow \theta_{{t-1}} + (-\alpha_t m_t) / (\sqrt{{v_t}} + \epsilon) \\
            &\theta_t \leftarrow \theta_t + (-\gamma\lambda)\,\theta_t \quad \text{{if }} \lambda > 0
        \end{{aligned}}

    The for-loop and foreach paths run the operations in exactly this order and rounding (no fused multiply-add),
    so float64 results are bit-for-bit those of the float64 reference ``hf_optim_spec.reference.adamw``.

    The fused path (the default for float32 tensors on CPU and CUDA; bfloat16 tensors take it only with
    ``fused=True``, because the kernel computes in float32 and rounds once, which is more accurate than but not
    equal to transformers' bfloat16 arithmetic, where every in-place op rounds to bfloat16) drives torch's fused AdamW kernel
    (``torch._fused_adamw_``, one pass per tensor) with an exact reparametrisation of this update. The kernel
    computes :math:`\theta \leftarrow \theta(1-\gamma'\lambda') - \gamma' m_t/(\sqrt{{v_t}}+\epsilon)` when its
    bias corrections are 1, which it is made to do by passing it an infinite step count. Since transformers'
    update is :math:`(\theta - \alpha_t m_t/(\sqrt{{v_t}}+\epsilon))(1-\gamma\lambda)`, the kernel gets
    :math:`\gamma' = \alpha_t(1-\gamma\lambda)` and :math:`\lambda' = \gamma\lambda/\gamma'`, computed per step
    in float64 from a host mirror of ``step`` (no device synchronisation). The kernel rounds differently (it keeps
    intermediates in float32, uses a lerp for :math:`m_t` and one product for the decay), so its results agree with
    the reference within the spec float32 tolerance, not bit for bit. The state (``step``, ``exp_avg``,
    ``exp_avg_sq``) is the same on every path.

    Mixed precision (extensions, off by default): with ``fp32_math=True`` a bfloat16/float16 parameter is stepped
    as a float32 one (float32 copies of it, its gradient and its moments go through the path above; the
    parameter and the moments are rounded back to its dtype once per step), and ``stochastic_rounding=True``
    (which needs ``fp32_math=True``) stores a bfloat16 parameter with stochastic rounding of that float32
    result. The float64 reference (``fp32_math``, ``key``) defines both.

    Args:
        {_docs.PARAMS}
        lr (`float` or `torch.Tensor`, *optional*, defaults to 1e-3):
            The step size. A tensor lr is updated in place by the schedulers, so a compiled
            training step does not recompile when it changes.
        betas (`tuple[float, float]`, *optional*, defaults to `(0.9, 0.999)`):
            Decay rates ``(beta1, beta2)`` of the first and second moment averages.
        eps (`float`, *optional*, defaults to 1e-6):
            Added to ``sqrt(v)`` in the denominator of the update (keeps it away from zero).
        weight_decay (`float`, *optional*, defaults to 0.0):
            Weight decay decoupled from the gradient, applied after the Adam update (only a positive value acts,
            as in transformers).
        correct_bias (`bool`, *optional*, defaults to `True`):
            Fold Adam's bias corrections into the step size; False reproduces the original BERT optimizer, which
            has none.
        no_deprecation_warning (`bool`, *optional*, defaults to `False`):
            Accepted for compatibility; this implementation is not deprecated and never warns.
        kwargs: Any other keyword is rejected with the spec's TypeError (``Unknown argument `x` ...``).
        {_docs.MAXIMIZE}
        {_docs.FOREACH}
        {FUSED_DOC}
        {_docs.FP32_MATH}
        {_docs.STOCHASTIC_ROUNDING}
            It needs ``fp32_math=True``: the parameter is rounded from the float32 result of the step. The step in
            the rounding key is the parameter's own ``step`` after the update (1 at the first update).
        {_docs.ROUNDING_SEED}

    State (per parameter):
        ``step`` (0-dim float32 tensor on the parameter's device; a transformers checkpoint's Python int step
        loads too), ``exp_avg``, ``exp_avg_sq`` (like the parameter).

    Raises:
        ValueError: a hyperparameter is out of range (messages from the spec ``adamw``), or
            ``stochastic_rounding=True`` without ``fp32_math=True``; at ``step``, a float16 parameter with a
            gradient in a group with ``stochastic_rounding=True``.
        TypeError: a hyperparameter has the wrong type.

    References:
        Loshchilov & Hutter, *Decoupled Weight Decay Regularization*, https://arxiv.org/abs/1711.05101

    Example:
        >>> model = torch.nn.Linear(4, 2)
        >>> optimizer = AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
        >>> model(torch.randn(8, 4)).sum().backward()
        >>> optimizer.step()
    """


def adamw(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    foreach: bool | None = None,
    fused: bool | None = None,
    *,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    correct_bias: bool,
    maximize: bool = False,
) -> None:
    """Functional AdamW (transformers numerics): updates ``params`` and the state lists in place.

    See :class:`AdamW` for the algorithm. ``state_steps`` are 0-dim tensors incremented here. ``fused`` picks
    torch's fused kernel (default: float32 CPU/CUDA tensors when ``foreach`` is not given, bfloat16 ones only with
    ``fused=True``; the others
    take the paths below), ``foreach`` the multi-tensor path (default: on accelerators only).
    """
    hyper: dict[str, Any] = {
        "lr": lr,
        "beta1": beta1,
        "beta2": beta2,
        "eps": eps,
        "weight_decay": weight_decay,
        "correct_bias": correct_bias,
        "maximize": maximize,
    }
    if use_fused(fused, foreach, lr):
        rest = _fused_adamw(params, grads, exp_avgs, exp_avg_sqs, state_steps, strict=bool(fused), **hyper)
        if not rest:
            return
        params, grads, exp_avgs, exp_avg_sqs, state_steps = (
            [lst[i] for i in rest] for lst in (params, grads, exp_avgs, exp_avg_sqs, state_steps)
        )
    func = _multi_tensor_adamw if use_foreach(foreach, params) else _single_tensor_adamw
    func(params, grads, exp_avgs, exp_avg_sqs, state_steps, **hyper)


def _step_size(lr: float | Tensor, beta1: float, beta2: float, step: Tensor, correct_bias: bool) -> float | Tensor:
    """gamma * sqrt(1 - beta2**t) / (1 - beta1**t) in float64, for a step tensor of any shape (no host sync)."""
    if not correct_bias:
        return lr
    t = step.to(torch.float64)
    bias_correction1 = 1.0 - torch.pow(beta1, t)
    bias_correction2 = 1.0 - torch.pow(beta2, t)
    return lr * bias_correction2.sqrt() / bias_correction1


def _single_tensor_adamw(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    correct_bias: bool,
    maximize: bool,
) -> None:
    for param, raw_grad, exp_avg, exp_avg_sq, step_t in zip(params, grads, exp_avgs, exp_avg_sqs, state_steps):
        grad = -raw_grad if maximize else raw_grad
        step_t.add_(1)
        exp_avg.mul_(beta1).add_(grad * (1.0 - beta1))
        exp_avg_sq.mul_(beta2).add_((grad * (1.0 - beta2)).mul_(grad))
        denom = exp_avg_sq.sqrt().add_(eps)
        step_size = _step_size(lr, beta1, beta2, step_t, correct_bias)
        param.add_((exp_avg * -step_size).div_(denom))
        if weight_decay > 0.0:
            param.add_(param * (-lr * weight_decay))


def _multi_tensor_adamw(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    correct_bias: bool,
    maximize: bool,
) -> None:
    grouped = Optimizer._group_tensors_by_device_and_dtype(
        [params, grads, exp_avgs, exp_avg_sqs, state_steps]  # type: ignore[list-item]
    )
    for (d_params, d_raw_grads, d_exp_avgs, d_exp_avg_sqs, d_steps), _ in grouped.values():
        d_grads = torch._foreach_neg(d_raw_grads) if maximize else d_raw_grads
        torch._foreach_add_(d_steps, 1)
        torch._foreach_mul_(d_exp_avgs, beta1)
        torch._foreach_add_(d_exp_avgs, torch._foreach_mul(d_grads, 1.0 - beta1))
        torch._foreach_mul_(d_exp_avg_sqs, beta2)
        scaled_sq = torch._foreach_mul(d_grads, 1.0 - beta2)
        torch._foreach_mul_(scaled_sq, d_grads)
        torch._foreach_add_(d_exp_avg_sqs, scaled_sq)
        del scaled_sq
        denoms = torch._foreach_sqrt(d_exp_avg_sqs)
        torch._foreach_add_(denoms, eps)
        step_size = _step_size(lr, beta1, beta2, torch.stack(d_steps), correct_bias)
        if isinstance(step_size, Tensor) and step_size.dim() == 1:
            updates = torch._foreach_mul(d_exp_avgs, list(torch.neg(step_size).unbind(0)))
        else:
            updates = torch._foreach_mul(d_exp_avgs, -step_size)
        torch._foreach_div_(updates, denoms)
        torch._foreach_add_(d_params, updates)
        del updates, denoms
        if weight_decay > 0.0:
            torch._foreach_add_(d_params, torch._foreach_mul(d_params, -lr * weight_decay))


def _fused_adamw(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    *,
    strict: bool,
    lr: float | Tensor,
    beta1: float,
    beta2: float,
    eps: float,
    weight_decay: float,
    correct_bias: bool,
    maximize: bool,
) -> list[int]:
    """torch's fused AdamW kernel with the reparametrisation in :class:`AdamW`'s docstring.

    Runs the tensors it can take, grouped by device, dtype and step; returns the indices of the others (an error
    when ``strict``, i.e. ``fused=True``). The kernel sees an infinite step (no bias correction of its own); the
    bias correction, the learning rate and the decay are folded into its ``lr`` and ``weight_decay``.
    """
    if isinstance(lr, Tensor):
        if lr.device.type != "cpu" or lr.numel() != 1:
            if strict:
                raise RuntimeError("fused=True needs a float lr or a one-element CPU tensor lr")
            return list(range(len(params)))
        lr = float(lr)
    decay = lr * weight_decay if weight_decay > 0.0 else 0.0  # transformers decays only for weight_decay > 0
    if decay == 1.0:  # the update is multiplied by 1 - decay == 0: there is no kernel lr to fold it into
        if strict:
            raise RuntimeError("fused=True cannot run lr * weight_decay == 1")
        return list(range(len(params)))
    rest: list[int] = []
    buckets: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, param in enumerate(params):
        # By default only float32 takes the kernel: on bfloat16 it would silently change transformers' numerics.
        dtypes = (torch.float32, torch.bfloat16) if strict else (torch.float32,)
        if fused_eligible(param, grads[i], exp_avgs[i], exp_avg_sqs[i], dtypes=dtypes):
            buckets.setdefault((param.device, param.dtype), []).append(i)
        else:
            rest.append(i)
    if strict and rest:
        raise RuntimeError(
            "fused=True supports dense contiguous float32/bfloat16 tensors on CPU or CUDA; got "
            f"{sorted({(str(params[i].dtype), params[i].device.type) for i in rest})}"
        )
    for (device, _), indices in buckets.items():
        steps = advance_steps([state_steps[i] for i in indices])
        by_step: dict[float, list[int]] = {}
        for i, t in zip(indices, steps):
            by_step.setdefault(t, []).append(i)
        for t, group in by_step.items():
            step_size = lr * math.sqrt(1.0 - beta2**t) / (1.0 - beta1**t) if correct_bias else lr
            q, r = kernel_moment_ratios(device, beta1, beta2, t)  # (1, 1) on CPU; see kernel_moment_ratios
            step_size *= math.sqrt(r) / q
            kernel_lr = step_size * (1.0 - decay)
            kernel_decay = decay / kernel_lr if decay != 0.0 and kernel_lr != 0.0 else 0.0
            torch._fused_adamw_(
                [params[i] for i in group],
                [grads[i] for i in group],
                [exp_avgs[i] for i in group],
                [exp_avg_sqs[i] for i in group],
                [],
                [saturated_step(device)] * len(group),
                lr=kernel_lr,
                beta1=beta1,
                beta2=beta2,
                weight_decay=kernel_decay,
                eps=eps * math.sqrt(r),
                amsgrad=False,
                maximize=maximize,
            )
    return rest
