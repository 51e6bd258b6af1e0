"""The vector generator: fill every case's generated fields from the float64 references.

``regenerate()`` rewrites every spec file in a canonical JSON layout. Running it twice is a no-op,
which is what the drift check (``nox -s spec``) relies on.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ._registry import load_spec, spec_files, spec_root
from ._schedules import bind

__all__ = [
    "case_digest",
    "claimed_provenance",
    "dumps",
    "regenerate",
    "regenerate_file",
    "schedule_case_expected",
]


# --------------------------------------------------------------------------- canonical JSON


def _scalar(value: Any) -> str:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"non-finite number {value!r} cannot be stored in a spec file")
    return json.dumps(value, ensure_ascii=False)


def _is_flat(value: Any) -> bool:
    """Scalars and (nested) lists of scalars are written on one line."""
    if isinstance(value, list):
        return all(_is_flat(v) for v in value)
    return not isinstance(value, dict)


def _small_dict(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and len(value) <= 4
        and all(_is_flat(v) for v in value.values())
        and len(json.dumps(value)) <= 100
    )


def _dump(value: Any, indent: int) -> str:
    pad = "  " * (indent + 1)
    if isinstance(value, dict):
        if not value:
            return "{}"
        if _small_dict(value):
            return "{" + ", ".join(f"{json.dumps(k)}: {_dump(v, indent)}" for k, v in value.items()) + "}"
        items = [f"{pad}{json.dumps(k, ensure_ascii=False)}: {_dump(v, indent + 1)}" for k, v in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + "  " * indent + "}"
    if isinstance(value, list):
        if _is_flat(value):
            return "[" + ", ".join(_dump(v, indent) for v in value) + "]"
        items = [f"{pad}{_dump(v, indent + 1)}" for v in value]
        return "[\n" + ",\n".join(items) + "\n" + "  " * indent + "]"
    return _scalar(value)


def dumps(data: Any) -> str:
    """The canonical text of a spec file (stable, diff-friendly, ends with a newline)."""
    return _dump(data, 0) + "\n"


# --------------------------------------------------------------------------- generation


def schedule_case_expected(spec_id: str, case: Mapping[str, Any], root: Path | None = None) -> list[float]:
    """The float64 reference values of one schedule case (closed form or stateful), from the spec under ``root``.

    A stateful case gives the lr of its default param group after each metric; its ``group_lrs`` (extra param
    groups) take part in the run, since a schedule may couple the groups (greedy's reset).
    """
    from .reference import run_stateful

    spec = load_spec((root or spec_root()) / "schedules" / f"{spec_id}.json")
    base_lr = float(case.get("base_lr", 1.0))
    if spec.stateful:
        from ._validation import validate

        params = validate(spec, case.get("params", {}), base_lr=base_lr)
        base_lrs = [base_lr, *(float(lr) for lr in case.get("group_lrs", ()))]
        return run_stateful(spec.id, params, base_lrs, case["metrics"])[0]
    bound = bind(spec, case.get("params", {}), base_lr=base_lr)
    return [bound(step) for step in case["steps"]]


def case_digest(case: Mapping[str, Any]) -> str:
    """A fingerprint of what a cross-check verifies: the case's inputs and expected values (not its wording).

    ``nox -s crosscheck -- --write`` stores it in the provenance of an agreeing case
    (``reference+transformers-4.57.6#<digest>``); a case whose digest no longer matches loses the claim.
    """
    checked = {key: value for key, value in case.items() if key not in ("description", "provenance")}
    return hashlib.sha256(dumps(checked).encode("utf-8")).hexdigest()[:12]


def claimed_provenance(case: Mapping[str, Any]) -> str:
    """The case's provenance if its cross-check claim (if any) still holds for its content, else ``"reference"``."""
    provenance = str(case.get("provenance", "reference"))
    claim, _, digest = provenance.partition("#")
    if claim == "reference" or (claim.startswith("reference+transformers-") and digest == case_digest(case)):
        return provenance
    return "reference"


def _regenerate_case(raw: Mapping[str, Any], case: dict[str, Any], root: Path | None) -> dict[str, Any]:
    kind = raw["kind"]
    if kind == "schedule":
        with warnings.catch_warnings():  # a case may hit a UserWarning rule on purpose ("warns"; tested elsewhere)
            warnings.simplefilter("ignore", UserWarning)
            case["expected"] = schedule_case_expected(raw["id"], case, root)
    else:
        from . import reference

        case = dict(reference.generate_case(raw, case))
    # provenance last, so the generated fields sit together above it; a stale transformers claim is dropped
    case["provenance"] = claimed_provenance(case)
    case["provenance"] = case.pop("provenance")
    return case


def regenerate_file(path: Path, root: Path | None = None) -> bool:
    """Regenerate one spec file (of the spec tree ``root``, by default the package's) in place; True when changed."""
    before = path.read_text(encoding="utf-8")
    raw = json.loads(before)
    raw["cases"] = [_regenerate_case(raw, dict(case), root) for case in raw.get("cases", [])]
    after = dumps(raw)
    if after != before:
        path.write_text(after, encoding="utf-8")
        return True
    return False


def regenerate(root: Path | None = None) -> list[Path]:
    """Regenerate every spec file under ``root``; returns the files that changed."""
    return [path for path in spec_files(root) if regenerate_file(path, root)]
