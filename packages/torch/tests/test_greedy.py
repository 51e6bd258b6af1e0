"""GreedyLR (the ``greedy`` spec): every group against the float64 reference, resume, the checked load_state_dict."""

from __future__ import annotations

import copy
import math
import pickle
from typing import Any

import hf_optim_spec
import pytest
import torch
from _support import case_params, roundtrip
from hf_optim_spec.reference import run_stateful
from hf_optim_torch import GreedyLR, SchedulerType, get_greedy_schedule, get_scheduler
from torch.optim.lr_scheduler import ReduceLROnPlateau

SPEC = hf_optim_spec.get("greedy")

#: transformers 5.25 GreedyLR.state_dict() keys (``_streaming_avg`` is added while smoothing)
TRANSFORMERS_KEYS = {
    "factor",
    "min_lrs",
    "max_lrs",
    "patience",
    "verbose",
    "cooldown",
    "warmup",
    "cooldown_counter",
    "warmup_counter",
    "mode",
    "threshold",
    "threshold_mode",
    "best",
    "num_bad_epochs",
    "num_good_epochs",
    "eps",
    "last_epoch",
    "smooth",
    "window_size",
    "reset_start",
    "reset_start_original",
    "_last_lr",
    "_init_lrs",
}


def _optimizer(lrs: list[float]) -> torch.optim.Optimizer:
    groups = [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in lrs]
    return torch.optim.SGD(groups, lr=lrs[0])


def _lrs(case: Any) -> list[float]:
    return [case["base_lr"], *case.get("group_lrs", [])]


def _walk(scheduler: GreedyLR, metrics: list[float]) -> list[list[float]]:
    rows = []
    for metric in metrics:
        scheduler.step(metric)
        rows.append([group["lr"] for group in scheduler.optimizer.param_groups])
        assert scheduler.get_last_lr() == rows[-1]
    return rows


@pytest.mark.parametrize(("spec", "case"), list(case_params([SPEC])))
def test_every_group_matches_the_reference_bit_for_bit(spec: hf_optim_spec.Spec, case: Any) -> None:
    scheduler = get_greedy_schedule(_optimizer(_lrs(case)), **case["params"])
    rows = _walk(scheduler, list(case["metrics"]))
    expected = run_stateful("greedy", hf_optim_spec.validate(spec, case["params"]), _lrs(case), case["metrics"])
    assert [list(column) for column in zip(*rows)] == expected
    assert [row[0] for row in rows] == list(case["expected"])


@pytest.mark.parametrize(("spec", "case"), list(case_params([SPEC])))
def test_resume_at_every_metric_continues_exactly(spec: hf_optim_spec.Spec, case: Any) -> None:
    metrics = list(case["metrics"])
    whole = get_greedy_schedule(_optimizer(_lrs(case)), **case["params"])
    uninterrupted = _walk(whole, metrics)
    for stop in range(len(metrics)):
        first = get_greedy_schedule(_optimizer(_lrs(case)), **case["params"])
        _walk(first, metrics[:stop])
        saved = roundtrip(first.state_dict())  # torch.save + torch.load(weights_only=True)
        fresh = get_greedy_schedule(_optimizer(_lrs(case)), **case["params"])
        fresh.load_state_dict(saved)
        assert [g["lr"] for g in fresh.optimizer.param_groups] == [g["lr"] for g in first.optimizer.param_groups]
        assert _walk(fresh, metrics[stop:]) == uninterrupted[stop:], f"resume after {stop} metrics"
        assert fresh.state_dict() == whole.state_dict()


def test_state_dict_has_the_keys_of_transformers() -> None:
    plain = GreedyLR(_optimizer([0.1]))
    assert set(plain.state_dict()) == TRANSFORMERS_KEYS
    smooth = GreedyLR(_optimizer([0.1, 0.2]), smooth=True, window_size=3, min_lr=[0.01, 0.02])
    state = smooth.state_dict()
    assert set(state) == TRANSFORMERS_KEYS | {"_streaming_avg"}
    assert state["_streaming_avg"] == {"window_size": 3, "values": [], "sum": 0.0}
    assert state["min_lrs"] == [0.01, 0.02] and state["max_lrs"] == [1.0, 1.0]
    assert state["_init_lrs"] == [0.1, 0.2] and state["_last_lr"] == [0.1, 0.2]


