"""Malformed-checkpoint fuzz, Keras side: mutate a real optimizer state and restore it through a Keras route.

:func:`run_batch` trains a small model (a 2-D kernel, a 1-D bias, a 3-D tensor whose Adafactor state is factored,
a layer-norm scale) for three steps, captures the optimizer's variables and, ``count`` times, applies one seeded
mutation and restores the result into a freshly built optimizer (one target, reset to its fresh values before each
try) through one route:

* ``keras_store``: ``optimizer.load_own_variables(store)``, what ``.keras`` / ``.weights.h5`` loading calls (a dict
  ``{"0": array, ...}``, as Keras' stores are);
* ``set_weights``: ``optimizer.set_weights(list of arrays)``;
* ``tf_checkpoint``: ``tf.train.Checkpoint(optimizer=target).restore(path)`` of a checkpoint written from an object
  graph with the optimizer's structure (``_variables/<i>``), or the real checkpoint of another optimizer (TensorFlow
  backend only; TensorFlow is imported for this route alone).

The backend is Keras' ``KERAS_BACKEND`` (TensorFlow when unset); the first two routes run on every backend.

Every mutation is labelled. ``harmful`` ones must be rejected with a ValueError/TypeError whose message names the
mutated state key (or, for a structural mutation, the variables), leaving every variable as it was; ``harmless:<why>``
ones must be accepted, and one step after them must equal, bit for bit, the step after restoring the clean state
through the same route. Two harmless cases load nothing and must change nothing: ``store_saved_before_build`` (Keras'
documented case of a store holding only ``iterations``/``learning_rate``: a warning) and
``no_optimizer_value_in_checkpoint`` (an optimizer node without any variable: TensorFlow's partial restore, as for a
checkpoint without the optimizer). The caller runs each batch in a fresh process, so a crash counts as one.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import random
import shutil
import tempfile
import warnings
from typing import Any

import hf_optim_tf as ht
import keras
import numpy as np
from hf_optim_tf._variables import numpy_value

from testsupport.compare import same_bits
from testsupport.keras_adapter import keras_variable

from ._fuzz_keras_mutations import Mutation, Trained, state_mutations
from ._fuzz_plan import DTYPES, OPTIMIZERS, empty_report, keras_routes

SHAPES = {"dense/kernel": (3, 5), "dense/bias": (5,), "attention/kernel": (2, 3, 4), "layer_norm/gamma": (5,)}
TRAIN_STEPS = 3


def _make(spec_id: str, dtype: str, variant: int = 0) -> keras.optimizers.Optimizer:
    """The optimizer under test (variant 0) and a configuration of its class with other state (variant 1)."""
    if spec_id == "adamw":
        return ht.AdamW(1e-2, weight_decay=0.01, use_ema=bool(variant))
    if spec_id == "adam_weight_decay":
        return ht.AdamWeightDecay(
            1e-2, weight_decay_rate=0.01, amsgrad=bool(variant), exclude_from_weight_decay=["layer_norm", "bias"]
        )
    if variant:
        return ht.Adafactor(1e-2, beta_1=0.9, relative_step=False, scale_parameter=False)
    return ht.Adafactor(weight_decay=0.01)


def _variables(dtype: str) -> list[keras.Variable]:
    rng = np.random.default_rng(0)
    return [
        keras_variable(path, rng.standard_normal(shape).astype(np.float32), dtype) for path, shape in SHAPES.items()
    ]


def _grads(dtype: str, step: int) -> list[Any]:
    rng = np.random.default_rng(100 + step)
    return [
        keras.ops.convert_to_tensor(rng.standard_normal(shape).astype(np.float32), dtype=dtype)
        for shape in SHAPES.values()
    ]


def _values(variables: list[Any]) -> list[np.ndarray]:
    return [np.array(numpy_value(v)) for v in variables]


def _tf() -> Any:
    import tensorflow as tf

    tf.get_logger().setLevel("ERROR")  # TF warns about every unmatched checkpoint value of the rejected restores
    return tf


def _train(spec_id: str, dtype: str, variant: int = 0) -> Trained:
    variables = _variables(dtype)
    optimizer = _make(spec_id, dtype, variant)
    optimizer.build(variables)
    for step in range(TRAIN_STEPS):
        optimizer.apply(_grads(dtype, step), variables)
    slots = optimizer._restore_slots()
    return Trained(
        optimizer,
        _values(optimizer.variables),
        [s.key for s in slots],
        [s.owner for s in slots],
        _values(variables),
    )


class _Target:
    """A freshly built optimizer over fresh model variables, reset to its fresh values before every try."""

    def __init__(self, spec_id: str, dtype: str, trained: Trained) -> None:
        self.variables = _variables(dtype)
        for variable, value in zip(self.variables, trained.model):
            variable.assign(value)
        self.model = _values(self.variables)
        self.optimizer = _make(spec_id, dtype)
        self.optimizer.build(self.variables)
        self.fresh = _values(self.optimizer.variables)
        self.dtype = dtype

    def reset(self) -> None:
        for variable, value in zip(self.optimizer.variables, self.fresh):
            variable.assign(value)
        for variable, value in zip(self.variables, self.model):
            variable.assign(value)

    def snapshot(self) -> list[np.ndarray]:
        return _values(self.optimizer.variables) + _values(self.variables)

    def step(self) -> list[np.ndarray]:
        self.optimizer.apply(_grads(self.dtype, TRAIN_STEPS), self.variables)
        return self.snapshot()


class _Checkpoints:
    """Checkpoint files for the ``tf_checkpoint`` route (an object graph with the optimizer's structure)."""

    def __init__(self) -> None:
        self.root = tempfile.mkdtemp(prefix="hf-optim-fuzz-keras-")
        self.count = 0

    def write(self, values: list[Any]) -> str:
        tf = _tf()
        fake = tf.__internal__.tracking.AutoTrackable()
        fake._variables = [tf.Variable(v) for v in values]
        self.count += 1
        return tf.train.Checkpoint(optimizer=fake).write(os.path.join(self.root, f"c{self.count}"))

    def write_real(self, optimizer: Any) -> str:
        self.count += 1
        return _tf().train.Checkpoint(optimizer=optimizer).write(os.path.join(self.root, f"r{self.count}"))

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def _restore(route: str, target: _Target, payload: Any) -> None:
    if route == "keras_store":
        target.optimizer.load_own_variables(payload)
    elif route == "set_weights":
        target.optimizer.set_weights(payload)
    else:
        _tf().train.Checkpoint(optimizer=target.optimizer).restore(payload)


def _payload(route: str, mutation: Mutation, checkpoints: _Checkpoints) -> Any:
    values = mutation.values
    if isinstance(values, Trained):  # another optimizer, tf_checkpoint: its real checkpoint
        return checkpoints.write_real(values.optimizer)
    if route == "keras_store":
        return values if isinstance(values, dict) else {str(i): v for i, v in enumerate(values)}
    if route == "set_weights":
        return values
    return checkpoints.write(values)


_CACHE: dict[tuple[str, str], tuple[Trained, dict[str, Trained], _Target]] = {}


def _setup(spec_id: str, dtype: str) -> tuple[Trained, dict[str, Trained], _Target]:
    key = (spec_id, dtype)
    if key not in _CACHE:
        trained = _train(spec_id, dtype)
        others = {name: _train(name, dtype) for name in OPTIMIZERS if name != spec_id}
        others[f"{spec_id}_other_config"] = _train(spec_id, dtype, variant=1)
        _CACHE[key] = (trained, others, _Target(spec_id, dtype, trained))
    return _CACHE[key]


def run_batch(spec_id: str, route: str, dtype: str, seed: int, count: int) -> dict[str, Any]:
    """``count`` seeded mutations of one optimizer's state restored through ``route``; the tally (module docstring)."""
    if spec_id not in OPTIMIZERS or route not in keras_routes(keras.backend.backend()) or dtype not in DTYPES:
        raise ValueError(f"unknown batch ({spec_id!r}, {route!r}, {dtype!r}) on {keras.backend.backend()!r}")
    trained, others, target = _setup(spec_id, dtype)
    rng = random.Random(f"{seed}:{spec_id}:{route}:{dtype}")
    checkpoints = _Checkpoints()
    report = empty_report("tf", spec_id, route, dtype) | {"backend": keras.backend.backend()}
    try:
        clean = Mutation("clean", "harmless:clean", list(trained.values), (), "the saved state")
        target.reset()
        _restore(route, target, _payload(route, clean, checkpoints))
        reference = target.step()
        unbuilt = target.optimizer._unbuilt_variable_count()
        factories = state_mutations(trained, others, route, dtype, rng, unbuilt)
        while report["tried"] < count:
            mutation = rng.choice(factories)()
            if mutation is None:
                continue
            report["tried"] += 1
            _try(route, target, mutation, checkpoints, reference, report)
    finally:
        checkpoints.close()
    return report


def _try(
    route: str,
    target: _Target,
    mutation: Mutation,
    checkpoints: _Checkpoints,
    reference: list[np.ndarray],
    report: dict[str, Any],
) -> None:
    target.reset()
    payload = _payload(route, mutation, checkpoints)
    before = target.snapshot()
    what = f"{route} {mutation.kind} at {mutation.where}"
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            _restore(route, target, payload)
    except Exception as error:  # classified below; a crash would end the process and count as one
        message = f"{type(error).__name__}: {error}"
        if mutation.label != "harmful":
            report["false_rejections"].append(f"{what} ({mutation.label}) rejected: {message[:400]}")
            return
        report["rejected"] += 1
        if not isinstance(error, (ValueError, TypeError)) or not any(name in str(error) for name in mutation.names):
            report["unclear"].append(f"{what}: {message[:400]}")
        if not same_bits(target.snapshot(), before):
            report["changed"].append(f"{what}: rejected ({message[:200]}) but a variable changed")
        return
    if mutation.label == "harmful":
        report["silent"].append(f"{what}: accepted")
        return
    reason = mutation.label.split(":", 1)[1]
    if reason == "store_saved_before_build":
        ok = same_bits(target.snapshot(), before) and any("Skipping variable loading" in str(w.message) for w in caught)
        problem = "loaded something or did not warn"
    elif reason == "no_optimizer_value_in_checkpoint":
        ok = same_bits(target.snapshot(), before)
        problem = "a variable changed"
    else:
        ok = same_bits(target.step(), reference)
        problem = "the step after it differs from the step after the clean state"
    if ok:
        report["accepted_harmless"][reason] = report["accepted_harmless"].get(reason, 0) + 1
    else:
        report["silent"].append(f"{what} ({mutation.label}) accepted but {problem}")
