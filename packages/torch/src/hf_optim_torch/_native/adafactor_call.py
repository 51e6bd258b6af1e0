"""The ctypes calls of the native Adafactor kernel (``adafactor.c``): arguments and scalars in, refusals out as errors."""

from __future__ import annotations

import array
import ctypes
import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor

from .._adafactor_args import AdafactorOptions
from .._adafactor_scalars import clip_divisor, step_lr
from .._scratch import scratch

__all__ = [
    "NativeLayout",
    "adafactor_factored",
    "adafactor_unfactored",
    "join_layouts",
    "native_dtypes",
    "native_kind",
    "native_layout",
]


#: the kernel's code of each gradient and parameter dtype (TYPE_* in adafactor.c); its other buffers are float32
_TYPE_CODES = {torch.float32: 0, torch.bfloat16: 1, torch.float16: 2}


def native_dtypes(lib: Any) -> frozenset[torch.dtype]:
    """The gradient and parameter dtypes the compiled kernel takes (float16 where the C compiler has ``_Float16``)."""
    built = lib.hf_adafactor_types()
    return frozenset(dtype for dtype, code in _TYPE_CODES.items() if built >> code & 1)


def native_kind(
    param: Tensor,
    grad: Tensor,
    row: Tensor | None,
    col: Tensor | None,
    full: Tensor | None,
    rms: Tensor,
    dtypes: frozenset[Any],
) -> str | None:
    """``"factored"`` for a CPU matrix with float32 contiguous row and column statistics, ``"unfactored"`` for a CPU
    tensor with a float32 contiguous ``exp_avg_sq``, else None; the parameter's and the gradient's dtypes must be in
    ``dtypes`` (:func:`native_dtypes`). The tensors have passed :func:`._path_choice.fused_eligible` (contiguous, one
    device and shape; ``m`` and ``exp_avg_sq`` float32). The statistics and the RMS must be CPU tensors too: the
    kernel would read another device's pointer as host memory (a state moved to a GPU without its parameter)."""
    if not (param.is_cpu and param.dtype in dtypes and grad.dtype in dtypes):
        return None
    if not _host_float32(rms):
        return None
    if full is not None:
        return "unfactored"
    if param.dim() == 2 and row is not None and col is not None and _host_float32(row) and _host_float32(col):
        return "factored"
    return None


def _host_float32(t: Tensor) -> bool:
    """A contiguous float32 CPU tensor (the kernel's statistics and RMS)."""
    return t.is_cpu and t.dtype == torch.float32 and t.is_contiguous()


@functools.lru_cache(maxsize=64)
def array_type(kind: Any, length: int) -> Any:
    """ctypes' type of arrays of ``length`` values of ``kind``, kept. ctypes keeps an array type only while an array
    of it lives, and a type is a reference cycle: each step would make its types again (dozens of objects that only
    the garbage collector frees, and a collection of young objects every few steps)."""
    return kind * length


def _integers(tensors: list[Tensor | None], method: Callable[[Tensor], int], code: str) -> array.array:
    """``method`` of each tensor (0 for None) in an array.array of C integers (a tenth of ctypes' own init)."""
    try:
        return array.array(code, map(method, tensors))  # type: ignore[arg-type]
    except TypeError:  # a None (a missing exp_avg): a NULL pointer, which the kernel reports
        return array.array(code, [0 if t is None else method(t) for t in tensors])


def _pointers(tensors: list[Tensor | None]) -> Any:
    """A C array of the tensors' data pointers (NULL for None)."""
    return array_type(ctypes.c_void_p, len(tensors)).from_buffer(_integers(tensors, Tensor.data_ptr, "Q"))


#: the buffers of one matrix in the native kernel's order (its numel array; HF_E_* - buffer in adafactor.c), and
#: those of one unfactored tensor
_NATIVE_BUFFERS = ("gradient", "parameter", "exp_avg", "exp_avg_sq_row", "exp_avg_sq_col", "RMS")
_FLAT_BUFFERS = ("gradient", "parameter", "exp_avg", "exp_avg_sq", "RMS")
#: the kernel's codes (adafactor.c, HF_E_*) for a whole call, for one matrix, and (less the buffer) for one buffer
_NATIVE_CALL = {
    -2: "a negative count of matrices",
    -3: "a thread count below 1",
    -7: "a work buffer smaller than the columns of all matrices",
    -9: "a sums buffer too small for the RMS of every parameter",
}
_NATIVE_MATRIX = {
    -4: "no rows",
    -5: "no columns",
    -6: "more elements than any buffer can hold",
    -8: "a gradient or parameter dtype the kernel does not take",
}
_NATIVE_BUFFER = {-10: "has no data (NULL)", -20: "is not aligned to its element type", -30: "has the wrong size"}


