"""AdamW with transformers' numerics (spec id ``adamw``): the optimizer, its functional form and its paths."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor
from torch.optim import Optimizer

from . import _docs
from ._adam_scalars import adamw_decay, adamw_step_size, once_per_key, reads_host_steps, torch_kernel_scalars
from ._adam_state import adam_slots, adam_state
from ._adam_torch_kernel_path import AdamTensors, kernel_lr, kernel_parts, torch_kernel_path
from ._arguments import constructor_arguments, validate_arguments
from ._begin_step import begin_step
from ._docs import FUSED_DOC
from ._groups_call import GroupsCall, StepCalls, by_part
from ._low_precision import rounding_keys, step_in_float32
from ._path_choice import LayoutCache, compiling, group_layout_cache, use_foreach, use_fused
from ._state_check import CheckedOptimizer, Slot
from ._step_block import gather_steps
from ._step_count import STEP_DTYPE, advance_steps, note_advanced

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
#: dtypes torch's fused kernel takes with ``fused=True``; by default only float32 (on bfloat16 it would change
#: transformers' numerics, which round every in-place op to bfloat16)
_KERNEL_DTYPES = (torch.float32, torch.bfloat16)
_KERNEL_DEFAULT_DTYPES = (torch.float32,)


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
        values, flags = constructor_arguments(locals())
        hp = validate_arguments(_SPEC_ID, values, flags)
        hp["betas"] = tuple(hp["betas"])
        if isinstance(lr, Tensor):
            hp["lr"] = lr
        # the group keys in the order transformers' AdamW has them, then the extensions
        defaults = {key: hp[key] for key in _HYPERPARAMS[:5]} | flags | {key: hp[key] for key in _HYPERPARAMS[5:]}
        super().__init__(params, defaults)

    def _state_layout(self, param: Tensor, group: Mapping[str, Any]) -> dict[str, Slot]:
        return adam_slots(param)

    def _init_group(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        grads: list[Tensor],
        exp_avgs: list[Tensor],
        exp_avg_sqs: list[Tensor],
        state_steps: list[Tensor],
    ) -> bool:
        """Append the stepped parameters of ``group`` (those with a gradient) and their state to the lists, the state
        made where missing; returns whether any was made. torch.compile handles a method of this name and signature
        specially (torch.optim's convention): it runs it eagerly while tracing, on lists that start empty."""
        created = False
        states = self.state
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            state = states[p]
            step = state.get("step")
            if type(step) is not Tensor or step.dtype is not STEP_DTYPE or step.device != p.device:
                created = created or not state  # (a state ready for the step, the usual case, costs no call)
                adam_state(state, p)
            params.append(p)
            grads.append(grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            state_steps.append(state["step"])
        return created

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
            fused_dtypes=_KERNEL_DTYPES,
        )
        calls = StepCalls(self._step_call)  # consecutive groups that step as one call
        offset = 0  # position of the group's first parameter among all parameters (stochastic rounding keys)
        for index, group in enumerate(self.param_groups):
            tensors = AdamTensors([], [], [], [], [], [])
            params, grads, exp_avgs, exp_avg_sqs, _, state_steps = tensors
            created = self._init_group(group, params, grads, exp_avgs, exp_avg_sqs, state_steps)
            first, offset = offset, offset + len(group["params"])
            if not params:
                continue
            beta1, beta2 = group["betas"]
            options = _AdamWOptions(
                group["lr"], beta1, beta2, group["eps"], group["weight_decay"], group["correct_bias"], group["maximize"]
            )
            if not group["fp32_math"]:
                key = (group["foreach"], group["fused"], options.maximize, isinstance(options.lr, Tensor))
                calls.add(key, index, tensors, options, created)
                continue
            calls.flush()
            if created and not compiling():  # one counter tensor for the group's steps (see ._step_block)
                state_steps[:] = gather_steps([self.state[p] for p in params])
            hyper = options._asdict() | {"foreach": group["foreach"], "fused": group["fused"]}
            hyper["layout_cache"] = group_layout_cache(self, index)
            keys = None
            if group["stochastic_rounding"]:
                indices = [first + j for j, p in enumerate(group["params"]) if p.grad is not None]
                keys = rounding_keys(group["rounding_seed"], params, indices, state_steps)
            step_in_float32(adamw, params, grads, [exp_avgs, exp_avg_sqs], [state_steps], keys, **hyper)
            if keys is not None:
                note_advanced([s for s, key in zip(state_steps, keys) if key is not None])
        calls.flush()
        return loss

    def _step_call(self, call: GroupsCall) -> None:
        """Step the groups of ``call`` as one call of the functional core, their new counters first gathered in one
        tensor (see ._step_block)."""
        tensors = call.tensors
        if call.created and not compiling():
            tensors.state_steps[:] = gather_steps([self.state[p] for p in tensors.params])
        foreach, fused, _, _ = call.key
        adamw_groups(tensors, call.options, call.parts, foreach, fused, group_layout_cache(self, call.first))


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
    layout_cache: LayoutCache[Any] | None = None,
) -> None:
    """Functional AdamW (transformers numerics): updates ``params`` and the state lists in place.

    See :class:`AdamW` for the algorithm. ``state_steps`` are 0-dim tensors incremented here. ``fused`` picks
    torch's fused kernel (default: float32 CPU/CUDA tensors when ``foreach`` is not given, bfloat16 ones only with
    ``fused=True``; the others take the paths below), ``foreach`` the multi-tensor path (default: on accelerators
    only). ``layout_cache`` (an optimizer keeps one per call of its groups) spares the fused path's per-tensor checks while
    the tensors' layouts stay the same, see :class:`._path_choice.LayoutCache`.
    """
    tensors = AdamTensors(params, grads, exp_avgs, exp_avg_sqs, [], state_steps)
    options = _AdamWOptions(lr, beta1, beta2, eps, weight_decay, correct_bias, maximize)
    adamw_groups(tensors, [options], [len(params)], foreach, fused, layout_cache)


