"""Adafactor's native calls of several param groups, joined into one (``_adafactor_native_calls.NativeCalls``).

Joining exists for speed only (200 param groups of one 32x32 matrix: about 300 -> 110 us a group and step): these
tests show that it never changes a bit, that only groups whose call-wide options agree are joined, and that a step
that fails leaves the groups as a step without joining would.
"""

from __future__ import annotations

from typing import Any

import hf_optim_torch
import pytest
import torch
from hf_optim_torch import _adafactor_native_calls, _native

#: (shapes, group options) of each group; every group differs from the first in its lr (in its decay rate where the
#: relative step sets the lr)
GROUPS: list[tuple[list[tuple[int, ...]], dict[str, Any]]] = [
    ([(48, 32), (16, 8), (40,)], {"lr": 1e-2, "weight_decay": 0.1}),
    ([(32, 32)], {"lr": 3e-3, "weight_decay": 0.05}),  # joins the first (another weight decay, still on)
    ([(7,), (24, 16)], {"lr": 1e-3, "weight_decay": 0.0}),  # weight decay off: a call of its own
    ([(20, 12), (9,)], {"lr": 2e-3, "weight_decay": 0.1, "beta1": 0.9}),  # a first moment: its own
    ([(12, 12)], {"lr": 5e-3, "weight_decay": 0.1, "clip_threshold": 0.5}),  # another clipping: its own
    ([(8, 8), (5,)], {"lr": 4e-3, "weight_decay": 0.2}),  # joins the first two
]
#: the calls a step makes per kind when the groups are joined, from the comments above
JOINED_CALLS = {"factored": 4, "unfactored": 3}


class _Recorded:
    """The kernel, with the tensor count of each statistics call recorded per kind (its first argument)."""

    def __init__(self, lib: Any) -> None:
        self._lib = lib
        self.counts: dict[str, list[int]] = {"factored": [], "unfactored": []}

    def __getattr__(self, name: str) -> Any:
        function = getattr(self._lib, name)
        if not name.endswith("_statistics"):
            return function
        kind = "unfactored" if name.startswith("hf_adafactor_flat") else "factored"
        return lambda *args: (self.counts[kind].append(args[0]), function(*args))[1]


def _optimizer(
    seed: int = 0, bfloat16_groups: bool = False, **defaults: Any
) -> tuple[torch.optim.Optimizer, list[torch.nn.Parameter]]:
    """An Adafactor over GROUPS (with ``bfloat16_groups``, the parameters of every second group in bfloat16: a
    joined call of several dtypes)."""
    gen = torch.Generator().manual_seed(seed)
    groups, params = [], []
    defaults = {"relative_step": False, "scale_parameter": False, "lr": 1e-3} | defaults
    for i, (shapes, options) in enumerate(GROUPS):
        dtype = torch.bfloat16 if bfloat16_groups and i % 2 else torch.float32
        ps = [torch.nn.Parameter(torch.randn(shape, generator=gen).to(dtype)) for shape in shapes]
        params += ps
        group = {"params": ps, **options}
        if defaults["relative_step"]:  # no manual lr: the groups differ in their decay rate instead
            del group["lr"]
            group["decay_rate"] = -0.8 + 0.02 * i
        groups.append(group)
    return hf_optim_torch.Adafactor(groups, **defaults), params


def _train(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter], steps: int, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(p.dtype)
        optimizer.step()


def _snapshot(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter]) -> list[torch.Tensor]:
    state = [v for p in params for _, v in sorted(optimizer.state[p].items())]
    return [p.detach().clone() for p in params] + [v.clone() for v in state]


