"""The update of many variables at once on Keras' torch backend: the AdamW family's with torch's multi-tensor ops,
Adafactor's with plain torch calls.

On the torch backend nothing traces an optimizer step by default (``model.fit`` compiles only with
``jit_compile=True``), so every step runs ``update_step`` once per variable, some 30 ``keras.ops`` calls each, and
Keras' dispatch costs about 0.4 ms per variable: 78 ms a step for 196 variables of 32 elements on 2 cores, where
Keras' own torch AdamW, written with ``torch._foreach_*`` ops, takes 5 ms. Here the same formulas
(``hf_optim_tf._formulas``: the elementwise update is written once, for an ``ops`` namespace) run on lists of
tensors through :class:`ForeachOps`, one multi-tensor op per formula op (200 variables of 32 elements, AdamW with
weight decay: 5.4 ms; AdamWeightDecay: 4.6 ms; Keras' AdamW: 6 ms).

Each formula op makes a new tensor, so a large tensor would pass through memory once per op, and each new tensor
of more than a few hundred KiB is fresh pages from the system (10M parameters: 74 ms in ~200 tensors, 258 ms in
one). :func:`in_batches` runs the whole update on cache-sized pieces of the tensors instead (views: the results are
copied into the variables and the state), so the temporaries of one batch stay in the cache and their heap memory
is reused by the next (10M parameters: 35-37 ms in ~200 tensors, 29 ms in one; Keras' own AdamW 33-39 and 89 ms).

Each op rounds as the ``keras.ops`` call it stands for: a scalar enters a torch op as a Python float, which torch
rounds to the tensors' dtype as ``keras.ops`` rounds a Python float or casts a 0-d tensor, and no op fuses two
roundings into one (no ``alpha=`` arguments). So the result equals the per-variable update bit for bit
(``tests/test_multi_tensor.py``). Contiguous float32 variables with contiguous float32 gradients take this path;
any other variable (16-bit, float64, a gradient of another dtype or layout) takes the per-variable one in the same
call. Left per variable altogether: other backends (TensorFlow traces the step, JAX jits it: ``_traced_update``), a
step inside ``torch.compile`` (which compiles the per-variable ops itself) and inside a ``StatelessScope`` (whose
variables must not be written in place).

Adafactor runs its formula stages (``hf_optim_tf._formulas``) as the plain torch calls ``keras.ops`` makes on this
backend, without Keras' conversions and dtype checks around each, with the scalars of a step made once per distinct
step count. Its statistics are reductions per variable (row and column means, the RMS of the parameter and of the
update), which it takes one torch call per tensor. Variables of at most ``PIECE`` elements go through the formula
together, in batches (:func:`in_batches`): the matrices with ``ForeachOps``, which runs each elementwise op as one
multi-tensor op and each sum per tensor; the vectors (and 0-d variables) concatenated, with :class:`FlatOps`, which
runs each elementwise op as one torch call for the batch. A larger variable goes alone, with :class:`PieceOps`: each
elementwise stage on pieces along its first axis (:meth:`PieceOps.run`), into the variables or into two scratch
buffers kept between steps, whose whole tensors the sums then read. The per-variable scalars stay on the device, as
0-d tensors or as the entries of a 1-D tensor, which the RMS and the clipping divisors of a batch go through in one
call per op. The sums see the values and shapes ``update_step``'s see, and an elementwise op gives the same bits on
a piece, a concatenation or a vector as on the whole tensor or the 0-d scalar, so the result is ``update_step``'s bit
for bit (``tests/test_multi_tensor.py``, also with pieces of 7 and of 2 elements). Measured 2026-12-06, interleaved
in one process, 2 threads:

- against ``update_step`` one variable at a time (Keras' conversions around each op): 10M parameters in ~200
  variables 206 -> 74 ms a step (Keras' own Adafactor 223 ms); 200 variables of 32 elements 143 -> 20.5 ms (Keras'
  129 ms); of 32x32 213 -> 42 ms (Keras' 196 ms);
- then the pieces and the batches, against the plain torch calls on whole tensors one variable after the other:
  10M parameters in one variable 218 -> 53 ms; 10M in ~200 variables 63 -> 45 ms; 200 variables of 32 elements
  19 -> 12.8 ms, of 32x32 28.5 -> 18.8 ms;
- then the vectors concatenated (:class:`FlatOps`), the RMS and clipping divisors of a batch as 1-D tensors, and each
  square of a sum of squares summed before the next is made (squaring all the small parameters first took fresh
  pages from the system for every square: about 5,000 page faults a step at 10M in ~200 variables), against the
  previous version: 200 variables of 32 elements 14.4 -> 8.8 ms, of 32x32 21.0 -> 18.8 ms; 10M in ~200 variables
  0.78x to 0.94x (three runs), and alone in a process 65.6-73.1 -> 35.4-54.3 ms.

What is left: about fourteen passes over each tensor (one per op, each op rounding as ``update_step`` rounds; in the
cache where it is cut into pieces or batched), and for the matrices torch's CPU multi-tensor ops call the op once per
tensor (about 2 us each), some twenty calls per matrix.
"""

