"""Keras peers: hf_optim_tf's optimizers against keras.optimizers, eager and under XLA (jit_compile=True)."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import hf_optim_spec
import hf_optim_tf
import keras
import numpy as np
import tensorflow as tf
from _layouts import layout_shapes
from _timing import Probe, interleave, probe_result, probed, step_past_eager_iterations, step_peak_bytes

__all__ = ["PEERS", "run_optimizers", "run_schedules"]

LR = 1e-3
WEIGHT_DECAY = 0.01

# name -> (builder, family, bandwidth-floor bytes per fp32 parameter per step)
PEERS: dict[str, tuple[Callable[[], keras.optimizers.Optimizer], str, int]] = {
    "hf_optim_tf.AdamW": (lambda: hf_optim_tf.AdamW(learning_rate=LR, weight_decay=WEIGHT_DECAY), "adamw", 28),
    "hf_optim_tf.AdamWeightDecay": (
        lambda: hf_optim_tf.AdamWeightDecay(learning_rate=LR, weight_decay_rate=WEIGHT_DECAY),
        "adam_weight_decay",
        28,
    ),
    "keras.optimizers.AdamW": (
        lambda: keras.optimizers.AdamW(learning_rate=LR, weight_decay=WEIGHT_DECAY),
        "adamw",
        28,
    ),
    "hf_optim_tf.Adafactor": (hf_optim_tf.Adafactor, "adafactor", 12),
    "keras.optimizers.Adafactor": (keras.optimizers.Adafactor, "adafactor", 12),
}


ADAFACTOR = frozenset({"hf_optim_tf.Adafactor", "keras.optimizers.Adafactor"})
"""The Adafactor peers: at 100M in ~200 tensors ``run.py`` leaves them out unless ``--full``, as their XLA
compilations take 20 s each there and the 10M table, of the same ~200 tensors, has them."""


def _state_bytes(optimizer: keras.optimizers.Optimizer, variables: list[keras.Variable]) -> int:
    own = {id(v) for v in variables}
    return sum(
        int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize
        for v in optimizer.variables
        if id(v) not in own and len(v.shape) > 0
    )


def run_optimizers(
    size: int,
    layout: str,
    *,
    warmup: int,
    rounds: int,
    jit: bool = True,
    eager: bool = True,
    log: Callable[[str], None] = print,
    leave_out: frozenset[str] = frozenset(),
    probe: Probe | None = None,
) -> dict[str, Any]:
    """Every Keras peer but those named in ``leave_out``, eager and/or under jit_compile on its own variables,
    interleaved (with ``probe``, if any, as one more peer: the bandwidth of each round, for the floors); then
    memory."""
    rng = np.random.default_rng(0)
    shapes = layout_shapes(layout, size)
    values = [(rng.standard_normal(s, dtype=np.float32) * 0.02) for s in shapes]
    grads = [tf.constant(rng.standard_normal(s, dtype=np.float32) * 1e-3) for s in shapes]
    held = [tf.Variable(g, trainable=False) for g in grads]  # the compiled steps' gradients (see _compiled_apply)
    steps: dict[str, Callable[[], object]] = {}
    optimizers: dict[str, keras.optimizers.Optimizer] = {}
    compile_seconds: dict[str, float] = {}
    variables: dict[str, list[keras.Variable]] = {}
    for name, (build, _, _) in PEERS.items():
        if name in leave_out:
            continue
        optimizer = build()
        own = [keras.Variable(v, name=f"w{i}") for i, v in enumerate(values)]
        optimizer.build(own)
        optimizers[name], variables[name] = optimizer, own

        def eager_step(optimizer: Any = optimizer, own: list[keras.Variable] = own) -> None:
            optimizer.apply(grads, own)

        if eager:
            step_past_eager_iterations(optimizer, eager_step)
            steps[f"{name} eager"] = eager_step
        if jit:
            compiled = _compiled_apply(optimizer, own, held)
            start = time.perf_counter()
            compiled()
            compile_seconds[name] = time.perf_counter() - start
            log(f"    compiled {name} in {compile_seconds[name]:.1f} s")
            steps[f"{name} jit"] = compiled
    timings = interleave(probed(steps, probe), warmup=warmup, rounds=rounds)
    measured = probe_result(timings, probe)
    rows = {}
    for step_name, step in steps.items():
        name, mode = step_name.rsplit(" ", 1)
        _, family, per_param = PEERS[name]
        rows[step_name] = {
            "family": family,
            "mode": mode,
            "timing": timings[step_name],
            "state_bytes": _state_bytes(optimizers[name], variables[name]),
            "step_extra_bytes": step_peak_bytes(step),
            "floor_bytes": per_param * sum(math.prod(s) for s in shapes)
            + (8 * sum(math.prod(s) for s in shapes if len(s) < 2) if family == "adafactor" else 0),
            "compile_s": compile_seconds.get(name) if mode == "jit" else None,
        }
    return {"tensors": len(shapes), "params": sum(math.prod(s) for s in shapes), "rows": rows, "probe": measured}


def _compiled_apply(
    optimizer: keras.optimizers.Optimizer, own: list[keras.Variable], held: list[tf.Variable]
) -> Callable[[], None]:
    """``optimizer.apply`` of the gradients in ``held`` to ``own``, as one XLA-compiled function of no arguments.

    The gradients are read inside the function, as a compiled training step (``model.fit``'s) has them: handing
    ~200 tensors to a ``tf.function`` as arguments costs about 2.5 ms a call in TensorFlow's Python argument handling
    (measured 2026-12-06, 10M in ~200 tensors, every peer alike), which is no part of the optimizer's step."""

    @tf.function(jit_compile=True)
    def apply() -> None:
        optimizer.apply([g.read_value() for g in held], own)

    return apply


def _schedule_args(spec: hf_optim_spec.Spec) -> dict[str, Any] | None:
    if not spec.cases:
        return None
    params = dict(spec.cases[0].get("params", {}))
    if any(isinstance(v, Mapping) for v in params.values()):
        return None
    return params


def run_schedules(calls: int) -> dict[str, tuple[float, float, float]]:
    """Seconds per call of every Keras schedule in the registry (first spec case): eager, compiled with XLA, and
    what the schedule adds to a compiled function.

    The compiled figure is a whole ``tf.function`` call returning the lr, nearly all of it the call itself (as
    long for ``constant``); what the schedule adds to a compiled training step, where it is fused with the update,
    is that call less one of a compiled function that reads the step variable and returns it as a float (the
    median difference over blocks of calls of the two, alternating).
    """
    import inspect

    out: dict[str, tuple[float, float, float]] = {}
    step = keras.Variable(5, dtype="int64", name="iterations")
    empty = _compiled_schedule(lambda s: keras.ops.cast(s, "float32"), step)
    empty()
    for spec in hf_optim_spec.registry().values():
        if spec.kind != "schedule" or spec.stateful:
            continue
        factory = getattr(hf_optim_tf, (spec.raw.get("api") or {}).get("tf", ""), None)
        args = _schedule_args(spec)
        if factory is None or args is None:
            continue
        try:
            if "learning_rate" in inspect.signature(factory).parameters and "learning_rate" not in args:
                args["learning_rate"] = 0.1
            schedule = factory(**args)
        except (TypeError, ValueError):
            continue
        if isinstance(schedule, tuple):
            schedule = next(
                (s for s in schedule if isinstance(s, keras.optimizers.schedules.LearningRateSchedule)), None
            )
        if not callable(schedule) or isinstance(schedule, keras.optimizers.Optimizer):
            continue
        try:
            schedule(step)
        except Exception:
            continue
        start = time.perf_counter()
        for _ in range(calls):
            schedule(step)
        eager = (time.perf_counter() - start) / calls
        compiled = _compiled_schedule(schedule, step)
        try:
            compiled()
        except Exception:  # a schedule XLA cannot compile is reported eager only
            out[spec.id] = (eager, math.nan, math.nan)
            continue
        blocks = [(_seconds_per_call(compiled, calls // 10), _seconds_per_call(empty, calls // 10)) for _ in range(10)]
        added = statistics.median(full - bare for full, bare in blocks)
        out[spec.id] = (eager, statistics.median(full for full, _ in blocks), added)
    return out


def _seconds_per_call(function: Callable[[], object], calls: int) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        function()
    return (time.perf_counter() - start) / calls


def _compiled_schedule(schedule: Any, step: keras.Variable) -> Any:
    """``schedule(step)`` as one XLA-compiled function."""

    @tf.function(jit_compile=True)
    def call() -> Any:
        return schedule(step)

    return call
