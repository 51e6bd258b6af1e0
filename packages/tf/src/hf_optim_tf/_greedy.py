"""The ``greedy`` schedule (transformers' ``GreedyLR``, transformers 5.23+) for Keras: a metric-stepped schedule.

Like :class:`~hf_optim_tf.PlateauSchedule`, the learning rate is a host-side state variable: :meth:`GreedySchedule.step`
computes the new lr from a metric with Python floats (the operations and order of transformers' GreedyLR), and the
traced optimizer step reads it. A Keras optimizer has one learning rate, so the schedule drives one lr ("one param
group"): ``min_lr``/``max_lr`` take a number or a list of one entry.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np

from ._metric_schedule import MetricSchedule, improved, untracked
from ._state_check import checked_value

__all__ = ["GreedySchedule", "get_greedy_schedule"]

#: state variables (checkpoint dependency names) and their dtypes; the window ones exist only with smooth=True
_STATE = {
    "lr": "float64",
    "best": "float64",
    "num_bad_epochs": "int64",
    "num_good_epochs": "int64",
    "cooldown_counter": "int64",
    "warmup_counter": "int64",
    "reset_start": "int64",
    "last_epoch": "int64",
}
_WINDOW = {"window": "float64", "window_count": "int64", "window_sum": "float64"}


def _bound(value: Any) -> float:
    """``min_lr``/``max_lr`` for the one lr of a Keras optimizer: a number, or a list of one entry (validated)."""
    return float(value[0]) if isinstance(value, (list, tuple)) else float(value)


def _plain(value: Any) -> Any:
    return [float(v) for v in value] if isinstance(value, (list, tuple)) else value


@keras.saving.register_keras_serializable(package="hf_optim")
class GreedySchedule(MetricSchedule):
    """transformers' ``greedy`` schedule (``GreedyLR``) for Keras: the lr follows a monitored metric.

    Call :meth:`step` with the metric after each evaluation, or add :meth:`callback` to ``model.fit`` (it steps
    at the end of every epoch with ``logs[monitor]``). With ``mode="min"`` a metric improves when it is lower than
    the best one so far by more than ``threshold`` (``threshold_mode="abs"``) or by more than ``threshold`` times
    the best (``"rel"``). More than ``patience`` improvements in a row divide the lr by ``factor`` (capped at
    ``max_lr``), then ``warmup`` metrics are ignored; more than ``patience`` other metrics in a row multiply it by
    ``factor`` (floored at ``min_lr``), then ``cooldown`` metrics are ignored. A change not larger than ``eps`` is
    skipped. After ``reset_start`` decreases that leave the lr at or below ``min_lr`` (an increase re-arms the
    count) the lr returns to ``learning_rate`` and the search starts over. With ``smooth=True`` the metric is first
    replaced by the mean of the last ``window_size`` metrics, kept as a float running sum (as transformers does).
    The lrs equal those of ``hf_optim_torch.GreedyLR`` and transformers' ``GreedyLR`` bit for bit (Python floats,
    same operations); the optimizer reads the float64 lr cast to floatx.

    State: ``lr``, ``best`` (float64), ``num_bad_epochs``, ``num_good_epochs``, ``cooldown_counter``,
    ``warmup_counter``, ``reset_start``, ``last_epoch`` (int64) and, with ``smooth=True``, the smoothing window
    ``window`` (float64, ``window_size`` slots, the oldest first), ``window_count`` and ``window_sum``: non-trainable
    variables and the schedule's checkpoint dependencies, so ``tf.train.Checkpoint`` of the schedule, or of an
    optimizer built on it, saves and restores it; it is also part of ``get_config`` (``.keras`` files resume).
    A restored state (config ``state`` or checkpoint) is checked as a whole before it is used: every variable
    present, counters non-negative integers, ``lr`` finite and >= 0, ``best`` not NaN, ``reset_start`` at most the
    ``reset_start`` argument, ``window_count`` at most ``window_size``; a checkpoint that does not fit changes
    nothing.

    Args:
        learning_rate: the starting learning rate (torch: the optimizer's lr); a reset returns to it.
        name: optional name (str or None).
        state: internal; the saved state when restoring from a config.
        **kwargs: the spec parameters of ``greedy`` (``mode``, ``factor``, ``patience``, ``threshold``,
            ``threshold_mode``, ``cooldown``, ``warmup``, ``min_lr``, ``max_lr``, ``eps``, ``verbose``, ``smooth``,
            ``window_size``, ``reset_start``; transformers' names and defaults).

    Raises:
        TypeError, ValueError: the spec's errors for bad arguments; a ``min_lr``/``max_lr`` list that is not one
            entry long; a ``state`` that does not fit (see above).
    """

    _SPEC_ID = "greedy"
    _VARIABLE_PREFIX = "greedy"
    _PARAM_GROUPS = 1

    @untracked
    def _create_state(self, resolved: Mapping[str, Any]) -> None:
        self.min_lr = _bound(resolved["min_lr"])
        self.max_lr = _bound(resolved["max_lr"])
        self.params = {key: _plain(value) for key, value in self.params.items()}
        self._before: tuple[int, dict[str, np.ndarray]] | None = None
        layout = dict(_STATE)
        if resolved["smooth"]:
            layout |= _WINDOW
        initial = self._initial()
        # The Python values are the state (JAX without x64 would keep float64 variables as float32); the variables
        # mirror them for tf.train.Checkpoint and for the traced optimizer step.
        self._host = {
            key: [] if key == "window" else (float if dtype == "float64" else int)(initial[key])
            for key, dtype in layout.items()
        }
        for key, dtype in layout.items():
            self._add_state(key, dtype, np.zeros(int(resolved["window_size"])) if key == "window" else initial[key])

    # ------------------------------------------------------------------ state

    def _worst(self) -> float:
        return math.inf if self._canonical["mode"] == "min" else -math.inf

    def _initial(self) -> dict[str, Any]:
        values: dict[str, Any] = {key: 0 for key in _STATE}
        values |= {"lr": self.learning_rate, "best": self._worst(), "reset_start": self._canonical["reset_start"]}
        if self._canonical["smooth"]:
            values |= {"window": [], "window_count": 0, "window_sum": 0.0}
        return values

    def _values(self) -> dict[str, Any]:
        """A copy of the state as Python values (the window as the list of its metrics, oldest first)."""
        return {key: list(value) if key == "window" else value for key, value in self._host.items()}

    def _read_variables(self) -> dict[str, Any]:
        """The state as the variables hold it (after a tf.train.Checkpoint restore wrote them)."""
        dtypes = _STATE | _WINDOW
        out: dict[str, Any] = {}
        for key, variable in self._state.items():
            if key != "window":
                out[key] = float(variable.numpy()) if dtypes[key] == "float64" else int(variable.numpy())
        if "window" in self._state:
            out["window"] = [float(v) for v in self._state["window"].numpy()[: out.get("window_count", 0)]]
        return out

    def _assign(self, values: Mapping[str, Any]) -> None:
        dtypes = _STATE | _WINDOW
        for key, variable in self._state.items():
            value = values[key]
            if key == "window":
                self._host[key] = [float(v) for v in value]
                padded = np.zeros(variable.shape, dtype="float64")
                padded[: len(value)] = value
                value = padded
            else:
                self._host[key] = float(value) if dtypes[key] == "float64" else int(value)
            variable.assign(value)

    def _check_whole(self, values: Mapping[str, Any], source: str) -> None:
        """What single values cannot show: ``reset_start`` <= its argument, the window within ``window_size``."""
        name = type(self).__name__
        original = int(self._canonical["reset_start"])
        if int(values["reset_start"]) > original:
            raise ValueError(
                f"{name} {source} `reset_start` counts down from the argument reset_start={original}. "
                f"Received: {values['reset_start']}"
            )
        if "window_count" in values and int(values["window_count"]) > int(self._canonical["window_size"]):
            raise ValueError(
                f"{name} {source} `window_count` must be at most window_size={self._canonical['window_size']}. "
                f"Received: {values['window_count']}"
            )

    def _stage_restored(self, variable: Any, value: Any) -> None:
        # StagedRestore checks each value and commits them together; the whole state is checked right after that
        # commit and the previous values come back if it does not fit.
        uid = variable._update_uid
        if self._before is None or self._before[0] != uid:
            self._before = (uid, {key: np.asarray(v.numpy()) for key, v in self._state.items()})
        try:
            super()._stage_restored(variable, value)
        except Exception:
            self._before = None
            raise
        if getattr(self, "_hf_restore", None) is not None:  # more values of this restore to come
            return
        before, self._before = self._before[1], None
        restored = self._read_variables()
        try:
            self._check_whole(restored, "checkpoint")
        except ValueError:
            for key, previous in before.items():
                self._state[key].assign(previous)
            raise
        self._host = restored

    def _set_state(self, state: object) -> None:
        """Check a saved ``state`` dict (every value) and set it; nothing is set if any value is wrong."""
        keys = list(self._state)
        if "window" in keys:  # the config holds the window as a list and no count
            keys.remove("window_count")
        saved = self._check_state_keys(state, keys)
        slots = {slot.key: slot for slot in self._restore_slots()}
        values: dict[str, Any] = {}
        name = type(self).__name__
        for key in keys:  # every value is checked; the state takes the given values (not a float32 copy on JAX)
            if key == "window":
                window = saved["window"]
                if not isinstance(window, (list, tuple)) or len(window) > int(self._canonical["window_size"]):
                    raise ValueError(
                        f"{name} state['window'] must be a list of at most window_size="
                        f"{self._canonical['window_size']} metrics. Received: {window!r:.120}"
                    )
                padded = [*window, *[0.0] * (int(self._canonical["window_size"]) - len(window))]
                checked_value(slots["window"], padded, "state['window']", name)
                values["window"], values["window_count"] = list(window), len(window)
                continue
            checked_value(slots[key], saved[key], f"state[{key!r}]", name)
            values[key] = saved[key]
        self._check_whole(values, "state")
        self._assign(values)

    def get_state(self) -> dict[str, Any]:
        """The current state as plain Python values (what ``get_config()["state"]`` holds)."""
        values = self._values()
        values.pop("window_count", None)
        return values

    @property
    def lr(self) -> float:
        """The current learning rate (Python float; the optimizer reads it cast to floatx)."""
        return float(self._host["lr"])

    @property
    def best(self) -> float:
        """The best (smoothed) metric so far (``inf`` / ``-inf`` before the first one and after a reset)."""
        return float(self._host["best"])

    # ------------------------------------------------------------------ stepping

    def _say(self, message: str) -> None:
        if self._canonical["verbose"]:
            print(message)

    def step(self, metric: Any) -> float:
        """Record one metric value (a number or a scalar tensor); returns the learning rate it leads to."""
        p = self._canonical
        s = self._values()
        current = float(metric)
        if p["smooth"]:
            s["window"].append(current)
            s["window_sum"] += current
            if len(s["window"]) > p["window_size"]:
                s["window_sum"] -= s["window"].pop(0)
            current = s["window_sum"] / len(s["window"])
        s["last_epoch"] += 1
        if s["cooldown_counter"] > 0:
            s["cooldown_counter"] -= 1
            s["num_bad_epochs"] = s["num_good_epochs"] = 0
        elif s["warmup_counter"] > 0:
            s["warmup_counter"] -= 1
            s["num_bad_epochs"] = s["num_good_epochs"] = 0
        else:
            if improved(p, current, s["best"]):
                s["best"], s["num_bad_epochs"] = current, 0
                s["num_good_epochs"] += 1
            else:
                s["num_bad_epochs"] += 1
                s["num_good_epochs"] = 0
            if s["num_good_epochs"] > p["patience"]:
                raised = min(s["lr"] / p["factor"], self.max_lr)
                if raised - s["lr"] > p["eps"]:
                    s["lr"] = raised
                    self._say(f"GreedySchedule epoch {s['last_epoch']}: raising the learning rate to {raised:.4e}.")
                s["reset_start"] = p["reset_start"]
                s["warmup_counter"], s["num_good_epochs"] = p["warmup"], 0
            elif s["num_bad_epochs"] > p["patience"]:
                lowered = max(s["lr"] * p["factor"], self.min_lr)
                if s["lr"] - lowered > p["eps"]:
                    s["lr"] = lowered
                    self._say(f"GreedySchedule epoch {s['last_epoch']}: lowering the learning rate to {lowered:.4e}.")
                if not s["lr"] > self.min_lr:
                    s["reset_start"] -= 1
                    if s["reset_start"] <= 0:
                        s |= {key: value for key, value in self._initial().items() if key != "last_epoch"}
                        self._say("GreedySchedule: the learning rate is back at its initial value.")
                s["cooldown_counter"], s["num_bad_epochs"] = p["cooldown"], 0  # also after a reset
        if p["smooth"]:
            s["window_count"] = len(s["window"])
        self._assign(s)
        return float(s["lr"])

    def get_config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate, "name": self.name, "state": self.get_state(), **self.params}


def get_greedy_schedule(learning_rate: float, **kwargs: Any) -> GreedySchedule:
    """Raise the lr after improving metrics and lower it after others (transformers ``get_greedy_schedule``).

    Returns a :class:`GreedySchedule`; step it with ``schedule.step(metric)`` or add
    ``schedule.callback("val_loss")`` to ``model.fit``.
    """
    return GreedySchedule(learning_rate, **kwargs)
