"""Training runs of a reliability scenario in either package: build, step, snapshot, checkpoint, restore.

A scenario (:func:`reliability._drive.scenarios`) names an optimizer spec, a schedule spec or both; the objects
come from the packages' public names through :mod:`testsupport.spec_args` and the shared adapters, and the way a
schedule is wired into the loop is read from its factory's signature (see :mod:`reliability._drive`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import hf_optim_spec as hs
import numpy as np

from testsupport import keras_adapter, torch_adapter
from testsupport.spec_args import api, signature, spelled, spellings, takes_kwargs

from ._drive import grads_at, init_params, lr_param, metric_at

__all__ = ["TfRun", "TorchRun", "tf_optimizer"]


def _optimizer_kwargs(scn: Mapping[str, Any], framework: str) -> tuple[hs.Spec, dict[str, Any]]:
    """The optimizer spec of a scenario and its arguments: the chosen case's hyperparameters plus ``extra``."""
    spec = hs.get(scn["optimizer"])
    hyper = {**hs.thaw(spec.cases[scn["opt_case"]].get("hyperparams", {})), **scn.get("extra", {})}
    if framework == "torch" and scn.get("base_lr") is not None:  # the schedule case's lr (LambdaLR multiplies it)
        hyper[lr_param(spec).name] = scn["base_lr"]
    nested = torch_adapter.nested_schedule if framework == "torch" else keras_adapter.nested_schedule
    return spec, spelled(spec, hyper, framework, nested, pairs_as_tuples=True)


# --------------------------------------------------------------------------- torch


def _torch_optimizer(scn: Mapping[str, Any], named: Mapping[str, Any]) -> Any:
    spec, kwargs = _optimizer_kwargs(scn, "torch")
    return api("torch", spec)(list(named.items()), **kwargs)


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
        factory = api("torch", spec)
        sig = signature(factory)
        kwargs = spelled(spec, scn["params"], "torch", torch_adapter.nested_schedule, pairs_as_tuples=True)
        if "params" in sig and "params" not in spec.parameters:
            result = factory(list(self.named.items()), **kwargs)
            self.optimizer = next(r for r in result if isinstance(r, torch.optim.Optimizer))
            self.scheduler = next(r for r in result if not isinstance(r, torch.optim.Optimizer))
            return
        self.optimizer = _torch_optimizer(scn, self.named)
        if "optimizer" in sig:
            if not takes_kwargs(sig):
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
        lrs = [torch_adapter.as_float(group.get("lr")) for group in self.optimizer.param_groups]
        if self.scheduler is not None:
            lrs += [torch_adapter.as_float(x) for x in self.scheduler.get_last_lr()]
        out["lr"] = np.asarray(lrs, dtype=np.float64)
        return out

    def final_state(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for name, p in self.named.items():
            for key, value in self.optimizer.state.get(p, {}).items():
                out[f"state:{name}:{key}"] = np.asarray(torch_adapter.as_array(value))
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


# --------------------------------------------------------------------------- Keras


def tf_optimizer(scn: Mapping[str, Any], learning_rate: Any = None, **extra: Any) -> Any:
    spec, kwargs = _optimizer_kwargs(scn, "tf")
    if learning_rate is not None:
        kwargs["learning_rate"] = learning_rate
    return api("tf", spec)(**kwargs, **extra)


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
            factory = api("tf", spec)
            kwargs = spelled(spec, scn["params"], "tf", keras_adapter.nested_schedule, pairs_as_tuples=True)
            if "learning_rate" in signature(factory) and "learning_rate" not in spellings(spec, "tf"):
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
        self.model = keras_adapter.keras_model_class()(scn["shapes"], param_dtype=param_dtype, name="params")
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
