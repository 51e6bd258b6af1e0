"""Interleaved timing and step-memory measurement shared by the torch and Keras benchmarks."""

from __future__ import annotations

import ctypes
import gc
import math
import random
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = [
    "PROBE",
    "Probe",
    "Timing",
    "floor_ratios",
    "freeze_imports",
    "interleave",
    "median_interval",
    "probe_result",
    "probed",
    "ratio_interval",
    "rss_bytes",
    "step_past_eager_iterations",
    "step_peak_bytes",
]


@dataclass
class Timing:
    """Step times of one peer (seconds), measured in rounds interleaved with the other peers."""

    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def spread(self) -> float:
        """Interquartile range over the median (run-to-run spread of this peer's steps)."""
        if len(self.times) < 4:
            return 0.0
        q = statistics.quantiles(self.times, n=4)
        return (q[2] - q[0]) / self.median


def step_past_eager_iterations(optimizer: object, step: Callable[[], object]) -> None:
    """An eager hf_optim_tf optimizer runs its first ``EAGER_ITERATIONS`` iterations op by op, then its traced step (on
    TensorFlow compiled by XLA from the optimizer's XLA iteration on: Adafactor's 500th, the AdamW family's first
    traced one): its iteration count is set past them, as a run restored from a checkpoint there has it (the count
    chooses the path; Adafactor's numerics use each variable's own step), and ``step`` runs once, untimed (the trace
    and XLA's compilation), so that the timed rounds measure what a long eager run spends per step. Stepping through
    the op-by-op iterations instead took about a second each at ~200 tensors, for no number in the report."""
    if type(optimizer).__module__.startswith("hf_optim_tf"):
        import keras
        from hf_optim_tf._traced_update import EAGER_ITERATIONS

        iterations = optimizer.iterations  # type: ignore[attr-defined]
        past = EAGER_ITERATIONS
        if keras.backend.backend() == "tensorflow":
            past = max(past, optimizer._XLA_FROM_ITERATION)  # type: ignore[attr-defined]
        iterations.assign(max(int(iterations), past))
        step()  # the trace (and XLA's compilation)


def freeze_imports() -> None:
    """Move every object alive now (the modules of torch, TensorFlow, Keras, JAX) out of the garbage collector's
    reach (``gc.freeze``): :func:`step_peak_bytes` collects before every measurement, which took 0.3 to 0.4 s with
    these modules loaded, and takes milliseconds after this. Call it once, after the imports, before any peer exists:
    frozen objects are only ever freed by their reference counts."""
    gc.collect()
    gc.freeze()


#: a peer stops taking part in the rounds once its timed steps add up to this many seconds, after at least
#: ``MIN_ROUNDS`` of them: the slow peers (informative only: transformers-style loops at 80M parameters, 1.4 s a step,
#: Keras' own eager step at ~200 tensors, 1 s) then take a few rounds, the fast ones (every target's) all of them
BUDGET_S = 5.0
MIN_ROUNDS = 6


def interleave(
    steps: Mapping[str, Callable[[], object]],
    *,
    warmup: int,
    rounds: int,
    sync: Callable[[], object] | None = None,
    budget: float = BUDGET_S,
) -> dict[str, Timing]:
    """Time every peer up to ``rounds`` times after ``warmup`` untimed rounds, all peers once per round.

    Each round runs the peers in a new random order (seeded: the same orders every run), so that every peer has the
    same neighbours as often as any other. A peer that leaves the caches cold (a Python loop allocating a tensor per
    parameter) slows the one after it: with the order only alternating, the peers next to it in the list were timed
    slower (hf AdamWeightDecay, 200 tensors of 32: 1.07x torch's fused AdamW beside the transformers-style loop,
    1.00x away from it, measured in one process).

    A peer whose timed steps add up to ``budget`` seconds, after at least ``MIN_ROUNDS`` rounds, sits out the rounds
    left: its times are those of the first rounds, so that :func:`ratio_stats` pairs them with the same rounds of any
    other peer.
    """
    names = list(steps)
    timings = {name: Timing() for name in names}
    orders = random.Random(0)
    for round_ in range(warmup + rounds):
        order = orders.sample(names, len(names))
        for name in order:
            times = timings[name].times
            if len(times) >= MIN_ROUNDS and sum(times) >= budget:
                continue
            start = time.perf_counter()
            steps[name]()
            if sync is not None:
                sync()
            elapsed = time.perf_counter() - start
            if round_ >= warmup:
                times.append(elapsed)
    return timings


