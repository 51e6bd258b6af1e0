"""hf-optim-spec: transformers' optimizers and schedules as data, with float64 references.

The spec files (``spec/`` in the repository, package data in the wheel) are the single source of
truth. This package loads them (:func:`registry`), turns their parameter declarations into uniform
errors (:func:`validate`), parses schedule formulas (:mod:`hf_optim_spec.formula`) and holds the
float64 NumPy references of the optimizers (:mod:`hf_optim_spec.reference`).
"""

from __future__ import annotations

from . import formula
from ._registry import REQUIRED, Constraint, Parameter, Spec, Tolerance, get, registry, spec_root, thaw
from ._schedules import is_schedule_ref
from ._validation import check_parameter, validate

__version__ = "0.1.0"

__all__ = [
    "REQUIRED",
    "Constraint",
    "Parameter",
    "Spec",
    "Tolerance",
    "check_parameter",
    "formula",
    "get",
    "is_schedule_ref",
    "registry",
    "spec_root",
    "thaw",
    "validate",
]
