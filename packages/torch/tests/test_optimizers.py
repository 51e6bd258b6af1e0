"""Optimizers: every spec case through the public torch API, both code paths, checkpoints, groups, errors."""

from __future__ import annotations

import copy
from typing import Any

import hf_optim_spec
import hf_optim_torch
import numpy as np
import pytest
import torch
from _support import TORCH_DTYPES, api, assert_close, case_params, raises_spec_error, roundtrip, specs
from hf_optim_spec import reference as reference_case

OPTIMIZERS = specs("optimizer")


def _reference(spec: hf_optim_spec.Spec, case: Any) -> dict[str, Any]:
    if "expected" in case:
        return case["expected"]  # type: ignore[no-any-return]
    module = __import__(f"hf_optim_spec.reference.{spec.id}", fromlist=["run_case"])
    return module.run_case(spec.raw, case)  # type: ignore[no-any-return]


def _make(spec: hf_optim_spec.Spec, case: Any, foreach: bool) -> tuple[torch.optim.Optimizer, dict[str, Any], list]:
    params0, grads = reference_case.case_inputs(case)
    dtype = TORCH_DTYPES[reference_case.case_dtype(case)]
    params = {name: torch.nn.Parameter(torch.tensor(value, dtype=dtype)) for name, value in params0.items()}
    optimizer = api(spec)(list(params.items()), foreach=foreach, **case["hyperparams"])
    return optimizer, params, grads


def _set_grads(params: dict[str, torch.nn.Parameter], row: dict[str, Any]) -> None:
    for name, param in params.items():
        grad = row.get(name)
        param.grad = None if grad is None else torch.tensor(grad, dtype=param.dtype)


def _snapshot(params: dict[str, torch.nn.Parameter]) -> dict[str, np.ndarray]:
    return {name: p.detach().to(torch.float64).numpy().copy() for name, p in params.items()}


def _run(spec: hf_optim_spec.Spec, case: Any, foreach: bool) -> tuple[list[dict[str, np.ndarray]], Any, dict]:
    optimizer, params, grads = _make(spec, case, foreach)
    history = []
    for row in grads:
        _set_grads(params, row)
        optimizer.step()
        history.append(_snapshot(params))
    return history, optimizer, params


def _check_state(spec: hf_optim_spec.Spec, optimizer: Any, params: dict, expected: dict, tol: Any) -> None:
    for name, expected_state in expected.items():
        state = optimizer.state.get(params[name], {})
        assert set(expected_state) <= set(state), f"{name}: state keys {sorted(state)} lack {sorted(expected_state)}"
        for key, value in expected_state.items():
            actual = state[key]
            if key == "step":
                assert float(actual) == float(value), f"{name}.step"
            else:
                actual_np = actual.detach().to(torch.float64).numpy() if torch.is_tensor(actual) else actual
                assert_close(actual_np, value, tol, f"{name}.{key}")
        assert set(state) <= set(spec.state), f"{name}: state keys {sorted(state)} not in spec {spec.state}"


# --------------------------------------------------------------------------- every spec case, both paths


@pytest.mark.parametrize("foreach", [False, True], ids=["loop", "foreach"])
@pytest.mark.parametrize(("spec", "case"), list(case_params(OPTIMIZERS)))
def test_optimizer_case(spec: hf_optim_spec.Spec, case: Any, foreach: bool) -> None:
    expected = _reference(spec, case)
    tol = spec.tol(reference_case.case_dtype(case))
    history, optimizer, params = _run(spec, case, foreach)
    assert len(history) == len(expected["params"])
    for step, (actual, wanted) in enumerate(zip(history, expected["params"])):
        for name in wanted:
            assert_close(actual[name], wanted[name], tol, f"step {step} param {name}")
    _check_state(spec, optimizer, params, expected["state"], tol)


