"""Generic drivers: build any spec schedule / optimizer of either package from the registry and train with it.

Nothing here names a schedule or an optimizer. Objects come from ``spec.api[framework]`` of
``hf_optim_spec.registry()``, arguments from the spec's first case (spelled with
``Parameter.name_for(framework)``), and the way an object is wired into a training loop is read from the
factory's signature:

* torch: a factory with an ``optimizer`` argument gets the optimizer (an LR scheduler comes back); one with a
  ``params`` argument builds its own optimizer (``create_optimizer``: ``(optimizer, scheduler)``); any other
  returns a callable ``step -> lr`` that drives the optimizer through ``hf_optim_torch.SpecLR``. A factory with an
  ``optimizer`` argument that does not take the spec's parameters is a *proxy* that reports an optimizer's own lr
  (``AdafactorSchedule``): it is paired with the optimizer spec that shares most parameters with it.
* Keras: a factory with a ``learning_rate`` argument (that is not one of its spec parameters) gets the optimizer's
  learning rate; the schedule becomes the optimizer's ``learning_rate``; a factory returning a tuple built its own
  optimizer.

Gradients, initial values and plateau metrics are pure functions of ``(seed, step)``, so a process that restores a
checkpoint regenerates exactly the inputs the uninterrupted run saw.
"""

from __future__ import annotations

import inspect
import itertools
import math
from collections.abc import Callable, Mapping
from typing import Any

import hf_optim_spec as hs
import numpy as np

FRAMEWORKS = ("torch", "tf")


# --------------------------------------------------------------------------- spec helpers


def specs_of(kind: str) -> list[hs.Spec]:
    return [spec for spec in hs.registry().values() if spec.kind == kind]


def is_ref(value: Any) -> bool:
    return isinstance(value, Mapping) and "schedule" in value and set(value) <= {"schedule", "params", "base_lr"}


def plain(value: Any) -> Any:
    """Read-only spec data as plain dicts / lists (JSON-able)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def spell(spec: hs.Spec, params: Mapping[str, Any], framework: str, nested: Callable[[Mapping[str, Any]], Any]) -> dict:
    """Canonical arguments spelled for ``framework`` (pairs split where the spec says so; refs built)."""
    out: dict[str, Any] = {}
    for name, given in params.items():
        value = nested(given) if is_ref(given) else given
        param = spec.parameters.get(name)
        alias = param.name_for(framework) if param is not None else name
        if isinstance(alias, tuple) and isinstance(value, (list, tuple)) and len(value) == 2:
            out[alias[0]], out[alias[1]] = value
        elif isinstance(alias, tuple):
            out[alias[0]] = value
        else:
            out[alias] = (
                tuple(value) if isinstance(value, list) and param is not None and param.type == "number_pair" else value
            )
    return out


def spellings(spec: hs.Spec, framework: str) -> set[str]:
    names: set[str] = set()
    for param in spec.parameters.values():
        alias = param.name_for(framework)
        names.update(alias if isinstance(alias, tuple) else (alias,))
    return names


def lr_param(spec: hs.Spec) -> hs.Parameter:
    """The optimizer's learning-rate parameter: the one Keras spells ``learning_rate``."""
    return next(p for p in spec.parameters.values() if p.name_for("tf") == "learning_rate")


def optimizer_case(spec: hs.Spec, needs_lr: bool) -> int:
    """Index of the first float32 case without schedule refs (with a learning rate when a schedule drives it)."""
    for index, case in enumerate(spec.cases):
        hyper = case.get("hyperparams", {})
        if case.get("dtype", "float32") != "float32" or any(is_ref(v) for v in hyper.values()):
            continue
        lr = hs.validate(spec, plain(hyper))[lr_param(spec).name]
        if not needs_lr or lr is not None:
            return index
    raise LookupError(f"no usable case in spec {spec.id!r}")


