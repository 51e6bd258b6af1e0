"""Print every closed-form schedule's first spec case as a table (float64 reference values)."""

from __future__ import annotations

import hf_optim_spec as hs
from hf_optim_spec._schedules import bind


def main() -> None:
    for spec in hs.registry().values():
        if spec.kind != "schedule" or spec.program is None or not spec.cases:
            continue
        case = spec.cases[0]
        bound = bind(spec, case.get("params", {}), base_lr=float(case.get("base_lr", 1.0)))
        values = "  ".join(f"{step}:{bound(step):.4g}" for step in case["steps"][:10])
        print(f"{spec.id:28s} {spec.display_name:55s} {values}")


if __name__ == "__main__":
    main()
