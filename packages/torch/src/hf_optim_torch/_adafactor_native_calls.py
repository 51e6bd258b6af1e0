"""Adafactor's native calls of one optimizer step: held while its param groups are routed, then made together.

The C kernel takes a relative step (or manual lr), a beta2t and a weight decay per tensor, and the rest of
:class:`AdafactorOptions` once per call; so the calls of param groups that differ only in those (layer-wise learning
rates) are joined into one (:class:`NativeCalls`), with the same bits as one call per group.
"""

from __future__ import annotations

from itertools import repeat
from typing import Any

from ._adafactor_args import AdafactorOptions, AdafactorTensors
from ._native.adafactor_call import NativeLayout, adafactor_factored, adafactor_unfactored, join_layouts

__all__ = ["NativeCalls", "native_buffers", "native_calls"]


class _Call:
    """A native call (the kernel's statistics and apply calls) over CPU tensors of one kind, from one or several
    param groups: the kernel takes a relative step (or manual lr), a beta2t and a weight decay per tensor, and the
    rest of :class:`AdafactorOptions` once for the call."""

    __slots__ = ("beta2ts", "buffers", "kind", "layouts", "lib", "options", "rels", "weight_decays")

    def __init__(self, lib: Any, kind: str, options: AdafactorOptions) -> None:
        self.lib, self.kind, self.options = lib, kind, options
        self.buffers: list[list[Any] | None] | None = None  # in the kernel's order (see native_buffers)
        self.layouts: list[NativeLayout] = []  # each group's, in order
        self.rels: list[float] = []
        self.beta2ts: list[float] = []
        self.weight_decays: list[float] | None = None  # per tensor, once a group's differs from the first's

    def takes(self, lib: Any, kind: str, options: AdafactorOptions) -> bool:
        """Whether a group's call with these can be part of this one: equal where the kernel takes one value per
        call (eps, the clipping threshold, beta1 and the first moment's variant, ``scale_parameter``, and whether
        weight decay is on)."""
        a, b = self.options, options
        return (
            (self.lib, self.kind) == (lib, kind)
            and (a.eps, a.clip_threshold, a.beta1, a.scale_parameter)
            == (b.eps, b.clip_threshold, b.beta1, b.scale_parameter)
            and (a.beta1 is None or a.first_moment == b.first_moment)
            and (a.weight_decay != 0.0) == (b.weight_decay != 0.0)
        )

    def extend(
        self, buffers: list[Any], layout: NativeLayout, rels: list[float], beta2ts: list[float], weight_decay: float
    ) -> None:
        """Add a group's tensors: its lists (made for this call) become the call's, and later groups extend them (a
        step holds no objects per group, whose count would set off Python's garbage collector)."""
        if self.buffers is None:
            self.buffers, self.rels, self.beta2ts = buffers, rels, beta2ts
        else:
            for mine, more in zip(self.buffers, buffers):
                if mine is not None:
                    mine.extend(more)
            if self.weight_decays is None and weight_decay != self.options.weight_decay:
                self.weight_decays = [self.options.weight_decay] * len(self.rels)
            self.rels.extend(rels)
            self.beta2ts.extend(beta2ts)
        if self.weight_decays is not None:
            self.weight_decays.extend(repeat(weight_decay, len(rels)))
        self.layouts.append(layout)

    def parts(self) -> list[_Call]:
        """This call as the calls of its groups, one each."""
        assert self.buffers is not None
        parts, start = [], 0
        for layout in self.layouts:
            end = start + len(layout.shapes)
            part = _Call(self.lib, self.kind, self.options)
            part.buffers = [None if tensors is None else tensors[start:end] for tensors in self.buffers]
            part.layouts = [layout]
            part.rels, part.beta2ts = self.rels[start:end], self.beta2ts[start:end]
            part.weight_decays = None if self.weight_decays is None else self.weight_decays[start:end]
            parts.append(part)
            start = end
        return parts

    def run(self, layout: NativeLayout) -> None:
        assert self.buffers is not None
        grads, params, *rest = self.buffers
        call = adafactor_factored if self.kind == "factored" else adafactor_unfactored
        call(
            self.lib,
            params,
            grads,
            *rest,
            rels=self.rels,
            beta2ts=self.beta2ts,
            weight_decays=self.weight_decays,
            options=self.options,
            layout=layout,
        )


