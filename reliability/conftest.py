"""Reliability suite setup: reduced vs full run, thread limits, and the fresh-process worker runner.

The default run is the full one (6.5 to 18 minutes in two xdist workers on two cores, with the machine's load; the
README's whole test command took 12 to 31: reliability/README.md): many interruptions, every schedule with every
optimizer, 300 Hypothesis examples per argument, 50,000 soak steps. ``HF_OPTIM_FULL=0`` runs a reduced version for
quick local iterations (fewer examples and steps); both exercise every item.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomllib

# Before any framework initialises: one thread per framework (the suite runs in two workers), quiet TF logs.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest

from reliability._worker import ROOT, launch

FULL = os.environ.get("HF_OPTIM_FULL", "1") not in ("", "0")


@dataclass(frozen=True)
class Sizes:
    """How much of each item one run does (full by default, reduced with HF_OPTIM_FULL=0)."""

    full: bool
    hypothesis_examples: int
    soak_steps: int
    distributed_steps: int
    nan_steps: int

    @property
    def label(self) -> str:
        return "full" if self.full else "reduced"


SIZES = (
    Sizes(full=True, hypothesis_examples=300, soak_steps=50_000, distributed_steps=12, nan_steps=6)
    if FULL
    else Sizes(full=False, hypothesis_examples=40, soak_steps=2_000, distributed_steps=6, nan_steps=4)
)
SEED = int(os.environ.get("HF_OPTIM_SEED", "20240601"))
"""Seed of the resume fuzz (interruption points, gradients); the failing seed is printed on failure."""


@pytest.fixture(scope="session")
def sizes() -> Sizes:
    return SIZES


def run_worker(task: dict[str, Any], workdir: Path, timeout: float = 600) -> dict[str, Any]:
    """Run ``python -m reliability._worker`` on ``task`` in a fresh process; return its JSON report.

    A crash of the worker fails the calling test with the worker's output.
    """
    proc, report = launch(task, workdir, timeout=timeout)
    if report is None:
        pytest.fail(
            f"worker {task['task']} exited with {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n"
            f"--- stderr\n{proc.stderr[-8000:]}",
            pytrace=False,
        )
    report["_stderr"] = proc.stderr
    return report  # type: ignore[no-any-return]


RESULTS = ROOT / "out" / "reliability"


RECORDED: dict[str, dict[str, Any]] = {}
"""What this session recorded (the end-of-run summary prints it)."""


def record(name: str, numbers: dict[str, Any]) -> None:
    """Write the measured numbers of one item to out/reliability/<name>.json (README.md quotes them)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"run": SIZES.label, **numbers}
    RECORDED[name] = payload
    (RESULTS / f"{name}.json").write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def tally(name: str, numbers: dict[str, Any]) -> None:
    """Add one test's numbers to item ``name`` (an item measured by several tests) and write the sums: the fields of
    ``COUNTED[name]`` add up, the others are the last test's."""
    record(name, merged(RECORDED.get(name), numbers, COUNTED[name]))


def merged(kept: dict[str, Any] | None, numbers: dict[str, Any], fields: tuple[str, ...]) -> dict[str, Any]:
    """``numbers`` with ``fields`` added to those of ``kept`` (numbers, counts per key, or lists; see :func:`added`)."""
    if not kept:
        return numbers
    return {**kept, **numbers, **{field: added(kept[field], numbers[field]) for field in fields}}


def _summary_lines() -> list[str]:
    """One line per measured item of this session: the numbers the issue asks a run to report."""
    lines = []
    for name, data in sorted(RECORDED.items()):
        if name.startswith("resume_"):
            lines.append(
                f"{name}: {data['scenarios']} scenarios, {data['interruptions']} interruptions restored in a fresh "
                f"process ({', '.join(data['formats'])}), {data['problems']} differences"
            )
        elif name == "malformed_state":
            per = ", ".join(f"{k} {v:,}" for k, v in sorted(data["per_optimizer_and_framework"].items()))
            lines.append(
                f"malformed_state: {data['mutations']:,} mutated checkpoints in {data['batches']} processes ({per}); "
                f"crashes {data['crashes']}, silent acceptances {data['silent']}, unclear errors {data['unclear']}, "
                f"changed on rejection {data['changed']}, harmless rejected {data['false_rejections']}, "
                f"harmless accepted {sum(data['accepted_harmless'].values()):,}"
            )
        elif name == "bad_inputs":
            lines.append(
                f"bad_inputs: {data['total']:,} bad inputs tried, {data['accepted_and_used']:,} distinct accepted ones used"
            )
        elif name.startswith("soak_"):
            for run, r in sorted(data["runs"].items()):
                lines.append(
                    f"{name} {run}: {r['steps']:,} steps, RSS {r['rss_before_mib']:.2f} -> {r['rss_after_mib']:.2f} "
                    f"MiB ({r['rss_growth_less_largest_jump_mib']:.2f} besides the largest jump), "
                    f"step time x{r['drift_ratio']:.3f}, finite={r['finite']}"
                )
        else:
            lines.append(f"{name}: see {RESULTS.relative_to(ROOT) / (name + '.json')}")
    return lines


