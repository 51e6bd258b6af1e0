"""The native Adafactor kernel checks every size it is handed and refuses a wrong one before it changes anything.

``hf_adafactor_statistics`` and ``hf_adafactor_apply`` (``hf_optim_torch/_native/adafactor.c``, the two calls of
a step) are called here through ctypes, on buffers that
are views into larger tensors: the elements on either side hold a canary, and every test that expects a refusal
compares the whole backing tensors (view and canaries) with a copy taken before the call. A kernel that trusted a
size would write into a canary (or past it, into the heap). ``adafactor_factored`` turns the codes into a
ValueError naming the matrix, the buffer and both element counts; the kernel's threads (OpenMP's team) survive fork
and calls from several Python threads at once.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any

import hf_optim_torch
import pytest
import torch
from hf_optim_torch import _adafactor_native_calls, _native
from hf_optim_torch._adafactor_args import AdafactorOptions
from hf_optim_torch._native.adafactor_call import adafactor_factored, adafactor_unfactored

BUFFERS = ("g", "p", "m", "row", "col", "rms")  # the kernel's order (BUF_G ... BUF_RMS in adafactor.c)
# the array arguments (ARG_ROWS ... after the buffers) of the statistics call, and the apply call's own two
ARRAYS = (*BUFFERS, "rows", "cols", "numel", "types", "beta2t", "stats")
APPLY_ARRAYS = (*BUFFERS, "rows", "cols", "numel", "types", "scalars", "work")
TYPE_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}  # TYPE_* in adafactor.c (of g and p)
SHAPES = [(5, 7), (8, 6), (4, 9)]  # the tests spoil matrix 1: matrix 0 comes before it and must be left alone too
PAD = 16  # canary elements on either side of every buffer
CANARY = 1234.5

E_NOMEM, E_COUNT, E_THREADS, E_ROWS, E_COLS, E_TOO_LARGE, E_WORK, E_TYPE, E_SUMS = -1, -2, -3, -4, -5, -6, -7, -8, -9
E_NULL, E_ALIGN, E_SIZE, E_ARRAY = -10, -20, -30, -40


@pytest.fixture
def lib() -> Any:
    lib = _native.adafactor_library()
    if lib is None:
        pytest.skip(f"the native kernel is not built here ({_native.status()}): no C compiler, or disabled")
    return lib


class Call:
    """The arguments of one step's two kernel calls over guarded buffers; a test spoils some, then runs it."""

    def __init__(
        self, shapes: list[tuple[int, int]] = SHAPES, seed: int = 0, dtypes: tuple[torch.dtype, ...] = ()
    ) -> None:
        """``dtypes``: of the gradients and the parameters (default float32; every other buffer is float32)."""
        self.gen = torch.Generator().manual_seed(seed)
        self.dtypes = dict(zip(("g", "p"), dtypes))
        self.wholes: list[torch.Tensor] = []  # every backing tensor, canaries included
        self.views: dict[str, list[torch.Tensor]] = {name: [] for name in BUFFERS}
        self.rows = [r for r, _ in shapes]
        self.cols = [c for _, c in shapes]
        for r, c in shapes:
            for name, shape in zip(BUFFERS, [(r, c)] * 3 + [(r,), (c,), ()]):
                self.views[name].append(self.guarded(shape, name))
        self.types = [TYPE_CODES[v.dtype] for name in ("g", "p") for v in self.views[name]]
        self.pointers = {name: [v.data_ptr() for v in views] for name, views in self.views.items()}
        self.numel = {name: [v.numel() for v in views] for name, views in self.views.items()}
        self.null: set[str] = set()  # array arguments passed as NULL
        self.count = len(shapes)
        self.stats: Any = None  # the statistics call's output (the apply call's mean(R) comes from it)
        self.rms_in_apply = 0  # 1: the apply call, not the statistics call, reads p for its RMS (both are told)
        self.sums_numel: int | None = None  # the apply call's sums buffer (None: 2 * spans * count, as it needs)
        # the apply call's work buffer, canaries either side; a ctypes array, not a tensor: a large torch op (its
        # fill) would use OpenMP threads, which a forked child (test_a_forked_child_runs...) cannot use
        self.work_numel = sum(self.cols)
        self.work = (ctypes.c_float * (self.work_numel + 2 * PAD))(*[CANARY] * (self.work_numel + 2 * PAD))

    def guarded(self, shape: tuple[int, ...], name: str) -> torch.Tensor:
        """A contiguous ``name`` buffer of ``shape`` inside a larger one whose PAD elements either side hold CANARY."""
        n = 1
        for size in shape:
            n *= size
        whole = torch.full((n + 2 * PAD,), CANARY, dtype=self.dtypes.get(name, torch.float32))
        values = (
            torch.rand(n, generator=self.gen) + 0.5 if name in ("row", "col") else torch.randn(n, generator=self.gen)
        )
        whole[PAD : PAD + n] = values
        self.wholes.append(whole)
        return whole[PAD : PAD + n].view(shape)

    def resize(self, name: str, k: int, shape: tuple[int, ...]) -> None:
        """Hand matrix ``k`` a ``name`` buffer of ``shape`` (with its true element count)."""
        view = self.guarded(shape, name)
        self.views[name][k] = view
        self.pointers[name][k] = view.data_ptr()
        self.numel[name][k] = view.numel()

    def snapshot(self) -> list[torch.Tensor]:
        return [w.clone() for w in self.wholes]

    def unchanged(self, before: list[torch.Tensor]) -> bool:
        return all(torch.equal(a.view(torch.uint8), b.view(torch.uint8)) for a, b in zip(before, self.wholes))

    def canaries_intact(self) -> bool:
        work_intact = list(self.work[:PAD]) == list(self.work[-PAD:]) == [CANARY] * PAD
        return work_intact and all(
            torch.equal(w[:PAD], canary) and torch.equal(w[-PAD:], canary)
            for w in self.wholes
            for canary in [torch.full((PAD,), CANARY, dtype=w.dtype)]
        )

    def run(self, lib: Any, threads: int = 2, moment: bool = True) -> tuple[int, int]:
        """(code, bad_index) of a step: the statistics call, then (unless it refused) the apply call."""
        result = self.statistics(lib, threads, moment)
        return result if result[0] else self.apply(lib, threads, moment)

    def _array(self, kind: Any, values: list[Any], name: str) -> Any:
        return None if name in self.null else (kind * len(values))(*values)

    def _shared(self, moment: bool) -> list[Any]:
        """count; the buffers' pointer arrays; rows, cols, numel, types (the leading arguments of both calls)."""
        pointers = [self._array(ctypes.c_void_p, self.pointers[name], name) for name in BUFFERS]
        if not moment:
            pointers[BUFFERS.index("m")] = None
        numel = [v for name in BUFFERS for v in self.numel[name]]
        return [
            self.count,
            *pointers,
            self._array(ctypes.c_int64, self.rows, "rows"),
            self._array(ctypes.c_int64, self.cols, "cols"),
            self._array(ctypes.c_int64, numel, "numel"),
            self._array(ctypes.c_int32, self.types, "types"),
        ]

    def statistics(self, lib: Any, threads: int = 2, moment: bool = True) -> tuple[int, int]:
        n = len(self.rows)
        bad_index = ctypes.c_int64(-99)
        self.stats = self._array(ctypes.c_double, [0.0] * (3 * n), "stats")
        beta2t = self._array(ctypes.c_double, [0.5] * n, "beta2t")
        args = [*self._shared(moment), beta2t, self.stats, 1e-30, self.rms_in_apply, threads, ctypes.byref(bad_index)]
        return lib.hf_adafactor_statistics(*args), bad_index.value

    def apply(self, lib: Any, threads: int = 2, moment: bool = True) -> tuple[int, int]:
        n = len(self.rows)
        bad_index = ctypes.c_int64(-99)
        means = [1.0] * n if self.stats is None else [self.stats[3 * k] for k in range(n)]
        scalars = self._array(ctypes.c_double, [v for k in range(n) for v in (means[k], 1e-2, 1e-4, 1.0)], "scalars")
        work = None if "work" in self.null else ctypes.addressof(self.work) + PAD * ctypes.sizeof(ctypes.c_float)
        beta1 = 0.9 if moment else -1.0
        sums_numel = 2 * lib.hf_adafactor_spans() * self.count if self.sums_numel is None else self.sums_numel
        sums = None if "sums" in self.null else (ctypes.c_double * max(sums_numel, 1))()
        own = [scalars, work, self.work_numel, beta1, 1, self.rms_in_apply, sums, sums_numel, threads]
        args = [*self._shared(moment), *own, ctypes.byref(bad_index)]
        return lib.hf_adafactor_apply(*args), bad_index.value