@pytest.mark.parametrize(("spec", "case"), list(case_params(OPTIMIZERS)))
def test_foreach_matches_forloop_float64(spec: hf_optim_spec.Spec, case: Any) -> None:
    case = {**case, "dtype": "float64"}
    loop, _, _ = _run(spec, case, foreach=False)
    multi, _, _ = _run(spec, case, foreach=True)
    for step, (a, b) in enumerate(zip(loop, multi)):
        for name in a:
            assert np.array_equal(a[name], b[name]), f"step {step} param {name}: foreach != for-loop"


# --------------------------------------------------------------------------- checkpoints


def _resume_cases() -> list[Any]:
    out = []
    for spec in OPTIMIZERS:
        long_cases = [c for c in spec.cases if c["steps"] >= 6 and c.get("dtype", "float32") in ("float64", "float32")]
        for case in long_cases[:4]:
            out.append(pytest.param(spec, case, id=f"{spec.id}::{case['description']}"))
    return out


@pytest.mark.parametrize(("spec", "case"), _resume_cases())
def test_state_dict_round_trip_mid_training(spec: hf_optim_spec.Spec, case: Any) -> None:
    uninterrupted, _, _ = _run(spec, case, foreach=False)
    stop = case["steps"] // 2
    optimizer, params, grads = _make(spec, case, foreach=False)
    for row in grads[:stop]:
        _set_grads(params, row)
        optimizer.step()
    saved = roundtrip({"optimizer": optimizer.state_dict(), "params": {k: v.detach() for k, v in params.items()}})
    fresh_params = {k: torch.nn.Parameter(v.clone()) for k, v in saved["params"].items()}
    fresh = api(spec)(list(fresh_params.items()), **case["hyperparams"])
    fresh.load_state_dict(saved["optimizer"])
    for step, row in enumerate(grads[stop:], start=stop):
        _set_grads(fresh_params, row)
        fresh.step()
        for name, value in _snapshot(fresh_params).items():
            assert np.array_equal(value, uninterrupted[step][name]), f"step {step} {name}"


def test_adamw_loads_transformers_checkpoint_with_int_step() -> None:
    torch.manual_seed(0)
    weights = torch.randn(3, 4, dtype=torch.float64)
    grads = [torch.randn(3, 4, dtype=torch.float64) for _ in range(6)]
    reference = torch.nn.Parameter(weights.clone())
    ours = hf_optim_torch.AdamW([reference], lr=0.01, weight_decay=0.1)
    for g in grads:
        reference.grad = g
        ours.step()
    # a transformers AdamW checkpoint after 3 steps: same layout, Python int step
    param = torch.nn.Parameter(weights.clone())
    first = hf_optim_torch.AdamW([param], lr=0.01, weight_decay=0.1)
    for g in grads[:3]:
        param.grad = g
        first.step()
    state = first.state_dict()
    state["state"][0]["step"] = 3
    state["param_groups"][0] = {k: v for k, v in state["param_groups"][0].items() if k not in ("maximize", "foreach")}
    resumed_param = torch.nn.Parameter(param.detach().clone())
    resumed = hf_optim_torch.AdamW([resumed_param], lr=0.01, weight_decay=0.1)
    resumed.load_state_dict(state)
    for g in grads[3:]:
        resumed_param.grad = g
        resumed.step()
    assert torch.equal(resumed_param, reference)
    assert torch.is_tensor(resumed.state[resumed_param]["step"])


def test_adafactor_loads_transformers_checkpoint_and_keeps_fp32_state() -> None:
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(4, 6).to(torch.bfloat16))
    optimizer = hf_optim_torch.Adafactor([param], beta1=0.9)
    for _ in range(3):
        param.grad = torch.randn(4, 6).to(torch.bfloat16)
        optimizer.step()
    state = optimizer.state_dict()
    assert state["state"][0]["exp_avg_sq_row"].dtype == torch.float32
    state["state"][0]["step"] = 3  # transformers' int step
    fresh = torch.nn.Parameter(param.detach().clone())
    loaded = hf_optim_torch.Adafactor([fresh], beta1=0.9)
    loaded.load_state_dict(roundtrip(state))
    for key in ("exp_avg", "exp_avg_sq_row", "exp_avg_sq_col", "RMS"):
        assert loaded.state[fresh][key].dtype == torch.float32, key
    grad = torch.randn(4, 6).to(torch.bfloat16)
    param.grad, fresh.grad = grad, grad.clone()
    optimizer.step()
    loaded.step()
    assert torch.equal(param, fresh)