class NativeCalls:
    """The native calls of one optimizer step, held until :meth:`run` and then made together: the calls of param
    groups that can be one (:meth:`_Call.takes`; groups that differ in their lr or weight decay, as layer-wise
    learning rates make them, can) are joined into one, which spares each group the cost of its own calls (about
    100 us). The result is the same: the kernel computes each tensor on its own. An optimizer keeps one
    (:func:`native_calls`) and with it the joined layouts of its last steps, made again only when a group's own
    layout (kept while its tensors' layouts stay the same) is another."""

    def __init__(self) -> None:
        self._pending: list[_Call] = []
        self._joined: dict[tuple[int, ...], tuple[list[NativeLayout], NativeLayout]] = {}

    def add(
        self,
        lib: Any,
        kind: str,
        buffers: list[Any],
        layout: NativeLayout,
        rels: list[float],
        beta2ts: list[float],
        options: AdafactorOptions,
    ) -> None:
        """Hold a group's call of ``kind`` (its buffers in the kernel's order, their layout, per tensor the relative
        step and beta2t), in the call of an earlier group that it can join if there is one."""
        call = next((call for call in self._pending if call.takes(lib, kind, options)), None)
        if call is None:
            call = _Call(lib, kind, options)
            self._pending.append(call)
        call.extend(buffers, layout, rels, beta2ts, options.weight_decay)

    def run(self) -> list[ValueError]:
        """Make every call held (none is held afterwards) and return the kernel's refusals. The kernel checks every
        tensor of a call before it writes any: a joined call it refuses is made again group by group, so that, as
        when each group made its own call, only the group whose tensors it refuses is left out."""
        pending, self._pending = self._pending, []
        refused: list[ValueError] = []
        for call in pending:
            try:
                call.run(call.layouts[0] if len(call.layouts) == 1 else self._join(call.layouts))
                continue
            except ValueError as error:
                if len(call.layouts) == 1:
                    refused.append(error)
                    continue
            for part in call.parts():
                try:
                    part.run(part.layouts[0])
                except ValueError as error:
                    refused.append(error)
        return refused

    @staticmethod
    def raise_refused(refused: list[ValueError]) -> None:
        """Raise the refusals :meth:`run` returned, if any (several as one ValueError)."""
        if len(refused) == 1:
            raise refused[0]
        if refused:
            raise ValueError(f"{len(refused)} native calls were refused: " + "; ".join(map(str, refused)))

    def _join(self, layouts: list[NativeLayout]) -> NativeLayout:
        """The layout of one call over the tensors of ``layouts``, joined once while the groups' layouts stay."""
        key = tuple(map(id, layouts))
        kept = self._joined.get(key)
        if kept is None or any(a is not b for a, b in zip(kept[0], layouts)):  # (an id reused by another layout)
            if len(self._joined) >= _JOINS_KEPT:
                self._joined.clear()
            kept = self._joined[key] = (layouts, join_layouts(layouts))
        return kept[1]


#: joined layouts an optimizer keeps (a step joins one or two per kind: with and without weight decay)
_JOINS_KEPT = 8


def native_calls(optimizer: object) -> NativeCalls:
    """The :class:`NativeCalls` ``optimizer`` keeps (made at first use, never saved)."""
    calls = optimizer.__dict__.get("_native_calls")
    if calls is None:
        calls = optimizer.__dict__["_native_calls"] = NativeCalls()
    return calls


def native_buffers(
    tensors: AdafactorTensors, options: AdafactorOptions, kind: str, picked: list[int]
) -> list[list[Any] | None]:
    """The buffers of a native call of the tensors at ``picked``, in the kernel's order (gradients, parameters,
    ``exp_avg`` or None without a first moment, the statistics of ``kind``, RMS)."""
    statistics = (tensors.row_vars, tensors.col_vars) if kind == "factored" else (tensors.full_vars,)
    first_moment = [tensors.exp_avgs[i] for i in picked] if options.beta1 is not None else None
    return [
        [tensors.grads[i] for i in picked],
        [tensors.params[i] for i in picked],
        first_moment,
        *([stat[i] for i in picked] for stat in statistics),
        [tensors.rms_values[i] for i in picked],
    ]
