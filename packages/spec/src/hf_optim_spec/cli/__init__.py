"""``hf-optim``: list, show, plot and explain the schedules and optimizers of the spec.

Everything is driven by the spec registry: the parameter types of a spec decide how ``--NAME VALUE``
is parsed, the float64 reference evaluates the curves, and the checks of ``explain`` work on the
evaluated curve and on the formula tree, with no code for any particular schedule.

Examples::

    hf-optim list
    hf-optim show cosine
    hf-optim plot cosine --num_warmup_steps 10 --num_training_steps 100 -o cosine.png
    hf-optim plot linear,cosine --num_warmup_steps 10 --num_training_steps 100 -o both.png
    hf-optim plot cosine --num_warmup_steps 10 --num_training_steps 100 --num_cycles 0.5,1 --csv
    hf-optim explain cosine --num_warmup_steps 10 --num_training_steps 100
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Sequence
from typing import TextIO

from ._curves import MAX_POINTS, Curve, curve, sample_steps
from ._errors import PROG, CliError, find_spec
from ._explain import analyse, cmd_explain
from ._listing import cmd_list, cmd_show
from ._plotting import cmd_plot, y_label
from ._request import Request
from ._values import default_text, parse_value, rule_text, show_value, spelling_text, string_choices

__all__ = [
    "MAX_POINTS",
    "USAGE",
    "CliError",
    "Curve",
    "Request",
    "analyse",
    "curve",
    "default_text",
    "main",
    "parse_value",
    "rule_text",
    "sample_steps",
    "show_value",
    "spelling_text",
    "string_choices",
    "y_label",
]

COMMANDS = ("list", "show", "plot", "explain")


USAGE = f"""usage: {PROG} COMMAND ...

commands:
  list                                  every schedule and optimizer with a one-line summary
  show ID                               parameters, defaults, formula, references, variants
  plot ID[,ID...] [--PARAM VALUE ...] [ID ...] [--steps N] [--base-lr X] [-o FILE.png] [--csv[=FILE]]
                                        curves on one figure; VALUE may be a comma list (a sweep)
  explain ID [--PARAM VALUE ...] [--steps N] [--base-lr X]
                                        phase boundaries and warnings for suspicious settings

plot/explain options:
  --PARAM VALUE     a parameter of the id before it (`{PROG} show ID` lists them); none = null
  --variant NAME    a named variant of the id before it (a preset of parameters)
  --metrics a,b,..  the metric sequence for a stateful schedule (reduce-on-plateau, greedy)
  --steps N         show steps 0..N (default: 1.25 x the training length)
  --base-lr X       the optimizer lr: plot lr = X * factor instead of the factor
  -o FILE.png       write the figure (needs matplotlib: pip install 'hf-optim-spec[plot]')
  --csv[=FILE]      write the numbers as CSV (stdout without FILE)
  --title TEXT, --log (log y axis)
"""


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Run the CLI; returns the exit status (0 ok, 2 user error)."""
    out = out or sys.stdout
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, file=out, end="")
        return 0 if args else 2
    command, rest = args[0], args[1:]
    try:
        if command not in COMMANDS:
            close = difflib.get_close_matches(command, COMMANDS, n=1)
            hint = f" Did you mean: {close[0]}?" if close else ""
            raise CliError(f"unknown command {command!r}.{hint} Commands: {', '.join(COMMANDS)}")
        if any(a in ("-h", "--help") for a in rest):
            print(USAGE, file=out, end="")
            return 0
        if command == "list":
            if rest:
                raise CliError(f"list takes no arguments, got {' '.join(rest)!r}")
            cmd_list(out)
        elif command == "show":
            if len(rest) != 1:
                raise CliError("show takes exactly one id, e.g. `hf-optim show cosine`")
            cmd_show(find_spec(rest[0]), out)
        elif command == "plot":
            cmd_plot(rest, out)
        else:
            cmd_explain(rest, out)
    except CliError as err:
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # pragma: no cover - e.g. `hf-optim plot ... --csv | head`
        return 0
    return 0