def refused(lib: Any, call: Call, code: int, bad_index: int, **kwargs: Any) -> None:
    before = call.snapshot()
    assert call.run(lib, **kwargs) == (code, bad_index)
    assert call.unchanged(before), "a refused call changed a buffer (or wrote into a canary)"


DTYPES = {
    "float32": (),
    "bfloat16": (torch.bfloat16, torch.bfloat16),
    "float16": (torch.float16, torch.float16),
    "float32 g, bfloat16 p": (torch.float32, torch.bfloat16),
}


@pytest.mark.parametrize("threads", [1, 2, 3, 40])
@pytest.mark.parametrize("moment", [True, False])
@pytest.mark.parametrize("dtypes", list(DTYPES))
@pytest.mark.parametrize("rms_in_apply", [0, 1])
def test_a_valid_call_updates_the_buffers_and_no_canary(lib, threads, moment, dtypes, rms_in_apply) -> None:
    """The control for every test below: the same buffers, unspoiled, are updated in place and only there."""
    call = Call(dtypes=DTYPES[dtypes])
    call.rms_in_apply = rms_in_apply
    before = [v.clone() for name in BUFFERS for v in call.views[name]]
    assert call.run(lib, threads=threads, moment=moment) == (0, -1)
    after = dict(zip([(name, k) for name in BUFFERS for k in range(3)], before))
    for name in BUFFERS:
        for k, view in enumerate(call.views[name]):
            written = name != "g" and (moment or name != "m")
            assert torch.equal(view, after[name, k]) != written, f"{name} of matrix {k}"
    assert call.canaries_intact()