def distinct_cases(spec: hs.Spec) -> list[int]:
    """Float32 cases (no schedule refs) that each set a hyperparameter no earlier pick set: amsgrad, beta1,
    weight decay, clipping, include/exclude lists, ... so that every kind of state and decay path is resumed."""
    picks: list[int] = []
    seen: set[str] = set()
    for index, case in enumerate(spec.cases):
        hyper = case.get("hyperparams", {})
        if case.get("dtype", "float32") != "float32" or any(is_ref(v) for v in hyper.values()):
            continue
        changed = {k for k, v in hyper.items() if k not in spec.parameters or v != spec.parameters[k].default}
        if not picks or changed - seen:
            picks.append(index)
            seen |= changed
    return picks


def schedule_params(spec: hs.Spec) -> dict[str, Any]:
    """The first case's arguments (canonical names)."""
    return plain(spec.cases[0].get("params", {}))


def _numbers(value: Any) -> list[float]:
    if is_ref(value):
        return [x for v in value.get("params", {}).values() for x in _numbers(v)]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return []
    return [float(value)]


def boundaries(spec: hs.Spec, params: Mapping[str, Any]) -> list[int]:
    """Step counts a schedule turns at: every integral non-negative argument (defaults filled, nested schedules
    included) and the sums of two of them (a nested schedule's boundary seen from the outer one)."""
    resolved = dict(params)
    for name, param in spec.parameters.items():
        if name not in resolved and not param.required:
            resolved[name] = param.default
    values = sorted({int(x) for v in resolved.values() for x in _numbers(v) if x >= 0 and float(x).is_integer()})
    sums = {a + b for a, b in itertools.combinations(values, 2)}
    return sorted(set(values) | sums)


