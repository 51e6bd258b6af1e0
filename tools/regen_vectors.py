"""Recompute every generated field of the spec files from the float64 references (``nox -s regen``)."""

from __future__ import annotations

import sys

from hf_optim_spec._vectors import regenerate


def main() -> int:
    changed = regenerate()
    for path in changed:
        print(f"regenerated {path}")
    print(f"{len(changed)} spec file(s) changed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
