"""hf-optim-tf: transformers' optimizers, schedules and helpers, exact, in native Keras 3.

Every object is registered with ``keras.saving.register_keras_serializable(package="hf_optim")``,
so ``.keras`` files that use them load without ``custom_objects``.
"""

from __future__ import annotations

# isort: off
from . import _keras_backend  # noqa: F401  (first: a missing Keras backend names the extra to install)

# isort: on
from ._accumulator import GradientAccumulator
from ._adafactor import Adafactor
from ._adam_weight_decay import AdamWeightDecay
from ._adamw import AdamW
from ._amp import apply_scaled_gradients
from ._greedy import GreedySchedule, get_greedy_schedule
from ._plateau import PlateauSchedule, get_reduce_on_plateau_schedule
from ._relative_step_schedule import (
    AdafactorRelativeStepSchedule,
    AdafactorSchedule,
    get_adafactor_relative_step_schedule,
)
from ._schedule_factories import (
    SchedulerType,
    get_constant_schedule,
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_cosine_with_hard_restarts_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup,
    get_cosine_with_min_lr_schedule_with_warmup_lr_rate,
    get_inverse_sqrt_schedule,
    get_linear_schedule_with_warmup,
    get_polynomial_decay_schedule_with_warmup,
    get_scheduler,
    get_wsd_schedule,
)
from ._schedules import SpecSchedule
from ._warmup import PolynomialDecay, WarmUp, create_optimizer

__version__ = "0.1.0"

__all__ = [
    "Adafactor",
    "AdafactorRelativeStepSchedule",
    "AdafactorSchedule",
    "AdamW",
    "AdamWeightDecay",
    "GradientAccumulator",
    "GreedySchedule",
    "PlateauSchedule",
    "PolynomialDecay",
    "SchedulerType",
    "SpecSchedule",
    "WarmUp",
    "apply_scaled_gradients",
    "create_optimizer",
    "get_adafactor_relative_step_schedule",
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
]
