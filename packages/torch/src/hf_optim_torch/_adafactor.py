"""Adafactor with transformers' numerics (spec id ``adafactor``), plus its proxy schedule."""

from __future__ import annotations

import array
import ctypes
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.optim import Optimizer

from . import _docs, _native
from ._common import (
    FUSED_DOC,
    advance_steps,
    as_step_tensor,
    begin_step,
    check_flags,
    check_optimizer,
    dtype_scalar,
    fused_eligible,
    note_advanced,
    rounding_keys,
    scratch,
    spec_validate,
    store,
    store_all,
    use_foreach,
    use_fused,
)
from ._schedules import SpecFactorLR
from ._state_check import COUNTER, CheckedOptimizer, Slot

__all__ = ["Adafactor", "AdafactorSchedule", "adafactor", "get_adafactor_schedule"]

_SPEC_ID = "adafactor"
_HYPERPARAMS = (
    "lr",
    "eps",
    "clip_threshold",
    "decay_rate",
    "beta1",
    "weight_decay",
    "scale_parameter",
    "relative_step",
    "warmup_init",
    "first_moment",
    "stochastic_rounding",
    "rounding_seed",
)
_LOW_PRECISION = (torch.float16, torch.bfloat16)


class Adafactor(CheckedOptimizer, Optimizer):
    _SPEC_ID = _SPEC_ID
    _GROUP_KEYS: ClassVar[Mapping[str, str]] = {key: key for key in _HYPERPARAMS}
    _LEGACY_DEFAULTS: ClassVar[Mapping[str, Any]] = {
        "first_moment": "lr_scaled",
        "maximize": False,
        "foreach": None,
        "fused": None,
        "stochastic_rounding": False,
        "rounding_seed": 0,
    }

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor | None = None,
        eps: tuple[float, float] = (1e-30, 1e-3),
        clip_threshold: float = 1.0,
        decay_rate: float = -0.8,
        beta1: float | None = None,
        weight_decay: float = 0.0,
        scale_parameter: bool = True,
        relative_step: bool = True,
        warmup_init: bool = False,
        *,
        first_moment: str = "lr_scaled",
        maximize: bool = False,
        foreach: bool | None = None,
        fused: bool | None = None,
        stochastic_rounding: bool = False,
        rounding_seed: int = 0,
        **kwargs: Any,
    ) -> None:
        hp = spec_validate(
            _SPEC_ID,
            {
                **kwargs,
                "lr": lr,
                "eps": eps,
                "clip_threshold": clip_threshold,
                "decay_rate": decay_rate,
                "beta1": beta1,
                "weight_decay": weight_decay,
                "scale_parameter": scale_parameter,
                "relative_step": relative_step,
                "warmup_init": warmup_init,
                "first_moment": first_moment,
                "stochastic_rounding": stochastic_rounding,
                "rounding_seed": rounding_seed,
            },
        )
        defaults: dict[str, Any] = {name: hp[name] for name in _HYPERPARAMS}
        if isinstance(lr, Tensor):
            defaults["lr"] = lr
        defaults["eps"] = tuple(hp["eps"])
        defaults["maximize"] = maximize
        defaults["foreach"] = foreach
        defaults["fused"] = fused
        check_flags(maximize=maximize, foreach=foreach, fused=fused)
        use_fused(fused, foreach)  # rejects foreach=True with fused=True
        super().__init__(params, defaults)

    def _state_layout(self, param: Tensor, group: Mapping[str, Any]) -> dict[str, Slot]:
        shape = tuple(param.shape)
        slots = {"step": COUNTER, "RMS": Slot((), number_ok=True)}
        if group["beta1"] is not None:
            slots["exp_avg"] = Slot(shape)
        if len(shape) >= 2:
            slots["exp_avg_sq_row"] = Slot(shape[:-1], nonnegative=True)
            slots["exp_avg_sq_col"] = Slot(shape[:-2] + shape[-1:], nonnegative=True)
        else:
            slots["exp_avg_sq"] = Slot(shape, nonnegative=True)
        return slots

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a checkpoint (ours or transformers'), checked first, keeping the statistics in their saved precision.

        ``torch.optim.Optimizer`` casts floating state to the parameter dtype; Adafactor keeps float32 statistics
        for bfloat16/float16 parameters, so they are restored from the saved tensors after the base class loads.

        Raises:
            ValueError, TypeError: the checkpoint does not fit these parameters (a state of another shape or
                optimizer, a bad step, bad hyperparameters); nothing is changed.
        """
        super().load_state_dict(state_dict)
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for saved_id, p in zip(saved_ids, params):
            saved = state_dict["state"].get(saved_id)
            if not saved or p.dtype not in _LOW_PRECISION:
                continue
            state = self.state[p]
            for key, value in saved.items():
                if key != "step" and isinstance(value, Tensor) and value.is_floating_point():
                    state[key] = value.to(device=p.device, dtype=torch.float32)

    @staticmethod
    def _get_lr(param_group: dict[str, Any], param_state: dict[str, Any]) -> Tensor | float:
        """The learning rate of one parameter at its current step (transformers' ``Adafactor._get_lr``).

        Works on the state after at least one step; returns a tensor and never synchronises with the host.
        """
        step = param_state["step"]
        rms = param_state["RMS"]
        if not isinstance(step, Tensor):
            step = torch.tensor(float(step), dtype=torch.float32)
        if not isinstance(rms, Tensor):
            rms = torch.tensor(float(rms), dtype=torch.float32, device=step.device)
        return _adafactor_lr(
            param_group["lr"],
            step,
            rms,
            eps2=param_group["eps"][1],
            relative_step=param_group["relative_step"],
            warmup_init=param_group["warmup_init"],
            scale_parameter=param_group["scale_parameter"],
        )

    def get_lr(self) -> list[Tensor | float | None]:
        """The current learning rate of every param group (of its first parameter, as ``AdafactorSchedule``).

        ``None`` for a group whose first parameter has not been stepped yet. No proxy scheduler needed.
        """
        lrs: list[Tensor | float | None] = []
        for group in self.param_groups:
            state = self.state.get(group["params"][0], {}) if group["params"] else {}
            lrs.append(self._get_lr(group, state) if "step" in state else None)
        return lrs

    def _init_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        state_steps: list[Tensor],
        rms_values: list[Tensor],
        exp_avgs: list[Tensor | None],
        row_vars: list[Tensor | None],
        col_vars: list[Tensor | None],
        full_vars: list[Tensor | None],
    ) -> None:
        use_first_moment = group["beta1"] is not None
        for p in group["params"]:
            if p.grad is None:
                continue
            grad = p.grad
            if grad.dtype in _LOW_PRECISION:
                grad = grad.float()
            state = self.state[p]
            factored = grad.dim() >= 2
            if len(state) == 0:
                state["step"] = as_step_tensor(0, p)
                if use_first_moment:
                    state["exp_avg"] = torch.zeros_like(grad, memory_format=torch.preserve_format)
                if factored:
                    state["exp_avg_sq_row"] = torch.zeros_like(grad.select(-1, 0))
                    state["exp_avg_sq_col"] = torch.zeros_like(grad.select(-2, 0))
                else:
                    state["exp_avg_sq"] = torch.zeros_like(grad, memory_format=torch.preserve_format)
                state["RMS"] = grad.new_zeros(())
            else:
                state["step"] = as_step_tensor(state["step"], p)
                if not isinstance(state["RMS"], Tensor):  # a transformers checkpoint holds RMS=0 before a step
                    state["RMS"] = torch.tensor(float(state["RMS"]), dtype=grad.dtype, device=grad.device)
                if use_first_moment and "exp_avg" not in state:  # beta1 set on a group that had none
                    state["exp_avg"] = torch.zeros_like(grad, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(grad)
            state_steps.append(state["step"])
            rms_values.append(state["RMS"])
            exp_avgs.append(state.get("exp_avg") if use_first_moment else None)
            row_vars.append(state.get("exp_avg_sq_row"))
            col_vars.append(state.get("exp_avg_sq_col"))
            full_vars.append(state.get("exp_avg_sq"))

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform a single optimization step.

        Args:
            closure (`Callable`, *optional*): A closure that reevaluates the model and returns the loss.
        """
        loss = begin_step(self, closure, "Adafactor does not support sparse gradients.")
        offset = 0  # position of the group's first parameter among all parameters (stochastic rounding keys)
        for group in self.param_groups:
            params: list[Tensor] = []
            grads: list[Tensor] = []
            state_steps: list[Tensor] = []
            rms_values: list[Tensor] = []
            exp_avgs: list[Tensor | None] = []
            row_vars: list[Tensor | None] = []
            col_vars: list[Tensor | None] = []
            full_vars: list[Tensor | None] = []
            self._init_group(group, params, grads, state_steps, rms_values, exp_avgs, row_vars, col_vars, full_vars)
            first, offset = offset, offset + len(group["params"])
            if not params:
                continue
            keys = None
            if group["stochastic_rounding"]:
                indices = [first + j for j, p in enumerate(group["params"]) if p.grad is not None]
                keys = rounding_keys(group["rounding_seed"], params, indices, state_steps)
            adafactor(
                params,
                grads,
                state_steps,
                rms_values,
                exp_avgs,
                row_vars,
                col_vars,
                full_vars,
                foreach=group["foreach"],
                fused=group["fused"],
                lr=group["lr"],
                eps=group["eps"],
                clip_threshold=group["clip_threshold"],
                decay_rate=group["decay_rate"],
                beta1=group["beta1"],
                weight_decay=group["weight_decay"],
                scale_parameter=group["scale_parameter"],
                relative_step=group["relative_step"],
                warmup_init=group["warmup_init"],
                first_moment=group["first_moment"],
                maximize=group["maximize"],
                rounding_keys=keys,
            )
            if keys is not None:
                note_advanced([s for s, key in zip(state_steps, keys) if key is not None])
        return loss


Adafactor.__doc__ = rf"""Adafactor with the numerics of ``transformers.Adafactor`` (v4.57), every flag.

    Drop-in for transformers' optimizer (same signature, defaults, validation and state names ``step``,
    ``exp_avg``, ``exp_avg_sq_row``, ``exp_avg_sq_col``, ``exp_avg_sq``, ``RMS``). Tensors of rank >= 2 keep
    factored second moments over their last two dimensions; bfloat16/float16 parameters are updated in float32
    and stored back, their state stays float32. State tensors are created with ``*_like`` from the gradient.
    Paper: *Adafactor: Adaptive Learning Rates with Sublinear Memory Cost*, https://arxiv.org/abs/1804.04235

    .. math::
        \begin{{aligned}}
            &t \leftarrow t + 1, \quad \mathrm{{RMS}} \leftarrow \lVert\theta\rVert_2 / \sqrt{{n}} \\
            &\rho_t \leftarrow \min(10^{{-6}} t \text{{ if warmup\_init else }} 10^{{-2}},\ 1/\sqrt{{t}})
                \text{{ if relative\_step else }} \gamma \\
            &\alpha_t \leftarrow \max(\epsilon_2, \mathrm{{RMS}})\,\rho_t \text{{ if scale\_parameter else }} \rho_t \\
            &\hat\beta_{{2t}} \leftarrow 1 - t^{{c}}, \quad u \leftarrow g^2 + \epsilon_1 \\
            &R \leftarrow \hat\beta_{{2t}} R + (1-\hat\beta_{{2t}})\,\mathrm{{mean}}_{{-1}}(u), \quad
             C \leftarrow \hat\beta_{{2t}} C + (1-\hat\beta_{{2t}})\,\mathrm{{mean}}_{{-2}}(u) \\
            &u \leftarrow \big(\mathrm{{rsqrt}}(R / \mathrm{{mean}}_{{-1}}(R)) \otimes \mathrm{{rsqrt}}(C)\big)\, g
             \quad (\text{{rank}} < 2:\ V \leftarrow \hat\beta_{{2t}} V + (1-\hat\beta_{{2t}}) u,\ u \leftarrow \mathrm{{rsqrt}}(V) g) \\
            &u \leftarrow u / \max(\mathrm{{RMS}}(u)/d, 1), \quad u \leftarrow \alpha_t u \\
            &m \leftarrow \beta_1 m + (1-\beta_1) u, \quad u \leftarrow m \quad \text{{if }} \beta_1 \text{{ is set}} \\
            &\theta \leftarrow \theta + (-\lambda \alpha_t)\,\theta \quad \text{{if }} \lambda \ne 0, \qquad
             \theta \leftarrow \theta - u
        \end{{aligned}}

    On the for-loop and foreach paths every product is rounded on its own (no fused multiply-add), in the order of
    the float64 reference ``hf_optim_spec.reference.adafactor``.

    The fused path (the default for float32/bfloat16/float16 parameters on CPU, and on CUDA for tensors of at least
    64M elements, where the launches of a per-tensor path cost less than its data; the arithmetic is float32 for
    all three) computes the same update in two sweeps per tensor, with no host synchronisation (the RMS, the lr
    and the clipping factor stay tensors; the step's functions :math:`\rho_t` and :math:`\hat\beta_{{2t}}` are
    Python floats, as in transformers) and one reused work buffer instead of per-step temporaries. For a factored
    tensor, sweep 1 reads :math:`g` once, in row blocks that stay in cache: :math:`g^2` goes into the buffer, its
    row sums give the block's new :math:`R`, its column sums the new :math:`C`, and its column sums weighted by
    :math:`1/R_i` the squared norm of the update without forming it,
    :math:`\sum_{{ij}} (r_i c_j g_{{ij}})^2 = \mathrm{{mean}}(R) \sum_j C_j^{{-1}} \sum_i g_{{ij}}^2 / R_i`.
    Sweep 2 writes the factors :math:`b_{{ij}} = r_i \alpha_t\, \mathrm{{rsqrt}}(C_j) / \text{{clip}}` of the
    block into the buffer (no read of :math:`g`) and applies :math:`\theta \leftarrow \theta - g \cdot b` (or
    folds :math:`g \cdot b` into :math:`m`). No BLAS product is used: under ``torch.set_float32_matmul_precision``
    below ``"highest"`` a float32 matrix-vector product may run in bfloat16 or TF32.
    On CPU, float32 matrices go instead through a C kernel compiled at first use (``_native/adafactor.c``; see
    ``docs/guarantees.md``, off with ``HF_OPTIM_NATIVE=0``): the same two sweeps, each one pass over memory, with
    sums in double. Small unfactored tensors (biases, norms) on CPU take the multi-tensor path together. transformers
    materialises :math:`g^2`, :math:`g^2+\epsilon_1` and the outer product :math:`R \otimes C` for every tensor.
    The regrouped products agree with the reference within the spec float32 tolerance, not bit for bit; the state
    is the same.

    Args:
        {_docs.PARAMS}
        lr (`float`, *optional*):
            A fixed step size, used when ``relative_step=False`` (and then required). With ``relative_step=True``
            the step size comes from the step count instead and ``lr`` must stay None.
        eps (`tuple[float, float]`, *optional*, defaults to `(1e-30, 0.001)`):
            ``(eps1, eps2)``: ``eps1`` is added to every squared gradient before it enters the second-moment
            statistics; ``eps2`` is the smallest parameter RMS the step size is scaled by.
        clip_threshold (`float`, *optional*, defaults to 1.0):
            The update is divided by ``max(1, RMS(update) / clip_threshold)``, so its RMS never exceeds this value.
        decay_rate (`float`, *optional*, defaults to -0.8):
            The exponent ``c`` of the second-moment decay ``beta2_t = 1 - t**c``: closer to 0 forgets faster.
        beta1 (`float`, *optional*):
            Decay of a first moment (momentum) of the update; None (the default) keeps no first moment and saves
            its memory.
        weight_decay (`float`, *optional*, defaults to 0.0):
            Decoupled weight decay: each step the parameter shrinks by ``weight_decay`` times the step size.
        scale_parameter (`bool`, *optional*, defaults to `True`):
            Multiply the step size by the parameter's RMS (at least ``eps2``), so that updates are relative to the
            parameter's scale.
        relative_step (`bool`, *optional*, defaults to `True`):
            Derive the step size from the step count, ``min(0.01, 1/sqrt(t))``, instead of taking ``lr``.
        warmup_init (`bool`, *optional*, defaults to `False`):
            With ``relative_step``, start the step size at ``1e-6 * t`` (a linear warm-up) instead of 0.01.
        first_moment (`str`, *optional*, defaults to `"lr_scaled"`):
            Keyword-only extension. ``"lr_scaled"`` is transformers' behaviour: the first moment averages the
            update *after* it was multiplied by the learning rate. ``"unscaled"`` averages the clipped update and
            multiplies the average by the current learning rate (the paper's momentum).
        {_docs.MAXIMIZE}
        {_docs.FOREACH}
        {FUSED_DOC}
        {_docs.STOCHASTIC_ROUNDING}
            Adafactor always computes a 16-bit parameter's step in float32 (there is no ``fp32_math``
            argument), so this only changes how that float32 result is stored. The step in the rounding key is
            the parameter's own ``step`` after the update (1 at the first update).
        {_docs.ROUNDING_SEED}

    Differences from transformers:
        ``lr=None`` with ``relative_step=False`` is rejected at construction (transformers fails at the first
        step). The lr and RMS are computed as tensors (no host synchronisation); ``step`` is stored as a 0-dim
        tensor (transformers' int steps load).

    Raises:
        ValueError: "Cannot combine manual `lr` and `relative_step=True` options", "`warmup_init=True`
            requires `relative_step=True`", out-of-range values (spec ``adafactor``); at ``step``, a float16
            parameter with a gradient in a group with ``stochastic_rounding=True``.

    Example:
        >>> model = torch.nn.Linear(4, 2)
        >>> optimizer = Adafactor(model.parameters(), scale_parameter=False, relative_step=False, lr=1e-3)
        >>> model(torch.randn(8, 4)).sum().backward()
        >>> optimizer.step()
    """


def adafactor(
    params: list[Tensor],
    grads: list[Tensor],
    state_steps: list[Tensor],
    rms_values: list[Tensor],
    exp_avgs: list[Tensor | None],
    row_vars: list[Tensor | None],
    col_vars: list[Tensor | None],
    full_vars: list[Tensor | None],
    foreach: bool | None = None,
    fused: bool | None = None,
    *,
    lr: float | Tensor | None,
    eps: tuple[float, float],
    clip_threshold: float,
    decay_rate: float,
    beta1: float | None,
    weight_decay: float,
    scale_parameter: bool,
    relative_step: bool,
    warmup_init: bool,
    first_moment: str = "lr_scaled",
    maximize: bool = False,
    rounding_keys: list[int | None] | None = None,
) -> None:
    """Functional Adafactor (transformers numerics): updates ``params`` and the state lists in place.

    ``rounding_keys[i]`` (optional) stores bfloat16 parameter ``i`` with stochastic rounding of its float32
    result, keyed by :func:`hf_optim_spec.rounding.rounding_key`; None entries round to nearest.

    ``grads`` are already in the compute dtype (float32 for low-precision parameters). For a parameter of rank
    >= 2, ``row_vars``/``col_vars`` hold its factored statistics and ``full_vars`` None; otherwise the reverse.
    ``exp_avgs`` entries are None when ``beta1`` is None. See :class:`Adafactor` for the algorithm. ``fused``
    picks the fused path (default: float32/bfloat16/float16 CPU parameters, and CUDA ones of at least 64M
    elements, when ``foreach`` is not given; the others take the paths below), ``foreach`` the multi-tensor path
    (default: on accelerators only).
    """
    hyper: dict[str, Any] = {
        "lr": lr,
        "eps": eps,
        "clip_threshold": clip_threshold,
        "decay_rate": decay_rate,
        "beta1": beta1,
        "weight_decay": weight_decay,
        "scale_parameter": scale_parameter,
        "relative_step": relative_step,
        "warmup_init": warmup_init,
        "first_moment": first_moment,
        "maximize": maximize,
    }
    lists = [params, grads, state_steps, rms_values, exp_avgs, row_vars, col_vars, full_vars]
    if use_fused(fused, foreach, lr):
        rest = _fused_adafactor(*lists, strict=bool(fused), rounding_keys=rounding_keys, **hyper)  # type: ignore[arg-type]
        if not rest:
            return
        lists = [[lst[i] for i in rest] for lst in lists]
        if rounding_keys is not None:
            rounding_keys = [rounding_keys[i] for i in rest]
    func = _multi_tensor_adafactor if use_foreach(foreach, lists[0]) else _single_tensor_adafactor  # type: ignore[arg-type]
    func(*lists, rounding_keys=rounding_keys, **hyper)  # type: ignore[arg-type]


def _adafactor_lr(
    lr: float | Tensor | None,
    step: Tensor,
    rms: Tensor,
    *,
    eps2: float,
    relative_step: bool,
    warmup_init: bool,
    scale_parameter: bool,
) -> Tensor | float:
    """transformers' ``_get_lr`` on tensors of any shape: ``max(eps2, RMS) * min(min_step, 1/sqrt(t))``.

    The relative step is computed in float64 (as transformers' Python floats) and multiplied by the RMS in the
    RMS's dtype; Python's ``min``/``max`` tie and NaN rules are kept with ``torch.where``.
    """
    if relative_step:
        t = step.to(torch.float64)
        min_step: Tensor | float = 1e-6 * t if warmup_init else 1e-2
        inv_sqrt = 1.0 / t.sqrt()
        rel: Tensor | float | None = torch.where(inv_sqrt < min_step, inv_sqrt, min_step)
    else:
        rel = lr
    if rel is None:
        raise ValueError("Adafactor with relative_step=False needs a manual `lr`")
    if not scale_parameter:
        return rel
    if isinstance(rel, Tensor):
        return torch.where(rms > eps2, rms * rel.to(rms.dtype), (eps2 * rel).to(rms.dtype))
    return torch.where(rms > eps2, rms * rel, dtype_scalar(eps2 * rel, rms.dtype))


def _rms(tensor: Tensor) -> Tensor:
    return torch.linalg.vector_norm(tensor) / (tensor.numel() ** 0.5)


def _factored_update(row: Tensor, col: Tensor, sq_update: Tensor, grad: Tensor, beta2t: Tensor) -> Tensor:
    """Update the factored statistics in place and return rsqrt(row/mean(row)) x rsqrt(col) * grad."""
    row.mul_(beta2t).add_(sq_update.mean(dim=-1).mul_(1.0 - beta2t))
    col.mul_(beta2t).add_(sq_update.mean(dim=-2).mul_(1.0 - beta2t))
    r_factor = (row / row.mean(dim=-1, keepdim=True)).rsqrt_().unsqueeze(-1)
    c_factor = col.unsqueeze(-2).rsqrt()
    return torch.mul(r_factor, c_factor).mul_(grad)


def _single_tensor_adafactor(
    params: list[Tensor],
    grads: list[Tensor],
    state_steps: list[Tensor],
    rms_values: list[Tensor],
    exp_avgs: list[Tensor | None],
    row_vars: list[Tensor | None],
    col_vars: list[Tensor | None],
    full_vars: list[Tensor | None],
    *,
    lr: float | Tensor | None,
    eps: tuple[float, float],
    clip_threshold: float,
    decay_rate: float,
    beta1: float | None,
    weight_decay: float,
    scale_parameter: bool,
    relative_step: bool,
    warmup_init: bool,
    first_moment: str,
    maximize: bool,
    rounding_keys: list[int | None] | None = None,
) -> None:
    for i, param in enumerate(params):
        grad = -grads[i] if maximize else grads[i]
        step_t = state_steps[i]
        low_precision = param.dtype in _LOW_PRECISION
        p32 = param.float() if low_precision else param
        step_t.add_(1)
        rms_values[i].copy_(_rms(p32))
        lr_t = _adafactor_lr(
            lr,
            step_t,
            rms_values[i],
            eps2=eps[1],
            relative_step=relative_step,
            warmup_init=warmup_init,
            scale_parameter=scale_parameter,
        )
        beta2t = 1.0 - torch.pow(step_t.to(torch.float64), decay_rate)
        sq_update = (grad * grad).add_(eps[0])
        row, col, full = row_vars[i], col_vars[i], full_vars[i]
        if row is not None and col is not None:
            update = _factored_update(row, col, sq_update, grad, beta2t)
        else:
            assert full is not None
            full.mul_(beta2t).add_(sq_update.mul_(1.0 - beta2t))
            update = full.rsqrt().mul_(grad)
        update.div_((_rms(update) / clip_threshold).clamp_(min=1.0))
        exp_avg = exp_avgs[i]
        if exp_avg is not None and first_moment == "unscaled":
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


def _multi_tensor_adafactor(
    params: list[Tensor],
    grads: list[Tensor],
    state_steps: list[Tensor],
    rms_values: list[Tensor],
    exp_avgs: list[Tensor | None],
    row_vars: list[Tensor | None],
    col_vars: list[Tensor | None],
    full_vars: list[Tensor | None],
    *,
    lr: float | Tensor | None,
    eps: tuple[float, float],
    clip_threshold: float,
    decay_rate: float,
    beta1: float | None,
    weight_decay: float,
    scale_parameter: bool,
    relative_step: bool,
    warmup_init: bool,
    first_moment: str,
    maximize: bool,
    rounding_keys: list[int | None] | None = None,
) -> None:
    by_device_and_dtype: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, g in enumerate(grads):
        by_device_and_dtype.setdefault((g.device, g.dtype), []).append(i)
    for indices in by_device_and_dtype.values():
        d_params = [params[i] for i in indices]
        d_grads = [grads[i] for i in indices]
        if maximize:
            d_grads = torch._foreach_neg(d_grads)
        d_steps = [state_steps[i] for i in indices]
        d_rms = [rms_values[i] for i in indices]
        low = [p.dtype in _LOW_PRECISION for p in d_params]
        p32s = [p.float() if is_low else p for p, is_low in zip(d_params, low)]
        sqrt_numels = [p.numel() ** 0.5 for p in p32s]

        torch._foreach_add_(d_steps, 1)
        torch._foreach_copy_(d_rms, torch._foreach_div(torch._foreach_norm(p32s), sqrt_numels))
        steps = torch.stack(d_steps)
        lr_all = _adafactor_lr(
            lr,
            steps,
            torch.stack(d_rms),
            eps2=eps[1],
            relative_step=relative_step,
            warmup_init=warmup_init,
            scale_parameter=scale_parameter,
        )
        lrs: list[Tensor] | float | Tensor | None = (
            list(lr_all.unbind(0)) if isinstance(lr_all, Tensor) and lr_all.dim() == 1 else lr_all
        )
        beta2ts = list((1.0 - torch.pow(steps.to(torch.float64), decay_rate)).unbind(0))

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

        clip = torch._foreach_div(torch._foreach_norm(updates), sqrt_numels)
        torch._foreach_div_(clip, clip_threshold)
        torch._foreach_clamp_min_(clip, 1.0)
        torch._foreach_div_(updates, clip)

        d_exp_avgs = [exp_avgs[i] for i in indices]
        if beta1 is not None and first_moment == "unscaled":
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


def _fused_adafactor_tensor(
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
    eps1: float,
    eps2: float,
    clip_threshold: float,
    beta1: float | None,
    weight_decay: float,
    scale_parameter: bool,
    unscaled: bool,
    rounding_key: int | None = None,
) -> None:
    """One parameter of the fused path, in row blocks that stay in cache (see :class:`Adafactor`).

    Sweep 1 reads ``g`` once: the new row and column statistics (or ``V``) and the squared norm of the update
    before clipping; then ``p`` is read once for its RMS; sweep 2 reads ``g`` and ``p`` again and writes ``p``
    (and ``m``). ``g**2``, and then the factors ``r_i coef / sqrt(C_j)`` of the update, only live block by block in
    one reused buffer. No BLAS call: its float32 products may run in reduced precision (``float32_matmul_precision``).
    """
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
    lr_t = torch.where(rms > eps2, rms, dtype_scalar(eps2, rms.dtype)).mul_(rel) if scale_parameter else rel
    clip = update_sq.sqrt_().div_(math.sqrt(numel) * clip_threshold).clamp_(min=1.0)
    unscaled = unscaled and exp_avg is not None
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


def _native_eligible(param: Tensor, row: Tensor | None, col: Tensor | None, rms: Tensor) -> bool:
    """A float32 CPU matrix with float32 contiguous statistics (the gradient and ``m`` passed :func:`fused_eligible`)."""
    return (
        param.is_cpu
        and param.dtype == torch.float32
        and param.dim() == 2
        and all(t is not None and t.dtype == torch.float32 and t.is_contiguous() for t in (row, col, rms))
    )


def _integers(tensors: list[Tensor | None], method: Callable[[Tensor], int], code: str) -> array.array:
    """``method`` of each tensor (0 for None) in an array.array of C integers (a tenth of ctypes' own init)."""
    try:
        return array.array(code, map(method, tensors))  # type: ignore[arg-type]
    except TypeError:  # a None (a missing exp_avg): a NULL pointer, which the kernel reports
        return array.array(code, [0 if t is None else method(t) for t in tensors])


def _pointers(tensors: list[Tensor | None]) -> Any:
    """A C array of the tensors' data pointers (NULL for None)."""
    return (ctypes.c_void_p * len(tensors)).from_buffer(_integers(tensors, Tensor.data_ptr, "Q"))


#: the buffers of one matrix in the native kernel's order (its numel array; HF_E_* - buffer in adafactor.c)
_NATIVE_BUFFERS = ("gradient", "parameter", "exp_avg", "exp_avg_sq_row", "exp_avg_sq_col", "RMS")
#: the kernel's codes (adafactor.c, HF_E_*) for a whole call, for one matrix, and (less the buffer) for one buffer
_NATIVE_CALL = {-2: "a negative count of matrices", -3: "a thread count below 1"}
_NATIVE_MATRIX = {-4: "no rows", -5: "no columns", -6: "more elements than any buffer can hold"}
_NATIVE_BUFFER = {-10: "has no data (NULL)", -20: "is not aligned to a float", -30: "has the wrong size"}


def _native_error(code: int, index: int, tensors: list[Any], shapes: list[tuple[int, int]]) -> ValueError:
    """The error for a code of the native kernel, naming the matrix, the buffer, and the expected and received sizes."""
    if index < 0:
        what = _NATIVE_CALL.get(code, f"a NULL argument array ({-40 - code})" if -50 <= code <= -40 else "")
        return ValueError(f"Adafactor's native kernel refused the call ({code}): {what or 'unknown code'}")
    rows, cols = shapes[index]
    where = f"Adafactor's native kernel refused matrix {index} of the call (a {rows}x{cols} parameter) ({code})"
    base, buffer = -10 * (-code // 10), -code % 10
    if code in _NATIVE_MATRIX or base not in _NATIVE_BUFFER or buffer >= len(_NATIVE_BUFFERS):
        return ValueError(f"{where}: {_NATIVE_MATRIX.get(code, 'unknown code')}")
    name, given = _NATIVE_BUFFERS[buffer], None if tensors[buffer] is None else tensors[buffer][index]
    if given is None or base != -30:
        return ValueError(f"{where}: its {name} {'is missing' if given is None else _NATIVE_BUFFER[base]}")
    expected = {"exp_avg_sq_row": f"{rows} (rows)", "exp_avg_sq_col": f"{cols} (columns)", "RMS": "at least 1"}
    return ValueError(
        f"{where}: its {name} has {given.numel()} elements (shape {tuple(given.shape)}), expected "
        f"{expected.get(name, f'{rows * cols} ({rows}x{cols})')}"
    )


def _native_adafactor(
    lib: Any,
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor | None] | None,
    rows: list[Tensor],
    cols: list[Tensor],
    rms_values: list[Tensor],
    *,
    rels: list[float],
    beta2ts: list[float],
    eps: tuple[float, float],
    clip_threshold: float,
    beta1: float | None,
    weight_decay: float,
    scale_parameter: bool,
    unscaled: bool,
) -> None:
    """Factored float32 CPU matrices in one call of the native kernel (``_native/adafactor.c``): two passes.

    The kernel is handed every buffer's element count and checks them before it changes anything: a state that
    does not fit its parameter raises a ValueError naming the matrix, the buffer and both counts.
    """
    count = len(params)
    grads = [g.contiguous() for g in grads]  # a no-op for the contiguous gradients fused_eligible admitted
    shapes = [tuple(p.shape) for p in params]
    if any(len(shape) != 2 for shape in shapes):
        raise ValueError(f"Adafactor's native kernel takes matrices, not parameters of shapes {shapes}")
    tensors: list[Any] = [grads, params, exp_avgs, rows, cols, rms_values]
    numel = array.array("q")  # numel[b * count + k]: the elements of matrix k's buffer b (the order of tensors)
    for kind in tensors:
        numel.extend([0] * count if kind is None else _integers(kind, Tensor.numel, "q"))
    bad_index = ctypes.c_int64(-1)
    code = lib.hf_adafactor_factored(
        count,
        *(None if kind is None else _pointers(kind) for kind in tensors),
        (ctypes.c_int64 * count).from_buffer(array.array("q", [r for r, _ in shapes])),
        (ctypes.c_int64 * count).from_buffer(array.array("q", [c for _, c in shapes])),
        (ctypes.c_int64 * (6 * count)).from_buffer(numel),
        (ctypes.c_double * count).from_buffer(array.array("d", rels)),
        (ctypes.c_double * count).from_buffer(array.array("d", beta2ts)),
        eps[0],
        eps[1],
        clip_threshold,
        -1.0 if beta1 is None else beta1,
        weight_decay,
        int(scale_parameter),
        int(unscaled),
        torch.get_num_threads(),
        ctypes.byref(bad_index),
    )
    if code == -1:
        raise MemoryError(f"Adafactor's native kernel could not allocate its work memory for {count} matrices")
    if code:
        raise _native_error(code, bad_index.value, tensors, shapes)


#: elements per row block of the fused Adafactor path on CPU (8 MiB of float32: the buffer holding g**2 or the
#: update stays in the last-level cache between the ops that read it; a transformer's weight matrices are one block)
_BLOCK = 1 << 21
#: tensors without factored statistics and at most this many elements (biases, norms) take the multi-tensor path
#: together: for them the per-op cost of a per-tensor path dominates (on CUDA, the launch of each op)
_SMALL = 1 << 15


#: on CUDA, tensors of at least this many elements take the per-tensor sweeps by default (their launches cost
#: less than their data: one 1-D tensor of 1B elements, 17.3 ms a step, against 31.1 ms on the multi-tensor path)
_CUDA_SWEEP = 1 << 26


def _row_blocks(batches: int, n_rows: int, n_cols: int, device: torch.device) -> list[tuple[int, int, int]]:
    """(batch, first row, end row) blocks of about ``_BLOCK`` elements (whole matrices off CPU)."""
    rows = n_rows if device.type != "cpu" else max(1, min(n_rows, _BLOCK // max(n_cols, 1)))
    return [(b, r0, min(r0 + rows, n_rows)) for b in range(batches) for r0 in range(0, n_rows, rows)]


_FUSED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def _fused_adafactor(
    params: list[Tensor],
    grads: list[Tensor],
    state_steps: list[Tensor],
    rms_values: list[Tensor],
    exp_avgs: list[Tensor | None],
    row_vars: list[Tensor | None],
    col_vars: list[Tensor | None],
    full_vars: list[Tensor | None],
    *,
    strict: bool,
    lr: float | Tensor | None,
    eps: tuple[float, float],
    clip_threshold: float,
    decay_rate: float,
    beta1: float | None,
    weight_decay: float,
    scale_parameter: bool,
    relative_step: bool,
    warmup_init: bool,
    first_moment: str,
    maximize: bool,
    rounding_keys: list[int | None] | None = None,
) -> list[int]:
    """The fused path (see :class:`Adafactor`): two sweeps per tensor, one reused buffer.

    Small unfactored tensors (at most ``_SMALL`` elements) run together on the multi-tensor path instead.
    Runs the parameters it can take and returns the indices of the others (an error when ``strict``).
    """
    eligible: list[int] = []
    rest: list[int] = []
    for i, param in enumerate(params):
        grad = grads[i]
        ok = (
            fused_eligible(param, dtypes=_FUSED_DTYPES)
            and fused_eligible(grad, *(t for t in (exp_avgs[i], full_vars[i]) if t is not None))
            and grad.dtype == torch.float32
            and param.numel() > 0
            and grad.shape == param.shape
            and grad.device == param.device
            # by default on CPU, and on CUDA for large tensors only: there the per-tensor sweeps are bound by
            # kernel launches (~30 per tensor) unless the tensor is large, and the multi-tensor path is faster
            and (strict or param.is_cpu or param.numel() >= _CUDA_SWEEP)
        )
        (eligible if ok else rest).append(i)
    if strict and rest:
        raise RuntimeError(
            "fused=True supports dense contiguous float32/bfloat16/float16 parameters on CPU or CUDA; got "
            f"{sorted({(str(params[i].dtype), params[i].device.type) for i in rest})}"
        )
    small = [i for i in eligible if full_vars[i] is not None and params[i].numel() <= _SMALL]
    if small:
        lists: list[list[Any]] = [params, grads, state_steps, rms_values, exp_avgs, row_vars, col_vars, full_vars]
        _multi_tensor_adafactor(
            *[[lst[i] for i in small] for lst in lists],
            lr=lr,
            eps=eps,
            clip_threshold=clip_threshold,
            decay_rate=decay_rate,
            beta1=beta1,
            weight_decay=weight_decay,
            scale_parameter=scale_parameter,
            relative_step=relative_step,
            warmup_init=warmup_init,
            first_moment=first_moment,
            maximize=maximize,
            rounding_keys=None if rounding_keys is None else [rounding_keys[i] for i in small],
        )
        note_advanced([state_steps[i] for i in small])
        taken = set(small)
        eligible = [i for i in eligible if i not in taken]
    if not eligible:
        return rest
    eps1, eps2 = eps
    steps = advance_steps([state_steps[i] for i in eligible])
    rels = [min(1e-6 * t if warmup_init else 1e-2, 1.0 / math.sqrt(t)) if relative_step else lr for t in steps]
    if any(rel is None for rel in rels):
        raise ValueError("Adafactor with relative_step=False needs a manual `lr`")
    beta2ts = [1.0 - math.pow(t, decay_rate) for t in steps]
    shared: dict[str, Any] = {
        "clip_threshold": clip_threshold,
        "beta1": beta1,
        "weight_decay": weight_decay,
        "scale_parameter": scale_parameter,
        "unscaled": first_moment == "unscaled",
    }
    lib = _native.adafactor_library() if not isinstance(lr, Tensor) else None
    if lib is not None and not torch.compiler.is_compiling():
        native = [
            k for k, i in enumerate(eligible) if _native_eligible(params[i], row_vars[i], col_vars[i], rms_values[i])
        ]
        if native:
            grad_list = [-grads[eligible[k]] if maximize else grads[eligible[k]] for k in native]
            picked = [eligible[k] for k in native]
            _native_adafactor(
                lib,
                [params[i] for i in picked],
                grad_list,
                [exp_avgs[i] for i in picked] if beta1 is not None else None,
                [row_vars[i] for i in picked],  # type: ignore[misc]
                [col_vars[i] for i in picked],  # type: ignore[misc]
                [rms_values[i] for i in picked],
                rels=[rels[k] for k in native],  # type: ignore[misc]
                beta2ts=[beta2ts[k] for k in native],
                eps=eps,
                **shared,
            )
            done = set(native)
            eligible = [i for k, i in enumerate(eligible) if k not in done]
            rels = [r for k, r in enumerate(rels) if k not in done]
            beta2ts = [b for k, b in enumerate(beta2ts) if k not in done]
    for i, rel, beta2t in zip(eligible, rels, beta2ts):
        _fused_adafactor_tensor(
            params[i],
            -grads[i] if maximize else grads[i],
            rms_values[i],
            exp_avgs[i],
            row_vars[i],
            col_vars[i],
            full_vars[i],
            rel=rel,  # type: ignore[arg-type]
            beta2t=beta2t,
            eps1=eps1,
            eps2=eps2,
            **shared,
            rounding_key=None if rounding_keys is None else rounding_keys[i],
        )
    return rest


class AdafactorSchedule(SpecFactorLR):
    """Proxy scheduler for :class:`Adafactor` (transformers' ``AdafactorSchedule``).

    Adafactor computes its own learning rate; this scheduler reports it (for logging, or for a ``Trainer`` that
    needs a scheduler). It returns ``initial_lr`` before the first step and the optimizer's current lr after.
    :meth:`Adafactor.get_lr` reads the same values without a scheduler.

    Args:
        optimizer (`Adafactor`): The optimizer whose learning rate is reported.
        initial_lr (`float`, *optional*, defaults to 0.0): The value reported before the first step.
    """

    def __init__(self, optimizer: Optimizer, initial_lr: float = 0.0) -> None:
        check_optimizer(optimizer)
        for group in optimizer.param_groups:
            group["initial_lr"] = initial_lr
        super().__init__(optimizer, _ConstantFactor(initial_lr))
        for group in optimizer.param_groups:
            del group["initial_lr"]

    def get_lr(self) -> list[Any]:  # type: ignore[override]
        opt = self.optimizer
        lrs = [
            opt._get_lr(group, opt.state[group["params"][0]])  # type: ignore[attr-defined]
            for group in opt.param_groups
            if group["params"][0].grad is not None and "step" in opt.state[group["params"][0]]
        ]
        if len(lrs) == 0:
            lrs = self.base_lrs
        return lrs


class _ConstantFactor:
    """A picklable constant multiplier (plain data in ``__dict__``)."""

    def __init__(self, value: float) -> None:
        self.value = value

    def __call__(self, step: int) -> float:
        return self.value


def get_adafactor_schedule(optimizer: Optimizer, initial_lr: float = 0.0) -> AdafactorSchedule:
    """Get a proxy schedule for :class:`Adafactor`.

    Args:
        optimizer (`torch.optim.Optimizer`): The optimizer whose learning rate the schedule drives.
        initial_lr (`float`, *optional*, defaults to 0.0): Initial lr.

    Returns:
        :class:`AdafactorSchedule` proxy schedule object.
    """
    return AdafactorSchedule(optimizer, initial_lr)
