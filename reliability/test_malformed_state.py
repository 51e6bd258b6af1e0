"""Malformed checkpoints: every mutated optimizer or scheduler state is rejected clearly or provably harmless.

Batches of seeded mutations (``_fuzz_torch``, ``_fuzz_keras``) run in fresh processes, one per optimizer and code
path (torch) or optimizer and restore route (Keras), so that a crash (a segfault in the native kernel, an abort) is
counted as a crash instead of ending the run. The result must be: 0 crashes; 0 harmful mutations accepted; 0
rejections by anything but a ValueError/TypeError naming what is wrong; 0 rejections that changed the optimizer;
0 harmless mutations rejected. Full run about 11,000 mutations; ``HF_OPTIM_FULL=0``: about 1,500.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from reliability import _fuzz_torch
from reliability.conftest import ROOT, SEED, SIZES, record, worker_env

TORCH_COUNT = 450 if SIZES.full else 60
"""Mutations per torch (optimizer, code path, dtype)."""
SCHEDULE_COUNT = 600 if SIZES.full else 60
KERAS_COUNT = 200 if SIZES.full else 20
"""Mutations per Keras (optimizer, route, dtype): each restore builds Keras objects, ~3-5x a torch load."""
KERAS_ROUTES = ("keras_store", "set_weights", "tf_checkpoint")
LISTS = ("silent", "unclear", "changed", "false_rejections")


def _batches() -> list[tuple[dict[str, str], list[dict[str, Any]]]]:
    """(environment, items) of every subprocess: torch per (optimizer, path), Keras per optimizer."""
    batches = []
    for k, spec_id in enumerate(_fuzz_torch.OPTIMIZERS):
        for path in _fuzz_torch.PATHS[spec_id]:
            items = [
                {"framework": "torch", "optimizer": spec_id, "route": path, "dtype": dtype, "seed": SEED + 10 * k + j}
                | {"count": TORCH_COUNT}
                for j, dtype in enumerate(_fuzz_torch.DTYPES)
            ]
            batches.append((_fuzz_torch.native_env(spec_id, path), items))
        keras = [
            {"framework": "tf", "optimizer": spec_id, "route": route, "dtype": dtype, "seed": SEED + 100 * k + j}
            | {"count": KERAS_COUNT}
            for j, (route, dtype) in enumerate((r, d) for r in KERAS_ROUTES for d in _fuzz_torch.DTYPES)
        ]
        batches.append(({}, keras))
    schedules = {"framework": "torch", "optimizer": "schedulers", "route": "load_state_dict", "dtype": "-"}
    batches.append(({"HF_OPTIM_NATIVE": "0"}, [schedules | {"seed": SEED, "count": SCHEDULE_COUNT}]))
    return batches


def _run(env: dict[str, str], items: list[dict[str, Any]], workdir: Path) -> tuple[list[dict[str, Any]], str | None]:
    """The batch's reports, or the crash (exit status and the end of stderr) when the process died."""
    task_path = workdir / f"fuzz-{time.monotonic_ns()}.json"
    report_path = task_path.with_suffix(".report.json")
    task_path.write_text(json.dumps({"task": "fuzz_state", "items": items, "report": str(report_path)}), "utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "reliability._worker", str(task_path)],
        cwd=ROOT,
        env={**worker_env(), **env},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    if proc.returncode != 0 or not report_path.exists():
        return [], f"exit status {proc.returncode}: {proc.stderr[-3000:]}"
    return json.loads(report_path.read_text(encoding="utf-8"))["reports"], None


@pytest.mark.slow(seconds=200)
def test_malformed_checkpoints_are_rejected_or_harmless(tmp_path: Path) -> None:
    reports: list[dict[str, Any]] = []
    crashes: list[str] = []
    for env, items in _batches():
        got, crash = _run(env, items, tmp_path)
        if crash is not None:
            crashes.append(f"{[(i['framework'], i['optimizer'], i['route']) for i in items]}: {crash}")
        reports += got
    per_target: dict[str, int] = {}
    harmless: dict[str, int] = {}
    for report in reports:
        key = f"{report['framework']} {report['optimizer']}"
        per_target[key] = per_target.get(key, 0) + report["tried"]
        for reason, n in report["accepted_harmless"].items():
            label = f"{report['framework']}: {reason.removeprefix('harmless:')}"
            harmless[label] = harmless.get(label, 0) + n
    findings = {name: [entry for report in reports for entry in report[name]] for name in LISTS}
    total = sum(per_target.values())
    record(
        "malformed_state",
        {
            "mutations": total,
            "per_optimizer_and_framework": per_target,
            "batches": len(_batches()),
            "crashes": len(crashes),
            "rejected": sum(r["rejected"] for r in reports),
            "accepted_harmless": harmless,
            **{name: len(entries) for name, entries in findings.items()},
        },
    )
    assert not crashes, f"{len(crashes)} fuzz processes crashed:\n" + "\n".join(crashes)
    for name, entries in findings.items():
        assert not entries, f"{len(entries)} {name} (of {total} mutations):\n" + "\n".join(entries[:30])
    minimum = 10_000 if SIZES.full else 1_000
    assert total >= minimum, f"only {total} mutations tried (the full run must try {minimum:,})"
    expected = {"torch", "tf"}
    assert {r["framework"] for r in reports} == expected


@pytest.mark.parametrize("path", _fuzz_torch.PATHS["adafactor"])
def test_resized_embedding_checkpoint_is_rejected_on_every_path(path: str, tmp_path: Path) -> None:
    """The issue's scenario: an Adafactor checkpoint of a 10-row embedding loaded after resizing it to 12 rows."""
    script = (
        "import copy, torch\n"
        "import hf_optim_torch as ht\n"
        f"kw = {_fuzz_torch.path_kwargs(path)!r}\n"
        "emb = torch.nn.Parameter(torch.randn(10, 48))\n"
        "opt = ht.Adafactor([emb], **kw)\n"
        "emb.grad = torch.randn_like(emb); opt.step()\n"
        "sd = copy.deepcopy(opt.state_dict())\n"
        "new = torch.nn.Parameter(torch.randn(12, 48))\n"
        "opt2 = ht.Adafactor([new], **kw)\n"
        "try:\n"
        "    opt2.load_state_dict(sd)\n"
        "except ValueError as error:\n"
        "    print('REJECTED', error)\n"
        "new.grad = torch.randn_like(new); opt2.step()\n"
        "print('STEPPED', bool(torch.isfinite(new).all()), len(opt2.state))\n"
    )
    env = {**worker_env(), **_fuzz_torch.native_env("adafactor", path)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "REJECTED param group 0, parameter 0 (shape (12, 48)), state `exp_avg_sq_row` must have shape (12,)" in (
        proc.stdout
    ), proc.stdout
    assert "STEPPED True 1" in proc.stdout
