"""GradientAccumulator: every spec case (ops sequence) and error, checkpointing."""

from __future__ import annotations

import re
from typing import Any

import hf_optim_spec
import pytest
import torch
from _support import TORCH_DTYPES, api, assert_close, case_params, raises_spec_error, roundtrip, specs
from hf_optim_spec.reference import accumulator as reference

ACCUMULATORS = specs("accumulator")


@pytest.mark.parametrize(("spec", "case"), list(case_params(ACCUMULATORS)))
def test_accumulator_case(spec: hf_optim_spec.Spec, case: Any) -> None:
    dtype = TORCH_DTYPES[case.get("dtype", "float32")]
    rows = iter(reference.case_grads(case))
    expected = case["expected"] if case.get("expected") else reference.run_case(spec.raw, case)
    accumulator = api(spec)()
    tol = spec.tol(case.get("dtype", "float32"))
    for index, (op, wanted) in enumerate(zip(case["ops"], expected)):
        if op["op"] == "reset":
            accumulator.reset()
        else:
            grads = [None if g is None else torch.tensor(g, dtype=dtype) for g in next(rows)]
            if "error" in wanted:
                with pytest.raises(ValueError, match=wanted["match"]):
                    accumulator(grads)
                continue
            accumulator(grads)
        assert int(accumulator.step) == wanted["step"], f"op {index}"
        if wanted["gradients"] is None:
            with pytest.raises(ValueError, match=re.escape(reference.NOT_INITIALIZED)):
                accumulator.gradients
            continue
        actual = accumulator.gradients
        assert len(actual) == len(wanted["gradients"])
        for slot, (a, w) in enumerate(zip(actual, wanted["gradients"])):
            assert (a is None) == (w is None), f"op {index} slot {slot}"
            if a is not None:
                assert a.dtype == dtype
                assert_close(a.to(torch.float64).numpy(), w, tol, f"op {index} slot {slot}")


@pytest.mark.parametrize(
    ("spec", "error"), [pytest.param(s, e, id=f"{s.id}::{e['description']}") for s in ACCUMULATORS for e in s.errors]
)
def test_accumulator_error(spec: hf_optim_spec.Spec, error: Any) -> None:
    with raises_spec_error(error):
        api(spec)(**error["params"])


def test_accumulator_state_dict_round_trip() -> None:
    accumulator = api(hf_optim_spec.get("gradient_accumulator"))()
    accumulator([torch.ones(2, 3), None])
    accumulator([torch.full((2, 3), 2.0), None])
    clone = type(accumulator)()
    clone.load_state_dict(roundtrip(accumulator.state_dict()))
    clone([torch.ones(2, 3), None])
    assert int(clone.step) == 3 and int(accumulator.step) == 2
    assert torch.equal(clone.gradients[0], torch.full((2, 3), 4.0)) and clone.gradients[1] is None