@pytest.mark.parametrize("dtypes", list(DTYPES))
def test_with_rms_in_apply_the_apply_call_writes_the_rms_of_p_before_the_step(lib, dtypes) -> None:
    """rms_in_apply (the step of an Adafactor without scale_parameter): the statistics call leaves the RMS to the
    apply call and hands back NaN for it; the apply call writes the RMS of each parameter as it was before the step
    (as the statistics call would have), and every other buffer comes out bit for bit as without it."""
    results = {}
    for rms_in_apply in (0, 1):
        call = Call(shapes=[(5, 7), (40, 4100), (3, 1)], dtypes=DTYPES[dtypes])  # 4100: two chunks of pass 2
        call.rms_in_apply = rms_in_apply
        expected = [float(p.double().square().mean().sqrt()) for p in call.views["p"]]
        rms_before = [v.clone() for v in call.views["rms"]]
        assert call.statistics(lib) == (0, -1)
        reported = [call.stats[3 * k + 1] for k in range(call.count)]
        if rms_in_apply:
            assert all(r != r for r in reported), "RMS(p) of a statistics call that did not read p should be NaN"
            assert all(torch.equal(a, b) for a, b in zip(call.views["rms"], rms_before)), "left to the apply call"
        else:
            assert reported == pytest.approx(expected, rel=1e-6)
        assert call.apply(lib) == (0, -1)
        assert [float(v) for v in call.views["rms"]] == pytest.approx(expected, rel=1e-6)
        results[rms_in_apply] = {name: [v.clone() for v in call.views[name]] for name in BUFFERS}
        assert call.canaries_intact()
    for name in BUFFERS:
        if name != "rms":
            assert all(torch.equal(a, b) for a, b in zip(results[0][name], results[1][name])), name


