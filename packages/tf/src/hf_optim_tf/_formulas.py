"""The update formulas the Keras optimizers share, each written once, for a namespace of ``keras.ops`` functions.

Adam's bias-corrected step size (:class:`~hf_optim_tf.AdamW`, :class:`~hf_optim_tf.AdamWeightDecay`), the decoupled
weight decay (all three optimizers), and Adafactor's step size, second-moment decay ``beta2t``, statistics and update
clipping. The tensor updates take their ops as an argument ``o``: ``keras.ops`` in ``update_step``, one variable at a
time (for Adafactor, ``_sums.KERAS_OPS``: ``keras.ops`` with its sums), or, on Keras' torch backend, the same
functions as torch calls: ``_multi_tensor.ForeachOps`` on lists of tensors (the AdamW family, every variable of a
step at once; Adafactor, its small matrices), and Adafactor's ``_torch_ops.FlatOps`` on its small vectors concatenated
and ``_torch_ops.PieceOps`` on one larger tensor (its elementwise stages on pieces of the tensor).
Adafactor's relative step :math:`\\rho_t` is the spec's own ``adafactor_relative_step`` expression, lowered to
``keras.ops`` (the parameter scale and the manual lr around it are tensors of each step, which the formula language
cannot leave unbound, so they are applied here).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import hf_optim_spec as hs
import keras
from hf_optim_spec import formula
from keras import ops

from ._schedules import lower_to_keras
from ._sums import KERAS_OPS

__all__ = [
    "adafactor_beta2t",
    "adafactor_direction",
    "adafactor_factors",
    "adafactor_parameter",
    "adafactor_rho",
    "adafactor_second_moment",
    "adafactor_squared",
    "adafactor_step_size",
    "adafactor_unclipped",
    "adam_step_size",
    "adam_weight_decay_update",
    "adamw_update",
    "clip_by_rms",
    "clip_divisor",
    "decay_coefficient",
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


def decoupled_weight_decay(
    param: Any,
    learning_rate: Any = None,
    rate: Any = None,
    *,
    per_element: bool = False,
    o: Any = ops,
    coefficient: Any = None,
) -> Any:
    r"""The decoupled weight decay :math:`\theta - \eta\lambda\theta`, in one of transformers' two operation orders.

    Args:
      param: :math:`\theta`.
      learning_rate: :math:`\eta` (for Adafactor its step size :math:`\alpha_t`).
      rate: :math:`\lambda`.
      per_element: False (torch, AdamW and Adafactor): the coefficient :math:`-\eta\lambda` is a float64 scalar,
        cast to ``param``'s dtype once, and the result is :math:`\theta + (-\eta\lambda)\,\theta`. True (tf.keras,
        AdamWeightDecay): ``learning_rate`` and ``rate`` are tensors of ``param``'s dtype and every product is
        rounded to it, :math:`\theta - (\eta\theta)\lambda`.
      o: the namespace of the elementwise ops: ``keras.ops``, ``_multi_tensor.ForeachOps`` for lists of tensors
        or ``_torch_ops.PieceOps`` for one tensor.
      coefficient: where the caller has it already, the cast :math:`-\eta\lambda` (``per_element=False``; then
        ``learning_rate`` and ``rate`` are not used).
    """
    if per_element:
        return o.subtract(param, o.multiply(o.multiply(learning_rate, param), rate))
    if coefficient is None:
        coefficient = decay_coefficient(learning_rate, rate, keras.backend.standardize_dtype(param.dtype))
    return o.add(param, o.multiply(coefficient, param))


def decay_coefficient(learning_rate: Any, rate: float, dtype: str) -> Any:
    r"""The coefficient :math:`-\eta\lambda` of :func:`decoupled_weight_decay`, in float64, cast to ``dtype``."""
    return ops.cast(-learning_rate * rate, dtype)


def adamw_update(
    o: Any,
    param: Any,
    grad: Any,
    exp_avg: Any,
    exp_avg_sq: Any,
    *,
    beta_1: float,
    beta_2: float,
    epsilon: Any,
    negative_step_size: Any,
    q: Callable[[Any], Any] = lambda x: x,
) -> tuple[Any, Any, Any]:
    r"""AdamW's moments and parameter after one step, in transformers' operation order (no weight decay).

    :math:`m \leftarrow \beta_1 m + (1-\beta_1) g`, :math:`v \leftarrow \beta_2 v + ((1-\beta_2) g) g`,
    :math:`\theta \leftarrow \theta + (-\alpha m) / (\sqrt{v} + \epsilon)`, each op in ``o`` (``keras.ops`` for one
    variable, ``ForeachOps`` for a list); ``q`` rounds what torch materialises in a 16-bit parameter's dtype (see
    :class:`~hf_optim_tf.AdamW`). Returns the new (parameter, ``exp_avg``, ``exp_avg_sq``).
    """
    exp_avg = q(o.add(q(o.multiply(exp_avg, beta_1)), o.multiply(1.0 - beta_1, grad)))
    exp_avg_sq = q(o.add(q(o.multiply(exp_avg_sq, beta_2)), o.multiply(o.multiply(1.0 - beta_2, grad), grad)))
    denom = q(o.add(q(o.sqrt(exp_avg_sq)), epsilon))
    param = q(o.add(param, o.divide(o.multiply(negative_step_size, exp_avg), denom)))
    return param, exp_avg, exp_avg_sq


def adam_weight_decay_update(
    o: Any,
    param: Any,
    grad: Any,
    exp_avg: Any,
    exp_avg_sq: Any,
    max_exp_avg_sq: Any,
    *,
    one_minus_beta_1: Any,
    one_minus_beta_2: Any,
    epsilon: Any,
    alpha: Any,
) -> tuple[Any, Any, Any, Any]:
    r"""AdamWeightDecay's (tf.keras Adam's) moments and parameter after one step, every op in the compute dtype.

    :math:`m \leftarrow m + (g - m)(1-\beta_1)`, :math:`v \leftarrow v + (g^2 - v)(1-\beta_2)`,
    :math:`\hat v = \max(\hat v, v)` with amsgrad (``max_exp_avg_sq`` not None),
    :math:`\theta \leftarrow \theta - (m\alpha) / (\sqrt{\hat v} + \epsilon)`, each op in ``o`` (``keras.ops`` or
    ``ForeachOps``). Returns the new (parameter, ``exp_avg``, ``exp_avg_sq``, :math:`\hat v`) (:math:`\hat v` is
    ``exp_avg_sq`` without amsgrad).
    """
    exp_avg = o.add(exp_avg, o.multiply(o.subtract(grad, exp_avg), one_minus_beta_1))
    exp_avg_sq = o.add(exp_avg_sq, o.multiply(o.subtract(o.square(grad), exp_avg_sq), one_minus_beta_2))
    second = exp_avg_sq if max_exp_avg_sq is None else o.maximum(max_exp_avg_sq, exp_avg_sq)
    param = o.subtract(param, o.divide(o.multiply(exp_avg, alpha), o.add(o.sqrt(second), epsilon)))
    return param, exp_avg, exp_avg_sq, second


def rms(x: Any, o: Any = KERAS_OPS) -> Any:
    r"""Root mean square :math:`\lVert x\rVert_2/\sqrt{\mathrm{numel}(x)}` (a scalar of ``x``'s dtype; with
    ``ForeachOps`` or ``FlatOps``, the RMS of each of the tensors ``x`` stands for, as per-tensor scalars); ``o`` as
    in :func:`adafactor_direction`."""
    return o.divide(o.sqrt(o.sum_of_squares(x)), o.root_size(x))


def clip_divisor(update_rms: Any, threshold: float, o: Any = KERAS_OPS) -> Any:
    r"""The divisor of Adafactor's update clipping, :math:`\max(1, \mathrm{RMS}(U)/d)`."""
    return o.maximum(o.divide(update_rms, threshold), 1.0)


