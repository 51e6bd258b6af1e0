"""Resume fuzz: interrupt at random steps and at every schedule boundary, restore in a fresh process, continue.

For every scenario of :func:`reliability._drive.scenarios` (each optimizer alone, each schedule driving an
optimizer; all from the registry) the test runs the uninterrupted trajectory, then a second run that checkpoints
at the interruption points (0, every boundary of the schedule such as the end of the warmup and
``num_training_steps``, the last step, the end, random steps). The second run must equal the first (saving does not
perturb anything). Fresh worker processes (at most ``PER_WORKER`` checkpoints each) then restore every checkpoint,
continue to the end and compare every step (parameters and learning rates) and the final optimizer state bit for
bit.

Formats: torch ``state_dict`` through ``torch.save`` / ``torch.load(weights_only=True)``; Keras ``.keras`` files of
a compiled model and ``tf.train.Checkpoint`` (both at the fixed points of the full run; in turn at its random points
and everywhere in the reduced run).
"""

from __future__ import annotations

import pickle
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from reliability import _drive, _runs
from reliability.conftest import SEED, SIZES, run_worker, tally
from testsupport.compare import bitwise_differences
from testsupport.spec_args import MissingApi


def _save(framework: str, run: Any, fmt: str, path: Path) -> None:
    if framework == "torch":
        import torch

        torch.save(run.checkpoint(), path)
    elif fmt == "keras":
        run.model.save(path)
    else:
        run.build_optimizer()
        run.tf_checkpoint().write(str(path))


#: checkpoints restored per fresh worker process: Keras restores and continues about 5 a second on a 2-core machine
#: (446 in 83 s), and all 1,700 of its full run in one process went past ``run_worker``'s 600 s on a CI machine; a
#: shard of the full run has about 330 (one process each: each process spends 5 to 10 s importing Keras)
PER_WORKER = 450


def _formats(framework: str, turn: int, every: bool) -> list[str]:
    """The formats to checkpoint in at one interruption: Keras' two formats at once where ``every``, else the one
    whose ``turn`` it is (the count of single-format interruptions so far)."""
    if framework == "torch":
        return ["torch"]
    both = ["keras", "tfckpt"]
    return both if every else [both[turn % 2]]


def _suffix(fmt: str) -> str:
    return {"torch": ".pt", "keras": ".keras", "tfckpt": ""}[fmt]


#: the scenarios of each framework are split among this many tests, which the two xdist workers share: the Keras
#: resume fuzz was one test of 640 s, the longest of the session by far, which left the other worker idle at the end
SHARDS = {"torch": 1, "tf": 4}
#: about how long one shard takes on a 2-core machine (the order the workers take the long tests in)
_SECONDS = {"torch": 25, "tf": 200}
_SHARD_CASES = [
    pytest.param(framework, shard, id=f"{framework}-{shard}", marks=pytest.mark.slow(seconds=_SECONDS[framework]))
    for framework in _drive.FRAMEWORKS
    for shard in range(SHARDS[framework])
]


@pytest.mark.parametrize(("framework", "shard"), _SHARD_CASES)
def test_resume_in_a_fresh_process_is_bit_identical(framework: str, shard: int, tmp_path: Path) -> None:
    if framework == "tf":
        import keras

        keras.utils.set_random_seed(0)
    Run = _runs.TorchRun if framework == "torch" else _runs.TfRun
    every = _drive.scenarios(framework, SIZES.full, SEED)
    # scenario k of the framework draws its interruption points from its own generator, so a scenario gets the same
    # points in whichever shard it runs
    scenarios = [(k, scn) for k, scn in enumerate(every) if k % SHARDS[framework] == shard]
    expected: dict[str, Any] = {}
    items: list[dict[str, Any]] = []
    perturbed: list[str] = []
    unbuildable: list[str] = []
    counter = shard
    turn = shard
    for k, scn in scenarios:
        try:
            reference = Run(scn)
        except (TypeError, ValueError, MissingApi) as error:  # reported below, after every other scenario ran
            unbuildable.append(f"{scn['id']}: {type(error).__name__}: {error}")
            continue
        trajectory = [reference.snapshot()]
        for t in range(scn["steps"]):
            reference.step(t)
            trajectory.append(reference.snapshot())
        expected[scn["id"]] = (trajectory, reference.final_state())

        # the full run checkpoints in both Keras formats at the fixed points and in one of them in turn at the random
        # ones: both formats at the random points too took 874 instead of 698 core-seconds (2026-12-07)
        fixed = _drive.fixed_interruptions(scn, SIZES.full)
        points = fixed | _drive.random_interruptions(scn, SIZES.full, np.random.default_rng([SEED, k]))
        saving = Run(scn)
        for t in range(scn["steps"] + 1):
            if t in points:
                every = SIZES.full and t in fixed
                for fmt in _formats(framework, turn, every):
                    path = tmp_path / f"ckpt-{counter}{_suffix(fmt)}"
                    _save(framework, saving, fmt, path)
                    items.append({"scenario": scn, "k": t, "format": fmt, "path": str(path)})
                counter += 1
                turn += not every
            if t < scn["steps"]:
                saving.step(t)
                perturbed += bitwise_differences(
                    trajectory[t + 1], saving.snapshot(), f"{scn['id']} step {t + 1} (saving run)"
                )
    assert not perturbed, "checkpointing changed the run:\n" + "\n".join(perturbed[:20])

    expected_path = tmp_path / "expected.pkl"
    with open(expected_path, "wb") as handle:
        pickle.dump(expected, handle)
    reports = [
        run_worker(
            {
                "task": "resume",
                "framework": framework,
                "items": items[start : start + PER_WORKER],
                "expected": str(expected_path),
            },
            tmp_path,
        )
        for start in range(0, len(items), PER_WORKER)
    ]
    report = {"checked": sum(r["checked"] for r in reports), "problems": [p for r in reports for p in r["problems"]]}
    tally(
        f"resume_{framework}",
        {
            "scenarios": len(scenarios),
            "interruptions": len(items),
            "restored_and_checked": report["checked"],
            "worker_processes": len(reports),
            "tests": 1,
            "formats": dict(sorted(Counter(item["format"] for item in items).items())),
            "problems": len(report["problems"]),
            "first_problems": report["problems"][:30],
            "unbuildable": unbuildable,
            "seed": SEED,
        },
    )
    assert not unbuildable, "scenarios that could not be built:\n" + "\n".join(unbuildable)
    assert report["checked"] == len(items)
    assert not report["problems"], f"seed {SEED}: {len(report['problems'])} differences after resume:\n" + "\n".join(
        report["problems"][:40]
    )
