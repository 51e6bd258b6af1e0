"""SpecFactor: a spec schedule bound to its arguments, the picklable ``step -> float`` behind every torch schedule.

The spec expression is evaluated with Python floats (the float64 reference). A factory checks its arguments once
and binds them with :meth:`SpecFactor.bind_validated`; the bound expression is cached outside the object, so the
object itself stays plain data (it pickles, deep-copies and loads with ``torch.load(weights_only=True)``).
"""

from __future__ import annotations

import copy
import weakref
from collections.abc import Hashable, Mapping
from typing import Any

import hf_optim_spec
import torch
from hf_optim_spec._schedules import bind, bind_validated, is_schedule_ref
from hf_optim_spec.formula import Bound

__all__ = ["SpecFactor", "plain", "validated_factor"]


def plain(value: Any) -> Any:
    """Spec arguments as plain data (what ``torch.load(weights_only=True)`` accepts); schedules become refs."""
    if isinstance(value, SpecFactor):
        return value.to_ref()
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


#: per object: (the fields it was bound with, the bound expression); checked on every call
_BOUND: weakref.WeakKeyDictionary[SpecFactor, tuple[tuple[Any, ...], Bound]] = weakref.WeakKeyDictionary()
#: per content: the bound expression of fields already checked in this process (a copy, an unpickled object or a
#: loaded state with the same fields is not checked again)
_BY_CONTENT: dict[Hashable, Bound] = {}
_BY_CONTENT_SIZE = 1024


def _content_key(fields: tuple[Any, ...]) -> Hashable | None:
    """A hashable, type-exact form of the fields (None when a value cannot be hashed)."""

    def freeze(value: Any) -> Hashable:
        if isinstance(value, Mapping):
            return (dict, tuple(sorted((str(k), freeze(v)) for k, v in value.items())))
        if isinstance(value, (list, tuple)):
            return (list, tuple(freeze(v) for v in value))
        return (type(value), value)

    try:
        key = freeze(fields)
        hash(key)
    except TypeError:
        return None
    return key


def _bind_ref(ref: Mapping[str, Any], given: Any) -> Bound:
    """A schedule argument's bound expression, from its ref (``base_lr`` 1.0 unless the ref says otherwise)."""
    base_lr = ref.get("base_lr", 1.0)
    if isinstance(given, SpecFactor) and given.base_lr in (None, base_lr) and given.to_ref()["params"] == ref["params"]:
        spec = hf_optim_spec.get(given.spec_id)
        if given.spec_id == ref["schedule"] and not any("base_lr" in c.when_text for c in spec.constraints):
            return given.bound()  # checked when it was built; base_lr None and 1.0 bind the same formula
    return bind(ref["schedule"], ref.get("params", {}), base_lr)


class SpecFactor:
    """A spec schedule bound to its arguments: a picklable callable ``step -> float``.

    Used as the ``lr_lambda`` of ``LambdaLR`` ("factor" schedules: the multiplier of each group's initial lr)
    and as the value function of :class:`SpecLR` ("lr" schedules: the absolute lr). Its ``__dict__`` holds only
    plain data (the spec id, the arguments and ``base_lr``), so it pickles, deep-copies, and a scheduler's
    ``state_dict()`` loads with ``torch.load(weights_only=True)``. The bound expression is cached outside the
    object; fields that change (e.g. after ``LambdaLR.load_state_dict``) are checked against the spec and bound
    again on the next call.

    Args:
        spec_id (`str`): The schedule's spec id, e.g. ``"cosine"``.
        params (`Mapping[str, Any]`): Its arguments, canonical names (schedule-typed arguments may be other
            ``SpecFactor`` objects, spec refs ``{"schedule": id, "params": {...}}`` or plain callables; only the
            first two keep the object plain data).
        base_lr (`float`, *optional*): ``base_lr`` in the formula: the optimizer's default lr.
    """

    def __init__(self, spec_id: str, params: Mapping[str, Any], base_lr: float | None = None) -> None:
        self.spec_id = spec_id
        self.params = plain(dict(params))
        self.base_lr = None if base_lr is None else float(base_lr)

    def _fields(self) -> tuple[Any, ...]:
        return (self.spec_id, self.params, self.base_lr)

    def _remember(self, bound: Bound) -> Bound:
        fields = copy.deepcopy(self._fields())
        _BOUND[self] = (fields, bound)
        key = _content_key(fields)
        if key is not None:
            if len(_BY_CONTENT) >= _BY_CONTENT_SIZE:
                del _BY_CONTENT[next(iter(_BY_CONTENT))]
            _BY_CONTENT[key] = bound
        return bound

    def bind_validated(self, validated: Mapping[str, Any]) -> Bound:
        """Bind the fields without checking them: ``validated`` is what ``hf_optim_spec.validate`` has just returned
        for them.

        A schedule-typed argument is bound from its ref, as :meth:`bound` binds it; a :class:`SpecFactor` given
        there lends its own bound expression when that is the same (its spec has no constraint on ``base_lr``).
        """
        concrete = {
            name: _bind_ref(value, validated.get(name)) if is_schedule_ref(value) else value
            for name, value in self.params.items()
        }
        return self._remember(bind_validated(self.spec_id, concrete, self.base_lr))

    def bound(self) -> Bound:
        """The bound float64 expression; fields not seen before are checked against the spec first."""
        entry = _BOUND.get(self)
        if entry is not None and entry[0] == self._fields():
            return entry[1]
        key = _content_key(self._fields())
        known = None if key is None else _BY_CONTENT.get(key)
        if known is not None:
            return self._remember(known)
        return self._remember(bind(self.spec_id, self.params, self.base_lr))

    def __call__(self, step: int | float | torch.Tensor) -> float:
        return self.bound()(step)

    def to_ref(self) -> dict[str, Any]:
        """This schedule as a spec ref: ``{"schedule": id, "params": {...}, "base_lr": ...}``."""
        ref: dict[str, Any] = {"schedule": self.spec_id, "params": copy.deepcopy(self.params)}
        if self.base_lr is not None:
            ref["base_lr"] = self.base_lr
        return ref

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({self.spec_id!r}, {args}, base_lr={self.base_lr!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SpecFactor):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = object.__hash__


def validated_factor(spec_id: str, params: Mapping[str, Any], base_lr: float | None = None) -> SpecFactor:
    """The :class:`SpecFactor` of ``params`` (torch spelling), checked against the spec once and bound."""
    validated = hf_optim_spec.validate(spec_id, params, framework="torch", base_lr=base_lr)
    factor = SpecFactor(spec_id, validated, base_lr)
    factor.bind_validated(validated)
    return factor
