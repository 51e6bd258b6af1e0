"""What the metric-stepped Keras schedules (:class:`PlateauSchedule`, :class:`GreedySchedule`) share.

Their learning rate is host-side state that :meth:`step` updates from a metric with Python floats, held in
non-trainable variables that the traced optimizer step reads (:func:`metric_lr`) and that ``tf.train.Checkpoint``
saves (the schedule is a TensorFlow trackable on the TensorFlow backend). :class:`MetricSchedule` holds the common
construction (argument checks, state variables), the checkpoint slots, the Keras callback and ``from_config``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import hf_optim_spec as hs
import keras
from hf_optim_spec._schedules import metric_improved
from keras import ops

from ._schedules import checked_config, checked_learning_rate, checked_name, tf_params
from ._staged_restore import StagedRestore
from ._state_check import StateSlot

__all__ = ["MetricSchedule", "improved", "metric_lr", "untracked"]

if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    # A TF trackable: tf.train.Checkpoint saves and restores the schedule's state variables.
    _Trackable = tf.__internal__.tracking.AutoTrackable
    untracked = tf.__internal__.tracking.no_automatic_dependency_tracking
else:

    class _Trackable:  # type: ignore[no-redef]
        """Off TensorFlow there is no ``tf.train.Checkpoint``: the state lives in ``get_config`` (``.keras``)."""

        def _track_trackable(self, trackable: Any, name: str) -> Any:
            return trackable

    def untracked(method: Any) -> Any:  # type: ignore[no-redef]
        return method


def metric_lr(schedule: Any) -> Any:
    """The current lr of a metric-stepped schedule (``schedule.lr``, held in ``schedule._state["lr"]``) as a tensor.

    Keras' JAX trainer compiles the step with the optimizer's variables as its state; a schedule's own state is not
    among them, so a plain read would freeze the lr of the first trace. On JAX a host callback reads it every step.
    """
    if keras.backend.backend() == "jax":
        import jax
        import numpy as np
        from jax.experimental import io_callback

        dtype = jax.dtypes.canonicalize_dtype(keras.config.floatx())
        return io_callback(lambda: np.asarray(schedule.lr, dtype), jax.ShapeDtypeStruct((), dtype), ordered=False)
    return ops.cast(schedule._state["lr"], keras.config.floatx())


def improved(arguments: Mapping[str, Any], metric: float, best: float) -> bool:
    """Whether ``metric`` improves on ``best`` under the schedule's checked ``arguments`` (mode and threshold)."""
    return metric_improved(arguments["mode"], arguments["threshold_mode"], arguments["threshold"], metric, best)


class MetricSchedule(StagedRestore, keras.optimizers.schedules.LearningRateSchedule, _Trackable):
    """The base of a schedule stepped with a metric: checked arguments, state variables, callback, config.

    A subclass sets ``_SPEC_ID``, ``_VARIABLE_PREFIX`` (and ``_PARAM_GROUPS`` when the spec has per-group bounds)
    and creates its state variables in :meth:`_create_state` (with :meth:`_add_state`).

    Args:
        learning_rate: the starting learning rate (torch: the optimizer's lr).
        name: optional name (str or None).
        state: internal; the saved state when restoring from a config (checked, then set).
        **kwargs: the spec parameters of the schedule (torch spelling).
    """

    _SPEC_ID = ""
    _VARIABLE_PREFIX = ""
    _PARAM_GROUPS: int | None = None

    @untracked
    def __init__(
        self,
        learning_rate: float,
        name: str | None = None,
        state: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        spec = hs.get(self._SPEC_ID)
        rate = checked_learning_rate(learning_rate)
        resolved = hs.validate(spec, kwargs, framework="tf", base_lr=rate, param_groups=self._PARAM_GROUPS)
        self.learning_rate = rate
        self.name = checked_name(name)
        self._canonical = resolved
        self.params = tf_params(spec, resolved)
        self._state: dict[str, Any] = {}
        self._create_state(resolved)
        if state is not None:
            self._set_state(state)

    def _create_state(self, arguments: Mapping[str, Any]) -> None:
        """Create the state variables (:meth:`_add_state`) for the checked ``arguments`` (canonical names)."""
        raise NotImplementedError

    def _set_state(self, state: object) -> None:
        """Check a config's saved ``state`` as a whole and set it; nothing is set if any value is wrong."""
        raise NotImplementedError

    @untracked
    def _add_state(self, key: str, dtype: str, value: Any) -> Any:
        """A non-trainable state variable, tracked under ``key`` (a checkpoint dependency) and restored checked."""
        name = f"{self._VARIABLE_PREFIX}_{key}"
        variable = keras.Variable(value, dtype=dtype, trainable=False, autocast=False, name=name)
        self._state[key] = variable
        self._hook_restore(variable)  # before TF tracks it: tracking may restore it (a deferred restore)
        self._track_trackable(variable, name=key)
        return variable

    def _restore_slots(self) -> list[StateSlot]:
        return [
            StateSlot(index, variable, key, label="state variable", mirror=True)
            for index, (key, variable) in enumerate(self._state.items())
        ]

    def _check_state_keys(self, state: object, keys: Sequence[str]) -> Mapping[str, Any]:
        """``state`` (a config's saved state) as a dict holding exactly ``keys``."""
        if not isinstance(state, Mapping):
            raise TypeError(
                f"Argument `state` must be a dict with {', '.join(keys)}. Received: state={state!r} "
                f"(of type {type(state).__name__})"
            )
        unknown = [str(key) for key in state if key not in keys]
        missing = [key for key in keys if key not in state]
        if unknown or missing:
            raise TypeError(
                f"Argument `state` must hold exactly {', '.join(keys)}. Received: missing {missing}, unknown {unknown}"
            )
        return state

    @property
    def variables(self) -> list[Any]:
        """The state variables, in the order of the class docstring."""
        return list(self._state.values())

    def callback(self, monitor: str = "val_loss") -> keras.callbacks.Callback:
        """A Keras callback that calls :meth:`step` with ``logs[monitor]`` after every epoch."""
        return _MetricCallback(self, monitor)

    def __call__(self, step: Any) -> Any:
        return metric_lr(self)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Any:
        """The schedule of a :meth:`get_config` dict, its state checked (see the class docstring)."""
        return cls(**checked_config(cls, config))


class _MetricCallback(keras.callbacks.Callback):
    def __init__(self, schedule: Any, monitor: str) -> None:
        super().__init__()
        self.schedule = schedule
        self.monitor = monitor

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        logs = logs or {}
        if self.monitor not in logs:
            name = type(self.schedule).__name__
            raise KeyError(f"{name} monitors `{self.monitor}`, which is not in the logs: {sorted(logs)}")
        self.schedule.step(logs[self.monitor])
