"""Malformed checkpoints: every mutated optimizer or scheduler state is rejected clearly or provably harmless.

Batches of seeded mutations (``_fuzz_plan``; ``_fuzz_torch``, ``_fuzz_keras``) run in fresh processes, one per
optimizer and code path (torch) or optimizer (Keras, every restore route), so that a crash (a segfault in the native
kernel, an abort) is counted as a crash instead of ending the run; one test per batch, so that the two xdist workers
share them. The result must be: 0 crashes; 0 harmful mutations accepted; 0 rejections by anything but a
ValueError/TypeError naming what is wrong; 0 rejections that changed the optimizer; 0 harmless mutations rejected.
From the counts below: 13,200 mutations in the full run, 1,620 with ``HF_OPTIM_FULL=0``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from reliability import _fuzz_plan, _fuzz_torch
from reliability._worker import worker_env
from reliability.conftest import SEED, SIZES, tally

TORCH_COUNT = 450 if SIZES.full else 60
"""Mutations per torch (optimizer, code path, dtype)."""
SCHEDULE_COUNT = 600 if SIZES.full else 60
KERAS_COUNT = 200 if SIZES.full else 20
"""Mutations per Keras (optimizer, route, dtype): each restore builds Keras objects, ~3-5x a torch load."""
BATCHES = _fuzz_plan.torch_batches(SEED, TORCH_COUNT, SCHEDULE_COUNT) + _fuzz_plan.keras_batches(
    "tensorflow", SEED, KERAS_COUNT
)
#: about how long a batch takes on a 2-core machine in the full run (the order the workers take the long tests in)
_SECONDS = {"torch": 10, "tf": 45}


@pytest.mark.parametrize(
    "batch",
    [pytest.param(b, id=b.name, marks=pytest.mark.slow(seconds=_SECONDS[b.items[0]["framework"]])) for b in BATCHES],
)
def test_malformed_checkpoints_are_rejected_or_harmless(batch: _fuzz_plan.Batch, tmp_path: Path) -> None:
    reports, crash = _fuzz_plan.run(batch, tmp_path)
    tried = sum(report["tried"] for report in reports)
    harmless: dict[str, int] = {}
    for report in reports:
        for reason, n in report["accepted_harmless"].items():
            label = f"{report['framework']}: {reason.removeprefix('harmless:')}"
            harmless[label] = harmless.get(label, 0) + n
    findings = _fuzz_plan.findings(reports)
    framework = batch.items[0]["framework"]
    tally(
        "malformed_state",
        {
            "mutations": tried,
            "per_optimizer_and_framework": {f"{framework} {batch.items[0]['optimizer']}": tried},
            "batches": 1,
            "crashes": int(crash is not None),
            "rejected": sum(r["rejected"] for r in reports),
            "accepted_harmless": harmless,
            **{name: len(entries) for name, entries in findings.items()},
        },
    )
    assert crash is None, f"the fuzz process crashed: {crash}"
    for name, entries in findings.items():
        assert not entries, f"{len(entries)} {name} (of {tried} mutations):\n" + "\n".join(entries[:30])
    fields = ("framework", "optimizer", "route", "dtype")
    assert [[r[f] for f in fields] for r in reports] == [[i[f] for f in fields] for i in batch.items]
    for report, item in zip(reports, batch.items):
        # a torch mutation that does not apply to the state drawn is skipped uncounted (nearly all apply); a Keras
        # batch draws again until it has its count
        least = item["count"] if framework == "tf" else 0.9 * item["count"]
        assert report["tried"] >= least, f"{report['tried']} mutations tried of the {item['count']} asked for"


def test_the_plan_covers_every_optimizer_path_route_and_dtype() -> None:
    """What the batches above must add up to (the numbers README.md and docs/guarantees.md quote)."""
    items = [item for batch in BATCHES for item in batch.items]
    torch = {(i["optimizer"], i["route"], i["dtype"]) for i in items if i["framework"] == "torch"}
    keras = {(i["optimizer"], i["route"], i["dtype"]) for i in items if i["framework"] == "tf"}
    assert len(torch) + len(keras) == len(items)  # (no item twice)
    for spec_id in _fuzz_plan.OPTIMIZERS:
        for dtype in _fuzz_plan.DTYPES:
            assert {(spec_id, path, dtype) for path in _fuzz_plan.TORCH_PATHS[spec_id]} <= torch
            assert {(spec_id, route, dtype) for route in _fuzz_plan.KERAS_ROUTES} <= keras
    assert ("schedulers", "load_state_dict", "-") in torch
    assert sum(batch.count for batch in BATCHES) == (13_200 if SIZES.full else 1_620)


@pytest.mark.parametrize("path", _fuzz_plan.TORCH_PATHS["adafactor"])
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
    env = worker_env(**_fuzz_plan.native_env("adafactor", path))
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "REJECTED param group 0, parameter 0 (shape (12, 48)), state `exp_avg_sq_row` must have shape (12,)" in (
        proc.stdout
    ), proc.stdout
    assert "STEPPED True 1" in proc.stdout
