"""Parametrization of the conformance suite: IMPLS x registry() x cases, driven by the spec alone.

A test asks for one of these arguments and gets one test per combination, with the id
``framework::spec_id::case description`` (``torch-vs-tf::...`` for side-by-side tests):

=====================  ==========================================================
argument               values
=====================  ==========================================================
``schedule_case``      Item(impl, spec, index) for every schedule case
``optimizer_case``     Item(impl, spec, index) for every optimizer case
``accumulator_case``   Item(impl, spec, index) for every accumulator case
``error_case``         Item(impl, spec, index) for every spec ``errors`` entry
``impl_spec``          Item(impl, spec) for every spec
``schedule_pair``      Item(None, spec, index) for every schedule case
``optimizer_pair``     Item(None, spec, index) for every optimizer case
``error_pair``         Item(None, spec, index) for every spec ``errors`` entry
``closed_form_spec_id``  the id of every schedule spec with an expression
``optimizer_spec_id``  the id of every optimizer spec
``any_spec``           every spec
=====================  ==========================================================

Adding a spec file adds its tests; nothing here names a spec. Expected failures are data:
``conformance/xfails.toml`` maps a test name pattern (``*`` wildcard) to the reason.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hf_optim_spec as hs
import pytest
import tomllib

from ._impls import BACKEND_WARNINGS, IMPLS, Impl
from ._report import RECORDER, keras_backend, report_path

HERE = Path(__file__).resolve().parent
XFAILS_PATH = HERE / "xfails.toml"

# TensorFlow's C++ logging would otherwise flood the output (import happens in the tests).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_configure(config: pytest.Config) -> None:
    """Ignore the warnings of Keras' other backends that are not ours (``BACKEND_WARNINGS``), if any."""
    for message, category in BACKEND_WARNINGS.get(os.environ.get("KERAS_BACKEND", "tensorflow"), ()):
        config.addinivalue_line("filterwarnings", f"ignore:{re.escape(message)}:{category.__name__}")


@dataclass(frozen=True)
class Item:
    """One parametrization: an implementation (None for side-by-side), a spec, a case index."""

    impl: Impl | None
    spec: hs.Spec
    index: int | None = None
    source: str = "cases"

    @property
    def case(self) -> Any:
        assert self.index is not None
        return getattr(self.spec, self.source)[self.index]

    @property
    def id(self) -> str:
        framework = self.impl.name if self.impl is not None else "torch-vs-tf"
        parts = [framework, self.spec.id]
        if self.index is not None:
            parts.append(str(self.case.get("description", f"{self.source}[{self.index}]")))
        return "::".join(parts)


def _specs(kind: str | None = None) -> list[hs.Spec]:
    return [s for s in hs.registry().values() if kind is None or s.kind == kind]


def _per_case(kind: str, *, impls: bool = True, source: str = "cases") -> list[Item]:
    """One item per case (and framework); a case a framework cannot run (``Impl.runs``: a stateful case with
    several param groups in Keras) has no item for it, nor a side-by-side one."""
    items = []
    for spec in _specs(kind):
        for index, case in enumerate(getattr(spec, source)):
            able = [impl for impl in IMPLS.values() if source != "cases" or impl.runs(spec, case)]
            if impls:
                items += [Item(impl, spec, index, source) for impl in able]
            elif len(able) == len(IMPLS):
                items.append(Item(None, spec, index, source))
    return items


GENERATORS: dict[str, Callable[[], list[Any]]] = {
    "schedule_case": lambda: _per_case("schedule"),
    "optimizer_case": lambda: _per_case("optimizer"),
    "accumulator_case": lambda: _per_case("accumulator"),
    "error_case": lambda: _per_case(None, source="errors"),  # type: ignore[arg-type]
    "impl_spec": lambda: [Item(impl, spec) for spec in _specs() for impl in IMPLS.values()],
    "schedule_pair": lambda: _per_case("schedule", impls=False),
    "optimizer_pair": lambda: _per_case("optimizer", impls=False),
    "error_pair": lambda: _per_case(None, impls=False, source="errors"),  # type: ignore[arg-type]
    # ids, not Spec objects: Hypothesis reprs the arguments of a failing example, and a Spec's repr is huge
    "closed_form_spec_id": lambda: [s.id for s in _specs("schedule") if s.program is not None],
    "optimizer_spec_id": lambda: [s.id for s in _specs("optimizer")],
    "any_spec": _specs,
}