from __future__ import annotations

import functools
import itertools
import math
import types
from collections.abc import Callable, Sequence
from typing import Any

import keras

from ._sums import root_size

__all__ = [
    "BATCH",
    "PIECE",
    "FlatOps",
    "ForeachOps",
    "PieceOps",
    "assign_all",
    "in_batches",
    "increment",
    "tensors",
    "torch_ops",
    "update_at_once",
]


def update_at_once(
    update: Callable[[list[Any], list[Any], Any], None],
    grads: Sequence[Any],
    variables: Sequence[Any],
    learning_rate: Any,
) -> tuple[list[Any], list[Any]]:
    """Run ``update(grads, variables, learning_rate)`` on the variables that can be updated at once (see the module
    docstring) and return the gradients and variables left to the per-variable update (all of them where this path
    is not taken)."""
    grads, variables = list(grads), list(variables)
    if keras.backend.backend() != "torch":
        return grads, variables
    import torch
    from keras.src.backend.common.stateless_scope import in_stateless_scope
    from keras.src.backend.torch.core import get_device

    if in_stateless_scope() or torch.compiler.is_compiling() or keras.config.floatx() != "float32":
        return grads, variables  # (another floatx: keras.ops makes Python floats tensors of it, torch does not)
    device = torch.device(get_device()).type  # where keras.ops puts its constants
    at_once = [
        isinstance(g, torch.Tensor)
        and g.dtype == torch.float32
        and v.dtype == torch.float32
        and g.shape == v.shape
        and g.device == v.device
        and v.device.type == device
        and g.is_contiguous()
        and v.is_contiguous()
        for g, v in zip(grads, tensors(variables))
    ]
    if any(at_once):
        with torch.no_grad():
            update(
                [g for g, ok in zip(grads, at_once) if ok],
                [v for v, ok in zip(variables, at_once) if ok],
                learning_rate,
            )
    return [g for g, ok in zip(grads, at_once) if not ok], [v for v, ok in zip(variables, at_once) if not ok]


#: elements of one piece of a tensor, and of the pieces of one batch (per list), in ``in_batches``: measured on 2 cores
#: (32 MiB of L3 cache), 10M parameters in ~200 tensors: 2^15 and 2^16 elements 92 ms a step, 2^17 and 2^19 50 ms,
#: 2^18 and 2^19 49 ms, 2^20 and 2^22 62 ms; in one tensor 2^18 and 2^19 29 ms, 2^20 and 2^22 60 ms
PIECE = 1 << 18
BATCH = 1 << 19


def in_batches(update: Callable[..., None], lists: Sequence[list[Any]], per_tensor: Sequence[tuple[Any, ...]]) -> None:
    """``update(*lists, *per_tensor)`` on cache-sized parts of the tensors: each tensor (flattened; the tensors of
    every list have the shapes of the first's) cut into pieces of at most ``PIECE`` elements, the pieces in batches
    of at most ``BATCH`` elements, each batch one call with the pieces of every list and each piece's entry of
    every ``per_tensor`` tuple. The pieces are views: what ``update`` writes into them lands in the tensors."""
    batch: list[tuple[int, int, int]] = []  # (tensor, first element, end); (tensor, 0, -1): the whole tensor
    size = 0

    def piece(tensor: Any, start: int, stop: int) -> Any:
        return tensor if stop < 0 else tensor.view(-1)[start:stop]

    def flush() -> None:
        nonlocal size
        if batch:
            update(
                *([piece(tensors[k], a, b) for k, a, b in batch] for tensors in lists),
                *(tuple(values[k] for k, _, _ in batch) for values in per_tensor),
            )
        batch.clear()
        size = 0

    for k, tensor in enumerate(lists[0]):
        n = tensor.numel()
        if n == 0:  # whole, as update_step takes it (an empty factored matrix's means are NaN)
            batch.append((k, 0, -1))
        for start in range(0, n, PIECE):
            stop = min(start + PIECE, n)
            if size + stop - start > BATCH:
                flush()
            batch.append((k, start, -1 if stop - start == n else stop))
            size += stop - start
    flush()


