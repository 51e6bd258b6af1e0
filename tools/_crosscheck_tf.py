"""crosscheck adapters for transformers' TF side (``transformers/optimization_tf.py`` on tf-keras).

transformers 4.57's TF code runs on Keras 2 only, so the crosscheck environment installs ``tf-keras``
next to TensorFlow; transformers then builds WarmUp, create_optimizer and AdamWeightDecay on
``tf_keras`` (AdamWeightDecay subclasses the legacy Keras 2 Adam). Imported only by
``tools/crosscheck.py``; the hf-optim packages never import transformers.
"""

from __future__ import annotations

import os
import re

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

from collections.abc import Callable, Mapping
from typing import Any

import hf_optim_spec as hs
import numpy as np
import tensorflow as tf
import transformers.optimization_tf as hf_tf
from _crosscheck_common import Outcome, Skip, hf_kwargs
from hf_optim_spec import is_schedule_ref

__all__ = ["build_schedule", "error_runner", "runner"]

_TF_DTYPES = {"float64": tf.float64, "float32": tf.float32, "bfloat16": tf.bfloat16, "float16": tf.float16}

# Keras 2 slot names of the legacy Adam under the spec's state names.
_SLOTS = {"exp_avg": "m", "exp_avg_sq": "v", "max_exp_avg_sq": "vhat"}


def _with_schedules(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``kwargs`` with every spec schedule reference replaced by its transformers/tf-keras schedule object."""
    return {name: build_schedule(value) if is_schedule_ref(value) else value for name, value in kwargs.items()}


def build_schedule(ref: Mapping[str, Any]) -> Any:
    """The transformers/tf-keras schedule object of a spec schedule reference ``{"schedule": id, "params": {...}}``."""
    spec_id = ref["schedule"]
    kwargs = _with_schedules(hf_kwargs(hs.get(spec_id), ref.get("params", {})))
    if spec_id == "polynomial_decay":
        # the PolynomialDecay class create_optimizer itself uses
        return hf_tf.schedules.PolynomialDecay(**kwargs)
    if spec_id == "warmup":
        return hf_tf.WarmUp(**kwargs)
    if spec_id == "create_optimizer":
        return hf_tf.create_optimizer(**kwargs)[1]
    raise Skip(f"schedule {spec_id!r} has no transformers TF counterpart")


def _lr_schedule(spec: Any, case: Mapping[str, Any]) -> Outcome:
    """The schedule evaluated at every case step (int64 steps, as Keras optimizers pass ``iterations``)."""
    schedule = build_schedule({"schedule": spec.id, "params": case.get("params", {})})
    values = [float(schedule(tf.constant(step, dtype=tf.int64)).numpy()) for step in case["steps"]]
    return Outcome(values, "float32")


def _tensor(value: Any, dtype: tf.DType) -> tf.Tensor:
    return tf.cast(tf.constant(np.asarray(value, dtype=np.float64)), dtype)


def _numpy(value: Any) -> np.ndarray:
    return np.array(tf.cast(value, tf.float64).numpy(), dtype=np.float64, copy=True)


def _adam_weight_decay(spec: Any, case: Mapping[str, Any]) -> Outcome:
    """Replay the case through ``AdamWeightDecay.apply_gradients`` (one call per step, eager)."""
    if "params0" not in case or "grads" not in case:
        raise Skip("case has no generated params0/grads (run tools/regen_vectors.py)")
    dtype = str(case.get("dtype", "float32"))
    tf_dtype = _TF_DTYPES[dtype]
    kwargs = {name: value for name, value in hf_kwargs(spec, case.get("hyperparams", {})).items() if value is not None}
    kwargs = _with_schedules(kwargs)
    variables = {name: tf.Variable(_tensor(value, tf_dtype), name=name) for name, value in case["params0"].items()}
    optimizer = hf_tf.AdamWeightDecay(**kwargs)
    history = []
    for row in case["grads"]:
        pairs = [
            (None if row.get(name) is None else _tensor(row[name], tf_dtype), var) for name, var in variables.items()
        ]
        optimizer.apply_gradients(pairs)
        history.append({name: _numpy(var) for name, var in variables.items()})
    step = int(optimizer.iterations.numpy())
    state: dict[str, Any] = {}
    for name, var in variables.items():
        entry: dict[str, Any] = {"step": step}
        for key, slot in _SLOTS.items():
            if slot not in optimizer.get_slot_names():
                continue
            try:
                entry[key] = _numpy(optimizer.get_slot(var, slot))
            except KeyError:
                # Keras 2 creates slots on a variable's first gradient; before that they are zeros.
                entry[key] = np.zeros(var.shape)
        state[name] = entry
    return Outcome({"params": history, "state": state}, dtype)


def _accumulator(spec: Any, case: Mapping[str, Any]) -> Outcome:
    """Replay the case's ops (accumulate / reset) on a GradientAccumulator; one entry per op, like the reference."""
    if "grads" not in case:
        raise Skip("case has no generated grads (run tools/regen_vectors.py)")
    dtype = str(case.get("dtype", "float32"))
    tf_dtype = _TF_DTYPES[dtype]
    accumulator = hf_tf.GradientAccumulator()
    rows = iter(case["grads"])
    entries: list[dict[str, Any]] = []
    for op in case["ops"]:
        if op["op"] == "reset":
            accumulator.reset()
        else:
            grads = [None if g is None else _tensor(g, tf_dtype) for g in next(rows)]
            try:
                accumulator(grads)
            except ValueError as error:
                entries.append({"error": "ValueError", "match": re.escape(str(error))})
                continue
        try:
            sums: list[Any] | None = [None if g is None else _numpy(g) for g in accumulator.gradients]
        except ValueError:  # "The accumulator should be called first to initialize the gradients"
            sums = None
        entries.append({"step": int(accumulator.step.numpy()), "gradients": sums or None})
    return Outcome(entries, dtype)


# --------------------------------------------------------------------------- error cases


def _construct_schedule(spec: Any, err: Mapping[str, Any]) -> None:
    build_schedule({"schedule": spec.id, "params": err["params"]})(tf.constant(0, dtype=tf.int64))


def _construct_adam_weight_decay(spec: Any, err: Mapping[str, Any]) -> None:
    hf_tf.AdamWeightDecay(**_with_schedules(err["params"]))


def _construct_accumulator(spec: Any, err: Mapping[str, Any]) -> None:
    hf_tf.GradientAccumulator(**err["params"])


_ADAPTERS: dict[str, tuple[Callable[..., Outcome], Callable[..., None]]] = {
    "polynomial_decay": (_lr_schedule, _construct_schedule),
    "warmup": (_lr_schedule, _construct_schedule),
    "create_optimizer": (_lr_schedule, _construct_schedule),
    "adam_weight_decay": (_adam_weight_decay, _construct_adam_weight_decay),
    "gradient_accumulator": (_accumulator, _construct_accumulator),
}
"""Per spec id: the value-case runner and the error-case constructor."""


def runner(spec: Any) -> Callable[[Any, Mapping[str, Any]], Outcome] | None:
    """The adapter of a spec, or None when transformers' TF side has no counterpart."""
    return _ADAPTERS[spec.id][0] if spec.id in _ADAPTERS else None


def error_runner(spec: Any) -> Callable[[Any, Mapping[str, Any]], None] | None:
    """A callable that feeds an error case's params to transformers (it raises or returns None)."""
    return _ADAPTERS[spec.id][1] if spec.id in _ADAPTERS else None
