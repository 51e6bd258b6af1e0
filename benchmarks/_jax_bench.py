"""Keras on JAX beside optax: one optimizer step of 10M float32 parameters in ~200 tensors, as JSON for run.py.

Run as its own process with KERAS_BACKEND=jax (Keras reads it once per process; run.py's process runs Keras on
TensorFlow), in an environment with jax, optax and hf-optim-tf but neither TensorFlow nor torch (`nox -s bench`
makes one in .nox/bench_jax and run.py starts this script there):

    KERAS_BACKEND=jax python benchmarks/_jax_bench.py --out rows.json [--warmup 3] [--rounds 20] [--bandwidth B/s]

The peers, each on its own copy of the same parameters (layout "transformer" of _layouts.py) and gradients:

- `<optimizer> eager`: `optimizer.apply_gradients(zip(grads, variables))` from plain Python on keras.Variables, for
  hf_optim_tf.AdamW, AdamWeightDecay, Adafactor and keras.optimizers.AdamW, Adafactor;
- `<optimizer> jit`: the same optimizers through `jax.jit(optimizer.stateless_apply)`, the way Keras' JAX trainer
  runs them: the values of the optimizer's variables, the gradients and the parameters' values in, new values out,
  and those outputs are the next step's inputs (no assign; their buffers are donated, as the trainer donates its
  state);
- `optax.adamw jit`, `optax.adafactor jit`: `jax.jit` of (params, opt_state, grads) -> (new params, new state),
  optax's update plus `optax.apply_updates`, the same buffers donated. optax.adafactor has its own numerics
  (factored second moments with its defaults, no relative-step learning rate): a peer in cost, not in results.

Every step blocks on its outputs (`jax.block_until_ready`) before the clock stops. The peers are interleaved one
step each per round, in a random order (`_timing.interleave`, as for torch and Keras on TensorFlow). The JSON
holds each peer's step times, its bandwidth floor in bytes (as run.py's floors: AdamW family 28 B/param, Adafactor
12 B/param plus 8 B/param for unfactored tensors), its state bytes, its step's extra memory and, for the jitted
peers, the first call's seconds (trace, compile and one step). The bandwidth the floors are divided by comes from
``--bandwidth`` (run.py passes the one it measured with torch) or else from NumPy copies measured here. XLA's CPU
client has no intra-op thread option: the process pins itself to ``--threads`` CPUs (2, as torch and TensorFlow in
run.py) before JAX starts.

run.py imports this module only for ``launch``, which starts it as a script (no JAX in run.py's process).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _layouts import layout_shapes
from _timing import Timing, freeze_imports, interleave, step_past_eager_iterations, step_peak_bytes

SIZE = 10_000_000
LAYOUT = "transformer"
LR = 1e-3
WEIGHT_DECAY = 0.01
PER_PARAM = {"adamw": 28, "adafactor": 12}  # floor bytes per float32 parameter and step (Adafactor: + unfactored)


def _keras_peers() -> dict[str, tuple[Callable[[], Any], str]]:
    """name -> (builder, floor family) of the Keras optimizers, timed eager and jitted."""
    import hf_optim_tf
    import keras

    return {
        "hf_optim_tf.AdamW": (lambda: hf_optim_tf.AdamW(learning_rate=LR, weight_decay=WEIGHT_DECAY), "adamw"),
        "hf_optim_tf.AdamWeightDecay": (
            lambda: hf_optim_tf.AdamWeightDecay(learning_rate=LR, weight_decay_rate=WEIGHT_DECAY),
            "adamw",
        ),
        "hf_optim_tf.Adafactor": (hf_optim_tf.Adafactor, "adafactor"),
        "keras.optimizers.AdamW": (
            lambda: keras.optimizers.AdamW(learning_rate=LR, weight_decay=WEIGHT_DECAY),
            "adamw",
        ),
        "keras.optimizers.Adafactor": (keras.optimizers.Adafactor, "adafactor"),
    }


def _optax_peers() -> dict[str, tuple[Callable[[], Any], str]]:
    """name -> (builder, floor family) of the optax transformations, timed jitted."""
    import optax

    return {
        "optax.adamw": (lambda: optax.adamw(LR, weight_decay=WEIGHT_DECAY), "adamw"),
        "optax.adafactor": (optax.adafactor, "adafactor"),
    }


def floor_bytes(family: str, shapes: list[tuple[int, ...]]) -> int:
    """Bytes a step must read and write (benchmarks/_torch_bench.py's ``_floor_bytes`` for float32)."""
    total = sum(math.prod(s) for s in shapes)
    unfactored = sum(math.prod(s) for s in shapes if len(s) < 2)
    return PER_PARAM[family] * total + (8 * unfactored if family == "adafactor" else 0)


def numpy_bandwidth(nbytes: int, repeats: int = 7) -> float:
    """Bytes read + written per second by ``np.copyto`` of ``nbytes`` (median of ``repeats`` copies)."""
    import numpy as np

    src = np.random.default_rng(0).random(nbytes // 4, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - start)
    return 2 * nbytes / statistics.median(times)


class Carried:
    """A jitted pure step whose outputs are its next inputs; each call runs one step and waits for it."""

    def __init__(self, step: Callable[[Any], Any], carry: Any) -> None:
        self.step, self.carry = step, carry

    def __call__(self) -> None:
        import jax

        self.carry = jax.block_until_ready(self.step(self.carry))


def _nbytes(arrays: Any) -> int:
    """Bytes of the arrays (not scalars) among the leaves of a pytree."""
    import jax

    return sum(a.size * a.dtype.itemsize for a in jax.tree_util.tree_leaves(arrays) if a.ndim > 0)


def _fresh(values: list[Any]) -> list[Any]:
    """Device copies of ``values`` that a jitted step may donate."""
    import jax.numpy as jnp

    return [jnp.array(v, copy=True) for v in values]


def keras_eager(
    build: Callable[[], Any], values: list[Any], grads: list[Any], *, wait: Callable[[list[Any]], object] | None = None
) -> tuple[Callable[[], None], int]:
    """(one eager ``apply_gradients`` on the optimizer's own keras.Variables, its state bytes: its non-scalar
    variables'). ``wait`` (on JAX ``jax.block_until_ready``) gets the new values of the variables and of the state
    after each step. ``_keras_torch_bench`` times the same step on the torch backend."""
    import keras
    import numpy as np

    optimizer = build()
    variables = [keras.Variable(v, name=f"w{i}") for i, v in enumerate(values)]
    optimizer.build(variables)

    def step() -> None:
        optimizer.apply_gradients(zip(grads, variables))
        if wait is not None:
            wait([v.value for v in variables] + [v.value for v in optimizer.variables])

    step_past_eager_iterations(optimizer, step)
    state = sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in optimizer.variables if len(v.shape))
    return step, state


def keras_jit(build: Callable[[], Any], values: list[Any], grads: list[Any]) -> tuple[Carried, int]:
    """(``jax.jit(optimizer.stateless_apply)`` carrying (parameters, optimizer variables), its state bytes).

    The jitted function returns the new values in the order it takes the old ones, as Keras' JAX trainer does (its
    state tuple in, the same tuple out, donated): JAX hands each donated buffer to the first output of its shape, so
    outputs in another order (``stateless_apply``'s own: parameters first) get a moment's buffer for a parameter and
    XLA copies every donated array twice (measured: hf AdamW 44 against 12 ms a step, Keras' AdamW 35 against 11).
    """
    import jax
    import keras

    optimizer = build()
    optimizer.build([keras.Variable(v, name=f"w{i}") for i, v in enumerate(values)])

    def apply(optimizer_variables: list[Any], grads: list[Any], trainable: list[Any]) -> tuple[list[Any], list[Any]]:
        new_trainable, new_optimizer_variables = optimizer.stateless_apply(optimizer_variables, grads, trainable)
        return new_optimizer_variables, new_trainable

    jitted = jax.jit(apply, donate_argnums=(0, 2))

    def step(carry: tuple[list[Any], list[Any]]) -> tuple[list[Any], list[Any]]:
        trainable, optimizer_variables = carry
        new_optimizer_variables, new_trainable = jitted(optimizer_variables, grads, trainable)
        return new_trainable, new_optimizer_variables

    state = _fresh([v.value for v in optimizer.variables])
    return Carried(step, (_fresh(values), state)), _nbytes(state)


def optax_jit(build: Callable[[], Any], values: list[Any], grads: list[Any]) -> tuple[Carried, int]:
    """(``jax.jit`` of optax's update + apply_updates carrying (params, opt_state), its state bytes)."""
    import jax
    import optax

    transformation = build()

    def update(params: list[Any], opt_state: Any, grads: list[Any]) -> tuple[list[Any], Any]:
        updates, opt_state = transformation.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    apply = jax.jit(update, donate_argnums=(0, 1))
    params = _fresh(values)
    opt_state = transformation.init(params)
    return Carried(lambda carry: apply(*carry, grads), (params, opt_state)), _nbytes(opt_state)


def run(shapes: list[tuple[int, ...]], *, warmup: int, rounds: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Every peer on its own copy of the parameters, interleaved; then each one's step memory."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    rng = np.random.default_rng(0)
    values = [rng.standard_normal(s, dtype=np.float32) * 0.02 for s in shapes]
    grads = [jnp.asarray(rng.standard_normal(s, dtype=np.float32) * 1e-3) for s in shapes]
    steps: dict[str, Callable[[], None]] = {}
    rows: dict[str, dict[str, Any]] = {}

    def add(name: str, mode: str, family: str, step: Callable[[], None], state: int) -> None:
        compile_s = None
        if mode == "jit":  # the first call traces and compiles
            start = time.perf_counter()
            step()
            compile_s = time.perf_counter() - start
            log(f"    compiled {name} in {compile_s:.1f} s")
        steps[f"{name} {mode}"] = step
        rows[f"{name} {mode}"] = {
            "family": family,
            "mode": mode,
            "floor_bytes": floor_bytes(family, shapes),
            "state_bytes": state,
            "compile_s": compile_s,
        }

    for name, (build, family) in _keras_peers().items():
        add(name, "eager", family, *keras_eager(build, values, grads, wait=jax.block_until_ready))
        add(name, "jit", family, *keras_jit(build, values, grads))
    for name, (build, family) in _optax_peers().items():
        add(name, "jit", family, *optax_jit(build, values, grads))
    log(f"    {len(steps)} peers: {warmup} warm-up + {rounds} timed rounds")
    timings = interleave(steps, warmup=warmup, rounds=rounds)
    for name, step in steps.items():
        rows[name]["times"] = timings[name].times
        rows[name]["step_extra_bytes"] = step_peak_bytes(step)
    return {"tensors": len(shapes), "params": sum(math.prod(s) for s in shapes), "rows": rows}


def launch(
    python: Path | None,
    *,
    warmup: int,
    rounds: int,
    threads: int,
    bandwidth: float,
    log: Callable[[str], None],
    script: Path = Path(__file__),
    backend: str = "jax",
) -> dict[str, Any]:
    """``script`` (this one, or another bench of Keras on another backend) under ``python`` with
    KERAS_BACKEND=``backend``: its JSON with each row's times as a ``Timing``, or ``{"error": why}`` where it could
    not run (the tail of its stderr goes to ``log``)."""
    if python is None:
        return {"error": "no `--jax-python` given (`nox -s bench` passes the python of .nox/bench_jax)"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{backend}.json"
        options = {"--out": out, "--warmup": warmup, "--rounds": rounds, "--threads": threads, "--bandwidth": bandwidth}
        command = [str(python), str(script.resolve()), *(str(x) for item in options.items() for x in item)]
        env = {**os.environ, "KERAS_BACKEND": backend}
        try:
            done = subprocess.run(command, env=env, stderr=subprocess.PIPE, text=True, check=False)
        except OSError as error:
            return {"error": f"could not start {python}: {error}"}
        if done.returncode != 0 or not out.exists():
            tail = done.stderr.strip().splitlines()[-20:] or ["(nothing on stderr)"]
            log(f"{script.name} failed (exit {done.returncode}):\n" + "\n".join(tail))
            return {"error": f"`benchmarks/{script.name}` exited with {done.returncode}: `{tail[-1].strip()}`"}
        result = json.loads(out.read_text())
    for part in result.get("layouts", {"": result}).values():
        for row in part["rows"].values():
            row["timing"] = Timing(row.pop("times"))
        probe = part.get("probe")
        if probe is not None:
            probe["timing"] = Timing(probe.pop("times"))
    return result


def _versions() -> dict[str, str]:
    import jax
    import jaxlib
    import keras
    import optax

    return {
        "python": platform.python_version(),
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "optax": optax.__version__,
        "keras": keras.__version__,
        "devices": ", ".join(str(d) for d in jax.devices()),
    }


def _pin(threads: int) -> int:
    """Keep this process on ``threads`` CPUs (XLA sizes its CPU thread pool by the CPUs it may run on)."""
    if not hasattr(os, "sched_setaffinity"):
        return os.cpu_count() or 1
    cpus = sorted(os.sched_getaffinity(0))[:threads]
    os.sched_setaffinity(0, cpus)
    return len(cpus)


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] jax: {message}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2, help="CPUs this process runs on")
    parser.add_argument("--bandwidth", type=float, help="bytes/s for the floors (default: NumPy copies, measured)")
    args = parser.parse_args(argv)
    if os.environ.get("KERAS_BACKEND") != "jax":
        parser.error("run with KERAS_BACKEND=jax")
    threads = _pin(args.threads)
    # JAX without x64 gives 32 bits where Keras or hf_optim_tf ask for 64 (step counts, float64 scalars) and warns
    warnings.filterwarnings("ignore", "Explicitly requested dtype", UserWarning)
    versions = _versions()
    freeze_imports()
    _log(f"{versions['devices']}, {threads} CPUs; jax {versions['jax']}, optax {versions['optax']}")
    shapes = layout_shapes(LAYOUT, SIZE)
    if args.bandwidth is None:
        bandwidth, source = numpy_bandwidth(SIZE * 4), "NumPy copies in the JAX process"
    else:
        bandwidth, source = args.bandwidth, "given"
    result = run(shapes, warmup=args.warmup, rounds=args.rounds, log=_log)
    result.update(
        versions=versions,
        threads=threads,
        warmup=args.warmup,
        rounds=args.rounds,
        bandwidth=bandwidth,
        bandwidth_source=source,
    )
    args.out.write_text(json.dumps(result, indent=1))
    _log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
