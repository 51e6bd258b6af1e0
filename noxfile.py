# /// script
# dependencies = ["nox>=2025.2.9"]
# ///
"""Nox sessions for hf-optim. `nox` with no arguments runs the full test suite that CI runs."""

from __future__ import annotations

import os
import sys
from enum import StrEnum, auto
from pathlib import Path

import nox

nox.needs_version = ">=2025.2.9"
# pip sees the local torch wheel; uv does not.
nox.options.default_venv_backend = "virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "spec", "tests", "conformance", "reliability"]

ROOT = Path(__file__).parent
CONSTRAINTS = ("-c", str(ROOT / "constraints.txt"))


class Package(StrEnum):
    spec = auto()
    torch = auto()
    tf = auto()


def _group(package: str, group: str) -> list[str]:
    pyproject = nox.project.load_toml(ROOT / "packages" / package / "pyproject.toml")
    if group not in pyproject.get("dependency-groups", {}):
        return []
    return list(nox.project.dependency_groups(pyproject, group))


def _install(session: nox.Session, *packages: str, groups: tuple[str, ...] = ("test",)) -> None:
    """Editable installs of our packages (with the frameworks' CPU builds) plus their dependency groups."""
    session.install(*CONSTRAINTS, *_requirements(packages, groups))


def _requirements(packages: tuple[str, ...], groups: tuple[str, ...]) -> list[str]:
    targets: list[str] = []
    for package in packages:
        path = f"packages/{package}"
        targets += ["-e", f"{path}[cpu]" if package == "tf" else path]
    return targets + sorted({req for package in packages for group in groups for req in _group(package, group)})


# The sessions that test the packages share one environment: torch and TensorFlow take about 2.3 GB in each
# environment, and CI machines have run out of disk with one copy per session. It holds every package, their
# test/docs/demo groups and the frameworks' CPU builds; pip runs again when its requirement list, the constraints
# or a pyproject.toml change (delete .nox/suite to rebuild it from nothing).
SUITE = ROOT / ".nox" / "suite"
SUITE_REQUIREMENTS = (("spec", "torch", "tf"), ("test", "docs", "demo"))


def _suite(session: nox.Session) -> None:
    """Create the shared environment, or update it when what it should hold has changed."""
    _environment(session, SUITE, [*CONSTRAINTS, *_requirements(*SUITE_REQUIREMENTS)])


def _environment(session: nox.Session, location: Path, requirements: list[str]) -> Path:
    """A virtual environment at ``location`` holding ``requirements``; pip runs again only when they, the
    constraints or a pyproject.toml have changed since the last install. Returns its python."""
    python = location / "bin" / "python"
    inputs = [str(python), *requirements, *(p.read_text() for p in sorted(ROOT.glob("packages/*/pyproject.toml")))]
    inputs.append((ROOT / "constraints.txt").read_text())
    stamp = location / "hf-optim-requirements"
    if python.exists() and stamp.exists() and stamp.read_text() == "\n".join(inputs):
        return python
    if not python.exists():
        session.run(sys.executable, "-m", "virtualenv", "--quiet", str(location), external=True)
    session.run(str(python), "-m", "pip", "install", "--disable-pip-version-check", *requirements, external=True)
    stamp.write_text("\n".join(inputs))
    return python


