"""Docstring fragments shared by the optimizer and schedule shells (one place for shared parameter text)."""

from __future__ import annotations

__all__ = ["FOREACH", "LAST_EPOCH", "MAXIMIZE", "PARAMS", "SCHEDULE_RETURNS"]

PARAMS = """params (`Iterable[nn.parameter.Parameter]`):
            Iterable of parameters to optimize, of ``(name, parameter)`` pairs (``model.named_parameters()``), or
            of dicts defining parameter groups."""

FOREACH = """foreach (`bool`, *optional*):
            Keyword-only. Use the multi-tensor (``torch._foreach_*``) code path. By default it is used when every
            parameter lives on an accelerator; on CPU the per-tensor loop is faster (each foreach op streams every
            tensor through memory). Both paths give bit-identical results on CPU."""

MAXIMIZE = """maximize (`bool`, *optional*, defaults to `False`):
            Keyword-only. Maximize the objective instead of minimizing it (the gradient is negated)."""

LAST_EPOCH = """last_epoch (`int`, *optional*, defaults to -1):
            The index of the last epoch when resuming training."""

SCHEDULE_RETURNS = """Returns:
        `torch.optim.lr_scheduler.LambdaLR` with the appropriate schedule. Its ``lr_lambda`` is a
        :class:`SpecFactor`: picklable, deep-copyable, and its ``state_dict()`` loads with
        ``torch.load(weights_only=True)``."""