@pytest.mark.parametrize("rms_in_apply", [0, 1])
@pytest.mark.parametrize("spoil", ["one double short", "NULL"])
def test_an_apply_call_without_room_for_its_sums_is_refused_and_nothing_is_written(lib, rms_in_apply, spoil) -> None:
    """With rms_in_apply the apply call keeps its partial sums of p**2 in the caller's buffer (it allocates nothing,
    so a step is never left half done for lack of memory): one too small, or none, is refused before any write.
    Without rms_in_apply the buffer is not read, and none is needed."""
    call = Call()
    call.rms_in_apply = rms_in_apply
    if spoil == "NULL":
        call.null.add("sums")
    else:
        call.sums_numel = 2 * lib.hf_adafactor_spans() * call.count - 1
    assert call.statistics(lib) == (0, -1)
    before = call.snapshot()
    if rms_in_apply:
        assert call.apply(lib) == (E_SUMS, -1)
        assert call.unchanged(before), "a refused apply call changed a buffer"
    else:
        assert call.apply(lib) == (0, -1)
    assert call.canaries_intact()


SIZES = {
    "row too long": ("row", lambda r, c: (r + 1,)),
    "row too short": ("row", lambda r, c: (r - 1,)),
    "col too long": ("col", lambda r, c: (c + 1,)),
    "col of shape (n, 1) with n short": ("col", lambda r, c: (c - 1, 1)),
    "col of shape (n, 1) with n long": ("col", lambda r, c: (c + 3, 1)),
    "row of the col's size (transposed)": ("row", lambda r, c: (c,)),
    "g shorter than rows x cols": ("g", lambda r, c: (r * c - 1,)),
    "g of the transposed shape plus a row": ("g", lambda r, c: (c + 1, r)),
    "p longer than rows x cols": ("p", lambda r, c: (r + 1, c)),
    "m shorter than rows x cols": ("m", lambda r, c: (r - 1, c)),
    "rms empty": ("rms", lambda r, c: (0,)),
}


@pytest.mark.parametrize("case", list(SIZES))
def test_a_buffer_of_the_wrong_size_is_refused_and_nothing_is_written(lib, case) -> None:
    name, shape = SIZES[case]
    call = Call()
    call.resize(name, 1, shape(call.rows[1], call.cols[1]))
    refused(lib, call, E_SIZE - BUFFERS.index(name), 1)


def test_an_rms_of_more_than_one_element_is_accepted(lib) -> None:
    call = Call()
    call.resize("rms", 1, (3,))
    assert call.run(lib) == (0, -1)
    assert call.canaries_intact()


def test_the_first_wrong_matrix_is_reported(lib) -> None:
    call = Call()
    call.resize("col", 2, (1,))
    call.resize("row", 1, (2,))
    refused(lib, call, E_SIZE - BUFFERS.index("row"), 1)


def test_an_element_count_the_caller_gets_wrong_is_refused(lib) -> None:
    """The kernel reads only the counts it is handed: a count that disagrees with rows x cols is refused."""
    call = Call()
    call.numel["g"][1] += 1
    refused(lib, call, E_SIZE - BUFFERS.index("g"), 1)


@pytest.mark.parametrize(
    ("rows", "cols", "code"),
    [
        (0, 6, E_ROWS),
        (-3, 6, E_ROWS),
        (8, 0, E_COLS),
        (8, -6, E_COLS),
        (2**32, 2**32, E_TOO_LARGE),  # rows x cols overflows int64
        (2**62, 3, E_TOO_LARGE),
        (2**31, 2**31, E_TOO_LARGE),  # fits int64, but more floats than any address space holds
    ],
    ids=["rows=0", "rows<0", "cols=0", "cols<0", "product overflows int64", "rows*3 overflows", "2^62 elements"],
)
def test_a_shape_without_elements_or_too_large_is_refused(lib, rows, cols, code) -> None:
    call = Call()
    call.rows[1], call.cols[1] = rows, cols
    refused(lib, call, code, 1)


