"""Generate the reference pages of the docs from the spec (``nox -s docs``; drift-checked by ``nox -s spec``).

Writes, and owns entirely:

- ``docs/reference/<id>.md``: one page per spec file, titled by its transformers name (formula,
  parameters and defaults, the plot, the transformers names, differences from transformers, variants,
  references, vector cases); the text comes from ``tools/_docs_pages.py``;
- ``docs/reference/img/<id>.png``: the plots (schedules: the curves of their first vector cases;
  optimizers: the float64 reference trajectory of their first case), from ``tools/_docs_plots.py``;
- ``docs/reference/index.md`` and ``docs/cli.md`` (the ``hf-optim`` usage and a live ``explain``).

Deterministic: same spec -> same bytes. A PNG carries a hash of what it shows (see
``hf_optim_spec._plot``) and is re-rendered only when that hash changes, so regeneration is fast and
does not depend on the matplotlib build when nothing changed. ``--force`` re-renders every plot.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import hf_optim_spec as hs
from _docs_pages import ROOT, cli_page, index_page, rel, spec_page
from _docs_plots import spec_panels, write_plot
from hf_optim_spec._plot import png_description

DOCS = ROOT / "docs"
REFERENCE = DOCS / "reference"
IMAGES = REFERENCE / "img"


def write(path: Path, text: str) -> bool:
    """Write ``text`` unless the file already holds it; True when the file changed."""
    if path.exists() and path.read_text(encoding="utf-8") == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return True


def generate(force: bool) -> tuple[int, list[Path]]:
    """Bring every generated file up to date and delete stale ones: (number of specs, changed paths)."""
    IMAGES.mkdir(parents=True, exist_ok=True)
    specs = list(hs.registry().values())
    expected: set[Path] = set()
    changed: list[Path] = []
    for spec in specs:
        panels, captions = spec_panels(spec)
        before = png_description(IMAGES / f"{spec.id}.png")
        image = write_plot(spec, panels, IMAGES, force)
        if image is not None:
            expected.add(image)
            if png_description(image) != before:
                changed.append(image)
        page = REFERENCE / f"{spec.id}.md"
        expected.add(page)
        if write(page, spec_page(spec, image, captions)):
            changed.append(page)
    for path, text in ((REFERENCE / "index.md", index_page(specs)), (DOCS / "cli.md", cli_page())):
        expected.add(path)
        if write(path, text):
            changed.append(path)
    for stale in [*REFERENCE.glob("*.md"), *IMAGES.glob("*.png")]:
        if stale not in expected:
            stale.unlink()
            changed.append(stale)
    return len(specs), changed


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--force", action="store_true", help="re-render every plot")
    count, changed = generate(parser.parse_args(argv).force)
    print("".join(f"gen_docs: wrote {rel(path)}\n" for path in changed), end="")
    print(f"gen_docs: {count} specs, {len(changed)} file(s) changed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
