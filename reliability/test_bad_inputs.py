"""Bad inputs: Hypothesis over every spec parameter of every public constructor / factory, both frameworks.

The oracle is the spec: ``hf_optim_spec.validate`` of the same (spelled) arguments says whether a value is
rejected (and with which TypeError/ValueError) or accepted. The public API must then

* reject it with the same exception class and a message that is the spec's or names the argument, never another
  exception from deep inside; or
* accept it (a documented acceptance: the spec declares the value legal) and survive being used: optimizer
  steps, scheduler steps / schedule calls. Non-finite results are allowed there (e.g. ``lr=inf`` is legal in
  transformers); exceptions are not.

Besides the per-argument values: unknown argument names, empty and duplicated parameter lists, sparse gradients,
gradients of the wrong shape and changing gradient counts (accumulators), each leaving the state unchanged.
"""

from __future__ import annotations

import copy
import math
import re
import warnings
from collections.abc import Iterator
from typing import Any

import hf_optim_spec as hs
import hypothesis.strategies as st
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings

from reliability import _construct, _drive
from reliability.conftest import SIZES, record
from testsupport.spec_args import api, has_api, spellings

SETTINGS = settings(
    max_examples=SIZES.hypothesis_examples,
    deadline=None,
    database=None,
    derandomize=True,  # the same examples every run (strict xfails stay stable); the full run draws more
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)

TRIED: dict[str, int] = {}
"""Bad inputs tried per test (written to out/reliability/bad_inputs.json at the end)."""


EXERCISED: set[tuple[str, str, str, str, str]] = set()
"""Accepted arguments already used (framework, spec id, argument, value's type and repr): Hypothesis draws many
values more than once (about half of the accepted ones in the full run), and the same constructor arguments make the
same object take the same steps, so a repeat is constructed and judged again but not used again. A value is kept
only once it was used without error (Hypothesis replays a failing example, which must fail again), and never where
its repr holds a NaN (NaNs of another sign or payload share the repr)."""


def _count(key: str) -> None:
    TRIED[key] = TRIED.get(key, 0) + 1


@pytest.fixture(scope="module", autouse=True)
def _write_counts() -> Iterator[None]:
    yield
    record(
        "bad_inputs",
        {"tried": dict(sorted(TRIED.items())), "total": sum(TRIED.values()), "accepted_and_used": len(EXERCISED)},
    )


class _Opaque:
    def __repr__(self) -> str:
        return "<opaque object>"


_SPECIALS: list[Any] = [
    math.nan,
    math.inf,
    -math.inf,
    -1,
    -1e-9,
    0,
    0.0,
    1e308,
    True,
    False,
    None,
    "a",
    "",
    b"x",
    [1.0],
    {"x": 1},
    (1.0, 2.0, 3.0),
    _Opaque(),
    2.5,
]
"""Values of every kind that any argument may receive."""


def _bounds(param: hs.Parameter) -> list[float]:
    values = [param.minimum, param.exclusive_minimum, param.maximum, param.exclusive_maximum]
    out: list[float] = []
    for bound in values:
        if bound is not None:
            out += [bound, math.nextafter(bound, -math.inf), math.nextafter(bound, math.inf), bound - 1, bound + 1]
    return out


def bad_values(param: hs.Parameter) -> st.SearchStrategy[Any]:
    """Values of every kind, biased to the declared bounds; the spec decides which ones are bad."""
    strategies = [
        st.sampled_from(_SPECIALS),
        st.sampled_from(_bounds(param) or [0.0]),
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(2**40), max_value=2**40),
        st.text(max_size=6),
    ]
    types = param.type if isinstance(param.type, tuple) else (param.type,)
    if "number_pair" in types:
        item = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from(_SPECIALS[:9]))
        strategies += [st.tuples(item, item), st.lists(item, max_size=3)]
    if "string_list" in types:
        strategies += [st.lists(st.one_of(st.text(max_size=4), st.integers()), max_size=3)]
    if param.enum:
        strategies += [st.sampled_from([*param.enum, "nope", str(param.enum[0]).upper()])]
    return st.one_of(strategies)


