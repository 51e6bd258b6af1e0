"""Schedules: every spec case and error through the public torch API, resume, pickling, get_scheduler."""

from __future__ import annotations

import copy
import inspect
import pickle
from typing import Any

import hf_optim_spec
import hf_optim_torch
import pytest
import torch
from _support import (
    api,
    assert_close,
    case_params,
    is_missing_argument_error,
    materialize,
    missing_argument_name,
    raises_spec_error,
    reference_schedule,
    roundtrip,
    specs,
)
from hf_optim_torch import GreedyLR, PlateauLR, SchedulerType, SpecFactor, SpecFactorLR, build_schedule, get_scheduler
from torch.optim.lr_scheduler import LambdaLR, ReduceLROnPlateau

FACTOR = specs("schedule", stateful=False, output="factor")
ABSOLUTE = specs("schedule", stateful=False, output="lr")
STATEFUL = specs("schedule", stateful=True)


def _optimizer(base_lr: float | None, group_lrs: list[float] | tuple[float, ...] = ()) -> torch.optim.Optimizer:
    groups: list[dict[str, Any]] = [{"params": [torch.nn.Parameter(torch.zeros(2))]}]
    groups += [{"params": [torch.nn.Parameter(torch.zeros(2))], "lr": lr} for lr in group_lrs]
    return torch.optim.SGD(groups, lr=0.0 if base_lr is None else base_lr)


def _factor_scheduler(spec: hf_optim_spec.Spec, case: Any, optimizer: torch.optim.Optimizer) -> LambdaLR:
    """The case's scheduler; a case that declares ``warns`` must warn it (once), the others nothing."""
    params = {k: materialize(v) for k, v in case["params"].items()}
    if "warns" not in case:
        return api(spec)(optimizer, **params)
    with pytest.warns(UserWarning, match=case["warns"]) as caught:
        scheduler = api(spec)(optimizer, **params)
    assert len(caught) == 1, [str(w.message) for w in caught]
    return scheduler


def _expected_factors(spec: hf_optim_spec.Spec, case: Any) -> list[float]:
    if case.get("expected"):
        return list(case["expected"])
    bound = reference_schedule(spec, case["params"], case.get("base_lr"))
    return [bound(s) for s in case["steps"]]


def _walk(optimizer: torch.optim.Optimizer, scheduler: Any, upto: int, start: int = 0) -> list[list[float]]:
    """Group lrs at steps start..upto (the scheduler is at ``start`` on entry)."""
    out = []
    for step in range(start, upto + 1):
        out.append([float(g["lr"]) for g in optimizer.param_groups])
        if step < upto:
            optimizer.step()
            scheduler.step()
    return out


def _lrs_at(optimizer: torch.optim.Optimizer, scheduler: Any, steps: list[int]) -> dict[int, list[float]]:
    """Group lrs at each of ``steps``: stepped one by one, jumping over long gaps (closed-form schedules)."""
    out: dict[int, list[float]] = {}
    current = scheduler.last_epoch
    for target in sorted(set(steps)):
        if target - current > 64:
            scheduler.last_epoch = target - 1
            current = target - 1
        while current < target:
            optimizer.step()
            scheduler.step()
            current += 1
        out[target] = [float(g["lr"]) for g in optimizer.param_groups]
    return out


# --------------------------------------------------------------------------- every spec case


@pytest.mark.parametrize(("spec", "case"), list(case_params(FACTOR)))
def test_factor_case(spec: hf_optim_spec.Spec, case: Any) -> None:
    group_lrs = case.get("group_lrs", [])
    optimizer = _optimizer(case.get("base_lr", 1.0), group_lrs)
    scheduler = _factor_scheduler(spec, case, optimizer)
    assert isinstance(scheduler, LambdaLR)
    lrs = _lrs_at(optimizer, scheduler, case["steps"])
    factors = _expected_factors(spec, case)
    initial = [case.get("base_lr", 1.0), *group_lrs]
    for step, factor in zip(case["steps"], factors):
        assert_close(lrs[step], [lr * factor for lr in initial], spec.tol("float64"), f"step {step}")


