"""Parameter layouts of the benchmark: one flat tensor, ~200 tensors shaped like a transformer's (also in bfloat16),
240 tensors of a transformer with an odd width (d = 577: no size divides by a vector width), and 200 small tensors
(fixed host cost), also each in a param group of its own (as a layer-wise learning rate makes them)."""

from __future__ import annotations

import math
from typing import Any

__all__ = ["LAYOUTS", "layout_dtype", "layout_shapes", "param_groups"]

LAYOUTS = (
    "one_tensor",
    "transformer",
    "transformer_bf16",
    "odd_transformer",
    "small_vectors",
    "small_matrices",
    "small_groups",
)
ODD_WIDTH = 577
SMALL_COUNT = 200
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


def _odd_transformer(total: int) -> list[tuple[int, ...]]:
    """Layers of 12 tensors at width 577 (weights d x 3d, d x d, d x 4d, 4d x d, their biases, two norms), as many
    layers as come nearest ``total`` (80M: 20 layers, 240 tensors, 80.05M parameters)."""
    d = ODD_WIDTH
    layer = [(d,), (d,), (d, 3 * d), (3 * d,), (d, d), (d,), (d,), (d,), (d, 4 * d), (4 * d,), (4 * d, d), (d,)]
    per_layer = sum(math.prod(s) for s in layer)
    return layer * max(1, round(total / per_layer))


def layout_dtype(layout: str) -> str:
    """The dtype of the parameters and gradients of ``layout``: bfloat16 for ``*_bf16``, else float32."""
    return "bfloat16" if layout.endswith("_bf16") else "float32"


def layout_shapes(layout: str, total: int) -> list[tuple[int, ...]]:
    """The tensor shapes of ``layout`` holding about ``total`` parameters (the small layouts ignore ``total``)."""
    if layout == "one_tensor":
        return [(total,)]
    if layout in ("transformer", "transformer_bf16"):
        return _transformer(total)
    if layout == "odd_transformer":
        return _odd_transformer(total)
    if layout == "small_vectors":
        return [(32,)] * SMALL_COUNT
    if layout in ("small_matrices", "small_groups"):
        return [(32, 32)] * SMALL_COUNT
    raise ValueError(f"unknown layout {layout!r}; choose from {LAYOUTS}")


def param_groups(layout: str, params: list[Any]) -> list[Any]:
    """What an optimizer of ``layout`` is given: its parameters, or for ``small_groups`` one param group per parameter
    (with the optimizer's defaults: what it costs is the same whatever each group's lr)."""
    return [{"params": [p]} for p in params] if layout == "small_groups" else params