def pytest_sessionfinish(session: pytest.Session) -> None:
    """In an xdist worker: hand this worker's numbers to the controller, which prints the summary."""
    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        workeroutput["reliability_numbers"] = json.dumps(RECORDED)


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """In the xdist controller: collect a finished worker's numbers (see pytest_sessionfinish). The fields of
    ``COUNTED`` are counts over the tests a worker ran: the controller adds them up and writes the sums."""
    for name, payload in json.loads(getattr(node, "workeroutput", {}).get("reliability_numbers", "{}")).items():
        if name in COUNTED:
            record(name, merged(RECORDED.get(name), payload, COUNTED[name]))
        else:
            RECORDED[name] = payload


_RESUME_COUNTED = (
    "scenarios",
    "interruptions",
    "restored_and_checked",
    "worker_processes",
    "tests",
    "formats",
    "problems",
    "first_problems",
    "unbuildable",
)
#: per item, its fields that count over the tests each xdist worker ran (numbers, counts per key, or lists)
COUNTED = {
    "bad_inputs": ("tried", "total", "accepted_and_used"),
    "malformed_state": (
        "mutations",
        "per_optimizer_and_framework",
        "batches",
        "crashes",
        "rejected",
        "accepted_harmless",
        "silent",
        "unclear",
        "changed",
        "false_rejections",
    ),
    "nonfinite": ("checked",),
    "resume_torch": _RESUME_COUNTED,
    "resume_tf": _RESUME_COUNTED,
}


def added(a: Any, b: Any) -> Any:
    """Two counts added: numbers, dicts of counts per key (the keys of both, sorted), or lists (concatenated)."""
    if isinstance(a, dict):  # (not Counter's +, which drops the keys whose sum is 0)
        return {key: a.get(key, 0) + b.get(key, 0) for key in sorted(a.keys() | b.keys())}
    return a + b


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if RECORDED:
        terminalreporter.section(f"reliability numbers ({SIZES.label} run; out/reliability/*.json)")
        for line in _summary_lines():
            terminalreporter.write_line(line)


def pytest_configure(config: pytest.Config) -> None:
    # Keras' own saving code calls np.array(variable) (keras/src/backend/tensorflow/core.py), which NumPy 2
    # deprecates; it is not ours and does not affect the saved values.
    config.addinivalue_line(
        "filterwarnings", "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
    )


XFAILS_PATH = Path(__file__).with_name("xfails.toml")


def _xfails() -> dict[str, str]:
    """``[xfail]`` entries, plus ``[xfail_full]`` ones in the full run (failures only its extra examples find)."""
    data = tomllib.loads(XFAILS_PATH.read_text(encoding="utf-8"))
    return {**data.get("xfail", {}), **(data.get("xfail_full", {}) if FULL else {})}


def _matches(pattern: str, name: str) -> bool:
    return re.fullmatch(".*".join(re.escape(part) for part in pattern.split("*")), name) is not None


def _expected_seconds(item: pytest.Item) -> float:
    """How long a test is marked to take (``pytest.mark.slow(seconds=...)``; 1 for a bare ``slow``, 0 unmarked)."""
    marker = item.get_closest_marker("slow")
    return 0.0 if marker is None else float(marker.kwargs.get("seconds", 1))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The ``slow`` tests first, the longest first, then strict xfails from xfails.toml (entries that match nothing are
    an error when the whole suite is collected).

    The suite runs in two xdist workers (``nox -s reliability``); started first, the few long tests (the shards of the
    Keras resume fuzz, the malformed checkpoints, the soak) overlap the many short ones instead of ending the run.
    """
    items.sort(key=_expected_seconds, reverse=True)  # stable: the order is otherwise kept
    entries = _xfails()
    used: set[str] = set()
    for item in items:
        for pattern, reason in entries.items():
            if _matches(pattern, item.name):
                item.add_marker(pytest.mark.xfail(strict=True, reason=reason))
                used.add(pattern)
    files = {Path(str(item.fspath)).name for item in items}
    whole = files >= {p.name for p in Path(__file__).parent.glob("test_*.py")} and not config.option.keyword
    unused = sorted(set(entries) - used)
    if whole and unused:
        raise pytest.UsageError(f"reliability/xfails.toml entries that match no test: {unused}")
