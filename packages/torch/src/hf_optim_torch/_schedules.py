"""Every spec schedule as a torch LR scheduler, built generically from the spec formula.

No schedule has its own formula code here: a factory validates its arguments against the spec and wraps a
:class:`SpecFactor` (the spec expression bound to those arguments, evaluated with Python floats = the float64
reference) in ``LambdaLR``. ``SchedulerType`` and :func:`get_scheduler` are derived from the registry.
"""

from __future__ import annotations

import copy
import enum
import math
import warnings
import weakref
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import hf_optim_spec
import torch
from hf_optim_spec.formula import Bound
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, ReduceLROnPlateau

from . import _docs
from ._common import check_optimizer
from ._greedy import GreedyLR, get_greedy_schedule
from ._state_check import CheckedLoad, check_count, check_real

__all__ = [
    "GreedyLR",
    "PlateauLR",
    "SchedulerType",
    "SpecFactor",
    "SpecFactorLR",
    "SpecLR",
    "get_constant_schedule",
    "get_constant_schedule_with_warmup",
    "get_cosine_schedule_with_warmup",
    "get_cosine_with_hard_restarts_schedule_with_warmup",
    "get_cosine_with_min_lr_schedule_with_warmup",
    "get_cosine_with_min_lr_schedule_with_warmup_lr_rate",
    "get_greedy_schedule",
    "get_inverse_sqrt_schedule",
    "get_linear_schedule_with_warmup",
    "get_polynomial_decay_schedule_with_warmup",
    "get_reduce_on_plateau_schedule",
    "get_scheduler",
    "get_wsd_schedule",
]


# --------------------------------------------------------------------------- the generic factor


def _is_schedule_ref(value: object) -> bool:
    return isinstance(value, Mapping) and "schedule" in value and set(value) <= {"schedule", "params", "base_lr"}


def _plain(value: Any) -> Any:
    """Spec arguments as plain data (what ``torch.load(weights_only=True)`` accepts); schedules become refs."""
    if isinstance(value, SpecFactor):
        return value.to_ref()
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _bind(spec_id: str, params: Mapping[str, Any], base_lr: float | None) -> Bound:
    """Validate ``params`` (canonical names) and bind the spec expression; nested schedule refs bind recursively."""
    spec = hf_optim_spec.get(spec_id)
    if spec.program is None:
        raise ValueError(f"schedule {spec_id!r} is stateful and has no closed-form expression")
    resolved = {
        name: _bind(value["schedule"], value.get("params", {}), value.get("base_lr", 1.0))
        if _is_schedule_ref(value)
        else value
        for name, value in params.items()
    }
    validated = hf_optim_spec.validate(spec, resolved, base_lr=base_lr)
    # List-valued arguments (e.g. create_optimizer's include_in_weight_decay) configure something else and never
    # appear in a formula; Program.bind only takes scalars.
    scalars = {name: None if isinstance(value, (list, tuple)) else value for name, value in validated.items()}
    return spec.program.bind(scalars, base_lr=1.0 if base_lr is None else base_lr)


_BOUND: weakref.WeakKeyDictionary[SpecFactor, tuple[tuple[Any, ...], Bound]] = weakref.WeakKeyDictionary()


