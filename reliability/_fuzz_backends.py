"""The Keras malformed-checkpoint fuzz (``_fuzz_keras``) on the Keras backend of this environment, as a command.

``python -m reliability._fuzz_backends [--count N] [--seed S] [--jobs J]`` runs the Keras batches of ``_fuzz_plan``
(one fresh process per optimizer, every restore route the backend has, both dtypes) on ``KERAS_BACKEND``
(TensorFlow when unset), prints the tally and exits 1 on any finding, with the rules of ``test_malformed_state.py``.
``nox -s keras_backends`` runs it reduced on JAX and torch, without TensorFlow. It imports no framework itself.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from reliability import _fuzz_plan


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=200, help="mutations per (optimizer, route, dtype)")
    parser.add_argument("--seed", type=int, default=int(os.environ.get("HF_OPTIM_SEED", "20240601")))
    parser.add_argument("--jobs", type=int, default=1, help="worker processes at a time")
    parser.add_argument("--report", type=Path, help="write the reports and crashes here (JSON)")
    args = parser.parse_args(argv)
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    batches = _fuzz_plan.keras_batches(backend, args.seed, args.count)
    with tempfile.TemporaryDirectory(prefix="hf-optim-fuzz-backends-") as tmp:
        with ThreadPoolExecutor(args.jobs) as pool:
            results = list(pool.map(lambda batch: _fuzz_plan.run(batch, Path(tmp), timeout=1800), batches))
    reports = [report for got, _ in results for report in got]
    crashes = [crash for _, crash in results if crash is not None]
    print(f"Keras backend {backend}: {sum(r['tried'] for r in reports)} mutations, {len(crashes)} crashes")
    print("optimizer route dtype: tried rejected harmless-accepted " + " ".join(_fuzz_plan.FINDINGS))
    for r in reports:
        numbers = [r["tried"], r["rejected"], sum(r["accepted_harmless"].values())]
        numbers += [len(r[name]) for name in _fuzz_plan.FINDINGS]
        print(f"  {r['optimizer']} {r['route']} {r['dtype']}: " + " ".join(map(str, numbers)))
    found = [f"{name}: {entry}" for name, entries in _fuzz_plan.findings(reports).items() for entry in entries]
    found += crashes
    for entry in found[:40]:
        print("FINDING", entry)
    if args.report:
        args.report.write_text(json.dumps({"reports": reports, "crashes": crashes}, indent=1), encoding="utf-8")
    expected = sum(len(batch.items) for batch in batches)
    if len(reports) != expected:
        print(f"{len(reports)} of {expected} batch items reported")
    return 1 if found or len(reports) != expected else 0


if __name__ == "__main__":
    sys.exit(main())
