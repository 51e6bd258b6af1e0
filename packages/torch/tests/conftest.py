"""Fixtures shared by the native kernel's test files."""

from __future__ import annotations

import shutil
from typing import Any

import pytest
from hf_optim_torch import _native


@pytest.fixture
def kernel() -> Any:
    """The compiled Adafactor kernel (skipped, with the reason, where no C compiler can build it)."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler on this machine: the native kernel cannot be built (the torch paths run)")
    lib = _native.adafactor_library()
    assert lib is not None, _native.status()
    return lib