class SpecFactor:
    """A spec schedule bound to its arguments: a picklable callable ``step -> float``.

    Used as the ``lr_lambda`` of ``LambdaLR`` ("factor" schedules: the multiplier of each group's initial lr)
    and as the value function of :class:`SpecLR` ("lr" schedules: the absolute lr). Its ``__dict__`` holds only
    plain data (the spec id, the arguments and ``base_lr``), so it pickles, deep-copies, and a scheduler's
    ``state_dict()`` loads with ``torch.load(weights_only=True)``. The bound expression is cached outside the
    object and rebuilt whenever those fields change (e.g. after ``LambdaLR.load_state_dict``).

    Args:
        spec_id (`str`): The schedule's spec id, e.g. ``"cosine"``.
        params (`Mapping[str, Any]`): Its arguments, canonical names (schedule-typed arguments may be other
            ``SpecFactor`` objects, spec refs ``{"schedule": id, "params": {...}}`` or plain callables; only the
            first two keep the object plain data).
        base_lr (`float`, *optional*): ``base_lr`` in the formula: the optimizer's default lr.
    """

    def __init__(self, spec_id: str, params: Mapping[str, Any], base_lr: float | None = None) -> None:
        self.spec_id = spec_id
        self.params = _plain(dict(params))
        self.base_lr = None if base_lr is None else float(base_lr)

    def bound(self) -> Bound:
        """The bound float64 expression (validated; cached)."""
        key = (self.spec_id, self.params, self.base_lr)
        entry = _BOUND.get(self)
        if entry is None or entry[0] != key:
            with warnings.catch_warnings():  # the factory warned about these arguments when it built the schedule
                warnings.simplefilter("ignore", UserWarning)
                entry = (copy.deepcopy(key), _bind(self.spec_id, self.params, self.base_lr))
            _BOUND[self] = entry
        return entry[1]

    def __call__(self, step: int | float | torch.Tensor) -> float:
        return self.bound()(step)

    def to_ref(self) -> dict[str, Any]:
        """This schedule as a spec ref: ``{"schedule": id, "params": {...}, "base_lr": ...}``."""
        ref: dict[str, Any] = {"schedule": self.spec_id, "params": copy.deepcopy(self.params)}
        if self.base_lr is not None:
            ref["base_lr"] = self.base_lr
        return ref

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({self.spec_id!r}, {args}, base_lr={self.base_lr!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SpecFactor):
            return NotImplemented
        return (self.spec_id, self.params, self.base_lr) == (other.spec_id, other.params, other.base_lr)

    __hash__ = object.__hash__


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
                candidate.bound()
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


def _base_lr(optimizer: Optimizer) -> float | None:
    check_optimizer(optimizer)
    lr = optimizer.defaults.get("lr")
    if isinstance(lr, torch.Tensor):
        return float(lr.item())
    return None if lr is None else float(lr)


def _factor_schedule(spec_id: str, optimizer: Optimizer, last_epoch: int, params: dict[str, Any]) -> LambdaLR:
    """The one builder behind every "factor" factory: validate, bind, wrap in LambdaLR."""
    base_lr = _base_lr(optimizer)
    validated = hf_optim_spec.validate(spec_id, params, framework="torch", base_lr=base_lr)
    factor = SpecFactor(spec_id, validated, base_lr)
    factor.bound()
    return SpecFactorLR(optimizer, factor, last_epoch=last_epoch)


def build_schedule(spec_id: str, optimizer: Optimizer, params: Mapping[str, Any], last_epoch: int = -1) -> LRScheduler:
    """Any spec schedule from its id and a dict of arguments (torch spelling).

    "factor" schedules give ``LambdaLR``, "lr" schedules :class:`SpecLR`, the stateful ones their native class
    (:class:`PlateauLR`, a ``ReduceLROnPlateau``; :class:`GreedyLR`). Errors are the spec's (also for missing
    arguments: ``Missing required argument `x```).
    """
    check_optimizer(optimizer)
    spec = hf_optim_spec.get(spec_id)
    if spec.kind != "schedule":
        raise ValueError(f"spec {spec_id!r} is a {spec.kind}, not a schedule")
    if spec.stateful:
        hf_optim_spec.validate(spec, params, framework="torch", base_lr=_base_lr(optimizer))
        return _STATEFUL[spec_id](optimizer, **params)
    if spec.output == "lr":
        callables = {
            name: SpecFactor(value["schedule"], value.get("params", {}), value.get("base_lr"))
            if _is_schedule_ref(value)
            else value
            for name, value in params.items()
        }
        validated = hf_optim_spec.validate(spec, callables, framework="torch")
        factor = SpecFactor(spec_id, validated)
        factor.bound()
        return SpecLR(optimizer, factor, last_epoch=last_epoch)
    return _factor_schedule(spec_id, optimizer, last_epoch, dict(params))


# --------------------------------------------------------------------------- transformers' factories


def get_constant_schedule(optimizer: Optimizer, last_epoch: int = -1) -> LambdaLR:
    return _factor_schedule("constant", optimizer, last_epoch, {})


def get_constant_schedule_with_warmup(optimizer: Optimizer, num_warmup_steps: int, last_epoch: int = -1) -> LambdaLR:
    return _factor_schedule("constant_with_warmup", optimizer, last_epoch, {"num_warmup_steps": num_warmup_steps})


def get_linear_schedule_with_warmup(
    optimizer: Optimizer, num_warmup_steps: int, num_training_steps: int, last_epoch: int = -1
) -> LambdaLR:
    return _factor_schedule(
        "linear",
        optimizer,
        last_epoch,
        {"num_warmup_steps": num_warmup_steps, "num_training_steps": num_training_steps},
    )


def get_cosine_schedule_with_warmup(
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 0.5,
    last_epoch: int = -1,
    *,
    clamp_progress: bool = False,
) -> LambdaLR:
    return _factor_schedule(
        "cosine",
        optimizer,
        last_epoch,
        {
            "num_warmup_steps": num_warmup_steps,
            "num_training_steps": num_training_steps,
            "num_cycles": num_cycles,
            "clamp_progress": clamp_progress,
        },
    )


def get_cosine_with_hard_restarts_schedule_with_warmup(
    optimizer: Optimizer, num_warmup_steps: int, num_training_steps: int, num_cycles: int = 1, last_epoch: int = -1
) -> LambdaLR:
    return _factor_schedule(
        "cosine_with_restarts",
        optimizer,
        last_epoch,
        {"num_warmup_steps": num_warmup_steps, "num_training_steps": num_training_steps, "num_cycles": num_cycles},
    )


def get_polynomial_decay_schedule_with_warmup(
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    lr_end: float = 1e-7,
    power: float = 1.0,
    last_epoch: int = -1,
) -> LambdaLR:
    return _factor_schedule(
        "polynomial",
        optimizer,
        last_epoch,
        {
            "num_warmup_steps": num_warmup_steps,
            "num_training_steps": num_training_steps,
            "lr_end": lr_end,
            "power": power,
        },
    )


def get_inverse_sqrt_schedule(
    optimizer: Optimizer, num_warmup_steps: int, timescale: int | None = None, last_epoch: int = -1
) -> LambdaLR:
    return _factor_schedule(
        "inverse_sqrt", optimizer, last_epoch, {"num_warmup_steps": num_warmup_steps, "timescale": timescale}
    )


def get_cosine_with_min_lr_schedule_with_warmup(
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 0.5,
    last_epoch: int = -1,
    min_lr: float | None = None,
    min_lr_rate: float | None = None,
    *,
    clamp_progress: bool = False,
) -> LambdaLR:
    return _factor_schedule(
        "cosine_with_min_lr",
        optimizer,
        last_epoch,
        {
            "num_warmup_steps": num_warmup_steps,
            "num_training_steps": num_training_steps,
            "num_cycles": num_cycles,
            "min_lr": min_lr,
            "min_lr_rate": min_lr_rate,
            "clamp_progress": clamp_progress,
        },
    )


def get_cosine_with_min_lr_schedule_with_warmup_lr_rate(
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 0.5,
    last_epoch: int = -1,
    min_lr: float | None = None,
    min_lr_rate: float | None = None,
    warmup_lr_rate: float | None = None,
    *,
    clamp_progress: bool = False,
) -> LambdaLR:
    return _factor_schedule(
        "cosine_warmup_with_min_lr",
        optimizer,
        last_epoch,
        {
            "num_warmup_steps": num_warmup_steps,
            "num_training_steps": num_training_steps,
            "num_cycles": num_cycles,
            "min_lr": min_lr,
            "min_lr_rate": min_lr_rate,
            "warmup_lr_rate": warmup_lr_rate,
            "clamp_progress": clamp_progress,
        },
    )


def get_wsd_schedule(
    optimizer: Optimizer,
    num_warmup_steps: int,
    num_decay_steps: int,
    num_training_steps: int | None = None,
    num_stable_steps: int | None = None,
    warmup_type: str = "linear",
    decay_type: str = "cosine",
    min_lr_ratio: float = 0,
    num_cycles: float = 0.5,
    last_epoch: int = -1,
) -> LambdaLR:
    return _factor_schedule(
        "warmup_stable_decay",
        optimizer,
        last_epoch,
        {
            "num_warmup_steps": num_warmup_steps,
            "num_decay_steps": num_decay_steps,
            "num_training_steps": num_training_steps,
            "num_stable_steps": num_stable_steps,
            "warmup_type": warmup_type,
            "decay_type": decay_type,
            "min_lr_ratio": min_lr_ratio,
            "num_cycles": num_cycles,
        },
    )


_STATEFUL: dict[str, Callable[..., LRScheduler]] = {"reduce_lr_on_plateau": PlateauLR, "greedy": GreedyLR}
"""The native class of each stateful (metric-driven) schedule spec."""


def get_reduce_on_plateau_schedule(optimizer: Optimizer, **kwargs: Any) -> ReduceLROnPlateau:
    scheduler = build_schedule("reduce_lr_on_plateau", optimizer, kwargs)
    assert isinstance(scheduler, ReduceLROnPlateau)
    return scheduler


def get_adafactor_relative_step_schedule(
    optimizer: Optimizer,
    rms: float,
    lr: float | None = None,
    scale_parameter: bool = True,
    relative_step: bool = True,
    warmup_init: bool = False,
    eps2: float = 1e-3,
    last_epoch: int = -1,
) -> LambdaLR:
    params = {
        "rms": rms,
        "lr": lr,
        "scale_parameter": scale_parameter,
        "relative_step": relative_step,
        "warmup_init": warmup_init,
        "eps2": eps2,
    }
    scheduler = build_schedule("adafactor_relative_step", optimizer, params, last_epoch)
    assert isinstance(scheduler, LambdaLR)
    return scheduler


_TYPE_NAMES = {
    "integer": "int",
    "number": "float",
    "boolean": "bool",
    "string": "str",
    "number_pair": "tuple[float, float]",
    "number_or_list": "float | list[float]",
    "string_list": "list[str]",
    "schedule": "Callable",
}


def _schedule_doc(spec_id: str, extra_args: str = "") -> str:
    """A factory docstring from its spec: summary, Args (every parameter with its default), Returns."""
    spec = hf_optim_spec.get(spec_id)
    lines = [
        spec.summary,
        "",
        "    Args:",
        "        optimizer ([`~torch.optim.Optimizer`]):",
        "            The optimizer whose learning rate the schedule drives.",
    ]
    for name, param in spec.parameters.items():
        default = "" if param.required else f", *optional*, defaults to `{param.default!r}`"
        kind = "Keyword-only. " if param.extension else ""
        type_name = " | ".join(_TYPE_NAMES.get(t, t) for t in param.type_name.split(" | "))
        lines.append(f"        {name} (`{type_name}`{default}):")
        lines.append(f"            {kind}{param.description}")
    if extra_args:
        lines.append(extra_args)
    if spec.constraints or spec.errors:
        lines += [
            "",
            "    Raises:",
            f"        ValueError, TypeError: the spec's errors for invalid arguments (see the spec ``{spec_id}``).",
        ]
    return "\n".join(lines)


for _func, _id in (
    (get_constant_schedule, "constant"),
    (get_constant_schedule_with_warmup, "constant_with_warmup"),
    (get_linear_schedule_with_warmup, "linear"),
    (get_cosine_schedule_with_warmup, "cosine"),
    (get_cosine_with_hard_restarts_schedule_with_warmup, "cosine_with_restarts"),
    (get_polynomial_decay_schedule_with_warmup, "polynomial"),
    (get_inverse_sqrt_schedule, "inverse_sqrt"),
    (get_cosine_with_min_lr_schedule_with_warmup, "cosine_with_min_lr"),
    (get_cosine_with_min_lr_schedule_with_warmup_lr_rate, "cosine_warmup_with_min_lr"),
    (get_wsd_schedule, "warmup_stable_decay"),
    (get_adafactor_relative_step_schedule, "adafactor_relative_step"),
):
    _func.__doc__ = _schedule_doc(_id, f"        {_docs.LAST_EPOCH}") + f"\n\n    {_docs.SCHEDULE_RETURNS}\n"
get_reduce_on_plateau_schedule.__doc__ = (
    _schedule_doc("reduce_lr_on_plateau")
    + "\n\n    Returns:\n        `torch.optim.lr_scheduler.ReduceLROnPlateau` with the validated arguments.\n"
)
get_greedy_schedule.__doc__ = (
    _schedule_doc("greedy")
    + "\n\n    Returns:\n        :class:`GreedyLR` with the validated arguments; call ``scheduler.step(metric)`` after each"
    " evaluation.\n"
)


# --------------------------------------------------------------------------- SchedulerType, get_scheduler


def _scheduler_members() -> dict[str, str]:
    members: dict[str, str] = {}
    for spec in hf_optim_spec.registry().values():
        for name in spec.hf_name:
            if name.startswith("SchedulerType."):
                members[name.split(".", 1)[1]] = spec.id
    return members


class _SchedulerTypeBase(str, enum.Enum):
    @classmethod
    def _missing_(cls, value: object) -> Any:
        raise ValueError(
            f"{value} is not a valid {cls.__name__}, please select one of {list(cls._value2member_map_.keys())}"
        )

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, format_spec: str) -> str:
        return format(str(self.value), format_spec)


