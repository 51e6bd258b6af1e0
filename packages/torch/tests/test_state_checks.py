"""Loading state: a checkpoint that does not fit is rejected with a clear error before anything changes."""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from typing import Any

import pytest
import torch
from hf_optim_torch import (
    Adafactor,
    AdafactorSchedule,
    AdamW,
    AdamWeightDecay,
    create_optimizer,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
    get_reduce_on_plateau_schedule,
)

PATHS = {"for-loop": {"foreach": False, "fused": False}, "foreach": {"foreach": True}, "default": {}}
BUILDERS: dict[str, Callable[..., torch.optim.Optimizer]] = {
    "adamw": lambda params, **kw: AdamW(params, lr=1e-2, **kw),
    "adafactor": lambda params, **kw: Adafactor(params, beta1=0.9, lr=1e-2, relative_step=False, **kw),
    "adafactor_relative": Adafactor,
    "adam_weight_decay": lambda params, **kw: AdamWeightDecay(params, learning_rate=1e-2, amsgrad=True, **kw),
}


def _params(rows: int = 10) -> list[torch.nn.Parameter]:
    gen = torch.Generator().manual_seed(0)
    return [torch.nn.Parameter(torch.randn(shape, generator=gen)) for shape in ((rows, 8), (2, 3, 4), (8,))]


def _trained(name: str, path: str = "default") -> dict[str, Any]:
    params = _params()
    optimizer = BUILDERS[name](params, **PATHS[path])
    for seed in range(2):
        gen = torch.Generator().manual_seed(seed)
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        optimizer.step()
    return copy.deepcopy(optimizer.state_dict())


def _rejects(name: str, state_dict: Any, match: str, path: str = "default", rows: int = 10) -> None:
    optimizer = BUILDERS[name](_params(rows), **PATHS[path])
    groups = copy.deepcopy([{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups])
    with pytest.raises((ValueError, TypeError), match=match):
        optimizer.load_state_dict(state_dict)
    assert len(optimizer.state) == 0, "a rejected checkpoint left state behind"
    assert [{k: v for k, v in g.items() if k != "params"} for g in optimizer.param_groups] == groups


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", BUILDERS)
def test_a_resized_embedding_is_rejected_naming_group_parameter_key_and_shapes(name: str, path: str) -> None:
    key = "exp_avg" if name != "adafactor_relative" else "exp_avg_sq_row"
    expected = "(12, 8)" if key == "exp_avg" else "(12,)"
    received = "(10, 8)" if key == "exp_avg" else "(10,)"
    match = (
        rf"param group 0, parameter 0 \(shape \(12, 8\)\), state `{key}` must have shape {re.escape(expected)}; "
        rf"got shape {re.escape(received)}"
    )
    _rejects(name, _trained(name, path), match, path, rows=12)


def _two_groups(name: str, path: str) -> tuple[torch.optim.Optimizer, list[torch.nn.Parameter]]:
    """An optimizer of two param groups, stepped twice; the resized parameter is in the second group."""
    params = _params()
    optimizer = BUILDERS[name]([{"params": params[1:]}, {"params": params[:1]}], **PATHS[path])
    for seed in range(2):
        gen = torch.Generator().manual_seed(seed)
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen)
        optimizer.step()
    return optimizer, params


def _unchanged_by_a_refused_step(optimizer: torch.optim.Optimizer, params: list[torch.Tensor], match: str) -> None:
    before = copy.deepcopy(optimizer.state_dict()), [p.detach().clone() for p in params]
    with pytest.raises(ValueError, match=match):
        optimizer.step()
    after = optimizer.state_dict(), params
    assert all(torch.equal(a, b) for a, b in zip(before[1], after[1])), "a refused step changed a parameter"
    for index, state in before[0]["state"].items():
        for key, value in state.items():
            assert torch.equal(torch.as_tensor(after[0]["state"][index][key]), torch.as_tensor(value)), (index, key)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", BUILDERS)
