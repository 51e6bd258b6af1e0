"""Adafactor's ops on Keras' torch backend, as plain torch calls (``hf_optim_tf._multi_tensor`` says when this path is
taken). Adafactor runs its formula stages (``hf_optim_tf._formulas``) as the plain torch calls ``keras.ops`` makes on
this backend, without Keras' conversions and dtype checks around each, with the scalars of a step made once per
distinct step count. Its statistics are reductions per variable (row and column means, the RMS of the parameter and
of the update), which it takes one torch call per tensor. Variables of at most ``PIECE`` elements go through the
formula together, in batches (``_multi_tensor.in_batches``): the matrices with ``_multi_tensor.ForeachOps``, which
runs each elementwise op as one multi-tensor op and each sum per tensor; the vectors (and 0-d variables)
concatenated, with :class:`FlatOps`, which runs each elementwise op as one torch call for the batch. A larger
variable goes alone, with :class:`PieceOps`: each elementwise stage on pieces along its first axis
(:meth:`PieceOps.run`), into the variables or into two scratch buffers kept between steps, whose whole tensors the
sums then read. The per-variable scalars stay on the device, as 0-d tensors or as the entries of a 1-D tensor, which
the RMS and the clipping divisors of a batch go through in one call per op. The sums see the values and shapes
``update_step``'s see, and an elementwise op gives the same bits on a piece, a concatenation or a vector as on the
whole tensor or the 0-d scalar, so the result is ``update_step``'s bit for bit (``tests/test_multi_tensor.py``, also
with pieces of 7 and of 2 elements). Measured 2026-12-06, interleaved in one process, 2 threads:

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
import math
import types
from collections.abc import Callable, Sequence
from typing import Any

from . import _multi_tensor
from ._sums import root_size

__all__ = ["FlatOps", "PieceOps", "torch_ops"]


@functools.cache
def torch_ops() -> Any:
    """The ``keras.ops`` functions (and ``hf_optim_tf._sums``' sums) that Adafactor's formulas use, as the torch calls
    Keras' torch backend makes for them on float32 tensors, without its conversions: each returns what the
    ``keras.ops`` call returns there, bit for bit, where ``floatx`` is float32 and the tensors are on the device
    Keras puts its constants on (what ``_multi_tensor.update_at_once`` requires). A scalar is a Python number or a 0-d
    tensor, as in ``keras.ops`` (a Python float enters a float32 op rounded to float32 either way)."""
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
        step = max(1, _multi_tensor.PIECE // (inputs[0].numel() // rows))  # rows of a piece
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
            return _multi_tensor.divide_scalars(x, y)
        return torch.divide(*self._spread(x, y))

    def sum_of_squares(self, x: Any) -> Any:
        """Each tensor's sum of squares, in a 1-D tensor: ``ForeachOps.sum_of_squares`` of the spans, each squared
        into a new tensor, as ``update_step`` squares the tensor itself (so aligned as that one is: CUDA's sums take
        the elements of a misaligned span in another order)."""
        return _multi_tensor.ForeachOps.sum_of_squares(x.split(self.sizes))

    def root_size(self, x: Any) -> tuple[float, ...]:
        """The square root of each tensor's element count, as per-tensor numbers."""
        return tuple(math.sqrt(n) for n in self.sizes)
