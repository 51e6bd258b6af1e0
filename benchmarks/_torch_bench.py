"""torch peers: hf_optim_torch's optimizers against torch.optim and transformers-style loops."""

from __future__ import annotations

import math
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import hf_optim_spec
import hf_optim_torch
import torch
from _hf_style import TransformersStyleAdafactor, TransformersStyleAdamW
from _layouts import layout_dtype, layout_shapes, param_groups
from _targets import FINE_TUNING
from _timing import Probe, Timing, interleave, probe_result, probed, step_peak_bytes
from hf_optim_torch import _native

__all__ = [
    "CPU_ONLY",
    "PEERS",
    "bandwidth_probe",
    "copy_bandwidth",
    "cuda_step_peak_bytes",
    "run_optimizers",
    "run_schedules",
]

LR = 1e-3
WEIGHT_DECAY = 0.01


class _TorchOpsAdafactor(hf_optim_torch.Adafactor):
    """``hf_optim_torch.Adafactor`` with its native kernel switched off: the fused path in eager torch ops."""

    def step(self, closure: Any = None) -> Any:
        kernel = _native.adafactor_library()
        _native._state["adafactor"] = None
        try:
            return super().step(closure)
        finally:
            _native._state["adafactor"] = kernel


# name -> (builder(params), family, bandwidth-floor bytes per fp32 parameter per step)
PEERS: dict[str, tuple[Callable[[list[torch.Tensor]], torch.optim.Optimizer], str, int]] = {
    "hf_optim_torch.AdamW": (lambda ps: hf_optim_torch.AdamW(ps, lr=LR, weight_decay=WEIGHT_DECAY), "adamw", 28),
    "torch.optim.AdamW(fused=True)": (
        lambda ps: torch.optim.AdamW(ps, lr=LR, weight_decay=WEIGHT_DECAY, fused=True),
        "adamw",
        28,
    ),
    "torch.optim.AdamW(foreach=True)": (
        lambda ps: torch.optim.AdamW(ps, lr=LR, weight_decay=WEIGHT_DECAY, foreach=True),
        "adamw",
        28,
    ),
    "transformers-style AdamW loop": (
        lambda ps: TransformersStyleAdamW(ps, lr=LR, weight_decay=WEIGHT_DECAY),
        "adamw",
        28,
    ),
    "hf_optim_torch.AdamWeightDecay": (
        lambda ps: hf_optim_torch.AdamWeightDecay(ps, learning_rate=LR, weight_decay_rate=WEIGHT_DECAY),
        "adam_weight_decay",
        28,
    ),
    "hf_optim_torch.Adafactor": (hf_optim_torch.Adafactor, "adafactor", 12),
    # the settings transformers' documentation gives for fine-tuning (a fixed lr, no parameter scaling)
    FINE_TUNING: (
        lambda ps: hf_optim_torch.Adafactor(ps, lr=LR, scale_parameter=False, relative_step=False),
        "adafactor",
        12,
    ),
    "hf_optim_torch.Adafactor(HF_OPTIM_NATIVE=0)": (_TorchOpsAdafactor, "adafactor", 12),
    "transformers-style Adafactor loop": (TransformersStyleAdafactor, "adafactor", 12),
    "torch.optim.Adafactor": (lambda ps: torch.optim.Adafactor(ps, lr=1e-2), "adafactor", 12),
}
CPU_ONLY = frozenset({"hf_optim_torch.Adafactor(HF_OPTIM_NATIVE=0)"})
"""Peers that differ from another only on CPU (the native kernel is a CPU kernel)."""
SLOW_ADAMW = frozenset({"torch.optim.AdamW(foreach=True)", "transformers-style AdamW loop"})
"""AdamW peers five to six times torch's fused step at every size, whose ratios the 10M tables give: ``run.py``
leaves them out at 80M/100M unless ``--full`` (about 10 s a layout there)."""
# the exact (non-fused) paths, timed at the small size only to show what the fast paths gain
EXACT_PEERS: dict[str, tuple[Callable[[list[torch.Tensor]], torch.optim.Optimizer], str, int]] = {
    "hf_optim_torch.AdamW(fused=False)": (
        lambda ps: hf_optim_torch.AdamW(ps, lr=LR, weight_decay=WEIGHT_DECAY, fused=False),
        "adamw",
        28,
    ),
    "hf_optim_torch.Adafactor(fused=False)": (lambda ps: hf_optim_torch.Adafactor(ps, fused=False), "adafactor", 12),
}


