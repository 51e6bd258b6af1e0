"""Step counters gathered in one tensor per device for the param groups that step as one call, so that ``step += 1``
is one op, not one per parameter.

Each parameter keeps its own ``state["step"]``, a 0-dim float32 tensor, as in torch.optim and in every checkpoint.
On CPU, incrementing N of them with ``torch._foreach_add_`` dispatches N additions (about 2 µs each: 0.4 ms a step
for 200 parameters, more than torch's fused kernel needs to update 200 tensors of 32x32). When an optimizer
creates the steps of a call (one param group, or AdamW's and AdamWeightDecay's groups that step together) or loads a
group's, :func:`gather_steps` makes them 0-dim *views* of one 1-D tensor (a block), one element per parameter, and a
step whose counters are exactly the views of whole blocks, one block after another, adds 1 to each block once.
Anything else (some parameters without a gradient, a step replaced by hand) takes the per-tensor path, which
is always correct. The views share the block's version counter, so the host mirror of the steps
(:mod:`._step_count`) keeps one entry per block: one version check instead of one per parameter.

A view saves and loads like any tensor (``torch.save`` keeps one copy of the block); a loaded checkpoint is
gathered again by ``load_state_dict``.
"""

from __future__ import annotations

import weakref
from collections.abc import MutableMapping
from operator import call, is_
from typing import Any

import torch

__all__ = [
    "STEP_DTYPE",
    "StepBlock",
    "block_holding",
    "block_of",
    "block_of_view",
    "blocks_of",
    "gather_steps",
    "slot_of",
]

#: dtype of the per-parameter ``state["step"]`` counter (torch.optim's convention: exact up to 2**24 steps).
STEP_DTYPE = torch.float32

_ATTRIBUTE = "_hf_optim_step_block"


class StepBlock:
    """What hangs on a block's 1-D tensor: weak references to its views, and the host mirror of its values."""

    __slots__ = ("captured", "positions", "values", "version", "views")

    def __init__(self, views: tuple[torch.Tensor, ...]) -> None:
        # weak: the block hangs on its base tensor, which each view keeps alive (a cycle through C++ that Python's
        # garbage collector could not see)
        self.views = tuple(weakref.ref(view) for view in views)
        self.positions = {id(view): index for index, view in enumerate(views)}  # (checked against ``views``)
        self.version: int | None = None  # the base's version counter when ``values`` was read
        self.values: list[float] = []
        # advanced by a captured CUDA graph: its replays change the values without the version counter, so the
        # mirror is read again at every use
        self.captured = False

    def current_values(self, base: torch.Tensor) -> list[float]:
        """The steps as Python floats: from the mirror, or read (a device sync) after an outside change, and at every
        use once a CUDA graph has captured their update."""
        version = base._version
        if version != self.version or self.captured:
            self.values = [float(v) for v in base.tolist()]
            self.version = version
        return self.values


def blocks_of(steps: list[torch.Tensor]) -> list[tuple[torch.Tensor, StepBlock]] | None:
    """The blocks whose views are exactly ``steps``, one whole block after another, each in order (with the blocks'
    tensors), or None. One block is the steps of a param group, or of several that step as one call."""
    found: list[tuple[torch.Tensor, StepBlock]] = []
    start, count = 0, len(steps)
    while start < count:
        base = steps[start]._base
        block: StepBlock | None = getattr(base, _ATTRIBUTE, None) if base is not None else None
        if block is None:
            return None
        end = start + len(block.views)
        views = steps if start == 0 and end == count else steps[start:end]
        if end > count or not all(map(is_, views, map(call, block.views))):
            return None
        if base.is_inference():  # no version counter to mirror by: the per-tensor path reads these every time
            return None
        found.append((base, block))  # type: ignore[arg-type]
        start = end
    return found or None


def block_of(steps: list[torch.Tensor]) -> tuple[torch.Tensor, StepBlock] | None:
    """The block whose views are exactly ``steps``, in order (and the block's tensor), or None."""
    found = blocks_of(steps)
    return found[0] if found is not None and len(found) == 1 else None


def slot_of(step: torch.Tensor) -> tuple[torch.Tensor, StepBlock, int] | None:
    """The block ``step`` is a view of, with the block's tensor and the view's position there, or None (also for an
    inference tensor, which has no version counter to mirror by)."""
    base = step._base
    block: StepBlock | None = getattr(base, _ATTRIBUTE, None) if base is not None else None
    if block is None:
        return None
    index = block.positions.get(id(step))
    if index is None or block.views[index]() is not step or base.is_inference():
        return None
    return base, block, index  # type: ignore[return-value]


def block_holding(step: torch.Tensor) -> StepBlock | None:
    """The block ``step`` is a view of (by its base tensor), or None."""
    return getattr(step._base, _ATTRIBUTE, None) if step._base is not None else None


def block_of_view(step: torch.Tensor) -> tuple[StepBlock, int] | None:
    """The block ``step`` is a view of, and its position there, or None (a linear search: not for the step path)."""
    block = block_holding(step)
    if block is not None:
        for index, view in enumerate(block.views):
            if view() is step:
                return block, index
    return None


def gather_steps(states: list[MutableMapping[str, Any]]) -> list[Any]:
    """Make the ``step`` of every given state a 0-dim view of one float32 tensor per device, with the same value;
    returns the states' steps, in order.

    States whose step is not a one-element plain tensor (a transformers checkpoint's Python int is first made a tensor
    by the caller) keep theirs.
    """
    by_device: dict[torch.device, list[MutableMapping[str, Any]]] = {}
    for state in states:
        step = state.get("step")
        if isinstance(step, torch.Tensor) and step.numel() == 1 and type(step) is torch.Tensor:
            by_device.setdefault(step.device, []).append(state)
    for group in by_device.values():
        base = torch.stack([state["step"].detach().reshape(()).to(STEP_DTYPE) for state in group])
        views = base.unbind(0)
        setattr(base, _ATTRIBUTE, StepBlock(views))
        for state, view in zip(group, views):
            state["step"] = view
    return [state.get("step") for state in states]
