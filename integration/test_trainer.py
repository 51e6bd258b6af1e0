"""transformers' ``Trainer`` (5.23+) training a tiny random BERT with hf-optim's optimizers and schedules.

Each configuration trains 12 steps three ways: uninterrupted; stopped at step 6 (the checkpoint it writes there is
the interruption); and resumed from that checkpoint with ``resume_from_checkpoint`` by a fresh ``Trainer`` holding
a fresh optimizer and scheduler. The stopped run followed by the resumed run must reproduce the uninterrupted run
bit for bit: every loss the model computed (training and evaluation), every learning rate after every step, every
entry of the Trainer's log and every final weight. The Trainer saves the optimizer and scheduler with
``torch.save`` and loads them with ``torch.load(weights_only=True)``, so their state dicts must be plain data.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hf_optim_torch
import pytest
import torch
import transformers
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainerCallback, TrainingArguments

MAX_STEPS = 12
STOP_AT = 6  # also the save interval: the interrupted run's last checkpoint is checkpoint-6
BATCH = 4
EXAMPLES = 32  # 8 batches an epoch: the resume lands mid-epoch, the run spans two epochs
SEQ = 8
VOCAB = 64


def _tiny_bert() -> BertForSequenceClassification:
    """A random-initialised two-layer BERT classifier (no dropout: the runs differ only by what is under test)."""
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=SEQ,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=2,
    )
    return BertForSequenceClassification(config)


class _Tokens(torch.utils.data.Dataset):
    """Random token sequences labelled by whether their first token is in the lower half of the vocabulary."""

    def __init__(self, n: int, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, VOCAB, (n, SEQ), generator=generator)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        ids = self.ids[i]
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": (ids[0] < VOCAB // 2).long()}


class _RecordingTrainer(Trainer):
    """A Trainer that records, in order, every loss its model computes: (global step, training?, loss)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.losses: list[tuple[int, bool, float]] = []

    def compute_loss(self, model: Any, inputs: Any, return_outputs: bool = False, **kwargs: Any) -> Any:
        result = super().compute_loss(model, inputs, return_outputs=return_outputs, **kwargs)
        loss = result[0] if return_outputs else result
        self.losses.append((self.state.global_step, model.training, loss.detach().item()))
        return result


