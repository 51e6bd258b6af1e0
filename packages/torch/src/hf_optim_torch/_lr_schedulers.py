"""The torch LR scheduler classes of the spec schedules, each with a ``load_state_dict`` that checks the state first.

:class:`SpecFactorLR` (``LambdaLR`` over :class:`SpecFactor` multipliers), :class:`SpecLR` (absolute lr schedules)
and :class:`PlateauLR` (``ReduceLROnPlateau``). The factories that build them are in ``_schedule_factories``.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import hf_optim_spec
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

from ._spec_factor import SpecFactor
from ._state_check import CheckedLoad, check_count, check_real

__all__ = ["PlateauLR", "SpecFactorLR", "SpecLR"]


class SpecFactorLR(CheckedLoad, LambdaLR):
    """``LambdaLR`` over :class:`SpecFactor` multipliers, whose ``load_state_dict`` checks the state first.

    What every "factor" factory returns (transformers returns ``LambdaLR``; this is one). A ``state_dict`` of another
    schedule (another spec id), of another scheduler class, or with missing or garbled fields raises a
    ValueError/TypeError naming the field, and the scheduler is left as it was.
    """

    _REQUIRED: ClassVar[frozenset[str]] = frozenset({"last_epoch", "base_lrs", "lr_lambdas"})

    def _check_own(self, state_dict: Mapping[str, Any]) -> None:
        name = type(self).__name__
        saved = state_dict["lr_lambdas"]
        if not isinstance(saved, (list, tuple)) or len(saved) != len(self.lr_lambdas):
            raise ValueError(
                f"{name} state_dict['lr_lambdas'] must be a list of {len(self.lr_lambdas)} entries (one per param "
                f"group); got {saved!r:.80}"
            )
        for k, (entry, fn) in enumerate(zip(saved, self.lr_lambdas)):
            if entry is None:
                continue
            where = f"{name} state_dict['lr_lambdas'][{k}]"
            if not isinstance(entry, Mapping) or set(entry) != set(vars(fn)):
                raise ValueError(f"{where} must be a dict with the keys {sorted(vars(fn))}; got {entry!r:.120}")
            if not isinstance(fn, SpecFactor):  # plain numbers (a constant multiplier) must stay finite numbers
                for key, value in entry.items():
                    if isinstance(vars(fn)[key], (int, float)) and not isinstance(vars(fn)[key], bool):
                        if not math.isfinite(check_real(value, f"{where}[{key!r}]")):
                            raise ValueError(f"{where}[{key!r}] must be finite; got {value!r}")
                continue
            if entry["spec_id"] != fn.spec_id:
                raise ValueError(
                    f"{where} is the state of the schedule {entry['spec_id']!r}; this scheduler runs {fn.spec_id!r}"
                )
            if entry["base_lr"] is not None and not math.isfinite(check_real(entry["base_lr"], f"{where}['base_lr']")):
                raise ValueError(f"{where}['base_lr'] must be finite; got {entry['base_lr']!r}")
            if not isinstance(entry["params"], Mapping):
                raise TypeError(
                    f"{where}['params'] must be a dict of the schedule's arguments; got {entry['params']!r}"
                )
            candidate = copy.copy(fn)
            candidate.__dict__.update(entry)
            try:
                candidate.bound()  # checks the saved arguments unless this process has already checked the same
            except (TypeError, ValueError) as error:
                raise type(error)(f"{where}: {error}") from None


class SpecLR(SpecFactorLR):
    """An LR scheduler that SETS each group's lr to an absolute schedule (spec ``"output": "lr"``).

    Same state_dict layout as ``LambdaLR`` (so the same pickling and ``weights_only`` loading); ``get_lr`` returns
    ``lr_lambda(last_epoch)`` instead of ``initial_lr * lr_lambda(last_epoch)``. Tensor group lrs are filled in
    place, so a compiled training step does not recompile when the lr changes.
    """

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return [lmbda(self.last_epoch) for lmbda in self.lr_lambdas]


class PlateauLR(CheckedLoad, ReduceLROnPlateau):
    """torch's ``ReduceLROnPlateau`` (what transformers returns) whose ``load_state_dict`` checks the state first."""

    _REQUIRED: ClassVar[frozenset[str]] = frozenset(
        {"last_epoch", "factor", "min_lrs", "patience", "cooldown", "eps", "mode", "threshold", "threshold_mode"}
        | {"best", "cooldown_counter", "num_bad_epochs", "mode_worse"}
    )

    def _check_own(self, state_dict: Mapping[str, Any]) -> None:
        name = type(self).__name__
        arguments = {key: state_dict[key] for key in ("mode", "factor", "patience", "threshold", "threshold_mode")}
        arguments |= {"cooldown": state_dict["cooldown"], "eps": state_dict["eps"]}
        try:
            hf_optim_spec.validate("reduce_lr_on_plateau", arguments, framework="torch")
        except (TypeError, ValueError) as error:
            raise type(error)(f"{name} state_dict: {error}") from None
        if state_dict.get("default_min_lr") is not None:  # torch >= 2.6: the min_lr of groups added later
            if not check_real(state_dict["default_min_lr"], f"{name} state_dict['default_min_lr']") >= 0:
                raise ValueError(
                    f"{name} state_dict['default_min_lr'] must be >= 0; got {state_dict['default_min_lr']!r}"
                )
        for k, value in enumerate(state_dict["min_lrs"]):
            if check_real(value, f"{name} state_dict['min_lrs'][{k}]") < 0:
                raise ValueError(f"{name} state_dict['min_lrs'][{k}] must be >= 0; got {value!r}")
        for key in ("cooldown_counter", "num_bad_epochs"):
            check_count(state_dict[key], f"{name} state_dict['{key}']")
        for key in ("best", "mode_worse"):
            value = check_real(state_dict[key], f"{name} state_dict['{key}']")
            if math.isnan(value):
                raise ValueError(f"{name} state_dict['{key}'] must be a number, not NaN")
        worse = math.inf if state_dict["mode"] == "min" else -math.inf
        if state_dict["mode_worse"] != worse:
            raise ValueError(
                f"{name} state_dict['mode_worse'] must be {worse} for mode={state_dict['mode']!r}; "
                f"got {state_dict['mode_worse']!r}"
            )