def _absolute_values(spec: hf_optim_spec.Spec, params: Any, steps: list[int]) -> list[float] | None:
    """The values of an "lr" schedule through its public torch API (None when the API takes other inputs)."""
    target = api(spec)
    if isinstance(target, type) and issubclass(target, SpecFactor):  # WarmUp, PolynomialDecay
        schedule = target(**{k: materialize(v) for k, v in params.items()})
        return [schedule(s) for s in steps]
    if target is hf_optim_torch.create_optimizer:
        named = [("dense.weight", torch.nn.Parameter(torch.zeros(2)))]
        optimizer, scheduler = target(named, **params)
        lrs = _lrs_at(optimizer, scheduler, steps)
        return [lrs[s][0] for s in steps]
    if spec.id == "adafactor_relative_step":  # the lr the optimizer itself computes (Adafactor._get_lr);
        # the public factory get_adafactor_relative_step_schedule is checked by the conformance suite
        p = hf_optim_spec.validate(spec, params)
        group = {
            "lr": p["lr"],
            "eps": (1e-30, p["eps2"]),
            "relative_step": p["relative_step"],
            "warmup_init": p["warmup_init"],
            "scale_parameter": p["scale_parameter"],
        }
        state = {"RMS": torch.tensor(p["rms"], dtype=torch.float64)}
        return [
            float(hf_optim_torch.Adafactor._get_lr(group, {**state, "step": torch.tensor(float(s))})) for s in steps
        ]
    return None


@pytest.mark.parametrize(("spec", "case"), list(case_params(ABSOLUTE)))
def test_absolute_case(spec: hf_optim_spec.Spec, case: Any) -> None:
    expected = _expected_factors(spec, case)
    values = _absolute_values(spec, case["params"], list(case["steps"]))
    assert values is not None, f"no public API adapter for {spec.api['torch']}"
    assert_close(values, expected, spec.tol("float64"), spec.id)
    # the same values through an optimizer (SpecLR sets the absolute lr)
    optimizer = _optimizer(1.0)
    scheduler = build_schedule(spec.id, optimizer, case["params"])
    lrs = _lrs_at(optimizer, scheduler, case["steps"])
    assert_close([lrs[s][0] for s in case["steps"]], expected, spec.tol("float64"), f"{spec.id} via SpecLR")


@pytest.mark.parametrize(("spec", "case"), list(case_params(STATEFUL)))
def test_stateful_case(spec: hf_optim_spec.Spec, case: Any) -> None:
    optimizer = _optimizer(case.get("base_lr", 1.0), case.get("group_lrs", []))
    scheduler = api(spec)(optimizer, **case["params"])
    assert isinstance(scheduler, ReduceLROnPlateau)
    lrs = []
    for metric in case["metrics"]:
        optimizer.step()
        scheduler.step(metric)
        lrs.append(optimizer.param_groups[0]["lr"])
    if case.get("expected"):
        expected = list(case["expected"])
    else:
        from hf_optim_spec.reference import run_stateful

        validated = hf_optim_spec.validate(spec, case["params"], framework="torch")
        base_lrs = [case.get("base_lr", 1.0), *case.get("group_lrs", [])]
        expected = run_stateful(spec.id, validated, base_lrs, case["metrics"])[0]
    assert_close(lrs, expected, spec.tol("float64"), spec.id)


# --------------------------------------------------------------------------- resume, pickling, weights_only


