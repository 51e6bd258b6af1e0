"""The optimizers' checked restores: ``load_own_variables``, ``set_weights`` and ``tf.train.Checkpoint``.

Every value is checked (``hf_optim_tf._state_check``) against the optimizer variable it goes to before any is
assigned; a ``tf.train.Checkpoint`` restore goes through ``hf_optim_tf._staged_restore``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import keras
import numpy as np

from ._staged_restore import StagedRestore
from ._state_check import StateSlot, checked_value, short_repr
from ._variables import variable_path

__all__ = ["CheckedRestore"]


class CheckedRestore(StagedRestore):
    """Mixin of the optimizers: ``load_own_variables``, ``set_weights`` and ``tf.train.Checkpoint`` restores check
    every value before any is assigned (the rules: ``hf_optim_tf._state_check``).

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
        storage: dict[str, str] = {}  # (the backend's storage dtypes, asked once for all slots)
        for index, variable in enumerate(self.variables):  # type: ignore[attr-defined]
            owner, key = known.get(id(variable), (None, str(getattr(variable, "name", "?"))))
            slots.append(
                StateSlot(
                    index,
                    variable,
                    key,
                    None if owner is None else variable_path(owner),
                    None if owner is None else tuple(int(d) for d in owner.shape),
                    storage=storage,
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
            raise TypeError(f"Argument `weights` must be a list of arrays. Received: weights={short_repr(weights)}")
        weights = list(weights)
        if len(weights) != len(self.variables):  # type: ignore[attr-defined]
            raise self._count_error(len(weights), "`weights`")
        checked = self._checked_values(weights, lambda i: f"weights[{i}]")
        for variable, value in checked:
            variable.assign(value)
