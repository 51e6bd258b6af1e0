"""AdamWeightDecay: transformers' TensorFlow optimizer as a torch twin (spec id ``adam_weight_decay``).

The optimizer, its functional form and its paths; the gradient clipping is in :mod:`._gradient_clipping`, the
choice of the decayed parameters in :mod:`._weight_decay_selection`, the scalar math in :mod:`._adam_scalars`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar, NamedTuple

import torch
from torch import Tensor
from torch.optim import Optimizer

from ._adam_scalars import (
    adam_weight_decay_factors,
    bias_corrected_step_size,
    once_per_key,
    reads_host_steps,
    torch_kernel_scalars,
)
from ._adam_state import adam_slots, adam_state
from ._adam_torch_kernel_path import AdamTensors, kernel_lr, kernel_parts, torch_kernel_path
from ._adam_weight_decay_doc import ADAM_WEIGHT_DECAY_DOC
from ._arguments import constructor_arguments, validate_arguments
from ._begin_step import begin_step
from ._gradient_clipping import clip_gradients
from ._groups_call import GroupsCall, StepCalls, by_part
from ._low_precision import rounding_keys, step_in_float32
from ._path_choice import LayoutCache, compiling, group_layout_cache, use_foreach, use_fused
from ._state_check import CheckedOptimizer, Slot
from ._step_block import gather_steps
from ._step_count import STEP_DTYPE, count_steps, host_steps
from ._weight_decay_selection import do_use_weight_decay

__all__ = ["AdamWeightDecay", "adam_weight_decay"]

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
#: torch's fused kernel takes float32 only: TF rounds the hyperparameters to a 16-bit parameter's dtype
_KERNEL_DTYPES = (torch.float32,)


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
    _CREATED_WHEN_MISSING: ClassVar[frozenset[str]] = frozenset({"max_exp_avg_sq"})  # amsgrad turned on

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
        values, flags = constructor_arguments(locals())
        hp = validate_arguments(_SPEC_ID, values, flags)
        defaults: dict[str, Any] = {key: hp[name] for key, name in _GROUP_KEYS.items()}
        if isinstance(learning_rate, Tensor):
            defaults["lr"] = learning_rate
        for key in ("include_in_weight_decay", "exclude_from_weight_decay"):
            defaults[key] = None if defaults[key] is None else list(defaults[key])
        defaults.update({key: hp[key] for key in _CLIP_KEYS})
        defaults.update(flags)
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
        try:
            self._decay_flags(group)
        except ValueError:
            self.param_groups.pop()
            raise

    def _state_layout(self, param: Tensor, group: Mapping[str, Any]) -> dict[str, Slot]:
        return adam_slots(param, group["amsgrad"])

    def _decay_flags(self, group: dict[str, Any]) -> list[bool]:
        """Whether each parameter of ``group`` is decayed (its name matched against the patterns once per change)."""
        names = group.get("param_names") or [None] * len(group["params"])
        if len(names) != len(group["params"]):  # (torch does not compare them; zip would drop the parameters after)
            raise ValueError(
                f"AdamWeightDecay needs one name per parameter: a param group has {len(group['params'])} parameters "
                f"and {len(names)} 'param_names'"
            )
        include, exclude = group["include_in_weight_decay"], group["exclude_from_weight_decay"]
        rate = group["weight_decay_rate"]
        key = (tuple(names), tuple(include or ()), tuple(exclude or ()), float(rate))
        flags = self._decay_cache.get(key)
        if flags is None:
            flags = [do_use_weight_decay(name, rate, include, exclude) for name in names]
            self._decay_cache[key] = flags
        return flags

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform a single optimization step (one Keras ``apply_gradients`` call).

        Args:
            closure (`Callable`, *optional*): A closure that reevaluates the model and returns the loss.

        A call where no parameter has a gradient does nothing, as for torch optimizers (Keras raises
        "No gradients provided for any variable." and does not advance either).
        """
        loss = begin_step(
            self, closure, "AdamWeightDecay does not support sparse gradients.", fused_dtypes=_KERNEL_DTYPES
        )
        groups = self.param_groups
        if all(p.grad is None for group in groups for p in group["params"]):
            return loss
        group_flags = [self._decay_flags(group) for group in groups]  # (a misnamed group refused before any step)
        bounds = {key: self.defaults[key] for key in _CLIP_KEYS}
        clipped_by_param = None  # id(param) -> its clipped gradient; None: no clipping, the gradients as they are
        if any(bound and bound > 0 for bound in bounds.values()):
            present = [p for group in groups for p in group["params"] if p.grad is not None]
            clipped = clip_gradients([p.grad for p in present], **bounds)  # type: ignore[misc]
            clipped_by_param = dict(zip(map(id, present), clipped))

        counted: list[list[Tensor]] = []  # every parameter's step, per call or fp32_math group
        calls = StepCalls(lambda call: counted.append(self._step_call(call)))  # groups that step as one call
        offset = 0  # position of the group's first parameter among all parameters (stochastic rounding keys)
        for index, group in enumerate(groups):
            group_params, amsgrad = group["params"], group["amsgrad"]
            created = bool(group_params) and not self.state[group_params[0]]
            if created:  # Keras builds every variable at step 1
                for p in group_params:
                    adam_state(self.state[p], p, amsgrad)
            tensors = AdamTensors([], [], [], [], [], [])
            params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, state_steps = tensors
            states = self.state
            flags = group_flags[index]
            for p in group_params:
                state = states[p]
                step = state.get("step")
                if (
                    type(step) is not Tensor
                    or step.dtype is not STEP_DTYPE
                    or step.device != p.device
                    or (amsgrad and "max_exp_avg_sq" not in state)
                ):  # (a state ready for the step, the usual case, costs no call)
                    step = adam_state(state, p, amsgrad)["step"]
                grad = p.grad
                if grad is None:
                    continue
                params.append(p)
                grads.append(grad if clipped_by_param is None else clipped_by_param[id(p)])
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                if amsgrad:
                    max_exp_avg_sqs.append(state["max_exp_avg_sq"])
                state_steps.append(step)
            # every parameter's step advances (Keras ``iterations``); the usual case: every parameter has a gradient
            whole = len(params) == len(group_params)
            steps = state_steps if whole else [states[p]["step"] for p in group_params]
            decay = flags if whole else [flag for p, flag in zip(group_params, flags) if p.grad is not None]
            first, offset = offset, offset + len(group_params)
            options = _AdamWeightDecayOptions(
                group["lr"], group["beta_1"], group["beta_2"], group["epsilon"], amsgrad, group["weight_decay_rate"]
            )
            if not group["fp32_math"]:
                key = (group["foreach"], group["fused"], amsgrad, isinstance(options.lr, Tensor))
                calls.add(key, index, tensors, options, created, decay=decay, counted=steps, every=group_params)
                continue
            calls.flush()
            if created and not compiling():  # one counter tensor for the group's steps (see ._step_block)
                gather_steps([self.state[p] for p in group_params])
                steps = [states[p]["step"] for p in group_params]
                state_steps = [states[p]["step"] for p in params]
            counted.append(steps)
            if not params:
                continue
            hyper = options._asdict() | {"foreach": group["foreach"], "fused": group["fused"]}
            hyper["layout_cache"] = group_layout_cache(self, index)
            keys = None
            if group["stochastic_rounding"]:  # keyed by the optimizer-wide step t of this update
                positions = [first + j for j, p in enumerate(group_params) if p.grad is not None]
                keys = rounding_keys(group["rounding_seed"], params, positions, state_steps)
            moments = [exp_avgs, exp_avg_sqs, max_exp_avg_sqs]
            step_in_float32(adam_weight_decay, params, grads, moments, [state_steps, decay], keys, **hyper)
        calls.flush()
        # The step count is optimizer-wide (Keras ``iterations``): it advances for every parameter, with or
        # without a gradient; the update above used ``step + 1``.
        for steps in counted:
            count_steps(steps)
        return loss

    def _step_call(self, call: GroupsCall) -> list[Tensor]:
        """Step the groups of ``call`` as one call of the functional core, their new counters first gathered in one
        tensor (see ._step_block); returns the counters to advance after the update (every parameter's)."""
        tensors = call.tensors
        if call.created and not compiling():
            states = self.state
            call.counted[:] = gather_steps([states[p] for p in call.every])
            tensors.state_steps[:] = [states[p]["step"] for p in tensors.params]
        if tensors.params:
            foreach, fused, _, _ = call.key
            options, parts, cache = call.options, call.parts, group_layout_cache(self, call.first)
            adam_weight_decay_groups(tensors, call.decay, options, parts, foreach, fused, cache)
        return call.counted


