"""Every spec case and error of every schedule, optimizer and accumulator (from the registry)."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Mapping
from typing import Any

import hf_optim_spec as hs
import hf_optim_tf
import keras
import numpy as np
import pytest
from _tf_helpers import BACKEND, EXACT, assert_close, floatx, traced, ulps32

REGISTRY = hs.registry()


def _cases(kind: str, *, stateful: bool | None = None) -> list[Any]:
    out = []
    for spec in REGISTRY.values():
        if spec.kind != kind or (stateful is not None and spec.stateful != stateful):
            continue
        for index, case in enumerate(spec.cases):
            out.append(pytest.param(spec, case, id=f"{spec.id}::{index}::{case.get('description', '')}"))
    return out


def _errors() -> list[Any]:
    return [
        pytest.param(spec, error, id=f"{spec.id}::{error['description']}")
        for spec in REGISTRY.values()
        for error in spec.errors
    ]


def _api(spec: hs.Spec) -> Any:
    return getattr(hf_optim_tf, spec.api["tf"])


def _materialize(value: Any) -> Any:
    """A case value ``{"schedule": id, "params": {...}}`` becomes the Keras schedule it names."""
    if isinstance(value, Mapping) and "schedule" in value:
        nested = hs.get(value["schedule"])
        return _build_schedule(nested, {k: _materialize(v) for k, v in value["params"].items()}, None)
    if isinstance(value, Mapping):
        return {k: _materialize(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return list(value)
    return value


def _build_schedule(spec: hs.Spec, params: Mapping[str, Any], base_lr: float | None) -> Any:
    """The public Keras object for a schedule spec: factory(learning_rate, **params) for factor
    schedules, the class or function of ``api.tf`` for absolute-lr ones (create_optimizer returns
    ``(optimizer, schedule)``)."""
    api = _api(spec)
    built = api(base_lr, **params) if spec.output == "factor" or spec.stateful else api(**params)
    return built[1] if isinstance(built, tuple) else built


def _reference_bound(spec: hs.Spec, raw_params: Mapping[str, Any], base_lr: float | None) -> Any:
    """The float64 evaluator of the spec (nested schedules as their own float64 evaluators)."""
    params = {
        k: _reference_bound(hs.get(v["schedule"]), v["params"], None)
        if isinstance(v, Mapping) and "schedule" in v
        else (list(v) if isinstance(v, tuple) else v)
        for k, v in raw_params.items()
    }
    resolved = hs.validate(spec, params, framework="tf", base_lr=base_lr)
    resolved = {k: (None if spec.parameters[k].type == "string_list" else v) for k, v in resolved.items()}
    return spec.program.bind(resolved, base_lr=1.0 if base_lr is None else base_lr)


def _reference(spec: hs.Spec, raw_params: Mapping[str, Any], base_lr: float | None, steps: list[int]) -> list[float]:
    scale = base_lr if spec.output == "factor" else 1.0
    bound = _reference_bound(spec, raw_params, base_lr)
    return [scale * bound(step) for step in steps]


# --------------------------------------------------------------------------- schedules


@pytest.mark.parametrize(("spec", "case"), _cases("schedule", stateful=False))
def test_schedule_case(spec: hs.Spec, case: Mapping[str, Any]) -> None:
    if "warns" not in case:
        _check_schedule_case(spec, case)
        return
    with pytest.warns(UserWarning, match=case["warns"]):  # a spec UserWarning rule: building must warn it
        _check_schedule_case(spec, case)


def _check_schedule_case(spec: hs.Spec, case: Mapping[str, Any]) -> None:
    params = {k: _materialize(v) for k, v in case["params"].items()}
    base_lr = case.get("base_lr", 0.1) if spec.output == "factor" else None
    steps = list(case["steps"])
    want = _reference(spec, case["params"], base_lr, steps)
    if case.get("expected"):
        scale = base_lr if spec.output == "factor" else 1.0
        tol = spec.tol("float64")
        assert_close(want, [scale * e for e in case["expected"]], tol.rtol, tol.atol, "spec vectors vs evaluator")
    schedule = _build_schedule(spec, params, base_lr)
    call = traced(schedule.__call__)
    got = [float(call(keras.ops.convert_to_tensor(step, "int64"))) for step in steps]
    tol32 = spec.tol("float32")
    assert_close(got, want, tol32.rtol, tol32.atol, "float32")
    if EXACT:  # JAX without x64 evaluates the float64 formula in float32: within tolerance, not bit for bit
        # bit for bit with the float64 value rounded once to float32 (what torch's optimizer sees)
        assert max(ulps32(a, b) for a, b in zip(got, want)) == 0, (got, want)
    assert [float(schedule(step)) for step in steps[:2]] == got[:2]  # eager == traced
    if not EXACT:
        return
    with floatx("float64"):
        # eager: Grappler's graph rewrites may move a float64 result by an ulp (float32 never)
        schedule64 = _build_schedule(spec, params, base_lr)
        tol64 = spec.tol("float64")
        assert_close([float(schedule64(step)) for step in steps], want, tol64.rtol, tol64.atol, "float64")


@pytest.mark.parametrize(("spec", "case"), _cases("schedule", stateful=True))
def test_stateful_schedule_case(spec: hs.Spec, case: Mapping[str, Any]) -> None:
    from hf_optim_spec.reference import run_stateful

    if case.get("group_lrs"):
        pytest.skip("several param groups: a Keras optimizer has one learning rate (torch runs the case)")
    base_lr = case.get("base_lr", 0.1)
    params = {k: _materialize(v) for k, v in case["params"].items()}
    resolved = hs.validate(spec, params, framework="tf", base_lr=base_lr)
    want = run_stateful(spec.id, resolved, [base_lr], list(case["metrics"]))[0]
    if case.get("expected"):
        assert_close(want, case["expected"], 0, 0, "spec vectors vs reference")
    schedule = _build_schedule(spec, params, base_lr)
    got = [schedule.step(metric) for metric in case["metrics"]]
    assert got == want  # Python floats, same operations
    stored = [float(schedule(0))]
    assert stored == [float(np.float32(want[-1]))] if keras.config.floatx() == "float32" else stored
    revived = type(schedule).from_config(schedule.get_config())
    assert revived.get_config() == schedule.get_config()


# --------------------------------------------------------------------------- errors


def _call_for_error(spec: hs.Spec, params: Mapping[str, Any], base_lr: float | None) -> None:
    if spec.kind == "schedule":
        _build_schedule(spec, params, base_lr if base_lr is not None else 0.1)
    elif spec.kind == "optimizer":
        _api(spec)(**_tf_spelling(spec, params))
    else:
        _api(spec)(**params)


def _tf_match(spec: hs.Spec, pattern: str) -> str:
    """The spec's message regex with canonical argument names spelled the Keras way."""
    for name, param in spec.parameters.items():
        alias = param.name_for("tf")
        if isinstance(alias, str) and alias != name:
            pattern = re.sub(rf"(?<![\w`]){name}(?=[=\W])|`{name}`", lambda m: m.group(0).replace(name, alias), pattern)
    return pattern


