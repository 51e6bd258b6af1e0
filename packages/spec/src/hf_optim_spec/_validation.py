"""Turn spec parameter declarations into the uniform errors both frameworks raise.

Per-parameter rules produce Keras-style messages::

    Argument `num_cycles` must be > 0. Received: num_cycles=-1

Cross-parameter rules (spec ``constraints``) carry their own message, which is transformers'
verbatim text wherever transformers raises. A rule whose "error" is ``UserWarning`` accepts the input
and warns its message, where transformers warns.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import numbers
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any

from ._registry import Parameter, Spec, get
from .formula import evaluate_constant

__all__ = ["check_parameter", "validate"]

_ERRORS: Mapping[str, type[Exception]] = {
    "ValueError": ValueError,
    "TypeError": TypeError,
    "NotImplementedError": NotImplementedError,
}

_TYPE_WORDS = {
    "integer": "an integer",
    "number": "a number",
    "boolean": "a boolean",
    "string": "a string",
    "number_pair": "a pair of numbers",
    "number_or_list": "a number or a list of numbers (one per param group)",
    "string_list": "a list of strings",
    "schedule": "a schedule (a callable of the step)",
}


def _received(label: str, value: Any, with_type: bool = False) -> str:
    shown = f"{label}={value!r}"
    return f"{shown} (of type {type(value).__name__})" if with_type else shown


def _is_real(value: Any) -> bool:
    if isinstance(value, (bool, str, bytes)) or value is None:
        return False
    if isinstance(value, numbers.Real):
        return True
    # NumPy scalars and other non-container numbers (a torch tensor lr is unwrapped by the torch shell first).
    return hasattr(value, "__float__") and getattr(value, "ndim", 0) == 0 and not hasattr(value, "__len__")


def _is_integer(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Integral):
        return True
    return isinstance(value, float) and value.is_integer()


def _check_range(param: Parameter, label: str, value: float, shown: str) -> None:
    if math.isnan(value):
        raise ValueError(f"Argument `{label}` must not be NaN. Received: {shown}")
    if math.isinf(value) and not param.allow_inf:
        raise ValueError(f"Argument `{label}` must be finite. Received: {shown}")
    rules: tuple[tuple[float | None, Callable[[float], bool], str], ...] = (
        (param.minimum, lambda b: value >= b, ">="),
        (param.exclusive_minimum, lambda b: value > b, ">"),
        (param.maximum, lambda b: value <= b, "<="),
        (param.exclusive_maximum, lambda b: value < b, "<"),
    )
    for bound, ok, symbol in rules:
        if bound is not None and not ok(bound):
            raise ValueError(f"Argument `{label}` must be {symbol} {_fmt(bound)}. Received: {shown}")


def _fmt(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() else repr(bound)


def _is_pair(value: Any) -> bool:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        return False
    return all(_is_real(item) for item in value)


def _is_number_list(value: Any) -> bool:
    # a list or tuple (what transformers' per-group bounds accept), never a mapping, set or string
    return isinstance(value, (list, tuple)) and all(_is_real(item) for item in value)


def _is_number_or_list(value: Any) -> bool:
    return _is_real(value) or _is_number_list(value)


def _is_string_list(value: Any) -> bool:
    # a sequence (list, tuple): a mapping or a set would pass as its keys, and a string as its characters
    if isinstance(value, (str, bytes, Mapping, set, frozenset)) or not hasattr(value, "__iter__"):
        return False
    return all(isinstance(item, str) for item in value)


_IS_TYPE: Mapping[str, Callable[[Any], bool]] = {
    "integer": lambda v: _is_real(v) and _is_integer(v),
    "number": _is_real,
    "boolean": lambda v: isinstance(v, bool) or type(v).__name__ == "bool_",
    "string": lambda v: isinstance(v, str),
    "number_pair": _is_pair,
    "number_or_list": _is_number_or_list,
    "string_list": _is_string_list,
    "schedule": callable,
}


def _types(param: Parameter) -> tuple[str, ...]:
    return param.type if isinstance(param.type, tuple) else (param.type,)


def check_parameter(param: Parameter, value: Any, label: str | None = None) -> None:
    """Raise the uniform TypeError/ValueError when ``value`` breaks ``param``'s declaration.

    A parameter may accept several types (``"type": ["number", "schedule"]``); the first one the
    value has decides which range rules apply.
    """
    label = label or param.name
    types = _types(param)
    if value is None and param.nullable:
        return
    kind = next((t for t in types if value is not None and _IS_TYPE[t](value)), None)
    if kind is None:
        wanted = " or ".join(_TYPE_WORDS[t] for t in types)
        raise TypeError(f"Argument `{label}` must be {wanted}. Received: {_received(label, value, True)}")
    if kind in ("integer", "number") or (kind == "number_or_list" and _is_real(value)):
        _check_range(param, label, float(value), _received(label, value))
    elif kind in ("number_pair", "number_or_list"):
        for index, item in enumerate(value):
            _check_range(param, f"{label}[{index}]", float(item), _received(label, value))
    if param.enum is not None and value not in param.enum:
        allowed = ", ".join(repr(v) for v in param.enum)
        raise ValueError(f"Argument `{label}` must be one of {allowed}. Received: {_received(label, value)}")


def _spelling(spec: Spec, framework: str | None) -> dict[str, tuple[str, int | None]]:
    """Map each spelling accepted from ``framework`` to (canonical name, index within a split pair)."""
    spelling: dict[str, tuple[str, int | None]] = {}
    for name, param in spec.parameters.items():
        alias = param.name_for(framework)
        if isinstance(alias, tuple):
            for index, part in enumerate(alias):
                spelling[part] = (name, index)
        else:
            spelling[alias] = (name, None)
    return spelling


def validate(
    spec_id: str | Spec,
    params: Mapping[str, Any],
    *,
    framework: str | None = None,
    base_lr: float | None = None,
    param_groups: int | None = None,
) -> dict[str, Any]:
    """Check arguments against a spec and return them complete, under canonical names.

    Args:
      spec_id: a spec id (or the Spec itself).
      params: the arguments as the user of ``framework`` spelled them.
      framework: ``"torch"``, ``"tf"`` or None (canonical spelling).
      base_lr: the optimizer's default learning rate, for constraints that mention ``base_lr``
        (they are skipped when it is None).
      param_groups: the number of param groups the schedule drives (1 for a Keras schedule): a list given for a
        ``number_or_list`` parameter (a per-group bound) must have that many entries (not checked when None).

    Returns:
      ``{canonical name: value}`` for every parameter, defaults filled in. Split pairs (Keras
      ``beta_1``/``beta_2``) are joined into the canonical tuple.

    Raises:
      TypeError: an unknown or missing argument, or a value of the wrong type.
      ValueError: a value out of range, a per-group list of another length (transformers' message
        ``expected 2 min_lrs, got 3``), or a broken cross-parameter constraint.
    """
    spec = spec_id if not isinstance(spec_id, str) else get(spec_id)
    spelling = _spelling(spec, framework)
    unknown = [key for key in params if key not in spelling]
    if unknown:
        key = unknown[0]
        renamed = spec.parameters[key].name_for(framework) if key in spec.parameters else None
        close = [renamed] if isinstance(renamed, str) else list(renamed or ())
        close = close or difflib.get_close_matches(key, list(spelling), n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise TypeError(
            f"Unknown argument `{key}` for {spec.display_name}.{hint} "
            + (f"Valid arguments: {', '.join(spelling)}." if spelling else "It takes no arguments.")
        )
    pairs: dict[str, list[Any]] = {}
    resolved: dict[str, Any] = {}
    for key, value in params.items():
        name, index = spelling[key]
        param = spec.parameters[name]
        if index is None:
            check_parameter(param, value, key)
            resolved[name] = value
        else:
            single = dataclasses.replace(param, type="number", name=key, framework_names={})
            check_parameter(single, value, key)
            default = param.default if not param.required else (None, None)
            pairs.setdefault(name, list(default))[index] = value
    for name, parts in pairs.items():
        resolved[name] = tuple(parts)
    for name, param in spec.parameters.items():
        if name in resolved:
            continue
        if param.required:
            alias = param.name_for(framework)
            label = alias if isinstance(alias, str) else "/".join(alias)
            raise TypeError(f"Missing required argument `{label}` for {spec.display_name}.")
        default = param.default
        resolved[name] = tuple(default) if isinstance(default, list) and param.type == "number_pair" else default
    if param_groups is not None:
        for name, value in resolved.items():
            if "number_or_list" in _types(spec.parameters[name]) and _is_number_list(value):
                if len(value) != param_groups:
                    raise ValueError(f"expected {param_groups} {name}s, got {len(value)}")
    _check_constraints(spec, resolved, base_lr)
    return resolved


def _check_constraints(spec: Spec, resolved: Mapping[str, Any], base_lr: float | None) -> None:
    env: dict[str, Any] = {}
    for name, value in resolved.items():
        if value is None or isinstance(value, (str, bool)):
            env[name] = value
        elif _is_real(value):
            env[name] = float(value)
    for name, value in resolved.items():  # pairs as name_0/name_1 for constraints
        if "number_pair" in _types(spec.parameters[name]) and _is_pair(value):
            env[f"{name}_0"], env[f"{name}_1"] = float(value[0]), float(value[1])
    if base_lr is not None:
        env["base_lr"] = float(base_lr)
    for constraint in spec.constraints:
        if "base_lr" in constraint.when_text and base_lr is None:
            continue
        if evaluate_constant(constraint.when, env):
            fields = {**dict(resolved), "base_lr": base_lr}
            fields.update({k: v for k, v in env.items() if k.endswith(("_0", "_1"))})
            message = constraint.message.format_map(_Fields(fields))
            if constraint.error == "UserWarning":  # accepted, as transformers accepts it, with its warning
                warnings.warn(message, UserWarning, stacklevel=_caller_level())
                continue
            raise _ERRORS[constraint.error](message)


_OWN_PACKAGES = frozenset({"hf_optim_spec", "hf_optim_torch", "hf_optim_tf"})


def _caller_level() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside the hf-optim packages."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and frame.f_globals.get("__name__", "").partition(".")[0] in _OWN_PACKAGES:
        frame, level = frame.f_back, level + 1
    return level


class _Fields(dict):  # type: ignore[type-arg]
    """format_map that leaves unknown placeholders visible instead of failing."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"