def test_smoothing_keeps_the_float_running_sum() -> None:
    scheduler = GreedyLR(_optimizer([0.1]), smooth=True, window_size=2)
    total = 0.0
    window: list[float] = []
    for value in (0.1, 0.2, 0.3, 0.7, 0.1):
        scheduler.step(value)
        window.append(value)
        total += value
        if len(window) > 2:
            total -= window.pop(0)
    state = scheduler.state_dict()["_streaming_avg"]
    assert state["values"] == [0.7, 0.1]
    assert state["sum"] == total  # the running sum, which is not the sum of the window
    assert state["sum"] != 0.7 + 0.1


def test_it_is_a_metric_driven_scheduler_for_the_trainer() -> None:
    # transformers' Trainer steps a ReduceLROnPlateau (or its own GreedyLR) with the eval metric, not per step
    scheduler = get_scheduler(SchedulerType.GREEDY, _optimizer([0.1]), scheduler_specific_kwargs={"patience": 1})
    assert type(scheduler) is GreedyLR and isinstance(scheduler, ReduceLROnPlateau)
    assert scheduler.patience == 1
    with pytest.raises(TypeError):
        scheduler.step()  # type: ignore[call-arg]
    scheduler.step(torch.tensor(0.5), epoch=7)
    assert scheduler.last_epoch == 7 and scheduler.best == 0.5
    scheduler.step(0.6)
    assert scheduler.last_epoch == 8


def test_list_bounds_need_one_entry_per_param_group() -> None:
    with pytest.raises(ValueError, match=r"^expected 2 min_lrs, got 1$"):
        GreedyLR(_optimizer([0.1, 0.2]), min_lr=[0.01])
    with pytest.raises(ValueError, match=r"^expected 2 max_lrs, got 3$"):
        GreedyLR(_optimizer([0.1, 0.2]), max_lr=(1.0, 1.0, 1.0))
    with pytest.raises(TypeError, match=r"must be a torch\.optim\.Optimizer"):
        GreedyLR([torch.nn.Parameter(torch.zeros(1))])  # type: ignore[arg-type]


def test_a_param_group_added_later_is_reported() -> None:
    optimizer = _optimizer([0.1])
    scheduler = GreedyLR(optimizer)
    optimizer.add_param_group({"params": [torch.nn.Parameter(torch.zeros(1))], "lr": 0.2})
    with pytest.raises(ValueError, match="built for 1 param groups; the optimizer has 2 now"):
        scheduler.step(1.0)


def test_tensor_lr_is_filled_in_place() -> None:
    lr = torch.tensor(0.1, dtype=torch.float64)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(2))], lr=lr)
    scheduler = GreedyLR(optimizer, patience=0, factor=0.5)
    scheduler.step(1.0)
    assert optimizer.param_groups[0]["lr"] is lr and float(lr) == 0.2
    assert scheduler.get_last_lr() == [0.2] and scheduler.state_dict()["_init_lrs"] == [0.1]


def test_verbose_prints_each_change(capsys: pytest.CaptureFixture[str]) -> None:
    scheduler = GreedyLR(_optimizer([0.1]), patience=0, factor=0.5, verbose=True)
    scheduler.step(1.0)
    scheduler.step(2.0)
    out = capsys.readouterr().out
    assert "raising the learning rate of param group 0 to 2.0000e-01" in out
    assert "lowering the learning rate of param group 0 to 1.0000e-01" in out


def test_pickles_and_deepcopies() -> None:
    scheduler = GreedyLR(_optimizer([0.1]), smooth=True, window_size=2, patience=0)
    for metric in (3.0, 2.0, 4.0):
        scheduler.step(metric)
    for clone in (copy.deepcopy(scheduler), pickle.loads(pickle.dumps(scheduler))):
        assert clone.state_dict() == scheduler.state_dict()
        assert _walk(clone, [1.0, 5.0]) == _walk(copy.deepcopy(scheduler), [1.0, 5.0])


# --------------------------------------------------------------------------- checked load_state_dict


def _stepped() -> GreedyLR:
    scheduler = GreedyLR(_optimizer([0.1, 0.3]), patience=1, factor=0.5, smooth=True, window_size=3, cooldown=1)
    for metric in (5.0, 4.0, 3.0, 3.5, 3.6, 3.7):
        scheduler.step(metric)
    return scheduler


