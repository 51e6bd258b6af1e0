"""Keras on torch: the eager optimizer step (what ``model.fit`` runs there by default), as JSON for run.py.

Run as its own process with KERAS_BACKEND=torch (Keras reads it once per process; run.py's runs Keras on
TensorFlow), in the bench's environment (torch, keras, hf-optim-tf; run.py starts it with its own python):

    KERAS_BACKEND=torch python benchmarks/_keras_torch_bench.py --out rows.json [--warmup 3] [--rounds 20]

Keras' torch trainer compiles a train step only with ``jit_compile=True``; by default every step calls the
optimizer eagerly, so that is the step timed here: ``optimizer.apply_gradients(zip(grads, variables))`` from Python
on keras.Variables, for the peers of ``_jax_bench`` (hf_optim_tf.AdamW, AdamWeightDecay, Adafactor and
keras.optimizers.AdamW, Adafactor), each on its own copy of the same parameters and gradients, interleaved one step
each per round in a random order (``_timing.interleave``), on three layouts: 10M parameters in ~200 tensors, in one
tensor (large tensors: Adafactor's pieces) and 200 tensors of 32 elements (the fixed cost per variable). Floors as run.py's:
at 10M over the bandwidth a probe measures in each round (``_torch_bench.bandwidth_probe``), on the small tensors over
``--bandwidth``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from _jax_bench import _keras_peers, floor_bytes, keras_eager
from _jax_bench import launch as launch_script
from _layouts import layout_shapes
from _timing import Probe, freeze_imports, interleave, probe_result, probed, step_peak_bytes

LAYOUTS = (("10M", "transformer", 10_000_000), ("10M", "one_tensor", 10_000_000), ("small", "small_vectors", 0))
REFERENCE = "keras.optimizers.AdamW eager"


def run(shapes: list[tuple[int, ...]], *, warmup: int, rounds: int, probe: Probe | None = None) -> dict[str, Any]:
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    values = [rng.standard_normal(s, dtype=np.float32) * 0.02 for s in shapes]
    grads = [torch.from_numpy(rng.standard_normal(s, dtype=np.float32) * 1e-3) for s in shapes]
    steps, rows = {}, {}
    for name, (build, family) in _keras_peers().items():
        step, state = keras_eager(build, values, grads)
        steps[f"{name} eager"] = step
        rows[f"{name} eager"] = {"family": family, "floor_bytes": floor_bytes(family, shapes), "state_bytes": state}
    timings = interleave(probed(steps, probe), warmup=warmup, rounds=rounds)
    measured = probe_result(timings, probe)
    for name, step in steps.items():
        rows[name]["times"] = timings[name].times
        rows[name]["step_extra_bytes"] = step_peak_bytes(step)
    return {
        "tensors": len(shapes),
        "params": sum(math.prod(s) for s in shapes),
        "rows": rows,
        "probe": None if measured is None else {"times": measured["timing"].times, "bytes": measured["bytes"]},
    }


def section(result: dict[str, Any], table: Callable[..., list[str]], title: Callable[[str, str], str]) -> list[str]:
    """The report's section: one table per layout (``table`` and ``title`` are run.py's)."""
    if "error" in result:
        return ["## Keras on torch (eager)", "", f"Not run: {result['error']}", ""]
    lines = []
    for size, layout, _ in LAYOUTS:
        part = result["layouts"][layout]
        counts = f"{part['tensors']} tensors, {part['params']:,} parameters"
        lines += [
            f"## Keras on torch, eager, {title(size, layout)} ({counts})",
            "",
            f"keras {result['keras']}, torch {result['torch']}: `benchmarks/_keras_torch_bench.py` in its own process "
            f"(KERAS_BACKEND=torch), {result['threads']} intra-op threads; {result['warmup']} warm-up then "
            f"{result['rounds']} timed rounds, every peer interleaved. *eager*: `optimizer.apply_gradients(zip(grads, "
            "variables))` from Python, the step `model.fit` runs on this backend unless `jit_compile=True`. The AdamW "
            "family updates its float32 variables with torch's multi-tensor ops (`hf_optim_tf/_multi_tensor.py`), as "
            "Keras' own torch AdamW does; so does Adafactor with its variables of at most 2^18 elements, and the "
            "larger ones one at a time, each on cache-sized pieces.",
            "",
            *table(part, REFERENCE, result["bandwidth"], keras=True),
            "",
        ]
    return lines


def launch(quick: bool, threads: int, bandwidth: float, log: Callable[[str], None]) -> dict[str, Any]:
    """This script under run.py's python with KERAS_BACKEND=torch: 10 warm-up and 40 timed rounds (3 and 10
    ``quick``); its JSON, or ``{"error": why}``."""
    warmup, rounds = (3, 10) if quick else (10, 40)
    return launch_script(
        Path(sys.executable), warmup=warmup, rounds=rounds, threads=threads, bandwidth=bandwidth, log=log,
        script=Path(__file__), backend="torch",
    )  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write the JSON")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2, help="torch's intra-op threads")
    parser.add_argument("--bandwidth", type=float, required=True, help="bytes/s for the floors")
    args = parser.parse_args(argv)
    if os.environ.get("KERAS_BACKEND") != "torch":
        parser.error("run with KERAS_BACKEND=torch")
    import keras
    import torch
    from _torch_bench import bandwidth_probe

    torch.set_num_threads(args.threads)
    freeze_imports()
    probe = bandwidth_probe()
    layouts = {}
    for size, layout, total in LAYOUTS:
        print(f"[{time.strftime('%H:%M:%S')}] keras on torch: {size} {layout}", flush=True)
        # no probe among the small tensors: its 256 MiB would leave their steps cold caches, which they do not have
        shapes, kept = layout_shapes(layout, total), probe if size != "small" else None
        layouts[layout] = run(shapes, warmup=args.warmup, rounds=args.rounds, probe=kept)
    result = {
        "layouts": layouts,
        "keras": keras.__version__,
        "torch": torch.__version__,
        "threads": args.threads,
        "warmup": args.warmup,
        "rounds": args.rounds,
        "bandwidth": args.bandwidth,
    }
    args.out.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
