"""Diagnostics for the CUDA paths (a lent GPU machine): where the step time goes, and how the kernels round.

Usage: python benchmarks/cuda_probe.py  (PYTHONPATH holding packages/spec/src, packages/torch/src and the root)

1. Conformance float32 AdamW cases on CPU and CUDA, fused and exact paths: the worst error over the spec
   tolerance (1.0 = at the bound).
2. ``torch._fused_adamw_`` on CPU and on CUDA with the same inputs: how far apart p, m and v land.
3. Host time of one step (until ``step()`` returns, before the device finishes) and device time, for the AdamW
   and Adafactor peers at 100M parameters in ~200 tensors; kernel launches per step; the top host functions.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))


def conformance_margins() -> None:
    import hf_optim_spec as hs
    import hf_optim_torch
    from hf_optim_spec.reference import _case as ref_case

    from conformance import _expected
    from testsupport.spec_args import spelled

    spec = hs.get("adamw")
    tol = spec.tol("float32")
    print("case | cpu fused | cpu exact | cuda fused | cuda exact   (worst |err| / (atol + rtol |x|))")
    for case in spec.cases:
        if case.get("dtype") != "float32":
            continue
        ref = _expected.reference_trajectory(spec, case)
        cells = []
        for device in ("cpu", "cuda"):
            for kwargs in ({}, {"fused": False}):
                params0, grads = ref_case.case_inputs(case)
                named = {
                    n: torch.nn.Parameter(torch.tensor(np.asarray(v, dtype=np.float64)).float().to(device))
                    for n, v in params0.items()
                }
                hyper = spelled(spec, case.get("hyperparams", {}), "torch", lambda r: r)
                opt = hf_optim_torch.AdamW(list(named.items()), **hyper, **kwargs)
                worst = 0.0
                for k, row in enumerate(grads):
                    for n, p in named.items():
                        g = row.get(n)
                        p.grad = None if g is None else torch.tensor(np.asarray(g, dtype=np.float64)).float().to(device)
                    opt.step()
                    for n, p in named.items():
                        e = ref.params[k][n]
                        a = p.detach().cpu().double().numpy()
                        worst = max(worst, float(np.max(np.abs(a - e) / (tol.atol + tol.rtol * np.abs(e)))))
                cells.append(f"{worst:.2f}")
        print(f"{case['description'][:44]:44s} | " + " | ".join(cells))


def fused_kernel_rounding() -> None:
    torch.manual_seed(0)
    n = 1 << 20
    base = {
        "p": torch.randn(n) * 0.05,
        "g": torch.randn(n) * 1e-2,
        "m": torch.randn(n) * 1e-3,
        "v": torch.rand(n) * 1e-4,
    }
    for step, lr, wd in ((float("inf"), 0.05, 0.0), (float("inf"), 0.05, 0.02), (4.0, 0.05, 0.0)):
        out = {}
        for device in ("cpu", "cuda"):
            t = {k: v.clone().to(device) for k, v in base.items()}
            torch._fused_adamw_(
                [t["p"]],
                [t["g"]],
                [t["m"]],
                [t["v"]],
                [],
                [torch.tensor(step, device=device)],
                lr=lr,
                beta1=0.9,
                beta2=0.999,
                weight_decay=wd,
                eps=1e-6,
                amsgrad=False,
                maximize=False,
            )
            out[device] = {k: v.cpu().double() for k, v in t.items()}
        # the same update in float64 from the same float32 inputs
        p, g, m, v = (base[k].double() for k in "pgmv")
        bc1 = 1 - 0.9**step if step != float("inf") else 1.0
        bc2 = (1 - 0.999**step) ** 0.5 if step != float("inf") else 1.0
        p = p * (1 - lr * wd)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        p = p - lr / bc1 * m / (v.sqrt() / bc2 + 1e-6)
        exact = {"p": p, "m": m, "v": v}
        cells = []
        for k in "pmv":
            rel = lambda a, b: float(((a - b).abs() / b.abs().clamp_min(1e-30)).max())  # noqa: E731
            cells.append(
                f"{k}: cpu-vs-f64 {rel(out['cpu'][k], exact[k]):.1e} cuda-vs-f64 {rel(out['cuda'][k], exact[k]):.1e}"
            )
        print(f"step={step} lr={lr} wd={wd}: " + "; ".join(cells))


def step_costs() -> None:
    import hf_optim_torch
    from _layouts import layout_shapes

    torch.manual_seed(0)
    shapes = layout_shapes("transformer", 100_000_000)
    params = [torch.nn.Parameter(torch.randn(s, device="cuda") * 0.02) for s in shapes]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    peers = {
        "hf AdamW": hf_optim_torch.AdamW(params, lr=1e-3, weight_decay=0.01),
        "torch AdamW fused": torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, fused=True),
        "hf AdamWeightDecay": hf_optim_torch.AdamWeightDecay(params, learning_rate=1e-3, weight_decay_rate=0.01),
        "hf Adafactor": hf_optim_torch.Adafactor(params),
        "hf Adafactor(foreach=True)": hf_optim_torch.Adafactor(params, foreach=True),
        "torch Adafactor": torch.optim.Adafactor(params, lr=1e-2),
    }
    print("peer | host ms (step returns) | wall ms (synchronised) | kernels per step")
    for name, opt in peers.items():
        for _ in range(3):
            opt.step()
        torch.cuda.synchronize()
        host, wall = [], []
        for _ in range(10):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            opt.step()
            t1 = time.perf_counter()
            torch.cuda.synchronize()
            t2 = time.perf_counter()
            host.append(t1 - t0)
            wall.append(t2 - t0)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            opt.step()
            torch.cuda.synchronize()
        kernels = sum(e.count for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA)
        print(f"{name} | {np.median(host) * 1e3:.2f} | {np.median(wall) * 1e3:.2f} | {kernels}")
    for name in ("hf AdamW", "torch AdamW fused", "hf Adafactor"):
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(5):
            peers[name].step()
        profile.disable()
        torch.cuda.synchronize()
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats("tottime").print_stats(14)
        lines = [line for line in text.getvalue().splitlines() if line.strip()][-16:]
        print(f"--- {name}: 5 steps, top host functions\n" + "\n".join(lines))


def interleaved_adamw() -> None:
    """The benchmark's setting (1B parameters in ~200 tensors, every peer stepping in turn): host and device time
    of the AdamW peers, the synchronisations in one step, and the top device kernels of one step."""
    import warnings

    import _torch_bench
    from _layouts import layout_shapes

    torch.manual_seed(0)
    params = [
        torch.nn.Parameter(torch.randn(s, device="cuda") * 0.02) for s in layout_shapes("transformer", 1_000_000_000)
    ]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-3
    names = [n for n in _torch_bench.PEERS if n not in _torch_bench.CPU_ONLY]
    opts = {n: _torch_bench.PEERS[n][0](params) for n in names}
    for _ in range(2):
        for opt in opts.values():
            opt.step()
    torch.cuda.synchronize()
    for name in ("hf_optim_torch.AdamW", "torch.optim.AdamW(fused=True)", "hf_optim_torch.AdamWeightDecay"):
        host, wall = [], []
        for _ in range(5):
            for other in opts.values():
                other.step()
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            opts[name].step()
            t1 = time.perf_counter()
            torch.cuda.synchronize()
            host.append(t1 - t0)
            wall.append(time.perf_counter() - t0)
        torch.cuda.set_sync_debug_mode("warn")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            opts[name].step()
            torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode(0)
        syncs = [str(w.message)[:80] for w in caught if "synchroniz" in str(w.message)]
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            opts[name].step()
            torch.cuda.synchronize()
        top = sorted(
            (e for e in prof.key_averages() if e.device_type == torch.autograd.DeviceType.CUDA),
            key=lambda e: -e.device_time_total,
        )[:3]
        kernels = "; ".join(f"{e.key[:50]} x{e.count} {e.device_time_total / 1e3:.2f} ms" for e in top)
        print(
            f"{name}: host {np.median(host) * 1e3:.2f} ms, wall {np.median(wall) * 1e3:.2f} ms, "
            f"{len(syncs)} syncs {syncs[:2]}; kernels: {kernels}"
        )


if __name__ == "__main__":
    for part in (conformance_margins, step_costs, interleaved_adamw):
        print(f"=== {part.__name__}", flush=True)
        try:
            part()
        except Exception as error:  # keep the other parts' output
            print(f"{part.__name__} failed: {error!r}")