def scenario_steps(bounds: list[int]) -> int:
    top = max([b for b in bounds if b <= 40], default=0)
    return int(min(max(12, top + max(4, top // 2)), 64))


# --------------------------------------------------------------------------- deterministic inputs


def init_params(seed: int, shapes: Mapping[str, Any]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, 7919])
    return {name: rng.standard_normal(tuple(shape)).astype(np.float32) for name, shape in shapes.items()}


def grads_at(seed: int, step: int, shapes: Mapping[str, Any]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng([seed, step])
    return {name: rng.standard_normal(tuple(shape)).astype(np.float32) for name, shape in shapes.items()}


def metric_at(seed: int, step: int) -> float:
    """A loss that improves for a few epochs and then plateaus (so ReduceLROnPlateau acts)."""
    if step < 3:
        return 1.0 / (1.0 + step)
    return 0.25 + 1e-3 * ((seed + step) % 3)


# --------------------------------------------------------------------------- scenarios


class MissingApi(LookupError):
    """The spec names a public object the package does not export."""


def api(framework: str, spec: hs.Spec) -> Any:
    """``spec.api[framework]`` from the package (MissingApi when it is not exported)."""
    import importlib

    module = importlib.import_module("hf_optim_torch" if framework == "torch" else "hf_optim_tf")
    name = spec.api.get(framework, "")
    if not hasattr(module, name):
        raise MissingApi(f"spec {spec.id!r} names {module.__name__}.{name or '<nothing>'}, which is not exported")
    return getattr(module, name)


def has_api(framework: str, spec: hs.Spec) -> bool:
    try:
        api(framework, spec)
    except MissingApi:
        return False
    return True


def _torch_factory(spec: hs.Spec) -> Any:
    return api("torch", spec)


def _signature(factory: Any) -> Mapping[str, inspect.Parameter]:
    return inspect.signature(factory).parameters


def _takes_kwargs(sig: Mapping[str, inspect.Parameter]) -> bool:
    return any(p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.values())


def torch_is_proxy(spec: hs.Spec) -> bool:
    """A torch schedule API that takes the optimizer but not the spec's own parameters (reports its lr)."""
    sig = _signature(_torch_factory(spec))
    if "optimizer" not in sig or _takes_kwargs(sig):
        return False
    return not spellings(spec, "torch") <= set(sig)


def builds_optimizer(spec: hs.Spec, framework: str) -> bool:
    """The schedule factory returns ``(optimizer, schedule)`` (read from its return annotation)."""
    return str(inspect.signature(api(framework, spec)).return_annotation).startswith("tuple")


def _closest_optimizer(spec: hs.Spec) -> hs.Spec:
    mine = set(spec.parameters)
    return max(specs_of("optimizer"), key=lambda o: len(mine & set(o.parameters)))


def scenarios(framework: str, full: bool, seed: int) -> list[dict[str, Any]]:
    """Every optimizer alone and every schedule driving an optimizer.

    Full run: each optimizer alone with every case of :func:`distinct_cases`, and each schedule driving every
    optimizer. Reduced run: each optimizer alone with its first case; each schedule drives one optimizer
    (cycling through them).
    """
    optimizers = specs_of("optimizer")
    out: list[dict[str, Any]] = []

    def add(optimizer: hs.Spec | None, schedule: hs.Spec | None, needs_lr: bool, case: int | None = None) -> None:
        if case is None and optimizer is not None:
            case = optimizer_case(optimizer, needs_lr)
        shapes = plain(optimizer.cases[case]["shapes"]) if optimizer is not None else {"w": [3, 4], "b": [4]}
        params = schedule_params(schedule) if schedule is not None else {}
        bounds = boundaries(schedule, params) if schedule is not None else []
        steps = scenario_steps(bounds)
        name = "+".join(x.id for x in (optimizer, schedule) if x is not None)
        if optimizer is not None and case != optimizer_case(optimizer, needs_lr):
            name += f"#case{case}"
        out.append(
            {
                "id": name,
                "optimizer": optimizer.id if optimizer else None,
                "opt_case": case,
                "schedule": schedule.id if schedule else None,
                "params": params,
                "base_lr": schedule.cases[0].get("base_lr") if schedule is not None and needs_lr else None,
                "shapes": shapes,
                "steps": steps,
                "bounds": [b for b in bounds if b <= steps],
                "seed": seed + len(out),
            }
        )

    for optimizer in optimizers:
        for case in distinct_cases(optimizer) if full else [optimizer_case(optimizer, needs_lr=False)]:
            add(optimizer, None, needs_lr=False, case=case)
    for index, schedule in enumerate(specs_of("schedule")):
        if not has_api(framework, schedule):  # built (and reported as missing) by the test
            add(optimizers[index % len(optimizers)], schedule, needs_lr=True)
        elif builds_optimizer(schedule, framework):
            add(None, schedule, needs_lr=False)
        elif framework == "torch" and torch_is_proxy(schedule):
            add(_closest_optimizer(schedule), schedule, needs_lr=False)
        else:
            for optimizer in optimizers if full else [optimizers[index % len(optimizers)]]:
                add(optimizer, schedule, needs_lr=True)
    return out


def interruptions(scenario: Mapping[str, Any], full: bool, rng: np.random.Generator) -> list[int]:
    """Steps to interrupt at: 0, every boundary (and its neighbours in the full run), the last step, random ones."""
    steps = scenario["steps"]
    points = {0, steps - 1, steps}
    for b in scenario["bounds"]:
        points.update({b - 1, b, b + 1} if full else {b})
    points.update(int(x) for x in rng.integers(1, steps, size=6 if full else 1))
    return sorted(p for p in points if 0 <= p <= steps)


# --------------------------------------------------------------------------- torch


def _torch_nested(ref: Mapping[str, Any]) -> Any:
    spec = hs.get(ref["schedule"])
    return _torch_factory(spec)(**spell(spec, ref.get("params", {}), "torch", _torch_nested))


def _torch_optimizer(scn: Mapping[str, Any], named: Mapping[str, Any]) -> Any:
    spec = hs.get(scn["optimizer"])
    hyper = {**plain(spec.cases[scn["opt_case"]].get("hyperparams", {})), **scn.get("extra", {})}
    if scn.get("base_lr") is not None:  # the schedule case's optimizer lr (LambdaLR multiplies it)
        hyper[lr_param(spec).name] = scn["base_lr"]
    return _torch_factory(spec)(list(named.items()), **spell(spec, hyper, "torch", _torch_nested))


class TorchRun:
    """One torch training run of a scenario: named parameters, optimizer, scheduler."""

    def __init__(self, scn: Mapping[str, Any]) -> None:
        import hf_optim_torch
        import torch

        self.scn = scn
        self.named = {
            name: torch.nn.Parameter(torch.from_numpy(value))
            for name, value in init_params(scn["seed"], scn["shapes"]).items()
        }
        self.optimizer: Any = None
        self.scheduler: Any = None
        self.plateau = False
        if scn["schedule"] is None:
            self.optimizer = _torch_optimizer(scn, self.named)
            return
        spec = hs.get(scn["schedule"])
        factory = _torch_factory(spec)
        sig = _signature(factory)
        kwargs = spell(spec, scn["params"], "torch", _torch_nested)
        if "params" in sig and "params" not in spec.parameters:
            result = factory(list(self.named.items()), **kwargs)
            self.optimizer = next(r for r in result if isinstance(r, torch.optim.Optimizer))
            self.scheduler = next(r for r in result if not isinstance(r, torch.optim.Optimizer))
            return
        self.optimizer = _torch_optimizer(scn, self.named)
        if "optimizer" in sig:
            if not _takes_kwargs(sig):
                kwargs = {k: v for k, v in kwargs.items() if k in sig}  # a proxy: the optimizer owns the lr
            self.scheduler = factory(self.optimizer, **kwargs)
        else:
            self.scheduler = hf_optim_torch.SpecLR(self.optimizer, factory(**kwargs))
        self.plateau = spec.stateful

    def step(self, t: int) -> None:
        import torch

        for name, grad in grads_at(self.scn["seed"], t, self.scn["shapes"]).items():
            self.named[name].grad = torch.from_numpy(grad)
        self.optimizer.step()
        if self.scheduler is not None:
            if self.plateau:
                self.scheduler.step(metric_at(self.scn["seed"], t))
            else:
                self.scheduler.step()

    def snapshot(self) -> dict[str, np.ndarray]:
        out = {f"param:{name}": p.detach().numpy().copy() for name, p in self.named.items()}
        lrs = [_as_float(group.get("lr")) for group in self.optimizer.param_groups]
        if self.scheduler is not None:
            lrs += [_as_float(x) for x in self.scheduler.get_last_lr()]
        out["lr"] = np.asarray(lrs, dtype=np.float64)
        return out

    def final_state(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for index, (name, p) in enumerate(self.named.items()):
            for key, value in self.optimizer.state.get(p, {}).items():
                out[f"state:{name}:{key}"] = np.asarray(_as_array(value))
            del index
        return out

    def checkpoint(self) -> dict[str, Any]:
        return {
            "model": {name: p.detach().clone() for name, p in self.named.items()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": None if self.scheduler is None else self.scheduler.state_dict(),
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        import torch

        with torch.no_grad():
            for name, p in self.named.items():
                p.copy_(state["model"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])


def _as_float(value: Any) -> float:
    if value is None:
        return math.nan
    if hasattr(value, "item"):
        return float(value.item())
    return float(value)


def _as_array(value: Any) -> Any:
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy().copy()
    return value


# --------------------------------------------------------------------------- Keras


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


def _tf_factory(spec: hs.Spec) -> Any:
    return api("tf", spec)


def _tf_nested(ref: Mapping[str, Any]) -> Any:
    spec = hs.get(ref["schedule"])
    factory = _tf_factory(spec)
    kwargs = spell(spec, ref.get("params", {}), "tf", _tf_nested)
    if "learning_rate" in _signature(factory) and "learning_rate" not in spellings(spec, "tf"):
        kwargs = {"learning_rate": float(ref.get("base_lr", 1.0)), **kwargs}
    return factory(**kwargs)


def tf_optimizer(scn: Mapping[str, Any], learning_rate: Any = None, **extra: Any) -> Any:
    spec = hs.get(scn["optimizer"])
    hyper = {**plain(spec.cases[scn["opt_case"]].get("hyperparams", {})), **scn.get("extra", {})}
    kwargs = spell(spec, hyper, "tf", _tf_nested)
    if learning_rate is not None:
        kwargs["learning_rate"] = learning_rate
    return _tf_factory(spec)(**kwargs, **extra)


class TfRun:
    """One Keras training run of a scenario: a weights-only model compiled with the optimizer."""

    def __init__(
        self, scn: Mapping[str, Any], model: Any = None, param_dtype: str = "float32", init_dtype: str = "float32"
    ) -> None:
        import keras

        self.scn = scn
        self.plateau = False
        self.schedule: Any = None
        if model is not None:  # restored from a .keras file
            self.model = model
            self.optimizer = model.optimizer
            learning_rate = getattr(self.optimizer, "_learning_rate", None)
            self.plateau = hasattr(learning_rate, "step") and scn["schedule"] is not None
            self.schedule = learning_rate
            return
        optimizer = None
        if scn["schedule"] is not None:
            spec = hs.get(scn["schedule"])
            factory = _tf_factory(spec)
            kwargs = spell(spec, scn["params"], "tf", _tf_nested)
            if "learning_rate" in _signature(factory) and "learning_rate" not in spellings(spec, "tf"):
                kwargs = {"learning_rate": float(scn["base_lr"]), **kwargs}
            result = factory(**kwargs)
            if isinstance(result, tuple):
                optimizer = next(r for r in result if isinstance(r, keras.optimizers.Optimizer))
                self.schedule = next(r for r in result if not isinstance(r, keras.optimizers.Optimizer))
            else:
                self.schedule = result
                optimizer = tf_optimizer(scn, learning_rate=result)
            self.plateau = spec.stateful
        else:
            optimizer = tf_optimizer(scn)
        self.optimizer = optimizer
        self.model = keras_model_class()(scn["shapes"], param_dtype=param_dtype, name="params")
        for variable, value in zip(self.model.params, init_params(scn["seed"], scn["shapes"]).values()):
            variable.assign(keras.ops.cast(keras.ops.cast(value, init_dtype), param_dtype))
        self.model.compile(optimizer=optimizer)

    def step(self, t: int) -> None:
        import tensorflow as tf

        grads = [tf.constant(g) for g in grads_at(self.scn["seed"], t, self.scn["shapes"]).values()]
        self.optimizer.apply_gradients(zip(grads, self.model.params))
        if self.plateau:
            self.schedule.step(metric_at(self.scn["seed"], t))

    def snapshot(self) -> dict[str, np.ndarray]:
        out = {f"param:{name}": v.numpy().copy() for name, v in zip(self.scn["shapes"], self.model.params)}
        out["lr"] = np.asarray([float(self.optimizer.learning_rate.numpy())], dtype=np.float64)
        return out

    def final_state(self) -> dict[str, np.ndarray]:
        # Keyed by position and the name inside the optimizer: Keras numbers unnamed optimizers per process
        # ("adam", "adam_1"), so the optimizer prefix of a path differs between processes.
        return {
            f"state:{i}:{v.path.split('/', 1)[-1]}": np.asarray(v.numpy()).copy()
            for i, v in enumerate(self.optimizer.variables)
        }

    def build_optimizer(self) -> None:
        self.optimizer.build(self.model.trainable_variables)

    def tf_checkpoint(self) -> Any:
        import tensorflow as tf

        return tf.train.Checkpoint(model=self.model, optimizer=self.optimizer)


# --------------------------------------------------------------------------- comparison


def compare(expected: Mapping[str, np.ndarray], actual: Mapping[str, np.ndarray], where: str) -> list[str]:
    """Bitwise comparison of two snapshots; one line per difference."""
    problems = []
    for key in sorted(set(expected) | set(actual)):
        if key not in expected or key not in actual:
            problems.append(f"{where}: {key} only in {'expected' if key in expected else 'restored'} run")
            continue
        a, b = np.asarray(expected[key]), np.asarray(actual[key])
        if a.shape != b.shape or a.dtype != b.dtype or a.tobytes() != b.tobytes():
            diff = np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))) if a.shape == b.shape else "shape"
            problems.append(
                f"{where}: {key} differs (max |diff| {diff}; expected {a.ravel()[:4]}, got {b.ravel()[:4]})"
            )
    return problems
