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

Adafactor's ops on torch tensors (one, pieces of one, a batch concatenated) are in ``_torch_ops``.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import keras

from ._sums import root_size

__all__ = [
    "BATCH",
    "PIECE",
    "ForeachOps",
    "assign_all",
    "divide_scalars",
    "in_batches",
    "increment",
    "tensors",
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
            return divide_scalars(x, y)
        if isinstance(y, list) or _is_scalars(y):
            return list(torch._foreach_div(x, _operand(y)))
        # by a number (one, or one per tensor): torch.divide per tensor, as keras.ops.divide calls it with a Python
        # number (on CUDA it multiplies by the reciprocal, where torch._foreach_div divides)
        numbers = _operand(y) if isinstance(y, tuple) else [_operand(y)] * len(x)
        return [torch.divide(t, number) for t, number in zip(x, numbers)]

    @staticmethod
    def maximum(x: Any, y: Any) -> Any:
        import torch

        if not isinstance(x, list):  # per-tensor scalars and a number: as _torch_ops.torch_ops
            return torch.clamp_min(x, y)
        if isinstance(y, list):
            return list(torch._foreach_maximum(x, y))
        return [torch.clamp_min(t, y) for t in x]  # by a number: as _torch_ops.torch_ops

    @staticmethod
    def sqrt(x: Any) -> Any:
        import torch

        return list(torch._foreach_sqrt(x)) if isinstance(x, list) else torch.sqrt(x)

    @staticmethod
    def square(x: list[Any]) -> list[Any]:
        import torch

        return list(torch._foreach_mul(x, x))  # torch.square is one rounded product too

    # Adafactor's reciprocal square root, reductions and reshapes: one torch call per tensor, as _torch_ops.torch_ops
    # makes them (torch.rsqrt's CUDA kernel is its own; torch._foreach_rsqrt is not in every torch this package takes)

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


def divide_scalars(x: Any, y: Any) -> Any:
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