def tensors(variables: Sequence[Any]) -> list[Any]:
    """The torch tensors holding these Keras variables (None for None; written in place by :func:`assign_all`): each
    one's storage, ``_value``. ``Variable.value`` returns the same tensor here, after checks for a ``StatelessScope``, a symbolic
    call and an autocast scope that cannot apply to an optimizer step (where an autocast scope did apply, it would
    return a cast copy, and a write into it would be lost); they cost about 2 µs per variable and step."""
    return [None if variable is None else _storage(variable) for variable in variables]


def _storage(variable: Any) -> Any:
    import torch

    value = getattr(variable, "_value", None)
    return value if isinstance(value, torch.Tensor) else variable.value


def increment(counters: list[Any]) -> list[int]:
    """Add 1 to every counter (0-d integer tensors) in place, in one multi-tensor op; their new values."""
    import torch

    torch._foreach_add_(counters, 1)
    return torch.stack(counters).tolist() if counters else []


def assign_all(targets: list[Any], values: list[Any]) -> None:
    """``targets[i].copy_(values[i])`` for every i, in one multi-tensor op."""
    import torch

    torch._foreach_copy_(targets, values)


class ForeachOps:
    """The ``keras.ops`` functions the formulas use (the AdamW family's; Adafactor's for its variables of at most
    ``PIECE`` elements), on lists of torch tensors, one per variable.

    An argument is a list of tensors (also of 0-d tensors, one scalar per tensor), a Python number or a 0-d tensor
    (one scalar for every tensor), a tuple of Python numbers (one per tensor), or a 1-D tensor of per-tensor scalars
    (what :meth:`sum_of_squares` returns; Adafactor divides its updates by them); a result is a list of new tensors,
    or a new 1-D tensor where per-tensor scalars in one go through ``sqrt``, ``divide`` or ``maximum``. Addition and
    multiplication take the scalar on either side; subtraction and division take it on the right only (the formulas
    need no other). Division by a number, and Adafactor's reciprocal square roots, reductions and reshapes, are one
    torch call per tensor (below).

    Per-tensor scalars in a 1-D tensor go through ``sqrt``, ``divide`` and ``maximum`` (Adafactor's RMS and clipping
    divisor) as one torch call for all tensors: an elementwise op gives each entry of a vector the bits it gives a
    0-d tensor, and division by numbers is ``torch.divide`` by the number of each run of equal ones, as
    ``keras.ops.divide`` calls it with a Python number (on CUDA a product with the reciprocal)."""

    @staticmethod
    def add(x: Any, y: Any) -> list[Any]:
        import torch

        tensors, other = (x, y) if isinstance(x, list) else (y, x)
        return list(torch._foreach_add(tensors, _operand(other)))

    @staticmethod
    def multiply(x: Any, y: Any) -> list[Any]:
        import torch

        tensors, other = (x, y) if isinstance(x, list) else (y, x)
        return list(torch._foreach_mul(tensors, _factor(tensors, other)))

    @staticmethod
    def subtract(x: list[Any], y: Any) -> list[Any]:
        import torch

        return list(torch._foreach_sub(x, _operand(y)))

    @staticmethod
    def divide(x: Any, y: Any) -> Any:
        import torch

        if not isinstance(x, list):  # per-tensor scalars by a number or one number per scalar
            return _divide_scalars(x, y)
        if isinstance(y, list) or _is_scalars(y):
            return list(torch._foreach_div(x, _operand(y)))
        # by a number (one, or one per tensor): torch.divide per tensor, as keras.ops.divide calls it with a Python
        # number (on CUDA it multiplies by the reciprocal, where torch._foreach_div divides)
        numbers = _operand(y) if isinstance(y, tuple) else [_operand(y)] * len(x)
        return [torch.divide(t, number) for t, number in zip(x, numbers)]

    @staticmethod
    def maximum(x: Any, y: Any) -> Any:
        import torch

        if not isinstance(x, list):  # per-tensor scalars and a number: as torch_ops
            return torch.clamp_min(x, y)
        if isinstance(y, list):
            return list(torch._foreach_maximum(x, y))
        return [torch.clamp_min(t, y) for t in x]  # by a number: as torch_ops

    @staticmethod
    def sqrt(x: Any) -> Any:
        import torch

        return list(torch._foreach_sqrt(x)) if isinstance(x, list) else torch.sqrt(x)

    @staticmethod
    def square(x: list[Any]) -> list[Any]:
        import torch

        return list(torch._foreach_mul(x, x))  # torch.square is one rounded product too

    # Adafactor's reciprocal square root, reductions and reshapes: one torch call per tensor, as torch_ops makes
    # them (torch.rsqrt's CUDA kernel is its own; torch._foreach_rsqrt is not in every torch this package takes)

    @staticmethod
    def rsqrt(x: list[Any]) -> list[Any]:
        import torch

        return [torch.rsqrt(t) for t in x]

    @staticmethod
    def sum_of_squares(x: Sequence[Any]) -> Any:
        """Each tensor's sum of squares, in a 1-D tensor (per-tensor scalars). Each square is summed as soon as it
        is made: its memory is reused by the next, where squaring the whole list first would take fresh pages from
        the system for all of them (about 5,000 page faults a step at 10M parameters in ~200 tensors)."""
        import torch

        return torch.stack([torch.sum(torch.mul(t, t)) for t in x])

    @staticmethod
    def root_size(x: list[Any]) -> tuple[float, ...]:
        """The square root of each tensor's element count (the divisors of their RMS), as per-tensor numbers."""
        return tuple(map(root_size, x))

    @staticmethod
    def mean_over(x: list[Any], axis: int) -> list[Any]:
        import torch

        return [torch.mean(t, axis) for t in x]

    @staticmethod
    def mean(x: list[Any], axis: int, keepdims: bool = False) -> list[Any]:
        import torch

        return [torch.mean(t, axis, keepdims) for t in x]

    @staticmethod
    def expand_dims(x: list[Any], axis: int) -> list[Any]:
        import torch

        return [torch.unsqueeze(t, axis) for t in x]


