"""torch.compile of hf-optim's optimizer step with a tensor lr: one graph for a whole schedule, no recompile.

The first step runs eagerly (it creates the optimizer state); every later step runs the compiled function while an
hf-optim scheduler changes the lr tensor in place each step. Measured with dynamo's counters: the number of graphs
dynamo built, the recompiles, the graph breaks. The trajectories are compared with the eager run.

Two ways of calling the step are measured:

* ``fullgraph=True`` on the optimizer class's ``step``: one graph, no break, no recompile. (A scheduler replaces
  ``optimizer.step`` on the instance by a counting wrapper defined in ``torch/optim/lr_scheduler.py``, a file dynamo
  refuses to trace, so ``fullgraph=True`` on ``optimizer.step`` itself fails for every torch optimizer, torch's own
  included; the class's function is the same step without that wrapper.)
* ``optimizer.step()`` as torch's compiled-optimizer tutorial writes it (``fullgraph=False``): exactly one graph break,
  at that wrapper, and the step itself still one graph.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import hf_optim_torch
import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

STEPS = 12

OPTIMIZERS: dict[str, Callable[[torch.nn.Module, torch.Tensor], Any]] = {
    "AdamW": lambda m, lr: hf_optim_torch.AdamW(m.parameters(), lr=lr, weight_decay=0.01),
    "Adafactor": lambda m, lr: hf_optim_torch.Adafactor(
        m.parameters(), lr=lr, relative_step=False, scale_parameter=False, warmup_init=False, beta1=0.9
    ),
    "AdamWeightDecay": lambda m, lr: hf_optim_torch.AdamWeightDecay(
        m.named_parameters(), learning_rate=lr, weight_decay_rate=0.01, exclude_from_weight_decay=["bias"]
    ),
}


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Tanh(), torch.nn.Linear(16, 4))


def _train(name: str, how: str, backend: str = "eager") -> tuple[list[float], list[torch.Tensor]]:
    """Train STEPS steps under a cosine schedule; ``how``: "eager", "class step" (fullgraph) or "instance step"."""
    model = _model()
    optimizer = OPTIMIZERS[name](model, torch.tensor(0.01))
    scheduler = hf_optim_torch.get_cosine_schedule_with_warmup(optimizer, 3, STEPS)
    if how == "class step":
        step = type(optimizer).step
        compiled = torch.compile(lambda: step(optimizer), fullgraph=True, backend=backend)
    elif how == "instance step":

        def tutorial_step() -> None:
            optimizer.step()

        compiled = torch.compile(tutorial_step, backend=backend)
    x = torch.randn(32, 8, generator=torch.Generator().manual_seed(1))
    lrs = []
    for i in range(STEPS):
        model(x).pow(2).mean().backward()
        if i == 0 or how == "eager":
            optimizer.step()  # creates the state (and tells the scheduler a step happened)
        else:
            compiled()
        optimizer.zero_grad()
        scheduler.step()
        lrs.append(float(optimizer.param_groups[0]["lr"]))
    return lrs, [p.detach().clone() for p in model.parameters()]


def _graph_breaks() -> dict[str, int]:
    return dict(counters["graph_break"])


@pytest.fixture(autouse=True)
def _fresh_dynamo() -> None:
    torch._dynamo.reset()
    counters.clear()


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_fullgraph_step_is_one_graph_across_the_schedule(name: str) -> None:
    with torch._dynamo.config.patch(error_on_recompile=True):
        lrs, weights = _train(name, "class step")
    assert counters["stats"]["unique_graphs"] == 1
    assert _graph_breaks() == {}
    assert all(a != b for a, b in itertools.pairwise(lrs[2:])), "the lr changes every step"
    eager_lrs, eager_weights = _train(name, "eager")
    assert lrs == eager_lrs
    for a, b in zip(weights, eager_weights):
        assert torch.equal(a, b)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_tutorial_style_step_breaks_only_at_the_scheduler_wrapper(name: str) -> None:
    with torch._dynamo.config.patch(error_on_recompile=True):
        lrs, weights = _train(name, "instance step")
    assert counters["stats"]["unique_graphs"] == 1
    breaks = _graph_breaks()
    assert sum(breaks.values()) == 1, breaks
    assert "lr_scheduler.py" in next(iter(breaks)), breaks
    eager_lrs, eager_weights = _train(name, "eager")
    assert lrs == eager_lrs
    for a, b in zip(weights, eager_weights):
        assert torch.equal(a, b)


def test_inductor_fullgraph_adamw_matches_eager() -> None:
    """The real compiler (inductor, C++ on CPU): one graph, no recompile, the eager trajectory up to op fusion."""
    with torch._dynamo.config.patch(error_on_recompile=True):
        lrs, weights = _train("AdamW", "class step", backend="inductor")
    assert counters["stats"]["unique_graphs"] == 1
    eager_lrs, eager_weights = _train("AdamW", "eager")
    assert lrs == eager_lrs
    for a, b in zip(weights, eager_weights):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
