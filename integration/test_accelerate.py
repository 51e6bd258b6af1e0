"""accelerate driving hf-optim: ``prepare(model, optimizer, dataloader, scheduler)`` with gradient accumulation.

A plain loop (the loss divided by the accumulation count, one optimizer and scheduler step every ``ACCUMULATE``
micro-batches) and the same training through ``Accelerator(gradient_accumulation_steps=ACCUMULATE)`` must give the
same losses, learning rates and weights bit for bit; so must an accelerate run saved with ``save_state`` after the
first epoch and resumed with ``load_state`` into fresh objects.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hf_optim_torch
import pytest
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

ACCUMULATE = 2
BATCH = 4
EXAMPLES = 32  # 8 micro-batches, 4 optimizer steps an epoch
EPOCHS = 2
STEPS = EPOCHS * EXAMPLES // (BATCH * ACCUMULATE)


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.LayerNorm(16), torch.nn.Tanh(), torch.nn.Linear(16, 1))


def _loader() -> torch.utils.data.DataLoader:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(EXAMPLES, 6, generator=generator)
    y = x[:, :1] * 2 - x[:, 1:2] + 0.1 * torch.randn(EXAMPLES, 1, generator=generator)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=BATCH, shuffle=False)


def _adamw(model: torch.nn.Module) -> tuple[Any, Any]:
    optimizer = hf_optim_torch.AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    return optimizer, hf_optim_torch.get_linear_schedule_with_warmup(optimizer, 2, STEPS)


def _adafactor(model: torch.nn.Module) -> tuple[Any, Any]:
    optimizer = hf_optim_torch.Adafactor(
        model.parameters(), lr=1e-2, relative_step=False, scale_parameter=False, warmup_init=False, beta1=0.9
    )
    return optimizer, hf_optim_torch.get_cosine_schedule_with_warmup(optimizer, 2, STEPS)


def _adafactor_relative_step(model: torch.nn.Module) -> tuple[Any, Any]:
    optimizer = hf_optim_torch.Adafactor(model.parameters(), lr=None, relative_step=True, warmup_init=True)
    return optimizer, hf_optim_torch.AdafactorSchedule(optimizer)


def _adam_weight_decay(model: torch.nn.Module) -> tuple[Any, Any]:
    optimizer = hf_optim_torch.AdamWeightDecay(
        model.named_parameters(), learning_rate=1e-2, weight_decay_rate=0.01, exclude_from_weight_decay=["bias"]
    )
    return optimizer, hf_optim_torch.get_polynomial_decay_schedule_with_warmup(optimizer, 2, STEPS, power=2.0)


BUILDERS: dict[str, Callable[[torch.nn.Module], tuple[Any, Any]]] = {
    "AdamW+linear": _adamw,
    "Adafactor+cosine": _adafactor,
    "Adafactor relative step+AdafactorSchedule": _adafactor_relative_step,
    "AdamWeightDecay+polynomial": _adam_weight_decay,
}


@dataclass
class Trace:
    losses: list[float]
    lrs: list[float]
    weights: list[torch.Tensor]


def _lr(optimizer: Any) -> float:
    return float(optimizer.param_groups[0]["lr"])


def _plain(build: Callable[[torch.nn.Module], tuple[Any, Any]]) -> Trace:
    model = _model()
    optimizer, scheduler = build(model)
    trace = Trace([], [], [])
    for _ in range(EPOCHS):
        for i, (x, y) in enumerate(_loader()):
            loss = torch.nn.functional.mse_loss(model(x), y)
            trace.losses.append(loss.item())
            (loss / ACCUMULATE).backward()
            if (i + 1) % ACCUMULATE == 0:
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
                trace.lrs.append(_lr(optimizer))
    trace.weights = [p.detach().clone() for p in model.parameters()]
    return trace


def _accelerated(
    build: Callable[[torch.nn.Module], tuple[Any, Any]],
    epochs: range,
    save: Path | None = None,
    load: Path | None = None,
) -> Trace:
    set_seed(0)
    accelerator = Accelerator(gradient_accumulation_steps=ACCUMULATE, cpu=True)
    model = _model()
    optimizer, scheduler = build(model)
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, _loader(), scheduler)
    if load is not None:
        accelerator.load_state(str(load))
    trace = Trace([], [], [])
    for _ in epochs:
        for x, y in loader:
            with accelerator.accumulate(model):
                loss = torch.nn.functional.mse_loss(model(x), y)
                trace.losses.append(loss.item())
                accelerator.backward(loss)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            if accelerator.sync_gradients:
                trace.lrs.append(_lr(optimizer))
    if save is not None:
        accelerator.save_state(str(save))
    trace.weights = [p.detach().clone() for p in accelerator.unwrap_model(model).parameters()]
    accelerator.free_memory()
    return trace


def _assert_same(a: Trace, b: Trace) -> None:
    assert a.losses == b.losses
    assert a.lrs == b.lrs
    assert len(a.weights) == len(b.weights)
    for x, y in zip(a.weights, b.weights):
        assert torch.equal(x, y)


@pytest.mark.parametrize("name", BUILDERS)
def test_accumulation_equals_plain_loop(name: str) -> None:
    plain = _plain(BUILDERS[name])
    assert len(plain.lrs) == STEPS and len(set(plain.lrs)) > 1, "the schedule moves the lr"
    assert not torch.equal(plain.weights[0], _model()[0].weight)
    _assert_same(_accelerated(BUILDERS[name], range(EPOCHS)), plain)


@pytest.mark.parametrize("name", BUILDERS)
def test_save_state_load_state_resumes_bit_for_bit(name: str, tmp_path: Path) -> None:
    full = _accelerated(BUILDERS[name], range(EPOCHS))
    first = _accelerated(BUILDERS[name], range(1), save=tmp_path / "state")
    second = _accelerated(BUILDERS[name], range(1, EPOCHS), load=tmp_path / "state")
    assert first.losses + second.losses == full.losses
    assert first.lrs + second.lrs == full.lrs
    for x, y in zip(second.weights, full.weights):
        assert torch.equal(x, y)
