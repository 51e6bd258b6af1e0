"""The ``greedy`` schedule (transformers' ``GreedyLR``, transformers 5.23+) for torch, with a checked resume.

transformers' GreedyLR is a plain class; the Trainer recognises it, and torch's ``ReduceLROnPlateau``, as the
schedulers it steps with the evaluation metric instead of once per training step. :class:`GreedyLR` here
subclasses ``ReduceLROnPlateau`` (without using any of its logic) so that the Trainer, and other loops that test for
``ReduceLROnPlateau``, step it with the metric too. Its ``state_dict`` has exactly the keys and values of
transformers' GreedyLR, so a checkpoint of either loads into the other.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import hf_optim_spec
import torch
from hf_optim_spec._schedules import metric_improved
from torch.optim import Optimizer
from torch.optim.lr_scheduler import ReduceLROnPlateau

from ._arguments import check_optimizer
from ._state_check import check_count, check_real

__all__ = ["GreedyLR", "get_greedy_schedule", "greedy_schedule"]

#: the keys of transformers' GreedyLR.state_dict(), in its order (plus ``_streaming_avg`` while smoothing)
_STATE_KEYS = tuple(
    "factor min_lrs max_lrs patience verbose cooldown warmup cooldown_counter warmup_counter mode threshold "
    "threshold_mode best num_bad_epochs num_good_epochs eps last_epoch smooth window_size reset_start "
    "reset_start_original _last_lr _init_lrs".split()
)
_WINDOW_KEY = "_streaming_avg"
_WINDOW_KEYS = ("window_size", "values", "sum")


def _per_group(value: Any, groups: int) -> list[float]:
    """One bound per param group: a number is shared, a list (or tuple; its length is validated) has one per group."""
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    return [float(value)] * groups


def _lr_of(group: Mapping[str, Any]) -> float:
    lr = group["lr"]
    return float(lr.item()) if isinstance(lr, torch.Tensor) else float(lr)


def _set_lr(group: dict[str, Any], value: float) -> None:
    """Set a group's lr; a tensor lr is filled in place (a compiled step keeps its graph)."""
    if isinstance(group["lr"], torch.Tensor):
        group["lr"].fill_(value)
    else:
        group["lr"] = value


