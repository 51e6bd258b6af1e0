"""Adafactor with transformers' numerics (spec id ``adafactor``): the optimizer class and the functional form.

The class validates, holds the state and calls :func:`adafactor`, which picks a path: the two-pass path
(:mod:`._adafactor_two_pass`, ``fused``) or the for-loop / multi-tensor paths (:mod:`._adafactor_loops`). The
scalar math of a step lives in :mod:`._adafactor_scalars`, the docstring in :mod:`._adafactor_doc`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import hf_optim_spec as hs
import torch
from torch import Tensor
from torch.optim import Optimizer

from ._adafactor_args import AdafactorOptions, AdafactorTensors
from ._adafactor_doc import ADAFACTOR_DOC
from ._adafactor_loops import loop_adafactor, multi_tensor_adafactor
from ._adafactor_native_calls import NativeCalls, native_calls
from ._adafactor_scalars import lr_at
from ._adafactor_two_pass import two_pass_adafactor
from ._arguments import constructor_arguments, validate_arguments
from ._begin_step import begin_step
from ._groups_call import GroupsCall, StepCalls, by_part
from ._low_precision import LOW_PRECISION, rounding_keys
from ._path_choice import LayoutCache, compiling, group_layout_cache, use_foreach, use_fused
from ._state_check import COUNTER, CheckedOptimizer, Slot
from ._step_block import gather_steps
from ._step_count import STEP_DTYPE, as_step_tensor, note_advanced

__all__ = ["Adafactor", "adafactor"]

_SPEC_ID = "adafactor"
#: the group keys a path reads (the fields of AdafactorOptions)
_OPTIONS = tuple(field.name for field in dataclasses.fields(AdafactorOptions))
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
    _CREATED_WHEN_MISSING: ClassVar[frozenset[str]] = frozenset({"exp_avg"})  # beta1 set on a group without one

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
        hp = validate_arguments(_SPEC_ID, *constructor_arguments(locals()))
        defaults: dict[str, Any] = {name: hp[name] for name in _HYPERPARAMS}
        if isinstance(lr, Tensor):
            defaults["lr"] = lr
        defaults["eps"] = tuple(hp["eps"])
        defaults["maximize"] = maximize
        defaults["foreach"] = foreach
        defaults["fused"] = fused
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

    def _check_loaded_group(self, group: Mapping[str, Any]) -> None:
        """A saved relative-step group may hold an lr: :class:`AdafactorSchedule` writes the lr it reports into
        ``group["lr"]`` (0.0 before the first step), and the relative step never reads it. The constructor's rule
        against a manual lr with ``relative_step=True`` is for what a user passes, so here the lr only has to be a
        valid lr."""
        lr = group.get("lr")
        if group.get("relative_step") is not True or lr is None:
            self._check_group(group)
            return
        self._check_group({**group, "lr": None})
        value = lr.item() if isinstance(lr, Tensor) and lr.numel() == 1 else lr
        hs.check_parameter(hs.get(self._SPEC_ID).parameters["lr"], value)

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
            if not saved or p.dtype not in LOW_PRECISION:
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
        return lr_at(
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

    def _init_group(self, group: dict[str, Any], *lists: list[Any]) -> bool:
        """Append to ``lists`` (the lists of :class:`AdafactorTensors`, in its order) the tensors of the group's
        parameters that have a gradient, their state created or completed first; returns whether any state was
        created. torch.compile runs a method of this name eagerly while tracing, on lists that start empty."""
        params, grads, state_steps, rms_values, exp_avgs, row_vars, col_vars, full_vars = lists
        use_first_moment = group["beta1"] is not None
        created = False
        for p in group["params"]:
            grad = p.grad
            if grad is None:
                continue
            state = self.state[p]
            if not state:
                created = True
                dtype = _state_dtype(grad)
                state["step"] = as_step_tensor(0, p)
                if use_first_moment:
                    state["exp_avg"] = torch.zeros_like(grad, dtype=dtype, memory_format=torch.preserve_format)
                if grad.dim() >= 2:  # factored
                    state["exp_avg_sq_row"] = torch.zeros_like(grad.select(-1, 0), dtype=dtype)
                    state["exp_avg_sq_col"] = torch.zeros_like(grad.select(-2, 0), dtype=dtype)
                else:
                    state["exp_avg_sq"] = torch.zeros_like(grad, dtype=dtype, memory_format=torch.preserve_format)
                state["RMS"] = grad.new_zeros((), dtype=dtype)
            else:  # (a state ready for the step, the usual case, costs no call)
                step = state["step"]
                if type(step) is not Tensor or step.dtype is not STEP_DTYPE or step.device != p.device:
                    state["step"] = as_step_tensor(step, p)
                if not isinstance(state["RMS"], Tensor):  # a transformers checkpoint holds RMS=0 before a step
                    state["RMS"] = torch.tensor(float(state["RMS"]), dtype=_state_dtype(grad), device=grad.device)
                if use_first_moment and "exp_avg" not in state:  # beta1 set on a group that had none
                    state["exp_avg"] = torch.zeros_like(
                        grad, dtype=_state_dtype(grad), memory_format=torch.preserve_format
                    )
            params.append(p)
            grads.append(grad)
            state_steps.append(state["step"])
            rms_values.append(state["RMS"])
            exp_avgs.append(state.get("exp_avg") if use_first_moment else None)
            row_vars.append(state.get("exp_avg_sq_row"))
            col_vars.append(state.get("exp_avg_sq_col"))
            full_vars.append(state.get("exp_avg_sq"))
        return created

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform a single optimization step.

        Args:
            closure (`Callable`, *optional*): A closure that reevaluates the model and returns the loss.
        """
        loss = begin_step(self, closure, "Adafactor does not support sparse gradients.")
        calls = native_calls(self)  # the groups' native calls, made together once every group has been through
        try:
            self._step_groups(calls)
        except BaseException as error:
            refused = calls.run()  # the native calls held for the groups already routed are made in full
            if refused and error.__context__ is None:
                error.__context__ = refused[0]
            raise
        calls.raise_refused(calls.run())
        return loss

    def _step_groups(self, calls: NativeCalls) -> None:
        """Every group's step, its native calls held in ``calls``; consecutive groups that agree in the path step as
        one call (see ._groups_call), those with stochastic rounding one by one."""
        groups_calls = StepCalls(lambda call: self._step_call(call, calls))  # groups that step as one call
        offset = 0  # position of the group's first parameter among all parameters (stochastic rounding keys)
        for index, group in enumerate(self.param_groups):
            tensors = AdafactorTensors([], [], [], [], [], [], [], [])
            created = self._init_group(group, *tensors)
            first, offset = offset, offset + len(group["params"])
            if not tensors.params:
                continue
            options = AdafactorOptions(*[group[name] for name in _OPTIONS])
            if not group["stochastic_rounding"]:
                key = (group["foreach"], group["fused"], isinstance(options.lr, Tensor))
                groups_calls.add(key, index, tensors, options, created)
                continue
            groups_calls.flush()
            if created and not compiling():  # one counter tensor for the group's steps (see ._step_block)
                tensors.state_steps[:] = gather_steps([self.state[p] for p in tensors.params])
            indices = [first + j for j, p in enumerate(group["params"]) if p.grad is not None]
            keys = rounding_keys(group["rounding_seed"], tensors.params, indices, tensors.state_steps)
            cache = group_layout_cache(self, index)
            _run(
                tensors,
                [options],
                keys,
                foreach=group["foreach"],
                fused=group["fused"],
                layout_cache=cache,
                calls=calls,
            )
            note_advanced([s for s, key in zip(tensors.state_steps, keys) if key is not None])
        groups_calls.flush()

    def _step_call(self, call: GroupsCall, calls: NativeCalls) -> None:
        """Step the groups of ``call`` as one call of the functional core, their new counters first gathered in one
        tensor (see ._step_block)."""
        tensors = call.tensors
        if call.created and not compiling():
            tensors.state_steps[:] = gather_steps([self.state[p] for p in tensors.params])
        foreach, fused, _ = call.key
        cache = group_layout_cache(self, call.first)
        _run(
            tensors, call.options, None, foreach=foreach, fused=fused, layout_cache=cache, calls=calls, parts=call.parts
        )


