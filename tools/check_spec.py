"""Validate every spec file against its JSON Schema and the spec style rules (``nox -s spec``).

Style rules (JSON-Schema-Test-Suite's description checks, adapted):
- case and error descriptions are unique per file, at most 70 characters, and say what happens
  (no "should", no "test");
- summaries are one line of at most 150 characters;
- every case has its generated fields (the drift check proves they are current);
- every file declares a tolerance for each dtype and an exported name in both frameworks.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

from hf_optim_spec._registry import DTYPES, load_spec, spec_files, spec_root
from jsonschema import Draft202012Validator
from jsonschema.validators import validator_for
from referencing import Registry, Resource

SCHEMA_FOR = {"schedule": "schedule", "optimizer": "optimizer", "accumulator": "accumulator"}
BANNED = re.compile(r"\b(should|test|tests|testing)\b", re.IGNORECASE)
GENERATED = {"schedule": ("expected",), "optimizer": ("params0", "grads", "expected"), "accumulator": ("expected",)}


def _schemas(root: Path) -> tuple[dict[str, dict], Registry]:
    schemas = {p.stem.replace(".schema", ""): json.loads(p.read_text()) for p in (root / "schema").glob("*.json")}
    registry = Registry().with_resources(
        [(p.name, Resource.from_contents(json.loads(p.read_text()))) for p in (root / "schema").glob("*.json")]
    )
    for _name, schema in schemas.items():
        validator_for(schema).check_schema(schema)
    return schemas, registry


def check_file(path: Path, schemas: dict[str, dict], registry: Registry) -> list[str]:
    problems: list[str] = []
    raw = json.loads(path.read_text())
    kind = raw.get("kind")
    if kind not in SCHEMA_FOR:
        return [f"{path}: unknown kind {kind!r}"]
    validator = Draft202012Validator(schemas[SCHEMA_FOR[kind]], registry=registry)
    for error in sorted(validator.iter_errors(raw), key=lambda e: list(e.absolute_path)):
        location = "/".join(str(p) for p in error.absolute_path) or "<root>"
        problems.append(f"{path.name}: {location}: {error.message}")
    if problems:
        return problems
    try:
        load_spec(path)
    except Exception as err:
        problems.append(f"{path.name}: does not load: {err}")
    summary = raw.get("summary", "")
    if "\n" in summary or len(summary) > 150:
        problems.append(f"{path.name}: summary must be one line of <= 150 characters")
    missing = [d for d in DTYPES if d not in raw.get("tolerance", {})]
    if missing:
        problems.append(f"{path.name}: no tolerance for {', '.join(missing)}")
    for framework in ("torch", "tf"):
        if framework not in raw.get("api", {}):
            problems.append(f"{path.name}: no exported name for {framework} in `api`")
    for section in ("cases", "errors"):
        seen: set[str] = set()
        for index, item in enumerate(raw.get(section, [])):
            description = item.get("description", "")
            where = f"{path.name}: {section}[{index}] {description!r}"
            if description in seen:
                problems.append(f"{where}: duplicate description")
            seen.add(description)
            if len(description) > 70:
                problems.append(f"{where}: description longer than 70 characters")
            if BANNED.search(description):
                problems.append(f"{where}: describe what happens, without 'should'/'test'")
            if section == "cases":
                for key in GENERATED[kind]:
                    if key not in item or item[key] in ([], None):
                        problems.append(f"{where}: generated field `{key}` is empty; run `nox -s regen`")
    return problems


def main() -> int:
    root = spec_root()
    schemas, registry = _schemas(root)
    files = spec_files(root)
    problems = [p for path in files for p in check_file(path, schemas, registry)]
    for problem in problems:
        print(problem)
    print(f"checked {len(files)} spec files: {len(problems)} problem(s)")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
