"""AdamW with transformers' (torch) numerics, as a Keras 3 optimizer."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import keras
from keras import ops

from ._formulas import adam_step_size, adamw_update, decay_coefficient, decoupled_weight_decay
from ._multi_tensor import ForeachOps, assign_all, in_batches, increment, tensors
from ._rounding import parameter_rounding_key, store_parameter
from ._spec_optimizer import SpecOptimizer
from ._variables import compute_dtype, numpy_value, slot_name

__all__ = ["AdamW"]

_DEFAULT_LR = 0.001


@keras.saving.register_keras_serializable(package="hf_optim")
class AdamW(SpecOptimizer):
    r"""AdamW exactly as transformers' torch ``AdamW`` computes it (the Keras twin).

    .. math::

        \begin{aligned}
        &t \leftarrow t + 1 \quad\text{(per variable)} \\
        &m \leftarrow \beta_1 m + (1-\beta_1) g, \qquad v \leftarrow \beta_2 v + (1-\beta_2) g^2 \\
        &\alpha = \eta\,\frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\ \text{if correct\_bias else}\ \eta \\
        &\theta \leftarrow \theta - \alpha\,\frac{m}{\sqrt{v} + \epsilon} \\
        &\theta \leftarrow \theta - \eta\,\lambda\,\theta \quad\text{(after the update, if } \lambda > 0)
        \end{aligned}

    ``epsilon`` is added to :math:`\sqrt{v}` before the bias correction, which is folded into
    the step size; the decoupled decay runs after the Adam update, on the updated weights. Each
    variable keeps its own ``step`` (as torch's per-parameter state), so a variable that got no
    gradient at some step is not advanced.

    Precision. Scalar coefficients (bias corrections, step size, :math:`\eta\lambda`) are
    computed in float64, as torch computes them in Python floats, and cast to the compute dtype
    once. For float32/float64 variables the compute dtype is the variable's and the state has
    the variable's dtype.

    16-bit (bfloat16/float16) variables follow the spec reference
    (``hf_optim_spec.reference.adamw`` with the case ``dtype``), which models transformers'
    in-place update on a 16-bit parameter; by default (``fp32_math=False``) this is *not*
    "float32 math, rounded once per step":

    * ``exp_avg``, ``exp_avg_sq`` are stored in the variable dtype (torch's ``zeros_like(p)``);
    * every op runs in float32 and its result is rounded to the variable dtype wherever the torch
      code materialises a tensor: :math:`\beta_1 m`, the new :math:`m`, :math:`\beta_2 v`, the
      new :math:`v`, :math:`\sqrt{v}`, :math:`\sqrt{v}+\epsilon`, the updated parameter and the
      decayed parameter (so from step 2 on the moments differ from a float32 computation
      rounded once, e.g. :math:`\beta_1 m` is rounded before :math:`(1-\beta_1) g` is added).

    It equals the reference bit for bit except for occasional one-ulp differences (the reference
    evaluates each op in float64 before rounding, this code in float32) and stays within the
    spec's bfloat16/float16 tolerance. It is not bit-identical to torch on a 16-bit parameter
    (torch's CPU kernels fuse ``add_(x, alpha=a)`` into one rounding, and its fused AdamW kernel
    computes in float32 and rounds once per step).

    With ``fp32_math=True`` a 16-bit variable is stepped exactly as a float32 variable holding the
    same values would be (variable, gradient and moments upcast to float32, no intermediate
    rounding), and the variable and both moments are rounded back to the variable dtype once per
    step; the moments keep the variable dtype. With ``stochastic_rounding=True`` as well, that final
    rounding of a bfloat16 variable is stochastic (the moments still round to nearest). For float32
    state as well, keep float32 variables under a ``mixed_bfloat16`` / ``mixed_float16`` policy.

    Args:
        learning_rate: float or ``LearningRateSchedule`` (torch: ``lr``). Defaults to 0.001.
        beta_1: first-moment decay (torch: ``betas[0]``). Defaults to 0.9.
        beta_2: second-moment decay (torch: ``betas[1]``). Defaults to 0.999.
        epsilon: added to :math:`\sqrt{v}` (torch: ``eps``). Defaults to 1e-6.
        weight_decay: decoupled weight decay :math:`\lambda`. Defaults to 0.0.
        correct_bias: apply Adam's bias correction. Defaults to True.
        no_deprecation_warning: accepted for signature parity with transformers; this
            optimizer never warns. Defaults to False.
        fp32_math: bfloat16/float16 variables: compute the whole step in float32 and round the
            variable and the moments to the variable dtype once per step (instead of after every
            op, as transformers' in-place update does). float32/float64 variables: no effect.
            Defaults to False.
        {{rounding_args}}
        name: optimizer name. Defaults to ``"AdamW"``.
        **kwargs: Keras base-optimizer arguments (``clipnorm``, ``clipvalue``,
            ``global_clipnorm``, ``loss_scale_factor``, ...). Legacy ``lr`` maps to
            ``learning_rate``.

    Differences from transformers:
        Keras' own base-class ``weight_decay`` is not used (it decays before the update);
        ``weight_decay`` here is transformers' decay after the update. ``fp32_math``,
        ``stochastic_rounding`` and ``rounding_seed`` are extensions (their defaults keep
        transformers' numerics); ``stochastic_rounding`` needs ``fp32_math=True``.

    Raises:
        TypeError, ValueError: the spec's uniform errors for bad hyperparameters (e.g.
            ``stochastic_rounding=True`` without ``fp32_math=True``).
        ValueError: in ``build`` (so on the first ``apply``), a float16 variable with
            ``stochastic_rounding=True``.

    References:
        Loshchilov & Hutter, Decoupled Weight Decay Regularization, https://arxiv.org/abs/1711.05101

    Example:
        >>> opt = AdamW(learning_rate=5e-5, weight_decay=0.01)
        >>> bf16 = AdamW(learning_rate=5e-5, fp32_math=True, stochastic_rounding=True, rounding_seed=1)
    """

    _SPEC_ID = "adamw"
    _CONFIG = ("beta_1", "beta_2", "epsilon", "weight_decay", "correct_bias", "fp32_math")
    _CONFIG_ATTRIBUTES: ClassVar[Mapping[str, str]] = {"weight_decay": "decoupled_weight_decay"}

    def __init__(
        self,
        learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = 0.001,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-6,
        weight_decay: float = 0.0,
        correct_bias: bool = True,
        no_deprecation_warning: bool = False,
        fp32_math: bool = False,
        stochastic_rounding: bool = False,
        rounding_seed: int = 0,
        name: str = "AdamW",
        **kwargs: Any,
    ) -> None:
        super().__init__(locals(), _DEFAULT_LR)

    def _build_state(self, var_list: list[Any]) -> None:
        """``step``, ``exp_avg`` and ``exp_avg_sq`` per variable."""
        self._exp_avg, self._exp_avg_sq = self.add_optimizer_variables(var_list, ["exp_avg", "exp_avg_sq"])
        self._step = [self.add_variable(shape=(), dtype="int64", name=f"{slot_name(v)}_step") for v in var_list]

    def _state_slots(self) -> Iterator[tuple[Any, Any, str]]:
        for index, variable in enumerate(self._trainable_variables):
            yield self._exp_avg[index], variable, "exp_avg"
            yield self._exp_avg_sq[index], variable, "exp_avg_sq"
            yield self._step[index], variable, "step"

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        """One AdamW step for one variable (keras.ops only), in transformers' operation order."""
        index = self._get_variable_index(variable)
        dtype = compute_dtype(variable.dtype)
        store = variable.dtype
        per_op = store != dtype and not self.fp32_math

        def q(x: Any) -> Any:  # what torch materialises in a 16-bit parameter's dtype (not with fp32_math)
            return ops.cast(ops.cast(x, store), dtype) if per_op else x

        grad = ops.cast(gradient, dtype)
        param = ops.cast(variable, dtype)
        lr = ops.cast(learning_rate, "float64")
        step_var = self._step[index]
        self.assign_add(step_var, ops.ones((), dtype="int64"))
        step = ops.cast(step_var, "float64")
        exp_avg_var, exp_avg_sq_var = self._exp_avg[index], self._exp_avg_sq[index]
        step_size = adam_step_size(lr, self.beta_1, self.beta_2, step, "float64") if self.correct_bias else lr
        param, exp_avg, exp_avg_sq = adamw_update(
            ops,
            param,
            grad,
            ops.cast(exp_avg_var, dtype),
            ops.cast(exp_avg_sq_var, dtype),
            beta_1=self.beta_1,
            beta_2=self.beta_2,
            epsilon=ops.convert_to_tensor(self.epsilon, dtype=dtype),
            negative_step_size=ops.cast(-step_size, dtype),
            q=q,
        )
        self.assign(exp_avg_var, ops.cast(exp_avg, store))
        self.assign(exp_avg_sq_var, ops.cast(exp_avg_sq, store))
        if self.decoupled_weight_decay > 0.0:  # after the Adam update
            param = q(decoupled_weight_decay(param, lr, self.decoupled_weight_decay))
        key = None
        if self.stochastic_rounding and store == "bfloat16":
            key = parameter_rounding_key(self.rounding_seed, index, step_var)
        self.assign(variable, store_parameter(param, store, key))

    def _update_lists(self, grads: list[Any], variables: list[Any], learning_rate: Any) -> None:
        """``update_step`` for float32 variables all at once, on the torch backend (``hf_optim_tf._multi_tensor``):
        the same formulas, the same bits; one step size per distinct step count."""
        indices = [self._get_variable_index(variable) for variable in variables]
        counts = increment(tensors([self._step[index] for index in indices]))
        lr = ops.cast(learning_rate, "float64")
        negative_step_sizes: dict[int, float] = {}  # the steps of one call are usually all equal
        for count in set(counts):
            step = ops.cast(count, "float64")
            size = adam_step_size(lr, self.beta_1, self.beta_2, step, "float64") if self.correct_bias else lr
            negative_step_sizes[count] = float(ops.cast(-size, "float32"))
        decay = self.decoupled_weight_decay > 0.0  # after the Adam update
        coefficient = float(decay_coefficient(lr, self.decoupled_weight_decay, "float32")) if decay else 0.0

        def update(param: list[Any], grad: list[Any], exp_avg: list[Any], exp_avg_sq: list[Any], size: Any) -> None:
            new = adamw_update(
                ForeachOps,
                param,
                grad,
                exp_avg,
                exp_avg_sq,
                beta_1=self.beta_1,
                beta_2=self.beta_2,
                epsilon=self.epsilon,
                negative_step_size=size,
            )
            if decay:
                decayed = decoupled_weight_decay(
                    new[0], lr, self.decoupled_weight_decay, o=ForeachOps, coefficient=coefficient
                )
                new = (decayed, *new[1:])
            assign_all([*param, *exp_avg, *exp_avg_sq], [t for tensors in new for t in tensors])

        state = [
            tensors([self._exp_avg[index] for index in indices]),
            tensors([self._exp_avg_sq[index] for index in indices]),
        ]
        in_batches(update, [tensors(variables), grads, *state], [tuple(negative_step_sizes[c] for c in counts)])

    def variable_state(self, variable: Any) -> dict[str, Any]:
        """The state of one model variable under the spec's names (NumPy values), like torch's
        ``optimizer.state[param]``."""
        index = self._get_variable_index(variable)
        return {
            "step": int(numpy_value(self._step[index])),
            "exp_avg": numpy_value(self._exp_avg[index]),
            "exp_avg_sq": numpy_value(self._exp_avg_sq[index]),
        }
