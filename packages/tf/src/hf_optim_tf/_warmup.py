"""transformers' TF schedule helpers on Keras 3: WarmUp, PolynomialDecay and create_optimizer."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import hf_optim_spec as hs
import keras

from ._adam_weight_decay import AdamWeightDecay
from ._schedules import SpecSchedule, checked_config

__all__ = ["PolynomialDecay", "WarmUp", "create_optimizer"]

_DEFAULT_EXCLUDE = ["LayerNorm", "layer_norm", "bias"]


def _constructor_arguments(frame_locals: Mapping[str, Any]) -> dict[str, Any]:
    """A constructor's own arguments, from its ``locals()`` taken first thing."""
    return {key: value for key, value in frame_locals.items() if key not in ("self", "__class__")}


@keras.saving.register_keras_serializable(package="hf_optim")
class WarmUp(SpecSchedule):
    r"""Polynomial warmup in front of any schedule (transformers' TF ``WarmUp``).

    .. math::

        \eta(t) = \eta_0 \left(\frac{t}{W}\right)^{p}\ \text{if}\ t < W\
                  \text{else}\ \text{decay\_schedule\_fn}(t - W)

    Computed from the ``warmup`` spec formula in float64 and cast to floatx.

    Args:
        initial_learning_rate: the lr reached at the end of the warmup.
        decay_schedule_fn: the schedule used after the warmup (any Keras
            ``LearningRateSchedule`` or callable of the step).
        warmup_steps: number of warmup steps :math:`W`.
        power: exponent :math:`p` of the warmup. Defaults to 1.0 (linear).
        name: optional name: a str or None (anything else is a TypeError).

    Differences from transformers:
        ``get_config`` serializes ``decay_schedule_fn`` (``keras.saving.serialize_keras_object``),
        so ``WarmUp.from_config(w.get_config())`` and ``.keras`` files reload it; transformers'
        config held the live object and could not be reloaded.
    """

    def __init__(
        self,
        initial_learning_rate: float,
        decay_schedule_fn: Callable[[Any], Any],
        warmup_steps: int,
        power: float = 1.0,
        name: str | None = None,
    ) -> None:
        arguments = _constructor_arguments(locals())
        name = arguments.pop("name")
        super().__init__("warmup", None, arguments, name=name)
        self.initial_learning_rate = initial_learning_rate
        self.decay_schedule_fn = decay_schedule_fn
        self.warmup_steps = warmup_steps
        self.power = power

    def get_config(self) -> dict[str, Any]:
        return {
            "initial_learning_rate": self.initial_learning_rate,
            "decay_schedule_fn": keras.saving.serialize_keras_object(self.decay_schedule_fn),
            "warmup_steps": self.warmup_steps,
            "power": self.power,
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> WarmUp:
        """The schedule of a :meth:`get_config` dict (``decay_schedule_fn`` deserialized).

        Raises:
            TypeError, ValueError: a garbled config or another schedule's (see ``SpecSchedule.from_config``).
        """
        config = checked_config(cls, config)
        fn = config["decay_schedule_fn"]
        if isinstance(fn, dict):
            config["decay_schedule_fn"] = keras.saving.deserialize_keras_object(fn)
        return cls(**config)


@keras.saving.register_keras_serializable(package="hf_optim")
class PolynomialDecay(keras.optimizers.schedules.PolynomialDecay):
    r"""Keras' ``PolynomialDecay`` (the schedule ``create_optimizer`` builds), from the spec formula.

    Same signature, defaults and config as ``keras.optimizers.schedules.PolynomialDecay`` (it is a
    subclass), but evaluated from the ``polynomial_decay`` spec formula in float64 and cast to
    floatx once, so it agrees bit for bit with the torch twin.

    .. math::

        \eta(t) = (\eta_0 - \eta_{end})\left(1 - \frac{\min(t, T)}{T}\right)^{p} + \eta_{end}
        \quad (T \text{ grows to the next multiple of itself when } \text{cycle})

    Args:
        initial_learning_rate: :math:`\eta_0`.
        decay_steps: :math:`T`.
        end_learning_rate: :math:`\eta_{end}`. Defaults to 0.0001.
        power: :math:`p`. Defaults to 1.0.
        cycle: restart the decay after ``decay_steps``. Defaults to False.
        name: a str, as the ``polynomial_decay`` spec types it (anything else, None included, is
            a TypeError). Defaults to ``"PolynomialDecay"``.
    """

    def __init__(
        self,
        initial_learning_rate: float,
        decay_steps: int,
        end_learning_rate: float = 0.0001,
        power: float = 1.0,
        cycle: bool = False,
        name: str = "PolynomialDecay",
    ) -> None:
        arguments = _constructor_arguments(locals())
        # the spec types `name` too (a str; None only if the spec makes it nullable)
        self._formula = SpecSchedule("polynomial_decay", None, arguments)
        super().__init__(**arguments)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PolynomialDecay:
        """The schedule of a :meth:`get_config` dict (its fields checked, see ``SpecSchedule.from_config``)."""
        return cls(**checked_config(cls, config))

    def _lower(self, step: Any) -> Any:
        return self._formula._lower(step)

    def __call__(self, step: Any) -> Any:
        return self._formula(step)


def create_optimizer(
    init_lr: float,
    num_train_steps: int,
    num_warmup_steps: int,
    min_lr_ratio: float = 0.0,
    adam_beta1: float = 0.9,
    adam_beta2: float = 0.999,
    adam_epsilon: float = 1e-8,
    adam_clipnorm: float | None = None,
    adam_global_clipnorm: float | None = None,
    weight_decay_rate: float = 0.0,
    power: float = 1.0,
    include_in_weight_decay: list[str] | None = None,
) -> tuple[AdamWeightDecay, keras.optimizers.schedules.LearningRateSchedule]:
    """An Adam optimizer with warmup + polynomial decay, as transformers' TF ``create_optimizer``.

    The schedule is ``PolynomialDecay(init_lr, num_train_steps - num_warmup_steps,
    init_lr * min_lr_ratio, power)``, wrapped in ``WarmUp(init_lr, ..., num_warmup_steps)`` when
    ``num_warmup_steps`` is not zero. The optimizer is :class:`AdamWeightDecay` excluding
    ``["LayerNorm", "layer_norm", "bias"]`` from the decay (``include_in_weight_decay`` overrides).

    Differences from transformers:
        transformers returned a plain tf.keras ``Adam`` when ``weight_decay_rate == 0``; this
        returns ``AdamWeightDecay(weight_decay_rate=0.0, ...)``, which runs the same legacy-Adam
        update (it differs from ``keras.optimizers.Adam`` only in how ``1 - beta`` is rounded to
        float32, below 1e-6 relative; the package tests compare the two) and, unlike Keras 3's
        ``Adam``, can be built lazily inside ``strategy.run`` (transformers' own distributed
        ``GradientAccumulator`` test applies gradients that way).

    Args:
        init_lr: the lr at the end of the warmup.
        num_train_steps: total number of training steps.
        num_warmup_steps: number of warmup steps.
        min_lr_ratio: final lr as a fraction of ``init_lr``. Defaults to 0.0.
        adam_beta1: Defaults to 0.9.
        adam_beta2: Defaults to 0.999.
        adam_epsilon: Defaults to 1e-8.
        adam_clipnorm: per-tensor gradient norm clipping. Defaults to None.
        adam_global_clipnorm: global gradient norm clipping. Defaults to None.
        weight_decay_rate: decoupled weight decay. Defaults to 0.0.
        power: power of the polynomial decay. Defaults to 1.0.
        include_in_weight_decay: regexes of variables always decayed. Defaults to None.

    Returns:
        ``(optimizer, lr_schedule)``.

    Raises:
        TypeError, ValueError: the ``create_optimizer`` spec's errors (for example
            ``num_train_steps <= num_warmup_steps``, which transformers accepted and then divided
            by zero or decayed backwards).
    """
    hs.validate("create_optimizer", locals(), framework="tf")
    lr_schedule: keras.optimizers.schedules.LearningRateSchedule = PolynomialDecay(
        initial_learning_rate=init_lr,
        decay_steps=num_train_steps - num_warmup_steps,
        end_learning_rate=init_lr * min_lr_ratio,
        power=power,
    )
    if num_warmup_steps:
        lr_schedule = WarmUp(
            initial_learning_rate=init_lr, decay_schedule_fn=lr_schedule, warmup_steps=num_warmup_steps
        )
    optimizer = AdamWeightDecay(
        learning_rate=lr_schedule,
        weight_decay_rate=weight_decay_rate,
        beta_1=adam_beta1,
        beta_2=adam_beta2,
        epsilon=adam_epsilon,
        clipnorm=adam_clipnorm,
        global_clipnorm=adam_global_clipnorm,
        exclude_from_weight_decay=list(_DEFAULT_EXCLUDE),
        include_in_weight_decay=include_in_weight_decay,
    )
    return optimizer, lr_schedule
