"""Every spec schedule as a Keras ``LearningRateSchedule``, lowered generically to ``keras.ops``.

One class, :class:`SpecSchedule`, binds a spec's formula (``hf_optim_spec.formula``) to the
arguments and lowers the folded tree to ``keras.ops`` on each call: no per-schedule code. The
public factories below only carry transformers' names and signatures (``learning_rate`` where
torch takes ``optimizer``).

Numerics: the formula is evaluated in float64 and the final learning rate is cast once to
``keras.config.floatx()`` (float32 by default). torch's ``LambdaLR`` computes
``base_lr * factor`` in Python floats and the optimizer rounds it to float32, so both frameworks
see the same float32 learning rate (up to float64 libm differences in ``cos``/``sqrt``).
"""

from __future__ import annotations

import enum
import functools
import inspect
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import hf_optim_spec as hs
import keras
from hf_optim_spec import formula
from keras import ops

from ._staged_restore import StagedRestore
from ._state_check import StateSlot, checked_value

__all__ = [
    "PlateauSchedule",
    "SchedulerType",
    "SpecSchedule",
    "get_constant_schedule",
    "get_constant_schedule_with_warmup",
    "get_cosine_schedule_with_warmup",
    "get_cosine_with_hard_restarts_schedule_with_warmup",
    "get_cosine_with_min_lr_schedule_with_warmup",
    "get_cosine_with_min_lr_schedule_with_warmup_lr_rate",
    "get_inverse_sqrt_schedule",
    "get_linear_schedule_with_warmup",
    "get_polynomial_decay_schedule_with_warmup",
    "get_reduce_on_plateau_schedule",
    "get_scheduler",
    "get_wsd_schedule",
    "lower_to_keras",
]

_Schedule = keras.optimizers.schedules.LearningRateSchedule


# --------------------------------------------------------------------------- lowering


def _truth(x: Any) -> Any:
    return x if str(getattr(x, "dtype", "")) == "bool" else ops.not_equal(x, 0.0)


_BINARY: Mapping[str, Callable[[Any, Any], Any]] = {
    "+": ops.add,
    "-": ops.subtract,
    "*": ops.multiply,
    "/": ops.divide,
    "%": ops.mod,
    "**": ops.power,
}
_COMPARE: Mapping[str, Callable[[Any, Any], Any]] = {
    "<": ops.less,
    "<=": ops.less_equal,
    ">": ops.greater,
    ">=": ops.greater_equal,
    "==": ops.equal,
    "!=": ops.not_equal,
}
_UNARY: Mapping[str, Callable[[Any], Any]] = {
    "abs": ops.abs,
    "floor": ops.floor,
    "sqrt": ops.sqrt,
    "cos": ops.cos,
    "sin": ops.sin,
    "exp": ops.exp,
    "log": ops.log,
}


class _KerasOps:
    """``formula.LoweringOps`` for ``keras.ops``, in float64, with ``step`` already a tensor."""

    def __init__(self, step: Any) -> None:
        self._step = step

    def constant(self, value: float) -> Any:
        return ops.convert_to_tensor(value, dtype="float64")

    def step(self) -> Any:
        return self._step

    def binary(self, op: str, a: Any, b: Any) -> Any:
        return _BINARY[op](a, b)

    def neg(self, a: Any) -> Any:
        return ops.negative(a)

    def compare(self, op: str, a: Any, b: Any) -> Any:
        return _COMPARE[op](a, b)

    def logical(self, op: str, a: Any, b: Any) -> Any:
        fn = ops.logical_and if op == "and" else ops.logical_or
        return fn(_truth(a), _truth(b))

    def not_(self, a: Any) -> Any:
        return ops.logical_not(_truth(a))

    def select(self, cond: Any, a: Any, b: Any) -> Any:
        return ops.where(_truth(cond), a, b)

    def call(self, func: str, args: list[Any]) -> Any:
        if func in ("min", "max"):
            fn = ops.minimum if func == "min" else ops.maximum
            return functools.reduce(fn, args)
        return _UNARY[func](args[0])

    def schedule(self, schedule: Callable[[Any], Any], arg: Any) -> Any:
        nested = getattr(schedule, "_lower", None)
        if nested is not None:  # a spec-lowered schedule: stay in float64, no intermediate cast
            return nested(arg)
        return ops.cast(schedule(arg), "float64")