def _oracle(framework: str, spec: hs.Spec, kwargs: dict[str, Any]) -> Exception | None:
    lr = _construct.base_lr(spec) if spec.output == "factor" or spec.stateful else None
    try:
        hs.validate(spec, kwargs, framework=framework, base_lr=lr, param_groups=1)  # _construct: one param group
    except (TypeError, ValueError) as error:
        return error
    return None


def _numbers_as_int(text: str) -> str:
    return re.sub(r"(\d)\.0\b", r"\1", text)


def _cases() -> list[tuple[str, str, str]]:
    """(framework, spec id, spelled argument) for every spec parameter the public API takes."""
    out = []
    for framework in _drive.FRAMEWORKS:
        for spec in hs.registry().values():
            if not has_api(framework, spec):
                out.append((framework, spec.id, "<not exported>"))  # fails, naming the missing object
                continue
            for name in sorted(spellings(spec, framework)):
                if _construct.takes(framework, spec, name):
                    out.append((framework, spec.id, name))
    return out


def _not_taken() -> list[str]:
    return [
        f"{framework}:{spec.id}:{name}"
        for framework in _drive.FRAMEWORKS
        for spec in hs.registry().values()
        if has_api(framework, spec)
        for name in sorted(spellings(spec, framework))
        if not _construct.takes(framework, spec, name)
    ]


def _param_of(spec: hs.Spec, framework: str, spelled: str) -> hs.Parameter:
    for param in spec.parameters.values():
        alias = param.name_for(framework)
        if spelled == alias or (isinstance(alias, tuple) and spelled in alias):
            return param
    raise KeyError(spelled)


def test_every_spec_argument_is_taken_or_documented() -> None:
    # The only spec parameters a public API does not take are those of a proxy (torch AdafactorSchedule reports
    # Adafactor's own lr: its arguments are Adafactor's, fuzzed there).
    for entry in _not_taken():
        framework, spec_id, _ = entry.split(":")
        assert framework == "torch" and _drive.torch_is_proxy(hs.get(spec_id)), entry


@pytest.mark.parametrize(("framework", "spec_id", "name"), _cases(), ids=str)
@SETTINGS
@given(data=st.data())
def test_bad_argument_is_rejected_clearly_or_accepted(framework: str, spec_id: str, name: str, data: Any) -> None:
    spec = hs.get(spec_id)
    api(framework, spec)  # MissingApi names a spec object the package does not export
    value = data.draw(bad_values(_param_of(spec, framework, name)), label=name)
    with warnings.catch_warnings():  # accepted with a spec UserWarning is an acceptance (warnings: conformance)
        warnings.simplefilter("ignore", UserWarning)
        _check_bad_argument(framework, spec, name, value)


def _check_bad_argument(framework: str, spec: hs.Spec, name: str, value: Any) -> None:
    spec_id = spec.id
    kwargs = {**_construct.base_kwargs(framework, spec), name: value}
    expected = _oracle(framework, spec, kwargs)
    _count(f"{framework}:{spec_id}")
    try:
        obj = _construct.construct(framework, spec, kwargs)
    except (TypeError, ValueError) as error:
        if expected is None:
            pytest.fail(f"{spec.api[framework]}({name}={value!r}) raised {error!r}, but the spec accepts it")
        assert isinstance(error, type(expected)), f"{name}={value!r}: {error!r}, spec says {expected!r}"
        message = str(error)
        same = _numbers_as_int(message) == _numbers_as_int(str(expected))  # "-1" vs "-1.0" (ints become floats)
        assert same or name in message, f"{name}={value!r}: message {message!r} does not name it"
        return
    except Exception as error:
        pytest.fail(f"{spec.api[framework]}({name}={value!r}) crashed with {type(error).__name__}: {error}")
    if expected is not None:
        pytest.fail(f"{spec.api[framework]}({name}={value!r}) was accepted; the spec rejects it: {expected!r}")
    used = (framework, spec_id, name, type(value).__name__, repr(value))
    if used in EXERCISED:
        return
    try:
        _construct.exercise(framework, spec, obj)
    except Exception as error:
        pytest.fail(f"{spec.api[framework]}({name}={value!r}) was accepted, then using it raised {error!r}")
    if "nan" not in used[-1]:  # (every NaN's repr is nan, whatever its sign and payload)
        EXERCISED.add(used)


