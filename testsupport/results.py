"""What a framework run of a spec case returns, the same for both frameworks, as float64 numpy data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["LrCurve", "Trajectory", "to_numpy"]


@dataclass(frozen=True)
class LrCurve:
    """Learning rates a framework produced: ``lrs[group, point]`` in float32 (points = steps or metrics)."""

    points: tuple[float, ...]
    lrs: np.ndarray


@dataclass(frozen=True)
class Trajectory:
    """Parameters after every step (float64 copies) and the final per-parameter state."""

    params: list[dict[str, np.ndarray]]
    state: dict[str, dict[str, np.ndarray]]


def to_numpy(value: Any) -> np.ndarray:
    """float64 copy of a torch tensor, a TF tensor, a keras.Variable or a number.

    (``keras.ops.convert_to_numpy`` of a Variable goes through ``np.array(variable)``, which warns.)
    """
    if hasattr(value, "detach"):
        return value.detach().to("cpu").double().numpy().copy()
    if hasattr(value, "numpy"):
        return np.asarray(value.numpy(), dtype=np.float64).copy()
    return np.asarray(value, dtype=np.float64).copy()
