"""DDP (gloo, 2 CPU processes): params after N steps equal a single process stepping on the averaged gradients."""

from __future__ import annotations

from pathlib import Path

import hf_optim_torch
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

STEPS = 4
WORLD = 2


def _build(name: str, model: torch.nn.Module) -> torch.optim.Optimizer:
    if name == "AdamW":
        return hf_optim_torch.AdamW(model.parameters(), lr=0.05, weight_decay=0.1)
    if name == "Adafactor":
        return hf_optim_torch.Adafactor(model.parameters(), beta1=0.9, weight_decay=0.01)
    return hf_optim_torch.AdamWeightDecay(
        model.named_parameters(), learning_rate=0.05, weight_decay_rate=0.1, exclude_from_weight_decay=["bias"]
    )


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2)).double()


def _data() -> list[list[tuple[torch.Tensor, torch.Tensor]]]:
    gen = torch.Generator().manual_seed(1)
    return [
        [
            (
                torch.randn(5, 4, generator=gen, dtype=torch.float64),
                torch.randn(5, 2, generator=gen, dtype=torch.float64),
            )
            for _ in range(WORLD)
        ]
        for _ in range(STEPS)
    ]


def _loss(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    x, y = batch
    return ((model(x) - y) ** 2).mean()


def _worker(rank: int, out_dir: str, names: list[str]) -> None:
    # A rendezvous file in the test's own directory: no TCP port to race for with concurrent runs.
    init_method = f"file://{Path(out_dir) / 'rendezvous'}"
    dist.init_process_group("gloo", init_method=init_method, rank=rank, world_size=WORLD)
    try:
        data = _data()
        for name in names:
            model = torch.nn.parallel.DistributedDataParallel(_model())
            optimizer = _build(name, model.module)
            for step in range(STEPS):
                optimizer.zero_grad()
                _loss(model, data[step][rank]).backward()
                optimizer.step()
            if rank == 0:
                torch.save([p.detach() for p in model.module.parameters()], Path(out_dir) / f"{name}.pt")
        dist.barrier()  # nobody tears gloo down while the other rank still uses it
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="needs torch.distributed gloo")
def test_ddp_matches_single_process_on_averaged_gradients(tmp_path: Path) -> None:
    names = ["AdamW", "Adafactor", "AdamWeightDecay"]
    mp.spawn(_worker, args=(str(tmp_path), names), nprocs=WORLD, join=True)
    data = _data()
    for name in names:
        model = _model()
        optimizer = _build(name, model)
        for step in range(STEPS):
            grads = []
            for rank in range(WORLD):
                model.zero_grad()
                _loss(model, data[step][rank]).backward()
                grads.append([p.grad.clone() for p in model.parameters()])
            for p, *per_rank in zip(model.parameters(), *grads):
                p.grad = sum(per_rank) / WORLD
            optimizer.step()
        distributed = torch.load(tmp_path / f"{name}.pt", weights_only=True)
        for a, b in zip(distributed, model.parameters()):
            torch.testing.assert_close(a, b.detach(), rtol=1e-12, atol=1e-14, msg=name)
