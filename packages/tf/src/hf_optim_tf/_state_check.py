"""Checks of restored optimizer state: a checkpoint either fits the optimizer or is rejected before anything changes.

Keras 3 restores an optimizer's variables by position and trusts what it is given: ``load_own_variables`` (what
``.keras`` / ``.weights.h5`` loading calls) only warns and skips when the number of variables differs, and assigns
whatever else it finds (a float state into the ``int64`` step, a negative second moment, a NaN step count);
``set_weights`` stops silently at the shorter of the two lists; a ``tf.train.Checkpoint`` restore assigns variable by
variable, so a mismatch in the fifth leaves the first four restored, it fails with an ``InvalidArgumentError`` on any
dtype difference (a harmless float64 state included), and it quietly leaves out variables the checkpoint lacks.

:class:`CheckedRestore` (a mixin of the optimizers) checks every entry first, against the optimizer variable it goes
to (:class:`StateSlot`: the model variable it belongs to, its state key, shape and dtype), and assigns nothing unless
all of them pass. The rules (:func:`checked_value`):

* the number of values equals the number of optimizer variables (for ``tf.train.Checkpoint``: no optimizer variable
  is left out and the checkpoint holds no optimizer state this optimizer does not have);
* each value has exactly the variable's shape;
* floating state takes any floating dtype, rounded to the variable's dtype (float64 -> float32 is exact for values
  saved from float32); finite values that would overflow the variable's dtype, and integer, bool, complex and
  string values are rejected;
* ``iterations`` and ``step`` are non-negative integers: an integer dtype, or a float holding finite integral values,
  within the range of the counter's dtype;
* second moments (``exp_avg_sq``, ``exp_avg_sq_row``, ``exp_avg_sq_col``, ``max_exp_avg_sq``) and Adafactor's
  ``RMS`` are not negative (NaN is let through: a NaN gradient leaves it there); ``learning_rate`` is finite and
  >= 0.

Errors are ValueError (shape, count, value) or TypeError (dtype) and name the optimizer variable (its index), the
model variable (its ``path`` and shape) and the state key, what was expected and what was received.

A ``tf.train.Checkpoint`` restore (TensorFlow backend) is checked by :class:`StagedRestore` through hooks that each
optimizer variable gets, as instance attributes, when the optimizer tracks it (:meth:`CheckedRestore._track_variable`):

* ``_serialize_to_tensors`` notes the ``SaveSpec`` TensorFlow returns for the variable (a distributed variable's is
  made the same kind: a callable reading the variable; nothing saved changes);
* ``_checkpoint_adapter`` (TensorFlow's per-object restore hook, called with the checkpoint path after the object
  graph is matched and before anything is read) records the variable's checkpoint key and sets the ``SaveSpec``'s
  dtype to the one stored in the checkpoint, so every value is read as saved and checked by the rules above;
* ``_restore_from_tensors`` checks the value and stages it.

TensorFlow matches the whole object graph before it reads any value, so the variables one restore assigns are known
when the first value arrives: a variable left out, or optimizer state in the checkpoint this optimizer does not have
(another optimizer's ``_step`` list, a ``_variables`` entry beyond its own), is rejected then; the last value staged
commits them all. A restore into an optimizer that is not built yet (TensorFlow defers the state until ``build``
creates it) commits the variables that exist (``iterations``, ``learning_rate``) and checks the state at the end of
``build`` (:meth:`CheckedRestore._finish_build`), which commits it or raises and puts ``iterations`` and
``learning_rate`` back. :class:`~hf_optim_tf.PlateauSchedule` uses the same hooks for its four state variables.

Limits: Keras stores and ``set_weights`` lists carry no variable names, and a checkpoint's object graph only the
attribute names, so a state written by another optimizer is recognised by its count, shapes, dtypes and (for a
checkpoint) its attribute names; two layouts that agree in all of these would pass. A checkpoint holding no value for
any variable of the optimizer restores nothing into it (TensorFlow's partial restore, as for a checkpoint without the
optimizer; ``status.assert_existing_objects_matched()`` reports it).
"""

from __future__ import annotations

import types
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import ml_dtypes
import numpy as np

from ._common import variable_path

__all__ = [
    "COUNTER_KEYS",
    "NONNEGATIVE_KEYS",
    "CheckedRestore",
    "StagedRestore",
    "StateSlot",
    "checked_value",
]

