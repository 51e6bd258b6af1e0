"""GradientAccumulator: transformers' TensorFlow gradient accumulation utility as a torch twin."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import hf_optim_spec
import torch
from torch import Tensor

from ._state_check import check_count

__all__ = ["GradientAccumulator"]

_SPEC_ID = "gradient_accumulator"


class GradientAccumulator:
    """Gradient accumulation utility (transformers' TF ``GradientAccumulator``, spec ``gradient_accumulator``).

    Call it with a list of gradients (``None`` entries allowed) to add them to running sums; read the sums with
    :attr:`gradients`, scale them if required, use them, then :meth:`reset`. The first call fixes the number of
    slots (a slot whose first gradient is None stays None). Nothing synchronises with the host: the sums and
    :attr:`step` are tensors on the gradients' device.

    Under DDP, call it on each rank's local gradients and average across ranks yourself (like the TF
    accumulator, which accumulates per replica without synchronisation).

    Example:
        >>> accumulator = GradientAccumulator()
        >>> accumulator([torch.ones(2), None])
        >>> accumulator([torch.ones(2), None])
        >>> accumulator.gradients, int(accumulator.step)
        ([tensor([2., 2.]), None], 2)
    """

    def __init__(self, **kwargs: Any) -> None:
        hf_optim_spec.validate(_SPEC_ID, kwargs, framework="torch")
        self._gradients: list[Tensor | None] = []
        self._accum_steps: Tensor | None = None

    @property
    def step(self) -> Tensor:
        """Number of accumulated steps (0-dim int64 tensor)."""
        if self._accum_steps is None:
            self._accum_steps = torch.zeros((), dtype=torch.int64)
        return self._accum_steps

    @property
    def gradients(self) -> list[Tensor | None]:
        """The accumulated gradients (the live sums: they are zeroed in place by :meth:`reset`).

        Raises:
            ValueError: before the first call.
        """
        if not self._gradients:
            raise ValueError("The accumulator should be called first to initialize the gradients")
        return list(self._gradients)

    @torch.no_grad()
    def __call__(self, gradients: Sequence[Tensor | None]) -> None:
        """Accumulate ``gradients``.

        Raises:
            ValueError: the number of gradients differs from the first call's (nothing is added).
        """
        gradients = list(gradients)
        if not self._gradients:
            self._gradients = [None if g is None else torch.zeros_like(g) for g in gradients]
            first = next((g for g in gradients if g is not None), None)
            device = first.device if first is not None else torch.device("cpu")
            self._accum_steps = self.step.to(device)
        if len(gradients) != len(self._gradients):
            raise ValueError(f"Expected {len(self._gradients)} gradients, but got {len(gradients)}")
        for accum, gradient in zip(self._gradients, gradients):
            if accum is not None and gradient is not None:
                accum.add_(gradient)
        self.step.add_(1)

    def reset(self) -> None:
        """Reset the accumulated gradients and the step count (no-op before the first call)."""
        if not self._gradients:
            return
        self.step.zero_()
        for gradient in self._gradients:
            if gradient is not None:
                gradient.zero_()

    def state_dict(self) -> dict[str, Any]:
        """The sums and the step count (for checkpointing)."""
        return {"gradients": list(self._gradients), "step": self.step.clone()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the sums and the step count of :meth:`state_dict`, checked first.

        Raises:
            ValueError, TypeError: not a dict with ``gradients`` (a list of tensors or None) and ``step`` (an integer
                >= 0); or, once this accumulator holds sums, a different number of slots or another shape of a
                slot. Nothing is changed then.
        """
        if not isinstance(state_dict, Mapping) or set(state_dict) != {"gradients", "step"}:
            raise ValueError(
                f"GradientAccumulator state_dict must be a dict with 'gradients' and 'step'; got {state_dict!r:.100}"
            )
        saved = state_dict["gradients"]
        if not isinstance(saved, Sequence) or any(g is not None and not isinstance(g, Tensor) for g in saved):
            raise TypeError(
                f"GradientAccumulator state_dict['gradients'] must be a list of tensors or None; got {saved!r:.100}"
            )
        step = check_count(state_dict["step"], "GradientAccumulator state_dict['step']")
        if self._gradients:
            if len(saved) != len(self._gradients):
                raise ValueError(
                    f"GradientAccumulator state_dict['gradients'] holds {len(saved)} slots; this accumulator has "
                    f"{len(self._gradients)}"
                )
            for k, (mine, theirs) in enumerate(zip(self._gradients, saved)):
                if (mine is None) != (theirs is None) or (mine is not None and mine.shape != theirs.shape):
                    shape = None if theirs is None else tuple(theirs.shape)
                    expected = None if mine is None else tuple(mine.shape)
                    raise ValueError(
                        f"GradientAccumulator state_dict['gradients'][{k}] has shape {shape}; expected {expected}"
                    )
        self._gradients = [None if g is None else g.clone() for g in saved]
        device = next((g.device for g in self._gradients if g is not None), torch.device("cpu"))
        self._accum_steps = torch.tensor(step, dtype=torch.int64, device=device)
