"""The conformance report's drift check (``nox -s conformance``): the report a run wrote against the committed one.

``conformance/_report.py`` writes ``docs/conformance.md`` (``docs/conformance-<backend>.md`` for Keras' other
backends) at the end of every complete run. This compares the written file with the one in git's ``HEAD`` and fails
where they differ in anything but the measured numbers: the sections, every row (spec id, framework, dtype,
property) and every count (cases, steps, examples passed). So the committed report lists what the suite runs today:
a case, a framework, a dtype or a check added or removed without the report being written again fails here. The
measured numbers (errors, ulps, how many learning rates are bit-identical) are compared too, but only reported: the
last bits of a float32 result may depend on the machine's vector width (torch's CPU kernels, the native Adafactor
kernel compiled for the CPU it runs on), and a report written on one machine is committed for all. A run that wrote
no report (a selection of tests, ``-x``) leaves the file as committed, which passes.

Usage: ``python tools/check_report.py docs/conformance.md`` (from the repository root).
"""

from __future__ import annotations

import difflib
import subprocess
import sys
from pathlib import Path

#: the columns whose values are measured (compared and reported, never failed on)
MEASURED = {
    "max abs error",
    "max rel error",
    "max ulp (lr vs reference)",
    "bit-identical",
    "% bit-identical",
    "max ulp",
    "max abs difference",
    "max rel difference",
}
_MASK = "(measured)"


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def split(text: str) -> tuple[list[str], int]:
    """The report's lines with every measured cell replaced by a mask, and the count of measured cells."""
    lines: list[str] = []
    measured, masked = 0, None  # masked: the measured columns of the table being read (None outside a table)
    for row in text.splitlines():
        line = row
        if not line.startswith("|"):
            masked = None  # a table ends at the first line that is not a row
        elif masked is None:  # a table's header row
            masked = {i for i, name in enumerate(_cells(line)) if name in MEASURED}
        elif masked and not line.startswith("|---"):
            cells = _cells(line)
            measured += sum(1 for i in masked if i < len(cells))
            line = "| " + " | ".join(_MASK if i in masked else cell for i, cell in enumerate(cells)) + " |"
        lines.append(line)
    return lines, measured


def committed(path: str) -> str | None:
    """The file as git's ``HEAD`` holds it; None (with the reason printed) where there is no such version."""
    done = subprocess.run(["git", "show", f"HEAD:{path}"], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        print(f"check_report: no committed {path} to compare with: {done.stderr.strip() or 'git failed'}")
        return None
    return done.stdout


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__)
        return 2
    path = argv[0]
    before = committed(path)
    if before is None:
        return 1
    written = Path(path).read_text(encoding="utf-8")
    if written == before:
        print(f"check_report: {path} is as committed")
        return 0
    old, _ = split(before)
    new, measured = split(written)
    if old != new:
        diff = difflib.unified_diff(old, new, f"HEAD:{path}", path, n=1, lineterm="")
        print("\n".join(diff))
        print(
            f"check_report: {path} as this run wrote it lists other rows or counts than the committed one (diff "
            "above, measured numbers masked): commit the report this run wrote"
        )
        return 1
    changed = sum(a != b for a, b in zip(before.splitlines(), written.splitlines()))
    print(
        f"check_report: {path}: the same rows and counts as committed; {changed} line(s) of measured numbers "
        f"differ (of {measured} measured cells; `git diff {path}` shows them; the last bits may depend on the machine)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