# --------------------------------------------------------------------------- errors


def _optimizer_errors() -> list[Any]:
    return [pytest.param(spec, e, id=f"{spec.id}::{e['description']}") for spec in OPTIMIZERS for e in spec.errors]


@pytest.mark.parametrize(("spec", "error"), _optimizer_errors())
def test_error_case(spec: hf_optim_spec.Spec, error: Any) -> None:
    param = torch.nn.Parameter(torch.zeros(2, 3))
    with raises_spec_error(error):
        api(spec)([("w", param)], **error["params"])


@pytest.mark.parametrize("spec", OPTIMIZERS, ids=lambda s: s.id)
def test_param_group_overrides_are_validated(spec: hf_optim_spec.Spec) -> None:
    optimizer = api(spec)([("w", torch.nn.Parameter(torch.zeros(2)))])
    group_keys = {name: "lr" if name == "learning_rate" else name for name in spec.parameters}
    error = next(
        e
        for e in spec.errors
        if e["error"] == "ValueError"
        and len(e["params"]) == 1
        and next(iter(e["params"])) not in ("clipnorm", "clipvalue", "global_clipnorm")
        and group_keys.get(next(iter(e["params"]))) in optimizer.defaults
    )
    name, value = next(iter(error["params"].items()))
    group_key = group_keys[name]
    with raises_spec_error(error):
        optimizer.add_param_group({"params": [("v", torch.nn.Parameter(torch.zeros(2)))], group_key: value})
    assert len(optimizer.param_groups) == 1


# --------------------------------------------------------------------------- torch conventions


def _quadratic(params: list[torch.nn.Parameter]) -> torch.Tensor:
    return sum(((p - 1.0) ** 2).sum() for p in params)  # type: ignore[return-value]


_CONSTRUCT = {
    "adamw": {"lr": 0.1},
    "adafactor": {"lr": 0.1, "relative_step": False, "scale_parameter": False},
    "adam_weight_decay": {"learning_rate": 0.1},
}


@pytest.mark.parametrize("spec", OPTIMIZERS, ids=lambda s: s.id)
def test_param_groups_and_closure(spec: hf_optim_spec.Spec) -> None:
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(3, 2, dtype=torch.float64))
    b = torch.nn.Parameter(torch.randn(4, dtype=torch.float64))
    kwargs = _CONSTRUCT[spec.id]
    lr_key = "lr"
    optimizer = api(spec)([("a", a)], **kwargs)
    optimizer.add_param_group({"params": [("b", b)], lr_key: 0.0})

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = _quadratic([a, b])
        loss.backward()
        return loss

    a0, b0 = a.detach().clone(), b.detach().clone()
    with torch.no_grad():
        loss = optimizer.step(closure)
    assert loss is not None and loss.grad_fn is not None, "the closure runs with grad enabled"
    assert not torch.equal(a, a0), "the lr=0.1 group moved"
    assert torch.equal(b, b0), "the lr=0 group stays"
    losses = [float(optimizer.step(closure).detach()) for _ in range(30)]
    assert losses[-1] < losses[0]


@pytest.mark.parametrize("spec", OPTIMIZERS, ids=lambda s: s.id)
def test_step_hooks_and_zero_grad(spec: hf_optim_spec.Spec) -> None:
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = api(spec)([("w", param)], **_CONSTRUCT[spec.id])
    calls: list[str] = []
    optimizer.register_step_pre_hook(lambda opt, args, kwargs: calls.append("pre"))
    optimizer.register_step_post_hook(lambda opt, args, kwargs: calls.append("post"))
    param.grad = torch.ones(3)
    optimizer.step()
    optimizer.zero_grad()
    assert calls == ["pre", "post"] and param.grad is None


