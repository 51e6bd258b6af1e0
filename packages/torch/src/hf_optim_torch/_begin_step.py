"""The start of every optimizer step: the closure, then the checks that reject a step before it changes anything."""

from __future__ import annotations

from typing import Any

import torch

from ._torch_fused_adam import fused_problem

__all__ = ["SPARSE_LAYOUTS", "begin_step"]

#: gradient layouts the optimizers reject (transformers' "does not support sparse gradients")
SPARSE_LAYOUTS = frozenset({torch.sparse_coo, torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc})


def begin_step(
    optimizer: torch.optim.Optimizer,
    closure: Any,
    sparse_error: str,
    fused_dtypes: tuple[torch.dtype, ...] | None = None,
) -> Any:
    """The start of every ``step``: run the closure with gradients enabled, then reject what cannot be stepped.

    Sparse gradients are rejected (``RuntimeError(sparse_error)``), and so is a float16 parameter with a gradient
    in a group with ``stochastic_rounding`` (``ValueError``: only bfloat16 storage has stochastic rounding), and,
    when ``fused_dtypes`` is given, a parameter of a ``fused=True`` group that the fused kernel cannot take
    (``RuntimeError``, see :func:`fused_problem`). Every parameter of every group is checked before any state or
    parameter changes, so a rejected step changes nothing. Returns the closure's loss (None without a closure).
    """
    loss = None
    if closure is not None:
        with torch.enable_grad():
            loss = closure()
    index = 0
    for group in optimizer.param_groups:
        rounding = group.get("stochastic_rounding", False)
        for p in group["params"]:
            if p.grad is not None:
                if p.grad.layout in SPARSE_LAYOUTS:
                    raise RuntimeError(sparse_error)
                if rounding and p.dtype == torch.float16:
                    raise ValueError(
                        "`stochastic_rounding=True` supports bfloat16 parameters; got a float16 parameter "
                        f"(index {index})"
                    )
                if fused_dtypes is not None and group.get("fused"):
                    problem = fused_problem(p, group, fused_dtypes)
                    if problem is not None:
                        raise RuntimeError(f"fused=True cannot step parameter {index}: {problem}")
            index += 1
    return loss