COUNTER_KEYS = frozenset({"iterations", "step", "num_bad_epochs", "cooldown_counter"})
"""State keys that count steps: non-negative integers."""
NONNEGATIVE_KEYS = frozenset({"exp_avg_sq", "exp_avg_sq_row", "exp_avg_sq_col", "max_exp_avg_sq", "RMS"})
"""State keys that cannot be negative: means of squares (and Adafactor's parameter RMS)."""
_RATE_KEYS = frozenset({"learning_rate", "lr"})
_NOT_NAN_KEYS = frozenset({"best"})
_VALUE_KEY = "VARIABLE_VALUE"


@dataclass(frozen=True)
class StateSlot:
    """One optimizer variable and what a restored value for it must be.

    Attributes:
        index: position in ``optimizer.variables`` (the store key / ``set_weights`` index).
        variable: the optimizer variable.
        key: the state key (``iterations``, ``learning_rate``, ``exp_avg``, ``step``, ...).
        owner: ``path`` of the model variable the state belongs to (None for the optimizer's own variables).
        owner_shape: that model variable's shape.
    """

    index: int
    variable: Any
    key: str
    owner: str | None = None
    owner_shape: tuple[int, ...] | None = None
    label: str = "optimizer variable"

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.variable.shape)

    @property
    def dtype(self) -> str:
        return str(keras.backend.standardize_dtype(self.variable.dtype))

    def describe(self, owner: str) -> str:
        if self.owner is None:
            return f"{owner} variable `{self.key}` ({self.label} {self.index})"
        return f"{owner} state `{self.key}` of variable '{self.owner}' (shape {self.owner_shape}; {self.label} {self.index})"


# --------------------------------------------------------------------------- one value


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


def _short(value: Any) -> str:
    text = np.array2string(value, threshold=6, edgeitems=2) if isinstance(value, np.ndarray) else repr(value)
    text = " ".join(text.split())
    return text if len(text) <= 80 else text[:77] + "..."


def _as_array(value: Any, what: str, source: str) -> np.ndarray:
    try:
        numpy = getattr(value, "numpy", None)
        return np.asarray(numpy() if callable(numpy) else value)
    except Exception as error:  # ragged lists, objects NumPy cannot hold
        raise TypeError(
            f"{what} must be an array. Received: {source}={_short(value)} ({type(error).__name__}: {error})"
        ) from None


def _upcast(array: np.ndarray) -> np.ndarray:
    """A view (float32/float64) or exact float32 copy (16-bit and smaller floats) for NumPy's comparisons."""
    return array if array.dtype in (np.float32, np.float64) else array.astype(np.float32)


def _checked_counter(array: np.ndarray, got: str, slot: StateSlot, what: str, source: str) -> np.ndarray:
    target = _numpy_dtype(slot.dtype)
    limit = int(np.iinfo(target).max)
    rule = f"{what} must be a non-negative integer (at most {limit})"
    if _kind(got) == "int":
        if array.size and (int(array.min()) < 0 or int(array.max()) > limit):
            raise ValueError(f"{rule}. Received: {source}={_short(array)}")
        return array.astype(target)
    values = array.astype(np.float64)
    if array.size and not (  # float(...) <= int compares exactly (NumPy would round the limit to 2**63)
        np.isfinite(values).all()
        and (values == np.floor(values)).all()
        and values.min() >= 0
        and float(values.max()) <= limit
    ):
        raise ValueError(f"{rule}. Received: {source}={_short(array)} (dtype {got})")
    return values.astype(target)


def _checked_floats(array: np.ndarray, slot: StateSlot, what: str, source: str) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is reported below
        converted = array.astype(_numpy_dtype(slot.dtype))
    if array.size == 0:
        return converted
    before, after = _upcast(array), _upcast(converted)
    if (np.isfinite(before) & ~np.isfinite(after)).any():
        raise ValueError(
            f"{what} holds finite values beyond the range of {slot.dtype}. Received: {source} with largest magnitude "
            f"{float(np.nanmax(np.abs(before[np.isfinite(before)])))}"
        )
    if slot.key in NONNEGATIVE_KEYS and (before < 0).any():
        raise ValueError(
            f"{what} must not be negative (a mean of squares; NaN is let through). Received: {source} with minimum "
            f"{float(np.nanmin(before))}"
        )
    if slot.key in _RATE_KEYS and not (np.isfinite(before).all() and (before >= 0).all()):
        raise ValueError(f"{what} must be a finite number >= 0. Received: {source}={_short(array)}")
    if slot.key in _NOT_NAN_KEYS and np.isnan(before).any():
        raise ValueError(f"{what} must not be NaN. Received: {source}={_short(array)}")
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


