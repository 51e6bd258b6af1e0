"""Construction-time argument checks of the torch shells: spec validation and the torch-only flags."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import hf_optim_spec
import numpy as np
import torch

from ._path_choice import use_fused

__all__ = [
    "check_flags",
    "check_optimizer",
    "constructor_arguments",
    "plain_number",
    "spec_validate",
    "validate_arguments",
]

#: the torch-only flags of the optimizer shells (not spec parameters)
TORCH_FLAGS = ("maximize", "foreach", "fused")
#: names a constructor's ``locals()`` holds that are neither spec parameters nor flags
_NOT_ARGUMENTS = frozenset({"self", "params", "kwargs", "__class__"})


def plain_number(value: object) -> object:
    """Return a one-element tensor as a Python number (construction-time validation only)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    return value


def spec_validate(spec_id: str, params: Mapping[str, object]) -> dict[str, Any]:
    """Validate constructor arguments against the spec, spelled as a torch user spells them.

    Tensor hyperparameters (e.g. a tensor ``lr``) are validated through their value; the caller keeps the tensor.
    """
    plain = {name: plain_number(value) for name, value in params.items()}
    return dict(hf_optim_spec.validate(spec_id, plain, framework="torch"))


def check_flags(**flags: object) -> None:
    """Reject torch-only flags of the wrong type at construction, in the spec's message format.

    ``maximize`` is a bool; ``foreach`` and ``fused`` are a bool or None. Any other value (``"no"``, ``0``, NaN)
    would otherwise be taken for its truthiness, or fail deep inside a kernel at the first step.
    """
    for name, value in flags.items():
        nullable = name in ("foreach", "fused")
        if isinstance(value, (bool, np.bool_)) or (nullable and value is None):
            continue
        wanted = "a bool or None" if nullable else "a bool"
        raise TypeError(
            f"Argument `{name}` must be {wanted}. Received: {name}={value!r} (of type {type(value).__name__})"
        )


def validate_arguments(spec_id: str, values: Mapping[str, object], flags: Mapping[str, object]) -> dict[str, Any]:
    """The one check of an optimizer's arguments: the spec parameters ``values``, then the torch ``flags``.

    Returns the validated spec parameters. Raises the spec's errors, a TypeError for a flag of the wrong type,
    and a ValueError for ``foreach=True`` with ``fused=True``.
    """
    validated = spec_validate(spec_id, values)
    check_flags(**flags)
    use_fused(flags.get("fused"), flags.get("foreach"))  # type: ignore[arg-type]
    return validated


def constructor_arguments(arguments: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(values, flags)`` for :func:`validate_arguments` from a constructor's ``locals()`` (taken first thing).

    ``values`` holds the extra keyword arguments (``kwargs``, which the spec rejects by name) and then every named
    argument in signature order; ``flags`` the torch-only flags among them.
    """
    values = dict(arguments.get("kwargs", {}))
    flags = {}
    for name, value in arguments.items():
        if name in TORCH_FLAGS:
            flags[name] = value
        elif name not in _NOT_ARGUMENTS:
            values[name] = value
    return values, flags


def check_optimizer(optimizer: object) -> None:
    """A schedule factory's ``optimizer`` must be a ``torch.optim.Optimizer`` (TypeError otherwise)."""
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            "Argument `optimizer` must be a torch.optim.Optimizer. "
            f"Received: optimizer={optimizer!r} (of type {type(optimizer).__name__})"
        )
