"""Parameter values as a user types and reads them: parsing ``--NAME VALUE`` and showing values and rules."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

from .. import formula as fm
from .._registry import Parameter, Spec
from ._errors import CliError, find_spec

__all__ = [
    "default_text",
    "find_parameter",
    "format_number",
    "parse_value",
    "rule_text",
    "show_value",
    "spelling_text",
    "string_choices",
    "unknown_parameter",
]


def format_number(value: float) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        return str(int(value))
    return repr(value)


def show_value(value: Any) -> str:
    """A parameter value the way a user types it on the command line."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return format_number(value)
    if isinstance(value, (list, tuple)):
        return ",".join(show_value(v) for v in value)
    if isinstance(value, Mapping) and "schedule" in value:
        inner = ",".join(f"{k}={show_value(v)}" for k, v in value.get("params", {}).items())
        return f"{value['schedule']}:{inner}" if inner else str(value["schedule"])
    return str(value)


def default_text(param: Parameter) -> str:
    """``required`` or the default as typed on the command line."""
    return "required" if param.required else show_value(param.default)


def rule_text(param: Parameter) -> str:
    """The value rules of one parameter, e.g. ``>= 0``, ``> 0, <= 1`` or ``one of 'a', 'b'``."""
    rules = []
    for bound, symbol in (
        (param.minimum, ">="),
        (param.exclusive_minimum, ">"),
        (param.maximum, "<="),
        (param.exclusive_maximum, "<"),
    ):
        if bound is not None:
            rules.append(f"{symbol} {format_number(bound)}")
    if param.enum is not None:
        rules.append("one of " + ", ".join(repr(v) for v in param.enum))
    if param.nullable:
        rules.append("or none")
    return ", ".join(rules)


def spelling_text(param: Parameter) -> str:
    """``torch: x, tf: y`` where a framework spells the parameter differently, else ''."""
    parts = []
    for framework, alias in param.framework_names.items():
        shown = "/".join(alias) if isinstance(alias, tuple) else alias
        parts.append(f"{framework}: {shown}")
    return ", ".join(parts)


def string_choices(spec: Spec, name: str) -> list[str]:
    """The string literals the formula or the constraints compare parameter ``name`` with."""
    trees: list[fm.Node] = [c.when for c in spec.constraints]
    if spec.program is not None:
        trees += [*spec.program.values.values(), spec.program.result]
    found: list[str] = []
    for tree in trees:
        for node in fm.walk(tree):
            if isinstance(node, fm.Compare) and node.op in ("==", "!="):
                for a, b in ((node.left, node.right), (node.right, node.left)):
                    if (
                        a == fm.Name(name)
                        and isinstance(b, fm.Const)
                        and isinstance(b.value, str)
                        and b.value not in found
                    ):
                        found.append(b.value)
    return found


_TRUE = ("true", "1", "yes", "on")


_FALSE = ("false", "0", "no", "off")


_NONE = ("none", "null")


def parse_value(param: Parameter, text: str, *, label: str | None = None) -> Any:
    """Turn command-line text into a value of ``param``'s spec type.

    Raises:
      CliError: the text is not a value of that type.
    """
    label = label or f"--{param.name}"
    lowered = text.strip().lower()
    if lowered in _NONE and param.nullable:
        return None
    kind = param.type

    def bad(expected: str) -> CliError:
        return CliError(f"argument {label}: expected {expected}, got {text!r}")

    if kind == "integer":
        try:
            number = float(text)
        except ValueError:
            raise bad("an integer") from None
        if not number.is_integer():
            raise bad("an integer")
        return int(number)
    if kind == "number":
        try:
            return float(text)
        except ValueError:
            raise bad("a number") from None
    if kind == "boolean":
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise bad("true or false")
    if kind == "string":
        return text
    if kind == "number_pair":
        parts = [p for p in re.split(r"[,\s]+", text.strip("()[] ")) if p]
        try:
            pair = tuple(float(p) for p in parts)
        except ValueError:
            raise bad("two numbers like 0.9,0.999") from None
        if len(pair) != 2:
            raise bad("two numbers like 0.9,0.999")
        return pair
    if kind == "number_or_list":  # one number, or one per param group: 0.001 or 0.001,0.0001
        parts = [p for p in re.split(r"[,\s]+", text.strip("()[] ")) if p]
        try:
            numbers = [float(p) for p in parts]
        except ValueError:
            raise bad("a number or numbers like 0.001,0.0001") from None
        if not numbers:
            raise bad("a number or numbers like 0.001,0.0001")
        return numbers[0] if len(numbers) == 1 and "," not in text else numbers
    if kind == "string_list":
        return [p.strip() for p in text.split(",") if p.strip()]
    if kind == "schedule":
        return _parse_schedule_ref(text, label)
    raise bad(f"a value of type {kind}")  # pragma: no cover - the schema allows no other type


def _parse_schedule_ref(text: str, label: str) -> dict[str, Any]:
    """``ID`` or ``ID:name=value,name=value`` -> a spec schedule reference."""
    spec_id, _, rest = text.partition(":")
    spec = find_spec(spec_id.strip())
    if spec.kind != "schedule":
        raise CliError(f"argument {label}: {spec.id!r} is a {spec.kind}, not a schedule")
    params: dict[str, Any] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        name, sep, value = item.partition("=")
        if not sep:
            raise CliError(f"argument {label}: expected ID:name=value,...; got {text!r}")
        param = find_parameter(spec, name.strip())
        params[param.name] = parse_value(param, value, label=f"{label} {spec.id}:{param.name}")
    return {"schedule": spec.id, "params": params}


def find_parameter(spec: Spec, name: str) -> Parameter:
    canonical = name.replace("-", "_")
    if canonical in spec.parameters:
        return spec.parameters[canonical]
    raise CliError(unknown_parameter(spec, name))


def unknown_parameter(spec: Spec, name: str) -> str:
    valid = list(spec.parameters)
    close = difflib.get_close_matches(name.replace("-", "_"), valid, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join('--' + c for c in close)}?" if close else ""
    shown = ", ".join("--" + v for v in valid) if valid else "(it takes none)"
    return f"unknown parameter --{name} for {spec.id} ({spec.display_name}).{hint} Valid parameters: {shown}"
