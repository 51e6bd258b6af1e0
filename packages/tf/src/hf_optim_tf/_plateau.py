"""transformers' ``reduce_lr_on_plateau`` (torch ``ReduceLROnPlateau``) for Keras: a metric-stepped schedule."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import keras

from ._metric_schedule import MetricSchedule, improved, untracked
from ._state_check import checked_value

__all__ = ["PlateauSchedule", "get_reduce_on_plateau_schedule"]

_PLATEAU_STATE = ("lr", "best", "num_bad_epochs", "cooldown_counter")


@keras.saving.register_keras_serializable(package="hf_optim")
class PlateauSchedule(MetricSchedule):
    """transformers' ``reduce_lr_on_plateau`` (torch ``ReduceLROnPlateau``) for Keras.

    A stateful schedule: :meth:`step` updates the learning rate on the host from a metric value,
    with torch's rules (``mode``, ``factor``, ``patience``, ``threshold``, ``threshold_mode``,
    ``cooldown``, ``min_lr``, ``eps``), and the traced optimizer step reads it. Pass it as the
    optimizer's ``learning_rate`` and either call ``schedule.step(metric)`` after each evaluation
    or add ``schedule.callback(monitor)`` to ``model.fit`` (it steps at the end of every epoch).

    State: ``lr`` (float64), ``best`` (float64), ``num_bad_epochs`` and ``cooldown_counter``
    (int64) are non-trainable variables, and the schedule is a TensorFlow trackable object whose
    checkpoint dependencies are exactly those four names. So ``tf.train.Checkpoint(schedule=s)``,
    and ``tf.train.Checkpoint(optimizer=opt)`` for an optimizer built on it (the optimizer tracks
    its learning-rate schedule), save and restore the state, and a restored run continues bit for
    bit. The state is also part of ``get_config``, so a saved ``.keras`` model resumes where it
    stopped. The new lr is computed with Python floats (as torch does), kept in float64 and cast
    to floatx when the optimizer reads it.

    A restored state (``state`` of a config, or the four variables from a ``tf.train.Checkpoint``) is checked
    before any of it is set: ``lr`` finite and >= 0, ``best`` not NaN (``inf``/``-inf`` before the first metric),
    ``num_bad_epochs`` and ``cooldown_counter`` non-negative integers; a checkpoint must hold all four and
    nothing else (``hf_optim_tf._state_check``).

    Args:
        learning_rate: the starting learning rate (torch: the optimizer's lr).
        name: optional name (str or None).
        state: internal; the saved state when restoring from a config.
        **kwargs: the spec parameters of ``reduce_lr_on_plateau`` (torch spelling).

    Raises:
        TypeError, ValueError: the spec's uniform errors for bad arguments; a ``state`` that is not a dict of the
            four values, or a value that breaks the rules above.
    """

    _SPEC_ID = "reduce_lr_on_plateau"
    _VARIABLE_PREFIX = "plateau"

    @untracked
    def _create_state(self, resolved: Mapping[str, Any]) -> None:
        initial = {
            "lr": ("float64", self.learning_rate),
            "best": ("float64", math.inf if resolved["mode"] == "min" else -math.inf),
            "num_bad_epochs": ("int64", 0),
            "cooldown_counter": ("int64", 0),
        }
        # Off TensorFlow the variables are written only here (no tf.train.Checkpoint), and JAX without x64 keeps
        # float64 as float32: the host copy keeps torch's Python-float state exactly, the variables mirror it.
        self._host: dict[str, Any] | None = None if keras.backend.backend() == "tensorflow" else {}
        for key, (dtype, value) in initial.items():
            self._add_state(key, dtype, value)
            if self._host is not None:
                self._host[key] = value

    def _set_state(self, state: object) -> None:
        """Check a saved ``state`` dict (all four values) and set it; nothing is set if any value is wrong."""
        saved = self._check_state_keys(state, _PLATEAU_STATE)
        checked = [
            (slot.variable, checked_value(slot, saved[slot.key], f"state[{slot.key!r}]", type(self).__name__))
            for slot in self._restore_slots()
        ]
        for variable, value in checked:
            variable.assign(value)
        if self._host is not None:
            self._host.update({slot.key: value for slot, (_, value) in zip(self._restore_slots(), checked)})

    @property
    def lr(self) -> float:
        """The current learning rate (Python float; the optimizer reads it cast to floatx)."""
        return float(self._read("lr"))

    @property
    def best(self) -> float:
        """The best metric seen so far (``inf`` / ``-inf`` before the first one)."""
        return float(self._read("best"))

    @property
    def num_bad_epochs(self) -> int:
        """Metrics in a row that did not improve on ``best`` (reset by a reduction and by cooldown)."""
        return int(self._read("num_bad_epochs"))

    @property
    def cooldown_counter(self) -> int:
        """Steps of cooldown left after the last reduction."""
        return int(self._read("cooldown_counter"))

    def step(self, metric: Any) -> float:
        """Record one metric value; returns the (possibly reduced) learning rate."""
        p = self._canonical
        value = float(metric)
        lr, best = self.lr, self.best
        num_bad_epochs, cooldown_counter = self.num_bad_epochs, self.cooldown_counter
        if improved(p, value, best):
            best, num_bad_epochs = value, 0
        else:
            num_bad_epochs += 1
        if cooldown_counter > 0:
            cooldown_counter -= 1
            num_bad_epochs = 0
        if num_bad_epochs > p["patience"]:
            reduced = max(lr * p["factor"], p["min_lr"])
            if lr - reduced > p["eps"]:
                lr = reduced
            cooldown_counter, num_bad_epochs = p["cooldown"], 0
        new = {"lr": lr, "best": best, "num_bad_epochs": num_bad_epochs, "cooldown_counter": cooldown_counter}
        for key, variable in self._state.items():
            variable.assign(new[key])
        if self._host is not None:
            self._host.update(new)
        return lr

    def _read(self, key: str) -> Any:
        if self._host is not None:
            return self._host[key]
        return self._state[key].numpy()

    def get_config(self) -> dict[str, Any]:
        return {
            "learning_rate": self.learning_rate,
            "name": self.name,
            "state": {
                "lr": self.lr,
                "best": self.best,
                "num_bad_epochs": self.num_bad_epochs,
                "cooldown_counter": self.cooldown_counter,
            },
            **self.params,
        }


def get_reduce_on_plateau_schedule(learning_rate: float, **kwargs: Any) -> PlateauSchedule:
    """Reduce the lr when a metric stops improving (``get_reduce_on_plateau_schedule``).

    Returns a :class:`PlateauSchedule`; step it with ``schedule.step(metric)`` or add
    ``schedule.callback("val_loss")`` to ``model.fit``.
    """
    return PlateauSchedule(learning_rate, **kwargs)
