"""Helpers shared by the Keras optimizer shells: spec validation, legacy kwargs, variable paths."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import hf_optim_spec as hs
import keras

__all__ = [
    "ReplicaSafeBuild",
    "as_list",
    "compute_dtype",
    "matches_any",
    "numpy_value",
    "pop_legacy_kwargs",
    "slot_name",
    "split_kwargs",
    "validate_optimizer",
    "variable_path",
]

_NOT_A_NUMBER_LR = (keras.optimizers.schedules.LearningRateSchedule,)


def validate_optimizer(spec_id: str, arguments: Mapping[str, Any]) -> dict[str, Any]:
    """Validate Keras-spelled optimizer arguments against the spec; returns canonical names.

    A learning rate that is a schedule or a callable is checked by Keras' base class instead
    (the spec types ``lr`` as a number): the spec check sees a stand-in of 1.0, so rules that
    only ask whether a manual lr is set (Adafactor's ``relative_step``) still apply.
    """
    checked = dict(arguments)
    spec = hs.get(spec_id)
    lr_name = str(spec.parameters["lr" if "lr" in spec.parameters else "learning_rate"].name_for("tf"))
    lr = checked.get(lr_name)
    if isinstance(lr, _NOT_A_NUMBER_LR) or (callable(lr) and not isinstance(lr, (int, float))):
        checked[lr_name] = 1.0
    return hs.validate(spec_id, checked, framework="tf")


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


def split_kwargs(
    kwargs: dict[str, Any], spec_keys: frozenset[str] = frozenset()
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(keras_base_kwargs, others)``; ``others`` go to the spec check (unknown -> TypeError).
    Base keys that are also spec parameters (``spec_keys``) are returned in both."""
    base = {k: v for k, v in kwargs.items() if k in KERAS_BASE_KWARGS}
    others = {k: v for k, v in kwargs.items() if k not in KERAS_BASE_KWARGS or k in spec_keys}
    return base, others


def variable_path(variable: Any) -> str:
    """The full name weight-decay patterns are matched against: ``variable.path`` (Keras 3),
    falling back to ``variable.name`` for plain ``tf.Variable`` objects."""
    path = getattr(variable, "path", None)
    if path:
        return str(path)
    return str(getattr(variable, "name", ""))


def matches_any(patterns: Iterable[str] | None, name: str) -> bool:
    """True when one of the regexes matches anywhere in ``name`` (``re.search``)."""
    return any(re.search(pattern, name) is not None for pattern in patterns or ())


def compute_dtype(variable_dtype: str) -> str:
    """The dtype the update math runs in: float32 for 16-bit variables, else the variable's."""
    return "float32" if variable_dtype in ("float16", "bfloat16") else variable_dtype


def as_list(value: Sequence[str] | None) -> list[str] | None:
    """A JSON-friendly copy of a pattern list (None stays None)."""
    return None if value is None else [str(v) for v in value]


def slot_name(variable: Any) -> str:
    """A variable-name prefix for optimizer state, derived from the model variable's path."""
    return variable_path(variable).replace("/", "_").replace(":", "_") or "var"


def numpy_value(value: Any) -> Any:
    """A NumPy copy of a variable or tensor (through a tensor: NumPy 2 warns on tf.Variable)."""
    numpy = getattr(value, "numpy", None)
    return numpy() if numpy is not None else keras.ops.convert_to_numpy(value)


class ReplicaSafeBuild:
    """Mixin: build the optimizer outside the replica function on the first ``apply``.

    Keras 3 builds an optimizer lazily inside the first ``apply``. Under ``tf.distribute`` that
    first call often happens in replica context inside a ``tf.function`` (transformers' own
    ``GradientAccumulator`` test does exactly this), where creating the state variables fails.
    This mixin moves the build to cross-replica context (``merge_call``) and out of the traced
    graph (``tf.init_scope``), so the variables are created once, mirrored, as if ``build`` had been
    called in ``strategy.scope()``.
    """

    def apply(self, grads: Any, trainable_variables: Any = None) -> Any:
        if not self.built and trainable_variables is not None:  # type: ignore[attr-defined]
            variables = list(trainable_variables)
            import tensorflow as tf

            replica = tf.distribute.get_replica_context()
            if tf.distribute.has_strategy() and replica is not None:
                replica.merge_call(lambda _strategy: self._build_eagerly(variables))
            trainable_variables = variables
        return super().apply(grads, trainable_variables)  # type: ignore[misc]

    def _build_eagerly(self, variables: list[Any]) -> None:
        import tensorflow as tf

        with tf.init_scope(), keras.name_scope(self.name, caller=self):  # type: ignore[attr-defined]
            self.build(variables)  # type: ignore[attr-defined]
