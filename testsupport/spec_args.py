"""Spec data as a framework user passes it: argument spellings, case learning rates, the public object a spec names.

Nothing here knows a spec id: names come from ``Parameter.name_for(framework)`` and ``spec.api[framework]``,
and the conventions a factory follows are read from its signature.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Mapping
from typing import Any

import hf_optim_spec as hs

__all__ = [
    "MODULES",
    "MissingApi",
    "api",
    "case_base_lr",
    "group_lrs",
    "has_api",
    "resolve_api",
    "signature",
    "spelled",
    "spellings",
    "takes",
    "takes_kwargs",
]

MODULES = {"torch": "hf_optim_torch", "tf": "hf_optim_tf"}
"""The package each framework's public names live in."""


def case_base_lr(case: Mapping[str, Any]) -> float:
    return float(case.get("base_lr", 1.0))


def group_lrs(case: Mapping[str, Any]) -> list[float]:
    """The lr of every param group: the optimizer default (``base_lr``) first, then ``group_lrs``."""
    return [case_base_lr(case), *(float(x) for x in case.get("group_lrs", ()))]


def spelled(
    spec: hs.Spec,
    params: Mapping[str, Any],
    framework: str,
    build_schedule: Callable[[Mapping[str, Any]], Any],
    *,
    pairs_as_tuples: bool = False,
) -> dict[str, Any]:
    """Canonical-name arguments of a case, spelled as a ``framework`` user passes them.

    A schedule reference is replaced by ``build_schedule(ref)``. A pair split into two framework arguments
    (``betas`` -> ``beta_1``, ``beta_2``) is split; a value that is not a pair (an error case) goes to the first
    of the two names. Names the spec does not declare (error cases for unknown arguments) pass through.
    Sequences of an unsplit argument: by default every tuple becomes a list (what a user writes); with
    ``pairs_as_tuples`` a list given for a ``number_pair`` parameter becomes a tuple (how torch stores betas, so
    that state dicts round-trip unchanged) and anything else is passed as given.
    """
    out: dict[str, Any] = {}
    for name, given in params.items():
        value = build_schedule(given) if hs.is_schedule_ref(given) else given
        param = spec.parameters.get(name)
        alias = param.name_for(framework) if param is not None else name
        if isinstance(alias, tuple):
            if isinstance(value, (list, tuple)) and len(value) == 2:
                out[alias[0]], out[alias[1]] = value
            else:
                out[alias[0]] = value
        elif not pairs_as_tuples:
            out[alias] = list(value) if isinstance(value, tuple) else value
        elif isinstance(value, list) and param is not None and param.type == "number_pair":
            out[alias] = tuple(value)
        else:
            out[alias] = value
    return out


def spellings(spec: hs.Spec, framework: str) -> set[str]:
    """Every argument name the spec's parameters have in ``framework`` (both halves of a split pair)."""
    names: set[str] = set()
    for param in spec.parameters.values():
        alias = param.name_for(framework)
        names.update(alias if isinstance(alias, tuple) else (alias,))
    return names


def signature(factory: Any) -> Mapping[str, inspect.Parameter]:
    return inspect.signature(factory).parameters


def takes_kwargs(sig: Mapping[str, inspect.Parameter]) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.values())


def takes(factory: Callable[..., Any], argument: str, spec: hs.Spec, framework: str) -> bool:
    """True when ``factory`` has ``argument`` and it is not one of the spec's own parameters."""
    if argument in spellings(spec, framework):
        return False
    try:
        return argument in signature(factory)
    except (TypeError, ValueError):
        return False


def resolve_api(framework: str, spec: hs.Spec) -> Any:
    """The public object ``spec.api[framework]`` of the framework package (dotted names allowed)."""
    if framework not in spec.api:
        raise LookupError(f"spec {spec.id!r} has no api name for {framework!r} (api: {dict(spec.api)})")
    obj: Any = importlib.import_module(MODULES[framework])
    for part in spec.api[framework].split("."):
        obj = getattr(obj, part)
    return obj


class MissingApi(LookupError):
    """The spec names a public object the package does not export."""


def api(framework: str, spec: hs.Spec) -> Any:
    """``spec.api[framework]``, a top-level name of the package (MissingApi when it is not exported)."""
    module = importlib.import_module(MODULES[framework])
    name = spec.api.get(framework, "")
    if not hasattr(module, name):
        raise MissingApi(f"spec {spec.id!r} names {module.__name__}.{name or '<nothing>'}, which is not exported")
    return getattr(module, name)


def has_api(framework: str, spec: hs.Spec) -> bool:
    try:
        api(framework, spec)
    except MissingApi:
        return False
    return True