def adamw_groups(
    tensors: AdamTensors,
    options: list[_AdamWOptions],
    parts: list[int],
    foreach: bool | None,
    fused: bool | None,
    layout_cache: LayoutCache[Any] | None,
) -> None:
    """AdamW over the tensors of several param groups, the consecutive parts of ``tensors`` (of lengths ``parts``),
    each with its ``options`` (equal in what a call takes once: the path and ``maximize``). The fused path steps them
    in one call (one layout check and one step-counter addition for all; one kernel call per group)."""
    if use_fused(fused, foreach, options[0].lr, tensors.params):
        rest = _torch_kernel_adamw(tensors, options, parts, strict=bool(fused), cache=layout_cache)
    else:
        rest = list(range(len(tensors.params)))
    for part, indices in by_part(rest, parts):
        picked = tensors if len(indices) == len(tensors.params) else tensors.pick(indices)
        sweep = _multi_tensor_adamw if use_foreach(foreach, picked.params) else _for_loop_adamw
        sweep(picked, options[part])
        note_advanced(picked.state_steps)  # (their counters may share a tensor with the fused path's: its mirror)


class _AdamWOptions(NamedTuple):
    """The hyperparameters of one call, as the paths read them."""

    lr: float | Tensor
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    correct_bias: bool
    maximize: bool

    def step_size(self, t: Tensor) -> float | Tensor:
        return adamw_step_size(self.lr, self.beta1, self.beta2, t, self.correct_bias)


def _for_loop_adamw(tensors: AdamTensors, o: _AdamWOptions) -> None:
    """One parameter at a time, in transformers' order and rounding, that of the float64 reference (in float64 within
    its tolerance, not always bit for bit: three of the eleven float64 spec cases differ in last bits, measured
    2026-12-06); bit for bit the multi-tensor path in float64 (tested)."""
    decay = adamw_decay(o.lr, o.weight_decay)
    step_sizes = _step_sizes(tensors.state_steps, o)
    for param, raw_grad, exp_avg, exp_avg_sq, step_size in zip(*tensors[:4], step_sizes):
        grad = -raw_grad if o.maximize else raw_grad
        exp_avg.mul_(o.beta1).add_(grad * (1.0 - o.beta1))
        exp_avg_sq.mul_(o.beta2).add_((grad * (1.0 - o.beta2)).mul_(grad))
        denom = exp_avg_sq.sqrt().add_(o.eps)
        param.add_((exp_avg * -step_size).div_(denom))
        if decay is not None:
            param.add_(param * -decay)


def _step_sizes(steps: list[Tensor], o: _AdamWOptions) -> list[float | Tensor]:
    """Every parameter's step size from its step tensor, the steps advanced first; made once per step value and
    device where the host values may be read (:func:`._adam_scalars.reads_host_steps`; then one addition advances
    a group's block of counters and hands back their values: :func:`._step_count.advance_steps`)."""
    if reads_host_steps(o.lr, steps):
        keys: list[Hashable] | None = [(value, step.device) for step, value in zip(steps, advance_steps(steps))]
    else:
        keys = None
        for step in steps:
            step.add_(1)
    return once_per_key(lambda i: o.step_size(steps[i]), keys, len(steps))


