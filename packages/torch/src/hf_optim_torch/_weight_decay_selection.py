"""Which parameters AdamWeightDecay decays: transformers' include/exclude regexes matched against names."""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["do_use_weight_decay"]


def _any_match(name: str, patterns: Sequence[str] | None) -> bool:
    return any(re.search(pattern, name) is not None for pattern in patterns or ())


def do_use_weight_decay(
    name: str | None,
    weight_decay_rate: float,
    include_in_weight_decay: Sequence[str] | None,
    exclude_from_weight_decay: Sequence[str] | None,
) -> bool:
    """transformers' rule: no decay at rate 0; else an include match decays, an exclude match does not, others do.

    A parameter without a name (no patterns can apply to it) is decayed.
    """
    if weight_decay_rate == 0:
        return False
    if name is None or _any_match(name, include_in_weight_decay):
        return True
    return not _any_match(name, exclude_from_weight_decay)
