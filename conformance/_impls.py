"""The one registry of implementations the conformance suite runs every spec case through.

Each :class:`Impl` drives one framework package (``hf_optim_torch`` or ``hf_optim_tf``) through its PUBLIC names
only, and only generically, with the shared adapter of that framework (:mod:`testsupport.torch_adapter`,
:mod:`testsupport.keras_adapter`): the callable comes from ``spec.api[framework]``, arguments are spelled with
``Parameter.name_for(framework)`` (a canonical pair split into two Keras arguments where the spec says so),
schedule-typed arguments (``{"schedule": id, "params": {...}}``) are built recursively. There is no per-spec
code here: a quirk of one spec belongs in its spec file. The conventions the packages follow (CONTEXT.md,
"Public names") are read from signatures, not from ids; the adapters' docstrings list them.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Literal

import hf_optim_spec as hs
import numpy as np
from hf_optim_spec.reference import _case as ref_case

from testsupport import keras_adapter, torch_adapter
from testsupport.results import LrCurve, Trajectory, to_numpy
from testsupport.spec_args import MODULES, resolve_api, spelled

from ._expected import reference_trajectory
from ._report import keras_backend

__all__ = ["IMPLS", "Impl", "cached_lr_curve", "cached_reference", "cached_trajectory", "missing_dtype"]

Framework = Literal["torch", "tf"]
ALL_DTYPES = ("float64", "float32", "bfloat16", "float16")

# What Keras' other backends warn that is not ours (``nox -s conformance_backends``), by KERAS_BACKEND, as
# (message start, category): JAX without x64 warns wherever float64 / int64 is asked for (and gives 32 bits);
# a keras.Variable of the JAX and torch backends converts to NumPy through an ``__array__`` without NumPy 2's
# ``copy`` keyword, which NumPy warns about.
_NUMPY_COPY = ("__array__ implementation doesn't accept a copy keyword", DeprecationWarning)
BACKEND_WARNINGS: Mapping[str, tuple[tuple[str, type[Warning]], ...]] = {
    "jax": (("Explicitly requested dtype", UserWarning), _NUMPY_COPY),
    "torch": (_NUMPY_COPY,),
}


@dataclass(frozen=True)
class Impl:
    """One framework package as the conformance suite drives it, through that framework's adapter."""

    name: Framework
    adapter: ModuleType
    param_groups: bool
    dtypes: tuple[str, ...] = ALL_DTYPES

    @property
    def module(self) -> str:
        return MODULES[self.name]

    def package(self) -> Any:
        return importlib.import_module(self.module)

    def api(self, spec: hs.Spec) -> Any:
        return resolve_api(self.name, spec)

    def lr_curve(self, spec: hs.Spec, case: Mapping[str, Any]) -> LrCurve:
        return self.adapter.lr_curve(spec, case)

    def run_optimizer(self, spec: hs.Spec, case: Mapping[str, Any], dtype: str) -> Trajectory:
        return self.adapter.run_optimizer(spec, case, dtype)

    def construct(self, spec: hs.Spec, params: Mapping[str, Any], base_lr: float) -> Any:
        return self.adapter.construct(spec, params, base_lr)

    def run_accumulator(self, spec: hs.Spec, case: Mapping[str, Any]) -> list[dict[str, Any]]:
        """One entry per op: ``{"step", "gradients"}`` (gradients None when reading them raises the
        not-initialized ValueError) or ``{"error": type name, "message": str}``."""
        from hf_optim_spec.reference import accumulator as ref_acc

        dtype = ref_case.case_dtype(case)
        rows = iter(ref_acc.case_grads(case))
        acc = self.api(spec)(**spelled(spec, case.get("params", {}), self.name, lambda ref: ref))
        out: list[dict[str, Any]] = []
        for op in case["ops"]:
            if op["op"] == "reset":
                acc.reset()
            else:
                error = _accumulate(acc, [None if g is None else self.adapter.tensor(g, dtype) for g in next(rows)])
                if error is not None:
                    out.append({"error": type(error).__name__, "message": str(error)})
                    continue
            try:
                sums: list[Any] | None = [None if g is None else to_numpy(g) for g in acc.gradients]
            except ValueError:
                sums = None
            out.append({"step": int(to_numpy(acc.step)), "gradients": sums})
        return out

    def runs(self, spec: hs.Spec, case: Mapping[str, Any]) -> bool:
        """Whether this framework can run a schedule case: a stateful case with several param groups needs them
        (a stateful schedule may couple its groups, and a Keras optimizer has one learning rate)."""
        return self.param_groups or not (spec.stateful and case.get("group_lrs"))

    def make_schedule(self, spec: hs.Spec, case: Mapping[str, Any]) -> Callable[[int], np.ndarray]:
        """``step -> float32 lr of every param group`` for a closed-form schedule case (one build per call)."""
        return lambda step: self.lr_curve(spec, {**case, "steps": [int(step)]}).lrs[:, 0]

    def raise_error(self, spec: hs.Spec, error_case: Mapping[str, Any]) -> BaseException | None:
        """The exception building ``spec`` with an error case's params raises (None when nothing is raised)."""
        try:
            self.construct(spec, error_case["params"], float(error_case.get("base_lr", 1.0)))
        except Exception as error:  # the error under test
            return error
        return None

    def schedule_at(self, spec: hs.Spec, params: Mapping[str, Any], base_lr: float, steps: Sequence[int]) -> np.ndarray:
        """float32 lr of the default group at ``steps`` (property tests)."""
        curve = self.lr_curve(spec, {"params": params, "base_lr": base_lr, "steps": list(steps)})
        return curve.lrs[0]

    def __repr__(self) -> str:
        return f"Impl({self.name})"


