"""Param groups stepped as one call (``_groups_call.GroupsCall``): AdamW, AdamWeightDecay, Adafactor.

Consecutive groups that agree in what a call takes once (the path; AdamW's ``maximize``, AdamWeightDecay's
``amsgrad``) step in one call of the functional core: one layout check and one step-counter addition for all, a
kernel call per group (Adafactor's native calls are then joined where they can be). It exists for speed only (200
groups of one 32x32 tensor: about 80-90 -> 40-50 us a group and step): these tests show that it never changes a bit
against one optimizer per group, that the groups' counters are one tensor, and that a call that fails changes nothing.
"""

from __future__ import annotations

import io
from typing import Any

import hf_optim_torch
import pytest
import torch
from hf_optim_torch._step_block import block_of, blocks_of, gather_steps
from hf_optim_torch._step_count import advance_steps, host_steps, note_advanced

#: (shapes, group options) per optimizer; the groups differ in every hyperparameter a group may set. The comments say
#: which groups the step joins into one call.
_GROUPS: dict[str, list[tuple[list[tuple[int, ...]], dict[str, Any]]]] = {
    "AdamW": [
        ([(6, 5), (7,)], {"lr": 1e-2, "weight_decay": 0.1}),
        ([(4, 2)], {"lr": 0.5, "weight_decay": 2.0}),  # joins the first; lr * weight_decay == 1: the loop steps it
        ([(4, 4)], {"lr": 3e-3, "weight_decay": 0.0, "betas": (0.8, 0.99), "eps": 1e-5}),  # joins the first two
        ([(5, 3), (2,)], {"lr": 2e-3, "weight_decay": 0.05, "correct_bias": False}),  # joins the first three
        ([(3, 3)], {"lr": 4e-3, "fused": False}),  # another path: a call of its own
        ([(8,), (2, 2)], {"lr": 1e-3, "weight_decay": 0.2, "maximize": True}),  # maximize: its own
        ([(6,)], {"lr": 6e-3, "fp32_math": True}),  # stepped in float32 on its own
        ([(3, 4), (5,)], {"lr": 7e-3, "weight_decay": 0.3}),  # a call of its own (after the fp32_math group)
    ],
    "AdamWeightDecay": [
        ([(6, 5), (7,)], {"learning_rate": 1e-2, "weight_decay_rate": 0.1}),
        ([(4, 4)], {"learning_rate": 3e-3, "beta_1": 0.8, "beta_2": 0.99, "epsilon": 1e-5}),  # joins the first
        ([(5, 3), (2,)], {"learning_rate": 2e-3, "weight_decay_rate": 0.05}),  # joins the first two
        ([(3, 3)], {"learning_rate": 4e-3, "amsgrad": True}),  # amsgrad: a call of its own
        ([(8,), (2, 2)], {"learning_rate": 1e-3, "fused": False, "weight_decay_rate": 0.2}),  # another path: its own
        ([(6,)], {"learning_rate": 6e-3, "fp32_math": True}),  # stepped in float32 on its own
        ([(3, 4), (5,)], {"learning_rate": 7e-3, "weight_decay_rate": 0.3}),  # a call of its own
    ],
    "Adafactor": [
        ([(6, 5), (7,)], {"lr": 1e-2, "weight_decay": 0.1}),
        ([(4, 4), (2, 3, 4)], {"lr": None, "relative_step": True, "warmup_init": True}),  # joins the first
        ([(5, 3), (2,)], {"lr": 2e-3, "beta1": 0.9, "scale_parameter": False, "clip_threshold": 0.5}),  # joins
        ([(3, 3)], {"lr": 3e-3, "beta1": 0.8, "first_moment": "unscaled", "eps": (1e-20, 1e-2)}),  # joins
        ([(8,), (2, 2)], {"lr": 4e-3, "decay_rate": -0.5, "maximize": True}),  # joins
        ([(4, 2)], {"lr": 5e-3, "dtype": torch.bfloat16}),  # joins (bfloat16 parameters)
        ([(3, 2)], {"lr": 5e-3, "dtype": torch.float64}),  # joins (not the two-pass path's dtype: the loop)
        ([(3, 3)], {"lr": 4e-3, "fused": False}),  # another path: a call of its own
        ([(5, 2)], {"lr": 1e-3, "dtype": torch.bfloat16, "stochastic_rounding": True}),  # stepped on its own
        ([(3, 4), (5,)], {"lr": 7e-3, "weight_decay": 0.3}),  # a call of its own
    ],
}
#: the kernel calls of a step where every parameter has a gradient: one per group on the fused path (the loop's
#: groups make none: AdamW's fused=False and lr * weight_decay == 1 groups, AdamWeightDecay's fused=False group)
_KERNEL_CALLS = {"AdamW": 6, "AdamWeightDecay": 6, "Adafactor": None}


