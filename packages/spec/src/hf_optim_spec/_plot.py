"""Deterministic line plots for the ``hf-optim`` CLI, the generated docs and the demo.

matplotlib is imported lazily (it is the optional ``plot`` extra of hf-optim-spec). Figures are
rendered with the Agg backend at a fixed DPI and saved without the "Software" text chunk, so the
same data always gives the same PNG bytes with the same matplotlib. Each PNG also carries a
``Description`` text chunk holding a hash of what was plotted: :func:`png_description` reads it
back, which lets ``tools/gen_docs.py`` skip re-rendering an unchanged plot.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["Panel", "PlotUnavailable", "Series", "data_hash", "png_description", "render"]

STYLE_VERSION = "1"
"""Bump when the look of the figures changes, so every cached plot is re-rendered."""


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


@dataclass(frozen=True)
class Series:
    """One curve: ``y[i]`` at ``x[i]``."""

    label: str
    x: Sequence[float]
    y: Sequence[float]
    style: str = "-"


@dataclass(frozen=True)
class Panel:
    """One axes of a figure."""

    series: Sequence[Series]
    title: str = ""
    xlabel: str = "step"
    ylabel: str = ""
    log_y: bool = False
    vlines: Sequence[tuple[float, str]] = field(default_factory=tuple)


def data_hash(panels: Sequence[Panel], **layout: Any) -> str:
    """A stable hash of everything a figure shows (data, labels, layout, style version)."""
    payload = {
        "style": STYLE_VERSION,
        "layout": layout,
        "panels": [
            {
                "title": p.title,
                "xlabel": p.xlabel,
                "ylabel": p.ylabel,
                "log_y": p.log_y,
                "vlines": [list(v) for v in p.vlines],
                "series": [
                    {
                        "label": s.label,
                        "style": s.style,
                        "x": [repr(float(v)) for v in s.x],
                        "y": [repr(float(v)) for v in s.y],
                    }
                    for s in p.series
                ],
            }
            for p in panels
        ],
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
    return "hf-optim-plot sha256:" + hashlib.sha256(text.encode()).hexdigest()


def png_description(path: Path) -> str | None:
    """The ``Description`` text chunk of a PNG file, or None (no file, not a PNG, no chunk)."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return None
    offset = 8
    while offset + 8 <= len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        if kind == b"tEXt" and b"\x00" in body:
            key, _, value = body.partition(b"\x00")
            if key == b"Description":
                return value.decode("latin-1")
        elif kind == b"zTXt" and b"\x00" in body:
            key, _, rest = body.partition(b"\x00")
            if key == b"Description":
                return zlib.decompress(rest[1:]).decode("latin-1")
        elif kind == b"IEND":
            break
        offset += 12 + length
    return None


def _pyplot() -> tuple[Any, Any]:
    """(matplotlib, matplotlib.pyplot) on the Agg backend, typed loosely (matplotlib is optional)."""
    try:
        matplotlib: Any = importlib.import_module("matplotlib")
    except ImportError:  # pragma: no cover - depends on the environment
        raise PlotUnavailable(
            "plotting needs matplotlib: pip install 'hf-optim-spec[plot]' (or pip install matplotlib); "
            "use --csv for the numbers without it"
        ) from None
    matplotlib.use("Agg", force=True)
    return matplotlib, importlib.import_module("matplotlib.pyplot")


def render(
    panels: Sequence[Panel],
    path: str | Path,
    *,
    title: str = "",
    columns: int = 1,
    width: float = 6.4,
    panel_height: float = 3.2,
    dpi: int = 100,
    description: str | None = None,
) -> str:
    """Draw ``panels`` into the PNG file ``path``; returns the data hash stored in it.

    Deterministic: Agg backend, fixed size and DPI, fixed rcParams, no Software/date metadata.
    """
    matplotlib, plt = _pyplot()

    description = description or data_hash(
        panels, title=title, columns=columns, width=width, panel_height=panel_height, dpi=dpi
    )
    rows = -(-len(panels) // columns)
    style: dict[str, Any] = {
        "font.size": 8,
        "axes.titlesize": 8,
        "axes.labelsize": 8,
        "legend.fontsize": 7,
        "xtick.labelsize": 7,
        "ytick.labelsize": 7,
        "axes.grid": True,
        "grid.alpha": 0.3,
        "lines.linewidth": 1.4,
        "svg.hashsalt": "hf-optim",
        "path.simplify": False,
    }
    with matplotlib.rc_context(style):
        fig, axes = plt.subplots(
            rows, columns, figsize=(width, panel_height * rows), squeeze=False, layout="constrained"
        )
        try:
            for index, ax in enumerate(axes.flat):
                if index >= len(panels):
                    ax.set_visible(False)
                    continue
                _draw(ax, panels[index])
            if title:
                fig.suptitle(title, fontsize=9)
            fig.savefig(
                path,
                dpi=dpi,
                format="png",
                metadata={"Software": None, "Description": description},
            )
        finally:
            plt.close(fig)
    return description


_DASHES = ("-", "--", "-.", ":")


def _draw(ax: Any, panel: Panel) -> None:
    lines = 0
    for series in panel.series:
        if series.style == "o":  # points only: e.g. the steps a spec vector pins
            ax.plot(
                list(series.x),
                list(series.y),
                linestyle="none",
                marker="o",
                markersize=3,
                color="black",
                label=series.label,
                zorder=3,
            )
            continue
        marker = "o" if len(series.x) <= 40 else None
        style = series.style if series.style != "-" else _DASHES[lines % len(_DASHES)]
        ax.plot(list(series.x), list(series.y), linestyle=style, label=series.label, marker=marker, markersize=2.5)
        lines += 1
    for x, label in panel.vlines:
        ax.axvline(x, color="0.5", linestyle=":", linewidth=1.0)
        ax.annotate(
            label,
            (x, 0.02),
            xycoords=("data", "axes fraction"),
            fontsize=6,
            color="0.35",
            rotation=90,
            ha="right",
            va="bottom",
        )
    if panel.log_y:
        ax.set_yscale("log")
    ax.set_title(panel.title)
    ax.set_xlabel(panel.xlabel)
    ax.set_ylabel(panel.ylabel)
    labelled = [s for s in panel.series if s.label]
    if len(labelled) > 2 or any(len(s.label) > 40 for s in labelled):
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False, ncol=2 if len(labelled) > 3 else 1)
    elif labelled:
        ax.legend(loc="best", frameon=False)