def clip_by_rms(update: Any, threshold: float, o: Any = KERAS_OPS) -> Any:
    r"""Adafactor's update clipping: :math:`U / \max(1, \mathrm{RMS}(U)/d)`."""
    return o.divide(update, clip_divisor(rms(update, o), threshold, o))


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


def adafactor_rho(step: Any, learning_rate: Any, *, relative_step: bool, warmup_init: bool) -> Any:
    r"""Adafactor's :math:`\rho_t` in float64: the spec's relative step (:func:`relative_step_formula`) with
    ``relative_step``, else ``learning_rate``."""
    if relative_step:
        return lower_to_keras(relative_step_formula(warmup_init), step)
    return ops.cast(learning_rate, "float64")


def adafactor_step_size(rho: Any, param_rms: Any, *, scale_parameter: bool, epsilon_2: float) -> Any:
    r"""Adafactor's step size :math:`\alpha_t = \max(\epsilon_2, \mathrm{RMS}(\theta))\,\rho_t` (or :math:`\rho_t`
    without ``scale_parameter``), in float64, as torch computes it from Python floats. Elementwise: ``rho`` and
    ``param_rms`` may hold one value per variable."""
    if scale_parameter:
        return ops.maximum(epsilon_2, ops.cast(param_rms, "float64")) * rho
    return rho


