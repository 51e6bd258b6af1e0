"""The gradient accumulator reference against sums computed here with plain loops."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hf_optim_spec.reference import accumulator, generate_case, run_case
from hf_optim_spec.reference._lowp import round_to

SPEC = Path(__file__).resolve().parents[3] / "spec" / "accumulators" / "gradient_accumulator.json"


def load() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(SPEC.read_text(encoding="utf-8"))
    return data


def test_sums_and_step() -> None:
    rng = np.random.default_rng(0)
    calls = [[rng.standard_normal((2, 3)), rng.standard_normal(3)] for _ in range(4)]
    state = accumulator.accumulator_init()
    for count, grads in enumerate(calls, start=1):
        state = accumulator.accumulate(state, grads)
        assert state.step == count
    sums = accumulator.gradients(state)
    for slot in range(2):
        total = np.zeros_like(calls[0][slot])
        for grads in calls:
            total = total + grads[slot]
        np.testing.assert_array_equal(sums[slot], total)


def test_reset_zeroes_and_keeps_the_slot_count() -> None:
    state = accumulator.accumulate(accumulator.accumulator_init(), [np.ones(2), np.ones(3)])
    state = accumulator.reset(state)
    assert state.step == 0
    for value, size in zip(accumulator.gradients(state), (2, 3)):
        np.testing.assert_array_equal(value, np.zeros(size))
    with pytest.raises(ValueError, match=re.escape("Expected 2 gradients, but got 1")):
        accumulator.accumulate(state, [np.ones(2)])


def test_reset_and_read_before_the_first_call() -> None:
    fresh = accumulator.accumulator_init()
    assert accumulator.reset(fresh) == fresh
    with pytest.raises(ValueError, match="should be called first to initialize the gradients"):
        accumulator.gradients(fresh)


def test_wrong_count_raises_and_changes_nothing() -> None:
    state = accumulator.accumulate(accumulator.accumulator_init(), [np.ones(2), np.ones(2)])
    with pytest.raises(ValueError, match=re.escape("Expected 2 gradients, but got 3")):
        accumulator.accumulate(state, [np.ones(2)] * 3)
    assert state.step == 1


def test_none_slots() -> None:
    state = accumulator.accumulate(accumulator.accumulator_init(), [np.ones(2), None])
    state = accumulator.accumulate(state, [np.ones(2), np.ones(2)])  # slot 1 stays None
    state = accumulator.accumulate(state, [None, np.ones(2)])  # a None gradient is skipped
    sums = accumulator.gradients(state)
    np.testing.assert_array_equal(sums[0], 2 * np.ones(2))
    assert sums[1] is None
    assert state.step == 3


def test_low_precision_sums_are_rounded_after_every_addition() -> None:
    small = round_to(np.full(1, 2**-9), "bfloat16")
    state = accumulator.accumulate(accumulator.accumulator_init(), [np.ones(1)], dtype="bfloat16")
    for _ in range(3):
        state = accumulator.accumulate(state, [small], dtype="bfloat16")
    # 1 + 2**-9 is a tie that rounds to even (1.0) in bfloat16, every time
    np.testing.assert_array_equal(accumulator.gradients(state)[0], np.ones(1))


@pytest.mark.parametrize("index", range(len(load()["cases"])))
def test_spec_cases_against_a_plain_loop(index: int) -> None:
    spec = load()
    case = spec["cases"][index]
    filled = generate_case(spec, case)
    assert generate_case(spec, case) == filled
    assert "expected" not in case or case["expected"] == filled["expected"]
    assert run_case(spec, filled) == filled["expected"]
    dtype = case["dtype"]
    grads = iter(filled["grads"])
    sums: list[Any] | None = None
    step = 0
    for op, outcome in zip(case["ops"], filled["expected"]):
        if op["op"] == "reset":
            if sums:
                sums = [None if s is None else np.zeros_like(s) for s in sums]
                step = 0
        else:
            row = [None if g is None else np.array(g, dtype=float) for g in next(grads)]
            if not sums:
                sums = [None if g is None else np.zeros_like(g) for g in row]
            if len(row) != len(sums):
                assert outcome["error"] == "ValueError"
                assert re.search(outcome["match"], f"Expected {len(sums)} gradients, but got {len(row)}")
                continue
            sums = [s if s is None or g is None else round_to(s + g, dtype) for s, g in zip(sums, row)]
            step += 1
        assert outcome["step"] == step
        if not sums:
            assert outcome["gradients"] is None
        else:
            for got, want in zip(outcome["gradients"], sums):
                assert (got is None) == (want is None)
                if want is not None:
                    np.testing.assert_array_equal(np.array(got, dtype=float), want)