@pytest.mark.parametrize(("spec", "error"), _errors())
def test_error_case(spec: hs.Spec, error: Mapping[str, Any]) -> None:
    params = {k: _materialize(v) for k, v in error["params"].items()}
    for name, value in params.items():
        param = spec.parameters.get(name)
        if (
            param is not None
            and isinstance(param.name_for("tf"), tuple)
            and not (isinstance(value, (list, tuple)) and len(value) == 2)
        ):
            pytest.skip(f"`{name}` is two Keras arguments {param.name_for('tf')}; a non-pair has no Keras spelling")
    expected_type = {"ValueError": ValueError, "TypeError": TypeError, "NotImplementedError": NotImplementedError}[
        error["error"]
    ]
    with pytest.raises(expected_type) as info:
        _call_for_error(spec, params, error.get("base_lr"))
    message = str(info.value)
    python_level = re.match(r"\^?(?:Missing required|Unknown) argument `(\w+)`", error["match"])
    if python_level and re.search(r"required (positional|keyword-only) argument|unexpected keyword argument", message):
        # Python rejects the call before the spec check runs (as it does for transformers); it
        # names the same argument.
        assert f"'{python_level.group(1)}'" in message, message
        return
    # Generated per-argument messages name the argument as the Keras user spelled it; constraint
    # messages are transformers' text, verbatim.
    assert re.search(_tf_match(spec, error["match"]), message) or re.search(error["match"], message), message