@pytest.mark.parametrize("spec", [s for s in OPTIMIZERS if s.id != "adam_weight_decay"], ids=lambda s: s.id)
def test_maximize_negates_the_gradient(spec: hf_optim_spec.Spec) -> None:
    a = torch.nn.Parameter(torch.linspace(-1, 1, 6, dtype=torch.float64).reshape(2, 3))
    b = torch.nn.Parameter(a.detach().clone())
    opt_a = api(spec)([a], maximize=True, **_CONSTRUCT[spec.id])
    opt_b = api(spec)([b], **_CONSTRUCT[spec.id])
    grad = torch.linspace(0.5, -2, 6, dtype=torch.float64).reshape(2, 3)
    a.grad, b.grad = grad, -grad
    opt_a.step()
    opt_b.step()
    assert torch.equal(a, b)


def test_adamw_tensor_lr_equals_float_lr() -> None:
    torch.manual_seed(0)
    a = torch.nn.Parameter(torch.randn(5, dtype=torch.float64))
    b = torch.nn.Parameter(a.detach().clone())
    opt_a = hf_optim_torch.AdamW([a], lr=torch.tensor(0.01, dtype=torch.float64), weight_decay=0.1)
    opt_b = hf_optim_torch.AdamW([b], lr=0.01, weight_decay=0.1)
    for _ in range(4):
        g = torch.randn(5, dtype=torch.float64)
        a.grad, b.grad = g, g.clone()
        opt_a.step()
        opt_b.step()
    assert torch.equal(a, b)


def test_adafactor_get_lr_without_proxy_scheduler() -> None:
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3))
    b = torch.nn.Parameter(torch.randn(3))
    optimizer = hf_optim_torch.Adafactor([{"params": [w]}, {"params": [b], "warmup_init": True}])
    proxy = hf_optim_torch.AdafactorSchedule(optimizer, initial_lr=0.25)
    assert optimizer.get_lr() == [None, None]
    assert proxy.get_last_lr() == [0.25, 0.25]
    rms_w = float(torch.linalg.vector_norm(w.detach()) / (w.numel() ** 0.5))
    rms_b = float(torch.linalg.vector_norm(b.detach()) / (b.numel() ** 0.5))
    w.grad, b.grad = torch.randn(4, 3), torch.randn(3)
    optimizer.step()
    proxy.step()
    lrs = [float(lr) for lr in optimizer.get_lr()]
    assert lrs == pytest.approx([max(1e-3, rms_w) * 1e-2, max(1e-3, rms_b) * 1e-6], rel=1e-6)
    assert [float(x) for x in proxy.get_last_lr()] == lrs
    assert hf_optim_torch.get_adafactor_schedule(optimizer).base_lrs == [0.0, 0.0]


def test_adafactor_any_rank_and_low_precision_state() -> None:
    torch.manual_seed(0)
    shapes = [(5,), (4, 3), (2, 3, 4), (2, 2, 3, 5)]
    params = [torch.nn.Parameter(torch.randn(*s).to(torch.bfloat16)) for s in shapes]
    optimizer = hf_optim_torch.Adafactor(params, beta1=0.9)
    for p in params:
        p.grad = torch.randn(p.shape).to(torch.bfloat16)
    optimizer.step()
    for p, shape in zip(params, shapes):
        state = optimizer.state[p]
        if len(shape) >= 2:
            assert state["exp_avg_sq_row"].shape == shape[:-1]
            assert state["exp_avg_sq_col"].shape == shape[:-2] + shape[-1:]
            assert "exp_avg_sq" not in state
        else:
            assert state["exp_avg_sq"].shape == shape
        assert all(v.dtype == torch.float32 for k, v in state.items() if k != "step")
        assert p.dtype == torch.bfloat16


