"""Model variables as the Keras optimizers see them: their path, the dtype their update runs in, NumPy values."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

import keras

__all__ = ["as_list", "compute_dtype", "matches_any", "numpy_value", "slot_name", "variable_path"]


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
    if isinstance(value, keras.Variable) and keras.backend.backend() != "tensorflow":
        return keras.ops.convert_to_numpy(value.value)  # Variable.numpy() is np.array(variable): NumPy 2 warns
    numpy = getattr(value, "numpy", None)
    return numpy() if numpy is not None else keras.ops.convert_to_numpy(value)
