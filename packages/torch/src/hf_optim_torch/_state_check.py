"""Checks of loaded state: a checkpoint either fits the optimizer or scheduler, or is rejected before anything changes.

``torch.optim.Optimizer.load_state_dict`` only compares the number of param groups and of parameters per group;
it then casts every floating state tensor to its parameter's dtype and device and keeps whatever else it finds. A
state of the wrong shape (a resized embedding, another optimizer's state) is only noticed inside a step, as a
broadcast error, or not at all: the native Adafactor kernel would read and write past the ends of the statistics.
:func:`check_optimizer_state` looks at every entry first and raises a ValueError/TypeError that names the param
group, the parameter (index and shape), the state key, what was expected and what was received. The LR schedulers
get the same treatment through :class:`CheckedLoad`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ._arguments import TORCH_FLAGS, validate_arguments
from ._step_block import gather_steps
from ._step_count import as_step_tensor

__all__ = [
    "COUNTER",
    "CheckedLoad",
    "CheckedOptimizer",
    "Slot",
    "check_count",
    "check_optimizer_state",
    "check_real",
]


@dataclass(frozen=True)
class Slot:
    """What one state key of a parameter must hold.

    Attributes:
        shape: the tensor shape, or None for the step counter (a non-negative integral number or one-element tensor).
        nonnegative: the values cannot be negative (second moments: sums of squares; NaN is let through, as a NaN
            gradient leaves it there).
        number_ok: a Python number may stand for a 0-dim tensor (transformers' Adafactor stores ``RMS = 0``).
    """

    shape: tuple[int, ...] | None
    nonnegative: bool = False
    number_ok: bool = False


COUNTER = Slot(None)
"""The per-parameter ``step``: a Python int (transformers) or a one-element tensor (torch)."""

Layout = Callable[[torch.Tensor, Mapping[str, Any]], Mapping[str, Slot]]


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)} on {value.device}"
    text = repr(value)
    return f"{text[:60]}... (of type {type(value).__name__})" if len(text) > 60 else f"{text} ({type(value).__name__})"


def check_real(value: object, what: str) -> float:
    """``value`` as a float: a bool-free real number or a one-element real tensor, else TypeError."""
    if isinstance(value, torch.Tensor):
        if value.numel() != 1 or value.dtype in (torch.bool,) or value.is_complex() or value.device.type == "meta":
            raise TypeError(f"{what} must be a real number or a one-element real tensor; got {_describe(value)}")
        return float(value.detach().cpu().reshape(()).to(torch.float64))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a real number; got {_describe(value)}")
    return float(value)


def check_count(value: object, what: str, minimum: int = 0) -> int:
    """``value`` as an int: a finite integral real number >= ``minimum`` (TypeError / ValueError otherwise)."""
    number = check_real(value, what)
    if not math.isfinite(number) or number != math.floor(number) or number < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}; got {_describe(value)}")
    return int(number)


def _check_slot(where: str, key: str, value: object, slot: Slot, param: torch.Tensor) -> None:
    what = f"{where}, state `{key}`"
    if slot.shape is None:
        check_count(value, what)
        return
    if slot.number_ok and not isinstance(value, torch.Tensor):
        check_real(value, what)
        return
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{what} must be a tensor of shape {slot.shape}; got {_describe(value)}")
    if value.layout != torch.strided:
        raise TypeError(f"{what} must be a dense (strided) tensor; got layout {value.layout}")
    if value.device.type == "meta" and param.device.type != "meta":
        raise ValueError(f"{what} holds no data (a tensor on the meta device); the parameter is on {param.device}")
    if not value.is_floating_point():
        raise TypeError(
            f"{what} must be a floating-point tensor (it is cast to the parameter's dtype); got {value.dtype}"
        )
    if tuple(value.shape) != slot.shape:
        raise ValueError(f"{what} must have shape {slot.shape}; got shape {tuple(value.shape)}")
    if slot.nonnegative and value.device.type != "meta" and bool((value < 0).any()):
        raise ValueError(f"{what} holds negative values; a second moment is a mean of squares (>= 0 or NaN)")


def check_optimizer_state(
    optimizer: torch.optim.Optimizer,
    state_dict: object,
    *,
    layout: Layout,
    check_group: Callable[[Mapping[str, Any]], None],
    optional_keys: Collection[str] = (),
) -> None:
    """Check a ``state_dict`` against ``optimizer`` before ``load_state_dict`` changes anything.

    Args:
        optimizer: the optimizer the state is loaded into (its current params define the expected shapes).
        state_dict: what the caller passed to ``load_state_dict``.
        layout: ``(param, group) -> {state key: Slot}``: every key the state of ``param`` must hold once stepped,
            for the hyperparameters of ``group`` (the loaded ones: they replace the current ones).
        check_group: validates one group's hyperparameters (the loaded values merged over the current ones), raising
            the spec's ValueError/TypeError.
        optional_keys: group keys that ``__setstate__`` fills in when a (older) checkpoint lacks them.

    A parameter without a state entry is accepted: it starts afresh at its next step, as one that never had a
    gradient. Raises ValueError/TypeError naming the group, the parameter and the key; changes nothing.
    """
    if not isinstance(state_dict, Mapping):
        raise TypeError(f"state_dict must be a dict with 'state' and 'param_groups'; got {_describe(state_dict)}")
    for key in ("state", "param_groups"):
        if key not in state_dict:
            raise ValueError(f"state_dict has no '{key}' entry (keys: {sorted(map(str, state_dict))})")
    state, saved_groups = state_dict["state"], state_dict["param_groups"]
    if not isinstance(state, Mapping):
        raise TypeError(f"state_dict['state'] must be a dict (parameter id -> state); got {_describe(state)}")
    if not isinstance(saved_groups, Sequence) or isinstance(saved_groups, (str, bytes)):
        raise TypeError(f"state_dict['param_groups'] must be a list of dicts; got {_describe(saved_groups)}")
    groups = optimizer.param_groups
    if len(saved_groups) != len(groups):
        raise ValueError(
            f"state_dict has {len(saved_groups)} param groups; this optimizer has {len(groups)} "
            f"(of {[len(g['params']) for g in groups]} parameters)"
        )
    seen: dict[object, str] = {}
    merged_groups: list[dict[str, Any]] = []
    for g, (group, saved) in enumerate(zip(groups, saved_groups)):
        where = f"param group {g}"
        if not isinstance(saved, Mapping):
            raise TypeError(f"{where} must be a dict; got {_describe(saved)}")
        ids = saved.get("params")
        if not isinstance(ids, Sequence) or isinstance(ids, (str, bytes)):
            raise TypeError(f"{where}: 'params' must be a list of parameter ids; got {_describe(ids)}")
        if len(ids) != len(group["params"]):
            raise ValueError(
                f"{where} holds {len(ids)} parameters in state_dict; this optimizer's group has "
                f"{len(group['params'])} (shapes {[tuple(p.shape) for p in group['params']]})"
            )
        for index, pid in enumerate(ids):
            # torch numbers the parameters; torch.distributed.checkpoint names them by their fully qualified name
            if isinstance(pid, bool) or not isinstance(pid, (int, str)):
                raise TypeError(f"{where}: parameter id {index} must be an int or a name; got {_describe(pid)}")
            if pid in seen:
                raise ValueError(f"{where}: parameter id {pid} is listed twice (also in {seen[pid]})")
            seen[pid] = where
        # keys of the optimizer's own groups (torch's __setstate__ adds `differentiable` to `defaults` only)
        required = [key for key in optimizer.defaults if key in group and key not in optional_keys]
        missing = [key for key in required if key not in saved]
        if missing:
            raise ValueError(
                f"{where} in state_dict lacks the hyperparameters {missing} of {type(optimizer).__name__} "
                "(is it another optimizer's state?)"
            )
        merged = {**group, **{k: v for k, v in saved.items() if k != "params"}}
        try:
            check_group(merged)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{where} in state_dict: {error}") from None
        merged_groups.append(merged)
    extra = [pid for pid in state if pid not in seen]
    if extra:
        raise ValueError(
            f"state_dict['state'] holds entries for parameter ids {extra[:5]} that no param group lists "
            "(a truncated or edited param_groups?)"
        )
    for g, (group, saved, merged) in enumerate(zip(groups, saved_groups, merged_groups)):
        for index, (pid, param) in enumerate(zip(saved["params"], group["params"])):
            entry = state.get(pid)
            if entry is None:
                continue
            where = f"param group {g}, parameter {index} (shape {tuple(param.shape)})"
            if not isinstance(entry, Mapping):
                raise TypeError(f"{where}: its state must be a dict; got {_describe(entry)}")
            slots = layout(param, merged)
            missing = [key for key in slots if key not in entry]
            unknown = [str(key) for key in entry if key not in slots]
            if missing or unknown:
                raise ValueError(
                    f"{where}: its state must hold exactly {sorted(slots)} for {type(optimizer).__name__} with "
                    f"these hyperparameters; missing {missing}, unexpected {unknown} "
                    "(a state written by another optimizer or configuration?)"
                )
            for key, slot in slots.items():
                _check_slot(where, key, entry[key], slot, param)


# --------------------------------------------------------------------------- schedulers

#: attributes of torch's LR schedulers (any torch release): present in a scheduler's state_dict
_SCHEDULER_KEYS = frozenset(
    {"base_lrs", "last_epoch", "_step_count", "verbose", "_get_lr_called_within_step", "_last_lr", "_is_initial"}
)


class CheckedLoad:
    """Mixin of the LR schedulers: ``load_state_dict`` checks the whole state first, then loads it.

    The required keys are those of the scheduler's own ``state_dict()``; private torch bookkeeping keys that differ
    between torch releases may be absent. Subclasses add :meth:`_check_own` for their own fields.
    """

    #: keys of the scheduler's own state_dict that a loaded one must hold
    _REQUIRED: ClassVar[frozenset[str]] = frozenset({"last_epoch"})

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.check_state_dict(state_dict)
        super().load_state_dict(state_dict)  # type: ignore[misc]

    def check_state_dict(self, state_dict: object) -> None:
        """Raise a ValueError/TypeError naming the field when ``state_dict`` does not fit this scheduler."""
        name = type(self).__name__
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"{name} state_dict must be a dict; got {_describe(state_dict)}")
        own = set(self.state_dict())  # type: ignore[attr-defined]
        missing = sorted(self._REQUIRED - set(state_dict))
        unknown = sorted(str(key) for key in state_dict if key not in own and key not in _SCHEDULER_KEYS)
        if missing or unknown:
            raise ValueError(
                f"{name} state_dict: missing {missing}, unexpected {unknown} (the state of another scheduler?)"
            )
        groups = len(self.optimizer.param_groups)  # type: ignore[attr-defined]
        check_count(state_dict["last_epoch"], f"{name} state_dict['last_epoch']", minimum=-1)
        if "_step_count" in state_dict:
            check_count(state_dict["_step_count"], f"{name} state_dict['_step_count']")
        for key in ("base_lrs", "_last_lr", "min_lrs"):
            if key in state_dict:
                values = state_dict[key]
                if not isinstance(values, Sequence) or len(values) != groups:
                    raise ValueError(
                        f"{name} state_dict['{key}'] must be a list of {groups} learning rates (one per param "
                        f"group); got {_describe(values)}"
                    )
                for k, value in enumerate(values):
                    if not math.isfinite(check_real(value, f"{name} state_dict['{key}'][{k}]")):
                        raise ValueError(f"{name} state_dict['{key}'][{k}] must be finite; got {value!r}")
        self._check_own(state_dict)

    def _check_own(self, state_dict: Mapping[str, Any]) -> None:
        """The subclass's own fields (none here)."""


class CheckedOptimizer:
    """Mixin of the optimizers: a checked ``load_state_dict`` and defaults for keys older checkpoints lack.

    A subclass defines :meth:`_state_layout` (the state a parameter holds once stepped) and :meth:`_check_group`
    (the spec validation of one param group's hyperparameters, also used by ``add_param_group``).
    """

    #: the optimizer's spec id, and its group keys -> spec parameter names (hyperparameters only)
    _SPEC_ID: ClassVar[str]
    _GROUP_KEYS: ClassVar[Mapping[str, str]]
    #: group keys an older checkpoint may lack, with the value ``__setstate__`` gives them
    _LEGACY_DEFAULTS: ClassVar[Mapping[str, Any]] = {}
    #: state keys a step creates where a parameter's state lacks them (a flag such as ``amsgrad`` turned on after
    #: steps); the others must be there once a parameter has state
    _CREATED_WHEN_MISSING: ClassVar[frozenset[str]] = frozenset()

    def _state_layout(self, param: torch.Tensor, group: Mapping[str, Any]) -> Mapping[str, Slot]:
        raise NotImplementedError

    def _check_group(self, group: Mapping[str, Any]) -> None:
        """The spec's checks of one group's hyperparameters, and of the torch flags it holds."""
        values = {name: group[key] for key, name in self._GROUP_KEYS.items() if key in group}
        validate_arguments(self._SPEC_ID, values, {flag: group[flag] for flag in TORCH_FLAGS if flag in group})

    def _check_loaded_group(self, group: Mapping[str, Any]) -> None:
        """The checks of one group of a loaded ``state_dict`` (by default those of a new group)."""
        self._check_group(group)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Check a group's own hyperparameters (over the defaults) before adding it; those of ``__init__`` are
        checked there once."""
        if hasattr(self, "defaults") and any(key in self.defaults for key in param_group):  # type: ignore[attr-defined]
            self._check_group({**self.defaults, **param_group})  # type: ignore[attr-defined]
        super().add_param_group(param_group)  # type: ignore[misc]

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)  # type: ignore[misc]
        for group in self.param_groups:  # type: ignore[attr-defined]
            for key, value in self._LEGACY_DEFAULTS.items():
                group.setdefault(key, value)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a checkpoint (ours, transformers' or torch.optim's of the same layout) after checking all of it.

        Raises:
            ValueError, TypeError: the checkpoint does not fit (see :func:`check_optimizer_state`); the optimizer
                is unchanged.
        """
        check_optimizer_state(
            self,  # type: ignore[arg-type]
            state_dict,
            layout=self._state_layout,
            check_group=self._check_loaded_group,
            optional_keys=self._LEGACY_DEFAULTS,
        )
        super().load_state_dict(state_dict)  # type: ignore[misc]
        for state in self.state.values():  # type: ignore[attr-defined]
            for key, value in state.items():  # the fused and native paths take contiguous state
                if isinstance(value, torch.Tensor) and not value.is_contiguous():
                    state[key] = value.contiguous()
        for group in self.param_groups:  # type: ignore[attr-defined]
            states = [(self.state[p], p) for p in group["params"] if "step" in self.state.get(p, ())]  # type: ignore[attr-defined]
            for state, p in states:  # next to the parameter, then one counter tensor per group (._step_block)
                state["step"] = as_step_tensor(state["step"], p)
            gather_steps([state for state, _ in states])
