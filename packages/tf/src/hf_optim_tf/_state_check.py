"""The check of one restored state value against the optimizer variable it goes to (shape, dtype, range).

Keras 3 restores an optimizer's variables by position and trusts what it is given: ``load_own_variables`` (what
``.keras`` / ``.weights.h5`` loading calls) only warns and skips when the number of variables differs, and assigns
whatever else it finds (a float state into the ``int64`` step, a negative second moment, a NaN step count);
``set_weights`` stops silently at the shorter of the two lists; a ``tf.train.Checkpoint`` restore assigns variable by
variable, so a mismatch in the fifth leaves the first four restored, it fails with an ``InvalidArgumentError`` on any
dtype difference (a harmless float64 state included), and it quietly leaves out variables the checkpoint lacks.

``hf_optim_tf._checked_restore.CheckedRestore`` (a mixin of the optimizers) checks every entry first, against the
optimizer variable it goes to (:class:`StateSlot`: the model variable it belongs to, its state key, shape and dtype),
and assigns nothing unless all of them pass. The rules (:func:`checked_value`):

* the number of values equals the number of optimizer variables (for ``tf.train.Checkpoint``: no optimizer variable
  is left out and the checkpoint holds no optimizer state this optimizer does not have);
* each value has exactly the variable's shape;
* floating state takes any floating dtype, rounded to the variable's dtype (float64 -> float32 is exact for values
  saved from float32); finite values that would overflow the variable's dtype, and integer, bool, complex and
  string values are rejected;
* ``iterations`` and ``step`` are non-negative integers: an integer dtype, or a float holding finite integral values,
  within the range of the counter's dtype;
* ranges are those of the dtype the backend stores the variable in (:attr:`StateSlot.stored_dtype`): JAX without
  ``jax_enable_x64`` keeps an ``int64`` variable in int32 and a ``float64`` one in float32, and assigning a larger
  value would wrap it (a step count of 2**31 becomes -2**31) or make it inf (the metric schedules, whose state is
  kept exactly on the host there, check against the variable's dtype);
* second moments (``exp_avg_sq``, ``exp_avg_sq_row``, ``exp_avg_sq_col``, ``max_exp_avg_sq``) and Adafactor's
  ``RMS`` are not negative (NaN is let through: a NaN gradient leaves it there); ``learning_rate`` is finite and
  >= 0.

Errors are ValueError (shape, count, value) or TypeError (dtype) and name the optimizer variable (its index), the
model variable (its ``path`` and shape) and the state key, what was expected and what was received.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import keras
import ml_dtypes
import numpy as np

__all__ = [
    "COUNTER_KEYS",
    "NONNEGATIVE_KEYS",
    "StateSlot",
    "checked_value",
    "short_repr",
]

COUNTER_KEYS = frozenset({"iterations", "step", "num_bad_epochs", "cooldown_counter"})
"""State keys that count steps: non-negative integers."""
NONNEGATIVE_KEYS = frozenset({"exp_avg_sq", "exp_avg_sq_row", "exp_avg_sq_col", "max_exp_avg_sq", "RMS"})
"""State keys that cannot be negative: means of squares (and Adafactor's parameter RMS)."""
_RATE_KEYS = frozenset({"learning_rate", "lr"})
_NOT_NAN_KEYS = frozenset({"best"})


@dataclass(frozen=True)
class StateSlot:
    """One optimizer variable and what a restored value for it must be.

    Attributes:
        index: position in ``optimizer.variables`` (the store key / ``set_weights`` index).
        variable: the optimizer variable.
        key: the state key (``iterations``, ``learning_rate``, ``exp_avg``, ``step``, ...).
        owner: ``path`` of the model variable the state belongs to (None for the optimizer's own variables).
        owner_shape: that model variable's shape.
        mirror: the variable mirrors state kept exactly on the host (the metric schedules off TensorFlow): the range
            of :attr:`dtype` applies, not that of the backend's storage.
        storage: :attr:`stored_dtype` of each dtype asked for so far, shared by the slots of one
            ``_restore_slots()`` call (``load_own_variables`` and ``set_weights`` make one call per restore and ask
            the backend once per dtype, not once per step count: about 90 us each on TensorFlow, ~200 variables;
            not kept longer, as JAX's x64 setting can change between restores).
    """

    index: int
    variable: Any
    key: str
    owner: str | None = None
    owner_shape: tuple[int, ...] | None = None
    label: str = "optimizer variable"
    mirror: bool = False
    storage: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.variable.shape)

    @property
    def dtype(self) -> str:
        return str(keras.backend.standardize_dtype(self.variable.dtype))

    @property
    def stored_dtype(self) -> str:
        """The dtype the backend holds a value of :attr:`dtype` in (JAX without x64: 32 bits for 64-bit types)."""
        dtype = self.dtype
        if self.mirror or not dtype.endswith("64") or dtype.startswith("complex"):
            return dtype
        if dtype not in self.storage:
            probe = keras.ops.convert_to_tensor(np.zeros((), _numpy_dtype(dtype)))  # as assign converts, no warning
            self.storage[dtype] = str(keras.backend.standardize_dtype(probe.dtype))
        return self.storage[dtype]

    def describe(self, owner: str) -> str:
        if self.owner is None:
            return f"{owner} variable `{self.key}` ({self.label} {self.index})"
        return f"{owner} state `{self.key}` of variable '{self.owner}' (shape {self.owner_shape}; {self.label} {self.index})"


def _dtype_name(dtype: Any) -> str:
    """``float32``, ``bfloat16``, ``int64``, ``bool``, ``complex64``, ``string``, ``object``, ... for NumPy/TF dtypes."""
    if isinstance(dtype, np.dtype):
        if dtype.kind in "SU":
            return "string"
        return str(dtype.name)
    return str(getattr(dtype, "name", dtype))


