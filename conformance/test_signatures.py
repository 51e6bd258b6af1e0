"""Public signatures: every spec parameter is an argument (framework spelling) with the spec default."""

from __future__ import annotations

import inspect
import math
from typing import Any

import hf_optim_spec as hs
import pytest


def _same(actual: Any, wanted: Any) -> bool:
    if isinstance(wanted, (list, tuple)):
        return (
            isinstance(actual, (list, tuple))
            and len(actual) == len(wanted)
            and all(_same(a, w) for a, w in zip(actual, wanted))
        )
    if isinstance(wanted, bool) or wanted is None or isinstance(wanted, str):
        return actual is wanted or (type(actual) is type(wanted) and actual == wanted)
    if isinstance(wanted, (int, float)) and isinstance(actual, (int, float)) and not isinstance(actual, bool):
        return actual == wanted or (math.isnan(actual) and math.isnan(wanted))
    return False


def test_signature_defaults(impl_spec: Any) -> None:
    impl, spec = impl_spec.impl, impl_spec.spec
    where = f"[{impl.name}::{spec.id}]"
    try:
        signature = inspect.signature(impl.api(spec))
    except (ImportError, AttributeError) as error:
        pytest.fail(f"{where} not exported: {error}")
    parameters = signature.parameters
    var_keyword = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
    problems = []
    for name, param in spec.parameters.items():
        alias = param.name_for(impl.name)
        names = alias if isinstance(alias, tuple) else (alias,)
        for position, spelled in enumerate(names):
            if spelled not in parameters:
                if not var_keyword:
                    problems.append(f"`{spelled}` (spec `{name}`) is not an argument")
                continue
            default = parameters[spelled].default
            if param.required:
                if default is not inspect.Parameter.empty:
                    problems.append(f"`{spelled}` is required in the spec but defaults to {default!r}")
                continue
            wanted = param.default[position] if isinstance(alias, tuple) else param.default
            if default is inspect.Parameter.empty:
                problems.append(f"`{spelled}` has no default; the spec default is {wanted!r}")
            elif not _same(default, wanted):
                problems.append(f"`{spelled}` defaults to {default!r}; the spec default is {wanted!r}")
    assert not problems, f"{where} {impl.module}.{spec.api.get(impl.name)}{signature}: " + "; ".join(problems)


def test_spec_has_cases(any_spec: hs.Spec) -> None:
    """A spec without cases would be exported yet never checked numerically."""
    assert any_spec.cases, f"[{any_spec.id}] has no cases"
