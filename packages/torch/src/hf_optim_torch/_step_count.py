"""The per-parameter step counter: ``state["step"]`` as a tensor, and its host mirror for the fused paths."""

from __future__ import annotations

import functools
import weakref
from typing import Any

import numpy as np
import torch
from torch.utils.weak import WeakIdKeyDictionary

from ._path_choice import capturing, compiling
from ._step_block import STEP_DTYPE, StepBlock, block_holding, block_of_view, blocks_of, slot_of

__all__ = [
    "STEP_DTYPE",
    "advance_steps",
    "as_step_tensor",
    "count_steps",
    "host_steps",
    "mark_captured",
    "note_advanced",
    "plus_one",
]


def as_step_tensor(value: object, like: torch.Tensor) -> torch.Tensor:
    """``state["step"]`` as a tensor on the parameter's device.

    transformers stores the step as a Python int; torch.optim as a CPU tensor. Both load, and the counter is
    moved next to the parameter so that ``step`` never synchronises with the host.
    """
    if isinstance(value, torch.Tensor):
        if value.dtype is not STEP_DTYPE or value.device != like.device:
            return value.to(device=like.device, dtype=STEP_DTYPE)
        return value
    return torch.tensor(float(value), dtype=STEP_DTYPE, device=like.device)  # type: ignore[arg-type]


class _Advanced:
    """Some views of one block, each advanced once by an in-place op of its own (so the block's shared version counter
    moved once per view): their positions and new values, for the block's mirror."""

    __slots__ = ("base", "block", "count", "news", "version")

    def __init__(self, base: torch.Tensor, block: StepBlock) -> None:
        self.base, self.block, self.version = base, block, block.version
        self.news: dict[int, float] = {}
        self.count = 0

    def add(self, index: int, new: float) -> None:
        self.news[index] = new
        self.count += 1

    def record(self) -> None:
        """Keep the new values in the block's mirror if the block moved by exactly these ops (each view once, nothing
        else); otherwise forget its values, which are read again at their next use."""
        block = self.block
        if (
            self.version is not None
            and len(self.news) == self.count
            and self.base._version == self.version + self.count
        ):
            values = block.values
            for index, new in self.news.items():
                values[index] = new
            block.version = self.base._version
        else:  # (e.g. under a Python dispatch mode, in-place ops on views move no version counter)
            block.version = None