def test_a_parameter_resized_under_its_state_is_refused_before_any_group_steps(name: str, path: str) -> None:
    # `p.data = ...` of another shape (an embedding resized in place): its gradient fits it, its state does not
    optimizer, params = _two_groups(name, path)
    key = "exp_avg" if name != "adafactor_relative" else "exp_avg_sq_row"
    params[0].data = torch.randn(12, 8)
    params[0].grad = torch.randn(12, 8)
    needs = "(12, 8)" if key == "exp_avg" else "(12,)"
    has = "(10, 8)" if key == "exp_avg" else "(10,)"
    match = (
        rf"param group 1, parameter 0 \(shape \(12, 8\)\): its state `{key}` has shape {re.escape(has)}, which does "
        rf"not fit the parameter \(it needs {re.escape(needs)}\)"
    )
    _unchanged_by_a_refused_step(optimizer, params, match)
    del optimizer.state[params[0]]  # the remedy the message gives: the parameter starts afresh
    optimizer.step()
    assert optimizer.state[params[0]]["step"] == 1


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(("before", "after"), [((10, 8), (80,)), ((80,), (10, 8))])
def test_an_adafactor_parameter_of_another_rank_is_refused_for_its_statistics(before, after, path: str) -> None:
    # without beta1 only the second-moment statistics have the parameter's shape: factored rows and columns for a
    # matrix, one per element for a vector; the state of one rank lacks the other's
    params = [torch.nn.Parameter(torch.ones(3, 4)), torch.nn.Parameter(torch.ones(before))]
    optimizer = Adafactor([{"params": params[:1]}, {"params": params[1:]}], **PATHS[path])
    for p in params:
        p.grad = torch.full(p.shape, 0.5)
    optimizer.step()
    params[1].data = torch.ones(after)
    params[1].grad = torch.full(after, 0.5)
    needed = "exp_avg_sq" if len(after) == 1 else "exp_avg_sq_row"
    match = (
        rf"param group 1, parameter 0 \(shape {re.escape(str(after))}\): its state has no `{needed}`, which it needs"
    )
    _unchanged_by_a_refused_step(optimizer, params, match)


def test_a_frozen_parameter_resized_under_its_state_is_refused_only_once_it_has_a_gradient() -> None:
    optimizer, params = _two_groups("adamw", "default")
    with torch.no_grad():
        params[0].data = torch.randn(12, 8)  # resized while it has no gradient: the other parameters step on
    params[0].grad = None
    before = params[1].detach().clone()
    optimizer.step()
    optimizer.step()
    assert not torch.equal(params[1], before)
    params[0].grad = torch.randn(12, 8)
    _unchanged_by_a_refused_step(
        optimizer, params, r"param group 1, parameter 0 \(shape \(12, 8\)\): its state `exp_avg`"
    )


@pytest.mark.parametrize("name", BUILDERS)
def test_a_parameter_reshaped_in_place_after_its_gradient_is_refused(name: str) -> None:
    optimizer, params = _two_groups(name, "default")
    with torch.no_grad():
        params[0].t_()  # (10, 8) -> (8, 10); its gradient stays (10, 8)
    match = r"param group 1, parameter 0 \(shape \(8, 10\)\): its gradient has shape \(10, 8\)"
    _unchanged_by_a_refused_step(optimizer, params, match)


@pytest.mark.parametrize(("saved", "loaded"), [(a, b) for a in BUILDERS for b in BUILDERS if a[:5] != b[:5]])
def test_another_optimizers_state_is_rejected(saved: str, loaded: str) -> None:
    _rejects(loaded, _trained(saved), r"(lacks the hyperparameters|must hold exactly)")


@pytest.mark.parametrize(
    ("value", "error"),
    [(math.nan, "integer >= 0"), (-1.0, "integer >= 0"), (1.5, "integer >= 0"), ("2", "real number"), (True, "real")],
)
def test_a_bad_step_is_rejected(value: Any, error: str) -> None:
    sd = _trained("adamw")
    sd["state"][0]["step"] = torch.tensor(value) if isinstance(value, float) else value
    _rejects("adamw", sd, rf"parameter 0 \(shape \(10, 8\)\), state `step` must be .*{error}")


