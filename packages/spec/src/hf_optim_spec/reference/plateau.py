"""float64 reference of ``reduce_lr_on_plateau`` (torch's ReduceLROnPlateau, which transformers returns).

The schedule is stateful: the learning rate depends on the history of the monitored metric, so it
has no closed form and is written here as a pure function over the whole metric sequence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

__all__ = ["PlateauState", "plateau_step", "run"]


class PlateauState(NamedTuple):
    lr: float
    best: float
    num_bad_epochs: int
    cooldown_counter: int


def _improved(metric: float, best: float, *, mode: str, threshold_mode: str, threshold: float) -> bool:
    if mode == "min":
        bar = best * (1.0 - threshold) if threshold_mode == "rel" else best - threshold
        return metric < bar
    bar = best * (threshold + 1.0) if threshold_mode == "rel" else best + threshold
    return metric > bar


def plateau_step(state: PlateauState, metric: float, p: Mapping[str, Any]) -> PlateauState:
    """One ``scheduler.step(metric)``: returns the new state (lr included)."""
    lr, best, bad, cooldown = state
    if _improved(metric, best, mode=p["mode"], threshold_mode=p["threshold_mode"], threshold=p["threshold"]):
        best, bad = metric, 0
    else:
        bad += 1
    if cooldown > 0:
        cooldown, bad = cooldown - 1, 0
    if bad > p["patience"]:
        reduced = max(lr * p["factor"], p["min_lr"])
        if lr - reduced > p["eps"]:
            lr = reduced
        cooldown, bad = p["cooldown"], 0
    return PlateauState(lr, best, bad, cooldown)


def run(params: Mapping[str, Any], base_lr: float, metrics: Sequence[float]) -> list[float]:
    """The learning rate after each metric, starting from ``base_lr``."""
    state = PlateauState(float(base_lr), math.inf if params["mode"] == "min" else -math.inf, 0, 0)
    lrs = []
    for metric in metrics:
        state = plateau_step(state, float(metric), params)
        lrs.append(state.lr)
    return lrs
