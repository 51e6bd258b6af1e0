"""crosscheck adapters for transformers' torch side (``transformers/optimization.py``).

Each adapter takes a spec and one of its cases and returns what the REAL transformers code computes,
in the layout of the case's ``expected`` field. Imported only by ``tools/crosscheck.py`` inside the
crosscheck environments; the hf-optim packages never import transformers.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import torch
import transformers.optimization as hf
from _crosscheck_common import Outcome, Skip, hf_kwargs, schedule_ref_unsupported

__all__ = ["error_runner", "runner"]

_TORCH_DTYPES = {
    "float64": torch.float64,
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def _hf_callable(spec: Any) -> Callable[..., Any]:
    """The transformers function a schedule spec mirrors: the first ``hf_name`` that optimization.py defines."""
    for name in spec.hf_name:
        if hasattr(hf, name):
            return getattr(hf, name)  # type: ignore[no-any-return]
    raise Skip(f"transformers.optimization defines none of {list(spec.hf_name)}")


def _dummy_optimizer(case: Mapping[str, Any]) -> torch.optim.Optimizer:
    """SGD whose default lr is the case's ``base_lr``, plus one extra param group per ``group_lrs`` entry."""
    base_lr = float(case.get("base_lr", 1.0))
    groups: list[dict[str, Any]] = [{"params": [torch.nn.Parameter(torch.zeros(1))]}]
    groups += [{"params": [torch.nn.Parameter(torch.zeros(1))], "lr": float(lr)} for lr in case.get("group_lrs", [])]
    return torch.optim.SGD(groups, lr=base_lr)


# --------------------------------------------------------------------------- schedules


def _factor_schedule(spec: Any, case: Mapping[str, Any]) -> Outcome:
    """LambdaLR factor of every param group at every case step (they must all equal the expected factor)."""
    kwargs = hf_kwargs(spec, case.get("params", {}))
    schedule_ref_unsupported(kwargs)
    optimizer = _dummy_optimizer(case)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scheduler = _hf_callable(spec)(optimizer, **kwargs)
    lambdas = scheduler.lr_lambdas
    values = []
    for step in case["steps"]:
        per_group = [float(fn(step)) for fn in lambdas]
        if len(set(per_group)) != 1:
            raise AssertionError(f"param groups get different factors at step {step}: {per_group}")
        values.append(per_group[0])
    return Outcome(values, "float64")


def _metric_driven(spec: Any, case: Mapping[str, Any]) -> Outcome:
    """The lr of the dummy optimizer's default group after each ``scheduler.step(metric)`` (stateful schedules:
    ReduceLROnPlateau, GreedyLR); the case's ``group_lrs`` groups take part (GreedyLR couples the groups)."""
    kwargs = hf_kwargs(spec, case.get("params", {}))
    optimizer = _dummy_optimizer(case)
    scheduler = _hf_callable(spec)(optimizer, **kwargs)
    values = []
    for metric in case["metrics"]:
        scheduler.step(metric)
        values.append(float(optimizer.param_groups[0]["lr"]))
    return Outcome(values, "float64")


def _adafactor_defaults() -> dict[str, Any]:
    signature = inspect.signature(hf.Adafactor.__init__)
    return {name: p.default for name, p in signature.parameters.items() if p.default is not inspect.Parameter.empty}


def _adafactor_lr(spec: Any, case: Mapping[str, Any]) -> Outcome:
    """``Adafactor._get_lr(param_group, param_state)`` with the case's flags, step and parameter RMS."""
    params = dict(case.get("params", {}))
    defaults = _adafactor_defaults()
    group = {
        "lr": params.get("lr", defaults["lr"]),
        "eps": (defaults["eps"][0], params.get("eps2", defaults["eps"][1])),
        "relative_step": params.get("relative_step", defaults["relative_step"]),
        "warmup_init": params.get("warmup_init", defaults["warmup_init"]),
        "scale_parameter": params.get("scale_parameter", defaults["scale_parameter"]),
    }
    values = [float(hf.Adafactor._get_lr(group, {"step": step, "RMS": params["rms"]})) for step in case["steps"]]
    return Outcome(values, "float64")


# --------------------------------------------------------------------------- optimizers