def test_transformers_int_steps_and_float64_state_load_as_torch_casts_them() -> None:
    sd = _trained("adamw")
    clean = copy.deepcopy(sd)
    for entry in sd["state"].values():
        entry["step"] = int(entry["step"])
        entry["exp_avg"] = entry["exp_avg"].double()
    optimizer = BUILDERS["adamw"](_params())
    optimizer.load_state_dict(sd)
    for p, key in zip(optimizer.param_groups[0]["params"], sorted(clean["state"])):
        assert optimizer.state[p]["exp_avg"].dtype == torch.float32
        assert torch.equal(optimizer.state[p]["exp_avg"], clean["state"][key]["exp_avg"])


@pytest.mark.parametrize("edit", ["int", "float64"])
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", BUILDERS)
def test_a_step_set_by_hand_in_a_live_state_counts_as_a_loaded_one(name: str, path: str, edit: str) -> None:
    # a step written into the state after the optimizer has run (as transformers' code writes it: a Python int, or a
    # tensor of another dtype) is taken as the count at the next step, as the same state loaded from a checkpoint
    saved = _trained(name, path)
    for entry in saved["state"].values():
        entry["step"] = torch.tensor(7.0)
    loaded = BUILDERS[name](_params(), **PATHS[path])
    loaded.load_state_dict(copy.deepcopy(saved))
    edited = BUILDERS[name](_params(), **PATHS[path])
    edited.load_state_dict(copy.deepcopy(saved))
    for p in edited.param_groups[0]["params"]:
        edited.state[p]["step"] = 7 if edit == "int" else torch.tensor(7.0, dtype=torch.float64)
    for optimizer in (loaded, edited):
        gen = torch.Generator().manual_seed(5)
        for p in optimizer.param_groups[0]["params"]:
            p.grad = torch.randn(p.shape, generator=gen)
        optimizer.step()
    for a, b in zip(loaded.param_groups[0]["params"], edited.param_groups[0]["params"]):
        assert torch.equal(a, b)
        assert edited.state[b]["step"].dtype == torch.float32 and float(edited.state[b]["step"]) == 8.0


@pytest.mark.parametrize("key", ["exp_avg_sq", "max_exp_avg_sq"])
def test_a_negative_second_moment_is_rejected(key: str) -> None:
    sd = _trained("adam_weight_decay")
    sd["state"][2][key][3] = -1.0
    _rejects("adam_weight_decay", sd, rf"state `{key}` holds negative values")


@pytest.mark.parametrize("dtype", [torch.int32, torch.bool, torch.complex64])
def test_a_non_floating_state_is_rejected(dtype: torch.dtype) -> None:
    sd = _trained("adafactor")
    sd["state"][0]["exp_avg"] = sd["state"][0]["exp_avg"].to(dtype)
    _rejects("adafactor", sd, r"state `exp_avg` must be a floating-point tensor")


def test_missing_extra_meta_and_unknown_entries_are_rejected() -> None:
    sd = _trained("adafactor")
    del sd["state"][1]["exp_avg_sq_col"]
    _rejects("adafactor", sd, r"missing \['exp_avg_sq_col'\], unexpected \[\]")
    sd = _trained("adafactor")
    sd["state"][2]["momentum_buffer"] = torch.zeros(8)
    _rejects("adafactor", sd, r"unexpected \['momentum_buffer'\]")
    sd = _trained("adafactor")
    sd["state"][0]["exp_avg"] = sd["state"][0]["exp_avg"].to("meta")
    _rejects("adafactor", sd, r"holds no data \(a tensor on the meta device\)")
    sd = _trained("adafactor")
    sd["state"][99] = sd["state"][0]
    _rejects("adafactor", sd, r"entries for parameter ids \[99\]")
    sd = _trained("adafactor")
    sd["param_groups"][0]["params"].pop()
    _rejects("adafactor", sd, r"param group 0 holds 2 parameters in state_dict; this optimizer's group has 3")
    sd = _trained("adafactor")
    sd["param_groups"][0]["lr"] = "fast"
    _rejects("adafactor", sd, r"param group 0 in state_dict: Argument `lr`")


