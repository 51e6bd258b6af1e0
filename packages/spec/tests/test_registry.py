"""The registry of spec files, the schedule references against their stored vectors, and spec errors."""

from __future__ import annotations

import dataclasses
import json
import re

import hf_optim_spec as hs
import pytest
from hf_optim_spec import is_schedule_ref
from hf_optim_spec._schedules import bind
from hf_optim_spec._vectors import dumps, schedule_case_expected

SPECS = hs.registry()
SCHEDULE_CASES = [
    pytest.param(spec, case, id=f"{spec.id}::{case['description']}")
    for spec in SPECS.values()
    if spec.kind == "schedule"
    for case in spec.cases
]
ERROR_CASES = [
    pytest.param(spec, case, id=f"{spec.id}::{case['description']}")
    for spec in SPECS.values()
    for case in spec.errors
    if case.get("raised_by", "validation") == "validation"  # step-time errors are checked by conformance
]


def test_the_registry_holds_every_kind():
    kinds = {spec.kind for spec in SPECS.values()}
    assert kinds == {"schedule", "optimizer", "accumulator"}
    for spec in SPECS.values():
        assert spec.path.stem == spec.id
        assert (
            spec.path.parent.name
            == {"schedule": "schedules", "optimizer": "optimizers", "accumulator": "accumulators"}[spec.kind]
        )


def test_the_registry_is_read_only():
    with pytest.raises(TypeError):
        SPECS["x"] = None  # type: ignore[index]
    spec = next(iter(SPECS.values()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.id = "other"  # type: ignore[misc]
    with pytest.raises(TypeError):
        spec.parameters["x"] = None  # type: ignore[index]


def test_unknown_ids_name_the_closest_ones():
    some_id = next(iter(SPECS))
    with pytest.raises(KeyError, match=re.escape(f"Did you mean: {some_id}")):
        hs.get(some_id + "x")


def test_every_closed_form_schedule_has_a_program_and_stateful_ones_do_not():
    for spec in SPECS.values():
        if spec.kind == "schedule":
            assert (spec.program is None) == spec.stateful, spec.id
            assert spec.output in ("factor", "lr"), spec.id


def test_every_spec_declares_all_tolerances():
    for spec in SPECS.values():
        for dtype in ("float64", "float32", "bfloat16", "float16"):
            tol = spec.tol(dtype)
            assert tol.rtol >= 0 and tol.atol >= 0


@pytest.mark.parametrize(("spec", "case"), SCHEDULE_CASES)
def test_schedule_vectors_equal_the_float64_reference_bit_for_bit(spec, case):
    if "warns" in case:  # a UserWarning rule of the spec: binding these arguments must warn it
        with pytest.warns(UserWarning, match=case["warns"]):
            expected = schedule_case_expected(spec.id, case)
    else:
        expected = schedule_case_expected(spec.id, case)
    assert expected == list(case["expected"])


@pytest.mark.parametrize(("spec", "case"), ERROR_CASES)
def test_spec_error_cases_are_raised_by_validation(spec, case):
    error = {"ValueError": ValueError, "TypeError": TypeError, "NotImplementedError": NotImplementedError}[
        case["error"]
    ]
    params = {
        k: (bind(v["schedule"], v.get("params", {})) if is_schedule_ref(v) else v) for k, v in case["params"].items()
    }
    with pytest.raises(error, match=case["match"]):  # error cases are built on one param group (one Keras lr)
        hs.validate(spec, params, base_lr=case.get("base_lr"), param_groups=1)


def test_the_canonical_writer_round_trips_and_is_stable():
    for spec in SPECS.values():
        text = spec.path.read_text(encoding="utf-8")
        data = json.loads(text)
        assert dumps(data) == text, f"{spec.path} is not in canonical layout; run `nox -s regen`"
