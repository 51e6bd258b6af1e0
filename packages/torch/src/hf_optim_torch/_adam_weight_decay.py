"""AdamWeightDecay: transformers' TensorFlow optimizer as a torch twin (spec id ``adam_weight_decay``)."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.optim import Optimizer

from . import _docs
from ._arguments import check_flags, spec_validate
from ._begin_step import begin_step
from ._docs import FUSED_DOC
from ._low_precision import dtype_scalar, rounding_keys, step_in_float32
from ._path_choice import fused_eligible, use_foreach, use_fused
from ._step_count import as_step_tensor, count_steps, host_steps
from ._torch_fused_adam import kernel_moment_ratios, saturated_step
from ._state_check import COUNTER, CheckedOptimizer, Slot

__all__ = ["AdamWeightDecay", "adam_weight_decay", "clip_gradients"]

_SPEC_ID = "adam_weight_decay"
# group key -> spec parameter name (the group keeps torch's "lr" so that LR schedulers drive it)
_GROUP_KEYS = {
    "lr": "learning_rate",
    "beta_1": "beta_1",
    "beta_2": "beta_2",
    "epsilon": "epsilon",
    "amsgrad": "amsgrad",
    "weight_decay_rate": "weight_decay_rate",
    "include_in_weight_decay": "include_in_weight_decay",
    "exclude_from_weight_decay": "exclude_from_weight_decay",
    "fp32_math": "fp32_math",
    "stochastic_rounding": "stochastic_rounding",
    "rounding_seed": "rounding_seed",
}
_CLIP_KEYS = ("clipnorm", "clipvalue", "global_clipnorm")


def do_use_weight_decay(
    name: str | None,
    weight_decay_rate: float,
    include_in_weight_decay: Sequence[str] | None,
    exclude_from_weight_decay: Sequence[str] | None,
) -> bool:
    """transformers' rule: no decay at rate 0; an include match wins; an exclude match skips; else decay."""
    if weight_decay_rate == 0:
        return False
    if name is not None and include_in_weight_decay:
        if any(re.search(pattern, name) is not None for pattern in include_in_weight_decay):
            return True
    if name is not None and exclude_from_weight_decay:
        if any(re.search(pattern, name) is not None for pattern in exclude_from_weight_decay):
            return False
    return True