def _kind(name: str) -> str:
    if name == "bfloat16" or name.startswith("float"):
        return "float"
    if name.startswith(("int", "uint")):
        return "int"
    return name


def _numpy_dtype(name: str) -> np.dtype:
    return np.dtype(getattr(ml_dtypes, name)) if hasattr(ml_dtypes, name) else np.dtype(name)


def short_repr(value: Any) -> str:
    text = np.array2string(value, threshold=6, edgeitems=2) if isinstance(value, np.ndarray) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= 80 else text[:77] + "..."


def _as_array(value: Any, what: str, source: str) -> np.ndarray:
    try:
        if isinstance(value, keras.Variable):
            value = value.value
        numpy = getattr(value, "numpy", None)
        if not callable(numpy):
            return np.asarray(value)
        try:
            return np.asarray(numpy())
        except Exception:
            if not keras.ops.is_tensor(value):
                raise
            # a torch tensor whose .numpy() refuses (bfloat16, on a GPU, requiring grad): as Keras converts it
            return np.asarray(keras.ops.convert_to_numpy(value))
    except Exception as error:  # ragged lists, objects NumPy cannot hold
        raise TypeError(
            f"{what} must be an array. Received: {source}={short_repr(value)} ({type(error).__name__}: {error})"
        ) from None


def _upcast(array: np.ndarray) -> np.ndarray:
    """A view (float32/float64) or exact float32 copy (16-bit and smaller floats) for NumPy's comparisons."""
    return array if array.dtype in (np.float32, np.float64) else array.astype(np.float32)


def _checked_counter(array: np.ndarray, got: str, slot: StateSlot, what: str, source: str) -> np.ndarray:
    target = _numpy_dtype(slot.dtype)
    limit = int(np.iinfo(_numpy_dtype(slot.stored_dtype)).max)
    rule = f"{what} must be a non-negative integer (at most {limit})"
    if _kind(got) == "int":
        if array.size and (int(array.min()) < 0 or int(array.max()) > limit):
            raise ValueError(f"{rule}. Received: {source}={short_repr(array)}")
        return array.astype(target)
    values = array.astype(np.float64)
    if array.size and not (  # float(...) <= int compares exactly (NumPy would round the limit to 2**63)
        np.isfinite(values).all()
        and (values == np.floor(values)).all()
        and values.min() >= 0
        and float(values.max()) <= limit
    ):
        raise ValueError(f"{rule}. Received: {source}={short_repr(array)} (dtype {got})")
    return values.astype(target)


def _checked_floats(array: np.ndarray, slot: StateSlot, what: str, source: str) -> np.ndarray:
    stored = slot.stored_dtype
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below
        converted = array.astype(_numpy_dtype(slot.dtype))
        held = converted if stored == slot.dtype else array.astype(_numpy_dtype(stored))
    if array.size == 0:
        return converted
    before, after = _upcast(array), _upcast(held)
    if (np.isfinite(before) & ~np.isfinite(after)).any():
        raise ValueError(
            f"{what} holds finite values beyond the range of {stored}. Received: {source} with largest magnitude "
            f"{float(np.nanmax(np.abs(before[np.isfinite(before)])))}"
        )
    if slot.key in NONNEGATIVE_KEYS and (before < 0).any():
        raise ValueError(
            f"{what} must not be negative (a mean of squares; NaN is let through). Received: {source} with minimum "
            f"{float(np.nanmin(before))}"
        )
    if slot.key in _RATE_KEYS and not (np.isfinite(before).all() and (before >= 0).all()):
        raise ValueError(f"{what} must be a finite number >= 0. Received: {source}={short_repr(array)}")
    if slot.key in _NOT_NAN_KEYS and np.isnan(before).any():
        raise ValueError(f"{what} must not be NaN. Received: {source}={short_repr(array)}")
    return converted


def checked_value(slot: StateSlot, value: Any, source: str, owner: str) -> np.ndarray:
    """``value`` checked against ``slot`` and converted to the variable's dtype (a NumPy array); changes nothing.

    Args:
        slot: the optimizer variable the value is for.
        value: an array-like (NumPy array, tensor, variable, nested lists, number).
        source: where the value comes from, for the message (``"store['3']"``, ``"weights[3]"``, a checkpoint key).
        owner: the class name of the optimizer (or schedule), for the message.

    Raises:
        TypeError: not an array, or a dtype that cannot stand for the variable's (int/bool/complex/string for a float
            state; anything but an integer or float for a step count).
        ValueError: another shape; a step count that is not a non-negative integer; a negative second moment; a
            non-finite or negative learning rate; finite values that overflow the variable's dtype.
    """
    what = slot.describe(owner)
    array = _as_array(value, what, source)
    if tuple(array.shape) != slot.shape:
        raise ValueError(f"{what} must have shape {slot.shape}. Received: {source} of shape {tuple(array.shape)}")
    got, want = _dtype_name(array.dtype), slot.dtype
    if _kind(want) == "int":
        if _kind(got) not in ("int", "float"):
            raise TypeError(f"{what} must be an integer (a step count). Received: {source} of dtype {got}")
        return _checked_counter(array, got, slot, what, source)
    if _kind(want) == "float":
        if _kind(got) != "float":
            raise TypeError(
                f"{what} must be a floating-point array (it is cast to {want}). Received: {source} of dtype {got}"
            )
        return _checked_floats(array, slot, what, source)
    if got != want:
        raise TypeError(f"{what} must have dtype {want}. Received: {source} of dtype {got}")
    return array
