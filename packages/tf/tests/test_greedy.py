"""GreedySchedule (the ``greedy`` spec): the reference on random runs, fit, resume (config, .keras, tf.train.Checkpoint)
and the checked restore of its state."""

from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Any

import hf_optim_spec as hs
import keras
import numpy as np
import pytest
import tensorflow as tf
from _metric_schedules import assert_bad_state_rejected, optimizer_run
from hf_optim_spec.reference import run_stateful
from hf_optim_tf import AdamW, GreedySchedule, SchedulerType, get_greedy_schedule, get_scheduler

SPEC = hs.get("greedy")
KERAS_SAVE_WARNING = "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
SMOOTH = {"patience": 1, "factor": 0.5, "smooth": True, "window_size": 3, "cooldown": 1, "min_lr": 0.02}
METRICS = [5.0, 4.0, 3.0, 3.5, 3.6, 3.7, 3.8, 2.0, 1.0, 0.5, 0.6, 0.7, 0.8, 0.9]


def _random_config(rng: random.Random) -> dict[str, Any]:
    return {
        "mode": rng.choice(["min", "max"]),
        "factor": rng.choice([0.3, 0.5, 0.9, 0.95]),
        "patience": rng.randint(0, 3),
        "threshold": rng.choice([0.0, 1e-6, 0.01, 0.1]),
        "threshold_mode": rng.choice(["abs", "rel"]),
        "cooldown": rng.randint(0, 2),
        "warmup": rng.randint(0, 2),
        "min_lr": rng.choice([0.0, 0.001, 0.05, [0.01]]),
        "max_lr": rng.choice([0.2, 1.0, [0.5]]),
        "eps": rng.choice([0.0, 1e-8, 1e-3]),
        "smooth": rng.random() < 0.5,
        "window_size": rng.randint(1, 5),
        "reset_start": rng.randint(0, 4),
    }


def test_random_runs_match_the_reference_bit_for_bit() -> None:
    rng = random.Random(0)
    for _ in range(150):
        config, base_lr = _random_config(rng), rng.choice([0.1, 0.01, 0.3])
        metrics = [rng.choice([rng.random(), 0.1, 0.2, 0.3, 0.5]) for _ in range(rng.randint(1, 30))]
        schedule = get_greedy_schedule(base_lr, **config)
        got = [schedule.step(metric) for metric in metrics]
        want = run_stateful("greedy", hs.validate(SPEC, config, framework="tf"), [base_lr], metrics)[0]
        assert got == want, config
        assert float(schedule(0)) == float(np.float32(want[-1]))


def test_scheduler_type_builds_it_and_the_optimizer_reads_the_new_lr() -> None:
    schedule = get_scheduler(SchedulerType.GREEDY, 0.1, scheduler_specific_kwargs={"patience": 0, "factor": 0.5})
    assert isinstance(schedule, GreedySchedule)
    variable = keras.Variable(np.ones(3, dtype="float32"))
    optimizer = AdamW(schedule)
    optimizer.build([variable])
    step = tf.function(lambda g: optimizer.apply_gradients([(g, variable)]))
    step(tf.ones(3))
    assert float(optimizer.learning_rate) == pytest.approx(0.1)
    assert schedule.step(1.0) == 0.2  # the first metric is an improvement: patience 0 raises the lr
    step(tf.ones(3))
    assert float(optimizer.learning_rate) == float(np.float32(0.2))


def test_list_bounds_have_one_entry() -> None:
    assert get_greedy_schedule(0.1, min_lr=[0.01], max_lr=(0.5,)).get_config()["min_lr"] == [0.01]
    with pytest.raises(ValueError, match=r"^expected 1 min_lrs, got 2$"):
        get_greedy_schedule(0.1, min_lr=[0.01, 0.02])
    with pytest.raises(TypeError, match="Unknown argument `last_epoch` for get_greedy_schedule"):
        get_greedy_schedule(0.1, last_epoch=3)