# --------------------------------------------------------------------------- optimizers


def _tf_spelling(spec: hs.Spec, canonical: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in canonical.items():
        param = spec.parameters.get(name)
        alias = param.name_for("tf") if param is not None else name
        if isinstance(alias, tuple):
            out[alias[0]], out[alias[1]] = value
        else:
            out[alias] = list(value) if isinstance(value, tuple) else value
    return out


@pytest.mark.parametrize(("spec", "case"), _cases("optimizer"))
def test_optimizer_case(spec: hs.Spec, case: Mapping[str, Any]) -> None:
    import importlib

    reference = importlib.import_module(f"hf_optim_spec.reference.{spec.id}")
    dtype = case.get("dtype", "float32")
    expected = case.get("expected") or reference.run_case(spec.raw, case)
    params0, grads = reference.case_inputs(case) if hasattr(reference, "case_inputs") else _inputs(case)
    tol = spec.tol(dtype)
    kwargs = _tf_spelling(spec, dict(case.get("hyperparams", {})))
    if dtype == "float64" and not EXACT:
        pytest.skip(f"float64 case: float64 is exact on the TensorFlow backend only (here {BACKEND})")
    with floatx("float64" if dtype == "float64" else "float32"):
        optimizer = _api(spec)(**kwargs)
        variables = {}
        for name, value in params0.items():
            *scopes, leaf = name.split("/")
            with contextlib.ExitStack() as stack:
                for scope in scopes:  # the variable's path is the spec's parameter name
                    stack.enter_context(keras.name_scope(scope))
                variables[name] = keras.Variable(keras.ops.cast(np.asarray(value, np.float64), dtype), name=leaf)
            assert variables[name].path == name
        optimizer.build(list(variables.values()))
        steppers: dict[tuple[str, ...], Any] = {}  # one traced step per set of present gradients

        def stepper(names: tuple[str, ...]) -> Any:
            if names not in steppers:
                steppers[names] = traced(lambda gs: optimizer.apply(gs, [variables[n] for n in names]))
            return steppers[names]

        for step, row in enumerate(grads):
            names = tuple(n for n, g in row.items() if g is not None)
            stepper(names)([keras.ops.cast(np.asarray(row[n], np.float64), dtype) for n in names])
            for name, variable in variables.items():
                got = keras.ops.convert_to_numpy(keras.ops.cast(variable, "float64"))
                assert_close(got, expected["params"][step][name], tol.rtol, tol.atol, f"step {step} {name}")
        for name, state in expected["state"].items():
            if not state:
                continue
            ours = optimizer.variable_state(variables[name])
            for key, value in state.items():
                assert key in ours, f"state `{key}` missing; have {sorted(ours)}"
                assert_close(np.asarray(ours[key], np.float64), value, tol.rtol, tol.atol, f"state {name}.{key}")


def _inputs(case: Mapping[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    from hf_optim_spec.reference._case import case_inputs

    return case_inputs(case)


# --------------------------------------------------------------------------- accumulator


@pytest.mark.parametrize(("spec", "case"), _cases("accumulator"))
def test_accumulator_case(spec: hs.Spec, case: Mapping[str, Any]) -> None:
    from hf_optim_spec.reference import accumulator as reference

    expected = case.get("expected") or reference.run_case(spec.raw, case)
    rows = iter(reference.case_grads(case))
    dtype = case.get("dtype", "float32")
    tol = spec.tol(dtype)
    acc = _api(spec)()
    for op, want in zip(case["ops"], expected):
        if op["op"] == "reset":
            acc.reset()
        else:
            grads = [None if g is None else keras.ops.cast(np.asarray(g, np.float64), dtype) for g in next(rows)]
            if "error" in want:
                with pytest.raises(ValueError, match=want["match"]):
                    acc(grads)
                continue
            acc(grads)
        if want["gradients"] is None:
            with pytest.raises(ValueError, match="called first"):
                _ = acc.gradients
            continue
        assert int(acc.step) == want["step"]
        got = acc.gradients
        assert len(got) == len(want["gradients"])
        for g, w in zip(got, want["gradients"]):
            if w is None:
                assert g is None
            else:
                assert_close(keras.ops.convert_to_numpy(keras.ops.cast(g, "float64")), w, tol.rtol, tol.atol, "sum")
