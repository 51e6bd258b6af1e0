"""The native Adafactor kernel (``hf_optim_torch/_native``): used by default, same update as the torch paths."""

from __future__ import annotations

import gc
import shutil
from typing import Any

import hf_optim_spec
import hf_optim_torch
import pytest
import torch
from hf_optim_torch import _adafactor_native_calls, _native
from hf_optim_torch._native import adafactor_call

#: float32 matrices and unfactored tensors (native), and a 3-D parameter (torch paths)
SHAPES = [(128, 96), (7, 3), (1, 5), (300, 1), (64,), (5000,), (2, 3, 4)]
VARIANTS = [
    {},
    {"beta1": 0.9},
    {"beta1": 0.9, "first_moment": "unscaled"},
    {"weight_decay": 0.1},
    {"scale_parameter": False, "relative_step": False, "lr": 1e-2, "clip_threshold": 0.5},
    {"maximize": True},
    {"warmup_init": True},
]


def _run(
    monkeypatch: pytest.MonkeyPatch,
    lib: Any,
    steps: int = 15,
    shapes: list = SHAPES,
    kind: str = "factored",
    dtype: torch.dtype = torch.float32,
    **kwargs: Any,
) -> tuple[list, list, int]:
    """Parameters (of ``dtype``, and their gradients) and state after ``steps`` steps with the kernel ``lib`` (None:
    the torch paths), and how many tensors its calls of ``kind`` (factored / unfactored) took."""
    monkeypatch.setitem(_native._state, "adafactor", lib)
    calls: list[int] = []
    real = getattr(_adafactor_native_calls, f"adafactor_{kind}")
    counted = lambda *a, **k: (calls.append(len(a[1])), real(*a, **k))  # noqa: E731
    monkeypatch.setattr(_adafactor_native_calls, f"adafactor_{kind}", counted)
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s, generator=gen).to(dtype)) for s in shapes]
    optimizer = hf_optim_torch.Adafactor(params, **kwargs)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(dtype)
        optimizer.step()
    state = [{k: v.clone() for k, v in optimizer.state[p].items()} for p in params]
    return [p.detach().clone() for p in params], state, sum(calls)


@pytest.mark.parametrize("kwargs", VARIANTS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "defaults")
def test_native_kernel_runs_the_matrices_and_matches_the_torch_path(monkeypatch, kernel, kwargs) -> None:
    native, native_state, matrices = _run(monkeypatch, kernel, **kwargs)
    assert matrices == 15 * 4, "each step should hand the four float32 matrices to the native kernel"
    unfactored = _run(monkeypatch, kernel, kind="unfactored", **kwargs)[2]
    assert unfactored == 15 * 2, "and the two 1-D tensors to its unfactored call"
    torch_path, torch_state, none = _run(monkeypatch, None, **kwargs)
    assert none == 0
    tol = hf_optim_spec.get("adafactor").tol("float32")
    for a, b in zip(native, torch_path):
        torch.testing.assert_close(a, b, rtol=tol.rtol, atol=tol.atol)
    for sa, sb in zip(native_state, torch_state):
        assert sa.keys() == sb.keys()
        for key in sa:
            assert sa[key].dtype == sb[key].dtype and sa[key].shape == sb[key].shape, key
            torch.testing.assert_close(sa[key], sb[key], rtol=tol.rtol, atol=tol.atol)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("kwargs", VARIANTS[:5], ids=["defaults", "beta1", "unscaled", "weight_decay", "unscaled_lr"])
def test_native_kernel_takes_16_bit_parameters_and_gradients(monkeypatch, kernel, dtype, kwargs) -> None:
    """16-bit parameters with their 16-bit gradients: read by the kernel as they are, float32 arithmetic and state,
    parameters stored to nearest; the result is the torch path's (which upcasts) within the spec's tolerance."""
    steps = 6
    native, native_state, matrices = _run(monkeypatch, kernel, steps=steps, dtype=dtype, **kwargs)
    assert matrices == steps * 4
    assert _run(monkeypatch, kernel, steps=steps, dtype=dtype, kind="unfactored", **kwargs)[2] == steps * 2
    torch_path, torch_state, _ = _run(monkeypatch, None, steps=steps, dtype=dtype, **kwargs)
    tol = hf_optim_spec.get("adafactor").tol(str(dtype).removeprefix("torch."))
    for a, b in zip(native, torch_path):
        assert a.dtype == dtype
        torch.testing.assert_close(a.float(), b.float(), rtol=tol.rtol, atol=tol.atol)
    # both store float32 values to nearest, which differ in their last float32 bits only: the stored values differ
    # where those straddle a rounding boundary, rarely (storing by truncation or another tie rule differs in ~half)
    differ = sum(int((a != b).sum()) for a, b in zip(native, torch_path))
    assert differ <= 0.01 * sum(a.numel() for a in native), f"{differ} stored values differ from torch's rounding"
    for sa, sb in zip(native_state, torch_state):
        for key in sa:
            assert sa[key].dtype == sb[key].dtype == (torch.float32 if key != "step" else sb[key].dtype), key
            torch.testing.assert_close(sa[key], sb[key], rtol=tol.rtol, atol=tol.atol)