def lower_to_keras(bound: formula.Bound, step: Any) -> Any:
    """The float64 ``keras.ops`` value of a bound formula at ``step`` (any numeric tensor)."""
    return formula.lower(bound.tree, _KerasOps(ops.cast(step, "float64")))


# --------------------------------------------------------------------------- the generic schedule


def _tf_params(spec: hs.Spec, canonical: Mapping[str, Any]) -> dict[str, Any]:
    """Canonical-name values spelled as a Keras user passes them (pairs split)."""
    out: dict[str, Any] = {}
    for name, value in canonical.items():
        alias = spec.parameters[name].name_for("tf")
        if isinstance(alias, tuple):
            out[alias[0]], out[alias[1]] = value
        else:
            out[alias] = value
    return out


@keras.saving.register_keras_serializable(package="hf_optim")
class SpecSchedule(_Schedule):
    """A spec schedule (by id) as a Keras ``LearningRateSchedule``.

    ``spec.output == "factor"`` schedules return ``learning_rate * factor(step)`` (torch's
    ``LambdaLR``: ``base_lr`` in the formula is ``learning_rate``); ``"lr"`` schedules return
    the formula's value. The formula is lowered to ``keras.ops`` in float64 and the result is
    cast to ``keras.config.floatx()``, so it traces inside ``apply_gradients`` and under
    ``jit_compile=True``.

    Args:
        spec_id: a schedule id of ``hf_optim_spec.registry()`` (not a stateful one).
        learning_rate: the optimizer learning rate the factor multiplies (``base_lr``).
            Required for factor schedules; ignored (may be None) for ``"lr"`` schedules.
        params: the schedule's arguments, spelled as a Keras user spells them.
        name: optional name (a str or None). When the spec has a ``name`` parameter, a given
            name is checked against it (``params["name"]`` is checked too, None included).

    Raises:
        TypeError, ValueError: the spec's uniform errors for bad arguments.
    """

    def __init__(
        self,
        spec_id: str,
        learning_rate: float | None = None,
        params: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__()
        spec = _schedule_spec(spec_id)
        if params is not None and not isinstance(params, Mapping):
            raise TypeError(
                f"Argument `params` must be a dict of the schedule's arguments. Received: params={params!r} "
                f"(of type {type(params).__name__})"
            )
        given = dict(params or {})
        if "name" in spec.parameters:  # the spec types Keras' name scope (str or None)
            if name is not None:
                given["name"] = name
        elif name is not None and not isinstance(name, str):
            raise TypeError(
                f"Argument `name` must be a str or None. Received: name={name!r} (of type {type(name).__name__})"
            )
        if spec.output == "factor" or learning_rate is not None:
            learning_rate = _checked_learning_rate(learning_rate)
        resolved = hs.validate(spec, given, framework="tf", base_lr=learning_rate)
        resolved.pop("name", None)  # not a formula argument; kept in `self.name`
        self.spec_id = spec.id
        self.learning_rate = learning_rate
        self.params = _tf_params(spec, resolved)
        self.name = name
        self._spec = spec
        # List-valued arguments (create_optimizer's include_in_weight_decay) never enter a formula.
        scalars = {k: (None if spec.parameters[k].type == "string_list" else v) for k, v in resolved.items()}
        self._bound = spec.program.bind(scalars, base_lr=1.0 if learning_rate is None else learning_rate)

    def _lower(self, step: Any) -> Any:
        value = lower_to_keras(self._bound, step)
        if self._spec.output == "factor":
            value = ops.multiply(ops.convert_to_tensor(self.learning_rate, dtype="float64"), value)
        return value

    def __call__(self, step: Any) -> Any:
        return ops.cast(self._lower(step), keras.config.floatx())

    def get_config(self) -> dict[str, Any]:
        params = {
            key: keras.saving.serialize_keras_object(value) if callable(value) else value
            for key, value in self.params.items()
        }
        return {"spec_id": self.spec_id, "learning_rate": self.learning_rate, "params": params, "name": self.name}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> SpecSchedule:
        """The schedule of a :meth:`get_config` dict.

        Raises:
            TypeError: ``config`` is not a dict, lacks a required field or holds a field the class does not take
                (for example another schedule class's config); the spec's uniform errors for bad fields.
        """
        config = checked_config(cls, config)
        if isinstance(config.get("params"), Mapping):
            config["params"] = _deserialize_params(config["params"])
        return cls(**config)


def _schedule_spec(spec_id: object) -> hs.Spec:
    """The spec of a closed-form schedule: ``spec_id`` a str (TypeError) naming one (ValueError)."""
    if not isinstance(spec_id, str):
        raise TypeError(
            f"Argument `spec_id` must be a str (a schedule id of hf_optim_spec). Received: spec_id={spec_id!r} "
            f"(of type {type(spec_id).__name__})"
        )
    try:
        spec = hs.get(spec_id)
    except KeyError:
        spec = None
    if spec is None or spec.kind != "schedule" or spec.program is None:
        known = sorted(s.id for s in hs.registry().values() if s.kind == "schedule" and s.program is not None)
        raise ValueError(
            f"Argument `spec_id` must be the id of a closed-form schedule spec ({', '.join(known)}). "
            f"Received: spec_id={spec_id!r}"
        )
    return spec


def checked_config(cls: type, config: object) -> dict[str, Any]:
    """A copy of ``config`` after checking its fields against ``cls.__init__``'s arguments.

    Keras rebuilds a schedule from a ``.keras`` file with ``cls.from_config(config)``; a garbled config, or the
    config of another schedule class, must fail there with an error that names the field.

    Raises:
        TypeError: ``config`` is not a dict, has a key that is not a str, lacks a required argument of ``cls`` or
            holds one ``cls`` does not take (and ``cls.__init__`` takes no ``**kwargs``).
    """
    name = cls.__name__
    if not isinstance(config, Mapping):
        raise TypeError(
            f"Argument `config` must be a dict (the output of {name}.get_config()). Received: config={config!r} "
            f"(of type {type(config).__name__})"
        )
    parameters = list(inspect.signature(cls.__init__).parameters.values())[1:]
    named = [p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in config:
        if not isinstance(key, str):
            raise TypeError(f"The config of {name} must have str keys. Received: a key {key!r}")
    if not any(p.kind is p.VAR_KEYWORD for p in parameters):
        unknown = [key for key in config if key not in named]
        if unknown:
            raise TypeError(
                f"Unknown field `{unknown[0]}` in the config of {name} (the config of another schedule?). "
                f"Valid fields: {', '.join(named)}. Received: fields {sorted(config)}"
            )
    missing = [p.name for p in parameters if p.name in named and p.default is p.empty and p.name not in config]
    if missing:
        raise TypeError(
            f"Missing field `{missing[0]}` in the config of {name} (the config of another schedule?). "
            f"Received: fields {sorted(config)}"
        )
    return dict(config)


def _is_number(value: Any) -> bool:
    if isinstance(value, (bool, str, bytes)) or value is None:
        return False
    if isinstance(value, numbers.Real):
        return True
    return hasattr(value, "__float__") and getattr(value, "ndim", 0) == 0


def _deserialize_params(params: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: keras.saving.deserialize_keras_object(value)
        if isinstance(value, dict) and "class_name" in value
        else value
        for key, value in params.items()
    }


# --------------------------------------------------------------------------- reduce on plateau


if keras.backend.backend() == "tensorflow":
    import tensorflow as tf

    # A TF trackable: tf.train.Checkpoint saves and restores the schedule's state variables.
    _Trackable = tf.__internal__.tracking.AutoTrackable
    _no_automatic_dependency_tracking = tf.__internal__.tracking.no_automatic_dependency_tracking
else:

    class _Trackable:  # type: ignore[no-redef]
        """Off TensorFlow there is no ``tf.train.Checkpoint``: the state lives in ``get_config`` (``.keras``)."""

        def _track_trackable(self, trackable: Any, name: str) -> Any:
            return trackable

    def _no_automatic_dependency_tracking(method: Any) -> Any:  # type: ignore[no-redef]
        return method


_PLATEAU_STATE = ("lr", "best", "num_bad_epochs", "cooldown_counter")


def metric_lr(schedule: Any) -> Any:
    """The current lr of a metric-stepped schedule (``schedule.lr``, held in ``schedule._state["lr"]``) as a tensor.

    Keras' JAX trainer compiles the step with the optimizer's variables as its state; a schedule's own state is not
    among them, so a plain read would freeze the lr of the first trace. On JAX a host callback reads it every step.
    """
    if keras.backend.backend() == "jax":
        import jax
        import numpy as np
        from jax.experimental import io_callback

        dtype = jax.dtypes.canonicalize_dtype(keras.config.floatx())
        return io_callback(lambda: np.asarray(schedule.lr, dtype), jax.ShapeDtypeStruct((), dtype), ordered=False)
    return ops.cast(schedule._state["lr"], keras.config.floatx())


@keras.saving.register_keras_serializable(package="hf_optim")
class PlateauSchedule(StagedRestore, _Schedule, _Trackable):
    """transformers' ``reduce_lr_on_plateau`` (torch ``ReduceLROnPlateau``) for Keras.

    A stateful schedule: :meth:`step` updates the learning rate on the host from a metric value,
    with torch's rules (``mode``, ``factor``, ``patience``, ``threshold``, ``threshold_mode``,
    ``cooldown``, ``min_lr``, ``eps``), and the traced optimizer step reads it. Pass it as the
    optimizer's ``learning_rate`` and either call ``schedule.step(metric)`` after each evaluation
    or add ``schedule.callback(monitor)`` to ``model.fit`` (it steps at the end of every epoch).

    State: ``lr`` (float64), ``best`` (float64), ``num_bad_epochs`` and ``cooldown_counter``
    (int64) are non-trainable variables, and the schedule is a TensorFlow trackable object whose
    checkpoint dependencies are exactly those four names. So ``tf.train.Checkpoint(schedule=s)``,
    and ``tf.train.Checkpoint(optimizer=opt)`` for an optimizer built on it (the optimizer tracks
    its learning-rate schedule), save and restore the state, and a restored run continues bit for
    bit. The state is also part of ``get_config``, so a saved ``.keras`` model resumes where it
    stopped. The new lr is computed with Python floats (as torch does), kept in float64 and cast
    to floatx when the optimizer reads it.

    A restored state (``state`` of a config, or the four variables from a ``tf.train.Checkpoint``) is checked
    before any of it is set: ``lr`` finite and >= 0, ``best`` not NaN (``inf``/``-inf`` before the first metric),
    ``num_bad_epochs`` and ``cooldown_counter`` non-negative integers; a checkpoint must hold all four and
    nothing else (``hf_optim_tf._state_check``).

    Args:
        learning_rate: the starting learning rate (torch: the optimizer's lr).
        name: optional name (str or None).
        state: internal; the saved state when restoring from a config.
        **kwargs: the spec parameters of ``reduce_lr_on_plateau`` (torch spelling).

    Raises:
        TypeError, ValueError: the spec's uniform errors for bad arguments; a ``state`` that is not a dict of the
            four values, or a value that breaks the rules above.
    """

    @_no_automatic_dependency_tracking
    def __init__(
        self,
        learning_rate: float,
        name: str | None = None,
        state: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        spec = hs.get("reduce_lr_on_plateau")
        learning_rate = _checked_learning_rate(learning_rate)
        resolved = hs.validate(spec, kwargs, framework="tf", base_lr=learning_rate)
        self.learning_rate = learning_rate
        self.params = _tf_params(spec, resolved)
        self._canonical = resolved
        if name is not None and not isinstance(name, str):
            raise TypeError(
                f"Argument `name` must be a str or None. Received: name={name!r} (of type {type(name).__name__})"
            )
        self.name = name
        initial = {
            "lr": ("float64", self.learning_rate),
            "best": ("float64", math.inf if resolved["mode"] == "min" else -math.inf),
            "num_bad_epochs": ("int64", 0),
            "cooldown_counter": ("int64", 0),
        }
        self._state: dict[str, Any] = {}
        # Off TensorFlow the variables are written only here (no tf.train.Checkpoint), and JAX without x64 keeps
        # float64 as float32: the host copy keeps torch's Python-float state exactly, the variables mirror it.
        self._host: dict[str, Any] | None = None if keras.backend.backend() == "tensorflow" else {}
        for key, (dtype, value) in initial.items():
            variable = keras.Variable(value, dtype=dtype, trainable=False, autocast=False, name=f"plateau_{key}")
            self._state[key] = variable
            self._hook_restore(variable)  # before TF tracks it: tracking may restore it (a deferred restore)
            self._track_trackable(variable, name=key)
            if self._host is not None:
                self._host[key] = value
        if state is not None:
            self._set_state(state)

    def _restore_slots(self) -> list[StateSlot]:
        return [
            StateSlot(index, variable, key, label="state variable")
            for index, (key, variable) in enumerate(self._state.items())
        ]

    def _set_state(self, state: object) -> None:
        """Check a saved ``state`` dict (all four values) and set it; nothing is set if any value is wrong."""
        if not isinstance(state, Mapping):
            raise TypeError(
                f"Argument `state` must be a dict with {', '.join(_PLATEAU_STATE)}. Received: state={state!r} "
                f"(of type {type(state).__name__})"
            )
        unknown = [str(key) for key in state if key not in _PLATEAU_STATE]
        missing = [key for key in _PLATEAU_STATE if key not in state]
        if unknown or missing:
            raise TypeError(
                f"Argument `state` must hold exactly {', '.join(_PLATEAU_STATE)}. Received: missing {missing}, "
                f"unknown {unknown}"
            )
        checked = [
            (slot.variable, checked_value(slot, state[slot.key], f"state[{slot.key!r}]", type(self).__name__))
            for slot in self._restore_slots()
        ]
        for variable, value in checked:
            variable.assign(value)
        if self._host is not None:
            self._host.update({slot.key: value for slot, (_, value) in zip(self._restore_slots(), checked)})

    @property
    def lr(self) -> float:
        """The current learning rate (Python float; the optimizer reads it cast to floatx)."""
        return float(self._read("lr"))

    @property
    def best(self) -> float:
        """The best metric seen so far (``inf`` / ``-inf`` before the first one)."""
        return float(self._read("best"))

    @property
    def num_bad_epochs(self) -> int:
        """Metrics in a row that did not improve on ``best`` (reset by a reduction and by cooldown)."""
        return int(self._read("num_bad_epochs"))

    @property
    def cooldown_counter(self) -> int:
        """Steps of cooldown left after the last reduction."""
        return int(self._read("cooldown_counter"))

    @property
    def variables(self) -> list[Any]:
        """The state variables: ``lr``, ``best``, ``num_bad_epochs``, ``cooldown_counter``."""
        return list(self._state.values())

    def _improved(self, metric: float, best: float) -> bool:
        p = self._canonical
        if p["mode"] == "min":
            bar = best * (1.0 - p["threshold"]) if p["threshold_mode"] == "rel" else best - p["threshold"]
            return metric < bar
        bar = best * (p["threshold"] + 1.0) if p["threshold_mode"] == "rel" else best + p["threshold"]
        return metric > bar

    def step(self, metric: Any) -> float:
        """Record one metric value; returns the (possibly reduced) learning rate."""
        p = self._canonical
        value = float(metric)
        lr, best = self.lr, self.best
        num_bad_epochs, cooldown_counter = self.num_bad_epochs, self.cooldown_counter
        if self._improved(value, best):
            best, num_bad_epochs = value, 0
        else:
            num_bad_epochs += 1
        if cooldown_counter > 0:
            cooldown_counter -= 1
            num_bad_epochs = 0
        if num_bad_epochs > p["patience"]:
            reduced = max(lr * p["factor"], p["min_lr"])
            if lr - reduced > p["eps"]:
                lr = reduced
            cooldown_counter, num_bad_epochs = p["cooldown"], 0
        new = {"lr": lr, "best": best, "num_bad_epochs": num_bad_epochs, "cooldown_counter": cooldown_counter}
        for key, variable in self._state.items():
            variable.assign(new[key])
        if self._host is not None:
            self._host.update(new)
        return lr

    def callback(self, monitor: str = "val_loss") -> keras.callbacks.Callback:
        """A Keras callback that calls :meth:`step` with ``logs[monitor]`` after every epoch."""
        return _PlateauCallback(self, monitor)

    def _read(self, key: str) -> Any:
        if self._host is not None:
            return self._host[key]
        return self._state[key].numpy()

    def __call__(self, step: Any) -> Any:
        return metric_lr(self)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PlateauSchedule:
        """The schedule of a :meth:`get_config` dict, its state checked (see the class docstring)."""
        return cls(**checked_config(cls, config))

    def get_config(self) -> dict[str, Any]:
        return {
            "learning_rate": self.learning_rate,
            "name": self.name,
            "state": {
                "lr": self.lr,
                "best": self.best,
                "num_bad_epochs": self.num_bad_epochs,
                "cooldown_counter": self.cooldown_counter,
            },
            **self.params,
        }


class _PlateauCallback(keras.callbacks.Callback):
    def __init__(self, schedule: PlateauSchedule, monitor: str) -> None:
        super().__init__()
        self.schedule = schedule
        self.monitor = monitor

    def on_epoch_end(self, epoch: int, logs: Mapping[str, Any] | None = None) -> None:
        logs = logs or {}
        if self.monitor not in logs:
            raise KeyError(f"PlateauSchedule monitors `{self.monitor}`, which is not in the logs: {sorted(logs)}")
        self.schedule.step(logs[self.monitor])


# --------------------------------------------------------------------------- public factories


def _checked_learning_rate(learning_rate: object) -> float:
    """The schedule's base learning rate as a float: a real number (TypeError) and finite (ValueError).

    A NaN or infinite base would make every lr of the schedule NaN or infinite without an error.
    """
    if learning_rate is None or isinstance(learning_rate, bool) or not _is_number(learning_rate):
        raise TypeError(
            f"Argument `learning_rate` must be a number. Received: learning_rate={learning_rate!r}"
            f" (of type {type(learning_rate).__name__})"
        )
    value = float(learning_rate)  # type: ignore[arg-type]
    if not math.isfinite(value):
        raise ValueError(f"Argument `learning_rate` must be finite. Received: learning_rate={learning_rate!r}")
    return value


def _make(spec_id: str, learning_rate: float, **params: Any) -> SpecSchedule:
    return SpecSchedule(spec_id, learning_rate, params)


def get_constant_schedule(learning_rate: float) -> SpecSchedule:
    """Constant learning rate (transformers ``get_constant_schedule``)."""
    return _make("constant", learning_rate)


def get_constant_schedule_with_warmup(learning_rate: float, num_warmup_steps: int) -> SpecSchedule:
    """Linear warmup from 0, then constant (``get_constant_schedule_with_warmup``)."""
    return _make("constant_with_warmup", learning_rate, num_warmup_steps=num_warmup_steps)


def get_linear_schedule_with_warmup(
    learning_rate: float, num_warmup_steps: int, num_training_steps: int
) -> SpecSchedule:
    """Linear warmup, then linear decay to 0 (``get_linear_schedule_with_warmup``)."""
    return _make("linear", learning_rate, num_warmup_steps=num_warmup_steps, num_training_steps=num_training_steps)


def get_cosine_schedule_with_warmup(
    learning_rate: float,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 0.5,
    *,
    clamp_progress: bool = False,
) -> SpecSchedule:
    """Linear warmup, then cosine decay (``get_cosine_schedule_with_warmup``).

    ``clamp_progress=True`` (extension) holds the end value past ``num_training_steps`` instead of
    transformers' rebound."""
    return _make(
        "cosine",
        learning_rate,
        num_warmup_steps=num_warmup_steps,
        num_training_steps=num_training_steps,
        num_cycles=num_cycles,
        clamp_progress=clamp_progress,
    )


def get_cosine_with_hard_restarts_schedule_with_warmup(
    learning_rate: float, num_warmup_steps: int, num_training_steps: int, num_cycles: int = 1
) -> SpecSchedule:
    """Linear warmup, then cosine decay with hard restarts
    (``get_cosine_with_hard_restarts_schedule_with_warmup``)."""
    return _make(
        "cosine_with_restarts",
        learning_rate,
        num_warmup_steps=num_warmup_steps,
        num_training_steps=num_training_steps,
        num_cycles=num_cycles,
    )


def get_polynomial_decay_schedule_with_warmup(
    learning_rate: float, num_warmup_steps: int, num_training_steps: int, lr_end: float = 1e-7, power: float = 1.0
) -> SpecSchedule:
    """Linear warmup, then polynomial decay to ``lr_end``
    (``get_polynomial_decay_schedule_with_warmup``)."""
    return _make(
        "polynomial",
        learning_rate,
        num_warmup_steps=num_warmup_steps,
        num_training_steps=num_training_steps,
        lr_end=lr_end,
        power=power,
    )


def get_inverse_sqrt_schedule(
    learning_rate: float, num_warmup_steps: int, timescale: int | None = None
) -> SpecSchedule:
    """Linear warmup, then inverse square-root decay (``get_inverse_sqrt_schedule``)."""
    return _make("inverse_sqrt", learning_rate, num_warmup_steps=num_warmup_steps, timescale=timescale)


def get_cosine_with_min_lr_schedule_with_warmup(
    learning_rate: float,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 0.5,
    min_lr: float | None = None,
    min_lr_rate: float | None = None,
    *,
    clamp_progress: bool = False,
) -> SpecSchedule:
    """Linear warmup, then cosine decay to a minimum lr
    (``get_cosine_with_min_lr_schedule_with_warmup``); ``clamp_progress`` is an extension."""
    return _make(
        "cosine_with_min_lr",
        learning_rate,
        num_warmup_steps=num_warmup_steps,
        num_training_steps=num_training_steps,
        num_cycles=num_cycles,
        min_lr=min_lr,
        min_lr_rate=min_lr_rate,
        clamp_progress=clamp_progress,
    )


def get_cosine_with_min_lr_schedule_with_warmup_lr_rate(
    learning_rate: float,
    num_warmup_steps: int,
    num_training_steps: int,
    num_cycles: float = 0.5,
    min_lr: float | None = None,
    min_lr_rate: float | None = None,
    warmup_lr_rate: float | None = None,
    *,
    clamp_progress: bool = False,
) -> SpecSchedule:
    """Warmup from a start rate, then cosine decay to a minimum lr
    (``get_cosine_with_min_lr_schedule_with_warmup_lr_rate``); ``clamp_progress`` is an extension."""
    return _make(
        "cosine_warmup_with_min_lr",
        learning_rate,
        num_warmup_steps=num_warmup_steps,
        num_training_steps=num_training_steps,
        num_cycles=num_cycles,
        min_lr=min_lr,
        min_lr_rate=min_lr_rate,
        warmup_lr_rate=warmup_lr_rate,
        clamp_progress=clamp_progress,
    )


def get_wsd_schedule(
    learning_rate: float,
    num_warmup_steps: int,
    num_decay_steps: int,
    num_training_steps: int | None = None,
    num_stable_steps: int | None = None,
    warmup_type: str = "linear",
    decay_type: str = "cosine",
    min_lr_ratio: float = 0,
    num_cycles: float = 0.5,
) -> SpecSchedule:
    """Warmup, stable, decay (``get_wsd_schedule``)."""
    return _make(
        "warmup_stable_decay",
        learning_rate,
        num_warmup_steps=num_warmup_steps,
        num_decay_steps=num_decay_steps,
        num_training_steps=num_training_steps,
        num_stable_steps=num_stable_steps,
        warmup_type=warmup_type,
        decay_type=decay_type,
        min_lr_ratio=min_lr_ratio,
        num_cycles=num_cycles,
    )


def get_reduce_on_plateau_schedule(learning_rate: float, **kwargs: Any) -> PlateauSchedule:
    """Reduce the lr when a metric stops improving (``get_reduce_on_plateau_schedule``).

    Returns a :class:`PlateauSchedule`; step it with ``schedule.step(metric)`` or add
    ``schedule.callback("val_loss")`` to ``model.fit``.
    """
    return PlateauSchedule(learning_rate, **kwargs)


# --------------------------------------------------------------------------- SchedulerType, get_scheduler


def _scheduler_members() -> dict[str, str]:
    members = {}
    for spec in hs.registry().values():
        for hf in spec.hf_name:
            if hf.startswith("SchedulerType."):
                members[hf.split(".", 1)[1]] = spec.id
    return members


SchedulerType = enum.Enum("SchedulerType", _scheduler_members(), type=str, module=__name__)  # type: ignore[misc]
SchedulerType.__doc__ = "transformers' ``SchedulerType``: the names ``get_scheduler`` accepts (the spec ids)."


def _factories() -> dict[str, Callable[..., Any]]:
    from ._greedy import get_greedy_schedule  # in its own module, which imports this one

    public = {name: globals()[name] for name in __all__ if name.startswith("get_") and name != "get_scheduler"}
    public["get_greedy_schedule"] = get_greedy_schedule
    out = {}
    for member in SchedulerType:
        api = hs.get(member.value).api.get("tf")
        if api in public:
            out[member.value] = public[api]
    return out


def get_scheduler(
    name: str | SchedulerType,
    learning_rate: float,
    num_warmup_steps: int | None = None,
    num_training_steps: int | None = None,
    scheduler_specific_kwargs: dict[str, Any] | None = None,
) -> keras.optimizers.schedules.LearningRateSchedule:
    """Any schedule by its ``SchedulerType`` name (transformers ``get_scheduler``, Keras flavour).

    Which of ``num_warmup_steps`` / ``num_training_steps`` a schedule takes, and whether it
    requires them, comes from its spec parameters (transformers' own rules, read from the
    spec instead of a string ladder): ``constant`` ignores both, ``reduce_lr_on_plateau`` takes
    only ``scheduler_specific_kwargs``.

    Raises:
        ValueError: unknown name, or a required step count is missing (transformers' message).
    """
    kind = SchedulerType(name)
    spec = hs.get(kind.value)
    factory = _factories()[kind.value]
    extra = dict(scheduler_specific_kwargs or {})
    parameters = spec.parameters
    if "num_warmup_steps" in parameters:
        if num_warmup_steps is None and parameters["num_warmup_steps"].required:
            raise ValueError(f"{kind} requires `num_warmup_steps`, please provide that argument.")
        extra["num_warmup_steps"] = num_warmup_steps
    if "num_training_steps" in parameters:
        if num_training_steps is None and parameters["num_training_steps"].required:
            raise ValueError(f"{kind} requires `num_training_steps`, please provide that argument.")
        extra["num_training_steps"] = num_training_steps
    return factory(learning_rate, **extra)
