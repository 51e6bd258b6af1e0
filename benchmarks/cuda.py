"""The CUDA part of the benchmark (issue 6, item 4) -> benchmarks/RESULTS_CUDA.md.

Usage: python benchmarks/cuda.py [--sizes 1B,100M] [--rounds 20] [--out PATH]

The torch peers of ``run.py`` on one GPU: parameters, gradients and state on the device, every timed step ended
by a device synchronisation (so a step's time is what a training loop waits for, Python overhead included), the
peers interleaved one step each per round, median of the timed rounds after 3 warm-up rounds. The device's
bandwidth is measured in the same run (large copies of random data); the floors and the "share of bandwidth"
column divide each optimizer's bytes per step by it. Needs torch with CUDA; not part of `nox -s bench`, which
runs on CPU.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

HERE = Path(__file__).parent
SIZES = {"1B": 1_000_000_000, "100M": 100_000_000, "10M": 10_000_000}
LAYOUT_LABEL = {"one_tensor": "1 tensor", "transformer": "~200 tensors"}
FUSED = "torch.optim.AdamW(fused=True)"


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def _gpu() -> list[str]:
    import torch

    props = torch.cuda.get_device_properties(0)
    lines = [
        f"- GPU: {props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} multiprocessors, "
        f"compute capability {props.major}.{props.minor}",
        f"- torch {torch.__version__} (CUDA {torch.version.cuda}), Python {sys.version.split()[0]}",
    ]
    try:
        query = "name,driver_version,clocks.sm,clocks.max.sm,clocks.mem,power.limit"
        smi = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True, text=True, check=True
        ).stdout.strip()
        lines.append(f"- nvidia-smi ({query}): {smi}")
    except (OSError, subprocess.CalledProcessError):
        pass
    return lines


def _targets(results: dict[tuple[str, str], Any], bandwidth: float, big: str) -> list[str]:
    from _targets import peer_ratio

    out = [
        f"## Targets (issue 6, item 4), {big} parameters",
        "",
        "| target | layout | measured | met |",
        "|---|---|---|---|",
    ]
    for layout, label in LAYOUT_LABEL.items():
        result = results.get((big, layout))
        if result is None:
            continue
        rows = result["rows"]
        ours = rows["hf_optim_torch.AdamW"]
        share = ours["floor_bytes"] / ours["timing"].median / bandwidth
        out.append(
            f"| AdamW >= 80% of the device copy bandwidth | {label} | {share:.0%} "
            f"({ours['floor_bytes'] / ours['timing'].median / 1e9:.0f} of {bandwidth / 1e9:.0f} GB/s) | "
            f"{'yes' if share >= 0.8 else 'no'} |"
        )
        ratio, spread = peer_ratio(rows, "hf_optim_torch.AdamW", FUSED)
        out.append(
            f"| AdamW <= 1.1x torch.optim.AdamW(fused=True) | {label} | {ratio:.2f}x (±{spread * ratio / 2:.2f}) | "
            f"{'yes' if ratio <= 1.1 else 'no'} |"
        )
        ratio, spread = peer_ratio(rows, "hf_optim_torch.Adafactor", "torch.optim.Adafactor")
        out.append(
            f"| Adafactor against torch.optim.Adafactor (no target) | {label} | {ratio:.2f}x its time "
            f"(±{spread * ratio / 2:.2f}) | |"
        )
    return [*out, ""]


def _raw(results: dict[tuple[str, str], Any]) -> dict[str, Any]:
    return {
        f"{size} {layout}": {
            "tensors": result["tensors"],
            "params": result["params"],
            "rows": {
                name: {**{k: v for k, v in row.items() if k != "timing"}, "times_s": row["timing"].times}
                for name, row in result["rows"].items()
            },
        }
        for (size, layout), result in results.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1B,100M", help="comma-separated, from " + ", ".join(SIZES))
    parser.add_argument("--rounds", type=int, default=20, help="timed rounds per configuration (after 3 warm-up)")
    parser.add_argument("--out", type=Path, default=HERE / "RESULTS_CUDA.md", help="where to write the report")
    args = parser.parse_args(argv)
    sizes = args.sizes.split(",")
    unknown = [s for s in sizes if s not in SIZES]
    if unknown:
        parser.error(f"--sizes takes {', '.join(SIZES)}; got {unknown}")
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1; got {args.rounds}")

    import torch

    if not torch.cuda.is_available():
        print("benchmarks/cuda.py needs a CUDA device; torch sees none here.", file=sys.stderr)
        return 2
    import _torch_bench
    from run import _table

    started = time.time()
    bandwidths = _torch_bench.copy_bandwidth(4 * 2**30, repeats=20, device="cuda")
    bandwidth = max(bandwidths.values())
    _log("bandwidth " + ", ".join(f"{k} {v / 1e9:.0f} GB/s" for k, v in bandwidths.items()))
    results: dict[tuple[str, str], Any] = {}
    for size in sizes:
        for layout in LAYOUT_LABEL:
            _log(f"torch cuda {size} {layout}")
            results[size, layout] = _torch_bench.run_optimizers(
                SIZES[size], layout, warmup=3, rounds=args.rounds, exact=size != sizes[0], device="cuda"
            )
            torch.cuda.empty_cache()
            for name, row in results[size, layout]["rows"].items():
                _log(f"  {name}: {row['timing'].median * 1e3:.2f} ms")
    elapsed = time.time() - started
    big = sizes[0]
    lines = [
        "# Benchmarks on CUDA",
        "",
        f"Generated by `python benchmarks/cuda.py --sizes {args.sizes} --rounds {args.rounds}` on a lent GPU machine; "
        "do not edit by hand. The CPU results are in RESULTS.md.",
        f"Run {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, {elapsed:.0f} s.",
        "",
        "## Machine",
        "",
        *_gpu(),
        "- Device bandwidth, bytes read + written per second by torch ops on 4 GiB float32 tensors of random data, "
        "median of 20 runs each (best is used for the floors): "
        + ", ".join(f"{k} {v / 1e9:.0f} GB/s" for k, v in bandwidths.items())
        + f"; **{bandwidth / 1e9:.0f} GB/s**",
        "",
        "fp32 parameters and gradients on the GPU. Peers share the device in one process, interleaved one step each "
        f"per round, in a random order; 3 warm-up then {args.rounds} timed rounds; each timed step ends with "
        "`torch.cuda.synchronize()`. *Ratios* are medians of per-round ratios (±: half the interquartile range); "
        "*× bandwidth floor*: the step time over the bytes the optimizer must move (AdamW family 28 B/param, "
        "Adafactor 12 B/param plus 8 B/param of unfactored second moments) at the measured bandwidth. *Step extra*: "
        "the caching allocator's peak during one step beyond what was allocated before it. The exact paths "
        "(`fused=False`) are timed at the smaller size only.",
        "",
        *_targets(results, bandwidth, big),
    ]
    for (size, layout), result in results.items():
        lines += [
            f"## torch on CUDA, {size} parameters, {LAYOUT_LABEL[layout]} ({result['tensors']} tensors, "
            f"{result['params']:,} parameters)",
            "",
            *_table(result, FUSED, bandwidth),
            "",
        ]
    notes = HERE / "NOTES_CUDA.md"
    if notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    args.out.write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(
        json.dumps({"bandwidths": bandwidths, "results": _raw(results)}, indent=1, default=float)
    )
    _log(f"wrote {args.out} in {elapsed:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
