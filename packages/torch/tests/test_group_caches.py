"""What the fused paths keep between steps: a group's steps in one tensor, and the layout check's decision.

Both exist for speed only (see ``_step_block`` and ``_path_choice.LayoutCache``): these tests show that they never
change a result, and that every change a user can make between steps is seen.
"""

from __future__ import annotations

import gc
import io
from collections.abc import Callable

import pytest
import torch
from hf_optim_torch import Adafactor, AdamW, AdamWeightDecay, adamw
from hf_optim_torch._path_choice import LayoutCache
from hf_optim_torch._step_block import block_of
from hf_optim_torch._step_count import host_steps

_FACTORIES: dict[str, Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]] = {
    "AdamW": lambda ps: AdamW(ps, lr=1e-2, weight_decay=0.1),
    "AdamWeightDecay": lambda ps: AdamWeightDecay(ps, learning_rate=1e-2, weight_decay_rate=0.1),
}


def _params(n: int = 6, seed: int = 0) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(3, 4, generator=gen)) for _ in range(n)]


def _grads(params: list[torch.nn.Parameter], seed: int, skip: tuple[int, ...] = ()) -> None:
    gen = torch.Generator().manual_seed(seed)
    for i, p in enumerate(params):
        p.grad = None if i in skip else torch.randn(p.shape, generator=gen)


def _steps(optimizer: torch.optim.Optimizer, params: list[torch.nn.Parameter]) -> list[float]:
    return [float(optimizer.state[p]["step"]) for p in params]


@pytest.mark.parametrize("name", list(_FACTORIES))
def test_a_group_steps_as_one_tensor_and_counts_like_separate_ones(name: str) -> None:
    params = _params()
    optimizer = _FACTORIES[name](params)
    _grads(params, 1)
    optimizer.step()
    steps = [optimizer.state[p]["step"] for p in params]
    found = block_of(steps)
    assert found is not None, "the group's steps are views of one tensor"
    version = found[0]._version
    _grads(params, 2)
    optimizer.step()
    assert found[0]._version == version + 1, "a whole-group step is one addition"
    assert _steps(optimizer, params) == [2.0] * len(params)
    assert host_steps(steps) == [2.0] * len(params)
    # some parameters without a gradient: only AdamW skips them (AdamWeightDecay counts optimizer-wide, as Keras)
    _grads(params, 3, skip=(1, 4))
    optimizer.step()
    expected = [3.0] * len(params)
    if name == "AdamW":
        expected[1] = expected[4] = 2.0
    assert _steps(optimizer, params) == expected
    assert host_steps(steps) == expected