@pytest.mark.parametrize("name", BUFFERS)
def test_a_null_buffer_of_one_matrix_is_refused(lib, name) -> None:
    call = Call()
    call.pointers[name][1] = None
    refused(lib, call, E_NULL - BUFFERS.index(name), 1)


@pytest.mark.parametrize("name", BUFFERS)
def test_a_buffer_not_aligned_to_a_float_is_refused(lib, name) -> None:
    call = Call()
    call.pointers[name][1] += 2
    refused(lib, call, E_ALIGN - BUFFERS.index(name), 1)


@pytest.mark.parametrize(("slot", "code"), [(1, 3), (1, -1), (len(SHAPES) + 1, 7)], ids=["g 3", "g -1", "p 7"])
def test_an_unknown_element_type_is_refused(lib, slot, code) -> None:
    call = Call()
    call.types[slot] = code
    refused(lib, call, E_TYPE, 1)


@pytest.mark.parametrize("name", ["g", "p"])
def test_a_16_bit_buffer_not_aligned_to_its_element_is_refused(lib, name) -> None:
    call = Call(dtypes=(torch.bfloat16, torch.float16))
    call.pointers[name][1] += 1
    refused(lib, call, E_ALIGN - BUFFERS.index(name), 1)


@pytest.mark.parametrize("name", [a for a in ARRAYS if a != "m"])
def test_a_null_argument_array_is_refused(lib, name) -> None:
    call = Call()
    call.null.add(name)
    refused(lib, call, E_ARRAY - ARRAYS.index(name), -1)


@pytest.mark.parametrize("name", ["scalars", "work"])
def test_a_null_array_of_the_apply_call_is_refused(lib, name) -> None:
    call = Call()
    call.null.add(name)
    before = call.snapshot()
    assert call.apply(lib) == (E_ARRAY - APPLY_ARRAYS.index(name), -1)
    assert call.unchanged(before)


def test_a_work_buffer_short_of_the_columns_is_refused(lib) -> None:
    call = Call()
    call.work_numel -= 1
    before = call.snapshot()
    assert call.apply(lib) == (E_WORK, -1)
    assert call.unchanged(before)


def test_the_apply_call_checks_the_buffers_too(lib) -> None:
    call = Call()
    call.resize("row", 1, (call.rows[1] + 1,))
    before = call.snapshot()
    assert call.apply(lib) == (E_SIZE - BUFFERS.index("row"), 1)
    assert call.unchanged(before)


def test_no_first_moment_is_a_null_m_array(lib) -> None:
    call = Call()
    before = call.snapshot()
    assert call.run(lib, moment=False) == (0, -1)
    m_wholes = [i for i, w in enumerate(call.wholes) if i % len(BUFFERS) == BUFFERS.index("m")]
    assert all(torch.equal(before[i], call.wholes[i]) for i in m_wholes), "m was written without a first moment"


@pytest.mark.parametrize(
    ("count", "threads", "code"), [(-1, 2, E_COUNT), (2**62, 2, E_COUNT), (3, 0, E_THREADS), (3, -4, E_THREADS)]
)
def test_a_wrong_count_or_thread_count_is_refused(lib, count, threads, code) -> None:
    call = Call()
    call.count = count
    refused(lib, call, code, -1, threads=threads)


def test_work_memory_that_cannot_be_allocated_changes_nothing(lib) -> None:
    """2^50 columns (counts that claim so, on small buffers): the column sums need more than any address space."""
    call = Call()
    call.cols[1] = 2**50
    call.rows[1] = 1
    for name in ("g", "p", "m"):
        call.numel[name][1] = 2**50
    call.numel["row"][1], call.numel["col"][1] = 1, 2**50
    refused(lib, call, E_NOMEM, -1)


# --- through adafactor_factored: the ValueError


