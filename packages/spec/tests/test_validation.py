"""hf_optim_spec.validate: uniform messages (argument, rule, value received), defaults, constraints."""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pytest
from hf_optim_spec import validate
from hf_optim_spec._registry import load_spec

DEMO = {
    "id": "demo",
    "kind": "schedule",
    "hf_name": ["get_demo_schedule"],
    "parameters": {
        "num_warmup_steps": {"type": "integer", "minimum": 0},
        "num_cycles": {"type": "number", "default": 0.5, "exclusiveMinimum": 0},
        "power": {"type": "number", "default": 1.0, "maximum": 10, "framework_names": {"tf": "exponent"}},
        "betas": {
            "type": "number_pair",
            "default": [0.9, 0.999],
            "minimum": 0,
            "exclusiveMaximum": 1,
            "framework_names": {"tf": ["beta_1", "beta_2"]},
        },
        "min_lr": {"type": "number", "default": None, "nullable": True},
        "min_lr_rate": {"type": "number", "default": None, "nullable": True},
        "kind": {"type": "string", "default": "linear", "enum": ["linear", "cosine"]},
        "clamp": {"type": "boolean", "default": False},
        "names": {"type": "string_list", "default": None, "nullable": True},
        "inner": {"type": "schedule", "default": None, "nullable": True},
        "learning_rate": {"type": ["number", "schedule"], "default": 0.001, "minimum": 0},
    },
    "constraints": [
        {
            "when": "min_lr is not None and min_lr_rate is not None",
            "error": "ValueError",
            "message": "Only one of min_lr or min_lr_rate should be set",
        },
        {
            "when": "min_lr is not None and min_lr >= base_lr",
            "error": "ValueError",
            "message": "min_lr ({min_lr}) must be smaller than initial lr ({base_lr})",
        },
        {"when": "betas_0 > betas_1", "error": "ValueError", "message": "beta1 {betas_0} exceeds beta2 {betas_1}"},
    ],
}


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    path = tmp_path_factory.mktemp("spec") / "demo.json"
    path.write_text(json.dumps(DEMO))
    return load_spec(path)


def test_defaults_are_filled_and_names_are_canonical(spec):
    out = validate(spec, {"num_warmup_steps": 3})
    assert out == {
        "num_warmup_steps": 3,
        "num_cycles": 0.5,
        "power": 1.0,
        "betas": (0.9, 0.999),
        "min_lr": None,
        "min_lr_rate": None,
        "kind": "linear",
        "clamp": False,
        "names": None,
        "inner": None,
        "learning_rate": 0.001,
    }


@pytest.mark.parametrize(
    ("params", "error", "message"),
    [
        (
            {"num_warmup_steps": -1},
            ValueError,
            "Argument `num_warmup_steps` must be >= 0. Received: num_warmup_steps=-1",
        ),
        (
            {"num_warmup_steps": 1.5},
            TypeError,
            "Argument `num_warmup_steps` must be an integer. Received: num_warmup_steps=1.5 (of type float)",
        ),
        ({"num_warmup_steps": True}, TypeError, "must be an integer. Received: num_warmup_steps=True (of type bool)"),
        ({"num_warmup_steps": "3"}, TypeError, "must be an integer. Received: num_warmup_steps='3' (of type str)"),
        ({"num_warmup_steps": None}, TypeError, "must be an integer. Received: num_warmup_steps=None"),
        (
            {"num_warmup_steps": 1, "num_cycles": 0},
            ValueError,
            "Argument `num_cycles` must be > 0. Received: num_cycles=0",
        ),
        ({"num_warmup_steps": 1, "num_cycles": math.nan}, ValueError, "Argument `num_cycles` must not be NaN"),
        (
            {"num_warmup_steps": 1, "num_cycles": math.inf},
            ValueError,
            "Argument `num_cycles` must be finite. Received: num_cycles=inf",
        ),
        ({"num_warmup_steps": 1, "power": 11}, ValueError, "Argument `power` must be <= 10. Received: power=11"),
        (
            {"num_warmup_steps": 1, "betas": (0.9, 1.0)},
            ValueError,
            "Argument `betas[1]` must be < 1. Received: betas=(0.9, 1.0)",
        ),
        ({"num_warmup_steps": 1, "betas": 0.9}, TypeError, "Argument `betas` must be a pair of numbers"),
        (
            {"num_warmup_steps": 1, "kind": "step"},
            ValueError,
            "Argument `kind` must be one of 'linear', 'cosine'. Received: kind='step'",
        ),
        ({"num_warmup_steps": 1, "clamp": 1}, TypeError, "Argument `clamp` must be a boolean"),
        ({"num_warmup_steps": 1, "names": "bias"}, TypeError, "Argument `names` must be a list of strings"),
        ({"num_warmup_steps": 1, "inner": 3}, TypeError, "Argument `inner` must be a schedule"),
        ({"num_warmup_steps": 1, "learning_rate": -1.0}, ValueError, "Argument `learning_rate` must be >= 0"),
        (
            {"num_warmup_steps": 1, "learning_rate": "x"},
            TypeError,
            "Argument `learning_rate` must be a number or a schedule (a callable of the step). Received: learning_rate='x'",
        ),
        ({}, TypeError, "Missing required argument `num_warmup_steps` for get_demo_schedule."),
        (
            {"num_warmup_steps": 1, "num_cycle": 1},
            TypeError,
            "Unknown argument `num_cycle` for get_demo_schedule. Did you mean: num_cycles?",
        ),
        (
            {"num_warmup_steps": 1, "min_lr": 0.1, "min_lr_rate": 0.1},
            ValueError,
            "Only one of min_lr or min_lr_rate should be set",
        ),
        ({"num_warmup_steps": 1, "betas": (0.99, 0.9)}, ValueError, "beta1 0.99 exceeds beta2 0.9"),
    ],
)
def test_bad_input_gets_the_uniform_message(spec, params, error, message):
    with pytest.raises(error, match=re.escape(message)):
        validate(spec, params)