AdamWeightDecay.__doc__ = ADAM_WEIGHT_DECAY_DOC


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
    layout_cache: LayoutCache[Any] | None = None,
) -> None:
    """Functional AdamWeightDecay of already clipped gradients (TF numerics); updates in place.

    ``state_steps`` hold the optimizer-wide count *before* this step (the caller increments them);
    ``decay[i]`` says whether parameter ``i`` is decayed. ``layout_cache`` (an optimizer keeps one per call of its groups)
    spares the fused path's per-tensor checks while the tensors' layouts stay the same
    (:class:`._path_choice.LayoutCache`).
    """
    tensors = AdamTensors(params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs if amsgrad else [], state_steps)
    options = _AdamWeightDecayOptions(lr, beta_1, beta_2, epsilon, amsgrad, weight_decay_rate)
    adam_weight_decay_groups(tensors, decay, [options], [len(params)], foreach, fused, layout_cache)


def adam_weight_decay_groups(
    tensors: AdamTensors,
    decay: list[bool],
    options: list[_AdamWeightDecayOptions],
    parts: list[int],
    foreach: bool | None,
    fused: bool | None,
    layout_cache: LayoutCache[Any] | None,
) -> None:
    """AdamWeightDecay over the tensors of several param groups, the consecutive parts of ``tensors`` (of lengths
    ``parts``), each with its ``options`` (equal in what a call takes once: the path and ``amsgrad``). The fused path
    steps them in one call (one layout check for all; one kernel call per group)."""
    if use_fused(fused, foreach, options[0].lr, tensors.params):
        rest = _torch_kernel_adam_weight_decay(tensors, decay, options, parts, strict=bool(fused), cache=layout_cache)
    else:
        rest = list(range(len(tensors.params)))
    for part, indices in by_part(rest, parts):
        whole = len(indices) == len(tensors.params)
        picked, flags = (tensors, decay) if whole else (tensors.pick(indices), [decay[i] for i in indices])
        sweep = _multi_tensor_adam_weight_decay if use_foreach(foreach, picked.params) else _for_loop_adam_weight_decay
        sweep(picked, flags, options[part])