class AdamWeightDecay(CheckedOptimizer, Optimizer):
    _SPEC_ID = _SPEC_ID
    _GROUP_KEYS: ClassVar[Mapping[str, str]] = {**_GROUP_KEYS, **{key: key for key in _CLIP_KEYS}}
    _LEGACY_DEFAULTS: ClassVar[Mapping[str, Any]] = {
        "foreach": None,
        "fused": None,
        "fp32_math": False,
        "stochastic_rounding": False,
        "rounding_seed": 0,
    }

    def __init__(
        self,
        params: Iterable[Any],
        learning_rate: float | Tensor = 1e-3,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        amsgrad: bool = False,
        weight_decay_rate: float = 0.0,
        include_in_weight_decay: list[str] | None = None,
        exclude_from_weight_decay: list[str] | None = None,
        *,
        clipnorm: float | None = None,
        clipvalue: float | None = None,
        global_clipnorm: float | None = None,
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
                "learning_rate": learning_rate,
                "beta_1": beta_1,
                "beta_2": beta_2,
                "epsilon": epsilon,
                "amsgrad": amsgrad,
                "weight_decay_rate": weight_decay_rate,
                "include_in_weight_decay": include_in_weight_decay,
                "exclude_from_weight_decay": exclude_from_weight_decay,
                "clipnorm": clipnorm,
                "clipvalue": clipvalue,
                "global_clipnorm": global_clipnorm,
                "fp32_math": fp32_math,
                "stochastic_rounding": stochastic_rounding,
                "rounding_seed": rounding_seed,
            },
        )
        defaults: dict[str, Any] = {key: hp[name] for key, name in _GROUP_KEYS.items()}
        if isinstance(learning_rate, Tensor):
            defaults["lr"] = learning_rate
        for key in ("include_in_weight_decay", "exclude_from_weight_decay"):
            defaults[key] = None if defaults[key] is None else list(defaults[key])
        defaults.update({key: hp[key] for key in _CLIP_KEYS})
        defaults["foreach"] = foreach
        defaults["fused"] = fused
        check_flags(foreach=foreach, fused=fused)
        use_fused(fused, foreach)  # rejects foreach=True with fused=True
        self._decay_cache: dict[tuple[Any, ...], list[bool]] = {}
        super().__init__(params, defaults)

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("_decay_cache", {})

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if "names" in param_group and "param_names" not in param_group:
            param_group["param_names"] = list(param_group.pop("names"))
        if "learning_rate" in param_group:
            param_group["lr"] = param_group.pop("learning_rate")
        clip_overrides = sorted(k for k in _CLIP_KEYS if k in param_group)
        if clip_overrides:
            raise ValueError(
                f"Gradient clipping is optimizer-wide in AdamWeightDecay (as in Keras); set {clip_overrides} in the "
                "constructor, not in a param group."
            )
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        patterns = group["include_in_weight_decay"] or group["exclude_from_weight_decay"]
        if group["weight_decay_rate"] and patterns and "param_names" not in group:
            self.param_groups.pop()
            raise ValueError(
                "AdamWeightDecay matches `include_in_weight_decay`/`exclude_from_weight_decay` against parameter "
                "names: pass `model.named_parameters()` (or param groups with 'param_names')."
            )
        # match the patterns now: a compiled step then finds the flags in the cache (dynamo does not trace `re`)
        self._decay_flags(group)

    def _state_layout(self, param: Tensor, group: Mapping[str, Any]) -> dict[str, Slot]:
        shape = tuple(param.shape)
        slots = {"step": COUNTER, "exp_avg": Slot(shape), "exp_avg_sq": Slot(shape, nonnegative=True)}
        if group["amsgrad"]:
            slots["max_exp_avg_sq"] = Slot(shape, nonnegative=True)
        return slots

    def _decay_flags(self, group: dict[str, Any]) -> list[bool]:
        names = group.get("param_names") or [None] * len(group["params"])
        include, exclude = group["include_in_weight_decay"], group["exclude_from_weight_decay"]
        rate = group["weight_decay_rate"]
        key = (tuple(names), tuple(include or ()), tuple(exclude or ()), float(rate))
        flags = self._decay_cache.get(key)
        if flags is None:
            flags = [do_use_weight_decay(name, rate, include, exclude) for name in names]
            self._decay_cache[key] = flags
        return flags

    def _init_state(self, p: Tensor, amsgrad: bool) -> dict[str, Any]:
        state = self.state[p]
        if len(state) == 0:
            state["step"] = as_step_tensor(0, p)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        else:
            state["step"] = as_step_tensor(state["step"], p)
        if amsgrad and "max_exp_avg_sq" not in state:
            state["max_exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform a single optimization step (one Keras ``apply_gradients`` call).

        Args:
            closure (`Callable`, *optional*): A closure that reevaluates the model and returns the loss.

        A call where no parameter has a gradient does nothing, as for torch optimizers (Keras raises
        "No gradients provided for any variable." and does not advance either).
        """
        loss = begin_step(
            self, closure, "AdamWeightDecay does not support sparse gradients.", fused_dtypes=(torch.float32,)
        )
        present = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not present:
            return loss
        clipped = clip_gradients(
            [p.grad for p in present],  # type: ignore[misc]
            clipnorm=self.defaults["clipnorm"],
            clipvalue=self.defaults["clipvalue"],
            global_clipnorm=self.defaults["global_clipnorm"],
        )
        clipped_by_param = dict(zip(map(id, present), clipped))

        all_steps: list[Tensor] = []
        for group in self.param_groups:
            flags = self._decay_flags(group)
            params: list[Tensor] = []
            grads: list[Tensor] = []
            exp_avgs: list[Tensor] = []
            exp_avg_sqs: list[Tensor] = []
            max_exp_avg_sqs: list[Tensor] = []
            state_steps: list[Tensor] = []
            decay: list[bool] = []
            indices: list[int] = []  # positions among all parameters (stochastic rounding keys)
            for p, flag in zip(group["params"], flags):
                state = self._init_state(p, group["amsgrad"])  # Keras builds every variable
                all_steps.append(state["step"])
                if p.grad is None:
                    continue
                indices.append(len(all_steps) - 1)
                params.append(p)
                grads.append(clipped_by_param[id(p)])
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                if group["amsgrad"]:
                    max_exp_avg_sqs.append(state["max_exp_avg_sq"])
                state_steps.append(state["step"])
                decay.append(flag)
            if not params:
                continue
            hyper: dict[str, Any] = {
                "foreach": group["foreach"],
                "fused": group["fused"],
                "lr": group["lr"],
                "beta_1": group["beta_1"],
                "beta_2": group["beta_2"],
                "epsilon": group["epsilon"],
                "amsgrad": group["amsgrad"],
                "weight_decay_rate": group["weight_decay_rate"],
            }
            states = [exp_avgs, exp_avg_sqs, max_exp_avg_sqs]
            if not group["fp32_math"]:
                adam_weight_decay(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, decay, **hyper)
                continue
            keys = None
            if group["stochastic_rounding"]:  # keyed by the optimizer-wide step t of this update
                keys = rounding_keys(group["rounding_seed"], params, indices, state_steps)
            step_in_float32(adam_weight_decay, params, grads, states, [state_steps, decay], keys, **hyper)
        # The step count is optimizer-wide (Keras ``iterations``): it advances for every parameter, with or
        # without a gradient; the update above used ``step + 1``.
        count_steps(all_steps)
        return loss


AdamWeightDecay.__doc__ = rf"""Adam with decoupled weight decay, with the numerics of transformers' TensorFlow ``AdamWeightDecay``.

    A torch twin of the (removed) Keras optimizer, same spec (``adam_weight_decay``) and numerics as
    ``hf_optim_tf.AdamWeightDecay``: the weight decay is applied *before* the Adam update, with the scheduled lr
    (not bias-corrected), only to the parameters selected by the include/exclude regexes; the Adam step is
    legacy Keras Adam (epsilon added to :math:`\sqrt{{v}}`, bias correction folded into the step size). The step
    count is optimizer-wide, like Keras ``iterations``: it advances for parameters without a gradient too.

    .. math::
        \begin{{aligned}}
            &g \leftarrow \mathrm{{clip}}(g) \quad (\text{{clipnorm, else global\_clipnorm, else clipvalue}}) \\
            &\theta \leftarrow \theta - (\gamma\,\theta)\,\lambda \quad \text{{if decayed}} \\
            &\alpha_t \leftarrow \gamma \sqrt{{1 - \beta_2^t}} / (1 - \beta_1^t) \\
            &m \leftarrow m + (g - m)(1 - \beta_1), \quad v \leftarrow v + (g^2 - v)(1 - \beta_2), \quad
             \hat v \leftarrow \max(\hat v, v) \text{{ (amsgrad)}} \\
            &\theta \leftarrow \theta - (m\,\alpha_t) / (\sqrt{{v \text{{ or }} \hat v}} + \epsilon)
        \end{{aligned}}

    As in TF, the hyperparameters are cast to the parameter dtype and every op runs in it, unless
    ``fp32_math=True`` (an extension): then a bfloat16/float16 parameter is stepped as a float32 one
    (hyperparameters cast to float32; float32 copies of the parameter, its clipped gradient and its moments go
    through the paths below) and the parameter and its moments are rounded back to its dtype once per step.
    Clipping is unchanged: it runs on the gradients as given. ``stochastic_rounding=True`` (which needs
    ``fp32_math=True``) then stores a bfloat16 parameter with stochastic rounding of that float32 result.

    The fused path (the default for float32 parameters on CPU and CUDA) runs torch's fused AdamW kernel
    (``torch._fused_adamw_``, one pass per tensor), which computes
    :math:`\theta(1-\gamma'\lambda') - \gamma' m/(\sqrt{{v}}+\epsilon)` when given an infinite step count (no bias
    correction of its own), with :math:`\gamma' = \alpha_t` and :math:`\lambda' = \gamma\lambda/\alpha_t` (zero for
    parameters not decayed), from a host mirror of the step (no device synchronisation). It keeps intermediates in
    float32 and updates :math:`m` as a lerp, so it agrees with the reference within the spec float32 tolerance,
    not bit for bit. bfloat16/float16 parameters keep the exact path (TF rounds the hyperparameters to them).

    Args:
        {_docs.PARAMS}
            Weight-decay patterns are matched (``re.search``) against the parameter names, so pass
            ``model.named_parameters()``; unnamed parameters with patterns set are rejected.
        learning_rate (`float` or `torch.Tensor`, *optional*, defaults to 1e-3):
            The learning rate (stored as the group's ``"lr"``, so torch LR schedulers drive it).
        beta_1 (`float`, *optional*, defaults to 0.9): Decay rate of the first moment.
        beta_2 (`float`, *optional*, defaults to 0.999): Decay rate of the second moment.
        epsilon (`float`, *optional*, defaults to 1e-7): Added to :math:`\sqrt{{v}}`.
        amsgrad (`bool`, *optional*, defaults to `False`): Use the AMSGrad variant.
        weight_decay_rate (`float`, *optional*, defaults to 0.0): The weight decay to apply.
        include_in_weight_decay (`list[str]`, *optional*): Regexes of parameter names to decay (wins over the
            exclude list).
        exclude_from_weight_decay (`list[str]`, *optional*): Regexes of parameter names not to decay.
        clipnorm (`float`, *optional*): Keyword-only. Clip each gradient tensor to this L2 norm.
        clipvalue (`float`, *optional*): Keyword-only. Clip every gradient element to ``[-c, c]``.
        global_clipnorm (`float`, *optional*): Keyword-only. Clip all gradients together to this joint L2 norm.
            The clip settings are optimizer-wide (read from the constructor arguments).
        {_docs.FOREACH}
        {FUSED_DOC}
        {_docs.FP32_MATH}
            Here the hyperparameters are cast to float32 too (not to the parameter dtype, as TF does); with
            bfloat16 that keeps ``beta_2=0.999`` from rounding to 1.
        {_docs.STOCHASTIC_ROUNDING}
            It needs ``fp32_math=True``: the parameter is rounded from the float32 result of the step. The step in
            the rounding key is the optimizer-wide step of the update (Keras ``iterations + 1``).
        {_docs.ROUNDING_SEED}

    State (per parameter): ``step`` (optimizer-wide count), ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``
    (amsgrad only).

    Raises:
        ValueError, TypeError: invalid arguments (spec ``adam_weight_decay``), e.g. two clipping options, or
            ``stochastic_rounding=True`` without ``fp32_math=True``. ValueError at ``step``: a float16 parameter
            with a gradient in a group with ``stochastic_rounding=True``.

    Example:
        >>> model = torch.nn.Linear(4, 2)
        >>> optimizer = AdamWeightDecay(model.named_parameters(), learning_rate=1e-3, weight_decay_rate=0.01,
        ...                             exclude_from_weight_decay=["bias"])
    """


def clip_gradients(
    grads: list[Tensor],
    *,
    clipnorm: float | None,
    clipvalue: float | None,
    global_clipnorm: float | None,
) -> list[Tensor]:
    """Keras 3 gradient clipping of the present gradients (a bound of None or <= 0 is off); new tensors.

    ``clipnorm`` per tensor: ``g * c / max(norm(g), c)``; else ``global_clipnorm``: every gradient times
    ``c * min(1 / joint_norm, 1 / c)``; else ``clipvalue``: element-wise clamp. No host synchronisation.

    A bound beyond the gradient dtype's range works as the exact formula does: a ``clipnorm`` or
    ``global_clipnorm`` above its largest value leaves every gradient of finite norm as it is (Keras' cast of the
    bound to an infinity would make NaNs), ``1 / global_clipnorm`` above it is capped at it, and ``clipvalue`` is
    rounded to the dtype.
    """
    if clipnorm and clipnorm > 0:
        out = []
        for g in grads:
            if clipnorm > torch.finfo(g.dtype).max:  # every representable norm is below the bound
                out.append(g)
                continue
            l2sum = (g * g).sum()
            l2norm = torch.where(l2sum > 0, l2sum.sqrt(), l2sum)
            out.append((g * clipnorm) / torch.clamp(l2norm, min=clipnorm))
        return out
    if global_clipnorm and global_clipnorm > 0:
        total: Tensor | None = None
        for g in grads:
            partial = (g * g).sum()
            total = partial if total is None else total + partial
        assert total is not None
        use_norm = total.sqrt()
        inverse = torch.where(use_norm > 0, 1.0 / use_norm, torch.full_like(use_norm, float("inf")))
        largest = torch.finfo(use_norm.dtype).max
        if global_clipnorm > largest:  # every representable norm is below the bound: scale 1 (NaN kept)
            scale = (use_norm - use_norm) + 1.0
        else:  # a finite cap: a zero norm (inverse inf) with a bound that rounds to 0 gives 0, not 0 * inf
            cap = min(1.0 / global_clipnorm, largest)
            scale = global_clipnorm * torch.clamp(inverse, max=cap) + (use_norm - use_norm)
        return [g * scale.to(g.dtype) for g in grads]
    if clipvalue and clipvalue > 0:
        return [g.clamp(-bound, bound) for g in grads for bound in (dtype_scalar(clipvalue, g.dtype),)]
    return list(grads)


def adam_weight_decay(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    decay: list[bool],
    foreach: bool | None = None,
    fused: bool | None = None,
    *,
    lr: float | Tensor,
    beta_1: float,
    beta_2: float,
    epsilon: float,
    amsgrad: bool,
    weight_decay_rate: float,
) -> None:
    """Functional AdamWeightDecay of already clipped gradients (TF numerics); updates in place.

    ``state_steps`` hold the optimizer-wide count *before* this step (the caller increments them);
    ``decay[i]`` says whether parameter ``i`` is decayed.
    """
    hyper: dict[str, Any] = {
        "lr": lr,
        "beta_1": beta_1,
        "beta_2": beta_2,
        "epsilon": epsilon,
        "amsgrad": amsgrad,
        "weight_decay_rate": weight_decay_rate,
    }
    lists: list[Any] = [params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps, decay]
    if use_fused(fused, foreach, lr):
        rest = _fused_adam_weight_decay(*lists, strict=bool(fused), **hyper)
        if not rest:
            return
        lists = [[lst[i] for i in rest] if lst else lst for lst in lists]
    func = _multi_tensor_adam_weight_decay if use_foreach(foreach, lists[0]) else _single_tensor_adam_weight_decay
    func(*lists, **hyper)


def _coefficients(
    lr: float | Tensor, beta_1: float, beta_2: float, step: Tensor, like: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """lr, alpha, 1 - beta_1, 1 - beta_2 as 0-dim tensors in the parameter dtype (TF casts hyperparameters first)."""
    dtype, device = like.dtype, like.device
    lr_t = lr.to(device=device, dtype=dtype) if isinstance(lr, Tensor) else torch.tensor(lr, dtype=dtype, device=device)
    b1 = torch.tensor(beta_1, dtype=dtype, device=device)
    b2 = torch.tensor(beta_2, dtype=dtype, device=device)
    t = (step + 1).to(dtype)
    alpha = (lr_t * (1.0 - torch.pow(b2, t)).sqrt()) / (1.0 - torch.pow(b1, t))
    return lr_t, alpha, 1.0 - b1, 1.0 - b2


def _single_tensor_adam_weight_decay(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    decay: list[bool],
    *,
    lr: float | Tensor,
    beta_1: float,
    beta_2: float,
    epsilon: float,
    amsgrad: bool,
    weight_decay_rate: float,
) -> None:
    for i, param in enumerate(params):
        grad, exp_avg, exp_avg_sq = grads[i], exp_avgs[i], exp_avg_sqs[i]
        lr_t, alpha, one_minus_b1, one_minus_b2 = _coefficients(lr, beta_1, beta_2, state_steps[i], param)
        if decay[i] and weight_decay_rate != 0.0:
            param.sub_((lr_t * param).mul_(weight_decay_rate))
        exp_avg.add_((grad - exp_avg).mul_(one_minus_b1))
        exp_avg_sq.add_((grad * grad).sub_(exp_avg_sq).mul_(one_minus_b2))
        denom_sq = exp_avg_sq
        if amsgrad:
            torch.maximum(max_exp_avg_sqs[i], exp_avg_sq, out=max_exp_avg_sqs[i])
            denom_sq = max_exp_avg_sqs[i]
        param.sub_((exp_avg * alpha).div_(denom_sq.sqrt().add_(epsilon)))


def _multi_tensor_adam_weight_decay(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    decay: list[bool],
    *,
    lr: float | Tensor,
    beta_1: float,
    beta_2: float,
    epsilon: float,
    amsgrad: bool,
    weight_decay_rate: float,
) -> None:
    lists: list[list[Tensor]] = [params, grads, exp_avgs, exp_avg_sqs, state_steps]
    if amsgrad:
        lists.append(max_exp_avg_sqs)
    grouped = Optimizer._group_tensors_by_device_and_dtype(lists, with_indices=True)  # type: ignore[arg-type]
    for tensors, indices in grouped.values():
        d_params, d_grads, d_exp_avgs, d_exp_avg_sqs, d_steps = tensors[:5]
        lr_t, alpha, one_minus_b1, one_minus_b2 = _coefficients(lr, beta_1, beta_2, d_steps[0], d_params[0])
        if weight_decay_rate != 0.0:
            decayed = [p for p, k in zip(d_params, indices) if decay[k]]
            if decayed:
                scaled = torch._foreach_mul(decayed, lr_t)
                torch._foreach_mul_(scaled, weight_decay_rate)
                torch._foreach_sub_(decayed, scaled)
                del scaled
        diffs = torch._foreach_sub(d_grads, d_exp_avgs)
        torch._foreach_mul_(diffs, one_minus_b1)
        torch._foreach_add_(d_exp_avgs, diffs)
        squares = torch._foreach_mul(d_grads, d_grads)
        torch._foreach_sub_(squares, d_exp_avg_sqs)
        torch._foreach_mul_(squares, one_minus_b2)
        torch._foreach_add_(d_exp_avg_sqs, squares)
        del diffs, squares
        denom_sq = d_exp_avg_sqs
        if amsgrad:
            d_max = tensors[5]
            torch._foreach_maximum_(d_max, d_exp_avg_sqs)
            denom_sq = d_max
        denoms = torch._foreach_sqrt(denom_sq)
        torch._foreach_add_(denoms, epsilon)
        updates = torch._foreach_mul(d_exp_avgs, alpha)
        torch._foreach_div_(updates, denoms)
        torch._foreach_sub_(d_params, updates)


def _fused_adam_weight_decay(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    max_exp_avg_sqs: list[Tensor],
    state_steps: list[Tensor],
    decay: list[bool],
    *,
    strict: bool,
    lr: float | Tensor,
    beta_1: float,
    beta_2: float,
    epsilon: float,
    amsgrad: bool,
    weight_decay_rate: float,
) -> list[int]:
    """torch's fused AdamW kernel with the reparametrisation in :class:`AdamWeightDecay`'s docstring.

    Runs the float32 tensors (grouped by device, step and whether they are decayed); returns the indices of the
    others (an error when ``strict``). ``state_steps`` hold the count before this step.
    """
    if isinstance(lr, Tensor):
        if lr.device.type != "cpu" or lr.numel() != 1:
            if strict:
                raise RuntimeError("fused=True needs a float lr or a one-element CPU tensor lr")
            return list(range(len(params)))
        lr = float(lr)
    rest: list[int] = []
    buckets: dict[tuple[torch.device, float, bool], list[int]] = {}
    steps = host_steps(state_steps)
    for i, param in enumerate(params):
        companions = [grads[i], exp_avgs[i], exp_avg_sqs[i]] + ([max_exp_avg_sqs[i]] if amsgrad else [])
        if fused_eligible(param, *companions, dtypes=(torch.float32,)):
            decayed = decay[i] and weight_decay_rate != 0.0
            buckets.setdefault((param.device, steps[i] + 1.0, decayed), []).append(i)
        else:
            rest.append(i)
    if strict and rest:
        raise RuntimeError(
            "fused=True supports dense contiguous float32 tensors on CPU or CUDA; got "
            f"{sorted({(str(params[i].dtype), params[i].device.type) for i in rest})}"
        )
    for (device, t, decayed), group in buckets.items():
        q, r = kernel_moment_ratios(device, beta_1, beta_2, t)  # (1, 1) on CPU; see kernel_moment_ratios
        alpha = lr * math.sqrt(1.0 - beta_2**t) / (1.0 - beta_1**t) * math.sqrt(r) / q
        decay_rate = lr * weight_decay_rate / alpha if decayed and alpha != 0.0 else 0.0
        torch._fused_adamw_(
            [params[i] for i in group],
            [grads[i] for i in group],
            [exp_avgs[i] for i in group],
            [exp_avg_sqs[i] for i in group],
            [max_exp_avg_sqs[i] for i in group] if amsgrad else [],
            [saturated_step(device)] * len(group),
            lr=alpha,
            beta1=beta_1,
            beta2=beta_2,
            weight_decay=decay_rate,
            eps=epsilon * math.sqrt(r),
            amsgrad=amsgrad,
            maximize=False,
        )
    return rest