def test_stochastic_rounding_keeps_bfloat16_parameters_on_the_torch_path(monkeypatch, kernel) -> None:
    """The kernel stores to nearest only: a bfloat16 parameter rounded stochastically is stepped by torch."""
    kwargs = {"stochastic_rounding": True, "dtype": torch.bfloat16, "steps": 2}
    assert _run(monkeypatch, kernel, **kwargs)[2] == 0
    assert _run(monkeypatch, kernel, kind="unfactored", **kwargs)[2] == 0


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_every_16_bit_value_comes_back_unchanged_from_a_step_that_does_not_move_it(monkeypatch, kernel, dtype):
    """All 65536 bit patterns as a parameter whose update is zero: the kernel's conversion to float32 and back (to
    nearest) is exact for every value, subnormals, infinities and signed zeros included; NaN stays NaN."""
    monkeypatch.setitem(_native._state, "adafactor", kernel)
    values = torch.arange(65536, dtype=torch.int32).to(torch.int16).view(dtype)
    for shape in ((65536,), (256, 256)):
        w = torch.nn.Parameter(values.clone().view(shape))
        optimizer = hf_optim_torch.Adafactor([w], lr=1e-3, relative_step=False, scale_parameter=False)
        w.grad = torch.zeros(shape, dtype=dtype)
        optimizer.step()
        out = w.detach().reshape(-1)
        nan = values.isnan()
        assert torch.equal(out.isnan(), nan)
        assert torch.equal(out[~nan].view(torch.int16), values[~nan].view(torch.int16))


HARNESS = """
#include "{source}"
void to_float(const uint16_t *h, float *f, int64_t n, int type) {{ as_floats((void *)h, type, 0, n, f); }}
void from_float(const float *f, uint16_t *h, int64_t n, int type) {{ store_param(h, type, 0, n, f); }}
"""


@pytest.mark.parametrize("flags", [[], [f for f in _native._FLAGS if f.startswith("-m")]], ids=["portable", "as-built"])
def test_the_kernels_16_bit_conversions_are_torchs_on_every_value_and_tie(kernel, tmp_path, flags) -> None:
    """The conversions of adafactor.c (integer code everywhere, F16C instructions where the CPU has them, which
    the library's -march=native turns on) against torch's: every 16-bit value to float32, and to 16 bits the midpoints between
    every two neighbouring values (the ties), the values themselves, random float32 bit patterns and the edges."""
    import ctypes
    import subprocess

    source = tmp_path / "harness.c"
    source.write_text(HARNESS.format(source=_native._SOURCE), encoding="utf-8")
    library = tmp_path / "harness.so"
    compiler = shutil.which("cc") or shutil.which("gcc")
    subprocess.run(
        [compiler, "-O2", "-std=c99", "-shared", "-fPIC", *flags, str(source), "-o", str(library)], check=True
    )
    lib = ctypes.CDLL(str(library))
    gen = torch.Generator().manual_seed(7)
    for code, dtype in ((1, torch.bfloat16), (2, torch.float16)):
        values = torch.arange(65536, dtype=torch.int32).to(torch.int16).view(dtype)
        up = torch.empty(65536)
        lib.to_float(ctypes.c_void_p(values.data_ptr()), ctypes.c_void_p(up.data_ptr()), ctypes.c_int64(65536), code)
        expected = values.float()
        assert torch.equal(up.isnan(), expected.isnan())
        assert torch.equal(up[~up.isnan()].view(torch.int32), expected[~expected.isnan()].view(torch.int32))
        finite = expected[expected.isfinite()].double().unique()
        edges = [0.0, -0.0, float("inf"), -float("inf"), float("nan"), 65504.0, 65520.0, 2.0**-24, 2.0**-25, 1e-45]
        x = torch.cat([
            ((finite[1:] + finite[:-1]) / 2).float(),  # ties (exact in float32)
            expected,
            torch.randint(-(2**31), 2**31, (200_000,), generator=gen, dtype=torch.int64).to(torch.int32).view(torch.float32),
            torch.tensor(edges),
        ])  # fmt: skip
        down = torch.empty(x.numel(), dtype=dtype)
        lib.from_float(ctypes.c_void_p(x.data_ptr()), ctypes.c_void_p(down.data_ptr()), ctypes.c_int64(x.numel()), code)
        want = x.to(dtype)
        assert torch.equal(down.isnan(), want.isnan())
        wrong = (down.view(torch.int16) != want.view(torch.int16)) & ~want.isnan()
        assert not wrong.any(), f"{dtype}: {x[wrong][:5].tolist()} stored as {down[wrong][:5].tolist()}"