def _native_call(lib: Any, spoil: Any = None, beta1: float | None = 0.9) -> dict[str, list[Any]]:
    gen = torch.Generator().manual_seed(3)
    t: dict[str, list[Any]] = {
        "params": [torch.randn(r, c, generator=gen) for r, c in SHAPES],
        "grads": [torch.randn(r, c, generator=gen) for r, c in SHAPES],
        "exp_avgs": [torch.zeros(r, c) for r, c in SHAPES],
        "rows": [torch.rand(r, generator=gen) + 0.5 for r, _ in SHAPES],
        "cols": [torch.rand(c, generator=gen) + 0.5 for _, c in SHAPES],
        "rms_values": [torch.zeros(()) for _ in SHAPES],
    }
    if spoil is not None:
        spoil(t)
    before = {k: [None if x is None else x.clone() for x in v] for k, v in t.items()}
    n = len(SHAPES)
    try:
        adafactor_factored(
            lib,
            t["params"],
            t["grads"],
            t["exp_avgs"] if beta1 is not None else None,
            t["rows"],
            t["cols"],
            t["rms_values"],
            rels=[1e-2] * n,
            beta2ts=[0.5] * n,
            options=AdafactorOptions(
                lr=None,
                eps=(1e-30, 1e-3),
                clip_threshold=1.0,
                decay_rate=-0.8,
                beta1=beta1,
                weight_decay=0.0,
                scale_parameter=True,
                relative_step=True,
                warmup_init=False,
            ),
        )
    finally:
        t["before"] = [before]
    return t


def _assert_unchanged(t: dict[str, list[Any]]) -> None:
    before = t["before"][0]
    for key, tensors in before.items():
        for a, b in zip(tensors, t[key]):
            assert a is None or torch.equal(a, b), f"{key} changed by a refused call"


MESSAGES = {
    "exp_avg_sq_row too long": (
        lambda t: t["rows"].__setitem__(1, torch.ones(9)),
        r"matrix 1 of the call \(a 8x6 parameter\) \(-33\): its exp_avg_sq_row has 9 elements \(shape \(9,\)\), "
        r"expected 8 \(rows\)",
    ),
    "exp_avg_sq_col of shape (n, 1) and the wrong count": (
        lambda t: t["cols"].__setitem__(1, torch.ones(5, 1)),
        r"matrix 1 .*\(-34\): its exp_avg_sq_col has 5 elements \(shape \(5, 1\)\), expected 6 \(columns\)",
    ),
    "exp_avg short": (
        lambda t: t["exp_avgs"].__setitem__(2, torch.zeros(3, 9)),
        r"matrix 2 of the call \(a 4x9 parameter\) \(-32\): its exp_avg has 27 elements \(shape \(3, 9\)\), "
        r"expected 36 \(4x9\)",
    ),
    "gradient of another shape": (
        lambda t: t["grads"].__setitem__(0, torch.zeros(7, 7)),
        r"matrix 0 .*\(-30\): its gradient has 49 elements \(shape \(7, 7\)\), expected 35 \(5x7\)",
    ),
    "RMS empty": (
        lambda t: t["rms_values"].__setitem__(1, torch.zeros(0)),
        r"matrix 1 .*\(-35\): its RMS has 0 elements \(shape \(0,\)\), expected at least 1",
    ),
    "exp_avg missing": (
        lambda t: t["exp_avgs"].__setitem__(1, None),
        r"matrix 1 .*\(-32\): its exp_avg is missing",
    ),
}


@pytest.mark.parametrize("case", list(MESSAGES))
def test_native_adafactor_names_the_matrix_the_buffer_and_both_counts(lib, case) -> None:
    spoil, message = MESSAGES[case]
    holder: dict[str, Any] = {}

    def spoil_and_keep(t: dict[str, list[Any]]) -> None:
        spoil(t)
        holder["t"] = t

    with pytest.raises(ValueError, match=message):
        _native_call(lib, spoil_and_keep)
    _assert_unchanged(holder["t"])


