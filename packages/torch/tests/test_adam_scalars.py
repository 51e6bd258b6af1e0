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
    lr, weight_decay, eps = torch_kernel_scalars(
        torch.device("cpu"),
        step_size=step_size,
        decay=decay,
        decay_first=decay_first,
        beta1=0.9,
        beta2=0.999,
        eps=1e-6,
        t=3.0,
    )
    kernel = p * (1.0 - lr * weight_decay) - lr * u
    wanted = p * (1.0 - decay) - step_size * u if decay_first else (p - step_size * u) * (1.0 - decay)
    assert kernel == pytest.approx(wanted, rel=1e-15)
    assert eps == 1e-6
