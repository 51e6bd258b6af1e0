"""The one way the test suites build and run a spec object of ``hf_optim_torch``, through its public names only.

Conventions read from a factory's signature (never from a spec id):

* a schedule factory with an ``optimizer`` argument (that is not a spec parameter) receives an optimizer whose
  param groups carry the case's learning rates; one with a ``params`` argument builds its own optimizer
  (``create_optimizer`` returns ``(optimizer, scheduler)``: the scheduler is picked out);
* schedulers are stepped as a training loop steps them (one ``scheduler.step()`` per step, the lr read from
  ``optimizer.param_groups``); plain callables are called with the step; stateful schedulers get the metrics;
* optimizers receive ``(name, tensor)`` pairs, so include/exclude patterns see the case's parameter names, and
  their state is read from ``optimizer.state[p]``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import hf_optim_spec as hs
import numpy as np
from hf_optim_spec.reference import _case as ref_case

from .results import LrCurve, Trajectory, to_numpy
from .spec_args import group_lrs, resolve_api, spelled, takes

__all__ = [
    "SEQUENTIAL_LIMIT",
    "TORCH_DEVICE",
    "as_array",
    "as_float",
    "build_schedule",
    "construct",
    "lr_curve",
    "named_params",
    "nested_schedule",
    "run_optimizer",
    "tensor",
    "torch_device",
]

TORCH_DEVICE = os.environ.get("HF_OPTIM_TORCH_DEVICE", "cpu")
"""Where the torch cases' parameters, gradients and accumulated gradients live: ``HF_OPTIM_TORCH_DEVICE=cuda``
runs every torch case on the GPU (the optimizers' state follows their parameters there)."""
SEQUENTIAL_LIMIT = 5000
"""Torch schedulers are stepped one step at a time up to this step; beyond it the LambdaLR
multipliers are evaluated directly (``base_lr * lr_lambda(step)``, exactly what ``LambdaLR`` sets)."""


@functools.cache
def torch_device() -> Any:
    """``TORCH_DEVICE`` as a ``torch.device``, checked once: a device torch cannot use fails every case loudly."""
    import torch

    try:
        device = torch.device(TORCH_DEVICE)
        torch.zeros(1, device=device)
    except (RuntimeError, AssertionError) as error:  # torch raises AssertionError for a build without CUDA
        raise ValueError(
            f"HF_OPTIM_TORCH_DEVICE must name a device torch can use here; got {TORCH_DEVICE!r} ({error})"
        ) from error
    return device


def tensor(value: Any, dtype: str) -> Any:
    """A tensor of ``dtype`` on the case device, from float64 values."""
    import torch

    return torch.tensor(np.asarray(value, dtype=np.float64)).to(device=torch_device(), dtype=getattr(torch, dtype))


def as_float(value: Any) -> float:
    """A python float of a group's lr (a tensor lr included; NaN for None)."""
    if value is None:
        return float("nan")
    if hasattr(value, "item"):
        return float(value.item())
    return float(value)


def as_array(value: Any) -> Any:
    """A numpy copy of a tensor state entry (other values as they are)."""
    if hasattr(value, "detach"):
        return value.detach().cpu().numpy().copy()
    return value


# --------------------------------------------------------------------------- schedules


def named_params() -> list[tuple[str, Any]]:
    """The parameters given to a factory that builds its own optimizer."""
    import torch

    return [("w", torch.nn.Parameter(torch.zeros(2, 3)))]


def _optimizer_for(lrs: Sequence[float]) -> Any:
    import torch

    params = [torch.nn.Parameter(torch.zeros(1)) for _ in lrs]
    return torch.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, lrs)], lr=lrs[0])


def is_scheduler(obj: Any) -> bool:
    import torch

    return isinstance(obj, (torch.optim.lr_scheduler.LRScheduler, torch.optim.lr_scheduler.ReduceLROnPlateau))


