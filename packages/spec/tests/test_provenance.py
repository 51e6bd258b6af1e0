"""A transformers cross-check claim holds only for the exact content it was made on; regen honours its root."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from hf_optim_spec._registry import spec_root
from hf_optim_spec._vectors import case_digest, dumps, regenerate


def _tree(tmp_path: Path) -> Path:
    root = tmp_path / "spec"
    shutil.copytree(spec_root(), root)
    return root


def _claim(path: Path, index: int) -> dict:
    raw = json.loads(path.read_text(encoding="utf-8"))
    case = raw["cases"][index]
    case["provenance"] = f"reference+transformers-4.57.6#{case_digest(case)}"
    path.write_text(dumps(raw), encoding="utf-8")
    return raw


def test_a_claim_survives_regeneration_while_the_case_is_unchanged(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    path = root / "optimizers" / "adamw.json"
    _claim(path, 0)
    regenerate(root)
    assert json.loads(path.read_text(encoding="utf-8"))["cases"][0]["provenance"].startswith("reference+transformers-")


def test_a_claim_is_dropped_when_the_cases_inputs_change(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    path = root / "optimizers" / "adamw.json"
    raw = _claim(path, 0)
    raw["cases"][0]["hyperparams"]["lr"] = raw["cases"][0]["hyperparams"].get("lr", 1e-3) * 2
    path.write_text(dumps(raw), encoding="utf-8")
    regenerate(root)
    after = json.loads(path.read_text(encoding="utf-8"))["cases"][0]
    assert after["provenance"] == "reference"


def test_a_claim_is_dropped_when_the_expected_values_change(tmp_path: Path) -> None:
    """The formula (not the case) changed: regeneration changes ``expected``, so the claim no longer holds."""
    root = _tree(tmp_path)
    path = root / "schedules" / "linear.json"
    raw = _claim(path, 0)
    before = list(raw["cases"][0]["expected"])
    text = path.read_text(encoding="utf-8")
    spec = json.loads(text)
    spec["expression"]["result"] = spec["expression"]["result"].replace("max(0.0,", "max(0.5,")
    path.write_text(dumps(spec), encoding="utf-8")
    regenerate(root)
    after = json.loads(path.read_text(encoding="utf-8"))["cases"][0]
    assert after["expected"] != before, "regenerate(root) must evaluate the spec under root"
    assert after["provenance"] == "reference"