# --------------------------------------------------------------------------- tf.train.Checkpoint hooks


@dataclass
class _Restore:
    """One ``tf.train.Checkpoint`` restore (one TensorFlow restore uid) into one owner."""

    uid: int
    keys: dict[int, str] = field(default_factory=dict)
    """id(variable) -> checkpoint key, for every variable of the owner the restore assigns."""
    dtypes: dict[str, Any] | None = None
    """The checkpoint's dtype of every key (read once per restore)."""
    staged: dict[int, tuple[Any, Any]] = field(default_factory=dict)
    started: bool = False
    initial: set[int] = field(default_factory=set)
    """id() of the owner's variables when the first value arrived."""
    deferred: bool = False
    """The owner was not complete (an optimizer not built): the rest arrives while ``build`` creates it."""
    previous: dict[int, tuple[Any, np.ndarray]] = field(default_factory=dict)
    """Deferred restore: the variables committed at restore time and their values before it."""


def _pending_names(owner: Any, uid: int) -> list[str]:
    """Names of ``owner``'s checkpoint dependencies that restore ``uid`` found no object for (deferred by TF)."""
    deferred = getattr(owner, "_deferred_dependencies", None) or {}
    return sorted(name for name, positions in deferred.items() if any(p.restore_uid == uid for p in positions))


def _forget_pending(owner: Any, uid: int) -> None:
    deferred = getattr(owner, "_deferred_dependencies", None)
    if not deferred:
        return
    for name in list(deferred):
        kept = [p for p in deferred[name] if p.restore_uid != uid]
        if kept:
            deferred[name] = kept
        else:
            del deferred[name]


def _install_tf_hooks(owner_object: Any, variable: Any) -> None:
    """Route ``variable``'s ``tf.train.Checkpoint`` restore through its owner (a :class:`StagedRestore`), as
    instance attributes: the class, and what is saved, are unchanged."""
    import tensorflow as tf
    from tensorflow.python.checkpoint import tensor_callable
    from tensorflow.python.training.saving import saveable_object

    owner = weakref.ref(owner_object)
    cls = type(variable)

    def serialize(self: Any) -> dict[str, Any]:
        # Called when a checkpoint is written and when a restore gathers what it will read. TF returns a SaveSpec
        # with a callable tensor for a variable (a restore reads with that SaveSpec's dtype), and the variable itself
        # for a distributed one; that one is wrapped the same way (saving reads the same variable on its device).
        tensors = cls._serialize_to_tensors(self)
        value = tensors.get(_VALUE_KEY)
        if list(tensors) != [_VALUE_KEY]:
            value = None
        elif not isinstance(value, saveable_object.SaveSpec) and isinstance(value, tf.Variable):
            variable = value
            value = tensor_callable.Callable(lambda: variable, variable.dtype, variable.device)
            tensors = {_VALUE_KEY: value}
        self._hf_spec = value
        return tensors

    def adapter(self: Any, path: str) -> Any:
        # TF's per-object restore hook, called right after the gathering above and before anything is read.
        spec, self._hf_spec = getattr(self, "_hf_spec", None), None
        target = owner()
        if spec is not None and target is not None:
            target._expect_restored(self, spec, path)
        return cls._checkpoint_adapter(self, path)

    def restore(self: Any, restored_tensors: Any) -> Any:
        target = owner()
        if target is None or not tf.executing_eagerly() or set(restored_tensors) != {_VALUE_KEY}:
            return cls._restore_from_tensors(self, restored_tensors)
        target._stage_restored(self, restored_tensors[_VALUE_KEY])
        return None

    variable._hf_spec = None
    variable._serialize_to_tensors = types.MethodType(serialize, variable)
    variable._checkpoint_adapter = types.MethodType(adapter, variable)
    variable._restore_from_tensors = types.MethodType(restore, variable)


