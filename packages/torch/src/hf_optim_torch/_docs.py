"""Docstring fragments shared by the optimizer and schedule shells (one place for shared parameter text)."""

from __future__ import annotations

__all__ = [
    "FOREACH",
    "FP32_MATH",
    "FUSED_DOC",
    "LAST_EPOCH",
    "MAXIMIZE",
    "PARAMS",
    "ROUNDING_SEED",
    "SCHEDULE_RETURNS",
    "STOCHASTIC_ROUNDING",
]

PARAMS = """params (`Iterable[nn.parameter.Parameter]`):
            Iterable of parameters to optimize, of ``(name, parameter)`` pairs (``model.named_parameters()``), or
            of dicts defining parameter groups."""

FOREACH = """foreach (`bool`, *optional*):
            Keyword-only. Use the multi-tensor (``torch._foreach_*``) code path. By default it is used when every
            parameter lives on an accelerator; on CPU the per-tensor loop is faster (each foreach op streams every
            tensor through memory). Both paths give bit-identical results on CPU."""

MAXIMIZE = """maximize (`bool`, *optional*, defaults to `False`):
            Keyword-only. Maximize the objective instead of minimizing it (the gradient is negated)."""

FP32_MATH = """fp32_math (`bool`, *optional*, defaults to `False`):
            Keyword-only extension. For bfloat16/float16 parameters, step in float32: the parameter, its gradient
            and its state are upcast to float32 copies, the copies are updated exactly as float32 parameters are
            (same code path), and the parameter and the state are stored back in the parameter dtype once per step
            (the state keeps the parameter dtype). ``False`` keeps transformers' numerics, where every op rounds to
            the parameter dtype. No effect on float32/float64 parameters."""

STOCHASTIC_ROUNDING = """stochastic_rounding (`bool`, *optional*, defaults to `False`):
            Keyword-only extension. Store bfloat16 parameters with stochastic rounding of their float32 result
            instead of rounding to nearest: unbiased, so updates below half a bfloat16 ulp still move a parameter
            on average. The random bits are a hash of ``(rounding_seed, parameter index, step, element position)``
            (:mod:`hf_optim_spec.rounding`, not a torch generator): a run is reproducible, resumes exactly from a
            checkpoint and rounds as ``hf_optim_tf`` does. The parameter index is its position among all
            parameters of all param groups. State tensors are rounded to nearest; float32/float64 parameters are
            unaffected; a float16 parameter with a gradient makes ``step`` raise ``ValueError`` before anything
            changes."""

ROUNDING_SEED = """rounding_seed (`int`, *optional*, defaults to 0):
            Keyword-only extension. Seed of the stochastic rounding bits (``0 <= seed < 2**32``); runs with the same
            seed round identically."""

LAST_EPOCH = """last_epoch (`int`, *optional*, defaults to -1):
            The step the schedule last produced; -1 (the default) starts a new schedule at step 0."""

SCHEDULE_RETURNS = """Returns:
        `torch.optim.lr_scheduler.LambdaLR` with the appropriate schedule. Its ``lr_lambda`` is a
        :class:`SpecFactor`: picklable, deep-copyable, and its ``state_dict()`` loads with
        ``torch.load(weights_only=True)``."""

FUSED_DOC = """fused (`bool`, *optional*):
            Keyword-only. Use the fused path (one pass per tensor through torch's fused kernel, or a single in-place
            pass). By default it is used for float32/bfloat16 tensors on CPU and CUDA unless ``foreach`` is given, the
            lr is a tensor or the step is being compiled; float64 and other tensors take the exact for-loop path. The fused
            path reassociates a few products, so it agrees with the float64 reference within the spec float32
            tolerance rather than bit for bit."""
