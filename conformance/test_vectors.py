"""Every spec case in every framework against the spec's float64 expected values.

Schedules: the float32 lr of every param group at every case step (or after every metric, for a
stateful schedule) within ``spec.tol("float32")``. Optimizers: the parameters after every step and
the final state within ``spec.tol(case dtype)``. Accumulators: step count, sums and errors after
every op.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import hf_optim_spec as hs
import numpy as np
import pytest
from hf_optim_spec.reference import _case as ref_case

from testsupport.compare import ulp_distance, within
from testsupport.results import Trajectory
from testsupport.spec_args import group_lrs

from ._expected import expected_lr_curve
from ._impls import cached_lr_curve, cached_reference, cached_trajectory, missing_dtype
from ._report import RECORDER
from ._repro import repro


def _fail(message: str, note: str) -> None:
    error = AssertionError(message)
    error.add_note(note)
    raise error


def _noted(error: BaseException, note: str) -> BaseException:
    error.add_note(note)
    return error


def test_schedule_case(schedule_case: Any) -> None:
    impl, spec, case, index = schedule_case.impl, schedule_case.spec, schedule_case.case, schedule_case.index
    call = f"_impls.IMPLS[{impl.name!r}].lr_curve(spec, case).lrs"
    note = repro(impl.name, spec, index, call)
    try:
        curve = cached_lr_curve(impl.name, spec.id, index)
    except Exception as error:
        RECORDER.vector(spec, impl.name, "float32", False)
        raise _noted(error, f"[{impl.name}::{spec.id}::{case.get('description')}] building/evaluating failed\n{note}")
    # every param group: factor schedules scale each group's lr; a stateful schedule steps all of them
    wanted_groups = len(group_lrs(case)) if impl.param_groups and (spec.output != "lr" or spec.stateful) else 1
    lrs = curve.lrs
    if lrs.shape[0] < wanted_groups:
        RECORDER.vector(spec, impl.name, "float32", False)
        _fail(
            f"[{impl.name}::{spec.id}::{case.get('description')}] {lrs.shape[0]} param group lr(s), want {wanted_groups}",
            note,
        )
    lrs = lrs[:wanted_groups]
    expected = expected_lr_curve(spec, case, wanted_groups)
    tol = spec.tol("float32")
    ok, max_abs, max_rel = within(lrs, expected, tol)
    ulps = ulp_distance(lrs, expected.astype(np.float32))
    RECORDER.vector(
        spec, impl.name, "float32", bool(ok.all()), max_abs=max_abs, max_rel=max_rel, max_ulp=int(ulps.max())
    )
    if not ok.all():
        group, point = (int(i) for i in np.argwhere(~ok)[0])
        label = "metric #" if spec.stateful else "step "
        _fail(
            f"[{impl.name}::{spec.id}::{case.get('description')}] {label}{curve.points[point]} (group {group}): "
            f"lr {float(lrs[group, point])!r} != expected {float(expected[group, point])!r} "
            f"(rtol={tol.rtol}, atol={tol.atol}); {int((~ok).sum())} of {ok.size} values off, max abs error {max_abs:.3g}",
            note,
        )


@dataclass
class Comparison:
    """Worst errors over everything compared, and the first value out of tolerance (None: all within)."""

    max_abs: float = 0.0
    max_rel: float = 0.0
    failure: str | None = None

    def add(self, where: str, actual: Any, expected: Any, tol: Any) -> None:
        try:
            ok, max_abs, max_rel = within(actual, expected, tol)
        except AssertionError as error:  # shape mismatch
            self.max_abs = self.max_rel = math.inf
            self.failure = self.failure or f"{where}: {error}"
            return
        self.max_abs, self.max_rel = max(self.max_abs, max_abs), max(self.max_rel, max_rel)
        if self.failure is None and not ok.all():
            position = tuple(int(i) for i in np.argwhere(~np.atleast_1d(ok))[0])
            a = np.atleast_1d(np.asarray(actual, dtype=np.float64))[position]
            e = np.atleast_1d(np.asarray(expected, dtype=np.float64))[position]
            self.failure = (
                f"{where}[{', '.join(map(str, position))}]: {float(a)!r} != expected {float(e)!r} "
                f"(rtol={tol.rtol}, atol={tol.atol}; {int((~ok).sum())} of {ok.size} values off)"
            )

    def missing(self, message: str) -> None:
        self.failure = self.failure or message

    def check(self, note: str) -> None:
        if self.failure is not None:
            _fail(f"{self.failure}; max abs error over the whole run {self.max_abs:.3g}", note)


def compare_trajectories(where: str, actual: Trajectory, expected: Trajectory, tol: Any) -> Comparison:
    """Params after every step, then the final state; the failure names the first step out of tolerance."""
    result = Comparison()
    if len(actual.params) != len(expected.params):
        result.missing(f"{where}: {len(actual.params)} steps recorded, want {len(expected.params)}")
    for step, (got, want) in enumerate(zip(actual.params, expected.params)):
        for name in want:
            result.add(f"{where} step {step}: param `{name}`", got[name], want[name], tol)
    for name, entries in expected.state.items():
        got_state = actual.state.get(name, {})
        for key, want in entries.items():
            if key not in got_state:
                result.missing(f"{where} final state of `{name}`: no `{key}` (has {sorted(got_state)})")
                continue
            result.add(f"{where} final state: `{name}`.{key}", got_state[key], want, tol)
    return result


def test_optimizer_case(optimizer_case: Any) -> None:
    impl, spec, case, index = optimizer_case.impl, optimizer_case.spec, optimizer_case.case, optimizer_case.index
    dtype = ref_case.case_dtype(case)
    where = f"[{impl.name}::{spec.id}::{case.get('description')}] ({dtype})"
    note = repro(impl.name, spec, index, f"_impls.IMPLS[{impl.name!r}].run_optimizer(spec, case, {dtype!r}).params[-1]")
    if (reason := missing_dtype(impl.name, dtype)) is not None:
        pytest.skip(reason)
    try:
        actual = cached_trajectory(impl.name, spec.id, index, dtype)
    except Exception as error:
        RECORDER.vector(spec, impl.name, dtype, False)
        raise _noted(error, f"{where} running the case failed\n{note}")
    result = compare_trajectories(where, actual, cached_reference(spec.id, index), spec.tol(dtype))
    RECORDER.vector(spec, impl.name, dtype, result.failure is None, max_abs=result.max_abs, max_rel=result.max_rel)
    result.check(note)


def test_accumulator_case(accumulator_case: Any) -> None:
    from hf_optim_spec import reference

    impl, spec, case, index = (
        accumulator_case.impl,
        accumulator_case.spec,
        accumulator_case.case,
        accumulator_case.index,
    )
    dtype = ref_case.case_dtype(case)
    where = f"[{impl.name}::{spec.id}::{case.get('description')}] ({dtype})"
    note = repro(impl.name, spec, index, f"_impls.IMPLS[{impl.name!r}].run_accumulator(spec, case)")
    if (reason := missing_dtype(impl.name, dtype)) is not None:
        pytest.skip(reason)
    expected = list(case.get("expected") or reference.run_case(hs.thaw(spec.raw), hs.thaw(case)))
    ok = False
    result = Comparison()
    try:
        actual = impl.run_accumulator(spec, case)
        if len(actual) != len(expected):
            _fail(f"{where}: {len(actual)} op results, want {len(expected)}", note)
        tol = spec.tol(dtype)
        for op, (got, want) in enumerate(zip(actual, expected)):
            at = f"{where} op {op} ({case['ops'][op]['op']})"
            if "error" in want:
                if got.get("error") != want["error"] or not re.search(want["match"], got.get("message", "")):
                    _fail(f"{at}: want {want['error']} matching {want['match']!r}, got {got}", note)
                continue
            if "error" in got:
                _fail(f"{at}: unexpected {got['error']}: {got['message']}", note)
            if got["step"] != want["step"]:
                _fail(f"{at}: step {got['step']} != expected {want['step']}", note)
            if (got["gradients"] is None) != (want["gradients"] is None):
                _fail(f"{at}: gradients {got['gradients']!r} vs expected {want['gradients']!r}", note)
            for slot, (g, w) in enumerate(zip(got["gradients"] or [], want["gradients"] or [])):
                if (g is None) != (w is None):
                    _fail(f"{at}: gradient slot {slot} is {g!r}, want {w!r}", note)
                if g is not None:
                    result.add(f"{at}: gradients[{slot}]", g, np.asarray(w, dtype=np.float64), tol)
        result.check(note)
        ok = True
    finally:
        RECORDER.vector(spec, impl.name, dtype, ok, max_abs=result.max_abs, max_rel=result.max_rel)
