"""The per-parameter step counter: ``state["step"]`` as a tensor, and its host mirror for the fused paths."""

from __future__ import annotations

import functools
import weakref

import numpy as np
import torch

from ._path_choice import compiling

__all__ = ["STEP_DTYPE", "advance_steps", "as_step_tensor", "count_steps", "host_steps", "note_advanced", "plus_one"]

#: dtype of the per-parameter ``state["step"]`` counter (torch.optim's convention: exact up to 2**24 steps).
STEP_DTYPE = torch.float32


def as_step_tensor(value: object, like: torch.Tensor) -> torch.Tensor:
    """``state["step"]`` as a tensor on the parameter's device.

    transformers stores the step as a Python int; torch.optim as a CPU tensor. Both load, and the counter is
    moved next to the parameter so that ``step`` never synchronises with the host.
    """
    if isinstance(value, torch.Tensor):
        if value.device != like.device or value.dtype != STEP_DTYPE:
            return value.to(device=like.device, dtype=STEP_DTYPE)
        return value
    return torch.tensor(float(value), dtype=STEP_DTYPE, device=like.device)  # type: ignore[arg-type]


#: step tensor -> (its version counter, its value): a host mirror of ``state["step"]`` so that the fused paths get
#: the step as a Python number without reading device memory. A step changed elsewhere (a loaded checkpoint, an
#: in-place edit) has another version and is read once.
class _StepMirror:
    """A map from a step tensor (by identity, held weakly) to ``(version, value)``.

    What ``torch.utils.weak.WeakIdKeyDictionary`` does, at a third of its cost per lookup (one dict lookup and one
    weakref call; the weakref is made once per tensor), which matters on the fused paths: two lookups per
    parameter per step. An entry goes when its tensor does.
    """

    def __init__(self) -> None:
        self._entries: dict[int, tuple[weakref.ref[torch.Tensor], tuple[int | None, float]]] = {}

    def _forget(self, key: int, ref: weakref.ref[torch.Tensor]) -> None:
        entry = self._entries.get(key)
        if entry is not None and entry[0] is ref:
            del self._entries[key]

    def get(self, step: torch.Tensor) -> tuple[int | None, float] | None:
        entry = self._entries.get(id(step))
        return entry[1] if entry is not None and entry[0]() is step else None

    def __setitem__(self, step: torch.Tensor, cached: tuple[int | None, float]) -> None:
        key = id(step)
        entry = self._entries.get(key)
        if entry is not None and entry[0]() is step:
            ref = entry[0]
        else:
            ref = weakref.ref(step, functools.partial(self._forget, key))
        self._entries[key] = (ref, cached)

    def __delitem__(self, step: torch.Tensor) -> None:
        if self.get(step) is None:
            raise KeyError(step)
        del self._entries[id(step)]

    def __len__(self) -> int:
        return len(self._entries)


_HOST_STEPS = _StepMirror()


def _version(step: torch.Tensor) -> int | None:
    try:
        return int(step._version)
    except RuntimeError:  # inference tensors keep no version counter
        return None


def host_steps(steps: list[torch.Tensor]) -> list[float]:
    """The values of the step tensors as Python floats, read from the host mirror where it is current."""
    out = []
    for step in steps:
        version = _version(step)
        cached = _HOST_STEPS.get(step)
        if version is None or cached is None or cached[0] != version:
            cached = (version, float(step))
            if version is not None:
                _HOST_STEPS[step] = cached
        out.append(cached[1])
    return out


def plus_one(value: float) -> float:
    return float(np.float32(value + 1.0))  # the rounding of the float32 counter


def advance_steps(steps: list[torch.Tensor]) -> list[float]:
    """``step += 1`` on every tensor (one foreach op); returns the new values without reading them back."""
    before = host_steps(steps)
    torch._foreach_add_(steps, 1)
    after = []
    plus_one: dict[float, float] = {}  # the steps of one call are usually all equal: round each value once
    for step, value in zip(steps, before):
        new = plus_one.get(value)
        if new is None:
            # the rounding of the float32 counter (inline: compiled steps trace it)
            new = plus_one[value] = float(np.float32(value + 1.0))
        version = _version(step)
        if version is not None:
            _HOST_STEPS[step] = (version, new)
        after.append(new)
    return after


def count_steps(steps: list[torch.Tensor]) -> None:
    """``step += 1`` on every tensor (one foreach op), the host mirror kept current outside ``torch.compile``.

    Inside a compiled step the mirror is left alone (dynamo does not trace weak references): it goes stale, and the
    next eager step reads each counter once.
    """
    if compiling():
        torch._foreach_add_(steps, 1)
    else:
        advance_steps(steps)


def note_advanced(steps: list[torch.Tensor]) -> None:
    """Record in the host mirror that a code path did ``step += 1`` (one in-place op) on every tensor.

    A tensor whose mirror is already current (the path used :func:`advance_steps`) is left alone; one that
    changed by more than one in-place op loses its mirror and is read once at its next use.
    """
    if compiling():
        return
    for step in steps:
        version = _version(step)
        cached = _HOST_STEPS.get(step)
        if version is None or cached is None or cached[0] == version:
            continue
        if cached[0] is not None and version == cached[0] + 1:
            _HOST_STEPS[step] = (version, plus_one(cached[1]))
        else:
            del _HOST_STEPS[step]