def _multi_tensor_adamw(tensors: AdamTensors, o: _AdamWOptions) -> None:
    """The for-loop's operations as foreach ops over the tensors of one device and dtype at a time."""
    decay = adamw_decay(o.lr, o.weight_decay)
    grouped = Optimizer._group_tensors_by_device_and_dtype(
        [tensors.params, tensors.grads, tensors.exp_avgs, tensors.exp_avg_sqs, tensors.state_steps]  # type: ignore[list-item]
    )
    for (d_params, d_raw_grads, d_exp_avgs, d_exp_avg_sqs, d_steps), _ in grouped.values():
        d_grads = torch._foreach_neg(d_raw_grads) if o.maximize else d_raw_grads
        torch._foreach_add_(d_steps, 1)
        torch._foreach_mul_(d_exp_avgs, o.beta1)
        torch._foreach_add_(d_exp_avgs, torch._foreach_mul(d_grads, 1.0 - o.beta1))
        torch._foreach_mul_(d_exp_avg_sqs, o.beta2)
        scaled_sq = torch._foreach_mul(d_grads, 1.0 - o.beta2)
        torch._foreach_mul_(scaled_sq, d_grads)
        torch._foreach_add_(d_exp_avg_sqs, scaled_sq)
        del scaled_sq
        denoms = torch._foreach_sqrt(d_exp_avg_sqs)
        torch._foreach_add_(denoms, o.eps)
        step_size = o.step_size(torch.stack(d_steps))
        if isinstance(step_size, Tensor) and step_size.dim() == 1:
            updates = torch._foreach_mul(d_exp_avgs, list(torch.neg(step_size).unbind(0)))
        else:
            updates = torch._foreach_mul(d_exp_avgs, -step_size)
        torch._foreach_div_(updates, denoms)
        torch._foreach_add_(d_params, updates)
        del updates, denoms
        if decay is not None:
            torch._foreach_add_(d_params, torch._foreach_mul(d_params, -decay))


def _torch_kernel_adamw(
    tensors: AdamTensors,
    options: list[_AdamWOptions],
    parts: list[int],
    *,
    strict: bool,
    cache: LayoutCache[Any] | None,
) -> list[int]:
    """torch's fused AdamW kernel with the reparametrisation in :class:`AdamW`'s docstring, over the parts (param
    groups) of ``tensors``, each with its ``options``.

    Runs the tensors it can take and returns the indices of the others (an error when ``strict``, i.e.
    ``fused=True``). The bias correction, the learning rate and the decay are folded into the kernel's ``lr`` and
    ``weight_decay`` (:func:`._adam_scalars.torch_kernel_scalars`).
    """
    lrs = [kernel_lr(o.lr, strict) for o in options]
    decays = [0.0 if lr is None else adamw_decay(lr, o.weight_decay) or 0.0 for lr, o in zip(lrs, options)]
    if strict and 1.0 in decays:  # the update is multiplied by 1 - decay == 0: there is no kernel lr to fold it into
        raise RuntimeError("fused=True cannot run lr * weight_decay == 1")

    def run(tensors: AdamTensors, parts: list[int], kept: list[int], picked: list[int] | None) -> list[int]:
        def scalars(device: torch.device, t: float, decays_part: bool, part: int) -> dict[str, float]:
            o, lr, decay = options[kept[part]], lrs[kept[part]], decays[kept[part]]
            assert lr is not None
            step_size = adamw_step_size(lr, o.beta1, o.beta2, t, o.correct_bias)
            kernel = {"beta1": o.beta1, "beta2": o.beta2, "eps": o.eps, "t": t}
            return torch_kernel_scalars(device, step_size=step_size, decay=decay, decay_first=False, **kernel)

        return torch_kernel_path(
            tensors,
            strict=strict,
            dtypes=_KERNEL_DTYPES if strict else _KERNEL_DEFAULT_DTYPES,
            steps=advance_steps,
            decayed=None,
            scalars=scalars,
            maximize=options[0].maximize,
            parts=parts,
            cache=cache if picked is None else None,
        )

    return kernel_parts(tensors, parts, [lr is not None and decay != 1.0 for lr, decay in zip(lrs, decays)], run)
