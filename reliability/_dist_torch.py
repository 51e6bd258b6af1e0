"""torch distributed checks on 2 CPU processes (gloo): ``python -m reliability._dist_torch TASK.json``.

For each optimizer spec given in the task (AdamW, Adafactor) and each engine (DDP; FSDP2 ``fully_shard``, whose
parameters and optimizer state are DTensors sharded over the two ranks):

* train ``steps`` steps where each rank sees its own half of the batch; the reference is the same optimizer in one
  process on the average of the two ranks' gradients; parameters are compared (bitwise and max |diff|);
* FSDP2 only: save model + optimizer with ``torch.distributed.checkpoint`` halfway, load them into freshly built
  sharded objects, continue, and compare with the uninterrupted distributed run.

The report lists, per check, ``ok`` / the max difference, or the exception (type, message, the innermost frames).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

import hf_optim_spec as hs
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

SHAPES = {"w": (8, 6), "b": (6,)}
BATCH = 4  # per rank


class _Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.w = torch.nn.Parameter(torch.randn(*SHAPES["w"]) * 0.5)
        self.b = torch.nn.Parameter(torch.randn(*SHAPES["b"]) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.tanh(x @ self.w + self.b)
        return (out * out).mean()


def _model() -> torch.nn.Module:
    return _Net()


def _loss(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(x)


def _batch(step: int, rank: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 * step + rank)
    return torch.randn(BATCH, SHAPES["w"][0], generator=g)


def _optimizer(spec_id: str, params: Any) -> torch.optim.Optimizer:
    import hf_optim_torch

    spec = hs.get(spec_id)
    case = next(c for c in spec.cases if c.get("dtype", "float32") == "float32")
    hyper = dict(case.get("hyperparams", {}))
    kwargs = {}
    for name, value in hyper.items():
        kwargs[spec.parameters[name].name_for("torch")] = tuple(value) if isinstance(value, (list, tuple)) else value
    return getattr(hf_optim_torch, spec.api["torch"])(params, **kwargs)


def reference(spec_id: str, steps: int, world: int) -> dict[str, torch.Tensor]:
    """One process; gradient = average of the ranks' gradients (each computed on its own half batch)."""
    model = _model()
    optimizer = _optimizer(spec_id, model.parameters())
    for step in range(steps):
        grads: list[list[torch.Tensor]] = []
        for rank in range(world):
            model.zero_grad()
            _loss(model, _batch(step, rank)).backward()
            grads.append([p.grad.clone() for p in model.parameters()])
        for p, *per_rank in zip(model.parameters(), *grads):
            p.grad = sum(g / world for g in per_rank)
        optimizer.step()
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def _full(t: torch.Tensor) -> torch.Tensor:
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def _train(engine: str, spec_id: str, rank: int, steps: range, model: Any = None, optimizer: Any = None) -> tuple:
    if model is None:
        model = _model()
        if engine == "ddp":
            model = torch.nn.parallel.DistributedDataParallel(model)
        else:
            from torch.distributed.fsdp import fully_shard

            fully_shard(model)
        optimizer = _optimizer(spec_id, model.parameters())
    for step in steps:
        optimizer.zero_grad()
        _loss(model, _batch(step, rank)).backward()
        optimizer.step()
    return model, optimizer


def _params(model: Any) -> dict[str, torch.Tensor]:
    module = model.module if hasattr(model, "module") else model
    return {name: _full(p.detach()).clone() for name, p in module.named_parameters()}


def _stage(out_dir: str, rank: int, name: str) -> None:
    """Append the stage a rank has reached, so that a rank killed by a signal still says where it was."""
    with open(os.path.join(out_dir, f"rank{rank}.stages"), "a", encoding="utf-8") as fh:
        fh.write(name + "\n")


