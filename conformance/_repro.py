"""Reproduction snippets the conformance failures print: the public-API call and the suite call to paste."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import hf_optim_spec as hs

from testsupport.spec_args import MODULES, case_base_lr, resolve_api, spelled, takes

__all__ = ["public_call", "repro"]


def public_call(framework: str, spec: hs.Spec, params: Mapping[str, Any], base_lr: float = 1.0) -> str:
    """The public-API call that builds ``spec`` with ``params`` in ``framework``, as Python source."""
    try:
        factory = resolve_api(framework, spec)
    except (LookupError, AttributeError, ImportError):
        factory = None

    def nested(ref: Mapping[str, Any]) -> _Source:
        return _Source(
            public_call(framework, hs.get(ref["schedule"]), ref.get("params", {}), float(ref.get("base_lr", 1.0)))
        )

    kwargs = spelled(spec, params, framework, nested)
    args: list[str] = []
    if spec.kind == "schedule" and factory is not None:
        if framework == "torch" and takes(factory, "optimizer", spec, "torch"):
            args.append(f"torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr={base_lr!r})")
        elif framework == "torch" and takes(factory, "params", spec, "torch"):
            args.append("[('w', torch.nn.Parameter(torch.zeros(2, 3)))]")
        if framework == "tf" and takes(factory, "learning_rate", spec, "tf"):
            args.append(f"learning_rate={base_lr!r}")
    elif spec.kind == "optimizer":
        args.append("[('w', torch.nn.Parameter(torch.zeros(2, 3)))]" if framework == "torch" else "")
    rendered = [a for a in args if a] + [f"{k}={v!r}" for k, v in kwargs.items()]
    return f"{MODULES[framework]}.{spec.api.get(framework, '<no api name>')}({', '.join(rendered)})"


class _Source(str):
    """A string whose repr is itself (nested calls inside a rendered call)."""

    def __repr__(self) -> str:
        return str(self)


def repro(framework: str | None, spec: hs.Spec, index: int | None, call: str, *, source: str = "cases") -> str:
    """A snippet to paste into Python at the repository root (conformance importable) to see the failure."""
    head = (
        "import torch, keras, hf_optim_torch, hf_optim_tf"
        if framework is None
        else ("import torch, hf_optim_torch" if framework == "torch" else "import keras, hf_optim_tf")
    )
    lines = [
        "Reproduce (run from the repository root):",
        "    import hf_optim_spec as hs",
        "    from conformance import _impls",
        f"    spec = hs.get({spec.id!r})",
    ]
    if index is not None:
        lines.append(f"    case = spec.{source}[{index}]  # {getattr(spec, source)[index].get('description', '')}")
    lines.append(f"    print({call})")
    if index is not None and framework is not None:
        case = getattr(spec, source)[index]
        params = case.get("params", case.get("hyperparams", {}))
        lines += ["Public API:", f"    {head}", f"    {public_call(framework, spec, params, case_base_lr(case))}"]
    return "\n".join(lines)