@pytest.mark.parametrize("name", list(_FACTORIES))
def test_steps_survive_save_load_and_hand_edits(name: str) -> None:
    params = _params()
    optimizer = _FACTORIES[name](params)
    for seed in range(3):
        _grads(params, seed)
        optimizer.step()
    buffer = io.BytesIO()
    torch.save(optimizer.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert [float(s["step"]) for s in loaded["state"].values()] == [3.0] * len(params)

    other_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    other = _FACTORIES[name](other_params)
    other.load_state_dict(loaded)
    assert block_of([other.state[p]["step"] for p in other_params]) is not None, "a loaded group is gathered again"
    other.state[other_params[2]]["step"] = torch.tensor(10.0)  # a hand edit: a tensor of its own
    other.state[other_params[3]]["step"].add_(5)  # an in-place edit of a view
    _grads(other_params, 7)
    other.step()
    assert _steps(other, other_params) == [4.0, 4.0, 11.0, 9.0, 4.0, 4.0]
    _grads(other_params, 8)
    other.step()
    assert _steps(other, other_params) == [5.0, 5.0, 12.0, 10.0, 5.0, 5.0]


@pytest.mark.parametrize("n", [4, 40], ids=["short lists", "long lists"])  # read a tensor at a time, or in passes
def test_a_kept_layout_decision_follows_every_change_between_steps(n: int) -> None:
    """Each edit changes what the full check would decide; the cached run must equal an uncached one."""
    edits: list[Callable[[list[torch.Tensor], list[torch.Tensor]], None]] = [
        lambda ps, gs: None,
        lambda ps, gs: gs.__setitem__(0, gs[0].t().contiguous().t()),  # a non-contiguous gradient of the same shape
        lambda ps, gs: None,
        lambda ps, gs: gs.__setitem__(1, gs[1].double()),  # a gradient of another dtype
        lambda ps, gs: None,
        lambda ps, gs: gs.__setitem__(-1, gs[-1].reshape(4, 3)),  # another shape of the same size
        lambda ps, gs: None,
        lambda ps, gs: gs.__setitem__(-1, gs[-1].to("meta")),  # another device
        lambda ps, gs: None,
    ]
    cached_params, plain_params = _params(n, seed=5), _params(n, seed=5)
    state = {id(ps): _fresh_state(ps) for ps in (cached_params, plain_params)}
    cache: LayoutCache[object] = LayoutCache()
    for seed, edit in enumerate(edits):
        results = []
        for params, layout_cache in ((cached_params, cache), (plain_params, None)):
            grads = [
                torch.randn(p.shape, generator=torch.Generator().manual_seed(seed + i)) for i, p in enumerate(params)
            ]
            edit(params, grads)  # type: ignore[arg-type]
            exp_avgs, exp_avg_sqs, steps = state[id(params)]
            try:
                adamw(
                    params, grads, exp_avgs, exp_avg_sqs, steps, lr=1e-2, beta1=0.9, beta2=0.999, eps=1e-6,
                    weight_decay=0.1, correct_bias=True, layout_cache=layout_cache,
                )  # fmt: skip
                results.append(None)
            except RuntimeError as error:
                results.append(type(error))
        assert results[0] == results[1], f"edit {seed}"
        for a, b in zip(cached_params, plain_params):
            assert torch.equal(a, b), f"edit {seed}"


def test_a_kept_layout_decision_is_made_again_for_fewer_or_more_lists() -> None:
    """AdamW checks one more list with amsgrad: a call with a list fewer (or more) than the kept decision's is a
    change, even where the lists it has all match."""
    tensors = [[torch.zeros(3)], [torch.zeros(3)], [torch.zeros(3)]]
    cache: LayoutCache[int] = LayoutCache()
    made: list[int] = []

    def decide() -> int:
        made.append(len(made))
        return made[-1]

    assert cache.decide(tensors, decide) == 0
    assert cache.decide(tensors, decide) == 0  # the same layouts: kept
    assert cache.decide(tensors[:2], decide) == 1
    assert cache.decide(tensors, decide) == 2
    assert cache.decide(tensors, decide, key="other") == 3


@pytest.mark.parametrize("groups", [1, 200])
@pytest.mark.parametrize("name", [*_FACTORIES, "Adafactor"])
def test_a_step_that_keeps_its_layout_sets_off_no_garbage_collection(name: str, groups: int) -> None:
    """The layout check reads a few hundred ``torch.Size`` tuples a step; held all at once, they set off a collection
    of Python's garbage collector at every step (every tenth one of the older objects too, and now and then a full
    one: 0.13 s in a process holding torch). Compared and dropped list by list, they set off none."""
    factory = _FACTORIES.get(name, Adafactor)
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn((32, 32) if i % 2 else (32,), generator=gen)) for i in range(200)]
    optimizer = factory(params if groups == 1 else [{"params": params[i::groups]} for i in range(groups)])
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    optimizer.step()  # the first step decides, and creates the state
    collections: list[int] = []
    count = lambda phase, info: collections.append(info["generation"]) if phase == "start" else None  # noqa: E731
    threshold = gc.get_threshold()
    gc.set_threshold(700)  # CPython's default: a collection once allocations exceed deallocations by 700
    gc.collect()
    for _ in range(10):  # the steps right after a full collection set off a few (200 groups of Adafactor: 6)
        optimizer.step()
    gc.callbacks.append(count)
    try:
        for _ in range(50):
            optimizer.step()
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(count)
    assert len(collections) <= 2, f"{len(collections)} collections in 50 steps of 200 tensors"


def _fresh_state(params: list[torch.nn.Parameter]) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    return (
        [torch.zeros_like(p) for p in params],
        [torch.zeros_like(p) for p in params],
        [torch.tensor(0.0) for _ in params],
    )


@pytest.mark.parametrize("n", [3, 40], ids=["short lists", "long lists"])
def test_a_replaced_state_tensor_of_the_wrong_size_never_reaches_the_kernel(n: int) -> None:
    """torch's CPU kernel checks no sizes: a cached 'eligible' verdict must not outlive a replaced state tensor."""
    params = _params(n)
    optimizer = AdamW(params, lr=1e-2)
    _grads(params, 1)
    optimizer.step()
    before = [p.detach().clone() for p in params]
    optimizer.state[params[1]]["exp_avg"] = torch.zeros(2)  # too small for the kernel: it would write past its end
    _grads(params, 2)
    with pytest.raises(RuntimeError):  # the for-loop path's broadcast error, not a write out of bounds
        optimizer.step()
    assert torch.equal(params[1], before[1])


@pytest.mark.parametrize("name", list(_FACTORIES))
def test_steps_made_under_inference_mode_count_too(name: str) -> None:
    """Inference tensors have no version counter to mirror by: their steps are read every time, and count."""
    with torch.inference_mode():
        params = _params()
        optimizer = _FACTORIES[name](params)
        for seed in range(3):
            _grads(params, seed)
            optimizer.step()
        assert _steps(optimizer, params) == [3.0] * len(params)
