"""Param groups that step as one call of AdamW's or AdamWeightDecay's functional core.

Layer-wise learning rates make hundreds of groups of a few tensors each. Stepped one call per group, each group pays
the fixed cost of a call (the path choice, the layout check, a step-counter addition, about 40 µs); the fused kernel
itself takes one lr per call, so the groups' kernel calls stay separate, but the rest is done once for consecutive
groups that agree in what a call takes once (its ``key``: the path, ``maximize``, ``amsgrad``). The groups' tensors
are kept in one set of lists, each group a part of them with its own hyperparameters.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ._adam_torch_kernel_path import AdamTensors

__all__ = ["GroupsCall"]


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
        self.tensors = AdamTensors([], [], [], [], [], [])
        self.options: list[Any] = []
        self.parts: list[int] = []
        self.created = False
        self.decay: list[bool] = []
        self.counted: list[Tensor] = []
        self.every: list[Tensor] = []

    def add(
        self,
        tensors: AdamTensors,
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
