"""The main job: one small model trained with PyTorch and with Keras 3, side by side.

The same MLP, the same initial weights (drawn once with NumPy), the same synthetic data and the same
batches go through ``hf_optim_torch`` and ``hf_optim_tf``:

1. AdamW (transformers' numerics) with linear warmup + cosine decay (``get_cosine_schedule_with_warmup``);
2. Adafactor with an external learning rate under ``get_linear_schedule_with_warmup``.

It prints a table per run (step, lr torch, lr keras, loss torch, loss keras), writes ``out/demo.png``
with the learning-rate and loss curves of both frameworks, and reports the largest gap between the
two loss curves. Nothing is downloaded. Run it with ``python3 -m nox -s demo`` (or ``python demo/run.py``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # keep TensorFlow's start-up banner out of the table
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import itertools

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZES = (32, 64, 64, 8)  # input, hidden, hidden, classes
SAMPLES, BATCH, SEED = 1024, 64, 0


# --------------------------------------------------------------------------- shared data and weights


def make_data(seed: int = SEED) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic classification task: labels from a random 'teacher' network, with label noise."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((SAMPLES, SIZES[0])).astype(np.float32)
    teacher = rng.standard_normal((SIZES[0], SIZES[-1])).astype(np.float32)
    logits = np.tanh(x @ teacher) * 3.0 + 0.5 * rng.standard_normal((SAMPLES, SIZES[-1]))
    return x, logits.argmax(axis=1).astype(np.int64)


def make_weights(seed: int = SEED + 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """Glorot-uniform kernels (stored [in, out], as Keras does) and small random biases."""
    rng = np.random.default_rng(seed)
    layers = []
    for fan_in, fan_out in itertools.pairwise(SIZES):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        kernel = rng.uniform(-limit, limit, (fan_in, fan_out)).astype(np.float32)
        bias = rng.uniform(-0.1, 0.1, (fan_out,)).astype(np.float32)
        layers.append((kernel, bias))
    return layers


def batches(steps: int) -> list[np.ndarray]:
    """The index of every batch, in a fixed shuffled order (the same for both frameworks)."""
    rng = np.random.default_rng(SEED + 2)
    order: list[np.ndarray] = []
    while len(order) < steps:
        perm = rng.permutation(SAMPLES)
        order += [perm[i : i + BATCH] for i in range(0, SAMPLES, BATCH)]
    return order[:steps]


# --------------------------------------------------------------------------- runs


@dataclass
class Run:
    """One optimizer setup, trained in both frameworks."""

    name: str
    title: str
    torch_setup: Callable[..., tuple[object, object]]
    keras_setup: Callable[..., object]
    relative_step: bool = False
    """Adafactor's internal lr: read back after each step (torch AdafactorSchedule, Keras closed form)."""
    lr: dict[str, list[float]] = field(default_factory=dict)
    loss: dict[str, list[float]] = field(default_factory=dict)