@pytest.mark.parametrize("framework", _drive.FRAMEWORKS)
@pytest.mark.parametrize("spec_id", [s.id for s in hs.registry().values()])
@SETTINGS
@given(name=st.from_regex(r"[a-z][a-z_]{0,12}", fullmatch=True))
def test_unknown_argument_names_are_rejected(framework: str, spec_id: str, name: str) -> None:
    spec = hs.get(spec_id)
    api(framework, spec)
    assume(name not in _construct.signature(framework, spec) and name not in spellings(spec, framework))
    kwargs = {**_construct.base_kwargs(framework, spec), name: 1}
    _count(f"{framework}:{spec_id}:unknown-name")
    with pytest.raises(TypeError) as info:
        _construct.construct(framework, spec, kwargs)
    assert name in str(info.value)


# --------------------------------------------------------------------------- framework-only arguments

_FLAG_RULES: dict[str, tuple[str, Any]] = {
    # name -> (framework, predicate of the values the API accepts)
    "maximize": ("torch", lambda v: isinstance(v, (bool, np.bool_))),
    "foreach": ("torch", lambda v: v is None or isinstance(v, (bool, np.bool_))),
    "fused": ("torch", lambda v: v is None or isinstance(v, (bool, np.bool_))),
    "optimizer": ("torch", lambda v: False),  # no drawn value is a torch.optim.Optimizer
    "learning_rate": (
        "tf",
        lambda v: not isinstance(v, (bool, np.bool_)) and isinstance(v, (int, float)) and math.isfinite(v),
    ),
}


def _framework_cases() -> list[tuple[str, str, str]]:
    """(framework, spec id, name) for every framework-only argument (not a spec parameter) of a public API."""
    out = []
    for framework in _drive.FRAMEWORKS:
        for spec in hs.registry().values():
            if not has_api(framework, spec):
                continue
            sig = _construct.signature(framework, spec)
            for name, (owner, _) in _FLAG_RULES.items():
                if owner == framework and name in sig and name not in spellings(spec, framework):
                    out.append((framework, spec.id, name))
    return out


def test_framework_arguments_are_covered() -> None:
    covered = {(framework, name) for framework, _, name in _framework_cases()}
    assert covered == {(owner, name) for name, (owner, _) in _FLAG_RULES.items()}, covered


@pytest.mark.parametrize(("framework", "spec_id", "name"), _framework_cases(), ids=str)
@SETTINGS
@given(value=st.one_of(st.sampled_from(_SPECIALS), st.floats(), st.integers(-(2**40), 2**40), st.text(max_size=4)))
def test_bad_framework_argument_is_rejected_clearly_or_accepted(
    framework: str, spec_id: str, name: str, value: Any
) -> None:
    """Arguments the spec does not declare (torch flags, a schedule's optimizer, a Keras schedule's base lr)."""
    spec = hs.get(spec_id)
    kwargs = _construct.base_kwargs(framework, spec)
    accepted = _FLAG_RULES[name][1](value)
    expected = None  # a legal base lr may still break a spec constraint that names base_lr (the spec's error)
    if name == "learning_rate" and accepted:
        try:
            hs.validate(spec, kwargs, framework=framework, base_lr=float(value))
        except (TypeError, ValueError) as error:
            expected = error
    _count(f"{framework}:{spec_id}:{name}")
    func = _construct.factory(framework, spec)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            if name in ("optimizer", "learning_rate"):
                obj = func(value, **kwargs)
            else:
                obj = _construct.construct(framework, spec, {**kwargs, name: value})
    except (TypeError, ValueError) as error:
        if expected is not None:
            assert type(error) is type(expected) and str(error) == str(expected), f"{error!r}, spec: {expected!r}"
            return
        assert not accepted, f"{spec.api[framework]}({name}={value!r}) raised {error!r}; the value is legal"
        assert f"`{name}`" in str(error), f"{name}={value!r}: message {str(error)!r} does not name it"
        return
    except Exception as error:
        pytest.fail(f"{spec.api[framework]}({name}={value!r}) crashed with {type(error).__name__}: {error}")
    assert accepted and expected is None, f"{spec.api[framework]}({name}={value!r}) was accepted"
    _construct.exercise(framework, spec, obj)