def test_adam_weight_decay_patterns_match_parameter_names() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.LayerNorm(3))
    optimizer = hf_optim_torch.AdamWeightDecay(
        model.named_parameters(), learning_rate=0.1, weight_decay_rate=0.5, exclude_from_weight_decay=["bias", "^1\\."]
    )
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    optimizer.step()  # zero gradients: only the decay moves a parameter
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {"0.weight"}
    # parameters without a gradient: each of the others keeps its own flag (the excluded 1.weight stays put)
    model[0].weight.grad = model[0].bias.grad = None
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == set(), moved
    model[1].bias.grad = None
    model[0].weight.grad = torch.zeros_like(model[0].weight)
    optimizer.step()
    moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert moved == {"0.weight"}, moved
    with pytest.raises(ValueError, match="parameter names"):
        hf_optim_torch.AdamWeightDecay(model.parameters(), weight_decay_rate=0.1, exclude_from_weight_decay=["bias"])
    grouped = hf_optim_torch.AdamWeightDecay(
        [{"params": list(model.parameters()), "names": [n for n, _ in model.named_parameters()]}],
        weight_decay_rate=0.1,
        include_in_weight_decay=["weight"],
    )
    assert grouped.param_groups[0]["param_names"][0] == "0.weight"


def test_adam_weight_decay_needs_one_name_per_parameter() -> None:
    """A group with fewer names than parameters is refused when added, and at a step (names edited since) before any
    group changes; before, the parameters past the last name were silently never stepped."""
    a, b, c = (torch.nn.Parameter(torch.ones(2)) for _ in range(3))
    with pytest.raises(ValueError, match="3 parameters and 2 'param_names'"):
        hf_optim_torch.AdamWeightDecay([{"params": [a, b, c], "names": ["a", "b"]}], weight_decay_rate=0.1)
    optimizer = hf_optim_torch.AdamWeightDecay([("a", a)], weight_decay_rate=0.1)
    with pytest.raises(ValueError, match="2 parameters and 1 'param_names'"):
        optimizer.add_param_group({"params": [b, c], "param_names": ["b"]})
    assert len(optimizer.param_groups) == 1
    optimizer.add_param_group({"params": [b, c], "param_names": ["b", "c"]})
    optimizer.param_groups[1]["param_names"].pop()  # edited by hand after the group was added
    for p in (a, b, c):
        p.grad = torch.ones(2)
    with pytest.raises(ValueError, match="2 parameters and 1 'param_names'"):
        optimizer.step()
    assert all(torch.equal(p, torch.ones(2)) for p in (a, b, c)) and not optimizer.state


def test_adam_weight_decay_step_is_optimizer_wide() -> None:
    a, b = torch.nn.Parameter(torch.ones(2)), torch.nn.Parameter(torch.ones(2))
    optimizer = hf_optim_torch.AdamWeightDecay([("a", a), ("b", b)])
    a.grad = torch.ones(2)
    optimizer.step()
    b.grad = torch.ones(2)
    optimizer.step()
    assert float(optimizer.state[a]["step"]) == float(optimizer.state[b]["step"]) == 2.0


def test_optimizers_deepcopy_and_pickle() -> None:
    import pickle

    for spec in OPTIMIZERS:
        param = torch.nn.Parameter(torch.ones(2, 2))
        optimizer = api(spec)([("w", param)], **_CONSTRUCT[spec.id])
        param.grad = torch.ones(2, 2)
        optimizer.step()
        clone = copy.deepcopy(optimizer)
        assert clone.state_dict()["param_groups"] == optimizer.state_dict()["param_groups"]
        again = pickle.loads(pickle.dumps(optimizer))
        assert type(again) is type(optimizer)


# --------------------------------------------------------------------------- the default fast path


