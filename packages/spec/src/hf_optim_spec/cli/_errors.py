"""The CLI's user error and the spec lookup that raises it."""

from __future__ import annotations

from .._registry import Spec, get

__all__ = ["PROG", "CliError", "find_spec"]


PROG = "hf-optim"


class CliError(Exception):
    """A user error: printed as ``hf-optim: error: ...`` with exit status 2."""


def find_spec(spec_id: str) -> Spec:
    """The spec ``spec_id``; an unknown id is a :class:`CliError` naming the closest ids."""
    try:
        return get(spec_id)
    except KeyError as err:
        raise CliError(str(err.args[0])) from None