def _commit_tf(variable: Any, value: np.ndarray) -> None:
    import tensorflow as tf

    type(variable)._restore_from_tensors(variable, {_VALUE_KEY: tf.convert_to_tensor(value)})


class StagedRestore:
    """Mixin of a TF trackable that owns variables (an optimizer, :class:`~hf_optim_tf.PlateauSchedule`): a
    ``tf.train.Checkpoint`` restore of its variables is checked and committed as a whole, or rejected with
    nothing assigned.

    The owner hooks each variable (:meth:`_hook_restore`, before TF tracks it) and describes its variables in
    :meth:`_restore_slots`. A restore must assign every one of them, and the checkpoint must hold no dependency
    of the owner that it lacks. While :meth:`_restore_complete` is False (an optimizer not built yet), a restore
    commits the variables that exist and leaves the rest to :meth:`_finish_deferred_restore`.
    """

    def _restore_slots(self) -> list[StateSlot]:
        raise NotImplementedError

    def _restore_complete(self) -> bool:
        return True

    def _restore_trackables(self) -> list[tuple[Any, str]]:
        """The trackables whose unmatched checkpoint dependencies are state this owner does not have."""
        return [(self, "")]

    def _hook_restore(self, variable: Any) -> None:
        if keras.backend.backend() == "tensorflow" and hasattr(variable, "_restore_from_tensors"):
            _install_tf_hooks(self, variable)

    def _restore(self, uid: int) -> _Restore:
        current = getattr(self, "_hf_restore", None)
        if current is None or current.uid != uid:
            current = _Restore(uid)
            self._hf_restore = current
        return current

    def _expect_restored(self, variable: Any, spec: Any, path: str) -> None:
        """Adapter hook (before anything is read): note that this restore assigns ``variable``, under which
        checkpoint key, and have TF read the value in the dtype it was saved in."""
        import tensorflow as tf
        from tensorflow.python.training.saving import saveable_object

        restore = self._restore(variable._update_uid)
        is_spec = isinstance(spec, saveable_object.SaveSpec)
        key = str(spec.name) if is_spec and spec.name else "?"
        restore.keys[id(variable)] = key
        # TF keeps a SaveSpec with a callable tensor as it is (others are re-wrapped with the tensor's dtype).
        if is_spec and callable(getattr(spec, "_tensor", None)) and key != "?":
            if restore.dtypes is None:
                restore.dtypes = tf.train.load_checkpoint(path).get_variable_to_dtype_map()
            saved = restore.dtypes.get(key)
            if saved is not None:
                spec.dtype = saved

    def _pending(self, uid: int) -> list[str]:
        return [prefix + name for owner, prefix in self._restore_trackables() for name in _pending_names(owner, uid)]

    def _reject(self, restore: _Restore, error: Exception) -> Exception:
        if getattr(self, "_hf_restore", None) is restore:
            self._hf_restore = None
        for variable, value in restore.previous.values():
            variable.assign(value)
        for owner, _ in self._restore_trackables():
            _forget_pending(owner, restore.uid)
        return error

    def _layout(self, slots: Sequence[StateSlot]) -> str:
        keys = Counter(slot.key for slot in slots)
        return ", ".join(f"{key} x{n}" if n > 1 else key for key, n in keys.items())

    def _missing_or_extra(self, restore: _Restore, slots: Sequence[StateSlot], done: Iterable[int]) -> None:
        name = type(self).__name__
        done = set(done)
        missing = [slot for slot in slots if id(slot.variable) not in done]
        if missing:
            raise ValueError(
                f"The checkpoint holds no value for {len(missing)} of the {len(slots)} variables of {name} "
                f"({self._layout(slots)}), e.g. {missing[0].describe(name)} (a state written by another "
                "optimizer, configuration or model?)"
            )
        pending = self._pending(restore.uid)
        if pending:
            raise ValueError(
                f"The checkpoint holds state that {name} does not have: {pending[:6]} (it has {len(slots)} "
                f"variables: {self._layout(slots)}; a state written by another optimizer, configuration or model?)"
            )

    @staticmethod
    def _source(restore: _Restore, variable: Any) -> str:
        return f"checkpoint value '{restore.keys.get(id(variable), '?')}'"

    def _stage_restored(self, variable: Any, value: Any) -> None:
        """Restore hook: check one value and stage it; the last one of the restore commits them all.

        A deferred restore commits the variables that existed when it started and stages the ones created later,
        unchecked, for :meth:`_finish_deferred_restore` (their state keys are known once ``build`` is done).
        """
        restore = self._restore(variable._update_uid)
        if restore.started and restore.deferred and id(variable) not in restore.initial:
            restore.staged[id(variable)] = (variable, value)
            return
        slots = self._restore_slots()
        if not restore.started:
            restore.started = True
            restore.initial = {id(slot.variable) for slot in slots}
            try:
                complete = self._restore_complete()
                if complete or any(id(slot.variable) not in restore.keys for slot in slots):
                    self._missing_or_extra(restore, slots, restore.keys)
                restore.deferred = not complete and bool(self._pending(restore.uid))
            except ValueError as error:
                raise self._reject(restore, error) from None
        slot = next(s for s in slots if s.variable is variable)
        try:
            converted = checked_value(slot, value, self._source(restore, variable), type(self).__name__)
        except (TypeError, ValueError) as error:
            raise self._reject(restore, error) from None
        restore.staged[id(variable)] = (variable, converted)
        if not {k for k in restore.keys if k in restore.initial} <= set(restore.staged):
            return
        for staged_variable, staged_value in restore.staged.values():
            if restore.deferred:
                restore.previous[id(staged_variable)] = (staged_variable, np.asarray(staged_variable.numpy()))
            _commit_tf(staged_variable, staged_value)
        restore.staged.clear()
        if not restore.deferred:
            self._hf_restore = None

    def _finish_deferred_restore(self) -> None:
        """Check and commit a deferred restore once the owner is complete, or reject it.

        Raises:
            ValueError, TypeError: the state restored while ``build`` created it does not fit (the new state stays;
                the variables committed at restore time get their values from before it back).
        """
        restore = getattr(self, "_hf_restore", None)
        if restore is None or not restore.deferred:
            return
        self._hf_restore = None
        slots = {id(slot.variable): slot for slot in self._restore_slots()}
        name = type(self).__name__
        try:
            self._missing_or_extra(restore, list(slots.values()), [*restore.staged, *restore.previous])
            checked = [
                (variable, checked_value(slots[key], value, self._source(restore, variable), name))
                for key, (variable, value) in restore.staged.items()
            ]
        except (TypeError, ValueError) as error:
            raise self._reject(restore, error) from None
        for variable, value in checked:
            _commit_tf(variable, value)


