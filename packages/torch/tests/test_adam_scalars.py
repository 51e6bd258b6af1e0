"""The Adam scalar math that every AdamW / AdamWeightDecay path shares (hf_optim_torch._adam_scalars)."""

from __future__ import annotations

import math

import pytest
import torch
from hf_optim_torch._adam_scalars import (
    adam_weight_decay_factors,
    adamw_decay,
    adamw_step_size,
    bias_corrected_step_size,
    torch_kernel_scalars,
)


@pytest.mark.parametrize("t", [1, 2, 7, 1000])
def test_the_step_size_is_the_same_on_floats_and_on_float64_tensors(t: int) -> None:
    on_floats = bias_corrected_step_size(0.01, 0.9, 0.999, float(t))
    on_tensor = bias_corrected_step_size(0.01, 0.9, 0.999, torch.tensor(float(t), dtype=torch.float64))
    assert isinstance(on_floats, float)
    assert isinstance(on_tensor, torch.Tensor)
    assert on_floats == on_tensor.item()
    assert on_floats == 0.01 * math.sqrt(1.0 - 0.999**t) / (1.0 - 0.9**t)


def test_adamw_step_size_without_bias_correction_is_the_lr() -> None:
    lr = torch.tensor(0.5)
    assert adamw_step_size(lr, 0.9, 0.999, torch.tensor(3.0), correct_bias=False) is lr
    stepped = adamw_step_size(0.5, 0.9, 0.999, torch.tensor([1.0, 2.0]), correct_bias=True)
    assert isinstance(stepped, torch.Tensor)
    assert stepped.dtype == torch.float64
    assert stepped.shape == (2,)


@pytest.mark.parametrize(("weight_decay", "expected"), [(0.1, 0.1 * 0.5), (0.0, None), (-0.1, None)])
def test_adamw_decays_for_a_positive_rate_only(weight_decay: float, expected: float | None) -> None:
    assert adamw_decay(0.5, weight_decay) == expected


def test_adam_weight_decay_factors_are_cast_to_the_parameter_dtype_first() -> None:
    like = torch.zeros(2, dtype=torch.bfloat16)
    factors = adam_weight_decay_factors(1e-3, 0.9, 0.999, torch.tensor(0.0), like)
    assert all(f.dtype == torch.bfloat16 for f in factors)
    # bfloat16(0.999) rounds to 1: TF's cast leaves no second-moment weight
    assert factors.one_minus_beta_2.item() == 0.0


@pytest.mark.parametrize("decay_first", [False, True])
def test_torch_kernel_scalars_reproduce_the_update_with_its_decay(decay_first: bool) -> None:
    """The kernel's p (1 - lr' wd') - lr' u equals the optimizer's update in either decay order (CPU: q = r = 1)."""
    step_size, decay, p, u = 0.003, 0.02, 1.7, 0.4
    kernel = torch_kernel_scalars(
        torch.device("cpu"),
        step_size=step_size,
        decay=decay,
        decay_first=decay_first,
        beta1=0.9,
        beta2=0.999,
        eps=1e-6,
        t=3.0,
    )
    lr, weight_decay = kernel["lr"], kernel["weight_decay"]
    updated = p * (1.0 - lr * weight_decay) - lr * u
    wanted = p * (1.0 - decay) - step_size * u if decay_first else (p - step_size * u) * (1.0 - decay)
    assert updated == pytest.approx(wanted, rel=1e-15)
    assert (kernel["eps"], kernel["beta1"], kernel["beta2"]) == (1e-6, 0.9, 0.999)


def _loop_run(name: str, lr: float | torch.Tensor, dtype: torch.dtype) -> list[torch.Tensor]:
    """Twelve for-loop steps of ``name`` on three parameters in one group (two of ``dtype``, one float32), one of
    them without a gradient at every third step (AdamW's own step count then falls behind); the parameters and
    every state tensor after them."""
    import hf_optim_torch

    torch.manual_seed(0)
    values = [torch.randn(7, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64), torch.randn(40)]
    params = [torch.nn.Parameter(v.to(dtype if i < 2 else torch.float32)) for i, v in enumerate(values)]
    if name == "AdamW":
        optimizer = hf_optim_torch.AdamW(params, lr=lr, weight_decay=0.1, fused=False)
    else:
        optimizer = hf_optim_torch.AdamWeightDecay(params, learning_rate=lr, weight_decay_rate=0.1, fused=False)
    for k in range(12):
        for j, p in enumerate(params):
            p.grad = None if (k % 3 == 1 and j == 1) else torch.randn_like(p)
        optimizer.step()
    return [
        t.detach().clone() for p in params for t in (p, *optimizer.state[p].values()) if isinstance(t, torch.Tensor)
    ]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name", ["AdamW", "AdamWeightDecay"])
def test_the_for_loops_scalars_made_once_per_step_value_are_those_made_per_parameter(
    name: str, dtype: torch.dtype, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With a float lr the for-loop paths make their scalars from the steps' host values, once per step value (and
    dtype); with a tensor lr (a float64 one: the same numbers) once per parameter from its step tensor. The results
    are the same bits, with step counts that differ within the group and two dtypes in it."""
    from hf_optim_torch import _adam_weight_decay, _adamw

    module, function = (
        (_adamw, "adamw_step_size") if name == "AdamW" else (_adam_weight_decay, "adam_weight_decay_factors")
    )
    calls: list[object] = []
    made = getattr(module, function)
    monkeypatch.setattr(module, function, lambda *args, **kwargs: calls.append(args) or made(*args, **kwargs))
    on_host = _loop_run(name, 0.01, dtype)
    host_calls = len(calls)
    per_parameter = _loop_run(name, torch.tensor(0.01, dtype=torch.float64), dtype)
    assert len(calls) - host_calls == 12 * 3 - 4  # every parameter with a gradient at every step
    # once per step value (and dtype): AdamW's counts split at k = 2 (one parameter a step behind, two behind from
    # k = 5 on): one value at the steps k = 0, 1, 4, 7, 10, two at the other seven; AdamWeightDecay's count is
    # optimizer-wide, its factors are made per dtype: one or two a step
    assert host_calls == (5 + 2 * 7 if name == "AdamW" else 12 * (1 if dtype == torch.float32 else 2))
    assert len(on_host) == len(per_parameter)
    for a, b in zip(on_host, per_parameter):
        assert a.dtype == b.dtype and torch.equal(a, b)
