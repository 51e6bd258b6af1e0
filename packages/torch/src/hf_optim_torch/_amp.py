"""Mixed precision helper: step the LR scheduler only when a loss-scaled optimizer step was taken."""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import Optimizer

__all__ = ["scaler_step"]


def scaler_step(scaler: torch.amp.GradScaler, optimizer: Optimizer, scheduler: Any = None, *metrics: Any) -> bool:
    """``scaler.step(optimizer)``, ``scaler.update()``, then ``scheduler.step()`` only if the optimizer stepped.

    With fp16 loss scaling, ``GradScaler`` skips the optimizer step when the scaled gradients hold inf/NaN
    (and then lowers the scale). Stepping the scheduler anyway would advance the learning rate for a step
    that never happened (and torch warns "Detected call of `lr_scheduler.step()` before `optimizer.step()`").
    This helper keeps the two in lock step: a skipped step advances neither the optimizer state nor the
    schedule, so a run with skipped steps follows the same lr curve, counted in *applied* steps.

    Args:
        scaler (`torch.amp.GradScaler`): The scaler the loss was scaled with (``scaler.scale(loss).backward()``).
        optimizer (`torch.optim.Optimizer`): Any optimizer (e.g. :class:`AdamW`, :class:`Adafactor`).
        scheduler (*optional*): An LR scheduler of that optimizer (``LambdaLR`` from the ``get_*_schedule``
            factories, ``ReduceLROnPlateau``, ...), or None.
        *metrics: Passed to ``scheduler.step`` (e.g. the validation loss for ``ReduceLROnPlateau``).

    Returns:
        `bool`: True when the optimizer step was applied, False when it was skipped.

    A skipped step is detected from the public scale: ``update()`` multiplies it by ``backoff_factor`` (which
    ``GradScaler`` requires to be < 1) exactly when inf/NaN gradients were found; otherwise the scale stays or
    grows. Reading the scale synchronises with the device once per step, as ``GradScaler.step`` itself does.

    Example:
        >>> scaler = torch.amp.GradScaler("cuda")
        >>> with torch.autocast("cuda", dtype=torch.float16):
        ...     loss = model(batch)
        >>> scaler.scale(loss).backward()
        >>> applied = scaler_step(scaler, optimizer, scheduler)
        >>> optimizer.zero_grad()
    """
    if not scaler.is_enabled():
        optimizer.step()
        if scheduler is not None:
            scheduler.step(*metrics)
        return True
    before = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    applied = scaler.get_scale() >= before
    if applied and scheduler is not None:
        scheduler.step(*metrics)
    return applied