def _edit(state: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    state = copy.deepcopy(state)
    if value is KeyError:
        del state[key]
    elif key.startswith("_streaming_avg."):
        inner = key.split(".", 1)[1]
        if value is LookupError:
            del state["_streaming_avg"][inner]
        else:
            state["_streaming_avg"][inner] = value
    else:
        state[key] = value
    return state


BAD_STATES = [
    ("best", KeyError, ValueError, r"missing \['best'\]"),
    ("_streaming_avg", KeyError, ValueError, r"missing \['_streaming_avg'\]"),
    ("base_lrs", [0.1, 0.3], ValueError, r"unexpected \['base_lrs'\]"),
    ("smooth", False, ValueError, r"unexpected \['_streaming_avg'\]"),
    ("mode", "avg", ValueError, "mode avg is unknown!"),
    ("factor", 1.5, ValueError, r"Factor should be < 1\.0\."),
    ("factor", 0.0, ValueError, "Argument `factor` must be > 0"),
    ("patience", -1, ValueError, "Argument `patience` must be >= 0"),
    ("patience", "2", TypeError, "Argument `patience` must be an integer"),
    ("min_lrs", [0.01], ValueError, "GreedyLR state_dict: expected 2 min_lrs, got 1"),
    ("min_lrs", 0.01, ValueError, r"state_dict\['min_lrs'\] must be a list of 2 learning rates"),
    ("max_lrs", [1.0, -1.0], ValueError, r"Argument `max_lr\[1\]` must be >= 0"),
    ("_last_lr", [0.1], ValueError, r"state_dict\['_last_lr'\] must be a list of 2"),
    ("_last_lr", [0.1, math.inf], ValueError, r"state_dict\['_last_lr'\]\[1\] must be finite and >= 0"),
    ("_init_lrs", [0.1, "0.3"], TypeError, r"state_dict\['_init_lrs'\]\[1\] must be a real number"),
    ("num_bad_epochs", -1, ValueError, r"state_dict\['num_bad_epochs'\] must be an integer >= 0"),
    ("cooldown_counter", 1.5, ValueError, r"state_dict\['cooldown_counter'\] must be an integer >= 0"),
    ("warmup_counter", None, TypeError, r"state_dict\['warmup_counter'\] must be a real number"),
    ("last_epoch", -3, ValueError, r"state_dict\['last_epoch'\] must be an integer >= -1"),
    ("best", math.nan, ValueError, r"state_dict\['best'\] must be a number, not NaN"),
    ("reset_start", 501, ValueError, r"counts down from reset_start_original=500; got 501"),
    ("window_size", 0, ValueError, "Argument `window_size` must be >= 1 when smooth=True"),
    ("_streaming_avg.window_size", 4, ValueError, r"\['window_size'\] must equal state_dict\['window_size'\]=3"),
    ("_streaming_avg.values", [1.0, 2.0, 3.0, 4.0], ValueError, "must be a list of at most 3 metrics"),
    ("_streaming_avg.values", [1.0, "x"], TypeError, r"\['values'\]\[1\] must be a real number"),
    ("_streaming_avg.sum", None, TypeError, r"\['sum'\] must be a real number"),
    ("_streaming_avg.sum", LookupError, ValueError, "must be a dict with the keys"),
]


@pytest.mark.parametrize(("key", "value", "error", "match"), BAD_STATES, ids=[f"{k}={v!r}" for k, v, *_ in BAD_STATES])
def test_bad_state_is_rejected_before_anything_changes(key: str, value: Any, error: type, match: str) -> None:
    good = _stepped().state_dict()
    scheduler = GreedyLR(_optimizer([0.1, 0.3]), patience=1, factor=0.5, smooth=True, window_size=3, cooldown=1)
    scheduler.step(9.0)
    before = copy.deepcopy(scheduler.state_dict())
    lrs = [g["lr"] for g in scheduler.optimizer.param_groups]
    with pytest.raises(error, match=match):
        scheduler.load_state_dict(_edit(good, key, value))
    assert scheduler.state_dict() == before
    assert [g["lr"] for g in scheduler.optimizer.param_groups] == lrs
    scheduler.load_state_dict(good)  # the unedited state loads
    assert scheduler.state_dict() == good


def test_loaded_hyperparameters_replace_the_constructed_ones() -> None:
    source = GreedyLR(_optimizer([0.1]), patience=0, factor=0.5, mode="max", smooth=True, window_size=2)
    for metric in (1.0, 2.0, 1.5):
        source.step(metric)
    target = GreedyLR(_optimizer([0.7]))
    target.load_state_dict(source.state_dict())
    assert target.state_dict() == source.state_dict()
    assert target.optimizer.param_groups[0]["lr"] == source.optimizer.param_groups[0]["lr"]
    assert _walk(target, [3.0, 0.0, 0.0]) == _walk(source, [3.0, 0.0, 0.0])


def test_not_a_dict_is_rejected() -> None:
    with pytest.raises(TypeError, match="GreedyLR state_dict must be a dict"):
        GreedyLR(_optimizer([0.1])).load_state_dict([1, 2])  # type: ignore[arg-type]