@pytest.mark.parametrize("kwargs", [{}, VARIANTS[4]], ids=["defaults", "unscaled_lr"])
def test_native_kernel_on_matrices_of_more_than_one_group(monkeypatch, kernel, kwargs) -> None:
    """Wide matrices whose column sums exceed one group (GROUP_BYTES in adafactor.c): each group is its own job.
    Their rows are updated in several chunks (UPDATE_CHUNK), which also sum p**2 without scale_parameter."""
    shapes = [(3, 9000)] * 6 + [(2, 50000)]  # 6 x 9000 columns > one group of 43690; 50000 > a group on its own
    native, native_state, matrices = _run(monkeypatch, kernel, steps=3, shapes=shapes, **kwargs)
    assert matrices == 3 * len(shapes)
    torch_path, torch_state, _ = _run(monkeypatch, None, steps=3, shapes=shapes, **kwargs)
    tol = hf_optim_spec.get("adafactor").tol("float32")
    for a, b in zip(native, torch_path):
        torch.testing.assert_close(a, b, rtol=tol.rtol, atol=tol.atol)
    for sa, sb in zip(native_state, torch_state):
        torch.testing.assert_close(sa["RMS"], sb["RMS"], rtol=tol.rtol, atol=tol.atol)


@pytest.mark.parametrize("shape", [(64, 48), (3000,)], ids=["matrix", "vector"])
def test_native_kernel_matches_the_float64_reference(monkeypatch, kernel, shape) -> None:
    """The kernel against the float64 arithmetic of the torch path (the reference's), on a matrix and a vector."""
    monkeypatch.setitem(_native._state, "adafactor", kernel)
    gen = torch.Generator().manual_seed(1)
    w0 = torch.randn(shape, generator=gen, dtype=torch.float64)
    grads = [torch.randn(shape, generator=gen, dtype=torch.float64) for _ in range(10)]
    results = {}
    for dtype in (torch.float32, torch.float64):  # float64 takes the torch path: the reference arithmetic
        w = torch.nn.Parameter(w0.to(dtype))
        optimizer = hf_optim_torch.Adafactor([w], beta1=0.9, weight_decay=0.01)
        for g in grads:
            w.grad = g.to(dtype)
            optimizer.step()
        results[dtype] = w.detach().double()
    tol = hf_optim_spec.get("adafactor").tol("float32")
    torch.testing.assert_close(results[torch.float32], results[torch.float64], rtol=tol.rtol, atol=tol.atol)


def test_native_state_resumes_on_the_torch_path_and_back(monkeypatch, kernel) -> None:
    """A checkpoint of the native path loads into an optimizer on the torch path (same state) and vice versa."""
    tol = hf_optim_spec.get("adafactor").tol("float32")
    gen = torch.Generator().manual_seed(2)
    w0, grads = torch.randn(32, 16, generator=gen), [torch.randn(32, 16, generator=gen) for _ in range(8)]

    def train(libs: list[Any]) -> torch.Tensor:
        w = torch.nn.Parameter(w0.clone())
        optimizer = hf_optim_torch.Adafactor([w])
        for i, g in enumerate(grads):
            if i == 4:  # checkpoint and restore into a fresh optimizer
                saved = optimizer.state_dict()
                optimizer = hf_optim_torch.Adafactor([w])
                optimizer.load_state_dict(saved)
            monkeypatch.setitem(_native._state, "adafactor", libs[i >= 4])
            w.grad = g.clone()
            optimizer.step()
        return w.detach().clone()

    reference = train([None, None])
    for libs in ([kernel, None], [None, kernel]):
        torch.testing.assert_close(train(libs), reference, rtol=tol.rtol, atol=tol.atol)