def _worker(rank: int, world: int, task: dict[str, Any], init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    _stage(out_dir, rank, "init")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    results: dict[str, Any] = {}
    steps = task["steps"]
    try:
        for spec_id in task["optimizers"]:
            for engine in ("ddp", "fsdp2"):
                key = f"{engine}:{spec_id}"
                _stage(out_dir, rank, key)
                try:
                    model, _ = _train(engine, spec_id, rank, range(steps))
                    results[key] = {"params": _params(model)}
                    if engine == "fsdp2":
                        results[key]["state_types"] = sorted(
                            {type(v).__name__ for s in _.state.values() for v in s.values()}
                        )
                except Exception as error:
                    results[key] = {"error": _describe(error)}
                dist.barrier()
            key = f"dcp:{spec_id}"
            _stage(out_dir, rank, key)
            try:
                results[key] = {"params": _dcp_roundtrip(spec_id, rank, steps, task["ckpt_dir"])}
            except Exception as error:
                results[key] = {"error": _describe(error)}
            dist.barrier()
    finally:
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        _stage(out_dir, rank, "saved")
        dist.destroy_process_group()
        _stage(out_dir, rank, "destroyed")
    # skip interpreter finalisation: gloo's threads can abort it (see _spawn); every result is on disk
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _dcp_roundtrip(spec_id: str, rank: int, steps: int, ckpt_dir: str) -> dict[str, torch.Tensor]:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    half = steps // 2
    model, optimizer = _train("fsdp2", spec_id, rank, range(half))
    model_sd, optim_sd = get_state_dict(model, optimizer)
    path = os.path.join(ckpt_dir, spec_id)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=path)
    # the uninterrupted run goes on; a fresh model + optimizer loads the checkpoint and continues
    _train("fsdp2", spec_id, rank, range(half, steps), model, optimizer)
    expected = _params(model)
    fresh, fresh_opt = _train("fsdp2", spec_id, rank, range(0))
    fresh_opt.zero_grad()
    _loss(fresh, _batch(0, rank)).backward()  # creates optimizer state (overwritten by the load)
    fresh_opt.step()
    model_sd, optim_sd = get_state_dict(fresh, fresh_opt)
    state = {"model": model_sd, "optim": optim_sd}
    dcp.load(state, checkpoint_id=path)
    set_state_dict(fresh, fresh_opt, model_state_dict=state["model"], optim_state_dict=state["optim"])
    _train("fsdp2", spec_id, rank, range(half, steps), fresh, fresh_opt)
    got = _params(fresh)
    return {"expected": expected, "restored": got}


def _describe(error: BaseException) -> dict[str, str]:
    frames = traceback.extract_tb(error.__traceback__)
    ours = [f"{Path(f.filename).name}:{f.lineno} {f.name}: {f.line}" for f in frames if "hf_optim" in f.filename]
    return {"type": type(error).__name__, "message": str(error)[:1500], "frames": "\n".join(ours[-6:])}


def _spawn(world: int, task: dict[str, Any], tmp: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Run the workers; their results, and a line for each rank that died after saving them.

    gloo's worker threads can abort a process during interpreter finalisation, after ``destroy_process_group``
    (``terminate called without an active exception``: 1 of 12 runs here, both ranks past "destroyed"), which the
    workers now skip with ``os._exit``. Should a rank still die after it saved its results, it has finished every
    check: its results count and the report says what happened; a rank that dies earlier fails the run.
    """
    init_file = os.path.join(tmp, "init")
    task["ckpt_dir"] = os.path.join(tmp, "dcp")
    teardown: list[str] = []
    try:
        mp.spawn(_worker, args=(world, task, init_file, tmp), nprocs=world, join=True)
    except mp.ProcessExitedException as error:
        stages = []
        for r in range(world):
            path = Path(tmp, f"rank{r}.stages")
            stages.append(path.read_text(encoding="utf-8").split() if path.exists() else [])
        reached = "; ".join(f"rank {r}: {' -> '.join(seen)}" for r, seen in enumerate(stages))
        if not all("saved" in seen for seen in stages):
            raise RuntimeError(f"a distributed worker died before saving its results ({error}); {reached}") from error
        teardown.append(f"{error} after every rank saved its results ({reached})")
        print(f"note: {teardown[-1]}", file=sys.stderr)
    ranks = [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=False) for r in range(world)]
    return ranks, teardown


def main(argv: list[str]) -> int:
    task = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    world = 2
    with tempfile.TemporaryDirectory() as tmp:
        ranks, teardown = _spawn(world, task, tmp)
    report: dict[str, Any] = {}
    for spec_id in task["optimizers"]:
        single = reference(spec_id, task["steps"], world)
        for key in (f"ddp:{spec_id}", f"fsdp2:{spec_id}", f"dcp:{spec_id}"):
            entry = ranks[0][key]
            if "error" in entry:
                report[key] = {"error": entry["error"]}
                continue
            if key.startswith("dcp"):
                pairs = [(entry["params"]["expected"], entry["params"]["restored"])]
            else:
                pairs = [(single, r[key]["params"]) for r in ranks]
            diffs = [max(float((a[n] - b[n]).abs().max()) for n in a) for a, b in pairs]
            bitwise = all(all(torch.equal(a[n], b[n]) for n in a) for a, b in pairs)
            scale = max(float(t.abs().max()) for a, _ in pairs for t in a.values())
            report[key] = {
                "max_abs_diff": max(diffs),
                "max_abs_param": scale,
                "bitwise": bitwise,
                **{k: v for k, v in entry.items() if k == "state_types"},
            }
    if teardown:
        report["teardown"] = teardown
    Path(task["report"]).write_text(json.dumps(report, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
