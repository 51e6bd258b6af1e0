"""The Keras optimizers' constructor arguments: the spec check, tf.keras 2 legacy keywords, Keras base keywords."""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import keras
from hf_optim_spec._arguments import spec_arguments, validate_arguments

__all__ = ["KERAS_BASE_KWARGS", "check_arguments", "pop_legacy_kwargs"]

_NOT_A_NUMBER_LR = (keras.optimizers.schedules.LearningRateSchedule,)

KERAS_BASE_KWARGS = frozenset(
    {
        "clipnorm",
        "clipvalue",
        "global_clipnorm",
        "use_ema",
        "ema_momentum",
        "ema_overwrite_frequency",
        "loss_scale_factor",
        "gradient_accumulation_steps",
    }
)
"""Keyword arguments forwarded to Keras' base optimizer."""


def pop_legacy_kwargs(kwargs: dict[str, Any], learning_rate: Any, default_lr: Any, owner: str) -> Any:
    """Handle tf.keras 2 (legacy optimizer) keyword arguments that Keras 3 dropped.

    * ``lr``: the legacy alias of ``learning_rate``; mapped to it (DeprecationWarning). Passing
      both ``lr`` and a non-default ``learning_rate`` is a ValueError.
    * ``decay``: legacy inverse-time decay of the lr. ``0``/``None`` are accepted and ignored;
      any other value is a ValueError pointing at ``keras.optimizers.schedules.InverseTimeDecay``
      (Keras 3 itself would silently ignore it).
    * ``weight_decay=None`` (Keras' base-class key, present in every Keras optimizer config) is
      dropped; a value is left in ``kwargs`` for the spec check, which rejects it as unknown
      where the optimizer has no such parameter.

    Returns:
      The learning rate to use (ints become floats, as Keras requires).
    """
    if "lr" in kwargs:
        lr = kwargs.pop("lr")
        if learning_rate is not default_lr and learning_rate != default_lr:
            raise ValueError(
                f"{owner}: pass the learning rate once, as `learning_rate`. "
                f"Received: lr={lr!r} and learning_rate={learning_rate!r}"
            )
        warnings.warn(
            f"{owner}: the `lr` argument is deprecated; use `learning_rate`.", DeprecationWarning, stacklevel=3
        )
        learning_rate = lr
    decay = kwargs.pop("decay", None)
    if decay not in (None, 0, 0.0):
        raise ValueError(
            f"{owner}: the legacy `decay` argument is not supported by Keras 3 optimizers. Pass "
            "`learning_rate=keras.optimizers.schedules.InverseTimeDecay(lr, decay_steps=1, "
            f"decay_rate=decay)` for the same learning rate. Received: decay={decay!r}"
        )
    if "weight_decay" in kwargs and kwargs["weight_decay"] is None:
        kwargs.pop("weight_decay")
    if isinstance(learning_rate, int) and not isinstance(learning_rate, bool):
        learning_rate = float(learning_rate)
    return learning_rate


def check_arguments(
    spec_id: str, arguments: Mapping[str, Any], default_lr: Any, owner: str
) -> tuple[Any, dict[str, Any]]:
    """The one check of a Keras optimizer's constructor arguments; returns ``(learning_rate, keras_base_kwargs)``.

    Args:
        spec_id: the optimizer's spec id.
        arguments: the constructor's ``locals()``, taken first thing (its ``**kwargs`` under ``"kwargs"``).
        default_lr: the signature's default ``learning_rate`` (see :func:`pop_legacy_kwargs`).
        owner: the class name, for the legacy-keyword messages.

    The legacy keywords are resolved first (:func:`pop_legacy_kwargs`). The keyword arguments that Keras' base
    optimizer takes (:data:`KERAS_BASE_KWARGS`) are returned for it; the others, and base keywords the spec also
    declares (AdamWeightDecay's ``clipnorm``), go to the spec check with the named arguments, where an unknown one is
    a TypeError. A learning rate that is a schedule or a callable is checked by Keras' base class instead (the spec
    types it as a number): the spec check sees a stand-in of 1.0, so rules that only ask whether a manual lr is set
    (Adafactor's ``relative_step``) still apply.

    Raises:
        TypeError, ValueError: the spec's uniform errors; the legacy-keyword errors of :func:`pop_legacy_kwargs`.
    """
    kwargs = dict(arguments.get("kwargs", {}))
    learning_rate = pop_legacy_kwargs(kwargs, arguments["learning_rate"], default_lr, owner)
    declared = spec_arguments(spec_id, "tf", kwargs)
    base_kwargs = {key: value for key, value in kwargs.items() if key in KERAS_BASE_KWARGS}
    extra = {key: value for key, value in kwargs.items() if key not in KERAS_BASE_KWARGS or key in declared}
    named = {**arguments, "learning_rate": learning_rate}
    if isinstance(learning_rate, _NOT_A_NUMBER_LR) or (
        callable(learning_rate) and not isinstance(learning_rate, (int, float))
    ):
        named["learning_rate"] = 1.0
    validate_arguments(spec_id, named, framework="tf", extra=extra)
    return learning_rate, base_kwargs
