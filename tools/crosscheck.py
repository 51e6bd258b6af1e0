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
from dataclasses import dataclass, field
from importlib import import_module, metadata
from pathlib import Path
from typing import Any

import hf_optim_spec as hs
import numpy as np
from hf_optim_spec._vectors import case_digest, dumps
from hf_optim_spec.reference._lowp import round_to

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _crosscheck_common import Outcome, Skip

ROOT = Path(__file__).resolve().parents[1]
REPORT = ROOT / "docs" / "crosscheck.md"
_SOURCE = re.compile(r"^transformers/(?P<file>[A-Za-z0-9_/]+)\.py@v(?P<version>[0-9][0-9A-Za-z.+-]*)$")
_ADAPTERS = {"optimization": "_crosscheck_torch", "optimization_tf": "_crosscheck_tf"}
_FRAMEWORK = {"optimization": "torch", "optimization_tf": "tf-keras"}
DIVERGENCE_KEY = "hf_divergence"
"""Optional case key (a reason string): a documented difference from transformers. The case is still run;
transformers disagreeing (or raising) is then expected and reported as a divergence, agreeing is a failure."""


# --------------------------------------------------------------------------- results


@dataclass
class CaseResult:
    """The verdict on one value case."""

    index: int
    description: str
    status: str  # agree | disagree | divergence | skipped | not generated
    dtype: str = ""
    max_abs: float = 0.0
    max_rel: float = 0.0
    exact: bool = False
    detail: str = ""


@dataclass
class ErrorResult:
    """The verdict on one error case."""

    index: int
    description: str
    status: str  # agree | disagree | skipped
    detail: str = ""


@dataclass
class SpecResult:
    """Everything checked for one spec."""

    spec_id: str
    framework: str
    cases: list[CaseResult] = field(default_factory=list)
    errors: list[ErrorResult] = field(default_factory=list)
    note: str = ""

    def count(self, status: str) -> int:
        return sum(1 for case in self.cases if case.status == status)

    def error_count(self, status: str) -> int:
        return sum(1 for err in self.errors if err.status == status)

    @property
    def failed(self) -> bool:
        return any(c.status in ("disagree", "not generated") for c in self.cases) or any(
            e.status == "disagree" for e in self.errors
        )


# --------------------------------------------------------------------------- comparison


@dataclass
class Comparison:
    ok: bool = True
    max_abs: float = 0.0
    max_rel: float = 0.0
    exact: bool = True
    first_failure: str = ""

    def fail(self, message: str) -> None:
        if self.ok:
            self.first_failure = message
        self.ok = False


def _fmt(x: float) -> str:
    return repr(float(x))


def _compare_leaf(label: str, expected: Any, actual: Any, *, tol: hs.Tolerance, dtype: str, result: Comparison) -> None:
    if expected is None or actual is None:
        if expected is not actual:
            result.fail(f"{label}: transformers {actual!r}, expected {expected!r}")
        return
    exp = np.asarray(expected, dtype=np.float64)
    act = np.asarray(actual, dtype=np.float64)
    if exp.shape != act.shape:
        result.fail(f"{label}: transformers shape {act.shape}, expected shape {exp.shape}")
        return
    if not (np.array_equal(act, exp, equal_nan=True) or np.array_equal(act, round_to(exp, dtype), equal_nan=True)):
        result.exact = False
    diff = np.abs(act - exp)
    both_nan = np.isnan(act) & np.isnan(exp)
    diff = np.where(both_nan, 0.0, diff)
    if diff.size:
        result.max_abs = max(result.max_abs, float(np.nanmax(np.where(np.isnan(diff), np.inf, diff))))
        nonzero = exp != 0
        if nonzero.any():
            rel = diff[nonzero] / np.abs(exp[nonzero])
            result.max_rel = max(result.max_rel, float(np.max(np.where(np.isnan(rel), np.inf, rel))))
    bad = ~(diff <= tol.atol + tol.rtol * np.abs(exp))
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        position = f"{label}[{', '.join(map(str, where))}]" if exp.ndim else label
        result.fail(
            f"{position}: transformers {_fmt(act[where])}, expected {_fmt(exp[where])} "
            f"(|diff| {float(diff[where]):.3g} > atol {tol.atol:g} + rtol {tol.rtol:g} * |expected|)"
        )