def adamw_runs(steps: int) -> list[Run]:
    import hf_optim_tf
    import hf_optim_torch

    warmup = max(1, steps // 10)
    peak = 3e-3

    def torch_adamw(params):
        optimizer = hf_optim_torch.AdamW(params, lr=peak, weight_decay=0.01)
        return optimizer, hf_optim_torch.get_cosine_schedule_with_warmup(optimizer, warmup, steps)

    def keras_adamw():
        schedule = hf_optim_tf.get_cosine_schedule_with_warmup(peak, warmup, steps)
        return hf_optim_tf.AdamW(learning_rate=schedule, weight_decay=0.01)

    def torch_adafactor(params):
        # transformers' default Adafactor: relative step sizes, no external lr; AdafactorSchedule reports the lr
        optimizer = hf_optim_torch.Adafactor(params, lr=None, relative_step=True, scale_parameter=True)
        return optimizer, hf_optim_torch.AdafactorSchedule(optimizer)

    def keras_adafactor():
        return hf_optim_tf.Adafactor(learning_rate=None, relative_step=True, scale_parameter=True)

    return [
        Run("adamw", f"AdamW(lr={peak}, weight_decay=0.01) + cosine, warmup {warmup}", torch_adamw, keras_adamw),
        Run(
            "adafactor",
            "Adafactor(lr=None, relative_step=True, scale_parameter=True): its own relative step size",
            torch_adafactor,
            keras_adafactor,
            relative_step=True,
        ),
    ]


def train_torch(run: Run, data, weights, order, progress) -> None:
    import torch

    torch.manual_seed(0)
    layers = []
    for kernel, bias in weights:
        linear = torch.nn.Linear(*kernel.shape)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(kernel.T.copy()))
            linear.bias.copy_(torch.from_numpy(bias))
        layers.append(linear)
    model = torch.nn.Sequential(layers[0], torch.nn.Tanh(), layers[1], torch.nn.Tanh(), layers[2])
    optimizer, scheduler = run.torch_setup(model.parameters())
    x_all, y_all = torch.from_numpy(data[0]), torch.from_numpy(data[1])
    lrs, losses = [], []
    for index in order:
        idx = torch.from_numpy(index)
        if not run.relative_step:
            lrs.append(float(optimizer.param_groups[0]["lr"]))
        loss = torch.nn.functional.cross_entropy(model(x_all[idx]), y_all[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()
        if run.relative_step:  # the lr Adafactor used for its first parameter in this step
            lrs.append(float(scheduler.get_lr()[0]))
        losses.append(float(loss.detach()))
        progress.update(1)
    run.lr["torch"], run.loss["torch"] = lrs, losses


def train_keras(run: Run, data, weights, order, progress) -> None:
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZES[0],))
    hidden = inputs
    dense = []
    for i, size in enumerate(SIZES[1:]):
        layer = keras.layers.Dense(size, activation="tanh" if i < len(SIZES) - 2 else None)
        hidden = layer(hidden)
        dense.append(layer)
    model = keras.Model(inputs, hidden)
    for layer, (kernel, bias) in zip(dense, weights):
        layer.set_weights([kernel, bias])
    optimizer = run.keras_setup()
    variables = model.trainable_variables
    optimizer.build(variables)

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            logits = model(x, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
        lr = optimizer.learning_rate
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss, lr

    import hf_optim_tf

    lrs, losses = [], []
    for step, index in enumerate(order):
        if run.relative_step:  # Adafactor's lr for the first kernel: a closed form of its RMS and step
            rms = float(np.sqrt(np.mean(np.square(variables[0].numpy().astype(np.float64)))))
            relative = hf_optim_tf.get_adafactor_relative_step_schedule(rms, scale_parameter=True, relative_step=True)
        loss, lr = train_step(tf.constant(data[0][index]), tf.constant(data[1][index]))
        lrs.append(float(relative(step + 1)) if run.relative_step else float(lr))
        losses.append(float(loss))
        progress.update(1)
    run.lr["keras"], run.loss["keras"] = lrs, losses


# --------------------------------------------------------------------------- report


def table(run: Run, every: int) -> str:
    head = f"{'step':>5}  {'lr torch':>11}  {'lr keras':>11}  {'loss torch':>11}  {'loss keras':>11}  {'|gap|':>9}"
    lines = [run.title, head, "-" * len(head)]
    steps = len(run.loss["torch"])
    shown = sorted({*range(0, steps, every), steps - 1})
    for s in shown:
        lt, lk = run.loss["torch"][s], run.loss["keras"][s]
        lines.append(
            f"{s:>5}  {run.lr['torch'][s]:>11.4e}  {run.lr['keras'][s]:>11.4e}  {lt:>11.6f}  {lk:>11.6f}  {abs(lt - lk):>9.2e}"
        )
    return "\n".join(lines)


def gaps(run: Run) -> tuple[float, int, float, float]:
    """(max |loss gap|, its step, max relative loss gap, max relative lr gap)."""
    torch_loss, keras_loss = np.array(run.loss["torch"]), np.array(run.loss["keras"])
    diff = np.abs(torch_loss - keras_loss)
    step = int(diff.argmax())
    rel = float((diff / np.maximum(np.abs(torch_loss), 1e-12)).max())
    torch_lr, keras_lr = np.array(run.lr["torch"]), np.array(run.lr["keras"])
    lr_rel = float((np.abs(torch_lr - keras_lr) / np.maximum(np.abs(torch_lr), 1e-30)).max())
    return float(diff.max()), step, rel, lr_rel


def figure(runs: list[Run], path: Path) -> None:
    from hf_optim_spec._plot import Panel, Series, render

    panels = []
    for run in runs:
        xs = list(range(len(run.loss["torch"])))
        panels.append(
            Panel(
                [Series("torch", xs, run.lr["torch"]), Series("keras", xs, run.lr["keras"], "--")],
                title=f"{run.name}: learning rate",
                ylabel="lr",
            )
        )
        panels.append(
            Panel(
                [Series("torch", xs, run.loss["torch"]), Series("keras", xs, run.loss["keras"], "--")],
                title=f"{run.name}: training loss",
                ylabel="cross-entropy",
            )
        )
    render(
        panels,
        path,
        columns=2,
        width=9.0,
        panel_height=2.8,
        dpi=100,
        title="hf-optim demo: the same model, weights and batches in PyTorch and Keras 3",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150, help="training steps per run (default 150)")
    parser.add_argument("--every", type=int, default=10, help="table row every N steps (default 10)")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "demo.png", help="figure path")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    from tqdm import tqdm

    print("loading torch and keras ...", flush=True)
    import keras  # noqa: F401
    import tensorflow as tf
    import torch

    # The model is tiny: one thread per framework is fastest and keeps the two runs from competing.
    torch.set_num_threads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    data, weights, order = make_data(), make_weights(), batches(args.steps)
    runs = adamw_runs(args.steps)
    with tqdm(total=2 * len(runs) * args.steps, desc="training", unit="step", file=sys.stdout) as progress:
        for run in runs:
            progress.set_postfix_str(f"{run.name} torch")
            train_torch(run, data, weights, order, progress)
            progress.set_postfix_str(f"{run.name} keras")
            train_keras(run, data, weights, order, progress)

    print()
    for run in runs:
        print(table(run, args.every))
        print()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    figure(runs, args.out)
    print(
        f"model: MLP {' -> '.join(map(str, SIZES))} (tanh), {SAMPLES} synthetic samples, batch {BATCH}, "
        f"{args.steps} steps per run, float32"
    )
    for run in runs:
        gap, step, rel, lr_rel = gaps(run)
        first, last = run.loss["torch"][0], run.loss["torch"][-1]
        print(
            f"{run.name:>10}: loss {first:.4f} -> {last:.4f}; max |loss torch - loss keras| = {gap:.3e} "
            f"(step {step}, {rel:.2e} relative); max relative lr gap = {lr_rel:.2e}"
        )
    print(f"wrote {args.out} in {time.perf_counter() - started:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
