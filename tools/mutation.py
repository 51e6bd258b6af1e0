"""Plant known mistakes in every tier and show that the project's own tests catch each one (``nox -s mutation``).

The mistakes are listed in ``tools/mutations.toml``: a file, an exact original text (found exactly once, or the
run stops before any test), the wrong text that replaces it, and the pytest selections of the default ``nox`` run
that should catch it. The script never writes to the working tree (other people may be running tests in it): it
extracts a private copy of the tracked files (``git archive HEAD``, or the working tree's files with
``--worktree``), and runs the tests there with ``PYTHONPATH`` pointing at the copy's ``packages/*/src`` (ahead of
the editable installs) and a private ``HF_OPTIM_CACHE_DIR`` (a mutated C kernel compiles on its own). For each
mistake it patches the copy, runs the selections in order with ``-x`` until one fails (killed) or all pass
(survived), and restores the file, checked byte for byte by hash. A selection only counts as a kill when it
passes on the unmutated copy (run once per selection, on first use). Prints a table and exits non-zero when a
mistake survived or a run broke; ``--write`` also writes the table to ``docs/mutation.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
MUTATIONS = ROOT / "tools" / "mutations.toml"
DOC = ROOT / "docs" / "mutation.md"
PACKAGES = ("spec", "torch", "tf")
PYTEST = ("-x", "-q", "-p", "no:cacheprovider")
FAILED = re.compile(r"^(?:FAILED|ERROR) (.+?)(?: - .*)?$", re.MULTILINE)  # the short test summary (-ra)


class MutationError(Exception):
    """The mutation list or the copy is not what the run needs (stale text, unknown selection, broken baseline)."""


@dataclass(frozen=True)
class Mutation:
    """One planted mistake: ``original`` (exactly once in ``file``) becomes ``replacement``."""

    name: str
    tier: str
    where: str
    file: str
    original: str
    replacement: str
    tests: tuple[str, ...]

    @property
    def label(self) -> str:
        return f"{self.tier} / {self.where}: {self.name}"


@dataclass
class Outcome:
    mutation: Mutation
    status: str  # "killed", "survived" or "error"
    selection: str = ""
    detail: str = ""
    seconds: float = 0.0


def load(path: Path = MUTATIONS) -> tuple[dict[str, tuple[str, ...]], list[Mutation]]:
    """The named pytest selections and the mutations of ``path`` (every selection name checked)."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    selections = {name: tuple(shlex.split(text)) for name, text in data["selections"].items()}
    mutations = []
    for index, raw in enumerate(data["mutation"]):
        where = f"{path.name}: mutation #{index + 1} ({raw.get('name', '?')})"
        if ("first" in raw) == ("original" in raw):
            raise MutationError(f"{where}: give either original/replacement or first/second (a swap)")
        if "first" in raw:
            original, replacement = raw["first"] + raw["second"], raw["second"] + raw["first"]
        else:
            original, replacement = raw["original"], raw["replacement"]
        unknown = [name for name in raw["tests"] if name not in selections]
        if unknown or not raw["tests"]:
            raise MutationError(f"{where}: unknown or no test selections {unknown} (known: {sorted(selections)})")
        if original == replacement:
            raise MutationError(f"{where}: the replacement equals the original")
        mutations.append(
            Mutation(raw["name"], raw["tier"], raw["where"], raw["file"], original, replacement, tuple(raw["tests"]))
        )
    return selections, mutations