class _AdamWeightDecayOptions(NamedTuple):
    """The hyperparameters of one call, as the paths read them."""

    lr: float | Tensor
    beta_1: float
    beta_2: float
    epsilon: float
    amsgrad: bool
    weight_decay_rate: float


def _for_loop_adam_weight_decay(tensors: AdamTensors, decay: list[bool], o: _AdamWeightDecayOptions) -> None:
    """One parameter at a time, every op in the parameter dtype as TF runs it; the step factors made once per dtype,
    device and step value where the host values may be read (the count is optimizer-wide: one set per dtype)."""
    steps, params = tensors.state_steps, tensors.params
    keys = (
        [(p.dtype, p.device, value) for p, value in zip(params, host_steps(steps))]
        if reads_host_steps(o.lr, steps)
        else None
    )
    factors = once_per_key(
        lambda i: adam_weight_decay_factors(o.lr, o.beta_1, o.beta_2, steps[i], params[i]), keys, len(params)
    )
    for i, param in enumerate(params):
        grad, exp_avg, exp_avg_sq = tensors.grads[i], tensors.exp_avgs[i], tensors.exp_avg_sqs[i]
        lr_t, alpha, one_minus_b1, one_minus_b2 = factors[i]
        if decay[i] and o.weight_decay_rate != 0.0:
            param.sub_((lr_t * param).mul_(o.weight_decay_rate))
        exp_avg.add_((grad - exp_avg).mul_(one_minus_b1))
        exp_avg_sq.add_((grad * grad).sub_(exp_avg_sq).mul_(one_minus_b2))
        denom_sq = exp_avg_sq
        if o.amsgrad:
            torch.maximum(tensors.max_exp_avg_sqs[i], exp_avg_sq, out=tensors.max_exp_avg_sqs[i])
            denom_sq = tensors.max_exp_avg_sqs[i]
        param.sub_((exp_avg * alpha).div_(denom_sq.sqrt().add_(o.epsilon)))


