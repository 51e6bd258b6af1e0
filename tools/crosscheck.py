"""Run the spec cases through the REAL transformers code and report agreement (``nox -s crosscheck``).

Each spec names the transformers file and version it mirrors (``hf_source``, e.g.
``transformers/optimization.py@v4.57.6``). This tool runs in an environment holding exactly one
transformers version and checks the specs that name it:

* torch schedules: transformers' ``get_*_schedule*`` factories on a dummy SGD optimizer (``base_lr``
  as its default lr, ``group_lrs`` as extra param groups); every group's ``lr_lambda`` must give
  the expected factor. The stateful schedules step the real ReduceLROnPlateau (4.x) and GreedyLR (5.23+)
  through the metrics; ``adafactor_relative_step`` calls ``Adafactor._get_lr``.
* torch optimizers (AdamW of 4.49, Adafactor of 4.57): the case's params0/grads replayed through
  ``optimizer.step()``; every step's parameters and the final state are compared.
* TF (``optimization_tf.py`` on tf-keras): WarmUp, Keras PolynomialDecay, the schedule
  create_optimizer returns, AdamWeightDecay.apply_gradients, GradientAccumulator.

Values are compared with the spec's tolerance for the dtype transformers computed in (float64 for
torch schedules, float32 for Keras schedules, the case dtype for optimizers):
``|actual - expected| <= atol + rtol * |expected|``. Error cases (``hf_enforced`` true) must make
transformers raise the same exception type. Cases that use an extension parameter off its default
have no counterpart and are skipped. A case carrying ``hf_divergence`` (a reason) documents a known
difference: it is run anyway, must still differ, and is reported as a divergence.

The report goes to ``docs/crosscheck.md`` (one section per transformers version, rewritten by the
environment that holds it; no timestamps). With ``--write`` the agreeing cases get the provenance
``reference+transformers-<version>#<digest of the case>`` (the others ``reference``), written with the canonical writer
so that ``nox -s spec`` stays clean. Provenance is the only field this tool ever writes.

Exit status: 0 when every case that has a counterpart agrees, 1 otherwise.
"""

from __future__ import annotations

import argparse
import builtins
import json
import re
import sys
import traceback
from collections.abc import Callable, Iterator, Mapping, Sequence
from importlib import import_module, metadata
from pathlib import Path
from typing import Any

import hf_optim_spec as hs
from hf_optim_spec._vectors import case_digest, dumps

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _crosscheck_common import Outcome, Skip
from _crosscheck_compare import compare_schedule, compare_structured
from _crosscheck_report import render_section, short_number, update_report
from _crosscheck_results import DIVERGENCE_KEY, CaseResult, ErrorResult, SpecResult

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "docs" / "crosscheck.md"
_SOURCE = re.compile(r"^transformers/(?P<file>[A-Za-z0-9_/]+)\.py@v(?P<version>[0-9][0-9A-Za-z.+-]*)$")
_ADAPTERS = {"optimization": "_crosscheck_torch", "optimization_tf": "_crosscheck_tf"}
_FRAMEWORK = {"optimization": "torch", "optimization_tf": "tf-keras"}


# --------------------------------------------------------------------------- running


def _upstream(spec: hs.Spec) -> tuple[str, str] | None:
    """(transformers module, version) of the spec's hf_source."""
    match = _SOURCE.match(str(spec.raw.get("hf_source", "")))
    if match is None:
        return None
    return match["file"], match["version"]


def _generated(spec: hs.Spec, case: Mapping[str, Any]) -> bool:
    expected = case.get("expected")
    if spec.kind == "schedule":
        return bool(expected) and len(expected) == len(case.get("steps", case.get("metrics", ())))
    return bool(expected)


def _check_case(spec: hs.Spec, index: int, case: Mapping[str, Any], run: Callable[..., Outcome]) -> CaseResult:
    result = _run_case(spec, index, case, run)
    reason = case.get(DIVERGENCE_KEY)
    if reason and result.status == "disagree":
        result.status, result.detail = "divergence", f"{reason} Observed: {result.detail}"
    elif reason and result.status == "agree":
        result.status, result.detail = "disagree", f"documented {DIVERGENCE_KEY} not observed: transformers agrees"
    return result


def _run_case(spec: hs.Spec, index: int, case: Mapping[str, Any], run: Callable[..., Outcome]) -> CaseResult:
    description = str(case.get("description", ""))
    if not _generated(spec, case):
        return CaseResult(index, description, "not generated", detail="no expected values: run tools/regen_vectors.py")
    try:
        outcome = run(spec, case)
    except Skip as skip:
        return CaseResult(index, description, "skipped", detail=str(skip))
    except Exception as exc:  # transformers rejected or crashed on a case the spec accepts
        where = traceback.extract_tb(exc.__traceback__)[-1]
        return CaseResult(
            index,
            description,
            "disagree",
            detail=f"transformers raised {type(exc).__name__}: {_stable(str(exc))} "
            f"({Path(where.filename).name}:{where.lineno})",
        )
    tol = spec.tol(outcome.dtype)
    if spec.kind == "schedule":
        if spec.stateful:
            positions = [f"metric #{i} ({m!r})" for i, m in enumerate(case["metrics"])]
        else:
            positions = [f"step {s}" for s in case["steps"]]
        comparison = compare_schedule(positions, case["expected"], outcome.actual, tol, outcome.dtype)
    else:
        comparison = compare_structured(case["expected"], outcome.actual, tol, outcome.dtype)
    return CaseResult(
        index,
        description,
        "agree" if comparison.ok else "disagree",
        dtype=outcome.dtype,
        max_abs=comparison.max_abs,
        max_rel=comparison.max_rel,
        exact=comparison.exact and comparison.ok,
        detail=comparison.first_failure,
    )


