"""A framework constructor's arguments checked against its spec, in one call shared by the torch and Keras shells.

An optimizer's ``__init__`` hands over its ``locals()`` (taken before it binds anything else) and its extra keyword
arguments; :func:`validate_arguments` keeps the names the spec declares for that framework, in signature order,
appends the extras (an unknown one is the spec's TypeError) and runs :func:`hf_optim_spec.validate` once. So the
list of checked arguments is the spec's, not a copy of it in each shell, and the messages are the same in both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._registry import Spec, get
from ._validation import validate

__all__ = ["spec_arguments", "validate_arguments"]


def _spellings(spec: Spec, framework: str | None) -> frozenset[str]:
    """Every argument name ``framework``'s users pass for ``spec`` (a split pair gives two)."""
    names: set[str] = set()
    for parameter in spec.parameters.values():
        alias = parameter.name_for(framework)
        names.update(alias if isinstance(alias, tuple) else (alias,))
    return frozenset(names)


def spec_arguments(spec_id: str | Spec, framework: str | None, namespace: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``namespace`` (a constructor's ``locals()``) whose names are spec parameters, in its order.

    Args:
      spec_id: a spec id (or the Spec itself).
      framework: ``"torch"``, ``"tf"`` or None (canonical spelling).
      namespace: names and values; names that are not spec parameters (``self``, ``name``, framework-only flags)
        are left out.
    """
    spec = spec_id if not isinstance(spec_id, str) else get(spec_id)
    accepted = _spellings(spec, framework)
    return {name: value for name, value in namespace.items() if name in accepted}


def validate_arguments(
    spec_id: str | Spec,
    namespace: Mapping[str, Any],
    *,
    framework: str | None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """:func:`hf_optim_spec.validate` of :func:`spec_arguments` followed by ``extra`` (a constructor's ``**kwargs``).

    Returns:
      ``{canonical name: value}`` for every parameter, defaults filled in (as ``validate``).

    Raises:
      TypeError, ValueError: the spec's uniform errors (an unknown name in ``extra`` is a TypeError).
    """
    return validate(spec_id, {**spec_arguments(spec_id, framework, namespace), **(extra or {})}, framework=framework)
