"""Which code path a step takes: the for-loop, the multi-tensor (foreach) path, or an optimizer's ``fused`` path.

What ``fused=True`` runs is each optimizer's own: torch's fused Adam kernel for AdamW and AdamWeightDecay, the
two-pass path (and on CPU the native C kernel) for Adafactor.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import compress, repeat
from operator import attrgetter, is_not
from typing import Any, Generic, TypeVar

import torch

__all__ = [
    "FUSED_NOT_CAPTURED",
    "LayoutCache",
    "capturing",
    "compiling",
    "fused_eligible",
    "group_layout_cache",
    "use_foreach",
    "use_fused",
]

T = TypeVar("T")
#: why ``fused=True`` cannot be captured into a CUDA graph (``use_fused``, ``begin_step``)
FUSED_NOT_CAPTURED = (
    "its kernel takes each step's scalars as Python numbers, which every replay would repeat; leave `fused` unset "
    "(the path a capture takes then is not the fused one)"
)
_PLAIN = (torch.Tensor, torch.nn.Parameter)
_STRIDED = torch.strided
_FUSED_DEVICES = ("cpu", "cuda")


def compiling() -> bool:
    """Whether the code runs under ``torch.compile`` (dynamo tracing)."""
    is_compiling = getattr(torch.compiler, "is_compiling", None)
    return bool(is_compiling()) if is_compiling is not None else False


def capturing(tensors: Sequence[torch.Tensor]) -> bool:
    """Whether the step being run is being captured into a CUDA graph (``torch.cuda.graph``), judged by the current
    CUDA stream where the first tensor is a CUDA one: ``torch.cuda.CUDAGraph.replay`` then repeats the step's device
    work, never its Python. A CPU-only torch has no capture to ask about. Under ``torch.compile`` the answer is False
    (its paths take no host values: :func:`compiling`)."""
    return bool(tensors) and not compiling() and _stream_capturing(tensors[0].device)


def _stream_capturing(device: torch.device) -> bool:
    """Whether the current CUDA stream is capturing, for a tensor on ``device`` (tests stand in a capture on CPU
    tensors here)."""
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def use_foreach(foreach: bool | None, params: list[torch.Tensor]) -> bool:
    """The multi-tensor path by default on accelerators only.

    On CPU a per-tensor pass stays in cache while each foreach op streams every tensor through memory, so the
    for-loop is the faster default there.
    """
    if foreach is not None:
        return bool(foreach)
    if torch.jit.is_scripting() or not params:
        return False
    return all(p.device.type not in ("cpu", "meta") and type(p) in _PLAIN for p in params)


def use_fused(fused: bool | None, foreach: bool | None, lr: object = None, params: Sequence[torch.Tensor] = ()) -> bool:
    """Whether to try the fused path: asked for, or by default when no ``foreach`` choice was made.

    Not by default under ``torch.compile`` (the fused paths take per-step Python numbers, which a compiled graph
    would specialise on), with a tensor ``lr`` (the configuration meant for compiled steps: eager and compiled
    steps then run the same path), nor while the step of ``params`` is captured into a CUDA graph (its Python
    numbers would be replayed at every step; ``begin_step`` refuses ``fused=True`` there).
    """
    if fused:
        if foreach:
            raise ValueError("`foreach` and `fused` cannot both be True.")
        if capturing(params):  # (the optimizers refuse it in begin_step, before any group changes)
            raise ValueError(
                f"`fused=True` cannot be captured into a CUDA graph: {FUSED_NOT_CAPTURED}. Received: fused=True"
            )
        return True
    if fused is not None or foreach is not None or isinstance(lr, torch.Tensor):
        return False
    return not torch.jit.is_scripting() and not compiling() and not capturing(params)


def fused_eligible(param: torch.Tensor, *tensors: torch.Tensor, dtypes: tuple[torch.dtype, ...]) -> bool:
    """A plain dense contiguous tensor of one of ``dtypes`` on CPU or CUDA, with companions of its dtype and layout."""
    if type(param) not in _PLAIN or param.dtype not in dtypes or param.layout is not _STRIDED:
        return False
    device, dtype, shape = param.device, param.dtype, param.shape
    if device.type not in _FUSED_DEVICES or not param.is_contiguous():
        return False
    for t in tensors:  # a loop, not all(<generator>): this runs for every parameter at every step
        if t.dtype is not dtype or t.layout is not _STRIDED or t.shape != shape or t.device != device:
            return False
        if not t.is_contiguous():
            return False
    return True


#: what :func:`fused_eligible` reads of a tensor, as C-level getters (the layout, which it also reads, needs no getter:
#: ``is_contiguous`` raises on a non-strided tensor, and the cache then checks in full)
_NONE = type(None)
_END = object()
_LAYOUT_GETTERS = (attrgetter("dtype"), attrgetter("shape"), attrgetter("device"), torch.Tensor.is_contiguous)
#: lists of at most this many tensors are read one tensor at a time (:meth:`LayoutCache._properties`)
_SHORT = 16


class LayoutCache(Generic[T]):
    """A decision about aligned tensor lists that depends only on their layouts, made again only when those change.

    The fused paths' eligibility check (:func:`fused_eligible`, about 2 µs per parameter: as much as torch's fused
    kernel takes for a 32x32 tensor) and what follows from it (which tensors go to the kernel, grouped by device and
    dtype) depend only on the parameters' types and on each tensor's dtype, shape, device, layout and contiguity.
    The cache keeps the decision together with those properties, reads them at every step in one C-level pass per
    list and property (about a third of the check's cost; each pass is compared and dropped before the next, so a
    step allocates no snapshot for the garbage collector to count), and decides again on any difference: another
    set of parameters with gradients, ``p.data = ...``, a replaced or resized state tensor, a non-contiguous gradient.
    Nothing is skipped, and the cache holds no tensor, only the properties it compares. An optimizer keeps one per
    call of its param groups (a group, or consecutive groups stepped as one: ``_groups_call``).
    """

    __slots__ = ("_decision", "_layouts")

    def __init__(self) -> None:
        self._layouts: list[object] | None = None
        self._decision: T | None = None

    def decide(self, lists: Sequence[list[torch.Tensor | None]], decide: Callable[[], T], key: object = None) -> T:
        """``decide()`` for the aligned ``lists`` (parameters first; None entries allowed, e.g. the statistics a
        parameter does not have) and ``key`` (whatever else the decision depends on), or the kept decision if they
        match those it was made for."""
        if self._decision is not None and self._layouts is not None and self._matches(lists, key):
            return self._decision
        self._layouts = self._read(lists, key)
        self._decision = decide()
        return self._decision

    @staticmethod
    def _properties(tensors: list[torch.Tensor | None]) -> Iterator[list[object]]:
        """What the decision depends on in one list, one list of values at a time: the entries' classes (where the
        Nones are), then each getter's values over the present tensors (``is_contiguous`` raises RuntimeError on a
        tensor without strides). A short list (a param group of a few tensors) is read in one pass instead, a tuple
        of those values per tensor: that costs less than six passes there."""
        if len(tensors) <= _SHORT:
            yield [None if t is None else (type(t), t.dtype, t.shape, t.device, t.is_contiguous()) for t in tensors]
            return
        kinds = list(map(type, tensors))
        yield kinds  # type: ignore[misc]
        present = list(compress(tensors, map(is_not, tensors, repeat(None)))) if _NONE in kinds else tensors
        for get in _LAYOUT_GETTERS:
            yield list(map(get, present))  # type: ignore[arg-type]

    @classmethod
    def _read(cls, lists: Sequence[list[torch.Tensor | None]], key: object) -> list[object] | None:
        """The kept layouts of ``lists``: ``key``, then every :meth:`_properties` of every list (None for a tensor
        without strides: sparse, nested; such a decision is made again at every call)."""
        try:
            return [key, *(values for tensors in lists for values in cls._properties(tensors))]
        except RuntimeError:
            return None

    def _matches(self, lists: Sequence[list[torch.Tensor | None]], key: object) -> bool:
        """Whether ``lists`` and ``key`` have the kept layouts. Each list of values is compared as soon as it is read
        and dropped before the next: a step then holds no snapshot of the whole layout, whose few hundred
        ``torch.Size`` tuples would set off a collection of Python's garbage collector at every step."""
        kept = iter(self._layouts or ())
        if next(kept, None) != key:
            return False
        try:
            for tensors in lists:
                for values in self._properties(tensors):
                    if values != next(kept, None):
                        return False
        except RuntimeError:
            return False
        return next(kept, _END) is _END  # and no fewer lists than were kept (AdamW's amsgrad adds one)


def group_layout_cache(optimizer: object, index: int) -> LayoutCache[Any]:
    """The :class:`LayoutCache` ``optimizer`` keeps for the call that starts at its ``index``-th param group (made at
    first use, never saved: a cache that meets other tensors decides again)."""
    caches: dict[int, LayoutCache[Any]] = optimizer.__dict__.setdefault("_layout_caches", {})
    cache = caches.get(index)
    if cache is None:
        cache = caches[index] = LayoutCache()
    return cache
