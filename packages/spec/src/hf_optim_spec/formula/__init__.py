"""The schedule formula language: parse once, bind parameters, evaluate in float64, lower anywhere.

A schedule's learning-rate factor is written in the spec as a small expression language that looks
like a Python expression but is parsed against a whitelist (``ast`` is used as a tokenizer only;
nothing is ever passed to ``eval`` or ``exec``)::

    values:  progress = (step - num_warmup_steps) / max(1, num_training_steps - num_warmup_steps)
    result:  step / max(1, num_warmup_steps) if step < num_warmup_steps
             else max(0, 0.5 * (1 + cos(pi * num_cycles * 2 * progress)))

Pipeline:

1. :func:`parse` turns one expression into an immutable tree of :class:`Node` objects and rejects
   anything outside the grammar with a :class:`FormulaError` naming the construct and its column.
2. :class:`Program` holds the named intermediate values and the result, and checks that every name
   is a parameter, ``step``, ``base_lr``, ``pi`` or an earlier value.
3. :meth:`Program.bind` substitutes parameter values, inlines the named values and folds every
   sub-expression that does not depend on ``step``. String and ``None`` tests on parameters are
   therefore decided once, here, and never reach a framework or the per-step path.
4. :class:`Bound` is the float64 reference: calling it with a step evaluates the folded tree with
   Python floats (IEEE semantics: ``x / 0`` is ``inf`` or ``nan``, never an exception).
5. :func:`lower` walks the folded tree and asks an ``ops`` object to build each node, so a framework
   turns the same tree into its own arithmetic (for example ``keras.ops``) with no per-schedule code.
"""

from __future__ import annotations

from ._float64 import BINARY_OPERATORS, COMPARISONS, FUNCTIONS, Bound, evaluate
from ._lower import LoweringOps, lower
from ._parse import parse
from ._program import RESERVED, Program, evaluate_constant
from ._tree import (
    Binary,
    Call,
    Compare,
    Const,
    FormulaError,
    Logical,
    Name,
    Node,
    ScheduleCall,
    Select,
    Unary,
    children,
    walk,
)

__all__ = [
    "BINARY_OPERATORS",
    "COMPARISONS",
    "FUNCTIONS",
    "RESERVED",
    "Binary",
    "Bound",
    "Call",
    "Compare",
    "Const",
    "FormulaError",
    "Logical",
    "LoweringOps",
    "Name",
    "Node",
    "Program",
    "ScheduleCall",
    "Select",
    "Unary",
    "children",
    "evaluate",
    "evaluate_constant",
    "lower",
    "parse",
    "walk",
]
