"""Adafactor with transformers' (torch) numerics, as a Keras 3 optimizer."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, ClassVar

import keras
from keras import ops

from ._formulas import adafactor_beta2t, adafactor_step_size, clip_by_rms, decoupled_weight_decay, rms
from ._rounding import parameter_rounding_key, store_parameter
from ._spec_optimizer import SpecOptimizer
from ._sums import mean_over
from ._traced_update import ADAFACTOR_XLA_ITERATIONS
from ._variables import compute_dtype, numpy_value, slot_name

__all__ = ["Adafactor"]


@keras.saving.register_keras_serializable(package="hf_optim")
class Adafactor(SpecOptimizer):
    r"""Adafactor exactly as transformers' torch ``Adafactor`` computes it (the Keras twin).

    For a variable of rank >= 2 the second moment is factored over the last two dimensions
    (``exp_avg_sq_row`` has the shape without the last dimension, ``exp_avg_sq_col`` the shape
    without the second-to-last); other variables keep a full ``exp_avg_sq``.

    .. math::

        \begin{aligned}
        &t \leftarrow t + 1 \quad\text{(per variable)}, \qquad
            \mathrm{RMS}(x) = \lVert x \rVert_2 / \sqrt{\mathrm{numel}(x)} \\
        &\rho_t = \min(10^{-6} t\ \text{if warmup\_init else}\ 10^{-2},\ 1/\sqrt{t})
            \ \text{if relative\_step else}\ \eta \\
        &\alpha_t = \max(\epsilon_2, \mathrm{RMS}(\theta))\,\rho_t\ \text{if scale\_parameter else}\ \rho_t \\
        &\hat\beta_{2t} = 1 - t^{\text{decay\_rate}}, \qquad u = g^2 + \epsilon_1 \\
        &R \leftarrow \hat\beta_{2t} R + (1-\hat\beta_{2t})\,\mathrm{mean}_{-1}(u), \quad
         C \leftarrow \hat\beta_{2t} C + (1-\hat\beta_{2t})\,\mathrm{mean}_{-2}(u) \\
        &U = g \,/\, \sqrt{(R / \mathrm{mean}_{-1} R)\,C}
            \quad\text{(factored; else } V \leftarrow \hat\beta_{2t} V + (1-\hat\beta_{2t}) u,\ U = g/\sqrt V) \\
        &U \leftarrow \alpha_t\, U / \max(1, \mathrm{RMS}(U)/d) \\
        &m \leftarrow \beta_1 m + (1-\beta_1) U,\ U \leftarrow m \quad\text{(if } \beta_1 \text{ is set)} \\
        &\theta \leftarrow \theta - \lambda\,\alpha_t\,\theta \quad\text{(if } \lambda \ne 0), \qquad
         \theta \leftarrow \theta - U
        \end{aligned}

    16-bit variables (float16, bfloat16) are updated in float32 and the state is kept in
    float32 (torch upcasts the gradient and the parameter and keeps the state like the
    upcast gradient); the result is rounded back to the variable dtype once per step, to nearest
    or, for bfloat16 with ``stochastic_rounding=True``, stochastically (keyed by the variable's
    index in the built variable list and its own ``step`` after the increment). There is no
    ``fp32_math`` argument: Adafactor always computes 16-bit variables in float32.

    Args:
        learning_rate: external learning rate (torch: ``lr``); must be None when
            ``relative_step=True``. Defaults to None.
        epsilon_1: regularisation of the squared gradient (torch: ``eps[0]``). Defaults to 1e-30.
        epsilon_2: floor of the parameter scale (torch: ``eps[1]``). Defaults to 1e-3.
        clip_threshold: threshold :math:`d` of the update RMS. Defaults to 1.0.
        decay_rate: exponent of the second-moment decay. Defaults to -0.8.
        beta_1: first-moment decay (torch: ``beta1``); None disables the first moment.
            Defaults to None.
        weight_decay: weight decay :math:`\lambda`. Defaults to 0.0.
        scale_parameter: scale the step by the parameter RMS. Defaults to True.
        relative_step: use the time-dependent step :math:`\rho_t`. Defaults to True.
        warmup_init: warm-up form of :math:`\rho_t`. Defaults to False.
        first_moment: ``"lr_scaled"`` (transformers: the first moment averages the lr-scaled
            update) or ``"unscaled"`` (extension: it averages the clipped update and the average
            is scaled by the current lr). Defaults to ``"lr_scaled"``.
        {{rounding_args}}
        name: optimizer name. Defaults to ``"Adafactor"``.
        **kwargs: Keras base-optimizer arguments.

    Differences from transformers:
        None in the numerics with the defaults. With ``learning_rate=None`` the Keras
        ``learning_rate`` attribute holds 0.0 (it is not used); ``get_config`` reports None.
        ``stochastic_rounding`` and ``rounding_seed`` are extensions.

    Raises:
        TypeError, ValueError: the spec's uniform errors for bad hyperparameters.
        ValueError: in ``build`` (so on the first ``apply``), a float16 variable with
            ``stochastic_rounding=True``.

    References:
        Shazeer & Stern, Adafactor: Adaptive Learning Rates with Sublinear Memory Cost,
        https://arxiv.org/abs/1804.04235

    Example:
        >>> opt = Adafactor(learning_rate=1e-3, scale_parameter=False, relative_step=False)
        >>> bf16 = Adafactor(stochastic_rounding=True, rounding_seed=1)  # for bfloat16 variables
    """

    _SPEC_ID = "adafactor"
    _XLA_FROM_ITERATION = ADAFACTOR_XLA_ITERATIONS  # its first call under XLA costs twice a plain trace's
    _CONFIG = (
        "epsilon_1",
        "epsilon_2",
        "clip_threshold",
        "decay_rate",
        "beta_1",
        "weight_decay",
        "scale_parameter",
        "relative_step",
        "warmup_init",
        "first_moment",
    )
    _CONFIG_ATTRIBUTES: ClassVar[Mapping[str, str]] = {"weight_decay": "decoupled_weight_decay"}

    def __init__(
        self,
        learning_rate: float | keras.optimizers.schedules.LearningRateSchedule | None = None,
        epsilon_1: float = 1e-30,
        epsilon_2: float = 1e-3,
        clip_threshold: float = 1.0,
        decay_rate: float = -0.8,
        beta_1: float | None = None,
        weight_decay: float = 0.0,
        scale_parameter: bool = True,
        relative_step: bool = True,
        warmup_init: bool = False,
        first_moment: str = "lr_scaled",
        stochastic_rounding: bool = False,
        rounding_seed: int = 0,
        name: str = "Adafactor",
        **kwargs: Any,
    ) -> None:
        super().__init__(locals(), None)

    def _build_state(self, var_list: list[Any]) -> None:
        """Per variable: ``step``, ``RMS``, ``exp_avg`` (with beta1), and the factored ``exp_avg_sq_row`` /
        ``exp_avg_sq_col`` (rank >= 2) or a full ``exp_avg_sq``."""
        self._step: list[Any] = []
        self._exp_avg: list[Any] = []
        self._row: list[Any] = []
        self._col: list[Any] = []
        self._full: list[Any] = []
        self._rms: list[Any] = []
        for variable in var_list:
            base = slot_name(variable)
            shape = tuple(variable.shape)
            dtype = compute_dtype(variable.dtype)
            self._step.append(self.add_variable(shape=(), dtype="int64", name=f"{base}_step"))
            self._rms.append(self.add_variable(shape=(), dtype=dtype, name=f"{base}_RMS"))
            self._exp_avg.append(
                self.add_variable(shape=shape, dtype=dtype, name=f"{base}_exp_avg") if self.beta_1 is not None else None
            )
            if len(shape) >= 2:
                self._row.append(self.add_variable(shape=shape[:-1], dtype=dtype, name=f"{base}_exp_avg_sq_row"))
                self._col.append(
                    self.add_variable(shape=shape[:-2] + shape[-1:], dtype=dtype, name=f"{base}_exp_avg_sq_col")
                )
                self._full.append(None)
            else:
                self._row.append(None)
                self._col.append(None)
                self._full.append(self.add_variable(shape=shape, dtype=dtype, name=f"{base}_exp_avg_sq"))

    def _state_slots(self) -> Iterator[tuple[Any, Any, str]]:
        for index, variable in enumerate(self._trainable_variables):
            yield self._step[index], variable, "step"
            yield self._rms[index], variable, "RMS"
            yield self._exp_avg[index], variable, "exp_avg"
            yield self._row[index], variable, "exp_avg_sq_row"
            yield self._col[index], variable, "exp_avg_sq_col"
            yield self._full[index], variable, "exp_avg_sq"

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        """One Adafactor step for one variable (keras.ops only)."""
        index = self._get_variable_index(variable)
        dtype = compute_dtype(variable.dtype)
        grad = ops.cast(gradient, dtype)
        param = ops.cast(variable, dtype)
        step_var = self._step[index]
        self.assign_add(step_var, ops.ones((), dtype="int64"))
        step = ops.cast(step_var, "float64")
        param_rms = rms(param)
        self.assign(self._rms[index], param_rms)
        alpha = adafactor_step_size(
            step,
            learning_rate,
            param_rms,
            relative_step=self.relative_step,
            warmup_init=self.warmup_init,
            scale_parameter=self.scale_parameter,
            epsilon_2=self.epsilon_2,
        )
        beta2t = adafactor_beta2t(step, self.decay_rate)
        keep = ops.cast(beta2t, dtype)
        mix = ops.cast(1.0 - beta2t, dtype)
        squared = ops.add(ops.square(grad), ops.convert_to_tensor(self.epsilon_1, dtype=dtype))
        if self._full[index] is None:
            row, col = self._row[index], self._col[index]
            self.assign(row, ops.add(ops.multiply(row, keep), ops.multiply(mean_over(squared, -1), mix)))
            self.assign(col, ops.add(ops.multiply(col, keep), ops.multiply(mean_over(squared, -2), mix)))
            row_factor = ops.expand_dims(ops.rsqrt(ops.divide(row, ops.mean(row, axis=-1, keepdims=True))), -1)
            col_factor = ops.expand_dims(ops.rsqrt(col), -2)
            update = ops.multiply(ops.multiply(row_factor, col_factor), grad)
        else:
            full = self._full[index]
            self.assign(full, ops.add(ops.multiply(full, keep), ops.multiply(squared, mix)))
            update = ops.multiply(ops.rsqrt(full), grad)
        update = clip_by_rms(update, self.clip_threshold)
        alpha_c = ops.cast(alpha, dtype)
        if self.beta_1 is not None:
            exp_avg = self._exp_avg[index]
            if self.first_moment == "unscaled":  # extension: average before the lr, then scale
                averaged = ops.add(ops.multiply(exp_avg, self.beta_1), ops.multiply(1.0 - self.beta_1, update))
                self.assign(exp_avg, averaged)
                update = ops.multiply(averaged, alpha_c)
            else:  # transformers: average the lr-scaled update
                update = ops.multiply(update, alpha_c)
                averaged = ops.add(ops.multiply(exp_avg, self.beta_1), ops.multiply(1.0 - self.beta_1, update))
                self.assign(exp_avg, averaged)
                update = averaged
        else:
            update = ops.multiply(update, alpha_c)
        if self.decoupled_weight_decay != 0.0:
            param = decoupled_weight_decay(param, alpha, self.decoupled_weight_decay)
        key = None
        if self.stochastic_rounding and variable.dtype == "bfloat16":
            key = parameter_rounding_key(self.rounding_seed, index, step_var)
        self.assign(variable, store_parameter(ops.subtract(param, update), variable.dtype, key))

    def variable_state(self, variable: Any) -> dict[str, Any]:
        """The state of one model variable under the spec's names (NumPy values), like torch's
        ``optimizer.state[param]``."""
        index = self._get_variable_index(variable)
        slots = {
            "exp_avg": self._exp_avg[index],
            "exp_avg_sq_row": self._row[index],
            "exp_avg_sq_col": self._col[index],
            "exp_avg_sq": self._full[index],
        }
        state: dict[str, Any] = {"step": int(numpy_value(self._step[index]))}
        state.update({k: numpy_value(v) for k, v in slots.items() if v is not None})
        state["RMS"] = float(numpy_value(self._rms[index]))
        return state