def _ident(value: Any) -> str:
    return value.id if isinstance(value, (Item, hs.Spec)) else str(value)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    for name, generate in GENERATORS.items():
        if name in metafunc.fixturenames:
            values = generate()
            metafunc.parametrize(name, values, ids=[_ident(v) for v in values])


# --------------------------------------------------------------------------- xfails (data, not code)


def load_xfails(backend: str | None = None) -> dict[str, str]:
    """``{test name pattern: reason}`` from xfails.toml (``[xfail]`` table; ``*`` matches anything), plus the
    ``[backend.<name>]`` table's ``xfail`` names (with its one ``reason``) when Keras runs on that backend
    (``KERAS_BACKEND``; ``nox -s conformance_backends``)."""
    if not XFAILS_PATH.exists():
        return {}
    data = tomllib.loads(XFAILS_PATH.read_text(encoding="utf-8"))
    table = dict(data.get("xfail", {}))
    bad = [k for k, v in table.items() if not isinstance(v, str) or not v.strip()]
    backend = os.environ.get("KERAS_BACKEND", "tensorflow") if backend is None else backend
    on_backend = data.get("backend", {}).get(backend, {})
    reason = on_backend.get("reason", "")
    if on_backend and (not isinstance(reason, str) or not reason.strip()):
        bad.append(f"[backend.{backend}] reason")
    table.update(dict.fromkeys(on_backend.get("xfail", []), f"Keras on {backend}: {reason}"))
    if bad:
        raise pytest.UsageError(f"{XFAILS_PATH}: every entry needs a non-empty reason string: {bad}")
    return table


def _pattern(text: str) -> re.Pattern[str]:
    return re.compile("^" + ".*".join(re.escape(part) for part in text.split("*")) + "$")


_STATE: dict[str, Any] = {"complete": False, "unmatched": [], "deselected": False}


def _test_modules() -> set[str]:
    return {p.name for p in HERE.glob("test_*.py")}


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark xfails (strict) and note entries that match no collected test (checked by test_coverage)."""
    ours = [item for item in items if Path(str(item.fspath)).resolve().parent == HERE]
    xfails = load_xfails()
    RECORDER.xfails = dict(xfails)
    compiled = {text: _pattern(text) for text in xfails}
    matched: set[str] = set()
    for item in ours:
        for text, pattern in compiled.items():
            if pattern.match(item.name):
                matched.add(text)
                item.add_marker(pytest.mark.xfail(reason=xfails[text], strict=True))
    collected = {Path(str(item.fspath)).name for item in ours}
    _STATE["complete"] = _test_modules() <= collected
    _STATE["unmatched"] = sorted(set(xfails) - matched)


def pytest_deselected(items: list[pytest.Item]) -> None:
    if items:
        _STATE["deselected"] = True


def collection_state() -> dict[str, Any]:
    return _STATE


# --------------------------------------------------------------------------- the report


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Write docs/conformance.md after a run of the whole suite (not after a selection)."""
    config = session.config
    selective = bool(config.option.keyword or config.option.markexpr or _STATE["deselected"])
    interrupted = exitstatus in (
        pytest.ExitCode.INTERRUPTED,
        pytest.ExitCode.INTERNAL_ERROR,
        pytest.ExitCode.USAGE_ERROR,
    )
    partial = bool(config.option.maxfail) or config.option.collectonly
    target = os.environ.get("HF_OPTIM_CONFORMANCE_REPORT", "1")
    if target not in ("0", "1"):  # a path: the report of whatever ran (a selection too), e.g. a run on CUDA
        if not (interrupted or config.option.collectonly):
            text = RECORDER.markdown(selection=selective or partial, backend=keras_backend())
            Path(target).write_text(text, encoding="utf-8")
        return
    if partial or selective or interrupted or not _STATE["complete"] or target == "0":
        return
    backend = keras_backend()  # each Keras backend has its own report: docs/conformance[-<backend>].md
    path = report_path(backend)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(RECORDER.markdown(backend=backend), encoding="utf-8")


def iter_items(name: str) -> Iterator[Any]:
    """Every parametrization value of ``name`` (used by aggregate tests)."""
    yield from GENERATORS[name]()
