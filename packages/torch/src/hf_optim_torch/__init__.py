"""hf-optim-torch: transformers' optimizers and learning-rate schedules, exact, in native PyTorch.

A drop-in for the names of ``transformers.optimization`` (4.x, and 5.x's ``GreedyLR``): ``AdamW`` (v4.49 numerics),
``Adafactor``, every schedule factory, ``SchedulerType``/``get_scheduler``, and torch twins of the TensorFlow side
(``AdamWeightDecay``, ``WarmUp``, ``PolynomialDecay``, ``create_optimizer``, ``GradientAccumulator``).
Hyperparameters, defaults, errors and schedule formulas come from the ``hf_optim_spec`` registry.
"""

from __future__ import annotations

from ._accumulator import GradientAccumulator
from ._adafactor import Adafactor, adafactor
from ._adafactor_schedule import AdafactorSchedule, get_adafactor_schedule
from ._adam_weight_decay import AdamWeightDecay, adam_weight_decay
from ._adamw import AdamW, adamw
from ._amp import scaler_step
from ._greedy import GreedyLR, get_greedy_schedule
from ._lr_schedulers import PlateauLR, SpecFactorLR, SpecLR
from ._schedule_factories import (
    build_schedule,
    get_adafactor_relative_step_schedule,
    get_constant_schedule,
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_cosine_with_hard_restarts_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup_lr_rate,
    get_inverse_sqrt_schedule,
    get_linear_schedule_with_warmup,
    get_polynomial_decay_schedule_with_warmup,
    get_reduce_on_plateau_schedule,
    get_wsd_schedule,
)
from ._scheduler_type import SchedulerType, get_scheduler
from ._spec_factor import SpecFactor
from ._warmup import PolynomialDecay, WarmUp, create_optimizer

__version__ = "0.1.0"

__all__ = [
    "Adafactor",
    "AdafactorSchedule",
    "AdamW",
    "AdamWeightDecay",
    "GradientAccumulator",
    "GreedyLR",
    "PlateauLR",
    "PolynomialDecay",
    "SchedulerType",
    "SpecFactor",
    "SpecFactorLR",
    "SpecLR",
    "WarmUp",
    "adafactor",
    "adam_weight_decay",
    "adamw",
    "build_schedule",
    "create_optimizer",
    "get_adafactor_relative_step_schedule",
    "get_adafactor_schedule",
    "get_constant_schedule",
    "get_constant_schedule_with_warmup",
    "get_cosine_schedule_with_warmup",
    "get_cosine_with_hard_restarts_schedule_with_warmup",
    "get_cosine_with_min_lr_schedule_with_warmup",
    "get_cosine_with_min_lr_schedule_with_warmup_lr_rate",
    "get_greedy_schedule",
    "get_inverse_sqrt_schedule",
    "get_linear_schedule_with_warmup",
    "get_polynomial_decay_schedule_with_warmup",
    "get_reduce_on_plateau_schedule",
    "get_scheduler",
    "get_wsd_schedule",
    "scaler_step",
]