class GreedyLR(ReduceLROnPlateau):
    """Raise the lr after a run of improving metrics and lower it after a run of others (transformers' ``GreedyLR``).

    Call ``scheduler.step(metric)`` after each evaluation. With ``mode="min"`` a metric improves when it is lower
    than the best one so far by more than ``threshold`` (``threshold_mode="abs"``) or by more than ``threshold``
    times the best (``"rel"``). More than ``patience`` improvements in a row divide every group's lr by ``factor``
    (capped at ``max_lr``), then ``warmup`` metrics are ignored; more than ``patience`` other metrics in a row
    multiply it by ``factor`` (floored at ``min_lr``), then ``cooldown`` metrics are ignored. A change not larger
    than ``eps`` is skipped. After ``reset_start`` decreases that leave every group at or below its ``min_lr``
    (an increase re-arms the count), every lr returns to its initial value and the search starts over. With
    ``smooth=True`` the metric is first replaced by the mean of the last ``window_size`` metrics, kept as a float
    running sum exactly as transformers keeps it.

    Arguments, defaults and errors are those of the ``greedy`` spec (``hf_optim_spec.get("greedy")``); ``min_lr``
    and ``max_lr`` take one number or a list with one entry per param group. The lrs are Python floats, computed
    in the same order as transformers computes them, so the sequence is the same bit for bit. A group whose lr is
    a tensor has it filled in place (a float32 tensor rounds each new lr to float32, as it would any lr).

    ``state_dict()`` holds transformers' keys; ``load_state_dict`` checks the whole state against this optimizer
    and the spec first (types, ranges, one lr per param group, the smoothing window) and changes nothing when it
    does not fit, then restores the state and the groups' lrs.

    Raises:
        TypeError: ``optimizer`` is not a ``torch.optim.Optimizer``; an argument of the wrong type.
        ValueError: the spec's errors (``factor >= 1``, unknown ``mode``/``threshold_mode``, negative counts, ...);
            a ``min_lr``/``max_lr`` list whose length is not the number of param groups.
    """

    def __init__(
        self,
        optimizer: Optimizer,
        mode: str = "min",
        factor: float = 0.95,
        patience: int = 10,
        threshold: float = 1e-6,
        threshold_mode: str = "abs",
        cooldown: int = 0,
        warmup: int = 0,
        min_lr: float | Sequence[float] = 1e-3,
        max_lr: float | Sequence[float] = 1.0,
        eps: float = 1e-8,
        verbose: bool = False,
        smooth: bool = False,
        window_size: int = 50,
        reset_start: int = 500,
    ) -> None:
        check_optimizer(optimizer)
        arguments = {key: value for key, value in locals().items() if key not in ("self", "optimizer")}
        self._start(optimizer, _validated(optimizer, arguments))

    @classmethod
    def _from_validated(cls, optimizer: Optimizer, arguments: Mapping[str, Any]) -> GreedyLR:
        """The scheduler of arguments that the ``greedy`` spec has just checked (no second check)."""
        scheduler = cls.__new__(cls)
        scheduler._start(optimizer, arguments)
        return scheduler

    def _start(self, optimizer: Optimizer, arguments: Mapping[str, Any]) -> None:
        # ReduceLROnPlateau.__init__ is not called on purpose: the class is its base only for isinstance checks.
        groups = len(optimizer.param_groups)
        self.min_lrs = _per_group(arguments["min_lr"], groups)
        self.max_lrs = _per_group(arguments["max_lr"], groups)
        self.optimizer = optimizer
        self.mode = arguments["mode"]
        self.factor = arguments["factor"]
        self.patience = arguments["patience"]
        self.threshold = arguments["threshold"]
        self.threshold_mode = arguments["threshold_mode"]
        self.cooldown = arguments["cooldown"]
        self.warmup = arguments["warmup"]
        self.eps = arguments["eps"]
        self.verbose = arguments["verbose"]
        self.smooth = arguments["smooth"]
        self.window_size = arguments["window_size"]
        self.reset_start = self.reset_start_original = arguments["reset_start"]
        self.cooldown_counter = 0
        self.warmup_counter = 0
        self.last_epoch = 0
        self._init_lrs = [_lr_of(group) for group in optimizer.param_groups]
        self._last_lr = list(self._init_lrs)
        self.best = self._worst()
        self.num_bad_epochs = 0
        self.num_good_epochs = 0
        self._window: list[float] = []
        self._window_sum = 0.0

    # ------------------------------------------------------------------ stepping

    def _worst(self) -> float:
        return math.inf if self.mode == "min" else -math.inf

    def is_better(self, current: float, best: float) -> bool:
        """Whether ``current`` improves on ``best`` by more than the threshold."""
        return metric_improved(self.mode, self.threshold_mode, self.threshold, current, best)

    @property
    def in_cooldown(self) -> bool:
        """True while metrics are ignored after a decrease."""
        return self.cooldown_counter > 0

    def _smoothed(self, value: float) -> float:
        # the running sum gains the new value first and then loses the oldest one: never re-added from the window
        self._window.append(value)
        self._window_sum += value
        if len(self._window) > self.window_size:
            self._window_sum -= self._window.pop(0)
        return self._window_sum / len(self._window)

    def step(self, metrics: Any, epoch: int | None = None) -> None:  # type: ignore[override]
        """Record one metric value (a number or a one-element tensor) and adjust the lrs.

        Args:
            metrics: the monitored metric (e.g. the evaluation loss).
            epoch: the epoch number to record; by default the previous one plus one (it only labels the
                ``verbose`` output, as in transformers).
        """
        groups = self.optimizer.param_groups
        if len(groups) != len(self.min_lrs):
            raise ValueError(
                f"GreedyLR was built for {len(self.min_lrs)} param groups; the optimizer has {len(groups)} now "
                "(a param group added later has no min_lr/max_lr)"
            )
        current = float(metrics)
        if self.smooth:
            current = self._smoothed(current)
        self.last_epoch = self.last_epoch + 1 if epoch is None else epoch
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = self.num_good_epochs = 0
        elif self.warmup_counter > 0:
            self.warmup_counter -= 1
            self.num_bad_epochs = self.num_good_epochs = 0
        else:
            if self.is_better(current, self.best):
                self.best = current
                self.num_bad_epochs = 0
                self.num_good_epochs += 1
            else:
                self.num_bad_epochs += 1
                self.num_good_epochs = 0
            if self.num_good_epochs > self.patience:
                self._increase_lr(self.last_epoch)
                self.warmup_counter = self.warmup
                self.num_good_epochs = 0
            elif self.num_bad_epochs > self.patience:
                self._reduce_lr(self.last_epoch)
                self.cooldown_counter = self.cooldown  # also after a reset
                self.num_bad_epochs = 0
        self._last_lr = [_lr_of(group) for group in groups]

    def _announce(self, epoch: int, index: int, verb: str, lr: float) -> None:
        if self.verbose:
            print(f"GreedyLR epoch {epoch}: {verb} the learning rate of param group {index} to {lr:.4e}.")

    def _increase_lr(self, epoch: int) -> None:
        for index, group in enumerate(self.optimizer.param_groups):
            old = _lr_of(group)
            new = min(old / self.factor, self.max_lrs[index])
            if new - old > self.eps:
                _set_lr(group, new)
                self._announce(epoch, index, "raising", new)
        self.reset_start = self.reset_start_original

    def _reduce_lr(self, epoch: int) -> None:
        floored = True
        for index, group in enumerate(self.optimizer.param_groups):
            old = _lr_of(group)
            new = max(old * self.factor, self.min_lrs[index])
            if old - new > self.eps:
                _set_lr(group, new)
                self._announce(epoch, index, "lowering", new)
            if _lr_of(group) > self.min_lrs[index]:
                floored = False
        if floored:
            self.reset_start -= 1
            if self.reset_start <= 0:
                self._reset()

    def _reset(self) -> None:
        """Every lr back to its initial value; best metric, streaks, counters and smoothing window afresh."""
        for group, lr in zip(self.optimizer.param_groups, self._init_lrs):
            _set_lr(group, lr)
        self.best = self._worst()
        self.num_bad_epochs = self.num_good_epochs = 0
        self.cooldown_counter = self.warmup_counter = 0
        self.reset_start = self.reset_start_original
        self._window, self._window_sum = [], 0.0
        if self.verbose:
            print("GreedyLR: every learning rate is back at its initial value.")

    def get_last_lr(self) -> list[float]:
        """The lr of every param group after the last ``step``."""
        return list(self._last_lr)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """The scheduler state: transformers' GreedyLR keys (``_streaming_avg`` only while smoothing), plain data."""
        state: dict[str, Any] = {key: getattr(self, key) for key in _STATE_KEYS}
        for key in ("min_lrs", "max_lrs", "_last_lr", "_init_lrs"):
            state[key] = list(state[key])
        if self.smooth:
            state[_WINDOW_KEY] = {
                "window_size": self.window_size,
                "values": list(self._window),
                "sum": self._window_sum,
            }
        return state

    def check_state_dict(self, state_dict: object) -> None:
        """Raise a ValueError/TypeError naming the field when ``state_dict`` does not fit this scheduler."""
        name = type(self).__name__
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"{name} state_dict must be a dict; got {type(state_dict).__name__}")
        smooth = state_dict.get("smooth")
        allowed = {*_STATE_KEYS, _WINDOW_KEY}
        missing = [key for key in _STATE_KEYS if key not in state_dict]
        if smooth is True and _WINDOW_KEY not in state_dict:
            missing.append(_WINDOW_KEY)
        unknown = sorted(str(key) for key in state_dict if key not in allowed)
        if smooth is not True and _WINDOW_KEY in state_dict:
            unknown.append(_WINDOW_KEY)
        if missing or unknown:
            raise ValueError(
                f"{name} state_dict: missing {missing}, unexpected {unknown} (the state of another scheduler?)"
            )
        arguments = {
            key: state_dict[key]
            for key in ("mode", "factor", "patience", "threshold", "threshold_mode", "cooldown", "warmup", "eps")
        }
        arguments |= {key: state_dict[key] for key in ("verbose", "smooth", "window_size")}
        arguments |= {
            "min_lr": state_dict["min_lrs"],
            "max_lr": state_dict["max_lrs"],
            "reset_start": state_dict["reset_start_original"],
        }
        groups = len(self.optimizer.param_groups)
        try:
            hf_optim_spec.validate("greedy", arguments, framework="torch", param_groups=groups)
        except (TypeError, ValueError) as error:
            raise type(error)(f"{name} state_dict: {error}") from None
        for key in ("min_lrs", "max_lrs", "_last_lr", "_init_lrs"):
            values = state_dict[key]
            if not isinstance(values, (list, tuple)) or len(values) != groups:
                raise ValueError(
                    f"{name} state_dict['{key}'] must be a list of {groups} learning rates (one per param group); "
                    f"got {values!r:.80}"
                )
            for index, value in enumerate(values):
                number = check_real(value, f"{name} state_dict['{key}'][{index}]")
                if not (math.isfinite(number) and number >= 0):
                    raise ValueError(f"{name} state_dict['{key}'][{index}] must be finite and >= 0; got {value!r}")
        for key in ("cooldown_counter", "warmup_counter", "num_bad_epochs", "num_good_epochs"):
            check_count(state_dict[key], f"{name} state_dict['{key}']")
        check_count(state_dict["last_epoch"], f"{name} state_dict['last_epoch']", minimum=-1)
        original = int(state_dict["reset_start_original"])
        left = check_count(state_dict["reset_start"], f"{name} state_dict['reset_start']")
        if left > original:
            raise ValueError(
                f"{name} state_dict['reset_start'] counts down from reset_start_original={original}; got {left}"
            )
        if math.isnan(check_real(state_dict["best"], f"{name} state_dict['best']")):
            raise ValueError(f"{name} state_dict['best'] must be a number, not NaN")
        if smooth is True:
            self._check_window(state_dict[_WINDOW_KEY], int(state_dict["window_size"]))

    def _check_window(self, window: object, window_size: int) -> None:
        where = f"{type(self).__name__} state_dict['{_WINDOW_KEY}']"
        if not isinstance(window, Mapping) or set(window) != set(_WINDOW_KEYS):
            raise ValueError(f"{where} must be a dict with the keys {list(_WINDOW_KEYS)}; got {window!r:.120}")
        if check_count(window["window_size"], f"{where}['window_size']") != window_size:
            raise ValueError(
                f"{where}['window_size'] must equal state_dict['window_size']={window_size}; got {window['window_size']!r}"
            )
        values = window["values"]
        if not isinstance(values, (list, tuple)) or len(values) > window_size:
            raise ValueError(f"{where}['values'] must be a list of at most {window_size} metrics; got {values!r:.120}")
        for index, value in enumerate(values):
            check_real(value, f"{where}['values'][{index}]")
        check_real(window["sum"], f"{where}['sum']")

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore a state (ours or transformers' GreedyLR's) after checking all of it; sets the groups' lrs.

        Raises:
            ValueError, TypeError: the state does not fit (see :meth:`check_state_dict`); nothing has changed.
        """
        self.check_state_dict(state_dict)
        for key in _STATE_KEYS:
            value = state_dict[key]
            if key in ("min_lrs", "max_lrs", "_last_lr", "_init_lrs"):
                value = [check_real(v, key) for v in value]
            elif isinstance(value, torch.Tensor):
                value = value.item()
            setattr(self, key, value)
        if self.smooth:
            window = state_dict[_WINDOW_KEY]
            self._window = [check_real(v, "values") for v in window["values"]]
            self._window_sum = check_real(window["sum"], "sum")
        else:
            self._window, self._window_sum = [], 0.0
        for group, lr in zip(self.optimizer.param_groups, self._last_lr):
            _set_lr(group, lr)


def _validated(optimizer: Optimizer, arguments: Mapping[str, Any]) -> dict[str, Any]:
    return hf_optim_spec.validate("greedy", arguments, framework="torch", param_groups=len(optimizer.param_groups))


def greedy_schedule(optimizer: Optimizer, params: Mapping[str, Any]) -> GreedyLR:
    """:class:`GreedyLR` from a dict of arguments: the spec's messages (also for an unknown argument), one check."""
    check_optimizer(optimizer)
    return GreedyLR._from_validated(optimizer, _validated(optimizer, params))


def get_greedy_schedule(optimizer: Optimizer, **kwargs: Any) -> GreedyLR:
    return greedy_schedule(optimizer, kwargs)