def _stable(message: str) -> str:
    """The first line of an exception message with Python set literals sorted (hash order varies per run)."""
    first = message.splitlines()[0] if message else ""
    return re.sub(r"\{('[^{}]*')\}", lambda m: "{" + ", ".join(sorted(m[1].split(", "))) + "}", first)


def _check_error(index: int, err: Mapping[str, Any], spec: hs.Spec, run: Callable[..., None] | None) -> ErrorResult:
    description = str(err.get("description", ""))
    if not err.get("hf_enforced", True):
        return ErrorResult(index, description, "skipped", "hf_enforced: false (transformers accepts it)")
    if run is None:
        return ErrorResult(index, description, "skipped", "no transformers constructor to feed")
    extensions = sorted(k for k in err.get("params", {}) if k in spec.parameters and spec.parameters[k].extension)
    if extensions:
        return ErrorResult(index, description, "skipped", f"extension {extensions} (not in transformers)")
    try:
        run(spec, err)
    except Skip as skip:
        return ErrorResult(index, description, "skipped", str(skip))
    except Exception as exc:
        wanted = getattr(builtins, err["error"])
        message = _stable(str(exc))
        if not isinstance(exc, wanted):
            return ErrorResult(
                index,
                description,
                "disagree",
                f"transformers raised {type(exc).__name__}: {message}, spec {err['error']}",
            )
        same_text = re.search(err["match"], str(exc)) is not None
        return ErrorResult(index, description, "agree", "same message" if same_text else f"transformers: {message}")
    return ErrorResult(index, description, "disagree", f"transformers accepts {dict(err['params'])!r}")


def check_spec(spec: hs.Spec, module: str) -> SpecResult:
    """Run every value case and every error case of one spec through transformers."""
    adapter = import_module(_ADAPTERS[module])
    result = SpecResult(spec.id, _FRAMEWORK[module])
    run = adapter.runner(spec)
    if run is None:
        result.note = "no transformers counterpart"
        return result
    for index, case in enumerate(spec.cases):
        result.cases.append(_check_case(spec, index, case, run))
    error_run = adapter.error_runner(spec)
    for index, err in enumerate(spec.errors):
        result.errors.append(_check_error(index, err, spec, error_run))
    return result


def specs_for(version: str, only: Sequence[str]) -> Iterator[tuple[hs.Spec, str]]:
    """The specs whose hf_source names ``version`` (restricted to ``only`` when given)."""
    for spec in hs.registry().values():
        if only and spec.id not in only:
            continue
        upstream = _upstream(spec)
        if upstream is None or upstream[1] != version or upstream[0] not in _ADAPTERS:
            continue
        yield spec, upstream[0]


# --------------------------------------------------------------------------- provenance


def provenance_label(version: str, case: dict[str, Any]) -> str:
    """The claim of an agreeing case, bound to its content (``case_digest``): it goes stale when the case changes."""
    return f"reference+transformers-{version}#{case_digest(case)}"


def write_provenance(spec: hs.Spec, result: SpecResult, version: str) -> bool:
    """Set each checked case's provenance; True when the file changed. Touches nothing else."""
    text = spec.path.read_text(encoding="utf-8")
    raw = json.loads(text)
    if dumps(raw) != text:
        raise SystemExit(f"{spec.path}: not in canonical form; run `nox -s regen` first (provenance not written)")
    for case in result.cases:
        if case.status == "not generated":
            continue
        stored = raw["cases"][case.index]
        stored["provenance"] = provenance_label(version, stored) if case.status == "agree" else "reference"
    after = dumps(raw)
    if after == text:
        return False
    spec.path.write_text(after, encoding="utf-8")
    return True


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="record agreement as provenance in the spec files")
    parser.add_argument("--report", type=Path, default=REPORT, help="markdown report to update (default: %(default)s)")
    parser.add_argument("--no-report", action="store_true", help="print only; leave the report alone")
    parser.add_argument("--only", nargs="*", default=(), metavar="SPEC_ID", help="check only these spec ids")
    parser.add_argument("-v", "--verbose", action="store_true", help="print every case")
    args = parser.parse_args(argv)

    version = metadata.version("transformers")
    specs = list(specs_for(version, args.only))
    print(f"transformers {version}: {len(specs)} spec(s) name it: {', '.join(s.id for s, _ in specs) or '-'}")
    results = []
    for spec, module in specs:
        result = check_spec(spec, module)
        results.append(result)
        checked = len(result.cases) - result.count("skipped") - result.count("divergence")
        flag = "FAIL" if result.failed else "ok"
        print(
            f"  {flag:4s} {spec.id:28s} {result.count('agree')}/{checked} agree, {result.count('skipped')} skipped, "
            f"errors {result.error_count('agree')}/{len([e for e in result.errors if e.status != 'skipped'])}"
            + (f" ({result.note})" if result.note else "")
        )
        for case in result.cases:
            if args.verbose or case.status in ("disagree", "not generated"):
                print(
                    f"       case {case.index} [{case.status}] {case.description}: {case.detail or short_number(case.max_abs)}"
                )
        for err in result.errors:
            if err.status == "disagree" or (args.verbose and err.status != "skipped"):
                print(f"       error case {err.index} [{err.status}] {err.description}: {err.detail}")
        if args.write:
            if spec.path.resolve().parent.parent != (ROOT / "spec").resolve():
                raise SystemExit(f"{spec.path} is not in this checkout's spec/ (install hf-optim-spec editable)")
            if write_provenance(spec, result, version):
                print(f"       provenance written: {spec.path.relative_to(ROOT)}")
    if not args.no_report:
        update_report(args.report, version, render_section(version, results))
        print(f"report: {args.report}")
    return 1 if any(r.failed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
