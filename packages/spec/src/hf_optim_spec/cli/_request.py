"""The command line of ``plot`` and ``explain``: ids, their parameters (as text) and the display options."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from ._errors import PROG, CliError

__all__ = ["Group", "Request", "parse_request"]


@dataclass
class Group:
    """One or more ids given together, followed by their parameters (text, not yet typed)."""

    ids: list[str]
    texts: dict[str, str] = field(default_factory=dict)
    variant: str | None = None
    metrics: list[float] | None = None


@dataclass
class Request:
    """A parsed ``plot``/``explain`` command line."""

    groups: list[Group]
    steps: int | None = None
    base_lr: float | None = None
    output: str | None = None
    csv: str | None = None
    title: str = ""
    log: bool = False


def _take(tokens: list[str], index: int, option: str, inline: str | None) -> tuple[str, int]:
    if inline is not None:
        return inline, index + 1
    if index + 1 >= len(tokens):
        raise CliError(f"argument {option}: expected a value")
    return tokens[index + 1], index + 2


def parse_request(tokens: Sequence[str]) -> Request:
    """Parse ``ID[,ID...] [--PARAM VALUE ...] [ID ...] [--steps N] [--base-lr X] [-o PNG] [--csv[=PATH]]``."""
    tokens = list(tokens)
    request = Request(groups=[])
    index = 0
    while index < len(tokens):
        token = tokens[index]
        if not token.startswith("-") or _is_number(token):
            ids = [t for t in token.split(",") if t]
            if not ids:
                raise CliError(f"expected a schedule id, got {token!r}")
            request.groups.append(Group(ids))
            index += 1
            continue
        option, sep, inline_value = token.partition("=")
        inline = inline_value if sep else None
        if option == "--csv":
            request.csv = inline if inline is not None else "-"
            index += 1
        elif option == "--log":
            request.log = True
            index += 1
        elif option in ("-o", "--output"):
            request.output, index = _take(tokens, index, option, inline)
        elif option == "--steps":
            value, index = _take(tokens, index, option, inline)
            try:
                request.steps = int(value)
            except ValueError:
                raise CliError(f"argument --steps: expected an integer, got {value!r}") from None
            if request.steps < 1:
                raise CliError(f"argument --steps: must be >= 1, got {request.steps}")
        elif option in ("--base-lr", "--base_lr"):
            value, index = _take(tokens, index, option, inline)
            try:
                request.base_lr = float(value)
            except ValueError:
                raise CliError(f"argument --base-lr: expected a number, got {value!r}") from None
        elif option == "--title":
            request.title, index = _take(tokens, index, option, inline)
        elif option in ("--variant", "--metrics") or option.startswith("--"):
            if not request.groups:
                raise CliError(f"{option} must follow a schedule id (e.g. {PROG} plot cosine {option} ...)")
            value, index = _take(tokens, index, option, inline)
            group = request.groups[-1]
            if option == "--variant":
                group.variant = value
            elif option == "--metrics":
                try:
                    group.metrics = [float(v) for v in value.split(",") if v.strip()]
                except ValueError:
                    raise CliError(f"argument --metrics: expected numbers like 1,0.9,0.9, got {value!r}") from None
            else:
                name = option[2:].replace("-", "_")
                if name in group.texts:
                    raise CliError(f"argument {option} given twice for {','.join(group.ids)}")
                group.texts[name] = value
        else:
            raise CliError(f"unknown option {token!r}")
    if not request.groups:
        raise CliError("expected at least one schedule id; `hf-optim list` shows them")
    return request


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True
