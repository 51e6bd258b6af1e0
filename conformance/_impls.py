"""The one registry of implementations the conformance suite runs every spec case through.

Each :class:`Impl` knows how to drive one framework package (``hf_optim_torch`` or ``hf_optim_tf``)
through its PUBLIC names only, and only generically: the callable comes from ``spec.api[framework]``,
arguments are spelled with ``Parameter.name_for(framework)`` (a canonical pair split into two Keras
arguments where the spec says so), schedule-typed arguments (``{"schedule": id, "params": {...}}``)
are built recursively through the same registry. There is no per-spec code here: a quirk of one
spec belongs in its spec file.

Conventions the packages follow (CONTEXT.md, "Public names"), read from signatures, not from ids:

* a torch schedule factory whose signature has an ``optimizer`` argument (that is not a spec
  parameter) receives an optimizer whose param groups carry the case's ``base_lr`` and
  ``group_lrs``; a Keras factory with a ``learning_rate`` argument receives ``base_lr``;
* a factory may return a tuple (``create_optimizer`` returns ``(optimizer, schedule)``): the
  schedule is the element that is an LR scheduler / ``LearningRateSchedule`` (else the first
  callable that is not an optimizer);
* torch schedulers are stepped as a training loop steps them (one ``scheduler.step()`` per step,
  the lr read from ``optimizer.param_groups``); plain callables and Keras schedules are called
  with the step; stateful schedules are stepped with the case ``metrics``.
* optimizers receive their parameters as ``(name, tensor)`` pairs (torch) or named
  ``keras.Variable`` objects (Keras), so include/exclude patterns see the case's parameter names;
  state is read from ``optimizer.state[p]`` (torch) or from the optimizer variables named
  ``<variable>_<state name>`` (Keras' ``add_variable_from_reference`` naming), and a ``step``
  state that Keras keeps optimizer-wide is its ``iterations``.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import math
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import hf_optim_spec as hs
import numpy as np
from hf_optim_spec import _schedules
from hf_optim_spec.reference import _case as ref_case

__all__ = [
    "IMPLS",
    "Impl",
    "LrCurve",
    "Trajectory",
    "expected_lr_curve",
    "reference_trajectory",
    "spelled",
    "ulp_distance",
]

Framework = Literal["torch", "tf"]
ALL_DTYPES = ("float64", "float32", "bfloat16", "float16")
TORCH_DEVICE = os.environ.get("HF_OPTIM_TORCH_DEVICE", "cpu")
"""Where the torch cases' parameters, gradients and accumulated gradients live: ``HF_OPTIM_TORCH_DEVICE=cuda``
runs every torch case on the GPU (the optimizers' state follows their parameters there)."""
SEQUENTIAL_LIMIT = 5000
"""Torch schedulers are stepped one step at a time up to this step; beyond it the LambdaLR
multipliers are evaluated directly (``base_lr * lr_lambda(step)``, exactly what ``LambdaLR`` sets)."""


@dataclass(frozen=True)
class LrCurve:
    """Learning rates a framework produced: ``lrs[group, point]`` in float32 (points = steps or metrics)."""

    points: tuple[float, ...]
    lrs: np.ndarray


@dataclass(frozen=True)
class Trajectory:
    """Parameters after every step (float64 copies) and the final per-parameter state."""

    params: list[dict[str, np.ndarray]]
    state: dict[str, dict[str, np.ndarray]]


# --------------------------------------------------------------------------- spec helpers


def spelled(
    spec: hs.Spec,
    params: Mapping[str, Any],
    framework: str,
    build_schedule: Callable[[Mapping[str, Any]], Any],
) -> dict[str, Any]:
    """Canonical-name arguments of a case, spelled as a ``framework`` user passes them.

    A pair split into two framework arguments (``betas`` -> ``beta_1``, ``beta_2``) is split; a
    value that is not a pair (an error case) goes to the first of the two names. Names the spec
    does not declare (error cases for unknown arguments) pass through unchanged.
    """
    out: dict[str, Any] = {}
    for name, given in params.items():
        value = build_schedule(given) if _schedules.is_schedule_ref(given) else given
        param = spec.parameters.get(name)
        alias = param.name_for(framework) if param is not None else name
        if isinstance(alias, tuple):
            if isinstance(value, (list, tuple)) and len(value) == 2:
                out[alias[0]], out[alias[1]] = value
            else:
                out[alias[0]] = value
        else:
            out[alias] = list(value) if isinstance(value, tuple) else value
    return out


def _spec_names(spec: hs.Spec, framework: str) -> set[str]:
    names: set[str] = set()
    for param in spec.parameters.values():
        alias = param.name_for(framework)
        names.update(alias if isinstance(alias, tuple) else (alias,))
    return names


def _takes(factory: Callable[..., Any], argument: str, spec: hs.Spec, framework: str) -> bool:
    """True when ``factory`` has ``argument`` and it is not one of the spec's own parameters."""
    if argument in _spec_names(spec, framework):
        return False
    try:
        return argument in inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False


def resolve_api(framework: str, spec: hs.Spec) -> Any:
    """The public object ``spec.api[framework]`` of the framework package (dotted names allowed)."""
    if framework not in spec.api:
        raise LookupError(f"spec {spec.id!r} has no api name for {framework!r} (api: {dict(spec.api)})")
    obj: Any = importlib.import_module(IMPLS[framework].module)
    for part in spec.api[framework].split("."):
        obj = getattr(obj, part)
    return obj


def case_base_lr(case: Mapping[str, Any]) -> float:
    return float(case.get("base_lr", 1.0))


def group_lrs(case: Mapping[str, Any]) -> list[float]:
    """The lr of every param group: the optimizer default (``base_lr``) first, then ``group_lrs``."""
    return [case_base_lr(case), *(float(x) for x in case.get("group_lrs", ()))]


def expected_lr_curve(spec: hs.Spec, case: Mapping[str, Any], groups: int) -> np.ndarray:
    """float64 expected lr per group and point, from the case's ``expected`` (the reference if empty).

    ``output == "factor"``: lr = group lr x factor; ``"lr"``: the value itself (one group).
    Stateful cases: the stored lrs are those of the default group; the other groups come from the reference run
    of all the case's groups together (a stateful schedule may couple them).
    """
    points = case["metrics"] if spec.stateful else case["steps"]
    stored = list(case.get("expected", ()))
    if len(stored) != len(points):
        stored = reference_values(spec, case)
    lrs = group_lrs(case)[:groups]
    if spec.stateful:
        from hf_optim_spec.reference import run_stateful

        rows = [np.asarray(stored, dtype=np.float64)]
        if len(lrs) > 1:
            params = hs.validate(spec, case.get("params", {}), base_lr=lrs[0])
            joint = run_stateful(spec.id, params, group_lrs(case), case["metrics"])
            rows += [np.asarray(row, dtype=np.float64) for row in joint[1 : len(lrs)]]
        return np.stack(rows)
    values = np.asarray(stored, dtype=np.float64)
    if spec.output == "factor":
        return np.stack([lr * values for lr in lrs])
    return values[np.newaxis, :]


def reference_values(spec: hs.Spec, case: Mapping[str, Any]) -> list[float]:
    """The float64 reference of a schedule case (factor or lr per step; lr per metric if stateful)."""
    base_lr = case_base_lr(case)
    if spec.stateful:
        from hf_optim_spec.reference import run_stateful

        params = hs.validate(spec, case.get("params", {}), base_lr=base_lr)
        return run_stateful(spec.id, params, group_lrs(case), case["metrics"])[0]
    bound = _schedules.bind(spec, case.get("params", {}), base_lr=base_lr)
    return [bound(step) for step in case["steps"]]


def reference_trajectory(spec: hs.Spec, case: Mapping[str, Any]) -> Trajectory:
    """The expected trajectory of an optimizer case: stored ``expected`` when present, else the reference."""
    from hf_optim_spec import reference

    expected = case.get("expected")
    if not expected or "params" not in expected:
        options = {}
        if _has_schedule_ref(case.get("hyperparams", {})):
            options["resolve_schedule"] = _reference_schedule
        expected = reference.run_case(_plain(spec.raw), _plain(case), **options)
    params = [{name: np.asarray(v, dtype=np.float64) for name, v in row.items()} for row in expected["params"]]
    state = {
        name: {key: np.asarray(v, dtype=np.float64) for key, v in entries.items()}
        for name, entries in expected["state"].items()
    }
    return Trajectory(params=params, state=state)


def _has_schedule_ref(hyperparams: Mapping[str, Any]) -> bool:
    return any(_schedules.is_schedule_ref(v) for v in hyperparams.values())


def _reference_schedule(ref: Mapping[str, Any]) -> Callable[[int], float]:
    spec = hs.get(ref["schedule"])
    bound = _schedules.bind(spec, ref.get("params", {}), base_lr=float(ref.get("base_lr", 1.0)))
    base = float(ref.get("base_lr", 1.0))
    if spec.output == "factor":
        return lambda step: base * bound(step)
    return bound


def _plain(value: Any) -> Any:
    """Read-only spec data (MappingProxyType / tuples) as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------- float32 comparison


def ulp_distance(a: Any, b: Any) -> np.ndarray:
    """Distance in float32 ulps (0 = bit-identical; NaN vs NaN = 0; NaN vs a number = 2**31)."""
    a32 = np.atleast_1d(np.asarray(a, dtype=np.float32))
    b32 = np.atleast_1d(np.asarray(b, dtype=np.float32))

    def ordered(x: np.ndarray) -> np.ndarray:
        bits = x.view(np.int32).astype(np.int64)
        return np.where(bits < 0, -(bits & 0x7FFFFFFF), bits)

    distance = np.abs(ordered(a32) - ordered(b32))
    nan_a, nan_b = np.isnan(a32), np.isnan(b32)
    distance = np.where(nan_a & nan_b, 0, distance)
    return np.where(nan_a ^ nan_b, 2**31, distance)


# --------------------------------------------------------------------------- torch


def _torch_optimizer_for(lrs: Sequence[float]) -> Any:
    import torch

    params = [torch.nn.Parameter(torch.zeros(1)) for _ in lrs]
    return torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)], lr=lrs[0])


def _torch_build(spec: hs.Spec, params: Mapping[str, Any], lrs: Sequence[float]) -> Any:
    """The torch object of a schedule spec (a scheduler or a callable of the step)."""
    factory = resolve_api("torch", spec)
    kwargs = spelled(spec, params, "torch", _torch_nested)
    args = []
    if _takes(factory, "optimizer", spec, "torch"):
        args.append(_torch_optimizer_for(lrs))
    elif _takes(factory, "params", spec, "torch"):  # builds its own optimizer (create_optimizer)
        args.append(_torch_named_params())
    return _pick_schedule(factory(*args, **kwargs), "torch")


def _torch_named_params() -> list[tuple[str, Any]]:
    import torch

    return [("w", torch.nn.Parameter(torch.zeros(2, 3)))]


def _torch_nested(ref: Mapping[str, Any]) -> Any:
    return _torch_build(hs.get(ref["schedule"]), ref.get("params", {}), [float(ref.get("base_lr", 1.0))])


def _is_torch_scheduler(obj: Any) -> bool:
    import torch

    return isinstance(obj, (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau))


def _pick_schedule(result: Any, framework: str) -> Any:
    if not isinstance(result, tuple):
        return result
    if framework == "torch":
        import torch

        preferred = [r for r in result if _is_torch_scheduler(r)]
        others = [r for r in result if callable(r) and not isinstance(r, torch.optim.Optimizer)]
    else:
        import keras

        preferred = [r for r in result if isinstance(r, keras.optimizers.schedules.LearningRateSchedule)]
        others = [r for r in result if callable(r) and not isinstance(r, keras.optimizers.Optimizer)]
    if preferred or others:
        return (preferred or others)[0]
    raise TypeError(f"no schedule among the {len(result)} values returned: {[type(r).__name__ for r in result]}")


def _group_lrs_of(scheduler: Any) -> list[float]:
    return [float(group["lr"]) for group in scheduler.optimizer.param_groups]


def _torch_curve(obj: Any, steps: Sequence[int]) -> np.ndarray:
    if not _is_torch_scheduler(obj):
        return np.asarray([[float(obj(step)) for step in steps]], dtype=np.float32)
    steps = [int(s) for s in steps]
    if min(steps) < 0 or max(steps) > SEQUENTIAL_LIMIT:
        lambdas = obj.lr_lambdas
        rows = [[base * lam(step) for step in steps] for lam, base in zip(lambdas, obj.base_lrs)]
        return np.asarray(rows, dtype=np.float32)
    wanted = set(steps)
    seen: dict[int, list[float]] = {}
    if 0 in wanted:
        seen[0] = _group_lrs_of(obj)
    obj.optimizer.step()  # a no-op (no gradients); keeps the scheduler's order check quiet
    for step in range(1, max(steps) + 1):
        obj.step()
        if step in wanted:
            seen[step] = _group_lrs_of(obj)
    return np.asarray([seen[s] for s in steps], dtype=np.float32).T


def _torch_lr_curve(spec: hs.Spec, case: Mapping[str, Any]) -> LrCurve:
    lrs = group_lrs(case)
    obj = _torch_build(spec, case.get("params", {}), lrs)
    if spec.stateful:
        obj.optimizer.step()
        rows = []
        for metric in case["metrics"]:
            obj.step(metric)
            rows.append(_group_lrs_of(obj))
        return LrCurve(tuple(case["metrics"]), np.asarray(rows, dtype=np.float32).T)
    return LrCurve(tuple(case["steps"]), _torch_curve(obj, case["steps"]))


def _torch_tensor(value: Any, dtype: str) -> Any:
    import torch

    return torch.tensor(np.asarray(value, dtype=np.float64)).to(device=torch_device(), dtype=getattr(torch, dtype))


@functools.cache
def torch_device() -> Any:
    """``TORCH_DEVICE`` as a ``torch.device``, checked once: a device torch cannot use fails every case loudly."""
    import torch

    try:
        device = torch.device(TORCH_DEVICE)
        torch.zeros(1, device=device)
    except (RuntimeError, AssertionError) as error:  # torch raises AssertionError for a build without CUDA
        raise ValueError(f"HF_OPTIM_TORCH_DEVICE must name a device torch can use here; got {TORCH_DEVICE!r} ({error})")
    return device


def _to_numpy(value: Any) -> np.ndarray:
    """float64 copy of a torch tensor, a TF tensor, a keras.Variable or a number.

    (``keras.ops.convert_to_numpy`` of a Variable goes through ``np.array(variable)``, which warns.)
    """
    if hasattr(value, "detach"):
        return value.detach().to("cpu").double().numpy().copy()
    if hasattr(value, "numpy"):
        return np.asarray(value.numpy(), dtype=np.float64).copy()
    return np.asarray(value, dtype=np.float64).copy()


def _torch_run_optimizer(spec: hs.Spec, case: Mapping[str, Any], dtype: str) -> Trajectory:
    import torch

    params0, grads = ref_case.case_inputs(case)
    named = {name: torch.nn.Parameter(_torch_tensor(value, dtype)) for name, value in params0.items()}
    factory = resolve_api("torch", spec)
    kwargs = spelled(spec, case.get("hyperparams", {}), "torch", _torch_nested)
    optimizer = factory(list(named.items()), **kwargs)
    history = []
    for row in grads:
        for name, param in named.items():
            grad = row.get(name)
            param.grad = None if grad is None else _torch_tensor(grad, dtype)
        optimizer.step()
        history.append({name: _to_numpy(p) for name, p in named.items()})
    state = {}
    for name, param in named.items():
        entries = optimizer.state.get(param, {})
        state[name] = {
            key: _to_numpy(entries[key]) for key in spec.state if key in entries and entries[key] is not None
        }
    return Trajectory(params=history, state=state)


def _torch_construct(spec: hs.Spec, params: Mapping[str, Any], base_lr: float) -> Any:
    """Build the public object of any spec kind with ``params`` (error cases)."""
    if spec.kind == "schedule":
        return _torch_build(spec, params, [base_lr])
    factory = resolve_api("torch", spec)
    kwargs = spelled(spec, params, "torch", _torch_nested)
    if spec.kind == "optimizer":
        return factory(_torch_named_params(), **kwargs)
    return factory(**kwargs)


# --------------------------------------------------------------------------- Keras / TensorFlow


def _tf_build(spec: hs.Spec, params: Mapping[str, Any], base_lr: float) -> Any:
    factory = resolve_api("tf", spec)
    kwargs = spelled(spec, params, "tf", _tf_nested)
    if _takes(factory, "learning_rate", spec, "tf"):
        kwargs = {"learning_rate": base_lr, **kwargs}
    return _pick_schedule(factory(**kwargs), "tf")


def _tf_nested(ref: Mapping[str, Any]) -> Any:
    return _tf_build(hs.get(ref["schedule"]), ref.get("params", {}), float(ref.get("base_lr", 1.0)))


def _tf_eval(schedule: Any, steps: Sequence[int]) -> np.ndarray:
    """Call the schedule once per step with a scalar int64 step, as a Keras optimizer does."""
    from keras import ops

    values = [_to_numpy(schedule(ops.convert_to_tensor(int(step), dtype="int64"))) for step in steps]
    return np.asarray([v.reshape(()) for v in values], dtype=np.float32)


def _tf_lr_curve(spec: hs.Spec, case: Mapping[str, Any]) -> LrCurve:
    obj = _tf_build(spec, case.get("params", {}), case_base_lr(case))
    if spec.stateful:
        from keras import ops

        rows = []
        for metric in case["metrics"]:
            obj.step(metric)
            rows.append(_to_numpy(obj(ops.convert_to_tensor(0, dtype="int64"))).astype(np.float32))
        return LrCurve(tuple(case["metrics"]), np.asarray(rows, dtype=np.float32).reshape(1, -1))
    return LrCurve(tuple(case["steps"]), _tf_eval(obj, case["steps"]).reshape(1, -1))


def keras_variable(name: str, value: np.ndarray, dtype: str) -> Any:
    """A ``keras.Variable`` whose ``path`` is the case's parameter name.

    ``a/b/kernel`` is built as ``kernel`` inside name scopes ``a`` and ``b`` (Keras names cannot contain
    ``/``), as a layer's weights are, so weight-decay patterns see the same string as in torch.
    """
    import contextlib

    import keras

    *scopes, leaf = name.split("/")
    with contextlib.ExitStack() as stack:
        for scope in scopes:
            stack.enter_context(keras.name_scope(scope))
        variable = keras.Variable(np.asarray(value, dtype=np.float64), dtype=dtype, name=leaf)
    if variable.path != name:
        raise AssertionError(f"cannot build a Keras variable with path {name!r} (got {variable.path!r})")
    return variable


def _tf_run_optimizer(spec: hs.Spec, case: Mapping[str, Any], dtype: str) -> Trajectory:
    """Run a case the way a Keras user of that dtype does: a float64 model sets floatx to float64,
    which also makes the optimizer's learning-rate variable float64 (Keras stores it in floatx)."""
    import keras

    previous = keras.config.floatx()
    keras.config.set_floatx("float64" if dtype == "float64" else previous)
    try:
        return _tf_run_optimizer_in_floatx(spec, case, dtype)
    finally:
        keras.config.set_floatx(previous)


def _tf_run_optimizer_in_floatx(spec: hs.Spec, case: Mapping[str, Any], dtype: str) -> Trajectory:
    from keras import ops

    params0, grads = ref_case.case_inputs(case)
    variables = {name: keras_variable(name, value, dtype) for name, value in params0.items()}
    factory = resolve_api("tf", spec)
    kwargs = spelled(spec, case.get("hyperparams", {}), "tf", _tf_nested)
    optimizer = factory(**kwargs)
    optimizer.build(list(variables.values()))
    history = []
    for row in grads:
        pairs = [
            (ops.convert_to_tensor(np.asarray(row[name], dtype=np.float64), dtype=dtype), variable)
            for name, variable in variables.items()
            if row.get(name) is not None
        ]
        if pairs:
            optimizer.apply_gradients(pairs)
        history.append({name: _to_numpy(v) for name, v in variables.items()})
    by_name = {v.name: v for v in optimizer.variables}
    state: dict[str, dict[str, np.ndarray]] = {}
    for name, variable in variables.items():
        entries = {}
        for key in spec.state:
            found = by_name.get(f"{variable.path.replace('/', '_')}_{key}")
            if found is None and key == "step":
                found = optimizer.iterations  # Keras counts steps optimizer-wide
            if found is not None:
                entries[key] = _to_numpy(found)
        state[name] = entries
    return Trajectory(params=history, state=state)


def _tf_construct(spec: hs.Spec, params: Mapping[str, Any], base_lr: float) -> Any:
    if spec.kind == "schedule":
        return _tf_build(spec, params, base_lr)
    factory = resolve_api("tf", spec)
    return factory(**spelled(spec, params, "tf", _tf_nested))


# --------------------------------------------------------------------------- accumulators (both)


def _run_accumulator(framework: str, spec: hs.Spec, case: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One entry per op: ``{"step", "gradients"}`` (gradients None when reading them raises the
    not-initialized ValueError) or ``{"error": type name, "message": str}``."""
    from hf_optim_spec.reference import accumulator as ref_acc

    dtype = ref_case.case_dtype(case)
    rows = iter(ref_acc.case_grads(case))
    factory = resolve_api(framework, spec)
    acc = factory(**spelled(spec, case.get("params", {}), framework, lambda ref: ref))
    tensor = _torch_tensor if framework == "torch" else _tf_tensor
    out: list[dict[str, Any]] = []
    for op in case["ops"]:
        if op["op"] == "reset":
            acc.reset()
        else:
            grads = [None if g is None else tensor(g, dtype) for g in next(rows)]
            try:
                acc(grads)
            except (ValueError, TypeError) as error:
                out.append({"error": type(error).__name__, "message": str(error)})
                continue
        try:
            sums: list[Any] | None = [None if g is None else _to_numpy(g) for g in acc.gradients]
        except ValueError:
            sums = None
        out.append({"step": int(_to_numpy(acc.step)), "gradients": sums})
    return out


def _tf_tensor(value: Any, dtype: str) -> Any:
    from keras import ops

    return ops.convert_to_tensor(np.asarray(value, dtype=np.float64), dtype=dtype)


# --------------------------------------------------------------------------- the registry


@dataclass(frozen=True)
class Impl:
    """One framework package as the conformance suite drives it."""

    name: Framework
    module: str
    dtypes: tuple[str, ...]
    param_groups: bool
    lr_curve: Callable[[hs.Spec, Mapping[str, Any]], LrCurve]
    run_optimizer: Callable[[hs.Spec, Mapping[str, Any], str], Trajectory]
    run_accumulator: Callable[[hs.Spec, Mapping[str, Any]], list[dict[str, Any]]]
    construct: Callable[[hs.Spec, Mapping[str, Any], float], Any]

    def package(self) -> Any:
        return importlib.import_module(self.module)

    def api(self, spec: hs.Spec) -> Any:
        return resolve_api(self.name, spec)

    def runs(self, spec: hs.Spec, case: Mapping[str, Any]) -> bool:
        """Whether this framework can run a schedule case: a stateful case with several param groups needs them
        (a stateful schedule may couple its groups, and a Keras optimizer has one learning rate)."""
        return self.param_groups or not (spec.stateful and case.get("group_lrs"))

    def make_schedule(self, spec: hs.Spec, case: Mapping[str, Any]) -> Callable[[int], np.ndarray]:
        """``step -> float32 lr of every param group`` for a closed-form schedule case (one build per call)."""
        return lambda step: self.lr_curve(spec, {**case, "steps": [int(step)]}).lrs[:, 0]

    def raise_error(self, spec: hs.Spec, error_case: Mapping[str, Any]) -> BaseException | None:
        """The exception building ``spec`` with an error case's params raises (None when nothing is raised)."""
        try:
            self.construct(spec, error_case["params"], float(error_case.get("base_lr", 1.0)))
        except Exception as error:  # the error under test
            return error
        return None

    def schedule_at(self, spec: hs.Spec, params: Mapping[str, Any], base_lr: float, steps: Sequence[int]) -> np.ndarray:
        """float32 lr of the default group at ``steps`` (property tests)."""
        curve = self.lr_curve(spec, {"params": params, "base_lr": base_lr, "steps": list(steps)})
        return curve.lrs[0]

    def __repr__(self) -> str:
        return f"Impl({self.name})"


IMPLS: Mapping[str, Impl] = {
    "torch": Impl(
        name="torch",
        module="hf_optim_torch",
        dtypes=ALL_DTYPES,
        param_groups=True,
        lr_curve=_torch_lr_curve,
        run_optimizer=_torch_run_optimizer,
        run_accumulator=functools.partial(_run_accumulator, "torch"),
        construct=_torch_construct,
    ),
    "tf": Impl(
        name="tf",
        module="hf_optim_tf",
        dtypes=ALL_DTYPES,
        param_groups=False,
        lr_curve=_tf_lr_curve,
        run_optimizer=_tf_run_optimizer,
        run_accumulator=functools.partial(_run_accumulator, "tf"),
        construct=_tf_construct,
    ),
}


# --------------------------------------------------------------------------- caches shared by the test files


@functools.cache
def cached_lr_curve(framework: str, spec_id: str, index: int) -> LrCurve:
    """The lr curve of ``hs.get(spec_id).cases[index]`` (computed once per session).

    Building the schedule must warn exactly what the case's ``warns`` says (a UserWarning matching it), and
    nothing when the case has no ``warns``.
    """
    spec = hs.get(spec_id)
    case = spec.cases[index]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        curve = IMPLS[framework].lr_curve(spec, case)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    expected = case.get("warns")
    where = f"{framework} {spec_id} case {index} ({case['description']!r})"
    if expected is None and messages:
        raise AssertionError(f"{where}: building the schedule warned {messages}")
    if expected is not None and not any(re.search(expected, m) for m in messages):
        raise AssertionError(f"{where}: expected a UserWarning matching {expected!r}, got {messages}")
    return curve


@functools.cache
def cached_trajectory(framework: str, spec_id: str, index: int, dtype: str) -> Trajectory:
    spec = hs.get(spec_id)
    return IMPLS[framework].run_optimizer(spec, spec.cases[index], dtype)


@functools.cache
def cached_reference(spec_id: str, index: int) -> Trajectory:
    spec = hs.get(spec_id)
    return reference_trajectory(spec, spec.cases[index])


def finite_or_equal(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise: both NaN, or equal infinities (what the tolerance check cannot express)."""
    return (np.isnan(a) & np.isnan(b)) | (np.isinf(a) & (a == b))


def within(actual: Any, expected: Any, tol: hs.Tolerance) -> tuple[np.ndarray, float, float]:
    """(ok mask, max abs error, max rel error) of ``|actual - expected| <= atol + rtol * |expected|``.

    The relative error is taken over the values with ``|expected| > atol`` only (near zero it says nothing).
    """
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        raise AssertionError(f"shape {a.shape} != expected shape {e.shape}")
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        diff = np.abs(a - e)
        ok = (diff <= tol.atol + tol.rtol * np.abs(e)) | finite_or_equal(a, e)
        finite = np.isfinite(diff)
        max_abs = float(np.max(diff[finite], initial=0.0))
        scaled = finite & (np.abs(e) > max(tol.atol, 0.0)) & (np.abs(e) > 0)
        max_rel = float(np.max(diff[scaled] / np.abs(e[scaled]), initial=0.0))
    if not np.all(finite | finite_or_equal(a, e)):
        max_abs = math.inf
    return ok, max_abs, max_rel


# --------------------------------------------------------------------------- reproduction snippets


def public_call(framework: str, spec: hs.Spec, params: Mapping[str, Any], base_lr: float = 1.0) -> str:
    """The public-API call that builds ``spec`` with ``params`` in ``framework``, as Python source."""
    impl = IMPLS[framework]
    try:
        factory = resolve_api(framework, spec)
    except (LookupError, AttributeError, ImportError):
        factory = None

    def nested(ref: Mapping[str, Any]) -> _Source:
        return _Source(
            public_call(framework, hs.get(ref["schedule"]), ref.get("params", {}), float(ref.get("base_lr", 1.0)))
        )

    kwargs = spelled(spec, params, framework, nested)
    args: list[str] = []
    if spec.kind == "schedule" and factory is not None:
        if framework == "torch" and _takes(factory, "optimizer", spec, "torch"):
            args.append(f"torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr={base_lr!r})")
        elif framework == "torch" and _takes(factory, "params", spec, "torch"):
            args.append("[('w', torch.nn.Parameter(torch.zeros(2, 3)))]")
        if framework == "tf" and _takes(factory, "learning_rate", spec, "tf"):
            args.append(f"learning_rate={base_lr!r}")
    elif spec.kind == "optimizer":
        args.append("[('w', torch.nn.Parameter(torch.zeros(2, 3)))]" if framework == "torch" else "")
    rendered = [a for a in args if a] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{impl.module}.{spec.api.get(framework, '<no api name>')}({', '.join(rendered)})"


class _Source(str):
    """A string whose repr is itself (nested calls inside a rendered call)."""

    def __repr__(self) -> str:
        return str(self)


def repro(framework: str | None, spec: hs.Spec, index: int | None, call: str, *, source: str = "cases") -> str:
    """A snippet to paste into Python at the repository root (conformance importable) to see the failure."""
    head = (
        "import torch, keras, hf_optim_torch, hf_optim_tf"
        if framework is None
        else ("import torch, hf_optim_torch" if framework == "torch" else "import keras, hf_optim_tf")
    )
    lines = [
        "Reproduce (run from the repository root):",
        "    import hf_optim_spec as hs",
        "    from conformance import _impls",
        f"    spec = hs.get({spec.id!r})",
    ]
    if index is not None:
        lines.append(f"    case = spec.{source}[{index}]  # {getattr(spec, source)[index].get('description', '')}")
    lines.append(f"    print({call})")
    if index is not None and framework is not None:
        case = getattr(spec, source)[index]
        params = case.get("params", case.get("hyperparams", {}))
        lines += ["Public API:", f"    {head}", f"    {public_call(framework, spec, params, case_base_lr(case))}"]
    return "\n".join(lines)
