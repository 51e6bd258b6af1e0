"""The ``plot`` command: curves as CSV columns and as one figure."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import TextIO

from ._curves import Curve, build_curves, default_horizon, sample_steps
from ._errors import CliError
from ._explain import analyse
from ._request import parse_request
from ._values import show_value

__all__ = ["cmd_plot", "plot_data", "write_csv", "y_label"]


def _varying(curves: Sequence[Curve]) -> list[str]:
    """Parameters whose value differs between the curves (the legend shows these)."""
    names: list[str] = []
    for c in curves:
        for name in c.given:
            values = {show_value(o.params.get(name, "<unset>")) for o in curves}
            if len(values) > 1 and name not in names:
                names.append(name)
    return names


def _common(curves: Sequence[Curve]) -> str:
    """Parameters every curve was given with the same value (the title shows these)."""
    varying = _varying(curves)
    shared = [n for n in curves[0].given if n not in varying and all(n in c.given for c in curves)]
    return ", ".join(f"{n}={show_value(curves[0].params[n])}" for n in shared)


def plot_data(curves: Sequence[Curve], steps_option: int | None) -> tuple[list[int], list[tuple[str, list[float]]]]:
    horizon = steps_option if steps_option is not None else max(default_horizon(c) for c in curves)
    steps = sample_steps(horizon)
    varying = _varying(curves)
    columns = []
    for c in curves:
        values = c.values(steps)
        label = c.label(varying)
        columns.append((label, values))
    if any(c.metrics is not None for c in curves):
        length = max(len(v) for _, v in columns)
        steps = list(range(length))
    return steps, columns


def y_label(curves: Sequence[Curve]) -> str:
    if all(c.spec.output == "factor" and c.scale == 1.0 for c in curves):
        return "lr factor (x optimizer lr)"
    return "learning rate"


def write_csv(steps: Sequence[int], columns: Sequence[tuple[str, Sequence[float]]], out: TextIO) -> None:
    header = ["step", *(label for label, _ in columns)]
    print(",".join(_csv_cell(h) for h in header), file=out)
    for index, step in enumerate(steps):
        cells = [str(step)] + [repr(float(col[index])) if index < len(col) else "" for _, col in columns]
        print(",".join(cells), file=out)


def _csv_cell(text: str) -> str:
    return f'"{text}"' if ("," in text or '"' in text) else text


def cmd_plot(tokens: Sequence[str], out: TextIO) -> None:
    request = parse_request(tokens)
    curves = build_curves(request)
    steps, columns = plot_data(curves, request.steps)
    if request.csv is not None:
        if request.csv == "-":
            write_csv(steps, columns, out)
        else:
            with open(request.csv, "w", encoding="utf-8") as handle:
                write_csv(steps, columns, handle)
            print(f"wrote {request.csv}", file=sys.stderr)
    if request.output is None:
        if request.csv is None:
            raise CliError("give -o FILE.png for the figure, or --csv for the numbers")
        return
    from .._plot import Panel, PlotUnavailable, Series, render

    vlines: list[tuple[float, str]] = []
    if len(curves) == 1:
        for phase in analyse(curves[0], steps[-1]).phases[1:]:
            if phase.start <= steps[-1]:
                vlines.append((phase.start, f"step {phase.start}"))
    ids = list(dict.fromkeys(c.spec.id for c in curves))
    title = request.title or (curves[0].spec.display_name if len(ids) == 1 else ", ".join(ids))
    common = _common(curves)
    if common and not request.title:
        title += f"\n{common}"
    panel = Panel(
        [Series(label, steps[: len(values)], values) for label, values in columns],
        xlabel="metric #" if any(c.metrics is not None for c in curves) else "step",
        ylabel=y_label(curves),
        log_y=request.log,
        vlines=tuple(vlines),
    )
    try:
        render([panel], request.output, title=title)
    except PlotUnavailable as err:
        raise CliError(str(err)) from None
    print(f"wrote {request.output}", file=sys.stderr)