def adafactor_direction(
    o: Any, grad: Any, row: Any, col: Any, full: Any, *, keep: Any, mix: Any, epsilon_1: Any, clip_threshold: float
) -> tuple[Any, Any, Any, Any]:
    r"""Adafactor's second-moment statistics after one step and its clipped update, for one variable.

    :math:`u = g^2 + \epsilon_1`; factored (``full`` None): :math:`R \leftarrow \hat\beta_{2t} R +
    (1-\hat\beta_{2t})\,\mathrm{mean}_{-1}(u)`, :math:`C` likewise over the second-to-last axis and
    :math:`U = g / \sqrt{(R/\mathrm{mean}_{-1} R)\,C}`; else :math:`V \leftarrow \hat\beta_{2t} V +
    (1-\hat\beta_{2t}) u`, :math:`U = g/\sqrt V`; then :math:`U / \max(1, \mathrm{RMS}(U)/d)`. The stages
    (:func:`adafactor_squared`, :func:`adafactor_second_moment`, :func:`adafactor_factors`,
    :func:`adafactor_unclipped`, :func:`clip_by_rms`) are public so that Keras' torch backend can run the
    elementwise ones on pieces of a tensor (``Adafactor._update_lists``).

    Args:
      o: the ops: ``KERAS_OPS`` (``keras.ops`` and the sums of ``hf_optim_tf._sums``) in ``update_step``, or on
        Keras' torch backend the same functions as plain torch calls: ``_multi_tensor.ForeachOps`` (lists of
        tensors, one per variable), ``_torch_ops.FlatOps`` (vectors concatenated) or ``_torch_ops.PieceOps`` (one
        tensor).
      keep, mix: :math:`\hat\beta_{2t}` and :math:`1-\hat\beta_{2t}`, in the compute dtype.
      epsilon_1: :math:`\epsilon_1` as a tensor of the compute dtype.

    Returns (the clipped update, ``row``, ``col``, ``full``): the new statistics (None where the variable has none).
    """
    squared = adafactor_squared(o, grad, epsilon_1)
    row, col, full = adafactor_second_moment(o, squared, row, col, full, keep=keep, mix=mix)
    update = adafactor_unclipped(o, grad, adafactor_factors(o, row, col), full)
    return clip_by_rms(update, clip_threshold, o), row, col, full


def adafactor_squared(o: Any, grad: Any, epsilon_1: Any) -> Any:
    r""":math:`u = g^2 + \epsilon_1` (elementwise)."""
    return o.add(o.square(grad), epsilon_1)


def adafactor_second_moment(
    o: Any, squared: Any, row: Any, col: Any, full: Any, *, keep: Any, mix: Any
) -> tuple[Any, Any, Any]:
    r"""The new (``row``, ``col``, ``full``) from ``squared`` (:math:`u`): factored (``full`` None), the row and
    column means of :math:`u` (reductions) averaged into :math:`R` and :math:`C`; else :math:`u` averaged into
    :math:`V` (elementwise)."""
    if full is None:
        row = o.add(o.multiply(row, keep), o.multiply(o.mean_over(squared, -1), mix))
        col = o.add(o.multiply(col, keep), o.multiply(o.mean_over(squared, -2), mix))
    else:
        full = o.add(o.multiply(full, keep), o.multiply(squared, mix))
    return row, col, full


def adafactor_factors(o: Any, row: Any, col: Any) -> tuple[Any, Any] | None:
    r"""The factors :math:`1/\sqrt{R/\mathrm{mean}_{-1} R}` (a trailing axis of 1) and :math:`1/\sqrt C` (an axis
    of 1 before the last) of a factored update, or None for an unfactored variable (``row`` None)."""
    if row is None:
        return None
    row_factor = o.expand_dims(o.rsqrt(o.divide(row, o.mean(row, axis=-1, keepdims=True))), -1)
    return row_factor, o.expand_dims(o.rsqrt(col), -2)


def adafactor_unclipped(o: Any, grad: Any, factors: tuple[Any, Any] | None, full: Any) -> Any:
    r"""The update before clipping (elementwise): :math:`g` times the outer product of ``factors``
    (:func:`adafactor_factors`), or :math:`g/\sqrt V` without them."""
    if factors is None:
        return o.multiply(o.rsqrt(full), grad)
    row_factor, col_factor = factors
    return o.multiply(o.multiply(row_factor, col_factor), grad)


def adafactor_parameter(
    o: Any,
    param: Any,
    update: Any,
    exp_avg: Any,
    *,
    alpha: Any,
    beta_1: float | None,
    first_moment: str,
    decay: Any,
) -> tuple[Any, Any]:
    r"""The parameter after Adafactor's step, from the clipped ``update`` of :func:`adafactor_direction`.

    :math:`U \leftarrow \alpha_t U`; with ``beta_1`` :math:`m \leftarrow \beta_1 m + (1-\beta_1) U`,
    :math:`U \leftarrow m` (``first_moment="unscaled"``: the average of the unscaled update, then scaled); with a
    ``decay`` coefficient :math:`-\alpha_t\lambda` (:func:`decay_coefficient`), :math:`\theta \leftarrow \theta +
    (-\alpha_t\lambda)\theta`; then :math:`\theta - U`. ``alpha`` is :math:`\alpha_t` in the compute dtype; ``o``
    as in :func:`adafactor_direction`. Returns (the new parameter, the new ``exp_avg`` or None).
    """
    if beta_1 is None:
        update = o.multiply(update, alpha)
    elif first_moment == "unscaled":  # extension: average before the lr, then scale
        exp_avg = o.add(o.multiply(exp_avg, beta_1), o.multiply(1.0 - beta_1, update))
        update = o.multiply(exp_avg, alpha)
    else:  # transformers: average the lr-scaled update
        update = o.multiply(update, alpha)
        exp_avg = update = o.add(o.multiply(exp_avg, beta_1), o.multiply(1.0 - beta_1, update))
    if decay is not None:
        param = decoupled_weight_decay(param, o=o, coefficient=decay)
    return o.subtract(param, update), exp_avg
