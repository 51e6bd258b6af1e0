"""hf-optim bugs these clients found, as strict xfail marks: a fix turns the mark into a failure, so it is removed.

Each reproducer runs without any client:

``LOAD_TWICE``::

    p = [torch.nn.Parameter(torch.ones(2))]
    opt = hf_optim_torch.AdamW(p)                  # also Adafactor, AdamWeightDecay
    sd = opt.state_dict()
    opt.load_state_dict(sd)
    opt.load_state_dict(sd)  # ValueError: param group 0 in state_dict lacks the hyperparameters ['differentiable']

torch's ``Optimizer.__setstate__`` (called by every ``load_state_dict``) adds ``differentiable`` to
``optimizer.defaults``; the next load then requires every group of the checkpoint to hold it. accelerate's
``prepare`` round-trips the optimizer's state once, so every later load fails: the Trainer's
``resume_from_checkpoint`` and accelerate's ``load_state``.

``RELATIVE_STEP_LR``::

    opt = hf_optim_torch.Adafactor(p, lr=None, relative_step=True, warmup_init=True)
    hf_optim_torch.AdafactorSchedule(opt)          # sets each group's lr to 0.0, as transformers' does
    opt.load_state_dict(opt.state_dict())  # ValueError: Cannot combine manual `lr` and `relative_step=True` options

The load check validates the group's (scheduler-written) lr against the spec's constructor rule, so Adafactor with
its documented AdafactorSchedule cannot reload its own state; accelerate's ``prepare`` (and so the Trainer) fails
before the first step.
"""

from __future__ import annotations

import pytest

LOAD_TWICE = pytest.mark.xfail(
    strict=True, raises=ValueError, reason="hf_optim_torch: a second load_state_dict wants 'differentiable'"
)
RELATIVE_STEP_LR = pytest.mark.xfail(
    strict=True, raises=ValueError, reason="hf_optim_torch: Adafactor state with AdafactorSchedule's lr does not load"
)