@functools.cache
def torch_ops() -> Any:
    """The ``keras.ops`` functions (and ``hf_optim_tf._sums``' sums) that Adafactor's formulas use, as the torch calls
    Keras' torch backend makes for them on float32 tensors, without its conversions: each returns what the
    ``keras.ops`` call returns there, bit for bit, where ``floatx`` is float32 and the tensors are on the device
    Keras puts its constants on (what :func:`update_at_once` requires). A scalar is a Python number or a 0-d tensor,
    as in ``keras.ops`` (a Python float enters a float32 op rounded to float32 either way)."""
    import torch

    return types.SimpleNamespace(
        add=torch.add,
        multiply=torch.multiply,
        subtract=torch.subtract,
        divide=torch.divide,
        maximum=torch.clamp_min,  # the formulas' maximum(x, 1.0): keras.ops' torch.maximum with 1.0 as a tensor
        square=lambda x: torch.mul(x, x),  # what torch.square computes (one rounded product), without pow's dispatch
        sqrt=torch.sqrt,
        rsqrt=torch.rsqrt,
        mean=lambda x, axis, keepdims=False: torch.mean(x, axis, keepdims),
        mean_over=torch.mean,
        expand_dims=torch.unsqueeze,
        sum_of_squares=lambda x: torch.sum(torch.mul(x, x)),
        root_size=root_size,
    )


