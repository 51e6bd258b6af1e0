"""The ctypes call of the native Adafactor kernel (``adafactor.c``): arguments in, error codes out as exceptions."""

from __future__ import annotations

import array
import ctypes
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .._adafactor_args import AdafactorOptions

__all__ = ["adafactor_factored", "native_eligible"]


def native_eligible(param: Tensor, row: Tensor | None, col: Tensor | None, rms: Tensor) -> bool:
    """A float32 CPU matrix with float32 contiguous statistics (the gradient and ``m`` passed :func:`._path_choice.fused_eligible`)."""
    return (
        param.is_cpu
        and param.dtype == torch.float32
        and param.dim() == 2
        and all(t is not None and t.dtype == torch.float32 and t.is_contiguous() for t in (row, col, rms))
    )


def _integers(tensors: list[Tensor | None], method: Callable[[Tensor], int], code: str) -> array.array:
    """``method`` of each tensor (0 for None) in an array.array of C integers (a tenth of ctypes' own init)."""
    try:
        return array.array(code, map(method, tensors))  # type: ignore[arg-type]
    except TypeError:  # a None (a missing exp_avg): a NULL pointer, which the kernel reports
        return array.array(code, [0 if t is None else method(t) for t in tensors])


def _pointers(tensors: list[Tensor | None]) -> Any:
    """A C array of the tensors' data pointers (NULL for None)."""
    return (ctypes.c_void_p * len(tensors)).from_buffer(_integers(tensors, Tensor.data_ptr, "Q"))


#: the buffers of one matrix in the native kernel's order (its numel array; HF_E_* - buffer in adafactor.c)
_NATIVE_BUFFERS = ("gradient", "parameter", "exp_avg", "exp_avg_sq_row", "exp_avg_sq_col", "RMS")
#: the kernel's codes (adafactor.c, HF_E_*) for a whole call, for one matrix, and (less the buffer) for one buffer
_NATIVE_CALL = {-2: "a negative count of matrices", -3: "a thread count below 1"}
_NATIVE_MATRIX = {-4: "no rows", -5: "no columns", -6: "more elements than any buffer can hold"}
_NATIVE_BUFFER = {-10: "has no data (NULL)", -20: "is not aligned to a float", -30: "has the wrong size"}


def _native_error(code: int, index: int, tensors: list[Any], shapes: list[tuple[int, int]]) -> ValueError:
    """The error for a code of the native kernel, naming the matrix, the buffer, and the expected and received sizes."""
    if index < 0:
        what = _NATIVE_CALL.get(code, f"a NULL argument array ({-40 - code})" if -50 <= code <= -40 else "")
        return ValueError(f"Adafactor's native kernel refused the call ({code}): {what or 'unknown code'}")
    rows, cols = shapes[index]
    where = f"Adafactor's native kernel refused matrix {index} of the call (a {rows}x{cols} parameter) ({code})"
    base, buffer = -10 * (-code // 10), -code % 10
    if code in _NATIVE_MATRIX or base not in _NATIVE_BUFFER or buffer >= len(_NATIVE_BUFFERS):
        return ValueError(f"{where}: {_NATIVE_MATRIX.get(code, 'unknown code')}")
    name, given = _NATIVE_BUFFERS[buffer], None if tensors[buffer] is None else tensors[buffer][index]
    if given is None or base != -30:
        return ValueError(f"{where}: its {name} {'is missing' if given is None else _NATIVE_BUFFER[base]}")
    expected = {"exp_avg_sq_row": f"{rows} (rows)", "exp_avg_sq_col": f"{cols} (columns)", "RMS": "at least 1"}
    return ValueError(
        f"{where}: its {name} has {given.numel()} elements (shape {tuple(given.shape)}), expected "
        f"{expected.get(name, f'{rows * cols} ({rows}x{cols})')}"
    )


def adafactor_factored(
    lib: Any,
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor | None] | None,
    rows: list[Tensor],
    cols: list[Tensor],
    rms_values: list[Tensor],
    *,
    rels: list[float],
    beta2ts: list[float],
    options: AdafactorOptions,
) -> None:
    """Factored float32 CPU matrices in one call of the native kernel (``_native/adafactor.c``): two passes.

    The kernel is handed every buffer's element count and checks them before it changes anything: a state that
    does not fit its parameter raises a ValueError naming the matrix, the buffer and both counts.
    """
    count = len(params)
    grads = [g.contiguous() for g in grads]  # a no-op for the contiguous gradients fused_eligible admitted
    shapes = [tuple(p.shape) for p in params]
    if any(len(shape) != 2 for shape in shapes):
        raise ValueError(f"Adafactor's native kernel takes matrices, not parameters of shapes {shapes}")
    tensors: list[Any] = [grads, params, exp_avgs, rows, cols, rms_values]
    numel = array.array("q")  # numel[b * count + k]: the elements of matrix k's buffer b (the order of tensors)
    for kind in tensors:
        numel.extend([0] * count if kind is None else _integers(kind, Tensor.numel, "q"))
    bad_index = ctypes.c_int64(-1)
    code = lib.hf_adafactor_factored(
        count,
        *(None if kind is None else _pointers(kind) for kind in tensors),
        (ctypes.c_int64 * count).from_buffer(array.array("q", [r for r, _ in shapes])),
        (ctypes.c_int64 * count).from_buffer(array.array("q", [c for _, c in shapes])),
        (ctypes.c_int64 * (6 * count)).from_buffer(numel),
        (ctypes.c_double * count).from_buffer(array.array("d", rels)),
        (ctypes.c_double * count).from_buffer(array.array("d", beta2ts)),
        options.eps[0],
        options.eps[1],
        options.clip_threshold,
        -1.0 if options.beta1 is None else options.beta1,
        options.weight_decay,
        int(options.scale_parameter),
        int(options.first_moment == "unscaled"),
        torch.get_num_threads(),
        ctypes.byref(bad_index),
    )
    if code == -1:
        raise MemoryError(f"Adafactor's native kernel could not allocate its work memory for {count} matrices")
    if code:
        raise _native_error(code, bad_index.value, tensors, shapes)
