"""Every spec ``errors`` entry raises the spec's exception type and message in both frameworks."""

from __future__ import annotations

import re
from typing import Any

import hf_optim_spec as hs
import pytest

from ._impls import IMPLS
from ._report import RECORDER
from ._repro import repro
from .test_vectors import _fail


def _patterns(spec: hs.Spec, framework: str, match: str) -> list[str]:
    """The spec's pattern, and the same with canonical argument names in ``framework``'s spelling.

    Uniform messages name the argument as the user spelled it (``learning_rate`` in Keras where the
    spec says ``lr``); constraint messages (transformers' text) are the same in both frameworks.
    """
    translated = match
    for name, param in spec.parameters.items():
        alias = param.name_for(framework)
        if isinstance(alias, str) and alias != name:
            translated = re.sub(rf"(?<![A-Za-z0-9_]){re.escape(name)}(?![A-Za-z0-9_])", alias, translated)
    return list(dict.fromkeys([match, translated]))


def _inexpressible(spec: hs.Spec, framework: str, params: Any) -> str | None:
    """Why the case's inputs cannot be written in ``framework`` (a non-pair for an argument pair it splits)."""
    for name, value in params.items():
        param = spec.parameters.get(name)
        if param is None or not isinstance(param.name_for(framework), tuple):
            continue
        if not (isinstance(value, (list, tuple)) and len(value) == 2):
            return f"`{name}` is two arguments {param.name_for(framework)} in {framework}; {value!r} cannot be passed"
    return None


def test_error_case(error_case: Any) -> None:
    impl, spec, case, index = error_case.impl, error_case.spec, error_case.case, error_case.index
    where = f"[{impl.name}::{spec.id}::{case['description']}]"
    reason = _inexpressible(spec, impl.name, case["params"])
    if reason:
        pytest.skip(f"{where} {reason}")
    note = repro(
        impl.name,
        spec,
        index,
        f"_impls.IMPLS[{impl.name!r}].construct(spec, case['params'], case.get('base_lr', 1.0))",
        source="errors",
    )
    error = impl.raise_error(spec, case)
    patterns = _patterns(spec, impl.name, case["match"])
    ok = (
        error is not None
        and type(error).__name__ == case["error"]
        and any(re.search(p, str(error)) is not None for p in patterns)
    )
    RECORDER.error(spec, impl.name, ok)
    if error is None:
        _fail(f"{where} nothing raised; want {case['error']} matching {case['match']!r}", note)
    if not ok:
        _fail(
            f"{where} raised {type(error).__name__}({str(error)!r}); want {case['error']} matching {' or '.join(map(repr, patterns))}",
            note,
        )


def _normalized(message: str, spec: hs.Spec, framework: str) -> str:
    """The message with the framework's argument spellings replaced by the canonical names."""
    for name, param in spec.parameters.items():
        alias = param.name_for(framework)
        if isinstance(alias, str) and alias != name:
            message = re.sub(rf"(?<![A-Za-z0-9_]){re.escape(alias)}(?![A-Za-z0-9_])", name, message)
    return message


def _split_pairs(spec: hs.Spec) -> bool:
    return any(isinstance(p.name_for(f), tuple) for p in spec.parameters.values() for f in IMPLS)


def test_error_messages_agree(error_pair: Any) -> None:
    """Same type and the same message up to each framework's argument spelling.

    Where the spec spells a pair as two arguments in one framework (betas -> beta_1, beta_2), the
    messages name different arguments by nature; both must then still match the spec's pattern
    (test_error_case), and the types must agree.
    """
    spec, case = error_pair.spec, error_pair.case
    if any(_inexpressible(spec, name, case["params"]) for name in IMPLS):
        pytest.skip("the inputs cannot be written in one of the frameworks")
    errors = {name: impl.raise_error(spec, case) for name, impl in IMPLS.items()}
    where = f"[torch-vs-tf::{spec.id}::{case['description']}]"
    if any(e is None for e in errors.values()):
        _fail(f"{where} raised in {[n for n, e in errors.items() if e]} only", "see test_error_case for each framework")
    types = {name: type(e).__name__ for name, e in errors.items()}
    assert len(set(types.values())) == 1, f"{where} different exception types: {types}"
    if _split_pairs(spec):
        return
    messages = {name: _normalized(str(e), spec, name) for name, e in errors.items()}
    assert len(set(messages.values())) == 1, f"{where} different messages: {messages}"
