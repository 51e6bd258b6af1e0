"""Ship the repository's spec/ directory inside hf-optim-spec.

From the source tree the files are at ../../spec; from an unpacked sdist they are at ./spec.
Wheels put them at hf_optim_spec/_data, where hf_optim_spec.spec_root() looks first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface


class SpecDataHook(BuildHookInterface):  # type: ignore[type-arg]
    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        if version == "editable":  # an editable install reads the live spec/ of the checkout
            return
        root = Path(self.root)
        source = root / "spec" if (root / "spec" / "schema").is_dir() else root.parent.parent / "spec"
        if not (source / "schema").is_dir():
            raise FileNotFoundError(f"hf-optim-spec: no spec directory at {source}")
        target = "hf_optim_spec/_data" if self.target_name == "wheel" else "spec"
        build_data["force_include"][str(source)] = target