def test_accepted_numeric_types(spec):
    out = validate(spec, {"num_warmup_steps": np.int64(4), "num_cycles": np.float32(0.25), "power": 2})
    assert out["num_warmup_steps"] == 4 and out["num_cycles"] == np.float32(0.25) and out["power"] == 2
    assert validate(spec, {"num_warmup_steps": 4.0})["num_warmup_steps"] == 4.0  # integral floats are integers


def test_constraints_with_base_lr_run_only_when_it_is_known(spec):
    validate(spec, {"num_warmup_steps": 1, "min_lr": 5.0})
    with pytest.raises(ValueError, match=re.escape("min_lr (5.0) must be smaller than initial lr (1.0)")):
        validate(spec, {"num_warmup_steps": 1, "min_lr": 5.0}, base_lr=1.0)


def test_framework_spellings_are_accepted_and_named_in_errors(spec):
    out = validate(spec, {"num_warmup_steps": 1, "exponent": 2.0, "beta_1": 0.5}, framework="tf")
    assert out["power"] == 2.0 and out["betas"] == (0.5, 0.999)
    with pytest.raises(ValueError, match=re.escape("Argument `beta_2` must be < 1. Received: beta_2=1.5")):
        validate(spec, {"num_warmup_steps": 1, "beta_2": 1.5}, framework="tf")
    with pytest.raises(TypeError, match=r"Unknown argument `power`.*Did you mean: exponent"):
        validate(spec, {"num_warmup_steps": 1, "power": 2.0}, framework="tf")


def test_a_parameter_may_accept_several_types(spec):
    schedule = lambda step: 0.1  # noqa: E731
    assert validate(spec, {"num_warmup_steps": 1, "learning_rate": schedule})["learning_rate"] is schedule
    assert validate(spec, {"num_warmup_steps": 1, "learning_rate": 0.5})["learning_rate"] == 0.5


def test_number_or_list_is_one_bound_or_one_per_param_group():
    greedy = load_spec(__import__("hf_optim_spec").spec_root() / "schedules" / "greedy.json")
    assert validate(greedy, {"min_lr": 0.01})["min_lr"] == 0.01
    assert validate(greedy, {"min_lr": [0.01, 0.02]}, param_groups=2)["min_lr"] == [0.01, 0.02]
    assert validate(greedy, {"max_lr": (0.5,)})["max_lr"] == (0.5,)  # the length is checked only when known
    with pytest.raises(ValueError, match=r"^expected 2 min_lrs, got 3$"):
        validate(greedy, {"min_lr": [0.1, 0.2, 0.3]}, param_groups=2)
    with pytest.raises(ValueError, match=re.escape("Argument `max_lr[1]` must be >= 0. Received: max_lr=[1.0, -1.0]")):
        validate(greedy, {"max_lr": [1.0, -1.0]}, param_groups=2)
    for bad in ("0.1", {"a": 0.1}, {0.1}, [0.1, "x"], None):
        with pytest.raises(TypeError, match=r"Argument `min_lr` must be a number or a list of numbers"):
            validate(greedy, {"min_lr": bad})
