"""The Keras malformed-checkpoint fuzz (``_fuzz_keras``) on the Keras backend of this environment, as a command.

``python -m reliability._fuzz_backends [--count N] [--seed S] [--jobs J]`` runs one fresh process per optimizer
(``reliability._worker``, task ``fuzz_state``: a crash counts as one) over the restore routes the backend has
(``tf_checkpoint`` only on TensorFlow) and both dtypes, prints the tally and exits 1 on any crash, harmful mutation
accepted, unclear error, rejection that changed a variable or harmless mutation rejected (the rules of
``test_malformed_state.py``). ``nox -s keras_backends`` runs it reduced on JAX and torch, without TensorFlow.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OPTIMIZERS = ("adamw", "adafactor", "adam_weight_decay")
DTYPES = ("float32", "bfloat16")
LISTS = ("silent", "unclear", "changed", "false_rejections")


def routes(backend: str) -> tuple[str, ...]:
    return ("keras_store", "set_weights") + (("tf_checkpoint",) if backend == "tensorflow" else ())


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("PYTHONHASHSEED", "0")
    env.setdefault("KERAS_BACKEND", "tensorflow")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def _start(items: list[dict[str, Any]], workdir: Path, k: int) -> tuple[subprocess.Popen[str], Path]:
    task_path = workdir / f"fuzz-{k}.json"
    report_path = task_path.with_suffix(".report.json")
    task_path.write_text(json.dumps({"task": "fuzz_state", "items": items, "report": str(report_path)}), "utf-8")
    command = [sys.executable, "-m", "reliability._worker", str(task_path)]
    proc = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return proc, report_path


def run(count: int, seed: int, jobs: int) -> tuple[list[dict[str, Any]], list[str]]:
    """The reports of every batch and the crashes (one process per optimizer, ``jobs`` at a time)."""
    backend = _env()["KERAS_BACKEND"]
    batches = [
        (
            spec_id,
            [
                {"framework": "tf", "optimizer": spec_id, "route": route, "dtype": dtype, "seed": seed + 100 * k + j}
                | {"count": count}
                for j, (route, dtype) in enumerate((r, d) for r in routes(backend) for d in DTYPES)
            ],
        )
        for k, spec_id in enumerate(OPTIMIZERS)
    ]
    reports: list[dict[str, Any]] = []
    crashes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="hf-optim-fuzz-backends-") as tmp:
        pending = list(enumerate(batches))
        running: list[tuple[str, subprocess.Popen[str], Path]] = []
        while pending or running:
            while pending and len(running) < jobs:
                k, (spec_id, items) = pending.pop(0)
                running.append((spec_id, *_start(items, Path(tmp), k)))
            spec_id, proc, report_path = running.pop(0)
            output, _ = proc.communicate(timeout=1800)
            if proc.returncode != 0 or not report_path.exists():
                crashes.append(f"{backend} {spec_id}: exit status {proc.returncode}: {output[-3000:]}")
                continue
            reports += json.loads(report_path.read_text(encoding="utf-8"))["reports"]
    return reports, crashes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200, help="mutations per (optimizer, route, dtype)")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("HF_OPTIM_SEED", "20240601")))
    parser.add_argument("--jobs", type=int, default=1, help="worker processes at a time")
    parser.add_argument("--report", type=Path, help="write the reports and crashes here (JSON)")
    args = parser.parse_args(argv)
    reports, crashes = run(args.count, args.seed, args.jobs)
    backend = _env()["KERAS_BACKEND"]
    print(f"Keras backend {backend}: {sum(r['tried'] for r in reports)} mutations, {len(crashes)} crashes")
    print("optimizer route dtype: tried rejected harmless-accepted " + " ".join(LISTS))
    for r in reports:
        numbers = [r["tried"], r["rejected"], sum(r["accepted_harmless"].values()), *(len(r[n]) for n in LISTS)]
        print(f"  {r['optimizer']} {r['route']} {r['dtype']}: " + " ".join(map(str, numbers)))
    findings = [f"{name}: {entry}" for r in reports for name in LISTS for entry in r[name]] + crashes
    for entry in findings[:40]:
        print("FINDING", entry)
    if args.report:
        args.report.write_text(json.dumps({"reports": reports, "crashes": crashes}, indent=1), encoding="utf-8")
    expected = len(OPTIMIZERS) * len(routes(backend)) * len(DTYPES)
    if len(reports) != expected:
        print(f"{len(reports)} of {expected} batches reported")
    return 1 if findings or len(reports) != expected else 0


if __name__ == "__main__":
    sys.exit(main())
