"""float64 reference of transformers' TF ``GradientAccumulator``.

The accumulator holds one running sum per gradient slot and a step counter:

* the first call fixes the number of slots; a slot whose first gradient is None stays None forever;
* every call checks the count first (``ValueError: Expected {n} gradients, but got {m}``, nothing
  is added), then adds each present gradient to its slot (None gradients are skipped) and counts 1;
* ``reset`` zeroes every slot and the counter (no-op before the first call);
* reading ``gradients`` before the first call raises
  ``ValueError: The accumulator should be called first to initialize the gradients``.

Sums are stored in the case dtype after every addition (``round_to``); for float32, float16 and
bfloat16 one float64 addition rounded once equals the framework's addition in that dtype exactly.

Case format (``spec/accumulators/gradient_accumulator.json``): ``shapes`` (list, one per slot),
``ops`` (``{"op": "accumulate"}`` with optional ``"missing": [slot indices]`` and ``"count": n``
to pass a wrong number of gradients, or ``{"op": "reset"}``), ``seed``, ``dtype``; generated:
``grads`` (one list per accumulate op) and ``expected`` (one entry per op: ``{"step", "gradients"}``
with ``gradients`` None before the first call, or ``{"error", "match"}``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from ._case import case_dtype
from ._inputs import Array, draw, from_json, to_json
from ._lowp import round_to

__all__ = [
    "AccumulatorState",
    "accumulate",
    "accumulator_init",
    "case_grads",
    "generate_case",
    "gradients",
    "reset",
    "run",
    "run_case",
]

NOT_INITIALIZED = "The accumulator should be called first to initialize the gradients"


class AccumulatorState(NamedTuple):
    """``gradients`` is None until the first call; then one sum (or None) per slot."""

    gradients: tuple[Array | None, ...] | None
    step: int


def accumulator_init() -> AccumulatorState:
    """A fresh accumulator: no slots, step 0."""
    return AccumulatorState(gradients=None, step=0)


def accumulate(state: AccumulatorState, grads: Sequence[Array | None], *, dtype: str = "float64") -> AccumulatorState:
    """Add ``grads`` to the running sums and count one step.

    Raises:
      ValueError: the number of gradients differs from the first call's.
    """
    slots = state.gradients
    if not slots:
        slots = tuple(None if g is None else np.zeros_like(g) for g in grads)
    if len(grads) != len(slots):
        raise ValueError(f"Expected {len(slots)} gradients, but got {len(grads)}")
    summed = tuple(acc if acc is None or g is None else round_to(acc + g, dtype) for acc, g in zip(slots, grads))
    return AccumulatorState(gradients=summed, step=state.step + 1)


def reset(state: AccumulatorState) -> AccumulatorState:
    """Zero every slot and the counter; a never-called accumulator stays as it is."""
    if not state.gradients:
        return state
    return AccumulatorState(gradients=tuple(None if g is None else np.zeros_like(g) for g in state.gradients), step=0)


def gradients(state: AccumulatorState) -> list[Array | None]:
    """The accumulated sums.

    Raises:
      ValueError: before the first call.
    """
    if not state.gradients:
        raise ValueError(NOT_INITIALIZED)
    return list(state.gradients)


def case_grads(case: Mapping[str, Any]) -> list[list[Array | None]]:
    """One gradient list per accumulate op, generated from the case seed (stored ones when present)."""
    ops = case["ops"]
    if "grads" in case:
        return [[from_json(g) for g in row] for row in case["grads"]]
    rng = np.random.default_rng(int(case["seed"]))
    shapes = [[int(n) for n in shape] for shape in case["shapes"]]
    rows: list[list[Array | None]] = []
    for op in ops:
        if op["op"] != "accumulate":
            continue
        count = int(op.get("count", len(shapes)))
        missing = set(op.get("missing", ()))
        row: list[Array | None] = []
        for index in range(count):
            shape = shapes[index] if index < len(shapes) else []
            value = draw(rng, shape)
            row.append(None if index in missing else value)
        rows.append(row)
    return rows


def run(case: Mapping[str, Any], grads: list[list[Array | None]]) -> list[dict[str, Any]]:
    """The expected entry after every op of the case."""
    dtype = case_dtype(case)
    state = accumulator_init()
    rows = iter(grads)
    expected: list[dict[str, Any]] = []
    for op in case["ops"]:
        if op["op"] == "reset":
            state = reset(state)
        elif op["op"] == "accumulate":
            try:
                state = accumulate(state, next(rows), dtype=dtype)
            except ValueError as error:
                expected.append({"error": "ValueError", "match": re.escape(str(error))})
                continue
        else:
            raise ValueError(f"unknown accumulator op {op['op']!r}")
        sums = None if not state.gradients else [to_json(g) for g in state.gradients]
        expected.append({"step": state.step, "gradients": sums})
    return expected


def run_case(spec: Mapping[str, Any], case: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The expected entries of a case (stored gradients when present, else generated)."""
    return run(case, case_grads(case))


def generate_case(spec: Mapping[str, Any], case: Mapping[str, Any]) -> dict[str, Any]:
    """The case with grads and expected filled in (provenance kept or set)."""
    bare = {key: value for key, value in case.items() if key not in ("grads", "expected", "provenance")}
    grads = case_grads(bare)
    filled = dict(bare)
    filled["grads"] = [[to_json(g) for g in row] for row in grads]
    filled["expected"] = run(bare, grads)
    filled["provenance"] = case.get("provenance", "reference")
    return filled
