"""torch.compile: a training step whose lr changes every step compiles once (after the state-creating step)."""

from __future__ import annotations

import itertools
from typing import Any

import hf_optim_torch
import pytest
import torch
import torch._dynamo

# torch's own dynamo tracing touches a deprecated torch.jit API; that is not ours to fix
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")

_BUILDERS = {
    "AdamW": lambda m, lr: hf_optim_torch.AdamW(m.parameters(), lr=lr, weight_decay=0.01),
    "Adafactor": lambda m, lr: hf_optim_torch.Adafactor(
        m.parameters(), lr=lr, relative_step=False, scale_parameter=False, beta1=0.9
    ),
    "AdamWeightDecay": lambda m, lr: hf_optim_torch.AdamWeightDecay(
        m.named_parameters(), learning_rate=lr, weight_decay_rate=0.01, exclude_from_weight_decay=["bias"]
    ),
}


def _train(name: str, backend: str | None, steps: int = 7) -> tuple[list[float], list[torch.Tensor]]:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    optimizer = _BUILDERS[name](model, torch.tensor(0.01))
    scheduler = hf_optim_torch.get_linear_schedule_with_warmup(optimizer, 2, 10)
    x = torch.randn(8, 4)

    def step() -> None:
        optimizer.step()

    compiled: Any = torch.compile(step, backend=backend) if backend else step
    lrs = []
    for i in range(steps):
        model(x).pow(2).sum().backward()
        if i == 2 and backend:  # steps 0-1 create the state; from here on nothing may recompile
            guard = torch._dynamo.config.patch(error_on_recompile=True)
            guard.__enter__()
        compiled()
        optimizer.zero_grad()
        scheduler.step()
        lrs.append(float(optimizer.param_groups[0]["lr"]))
    if backend:
        guard.__exit__(None, None, None)
    return lrs, [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("name", list(_BUILDERS))
def test_compiled_step_does_not_recompile_when_lr_changes(name: str) -> None:
    torch._dynamo.reset()
    lrs, params = _train(name, "eager")
    assert all(a != b for a, b in itertools.pairwise(lrs)), "the lr changes every step"
    eager_lrs, eager_params = _train(name, None)
    assert lrs == eager_lrs
    for a, b in zip(params, eager_params):
        assert torch.equal(a, b)


@pytest.mark.slow
def test_inductor_compiled_adamw_matches_eager() -> None:
    torch._dynamo.reset()
    _, params = _train("AdamW", "inductor")
    _, eager_params = _train("AdamW", None)
    for a, b in zip(params, eager_params):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