def _twin_runs(factory, dtype, **kwargs):
    torch.manual_seed(0)
    w0, grads = torch.randn(6, 5, dtype=dtype), [torch.randn(6, 5, dtype=dtype) for _ in range(12)]
    results = []
    for extra in ({}, {"foreach": False}):
        w = torch.nn.Parameter(w0.clone())
        optimizer = factory([w], **kwargs, **extra)
        for g in grads:
            w.grad = g.clone()
            optimizer.step()
        results.append(w.detach().double())
    return results


@pytest.mark.parametrize(
    ("factory", "kwargs", "spec_id"),
    [
        (hf_optim_torch.AdamW, {"lr": 1e-2, "weight_decay": 0.1}, "adamw"),
        (hf_optim_torch.AdamWeightDecay, {"learning_rate": 1e-2, "weight_decay_rate": 0.1}, "adam_weight_decay"),
        (hf_optim_torch.Adafactor, {}, "adafactor"),
    ],
)
def test_the_default_float32_path_is_fused_and_within_the_spec_tolerance(monkeypatch, factory, kwargs, spec_id):
    calls = []
    real = torch._fused_adamw_
    monkeypatch.setattr(torch, "_fused_adamw_", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    fused, exact = _twin_runs(factory, torch.float32, **kwargs)
    if spec_id != "adafactor":  # Adafactor's fast path is its own blocked kernel, not torch's AdamW kernel
        assert calls, "the default float32 step did not take torch's fused kernel"
    tol = hf_optim_spec.get(spec_id).tol("float32")
    torch.testing.assert_close(fused, exact, rtol=tol.rtol, atol=tol.atol)


def test_fused_adafactor_is_exact_under_reduced_float32_matmul_precision() -> None:
    """Adafactor's fast path makes no BLAS call, so bf16/TF32 matmul settings (fast on AMX CPUs) cannot reach it."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        torch.manual_seed(0)
        w0, grads = torch.randn(128, 96), [torch.randn(128, 96) for _ in range(12)]
        results = []
        for extra in ({}, {"foreach": False}):
            w = torch.nn.Parameter(w0.clone())
            optimizer = hf_optim_torch.Adafactor([w], **extra)
            for g in grads:
                w.grad = g.clone()
                optimizer.step()
            results.append(w.detach().double())
    finally:
        torch.set_float32_matmul_precision(previous)
    tol = hf_optim_spec.get("adafactor").tol("float32")
    torch.testing.assert_close(results[0], results[1], rtol=tol.rtol, atol=tol.atol)


def test_fused_true_refuses_what_it_cannot_run():
    w = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="cannot both be True"):
        hf_optim_torch.AdamW([w], fused=True, foreach=True)
    optimizer = hf_optim_torch.AdamW([w], fused=True)
    w.grad = torch.ones(3, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"fused=True cannot step parameter 0: .*float64"):
        optimizer.step()


@pytest.mark.parametrize("factory", [hf_optim_torch.AdamW, hf_optim_torch.AdamWeightDecay], ids=lambda f: f.__name__)
def test_fused_true_rejects_a_later_group_before_stepping_any(factory: Any) -> None:
    """A parameter the fused kernel cannot take, in the second group, leaves the first group untouched."""
    first = torch.nn.Parameter(torch.ones(4))
    later = torch.nn.Parameter(torch.ones(4, dtype=torch.float64))
    optimizer = factory([{"params": [first]}, {"params": [later]}], fused=True)
    first.grad, later.grad = torch.ones(4), torch.ones(4, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="cannot step parameter 1"):
        optimizer.step()
    assert torch.equal(first.detach(), torch.ones(4)) and not optimizer.state
    later.data, later.grad = later.data.float(), later.grad.float()  # now it can: fp32 fused step runs
    optimizer.step()
    assert not torch.equal(first.detach(), torch.ones(4))


def test_bfloat16_adamw_keeps_transformers_numerics_by_default():
    """The default path on bf16 is the exact one (per-op bf16 rounding), not the fp32-math kernel."""
    fused_default, exact = _twin_runs(hf_optim_torch.AdamW, torch.bfloat16, lr=1e-2)
    assert torch.equal(fused_default, exact)
