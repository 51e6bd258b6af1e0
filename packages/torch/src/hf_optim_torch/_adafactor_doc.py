"""The docstring of :class:`hf_optim_torch.Adafactor`: the algorithm, its code paths and every argument."""

from __future__ import annotations

from . import _docs

__all__ = ["ADAFACTOR_DOC"]

ADAFACTOR_DOC = rf"""Adafactor with the numerics of ``transformers.Adafactor`` (v4.57), every flag.

    Drop-in for transformers' optimizer (same signature, defaults, validation and state names ``step``,
    ``exp_avg``, ``exp_avg_sq_row``, ``exp_avg_sq_col``, ``exp_avg_sq``, ``RMS``). Tensors of rank >= 2 keep
    factored second moments over their last two dimensions; bfloat16/float16 parameters are updated in float32
    and stored back, their state stays float32. State tensors are created with ``*_like`` from the gradient.
    Paper: *Adafactor: Adaptive Learning Rates with Sublinear Memory Cost*, https://arxiv.org/abs/1804.04235

    .. math::
        \begin{{aligned}}
            &t \leftarrow t + 1, \quad \mathrm{{RMS}} \leftarrow \lVert\theta\rVert_2 / \sqrt{{n}} \\
            &\rho_t \leftarrow \min(10^{{-6}} t \text{{ if warmup\_init else }} 10^{{-2}},\ 1/\sqrt{{t}})
                \text{{ if relative\_step else }} \gamma \\
            &\alpha_t \leftarrow \max(\epsilon_2, \mathrm{{RMS}})\,\rho_t \text{{ if scale\_parameter else }} \rho_t \\
            &\hat\beta_{{2t}} \leftarrow 1 - t^{{c}}, \quad u \leftarrow g^2 + \epsilon_1 \\
            &R \leftarrow \hat\beta_{{2t}} R + (1-\hat\beta_{{2t}})\,\mathrm{{mean}}_{{-1}}(u), \quad
             C \leftarrow \hat\beta_{{2t}} C + (1-\hat\beta_{{2t}})\,\mathrm{{mean}}_{{-2}}(u) \\
            &u \leftarrow \big(\mathrm{{rsqrt}}(R / \mathrm{{mean}}_{{-1}}(R)) \otimes \mathrm{{rsqrt}}(C)\big)\, g
             \quad (\text{{rank}} < 2:\ V \leftarrow \hat\beta_{{2t}} V + (1-\hat\beta_{{2t}}) u,\ u \leftarrow \mathrm{{rsqrt}}(V) g) \\
            &u \leftarrow u / \max(\mathrm{{RMS}}(u)/d, 1), \quad u \leftarrow \alpha_t u \\
            &m \leftarrow \beta_1 m + (1-\beta_1) u, \quad u \leftarrow m \quad \text{{if }} \beta_1 \text{{ is set}} \\
            &\theta \leftarrow \theta + (-\lambda \alpha_t)\,\theta \quad \text{{if }} \lambda \ne 0, \qquad
             \theta \leftarrow \theta - u
        \end{{aligned}}

    On the for-loop and foreach paths every product is rounded on its own (no fused multiply-add), in the order of
    the float64 reference ``hf_optim_spec.reference.adafactor``.

    The two-pass path (``fused``; the default for float32/bfloat16/float16 parameters on CPU, and on CUDA for
    tensors of at least 64M elements, where the launches of a per-tensor path cost less than its data; the
    arithmetic is float32 for all three) computes the same update in two sweeps per tensor, with no host
    synchronisation (the RMS, the lr and the clipping factor stay tensors; the step's functions :math:`\rho_t` and
    :math:`\hat\beta_{{2t}}` are Python floats, as in transformers) and one reused work buffer instead of per-step
    temporaries. Every path takes these scalars from one place, ``hf_optim_torch._adafactor_scalars`` (the relative
    step is the spec's ``adafactor_relative_step`` expression). For a factored
    tensor, sweep 1 reads :math:`g` once, in row blocks that stay in cache: :math:`g^2` goes into the buffer, its
    row sums give the block's new :math:`R`, its column sums the new :math:`C`, and its column sums weighted by
    :math:`1/R_i` the squared norm of the update without forming it,
    :math:`\sum_{{ij}} (r_i c_j g_{{ij}})^2 = \mathrm{{mean}}(R) \sum_j C_j^{{-1}} \sum_i g_{{ij}}^2 / R_i`.
    Sweep 2 writes the factors :math:`b_{{ij}} = r_i \alpha_t\, \mathrm{{rsqrt}}(C_j) / \text{{clip}}` of the
    block into the buffer (no read of :math:`g`) and applies :math:`\theta \leftarrow \theta - g \cdot b` (or
    folds :math:`g \cdot b` into :math:`m`). No BLAS product is used: under ``torch.set_float32_matmul_precision``
    below ``"highest"`` a float32 matrix-vector product may run in bfloat16 or TF32.
    On CPU, tensors go instead through a C kernel compiled at first use (``_native/adafactor.c``; see
    ``docs/guarantees.md``, off with ``HF_OPTIM_NATIVE=0``): the same two sweeps, each one pass over memory, with
    sums in double, in one call for the matrices and one for the unfactored tensors. It reads float32, bfloat16
    and float16 parameters and gradients as they are (no float32 copy of a 16-bit gradient), computes in float32
    and stores a 16-bit parameter rounded to nearest (a bfloat16 one with ``stochastic_rounding`` takes the torch
    path). Without it, small unfactored
    tensors (biases, norms) on CPU take the multi-tensor path together. transformers
    materialises :math:`g^2`, :math:`g^2+\epsilon_1` and the outer product :math:`R \otimes C` for every tensor.
    The regrouped products agree with the reference within the spec float32 tolerance, not bit for bit; the state
    is the same.

    Args:
        {_docs.PARAMS}
        lr (`float`, *optional*):
            A fixed step size, used when ``relative_step=False`` (and then required). With ``relative_step=True``
            the step size comes from the step count instead and ``lr`` must stay None.
        eps (`tuple[float, float]`, *optional*, defaults to `(1e-30, 0.001)`):
            ``(eps1, eps2)``: ``eps1`` is added to every squared gradient before it enters the second-moment
            statistics; ``eps2`` is the smallest parameter RMS the step size is scaled by.
        clip_threshold (`float`, *optional*, defaults to 1.0):
            The update is divided by ``max(1, RMS(update) / clip_threshold)``, so its RMS never exceeds this value.
        decay_rate (`float`, *optional*, defaults to -0.8):
            The exponent ``c`` of the second-moment decay ``beta2_t = 1 - t**c``: closer to 0 forgets faster.
        beta1 (`float`, *optional*):
            Decay of a first moment (momentum) of the update; None (the default) keeps no first moment and saves
            its memory.
        weight_decay (`float`, *optional*, defaults to 0.0):
            Decoupled weight decay: each step the parameter shrinks by ``weight_decay`` times the step size.
        scale_parameter (`bool`, *optional*, defaults to `True`):
            Multiply the step size by the parameter's RMS (at least ``eps2``), so that updates are relative to the
            parameter's scale.
        relative_step (`bool`, *optional*, defaults to `True`):
            Derive the step size from the step count, ``min(0.01, 1/sqrt(t))``, instead of taking ``lr``.
        warmup_init (`bool`, *optional*, defaults to `False`):
            With ``relative_step``, start the step size at ``1e-6 * t`` (a linear warm-up) instead of 0.01.
        first_moment (`str`, *optional*, defaults to `"lr_scaled"`):
            Keyword-only extension. ``"lr_scaled"`` is transformers' behaviour: the first moment averages the
            update *after* it was multiplied by the learning rate. ``"unscaled"`` averages the clipped update and
            multiplies the average by the current learning rate (the paper's momentum).
        {_docs.MAXIMIZE}
        {_docs.FOREACH}
        {_docs.FUSED_DOC}
        {_docs.STOCHASTIC_ROUNDING}
            Adafactor always computes a 16-bit parameter's step in float32 (there is no ``fp32_math``
            argument), so this only changes how that float32 result is stored. The step in the rounding key is
            the parameter's own ``step`` after the update (1 at the first update).
        {_docs.ROUNDING_SEED}

    Differences from transformers:
        ``lr=None`` with ``relative_step=False`` is rejected at construction (transformers fails at the first
        step). The lr and RMS are computed as tensors (no host synchronisation); ``step`` is stored as a 0-dim
        tensor (transformers' int steps load).

    Raises:
        ValueError: "Cannot combine manual `lr` and `relative_step=True` options", "`warmup_init=True`
            requires `relative_step=True`", out-of-range values (spec ``adafactor``); at ``step``, a float16
            parameter with a gradient in a group with ``stochastic_rounding=True``.

    Example:
        >>> model = torch.nn.Linear(4, 2)
        >>> optimizer = Adafactor(model.parameters(), scale_parameter=False, relative_step=False, lr=1e-3)
        >>> model(torch.randn(8, 4)).sum().backward()
        >>> optimizer.step()
    """