def test_native_adafactor_runs_the_unspoiled_call(lib) -> None:
    """The control of the messages above: the same call, unspoiled, updates the parameters."""
    t = _native_call(lib)
    assert not all(torch.equal(a, b) for a, b in zip(t["before"][0]["params"], t["params"]))


_VECTORS = (40, 7, 3000)
_FLAT_MESSAGES = {
    "exp_avg_sq short": (
        lambda t: t["full"].__setitem__(1, torch.ones(6)),
        r"unfactored tensor 1 of the call \(a 7-element parameter\) \(-33\): its exp_avg_sq has 6 elements",
    ),
    "exp_avg long": (
        lambda t: t["exp_avgs"].__setitem__(2, torch.zeros(3001)),
        r"unfactored tensor 2 .*\(-32\): its exp_avg has 3001 elements \(shape \(3001,\)\), expected 3000",
    ),
    "gradient short": (
        lambda t: t["grads"].__setitem__(0, torch.zeros(39)),
        r"unfactored tensor 0 .*\(-30\): its gradient has 39 elements",
    ),
    "RMS empty": (lambda t: t["rms"].__setitem__(0, torch.zeros(0)), r"\(-34\): its RMS has 0 elements"),
    "nothing spoiled": (lambda t: None, None),
}


@pytest.mark.parametrize("case", list(_FLAT_MESSAGES))
def test_native_unfactored_call_names_the_tensor_and_buffer_and_changes_nothing(lib, case) -> None:
    """The unfactored call checks every buffer's size in C before it writes (the Python side passes the sizes)."""
    gen = torch.Generator().manual_seed(4)
    t = {
        "params": [torch.randn(n, generator=gen) for n in _VECTORS],
        "grads": [torch.randn(n, generator=gen) for n in _VECTORS],
        "exp_avgs": [torch.zeros(n) for n in _VECTORS],
        "full": [torch.rand(n, generator=gen) + 0.5 for n in _VECTORS],
        "rms": [torch.zeros(()) for _ in _VECTORS],
    }
    spoil, message = _FLAT_MESSAGES[case]
    spoil(t)
    before = {k: [x.clone() for x in v] for k, v in t.items()}
    options = AdafactorOptions(None, (1e-30, 1e-3), 1.0, -0.8, 0.9, 0.0, True, True, False)
    n = len(_VECTORS)
    call = lambda: adafactor_unfactored(  # noqa: E731
        lib, t["params"], t["grads"], t["exp_avgs"], t["full"], t["rms"], rels=[1e-2] * n, beta2ts=[0.5] * n,
        options=options,
    )  # fmt: skip
    if message is None:
        call()
        assert not any(torch.equal(a, b) for a, b in zip(before["params"], t["params"]))
        return
    with pytest.raises(ValueError, match=message):
        call()
    for key, tensors in before.items():
        assert all(torch.equal(a, b) for a, b in zip(tensors, t[key])), f"{key} changed by a refused call"


def test_native_adafactor_takes_matrices_only(lib) -> None:
    with pytest.raises(ValueError, match="takes matrices"):
        _native_call(lib, lambda t: t["params"].__setitem__(0, torch.zeros(35)))


def test_native_adafactor_raises_memory_error_when_the_kernel_cannot_allocate() -> None:
    class NoMemory:
        @staticmethod
        def hf_adafactor_statistics(*args: Any) -> int:
            return E_NOMEM

    with pytest.raises(MemoryError, match="could not allocate its work memory for 3 matrices"):
        _native_call(NoMemory)


def test_a_state_that_does_not_fit_fails_the_step_instead_of_the_process(monkeypatch, lib) -> None:
    """The issue's crash: a row statistic one longer than its (resized) parameter, set behind load_state_dict."""
    monkeypatch.setitem(_native._state, "adafactor", lib)
    w = torch.nn.Parameter(torch.randn(48, 32))
    optimizer = hf_optim_torch.Adafactor([w])
    w.grad = torch.randn(48, 32)
    optimizer.step()
    optimizer.state[w]["exp_avg_sq_row"] = torch.ones(47)  # the kernel used to write 48 rows into it
    before = w.detach().clone()
    with pytest.raises(ValueError, match=r"exp_avg_sq_row has 47 elements .*expected 48"):
        optimizer.step()
    assert torch.equal(w.detach(), before)


