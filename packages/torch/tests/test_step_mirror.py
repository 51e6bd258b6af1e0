"""The host mirror of ``state["step"]``: current after each fused step, re-read after an outside change, weak."""

from __future__ import annotations

import gc

import torch
from hf_optim_torch import _step_count


def test_mirror_follows_advances_and_rereads_an_outside_edit() -> None:
    steps = [torch.tensor(0.0) for _ in range(3)]
    assert _step_count.advance_steps(steps) == [1.0, 1.0, 1.0]
    assert _step_count.host_steps(steps) == [1.0, 1.0, 1.0]
    steps[1].add_(41)  # e.g. a loaded checkpoint or a user edit: another version, read once
    assert _step_count.host_steps(steps) == [1.0, 42.0, 1.0]
    assert _step_count.advance_steps(steps) == [2.0, 43.0, 2.0]
    assert [float(s) for s in steps] == [2.0, 43.0, 2.0]


def test_mirror_rounds_like_the_float32_counter() -> None:
    step = torch.tensor(2.0**24)
    assert _step_count.advance_steps([step]) == [float(step)] == [2.0**24]  # float32 cannot count past 2**24


def test_mirror_holds_its_tensors_weakly() -> None:
    gc.collect()
    before = len(_step_count._HOST_STEPS)
    steps = [torch.tensor(0.0) for _ in range(5)]
    _step_count.advance_steps(steps)
    assert len(_step_count._HOST_STEPS) == before + 5
    other = torch.tensor(7.0)
    assert _step_count._HOST_STEPS.get(other) is None
    del steps
    gc.collect()
    assert len(_step_count._HOST_STEPS) == before


def test_count_steps_keeps_the_mirror_current() -> None:
    steps = [torch.tensor(3.0), torch.tensor(5.0)]
    _step_count.count_steps(steps)
    assert [_step_count._HOST_STEPS.get(s) for s in steps] == [(s._version, float(s)) for s in steps]
    assert [float(s) for s in steps] == [4.0, 6.0]
