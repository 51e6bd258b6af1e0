"""float64 reference of ``greedy`` (transformers' ``GreedyLR``, added in transformers 5.23).

The schedule is driven by a monitored metric, so it has no closed form. Each ``step(metric)``:

1. optionally smooths the metric: the value joins a window of at most ``window_size`` values; a float running
   sum gains the new value and then (when the window overflows) loses the oldest one, and the smoothed metric is
   that running sum divided by the number of values in the window. The running sum is kept as it is, never
   re-added from the window, so rounding accumulates exactly as it does in transformers;
2. while a cooldown (after a decrease) or a warmup (after an increase) is running, counts it down, clears both
   streak counters and looks at nothing else;
3. otherwise compares the metric with the best one (``threshold``/``threshold_mode``): an improvement extends the
   good streak and ends the bad one, anything else the other way round;
4. a good streak longer than ``patience`` raises every group's lr to ``min(lr / factor, max_lr)`` (when that
   grows it by more than ``eps``), starts the warmup and re-arms ``reset_start``; a bad streak longer than
   ``patience`` lowers it to ``max(lr * factor, min_lr)`` (when that shrinks it by more than ``eps``) and starts
   the cooldown. A decrease that leaves every group at or below its ``min_lr`` uses up one of ``reset_start``;
   when none is left, every lr returns to its initial value and the best metric, the streaks, the counters and
   the smoothing window start afresh (the cooldown of that same decrease is still set afterwards).

``run`` steps a whole metric sequence for any number of param groups.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

__all__ = ["GreedyState", "greedy_step", "initial_state", "per_group", "run"]


class GreedyState(NamedTuple):
    lrs: tuple[float, ...]
    best: float
    num_bad_epochs: int
    num_good_epochs: int
    cooldown_counter: int
    warmup_counter: int
    reset_start: int
    window: tuple[float, ...]
    window_sum: float


def per_group(value: Any, groups: int, name: str) -> tuple[float, ...]:
    """``min_lr``/``max_lr`` as one bound per param group: a list must have one entry per group."""
    if isinstance(value, (list, tuple)):
        if len(value) != groups:
            raise ValueError(f"expected {groups} {name}s, got {len(value)}")
        return tuple(float(v) for v in value)
    return (float(value),) * groups


def _worst(mode: str) -> float:
    return math.inf if mode == "min" else -math.inf


def initial_state(params: Mapping[str, Any], base_lrs: Sequence[float]) -> GreedyState:
    """The state right after construction: the groups' own lrs, no metric seen."""
    return GreedyState(
        tuple(float(lr) for lr in base_lrs), _worst(params["mode"]), 0, 0, 0, 0, int(params["reset_start"]), (), 0.0
    )


def _improved(metric: float, best: float, p: Mapping[str, Any]) -> bool:
    threshold = float(p["threshold"])
    if p["mode"] == "min":
        bar = best * (1.0 - threshold) if p["threshold_mode"] == "rel" else best - threshold
        return metric < bar
    bar = best * (1.0 + threshold) if p["threshold_mode"] == "rel" else best + threshold
    return metric > bar


def greedy_step(state: GreedyState, metric: float, p: Mapping[str, Any], init_lrs: Sequence[float]) -> GreedyState:
    """One ``scheduler.step(metric)``: the new state (lrs included). ``init_lrs``: the lrs a reset returns to."""
    lrs, best, bad, good, cooldown, warmup, reset_start, window, window_sum = state
    groups = len(lrs)
    current = float(metric)
    if p["smooth"]:
        window, window_sum = (*window, current), window_sum + current
        if len(window) > p["window_size"]:
            window_sum -= window[0]
            window = window[1:]
        current = window_sum / len(window)
    if cooldown > 0:
        cooldown, bad, good = cooldown - 1, 0, 0
    elif warmup > 0:
        warmup, bad, good = warmup - 1, 0, 0
    else:
        if _improved(current, best, p):
            best, bad, good = current, 0, good + 1
        else:
            bad, good = bad + 1, 0
        if good > p["patience"]:
            max_lrs = per_group(p["max_lr"], groups, "max_lr")
            raised = []
            for lr, ceiling in zip(lrs, max_lrs):
                candidate = min(lr / p["factor"], ceiling)
                raised.append(candidate if candidate - lr > p["eps"] else lr)
            lrs = tuple(raised)
            reset_start = int(p["reset_start"])
            warmup, good = int(p["warmup"]), 0
        elif bad > p["patience"]:
            min_lrs = per_group(p["min_lr"], groups, "min_lr")
            lowered = []
            for lr, floor in zip(lrs, min_lrs):
                candidate = max(lr * p["factor"], floor)
                lowered.append(candidate if lr - candidate > p["eps"] else lr)
            lrs = tuple(lowered)
            if all(not lr > floor for lr, floor in zip(lrs, min_lrs)):
                reset_start -= 1
                if reset_start <= 0:
                    lrs = tuple(float(lr) for lr in init_lrs)
                    best, good, warmup = _worst(p["mode"]), 0, 0
                    reset_start = int(p["reset_start"])
                    window, window_sum = (), 0.0
            cooldown, bad = int(p["cooldown"]), 0
    return GreedyState(lrs, best, bad, good, cooldown, warmup, reset_start, window, window_sum)


def run(params: Mapping[str, Any], base_lrs: Sequence[float], metrics: Sequence[float]) -> list[list[float]]:
    """The lr of every param group after each metric: ``run(...)[group][k]`` is group ``group``'s lr after metric k.

    ``params`` are validated ``greedy`` parameters (defaults filled in); ``base_lrs`` the groups' initial lrs.
    """
    init = tuple(float(lr) for lr in base_lrs)
    per_group(params["min_lr"], len(init), "min_lr")
    per_group(params["max_lr"], len(init), "max_lr")
    state = initial_state(params, init)
    rows: list[list[float]] = [[] for _ in init]
    for metric in metrics:
        state = greedy_step(state, float(metric), params, init)
        for row, lr in zip(rows, state.lrs):
            row.append(lr)
    return rows
