"""Soak: a long run of every optimizer with a schedule, in each framework, in a fresh process.

The objective is a noisy quadratic (gradient = param - target + noise). Full (default) run 50,000 steps,
reduced run 2,000. Measured: RSS after the warm-up tenth and at the end (bound below),
the fastest step's CPU time in the second tenth vs in the last tenth (drift), and that parameters and lrs stay finite.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reliability import _drive
from reliability.conftest import SEED, SIZES, record, run_worker

RSS_GROWTH_MIB = 8.0
"""Allowed RSS growth over the run after warm-up, one-time steps included (the heap growing by one arena: 2.4 MiB
once in a fresh-clone run, within the first tenth; 0.0-0.3 MiB usually)."""
LEAK_MIB = 0.5
"""Allowed RSS growth summed over the nine intervals between the ten samples, the largest jump left out (what stays
is growth that recurs, 40,000 steps of the full run): a leak of 14 bytes per step exceeds it; a leaked small tensor per step
(~100 B), a Python object or a graph, far more."""
DRIFT = 2.0
"""Allowed ratio of the last tenth's fastest step time to the second tenth's. The times are the process's CPU time,
not wall time, and the fastest step of each tenth, not its median: on a shared machine a slow spell of other load
had made a wall-clock ratio of medians reach 2.12 (torch Adafactor, 2026-12-06), and a CPU-time one 1.81 (torch
AdamWeightDecay, 2026-12-07), with no change in the work per step; a step whose work grows (a list or graph that
grows every step) makes every later step slower, the fastest one too."""


#: about how long each framework's soak takes on a 2-core machine (the order the workers take the long tests in)
_SECONDS = {"torch": 60, "tf": 100}


@pytest.mark.parametrize(
    "framework", [pytest.param(f, marks=pytest.mark.slow(seconds=_SECONDS[f])) for f in _drive.FRAMEWORKS]
)
def test_soak(framework: str, tmp_path: Path) -> None:
    report = run_worker({"task": "soak", "framework": framework, "seed": SEED, "steps": SIZES.soak_steps}, tmp_path)
    report.pop("_stderr", None)
    record(
        f"soak_{framework}",
        {**report, "rss_growth_bound_mib": RSS_GROWTH_MIB, "leak_bound_mib": LEAK_MIB, "drift_bound": DRIFT},
    )
    assert len(report["runs"]) == len(_drive.specs_of("optimizer"))
    for name, run in report["runs"].items():
        assert run["steps"] == SIZES.soak_steps
        assert run["finite"], f"{name}: NaN/inf after {run['steps']} steps"
        samples = run["rss_samples_mib"]
        assert run["rss_growth_mib"] <= RSS_GROWTH_MIB, f"{name}: RSS grew {run['rss_growth_mib']:.2f} MiB {samples}"
        leak = run["rss_growth_less_largest_jump_mib"]
        assert leak <= LEAK_MIB, f"{name}: RSS grew {leak:.2f} MiB besides its largest jump (a leak): {samples}"
        assert run["drift_ratio"] <= DRIFT, f"{name}: step time drifted x{run['drift_ratio']:.2f}"