# --------------------------------------------------------------------------- the optimizer mixin


class CheckedRestore(StagedRestore):
    """Mixin of the optimizers: ``load_own_variables``, ``set_weights`` and ``tf.train.Checkpoint`` restores check
    every value before any is assigned (see the module docstring for the rules).

    An optimizer lists its own state in :meth:`_state_slots` and calls :meth:`_finish_build` at the end of ``build``.
    """

    def _state_slots(self) -> Iterable[tuple[Any, Any, str]]:
        """``(optimizer variable, model variable, state key)`` of the optimizer's own state (None entries skipped)."""
        return ()

    def _restore_slots(self) -> list[StateSlot]:
        """One :class:`StateSlot` per ``self.variables`` entry, in order."""
        known: dict[int, tuple[Any, str]] = {id(self._iterations): (None, "iterations")}  # type: ignore[attr-defined]
        learning_rate = getattr(self, "_learning_rate", None)
        if isinstance(learning_rate, keras.Variable):
            known[id(learning_rate)] = (None, "learning_rate")
        model_variables = list(getattr(self, "_trainable_variables", None) or [])
        for key, attribute in (
            ("average", "_model_variables_moving_average"),
            ("gradient_accumulator", "_accumulated_gradients"),
        ):
            for owner, variable in zip(model_variables, getattr(self, attribute, None) or []):
                known[id(variable)] = (owner, key)
        for variable, owner, key in self._state_slots():
            if variable is not None:
                known[id(variable)] = (owner, key)
        slots = []
        for index, variable in enumerate(self.variables):  # type: ignore[attr-defined]
            owner, key = known.get(id(variable), (None, str(getattr(variable, "name", "?"))))
            slots.append(
                StateSlot(
                    index,
                    variable,
                    key,
                    None if owner is None else variable_path(owner),
                    None if owner is None else tuple(int(d) for d in owner.shape),
                )
            )
        return slots

    def _restore_complete(self) -> bool:
        return bool(self.built)  # type: ignore[attr-defined]

    def _restore_trackables(self) -> list[tuple[Any, str]]:
        return [(self, ""), (self._variables, "_variables/")]  # type: ignore[attr-defined]

    def _track_variable(self, variable: Any) -> None:
        # Hooks first: tracking the variable may restore it at once (a deferred tf.train.Checkpoint restore).
        self._hook_restore(variable)
        super()._track_variable(variable)  # type: ignore[misc]

    def _finish_build(self) -> None:
        """End of ``build``: check and commit a deferred ``tf.train.Checkpoint`` restore, or reject it.

        Raises:
            ValueError, TypeError: the state restored while ``build`` created it does not fit (the optimizer keeps
                its new state; ``iterations`` and ``learning_rate`` get their values from before the restore back).
        """
        self._finish_deferred_restore()

    def _unbuilt_variable_count(self) -> int:
        """How many variables an optimizer of this configuration holds before ``build``."""
        return 1 + isinstance(getattr(self, "_learning_rate", None), keras.Variable)

    def _checked_values(self, values: Sequence[Any], source: Callable[[int], str]) -> list[tuple[Any, np.ndarray]]:
        name = type(self).__name__
        return [
            (slot.variable, checked_value(slot, value, source(slot.index), name))
            for slot, value in zip(self._restore_slots(), values)
        ]

    def _count_error(self, received: int, what: str) -> ValueError:
        slots = self._restore_slots()
        return ValueError(
            f"{type(self).__name__} holds {len(slots)} variables ({self._layout(slots)}) for "
            f"{len(getattr(self, '_trainable_variables', []))} model variables; {what} must hold one value per "
            f"variable. Received: {received} values (a state written by another optimizer, configuration or model?)"
        )

    def load_own_variables(self, store: Any) -> None:
        """Keras' ``load_own_variables`` (``.keras`` / ``.weights.h5`` loading), checked.

        A store with another number of entries is a ValueError once the optimizer is built, except a store saved
        before the optimizer was ever built (its ``iterations``/``learning_rate`` only), which keeps Keras' warning
        and loads nothing; so does any store while this optimizer is not built.

        Raises:
            ValueError, TypeError: see :func:`checked_value`; nothing is assigned.
        """
        variables = self.variables  # type: ignore[attr-defined]
        keys = [str(key) for key in store.keys()]
        if len(keys) != len(variables):
            if not self.built or len(keys) == self._unbuilt_variable_count():  # type: ignore[attr-defined]
                super().load_own_variables(store)  # type: ignore[misc]  # Keras: a warning, nothing loaded
                return
            raise self._count_error(len(keys), "the saved optimizer store")
        expected = [str(index) for index in range(len(variables))]
        if sorted(keys) != sorted(expected):
            raise ValueError(
                f"{type(self).__name__}'s store must hold the keys '0' to '{len(expected) - 1}'. Received: missing "
                f"{sorted(set(expected) - set(keys))[:5]}, unexpected {sorted(set(keys) - set(expected))[:5]}"
            )
        checked = self._checked_values([store[key] for key in expected], lambda i: f"store['{i}']")
        for variable, value in checked:
            variable.assign(value)

    def set_weights(self, weights: Any) -> None:
        """Keras' ``set_weights``, checked: one array per optimizer variable (Keras stops at the shorter list).

        Raises:
            ValueError, TypeError: see :func:`checked_value`; nothing is assigned.
        """
        if not self.built:  # type: ignore[attr-defined]
            super().set_weights(weights)  # type: ignore[misc]  # Keras' ValueError
            return
        if isinstance(weights, (str, bytes)) or not isinstance(weights, Iterable):
            raise TypeError(f"Argument `weights` must be a list of arrays. Received: weights={_short(weights)}")
        weights = list(weights)
        if len(weights) != len(self.variables):  # type: ignore[attr-defined]
            raise self._count_error(len(weights), "`weights`")
        checked = self._checked_values(weights, lambda i: f"weights[{i}]")
        for variable, value in checked:
            variable.assign(value)
