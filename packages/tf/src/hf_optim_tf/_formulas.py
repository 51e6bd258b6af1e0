"""The update formulas the Keras optimizers share, each written once, in ``keras.ops``.

Adam's bias-corrected step size (:class:`~hf_optim_tf.AdamW`, :class:`~hf_optim_tf.AdamWeightDecay`), the decoupled
weight decay (all three optimizers), and Adafactor's step size, second-moment decay ``beta2t`` and update clipping.
Adafactor's relative step :math:`\\rho_t` is the spec's own ``adafactor_relative_step`` expression, lowered to
``keras.ops`` (the parameter scale and the manual lr around it are tensors of each step, which the formula language
cannot leave unbound, so they are applied here).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import hf_optim_spec as hs
import keras
from hf_optim_spec import formula
from keras import ops

from ._schedules import lower_to_keras

__all__ = [
    "adafactor_beta2t",
    "adafactor_step_size",
    "adam_step_size",
    "clip_by_rms",
    "decoupled_weight_decay",
    "one_minus_power",
    "relative_step_formula",
    "rms",
]


def one_minus_power(beta: float, step: Any, dtype: str) -> Any:
    """``1 - beta ** step`` for a Python float ``beta`` and a ``step`` tensor of ``dtype``.

    In float64 (AdamW: torch computes its scalars in Python floats) ``beta`` enters as a float64 tensor (the torch
    backend would otherwise make the Python float float32 first). JAX without ``jax_enable_x64`` gives float32 for
    float64, where ``1 - 0.999 ** 1`` loses four digits to cancellation; there it is ``-expm1(step * log(beta))``
    with ``log(beta)`` taken in Python float64. In any other ``dtype`` (AdamWeightDecay: tf.keras computes in the
    variable dtype) ``beta`` is rounded to ``dtype`` and so is every operation.
    """
    if dtype != "float64":
        return ops.subtract(1.0, ops.power(ops.convert_to_tensor(beta, dtype=dtype), step))
    if keras.backend.standardize_dtype(step.dtype) != "float64":
        if beta == 0.0:  # 0 ** step == 0 from the first step on
            return ops.ones_like(step)
        return ops.negative(ops.expm1(ops.multiply(step, math.log(beta))))
    return 1.0 - ops.power(ops.convert_to_tensor(beta, dtype="float64"), step)


def adam_step_size(learning_rate: Any, beta_1: float, beta_2: float, step: Any, dtype: str) -> Any:
    r"""Adam's step size with the bias corrections folded in: :math:`\eta\sqrt{1-\beta_2^t}/(1-\beta_1^t)`.

    Args:
      learning_rate: :math:`\eta`, a tensor of ``dtype``.
      beta_1, beta_2: the moment decays (Python floats).
      step: :math:`t` (1 at the first update), a tensor of ``dtype``.
      dtype: the dtype of the computation (see :func:`one_minus_power`).
    """
    correction_2 = ops.sqrt(one_minus_power(beta_2, step, dtype))
    return ops.divide(ops.multiply(learning_rate, correction_2), one_minus_power(beta_1, step, dtype))


def decoupled_weight_decay(param: Any, learning_rate: Any, rate: Any, *, per_element: bool = False) -> Any:
    r"""The decoupled weight decay :math:`\theta - \eta\lambda\theta`, in one of transformers' two operation orders.

    Args:
      param: :math:`\theta`.
      learning_rate: :math:`\eta` (for Adafactor its step size :math:`\alpha_t`).
      rate: :math:`\lambda`.
      per_element: False (torch, AdamW and Adafactor): the coefficient :math:`-\eta\lambda` is a float64 scalar,
        cast to ``param``'s dtype once, and the result is :math:`\theta + (-\eta\lambda)\,\theta`. True (tf.keras,
        AdamWeightDecay): ``learning_rate`` and ``rate`` are tensors of ``param``'s dtype and every product is
        rounded to it, :math:`\theta - (\eta\theta)\lambda`.
    """
    if per_element:
        return ops.subtract(param, ops.multiply(ops.multiply(learning_rate, param), rate))
    coefficient = ops.cast(-learning_rate * rate, keras.backend.standardize_dtype(param.dtype))
    return ops.add(param, ops.multiply(coefficient, param))


def rms(x: Any) -> Any:
    r"""Root mean square :math:`\lVert x\rVert_2/\sqrt{\mathrm{numel}(x)}` (a scalar of ``x``'s dtype)."""
    size = math.prod(x.shape) if len(x.shape) else 1
    return ops.divide(ops.sqrt(ops.sum(ops.square(x))), math.sqrt(size))


def clip_by_rms(update: Any, threshold: float) -> Any:
    r"""Adafactor's update clipping: :math:`U / \max(1, \mathrm{RMS}(U)/d)`."""
    return ops.divide(update, ops.maximum(ops.divide(rms(update), threshold), 1.0))


def adafactor_beta2t(step: Any, decay_rate: float) -> Any:
    r"""Adafactor's second-moment decay :math:`\hat\beta_{2t} = 1 - t^{c}` (``step`` a float64 tensor)."""
    return 1.0 - ops.power(step, decay_rate)


@functools.cache
def relative_step_formula(warmup_init: bool) -> formula.Bound:
    r"""The relative step :math:`\rho_t` of the spec's ``adafactor_relative_step`` expression, bound once.

    Bound with ``relative_step=True`` and ``scale_parameter=False``, so the value is :math:`\rho_t` alone (the
    parameter RMS and the manual lr are tensors of each step; :func:`adafactor_step_size` applies them).
    """
    spec = hs.get("adafactor_relative_step")
    params = {
        "lr": None,
        "scale_parameter": False,
        "relative_step": True,
        "warmup_init": warmup_init,
        "eps2": spec.parameters["eps2"].default,
        "rms": 0.0,
    }
    return spec.program.bind(params)


def adafactor_step_size(
    step: Any,
    learning_rate: Any,
    param_rms: Any,
    *,
    relative_step: bool,
    warmup_init: bool,
    scale_parameter: bool,
    epsilon_2: float,
) -> Any:
    r"""Adafactor's step size :math:`\alpha_t = \max(\epsilon_2, \mathrm{RMS}(\theta))\,\rho_t` (or
    :math:`\rho_t` without ``scale_parameter``), in float64, as torch computes it from Python floats.

    :math:`\rho_t` is the spec's relative step (:func:`relative_step_formula`) with ``relative_step``, else
    ``learning_rate``.
    """
    if relative_step:
        rho = lower_to_keras(relative_step_formula(warmup_init), step)
    else:
        rho = ops.cast(learning_rate, "float64")
    if scale_parameter:
        return ops.maximum(epsilon_2, ops.cast(param_rms, "float64")) * rho
    return rho
