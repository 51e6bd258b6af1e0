"""What the crosscheck adapters share (no transformers, no framework imports here)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hf_optim_spec import is_schedule_ref

__all__ = ["Outcome", "Skip", "hf_kwargs", "schedule_ref_unsupported"]


class Skip(Exception):
    """The case has no transformers counterpart (the message says why)."""


@dataclass(frozen=True)
class Outcome:
    """What transformers computed for one case, in the layout of the case's ``expected`` field.

    ``dtype`` is the precision the values were computed in: it picks the spec tolerance.
    """

    actual: Any
    dtype: str


def hf_kwargs(spec: Any, given: Mapping[str, Any]) -> dict[str, Any]:
    """The case's arguments as transformers takes them.

    Extension parameters (not in transformers' signature) are dropped when they hold their default,
    which keeps transformers' behaviour; any other value has no counterpart and skips the case.
    """
    kwargs: dict[str, Any] = {}
    for name, value in given.items():
        param = spec.parameters.get(name)
        if param is not None and param.extension:
            if value != param.default:
                raise Skip(f"extension `{name}={value!r}` (not in transformers)")
            continue
        kwargs[name] = value
    return kwargs


def schedule_ref_unsupported(kwargs: Mapping[str, Any]) -> None:
    """Torch schedule factories take no schedule arguments."""
    for name, value in kwargs.items():
        if is_schedule_ref(value):
            raise Skip(f"`{name}` is a schedule; the torch factory takes none")