SchedulerType = _SchedulerTypeBase(  # type: ignore[call-overload]
    "SchedulerType", _scheduler_members(), module=__name__, qualname="SchedulerType"
)
SchedulerType.__doc__ = (
    "The scheduler names of transformers' ``SchedulerType``, generated from the spec registry "
    "(every schedule spec whose ``hf_name`` lists ``SchedulerType.<NAME>``); the value is the spec id."
)

_GENERIC_COUNTS = ("num_warmup_steps", "num_training_steps")


def get_scheduler(
    name: str | SchedulerType,  # type: ignore[valid-type]
    optimizer: Optimizer,
    num_warmup_steps: int | None = None,
    num_training_steps: int | None = None,
    scheduler_specific_kwargs: dict[str, Any] | None = None,
) -> LRScheduler:
    """Unified API to get any scheduler from its name (transformers' rules, driven by the spec registry).

    Args:
        name (`str` or `SchedulerType`): The name of the scheduler to use.
        optimizer (`torch.optim.Optimizer`): The optimizer that will be used during training.
        num_warmup_steps (`int`, *optional*): The number of warmup steps to do. Passed to schedules that take it;
            a ValueError names it when the schedule requires it and it is None.
        num_training_steps (`int`, *optional*): The number of training steps to do. Same rule.
        scheduler_specific_kwargs (`dict`, *optional*): Extra arguments of the schedule (e.g. ``num_cycles``).
            Every key is forwarded; an unknown key raises the spec's TypeError (transformers silently drops the
            kwargs of constant, constant_with_warmup and inverse_sqrt).

    Returns:
        The scheduler built by the schedule's factory (``LambdaLR``, ``ReduceLROnPlateau`` or :class:`GreedyLR`).

    Raises:
        ValueError: unknown name, or a required count is None
            ("SchedulerType.COSINE requires `num_training_steps`, please provide that argument.").
        TypeError: an argument the schedule does not take.
    """
    kind = SchedulerType(name)  # type: ignore[operator]
    spec = hf_optim_spec.get(kind.value)
    factory: Callable[..., LRScheduler] = _FACTORIES[spec.api["torch"]]
    kwargs = dict(scheduler_specific_kwargs or {})
    if not spec.stateful:
        for count_name, value in zip(_GENERIC_COUNTS, (num_warmup_steps, num_training_steps)):
            param = spec.parameters.get(count_name)
            if param is None:
                continue
            if value is None and param.required:
                # transformers formats the enum member (Python >= 3.11): "SchedulerType.COSINE requires ..."
                raise ValueError(f"SchedulerType.{kind.name} requires `{count_name}`, please provide that argument.")
            if count_name in kwargs:
                raise TypeError(f"{spec.api['torch']}() got multiple values for argument '{count_name}'")
            kwargs[count_name] = value
    spec_kwargs = {k: v for k, v in kwargs.items() if k != "last_epoch"}
    hf_optim_spec.validate(spec, spec_kwargs, framework="torch", base_lr=_base_lr(optimizer))
    return factory(optimizer, **kwargs)


_FACTORIES: dict[str, Callable[..., LRScheduler]] = {
    func.__name__: func
    for func in (
        get_constant_schedule,
        get_constant_schedule_with_warmup,
        get_linear_schedule_with_warmup,
        get_cosine_schedule_with_warmup,
        get_cosine_with_hard_restarts_schedule_with_warmup,
        get_polynomial_decay_schedule_with_warmup,
        get_inverse_sqrt_schedule,
        get_cosine_with_min_lr_schedule_with_warmup,
        get_cosine_with_min_lr_schedule_with_warmup_lr_rate,
        get_wsd_schedule,
        get_reduce_on_plateau_schedule,
        get_greedy_schedule,
    )
}