# on bfloat16 parameters: AdamW through torch's fused kernel (its float32 arithmetic, opted into with fused=True: the
# default is transformers' bfloat16 in-place arithmetic, which no fused kernel has)
BF16_PEERS: dict[str, tuple[Callable[[list[torch.Tensor]], torch.optim.Optimizer], str, int]] = {
    "hf_optim_torch.AdamW(fused=True)": (
        lambda ps: hf_optim_torch.AdamW(ps, lr=LR, weight_decay=WEIGHT_DECAY, fused=True),
        "adamw",
        28,
    ),
}


def _floor_bytes(family: str, shapes: list[tuple[int, ...]], per_param: int, element_size: int) -> int:
    """Bytes an optimizer must read and write per step: ``per_param`` for float32 tensors, scaled to the parameters'
    element size (the AdamW family's moments have the parameters' dtype); Adafactor's unfactored tensors also move
    their float32 V (8 B/param)."""
    total = sum(math.prod(s) for s in shapes)
    if family != "adafactor":
        return per_param * element_size // 4 * total
    unfactored = sum(math.prod(s) for s in shapes if len(s) < 2)
    return per_param * element_size // 4 * total + 8 * unfactored


def _state_bytes(optimizer: torch.optim.Optimizer) -> int:
    return sum(
        v.numel() * v.element_size()
        for state in optimizer.state.values()
        for v in state.values()
        if isinstance(v, torch.Tensor) and v.dim() > 0
    )


