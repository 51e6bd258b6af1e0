"""Soak: a long run of every optimizer with a schedule, in each framework, in a fresh process.

The objective is a noisy quadratic (gradient = param - target + noise). Full (default) run 50,000 steps,
reduced run 2,000. Measured: RSS after the warm-up tenth and at the end (bound below),
median step time of the second tenth vs the last tenth (drift), and that parameters and lrs stay finite.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from reliability import _drive
from reliability.conftest import SEED, SIZES, record, run_worker

RSS_GROWTH_MIB = 2.0
"""Allowed RSS growth over the run. Tiny params: a leak of one small tensor per step (~100 B) adds about 5 MiB
over the full run's 50,000 steps; a leaked step-sized Python object or graph, far more; allocator noise measured
here stays under 0.5 MiB."""
DRIFT = 2.0
"""Allowed ratio of the last tenth's median step time to the second tenth's (the machine is shared: noisy)."""


@pytest.mark.parametrize("framework", _drive.FRAMEWORKS)
def test_soak(framework: str, tmp_path: Path) -> None:
    report = run_worker({"task": "soak", "framework": framework, "seed": SEED, "steps": SIZES.soak_steps}, tmp_path)
    report.pop("_stderr", None)
    record(f"soak_{framework}", {**report, "rss_growth_bound_mib": RSS_GROWTH_MIB, "drift_bound": DRIFT})
    assert len(report["runs"]) == len(_drive.specs_of("optimizer"))
    for name, run in report["runs"].items():
        assert run["steps"] == SIZES.soak_steps
        assert run["finite"], f"{name}: NaN/inf after {run['steps']} steps"
        assert run["rss_growth_mib"] <= RSS_GROWTH_MIB, f"{name}: RSS grew {run['rss_growth_mib']:.2f} MiB"
        assert run["drift_ratio"] <= DRIFT, f"{name}: step time drifted x{run['drift_ratio']:.2f}"
