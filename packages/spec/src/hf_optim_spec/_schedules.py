"""Bind a schedule spec to parameter values: the float64 reference of one schedule."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._registry import Spec, get
from ._validation import validate
from .formula import Bound

__all__ = ["bind", "is_schedule_ref"]


def is_schedule_ref(value: Any) -> bool:
    """True for the spec-case form of a schedule argument: ``{"schedule": id, "params": {...}}``."""
    return isinstance(value, Mapping) and set(value) <= {"schedule", "params", "base_lr"} and "schedule" in value


def bind(spec: str | Spec, params: Mapping[str, Any], base_lr: float = 1.0) -> Bound:
    """Validate ``params`` and bind them into the float64 reference of the schedule.

    Schedule-typed arguments may be callables or spec references
    (``{"schedule": "polynomial_decay", "params": {...}}``), which are bound recursively.

    Raises:
      ValueError: the spec is stateful (it has no closed form) or the arguments are invalid.
    """
    spec = get(spec) if isinstance(spec, str) else spec
    if spec.program is None:
        raise ValueError(f"schedule {spec.id!r} is stateful and has no closed-form expression")
    concrete = {
        name: bind(value["schedule"], value.get("params", {}), value.get("base_lr", 1.0))
        if is_schedule_ref(value)
        else value
        for name, value in params.items()
    }
    resolved = validate(spec, concrete, base_lr=base_lr)
    return spec.program.bind(resolved, base_lr=base_lr)