def test_a_checkpoint_without_state_for_a_parameter_starts_it_afresh() -> None:
    sd = _trained("adamw")
    del sd["state"][1]
    optimizer = BUILDERS["adamw"](_params())
    optimizer.load_state_dict(sd)
    assert len(optimizer.state) == 2


def _schedulers() -> dict[str, Callable[[], Any]]:
    def adamw() -> torch.optim.Optimizer:
        return AdamW([torch.nn.Parameter(torch.ones(2))], lr=0.1)

    return {
        "linear": lambda: get_linear_schedule_with_warmup(adamw(), 2, 10),
        "cosine": lambda: get_cosine_schedule_with_warmup(adamw(), 2, 10),
        "plateau": lambda: get_reduce_on_plateau_schedule(adamw()),
        "adafactor": lambda: AdafactorSchedule(Adafactor([torch.nn.Parameter(torch.ones(2))])),
        "create_optimizer": lambda: create_optimizer([torch.nn.Parameter(torch.ones(2))], 1e-3, 10, 2)[1],
    }


@pytest.mark.parametrize(("saved", "loaded"), [(a, b) for a in _schedulers() for b in _schedulers() if a != b])
def test_another_schedulers_state_is_rejected_and_nothing_changes(saved: str, loaded: str) -> None:
    scheduler = _schedulers()[loaded]()
    before = repr(scheduler.state_dict())
    with pytest.raises(
        ValueError, match=r"(another scheduler|is the state of the schedule|must be a dict with the keys)"
    ):
        scheduler.load_state_dict(_schedulers()[saved]().state_dict())
    assert repr(scheduler.state_dict()) == before


@pytest.mark.parametrize(
    ("name", "edit", "match"),
    [
        ("linear", lambda sd: sd["lr_lambdas"][0]["params"].update(num_training_steps=-3), "`num_training_steps`"),
        ("linear", lambda sd: sd.update(last_epoch=2.5), r"\['last_epoch'\] must be an integer >= -1"),
        ("linear", lambda sd: sd.update(base_lrs=[0.1, 0.1]), r"\['base_lrs'\] must be a list of 1"),
        ("cosine", lambda sd: sd.pop("lr_lambdas"), r"missing \['lr_lambdas'\]"),
        ("plateau", lambda sd: sd.update(num_bad_epochs=-1), r"\['num_bad_epochs'\] must be an integer >= 0"),
        ("plateau", lambda sd: sd.update(best="low"), r"\['best'\] must be a real number"),
        ("plateau", lambda sd: sd.update(factor=2.0), r"PlateauLR state_dict: Factor should be < 1.0"),
        ("plateau", lambda sd: sd.update(mode_worse=-math.inf), r"\['mode_worse'\] must be inf"),
        ("adafactor", lambda sd: sd["lr_lambdas"][0].update(value=math.nan), r"\['value'\] must be finite"),
        ("create_optimizer", lambda sd: sd["lr_lambdas"][0]["params"].update(power="x"), "`power`"),
    ],
)
def test_garbled_scheduler_fields_are_rejected_by_name(name: str, edit: Callable[[Any], Any], match: str) -> None:
    scheduler = _schedulers()[name]()
    sd = copy.deepcopy(scheduler.state_dict())
    edit(sd)
    before = repr(scheduler.state_dict())
    with pytest.raises((ValueError, TypeError), match=match):
        scheduler.load_state_dict(sd)
    assert repr(scheduler.state_dict()) == before