def test_native_kernel_can_be_disabled_and_a_failed_build_falls_back(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(_native, "_state", {})
    monkeypatch.setenv("HF_OPTIM_NATIVE", "0")
    assert _native.status() == "torch: disabled by HF_OPTIM_NATIVE=0"
    monkeypatch.setattr(_native, "_state", {})
    monkeypatch.delenv("HF_OPTIM_NATIVE")
    monkeypatch.setenv("HF_OPTIM_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", shutil.which("false") or "false")
    assert _native.status().startswith("torch: "), _native.status()
    assert list(tmp_path.iterdir()) == [], "a failed build leaves no file behind"
    w = torch.nn.Parameter(torch.ones(4, 3))
    w.grad = torch.full((4, 3), 0.5)
    hf_optim_torch.Adafactor([w]).step()  # the torch path
    assert bool(torch.all(w < 1.0))


@pytest.mark.parametrize("kwargs", [{"beta1": 0.9}, VARIANTS[4]], ids=["beta1", "unscaled_lr"])
def test_native_results_do_not_depend_on_the_thread_count(monkeypatch, kernel, kwargs) -> None:
    """Resume stays exact on a machine with another core count: the kernel's sums are cut the same way (the sums of
    p**2 of the apply call too, which it takes without scale_parameter)."""
    monkeypatch.setattr(adafactor_call, "PARALLEL_ELEMENTS", 0)  # every call on the threads asked for, small ones too
    before = torch.get_num_threads()
    results = []
    shapes = [*SHAPES, (100003,)]  # its spans take several chunks of pass 2 (UPDATE_CHUNK)
    try:
        for threads in (1, 2, 3, 5):
            torch.set_num_threads(threads)
            results.append(_run(monkeypatch, kernel, steps=6, shapes=shapes, **kwargs))
    finally:
        torch.set_num_threads(before)
    first_params, first_state, _ = results[0]
    for params, state, _ in results[1:]:
        assert all(torch.equal(a, b) for a, b in zip(params, first_params))
        assert all(torch.equal(sa[k], sb[k]) for sa, sb in zip(state, first_state) for k in sa)


class _ThreadsRecorded:
    """The kernel, with the thread count of each of its update calls recorded (their second-to-last argument)."""

    def __init__(self, lib: Any) -> None:
        self._lib = lib
        self.threads: list[int] = []

    def __getattr__(self, name: str) -> Any:
        function = getattr(self._lib, name)
        if not name.endswith(("_statistics", "_apply")):
            return function
        return lambda *args: (self.threads.append(args[-2]), function(*args))[1]


@pytest.mark.parametrize(("shapes", "parallel"), [([(100, 300), (8,)], False), ([(200, 200), (50000,)], True)])
def test_native_calls_over_few_elements_run_on_the_calling_thread(monkeypatch, kernel, shapes, parallel) -> None:
    """A call over fewer than PARALLEL_ELEMENTS elements does not start the OpenMP team (whose start and join cost
    more than it saves there, and far more on a busy machine: 200 param groups of 8 elements, 477 -> 96 ms a step
    beside two busy processes on 2 cores); a larger one runs on torch's threads."""
    before = torch.get_num_threads()
    recorded = _ThreadsRecorded(kernel)
    try:
        torch.set_num_threads(2)
        _run(monkeypatch, recorded, steps=2, shapes=shapes[:1])
        _run(monkeypatch, recorded, steps=2, shapes=shapes[1:], kind="unfactored")
    finally:
        torch.set_num_threads(before)
    assert len(recorded.threads) == 8, "two calls a step, two steps, for the matrix and for the vector"
    assert recorded.threads == [2 if parallel else 1] * 8


def test_native_kernel_builds_into_an_empty_cache(monkeypatch, tmp_path, kernel) -> None:
    """What a fresh machine does at its first Adafactor step: compile, install atomically, load."""
    monkeypatch.setattr(_native, "_state", {})
    monkeypatch.setenv("HF_OPTIM_CACHE_DIR", str(tmp_path / "cache"))
    assert _native.status() == f"native: {next((tmp_path / 'cache').iterdir())}"
    assert [p.suffix for p in (tmp_path / "cache").iterdir()] == [".so"], "only the library is left behind"
    native, _, matrices = _run(monkeypatch, _native.adafactor_library(), steps=2)
    assert matrices == 2 * 4 and all(bool(torch.isfinite(p).all()) for p in native)


def test_a_native_step_leaves_no_garbage_for_the_collector(monkeypatch, kernel) -> None:
    """ctypes keeps an array type only while an array of it lives, and a type is a reference cycle: a step that made
    its argument types anew would leave them for Python's garbage collector at every step after a collection (the
    kernel's calls keep theirs: ``adafactor_call.array_type``)."""
    monkeypatch.setitem(_native._state, "adafactor", kernel)
    gen = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(shape, generator=gen)) for shape in [(48, 32), (16,), (8, 8)]]
    optimizer = hf_optim_torch.Adafactor([{"params": params[:2]}, {"params": params[2:], "weight_decay": 0.1}])
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)
    optimizer.step()
    gc.collect()
    debug = gc.get_debug()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what a collection would free is kept in gc.garbage instead
    try:
        optimizer.step()
        gc.collect()
        left = [type(o).__name__ for o in gc.garbage]
    finally:
        gc.set_debug(debug)
        gc.garbage.clear()
    assert left == []