def _multi_tensor_adam_weight_decay(tensors: AdamTensors, decay: list[bool], o: _AdamWeightDecayOptions) -> None:
    """The for-loop's operations as foreach ops over the tensors of one device and dtype at a time."""
    lists: list[list[Tensor]] = [tensors.params, tensors.grads, tensors.exp_avgs, tensors.exp_avg_sqs]
    lists += [tensors.state_steps, tensors.max_exp_avg_sqs] if o.amsgrad else [tensors.state_steps]
    grouped = Optimizer._group_tensors_by_device_and_dtype(lists, with_indices=True)  # type: ignore[arg-type]
    for grouped_tensors, indices in grouped.values():
        d_params, d_grads, d_exp_avgs, d_exp_avg_sqs, d_steps = grouped_tensors[:5]
        lr_t, alpha, one_minus_b1, one_minus_b2 = adam_weight_decay_factors(
            o.lr, o.beta_1, o.beta_2, d_steps[0], d_params[0]
        )
        if o.weight_decay_rate != 0.0:
            decayed = [p for p, k in zip(d_params, indices) if decay[k]]
            if decayed:
                scaled = torch._foreach_mul(decayed, lr_t)
                torch._foreach_mul_(scaled, o.weight_decay_rate)
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
        if o.amsgrad:
            d_max = grouped_tensors[5]
            torch._foreach_maximum_(d_max, d_exp_avg_sqs)
            denom_sq = d_max
        denoms = torch._foreach_sqrt(denom_sq)
        torch._foreach_add_(denoms, o.epsilon)
        updates = torch._foreach_mul(d_exp_avgs, alpha)
        torch._foreach_div_(updates, denoms)
        torch._foreach_sub_(d_params, updates)


def _torch_kernel_adam_weight_decay(
    tensors: AdamTensors,
    decay: list[bool],
    options: list[_AdamWeightDecayOptions],
    parts: list[int],
    *,
    strict: bool,
    cache: LayoutCache[Any] | None,
) -> list[int]:
    """torch's fused AdamW kernel with the reparametrisation in :class:`AdamWeightDecay`'s docstring, over the parts
    (param groups) of ``tensors``, each with its ``options``.

    Runs the float32 tensors and returns the indices of the others (an error when ``strict``). ``state_steps``
    hold the count before this step.
    """
    lrs = [kernel_lr(o.lr, strict) for o in options]

    def run(tensors: AdamTensors, parts: list[int], kept: list[int], picked: list[int] | None) -> list[int]:
        def scalars(device: torch.device, t: float, decays: bool, part: int) -> dict[str, float]:
            o, lr = options[kept[part]], lrs[kept[part]]
            assert lr is not None
            step_size = bias_corrected_step_size(lr, o.beta_1, o.beta_2, t)
            kernel = {"beta1": o.beta_1, "beta2": o.beta_2, "eps": o.epsilon, "t": t}
            factor = lr * o.weight_decay_rate if decays else 0.0
            return torch_kernel_scalars(device, step_size=step_size, decay=factor, decay_first=True, **kernel)

        return torch_kernel_path(
            tensors,
            strict=strict,
            dtypes=_KERNEL_DTYPES,
            steps=lambda steps: [value + 1.0 for value in host_steps(steps)],
            decayed=decay if picked is None else [decay[i] for i in picked],
            scalars=scalars,
            maximize=False,
            parts=parts,
            cache=cache if picked is None else None,
        )

    return kernel_parts(tensors, parts, [lr is not None for lr in lrs], run)