def make_copy(dest: Path, ref: str | None) -> str:
    """Extract the tracked files of ``ref`` (None: as they are in the working tree) into ``dest``; a description."""
    if ref is not None:
        archive = subprocess.run(["git", "archive", "--format=tar", ref], cwd=ROOT, capture_output=True, check=True)
        with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
            tar.extractall(dest, filter="data")
        commit = subprocess.run(
            ["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True, check=False
        )
        return f"{ref} ({commit.stdout.strip()})"
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():  # a tracked file deleted in the working tree stays deleted
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return "the working tree's tracked files"


def check_texts(copy: Path, mutations: Sequence[Mutation]) -> None:
    """Every original text occurs exactly once in its file of the copy (else the list went stale)."""
    problems = []
    for mutation in mutations:
        path = copy / mutation.file
        if not path.is_file():
            problems.append(f"{mutation.label}: no file {mutation.file}")
            continue
        count = path.read_text(encoding="utf-8").count(mutation.original)
        if count != 1:
            problems.append(f"{mutation.label}: the original text occurs {count} times in {mutation.file}")
    if problems:
        raise MutationError("stale mutations (update tools/mutations.toml):\n  " + "\n  ".join(problems))


def environment(copy: Path, cache: Path) -> dict[str, str]:
    """The test environment: the copy's sources ahead of any installed ones, a private kernel cache."""
    env = dict(os.environ)
    paths = [str(copy / "packages" / package / "src") for package in PACKAGES]
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [env.get("PYTHONPATH", "")] if p])
    env["HF_OPTIM_CACHE_DIR"] = str(cache)
    env["PYTHONHASHSEED"] = "0"  # as nox's test sessions run
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # a mutation of the same size within a second must not reuse a .pyc
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def check_imports(copy: Path, env: dict[str, str]) -> None:
    """The packages the tests import are the copy's (PYTHONPATH wins over the editable installs)."""
    code = "import hf_optim_spec, hf_optim_torch, hf_optim_tf as t; print(hf_optim_spec.__file__, hf_optim_torch.__file__, t.__file__)"
    done = subprocess.run([sys.executable, "-c", code], cwd=copy, env=env, capture_output=True, text=True, check=False)
    files = done.stdout.split()
    if done.returncode != 0 or len(files) != 3 or not all(Path(f).is_relative_to(copy) for f in files):
        raise MutationError(f"the tests would not import the copy's packages: {done.stdout}{done.stderr[-2000:]}")


