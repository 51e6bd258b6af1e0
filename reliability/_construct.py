"""Build any spec object of either package from spelled arguments, and exercise it once (for bad-input tests)."""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import hf_optim_spec as hs
import numpy as np

from testsupport import keras_adapter, torch_adapter
from testsupport.spec_args import api, spelled, spellings, takes_kwargs
from testsupport.spec_args import signature as _signature

from . import _drive


def factory(framework: str, spec: hs.Spec) -> Any:
    return api(framework, spec)


def signature(framework: str, spec: hs.Spec) -> Mapping[str, inspect.Parameter]:
    return _signature(factory(framework, spec))


def takes(framework: str, spec: hs.Spec, name: str) -> bool:
    """``name`` is an argument of the public API (or it takes ``**kwargs``)."""
    sig = signature(framework, spec)
    return name in sig or takes_kwargs(sig)


def base_kwargs(framework: str, spec: hs.Spec) -> dict[str, Any]:
    """Valid arguments: the first case's, spelled for ``framework`` (nested schedules built)."""
    nested = torch_adapter.nested_schedule if framework == "torch" else keras_adapter.nested_schedule
    if spec.kind == "optimizer":
        params = hs.thaw(spec.cases[0].get("hyperparams", {}))
    else:
        params = hs.thaw(spec.cases[0].get("params", {})) if spec.cases else {}
    return {
        k: v
        for k, v in spelled(spec, params, framework, nested, pairs_as_tuples=True).items()
        if takes(framework, spec, k)
    }


def base_lr(spec: hs.Spec) -> float:
    return float(spec.cases[0].get("base_lr", 0.1)) if spec.cases else 0.1


def construct(framework: str, spec: hs.Spec, kwargs: Mapping[str, Any]) -> Any:
    """Call the public API with ``kwargs`` (plus the optimizer / learning rate / params it needs)."""
    func = factory(framework, spec)
    sig = signature(framework, spec)
    spelled_names = spellings(spec, framework)
    if framework == "torch":
        import torch

        if spec.kind == "optimizer":
            return func(
                [("w", torch.nn.Parameter(torch.ones(2, 3))), ("b", torch.nn.Parameter(torch.ones(3)))], **kwargs
            )
        if "params" in sig and "params" not in spelled_names:
            return func([("w", torch.nn.Parameter(torch.ones(2, 3)))], **kwargs)
        if "optimizer" in sig and "optimizer" not in spelled_names:
            owner = _drive.closest_optimizer(spec) if _drive.torch_is_proxy(spec) else None
            if owner is not None:
                optimizer = factory("torch", owner)([torch.nn.Parameter(torch.ones(2, 3))])
            else:
                optimizer = torch.optim.SGD([torch.nn.Parameter(torch.ones(2, 3))], lr=base_lr(spec))
            return func(optimizer, **kwargs)
        return func(**kwargs)
    if "learning_rate" in sig and "learning_rate" not in spelled_names:
        return func(base_lr(spec), **kwargs)
    return func(**kwargs)


def exercise(framework: str, spec: hs.Spec, obj: Any, steps: int = 3) -> None:
    """Use an object that was accepted: optimizer steps, scheduler steps / schedule calls, accumulator calls."""
    if isinstance(obj, tuple):
        for part in obj:
            exercise(framework, spec, part, steps)
        return
    if framework == "torch":
        import torch

        if isinstance(obj, torch.optim.Optimizer):
            for _ in range(steps):
                for group in obj.param_groups:
                    for p in group["params"]:
                        p.grad = torch.full_like(p, 0.5)
                obj.step()
        elif hasattr(obj, "optimizer") and hasattr(obj, "step"):
            for i in range(steps):
                obj.optimizer.step()
                if isinstance(obj, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    obj.step(1.0 / (1 + i))
                else:
                    obj.step()
        elif callable(obj):
            for step in range(steps):
                obj(step)
        return
    import keras

    if isinstance(obj, keras.optimizers.Optimizer):
        variables = [
            keras.Variable(np.ones((2, 3), "float32"), name="w"),
            keras.Variable(np.ones(3, "float32"), name="b"),
        ]
        for _ in range(steps):
            obj.apply_gradients([(keras.ops.full(v.shape, 0.5), v) for v in variables])
    elif callable(obj):
        for step in range(steps):
            obj(keras.ops.convert_to_tensor(step, dtype="int64"))
        if hasattr(obj, "step"):
            obj.step(1.0)