@pytest.mark.parametrize("key", ["exp_avg_sq_row", "exp_avg_sq_col", "RMS"])
def test_a_statistic_on_another_device_is_not_handed_to_the_kernel(monkeypatch, lib, key) -> None:
    """A CPU parameter whose statistic was moved to another device (``meta`` here, a GPU in the case this guards: the
    kernel would read device memory as host memory) takes the torch path, which refuses to mix devices."""
    monkeypatch.setitem(_native._state, "adafactor", lib)
    taken: list[int] = []
    real = _adafactor_native_calls.adafactor_factored
    monkeypatch.setattr(
        _adafactor_native_calls, "adafactor_factored", lambda *a, **k: (taken.append(len(a[1])), real(*a, **k))
    )
    w = torch.nn.Parameter(torch.randn(48, 32))
    optimizer = hf_optim_torch.Adafactor([w])
    w.grad = torch.randn(48, 32)
    optimizer.step()
    assert taken == [1]
    optimizer.state[w][key] = optimizer.state[w][key].to("meta")
    with pytest.raises((RuntimeError, NotImplementedError)):
        optimizer.step()
    assert taken == [1]


# --- the threads


def test_calls_from_two_python_threads_at_once_match_serial_calls(lib) -> None:
    """ctypes lets go of the GIL: each calling thread gets its own OpenMP team; both calls are exact."""
    shapes = [(64, 48)] * 6 + [(3, 9000)] * 6  # several groups: several dispatches per call

    def run(seed: int, steps: int, out: list[torch.Tensor]) -> None:
        call = Call(shapes, seed=seed)
        for _ in range(steps):
            assert call.run(lib, threads=3) == (0, -1)
        out.extend(call.wholes)

    serial: list[list[torch.Tensor]] = [[], []]
    for seed in (0, 1):
        run(seed, 20, serial[seed])
    parallel: list[list[torch.Tensor]] = [[], []]
    workers = [threading.Thread(target=run, args=(seed, 20, parallel[seed]), daemon=True) for seed in (0, 1)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
    assert not any(worker.is_alive() for worker in workers), "a call did not return (deadlock)"
    for a, b in zip(serial, parallel):
        assert len(a) == len(b) > 0
        assert all(torch.equal(x, y) for x, y in zip(a, b))


FORK = """
    import os, signal, sys, torch
    sys.path.insert(0, {tests!r})
    from test_native_bounds import Call
    from hf_optim_torch import _native
    lib = _native.adafactor_library()

    def result():
        call = Call([(64, 48)] * 4 + [(3, 9000)] * 6, seed=5)
        for _ in range(5):
            assert call.run(lib, threads=3) == (0, -1)
        return torch.cat(call.wholes)

    expected = result()  # the parent's OpenMP team exists from here on
    pid = os.fork()
    if pid == 0:
        signal.alarm(60)  # a child stuck on its parent's team dies instead of lingering
        # no OpenMP in the child, as torch's DataLoader workers do: libgomp cannot use the parent's team there
        torch.set_num_threads(1)
        os._exit(0 if torch.equal(result(), expected) else 3)
    _, status = os.waitpid(pid, 0)
    assert torch.equal(result(), expected)  # the parent's team still works
    code = os.waitstatus_to_exitcode(status)  # -14: killed by its alarm
    sys.exit(0 if code == 0 else 100 + abs(code))
"""


def test_a_forked_child_runs_the_kernel_on_one_thread_with_the_same_result(lib) -> None:
    """After fork() the child has none of its parent's OpenMP threads: a call there asking for three threads runs
    on the calling thread (the kernel remembers which process started its team) and gives the parent's result."""
    script = textwrap.dedent(FORK.format(tests=str(Path(__file__).parent)))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 0, f"exit {done.returncode} (114: the child hung on the team): {done.stderr[-2000:]}"