def check_kernel(copy: Path, env: dict[str, str]) -> None:
    """A mutated C kernel compiled and is in use (else the torch fallback would run and hide the mistake)."""
    code = "from hf_optim_torch import _native; s = _native.status(); print(s); raise SystemExit(s[:7] != 'native:')"
    done = subprocess.run([sys.executable, "-c", code], cwd=copy, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise MutationError(f"the mutated native kernel is not in use: {done.stdout}{done.stderr[-2000:]}")


class Runner:
    """Runs pytest selections in the copy; remembers which selections pass on the unmutated copy."""

    def __init__(self, copy: Path, env: dict[str, str], selections: dict[str, tuple[str, ...]], logs: Path):
        self.copy, self.env, self.selections, self.logs = copy, env, selections, logs
        self.baseline: dict[str, bool] = {}
        self.runs = 0

    def pytest(self, name: str) -> tuple[int, str]:
        self.runs += 1
        args = [sys.executable, "-m", "pytest", *self.selections[name], *PYTEST]
        done = subprocess.run(args, cwd=self.copy, env=self.env, capture_output=True, text=True, check=False)
        output = done.stdout + done.stderr
        (self.logs / f"{self.runs:03d}-{name}.log").write_text(" ".join(args) + "\n\n" + output, encoding="utf-8")
        if done.returncode == 5:
            raise MutationError(f"selection {name!r} ({shlex.join(self.selections[name])}) collects no tests")
        return done.returncode, output

    def passes_unmutated(self, name: str) -> None:
        if name not in self.baseline:
            code, output = self.pytest(name)
            self.baseline[name] = code == 0
            if code != 0:
                raise MutationError(f"selection {name!r} fails on the unmutated copy:\n{output[-3000:]}")


def run_one(runner: Runner, mutation: Mutation) -> Outcome:
    """Apply ``mutation`` to the copy, run its selections, restore the file (verified by hash)."""
    path = runner.copy / mutation.file
    pristine = path.read_bytes()
    digest = hashlib.sha256(pristine).hexdigest()
    text = pristine.decode("utf-8")
    start = time.perf_counter()
    outcome = Outcome(mutation, "survived")
    try:
        path.write_bytes(text.replace(mutation.original, mutation.replacement, 1).encode("utf-8"))
        if mutation.file.endswith(".c"):
            check_kernel(runner.copy, runner.env)
        for name in mutation.tests:
            code, output = runner.pytest(name)
            if code == 0:
                continue
            failed = FAILED.findall(output)
            if code != 1 or not failed:  # collection error, internal error, interruption: not a kill
                outcome = Outcome(mutation, "error", name, f"pytest exit {code}: {output.strip()[-300:]}")
            else:
                outcome = Outcome(mutation, "killed", name, failed[0])
            break
    except MutationError as error:
        outcome = Outcome(mutation, "error", detail=str(error)[:300])
    finally:
        path.write_bytes(pristine)
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise MutationError(f"{mutation.file} of the copy was not restored byte for byte")
    outcome.seconds = time.perf_counter() - start
    if outcome.status == "killed":
        runner.passes_unmutated(outcome.selection)  # a kill counts only if the selection passes without the mistake
    return outcome


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(outcomes: Sequence[Outcome], selections: dict[str, tuple[str, ...]]) -> str:
    """The results as a Markdown table, then the selections it names."""
    lines = [
        "| # | mistake | tier | where | file | result | caught by (selection: first failing test) | s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for index, o in enumerate(outcomes, start=1):
        m = o.mutation
        caught = f"`{o.selection}`: {o.detail}" if o.status == "killed" else o.detail
        file = m.file.removeprefix("packages/")
        lines.append(
            f"| {index} | {_cell(m.name)} | {m.tier} | {_cell(m.where)} | `{file}` | {o.status} | {_cell(caught)} | "
            f"{o.seconds:.0f} |"
        )
    used = sorted({o.selection for o in outcomes if o.selection})
    lines += ["", "Selections (each run with `-x -q`):", ""]
    lines += [f"- `{name}`: `pytest {shlex.join(selections[name])}`" for name in used]
    return "\n".join(lines)


def write_doc(outcomes: Sequence[Outcome], selections: dict[str, tuple[str, ...]], seconds: float) -> None:
    killed = sum(o.status == "killed" for o in outcomes)
    DOC.write_text(
        "# Mutation check\n\n"
        "<!-- Written by `nox -s mutation -- --write` (tools/mutation.py); the mistakes are in tools/mutations.toml. -->\n\n"
        "`nox -s mutation` plants known mistakes, one at a time, in a private copy of the repository (the float64 "
        "reference, the torch paths and the native kernel, the Keras optimizers, and both lowerings of the schedule "
        "formula language) and runs the pytest selections of the default `nox` run that should catch each one. "
        "A mistake is *killed* when a selection fails with it and passes without it.\n\n"
        f"{killed} of {len(outcomes)} mistakes killed; the run took {seconds / 60:.1f} minutes.\n\n"
        f"{table(outcomes, selections)}\n",
        encoding="utf-8",
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="write the table to docs/mutation.md")
    parser.add_argument("--ref", default="HEAD", help="the git revision to copy (default HEAD)")
    parser.add_argument("--worktree", action="store_true", help="copy the working tree's tracked files instead")
    parser.add_argument("-k", dest="pattern", help="only mistakes whose tier / where: name contains this text")
    parser.add_argument("--list", action="store_true", help="check the list against the copy and print it")
    parser.add_argument("--keep", action="store_true", help="keep the copy and the pytest logs (path printed)")
    args = parser.parse_args(argv)

    selections, mutations = load()
    if args.pattern:
        mutations = [m for m in mutations if args.pattern.lower() in m.label.lower()]
    start = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="hf-optim-mutation-"))
    try:
        copy, logs = work / "repo", work / "logs"
        copy.mkdir()
        logs.mkdir()
        source = make_copy(copy, None if args.worktree else args.ref)
        check_texts(copy, mutations)
        if args.list:
            for index, m in enumerate(mutations, start=1):
                print(f"{index:3d}  {m.label}  [{m.file}]  -> {', '.join(m.tests)}")
            return 0
        env = environment(copy, work / "kernel-cache")
        check_imports(copy, env)
        print(f"mutation check of {source}: {len(mutations)} mistakes, copy in {work}", flush=True)
        runner = Runner(copy, env, selections, logs)
        outcomes = []
        for index, mutation in enumerate(mutations, start=1):
            outcome = run_one(runner, mutation)
            outcomes.append(outcome)
            print(
                f"[{index}/{len(mutations)}] {outcome.status:8s} {outcome.seconds:5.0f}s  {mutation.label}", flush=True
            )
            if outcome.status != "killed":
                print(f"    {outcome.detail}", flush=True)
        seconds = time.perf_counter() - start
        print()
        print(table(outcomes, selections))
        bad = [o for o in outcomes if o.status != "killed"]
        print(
            f"\n{len(outcomes) - len(bad)} of {len(outcomes)} killed in {seconds / 60:.1f} minutes ({runner.runs} pytest runs)"
        )
        if args.write:
            write_doc(outcomes, selections, seconds)
            print(f"wrote {DOC.relative_to(ROOT)}")
        return 1 if bad else 0
    except MutationError as error:
        print(f"mutation check failed: {error}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