def test_config_resume_at_every_metric_continues_exactly() -> None:
    whole = get_greedy_schedule(0.1, **SMOOTH)
    uninterrupted = [whole.step(metric) for metric in METRICS]
    assert len(set(uninterrupted)) > 3
    for stop in range(len(METRICS)):
        first = get_greedy_schedule(0.1, **SMOOTH)
        for metric in METRICS[:stop]:
            first.step(metric)
        resumed = GreedySchedule.from_config(first.get_config())
        assert resumed.get_config() == first.get_config()
        assert [resumed.step(metric) for metric in METRICS[stop:]] == uninterrupted[stop:]
        assert resumed.get_config() == whole.get_config()


def _optimizer_run(start: int, stop: int, *, restore: str | None = None, save: str | None = None) -> list[float]:
    """AdamW on a smoothed greedy schedule, stepped with METRICS; the lr after every step, then the weights' sum."""
    return optimizer_run(
        get_greedy_schedule(0.1, **SMOOTH), METRICS.__getitem__, start, stop, restore=restore, save=save
    )


def test_tf_checkpoint_of_the_optimizer_resumes_bit_for_bit(tmp_path: Path) -> None:
    full = _optimizer_run(0, len(METRICS))
    path = str(tmp_path / "ckpt")
    first = _optimizer_run(0, 6, save=path)
    rest = _optimizer_run(6, len(METRICS), restore=path)
    assert first[:-1] + rest == full


@pytest.mark.filterwarnings(KERAS_SAVE_WARNING)
def test_fit_callback_and_keras_file(tmp_path: Path) -> None:
    keras.utils.set_random_seed(3)
    schedule = get_greedy_schedule(0.05, patience=0, factor=0.5, smooth=True, window_size=2)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=AdamW(schedule), loss="mse", jit_compile=False)
    flat = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: logs.__setitem__("flat", 1.0))
    x, y = np.ones((8, 3), dtype="float32"), np.zeros((8, 2), dtype="float32")
    model.fit(x, y, epochs=3, verbose=0, callbacks=[flat, schedule.callback("flat")])
    # epoch 1 improves on inf (raise), then the flat metric lowers it twice
    assert schedule.lr == 0.05 / 0.5 * 0.5 * 0.5
    assert float(model.optimizer.learning_rate) == float(np.float32(schedule.lr))
    model.save(tmp_path / "m.keras")
    revived = keras.saving.load_model(tmp_path / "m.keras")  # no custom_objects
    assert revived.optimizer._learning_rate.get_config() == schedule.get_config()
    with pytest.raises(KeyError, match="monitors `val_loss`"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[schedule.callback()])


def test_verbose_prints_each_change(capsys: pytest.CaptureFixture[str]) -> None:
    schedule = get_greedy_schedule(0.1, patience=0, factor=0.5, verbose=True)
    schedule.step(1.0)
    schedule.step(2.0)
    out = capsys.readouterr().out
    assert "raising the learning rate to 2.0000e-01" in out and "lowering the learning rate to 1.0000e-01" in out


# --------------------------------------------------------------------------- checked state


def _stepped() -> GreedySchedule:
    schedule = get_greedy_schedule(0.1, **SMOOTH)
    for metric in METRICS[:6]:
        schedule.step(metric)
    return schedule


BAD_STATES = [
    ({"num_good_epochs": -1}, ValueError, "`num_good_epochs`"),
    ({"warmup_counter": 0.5}, ValueError, "`warmup_counter`"),
    ({"reset_start": 501}, ValueError, "`reset_start` counts down from the argument reset_start=500"),
    ({"lr": math.inf}, ValueError, "`lr`"),
    ({"lr": -0.1}, ValueError, "`lr`"),
    ({"best": math.nan}, ValueError, "`best`"),
    ({"window_sum": "1"}, TypeError, "`window_sum`"),
    ({"window": [1.0, 2.0, 3.0, 4.0]}, ValueError, "must be a list of at most window_size=3 metrics"),
    ({"window": "abc"}, ValueError, "must be a list of at most window_size=3 metrics"),
    ({"window": [1.0, "x"]}, TypeError, "`window`"),
]


