"""AdamWeightDecay: transformers' TF optimizer (Adam + decoupled decay before the step) on Keras 3."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import keras
from keras import ops

from ._formulas import adam_step_size, adam_weight_decay_update, decoupled_weight_decay
from ._multi_tensor import ForeachOps, assign_all, in_batches, tensors
from ._rounding import parameter_rounding_key, store_parameter
from ._spec_optimizer import SpecOptimizer
from ._variables import compute_dtype, matches_any, numpy_value, variable_path

__all__ = ["AdamWeightDecay"]

_DEFAULT_LR = 0.001


@keras.saving.register_keras_serializable(package="hf_optim")
class AdamWeightDecay(SpecOptimizer):
    r"""Adam with decoupled weight decay applied before the Adam step (transformers' TF optimizer).

    The numerics are those of transformers' ``AdamWeightDecay``, which subclassed the legacy
    tf.keras ``Adam``: the weights are first decayed with the scheduled learning rate, then the
    legacy Adam step runs with the bias correction folded into the step size and ``epsilon``
    added to :math:`\sqrt{v}` (not bias-corrected).

    .. math::

        \begin{aligned}
        &t \leftarrow \text{iterations} + 1, \qquad \eta = \text{learning\_rate}(\text{iterations}) \\
        &\theta \leftarrow \theta - \eta\,\lambda\,\theta \quad\text{(only if decay applies to } \theta) \\
        &m \leftarrow m + (1-\beta_1)(g - m), \qquad v \leftarrow v + (1-\beta_2)(g^2 - v) \\
        &\hat v \leftarrow \max(\hat v, v) \quad\text{(amsgrad)} \\
        &\theta \leftarrow \theta - \eta\,\frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\,
            \frac{m}{\sqrt{v\ \text{or}\ \hat v} + \epsilon}
        \end{aligned}

    Whether a variable is decayed is decided once, in ``build``: never when
    ``weight_decay_rate == 0``; otherwise yes if a pattern of ``include_in_weight_decay``
    matches (``re.search``) the variable's full path (``variable.path``, e.g.
    ``"encoder/LayerNorm/gamma"``), else no if a pattern of ``exclude_from_weight_decay``
    matches, else yes. The step counter is the optimizer's global ``iterations`` (as in
    tf.keras), so a variable that had no gradient for some steps still uses the global step in
    its bias correction. As in tf.keras, the hyperparameters are cast to the variable dtype and
    all the math (scalars included) runs in that dtype; in bfloat16 that makes ``beta_2=0.999``
    round to 1.0, so :math:`v` never moves.

    With ``fp32_math=True`` a bfloat16/float16 variable is stepped in float32 instead: the
    hyperparameters, learning rate and step are cast to float32, the variable, gradient and moments
    are upcast, the decay and the Adam step run without intermediate rounding (exactly as for a
    float32 variable holding the same values), and the variable and its moments (``exp_avg``,
    ``exp_avg_sq``, ``max_exp_avg_sq``) are rounded back to the variable dtype once per step; the
    state keeps the variable dtype. With ``stochastic_rounding=True`` as well, the variable's final
    rounding to bfloat16 is stochastic, keyed by its index in the built variable list and
    :math:`t` = ``iterations + 1``. Gradient clipping (Keras' base class) is unchanged: it runs on
    the gradients as given.

    Args:
        learning_rate: float or ``LearningRateSchedule``. Defaults to 0.001.
        beta_1: decay rate of the first moment. Defaults to 0.9.
        beta_2: decay rate of the second moment. Defaults to 0.999.
        epsilon: added to :math:`\sqrt{v}`. Defaults to 1e-7.
        amsgrad: use the running maximum of :math:`v`. Defaults to False.
        weight_decay_rate: decoupled decay :math:`\lambda`. Defaults to 0.0.
        include_in_weight_decay: regexes of variables always decayed (take precedence).
            Defaults to None.
        exclude_from_weight_decay: regexes of variables never decayed. Defaults to None.
        fp32_math: bfloat16/float16 variables: compute the step in float32 (hyperparameters cast
            to float32, not to the variable dtype) and round the variable and the moments to the
            variable dtype once per step. float32/float64 variables: no effect. Defaults to False.
        {{rounding_args}}
        name: optimizer name. Defaults to ``"AdamWeightDecay"``.
        **kwargs: Keras base-optimizer arguments (``clipnorm``, ``clipvalue``,
            ``global_clipnorm``, ``use_ema``, ``loss_scale_factor``,
            ``gradient_accumulation_steps``, ...). Legacy ``lr`` maps to ``learning_rate``
            (DeprecationWarning); legacy ``decay`` other than 0 raises ValueError.

    Differences from transformers:
        Keras 3 instead of tf.keras 2; patterns match ``variable.path`` (Keras 3 variable names
        are short, e.g. ``"gamma"``, so ``name`` would never match ``"LayerNorm"``);
        ``get_config`` includes the include/exclude lists (transformers dropped them), and
        ``from_config`` needs no ``custom_objects``. ``fp32_math``, ``stochastic_rounding`` and
        ``rounding_seed`` are extensions (their defaults keep transformers' numerics);
        ``stochastic_rounding`` needs ``fp32_math=True``.

    Raises:
        TypeError, ValueError: the spec's uniform errors for bad hyperparameters.
        ValueError: in ``build`` (so on the first ``apply``), a float16 variable with
            ``stochastic_rounding=True``.

    References:
        Loshchilov & Hutter, Decoupled Weight Decay Regularization, https://arxiv.org/abs/1711.05101

    Example:
        >>> opt = AdamWeightDecay(1e-3, weight_decay_rate=0.01,
        ...                       exclude_from_weight_decay=["LayerNorm", "layer_norm", "bias"])
    """

    _SPEC_ID = "adam_weight_decay"
    _CONFIG = (
        "beta_1",
        "beta_2",
        "epsilon",
        "amsgrad",
        "weight_decay_rate",
        "include_in_weight_decay",
        "exclude_from_weight_decay",
        "fp32_math",
    )

    def __init__(
        self,
        learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-7,
        amsgrad: bool = False,
        weight_decay_rate: float = 0.0,
        include_in_weight_decay: list[str] | None = None,
        exclude_from_weight_decay: list[str] | None = None,
        fp32_math: bool = False,
        stochastic_rounding: bool = False,
        rounding_seed: int = 0,
        name: str = "AdamWeightDecay",
        **kwargs: Any,
    ) -> None:
        super().__init__(locals(), _DEFAULT_LR)

    def _do_use_weight_decay(self, param_name: str) -> bool:
        """Whether the variable with this full path is decayed (include first, then exclude)."""
        if self.weight_decay_rate == 0.0:
            return False
        if matches_any(self.include_in_weight_decay, param_name):
            return True
        return not matches_any(self.exclude_from_weight_decay, param_name)

    def _build_state(self, var_list: list[Any]) -> None:
        """``exp_avg``, ``exp_avg_sq`` (and ``max_exp_avg_sq`` with amsgrad) per variable, and the decay flags."""
        self._exp_avg, self._exp_avg_sq = self.add_optimizer_variables(var_list, ["exp_avg", "exp_avg_sq"])
        if self.amsgrad:
            self._max_exp_avg_sq = self.add_optimizer_variables(var_list, "max_exp_avg_sq")
        self._decay_flags = [self._do_use_weight_decay(variable_path(v)) for v in var_list]

    def _state_slots(self) -> Iterator[tuple[Any, Any, str]]:
        for index, variable in enumerate(self._trainable_variables):
            yield self._exp_avg[index], variable, "exp_avg"
            yield self._exp_avg_sq[index], variable, "exp_avg_sq"
            if self.amsgrad:
                yield self._max_exp_avg_sq[index], variable, "max_exp_avg_sq"

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        """One AdamWeightDecay step for one variable (keras.ops only).

        The math runs in the variable dtype (float32 with ``fp32_math`` for a 16-bit variable); every
        op result is rounded to that dtype, and the variable and state are stored once at the end.
        """
        index = self._get_variable_index(variable)
        store = variable.dtype
        dtype = compute_dtype(store) if self.fp32_math else store
        lr = ops.cast(learning_rate, dtype)
        step = ops.cast(self.iterations + 1, dtype)
        gradient = ops.cast(gradient, dtype)
        beta_1 = ops.convert_to_tensor(self.beta_1, dtype=dtype)
        beta_2 = ops.convert_to_tensor(self.beta_2, dtype=dtype)
        param = ops.cast(variable, dtype)
        if self._decay_flags[index]:  # before the Adam step
            rate = ops.convert_to_tensor(self.weight_decay_rate, dtype=dtype)
            param = decoupled_weight_decay(param, lr, rate, per_element=True)
        alpha = adam_step_size(lr, self.beta_1, self.beta_2, step, dtype)
        exp_avg_var, exp_avg_sq_var = self._exp_avg[index], self._exp_avg_sq[index]
        param, exp_avg, exp_avg_sq, second = adam_weight_decay_update(
            ops,
            param,
            gradient,
            ops.cast(exp_avg_var, dtype),
            ops.cast(exp_avg_sq_var, dtype),
            ops.cast(self._max_exp_avg_sq[index], dtype) if self.amsgrad else None,
            one_minus_beta_1=ops.subtract(1.0, beta_1),
            one_minus_beta_2=ops.subtract(1.0, beta_2),
            epsilon=ops.convert_to_tensor(self.epsilon, dtype=dtype),
            alpha=alpha,
        )
        self.assign(exp_avg_var, ops.cast(exp_avg, store))
        self.assign(exp_avg_sq_var, ops.cast(exp_avg_sq, store))
        if self.amsgrad:
            self.assign(self._max_exp_avg_sq[index], ops.cast(second, store))
        key = None
        if self.stochastic_rounding and store == "bfloat16":
            key = parameter_rounding_key(self.rounding_seed, index, self.iterations + 1)
        self.assign(variable, store_parameter(param, store, key))

    def _update_lists(self, grads: list[Any], variables: list[Any], learning_rate: Any) -> None:
        """``update_step`` for float32 variables all at once, on the torch backend (``hf_optim_tf._multi_tensor``):
        the same formulas, the same bits."""
        indices = [self._get_variable_index(variable) for variable in variables]
        lr = ops.cast(learning_rate, "float32")
        beta_1 = ops.convert_to_tensor(self.beta_1, dtype="float32")
        beta_2 = ops.convert_to_tensor(self.beta_2, dtype="float32")
        lr_value, rate = float(lr), float(ops.convert_to_tensor(self.weight_decay_rate, dtype="float32"))
        scalars = {
            "one_minus_beta_1": float(ops.subtract(1.0, beta_1)),
            "one_minus_beta_2": float(ops.subtract(1.0, beta_2)),
            "epsilon": float(ops.convert_to_tensor(self.epsilon, dtype="float32")),
            "alpha": float(
                adam_step_size(lr, self.beta_1, self.beta_2, ops.cast(self.iterations + 1, "float32"), "float32")
            ),
        }

        def update(param: list[Any], grad: list[Any], *state_and_flags: Any) -> None:
            *state, flags = state_and_flags
            decayed = [k for k, flag in enumerate(flags) if flag]
            new_param = list(param)
            if decayed:  # before the Adam step
                kept = decoupled_weight_decay(
                    [param[k] for k in decayed], lr_value, rate, per_element=True, o=ForeachOps
                )
                for k, value in zip(decayed, kept):
                    new_param[k] = value
            *new, second = adam_weight_decay_update(
                ForeachOps, new_param, grad, state[0], state[1], state[2] if self.amsgrad else None, **scalars
            )
            if self.amsgrad:
                new.append(second)
            assign_all([t for tensors in (param, *state) for t in tensors], [t for tensors in new for t in tensors])

        state = [self._exp_avg, self._exp_avg_sq, *([self._max_exp_avg_sq] if self.amsgrad else [])]
        in_batches(
            update,
            [tensors(variables), grads, *(tensors([slots[index] for index in indices]) for slots in state)],
            [tuple(self._decay_flags[index] for index in indices)],
        )

    def variable_state(self, variable: Any) -> dict[str, Any]:
        """The state of one model variable under the spec's names (NumPy values); ``step`` is the
        optimizer's global ``iterations``."""
        index = self._get_variable_index(variable)
        state = {
            "step": int(numpy_value(self.iterations)),
            "exp_avg": numpy_value(self._exp_avg[index]),
            "exp_avg_sq": numpy_value(self._exp_avg_sq[index]),
        }
        if self.amsgrad:
            state["max_exp_avg_sq"] = numpy_value(self._max_exp_avg_sq[index])
        return state
