"""What every Adafactor path receives: the aligned tensor lists of one call and its options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from torch import Tensor

from ._low_precision import LOW_PRECISION

__all__ = ["AdafactorOptions", "AdafactorTensors"]


class AdafactorTensors(NamedTuple):
    """The tensors of one call, one list entry per parameter (see :func:`hf_optim_torch.adafactor`).

    ``grads`` of 16-bit parameters are float32 or in the parameter's dtype (see :meth:`float32_grads`); a parameter
    of rank >= 2 has ``row_vars``/``col_vars`` and no ``full_vars`` entry, others the reverse; ``exp_avgs`` entries
    are None without a first moment.
    """

    params: list[Tensor]
    grads: list[Tensor]
    state_steps: list[Tensor]
    rms_values: list[Tensor]
    exp_avgs: list[Tensor | None]
    row_vars: list[Tensor | None]
    col_vars: list[Tensor | None]
    full_vars: list[Tensor | None]

    def pick(self, indices: list[int]) -> AdafactorTensors:
        """The tensors of the parameters at ``indices``, in that order."""
        return AdafactorTensors(*([lst[i] for i in indices] for lst in self))

    def float32_grads(self) -> AdafactorTensors:
        """These tensors with every 16-bit gradient read in float32, the compute dtype of the torch paths (the
        native kernel reads 16-bit gradients itself)."""
        if not any(g.dtype in LOW_PRECISION for g in self.grads):
            return self
        return self._replace(grads=[g.float() if g.dtype in LOW_PRECISION else g for g in self.grads])


@dataclass(frozen=True)
class AdafactorOptions:
    """The hyperparameters of one call (a param group's), as the paths read them."""

    lr: float | Tensor | None
    eps: tuple[float, float]
    clip_threshold: float
    decay_rate: float
    beta1: float | None
    weight_decay: float
    scale_parameter: bool
    relative_step: bool
    warmup_init: bool
    first_moment: str = "lr_scaled"
    maximize: bool = False

    def lr_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`._adafactor_scalars.lr_at` besides the lr, step and RMS."""
        return {
            "eps2": self.eps[1],
            "relative_step": self.relative_step,
            "warmup_init": self.warmup_init,
            "scale_parameter": self.scale_parameter,
        }