# --------------------------------------------------------------------------- torch parameter lists and steps


def _torch_optimizers() -> list[str]:
    return [s.id for s in _drive.specs_of("optimizer")]


def _torch_snapshot(optimizer: Any, params: list[Any]) -> dict[str, Any]:
    return {"params": [p.detach().clone() for p in params], "state": copy.deepcopy(optimizer.state_dict())}


def _same(a: Any, b: Any) -> bool:
    import torch

    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and bool(torch.equal(a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


@pytest.mark.parametrize("spec_id", _torch_optimizers())
def test_torch_empty_and_duplicated_parameter_lists(spec_id: str) -> None:
    import torch

    factory = _construct.factory("torch", hs.get(spec_id))
    p = torch.nn.Parameter(torch.ones(3))
    with pytest.raises(ValueError, match="empty parameter list"):
        factory([])
    with pytest.raises(ValueError, match="more than one parameter group"):
        factory([{"params": [p]}, {"params": [p]}])
    # torch.optim warns (UserWarning, an error under this suite's filterwarnings) on a duplicate inside one group.
    with pytest.raises(UserWarning, match="duplicate parameters"):
        factory([p, p])
    _count("torch:parameter-lists")


@pytest.mark.parametrize("spec_id", _torch_optimizers())
def test_keras_empty_and_duplicated_variable_lists(spec_id: str) -> None:
    import keras

    spec = hs.get(spec_id)
    optimizer = _construct.construct("tf", spec, _construct.base_kwargs("tf", spec))
    v = keras.Variable(np.ones(3, dtype="float32"))
    g = np.full(3, 0.5, dtype="float32")
    with pytest.raises(ValueError, match="`grads_and_vars` must hold at least one"):
        optimizer.apply_gradients([])
    with pytest.raises(ValueError, match="`trainable_variables` must not hold a variable twice"):
        optimizer.apply_gradients([(g, v), (g, v)])
    assert np.array_equal(v.numpy(), np.ones(3, dtype="float32")), "a rejected call changed the variable"
    optimizer.apply_gradients([(g, v)])  # the optimizer still works: one step, counted once
    assert int(optimizer.iterations.numpy()) == 1
    _count("tf:variable-lists")


@pytest.mark.parametrize("spec_id", _torch_optimizers())
def test_torch_rejected_sparse_step_leaves_state_unchanged(spec_id: str) -> None:
    """A step with a sparse gradient fails (transformers' RuntimeError naming sparse gradients) and changes nothing.

    Two parameter groups, the sparse gradient in the second, after one good step so that state exists. (A
    gradient of the wrong shape or dtype cannot reach an optimizer: torch refuses ``p.grad = g`` itself.)
    """
    bad = "sparse"
    import torch

    spec = hs.get(spec_id)
    hyper = _construct.base_kwargs("torch", spec)
    a, b = torch.nn.Parameter(torch.ones(2, 3)), torch.nn.Parameter(torch.ones(3))
    optimizer = _construct.factory("torch", spec)([{"params": [a]}, {"params": [b]}], **hyper)
    a.grad, b.grad = torch.full_like(a, 0.5), torch.full_like(b, 0.5)
    optimizer.step()
    before = _torch_snapshot(optimizer, [a, b])
    a.grad = torch.full_like(a, 0.25)
    b.grad = torch.full_like(b, 0.25).to_sparse()
    _count(f"torch:{spec_id}:{bad}")
    with pytest.raises(RuntimeError, match="sparse"):
        optimizer.step()
    after = _torch_snapshot(optimizer, [a, b])
    assert _same(before, after), f"{spec_id}: the rejected step ({bad}) changed params or state"


# --------------------------------------------------------------------------- accumulators


@pytest.mark.parametrize("framework", _drive.FRAMEWORKS)
@SETTINGS
@given(first=st.integers(1, 4), second=st.integers(0, 6))
def test_accumulator_gradient_count_change_is_rejected_without_change(framework: str, first: int, second: int) -> None:
    assume(first != second)
    spec = _drive.specs_of("accumulator")[0]
    accumulator = _construct.factory(framework, spec)()
    if framework == "torch":
        import torch

        make = lambda n: [torch.full((2,), float(i + 1)) for i in range(n)]  # noqa: E731
        read = lambda: [g.clone() for g in accumulator.gradients]  # noqa: E731
    else:
        import tensorflow as tf

        make = lambda n: [tf.fill((2,), float(i + 1)) for i in range(n)]  # noqa: E731
        read = lambda: [g.numpy().copy() for g in accumulator.gradients]  # noqa: E731
    accumulator(make(first))
    before, step = read(), int(np.asarray(accumulator.step))
    _count(f"{framework}:{spec.id}:count")
    with pytest.raises(ValueError, match=f"Expected {first} gradients, but got {second}"):
        accumulator(make(second))
    after = read()
    assert int(np.asarray(accumulator.step)) == step
    assert all(np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(before, after))


# --------------------------------------------------------------------------- Keras steps


@pytest.mark.parametrize("spec_id", _torch_optimizers())
@pytest.mark.parametrize("bad", ["sparse", "wrong_shape"])
def test_keras_rejected_or_sparse_step(spec_id: str, bad: str) -> None:
    """Keras: a gradient of the wrong shape is rejected (a ValueError naming the variable and both shapes) before any
    variable, state or ``iterations`` changes, though it is the second of the step's gradients (Keras' own
    optimizers update the variables before it); a sparse gradient (``tf.IndexedSlices``, what ``tf.gather`` gives)
    must give exactly the step of the same gradient made dense.
    """
    import keras
    import tensorflow as tf

    spec = hs.get(spec_id)
    hyper = _construct.base_kwargs("tf", spec)
    variables = [keras.Variable(np.ones((4, 3), "float32"), name="a"), keras.Variable(np.ones(3, "float32"), name="b")]
    twins = [keras.Variable(v.numpy(), name=v.name) for v in variables]
    optimizer = _construct.factory("tf", spec)(**hyper)
    optimizer.apply_gradients([(tf.fill(v.shape, 0.5), v) for v in variables])
    _count(f"tf:{spec_id}:{bad}")
    if bad == "wrong_shape":

        def untouched() -> list[Any]:
            return [v.numpy().copy() for v in [*variables, *optimizer.variables]]

        before = untouched()
        with pytest.raises(ValueError, match=r"a gradient of shape \(5,\) for variable 'b' of shape \(3,\)"):
            optimizer.apply_gradients([(tf.fill((4, 3), 0.25), variables[0]), (tf.ones(5), variables[1])])
        after = untouched()
        assert len(before) >= 4 and all(np.array_equal(x, y) for x, y in zip(before, after)), spec_id
        return
    dense = _construct.factory("tf", spec)(**hyper)
    dense.apply_gradients([(tf.fill(v.shape, 0.5), v) for v in twins])
    rows = tf.constant([0, 2])
    sparse_grad = tf.IndexedSlices(tf.fill((2, 3), 0.25), rows, dense_shape=tf.constant([4, 3]))
    optimizer.apply_gradients([(sparse_grad, variables[0]), (tf.fill((3,), 0.25), variables[1])])
    dense.apply_gradients([(tf.convert_to_tensor(sparse_grad), twins[0]), (tf.fill((3,), 0.25), twins[1])])
    for v, w in zip(variables, twins):
        assert np.array_equal(v.numpy(), w.numpy()), f"{spec_id}: sparse step != dense step"