def _numeric(value: Any) -> bool:
    """A number or a rectangular nested list of numbers (one array leaf)."""
    if isinstance(value, bool) or value is None or isinstance(value, str | Mapping):
        return False
    try:
        array = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        return False
    return array.dtype == np.float64


def _walk(label: str, expected: Any, actual: Any, *, tol: hs.Tolerance, dtype: str, result: Comparison) -> None:
    if isinstance(expected, Mapping):
        if not isinstance(actual, Mapping) or set(expected) != set(actual):
            got = sorted(actual) if isinstance(actual, Mapping) else type(actual).__name__
            result.fail(f"{label}: transformers has keys {got}, expected keys {sorted(expected)}")
            return
        for key in expected:
            _walk(
                f"{label}.{key}" if label else str(key), expected[key], actual[key], tol=tol, dtype=dtype, result=result
            )
    elif expected is None or isinstance(expected, str | bool):
        if actual != expected or type(actual) is not type(expected):
            result.fail(f"{label}: transformers {actual!r}, expected {expected!r}")
    elif _numeric(expected):
        _compare_leaf(label, expected, actual, tol=tol, dtype=dtype, result=result)
    else:  # a list of structures (steps, ops) or of arrays of different shapes / None (accumulator slots)
        if not isinstance(actual, Sequence) or len(expected) != len(actual):
            got = len(actual) if isinstance(actual, Sequence) else type(actual).__name__
            result.fail(f"{label}: transformers has {got} entries, expected {len(expected)}")
            return
        for i, (exp, act) in enumerate(zip(expected, actual)):
            _walk(f"{label}[{i}]", exp, act, tol=tol, dtype=dtype, result=result)


def compare_schedule(
    positions: Sequence[str], expected: Sequence[float], actual: Sequence[float], tol: hs.Tolerance, dtype: str
) -> Comparison:
    """Element-wise comparison of a schedule case, labelled by step (or metric index)."""
    result = Comparison()
    if len(expected) != len(actual):
        result.fail(f"transformers gave {len(actual)} values, expected {len(expected)}")
        return result
    for label, exp, act in zip(positions, expected, actual):
        _compare_leaf(label, exp, act, tol=tol, dtype=dtype, result=result)
    return result


def compare_structured(expected: Any, actual: Any, tol: hs.Tolerance, dtype: str) -> Comparison:
    """Leaf by leaf: optimizers' ``params[k]`` (after step k, 0-based) and ``state``; accumulators' ``[op]``."""
    result = Comparison()
    _walk("", expected, actual, tol=tol, dtype=dtype, result=result)
    return result


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


# --------------------------------------------------------------------------- report


_BEGIN = "<!-- crosscheck: transformers {version} begin -->"
_END = "<!-- crosscheck: transformers {version} end -->"
_HEADER = """# Crosscheck against transformers

Generated by `nox -s crosscheck` (`tools/crosscheck.py`); DO NOT EDIT. Every spec case whose
`hf_source` names a transformers version is run through that version's real code, in an environment
holding only that version, and compared with the case's `expected` values under the spec tolerance of
the dtype transformers computed in (`|actual - expected| <= atol + rtol * |expected|`). Each section
below is rewritten by the environment of its version. Agreeing cases carry the provenance
`reference+transformers-<version>` in the spec.

Columns: *cases* value cases; *agree* / *disagree*; *divergence* cases that document a difference from
transformers (`hf_divergence`) and still differ; *skipped* cases without a transformers counterpart
(an extension parameter off its default); *max abs* / *max rel* the largest error over the checked
cases; *bit-identical* cases whose every value equals the expected value (rounded to the dtype
transformers computed in: float64 for torch schedules, float32 for Keras schedules, the case dtype for
optimizers); *errors* error cases where transformers raises the same exception type, over those it
enforces (`hf_enforced` true).
"""


def _num(x: float) -> str:
    return "0" if x == 0 else f"{x:.2e}"


def _dtypes(result: SpecResult) -> str:
    dtypes = sorted({c.dtype for c in result.cases if c.dtype}, key=("float64", "float32", "bfloat16", "float16").index)
    return ", ".join(dtypes) or "-"