@pytest.mark.parametrize("name", list(_schedulers()))
def test_a_schedulers_own_state_loads(name: str) -> None:
    scheduler = _schedulers()[name]()
    scheduler.load_state_dict(copy.deepcopy(scheduler.state_dict()))


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda sd: sd.update(step=-1), r"\['step'\] must be an integer >= 0"),
        (lambda sd: sd.update(step=1.5), r"\['step'\] must be an integer >= 0"),
        (lambda sd: sd.update(gradients=["g", None]), r"must be a list of tensors or None"),
        (lambda sd: sd["gradients"].append(torch.zeros(2)), r"holds 3 slots; this accumulator has 2"),
        (lambda sd: sd["gradients"].__setitem__(0, torch.zeros(3)), r"\[0\] has shape \(3,\); expected \(2, 2\)"),
        (lambda sd: sd.pop("step"), r"must be a dict with 'gradients' and 'step'"),
    ],
)
def test_a_garbled_accumulator_state_is_rejected_and_nothing_changes(edit: Callable[[Any], Any], match: str) -> None:
    from hf_optim_torch import GradientAccumulator

    accumulator = GradientAccumulator()
    accumulator([torch.ones(2, 2), None])
    sd = copy.deepcopy(accumulator.state_dict())
    edit(sd)
    with pytest.raises((ValueError, TypeError), match=match):
        accumulator.load_state_dict(sd)
    assert int(accumulator.step) == 1 and torch.equal(accumulator.gradients[0], torch.ones(2, 2))


def test_a_checkpoint_keyed_by_parameter_names_loads() -> None:
    """torch.distributed.checkpoint hands load_state_dict parameter names instead of numbers."""
    sd = _trained("adamw")
    names = {0: "emb.weight", 1: "w3", 2: "bias"}
    sd["state"] = {names[k]: v for k, v in sd["state"].items()}
    sd["param_groups"][0]["params"] = [names[k] for k in sd["param_groups"][0]["params"]]
    optimizer = BUILDERS["adamw"](_params())
    optimizer.load_state_dict(sd)
    assert len(optimizer.state) == 3


@pytest.mark.parametrize("name", ["adamw", "adafactor", "adam_weight_decay"])
def test_a_state_loads_twice_and_resumes_exactly(name: str) -> None:
    """torch's load adds `differentiable` to `defaults` only (accelerate's prepare reloads once, then a resume
    loads again): the second load must accept the same checkpoint and give the same next step."""
    saved = _trained(name)
    params = _params()
    optimizer = BUILDERS[name](params)
    optimizer.load_state_dict(saved)
    optimizer.load_state_dict(copy.deepcopy(saved))
    reference_params = _params()
    reference = BUILDERS[name](reference_params)
    reference.load_state_dict(copy.deepcopy(saved))
    for p, q in zip(params, reference_params):
        p.grad = torch.full_like(p, 0.25)
        q.grad = torch.full_like(q, 0.25)
    optimizer.step()
    reference.step()
    for p, q in zip(params, reference_params):
        assert torch.equal(p, q)


def test_a_relative_step_adafactor_reloads_the_lr_its_schedule_reports() -> None:
    """AdafactorSchedule writes the lr it reports into group["lr"] (0.0 before the first step); the relative step
    never reads it, so the state loads back; a group lr that is no valid lr is still rejected."""
    params = _params()
    optimizer = Adafactor(params, lr=None, relative_step=True, warmup_init=True)
    schedule = AdafactorSchedule(optimizer)
    optimizer.load_state_dict(optimizer.state_dict())
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()
    schedule.step()
    assert float(optimizer.param_groups[0]["lr"]) > 0.0
    optimizer.load_state_dict(optimizer.state_dict())
    bad = copy.deepcopy(optimizer.state_dict())
    bad["param_groups"][0]["lr"] = -1.0
    with pytest.raises(
        ValueError, match=r"^param group 0 in state_dict: Argument `lr` must be >= 0\. Received: lr=-1\.0"
    ):
        optimizer.load_state_dict(bad)
