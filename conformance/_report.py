"""Results the tests record while they run, written as docs/conformance.md at the end of a full run.

The file is deterministic (no timestamps, sorted rows, numbers rounded to 2 significant digits) so that two runs
on one machine write the same file, and the drift check of ``nox -s conformance`` (``tools/check_report.py``) fails
where a run lists other rows or counts than the committed report (its measured numbers are reported, not failed on:
their last bits may depend on the machine).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hf_optim_spec as hs

REPORT_PATH = Path(__file__).resolve().parents[1] / "docs" / "conformance.md"

# What a report on another Keras backend says about it (``nox -s conformance_backends``): what differs from
# TensorFlow and why, so a number that is not TensorFlow's is read with its reason.
BACKEND_NOTES = {
    "jax": (
        "JAX runs without x64 here (its default): where Keras asks for float64 or int64 (schedule arithmetic, "
        "step counters) JAX computes in float32 / int32. So the float64 cases are skipped for Keras (JAX has no "
        "float64 to run them in), and torch vs Keras learning rates are held to the spec's float32 tolerance "
        "instead of 1 ulp; the ulps are measured all the same (table below)."
    ),
    "torch": (
        "Keras' torch backend shares this process' torch. In Keras 3.15 its `ops.maximum`, `ops.minimum`, "
        "`ops.norm`, `ops.matmul` (and a few more) of float64 tensors return float32. So a schedule with a min / "
        "max (clamps, floors) rounds mid-formula: torch vs Keras learning rates are held to the spec's float32 "
        "tolerance instead of 1 ulp, and the ulps are measured all the same (table below); and the float64 "
        "Adafactor and AdamWeightDecay-with-clipnorm cases miss the float64 tolerance: strict expected failures "
        "(`[backend.torch]` in conformance/xfails.toml, listed at the end)."
    ),
}


def keras_backend() -> str:
    """The backend Keras runs on in this process (``KERAS_BACKEND``, read when Keras is first imported)."""
    import keras

    return str(keras.config.backend())


def report_path(backend: str) -> Path:
    """docs/conformance.md for TensorFlow (the default run), docs/conformance-<backend>.md for the others."""
    return REPORT_PATH if backend == "tensorflow" else REPORT_PATH.with_name(f"conformance-{backend}.md")


@dataclass
class _Tally:
    """Checks passed and the worst absolute / relative error seen (NaN counts as infinite)."""

    passed: int = 0
    max_abs: float = 0.0
    max_rel: float = 0.0

    def count(self, ok: bool, max_abs: float = 0.0, max_rel: float = 0.0) -> None:
        self.passed += int(ok)
        self.max_abs = _max(self.max_abs, max_abs)
        self.max_rel = _max(self.max_rel, max_rel)


@dataclass
class Row(_Tally):
    """Aggregated results of one (spec id, framework, dtype)."""

    total: int = 0
    max_ulp: int | None = None

    def add(self, ok: bool, max_abs: float = 0.0, max_rel: float = 0.0, max_ulp: int | None = None) -> None:
        self.total += 1
        self.count(ok, max_abs, max_rel)
        if max_ulp is not None:
            self.max_ulp = max_ulp if self.max_ulp is None else max(self.max_ulp, max_ulp)


@dataclass
class Cross(_Tally):
    """torch vs Keras on one spec: lr points compared, bit-identical points, worst ulp; or trajectories."""

    cases: int = 0
    points: int = 0
    identical: int = 0
    max_ulp: int = 0


def _max(a: float, b: float) -> float:
    if math.isnan(b):
        return math.inf
    return max(a, b)


@dataclass
class Recorder:
    vectors: dict[tuple[str, str, str, str], Row] = field(default_factory=lambda: defaultdict(Row))
    cross: dict[tuple[str, str, str], Cross] = field(default_factory=lambda: defaultdict(Cross))
    errors: dict[tuple[str, str], Row] = field(default_factory=lambda: defaultdict(Row))
    properties: dict[tuple[str, str], Row] = field(default_factory=lambda: defaultdict(Row))
    coverage: dict[tuple[str, str], str] = field(default_factory=dict)
    xfails: dict[str, str] = field(default_factory=dict)

    def vector(self, spec: hs.Spec, framework: str, dtype: str, ok: bool, **metrics: Any) -> None:
        self.vectors[(spec.kind, spec.id, framework, dtype)].add(ok, **metrics)

    def lr_pair(self, spec: hs.Spec, ok: bool, ulps: Any) -> None:
        row = self.cross[(spec.kind, spec.id, "float32")]
        row.cases += 1
        row.count(ok)
        row.points += len(ulps)
        row.identical += int(sum(1 for u in ulps if u == 0))
        row.max_ulp = max([row.max_ulp, *(int(u) for u in ulps)])

    def trajectory_pair(self, spec: hs.Spec, dtype: str, ok: bool, max_abs: float, max_rel: float) -> None:
        row = self.cross[(spec.kind, spec.id, dtype)]
        row.cases += 1
        row.count(ok, max_abs, max_rel)

    def error(self, spec: hs.Spec, framework: str, ok: bool) -> None:
        self.errors[(spec.id, framework)].add(ok)

    def prop(self, spec: hs.Spec, label: str, ok: bool) -> None:
        self.properties[(spec.id, label)].add(ok)

    # ------------------------------------------------------------------ markdown

    def markdown(self, *, selection: bool = False, backend: str = "tensorflow") -> str:
        from testsupport.torch_adapter import TORCH_DEVICE

        session = "conformance" if backend == "tensorflow" else f"conformance_backends(backend='{backend}')"
        lines = [
            "# Conformance report" + ("" if backend == "tensorflow" else f": Keras on {backend}"),
            "",
            f"<!-- DO NOT EDIT: written by `nox -s {session}` (conformance/_report.py). -->",
            "",
            "Every spec case run through `hf_optim_torch` and `hf_optim_tf` and compared with the spec's",
            "float64 reference (tolerances from the spec, per dtype), then torch and Keras side by side.",
            "Errors are `|actual - expected|` over every step and every element; ulps are float32 ulps.",
            "",
        ]
        if selection or TORCH_DEVICE != "cpu":
            run = "a selection of the suite" if selection else "the whole suite"
            lines += [f"This report covers {run}, with the torch cases on `{TORCH_DEVICE}`.", ""]
        if backend != "tensorflow":
            lines += [
                f"`hf_optim_tf` runs on Keras' `{backend}` backend (no TensorFlow installed); the framework "
                f"column says `tf` for it all the same. {BACKEND_NOTES.get(backend, '')}".rstrip(),
                "",
            ]
        lines += self._vector_table()
        lines += self._cross_table()
        lines += self._error_table()
        lines += self._property_table()
        lines += self._xfail_table()
        return "\n".join(lines).rstrip() + "\n"

    def _vector_table(self) -> list[str]:
        out = [
            "## Spec cases vs the float64 reference",
            "",
            "| kind | spec id | framework | dtype | cases passed | max abs error | max rel error | max ulp (lr vs reference) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for (kind, spec_id, framework, dtype), row in sorted(self.vectors.items()):
            ulp = "" if row.max_ulp is None else str(row.max_ulp)
            out.append(
                f"| {kind} | `{spec_id}` | {framework} | {dtype} | {row.passed}/{row.total} | "
                f"{_num(row.max_abs)} | {_num(row.max_rel)} | {ulp} |"
            )
        return [*out, ""]

    def _cross_table(self) -> list[str]:
        lr_rows = {k: v for k, v in self.cross.items() if k[0] == "schedule"}
        out = [
            "## torch vs Keras: learning rates (float32, every step of every case)",
            "",
            "| spec id | cases passed | steps | bit-identical | % bit-identical | max ulp |",
            "|---|---|---|---|---|---|",
        ]
        total = Cross()
        for (_, spec_id, _), row in sorted(lr_rows.items()):
            out.append(
                f"| `{spec_id}` | {row.passed}/{row.cases} | {row.points} | {row.identical} | "
                f"{_pct(row.identical, row.points)} | {row.max_ulp} |"
            )
            total.cases += row.cases
            total.passed += row.passed
            total.points += row.points
            total.identical += row.identical
            total.max_ulp = max(total.max_ulp, row.max_ulp)
        out.append(
            f"| **all** | {total.passed}/{total.cases} | {total.points} | {total.identical} | "
            f"{_pct(total.identical, total.points)} | {total.max_ulp} |"
        )
        out += [
            "",
            "## torch vs Keras: optimizer trajectories (params after every step, final state)",
            "",
            "| kind | spec id | dtype | cases passed | max abs difference | max rel difference |",
            "|---|---|---|---|---|---|",
        ]
        for (kind, spec_id, dtype), row in sorted(self.cross.items()):
            if kind == "schedule":
                continue
            out.append(
                f"| {kind} | `{spec_id}` | {dtype} | {row.passed}/{row.cases} | {_num(row.max_abs)} | {_num(row.max_rel)} |"
            )
        return [*out, ""]

    def _error_table(self) -> list[str]:
        out = ["## Error cases (type and message)", "", "| spec id | framework | cases passed |", "|---|---|---|"]
        for (spec_id, framework), row in sorted(self.errors.items()):
            out.append(f"| `{spec_id}` | {framework} | {row.passed}/{row.total} |")
        return [*out, ""]

    def _property_table(self) -> list[str]:
        out = [
            "## Property tests (Hypothesis, derandomized)",
            "",
            "| spec id | property | examples passed |",
            "|---|---|---|",
        ]
        for (spec_id, label), row in sorted(self.properties.items()):
            out.append(f"| `{spec_id}` | {label} | {row.passed}/{row.total} |")
        return [*out, ""]

    def _xfail_table(self) -> list[str]:
        out = ["## Expected failures (conformance/xfails.toml)", ""]
        if not self.xfails:
            return [*out, "None.", ""]
        out += ["| test | reason |", "|---|---|"]
        out += [f"| `{pattern}` | {reason} |" for pattern, reason in sorted(self.xfails.items())]
        return [*out, ""]


def _num(value: float) -> str:
    if math.isinf(value):
        return "inf"
    if value == 0:
        return "0"
    return f"{value:.1e}"


def _pct(part: int, whole: int) -> str:
    if whole == 0:
        return "-"
    return f"{100.0 * part / whole:.2f}"


RECORDER = Recorder()