@pytest.mark.parametrize(
    "defaults",
    [{}, {"scale_parameter": True, "relative_step": True, "lr": None}, {"bfloat16_groups": True}],
    ids=["manual lr", "relative step", "bfloat16 groups"],
)
def test_joined_calls_give_the_bits_of_one_call_per_group(monkeypatch, kernel, defaults) -> None:
    monkeypatch.setitem(_native._state, "adafactor", recorded := _Recorded(kernel))
    joined, params = _optimizer(**defaults)
    _train(joined, params, steps=4)
    assert {kind: len(counts) for kind, counts in recorded.counts.items()} == {
        kind: 4 * calls for kind, calls in JOINED_CALLS.items()
    }, "one call per kind and class of joinable groups, per step"
    assert sum(recorded.counts["factored"][:4]) == sum(len([s for s in g[0] if len(s) == 2]) for g in GROUPS)

    monkeypatch.setattr(_adafactor_native_calls._Call, "takes", lambda *_: False)
    separate, separate_params = _optimizer(**defaults)
    _train(separate, separate_params, steps=4)
    per_group = sum(any(len(s) == 2 for s in shapes) for shapes, _ in GROUPS)
    assert len(recorded.counts["factored"]) == 4 * JOINED_CALLS["factored"] + 4 * per_group
    for a, b in zip(_snapshot(joined, params), _snapshot(separate, separate_params), strict=True):
        assert torch.equal(a, b)


def test_a_refused_joined_call_leaves_out_only_the_refused_group(monkeypatch, kernel) -> None:
    """The kernel checks every tensor of a call before it writes any. A state that does not fit its parameter in one
    group: the joined call is made again group by group, so every other group steps as it would have (those joined
    with it, and the calls after it), and the refused matrix is left as it was, as when each group made its own call."""
    monkeypatch.setitem(_native._state, "adafactor", kernel)
    optimizer, params = _optimizer()
    reference, reference_params = _optimizer()
    for opt, ps in ((optimizer, params), (reference, reference_params)):
        _train(opt, ps, steps=1)
    bad = optimizer.param_groups[1]["params"][0]
    optimizer.state[bad]["exp_avg_sq_row"] = torch.ones(31)
    before = bad.detach().clone()
    with pytest.raises(ValueError, match=r"exp_avg_sq_row has 31 elements .*expected 32"):
        _train(optimizer, params, steps=1, seed=2)
    _train(reference, reference_params, steps=1, seed=2)
    assert torch.equal(bad.detach(), before)
    others = [(p, q) for p, q in zip(params, reference_params, strict=True) if p is not bad]
    for p, q in others:
        assert torch.equal(p.detach(), q.detach())
        for key, value in reference.state[q].items():
            assert torch.equal(optimizer.state[p][key], value), key
    assert float(optimizer.state[bad]["step"]) == 2.0, "counted, as when its group made its own call"


def test_a_group_that_raises_leaves_the_groups_before_it_stepped(monkeypatch, kernel) -> None:
    """A group refused while its step is being routed (``fused=True`` on a float64 parameter): the calls held for
    the groups before it are still made, so they are stepped in full, as they were before calls were joined."""
    monkeypatch.setitem(_native._state, "adafactor", kernel)
    optimizer, params = _optimizer()
    reference, reference_params = _optimizer()
    odd = torch.nn.Parameter(torch.randn(6, 4, dtype=torch.float64))
    optimizer.add_param_group({"params": [odd], "fused": True})
    odd.grad = torch.randn(6, 4, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="fused=True supports"):
        _train(optimizer, params, steps=1)
    _train(reference, reference_params, steps=1)
    for a, b in zip(_snapshot(optimizer, params), _snapshot(reference, reference_params), strict=True):
        assert torch.equal(a, b)


def test_a_group_that_raises_keeps_its_error_beside_a_refusal(monkeypatch, kernel) -> None:
    """Both at once: the error of the group that raised is the one raised, the kernel's refusal its context."""
    monkeypatch.setitem(_native._state, "adafactor", kernel)
    optimizer, params = _optimizer()
    _train(optimizer, params, steps=1)
    optimizer.state[optimizer.param_groups[1]["params"][0]]["exp_avg_sq_row"] = torch.ones(31)
    odd = torch.nn.Parameter(torch.randn(6, 4, dtype=torch.float64))
    optimizer.add_param_group({"params": [odd], "fused": True})
    odd.grad = torch.randn(6, 4, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="fused=True supports") as raised:
        _train(optimizer, params, steps=1, seed=2)
    assert isinstance(raised.value.__context__, ValueError)
    assert "exp_avg_sq_row has 31 elements" in str(raised.value.__context__)
