"""`nox -s bench`: step time and memory of hf_optim's optimizers against their peers -> benchmarks/RESULTS.md.

Usage: python benchmarks/run.py [--quick | --full] [--only torch|keras|jax] [--no-jit] [--jax-python PATH] [--out PATH]

Every peer of one framework runs on the same parameters in the same process, interleaved (one step of each peer
per round, in a random order), median of the timed rounds after warm-up rounds. Ratios are medians of the
per-round ratios, so a slow spell of the machine hits both sides of a ratio. Intra-op threads: 2 (torch and TF).

The default run (12 to 15 minutes on 2 cores) covers the layouts of CONFIGS: 10M parameters in 1 tensor and in ~200
transformer tensors (torch: also in bfloat16), 200 tensors of 32 and of 32x32 elements (the fixed host cost per tensor) and
200 param groups of one 32x32 tensor (per group), 80M in one 1-D tensor
and (torch) in 240 tensors of the odd width 577, and 100M in ~200 tensors. torch at 10M: 3 warm-up + 20 timed rounds;
the small layouts 10 + 150; the rest 2 + 12; a peer whose timed steps add up to 5 s sits out the rounds left after 6
(``_timing.BUDGET_S``: the slow, informative peers); the Keras peers run eagerly at 10M only (at 80M/100M under
jit_compile only); torch's two slow AdamW peers and, at 100M in ~200 tensors, the Keras Adafactor peers run at 10M
only (``_plan.left_out``). ``--full`` runs 3 + 20 rounds everywhere, every peer everywhere, and adds the eager Keras peers
at 80M/100M; ``--quick`` is a smoke run of the 10M and small layouts with few rounds. Then, with ``--jax-python`` (`nox -s bench` passes the python of
.nox/bench_jax), Keras on JAX beside optax at 10M in ~200 tensors, 3 + 20 rounds (about a minute and a half):
benchmarks/_jax_bench.py in its own process with KERAS_BACKEND=jax; Keras on torch, eager (``model.fit``'s step there),
10M in ~200 tensors and 200 tensors of 32: benchmarks/_keras_torch_bench.py, KERAS_BACKEND=torch, its own process. If
one fails, its section says why. Targets of issues 6 and 17 come first in the report, met or missed by how much.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))

import _keras_torch_bench  # its report section: Keras on torch runs in a process of its own
from _plan import keras_eager_peers, left_out, plan_text, planned_rounds, selected
from _targets import FUSED, JAX_REFERENCE, floor_ratio, layout_title, peer_ratio, peer_target, round_two_targets
from _timing import freeze_imports

THREADS = 2
HERE = Path(__file__).parent
SIZES = {"10M": 10_000_000, "100M": 100_000_000, "80M": 80_000_000, "small": 0}
BOTH = ("torch", "keras")
# (size, layout, frameworks) in the order they run; --quick keeps the 10M and small ones
CONFIGS = (
    ("10M", "one_tensor", BOTH),
    ("10M", "transformer", BOTH),
    ("10M", "transformer_bf16", ("torch",)),
    ("small", "small_vectors", ("torch",)),
    ("small", "small_matrices", ("torch",)),
    ("small", "small_groups", ("torch",)),
    ("80M", "one_tensor", BOTH),
    ("80M", "odd_transformer", ("torch",)),
    ("100M", "transformer", BOTH),
)


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _load() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def _native_status() -> str:
    from hf_optim_torch import _native

    return "`" + _native.status().replace(str(Path.home()), "~") + "`"


def _machine() -> list[str]:
    lines = [f"- Python {platform.python_version()} on {platform.platform()}"]
    try:
        info = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        keep = ("Model name", "CPU(s)", "Thread(s) per core", "L2 cache", "L3 cache", "Hypervisor vendor")
        fields = [line.split(":", 1) for line in info.splitlines() if ":" in line]
        lines.append("- CPU: " + "; ".join(f"{k.strip()}: {v.strip()}" for k, v in fields if k.strip() in keep))
    except (OSError, subprocess.CalledProcessError):
        lines.append(f"- CPU: {platform.processor() or 'unknown'} ({os.cpu_count()} logical CPUs)")
    try:
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
        lines.append(f"- Memory: {mem_kb / 2**20:.1f} GiB")
    except (OSError, ValueError, IndexError):
        pass
    return lines


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}" if seconds >= 0.01 else f"{seconds * 1e3:.2f}"


def _mb(nbytes: int | None) -> str:
    return "n/a" if nbytes is None else f"{nbytes / 2**20:.0f}"


def _table(result: dict[str, Any], reference: str, bandwidth: float, *, keras: bool = False) -> list[str]:
    rows = result["rows"]
    head = f"| peer | × {reference} (IQR) | median ms | spread (IQR/median) | timed rounds | × bandwidth floor | floor ms | state MiB | step extra MiB |"
    if keras:
        head += " XLA compile s |"
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for name, row in rows.items():
        ratio, spread = peer_ratio(rows, name, reference)
        timing = row["timing"]
        over_floor, _, floor = floor_ratio(result, name, bandwidth)
        line = (
            f"| {name} | {ratio:.2f} (±{spread * ratio / 2:.2f}) | {_ms(timing.median)} | {timing.spread:.0%} | {len(timing.times)} | "
            f"{over_floor:.1f} | {_ms(floor)} | {_mb(row['state_bytes'])} | {_mb(row['step_extra_bytes'])} |"
        )
        if keras:
            compile_s = row.get("compile_s")
            line += f" {compile_s:.1f} |" if compile_s is not None else " |"
        out.append(line)
    return out


def _gb(bytes_per_second: float) -> str:
    return f"{bytes_per_second / 1e9:.1f}"


def _probe_text(probes: dict[str, list[float]]) -> str:
    """Each table's probe: the median and range of its rounds' bandwidths (GB/s)."""
    parts = [f"{title} {_gb(statistics.median(v))} ({_gb(min(v))} to {_gb(max(v))})" for title, v in probes.items()]
    return "; ".join(parts) or "none"


def _probe_bandwidths(
    torch_results: dict[tuple[str, str], Any],
    keras_results: dict[tuple[str, str], Any],
    keras_torch: dict[str, Any] | None,
) -> dict[str, list[float]]:
    """The bandwidth the probe measured in each round (bytes/s) of every table that timed it, by table."""
    tables = {f"torch, {layout_title(*key)}": result for key, result in torch_results.items()}
    tables |= {f"Keras, {layout_title(*key)}": result for key, result in keras_results.items()}
    if keras_torch is not None and "layouts" in keras_torch:
        tables |= {f"Keras on torch, {layout_title(size, layout)}": keras_torch["layouts"][layout]
                   for size, layout, _ in _keras_torch_bench.LAYOUTS}  # fmt: skip
    return {
        title: [result["probe"]["bytes"] / t for t in result["probe"]["timing"].times]
        for title, result in tables.items()
        if result.get("probe") is not None
    }


def _jax_section(result: dict[str, Any]) -> list[str]:
    """The report's section of Keras on JAX beside optax."""
    title = f"## Keras on JAX, {layout_title('10M', 'transformer')}"
    if "error" in result:
        return [title, "", f"Not run: {result['error']}", ""]
    v = result["versions"]
    floors = (
        "the median bandwidth of the probes' rounds in the main process (above), passed on the command line"
        if result["bandwidth_source"] == "given"
        else f"{result['bandwidth'] / 1e9:.1f} GB/s ({result['bandwidth_source']})"
    )
    return [
        f"{title} ({result['tensors']} tensors, {result['params']:,} parameters)",
        "",
        f"jax {v['jax']} (jaxlib {v['jaxlib']}, {v['devices']}), optax {v['optax']}, keras {v['keras']}: "
        "`benchmarks/_jax_bench.py` in its own process and environment (KERAS_BACKEND=jax, no TensorFlow), pinned to "
        f"{result['threads']} CPUs; {result['warmup']} warm-up then {result['rounds']} timed rounds, every peer "
        "interleaved. *eager*: `optimizer.apply_gradients(zip(grads, variables))` from Python. *jit*: "
        "`jax.jit(optimizer.stateless_apply)` as Keras' JAX trainer runs it (values in, new values out in the same "
        "order and fed back, buffers donated); optax: `jax.jit` of update + `optax.apply_updates`, buffers donated. Every step waits for "
        f"its outputs (`jax.block_until_ready`). Floors: {floors}. `optax.adafactor()` has other numerics than "
        "transformers' Adafactor (factored second moments with optax's defaults, no relative-step learning rate): a "
        "peer in cost, not a drop-in one. *XLA compile s*: the first call (trace, compile and one step).",
        "",
        *_table(result, JAX_REFERENCE, result["bandwidth"], keras=True),
        "",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="10M parameters only, few rounds (a smoke run)")
    mode.add_argument("--full", action="store_true", help="20 timed rounds everywhere and eager Keras at 100M too")
    parser.add_argument("--only", choices=("torch", "keras", "jax"), help="one framework only (jax: Keras on JAX)")
    parser.add_argument("--no-jit", action="store_true", help="skip Keras jit_compile (XLA) runs")
    parser.add_argument("--jax-python", type=Path, help="python of an environment with jax, optax and hf-optim-tf")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS.md", help="where to write the report")
    args = parser.parse_args(argv)
    if args.only == "jax" and args.jax_python is None:
        parser.error("--only jax needs --jax-python")

    import torch

    torch.set_num_threads(THREADS)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(THREADS)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import _jax_bench  # the launcher only: JAX runs in a process of its own
    import _keras_bench
    import _torch_bench
    import keras

    freeze_imports()
    configs = [
        c for c in CONFIGS if (not args.quick or c[0] in ("10M", "small")) and any(selected(args, f) for f in c[2])
    ]
    sizes = list(dict.fromkeys(size for size, _, _ in configs if size != "small")) or ["10M"]
    started, load_start = time.time(), _load()
    _log(f"load average {load_start}; {len(configs)} configurations; {plan_text(args)}")

    bandwidths = _torch_bench.copy_bandwidth(max(SIZES[size] for size in sizes) * 4)
    _log("bandwidth " + ", ".join(f"{k} {v / 1e9:.1f} GB/s" for k, v in bandwidths.items()))
    probe = _torch_bench.bandwidth_probe()  # timed in the rounds of every table but the small tensors'

    torch_results: dict[tuple[str, str], Any] = {}
    keras_results: dict[tuple[str, str], Any] = {}
    for size, layout, frameworks in configs:
        if selected(args, "torch") and "torch" in frameworks:
            _log(f"torch {size} {layout}")
            warmup, rounds = planned_rounds(args, "torch", size)
            torch_results[size, layout] = _torch_bench.run_optimizers(
                SIZES[size],
                layout,
                warmup=warmup,
                rounds=rounds,
                exact=size in ("10M", "small"),
                leave_out=left_out(args, "torch", size, layout),
                probe=probe if size != "small" else None,
            )
        if selected(args, "keras") and "keras" in frameworks:
            _log(f"keras {size} {layout}")
            warmup, rounds = planned_rounds(args, "keras", size)
            keras_results[size, layout] = _keras_bench.run_optimizers(
                SIZES[size],
                layout,
                warmup=warmup,
                rounds=rounds,
                jit=not args.no_jit,
                eager=keras_eager_peers(args, size),
                log=_log,
                leave_out=left_out(args, "keras", size, layout),
                probe=probe if size != "small" else None,
            )
            keras.backend.clear_session()
    del probe
    # the floors without a probe (the small layouts, JAX's informative rows): the median bandwidth of the probes' rounds
    probed = [b for per_round in _probe_bandwidths(torch_results, keras_results, None).values() for b in per_round]
    bandwidth = statistics.median(probed) if probed else max(bandwidths.values())
    jax_result = None
    if selected(args, "jax"):
        _log("keras on jax beside optax, in its own process")
        warmup, rounds = (1, 5) if args.quick else (3, 20)
        jax_result = _jax_bench.launch(
            args.jax_python, warmup=warmup, rounds=rounds, threads=THREADS, bandwidth=bandwidth, log=_log
        )
    keras_torch = None
    if selected(args, "keras"):
        _log("keras on torch, eager, in its own process")
        keras_torch = _keras_torch_bench.launch(args.quick, THREADS, bandwidth, _log)
    _log("schedules")
    calls = 200 if args.quick else 1000
    torch_sched = _torch_bench.run_schedules(calls) if selected(args, "torch") else {}
    try:
        keras_sched = _keras_bench.run_schedules(calls // 4) if selected(args, "keras") else {}
    except Exception as error:  # keep the optimizer results of a long run
        _log(f"Keras schedules failed: {error!r}")
        keras_sched = {}
    load_end = _load()
    elapsed = time.time() - started
    _log(f"done in {elapsed:.0f} s; load average {load_end}")

    report = _report(
        args,
        sizes,
        bandwidths,
        bandwidth,
        torch_results,
        keras_results,
        jax_result,
        keras_torch,
        torch_sched,
        keras_sched,
        load_start,
        load_end,
        elapsed,
        torch.__version__,
        tf.__version__,
        keras.__version__,
    )
    args.out.write_text(report)
    _log(f"wrote {args.out}")
    return 0


def _report(
    args: argparse.Namespace,
    sizes: list[str],
    bandwidths: dict[str, float],
    bandwidth: float,
    torch_results: dict[tuple[str, str], Any],
    keras_results: dict[tuple[str, str], Any],
    jax_result: dict[str, Any] | None,
    keras_torch: dict[str, Any] | None,
    torch_sched: dict[str, float],
    keras_sched: dict[str, tuple[float, float, float]],
    load_start: str,
    load_end: str,
    elapsed: float,
    torch_version: str,
    tf_version: str,
    keras_version: str,
) -> str:
    from _torch_bench import PROBE_BYTES  # (imported by main, after the thread settings)

    big = sizes[-1]
    probes = _probe_bandwidths(torch_results, keras_results, keras_torch)
    lines = [
        "# Benchmarks",
        "",
        "Generated by `nox -s bench` (`python benchmarks/run.py"
        + (" --quick" if args.quick else "")
        + (" --full" if args.full else "")
        + (f" --only {args.only}" if args.only else "")
        + ")`; do not edit by hand.",
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {elapsed:.0f} s.",
        "",
        "## Machine",
        "",
        *_machine(),
        f"- torch {torch_version}, tensorflow {tf_version}, keras {keras_version}; {THREADS} intra-op threads each",
        f"- Load average (1, 5, 15 min) at start: {load_start}; at end: {load_end}. On a shared machine, other "
        "processes' load slows both sides of a ratio (peers are interleaved) but widens the spread.",
        f"- Memory bandwidth at the start, bytes read + written per second by large streaming torch ops on "
        f"{SIZES[big] * 4 / 2**20:.0f} MiB tensors: "
        + ", ".join(f"{k} {v / 1e9:.1f} GB/s" for k, v in bandwidths.items()),
        f"- Memory bandwidth in the rounds of each table (the floors' bandwidth): a probe, `x.mul_(1.0)` in place on "
        f"{PROBE_BYTES / 2**20:.0f} MiB of float32 (the op of the highest of those), timed once a round as "
        "one more peer; median and range of its rounds, GB/s: "
        + _probe_text(probes)
        + f". Tables without a probe (the 200 small tensors, whose steps it would leave cold caches; Keras on JAX, "
        f"another process and environment) take the median of the probes' rounds: **{_gb(bandwidth)} GB/s**.",
        f"- Adafactor's native kernel (`hf_optim_torch._native.status()`): {_native_status()}",
        "- CUDA (1B parameters, device bandwidth, the GPU paths, conformance on the GPU): RESULTS_CUDA.md, "
        "written by `benchmarks/cuda.py` on a GPU machine.",
        "",
        "fp32 parameters and gradients (bfloat16 where a layout says so: the AdamW family's moments then are bfloat16 "
        "too, Adafactor's statistics float32). Peers of one framework share the machine in the same process, interleaved "
        f"one step each per round, in a random order; {plan_text(args)}. *Ratios* are medians "
        "of per-round ratios (±: half the interquartile range; *95% CI*: a confidence interval of that median from "
        "the order statistics of the ratios, which assumes nothing about their distribution; a target is met where "
        "the whole interval is within its bound, missed where all of it is over, and not decided where it spans the "
        "bound; the interval is that of one run: between runs and hours the machine moves the ratios more, see "
        "benchmarks/NOTES.md); *spread* is a peer's own interquartile range over "
        "its median; *timed rounds*: the rounds a peer took part in (a ratio pairs the rounds both took part in). "
        "*Bandwidth floor*: bytes the optimizer must read and write per step (AdamW family 28 B/param; "
        "Adafactor 12 B/param, plus 8 B/param of unfactored second moments) over the bandwidth; *× bandwidth floor*, "
        "and the floor targets: the median of each round's step time over the floor at the bandwidth the probe "
        "measured in that round (the machine's bandwidth moves between two levels about 2x apart during a run: "
        "benchmarks/NOTES.md); *floor ms*: at the probe's median bandwidth. "
        "*State*: optimizer state tensors. *Step extra*: peak resident memory during one step beyond what was "
        "resident before it (temporaries; 0 when they reuse freed heap pages). Keras *eager*: "
        "`optimizer.apply(grads, variables)` from Python (hf_optim_tf's timed with their iteration count set past the "
        "first 10 iterations, which run op by op, and past their XLA iteration, Adafactor's 500th: what a long eager "
        "run spends a step); "
        "Keras *jit*: the same call inside a `tf.function` with "
        "`jit_compile=True` that reads the gradients from variables, as a compiled training step holds them (not as "
        "~200 arguments, whose handling by `tf.function` costs ~2.5 ms a call that no training step pays).",
        "",
    ]
    # ---- targets first
    lines += ["## Targets (issue 6), CPU, 2 threads, " + big + " parameters in ~200 tensors", ""]
    lines += ["| target | measured | met |", "|---|---|---|"]
    tr = torch_results.get((big, "transformer"))
    if tr:
        rows = tr["rows"]
        text = f"AdamW (transformers numerics) <= 1.15x {FUSED}"
        lines.append(peer_target(text, rows, "hf_optim_torch.AdamW", FUSED, 1.15))
        speed, spread = peer_ratio(rows, "transformers-style Adafactor loop", "hf_optim_torch.Adafactor")
        state_ok = (
            rows["hf_optim_torch.Adafactor"]["state_bytes"] <= rows["transformers-style Adafactor loop"]["state_bytes"]
        )
        lines.append(
            f"| Adafactor >= 3x faster than transformers' loop, no more state | {speed:.2f}x faster (±{spread * speed / 2:.2f}); "
            f"state {_mb(rows['hf_optim_torch.Adafactor']['state_bytes'])} vs "
            f"{_mb(rows['transformers-style Adafactor loop']['state_bytes'])} MiB | {'yes' if speed >= 3 and state_ok else 'no'} |"
        )
    kr = keras_results.get((big, "transformer"))
    if kr and "keras.optimizers.AdamW jit" in kr["rows"]:
        rows = kr["rows"]
        for name in ("hf_optim_tf.AdamW", "hf_optim_tf.AdamWeightDecay"):
            text = f"Keras {name.split('.')[-1]} under jit_compile <= 1.1x keras.optimizers.AdamW under jit_compile"
            lines.append(peer_target(text, rows, f"{name} jit", "keras.optimizers.AdamW jit", 1.1))
    small_adamw = torch_results.get((sizes[0], "transformer"))
    if small_adamw and torch_sched:
        step = small_adamw["rows"]["hf_optim_torch.AdamW"]["timing"].median
        worst_id = max(torch_sched, key=torch_sched.__getitem__)
        share = torch_sched[worst_id] / step
        lines.append(
            f"| schedule overhead < 1% of a {sizes[0]} AdamW step (torch) | worst {worst_id}: {share:.2%} | "
            f"{'yes' if share < 0.01 else 'no'} |"
        )
    ksmall = keras_results.get((sizes[0], "transformer"))
    if ksmall and keras_sched and "hf_optim_tf.AdamW jit" in ksmall["rows"]:
        # both steps compute the schedule inside their compiled function (an eager step is traced: _traced_update)
        worst_id = max(keras_sched, key=lambda k: keras_sched[k][2] if keras_sched[k][2] == keras_sched[k][2] else 0.0)
        for mode in ("eager", "jit"):
            step = ksmall["rows"][f"hf_optim_tf.AdamW {mode}"]["timing"].median
            share = keras_sched[worst_id][2] / step
            lines.append(
                f"| schedule overhead < 1% of a {sizes[0]} AdamW step (Keras {mode}; the schedule compiled into the "
                f"step) | worst {worst_id}: {share:.2%} | {'yes' if share < 0.01 else 'no'} |"
            )
    lines.append("")
    lines += round_two_targets(torch_results, keras_results, bandwidth, jax_result, keras_torch)
    # ---- per configuration
    for (size, layout), result in torch_results.items():
        lines += [
            f"## torch, {layout_title(size, layout)} ({result['tensors']} tensors, {result['params']:,} parameters)",
            "",
            *_table(result, "torch.optim.AdamW(fused=True)", bandwidth),
            "",
        ]
    for (size, layout), result in keras_results.items():
        # the eager reference where the eager peers ran, else the compiled one (100M without --full)
        reference = next(
            name for name in ("keras.optimizers.AdamW eager", "keras.optimizers.AdamW jit") if name in result["rows"]
        )
        lines += [
            f"## Keras, {layout_title(size, layout)} ({result['tensors']} tensors, {result['params']:,} parameters)",
            "",
            *_table(result, reference, bandwidth, keras=True),
            "",
        ]
    if jax_result is not None:
        lines += _jax_section(jax_result)
    lines += _keras_torch_bench.section(keras_torch, _table, layout_title) if keras_torch is not None else []
    # ---- schedules
    if torch_sched or keras_sched:
        small = sizes[0]
        t_step = torch_results.get((small, "transformer"), {}).get("rows", {}).get("hf_optim_torch.AdamW")
        k_rows = keras_results.get((small, "transformer"), {}).get("rows", {})
        k_eager, k_jit = k_rows.get("hf_optim_tf.AdamW eager"), k_rows.get("hf_optim_tf.AdamW jit")
        lines += [
            f"## Schedules: overhead per step (share of a {small}-parameter, ~200-tensor AdamW step of the same framework)",
            "",
            "torch: one `scheduler.step()` (LambdaLR; `PolynomialDecay`/`WarmUp` are not LambdaLR schedules and are "
            "not timed here). Keras: one call of the schedule on the step variable, eager (what a call outside any "
            "step costs); a whole XLA-compiled `tf.function` returning it (nearly all of it the call itself); and what "
            "the schedule adds to such a function, that call less one returning the step variable as a float, "
            "alternating (what it adds to a step: an eager `apply_gradients` computes it inside its traced function, "
            "a compiled training step inside its own, fused with the update). The shares are of that last figure.",
            "",
            "| schedule | torch µs | torch share | Keras eager call µs | Keras XLA call µs | Keras XLA added µs | "
            "share of a Keras eager step | share of a Keras jit step |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for sid in sorted(set(torch_sched) | set(keras_sched)):
            t = torch_sched.get(sid)
            k = keras_sched.get(sid)
            cells = [
                f"{t * 1e6:.1f}" if t is not None else "",
                f"{t / t_step['timing'].median:.3%}" if t is not None and t_step else "",
                f"{k[0] * 1e6:.0f}" if k else "",
                f"{k[1] * 1e6:.0f}" if k and k[1] == k[1] else "",
                f"{k[2] * 1e6:.1f}" if k and k[2] == k[2] else "",
                f"{k[2] / k_eager['timing'].median:.2%}" if k and k_eager and k[2] == k[2] else "",
                f"{k[2] / k_jit['timing'].median:.2%}" if k and k_jit and k[2] == k[2] else "",
            ]
            lines.append(f"| {sid} | " + " | ".join(cells) + " |")
        lines.append("")
    notes = HERE / "NOTES.md"
    if notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