@pytest.mark.parametrize(("change", "error", "match"), BAD_STATES)
def test_bad_state_in_config_is_rejected(change: dict[str, Any], error: type[Exception], match: str) -> None:
    assert_bad_state_rejected(_stepped(), change, error, match)


@pytest.mark.parametrize("drop", ["window", "last_epoch"])
def test_state_must_hold_every_value(drop: str) -> None:
    config = _stepped().get_config()
    del config["state"][drop]
    with pytest.raises(TypeError, match="Argument `state` must hold exactly"):
        GreedySchedule.from_config(config)
    config = _stepped().get_config()
    config["state"]["window_count"] = 2
    with pytest.raises(TypeError, match=r"unknown \['window_count'\]"):
        GreedySchedule.from_config(config)


def _checkpoint(schedule: GreedySchedule, path: Path, **changes: Any) -> str:
    """A checkpoint of ``schedule``'s state variables with some values replaced."""
    fake = tf.__internal__.tracking.AutoTrackable()
    for key, variable in zip(_keys(schedule), schedule.variables):
        setattr(fake, key, tf.Variable(changes.get(key, variable.numpy())))
    return tf.train.Checkpoint(schedule=fake).write(str(path))


def _keys(schedule: GreedySchedule) -> list[str]:
    keys = ["lr", "best", "num_bad_epochs", "num_good_epochs", "cooldown_counter", "warmup_counter", "reset_start"]
    return [*keys, "last_epoch", *(["window", "window_count", "window_sum"] if len(schedule.variables) > 8 else [])]


def test_checkpoint_of_the_schedule_restores(tmp_path: Path) -> None:
    schedule = _stepped()
    path = _checkpoint(schedule, tmp_path / "good")
    fresh = get_greedy_schedule(0.1, **SMOOTH)
    tf.train.Checkpoint(schedule=fresh).restore(path)
    assert fresh.get_config() == schedule.get_config()
    assert [fresh.step(m) for m in METRICS[6:]] == [schedule.step(m) for m in METRICS[6:]]


@pytest.mark.parametrize(
    ("changes", "error", "match"),
    [
        ({"window_count": np.int64(4)}, ValueError, "`window_count` must be at most window_size=3"),
        ({"reset_start": np.int64(600)}, ValueError, "`reset_start` counts down"),
        ({"num_bad_epochs": np.int64(-1)}, ValueError, "`num_bad_epochs`"),
        ({"window": np.zeros(4)}, ValueError, "`window`"),
        ({"best": np.float64(np.nan)}, ValueError, "`best`"),
    ],
)
def test_bad_checkpoint_changes_nothing(
    changes: dict[str, Any], error: type[Exception], match: str, tmp_path: Path
) -> None:
    schedule = _stepped()
    before = schedule.get_config()
    path = _checkpoint(schedule, tmp_path / "bad", **changes)
    target = get_greedy_schedule(0.1, **SMOOTH)
    for metric in METRICS[:3]:
        target.step(metric)
    target_before = target.get_config()
    with pytest.raises(error, match=match):
        tf.train.Checkpoint(schedule=target).restore(path)
    assert target.get_config() == target_before
    assert schedule.get_config() == before


def test_checkpoint_of_another_configuration_is_rejected(tmp_path: Path) -> None:
    path = _checkpoint(_stepped(), tmp_path / "smooth")
    plain = get_greedy_schedule(0.1, patience=1)
    with pytest.raises(ValueError, match="holds state that GreedySchedule does not have"):
        tf.train.Checkpoint(schedule=plain).restore(path)
    assert plain.get_config()["state"]["lr"] == 0.1
