"""The one way the test suites build and run a spec object of ``hf_optim_tf`` (Keras 3), through its public names.

Conventions read from a factory's signature (never from a spec id):

* a schedule factory with a ``learning_rate`` argument (that is not a spec parameter) receives the case's
  ``base_lr``; a factory returning a tuple built its own optimizer (the ``LearningRateSchedule`` is picked out);
* schedules are called with a scalar int64 step, as a Keras optimizer calls them; stateful ones are stepped with
  the case metrics;
* optimizers receive named ``keras.Variable`` objects whose ``path`` is the case's parameter name; their state is
  read from the optimizer variables named ``<variable>_<state name>`` (``add_variable_from_reference``), and a
  ``step`` state that Keras keeps optimizer-wide is its ``iterations``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import hf_optim_spec as hs
import numpy as np
from hf_optim_spec.reference import _case as ref_case

from .results import LrCurve, Trajectory, to_numpy
from .spec_args import case_base_lr, resolve_api, spelled, takes

__all__ = [
    "build_schedule",
    "construct",
    "keras_model_class",
    "keras_variable",
    "lr_curve",
    "nested_schedule",
    "run_optimizer",
    "tensor",
]


def tensor(value: Any, dtype: str) -> Any:
    """A tensor of ``dtype`` from float64 values."""
    from keras import ops

    return ops.convert_to_tensor(np.asarray(value, dtype=np.float64), dtype=dtype)


def keras_variable(name: str, value: np.ndarray, dtype: str) -> Any:
    """A ``keras.Variable`` whose ``path`` is the case's parameter name.

    ``a/b/kernel`` is built as ``kernel`` inside name scopes ``a`` and ``b`` (Keras names cannot contain
    ``/``), as a layer's weights are, so weight-decay patterns see the same string as in torch.
    """
    import keras

    *scopes, leaf = name.split("/")
    with contextlib.ExitStack() as stack:
        for scope in scopes:
            stack.enter_context(keras.name_scope(scope))
        variable = keras.Variable(np.asarray(value, dtype=np.float64), dtype=dtype, name=leaf)
    if variable.path != name:
        raise AssertionError(f"cannot build a Keras variable with path {name!r} (got {variable.path!r})")
    return variable


# --------------------------------------------------------------------------- schedules


def pick_schedule(result: Any) -> Any:
    """The schedule of a factory's result: itself, or of a tuple the ``LearningRateSchedule`` (else the first
    callable that is not an optimizer)."""
    if not isinstance(result, tuple):
        return result
    import keras

    preferred = [r for r in result if isinstance(r, keras.optimizers.schedules.LearningRateSchedule)]
    others = [r for r in result if callable(r) and not isinstance(r, keras.optimizers.Optimizer)]
    if preferred or others:
        return (preferred or others)[0]
    raise TypeError(f"no schedule among the {len(result)} values returned: {[type(r).__name__ for r in result]}")


def build_schedule(spec: hs.Spec, params: Mapping[str, Any], base_lr: float) -> Any:
    """The Keras schedule of a schedule spec (``base_lr`` given to a factory that takes ``learning_rate``)."""
    factory = resolve_api("tf", spec)
    kwargs = spelled(spec, params, "tf", nested_schedule)
    if takes(factory, "learning_rate", spec, "tf"):
        kwargs = {"learning_rate": base_lr, **kwargs}
    return pick_schedule(factory(**kwargs))


def nested_schedule(ref: Mapping[str, Any]) -> Any:
    """The object a schedule reference (``{"schedule": id, "params": {...}}``) stands for."""
    return build_schedule(hs.get(ref["schedule"]), ref.get("params", {}), float(ref.get("base_lr", 1.0)))


def _evaluate(schedule: Any, steps: Sequence[int]) -> np.ndarray:
    """Call the schedule once per step with a scalar int64 step, as a Keras optimizer does."""
    from keras import ops

    values = [to_numpy(schedule(ops.convert_to_tensor(int(step), dtype="int64"))) for step in steps]
    return np.asarray([v.reshape(()) for v in values], dtype=np.float32)


def lr_curve(spec: hs.Spec, case: Mapping[str, Any]) -> LrCurve:
    """The float32 lr (one group: a Keras optimizer has one learning rate) at the case's steps (or metrics)."""
    obj = build_schedule(spec, case.get("params", {}), case_base_lr(case))
    if spec.stateful:
        from keras import ops

        rows = []
        for metric in case["metrics"]:
            obj.step(metric)
            rows.append(to_numpy(obj(ops.convert_to_tensor(0, dtype="int64"))).astype(np.float32))
        return LrCurve(tuple(case["metrics"]), np.asarray(rows, dtype=np.float32).reshape(1, -1))
    return LrCurve(tuple(case["steps"]), _evaluate(obj, case["steps"]).reshape(1, -1))