def render_section(version: str, results: Sequence[SpecResult]) -> str:
    """The markdown section of one transformers version (deterministic: no times, sorted by spec id)."""
    frameworks = sorted({r.framework for r in results})
    lines = [
        _BEGIN.format(version=version),
        f"## transformers {version} ({', '.join(frameworks) or 'no spec names this version'})",
        "",
        "| spec | dtypes | cases | agree | disagree | divergence | skipped | max abs | max rel | bit-identical | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(results, key=lambda r: r.spec_id):
        if r.note:
            lines.append(f"| `{r.spec_id}` | - | {len(r.cases)} | - | - | - | - | - | - | - | {r.note} |")
            continue
        checked = [c for c in r.cases if c.status in ("agree", "disagree")]
        enforced = [e for e in r.errors if e.status != "skipped"]
        lines.append(
            f"| `{r.spec_id}` | {_dtypes(r)} | {len(r.cases)} | {r.count('agree')} | "
            f"{r.count('disagree') + r.count('not generated')} | {r.count('divergence')} | {r.count('skipped')} | "
            f"{_num(max((c.max_abs for c in checked), default=0.0))} | "
            f"{_num(max((c.max_rel for c in checked), default=0.0))} | "
            f"{sum(c.exact for c in checked)}/{len(checked)} | {r.error_count('agree')}/{len(enforced)} |"
        )
    total = sum(len(r.cases) for r in results)
    agree = sum(r.count("agree") for r in results)
    skipped = sum(r.count("skipped") for r in results)
    diverging = sum(r.count("divergence") for r in results)
    lines += [
        "",
        f"**{agree} of {total - skipped - diverging} cases with a transformers counterpart agree** "
        f"({diverging} documented divergences, {skipped} skipped).",
    ]
    disagreements = [(r.spec_id, c) for r in results for c in r.cases if c.status in ("disagree", "not generated")]
    error_mismatches = [(r.spec_id, e) for r in results for e in r.errors if e.status == "disagree"]
    if disagreements or error_mismatches:
        lines += ["", "### Disagreements", ""]
        lines += [f"- `{sid}` case {c.index} ({c.description}): {c.detail}" for sid, c in disagreements]
        lines += [f"- `{sid}` error case {e.index} ({e.description}): {e.detail}" for sid, e in error_mismatches]
    divergences = [(r.spec_id, c) for r in results for c in r.cases if c.status == "divergence"]
    if divergences:
        lines += ["", f"### Documented divergences (`{DIVERGENCE_KEY}`)", ""]
        lines += [f"- `{sid}` case {c.index} ({c.description}): {c.detail}" for sid, c in divergences]
    skips = [(r.spec_id, c) for r in results for c in r.cases if c.status == "skipped"]
    if skips:
        lines += ["", "### Skipped (no transformers counterpart)", ""]
        lines += [f"- `{sid}` case {c.index} ({c.description}): {c.detail}" for sid, c in skips]
    other_text = [
        (r.spec_id, e) for r in results for e in r.errors if e.status == "agree" and e.detail != "same message"
    ]
    if other_text:
        lines += ["", "### Error cases: same exception type, transformers' own message", ""]
        lines += [f"- `{sid}` error case {e.index} ({e.description}): {e.detail}" for sid, e in other_text]
    lines.append(_END.format(version=version))
    return "\n".join(lines) + "\n"


def _version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def update_report(path: Path, version: str, section: str) -> None:
    """Replace (or insert, in version order) this version's section of the report."""
    text = path.read_text(encoding="utf-8") if path.exists() else _HEADER
    sections = dict(
        (m["version"], m.group(0))
        for m in re.finditer(
            r"<!-- crosscheck: transformers (?P<version>\S+) begin -->.*?<!-- crosscheck: transformers (?P=version) end -->\n",
            text,
            flags=re.S,
        )
    )
    sections[version] = section
    head = text.split("<!-- crosscheck: transformers", 1)[0].rstrip("\n") + "\n"
    body = "\n".join(sections[v] for v in sorted(sections, key=_version_key))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(head + "\n" + body, encoding="utf-8")


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
                    f"       case {case.index} [{case.status}] {case.description}: {case.detail or _num(case.max_abs)}"
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
