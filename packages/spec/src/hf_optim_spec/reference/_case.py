"""What the optimizer references share: hyperparameter defaults, case inputs, JSON in and out."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .._registry import DTYPES
from ._inputs import Array, from_json, make_inputs, to_json

__all__ = [
    "DTYPES",
    "StepRunner",
    "case_dtype",
    "case_inputs",
    "fill_case",
    "hyperparams",
    "params_to_json",
]

StepRunner = Callable[
    [Mapping[str, Any], Mapping[str, Any], dict[str, Array], list[dict[str, Array | None]]],
    dict[str, Any],
]
"""(spec, case, params0, grads) -> {"params": [...], "state": {...}} in JSON form."""


def hyperparams(spec: Mapping[str, Any], case: Mapping[str, Any]) -> dict[str, Any]:
    """The case's hyperparameters with the spec defaults filled in (pairs as tuples).

    Raises:
      ValueError: a hyperparameter the spec does not declare, or a required one that is missing.
    """
    declared: Mapping[str, Mapping[str, Any]] = spec["parameters"]
    given: Mapping[str, Any] = case.get("hyperparams", {})
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise ValueError(f"case {case.get('description')!r}: unknown hyperparameter(s) {unknown} for {spec['id']}")
    resolved: dict[str, Any] = {}
    for name, param in declared.items():
        if name in given:
            value = given[name]
        elif "default" in param:
            value = param["default"]
        else:
            raise ValueError(f"case {case.get('description')!r}: required hyperparameter `{name}` is missing")
        if param["type"] == "number_pair" and value is not None:
            value = (float(value[0]), float(value[1]))
        resolved[name] = value
    return resolved


def case_dtype(case: Mapping[str, Any]) -> str:
    """The dtype the case runs in (float32 when the case does not say)."""
    dtype = str(case.get("dtype", "float32"))
    if dtype not in DTYPES:
        raise ValueError(f"case {case.get('description')!r}: unknown dtype {dtype!r}")
    return dtype


def case_inputs(case: Mapping[str, Any]) -> tuple[dict[str, Array], list[dict[str, Array | None]]]:
    """params0 and grads of a case: the stored ones when present, else generated from its seed."""
    if "params0" in case and "grads" in case:
        params0 = {name: np.array(value, dtype=np.float64) for name, value in case["params0"].items()}
        grads = [{name: from_json(value) for name, value in row.items()} for row in case["grads"]]
        return params0, grads
    shapes = {name: [int(n) for n in shape] for name, shape in case["shapes"].items()}
    missing = {name: [int(i) for i in steps] for name, steps in case.get("missing_grads", {}).items()}
    unknown = sorted(set(missing) - set(shapes))
    if unknown:
        raise ValueError(f"case {case.get('description')!r}: missing_grads names unknown parameters {unknown}")
    return make_inputs(
        shapes,
        int(case["steps"]),
        int(case["seed"]),
        missing_grads=missing,
        zero_grads=[int(i) for i in case.get("zero_grads", [])],
    )


def params_to_json(params: Mapping[str, Array]) -> dict[str, Any]:
    """{name: nested list} of one parameter snapshot."""
    return {name: to_json(value) for name, value in params.items()}


_GENERATED = ("params0", "grads", "expected")


def fill_case(spec: Mapping[str, Any], case: Mapping[str, Any], run: StepRunner) -> dict[str, Any]:
    """A copy of ``case`` with params0, grads and expected regenerated, provenance kept or set.

    The inputs are always regenerated from seed/shapes/steps, so stale stored inputs cannot survive.
    Keys keep the order of the contract: the case's own keys, then the generated ones, then provenance.
    """
    bare = {key: value for key, value in case.items() if key not in (*_GENERATED, "provenance")}
    params0, grads = case_inputs(bare)
    expected = run(spec, bare, params0, grads)
    filled = dict(bare)
    filled["params0"] = params_to_json(params0)
    filled["grads"] = [{name: to_json(value) for name, value in row.items()} for row in grads]
    filled["expected"] = expected
    filled["provenance"] = case.get("provenance", "reference")
    return filled
