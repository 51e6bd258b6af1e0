"""Every closed-form spec schedule as a Keras ``LearningRateSchedule``, lowered generically to ``keras.ops``.

One class, :class:`SpecSchedule`, binds a spec's formula (``hf_optim_spec.formula``) to the
arguments and lowers the folded tree to ``keras.ops`` on each call: no per-schedule code. Also the
argument checks every Keras schedule shares (the base learning rate, the name, a config's fields).
transformers' factories are in ``_schedule_factories``, the metric-stepped schedules in ``_plateau``
and ``_greedy``.

Numerics: the formula is evaluated in float64 and the final learning rate is cast once to
``keras.config.floatx()`` (float32 by default). torch's ``LambdaLR`` computes
``base_lr * factor`` in Python floats and the optimizer rounds it to float32, so both frameworks
see the same float32 learning rate (up to float64 libm differences in ``cos``/``sqrt``).
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Callable, Mapping
from typing import Any

import hf_optim_spec as hs
import keras
from hf_optim_spec import formula
from hf_optim_spec._schedules import bind_validated
from keras import ops

__all__ = ["SpecSchedule", "checked_config", "checked_learning_rate", "checked_name", "lower_to_keras", "tf_params"]

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


def tf_params(spec: hs.Spec, canonical: Mapping[str, Any]) -> dict[str, Any]:
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
        else:
            checked_name(name)
        if spec.output == "factor" or learning_rate is not None:
            learning_rate = checked_learning_rate(learning_rate)
        resolved = hs.validate(spec, given, framework="tf", base_lr=learning_rate)
        resolved.pop("name", None)  # not a formula argument; kept in `self.name`
        self.spec_id = spec.id
        self.learning_rate = learning_rate
        self.params = tf_params(spec, resolved)
        self.name = name
        self._spec = spec
        self._bound = bind_validated(spec, resolved, learning_rate)

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


def checked_learning_rate(learning_rate: object) -> float:
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


def checked_name(name: object) -> str | None:
    """A schedule's optional name: a str or None (TypeError)."""
    if name is not None and not isinstance(name, str):
        raise TypeError(
            f"Argument `name` must be a str or None. Received: name={name!r} (of type {type(name).__name__})"
        )
    return name
