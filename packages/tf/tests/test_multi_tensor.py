"""On Keras' torch backend the optimizers update their float32 variables at once (``hf_optim_tf._multi_tensor``: the
AdamW family with multi-tensor ops, Adafactor with plain torch calls): bit for bit what the per-variable
``update_step`` gives, which the spec cases check on that backend.

Runs in place with KERAS_BACKEND=torch (``nox -s keras_backends``); in the TensorFlow session the cases run once more,
together, in a process of their own with KERAS_BACKEND=torch (Keras reads the backend once per process)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hf_optim_tf
import keras
import numpy as np
import pytest
from hf_optim_tf import _multi_tensor

CASES: dict[str, Callable[[], keras.optimizers.Optimizer]] = {
    "AdamW": lambda: hf_optim_tf.AdamW(learning_rate=3e-2, weight_decay=0.01),
    "AdamW-no-bias-correction": lambda: hf_optim_tf.AdamW(learning_rate=3e-2, correct_bias=False, epsilon=1e-3),
    "AdamW-schedule": lambda: hf_optim_tf.AdamW(
        hf_optim_tf.get_cosine_schedule_with_warmup(1e-2, 2, 10), weight_decay=0.1, clipnorm=1.0
    ),
    "AdamWeightDecay": lambda: hf_optim_tf.AdamWeightDecay(
        learning_rate=3e-2, weight_decay_rate=0.01, exclude_from_weight_decay=["LayerNorm", "bias"]
    ),
    "AdamWeightDecay-amsgrad": lambda: hf_optim_tf.AdamWeightDecay(
        learning_rate=3e-2, weight_decay_rate=0.1, amsgrad=True, fp32_math=True
    ),
    "Adafactor": hf_optim_tf.Adafactor,
    "Adafactor-manual-lr": lambda: hf_optim_tf.Adafactor(
        learning_rate=1e-2, scale_parameter=False, relative_step=False, weight_decay=0.01, clip_threshold=0.5
    ),
    "Adafactor-first-moment": lambda: hf_optim_tf.Adafactor(beta_1=0.9, warmup_init=True, weight_decay=0.1),
    "Adafactor-unscaled-first-moment": lambda: hf_optim_tf.Adafactor(
        hf_optim_tf.get_linear_schedule_with_warmup(1e-2, 2, 10),
        beta_1=0.8,
        first_moment="unscaled",
        relative_step=False,
        clipnorm=1.0,
    ),
}
# float32 variables take the multi-tensor path; the bfloat16 and float64 ones the per-variable path in the same call
VARIABLES = [
    ("dense/kernel", (6, 5), "float32"),
    ("dense/bias", (5,), "float32"),
    ("LayerNorm/gamma", (5,), "float32"),
    ("head/kernel", (5, 3, 2), "float32"),
    ("head/bias", (2,), "bfloat16"),
    ("scale", (), "float64"),
    ("temperature", (), "float32"),
    ("empty/kernel", (0, 3), "float32"),  # update_step's column means of no rows: NaN
    ("empty/bias", (0,), "float32"),  # an RMS of no elements: NaN; nothing else to update
    ("pair", (2,), "float32"),  # with the 0-d variable and the empty vector: as many elements as variables
]
AT_ONCE = [name for name, _, dtype in VARIABLES if dtype == "float32"]


def _run(case: str, at_once: bool) -> tuple[list[int], list[np.ndarray]]:
    """Five steps (the second and third on part of the variables: AdamW's step counts part), the sizes of the lists
    updated at once, and every variable's and every optimizer variable's value."""
    rng = np.random.default_rng(3)
    variables = []
    for path, shape, dtype in VARIABLES:  # weight-decay patterns match the path: "<scope>/<name>"
        scope, _, name = path.rpartition("/")
        with keras.name_scope(scope or "model"):
            variables.append(keras.Variable(rng.standard_normal(shape).astype(dtype), name=name, dtype=dtype))
    optimizer = CASES[case]()
    sizes: list[int] = []
    if at_once:
        update = optimizer._update_lists

        def counted(grads: list[Any], variables: list[Any], learning_rate: Any) -> None:
            sizes.append(len(variables))
            update(grads, variables, learning_rate)

        optimizer._update_lists = counted
    else:
        optimizer._update_lists = None
    for step in range(5):
        chosen = [0, 2, 4] if step in (1, 2) else range(len(variables))
        grads = [
            keras.ops.convert_to_tensor(rng.standard_normal(variables[i].shape) * 0.1, dtype=variables[i].dtype)
            for i in chosen
        ]
        optimizer.apply(grads, [variables[i] for i in chosen])
    values = [keras.ops.convert_to_numpy(v.value) for v in [*variables, *optimizer.variables]]
    return sizes, values


def _bits(value: np.ndarray) -> np.ndarray:
    return np.atleast_1d(value).view(np.uint8)


def _check(case: str) -> None:
    """``case`` both ways, with the multi-tensor path's piece and batch sizes and with small ones: pieces of 7
    elements (AdamW: every tensor here in several pieces, in several batches; Adafactor: the matrices in rows) and of
    2 (Adafactor: the vectors in pieces too)."""
    default = _multi_tensor.PIECE, _multi_tensor.BATCH
    for piece, batch in (default, (7, 16), (2, 4)):
        _multi_tensor.PIECE, _multi_tensor.BATCH = piece, batch
        try:
            sizes, at_once = _run(case, at_once=True)
            assert sizes == [len(AT_ONCE), 2, 2, len(AT_ONCE), len(AT_ONCE)], sizes
            _, per_variable = _run(case, at_once=False)
        finally:
            _multi_tensor.PIECE, _multi_tensor.BATCH = default
        assert len(at_once) == len(per_variable)
        for index, (got, want) in enumerate(zip(at_once, per_variable)):
            assert got.dtype == want.dtype, index
            np.testing.assert_array_equal(_bits(got), _bits(want), err_msg=f"{case}, pieces {piece}: variable {index}")


def _check_left_to_update_step() -> None:
    """A gradient on another device than its variable, or another ``floatx`` (``keras.ops`` then makes Python floats
    tensors of it), leaves the variable to ``update_step``; a float32 one on the same device takes the path."""
    import torch

    variable = keras.Variable(np.ones(3, "float32"))
    taken: list[int] = []

    def update(grads: list[Any], variables: list[Any], learning_rate: Any) -> None:
        taken.append(len(variables))

    elsewhere = torch.ones(3, device="meta")
    assert _multi_tensor.update_at_once(update, [elsewhere], [variable], 1e-2) == ([elsewhere], [variable])
    grad = torch.ones(3)
    keras.config.set_floatx("float64")
    try:
        assert _multi_tensor.update_at_once(update, [grad], [variable], 1e-2) == ([grad], [variable])
    finally:
        keras.config.set_floatx("float32")
    assert taken == []
    assert _multi_tensor.update_at_once(update, [grad], [variable], 1e-2) == ([], [])
    assert taken == [1]


CHECKS = [*(f"_check:{case}" for case in sorted(CASES)), "_check_left_to_update_step"]
"""The checks of this module that run on the torch backend, as ``function:argument``."""


def _run_checks() -> dict[str, str]:
    """Every check of ``CHECKS`` in this process: the traceback of each one that failed, "" for the others."""
    failures = {}
    for check in CHECKS:
        name, _, argument = check.partition(":")
        try:
            globals()[name](*filter(None, [argument]))
        except Exception:
            failures[check] = traceback.format_exc()
        else:
            failures[check] = ""
    return failures


@pytest.fixture(scope="module")
def torch_backend_failures() -> dict[str, str]:
    """What :func:`_run_checks` gives on the torch backend: here when Keras runs on torch, else in one process of its
    own with KERAS_BACKEND=torch (Keras reads the backend once per process; one process for all the checks, not one
    each: about 7 s of imports a process on 2 cores)."""
    if keras.backend.backend() == "torch":
        return _run_checks()
    if importlib.util.find_spec("torch") is None:
        pytest.skip("the multi-tensor path is the torch backend's, and torch is not installed here")
    here = str(Path(__file__).parent)
    program = (
        f"import json, sys; sys.path.insert(0, {here!r}); import test_multi_tensor as t; "
        "print('\\n' + json.dumps(t._run_checks()))"
    )
    env = {**os.environ, "KERAS_BACKEND": "torch", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-c", program]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    failures: dict[str, str] = json.loads(done.stdout.splitlines()[-1])
    return failures


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_float32_variables_are_updated_at_once_bit_for_bit(
    case: str, torch_backend_failures: dict[str, str]
) -> None:
    failure = torch_backend_failures[f"_check:{case}"]
    assert not failure, failure


def test_another_device_or_floatx_is_left_to_update_step(torch_backend_failures: dict[str, str]) -> None:
    failure = torch_backend_failures["_check_left_to_update_step"]
    assert not failure, failure


def test_off_the_torch_backend_nothing_is_updated_at_once() -> None:
    if keras.backend.backend() == "torch":
        pytest.skip("on the torch backend the path is taken (the test above)")
    variable, grad = keras.Variable(np.ones(3, "float32")), keras.ops.ones(3)
    fail = lambda *_: pytest.fail("updated at once off the torch backend")  # noqa: E731
    assert _multi_tensor.update_at_once(fail, [grad], [variable], 1e-2) == ([grad], [variable])