def _optimizer(name: str, groups: list[tuple[list[tuple[int, ...]], dict[str, Any]]], seed: int = 0) -> Any:
    gen = torch.Generator().manual_seed(seed)
    param_groups = []
    for shapes, options in groups:
        dtype = options.get("dtype", torch.float32)  # (not an option: the parameters' dtype)
        params = [torch.nn.Parameter(torch.randn(shape, generator=gen).to(dtype)) for shape in shapes]
        group = {"params": params, **{k: v for k, v in options.items() if k != "dtype"}}
        if "learning_rate" in group:
            group["lr"] = group.pop("learning_rate")
        param_groups.append(group)
    defaults = {"lr": 1e-3, "relative_step": False} if name == "Adafactor" else {}  # (manual lr by default)
    return getattr(hf_optim_torch, name)(param_groups, **defaults)


def _params(optimizer: Any) -> list[torch.nn.Parameter]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def _grads(params: list[torch.nn.Parameter], gen: torch.Generator, step: int) -> None:
    for i, p in enumerate(params):
        # at step 2, every third parameter has no gradient (AdamW skips it; AdamWeightDecay still counts it)
        p.grad = None if step == 2 and i % 3 == 1 else torch.randn(p.shape, generator=gen).to(p.dtype)


def _snapshot(optimizer: Any, group: int | None = None) -> list[torch.Tensor]:
    """The parameters and states of every group, or of one."""
    out = []
    groups = optimizer.param_groups if group is None else [optimizer.param_groups[group]]
    for p in (p for g in groups for p in g["params"]):
        out.append(p.detach().clone())
        out += [v.clone() for _, v in sorted(optimizer.state[p].items())]
    return out


