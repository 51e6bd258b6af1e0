"""Param groups that step as one call of an optimizer's functional core (AdamW, AdamWeightDecay, Adafactor).

Layer-wise learning rates make hundreds of groups of a few tensors each. Stepped one call per group, each group pays
the fixed cost of a call (the path choice, the layout check, a step-counter addition: 40 to 60 µs); the kernels take
one lr per call (torch's fused AdamW) or join the groups' calls themselves (Adafactor's native calls), but the rest is
done once for consecutive groups that agree in what a call takes once (its ``key``: the path, and for AdamW
``maximize``, for AdamWeightDecay ``amsgrad``). The groups' tensors are kept in one set of lists, each group a part of
them (:func:`by_part`) with its own hyperparameters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor

__all__ = ["GroupsCall", "StepCalls", "by_part", "first_at_least"]


class GroupsCall:
    """The tensors and options of consecutive param groups that step as one call.

    ``tensors`` holds the stepped parameters of every group, group after group (``parts``: how many each), and
    ``options`` each group's hyperparameters; ``first`` is the index of the first group (whose layout cache the call
    keeps), ``created`` whether a group made state this step (its new counters are then gathered for the call).
    ``decay`` (AdamWeightDecay) is whether each stepped parameter is decayed, ``counted`` the counters the call
    advances after the update: those of ``every`` parameter of its groups, with a gradient or not.
    """

    __slots__ = ("counted", "created", "decay", "every", "first", "key", "options", "parts", "tensors")

    def __init__(self, key: tuple[Any, ...], first: int) -> None:
        self.key, self.first = key, first
        self.tensors: Any = None  # the tensor lists of the optimizer (AdamTensors, AdafactorTensors)
        self.options: list[Any] = []
        self.parts: list[int] = []
        self.created = False
        self.decay: list[bool] = []
        self.counted: list[Tensor] = []
        self.every: list[Tensor] = []

    def add(
        self,
        tensors: Any,
        options: Any,
        created: bool,
        decay: list[bool] | None = None,
        counted: list[Tensor] | None = None,
        every: list[Tensor] | None = None,
    ) -> None:
        """Add a group: its lists (made for this call: the first group's become the call's) and options."""
        if not self.parts:
            self.tensors = tensors
        else:
            for mine, more in zip(self.tensors, tensors):
                mine.extend(more)
        self.options.append(options)
        self.parts.append(len(tensors.params))
        self.created = self.created or created
        if decay is not None:
            self.decay.extend(decay)
        if counted is not None and every is not None:
            self.counted.extend(counted)
            self.every.extend(every)


class StepCalls:
    """The calls of one step: groups are added in order, and a group whose key differs from the pending call's
    ends that call (``step(call)`` steps it) and starts the next."""

    __slots__ = ("_pending", "_step")

    def __init__(self, step: Callable[[GroupsCall], object]) -> None:
        self._step = step
        self._pending: GroupsCall | None = None

    def add(self, key: tuple[Any, ...], index: int, tensors: Any, options: Any, created: bool, **more: Any) -> None:
        """Add the ``index``-th group (see :meth:`GroupsCall.add`) to the pending call, or to a new one."""
        if self._pending is not None and self._pending.key != key:
            self.flush()
        if self._pending is None:
            self._pending = GroupsCall(key, index)
        self._pending.add(tensors, options, created, **more)

    def flush(self) -> None:
        """Step the pending call, if any (before a group stepped on its own, and at the end of the step)."""
        if self._pending is not None:
            call, self._pending = self._pending, None
            self._step(call)


def by_part(indices: list[int], parts: Sequence[int]) -> list[tuple[int, list[int]]]:
    """``indices`` (ascending, into lists made of consecutive parts of lengths ``parts``) split by part: ``(part, its
    indices)`` for each part that has any."""
    found, first, end = [], 0, 0
    for part, length in enumerate(parts):
        end += length
        last = first_at_least(indices, end, first)
        if last > first:
            found.append((part, indices[first:last]))
        first = last
    return found


def first_at_least(indices: list[int], end: int, first: int) -> int:
    """The position of the first of ``indices`` (ascending) from ``first`` on that is at least ``end`` (a loop, which
    torch.compile traces; ``bisect`` it does not)."""
    while first < len(indices) and indices[first] < end:
        first += 1
    return first
