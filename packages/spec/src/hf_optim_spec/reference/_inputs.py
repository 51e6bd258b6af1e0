"""Deterministic inputs of an optimizer or accumulator case, from its seed, shapes and steps.

Every generated value is exactly representable in bfloat16 and in float16, so a case starts from
the same numbers whatever dtype a framework runs it in. Draws happen in a fixed order (parameters
in ``shapes`` order, then for every step one gradient per parameter, drawn even when that
gradient is then declared missing or zero), so changing ``missing_grads`` or ``zero_grads`` never
shifts the other values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from ._lowp import round_to

__all__ = ["Array", "draw", "from_json", "make_inputs", "to_json"]

Array = npt.NDArray[np.float64]


def draw(rng: np.random.Generator, shape: Sequence[int]) -> Array:
    """Standard normal values rounded to bfloat16, with those that float16 cannot hold set to 0."""
    values = round_to(rng.standard_normal(tuple(shape)), "bfloat16")
    exact_in_half = round_to(values, "float16") == values
    result: Array = np.where(exact_in_half, values, 0.0)
    return result


def make_inputs(
    shapes: Mapping[str, Sequence[int]],
    steps: int,
    seed: int,
    *,
    missing_grads: Mapping[str, Iterable[int]] | None = None,
    zero_grads: Iterable[int] | None = None,
) -> tuple[dict[str, Array], list[dict[str, Array | None]]]:
    """Initial parameters and the gradients of every step (0-based step indices).

    ``missing_grads[name]`` lists the steps where ``name`` has no gradient (None); ``zero_grads``
    lists the steps where every present gradient is all zeros.
    """
    rng = np.random.default_rng(seed)
    missing = {name: set(indices) for name, indices in (missing_grads or {}).items()}
    zeros = set(zero_grads or ())
    params0 = {name: draw(rng, shape) for name, shape in shapes.items()}
    grads: list[dict[str, Array | None]] = []
    for step in range(steps):
        row: dict[str, Array | None] = {}
        for name, shape in shapes.items():
            grad = draw(rng, shape)
            if step in missing.get(name, ()):
                row[name] = None
            elif step in zeros:
                row[name] = np.zeros_like(grad)
            else:
                row[name] = grad
        grads.append(row)
    return params0, grads


def to_json(value: Array | float | None) -> Any:
    """A nested list of Python floats (a bare float for 0-D); None stays None."""
    if value is None:
        return None
    return np.asarray(value, dtype=np.float64).tolist()


def from_json(value: Any) -> Array | None:
    """The inverse of :func:`to_json`."""
    if value is None:
        return None
    return np.array(value, dtype=np.float64)
