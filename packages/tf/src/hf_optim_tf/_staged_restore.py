"""A ``tf.train.Checkpoint`` restore of an owner's variables, checked and committed as a whole or rejected.

A ``tf.train.Checkpoint`` restore (TensorFlow backend) assigns variable by variable. :class:`StagedRestore` (a mixin
of the optimizers, through ``hf_optim_tf._checked_restore.CheckedRestore``, and of the metric-driven schedules)
checks it through hooks that each of the owner's variables gets, as instance attributes, when the owner tracks it:

* ``_serialize_to_tensors`` notes the ``SaveSpec`` TensorFlow returns for the variable (a distributed variable's is
  made the same kind: a callable reading the variable; nothing saved changes);
* ``_checkpoint_adapter`` (TensorFlow's per-object restore hook, called with the checkpoint path after the object
  graph is matched and before anything is read) records the variable's checkpoint key and sets the ``SaveSpec``'s
  dtype to the one stored in the checkpoint, so every value is read as saved and checked
  (``hf_optim_tf._state_check.checked_value``);
* ``_restore_from_tensors`` checks the value and stages it.

TensorFlow matches the whole object graph before it reads any value, so the variables one restore assigns are known
when the first value arrives: a variable left out, or optimizer state in the checkpoint this optimizer does not have
(another optimizer's ``_step`` list, a ``_variables`` entry beyond its own), is rejected then; the last value staged
commits them all. A restore into an optimizer that is not built yet (TensorFlow defers the state until ``build``
creates it) commits the variables that exist (``iterations``, ``learning_rate``) and checks the state at the end of
``build`` (``CheckedRestore._finish_build``), which commits it or raises and puts ``iterations`` and
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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import keras
import numpy as np

from ._state_check import StateSlot, checked_value

__all__ = ["StagedRestore"]

_VALUE_KEY = "VARIABLE_VALUE"


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
    slots: dict[int, StateSlot] = field(default_factory=dict)
    """id(variable) -> the owner's description of it, made once when the first value arrives (not once per value:
    that was quadratic in the number of variables, 24.9 s instead of 2.2 s to restore AdamW over 400 model
    variables)."""
    initial: set[int] = field(default_factory=set)
    """id() of the owner's variables when the first value arrived."""
    waiting: set[int] = field(default_factory=set)
    """id() of the variables of ``initial`` the restore assigns whose value has not arrived yet."""
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
        if not restore.started:
            slots = self._restore_slots()
            restore.started = True
            restore.slots = {id(slot.variable): slot for slot in slots}
            restore.initial = set(restore.slots)
            restore.waiting = restore.initial & restore.keys.keys()
            try:
                complete = self._restore_complete()
                if complete or any(id(slot.variable) not in restore.keys for slot in slots):
                    self._missing_or_extra(restore, slots, restore.keys)
                restore.deferred = not complete and bool(self._pending(restore.uid))
            except ValueError as error:
                raise self._reject(restore, error) from None
        if id(variable) not in restore.slots:  # created since the first value arrived: describe the owner again
            restore.slots = {id(slot.variable): slot for slot in self._restore_slots()}
        slot = restore.slots.get(id(variable))
        if slot is None:
            error = ValueError(
                f"The checkpoint restores a variable that {type(self).__name__} does not list among its own "
                f"({self._source(restore, variable)})"
            )
            raise self._reject(restore, error) from None
        try:
            converted = checked_value(slot, value, self._source(restore, variable), type(self).__name__)
        except (TypeError, ValueError) as error:
            raise self._reject(restore, error) from None
        restore.staged[id(variable)] = (variable, converted)
        restore.waiting.discard(id(variable))
        if restore.waiting:
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
