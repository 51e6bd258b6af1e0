"""Parameter layouts of the benchmark: one flat tensor, or ~200 tensors shaped like a transformer's."""

from __future__ import annotations

import math

__all__ = ["LAYOUTS", "layout_shapes"]

LAYOUTS = ("one_tensor", "transformer")
_LAYERS = 16  # 12 tensors per layer + embeddings + final norm: 16 layers give 198 tensors


def _transformer(total: int) -> list[tuple[int, ...]]:
    """A GPT-style stack: per layer qkv/out/fc_in/fc_out weights and biases, two norms; then embeddings.

    The width is the largest multiple of 32 whose layers fit ``total``; a token embedding takes the rest.
    """
    d = 32 * math.floor(math.sqrt(total * 0.9 / (12 * _LAYERS)) / 32)
    shapes: list[tuple[int, ...]] = []
    for _ in range(_LAYERS):
        shapes += [(d,), (d,)]  # attention norm weight, bias
        shapes += [(d, 3 * d), (3 * d,), (d, d), (d,)]  # qkv, attention output
        shapes += [(d,), (d,)]  # mlp norm weight, bias
        shapes += [(d, 4 * d), (4 * d,), (4 * d, d), (d,)]  # mlp in, mlp out
    shapes += [(d,), (d,), (1024, d)]  # final norm, position embedding
    used = sum(math.prod(s) for s in shapes)
    vocab = max(1, (total - used) // d)
    shapes.append((vocab, d))  # token embedding
    return shapes


def layout_shapes(layout: str, total: int) -> list[tuple[int, ...]]:
    """The tensor shapes of ``layout`` holding about ``total`` parameters."""
    if layout == "one_tensor":
        return [(total,)]
    if layout == "transformer":
        return _transformer(total)
    raise ValueError(f"unknown layout {layout!r}; choose from {LAYOUTS}")
