"""The benchmark harness (``benchmarks/``): which rounds a slow peer sits out, and the report code of the GPU run,
which only a lent GPU machine runs whole (an import of a renamed function there would fail at the end of a run)."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> object:
    """``import`` of a module of ``benchmarks/`` (they import each other by their bare names)."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    return importlib.import_module


def _steps(clock: list[float], seconds: dict[str, float], calls: dict[str, int]) -> dict[str, object]:
    def step(name: str) -> object:
        def run() -> None:
            calls[name] += 1
            clock[0] += seconds[name]

        return run

    return {name: step(name) for name in seconds}


def test_a_slow_peer_sits_out_the_rounds_after_its_budget(bench, monkeypatch: pytest.MonkeyPatch) -> None:
    timing: ModuleType = bench("_timing")
    clock = [0.0]
    monkeypatch.setattr(timing, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    seconds = {"fast": 0.01, "slow": 2.0, "middling": 0.7}
    calls = dict.fromkeys(seconds, 0)
    timings = timing.interleave(_steps(clock, seconds, calls), warmup=2, rounds=10, budget=5.0)
    # fast: every round; slow: MIN_ROUNDS (12 s by then); middling: until its times add up to 5 s (8 x 0.7 = 5.6)
    assert timing.MIN_ROUNDS == 6
    assert {name: len(t.times) for name, t in timings.items()} == {"fast": 10, "slow": 6, "middling": 8}
    assert calls == {"fast": 12, "slow": 8, "middling": 10}  # warm-up rounds are not counted against the budget
    assert timings["slow"].times == pytest.approx([2.0] * 6)
    ratio, _ = timing.ratio_stats(timings["slow"], timings["fast"])  # the rounds both took part in
    assert ratio == pytest.approx(200.0)


def test_without_a_budget_every_peer_takes_every_round(bench, monkeypatch: pytest.MonkeyPatch) -> None:
    timing: ModuleType = bench("_timing")
    clock = [0.0]
    monkeypatch.setattr(timing, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    seconds = {"fast": 0.01, "slow": 2.0}
    calls = dict.fromkeys(seconds, 0)
    timings = timing.interleave(_steps(clock, seconds, calls), warmup=1, rounds=9, budget=float("inf"))
    assert [len(t.times) for t in timings.values()] == [9, 9]


def test_the_gpu_report_renders_its_targets_and_tables(bench) -> None:
    timing: ModuleType = bench("_timing")
    cuda: ModuleType = bench("cuda")
    run: ModuleType = bench("run")

    def row(seconds: list[float]) -> dict[str, object]:
        return {"timing": timing.Timing(seconds), "floor_bytes": 28e9, "state_bytes": 1, "step_extra_bytes": 0}

    rows = {
        "hf_optim_torch.AdamW": row([0.011, 0.012, 0.011, 0.013]),
        cuda.FUSED: row([0.010, 0.010, 0.010, 0.010]),
        "hf_optim_torch.Adafactor": row([0.02, 0.02, 0.02, 0.02]),
        "torch.optim.Adafactor": row([0.04, 0.04, 0.04, 0.04]),
    }
    result = {"rows": rows, "tensors": 1, "params": 10**9}
    targets = "\n".join(cuda._targets({("1B", "one_tensor"): result}, 4e12, "1B"))
    assert "| AdamW <= 1.1x torch.optim.AdamW(fused=True) | 1 tensor | 1.15x" in targets
    assert "| Adafactor against torch.optim.Adafactor (no target) | 1 tensor | 0.50x its time" in targets
    table = run._table(result, cuda.FUSED, 4e12)
    assert table[0].startswith("| peer | × torch.optim.AdamW(fused=True) (IQR) | median ms |")
    assert "| hf_optim_torch.AdamW | 1.15 (±" in table[2] and "| 4 |" in table[2]  # its 4 timed rounds


@pytest.mark.parametrize(("n", "expected"), [(12, (3, 10)), (20, (6, 15)), (60, (22, 39))])
def test_the_median_interval_is_the_textbook_order_statistics(bench, n: int, expected: tuple[int, int]) -> None:
    # the distribution-free 95% intervals of a median found in statistics tables: the r-th smallest and largest of n
    timing: ModuleType = bench("_timing")
    values = [float(v) for v in range(n, 0, -1)]  # shuffled order must not matter: reversed here
    assert timing.median_interval(values) == expected
    assert timing.median_interval([1.0, 2.0, 3.0, 4.0, 5.0]) is None  # too few for 95%


def test_a_target_is_decided_only_by_its_whole_interval(bench) -> None:
    targets: ModuleType = bench("_targets")
    met = targets.target_row("t", 1.05, 0.1, 1.1, interval=(1.0, 1.09), by_interval=True)
    missed = targets.target_row("t", 1.2, 0.1, 1.1, interval=(1.12, 1.3), by_interval=True)
    spans = targets.target_row("t", 1.05, 0.1, 1.1, interval=(0.99, 1.13), by_interval=True)
    few = targets.target_row("t", 1.05, 0.1, 1.1, interval=None, by_interval=True)
    assert met.endswith("| yes |") and "95% CI 1.00 to 1.09" in met
    assert missed.endswith("| no, 1.09x the bound |")
    assert spans.endswith("| not decided: the CI spans 1.1x |")
    assert few.endswith("| not decided: too few rounds for a 95% CI |")
    assert targets.target_row("t", 1.05, None, 1.1).endswith("| yes |")  # not by its interval: the median decides


def test_a_floor_ratio_is_to_the_bandwidth_of_its_own_round(bench, monkeypatch: pytest.MonkeyPatch) -> None:
    # the machine's bandwidth halves in the second half of the run: the probe and the step both take twice as long
    timing: ModuleType = bench("_timing")
    targets: ModuleType = bench("_targets")
    clock = [0.0]
    monkeypatch.setattr(timing, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    calls = [0]

    def slow() -> float:  # two calls a round (the peer's and the probe's): the bandwidth halves from round 6 on
        calls[0] += 1
        return 2.0 if calls[0] > 12 else 1.0

    def step() -> None:
        clock[0] += 0.030 * slow()  # 3x its floor of 0.010 s at the probe's bandwidth of the same round

    def probe_step() -> None:
        clock[0] += 0.005 * slow()  # 1e9 bytes in 5 ms: 200 GB/s, then 100 GB/s

    probe = timing.Probe(probe_step, 10**9)
    timings = timing.interleave(timing.probed({"peer": step}, probe), warmup=0, rounds=12, budget=float("inf"))
    measured = timing.probe_result(timings, probe)
    assert set(timings) == {"peer"} and len(measured["timing"].times) == 12  # the probe is no peer of the table
    assert sorted(measured["timing"].times) == pytest.approx([0.005] * 6 + [0.010] * 6)  # both bandwidths
    rows = {"peer": {"timing": timings["peer"], "floor_bytes": 2 * 10**9}}
    ratio, interval, _ = targets.floor_ratio({"rows": rows, "probe": measured}, "peer", 200e9)
    assert ratio == pytest.approx(3.0) and interval == pytest.approx((3.0, 3.0))
    # over one bandwidth for the whole run (the start's, 200 GB/s) the same steps read 3x or 6x: the verdict would
    # follow the hour, not the optimizer
    ratio, interval, floor = targets.floor_ratio({"rows": rows}, "peer", 200e9)
    assert floor == pytest.approx(0.010) and interval[0] == pytest.approx(3.0) and interval[1] == pytest.approx(6.0)
    row = targets.floor_target("t", {"rows": rows, "probe": measured}, "peer", 200e9, 5.0)
    assert row == "| t | 3.00x floor; 95% CI 3.00 to 3.00 | yes |"
