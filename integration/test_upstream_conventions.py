"""hf-optim called the way transformers' own optimization tests call transformers, compared with transformers 5.25.

Those tests read ``scheduler.get_lr()`` before each ``step()`` (outside ``step``, where torch warns and recomputes),
build every scheduler on one shared optimizer whose lr the previous scheduler left changed, round-trip a scheduler's
``state_dict`` through ``torch.save``/``torch.load`` halfway, with its lambdas wrapped in a callable object (so
``LambdaLR.state_dict`` keeps them and the pickling is exercised), and drive the optimizers on a bare tensor whose
gradient they zero by hand. The learning rates must be transformers' bit for bit, and the reload must not change
them; Adafactor must follow transformers' trajectory bit for bit.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import hf_optim_torch
import pytest
import torch
import transformers

# what torch says when get_lr() is read outside step(), and when a scheduler steps an optimizer that never stepped,
# as these tests do on purpose
pytestmark = [
    pytest.mark.filterwarnings("ignore:To get the last learning rate computed by the scheduler:UserWarning"),
    pytest.mark.filterwarnings("ignore:Detected call of `lr_scheduler.step\\(\\)` before:UserWarning"),
]

STEPS = 10
COMMON = {"num_warmup_steps": 2, "num_training_steps": 10}
#: factory name -> its arguments (transformers' test list, and the schedules added since)
FACTORIES: dict[str, dict[str, Any]] = {
    "get_constant_schedule": {},
    "get_constant_schedule_with_warmup": {"num_warmup_steps": 4},
    "get_linear_schedule_with_warmup": COMMON,
    "get_cosine_schedule_with_warmup": COMMON,
    "get_cosine_with_hard_restarts_schedule_with_warmup": {**COMMON, "num_cycles": 2},
    "get_polynomial_decay_schedule_with_warmup": {**COMMON, "power": 2.0, "lr_end": 1e-7},
    "get_inverse_sqrt_schedule": {"num_warmup_steps": 2},
    "get_cosine_with_min_lr_schedule_with_warmup": {**COMMON, "min_lr_rate": 0.1},
    "get_wsd_schedule": {"num_warmup_steps": 2, "num_decay_steps": 3, "num_training_steps": 10},
}


class CallableLambda:
    """A schedule's lambda held by an object: ``LambdaLR.state_dict`` saves objects' ``__dict__`` (functions it
    drops), so a wrapped schedule's state pickles its lambda."""

    def __init__(self, fn: Callable[[int], float]) -> None:
        self.fn = fn

    def __call__(self, step: int) -> float:
        return self.fn(step)


def _wrap(scheduler: Any) -> None:
    scheduler.lr_lambdas = [CallableLambda(fn) for fn in scheduler.lr_lambdas]


def _lrs(scheduler: Any, save_in: Path | None = None) -> list[float]:
    """get_lr() before each of STEPS steps; with ``save_in``, a torch.save/torch.load round trip after step 6."""
    lrs = []
    for step in range(STEPS):
        lrs.append(scheduler.get_lr()[0])
        scheduler.step()
        if save_in is not None and step == STEPS // 2:
            torch.save(scheduler.state_dict(), save_in / "schedule.bin")
            scheduler.load_state_dict(torch.load(save_in / "schedule.bin", weights_only=False))
    return lrs


def _shared_optimizer() -> torch.optim.Optimizer:
    return hf_optim_torch.AdamW(torch.nn.Linear(50, 50).parameters(), lr=10.0)


@pytest.fixture(scope="module")
def optimizers() -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """One optimizer for all of hf-optim's schedulers, one for all of transformers' (as the upstream test shares)."""
    return _shared_optimizer(), _shared_optimizer()


@pytest.mark.parametrize("factory", list(FACTORIES))
def test_schedule_lrs_and_reload_match_transformers(
    factory: str, optimizers: tuple[torch.optim.Optimizer, torch.optim.Optimizer], tmp_path: Path
) -> None:
    ours_opt, theirs_opt = optimizers
    kwargs = FACTORIES[factory]
    ours = getattr(hf_optim_torch, factory)(ours_opt, **kwargs)
    theirs = getattr(transformers.optimization, factory)(theirs_opt, **kwargs)
    assert len([ours.get_lr()[0]]) == 1
    expected = _lrs(theirs)
    assert _lrs(ours) == expected
    assert len(set(expected)) > 1 or factory == "get_constant_schedule"

    ours = getattr(hf_optim_torch, factory)(ours_opt, **kwargs)
    _wrap(ours)
    assert _lrs(ours, save_in=tmp_path) == expected


def _fit(optimizer: torch.optim.Optimizer, w: torch.Tensor, steps: int) -> None:
    """transformers' optimizer test loop: MSE to a target, the bare tensor's gradient zeroed by hand."""
    target = torch.tensor([0.4, 0.2, -0.5])
    for _ in range(steps):
        torch.nn.functional.mse_loss(w, target).backward()
        optimizer.step()
        w.grad.detach_()
        w.grad.zero_()


def test_adamw_on_a_bare_tensor_reaches_the_target() -> None:
    w = torch.tensor([0.1, -0.2, -0.1], requires_grad=True)
    _fit(hf_optim_torch.AdamW(params=[w], lr=2e-1, weight_decay=0.0), w, 100)
    torch.testing.assert_close(w.detach(), torch.tensor([0.4, 0.2, -0.5]), atol=1e-2, rtol=0)


def test_adafactor_on_a_bare_tensor_follows_transformers() -> None:
    kwargs = {
        "lr": 1e-2,
        "eps": (1e-30, 1e-3),
        "clip_threshold": 1.0,
        "decay_rate": -0.8,
        "beta1": None,
        "weight_decay": 0.0,
        "relative_step": False,
        "scale_parameter": False,
        "warmup_init": False,
    }
    ours = torch.tensor([0.1, -0.2, -0.1], requires_grad=True)
    theirs = torch.tensor([0.1, -0.2, -0.1], requires_grad=True)
    _fit(hf_optim_torch.Adafactor(params=[ours], **kwargs), ours, 1000)
    _fit(transformers.Adafactor(params=[theirs], **kwargs), theirs, 1000)
    assert torch.equal(ours, theirs)
    torch.testing.assert_close(ours.detach(), torch.tensor([0.4, 0.2, -0.5]), atol=1e-2, rtol=0)