Adafactor.__doc__ = ADAFACTOR_DOC


def _state_dtype(grad: Tensor) -> torch.dtype:
    """The dtype of a parameter's state: its gradient's, float32 for a 16-bit one (whose arithmetic is float32)."""
    return torch.float32 if grad.dtype in LOW_PRECISION else grad.dtype


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
    layout_cache: LayoutCache[Any] | None = None,
) -> None:
    """Functional Adafactor (transformers numerics): updates ``params`` and the state lists in place.

    ``rounding_keys[i]`` (optional) stores bfloat16 parameter ``i`` with stochastic rounding of its float32
    result, keyed by :func:`hf_optim_spec.rounding.rounding_key`; None entries round to nearest.

    ``grads`` of 16-bit parameters may be float32 or 16-bit (the native kernel reads 16-bit ones as they are; the
    other paths read them in float32, their compute dtype). For a parameter of rank
    >= 2, ``row_vars``/``col_vars`` hold its factored statistics and ``full_vars`` None; otherwise the reverse.
    ``exp_avgs`` entries are None when ``beta1`` is None. See :class:`Adafactor` for the algorithm. ``fused``
    picks the two-pass path (default: float32/bfloat16/float16 CPU parameters, and CUDA ones of at least 64M
    elements, when ``foreach`` is not given; the others take the paths below), ``foreach`` the multi-tensor path
    (default: on accelerators only). ``layout_cache`` (an optimizer keeps one per call of its groups) spares the two-pass
    path's per-tensor checks while the tensors' layouts stay the same (:class:`._path_choice.LayoutCache`).
    """
    options = AdafactorOptions(
        lr, eps, clip_threshold, decay_rate, beta1, weight_decay, scale_parameter, relative_step, warmup_init,
        first_moment, maximize,
    )  # fmt: skip
    tensors = AdafactorTensors(params, grads, state_steps, rms_values, exp_avgs, row_vars, col_vars, full_vars)
    _run(tensors, [options], rounding_keys, foreach=foreach, fused=fused, layout_cache=layout_cache)


