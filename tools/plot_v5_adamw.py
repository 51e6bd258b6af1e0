"""transformers' AdamW numerics (hf_optim_torch.AdamW) against `optim="adamw_torch_fused"` on the same run.

The v5 Trainer's default optimizer is `torch.optim.AdamW(fused=True)`; transformers' own AdamW (`optim="adamw_hf"`,
`transformers.AdamW`) is gone. The two differ in where epsilon enters (transformers adds it to sqrt(v) before the
bias correction is folded into the step size; torch adds it after) and in when weight decay is applied (transformers
decays the updated parameter, torch the old one). This script trains one small regression model twice from the same
initial weights on the same batches, once per optimizer, the way the Trainer builds it (a decay group and a no-decay
group for biases, a linear warmup/decay schedule, Trainer's defaults: betas (0.9, 0.999), eps 1e-8), and at two
gradient scales: the loss as is, and the loss times 1e-6 (gradients near eps, as in a loss-scaled or converged run).

    python tools/plot_v5_adamw.py [-o docs/img/adamw-v5-vs-torch-fused.png]

prints the relative parameter gap between the two runs at a few steps and writes the figure.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from hf_optim_torch import AdamW, get_linear_schedule_with_warmup

STEPS = 400
LR = 1e-3
WEIGHT_DECAY = 0.01
SCALES = (1.0, 1e-6)
ROOT = Path(__file__).resolve().parent.parent


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.Tanh(), torch.nn.Linear(64, 1))


def _groups(model: torch.nn.Module) -> list[dict]:
    """The Trainer's two groups: weights decay, biases do not."""
    named = list(model.named_parameters())
    return [
        {"params": [p for n, p in named if not n.endswith("bias")], "weight_decay": WEIGHT_DECAY},
        {"params": [p for n, p in named if n.endswith("bias")], "weight_decay": 0.0},
    ]


def _train(make_optimizer, scale: float) -> tuple[list[float], list[torch.Tensor]]:
    """Loss (unscaled) and a flat copy of the parameters after every step."""
    model = _model()
    optimizer = make_optimizer(_groups(model))
    schedule = get_linear_schedule_with_warmup(optimizer, num_warmup_steps=40, num_training_steps=STEPS)
    data = torch.Generator().manual_seed(1)
    target = torch.nn.Linear(16, 1)
    torch.nn.init.normal_(target.weight, generator=data)
    losses, params = [], []
    for _ in range(STEPS):
        x = torch.randn(32, 16, generator=data)
        with torch.no_grad():
            y = target(x) + 0.1 * torch.randn(32, 1, generator=data)
        loss = torch.nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        (loss * scale).backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        params.append(torch.cat([p.detach().flatten() for p in model.parameters()]).clone())
    return losses, params


def _optimizers() -> dict[str, object]:
    return {
        "hf_optim_torch.AdamW (transformers' numerics)": lambda groups: AdamW(groups, lr=LR, eps=1e-8),
        'torch.optim.AdamW(fused=True) (optim="adamw_torch_fused")': lambda groups: torch.optim.AdamW(
            groups, lr=LR, eps=1e-8, fused=True
        ),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--output", type=Path, default=ROOT / "docs" / "img" / "adamw-v5-vs-torch-fused.png")
    args = parser.parse_args()
    torch.set_num_threads(1)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for scale, ax in zip(SCALES, axes[:2]):
        runs = {name: _train(make, scale) for name, make in _optimizers().items()}
        (hf_losses, hf_params), (torch_losses, torch_params) = runs.values()
        for (name, (losses, _)), style in zip(runs.items(), ("-", "--")):
            ax.plot(losses, style, label=name)
        ax.set_yscale("log")
        ax.set_title(f"training loss, gradients x{scale:g}")
        ax.set_xlabel("step")
        gap = [float((a - b).norm() / b.norm()) for a, b in zip(hf_params, torch_params)]
        axes[2].semilogy(gap, label=f"gradients x{scale:g}")
        print(
            f"gradients x{scale:g}: relative parameter gap "
            + ", ".join(f"step {s}: {gap[s - 1]:.2e}" for s in (1, 10, 100, STEPS))
            + f"; final loss {hf_losses[-1]:.4f} (transformers) vs {torch_losses[-1]:.4f} (torch fused)"
        )
    axes[0].legend(fontsize=8)
    axes[2].set_title("||theta_transformers - theta_torch_fused|| / ||theta||")
    axes[2].set_xlabel("step")
    axes[2].legend()
    fig.tight_layout()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.output, dpi=110)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