@pytest.mark.parametrize("name", list(_GROUPS))
def test_groups_stepped_as_one_call_equal_one_optimizer_per_group_bit_for_bit(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    groups = _GROUPS[name]
    joined = _optimizer(name, groups)
    # the same parameters, each optimizer stepping one group: the others get no gradients (so that every parameter
    # keeps its position among all, which keys stochastic rounding)
    alone = [_optimizer(name, groups) for _ in groups]
    kernel, calls = torch._fused_adamw_, []
    monkeypatch.setattr(torch, "_fused_adamw_", lambda *a, **k: (calls.append(len(a[0])), kernel(*a, **k)))
    for step in range(4):
        _grads(_params(joined), torch.Generator().manual_seed(step), step)
        calls.clear()
        joined.step()
        if step == 1 and _KERNEL_CALLS[name] is not None:  # (at step 0 the kernel is also probed once per betas)
            assert len(calls) == _KERNEL_CALLS[name], calls
        for k, optimizer in enumerate(alone):
            _grads(_params(optimizer), torch.Generator().manual_seed(step), step)
            for j, group in enumerate(optimizer.param_groups):
                for p in group["params"] if j != k else ():
                    p.grad = None
            optimizer.step()
    expected = [t for k, optimizer in enumerate(alone) for t in _snapshot(optimizer, k)]
    got = _snapshot(joined)
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert torch.equal(a, b)


def _three_groups(name: str, **options: Any) -> Any:
    lr = "learning_rate" if name == "AdamWeightDecay" else "lr"
    shapes = [[(3, 4)], [(5,)], [(2, 2), (3,)]]
    return _optimizer(name, [(s, {lr: 1e-2 * (k + 1), **options}) for k, s in enumerate(shapes)])


@pytest.mark.parametrize("name", list(_GROUPS))
def test_the_counters_of_a_call_are_one_tensor_advanced_by_one_addition(name: str) -> None:
    optimizer = _three_groups(name)
    params = _params(optimizer)
    for step in range(2):
        _grads(params, torch.Generator().manual_seed(step), step)
        optimizer.step()
    steps = [optimizer.state[p]["step"] for p in params]
    found = block_of(steps)
    assert found is not None, "the call's counters are views of one tensor"
    version = found[0]._version
    optimizer.step()
    assert found[0]._version == version + 1, "one addition for the whole call"
    assert [float(s) for s in steps] == host_steps(steps) == [3.0] * len(params)

    # a loaded checkpoint is gathered group by group: a step adds once per group and keeps the host mirror current
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    loaded = _three_groups(name)
    loaded.load_state_dict(torch.load(buffer, weights_only=True))
    loaded_params = _params(loaded)
    loaded_steps = [loaded.state[p]["step"] for p in loaded_params]
    blocks = blocks_of(loaded_steps)
    assert blocks is not None and len(blocks) == 3
    versions = [base._version for base, _ in blocks]
    _grads(loaded_params, torch.Generator().manual_seed(5), 5)
    loaded.step()
    assert [base._version for base, _ in blocks] == [v + 1 for v in versions]
    assert all(block.version == base._version for base, block in blocks), "the mirror is current: nothing is read"
    assert [float(s) for s in loaded_steps] == host_steps(loaded_steps) == [4.0] * len(params)


def test_a_call_the_kernel_refuses_changes_no_group() -> None:
    optimizer = _three_groups("AdamW", fused=True, weight_decay=0.1)
    params = _params(optimizer)
    _grads(params, torch.Generator().manual_seed(0), 0)
    optimizer.step()
    optimizer.param_groups[2].update(lr=0.5, weight_decay=2.0)  # lr * weight_decay == 1: no kernel lr to fold it into
    _grads(params, torch.Generator().manual_seed(1), 1)
    before = _snapshot(optimizer)
    with pytest.raises(RuntimeError, match="fused=True cannot run lr \\* weight_decay == 1"):
        optimizer.step()
    after = _snapshot(optimizer)
    assert all(torch.equal(a, b) for a, b in zip(before, after)), "no group of the call was stepped"


class _Reads:
    """Counts the reads of tensor values into Python (``float``, ``item``, ``tolist``): on CUDA each one waits for
    the device."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        for name in ("__float__", "item", "tolist"):
            real = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._counted(real))

    def _counted(self, real: Any) -> Any:
        def read(tensor: torch.Tensor, *args: Any) -> Any:
            self.count += 1
            return real(tensor, *args)

        return read


def _freeze_group_1(optimizer: Any, step: int) -> None:
    if step >= 2:
        for p in optimizer.param_groups[1]["params"]:
            p.grad = None


def _reverse_groups(optimizer: Any, step: int) -> None:
    if step == 2:
        optimizer.param_groups.reverse()


def _partial_grads(optimizer: Any, step: int) -> None:
    for i, p in enumerate(_params(optimizer)):
        if (i + step) % 3 == 0:
            p.grad = None


def _no_change(optimizer: Any, step: int) -> None:
    pass


@pytest.mark.parametrize("change", [_freeze_group_1, _reverse_groups, _partial_grads, _no_change])
@pytest.mark.parametrize("path", [{}, {"foreach": False}, {"dtype": torch.bfloat16}, {"mixed": torch.float64}])
@pytest.mark.parametrize("name", list(_GROUPS))
def test_a_step_reads_no_counter_back_when_only_some_of_a_call_steps(
    name: str, path: dict[str, Any], change: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The counters of a call are one tensor; when a step advances only some of them (a frozen group, groups in
    another order, some parameters without gradients, the for-loop or float32 subset of a call) or a path besides the
    fused one advances some (a call of two paths), the host mirror follows them view by view, so no counter is read
    back from the device after the first steps."""
    lr = "learning_rate" if name == "AdamWeightDecay" else "lr"
    # "mixed": every second group of that dtype, which the fused or two-pass path leaves to the loop: a call of two paths
    mixed = path.get("mixed")
    groups = [([(4, 3), (5,)], {lr: 1e-2 * (k + 1), **path}) for k in range(4)]
    if mixed is not None:
        groups = [(shapes, {lr: o[lr]} | ({"dtype": mixed} if k % 2 else {})) for k, (shapes, o) in enumerate(groups)]
    optimizer = _optimizer(name, groups)
    reads = _Reads(monkeypatch)
    counts = []
    for step in range(8):
        _grads(_params(optimizer), torch.Generator().manual_seed(step), -1)
        change(optimizer, step)
        reads.count = 0
        optimizer.step()
        counts.append(reads.count)
    assert counts[3:] == [0] * 5, counts
    monkeypatch.undo()
    steps = [optimizer.state[p]["step"] for p in _params(optimizer) if "step" in optimizer.state[p]]
    assert host_steps(steps) == [float(s) for s in steps], "the mirror holds the counters' values"


def test_the_mirror_of_some_views_of_a_block_is_kept_only_when_exact() -> None:
    """Views of one block share its version counter: the mirror keeps their new values only when the block moved by
    exactly one op per listed view; a view listed twice, or a block changed besides, is read again."""
    states: list[dict[str, Any]] = [{"step": torch.tensor(float(k))} for k in range(4)]
    steps = gather_steps(states)
    assert host_steps(steps) == [0.0, 1.0, 2.0, 3.0]
    assert advance_steps([steps[0], steps[2]]) == [1.0, 3.0]  # some views: each advanced once
    assert host_steps(steps) == [float(s) for s in steps] == [1.0, 1.0, 3.0, 3.0]
    advance_steps([steps[1], steps[1]])  # one view twice: 1 -> 3, not 2
    assert host_steps(steps) == [float(s) for s in steps] == [1.0, 3.0, 3.0, 3.0]
    steps[3].add_(5)  # changed besides, then a path's own increment of two views, noted
    torch._foreach_add_([steps[0], steps[3]], 1)
    note_advanced([steps[0], steps[3]])
    assert host_steps(steps) == [float(s) for s in steps] == [2.0, 3.0, 3.0, 9.0]