def _run(
    tensors: AdafactorTensors,
    options: list[AdafactorOptions],
    rounding_keys: list[int | None] | None,
    *,
    foreach: bool | None,
    fused: bool | None,
    layout_cache: LayoutCache[Any] | None = None,
    calls: NativeCalls | None = None,
    parts: list[int] | None = None,
) -> None:
    """Send the tensors down their paths: the two-pass path first when ``fused`` allows, the rest to a loop. The
    tensors are those of the param groups whose ``options`` are given, the consecutive parts of the lists (of lengths
    ``parts``; None: one group)."""
    if parts is None:
        parts = [len(tensors.params)]
    if use_fused(fused, foreach, options[0].lr, tensors.params):
        rest = two_pass_adafactor(
            tensors, options, parts, rounding_keys, strict=bool(fused), cache=layout_cache, calls=calls
        )
    else:
        rest = list(range(len(tensors.params)))
    for part, indices in by_part(rest, parts):
        picked = tensors if len(indices) == len(tensors.params) else tensors.pick(indices)
        keys = None if rounding_keys is None else [rounding_keys[i] for i in indices]
        path = multi_tensor_adafactor if use_foreach(foreach, picked.params) else loop_adafactor
        path(picked.float32_grads(), options[part], keys)
        note_advanced(picked.state_steps)  # (their counters may share a tensor with the two-pass path's: its mirror)