@functools.cache
def _keras_without_float64() -> str | None:
    """Why Keras' backend in this process has no float64 (None where it has one)."""
    if keras_backend() != "jax":
        return None
    import jax

    if jax.config.jax_enable_x64:
        return None
    return "Keras on JAX without x64 (JAX's default) has no float64: it computes float64 cases in float32"


def missing_dtype(framework: str, dtype: str) -> str | None:
    """Why ``framework`` cannot run ``dtype`` in this process (a test skips with it), None where it can."""
    if dtype not in IMPLS[framework].dtypes:
        return f"{framework} does not run {dtype}"
    if framework == "tf" and dtype == "float64":
        return _keras_without_float64()
    return None


def _accumulate(acc: Any, grads: list[Any]) -> Exception | None:
    """Add one row of gradients; the ValueError / TypeError it raises (an error case) is returned."""
    try:
        acc(grads)
    except (ValueError, TypeError) as error:
        return error
    return None


IMPLS: Mapping[str, Impl] = {
    impl.name: impl
    for impl in (Impl("torch", torch_adapter, param_groups=True), Impl("tf", keras_adapter, param_groups=False))
}


# --------------------------------------------------------------------------- caches shared by the test files


@functools.cache
def cached_lr_curve(framework: str, spec_id: str, index: int) -> LrCurve:
    """The lr curve of ``hs.get(spec_id).cases[index]`` (computed once per session).

    Building the schedule must warn exactly what the case's ``warns`` says (a UserWarning matching it), and
    nothing when the case has no ``warns``.
    """
    spec = hs.get(spec_id)
    case = spec.cases[index]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for message, category in BACKEND_WARNINGS.get(os.environ.get("KERAS_BACKEND", "tensorflow"), ()):
            warnings.filterwarnings("ignore", message=re.escape(message), category=category)
        curve = IMPLS[framework].lr_curve(spec, case)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    expected = case.get("warns")
    where = f"{framework} {spec_id} case {index} ({case['description']!r})"
    if expected is None and messages:
        raise AssertionError(f"{where}: building the schedule warned {messages}")
    if expected is not None and not any(re.search(expected, m) for m in messages):
        raise AssertionError(f"{where}: expected a UserWarning matching {expected!r}, got {messages}")
    return curve


@functools.cache
def cached_trajectory(framework: str, spec_id: str, index: int, dtype: str) -> Trajectory:
    spec = hs.get(spec_id)
    return IMPLS[framework].run_optimizer(spec, spec.cases[index], dtype)


@functools.cache
def cached_reference(spec_id: str, index: int) -> Trajectory:
    spec = hs.get(spec_id)
    return reference_trajectory(spec, spec.cases[index])
