"""Every spec id is exported (and callable) by both packages, unless listed in xfails.toml; every
xfails entry matches a collected test."""

from __future__ import annotations

from typing import Any

import pytest

from ._report import RECORDER
from .conftest import XFAILS_PATH, collection_state


def test_exported(impl_spec: Any) -> None:
    impl, spec = impl_spec.impl, impl_spec.spec
    name = spec.api.get(impl.name)
    where = f"[{impl.name}::{spec.id}]"
    if name is None:
        RECORDER.coverage[(spec.id, impl.name)] = "no api name"
        pytest.fail(f"{where} the spec has no `api.{impl.name}` name")
    try:
        obj = impl.api(spec)
    except (ImportError, AttributeError) as error:
        RECORDER.coverage[(spec.id, impl.name)] = "missing"
        pytest.fail(f"{where} {impl.module} does not export `{name}`: {error}")
    assert callable(obj), f"{where} {impl.module}.{name} is not callable ({type(obj).__name__})"
    exported = getattr(impl.package(), "__all__", None)
    top = name.split(".")[0]
    assert exported is None or top in exported, f"{where} `{top}` is not in {impl.module}.__all__"
    RECORDER.coverage[(spec.id, impl.name)] = name


def test_xfails_entries_match() -> None:
    """An xfails.toml entry that matches no test is stale (array-api-tests style)."""
    state = collection_state()
    if not state["complete"] or state["deselected"]:
        pytest.skip("only checked when the whole conformance suite is collected")
    assert not state["unmatched"], f"{XFAILS_PATH.name}: entries that match no collected test: {state['unmatched']}"
