"""Native CPU kernels, compiled at first use with the system C compiler (gcc or clang) and called through ctypes.

Only Adafactor has one (``adafactor.c``, called by ``adafactor_call.py``), for its factored and unfactored float32
tensors: a sequence of eager torch ops must read ``g`` and ``p`` more often than the two passes the update needs. It
is built with OpenMP (it then runs on the team of threads torch's own CPU ops use), else for one thread. The
library is compiled once per source, compiler and CPU into ``$HF_OPTIM_CACHE_DIR`` (default ``~/.cache/hf_optim``),
the way Inductor and torch's C++ extensions compile at first use. Without a working compiler (one that takes GNU C's
vector extension, as gcc and clang do), or with ``HF_OPTIM_NATIVE=0``, the optimizers use their torch paths, which
compute the same update within the spec tolerance; :func:`status` says which is in use and why.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

__all__ = ["adafactor_library", "status"]

_LOG = logging.getLogger("hf_optim_torch")
_SOURCE = Path(__file__).with_name("adafactor.c")
_FLAGS = ["-O3", "-fno-math-errno", "-std=c99", "-shared", "-fPIC", "-pthread"]
#: threading, in the order tried: OpenMP (the team torch uses; see run_threads in adafactor.c), else one thread with
#: OpenMP's vector pragmas only (compilers without an OpenMP runtime, such as Apple's clang)
_THREADING = (("omp", ["-fopenmp"]), ("serial", ["-fopenmp-simd"]))
if platform.machine().lower() in ("x86_64", "amd64"):  # this CPU's vector units; 512-bit ones where it has them
    _FLAGS += ["-march=native", "-mprefer-vector-width=512"]
_state: dict[str, object] = {}


def _cpu_signature() -> str:
    """What ``-march=native`` depends on (a cache shared between machines must not hand out another CPU's code)."""
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cache_dir() -> Path:
    configured = os.environ.get("HF_OPTIM_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "hf_optim"


def _build(compiler: str, flags: list[str], threading: str, source: bytes, version: str) -> tuple[Path | None, str]:
    """The compiled library for these flags (built into the cache unless it is there), or None and why not."""
    key = hashlib.sha256(
        b"\0".join(
            s.encode() if isinstance(s, str) else s
            for s in (source, " ".join(flags), version, _cpu_signature(), platform.machine())
        )
    ).hexdigest()[:20]
    library = _cache_dir() / f"adafactor-{threading}-{key}.so"
    if library.exists():
        return library, ""
    try:
        library.parent.mkdir(parents=True, exist_ok=True)
        where = library.parent
    except OSError:
        where = Path(tempfile.gettempdir())
        library = where / library.name
    handle, partial = tempfile.mkstemp(suffix=".so", dir=where)
    os.close(handle)
    try:
        done = subprocess.run(
            [compiler, *flags, str(_SOURCE), "-o", partial], capture_output=True, text=True, timeout=300, check=False
        )
        if done.returncode != 0:
            return None, f"{compiler} {' '.join(flags[-1:])} failed ({done.returncode}): {done.stderr.strip()[-500:]}"
        os.replace(partial, library)  # atomic: processes compiling at once each install a whole file
    except (OSError, subprocess.SubprocessError) as error:
        return None, f"compiling with {compiler} failed: {error}"
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return library, ""


def _compile() -> tuple[ctypes.CDLL | None, str]:
    if os.environ.get("HF_OPTIM_NATIVE", "1") == "0":
        return None, "disabled by HF_OPTIM_NATIVE=0"
    if platform.system() not in ("Linux", "Darwin"):
        return None, f"no native kernels on {platform.system()}"
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        return None, "no C compiler found (set CC)"
    source = _SOURCE.read_bytes()
    try:
        version = subprocess.run(
            [compiler, "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError) as error:
        return None, f"{compiler} --version failed: {error}"
    failures = []
    for threading, flags in _THREADING:
        library, failure = _build(compiler, [*_FLAGS, *flags], threading, source, version)
        if library is None:
            failures.append(failure)
            continue
        try:
            lib = ctypes.CDLL(str(library))
            break
        except OSError as error:
            failures.append(f"loading {library} failed: {error}")
    else:
        return None, "; ".join(failures)
    ptrs = ctypes.POINTER(ctypes.c_void_p)
    i64 = ctypes.POINTER(ctypes.c_int64)
    f64 = ctypes.POINTER(ctypes.c_double)
    i32 = ctypes.POINTER(ctypes.c_int32)
    # count; g, p, m, row, col, rms; rows, cols, numel, types; then each call's own (see their comments in adafactor.c)
    shared = [ctypes.c_int64, *[ptrs] * 6, i64, i64, i64, i32]
    # the statistics calls' own: beta2t, stats, eps1, rms_in_apply, threads, bad_index
    statistics_own = [f64, f64, ctypes.c_double, ctypes.c_int, ctypes.c_int, i64]
    # the apply calls' own end in beta1, decay, rms_in_apply, sums, sums_numel, threads, bad_index
    apply_tail = [ctypes.c_double, ctypes.c_int, ctypes.c_int, f64, ctypes.c_int64, ctypes.c_int, i64]
    lib.hf_adafactor_statistics.argtypes = [*shared, *statistics_own]
    lib.hf_adafactor_statistics.restype = ctypes.c_int
    lib.hf_adafactor_apply.argtypes = [*shared, f64, ctypes.c_void_p, ctypes.c_int64, *apply_tail]
    lib.hf_adafactor_apply.restype = ctypes.c_int
    # unfactored: count; g, p, m, v, rms; n, numel, types; then each call's own
    flat = [ctypes.c_int64, *[ptrs] * 5, i64, i64, i32]
    lib.hf_adafactor_flat_statistics.argtypes = [*flat, *statistics_own]
    lib.hf_adafactor_flat_statistics.restype = ctypes.c_int
    lib.hf_adafactor_flat_apply.argtypes = [*flat, f64, *apply_tail]
    lib.hf_adafactor_flat_apply.restype = ctypes.c_int
    lib.hf_adafactor_types.argtypes = []
    lib.hf_adafactor_types.restype = ctypes.c_int
    lib.hf_adafactor_spans.argtypes = []
    lib.hf_adafactor_spans.restype = ctypes.c_int
    return lib, f"{library}"


def adafactor_library() -> ctypes.CDLL | None:
    """The compiled Adafactor kernel, or None (see :func:`status`); compiled on the first call of a process."""
    if "adafactor" not in _state:
        lib, why = _compile()
        _state["adafactor"], _state["why"] = lib, why
        _LOG.info("hf_optim_torch native Adafactor kernel: %s", "loaded from " + why if lib else why)
    return _state["adafactor"]  # type: ignore[return-value]


def status() -> str:
    """Whether the native Adafactor kernel is in use: ``"native: <library path>"`` or ``"torch: <reason>"``."""
    lib = adafactor_library()
    return f"native: {_state['why']}" if lib is not None else f"torch: {_state['why']}"