class PieceOps:
    """:func:`torch_ops` for Adafactor's variables of more than ``PIECE`` elements, one at a time, with two scratch
    buffers.

    :meth:`run` runs an elementwise stage of the formula on pieces of such a tensor, writing into the variables or
    into a scratch buffer, whose whole tensor a sum then reads; its sums of squares square the tensor piece by piece
    into buffer 0 and sum the whole buffer, as ``torch.sum`` sums a new tensor of the same values and shape (the same
    bits). The buffers are kept between steps (a new tensor of a few MiB would be fresh pages from the system at
    every step): each as large as the largest variable taken so far, on its device."""

    def __init__(self) -> None:
        for name, function in vars(torch_ops()).items():
            if name != "sum_of_squares":
                setattr(self, name, function)
        self._buffers: list[Any] = [None, None]

    def reserve(self, numel: int, like: Any) -> None:
        """Make both buffers hold at least ``numel`` elements of ``like``'s dtype on its device."""
        import torch

        for k, kept in enumerate(self._buffers):
            if kept is None or kept.numel() < numel or kept.device != like.device or kept.dtype != like.dtype:
                self._buffers[k] = None  # freed before the new one is made
                self._buffers[k] = torch.empty(numel, dtype=like.dtype, device=like.device)

    def buffer(self, k: int, like: Any) -> Any:
        """Scratch buffer ``k`` (0 or 1) as a tensor of ``like``'s shape (its contents undefined)."""
        self.reserve(like.numel(), like)
        return self._buffers[k][: like.numel()].view(like.shape)

    def run(self, update: Callable[..., Sequence[Any]], inputs: Sequence[Any], outputs: Sequence[Any]) -> list[Any]:
        """``update(*inputs)`` for an elementwise ``update`` whose results have the shape of ``inputs[0]`` (a tensor
        of more than ``PIECE`` elements), each written into its entry of ``outputs`` (a tensor of that shape; an
        ``int`` k: scratch buffer k); returns the outputs.

        The tensors are cut along their first axis into pieces of about ``PIECE`` elements (of one slice where a
        slice is larger), so that the temporaries of ``update`` stay in the cache. An input with that first axis
        (same rank and length) is cut with them; any other (an axis of 1 that broadcasts, fewer axes, a number, None)
        enters every piece whole. Each piece's results are made before any is written, so an output may be an input
        too."""
        shape = inputs[0].shape
        rows = shape[0]
        step = max(1, PIECE // (inputs[0].numel() // rows))  # rows of a piece
        outputs = [self.buffer(out, inputs[0]) if isinstance(out, int) else out for out in outputs]
        cut = [getattr(x, "shape", ())[:1] == shape[:1] and len(x.shape) == len(shape) for x in inputs]
        for start in range(0, rows, step):
            piece = slice(start, min(start + step, rows))
            results = update(*(x[piece] if c else x for x, c in zip(inputs, cut)))
            for out, value in zip(outputs, results):
                out[piece].copy_(value)
        return outputs

    def sum_of_squares(self, x: Any) -> Any:
        import torch

        return torch.sum(self.run(lambda piece: (self.square(piece),), [x], [0])[0])


class FlatOps:
    """:func:`torch_ops` for a batch of Adafactor's unfactored variables (0-d and 1-D, of at most ``PIECE`` elements)
    concatenated into one flat tensor, with their per-tensor scalars (RMS, clipping divisors, step sizes) in 1-D
    tensors of one entry per variable.

    Each elementwise op is one torch call for the whole batch, where ``ForeachOps`` makes one per variable (a LayerNorm
    vector of a few hundred elements costs about as much as its op's call): a per-tensor scalar meets the flat
    tensor's elements repeated over its tensor's span (``torch.repeat_interleave``), which gives each element the
    bits the product, sum or quotient with the 0-d scalar gives it. :meth:`sum_of_squares` squares and sums each
    tensor's span apart, as ``update_step`` squares and sums the tensor itself. Empty variables are left out (they
    have no element to update, and a flat tensor could then have as many elements as there are variables)."""

    def __init__(self, tensors: list[Any]) -> None:
        for name, function in vars(torch_ops()).items():
            if not hasattr(FlatOps, name):  # (the elementwise ops without per-tensor operands)
                setattr(self, name, function)
        self.sizes = [t.numel() for t in tensors]
        if 0 in self.sizes:  # (a flat tensor and the per-tensor scalars could then have the same length)
            raise ValueError(f"FlatOps takes tensors of at least one element, not of the sizes {self.sizes}")
        self._scalars = [k for k, t in enumerate(tensors) if t.dim() == 0]
        self._device = tensors[0].device
        self._spans: Any = None
        self._total = sum(self.sizes)

    def flat(self, tensors: list[Any]) -> Any:
        """The tensors (those this namespace was made for, or others of their shapes) as one new flat tensor."""
        import torch

        return torch.cat(torch.atleast_1d(tensors))

    def pieces(self, flat: Any, like: list[Any]) -> list[Any]:
        """Views of ``flat`` in the shapes of ``like`` (the tensors it was made of), for ``torch._foreach_copy_``."""
        views = list(flat.split(self.sizes))
        for k in self._scalars:
            views[k] = views[k].view(like[k].shape)
        return views

    def scalars(self, values: tuple[Any, ...]) -> Any:
        """Per-tensor 0-d tensors as one 0-d tensor where they are all the same one, else as a 1-D tensor."""
        import torch

        return values[0] if all(v is values[0] for v in values) else torch.stack(values)

    def _spread(self, x: Any, y: Any) -> tuple[Any, Any]:
        """``x`` and ``y`` with a per-tensor 1-D tensor repeated over the spans where it meets the flat tensor."""
        import torch

        count = len(self.sizes)
        if count == self._total:  # one element per tensor: the per-tensor scalars are the elements' own
            return x, y
        lengths = [getattr(v, "ndim", 0) == 1 and v.shape[0] for v in (x, y)]
        if count not in lengths or self._total not in lengths:
            return x, y
        if self._spans is None:
            self._spans = torch.tensor(self.sizes, device=self._device)
        if lengths[0] == count:
            x = torch.repeat_interleave(x, self._spans, output_size=self._total)
        else:
            y = torch.repeat_interleave(y, self._spans, output_size=self._total)
        return x, y

    def add(self, x: Any, y: Any) -> Any:
        import torch

        return torch.add(*self._spread(x, y))

    def multiply(self, x: Any, y: Any) -> Any:
        import torch

        return torch.multiply(*self._spread(x, y))

    def subtract(self, x: Any, y: Any) -> Any:
        import torch

        return torch.subtract(*self._spread(x, y))

    def divide(self, x: Any, y: Any) -> Any:
        import torch

        if isinstance(y, tuple):  # per-tensor scalars by per-tensor numbers
            return _divide_scalars(x, y)
        return torch.divide(*self._spread(x, y))

    def sum_of_squares(self, x: Any) -> Any:
        """Each tensor's sum of squares, in a 1-D tensor: ``ForeachOps.sum_of_squares`` of the spans, each squared
        into a new tensor, as ``update_step`` squares the tensor itself (so aligned as that one is: CUDA's sums take
        the elements of a misaligned span in another order)."""
        return ForeachOps.sum_of_squares(x.split(self.sizes))

    def root_size(self, x: Any) -> tuple[float, ...]:
        """The square root of each tensor's element count, as per-tensor numbers."""
        return tuple(math.sqrt(n) for n in self.sizes)


def _factor(tensors: list[Any], value: Any) -> Any:
    """The second operand of a multi-tensor product: a list of tensors as it is, and a scalar (or per-tensor scalars
    that are all equal, as the step sizes of one step usually are) as a 0-d tensor of the tensors' dtype and device:
    torch's CPU path multiplies by one at the speed of a list of tensors (200 tensors of 32: 0.21 ms), by a Python
    number at less than half of it (0.51 ms). The number is rounded to that dtype either way."""
    import torch

    if isinstance(value, list):
        return value
    if isinstance(value, tuple):
        if value.count(value[0]) != len(value):
            return list(value)
        value = value[0]
    return torch.as_tensor(value, dtype=tensors[0].dtype, device=tensors[0].device)


def _operand(value: Any) -> Any:
    """A list of tensors as it is; per-tensor scalars as a list of Python numbers (a tuple) or of 0-d tensors (a 1-D
    tensor); one scalar as a Python number."""
    if isinstance(value, list):
        return value
    if isinstance(value, tuple):
        return list(value)
    if _is_scalars(value):
        return list(value.unbind())
    return value.item() if hasattr(value, "item") else value


def _is_scalars(value: Any) -> bool:
    """Whether ``value`` is per-tensor scalars in a 1-D tensor."""
    return getattr(value, "ndim", 0) == 1


def _divide_scalars(x: Any, y: Any) -> Any:
    """Per-tensor scalars ``x`` (a 1-D tensor) divided by ``y``: a number, or a tuple of numbers (one per scalar:
    one ``torch.divide`` by the number for each run of equal numbers, into a slice of the result; Adafactor orders
    its variables by size, so that the square roots of their sizes come in few runs)."""
    import torch

    if not isinstance(y, tuple):
        return torch.divide(x, y)
    runs = [(number, len(list(run))) for number, run in itertools.groupby(y)]
    if len(runs) == 1:
        return torch.divide(x, y[0])
    out = torch.empty_like(x)
    start = 0
    for number, length in runs:
        torch.divide(x[start : start + length], number, out=out[start : start + length])
        start += length
    return out