def _native_error(code: int, index: int, tensors: list[Any], shapes: list[tuple[int, int]]) -> ValueError:
    """The error for a code of the native kernel, naming the tensor, the buffer, and the expected and received sizes.

    ``tensors`` are the call's buffers in the kernel's order (factored: six, unfactored: five); ``shapes`` are
    ``(rows, columns)``, ``(1, n)`` for an unfactored tensor.
    """
    names = _NATIVE_BUFFERS if len(tensors) == len(_NATIVE_BUFFERS) else _FLAT_BUFFERS
    if index < 0:
        what = _NATIVE_CALL.get(code, f"a NULL argument array ({-40 - code})" if -50 <= code <= -40 else "")
        return ValueError(f"Adafactor's native kernel refused the call ({code}): {what or 'unknown code'}")
    rows, cols = shapes[index]
    kind = "matrix" if names is _NATIVE_BUFFERS else "unfactored tensor"
    size = f"{rows}x{cols}" if names is _NATIVE_BUFFERS else f"{cols}-element"
    where = f"Adafactor's native kernel refused {kind} {index} of the call (a {size} parameter) ({code})"
    base, buffer = -10 * (-code // 10), -code % 10
    if code in _NATIVE_MATRIX or base not in _NATIVE_BUFFER or buffer >= len(names):
        return ValueError(f"{where}: {_NATIVE_MATRIX.get(code, 'unknown code')}")
    name, given = names[buffer], None if tensors[buffer] is None else tensors[buffer][index]
    if given is None or base != -30:
        return ValueError(f"{where}: its {name} {'is missing' if given is None else _NATIVE_BUFFER[base]}")
    expected = {"exp_avg_sq_row": f"{rows} (rows)", "exp_avg_sq_col": f"{cols} (columns)", "RMS": "at least 1"}
    return ValueError(
        f"{where}: its {name} has {given.numel()} elements (shape {tuple(given.shape)}), expected "
        f"{expected.get(name, f'{rows * cols} ({rows}x{cols})')}"
    )


#: a call over fewer elements runs on the calling thread alone: starting and joining the OpenMP team costs more than
#: it saves there (the result is the same for every thread count)
PARALLEL_ELEMENTS = 1 << 15


class NativeLayout(NamedTuple):
    """What a native call's arguments hold that depends only on its tensors' shapes and dtypes: the shapes
    (``(rows, columns)``, ``(1, n)`` unfactored), their C arrays, every buffer's element count and the gradients' and
    parameters' type codes. A route decision keeps it while the layouts stay the same (``_path_choice.LayoutCache``)."""

    shapes: list[tuple[int, int]]
    sizes: tuple[Any, ...]
    numel: Any
    types: Any
    elements: int
    """The parameters' elements, all tensors together."""


def native_layout(kind: str, tensors: list[list[Tensor | None] | None]) -> NativeLayout:
    """The :class:`NativeLayout` of a ``"factored"`` or ``"unfactored"`` call of ``tensors`` (its buffers in the
    kernel's order: gradients, parameters, ``exp_avg`` or None, the statistics, RMS)."""
    params = tensors[1]
    assert params is not None
    if kind == "factored":
        shapes = [tuple(p.shape) for p in params]
        if any(len(shape) != 2 for shape in shapes):
            raise ValueError(f"Adafactor's native kernel takes matrices, not parameters of shapes {shapes}")
        sizes: tuple[Any, ...] = (_c_array("q", [r for r, _ in shapes]), _c_array("q", [c for _, c in shapes]))
    else:
        shapes = [(1, p.numel()) for p in params]
        sizes = (_c_array("q", [n for _, n in shapes]),)
    count = len(params)
    numel = array.array("q")  # numel[b * count + k]: the elements of tensor k's buffer b (the order of tensors)
    for buffers in tensors:
        numel.extend([0] * count if buffers is None else _integers(buffers, Tensor.numel, "q"))
    types = array.array("i", [_TYPE_CODES.get(t.dtype, -1) for t in (*tensors[0], *params)])  # type: ignore[misc]
    return NativeLayout(
        shapes,  # type: ignore[arg-type]
        sizes,
        array_type(ctypes.c_int64, len(numel)).from_buffer(numel),
        array_type(ctypes.c_int32, len(types)).from_buffer(types),
        sum(rows * cols for rows, cols in shapes),
    )


def join_layouts(layouts: list[NativeLayout]) -> NativeLayout:
    """The :class:`NativeLayout` of one call over the tensors of ``layouts``' calls (of one kind), in their order."""
    counts = [len(layout.shapes) for layout in layouts]
    blocks = {name: len(getattr(layouts[0], name)) // counts[0] for name in ("numel", "types")}

    def joined(name: str, dtype: Any, kind: Any) -> Any:  # each buffer's block of every call, buffer by buffer
        parts = [np.frombuffer(getattr(layout, name), dtype=dtype).reshape(blocks[name], -1) for layout in layouts]
        values = np.ascontiguousarray(np.concatenate(parts, axis=1)).reshape(-1)
        return array_type(kind, values.size).from_buffer(values)

    sizes = tuple(
        _c_array("q", [n for layout in layouts for n in layout.sizes[i]]) for i in range(len(layouts[0].sizes))
    )
    return NativeLayout(
        [shape for layout in layouts for shape in layout.shapes],
        sizes,
        joined("numel", np.int64, ctypes.c_int64),
        joined("types", np.int32, ctypes.c_int32),
        sum(layout.elements for layout in layouts),
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
    layout: NativeLayout | None = None,
    weight_decays: list[float] | None = None,
) -> None:
    """One step of factored CPU matrices through the native kernel (``_native/adafactor.c``): two calls.

    ``hf_adafactor_statistics`` updates the statistics and the RMS and hands back each matrix's sums; the scalars
    of the step (lr, clipping, coefficients) are then computed here by :mod:`.._adafactor_scalars`, and
    ``hf_adafactor_apply`` updates the parameters (and first moments) with them. The kernel is handed every
    buffer's element count and checks them before it changes anything: a state that does not fit its parameter
    raises a ValueError naming the matrix, the buffer and both counts. Parameters and gradients may be float32,
    bfloat16 or float16 (the kernel computes in float32 and stores parameters rounded to nearest); every other
    tensor is float32. ``layout`` (:func:`native_layout` of these tensors, kept by the caller) spares reading the
    shapes and dtypes again; the kernel checks the counts either way. ``weight_decays`` gives each matrix its own
    (default: ``options.weight_decay`` for all); weight decay is on for the call where any of them is not 0.
    """
    tensors = [grads, params, exp_avgs, rows, cols, rms_values]
    layout = layout or native_layout("factored", tensors)
    work = scratch(sum(c for _, c in layout.shapes), torch.device("cpu"))
    _step(
        lib,
        ("hf_adafactor_statistics", "hf_adafactor_apply"),
        tensors,
        layout,
        (work.data_ptr(), work.numel()),
        rels=rels,
        beta2ts=beta2ts,
        options=options,
        weight_decays=weight_decays,
    )


def adafactor_unfactored(
    lib: Any,
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor | None] | None,
    full_vars: list[Tensor],
    rms_values: list[Tensor],
    *,
    rels: list[float],
    beta2ts: list[float],
    options: AdafactorOptions,
    layout: NativeLayout | None = None,
    weight_decays: list[float] | None = None,
) -> None:
    """One step of unfactored CPU tensors (1-D parameters, any shape read flat) through the native kernel.

    The calls ``hf_adafactor_flat_statistics`` and ``hf_adafactor_flat_apply`` work as those of
    :func:`adafactor_factored`, with one statistic per element (``exp_avg_sq``).
    """
    tensors = [grads, params, exp_avgs, full_vars, rms_values]
    _step(
        lib,
        ("hf_adafactor_flat_statistics", "hf_adafactor_flat_apply"),
        tensors,
        layout or native_layout("unfactored", tensors),
        (),
        rels=rels,
        beta2ts=beta2ts,
        options=options,
        weight_decays=weight_decays,
    )


def _c_array(code: str, values: list[Any]) -> Any:
    """``values`` as a C array of int64 (``"q"``) or double (``"d"``), built through array.array."""
    kind = ctypes.c_int64 if code == "q" else ctypes.c_double
    return array_type(kind, len(values)).from_buffer(array.array(code, values))


def _step(
    lib: Any,
    calls: tuple[str, str],
    tensors: list[Any],
    layout: NativeLayout,
    apply_work: tuple[int, ...],
    *,
    rels: list[float],
    beta2ts: list[float],
    options: AdafactorOptions,
    weight_decays: list[float] | None,
) -> None:
    """The statistics call, the step's scalars from its sums, then the apply call (refusals raised as errors)."""
    shapes = layout.shapes
    count = len(shapes)
    tensors[0] = [g.contiguous() for g in tensors[0]]  # a no-op for the contiguous gradients fused_eligible admitted
    pointers = (None if kind is None else _pointers(kind) for kind in tensors)
    shared = (count, *pointers, *layout.sizes, layout.numel, layout.types)
    threads = torch.get_num_threads() if layout.elements >= PARALLEL_ELEMENTS else 1
    bad_index = ctypes.c_int64(-1)
    stats = array_type(ctypes.c_double, 3 * count)()
    # the lr needs the RMS of p before the update only with scale_parameter; else the apply call sums p**2 as it
    # reads p, and the statistics call does not read p at all
    rms_in_apply = int(not options.scale_parameter)
    own = (_c_array("d", beta2ts), stats, options.eps[0], rms_in_apply, threads, ctypes.byref(bad_index))
    code = getattr(lib, calls[0])(*shared, *own)
    _raise_for(code, bad_index.value, tensors, shapes)
    moment = tensors[2] is not None
    scalars = step_scalars(stats, shapes, rels, weight_decays, options, moment)
    beta1 = -1.0 if options.beta1 is None else options.beta1
    decay = int(options.weight_decay != 0.0 if weight_decays is None else any(wd != 0.0 for wd in weight_decays))
    # the apply call's partial sums of p**2 (it allocates nothing: a step is refused, if at all, before any write)
    sums = array_type(ctypes.c_double, 2 * lib.hf_adafactor_spans() * count)() if rms_in_apply else None
    own = (scalars, *apply_work, beta1, decay, rms_in_apply, sums, len(sums or ()), threads, ctypes.byref(bad_index))
    code = getattr(lib, calls[1])(*shared, *own)
    _raise_for(code, bad_index.value, tensors, shapes)


def step_scalars(
    stats: Any,
    shapes: list[tuple[int, int]],
    rels: list[float],
    weight_decays: list[float] | None,
    options: AdafactorOptions,
    moment: bool,
) -> Any:
    """``[mean(R), coef, decay, m_scale]`` of every matrix (a C array of doubles), from its ``[mean(R), RMS, squared
    norm]`` statistics: the float64 operations of :mod:`.._adafactor_scalars` on NumPy arrays, one entry per matrix.

    ``coef`` multiplies the normalised update: the lr over the clipping divisor, or only the reciprocal of the
    divisor when the first moment averages the unscaled update (then ``m_scale``, else 1, is the lr); ``decay`` is
    the matrix's weight decay (``weight_decays``, or ``options.weight_decay`` for all where None) times its lr.
    """
    unscaled = moment and options.first_moment == "unscaled"
    row_mean, rms, update_sq = np.frombuffer(stats, dtype=np.float64).reshape(len(shapes), 3).T
    numel = np.array([rows * cols for rows, cols in shapes], dtype=np.float64)
    out = np.empty((len(shapes), 4), dtype=np.float64)
    # as Python floats do: an overflow gives inf, an invalid operation NaN, silently (clip_threshold=5e-324 is valid)
    with np.errstate(over="ignore", invalid="ignore"):
        rel = np.array(rels, dtype=np.float64)
        lr = step_lr(rel, rms, eps2=options.eps[1], scale_parameter=options.scale_parameter)
        lr = np.broadcast_to(lr, row_mean.shape)  # (without scale_parameter: the relative steps as they are)
        clip = clip_divisor(np.sqrt(update_sq / numel), options.clip_threshold)
        out[:, 0] = row_mean
        out[:, 1] = 1.0 / clip if unscaled else lr / clip
        out[:, 2] = (options.weight_decay if weight_decays is None else np.array(weight_decays)) * lr
        out[:, 3] = lr if unscaled else 1.0
    return array_type(ctypes.c_double, out.size).from_buffer(out)


def _raise_for(code: int, index: int, tensors: list[Any], shapes: list[tuple[int, int]]) -> None:
    """Nothing for 0; else the kernel's refusal as an exception."""
    if code == -1:
        raise MemoryError(f"Adafactor's native kernel could not allocate its work memory for {len(shapes)} matrices")
    if code:
        raise _native_error(code, index, tensors, shapes)
