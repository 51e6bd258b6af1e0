"""The conformance report's drift check (``tools/check_report.py``): rows and counts exact, measured numbers not."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from ._report import REPORT_PATH


def _check_report() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "tools" / "check_report.py"
    spec = importlib.util.spec_from_file_location("check_report", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REPORT = """# Report

| kind | spec id | dtype | cases passed | max abs error | max ulp |
|---|---|---|---|---|---|
| optimizer | `adamw` | float32 | 12/12 | 3.0e-07 | 2 |
| optimizer | `adamw` | float64 | 4/4 | 0 | 0 |

| spec id | property | examples passed |
|---|---|---|
| `adamw` | finite | 50/50 |
"""


@pytest.mark.parametrize(
    ("old", "new", "same"),
    [
        ("3.0e-07 | 2 |", "3.1e-07 | 3 |", True),  # measured numbers: reported, not failed on
        ("12/12", "11/12", False),  # a count
        ("| `adamw` | finite | 50/50 |\n", "", False),  # a row of a table without measured columns
        ("float64", "float16", False),  # a row's dtype
        ("| optimizer | `adamw` | float64 | 4/4 | 0 | 0 |\n", "", False),  # a row
        ("# Report", "# Reports", False),  # prose
    ],
)
def test_the_drift_check_fails_on_rows_and_counts_and_not_on_measured_numbers(old: str, new: str, same: bool) -> None:
    split = _check_report().split
    assert old in REPORT
    committed, written = split(REPORT), split(REPORT.replace(old, new, 1))
    assert (committed[0] == written[0]) is same
    assert committed[1] == 4, "four measured cells: two rows of two measured columns"


def test_the_committed_report_masks_the_measured_columns_of_every_table() -> None:
    """Every table of the committed report has its measured columns named in MEASURED (a renamed column would be
    compared exactly, and fail on another machine's last bits)."""
    module = _check_report()
    text = REPORT_PATH.read_text(encoding="utf-8")
    lines, measured = module.split(text)
    assert measured > 100
    assert not any("e-" in cell for line in lines for cell in line.split("|") if line.startswith("|")), (
        "an error in scientific notation left unmasked"
    )
