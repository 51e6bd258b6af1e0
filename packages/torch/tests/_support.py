"""Helpers shared by the torch package tests: registry-driven case lists, tolerances, builders."""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Mapping
from typing import Any

import hf_optim_spec
import hf_optim_torch
import numpy as np
import pytest
import torch

TORCH_DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def specs(kind: str, *, stateful: bool | None = None, output: str | None = None) -> list[hf_optim_spec.Spec]:
    """Every spec of ``kind`` in the registry (never a hand list)."""
    out = []
    for spec in hf_optim_spec.registry().values():
        if spec.kind != kind:
            continue
        if stateful is not None and spec.stateful != stateful:
            continue
        if output is not None and spec.output != output:
            continue
        out.append(spec)
    return out


def case_params(specs_: list[hf_optim_spec.Spec], key: str = "cases") -> Iterator[Any]:
    """pytest params ``(spec, case)`` with ids ``spec_id::description``."""
    for spec in specs_:
        for case in getattr(spec, key):
            yield pytest.param(spec, case, id=f"{spec.id}::{case['description']}")


def api(spec: hf_optim_spec.Spec) -> Any:
    """The public torch object named by the spec's ``api``."""
    return getattr(hf_optim_torch, spec.api["torch"])


def materialize(value: Any) -> Any:
    """A case argument for a public API: spec refs ``{"schedule": id, "params": ...}`` become torch objects."""
    if isinstance(value, Mapping) and "schedule" in value and set(value) <= {"schedule", "params", "base_lr"}:
        spec = hf_optim_spec.get(value["schedule"])
        return api(spec)(**{k: materialize(v) for k, v in value.get("params", {}).items()})
    return value


def reference_schedule(spec: hf_optim_spec.Spec, params: Mapping[str, Any], base_lr: float | None) -> Any:
    """The float64 reference of a schedule (the spec formula evaluated by hf_optim_spec)."""
    resolved = {
        name: reference_schedule(hf_optim_spec.get(v["schedule"]), v.get("params", {}), v.get("base_lr"))
        if isinstance(v, Mapping) and "schedule" in v
        else v
        for name, v in params.items()
    }
    validated = hf_optim_spec.validate(spec, resolved, base_lr=base_lr)
    # list-valued arguments never appear in a formula (Program.bind takes scalars only)
    scalars = {k: None if isinstance(v, (list, tuple)) else v for k, v in validated.items()}
    assert spec.program is not None
    return spec.program.bind(scalars, base_lr=1.0 if base_lr is None else base_lr)


def assert_close(actual: Any, expected: Any, tol: hf_optim_spec.Tolerance, what: str = "") -> None:
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    bad = ~(np.abs(a - e) <= tol.atol + tol.rtol * np.abs(e))
    bad &= ~(np.isnan(a) & np.isnan(e))
    bad &= ~(np.isinf(a) & np.isinf(e) & (np.sign(a) == np.sign(e)))
    if bad.any():
        idx = np.argwhere(bad)[0]
        raise AssertionError(
            f"{what}: {bad.sum()} value(s) outside rtol={tol.rtol} atol={tol.atol}; first at {tuple(idx)}: "
            f"{a[tuple(idx)]!r} vs {e[tuple(idx)]!r}"
        )


def roundtrip(obj: Any) -> Any:
    """torch.save then torch.load(weights_only=True)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def raises_spec_error(error: Mapping[str, Any]) -> Any:
    """pytest.raises for a spec ``errors`` entry."""
    exc = {"ValueError": ValueError, "TypeError": TypeError, "NotImplementedError": NotImplementedError}[error["error"]]
    return pytest.raises(exc, match=error["match"])


def is_missing_argument_error(error: Mapping[str, Any]) -> bool:
    return error["match"].startswith("Missing required argument")


def missing_argument_name(error: Mapping[str, Any]) -> str:
    found = re.search(r"`([A-Za-z_0-9/]+)`", error["match"])
    assert found is not None
    return found.group(1)