def _run(session: nox.Session, program: str, *args: str, env: dict[str, str] | None = None) -> None:
    """Run one of the shared environment's programs as if that environment were activated."""
    _suite(session)
    bin_dir = SUITE / "bin"
    activated = {"VIRTUAL_ENV": str(SUITE), "PATH": os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")])}
    session.run(str(bin_dir / program), *args, env={**activated, **(env or {})}, external=True)


def _pytest(session: nox.Session, *args: str) -> None:
    """pytest in the shared environment, with a fixed hash seed."""
    _run(session, "python", "-m", "pytest", *args, *session.posargs, env={"PYTHONHASHSEED": "0"})


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff lint and format check over the whole tree."""
    session.install("ruff>=0.6")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict on hf_optim_spec."""
    _install(session, "spec")
    session.install("mypy>=1.10")
    session.run("mypy", "--strict", "packages/spec/src/hf_optim_spec")


@nox.session(venv_backend="none")
def spec(session: nox.Session) -> None:
    """Validate every spec file, regenerate vectors and docs, and fail on any drift."""
    _run(session, "python", "tools/check_spec.py")
    _run(session, "python", "tools/regen_vectors.py")
    _run(session, "python", "tools/gen_docs.py")
    session.run("git", "diff", "--exit-code", "--stat", "--", "spec", "docs", external=True)


@nox.session(default=False, venv_backend="none")
def regen(session: nox.Session) -> None:
    """Fill every case's generated fields from the float64 references (review the diff after)."""
    _run(session, "python", "tools/regen_vectors.py")


@nox.session(venv_backend="none")
@nox.parametrize("package", list(Package), ids=[str(p) for p in Package])
def tests(session: nox.Session, package: Package) -> None:
    """Run one package's own unit tests in two worker processes (on 2 cores, 2026-12-07: spec 52 -> 32 s, torch 66 ->
    49 s; tf 169 s, after its tests stopped running a full gc.collect() each: 365 s before)."""
    _pytest(session, "-n", "2", f"packages/{package}/tests")


# Keras' other backends, each in its own environment without TensorFlow (KERAS_BACKEND is read when Keras is
# imported: one process per backend): hf-optim-tf's backend tests and the spec cases on that backend.
KERAS_BACKENDS = ("jax", "torch")


@nox.session(default=False)
@nox.parametrize("backend", KERAS_BACKENDS)
def keras_backends(session: nox.Session, backend: str) -> None:
    """hf-optim-tf on Keras' JAX / torch backend without TensorFlow, and the Keras malformed-checkpoint fuzz there (about
    4 minutes each on two cores)."""
    session.install(*CONSTRAINTS, "-e", "packages/spec", "-e", f"packages/tf[{backend}]", *_group("tf", "test"))
    session.run("python", "-c", "import importlib.util as u, sys; sys.exit(u.find_spec('tensorflow') is not None)")
    tests = (
        "packages/tf/tests/test_backends.py",
        "packages/tf/tests/test_spec_cases.py",
        "packages/tf/tests/test_multi_tensor.py",
    )
    env = {"PYTHONHASHSEED": "0", "KERAS_BACKEND": backend}
    # JAX without x64 warns wherever float64 / int64 is asked for (schedules, step counts) and gives 32 bits;
    # Keras' torch backend converts to NumPy with np.array(tensor), which NumPy 2 warns about (not ours).
    warn = {
        "jax": ("-W", "ignore:Explicitly requested dtype:UserWarning"),
        "torch": ("-W", "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"),
    }[backend]
    session.run("python", "-m", "pytest", *warn, *tests, *session.posargs, env=env)
    # The malformed-checkpoint fuzz of the Keras routes this backend has (load_own_variables, set_weights), reduced:
    # 100 mutations per optimizer, route and dtype, one fresh process per optimizer (20 to 30 s).
    session.run("python", "-m", "reliability._fuzz_backends", "--count", "100", "--jobs", "2", env=env)


@nox.session(venv_backend="none")
def conformance(session: nox.Session) -> None:
    """Every spec case x every framework, torch <-> Keras side by side; writes docs/conformance.md and fails where it
    lists other rows or counts than the committed one (tools/check_report.py)."""
    _pytest(session, "conformance")
    _run(session, "python", "tools/check_report.py", "docs/conformance.md")


@nox.session(default=False)
@nox.parametrize("backend", KERAS_BACKENDS)
def conformance_backends(session: nox.Session, backend: str) -> None:
    """The conformance suite with Keras on JAX / torch, no TensorFlow; writes docs/conformance-<backend>.md (drift
    checked as docs/conformance.md is)."""
    session.install(*CONSTRAINTS, "-e", "packages/spec", "-e", "packages/torch", "-e", f"packages/tf[{backend}]")
    session.install(*CONSTRAINTS, *sorted({*_group("torch", "test"), *_group("tf", "test")}))
    session.run("python", "-c", "import importlib.util as u, sys; sys.exit(u.find_spec('tensorflow') is not None)")
    session.run(
        "python", "-m", "pytest", "conformance", *session.posargs, env={"PYTHONHASHSEED": "0", "KERAS_BACKEND": backend}
    )
    session.run("python", "tools/check_report.py", f"docs/conformance-{backend}.md")


@nox.session(venv_backend="none")
def reliability(session: nox.Session) -> None:
    """Resume fuzz, bad inputs, mixed precision, distributed and soak (the full run; HF_OPTIM_FULL=0 reduces it), in
    two worker processes: each test runs on one core (reliability/conftest.py limits the threads)."""
    # one test at a time to whichever worker is free (xdist's default hands each worker a run of consecutive tests
    # first, which gave one worker every long test: 20 minutes instead of about 15)
    _pytest(session, "-n", "2", "--maxschedchunk=1", "reliability")


@nox.session(default=False, venv_backend="none")
def mutation(session: nox.Session) -> None:
    """Plant known mistakes in every tier (tools/mutations.toml) in a copy of HEAD; fails unless the tests catch each.

    About 13 to 44 minutes on two cores (101 mistakes: 43.6 on 2026-12-07 beside other jobs; 99: 27.9 that morning; 91:
    13.4 hours before), so not in the default run. ``-- --write`` records the table in docs/mutation.md,
    ``-- --worktree`` tests the working tree's files instead of HEAD, ``-- -k text`` runs the matching mistakes only.
    """
    _run(session, "python", "tools/mutation.py", *session.posargs)


# Keras on JAX for the bench, beside optax: its own environment (Keras reads KERAS_BACKEND once per process, and the
# shared one holds TensorFlow), without TensorFlow or torch.
BENCH_JAX = ROOT / ".nox" / "bench_jax"
BENCH_JAX_REQUIREMENTS = (*CONSTRAINTS, "jax[cpu]", "optax", "-e", "packages/spec", "-e", "packages/tf[jax]")


@nox.session(default=False, venv_backend="none")
def bench(session: nox.Session) -> None:
    """Step time and peak memory against the peers (torch, Keras on TensorFlow and on JAX beside optax), written to
    benchmarks/RESULTS.md. The JAX part runs in .nox/bench_jax, a second environment (jax[cpu], optax, hf-optim-tf)."""
    jax_python = _environment(session, BENCH_JAX, list(BENCH_JAX_REQUIREMENTS))
    _run(session, "python", "benchmarks/run.py", "--jax-python", str(jax_python), *session.posargs)


# What `nox -s build` installs each built wheel with, alone in a fresh virtual environment: (wheel, extra, backend).
WHEEL_SMOKES = (
    ("spec", None, None),
    ("torch", None, None),
    ("tf", "cpu", "tensorflow"),
    ("tf", "jax", "jax"),
    ("tf", "torch", "torch"),
)


@nox.session(default=False)
def build(session: nox.Session) -> None:
    """Build sdists and wheels; check the spec and LICENSE/NOTICE inside; install each wheel alone and step it.

    Every wheel goes into its own fresh virtual environment with only its dependencies (hf-optim-spec from the
    wheel just built, the frameworks from the package index under constraints.txt), and tools/smoke_wheel.py imports
    it from there and takes steps: hf-optim-tf once per Keras backend (TensorFlow, JAX, torch) through its
    extras. About 2.5 minutes on two cores with a warm pip cache.
    """
    session.install("build>=1.2")
    out = Path(session.create_tmp()) / "dist"
    for package in Package:
        session.run("python", "-m", "build", "--outdir", str(out), f"packages/{package}")
    session.run("python", "tools/check_wheel.py", str(out))
    for package, extra, backend in WHEEL_SMOKES:
        if session.posargs and package not in session.posargs:
            continue
        venv = out.parent / f"venv-{package}-{backend or 'default'}"
        session.run("python", "-m", "venv", "--clear", str(venv))
        wheels = {name: str(next(out.glob(f"hf_optim_{name}-*.whl"))) for name in dict.fromkeys(["spec", package])}
        wheels[package] += f"[{extra}]" if extra else ""
        pip = (str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--disable-pip-version-check")
        session.run(*pip, *CONSTRAINTS, *wheels.values(), external=True)
        env = {"KERAS_BACKEND": backend} if backend else {}
        session.run(str(venv / "bin" / "python"), "tools/smoke_wheel.py", package, env=env, external=True)


@nox.session(default=False, venv_backend="none")
def demo(session: nox.Session) -> None:
    """The main job: train a small model with torch and Keras side by side (table + PNG in out/)."""
    _run(session, "python", "demo/run.py", *session.posargs)


@nox.session(default=False, venv_backend="none")
def docs(session: nox.Session) -> None:
    """Generate the reference pages, build the site into site/ and check it offline (headless browser if any)."""
    _run(session, "python", "tools/gen_docs.py")
    _run(session, "mkdocs", "build", "--strict", env={"NO_MKDOCS_2_WARNING": "1"})
    # The math renderer (KaTeX) is committed under docs/javascripts/vendor/: nothing is fetched at build time.
    _run(session, "python", "tools/check_site.py")


# transformers releases the specs' hf_source names, and what each environment needs besides.
# tf-keras goes in without dependencies: it requires `tensorflow`, whose CPU build here is
# `tensorflow-cpu` (pinned in constraints.txt).
CROSSCHECK = {
    "4.49.0-torch": ("transformers==4.49.0",),
    "4.57.6": ("transformers==4.57.6", "tensorflow-cpu"),
    "5.25.0": ("transformers==5.25.0",),  # the greedy schedule (GreedyLR, 5.23+); v5 has no TensorFlow side
}


@nox.session(default=False)
@nox.parametrize("upstream", list(CROSSCHECK))
def crosscheck(session: nox.Session, upstream: str) -> None:
    """Run the spec cases through the real transformers code; docs/crosscheck.md (+ provenance with --write)."""
    _install(session, "spec", groups=())
    session.install(*CONSTRAINTS, "torch", *CROSSCHECK[upstream])
    if "tensorflow-cpu" in CROSSCHECK[upstream]:
        session.install("--no-deps", "tf-keras==2.21.*")
    session.run("python", "tools/crosscheck.py", *session.posargs)


# The clients people train with, on tiny models built from configs in code (nothing is downloaded). keras-hub goes
# in without its dependencies, then with all of them but tensorflow-text: that one requires `tensorflow`, a second
# TensorFlow beside the pinned tensorflow-cpu, and the models built here never tokenize text.
INTEGRATION = ("transformers==5.25.0", "accelerate>=1.0")
KERAS_HUB = ("keras-hub==0.32.0",)
KERAS_HUB_DEPS = (
    "absl-py",
    "packaging",
    "regex",
    "rich",
    "kagglehub!=1.0.1",
    "kagglesdk==0.1.28",
    "sentencepiece",
    "tokenizers",
)


@nox.session(default=False)
def integration(session: nox.Session) -> None:
    """transformers' Trainer, accelerate, torch.compile and KerasHub driving hf-optim on tiny random models."""
    _install(session, "spec", "torch", "tf")
    session.install(*CONSTRAINTS, *INTEGRATION, *KERAS_HUB_DEPS)
    session.install(*CONSTRAINTS, "--no-deps", *KERAS_HUB)
    session.run("python", "-c", "import importlib.util as u, sys; sys.exit(u.find_spec('tensorflow_text') is not None)")
    env = {"PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "2", "TF_NUM_INTRAOP_THREADS": "2", "TF_NUM_INTEROP_THREADS": "1"}
    session.run("python", "-m", "pytest", "integration", *session.posargs, env=env)
