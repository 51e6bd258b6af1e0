"""The docstring of :class:`hf_optim_torch.AdamWeightDecay`: the algorithm, its code paths and every argument."""

from __future__ import annotations

from . import _docs
from ._docs import FUSED_DOC

__all__ = ["ADAM_WEIGHT_DECAY_DOC"]

ADAM_WEIGHT_DECAY_DOC = rf"""Adam with decoupled weight decay, with the numerics of transformers' TensorFlow ``AdamWeightDecay``.

    A torch twin of the (removed) Keras optimizer, same spec (``adam_weight_decay``) and numerics as
    ``hf_optim_tf.AdamWeightDecay``: the weight decay is applied *before* the Adam update, with the scheduled lr
    (not bias-corrected), only to the parameters selected by the include/exclude regexes; the Adam step is
    legacy Keras Adam (epsilon added to :math:`\sqrt{{v}}`, bias correction folded into the step size). The step
    count is optimizer-wide, like Keras ``iterations``: it advances for parameters without a gradient too.

    .. math::
        \begin{{aligned}}
            &g \leftarrow \mathrm{{clip}}(g) \quad (\text{{clipnorm, else global\_clipnorm, else clipvalue}}) \\
            &\theta \leftarrow \theta - (\gamma\,\theta)\,\lambda \quad \text{{if decayed}} \\
            &\alpha_t \leftarrow \gamma \sqrt{{1 - \beta_2^t}} / (1 - \beta_1^t) \\
            &m \leftarrow m + (g - m)(1 - \beta_1), \quad v \leftarrow v + (g^2 - v)(1 - \beta_2), \quad
             \hat v \leftarrow \max(\hat v, v) \text{{ (amsgrad)}} \\
            &\theta \leftarrow \theta - (m\,\alpha_t) / (\sqrt{{v \text{{ or }} \hat v}} + \epsilon)
        \end{{aligned}}

    As in TF, the hyperparameters are cast to the parameter dtype and every op runs in it, unless
    ``fp32_math=True`` (an extension): then a bfloat16/float16 parameter is stepped as a float32 one
    (hyperparameters cast to float32; float32 copies of the parameter, its clipped gradient and its moments go
    through the paths below) and the parameter and its moments are rounded back to its dtype once per step.
    Clipping is unchanged: it runs on the gradients as given. ``stochastic_rounding=True`` (which needs
    ``fp32_math=True``) then stores a bfloat16 parameter with stochastic rounding of that float32 result.

    The fused path (the default for float32 parameters on CPU and CUDA) runs torch's fused AdamW kernel
    (``torch._fused_adamw_``, one pass per tensor), which computes
    :math:`\theta(1-\gamma'\lambda') - \gamma' m/(\sqrt{{v}}+\epsilon)` when given an infinite step count (no bias
    correction of its own), with :math:`\gamma' = \alpha_t` and :math:`\lambda' = \gamma\lambda/\alpha_t` (zero for
    parameters not decayed), from a host mirror of the step (no device synchronisation). It keeps intermediates in
    float32 and updates :math:`m` as a lerp, so it agrees with the reference within the spec float32 tolerance,
    not bit for bit. bfloat16/float16 parameters keep the exact path (TF rounds the hyperparameters to them).

    Args:
        {_docs.PARAMS}
            Weight-decay patterns are matched (``re.search``) against the parameter names, so pass
            ``model.named_parameters()``; unnamed parameters with patterns set are rejected.
        learning_rate (`float` or `torch.Tensor`, *optional*, defaults to 1e-3):
            The learning rate (stored as the group's ``"lr"``, so torch LR schedulers drive it).
        beta_1 (`float`, *optional*, defaults to 0.9): Decay rate of the first moment.
        beta_2 (`float`, *optional*, defaults to 0.999): Decay rate of the second moment.
        epsilon (`float`, *optional*, defaults to 1e-7): Added to :math:`\sqrt{{v}}`.
        amsgrad (`bool`, *optional*, defaults to `False`): Use the AMSGrad variant.
        weight_decay_rate (`float`, *optional*, defaults to 0.0): The weight decay to apply.
        include_in_weight_decay (`list[str]`, *optional*): Regexes of parameter names to decay (wins over the
            exclude list).
        exclude_from_weight_decay (`list[str]`, *optional*): Regexes of parameter names not to decay.
        clipnorm (`float`, *optional*): Keyword-only. Clip each gradient tensor to this L2 norm.
        clipvalue (`float`, *optional*): Keyword-only. Clip every gradient element to ``[-c, c]``.
        global_clipnorm (`float`, *optional*): Keyword-only. Clip all gradients together to this joint L2 norm.
            The clip settings are optimizer-wide (read from the constructor arguments).
        {_docs.FOREACH}
        {FUSED_DOC}
        {_docs.FP32_MATH}
            Here the hyperparameters are cast to float32 too (not to the parameter dtype, as TF does); with
            bfloat16 that keeps ``beta_2=0.999`` from rounding to 1.
        {_docs.STOCHASTIC_ROUNDING}
            It needs ``fp32_math=True``: the parameter is rounded from the float32 result of the step. The step in
            the rounding key is the optimizer-wide step of the update (Keras ``iterations + 1``).
        {_docs.ROUNDING_SEED}

    State (per parameter): ``step`` (optimizer-wide count), ``exp_avg``, ``exp_avg_sq``, ``max_exp_avg_sq``
    (amsgrad only).

    Raises:
        ValueError, TypeError: invalid arguments (spec ``adam_weight_decay``), e.g. two clipping options, or
            ``stochastic_rounding=True`` without ``fp32_math=True``. ValueError at ``step``: a float16 parameter
            with a gradient in a group with ``stochastic_rounding=True``.

    Example:
        >>> model = torch.nn.Linear(4, 2)
        >>> optimizer = AdamWeightDecay(model.named_parameters(), learning_rate=1e-3, weight_decay_rate=0.01,
        ...                             exclude_from_weight_decay=["bias"])
    """
