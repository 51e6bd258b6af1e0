"""The reliability scenarios: which spec objects train together, with which arguments, steps and inputs.

Nothing here names a schedule or an optimizer (:mod:`reliability._runs` trains a scenario). Objects come from ``spec.api[framework]`` of
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
from collections.abc import Mapping
from typing import Any

import hf_optim_spec as hs
import numpy as np

from testsupport.spec_args import api, has_api, signature, spellings, takes_kwargs

FRAMEWORKS = ("torch", "tf")


# --------------------------------------------------------------------------- spec helpers


def specs_of(kind: str) -> list[hs.Spec]:
    return [spec for spec in hs.registry().values() if spec.kind == kind]


def lr_param(spec: hs.Spec) -> hs.Parameter:
    """The optimizer's learning-rate parameter: the one Keras spells ``learning_rate``."""
    return next(p for p in spec.parameters.values() if p.name_for("tf") == "learning_rate")


def optimizer_case(spec: hs.Spec, needs_lr: bool) -> int:
    """Index of the first float32 case without schedule refs (with a learning rate when a schedule drives it)."""
    for index, case in enumerate(spec.cases):
        hyper = case.get("hyperparams", {})
        if case.get("dtype", "float32") != "float32" or any(hs.is_schedule_ref(v) for v in hyper.values()):
            continue
        lr = hs.validate(spec, hs.thaw(hyper))[lr_param(spec).name]
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
        if case.get("dtype", "float32") != "float32" or any(hs.is_schedule_ref(v) for v in hyper.values()):
            continue
        changed = {k for k, v in hyper.items() if k not in spec.parameters or v != spec.parameters[k].default}
        if not picks or changed - seen:
            picks.append(index)
            seen |= changed
    return picks


def schedule_params(spec: hs.Spec) -> dict[str, Any]:
    """The first case's arguments (canonical names)."""
    return hs.thaw(spec.cases[0].get("params", {}))


def _numbers(value: Any) -> list[float]:
    if hs.is_schedule_ref(value):
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


def torch_is_proxy(spec: hs.Spec) -> bool:
    """A torch schedule API that takes the optimizer but not the spec's own parameters (reports its lr)."""
    sig = signature(api("torch", spec))
    if "optimizer" not in sig or takes_kwargs(sig):
        return False
    return not spellings(spec, "torch") <= set(sig)


def builds_optimizer(spec: hs.Spec, framework: str) -> bool:
    """The schedule factory returns ``(optimizer, schedule)`` (read from its return annotation)."""
    return str(inspect.signature(api(framework, spec)).return_annotation).startswith("tuple")


def closest_optimizer(spec: hs.Spec) -> hs.Spec:
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
        shapes = hs.thaw(optimizer.cases[case]["shapes"]) if optimizer is not None else {"w": [3, 4], "b": [4]}
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
            add(closest_optimizer(schedule), schedule, needs_lr=False)
        else:
            for optimizer in optimizers if full else [optimizers[index % len(optimizers)]]:
                add(optimizer, schedule, needs_lr=True)
    return out


def fixed_interruptions(scenario: Mapping[str, Any], full: bool) -> set[int]:
    """Steps every run is interrupted at: 0, every boundary (and its neighbours in the full run), the last step, the
    end."""
    steps = scenario["steps"]
    points = {0, steps - 1, steps}
    for b in scenario["bounds"]:
        points.update({b - 1, b, b + 1} if full else {b})
    return {p for p in points if 0 <= p <= steps}


def random_interruptions(scenario: Mapping[str, Any], full: bool, rng: np.random.Generator) -> set[int]:
    """Random steps to interrupt at besides the fixed ones (6 draws in the full run, 1 in the reduced one)."""
    return {int(x) for x in rng.integers(1, scenario["steps"], size=6 if full else 1)}
