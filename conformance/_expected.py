"""What a conformance case expects: the stored ``expected`` values of a spec case, or the float64 reference."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import hf_optim_spec as hs
import numpy as np
from hf_optim_spec import _schedules

from testsupport.results import Trajectory
from testsupport.spec_args import case_base_lr, group_lrs

__all__ = ["expected_lr_curve", "reference_trajectory", "reference_values"]


def expected_lr_curve(spec: hs.Spec, case: Mapping[str, Any], groups: int) -> np.ndarray:
    """float64 expected lr per group and point, from the case's ``expected`` (the reference if empty).

    ``output == "factor"``: lr = group lr x factor; ``"lr"``: the value itself (one group).
    Stateful cases: the stored lrs are those of the default group; the other groups come from the reference run
    of all the case's groups together (a stateful schedule may couple them).
    """
    points = case["metrics"] if spec.stateful else case["steps"]
    stored = list(case.get("expected", ()))
    if len(stored) != len(points):
        stored = reference_values(spec, case)
    lrs = group_lrs(case)[:groups]
    if spec.stateful:
        from hf_optim_spec.reference import run_stateful

        rows = [np.asarray(stored, dtype=np.float64)]
        if len(lrs) > 1:
            params = hs.validate(spec, case.get("params", {}), base_lr=lrs[0])
            joint = run_stateful(spec.id, params, group_lrs(case), case["metrics"])
            rows += [np.asarray(row, dtype=np.float64) for row in joint[1 : len(lrs)]]
        return np.stack(rows)
    values = np.asarray(stored, dtype=np.float64)
    if spec.output == "factor":
        return np.stack([lr * values for lr in lrs])
    return values[np.newaxis, :]


def reference_values(spec: hs.Spec, case: Mapping[str, Any]) -> list[float]:
    """The float64 reference of a schedule case (factor or lr per step; lr per metric if stateful)."""
    base_lr = case_base_lr(case)
    if spec.stateful:
        from hf_optim_spec.reference import run_stateful

        params = hs.validate(spec, case.get("params", {}), base_lr=base_lr)
        return run_stateful(spec.id, params, group_lrs(case), case["metrics"])[0]
    bound = _schedules.bind(spec, case.get("params", {}), base_lr=base_lr)
    return [bound(step) for step in case["steps"]]


def reference_trajectory(spec: hs.Spec, case: Mapping[str, Any]) -> Trajectory:
    """The expected trajectory of an optimizer case: stored ``expected`` when present, else the reference."""
    from hf_optim_spec import reference

    expected = case.get("expected")
    if not expected or "params" not in expected:
        options = {}
        if any(hs.is_schedule_ref(v) for v in case.get("hyperparams", {}).values()):
            options["resolve_schedule"] = _reference_schedule
        expected = reference.run_case(hs.thaw(spec.raw), hs.thaw(case), **options)
    params = [{name: np.asarray(v, dtype=np.float64) for name, v in row.items()} for row in expected["params"]]
    state = {
        name: {key: np.asarray(v, dtype=np.float64) for key, v in entries.items()}
        for name, entries in expected["state"].items()
    }
    return Trajectory(params=params, state=state)


def _reference_schedule(ref: Mapping[str, Any]) -> Callable[[int], float]:
    spec = hs.get(ref["schedule"])
    bound = _schedules.bind(spec, ref.get("params", {}), base_lr=float(ref.get("base_lr", 1.0)))
    base = float(ref.get("base_lr", 1.0))
    if spec.output == "factor":
        return lambda step: base * bound(step)
    return bound
