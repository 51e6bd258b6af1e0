"""The ``list`` and ``show`` commands: the registry and one spec as text."""

from __future__ import annotations

from typing import TextIO

from .._registry import Spec, registry
from ._errors import PROG
from ._values import default_text, rule_text, show_value, spelling_text, string_choices

__all__ = ["cmd_list", "cmd_show"]


def cmd_list(out: TextIO) -> None:
    """Every spec, grouped by kind, with its transformers name and summary."""
    specs = list(registry().values())
    for kind in ("schedule", "optimizer", "accumulator"):
        group = [s for s in specs if s.kind == kind]
        if not group:
            continue
        print(f"{kind}s:", file=out)
        width = max(len(s.id) for s in group)
        for spec in group:
            print(f"  {spec.id:<{width}}  {spec.display_name}", file=out)
            if spec.summary:
                print(f"  {'':<{width}}  {spec.summary}", file=out)
        print(file=out)
    print(f"`{PROG} show ID` for details, `{PROG} plot ID --PARAM VALUE ...` for a curve.", file=out)


def cmd_show(spec: Spec, out: TextIO) -> None:
    """Everything the spec says about one id, as text."""
    print(f"{spec.id}  ({spec.kind})", file=out)
    if spec.summary:
        print(f"  {spec.summary}", file=out)
    print(file=out)
    if spec.hf_name:
        print(f"transformers: {', '.join(spec.hf_name)}", file=out)
    source = spec.raw.get("hf_source")
    if source:
        print(f"source:       {source}", file=out)
    for framework, package in (("torch", "hf_optim_torch"), ("tf", "hf_optim_tf")):
        if framework in spec.api:
            print(f"{framework + ':':<13} {package}.{spec.api[framework]}", file=out)
    if spec.output:
        meaning = "a factor of the optimizer's lr (LambdaLR)" if spec.output == "factor" else "the learning rate itself"
        print(f"output:       {meaning}", file=out)
    if spec.stateful:
        print("stateful:     yes (driven by a metric, no closed form)", file=out)
    if spec.state:
        print(f"state:        {', '.join(spec.state)}", file=out)
    if spec.formula:
        print(f"\nformula (LaTeX):\n  {spec.formula}", file=out)
    expression = spec.raw.get("expression")
    if expression:
        print("\nexpression (machine-readable, evaluated by the reference and lowered by both frameworks):", file=out)
        for name, text in expression.get("values", {}).items():
            print(f"  {name} = {text}", file=out)
        print(f"  result = {expression['result']}", file=out)
    print("\nparameters:", file=out)
    if not spec.parameters:
        print("  (none)", file=out)
    for param in spec.parameters.values():
        notes = [param.type_name, f"default {default_text(param)}"]
        if rule_text(param):
            notes.append(rule_text(param))
        if param.type == "string" and param.enum is None and string_choices(spec, param.name):
            notes.append("one of " + ", ".join(repr(v) for v in string_choices(spec, param.name)))
        if spelling_text(param):
            notes.append(spelling_text(param))
        if param.extension:
            notes.append("extension (not in transformers)")
        if not param.hf_enforced:
            notes.append("rule not enforced by transformers")
        print(f"  --{param.name}  [{'; '.join(notes)}]", file=out)
        if param.description:
            print(f"      {param.description}", file=out)
    if spec.constraints:
        print("\nconstraints (rejected when true):", file=out)
        for constraint in spec.constraints:
            flag = "" if constraint.hf_enforced else "  [not enforced by transformers]"
            print(f"  {constraint.when_text}  -> {constraint.error}: {constraint.message}{flag}", file=out)
    if spec.variants:
        print("\nvariants:", file=out)
        for name, variant in spec.variants.items():
            flags = " ".join(f"--{k} {show_value(v)}" for k, v in variant["params"].items())
            print(f"  {name}: {flags}  (or --variant {name})", file=out)
            print(f"      {variant['description']}", file=out)
    if spec.references:
        print("\nreferences:", file=out)
        for ref in spec.references:
            print(f"  - {ref['title']}: {ref['url']}", file=out)
    print(f"\n{len(spec.cases)} vector case(s), {len(spec.errors)} error case(s) in {spec.path.name}", file=out)
