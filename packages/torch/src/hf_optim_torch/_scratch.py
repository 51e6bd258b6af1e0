"""Work buffers reused across steps (the two-pass paths' per-tensor scratch space)."""

from __future__ import annotations

import threading

import torch

__all__ = ["scratch"]

_SCRATCH = threading.local()
#: the largest buffer kept between steps (float32 elements); bigger requests get a fresh tensor
_SCRATCH_KEEP = 1 << 22


def scratch(numel: int, device: torch.device) -> torch.Tensor:
    """A flat float32 work buffer of at least ``numel`` elements, reused across calls (per thread and device).

    Fresh multi-megabyte tensors cost page faults on every CPU step; a kept buffer does not. Its contents are
    undefined; callers write it before reading it and never keep it.
    """
    if device.type != "cpu":
        return torch.empty(numel, dtype=torch.float32, device=device)
    buffers: dict[torch.device, torch.Tensor] = _SCRATCH.__dict__.setdefault("buffers", {})
    buffer = buffers.get(device)
    if buffer is None or buffer.numel() < numel:
        buffer = torch.empty(numel, dtype=torch.float32, device=device)
        if numel <= _SCRATCH_KEEP:
            buffers[device] = buffer
    return buffer
