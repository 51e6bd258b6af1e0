"""Bind a schedule spec to parameter values (the float64 reference of one schedule), and the framework-free parts
of transformers' schedule API that both frameworks share: ``SchedulerType``'s members, ``get_scheduler``'s rules
for the step counts and the improvement test of the metric-driven schedules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._registry import Spec, get, registry
from ._validation import validate
from .formula import Bound

__all__ = [
    "bind",
    "bind_validated",
    "is_schedule_ref",
    "metric_improved",
    "scheduler_arguments",
    "scheduler_type_members",
]


def is_schedule_ref(value: Any) -> bool:
    """True for the spec-case form of a schedule argument: ``{"schedule": id, "params": {...}}``."""
    return isinstance(value, Mapping) and set(value) <= {"schedule", "params", "base_lr"} and "schedule" in value


def _closed_form(spec: str | Spec) -> Spec:
    spec = get(spec) if isinstance(spec, str) else spec
    if spec.program is None:
        raise ValueError(f"schedule {spec.id!r} is stateful and has no closed-form expression")
    return spec


def bind(spec: str | Spec, params: Mapping[str, Any], base_lr: float | None = 1.0) -> Bound:
    """Validate ``params`` and bind them into the float64 reference of the schedule.

    Schedule-typed arguments may be callables or spec references
    (``{"schedule": "polynomial_decay", "params": {...}}``), which are bound recursively (a reference without
    ``base_lr`` is bound with ``base_lr=1.0``). ``base_lr=None`` skips the constraints that mention ``base_lr``
    and binds the formula with ``base_lr=1.0``.

    Raises:
      ValueError: the spec is stateful (it has no closed form) or the arguments are invalid.
    """
    spec = _closed_form(spec)
    concrete = {
        name: bind(value["schedule"], value.get("params", {}), value.get("base_lr", 1.0))
        if is_schedule_ref(value)
        else value
        for name, value in params.items()
    }
    return bind_validated(spec, validate(spec, concrete, base_lr=base_lr), base_lr)


def bind_validated(spec: str | Spec, validated: Mapping[str, Any], base_lr: float | None = 1.0) -> Bound:
    """Bind arguments that ``validate`` has already checked (canonical names; schedule arguments as callables).

    List-valued arguments (e.g. ``create_optimizer``'s ``include_in_weight_decay``) configure something else and
    never appear in a formula; they are bound as None. ``base_lr=None`` binds the formula with ``base_lr=1.0``.
    """
    spec = _closed_form(spec)
    scalars = {name: None if isinstance(value, (list, tuple)) else value for name, value in validated.items()}
    return spec.program.bind(scalars, base_lr=1.0 if base_lr is None else base_lr)  # type: ignore[union-attr]


def scheduler_type_members() -> dict[str, str]:
    """transformers' ``SchedulerType`` as ``{member name: spec id}``: every spec whose ``hf_name`` lists
    ``SchedulerType.<NAME>``."""
    members: dict[str, str] = {}
    for spec in registry().values():
        for name in spec.hf_name:
            if name.startswith("SchedulerType."):
                members[name.split(".", 1)[1]] = spec.id
    return members


_STEP_COUNTS = ("num_warmup_steps", "num_training_steps")


def scheduler_arguments(
    spec: Spec,
    member: str,
    num_warmup_steps: int | None,
    num_training_steps: int | None,
    scheduler_specific_kwargs: Mapping[str, Any] | None,
    *,
    factory_name: str | None = None,
) -> dict[str, Any]:
    """The keyword arguments ``get_scheduler`` passes to a schedule's factory (transformers' rules, from the spec).

    ``scheduler_specific_kwargs`` plus each step count the schedule takes (a schedule without the parameter does
    not get it).

    Args:
      member: the ``SchedulerType`` member name (for the message ``SchedulerType.COSINE requires ...``).
      factory_name: when given, a step count also present in ``scheduler_specific_kwargs`` is a TypeError naming
        this factory (as Python reports it for transformers); when None the explicit count wins.

    Raises:
      ValueError: the schedule requires a step count that is None.
      TypeError: a step count given twice (only with ``factory_name``).
    """
    kwargs = dict(scheduler_specific_kwargs or {})
    for count_name, value in zip(_STEP_COUNTS, (num_warmup_steps, num_training_steps)):
        param = spec.parameters.get(count_name)
        if param is None:
            continue
        if value is None and param.required:
            raise ValueError(f"SchedulerType.{member} requires `{count_name}`, please provide that argument.")
        if factory_name is not None and count_name in kwargs:
            raise TypeError(f"{factory_name}() got multiple values for argument '{count_name}'")
        kwargs[count_name] = value
    return kwargs


def metric_improved(mode: str, threshold_mode: str, threshold: float, metric: float, best: float) -> bool:
    """Whether ``metric`` improves on ``best`` by more than ``threshold`` (torch's ``ReduceLROnPlateau`` rule).

    With ``mode="min"`` lower is better: by more than ``threshold`` (``threshold_mode="abs"``) or by more than
    ``threshold`` times ``best`` (``"rel"``); with ``"max"`` higher is better. Python floats, in the order
    transformers' ``GreedyLR`` computes them. The host-side step of the framework packages' metric-driven schedules
    (the float64 reference in ``hf_optim_spec.reference`` keeps its own).
    """
    if mode == "min":
        if threshold_mode == "rel":
            return metric < best * (1.0 - threshold)
        return metric < best - threshold
    if threshold_mode == "rel":
        return metric > best * (1.0 + threshold)
    return metric > best + threshold
