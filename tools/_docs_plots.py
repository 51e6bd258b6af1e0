"""The plots of the generated reference pages (tools/gen_docs.py): one PNG per schedule or optimizer spec.

Schedules show the float64 curve of their first distinct vector cases; optimizers the float64 trajectory
of their first case. A PNG carries a hash of what it shows (``hf_optim_spec._plot``) and is re-rendered
only when that hash changes (or when forced).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import hf_optim_spec as hs
from hf_optim_spec import cli
from hf_optim_spec._plot import Panel, Series, data_hash, png_description, render

MAX_PANELS = 4
PLOT = {"columns": 2, "width": 7.0, "panel_height": 2.4, "dpi": 80}


def _distinct_cases(spec: hs.Spec) -> list[Mapping[str, Any]]:
    seen: list[str] = []
    chosen = []
    for case in spec.cases:
        key = json.dumps(hs.thaw(case.get("params", {})), sort_keys=True) + repr(case.get("base_lr"))
        if key in seen:
            continue
        seen.append(key)
        chosen.append(case)
        if len(chosen) == MAX_PANELS:
            break
    return chosen


def schedule_panels(spec: hs.Spec) -> tuple[list[Panel], list[str]]:
    """One panel per distinct vector case: the float64 curve over every step, the vector points on it."""
    panels, captions = [], []
    for case in _distinct_cases(spec):
        params = hs.thaw(case.get("params", {}))
        base_lr = case.get("base_lr")
        if spec.stateful:
            c = cli.curve(spec, params, base_lr=base_lr, metrics=case["metrics"])
            xs = list(range(len(case["metrics"])))
            series = [Series("lr after each metric", xs, c.values(xs))]
            xlabel = "metric #"
        else:
            c = cli.curve(spec, params, base_lr=base_lr)
            steps = cli.sample_steps(max(*case["steps"], 1))
            points = sorted(s for s in set(case["steps"]) if s <= steps[-1])
            series = [
                Series("float64 reference", steps, c.values(steps)),
                Series("vector steps", points, c.values(points), "o"),
            ]
            xlabel = "step"
        shown = ", ".join(f"{k}={cli.show_value(v)}" for k, v in params.items()) or "defaults"
        lr = f"; base lr {cli.show_value(base_lr)}" if base_lr is not None and spec.output == "factor" else ""
        if panels:  # the legend of the first panel explains the line and the dots of all
            series = [Series("", se.x, se.y, se.style) for se in series]
        panels.append(Panel(series, title=_wrap(case["description"]), xlabel=xlabel, ylabel=cli.y_label([c])))
        captions.append(f"{case['description']} ({shown}{lr})")
    return panels, captions


def _wrap(text: str, width: int = 60) -> str:
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    return "\n".join(lines)


def optimizer_panels(spec: hs.Spec) -> tuple[list[Panel], list[str]]:
    """The first case's float64 trajectory: how far a few elements of each parameter moved, step by step."""
    if not spec.cases or not spec.cases[0].get("expected"):
        return [], []  # the vectors are not generated yet (`nox -s regen`)
    case = hs.thaw(spec.cases[0])
    params0 = case["params0"]
    trajectory = case["expected"]["params"]
    panels: list[Panel] = []
    for name in list(params0)[:2]:
        first = _flat(params0[name])[:4]
        columns = [[0.0, *(_flat(step[name])[i] - v for step in trajectory)] for i, v in enumerate(first)]
        xs = list(range(len(trajectory) + 1))
        series = [Series(f"{name}[{i}]", xs, col) for i, col in enumerate(columns)]
        panels.append(
            Panel(series, title=f"parameter {name}: change from its initial value", xlabel="step", ylabel="p - p0")
        )
    return panels, [f"{case['description']} (float64 reference, {case.get('dtype', 'float32')} case)"]


def _flat(value: Any) -> list[float]:
    if isinstance(value, (list, tuple)):
        return [x for item in value for x in _flat(item)]
    return [float(value)]


def spec_panels(spec: hs.Spec) -> tuple[list[Panel], list[str]]:
    """The panels of a spec's figure and a caption per plotted case (none for kinds without a plot)."""
    if spec.kind == "schedule":
        return schedule_panels(spec)
    if spec.kind == "optimizer":
        return optimizer_panels(spec)
    return [], []


def write_plot(spec: hs.Spec, panels: Sequence[Panel], directory: Path, force: bool) -> Path | None:
    """Render ``<directory>/<id>.png`` unless it already shows exactly these panels; None when there is no plot."""
    if not panels:
        return None
    path = directory / f"{spec.id}.png"
    columns = min(PLOT["columns"], len(panels))
    layout = {**PLOT, "columns": columns, "title": ""}
    digest = data_hash(panels, **layout)
    if force or png_description(path) != digest:
        render(
            panels,
            path,
            columns=columns,
            width=PLOT["width"] if columns > 1 else PLOT["width"] / 1.6,
            panel_height=PLOT["panel_height"],
            dpi=PLOT["dpi"],
            description=digest,
        )
    return path