# --------------------------------------------------------------------------- optimizers and other objects


def run_optimizer(spec: hs.Spec, case: Mapping[str, Any], dtype: str) -> Trajectory:
    """Run a case the way a Keras user of that dtype does: a float64 model sets floatx to float64,
    which also makes the optimizer's learning-rate variable float64 (Keras stores it in floatx)."""
    import keras

    previous = keras.config.floatx()
    keras.config.set_floatx("float64" if dtype == "float64" else previous)
    try:
        return _run_optimizer_in_floatx(spec, case, dtype)
    finally:
        keras.config.set_floatx(previous)


def _run_optimizer_in_floatx(spec: hs.Spec, case: Mapping[str, Any], dtype: str) -> Trajectory:
    params0, grads = ref_case.case_inputs(case)
    variables = {name: keras_variable(name, value, dtype) for name, value in params0.items()}
    factory = resolve_api("tf", spec)
    kwargs = spelled(spec, case.get("hyperparams", {}), "tf", nested_schedule)
    optimizer = factory(**kwargs)
    optimizer.build(list(variables.values()))
    history = []
    for row in grads:
        pairs = [
            (tensor(row[name], dtype), variable) for name, variable in variables.items() if row.get(name) is not None
        ]
        if pairs:
            optimizer.apply_gradients(pairs)
        history.append({name: to_numpy(v) for name, v in variables.items()})
    by_name = {v.name: v for v in optimizer.variables}
    state: dict[str, dict[str, np.ndarray]] = {}
    for name, variable in variables.items():
        entries = {}
        for key in spec.state:
            found = by_name.get(f"{variable.path.replace('/', '_')}_{key}")
            if found is None and key == "step":
                found = optimizer.iterations  # Keras counts steps optimizer-wide
            if found is not None:
                entries[key] = to_numpy(found)
        state[name] = entries
    return Trajectory(params=history, state=state)


def construct(spec: hs.Spec, params: Mapping[str, Any], base_lr: float) -> Any:
    """Build the public object of any spec kind with ``params`` (error cases)."""
    if spec.kind == "schedule":
        return build_schedule(spec, params, base_lr)
    factory = resolve_api("tf", spec)
    return factory(**spelled(spec, params, "tf", nested_schedule))


# --------------------------------------------------------------------------- a model of named weights

_KERAS_MODEL: Any = None


def keras_model_class() -> Any:
    """A Keras model that is just a set of named weights (registered so ``.keras`` files reload it)."""
    global _KERAS_MODEL  # noqa: PLW0603 - registered once per process
    if _KERAS_MODEL is not None:
        return _KERAS_MODEL
    import keras

    @keras.saving.register_keras_serializable(package="hf_optim_reliability")
    class ParamsModel(keras.Model):
        def __init__(self, shapes: Mapping[str, Any], param_dtype: str = "float32", **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.shapes = {name: list(shape) for name, shape in shapes.items()}
            self.param_dtype = param_dtype
            self.params = [
                self.add_weight(shape=tuple(shape), initializer="zeros", dtype=param_dtype, name=name.replace("/", "_"))
                for name, shape in self.shapes.items()
            ]
            self.built = True

        def call(self, inputs: Any) -> Any:
            return inputs

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "shapes": self.shapes, "param_dtype": self.param_dtype}

    _KERAS_MODEL = ParamsModel
    return ParamsModel