def cuda_step_peak_bytes(step: Callable[[], object]) -> int:
    """GPU memory a step allocates beyond what was allocated before it (peak of torch's caching allocator)."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    step()
    torch.cuda.synchronize()
    return max(0, torch.cuda.max_memory_allocated() - before)


def run_optimizers(
    size: int,
    layout: str,
    *,
    warmup: int,
    rounds: int,
    exact: bool,
    device: str = "cpu",
    leave_out: frozenset[str] = frozenset(),
    probe: Probe | None = None,
) -> dict[str, Any]:
    """All torch peers but those named in ``leave_out`` on one parameter set (shared tensors), interleaved (with
    ``probe``, if any, as one more peer: the bandwidth of each round, for the floors); then each one's memory.

    On CUDA every timed step ends with a device synchronisation, and the step memory is the allocator's peak;
    the peer with the native CPU kernel switched off is left out (it is the same path as the default there).
    """
    cuda = torch.device(device).type == "cuda"
    torch.manual_seed(0)
    shapes = layout_shapes(layout, size)
    dtype = getattr(torch, layout_dtype(layout))
    params = [torch.nn.Parameter((torch.randn(s, device=device) * 0.02).to(dtype)) for s in shapes]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    peers = dict(PEERS, **(EXACT_PEERS if exact else {}), **(BF16_PEERS if dtype == torch.bfloat16 else {}))
    leave_out |= CPU_ONLY if cuda else frozenset()
    peers = {name: peer for name, peer in peers.items() if name not in leave_out}
    optimizers = {name: build(param_groups(layout, params)) for name, (build, _, _) in peers.items()}
    timings: dict[str, Timing] = interleave(
        probed({name: opt.step for name, opt in optimizers.items()}, probe),
        warmup=warmup,
        rounds=rounds,
        sync=torch.cuda.synchronize if cuda else None,
    )
    measured = probe_result(timings, probe)
    rows = {}
    for name, opt in optimizers.items():
        _, family, per_param = peers[name]
        rows[name] = {
            "family": family,
            "timing": timings[name],
            "state_bytes": _state_bytes(opt),
            "step_extra_bytes": cuda_step_peak_bytes(opt.step) if cuda else step_peak_bytes(opt.step),
            "floor_bytes": _floor_bytes(family, shapes, per_param, params[0].element_size()),
        }
    del optimizers, params
    return {"tensors": len(shapes), "params": sum(math.prod(s) for s in shapes), "rows": rows, "probe": measured}


#: the probe's tensor: 8 times the last-level cache of the bench machine (32 MiB), so that a call streams from memory
PROBE_BYTES = 256 * 2**20


def bandwidth_probe(nbytes: int = PROBE_BYTES) -> Probe:
    """``x.mul_(1.0)`` in place on ``nbytes`` of random float32 (each call reads and writes them: the op that measured
    the highest bandwidth of :func:`copy_bandwidth`'s, about 5 to 10 ms a call here), for the rounds of a table."""
    x = torch.rand(nbytes // 4)  # not zeros: a device can move zeros faster than data

    def step() -> None:
        x.mul_(1.0)

    return Probe(step, 2 * x.numel() * x.element_size())


def copy_bandwidth(nbytes: int, repeats: int = 7, device: str = "cpu") -> dict[str, float]:
    """Memory bandwidth (bytes read + written per second) of large streaming torch ops, each the median of runs.

    ``copy``: ``dst.copy_(src)``; ``scale``: ``x.mul_(1.0)`` in place; ``add``: ``torch.add(x, y, out=z)``.
    On CUDA the best of them is the device's bandwidth for the floors (an optimizer can stream at least that fast);
    on CPU the report lists them, and the floors take the bandwidth of each round (:func:`bandwidth_probe`), as the
    machine's moves during a run. On CUDA each run is timed from a device synchronisation to the next.
    """
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    x = torch.rand(nbytes // 4, device=device)  # not zeros: a device can move zeros faster than data
    y = torch.rand_like(x)
    z = torch.empty_like(x)
    ops = {
        "copy": (lambda: z.copy_(x), 2),
        "scale": (lambda: x.mul_(1.0), 2),
        "add": (lambda: torch.add(x, y, out=z), 3),
    }
    out = {}
    for name, (op, streams) in ops.items():
        op()
        times = []
        for _ in range(repeats):
            sync()
            start = time.perf_counter()
            op()
            sync()
            times.append(time.perf_counter() - start)
        out[name] = streams * nbytes / statistics.median(times)
    return out


def _schedule_args(spec: hf_optim_spec.Spec) -> dict[str, Any] | None:
    """The first case's parameters, or None when a parameter is another schedule (not built generically here)."""
    if not spec.cases:
        return None
    params = dict(spec.cases[0].get("params", {}))
    if any(isinstance(v, dict) for v in params.values()):
        return None
    return params


def run_schedules(calls: int) -> dict[str, float]:
    """Seconds per ``scheduler.step()`` of every torch schedule factory in the registry (first spec case)."""
    import inspect

    out: dict[str, float] = {}
    for spec in hf_optim_spec.registry().values():
        if spec.kind != "schedule" or spec.stateful:
            continue
        factory = getattr(hf_optim_torch, (spec.raw.get("api") or {}).get("torch", ""), None)
        args = _schedule_args(spec)
        if factory is None or args is None or "optimizer" not in inspect.signature(factory).parameters:
            continue
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        try:
            scheduler = factory(optimizer, **args)
        except (TypeError, ValueError):
            continue
        if not hasattr(scheduler, "step"):
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "scheduler.step() before optimizer.step()": no training here
            for _ in range(20):
                scheduler.step()
        start = time.perf_counter()
        for _ in range(calls):
            scheduler.step()
        out[spec.id] = (time.perf_counter() - start) / calls
    return out
