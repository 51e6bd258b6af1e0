"""The fused AdamW paths against a kernel that rounds beta to float32 (torch's CUDA kernel does): the moment
ratios of ``kernel_moment_ratios`` must give transformers' update from that kernel's moments."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hf_optim_torch import _torch_fused_adam

CPU = torch.device("cpu")


@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.95, 0.98), (0.0, 0.99), (0.5, 0.9)])
@pytest.mark.parametrize("correct_bias", [True, False])
def test_moment_ratios_undo_a_kernel_that_rounds_beta(
    betas: tuple[float, float], correct_bias: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    b1, b2 = betas
    kb1, kb2 = float(np.float32(b1)), float(np.float32(b2))  # what the kernel averages with
    monkeypatch.setitem(_torch_fused_adam._KERNEL_WEIGHTS, (CPU, b1, b2), (1.0 - kb1, 1.0 - kb2))
    grads = np.random.default_rng(0).normal(size=(300, 64)) * 1e-2
    grads[:, :8] *= 1e-4  # gradients near eps, where eps dominates the denominator
    lr, eps = 1e-3, 1e-6
    m = v = mk = vk = np.zeros(64)
    worst_corrected = worst_plain = 0.0
    for t, g in enumerate(grads, start=1):
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        mk, vk = kb1 * mk + (1 - kb1) * g, kb2 * vk + (1 - kb2) * g * g
        step = lr * math.sqrt(1 - b2**t) / (1 - b1**t) if correct_bias else lr
        reference = step * m / (np.sqrt(v) + eps)
        q, r = _torch_fused_adam.kernel_moment_ratios(CPU, b1, b2, float(t))
        corrected = step * math.sqrt(r) / q * mk / (np.sqrt(vk) + eps * math.sqrt(r))
        plain = step * mk / (np.sqrt(vk) + eps)
        scale = np.abs(reference).max()
        worst_corrected = max(worst_corrected, float(np.abs(corrected - reference).max() / scale))
        worst_plain = max(worst_plain, float(np.abs(plain - reference).max() / scale))
    # the residual: the kernel's average weighs lag j by (b / beta)**j more (measured 3.2e-7 after 300 steps)
    assert worst_corrected < 1e-6, worst_corrected
    if b2 == 0.999:
        assert worst_plain > 10 * worst_corrected, (worst_plain, worst_corrected)  # what the correction removes


def test_cpu_kernel_needs_no_correction() -> None:
    for betas in [(0.9, 0.999), (0.0, 0.5), (0.95, 0.98)]:
        assert _torch_fused_adam.kernel_moment_ratios(CPU, *betas, 7.0) == (1.0, 1.0)


@pytest.mark.parametrize("name", ["AdamW", "AdamWeightDecay"])
def test_fused_step_applies_the_moment_ratios(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the kernel's weights set to a rounding kernel's, the fused path must pass step size and eps scaled by
    sqrt(r) / q and sqrt(r): one step from zero state against that formula in float64 (the CPU kernel itself
    rounds beta once, so the scaled update is what it computes)."""
    import hf_optim_torch

    b1, b2, lr, eps = 0.9, 0.999, 1e-2, 1e-6
    monkeypatch.setitem(
        _torch_fused_adam._KERNEL_WEIGHTS, (CPU, b1, b2), (1.0 - float(np.float32(b1)), 1.0 - float(np.float32(b2)))
    )
    torch.manual_seed(0)
    p0, g = torch.randn(256) * 1e-3, torch.randn(256) * 1e-3  # small p: the update's digits stay
    param = torch.nn.Parameter(p0.clone())
    param.grad = g.clone()
    if name == "AdamW":
        opt = hf_optim_torch.AdamW([param], lr=lr, betas=(b1, b2), eps=eps, fused=True)
    else:
        opt = hf_optim_torch.AdamWeightDecay([param], learning_rate=lr, beta_1=b1, beta_2=b2, epsilon=eps, fused=True)
    opt.step()
    q, r = _torch_fused_adam.kernel_moment_ratios(CPU, b1, b2, 1.0)
    assert q != 1.0 and r != 1.0
    m, v = (1 - b1) * g.double(), (1 - b2) * g.double() ** 2
    step = lr * math.sqrt(1 - b2) / (1 - b1) * math.sqrt(r) / q
    expected = p0.double() - step * m / (v.sqrt() + eps * math.sqrt(r))
    atol = 5e-9  # float32 rounding of an update of ~1e-2 is ~1e-9
    torch.testing.assert_close(param.detach().double(), expected, rtol=0.0, atol=atol)
    unscaled = p0.double() - lr * math.sqrt(1 - b2) / (1 - b1) * m / (v.sqrt() + eps)
    assert (expected - unscaled).abs().max() > 4 * atol  # the scaling (~6.5e-8 here) is visible at this tolerance