@pytest.mark.parametrize(("spec", "case"), list(case_params(FACTOR)))
def test_resume_reproduces_sequence(spec: hf_optim_spec.Spec, case: Any) -> None:
    base_lr, group_lrs = case.get("base_lr", 1.0), case.get("group_lrs", [])
    horizon = min(max(case["steps"]) + 2, 40)
    optimizer = _optimizer(base_lr, group_lrs)
    uninterrupted = _walk(optimizer, _factor_scheduler(spec, case, optimizer), horizon)
    for stop in sorted({0, 1, horizon // 2, horizon - 1, *[s for s in case["steps"] if s < horizon]}):
        optimizer = _optimizer(base_lr, group_lrs)
        scheduler = _factor_scheduler(spec, case, optimizer)
        _walk(optimizer, scheduler, stop)
        saved = roundtrip({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()})
        fresh_optimizer = _optimizer(base_lr, group_lrs)
        fresh = _factor_scheduler(spec, case, fresh_optimizer)
        fresh.load_state_dict(saved["scheduler"])
        fresh_optimizer.load_state_dict(saved["optimizer"])
        resumed = _walk(fresh_optimizer, fresh, horizon, start=stop)
        assert resumed == uninterrupted[stop:], f"resume at {stop}"


@pytest.mark.parametrize("spec", FACTOR, ids=lambda s: s.id)
def test_scheduler_pickles_and_deepcopies(spec: hf_optim_spec.Spec) -> None:
    case = spec.cases[0]
    optimizer = _optimizer(case.get("base_lr", 1.0))
    scheduler = _factor_scheduler(spec, case, optimizer)
    factor = scheduler.lr_lambdas[0]
    assert isinstance(factor, SpecFactor)
    steps = list(case["steps"])
    for clone in (pickle.loads(pickle.dumps(factor)), copy.deepcopy(factor)):
        assert clone == factor
        assert [clone(s) for s in steps] == [factor(s) for s in steps]
    copied = copy.deepcopy(scheduler)
    assert copied.state_dict() == scheduler.state_dict()
    state = roundtrip(scheduler.state_dict())  # weights_only=True
    assert state["lr_lambdas"][0] == factor.__dict__


def test_load_state_dict_rebinds_changed_params() -> None:
    optimizer = _optimizer(0.1)
    source = hf_optim_torch.get_linear_schedule_with_warmup(optimizer, 2, 10)
    target = hf_optim_torch.get_linear_schedule_with_warmup(_optimizer(0.1), 4, 20)
    before = target.lr_lambdas[0](3)
    target.load_state_dict(source.state_dict())
    assert target.lr_lambdas[0](3) == source.lr_lambdas[0](3) != before


def test_last_epoch_resumes_like_transformers() -> None:
    optimizer = _optimizer(0.1)
    uninterrupted = _walk(optimizer, hf_optim_torch.get_cosine_schedule_with_warmup(optimizer, 3, 12), 8)
    optimizer = _optimizer(0.1)
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]
    resumed = hf_optim_torch.get_cosine_schedule_with_warmup(optimizer, 3, 12, last_epoch=4)
    assert resumed.last_epoch == 5
    assert _walk(optimizer, resumed, 8, start=5) == uninterrupted[5:]


def test_tensor_lr_is_filled_in_place() -> None:
    lr = torch.tensor(0.1)
    param = torch.nn.Parameter(torch.zeros(2))
    optimizer = hf_optim_torch.AdamW([param], lr=lr)
    scheduler = hf_optim_torch.get_linear_schedule_with_warmup(optimizer, 2, 10)
    group_lr = optimizer.param_groups[0]["lr"]
    assert isinstance(group_lr, torch.Tensor)
    for _ in range(3):
        param.grad = torch.ones(2)
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] is group_lr
    assert float(group_lr) == pytest.approx(0.1 * scheduler.lr_lambdas[0](3))


# --------------------------------------------------------------------------- errors


def _error_params(spec_list: list[hf_optim_spec.Spec]) -> list[Any]:
    return [
        pytest.param(spec, error, id=f"{spec.id}::{error['description']}")
        for spec in spec_list
        for error in spec.errors
    ]


@pytest.mark.parametrize(("spec", "error"), _error_params(FACTOR + STATEFUL + ABSOLUTE))
def test_error_case(spec: hf_optim_spec.Spec, error: Any) -> None:
    optimizer = _optimizer(error.get("base_lr", 0.1))
    params = {k: materialize(v) for k, v in error["params"].items()}
    with raises_spec_error(error):
        build_schedule(spec.id, optimizer, params)
    # the public factory raises the same type; Python itself reports a missing positional argument
    target = api(spec)
    if spec.output == "factor" or spec.stateful:
        call = lambda: target(optimizer, **params)  # noqa: E731
    elif isinstance(target, type) and issubclass(target, SpecFactor):
        call = lambda: target(**params)  # noqa: E731
    elif target is hf_optim_torch.create_optimizer:
        call = lambda: target([torch.nn.Parameter(torch.zeros(2))], **params)  # noqa: E731
    else:
        return  # AdafactorSchedule: the constructor takes the optimizer; Adafactor's own errors are tested there
    if is_missing_argument_error(error) or error["match"].startswith("Unknown argument"):
        with pytest.raises(TypeError, match=missing_argument_name(error).split("/")[0]):
            call()
    else:
        with raises_spec_error(error):
            call()