class _StepMirror:
    """A host mirror of ``state["step"]``: step tensor (by identity, held weakly) -> ``(version, value)``.

    The fused paths get each step as a Python number without reading device memory. A step changed elsewhere (a
    loaded checkpoint, an in-place edit) has another version counter and is read once. What
    ``torch.utils.weak.WeakIdKeyDictionary`` would do, with the per-tensor work of a step inlined in one loop over
    the list (these loops run for every parameter at every step). An entry goes when its tensor does.
    """

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref[torch.Tensor], int, float]] = {}
        # steps (outside a block) whose update a CUDA graph captured: never mirrored, read at every use
        self._captured: WeakIdKeyDictionary = WeakIdKeyDictionary()

    def _forget(self, key: int, ref: weakref.ref[torch.Tensor]) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry[0] is ref:
            del self._entries[key]

    def get(self, step: torch.Tensor) -> tuple[int, float] | None:
        """``(version, value)`` as last recorded for ``step`` (in its block's mirror if it is in one), or None."""
        found = block_of_view(step)
        if found is not None:
            block, index = found
            return None if block.version is None or block.captured else (block.version, block.values[index])
        entry = self._entries.get(id(step))
        return (entry[1], entry[2]) if entry is not None and entry[0]() is step else None

    def __len__(self) -> int:
        return len(self._entries)

    def values(self, steps: list[torch.Tensor]) -> list[float]:
        """The current values of ``steps``: from the mirror where it is current, else read (once) and recorded."""
        found = blocks_of(steps)
        if found is not None:
            return [value for base, block in found for value in block.current_values(base)]
        return self._read(steps)[0]

    def advance(self, steps: list[torch.Tensor]) -> list[float]:
        """``step += 1`` on every tensor (one foreach op); returns the new values without reading them back.

        The mirror records each tensor at the version one past the one it was read at: a tensor listed twice (two
        increments) then disagrees with it and is read again at its next use.
        """
        found = blocks_of(steps)
        if found is not None:  # the steps of whole groups: one addition per block (see ._step_block)
            rounded: dict[float, float] = {}
            for base, block in found:
                block.values = _rounded_plus_one(block.current_values(base), rounded)
                base.add_(1)
                block.version = base._version
            return block.values[:] if len(found) == 1 else [value for _, block in found for value in block.values]
        before, versions = self._read(steps)
        torch._foreach_add_(steps, 1)
        after = _rounded_plus_one(before)
        entries = self._entries
        in_blocks: dict[int, _Advanced] = {}  # views of blocks, by block: their positions and new values
        for step, new, version in zip(steps, after, versions):
            if type(version) is tuple:  # a view of a block (``slot_of``)
                base, block, index = version
                advanced = in_blocks.get(id(block))
                if advanced is None:
                    advanced = in_blocks[id(block)] = _Advanced(base, block)
                advanced.add(index, new)
                continue
            entry = entries.get(id(step))
            if version is not None and entry is not None:  # (a captured step has none)
                entries[id(step)] = (entry[0], version + 1, new)
        for advanced in in_blocks.values():
            advanced.record()
        return after

    def _read(self, steps: list[torch.Tensor]) -> tuple[list[float], list[Any]]:
        """The values of ``steps`` and their version counters (None for inference tensors, which have none); for a
        view of a block, its ``slot_of`` instead, its value from the block's mirror."""
        entries, values, versions = self._entries, [], []
        for step in steps:
            slot = slot_of(step)
            if slot is not None:  # the views of a block share its version counter: the block's mirror keeps them
                values.append(slot[1].current_values(slot[0])[slot[2]])
                versions.append(slot)
                continue
            try:
                version = step._version
            except RuntimeError:  # inference tensors keep no version counter: read every time
                values.append(float(step))
                versions.append(None)
                continue
            entry = entries.get(id(step))
            if entry is not None and entry[1] == version and entry[0]() is step:
                values.append(entry[2])
            else:
                value = float(step)
                ref = entry[0] if entry is not None and entry[0]() is step else None
                self._record(step, ref, version, value)
                values.append(value)
            versions.append(version)
        return values, versions

    def note(self, steps: list[torch.Tensor]) -> None:
        """Record that a code path did ``step += 1`` (one in-place op) on every tensor (see :func:`note_advanced`)."""
        found = blocks_of(steps)
        if found is not None:  # each view was advanced once: a block's version moved by its length
            for base, block in found:
                if block.version is not None and base._version == block.version + len(block.views):
                    block.values, block.version = _rounded_plus_one(block.values), base._version
            return
        entries = self._entries
        in_blocks: dict[int, _Advanced] = {}
        for step in steps:
            slot = slot_of(step)
            if slot is not None:
                base, block, index = slot
                advanced = in_blocks.get(id(block))
                if advanced is None:
                    advanced = in_blocks[id(block)] = _Advanced(base, block)
                if block.version is not None:
                    advanced.add(index, plus_one(block.values[index]))
                continue
            entry = entries.get(id(step))
            if entry is None or entry[0]() is not step:
                continue
            try:
                version = step._version
            except RuntimeError:
                continue
            if version == entry[1] + 1:
                entries[id(step)] = (entry[0], version, plus_one(entry[2]))
            elif version != entry[1]:
                del entries[id(step)]
        for advanced in in_blocks.values():
            if advanced.base._version != advanced.version:  # (else already current: the path used advance_steps)
                advanced.record()

    def mark_captured(self, steps: list[torch.Tensor]) -> None:
        """Stop mirroring ``steps``: a CUDA graph captured their update, and its replays advance them with no version
        change the mirror could see. Each is read at every later use (a sync per eager step after a capture)."""
        for step in steps:
            block = block_holding(step)
            if block is not None:
                block.captured = True
                continue
            self._entries.pop(id(step), None)
            self._captured[step] = True

    def _record(self, step: torch.Tensor, ref: weakref.ref[torch.Tensor] | None, version: int, value: float) -> None:
        if step in self._captured:
            return
        key = id(step)
        if ref is None:
            ref = weakref.ref(step, functools.partial(self._forget, key))
        self._entries[key] = (ref, version, value)


_HOST_STEPS = _StepMirror()


def host_steps(steps: list[torch.Tensor]) -> list[float]:
    """The values of the step tensors as Python floats, read from the host mirror where it is current."""
    return _HOST_STEPS.values(steps)


def plus_one(value: float) -> float:
    return float(np.float32(value + 1.0))  # the rounding of the float32 counter


def _rounded_plus_one(values: list[float], rounded: dict[float, float] | None = None) -> list[float]:
    """``plus_one`` of each value, computed once per distinct value (the steps of a group are usually equal; ``rounded``
    keeps them across the blocks of a call)."""
    if rounded is None:
        rounded = {}
    for value in set(values).difference(rounded):
        rounded[value] = plus_one(value)
    return [rounded[value] for value in values]


def advance_steps(steps: list[torch.Tensor]) -> list[float]:
    """``step += 1`` on every tensor (one foreach op); returns the new values without reading them back."""
    return _HOST_STEPS.advance(steps)


def count_steps(steps: list[torch.Tensor]) -> None:
    """``step += 1`` on every tensor (one foreach op), the host mirror kept current outside ``torch.compile`` and
    CUDA graph capture.

    Inside a compiled step the mirror is left alone (dynamo does not trace weak references): it goes stale, and the
    next eager step reads each counter once. A captured step does not read it either (``begin_step`` has marked the
    counters: :func:`mark_captured`).
    """
    if compiling() or capturing(steps):
        torch._foreach_add_(steps, 1)
    else:
        advance_steps(steps)


def mark_captured(steps: list[torch.Tensor]) -> None:
    """Read these step counters from the device at every later use: a CUDA graph is capturing their update."""
    _HOST_STEPS.mark_captured(steps)


def note_advanced(steps: list[torch.Tensor]) -> None:
    """Record in the host mirror that a code path did ``step += 1`` (one in-place op) on every tensor.

    A tensor whose mirror is already current (the path used :func:`advance_steps`) is left alone; one that
    changed by more than one in-place op loses its mirror and is read once at its next use.
    """
    if not compiling():
        _HOST_STEPS.note(steps)