def _to_numpy(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().to(device="cpu", dtype=torch.float64, copy=True).numpy()
    return value


def _replay(optimizer_cls: type, spec: Any, case: Mapping[str, Any], **extra: Any) -> Outcome:
    """Step a transformers torch optimizer through the case's stored params0 and grads."""
    if "params0" not in case or "grads" not in case:
        raise Skip("case has no generated params0/grads (run tools/regen_vectors.py)")
    dtype = str(case.get("dtype", "float32"))
    torch_dtype = _TORCH_DTYPES[dtype]
    kwargs = hf_kwargs(spec, case.get("hyperparams", {}))
    if "betas" in kwargs:
        kwargs["betas"] = tuple(kwargs["betas"])
    if "eps" in kwargs and isinstance(kwargs["eps"], list):
        kwargs["eps"] = tuple(kwargs["eps"])
    params = {
        name: torch.nn.Parameter(torch.tensor(value, dtype=torch.float64).to(torch_dtype))
        for name, value in case["params0"].items()
    }
    optimizer = optimizer_cls(list(params.values()), **{**extra, **kwargs})
    history = []
    for row in case["grads"]:
        for name, param in params.items():
            grad = row.get(name)
            param.grad = None if grad is None else torch.tensor(grad, dtype=torch.float64).to(torch_dtype)
        optimizer.step()
        history.append({name: _to_numpy(param) for name, param in params.items()})
    state = {
        name: {key: _to_numpy(value) for key, value in optimizer.state[param].items()} for name, param in params.items()
    }
    return Outcome({"params": history, "state": state}, dtype)


def _adamw(spec: Any, case: Mapping[str, Any]) -> Outcome:
    return _replay(hf.AdamW, spec, case, no_deprecation_warning=True)


def _adafactor(spec: Any, case: Mapping[str, Any]) -> Outcome:
    return _replay(hf.Adafactor, spec, case)


_SPECIAL: dict[str, Callable[[Any, Mapping[str, Any]], Outcome]] = {
    "reduce_lr_on_plateau": _metric_driven,
    "greedy": _metric_driven,
    "adafactor_relative_step": _adafactor_lr,
    "adamw": _adamw,
    "adafactor": _adafactor,
}


def runner(spec: Any) -> Callable[[Any, Mapping[str, Any]], Outcome] | None:
    """The adapter of a spec, or None when transformers' torch side has no counterpart."""
    if spec.id in _SPECIAL:
        return _SPECIAL[spec.id]
    if spec.kind == "schedule" and spec.output == "factor":
        return _factor_schedule
    return None


# --------------------------------------------------------------------------- error cases


def _construct_schedule(spec: Any, err: Mapping[str, Any]) -> None:
    params = dict(err["params"])
    schedule_ref_unsupported(params)
    optimizer = _dummy_optimizer(err)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _hf_callable(spec)(optimizer, **params)


def _construct_adafactor_lr(spec: Any, err: Mapping[str, Any]) -> None:
    params = {k: v for k, v in err["params"].items() if k not in ("rms", "eps2")}
    if "eps2" in err["params"]:
        params["eps"] = (_adafactor_defaults()["eps"][0], err["params"]["eps2"])
    optimizer = hf.Adafactor([torch.nn.Parameter(torch.zeros(2, 2))], **params)
    rms = err["params"].get("rms", 0.0)
    hf.Adafactor._get_lr(optimizer.param_groups[0], {"step": 1, "RMS": rms})


def _construct_optimizer(spec: Any, err: Mapping[str, Any]) -> None:
    params = dict(err["params"])
    for pair in ("betas", "eps"):
        if isinstance(params.get(pair), list):
            params[pair] = tuple(params[pair])
    cls = hf.AdamW if spec.id == "adamw" else hf.Adafactor
    extra = {"no_deprecation_warning": True} if spec.id == "adamw" else {}
    cls([torch.nn.Parameter(torch.zeros(2, 2))], **params, **extra)


def error_runner(spec: Any) -> Callable[[Any, Mapping[str, Any]], None] | None:
    """A callable that feeds an error case's params to transformers (it raises or returns None)."""
    if spec.id == "adafactor_relative_step":
        return _construct_adafactor_lr
    if spec.id in ("adamw", "adafactor"):
        return _construct_optimizer
    if spec.kind == "schedule" and (spec.output == "factor" or spec.stateful):
        return _construct_schedule
    return None