class _Recorder(TrainerCallback):
    """Each group's exact lr after every optimizer step; stops the run after ``stop_at`` steps when given."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.stop_at = stop_at
        self.lrs: list[tuple[int, list[float]]] = []

    def on_step_end(self, args: Any, state: Any, control: Any, optimizer: Any = None, **kwargs: Any) -> Any:
        self.lrs.append((state.global_step, [float(group["lr"]) for group in optimizer.param_groups]))
        if state.global_step == self.stop_at:
            control.should_training_stop = True  # after this step's log, evaluation and checkpoint
        return control


@dataclass
class Case:
    """One way of handing hf-optim to the Trainer."""

    #: builds ``optimizers=(optimizer, scheduler)`` from the model; None: the Trainer builds them
    optimizers: Callable[[torch.nn.Module], tuple[Any, Any]] | None = None
    #: ``optimizer_cls_and_kwargs``; the Trainer then builds its own (transformers) scheduler
    cls_and_kwargs: tuple[type, dict[str, Any]] | None = None
    #: TrainingArguments beyond the common ones
    args: dict[str, Any] = field(default_factory=dict)
    #: whether the run evaluates (and so feeds a metric-driven schedule) every step
    evaluate: bool = False


def _linear(model: torch.nn.Module) -> tuple[Any, Any]:
    optimizer = hf_optim_torch.AdamW(model.parameters(), lr=5e-3, weight_decay=0.01)
    return optimizer, hf_optim_torch.get_scheduler("linear", optimizer, 2, MAX_STEPS)


def _adafactor_relative_step(model: torch.nn.Module) -> tuple[Any, Any]:
    # transformers' documented pairing: the optimizer computes its own lr, AdafactorSchedule reports it
    optimizer = hf_optim_torch.Adafactor(
        model.parameters(), lr=None, relative_step=True, warmup_init=True, scale_parameter=True
    )
    return optimizer, hf_optim_torch.AdafactorSchedule(optimizer)


GREEDY = {"patience": 1, "factor": 0.5, "min_lr": 1e-5, "max_lr": 0.1, "cooldown": 1, "warmup": 1}


def _greedy(model: torch.nn.Module) -> tuple[Any, Any]:
    optimizer = hf_optim_torch.AdamW(model.parameters(), lr=1e-2)
    return optimizer, hf_optim_torch.get_scheduler("greedy", optimizer, scheduler_specific_kwargs=GREEDY)


def _greedy_upstream(model: torch.nn.Module) -> tuple[Any, Any]:
    """hf-optim's AdamW under transformers' own GreedyLR: the reference the greedy case is compared to."""
    optimizer = hf_optim_torch.AdamW(model.parameters(), lr=1e-2)
    return optimizer, transformers.optimization.GreedyLR(optimizer, **GREEDY)


ADAFACTOR_FIXED = {"lr": 1e-2, "relative_step": False, "scale_parameter": False, "warmup_init": False}

CASES = {
    "AdamW+linear via optimizers": Case(optimizers=_linear),
    "AdamW via optimizer_cls_and_kwargs, Trainer's cosine": Case(
        cls_and_kwargs=(hf_optim_torch.AdamW, {"lr": 5e-3, "eps": 1e-6}),
        args={"lr_scheduler_type": "cosine", "warmup_steps": 2, "weight_decay": 0.01},
    ),
    "Adafactor fixed lr via optimizer_cls_and_kwargs": Case(
        cls_and_kwargs=(hf_optim_torch.Adafactor, ADAFACTOR_FIXED), args={"lr_scheduler_type": "constant"}
    ),
    "Adafactor relative step + AdafactorSchedule": Case(optimizers=_adafactor_relative_step),
    "AdamW + greedy fed by eval loss": Case(optimizers=_greedy, evaluate=True, args={"metric_for_best_model": "loss"}),
}


@dataclass
class Run:
    losses: list[tuple[int, bool, float]]
    lrs: list[tuple[int, list[float]]]
    log: list[dict[str, Any]]
    weights: dict[str, torch.Tensor]


def _train(case: Case, out: Path, stop_at: int | None = None, resume: Path | None = None) -> Run:
    model = _tiny_bert()
    args = TrainingArguments(
        output_dir=str(out),
        max_steps=MAX_STEPS,
        per_device_train_batch_size=BATCH,
        per_device_eval_batch_size=BATCH,
        logging_steps=1,
        save_strategy="steps",
        save_steps=STOP_AT,
        eval_strategy="steps" if case.evaluate else "no",
        eval_steps=1,
        seed=0,
        use_cpu=True,
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
        **case.args,
    )
    recorder = _Recorder(stop_at)
    trainer = _RecordingTrainer(
        model=model,
        args=args,
        train_dataset=_Tokens(EXAMPLES, seed=1),
        # the first training examples: an eval loss that first falls, then rises, moves the greedy lr both ways
        eval_dataset=_Tokens(8, seed=1) if case.evaluate else None,
        optimizers=case.optimizers(model) if case.optimizers else (None, None),
        optimizer_cls_and_kwargs=case.cls_and_kwargs,
        callbacks=[recorder],
    )
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)
    return Run(
        losses=trainer.losses,
        lrs=recorder.lrs,
        log=[_steady(entry) for entry in trainer.state.log_history],
        weights={name: p.detach().clone() for name, p in model.named_parameters()},
    )


def _steady(entry: dict[str, Any]) -> dict[str, Any]:
    """A log entry without its wall-clock fields."""
    return {k: v for k, v in entry.items() if "runtime" not in k and "per_second" not in k}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Run]:
    """The uninterrupted run of a case, trained once for all the tests that compare to it."""
    runs: dict[str, Run] = {}

    def get(name: str) -> Run:
        if name not in runs:
            runs[name] = _train(CASES[name], tmp_path_factory.mktemp("full"))
        return runs[name]

    return get


@pytest.mark.parametrize("name", CASES)
def test_interrupted_and_resumed_equals_uninterrupted(
    name: str, tmp_path: Path, uninterrupted: Callable[[str], Run]
) -> None:
    case = CASES[name]
    full = uninterrupted(name)
    first = _train(case, tmp_path / "interrupted", stop_at=STOP_AT)
    assert (tmp_path / "interrupted" / f"checkpoint-{STOP_AT}").is_dir()
    second = _train(case, tmp_path / "resumed", resume=tmp_path / "interrupted" / f"checkpoint-{STOP_AT}")

    # not vacuous: every step trained, the weights moved, the losses and lrs are real numbers
    assert [step for step, _ in full.lrs] == list(range(1, MAX_STEPS + 1))
    assert all(math.isfinite(loss) for _, _, loss in full.losses)
    assert all(math.isfinite(lr) and lr >= 0 for _, lrs in full.lrs for lr in lrs)
    assert any(lr > 0 for _, lrs in full.lrs for lr in lrs)
    initial = dict(_tiny_bert().named_parameters())
    assert all(not torch.equal(w, initial[n]) for n, w in full.weights.items() if "pooler" not in n)

    # the stopped run is the first half of the uninterrupted one, the resumed run the second half
    assert first.losses + second.losses == full.losses
    assert first.lrs + second.lrs == full.lrs
    resumed_log = [e for e in second.log if e.get("step", 0) > STOP_AT and "train_loss" not in e]
    full_log = [e for e in full.log if e.get("step", 0) > STOP_AT and "train_loss" not in e]
    assert resumed_log == full_log
    assert full.weights.keys() == second.weights.keys()
    for n, w in full.weights.items():
        assert torch.equal(w, second.weights[n]), n


def test_trainer_schedules_match_hf_optim_schedules(uninterrupted: Callable[[str], Run]) -> None:
    """The Trainer's own cosine schedule on hf-optim's AdamW gives the lrs hf-optim's cosine schedule gives."""
    run = uninterrupted("AdamW via optimizer_cls_and_kwargs, Trainer's cosine")
    optimizer = hf_optim_torch.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=5e-3)
    scheduler = hf_optim_torch.get_scheduler("cosine", optimizer, 2, MAX_STEPS)
    expected = []
    for _ in range(MAX_STEPS):
        optimizer.step()
        scheduler.step()
        expected.append(scheduler.get_last_lr()[0])
    # two param groups (decayed / not decayed), one lr
    assert [lrs for _, lrs in run.lrs] == [[lr, lr] for lr in expected]


def test_greedy_in_trainer_equals_transformers_greedy(tmp_path: Path, uninterrupted: Callable[[str], Run]) -> None:
    """hf-optim's greedy schedule, stepped by the Trainer with the eval loss, moves the lr exactly as transformers'
    GreedyLR does in the same run (both directions occur), and so trains to the same weights."""
    ours = uninterrupted("AdamW + greedy fed by eval loss")
    theirs = _train(Case(optimizers=_greedy_upstream, evaluate=True, args={"metric_for_best_model": "loss"}), tmp_path)
    lrs = [lrs[0] for _, lrs in ours.lrs]
    assert any(b > a for a, b in itertools.pairwise(lrs)), lrs
    assert any(b < a for a, b in itertools.pairwise(lrs)), lrs
    assert ours.lrs == theirs.lrs
    assert ours.losses == theirs.losses
    for n, w in ours.weights.items():
        assert torch.equal(w, theirs.weights[n]), n
