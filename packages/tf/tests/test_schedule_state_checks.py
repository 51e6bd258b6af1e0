"""Restoring a schedule: a config of another schedule, or with missing or garbled fields, fails at load and names the
field; a PlateauSchedule's state (from a config or a ``tf.train.Checkpoint``) is checked before any of it is set."""

from __future__ import annotations

import json
import math
import zipfile
from pathlib import Path
from typing import Any

import hf_optim_tf as ht
import keras
import numpy as np
import pytest
import tensorflow as tf
from _metric_schedules import assert_bad_state_rejected
from hf_optim_tf import PlateauSchedule, SpecSchedule

KERAS_SAVE_WARNING = "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"


def _schedules() -> dict[str, Any]:
    linear = ht.get_linear_schedule_with_warmup(1e-3, 10, 100)
    return {
        "linear": linear,
        "cosine": ht.get_cosine_schedule_with_warmup(1e-3, 10, 100),
        "warmup": ht.WarmUp(1e-3, linear, 10),
        "polynomial_decay": ht.PolynomialDecay(1e-3, 100),
        "adafactor": ht.AdafactorSchedule(0.5),
        "plateau": ht.get_reduce_on_plateau_schedule(1e-3, patience=1),
        "keras_cosine": keras.optimizers.schedules.CosineDecay(1e-3, 100),
    }


OURS = ("linear", "warmup", "polynomial_decay", "adafactor", "plateau")


@pytest.mark.parametrize("name", OURS)
def test_config_round_trip(name: str) -> None:
    schedule = _schedules()[name]
    again = type(schedule).from_config(schedule.get_config())
    assert again.get_config() == schedule.get_config()
    assert float(again(7)) == float(schedule(7))


@pytest.mark.parametrize(("source", "target"), [(a, b) for a in _schedules() for b in OURS if a != b and a != "cosine"])
def test_config_of_another_schedule_is_rejected(source: str, target: str) -> None:
    schedules = _schedules()
    config = schedules[source].get_config()
    with pytest.raises(TypeError, match=r"(Unknown|Missing) (field|argument) `\w+`"):
        type(schedules[target]).from_config(config)


def test_spec_config_names_its_schedule() -> None:
    """The generic class rebuilds the schedule its config names; a cosine config is a cosine schedule."""
    cosine = _schedules()["cosine"]
    again = SpecSchedule.from_config(cosine.get_config())
    assert again.spec_id == "cosine" and float(again(50)) == float(cosine(50))
    config = cosine.get_config()
    config["spec_id"] = "linear"  # cosine arguments under the linear id
    with pytest.raises(TypeError, match="Unknown argument `num_cycles`"):
        SpecSchedule.from_config(config)


def _linear_config(**changes: Any) -> dict[str, Any]:
    config = _schedules()["linear"].get_config()
    params = {**config["params"], **changes.pop("params", {})}
    return {**config, "params": params, **changes}