def median_interval(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float] | None:
    """A confidence interval for the median of ``values`` that assumes nothing about their distribution: the k-th
    smallest and the k-th largest value, k the largest count with P(Binomial(n, 1/2) < k) <= (1 - confidence) / 2
    (the median lies below the k-th smallest of n independent draws only if fewer than k fall below it). None where
    n is too small for any such k (under 6 values at 95%). Consecutive rounds share the machine's state (its other
    load, its clock), so their draws are not quite independent, and the interval is a little narrower than it
    claims: read it as the least uncertainty of the median, not the most."""
    n = len(values)
    tail, k = 0.0, 0
    while k < n and tail + math.comb(n, k) / 2**n <= (1.0 - confidence) / 2:
        tail += math.comb(n, k) / 2**n
        k += 1
    if k == 0:
        return None
    ordered = sorted(values)
    return ordered[k - 1], ordered[n - k]


#: the name under which a table's bandwidth probe (a streaming op of known bytes, ``_torch_bench.bandwidth_probe``)
#: is timed in the rounds of its peers, one call a round like theirs
PROBE = "bandwidth probe"


@dataclass
class Probe:
    """A streaming op of known bytes (``_torch_bench.bandwidth_probe``): timed in a table's rounds with its peers, it
    measures the bandwidth of each round (:func:`floor_ratios`)."""

    step: Callable[[], object]
    nbytes: int  # bytes read and written by one call


def probed(steps: Mapping[str, Callable[[], object]], probe: Probe | None) -> dict[str, Callable[[], object]]:
    """``steps`` and, where there is a probe, the probe as one more peer (:data:`PROBE`)."""
    return {**steps, PROBE: probe.step} if probe is not None else dict(steps)


def probe_result(timings: dict[str, Timing], probe: Probe | None) -> dict[str, object] | None:
    """The probe's part of a table (``{"timing", "bytes"}``), taken out of ``timings``; None without a probe."""
    if probe is None:
        return None
    return {"timing": timings.pop(PROBE), "bytes": probe.nbytes}


def floor_ratios(timing: Timing, floor_bytes: float, probe: Timing, probe_bytes: float) -> list[float]:
    """Each round's step time over that round's bandwidth floor: ``floor_bytes`` at the bandwidth the probe measured
    in the same round (``probe_bytes`` over its time), for the rounds both took part in.

    The machine's bandwidth moves between two levels about 2x apart while a run lasts (benchmarks/NOTES.md); a floor
    from one measurement at the start of a run made every "x floor" figure of the run follow the level of that
    moment. A ratio to the floor of its own round is a ratio of two things timed together, as the peers' are."""
    return [t * probe_bytes / (p * floor_bytes) for t, p in zip(timing.times, probe.times)]


def ratio_interval(numerator: Timing, denominator: Timing) -> tuple[float, float] | None:
    """:func:`median_interval` of the per-round ratios that :func:`ratio_stats` takes the median of."""
    return median_interval([a / b for a, b in zip(numerator.times, denominator.times)])


def ratio_stats(numerator: Timing, denominator: Timing) -> tuple[float, float]:
    """Median and interquartile spread of the per-round ratios (peers measured in the same round)."""
    ratios = [a / b for a, b in zip(numerator.times, denominator.times)]
    median = statistics.median(ratios)
    if len(ratios) < 4:
        return median, 0.0
    q = statistics.quantiles(ratios, n=4)
    return median, (q[2] - q[0]) / median


def _malloc_trim() -> None:
    """Give freed heap pages back to the system, so that the next step's temporaries show in the RSS."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def rss_bytes() -> int:
    """Resident set size of this process."""
    return _status_kb("VmRSS") * 1024


def step_peak_bytes(step: Callable[[], object]) -> int | None:
    """Memory a step needs beyond what is already resident: peak RSS during the step minus RSS before it.

    Frees and trims the heap first, then resets the kernel's peak-RSS mark (``/proc/self/clear_refs``).
    None where that is not available (not Linux).
    """
    gc.collect()
    _malloc_trim()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        before = _status_kb("VmRSS")
        step()
        peak = _status_kb("VmHWM")
    except OSError:
        return None
    return max(0, peak - before) * 1024