def pick_schedule(result: Any) -> Any:
    """The schedule of a factory's result: itself, or of a tuple the LR scheduler (else the first callable that is
    not an optimizer)."""
    if not isinstance(result, tuple):
        return result
    import torch

    preferred = [r for r in result if is_scheduler(r)]
    others = [r for r in result if callable(r) and not isinstance(r, torch.optim.Optimizer)]
    if preferred or others:
        return (preferred or others)[0]
    raise TypeError(f"no schedule among the {len(result)} values returned: {[type(r).__name__ for r in result]}")


def build_schedule(spec: hs.Spec, params: Mapping[str, Any], lrs: Sequence[float]) -> Any:
    """The torch object of a schedule spec (a scheduler or a callable of the step)."""
    factory = resolve_api("torch", spec)
    kwargs = spelled(spec, params, "torch", nested_schedule)
    args = []
    if takes(factory, "optimizer", spec, "torch"):
        args.append(_optimizer_for(lrs))
    elif takes(factory, "params", spec, "torch"):  # builds its own optimizer (create_optimizer)
        args.append(named_params())
    return pick_schedule(factory(*args, **kwargs))


def nested_schedule(ref: Mapping[str, Any]) -> Any:
    """The object a schedule reference (``{"schedule": id, "params": {...}}``) stands for."""
    return build_schedule(hs.get(ref["schedule"]), ref.get("params", {}), [float(ref.get("base_lr", 1.0))])


def _group_lrs_of(scheduler: Any) -> list[float]:
    return [float(group["lr"]) for group in scheduler.optimizer.param_groups]


def _curve(obj: Any, steps: Sequence[int]) -> np.ndarray:
    if not is_scheduler(obj):
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


def lr_curve(spec: hs.Spec, case: Mapping[str, Any]) -> LrCurve:
    """The float32 lr of every param group of the case at its steps (or metrics)."""
    obj = build_schedule(spec, case.get("params", {}), group_lrs(case))
    if spec.stateful:
        obj.optimizer.step()
        rows = []
        for metric in case["metrics"]:
            obj.step(metric)
            rows.append(_group_lrs_of(obj))
        return LrCurve(tuple(case["metrics"]), np.asarray(rows, dtype=np.float32).T)
    return LrCurve(tuple(case["steps"]), _curve(obj, case["steps"]))


# --------------------------------------------------------------------------- optimizers and other objects


def run_optimizer(spec: hs.Spec, case: Mapping[str, Any], dtype: str) -> Trajectory:
    """Train the case's parameters on its gradients, in ``dtype`` on the case device."""
    import torch

    params0, grads = ref_case.case_inputs(case)
    named = {name: torch.nn.Parameter(tensor(value, dtype)) for name, value in params0.items()}
    factory = resolve_api("torch", spec)
    kwargs = spelled(spec, case.get("hyperparams", {}), "torch", nested_schedule)
    optimizer = factory(list(named.items()), **kwargs)
    history = []
    for row in grads:
        for name, param in named.items():
            grad = row.get(name)
            param.grad = None if grad is None else tensor(grad, dtype)
        optimizer.step()
        history.append({name: to_numpy(p) for name, p in named.items()})
    state = {}
    for name, param in named.items():
        entries = optimizer.state.get(param, {})
        state[name] = {key: to_numpy(entries[key]) for key in spec.state if key in entries and entries[key] is not None}
    return Trajectory(params=history, state=state)


def construct(spec: hs.Spec, params: Mapping[str, Any], base_lr: float) -> Any:
    """Build the public object of any spec kind with ``params`` (error cases)."""
    if spec.kind == "schedule":
        return build_schedule(spec, params, [base_lr])
    factory = resolve_api("torch", spec)
    kwargs = spelled(spec, params, "torch", nested_schedule)
    if spec.kind == "optimizer":
        return factory(named_params(), **kwargs)
    return factory(**kwargs)