# --------------------------------------------------------------------------- signatures, SchedulerType, get_scheduler


@pytest.mark.parametrize("spec", FACTOR + STATEFUL, ids=lambda s: s.id)
def test_factory_signature_matches_spec(spec: hf_optim_spec.Spec) -> None:
    signature = inspect.signature(api(spec))
    names = list(signature.parameters)
    assert names[0] == "optimizer"
    if spec.stateful:
        assert signature.parameters[names[-1]].kind is inspect.Parameter.VAR_KEYWORD
        return
    assert "last_epoch" in names
    assert signature.parameters["last_epoch"].default == -1
    for name, param in spec.parameters.items():
        assert name in signature.parameters, name
        declared = signature.parameters[name]
        if param.required:
            assert declared.default is inspect.Parameter.empty, name
        else:
            assert declared.default == param.default, name
        if param.extension:
            assert declared.kind is inspect.Parameter.KEYWORD_ONLY, name
    assert api(spec).__doc__ and spec.summary in api(spec).__doc__


def test_scheduler_type_covers_registry() -> None:
    expected = {
        name.split(".", 1)[1]: spec.id
        for spec in hf_optim_spec.registry().values()
        for name in spec.hf_name
        if name.startswith("SchedulerType.")
    }
    assert {m.name: m.value for m in SchedulerType} == expected
    assert SchedulerType("cosine") is SchedulerType.COSINE
    assert SchedulerType.COSINE == "cosine"
    assert pickle.loads(pickle.dumps(SchedulerType.COSINE)) is SchedulerType.COSINE
    with pytest.raises(ValueError, match="is not a valid SchedulerType"):
        SchedulerType("cosinus")


@pytest.mark.parametrize("kind", list(SchedulerType), ids=lambda k: k.value)
def test_get_scheduler_rules(kind: Any) -> None:
    spec = hf_optim_spec.get(kind.value)
    case = spec.cases[0]
    params = dict(case["params"])
    warmup = params.pop("num_warmup_steps", None)
    training = params.pop("num_training_steps", None)
    optimizer = _optimizer(case.get("base_lr", 0.1))
    scheduler = get_scheduler(kind.value, optimizer, warmup, training, params or None)
    # transformers returns these classes; ours are subclasses whose load_state_dict checks the state first
    assert type(scheduler) is {"reduce_lr_on_plateau": PlateauLR, "greedy": GreedyLR}.get(spec.id, SpecFactorLR)
    assert isinstance(scheduler, ReduceLROnPlateau if spec.stateful else LambdaLR)
    if not spec.stateful:
        direct = _factor_scheduler(spec, case, _optimizer(case.get("base_lr", 0.1)))
        assert scheduler.lr_lambdas[0] == direct.lr_lambdas[0]
    for count in ("num_warmup_steps", "num_training_steps"):
        param = spec.parameters.get(count)
        if param is None or not param.required or spec.stateful:
            continue
        args = {"num_warmup_steps": warmup, "num_training_steps": training, count: None}
        with pytest.raises(
            ValueError, match=f"^SchedulerType.{kind.name} requires `{count}`, please provide that argument.$"
        ):
            get_scheduler(kind, _optimizer(0.1), **args, scheduler_specific_kwargs=params)
    with pytest.raises(TypeError, match="Unknown argument `not_an_argument`"):
        get_scheduler(kind, _optimizer(0.1), warmup, training, {**params, "not_an_argument": 1})


def test_get_scheduler_forwards_kwargs() -> None:
    optimizer = _optimizer(0.1)
    scheduler = get_scheduler("cosine", optimizer, 2, 10, {"num_cycles": 2.0})
    assert scheduler.lr_lambdas[0].params["num_cycles"] == 2.0
    scheduler = get_scheduler(SchedulerType.INVERSE_SQRT, _optimizer(0.1), 3, None, {"timescale": 7})
    assert scheduler.lr_lambdas[0].params["timescale"] == 7
    plateau = get_scheduler("reduce_lr_on_plateau", _optimizer(0.1), scheduler_specific_kwargs={"patience": 3})
    assert plateau.patience == 3
    with pytest.raises(ValueError, match="is not a valid SchedulerType"):
        get_scheduler("nope", optimizer)
