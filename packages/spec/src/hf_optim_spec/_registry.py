"""Load the spec files into a typed, read-only registry."""

from __future__ import annotations

import difflib
import functools
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .formula import FormulaError, Node, Program, parse

__all__ = ["Constraint", "Parameter", "Spec", "Tolerance", "get", "registry", "spec_root", "thaw"]

REQUIRED: Any = type("Required", (), {"__repr__": lambda self: "<required>"})()
"""Sentinel default of a parameter that has none."""

DTYPES = ("float64", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class Tolerance:
    """Allowed difference to the float64 reference: ``|x - ref| <= atol + rtol * |ref|``."""

    rtol: float
    atol: float

    def allowed(self, expected: Any) -> Any:
        """The largest allowed ``|actual - expected|``: ``atol + rtol * |expected|`` (a number or an array)."""
        return self.atol + self.rtol * abs(expected)


@dataclass(frozen=True)
class Parameter:
    """One constructor/factory argument as the spec declares it."""

    name: str
    type: str | tuple[str, ...]
    default: Any = REQUIRED
    nullable: bool = False
    minimum: float | None = None
    exclusive_minimum: float | None = None
    maximum: float | None = None
    exclusive_maximum: float | None = None
    enum: tuple[Any, ...] | None = None
    hf_enforced: bool = True
    extension: bool = False
    allow_inf: bool = False
    framework_names: Mapping[str, str | tuple[str, ...]] = field(default_factory=dict)
    description: str = ""

    @property
    def type_name(self) -> str:
        """The type for display: ``"number"`` or ``"number | schedule"``."""
        return self.type if isinstance(self.type, str) else " | ".join(self.type)

    @property
    def required(self) -> bool:
        """True when the caller must pass a value."""
        return self.default is REQUIRED

    def name_for(self, framework: str | None) -> str | tuple[str, ...]:
        """The spelling used by ``framework`` (a tuple when it splits a pair, e.g. beta_1/beta_2)."""
        if framework is None:
            return self.name
        return self.framework_names.get(framework, self.name)


@dataclass(frozen=True)
class Constraint:
    """A cross-parameter rule: ``when`` is true for bad input."""

    when: Node
    when_text: str
    error: str
    message: str
    hf_enforced: bool = True


@dataclass(frozen=True)
class Spec:
    """One spec file: a schedule, an optimizer or an accumulator."""

    id: str
    kind: str
    hf_name: tuple[str, ...]
    summary: str
    formula: str
    references: tuple[Mapping[str, str], ...]
    parameters: Mapping[str, Parameter]
    constraints: tuple[Constraint, ...]
    variants: Mapping[str, Any]
    api: Mapping[str, str]
    state: tuple[str, ...]
    output: str | None
    stateful: bool
    tolerance: Mapping[str, Tolerance]
    cases: tuple[Mapping[str, Any], ...]
    errors: tuple[Mapping[str, Any], ...]
    program: Program | None
    path: Path
    raw: Mapping[str, Any] = field(repr=False)

    def tol(self, dtype: str) -> Tolerance:
        """The tolerance for ``dtype`` (one of float64, float32, bfloat16, float16)."""
        try:
            return self.tolerance[dtype]
        except KeyError:
            raise KeyError(f"spec {self.id!r} declares no tolerance for dtype {dtype!r}") from None

    @property
    def display_name(self) -> str:
        """The transformers name users know (first of ``hf_name``), or the id."""
        return self.hf_name[0] if self.hf_name else self.id


def spec_root() -> Path:
    """The directory holding the spec files: package data in a wheel, ``<repo>/spec`` in a checkout."""
    packaged = Path(str(resources.files("hf_optim_spec"))) / "_data"
    if (packaged / "schema").is_dir():
        return packaged
    for parent in Path(__file__).resolve().parents:
        candidate = parent / "spec"
        if (candidate / "schema").is_dir():
            return candidate
    raise FileNotFoundError("hf_optim_spec: cannot find the spec files (no _data package dir, no spec/ in a parent)")


def _parameter(name: str, raw: Mapping[str, Any]) -> Parameter:
    names = {k: (tuple(v) if isinstance(v, list) else v) for k, v in raw.get("framework_names", {}).items()}
    return Parameter(
        name=name,
        type=raw["type"] if isinstance(raw["type"], str) else tuple(raw["type"]),
        default=raw.get("default", REQUIRED),
        nullable=raw.get("nullable", False),
        minimum=raw.get("minimum"),
        exclusive_minimum=raw.get("exclusiveMinimum"),
        maximum=raw.get("maximum"),
        exclusive_maximum=raw.get("exclusiveMaximum"),
        enum=tuple(raw["enum"]) if "enum" in raw else None,
        hf_enforced=raw.get("hf_enforced", True),
        extension=raw.get("extension", False),
        allow_inf=raw.get("allow_inf", False),
        framework_names=MappingProxyType(names),
        description=raw.get("description", ""),
    )


def _tolerance(raw: Mapping[str, Any]) -> Mapping[str, Tolerance]:
    return MappingProxyType({dtype: Tolerance(float(t["rtol"]), float(t["atol"])) for dtype, t in raw.items()})


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def thaw(value: Any) -> Any:
    """Spec data as plain, mutable JSON data: the registry's read-only mappings become dicts, tuples and lists
    become lists (recursively); anything else is returned as it is."""
    if isinstance(value, Mapping):
        return {k: thaw(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [thaw(v) for v in value]
    return value


def load_spec(path: Path) -> Spec:
    """Parse one spec file (schema validation is separate: ``hf_optim_spec.check``)."""
    raw = json.loads(path.read_text(encoding="utf-8"), parse_constant=lambda c: math.nan)
    spec_id = raw["id"]
    parameters = {name: _parameter(name, p) for name, p in raw.get("parameters", {}).items()}
    program = None
    expression = raw.get("expression")
    if expression is not None:
        program = Program(
            expression.get("values", {}),
            expression["result"],
            {name: p.type if isinstance(p.type, str) else "|".join(p.type) for name, p in parameters.items()},
            where=spec_id,
        )
    constraints = []
    for c in raw.get("constraints", []):
        try:
            node = parse(c["when"])
        except FormulaError as err:
            raise FormulaError(f"{spec_id}: constraint {c['when']!r}: {err}") from None
        constraints.append(
            Constraint(node, c["when"], c.get("error", "ValueError"), c["message"], c.get("hf_enforced", True))
        )
    hf_name = raw.get("hf_name", [])
    return Spec(
        id=spec_id,
        kind=raw["kind"],
        hf_name=tuple([hf_name] if isinstance(hf_name, str) else hf_name),
        summary=raw.get("summary", ""),
        formula=raw.get("formula", ""),
        references=_freeze(raw.get("references", [])),
        parameters=MappingProxyType(parameters),
        constraints=tuple(constraints),
        variants=_freeze(raw.get("variants", {})),
        api=_freeze(raw.get("api", {})),
        state=tuple(raw.get("state", ())),
        output=raw.get("output"),
        stateful=bool(raw.get("stateful", False)),
        tolerance=_tolerance(raw.get("tolerance", {})),
        cases=_freeze(raw.get("cases", [])),
        errors=_freeze(raw.get("errors", [])),
        program=program,
        path=path,
        raw=_freeze(raw),
    )


def spec_files(root: Path | None = None) -> list[Path]:
    """Every spec file under ``root`` (schemas excluded), sorted."""
    root = root or spec_root()
    return sorted(p for p in root.glob("*/*.json") if p.parent.name != "schema")


@functools.lru_cache(maxsize=1)
def registry() -> Mapping[str, Spec]:
    """Every spec, keyed by id. Loaded once per process; read-only."""
    specs: dict[str, Spec] = {}
    for path in spec_files():
        spec = load_spec(path)
        if spec.id in specs:
            raise ValueError(f"duplicate spec id {spec.id!r}: {specs[spec.id].path} and {path}")
        if path.stem != spec.id:
            raise ValueError(f"spec file {path} holds id {spec.id!r}; the file must be named {spec.id}.json")
        specs[spec.id] = spec
    return MappingProxyType(dict(sorted(specs.items())))


def get(spec_id: str) -> Spec:
    """The spec with this id.

    Raises:
      KeyError: unknown id; the message lists the closest valid ids.
    """
    specs = registry()
    try:
        return specs[spec_id]
    except KeyError:
        close = difflib.get_close_matches(str(spec_id), list(specs), n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else f" Known ids: {', '.join(specs)}."
        raise KeyError(f"Unknown spec id {spec_id!r}.{hint}") from None