@pytest.mark.parametrize(
    ("config", "error", "match"),
    [
        ([("spec_id", "linear")], TypeError, "Argument `config` must be a dict"),
        ({"learning_rate": 1e-3, "params": {}}, TypeError, "Missing field `spec_id`"),
        (_linear_config(extra=1), TypeError, "Unknown field `extra`"),
        (_linear_config(spec_id="no_such"), ValueError, "Argument `spec_id` must be the id"),
        (_linear_config(spec_id=3), TypeError, "Argument `spec_id` must be a str"),
        (_linear_config(spec_id="reduce_lr_on_plateau"), ValueError, "Argument `spec_id`"),
        (_linear_config(learning_rate=float("nan")), ValueError, "Argument `learning_rate` must be finite"),
        (_linear_config(learning_rate="1e-3"), TypeError, "Argument `learning_rate` must be a number"),
        (_linear_config(name=7), TypeError, "Argument `name` must be a str or None"),
        ({**_linear_config(), "params": [10, 100]}, TypeError, "Argument `params` must be a dict"),
        (_linear_config(params={"num_warmup_steps": -1}), ValueError, "`num_warmup_steps` must be >= 0"),
        (_linear_config(params={"num_warmup_steps": 2.5}), TypeError, "`num_warmup_steps` must be an integer"),
        (_linear_config(params={"num_training_steps": float("nan")}), TypeError, "`num_training_steps`"),
        (_linear_config(params={"num_cycles": 0.5}), TypeError, "Unknown argument `num_cycles`"),
        ({**_linear_config(), "params": {"num_warmup_steps": 1}}, TypeError, "`num_training_steps`"),
    ],
)
def test_garbled_spec_config_is_rejected(config: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        SpecSchedule.from_config(config)


@pytest.mark.parametrize(
    ("name", "field", "value", "error", "match"),
    [
        ("warmup", "warmup_steps", -3, ValueError, "`warmup_steps` must be >= 0"),
        ("warmup", "power", float("nan"), ValueError, "`power` must not be NaN"),
        ("warmup", "decay_schedule_fn", "linear", TypeError, "`decay_schedule_fn`"),
        ("warmup", "initial_learning_rate", None, TypeError, "`initial_learning_rate`"),
        ("polynomial_decay", "decay_steps", 0, ValueError, "`decay_steps`"),
        ("polynomial_decay", "power", float("inf"), ValueError, "`power`"),
        ("adafactor", "rms", float("nan"), ValueError, "`rms`"),
        ("adafactor", "eps2", -1.0, ValueError, "`eps2`"),
        ("plateau", "patience", -1, ValueError, "`patience`"),
        ("plateau", "factor", 1.5, ValueError, "Factor should be < 1.0"),  # torch's messages, kept by the spec
        ("plateau", "mode", "sideways", ValueError, "mode sideways is unknown"),
        ("plateau", "learning_rate", float("nan"), ValueError, "`learning_rate`"),
        ("plateau", "name", 3, TypeError, "`name`"),
    ],
)
def test_garbled_field_is_named(name: str, field: str, value: Any, error: type[Exception], match: str) -> None:
    schedule = _schedules()[name]
    config = {**schedule.get_config(), field: value}
    with pytest.raises(error, match=match):
        type(schedule).from_config(config)


@pytest.mark.parametrize("name", ("warmup", "polynomial_decay", "adafactor", "linear"))
def test_missing_required_field_is_named(name: str) -> None:
    schedule = _schedules()[name]
    config = schedule.get_config()
    required = {"warmup": "warmup_steps", "polynomial_decay": "decay_steps", "adafactor": "rms", "linear": "spec_id"}
    del config[required[name]]
    with pytest.raises(TypeError, match=f"Missing field `{required[name]}`"):
        type(schedule).from_config(config)


# --------------------------------------------------------------------------- PlateauSchedule's state


def _stepped() -> PlateauSchedule:
    schedule = ht.get_reduce_on_plateau_schedule(0.1, patience=0, factor=0.5, cooldown=2)
    for metric in (1.0, 2.0, 2.0):
        schedule.step(metric)
    return schedule


def _state(schedule: PlateauSchedule) -> dict[str, Any]:
    return dict(schedule.get_config()["state"])


BAD_STATES = [
    ({"num_bad_epochs": -1}, ValueError, "`num_bad_epochs`"),
    ({"num_bad_epochs": 1.5}, ValueError, "`num_bad_epochs`"),
    ({"cooldown_counter": float("nan")}, ValueError, "`cooldown_counter`"),
    ({"cooldown_counter": True}, TypeError, "`cooldown_counter`"),
    ({"lr": float("nan")}, ValueError, "`lr`"),
    ({"lr": -0.1}, ValueError, "`lr`"),
    ({"lr": float("inf")}, ValueError, "`lr`"),
    ({"lr": "0.1"}, TypeError, "`lr`"),
    ({"best": float("nan")}, ValueError, "`best`"),
    ({"best": [1.0, 2.0]}, ValueError, "`best`"),
]


def test_plateau_state_round_trips() -> None:
    schedule = _stepped()
    state = _state(schedule)
    assert state["cooldown_counter"] > 0 and state["lr"] < 0.1
    again = PlateauSchedule.from_config(schedule.get_config())
    assert _state(again) == state
    fresh = ht.get_reduce_on_plateau_schedule(0.1)
    assert _state(fresh)["best"] == math.inf  # inf before the first metric is a valid state


@pytest.mark.parametrize(("change", "error", "match"), BAD_STATES)
def test_bad_plateau_state_in_config_is_rejected(change: dict[str, Any], error: type[Exception], match: str) -> None:
    assert_bad_state_rejected(_stepped(), change, error, match)


@pytest.mark.parametrize(
    "state", [{"lr": 0.1}, {"lr": 0.1, "best": 1.0, "num_bad_epochs": 0, "cooldown_counter": 0, "x": 1}, [0.1]]
)
def test_plateau_state_must_hold_the_four_values(state: Any) -> None:
    config = {**_stepped().get_config(), "state": state}
    with pytest.raises(TypeError, match="Argument `state` must"):
        PlateauSchedule.from_config(config)


def _checkpoint(values: dict[str, Any], path: Path) -> str:
    fake = tf.__internal__.tracking.AutoTrackable()
    for key, value in values.items():
        setattr(fake, key, tf.Variable(value))
    return tf.train.Checkpoint(schedule=fake).write(str(path))


def test_plateau_checkpoint_restores(tmp_path: Path) -> None:
    schedule = _stepped()
    path = tf.train.Checkpoint(schedule=schedule).write(str(tmp_path / "good"))
    again = ht.get_reduce_on_plateau_schedule(0.1, patience=0, factor=0.5, cooldown=2)
    tf.train.Checkpoint(schedule=again).restore(path)
    assert _state(again) == _state(schedule)


GOOD = {"lr": np.float64(0.05), "best": np.float64(1.0), "num_bad_epochs": np.int64(0), "cooldown_counter": np.int64(2)}


@pytest.mark.parametrize(
    ("values", "error", "match"),
    [
        ({**GOOD, "num_bad_epochs": np.int64(-2)}, ValueError, "`num_bad_epochs`"),
        ({**GOOD, "cooldown_counter": np.float64(0.5)}, ValueError, "`cooldown_counter`"),
        ({**GOOD, "lr": np.float64(np.nan)}, ValueError, "`lr`"),
        ({**GOOD, "best": np.float64(np.nan)}, ValueError, "`best`"),
        ({**GOOD, "lr": np.int64(1)}, TypeError, "`lr`"),
        ({**GOOD, "best": np.ones(2)}, ValueError, "`best`"),
        ({k: v for k, v in GOOD.items() if k != "best"}, ValueError, "holds no value"),
        ({**GOOD, "momentum": np.float64(0.9)}, ValueError, "does not have"),
    ],
)
def test_bad_plateau_checkpoint_is_rejected(
    values: dict[str, Any], error: type[Exception], match: str, tmp_path: Path
) -> None:
    """Every value is checked before any is set (``cooldown_counter`` comes last: a value-by-value restore would
    already have set the others)."""
    schedule = _stepped()
    before = _state(schedule)
    path = _checkpoint(values, tmp_path / "bad")
    with pytest.raises(error, match=match):
        tf.train.Checkpoint(schedule=schedule).restore(path)
    assert _state(schedule) == before


def test_plateau_checkpoint_takes_float32_lr(tmp_path: Path) -> None:
    path = _checkpoint({**GOOD, "lr": np.float32(0.05)}, tmp_path / "f32")
    schedule = _stepped()
    tf.train.Checkpoint(schedule=schedule).restore(path)
    assert _state(schedule)["lr"] == float(np.float32(0.05))


# --------------------------------------------------------------------------- a .keras file


def _edit_keras_file(path: Path, edit: Any) -> Path:
    edited = path.with_name("edited.keras")
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(edited, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename == "config.json":
                config = json.loads(data)
                edit(config["compile_config"]["optimizer"]["config"]["learning_rate"]["config"])
                data = json.dumps(config).encode()
            target.writestr(item, data)
    return edited


@pytest.mark.filterwarnings(KERAS_SAVE_WARNING)
def test_garbled_schedule_in_keras_file_fails_at_load(tmp_path: Path) -> None:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=ht.AdamW(ht.get_cosine_schedule_with_warmup(1e-3, 2, 10)), loss="mse")
    model.fit(np.ones((4, 3)), np.ones((4, 2)), epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    revived = keras.saving.load_model(tmp_path / "m.keras")
    assert revived.optimizer._learning_rate.get_config() == model.optimizer._learning_rate.get_config()

    def negative_warmup(config: dict[str, Any]) -> None:
        config["params"]["num_warmup_steps"] = -2

    with pytest.raises(ValueError, match="`num_warmup_steps` must be >= 0"):
        keras.saving.load_model(_edit_keras_file(tmp_path / "m.keras", negative_warmup))


def test_adafactor_relative_step_schedule_keeps_its_first_name_and_registration() -> None:
    """The Keras class was renamed from ``AdafactorSchedule`` (torch's class of that name is an unrelated proxy): the
    old name is an alias and ``.keras`` files keep the registered name ``hf_optim>AdafactorSchedule``."""
    assert ht.AdafactorSchedule is ht.AdafactorRelativeStepSchedule
    schedule = ht.get_adafactor_relative_step_schedule(0.5)
    assert isinstance(schedule, ht.AdafactorRelativeStepSchedule)
    assert keras.saving.get_registered_name(type(schedule)) == "hf_optim>AdafactorSchedule"
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert type(again) is ht.AdafactorRelativeStepSchedule and again.get_config() == schedule.get_config()
