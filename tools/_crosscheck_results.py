"""The verdicts of the crosscheck: one per value case, one per error case, and their sum per spec."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["DIVERGENCE_KEY", "CaseResult", "ErrorResult", "SpecResult"]

DIVERGENCE_KEY = "hf_divergence"
"""Optional case key (a reason string): a documented difference from transformers. The case is still run;
transformers disagreeing (or raising) is then expected and reported as a divergence, agreeing is a failure."""


@dataclass
class CaseResult:
    """The verdict on one value case."""

    index: int
    description: str
    status: str  # agree | disagree | divergence | skipped | not generated
    dtype: str = ""
    max_abs: float = 0.0
    max_rel: float = 0.0
    exact: bool = False
    detail: str = ""


@dataclass
class ErrorResult:
    """The verdict on one error case."""

    index: int
    description: str
    status: str  # agree | disagree | skipped
    detail: str = ""


@dataclass
class SpecResult:
    """Everything checked for one spec."""

    spec_id: str
    framework: str
    cases: list[CaseResult] = field(default_factory=list)
    errors: list[ErrorResult] = field(default_factory=list)
    note: str = ""

    def count(self, status: str) -> int:
        return sum(1 for case in self.cases if case.status == status)

    def error_count(self, status: str) -> int:
        return sum(1 for err in self.errors if err.status == status)

    @property
    def failed(self) -> bool:
        return any(c.status in ("disagree", "not generated") for c in self.cases) or any(
            e.status == "disagree" for e in self.errors
        )
